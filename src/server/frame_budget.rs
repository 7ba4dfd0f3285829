//! A budget on what an HTTP/2 client may send that is not a request: the
//! reader under `h2` that closes a connection flooding nbgate with frames
//! that carry nothing (SETTINGS, PING, WINDOW_UPDATE, PRIORITY, empty or
//! one-byte DATA ...).
//!
//! `h2` answers or applies every valid control frame, so 100k SETTINGS or
//! PING frames cost nbgate 100k acknowledgements and never end the
//! connection. Counting frames by type would misjudge long downloads (their
//! WINDOW_UPDATEs) and chatty-but-honest clients, so this counts bytes (a
//! ratio like nginx's "http2 flood detected" rule): every frame header and every
//! control-frame payload the client sends is overhead; request headers and
//! request bodies it sends, and response bodies it is sent, are useful.
//! Overhead may exceed useful bytes by `ALLOWANCE` and no more. An honest
//! client stays far below: a WINDOW_UPDATE (13 bytes) per 16 KiB or more
//! received, a frame header (9 bytes) per request next to its header block.
//! A flood of 100k control frames passes the allowance after ~80k of them.
//!
//! Cost per read: a walk over the frame headers in the bytes just read, no
//! copy; plus one relaxed atomic add per response body chunk sent.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Overhead a connection may have beyond its useful bytes: covers the
/// preface, settings, and a long life of pings and window updates.
pub const ALLOWANCE: u64 = 1024 * 1024;

/// The client connection preface (RFC 9113 §3.4), before any frame.
const PREFACE_LEN: usize = 24;
const FRAME_HEADER_LEN: usize = 9;
const DATA: u8 = 0x0;
const HEADERS: u8 = 0x1;
const CONTINUATION: u8 = 0x9;

/// Response body bytes sent on a connection: written by its streams'
/// tasks, read by its reader. Counted as useful: they are what the
/// client's WINDOW_UPDATEs pay for.
#[derive(Debug, Default)]
pub struct Served(AtomicU64);

impl Served {
    pub fn add(&self, n: usize) {
        self.0.fetch_add(n as u64, Ordering::Relaxed);
    }

    fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Where the reader is in the client's byte stream.
#[derive(Debug)]
struct Scan {
    preface_left: usize,
    header: [u8; FRAME_HEADER_LEN],
    header_len: usize,
    /// Payload bytes of the current frame not read yet.
    payload_left: usize,
    /// Whether the current frame's payload is useful.
    payload_useful: bool,
    overhead: u64,
    useful: u64,
}

impl Scan {
    fn new() -> Self {
        Scan {
            preface_left: PREFACE_LEN,
            header: [0; FRAME_HEADER_LEN],
            header_len: 0,
            payload_left: 0,
            payload_useful: false,
            overhead: 0,
            useful: 0,
        }
    }

    /// Accounts for `bytes`, the next bytes the client sent.
    fn feed(&mut self, mut bytes: &[u8]) {
        let skip = self.preface_left.min(bytes.len());
        self.preface_left -= skip;
        bytes = &bytes[skip..];
        while !bytes.is_empty() {
            if self.payload_left > 0 {
                let n = self.payload_left.min(bytes.len());
                if self.payload_useful {
                    self.useful += n as u64;
                } else {
                    self.overhead += n as u64;
                }
                self.payload_left -= n;
                bytes = &bytes[n..];
                continue;
            }
            let n = (FRAME_HEADER_LEN - self.header_len).min(bytes.len());
            self.header[self.header_len..self.header_len + n].copy_from_slice(&bytes[..n]);
            self.header_len += n;
            bytes = &bytes[n..];
            if self.header_len == FRAME_HEADER_LEN {
                let h = &self.header;
                self.payload_left =
                    (usize::from(h[0]) << 16) | (usize::from(h[1]) << 8) | usize::from(h[2]);
                self.payload_useful = matches!(h[3], DATA | HEADERS | CONTINUATION);
                self.overhead += FRAME_HEADER_LEN as u64;
                self.header_len = 0;
            }
        }
    }

    fn over_budget(&self, served: u64) -> bool {
        self.overhead > ALLOWANCE.saturating_add(self.useful).saturating_add(served)
    }
}

/// The connection's I/O with the budget on its read side; writes pass
/// through untouched.
pub struct FrameBudget<T> {
    io: T,
    scan: Scan,
    served: Arc<Served>,
}

impl<T> FrameBudget<T> {
    pub fn new(io: T, served: Arc<Served>) -> Self {
        FrameBudget {
            io,
            scan: Scan::new(),
            served,
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for FrameBudget<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        ready!(Pin::new(&mut this.io).poll_read(cx, buf))?;
        let overhead = this.scan.overhead;
        this.scan.feed(&buf.filled()[before..]);
        if this.scan.overhead > overhead && this.scan.over_budget(this.served.get()) {
            // A client can trigger this at will: logged at debug only.
            tracing::debug!(
                overhead = this.scan.overhead,
                useful = this.scan.useful,
                "h2 client sends frames that carry no requests: closing"
            );
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "HTTP/2 frame flood",
            )));
        }
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for FrameBudget<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(ty: u8, payload_len: usize) -> Vec<u8> {
        let mut f = vec![
            (payload_len >> 16) as u8,
            (payload_len >> 8) as u8,
            payload_len as u8,
            ty,
            0,
            0,
            0,
            0,
            1,
        ];
        f.resize(FRAME_HEADER_LEN + payload_len, 7);
        f
    }

    fn preface() -> Vec<u8> {
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec()
    }

    #[test]
    fn frames_split_across_reads_are_counted_once() {
        let mut bytes = preface();
        bytes.extend(frame(HEADERS, 30));
        bytes.extend(frame(0x8, 4));
        bytes.extend(frame(DATA, 100));
        let mut whole = Scan::new();
        whole.feed(&bytes);
        let mut split = Scan::new();
        for b in bytes.chunks(1) {
            split.feed(b);
        }
        for s in [&whole, &split] {
            assert_eq!(s.useful, 130);
            assert_eq!(s.overhead, 3 * 9 + 4);
        }
    }

    #[test]
    fn a_control_frame_flood_passes_the_budget_and_requests_do_not() {
        let mut s = Scan::new();
        s.feed(&preface());
        let ping = frame(0x6, 8);
        let mut pings = 0;
        while !s.over_budget(0) {
            s.feed(&ping);
            pings += 1;
        }
        assert!(pings < 100_000, "{pings} PINGs before the budget ran out");

        // 100k small requests, each a header block and an empty DATA end.
        let mut s = Scan::new();
        s.feed(&preface());
        for _ in 0..100_000 {
            s.feed(&frame(HEADERS, 20));
            s.feed(&frame(DATA, 0));
        }
        assert!(!s.over_budget(0));
    }

    #[test]
    fn window_updates_of_a_long_download_are_paid_for_by_it() {
        // 1 GiB received, a stream and a connection WINDOW_UPDATE per 16 KiB.
        let mut s = Scan::new();
        s.feed(&preface());
        s.feed(&frame(HEADERS, 20));
        let served = 1u64 << 30;
        let update = frame(0x8, 4);
        for _ in 0..2 * (served / 16384) {
            s.feed(&update);
        }
        assert!(s.over_budget(0), "without the download it would be a flood");
        assert!(!s.over_budget(served));
    }
}
