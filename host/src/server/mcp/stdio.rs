//! MCP's stdio transport: one JSON-RPC message per line each way, answering input that is
//! not a message with the JSON-RPC error it deserves ([`super::malformed`]) rather than
//! silence. A line longer than [`MAX_LINE_BYTES`] gets `-32600` and is dropped without being
//! held.

use std::sync::Arc;

use futures_util::StreamExt as _;
use rmcp::RoleServer;
use rmcp::service::{RxJsonRpcMessage, TxJsonRpcMessage};
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt as _};
use tokio::sync::Mutex;
use tokio_util::codec::{FramedRead, LinesCodec, LinesCodecError};

/// The longest message accepted, as rmcp's own stdio transport and its HTTP client allow.
pub const MAX_LINE_BYTES: usize = 16 << 20;

use super::malformed::{self, INVALID_REQUEST, PARSE_ERROR, error};

/// Lines in from `R`, lines out to `W`.
pub struct LineTransport<R, W> {
    lines: FramedRead<R, LinesCodec>,
    out: Arc<Mutex<W>>,
}

impl<R: AsyncRead + Unpin, W: AsyncWrite + Unpin> LineTransport<R, W> {
    pub fn new(read: R, write: W) -> Self {
        Self {
            lines: FramedRead::new(read, LinesCodec::new_with_max_length(MAX_LINE_BYTES)),
            out: Arc::new(Mutex::new(write)),
        }
    }
}

/// Writes `line` and a newline, whole, then flushes.
async fn write_line<W: AsyncWrite + Unpin>(
    out: &Mutex<W>,
    mut line: Vec<u8>,
) -> std::io::Result<()> {
    line.push(b'\n');
    let mut out = out.lock().await;
    out.write_all(&line).await?;
    out.flush().await
}

impl<R, W> rmcp::transport::Transport<RoleServer> for LineTransport<R, W>
where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
{
    type Error = std::io::Error;

    fn send(
        &mut self,
        item: TxJsonRpcMessage<RoleServer>,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send + 'static {
        let out = Arc::clone(&self.out);
        async move {
            let line = serde_json::to_vec(&item).map_err(std::io::Error::other)?;
            write_line(&out, line).await
        }
    }

    async fn receive(&mut self) -> Option<RxJsonRpcMessage<RoleServer>> {
        loop {
            // `FramedRead` keeps a partial line in its own buffer, so this may be cancelled
            // (rmcp polls it in a `select!`) without losing input.
            let refusal = match self.lines.next().await? {
                Ok(line) => match malformed::read_line(&line) {
                    Ok(message) => return Some(message),
                    Err(refusal) => refusal,
                },
                Err(LinesCodecError::MaxLineLengthExceeded) => Some(error(
                    Value::Null,
                    INVALID_REQUEST,
                    format!(
                        "Invalid request: a message longer than {MAX_LINE_BYTES} bytes was dropped"
                    ),
                )),
                Err(LinesCodecError::Io(e)) if e.kind() == std::io::ErrorKind::InvalidData => {
                    Some(error(
                        Value::Null,
                        PARSE_ERROR,
                        "Parse error: the line is not UTF-8".to_owned(),
                    ))
                }
                Err(LinesCodecError::Io(e)) => {
                    tracing::error!("cannot read stdin: {e}");
                    return None;
                }
            };
            if let Some(reply) = refusal {
                // On a task of its own: a write cancelled halfway would garble the stream.
                let out = Arc::clone(&self.out);
                tokio::spawn(async move {
                    if let Err(e) = write_line(&out, reply).await {
                        tracing::debug!("cannot answer a malformed message: {e}");
                    }
                });
            }
        }
    }

    async fn close(&mut self) -> Result<(), Self::Error> {
        self.out.lock().await.shutdown().await
    }
}
