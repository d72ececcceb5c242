//! Failure classes: the one vocabulary the host uses to decide what happens after something
//! fails (retry the run, return the failure as final, or stop and escalate to a human).
//!
//! The WIT `error-class` is the subset a tool may report itself; `InDoubt` and
//! `ResourceExhausted` are the host's own verdicts, which no tool can claim or swallow.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Why an attempt, effect or call failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureClass {
    /// A dependency was briefly unavailable; a retry may succeed.
    Transient,
    /// The input or payload is wrong; the same request fails the same way again.
    Validation,
    /// A policy denied the request.
    Permission,
    /// A deadline passed.
    Timeout,
    /// The request collides with other work (reused key, key held by a live run).
    Conflict,
    /// An effect's outcome is unknown and downstream does not honour idempotency keys:
    /// only a human can say whether it happened.
    InDoubt,
    /// The tool hit a memory, table, stack, output or log bound.
    ResourceExhausted,
    /// Anything else that must not be retried automatically (including guest traps).
    Fatal,
}

impl FailureClass {
    pub const ALL: [FailureClass; 8] = [
        Self::Transient,
        Self::Validation,
        Self::Permission,
        Self::Timeout,
        Self::Conflict,
        Self::InDoubt,
        Self::ResourceExhausted,
        Self::Fatal,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Transient => "transient",
            Self::Validation => "validation",
            Self::Permission => "permission",
            Self::Timeout => "timeout",
            Self::Conflict => "conflict",
            Self::InDoubt => "in_doubt",
            Self::ResourceExhausted => "resource_exhausted",
            Self::Fatal => "fatal",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.as_str() == s)
    }

    /// Whether a new attempt of the same run may fix this failure. Retrying is safe only
    /// because every effect is key-guarded; `InDoubt` is never retried automatically.
    pub fn is_retryable(self) -> bool {
        matches!(self, Self::Transient | Self::Timeout)
    }
}

impl fmt::Display for FailureClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A classified failure, as recorded in the ledger and shown to callers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Failure {
    pub class: FailureClass,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<serde_json::Value>,
}

impl Failure {
    pub fn new(class: FailureClass, message: impl Into<String>) -> Self {
        Self {
            class,
            message: message.into(),
            details: None,
        }
    }

    pub fn with_details(mut self, details: serde_json::Value) -> Self {
        self.details = Some(details);
        self
    }
}

/// An effect, by its kind and idempotency key: the one a failed attempt was acting on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EffectRef {
    pub kind: String,
    pub key: String,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.class, self.message)
    }
}

impl std::error::Error for Failure {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn class_names_round_trip() {
        for class in FailureClass::ALL {
            assert_eq!(FailureClass::parse(class.as_str()), Some(class));
            let json = serde_json::to_string(&class).unwrap();
            assert_eq!(json, format!("\"{}\"", class.as_str()));
        }
        assert_eq!(FailureClass::parse("nope"), None);
    }

    #[test]
    fn only_transient_and_timeout_are_retryable() {
        let retryable: Vec<_> = FailureClass::ALL
            .into_iter()
            .filter(|c| c.is_retryable())
            .collect();
        assert_eq!(
            retryable,
            vec![FailureClass::Transient, FailureClass::Timeout]
        );
    }
}
