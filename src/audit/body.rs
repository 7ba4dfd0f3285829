//! One audited HTTP request on its way: the tee that reads the fields of
//! its JSON body as the body streams to Jupyter (unchanged, without
//! holding it), and the event recorded once Jupyter answered (at the
//! answer's head, or at the end of its body when the event needs a field
//! of it).

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};

use super::classify::{self, Op, Outcome};
use super::json_scan::Scanner;
use super::Actor;

/// A scanner shared by a body and the pending event (std Mutex: held only
/// to feed or read it, never across an await).
type Shared = Arc<Mutex<Scanner>>;

fn lock(s: &Shared) -> std::sync::MutexGuard<'_, Scanner> {
    s.lock().unwrap_or_else(|e| e.into_inner())
}

/// An operation waiting for Jupyter's answer.
pub struct Pending {
    op: Op,
    actor: Actor,
    request: Option<Shared>,
}

impl Pending {
    pub fn new(op: Op, actor: Actor) -> Pending {
        Pending {
            op,
            actor,
            request: None,
        }
    }

    /// The request body to send on: observed when the operation needs its
    /// fields, else as it was.
    pub fn tee<B>(&mut self, body: B) -> Tee<B> {
        let scan = self.op.what.wants_request_body().then(|| {
            let s: Shared = Arc::default();
            self.request = Some(Arc::clone(&s));
            s
        });
        Tee { inner: body, scan }
    }

    /// Jupyter answered with `status`: records the event now, or, when it
    /// needs a field of the answer's body, returns what records it at the
    /// end of that body (`Observed::new`).
    pub fn answered(self, status: u16, location: Option<&str>) -> Option<Answered> {
        if self.op.what.wants_response_body() {
            return Some(Answered {
                pending: self,
                status,
                location: location.map(str::to_owned),
                response: Scanner::default(),
            });
        }
        self.record(status, location, None);
        None
    }

    fn record(&self, status: u16, location: Option<&str>, response: Option<&Scanner>) {
        let request = self.request.as_ref().map(lock);
        let out = Outcome {
            status,
            location,
            request: request.as_deref(),
            response,
        };
        if let Some(e) = classify::event(&self.op, &self.actor, &out) {
            drop(request);
            super::record(e);
        }
    }
}

/// An answer whose body the event still needs.
pub struct Answered {
    pending: Pending,
    status: u16,
    location: Option<String>,
    response: Scanner,
}

impl Answered {
    fn finish(&self) {
        self.pending
            .record(self.status, self.location.as_deref(), Some(&self.response));
    }
}

pin_project_lite::pin_project! {
    /// A request body on its way to Jupyter, its JSON fields read as it
    /// passes. Every frame goes on unchanged.
    pub struct Tee<B> {
        #[pin]
        inner: B,
        scan: Option<Shared>,
    }
}

impl<B: Body<Data = Bytes>> Body for Tee<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = self.project();
        let polled = this.inner.poll_frame(cx);
        if let (Some(scan), Poll::Ready(Some(Ok(frame)))) = (this.scan.as_ref(), &polled) {
            if let Some(d) = frame.data_ref() {
                lock(scan).feed(d);
            }
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

pin_project_lite::pin_project! {
    /// Jupyter's answer on its way to the client, read for the fields the
    /// event needs; the event is recorded when it ends (or is dropped).
    pub struct Observed<B> {
        #[pin]
        inner: B,
        answered: Option<Answered>,
    }

    impl<B> PinnedDrop for Observed<B> {
        fn drop(this: Pin<&mut Self>) {
            if let Some(a) = this.project().answered.take() {
                a.finish();
            }
        }
    }
}

impl<B> Observed<B> {
    pub fn new(inner: B, answered: Answered) -> Self {
        Observed {
            inner,
            answered: Some(answered),
        }
    }
}

impl<B: Body<Data = Bytes>> Body for Observed<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = self.project();
        let polled = this.inner.poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let (Some(a), Some(d)) = (this.answered.as_mut(), frame.data_ref()) {
                    a.response.feed(d);
                }
            }
            Poll::Ready(None) | Poll::Ready(Some(Err(_))) => {
                if let Some(a) = this.answered.take() {
                    a.finish();
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
