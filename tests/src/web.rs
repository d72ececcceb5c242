//! A small read-only web server on 127.0.0.1 for the HTTP grant tests: `GET /data` answers
//! a fixed body, `/redirect?to=<url>` answers 302 to `url`, and every request is recorded
//! (method and path), so a test can prove a denied request never arrived.

use axum::Router;
use axum::extract::{Query, State};
use axum::http::{Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use crate::server::Server;

/// The body of `GET /data`.
pub const DATA: &str = "public data from 127.0.0.1";

type Seen = Arc<Mutex<Vec<String>>>;

pub struct Web {
    server: Server,
    seen: Seen,
}

impl Web {
    pub fn start() -> std::io::Result<Self> {
        let seen: Seen = Arc::default();
        let app = Router::new()
            .route("/data", any(data))
            .route("/redirect", any(redirect))
            .with_state(seen.clone());
        Ok(Self {
            server: Server::start("web", app)?,
            seen,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.server.addr()
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr())
    }

    /// `METHOD /path` of every request received, in order.
    pub fn seen(&self) -> Vec<String> {
        self.seen.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

fn record(seen: &Seen, method: &Method, uri: &Uri) {
    seen.lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(format!("{method} {}", uri.path()));
}

async fn data(State(seen): State<Seen>, method: Method, uri: Uri) -> Response {
    record(&seen, &method, &uri);
    DATA.into_response()
}

async fn redirect(
    State(seen): State<Seen>,
    method: Method,
    uri: Uri,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    record(&seen, &method, &uri);
    match query.get("to") {
        Some(to) => (StatusCode::FOUND, [(header::LOCATION, to.clone())]).into_response(),
        None => (StatusCode::BAD_REQUEST, "missing ?to=").into_response(),
    }
}
