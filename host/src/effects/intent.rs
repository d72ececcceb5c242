//! What an effect request must be before anything of it is recorded: a key that every
//! connector can carry as it is, and a payload that parses as exactly one JSON value.
//!
//! Invariant: a request that passes these checks can be claimed, dispatched and shown to a
//! human as it is. The parse that checks a payload is the parse the evidence packet shows,
//! so an approver never sees `null`, or one value of a duplicated key, while the downstream
//! gets bytes that mean something else.

use crate::failure::{Failure, FailureClass};
use serde::de::{DeserializeSeed, Error as _, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};
use std::fmt;

/// Longest idempotency key, in bytes.
pub const MAX_KEY_BYTES: usize = 512;

/// Checks an idempotency key: 1 to [`MAX_KEY_BYTES`] bytes, no control characters (so it can
/// go into an HTTP header or a file name as it is, and prints as it is), and no leading or
/// trailing whitespace (which headers would silently strip, so two keys could collide).
pub fn check_key(key: &str) -> Result<(), Failure> {
    let problem = if key.is_empty() || key.len() > MAX_KEY_BYTES {
        format!("must be 1 to {MAX_KEY_BYTES} bytes, got {}", key.len())
    } else if let Some((at, c)) = key.char_indices().find(|(_, c)| c.is_control()) {
        format!(
            "contains the control character U+{:04X} at byte {at}; keys are printable text",
            u32::from(c)
        )
    } else if key.trim() != key {
        "starts or ends with whitespace, which headers strip".to_owned()
    } else {
        return Ok(());
    };
    Err(Failure::new(
        FailureClass::Validation,
        format!(
            "idempotency key {problem}: choose the key from the business intent, e.g. `post-invoice:INV-42`"
        ),
    ))
}

/// Parses a payload strictly: one JSON value, with no duplicate object keys and no string a
/// JSON parser cannot decode (a lone surrogate escape such as `"\ud800"`).
pub fn parse_payload(payload: &str) -> Result<Value, Failure> {
    let mut de = serde_json::Deserializer::from_str(payload);
    let value = Strict
        .deserialize(&mut de)
        .and_then(|value| de.end().map(|()| value))
        .map_err(|e| {
            Failure::new(
                FailureClass::Validation,
                format!("effect payload is not valid JSON: {e}; send one JSON value with unique object keys"),
            )
        })?;
    Ok(value)
}

/// Builds a [`Value`] and refuses an object that names a key twice (serde_json keeps the last
/// silently, while a downstream may keep the first).
struct Strict;

impl<'de> DeserializeSeed<'de> for Strict {
    type Value = Value;

    fn deserialize<D: serde::Deserializer<'de>>(self, de: D) -> Result<Value, D::Error> {
        de.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Strict {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Value, E> {
        serde_json::Number::from_f64(v)
            .map(Value::Number)
            .ok_or_else(|| E::custom(format!("number {v} has no JSON form")))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element_seed(Strict)? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut object = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if object.contains_key(&key) {
                return Err(A::Error::custom(format!(
                    "duplicate key `{}`",
                    crate::clip::text(&key, 64)
                )));
            }
            let value = map.next_value_seed(Strict)?;
            object.insert(key, value);
        }
        Ok(Value::Object(object))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn printable_keys_pass() {
        let longest = "x".repeat(MAX_KEY_BYTES);
        for key in ["post-invoice:INV-42", "k", "ünïcode key", longest.as_str()] {
            assert_eq!(check_key(key), Ok(()), "{key}");
        }
    }

    #[test]
    fn keys_a_header_cannot_carry_are_validation_errors() {
        for (key, says) in [
            ("", "1 to 512 bytes"),
            (&"x".repeat(MAX_KEY_BYTES + 1) as &str, "1 to 512 bytes"),
            ("a\nb", "U+000A at byte 1"),
            ("a\rb", "U+000D"),
            ("tab\there", "U+0009"),
            ("esc\u{1b}[31m", "U+001B"),
            ("del\u{7f}", "U+007F"),
            ("c1\u{9b}", "U+009B"),
            (" padded", "whitespace"),
            ("padded ", "whitespace"),
        ] {
            let failure = check_key(key).unwrap_err();
            assert_eq!(failure.class, FailureClass::Validation);
            assert!(failure.message.contains(says), "{key:?}: {failure}");
        }
    }

    #[test]
    fn payloads_parse_to_the_value_they_say() {
        assert_eq!(
            parse_payload(r#"{"amount":1,"lines":[{"q":2}],"ok":true,"n":null,"f":1.5}"#),
            Ok(json!({"amount":1,"lines":[{"q":2}],"ok":true,"n":null,"f":1.5}))
        );
        assert_eq!(parse_payload(r#""\u00e9""#), Ok(json!("é")));
        assert_eq!(parse_payload("-3"), Ok(json!(-3)));
    }

    #[test]
    fn a_duplicated_key_is_refused_at_any_depth() {
        for payload in [
            r#"{"amount":9999999,"amount":1}"#,
            r#"{"a":{"b":1,"b":2}}"#,
            r#"[{"x":1},{"y":1,"y":1}]"#,
        ] {
            let failure = parse_payload(payload).unwrap_err();
            assert_eq!(failure.class, FailureClass::Validation, "{payload}");
            assert!(failure.message.contains("duplicate key"), "{failure}");
        }
    }

    #[test]
    fn a_lone_surrogate_and_other_undecodable_text_are_refused() {
        for payload in [
            r#"{"memo":"\ud800"}"#,
            r#""\udc00""#,
            r#"{"a":1} {"b":2}"#,
            "{",
            "",
            "1e400",
        ] {
            let failure = parse_payload(payload).unwrap_err();
            assert_eq!(failure.class, FailureClass::Validation, "{payload}");
        }
    }
}
