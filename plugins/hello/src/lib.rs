//! `hello`: echoes its message with the run's ID and attempt, and logs one event. The
//! smallest Tollgate tool; no effects, no checkpoints.

use tollgate_sdk::prelude::*;

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct Input {
    /// The text to echo back.
    message: String,
}

#[derive(Serialize)]
struct Output {
    echo: String,
    run_id: String,
    attempt: u32,
}

struct Hello;

impl Tool for Hello {
    const NAME: &'static str = "hello";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const DESCRIPTION: &'static str = "Echoes a message with the run's ID and attempt.";
    type Input = Input;
    type Output = Output;

    fn run(ctx: &Context, input: Input) -> Result<Output, Error> {
        log::info_with("echo", &[("length", &input.message.len())]);
        Ok(Output {
            echo: input.message,
            run_id: ctx.run_id().to_owned(),
            attempt: ctx.attempt(),
        })
    }
}

tollgate_sdk::export_tool!(Hello);
