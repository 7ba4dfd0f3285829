//! One HTTP/2 stream as a byte stream (`AsyncRead + AsyncWrite`): what a
//! WebSocket over HTTP/2 runs on once its extended CONNECT has been answered
//! (RFC 8441 §5). `server::http2` wraps it for a client's tunnel; the same
//! type serves the client side in tests and benches, so there is one
//! implementation of the flow-control and end-of-stream rules below.
//!
//! Semantics (RFC 8441 §5: END_STREAM is the equivalent of TCP FIN, and
//! RST_STREAM of TCP RST):
//! - reading returns the peer's DATA and gives the bytes back to the
//!   stream's window as they are consumed, so the window (not this type)
//!   bounds what waits here; END_STREAM reads as the end of the stream
//!   (`Ok(0)`), and so does a RST_STREAM with NO_ERROR or CANCEL (a closed
//!   tab); any other reset is an error;
//! - writing claims flow-control capacity only when there is something to
//!   write (an idle claim would pin connection window, hyper#4003) and
//!   sends only what the peer's window allows now, so a slow reader slows
//!   the writer instead of filling h2's send buffer;
//! - `poll_shutdown` sends END_STREAM (a half-close: reading goes on);
//!   dropping the stream without it makes h2 reset the stream.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use h2::{Reason, RecvStream, SendStream};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// An HTTP/2 stream's two halves as one byte stream.
pub struct H2Stream {
    recv: RecvStream,
    send: SendStream<Bytes>,
    /// Received but not yet read.
    unread: Bytes,
    /// END_STREAM sent.
    ended: bool,
}

impl H2Stream {
    /// The stream of an answered extended CONNECT: `send` from the request
    /// (client) or the response (server), `recv` from the other.
    pub fn new(send: SendStream<Bytes>, recv: RecvStream) -> Self {
        H2Stream {
            recv,
            send,
            unread: Bytes::new(),
            ended: false,
        }
    }
}

/// An h2 error as the io error a byte pump expects.
fn io_error(e: h2::Error) -> io::Error {
    if e.is_io() {
        return e.into_io().unwrap_or_else(|| io::ErrorKind::Other.into());
    }
    io::Error::new(io::ErrorKind::ConnectionReset, e)
}

impl AsyncRead for H2Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        while this.unread.is_empty() {
            match ready!(this.recv.poll_data(cx)) {
                None => return Poll::Ready(Ok(())),
                Some(Ok(data)) => this.unread = data,
                Some(Err(e)) if matches!(e.reason(), Some(Reason::NO_ERROR | Reason::CANCEL)) => {
                    return Poll::Ready(Ok(()));
                }
                Some(Err(e)) => return Poll::Ready(Err(io_error(e))),
            }
        }
        let n = this.unread.len().min(buf.remaining());
        buf.put_slice(&this.unread.split_to(n));
        // Fails only once the stream is gone, which the next read reports.
        let _ = this.recv.flow_control().release_capacity(n);
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for H2Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        loop {
            let capacity = this.send.capacity();
            if capacity > 0 {
                let n = capacity.min(buf.len());
                this.send
                    .send_data(Bytes::copy_from_slice(&buf[..n]), false)
                    .map_err(io_error)?;
                return Poll::Ready(Ok(n));
            }
            this.send.reserve_capacity(buf.len());
            match ready!(this.send.poll_capacity(cx)) {
                Some(Ok(_)) => {}
                Some(Err(e)) => return Poll::Ready(Err(io_error(e))),
                None => return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into())),
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // What `send_data` took, the connection's task writes.
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.ended {
            this.ended = true;
            // No more DATA: give back any capacity claim.
            this.send.reserve_capacity(0);
            this.send.send_data(Bytes::new(), true).map_err(io_error)?;
        }
        Poll::Ready(Ok(()))
    }
}
