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

use std::future::Future as _;
use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Response, StatusCode, Version};
use hyper::body::{Body, Frame};
use tokio::io::AsyncWrite;

use super::body::UpstreamBody;
use super::transport::UpstreamStream;

/// Most header fields accepted in a response head (hyper's default).
const MAX_HEADERS: usize = 100;
/// Largest response head (hyper's default read buffer limit): beyond it the
/// exchange fails rather than buffering without bound.
const MAX_HEAD_BYTES: usize = 8192 + 4096 * 100;
/// Largest chunk-size line (with extensions, CRLF included) and trailer
/// section. Enforced on complete lines too, not only while one is still
/// arriving, so that where the reads happen to split a body never decides
/// whether it is accepted.
const MAX_CHUNK_LINE: usize = 4096;
const MAX_TRAILER_BYTES: usize = 16 * 1024;
const MAX_CHUNK_EXTENSIONS: usize = 16 * 1024;
/// Read sizes: a head and a small body usually arrive in one read; a large
/// body is read in bigger pieces (fewer system calls per megabyte).
const HEAD_READ: usize = 8 * 1024;
const BODY_READ: usize = 64 * 1024;

/// Why an exchange failed.
#[derive(Debug, thiserror::Error)]
pub enum H1Error {
    /// The connection closed or reset before any byte of a response: the
    /// request may never have been read (see `is_unanswered`).
    #[error("upstream closed the connection before answering")]
    Closed(#[source] Option<io::Error>),
    #[error("upstream closed the connection in the middle of a response")]
    Incomplete,
    #[error("upstream i/o error: {0}")]
    Io(#[from] io::Error),
    #[error("invalid response from upstream: {0}")]
    Invalid(&'static str),
    #[error("request body from the client failed: {0}")]
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
    /// closed it and sent nothing unasked. Reads without waiting (a system
    /// call only when the socket was reported readable).
    pub fn is_reusable(&self) -> bool {
        if !self.buf.is_empty() {
            return false;
        }
        let mut probe = [0u8; 1];
        match self.io.try_read(&mut probe) {
            Err(e) => e.kind() == io::ErrorKind::WouldBlock,
            // End of stream, or bytes no request asked for.
            Ok(_) => false,
        }
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

/// How a response body is delimited (RFC 9112 §6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    /// No body (HEAD, 204, 304), or a body read to its end.
    Done,
    Length(u64),
    Chunked(Chunk),
    /// Until the connection closes.
    Close,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    Size,
    Data(u64),
    DataEnd,
    Trailers,
}

/// A response head and how to read its body.
pub struct Head {
    response: Response<()>,
    framing: Framing,
    /// The connection may carry another exchange once the body is read.
    keep_alive: bool,
    /// The rest of a request body Jupyter answered before it had it all.
    upload: Option<Upload>,
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

/// A request's bytes on their way to Jupyter, and the body they come from.
pub struct Upload {
    out: Outgoing,
    body: Option<UpstreamBody>,
}

impl Upload {
    fn new(parts: &http::request::Parts, body: UpstreamBody) -> Self {
        let out = Outgoing::new(parts, &body);
        let body = (!out.is_finished()).then_some(body);
        Upload { out, body }
    }

    fn done() -> Self {
        Upload {
            out: Outgoing {
                queue: Vec::new(),
                framing: OutFraming::Done,
            },
            body: None,
        }
    }

    /// Everything was written.
    pub fn is_done(&self) -> bool {
        self.body.is_none() && !self.out.has_pending()
    }

    /// Writes what is ready: the head, then body frames as they come.
    /// `Ready(Ok)` once all is written; `Pending` while waiting for the
    /// socket or the client's body (a waker is registered either way).
    pub fn poll_send(
        &mut self,
        io: &mut UpstreamStream,
        cx: &mut Context<'_>,
    ) -> Poll<Result<(), H1Error>> {
        loop {
            if self.out.has_pending() {
                ready!(self.out.poll_write(io, cx))?;
            }
            let Some(b) = self.body.as_mut() else {
                return Poll::Ready(Ok(()));
            };
            match ready!(Pin::new(b).poll_frame(cx)) {
                Some(Ok(frame)) => self.out.push_frame(frame)?,
                Some(Err(e)) => return Poll::Ready(Err(H1Error::RequestBody(e))),
                None => {
                    self.out.finish()?;
                    self.body = None;
                }
            }
        }
    }
}

/// The request's bytes on their way out: the head, then the body framed
/// by nbgate (its exact length, or chunked).
struct Outgoing {
    queue: Vec<Bytes>,
    framing: OutFraming,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OutFraming {
    Done,
    Length(u64),
    Chunked,
}

impl Outgoing {
    fn new(parts: &http::request::Parts, body: &UpstreamBody) -> Self {
        let framing = if body.is_end_stream() {
            OutFraming::Done
        } else {
            match body.size_hint().exact() {
                Some(n) => OutFraming::Length(n),
                None => OutFraming::Chunked,
            }
        };
        let mut head = BytesMut::with_capacity(512);
        head.extend_from_slice(parts.method.as_str().as_bytes());
        head.extend_from_slice(b" ");
        let target = parts.uri.path_and_query().map_or("/", |pq| pq.as_str());
        head.extend_from_slice(target.as_bytes());
        head.extend_from_slice(b" HTTP/1.1\r\n");
        let mut had_length = false;
        for (name, value) in &parts.headers {
            // The framing is nbgate's: a client's Content-Length or
            // Transfer-Encoding never decides where Jupyter's request ends
            // (request smuggling).
            if *name == header::TRANSFER_ENCODING || *name == header::CONTENT_LENGTH {
                had_length |= *name == header::CONTENT_LENGTH;
                continue;
            }
            head.extend_from_slice(name.as_str().as_bytes());
            head.extend_from_slice(b": ");
            head.extend_from_slice(value.as_bytes());
            head.extend_from_slice(b"\r\n");
        }
        match framing {
            OutFraming::Length(n) => {
                head.extend_from_slice(b"content-length: ");
                head.extend_from_slice(itoa(n, &mut [0u8; 20]));
                head.extend_from_slice(b"\r\n");
            }
            OutFraming::Chunked => head.extend_from_slice(b"transfer-encoding: chunked\r\n"),
            // A bodiless request that said so says so again (a POST with
            // an empty body), as hyper did.
            OutFraming::Done if had_length => head.extend_from_slice(b"content-length: 0\r\n"),
            OutFraming::Done => {}
        }
        head.extend_from_slice(b"\r\n");
        let mut queue = Vec::with_capacity(4);
        queue.push(head.freeze());
        Outgoing { queue, framing }
    }

    fn is_finished(&self) -> bool {
        self.framing == OutFraming::Done
    }

    fn has_pending(&self) -> bool {
        !self.queue.is_empty()
    }

    fn push_frame(&mut self, frame: Frame<Bytes>) -> Result<(), H1Error> {
        // Request trailers are not forwarded: `Trailer` is a hop-by-hop
        // field here, so none were announced to Jupyter.
        let Ok(data) = frame.into_data() else {
            return Ok(());
        };
        if data.is_empty() {
            // An empty chunk would end a chunked body.
            return Ok(());
        }
        match &mut self.framing {
            OutFraming::Length(rest) => {
                *rest = rest
                    .checked_sub(data.len() as u64)
                    .ok_or(H1Error::Invalid("request body longer than its length"))?;
                self.queue.push(data);
            }
            OutFraming::Chunked => {
                let mut line = BytesMut::with_capacity(18);
                let hex = format_args!("{:x}\r\n", data.len());
                std::fmt::Write::write_fmt(&mut line, hex).expect("BytesMut grows");
                self.queue.push(line.freeze());
                self.queue.push(data);
                self.queue.push(Bytes::from_static(b"\r\n"));
            }
            OutFraming::Done => {}
        }
        Ok(())
    }

    fn finish(&mut self) -> Result<(), H1Error> {
        match self.framing {
            OutFraming::Length(0) | OutFraming::Done => {}
            OutFraming::Length(_) => {
                return Err(H1Error::Invalid("request body shorter than its length"));
            }
            OutFraming::Chunked => self.queue.push(Bytes::from_static(b"0\r\n\r\n")),
        }
        self.framing = OutFraming::Done;
        Ok(())
    }

    /// Writes the queue out (vectored: head and body in one system call
    /// when both are ready).
    fn poll_write(
        &mut self,
        io: &mut UpstreamStream,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<()>> {
        while !self.queue.is_empty() {
            let n = if self.queue.len() == 1 {
                ready!(Pin::new(&mut *io).poll_write(cx, &self.queue[0]))?
            } else {
                // At most a chunk line, its data, CRLF and the last chunk
                // are queued at once: no allocation for the slices.
                let mut slices = [io::IoSlice::new(&[]); 4];
                let k = self.queue.len().min(slices.len());
                for (slot, b) in slices.iter_mut().zip(&self.queue) {
                    *slot = io::IoSlice::new(b);
                }
                ready!(Pin::new(&mut *io).poll_write_vectored(cx, &slices[..k]))?
            };
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.advance(n);
        }
        Poll::Ready(Ok(()))
    }

    fn advance(&mut self, mut n: usize) {
        let mut done = 0;
        for b in &mut self.queue {
            if n >= b.len() {
                n -= b.len();
                done += 1;
            } else {
                b.advance(n);
                break;
            }
        }
        self.queue.drain(..done);
    }
}

/// Decimal digits of `n` (no allocation, no `fmt`).
fn itoa(mut n: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return &buf[i..];
        }
    }
}

/// Parses a complete response head from the front of `buf`, consuming it;
/// `None` while more bytes are needed. Interim (1xx) responses are
/// consumed and skipped: the client gets the final one.
fn parse_head(buf: &mut BytesMut, head_request: bool) -> Result<Option<Head>, H1Error> {
    loop {
        let mut fields = [MaybeUninit::<httparse::Header<'_>>::uninit(); MAX_HEADERS];
        // Where each name and value lies in `buf`, so that the values can
        // share the buffer's bytes once it is frozen (no copy).
        let mut spans = [(0u32, 0u32, 0u32, 0u32); MAX_HEADERS];
        let mut res = httparse::Response::new(&mut []);
        let len = match httparse::ParserConfig::default().parse_response_with_uninit_headers(
            &mut res,
            buf,
            &mut fields,
        ) {
            Ok(httparse::Status::Complete(len)) if len <= MAX_HEAD_BYTES => len,
            Ok(httparse::Status::Complete(_)) => {
                return Err(H1Error::Invalid("response head too large"));
            }
            Ok(httparse::Status::Partial) if buf.len() >= MAX_HEAD_BYTES => {
                return Err(H1Error::Invalid("response head too large"));
            }
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(httparse::Error::TooManyHeaders) => {
                return Err(H1Error::Invalid("too many response header fields"));
            }
            Err(_) => return Err(H1Error::Invalid("malformed response head")),
        };
        let code = res.code.unwrap_or(0);
        let status =
            StatusCode::from_u16(code).map_err(|_| H1Error::Invalid("invalid status code"))?;
        if status.is_informational() {
            if status == StatusCode::SWITCHING_PROTOCOLS {
                return Err(H1Error::Invalid("unrequested protocol switch"));
            }
            buf.advance(len);
            continue;
        }
        let http11 = res.version == Some(1);
        let reason = res
            .reason
            .filter(|r| Some(*r) != status.canonical_reason() && !r.is_empty())
            .map(|r| Bytes::copy_from_slice(r.as_bytes()));
        let base = buf.as_ptr() as usize;
        let count = res.headers.len();
        for (span, h) in spans.iter_mut().zip(res.headers.iter()) {
            let n = h.name.as_ptr() as usize - base;
            let v = h.value.as_ptr() as usize - base;
            *span = (
                n as u32,
                (n + h.name.len()) as u32,
                v as u32,
                (v + h.value.len()) as u32,
            );
        }
        let bytes = buf.split_to(len).freeze();
        let mut headers = HeaderMap::with_capacity(count);
        for &(ns, ne, vs, ve) in &spans[..count] {
            let name = HeaderName::from_bytes(&bytes[ns as usize..ne as usize])
                .map_err(|_| H1Error::Invalid("invalid header name"))?;
            let value = HeaderValue::from_maybe_shared(bytes.slice(vs as usize..ve as usize))
                .map_err(|_| H1Error::Invalid("invalid header value"))?;
            headers.append(name, value);
        }
        let (framing, mut keep_alive) = framing(&headers, status, head_request, http11)?;
        if headers.contains_key(header::TRANSFER_ENCODING) {
            // Its length is not the body's (RFC 9112 §6.3: an intermediary
            // must remove it), and the client's side reframes the body.
            headers.remove(header::CONTENT_LENGTH);
        }
        if http11 {
            keep_alive &= !has_token(&headers, header::CONNECTION, "close");
        } else {
            // HTTP/1.0 keeps a connection only if asked to; not worth it.
            keep_alive = false;
        }
        let mut response = Response::new(());
        *response.status_mut() = status;
        *response.version_mut() = if http11 {
            Version::HTTP_11
        } else {
            Version::HTTP_10
        };
        *response.headers_mut() = headers;
        if let Some(r) = reason.and_then(|r| hyper::ext::ReasonPhrase::try_from(r).ok()) {
            response.extensions_mut().insert(r);
        }
        return Ok(Some(Head {
            response,
            framing,
            keep_alive,
            upload: None,
        }));
    }
}

/// The body's framing (RFC 9112 §6.3) and whether the connection survives it.
fn framing(
    headers: &HeaderMap,
    status: StatusCode,
    head_request: bool,
    http11: bool,
) -> Result<(Framing, bool), H1Error> {
    if head_request || status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED {
        return Ok((Framing::Done, true));
    }
    if headers.contains_key(header::TRANSFER_ENCODING) {
        // Transfer-Encoding overrides Content-Length; a message with both
        // may be an attempt at smuggling, so its connection is not reused
        // (RFC 9112 §6.3 point 3).
        let both = headers.contains_key(header::CONTENT_LENGTH);
        if !http11 {
            // HTTP/1.0 has no transfer codings (as hyper refuses it).
            return Err(H1Error::Invalid(
                "Transfer-Encoding in an HTTP/1.0 response",
            ));
        }
        // The final coding of the list across all field lines, read as
        // bytes: "gz\xffp, chunked" and "chunked," are chunked too (both
        // were read to the close, the chunk framing passed on as body;
        // fuzz/regressions/h1_response/obs_text_in_transfer_encoding).
        let chunked = last_list_element(headers, header::TRANSFER_ENCODING)
            .is_some_and(|c| c.eq_ignore_ascii_case(b"chunked"));
        return Ok(if chunked {
            (Framing::Chunked(Chunk::Size), !both)
        } else {
            (Framing::Close, false)
        });
    }
    let mut length = None;
    for value in headers.get_all(header::CONTENT_LENGTH) {
        for part in value.as_bytes().split(|&b| b == b',') {
            let n = parse_length(part).ok_or(H1Error::Invalid("invalid Content-Length"))?;
            if length.is_some_and(|l| l != n) {
                return Err(H1Error::Invalid("conflicting Content-Length values"));
            }
            length = Some(n);
        }
    }
    Ok(match length {
        Some(0) => (Framing::Done, true),
        Some(n) => (Framing::Length(n), true),
        None => (Framing::Close, false),
    })
}

fn parse_length(s: &[u8]) -> Option<u64> {
    let s = s.trim_ascii();
    if s.is_empty() || s.len() > 19 || !s.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(s.iter().fold(0u64, |n, &d| n * 10 + u64::from(d - b'0')))
}

/// The elements of a comma-separated field across all its lines, trimmed,
/// empty ones skipped (RFC 9110 §5.6.1); bytes, so that obs-text in one
/// element does not hide the others.
fn list_elements<'a>(
    headers: &'a HeaderMap,
    name: HeaderName,
) -> impl Iterator<Item = &'a [u8]> + 'a {
    headers
        .get_all(name)
        .into_iter()
        .flat_map(|v| v.as_bytes().split(|&b| b == b','))
        .map(<[u8]>::trim_ascii)
        .filter(|e| !e.is_empty())
}

fn last_list_element(headers: &HeaderMap, name: HeaderName) -> Option<&[u8]> {
    list_elements(headers, name).last()
}

fn has_token(headers: &HeaderMap, name: HeaderName, token: &str) -> bool {
    list_elements(headers, name).any(|t| t.eq_ignore_ascii_case(token.as_bytes()))
}

impl Head {
    /// The response head, its body's reader, whether the connection can
    /// carry another exchange once that body is read, and the rest of the
    /// request body still to send.
    pub fn into_parts(self) -> (Response<()>, BodyReader, bool, Option<Upload>) {
        let reader = BodyReader {
            framing: self.framing,
            extensions: 0,
        };
        (self.response, reader, self.keep_alive, self.upload)
    }
}

/// Reads a response body's frames from its connection, as asked for.
pub struct BodyReader {
    framing: Framing,
    /// Bytes of chunk extensions seen: bounded per body, as in hyper.
    extensions: usize,
}

impl BodyReader {
    pub fn is_end_stream(&self) -> bool {
        self.framing == Framing::Done
    }

    /// The body's exact remaining length, when known.
    pub fn exact_len(&self) -> Option<u64> {
        match self.framing {
            Framing::Done => Some(0),
            Framing::Length(n) => Some(n),
            _ => None,
        }
    }

    /// The next frame of the body from `conn`; `None` at its end.
    pub fn poll_frame(
        &mut self,
        conn: &mut Conn,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, H1Error>>> {
        loop {
            match self.framing {
                Framing::Done => return Poll::Ready(None),
                Framing::Length(rest) => {
                    if conn.buf.is_empty() && ready!(self.fill(conn, cx, rest))? == 0 {
                        return Poll::Ready(Some(Err(H1Error::Incomplete)));
                    }
                    let data = take(&mut conn.buf, rest);
                    let rest = rest - data.len() as u64;
                    self.framing = if rest == 0 {
                        Framing::Done
                    } else {
                        Framing::Length(rest)
                    };
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Framing::Close => {
                    if conn.buf.is_empty() && ready!(self.fill(conn, cx, u64::MAX))? == 0 {
                        self.framing = Framing::Done;
                        return Poll::Ready(None);
                    }
                    return Poll::Ready(Some(Ok(Frame::data(conn.buf.split().freeze()))));
                }
                Framing::Chunked(Chunk::Size) => match parse_chunk_size(&conn.buf) {
                    Ok(httparse::Status::Complete((used, ..))) if used > MAX_CHUNK_LINE => {
                        return Poll::Ready(Some(Err(H1Error::Invalid(
                            "chunk size line too long",
                        ))));
                    }
                    Ok(httparse::Status::Complete((used, size, extension_len))) => {
                        // Only the extensions count, not the whole line: a
                        // body of many small chunks is no attack (counting
                        // "1\r\n" lines refused a body of ~5,400 one-byte
                        // chunks; fuzz/regressions/h1_chunked/many_small_chunks).
                        self.extensions += extension_len;
                        if self.extensions > MAX_CHUNK_EXTENSIONS {
                            return Poll::Ready(Some(Err(H1Error::Invalid(
                                "too many chunk extensions",
                            ))));
                        }
                        conn.buf.advance(used);
                        self.framing = Framing::Chunked(if size == 0 {
                            Chunk::Trailers
                        } else {
                            Chunk::Data(size)
                        });
                    }
                    Ok(httparse::Status::Partial) if conn.buf.len() >= MAX_CHUNK_LINE => {
                        return Poll::Ready(Some(Err(H1Error::Invalid(
                            "chunk size line too long",
                        ))));
                    }
                    Ok(httparse::Status::Partial) => ready!(self.need_more(conn, cx))?,
                    Err(_) => {
                        return Poll::Ready(Some(Err(H1Error::Invalid("invalid chunk size"))))
                    }
                },
                Framing::Chunked(Chunk::Data(rest)) => {
                    if conn.buf.is_empty() && ready!(self.fill(conn, cx, rest))? == 0 {
                        return Poll::Ready(Some(Err(H1Error::Incomplete)));
                    }
                    let data = take(&mut conn.buf, rest);
                    let rest = rest - data.len() as u64;
                    self.framing = Framing::Chunked(if rest == 0 {
                        Chunk::DataEnd
                    } else {
                        Chunk::Data(rest)
                    });
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Framing::Chunked(Chunk::DataEnd) => {
                    if conn.buf.len() < 2 {
                        ready!(self.need_more(conn, cx))?;
                        continue;
                    }
                    if &conn.buf[..2] != b"\r\n" {
                        return Poll::Ready(Some(Err(H1Error::Invalid(
                            "chunk not followed by CRLF",
                        ))));
                    }
                    conn.buf.advance(2);
                    self.framing = Framing::Chunked(Chunk::Size);
                }
                Framing::Chunked(Chunk::Trailers) => {
                    let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
                    match httparse::parse_headers(&conn.buf, &mut fields) {
                        Ok(httparse::Status::Complete((used, _))) if used > MAX_TRAILER_BYTES => {
                            return Poll::Ready(Some(Err(H1Error::Invalid("trailers too large"))));
                        }
                        Ok(httparse::Status::Complete((used, fields))) => {
                            let mut trailers = HeaderMap::new();
                            for f in fields.iter() {
                                let name = HeaderName::from_bytes(f.name.as_bytes());
                                let value = HeaderValue::from_bytes(f.value);
                                if let (Ok(n), Ok(v)) = (name, value) {
                                    trailers.append(n, v);
                                }
                            }
                            conn.buf.advance(used);
                            self.framing = Framing::Done;
                            if trailers.is_empty() {
                                return Poll::Ready(None);
                            }
                            return Poll::Ready(Some(Ok(Frame::trailers(trailers))));
                        }
                        Ok(httparse::Status::Partial) if conn.buf.len() >= MAX_TRAILER_BYTES => {
                            return Poll::Ready(Some(Err(H1Error::Invalid("trailers too large"))));
                        }
                        Ok(httparse::Status::Partial) => ready!(self.need_more(conn, cx))?,
                        Err(_) => {
                            return Poll::Ready(Some(Err(H1Error::Invalid("malformed trailers"))))
                        }
                    }
                }
            }
        }
    }

    /// Reads into the buffer for a body part of `rest` bytes; 0 at the end
    /// of the stream.
    fn fill(
        &self,
        conn: &mut Conn,
        cx: &mut Context<'_>,
        rest: u64,
    ) -> Poll<Result<usize, H1Error>> {
        let want = usize::try_from(rest)
            .unwrap_or(usize::MAX)
            .clamp(HEAD_READ, BODY_READ);
        conn.poll_fill(cx, want).map_err(H1Error::Io)
    }

    /// More bytes for a chunk line or trailers; the end of the stream here
    /// is a truncated body.
    fn need_more(&self, conn: &mut Conn, cx: &mut Context<'_>) -> Poll<Result<(), H1Error>> {
        match ready!(conn.poll_fill(cx, HEAD_READ)) {
            Ok(0) => Poll::Ready(Err(H1Error::Incomplete)),
            Ok(_) => Poll::Ready(Ok(())),
            Err(e) => Poll::Ready(Err(H1Error::Io(e))),
        }
    }
}

/// A chunk-size line (RFC 9112 §7.1): hex digits, optional extensions,
/// CRLF. Strict where httparse's version is lenient (no digit at all reads
/// as a last chunk there, which would end a body early and leave the rest
/// of it to be read as the next response). Complete: the line's length, the
/// chunk size, and how many bytes lie between the digits and the CRLF.
fn parse_chunk_size(buf: &[u8]) -> Result<httparse::Status<(usize, u64, usize)>, ()> {
    let digits = buf.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    if digits == buf.len() {
        return if digits > 16 {
            Err(())
        } else {
            Ok(httparse::Status::Partial)
        };
    }
    if digits == 0 || digits > 16 {
        return Err(());
    }
    let size = buf[..digits].iter().fold(0u64, |n, &d| {
        (n << 4) | u64::from((d as char).to_digit(16).unwrap_or(0))
    });
    // Extensions (or whitespace before them) run to the CR; a bare LF or
    // another control byte is refused.
    let rest = &buf[digits..];
    if !matches!(rest[0], b'\r' | b';' | b' ' | b'\t') {
        return Err(());
    }
    for (i, &b) in rest.iter().enumerate() {
        match b {
            b'\r' => {
                return match rest.get(i + 1) {
                    None => Ok(httparse::Status::Partial),
                    Some(b'\n') => Ok(httparse::Status::Complete((digits + i + 2, size, i))),
                    Some(_) => Err(()),
                };
            }
            b'\t' => {}
            b if b < 0x20 || b == 0x7f => return Err(()),
            _ => {}
        }
    }
    Ok(httparse::Status::Partial)
}

/// Up to `rest` bytes from the front of `buf`, sharing its memory.
fn take(buf: &mut BytesMut, rest: u64) -> Bytes {
    let n = usize::try_from(rest).unwrap_or(usize::MAX).min(buf.len());
    buf.split_to(n).freeze()
}

#[cfg(test)]
mod tests {
    //! The exchange against a peer that sends exact bytes, split where the
    //! test says, over a Unix socket pair.

    use http_body_util::BodyExt;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::UnixStream;

    use super::*;

    /// Far above anything these exchanges take: only the timeout tests hit theirs.
    const TEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

    fn request(method: Method, body: UpstreamBody) -> http::Request<UpstreamBody> {
        let mut req = http::Request::new(body);
        *req.method_mut() = method;
        *req.uri_mut() = "/api/x?y=1".parse().expect("uri");
        req.headers_mut()
            .insert(header::HOST, HeaderValue::from_static("jupyter"));
        req
    }

    fn no_body() -> UpstreamBody {
        crate::proxy::body::empty()
    }

    /// A body of unknown length (no exact size hint): sent chunked.
    fn streamed(parts: &[&'static [u8]]) -> UpstreamBody {
        let frames: Vec<Result<Frame<Bytes>, crate::proxy::body::BoxError>> = parts
            .iter()
            .map(|p| Ok(Frame::data(Bytes::from_static(p))))
            .collect();
        http_body_util::StreamBody::new(futures_util::stream::iter(frames)).boxed_unsync()
    }

    /// Runs one exchange: the peer answers with `pieces` once it has read
    /// the request head, and the test gets what the peer read, the
    /// response head and the body's frames (or the first error).
    async fn run(
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

    fn data(frames: &[Frame<Bytes>]) -> Vec<u8> {
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

    #[tokio::test]
    async fn a_body_of_known_length_is_sent_with_nbgates_length_not_the_clients() {
        let body = http_body_util::Full::new(Bytes::from_static(b"abc"))
            .map_err(|never| match never {})
            .boxed_unsync();
        let mut req = request(Method::POST, body);
        // A client's framing headers must not reach Jupyter (smuggling).
        req.headers_mut()
            .insert(header::CONTENT_LENGTH, HeaderValue::from_static("10"));
        req.headers_mut().insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        let (seen, r) = run(req, vec![b"HTTP/1.1 204 No Content\r\n\r\n"]).await;
        assert_eq!(
            seen,
            "POST /api/x?y=1 HTTP/1.1\r\nhost: jupyter\r\ncontent-length: 3\r\n\r\nabc"
        );
        // A bodiless request's length is nbgate's zero, not what was sent.
        let mut zero = request(Method::POST, no_body());
        zero.headers_mut()
            .insert(header::CONTENT_LENGTH, HeaderValue::from_static("5"));
        let (zero_seen, _) = run(zero, vec![b"HTTP/1.1 204 No Content\r\n\r\n"]).await;
        assert_eq!(
            zero_seen,
            "POST /api/x?y=1 HTTP/1.1\r\nhost: jupyter\r\ncontent-length: 0\r\n\r\n"
        );
        let (resp, keep_alive, frames) = r.expect("exchange");
        assert_eq!(resp.status(), StatusCode::NO_CONTENT);
        assert!(keep_alive && frames.is_empty());
    }

    #[tokio::test]
    async fn a_body_of_unknown_length_is_sent_chunked_without_empty_chunks() {
        let req = request(Method::PUT, streamed(&[b"hello", b"", b"world!"]));
        let (seen, r) = run(
            req,
            vec![b"HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n"],
        )
        .await;
        assert_eq!(
            seen,
            "PUT /api/x?y=1 HTTP/1.1\r\nhost: jupyter\r\ntransfer-encoding: chunked\r\n\r\n\
             5\r\nhello\r\n6\r\nworld!\r\n0\r\n\r\n"
        );
        assert_eq!(r.expect("exchange").0.status(), StatusCode::CREATED);
    }

    #[tokio::test]
    async fn a_chunked_response_is_decoded_across_reads_with_extensions_and_trailers() {
        let (_, r) = run(
            request(Method::GET, no_body()),
            vec![
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nWi",
                b"ki\r\n5;ext=1\r",
                b"\npedia\r\n0\r\nX-Checksum: abc\r\n",
                b"\r\n",
            ],
        )
        .await;
        let (_, keep_alive, frames) = r.expect("exchange");
        assert!(keep_alive);
        assert_eq!(data(&frames), b"Wikipedia");
        let trailers = frames
            .last()
            .and_then(|f| f.trailers_ref())
            .expect("trailers");
        assert_eq!(trailers["x-checksum"], "abc");
    }

    #[tokio::test]
    async fn interim_responses_are_skipped_and_a_custom_reason_is_kept() {
        let (_, r) = run(
            request(Method::GET, no_body()),
            vec![
                b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n",
                b"HTTP/1.1 404 No Such Kernel\r\nContent-Length: 2\r\n\r\nno",
            ],
        )
        .await;
        let (resp, _, frames) = r.expect("exchange");
        assert_eq!(resp.status(), StatusCode::NOT_FOUND);
        assert!(
            !resp.headers().contains_key("link"),
            "interim fields are not merged"
        );
        let reason = resp
            .extensions()
            .get::<hyper::ext::ReasonPhrase>()
            .expect("reason");
        assert_eq!(reason.as_bytes(), b"No Such Kernel");
        assert_eq!(data(&frames), b"no");
    }

    #[tokio::test]
    async fn connections_that_cannot_carry_another_exchange_are_not_kept() {
        let cases: [(&'static [u8], &[u8]); 4] = [
            (b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 1\r\n\r\na", b"a"),
            (b"HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\na", b"a"),
            // Both framings: Transfer-Encoding wins, the connection goes.
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\nTransfer-Encoding: chunked\r\n\r\n1\r\na\r\n0\r\n\r\n",
                b"a",
            ),
            // No length: the body ends when Jupyter closes.
            (b"HTTP/1.1 200 OK\r\n\r\nuntil the end", b"until the end"),
        ];
        for (answer, body) in cases {
            let (_, r) = run(request(Method::GET, no_body()), vec![answer]).await;
            let (resp, keep_alive, frames) = r.expect("exchange");
            assert!(!keep_alive, "{}", String::from_utf8_lossy(answer));
            // A length beside Transfer-Encoding is not passed on.
            let h = resp.headers();
            assert!(
                !(h.contains_key(header::CONTENT_LENGTH)
                    && h.contains_key(header::TRANSFER_ENCODING))
            );
            assert_eq!(data(&frames), body);
        }
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
    async fn malformed_answers_fail_the_exchange() {
        let cases: [&'static [u8]; 6] = [
            b"HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\na\r\n0\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
            b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
            b"HTTP/1.1 101 Switching Protocols\r\n\r\n",
            b"HTTP/1.1 2000 OK\r\n\r\n",
            b"NOT HTTP\r\n\r\n",
        ];
        for answer in cases {
            let (_, r) = run(request(Method::GET, no_body()), vec![answer]).await;
            assert!(
                matches!(r, Err(H1Error::Invalid(_))),
                "{}",
                String::from_utf8_lossy(answer)
            );
        }
        let (_, r) = run(
            request(Method::GET, no_body()),
            vec![b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"],
        )
        .await;
        // No size digit is not a last chunk (httparse reads it as one).
        for answer in [
            &b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n\r\n\r\n"[..],
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n;x\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3;x\nabc\r\n0\r\n\r\n",
        ] {
            let (_, r) = run(request(Method::GET, no_body()), vec![answer]).await;
            assert!(
                matches!(r, Err(H1Error::Invalid("invalid chunk size"))),
                "{}: {r:?}",
                String::from_utf8_lossy(answer)
            );
        }
        assert!(
            matches!(r, Err(H1Error::Invalid("invalid chunk size"))),
            "{r:?}"
        );
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
    async fn a_head_response_has_no_body_whatever_its_length_says() {
        let (_, r) = run(
            request(Method::HEAD, no_body()),
            vec![b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n"],
        )
        .await;
        let (resp, keep_alive, frames) = r.expect("exchange");
        assert_eq!(resp.headers()[header::CONTENT_LENGTH], "1000");
        assert!(keep_alive && frames.is_empty());
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
}
