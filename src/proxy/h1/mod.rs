//! HTTP/1.1 to Jupyter: one exchange on a kept-alive connection, written
//! and read inline by the task of the request it carries.
//!
//! nbgate's own client side rather than hyper's `client::conn::http1`:
//! hyper drives each connection from a task of its own and hands the
//! request and response across channels, and the request head goes through
//! its general encoder. That machinery was the largest single part of a
//! proxied request's instructions after the client-side HTTP/2 connection
//! (11.8k of 55k per HTTP/2 request, issue 6's profile). Here the request's
//! own task writes the head and polls the socket, so there is no hand-over
//! and no second task to wake.
//!
//! The parsing is httparse's, the parser hyper uses. What is written is
//! safe by construction: method, target, header names and values come from
//! `http` types, which cannot hold CR or LF, so nothing a client sends can
//! split the request; and the body's framing is always nbgate's own
//! (`Content-Length` from the body's exact size, otherwise chunked), never
//! the client's.
//!
//! The pieces: `request` encodes what is sent (head and body framing),
//! `head` parses the response head and decides the body's framing, `body`
//! reads the body by that framing; this module holds the connection and
//! the exchange that drives the three.

mod body;
mod head;
mod request;

use std::future::Future as _;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::BytesMut;
use http::Method;

pub use self::body::BodyReader;
use self::head::parse_head;
pub use self::head::Head;
pub use self::request::Upload;
use crate::proxy::body::UpstreamBody;
use crate::proxy::transport::UpstreamStream;

/// Most header fields accepted in a response head (hyper's default), and
/// in a trailer section.
const MAX_HEADERS: usize = 100;
/// Read sizes: a head and a small body usually arrive in one read; a large
/// body is read in bigger pieces (fewer system calls per megabyte).
const HEAD_READ: usize = 8 * 1024;
const BODY_READ: usize = 64 * 1024;

/// Why an exchange failed. A variant with a source does not print it in
/// its message: a log that prints the chain would show it twice.
#[derive(Debug, thiserror::Error)]
pub enum H1Error {
    /// The connection closed or reset before any byte of a response: the
    /// request may never have been read (see `is_unanswered`).
    #[error("upstream closed the connection before answering")]
    Closed(#[source] Option<io::Error>),
    #[error("upstream closed the connection in the middle of a response")]
    Incomplete,
    #[error("upstream i/o error")]
    Io(#[from] io::Error),
    #[error("invalid response from upstream: {0}")]
    Invalid(&'static str),
    #[error("request body from the client failed")]
    RequestBody(#[source] crate::proxy::body::BoxError),
    #[error("upstream sent no complete answer within {0:?} of the request")]
    Timeout(std::time::Duration),
}

impl H1Error {
    /// Nothing of a response came: a request without side effects can be
    /// sent again on another connection.
    pub fn is_unanswered(&self) -> bool {
        matches!(self, H1Error::Closed(_))
    }
}

/// A connection to Jupyter and what was read from it but not yet used.
pub struct Conn {
    io: UpstreamStream,
    buf: BytesMut,
}

impl Conn {
    pub fn new(io: UpstreamStream) -> Self {
        Conn {
            io,
            buf: BytesMut::new(),
        }
    }

    /// Whether an idle connection can carry a request: Jupyter has not
    /// closed it and sent nothing unasked. Bytes nobody asked for (a late
    /// or forged response) would otherwise be read as the next request's
    /// answer, and that request may be another user's. One system call
    /// (`UpstreamStream::is_quiet`).
    pub fn is_reusable(&self) -> bool {
        self.buf.is_empty() && self.io.is_quiet()
    }

    /// Drops a large read buffer (left by a big download) before the
    /// connection idles in the pool.
    pub fn shrink(&mut self) {
        if self.buf.is_empty() && self.buf.capacity() > BODY_READ {
            self.buf = BytesMut::new();
        }
    }

    pub fn io_mut(&mut self) -> &mut UpstreamStream {
        &mut self.io
    }

    /// Reads more into the buffer, first making room for `want` bytes
    /// when less than a quarter of that is free.
    fn poll_fill(&mut self, cx: &mut Context<'_>, want: usize) -> Poll<io::Result<usize>> {
        if self.buf.capacity() - self.buf.len() < want / 4 {
            self.buf.reserve(want);
        }
        tokio_util::io::poll_read_buf(Pin::new(&mut self.io), cx, &mut self.buf)
    }
}

/// Writes `req` and reads the response head. The request body streams
/// while the answer is awaited, and goes on streaming alongside the
/// response body if Jupyter answers first (full duplex, as hyper did).
///
/// The response is read before anything more is written: an early answer
/// (an error) followed by a close must reach the client as sent, not as a
/// failed write of the rest of the body.
///
/// `response_timeout` runs from the moment the request has been written
/// whole (an upload's pace is the client's) until the response head is
/// complete: an upstream that accepts and never answers, or trickles its
/// head a byte at a time, ends in `H1Error::Timeout`.
pub async fn exchange(
    conn: &mut Conn,
    req: http::Request<UpstreamBody>,
    response_timeout: std::time::Duration,
) -> Result<Head, H1Error> {
    let (parts, body) = req.into_parts();
    let mut upload = Upload::new(&parts, body);
    let head_request = parts.method == Method::HEAD;
    drop(parts);
    let mut answered = false;
    // A write that failed because Jupyter closed or reset the connection:
    // an answer may still be waiting in the socket.
    let mut write_failed: Option<io::Error> = None;
    // Armed once the request is out and the head is not complete: a timer
    // for each request Jupyter does not answer at once, none for the rest.
    let mut deadline: Option<std::pin::Pin<Box<tokio::time::Sleep>>> = None;
    std::future::poll_fn(|cx| loop {
        if let Some(mut head) = parse_head(&mut conn.buf, head_request)? {
            if write_failed.is_some() {
                head.keep_alive = false;
            } else if !upload.is_done() {
                head.upload = Some(std::mem::replace(&mut upload, Upload::done()));
            }
            return Poll::Ready(Ok(head));
        }
        answered |= !conn.buf.is_empty();
        if write_failed.is_none() {
            match upload.poll_send(&mut conn.io, cx) {
                Poll::Ready(Err(H1Error::Io(e))) if is_closed(&e) => {
                    write_failed = Some(e);
                    upload = Upload::done();
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Ready(Ok(())) | Poll::Pending => {}
            }
        }
        match conn.poll_fill(cx, HEAD_READ) {
            Poll::Ready(Ok(0)) if answered => return Poll::Ready(Err(H1Error::Incomplete)),
            Poll::Ready(Ok(0)) => return Poll::Ready(Err(H1Error::Closed(write_failed.take()))),
            Poll::Ready(Ok(_)) => {}
            Poll::Ready(Err(e)) if is_closed(&e) && !answered => {
                return Poll::Ready(Err(H1Error::Closed(Some(e))));
            }
            Poll::Ready(Err(e)) => return Poll::Ready(Err(H1Error::Io(e))),
            Poll::Pending => {
                if write_failed.is_some() || upload.is_done() {
                    let sleep = deadline
                        .get_or_insert_with(|| Box::pin(tokio::time::sleep(response_timeout)));
                    if sleep.as_mut().poll(cx).is_ready() {
                        return Poll::Ready(Err(H1Error::Timeout(response_timeout)));
                    }
                }
                return Poll::Pending;
            }
        }
    })
    .await
}

/// The peer closed or reset the connection.
fn is_closed(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::BrokenPipe
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
    )
}

#[cfg(test)]
mod tests {
    //! The exchange against a peer that sends exact bytes, split where the
    //! test says, over a Unix socket pair. The harness is shared with the
    //! tests of `request`, `head` and `body`; the tests here are those of
    //! the exchange as a whole.

    use bytes::Bytes;
    use http::header::{self, HeaderValue};
    use http::{Response, StatusCode};
    use http_body_util::BodyExt;
    use hyper::body::Frame;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::UnixStream;

    use super::*;

    /// Far above anything these exchanges take: only the timeout tests hit theirs.
    pub(super) const TEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

    pub(super) fn request(method: Method, body: UpstreamBody) -> http::Request<UpstreamBody> {
        let mut req = http::Request::new(body);
        *req.method_mut() = method;
        *req.uri_mut() = "/api/x?y=1".parse().expect("uri");
        req.headers_mut()
            .insert(header::HOST, HeaderValue::from_static("jupyter"));
        req
    }

    pub(super) fn no_body() -> UpstreamBody {
        crate::proxy::body::empty()
    }

    /// A body of unknown length (no exact size hint): sent chunked.
    pub(super) fn streamed(parts: &[&'static [u8]]) -> UpstreamBody {
        let frames: Vec<Result<Frame<Bytes>, crate::proxy::body::BoxError>> = parts
            .iter()
            .map(|p| Ok(Frame::data(Bytes::from_static(p))))
            .collect();
        http_body_util::StreamBody::new(futures_util::stream::iter(frames)).boxed_unsync()
    }

    /// Runs one exchange: the peer answers with `pieces` once it has read
    /// the request head, and the test gets what the peer read, the
    /// response head and the body's frames (or the first error).
    pub(super) async fn run(
        req: http::Request<UpstreamBody>,
        pieces: Vec<&'static [u8]>,
    ) -> (
        String,
        Result<(Response<()>, bool, Vec<Frame<Bytes>>), H1Error>,
    ) {
        let (ours, mut theirs) = UnixStream::pair().expect("pair");
        let peer = tokio::spawn(async move {
            let mut seen = Vec::new();
            let mut b = [0u8; 4096];
            while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = theirs.read(&mut b).await.expect("read");
                assert!(n > 0, "request cut short");
                seen.extend_from_slice(&b[..n]);
            }
            for p in pieces {
                theirs.write_all(p).await.expect("write");
                tokio::task::yield_now().await;
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
            // Whatever else the request brings (a body), then close.
            let _ = tokio::time::timeout(std::time::Duration::from_millis(50), async {
                while let Ok(n) = theirs.read(&mut b).await {
                    if n == 0 {
                        break;
                    }
                    seen.extend_from_slice(&b[..n]);
                }
            })
            .await;
            String::from_utf8_lossy(&seen).into_owned()
        });
        let mut conn = Conn::new(UpstreamStream::Unix(ours));
        let result = async {
            let head = exchange(&mut conn, req, TEST_TIMEOUT).await?;
            let (resp, mut reader, keep_alive, upload) = head.into_parts();
            // Reported as "not reusable yet" to the tests below.
            let keep_alive = keep_alive && upload.is_none();
            let mut frames = Vec::new();
            while let Some(f) = std::future::poll_fn(|cx| reader.poll_frame(&mut conn, cx)).await {
                frames.push(f?);
            }
            Ok((resp, keep_alive, frames))
        }
        .await;
        drop(conn);
        (peer.await.expect("peer"), result)
    }

    pub(super) fn data(frames: &[Frame<Bytes>]) -> Vec<u8> {
        frames
            .iter()
            .filter_map(|f| f.data_ref())
            .flat_map(|d| d.iter().copied())
            .collect()
    }

    #[tokio::test]
    async fn a_get_is_written_as_one_head_and_a_length_body_read_across_reads() {
        let (seen, r) = run(
            request(Method::GET, no_body()),
            vec![
                b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\nX-A: 1\r\n\r\nhel",
                b"lo",
                b"world",
            ],
        )
        .await;
        assert_eq!(seen, "GET /api/x?y=1 HTTP/1.1\r\nhost: jupyter\r\n\r\n");
        let (resp, keep_alive, frames) = r.expect("exchange");
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(resp.headers()["x-a"], "1");
        assert!(keep_alive);
        assert_eq!(data(&frames), b"helloworld");
    }

    #[tokio::test(start_paused = true)]
    async fn an_upstream_that_never_answers_or_trickles_its_head_times_out() {
        let timeout = std::time::Duration::from_secs(300);
        // Accepts, reads the request, never answers. (Paused clock: the
        // runtime jumps to the timer once only the socket is left to wait on.)
        let (ours, mut theirs) = UnixStream::pair().expect("pair");
        let silent = tokio::spawn(async move {
            let mut b = [0u8; 1024];
            while theirs.read(&mut b).await.is_ok_and(|n| n > 0) {}
        });
        let mut conn = Conn::new(UpstreamStream::Unix(ours));
        let err = exchange(&mut conn, request(Method::GET, no_body()), timeout)
            .await
            .err()
            .expect("no answer");
        assert!(matches!(err, H1Error::Timeout(t) if t == timeout), "{err}");
        silent.abort();
        // One byte a second: the head would take longer than the timeout.
        let (ours, mut theirs) = UnixStream::pair().expect("pair");
        let trickle = tokio::spawn(async move {
            let mut b = [0u8; 1024];
            let _ = theirs.read(&mut b).await;
            for byte in b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nX-Pad: "
                .iter()
                .cycle()
            {
                if theirs.write_all(&[*byte]).await.is_err() {
                    return;
                }
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            }
        });
        let mut conn = Conn::new(UpstreamStream::Unix(ours));
        let started = tokio::time::Instant::now();
        let err = exchange(&mut conn, request(Method::GET, no_body()), timeout)
            .await
            .err()
            .expect("no complete head");
        assert!(matches!(err, H1Error::Timeout(_)), "{err}");
        assert!(started.elapsed() >= timeout && started.elapsed() < timeout * 2);
        trickle.abort();
    }

    #[tokio::test]
    async fn a_close_before_any_answer_is_unanswered_and_one_mid_body_is_not() {
        let (_, r) = run(request(Method::GET, no_body()), vec![]).await;
        assert!(r.as_ref().is_err_and(H1Error::is_unanswered), "{r:?}");
        let (_, r) = run(
            request(Method::GET, no_body()),
            vec![b"HTTP/1.1 200 OK\r\nCont"],
        )
        .await;
        assert!(matches!(r, Err(H1Error::Incomplete)), "{r:?}");
        let (_, r) = run(
            request(Method::GET, no_body()),
            vec![b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nab"],
        )
        .await;
        assert!(matches!(r, Err(H1Error::Incomplete)), "{r:?}");
    }

    #[tokio::test]
    async fn an_early_answer_and_close_reach_the_client_though_the_body_write_fails() {
        use futures_util::StreamExt;
        // More than the socket holds, all ready at once.
        let frames = futures_util::stream::iter(0..2000).map(|_| {
            Ok::<_, crate::proxy::body::BoxError>(Frame::data(Bytes::from(vec![b'x'; 16 * 1024])))
        });
        let body = http_body_util::StreamBody::new(frames).boxed_unsync();
        let (ours, mut theirs) = UnixStream::pair().expect("pair");
        let peer = tokio::spawn(async move {
            let mut b = [0u8; 1024];
            let _ = theirs.read(&mut b).await.expect("read the head");
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            theirs
                .write_all(b"HTTP/1.1 413 Content Too Large\r\nConnection: close\r\nContent-Length: 0\r\n\r\n")
                .await
                .expect("write");
        });
        let mut conn = Conn::new(UpstreamStream::Unix(ours));
        let head = exchange(&mut conn, request(Method::PUT, body), TEST_TIMEOUT)
            .await
            .expect("the answer");
        let (resp, _, keep_alive, _) = head.into_parts();
        assert_eq!(resp.status(), StatusCode::PAYLOAD_TOO_LARGE);
        assert!(!keep_alive);
        peer.await.expect("peer");
    }

    #[tokio::test]
    async fn an_answer_before_the_request_body_ends_leaves_the_rest_to_send() {
        use futures_util::StreamExt;
        let first: Result<Frame<Bytes>, crate::proxy::body::BoxError> =
            Ok(Frame::data(Bytes::from_static(b"part")));
        let endless = futures_util::stream::iter([first]).chain(futures_util::stream::pending());
        let body = http_body_util::StreamBody::new(endless).boxed_unsync();
        let (_, r) = run(
            request(Method::PUT, body),
            vec![b"HTTP/1.1 413 Content Too Large\r\nContent-Length: 0\r\n\r\n"],
        )
        .await;
        let (resp, keep_alive, _) = r.expect("exchange");
        assert_eq!(resp.status(), StatusCode::PAYLOAD_TOO_LARGE);
        assert!(!keep_alive, "the rest of the body is still to send");
    }

    #[test]
    fn an_error_with_a_source_does_not_repeat_it_in_its_message() {
        let reset = || io::Error::from(io::ErrorKind::ConnectionReset);
        let cases = [
            H1Error::Io(reset()),
            H1Error::Closed(Some(reset())),
            H1Error::RequestBody(reset().into()),
        ];
        for e in cases {
            let source = std::error::Error::source(&e).expect("a source").to_string();
            assert!(!e.to_string().contains(&source), "{e}");
        }
    }
}
