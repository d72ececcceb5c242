//! MCP's stdio transport: one JSON-RPC message per line each way, answering input that is
//! not a message with the JSON-RPC error it deserves ([`super::malformed`]) rather than
//! silence. A line longer than [`MAX_LINE_BYTES`] gets `-32600` and is dropped without being
//! held, and reading goes on after any bad line.

use std::sync::Arc;

use futures_util::StreamExt as _;
use rmcp::RoleServer;
use rmcp::service::{RxJsonRpcMessage, TxJsonRpcMessage};
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt as _};
use tokio::sync::Mutex;
use tokio::task::JoinSet;
use tokio_util::bytes::BytesMut;
use tokio_util::codec::{Decoder, FramedRead};

use super::malformed::{self, INVALID_REQUEST, error};

/// The longest message accepted, as rmcp's own stdio transport and its HTTP client allow.
pub const MAX_LINE_BYTES: usize = 16 << 20;
/// Answers to malformed lines not yet written; reading waits for the oldest beyond this, so
/// a peer that sends garbage and never reads cannot grow the host's memory.
const MAX_PENDING_REPLIES: usize = 64;

/// Lines in from `R`, lines out to `W`.
pub struct LineTransport<R, W> {
    lines: FramedRead<R, Lines>,
    out: Arc<Mutex<W>>,
    /// Answers to malformed lines, each written whole on a task of its own (a write
    /// cancelled halfway would garble the stream), awaited by [`Transport::close`].
    ///
    /// [`Transport::close`]: rmcp::transport::Transport::close
    replies: JoinSet<()>,
}

impl<R: AsyncRead + Unpin, W: AsyncWrite + Unpin> LineTransport<R, W> {
    pub fn new(read: R, write: W) -> Self {
        Self {
            lines: FramedRead::new(read, Lines::default()),
            out: Arc::new(Mutex::new(write)),
            replies: JoinSet::new(),
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
            while self.replies.try_join_next().is_some() {}
            if self.replies.len() >= MAX_PENDING_REPLIES {
                // Cancel-safe: the reply goes on in the set if this wait is dropped.
                self.replies.join_next().await;
                continue;
            }
            // `FramedRead` keeps a partial line in its own buffer, so this may be cancelled
            // (rmcp polls it in a `select!`) without losing input; `Lines` never fails, so
            // the stream ends only at the end of the input.
            let reply = match self.lines.next().await? {
                Ok(Frame::Line(line)) => match malformed::read_line(&line) {
                    Ok(message) => return Some(message),
                    Err(reply) => reply,
                },
                Ok(Frame::TooLong) => Some(error(
                    Value::Null,
                    INVALID_REQUEST,
                    format!(
                        "Invalid request: a message longer than {MAX_LINE_BYTES} bytes was dropped"
                    ),
                )),
                Err(e) => {
                    tracing::error!("cannot read stdin: {e}");
                    return None;
                }
            };
            if let Some(reply) = reply {
                let out = Arc::clone(&self.out);
                self.replies.spawn(async move {
                    if let Err(e) = write_line(&out, reply).await {
                        tracing::debug!("cannot answer a malformed message: {e}");
                    }
                });
            }
        }
    }

    async fn close(&mut self) -> Result<(), Self::Error> {
        while self.replies.join_next().await.is_some() {}
        self.out.lock().await.shutdown().await
    }
}

/// What [`Lines`] reads.
#[derive(Debug, PartialEq, Eq)]
enum Frame {
    /// A line, without its `\n`.
    Line(BytesMut),
    /// A line longer than [`MAX_LINE_BYTES`], dropped.
    TooLong,
}

/// Splits input into lines, bounding each at [`MAX_LINE_BYTES`]. Unlike `LinesCodec` it has
/// no errors of its own (a `FramedRead` ends after its decoder's first error, and one bad
/// line must not end the session): an over-long line is a [`Frame::TooLong`], and what is
/// not UTF-8 is the parser's to refuse.
#[derive(Debug, Default)]
struct Lines {
    /// Where to look for the next `\n` (everything before has none).
    searched: usize,
    /// Dropping the rest of an over-long line, up to its `\n`.
    discarding: bool,
}

impl Decoder for Lines {
    type Item = Frame;
    type Error = std::io::Error;

    fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Frame>, std::io::Error> {
        loop {
            let newline = buf[self.searched..].iter().position(|b| *b == b'\n');
            let Some(at) = newline.map(|i| self.searched + i) else {
                if self.discarding {
                    buf.clear();
                    self.searched = 0;
                    return Ok(None);
                }
                if buf.len() > MAX_LINE_BYTES {
                    buf.clear();
                    self.searched = 0;
                    self.discarding = true;
                    return Ok(Some(Frame::TooLong));
                }
                self.searched = buf.len();
                return Ok(None);
            };
            let mut line = buf.split_to(at + 1);
            self.searched = 0;
            if std::mem::take(&mut self.discarding) {
                continue;
            }
            if at > MAX_LINE_BYTES {
                return Ok(Some(Frame::TooLong));
            }
            line.truncate(at);
            return Ok(Some(Frame::Line(line)));
        }
    }

    fn decode_eof(&mut self, buf: &mut BytesMut) -> Result<Option<Frame>, std::io::Error> {
        if let Some(frame) = self.decode(buf)? {
            return Ok(Some(frame));
        }
        // The input ended: a last line without its newline is still a line.
        let last = (!buf.is_empty() && !self.discarding).then(|| Frame::Line(buf.split()));
        buf.clear();
        self.searched = 0;
        self.discarding = false;
        Ok(last)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(input: &[u8]) -> Vec<Frame> {
        let mut lines = Lines::default();
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        // A byte at a time, as a slow pipe might deliver it.
        for byte in input {
            buf.extend_from_slice(&[*byte]);
            while let Some(frame) = lines.decode(&mut buf).unwrap() {
                out.push(frame);
            }
        }
        out
    }

    #[test]
    fn lines_are_split_at_newlines_and_bad_bytes_are_left_to_the_parser() {
        let got = frames(b"{\"a\":1}\n\xff\xfe\n\n");
        assert_eq!(
            got,
            [
                Frame::Line(BytesMut::from(&b"{\"a\":1}"[..])),
                Frame::Line(BytesMut::from(&b"\xff\xfe"[..])),
                Frame::Line(BytesMut::new()),
            ]
        );
    }

    #[test]
    fn a_last_line_without_its_newline_is_still_read_at_the_end() {
        let mut lines = Lines::default();
        let mut buf = BytesMut::from(&b"one\ntwo"[..]);
        assert_eq!(
            lines.decode_eof(&mut buf).unwrap(),
            Some(Frame::Line(BytesMut::from(&b"one"[..])))
        );
        assert_eq!(
            lines.decode_eof(&mut buf).unwrap(),
            Some(Frame::Line(BytesMut::from(&b"two"[..])))
        );
        assert_eq!(lines.decode_eof(&mut buf).unwrap(), None);
        // Reading may go on after an end (a terminal after Ctrl-D).
        buf.extend_from_slice(b"three\n");
        assert_eq!(
            lines.decode(&mut buf).unwrap(),
            Some(Frame::Line(BytesMut::from(&b"three"[..])))
        );
    }

    #[test]
    fn an_over_long_line_is_dropped_once_and_the_next_line_is_read() {
        let mut input = vec![b'x'; MAX_LINE_BYTES + 10];
        input.extend_from_slice(b"\nnext\n");
        let mut lines = Lines::default();
        let mut buf = BytesMut::from(&input[..MAX_LINE_BYTES / 2]);
        assert_eq!(lines.decode(&mut buf).unwrap(), None);
        buf.extend_from_slice(&input[MAX_LINE_BYTES / 2..MAX_LINE_BYTES + 5]);
        assert_eq!(lines.decode(&mut buf).unwrap(), Some(Frame::TooLong));
        assert!(buf.is_empty(), "nothing of it is held");
        buf.extend_from_slice(&input[MAX_LINE_BYTES + 5..]);
        assert_eq!(
            lines.decode(&mut buf).unwrap(),
            Some(Frame::Line(BytesMut::from(&b"next"[..])))
        );
    }
}
