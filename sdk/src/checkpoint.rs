//! Checkpoints: durable progress markers. A retried or resumed run sees what its earlier
//! attempts saved, so it can continue instead of starting over. State is stored as
//! `serde_json` bytes.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::Error;
use crate::bindings::tollgate::tool::checkpoints as wit;

/// A saved checkpoint as the host returns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawCheckpoint {
    pub name: String,
    pub state: Vec<u8>,
    /// The attempt that saved it.
    pub attempt: u32,
}

impl RawCheckpoint {
    /// The state deserialized from JSON as `T`; a mismatch is `fatal` (retrying reads the
    /// same bytes).
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, Error> {
        serde_json::from_slice(&self.state)
            .map_err(|error| Error::fatal(format!("checkpoint `{}`: {error}", self.name)))
    }
}

impl From<wit::Checkpoint> for RawCheckpoint {
    fn from(checkpoint: wit::Checkpoint) -> Self {
        Self {
            name: checkpoint.name,
            state: checkpoint.state,
            attempt: checkpoint.attempt,
        }
    }
}

/// Save `state` as JSON under `name`; durable when this returns. The host refuses state over
/// its size cap with `validation`.
pub fn save(name: &str, state: &impl Serialize) -> Result<(), Error> {
    let state = serde_json::to_vec(state)
        .map_err(|error| Error::fatal(format!("checkpoint `{name}`: {error}")))?;
    save_raw(name, &state)
}

/// Save raw bytes under `name`.
pub fn save_raw(name: &str, state: &[u8]) -> Result<(), Error> {
    wit::save(name, state).map_err(Error::from)
}

/// The latest checkpoint named `name`, deserialized as `T`; `None` when this run has none.
pub fn load<T: DeserializeOwned>(name: &str) -> Result<Option<T>, Error> {
    get(name).map(|checkpoint| checkpoint.json()).transpose()
}

/// The latest checkpoint named `name`, as bytes.
pub fn get(name: &str) -> Option<RawCheckpoint> {
    wit::get(name).map(RawCheckpoint::from)
}

/// The most recently saved checkpoint of this run, whatever its name.
pub fn latest() -> Option<RawCheckpoint> {
    wit::latest().map(RawCheckpoint::from)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorClass;

    #[test]
    fn state_of_the_wrong_shape_is_fatal_and_names_the_checkpoint() {
        let checkpoint = RawCheckpoint {
            name: "validated".into(),
            state: b"[1,2]".to_vec(),
            attempt: 1,
        };
        assert_eq!(checkpoint.json::<Vec<u8>>().expect("list"), [1, 2]);
        let error = checkpoint.json::<String>().expect_err("not a string");
        assert_eq!(error.class, ErrorClass::Fatal);
        assert!(
            error.message.starts_with("checkpoint `validated`: "),
            "{error}"
        );
    }
}
