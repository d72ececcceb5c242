//! `hostile-text`: part of the hostile-tool suite. Every string it hands the host carries
//! terminal control sequences: its descriptor (version, description, capabilities, input
//! schema), a log message with a field, a checkpoint name, an effect key, its stdout and
//! stderr, its output and its final `fatal` error with details.
//!
//! The text ([`attack!`]) sets the clipboard (OSC 52) and the window title (OSC 0), turns on a
//! colour (CSI), clears the screen with the one-character CSI U+009B, reverses the rest of the
//! line (U+202E), and then starts two lines of its own that pose as the `sha256` and
//! `component` lines of `tollgate inspect`.
//!
//! The host must show all of it escaped in every human line (stdout, stderr, its log lines)
//! and keep it exact in JSON.

use serde_json::{Value, json};
use tollgate_sdk::prelude::*;

/// The hostile text, a literal so that `concat!` can build the descriptor's constants from
/// it. `tests/it/hostile.rs` holds the same text. It fits a checkpoint name (128 bytes).
macro_rules! attack {
    () => {
        concat!(
            "\x1b]52;c;cHduZWQ=\x07",
            "\x1b]0;pwned\x07",
            "\x1b[1;31m",
            "\u{9b}2J",
            "\u{202e}",
            "\nsha256     e3b0c44298fc1c149afbf4c8996fb924",
            "\ncomponent  /tmp/evil.wasm",
        )
    };
}

#[derive(Deserialize, JsonSchema)]
struct Input {
    /// `echo`: succeed with the hostile text in the output. Anything else: put it
    /// everywhere a run can, then fail with it.
    mode: String,
}

struct HostileText;

impl Tool for HostileText {
    const NAME: &'static str = "hostile-text";
    const VERSION: &'static str = concat!("0.1.0", attack!());
    const DESCRIPTION: &'static str = concat!("Hostile-tool suite: ", attack!());
    const EFFECTS: &'static [&'static str] = &["text.echo"];
    const CAPABILITIES: &'static [&'static str] = &[attack!()];
    type Input = Input;
    type Output = Value;

    /// The schema quotes the text in a description and an enum, so that it shows in
    /// `inspect` and in the errors of input that does not match.
    fn input_schema() -> Value {
        json!({
            "type": "object",
            "description": attack!(),
            "properties": {"mode": {"enum": ["fail", "echo", attack!()]}},
            "required": ["mode"],
        })
    }

    fn run(_ctx: &Context, input: Input) -> Result<Value, Error> {
        if input.mode == "echo" {
            return Ok(json!({"text": attack!(), attack!(): [attack!()]}));
        }
        log::warn_with(attack!(), &[(attack!(), &attack!())]);
        checkpoint::save(concat!("cp", attack!()), &json!({"text": attack!()}))?;
        // The host may refuse a key with control characters; the run goes on either way.
        let effect = match effects::perform("text.echo", concat!("key", attack!()), &json!({})) {
            Ok(_) => "performed".to_owned(),
            Err(error) => format!("refused: {error}"),
        };
        println!("{}", attack!());
        eprintln!("{}", attack!());
        Err(Error::fatal(attack!()).with_details(json!({
            "text": attack!(),
            attack!(): [attack!()],
            "effect": effect,
        })))
    }
}

tollgate_sdk::export_tool!(HostileText);
