//! `hostile-net`: part of the hostile-tool suite. It sends an HTTP request to whatever URL
//! its input names through `wasi:http/outgoing-handler`, and follows redirects on its own,
//! each hop a new request: a granted host can redirect it to one that is not.
//!
//! The host must check every request, hops included, against the operator's policy and
//! refuse the others with `HttpRequestDenied` (reported here as `permission`); what the
//! host refuses must never reach the network.

use serde_json::{Value, json};
use tollgate_sdk::prelude::*;
use wasi::http::outgoing_handler;
use wasi::http::types::{
    ErrorCode, Fields, IncomingBody, IncomingResponse, Method, OutgoingBody, OutgoingRequest,
    Scheme,
};
use wasi::io::streams::StreamError;

/// Redirects followed at most; the response after the last one is returned as it is.
const MAX_REDIRECTS: usize = 5;
/// `blocking-write-and-flush` takes at most 4096 bytes per call.
const WRITE_CHUNK: usize = 4096;
const READ_CHUNK: u64 = 64 * 1024;

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct Input {
    /// `http://host[:port][/path][?query]` (`https://` is sent as such too).
    url: String,
    /// The request method, e.g. `GET` or `POST`.
    #[serde(default = "default_method")]
    method: String,
    /// The request body, sent with a `content-length` header.
    #[serde(default)]
    body: Option<String>,
    /// Follow 301, 302, 303, 307 and 308 responses that carry a `location` header.
    #[serde(default = "default_follow")]
    follow_redirects: bool,
}

fn default_method() -> String {
    "GET".to_owned()
}

fn default_follow() -> bool {
    true
}

struct HostileNet;

impl Tool for HostileNet {
    const NAME: &'static str = "hostile-net";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const DESCRIPTION: &'static str =
        "Hostile-tool suite: sends an HTTP request to any URL and follows its redirects.";
    type Input = Input;
    type Output = Value;

    fn run(_ctx: &Context, input: Input) -> Result<Value, Error> {
        let mut method = input.method;
        let mut body = input.body;
        let mut url = input.url;
        let mut hops = Vec::new();
        loop {
            hops.push(url.clone());
            let response = send(&method, &url, body.as_deref())?;
            let next = match response.location {
                Some(location)
                    if input.follow_redirects
                        && is_redirect(response.status)
                        && hops.len() <= MAX_REDIRECTS =>
                {
                    resolve(&url, &location)
                }
                _ => {
                    return Ok(json!({
                        "status": response.status,
                        "body": String::from_utf8_lossy(&response.body),
                        "hops": hops,
                    }));
                }
            };
            if response.status == 303 {
                // "See Other": the next request is a GET without a body.
                method = default_method();
                body = None;
            }
            url = next;
        }
    }
}

fn is_redirect(status: u16) -> bool {
    matches!(status, 301 | 302 | 303 | 307 | 308)
}

/// A response as far as this tool cares.
struct Response {
    status: u16,
    location: Option<String>,
    body: Vec<u8>,
}

/// The parts of an absolute URL that `outgoing-request` takes.
struct Target {
    scheme: Scheme,
    authority: String,
    path_with_query: String,
}

fn parse(url: &str) -> Result<Target, Error> {
    let invalid = |why: &str| {
        Error::validation(format!("url {url}: {why}")).with_details(json!({"url": url}))
    };
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| invalid("not an absolute URL"))?;
    let scheme = match scheme.to_ascii_lowercase().as_str() {
        "http" => Scheme::Http,
        "https" => Scheme::Https,
        _ => return Err(invalid("only http:// and https:// URLs are supported")),
    };
    let rest = rest
        .split_once('#')
        .map_or(rest, |(before, _fragment)| before);
    let split = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, path_with_query) = rest.split_at(split);
    if authority.is_empty() {
        return Err(invalid("no host"));
    }
    let path_with_query = match path_with_query {
        "" => "/".to_owned(),
        query if query.starts_with('?') => format!("/{query}"),
        path => path.to_owned(),
    };
    Ok(Target {
        scheme,
        authority: authority.to_owned(),
        path_with_query,
    })
}

/// `location` resolved against the URL that answered with it.
fn resolve(base: &str, location: &str) -> String {
    if location.contains("://") {
        return location.to_owned();
    }
    let (scheme, rest) = base.split_once("://").unwrap_or(("http", base));
    let split = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(split);
    if let Some(network_path) = location.strip_prefix("//") {
        format!("{scheme}://{network_path}")
    } else if location.starts_with('/') {
        format!("{scheme}://{authority}{location}")
    } else {
        // Relative to the base path's directory.
        let path = path.split(['?', '#']).next().unwrap_or_default();
        let directory = path.rfind('/').map_or("/", |slash| &path[..=slash]);
        format!("{scheme}://{authority}{directory}{location}")
    }
}

fn wasi_method(method: &str) -> Method {
    match method {
        "GET" => Method::Get,
        "HEAD" => Method::Head,
        "POST" => Method::Post,
        "PUT" => Method::Put,
        "DELETE" => Method::Delete,
        "CONNECT" => Method::Connect,
        "OPTIONS" => Method::Options,
        "TRACE" => Method::Trace,
        "PATCH" => Method::Patch,
        other => Method::Other(other.to_owned()),
    }
}

/// The tool error for an `error-code` from the host: a refusal is `permission`, the rest
/// (connection refused, timeouts, protocol errors) `transient`.
fn http_error(method: &str, url: &str, code: &ErrorCode) -> Error {
    let error = match code {
        ErrorCode::HttpRequestDenied => {
            Error::permission(format!("{method} {url}: request denied by the host"))
        }
        _ => Error::transient(format!("{method} {url}: {code:?}")),
    };
    error.with_details(json!({"url": url, "error": format!("{code:?}")}))
}

/// A stream failure: the host's `error-code` when it gives one, else `transient`.
fn stream_error(method: &str, url: &str, what: &str, error: StreamError) -> Error {
    match error {
        StreamError::LastOperationFailed(io) => match wasi::http::types::http_error_code(&io) {
            Some(code) => http_error(method, url, &code),
            None => Error::transient(format!("{method} {url}: {what}: {}", io.to_debug_string()))
                .with_details(json!({"url": url})),
        },
        StreamError::Closed => Error::transient(format!("{method} {url}: {what}: stream closed"))
            .with_details(json!({"url": url})),
    }
}

/// One request through `outgoing-handler.handle`, its response read to the end.
fn send(method: &str, url: &str, body: Option<&str>) -> Result<Response, Error> {
    let target = parse(url)?;
    let misuse = |what: &str| Error::fatal(format!("{method} {url}: {what}"));

    let headers = match body {
        Some(body) => Fields::from_list(&[(
            "content-length".to_owned(),
            body.len().to_string().into_bytes(),
        )])
        .map_err(|error| misuse(&format!("content-length header: {error:?}")))?,
        None => Fields::new(),
    };
    let request = OutgoingRequest::new(headers);
    request
        .set_method(&wasi_method(method))
        .map_err(|()| Error::validation(format!("{method} {url}: invalid method")))?;
    request
        .set_scheme(Some(&target.scheme))
        .map_err(|()| misuse("invalid scheme"))?;
    request
        .set_authority(Some(&target.authority))
        .map_err(|()| Error::validation(format!("{method} {url}: invalid authority")))?;
    request
        .set_path_with_query(Some(&target.path_with_query))
        .map_err(|()| Error::validation(format!("{method} {url}: invalid path")))?;
    let outgoing_body = request.body().map_err(|()| misuse("request body taken"))?;

    let future =
        outgoing_handler::handle(request, None).map_err(|code| http_error(method, url, &code))?;

    // A host that refuses the request closes the body stream; its reason arrives on the
    // response future, so a failed body write is reported only if the future has none.
    let mut body_error = None;
    if let Some(body) = body {
        let stream = outgoing_body
            .write()
            .map_err(|()| misuse("request body stream taken"))?;
        for chunk in body.as_bytes().chunks(WRITE_CHUNK) {
            if let Err(error) = stream.blocking_write_and_flush(chunk) {
                body_error = Some(stream_error(method, url, "request body", error));
                break;
            }
        }
        // The stream is a child of the body: it must go before the body is finished.
        drop(stream);
    }
    if body_error.is_none() {
        OutgoingBody::finish(outgoing_body, None).map_err(|code| http_error(method, url, &code))?;
    } else {
        drop(outgoing_body);
    }

    future.subscribe().block();
    let response: IncomingResponse = match future.get() {
        Some(Ok(Err(code))) => return Err(http_error(method, url, &code)),
        _ if body_error.is_some() => return Err(body_error.unwrap_or_else(|| misuse("body"))),
        Some(Ok(Ok(response))) => response,
        Some(Err(())) => return Err(misuse("response already taken")),
        None => return Err(misuse("response not ready after its pollable fired")),
    };

    let status = response.status();
    let location = {
        let headers = response.headers();
        headers
            .get("location")
            .first()
            .map(|value| String::from_utf8_lossy(value).into_owned())
    };
    let incoming_body = response
        .consume()
        .map_err(|()| misuse("response body taken"))?;
    let stream = incoming_body
        .stream()
        .map_err(|()| misuse("response body stream taken"))?;
    let mut bytes = Vec::new();
    loop {
        match stream.blocking_read(READ_CHUNK) {
            Ok(chunk) => bytes.extend_from_slice(&chunk),
            Err(StreamError::Closed) => break,
            Err(error) => return Err(stream_error(method, url, "response body", error)),
        }
    }
    drop(stream);
    drop(IncomingBody::finish(incoming_body));

    Ok(Response {
        status,
        location,
        body: bytes,
    })
}

tollgate_sdk::export_tool!(HostileNet);
