//! The [`Tool`] trait and the glue between it and the world's `describe` and `run` exports.
//! Invariant: whatever the author's types do, `run` answers with JSON text or a classified
//! error; bad input JSON is `validation`, never a trap.

use schemars::JsonSchema;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::bindings::{Descriptor, RunContext, ToolError};
use crate::{Context, Error};

/// A Tollgate tool. Export it with [`export_tool!`](crate::export_tool).
pub trait Tool {
    /// The tool's name, as agents and policies refer to it.
    const NAME: &'static str;
    /// Semantic version of the tool; usually `env!("CARGO_PKG_VERSION")`.
    const VERSION: &'static str;
    const DESCRIPTION: &'static str;
    /// Effect kinds the tool may perform, such as `erp.post-invoice`.
    const EFFECTS: &'static [&'static str] = &[];
    /// Other capabilities the tool asks for, such as `http:api.example.com`.
    const CAPABILITIES: &'static [&'static str] = &[];

    /// The input, deserialized from JSON; its JSON Schema is derived for `describe`.
    type Input: DeserializeOwned + JsonSchema;
    /// The output, serialized to JSON.
    type Output: Serialize;

    fn run(ctx: &Context, input: Self::Input) -> Result<Self::Output, Error>;

    /// The input's JSON Schema (draft 2020-12). Derived from [`Tool::Input`] by default.
    fn input_schema() -> serde_json::Value {
        schemars::schema_for!(Self::Input).to_value()
    }
}

/// The descriptor `describe` returns for `T`.
pub fn describe<T: Tool>() -> Descriptor {
    Descriptor {
        name: T::NAME.to_owned(),
        version: T::VERSION.to_owned(),
        description: T::DESCRIPTION.to_owned(),
        input_schema: T::input_schema().to_string(),
        effects: T::EFFECTS.iter().map(|&kind| kind.to_owned()).collect(),
        capabilities: T::CAPABILITIES.iter().map(|&cap| cap.to_owned()).collect(),
    }
}

/// `run` for `T`: JSON in, typed call, JSON out.
pub fn run<T: Tool>(ctx: RunContext, input: String) -> Result<String, ToolError> {
    let ctx = Context::from(ctx);
    let input: T::Input = serde_json::from_str(&input)
        .map_err(|error| Error::validation(format!("input: {error}")))?;
    let output = T::run(&ctx, input)?;
    serde_json::to_string(&output).map_err(|error| Error::fatal(format!("output: {error}")).into())
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;
    use serde_json::{Value, json};

    use super::*;
    use crate::ErrorClass;

    #[derive(Deserialize, JsonSchema)]
    struct In {
        name: String,
    }

    #[derive(Serialize)]
    struct Out {
        greeting: String,
        run_id: String,
        attempt: u32,
    }

    struct Greeter;

    impl Tool for Greeter {
        const NAME: &'static str = "greeter";
        const VERSION: &'static str = "1.2.3";
        const DESCRIPTION: &'static str = "Greets someone.";
        const EFFECTS: &'static [&'static str] = &["mail.send"];
        type Input = In;
        type Output = Out;

        fn run(ctx: &Context, input: In) -> Result<Out, Error> {
            if input.name.is_empty() {
                return Err(
                    Error::validation("name is empty").with_details(json!({"field": "name"}))
                );
            }
            Ok(Out {
                greeting: format!("hello, {}", input.name),
                run_id: ctx.run_id().to_owned(),
                attempt: ctx.attempt(),
            })
        }
    }

    fn ctx() -> RunContext {
        RunContext {
            run_id: "run-2026-01-01-x".into(),
            attempt: 2,
            tool: "greeter".into(),
            deadline_ms: 1,
        }
    }

    #[test]
    fn describe_reports_constants_and_a_2020_12_schema() {
        let descriptor = describe::<Greeter>();
        assert_eq!(descriptor.name, "greeter");
        assert_eq!(descriptor.version, "1.2.3");
        assert_eq!(descriptor.description, "Greets someone.");
        assert_eq!(descriptor.effects, ["mail.send"]);
        assert!(descriptor.capabilities.is_empty());
        let schema: Value = serde_json::from_str(&descriptor.input_schema).expect("schema json");
        assert_eq!(
            schema["$schema"],
            "https://json-schema.org/draft/2020-12/schema"
        );
        assert_eq!(schema["required"], json!(["name"]));
        assert_eq!(schema["properties"]["name"]["type"], "string");
    }

    #[test]
    fn run_passes_context_and_serializes_output() {
        let output = run::<Greeter>(ctx(), r#"{"name":"Ada"}"#.into()).expect("ok");
        assert_eq!(
            serde_json::from_str::<Value>(&output).expect("json"),
            json!({"greeting": "hello, Ada", "run_id": "run-2026-01-01-x", "attempt": 2})
        );
    }

    #[test]
    fn bad_input_is_a_validation_error_with_serdes_message() {
        let error = Error::from(run::<Greeter>(ctx(), "{}".into()).expect_err("missing field"));
        assert_eq!(error.class, ErrorClass::Validation);
        assert_eq!(
            error.message,
            "input: missing field `name` at line 1 column 2"
        );
        let error = Error::from(run::<Greeter>(ctx(), "not json".into()).expect_err("syntax"));
        assert_eq!(error.class, ErrorClass::Validation);
        assert!(error.message.starts_with("input: expected"), "{error}");
    }

    #[test]
    fn tool_errors_pass_through_with_details() {
        let error = Error::from(run::<Greeter>(ctx(), r#"{"name":""}"#.into()).expect_err("empty"));
        assert_eq!(
            error,
            Error::validation("name is empty").with_details(json!({"field": "name"}))
        );
    }
}
