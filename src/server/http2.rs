//! HTTP/2 connections of clients that negotiated `h2` by ALPN, served on the
//! `h2` crate directly instead of through hyper's HTTP/2 server.
//!
//! Why: in the HTTP/2 profile (benches/README.md, fix 12) hyper's layer
//! between `h2` and nbgate's handler cost ~6k instructions per request: a
//! request body wrapper with a keep-alive recorder, a content-length parse,
//! a pass over the response for connection-specific fields nbgate has
//! already removed (`proxy::headers::remove_hop_by_hop`), a `Date` lookup,
//! and a keep-alive check on every poll of the connection. This module does
//! what nbgate needs of that and nothing else, per stream:
//! - the handler's future is polled; while it is pending, a RST_STREAM from
//!   the client drops it (which cancels the exchange with Jupyter);
//! - the response gets a `Date` when it has none and a `Content-Length`
//!   when the body's size is exact and the field is missing, as hyper did;
//! - the body is sent as the peer's flow control allows: a chunk is polled
//!   before any capacity is claimed, then one byte of capacity reserved
//!   (claiming a whole chunk up front can starve other streams of a peer
//!   that only opens its window once it is exhausted, hyper#4003), so at
//!   most one chunk per stream waits in memory;
//! - a body error resets the stream (INTERNAL_ERROR): the client sees an
//!   incomplete response, never a truncated one that looks whole.
//!
//! WebSockets over HTTP/2 (RFC 8441): the connection advertises
//! SETTINGS_ENABLE_CONNECT_PROTOCOL, so browsers open a WebSocket as one
//! more stream of the connection they already have (an extended CONNECT
//! with `:protocol = websocket`) instead of a new TLS connection each. Such
//! a request reaches the handler with no body and a
//! `proxy::websocket::ClientTunnel` in its extensions; when the handler
//! accepts it (a 2xx marked `TunnelAccepted`), the head goes out without
//! END_STREAM and the stream, as a byte stream (`server::h2_stream`, with
//! this connection's bookkeeping: `H2Tunnel`), goes to the tunnel's task
//! through the `ClientTunnel`. Any other answer is sent as an ordinary
//! response. Either side ends the tunnel with END_STREAM (a half-close,
//! `proxy::websocket::pump` passes it on) or RST_STREAM.
//!
//! Per connection: the same settings hyper was given (and hyper's defaults
//! for the rest), stream-reset limits (`ResetBudget`: reset floods close
//! the connection with GOAWAY ENHANCE_YOUR_CALM), the client
//! preface under the header-read timeout, a PING after a keep-alive
//! interval without a word from the peer, with the connection closed when
//! neither its answer nor anything else comes within the timeout, and on
//! shutdown a graceful GOAWAY: streams already started finish. What one
//! poll of the connection writes leaves in one TLS write (`coalesce`).

use std::future::{poll_fn, Future};
use std::pin::pin;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use h2::server::SendResponse;
use h2::{Ping, PingPong, Reason, SendStream};
use http::header::{HeaderMap, HeaderValue, CONTENT_LENGTH, DATE};
use http::{Request, Response};
use hyper::body::Body;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::{Instant, Sleep};
use tokio_util::sync::CancellationToken;

use super::coalesce::coalesce;
use super::frame_budget::{FrameBudget, Served};
use super::h2_stream::H2Stream;
use super::send_deadline::{SendDeadline, Sent, StallClock};
use crate::proxy::body::{BoxError, H2Body, ProxyBody, RequestBody};
use crate::proxy::websocket::{ClientTunnel, TunnelAccepted, TunnelOffer};
use crate::telemetry::Chain;

/// Connection settings, from `[server]` in the configuration.
#[derive(Debug, Clone)]
pub struct Settings {
    pub max_header_list_size: u32,
    pub max_concurrent_streams: u32,
    pub keep_alive_interval: Duration,
    pub keep_alive_timeout: Duration,
    /// For the client's 24-byte connection preface.
    pub preface_timeout: Duration,
    /// A connection with no open stream for this long is closed (GOAWAY),
    /// as an idle HTTP/1.1 keep-alive connection is: otherwise a client
    /// that answers PINGs and never asks anything holds a connection slot
    /// for ever.
    pub idle_timeout: Duration,
    /// `server.send_timeout` for what the socket cannot see: a stream
    /// whose flow-control window the client keeps shut gets no bytes
    /// written, so the socket never stalls; the stream's wait for window is
    /// timed instead (`super::send_deadline`).
    pub send_timeout: Duration,
}

/// What a stream's waits to send are timed with: the timeout, and what
/// the connection's socket has taken (its progress restarts the clock).
#[derive(Clone)]
struct SendLimit {
    timeout: Duration,
    connection: Arc<Sent>,
}

/// Why a connection ended other than by either side closing it.
#[derive(Debug, thiserror::Error)]
pub enum Http2Error {
    #[error("no HTTP/2 connection preface within {0:?}")]
    PrefaceTimeout(Duration),
    #[error("no answer to a keep-alive PING within {0:?}")]
    KeepAliveTimeout(Duration),
    #[error(transparent)]
    Protocol(#[from] h2::Error),
    /// Writing what a poll of the connection gathered failed.
    #[error("cannot write to the client")]
    Write(#[source] std::io::Error),
}

/// hyper's server defaults, kept: 1 MiB windows let one stream move ~1 MiB
/// per round trip; a peer cannot make nbgate buffer more than 400 KiB of
/// response per stream.
const CONNECTION_WINDOW: u32 = 1024 * 1024;
const STREAM_WINDOW: u32 = 1024 * 1024;
const MAX_SEND_BUFFER: usize = 400 * 1024;
/// Streams h2 itself resets for the peer's protocol errors before it closes
/// the connection with GOAWAY ENHANCE_YOUR_CALM. Stops MadeYouReset
/// (CVE-2025-8671): a client sends a valid request, then a frame that makes
/// the server reset the stream (a zero WINDOW_UPDATE, DATA past the
/// request's end ...); the stream no longer counts against the concurrency
/// limit, but its handler — and its exchange with Jupyter — was started. A
/// correct client causes none of these; hyper's 1024 is generous.
const MAX_LOCAL_ERROR_RESETS: usize = 100;
/// Requests reset by the client before nbgate accepted them, waiting in
/// h2's queue, before the connection is closed (Rapid Reset,
/// CVE-2023-44487, while the accept loop lags; h2's and hyper's default).
const MAX_PENDING_ACCEPT_RESETS: usize = 20;
/// Streams the client may reset before their answer ended, once nbgate had
/// accepted them (and started their handler), before the reset rate is
/// looked at (`ResetBudget`). A browser cancels a few dozen requests when
/// it leaves JupyterLab while it loads.
const PREMATURE_RESETS_ALLOWED: u32 = 100;

/// How long a connection the client has closed may take to send what is
/// left: a peer that closed its side but still reads gets it, one that
/// reads nothing more does not hold the task.
const FINAL_FLUSH_TIMEOUT: Duration = Duration::from_secs(5);

/// Serves one HTTP/2 connection until the client closes it, it fails, or
/// `stop` is cancelled and every stream started before that has finished.
/// `sent` counts what the connection's socket took (`SendDeadline`).
/// `handle` turns a request into the future of its response; each stream
/// runs in its own task.
pub async fn serve<T, H, F>(
    io: T,
    settings: &Settings,
    sent: Arc<Sent>,
    stop: CancellationToken,
    handle: H,
) -> Result<(), Http2Error>
where
    T: AsyncRead + AsyncWrite + Unpin,
    H: Fn(Request<RequestBody>) -> F,
    F: Future<Output = Response<ProxyBody>> + Send + 'static,
{
    let mut builder = h2::server::Builder::new();
    builder
        .initial_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .max_header_list_size(settings.max_header_list_size)
        .max_concurrent_streams(settings.max_concurrent_streams)
        .max_send_buffer_size(MAX_SEND_BUFFER)
        .max_local_error_reset_streams(Some(MAX_LOCAL_ERROR_RESETS))
        .max_pending_accept_reset_streams(MAX_PENDING_ACCEPT_RESETS)
        .enable_connect_protocol();
    let served = Arc::new(Served::default());
    let (io, flusher) = coalesce(FrameBudget::new(io, Arc::clone(&served)));
    let mut conn = tokio::time::timeout(settings.preface_timeout, builder.handshake(io))
        .await
        .map_err(|_| Http2Error::PrefaceTimeout(settings.preface_timeout))??;
    flusher.defer();
    let mut keep_alive = conn
        .ping_pong()
        .map(|p| KeepAlive::new(p, settings.keep_alive_interval, settings.keep_alive_timeout));
    let mut stopped = pin!(stop.cancelled_owned());
    let mut closing = false;
    let resets = Arc::new(ResetBudget::default());
    let streams = Arc::new(OpenStreams::new());
    let mut idle = pin!(tokio::time::sleep(settings.idle_timeout));
    loop {
        let event = poll_fn(|cx| {
            if !closing && stopped.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Event::Stop);
            }
            while !closing && idle.as_mut().poll(cx).is_ready() {
                match streams.idle_until(settings.idle_timeout) {
                    None => return Poll::Ready(Event::Idle),
                    Some(later) => idle.as_mut().reset(later),
                }
            }
            if let Some(k) = keep_alive.as_mut() {
                if k.poll_expired(cx).is_ready() {
                    return Poll::Ready(Event::Unanswered);
                }
            }
            let accepted = conn.poll_accept(cx);
            // Whatever the poll wrote goes out now, in one TLS write (see
            // `coalesce`); a `Pending` flush wakes this task when the
            // socket can take more. The connection's own end comes first.
            if let Poll::Pending | Poll::Ready(Some(Ok(_))) = accepted {
                if let Poll::Ready(Err(e)) = flusher.poll_flush(cx) {
                    return Poll::Ready(Event::WriteFailed(e));
                }
            }
            accepted.map(Event::Stream)
        })
        .await;
        match event {
            Event::Stop => {
                conn.graceful_shutdown();
                closing = true;
            }
            Event::Unanswered => {
                return Err(Http2Error::KeepAliveTimeout(settings.keep_alive_timeout));
            }
            Event::Idle => {
                tracing::debug!(idle = ?settings.idle_timeout, "h2 connection idle: closing");
                conn.graceful_shutdown();
                closing = true;
            }
            Event::Stream(Some(Ok((req, respond)))) => {
                if let Some(k) = &keep_alive {
                    k.note_activity();
                }
                if !resets.start_stream() {
                    // Rapid Reset after acceptance: h2's own limits only
                    // count streams reset before they were accepted (and
                    // nbgate accepts at once), so each reset stream would
                    // cost a handler and an exchange with Jupyter for free.
                    tracing::debug!(
                        premature = resets.premature.load(Ordering::Relaxed),
                        "h2 client resets most of its streams: closing"
                    );
                    drop(respond);
                    conn.abrupt_shutdown(Reason::ENHANCE_YOUR_CALM);
                    closing = true;
                    continue;
                }
                let (mut parts, recv) = req.into_parts();
                let heard = keep_alive.as_ref().map(|k| Arc::clone(&k.heard));
                let (body, tunnel) = if is_websocket_connect(&parts) {
                    // The stream is kept for the tunnel; the handler sees
                    // a request without a body.
                    let (offer, ticket) = ClientTunnel::new();
                    parts.extensions.insert(ticket);
                    let pending = PendingTunnel { recv, offer, heard };
                    (RequestBody::Empty, Some(pending))
                } else if recv.is_end_stream() {
                    (RequestBody::Http2(H2Body::new(recv, None, None)), None)
                } else {
                    let length = content_length(&parts.headers);
                    (RequestBody::Http2(H2Body::new(recv, length, heard)), None)
                };
                let response = handle(Request::from_parts(parts, body));
                tokio::spawn(serve_stream(
                    response,
                    respond,
                    tunnel,
                    Arc::clone(&resets),
                    Arc::clone(&served),
                    OpenStreams::start(&streams),
                    SendLimit {
                        timeout: settings.send_timeout,
                        connection: Arc::clone(&sent),
                    },
                ));
            }
            Event::Stream(Some(Err(e))) => return Err(e.into()),
            Event::WriteFailed(e) => return Err(Http2Error::Write(e)),
            Event::Stream(None) => {
                // h2 flushed and closed on a GOAWAY; not when the client
                // closed first, and what a poll left may still be queued.
                let flushed = poll_fn(|cx| flusher.poll_flush(cx));
                let _ = tokio::time::timeout(FINAL_FLUSH_TIMEOUT, flushed).await;
                return Ok(());
            }
        }
    }
}

// Built and matched on the stack once per event; boxing the request
// would allocate once per stream for nothing.
#[allow(clippy::large_enum_variant)]
enum Event {
    Stop,
    Unanswered,
    Idle,
    WriteFailed(std::io::Error),
    Stream(Option<Result<NewStream, h2::Error>>),
}

/// A client's request and the handle its response is sent on.
type NewStream = (Request<h2::RecvStream>, SendResponse<Bytes>);

/// The streams of one connection still being answered, and when the last
/// one ended: what the idle timeout looks at.
struct OpenStreams {
    open: AtomicUsize,
    /// Milliseconds after `origin` when a stream last ended.
    last_end_ms: AtomicU64,
    origin: Instant,
}

impl OpenStreams {
    fn new() -> Self {
        OpenStreams {
            open: AtomicUsize::new(0),
            last_end_ms: AtomicU64::new(0),
            origin: Instant::now(),
        }
    }

    fn start(this: &Arc<Self>) -> OpenStream {
        this.open.fetch_add(1, Ordering::Relaxed);
        OpenStream(Arc::clone(this))
    }

    /// `None` when the connection has had no open stream for `timeout`;
    /// else when to look again.
    fn idle_until(&self, timeout: Duration) -> Option<Instant> {
        let now = Instant::now();
        if self.open.load(Ordering::Relaxed) > 0 {
            return Some(now + timeout);
        }
        let last_end =
            self.origin + Duration::from_millis(self.last_end_ms.load(Ordering::Relaxed));
        let until = last_end + timeout;
        (until > now).then_some(until)
    }
}

/// One stream being answered; dropped when its task ends.
struct OpenStream(Arc<OpenStreams>);

impl Drop for OpenStream {
    fn drop(&mut self) {
        let s = &self.0;
        let ms = u64::try_from(s.origin.elapsed().as_millis()).unwrap_or(u64::MAX);
        s.last_end_ms.store(ms, Ordering::Relaxed);
        s.open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Premature resets of one connection: streams the client reset after
/// nbgate accepted them and before their answer ended (Envoy's rule for
/// Rapid Reset, CVE-2023-44487). Past `PREMATURE_RESETS_ALLOWED`, a
/// connection on which more than half of all streams ended that way is
/// closed; one that mostly completes its requests never is.
#[derive(Default)]
struct ResetBudget {
    started: AtomicU32,
    premature: AtomicU32,
}

impl ResetBudget {
    /// Counts a new stream; `false` when the connection has spent its
    /// budget and must be closed instead.
    fn start_stream(&self) -> bool {
        let started = self
            .started
            .fetch_add(1, Ordering::Relaxed)
            .saturating_add(1);
        let premature = self.premature.load(Ordering::Relaxed);
        premature <= PREMATURE_RESETS_ALLOWED || premature.saturating_mul(2) <= started
    }

    fn note_premature(&self) {
        self.premature.fetch_add(1, Ordering::Relaxed);
    }
}

/// The client reset the stream while its answer was being sent.
#[derive(Debug, thiserror::Error)]
#[error("stream reset by the client: {0:?}")]
struct ClientReset(Reason);

/// Did the body fail because the client reset the stream?
fn is_client_reset(e: &BoxError) -> bool {
    e.is::<ClientReset>()
        || e.downcast_ref::<h2::Error>()
            .is_some_and(|e| e.is_reset() && e.is_remote())
}

/// Is this an extended CONNECT for a WebSocket (RFC 8441 §4)? h2 accepts
/// `:protocol` only on CONNECT, and only because the connection advertised
/// it. Other protocols (`connect-udp` …) reach the handler as a CONNECT
/// with a body, which the request path refuses (501).
fn is_websocket_connect(parts: &http::request::Parts) -> bool {
    parts.method == http::Method::CONNECT
        && parts
            .extensions
            .get::<h2::ext::Protocol>()
            .is_some_and(|p| p.as_str().eq_ignore_ascii_case("websocket"))
}

/// The request's `Content-Length` (h2 has already checked that it is a
/// number, and resets a stream whose DATA does not add up to it).
fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers.get(CONTENT_LENGTH)?.to_str().ok()?.parse().ok()
}

/// Keep-alive: a PING when nothing has been heard from the peer for
/// `interval`; no PONG within `timeout` means the peer is gone (a half-open
/// TCP connection would otherwise hold its streams, its connection slot and
/// the shutdown drain until the kernel gives up, hours later). As hyper's:
/// while request streams or their data keep arriving the peer is alive, and
/// a PONG queued behind a slow upload's DATA does not count as missing.
struct KeepAlive {
    ping: PingPong,
    interval: Duration,
    timeout: Duration,
    sleep: std::pin::Pin<Box<Sleep>>,
    /// A PING is out and its PONG not yet in.
    waiting: bool,
    /// Set when a request or request data arrives; read and cleared when
    /// the timer fires.
    heard: Arc<AtomicBool>,
}

impl KeepAlive {
    fn new(ping: PingPong, interval: Duration, timeout: Duration) -> Self {
        KeepAlive {
            ping,
            interval,
            timeout,
            sleep: Box::pin(tokio::time::sleep(interval)),
            waiting: false,
            heard: Arc::new(AtomicBool::new(false)),
        }
    }

    fn note_activity(&self) {
        self.heard.store(true, Ordering::Relaxed);
    }

    /// Ready when a PING went unanswered for `timeout` while nothing else
    /// came from the peer either.
    fn poll_expired(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if self.waiting {
            if let Poll::Ready(answer) = self.ping.poll_pong(cx) {
                self.waiting = false;
                if answer.is_ok() {
                    self.restart(self.interval);
                }
                // An error means the connection failed: `poll_accept` says so.
            }
        }
        loop {
            // Polled on every call, not just checked with `is_elapsed`: a
            // poll refused for want of coop budget registers no waker, and
            // the next call must register it.
            if self.sleep.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            let heard = self.heard.swap(false, Ordering::Relaxed);
            if self.waiting {
                if !heard {
                    return Poll::Ready(());
                }
                self.restart(self.timeout);
                continue;
            }
            if heard {
                self.restart(self.interval);
                continue;
            }
            if self.ping.send_ping(Ping::opaque()).is_ok() {
                self.waiting = true;
                // Registers for the PONG (`Ready` here can only be an error).
                if self.ping.poll_pong(cx).is_ready() {
                    self.waiting = false;
                }
                self.restart(self.timeout);
            } else {
                self.restart(self.interval);
            }
        }
    }

    fn restart(&mut self, after: Duration) {
        self.sleep.as_mut().reset(Instant::now() + after);
    }
}

/// One stream: the handler's response, then its body, or the tunnel it
/// opens.
async fn serve_stream<F>(
    response: F,
    mut respond: SendResponse<Bytes>,
    tunnel: Option<PendingTunnel>,
    resets: Arc<ResetBudget>,
    served: Arc<Served>,
    // Held until the stream's answer is sent or abandoned, or while its
    // tunnel is open: the connection is not idle meanwhile.
    open: OpenStream,
    limit: SendLimit,
) where
    F: Future<Output = Response<ProxyBody>>,
{
    let mut response = pin!(response);
    let answer = poll_fn(|cx| {
        if let Poll::Ready(r) = response.as_mut().poll(cx) {
            return Poll::Ready(Some(r));
        }
        // Only while the answer is pending: the client gave up on it.
        match respond.poll_reset(cx) {
            Poll::Ready(_) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    })
    .await;
    let Some(answer) = answer else {
        tracing::debug!("stream reset by the client before its response");
        resets.note_premature();
        return;
    };
    let (mut head, body) = answer.into_parts();
    if !head.headers.contains_key(DATE) {
        head.headers.insert(DATE, http_date());
    }
    if let Some(tunnel) = tunnel {
        if head.status.is_success() && head.extensions.get::<TunnelAccepted>().is_some() {
            open_tunnel(tunnel, head, respond, served, open, limit);
            return;
        }
    }
    let end = body.is_end_stream();
    if !end && !head.headers.contains_key(CONTENT_LENGTH) {
        if let Some(n) = body.size_hint().exact() {
            head.headers.insert(CONTENT_LENGTH, HeaderValue::from(n));
        }
    }
    let mut send = match respond.send_response(Response::from_parts(head, ()), end) {
        Ok(send) => send,
        Err(e) => {
            // A reset stream, or a field HTTP/2 forbids (a bug: the request
            // path removes them).
            tracing::debug!(error = %e, "cannot send a response head");
            respond.send_reset(Reason::INTERNAL_ERROR);
            return;
        }
    };
    if !end {
        if let Err(e) = send_body(body, &mut send, &served, &limit).await {
            tracing::debug!(error = %Chain(&*e), "response body not sent whole");
            if is_client_reset(&e) {
                resets.note_premature();
            }
            send.send_reset(Reason::INTERNAL_ERROR);
        }
    }
}

/// An extended CONNECT for a WebSocket, waiting for its answer.
struct PendingTunnel {
    recv: h2::RecvStream,
    offer: TunnelOffer,
    /// The connection's keep-alive flag (see `H2Body`).
    heard: Option<Arc<AtomicBool>>,
}

/// Sends the 2xx head of an accepted tunnel without END_STREAM and hands
/// the stream to the tunnel's task.
fn open_tunnel(
    tunnel: PendingTunnel,
    head: http::response::Parts,
    mut respond: SendResponse<Bytes>,
    served: Arc<Served>,
    open: OpenStream,
    limit: SendLimit,
) {
    let send = match respond.send_response(Response::from_parts(head, ()), false) {
        Ok(send) => send,
        Err(e) => {
            tracing::debug!(error = %e, "cannot send a tunnel's response head");
            respond.send_reset(Reason::INTERNAL_ERROR);
            return;
        }
    };
    let io = H2Tunnel {
        stream: H2Stream::new(send, tunnel.recv),
        heard: tunnel.heard,
        served,
        _open: open,
    };
    // A client that keeps the stream's window shut stalls the tunnel's
    // writes: timed like a stalled socket.
    let io = SendDeadline::on_stream(io, limit.timeout, limit.connection);
    // The tunnel's task is gone (shutdown): dropping the stream resets it.
    let _ = tunnel.offer.send(Box::new(io));
}

/// A client's WebSocket stream (`H2Stream`) with the connection's
/// bookkeeping: what it reads counts as hearing from the peer (no keep-alive
/// PING needed), what it writes as data served (`FrameBudget`), and while it
/// is open the connection is not idle.
struct H2Tunnel {
    stream: H2Stream,
    heard: Option<Arc<AtomicBool>>,
    served: Arc<Served>,
    _open: OpenStream,
}

impl AsyncRead for H2Tunnel {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        std::task::ready!(std::pin::Pin::new(&mut this.stream).poll_read(cx, buf))?;
        if buf.filled().len() > before {
            if let Some(heard) = &this.heard {
                heard.store(true, Ordering::Relaxed);
            }
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for H2Tunnel {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let n = std::task::ready!(std::pin::Pin::new(&mut this.stream).poll_write(cx, buf))?;
        this.served.add(n);
        Poll::Ready(Ok(n))
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

/// Sends `body` on `send` as the peer's flow control allows.
async fn send_body(
    mut body: ProxyBody,
    send: &mut SendStream<Bytes>,
    served: &Served,
    limit: &SendLimit,
) -> Result<(), BoxError> {
    loop {
        let frame = poll_fn(|cx| {
            if let Poll::Ready(f) = std::pin::Pin::new(&mut body).poll_frame(cx) {
                return Poll::Ready(Ok(f));
            }
            // While the body is pending (a slow upstream, a long poll), a
            // client's RST_STREAM must still end the stream.
            send.poll_reset(cx).map(|r| {
                Err(match r {
                    Ok(reason) => BoxError::from(ClientReset(reason)),
                    Err(e) => BoxError::from(e),
                })
            })
        })
        .await?;
        let frame = match frame {
            None => {
                send.send_data(Bytes::new(), true)?;
                return Ok(());
            }
            Some(frame) => frame?,
        };
        let frame = match frame.into_data() {
            Ok(data) => {
                let end = body.is_end_stream();
                if !data.is_empty() {
                    wait_for_capacity(send, limit).await?;
                    served.add(data.len());
                }
                if !data.is_empty() || end {
                    send.send_data(data, end)?;
                }
                if end {
                    return Ok(());
                }
                continue;
            }
            Err(frame) => frame,
        };
        if let Ok(trailers) = frame.into_trailers() {
            // No more DATA: give back the capacity claim.
            send.reserve_capacity(0);
            send.send_trailers(trailers)?;
            return Ok(());
        }
    }
}

/// Waits until the stream may buffer a chunk (see the module doc). A
/// client that grants no window for `send_timeout`, while the connection's
/// socket takes next to nothing, is treated as one that reads nothing
/// (`super::send_deadline`); a stream waiting its turn behind others on a
/// slow but moving link waits on.
async fn wait_for_capacity(
    send: &mut SendStream<Bytes>,
    limit: &SendLimit,
) -> Result<(), BoxError> {
    if send.capacity() > 0 {
        return Ok(());
    }
    send.reserve_capacity(1);
    let mut clock = StallClock::new(limit.timeout, Some(Arc::clone(&limit.connection)));
    poll_fn(|cx| {
        while send.capacity() == 0 {
            match send.poll_capacity(cx) {
                Poll::Ready(Some(Ok(_))) => {}
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Err(e.into())),
                Poll::Ready(None) => {
                    return Poll::Ready(Err(
                        "the stream closed while its body was being sent".into()
                    ))
                }
                Poll::Pending => {
                    return clock.poll_stalled(cx).map(|()| {
                        Err("the client granted no window for server.send_timeout".into())
                    })
                }
            }
        }
        Poll::Ready(Ok(()))
    })
    .await
}

/// The current time as an HTTP date, formatted once per second per thread.
fn http_date() -> HeaderValue {
    thread_local! {
        static LAST: std::cell::RefCell<Option<(u64, HeaderValue)>> = const { std::cell::RefCell::new(None) };
    }
    let now = SystemTime::now();
    let secs = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    LAST.with(|last| {
        let mut last = last.borrow_mut();
        match &*last {
            Some((s, v)) if *s == secs => v.clone(),
            _ => {
                let v = HeaderValue::from_str(&httpdate::fmt_http_date(now))
                    .expect("an HTTP date is a valid header value");
                *last = Some((secs, v.clone()));
                v
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::body::full;
    use crate::server::coalesce::tests::CountWrites;
    use http_body_util::{BodyExt, StreamBody};
    use hyper::body::Frame;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

    fn settings() -> Settings {
        Settings {
            max_header_list_size: 16 * 1024,
            max_concurrent_streams: 8,
            keep_alive_interval: Duration::from_secs(30),
            keep_alive_timeout: Duration::from_secs(20),
            preface_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(3600),
            send_timeout: Duration::from_secs(60),
        }
    }

    /// A server on one end of an in-memory pipe (`handle` answers each
    /// request) and an h2 client on the other, its connection driven.
    async fn pair<H, F>(
        stop: CancellationToken,
        handle: H,
    ) -> (
        h2::client::SendRequest<Bytes>,
        tokio::task::JoinHandle<Result<(), Http2Error>>,
    )
    where
        H: Fn(Request<RequestBody>) -> F + Send + 'static,
        F: Future<Output = Response<ProxyBody>> + Send + 'static,
    {
        pair_with(h2::client::Builder::new(), stop, handle).await
    }

    /// `pair` with the client's settings from `client`.
    async fn pair_with<H, F>(
        client: h2::client::Builder,
        stop: CancellationToken,
        handle: H,
    ) -> (
        h2::client::SendRequest<Bytes>,
        tokio::task::JoinHandle<Result<(), Http2Error>>,
    )
    where
        H: Fn(Request<RequestBody>) -> F + Send + 'static,
        F: Future<Output = Response<ProxyBody>> + Send + 'static,
    {
        let (client_io, server_io) = tokio::io::duplex(256 * 1024);
        let server_io = SendDeadline::new(server_io, settings().send_timeout);
        let sent = server_io.sent();
        let server =
            tokio::spawn(async move { serve(server_io, &settings(), sent, stop, handle).await });
        let (send, conn) = client.handshake(client_io).await.expect("handshake");
        tokio::spawn(async move {
            let _ = conn.await;
        });
        (send, server)
    }

    /// A server that accepts every WebSocket over HTTP/2 and runs `tunnel`
    /// on its stream (in nbgate the tunnel's task pumps it to Jupyter), and
    /// a client with `client`'s settings.
    async fn tunnel_pair<T, Fut>(
        client: h2::client::Builder,
        tunnel: T,
    ) -> h2::client::SendRequest<Bytes>
    where
        T: Fn(crate::proxy::websocket::TunnelIo) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let tunnel = Arc::new(tunnel);
        let (send, _server) = pair_with(client, CancellationToken::new(), move |req| {
            let tunnel = Arc::clone(&tunnel);
            async move {
                let ticket = req
                    .extensions()
                    .get::<ClientTunnel>()
                    .and_then(ClientTunnel::take)
                    .expect("an extended CONNECT for a WebSocket");
                tokio::spawn(async move {
                    if let Ok(io) = ticket.await {
                        tunnel(io).await;
                    }
                });
                let mut resp = Response::new(crate::proxy::body::empty());
                resp.extensions_mut().insert(TunnelAccepted);
                resp
            }
        })
        .await;
        send
    }

    /// Sends an extended CONNECT for a WebSocket (RFC 8441 §4) once the
    /// server's SETTINGS allow it: the request's send half and the answer.
    async fn send_websocket_connect(
        send: &mut h2::client::SendRequest<Bytes>,
    ) -> (SendStream<Bytes>, Response<h2::RecvStream>) {
        tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                *send = send.clone().ready().await.expect("connection ready");
                if send.is_extended_connect_protocol_enabled() {
                    break;
                }
                tokio::task::yield_now().await;
            }
        })
        .await
        .expect("the server advertises SETTINGS_ENABLE_CONNECT_PROTOCOL");
        let req = Request::connect("https://nbgate.test/ws")
            .extension(h2::ext::Protocol::from("websocket"))
            .body(())
            .expect("request");
        let (resp, stream) = send.send_request(req, false).expect("send CONNECT");
        (stream, resp.await.expect("answer to the CONNECT"))
    }

    /// Opens a WebSocket stream: the request's send half and the 200's body.
    async fn connect_websocket(
        send: &mut h2::client::SendRequest<Bytes>,
    ) -> (SendStream<Bytes>, h2::RecvStream) {
        let (stream, resp) = send_websocket_connect(send).await;
        assert_eq!(resp.status(), 200);
        (stream, resp.into_body())
    }

    /// Bytes 0, 1, … 250, 0, 1 …: a shift shows as a difference.
    fn pattern(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i % 251) as u8).collect()
    }

    /// A response of `count` chunks of `size` bytes each.
    fn chunks(count: usize, size: usize) -> Response<crate::proxy::body::ProxyBody> {
        let frames = futures_util::stream::iter(
            (0..count).map(move |_| Ok::<_, BoxError>(Frame::data(Bytes::from(vec![7u8; size])))),
        );
        Response::new(StreamBody::new(frames).boxed_unsync())
    }

    fn get(path: &str) -> Request<()> {
        Request::get(format!("https://nbgate.test{path}"))
            .body(())
            .expect("request")
    }

    async fn read_all(body: &mut h2::RecvStream) -> Result<Vec<u8>, h2::Error> {
        let mut out = Vec::new();
        while let Some(chunk) = body.data().await {
            let chunk = chunk?;
            let _ = body.flow_control().release_capacity(chunk.len());
            out.extend_from_slice(&chunk);
        }
        Ok(out)
    }

    #[tokio::test]
    async fn a_response_gets_its_body_a_date_and_a_content_length() {
        let (mut send, _server) = pair(CancellationToken::new(), |req| async move {
            assert_eq!(req.uri().path(), "/hello");
            assert!(req.body().is_end_stream(), "a GET has no body");
            Response::new(full("hello over h2"))
        })
        .await;
        let (resp, _) = send.send_request(get("/hello"), true).expect("send");
        let resp = resp.await.expect("response");
        assert_eq!(resp.status(), 200);
        assert!(resp.headers().contains_key(DATE));
        assert_eq!(resp.headers()[CONTENT_LENGTH], "13");
        let mut body = resp.into_body();
        assert_eq!(read_all(&mut body).await.expect("body"), b"hello over h2");
    }

    #[tokio::test]
    async fn answers_ready_together_leave_in_one_write() {
        // 8 streams whose 1 KiB answers are released at once: h2 alone
        // flushed after each DATA frame of 256 bytes or more, one write
        // (one TLS record, one system call) per answer (`coalesce`).
        const N: usize = 8;
        let (client_io, server_io) = tokio::io::duplex(256 * 1024);
        let server_io = CountWrites::new(server_io);
        let writes = Arc::clone(&server_io.writes);
        let arrived = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let release = Arc::new(tokio::sync::Semaphore::new(0));
        let (a, r) = (Arc::clone(&arrived), Arc::clone(&release));
        let _server = tokio::spawn(async move {
            serve(
                server_io,
                &settings(),
                Arc::default(),
                CancellationToken::new(),
                move |_req| {
                    let (a, r) = (Arc::clone(&a), Arc::clone(&r));
                    async move {
                        a.fetch_add(1, Ordering::SeqCst);
                        let _permit = r.acquire().await.expect("semaphore open");
                        Response::new(full(vec![b'a'; 1024]))
                    }
                },
            )
            .await
        });
        let (send, conn) = h2::client::handshake(client_io).await.expect("handshake");
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let mut answers = Vec::new();
        for _ in 0..N {
            let (resp, _) = send.clone().send_request(get("/"), true).expect("send");
            answers.push(resp);
        }
        tokio::time::timeout(Duration::from_secs(5), async {
            while arrived.load(Ordering::SeqCst) < N {
                tokio::task::yield_now().await;
            }
        })
        .await
        .expect("every request reached its handler");
        let before = writes.lock().expect("lock").len();
        release.add_permits(N);
        for resp in answers {
            let mut body = resp.await.expect("response").into_body();
            assert_eq!(read_all(&mut body).await.expect("body").len(), 1024);
        }
        // One write because the test runtime is single-threaded: the 8
        // stream tasks queue their answers before the connection's task
        // runs again (on a multi-threaded runtime the count would depend
        // on timing).
        let used = writes.lock().expect("lock").len() - before;
        assert_eq!(used, 1, "{N} answers took {used} writes");
    }

    #[tokio::test]
    async fn a_large_upload_streams_through_with_its_length_known() {
        // Three times the 1 MiB stream window: it only gets through if the
        // body gives each chunk's capacity back as it is read.
        const SIZE: usize = 3 * 1024 * 1024;
        let (mut send, _server) = pair(CancellationToken::new(), |req| async move {
            assert_eq!(req.body().size_hint().exact(), Some(SIZE as u64));
            let mut body = req.into_body();
            let mut n = 0;
            while let Some(frame) = body.frame().await {
                n += frame.expect("frame").into_data().map_or(0, |d| d.len());
            }
            Response::new(full(n.to_string()))
        })
        .await;
        let req = Request::post("https://nbgate.test/upload")
            .header(CONTENT_LENGTH, SIZE)
            .body(())
            .expect("request");
        let (resp, mut upload) = send.send_request(req, false).expect("send");
        let writer = tokio::spawn(async move {
            let chunk = Bytes::from(vec![7u8; 64 * 1024]);
            for i in 0..SIZE / chunk.len() {
                upload.reserve_capacity(chunk.len());
                while upload.capacity() < chunk.len() {
                    poll_fn(|cx| upload.poll_capacity(cx))
                        .await
                        .expect("capacity")
                        .expect("open");
                }
                let last = i == SIZE / chunk.len() - 1;
                upload.send_data(chunk.clone(), last).expect("data");
            }
        });
        let resp = tokio::time::timeout(Duration::from_secs(20), resp)
            .await
            .expect("the upload stalled")
            .expect("response");
        writer.await.expect("writer");
        let mut body = resp.into_body();
        assert_eq!(
            read_all(&mut body).await.expect("body"),
            SIZE.to_string().as_bytes()
        );
    }

    #[tokio::test]
    async fn a_client_reset_drops_the_pending_handler() {
        struct Dropped(Arc<AtomicBool>);
        impl Drop for Dropped {
            fn drop(&mut self) {
                self.0.store(true, Ordering::SeqCst);
            }
        }
        let dropped = Arc::new(AtomicBool::new(false));
        let (started_tx, started_rx) = tokio::sync::mpsc::unbounded_channel::<()>();
        let flag = Arc::clone(&dropped);
        let (mut send, _server) = pair(CancellationToken::new(), move |_req| {
            let guard = Dropped(Arc::clone(&flag));
            let started = started_tx.clone();
            async move {
                let _guard = guard;
                let _ = started.send(());
                std::future::pending::<()>().await;
                unreachable!("the handler never answers")
            }
        })
        .await;
        let (_resp, mut stream) = send.send_request(get("/slow"), true).expect("send");
        let mut started_rx = started_rx;
        started_rx.recv().await.expect("handler started");
        assert!(!dropped.load(Ordering::SeqCst));
        stream.send_reset(Reason::CANCEL);
        tokio::time::timeout(Duration::from_secs(5), async {
            while !dropped.load(Ordering::SeqCst) {
                tokio::task::yield_now().await;
            }
        })
        .await
        .expect("the handler was not dropped after the client's reset");
    }

    #[tokio::test]
    async fn a_body_that_fails_resets_the_stream_instead_of_ending_it() {
        let (mut send, _server) = pair(CancellationToken::new(), |_req| async move {
            let frames = futures_util::stream::iter(vec![
                Ok(Frame::data(Bytes::from_static(b"partial"))),
                Err(BoxError::from("upstream went away")),
            ]);
            Response::new(StreamBody::new(frames).boxed_unsync())
        })
        .await;
        let (resp, _) = send.send_request(get("/broken"), true).expect("send");
        // The reset may overtake the head at the client; either way the
        // exchange must fail, never end as if whole.
        let outcome = match resp.await {
            Ok(resp) => read_all(&mut resp.into_body()).await,
            Err(e) => Err(e),
        };
        let err = outcome.expect_err("a truncated body must not end cleanly");
        assert_eq!(err.reason(), Some(Reason::INTERNAL_ERROR));
    }

    /// `send_timeout` where the socket never stalls: a client that keeps a
    /// stream's window shut gets that stream reset once the timeout has
    /// passed (not before), and the connection's other streams go on.
    #[tokio::test(start_paused = true)]
    async fn a_stream_whose_window_stays_shut_is_reset_after_the_send_timeout() {
        let mut client = h2::client::Builder::new();
        client.initial_window_size(1024);
        let (mut send, _server) = pair_with(client, CancellationToken::new(), |req| async move {
            if req.uri().path() == "/small" {
                return Response::new(full("small"));
            }
            chunks(8, 16 * 1024)
        })
        .await;
        let (resp, _) = send.send_request(get("/big"), true).expect("send");
        let mut body = resp.await.expect("response").into_body();
        let started = tokio::time::Instant::now();
        let mut got = 0;
        // Read without giving any window back.
        let err = loop {
            match body.data().await {
                Some(Ok(chunk)) => got += chunk.len(),
                Some(Err(e)) => break e,
                None => panic!("the whole body came through a shut window"),
            }
        };
        assert_eq!(got, 1024, "what the initial window allowed");
        assert_eq!(err.reason(), Some(Reason::INTERNAL_ERROR));
        assert!(started.elapsed() >= settings().send_timeout);
        let (resp, _) = send.send_request(get("/small"), true).expect("send");
        let mut small = resp.await.expect("response").into_body();
        assert_eq!(read_all(&mut small).await.expect("body"), b"small");
    }

    /// A client that reads at 2 KiB/s (a slow link), opening its 1 KiB
    /// window again every half second, gets a 512 KiB body over four
    /// minutes, though each 128 KiB chunk takes longer than the send timeout
    /// to leave h2's buffer.
    #[tokio::test(start_paused = true)]
    async fn a_slow_but_steady_reader_gets_the_whole_body() {
        let mut client = h2::client::Builder::new();
        client.initial_window_size(1024);
        let (mut send, _server) = pair_with(client, CancellationToken::new(), |_req| async move {
            chunks(4, 128 * 1024)
        })
        .await;
        let (resp, _) = send.send_request(get("/big"), true).expect("send");
        let mut body = resp.await.expect("response").into_body();
        let started = tokio::time::Instant::now();
        let mut got = 0;
        while let Some(chunk) = body.data().await {
            let chunk = chunk.expect("no reset for a steady reader");
            got += chunk.len();
            tokio::time::sleep(Duration::from_millis(500)).await;
            let _ = body.flow_control().release_capacity(chunk.len());
        }
        assert_eq!(got, 512 * 1024);
        assert!(
            started.elapsed() > Duration::from_secs(240),
            "{:?}",
            started.elapsed()
        );
    }

    #[tokio::test]
    async fn trailers_are_passed_on() {
        let (mut send, _server) = pair(CancellationToken::new(), |_req| async move {
            let mut trailers = HeaderMap::new();
            trailers.insert("grpc-status", HeaderValue::from_static("0"));
            let frames = futures_util::stream::iter(vec![
                Ok::<_, BoxError>(Frame::data(Bytes::from_static(b"data"))),
                Ok(Frame::trailers(trailers)),
            ]);
            Response::new(StreamBody::new(frames).boxed_unsync())
        })
        .await;
        let (resp, _) = send.send_request(get("/trailers"), true).expect("send");
        let mut body = resp.await.expect("response").into_body();
        assert_eq!(read_all(&mut body).await.expect("body"), b"data");
        let trailers = body.trailers().await.expect("trailers").expect("some");
        assert_eq!(trailers["grpc-status"], "0");
    }

    #[tokio::test]
    async fn shutdown_lets_a_started_stream_finish_then_ends_the_connection() {
        let stop = CancellationToken::new();
        let (release_tx, release_rx) = tokio::sync::watch::channel(false);
        let (started_tx, mut started_rx) = tokio::sync::mpsc::unbounded_channel::<()>();
        let (mut send, server) = pair(stop.clone(), move |_req| {
            let mut release = release_rx.clone();
            let started = started_tx.clone();
            async move {
                let _ = started.send(());
                let _ = release.wait_for(|r| *r).await;
                Response::new(full("finished"))
            }
        })
        .await;
        let (resp, _) = send.send_request(get("/long"), true).expect("send");
        started_rx.recv().await.expect("handler started");
        stop.cancel();
        // GOAWAY reaches the client: a new stream is refused.
        let refused = tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                let mut s = send.clone();
                match poll_fn(|cx| s.poll_ready(cx)).await {
                    Err(e) => break e,
                    Ok(()) => match s.send_request(get("/late"), true) {
                        Err(e) => break e,
                        Ok((late, _)) => match late.await {
                            Err(e) => break e,
                            Ok(_) => tokio::task::yield_now().await,
                        },
                    },
                }
            }
        })
        .await
        .expect("no GOAWAY after the stop");
        assert!(refused.is_go_away() || refused.is_remote() || refused.reason().is_some());
        assert!(
            !server.is_finished(),
            "the started stream must be waited for"
        );
        release_tx.send(true).expect("release");
        let resp = resp.await.expect("the started stream is answered");
        let mut body = resp.into_body();
        assert_eq!(read_all(&mut body).await.expect("body"), b"finished");
        let ended = tokio::time::timeout(Duration::from_secs(5), server)
            .await
            .expect("the connection did not end after its last stream");
        assert!(ended.expect("server task").is_ok());
    }

    /// Writes a client preface and an empty SETTINGS frame, then never reads:
    /// a peer that has gone silent.
    async fn silent_peer() -> (DuplexStream, DuplexStream) {
        let (mut client, server) = tokio::io::duplex(256 * 1024);
        client
            .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
            .await
            .expect("preface");
        (client, server)
    }

    /// Serves `io` with a handler that answers every request with nothing.
    async fn serve_empty(io: DuplexStream) -> Result<(), Http2Error> {
        serve(
            io,
            &settings(),
            Arc::default(),
            CancellationToken::new(),
            |_req| async { Response::new(full("")) },
        )
        .await
    }

    #[tokio::test(start_paused = true)]
    async fn a_peer_that_does_not_answer_pings_is_disconnected() {
        let (_client, server_io) = silent_peer().await;
        let started = Instant::now();
        let result = serve_empty(server_io).await;
        assert!(
            matches!(result, Err(Http2Error::KeepAliveTimeout(_))),
            "{result:?}"
        );
        // One interval to the PING, one timeout for its answer.
        assert_eq!(started.elapsed(), Duration::from_secs(50));
    }

    #[tokio::test(start_paused = true)]
    async fn a_peer_whose_upload_keeps_arriving_is_not_taken_for_dead() {
        // The peer never reads, so never answers a PING (as when its PONG
        // waits behind a slow upload), but sends a DATA frame every 10 s.
        let (mut client, server_io) = silent_peer().await;
        // HEADERS, stream 1, END_HEADERS: :method POST, :scheme https,
        // :path / (HPACK static table entries 3, 7, 4).
        client
            .write_all(b"\x00\x00\x03\x01\x04\x00\x00\x00\x01\x83\x87\x84")
            .await
            .expect("headers");
        let uploader = tokio::spawn(async move {
            for _ in 0..12 {
                tokio::time::sleep(Duration::from_secs(10)).await;
                // DATA, stream 1, 4 bytes.
                client
                    .write_all(b"\x00\x00\x04\x00\x00\x00\x00\x00\x01data")
                    .await
                    .expect("data");
            }
            client
        });
        let started = Instant::now();
        let result = serve(
            server_io,
            &settings(),
            Arc::default(),
            CancellationToken::new(),
            |req| async move {
                let mut body = req.into_body();
                while let Some(Ok(_)) = body.frame().await {}
                Response::new(full(""))
            },
        )
        .await;
        assert!(
            matches!(result, Err(Http2Error::KeepAliveTimeout(_))),
            "{result:?}"
        );
        // Alive for the 120 s of upload; dead within an interval and a
        // timeout (plus the PING's own wait) after the last DATA frame.
        let lived = started.elapsed();
        assert!(
            lived >= Duration::from_secs(120) && lived <= Duration::from_secs(120 + 80),
            "closed after {lived:?}"
        );
        drop(uploader.await.expect("uploader"));
    }

    #[tokio::test(start_paused = true)]
    async fn a_peer_that_answers_pings_stays_connected() {
        let (mut send, server) = pair(CancellationToken::new(), |_req| async {
            Response::new(full("still here"))
        })
        .await;
        tokio::time::sleep(Duration::from_secs(300)).await;
        assert!(!server.is_finished());
        let (resp, _) = send.send_request(get("/later"), true).expect("send");
        let mut body = resp.await.expect("response").into_body();
        assert_eq!(read_all(&mut body).await.expect("body"), b"still here");
    }

    #[tokio::test(start_paused = true)]
    async fn a_connection_without_open_streams_is_closed_after_the_idle_timeout() {
        let (client_io, server_io) = tokio::io::duplex(256 * 1024);
        let idle = Settings {
            idle_timeout: Duration::from_secs(10),
            ..settings()
        };
        let server = tokio::spawn(async move {
            serve(
                server_io,
                &idle,
                Arc::default(),
                CancellationToken::new(),
                |_req| async {
                    // Answers after 15 s: longer than the idle timeout.
                    tokio::time::sleep(Duration::from_secs(15)).await;
                    Response::new(full("slow"))
                },
            )
            .await
        });
        let (mut send, conn) = h2::client::handshake(client_io).await.expect("handshake");
        tokio::spawn(async move {
            let _ = conn.await;
        });
        // A stream open past the timeout keeps the connection, and the
        // timeout counts from its end.
        let (resp, _) = send.send_request(get("/slow"), true).expect("send");
        let mut body = resp.await.expect("response").into_body();
        assert_eq!(read_all(&mut body).await.expect("body"), b"slow");
        tokio::time::sleep(Duration::from_secs(9)).await;
        assert!(!server.is_finished(), "closed before the idle timeout");
        tokio::time::sleep(Duration::from_secs(2)).await;
        let ended = tokio::time::timeout(Duration::from_secs(5), server).await;
        // GOAWAY, after which the client hangs up (its close may beat the
        // server's final flush: either end is fine).
        assert!(
            matches!(ended, Ok(Ok(_))),
            "an idle connection is closed: {ended:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_peer_without_a_preface_is_dropped_after_the_timeout() {
        let (mut client, server_io) = tokio::io::duplex(1024);
        let result = serve_empty(server_io).await;
        assert!(
            matches!(result, Err(Http2Error::PrefaceTimeout(_))),
            "{result:?}"
        );
        let mut rest = Vec::new();
        let _ = client.read_to_end(&mut rest).await;
    }

    #[test]
    fn reset_budget_closes_reset_floods_not_clients_that_mostly_finish() {
        // Every stream reset: the budget runs out just past the allowance.
        let flood = ResetBudget::default();
        let mut allowed = 0;
        while flood.start_stream() {
            flood.note_premature();
            allowed += 1;
            assert!(allowed < 1000, "never closed");
        }
        assert_eq!(allowed, PREMATURE_RESETS_ALLOWED + 1);
        // A browser that cancelled 150 of 1000 requests stays.
        let browser = ResetBudget::default();
        for i in 0..1000 {
            assert!(browser.start_stream(), "closed at stream {i}");
            if i % 7 == 0 {
                browser.note_premature();
            }
        }
    }

    #[tokio::test]
    async fn a_client_resetting_accepted_streams_in_a_loop_gets_goaway() {
        // Each request reaches the handler (a Jupyter that takes its time)
        // before the client resets it: h2's pending-accept limit never
        // sees these streams, only nbgate's budget does.
        let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = Arc::clone(&accepted);
        let (mut send, server) = pair(CancellationToken::new(), move |_req| {
            counter.fetch_add(1, Ordering::SeqCst);
            std::future::pending::<Response<ProxyBody>>()
        })
        .await;
        let mut sent = 0;
        let refusal = loop {
            assert!(sent < 1000, "still open after {sent} reset streams");
            send = match tokio::time::timeout(Duration::from_secs(5), send.ready()).await {
                Ok(Ok(ready)) => ready,
                Ok(Err(e)) => break e,
                Err(_) => panic!("no stream slot after {sent} streams"),
            };
            let mut stream = match send.send_request(get("/slow"), true) {
                Ok((_resp, stream)) => stream,
                Err(e) => break e,
            };
            sent += 1;
            let deadline = Instant::now() + Duration::from_secs(5);
            while accepted.load(Ordering::SeqCst) < sent
                && !server.is_finished()
                && Instant::now() < deadline
            {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            stream.send_reset(Reason::CANCEL);
        };
        assert_eq!(
            refusal.reason(),
            Some(Reason::ENHANCE_YOUR_CALM),
            "{refusal:?}"
        );
        assert!(refusal.is_go_away() && refusal.is_remote(), "{refusal:?}");
        assert!(
            sent <= 2 * PREMATURE_RESETS_ALLOWED as usize,
            "after {sent} streams"
        );
        tokio::time::timeout(Duration::from_secs(5), server)
            .await
            .expect("server connection ended")
            .expect("server task")
            .expect("an orderly close");
    }

    /// One HTTP/2 frame: 9-byte header (RFC 9113 §4.1), then the payload.
    fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let len = u32::try_from(payload.len())
            .expect("small frame")
            .to_be_bytes();
        let mut f = vec![len[1], len[2], len[3], kind, flags];
        f.extend_from_slice(&stream.to_be_bytes());
        f.extend_from_slice(payload);
        f
    }

    #[tokio::test]
    async fn a_client_provoking_stream_resets_in_a_loop_gets_goaway() {
        // MadeYouReset (CVE-2025-8671), with hand-built frames: a valid GET (so its handler
        // starts), then a WINDOW_UPDATE that overflows the stream's send window, a stream
        // error that makes the server reset the stream (RFC 9113 §6.9.1) instead of the
        // client, again and again.
        let (client_io, server_io) = tokio::io::duplex(64 * 1024);
        let server = tokio::spawn(async move {
            serve(
                server_io,
                &settings(),
                Arc::default(),
                CancellationToken::new(),
                |_req| std::future::pending::<Response<ProxyBody>>(),
            )
            .await
        });
        let (mut read, mut write) = tokio::io::split(client_io);
        let writer = tokio::spawn(async move {
            let mut out = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
            out.extend(frame(0x4, 0, 0, &[])); // SETTINGS
            write.write_all(&out).await?;
            // HPACK: :method GET, :scheme https, :path /, :authority (literal, not indexed).
            let mut block = vec![0x82, 0x87, 0x84, 0x01, 11];
            block.extend_from_slice(b"nbgate.test");
            for n in 0..400u32 {
                let id = 2 * n + 1;
                let mut out = frame(0x1, 0x4 | 0x1, id, &block); // HEADERS, END_HEADERS|END_STREAM
                let overflow = 0x7fff_ffffu32.to_be_bytes();
                out.extend(frame(0x8, 0, id, &overflow)); // WINDOW_UPDATE past 2^31-1
                write.write_all(&out).await?;
            }
            Ok::<_, std::io::Error>(write)
        });
        // Read the server's frames until its GOAWAY: its error code, and how many
        // streams the server reset before it.
        let mut buf = Vec::new();
        let mut resets = 0;
        let code = 'read: loop {
            while buf.len() >= 9 {
                let len =
                    usize::from(buf[0]) << 16 | usize::from(buf[1]) << 8 | usize::from(buf[2]);
                if buf.len() < 9 + len {
                    break;
                }
                let kind = buf[3];
                let payload: Vec<u8> = buf.drain(..9 + len).skip(9).collect();
                match kind {
                    0x3 => resets += 1,
                    0x7 => break 'read u32::from_be_bytes(payload[4..8].try_into().expect("code")),
                    _ => {}
                }
            }
            let mut chunk = [0u8; 4096];
            let n = tokio::time::timeout(Duration::from_secs(5), read.read(&mut chunk))
                .await
                .unwrap_or_else(|_| panic!("no GOAWAY after {resets} resets"))
                .expect("read");
            assert!(n > 0, "closed without GOAWAY after {resets} resets");
            buf.extend_from_slice(&chunk[..n]);
        };
        assert_eq!(Reason::from(code), Reason::ENHANCE_YOUR_CALM);
        assert!(
            resets <= MAX_LOCAL_ERROR_RESETS,
            "{resets} resets before GOAWAY"
        );
        let ended = tokio::time::timeout(Duration::from_secs(5), server)
            .await
            .expect("server connection ended")
            .expect("server task");
        assert!(ended.is_err(), "{ended:?}");
        writer.abort();
    }

    #[tokio::test]
    async fn a_websocket_stream_carries_more_than_its_windows_both_ways() {
        // The client's stream window is 1 KiB and nbgate's 1 MiB: the
        // message only gets through whole if each side writes what the
        // other's window allows and gives back what it has read.
        const SIZE: usize = 1536 * 1024;
        let mut client = h2::client::Builder::new();
        client.initial_window_size(1024);
        let mut send = tunnel_pair(client, |io| async move {
            let (mut r, mut w) = tokio::io::split(io);
            let _ = tokio::io::copy(&mut r, &mut w).await;
            let _ = w.shutdown().await;
        })
        .await;
        let (stream, recv) = connect_websocket(&mut send).await;
        let (mut r, mut w) = tokio::io::split(H2Stream::new(stream, recv));
        let sent = pattern(SIZE);
        let writer = tokio::spawn(async move {
            w.write_all(&sent).await.expect("write");
            w.shutdown().await.expect("END_STREAM");
        });
        let mut echoed = Vec::new();
        tokio::time::timeout(Duration::from_secs(20), r.read_to_end(&mut echoed))
            .await
            .expect("the echo stalled")
            .expect("read");
        writer.await.expect("writer");
        assert_eq!(echoed.len(), SIZE);
        assert!(
            echoed == pattern(SIZE),
            "the echo differs from what was sent"
        );
    }

    #[tokio::test]
    async fn end_stream_from_the_client_is_a_half_close() {
        // RFC 8441 §5: END_STREAM is TCP's FIN. After it, nbgate's side
        // still sends (Jupyter's answer to a close frame) and ends its
        // side with END_STREAM of its own.
        let mut send = tunnel_pair(h2::client::Builder::new(), |mut io| async move {
            let mut got = Vec::new();
            io.read_to_end(&mut got).await.expect("read to END_STREAM");
            io.write_all(format!("got {} bytes", got.len()).as_bytes())
                .await
                .expect("write after the client's END_STREAM");
            io.shutdown().await.expect("END_STREAM");
        })
        .await;
        let (mut stream, mut recv) = connect_websocket(&mut send).await;
        stream
            .send_data(Bytes::from_static(b"hello"), true)
            .expect("data with END_STREAM");
        let answer = tokio::time::timeout(Duration::from_secs(5), read_all(&mut recv))
            .await
            .expect("the answer stalled")
            .expect("a clean END_STREAM, not a reset");
        assert_eq!(answer, b"got 5 bytes");
    }

    #[tokio::test]
    async fn a_reset_from_the_client_ends_the_tunnel() {
        // CANCEL (a closed tab) and NO_ERROR read as the end of the
        // stream, any other reason as an error; either way the tunnel's
        // reads end and its writes fail instead of waiting.
        for (reason, clean) in [
            (Reason::CANCEL, true),
            (Reason::NO_ERROR, true),
            (Reason::INTERNAL_ERROR, false),
        ] {
            let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
            let mut send = tunnel_pair(h2::client::Builder::new(), move |mut io| {
                let tx = tx.clone();
                async move {
                    let mut buf = [0u8; 64];
                    let read = io.read(&mut buf).await.map_err(|e| e.kind());
                    let mut wrote = Ok(());
                    for _ in 0..100 {
                        wrote = io.write_all(&[0u8; 1024]).await;
                        if wrote.is_err() {
                            break;
                        }
                        tokio::task::yield_now().await;
                    }
                    let _ = tx.send((read, wrote.is_err()));
                }
            })
            .await;
            let (mut stream, _recv) = connect_websocket(&mut send).await;
            stream.send_reset(reason);
            let mut rx = rx;
            let (read, write_failed) = tokio::time::timeout(Duration::from_secs(5), rx.recv())
                .await
                .unwrap_or_else(|_| panic!("{reason:?}: the tunnel did not end"))
                .expect("the tunnel's task reported");
            if clean {
                assert_eq!(read, Ok(0), "{reason:?}");
            } else {
                assert!(read.is_err(), "{reason:?}: {read:?}");
            }
            assert!(write_failed, "{reason:?}: writes went on after the reset");
        }
    }

    #[tokio::test]
    async fn a_tunnel_that_ends_without_end_stream_resets_the_stream() {
        // The tunnel's task drops its stream (Jupyter's connection failed):
        // the client sees RST_STREAM, never an end that looks clean.
        let mut send = tunnel_pair(h2::client::Builder::new(), |io| async move {
            drop(io);
        })
        .await;
        let (_stream, mut recv) = connect_websocket(&mut send).await;
        let end = tokio::time::timeout(Duration::from_secs(5), read_all(&mut recv))
            .await
            .expect("the stream was left open");
        let e = end.expect_err("a reset, not END_STREAM");
        assert_eq!(e.reason(), Some(Reason::CANCEL), "{e}");
    }

    #[tokio::test]
    async fn a_websocket_connect_that_is_not_accepted_gets_an_ordinary_answer() {
        // A refusal (401, 403 …) is sent as a response with END_STREAM,
        // and the stream is not handed over.
        let (mut send, _server) = pair(CancellationToken::new(), |req| async move {
            assert!(req.extensions().get::<ClientTunnel>().is_some());
            let mut resp = Response::new(full("log in"));
            *resp.status_mut() = http::StatusCode::UNAUTHORIZED;
            resp
        })
        .await;
        let (_stream, resp) = send_websocket_connect(&mut send).await;
        assert_eq!(resp.status(), 401);
        let mut body = resp.into_body();
        assert_eq!(read_all(&mut body).await.expect("body"), b"log in");
    }
}
