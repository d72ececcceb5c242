//! The `http` connector: one configured method and URL per effect kind; the tool supplies only
//! the JSON body. Every request carries `Idempotency-Key` and `X-Tollgate-Run-Id`. With a
//! `reconcile` lookup, it can ask downstream whether a key's effect happened.

use super::connector::{BoxFuture, Connector, ConnectorError, Dispatch, Reconciled, Response};
use crate::config::HttpConnectorConfig;
use crate::failure::FailureClass;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use std::time::Duration;

pub const IDEMPOTENCY_KEY: &str = "idempotency-key";
pub const RUN_ID_HEADER: &str = "x-tollgate-run-id";
pub const ATTEMPT_HEADER: &str = "x-tollgate-attempt";
pub const FENCE_HEADER: &str = "x-tollgate-fence";

#[derive(Debug, Clone)]
pub struct HttpConnector {
    client: reqwest::Client,
    method: reqwest::Method,
    url: reqwest::Url,
    headers: HeaderMap,
    honours_keys: bool,
    max_response_bytes: usize,
    timeout_ms: u64,
    probe: Option<Probe>,
}

impl HttpConnector {
    pub fn new(config: &HttpConnectorConfig) -> Result<Self, String> {
        let url =
            reqwest::Url::parse(&config.url).map_err(|e| format!("url `{}`: {e}", config.url))?;
        let method = reqwest::Method::from_bytes(config.method.as_bytes())
            .map_err(|_| format!("`{}` is not an HTTP method", config.method))?;
        let mut headers = HeaderMap::new();
        for (name, value) in &config.headers {
            let name = HeaderName::from_bytes(name.as_bytes())
                .map_err(|e| format!("header `{name}`: {e}"))?;
            let value =
                HeaderValue::from_str(value).map_err(|e| format!("header `{name}` value: {e}"))?;
            headers.insert(name, value);
        }
        let client = reqwest::Client::builder()
            .timeout(Duration::from_millis(config.timeout_ms))
            // A redirect would re-send an effect somewhere the operator did not configure.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| format!("http client: {e}"))?;
        let probe = match &config.reconcile {
            Some(probe) => Some(Probe {
                method: reqwest::Method::from_bytes(probe.method.as_bytes())
                    .map_err(|_| format!("reconcile: `{}` is not an HTTP method", probe.method))?,
                url: probe.url.clone(),
                margin_ms: probe.margin_ms,
                not_found_body: probe.not_found_body.clone(),
            }),
            None => None,
        };
        Ok(Self {
            client,
            method,
            url,
            headers,
            honours_keys: config.honours_idempotency_keys,
            max_response_bytes: usize::try_from(config.max_response_bytes).unwrap_or(usize::MAX),
            timeout_ms: config.timeout_ms,
            probe,
        })
    }

    async fn send(&self, call: Dispatch<'_>) -> Result<Response, ConnectorError> {
        let request = self
            .client
            .request(self.method.clone(), self.url.clone())
            .headers(self.headers.clone())
            .header(IDEMPOTENCY_KEY, call.key)
            .header(RUN_ID_HEADER, call.run_id)
            .header(ATTEMPT_HEADER, call.attempt.to_string())
            .headers(fence_header(call.fence))
            .headers(crate::telemetry::trace_headers())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(call.payload.to_owned());
        let mut response = request.send().await.map_err(|e| self.request_error(&e))?;
        let status = response.status();
        let retry_after_ms = retry_after_ms(response.headers());
        let (body, failed) = read_capped(&mut response, self.max_response_bytes).await;
        // Headers arrived, so downstream acted (or refused) already: the status stands, but a
        // success whose body broke off leaves its outcome unknown.
        if let Some(e) = failed
            && status.is_success()
        {
            return Err(ConnectorError {
                outcome_unknown: true,
                ..ConnectorError::new(
                    FailureClass::Timeout,
                    format!(
                        "{} {}: response body failed after status {status}: {e}",
                        self.method, self.url
                    ),
                )
            });
        }
        let code = status.as_u16();
        if status.is_success() {
            return Ok(Response {
                status: Some(code),
                body,
            });
        }
        let (class, outcome_unknown) = classify_status(code);
        Err(ConnectorError {
            class,
            message: format!("{} {} returned {status}", self.method, self.url),
            status: Some(code),
            body: Some(body),
            outcome_unknown,
            before_send: false,
            retry_after_ms,
        })
    }

    fn request_error(&self, e: &reqwest::Error) -> ConnectorError {
        let target = format!("{} {}", self.method, self.url);
        if e.is_builder() {
            // The request could not even be built: nothing left the host.
            ConnectorError {
                before_send: true,
                ..ConnectorError::new(
                    FailureClass::Validation,
                    format!(
                        "{target}: the request could not be built: {}",
                        root_cause(e)
                    ),
                )
            }
        } else if e.is_connect() {
            // Nothing reached downstream: safe to retry whatever the key semantics.
            ConnectorError::new(
                FailureClass::Transient,
                format!("{target}: cannot connect: {}", root_cause(e)),
            )
        } else if e.is_timeout() {
            ConnectorError {
                outcome_unknown: true,
                ..ConnectorError::new(
                    FailureClass::Timeout,
                    format!("{target}: timed out waiting for the response"),
                )
            }
        } else {
            ConnectorError {
                outcome_unknown: true,
                ..ConnectorError::new(
                    FailureClass::Transient,
                    format!("{target}: {}", root_cause(e)),
                )
            }
        }
    }
}

/// A downstream's body as the text the ledger stores and the tool is given, on the first call
/// and on every replay alike: invalid UTF-8, and U+0000, which a PostgreSQL ledger cannot
/// hold, become U+FFFD.
fn body_text(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    if text.contains('\0') {
        text.replace('\0', "\u{FFFD}")
    } else {
        text.into_owned()
    }
}

/// Reads at most `cap` bytes of body, marking a cut one; the error that broke it off, if any.
async fn read_capped(
    response: &mut reqwest::Response,
    cap: usize,
) -> (String, Option<reqwest::Error>) {
    let mut body = Vec::new();
    let mut truncated = false;
    let mut failed = None;
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                let room = cap.saturating_sub(body.len());
                if chunk.len() > room {
                    body.extend_from_slice(chunk.get(..room).unwrap_or_default());
                    truncated = true;
                    break;
                }
                body.extend_from_slice(&chunk);
            }
            Ok(None) => break,
            Err(e) => {
                failed = Some(e);
                break;
            }
        }
    }
    let mut body = body_text(&body);
    if truncated {
        body.push_str("…[truncated]");
    }
    (body, failed)
}

/// Asks downstream by idempotency key whether an effect happened (`[connectors.X.reconcile]`).
#[derive(Debug, Clone)]
struct Probe {
    method: reqwest::Method,
    /// The lookup URL with `{key}` where the key goes.
    url: String,
    margin_ms: u64,
    /// Text a 404's body must hold to count as "not found", if set.
    not_found_body: Option<String>,
}

/// What a key may hold unencoded in a path segment or query value: RFC 3986's unreserved
/// characters. Everything else is percent-encoded.
const KEY_IN_URL: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

impl HttpConnector {
    async fn probe(&self, probe: &Probe, call: Dispatch<'_>) -> Reconciled {
        let key = percent_encoding::utf8_percent_encode(call.key, KEY_IN_URL);
        let target = probe.url.replace("{key}", &key.to_string());
        let unknown =
            |status: Option<u16>, message: String| Reconciled::Unknown { status, message };
        let url = match reqwest::Url::parse(&target) {
            Ok(url) => url,
            Err(e) => return unknown(None, format!("probe url `{target}`: {e}")),
        };
        let request = self
            .client
            .request(probe.method.clone(), url)
            .headers(self.headers.clone())
            .header(IDEMPOTENCY_KEY, call.key)
            .header(RUN_ID_HEADER, call.run_id)
            .headers(crate::telemetry::trace_headers());
        let mut response = match request.send().await {
            Ok(response) => response,
            Err(e) => {
                return unknown(
                    None,
                    format!("{} {target}: {}", probe.method, root_cause(&e)),
                );
            }
        };
        let status = response.status();
        let code = Some(status.as_u16());
        let (body, failed) = read_capped(&mut response, self.max_response_bytes).await;
        match (status.as_u16(), failed) {
            (_, Some(e)) => unknown(
                code,
                format!(
                    "{} {target}: response body failed after status {status}: {e}",
                    probe.method
                ),
            ),
            (200..=299, None) => Reconciled::Happened(Response { status: code, body }),
            // A 404 from something other than the lookup itself (a wrong path, a proxy) would
            // re-send the effect: with `not_found_body`, only downstream's own answer counts.
            (404, None)
                if probe
                    .not_found_body
                    .as_deref()
                    .is_none_or(|text| body.contains(text)) =>
            {
                Reconciled::NotHappened { status: code }
            }
            (_, None) => unknown(
                code,
                format!("{} {target} returned {status}: {body}", probe.method),
            ),
        }
    }
}

/// Maps a non-2xx status to a class, and whether downstream may have acted anyway.
/// 503 and 429 mean "not processed"; other 5xx may have failed after acting.
fn classify_status(code: u16) -> (FailureClass, bool) {
    match code {
        429 | 503 => (FailureClass::Transient, false),
        500..=599 => (FailureClass::Transient, true),
        408 => (FailureClass::Timeout, true),
        401 | 403 => (FailureClass::Permission, false),
        409 => (FailureClass::Conflict, false),
        _ => (FailureClass::Validation, false),
    }
}

fn retry_after_ms(headers: &HeaderMap) -> Option<u64> {
    let value = headers.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?;
    value
        .trim()
        .parse::<u64>()
        .ok()
        .map(|s| s.saturating_mul(1000))
}

fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = e;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}

impl Connector for HttpConnector {
    fn honours_idempotency_keys(&self) -> bool {
        self.honours_keys
    }
    fn describe(&self) -> String {
        format!("http {} {}", self.method, self.url)
    }
    fn max_response_bytes(&self) -> u64 {
        // The cap, plus the marker a truncated body carries.
        u64::try_from(self.max_response_bytes)
            .unwrap_or(u64::MAX)
            .saturating_add(16)
    }
    fn dispatch<'a>(
        &'a self,
        call: Dispatch<'a>,
    ) -> BoxFuture<'a, Result<Response, ConnectorError>> {
        Box::pin(self.send(call))
    }
    fn can_reconcile(&self) -> bool {
        self.probe.is_some()
    }
    fn lands_within_ms(&self) -> u64 {
        self.probe
            .as_ref()
            .map_or(0, |p| self.timeout_ms.saturating_add(p.margin_ms))
    }
    fn start_within_ms(&self) -> Option<u64> {
        self.probe.as_ref().map(|p| p.margin_ms / 2)
    }
    fn reconcile<'a>(&'a self, call: Dispatch<'a>) -> BoxFuture<'a, Reconciled> {
        Box::pin(async move {
            match &self.probe {
                Some(probe) => self.probe(probe, call).await,
                None => Reconciled::Unknown {
                    status: None,
                    message: format!("no [connectors.\"{}\".reconcile] is configured", call.kind),
                },
            }
        })
    }
}

/// `X-Tollgate-Fence` when the run holds a business-object lock.
fn fence_header(fence: Option<i64>) -> reqwest::header::HeaderMap {
    let mut headers = reqwest::header::HeaderMap::new();
    if let Some(fence) = fence {
        headers.insert(FENCE_HEADER, reqwest::header::HeaderValue::from(fence));
    }
    headers
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_classes() {
        assert_eq!(classify_status(429), (FailureClass::Transient, false));
        assert_eq!(classify_status(503), (FailureClass::Transient, false));
        assert_eq!(classify_status(500), (FailureClass::Transient, true));
        assert_eq!(classify_status(422), (FailureClass::Validation, false));
        assert_eq!(classify_status(403), (FailureClass::Permission, false));
        assert_eq!(classify_status(409), (FailureClass::Conflict, false));
    }

    #[test]
    fn keys_keep_unreserved_characters_in_the_lookup_url() {
        let encoded = percent_encoding::utf8_percent_encode("post-invoice:INV_1.a~/é", KEY_IN_URL)
            .to_string();
        assert_eq!(encoded, "post-invoice%3AINV_1.a~%2F%C3%A9");
    }

    #[test]
    fn retry_after_seconds() {
        let mut headers = HeaderMap::new();
        headers.insert(reqwest::header::RETRY_AFTER, HeaderValue::from_static("3"));
        assert_eq!(retry_after_ms(&headers), Some(3_000));
    }
}
