//! The circuit-breaker rules as pure functions of the stored circuit, so that every backend
//! applies them to the row it read inside its own transaction. Counting by read-then-write
//! outside the transaction lost concurrent failures and let several probes through a
//! half-open circuit.

use crate::records::{BreakerRecord, BreakerState, Millis};
use serde::{Deserialize, Serialize};

/// How a circuit moves: after `failures` consecutive transient failures it opens for
/// `cooldown_ms`; then one trial call is let through at a time, and its result closes or
/// re-opens it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BreakerRule {
    /// Consecutive failures that open the circuit; 0 turns the breaker off.
    pub failures: u32,
    /// How long an open circuit refuses calls, and how long a trial call holds a half-open
    /// one before another may try (a trial whose caller died must not close it for good).
    pub cooldown_ms: u64,
}

impl BreakerRule {
    fn until(&self, now: Millis) -> Millis {
        now.saturating_add(i64::try_from(self.cooldown_ms).unwrap_or(i64::MAX))
    }
}

/// What [`crate::Op::ProbeBreaker`] decided.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Admission {
    /// The call may go to downstream (as the circuit's one trial call, if it was not closed).
    Admitted,
    /// The circuit refuses calls until `until`: open, or half-open with a trial in flight.
    Refused {
        state: BreakerState,
        consecutive_failures: u32,
        until: Millis,
    },
}

/// Whether a call may go through `current` now, and the circuit to store if admitting it
/// changes it (an open circuit past its cool-down turns half-open, held by this trial).
pub fn probe(
    current: Option<&BreakerRecord>,
    rule: BreakerRule,
    now: Millis,
) -> (Admission, Option<BreakerRecord>) {
    let Some(circuit) = current else {
        return (Admission::Admitted, None);
    };
    if circuit.state == BreakerState::Closed || rule.failures == 0 {
        return (Admission::Admitted, None);
    }
    match circuit.open_until {
        Some(until) if now < until => (
            Admission::Refused {
                state: circuit.state,
                consecutive_failures: circuit.consecutive_failures,
                until,
            },
            None,
        ),
        _ => (
            Admission::Admitted,
            Some(BreakerRecord {
                state: BreakerState::HalfOpen,
                open_until: Some(rule.until(now)),
                updated_at: now,
                ..circuit.clone()
            }),
        ),
    }
}

/// The circuit after one downstream call on it ended, `failed` transiently or not; `None`
/// when nothing changes. A success closes it; a failure counts, and opens it at the
/// threshold or at once when it was a half-open trial.
pub fn after_call(
    current: Option<&BreakerRecord>,
    connector: &str,
    tool: &str,
    failed: bool,
    rule: BreakerRule,
    now: Millis,
) -> Option<BreakerRecord> {
    let closed = BreakerRecord {
        connector: connector.to_owned(),
        tool: tool.to_owned(),
        state: BreakerState::Closed,
        consecutive_failures: 0,
        open_until: None,
        updated_at: now,
    };
    let circuit = current.unwrap_or(&closed);
    if !failed {
        let untouched = circuit.state == BreakerState::Closed && circuit.consecutive_failures == 0;
        return (!untouched).then_some(closed);
    }
    let failures = circuit.consecutive_failures.saturating_add(1);
    let trip =
        rule.failures > 0 && (failures >= rule.failures || circuit.state == BreakerState::HalfOpen);
    Some(BreakerRecord {
        state: if trip {
            BreakerState::Open
        } else {
            circuit.state
        },
        consecutive_failures: failures,
        open_until: if trip {
            Some(rule.until(now))
        } else {
            circuit.open_until
        },
        updated_at: now,
        ..circuit.clone()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const RULE: BreakerRule = BreakerRule {
        failures: 2,
        cooldown_ms: 1_000,
    };

    fn count(current: Option<BreakerRecord>, failed: bool, now: Millis) -> Option<BreakerRecord> {
        after_call(current.as_ref(), "erp", "invoice", failed, RULE, now).or(current)
    }

    #[test]
    fn opens_at_the_threshold_and_refuses_until_the_cooldown() {
        let one = count(None, true, 0);
        assert_eq!(one.as_ref().map(|c| c.state), Some(BreakerState::Closed));
        let two = count(one, true, 10).unwrap();
        assert_eq!(two.state, BreakerState::Open);
        assert_eq!(two.open_until, Some(1_010));
        assert_eq!(
            probe(Some(&two), RULE, 500).0,
            Admission::Refused {
                state: BreakerState::Open,
                consecutive_failures: 2,
                until: 1_010
            }
        );
    }

    #[test]
    fn after_the_cooldown_one_trial_holds_the_half_open_circuit() {
        let open = count(count(None, true, 0), true, 0).unwrap();
        let (admission, trial) = probe(Some(&open), RULE, 1_000);
        assert_eq!(admission, Admission::Admitted);
        let trial = trial.unwrap();
        assert_eq!(trial.state, BreakerState::HalfOpen);
        // A second caller while the trial is out is refused...
        assert!(matches!(
            probe(Some(&trial), RULE, 1_500).0,
            Admission::Refused {
                state: BreakerState::HalfOpen,
                ..
            }
        ));
        // ...until the trial's hold lapses without a result.
        assert_eq!(probe(Some(&trial), RULE, 2_000).0, Admission::Admitted);
        // A failed trial re-opens at once; a successful one closes.
        assert_eq!(
            count(Some(trial.clone()), true, 1_100).unwrap().state,
            BreakerState::Open
        );
        assert_eq!(
            count(Some(trial), false, 1_100).unwrap().state,
            BreakerState::Closed
        );
    }

    #[test]
    fn a_success_on_a_clean_circuit_writes_nothing() {
        assert_eq!(after_call(None, "erp", "invoice", false, RULE, 0), None);
    }

    #[test]
    fn zero_failures_never_opens() {
        let off = BreakerRule {
            failures: 0,
            cooldown_ms: 1_000,
        };
        let mut circuit = None;
        for now in 0..10 {
            circuit = after_call(circuit.as_ref(), "erp", "invoice", true, off, now);
        }
        assert_eq!(circuit.unwrap().state, BreakerState::Closed);
    }
}
