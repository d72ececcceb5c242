//! The Tollgate demo: an agent's invoice tool posts to an ERP that times out after
//! succeeding. A naive retry would post twice; Tollgate posts exactly once. The same tool
//! written in Python and JavaScript shares the same exactly-once record.
//!
//! Runs against the embedded SQLite ledger at its default path (.tollgate/ledger.db).

use anyhow::{Context, Result, bail};
use std::sync::Arc;
use tollgate::ledger::RunStatus;
use tollgate::{Config, LoadedTool, RunReport, Runtime};
use tollgate_tests::erp::{Erp, Faults};
use tollgate_tests::plugins;

#[tokio::main]
async fn main() -> Result<()> {
    let erp = Erp::start(true).context("starting the demo ERP on 127.0.0.1")?;
    println!(
        "ERP listening on http://{} (deduplicates by Idempotency-Key)\n",
        erp.addr()
    );

    let config_text = format!(
        r#"# tollgate.toml — the operator decides where each effect kind goes.
[connectors."erp.post-invoice"]
type = "http"
method = "POST"
url = "{}"
timeout_ms = 500
honours_idempotency_keys = true

[tools.invoice]
effects = ["erp.post-invoice"]

[tools.py-invoice]                 # the same tool, written in Python
effects = ["erp.post-invoice"]

[tools.js-invoice]                 # and in JavaScript
effects = ["erp.post-invoice"]
"#,
        erp.invoices_url()
    );
    println!("{config_text}");
    let config = Config::parse(&config_text, "tollgate.toml".as_ref())?;
    let runtime = Runtime::builder().config(config).build()?;
    let ledger_path = tollgate::DEFAULT_LEDGER;
    let tool = runtime.load(plugins::INVOICE).await?;
    println!(
        "loaded tool `{}` {} (sha256 {}…, precompiled cache: {:?})\nledger: {ledger_path}\n",
        tool.descriptor.name,
        tool.descriptor.version,
        &tool.digest[..12],
        tool.cache
    );

    // Unique invoice numbers per demo run, so re-running the demo starts afresh.
    let batch = &uuid_suffix();
    let a = format!("INV-{batch}-1001");
    let b = format!("INV-{batch}-1002");
    let c = format!("INV-{batch}-1003");
    let d = format!("INV-{batch}-1004");
    let e = format!("INV-{batch}-1005");

    println!("1. Post invoice {a}.");
    let first = run(&runtime, &tool, &a).await?;
    show(&first);

    println!(
        "\n2. Post invoice {b}; the ERP books it, then answers only after the client gave up."
    );
    erp.inject(Faults {
        timeout_after_success: 1,
        hold_ms: 1_500,
        ..Faults::default()
    });
    let timed_out = run(&runtime, &tool, &b).await?;
    show(&timed_out);
    if timed_out.status != RunStatus::Running {
        bail!(
            "expected the timed-out run to be resumable, got {:?}",
            timed_out.status
        );
    }
    println!(
        "   the ERP has booked {b} {} time(s) so far, but the tool never heard back.",
        erp.postings_for(&b)
    );

    println!(
        "\n3. Retry: resume run {} from its checkpoint, same idempotency key.",
        timed_out.run_id
    );
    let retried = runtime.resume(&timed_out.run_id, Some(&tool)).await?;
    show(&retried);

    println!("\n4. The agent's framework retries the whole call for {a} (a new run).");
    let again = run(&runtime, &tool, &a).await?;
    show(&again);

    println!(
        "\nThe ledger's story of the retried run (`tollgate runs show {}`):\n",
        retried.run_id
    );
    print!("{}", runtime.story(&retried.run_id)?);

    println!("\n5. Policy change: postings now need a human's approval. Post invoice {c}.");
    let gated = Config::parse(
        &format!("{config_text}\n[tools.invoice.approval]\n\"erp.post-invoice\" = \"required\"\n"),
        "tollgate.toml".as_ref(),
    )?;
    let gated = Runtime::builder().config(gated).build()?;
    let gated_tool = gated.load(plugins::INVOICE).await?;
    let paused = run(&gated, &gated_tool, &c).await?;
    show(&paused);
    if paused.status != RunStatus::WaitingApproval || erp.postings_for(&c) != 0 {
        bail!("expected the run to wait for approval with nothing posted");
    }
    let queue = gated
        .escalations(&tollgate::ledger::EscalationFilter {
            status: Some(tollgate::ledger::EscalationStatus::Open),
            run_id: Some(paused.run_id.clone()),
            limit: 1,
        })
        .await?;
    let esc = queue.first().context("the approval escalation")?;
    println!(
        "   escalation #{} ({}): {}\n   evidence: {} attempt(s), action {}",
        esc.id,
        esc.reason,
        esc.summary,
        esc.evidence["attempts"].as_array().map_or(0, Vec::len),
        esc.evidence["action"]["key"]
    );
    println!("   `tollgate approve {}` — approve and resume:", esc.id);
    let settled = gated
        .settle(
            esc.id,
            tollgate::Decision::Approve,
            "amount checked",
            "demo-operator",
        )
        .await?;
    if let Some(report) = &settled.report {
        show(report);
    }

    println!(
        "\n6. The same tool written in Python and in JavaScript (one WIT world, an SDK per \
         language): each replays {a} and posts one new invoice."
    );
    for (language, path, fresh) in [
        ("Python", plugins::PY_INVOICE, &d),
        ("JavaScript", plugins::JS_INVOICE, &e),
    ] {
        let started = std::time::Instant::now();
        let tool = runtime.load(path).await?;
        println!(
            "   loaded `{}` ({language}, {:.1} MiB) in {:.0?} (precompiled cache: {:?})",
            tool.descriptor.name,
            std::fs::metadata(path)?.len() as f64 / (1024.0 * 1024.0),
            started.elapsed(),
            tool.cache
        );
        for (invoice, replay) in [(&a, true), (fresh, false)] {
            let report = run(&runtime, &tool, invoice).await?;
            show(&report);
            let replayed = report
                .result
                .as_ref()
                .ok()
                .map(|out| out["replayed"] == replay);
            if replayed != Some(true) {
                bail!("expected {invoice} through {language} to succeed with replayed = {replay}");
            }
        }
    }

    let stats = erp.stats();
    println!(
        "\nERP saw {} requests, answered {} from its key store.",
        stats.requests, stats.replays
    );
    let invoices = [&a, &b, &c, &d, &e];
    let counts: Vec<String> = invoices
        .iter()
        .map(|id| format!("{id}={}", erp.postings_for(id)))
        .collect();
    let exactly_once = invoices.iter().all(|id| erp.postings_for(id) == 1);
    println!(
        "ERP postings: {} — {}",
        counts.join(" "),
        if exactly_once {
            "exactly one posting per invoice"
        } else {
            "DUPLICATE OR MISSING POSTINGS"
        }
    );
    if !exactly_once {
        bail!("exactly-once violated: {counts:?}");
    }
    Ok(())
}

async fn run(runtime: &Runtime, tool: &Arc<LoadedTool>, invoice_id: &str) -> Result<RunReport> {
    Ok(runtime
        .run_with_prefix(tool, &tollgate_tests::invoice(invoice_id), "demo")
        .await?)
}

fn show(report: &RunReport) {
    match &report.result {
        Ok(output) => println!(
            "   run {} attempt {}: succeeded → {output}",
            report.run_id, report.attempt
        ),
        Err(failure) => println!(
            "   run {} attempt {}: {} ({:?})",
            report.run_id, report.attempt, failure, report.status
        ),
    }
}

fn uuid_suffix() -> String {
    let id = uuid_v4_hex();
    id[..6].to_uppercase()
}

fn uuid_v4_hex() -> String {
    format!("{:032x}", rand::random::<u128>())
}
