//! The operator's configuration file (`tollgate.toml`): where the ledger lives, which
//! connector carries each effect kind, and each tool's policy. Tools never see or choose any
//! of it: a tool names an effect kind, and the operator decides where it goes.

use crate::policy::{Policy, PolicyViolation, dotted, is_valid_effect_kind};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use toml::de::{DeTable, DeValue};

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The ledger: a SQLite file, or a `postgres://` URL for a ledger shared by many
    /// hosts. Default: `.tollgate/ledger.db`.
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
    /// The circuit breaker every connector gets.
    #[serde(default)]
    pub breaker: crate::retry::BreakerPolicy,
    /// Who may call the MCP endpoint over HTTP.
    #[serde(default)]
    pub mcp: crate::server::access::McpConfig,
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
    /// How to ask downstream whether an effect of unknown outcome happened, so that it is
    /// settled without a human (`[connectors."<kind>".reconcile]`).
    #[serde(default)]
    pub reconcile: Option<ReconcileConfig>,
}

/// A downstream lookup by idempotency key: 2xx means the effect happened (the body becomes
/// its outcome), 404 means it did not (it is sent again under the same key), anything else
/// leaves it in doubt for a human.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReconcileConfig {
    /// The lookup URL; `{key}` is replaced by the effect's idempotency key, percent-encoded.
    pub url: String,
    #[serde(default = "default_probe_method")]
    pub method: String,
    /// Added to the connector's `timeout_ms`: a probe waits this long after a dispatch timed
    /// out, so that a request still on its way has landed before downstream is asked. A
    /// send that cannot start within half of it after being recorded is not started. Assumes
    /// downstream acts on a request within `timeout_ms + margin_ms` of receiving it.
    #[serde(default = "default_margin_ms")]
    pub margin_ms: u64,
    /// Text a 404's body must contain to mean "not found". Without it any 404 does, so a
    /// lookup URL that 404s for every key (a wrong path) would have every unknown effect
    /// sent again.
    #[serde(default)]
    pub not_found_body: Option<String>,
}

fn default_probe_method() -> String {
    "GET".to_owned()
}

fn default_margin_ms() -> u64 {
    1_000
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
        problems: Vec<Problem>,
    },
}

/// One invalid entry in a config file: where it is and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Keys from the top of the file down, array indexes as numbers.
    pub path: Vec<String>,
    /// 1-based line of the entry, when the file has it.
    pub line: Option<usize>,
    pub message: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let Some(line) = self.line {
            write!(f, "line {line}: ")?;
        }
        write!(f, "{}: {}", dotted(&self.path), self.message)
    }
}

/// The line of the deepest entry of `path` present in `text` (so a missing key points at
/// its table).
fn line_of(text: &str, path: &[String]) -> Option<usize> {
    let root = DeTable::parse(text).ok()?;
    let mut span = None;
    let mut table = Some(root.get_ref());
    let mut value: Option<&DeValue<'_>> = None;
    for seg in path {
        let next = match (table, value) {
            (Some(t), _) => t.get(seg.as_str()),
            (None, Some(DeValue::Array(items))) => {
                seg.parse::<usize>().ok().and_then(|i| items.get(i))
            }
            _ => None,
        };
        let Some(next) = next else { break };
        span = Some(next.span());
        value = Some(next.get_ref());
        table = next.get_ref().as_table();
    }
    span.map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1)
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
        let mut problems = config.problems();
        if problems.is_empty() {
            return Ok(config);
        }
        for problem in &mut problems {
            problem.line = line_of(text, &problem.path);
        }
        Err(ConfigError::Invalid {
            path: origin.to_owned(),
            problems,
        })
    }

    /// Every invalid entry, located by key path (lines are added by [`Config::parse`]).
    fn problems(&self) -> Vec<Problem> {
        let mut problems = Vec::new();
        let mut bad = |path: &[&str], message: String| {
            problems.push(Problem {
                path: path.iter().map(|s| (*s).to_owned()).collect(),
                line: None,
                message,
            });
        };
        for (kind, connector) in &self.connectors {
            if !is_valid_effect_kind(kind) {
                bad(&["connectors", kind], "not a valid effect kind".to_owned());
            }
            if let ConnectorConfig::Http(http) = connector {
                match reqwest::Url::parse(&http.url) {
                    Ok(url) if matches!(url.scheme(), "http" | "https") => {}
                    Ok(url) => bad(
                        &["connectors", kind, "url"],
                        format!("scheme `{}` is not http or https", url.scheme()),
                    ),
                    Err(e) => bad(&["connectors", kind, "url"], e.to_string()),
                }
                if reqwest::Method::from_bytes(http.method.as_bytes()).is_err() {
                    bad(
                        &["connectors", kind, "method"],
                        format!("`{}` is not an HTTP method", http.method),
                    );
                }
                if let Some(probe) = &http.reconcile {
                    if !probe.url.contains("{key}") {
                        bad(
                            &["connectors", kind, "reconcile", "url"],
                            "must contain `{key}`, where the idempotency key goes".to_owned(),
                        );
                    }
                    match reqwest::Url::parse(&probe.url.replace("{key}", "k")) {
                        Ok(url) if matches!(url.scheme(), "http" | "https") => {}
                        Ok(url) => bad(
                            &["connectors", kind, "reconcile", "url"],
                            format!("scheme `{}` is not http or https", url.scheme()),
                        ),
                        Err(e) => bad(&["connectors", kind, "reconcile", "url"], e.to_string()),
                    }
                    if reqwest::Method::from_bytes(probe.method.as_bytes()).is_err() {
                        bad(
                            &["connectors", kind, "reconcile", "method"],
                            format!("`{}` is not an HTTP method", probe.method),
                        );
                    }
                }
                if http.timeout_ms == 0 {
                    bad(
                        &["connectors", kind, "timeout_ms"],
                        "must be greater than 0".to_owned(),
                    );
                }
            }
        }
        for (tool, policy) in &self.tools {
            if let Err(violations) = policy.validate() {
                for PolicyViolation { path, problem } in violations {
                    let mut full = vec!["tools", tool.as_str()];
                    full.extend(path.iter().map(String::as_str));
                    bad(&full, problem);
                }
            }
            // An invalid kind is reported by the policy's own check; asking for a connector
            // named after it would only repeat the mistake.
            for kind in &policy.effects {
                if crate::policy::is_valid_effect_kind(kind) && !self.connectors.contains_key(kind)
                {
                    bad(
                        &["tools", tool, "effects"],
                        format!("`{kind}` has no connector: add a [connectors.\"{kind}\"] table"),
                    );
                }
                // A send, its wait and its probe must fit in one attempt, or every attempt
                // ends before the probe answers.
                if let Some(ConnectorConfig::Http(http)) = self.connectors.get(kind)
                    && let Some(probe) = &http.reconcile
                {
                    let needed = http
                        .timeout_ms
                        .saturating_mul(2)
                        .saturating_add(probe.margin_ms);
                    if policy.limits.timeout_ms <= needed {
                        bad(
                            &["tools", tool, "limits", "timeout_ms"],
                            format!(
                                "{} ms leaves no room to probe `{kind}`: a send and its probe take up to {needed} ms (twice connectors.\"{kind}\".timeout_ms plus reconcile.margin_ms); raise it or lower those",
                                policy.limits.timeout_ms
                            ),
                        );
                    }
                }
            }
        }
        for (path, message) in self.mcp.problems(&self.tools) {
            problems.push(Problem {
                path,
                line: None,
                message,
            });
        }
        problems
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
    fn an_invalid_effect_kind_is_reported_once() {
        let text = "[tools.invoice]\neffects = [\"Bad Kind\"]\n";
        let err = Config::parse(text, Path::new("t.toml"))
            .unwrap_err()
            .to_string();
        assert_eq!(err.matches("`Bad Kind`").count(), 1, "{err}");
        assert!(!err.contains("[connectors."), "{err}");
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
    fn a_probe_that_cannot_fit_in_an_attempt_is_refused() {
        let text = r#"
[connectors."erp.post-invoice"]
type = "http"
url = "http://x/invoices"
timeout_ms = 10000
honours_idempotency_keys = false
[connectors."erp.post-invoice".reconcile]
url = "http://x/invoices/{key}"
[tools.invoice]
effects = ["erp.post-invoice"]
[tools.invoice.limits]
timeout_ms = 20000
"#;
        let err = Config::parse(text, Path::new("t.toml"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("tools.invoice.limits.timeout_ms: 20000 ms leaves no room to probe"),
            "{err}"
        );
        let fits = text.replace("timeout_ms = 20000", "timeout_ms = 30000");
        Config::parse(&fits, Path::new("t.toml")).unwrap();
        let no_key = text.replace("invoices/{key}", "invoices/lookup");
        let err = Config::parse(&no_key, Path::new("t.toml"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("must contain `{key}`"), "{err}");
    }

    #[test]
    fn parse_error_names_the_line() {
        let err = Config::parse("ledger = \n", Path::new("t.toml"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("line 1"), "{err}");
    }

    #[test]
    fn each_invalid_entry_is_named_with_its_line() {
        let text = "[tools.a]\neffects = []\n\n[tools.a.limits]\nmemory_bytes = 0\n\n[[tools.a.http]]\nhost = \"x:0\"\n\n[connectors.\"k.v\"]\ntype = \"http\"\nurl = \"ftp://x\"\nhonours_idempotency_keys = true\n";
        let ConfigError::Invalid { problems, .. } =
            Config::parse(text, Path::new("t.toml")).unwrap_err()
        else {
            panic!("expected Invalid");
        };
        let shown: Vec<String> = problems.iter().map(|p| p.to_string()).collect();
        assert_eq!(problems.len(), 3, "{shown:?}");
        assert!(
            shown[0].starts_with("line 12: connectors.\"k.v\".url: scheme `ftp`"),
            "{shown:?}"
        );
        assert!(
            shown[1].starts_with("line 8: tools.a.http[0].host:"),
            "{shown:?}"
        );
        assert!(
            shown[2].starts_with("line 5: tools.a.limits.memory_bytes:"),
            "{shown:?}"
        );
    }
}
