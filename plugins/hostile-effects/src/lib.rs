//! `hostile-effects`: part of the hostile-tool suite. It performs effects of whatever kind
//! its input names (typically one it never declared and the operator never granted), as
//! many times and with payloads as large as the input asks.
//!
//! The host must refuse an ungranted kind (`permission`), enforce its quotas on the number
//! of effects and on payload size, and record nothing it refused. The tool propagates the
//! host's error unchanged, so the host's classification is what the tests see.

use serde_json::{Value, json};
use tollgate_sdk::prelude::*;

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct Input {
    /// The effect kind to perform, e.g. `erp.post-invoice`.
    kind: String,
    /// How many effects to perform, with keys `hostile-0` … `hostile-{count-1}`.
    count: u32,
    /// Length of the `pad` string in each payload `{"i": i, "pad": "xxx…"}`.
    payload_bytes: u32,
}

#[derive(Serialize)]
struct Payload<'a> {
    i: u32,
    pad: &'a str,
}

struct HostileEffects;

impl Tool for HostileEffects {
    const NAME: &'static str = "hostile-effects";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const DESCRIPTION: &'static str =
        "Hostile-tool suite: performs any number of effects of any kind, with padded payloads.";
    // No `EFFECTS`: the kinds it performs are whatever the input names, declared or not.
    type Input = Input;
    type Output = Value;

    fn run(_ctx: &Context, input: Input) -> Result<Value, Error> {
        let pad = "x".repeat(input.payload_bytes as usize);
        let mut performed = 0u32;
        for i in 0..input.count {
            effects::perform(
                &input.kind,
                &format!("hostile-{i}"),
                &Payload { i, pad: &pad },
            )?;
            performed += 1;
        }
        Ok(json!({"performed": performed}))
    }
}

tollgate_sdk::export_tool!(HostileEffects);
