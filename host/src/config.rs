//! The operator's configuration file (`tollgate.toml`): where the ledger lives, which
//! connector carries each effect kind, and each tool's policy. Tools never see or choose any
//! of it: a tool names an effect kind, and the operator decides where it goes.

use crate::policy::{Policy, PolicyViolation, is_valid_effect_kind};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The ledger file. Default: `.tollgate/ledger.db`.
    #[serde(default)]
    pub ledger: Option<PathBuf>,
    /// Where precompiled components are cached. Default: `.tollgate/cache`.
    #[serde(default)]
    pub cache_dir: Option<PathBuf>,
    /// How long an attempt's lease lasts without renewal; a crashed attempt's effects are
    /// treated as in flight until it expires. Default: 15000.
    #[serde(default)]
    pub lease_ttl_ms: Option<u64>,
    /// One connector per effect kind.
    #[serde(default)]
    pub connectors: BTreeMap<String, ConnectorConfig>,
    /// One policy per tool, by the tool's name.
    #[serde(default)]
    pub tools: BTreeMap<String, Policy>,
}

/// How an effect kind reaches the outside world.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ConnectorConfig {
    Http(HttpConnectorConfig),
    File(FileConnectorConfig),
    /// Does nothing and succeeds: for dry runs and for measuring the host's own overhead.
    Noop(NoopConnectorConfig),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConnectorConfig {
    pub url: String,
    #[serde(default = "default_method")]
    pub method: String,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// Whether the downstream deduplicates requests by `Idempotency-Key`. Required, because
    /// it decides whether an effect of unknown outcome may be re-sent or must go to a human.
    pub honours_idempotency_keys: bool,
    /// Cap on the response body kept in the ledger.
    #[serde(default = "default_max_response_bytes")]
    pub max_response_bytes: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConnectorConfig {
    /// Directory the effects write into, one file per idempotency key.
    pub dir: PathBuf,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NoopConnectorConfig {
    /// Body returned for every effect. Default: `{}`.
    #[serde(default)]
    pub response: Option<String>,
}

fn default_method() -> String {
    "POST".to_owned()
}
fn default_timeout_ms() -> u64 {
    10_000
}
fn default_max_response_bytes() -> u64 {
    64 << 10
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config {path} is not valid: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("config {path} has {} problem(s):\n{}", .problems.len(), .problems.iter().map(|p| format!("  - {p}")).collect::<Vec<_>>().join("\n"))]
    Invalid {
        path: PathBuf,
        problems: Vec<String>,
    },
}

impl Config {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text, path)
    }

    /// Parses and validates; `origin` names the file in errors.
    pub fn parse(text: &str, origin: &Path) -> Result<Self, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: origin.to_owned(),
            message: e.to_string(),
        })?;
        config.validate(origin)?;
        Ok(config)
    }

    fn validate(&self, origin: &Path) -> Result<(), ConfigError> {
        let mut problems = Vec::new();
        for (kind, connector) in &self.connectors {
            if !is_valid_effect_kind(kind) {
                problems.push(format!("connectors.\"{kind}\": not a valid effect kind"));
            }
            if let ConnectorConfig::Http(http) = connector {
                match reqwest::Url::parse(&http.url) {
                    Ok(url) if matches!(url.scheme(), "http" | "https") => {}
                    Ok(url) => problems.push(format!(
                        "connectors.\"{kind}\".url: scheme `{}` is not http or https",
                        url.scheme()
                    )),
                    Err(e) => problems.push(format!("connectors.\"{kind}\".url: {e}")),
                }
                if reqwest::Method::from_bytes(http.method.as_bytes()).is_err() {
                    problems.push(format!(
                        "connectors.\"{kind}\".method: `{}` is not an HTTP method",
                        http.method
                    ));
                }
                if http.timeout_ms == 0 {
                    problems.push(format!(
                        "connectors.\"{kind}\".timeout_ms: must be greater than 0"
                    ));
                }
            }
        }
        for (tool, policy) in &self.tools {
            if let Err(violations) = policy.validate() {
                problems.extend(violations.into_iter().map(
                    |PolicyViolation { field, problem }| format!("tools.{tool}.{field}: {problem}"),
                ));
            }
            for kind in &policy.effects {
                if !self.connectors.contains_key(kind) {
                    problems.push(format!(
                        "tools.{tool}.effects: `{kind}` has no connector: add a [connectors.\"{kind}\"] table"
                    ));
                }
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ConfigError::Invalid {
                path: origin.to_owned(),
                problems,
            })
        }
    }

    /// The policy for `tool`: its table, or the deny-by-default policy.
    pub fn policy_for(&self, tool: &str) -> Policy {
        self.tools.get(tool).cloned().unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
        ledger = "x.db"
        [connectors."erp.post-invoice"]
        type = "http"
        url = "http://127.0.0.1:9/invoices"
        honours_idempotency_keys = true
        [tools.invoice]
        effects = ["erp.post-invoice"]
    "#;

    #[test]
    fn parses_connectors_and_tool_policies() {
        let config = Config::parse(GOOD, Path::new("t.toml")).unwrap();
        let Some(ConnectorConfig::Http(http)) = config.connectors.get("erp.post-invoice") else {
            panic!("expected an http connector");
        };
        assert_eq!(http.method, "POST");
        assert!(http.honours_idempotency_keys);
        assert!(
            config
                .policy_for("invoice")
                .allows_effect("erp.post-invoice")
        );
        assert!(!config.policy_for("hello").allows_effect("erp.post-invoice"));
    }

    #[test]
    fn http_connector_must_say_whether_keys_are_honoured() {
        let text = "[connectors.\"a.b\"]\ntype = \"http\"\nurl = \"http://x/\"\n";
        let err = Config::parse(text, Path::new("t.toml"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("honours_idempotency_keys"), "{err}");
    }

    #[test]
    fn granted_effect_without_connector_is_named() {
        let text = "[tools.invoice]\neffects = [\"erp.post-invoice\"]\n";
        let err = Config::parse(text, Path::new("t.toml"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("tools.invoice.effects: `erp.post-invoice` has no connector"),
            "{err}"
        );
    }

    #[test]
    fn parse_error_names_the_line() {
        let err = Config::parse("ledger = \n", Path::new("t.toml"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("line 1"), "{err}");
    }
}
