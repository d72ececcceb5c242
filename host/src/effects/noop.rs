//! The `noop` connector: succeeds at once with a fixed response and changes nothing. For dry
//! runs, and for measuring the host's own cost apart from any downstream.

use super::connector::{BoxFuture, Connector, ConnectorError, Dispatch, Response};
use crate::config::NoopConnectorConfig;

/// Succeeds at once without side effects.
#[derive(Debug, Clone)]
pub struct NoopConnector {
    response: String,
}

impl NoopConnector {
    pub fn new(config: &NoopConnectorConfig) -> Self {
        Self {
            response: config.response.clone().unwrap_or_else(|| "{}".to_owned()),
        }
    }
}

impl Connector for NoopConnector {
    fn honours_idempotency_keys(&self) -> bool {
        true
    }
    fn describe(&self) -> String {
        "noop".to_owned()
    }
    fn max_response_bytes(&self) -> u64 {
        u64::try_from(self.response.len()).unwrap_or(u64::MAX)
    }
    fn dispatch<'a>(
        &'a self,
        _call: Dispatch<'a>,
    ) -> BoxFuture<'a, Result<Response, ConnectorError>> {
        Box::pin(async move {
            Ok(Response {
                status: None,
                body: self.response.clone(),
            })
        })
    }
}
