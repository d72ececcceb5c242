//! The PostgreSQL ledger through database crashes: invoice runs of the real `tollgate` binary
//! against a PostgreSQL server of the test's own, which is stopped at once (`pg_ctl -m
//! immediate`: no checkpoint, every connection cut) and started again twice in the middle of
//! the campaign. Every process that meets the outage exits with what it knows; the campaign
//! does what an agent told so would do, resuming a recorded run and starting an unrecorded
//! one again.
//!
//! The claim: 0 duplicate postings, 0 lost runs, and every run finished or resumable; the
//! resumable ones then finish on their first resume.

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tollgate::ledger::{Ledger, PgLedger, PgOptions, RunFilter, RunStatus};
use tollgate_tests::erp::{Erp, Faults};
use tollgate_tests::pg_server::PrivateServer;
use tollgate_tests::plugins::INVOICE;

use crate::harness::{Env, erp_config, invoice, on_postgres, tollgate_bin};

const INVOICES: usize = 24;
const PARALLEL: usize = 4;
/// The server crashes as the campaign launches these processes.
const CRASH_AT: [usize; 2] = [6, 16];

#[test]
fn invoices_survive_postgres_crashing_and_restarting_mid_campaign() {
    if on_postgres() {
        return; // it brings its own server; the re-run on the shared one adds nothing
    }
    let server = PrivateServer::start().expect("start a private PostgreSQL server");
    let url = server.url();
    let erp = Erp::start(true).unwrap();
    // Requests in flight for a while, so the crashes meet processes mid-run.
    erp.inject(Faults {
        delay_ms: 20,
        delay_after_booking_ms: 20,
        ..Faults::default()
    });
    let env = Env::new();
    let config = env.config_file(&erp_config(&erp.invoices_url(), true, 10_000));
    let reader = PgLedger::open(&url, PgOptions::default()).expect("open the ledger");
    let tollgate = |args: &[&str]| {
        let mut command = Command::new(tollgate_bin());
        command
            .arg("--config")
            .arg(&config)
            .args(["--ledger", &url, "--cache-dir"])
            .arg(env.cache())
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        command
    };

    let mut done: BTreeMap<String, bool> = (0..INVOICES)
        .map(|i| (format!("INV-P{i:03}"), false))
        .collect();
    let mut tries: BTreeMap<String, u32> = BTreeMap::new();
    let mut active: Vec<(String, Child)> = Vec::new();
    let mut launched = 0;
    let mut crashes = 0;
    let mut outage_exits = 0;
    let started = Instant::now();
    loop {
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "the campaign did not converge in 5 minutes"
        );
        while active.len() < PARALLEL {
            let Some(id) = done
                .iter()
                .find(|(id, finished)| !**finished && !active.iter().any(|(a, _)| a == *id))
                .map(|(id, _)| id.clone())
            else {
                break;
            };
            let n = tries.entry(id.clone()).or_default();
            *n += 1;
            assert!(*n <= 20, "{id} did not finish in 20 tries");
            // A run the ledger holds is resumed; one it does not is started (again).
            let args: Vec<String> = match unfinished_run(&reader, &id) {
                Some(run_id) => vec!["resume".into(), run_id, "--json".into()],
                None => vec![
                    "run".into(),
                    INVOICE.into(),
                    "--run-prefix".into(),
                    "restart".into(),
                    "--json".into(),
                    "--input".into(),
                    invoice(&id),
                ],
            };
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            active.push((id, tollgate(&args).spawn().unwrap()));
            launched += 1;
            if CRASH_AT.contains(&launched) {
                // Let the processes reach their effects, then take the server down under them.
                std::thread::sleep(Duration::from_millis(60));
                server.crash().expect("crash the server");
                std::thread::sleep(Duration::from_millis(300));
                server.up().expect("start the server again");
                crashes += 1;
            }
        }
        if active.is_empty() {
            break;
        }
        std::thread::sleep(Duration::from_millis(2));
        let mut i = 0;
        while i < active.len() {
            let Some(status) = active[i].1.try_wait().unwrap() else {
                i += 1;
                continue;
            };
            let (id, child) = active.swap_remove(i);
            let output = child.wait_with_output().unwrap();
            let stderr = String::from_utf8_lossy(&output.stderr);
            match status.code() {
                Some(0) => {
                    done.insert(id, true);
                }
                // The ledger went away under the run: resumable, or not recorded at all.
                Some(1 | 4 | 7) => {
                    outage_exits += 1;
                    assert!(
                        status.code() != Some(1) || stderr.contains("unavailable"),
                        "{id} failed for a reason other than the outage: {stderr}"
                    );
                }
                code => panic!(
                    "{id} exited {code:?}: {stderr}{}",
                    String::from_utf8_lossy(&output.stdout)
                ),
            }
        }
    }
    println!(
        "{INVOICES} invoices in {:.1}s: {launched} processes, {crashes} server crashes, \
         {outage_exits} exits that met an outage",
        started.elapsed().as_secs_f64()
    );
    assert_eq!(crashes, CRASH_AT.len());
    assert!(outage_exits > 0, "no process met a crash of the server");

    // No lost runs: whatever the outages left running is resumable, and finishes now.
    let all = RunFilter {
        status: None,
        limit: usize::MAX,
    };
    for run in reader.runs(&all).unwrap() {
        if run.status == RunStatus::Running {
            let out = tollgate(&["resume", &run.run_id, "--json"])
                .output()
                .unwrap();
            assert_eq!(
                out.status.code(),
                Some(0),
                "run {} left by an outage must resume: {}",
                run.run_id,
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
    let runs = reader.runs(&all).unwrap();
    for run in &runs {
        assert_eq!(run.status, RunStatus::Succeeded, "run {}", run.run_id);
    }
    // No lost invoices: each has a run in the ledger that finished.
    for id in done.keys() {
        let needle = format!("\"invoice_id\":\"{id}\"");
        assert!(
            runs.iter()
                .any(|run| run.input.replace(' ', "").contains(&needle)),
            "{id} has no succeeded run in the ledger"
        );
    }
    // Exactly once downstream: every invoice posted once, whatever was re-sent.
    for id in done.keys() {
        assert_eq!(
            erp.postings_for(id),
            1,
            "{id} was posted more or less than once"
        );
    }
}

/// The newest run of invoice `id` that has not finished, if the ledger holds one.
fn unfinished_run(ledger: &dyn Ledger, id: &str) -> Option<String> {
    let runs = ledger
        .runs(&RunFilter {
            status: Some(RunStatus::Running),
            limit: usize::MAX,
        })
        .expect("the server is up between crashes");
    let needle = format!("\"invoice_id\":\"{id}\"");
    runs.into_iter()
        .find(|run| run.input.replace(' ', "").contains(&needle))
        .map(|run| run.run_id)
}
