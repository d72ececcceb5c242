//! Connectors carry an effect to the outside world. The operator configures one per effect
//! kind; a tool supplies only the payload and the idempotency key.
//!
//! Each connector declares whether its downstream honours idempotency keys: that single fact
//! decides whether an effect whose outcome is unknown may be re-sent or must go to a human.

use crate::failure::FailureClass;
use std::future::Future;
use std::pin::Pin;

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// One dispatch of one effect.
#[derive(Debug, Clone, Copy)]
pub struct Dispatch<'a> {
    pub run_id: &'a str,
    pub attempt: u32,
    pub kind: &'a str,
    /// Sent downstream as `Idempotency-Key` (or its connector's equivalent).
    pub key: &'a str,
    pub payload: &'a str,
    /// The fencing token of the business-object lock the run holds, sent downstream as
    /// `X-Tollgate-Fence` so it can refuse a stale holder's write.
    pub fence: Option<i64>,
}

/// A successful dispatch.
#[derive(Debug, Clone, PartialEq)]
pub struct Response {
    pub status: Option<u16>,
    pub body: String,
}

/// A failed dispatch, classified.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{message}")]
pub struct ConnectorError {
    pub class: FailureClass,
    pub message: String,
    pub status: Option<u16>,
    pub body: Option<String>,
    /// True when the request may have taken effect downstream (e.g. a timeout after sending).
    pub outcome_unknown: bool,
    /// True when the request failed inside the host before anything was sent: it says
    /// nothing about the downstream, so it never counts toward a circuit breaker.
    pub before_send: bool,
    /// Downstream asked to wait this long before retrying (`Retry-After`).
    pub retry_after_ms: Option<u64>,
}

impl ConnectorError {
    pub fn new(class: FailureClass, message: impl Into<String>) -> Self {
        Self {
            class,
            message: message.into(),
            status: None,
            body: None,
            outcome_unknown: false,
            before_send: false,
            retry_after_ms: None,
        }
    }
}

/// What downstream says about a key whose outcome the host does not know.
#[derive(Debug, Clone, PartialEq)]
pub enum Reconciled {
    /// It happened: downstream's record of it becomes the effect's outcome.
    Happened(Response),
    /// It did not happen: it may be sent again under its key.
    NotHappened { status: Option<u16> },
    /// No answer either way (an error, an unexpected status): a human decides, as without a
    /// probe. Says what the probe got.
    Unknown {
        status: Option<u16>,
        message: String,
    },
}

/// A probe's answer in a word, as journaled and shown in evidence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Answer {
    Happened,
    NotHappened,
    Unknown,
}

impl std::fmt::Display for Answer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Happened => "happened",
            Self::NotHappened => "not happened",
            Self::Unknown => "unknown",
        })
    }
}

impl Reconciled {
    pub fn answer(&self) -> Answer {
        match self {
            Self::Happened(_) => Answer::Happened,
            Self::NotHappened { .. } => Answer::NotHappened,
            Self::Unknown { .. } => Answer::Unknown,
        }
    }

    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Happened(response) => response.status,
            Self::NotHappened { status } | Self::Unknown { status, .. } => *status,
        }
    }

    /// The probe's answer for evidence: its verdict, status and what it returned or why not.
    pub fn evidence(&self) -> serde_json::Value {
        let detail = match self {
            Self::Happened(response) => Some(response.body.as_str()),
            Self::Unknown { message, .. } => Some(message.as_str()),
            Self::NotHappened { .. } => None,
        };
        serde_json::json!({ "answer": self.answer(), "status": self.status(), "detail": detail })
    }
}

pub trait Connector: Send + Sync + 'static {
    /// Whether downstream deduplicates requests by idempotency key.
    fn honours_idempotency_keys(&self) -> bool;
    /// One line for logs and `runs show`, e.g. `http POST http://127.0.0.1:8080/invoices`.
    fn describe(&self) -> String;
    /// The most bytes of response (or failure) body the ledger records for one dispatch. A
    /// tool's storage budget reserves this much for each effect before it is dispatched.
    fn max_response_bytes(&self) -> u64;
    fn dispatch<'a>(
        &'a self,
        call: Dispatch<'a>,
    ) -> BoxFuture<'a, Result<Response, ConnectorError>>;
    /// Whether downstream can be asked if a key's effect happened ([`Connector::reconcile`]).
    fn can_reconcile(&self) -> bool {
        false
    }
    /// How long after a send may have begun a request of it may still land downstream. A
    /// probe asked earlier could hear "not found" from a downstream the request has yet to
    /// reach.
    fn lands_within_ms(&self) -> u64 {
        0
    }
    /// How long after its dispatch was recorded a request may still be started, if a probe
    /// may later ask about it: one started later could land after the probe's "not found".
    fn start_within_ms(&self) -> Option<u64> {
        None
    }
    /// Asks downstream whether the effect of `call` (its key and payload) happened.
    fn reconcile<'a>(&'a self, call: Dispatch<'a>) -> BoxFuture<'a, Reconciled> {
        let _ = call;
        Box::pin(async {
            Reconciled::Unknown {
                status: None,
                message: "this connector has no probe".to_owned(),
            }
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConnectorSetupError {
    #[error("connector for `{kind}`: {message}")]
    Invalid { kind: String, message: String },
}
