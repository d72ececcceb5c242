//! A real OTLP/HTTP trace receiver on 127.0.0.1: `POST /v1/traces` decodes the protobuf
//! `ExportTraceServiceRequest` an OpenTelemetry exporter sends and keeps its spans, so a
//! test can read the traces a process exported. Or, [`Otlp::stalled`], a receiver that
//! takes each export and never answers, as a hung collector does.

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value;
use prost::Message as _;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use crate::server::Server;

/// One exported span, with its ids in hex as `traceparent` writes them.
#[derive(Debug, Clone)]
pub struct Span {
    pub name: String,
    pub trace_id: String,
    pub span_id: String,
    /// Empty for a root span.
    pub parent_span_id: String,
    /// String, integer and boolean attributes, as text.
    pub attributes: BTreeMap<String, String>,
    /// The `service.name` of the process that sent it.
    pub service: String,
}

impl Span {
    pub fn attr(&self, key: &str) -> Option<&str> {
        self.attributes.get(key).map(String::as_str)
    }
}

#[derive(Default)]
struct Received {
    spans: Vec<Span>,
    exports: u64,
}

#[derive(Clone)]
struct Shared {
    received: Arc<Mutex<Received>>,
    /// Set as the receiver stops: a stalled export then ends, so the server can stop.
    stopping: tokio::sync::watch::Receiver<bool>,
}

pub struct Otlp {
    server: Server,
    shared: Shared,
    stop: tokio::sync::watch::Sender<bool>,
}

impl Otlp {
    pub fn start() -> std::io::Result<Self> {
        Self::serve(false)
    }

    /// A collector that accepts each export's request and never answers it.
    pub fn stalled() -> std::io::Result<Self> {
        Self::serve(true)
    }

    fn serve(stall: bool) -> std::io::Result<Self> {
        let (stop, stopping) = tokio::sync::watch::channel(false);
        let shared = Shared {
            received: Arc::default(),
            stopping,
        };
        let route = if stall { post(stalled) } else { post(export) };
        let app = Router::new()
            .route("/v1/traces", route)
            .with_state(shared.clone());
        Ok(Self {
            server: Server::start("otlp", app)?,
            shared,
            stop,
        })
    }

    /// The base URL, as `OTEL_EXPORTER_OTLP_ENDPOINT` takes it.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.server.addr())
    }

    /// Every span received so far.
    pub fn spans(&self) -> Vec<Span> {
        self.lock().spans.clone()
    }

    /// Export requests received, answered or not.
    pub fn exports(&self) -> u64 {
        self.lock().exports
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Received> {
        self.shared.lock()
    }
}

impl Drop for Otlp {
    fn drop(&mut self) {
        // Before the server's graceful stop, which waits for every request in flight.
        let _ = self.stop.send(true);
    }
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Received> {
        self.received.lock().unwrap_or_else(|p| p.into_inner())
    }
}

async fn export(State(shared): State<Shared>, body: Bytes) -> Response {
    let request = match ExportTraceServiceRequest::decode(body) {
        Ok(request) => request,
        Err(e) => {
            return (StatusCode::BAD_REQUEST, format!("not OTLP protobuf: {e}")).into_response();
        }
    };
    let mut received = shared.lock();
    received.exports += 1;
    for resource_spans in request.resource_spans {
        let service = resource_spans
            .resource
            .iter()
            .flat_map(|r| &r.attributes)
            .find(|kv| kv.key == "service.name")
            .and_then(|kv| text(kv.value.as_ref()?.value.as_ref()?))
            .unwrap_or_default();
        for span in resource_spans.scope_spans.into_iter().flat_map(|s| s.spans) {
            let attributes = span
                .attributes
                .iter()
                .filter_map(|kv| Some((kv.key.clone(), text(kv.value.as_ref()?.value.as_ref()?)?)))
                .collect();
            received.spans.push(Span {
                name: span.name,
                trace_id: hex(&span.trace_id),
                span_id: hex(&span.span_id),
                parent_span_id: hex(&span.parent_span_id),
                attributes,
                service: service.clone(),
            });
        }
    }
    let answer = ExportTraceServiceResponse::default().encode_to_vec();
    ([(header::CONTENT_TYPE, "application/x-protobuf")], answer).into_response()
}

async fn stalled(State(mut shared): State<Shared>) -> Response {
    shared.lock().exports += 1;
    let _ = shared.stopping.wait_for(|stopping| *stopping).await;
    StatusCode::SERVICE_UNAVAILABLE.into_response()
}

fn text(value: &any_value::Value) -> Option<String> {
    match value {
        any_value::Value::StringValue(s) => Some(s.clone()),
        any_value::Value::IntValue(i) => Some(i.to_string()),
        any_value::Value::BoolValue(b) => Some(b.to_string()),
        _ => None,
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
