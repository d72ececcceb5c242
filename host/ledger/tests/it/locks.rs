use tollgate_ledger::{LedgerError, LedgerExt, LockRecord, Op};

use crate::{T0, ledger};

const KEY: &str = "invoice:INV-1";

#[test]
fn first_acquire_inserts_fence_1_and_reads_back() {
    let ledger = ledger();
    assert_eq!(ledger.lock(KEY).unwrap(), None);
    let lock = ledger
        .acquire_lock(KEY, "r1", "h1", T0 + 30_000, T0)
        .unwrap();
    let expected = LockRecord {
        key: KEY.into(),
        run_id: "r1".into(),
        holder: "h1".into(),
        fence: 1,
        acquired_at: T0,
        lease_until: T0 + 30_000,
        released: false,
    };
    assert_eq!(lock, expected);
    assert_eq!(ledger.lock(KEY).unwrap(), Some(expected));
}

#[test]
fn fence_strictly_increases_across_holders_and_is_per_key() {
    let ledger = ledger();
    let mut fences = Vec::new();
    for (i, run) in ["r1", "r2", "r3"].iter().enumerate() {
        let now = T0 + 1_000 * i as i64;
        let lock = ledger.acquire_lock(KEY, run, "h", now + 500, now).unwrap();
        fences.push(lock.fence);
        ledger.release_lock(KEY, run, lock.fence, now + 1).unwrap();
    }
    assert_eq!(fences, [1, 2, 3]);
    // Another key has its own sequence.
    let other = ledger
        .acquire_lock("invoice:INV-2", "r1", "h", T0 + 500, T0)
        .unwrap();
    assert_eq!(other.fence, 1);
}

#[test]
fn a_live_lease_refuses_another_run_with_lock_held_naming_the_holder() {
    let ledger = ledger();
    ledger
        .acquire_lock(KEY, "r1", "h1", T0 + 30_000, T0)
        .unwrap();
    let err = ledger
        .acquire_lock(KEY, "r2", "h2", T0 + 60_000, T0 + 29_999)
        .unwrap_err();
    match &err {
        LedgerError::LockHeld {
            key,
            run_id,
            since,
            lease_until,
        } => {
            assert_eq!((key.as_str(), run_id.as_str()), (KEY, "r1"));
            assert_eq!((*since, *lease_until), (T0, T0 + 30_000));
        }
        other => panic!("expected LockHeld, got {other:?}"),
    }
    let text = err.to_string();
    assert!(
        text.contains("lock `invoice:INV-1` is held by run `r1`"),
        "{text}"
    );
    assert!(
        text.contains("since 2023-11-14T22:13:20.000Z") && !text.contains(&T0.to_string()),
        "times as times: {text}"
    );
    assert!(
        text.contains("wait for it, or retry after the lease lapses"),
        "{text}"
    );
    // The refusal changed nothing.
    let lock = ledger.lock(KEY).unwrap().unwrap();
    assert_eq!((lock.run_id.as_str(), lock.fence), ("r1", 1));
}

#[test]
fn an_expired_lease_is_taken_over_with_a_larger_fence() {
    let ledger = ledger();
    ledger
        .acquire_lock(KEY, "r1", "h1", T0 + 30_000, T0)
        .unwrap();
    let now = T0 + 30_000; // lease_until == now counts as lapsed
    let taken = ledger
        .acquire_lock(KEY, "r2", "h2", now + 30_000, now)
        .unwrap();
    assert_eq!(taken.fence, 2);
    assert_eq!((taken.run_id.as_str(), taken.holder.as_str()), ("r2", "h2"));
    assert_eq!(taken.acquired_at, now);
    assert_eq!(ledger.lock(KEY).unwrap(), Some(taken));
}

#[test]
fn the_same_run_reacquires_a_live_lock_with_a_new_fence() {
    let ledger = ledger();
    ledger
        .acquire_lock(KEY, "r1", "h1", T0 + 30_000, T0)
        .unwrap();
    // E.g. the run's next attempt, on another host, while the old lease is still live.
    let again = ledger
        .acquire_lock(KEY, "r1", "h2", T0 + 60_000, T0 + 10)
        .unwrap();
    assert_eq!(again.fence, 2);
    assert_eq!(again.holder, "h2");
    // The superseded fence can no longer renew.
    let err = ledger.renew_lock(KEY, "r1", 1, T0 + 90_000).unwrap_err();
    assert!(
        matches!(err, LedgerError::LockLost { fence: 1, .. }),
        "{err:?}"
    );
}

#[test]
fn a_released_lock_is_free_for_another_run_before_its_lease_lapses() {
    let ledger = ledger();
    let first = ledger
        .acquire_lock(KEY, "r1", "h1", T0 + 30_000, T0)
        .unwrap();
    ledger.release_lock(KEY, "r1", first.fence, T0 + 5).unwrap();
    let released = ledger.lock(KEY).unwrap().unwrap();
    assert!(released.released);
    assert_eq!(released.lease_until, T0 + 5, "release ends the lease");
    let second = ledger
        .acquire_lock(KEY, "r2", "h2", T0 + 60_000, T0 + 6)
        .unwrap();
    assert_eq!(second.fence, 2);
    assert!(!second.released);
}

#[test]
fn a_stale_holders_release_does_not_free_its_successors_lock() {
    let ledger = ledger();
    let stale = ledger
        .acquire_lock(KEY, "r1", "h1", T0 + 1_000, T0)
        .unwrap();
    let successor = ledger
        .acquire_lock(KEY, "r2", "h2", T0 + 60_000, T0 + 1_000)
        .unwrap();
    // The stale holder wakes up and releases what it thinks it holds: a silent no-op.
    ledger
        .release_lock(KEY, "r1", stale.fence, T0 + 2_000)
        .unwrap();
    // Same run id with the old fence must not release either (a run's earlier attempt).
    ledger
        .release_lock(KEY, "r2", stale.fence, T0 + 2_000)
        .unwrap();
    assert_eq!(ledger.lock(KEY).unwrap(), Some(successor));
    let err = ledger
        .acquire_lock(KEY, "r3", "h3", T0 + 90_000, T0 + 3_000)
        .unwrap_err();
    assert!(
        matches!(&err, LedgerError::LockHeld { run_id, .. } if run_id == "r2"),
        "{err:?}"
    );
}

#[test]
fn releasing_an_unknown_lock_is_a_no_op() {
    let ledger = ledger();
    ledger.release_lock("nothing", "r1", 1, T0).unwrap();
    assert_eq!(ledger.lock("nothing").unwrap(), None);
}

#[test]
fn renew_extends_only_the_current_fence_of_the_current_run() {
    let ledger = ledger();
    let lock = ledger
        .acquire_lock(KEY, "r1", "h1", T0 + 30_000, T0)
        .unwrap();
    ledger
        .renew_lock(KEY, "r1", lock.fence, T0 + 50_000)
        .unwrap();
    assert_eq!(ledger.lock(KEY).unwrap().unwrap().lease_until, T0 + 50_000);

    let err = ledger
        .renew_lock(KEY, "r2", lock.fence, T0 + 90_000)
        .unwrap_err();
    assert!(
        matches!(&err, LedgerError::LockLost { run_id, .. } if run_id == "r2"),
        "{err:?}"
    );
    let err = ledger.renew_lock(KEY, "r1", 7, T0 + 90_000).unwrap_err();
    assert!(
        matches!(err, LedgerError::LockLost { fence: 7, .. }),
        "{err:?}"
    );
    assert_eq!(ledger.lock(KEY).unwrap().unwrap().lease_until, T0 + 50_000);
}

#[test]
fn renew_with_a_stale_fence_after_a_takeover_is_lock_lost() {
    let ledger = ledger();
    let stale = ledger
        .acquire_lock(KEY, "r1", "h1", T0 + 1_000, T0)
        .unwrap();
    ledger
        .acquire_lock(KEY, "r2", "h2", T0 + 60_000, T0 + 1_000)
        .unwrap();
    let err = ledger
        .renew_lock(KEY, "r1", stale.fence, T0 + 90_000)
        .unwrap_err();
    match &err {
        LedgerError::LockLost { key, run_id, fence } => {
            assert_eq!((key.as_str(), run_id.as_str(), *fence), (KEY, "r1", 1));
        }
        other => panic!("expected LockLost, got {other:?}"),
    }
    let text = err.to_string();
    assert!(
        text.contains("another run took the lock; stop acting on it"),
        "{text}"
    );
    assert_eq!(ledger.lock(KEY).unwrap().unwrap().lease_until, T0 + 60_000);
}

#[test]
fn renewing_a_released_or_missing_lock_is_lock_lost() {
    let ledger = ledger();
    let err = ledger.renew_lock(KEY, "r1", 1, T0 + 1).unwrap_err();
    assert!(matches!(err, LedgerError::LockLost { .. }), "{err:?}");
    let lock = ledger
        .acquire_lock(KEY, "r1", "h1", T0 + 30_000, T0)
        .unwrap();
    ledger.release_lock(KEY, "r1", lock.fence, T0 + 1).unwrap();
    let err = ledger
        .renew_lock(KEY, "r1", lock.fence, T0 + 60_000)
        .unwrap_err();
    assert!(matches!(err, LedgerError::LockLost { .. }), "{err:?}");
}

#[test]
fn a_lapsed_lease_nobody_took_can_still_be_renewed() {
    let ledger = ledger();
    let lock = ledger
        .acquire_lock(KEY, "r1", "h1", T0 + 1_000, T0)
        .unwrap();
    ledger
        .renew_lock(KEY, "r1", lock.fence, T0 + 9_000)
        .unwrap();
    let err = ledger
        .acquire_lock(KEY, "r2", "h2", T0 + 20_000, T0 + 5_000)
        .unwrap_err();
    assert!(matches!(err, LedgerError::LockHeld { .. }), "{err:?}");
}

#[test]
fn a_refused_acquire_rolls_back_its_whole_apply() {
    let ledger = ledger();
    ledger
        .acquire_lock(KEY, "r1", "h1", T0 + 30_000, T0)
        .unwrap();
    let err = ledger
        .apply(vec![
            Op::AcquireLock {
                key: "other".into(),
                run_id: "r2".into(),
                holder: "h2".into(),
                lease_until: T0 + 30_000,
                now: T0,
            },
            Op::AcquireLock {
                key: KEY.into(),
                run_id: "r2".into(),
                holder: "h2".into(),
                lease_until: T0 + 30_000,
                now: T0,
            },
        ])
        .unwrap_err();
    assert!(matches!(err, LedgerError::LockHeld { .. }), "{err:?}");
    assert_eq!(ledger.lock("other").unwrap(), None);
}
