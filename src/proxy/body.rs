//! Bodies: a client's request body as it arrives (`RequestBody`, HTTP/1.1
//! or HTTP/2), the boxed body types of responses and of requests sent to
//! Jupyter, and a wrapper that counts
//! bytes as they stream and writes the access-log event when the body is
//! finished (or abandoned), so the log reports what was really sent.

use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Frame, SizeHint};

use crate::auth::Who;

/// A body's error, whichever part of the path it came from.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The body type of every response nbgate returns.
pub type ProxyBody = UnsyncBoxBody<Bytes, BoxError>;

/// The body type of a request sent to Jupyter: the client's body, streamed.
/// Here rather than with the pool, so that the exchange (`h1`) and the pool
/// (`upstream`) both name it without importing each other.
pub type UpstreamBody = UnsyncBoxBody<Bytes, BoxError>;

/// A client's request body, from whichever connection it came on: hyper's
/// for HTTP/1.1, nbgate's own `h2` stream for HTTP/2 (`server::http2`).
/// An enum, not a box: the request path is compiled once, and a bodiless
/// request (nearly all of them) allocates nothing for its body.
pub enum RequestBody {
    Http1(hyper::body::Incoming),
    Http2(H2Body),
    /// No body: an HTTP/2 extended CONNECT, whose stream carries a
    /// WebSocket once answered (`websocket::ClientTunnel`), not a body.
    Empty,
}

impl From<hyper::body::Incoming> for RequestBody {
    fn from(body: hyper::body::Incoming) -> Self {
        RequestBody::Http1(body)
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            RequestBody::Http1(b) => Pin::new(b).poll_frame(cx).map_err(BoxError::from),
            RequestBody::Http2(b) => b.poll_frame(cx),
            RequestBody::Empty => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            RequestBody::Http1(b) => b.is_end_stream(),
            RequestBody::Http2(b) => b.recv.is_end_stream(),
            RequestBody::Empty => true,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            RequestBody::Http1(b) => b.size_hint(),
            RequestBody::Http2(b) => b.size_hint(),
            RequestBody::Empty => SizeHint::with_exact(0),
        }
    }
}

/// An HTTP/2 request body: the stream's DATA frames, then its trailers.
pub struct H2Body {
    recv: h2::RecvStream,
    /// The request's `Content-Length` less what has arrived (h2 itself
    /// resets a stream whose DATA does not add up to it).
    remaining: Option<u64>,
    data_done: bool,
    /// Set on every chunk: the connection's keep-alive then knows the
    /// peer is alive (and that its PONG may be queued behind this data).
    heard: Option<Arc<AtomicBool>>,
}

impl H2Body {
    pub fn new(
        recv: h2::RecvStream,
        content_length: Option<u64>,
        heard: Option<Arc<AtomicBool>>,
    ) -> Self {
        H2Body {
            recv,
            remaining: content_length,
            data_done: false,
            heard,
        }
    }

    fn poll_frame(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if !self.data_done {
            match std::task::ready!(self.recv.poll_data(cx)) {
                Some(Ok(data)) => {
                    // Returned to the client's window as soon as it is handed
                    // on: the window then limits what nbgate buffers per
                    // stream, and the upload goes at the pace Jupyter reads.
                    let _ = self.recv.flow_control().release_capacity(data.len());
                    if let Some(heard) = &self.heard {
                        heard.store(true, Ordering::Relaxed);
                    }
                    if let Some(r) = &mut self.remaining {
                        *r = r.saturating_sub(data.len() as u64);
                    }
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Some(Err(e)) => return Poll::Ready(Some(Err(e.into()))),
                None => self.data_done = true,
            }
        }
        match std::task::ready!(self.recv.poll_trailers(cx)) {
            Ok(Some(trailers)) => Poll::Ready(Some(Ok(Frame::trailers(trailers)))),
            Ok(None) => Poll::Ready(None),
            Err(e) => Poll::Ready(Some(Err(e.into()))),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self.remaining {
            Some(n) => SizeHint::with_exact(n),
            None if self.recv.is_end_stream() => SizeHint::with_exact(0),
            None => SizeHint::default(),
        }
    }
}

/// A complete in-memory body (nbgate's own pages and errors).
pub fn full(bytes: impl Into<Bytes>) -> ProxyBody {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// An empty body.
pub fn empty() -> ProxyBody {
    full(Bytes::new())
}

/// What the access log says about one request.
#[derive(Debug)]
pub struct AccessRecord {
    pub client: IpAddr,
    pub method: http::Method,
    /// The request target; only its path is logged.
    pub uri: http::Uri,
    pub status: u16,
    pub version: http::Version,
    pub start: Instant,
    /// Who made the request: the authenticated user, or the name a
    /// refused login tried; `None` for anonymous requests.
    pub who: Option<Who>,
}

pin_project_lite::pin_project! {
    /// Counts the bytes of a response body and logs once when it ends.
    pub struct LoggedBody {
        #[pin]
        inner: ProxyBody,
        bytes: u64,
        record: Option<AccessRecord>,
        failed: bool,
    }

    impl PinnedDrop for LoggedBody {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            if let Some(r) = this.record.take() {
                // Dropped before the end: the client went away mid-body.
                let aborted = *this.failed || !this.inner.is_end_stream();
                emit(&r, *this.bytes, aborted);
            }
        }
    }
}

impl LoggedBody {
    pub fn new(inner: ProxyBody, record: Option<AccessRecord>) -> Self {
        LoggedBody {
            inner,
            bytes: 0,
            record,
            failed: false,
        }
    }
}

fn emit(r: &AccessRecord, bytes: u64, failed: bool) {
    let who = r.who.as_ref();
    tracing::info!(
        target: "nbgate::access",
        client = %r.client,
        user = who.and_then(Who::user),
        auth = who.and_then(Who::auth_kind),
        auth_id = who.and_then(Who::credential_id),
        user_tried = who.and_then(Who::tried),
        method = %r.method,
        path = %r.uri.path(),
        status = r.status,
        bytes,
        duration_ms = r.start.elapsed().as_millis() as u64,
        version = ?r.version,
        aborted = failed,
        "request"
    );
}

impl Body for LoggedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.project();
        let polled = this.inner.poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(d) = frame.data_ref() {
                    *this.bytes += d.len() as u64;
                }
            }
            Poll::Ready(Some(Err(_))) => *this.failed = true,
            Poll::Ready(None) => {
                if let Some(r) = this.record.take() {
                    emit(&r, *this.bytes, *this.failed);
                }
            }
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
