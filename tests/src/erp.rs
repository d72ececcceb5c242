//! A small ERP HTTP server for demos and tests, on 127.0.0.1.
//!
//! `POST /invoices` books a posting, and `GET /invoices/by-key/{key}` looks one up by the
//! `Idempotency-Key` it was booked under. With keys honoured (the default) a repeated
//! `Idempotency-Key` returns the first response and books nothing; without, every request
//! books. Faults can be injected to reproduce production: answer only after the client has
//! given up ("timeout after success"), fail before booking, or slow every request down. The
//! random faults draw from a generator that a test can seed, so a run's faults repeat.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use crate::server::Server;

/// Faults to inject into the next requests.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Faults {
    /// The next N requests book the posting, then answer after `hold_ms`.
    pub timeout_after_success: u32,
    /// How long such a request holds its response.
    pub hold_ms: u64,
    /// The next N requests answer 503 without booking.
    pub unavailable: u32,
    /// Every request waits this long before booking.
    pub delay_ms: u64,
    /// Every request that books, or is answered from the idempotency store, then waits this
    /// long before answering: the window in which downstream has acted and the client does
    /// not yet know.
    pub delay_after_booking_ms: u64,
    /// The next N requests answer 422 without booking.
    pub reject: u32,
    /// The body of those answers, as it is; JSON naming a credit hold when `None`.
    pub reject_body: Option<String>,
    /// The next N requests answer 500 without booking: to the client, an outcome it cannot
    /// know.
    pub fail_unbooked: u32,
    /// The next N requests answer 429 with `Retry-After: retry_after_s`, without booking.
    pub throttle: u32,
    pub retry_after_s: u64,
    /// Every request, with this probability in percent, answers 503 without booking.
    pub flaky_unavailable_pct: u32,
    /// Every request, with this probability in percent, books and then holds its answer
    /// for `hold_ms` (past the client's timeout).
    pub flaky_timeout_pct: u32,
    /// Not a fault: fencing, as a downstream that checks `X-Tollgate-Fence` does. A request
    /// whose fence is below the largest a request for the same invoice has carried is refused
    /// with 409, without booking, when it comes to book (after `delay_ms`).
    pub refuse_stale_fences: bool,
    /// Seeds the generator the `flaky_*` faults draw from (from the OS when `None`), so
    /// the same requests meet the same faults.
    pub seed: Option<u64>,
}

/// What the ERP has seen.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Stats {
    pub requests: u64,
    pub postings: u64,
    /// Postings per invoice ID.
    pub by_invoice: BTreeMap<String, u64>,
    /// Requests answered from the idempotency store.
    pub replays: u64,
    /// Requests that carried no Idempotency-Key.
    pub without_key: u64,
    /// Run IDs seen in `X-Tollgate-Run-Id`.
    pub run_ids: Vec<String>,
    /// Requests received per Idempotency-Key, counted on arrival.
    pub requests_by_key: BTreeMap<String, u64>,
    /// Requests received per `invoice_id` of their body, counted on arrival (before any
    /// fault or delay), keys or not: every send, booked or not.
    pub requests_by_invoice: BTreeMap<String, u64>,
    /// Requests per Idempotency-Key that booked or were answered from the idempotency
    /// store, counted the moment downstream acted (before `delay_after_booking_ms`).
    pub settled_by_key: BTreeMap<String, u64>,
    /// Requests that booked and then held their answer for `hold_ms` (timeouts after
    /// success, counted and flaky).
    pub held: u64,
    /// W3C `traceparent` of each request that carried one, in arrival order.
    pub traceparents: Vec<String>,
    /// `X-Tollgate-Fence` of each request that carried one, in arrival order.
    pub fences: Vec<i64>,
    /// Requests refused for a fence below one seen before (`refuse_stale_fences`).
    pub stale_fences: u64,
    /// The most requests ever handled at once.
    pub max_in_flight: u64,
    /// Lookups by idempotency key (`GET /invoices/by-key/{key}`), and of those, the ones
    /// that found a booking.
    pub lookups: u64,
    pub lookups_found: u64,
}

struct Inner {
    in_flight: u64,
    honour_keys: bool,
    faults: Faults,
    stats: Stats,
    by_key: BTreeMap<String, serde_json::Value>,
    /// The largest `X-Tollgate-Fence` that arrived for each invoice.
    newest_fence: BTreeMap<String, i64>,
    rng: StdRng,
}

#[derive(Clone)]
struct Shared(Arc<Mutex<Inner>>);

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panicking handler must not take the demo down with a poisoned lock.
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A running ERP server; stops when dropped.
pub struct Erp {
    server: Server,
    shared: Shared,
}

impl Erp {
    /// Starts a server on an ephemeral port of 127.0.0.1, on its own thread and runtime.
    pub fn start(honour_keys: bool) -> std::io::Result<Self> {
        Self::start_on(honour_keys, 0)
    }

    /// [`Erp::start`] on a given port (0 for an ephemeral one), e.g. one a run found closed.
    pub fn start_on(honour_keys: bool, port: u16) -> std::io::Result<Self> {
        let shared = Shared(Arc::new(Mutex::new(Inner {
            in_flight: 0,
            honour_keys,
            faults: Faults::default(),
            stats: Stats::default(),
            by_key: BTreeMap::new(),
            newest_fence: BTreeMap::new(),
            rng: StdRng::from_os_rng(),
        })));
        let app = Router::new()
            .route("/invoices", post(book))
            .route("/invoices/by-key/{key}", get(lookup))
            .route("/stats", get(stats))
            .with_state(shared.clone());
        Ok(Self {
            server: Server::start_on("erp", port, app)?,
            shared,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.server.addr()
    }

    /// The URL of the invoice endpoint.
    pub fn invoices_url(&self) -> String {
        format!("http://{}/invoices", self.server.addr())
    }

    /// Replaces the faults; a `seed` also restarts the faults' generator from it.
    pub fn inject(&self, faults: Faults) {
        let mut s = self.shared.lock();
        if let Some(seed) = faults.seed {
            s.rng = StdRng::seed_from_u64(seed);
        }
        s.faults = faults;
    }

    pub fn stats(&self) -> Stats {
        self.shared.lock().stats.clone()
    }

    pub fn postings_for(&self, invoice_id: &str) -> u64 {
        self.shared
            .lock()
            .stats
            .by_invoice
            .get(invoice_id)
            .copied()
            .unwrap_or(0)
    }
}

/// Counts a request in flight until dropped.
struct InFlight(Shared);

impl InFlight {
    fn enter(shared: &Shared) -> Self {
        let mut s = shared.lock();
        s.in_flight += 1;
        s.stats.max_in_flight = s.stats.max_in_flight.max(s.in_flight);
        Self(shared.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.lock().in_flight -= 1;
    }
}

async fn book(State(shared): State<Shared>, headers: HeaderMap, body: String) -> Response {
    let _in_flight = InFlight::enter(&shared);
    let fence: Option<i64> = headers
        .get("x-tollgate-fence")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok());
    let key = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let run_id = headers
        .get("x-tollgate-run-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let traceparent = headers
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let arriving = serde_json::from_str::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v.get("invoice_id")?.as_str().map(str::to_owned));
    let (delay, unavailable, reject, throttle, roll) = {
        let mut s = shared.lock();
        let roll = s.rng.random_range(0..100u32);
        s.stats.requests += 1;
        if let Some(fence) = fence {
            s.stats.fences.push(fence);
        }
        if let Some(traceparent) = traceparent {
            s.stats.traceparents.push(traceparent);
        }
        if let Some(invoice_id) = arriving {
            if let Some(fence) = fence {
                let newest = s.newest_fence.entry(invoice_id.clone()).or_default();
                *newest = (*newest).max(fence);
            }
            *s.stats.requests_by_invoice.entry(invoice_id).or_default() += 1;
        }
        if let Some(run_id) = run_id {
            s.stats.run_ids.push(run_id);
        }
        if let Some(key) = &key {
            *s.stats.requests_by_key.entry(key.clone()).or_default() += 1;
        }
        let mut unavailable = s.faults.unavailable > 0;
        if unavailable {
            s.faults.unavailable -= 1;
        }
        unavailable |= roll < s.faults.flaky_unavailable_pct;
        if !unavailable && s.faults.fail_unbooked > 0 {
            s.faults.fail_unbooked -= 1;
            return (
                StatusCode::INTERNAL_SERVER_ERROR,
                Json(json!({ "error": "lost the request" })),
            )
                .into_response();
        }
        let reject = (!unavailable && s.faults.reject > 0).then(|| {
            s.faults.reject -= 1;
            s.faults.reject_body.clone()
        });
        let throttle = (!unavailable && reject.is_none() && s.faults.throttle > 0).then(|| {
            s.faults.throttle -= 1;
            s.faults.retry_after_s
        });
        (s.faults.delay_ms, unavailable, reject, throttle, roll)
    };
    if let Some(seconds) = throttle {
        return (
            StatusCode::TOO_MANY_REQUESTS,
            [(axum::http::header::RETRY_AFTER, seconds.to_string())],
            Json(json!({ "error": "slow down" })),
        )
            .into_response();
    }
    if let Some(body) = reject {
        return match body {
            Some(raw) => (StatusCode::UNPROCESSABLE_ENTITY, raw).into_response(),
            None => (
                StatusCode::UNPROCESSABLE_ENTITY,
                Json(json!({ "error": "customer is on credit hold" })),
            )
                .into_response(),
        };
    }
    if unavailable {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "error": "maintenance, try later" })),
        )
            .into_response();
    }
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    let invoice: serde_json::Value = match serde_json::from_str(&body) {
        Ok(v) => v,
        Err(e) => {
            return (
                StatusCode::BAD_REQUEST,
                Json(json!({ "error": format!("body is not JSON: {e}") })),
            )
                .into_response();
        }
    };
    let Some(invoice_id) = invoice
        .get("invoice_id")
        .and_then(|v| v.as_str())
        .map(str::to_owned)
    else {
        return (
            StatusCode::UNPROCESSABLE_ENTITY,
            Json(json!({ "error": "invoice_id is required" })),
        )
            .into_response();
    };
    let (response, hold, after) = {
        let mut s = shared.lock();
        let newest = s.newest_fence.get(&invoice_id).copied();
        if s.faults.refuse_stale_fences
            && let (Some(fence), Some(newest)) = (fence, newest)
            && fence < newest
        {
            s.stats.stale_fences += 1;
            return (
                StatusCode::CONFLICT,
                Json(json!({ "error": format!("stale fence {fence}: {newest} was seen") })),
            )
                .into_response();
        }
        if key.is_none() {
            s.stats.without_key += 1;
        }
        if let Some(key) = &key {
            *s.stats.settled_by_key.entry(key.clone()).or_default() += 1;
        }
        let after = Duration::from_millis(s.faults.delay_after_booking_ms);
        let replayed = match (&key, s.honour_keys) {
            (Some(key), true) => s.by_key.get(key).cloned(),
            _ => None,
        };
        if let Some(previous) = replayed {
            s.stats.replays += 1;
            (previous, None, after)
        } else {
            s.stats.postings += 1;
            let n = s.stats.postings;
            *s.stats.by_invoice.entry(invoice_id.clone()).or_default() += 1;
            let response = json!({ "posting_id": format!("ERP-{n:06}"), "invoice_id": invoice_id, "status": "posted" });
            if let Some(key) = key {
                s.by_key.insert(key, response.clone());
            }
            let flaky = (s.faults.flaky_unavailable_pct
                ..s.faults.flaky_unavailable_pct + s.faults.flaky_timeout_pct)
                .contains(&roll);
            let counted = s.faults.timeout_after_success > 0;
            if counted {
                s.faults.timeout_after_success -= 1;
            }
            let hold = (counted || flaky).then(|| Duration::from_millis(s.faults.hold_ms));
            if hold.is_some() {
                s.stats.held += 1;
            }
            (response, hold, after)
        }
    };
    if !after.is_zero() {
        tokio::time::sleep(after).await;
    }
    if let Some(hold) = hold {
        tokio::time::sleep(hold).await;
    }
    (StatusCode::CREATED, Json(response)).into_response()
}

/// `GET /invoices/by-key/{key}`: the booking made under an `Idempotency-Key`, keys honoured
/// or not (404 when none was), so a client can ask whether a request it lost track of was
/// booked.
async fn lookup(State(shared): State<Shared>, Path(key): Path<String>) -> Response {
    let mut s = shared.lock();
    s.stats.lookups += 1;
    match s.by_key.get(&key).cloned() {
        Some(booking) => {
            s.stats.lookups_found += 1;
            (StatusCode::OK, Json(booking)).into_response()
        }
        None => (
            StatusCode::NOT_FOUND,
            Json(json!({ "error": format!("no booking under key {key}") })),
        )
            .into_response(),
    }
}

async fn stats(State(shared): State<Shared>) -> Json<Stats> {
    Json(shared.lock().stats.clone())
}
