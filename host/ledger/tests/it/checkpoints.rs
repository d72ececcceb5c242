use tollgate_ledger::{AttemptStatus, LedgerError, LedgerExt};

use crate::{T0, ledger, running};

#[test]
fn latest_checkpoint_is_the_newest_overall_or_by_name() {
    let ledger = ledger();
    running(&*ledger, "r1");
    ledger.save_checkpoint("r1", 1, "cursor", b"1", T0).unwrap();
    ledger
        .save_checkpoint("r1", 1, "progress", b"50%", T0 + 1)
        .unwrap();
    ledger
        .save_checkpoint("r1", 1, "cursor", b"2", T0 + 2)
        .unwrap();
    ledger
        .save_checkpoint("r1", 1, "progress", &[0, 255], T0 + 3)
        .unwrap();

    let latest = ledger.latest_checkpoint("r1", None).unwrap().unwrap();
    assert_eq!(
        (latest.name.as_str(), latest.state.as_slice()),
        ("progress", &[0u8, 255][..])
    );
    let cursor = ledger
        .latest_checkpoint("r1", Some("cursor"))
        .unwrap()
        .unwrap();
    assert_eq!(cursor.state, b"2");
    assert_eq!(cursor.created_at, T0 + 2);
    assert_eq!(
        ledger.latest_checkpoint("r1", Some("absent")).unwrap(),
        None
    );
    assert_eq!(ledger.latest_checkpoint("r2", None).unwrap(), None);

    // One copy per name, oldest first: saving a name again replaced the earlier copy.
    let all = ledger.checkpoints("r1").unwrap();
    let kept: Vec<(&str, &[u8])> = all
        .iter()
        .map(|c| (c.name.as_str(), c.state.as_slice()))
        .collect();
    assert_eq!(kept, [("cursor", &b"2"[..]), ("progress", &[0u8, 255][..])]);
    assert!(all.windows(2).all(|w| w[0].seq < w[1].seq));
}

#[test]
fn saving_one_name_over_and_over_keeps_one_copy() {
    let ledger = ledger();
    running(&*ledger, "r1");
    let before = ledger.stored_bytes("r1").unwrap();
    for i in 0..50u8 {
        ledger
            .save_checkpoint("r1", 1, "c", &[i; 1000], T0 + i64::from(i))
            .unwrap();
    }
    assert_eq!(ledger.checkpoints("r1").unwrap().len(), 1);
    assert_eq!(
        ledger.stored_bytes("r1").unwrap() - before,
        tollgate_ledger::stored::checkpoint("c", 1000)
    );
}

#[test]
fn checkpoints_carry_their_attempt_across_attempts() {
    let ledger = ledger();
    running(&*ledger, "r1");
    ledger.save_checkpoint("r1", 1, "c", b"a1", T0).unwrap();
    ledger
        .end_attempt("r1", 1, AttemptStatus::Failed, None, None, T0 + 1)
        .unwrap();
    ledger
        .begin_attempt("r1", "d", "h1", T0 + 60_000, false, T0 + 2)
        .unwrap();
    let resumed = ledger.latest_checkpoint("r1", Some("c")).unwrap().unwrap();
    assert_eq!((resumed.attempt, resumed.state.as_slice()), (1, &b"a1"[..]));
    ledger.save_checkpoint("r1", 2, "c", b"a2", T0 + 3).unwrap();
    assert_eq!(
        ledger
            .latest_checkpoint("r1", Some("c"))
            .unwrap()
            .unwrap()
            .attempt,
        2
    );
}

#[test]
fn superseded_attempt_cannot_save_a_checkpoint() {
    let ledger = ledger();
    running(&*ledger, "r1");
    ledger
        .begin_attempt("r1", "d", "h2", T0 + 60_000, true, T0 + 1)
        .unwrap();
    let err = ledger
        .save_checkpoint("r1", 1, "c", b"stale", T0 + 2)
        .unwrap_err();
    assert!(
        matches!(err, LedgerError::LeaseLost { attempt: 1, .. }),
        "{err:?}"
    );
    let err = ledger
        .save_checkpoint("ghost", 1, "c", b"x", T0)
        .unwrap_err();
    assert!(matches!(err, LedgerError::RunNotFound { .. }), "{err:?}");
    assert_eq!(ledger.checkpoints("r1").unwrap(), []);
}
