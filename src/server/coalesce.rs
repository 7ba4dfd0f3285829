//! One TLS write per poll of an HTTP/2 connection, however many frames the
//! poll produced.
//!
//! Why: `h2` keeps a DATA payload of 256 bytes or more out of its frame
//! buffer (it chains it, to save a copy) and flushes the I/O before it
//! encodes the next frame. With 16 streams answering 1 KiB each, that was
//! 16 `poll_flush` calls, so 16 TLS records and 16 `sendmsg` system calls
//! where one of each would do (benches/README.md, fix 13). nginx gathers a
//! connection's frames into one `SSL_write` per event loop pass; this does
//! the same for nbgate.
//!
//! How: [`Coalesced`] is the I/O `h2` is given. Small writes are copied into
//! its buffer, and its `poll_flush` is a no-op once [`Flusher::defer`] has
//! been called. The connection's driver (`server::http2`) calls
//! [`Flusher::poll_flush`] after every poll of the `h2` connection, before
//! its task sleeps, so nothing is left behind: all of an `h2` connection's
//! I/O happens inside those polls (stream tasks only queue frames and wake
//! the connection's task). Backpressure is kept: past [`BUFFER_LIMIT`]
//! bytes, and for writes over [`COPY_LIMIT`], writes go to the TLS stream
//! itself, buffered bytes first, and wait for it as before.
//! `poll_shutdown` (h2's close, after its GOAWAY) flushes for real.

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Bytes gathered before writes go through to the TLS stream: room for the
/// answers of the 16 streams a browser or a load generator sends at once,
/// and 2 full TLS records.
pub const BUFFER_LIMIT: usize = 32 * 1024;

/// Writes this large are not copied: a full-size DATA frame (16 KiB and
/// its 9-byte head) goes to the TLS stream as it is, buffered bytes first.
/// A download then costs no copy, and its frames fill TLS records anyway.
pub const COPY_LIMIT: usize = 16 * 1024;

/// The I/O handed to `h2`.
pub struct Coalesced<T> {
    shared: Arc<Mutex<Shared<T>>>,
}

/// The driver's handle on the same I/O, to flush what a poll left.
pub struct Flusher<T> {
    shared: Arc<Mutex<Shared<T>>>,
}

struct Shared<T> {
    io: T,
    /// Bytes written by `h2` and not yet passed to `io`; `buf[sent..]` is
    /// what is left of them.
    buf: Vec<u8>,
    sent: usize,
    /// Something was written to `io` (or `buf`) since its last flush.
    dirty: bool,
    /// `poll_flush` waits for the driver. Off until the handshake is done:
    /// `h2` flushes its SETTINGS and then waits for the client's preface
    /// inside one poll of its handshake, which has no driver around it.
    deferred: bool,
}

/// Wraps `io`: the half for `h2` and the half for the driver.
pub fn coalesce<T>(io: T) -> (Coalesced<T>, Flusher<T>) {
    let shared = Arc::new(Mutex::new(Shared {
        io,
        buf: Vec::new(),
        sent: 0,
        dirty: false,
        deferred: false,
    }));
    let flusher = Flusher {
        shared: Arc::clone(&shared),
    };
    (Coalesced { shared }, flusher)
}

/// Both halves are used by one task, one at a time: the lock is never
/// contended, and never held across an await.
fn lock<T>(shared: &Mutex<Shared<T>>) -> MutexGuard<'_, Shared<T>> {
    // No code under the lock panics but `io`'s; its state is then no worse
    // than after any other I/O error.
    shared.lock().unwrap_or_else(PoisonError::into_inner)
}

impl<T> Flusher<T>
where
    T: AsyncWrite + Unpin,
{
    /// From now on `h2`'s flushes wait for [`Flusher::poll_flush`].
    pub fn defer(&self) {
        lock(&self.shared).deferred = true;
    }

    /// Writes and flushes everything gathered so far.
    pub fn poll_flush(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        lock(&self.shared).poll_flush_all(cx)
    }
}

impl<T> Shared<T>
where
    T: AsyncWrite + Unpin,
{
    fn pending(&self) -> &[u8] {
        &self.buf[self.sent..]
    }

    fn consume(&mut self, n: usize) {
        self.sent += n;
        if self.sent == self.buf.len() {
            self.buf.clear();
            self.sent = 0;
        }
    }

    /// Passes the buffered bytes to `io`.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while !self.pending().is_empty() {
            let n = ready!(Pin::new(&mut self.io).poll_write(cx, &self.buf[self.sent..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.consume(n);
        }
        Poll::Ready(Ok(()))
    }

    fn poll_flush_all(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if !self.dirty {
            return Poll::Ready(Ok(()));
        }
        ready!(self.poll_drain(cx))?;
        ready!(Pin::new(&mut self.io).poll_flush(cx))?;
        self.dirty = false;
        Poll::Ready(Ok(()))
    }

    fn poll_write_vectored(
        &mut self,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let len: usize = bufs.iter().map(|b| b.len()).sum();
        if len == 0 {
            return Poll::Ready(Ok(0));
        }
        self.dirty = true;
        if len <= COPY_LIMIT && self.pending().len() + len <= BUFFER_LIMIT {
            // The bytes already passed on are dropped before the buffer
            // grows past the limit: a client that reads slowly, so that
            // each drain is partial, would otherwise grow it by all it is
            // sent (a review found this; see the test).
            if self.buf.len() + len > BUFFER_LIMIT {
                self.buf.drain(..self.sent);
                self.sent = 0;
            }
            for b in bufs {
                self.buf.extend_from_slice(b);
            }
            return Poll::Ready(Ok(len));
        }
        // A large write (a download's full frames), or the buffer is full:
        // to the TLS stream, after what is buffered, in one call when the
        // TLS stream takes vectors (tokio-rustls does). h2 writes at most
        // 2 slices; more would only make the write partial.
        loop {
            if self.pending().is_empty() {
                return Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
            }
            let pending = self.pending().len();
            let n = {
                let mut slices = [IoSlice::new(&[]); 4];
                let k = 1 + bufs.len().min(slices.len() - 1);
                slices[0] = IoSlice::new(&self.buf[self.sent..]);
                slices[1..k].copy_from_slice(&bufs[..k - 1]);
                ready!(Pin::new(&mut self.io).poll_write_vectored(cx, &slices[..k]))?
            };
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            if n > pending {
                self.consume(pending);
                return Poll::Ready(Ok(n - pending));
            }
            self.consume(n);
        }
    }
}

impl<T> AsyncRead for Coalesced<T>
where
    T: AsyncRead + Unpin,
{
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut lock(&self.shared).io).poll_read(cx, buf)
    }
}

impl<T> AsyncWrite for Coalesced<T>
where
    T: AsyncWrite + Unpin,
{
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        lock(&self.shared).poll_write_vectored(cx, &[IoSlice::new(buf)])
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        lock(&self.shared).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut shared = lock(&self.shared);
        if shared.deferred {
            return Poll::Ready(Ok(()));
        }
        shared.poll_flush_all(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut shared = lock(&self.shared);
        ready!(shared.poll_flush_all(cx))?;
        Pin::new(&mut shared.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::future::poll_fn;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Counts the writes and flushes that reach the stream under test: how
    /// many system calls (and TLS records) a real socket would have seen
    /// is what this module changes, and a socket does not report it.
    pub(crate) struct CountWrites<T> {
        pub(crate) inner: T,
        pub(crate) writes: Arc<Mutex<Vec<Vec<u8>>>>,
        pub(crate) flushes: usize,
        pub(crate) shut: bool,
    }

    impl<T> CountWrites<T> {
        pub(crate) fn new(inner: T) -> Self {
            CountWrites {
                inner,
                writes: Arc::default(),
                flushes: 0,
                shut: false,
            }
        }
    }

    impl<T: AsyncRead + Unpin> AsyncRead for CountWrites<T> {
        fn poll_read(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            Pin::new(&mut self.inner).poll_read(cx, buf)
        }
    }

    impl<T: AsyncWrite + Unpin> AsyncWrite for CountWrites<T> {
        fn poll_write(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            self.poll_write_vectored(cx, &[IoSlice::new(buf)])
        }

        fn poll_write_vectored(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            bufs: &[IoSlice<'_>],
        ) -> Poll<io::Result<usize>> {
            // All slices in one write, as a socket's `writev` takes them.
            let all: Vec<u8> = bufs.iter().flat_map(|b| b.iter().copied()).collect();
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &all))?;
            self.writes.lock().expect("lock").push(all[..n].to_vec());
            Poll::Ready(Ok(n))
        }

        fn is_write_vectored(&self) -> bool {
            true
        }

        fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            self.flushes += 1;
            Pin::new(&mut self.inner).poll_flush(cx)
        }

        fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            self.shut = true;
            Pin::new(&mut self.inner).poll_shutdown(cx)
        }
    }

    type Counted = CountWrites<Vec<u8>>;

    fn counted() -> (Coalesced<Counted>, Flusher<Counted>) {
        coalesce(CountWrites::new(Vec::new()))
    }

    fn writes<T>(f: &Flusher<CountWrites<T>>) -> Vec<Vec<u8>> {
        lock(&f.shared).io.writes.lock().expect("lock").clone()
    }

    #[tokio::test]
    async fn writes_and_flushes_between_driver_flushes_leave_as_one_write() {
        let (mut io, flusher) = counted();
        flusher.defer();
        for frame in [&b"HEADERS"[..], b"DATA one", b"DATA two"] {
            io.write_all(frame).await.expect("write");
            io.flush().await.expect("flush");
        }
        assert!(
            writes(&flusher).is_empty(),
            "nothing written before the driver flushes"
        );
        poll_fn(|cx| flusher.poll_flush(cx)).await.expect("flush");
        assert_eq!(writes(&flusher), vec![b"HEADERSDATA oneDATA two".to_vec()]);
        assert_eq!(lock(&flusher.shared).io.flushes, 1);
        // Nothing new: no write, no flush.
        poll_fn(|cx| flusher.poll_flush(cx)).await.expect("flush");
        assert_eq!(writes(&flusher).len(), 1);
        assert_eq!(lock(&flusher.shared).io.flushes, 1);
    }

    #[tokio::test]
    async fn before_the_handshake_is_done_a_flush_writes_through() {
        // h2 flushes its SETTINGS, then waits for the client's preface in
        // the same poll of its handshake: they must not wait for a driver.
        let (mut io, flusher) = counted();
        io.write_all(b"SETTINGS").await.expect("write");
        io.flush().await.expect("flush");
        assert_eq!(writes(&flusher), vec![b"SETTINGS".to_vec()]);
    }

    #[tokio::test]
    async fn a_large_write_goes_out_behind_the_buffered_bytes_in_one_call() {
        let (mut io, flusher) = counted();
        flusher.defer();
        io.write_all(b"head").await.expect("write");
        // A full-size DATA frame, as h2 writes it: its head, then the payload.
        let big = vec![7u8; COPY_LIMIT];
        let head = IoSlice::new(b"frame");
        let n =
            poll_fn(|cx| Pin::new(&mut io).poll_write_vectored(cx, &[head, IoSlice::new(&big)]))
                .await
                .expect("write");
        assert_eq!(
            n,
            5 + COPY_LIMIT,
            "the caller's bytes are counted, the buffered ones not"
        );
        let w = writes(&flusher);
        assert_eq!(w.len(), 1);
        assert_eq!(&w[0][..9], b"headframe");
        assert_eq!(w[0].len(), 9 + COPY_LIMIT);
        // With nothing buffered, a large write passes straight through.
        let bigger = vec![8u8; COPY_LIMIT + 1];
        io.write_all(&bigger).await.expect("write");
        assert_eq!(writes(&flusher).len(), 2);
        assert_eq!(writes(&flusher)[1], bigger);
    }

    #[tokio::test]
    async fn shutdown_sends_what_is_buffered_before_closing() {
        let (mut io, flusher) = counted();
        flusher.defer();
        io.write_all(b"GOAWAY").await.expect("write");
        io.flush().await.expect("flush");
        io.shutdown().await.expect("shutdown");
        assert_eq!(writes(&flusher), vec![b"GOAWAY".to_vec()]);
        assert!(lock(&flusher.shared).io.shut);
    }

    /// A socket that takes `allowance` bytes, then is full until the test
    /// gives it more: the partial writes a slow reader causes.
    struct Trickle {
        out: Vec<u8>,
        allowance: usize,
    }

    impl AsyncWrite for Trickle {
        fn poll_write(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            if self.allowance == 0 {
                return Poll::Pending;
            }
            let n = buf.len().min(self.allowance);
            self.allowance -= n;
            self.out.extend_from_slice(&buf[..n]);
            Poll::Ready(Ok(n))
        }

        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }

        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    #[test]
    fn a_slow_reader_does_not_grow_the_buffer_past_its_limit() {
        let (mut io, flusher) = coalesce(Trickle {
            out: Vec::new(),
            allowance: 0,
        });
        flusher.defer();
        let waker = futures_util::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        // 8 KiB frames (as a download whose upstream chunks are small),
        // against a socket that drains 10,000 bytes at a time.
        let mut sent = Vec::new();
        let mut i = 0u8;
        while sent.len() < 4 * 1024 * 1024 {
            let frame = [i; 8192];
            match Pin::new(&mut io).poll_write(&mut cx, &frame) {
                Poll::Ready(Ok(n)) => {
                    sent.extend_from_slice(&frame[..n]);
                    i = i.wrapping_add(1);
                }
                Poll::Ready(Err(e)) => panic!("write failed: {e}"),
                Poll::Pending => lock(&flusher.shared).io.allowance += 10_000,
            }
            let shared = lock(&flusher.shared);
            assert!(
                shared.buf.len() <= BUFFER_LIMIT,
                "buffer at {}",
                shared.buf.len()
            );
            assert!(shared.buf.capacity() <= 2 * BUFFER_LIMIT);
        }
        lock(&flusher.shared).io.allowance = usize::MAX;
        assert!(flusher.poll_flush(&mut cx).is_ready());
        assert!(lock(&flusher.shared).io.out == sent, "every byte, in order");
    }

    #[tokio::test]
    async fn a_peer_that_stops_reading_stops_the_writer_at_the_limit_then_gets_every_byte() {
        let (near, mut far) = tokio::io::duplex(1024);
        let (mut io, flusher) = coalesce(near);
        flusher.defer();
        let chunk = [b'x'; 1000];
        let mut accepted = 0;
        let waker = futures_util::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        loop {
            match Pin::new(&mut io).poll_write(&mut cx, &chunk) {
                Poll::Ready(Ok(n)) => accepted += n,
                Poll::Ready(Err(e)) => panic!("write failed: {e}"),
                Poll::Pending => break,
            }
            assert!(
                accepted <= BUFFER_LIMIT + 1024 + chunk.len(),
                "no backpressure"
            );
        }
        assert!(
            accepted > BUFFER_LIMIT - chunk.len(),
            "the buffer fills first: {accepted}"
        );
        // The reader catches up: everything accepted arrives, in order.
        let reader = tokio::spawn(async move {
            let mut got = Vec::new();
            far.read_to_end(&mut got).await.expect("read");
            got
        });
        poll_fn(|cx| flusher.poll_flush(cx)).await.expect("flush");
        io.shutdown().await.expect("shutdown");
        drop((io, flusher));
        let got = tokio::time::timeout(std::time::Duration::from_secs(5), reader)
            .await
            .expect("reader finished")
            .expect("reader");
        assert_eq!(got.len(), accepted);
        assert!(got.iter().all(|&b| b == b'x'));
    }
}
