//! Run traces over OpenTelemetry: when an OTLP endpoint is configured, the `tollgate`
//! spans (`call`, `run`, `attempt`, `effect`, `connector`) are exported over OTLP/HTTP, and
//! HTTP effects carry the W3C `traceparent` of their connector span downstream, so one trace
//! holds the agent's call, each attempt and the downstream's own work.
//!
//! Configured the standard OpenTelemetry way, by environment: `OTEL_EXPORTER_OTLP_ENDPOINT`
//! (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`), `OTEL_EXPORTER_OTLP_HEADERS`,
//! `OTEL_SERVICE_NAME`, `OTEL_BSP_*`; `OTEL_SDK_DISABLED=true` turns it off.
//!
//! Export never holds a run up: finished spans go into a bounded queue (dropped when it is
//! full) that a batch processor drains on its own thread, with its own blocking HTTP client.
//! A collector that is down or slow costs dropped spans and a warning, never a failed or
//! slower run.

use opentelemetry::propagation::TextMapPropagator as _;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_http::{Bytes, HttpClient, HttpError, Request, Response};
use opentelemetry_otlp::{WithExportConfig as _, WithHttpConfig as _};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use std::time::Duration;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;
use tracing_subscriber::Layer;
use tracing_subscriber::registry::LookupSpan;

const ENDPOINT: &str = "OTEL_EXPORTER_OTLP_ENDPOINT";
const TRACES_ENDPOINT: &str = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT";
const PROTOCOLS: [&str; 2] = [
    "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
    "OTEL_EXPORTER_OTLP_PROTOCOL",
];
/// How long one export may take before it counts as failed.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(5);
/// The most of a collector's answer read: it carries at most a partial-success note.
const MAX_ANSWER_BYTES: u64 = 64 * 1024;
/// The longest `tracestate` sent downstream; W3C asks vendors to keep theirs within 512
/// bytes, and a caller's longer one would only make requests a downstream may refuse.
const MAX_TRACESTATE_BYTES: usize = 512;
/// How long a process waits, as it exits, for its last spans to go out.
const FLUSH_AT_EXIT: Duration = Duration::from_secs(2);
/// The spans exported: the host's own, at info and above, with the events logged in them
/// (a tool's own log lines among them, each cut to its policy's `max_log_bytes`, at most 128
/// per span). The libraries under the host (wasmtime, hyper, the exporter itself) add none.
const TARGET: &str = "tollgate";

#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error(
        "{var}={value:?}: traces are exported over OTLP/HTTP with protobuf only; set it to \"http/protobuf\" or unset it"
    )]
    Protocol { var: &'static str, value: String },
    #[error(
        "cannot start the OTLP trace exporter: {0}; check {ENDPOINT} (e.g. http://127.0.0.1:4318)"
    )]
    Exporter(String),
}

/// The running exporter; [`Traces::shutdown`] sends what is left.
#[derive(Debug)]
pub struct Traces {
    provider: SdkTracerProvider,
}

impl Traces {
    /// Sends the spans still queued, waiting at most [`FLUSH_AT_EXIT`] for the collector.
    pub fn shutdown(self) {
        if let Err(e) = self.provider.shutdown_with_timeout(FLUSH_AT_EXIT) {
            tracing::warn!("traces not all exported at exit: {e}");
        }
    }
}

/// Whether the environment names an OTLP endpoint for traces.
pub fn configured() -> bool {
    let set = |var| std::env::var(var).is_ok_and(|v| !v.trim().is_empty());
    let disabled = std::env::var("OTEL_SDK_DISABLED").is_ok_and(|v| v.eq_ignore_ascii_case("true"));
    !disabled && (set(ENDPOINT) || set(TRACES_ENDPOINT))
}

/// The layer that exports the host's spans, and the handle that flushes them at exit; `None`
/// when no endpoint is configured. Call it outside any async runtime: the exporter's
/// blocking client must not be made inside one.
pub fn otlp<S>() -> Result<Option<(impl Layer<S>, Traces)>, TelemetryError>
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
{
    if !configured() {
        return Ok(None);
    }
    for var in PROTOCOLS {
        if let Ok(value) = std::env::var(var)
            && !value.trim().is_empty()
            && value.trim() != "http/protobuf"
        {
            return Err(TelemetryError::Protocol { var, value });
        }
    }
    let client = reqwest::blocking::Client::builder()
        .timeout(EXPORT_TIMEOUT)
        .connect_timeout(EXPORT_TIMEOUT)
        .build()
        .map_err(|e| TelemetryError::Exporter(e.to_string()))?;
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_http_client(BlockingClient(client))
        .with_timeout(EXPORT_TIMEOUT)
        .build()
        .map_err(|e| TelemetryError::Exporter(e.to_string()))?;
    let mut resource = opentelemetry_sdk::Resource::builder().with_attribute(
        opentelemetry::KeyValue::new("service.version", env!("CARGO_PKG_VERSION")),
    );
    // OTEL_SERVICE_NAME or a service.name in OTEL_RESOURCE_ATTRIBUTES, both read by the
    // builder, win over this default.
    let named = std::env::var_os("OTEL_SERVICE_NAME").is_some()
        || std::env::var("OTEL_RESOURCE_ATTRIBUTES").is_ok_and(|a| a.contains("service.name="));
    if !named {
        resource = resource.with_service_name("tollgate");
    }
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource.build())
        .build();
    let layer = tracing_opentelemetry::layer()
        .with_tracer(provider.tracer(TARGET))
        .with_filter(
            tracing_subscriber::filter::Targets::new().with_target(TARGET, tracing::Level::INFO),
        );
    Ok(Some((layer, Traces { provider })))
}

/// The W3C trace context (`traceparent`, and `tracestate` if any) of the current span, for a
/// request that continues it downstream; empty when traces are not exported.
pub fn trace_headers() -> http::HeaderMap {
    let mut headers = http::HeaderMap::new();
    let context = tracing::Span::current().context();
    TraceContextPropagator::new().inject_context(
        &context,
        &mut opentelemetry_http::HeaderInjector(&mut headers),
    );
    if headers
        .get("tracestate")
        .is_some_and(|state| state.len() > MAX_TRACESTATE_BYTES)
    {
        headers.remove("tracestate");
    }
    headers
}

/// Makes `span` continue the trace a caller sent in W3C `traceparent`/`tracestate` headers
/// (or in the same keys of an MCP request's `_meta`). A missing or malformed context leaves
/// `span` the root of a new trace.
pub fn continue_trace(span: &tracing::Span, carrier: &dyn opentelemetry::propagation::Extractor) {
    let context = TraceContextPropagator::new().extract(carrier);
    if opentelemetry::trace::TraceContextExt::span(&context)
        .span_context()
        .is_valid()
    {
        // Fails only when no exporting layer is installed, when there is nothing to link.
        let _ = span.set_parent(context);
    }
}

/// `reqwest`'s blocking client as the exporter's HTTP client. The batch processor runs each
/// export on its own thread, outside any async runtime, which is what a blocking client
/// needs; it also keeps export traffic off the runtime that drives runs.
#[derive(Debug)]
struct BlockingClient(reqwest::blocking::Client);

#[async_trait::async_trait]
impl HttpClient for BlockingClient {
    async fn send_bytes(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        let (parts, body) = request.into_parts();
        let response = self
            .0
            .request(parts.method, parts.uri.to_string())
            .headers(parts.headers)
            .body(body.to_vec())
            .send()?;
        let mut answer = Response::new(Bytes::new());
        *answer.status_mut() = response.status();
        *answer.headers_mut() = response.headers().clone();
        let mut body = Vec::new();
        std::io::Read::read_to_end(
            &mut std::io::Read::take(response, MAX_ANSWER_BYTES),
            &mut body,
        )?;
        *answer.body_mut() = Bytes::from(body);
        Ok(answer)
    }
}
