//! A fleet: three `tollgate serve` nodes on one ledger, agents calling any of them with
//! idempotency keys and retrying on another node when one fails them, while one node is
//! killed with `kill -9` (and restarted) and another is sent SIGTERM with calls in flight;
//! a killed node's run resumed by the other within a lease and an interval; split brain. Re-run on
//! PostgreSQL by the suite driver, the fleet's shared backend.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::sync::Semaphore;
use tollgate::ledger::{EscalationFilter, EscalationStatus, RunFilter, RunStatus};
use tollgate::server::mcp::{IDEMPOTENCY_KEY_META, RUN_ID_META, STATUS_META};
use tollgate_tests::erp::{Erp, Faults};
use tollgate_tests::invoice;
use tollgate_tests::plugins::INVOICE;

use crate::harness::{Env, erp_config};
use crate::serve::{Node, mcp_call};

const INVOICES: usize = 300;
const CLIENTS: usize = 24;

/// How an agent's call ended, after every retry it needed.
#[derive(Debug, Clone, PartialEq)]
enum Answer {
    Succeeded {
        run_id: String,
    },
    /// The run stopped for a human: `status` is its run status.
    Stopped {
        run_id: String,
        status: String,
    },
}

/// One `tools/call` of `invoice` with `key`, as a client makes it over streamable HTTP;
/// `Err` for a node that is gone or answers nothing usable.
async fn call(client: &reqwest::Client, base: &str, id: &str, key: &str) -> Result<Value, String> {
    let arguments: Value = serde_json::from_str(&invoice(id)).unwrap();
    let meta = json!({ IDEMPOTENCY_KEY_META: key });
    mcp_call(client, base, "invoice", arguments, meta).await
}

/// The nodes' addresses as agents see them; a restarted node takes its slot.
type Bases = Arc<RwLock<Vec<String>>>;

/// An agent's persistence: invoice `index`'s call under its key, first to node `first` (an
/// index into `bases`), then on the next node until an answer that is not transient (a node
/// gone, a call cut by a drain). Returns the answer and the node that gave it.
async fn call_until_answered(bases: &Bases, index: usize, first: usize) -> (Answer, usize) {
    let id = format!("INV-F{index:03}");
    let key = format!("fleet-{id}");
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    for attempt in 0.. {
        assert!(Instant::now() < deadline, "{id}: no answer in time");
        let slot = (first + attempt) % 3;
        let base = bases.read().unwrap()[slot].clone();
        if let Ok(result) = call(&client, &base, &id, &key).await {
            let run_id = result["_meta"][RUN_ID_META].as_str().map(str::to_owned);
            let status = result["_meta"][STATUS_META].as_str().map(str::to_owned);
            match (run_id, status) {
                (Some(run_id), Some(status)) if status == "succeeded" => {
                    return (Answer::Succeeded { run_id }, slot);
                }
                (Some(run_id), Some(status)) if status != "running" => {
                    return (Answer::Stopped { run_id, status }, slot);
                }
                _ => {} // transient: try again
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    unreachable!()
}

/// What a campaign left: each invoice's answer, and the ERP's view.
struct Outcome {
    answers: BTreeMap<String, Answer>,
    erp: Erp,
    env: Env,
    /// The node killed with `kill -9`.
    killed: String,
}

/// Three nodes; `INVOICES` keyed calls from `CLIENTS` agents at once, each to a random node
/// and repeated on another. Once a third of the calls are answered node A is killed
/// (`kill -9`) and restarted; once two thirds are, node B is sent SIGTERM with a drain of
/// 0 ms, so what it runs is cut and released. Each signal lands while its node waits for
/// downstream's answer to a request downstream has acted on.
async fn campaign(honours_keys: bool) -> Outcome {
    let env = Env::new();
    let erp = Erp::start(honours_keys).unwrap();
    // Downstream acts, then takes 100 ms to say so: the window a kill lands in.
    erp.inject(Faults {
        delay_after_booking_ms: 100,
        ..Faults::default()
    });
    let config = env.config_file(&format!(
        "lease_ttl_ms = 2000\n{}component = {INVOICE:?}\n",
        erp_config(&erp.invoices_url(), honours_keys, 30_000)
    ));
    let fast = ["--recovery-interval-ms", "100", "--drain-timeout-ms", "0"];
    let mut a = Node::start(&env, &config, &fast);
    let mut b = Node::start(&env, &config, &fast);
    let c = Node::start(&env, &config, &fast);
    let bases: Bases = Arc::new(RwLock::new(vec![
        a.base.clone(),
        b.base.clone(),
        c.base.clone(),
    ]));

    let answered = Arc::new(AtomicUsize::new(0));
    let gate = Arc::new(Semaphore::new(CLIENTS));
    let mut agents = Vec::new();
    for index in 0..INVOICES {
        let (bases, answered, gate) = (bases.clone(), answered.clone(), gate.clone());
        agents.push(tokio::spawn(async move {
            let _turn = gate.acquire_owned().await.unwrap();
            let first = rand::random_range(0..3);
            let (answer, slot) = call_until_answered(&bases, index, first).await;
            // The agent repeats the call on another node (its answer got lost, say): it
            // gets the same run's answer, never a second run.
            let (again, _) = call_until_answered(&bases, index, slot + 1).await;
            assert_eq!(
                again, answer,
                "INV-F{index:03}: the repeat found another run"
            );
            answered.fetch_add(1, Ordering::SeqCst);
            answer
        }));
    }
    let reach = |n: usize| {
        let answered = answered.clone();
        async move {
            let started = Instant::now();
            while answered.load(Ordering::SeqCst) < n {
                assert!(
                    started.elapsed() < Duration::from_secs(120),
                    "stalled at {n}"
                );
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    };
    reach(INVOICES / 3).await;
    // Killed the moment it holds a run whose request downstream booked and has not yet
    // answered: the window a retry must not send again.
    let ledger = env.open_ledger();
    wait_for("A never held a booked, unanswered request", || {
        booked_unanswered(&*ledger, &erp, &a.id)
    })
    .await;
    a.child.kill().unwrap(); // SIGKILL, with calls in flight
    a.child.wait().unwrap();
    // Restarted under a new identity, in the killed node's slot.
    let restarted = Node::start(&env, &config, &fast);
    bases.write().unwrap()[0] = restarted.base.clone();
    reach(2 * INVOICES / 3).await;
    // Signalled the moment it holds such a run too, with downstream slowed so the signal
    // surely lands before that answer (a run merely held may end before the signal does):
    // the drain cuts an attempt in flight. Requests booked at the old pace are answered
    // before the wait begins.
    erp.inject(Faults {
        delay_after_booking_ms: 1000,
        ..Faults::default()
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    wait_for("B never held a booked, unanswered request", || {
        booked_unanswered(&*ledger, &erp, &b.id)
    })
    .await;
    b.signal("-TERM");
    erp.inject(Faults {
        delay_after_booking_ms: 100,
        ..Faults::default()
    });

    let mut answers = BTreeMap::new();
    for (index, agent) in agents.into_iter().enumerate() {
        answers.insert(format!("INV-F{index:03}"), agent.await.unwrap());
    }
    // B drained (cutting and releasing what it ran) and exited cleanly, saying so.
    let status = b.exited(Duration::from_secs(30)).await;
    assert_eq!(status.code(), Some(0), "B exits cleanly");
    let nodes = env.open_ledger().nodes().unwrap();
    let b_row = nodes.iter().find(|n| n.node_id == b.id).unwrap();
    assert!(b_row.stopped_at.is_some(), "B recorded that it stopped");
    let a_row = nodes.iter().find(|n| n.node_id == a.id).unwrap();
    assert_eq!(a_row.stopped_at, None, "A was killed: it could not say so");
    assert!(nodes.iter().any(|n| n.node_id == restarted.id));
    drop((c, restarted));
    Outcome {
        answers,
        erp,
        env,
        killed: a.id.clone(),
    }
}

/// Whether `node` holds a running attempt whose invoice the ERP has booked while the ledger
/// still has its effect pending: the answer is on its way.
fn booked_unanswered(ledger: &dyn tollgate::ledger::Ledger, erp: &Erp, node: &str) -> bool {
    let settled = erp.stats().settled_by_key;
    ledger
        .holdings(node)
        .unwrap()
        .attempts
        .iter()
        .any(|attempt| {
            let Some(run) = ledger.run(&attempt.run_id).unwrap() else {
                return false;
            };
            let input: Value = serde_json::from_str(&run.input).unwrap();
            let key = format!("post-invoice:{}", input["invoice_id"].as_str().unwrap());
            settled.contains_key(&key)
                && ledger
                    .effect("erp.post-invoice", &key)
                    .unwrap()
                    .is_some_and(|e| e.status == tollgate::ledger::EffectStatus::Pending)
        })
}

/// The ledger's runs, by run id, with the journal events of each.
fn ledger_runs(env: &Env) -> BTreeMap<String, (RunStatus, Vec<String>)> {
    let ledger = env.open_ledger();
    let runs = ledger
        .runs(&RunFilter {
            status: None,
            limit: 10 * INVOICES,
        })
        .unwrap();
    runs.into_iter()
        .map(|run| {
            let events = ledger
                .journal_entries(&run.run_id)
                .unwrap()
                .into_iter()
                .map(|e| e.event)
                .collect();
            (run.run_id, (run.status, events))
        })
        .collect()
}

fn count_event(runs: &BTreeMap<String, (RunStatus, Vec<String>)>, event: &str) -> usize {
    runs.values()
        .filter(|(_, events)| events.iter().any(|e| e == event))
        .count()
}

/// With a downstream that honours keys, every invoice is booked exactly once and answered
/// as succeeded, with one run per call key, though a node died and another drained under
/// the calls: the runs they held were resumed by the surviving nodes.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_fleet_losing_nodes_under_keyed_calls_books_every_invoice_exactly_once() {
    let Outcome {
        answers,
        erp,
        env,
        killed,
    } = campaign(true).await;
    let stats = erp.stats();
    for (id, answer) in &answers {
        assert!(
            matches!(answer, Answer::Succeeded { .. }),
            "{id}: {answer:?}"
        );
        assert_eq!(stats.by_invoice.get(id), Some(&1), "{id} booked once");
    }
    let runs = ledger_runs(&env);
    assert_eq!(runs.len(), INVOICES, "one run per call key");
    for answer in answers.values() {
        let Answer::Succeeded { run_id } = answer else {
            unreachable!()
        };
        assert_eq!(runs[run_id].0, RunStatus::Succeeded);
    }
    // The kill landed on attempts in flight (they ended `crashed` when another node took
    // their run over), and the drain released others; the fleet finished them all.
    let ledger = env.open_ledger();
    let crashed =
        runs.keys()
            .filter(|run_id| {
                ledger.attempts(run_id).unwrap().iter().any(|a| {
                    a.holder == killed && a.status == tollgate::ledger::AttemptStatus::Crashed
                })
            })
            .count();
    let released = count_event(&runs, "attempt.released");
    eprintln!(
        "fleet: {crashed} runs taken over from the killed node, {released} released by the drain"
    );
    assert!(crashed >= 1, "the kill hit no attempt in flight");
    assert!(released >= 1, "the drain released nothing");
}

/// With a downstream that ignores keys, a call whose node died after downstream acted is
/// never sent again: its run stops as in doubt for a human. Nothing is booked twice, every
/// other invoice is booked once, and each call's answer says which it was.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_fleet_losing_nodes_over_a_keyless_downstream_books_nothing_twice() {
    let Outcome {
        answers, erp, env, ..
    } = campaign(false).await;
    let stats = erp.stats();
    let ledger = env.open_ledger();
    let runs = ledger_runs(&env);
    assert_eq!(runs.len(), INVOICES, "one run per call key");
    let mut stopped = 0;
    for (id, answer) in &answers {
        let booked = stats.by_invoice.get(id).copied().unwrap_or(0);
        assert!(booked <= 1, "{id} booked {booked} times");
        let sent = stats.requests_by_invoice.get(id).copied().unwrap_or(0);
        assert!(sent <= 1, "{id} sent {sent} times");
        match answer {
            Answer::Succeeded { run_id } => {
                assert_eq!(booked, 1, "{id}");
                assert_eq!(runs[run_id].0, RunStatus::Succeeded);
            }
            Answer::Stopped { run_id, status } => {
                stopped += 1;
                assert_eq!(status, "in_doubt", "{id}");
                assert_eq!(runs[run_id].0, RunStatus::InDoubt, "{id}");
                let effect = ledger
                    .effect("erp.post-invoice", &format!("post-invoice:{id}"))
                    .unwrap()
                    .unwrap();
                assert_eq!(
                    effect.status,
                    tollgate::ledger::EffectStatus::InDoubt,
                    "{id}"
                );
                let open = ledger
                    .escalations(&EscalationFilter {
                        status: Some(EscalationStatus::Open),
                        run_id: Some(run_id.clone()),
                        limit: 10,
                    })
                    .unwrap();
                assert_eq!(open.len(), 1, "{id}: {open:?}");
                assert_eq!(
                    open[0].reason,
                    tollgate::ledger::EscalationReason::InDoubt,
                    "{id}"
                );
            }
        }
    }
    eprintln!("fleet: {stopped} of {INVOICES} runs stopped in doubt");
    assert!(stopped >= 1, "no kill landed after downstream acted");
}

async fn wait_for(what: &str, mut ready: impl FnMut() -> bool) {
    let started = Instant::now();
    while !ready() {
        assert!(started.elapsed() < Duration::from_secs(60), "{what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Split brain: node A is frozen (SIGSTOP) while its request waits at the ERP; its lease and
/// lock lapse, node B takes the run over with the next fence and books the invoice. When A's
/// stale request comes to book, the fence-checking ERP refuses it; when A wakes (SIGCONT),
/// the ledger refuses whatever it tries to record, so the run keeps B's outcome.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_node_that_wakes_after_its_run_was_taken_over_is_fenced_out() {
    let env = Env::new();
    let erp = Erp::start(true).unwrap();
    erp.inject(Faults {
        // B must take the run over (a lease and the lock's TTL, 1 s each) before A's
        // request comes to book: ample room on a loaded machine.
        delay_ms: 6_000,
        refuse_stale_fences: true,
        ..Faults::default()
    });
    let config = env.config_file(&format!(
        "lease_ttl_ms = 1000\n{}component = {INVOICE:?}\n\
         [tools.invoice.lock]\nkey = \"invoice:{{invoice_id}}\"\nttl_ms = 1000\nwait_ms = 20000\n",
        erp_config(&erp.invoices_url(), true, 30_000)
    ));
    let fast = ["--recovery-interval-ms", "100"];
    let a = Node::start(&env, &config, &fast);
    let b = Node::start(&env, &config, &fast);
    let key = "split-INV-SPLIT";
    let base_a = a.base.clone();
    let first =
        tokio::spawn(async move { call(&reqwest::Client::new(), &base_a, "INV-SPLIT", key).await });
    wait_for("A's request never arrived", || erp.stats().requests == 1).await;
    a.signal("-STOP");
    wait_for("B never took the run over", || erp.stats().requests == 2).await;
    let ledger = env.open_ledger();
    let run_id = ledger.call_key(key).unwrap().unwrap().run_id;
    wait_for("B's attempt never ended", || {
        ledger.run(&run_id).unwrap().unwrap().status != RunStatus::Running
    })
    .await;
    a.signal("-CONT");
    // A's own answer says it was superseded, not that a resume is needed.
    let answer = first.await.unwrap().expect("A answers once it wakes");
    let text = answer["content"][0]["text"].as_str().unwrap_or_default();
    assert_eq!(answer["isError"], true, "{answer}");
    assert!(text.contains("this attempt was superseded"), "{text}");
    assert!(!text.contains("tollgate resume"), "{text}");

    let stats = erp.stats();
    assert_eq!(stats.fences, [1, 2], "B's fence is the larger");
    assert_eq!(stats.stale_fences, 1, "A's stale request was refused");
    assert_eq!(stats.by_invoice.get("INV-SPLIT"), Some(&1), "booked once");
    let run = ledger.run(&run_id).unwrap().unwrap();
    assert_eq!(run.status, RunStatus::Succeeded);
    let attempts = ledger.attempts(&run_id).unwrap();
    assert_eq!(attempts.len(), 2, "{attempts:?}");
    assert_eq!(
        (attempts[0].holder.as_str(), attempts[0].status),
        (a.id.as_str(), tollgate::ledger::AttemptStatus::Crashed)
    );
    assert_eq!(
        (attempts[1].holder.as_str(), attempts[1].status),
        (b.id.as_str(), tollgate::ledger::AttemptStatus::Succeeded)
    );
    let effect = ledger
        .effect("erp.post-invoice", "post-invoice:INV-SPLIT")
        .unwrap()
        .unwrap();
    assert_eq!(
        (effect.attempt, effect.status),
        (2, tollgate::ledger::EffectStatus::Succeeded),
        "the effect keeps B's outcome"
    );
    let lock = ledger.lock("invoice:INV-SPLIT").unwrap().unwrap();
    assert_eq!((lock.fence, lock.released), (2, true));

    // The agent repeats its call on B and gets B's result; A is alive again and holds nothing.
    let repeat = call(&reqwest::Client::new(), &b.base, "INV-SPLIT", key)
        .await
        .unwrap();
    assert_eq!(repeat["_meta"][STATUS_META], "succeeded", "{repeat}");
    assert_eq!(repeat["_meta"][RUN_ID_META], run_id.as_str());
    let nodes = tollgate::ledger::Ledger::nodes(&*ledger).unwrap();
    let a_row = nodes.iter().find(|n| n.node_id == a.id).unwrap();
    assert_eq!(a_row.stopped_at, None);
    assert!(
        ledger.holdings(&a.id).unwrap().attempts.is_empty(),
        "A holds nothing"
    );
}

/// Recovery in isolation: node A holds a run whose request the ERP booked and holds; A is
/// killed. Node B, already running, resumes it once A's lease lapses: by the ledger's own
/// clock, within one recovery interval of the lapse (plus room for a loaded machine, well
/// under another lease), and the ERP books the invoice once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_nodes_run_is_resumed_by_another_within_its_lease_and_an_interval() {
    const LEASE_MS: i64 = 4_000;
    const INTERVAL_MS: i64 = 100;
    let env = Env::new();
    let erp = Erp::start(true).unwrap();
    erp.inject(Faults {
        timeout_after_success: 1,
        hold_ms: 60_000,
        ..Faults::default()
    });
    let config = env.config_file(&format!(
        "lease_ttl_ms = {LEASE_MS}\n{}component = {INVOICE:?}\n",
        erp_config(&erp.invoices_url(), true, 120_000)
    ));
    let interval = INTERVAL_MS.to_string();
    let fast = ["--recovery-interval-ms", interval.as_str()];
    let mut a = Node::start(&env, &config, &fast);
    let b = Node::start(&env, &config, &fast);
    let base_a = a.base.clone();
    let key = "alone-INV-ALONE";
    let first =
        tokio::spawn(async move { call(&reqwest::Client::new(), &base_a, "INV-ALONE", key).await });
    wait_for("A's request never arrived", || erp.stats().requests == 1).await;
    a.child.kill().unwrap();
    a.child.wait().unwrap();
    assert!(first.await.unwrap().is_err(), "A died without answering");

    let ledger = env.open_ledger();
    let run_id = ledger.call_key(key).unwrap().unwrap().run_id;
    wait_for("B never finished the run", || {
        ledger.run(&run_id).unwrap().unwrap().status != RunStatus::Running
    })
    .await;
    assert_eq!(
        ledger.run(&run_id).unwrap().unwrap().status,
        RunStatus::Succeeded
    );
    let attempts = ledger.attempts(&run_id).unwrap();
    assert_eq!(attempts.len(), 2, "{attempts:?}");
    assert_eq!(attempts[0].holder, a.id);
    assert_eq!(attempts[1].holder, b.id);
    let recovered = ledger
        .journal_entries(&run_id)
        .unwrap()
        .into_iter()
        .find(|e| e.event == "run.recovered")
        .expect("B journaled the recovery");
    let lapsed = attempts[0].lease_until;
    let late = recovered.at - lapsed;
    eprintln!("fleet: resumed {late} ms after the lease lapsed");
    assert!(late >= 0, "resumed before the lease lapsed: {late} ms");
    assert!(
        late <= INTERVAL_MS + 1_000,
        "resumed {late} ms after the lease lapsed, past one {INTERVAL_MS} ms interval"
    );
    assert_eq!(erp.stats().postings, 1, "booked once, replayed to B");
}

/// An approval asked through one node is decided by two approvers at once from two other
/// processes on the ledger: one decision commits and resumes the run, which posts once; the
/// other is told who decided; and the agent's repeat on another node gets the run's result.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approval_asked_on_one_node_is_settled_once_from_any_process_of_the_fleet() {
    let erp = Erp::start(true).unwrap();
    let env = Env::new();
    let config = env.config_file(&format!(
        "{}component = {INVOICE:?}\n[tools.invoice.approval]\n\"erp.post-invoice\" = \"required\"\n",
        erp_config(&erp.invoices_url(), true, 5_000)
    ));
    let asked = Node::start(&env, &config, &[]);
    let answering = Node::start(&env, &config, &[]);
    let client = reqwest::Client::new();

    let paused = call(&client, &asked.base, "INV-AP", "approve-me")
        .await
        .unwrap();
    assert_eq!(paused["_meta"][STATUS_META], "waiting_approval", "{paused}");
    let run_id = paused["_meta"][RUN_ID_META].as_str().unwrap().to_owned();
    let ledger = env.open_ledger();
    let open = ledger
        .escalations(&EscalationFilter {
            status: Some(EscalationStatus::Open),
            run_id: Some(run_id.clone()),
            ..EscalationFilter::default()
        })
        .unwrap();
    let id = open[0].id.to_string();

    let approve = |by: &str| {
        crate::harness::tollgate_with(&env, &config)
            .args(["approve", &id, "--reason", "checked", "--by", by])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (alice, bob) = (approve("alice"), approve("bob"));
    let (alice, bob) = (
        alice.wait_with_output().unwrap(),
        bob.wait_with_output().unwrap(),
    );
    let (won, lost, winner) = match (alice.status.success(), bob.status.success()) {
        (true, false) => (alice, bob, "alice"),
        (false, true) => (bob, alice, "bob"),
        _ => panic!(
            "exactly one approval commits: alice {:?} {}, bob {:?} {}",
            alice.status,
            String::from_utf8_lossy(&alice.stderr),
            bob.status,
            String::from_utf8_lossy(&bob.stderr)
        ),
    };
    let lost = String::from_utf8_lossy(&lost.stderr);
    assert!(
        lost.contains("already resolved") && lost.contains(&format!("by {winner}")),
        "{lost}"
    );
    assert!(won.status.success());
    assert_eq!(erp.postings_for("INV-AP"), 1);
    assert_eq!(
        erp.stats().requests,
        1,
        "dispatched once, after the approval"
    );

    // The agent repeats its call on the other node: the run's result, not a second run.
    let repeated = call(&client, &answering.base, "INV-AP", "approve-me")
        .await
        .unwrap();
    assert_eq!(repeated["_meta"][STATUS_META], "succeeded", "{repeated}");
    assert_eq!(repeated["_meta"][RUN_ID_META], run_id.as_str());
    let resolved = ledger
        .journal_entries(&run_id)
        .unwrap()
        .into_iter()
        .filter(|e| e.event == "escalation.resolved")
        .count();
    assert_eq!(resolved, 1, "one decision journaled");
    assert_eq!(erp.stats().requests, 1);
}
