//! What to do when an effect's key is already in the ledger: a pure function of the recorded
//! effect, its owning attempt, the caller and the clock, so every branch of the exactly-once
//! protocol is unit-tested without I/O.
//!
//! Invariant: an effect is dispatched again only when its previous outcome is known to be a
//! retryable failure, or is unknown and the downstream honours idempotency keys.

use crate::clock::Millis;
use crate::failure::FailureClass;
use tollgate_ledger::{Attempt, AttemptStatus, EffectRecord, EffectStatus};

/// The attempt performing the effect now.
#[derive(Debug, Clone, Copy)]
pub struct Caller<'a> {
    pub run_id: &'a str,
    pub attempt: u32,
    pub payload_digest: &'a str,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ExistingKey {
    /// Succeeded before: return the recorded outcome, dispatch nothing.
    Replay,
    /// Failed before with a final class: return the recorded failure, dispatch nothing.
    ReturnRecordedFailure(FailureClass),
    /// The key was used with another payload.
    PayloadConflict,
    /// The key is in flight in another live attempt, whose lease runs until `lease_until`.
    InFlight {
        run_id: String,
        attempt: u32,
        lease_until: Millis,
    },
    /// Take the effect over from its previous owner and dispatch it again under the same key.
    Redispatch { why: Redispatch },
    /// Its outcome is unknown and downstream does not honour keys: mark it in doubt and stop.
    MarkInDoubt,
    /// Already marked in doubt: stop; only a human can settle it.
    AlreadyInDoubt,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Redispatch {
    /// The previous dispatch failed with a retryable class.
    RetryableFailure,
    /// The owner crashed mid-dispatch; the downstream deduplicates by key.
    UnknownOutcomeKeyHonoured,
}

/// Decides for an existing effect. `owner` is the attempt that owns it: None if it is missing,
/// or if its holder is known to be gone (a process on this machine that has exited), which
/// makes it as dead as a lapsed lease.
pub fn decide(
    effect: &EffectRecord,
    owner: Option<&Attempt>,
    caller: Caller<'_>,
    now: Millis,
    honours_keys: bool,
) -> ExistingKey {
    if effect.payload_digest != caller.payload_digest {
        return ExistingKey::PayloadConflict;
    }
    match effect.status {
        EffectStatus::Succeeded => ExistingKey::Replay,
        EffectStatus::InDoubt => ExistingKey::AlreadyInDoubt,
        EffectStatus::Failed => {
            let class = effect
                .error_class
                .as_deref()
                .and_then(FailureClass::parse)
                .unwrap_or(FailureClass::Fatal);
            if class.is_retryable() {
                ExistingKey::Redispatch {
                    why: Redispatch::RetryableFailure,
                }
            } else {
                ExistingKey::ReturnRecordedFailure(class)
            }
        }
        EffectStatus::Pending => {
            let same_attempt = effect.run_id == caller.run_id && effect.attempt == caller.attempt;
            let live =
                owner.is_some_and(|o| o.status == AttemptStatus::Running && o.lease_until > now);
            if live && !same_attempt {
                ExistingKey::InFlight {
                    run_id: effect.run_id.clone(),
                    attempt: effect.attempt,
                    lease_until: owner.map_or(now, |o| o.lease_until),
                }
            } else if honours_keys {
                ExistingKey::Redispatch {
                    why: Redispatch::UnknownOutcomeKeyHonoured,
                }
            } else {
                ExistingKey::MarkInDoubt
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: Millis = 1_000_000;

    fn effect(status: EffectStatus, class: Option<&str>) -> EffectRecord {
        EffectRecord {
            kind: "erp.post-invoice".into(),
            key: "post-invoice:INV-1".into(),
            payload_digest: "aaa".into(),
            payload: "{}".into(),
            run_id: "run-a".into(),
            attempt: 1,
            status,
            response: None,
            error_class: class.map(str::to_owned),
            error_message: None,
            dispatches: 1,
            created_at: 0,
            updated_at: 0,
        }
    }

    fn owner(status: AttemptStatus, lease_until: Millis) -> Attempt {
        Attempt {
            run_id: "run-a".into(),
            attempt: 1,
            component_digest: "d".into(),
            holder: "h".into(),
            status,
            started_at: 0,
            lease_until,
            ended_at: None,
            error_class: None,
            error_message: None,
            cpu_ms: 0,
        }
    }

    fn caller(digest: &str) -> Caller<'_> {
        Caller {
            run_id: "run-b",
            attempt: 1,
            payload_digest: digest,
        }
    }

    #[test]
    fn replays_succeeded_key_with_same_payload() {
        let d = decide(
            &effect(EffectStatus::Succeeded, None),
            None,
            caller("aaa"),
            NOW,
            false,
        );
        assert_eq!(d, ExistingKey::Replay);
    }

    #[test]
    fn changed_payload_under_used_key_is_a_conflict_whatever_the_status() {
        for status in [
            EffectStatus::Succeeded,
            EffectStatus::Pending,
            EffectStatus::Failed,
            EffectStatus::InDoubt,
        ] {
            let d = decide(
                &effect(status, Some("transient")),
                None,
                caller("bbb"),
                NOW,
                true,
            );
            assert_eq!(d, ExistingKey::PayloadConflict, "{status:?}");
        }
    }

    #[test]
    fn pending_key_of_live_attempt_is_in_flight() {
        let live = owner(AttemptStatus::Running, NOW + 5_000);
        let d = decide(
            &effect(EffectStatus::Pending, None),
            Some(&live),
            caller("aaa"),
            NOW,
            true,
        );
        assert_eq!(
            d,
            ExistingKey::InFlight {
                run_id: "run-a".into(),
                attempt: 1,
                lease_until: NOW + 5_000,
            }
        );
    }

    #[test]
    fn pending_key_of_crashed_attempt_is_redispatched_when_keys_are_honoured() {
        let expired = owner(AttemptStatus::Running, NOW - 1);
        let d = decide(
            &effect(EffectStatus::Pending, None),
            Some(&expired),
            caller("aaa"),
            NOW,
            true,
        );
        assert_eq!(
            d,
            ExistingKey::Redispatch {
                why: Redispatch::UnknownOutcomeKeyHonoured
            }
        );
        let crashed = owner(AttemptStatus::Crashed, NOW + 5_000);
        let d = decide(
            &effect(EffectStatus::Pending, None),
            Some(&crashed),
            caller("aaa"),
            NOW,
            true,
        );
        assert_eq!(
            d,
            ExistingKey::Redispatch {
                why: Redispatch::UnknownOutcomeKeyHonoured
            }
        );
    }

    #[test]
    fn pending_key_of_crashed_attempt_goes_in_doubt_when_keys_are_not_honoured() {
        let crashed = owner(AttemptStatus::Crashed, 0);
        let d = decide(
            &effect(EffectStatus::Pending, None),
            Some(&crashed),
            caller("aaa"),
            NOW,
            false,
        );
        assert_eq!(d, ExistingKey::MarkInDoubt);
        let d = decide(
            &effect(EffectStatus::Pending, None),
            None,
            caller("aaa"),
            NOW,
            false,
        );
        assert_eq!(d, ExistingKey::MarkInDoubt);
    }

    #[test]
    fn in_doubt_stays_in_doubt() {
        let d = decide(
            &effect(EffectStatus::InDoubt, None),
            None,
            caller("aaa"),
            NOW,
            true,
        );
        assert_eq!(d, ExistingKey::AlreadyInDoubt);
    }

    #[test]
    fn transient_failure_is_redispatched_validation_failure_is_returned() {
        let d = decide(
            &effect(EffectStatus::Failed, Some("transient")),
            None,
            caller("aaa"),
            NOW,
            false,
        );
        assert_eq!(
            d,
            ExistingKey::Redispatch {
                why: Redispatch::RetryableFailure
            }
        );
        let d = decide(
            &effect(EffectStatus::Failed, Some("timeout")),
            None,
            caller("aaa"),
            NOW,
            true,
        );
        assert_eq!(
            d,
            ExistingKey::Redispatch {
                why: Redispatch::RetryableFailure
            }
        );
        let d = decide(
            &effect(EffectStatus::Failed, Some("validation")),
            None,
            caller("aaa"),
            NOW,
            true,
        );
        assert_eq!(
            d,
            ExistingKey::ReturnRecordedFailure(FailureClass::Validation)
        );
        let d = decide(
            &effect(EffectStatus::Failed, Some("garbage")),
            None,
            caller("aaa"),
            NOW,
            true,
        );
        assert_eq!(d, ExistingKey::ReturnRecordedFailure(FailureClass::Fatal));
    }
}
