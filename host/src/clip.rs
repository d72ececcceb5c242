//! Bounded copies of tool-controlled text and JSON, for what the host stores and shows about a
//! tool: its error messages and details, the effects and checkpoints in an evidence packet,
//! and what a denial was asked for.
//!
//! Invariant: a clipped value is never longer than its bound plus a short marker that says
//! how much was cut, and never splits a UTF-8 character.

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// A tool error's message as stored and shown.
pub const MAX_ERROR_MESSAGE_BYTES: usize = 4 << 10;
/// A tool error's details (JSON text) as stored and shown.
pub const MAX_ERROR_DETAILS_BYTES: usize = 16 << 10;
/// What a policy denial says was asked for (an effect kind, a URL, a path).
pub const MAX_ASKED_BYTES: usize = 256;

/// `text`, or its first `max` bytes (on a character boundary) and a marker naming the cut.
pub fn text(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!(
        "{}…[{} more bytes]",
        text.get(..end).unwrap_or_default(),
        text.len() - end
    )
}

/// `value`, when its JSON text fits in `max` bytes; otherwise a summary that says what was cut:
/// its size, its SHA-256, and the start of its text.
pub fn json(value: &Value, max: usize) -> Value {
    let rendered = value.to_string();
    if rendered.len() <= max {
        return value.clone();
    }
    summary(&rendered, max)
}

/// Like [`json`], for JSON (or any) text that is already rendered.
pub fn json_text(rendered: &str, max: usize) -> Value {
    if rendered.len() <= max {
        return serde_json::from_str(rendered).unwrap_or_else(|_| Value::String(rendered.into()));
    }
    summary(rendered, max)
}

fn summary(rendered: &str, max: usize) -> Value {
    json!({
        "truncated": true,
        "bytes": rendered.len(),
        "sha256": hex::encode(Sha256::digest(rendered.as_bytes())),
        "start": text(rendered, max.saturating_sub(256).max(64)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_text_is_unchanged_and_long_text_is_cut_on_a_char_boundary() {
        assert_eq!(text("abc", 3), "abc");
        assert_eq!(text("abcdef", 3), "abc…[3 more bytes]");
        // "é" is two bytes: a cut inside it backs off to before it.
        assert_eq!(text("aé", 2), "a…[2 more bytes]");
    }

    #[test]
    fn large_json_becomes_a_summary_naming_its_size_and_digest() {
        let big = json!({ "pad": "x".repeat(10_000) });
        let clipped = json(&big, 1_000);
        assert_eq!(clipped["truncated"], true);
        assert_eq!(clipped["bytes"], big.to_string().len());
        assert_eq!(clipped["sha256"].as_str().map(str::len), Some(64));
        assert!(clipped.to_string().len() < 1_200, "{clipped}");
        let small = json!({ "ok": 1 });
        assert_eq!(json(&small, 1_000), small);
    }

    #[test]
    fn json_text_parses_what_fits_and_keeps_non_json_as_a_string() {
        assert_eq!(json_text(r#"{"a":1}"#, 100), json!({ "a": 1 }));
        assert_eq!(json_text("plain", 100), json!("plain"));
        assert_eq!(json_text(&"y".repeat(500), 100)["truncated"], true);
    }
}
