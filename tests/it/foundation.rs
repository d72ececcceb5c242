//! Loading and running components: every malformed input gets a clear error and no panic;
//! the precompiled cache is really used; one engine serves many runs without growing.

use crate::harness::{Env, failure, load, output};
use std::sync::Arc;
use tollgate::ledger::RunFilter;
use tollgate::{LoadError, RunError};
use tollgate_tests::plugins::{
    CORE_MODULE, EMPTY_COMPONENT, FUTURE_VERSION, HELLO, INVOICE, NONEXISTENT_IMPORT,
};

#[tokio::test]
async fn missing_file_is_named() {
    let env = Env::new();
    let err = env
        .runtime("")
        .load(env.dir.path().join("nope.wasm"))
        .await
        .unwrap_err();
    assert!(matches!(err, LoadError::NotFound(_)), "{err}");
    assert!(err.to_string().contains("nope.wasm"), "{err}");
}

#[tokio::test]
async fn non_wasm_file_is_refused() {
    let env = Env::new();
    let path = env.dir.path().join("notes.wasm");
    std::fs::write(&path, "these are not the bytes you are looking for").unwrap();
    let err = env.runtime("").load(&path).await.unwrap_err();
    assert!(matches!(err, LoadError::NotWasm { .. }), "{err}");
    assert!(
        err.to_string().contains("not a WebAssembly component"),
        "{err}"
    );
    std::fs::write(&path, [0xde, 0xad, 0xbe, 0xef, 0xff, 0x00]).unwrap();
    let err = env.runtime("").load(&path).await.unwrap_err();
    assert!(matches!(err, LoadError::NotWasm { .. }), "{err}");
}

#[tokio::test]
async fn truncated_component_is_refused() {
    let env = Env::new();
    let bytes = std::fs::read(HELLO).unwrap();
    let path = env.dir.path().join("truncated.wasm");
    std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    let err = env.runtime("").load(&path).await.unwrap_err();
    assert!(matches!(err, LoadError::Invalid { .. }), "{err}");
}

#[tokio::test]
async fn core_module_is_refused_with_how_to_fix() {
    let env = Env::new();
    let err = env.runtime("").load(CORE_MODULE).await.unwrap_err();
    assert!(matches!(err, LoadError::CoreModule(_)), "{err}");
    assert!(err.to_string().contains("wasm32-wasip2"), "{err}");
}

#[tokio::test]
async fn component_without_tool_exports_is_not_a_tool() {
    let env = Env::new();
    let err = env.runtime("").load(EMPTY_COMPONENT).await.unwrap_err();
    assert!(matches!(err, LoadError::NotATool { .. }), "{err}");
    assert!(err.to_string().contains("`describe` and `run`"), "{err}");
}

#[tokio::test]
async fn unknown_tollgate_version_is_refused_naming_it() {
    let env = Env::new();
    let err = env.runtime("").load(FUTURE_VERSION).await.unwrap_err();
    let LoadError::MissingImports { missing, .. } = &err else {
        panic!("{err}")
    };
    assert_eq!(missing, &vec!["tollgate:tool/log@9.0.0".to_owned()]);
    assert!(
        err.to_string()
            .contains("rebuild the tool with a matching tollgate-sdk"),
        "{err}"
    );
}

#[tokio::test]
async fn nonexistent_interface_import_is_named() {
    let env = Env::new();
    let err = env.runtime("").load(NONEXISTENT_IMPORT).await.unwrap_err();
    let LoadError::MissingImports { missing, .. } = &err else {
        panic!("{err}")
    };
    assert_eq!(missing, &vec!["acme:secret/vault@1.0.0".to_owned()]);
}

#[tokio::test]
async fn invalid_json_input_is_rejected_before_any_run() {
    let env = Env::new();
    let runtime = env.runtime("");
    let tool = load(&runtime, HELLO).await;
    let err = runtime.run(&tool, "{not json").await.unwrap_err();
    assert!(matches!(err, RunError::InputNotJson(_)), "{err}");
    assert!(
        runtime
            .ledger()
            .runs(&RunFilter::default())
            .unwrap()
            .is_empty(),
        "no run recorded"
    );
}

#[tokio::test]
async fn schema_violation_names_each_field() {
    let env = Env::new();
    let runtime = env.runtime("");
    let tool = load(&runtime, INVOICE).await;
    let input = r#"{"invoice_id":"nope","currency":"euro","lines":[],"total_cents":1}"#;
    let err = runtime.run(&tool, input).await.unwrap_err();
    let RunError::SchemaViolation { problems, .. } = &err else {
        panic!("{err}")
    };
    let text = problems.join("\n");
    assert!(text.contains("customer"), "missing field named: {text}");
    assert!(text.contains("/invoice_id"), "bad pattern located: {text}");
    assert!(text.contains("/currency"), "bad pattern located: {text}");
    assert!(
        runtime
            .ledger()
            .runs(&RunFilter::default())
            .unwrap()
            .is_empty(),
        "no run recorded"
    );
}

#[tokio::test]
async fn business_validation_failure_is_classified_and_final() {
    let env = Env::new();
    let runtime = env.runtime("");
    let tool = load(&runtime, INVOICE).await;
    let input =
        crate::harness::invoice("INV-7").replace("\"total_cents\":4650", "\"total_cents\":1");
    let report = runtime.run(&tool, &input).await.unwrap();
    let f = failure(&report);
    assert_eq!(f.class, tollgate::FailureClass::Validation, "{f}");
    assert_eq!(f.details.as_ref().unwrap()["expected"], 4650);
    assert_eq!(report.status, tollgate::ledger::RunStatus::Failed);
}

#[tokio::test]
async fn second_load_is_served_from_precompiled_cache() {
    use tollgate::engine::CacheOutcome;
    let env = Env::new();
    let first = load(&env.runtime(""), HELLO).await;
    assert_eq!(first.cache, CacheOutcome::Miss);
    // A new runtime has a new engine: only the disk cache can make this a hit.
    let second = load(&env.runtime(""), HELLO).await;
    assert_eq!(second.cache, CacheOutcome::Hit);
    assert_eq!(first.digest, second.digest);
    let runtime = env.runtime("");
    let tool = load(&runtime, HELLO).await;
    let report = runtime
        .run(&tool, r#"{"message":"from cache"}"#)
        .await
        .unwrap();
    assert_eq!(output(&report)["echo"], "from cache");
}

#[tokio::test]
async fn an_unchanged_component_loaded_again_in_one_runtime_is_not_read_again() {
    let env = Env::new();
    let runtime = env.runtime("");
    let path = env.dir.path().join("tool.wasm");
    std::fs::copy(HELLO, &path).unwrap();
    let inspect = async || runtime.inspect(&path).await.unwrap();
    // A file changed within the last two seconds could change again within one clock tick
    // unseen, so its load is not kept.
    let fresh = inspect().await;
    assert!(!Arc::ptr_eq(&fresh, &inspect().await));
    std::thread::sleep(std::time::Duration::from_millis(2_100));
    let first = inspect().await;
    assert!(
        Arc::ptr_eq(&first, &inspect().await),
        "the kept tool is returned"
    );

    // Any write changes the file's identity: the new bytes are loaded and checked.
    std::fs::write(&path, std::fs::read(INVOICE).unwrap()).unwrap();
    let changed = inspect().await;
    assert_ne!(changed.digest, first.digest);
    assert_eq!(changed.descriptor.name, "invoice");
}

#[tokio::test]
async fn tampered_cache_artifact_is_never_loaded() {
    use tollgate::engine::CacheOutcome;
    let env = Env::new();
    load(&env.runtime(""), HELLO).await;
    let mut tampered = 0;
    for entry in std::fs::read_dir(env.cache()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "cwasm") {
            let mut bytes = std::fs::read(&path).unwrap();
            let mid = bytes.len() / 2;
            bytes[mid] ^= 0xff;
            std::fs::write(&path, bytes).unwrap();
            tampered += 1;
        }
    }
    assert_eq!(tampered, 1);
    let reloaded = load(&env.runtime(""), HELLO).await;
    assert_eq!(
        reloaded.cache,
        CacheOutcome::Miss,
        "a tampered artifact is recompiled, not deserialized"
    );
    assert_eq!(
        load(&env.runtime(""), HELLO).await.cache,
        CacheOutcome::Hit,
        "and the cache heals"
    );
}

/// 1,000 runs through one engine: the pool recycles instance slots, so resident memory
/// levels off instead of growing with the number of runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousand_runs_reuse_one_engine_without_rss_growth() {
    const RUNS: usize = 1_000;
    const CONCURRENCY: usize = 8;
    const BOUND_BYTES: u64 = 24 << 20;
    let env = Env::new();
    let runtime = env.runtime("");
    let tool = load(&runtime, HELLO).await;
    let batch = |n: usize| {
        let runtime = runtime.clone();
        let tool = Arc::clone(&tool);
        async move {
            let mut tasks = tokio::task::JoinSet::new();
            for worker in 0..CONCURRENCY {
                let (runtime, tool) = (runtime.clone(), Arc::clone(&tool));
                tasks.spawn(async move {
                    for i in (worker..n).step_by(CONCURRENCY) {
                        let report = runtime
                            .run(&tool, &format!(r#"{{"message":"{i}"}}"#))
                            .await
                            .unwrap();
                        assert_eq!(output(&report)["echo"], i.to_string());
                    }
                });
            }
            while let Some(done) = tasks.join_next().await {
                done.unwrap();
            }
        }
    };
    batch(100).await; // warm up the pool, the allocator and SQLite's page cache
    let before = rss_bytes();
    batch(RUNS).await;
    let after = rss_bytes();
    let growth = after.saturating_sub(before);
    println!(
        "RSS before {} KiB, after {RUNS} runs {} KiB, growth {} KiB",
        before >> 10,
        after >> 10,
        growth >> 10
    );
    assert!(
        growth < BOUND_BYTES,
        "RSS grew by {growth} bytes over {RUNS} runs"
    );
    assert_eq!(
        runtime
            .ledger()
            .runs(&RunFilter {
                status: None,
                limit: 5_000
            })
            .unwrap()
            .len(),
        RUNS + 100
    );
}

fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("/proc/self/statm");
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .expect("resident pages");
    pages * 4096
}

#[tokio::test]
async fn unrecorded_call_runs_the_sandbox_without_touching_the_ledger() {
    let env = Env::new();
    let runtime = env.runtime(
        "[connectors.\"erp.post-invoice\"]\ntype = \"noop\"\n\n[tools.invoice]\neffects = [\"erp.post-invoice\"]\n",
    );
    let hello = load(&runtime, HELLO).await;
    let out = runtime
        .call_unrecorded(&hello, r#"{"message":"dry"}"#)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(out["echo"], "dry");
    assert_eq!(out["run_id"], tollgate::runs::UNRECORDED_RUN_ID);
    // Input is checked as for a run.
    let err = runtime
        .call_unrecorded(&hello, r#"{"mesage":"typo"}"#)
        .await
        .unwrap_err();
    assert!(matches!(err, RunError::SchemaViolation { .. }), "{err}");
    // A tool that writes is stopped at its first durable step, even though it is granted.
    let invoice = load(&runtime, INVOICE).await;
    let f = runtime
        .call_unrecorded(&invoice, &crate::harness::invoice("INV-DRY"))
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(f.class, tollgate::FailureClass::Permission, "{f}");
    assert!(f.message.contains("recorded run"), "{f}");
    let runs = runtime.ledger().runs(&RunFilter::default()).unwrap();
    assert!(runs.is_empty(), "nothing recorded: {runs:?}");
}
