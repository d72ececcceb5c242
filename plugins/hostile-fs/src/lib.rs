//! `hostile-fs`: part of the hostile-tool suite. It reads, writes, hard-links, renames and
//! lists whatever guest path its input names, through `std::fs` (so `wasi:filesystem`),
//! typically paths that escape its preopens: `../`, absolute paths, symlinks out of the
//! sandbox, links from a read-only mount into a writable one.
//!
//! The host must confine every operation to what the operator's policy mounts, with the
//! access it grants; the tool reports each refusal as a classified error carrying the
//! `io::ErrorKind` it saw, so the tests can tell "denied" from "not there".

use std::fmt;
use std::io;

use serde_json::{Value, json};
use tollgate_sdk::prelude::*;

#[derive(Clone, Copy, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
enum Attack {
    /// Read `path` as UTF-8: `{"content": "…"}`.
    Read,
    /// Create or truncate `path` with `content` (empty when absent): `{"written": bytes}`.
    Write,
    /// Hard-link `path` to the new name `to`: `{"done": true}`.
    HardLink,
    /// Rename `path` to `to`: `{"done": true}`.
    Rename,
    /// List the names in directory `path`, sorted: `{"entries": ["…"]}`.
    List,
}

impl fmt::Display for Attack {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Read => "read",
            Self::Write => "write",
            Self::HardLink => "hard-link",
            Self::Rename => "rename",
            Self::List => "list",
        })
    }
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct Input {
    attack: Attack,
    /// The guest path to attack.
    path: String,
    /// The second path of `hard-link` and `rename`.
    #[serde(default)]
    to: Option<String>,
    /// What `write` writes.
    #[serde(default)]
    content: Option<String>,
}

struct HostileFs;

impl Tool for HostileFs {
    const NAME: &'static str = "hostile-fs";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const DESCRIPTION: &'static str =
        "Hostile-tool suite: reads, writes, hard-links, renames or lists any guest path.";
    type Input = Input;
    type Output = Value;

    fn run(_ctx: &Context, input: Input) -> Result<Value, Error> {
        let Input {
            attack,
            path,
            to,
            content,
        } = input;
        let target = || {
            to.as_deref()
                .ok_or_else(|| Error::validation(format!("{attack} {path}: `to` is required")))
        };
        let result = match attack {
            Attack::Read => {
                std::fs::read_to_string(&path).map(|content| json!({"content": content}))
            }
            Attack::Write => {
                let content = content.unwrap_or_default();
                std::fs::write(&path, &content).map(|()| json!({"written": content.len()}))
            }
            Attack::HardLink => {
                std::fs::hard_link(&path, target()?).map(|()| json!({"done": true}))
            }
            Attack::Rename => std::fs::rename(&path, target()?).map(|()| json!({"done": true})),
            Attack::List => list(&path).map(|entries| json!({"entries": entries})),
        };
        result.map_err(|error| classify(attack, &path, &error))
    }
}

fn list(path: &str) -> io::Result<Vec<String>> {
    let mut names = std::fs::read_dir(path)?
        .map(|entry| entry.map(|entry| entry.file_name().to_string_lossy().into_owned()))
        .collect::<io::Result<Vec<_>>>()?;
    names.sort();
    Ok(names)
}

/// `NotFound` is the caller's mistake (`validation`); anything else the sandbox refused, or
/// must be treated as if it had (`permission`).
fn classify(attack: Attack, path: &str, error: &io::Error) -> Error {
    let message = format!("{attack} {path}: {error}");
    let classified = match error.kind() {
        io::ErrorKind::NotFound => Error::validation(message),
        _ => Error::permission(message),
    };
    classified.with_details(json!({"io_kind": format!("{:?}", error.kind()), "path": path}))
}

tollgate_sdk::export_tool!(HostileFs);
