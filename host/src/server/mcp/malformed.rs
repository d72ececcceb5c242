//! What to answer to input that is not an MCP message, on stdio and over HTTP alike:
//!
//! - input that is not JSON gets `-32700` (parse error), with `id: null`;
//! - JSON that is not a message gets `-32600` (invalid request), with its `id` when it has a
//!   usable one; a batch (an array) is one of those, as MCP has no batches.
//!
//! On stdio nothing is ever answered to a response or a notification, even a malformed one:
//! that is JSON-RPC's rule, and it keeps two peers that both answer garbage from feeding each
//! other errors forever. Over HTTP every POST gets an answer, so there it is `-32600` too.

use rmcp::RoleServer;
use rmcp::service::RxJsonRpcMessage;
use serde_json::{Value, json};

pub(super) const PARSE_ERROR: i64 = -32700;
pub(super) const INVALID_REQUEST: i64 = -32600;
/// RFC 8259 §8.1 lets a parser ignore a leading byte order mark.
const BOM: &[u8] = "\u{feff}".as_bytes();

/// The message on a stdio `line` (without its newline), or what to answer instead (`None`:
/// answer nothing).
pub(super) fn read_line(line: &[u8]) -> Result<RxJsonRpcMessage<RoleServer>, Option<Vec<u8>>> {
    let line = line.strip_prefix(BOM).unwrap_or(line);
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if line.iter().all(u8::is_ascii_whitespace) {
        return Err(None);
    }
    // The common case parses once; only a line that fails is looked at again.
    let typed_error = match serde_json::from_slice(line) {
        Ok(message) => return Ok(message),
        Err(e) => e,
    };
    let value: Value = match serde_json::from_slice(line) {
        Ok(value) => value,
        Err(e) => return Err(Some(parse_error(&e))),
    };
    let is_request = value.get("method").is_some() && value.get("id").is_some();
    if value.is_object() && !is_request {
        tracing::debug!("ignoring a malformed response or notification: {typed_error}");
        return Err(None);
    }
    Err(Some(invalid(&value, &typed_error)))
}

/// The answer to an HTTP body that is not a message; `None` when it is one after all.
pub(super) fn answer_body(body: &[u8]) -> Option<Vec<u8>> {
    let body = body.strip_prefix(BOM).unwrap_or(body);
    let typed_error = serde_json::from_slice::<RxJsonRpcMessage<RoleServer>>(body).err()?;
    Some(match serde_json::from_slice::<Value>(body) {
        Ok(value) => invalid(&value, &typed_error),
        Err(e) => parse_error(&e),
    })
}

fn parse_error(e: &serde_json::Error) -> Vec<u8> {
    error(Value::Null, PARSE_ERROR, format!("Parse error: {e}"))
}

/// `-32600` for JSON `value` that did not parse as a message (`why`).
fn invalid(value: &Value, why: &serde_json::Error) -> Vec<u8> {
    let id = match value.get("id") {
        Some(id @ (Value::String(_) | Value::Number(_))) => id.clone(),
        _ => Value::Null,
    };
    let why = if value.is_array() {
        "batches are not part of MCP; send one message at a time".to_owned()
    } else {
        why.to_string()
    };
    error(id, INVALID_REQUEST, format!("Invalid request: {why}"))
}

/// A JSON-RPC error response, serialized.
pub(super) fn error(id: Value, code: i64, message: String) -> Vec<u8> {
    // Serializing a `Value` cannot fail.
    serde_json::to_vec(
        &json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": message}}),
    )
    .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(line: &str) -> Option<Value> {
        read_line(line.as_bytes())
            .err()
            .flatten()
            .map(|bytes| serde_json::from_slice(&bytes).unwrap())
    }

    #[test]
    fn a_line_that_is_not_json_is_a_parse_error_with_a_null_id() {
        let reply = answer("{not json").unwrap();
        assert_eq!(reply["error"]["code"], PARSE_ERROR);
        assert_eq!(reply["id"], Value::Null);
        let bytes: Value =
            serde_json::from_slice(&read_line(b"{\"a\":\"\xff\"}").unwrap_err().unwrap()).unwrap();
        assert_eq!(bytes["error"]["code"], PARSE_ERROR, "not UTF-8: {bytes}");
        assert!(
            reply["error"]["message"]
                .as_str()
                .unwrap()
                .starts_with("Parse error")
        );
    }

    #[test]
    fn json_that_is_not_a_request_is_invalid_with_the_id_when_it_has_one() {
        let reply = answer(r#"{"jsonrpc":"2.0","id":7,"method":42}"#).unwrap();
        assert_eq!(reply["error"]["code"], INVALID_REQUEST);
        assert_eq!(reply["id"], 7);
        let batch = answer(r#"[{"jsonrpc":"2.0","id":1,"method":"ping"}]"#).unwrap();
        assert_eq!(batch["error"]["code"], INVALID_REQUEST);
        assert!(
            batch["error"]["message"]
                .as_str()
                .unwrap()
                .contains("batches")
        );
        let scalar = answer("42").unwrap();
        assert_eq!(scalar["error"]["code"], INVALID_REQUEST);
    }

    #[test]
    fn over_http_a_malformed_notification_is_answered_too_and_a_message_is_not() {
        let reply: Value =
            serde_json::from_slice(&answer_body(br#"{"jsonrpc":"2.0","method":7}"#).unwrap())
                .unwrap();
        assert_eq!(reply["error"]["code"], INVALID_REQUEST);
        let reply: Value = serde_json::from_slice(&answer_body(b"{oops").unwrap()).unwrap();
        assert_eq!(reply["error"]["code"], PARSE_ERROR);
        assert!(answer_body(br#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#).is_none());
    }

    #[test]
    fn responses_notifications_and_blank_lines_are_never_answered() {
        assert!(
            answer(r#"{"jsonrpc":"2.0","id":null,"error":{"code":-32700,"message":"x"}}"#)
                .is_none()
        );
        assert!(answer(r#"{"jsonrpc":"2.0","method":"notifications/bogus","params":3}"#).is_none());
        assert!(answer("   ").is_none());
        assert!(read_line(br#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#).is_ok());
        assert!(
            read_line("\u{feff}{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"ping\"}\r".as_bytes())
                .is_ok()
        );
    }
}
