//! The request as written to Jupyter: its head, and its body framed by
//! nbgate (the exact length, or chunked), never by the client.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use http::header;
use hyper::body::{Body, Frame};
use tokio::io::AsyncWrite;

use super::H1Error;
use crate::proxy::body::UpstreamBody;
use crate::proxy::transport::UpstreamStream;

/// A request's bytes on their way to Jupyter, and the body they come from.
pub struct Upload {
    out: Outgoing,
    body: Option<UpstreamBody>,
}

impl Upload {
    pub(super) fn new(parts: &http::request::Parts, body: UpstreamBody) -> Self {
        let out = Outgoing::new(parts, &body);
        let body = (!out.is_finished()).then_some(body);
        Upload { out, body }
    }

    pub(super) fn done() -> Self {
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

#[cfg(test)]
mod tests {
    use http::header::HeaderValue;
    use http::{Method, StatusCode};
    use http_body_util::BodyExt;

    use super::*;
    use crate::proxy::h1::tests::{no_body, request, run, streamed};

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
}
