//! A run's storage budget: every byte a tool can make the ledger store (log events, captured
//! stdout and stderr, checkpoints, effect payloads and their journal entries, policy denials)
//! is charged here before it is written, at the size the ledger itself counts
//! ([`tollgate_ledger::stored`]: text and blob bytes plus a fixed cost per row).
//!
//! Invariant: a write is issued only after its charge succeeded, so what a tool causes stays
//! within `limits.max_stored_bytes` over the whole run. An attempt starts from what the
//! ledger already holds for the run, so retries and resumes share one budget.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// The most the host's own records of one attempt add to a run, whatever its tool does: the
/// attempt row, its start and end in the journal, and the tool's error (clipped to 4 KiB of
/// message and 16 KiB of details) in the attempt, the run and the journal.
pub const ATTEMPT_OVERHEAD_BYTES: u64 = 64 << 10;

/// The most one escalation adds to a run besides the payload of the effect it is about
/// (shown parsed and as exact text, so twice at most `limits.max_payload_bytes`): its row and
/// journal entries, and an evidence packet with the input, responses and checkpoint clipped
/// and at most the newest 20 attempts and 50 effects listed.
pub const ESCALATION_OVERHEAD_BYTES: u64 = 512 << 10;

/// Bytes left for a run's tool-caused writes, shared by every capability of one attempt.
#[derive(Debug)]
pub struct StorageBudget {
    limit: u64,
    used: AtomicU64,
    /// Set by the first refused charge, so the journal notes the cut once per attempt.
    spent_noted: AtomicBool,
}

/// A charge that would take the run past its budget; nothing was charged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BudgetSpent {
    pub limit: u64,
    pub used: u64,
    pub asked: u64,
}

impl StorageBudget {
    /// A budget of `limit` bytes of which the run has already used `used`.
    pub fn new(limit: u64, used: u64) -> Self {
        Self {
            limit,
            used: AtomicU64::new(used),
            spent_noted: AtomicBool::new(false),
        }
    }

    /// Charges `bytes`, or refuses without charging anything when they do not fit.
    pub fn charge(&self, bytes: u64) -> Result<(), BudgetSpent> {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(bytes).filter(|&next| next <= self.limit)
            })
            .map(drop)
            .map_err(|used| BudgetSpent {
                limit: self.limit,
                used,
                asked: bytes,
            })
    }

    /// Gives back `bytes` charged earlier for something the ledger has since replaced (a
    /// checkpoint saved again under the same name).
    pub fn refund(&self, bytes: u64) {
        let _ = self
            .used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                Some(used.saturating_sub(bytes))
            });
    }

    /// Bytes still available.
    pub fn remaining(&self) -> u64 {
        self.limit.saturating_sub(self.used.load(Ordering::Acquire))
    }

    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// True the first time it is called after a refused charge: the caller journals the cut.
    pub fn first_refusal(&self) -> bool {
        !self.spent_noted.swap(true, Ordering::AcqRel)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charges_up_to_the_limit_and_refuses_past_it_without_charging() {
        let budget = StorageBudget::new(1_000, 400);
        assert_eq!(budget.charge(500), Ok(()));
        assert_eq!(budget.remaining(), 100);
        assert_eq!(
            budget.charge(101),
            Err(BudgetSpent {
                limit: 1_000,
                used: 900,
                asked: 101
            })
        );
        assert_eq!(budget.remaining(), 100, "a refused charge costs nothing");
        assert_eq!(budget.charge(100), Ok(()));
        assert_eq!(budget.remaining(), 0);
        assert!(budget.charge(1).is_err());
    }

    #[test]
    fn a_run_already_over_its_budget_gets_nothing() {
        let budget = StorageBudget::new(1_000, 5_000);
        assert_eq!(budget.remaining(), 0);
        assert!(budget.charge(0).is_err(), "even an empty row costs its row");
    }

    #[test]
    fn refunds_free_room_and_the_cut_is_noted_once() {
        let budget = StorageBudget::new(100, 90);
        assert!(budget.charge(20).is_err());
        assert!(budget.first_refusal());
        assert!(!budget.first_refusal());
        budget.refund(50);
        assert_eq!(budget.charge(20), Ok(()));
        assert_eq!(budget.remaining(), 40);
    }

    #[test]
    fn huge_charges_never_overflow() {
        let budget = StorageBudget::new(u64::MAX, u64::MAX - 1);
        assert!(budget.charge(u64::MAX).is_err());
        assert_eq!(budget.charge(1), Ok(()));
    }
}
