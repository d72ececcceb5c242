//! What durability costs: ledger write and read paths, each printed next to its physical
//! baseline measured in the same run, on temp files on the same disk as the target dir.
//!
//! Run: `cargo bench --workspace --bench ledger`. The PostgreSQL part runs against
//! `TOLLGATE_TEST_POSTGRES` (default `postgres://postgres@127.0.0.1:5432/test`), in a schema of
//! its own; set `TOLLGATE_BENCH_POSTGRES=0` to skip it.

use std::fs::{File, OpenOptions};
use std::hint::black_box;
use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use criterion::Criterion;
use serde_json::json;
use tollgate_ledger::scratch::PgScratch;
use tollgate_ledger::{
    EffectStatus, Ledger, LedgerExt, LedgerOptions, NewJournalEntry, NewRun, Op, PgLedger,
    PgOptions, SqliteLedger,
};

const PAYLOAD: &str = r#"{"to":"ops@example.com","subject":"deploy done","amount":10}"#;
const THROUGHPUT_WINDOW: Duration = Duration::from_millis(2500);

/// Per-iteration times (ns) of every criterion sample, so the summary can quote a median.
#[derive(Default)]
struct Samples(Mutex<Vec<f64>>);

impl Samples {
    fn record(&self, iters: u64, elapsed: Duration) -> Duration {
        if iters > 0
            && let Ok(mut samples) = self.0.lock()
        {
            samples.push(elapsed.as_nanos() as f64 / iters as f64);
        }
        elapsed
    }

    fn median_ns(&self) -> f64 {
        let mut samples = self.0.lock().map(|s| s.clone()).unwrap_or_default();
        median(&mut samples)
    }
}

fn median(values: &mut [f64]) -> f64 {
    percentile(values, 0.5)
}

fn percentile(values: &mut [f64], p: f64) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    values.sort_by(f64::total_cmp);
    let index = ((values.len() - 1) as f64 * p).round() as usize;
    values[index]
}

fn fmt_ns(ns: f64) -> String {
    if ns >= 1_000_000.0 {
        format!("{:.2} ms", ns / 1_000_000.0)
    } else if ns >= 1_000.0 {
        format!("{:.1} µs", ns / 1_000.0)
    } else {
        format!("{ns:.0} ns")
    }
}

fn new_ledger(dir: &Path, name: &str, group_commit: bool) -> SqliteLedger {
    let options = LedgerOptions {
        group_commit,
        ..LedgerOptions::default()
    };
    SqliteLedger::open(&dir.join(name), options).expect("open ledger")
}

/// Creates run `run_id` with a live attempt 1 held for a long time.
fn live_run(ledger: &dyn Ledger, run_id: &str) {
    ledger
        .create_run(NewRun {
            run_id: run_id.to_owned(),
            tool: "bench".to_owned(),
            input: "{}".to_owned(),
            now: 0,
            component: None,
            lock: None,
        })
        .expect("create run");
    ledger
        .begin_attempt(run_id, "sha256:bench", "bench", i64::MAX, false, 0)
        .expect("begin attempt");
}

/// What a replay does: look up a succeeded key and queue a journal line.
fn replay_once(ledger: &dyn Ledger) {
    let effect = ledger.effect("http", "paid").expect("read");
    black_box(&effect);
    ledger.journal(NewJournalEntry {
        run_id: "run".to_owned(),
        attempt: Some(1),
        at: 3,
        level: "info".to_owned(),
        event: "effect.replayed".to_owned(),
        message: "replayed http/paid".to_owned(),
        fields: json!({ "kind": "http", "key": "paid" }),
    });
}

/// One effect as the host records it: intent + dispatch mark in one commit, outcome in another.
fn one_effect(ledger: &dyn Ledger, run_id: &str, key: &str) {
    ledger
        .apply(vec![
            Op::ClaimEffect {
                kind: "http".to_owned(),
                key: key.to_owned(),
                payload_digest: "d".repeat(64),
                payload: PAYLOAD.to_owned(),
                run_id: run_id.to_owned(),
                attempt: 1,
                now: 1,
            },
            Op::MarkDispatched {
                kind: "http".to_owned(),
                key: key.to_owned(),
                run_id: run_id.to_owned(),
                attempt: 1,
                now: 1,
            },
        ])
        .expect("claim + dispatch");
    ledger
        .record_outcome(
            "http",
            key,
            run_id,
            1,
            EffectStatus::Succeeded,
            Some(r#"{"status":200}"#),
            None,
            None,
            2,
        )
        .expect("record outcome");
}

struct Throughput {
    effects_per_sec: f64,
    commits_per_effect: f64,
}

fn throughput(dir: &Path, threads: usize, group_commit: bool) -> Throughput {
    let ledger = Arc::new(new_ledger(
        dir,
        &format!("tp-{threads}-{group_commit}.db"),
        group_commit,
    ));
    let before = ledger.stats();
    let (effects, elapsed) = effects_in_window(Arc::clone(&ledger) as Arc<dyn Ledger>, threads);
    let commits = (ledger.stats().commits - before.commits) as f64;
    Throughput {
        effects_per_sec: effects / elapsed,
        commits_per_effect: commits / effects,
    }
}

/// How many effects `threads` threads, one run each, record through `ledger` in a timed
/// window, and the window's length in seconds.
fn effects_in_window(ledger: Arc<dyn Ledger>, threads: usize) -> (f64, f64) {
    let tag = RUN_TAG.fetch_add(1, Ordering::Relaxed);
    for t in 0..threads {
        live_run(ledger.as_ref(), &format!("run-{tag}-{t}"));
    }
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let barrier = Arc::new(Barrier::new(threads + 1));
    let workers: Vec<_> = (0..threads)
        .map(|t| {
            let (ledger, stop, done, barrier) = (
                Arc::clone(&ledger),
                Arc::clone(&stop),
                Arc::clone(&done),
                Arc::clone(&barrier),
            );
            thread::spawn(move || {
                let run_id = format!("run-{tag}-{t}");
                barrier.wait();
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    one_effect(ledger.as_ref(), &run_id, &format!("k-{tag}-{t}-{n}"));
                    n += 1;
                }
                done.fetch_add(n, Ordering::Relaxed);
            })
        })
        .collect();
    barrier.wait();
    let started = Instant::now();
    thread::sleep(THROUGHPUT_WINDOW);
    stop.store(true, Ordering::Relaxed);
    for worker in workers {
        worker.join().expect("worker");
    }
    let elapsed = started.elapsed().as_secs_f64();
    (done.load(Ordering::Relaxed) as f64, elapsed)
}

static RUN_TAG: AtomicU64 = AtomicU64::new(0);

fn main() {
    let mut c = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3))
        .sample_size(20)
        .configure_from_args();
    // CARGO_TARGET_TMPDIR lives in the target dir: the same disk the ledger would use.
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("temp dir");
    let mut summary: Vec<String> = Vec::new();

    // (1) Raw fsync: the floor for any durable write.
    let fsync = Samples::default();
    {
        let mut file: File = OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.path().join("raw.bin"))
            .expect("raw file");
        c.bench_function("1_raw_fsync_small_write", |b| {
            b.iter_custom(|iters| {
                let start = Instant::now();
                for _ in 0..iters {
                    file.write_all(&[7u8; 64]).expect("write");
                    file.sync_all().expect("fsync");
                }
                fsync.record(iters, start.elapsed())
            })
        });
    }

    // (2) Raw rusqlite commit of one small INSERT, WAL + synchronous=FULL: the physical
    // baseline every ledger commit pays.
    let raw_commit = Samples::default();
    {
        let conn = rusqlite::Connection::open(dir.path().join("raw.db")).expect("raw db");
        conn.pragma_update_and_check(None, "journal_mode", "WAL", |_| Ok(()))
            .expect("wal");
        conn.pragma_update(None, "synchronous", "FULL")
            .expect("sync");
        conn.execute_batch("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT NOT NULL)")
            .expect("table");
        c.bench_function("2_raw_sqlite_commit_one_insert", |b| {
            b.iter_custom(|iters| {
                let mut stmt = conn
                    .prepare_cached("INSERT INTO t (v) VALUES (?1)")
                    .expect("prepare");
                let start = Instant::now();
                for _ in 0..iters {
                    stmt.execute([PAYLOAD]).expect("insert");
                }
                raw_commit.record(iters, start.elapsed())
            })
        });
    }

    // (3) One effect's ledger overhead, single thread: two commits.
    let effect_cost = Samples::default();
    {
        let ledger = new_ledger(dir.path(), "single.db", true);
        live_run(&ledger, "run");
        let mut n = 0u64;
        c.bench_function("3_ledger_one_effect_two_commits", |b| {
            b.iter_custom(|iters| {
                let start = Instant::now();
                for _ in 0..iters {
                    one_effect(&ledger, "run", &format!("k-{n}"));
                    n += 1;
                }
                effect_cost.record(iters, start.elapsed())
            })
        });
    }

    // (5) Replay read: look up a succeeded key and queue a journal line.
    let replay = Samples::default();
    let mut replay_latencies: Vec<f64> = Vec::with_capacity(20_000);
    {
        let ledger = new_ledger(dir.path(), "replay.db", true);
        live_run(&ledger, "run");
        one_effect(&ledger, "run", "paid");
        c.bench_function("5_replay_read_plus_queued_journal", |b| {
            b.iter_custom(|iters| {
                let start = Instant::now();
                for _ in 0..iters {
                    replay_once(&ledger);
                }
                replay.record(iters, start.elapsed())
            })
        });
        for _ in 0..20_000 {
            let start = Instant::now();
            replay_once(&ledger);
            replay_latencies.push(start.elapsed().as_nanos() as f64);
        }
    }

    // (6)–(9) The same paths on PostgreSQL, next to a raw INSERT commit on the same server.
    let postgres = std::env::var("TOLLGATE_BENCH_POSTGRES").map_or(true, |v| v != "0");
    let pg_lines = if postgres {
        postgres_figures(&mut c)
    } else {
        vec!["(6)-(9) PostgreSQL: skipped (TOLLGATE_BENCH_POSTGRES=0)".to_owned()]
    };

    c.final_summary();

    let fsync_ns = fsync.median_ns();
    let commit_ns = raw_commit.median_ns();
    let effect_ns = effect_cost.median_ns();
    summary.push(format!(
        "(1) raw fsync of a 64 B append           {:>10}",
        fmt_ns(fsync_ns)
    ));
    summary.push(format!(
        "(2) raw SQLite commit, 1 INSERT          {:>10}   = {:.2}× fsync",
        fmt_ns(commit_ns),
        commit_ns / fsync_ns
    ));
    summary.push(format!(
        "(3) one effect (2 ledger commits)        {:>10}   baseline 2 × raw commit = {}  → overhead {:+.0}%",
        fmt_ns(effect_ns),
        fmt_ns(2.0 * commit_ns),
        (effect_ns / (2.0 * commit_ns) - 1.0) * 100.0
    ));

    // (4) Throughput: plain timed windows, group commit on vs off.
    let single_thread_ceiling = 1e9 / (2.0 * commit_ns);
    summary.push(format!(
        "(4) effects/s; baseline = 1 thread at 2 raw commits per effect = {single_thread_ceiling:.0}/s"
    ));
    for threads in [1usize, 8, 64] {
        let on = throughput(dir.path(), threads, true);
        let off = throughput(dir.path(), threads, false);
        summary.push(format!(
            "    {threads:>2} threads: group commit on {:>8.0}/s ({:.3} commits/effect, {:.1}× baseline) | off {:>8.0}/s ({:.3} commits/effect)",
            on.effects_per_sec,
            on.commits_per_effect,
            on.effects_per_sec / single_thread_ceiling,
            off.effects_per_sec,
            off.commits_per_effect,
        ));
    }

    let p50 = percentile(&mut replay_latencies, 0.5);
    let p99 = percentile(&mut replay_latencies, 0.99);
    summary.push(format!(
        "(5) replay read + queued journal         p50 {}  p99 {}  (criterion median {})  target p50 ≤ 50 µs; vs raw commit {:.0}× cheaper",
        fmt_ns(p50),
        fmt_ns(p99),
        fmt_ns(replay.median_ns()),
        commit_ns / p50
    ));

    summary.extend(pg_lines);
    println!(
        "\n== tollgate-ledger summary (temp files under {}) ==",
        env!("CARGO_TARGET_TMPDIR")
    );
    for line in summary {
        println!("{line}");
    }
}

/// PostgreSQL: a raw single-row INSERT commit (the baseline), one effect, effects/s for 1
/// and 64 runs, and the replay read, each in a schema of its own on the test server.
fn postgres_figures(c: &mut Criterion) -> Vec<String> {
    let scratch = PgScratch::new();
    let url = scratch.url();
    let mut lines = Vec::new();

    // (6) Raw: one prepared INSERT, committed on its own (autocommit), on one connection.
    let raw_insert = Samples::default();
    {
        let mut client = postgres::Client::connect(&url, postgres::NoTls).expect("connect");
        client
            .batch_execute("CREATE TABLE raw_t (id BIGSERIAL PRIMARY KEY, v TEXT NOT NULL)")
            .expect("table");
        let insert = client
            .prepare("INSERT INTO raw_t (v) VALUES ($1)")
            .expect("prepare");
        c.bench_function("6_raw_postgres_commit_one_insert", |b| {
            b.iter_custom(|iters| {
                let start = Instant::now();
                for _ in 0..iters {
                    client.execute(&insert, &[&PAYLOAD]).expect("insert");
                }
                raw_insert.record(iters, start.elapsed())
            })
        });
    }

    let ledger: Arc<dyn Ledger> =
        Arc::new(PgLedger::open(&url, PgOptions::default()).expect("open the PostgreSQL ledger"));

    // (7) One effect: intent + dispatch mark in one transaction, outcome in another.
    let effect_cost = Samples::default();
    {
        live_run(ledger.as_ref(), "run");
        let mut n = 0u64;
        c.bench_function("7_postgres_one_effect_two_commits", |b| {
            b.iter_custom(|iters| {
                let start = Instant::now();
                for _ in 0..iters {
                    one_effect(ledger.as_ref(), "run", &format!("k-{n}"));
                    n += 1;
                }
                effect_cost.record(iters, start.elapsed())
            })
        });
    }

    // (9) Replay of a succeeded key.
    one_effect(ledger.as_ref(), "run", "paid");
    let mut replay: Vec<f64> = Vec::with_capacity(5_000);
    for _ in 0..5_000 {
        let start = Instant::now();
        replay_once(ledger.as_ref());
        replay.push(start.elapsed().as_nanos() as f64);
    }

    let raw_ns = raw_insert.median_ns();
    let effect_ns = effect_cost.median_ns();
    lines.push(format!(
        "(6) raw PostgreSQL commit, 1 INSERT     {:>10}",
        fmt_ns(raw_ns)
    ));
    lines.push(format!(
        "(7) one effect on PostgreSQL            {:>10}   = {:.2}× raw INSERT commit (target ≤ 2.5×)",
        fmt_ns(effect_ns),
        effect_ns / raw_ns
    ));
    let (one, one_s) = effects_in_window(Arc::clone(&ledger), 1);
    let (many, many_s) = effects_in_window(Arc::clone(&ledger), 64);
    let (one, many) = (one / one_s, many / many_s);
    lines.push(format!(
        "(8) effects/s on PostgreSQL: 1 run {one:.0}/s, 64 runs {many:.0}/s = {:.1}× (target ≥ 10×)",
        many / one
    ));
    lines.push(format!(
        "(9) replay on PostgreSQL                p50 {}  p99 {}  (target p50 ≤ 300 µs)",
        fmt_ns(percentile(&mut replay, 0.5)),
        fmt_ns(percentile(&mut replay, 0.99)),
    ));
    lines
}
