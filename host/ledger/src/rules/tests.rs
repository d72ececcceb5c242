//! The rules on rows in memory: each test names one rule and checks it without a database.
//! The contract suite (`tests/it`) checks that every backend stores what the rules decide.

use super::memory::Memory;
use super::{apply, is_final};
use crate::error::LedgerError;
use crate::records::{
    Applied, AttemptStatus, Claim, EffectStatus, EscalationReason, NewEscalation, NewRun, Op,
    Resolution, RunStatus,
};

const RUN: &str = "run-1";

fn new_run(m: &mut Memory) {
    apply(
        m,
        Op::CreateRun(NewRun {
            run_id: RUN.to_owned(),
            tool: "t".to_owned(),
            input: "{}".to_owned(),
            now: 0,
            component: None,
            lock: None,
        }),
    )
    .unwrap();
}

fn begin(
    m: &mut Memory,
    holder: &str,
    lease_until: i64,
    take_over: bool,
    now: i64,
) -> Result<u32, LedgerError> {
    match apply(
        m,
        Op::BeginAttempt {
            run_id: RUN.to_owned(),
            component_digest: "d".to_owned(),
            holder: holder.to_owned(),
            lease_until,
            take_over,
            now,
        },
    )? {
        Applied::Attempt(a) => Ok(a.attempt),
        other => panic!("BeginAttempt gave {other:?}"),
    }
}

fn claim(m: &mut Memory, attempt: u32) -> Claim {
    match apply(
        m,
        Op::ClaimEffect {
            kind: "k".to_owned(),
            key: "key".to_owned(),
            payload_digest: "p".to_owned(),
            payload: "{}".to_owned(),
            run_id: RUN.to_owned(),
            attempt,
            now: 1,
        },
    )
    .unwrap()
    {
        Applied::Claim(c) => c,
        other => panic!("ClaimEffect gave {other:?}"),
    }
}

fn record(m: &mut Memory, attempt: u32) -> Result<Applied, LedgerError> {
    apply(
        m,
        Op::RecordOutcome {
            kind: "k".to_owned(),
            key: "key".to_owned(),
            run_id: RUN.to_owned(),
            attempt,
            status: EffectStatus::Succeeded,
            response: Some("ok".to_owned()),
            error_class: None,
            error_message: None,
            now: 2,
        },
    )
}

fn acquire(m: &mut Memory, run_id: &str, lease_until: i64, now: i64) -> Result<i64, LedgerError> {
    match apply(
        m,
        Op::AcquireLock {
            key: "lock".to_owned(),
            run_id: run_id.to_owned(),
            holder: "h".to_owned(),
            lease_until,
            now,
        },
    )? {
        Applied::Lock(l) => Ok(l.fence),
        other => panic!("AcquireLock gave {other:?}"),
    }
}

#[test]
fn a_live_attempt_blocks_a_second_one_unless_taken_over() {
    let mut m = Memory::default();
    new_run(&mut m);
    assert_eq!(begin(&mut m, "a", 100, false, 10).unwrap(), 1);
    assert!(matches!(
        begin(&mut m, "b", 200, false, 50),
        Err(LedgerError::AttemptLive { attempt: 1, .. })
    ));
    assert_eq!(begin(&mut m, "b", 200, true, 50).unwrap(), 2);
    let first = &m.attempts[&(RUN.to_owned(), 1)];
    assert_eq!(first.status, AttemptStatus::Crashed);
    assert_eq!(first.error_class.as_deref(), Some("taken_over"));
    assert_eq!(m.runs[RUN].attempts, 2);
}

#[test]
fn a_lapsed_lease_is_ended_as_expired_by_the_next_attempt() {
    let mut m = Memory::default();
    new_run(&mut m);
    begin(&mut m, "a", 100, false, 10).unwrap();
    assert_eq!(begin(&mut m, "b", 300, false, 100).unwrap(), 2);
    let first = &m.attempts[&(RUN.to_owned(), 1)];
    assert_eq!(first.error_class.as_deref(), Some("lease_expired"));
    assert_eq!(first.ended_at, Some(100));
}

#[test]
fn parked_and_final_runs_refuse_attempts() {
    let mut m = Memory::default();
    new_run(&mut m);
    let park = Op::ParkRun {
        run_id: RUN.to_owned(),
        status: RunStatus::Escalated,
        now: 1,
    };
    apply(&mut m, park).unwrap();
    assert!(matches!(
        begin(&mut m, "a", 100, true, 2),
        Err(LedgerError::RunParked { .. })
    ));
    let end = Op::EndRun {
        run_id: RUN.to_owned(),
        status: RunStatus::Failed,
        output: None,
        error_class: Some("x".to_owned()),
        error_message: None,
        now: 3,
    };
    apply(&mut m, end).unwrap();
    assert!(matches!(
        begin(&mut m, "a", 100, true, 4),
        Err(LedgerError::RunFinished {
            status: RunStatus::Failed,
            ..
        })
    ));
}

#[test]
fn ending_a_run_twice_the_same_way_is_harmless_and_another_way_is_refused() {
    let mut m = Memory::default();
    new_run(&mut m);
    let end = |status| Op::EndRun {
        run_id: RUN.to_owned(),
        status,
        output: None,
        error_class: None,
        error_message: None,
        now: 1,
    };
    apply(&mut m, end(RunStatus::Succeeded)).unwrap();
    apply(&mut m, end(RunStatus::Succeeded)).unwrap();
    assert!(matches!(
        apply(&mut m, end(RunStatus::Failed)),
        Err(LedgerError::RunFinished { .. })
    ));
    assert!(matches!(
        apply(&mut m, end(RunStatus::Escalated)),
        Err(LedgerError::InvalidTransition { .. })
    ));
}

#[test]
fn final_states_are_exactly_succeeded_failed_and_in_doubt() {
    let finals: Vec<_> = [
        RunStatus::Running,
        RunStatus::Succeeded,
        RunStatus::Failed,
        RunStatus::InDoubt,
        RunStatus::Escalated,
        RunStatus::WaitingApproval,
    ]
    .into_iter()
    .filter(|s| is_final(*s))
    .collect();
    assert_eq!(
        finals,
        [RunStatus::Succeeded, RunStatus::Failed, RunStatus::InDoubt]
    );
}

#[test]
fn only_the_owning_attempt_records_an_effect_and_only_once() {
    let mut m = Memory::default();
    new_run(&mut m);
    begin(&mut m, "a", 100, false, 0).unwrap();
    assert_eq!(claim(&mut m, 1), Claim::Fresh);
    assert!(matches!(
        record(&mut m, 2),
        Err(LedgerError::OwnershipLost {
            owner_attempt: 1,
            ..
        })
    ));
    record(&mut m, 1).unwrap();
    assert!(matches!(
        record(&mut m, 1),
        Err(LedgerError::OwnershipLost {
            status: EffectStatus::Succeeded,
            ..
        })
    ));
    match claim(&mut m, 1) {
        Claim::Existing { effect, owner } => {
            assert_eq!(effect.status, EffectStatus::Succeeded);
            assert_eq!(effect.response.as_deref(), Some("ok"));
            assert_eq!(owner.map(|a| a.attempt), Some(1));
        }
        Claim::Fresh => panic!("a claimed key was claimed again"),
    }
}

#[test]
fn taking_over_an_effect_succeeds_only_from_the_state_the_caller_saw() {
    let mut m = Memory::default();
    new_run(&mut m);
    begin(&mut m, "a", 100, false, 0).unwrap();
    claim(&mut m, 1);
    let take_over = |expected_attempt, attempt| Op::TakeOverEffect {
        kind: "k".to_owned(),
        key: "key".to_owned(),
        expected_run_id: RUN.to_owned(),
        expected_attempt,
        expected_status: EffectStatus::Pending,
        run_id: RUN.to_owned(),
        attempt,
        now: 5,
    };
    assert_eq!(
        apply(&mut m, take_over(1, 2)).unwrap(),
        Applied::TookOver(true)
    );
    // A second taker that saw attempt 1 as the owner loses.
    assert_eq!(
        apply(&mut m, take_over(1, 3)).unwrap(),
        Applied::TookOver(false)
    );
    let effect = &m.effects[&("k".to_owned(), "key".to_owned())];
    assert_eq!((effect.attempt, effect.status), (2, EffectStatus::Pending));
}

#[test]
fn a_dispatch_is_counted_only_for_the_owner_of_a_pending_effect() {
    let mut m = Memory::default();
    new_run(&mut m);
    claim(&mut m, 1);
    let mark = |attempt| Op::MarkDispatched {
        kind: "k".to_owned(),
        key: "key".to_owned(),
        run_id: RUN.to_owned(),
        attempt,
        now: 3,
    };
    apply(&mut m, mark(1)).unwrap();
    assert!(apply(&mut m, mark(2)).is_err());
    assert_eq!(m.effects[&("k".to_owned(), "key".to_owned())].dispatches, 1);
}

#[test]
fn fences_grow_across_holders_and_a_stale_holder_can_neither_renew_nor_release() {
    let mut m = Memory::default();
    assert_eq!(acquire(&mut m, "r1", 100, 0).unwrap(), 1);
    assert!(matches!(
        acquire(&mut m, "r2", 200, 50),
        Err(LedgerError::LockHeld { .. })
    ));
    // The lease lapsed: r2 takes the lock with the next fence.
    assert_eq!(acquire(&mut m, "r2", 300, 100).unwrap(), 2);
    let renew = Op::RenewLock {
        key: "lock".to_owned(),
        run_id: "r1".to_owned(),
        fence: 1,
        lease_until: 1_000,
    };
    assert!(matches!(
        apply(&mut m, renew),
        Err(LedgerError::LockLost { fence: 1, .. })
    ));
    let release = |run_id: &str, fence| Op::ReleaseLock {
        key: "lock".to_owned(),
        run_id: run_id.to_owned(),
        fence,
        now: 150,
    };
    apply(&mut m, release("r1", 1)).unwrap();
    assert!(!m.locks["lock"].released, "a stale release freed the lock");
    apply(&mut m, release("r2", 2)).unwrap();
    assert!(m.locks["lock"].released);
    assert_eq!(m.locks["lock"].lease_until, 150);
    assert_eq!(acquire(&mut m, "r3", 400, 160).unwrap(), 3);
}

#[test]
fn one_open_escalation_per_run_and_a_decision_is_final() {
    let mut m = Memory::default();
    new_run(&mut m);
    let open = || {
        Op::OpenEscalation(NewEscalation {
            run_id: RUN.to_owned(),
            reason: EscalationReason::InDoubt,
            summary: "s".to_owned(),
            effect_kind: None,
            effect_key: None,
            payload_digest: None,
            evidence: serde_json::json!({}),
            now: 1,
        })
    };
    let Applied::Escalation(first) = apply(&mut m, open()).unwrap() else {
        panic!("no escalation")
    };
    let Applied::Escalation(again) = apply(&mut m, open()).unwrap() else {
        panic!("no escalation")
    };
    assert_eq!(first.id, again.id);
    let resolve = |resolution| Op::ResolveEscalation {
        id: first.id,
        resolution,
        reason: "r".to_owned(),
        by: "me".to_owned(),
        now: 2,
    };
    apply(&mut m, resolve(Resolution::Abandon)).unwrap();
    assert!(matches!(
        apply(&mut m, resolve(Resolution::Retry)),
        Err(LedgerError::EscalationResolved {
            resolution: Resolution::Abandon,
            ..
        })
    ));
}

#[test]
fn a_call_key_names_one_run_and_needs_that_run_to_exist() {
    let mut m = Memory::default();
    let claim_key = |run_id: &str| Op::ClaimCallKey {
        key: "ck".to_owned(),
        tool: "t".to_owned(),
        args_digest: "a".to_owned(),
        run_id: run_id.to_owned(),
        now: 1,
    };
    assert!(matches!(
        apply(&mut m, claim_key(RUN)),
        Err(LedgerError::RunNotFound { .. })
    ));
    new_run(&mut m);
    apply(&mut m, claim_key(RUN)).unwrap();
    assert!(matches!(
        apply(&mut m, claim_key(RUN)),
        Err(LedgerError::CallKeyUsed { .. })
    ));
}

#[test]
fn a_checkpoint_is_written_only_by_a_running_attempt_and_replaced_by_name() {
    let mut m = Memory::default();
    new_run(&mut m);
    begin(&mut m, "a", 100, false, 0).unwrap();
    let save = |attempt, state: &[u8]| Op::SaveCheckpoint {
        run_id: RUN.to_owned(),
        attempt,
        name: "n".to_owned(),
        state: state.to_vec(),
        now: 1,
    };
    apply(&mut m, save(1, b"one")).unwrap();
    apply(&mut m, save(1, b"two")).unwrap();
    assert_eq!(m.checkpoints.len(), 1);
    assert_eq!(m.checkpoints[0].state, b"two");
    assert!(matches!(
        apply(&mut m, save(2, b"x")),
        Err(LedgerError::LeaseLost { .. })
    ));
    let end = Op::EndAttempt {
        run_id: RUN.to_owned(),
        attempt: 1,
        status: AttemptStatus::Failed,
        error_class: None,
        error_message: None,
        cpu_ms: 0,
        now: 2,
    };
    apply(&mut m, end).unwrap();
    assert!(matches!(
        apply(&mut m, save(1, b"late")),
        Err(LedgerError::LeaseLost { .. })
    ));
}

#[test]
fn a_journal_entry_for_an_unknown_run_is_refused() {
    let mut m = Memory::default();
    let entry = crate::records::NewJournalEntry {
        run_id: "nope".to_owned(),
        attempt: None,
        at: 0,
        level: "info".to_owned(),
        event: "e".to_owned(),
        message: "m".to_owned(),
        fields: serde_json::json!({}),
    };
    assert!(matches!(
        apply(&mut m, Op::Journal(entry)),
        Err(LedgerError::RunNotFound { .. })
    ));
    assert!(m.journal.is_empty());
}
