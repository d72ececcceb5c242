//! Who may reach the MCP endpoint over HTTP, and what each caller may do there.
//!
//! - The endpoint listens on loopback unless told otherwise, and any other address needs
//!   bearer tokens (`[[mcp.tokens]]`): a server reachable from the network must not run
//!   tools for whoever finds the port.
//! - A token is configured by its sha256, or read from `{ env = … }` or `{ file = … }` at
//!   start; the config never holds it in plain text, and it is never logged. It names an
//!   agent, which may be limited to some tools (on top of each tool's own policy) and to a
//!   number of calls in flight.
//! - `Host` and `Origin` are checked against DNS rebinding: by default only loopback names
//!   and browser origins on them are accepted, plus what `[mcp]` lists.
//!
//! stdio has none of this: the client that spawned the server owns it.

mod config;
mod sessions;

pub use config::{McpConfig, TokenConfig};

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use rmcp::RoleServer;
use rmcp::service::RequestContext;
use rmcp::transport::StreamableHttpServerConfig;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq as _;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use self::config::parse_digest;
use self::sessions::Sessions;
use crate::secret::{SecretError, SecretSource};

/// The shortest token read from the environment or a file: shorter ones can be guessed.
const MIN_TOKEN_BYTES: usize = 16;
/// Names a `Host` header may carry on a loopback server.
const LOOPBACK_HOSTS: [&str; 3] = ["localhost", "127.0.0.1", "::1"];

#[derive(Debug, thiserror::Error)]
pub enum AccessError {
    #[error("[[mcp.tokens]] agent `{agent}`: {source}")]
    Secret { agent: String, source: SecretError },
    #[error(
        "[[mcp.tokens]] agent `{agent}`: the token from {from} has {len} bytes; use at least {MIN_TOKEN_BYTES} random ones (e.g. `openssl rand -hex 32`)"
    )]
    WeakToken {
        agent: String,
        from: SecretSource,
        len: usize,
    },
    #[error("[[mcp.tokens]] agent `{agent}`: sha256 is not 64 hex digits")]
    BadDigest { agent: String },
    #[error(
        "[[mcp.tokens]] agents `{first}` and `{second}` have the same token: a caller could not be told apart; give each agent its own"
    )]
    SameToken { first: String, second: String },
    #[error(
        "refusing to serve MCP on {addr} without authentication: anyone who can reach it could run the tools. Listen on 127.0.0.1, or add a [[mcp.tokens]] entry to the config"
    )]
    Unauthenticated { addr: SocketAddr },
}

/// An authenticated caller of the HTTP endpoint.
#[derive(Debug)]
pub struct Agent {
    pub name: String,
    tools: Option<BTreeSet<String>>,
    calls: Arc<Semaphore>,
    max_calls: u32,
}

impl Agent {
    /// The agent a request came from, when it came over HTTP with a token.
    pub fn of(context: &RequestContext<RoleServer>) -> Option<Arc<Agent>> {
        context
            .extensions
            .get::<axum::http::request::Parts>()?
            .extensions
            .get::<Arc<Agent>>()
            .cloned()
    }

    /// Whether this agent's token grants `tool`.
    pub fn may_call(&self, tool: &str) -> bool {
        self.tools.as_ref().is_none_or(|tools| tools.contains(tool))
    }

    /// A slot for one call in flight, or `Err` with why there is none.
    pub fn begin_call(&self) -> Result<OwnedSemaphorePermit, String> {
        Arc::clone(&self.calls).try_acquire_owned().map_err(|_| {
            format!(
                "agent `{}` already has {} calls in flight (its max_concurrent_calls); retry when one ends",
                self.name, self.max_calls
            )
        })
    }
}

/// The HTTP endpoint's access rules, loaded from `[mcp]`.
#[derive(Debug, Default)]
pub struct Access {
    /// Each agent with its token's sha256.
    agents: Vec<([u8; 32], Arc<Agent>)>,
    hosts: Vec<String>,
    origins: Vec<String>,
    sessions: Sessions,
}

impl Access {
    /// The rules of `config`, with tokens read from their sources (`base` resolves relative
    /// files).
    pub fn load(config: &McpConfig, base: &Path) -> Result<Self, AccessError> {
        let mut agents: Vec<([u8; 32], Arc<Agent>)> = Vec::with_capacity(config.tokens.len());
        for token in &config.tokens {
            let digest = match (&token.sha256, &token.token) {
                (Some(hex), _) => parse_digest(hex).ok_or_else(|| AccessError::BadDigest {
                    agent: token.agent.clone(),
                })?,
                (None, Some(source)) => {
                    let value = source.read(base).map_err(|source| AccessError::Secret {
                        agent: token.agent.clone(),
                        source,
                    })?;
                    if value.len() < MIN_TOKEN_BYTES {
                        return Err(AccessError::WeakToken {
                            agent: token.agent.clone(),
                            from: source.clone(),
                            len: value.len(),
                        });
                    }
                    Sha256::digest(value.as_bytes()).into()
                }
                // Refused by the config's own check.
                (None, None) => continue,
            };
            if let Some((_, first)) = agents.iter().find(|(d, _)| *d == digest) {
                return Err(AccessError::SameToken {
                    first: first.name.clone(),
                    second: token.agent.clone(),
                });
            }
            let max_calls = token.max_concurrent_calls.max(1);
            agents.push((
                digest,
                Arc::new(Agent {
                    name: token.agent.clone(),
                    tools: token.tools.as_ref().map(|t| t.iter().cloned().collect()),
                    calls: Arc::new(Semaphore::new(max_calls as usize)),
                    max_calls,
                }),
            ));
        }
        Ok(Self {
            agents,
            hosts: config.allowed_hosts.clone(),
            origins: config.allowed_origins.clone(),
            sessions: Sessions::default(),
        })
    }

    /// Whether requests must carry a token.
    pub fn requires_tokens(&self) -> bool {
        !self.agents.is_empty()
    }

    /// Refuses to listen beyond loopback without tokens.
    pub fn check_listen(&self, addr: SocketAddr) -> Result<(), AccessError> {
        if addr.ip().is_loopback() || self.requires_tokens() {
            Ok(())
        } else {
            Err(AccessError::Unauthenticated { addr })
        }
    }

    /// The agent whose token `headers` carry; `Err` with the `WWW-Authenticate` error code
    /// and a description when there is none.
    fn authenticate(&self, headers: &HeaderMap) -> Result<Arc<Agent>, Refusal> {
        let Some(value) = headers.get(header::AUTHORIZATION) else {
            return Err(Refusal::Missing);
        };
        let token = value
            .to_str()
            .ok()
            .and_then(|v| v.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, token)| token.trim())
            .ok_or(Refusal::Malformed)?;
        let presented: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        // Every digest is compared, in constant time, so the time taken says nothing about
        // which token came close.
        let mut found = None;
        for (digest, agent) in &self.agents {
            if bool::from(digest.ct_eq(&presented)) {
                found = Some(agent);
            }
        }
        found.cloned().ok_or(Refusal::Unknown)
    }

    /// rmcp's transport settings with this endpoint's `Host` and `Origin` rules, for a
    /// server bound to `bound`.
    pub fn transport_config(&self, bound: SocketAddr) -> StreamableHttpServerConfig {
        let mut hosts: Vec<String> = Vec::new();
        let check_hosts = bound.ip().is_loopback() || !self.hosts.is_empty();
        if check_hosts {
            hosts.extend(LOOPBACK_HOSTS.iter().map(|h| (*h).to_owned()));
            hosts.extend(self.hosts.iter().cloned());
            let own = bound.ip().to_string();
            if !bound.ip().is_unspecified() && !hosts.contains(&own) {
                hosts.push(own);
            }
        }
        // A browser page on an accepted host may call; any other origin must be listed.
        let mut origins: Vec<String> = LOOPBACK_HOSTS
            .iter()
            .map(|h| (*h).to_owned())
            .chain(self.hosts.iter().map(|h| host_name(h).to_owned()))
            .flat_map(|host| {
                let host = if host.contains(':') {
                    format!("[{host}]")
                } else {
                    host
                };
                [format!("http://{host}:*"), format!("https://{host}:*")]
            })
            .collect();
        origins.extend(self.origins.iter().cloned());
        let mut config = StreamableHttpServerConfig::default();
        config.allowed_hosts = hosts;
        config.allowed_origins = origins;
        config.enforce_origin_validation()
    }
}

/// `host` of a `host`, `host:port`, `[v6]` or `[v6]:port` entry (a bare v6 address is a
/// host of its own).
fn host_name(entry: &str) -> &str {
    if let Some(rest) = entry.strip_prefix('[') {
        return rest.split_once(']').map_or(entry, |(host, _)| host);
    }
    match entry.rsplit_once(':') {
        Some((host, port)) if port.chars().all(|c| c.is_ascii_digit()) && !host.contains(':') => {
            host
        }
        _ => entry,
    }
}

/// Why a request was refused before it reached MCP.
#[derive(Debug, Clone, Copy)]
enum Refusal {
    Missing,
    Malformed,
    Unknown,
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        // RFC 6750 §3: no error code when the request carried no credentials at all.
        let (challenge, error, description) = match self {
            Refusal::Missing => (
                r#"Bearer realm="tollgate""#,
                "invalid_request",
                "this endpoint needs an `Authorization: Bearer <token>` header; the operator configures tokens in [[mcp.tokens]]",
            ),
            Refusal::Malformed => (
                r#"Bearer realm="tollgate", error="invalid_request""#,
                "invalid_request",
                "the Authorization header must be `Bearer <token>`",
            ),
            Refusal::Unknown => (
                r#"Bearer realm="tollgate", error="invalid_token""#,
                "invalid_token",
                "the bearer token is not one this server accepts",
            ),
        };
        let body = serde_json::json!({ "error": error, "error_description": description });
        let mut response = (StatusCode::UNAUTHORIZED, axum::Json(body)).into_response();
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static(challenge),
        );
        response
    }
}

const SESSION_HEADER: &str = "mcp-session-id";

/// Middleware in front of the MCP endpoint: with tokens configured, a request without a
/// valid one gets `401`; one with a valid one carries its [`Agent`] on to the handler, and
/// may use only sessions its agent opened (`404` otherwise, as for a session that is gone).
pub async fn guard(
    State(access): State<Arc<Access>>,
    mut request: Request,
    next: Next,
) -> Response {
    if !access.requires_tokens() {
        return next.run(request).await;
    }
    let agent = match access.authenticate(request.headers()) {
        Ok(agent) => agent,
        Err(refusal) => {
            // Never the token itself: only that a request was refused, and why.
            tracing::warn!(reason = ?refusal, method = %request.method(), "refused an unauthenticated MCP request");
            return refusal.into_response();
        }
    };
    let session = request
        .headers()
        .get(SESSION_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    if let Some(session) = &session
        && !access.sessions.owned_by(session, &agent.name)
    {
        tracing::warn!(agent = %agent.name, "refused a request on a session this agent did not open");
        let body = serde_json::json!({
            "error": "session not found: initialize a new session"
        });
        return (StatusCode::NOT_FOUND, axum::Json(body)).into_response();
    }
    let closing = request.method() == axum::http::Method::DELETE;
    request.extensions_mut().insert(Arc::clone(&agent));
    let response = next.run(request).await;
    match &session {
        Some(session) if closing && response.status().is_success() => {
            access.sessions.forget(session);
        }
        Some(_) => {}
        None => {
            if let Some(opened) = response
                .headers()
                .get(SESSION_HEADER)
                .and_then(|v| v.to_str().ok())
            {
                access.sessions.bind(opened, &agent.name);
            }
        }
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens(toml: &str) -> McpConfig {
        toml::from_str(toml).unwrap()
    }

    #[test]
    fn a_short_token_from_a_file_is_refused_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("t"), "short\n").unwrap();
        let config = tokens("[[tokens]]\nagent = \"a\"\ntoken = { file = \"t\" }\n");
        let message = Access::load(&config, dir.path()).unwrap_err().to_string();
        assert!(message.contains("secret file t has 5 bytes"), "{message}");
        assert!(!message.contains("short"), "{message}");
    }

    #[test]
    fn only_a_configured_token_authenticates_and_names_its_agent() {
        let token = "a-token-of-at-least-sixteen-bytes";
        let digest = hex::encode(Sha256::digest(token));
        let config = tokens(&format!(
            "[[tokens]]\nagent = \"billing\"\nsha256 = \"{digest}\"\ntools = [\"invoice\"]\n"
        ));
        let access = Access::load(&config, Path::new(".")).unwrap();
        let mut headers = HeaderMap::new();
        assert!(matches!(
            access.authenticate(&headers),
            Err(Refusal::Missing)
        ));
        headers.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic abc"));
        assert!(matches!(
            access.authenticate(&headers),
            Err(Refusal::Malformed)
        ));
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer wrong-token"),
        );
        assert!(matches!(
            access.authenticate(&headers),
            Err(Refusal::Unknown)
        ));
        let good = HeaderValue::from_str(&format!("bearer {token}")).unwrap();
        headers.insert(header::AUTHORIZATION, good);
        let agent = access.authenticate(&headers).unwrap();
        assert_eq!(agent.name, "billing");
        assert!(agent.may_call("invoice"));
        assert!(!agent.may_call("hello"));
    }

    #[test]
    fn an_agent_gets_as_many_calls_in_flight_as_its_cap() {
        let config = tokens(&format!(
            "[[tokens]]\nagent = \"a\"\nsha256 = \"{}\"\nmax_concurrent_calls = 2\n",
            "ab".repeat(32)
        ));
        let access = Access::load(&config, Path::new(".")).unwrap();
        let agent = &access.agents[0].1;
        let first = agent.begin_call().unwrap();
        let _second = agent.begin_call().unwrap();
        let refused = agent.begin_call().unwrap_err();
        assert!(
            refused.contains("already has 2 calls in flight"),
            "{refused}"
        );
        drop(first);
        let _third = agent.begin_call().unwrap();
    }

    #[test]
    fn two_agents_with_the_same_token_are_refused_once_the_secrets_are_read() {
        let dir = tempfile::tempdir().unwrap();
        let token = "the-same-token-for-both-agents";
        std::fs::write(dir.path().join("t"), token).unwrap();
        let config = tokens(&format!(
            "[[tokens]]\nagent = \"a\"\ntoken = {{ file = \"t\" }}\n[[tokens]]\nagent = \"b\"\nsha256 = \"{}\"\n",
            hex::encode(Sha256::digest(token))
        ));
        let message = Access::load(&config, dir.path()).unwrap_err().to_string();
        assert!(
            message.contains("agents `a` and `b` have the same token"),
            "{message}"
        );
    }

    #[test]
    fn host_entries_name_their_host_with_or_without_a_port() {
        assert_eq!(host_name("mcp.example.com"), "mcp.example.com");
        assert_eq!(host_name("mcp.example.com:443"), "mcp.example.com");
        assert_eq!(host_name("[::1]:8080"), "::1");
        assert_eq!(host_name("[::1]"), "::1");
        assert_eq!(host_name("::1"), "::1");
    }

    #[test]
    fn beyond_loopback_only_a_server_with_tokens_listens() {
        let open = Access::default();
        assert!(open.check_listen("127.0.0.1:0".parse().unwrap()).is_ok());
        assert!(open.check_listen("[::1]:0".parse().unwrap()).is_ok());
        let message = open
            .check_listen("0.0.0.0:8765".parse().unwrap())
            .unwrap_err()
            .to_string();
        assert!(message.contains("without authentication"), "{message}");
    }

    #[test]
    fn hosts_and_origins_default_to_loopback_and_add_what_is_listed() {
        let has = |list: &[String], item: &str| list.iter().any(|x| x == item);
        let loopback = Access::default().transport_config("127.0.0.1:1".parse().unwrap());
        assert_eq!(loopback.allowed_hosts, LOOPBACK_HOSTS);
        let other = Access::default().transport_config("127.0.0.2:1".parse().unwrap());
        assert!(has(&other.allowed_hosts, "127.0.0.2"), "the bound address");
        assert!(has(&loopback.allowed_origins, "http://127.0.0.1:*"));
        assert!(has(&loopback.allowed_origins, "http://[::1]:*"));
        let listed = Access {
            hosts: vec!["mcp.example.com:443".into()],
            origins: vec!["https://console.example.com".into()],
            ..Access::default()
        };
        let public = listed.transport_config("10.0.0.5:8765".parse().unwrap());
        assert!(has(&public.allowed_hosts, "mcp.example.com:443"));
        assert!(has(&public.allowed_hosts, "10.0.0.5"));
        assert!(has(&public.allowed_origins, "https://mcp.example.com:*"));
        assert!(has(&public.allowed_origins, "https://console.example.com"));
        let anywhere = Access::default().transport_config("0.0.0.0:8765".parse().unwrap());
        assert!(anywhere.allowed_hosts.is_empty(), "tokens guard it");
    }
}
