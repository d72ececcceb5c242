//! The classified failure a tool returns, and its conversions to and from the WIT
//! `tool-error`. The class, not the message, decides what the host does next, so every
//! constructor names one.

use std::fmt;

use crate::bindings::ToolError;
use crate::bindings::tollgate::tool::types::ErrorClass as WitErrorClass;

/// Why a call failed; mirrors the WIT `error-class`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorClass {
    /// Worth retrying: a dependency was briefly unavailable or overloaded.
    Transient,
    /// The input or payload is wrong; retrying the same request fails the same way.
    Validation,
    /// A policy denied the request; an operator must grant it.
    Permission,
    /// A deadline passed before the work finished.
    Timeout,
    /// The request collides with other work (an idempotency key reused or held elsewhere).
    Conflict,
    /// Anything else that must not be retried automatically.
    Fatal,
}

impl ErrorClass {
    /// The WIT name of the class, e.g. `"validation"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Transient => "transient",
            Self::Validation => "validation",
            Self::Permission => "permission",
            Self::Timeout => "timeout",
            Self::Conflict => "conflict",
            Self::Fatal => "fatal",
        }
    }
}

impl fmt::Display for ErrorClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<WitErrorClass> for ErrorClass {
    fn from(class: WitErrorClass) -> Self {
        match class {
            WitErrorClass::Transient => Self::Transient,
            WitErrorClass::Validation => Self::Validation,
            WitErrorClass::Permission => Self::Permission,
            WitErrorClass::Timeout => Self::Timeout,
            WitErrorClass::Conflict => Self::Conflict,
            WitErrorClass::Fatal => Self::Fatal,
        }
    }
}

impl From<ErrorClass> for WitErrorClass {
    fn from(class: ErrorClass) -> Self {
        match class {
            ErrorClass::Transient => Self::Transient,
            ErrorClass::Validation => Self::Validation,
            ErrorClass::Permission => Self::Permission,
            ErrorClass::Timeout => Self::Timeout,
            ErrorClass::Conflict => Self::Conflict,
            ErrorClass::Fatal => Self::Fatal,
        }
    }
}

/// A classified failure: what the tool returns from `run`, and what host calls return.
#[derive(Debug, Clone, PartialEq)]
pub struct Error {
    pub class: ErrorClass,
    /// One line a human can act on.
    pub message: String,
    /// Optional machine-readable detail.
    pub details: Option<serde_json::Value>,
}

impl Error {
    pub fn new(class: ErrorClass, message: impl Into<String>) -> Self {
        Self {
            class,
            message: message.into(),
            details: None,
        }
    }

    /// The input or payload is wrong; retrying the same request fails the same way.
    pub fn validation(message: impl Into<String>) -> Self {
        Self::new(ErrorClass::Validation, message)
    }

    /// Worth retrying: a dependency was briefly unavailable or overloaded.
    pub fn transient(message: impl Into<String>) -> Self {
        Self::new(ErrorClass::Transient, message)
    }

    /// A policy denied the request; an operator must grant it.
    pub fn permission(message: impl Into<String>) -> Self {
        Self::new(ErrorClass::Permission, message)
    }

    /// A deadline passed before the work finished.
    pub fn timeout(message: impl Into<String>) -> Self {
        Self::new(ErrorClass::Timeout, message)
    }

    /// The request collides with other work.
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(ErrorClass::Conflict, message)
    }

    /// Anything else that must not be retried automatically.
    pub fn fatal(message: impl Into<String>) -> Self {
        Self::new(ErrorClass::Fatal, message)
    }

    /// Attach machine-readable detail, e.g. `serde_json::json!({"expected": 3, "got": 4})`.
    #[must_use]
    pub fn with_details(mut self, details: serde_json::Value) -> Self {
        self.details = Some(details);
        self
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.class, self.message)
    }
}

impl std::error::Error for Error {}

impl From<Error> for ToolError {
    fn from(error: Error) -> Self {
        Self {
            class: error.class.into(),
            message: error.message,
            details: error.details.map(|details| details.to_string()),
        }
    }
}

impl From<ToolError> for Error {
    /// Details that are not valid JSON (a host should never send them) are kept as a JSON
    /// string rather than dropped.
    fn from(error: ToolError) -> Self {
        Self {
            class: error.class.into(),
            message: error.message,
            details: error.details.map(|details| {
                serde_json::from_str(&details).unwrap_or(serde_json::Value::String(details))
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const ALL: [ErrorClass; 6] = [
        ErrorClass::Transient,
        ErrorClass::Validation,
        ErrorClass::Permission,
        ErrorClass::Timeout,
        ErrorClass::Conflict,
        ErrorClass::Fatal,
    ];

    #[test]
    fn every_class_round_trips_through_the_wit_enum() {
        for class in ALL {
            let wit: WitErrorClass = class.into();
            assert_eq!(ErrorClass::from(wit), class);
        }
    }

    #[test]
    fn class_names_match_the_wit_enum() {
        let names: Vec<_> = ALL.iter().map(|class| class.as_str()).collect();
        assert_eq!(
            names,
            [
                "transient",
                "validation",
                "permission",
                "timeout",
                "conflict",
                "fatal"
            ]
        );
        for (index, class) in ALL.into_iter().enumerate() {
            // The WIT enum's discriminant is its declaration order; wit-bindgen's Debug prints
            // `ErrorClass::Transient`.
            let wit: WitErrorClass = class.into();
            assert_eq!(wit as usize, index);
            let debug = format!("{wit:?}");
            assert_eq!(
                debug.trim_start_matches("ErrorClass::").to_lowercase(),
                class.as_str()
            );
        }
    }

    #[test]
    fn constructors_set_their_class() {
        assert_eq!(Error::validation("m").class, ErrorClass::Validation);
        assert_eq!(Error::transient("m").class, ErrorClass::Transient);
        assert_eq!(Error::permission("m").class, ErrorClass::Permission);
        assert_eq!(Error::timeout("m").class, ErrorClass::Timeout);
        assert_eq!(Error::conflict("m").class, ErrorClass::Conflict);
        assert_eq!(Error::fatal("m").class, ErrorClass::Fatal);
    }

    #[test]
    fn details_travel_as_json_text() {
        let error =
            Error::validation("total mismatch").with_details(json!({"expected": 300, "got": 200}));
        let wit = ToolError::from(error.clone());
        assert_eq!(wit.class, WitErrorClass::Validation);
        assert_eq!(wit.message, "total mismatch");
        let text = wit.details.clone().expect("details");
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&text).expect("json"),
            json!({"expected": 300, "got": 200})
        );
        assert_eq!(Error::from(wit), error);
    }

    #[test]
    fn non_json_details_from_the_host_are_kept_as_a_string() {
        let error = Error::from(ToolError {
            class: WitErrorClass::Conflict,
            message: "key reused".into(),
            details: Some("not json".into()),
        });
        assert_eq!(error.class, ErrorClass::Conflict);
        assert_eq!(error.details, Some(json!("not json")));
    }

    #[test]
    fn missing_details_stay_missing() {
        let wit = ToolError::from(Error::fatal("boom"));
        assert_eq!(wit.details, None);
        assert_eq!(Error::from(wit).details, None);
    }

    #[test]
    fn display_names_class_and_message() {
        assert_eq!(
            Error::permission("effect `erp.post-invoice` not granted").to_string(),
            "permission: effect `erp.post-invoice` not granted"
        );
    }
}
