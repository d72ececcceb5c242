use tollgate_ledger::{BreakerRecord, BreakerState, LedgerExt};

use crate::{T0, ledger};

fn breaker(connector: &str, state: BreakerState, failures: u32) -> BreakerRecord {
    BreakerRecord {
        connector: connector.to_owned(),
        tool: "invoice".to_owned(),
        state,
        consecutive_failures: failures,
        open_until: (state == BreakerState::Open).then_some(T0 + 30_000),
        updated_at: T0,
    }
}

#[test]
fn set_breaker_round_trips_and_upserts_by_connector_and_tool() {
    let ledger = ledger();
    assert_eq!(ledger.breakers().unwrap(), []);
    let open = breaker("smtp", BreakerState::Open, 5);
    ledger.set_breaker(open.clone()).unwrap();
    assert_eq!(ledger.breakers().unwrap(), [open]);

    let half_open = BreakerRecord {
        updated_at: T0 + 30_000,
        ..breaker("smtp", BreakerState::HalfOpen, 5)
    };
    ledger.set_breaker(half_open.clone()).unwrap();
    assert_eq!(ledger.breakers().unwrap(), [half_open]);
}

#[test]
fn breakers_are_listed_by_connector_name() {
    let ledger = ledger();
    for name in ["stripe", "http", "smtp"] {
        ledger
            .set_breaker(breaker(name, BreakerState::Closed, 0))
            .unwrap();
    }
    let names: Vec<String> = ledger
        .breakers()
        .unwrap()
        .into_iter()
        .map(|b| b.connector)
        .collect();
    assert_eq!(names, ["http", "smtp", "stripe"]);
}

#[test]
fn each_tool_has_its_own_circuit_on_a_connector() {
    let ledger = ledger();
    let open = breaker("erp", BreakerState::Open, 5);
    ledger.set_breaker(open.clone()).unwrap();
    let other = BreakerRecord {
        tool: "reports".to_owned(),
        ..breaker("erp", BreakerState::Closed, 0)
    };
    ledger.set_breaker(other.clone()).unwrap();
    assert_eq!(
        ledger.breaker("erp", "invoice").unwrap(),
        Some(open.clone())
    );
    assert_eq!(
        ledger.breaker("erp", "reports").unwrap(),
        Some(other.clone())
    );
    assert_eq!(ledger.breaker("erp", "nobody").unwrap(), None);
    assert_eq!(ledger.breakers().unwrap(), [open, other]);
}
