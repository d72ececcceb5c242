//! A run's business-object lock and its attempt's lease: which lock a run takes, taking it
//! (waiting up to its `wait_ms` while another run holds it), and keeping both the lock and
//! the attempt's lease alive while the attempt runs.
//!
//! Invariant: an attempt acts only while it holds its lease and, for a locked run, its lock;
//! each new holder of a lock gets a strictly larger fence, which its effects carry
//! downstream. Time, waiting and jitter come from [`Services`], so all of it runs in virtual
//! time in tests.

use crate::capabilities::deferred::Deferred;
use crate::failure::{Failure, FailureClass};
use crate::journal::{self, Event};
use crate::ledger::{self, LedgerError, Op, RunLock};
use crate::policy::Policy;
use crate::services::Services;
use std::sync::Arc;
use std::time::Duration;

/// How long a lock's lease lasts when the policy does not say.
const DEFAULT_LOCK_TTL_MS: u64 = 15_000;

/// Why a run's lock cannot be named.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct LockKeyError(pub String);

/// The lock a run takes: `explicit` (a caller's `--lock`) or the policy's `lock.key` filled
/// from `input`, with the policy's wait and lease.
pub fn spec_for(
    policy: &Policy,
    explicit: Option<&str>,
    wait_ms: Option<u64>,
    input: &serde_json::Value,
) -> Result<Option<RunLock>, LockKeyError> {
    let configured = policy.lock.as_ref();
    let key = match (explicit, configured) {
        (Some(key), _) => key.to_owned(),
        (None, Some(lock)) => lock.key_for(input).map_err(LockKeyError)?,
        (None, None) => return Ok(None),
    };
    if key.trim().is_empty() {
        return Err(LockKeyError("the lock key is empty".into()));
    }
    Ok(Some(RunLock {
        key,
        wait_ms: wait_ms.or(configured.map(|l| l.wait_ms)).unwrap_or(0),
        ttl_ms: configured.map_or(DEFAULT_LOCK_TTL_MS, |l| l.ttl_ms),
    }))
}

/// A business-object lock held for one attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeldLock {
    pub key: String,
    pub fence: i64,
    pub ttl_ms: i64,
}

impl HeldLock {
    /// The op that frees the lock (a no-op in the ledger if another run took it meanwhile).
    pub fn release(&self, run_id: &str, now: crate::clock::Millis) -> Op {
        Op::ReleaseLock {
            key: self.key.clone(),
            run_id: run_id.to_owned(),
            fence: self.fence,
            now,
        }
    }
}

/// Takes the run's lock, polling (with jitter, so waiters spread out) up to its `wait_ms`
/// while another run holds it. A lock still held at the deadline is a `transient` failure
/// with `retry_after_ms` set to the holder's lease, so the run stays resumable.
pub(crate) async fn acquire(
    services: &Services,
    run_id: &str,
    attempt: u32,
    spec: &RunLock,
) -> Result<HeldLock, Failure> {
    let ttl_ms = i64::try_from(spec.ttl_ms).unwrap_or(i64::MAX);
    let deadline = services
        .now()
        .saturating_add(i64::try_from(spec.wait_ms).unwrap_or(i64::MAX));
    let at = |now| journal::At {
        run_id,
        attempt: Some(attempt),
        at: now,
    };
    let mut waited = false;
    loop {
        let now = services.now();
        let op = Op::AcquireLock {
            key: spec.key.clone(),
            run_id: run_id.to_owned(),
            holder: services.holder().to_owned(),
            lease_until: now.saturating_add(ttl_ms),
            now,
        };
        match ledger::apply(services.ledger(), vec![op]).await {
            Ok(applied) => {
                let Some(ledger::Applied::Lock(lock)) = applied.into_iter().next() else {
                    return Err(Failure::new(
                        FailureClass::Fatal,
                        "ledger returned no lock for AcquireLock",
                    ));
                };
                services.ledger().journal(journal::entry(
                    at(now),
                    Event::LockAcquired {
                        key: lock.key.clone(),
                        fence: lock.fence,
                        waited,
                    },
                    format!("holding lock `{}` with fence {}", lock.key, lock.fence),
                ));
                return Ok(HeldLock {
                    key: lock.key,
                    fence: lock.fence,
                    ttl_ms,
                });
            }
            Err(LedgerError::LockHeld {
                run_id: other,
                since,
                lease_until,
                ..
            }) => {
                if now >= deadline {
                    return Err(busy(spec, &other, since, lease_until, now));
                }
                if !waited {
                    services.ledger().journal(journal::entry(
                        at(now),
                        Event::LockWaiting {
                            key: spec.key.clone(),
                            held_by_run_id: other.clone(),
                        },
                        format!("waiting for lock `{}`, held by run {other}", spec.key),
                    ));
                    waited = true;
                }
                let left = u64::try_from(deadline.saturating_sub(now)).unwrap_or(0);
                services
                    .sleeper()
                    .sleep(Duration::from_millis(poll_pause(services, left)))
                    .await;
            }
            Err(e) => {
                return Err(Failure::new(
                    FailureClass::Fatal,
                    format!("ledger unavailable, lock `{}` not taken: {e}", spec.key),
                ));
            }
        }
    }
}

/// 20 to 80 ms between polls, never past the deadline `left` ms away.
fn poll_pause(services: &Services, left: u64) -> u64 {
    let jitter = (services.random().unit() * 60.0) as u64;
    (20 + jitter.min(59)).min(left.max(1))
}

fn busy(
    spec: &RunLock,
    other: &str,
    since: crate::clock::Millis,
    lease_until: crate::clock::Millis,
    now: crate::clock::Millis,
) -> Failure {
    let waited_for = if spec.wait_ms > 0 {
        format!(" after waiting {} ms", spec.wait_ms)
    } else {
        String::new()
    };
    let retry_after_ms = lease_until.saturating_sub(now).max(0);
    Failure::new(
        FailureClass::Transient,
        format!(
            "lock `{}` is held by run {other} since {}{waited_for}; try again after it finishes (its lease runs until {})",
            spec.key,
            crate::clock::format_ms(since),
            crate::clock::format_ms(lease_until)
        ),
    )
    .with_details(serde_json::json!({ "lock": spec.key, "held_by_run_id": other, "since": since, "lease_until": lease_until, "retry_after_ms": retry_after_ms }))
}

/// Renews an attempt's lease (and its lock's, when it holds one) at a third of the shorter
/// TTL for as long as it is alive. Dropping it stops the renewal, so a cancelled or crashed
/// attempt's leases lapse.
pub(crate) struct LeaseRenewer(tokio::task::JoinHandle<()>);

impl Drop for LeaseRenewer {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl LeaseRenewer {
    pub(crate) fn spawn(
        services: Arc<Services>,
        run_id: String,
        attempt: u32,
        lock: Option<HeldLock>,
        deferred: Option<Arc<Deferred>>,
    ) -> Self {
        Self(tokio::spawn(async move {
            let ttl = lock.as_ref().map_or(services.lease_ttl_ms(), |l| {
                l.ttl_ms.min(services.lease_ttl_ms())
            });
            let period = Duration::from_millis(u64::try_from(ttl / 3).unwrap_or(1).max(1));
            loop {
                services.ticker().sleep(period).await;
                // A run not yet written has no lease anyone could see lapse; the write that
                // records it counts its lease from then.
                if deferred.as_ref().is_some_and(|d| !d.is_written()) {
                    continue;
                }
                let op = Op::RenewLease {
                    run_id: run_id.clone(),
                    attempt,
                    holder: services.holder().to_owned(),
                    lease_until: services.now().saturating_add(services.lease_ttl_ms()),
                };
                if let Err(e) = ledger::apply(services.ledger(), vec![op]).await {
                    tracing::warn!(run_id = %run_id, attempt, error = %e, "could not renew the attempt's lease");
                }
                if let Some(lock) = &lock {
                    let op = Op::RenewLock {
                        key: lock.key.clone(),
                        run_id: run_id.clone(),
                        fence: lock.fence,
                        lease_until: services.now().saturating_add(lock.ttl_ms),
                    };
                    if let Err(e) = ledger::apply(services.ledger(), vec![op]).await {
                        tracing::warn!(run_id = %run_id, attempt, error = %e, "could not renew the run's lock");
                    }
                }
            }
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::LockPolicy;

    fn policy(key: &str, wait_ms: u64, ttl_ms: u64) -> Policy {
        Policy {
            lock: Some(LockPolicy {
                key: key.into(),
                wait_ms,
                ttl_ms,
            }),
            ..Policy::default()
        }
    }

    #[test]
    fn the_policy_key_is_filled_from_the_input() {
        let input = serde_json::json!({ "invoice_id": "INV-1", "n": 3 });
        let spec = spec_for(
            &policy("invoice:{invoice_id}/{n}", 50, 9_000),
            None,
            None,
            &input,
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            spec,
            RunLock {
                key: "invoice:INV-1/3".into(),
                wait_ms: 50,
                ttl_ms: 9_000
            }
        );
    }

    #[test]
    fn an_explicit_key_and_wait_override_the_policy() {
        let spec = spec_for(
            &policy("invoice:{invoice_id}", 50, 9_000),
            Some("order:9"),
            Some(0),
            &serde_json::json!({}),
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            (spec.key.as_str(), spec.wait_ms, spec.ttl_ms),
            ("order:9", 0, 9_000)
        );
        let bare = spec_for(&Policy::default(), Some("k"), None, &serde_json::json!({}))
            .unwrap()
            .unwrap();
        assert_eq!((bare.wait_ms, bare.ttl_ms), (0, DEFAULT_LOCK_TTL_MS));
    }

    #[test]
    fn no_lock_without_a_policy_or_key_and_empty_keys_are_refused() {
        let input = serde_json::json!({ "invoice_id": " " });
        assert_eq!(spec_for(&Policy::default(), None, None, &input), Ok(None));
        assert!(spec_for(&policy("{invoice_id}", 0, 1), None, None, &input).is_err());
        let missing = spec_for(&policy("x:{absent}", 0, 1), None, None, &input).unwrap_err();
        assert!(missing.0.contains("absent"), "{missing}");
    }

    #[test]
    fn a_busy_lock_is_transient_with_retry_after_the_holders_lease() {
        let spec = RunLock {
            key: "invoice:1".into(),
            wait_ms: 200,
            ttl_ms: 1_000,
        };
        let f = busy(&spec, "run-other", 1_000, 5_000, 2_000);
        assert_eq!(f.class, FailureClass::Transient);
        assert!(f.message.contains("held by run run-other"), "{f}");
        assert!(f.message.contains("after waiting 200 ms"), "{f}");
        let details = f.details.unwrap();
        assert_eq!(details["retry_after_ms"], 3_000);
    }
}
