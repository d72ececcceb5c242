//! Structured events into the run's journal; the host tags each with the run ID and attempt
//! and bounds the bytes a run may log.
//!
//! ```ignore
//! log::info("validated");
//! log::info_with("echo", &[("length", &message.len())]);
//! ```

use std::fmt::Display;

use crate::bindings::tollgate::tool::log as wit;

/// An event's severity; mirrors the WIT `level`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    Trace,
    Debug,
    Info,
    Warn,
    Error,
}

impl From<Level> for wit::Level {
    fn from(level: Level) -> Self {
        match level {
            Level::Trace => Self::Trace,
            Level::Debug => Self::Debug,
            Level::Info => Self::Info,
            Level::Warn => Self::Warn,
            Level::Error => Self::Error,
        }
    }
}

/// Record `message` at `level` with key-value `fields` (values rendered with `Display`).
pub fn event(level: Level, message: &str, fields: &[(&str, &dyn Display)]) {
    let fields: Vec<(String, String)> = fields
        .iter()
        .map(|(key, value)| ((*key).to_owned(), value.to_string()))
        .collect();
    wit::event(level.into(), message, &fields);
}

pub fn trace(message: &str) {
    event(Level::Trace, message, &[]);
}

pub fn debug(message: &str) {
    event(Level::Debug, message, &[]);
}

pub fn info(message: &str) {
    event(Level::Info, message, &[]);
}

pub fn warn(message: &str) {
    event(Level::Warn, message, &[]);
}

pub fn error(message: &str) {
    event(Level::Error, message, &[]);
}

pub fn trace_with(message: &str, fields: &[(&str, &dyn Display)]) {
    event(Level::Trace, message, fields);
}

pub fn debug_with(message: &str, fields: &[(&str, &dyn Display)]) {
    event(Level::Debug, message, fields);
}

pub fn info_with(message: &str, fields: &[(&str, &dyn Display)]) {
    event(Level::Info, message, fields);
}

pub fn warn_with(message: &str, fields: &[(&str, &dyn Display)]) {
    event(Level::Warn, message, fields);
}

pub fn error_with(message: &str, fields: &[(&str, &dyn Display)]) {
    event(Level::Error, message, fields);
}
