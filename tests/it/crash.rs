//! Crash safety with real processes: many invoice runs of the real `tollgate` binary,
//! `kill -9`ed at random moments, resumed until every run completes. The seed is printed
//! (and can be set with TOLLGATE_CRASH_SEED) so a failure can be replayed.
//!
//! Some kills are aimed rather than timed: at the moment the ERP sees the request, and at the
//! moment it has booked (or replayed) it, while it holds the answer back. Every kill is then
//! placed in a window from what the ERP had seen just before the signal and what the dead
//! process left in the ledger, counting only what that process itself did, and each campaign
//! prints and asserts how many kills landed in the windows its claim rests on.

use crate::harness::{Env, erp_config, invoice, tollgate_bin};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tollgate::ledger::{EffectStatus, Ledger, RunFilter, RunStatus};
use tollgate_tests::erp::{Erp, Faults};
use tollgate_tests::plugins::INVOICE;

const PARALLEL: usize = 4;
/// After this many attempts at one invoice, stop killing it so the campaign ends.
const KILLED_TRIES: u32 = 4;

// Where a kill landed, in the order of an attempt's life.
const BEFORE_RUN: &str = "before the run was recorded";
const BEFORE_CHECKPOINT: &str = "before the first checkpoint";
const BEFORE_INTENT: &str = "after a checkpoint, before the intent";
/// A resume killed before it took over the effect an earlier attempt left pending.
const BEFORE_TAKEOVER: &str = "before this attempt acted on the effect an earlier one left pending";
const BEFORE_ARRIVAL: &str = "after this attempt's intent, before its request arrived";
/// The request arrived and the ERP has not acted on it yet.
const BEFORE_BOOKING: &str = "after its request arrived, before the ERP booked or replayed it";
/// The dangerous window: downstream has acted, the ledger does not know.
const BEFORE_OUTCOME: &str = "after the ERP booked or replayed it, before the outcome was recorded";
const BEFORE_RUN_END: &str = "after the outcome, before the run ended";
const AFTER_RUN_END: &str = "after the run ended";
const AFTER_FAILED: &str = "after a failed outcome";
const AFTER_IN_DOUBT: &str = "after the effect went in doubt";

#[derive(Debug, Default)]
struct InvoiceState {
    run_id: Option<String>,
    tries: u32,
    /// Final: succeeded or in doubt.
    outcome: Option<RunStatus>,
    /// A kill landed while its effect was pending (outcome unknown).
    killed_while_pending: bool,
    /// A kill landed after the ERP acted and before the outcome was recorded.
    killed_before_outcome: bool,
    /// The report the CLI printed when it exited with its final status.
    report: Option<serde_json::Value>,
}

struct Active {
    id: String,
    /// What its ledger connections are named (see `Env::ledger_named`).
    name: String,
    child: Child,
    spawned: Instant,
    kill: Kill,
    before: Seen,
}

/// What the ERP and the ledger held for an invoice at one moment.
#[derive(Debug, Clone, Copy)]
struct Seen {
    /// Requests the ERP received for the invoice's key.
    arrivals: u64,
    /// Of those, requests it booked or answered from its idempotency store.
    settled: u64,
    /// The ledger effect's dispatch count, if there is an effect.
    dispatches: Option<u32>,
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
    /// As soon as the ERP has booked or replayed its request (more than `seen` settled for
    /// its key), while it holds the answer back: downstream has acted, the host does not
    /// know yet.
    OnSettled {
        seen: u64,
    },
}

struct Campaign {
    invoices: usize,
    honours_keys: bool,
    /// The connector may ask the ERP whether a key was booked (`reconcile`).
    lookup: bool,
}

struct Findings {
    states: BTreeMap<String, InvoiceState>,
    kill_points: BTreeMap<&'static str, u32>,
    erp: tollgate_tests::erp::Stats,
    ledger: Arc<dyn Ledger>,
    seed: u64,
    /// Holds the test's ledger (its PostgreSQL schema) until the findings are read.
    _env: Env,
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
        "crash campaign: {} invoices, keys honoured: {}, lookup: {}, seed {seed} (TOLLGATE_CRASH_SEED)",
        campaign.invoices, campaign.honours_keys, campaign.lookup
    );
    let mut rng = StdRng::seed_from_u64(seed);
    let erp = Erp::start(campaign.honours_keys).unwrap();
    // Widen the windows between dispatch and booking and between booking and the answer,
    // as a real ERP would.
    erp.inject(Faults {
        delay_ms: 10,
        delay_after_booking_ms: 20,
        ..Faults::default()
    });
    let env = Env::new();
    let config = if campaign.lookup {
        // A short timeout: a probe waits it out (plus the margin) after the last send.
        format!(
            "{}\n[connectors.\"erp.post-invoice\".reconcile]\nurl = \"http://{}/invoices/by-key/{{key}}\"\nmargin_ms = 200\n",
            erp_config(&erp.invoices_url(), campaign.honours_keys, 1_000),
            erp.addr()
        )
    } else {
        erp_config(&erp.invoices_url(), campaign.honours_keys, 10_000)
    };
    let config = env.config_file(&config);
    let mut states: BTreeMap<String, InvoiceState> = (0..campaign.invoices)
        .map(|i| (format!("INV-K{i:04}"), InvoiceState::default()))
        .collect();
    let mut kill_points: BTreeMap<&'static str, u32> = BTreeMap::new();
    let mut active: Vec<Active> = Vec::new();
    let mut resumable_exits = 0u32;
    let mut lifetime_ms = 150.0_f64; // running estimate of a whole process's life
    let started = Instant::now();
    let reader = env.open_ledger();

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
            let name = format!("crash-{id}-{}", state.tries);
            let mut cmd = Command::new(tollgate_bin());
            cmd.arg("--config")
                .arg(&config)
                .arg("--ledger")
                .arg(env.ledger_named(&name))
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
            let before = seen(&erp, &*reader, &id);
            let spawned = Instant::now();
            let child = cmd
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            let kill = if state.tries > KILLED_TRIES || !rng.random_bool(0.6) {
                Kill::Never
            } else if rng.random_bool(0.3) {
                Kill::OnArrival {
                    seen: before.arrivals,
                }
            } else if rng.random_bool(0.45) {
                Kill::OnSettled {
                    seen: before.settled,
                }
            } else {
                Kill::At(
                    Instant::now()
                        + Duration::from_micros(rng.random_range(0..(lifetime_ms * 1200.0) as u64)),
                )
            };
            active.push(Active {
                id,
                name,
                child,
                spawned,
                kill,
                before,
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
                // Resumable: what an agent is told to do, it does. A loaded machine can make a
                // send miss its start-within window, which leaves the effect dispatched but
                // unsent for the resume to probe.
                let resumable = status.code() == Some(4)
                    && report.as_ref().is_some_and(|r| r["status"] == "running");
                if matches!(status.code(), Some(0 | 5)) {
                    state.report = report;
                }
                match status.code() {
                    Some(0) => {
                        state.outcome = Some(RunStatus::Succeeded);
                        // Spawn to exit, as this loop sees it: kills aim across that span.
                        lifetime_ms =
                            0.8 * lifetime_ms + 0.2 * a.spawned.elapsed().as_secs_f64() * 1000.0;
                    }
                    Some(5) => state.outcome = Some(RunStatus::InDoubt),
                    Some(4) if resumable => resumable_exits += 1,
                    code => panic!(
                        "{} exited {code:?} (seed {seed}): {}{}",
                        a.id,
                        String::from_utf8_lossy(&output.stderr),
                        String::from_utf8_lossy(&output.stdout)
                    ),
                }
                continue;
            }
            let now = erp_seen(&erp, &a.id);
            let due = match a.kill {
                Kill::Never => false,
                Kill::At(t) => Instant::now() >= t,
                Kill::OnArrival { seen } => now.0 > seen,
                Kill::OnSettled { seen } => now.1 > seen,
            };
            if due {
                let mut a = active.swap_remove(i);
                // What the ERP had seen before the signal: anything it sees later may be a
                // request still in the socket buffers of the dead process, not a kill
                // after it.
                let at_kill = erp_seen(&erp, &a.id);
                a.child.kill().unwrap(); // SIGKILL
                a.child.wait().unwrap();
                env.await_settled(&a.name);
                let point = classify_kill(
                    &*reader,
                    &a.id,
                    states.get_mut(&a.id).unwrap(),
                    &a.before,
                    at_kill,
                );
                *kill_points.entry(point).or_default() += 1;
                continue;
            }
            i += 1;
        }
    }
    let erp_stats = erp.stats();
    println!(
        "finished in {:.1}s; {} kills; {resumable_exits} resumable exits resumed; ERP: {} requests, {} postings, {} replays",
        started.elapsed().as_secs_f64(),
        kill_points.values().sum::<u32>(),
        erp_stats.requests,
        erp_stats.postings,
        erp_stats.replays,
    );
    println!("kills per window (seed {seed}):");
    for window in [
        BEFORE_RUN,
        BEFORE_CHECKPOINT,
        BEFORE_INTENT,
        BEFORE_TAKEOVER,
        BEFORE_ARRIVAL,
        BEFORE_BOOKING,
        BEFORE_OUTCOME,
        BEFORE_RUN_END,
        AFTER_RUN_END,
        AFTER_FAILED,
        AFTER_IN_DOUBT,
    ] {
        println!(
            "  {:>4}  {window}",
            kill_points.get(window).copied().unwrap_or(0)
        );
    }
    assert_eq!(
        erp_stats.without_key, 0,
        "every request carries its Idempotency-Key, which the kill points are read from"
    );
    Findings {
        states,
        kill_points,
        erp: erp_stats,
        ledger: reader,
        seed,
        _env: env,
    }
}

/// Requests the ERP has received for an invoice's key, and of those, the ones it booked or
/// replayed.
fn erp_seen(erp: &Erp, id: &str) -> (u64, u64) {
    let stats = erp.stats();
    let key = format!("post-invoice:{id}");
    (
        stats.requests_by_key.get(&key).copied().unwrap_or(0),
        stats.settled_by_key.get(&key).copied().unwrap_or(0),
    )
}

fn seen(erp: &Erp, ledger: &dyn Ledger, id: &str) -> Seen {
    let (arrivals, settled) = erp_seen(erp, id);
    let dispatches = ledger
        .effect("erp.post-invoice", &format!("post-invoice:{id}"))
        .unwrap()
        .map(|e| e.dispatches);
    Seen {
        arrivals,
        settled,
        dispatches,
    }
}

/// Where did the kill land? `before` is what the ERP and the ledger held when the process
/// was spawned, `at_kill` what the ERP had seen (arrivals, settled) just before the signal;
/// the ledger is read after the process died, so it holds everything the process recorded.
fn classify_kill(
    ledger: &dyn Ledger,
    id: &str,
    state: &mut InvoiceState,
    before: &Seen,
    at_kill: (u64, u64),
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
        return BEFORE_RUN;
    };
    let key = format!("post-invoice:{id}");
    let checkpoints = ledger.checkpoints(run_id).unwrap();
    let Some(effect) = ledger.effect("erp.post-invoice", &key).unwrap() else {
        return if checkpoints.is_empty() {
            BEFORE_CHECKPOINT
        } else {
            BEFORE_INTENT
        };
    };
    match effect.status {
        EffectStatus::Pending => {
            // Every claim and take-over marks a dispatch in the same commit: a pending effect
            // whose count did not move was left by an earlier attempt, not this one.
            if before.dispatches.is_some_and(|d| effect.dispatches <= d) {
                return BEFORE_TAKEOVER;
            }
            state.killed_while_pending = true;
            let (arrivals, settled) = at_kill;
            if settled > before.settled {
                state.killed_before_outcome = true;
                BEFORE_OUTCOME
            } else if arrivals > before.arrivals {
                BEFORE_BOOKING
            } else {
                BEFORE_ARRIVAL
            }
        }
        EffectStatus::Succeeded => match ledger.run(run_id).unwrap().map(|r| r.status) {
            Some(RunStatus::Running) => BEFORE_RUN_END,
            _ => AFTER_RUN_END,
        },
        EffectStatus::Failed => AFTER_FAILED,
        EffectStatus::InDoubt => AFTER_IN_DOUBT,
    }
}

fn kills(f: &Findings, window: &str) -> u32 {
    f.kill_points.get(window).copied().unwrap_or(0)
}

/// Fails unless at least `min` kills landed in `window`.
fn assert_kills_at_least(f: &Findings, window: &str, min: u32) {
    let n = kills(f, window);
    assert!(
        n >= min,
        "{n} kills landed {window}, fewer than {min} (seed {}): {:?}",
        f.seed,
        f.kill_points
    );
}

/// The run's report as the CLI printed it on exit: its run, status and the posting the ERP
/// returned, matching what the ledger recorded.
fn assert_reported(f: &Findings, id: &str, state: &InvoiceState, status: &str) {
    let report = state
        .report
        .as_ref()
        .unwrap_or_else(|| panic!("{id}: the CLI printed no JSON report on its final exit"));
    let run_id = state.run_id.as_deref().unwrap();
    assert_eq!(report["run_id"], run_id, "{id}: {report}");
    assert_eq!(report["status"], status, "{id}: {report}");
    if status == "succeeded" {
        let effect = f
            .ledger
            .effect("erp.post-invoice", &format!("post-invoice:{id}"))
            .unwrap()
            .unwrap();
        let recorded: serde_json::Value =
            serde_json::from_str(effect.response.as_deref().unwrap()).unwrap();
        assert_eq!(
            report["result"]["Ok"]["erp"], recorded,
            "{id}: the caller was told the outcome the ledger holds"
        );
    }
}

#[test]
fn kill9_campaign_with_key_honouring_downstream_posts_every_invoice_exactly_once() {
    let f = run_campaign(&Campaign {
        invoices: 200,
        honours_keys: true,
        lookup: false,
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
        assert_eq!(state.outcome, Some(RunStatus::Succeeded), "{id}");
        assert_reported(&f, id, state, "succeeded");
        if state.killed_before_outcome {
            // Booked, then killed before the outcome was recorded: the run could only end
            // by sending again under the same key and being answered from the ERP's store.
            assert!(
                f.erp.requests_by_invoice[id] >= 2,
                "{id} was killed after booking and never re-sent: {:?}",
                f.erp.requests_by_invoice.get(id)
            );
        }
    }
    // The claim rests on kills after the ERP booked and before the outcome was recorded:
    // there, only the re-send under the same key, answered from the ERP's idempotency
    // store, keeps the invoice from being booked twice.
    assert_kills_at_least(&f, BEFORE_OUTCOME, 20);
    assert_kills_at_least(&f, BEFORE_BOOKING, 20);
    let resent_after_booking = f
        .states
        .values()
        .filter(|s| s.killed_before_outcome)
        .count() as u64;
    assert!(
        f.erp.replays >= resent_after_booking,
        "{resent_after_booking} invoices were killed after booking but the ERP replayed only {}",
        f.erp.replays
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
        invoices: 300,
        honours_keys: false,
        lookup: false,
    });
    // Sends, not postings: a request the ERP received but had not booked when its sender
    // died still counts, so a host that re-sent it would fail here.
    let resent: Vec<_> = f
        .erp
        .requests_by_invoice
        .iter()
        .filter(|(_, n)| **n > 1)
        .collect();
    assert!(resent.is_empty(), "sent twice: {resent:?}");
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
            assert_reported(&f, id, state, "in_doubt");
        } else {
            assert_eq!(state.outcome, Some(RunStatus::Succeeded), "{id}");
            assert_eq!(status, Some(EffectStatus::Succeeded), "{id}");
            assert_eq!(f.erp.by_invoice.get(id), Some(&1), "{id}");
            assert_eq!(f.erp.requests_by_invoice.get(id), Some(&1), "{id}");
            assert_reported(&f, id, state, "succeeded");
        }
    }
    // A re-send after these kills would reach the ERP a second time: after the request
    // arrived (booked or not yet), and after the ERP booked it.
    assert_kills_at_least(&f, BEFORE_BOOKING, 20);
    assert_kills_at_least(&f, BEFORE_OUTCOME, 20);
    assert!(
        f.kill_points.values().sum::<u32>() >= 100,
        "too few kills to mean much: {:?}",
        f.kill_points
    );
}

/// The same kills against an ERP that ignores keys but can look a booking up by key: every
/// effect whose outcome a kill left unknown is settled by asking the ERP, none is booked
/// twice, and no human is asked.
#[test]
fn kill9_campaign_without_key_support_but_with_a_lookup_settles_every_unknown_outcome() {
    let f = run_campaign(&Campaign {
        invoices: 150,
        honours_keys: false,
        lookup: true,
    });
    let duplicates: Vec<_> = f.erp.by_invoice.iter().filter(|(_, n)| **n > 1).collect();
    assert!(duplicates.is_empty(), "executed twice: {duplicates:?}");
    let open = f
        .ledger
        .escalations(&tollgate::ledger::EscalationFilter {
            status: Some(tollgate::ledger::EscalationStatus::Open),
            run_id: None,
            limit: usize::MAX,
        })
        .unwrap();
    assert!(open.is_empty(), "escalations left for a human: {open:?}");
    let mut probed = 0;
    for (id, state) in &f.states {
        assert_eq!(
            f.erp.by_invoice.get(id),
            Some(&1),
            "{id} posted exactly once"
        );
        assert_eq!(state.outcome, Some(RunStatus::Succeeded), "{id}");
        let effect = f
            .ledger
            .effect("erp.post-invoice", &format!("post-invoice:{id}"))
            .unwrap()
            .unwrap();
        assert_eq!(effect.status, EffectStatus::Succeeded, "{id}");
        assert_reported(&f, id, state, "succeeded");
        let run_id = state.run_id.as_deref().unwrap();
        let probes = f
            .ledger
            .journal_entries(run_id)
            .unwrap()
            .into_iter()
            .filter(|e| e.event == "effect.probed")
            .count();
        if state.killed_while_pending {
            assert!(probes >= 1, "{id}: its unknown outcome was probed");
        }
        probed += probes;
    }
    // The claim rests on kills after the ERP booked and before the outcome was recorded:
    // only the lookup tells those from kills before booking.
    assert_kills_at_least(&f, BEFORE_OUTCOME, 10);
    assert_kills_at_least(&f, BEFORE_BOOKING, 10);
    // Every journaled probe asked the ERP (a probe killed before its answer was recorded
    // asked too, and is asked again by the next resume).
    assert!(probed > 0, "no probe ran");
    assert!(
        f.erp.lookups as usize >= probed,
        "{probed} probes journaled, {} lookups",
        f.erp.lookups
    );
    println!(
        "{probed} probes, {} lookups found a booking",
        f.erp.lookups_found
    );
}
