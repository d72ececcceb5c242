//! Host benchmarks, each figure next to its baseline from the same process and the same disk:
//!
//! 1. instantiate + call `hello`: raw wasmtime (default config) against the host's sandbox
//!    (pooling, limits, epoch deadline, input schema check), with pooling off for contrast;
//! 2. load: a fresh compile against a load from the precompiled cache, raw and through the host;
//! 3. the sandbox: a policy with grants against none, and a CPU-bound tool with and without
//!    epoch deadlines;
//! 4. recorded runs (`hello`, and `invoice` with one effect on a no-op connector) against one
//!    raw SQLite WAL + `synchronous=FULL` commit, the physical floor of every durable step;
//! 5. MCP: `tools/call` over stdio against the same run called directly;
//! 6. the invoice tool in Rust, Python and JavaScript: cold compile against the cache, and
//!    instantiate-and-call and recorded-run p50, each next to the Rust figure.
//!
//! Run: `cargo bench --workspace --bench host` (results: BENCHMARKS.md). Set
//! `TOLLGATE_BENCH_SCALE=0.1` for a quick smoke run and `TOLLGATE_BENCH=call` for one section.

use std::time::{Duration, Instant};
use tollgate::bindings::{Tool, ToolPre, types};
use tollgate::capabilities::{self, ToolState};
use tollgate::engine::EngineOptions;
use tollgate::policy::Policy;
use tollgate::{Config, Runtime};
use tollgate_tests::plugins::{HELLO, HOSTILE_COMPUTE, INVOICE};
use wasmtime::component::Component;
use wasmtime::{Engine, Store};

const HELLO_INPUT: &str = r#"{"message":"bench"}"#;

fn scale() -> f64 {
    std::env::var("TOLLGATE_BENCH_SCALE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1.0)
}

fn iterations(base: usize) -> usize {
    ((base as f64 * scale()) as usize).max(10)
}

/// Latency samples of one measured operation.
struct Figure {
    name: String,
    samples: Vec<Duration>,
}

impl Figure {
    fn percentile(&self, p: f64) -> Duration {
        let mut sorted = self.samples.clone();
        sorted.sort();
        let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
        sorted[i]
    }

    fn print(&self, baseline: Option<&Figure>) {
        let p50 = self.percentile(0.5);
        let ratio = baseline
            .map(|b| {
                let r = p50.as_secs_f64() / b.percentile(0.5).as_secs_f64();
                if r < 0.1 {
                    format!("  (1/{:.0} of {})", 1.0 / r, b.name)
                } else {
                    format!("  ({r:.2}× {})", b.name)
                }
            })
            .unwrap_or_default();
        println!(
            "  {:<52} p50 {:>10}  p99 {:>10}  n={}{ratio}",
            self.name,
            fmt(p50),
            fmt(self.percentile(0.99)),
            self.samples.len()
        );
    }
}

fn fmt(d: Duration) -> String {
    let us = d.as_secs_f64() * 1e6;
    if us >= 1000.0 {
        format!("{:.2} ms", us / 1000.0)
    } else {
        format!("{us:.1} µs")
    }
}

async fn measure<F, Fut>(name: &str, n: usize, mut op: F) -> Figure
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    for _ in 0..(n / 10).max(3) {
        op().await;
    }
    let mut samples = Vec::with_capacity(n);
    for _ in 0..n {
        let start = Instant::now();
        op().await;
        samples.push(start.elapsed());
    }
    Figure {
        name: name.to_owned(),
        samples,
    }
}

/// [`measure`] of `load` of `path` in a runtime `make` builds for each sample, outside the
/// timing: a load from the precompiled cache as a new process makes it (its own engine, a
/// page cache that holds the files).
async fn measure_fresh_load(
    name: &str,
    n: usize,
    mut make: impl FnMut() -> Runtime,
    path: &str,
) -> Figure {
    let mut samples = Vec::with_capacity(n);
    for i in 0..n + (n / 10).max(3) {
        let runtime = make();
        let start = Instant::now();
        let tool = runtime.load(path).await.expect("load");
        let took = start.elapsed();
        assert_eq!(tool.cache, tollgate::engine::CacheOutcome::Hit);
        if i >= (n / 10).max(3) {
            samples.push(took);
        }
    }
    Figure {
        name: name.to_owned(),
        samples,
    }
}

/// Raw wasmtime with its default configuration (on-demand allocation, no limits, no epoch),
/// linked with the same imports the host provides so the same component can run.
fn raw_engine() -> Engine {
    Engine::new(&wasmtime::Config::new()).expect("raw engine")
}

fn raw_pre(engine: &Engine, component: &Component) -> ToolPre<ToolState> {
    let linker = capabilities::linker(engine).expect("linker");
    ToolPre::new(linker.instantiate_pre(component).expect("instantiate_pre")).expect("tool pre")
}

async fn raw_call(engine: &Engine, pre: &ToolPre<ToolState>, policy: &Policy) {
    let mut store = Store::new(
        engine,
        ToolState::new(policy, "hello", None).expect("state"),
    );
    // The host's engine interrupts on epochs; give the raw store no deadline.
    store.set_epoch_deadline(1 << 40);
    let tool: Tool = pre
        .instantiate_async(&mut store)
        .await
        .expect("instantiate");
    let ctx = types::RunContext {
        run_id: "raw".into(),
        attempt: 1,
        tool: "hello".into(),
        deadline_ms: 0,
    };
    let out = tool
        .call_run(&mut store, &ctx, HELLO_INPUT)
        .await
        .expect("call");
    assert!(out.is_ok(), "{out:?}");
}

fn runtime(dir: &std::path::Path, config: &str, options: EngineOptions) -> Runtime {
    Runtime::builder()
        .config(Config::parse(config, "bench.toml".as_ref()).expect("config"))
        .ledger_path(dir.join("ledger.db"))
        .cache_dir(dir.join("cache"))
        .engine_options(options)
        .build()
        .expect("runtime")
}

async fn instantiate_and_call(dir: &std::path::Path) {
    println!("\n1. instantiate + call `hello` (fresh store per call)");
    let n = iterations(5_000);
    let engine = raw_engine();
    let component = Component::from_file(&engine, HELLO).expect("compile");
    let pre = raw_pre(&engine, &component);
    let policy = Policy::default();
    let raw = measure("raw wasmtime, default config", n, || {
        raw_call(&engine, &pre, &policy)
    })
    .await;
    raw.print(None);

    // The same raw store on the host's engine: what pooling alone buys, and the floor the
    // host's own per-call work (input check, limits, deadline, stdio capture) sits on.
    let pooled = runtime(&dir.join("call-raw-pooled"), "", EngineOptions::default());
    let pooled_component = Component::from_file(pooled.engine(), HELLO).expect("compile");
    let pooled_pre = raw_pre(pooled.engine(), &pooled_component);
    let figure = measure("raw store on the host's engine (pooling)", n, || {
        raw_call(pooled.engine(), &pooled_pre, &policy)
    })
    .await;
    figure.print(Some(&raw));

    for (name, pooling) in [
        ("host sandbox (call_unrecorded), pooling", true),
        ("host sandbox (call_unrecorded), pooling off", false),
    ] {
        let rt = runtime(
            &dir.join(format!("call-{pooling}")),
            "",
            EngineOptions {
                pooling,
                ..EngineOptions::default()
            },
        );
        let tool = rt.load(HELLO).await.expect("load");
        let figure = measure(name, n, || async {
            let out = rt.call_unrecorded(&tool, HELLO_INPUT).await.expect("call");
            assert!(out.is_ok(), "{out:?}");
        })
        .await;
        figure.print(Some(&raw));
    }
}

async fn load(dir: &std::path::Path) {
    println!("\n2. load a component");
    for (label, path, base) in [("hello", HELLO, 60), ("invoice", INVOICE, 30)] {
        let size = std::fs::metadata(path).expect("plugin").len();
        println!("  {label} ({} KiB)", size / 1024);
        let n = iterations(base);
        let engine = raw_engine();
        let compile = measure(
            "raw wasmtime: Component::from_file (compile)",
            n,
            || async {
                Component::from_file(&engine, path).expect("compile");
            },
        )
        .await;
        compile.print(None);
        let artifact = Component::from_file(&engine, path)
            .expect("compile")
            .serialize()
            .expect("serialize");
        let n_fast = iterations(base * 20);
        let deserialize = measure("raw wasmtime: Component::deserialize", n_fast, || async {
            #[expect(unsafe_code, reason = "bytes serialized by this process just above")]
            unsafe {
                Component::deserialize(&engine, &artifact).expect("deserialize");
            }
        })
        .await;
        deserialize.print(Some(&compile));

        let fresh = Runtime::builder()
            .ledger_path(dir.join(format!("load-{label}-fresh.db")))
            .without_cache()
            .build()
            .expect("runtime");
        let host_fresh = measure(
            "host load, cache off (compile + link + describe)",
            n,
            || async {
                fresh.load(path).await.expect("load");
            },
        )
        .await;
        host_fresh.print(Some(&compile));
        let cached = runtime(
            &dir.join(format!("load-{label}-cached")),
            "",
            EngineOptions::default(),
        );
        cached.load(path).await.expect("warm the cache");
        let cache_dir = dir.join(format!("load-{label}-cached"));
        let host_cached = measure_fresh_load(
            "host load from cache, new runtime (verify + map + link + describe)",
            iterations(base),
            || runtime(&cache_dir, "", EngineOptions::default()),
            path,
        )
        .await;
        host_cached.print(Some(&deserialize));
        let again = measure("host load again, same runtime (kept)", n_fast, || async {
            cached.load(path).await.expect("load");
        })
        .await;
        again.print(Some(&host_cached));
    }
}

async fn sandbox(dir: &std::path::Path) {
    println!("\n3. what the sandbox costs");
    let n = iterations(5_000);
    let empty = runtime(&dir.join("sandbox-empty"), "", EngineOptions::default());
    let hello = empty.load(HELLO).await.expect("load");
    let baseline = measure("`hello`, empty policy", n, || async {
        empty
            .call_unrecorded(&hello, HELLO_INPUT)
            .await
            .expect("call")
            .expect("ok");
    })
    .await;
    baseline.print(None);
    let data = dir.join("sandbox-data");
    std::fs::create_dir_all(&data).expect("data dir");
    let granted = runtime(
        &dir.join("sandbox-granted"),
        &format!(
            "[tools.hello]\nenv = [\"HOME\", \"LANG\"]\n[[tools.hello.fs]]\nhost = {:?}\nguest = \"/data\"\n[[tools.hello.fs]]\nhost = {:?}\nguest = \"/scratch\"\nmode = \"rw\"\n[[tools.hello.http]]\nhost = \"127.0.0.1:8080\"\n[[tools.hello.http]]\nhost = \"*.example.com\"\n",
            data.display().to_string(),
            data.display().to_string()
        ),
        EngineOptions::default(),
    );
    let hello = granted.load(HELLO).await.expect("load");
    let figure = measure(
        "`hello`, policy with 2 fs + 2 http grants + env",
        n,
        || async {
            granted
                .call_unrecorded(&hello, HELLO_INPUT)
                .await
                .expect("call")
                .expect("ok");
        },
    )
    .await;
    figure.print(Some(&baseline));

    let n = iterations(200);
    let input = r#"{"attack":"busy-work","iterations":2000000}"#;
    let off = runtime(
        &dir.join("sandbox-no-deadlines"),
        "",
        EngineOptions {
            deadlines: false,
            ..EngineOptions::default()
        },
    );
    let tool = off.load(HOSTILE_COMPUTE).await.expect("load");
    let without = measure("CPU-bound (2M rounds), deadlines off", n, || async {
        off.call_unrecorded(&tool, input)
            .await
            .expect("call")
            .expect("ok");
    })
    .await;
    without.print(None);
    let on = runtime(&dir.join("sandbox-deadlines"), "", EngineOptions::default());
    let tool = on.load(HOSTILE_COMPUTE).await.expect("load");
    let with = measure("CPU-bound (2M rounds), epoch deadlines on", n, || async {
        on.call_unrecorded(&tool, input)
            .await
            .expect("call")
            .expect("ok");
    })
    .await;
    with.print(Some(&without));
}

async fn recorded_runs(dir: &std::path::Path) {
    println!("\n4. recorded runs (durable: WAL + synchronous=FULL)");
    let n = iterations(300);
    let raw = raw_commit(&dir.join("raw.db"), n);
    raw.print(None);
    let rt = runtime(
        &dir.join("runs"),
        "[connectors.\"erp.post-invoice\"]\ntype = \"noop\"\n\n[tools.invoice]\neffects = [\"erp.post-invoice\"]\n",
        EngineOptions::default(),
    );
    let hello = rt.load(HELLO).await.expect("load");
    let figure = measure(
        "`hello` run: create, attempt, end (3 commits)",
        n,
        || async {
            let report = rt.run(&hello, HELLO_INPUT).await.expect("run");
            assert!(report.result.is_ok());
        },
    )
    .await;
    figure.print(Some(&raw));
    let invoice = rt.load(INVOICE).await.expect("load");
    let mut i = 0u64;
    let figure = measure(
        "`invoice` run: + checkpoint + effect on no-op (6 commits)",
        n,
        || {
            i += 1;
            let input = tollgate_tests::invoice(&format!("INV-B{i}-{}", std::process::id()));
            let rt = &rt;
            let invoice = &invoice;
            async move {
                let report = rt.run(invoice, &input).await.expect("run");
                assert!(report.result.is_ok(), "{:?}", report.result);
            }
        },
    )
    .await;
    figure.print(Some(&raw));
}

/// The invoice tool in Rust, Python and JavaScript, side by side in one process: component
/// size, a cold load (compile) against a load from the precompiled cache, a call outside any
/// run (instantiate, parse, validate; the wrong total is answered before any host call), and a
/// recorded run posting through a no-op connector.
async fn polyglot(dir: &std::path::Path) {
    use tollgate_tests::plugins::{JS_INVOICE, PY_INVOICE};
    println!("\n6. the invoice tool in three languages");
    let config = "[connectors.\"erp.post-invoice\"]\ntype = \"noop\"\n\n\
                  [tools.invoice]\neffects = [\"erp.post-invoice\"]\n\
                  [tools.py-invoice]\neffects = [\"erp.post-invoice\"]\n\
                  [tools.js-invoice]\neffects = [\"erp.post-invoice\"]\n";
    let wrong_total = tollgate_tests::invoice("INV-WRONG").replace("4650", "4651");
    let mut rust: Option<[Figure; 3]> = None;
    for (label, path) in [
        ("Rust", INVOICE),
        ("Python", PY_INVOICE),
        ("JavaScript", JS_INVOICE),
    ] {
        let size = std::fs::metadata(path).expect("plugin").len();
        println!(
            "  {label} invoice ({:.1} MiB)",
            size as f64 / (1024.0 * 1024.0)
        );
        let fresh = Runtime::builder()
            .ledger_path(dir.join(format!("poly-{label}-fresh.db")))
            .without_cache()
            .build()
            .expect("runtime");
        let cold = measure(
            &format!("{label}: load, cache off (compile)"),
            3,
            || async {
                fresh.load(path).await.expect("load");
            },
        )
        .await;
        let rt = runtime(
            &dir.join(format!("poly-{label}")),
            config,
            EngineOptions::default(),
        );
        rt.load(path).await.expect("warm the cache");
        let rt_dir = dir.join(format!("poly-{label}"));
        let cached = measure_fresh_load(
            &format!("{label}: load from the cache, new runtime"),
            iterations(30),
            || runtime(&rt_dir, config, EngineOptions::default()),
            path,
        )
        .await;
        let again = measure(
            &format!("{label}: load again, same runtime (kept)"),
            iterations(300),
            || async {
                rt.load(path).await.expect("load");
            },
        )
        .await;
        let tool = rt.load(path).await.expect("load");
        let call = measure(
            &format!("{label}: instantiate + call (unrecorded)"),
            iterations(300),
            || async {
                let out = rt.call_unrecorded(&tool, &wrong_total).await.expect("call");
                assert!(out.is_err(), "the wrong total is refused: {out:?}");
            },
        )
        .await;
        let mut i = 0u64;
        let run = measure(
            &format!("{label}: recorded run, one effect"),
            iterations(200),
            || {
                i += 1;
                let input = tollgate_tests::invoice(&format!("INV-P{i}-{}", std::process::id()));
                let (rt, tool) = (&rt, &tool);
                async move {
                    let report = rt.run(tool, &input).await.expect("run");
                    assert!(report.result.is_ok(), "{:?}", report.result);
                }
            },
        )
        .await;
        cold.print(None);
        cached.print(Some(&cold));
        again.print(Some(&cached));
        match &rust {
            None => {
                call.print(None);
                run.print(None);
                rust = Some([cold, call, run]);
            }
            Some([_, rust_call, rust_run]) => {
                call.print(Some(rust_call));
                run.print(Some(rust_run));
            }
        }
    }
}

/// `tools/call` of `hello` through `tollgate mcp` over stdio (a real child process, the rmcp
/// client), next to the same recorded run called directly through the library.
async fn mcp(dir: &std::path::Path) {
    use rmcp::model::CallToolRequestParams;
    println!("\n5. MCP: tools/call over stdio vs a direct library call (both recorded runs)");
    let n = iterations(300);
    let rt = runtime(&dir.join("mcp-direct"), "", EngineOptions::default());
    let hello = rt.load(HELLO).await.expect("load");
    let client = stdio_server(dir, "mcp", "").await;
    let args = serde_json::json!({ "message": "bench" })
        .as_object()
        .cloned()
        .expect("object");
    let mut direct_total = Duration::ZERO;
    let mut mcp_total = Duration::ZERO;
    let mut direct = Vec::with_capacity(n);
    let mut over_mcp = Vec::with_capacity(n);
    // Interleaved, so both see the same machine noise.
    for i in 0..n + n / 10 {
        let start = Instant::now();
        let report = rt.run(&hello, HELLO_INPUT).await.expect("run");
        assert!(report.result.is_ok());
        let d = start.elapsed();
        let start = Instant::now();
        let result = client
            .call_tool(CallToolRequestParams::new("hello").with_arguments(args.clone()))
            .await
            .expect("tools/call");
        assert_ne!(result.is_error, Some(true), "{result:?}");
        let m = start.elapsed();
        if i >= n / 10 {
            direct.push(d);
            over_mcp.push(m);
            direct_total += d;
            mcp_total += m;
        }
    }
    let direct = Figure {
        name: "direct: Runtime::run(hello)".into(),
        samples: direct,
    };
    let over_mcp = Figure {
        name: "MCP tools/call hello over stdio".into(),
        samples: over_mcp,
    };
    direct.print(None);
    over_mcp.print(Some(&direct));
    let per_s = |total: Duration| n as f64 / total.as_secs_f64();
    println!(
        "  calls/s: direct {:.0}, MCP {:.0}; MCP overhead at p50: {}",
        per_s(direct_total),
        per_s(mcp_total),
        fmt(over_mcp
            .percentile(0.5)
            .saturating_sub(direct.percentile(0.5)))
    );
    // The protocol's own floor: a round trip that runs nothing.
    let list = measure("MCP tools/list over stdio (no run)", n, || async {
        client.list_all_tools().await.expect("tools/list");
    })
    .await;
    list.print(Some(&direct));
    _ = client.cancel().await;

    // A read-only tool recorded `async`: its run commits without waiting for the disk. The
    // target is a call within 2x the protocol's own round trip, measured side by side.
    let client = stdio_server(dir, "mcp-async", "record = \"async\"\n").await;
    let mut calls = Vec::with_capacity(n);
    let mut lists = Vec::with_capacity(n);
    for i in 0..n + n / 10 {
        let start = Instant::now();
        let result = client
            .call_tool(CallToolRequestParams::new("hello").with_arguments(args.clone()))
            .await
            .expect("tools/call");
        assert_ne!(result.is_error, Some(true), "{result:?}");
        let call = start.elapsed();
        let start = Instant::now();
        client.list_all_tools().await.expect("tools/list");
        if i >= n / 10 {
            calls.push(call);
            lists.push(start.elapsed());
        }
    }
    let lists = Figure {
        name: "MCP tools/list over stdio (no run)".into(),
        samples: lists,
    };
    let calls = Figure {
        name: "MCP tools/call hello over stdio, record = async".into(),
        samples: calls,
    };
    lists.print(None);
    calls.print(Some(&lists));
    println!(
        "  record = async: tools/call p50 = {:.2}x the tools/list round trip (target <= 2x)",
        calls.percentile(0.5).as_secs_f64() / lists.percentile(0.5).as_secs_f64()
    );
    _ = client.cancel().await;
}

/// `tollgate mcp` over stdio serving `hello` with `policy` lines added to its table, on a
/// ledger and cache of its own named `name`.
async fn stdio_server(
    dir: &std::path::Path,
    name: &str,
    policy: &str,
) -> rmcp::service::RunningService<rmcp::RoleClient, ()> {
    use rmcp::ServiceExt as _;
    let config = dir.join(format!("{name}.toml"));
    std::fs::write(
        &config,
        format!("[tools.hello]\ncomponent = {HELLO:?}\n{policy}"),
    )
    .expect("config");
    let bin = std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.parent()?.join("tollgate")))
        .expect("target dir");
    let mut cmd = tokio::process::Command::new(bin);
    cmd.arg("--config")
        .arg(&config)
        .arg("--ledger")
        .arg(dir.join(format!("{name}.db")))
        .arg("--cache-dir")
        .arg(dir.join(format!("{name}-cache")))
        .arg("mcp");
    let transport = rmcp::transport::TokioChildProcess::new(cmd).expect("spawn tollgate mcp");
    ().serve(transport).await.expect("MCP handshake")
}

fn raw_commit(path: &std::path::Path, n: usize) -> Figure {
    let conn = rusqlite::Connection::open(path).expect("raw db");
    conn.pragma_update_and_check(None, "journal_mode", "WAL", |_| Ok(()))
        .expect("wal");
    conn.pragma_update(None, "synchronous", "FULL")
        .expect("sync");
    conn.execute_batch("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT NOT NULL)")
        .expect("table");
    let mut stmt = conn
        .prepare("INSERT INTO t (v) VALUES (?1)")
        .expect("prepare");
    let mut samples = Vec::with_capacity(n);
    for _ in 0..n {
        let start = Instant::now();
        stmt.execute(["a small row"]).expect("insert");
        samples.push(start.elapsed());
    }
    Figure {
        name: "raw SQLite commit (one INSERT)".into(),
        samples,
    }
}

fn main() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("temp dir");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio");
    println!(
        "tollgate host benchmarks ({} cores)",
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    // `TOLLGATE_BENCH=call,load,sandbox,runs,mcp,polyglot` picks sections (default: all), e.g. for profiling.
    let only = std::env::var("TOLLGATE_BENCH").unwrap_or_default();
    let wanted = |section: &str| only.is_empty() || only.split(',').any(|s| s == section);
    rt.block_on(async {
        if wanted("call") {
            instantiate_and_call(dir.path()).await;
        }
        if wanted("load") {
            load(dir.path()).await;
        }
        if wanted("sandbox") {
            sandbox(dir.path()).await;
        }
        if wanted("runs") {
            recorded_runs(dir.path()).await;
        }
        if wanted("mcp") {
            mcp(dir.path()).await;
        }
        if wanted("polyglot") {
            polyglot(dir.path()).await;
        }
    });
}
