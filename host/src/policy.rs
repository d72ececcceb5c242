//! A tool's policy: what the operator grants one tool, and the bounds it runs within.
//!
//! Pure data and validation, no wasmtime types: the runtime turns a validated [`Policy`] into
//! grants. Deny by default: a tool with no policy gets no effects and the default limits.
//! Unknown fields are errors, so a misspelt grant never silently means "no grant".

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

/// Largest linear memory a policy may grant; the engine's pool reserves slots this size.
pub const MAX_MEMORY_BYTES: u64 = 1 << 30;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    /// sha256 (hex, optionally `sha256:`-prefixed) of the one build of the tool this policy
    /// is for; any other build is refused at load.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    /// Effect kinds the tool may perform, such as `erp.post-invoice`.
    #[serde(default)]
    pub effects: BTreeSet<String>,
    /// Host environment variables the tool may read, by name; their values are the host's.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub env: BTreeSet<String>,
    /// Host directories the tool may see, each at a guest path.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fs: Vec<FsGrant>,
    /// Hosts the tool may read from over `wasi:http`. Writes go through effects.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub http: Vec<HttpGrant>,
    #[serde(default)]
    pub limits: Limits,
    /// When a failed attempt is retried, and the budget of the whole run.
    #[serde(default)]
    pub retry: crate::retry::RetryPolicy,
    /// Effect kinds a human must approve before each new dispatch (`"required"`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub approval: BTreeMap<String, Approval>,
    /// The business object a run of this tool works on, held exclusively while it acts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lock: Option<LockPolicy>,
    /// The tool's component, for `tollgate mcp` (relative to the config file's directory).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub component: Option<PathBuf>,
    /// Whether a run's own records are written before its caller hears the answer, or after.
    #[serde(default, skip_serializing_if = "Record::is_sync")]
    pub record: Record,
}

/// Whether a run's start and successful end are written before its caller is answered.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Record {
    /// Synced to stable storage first, like everything else the ledger holds.
    #[default]
    Sync,
    /// Answered first and written after: the run's whole record (its start, its journal,
    /// its end) goes into the ledger in one commit, not synced, once its caller has the
    /// answer, and is synced by a later commit within a second. A crash can lose the records
    /// of the last runs before it (a `kill -9` those not yet committed, a crash of the
    /// machine or of the PostgreSQL server those not yet synced), never part of one, and
    /// nothing else. Only for tools that can change nothing (no effects, no read-write
    /// directory, no HTTP writes), whose records are audit: such a run changes nothing that
    /// a lost record would let happen twice. A run with a lock or a call key, one that
    /// saves a checkpoint, and one that fails are written before their answer; a failure
    /// is synced.
    Async,
}

impl Policy {
    /// What this policy lets a tool change: effects, a writable directory, HTTP requests
    /// other than reads.
    pub fn grants_writes(&self) -> Vec<String> {
        let mut writes = Vec::new();
        if !self.effects.is_empty() {
            writes.push(format!(
                "effects ({})",
                self.effects.iter().cloned().collect::<Vec<_>>().join(", ")
            ));
        }
        for grant in self.fs.iter().filter(|g| g.mode == FsMode::Rw) {
            writes.push(format!("`{}` read-write", grant.guest));
        }
        for grant in &self.http {
            let writes_to = grant
                .methods
                .iter()
                .filter(|m| !matches!(m.as_str(), "GET" | "HEAD"))
                .cloned()
                .collect::<Vec<_>>();
            if !writes_to.is_empty() {
                writes.push(format!("{} to {}", writes_to.join("/"), grant.host));
            }
        }
        writes
    }
}

impl Record {
    fn is_sync(&self) -> bool {
        *self == Record::Sync
    }

    /// The durability of a run's start and successful end.
    pub fn durability(self) -> crate::ledger::Durability {
        match self {
            Record::Sync => crate::ledger::Durability::Synced,
            Record::Async => crate::ledger::Durability::Unsynced,
        }
    }
}

/// Whether an effect kind needs a human's approval before it is dispatched.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Approval {
    Required,
    None,
}

/// A lease on a business object (`invoice:INV-1`) taken before each attempt: overlapping
/// runs on the same object never act at once, and effects carry the lease's fencing token.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LockPolicy {
    /// The lock key, with `{field}` replaced by that top-level input field
    /// (`"invoice:{invoice_id}"`). `tollgate run --lock KEY` names one directly.
    pub key: String,
    /// How long an overlapping run waits for the lock; 0 fails at once with who holds it.
    #[serde(default)]
    pub wait_ms: u64,
    /// How long the lease lasts without renewal: after a crash, the next run waits this long.
    #[serde(default = "default_lock_ttl_ms")]
    pub ttl_ms: u64,
}

fn default_lock_ttl_ms() -> u64 {
    15_000
}

impl LockPolicy {
    /// The key for one input: each `{field}` replaced by the input's top-level `field`
    /// (strings as they are, other values as JSON).
    pub fn key_for(&self, input: &serde_json::Value) -> Result<String, String> {
        let mut out = String::new();
        let mut rest = self.key.as_str();
        while let Some(open) = rest.find('{') {
            out.push_str(&rest[..open]);
            let after = &rest[open + 1..];
            let close = after
                .find('}')
                .ok_or_else(|| format!("lock key `{}` has an unclosed `{{`", self.key))?;
            let field = &after[..close];
            match input.get(field) {
                Some(serde_json::Value::String(s)) => out.push_str(s),
                Some(serde_json::Value::Null) | None => {
                    return Err(format!(
                        "lock key `{}` needs input field `{field}`, which the input lacks",
                        self.key
                    ));
                }
                Some(other) => out.push_str(&other.to_string()),
            }
            rest = &after[close + 1..];
        }
        out.push_str(rest);
        Ok(out)
    }
}

/// A host directory preopened for the tool.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FsGrant {
    /// The directory on the host. Nothing outside it is reachable, symlinks included.
    pub host: PathBuf,
    /// Where the tool sees it, an absolute guest path such as `/data`.
    pub guest: String,
    #[serde(default)]
    pub mode: FsMode,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FsMode {
    /// Read files and list directories.
    #[default]
    Ro,
    /// Also create, write, rename and remove inside the directory.
    Rw,
}

/// Requests the tool may make to one host.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpGrant {
    /// `host:port` exactly, or `*.example.com:443` for any subdomain. Without a port, the
    /// scheme's default port (80 for http, 443 for https).
    pub host: String,
    /// Methods allowed, upper case. Default: `GET` and `HEAD`.
    #[serde(default = "read_methods")]
    pub methods: Vec<String>,
}

fn read_methods() -> Vec<String> {
    vec!["GET".to_owned(), "HEAD".to_owned()]
}

/// Resource bounds for one run of a tool. The defaults are tight: enough for a small Rust
/// tool such as `hello`, and anything more is granted explicitly.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Bytes of memory in all, at any moment of a run: the sum of all of the tool's linear
    /// memories (every core instance's) and its wasm-GC heap.
    pub memory_bytes: u64,
    /// Table elements in all: the sum over all of the tool's tables.
    pub table_elements: u64,
    /// Core and component instances.
    pub instances: u32,
    /// Host resource handles (streams, HTTP requests, …) the tool may hold at once.
    pub max_resources: u32,
    /// Wall-clock time of one attempt, in milliseconds, waiting on the host included.
    pub timeout_ms: u64,
    /// Time the tool itself may compute in one attempt, in milliseconds (counted in epoch
    /// ticks while guest code runs; time spent waiting on the host is not counted).
    pub cpu_ms: u64,
    /// Bytes of JSON output.
    pub max_output_bytes: u64,
    /// Bytes of log events and captured stdout/stderr, each. Log events count as stored:
    /// their message and fields as JSON plus a fixed cost per event, so empty events are
    /// not free.
    pub max_log_bytes: u64,
    /// Bytes of one effect payload.
    pub max_payload_bytes: u64,
    /// Bytes of one checkpoint.
    pub max_checkpoint_bytes: u64,
    /// Effects one attempt may perform.
    pub max_effects_per_run: u32,
    /// Bytes of ledger storage the tool may cause over the whole run, all attempts together:
    /// log events, captured stdout/stderr, checkpoints, effect payloads and their journal
    /// entries, and policy denials, each row counted with a fixed overhead. Past it, writes
    /// are refused (checkpoints, effects) or dropped (logs, denials), noted once.
    pub max_stored_bytes: u64,
    /// Bytes of JSON input a run accepts.
    pub max_input_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            memory_bytes: 16 << 20,
            table_elements: 10_000,
            instances: 16,
            max_resources: 1_000,
            timeout_ms: 30_000,
            cpu_ms: 10_000,
            max_output_bytes: 1 << 20,
            max_log_bytes: 64 << 10,
            max_payload_bytes: 256 << 10,
            max_checkpoint_bytes: 1 << 20,
            max_effects_per_run: 100,
            max_stored_bytes: 8 << 20,
            max_input_bytes: 1 << 20,
        }
    }
}

/// One invalid entry in a policy, at a path of keys below the tool's table.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{}`: {problem}", dotted(.path))]
pub struct PolicyViolation {
    /// Keys from the tool's table down, array indexes as numbers (`["fs", "0", "host"]`).
    pub path: Vec<String>,
    pub problem: String,
}

/// `fs[0].host`, `limits.memory_bytes`: a key path as a reader writes it.
pub fn dotted(path: &[String]) -> String {
    let mut out = String::new();
    for seg in path {
        if seg.parse::<usize>().is_ok() {
            out.push_str(&format!("[{seg}]"));
        } else {
            if !out.is_empty() {
                out.push('.');
            }
            if seg.contains('.') {
                out.push_str(&format!("\"{seg}\""));
            } else {
                out.push_str(seg);
            }
        }
    }
    out
}

/// The HTTP methods a grant may name.
const METHODS: &[&str] = &[
    "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT",
];

impl Policy {
    /// Checks every entry and returns all problems at once, so a policy is fixed in one pass.
    /// Host directories are checked to exist, since a grant of nothing is a mistake.
    pub fn validate(&self) -> Result<(), Vec<PolicyViolation>> {
        let mut problems = Vec::new();
        let mut bad = |path: &[&str], problem: String| {
            problems.push(PolicyViolation {
                path: path.iter().map(|s| (*s).to_owned()).collect(),
                problem,
            });
        };
        if let Some(digest) = &self.digest
            && normalize_digest(digest).is_none()
        {
            bad(
                &["digest"],
                format!(
                    "`{digest}` is not a sha256 digest: 64 hex digits, optionally prefixed with `sha256:` (`tollgate inspect` prints it)"
                ),
            );
        }
        for kind in &self.effects {
            if !is_valid_effect_kind(kind) {
                bad(
                    &["effects"],
                    format!(
                        "`{kind}` is not a valid effect kind: use lowercase letters, digits, `.`, `-` and `_`, starting with a letter (e.g. `erp.post-invoice`)"
                    ),
                );
            }
        }
        if self.record == Record::Async {
            let writes = self.grants_writes();
            if !writes.is_empty() {
                bad(
                    &["record"],
                    format!(
                        "only a tool that cannot change anything may be recorded `async` (a lost record would let a retry change it again), and this policy grants {}: remove `record = \"async\"`, or those grants",
                        writes.join(", ")
                    ),
                );
            }
        }
        for name in &self.env {
            let valid = !name.is_empty()
                && !name.starts_with(|c: char| c.is_ascii_digit())
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !valid {
                bad(
                    &["env"],
                    format!("`{name}` is not an environment variable name (letters, digits, `_`)"),
                );
            }
        }
        let mut guests = BTreeSet::new();
        for (i, grant) in self.fs.iter().enumerate() {
            let i = i.to_string();
            if !grant.host.is_absolute() {
                bad(
                    &["fs", &i, "host"],
                    format!("`{}` must be an absolute path", grant.host.display()),
                );
            } else if !grant.host.is_dir() {
                bad(
                    &["fs", &i, "host"],
                    format!(
                        "`{}` is not an existing directory on this host",
                        grant.host.display()
                    ),
                );
            }
            let g = &grant.guest;
            if !g.starts_with('/') || g.split('/').any(|c| c == ".." || c == ".") {
                bad(
                    &["fs", &i, "guest"],
                    format!(
                        "`{g}` must be an absolute guest path without `.` or `..`, e.g. `/data`"
                    ),
                );
            } else if !guests.insert(g.trim_end_matches('/').to_owned()) {
                bad(&["fs", &i, "guest"], format!("`{g}` is granted twice"));
            }
        }
        for (i, grant) in self.http.iter().enumerate() {
            let i = i.to_string();
            if let Err(problem) = HostPattern::parse(&grant.host) {
                bad(&["http", &i, "host"], problem);
            }
            if grant.methods.is_empty() {
                bad(
                    &["http", &i, "methods"],
                    "grants no method: leave it out for GET and HEAD".to_owned(),
                );
            }
            for method in &grant.methods {
                if !METHODS.contains(&method.as_str()) {
                    bad(
                        &["http", &i, "methods"],
                        format!("`{method}` is not an HTTP method (upper case, e.g. `GET`)"),
                    );
                }
            }
        }
        for kind in self.approval.keys() {
            if !self.effects.contains(kind) {
                bad(
                    &["approval", kind],
                    format!("`{kind}` is not in `effects`: grant it there, or drop this line"),
                );
            }
        }
        if let Some(lock) = &self.lock {
            let braces_ok = lock.key.matches('{').count() == lock.key.matches('}').count();
            if lock.key.trim().is_empty() || !braces_ok {
                bad(
                    &["lock", "key"],
                    format!(
                        "`{}` is not a lock key template: text with `{{field}}` for input fields, e.g. `invoice:{{invoice_id}}`",
                        lock.key
                    ),
                );
            }
            if lock.ttl_ms == 0 {
                bad(&["lock", "ttl_ms"], "must be greater than 0".to_owned());
            }
        }
        if let Err(retry) = self.retry.validate() {
            for (field, problem) in retry {
                bad(&["retry", &field], problem);
            }
        }
        let l = &self.limits;
        if l.memory_bytes == 0 || l.memory_bytes > MAX_MEMORY_BYTES {
            bad(
                &["limits", "memory_bytes"],
                format!("must be between 1 and {MAX_MEMORY_BYTES}"),
            );
        }
        let positive: [(&str, u64); 11] = [
            ("table_elements", l.table_elements),
            ("instances", u64::from(l.instances)),
            ("max_resources", u64::from(l.max_resources)),
            ("timeout_ms", l.timeout_ms),
            ("cpu_ms", l.cpu_ms),
            ("max_output_bytes", l.max_output_bytes),
            ("max_log_bytes", l.max_log_bytes),
            ("max_payload_bytes", l.max_payload_bytes),
            ("max_checkpoint_bytes", l.max_checkpoint_bytes),
            ("max_stored_bytes", l.max_stored_bytes),
            ("max_input_bytes", l.max_input_bytes),
        ];
        for (field, value) in positive {
            if value == 0 {
                bad(&["limits", field], "must be greater than 0".to_owned());
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems)
        }
    }

    pub fn allows_effect(&self, kind: &str) -> bool {
        self.effects.contains(kind)
    }

    pub fn needs_approval(&self, kind: &str) -> bool {
        self.approval.get(kind) == Some(&Approval::Required)
    }

    /// The pinned digest as bare lowercase hex, if the policy pins one.
    pub fn pinned_digest(&self) -> Option<String> {
        self.digest.as_deref().and_then(normalize_digest)
    }

    /// Which grant, if any, allows `method` to `host:port`. `Err` says why not, for the
    /// tool and the journal.
    pub fn check_http(&self, host: &str, port: u16, method: &str) -> Result<usize, String> {
        let mut host_matched = false;
        for (i, grant) in self.http.iter().enumerate() {
            let Ok(pattern) = HostPattern::parse(&grant.host) else {
                continue;
            };
            if pattern.matches(host, port) {
                host_matched = true;
                if grant.methods.iter().any(|m| m == method) {
                    return Ok(i);
                }
            }
        }
        Err(if host_matched {
            format!(
                "{method} to {host}:{port} is not granted: the grant for this host allows only its `methods` (writes go through effects)"
            )
        } else {
            format!(
                "no http grant for {host}:{port}: add [[tools.<tool>.http]] host = \"{host}:{port}\""
            )
        })
    }
}

fn normalize_digest(digest: &str) -> Option<String> {
    let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
    (hex.len() == 64 && hex.chars().all(|c| c.is_ascii_hexdigit()))
        .then(|| hex.to_ascii_lowercase())
}

/// An `http` grant's host: exact or `*.`-wildcard, with a port or the scheme default.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPattern {
    /// Lowercase host; for a wildcard, the suffix after `*.`.
    host: String,
    wildcard: bool,
    /// `None`: 80 or 443, as the request's scheme says.
    port: Option<u16>,
}

impl HostPattern {
    pub fn parse(text: &str) -> Result<Self, String> {
        let bad = |why: &str| {
            Err(format!(
                "`{text}` {why}: write `host:port`, `host` or `*.example.com:443`"
            ))
        };
        if text.contains("://") || text.contains('/') {
            return bad("is a URL, not a host");
        }
        let (host, port) = match text.rsplit_once(':') {
            Some((h, p)) if !h.contains(':') => match p.parse::<u16>() {
                Ok(p) if p > 0 => (h, Some(p)),
                _ => return bad("has an invalid port"),
            },
            Some(_) => return bad("has too many `:`"),
            None => (text, None),
        };
        let (wildcard, host) = match host.strip_prefix("*.") {
            Some(rest) => (true, rest),
            None => (false, host),
        };
        let valid = !host.is_empty()
            && host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-');
        if !valid {
            return bad("is not a host name or IPv4 address");
        }
        Ok(Self {
            host: host.to_ascii_lowercase(),
            wildcard,
            port,
        })
    }

    /// `port` is the request's effective port (explicit, or the scheme's default).
    pub fn matches(&self, host: &str, port: u16) -> bool {
        let host = host.to_ascii_lowercase();
        let host_ok = if self.wildcard {
            host.strip_suffix(&self.host)
                .is_some_and(|prefix| prefix.ends_with('.') && prefix.len() > 1)
        } else {
            host == self.host
        };
        host_ok && self.port.map_or(matches!(port, 80 | 443), |p| p == port)
    }
}

/// `erp.post-invoice`, `files.export_v2`: a letter, then letters, digits and `.-_`.
pub fn is_valid_effect_kind(kind: &str) -> bool {
    let mut chars = kind.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_lowercase())
        && kind.len() <= 128
        && chars
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '-' | '_'))
}

#[cfg(test)]
mod tests;
