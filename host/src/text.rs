//! Tool-controlled text on its way to a terminal.
//!
//! A tool's descriptor, logs, checkpoint names, effect keys, output and errors are chosen by
//! untrusted code, and so is the input an agent sends. This module owns how such text is
//! written where a human reads it: the CLI's human output, error lines and the text log
//! format.
//!
//! Invariant: text that went through this module holds no character a terminal acts on or
//! hides (C0 controls including `\n`, `\r` and `\t`, DEL, C1 controls such as the one-character
//! CSI U+009B, and invisible bidi and format characters). Each is written as a visible escape
//! (`\n`, `\u{1b}`, `\u{202e}`), so a tool can neither drive the terminal (clipboard, window
//! title, colours, cursor) nor start a line of its own in the host's output. Layout the host
//! writes itself (its own newlines) stays as it is; JSON stays JSON with the exact values.

use std::borrow::Cow;
use std::fmt::{self, Write as _};
use tracing::field::{Field, Visit};
use tracing_subscriber::field::{MakeVisitor, VisitFmt, VisitOutput};
use tracing_subscriber::fmt::format::Writer;

/// Whether `c` must not reach a terminal as itself.
///
/// Beyond the controls: U+061C, U+200E/U+200F, U+202A–U+202E and U+2066–U+2069 reorder
/// what follows them (a "Trojan Source" line reads differently from what it holds);
/// U+200B–U+200D and U+FEFF are invisible; U+2028/U+2029 break lines in some terminals
/// and viewers, as `\n` does.
pub fn needs_escape(c: char) -> bool {
    matches!(
        c,
        '\u{0}'..='\u{1f}'
            | '\u{7f}'..='\u{9f}'
            | '\u{61c}'
            | '\u{200b}'..='\u{200f}'
            | '\u{2028}'..='\u{202e}'
            | '\u{2066}'..='\u{2069}'
            | '\u{feff}'
    )
}

/// `text` with every character [`needs_escape`] holds written as a visible escape: `\n`,
/// `\r`, `\t`, else `\u{hex}`. Borrows when there is nothing to escape.
pub fn escape(text: &str) -> Cow<'_, str> {
    escape_where(text, needs_escape)
}

/// [`escape`], but `\n` stays a line break: for multi-line text the host laid out itself
/// (an error chain, a policy skeleton) whose tool-controlled parts were escaped where they
/// were embedded. Escaping what is left is a backstop for text from other crates.
pub fn escape_keeping_newlines(text: &str) -> Cow<'_, str> {
    escape_where(text, |c| c != '\n' && needs_escape(c))
}

fn escape_where(text: &str, escape: impl Fn(char) -> bool) -> Cow<'_, str> {
    if !text.chars().any(&escape) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        if escape(c) {
            push_escape(&mut out, c);
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

fn push_escape(out: &mut String, c: char) {
    match c {
        '\n' => out.push_str("\\n"),
        '\r' => out.push_str("\\r"),
        '\t' => out.push_str("\\t"),
        // Writing to a String cannot fail.
        _ => _ = write!(out, "\\u{{{:x}}}", u32::from(c)),
    }
}

/// Displays its text [`escape`]d; width and alignment apply to the escaped text, so table
/// columns stay aligned.
///
/// ```
/// use tollgate::text::Escaped;
/// assert_eq!(format!("[{:<8}]", Escaped("a\u{1b}")), "[a\\u{1b} ]");
/// ```
#[derive(Debug, Clone, Copy)]
pub struct Escaped<T>(pub T);

impl<T: AsRef<str>> fmt::Display for Escaped<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(&escape(self.0.as_ref()))
    }
}

/// `value` as pretty JSON that is safe on a terminal and still exact: serde_json already
/// writes every C0 control inside a string as an escape, and this also writes DEL, the C1
/// controls and the bidi and format characters inside strings as `\uXXXX`. Parsed, it is
/// the same value.
pub fn to_json_pretty<T: serde::Serialize + ?Sized>(value: &T) -> serde_json::Result<String> {
    serde_json::to_string_pretty(value).map(json_for_terminal)
}

/// [`to_json_pretty`] on one line.
pub fn to_json<T: serde::Serialize + ?Sized>(value: &T) -> serde_json::Result<String> {
    serde_json::to_string(value).map(json_for_terminal)
}

/// serde_json writes nothing between tokens but `\n` and spaces, and no raw C0 control inside
/// a string, so any other character [`needs_escape`] holds is inside a string, where
/// `\uXXXX` (every such character is in the Basic Multilingual Plane) spells it exactly.
fn json_for_terminal(json: String) -> String {
    if !json.chars().any(|c| c != '\n' && needs_escape(c)) {
        return json;
    }
    let mut out = String::with_capacity(json.len() + 16);
    for c in json.chars() {
        if c != '\n' && needs_escape(c) {
            // Writing to a String cannot fail.
            _ = write!(out, "\\u{:04x}", u32::from(c));
        } else {
            out.push(c);
        }
    }
    out
}

/// A `fmt::Write` that escapes what passes through it, for text produced by `Debug` or
/// `Display` without building it first.
struct EscapingWriter<'w, W: fmt::Write + ?Sized>(&'w mut W);

impl<W: fmt::Write + ?Sized> fmt::Write for EscapingWriter<'_, W> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        // Every chunk is whole UTF-8, so no character is ever split across two calls.
        self.0.write_str(&escape(s))
    }
}

/// The field formatter of the host's text log format: every field value and message is
/// escaped, whichever way the call site recorded it (`%`, `?`, a string or a format string),
/// so a tool's text in a log line can neither drive the terminal nor start a new line.
///
/// tracing-subscriber's own formatter (0.3.23) escapes ESC, BEL, BS, FF, DEL and C1 controls
/// in a message, but not `\n`, `\r` or the other C0 controls, nor bidi characters, nor fields
/// recorded with `%`.
#[derive(Debug, Clone, Copy, Default)]
pub struct LogFields;

impl<'a> MakeVisitor<Writer<'a>> for LogFields {
    type Visitor = LogVisitor<'a>;

    fn make_visitor(&self, writer: Writer<'a>) -> Self::Visitor {
        LogVisitor {
            writer,
            first: true,
            result: Ok(()),
        }
    }
}

/// Writes one event's or span's fields for [`LogFields`].
pub struct LogVisitor<'a> {
    writer: Writer<'a>,
    first: bool,
    result: fmt::Result,
}

impl LogVisitor<'_> {
    fn write(&mut self, field: &Field, value: fmt::Arguments<'_>) {
        let name = field.name();
        // tracing-log's metadata of `log` records, already shown as the event's target.
        if self.result.is_err() || name.starts_with("log.") {
            return;
        }
        let separator = if std::mem::take(&mut self.first) {
            ""
        } else {
            " "
        };
        self.result = self.writer.write_str(separator).and_then(|()| {
            if name != "message" {
                let name = name.strip_prefix("r#").unwrap_or(name);
                write!(self.writer, "{}=", escape(name))?;
            }
            EscapingWriter(&mut self.writer).write_fmt(value)
        });
    }
}

impl Visit for LogVisitor<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.write(field, format_args!("{value}"));
        } else {
            self.write(field, format_args!("{value:?}"));
        }
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        let chain = ErrorChain(value);
        self.write(field, format_args!("{chain}"));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.write(field, format_args!("{value:?}"));
    }
}

impl VisitOutput<fmt::Result> for LogVisitor<'_> {
    fn finish(self) -> fmt::Result {
        self.result
    }
}

impl VisitFmt for LogVisitor<'_> {
    fn writer(&mut self) -> &mut dyn fmt::Write {
        &mut self.writer
    }
}

/// An error and its sources, `: `-separated, as `anyhow` writes `{:#}`.
struct ErrorChain<'e>(&'e (dyn std::error::Error + 'static));

impl fmt::Display for ErrorChain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(error) = source {
            write!(f, ": {error}")?;
            source = error.source();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// OSC 52 (clipboard), OSC 0 (window title), a CSI colour, the one-character CSI, a bidi
    /// override and a forged line.
    const HOSTILE: &str = "a\x1b]52;c;cHduZWQ=\x07b\x1b]0;t\x07\x1b[31m\u{9b}2J\u{202e}\nsha256 x";

    fn assert_inert(text: &str) {
        assert!(!text.chars().any(needs_escape), "{text:?}");
    }

    #[test]
    fn plain_text_is_borrowed_unchanged() {
        for text in [
            "",
            "hello, wörld",
            "emoji 🦀 and CJK 漢字",
            r"back\slash \n",
        ] {
            assert!(matches!(escape(text), Cow::Borrowed(t) if t == text));
            assert!(matches!(escape_keeping_newlines(text), Cow::Borrowed(_)));
        }
        assert!(matches!(
            escape_keeping_newlines("two\nlines"),
            Cow::Borrowed(_)
        ));
    }

    #[test]
    fn controls_become_visible_escapes() {
        assert_eq!(escape("a\nb\rc\td"), r"a\nb\rc\td");
        assert_eq!(escape("\0\x07\x1b\x7f"), r"\u{0}\u{7}\u{1b}\u{7f}");
        assert_eq!(escape("\u{80}\u{9b}\u{9f}"), r"\u{80}\u{9b}\u{9f}");
        assert_eq!(
            escape("\u{61c}\u{200b}\u{200f}\u{2028}\u{202a}\u{202e}\u{2066}\u{2069}\u{feff}"),
            r"\u{61c}\u{200b}\u{200f}\u{2028}\u{202a}\u{202e}\u{2066}\u{2069}\u{feff}"
        );
        // Neighbours of the escaped ranges are ordinary text.
        for c in [
            '\u{a0}', '\u{200a}', '\u{2010}', '\u{202f}', '\u{2070}', 'é',
        ] {
            assert!(!needs_escape(c), "{c:?}");
        }
        let escaped = escape(HOSTILE);
        assert_inert(&escaped);
        assert!(!escaped.contains('\n'));
        assert!(escaped.contains(r"\u{1b}]52;c;cHduZWQ=\u{7}"), "{escaped}");
        assert!(escaped.contains(r"\u{9b}2J\u{202e}\nsha256"), "{escaped}");
    }

    #[test]
    fn keeping_newlines_escapes_everything_else() {
        let escaped = escape_keeping_newlines("ok\n\x1b[2J\r\u{9b}");
        assert_eq!(escaped, "ok\n\\u{1b}[2J\\r\\u{9b}");
    }

    #[test]
    fn escaping_twice_changes_nothing_more() {
        let once = escape(HOSTILE).into_owned();
        assert_eq!(escape(&once), once);
    }

    #[test]
    fn escaped_pads_the_escaped_text() {
        assert_eq!(format!("{:<6}|", Escaped("\x1b")), r"\u{1b}|");
        assert_eq!(format!("{:<8}|", Escaped("\x1b")), "\\u{1b}  |");
        assert_eq!(format!("{:>4}", Escaped(String::from("ab"))), "  ab");
    }

    #[test]
    fn terminal_json_is_inert_and_parses_to_the_same_value() {
        let value = serde_json::json!({
            HOSTILE: [HOSTILE, 1, {"nested": HOSTILE}],
            "del": "\x7f",
            "astral": "🦀",
        });
        for json in [to_json_pretty(&value).unwrap(), to_json(&value).unwrap()] {
            assert_inert(&json.replace('\n', ""));
            assert!(json.contains(r"\u009b2J\u202e\nsha256"), "{json}");
            let back: serde_json::Value = serde_json::from_str(&json).unwrap();
            assert_eq!(back, value);
        }
        let plain = serde_json::json!({"a": [1, "b"]});
        assert_eq!(
            to_json_pretty(&plain).unwrap(),
            serde_json::to_string_pretty(&plain).unwrap()
        );
    }

    /// The errors that quote a tool's text escape it where they quote it, so a multi-line
    /// error keeps its own lines and the tool gets none.
    #[test]
    fn errors_quoting_tool_text_escape_it() {
        let path = std::path::PathBuf::from("tool.wasm");
        let errors: Vec<Box<dyn std::error::Error>> = vec![
            Box::new(crate::LoadError::BadDescriptor {
                path: path.clone(),
                problem: format!("name `{HOSTILE}` must be …"),
            }),
            Box::new(crate::LoadError::Describe {
                path: path.clone(),
                reason: HOSTILE.into(),
            }),
            Box::new(crate::LoadError::NotATool {
                path: path.clone(),
                exports: vec![HOSTILE.into()],
            }),
            Box::new(crate::LoadError::MissingImports {
                path: path.clone(),
                missing: vec![HOSTILE.into()],
                hint: "rebuild".into(),
            }),
            Box::new(crate::LoadError::Invalid {
                path: path.clone(),
                reason: HOSTILE.into(),
            }),
            Box::new(crate::LoadError::Link {
                path: path.clone(),
                reason: HOSTILE.into(),
            }),
            Box::new(crate::LoadError::NotWasm {
                path: path.clone(),
                reason: HOSTILE.into(),
            }),
            Box::new(crate::RunError::SchemaViolation {
                tool: "t".into(),
                problems: vec![HOSTILE.into(), "second".into()],
            }),
            Box::new(crate::RunError::InputNotJson(HOSTILE.into())),
            Box::new(crate::RunError::Instantiate(HOSTILE.into())),
            Box::new(crate::RunError::LockKey(HOSTILE.into())),
        ];
        for error in errors {
            let text = error.to_string();
            assert_inert(&text.replace('\n', ""));
            assert!(
                !text.lines().any(|l| l.starts_with("sha256")),
                "a forged line: {text}"
            );
        }
        let schema = crate::RunError::SchemaViolation {
            tool: "t".into(),
            problems: vec![HOSTILE.into(), "second".into()],
        }
        .to_string();
        assert_eq!(schema.lines().count(), 3, "{schema}");
        let granted = crate::LoadError::NotGranted {
            path,
            tool: "t".into(),
            missing: vec![(HOSTILE.into(), "[[tools.t.http]]\nhost = \"x\"".into())],
        }
        .to_string();
        assert_inert(&granted.replace('\n', ""));
        assert_eq!(granted.lines().count(), 4, "{granted}");
    }

    /// Captures what the text log format writes.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0
                .lock()
                .map_err(|_| std::io::Error::other("poisoned"))?
                .extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn log_lines_escape_messages_and_every_field() {
        let captured = Captured::default();
        let sink = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .fmt_fields(LogFields)
            .with_ansi(false)
            .with_max_level(tracing::Level::TRACE)
            .with_writer(move || sink.clone())
            .finish();
        let error = std::io::Error::other(HOSTILE);
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!("run", tool = %HOSTILE);
            let _entered = span.enter();
            tracing::warn!(shown = %HOSTILE, debugged = ?HOSTILE, plain = HOSTILE, "{HOSTILE}");
            tracing::info!(message = HOSTILE, error = &error as &dyn std::error::Error);
        });
        let bytes = captured.0.lock().unwrap().clone();
        let text = String::from_utf8(bytes).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2, "{text}");
        for line in &lines {
            assert_inert(line);
            assert!(
                line.contains(r"run{tool=a\u{1b}]52;c;cHduZWQ=\u{7}b"),
                "{line}"
            );
        }
        let escaped = escape(HOSTILE);
        assert!(
            lines[0].contains(&format!(": {escaped} shown={escaped} ")),
            "{}",
            lines[0]
        );
        assert!(lines[0].contains(r#"plain="a\u{1b}]52"#), "{}", lines[0]);
        assert!(
            lines[1].contains(&format!(": {escaped} error={escaped}")),
            "{}",
            lines[1]
        );
    }
}
