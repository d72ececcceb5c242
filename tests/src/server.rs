//! A real HTTP server on 127.0.0.1, on its own thread and tokio runtime, so it keeps serving
//! whatever the test's own runtime is doing; stopped (gracefully) when dropped.
//!
//! `start` returns only once the server has answered an HTTP request, so a test that asserts
//! a request "never arrived" is asserting it against a server that was listening.

use axum::Router;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::mpsc;
use std::time::Duration;

/// How long `start` waits for the server to come up and answer.
const READY_WITHIN: Duration = Duration::from_secs(30);

/// The path `start` asks for to confirm the server answers. No test server routes it, so it
/// is answered by the router's fallback and never reaches a handler or its counters.
pub const READINESS_PATH: &str = "/.tollgate-test-server-ready";

pub struct Server {
    addr: SocketAddr,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Server {
    /// Serves `app` on an ephemeral port; `name` names the thread. Fails unless the server
    /// answers a request before this returns.
    pub fn start(name: &str, app: Router) -> std::io::Result<Self> {
        Self::start_on(name, 0, app)
    }

    /// [`Server::start`] on a given port of 127.0.0.1 (0 for an ephemeral one).
    pub fn start_on(name: &str, port: u16, app: Router) -> std::io::Result<Self> {
        let listener = std::net::TcpListener::bind(("127.0.0.1", port))?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let (ready_tx, ready_rx) = mpsc::channel::<std::io::Result<()>>();
        let thread_name = name.to_owned();
        let thread = std::thread::Builder::new()
            .name(name.to_owned())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                rt.block_on(async move {
                    let listener = match tokio::net::TcpListener::from_std(listener) {
                        Ok(listener) => listener,
                        Err(e) => {
                            let _ = ready_tx.send(Err(e));
                            return;
                        }
                    };
                    let _ = ready_tx.send(Ok(()));
                    if let Err(e) = axum::serve(listener, app)
                        .with_graceful_shutdown(async {
                            let _ = rx.await;
                        })
                        .await
                    {
                        panic!("test server `{thread_name}` stopped serving: {e}");
                    }
                });
            })?;
        let server = Self {
            addr,
            shutdown: Some(tx),
            thread: Some(thread),
        };
        match ready_rx.recv_timeout(READY_WITHIN) {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(e),
            Err(_) => {
                return Err(std::io::Error::other(format!(
                    "test server `{name}` did not come up within {READY_WITHIN:?}"
                )));
            }
        }
        answers(addr).map_err(|e| {
            std::io::Error::new(
                e.kind(),
                format!("test server `{name}` on {addr} does not answer HTTP: {e}"),
            )
        })?;
        Ok(server)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

/// One HTTP/1.1 request for [`READINESS_PATH`]; any status line is an answer.
fn answers(addr: SocketAddr) -> std::io::Result<()> {
    let mut stream = TcpStream::connect_timeout(&addr, READY_WITHIN)?;
    stream.set_read_timeout(Some(READY_WITHIN))?;
    stream.set_write_timeout(Some(READY_WITHIN))?;
    write!(
        stream,
        "GET {READINESS_PATH} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut head = [0u8; 12];
    stream.read_exact(&mut head)?;
    if head.starts_with(b"HTTP/1.1 ") {
        Ok(())
    } else {
        Err(std::io::Error::other(format!(
            "answered {:?}, not HTTP/1.1",
            String::from_utf8_lossy(&head)
        )))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
            && !std::thread::panicking()
        {
            panic!("a test server's thread panicked: see its message above");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::routing::get;

    #[test]
    fn start_returns_a_server_that_answers() {
        let server = Server::start("ok", Router::new().route("/x", get(|| async { "x" }))).unwrap();
        answers(server.addr()).unwrap();
    }

    #[test]
    fn a_server_that_cannot_answer_fails_to_start() {
        // Every request kills its connection: the port is bound and accepts, but nothing is
        // ever answered, which `start` must notice rather than return a dead server.
        let app = Router::new().fallback(cannot_answer);
        let err = Server::start("broken", app)
            .err()
            .expect("a server that cannot answer must not start");
        assert!(err.to_string().contains("does not answer HTTP"), "{err}");
    }

    async fn cannot_answer() -> &'static str {
        panic!("this server cannot answer")
    }
}
