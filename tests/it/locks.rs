//! Business-object locks against a real ERP on 127.0.0.1: overlapping runs on one object
//! act one at a time, each under a larger fencing token, and a killed holder's lease lapses.

use crate::harness::{Env, erp_config, events, failure, invoice, load, output, tollgate_with};
use std::process::Stdio;
use std::time::Duration;
use tollgate::ledger::RunStatus;
use tollgate::{FailureClass, RunOptions};
use tollgate_tests::erp::{Erp, Faults};
use tollgate_tests::plugins::INVOICE;

async fn wait_until(ready: impl FnMut() -> bool) {
    crate::harness::wait_until(Duration::from_secs(30), ready).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_concurrent_runs_on_one_lock_key_act_one_at_a_time_with_increasing_fences() {
    let erp = Erp::start(true).unwrap();
    erp.inject(Faults {
        delay_ms: 50,
        ..Faults::default()
    });
    let env = Env::new();
    let config = format!(
        "{}\n[tools.invoice.lock]\nkey = \"customer:{{customer}}\"\nwait_ms = 60000\n",
        erp_config(&erp.invoices_url(), true, 5_000)
    );
    let runtime = env.runtime(&config);
    let tool = load(&runtime, INVOICE).await;
    let mut runs = tokio::task::JoinSet::new();
    for n in 0..10 {
        let (runtime, tool) = (runtime.clone(), tool.clone());
        runs.spawn(async move { runtime.run(&tool, &invoice(&format!("INV-L{n}"))).await });
    }
    let mut waited = 0;
    while let Some(report) = runs.join_next().await {
        let report = report.unwrap().unwrap();
        assert_eq!(output(&report)["posted"], true);
        if events(&runtime, &report.run_id).contains(&"lock.waiting".to_owned()) {
            waited += 1;
        }
    }
    let stats = erp.stats();
    assert_eq!(stats.postings, 10);
    assert_eq!(
        stats.max_in_flight, 1,
        "never two postings for one customer at once"
    );
    assert_eq!(stats.fences.len(), 10, "every request carried its fence");
    assert!(
        stats.fences.windows(2).all(|w| w[0] < w[1]),
        "fencing tokens strictly increase in arrival order: {:?}",
        stats.fences
    );
    assert!(waited > 0, "some runs had to wait for the lock");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_lock_fails_fast_naming_the_holder() {
    let erp = Erp::start(true).unwrap();
    erp.inject(Faults {
        timeout_after_success: 1,
        hold_ms: 1_500,
        ..Faults::default()
    });
    let env = Env::new();
    let runtime = env.runtime(&erp_config(&erp.invoices_url(), true, 10_000));
    let tool = load(&runtime, INVOICE).await;
    let options = RunOptions {
        lock: Some("customer:ACME".into()),
        ..RunOptions::default()
    };
    let holder = tokio::spawn({
        let (runtime, tool, options) = (runtime.clone(), tool.clone(), options.clone());
        async move {
            runtime
                .run_with_options(&tool, &invoice("INV-H1"), &options, false)
                .await
                .unwrap()
        }
    });
    wait_until(|| erp.stats().requests == 1).await;
    let second = runtime
        .run_with_options(&tool, &invoice("INV-H2"), &options, false)
        .await
        .unwrap();
    let first = holder.await.unwrap();
    let f = failure(&second);
    assert_eq!(f.class, FailureClass::Transient, "{f}");
    assert_eq!(
        second.status,
        RunStatus::Running,
        "resumable once the lock is free"
    );
    assert!(
        f.details.as_ref().unwrap()["retry_after_ms"]
            .as_i64()
            .unwrap()
            > 0
    );
    assert!(
        f.message.contains("customer:ACME") && f.message.contains(&first.run_id),
        "names the lock and its holder: {f}"
    );
    assert_eq!(erp.postings_for("INV-H2"), 0);
    assert_eq!(output(&first)["posted"], true);
    // Once the holder finished, the lock is free again, under a larger fence.
    let third = runtime
        .run_with_options(&tool, &invoice("INV-H3"), &options, false)
        .await
        .unwrap();
    assert_eq!(output(&third)["posted"], true);
    assert_eq!(erp.stats().fences, vec![1, 2]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_lock_holder_lease_expires_and_the_next_run_proceeds() {
    let erp = Erp::start(true).unwrap();
    erp.inject(Faults {
        timeout_after_success: 1,
        hold_ms: 60_000,
        ..Faults::default()
    });
    let env = Env::new();
    let toml = format!(
        "lease_ttl_ms = 1500\n{}\n[tools.invoice.lock]\nkey = \"invoice:{{invoice_id}}\"\nttl_ms = 1500\nwait_ms = 20000\n",
        erp_config(&erp.invoices_url(), true, 120_000)
    );
    let config = env.config_file(&toml);
    let mut child = tollgate_with(&env, &config)
        .args(["run", INVOICE, "--input", &invoice("INV-K1")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Ready before the kill: the next run must start while the dead holder's lease still
    // runs, however slow opening a ledger and loading a tool is on a busy machine.
    let runtime = env.runtime(&toml);
    let tool = load(&runtime, INVOICE).await;
    // The holder took the lock and is mid-dispatch; now it dies without releasing it.
    wait_until(|| erp.stats().requests == 1).await;
    child.kill().unwrap();
    child.wait().unwrap();
    let holder_run = runtime.ledger().runs(&Default::default()).unwrap()[0]
        .run_id
        .clone();
    let lock = runtime.ledger().lock("invoice:INV-K1").unwrap().unwrap();
    assert_eq!(lock.run_id, holder_run);
    assert!(!lock.released, "a killed holder cannot release");

    let next = runtime.run(&tool, &invoice("INV-K1")).await.unwrap();
    assert_eq!(output(&next)["posted"], true);
    assert_eq!(next.status, RunStatus::Succeeded);
    assert!(
        events(&runtime, &next.run_id).contains(&"lock.waiting".to_owned()),
        "it waited for the dead holder's lease to lapse"
    );
    let stats = erp.stats();
    assert_eq!(
        stats.fences,
        vec![1, 2],
        "the next holder's token is larger"
    );
    assert_eq!(
        stats.postings, 1,
        "the key-honouring ERP replayed the first posting"
    );
    let lock = runtime.ledger().lock("invoice:INV-K1").unwrap().unwrap();
    assert_eq!((lock.fence, lock.released), (2, true));
}
