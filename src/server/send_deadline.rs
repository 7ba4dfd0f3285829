//! `server.send_timeout`: a client that takes none of what nbgate sends it
//! for this long loses its connection (nginx's `send_timeout`).
//!
//! Why: a client that stops reading in the middle of an answer (a download,
//! a notebook's output, a WebSocket's stream of kernel messages) otherwise
//! holds its connection, its descriptor and the upstream connection behind
//! it for as long as it stays connected; a few hundred such clients use up
//! the descriptors everyone else needs. Reads are not timed here: waiting
//! for a request is `server.header_read_timeout`'s job, and an idle
//! WebSocket is rightly silent.
//!
//! How: [`SendDeadline`] wraps a client's byte stream under HTTP/1.1,
//! HTTP/2 and the tunnels alike. A write, flush or shutdown the socket
//! cannot take (`Pending`) arms one timer; any write that completes
//! disarms it; if the timer fires first, the pending call fails with
//! `TimedOut`, which ends the connection. The clock runs only while
//! nbgate has something to send and the client takes nothing, so a slow
//! but steady reader is never cut off.
//!
//! Cost: one branch per completed write; the timer is allocated on a
//! connection's first full send buffer and reused after.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// A client's byte stream whose writes must make progress within `timeout`.
pub struct SendDeadline<T> {
    io: T,
    timeout: Duration,
    /// Reused across stalls; `None` until the first one.
    timer: Option<Pin<Box<Sleep>>>,
    /// Whether `timer` is running for the current stall.
    armed: bool,
}

impl<T> SendDeadline<T> {
    pub fn new(io: T, timeout: Duration) -> Self {
        SendDeadline {
            io,
            timeout,
            timer: None,
            armed: false,
        }
    }

    /// What a write call returned, with the stall timer applied: a result
    /// disarms it; `Pending` arms it (once per stall) and becomes
    /// `TimedOut` when it has fired.
    fn timed<R>(
        &mut self,
        cx: &mut Context<'_>,
        polled: Poll<io::Result<R>>,
    ) -> Poll<io::Result<R>> {
        if polled.is_ready() {
            self.armed = false;
            return polled;
        }
        if !self.armed {
            let deadline = Instant::now() + self.timeout;
            match &mut self.timer {
                Some(timer) => timer.as_mut().reset(deadline),
                None => self.timer = Some(Box::pin(tokio::time::sleep_until(deadline))),
            }
            self.armed = true;
        }
        let timer = self.timer.as_mut().expect("armed above");
        match timer.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the client took nothing of the answer for server.send_timeout",
            ))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for SendDeadline<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for SendDeadline<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.io).poll_write(cx, buf);
        this.timed(cx, polled)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.io).poll_write_vectored(cx, bufs);
        this.timed(cx, polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.io).poll_flush(cx);
        this.timed(cx, polled)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.io).poll_shutdown(cx);
        this.timed(cx, polled)
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    /// A peer that stops reading: writes stall once the pipe is full, and
    /// the stalled write fails at the deadline, not before.
    #[tokio::test(start_paused = true)]
    async fn a_stalled_write_fails_at_the_deadline() {
        let (near, _far) = tokio::io::duplex(1024);
        let mut io = SendDeadline::new(near, Duration::from_secs(60));
        let started = Instant::now();
        let err = io.write_all(&[0u8; 4096]).await.expect_err("nobody reads");
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert_eq!(started.elapsed(), Duration::from_secs(60));
    }

    /// A slow reader that takes a little every 50 s keeps its connection
    /// with a 60 s timeout, however long the whole answer takes: the clock
    /// restarts with every write that goes through.
    #[tokio::test(start_paused = true)]
    async fn a_slow_but_steady_reader_is_never_cut_off() {
        let (near, mut far) = tokio::io::duplex(1024);
        let reader = tokio::spawn(async move {
            let mut got = 0usize;
            let mut buf = [0u8; 512];
            loop {
                tokio::time::sleep(Duration::from_secs(50)).await;
                match far.read(&mut buf).await.expect("read") {
                    0 => return got,
                    n => got += n,
                }
            }
        });
        let mut io = SendDeadline::new(near, Duration::from_secs(60));
        io.write_all(&[7u8; 16 * 1024])
            .await
            .expect("a steady reader keeps up");
        io.shutdown().await.expect("shutdown");
        drop(io);
        assert_eq!(reader.await.expect("reader"), 16 * 1024);
    }

    /// Only a stall is timed: a connection with nothing to send (an idle
    /// WebSocket) is never cut off, and a stall after a long idle time gets
    /// the whole timeout again.
    #[tokio::test(start_paused = true)]
    async fn idle_time_does_not_count() {
        let (near, mut far) = tokio::io::duplex(1024);
        let mut io = SendDeadline::new(near, Duration::from_secs(60));
        io.write_all(&[1u8; 1024]).await.expect("fits");
        let mut buf = [0u8; 1024];
        far.read_exact(&mut buf).await.expect("read");
        tokio::time::sleep(Duration::from_secs(3600)).await;
        let started = Instant::now();
        let err = io.write_all(&[2u8; 4096]).await.expect_err("stalled");
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert_eq!(started.elapsed(), Duration::from_secs(60));
    }
}
