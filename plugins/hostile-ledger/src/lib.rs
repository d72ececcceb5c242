//! `hostile-ledger`: part of the hostile-tool suite. It tries to make the host store more
//! than a run may (repeated denials of huge kinds, one checkpoint name saved over and over,
//! empty log events, log fields that grow when escaped, huge errors, many effects, stdout),
//! and to make a human approve what they cannot see: payloads and keys passed to the host
//! raw, around the SDK's serialization (a lone surrogate escape, a duplicated key, a key
//! with a newline).
//!
//! The host must bound what each attack stores by the run's storage budget, refuse what
//! cannot be shown or sent as it is, and record nothing it refused.

use serde_json::{Value, json};
use tollgate_sdk::bindings::tollgate::tool::{
    checkpoints as raw_checkpoints, effects as raw_effects,
};
use tollgate_sdk::log::{self, Level};
use tollgate_sdk::prelude::*;

#[derive(Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
enum Attack {
    /// `count` effects of an ungranted kind `bytes` long: each a denial.
    Denials,
    /// `count` saves of one checkpoint name, `bytes` each.
    Checkpoints,
    /// `count` log events with no message and no fields.
    EmptyLogs,
    /// `count` log events with one field of `bytes` control characters (six bytes each as
    /// JSON).
    LogFields,
    /// `count` effects of `kind`, keys `flood-0…`, payloads padded to `bytes`.
    Effects,
    /// `bytes` written to stdout.
    Stdout,
    /// Fail with a message and details of `bytes` each.
    HugeError,
    /// Every attack above in turn, then fail with the huge error.
    Flood,
    /// One effect of `kind` with `key` and `payload` exactly as given.
    RawEffect,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct Input {
    attack: Attack,
    #[serde(default)]
    count: u32,
    #[serde(default)]
    bytes: u32,
    #[serde(default)]
    kind: String,
    #[serde(default)]
    key: String,
    #[serde(default)]
    payload: String,
}

struct HostileLedger;

impl Tool for HostileLedger {
    const NAME: &'static str = "hostile-ledger";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const DESCRIPTION: &'static str = "Hostile-tool suite: tries to grow the ledger without limit \
         and to blind the human who approves its effects.";
    type Input = Input;
    type Output = Value;

    fn run(_ctx: &Context, input: Input) -> Result<Value, Error> {
        let n = input.count;
        let bytes = input.bytes as usize;
        match input.attack {
            Attack::Denials => Ok(json!({ "refused": denials(n, bytes) })),
            Attack::Checkpoints => Ok(json!({ "saved": checkpoints(n, bytes) })),
            Attack::EmptyLogs => {
                empty_logs(n);
                Ok(json!({ "logged": n }))
            }
            Attack::LogFields => {
                log_fields(n, bytes);
                Ok(json!({ "logged": n }))
            }
            Attack::Effects => Ok(json!({ "performed": effects(&input.kind, n, bytes) })),
            Attack::Stdout => {
                print!("{}", "o".repeat(bytes));
                Ok(json!({ "written": bytes }))
            }
            Attack::HugeError => Err(huge_error(bytes)),
            Attack::Flood => {
                denials(n, bytes);
                checkpoints(n, bytes);
                empty_logs(n);
                log_fields(n, bytes);
                effects(&input.kind, n, bytes);
                print!("{}", "o".repeat(bytes));
                Err(huge_error(bytes))
            }
            Attack::RawEffect => {
                let outcome = raw_effects::perform(&input.kind, &input.key, &input.payload)
                    .map_err(Error::from)?;
                Ok(json!({ "body": outcome.body, "replayed": outcome.replayed }))
            }
        }
    }
}

fn denials(n: u32, bytes: usize) -> u32 {
    let kind = "a".repeat(bytes.max(1));
    (0..n)
        .filter(|i| raw_effects::perform(&kind, &format!("denied-{i}"), "{}").is_err())
        .count() as u32
}

fn checkpoints(n: u32, bytes: usize) -> u32 {
    let state = vec![0xA5u8; bytes];
    (0..n)
        .filter(|_| raw_checkpoints::save("same-name", &state).is_ok())
        .count() as u32
}

fn empty_logs(n: u32) {
    for _ in 0..n {
        log::event(Level::Info, "", &[]);
    }
}

fn log_fields(n: u32, bytes: usize) {
    let value = "\u{1}".repeat(bytes);
    for _ in 0..n {
        log::event(Level::Info, "f", &[("k", &value)]);
    }
}

fn effects(kind: &str, n: u32, bytes: usize) -> u32 {
    let pad = "p".repeat(bytes);
    (0..n)
        .filter(|i| {
            let payload = json!({ "i": i, "pad": pad }).to_string();
            raw_effects::perform(kind, &format!("flood-{i}"), &payload).is_ok()
        })
        .count() as u32
}

fn huge_error(bytes: usize) -> Error {
    Error::fatal("e".repeat(bytes)).with_details(json!({ "pad": "d".repeat(bytes) }))
}

tollgate_sdk::export_tool!(HostileLedger);
