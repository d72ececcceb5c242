//! Outgoing HTTP (`wasi:http`): reads from the hosts a policy's `http` grants name, with the
//! methods they allow (GET and HEAD by default; writes go through effects, which are
//! recorded). Every request passes [`HttpGate::send_request`], so a redirect the tool follows
//! is a new request and is checked again. A denial is a `HttpRequestDenied` error code for
//! the tool and a `policy.denied` entry in the journal.

use super::{AttemptContext, ToolState, journal_denial};
use crate::failure::{Failure, FailureClass};
use crate::policy::Policy;
use std::sync::Arc;
use wasmtime_wasi_http::{
    Error as HttpError, RequestOptions, WasiBody, WasiHttpCtxView, WasiHttpHooks, WasiHttpView,
};

/// Interfaces (version track 0.2) the linker provides for HTTP.
pub const PROVIDED: &[&str] = &["wasi:http/types", "wasi:http/outgoing-handler"];

/// The per-run hook that checks each request against the policy.
pub struct HttpGate {
    policy: Arc<Policy>,
    tool: String,
    attempt: Option<Arc<AttemptContext>>,
}

impl HttpGate {
    pub fn new(policy: Arc<Policy>, tool: String, attempt: Option<Arc<AttemptContext>>) -> Self {
        Self {
            policy,
            tool,
            attempt,
        }
    }

    /// The grant that allows this request, or why none does.
    fn check(&self, request: &http::Request<WasiBody>) -> Result<(), String> {
        let uri = request.uri();
        let Some(host) = uri.host() else {
            return Err(format!("request to `{uri}` names no host"));
        };
        let https = uri.scheme_str() == Some("https");
        let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
        self.policy
            .check_http(host, port, request.method().as_str())
            .map(|_| ())
            .map_err(|why| why.replace("<tool>", &self.tool))
    }
}

impl WasiHttpHooks for HttpGate {
    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        fut: Box<dyn Future<Output = Result<(), HttpError>> + Send>,
    ) -> Box<
        dyn Future<
                Output = Result<
                    (
                        http::Response<WasiBody>,
                        Box<dyn Future<Output = Result<(), HttpError>> + Send>,
                    ),
                    HttpError,
                >,
            > + Send,
    > {
        _ = fut;
        if let Err(why) = self.check(&request) {
            let asked = format!("{} {}", request.method(), request.uri());
            let failure = Failure::new(FailureClass::Permission, format!("{asked}: {why}"));
            match &self.attempt {
                Some(ctx) => {
                    journal_denial(ctx, &asked, &format!("tools.{}.http", self.tool), &failure)
                }
                None => tracing::warn!(tool = %self.tool, "denied: {}", failure.message),
            }
            return Box::new(async { Err(HttpError::HttpRequestDenied) });
        }
        Box::new(async move {
            use http_body_util::BodyExt;
            let (response, io) = wasmtime_wasi_http::default_send_request(request, options).await?;
            Ok((
                response.map(BodyExt::boxed_unsync),
                Box::new(io) as Box<dyn Future<Output = _> + Send>,
            ))
        })
    }
}

impl WasiHttpView for ToolState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            hooks: &mut self.http_gate,
            table: &mut self.table,
            ctx: &mut self.http,
        }
    }
}

pub fn add_to_linker(l: &mut wasmtime::component::Linker<ToolState>) -> wasmtime::Result<()> {
    wasmtime_wasi_http::p2::add_only_http_to_linker_async(l)
}
