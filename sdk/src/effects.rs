//! Effects: the only way a tool changes the outside world.
//!
//! The host records the intent (kind, key, payload digest) durably before dispatching, and the
//! outcome before returning; performing the same kind and key again returns the recorded
//! outcome without acting twice. Choose the key from the business intent, e.g.
//! `post-invoice:INV-42`, never from anything that changes between attempts.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::Error;
use crate::bindings::tollgate::tool::effects as wit;

/// The recorded result of an effect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// The downstream response body (JSON text when the connector returned JSON).
    pub body: String,
    /// True when the outcome was already recorded and nothing was dispatched this time.
    pub replayed: bool,
    /// How many times the host has dispatched this key downstream, over all runs.
    pub dispatches: u32,
}

impl Outcome {
    /// The body deserialized as `T`. A body of the wrong shape is a `fatal` error: retrying
    /// replays the same recorded body.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, Error> {
        serde_json::from_str(&self.body)
            .map_err(|error| Error::fatal(format!("effect outcome: {error}")))
    }

    /// The body as a JSON value when it parses as JSON, else as a JSON string.
    pub fn body_value(&self) -> serde_json::Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|_| serde_json::Value::String(self.body.clone()))
    }
}

impl From<wit::Outcome> for Outcome {
    fn from(outcome: wit::Outcome) -> Self {
        Self {
            body: outcome.body,
            replayed: outcome.replayed,
            dispatches: outcome.dispatches,
        }
    }
}

/// Perform effect `kind` with idempotency `key` and `payload` serialized as JSON.
///
/// The payload's bytes are part of the idempotency check: the same key with a different
/// payload is a `conflict`. Serialize deterministically (structs keep field order;
/// `serde_json::Map` is sorted), so a retry sends the same bytes.
///
/// Errors come from the host unchanged (`permission`, `conflict`, `validation`,
/// `transient`, `timeout`); a payload that cannot be serialized is `fatal`.
pub fn perform(kind: &str, key: &str, payload: &impl Serialize) -> Result<Outcome, Error> {
    let payload = serde_json::to_string(payload)
        .map_err(|error| Error::fatal(format!("effect `{kind}` payload: {error}")))?;
    perform_json(kind, key, &payload)
}

/// [`perform`] with a payload that is already JSON text.
pub fn perform_json(kind: &str, key: &str, payload: &str) -> Result<Outcome, Error> {
    wit::perform(kind, key, payload)
        .map(Outcome::from)
        .map_err(Error::from)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::ErrorClass;

    fn outcome(body: &str) -> Outcome {
        Outcome {
            body: body.into(),
            replayed: false,
            dispatches: 1,
        }
    }

    #[test]
    fn body_value_parses_json_and_keeps_text_as_a_string() {
        assert_eq!(
            outcome(r#"{"id":"erp-1"}"#).body_value(),
            json!({"id": "erp-1"})
        );
        assert_eq!(outcome("accepted").body_value(), json!("accepted"));
    }

    #[test]
    fn json_of_the_wrong_shape_is_fatal() {
        let error = outcome("accepted")
            .json::<serde_json::Map<String, serde_json::Value>>()
            .expect_err("not an object");
        assert_eq!(error.class, ErrorClass::Fatal);
        assert!(error.message.starts_with("effect outcome: "), "{error}");
    }
}
