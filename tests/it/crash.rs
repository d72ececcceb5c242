//! Crash safety with real processes: many invoice runs of the real `tollgate` binary,
//! `kill -9`ed at random moments, resumed until every run completes. The seed is printed
//! (and can be set with TOLLGATE_CRASH_SEED) so a failure can be replayed.

use crate::harness::{Env, erp_config, invoice, tollgate_bin};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tollgate::ledger::{EffectStatus, Ledger, RunFilter, RunStatus, SqliteLedger};
use tollgate_tests::erp::{Erp, Faults};
use tollgate_tests::plugins::INVOICE;

const PARALLEL: usize = 4;
/// After this many attempts at one invoice, stop killing it so the campaign ends.
const KILLED_TRIES: u32 = 4;

#[derive(Debug, Default)]
struct InvoiceState {
    run_id: Option<String>,
    tries: u32,
    /// Final: succeeded or in doubt.
    outcome: Option<RunStatus>,
    /// A kill landed while its effect was pending (outcome unknown).
    killed_while_pending: bool,
    /// A process reported success to its caller.
    acknowledged: bool,
}

struct Active {
    id: String,
    child: Child,
    spawned: Instant,
    kill: Kill,
}

/// When an active process gets its `kill -9`.
enum Kill {
    Never,
    /// At a random moment of its expected life.
    At(Instant),
    /// As soon as the ERP sees its request (more than `seen` arrivals for its key): the
    /// kill lands while the request is in flight, whatever the machine's load does to the
    /// timing of everything else.
    OnArrival {
        seen: u64,
    },
}

struct Campaign {
    invoices: usize,
    honours_keys: bool,
}

struct Findings {
    states: BTreeMap<String, InvoiceState>,
    kill_points: BTreeMap<&'static str, u32>,
    erp: tollgate_tests::erp::Stats,
    ledger: SqliteLedger,
}

fn seed() -> u64 {
    std::env::var("TOLLGATE_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        })
}

fn run_campaign(campaign: &Campaign) -> Findings {
    let seed = seed();
    println!(
        "crash campaign: {} invoices, keys honoured: {}, seed {seed} (TOLLGATE_CRASH_SEED)",
        campaign.invoices, campaign.honours_keys
    );
    let mut rng = StdRng::seed_from_u64(seed);
    let erp = Erp::start(campaign.honours_keys).unwrap();
    // Widen the window between dispatch and outcome, as a real ERP would.
    erp.inject(Faults {
        delay_ms: 20,
        ..Faults::default()
    });
    let env = Env::new();
    let config = env.config_file(&erp_config(
        &erp.invoices_url(),
        campaign.honours_keys,
        10_000,
    ));
    let ledger_path = env.ledger();
    let mut states: BTreeMap<String, InvoiceState> = (0..campaign.invoices)
        .map(|i| (format!("INV-K{i:04}"), InvoiceState::default()))
        .collect();
    let mut kill_points: BTreeMap<&'static str, u32> = BTreeMap::new();
    let mut active: Vec<Active> = Vec::new();
    let mut lifetime_ms = 150.0_f64; // running estimate of a whole process's life
    let started = Instant::now();
    let reader = SqliteLedger::open(&ledger_path, Default::default()).unwrap();

    loop {
        assert!(
            started.elapsed() < Duration::from_secs(600),
            "campaign did not converge in 10 minutes (seed {seed})"
        );
        while active.len() < PARALLEL {
            let Some(id) = states
                .iter()
                .find(|(id, s)| s.outcome.is_none() && !active.iter().any(|a| &a.id == *id))
                .map(|(id, _)| id.clone())
            else {
                break;
            };
            let state = states.get_mut(&id).unwrap();
            state.tries += 1;
            let mut cmd = Command::new(tollgate_bin());
            cmd.arg("--config")
                .arg(&config)
                .arg("--ledger")
                .arg(&ledger_path)
                .arg("--cache-dir")
                .arg(env.cache());
            match &state.run_id {
                Some(run_id) => cmd.args(["resume", run_id, "--json"]),
                None => cmd.args([
                    "run",
                    INVOICE,
                    "--run-prefix",
                    "crash",
                    "--json",
                    "--input",
                    &invoice(&id),
                ]),
            };
            let spawned = Instant::now();
            let child = cmd
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            let kill = if state.tries > KILLED_TRIES || !rng.random_bool(0.6) {
                Kill::Never
            } else if rng.random_bool(0.25) {
                Kill::OnArrival {
                    seen: arrivals(&erp, &id),
                }
            } else {
                Kill::At(
                    Instant::now()
                        + Duration::from_micros(rng.random_range(0..(lifetime_ms * 1200.0) as u64)),
                )
            };
            active.push(Active {
                id,
                child,
                spawned,
                kill,
            });
        }
        if active.is_empty() {
            break;
        }
        std::thread::sleep(Duration::from_millis(1));
        let mut i = 0;
        while i < active.len() {
            let a = &mut active[i];
            if let Some(status) = a.child.try_wait().unwrap() {
                let a = active.swap_remove(i);
                let output = a.child.wait_with_output().unwrap();
                let state = states.get_mut(&a.id).unwrap();
                let report: Option<serde_json::Value> = serde_json::from_slice(&output.stdout).ok();
                if let Some(run_id) = report.as_ref().and_then(|r| r["run_id"].as_str()) {
                    state.run_id = Some(run_id.to_owned());
                }
                match status.code() {
                    Some(0) => {
                        state.acknowledged = true;
                        state.outcome = Some(RunStatus::Succeeded);
                        // Spawn to exit, as this loop sees it: kills aim across that span.
                        lifetime_ms =
                            0.8 * lifetime_ms + 0.2 * a.spawned.elapsed().as_secs_f64() * 1000.0;
                    }
                    Some(5) => state.outcome = Some(RunStatus::InDoubt),
                    code => panic!(
                        "{} exited {code:?} (seed {seed}): {}{}",
                        a.id,
                        String::from_utf8_lossy(&output.stderr),
                        String::from_utf8_lossy(&output.stdout)
                    ),
                }
                continue;
            }
            let due = match a.kill {
                Kill::Never => false,
                Kill::At(t) => Instant::now() >= t,
                Kill::OnArrival { seen } => arrivals(&erp, &a.id) > seen,
            };
            if due {
                let mut a = active.swap_remove(i);
                a.child.kill().unwrap(); // SIGKILL
                a.child.wait().unwrap();
                let point = classify_kill(&reader, &erp, &a.id, states.get_mut(&a.id).unwrap());
                *kill_points.entry(point).or_default() += 1;
                continue;
            }
            i += 1;
        }
    }
    println!(
        "finished in {:.1}s; kill points: {kill_points:?}",
        started.elapsed().as_secs_f64()
    );
    Findings {
        states,
        kill_points,
        erp: erp.stats(),
        ledger: reader,
    }
}

/// Requests the ERP has received for an invoice's key.
fn arrivals(erp: &Erp, id: &str) -> u64 {
    erp.stats()
        .requests_by_key
        .get(&format!("post-invoice:{id}"))
        .copied()
        .unwrap_or(0)
}

/// Where did the kill land? Read from the ledger and the ERP right after the process died.
fn classify_kill(
    ledger: &SqliteLedger,
    erp: &Erp,
    id: &str,
    state: &mut InvoiceState,
) -> &'static str {
    if state.run_id.is_none() {
        let runs = ledger
            .runs(&RunFilter {
                status: None,
                limit: 100_000,
            })
            .unwrap();
        state.run_id = runs
            .into_iter()
            .find(|r| r.input.contains(&format!("\"{id}\"")))
            .map(|r| r.run_id);
    }
    let Some(run_id) = &state.run_id else {
        return "before the run was recorded";
    };
    let key = format!("post-invoice:{id}");
    let checkpoints = ledger.checkpoints(run_id).unwrap();
    match ledger
        .effect("erp.post-invoice", &key)
        .unwrap()
        .map(|e| e.status)
    {
        None if checkpoints.is_empty() => "before the first checkpoint",
        None => "after a checkpoint, before the intent",
        Some(EffectStatus::Pending) => {
            state.killed_while_pending = true;
            if arrivals(erp, id) == 0 {
                "between intent and dispatch"
            } else {
                "between dispatch and outcome"
            }
        }
        Some(EffectStatus::Succeeded) => match ledger.run(run_id).unwrap().map(|r| r.status) {
            Some(RunStatus::Running) => "after the outcome, before the run ended",
            _ => "after the run ended",
        },
        Some(EffectStatus::Failed) => "after a failed outcome",
        Some(EffectStatus::InDoubt) => "after the effect went in doubt",
    }
}

#[test]
fn kill9_campaign_with_key_honouring_downstream_posts_every_invoice_exactly_once() {
    let f = run_campaign(&Campaign {
        invoices: 200,
        honours_keys: true,
    });
    let duplicates: Vec<_> = f.erp.by_invoice.iter().filter(|(_, n)| **n > 1).collect();
    assert!(duplicates.is_empty(), "duplicate postings: {duplicates:?}");
    let runs = f
        .ledger
        .runs(&RunFilter {
            status: None,
            limit: 100_000,
        })
        .unwrap();
    assert_eq!(
        runs.len(),
        f.states.len(),
        "one run per invoice, none lost or doubled"
    );
    for (id, state) in &f.states {
        assert_eq!(
            f.erp.by_invoice.get(id),
            Some(&1),
            "{id} posted exactly once"
        );
        let run_id = state
            .run_id
            .as_deref()
            .unwrap_or_else(|| panic!("{id} has a run"));
        let run = f.ledger.run(run_id).unwrap().unwrap();
        assert_eq!(
            run.status,
            RunStatus::Succeeded,
            "{id}: run {run_id} completed"
        );
        let effect = f
            .ledger
            .effect("erp.post-invoice", &format!("post-invoice:{id}"))
            .unwrap()
            .unwrap();
        assert_eq!(
            effect.status,
            EffectStatus::Succeeded,
            "{id}: acknowledged effect is in the ledger"
        );
        assert!(
            effect.response.as_deref().unwrap_or("").contains("ERP-"),
            "{id}: outcome recorded"
        );
        assert!(state.acknowledged);
    }
    let pending_kills = f
        .kill_points
        .get("between intent and dispatch")
        .copied()
        .unwrap_or(0)
        + f.kill_points
            .get("between dispatch and outcome")
            .copied()
            .unwrap_or(0);
    assert!(
        pending_kills > 0,
        "no kill landed while an effect was pending: {:?}",
        f.kill_points
    );
    assert!(
        f.kill_points.values().sum::<u32>() >= 100,
        "too few kills to mean much: {:?}",
        f.kill_points
    );
}

#[test]
fn kill9_campaign_without_key_support_sends_nothing_twice_and_escalates_the_unknown() {
    let f = run_campaign(&Campaign {
        invoices: 60,
        honours_keys: false,
    });
    let duplicates: Vec<_> = f.erp.by_invoice.iter().filter(|(_, n)| **n > 1).collect();
    assert!(duplicates.is_empty(), "executed twice: {duplicates:?}");
    for (id, state) in &f.states {
        let effect = f
            .ledger
            .effect("erp.post-invoice", &format!("post-invoice:{id}"))
            .unwrap();
        let status = effect.as_ref().map(|e| e.status);
        if state.killed_while_pending {
            assert_eq!(
                state.outcome,
                Some(RunStatus::InDoubt),
                "{id}: unknown outcome escalated"
            );
            assert_eq!(status, Some(EffectStatus::InDoubt), "{id}");
        } else {
            assert_eq!(state.outcome, Some(RunStatus::Succeeded), "{id}");
            assert_eq!(status, Some(EffectStatus::Succeeded), "{id}");
            assert_eq!(f.erp.by_invoice.get(id), Some(&1), "{id}");
        }
    }
    assert!(
        f.states.values().any(|s| s.killed_while_pending),
        "no kill landed while pending: {:?}",
        f.kill_points
    );
}
