//! The MCP request handler: `tools/list` from each tool's `describe`, `tools/call` as a run.
//!
//! Tool failures are MCP tool errors (`isError`, with the failure class and the run ID) so an
//! agent can reason about them; JSON-RPC errors are kept for protocol problems (an unknown
//! tool, a malformed `_meta`).

use super::McpError;
use super::progress::Progress;
use crate::ledger::LedgerError;
use crate::runs::{CallKey, RunError, RunOptions, RunReport};
use crate::server::access::{Access, AccessError, Agent};
use crate::server::drain::Drain;
use crate::server::metrics::Metrics;
use crate::tool::LoadedTool;
use crate::{FailureClass, Runtime};
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, Implementation,
    JsonObject, ListToolsResult, MetaObject, PaginatedRequestParams, ServerCapabilities,
    ServerConfig, Tool, ToolAnnotations,
};
use rmcp::service::RequestContext;
use rmcp::{ErrorData, RoleServer, ServerHandler};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use tracing::Instrument as _;

/// `_meta` key of a `tools/call` request: the caller's idempotency key for the whole call.
/// A repeat with the same key and arguments returns the first run's result (joining it while
/// it runs) without a new run; other arguments under the key are a `conflict` tool error.
pub const IDEMPOTENCY_KEY_META: &str = "tollgate/idempotencyKey";
/// `_meta` keys of a `tools/call` result.
pub const RUN_ID_META: &str = "tollgate/runId";
pub const ATTEMPT_META: &str = "tollgate/attempt";
pub const STATUS_META: &str = "tollgate/status";

const MAX_KEY_BYTES: usize = 512;

struct Served {
    loaded: Arc<LoadedTool>,
    tool: Tool,
}

/// The tools of one config, served over MCP.
#[derive(Clone)]
pub struct McpServer {
    runtime: Runtime,
    tools: Arc<BTreeMap<String, Served>>,
    /// Where calls are counted, when a server exposes metrics.
    metrics: Option<Arc<Metrics>>,
    /// A node's drain, which cuts the calls still running at its end.
    drain: Option<Drain>,
    /// Who may call over HTTP.
    access: Arc<Access>,
}

impl McpServer {
    /// Loads every tool of the runtime's config that names a `component` (relative paths are
    /// taken from `config_dir`), holding each to its policy.
    pub async fn load(runtime: Runtime, config_dir: &Path) -> Result<Self, McpError> {
        let mut tools = BTreeMap::new();
        for (name, policy) in &runtime.config().tools {
            let Some(component) = &policy.component else {
                continue;
            };
            let path = config_dir.join(component);
            let shown = path.display().to_string();
            let loaded = runtime.load(&path).await.map_err(|source| McpError::Load {
                tool: name.clone(),
                path: shown.clone(),
                source,
            })?;
            if &loaded.descriptor.name != name {
                return Err(McpError::NameMismatch {
                    configured: name.clone(),
                    found: loaded.descriptor.name.clone(),
                    path: shown,
                });
            }
            let tool = mcp_tool(&loaded);
            tools.insert(name.clone(), Served { loaded, tool });
        }
        if tools.is_empty() {
            return Err(McpError::NoTools);
        }
        Ok(Self {
            runtime,
            tools: Arc::new(tools),
            metrics: None,
            drain: None,
            access: Arc::default(),
        })
    }

    /// The names of the tools served.
    pub fn tool_names(&self) -> Vec<String> {
        self.tools.keys().cloned().collect()
    }

    /// The tool served as `name`, loaded and held to its policy.
    pub fn tool(&self, name: &str) -> Option<&Arc<LoadedTool>> {
        self.tools.get(name).map(|served| &served.loaded)
    }

    pub fn runtime(&self) -> &Runtime {
        &self.runtime
    }

    /// Who may call over HTTP.
    pub fn access(&self) -> &Arc<Access> {
        &self.access
    }

    /// Holds HTTP callers to the config's `[mcp]` rules, reading the tokens' secrets
    /// (relative files from `config_dir`). Only an HTTP server needs them: over stdio the
    /// process that spawned the server owns it.
    pub fn with_access(mut self, config_dir: &Path) -> Result<Self, AccessError> {
        self.access = Arc::new(Access::load(&self.runtime.config().mcp, config_dir)?);
        Ok(self)
    }

    /// Counts every call into `metrics`.
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// Counts calls in flight into `drain`, and gives up their attempts' leases when it is
    /// cut.
    pub fn with_drain(mut self, drain: Drain) -> Self {
        self.drain = Some(drain);
        self
    }
}

impl McpServer {
    /// Resolves when a node's drain cuts the calls still running; never without a drain.
    async fn cut(&self) {
        match &self.drain {
            Some(drain) => drain.cut().await,
            None => std::future::pending().await,
        }
    }

    /// Whether the run is in the ledger (a run recorded `async` is not, until it ends); a
    /// ledger that cannot tell is taken to have it.
    async fn recorded(&self, run_id: &str) -> bool {
        let id = run_id.to_owned();
        crate::ledger::read(self.runtime.ledger(), move |l| l.run(&id))
            .await
            .map_or(true, |run| run.is_some())
    }

    /// The answer to a call whose run future was dropped (so the tool stopped at its last
    /// await point), after recording why: the client cancelled it, or the node's drain cut
    /// it and gave up its attempt's lease for another node.
    async fn stopped(&self, ended: Ended, run_id: &str, keyed: bool) -> CallToolResult {
        if let Ended::Cancelled = ended {
            let why = "the MCP client cancelled the call";
            if let Err(e) = self.runtime.cancelled(run_id, why).await {
                tracing::warn!(run_id, error = %e, "could not record the cancellation");
            }
            return failure_result(FailureClass::Transient, why, Some(run_id), None);
        }
        let why = "the node serving the call shut down before it ended";
        let released = match self.runtime.released(run_id, why).await {
            Ok(released) => released,
            Err(e) => {
                tracing::warn!(run_id, error = %e, "could not release the attempt's lease");
                false
            }
        };
        if !released && !self.recorded(run_id).await {
            return failure_result(
                FailureClass::Transient,
                &format!(
                    "{why}; run {run_id} was not recorded (its tool's runs are written once they end) and nothing resumes it: call again"
                ),
                Some(run_id),
                None,
            );
        }
        let next = if released {
            "another node resumes it now"
        } else {
            // Between attempts (a backoff), or the release failed: a recovery loop takes it
            // once the backoff and a lease have passed.
            "a node's recovery loop resumes it once its retry backoff and a lease have passed"
        };
        let then = if keyed {
            "repeat the call with the same idempotency key for its result".to_owned()
        } else {
            format!("`tollgate runs show {run_id}` shows how it ends")
        };
        failure_result(
            FailureClass::Transient,
            &format!("{why}; run {run_id} is resumable and {next}: {then}"),
            Some(run_id),
            None,
        )
    }
}

/// How a call's run future ended.
enum Ended {
    Ran(Result<RunReport, RunError>),
    /// The client cancelled the call.
    Cancelled,
    /// The node's drain ended before the call did.
    Cut,
}

/// A tool as MCP lists it. A tool that declares no effects cannot change the outside world
/// (`readOnlyHint`); one that does is `idempotentHint`, since every effect is key-guarded.
fn mcp_tool(loaded: &LoadedTool) -> Tool {
    let d = &loaded.descriptor;
    let schema: JsonObject = d.input_schema.as_object().cloned().unwrap_or_default();
    let writes = !d.effects.is_empty();
    let mut annotations = ToolAnnotations::new().read_only(!writes);
    if writes {
        annotations = annotations.idempotent(true);
    }
    Tool::new(d.name.clone(), d.description.clone(), Arc::new(schema)).with_annotations(annotations)
}

impl ServerHandler for McpServer {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new("tollgate", env!("CARGO_PKG_VERSION")))
            .with_instructions(format!(
                "Sandboxed tools with exactly-once effects. Each call is a recorded run (its ID is in the result's _meta \"{RUN_ID_META}\"). Pass _meta \"{IDEMPOTENCY_KEY_META}\" to make a whole call safe to repeat."
            ))
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        let agent = Agent::of(&context);
        Ok(ListToolsResult::with_all_items(
            self.tools
                .iter()
                .filter(|(name, _)| agent.as_ref().is_none_or(|a| a.may_call(name)))
                .map(|(_, s)| s.tool.clone())
                .collect(),
        ))
    }

    fn get_tool(&self, name: &str) -> Option<Tool> {
        self.tools.get(name).map(|s| s.tool.clone())
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let name = request.name.to_string();
        let served = self.tools.get(&name).ok_or_else(|| {
            ErrorData::invalid_params(
                format!("unknown tool `{name}`: tools/list names the tools served"),
                None,
            )
        })?;
        let agent = Agent::of(&context);
        let span = match &agent {
            Some(agent) => tracing::info_span!("call", tool = %name, agent = %agent.name),
            None => tracing::info_span!("call", tool = %name),
        };
        continue_callers_trace(&span, &context);
        // The agent's own grant, on top of the tool's policy: checked before any run exists.
        let _slot = match &agent {
            Some(agent) if !agent.may_call(&name) => {
                span.in_scope(|| {
                    tracing::warn!("refused: the agent's token does not grant this tool")
                });
                return Err(ErrorData::invalid_params(
                    format!(
                        "tool `{name}` is not granted to agent `{}`: its [[mcp.tokens]] entry lists the tools it may call",
                        agent.name
                    ),
                    None,
                ));
            }
            Some(agent) => match agent.begin_call() {
                Ok(slot) => Some(slot),
                Err(why) => {
                    span.in_scope(|| tracing::warn!("refused: {why}"));
                    return Ok(failure_result(FailureClass::Transient, &why, None, None).into());
                }
            },
            // Every HTTP request passed the guard; one without an agent there is a defect,
            // and it gets no more than an agent would.
            None if self.access.requires_tokens()
                && context
                    .extensions
                    .get::<axum::http::request::Parts>()
                    .is_some() =>
            {
                return Err(ErrorData::internal_error(
                    "this request carries no authenticated agent",
                    None,
                ));
            }
            None => None,
        };
        self.call(served, name, request.arguments, context)
            .instrument(span)
            .await
    }
}

impl McpServer {
    /// A `tools/call` of a served tool, as a run.
    async fn call(
        &self,
        served: &Served,
        name: String,
        arguments: Option<JsonObject>,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        // After the lookup: a label per name a client makes up would grow without bound.
        let timer = self.metrics.as_ref().map(|m| m.call(&name));
        let args = Value::Object(arguments.unwrap_or_default());
        let key = idempotency_key(context.meta.get(IDEMPOTENCY_KEY_META))?;
        let run_id = self
            .runtime
            .new_run_id("mcp")
            .map_err(|e| ErrorData::internal_error(e.to_string(), None))?;
        let options = RunOptions {
            prefix: "mcp".into(),
            run_id: Some(run_id.clone()),
            call_key: key.clone().map(|key| CallKey {
                key,
                args_digest: args_digest(&name, &args),
            }),
            ..RunOptions::default()
        };
        let progress = context
            .meta
            .get_progress_token()
            .map(|token| Progress::spawn(&run_id, token, context.peer.clone()));
        let input = args.to_string();
        let _in_flight = self.drain.as_ref().map(Drain::enter);
        let run = self
            .runtime
            .run_with_options(&served.loaded, &input, &options, true);
        let outcome = tokio::select! {
            outcome = run => Ended::Ran(outcome),
            () = context.ct.cancelled() => Ended::Cancelled,
            () = self.cut() => Ended::Cut,
        };
        if let (Some(progress), Ended::Ran(_)) = (progress, &outcome) {
            progress.finish().await;
        }
        let result = match outcome {
            Ended::Ran(Ok(report)) => report_result(&report, false),
            Ended::Ran(Err(RunError::Ledger(LedgerError::CallKeyUsed {
                run_id: first,
                tool,
                args_digest: first_digest,
                ..
            }))) => {
                let same = tool == name
                    && options
                        .call_key
                        .is_some_and(|c| c.args_digest == first_digest);
                if same {
                    // A join may drive the run itself (its host died), so it is cut and
                    // cancelled like a run of this call's own.
                    let joined = tokio::select! {
                        joined = self.runtime.join(&served.loaded, &first) => Ended::Ran(joined),
                        () = context.ct.cancelled() => Ended::Cancelled,
                        () = self.cut() => Ended::Cut,
                    };
                    match joined {
                        Ended::Ran(Ok(report)) => report_result(&report, true),
                        Ended::Ran(Err(e)) => run_error_result(&e),
                        ended => self.stopped(ended, &first, key.is_some()).await,
                    }
                } else {
                    failure_result(
                        FailureClass::Conflict,
                        &format!(
                            "idempotency key `{}` was first used by run {first} for `{tool}` with other arguments; use a new key for a new call",
                            key.unwrap_or_default()
                        ),
                        Some(&first),
                        None,
                    )
                }
            }
            Ended::Ran(Err(e)) => run_error_result(&e),
            ended => self.stopped(ended, &run_id, key.is_some()).await,
        };
        if let Some(timer) = timer {
            timer.ended(&status_label(&result));
        }
        Ok(result.into())
    }
}

/// Makes a call's span continue the trace its caller sent: W3C `traceparent`/`tracestate` on
/// the HTTP request, else in the request's `_meta` (SEP-414).
fn continue_callers_trace(span: &tracing::Span, context: &RequestContext<RoleServer>) {
    let headers = context
        .extensions
        .get::<http::request::Parts>()
        .map(|parts| &parts.headers)
        .filter(|headers| headers.contains_key("traceparent"));
    match headers {
        Some(headers) => {
            crate::telemetry::continue_trace(span, &opentelemetry_http::HeaderExtractor(headers));
        }
        None => crate::telemetry::continue_trace(span, &MetaCarrier(&context.meta)),
    }
}

/// An MCP request's `_meta` as a carrier of W3C trace context.
struct MetaCarrier<'a>(&'a MetaObject);

impl opentelemetry::propagation::Extractor for MetaCarrier<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        match key {
            "traceparent" => self.0.get_traceparent(),
            "tracestate" => self.0.get_tracestate(),
            _ => None,
        }
    }
    fn keys(&self) -> Vec<&str> {
        vec!["traceparent", "tracestate"]
    }
}

/// The run status a result carries in its `_meta`, or `error` for a call that ended without
/// a run to report.
fn status_label(result: &CallToolResult) -> String {
    result
        .meta
        .as_ref()
        .and_then(|meta| meta.get(STATUS_META))
        .and_then(Value::as_str)
        .unwrap_or("error")
        .to_owned()
}

fn idempotency_key(value: Option<&Value>) -> Result<Option<String>, ErrorData> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if !s.is_empty() && s.len() <= MAX_KEY_BYTES => Ok(Some(s.clone())),
        Some(_) => Err(ErrorData::invalid_params(
            format!(
                "_meta \"{IDEMPOTENCY_KEY_META}\" must be a string of 1 to {MAX_KEY_BYTES} bytes"
            ),
            None,
        )),
    }
}

/// Digest of the tool and its arguments; serde_json's maps are ordered, so equal arguments
/// hash equal whatever order the caller sent their keys in.
fn args_digest(tool: &str, args: &Value) -> String {
    let mut hasher = Sha256::new();
    hasher.update(tool.as_bytes());
    hasher.update([0]);
    hasher.update(args.to_string().as_bytes());
    hex::encode(hasher.finalize())
}

fn meta(run_id: &str, report: Option<&RunReport>, replayed: bool) -> MetaObject {
    let mut meta = MetaObject::new();
    meta.insert(RUN_ID_META.into(), json!(run_id));
    if let Some(report) = report {
        meta.insert(ATTEMPT_META.into(), json!(report.attempt));
        meta.insert(STATUS_META.into(), json!(report.status));
    }
    if replayed {
        meta.insert("tollgate/replayed".into(), json!(true));
    }
    meta
}

/// A run's result: its output as text and `structuredContent`, or its failure as a tool
/// error; the run ID, attempt and status in `_meta`.
fn report_result(report: &RunReport, replayed: bool) -> CallToolResult {
    match &report.result {
        Ok(output) => {
            let structured = match output {
                Value::Object(_) => output.clone(),
                other => json!({ "result": other }),
            };
            CallToolResult::structured(structured).with_meta(Some(meta(
                &report.run_id,
                Some(report),
                replayed,
            )))
        }
        Err(failure) => {
            let mut result = failure_result(
                failure.class,
                &failure.message,
                Some(&report.run_id),
                failure.details.clone(),
            );
            if let Some(s) = result.structured_content.as_mut() {
                s["status"] = json!(report.status);
            }
            result.with_meta(Some(meta(&report.run_id, Some(report), replayed)))
        }
    }
}

fn failure_result(
    class: FailureClass,
    message: &str,
    run_id: Option<&str>,
    details: Option<Value>,
) -> CallToolResult {
    let text = match run_id {
        Some(run_id) => format!("{class}: {message} (run {run_id})"),
        None => format!("{class}: {message}"),
    };
    let mut result = CallToolResult::error(vec![ContentBlock::text(text)]);
    result.structured_content = Some(json!({
        "class": class,
        "message": message,
        "details": details,
        "run_id": run_id,
    }));
    match run_id {
        Some(run_id) => result.with_meta(Some(meta(run_id, None, false))),
        None => result,
    }
}

/// A call that could not become a run (bad input, an unloadable tool) or whose ledger failed.
fn run_error_result(error: &RunError) -> CallToolResult {
    let class = match error {
        RunError::InputNotJson(_)
        | RunError::InputTooLarge { .. }
        | RunError::SchemaViolation { .. }
        | RunError::LockKey(_) => FailureClass::Validation,
        RunError::Parked { .. } => FailureClass::Conflict,
        // The run is resumable: the same call again (same call key) recovers the effect.
        RunError::OutcomeUnrecorded { run_id, effect, .. } => {
            return failure_result(
                FailureClass::Transient,
                &error.to_string(),
                Some(run_id),
                Some(effect.details()),
            );
        }
        _ => FailureClass::Fatal,
    };
    failure_result(class, &error.to_string(), None, None)
}
