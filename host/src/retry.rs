//! When a failed attempt is retried, and when the run stops for a human instead.
//!
//! Pure functions: "now" and the jitter's randomness come in as arguments, so every decision
//! is tested in virtual time. A retry is a new attempt of the same run, which resumes from the
//! last checkpoint and replays succeeded effects, so it never repeats a side effect; what this
//! module bounds is how often, how soon and for how long the host keeps trying.

use crate::failure::{Failure, FailureClass};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

/// A tool's retry policy (`[tools.<name>.retry]`), with a budget over the whole run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetryPolicy {
    /// Backoff before the first retry, in milliseconds.
    pub initial_interval_ms: u64,
    /// Each further retry waits this many times longer.
    pub backoff_coefficient: f64,
    /// Backoff never grows past this.
    pub max_interval_ms: u64,
    /// Attempts in all, the first included.
    pub max_attempts: u32,
    /// Classes never retried, on top of those that never are (validation, permission,
    /// conflict, in doubt, resource exhausted, fatal).
    pub non_retryable: BTreeSet<FailureClass>,
    /// Wall time from the run's start past which no retry starts.
    pub max_run_ms: u64,
    /// Effects the run may perform over all its attempts; replays count too.
    pub max_effects: u32,
    /// CPU time of the tool's own code over all attempts, in milliseconds.
    pub max_cpu_ms: u64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            initial_interval_ms: 1_000,
            backoff_coefficient: 2.0,
            max_interval_ms: 60_000,
            max_attempts: 5,
            non_retryable: BTreeSet::new(),
            max_run_ms: 15 * 60_000,
            max_effects: 1_000,
            max_cpu_ms: 5 * 60_000,
        }
    }
}

/// What a run has spent so far, and how its last attempt failed.
#[derive(Debug, Clone)]
pub struct History<'a> {
    /// Attempts made, the failed one included.
    pub attempts: u32,
    pub started_at_ms: i64,
    pub now_ms: i64,
    /// Effects performed or replayed over all attempts.
    pub effects: u32,
    /// CPU time the tool's code used over all attempts.
    pub cpu_ms: u64,
    pub last: &'a Failure,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Start the next attempt after this many milliseconds.
    Retry { after_ms: u64 },
    /// Stop: the run needs a human (or its failure is final). `reason` says which rule.
    Stop { reason: String },
}

impl RetryPolicy {
    pub fn validate(&self) -> Result<(), Vec<(String, String)>> {
        let mut problems = Vec::new();
        if self.max_attempts == 0 {
            problems.push(("max_attempts".into(), "must be at least 1".into()));
        }
        if !(self.backoff_coefficient.is_finite() && self.backoff_coefficient >= 1.0) {
            problems.push((
                "backoff_coefficient".into(),
                "must be a number ≥ 1.0".into(),
            ));
        }
        if self.max_interval_ms < self.initial_interval_ms {
            problems.push((
                "max_interval_ms".into(),
                "must be at least initial_interval_ms".into(),
            ));
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems)
        }
    }

    /// The backoff cap before retry number `retry` (1-based): exponential, capped.
    pub fn backoff_ms(&self, retry: u32) -> u64 {
        let exp = self
            .backoff_coefficient
            .powi(i32::try_from(retry.saturating_sub(1)).unwrap_or(i32::MAX));
        let ms = self.initial_interval_ms as f64 * exp;
        if ms.is_finite() {
            (ms as u64).min(self.max_interval_ms)
        } else {
            self.max_interval_ms
        }
    }

    /// Whether and when to retry after `history.last`. `random` is uniform in [0, 1): the
    /// wait is "full jitter", uniform in [0, backoff], so retries of many runs spread out
    /// instead of arriving together; a downstream `Retry-After` is a floor under it.
    pub fn decide(&self, history: &History<'_>, random: f64) -> Verdict {
        let class = history.last.class;
        if !class.is_retryable() || self.non_retryable.contains(&class) {
            return Verdict::Stop {
                reason: format!("{class} failures are not retried"),
            };
        }
        if history.attempts >= self.max_attempts {
            return Verdict::Stop {
                reason: format!(
                    "retries exhausted: {} of {} attempts made (retry.max_attempts)",
                    history.attempts, self.max_attempts
                ),
            };
        }
        if history.effects >= self.max_effects {
            return Verdict::Stop {
                reason: format!(
                    "effect budget spent: {} of {} (retry.max_effects)",
                    history.effects, self.max_effects
                ),
            };
        }
        if history.cpu_ms >= self.max_cpu_ms {
            return Verdict::Stop {
                reason: format!(
                    "CPU budget spent: {} of {} ms (retry.max_cpu_ms)",
                    history.cpu_ms, self.max_cpu_ms
                ),
            };
        }
        let cap = self.backoff_ms(history.attempts);
        let jittered = (cap as f64 * random.clamp(0.0, 1.0)) as u64;
        let after_ms = jittered.max(retry_after_ms(history.last).unwrap_or(0));
        let elapsed = history.now_ms.saturating_sub(history.started_at_ms).max(0) as u64;
        if elapsed.saturating_add(after_ms) > self.max_run_ms {
            return Verdict::Stop {
                reason: format!(
                    "time budget spent: the next attempt would start {} ms after the run began, past {} ms (retry.max_run_ms)",
                    elapsed.saturating_add(after_ms),
                    self.max_run_ms
                ),
            };
        }
        Verdict::Retry { after_ms }
    }
}

/// A downstream's `Retry-After`, as the connector recorded it in the failure's details.
fn retry_after_ms(failure: &Failure) -> Option<u64> {
    failure.details.as_ref()?.get("retry_after_ms")?.as_u64()
}

/// The circuit breaker each connector gets (`[breaker]` in the operator config): after
/// `failures` consecutive transient failures, calls fail fast for `cooldown_ms` instead of
/// hammering a downstream that is down; then one call probes, and its result closes or
/// re-opens the circuit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BreakerPolicy {
    /// Consecutive transient failures that open the circuit; 0 turns the breaker off.
    pub failures: u32,
    /// How long an open circuit refuses calls, in milliseconds.
    pub cooldown_ms: u64,
}

impl Default for BreakerPolicy {
    fn default() -> Self {
        Self {
            failures: 5,
            cooldown_ms: 30_000,
        }
    }
}

impl BreakerPolicy {
    /// The rule the ledger applies to the shared circuit, inside its transaction.
    pub fn rule(&self) -> tollgate_ledger::BreakerRule {
        tollgate_ledger::BreakerRule {
            failures: self.failures,
            cooldown_ms: self.cooldown_ms,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn transient() -> Failure {
        Failure::new(FailureClass::Transient, "503")
    }

    fn history(attempts: u32, now_ms: i64, last: &Failure) -> History<'_> {
        History {
            attempts,
            started_at_ms: 0,
            now_ms,
            effects: 0,
            cpu_ms: 0,
            last,
        }
    }

    #[test]
    fn backoff_grows_by_the_coefficient_and_is_capped() {
        let p = RetryPolicy {
            initial_interval_ms: 100,
            backoff_coefficient: 3.0,
            max_interval_ms: 2_000,
            ..RetryPolicy::default()
        };
        let seq: Vec<u64> = (1..=6).map(|n| p.backoff_ms(n)).collect();
        assert_eq!(seq, vec![100, 300, 900, 2_000, 2_000, 2_000]);
    }

    #[test]
    fn full_jitter_stays_within_zero_and_the_backoff() {
        let p = RetryPolicy {
            initial_interval_ms: 1_000,
            max_attempts: 10,
            ..RetryPolicy::default()
        };
        let last = transient();
        for attempts in 1..=5 {
            let cap = p.backoff_ms(attempts);
            let at = |r| match p.decide(&history(attempts, 0, &last), r) {
                Verdict::Retry { after_ms } => after_ms,
                v => panic!("{v:?}"),
            };
            assert_eq!(at(0.0), 0);
            assert_eq!(at(0.5), cap / 2);
            assert!(at(0.999_999) <= cap && at(0.999_999) >= cap - 1);
        }
    }

    #[test]
    fn retry_after_is_a_floor_under_the_jitter() {
        let p = RetryPolicy::default();
        let last = transient().with_details(serde_json::json!({"retry_after_ms": 7_000}));
        assert_eq!(
            p.decide(&history(1, 0, &last), 0.1),
            Verdict::Retry { after_ms: 7_000 }
        );
    }

    #[test]
    fn non_retryable_classes_stop_at_once() {
        let p = RetryPolicy {
            non_retryable: [FailureClass::Timeout].into(),
            ..RetryPolicy::default()
        };
        for class in [
            FailureClass::Validation,
            FailureClass::Permission,
            FailureClass::Conflict,
            FailureClass::InDoubt,
            FailureClass::ResourceExhausted,
            FailureClass::Fatal,
            FailureClass::Timeout,
        ] {
            let last = Failure::new(class, "x");
            assert!(
                matches!(p.decide(&history(1, 0, &last), 0.5), Verdict::Stop { .. }),
                "{class}"
            );
        }
        let last = transient();
        assert!(matches!(
            p.decide(&history(1, 0, &last), 0.5),
            Verdict::Retry { .. }
        ));
    }

    #[test]
    fn budgets_stop_the_run() {
        let p = RetryPolicy {
            max_attempts: 3,
            max_run_ms: 10_000,
            max_effects: 4,
            initial_interval_ms: 1_000,
            ..RetryPolicy::default()
        };
        let last = transient();
        let stop = |h: History<'_>| match p.decide(&h, 0.5) {
            Verdict::Stop { reason } => reason,
            v => panic!("{v:?}"),
        };
        assert!(stop(history(3, 0, &last)).contains("retry.max_attempts"));
        assert!(stop(history(1, 9_800, &last)).contains("retry.max_run_ms"));
        let spent = History {
            effects: 4,
            ..history(1, 0, &last)
        };
        assert!(stop(spent).contains("retry.max_effects"));
        let p = RetryPolicy {
            max_cpu_ms: 2_000,
            ..p
        };
        let burnt = History {
            cpu_ms: 2_000,
            ..history(1, 0, &last)
        };
        assert!(
            matches!(p.decide(&burnt, 0.5), Verdict::Stop { reason } if reason.contains("retry.max_cpu_ms"))
        );
        let under = History {
            cpu_ms: 1_990,
            ..history(1, 0, &last)
        };
        assert!(matches!(p.decide(&under, 0.5), Verdict::Retry { .. }));
    }

    #[test]
    fn bad_policies_are_named() {
        let p = RetryPolicy {
            max_attempts: 0,
            backoff_coefficient: 0.5,
            initial_interval_ms: 10,
            max_interval_ms: 5,
            ..RetryPolicy::default()
        };
        let fields: Vec<String> = p
            .validate()
            .unwrap_err()
            .into_iter()
            .map(|(f, _)| f)
            .collect();
        assert_eq!(
            fields,
            vec!["max_attempts", "backoff_coefficient", "max_interval_ms"]
        );
    }
}
