use tollgate_ledger::{CallKeyRecord, Ledger, LedgerError, LedgerExt, NewRun, Op};

use crate::{T0, ledger, new_run};

#[test]
fn a_claimed_call_key_reads_back_with_its_run() {
    let ledger = ledger();
    new_run(&ledger, "r1");
    assert_eq!(ledger.call_key("k").unwrap(), None);
    ledger
        .claim_call_key("k", "invoice", "d1", "r1", T0)
        .unwrap();
    assert_eq!(
        ledger.call_key("k").unwrap(),
        Some(CallKeyRecord {
            key: "k".into(),
            tool: "invoice".into(),
            args_digest: "d1".into(),
            run_id: "r1".into(),
            created_at: T0,
        })
    );
}

#[test]
fn a_used_call_key_names_the_first_run_whatever_is_asked_the_second_time() {
    let ledger = ledger();
    new_run(&ledger, "r1");
    new_run(&ledger, "r2");
    ledger
        .claim_call_key("k", "invoice", "d1", "r1", T0)
        .unwrap();
    for (tool, digest) in [("invoice", "d1"), ("other", "d2")] {
        let err = ledger
            .claim_call_key("k", tool, digest, "r2", T0 + 1)
            .unwrap_err();
        match err {
            LedgerError::CallKeyUsed {
                key,
                tool,
                args_digest,
                run_id,
            } => {
                assert_eq!((key.as_str(), tool.as_str()), ("k", "invoice"));
                assert_eq!((args_digest.as_str(), run_id.as_str()), ("d1", "r1"));
            }
            other => panic!("expected CallKeyUsed, got {other:?}"),
        }
    }
}

#[test]
fn a_used_call_key_undoes_the_run_created_in_the_same_batch() {
    let ledger = ledger();
    new_run(&ledger, "r1");
    ledger
        .claim_call_key("k", "invoice", "d1", "r1", T0)
        .unwrap();
    let batch = vec![
        Op::CreateRun(NewRun {
            run_id: "r2".into(),
            tool: "invoice".into(),
            input: "{}".into(),
            now: T0 + 1,
        }),
        Op::ClaimCallKey {
            key: "k".into(),
            tool: "invoice".into(),
            args_digest: "d1".into(),
            run_id: "r2".into(),
            now: T0 + 1,
        },
    ];
    assert!(matches!(
        ledger.apply(batch),
        Err(LedgerError::CallKeyUsed { .. })
    ));
    assert_eq!(ledger.run("r2").unwrap(), None, "no orphan run");
}

#[test]
fn a_call_key_for_an_unknown_run_is_refused() {
    let ledger = ledger();
    let err = ledger
        .claim_call_key("k", "invoice", "d1", "nope", T0)
        .unwrap_err();
    assert!(matches!(err, LedgerError::RunNotFound { .. }), "{err}");
    assert_eq!(ledger.call_key("k").unwrap(), None);
}
