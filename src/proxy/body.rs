//! Response bodies: the boxed body type of the request path, and a wrapper
//! that counts bytes as they stream and writes the access-log event when the
//! body is finished (or abandoned), so the log reports what was really sent.

use std::net::IpAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Frame, SizeHint};

/// A body's error, whichever part of the path it came from.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The body type of every response nbgate returns.
pub type ProxyBody = UnsyncBoxBody<Bytes, BoxError>;

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
    tracing::info!(
        target: "nbgate::access",
        client = %r.client,
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
