//! How a run is started: its id, its lock, and a caller's key for the whole call.

use super::RunError;
use crate::clock::Millis;

/// `<prefix>-<yyyy-mm-dd>-<uuid v7>`: sortable by time, unique without coordination. The
/// date and the UUID's time are `now`; its random part comes from `random`.
pub fn new_run_id(
    prefix: &str,
    now: Millis,
    random: &dyn crate::clock::Random,
) -> Result<String, RunError> {
    let ok = !prefix.is_empty()
        && prefix.len() <= 32
        && prefix
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if !ok {
        return Err(RunError::BadPrefix(prefix.to_owned()));
    }
    let date = chrono::DateTime::from_timestamp_millis(now)
        .map(|t| t.format("%Y-%m-%d").to_string())
        .unwrap_or_else(|| "1970-01-01".into());
    Ok(format!(
        "{prefix}-{date}-{}",
        crate::clock::uuid_v7(now, random)
    ))
}

/// How a run is started.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Run IDs are `<prefix>-<date>-<uuid>`.
    pub prefix: String,
    /// Holds this business-object lock while acting, instead of the policy's `lock.key`.
    pub lock: Option<String>,
    /// How long to wait for the lock, instead of the policy's `lock.wait_ms`.
    pub lock_wait_ms: Option<u64>,
    /// Use this run ID (see [`new_run_id`]) instead of a fresh one, e.g. to watch the run's
    /// journal while it runs.
    pub run_id: Option<String>,
    /// A caller's idempotency key for the whole call, recorded atomically with the run: a
    /// second start with the same key fails with `LedgerError::CallKeyUsed` naming this run.
    pub call_key: Option<CallKey>,
}

/// A caller-supplied idempotency key for a whole run, with the digest of what it was for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallKey {
    pub key: String,
    /// Digest of the tool name and the canonical arguments.
    pub args_digest: String,
}

impl Default for RunOptions {
    fn default() -> Self {
        Self {
            prefix: "run".into(),
            lock: None,
            lock_wait_ms: None,
            run_id: None,
            call_key: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_id_has_prefix_date_and_uuid_v7() {
        let random = crate::clock::SeededRandom::new(1);
        let id = new_run_id("run", 1_764_331_200_000, &random).unwrap();
        assert!(id.starts_with("run-2025-11-28-"), "{id}");
        let uuid = uuid::Uuid::parse_str(id.trim_start_matches("run-2025-11-28-")).unwrap();
        assert_eq!(uuid.get_version_num(), 7);
    }

    #[test]
    fn run_id_prefix_is_checked() {
        let random = crate::clock::SeededRandom::new(1);
        assert!(matches!(
            new_run_id("Bad Prefix", 0, &random),
            Err(RunError::BadPrefix(_))
        ));
        assert!(matches!(
            new_run_id("", 0, &random),
            Err(RunError::BadPrefix(_))
        ));
    }
}
