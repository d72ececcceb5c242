//! The ledger contract as a state machine: random op sequences checked against a reference model.
//!
//! Three simulated processes ("holders") each open their own handle on one ledger file, so
//! every op goes through a real, separate connection. They issue random ops over a small
//! universe of ids while a logical clock steps forward, so leases sometimes lapse. A plain
//! in-memory model of the rules the [`Op`] docs state (records.rs) predicts each op's answer,
//! compared by the shape of [`Applied`] and by [`LedgerError`] variant (never by message), and
//! after every step everything the read methods show must match the model, read through
//! another holder's handle. On a failure proptest shrinks to a short op sequence and prints it.
//!
//! Backend-generic: [`check_backend`] takes the function that opens one handle on a path. The
//! SQLite ledger is the one instance today; a PostgreSQL backend is one more `#[test]` calling
//! `check_backend` with its own opener.
//!
//! Circuit breakers are left out: their rules are pure functions with their own unit tests
//! (`tollgate_ledger::breaker`), and the backends only store what those return. The handles
//! take turns on one thread, so this checks the rules across handles, not concurrency: the
//! races have their own tests.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::Path;
use std::sync::Arc;

use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::select;
use proptest::test_runner::{TestError, TestRunner};
use tollgate_ledger::{
    Applied, Attempt, AttemptStatus, Claim, EffectRecord, EffectStatus, Escalation,
    EscalationFilter, EscalationReason, EscalationStatus, Ledger, LedgerError, LedgerOptions,
    LockRecord, Millis, NewEscalation, NewRun, Op, Resolution, RunFilter, RunStatus, SqliteLedger,
    payload_digest,
};

use crate::T0;

const HOLDERS: [&str; 3] = ["h1", "h2", "h3"];
const RUNS: [&str; 3] = ["r1", "r2", "r3"];
const KIND: &str = "http";
const EFFECT_KEYS: [&str; 2] = ["k1", "k2"];
const LOCK_KEYS: [&str; 2] = ["l1", "l2"];
const CALL_KEYS: [&str; 2] = ["c1", "c2"];
const CHECKPOINT_NAMES: [&str; 2] = ["a", "b"];
/// Longest generated sequence; long enough for take-overs of take-overs, short enough to read.
const MAX_STEPS: usize = 40;
/// An id no escalation of a test reaches: a test opens a few dozen at most.
const NO_SUCH_ESCALATION: i64 = 1 << 40;
/// The model's ids for new escalations start here, one per escalation, until the backend says
/// which ids it chose: the docs promise only that ids grow, not which values they take (a
/// Postgres sequence, unlike SQLite, skips the ids of rolled-back inserts).
const NEW_ID: i64 = i64::MIN;

/// An id the model made up for an escalation the backend has not answered for yet.
fn is_placeholder(id: i64) -> bool {
    id < NEW_ID + i64::from(u32::MAX)
}

#[test]
fn sqlite_ledger_follows_the_reference_model() {
    check_backend(|path| {
        let ledger =
            SqliteLedger::open(path, LedgerOptions::default()).expect("open the sqlite ledger");
        Arc::new(ledger)
    });
}

/// Runs random op sequences against the backend `open` makes (called once per holder, each
/// time on the same path) and panics with the shortest failing sequence proptest finds.
/// `PROPTEST_CASES` raises the case count for a longer soak.
pub fn check_backend(open: impl Fn(&Path) -> Arc<dyn Ledger>) {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(64);
    // No persistence: a regressions file would land in the source tree; the printed sequence
    // is the reproduction.
    let config = ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    };
    let mut runner = TestRunner::new(config);
    match runner.run(&steps(), |steps| run_case(&open, &steps)) {
        Ok(()) => {}
        Err(TestError::Fail(why, steps)) => {
            let listing: Vec<String> = steps
                .iter()
                .enumerate()
                .map(|(i, step)| format!("{i:>3}: {step:?}"))
                .collect();
            let listing = listing.join("\n");
            panic!("ledger and model disagree; shortest failing sequence:\n{listing}\n{why}");
        }
        Err(TestError::Abort(why)) => panic!("the model test gave up: {why}"),
    }
}

/// Plays `steps` against a fresh ledger file and the model side by side.
fn run_case(open: &impl Fn(&Path) -> Arc<dyn Ledger>, steps: &[Step]) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().map_err(|err| TestCaseError::fail(format!("temp dir: {err}")))?;
    let path = dir.path().join("ledger.db");
    let handles: Vec<Arc<dyn Ledger>> = HOLDERS.iter().map(|_| open(&path)).collect();
    let mut model = Model::default();
    let mut now = T0;
    for (index, step) in steps.iter().enumerate() {
        let (by, cmds) = match step {
            Step::Wait { secs } => {
                now += Millis::from(*secs) * 1_000;
                continue;
            }
            Step::Do { by, cmd } => (*by, std::slice::from_ref(cmd)),
            Step::Batch { by, cmds } => (*by, cmds.as_slice()),
        };
        let who = HOLDERS.iter().position(|h| *h == by).unwrap_or(0);
        let (ops, mut expected, mut next) = model.predict(by, cmds, now);
        let answer = handles[who].apply(ops.clone());
        let got = answer
            .as_ref()
            .map(|applied| applied.iter().map(summary).collect::<Vec<_>>())
            .map_err(kind);
        if let (Ok(expected), Ok(got)) = (&mut expected, &got) {
            next.adopt_new_ids(expected, got)
                .map_err(|why| TestCaseError::fail(format!("step {index}: {why}")))?;
        }
        if got != expected {
            let said = match &answer {
                Ok(_) => format!("{got:?}"),
                Err(error) => format!("Err({}: {error})", kind(error)),
            };
            let report = [
                format!("step {index} ({step:?}) at t+{}s", (now - T0) / 1_000),
                format!("sent:   {ops:?}"),
                format!("ledger: {said}"),
                format!("model:  {expected:?}"),
            ];
            return Err(TestCaseError::fail(report.join("\n  ")));
        }
        if expected.is_ok() {
            model = next;
        }
        // Read through another process's handle: what one connection committed, all must see.
        let reader = &handles[(who + 1) % handles.len()];
        let seen = read_world(reader.as_ref())
            .map_err(|err| TestCaseError::fail(format!("step {index}: reading back: {err}")))?;
        let differences = differences(&seen, &model.world());
        if !differences.is_empty() {
            return Err(TestCaseError::fail(format!(
                "after step {index} ({step:?}), read back through {}:\n  {}",
                HOLDERS[(who + 1) % handles.len()],
                differences.join("\n  ")
            )));
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// What the generator makes: steps of a test, each naming its ids from the small universe.

/// One step of a generated sequence.
#[derive(Clone)]
enum Step {
    /// The logical clock moves on, so leases may lapse.
    Wait { secs: u8 },
    /// One holder applies one op.
    Do { by: &'static str, cmd: Cmd },
    /// One holder applies several ops in one `apply`: all land or none.
    Batch { by: &'static str, cmds: Vec<Cmd> },
}

impl fmt::Debug for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Step::Wait { secs } => write!(f, "wait {secs}s"),
            Step::Do { by, cmd } => write!(f, "{by}: {cmd:?}"),
            Step::Batch { by, cmds } => write!(f, "{by}: batch {cmds:?}"),
        }
    }
}

/// An op in the universe's terms. Attempt numbers, fences and escalations may be named
/// relative to the model's state ("the latest attempt"), so the ops often hit live rows
/// instead of mostly missing; [`Model::resolve`] turns a `Cmd` into the concrete [`Op`].
/// Leases are seconds from now; 0 is a lease that has already lapsed.
#[derive(Debug, Clone)]
enum Cmd {
    CreateRun {
        run: &'static str,
    },
    BeginAttempt {
        run: &'static str,
        lease_s: u8,
        take_over: bool,
    },
    RenewLease {
        run: &'static str,
        attempt: Att,
        lease_s: u8,
    },
    EndAttempt {
        run: &'static str,
        attempt: Att,
        status: AttemptStatus,
    },
    EndRun {
        run: &'static str,
        status: RunStatus,
    },
    ParkRun {
        run: &'static str,
        status: RunStatus,
    },
    ReopenRun {
        run: &'static str,
    },
    ClaimEffect {
        key: &'static str,
        run: &'static str,
        attempt: Att,
    },
    MarkDispatched {
        key: &'static str,
        by: Actor,
    },
    RecordOutcome {
        key: &'static str,
        by: Actor,
        status: EffectStatus,
    },
    MarkInDoubt {
        key: &'static str,
        by: Actor,
    },
    TakeOverEffect {
        key: &'static str,
        expected: Expect,
        run: &'static str,
        attempt: Att,
    },
    AcquireLock {
        key: &'static str,
        run: &'static str,
        lease_s: u8,
    },
    RenewLock {
        key: &'static str,
        by: LockBy,
        lease_s: u8,
    },
    ReleaseLock {
        key: &'static str,
        by: LockBy,
    },
    OpenEscalation {
        run: &'static str,
        reason: EscalationReason,
    },
    ResolveEscalation {
        escalation: Esc,
        resolution: Resolution,
    },
    ClaimCallKey {
        key: &'static str,
        run: &'static str,
    },
    SaveCheckpoint {
        run: &'static str,
        attempt: Att,
        name: &'static str,
    },
}

/// Which attempt of the run an op names.
#[derive(Debug, Clone, Copy)]
enum Att {
    /// The run's newest attempt (0, which never exists, if it has none).
    Latest,
    No(u32),
}

/// The attempt acting on an effect.
#[derive(Debug, Clone, Copy)]
enum Actor {
    /// The effect's recorded owner (r1's attempt 1 if unclaimed), so that the ownership check
    /// passes often enough for the status rules behind it to be reached.
    Owner,
    Attempt(&'static str, Att),
}

/// Which escalation a resolution names.
#[derive(Debug, Clone, Copy)]
enum Esc {
    /// The one opened last (none: an id that does not exist).
    Newest,
    /// The n-th opened, from 0; past the end: an id that does not exist.
    Nth(usize),
}

/// Which run, with which fence, renews or releases a lock.
#[derive(Debug, Clone, Copy)]
enum LockBy {
    /// The run and fence on record (r1 and 1 if never taken), so that renewing and releasing
    /// reach the lock itself, released or not.
    Holder,
    /// This run, presenting the key's fence as it stands (1 if never taken).
    Run(&'static str),
    /// This run with this fence: usually a stale or made-up one.
    Fence(&'static str, i64),
}

/// What a take-over expects the effect row to show.
#[derive(Debug, Clone, Copy)]
enum Expect {
    /// Its owner and status as they stand: the compare-and-set should win.
    AsRecorded,
    Given {
        run: &'static str,
        attempt: u32,
        status: EffectStatus,
    },
}

/// A sequence that usually starts with the first runs created and the first one running: left
/// to chance, most ops would find no run or no attempt and only ever test `RunNotFound` and
/// `LeaseLost`. The shrinker tries the shorter starts first.
fn steps() -> impl Strategy<Value = Vec<Step>> {
    let create = |run| Step::Do {
        by: HOLDERS[0],
        cmd: Cmd::CreateRun { run },
    };
    let begin = Step::Do {
        by: HOLDERS[0],
        cmd: Cmd::BeginAttempt {
            run: RUNS[0],
            lease_s: 30,
            take_over: false,
        },
    };
    let start = prop_oneof![
        1 => Just(Vec::new()),
        1 => Just(vec![create(RUNS[0])]),
        2 => Just(vec![create(RUNS[0]), create(RUNS[1])]),
        4 => Just(vec![create(RUNS[0]), create(RUNS[1]), begin]),
    ];
    (start, vec(step(), 1..=MAX_STEPS - 3)).prop_map(|(mut start, rest)| {
        start.extend(rest);
        start
    })
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        3 => select(vec![10, 1, 20, 40]).prop_map(|secs| Step::Wait { secs }),
        24 => (holder(), cmd()).prop_map(|(by, cmd)| Step::Do { by, cmd }),
        2 => (holder(), vec(cmd(), 2..=3)).prop_map(|(by, cmds)| Step::Batch { by, cmds }),
        // How a keyed call starts: the run and its key land together or not at all.
        1 => (holder(), run(), select(CALL_KEYS.to_vec())).prop_map(|(by, run, key)| {
            Step::Batch {
                by,
                cmds: vec![Cmd::CreateRun { run }, Cmd::ClaimCallKey { key, run }],
            }
        }),
    ]
}

/// Skewed like [`run`], so that the holder that began an attempt is often the one renewing it.
fn holder() -> impl Strategy<Value = &'static str> {
    prop_oneof![3 => Just(HOLDERS[0]), 2 => Just(HOLDERS[1]), 1 => Just(HOLDERS[2])]
}

/// Skewed towards the first run, so that one run sees long histories (attempts taken over,
/// escalations resolved) while the others still interleave with it.
fn run() -> impl Strategy<Value = &'static str> {
    prop_oneof![4 => Just(RUNS[0]), 2 => Just(RUNS[1]), 1 => Just(RUNS[2])]
}

/// Skewed, so that one key sees its whole life (claimed, dispatched, taken over, settled).
fn effect_key() -> impl Strategy<Value = &'static str> {
    prop_oneof![3 => Just(EFFECT_KEYS[0]), 1 => Just(EFFECT_KEYS[1])]
}

fn lock_key() -> impl Strategy<Value = &'static str> {
    prop_oneof![3 => Just(LOCK_KEYS[0]), 1 => Just(LOCK_KEYS[1])]
}

/// Leases and waits come in steps of 10 s, so a lease often ends exactly at `now`: the
/// boundary (`lease_until <= now` is lapsed) gets hit, not just the wide middle.
fn lease() -> impl Strategy<Value = u8> {
    select(vec![10, 0, 20, 30])
}

fn att() -> impl Strategy<Value = Att> {
    prop_oneof![3 => Just(Att::Latest), 1 => (1..=3u32).prop_map(Att::No)]
}

fn actor() -> impl Strategy<Value = Actor> {
    prop_oneof![
        1 => Just(Actor::Owner),
        1 => (run(), att()).prop_map(|(run, attempt)| Actor::Attempt(run, attempt)),
    ]
}

fn esc() -> impl Strategy<Value = Esc> {
    prop_oneof![3 => Just(Esc::Newest), 1 => (0..3usize).prop_map(Esc::Nth)]
}

fn lock_by() -> impl Strategy<Value = LockBy> {
    prop_oneof![
        2 => Just(LockBy::Holder),
        2 => run().prop_map(LockBy::Run),
        1 => (run(), 1..=3i64).prop_map(|(run, fence)| LockBy::Fence(run, fence)),
    ]
}

fn effect_status() -> impl Strategy<Value = EffectStatus> {
    select(vec![
        EffectStatus::Pending,
        EffectStatus::Succeeded,
        EffectStatus::Failed,
        EffectStatus::InDoubt,
    ])
}

fn expect() -> impl Strategy<Value = Expect> {
    prop_oneof![
        2 => Just(Expect::AsRecorded),
        1 => (run(), 1..=2u32, effect_status())
            .prop_map(|(run, attempt, status)| Expect::Given { run, attempt, status }),
    ]
}

/// Every modelled op, weighted so that runs get created and attempts begun often enough for
/// the ops that need them to find them.
fn cmd() -> impl Strategy<Value = Cmd> {
    prop_oneof![
        3 => run().prop_map(|run| Cmd::CreateRun { run }),
        4 => (run(), lease(), any::<bool>())
            .prop_map(|(run, lease_s, take_over)| Cmd::BeginAttempt { run, lease_s, take_over }),
        2 => (run(), att(), lease())
            .prop_map(|(run, attempt, lease_s)| Cmd::RenewLease { run, attempt, lease_s }),
        3 => (run(), att(), select(vec![
            AttemptStatus::Succeeded,
            AttemptStatus::Failed,
            AttemptStatus::Crashed,
            AttemptStatus::Running,
        ]))
            .prop_map(|(run, attempt, status)| Cmd::EndAttempt { run, attempt, status }),
        2 => (run(), select(vec![
            RunStatus::Succeeded,
            RunStatus::Failed,
            RunStatus::InDoubt,
            RunStatus::Escalated,
        ]))
            .prop_map(|(run, status)| Cmd::EndRun { run, status }),
        2 => (run(), select(vec![
            RunStatus::Escalated,
            RunStatus::WaitingApproval,
            RunStatus::Failed,
        ]))
            .prop_map(|(run, status)| Cmd::ParkRun { run, status }),
        2 => run().prop_map(|run| Cmd::ReopenRun { run }),
        3 => (effect_key(), run(), att())
            .prop_map(|(key, run, attempt)| Cmd::ClaimEffect { key, run, attempt }),
        2 => (effect_key(), actor()).prop_map(|(key, by)| Cmd::MarkDispatched { key, by }),
        2 => (effect_key(), actor(), effect_status())
            .prop_map(|(key, by, status)| Cmd::RecordOutcome { key, by, status }),
        2 => (effect_key(), actor()).prop_map(|(key, by)| Cmd::MarkInDoubt { key, by }),
        2 => (effect_key(), expect(), run(), att()).prop_map(
            |(key, expected, run, attempt)| Cmd::TakeOverEffect { key, expected, run, attempt }
        ),
        3 => (lock_key(), run(), lease())
            .prop_map(|(key, run, lease_s)| Cmd::AcquireLock { key, run, lease_s }),
        2 => (lock_key(), lock_by(), lease())
            .prop_map(|(key, by, lease_s)| Cmd::RenewLock { key, by, lease_s }),
        2 => (lock_key(), lock_by()).prop_map(|(key, by)| Cmd::ReleaseLock { key, by }),
        3 => (run(), select(vec![EscalationReason::InDoubt, EscalationReason::Approval]))
            .prop_map(|(run, reason)| Cmd::OpenEscalation { run, reason }),
        3 => (esc(), select(vec![Resolution::Retry, Resolution::Abandon, Resolution::Approved]))
            .prop_map(|(escalation, resolution)| Cmd::ResolveEscalation { escalation, resolution }),
        2 => (select(CALL_KEYS.to_vec()), run())
            .prop_map(|(key, run)| Cmd::ClaimCallKey { key, run }),
        2 => (run(), att(), select(CHECKPOINT_NAMES.to_vec()))
            .prop_map(|(run, attempt, name)| Cmd::SaveCheckpoint { run, attempt, name }),
    ]
}

// ---------------------------------------------------------------------------------------------
// The reference model: the Op docs' rules over plain maps.

/// What the read methods show of a run.
#[derive(Debug, Clone, PartialEq)]
struct RunView {
    status: RunStatus,
    output: Option<String>,
    /// `Run::attempts`, the counter, kept apart from the rows so a drift between them shows.
    attempts: u32,
    attempt_rows: Vec<AttemptView>,
    /// Oldest first, one per name.
    checkpoints: Vec<CheckpointView>,
}

#[derive(Debug, Clone, PartialEq)]
struct AttemptView {
    attempt: u32,
    holder: String,
    status: AttemptStatus,
    lease_until: Millis,
    ended_at: Option<Millis>,
}

#[derive(Debug, Clone, PartialEq)]
struct CheckpointView {
    name: String,
    attempt: u32,
    state: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq)]
struct EffectView {
    key: String,
    run_id: String,
    attempt: u32,
    status: EffectStatus,
    dispatches: u32,
}

#[derive(Debug, Clone, PartialEq)]
struct LockView {
    run_id: String,
    holder: String,
    fence: i64,
    lease_until: Millis,
    released: bool,
}

#[derive(Debug, Clone, PartialEq)]
struct EscalationView {
    id: i64,
    run_id: String,
    reason: EscalationReason,
    status: EscalationStatus,
    resolution: Option<Resolution>,
}

/// An op's answer, reduced to what the model predicts.
#[derive(Debug, Clone, PartialEq)]
enum Got {
    Done,
    Attempt(AttemptView),
    Fresh,
    Existing {
        effect: EffectView,
        owner: Option<AttemptView>,
    },
    TookOver(bool),
    Escalation(EscalationView),
    Lock(LockView),
    /// Anything the model never asks for (breaker admissions).
    Unmodelled(String),
}

/// Everything the read methods show about the universe's ids.
#[derive(Debug, Default)]
struct World {
    runs: BTreeMap<String, RunView>,
    /// `runs` unfiltered: newest first.
    run_list: Vec<String>,
    effects: BTreeMap<String, EffectView>,
    /// `effects_for_run`, by key, for runs that own any.
    effects_by_run: BTreeMap<String, Vec<String>>,
    locks: BTreeMap<String, LockView>,
    escalations: Vec<EscalationView>,
    call_keys: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Default)]
struct Model {
    runs: BTreeMap<String, RunView>,
    /// Run ids in creation order.
    created: Vec<String>,
    /// In claim order, the order `effects_for_run` lists them in.
    effects: Vec<EffectView>,
    locks: BTreeMap<String, LockView>,
    /// In opening order, which is also id order.
    escalations: Vec<EscalationView>,
    /// Call key → the run it started.
    call_keys: BTreeMap<String, String>,
    highest_escalation_id: Option<i64>,
}

/// Finished: ended with a final status, as `EndRun` sets it.
fn is_final(status: RunStatus) -> bool {
    matches!(
        status,
        RunStatus::Succeeded | RunStatus::Failed | RunStatus::InDoubt
    )
}

impl Model {
    /// The ops `cmds` stand for, what the backend should answer, and the model after them.
    /// The caller keeps the new model only if the answer is `Ok`: on an error the batch must
    /// leave nothing behind, so partial changes made here before the failing op are dropped.
    fn predict(
        &self,
        by: &str,
        cmds: &[Cmd],
        now: Millis,
    ) -> (Vec<Op>, Result<Vec<Got>, &'static str>, Model) {
        let mut next = self.clone();
        let mut ops = Vec::with_capacity(cmds.len());
        let mut outcome = Ok(Vec::with_capacity(cmds.len()));
        for cmd in cmds {
            // Later ops of a batch name rows as the earlier ones left them.
            let op = next.resolve(cmd, by, now);
            if let Ok(answers) = &mut outcome {
                match next.apply(&op) {
                    Ok(answer) => answers.push(answer),
                    Err(error) => outcome = Err(error),
                }
            }
            ops.push(op);
        }
        (ops, outcome, next)
    }

    /// Gives the model's new escalations the ids the backend chose, after checking each is
    /// larger than every id before it ("later escalations have larger ids").
    /// A batch that opens an escalation and opens it again sees the one placeholder twice;
    /// both must get the same id.
    fn adopt_new_ids(&mut self, expected: &mut [Got], got: &[Got]) -> Result<(), String> {
        let mut adopted: BTreeMap<i64, i64> = BTreeMap::new();
        for (expected, got) in expected.iter_mut().zip(got) {
            let (Got::Escalation(mine), Got::Escalation(theirs)) = (expected, got) else {
                continue;
            };
            if !is_placeholder(mine.id) {
                continue;
            }
            let id = match adopted.get(&mine.id) {
                Some(id) => *id,
                None => {
                    if self.highest_escalation_id.is_some_and(|h| theirs.id <= h) {
                        return Err(format!(
                            "new escalation got id {}, not above the highest before it ({:?})",
                            theirs.id, self.highest_escalation_id
                        ));
                    }
                    self.highest_escalation_id = Some(theirs.id);
                    adopted.insert(mine.id, theirs.id);
                    theirs.id
                }
            };
            if let Some(new) = self.escalations.iter_mut().find(|e| e.id == mine.id) {
                new.id = id;
            }
            mine.id = id;
        }
        Ok(())
    }

    fn latest_attempt(&self, run: &str) -> u32 {
        self.runs.get(run).map_or(0, |r| r.attempts)
    }

    fn attempt_no(&self, run: &str, attempt: Att) -> u32 {
        match attempt {
            Att::Latest => self.latest_attempt(run),
            Att::No(n) => n,
        }
    }

    fn effect(&self, key: &str) -> Option<&EffectView> {
        self.effects.iter().find(|e| e.key == key)
    }

    /// The concrete op `cmd` stands for, issued by holder `by` at `now`.
    fn resolve(&self, cmd: &Cmd, by: &str, now: Millis) -> Op {
        let s = str::to_owned;
        let until = |secs: u8| now + Millis::from(secs) * 1_000;
        match *cmd {
            Cmd::CreateRun { run } => Op::CreateRun(NewRun {
                run_id: s(run),
                tool: s("echo"),
                input: s("{}"),
                now,
                component: None,
                lock: None,
            }),
            Cmd::BeginAttempt {
                run,
                lease_s,
                take_over,
            } => Op::BeginAttempt {
                run_id: s(run),
                component_digest: s("sha256:c0ffee"),
                holder: s(by),
                lease_until: until(lease_s),
                take_over,
                now,
            },
            Cmd::RenewLease {
                run,
                attempt,
                lease_s,
            } => Op::RenewLease {
                run_id: s(run),
                attempt: self.attempt_no(run, attempt),
                holder: s(by),
                lease_until: until(lease_s),
            },
            Cmd::EndAttempt {
                run,
                attempt,
                status,
            } => Op::EndAttempt {
                run_id: s(run),
                attempt: self.attempt_no(run, attempt),
                status,
                error_class: None,
                error_message: None,
                cpu_ms: 0,
                now,
            },
            Cmd::EndRun { run, status } => Op::EndRun {
                run_id: s(run),
                status,
                output: Some(s("out")),
                error_class: None,
                error_message: None,
                now,
            },
            Cmd::ParkRun { run, status } => Op::ParkRun {
                run_id: s(run),
                status,
                now,
            },
            Cmd::ReopenRun { run } => Op::ReopenRun {
                run_id: s(run),
                now,
            },
            Cmd::ClaimEffect { key, run, attempt } => Op::ClaimEffect {
                kind: s(KIND),
                key: s(key),
                payload_digest: payload_digest(b"{}"),
                payload: s("{}"),
                run_id: s(run),
                attempt: self.attempt_no(run, attempt),
                now,
            },
            Cmd::MarkDispatched { key, by } => {
                let (run_id, attempt) = self.actor(key, by);
                Op::MarkDispatched {
                    kind: s(KIND),
                    key: s(key),
                    run_id,
                    attempt,
                    now,
                }
            }
            Cmd::RecordOutcome { key, by, status } => {
                let (run_id, attempt) = self.actor(key, by);
                Op::RecordOutcome {
                    kind: s(KIND),
                    key: s(key),
                    run_id,
                    attempt,
                    status,
                    response: Some(s("ok")),
                    error_class: None,
                    error_message: None,
                    now,
                }
            }
            Cmd::MarkInDoubt { key, by } => {
                let (run_id, attempt) = self.actor(key, by);
                Op::MarkInDoubt {
                    kind: s(KIND),
                    key: s(key),
                    run_id,
                    attempt,
                    now,
                }
            }
            Cmd::TakeOverEffect {
                key,
                expected,
                run,
                attempt,
            } => {
                let (expected_run_id, expected_attempt, expected_status) = match expected {
                    Expect::AsRecorded => self
                        .effect(key)
                        .map_or((s(RUNS[0]), 1, EffectStatus::Pending), |e| {
                            (e.run_id.clone(), e.attempt, e.status)
                        }),
                    Expect::Given {
                        run,
                        attempt,
                        status,
                    } => (s(run), attempt, status),
                };
                Op::TakeOverEffect {
                    kind: s(KIND),
                    key: s(key),
                    expected_run_id,
                    expected_attempt,
                    expected_status,
                    run_id: s(run),
                    attempt: self.attempt_no(run, attempt),
                    now,
                }
            }
            Cmd::AcquireLock { key, run, lease_s } => Op::AcquireLock {
                key: s(key),
                run_id: s(run),
                holder: s(by),
                lease_until: until(lease_s),
                now,
            },
            Cmd::RenewLock { key, by, lease_s } => {
                let (run_id, fence) = self.lock_by(key, by);
                Op::RenewLock {
                    key: s(key),
                    run_id,
                    fence,
                    lease_until: until(lease_s),
                }
            }
            Cmd::ReleaseLock { key, by } => {
                let (run_id, fence) = self.lock_by(key, by);
                Op::ReleaseLock {
                    key: s(key),
                    run_id,
                    fence,
                    now,
                }
            }
            Cmd::OpenEscalation { run, reason } => Op::OpenEscalation(NewEscalation {
                run_id: s(run),
                reason,
                summary: s("needs a look"),
                effect_kind: None,
                effect_key: None,
                payload_digest: None,
                evidence: serde_json::json!({}),
                now,
            }),
            Cmd::ResolveEscalation {
                escalation,
                resolution,
            } => Op::ResolveEscalation {
                // One opened earlier in this same batch has no id yet: it cannot be named.
                id: match escalation {
                    Esc::Newest => self.escalations.last(),
                    Esc::Nth(n) => self.escalations.get(n),
                }
                .map(|e| e.id)
                .filter(|id| !is_placeholder(*id))
                .unwrap_or(NO_SUCH_ESCALATION),
                resolution,
                reason: s("decided"),
                by: s(by),
                now,
            },
            Cmd::ClaimCallKey { key, run } => Op::ClaimCallKey {
                key: s(key),
                tool: s("echo"),
                args_digest: s("args"),
                run_id: s(run),
                now,
            },
            Cmd::SaveCheckpoint { run, attempt, name } => Op::SaveCheckpoint {
                run_id: s(run),
                attempt: self.attempt_no(run, attempt),
                name: s(name),
                state: format!("{name}@{now}").into_bytes(),
                now,
            },
        }
    }

    /// The (run_id, attempt) that `by` stands for on effect `key`.
    fn actor(&self, key: &str, by: Actor) -> (String, u32) {
        match by {
            Actor::Owner => self
                .effect(key)
                .map_or((RUNS[0].to_owned(), 1), |e| (e.run_id.clone(), e.attempt)),
            Actor::Attempt(run, attempt) => (run.to_owned(), self.attempt_no(run, attempt)),
        }
    }

    /// The (run_id, fence) that `by` stands for on lock `key`.
    fn lock_by(&self, key: &str, by: LockBy) -> (String, i64) {
        let current = self.locks.get(key);
        match by {
            LockBy::Holder => {
                current.map_or((RUNS[0].to_owned(), 1), |l| (l.run_id.clone(), l.fence))
            }
            LockBy::Run(run) => (run.to_owned(), current.map_or(1, |l| l.fence)),
            LockBy::Fence(run, fence) => (run.to_owned(), fence),
        }
    }

    fn run_mut(&mut self, run_id: &str) -> Result<&mut RunView, &'static str> {
        self.runs.get_mut(run_id).ok_or("RunNotFound")
    }

    /// The attempt an op names: `RunNotFound` for an unknown run, `LeaseLost` for an attempt
    /// the run never had (what the implementation does; the docs do not say).
    fn attempt_mut(
        &mut self,
        run_id: &str,
        attempt: u32,
    ) -> Result<&mut AttemptView, &'static str> {
        self.run_mut(run_id)?
            .attempt_rows
            .iter_mut()
            .find(|a| a.attempt == attempt)
            .ok_or("LeaseLost")
    }

    /// The effect, if (run_id, attempt) owns it and it is `Pending`; else `not_pending` when
    /// the owner matches but the status does not. An unclaimed key is `EffectNotFound`, as
    /// that variant's doc says (the op docs only say "unless owned").
    fn owned_pending(
        &mut self,
        key: &str,
        run_id: &str,
        attempt: u32,
        not_pending: &'static str,
    ) -> Result<&mut EffectView, &'static str> {
        let effect = self
            .effects
            .iter_mut()
            .find(|e| e.key == key)
            .ok_or("EffectNotFound")?;
        if effect.run_id != run_id || effect.attempt != attempt {
            return Err("OwnershipLost");
        }
        if effect.status != EffectStatus::Pending {
            return Err(not_pending);
        }
        Ok(effect)
    }

    /// Applies one op as records.rs documents it: the answer, or the name of the error.
    fn apply(&mut self, op: &Op) -> Result<Got, &'static str> {
        match op {
            Op::CreateRun(new) => {
                if self.runs.contains_key(&new.run_id) {
                    return Err("RunExists");
                }
                let run = RunView {
                    status: RunStatus::Running,
                    output: None,
                    attempts: 0,
                    attempt_rows: Vec::new(),
                    checkpoints: Vec::new(),
                };
                self.runs.insert(new.run_id.clone(), run);
                self.created.push(new.run_id.clone());
                Ok(Got::Done)
            }
            Op::BeginAttempt {
                run_id,
                holder,
                lease_until,
                take_over,
                now,
                ..
            } => {
                let run = self.run_mut(run_id)?;
                if run.status.is_parked() {
                    return Err("RunParked");
                }
                if run.status != RunStatus::Running {
                    return Err("RunFinished");
                }
                if let Some(latest) = run
                    .attempt_rows
                    .last_mut()
                    .filter(|a| a.status == AttemptStatus::Running)
                {
                    if latest.lease_until > *now && !take_over {
                        return Err("AttemptLive");
                    }
                    latest.status = AttemptStatus::Crashed;
                    latest.ended_at = Some(*now);
                }
                run.attempts += 1;
                let attempt = AttemptView {
                    attempt: run.attempts,
                    holder: holder.clone(),
                    status: AttemptStatus::Running,
                    lease_until: *lease_until,
                    ended_at: None,
                };
                run.attempt_rows.push(attempt.clone());
                Ok(Got::Attempt(attempt))
            }
            Op::RenewLease {
                run_id,
                attempt,
                holder,
                lease_until,
            } => {
                let current = self.attempt_mut(run_id, *attempt)?;
                if current.status != AttemptStatus::Running || current.holder != *holder {
                    return Err("LeaseLost");
                }
                current.lease_until = *lease_until;
                Ok(Got::Done)
            }
            Op::EndAttempt {
                run_id,
                attempt,
                status,
                now,
                ..
            } => {
                let current = self.attempt_mut(run_id, *attempt)?;
                // Only an end status is an end (the implementation's error; docs do not say).
                if *status == AttemptStatus::Running {
                    return Err("InvalidTransition");
                }
                if current.status == AttemptStatus::Running {
                    current.status = *status;
                    current.ended_at = Some(*now);
                    Ok(Got::Done)
                } else if current.status == *status {
                    Ok(Got::Done)
                } else {
                    Err("LeaseLost")
                }
            }
            Op::EndRun {
                run_id,
                status,
                output,
                ..
            } => {
                let run = self.run_mut(run_id)?;
                if !is_final(*status) {
                    return Err("InvalidTransition");
                }
                if is_final(run.status) {
                    return if run.status == *status {
                        Ok(Got::Done)
                    } else {
                        Err("RunFinished")
                    };
                }
                run.status = *status;
                run.output.clone_from(output);
                Ok(Got::Done)
            }
            Op::ParkRun { run_id, status, .. } => {
                let run = self.run_mut(run_id)?;
                // A non-parked target is refused first, even on a finished run (the docs
                // leave the order open; this is the implementation's).
                if !status.is_parked() {
                    return Err("InvalidTransition");
                }
                if run.status == *status {
                    return Ok(Got::Done);
                }
                if is_final(run.status) {
                    return Err("RunFinished");
                }
                if run.status != RunStatus::Running {
                    return Err("InvalidTransition");
                }
                run.status = *status;
                Ok(Got::Done)
            }
            Op::ReopenRun { run_id, .. } => {
                let run = self.run_mut(run_id)?;
                match run.status {
                    RunStatus::Running => {}
                    RunStatus::Succeeded => return Err("RunFinished"),
                    RunStatus::Failed
                    | RunStatus::InDoubt
                    | RunStatus::Escalated
                    | RunStatus::WaitingApproval => {
                        run.status = RunStatus::Running;
                        run.output = None;
                    }
                }
                Ok(Got::Done)
            }
            Op::ClaimEffect {
                key,
                run_id,
                attempt,
                ..
            } => {
                if let Some(effect) = self.effect(key) {
                    let owner = self.runs.get(&effect.run_id).and_then(|run| {
                        run.attempt_rows
                            .iter()
                            .find(|a| a.attempt == effect.attempt)
                    });
                    return Ok(Got::Existing {
                        effect: effect.clone(),
                        owner: owner.cloned(),
                    });
                }
                self.effects.push(EffectView {
                    key: key.clone(),
                    run_id: run_id.clone(),
                    attempt: *attempt,
                    status: EffectStatus::Pending,
                    dispatches: 0,
                });
                Ok(Got::Fresh)
            }
            Op::TakeOverEffect {
                key,
                expected_run_id,
                expected_attempt,
                expected_status,
                run_id,
                attempt,
                ..
            } => {
                let found = self.effects.iter_mut().find(|e| {
                    e.key == *key
                        && e.run_id == *expected_run_id
                        && e.attempt == *expected_attempt
                        && e.status == *expected_status
                });
                let Some(effect) = found else {
                    return Ok(Got::TookOver(false));
                };
                effect.run_id.clone_from(run_id);
                effect.attempt = *attempt;
                effect.status = EffectStatus::Pending;
                Ok(Got::TookOver(true))
            }
            Op::MarkDispatched {
                key,
                run_id,
                attempt,
                ..
            } => {
                self.owned_pending(key, run_id, *attempt, "OwnershipLost")?
                    .dispatches += 1;
                Ok(Got::Done)
            }
            Op::RecordOutcome {
                key,
                run_id,
                attempt,
                status,
                ..
            } => {
                let effect = self.owned_pending(key, run_id, *attempt, "OwnershipLost")?;
                // Only an outcome is an outcome (the implementation's error; docs do not say).
                if !matches!(status, EffectStatus::Succeeded | EffectStatus::Failed) {
                    return Err("InvalidTransition");
                }
                effect.status = *status;
                Ok(Got::Done)
            }
            Op::MarkInDoubt {
                key,
                run_id,
                attempt,
                ..
            } => {
                self.owned_pending(key, run_id, *attempt, "InvalidTransition")?
                    .status = EffectStatus::InDoubt;
                Ok(Got::Done)
            }
            Op::SaveCheckpoint {
                run_id,
                attempt,
                name,
                state,
                ..
            } => {
                if self.attempt_mut(run_id, *attempt)?.status != AttemptStatus::Running {
                    return Err("LeaseLost");
                }
                let run = self.run_mut(run_id)?;
                run.checkpoints.retain(|c| c.name != *name);
                run.checkpoints.push(CheckpointView {
                    name: name.clone(),
                    attempt: *attempt,
                    state: state.clone(),
                });
                Ok(Got::Done)
            }
            Op::OpenEscalation(new) => {
                if !self.runs.contains_key(&new.run_id) {
                    return Err("RunNotFound");
                }
                let open = self
                    .escalations
                    .iter()
                    .find(|e| e.run_id == new.run_id && e.status == EscalationStatus::Open);
                if let Some(open) = open {
                    return Ok(Got::Escalation(open.clone()));
                }
                let placeholder = NEW_ID + i64::try_from(self.escalations.len()).unwrap_or(0);
                let opened = EscalationView {
                    id: placeholder,
                    run_id: new.run_id.clone(),
                    reason: new.reason,
                    status: EscalationStatus::Open,
                    resolution: None,
                };
                self.escalations.push(opened.clone());
                Ok(Got::Escalation(opened))
            }
            Op::ResolveEscalation { id, resolution, .. } => {
                let escalation = self
                    .escalations
                    .iter_mut()
                    .find(|e| e.id == *id)
                    .ok_or("EscalationNotFound")?;
                // A decision is final: even the same one again is refused.
                if escalation.status == EscalationStatus::Resolved {
                    return Err("EscalationResolved");
                }
                escalation.status = EscalationStatus::Resolved;
                escalation.resolution = Some(*resolution);
                Ok(Got::Done)
            }
            Op::AcquireLock {
                key,
                run_id,
                holder,
                lease_until,
                now,
            } => {
                let fence = match self.locks.get(key) {
                    None => 1,
                    Some(current) => {
                        let free = current.released
                            || current.lease_until <= *now
                            || current.run_id == *run_id;
                        if !free {
                            return Err("LockHeld");
                        }
                        current.fence + 1
                    }
                };
                let lock = LockView {
                    run_id: run_id.clone(),
                    holder: holder.clone(),
                    fence,
                    lease_until: *lease_until,
                    released: false,
                };
                self.locks.insert(key.clone(), lock.clone());
                Ok(Got::Lock(lock))
            }
            Op::RenewLock {
                key,
                run_id,
                fence,
                lease_until,
            } => match self.locks.get_mut(key) {
                Some(lock) if !lock.released && lock.run_id == *run_id && lock.fence == *fence => {
                    lock.lease_until = *lease_until;
                    Ok(Got::Done)
                }
                _ => Err("LockLost"),
            },
            Op::ReleaseLock {
                key,
                run_id,
                fence,
                now,
            } => {
                // A stale holder's release matches nothing and is a silent no-op.
                if let Some(lock) = self
                    .locks
                    .get_mut(key)
                    .filter(|l| !l.released && l.run_id == *run_id && l.fence == *fence)
                {
                    lock.released = true;
                    lock.lease_until = lock.lease_until.min(*now);
                }
                Ok(Got::Done)
            }
            Op::ClaimCallKey { key, run_id, .. } => {
                // A used key is reported before an unknown run (the implementation's order).
                if self.call_keys.contains_key(key) {
                    return Err("CallKeyUsed");
                }
                if !self.runs.contains_key(run_id) {
                    return Err("RunNotFound");
                }
                self.call_keys.insert(key.clone(), run_id.clone());
                Ok(Got::Done)
            }
            other => panic!("the generator never makes {other:?}"),
        }
    }

    /// What the read methods should show.
    fn world(&self) -> World {
        let mut effects_by_run: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for effect in &self.effects {
            effects_by_run
                .entry(effect.run_id.clone())
                .or_default()
                .push(effect.key.clone());
        }
        World {
            runs: self.runs.clone(),
            run_list: self.created.iter().rev().cloned().collect(),
            effects: self
                .effects
                .iter()
                .map(|e| (e.key.clone(), e.clone()))
                .collect(),
            effects_by_run,
            locks: self.locks.clone(),
            escalations: self.escalations.clone(),
            call_keys: self.call_keys.clone(),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The backend's side, reduced to the model's terms.

/// What the read methods show, through `ledger`.
fn read_world(ledger: &dyn Ledger) -> Result<World, LedgerError> {
    let mut world = World::default();
    for run_id in RUNS {
        if let Some(run) = ledger.run(run_id)? {
            let view = RunView {
                status: run.status,
                output: run.output,
                attempts: run.attempts,
                attempt_rows: ledger.attempts(run_id)?.iter().map(attempt_view).collect(),
                checkpoints: ledger
                    .checkpoints(run_id)?
                    .into_iter()
                    .map(|c| CheckpointView {
                        name: c.name,
                        attempt: c.attempt,
                        state: c.state,
                    })
                    .collect(),
            };
            world.runs.insert(run_id.to_owned(), view);
        }
        let owned: Vec<String> = ledger
            .effects_for_run(run_id)?
            .into_iter()
            .map(|e| e.key)
            .collect();
        if !owned.is_empty() {
            world.effects_by_run.insert(run_id.to_owned(), owned);
        }
    }
    world.run_list = ledger
        .runs(&RunFilter::default())?
        .into_iter()
        .map(|run| run.run_id)
        .collect();
    for key in EFFECT_KEYS {
        if let Some(effect) = ledger.effect(KIND, key)? {
            world.effects.insert(key.to_owned(), effect_view(&effect));
        }
    }
    for key in LOCK_KEYS {
        if let Some(lock) = ledger.lock(key)? {
            world.locks.insert(key.to_owned(), lock_view(&lock));
        }
    }
    let all = EscalationFilter {
        limit: 10_000,
        ..EscalationFilter::default()
    };
    world.escalations = ledger
        .escalations(&all)?
        .iter()
        .map(escalation_view)
        .collect();
    for key in CALL_KEYS {
        if let Some(call) = ledger.call_key(key)? {
            world.call_keys.insert(key.to_owned(), call.run_id);
        }
    }
    Ok(world)
}

/// Each row where the ledger and the model differ, one line apiece.
fn differences(ledger: &World, model: &World) -> Vec<String> {
    fn by_key<V: PartialEq + fmt::Debug>(
        part: &str,
        ledger: &BTreeMap<String, V>,
        model: &BTreeMap<String, V>,
        out: &mut Vec<String>,
    ) {
        let keys: BTreeSet<&String> = ledger.keys().chain(model.keys()).collect();
        for key in keys {
            let (theirs, ours) = (ledger.get(key), model.get(key));
            if theirs != ours {
                out.push(format!(
                    "{part} {key}:\n    ledger {theirs:?}\n    model  {ours:?}"
                ));
            }
        }
    }
    let mut out = Vec::new();
    by_key("run", &ledger.runs, &model.runs, &mut out);
    by_key("effect", &ledger.effects, &model.effects, &mut out);
    by_key(
        "effects_for_run",
        &ledger.effects_by_run,
        &model.effects_by_run,
        &mut out,
    );
    by_key("lock", &ledger.locks, &model.locks, &mut out);
    by_key("call key", &ledger.call_keys, &model.call_keys, &mut out);
    if ledger.run_list != model.run_list {
        out.push(format!(
            "runs, newest first:\n    ledger {:?}\n    model  {:?}",
            ledger.run_list, model.run_list
        ));
    }
    if ledger.escalations != model.escalations {
        out.push(format!(
            "escalations:\n    ledger {:?}\n    model  {:?}",
            ledger.escalations, model.escalations
        ));
    }
    out
}

fn attempt_view(a: &Attempt) -> AttemptView {
    AttemptView {
        attempt: a.attempt,
        holder: a.holder.clone(),
        status: a.status,
        lease_until: a.lease_until,
        ended_at: a.ended_at,
    }
}

fn effect_view(e: &EffectRecord) -> EffectView {
    EffectView {
        key: e.key.clone(),
        run_id: e.run_id.clone(),
        attempt: e.attempt,
        status: e.status,
        dispatches: e.dispatches,
    }
}

fn lock_view(l: &LockRecord) -> LockView {
    LockView {
        run_id: l.run_id.clone(),
        holder: l.holder.clone(),
        fence: l.fence,
        lease_until: l.lease_until,
        released: l.released,
    }
}

fn escalation_view(e: &Escalation) -> EscalationView {
    EscalationView {
        id: e.id,
        run_id: e.run_id.clone(),
        reason: e.reason,
        status: e.status,
        resolution: e.resolution,
    }
}

fn summary(applied: &Applied) -> Got {
    match applied {
        Applied::Done => Got::Done,
        Applied::Attempt(attempt) => Got::Attempt(attempt_view(attempt)),
        Applied::Claim(Claim::Fresh) => Got::Fresh,
        Applied::Claim(Claim::Existing { effect, owner }) => Got::Existing {
            effect: effect_view(effect),
            owner: owner.as_ref().map(attempt_view),
        },
        Applied::TookOver(took) => Got::TookOver(*took),
        Applied::Escalation(escalation) => Got::Escalation(escalation_view(escalation)),
        Applied::Lock(lock) => Got::Lock(lock_view(lock)),
        other => Got::Unmodelled(format!("{other:?}")),
    }
}

/// The error's variant: errors are compared by kind, never by message.
fn kind(error: &LedgerError) -> &'static str {
    match error {
        LedgerError::RunNotFound { .. } => "RunNotFound",
        LedgerError::RunExists { .. } => "RunExists",
        LedgerError::RunFinished { .. } => "RunFinished",
        LedgerError::RunParked { .. } => "RunParked",
        LedgerError::AttemptLive { .. } => "AttemptLive",
        LedgerError::LeaseLost { .. } => "LeaseLost",
        LedgerError::OwnershipLost { .. } => "OwnershipLost",
        LedgerError::EffectNotFound { .. } => "EffectNotFound",
        LedgerError::EscalationNotFound { .. } => "EscalationNotFound",
        LedgerError::EscalationResolved { .. } => "EscalationResolved",
        LedgerError::LockHeld { .. } => "LockHeld",
        LedgerError::LockLost { .. } => "LockLost",
        LedgerError::CallKeyUsed { .. } => "CallKeyUsed",
        LedgerError::InvalidTransition { .. } => "InvalidTransition",
        // Storage and open errors: never a rule's answer, so never predicted.
        _ => "storage or internal error",
    }
}
