//! WebSocket tunnels: the byte pump between an upgraded client connection
//! and an upgraded Jupyter connection, and the registry that lets shutdown
//! (and logout, or a session ended on the sessions page) close them.
//!
//! A tunnel copies bytes opaquely in both directions. It reads just enough
//! of the server-to-client stream to know where frames end, so that when
//! nbgate closes a tunnel it can send the browser a proper close frame
//! (1001 "going away") instead of cutting a frame in half.
//!
//! The client side is an HTTP/1.1 connection after its 101, or one HTTP/2
//! stream after a 200 to an extended CONNECT (RFC 8441): `ClientTunnel` is
//! how `server::http2` hands such a stream to the request path without the
//! proxy knowing about the server. Jupyter's side is always an HTTP/1.1
//! upgrade, so the pump sees the same WebSocket frames either way.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use crate::auth::Identity;

/// The byte stream of a client's WebSocket when it is not a whole
/// connection: an HTTP/2 stream (`server::http2`). Boxed: one allocation
/// per tunnel, and the request path stays one compiled function.
pub type TunnelIo = Box<dyn TunnelStream>;

/// A byte stream a tunnel can pump (one trait: a trait object names one).
pub trait TunnelStream: AsyncRead + AsyncWrite + Send + Unpin {}

impl<T: AsyncRead + AsyncWrite + Send + Unpin> TunnelStream for T {}

/// Put by `server::http2` into the extensions of an extended CONNECT with
/// `:protocol = websocket` (RFC 8441): the stream, once its 2xx is sent.
///
/// Why a channel: the stream can carry WebSocket bytes only after the
/// response head went out, which happens after the handler returned it;
/// the tunnel's task waits on this for its client side as an HTTP/1.1
/// tunnel waits on hyper's `OnUpgrade`. In a `Mutex<Option<…>>` because
/// request extensions must be `Clone + Sync`; taken once.
#[derive(Clone)]
pub struct ClientTunnel(Arc<Mutex<Option<oneshot::Receiver<TunnelIo>>>>);

/// The server's end of a `ClientTunnel`.
pub type TunnelOffer = oneshot::Sender<TunnelIo>;

impl ClientTunnel {
    pub fn new() -> (TunnelOffer, ClientTunnel) {
        let (tx, rx) = oneshot::channel();
        (tx, ClientTunnel(Arc::new(Mutex::new(Some(rx)))))
    }

    /// The client's stream, once the 2xx has been sent; an error when the
    /// stream ended first. `None` when already taken.
    pub fn take(&self) -> Option<oneshot::Receiver<TunnelIo>> {
        self.0
            .lock()
            .expect("tunnel offer lock is never poisoned: no panics while held")
            .take()
    }
}

/// Marks the response to an extended CONNECT that the request path
/// accepted (its tunnel task waits for the stream): only then does
/// `server::http2` keep the stream open and hand it over. Any other answer,
/// 2xx or not, is sent as an ordinary response.
#[derive(Debug, Clone, Copy)]
pub struct TunnelAccepted;

/// A fresh `Sec-WebSocket-Key` (RFC 6455 §4.1: 16 random bytes, base64),
/// for the upgrade nbgate asks of Jupyter on behalf of an HTTP/2 client,
/// which sends none (RFC 8441 §5).
pub fn new_key() -> http::HeaderValue {
    use base64::Engine;
    let mut nonce = [0u8; 16];
    rand::fill(&mut nonce);
    let key = base64::engine::general_purpose::STANDARD.encode(nonce);
    http::HeaderValue::from_str(&key).expect("base64 is a valid header value")
}

/// Open tunnels, so they can be closed from outside their task.
#[derive(Default)]
pub struct Tunnels {
    next_id: AtomicU64,
    /// std Mutex: held only to insert/remove/iterate, never across `.await`.
    open: Mutex<HashMap<u64, Entry>>,
}

struct Entry {
    /// The login session's id (cookie logins only): logout closes them.
    session: Option<String>,
    /// Logout everywhere closes a user's tunnels, token ones included.
    user: String,
    cancel: CancellationToken,
}

/// Removes the tunnel from the registry when its task ends.
pub struct TunnelGuard {
    tunnels: Arc<Tunnels>,
    id: u64,
    pub cancel: CancellationToken,
    /// Who opened the tunnel: its access lines name them.
    pub who: Identity,
    /// The audit's look at what the client sends (`[audit] code`,
    /// `terminal_input`), taken by the tunnel's task.
    pub tap: Option<crate::audit::tap::Tap>,
}

impl Drop for TunnelGuard {
    fn drop(&mut self) {
        self.tunnels
            .open
            .lock()
            .expect("tunnel registry lock is never poisoned: no panics while held")
            .remove(&self.id);
    }
}

impl Tunnels {
    /// Registers a tunnel opened by `who` (tied to its login session,
    /// when it has one).
    pub fn register(self: &Arc<Self>, who: &Identity) -> TunnelGuard {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let cancel = CancellationToken::new();
        self.lock().insert(
            id,
            Entry {
                session: who.session_id().map(str::to_owned),
                user: who.user().to_owned(),
                cancel: cancel.clone(),
            },
        );
        TunnelGuard {
            tunnels: Arc::clone(self),
            id,
            cancel,
            who: who.clone(),
            tap: None,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Entry>> {
        self.open
            .lock()
            .expect("tunnel registry lock is never poisoned: no panics while held")
    }

    /// Closes every tunnel (shutdown). Returns how many were open.
    pub fn close_all(&self) -> usize {
        let open = self.lock();
        for e in open.values() {
            e.cancel.cancel();
        }
        open.len()
    }

    /// Closes the tunnels of one login session (logout). Returns how many.
    pub fn close_session(&self, session: &str) -> usize {
        self.close_where(|e| e.session.as_deref() == Some(session))
    }

    /// Closes every tunnel of a user, whatever it authenticated with
    /// (logout everywhere). Returns how many.
    pub fn close_user(&self, user: &str) -> usize {
        self.close_where(|e| e.user == user)
    }

    /// Closes a user's tunnels opened with a login session (a reload
    /// changed the password). Returns how many.
    pub fn close_user_sessions(&self, user: &str) -> usize {
        self.close_where(|e| e.user == user && e.session.is_some())
    }

    /// Closes a user's tunnels opened with a login session other than
    /// `keep` (the sessions page's "end all other sessions"). Returns how
    /// many.
    pub fn close_user_sessions_except(&self, user: &str, keep: &str) -> usize {
        self.close_where(|e| e.user == user && e.session.as_deref().is_some_and(|s| s != keep))
    }

    /// Closes a user's tunnels opened with an API token (a reload changed
    /// the tokens). Returns how many.
    pub fn close_user_tokens(&self, user: &str) -> usize {
        self.close_where(|e| e.user == user && e.session.is_none())
    }

    fn close_where(&self, pred: impl Fn(&Entry) -> bool) -> usize {
        let open = self.lock();
        let mut n = 0;
        for e in open.values().filter(|e| pred(e)) {
            e.cancel.cancel();
            n += 1;
        }
        n
    }

    pub fn count(&self) -> usize {
        self.lock().len()
    }
}

/// Why a tunnel ended, for the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    ClientClosed,
    UpstreamClosed,
    Idle,
    Closed,
    Error,
}

/// Bytes moved, for the log.
#[derive(Debug, Default, Clone, Copy)]
pub struct TunnelStats {
    pub bytes_up: u64,
    pub bytes_down: u64,
}

/// How long a pending frame may take to finish before a close frame is
/// sent anyway.
const CLOSE_DRAIN: Duration = Duration::from_secs(1);
/// Read buffer while data streams.
const BUF: usize = 8 * 1024;
/// Read buffer while a tunnel waits for its next message.
const IDLE_BUF: usize = 1024;

/// A read buffer that is small while its direction waits and full size
/// while data streams.
///
/// Most tunnels are idle most of the time (a kernel between cells, a
/// terminal between keystrokes), and a pending read holds its buffer: two
/// fixed 8 KiB buffers were 16 KiB of the 26 KiB an idle TLS tunnel cost
/// (benches/REPORT.md, measure 6). A read that fills the buffer means more
/// is waiting, so the buffer grows; a read that does not means the burst is
/// over, so it shrinks back before the next wait.
struct PumpBuf(Vec<u8>);

impl Default for PumpBuf {
    fn default() -> Self {
        PumpBuf(vec![0; IDLE_BUF])
    }
}

impl PumpBuf {
    fn space(&mut self) -> &mut [u8] {
        &mut self.0
    }

    fn filled(&self, n: usize) -> &[u8] {
        &self.0[..n]
    }

    /// Call after the `n` bytes read have been used.
    fn adapt(&mut self, n: usize) {
        let len = self.0.len();
        if n == len && len < BUF {
            self.0 = vec![0; BUF];
        } else if n < len && len > IDLE_BUF {
            self.0 = vec![0; IDLE_BUF];
        }
    }
}

/// Pumps bytes until either side closes, the tunnel is idle for
/// `idle_timeout`, or `cancel` fires.
///
/// Half-close: when the client ends its side (TCP FIN; END_STREAM on
/// HTTP/2, RFC 8441 §5), Jupyter's connection is shut down for writing and
/// what Jupyter still sends is passed to the client for up to `CLOSE_DRAIN`
/// (Jupyter closes at once on a FIN), then the client's side is ended too:
/// the client sees a clean end, never a cut one. When Jupyter ends first,
/// the client's side is shut down (END_STREAM) and the tunnel ends.
pub async fn pump<C, U>(
    client: C,
    upstream: U,
    idle_timeout: Duration,
    cancel: CancellationToken,
) -> (CloseReason, TunnelStats)
where
    C: AsyncRead + AsyncWrite + Unpin,
    U: AsyncRead + AsyncWrite + Unpin,
{
    let (mut c_r, mut c_w) = tokio::io::split(client);
    let (mut u_r, mut u_w) = tokio::io::split(upstream);
    // Atomics rather than Cells: the future must be Send to be spawned.
    let base = Instant::now();
    let last_ms = AtomicU64::new(0);
    let touch = || last_ms.store(base.elapsed().as_millis() as u64, Ordering::Relaxed);
    let last = || base + Duration::from_millis(last_ms.load(Ordering::Relaxed));
    let bytes_up = AtomicU64::new(0);
    let bytes_down = AtomicU64::new(0);

    let up = async {
        let mut buf = PumpBuf::default();
        loop {
            let n = match c_r.read(buf.space()).await {
                Ok(0) => {
                    // The client's half-close (TCP FIN, or END_STREAM on
                    // HTTP/2) is passed on as Jupyter's TCP FIN.
                    let _ = u_w.shutdown().await;
                    return CloseReason::ClientClosed;
                }
                Ok(n) => n,
                Err(_) => return CloseReason::Error,
            };
            touch();
            if u_w.write_all(buf.filled(n)).await.is_err() {
                return CloseReason::Error;
            }
            bytes_up.fetch_add(n as u64, Ordering::Relaxed);
            buf.adapt(n);
        }
    };

    let mut frames = FrameTracker::default();
    let down = async {
        let mut pbuf = PumpBuf::default();
        let reason = loop {
            let n = tokio::select! {
                r = u_r.read(pbuf.space()) => match r {
                    Ok(0) => break CloseReason::UpstreamClosed,
                    Ok(n) => n,
                    Err(_) => break CloseReason::Error,
                },
                _ = cancel.cancelled() => break CloseReason::Closed,
            };
            touch();
            frames.feed(pbuf.filled(n));
            // Flushed too: a TLS stream keeps what the socket could not take
            // at once in its buffer, and only a later write or a flush sends
            // it; the next upstream message may be a long time coming.
            if c_w.write_all(pbuf.filled(n)).await.is_err() || c_w.flush().await.is_err() {
                return CloseReason::Error;
            }
            bytes_down.fetch_add(n as u64, Ordering::Relaxed);
            pbuf.adapt(n);
        };
        if reason == CloseReason::Closed {
            let mut buf = vec![0u8; BUF];
            // Let a frame in flight finish, then say goodbye properly.
            let deadline = tokio::time::Instant::now() + CLOSE_DRAIN;
            while !frames.at_boundary() {
                let want = frames.bytes_to_boundary().min(BUF as u64) as usize;
                match tokio::time::timeout_at(deadline, u_r.read(&mut buf[..want.max(1)])).await {
                    Ok(Ok(n)) if n > 0 => {
                        frames.feed(&buf[..n]);
                        if c_w.write_all(&buf[..n]).await.is_err() {
                            return reason;
                        }
                        bytes_down.fetch_add(n as u64, Ordering::Relaxed);
                    }
                    _ => break,
                }
            }
            if frames.at_boundary() {
                // Close frame, status 1001 "going away" (RFC 6455 §7.4.1).
                let _ = c_w.write_all(&[0x88, 0x02, 0x03, 0xE9]).await;
            }
        }
        let _ = c_w.shutdown().await;
        reason
    };

    let idle = async {
        loop {
            let deadline = last() + idle_timeout;
            tokio::time::sleep_until(deadline).await;
            if last() + idle_timeout <= Instant::now() {
                return;
            }
        }
    };

    tokio::pin!(down, idle);
    let reason = tokio::select! {
        r = up => {
            if r == CloseReason::ClientClosed {
                // Half-closed: what Jupyter still sends (the answer to the
                // client's close frame) reaches the client, and Jupyter's
                // end becomes the client's (`down` shuts its side down).
                // Bounded: a Jupyter that neither sends nor closes does not
                // hold the tunnel.
                tokio::select! {
                    _ = tokio::time::timeout(CLOSE_DRAIN, &mut down) => {}
                    _ = &mut idle => {}
                }
            }
            r
        }
        r = &mut down => r,
        _ = &mut idle => CloseReason::Idle,
    };
    let stats = TunnelStats {
        bytes_up: bytes_up.load(Ordering::Relaxed),
        bytes_down: bytes_down.load(Ordering::Relaxed),
    };
    (reason, stats)
}

/// Tracks WebSocket frame boundaries (RFC 6455 §5.2) in a byte stream
/// without buffering it: only header bytes are kept.
#[derive(Debug, Default)]
pub struct FrameTracker {
    header: [u8; 14],
    have: usize,
    payload_left: u64,
}

impl FrameTracker {
    /// True between frames.
    pub fn at_boundary(&self) -> bool {
        self.have == 0 && self.payload_left == 0
    }

    /// Bytes that surely belong to the current frame (at least 1 inside a
    /// header, since its length is not known yet).
    pub fn bytes_to_boundary(&self) -> u64 {
        if self.have > 0 {
            1
        } else {
            self.payload_left
        }
    }

    pub fn feed(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            if self.payload_left > 0 {
                let take = (self.payload_left.min(data.len() as u64)) as usize;
                self.payload_left -= take as u64;
                data = &data[take..];
                continue;
            }
            self.header[self.have] = data[0];
            self.have += 1;
            data = &data[1..];
            if let Some(payload) = self.header_complete() {
                self.have = 0;
                self.payload_left = payload;
            }
        }
    }

    /// The payload length once the header is complete.
    fn header_complete(&self) -> Option<u64> {
        crate::ws_frame::header(&self.header[..self.have]).map(|h| h.payload_len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pump_buffer_grows_while_streaming_and_shrinks_when_a_burst_ends() {
        let mut b = PumpBuf::default();
        assert_eq!(b.space().len(), IDLE_BUF);
        b.adapt(100);
        assert_eq!(b.space().len(), IDLE_BUF, "short read: stays small");
        b.adapt(IDLE_BUF);
        assert_eq!(b.space().len(), BUF, "full read: grows");
        b.adapt(BUF);
        assert_eq!(b.space().len(), BUF, "still streaming");
        b.adapt(10);
        assert_eq!(b.space().len(), IDLE_BUF, "burst over: shrinks");
    }

    #[test]
    fn frame_tracker_finds_boundaries_across_split_reads() {
        let mut t = FrameTracker::default();
        assert!(t.at_boundary());
        // Unmasked text frame "hi".
        t.feed(&[0x81]);
        assert!(!t.at_boundary());
        t.feed(&[0x02, b'h']);
        assert!(!t.at_boundary());
        t.feed(b"i");
        assert!(t.at_boundary());
        // 16-bit length frame of 300 bytes, fed in pieces.
        let mut frame = vec![0x82, 126, 0x01, 0x2C];
        frame.extend(std::iter::repeat_n(7u8, 300));
        for chunk in frame.chunks(7) {
            t.feed(chunk);
        }
        assert!(t.at_boundary());
        // Masked empty frame then half of another.
        t.feed(&[0x89, 0x80, 1, 2, 3, 4, 0x81, 0x05, b'a']);
        assert!(!t.at_boundary());
        assert_eq!(t.bytes_to_boundary(), 4);
    }

    #[tokio::test]
    async fn cancelled_tunnel_sends_a_close_frame_to_the_client() {
        let (client_side, mut browser) = tokio::io::duplex(1024);
        let (upstream_side, mut jupyter) = tokio::io::duplex(1024);
        let cancel = CancellationToken::new();
        let task = tokio::spawn(pump(
            client_side,
            upstream_side,
            Duration::from_secs(60),
            cancel.clone(),
        ));
        jupyter
            .write_all(&[0x81, 0x02, b'o', b'k'])
            .await
            .expect("write");
        let mut got = [0u8; 4];
        browser.read_exact(&mut got).await.expect("read");
        assert_eq!(&got, &[0x81, 0x02, b'o', b'k']);
        cancel.cancel();
        let mut close = Vec::new();
        browser.read_to_end(&mut close).await.expect("read close");
        assert_eq!(close, vec![0x88, 0x02, 0x03, 0xE9]);
        let (reason, stats) = task.await.expect("join");
        assert_eq!(reason, CloseReason::Closed);
        assert_eq!(stats.bytes_down, 4);
    }

    #[tokio::test]
    async fn a_client_half_close_reaches_jupyter_and_its_answer_still_reaches_the_client() {
        let (client_side, mut browser) = tokio::io::duplex(1024);
        let (upstream_side, mut jupyter) = tokio::io::duplex(1024);
        let task = tokio::spawn(pump(
            client_side,
            upstream_side,
            Duration::from_secs(60),
            CancellationToken::new(),
        ));
        // The browser's close frame (masked, code 1000), then its FIN or
        // END_STREAM.
        let close = [0x88, 0x82, 0, 0, 0, 0, 0x03, 0xE8];
        browser.write_all(&close).await.expect("write");
        browser.shutdown().await.expect("half-close");
        let mut got = Vec::new();
        jupyter.read_to_end(&mut got).await.expect("read");
        assert_eq!(got, close, "Jupyter gets the frame, then the FIN");
        // Jupyter answers the close and closes; the answer arrives whole,
        // then the browser's side ends.
        jupyter
            .write_all(&[0x88, 0x02, 0x03, 0xE8])
            .await
            .expect("write");
        drop(jupyter);
        let mut answer = Vec::new();
        browser.read_to_end(&mut answer).await.expect("read");
        assert_eq!(answer, vec![0x88, 0x02, 0x03, 0xE8]);
        let (reason, stats) = task.await.expect("join");
        assert_eq!(reason, CloseReason::ClientClosed);
        assert_eq!((stats.bytes_up, stats.bytes_down), (8, 4));
    }

    #[tokio::test(start_paused = true)]
    async fn a_half_closed_tunnel_ends_when_jupyter_does_not() {
        let (client_side, mut browser) = tokio::io::duplex(64);
        let (upstream_side, _jupyter) = tokio::io::duplex(64);
        let task = tokio::spawn(pump(
            client_side,
            upstream_side,
            Duration::from_secs(3600),
            CancellationToken::new(),
        ));
        browser.shutdown().await.expect("half-close");
        let (reason, _) = tokio::time::timeout(CLOSE_DRAIN * 2, task)
            .await
            .expect("the tunnel outlived CLOSE_DRAIN")
            .expect("join");
        assert_eq!(reason, CloseReason::ClientClosed);
    }

    #[tokio::test(start_paused = true)]
    async fn idle_tunnel_is_closed_after_the_timeout() {
        let (client_side, _browser) = tokio::io::duplex(64);
        let (upstream_side, _jupyter) = tokio::io::duplex(64);
        let (reason, _) = pump(
            client_side,
            upstream_side,
            Duration::from_secs(5),
            CancellationToken::new(),
        )
        .await;
        assert_eq!(reason, CloseReason::Idle);
    }

    fn session(sid: &str, user: &str) -> Identity {
        let claims = crate::auth::session::Claims {
            u: user.into(),
            sid: sid.into(),
            iat: 0,
            lst: 0,
            gen: 0,
            pw: String::new(),
        };
        Identity::session(Arc::new(claims), None)
    }

    fn token(user: &str) -> Identity {
        Identity::token(crate::auth::TokenUser {
            user: user.into(),
            id: "0123456789abcdef".into(),
        })
    }

    #[test]
    fn registry_closes_tunnels_of_one_session_only() {
        let t = Arc::new(Tunnels::default());
        let a = t.register(&session("s1", "ann"));
        let b = t.register(&session("s2", "ann"));
        assert_eq!(t.close_session("s1"), 1);
        assert!(a.cancel.is_cancelled());
        assert!(!b.cancel.is_cancelled());
        drop(a);
        assert_eq!(t.count(), 1);
    }

    #[test]
    fn registry_closes_every_tunnel_of_one_user_only() {
        let t = Arc::new(Tunnels::default());
        let a = t.register(&session("s1", "ann"));
        let b = t.register(&token("ann"));
        let c = t.register(&session("s3", "bob"));
        assert_eq!(t.close_user("ann"), 2);
        assert!(a.cancel.is_cancelled() && b.cancel.is_cancelled());
        assert!(!c.cancel.is_cancelled());
    }

    #[test]
    fn registry_closes_a_users_session_or_token_tunnels() {
        let t = Arc::new(Tunnels::default());
        let session = t.register(&session("s1", "ann"));
        let by_token = t.register(&token("ann"));
        let other = t.register(&token("bob"));
        assert_eq!(t.close_user_tokens("ann"), 1);
        assert!(by_token.cancel.is_cancelled() && !session.cancel.is_cancelled());
        assert_eq!(t.close_user_sessions("ann"), 1);
        assert!(session.cancel.is_cancelled());
        assert!(!other.cancel.is_cancelled());
    }
}
