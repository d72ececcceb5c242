//! The effect protocol: how a tool's request to change the outside world becomes exactly one
//! downstream action, however often the run crashes or retries.
//!
//! [`engine`] runs the protocol over the ledger, [`dispatch`] sends and records; [`decision`] is its pure core (what to do
//! with a key already recorded); [`reconcile`] asks downstream about an unknown outcome; [`intent`] checks a request before anything is recorded; a
//! [`connector`] carries an effect out, one per effect kind as the operator configured it
//! ([`http`], [`file`], [`noop`]).

mod circuits;
pub mod connector;
pub mod decision;
mod dispatch;
mod engine;
pub mod file;
pub mod http;
pub mod intent;
pub mod noop;
mod reconcile;

pub use connector::{Answer, Reconciled};
pub use dispatch::Unrecorded;
pub use engine::{EffectEngine, EffectError, EffectOutcome, EffectRequest};

use crate::config::ConnectorConfig;
use connector::{Connector, ConnectorSetupError};

/// Builds the connector an operator configured for `kind`.
pub fn connector_for(
    kind: &str,
    config: &ConnectorConfig,
) -> Result<Box<dyn Connector>, ConnectorSetupError> {
    let invalid = |message: String| ConnectorSetupError::Invalid {
        kind: kind.to_owned(),
        message,
    };
    Ok(match config {
        ConnectorConfig::Http(http) => Box::new(http::HttpConnector::new(http).map_err(invalid)?),
        ConnectorConfig::File(file) => {
            Box::new(file::FileConnector::open(&file.dir).map_err(invalid)?)
        }
        ConnectorConfig::Noop(noop) => Box::new(noop::NoopConnector::new(noop)),
    })
}
