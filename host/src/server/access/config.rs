//! The `[mcp]` table of the operator config: the tokens agents call the HTTP endpoint with,
//! and the hosts and origins it accepts besides loopback. Checked with the rest of the
//! config; the tokens' secrets are read only by an HTTP server ([`super::Access::load`]).

use std::collections::{BTreeMap, HashSet};

use serde::{Deserialize, Serialize};

use crate::policy::Policy;
use crate::secret::SecretSource;

const DEFAULT_MAX_CONCURRENT_CALLS: u32 = 16;

/// The `[mcp]` table of the config: who may call the HTTP endpoint.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct McpConfig {
    /// The bearer tokens accepted, one per agent. Without any, the endpoint serves only on
    /// a loopback address.
    #[serde(default)]
    pub tokens: Vec<TokenConfig>,
    /// `Host` names (or `host:port`) accepted besides the loopback names, e.g. the name a
    /// load balancer forwards. On a non-loopback address with none listed, any `Host` is
    /// accepted: the tokens guard the endpoint there.
    #[serde(default)]
    pub allowed_hosts: Vec<String>,
    /// Browser origins accepted besides those on the accepted hosts, e.g.
    /// `https://console.example.com` (`:*` matches any port).
    #[serde(default)]
    pub allowed_origins: Vec<String>,
}

/// One `[[mcp.tokens]]` entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    /// Who holds the token, as logs and the journal name it.
    pub agent: String,
    /// The token's sha256, hex (`printf %s "$TOKEN" | sha256sum`).
    #[serde(default)]
    pub sha256: Option<String>,
    /// Or where to read the token itself.
    #[serde(default)]
    pub token: Option<SecretSource>,
    /// The tools this agent may list and call; all served tools when absent.
    #[serde(default)]
    pub tools: Option<Vec<String>>,
    /// Calls this agent may have in flight at once; more are refused as transient.
    #[serde(default = "default_max_concurrent_calls")]
    pub max_concurrent_calls: u32,
}

fn default_max_concurrent_calls() -> u32 {
    DEFAULT_MAX_CONCURRENT_CALLS
}

impl McpConfig {
    /// Every invalid entry, as a key path under `mcp` and what is wrong with it.
    pub(crate) fn problems(&self, tools: &BTreeMap<String, Policy>) -> Vec<(Vec<String>, String)> {
        let mut problems = Vec::new();
        let mut agents = HashSet::new();
        let mut digests = HashSet::new();
        for (i, token) in self.tokens.iter().enumerate() {
            let at = |key: &str| -> Vec<String> {
                let mut path = vec!["mcp".to_owned(), "tokens".to_owned(), i.to_string()];
                if !key.is_empty() {
                    path.push(key.to_owned());
                }
                path
            };
            let name_ok = !token.agent.is_empty()
                && token.agent.len() <= 64
                && token
                    .agent
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
            if !name_ok {
                problems.push((
                    at("agent"),
                    format!(
                        "`{}` must be 1-64 letters, digits, `-`, `_` or `.`",
                        token.agent
                    ),
                ));
            } else if !agents.insert(token.agent.as_str()) {
                problems.push((
                    at("agent"),
                    format!(
                        "agent `{}` has two tokens: give each its own name",
                        token.agent
                    ),
                ));
            }
            match (&token.sha256, &token.token) {
                (Some(_), Some(_)) | (None, None) => problems.push((
                    at(""),
                    "give exactly one of `sha256 = \"<hex>\"`, `token = { env = \"NAME\" }` or `token = { file = \"path\" }`".to_owned(),
                )),
                (Some(hex), None) => match parse_digest(hex) {
                    Some(digest) => {
                        if !digests.insert(digest) {
                            problems.push((at("sha256"), "the same token is listed twice".to_owned()));
                        }
                    }
                    None => problems.push((
                        at("sha256"),
                        "must be 64 hex digits: the sha256 of the token (`printf %s \"$TOKEN\" | sha256sum`)".to_owned(),
                    )),
                },
                (None, Some(_)) => {}
            }
            for tool in token.tools.iter().flatten() {
                if !tools.contains_key(tool) {
                    problems.push((
                        at("tools"),
                        format!("`{tool}` is not a configured tool: add a [tools.{tool}] table or remove it"),
                    ));
                }
            }
            if !(1..=10_000).contains(&token.max_concurrent_calls) {
                problems.push((
                    at("max_concurrent_calls"),
                    "must be between 1 and 10000".to_owned(),
                ));
            }
        }
        for (i, origin) in self.allowed_origins.iter().enumerate() {
            if origin != "null" && !origin.starts_with("http://") && !origin.starts_with("https://")
            {
                problems.push((
                    vec![
                        "mcp".to_owned(),
                        "allowed_origins".to_owned(),
                        i.to_string(),
                    ],
                    format!("`{origin}` is not an origin: give a scheme, e.g. `https://{origin}`"),
                ));
            }
        }
        problems
    }
}

pub(super) fn parse_digest(hex: &str) -> Option<[u8; 32]> {
    let mut digest = [0; 32];
    hex::decode_to_slice(hex, &mut digest).ok()?;
    Some(digest)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens(toml: &str) -> McpConfig {
        toml::from_str(toml).unwrap()
    }

    fn served(names: &[&str]) -> BTreeMap<String, Policy> {
        names
            .iter()
            .map(|n| ((*n).to_owned(), Policy::default()))
            .collect()
    }

    #[test]
    fn a_token_entry_needs_exactly_one_source_a_known_tool_and_a_sane_cap() {
        let config = tokens(
            r#"
            [[tokens]]
            agent = "both"
            sha256 = "00"
            token = { env = "X" }
            [[tokens]]
            agent = "neither"
            tools = ["nope"]
            max_concurrent_calls = 0
            [[tokens]]
            agent = "bad name!"
            sha256 = "zz"
            "#,
        );
        let problems: Vec<String> = config
            .problems(&served(&["hello"]))
            .into_iter()
            .map(|(path, message)| format!("{}: {message}", path.join(".")))
            .collect();
        assert_eq!(problems.len(), 6, "{problems:#?}");
        assert!(problems[0].starts_with("mcp.tokens.0: give exactly one of"));
        assert!(problems[1].starts_with("mcp.tokens.1: give exactly one of"));
        assert!(problems[2].starts_with("mcp.tokens.1.tools: `nope` is not a configured tool"));
        assert!(problems[3].starts_with("mcp.tokens.1.max_concurrent_calls"));
        assert!(problems[4].starts_with("mcp.tokens.2.agent: `bad name!`"));
        assert!(problems[5].starts_with("mcp.tokens.2.sha256: must be 64 hex digits"));
    }
}
