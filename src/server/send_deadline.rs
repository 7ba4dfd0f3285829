//! `server.send_timeout`: a client that takes none of what nbgate sends it
//! for this long loses its connection, or over HTTP/2 the stream it stalls
//! (nginx's `send_timeout`).
//!
//! Why: a client that stops reading in the middle of an answer (a download,
//! a notebook's output, a WebSocket's stream of kernel messages) otherwise
//! holds its connection, its descriptor and the upstream connection behind
//! it for as long as it stays connected; a few hundred such clients use up
//! the descriptors everyone else needs. Reads are not timed here: waiting
//! for a request is `server.header_read_timeout`'s job, and an idle
//! WebSocket is rightly silent.
//!
//! How: one rule, [`StallClock`]: a wait to send starts the clock; the wait
//! ending stops it; the clock fires after `send_timeout` unless the
//! connection's socket took at least [`MIN_PROGRESS`] bytes meanwhile, in
//! which case it starts over.
//! - [`SendDeadline`] wraps a client's TCP stream, under TLS (so that every
//!   write it sees is bytes the kernel took, not rustls's buffer filling or
//!   draining): a write or flush the socket cannot take waits; any write
//!   that completes ends the wait. It counts what the socket took
//!   ([`Sent`]) for the connection's HTTP/2 streams.
//! - Over HTTP/2 a client can stall one stream without the socket ever
//!   filling, by keeping the stream's flow-control window shut.
//!   `server::http2` times a stream's wait for window, and a WebSocket
//!   stream's writes ([`SendDeadline::on_stream`]), with the same clock; the
//!   connection's [`Sent`] counts as progress, so a stream that waits its
//!   turn behind others on a slow but moving link is not cut off.
//!
//! The clock runs only while nbgate has something to send and the client
//! takes nothing, so a slow but steady reader is never cut off.
//!
//! Contract: a caller that got `Pending` polls again until the call
//! completes or drops the stream (hyper, `h2`'s connection task and
//! `proxy::websocket::pump` all do); a wait abandoned half-way would leave
//! its clock running into the next one.
//!
//! Cost: one branch and one relaxed atomic add per completed socket write;
//! the timer is allocated at a connection's first stall and reused after.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// What the connection's socket must take within `send_timeout` for a
/// stalled HTTP/2 stream to wait on: about 1 KiB/s with the default 60 s.
/// Control frames alone (PING answers) stay far below it.
pub const MIN_PROGRESS: u64 = 64 * 1024;

/// Bytes a connection's socket has taken: shared by the socket's
/// [`SendDeadline`] and the connection's HTTP/2 streams.
#[derive(Debug, Default)]
pub struct Sent(AtomicU64);

impl Sent {
    fn add(&self, n: usize) {
        self.0.fetch_add(n as u64, Ordering::Relaxed);
    }

    fn bytes(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// The clock of one wait to send (see the module doc).
pub struct StallClock {
    timeout: Duration,
    /// The connection's socket, whose progress restarts the clock; `None`
    /// for the socket itself, where progress ends the wait.
    progress: Option<Arc<Sent>>,
    /// Reused across waits; `None` until the first.
    timer: Option<Pin<Box<Sleep>>>,
    /// `Some(progress mark)` while a wait is timed.
    waiting: Option<u64>,
}

impl StallClock {
    pub fn new(timeout: Duration, progress: Option<Arc<Sent>>) -> Self {
        StallClock {
            timeout,
            progress,
            timer: None,
            waiting: None,
        }
    }

    /// The wait goes on: starts the clock if it is not running, and is
    /// `Ready` once the client has stalled for good. Registers `cx` for
    /// that moment.
    pub fn poll_stalled(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let mark = self.progress.as_ref().map_or(0, |p| p.bytes());
        if self.waiting.is_none() {
            self.restart(mark);
        }
        loop {
            let timer = self.timer.as_mut().expect("started above");
            if timer.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            let since = self.waiting.unwrap_or(mark);
            if mark.saturating_sub(since) < MIN_PROGRESS {
                return Poll::Ready(());
            }
            // The connection moved meanwhile: a new period.
            self.restart(mark);
        }
    }

    /// The wait is over (the client took something).
    pub fn stop(&mut self) {
        self.waiting = None;
    }

    fn restart(&mut self, mark: u64) {
        let deadline = Instant::now() + self.timeout;
        match &mut self.timer {
            Some(timer) => timer.as_mut().reset(deadline),
            None => self.timer = Some(Box::pin(tokio::time::sleep_until(deadline))),
        }
        self.waiting = Some(mark);
    }

    /// `polled`, a call of the wait, with the clock applied: a result stops
    /// it; `Pending` runs it and becomes `TimedOut` once it has fired.
    fn timed<R>(
        &mut self,
        cx: &mut Context<'_>,
        polled: Poll<io::Result<R>>,
    ) -> Poll<io::Result<R>> {
        if polled.is_ready() {
            self.stop();
            return polled;
        }
        match self.poll_stalled(cx) {
            Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the client took nothing of the answer for server.send_timeout",
            ))),
            Poll::Pending => Poll::Pending,
        }
    }
}

/// A byte stream whose writes must make progress within `send_timeout`.
pub struct SendDeadline<T> {
    io: T,
    clock: StallClock,
    /// What the writes took.
    sent: Arc<Sent>,
}

impl<T> SendDeadline<T> {
    /// A client's socket (under TLS), whose [`Self::sent`] its HTTP/2
    /// streams' clocks watch.
    pub fn new(io: T, timeout: Duration) -> Self {
        SendDeadline {
            io,
            clock: StallClock::new(timeout, None),
            sent: Arc::default(),
        }
    }

    /// One stream of a connection whose socket counts into `connection`
    /// (an HTTP/2 WebSocket stream).
    pub fn on_stream(io: T, timeout: Duration, connection: Arc<Sent>) -> Self {
        SendDeadline {
            io,
            clock: StallClock::new(timeout, Some(connection)),
            sent: Arc::default(),
        }
    }

    /// What the writes took so far.
    pub fn sent(&self) -> Arc<Sent> {
        Arc::clone(&self.sent)
    }

    fn count(&self, polled: &Poll<io::Result<usize>>) {
        if let Poll::Ready(Ok(n)) = polled {
            self.sent.add(*n);
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
        this.count(&polled);
        this.clock.timed(cx, polled)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.io).poll_write_vectored(cx, bufs);
        this.count(&polled);
        this.clock.timed(cx, polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.io).poll_flush(cx);
        this.clock.timed(cx, polled)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.io).poll_shutdown(cx);
        this.clock.timed(cx, polled)
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
        assert_eq!(io.sent().bytes(), 1024);
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

    /// A stream's stall (an HTTP/2 stream waiting for window) waits on
    /// while its connection's socket moves at least `MIN_PROGRESS` per
    /// period, and fires one period after the socket stops.
    #[tokio::test(start_paused = true)]
    async fn a_stream_waits_while_its_connection_moves() {
        let socket = Arc::new(Sent::default());
        let (near, _far) = tokio::io::duplex(16);
        let mut stream =
            SendDeadline::on_stream(near, Duration::from_secs(60), Arc::clone(&socket));
        let feeder = {
            let socket = Arc::clone(&socket);
            tokio::spawn(async move {
                // Ten minutes of a slow link: 64 KiB every 50 s.
                for _ in 0..12 {
                    tokio::time::sleep(Duration::from_secs(50)).await;
                    socket.add(MIN_PROGRESS as usize);
                }
            })
        };
        let started = Instant::now();
        let err = stream
            .write_all(&[3u8; 64])
            .await
            .expect_err("the stream never moves");
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        let waited = started.elapsed();
        assert!(
            waited >= Duration::from_secs(600) && waited <= Duration::from_secs(720),
            "{waited:?}"
        );
        feeder.await.expect("feeder");
        assert_eq!(stream.sent().bytes(), 16, "what the stream itself wrote");
    }
}
