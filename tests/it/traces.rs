//! Run traces: the real `tollgate` binary exporting its spans over OTLP/HTTP to a real
//! receiver on loopback that decodes the protobufs, and the demo ERP reading the
//! `traceparent` an HTTP effect carries.

use std::time::Duration;

use serde_json::json;
use tollgate::server::mcp::RUN_ID_META;
use tollgate_tests::erp::Erp;
use tollgate_tests::otlp::{Otlp, Span};
use tollgate_tests::plugins::INVOICE;

use crate::harness::{Env, closed_port, erp_config, invoice, tollgate_with, wait_until};
use crate::serve::{Node, mcp_call};

const ENDPOINT: &str = "OTEL_EXPORTER_OTLP_ENDPOINT";

fn invoice_config(env: &Env, erp: &Erp) -> std::path::PathBuf {
    env.config_file(&format!(
        "{}component = {INVOICE:?}\n",
        erp_config(&erp.invoices_url(), true, 5_000)
    ))
}

/// `tollgate run` of the invoice tool, exporting to `endpoint` when given: its run id and
/// what it logged.
fn run_invoice(
    env: &Env,
    config: &std::path::Path,
    id: &str,
    endpoint: Option<&str>,
) -> (String, String) {
    let mut command = tollgate_with(env, config);
    command
        .args(["run", INVOICE, "--input", &invoice(id), "--json"])
        .env_remove(ENDPOINT)
        .env_remove("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT");
    if let Some(endpoint) = endpoint {
        command.env(ENDPOINT, endpoint);
    }
    let out = command.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["status"], "succeeded", "{report} {stderr}");
    (
        report["run_id"].as_str().unwrap().to_owned(),
        stderr.into_owned(),
    )
}

/// The one span named `name` among `spans`.
fn one<'s>(spans: &'s [Span], name: &str) -> &'s Span {
    let named: Vec<&Span> = spans.iter().filter(|s| s.name == name).collect();
    assert_eq!(named.len(), 1, "one `{name}` span: {spans:#?}");
    named[0]
}

#[test]
fn a_runs_spans_form_one_trace_with_its_ids_and_the_downstream_continues_it() {
    let erp = Erp::start(true).unwrap();
    let otlp = Otlp::start().unwrap();
    let env = Env::new();
    let config = invoice_config(&env, &erp);

    // Without an endpoint nothing is traced, and nothing is sent downstream.
    let (_, logged) = run_invoice(&env, &config, "INV-T0", None);
    assert!(
        !logged.contains("WARN"),
        "nothing to say without an endpoint: {logged}"
    );
    assert!(erp.stats().traceparents.is_empty(), "{:?}", erp.stats());

    let (run_id, logged) = run_invoice(&env, &config, "INV-T1", Some(&otlp.endpoint()));
    assert!(
        !logged.contains("WARN") && !logged.contains("ERROR"),
        "{logged}"
    );
    // The process flushes its spans before it exits.
    let spans = otlp.spans();
    let run = one(&spans, "run");
    let attempt = one(&spans, "attempt");
    let effect = one(&spans, "effect");
    let connector = one(&spans, "connector");
    assert_eq!(run.attr("run_id"), Some(run_id.as_str()), "{run:?}");
    assert_eq!(run.attr("tool"), Some("invoice"), "{run:?}");
    assert_eq!(run.service, "tollgate");
    assert_eq!(attempt.attr("attempt"), Some("1"), "{attempt:?}");
    for span in [effect, connector] {
        assert_eq!(span.attr("kind"), Some("erp.post-invoice"), "{span:?}");
        assert_eq!(span.attr("key"), Some("post-invoice:INV-T1"), "{span:?}");
    }
    // One trace, nested as the run is: run > attempt > effect > connector call.
    for span in [attempt, effect, connector] {
        assert_eq!(span.trace_id, run.trace_id, "{span:?}");
    }
    assert_eq!(run.parent_span_id, "", "a CLI run is a trace's root");
    assert_eq!(attempt.parent_span_id, run.span_id);
    assert_eq!(effect.parent_span_id, attempt.span_id);
    assert_eq!(connector.parent_span_id, effect.span_id);
    // The downstream's own work joins the trace under the connector call.
    assert_eq!(
        erp.stats().traceparents,
        [format!("00-{}-{}-01", run.trace_id, connector.span_id)]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_served_call_continues_the_agents_trace_from_its_header_or_its_meta() {
    let erp = Erp::start(true).unwrap();
    let otlp = Otlp::start().unwrap();
    let env = Env::new();
    let config = invoice_config(&env, &erp);
    let endpoint = otlp.endpoint();
    let node = Node::start_with(
        &env,
        &config,
        &[],
        &[(ENDPOINT, &endpoint), ("OTEL_BSP_SCHEDULE_DELAY", "50")],
    );
    let agent_trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let agent_span = "00f067aa0ba902b7";
    let traceparent = format!("00-{agent_trace}-{agent_span}-01");

    // An agent that sends its trace context as an HTTP header, as W3C Trace Context says.
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert("traceparent", traceparent.parse().unwrap());
    let client = reqwest::Client::builder()
        .default_headers(headers)
        .build()
        .unwrap();
    let by_header = mcp_call(
        &client,
        &node.base,
        "invoice",
        serde_json::from_str(&invoice("INV-H")).unwrap(),
        json!({}),
    )
    .await
    .unwrap();
    // One that sends it in the request's `_meta` (SEP-414), over a plain client.
    let meta_trace = "0af7651916cd43dd8448eb211c80319c";
    let by_meta = mcp_call(
        &reqwest::Client::new(),
        &node.base,
        "invoice",
        serde_json::from_str(&invoice("INV-M")).unwrap(),
        json!({"traceparent": format!("00-{meta_trace}-b7ad6b7169203331-01")}),
    )
    .await
    .unwrap();

    for (result, trace, parent) in [
        (&by_header, agent_trace, agent_span),
        (&by_meta, meta_trace, "b7ad6b7169203331"),
    ] {
        let run_id = result["_meta"][RUN_ID_META].as_str().unwrap().to_owned();
        // The call's span ends after its answer went out, and is exported a moment later.
        let exported = |name: &str| {
            otlp.spans()
                .iter()
                .any(|s| s.name == name && s.trace_id == trace)
        };
        wait_until(Duration::from_secs(30), || {
            exported("run") && exported("call")
        })
        .await;
        let spans: Vec<Span> = otlp
            .spans()
            .into_iter()
            .filter(|s| s.trace_id == trace)
            .collect();
        let call = one(&spans, "call");
        let run = one(&spans, "run");
        assert_eq!(
            call.parent_span_id, parent,
            "the agent's span is the call's parent"
        );
        assert_eq!(call.attr("tool"), Some("invoice"));
        assert_eq!(run.parent_span_id, call.span_id);
        assert_eq!(run.attr("run_id"), Some(run_id.as_str()));
        let connector = one(&spans, "connector");
        assert!(
            erp.stats()
                .traceparents
                .contains(&format!("00-{trace}-{}-01", connector.span_id)),
            "{:?}",
            erp.stats().traceparents
        );
    }
}

/// Export failures cost spans and a warning, never the run. (How little they cost in time is
/// the batch exporter's design: spans leave through a bounded queue on its own thread, and the
/// exit waits at most 2 s for them; no timed assertion here.)
#[test]
fn a_collector_that_is_down_or_hung_fails_no_run_and_is_reported() {
    let erp = Erp::start(true).unwrap();
    let hung = Otlp::stalled().unwrap();
    let env = Env::new();
    let config = invoice_config(&env, &erp);

    let down = format!("http://127.0.0.1:{}", closed_port());
    let (_, logged) = run_invoice(&env, &config, "INV-D", Some(&down));
    assert!(
        logged.to_lowercase().contains("export"),
        "the lost spans are reported: {logged}"
    );
    let (_, logged) = run_invoice(&env, &config, "INV-S", Some(&hung.endpoint()));
    // The hung collector was sent the spans, and never answered: the run had ended and
    // the process exited anyway, saying its spans were not all exported.
    assert!(hung.exports() >= 1);
    assert!(logged.contains("traces not all exported"), "{logged}");
    assert_eq!(erp.postings_for("INV-D"), 1);
    assert_eq!(erp.postings_for("INV-S"), 1);

    // A protocol the exporter does not speak is a configuration error, said at start.
    let out = tollgate_with(&env, &config)
        .args(["run", INVOICE, "--input", &invoice("INV-P")])
        .env(ENDPOINT, &down)
        .env("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("OTEL_EXPORTER_OTLP_PROTOCOL") && stderr.contains("http/protobuf"),
        "{stderr}"
    );
    assert_eq!(erp.postings_for("INV-P"), 0, "nothing runs on a bad config");
}
