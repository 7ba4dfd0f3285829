//! The pool of keep-alive HTTP/1.1 connections to Jupyter (the exchange
//! itself is `h1`, the byte stream and its connector `transport`).
//!
//! Owns which connection a request goes out on; it does not decide what is
//! sent (that is `headers` and the router).
//!
//! Each thread that forwards requests gets its own pool. The server runs one
//! single-threaded runtime per core (`server::run`), so a request and the
//! upstream connection it borrows stay on one thread, as in an nginx worker.
//! The pool is nbgate's own rather than hyper-util's pooled client: that
//! client boxes each request's future, looks the connection up in a shared
//! map keyed by scheme and authority, and spawns a task per request to wait
//! until the connection is idle again (issue 6's profile). Here a connection
//! goes back to its pool when the response body it carried has ended —
//! nothing per request but the exchange itself. No task drives an idle
//! connection: one that Jupyter closed, or that holds bytes nobody asked
//! for, is noticed when it is checked out (one `recv` peek per reuse,
//! `Conn::is_reusable`) and dropped.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::HeaderValue;
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, SizeHint};
use hyper::{Request, Response};
use thread_local::ThreadLocal;

use super::body::{BoxError, UpstreamBody};
use super::h1::{self, BodyReader, Conn, H1Error, Upload};
use super::health::{Health, UpstreamHealth};
use super::transport::UpstreamConnector;
use crate::config::{UpstreamAddr, UpstreamConfig};
use crate::telemetry::Chain;

/// Why a request did not reach Jupyter, or got no answer. A message does
/// not print its source: a log that prints the chain would show it twice.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("upstream connect failed")]
    Connect(#[source] io::Error),
    #[error("upstream exchange failed")]
    Protocol(#[source] H1Error),
}

impl UpstreamError {
    /// Jupyter did not answer within `upstream.response_timeout`.
    pub fn is_timeout(&self) -> bool {
        matches!(self, UpstreamError::Protocol(H1Error::Timeout(_)))
    }

    /// The client's request body failed (the client went away mid-upload):
    /// not Jupyter's fault.
    pub fn is_client_abort(&self) -> bool {
        matches!(self, UpstreamError::Protocol(H1Error::RequestBody(_)))
    }
}

/// The pools (one per thread) and what requests need to know about the
/// upstream.
#[derive(Clone)]
pub struct Upstream {
    /// One pool per thread (see the module doc); `pool_max_idle` and
    /// `pool_idle_timeout` apply to each. Dropped with the `Upstream`, so a
    /// pool never outlives the gateway that made it.
    pools: Arc<ThreadLocal<Arc<Pool>>>,
    pool_idle_timeout: Duration,
    pool_max_idle: usize,
    pub connector: UpstreamConnector,
    /// `Host` value Jupyter expects: its own `host:port`, or `localhost`
    /// for a Unix socket (Jupyter's `check_host` accepts it).
    pub authority: String,
    /// The same, ready to send (cloning it shares its bytes).
    pub host_header: HeaderValue,
    /// Absolute origins under which Jupyter may name itself in `Location`.
    pub self_origins: Vec<String>,
    pub connect_timeout: Duration,
    /// See `UpstreamConfig::response_timeout`.
    pub response_timeout: Duration,
    /// Jupyter's reachability for the health page and the admin listener.
    health: Arc<UpstreamHealth>,
}

impl Upstream {
    pub fn new(cfg: &UpstreamConfig) -> Self {
        let connector = UpstreamConnector::new(&cfg.url, cfg.connect_timeout);
        let (authority, self_origins) = match &cfg.url {
            UpstreamAddr::Tcp { authority } => {
                let port = authority.rsplit(':').next().unwrap_or("80");
                let mut origins = vec![format!("http://{authority}")];
                for alias in ["127.0.0.1", "localhost", "[::1]"] {
                    let o = format!("http://{alias}:{port}");
                    if !origins.contains(&o) {
                        origins.push(o);
                    }
                }
                (authority.clone(), origins)
            }
            UpstreamAddr::Unix { .. } => {
                ("localhost".to_owned(), vec!["http://localhost".to_owned()])
            }
        };
        let host_header = HeaderValue::from_maybe_shared(Bytes::from(authority.clone()))
            .expect("upstream authority was validated at config load");
        Upstream {
            pools: Arc::new(ThreadLocal::new()),
            pool_idle_timeout: cfg.pool_idle_timeout,
            pool_max_idle: cfg.pool_max_idle,
            connector,
            authority,
            host_header,
            self_origins,
            connect_timeout: cfg.connect_timeout,
            response_timeout: cfg.response_timeout,
            health: Arc::default(),
        }
    }

    /// Whether Jupyter accepts a connection now (`health` says how often
    /// it is really asked).
    pub async fn health(&self) -> Health {
        self.health.check(&self.connector).await
    }

    /// This thread's pool, created on first use (with its reaper task on
    /// this thread's runtime).
    fn pool(&self) -> &Arc<Pool> {
        self.pools.get_or(|| {
            let pool = Arc::new(Pool {
                idle: Mutex::new(Vec::new()),
                max_idle: self.pool_max_idle,
                idle_timeout: self.pool_idle_timeout,
            });
            Pool::spawn_reaper(Arc::downgrade(&pool), self.pool_idle_timeout);
            pool
        })
    }

    /// Sends a request (origin-form target, `Host` set) on an idle pooled
    /// connection, or on a new one. The connection returns to the pool when
    /// the response body has been read to its end; a body dropped early
    /// takes its connection with it (HTTP/1.1 cannot skip the rest).
    pub async fn send(
        &self,
        mut req: Request<UpstreamBody>,
    ) -> Result<Response<PooledBody>, UpstreamError> {
        let pool = self.pool();
        if let Some((mut conn, idle_for)) = pool.checkout() {
            let replay = if idle_for >= REPLAY_AFTER_IDLE {
                replayable(&req)
            } else {
                None
            };
            match h1::exchange(&mut conn, req, self.response_timeout).await {
                Ok(head) => return Ok(lease(head, conn, pool)),
                Err(e) => match replay {
                    // Jupyter closed the idle connection as the request
                    // went out (its keep-alive timeout): no answer came,
                    // and a request without side effects is sent again, as
                    // nginx does.
                    Some(again) if e.is_unanswered() => req = again,
                    _ => return Err(UpstreamError::Protocol(e)),
                },
            }
        }
        // A new connection is the rare case: boxed, so that connecting does
        // not enlarge every request's future.
        let mut conn = Box::pin(self.open()).await?;
        let head = h1::exchange(&mut conn, req, self.response_timeout)
            .await
            .map_err(UpstreamError::Protocol)?;
        Ok(lease(head, conn, pool))
    }

    /// A new keep-alive connection.
    async fn open(&self) -> Result<Conn, UpstreamError> {
        let stream = self
            .connector
            .connect()
            .await
            .map_err(UpstreamError::Connect)?;
        Ok(Conn::new(stream))
    }
}

/// A pooled connection idle for this long may have been closed by Jupyter
/// just as it is reused; a connection reused sooner (the common case under
/// load) is not worth the copy of the request that a replay needs.
const REPLAY_AFTER_IDLE: Duration = Duration::from_secs(1);

/// A copy to send again if the first attempt dies unanswered: only for
/// bodiless requests of safe methods (RFC 9110 §9.2.1), which Jupyter may
/// see twice without harm.
pub fn replayable(req: &Request<UpstreamBody>) -> Option<Request<UpstreamBody>> {
    let safe = matches!(
        *req.method(),
        http::Method::GET | http::Method::HEAD | http::Method::OPTIONS
    );
    if !safe || !req.body().is_end_stream() {
        return None;
    }
    let mut copy = Request::new(no_body());
    *copy.method_mut() = req.method().clone();
    *copy.uri_mut() = req.uri().clone();
    *copy.version_mut() = req.version();
    *copy.headers_mut() = req.headers().clone();
    Some(copy)
}

/// An empty request body.
pub fn no_body() -> UpstreamBody {
    http_body_util::Empty::new()
        .map_err(|never| match never {})
        .boxed_unsync()
}

fn lease(head: h1::Head, conn: Conn, pool: &Arc<Pool>) -> Response<PooledBody> {
    let (response, reader, keep_alive, upload) = head.into_parts();
    let mut body = PooledBody {
        reader,
        conn: Some(conn),
        keep_alive,
        upload,
        pool: Arc::clone(pool),
    };
    if body.reader.is_end_stream() {
        body.release();
    }
    response.map(|()| body)
}

/// One thread's idle connections to Jupyter, the most recently used last
/// (it is the likeliest to be warm and still open).
struct Pool {
    idle: Mutex<Vec<Idle>>,
    max_idle: usize,
    idle_timeout: Duration,
}

struct Idle {
    conn: Conn,
    since: Instant,
}

impl Pool {
    /// An idle connection ready for a request. Expired ones, and ones that
    /// Jupyter closed or sent bytes on unasked, are dropped on the way (one
    /// system call each).
    fn checkout(&self) -> Option<(Conn, Duration)> {
        let now = Instant::now();
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        while let Some(c) = idle.pop() {
            let idle_for = now.duration_since(c.since);
            if idle_for < self.idle_timeout && c.conn.is_reusable() {
                return Some((c.conn, idle_for));
            }
        }
        None
    }

    /// Back to the pool after a complete exchange; past `max_idle`, the
    /// longest idle connection is closed instead.
    fn checkin(&self, mut conn: Conn) {
        if self.max_idle == 0 {
            return;
        }
        conn.shrink();
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() >= self.max_idle {
            idle.remove(0);
        }
        idle.push(Idle {
            conn,
            since: Instant::now(),
        });
    }

    /// Closes connections idle for longer than the timeout, or closed by
    /// Jupyter, so that a burst does not leave sockets open on either side.
    fn evict_expired(&self) {
        let now = Instant::now();
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        idle.retain(|c| now.duration_since(c.since) < self.idle_timeout && c.conn.is_reusable());
    }

    fn spawn_reaper(pool: Weak<Pool>, idle_timeout: Duration) {
        let period = (idle_timeout / 2).max(Duration::from_millis(100));
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(period).await;
                match pool.upgrade() {
                    Some(p) => p.evict_expired(),
                    None => break,
                }
            }
        });
    }
}

/// Jupyter's response body, read from the connection on loan to it; the
/// connection returns to the pool at the body's end.
pub struct PooledBody {
    reader: BodyReader,
    /// `None` once returned to the pool, or given up after an error.
    conn: Option<Conn>,
    keep_alive: bool,
    /// The rest of the request body, when Jupyter answered before it had
    /// it all: written as the response is read.
    upload: Option<Upload>,
    pool: Arc<Pool>,
}

impl PooledBody {
    fn release(&mut self) {
        if let Some(conn) = self.conn.take() {
            // A request body not sent in full would be read by Jupyter as
            // the start of the next request.
            if self.keep_alive && self.upload.is_none() {
                self.pool.checkin(conn);
            }
        }
    }
}

impl Body for PooledBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        let Some(conn) = this.conn.as_mut() else {
            return Poll::Ready(None);
        };
        if let Some(up) = this.upload.as_mut() {
            match up.poll_send(conn.io_mut(), cx) {
                Poll::Ready(Ok(())) => this.upload = None,
                // The response goes on; the connection will not be reused.
                Poll::Ready(Err(e)) => {
                    tracing::debug!(error = %Chain(&e), "request body not sent in full");
                    this.keep_alive = false;
                    this.upload = None;
                }
                Poll::Pending => {}
            }
        }
        let frame = std::task::ready!(this.reader.poll_frame(conn, cx));
        match &frame {
            Some(Ok(_)) if !this.reader.is_end_stream() => {}
            Some(Ok(_)) | None => this.release(),
            // A failed exchange leaves the connection in an unknown state.
            Some(Err(_)) => this.conn = None,
        }
        Poll::Ready(frame.map(|f| f.map_err(BoxError::from)))
    }

    fn is_end_stream(&self) -> bool {
        self.reader.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        match self.reader.exact_len() {
            Some(n) => SizeHint::with_exact(n),
            None => SizeHint::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    //! The pool against a hand-written upstream on a std thread, so that
    //! what the upstream sends, and when, is exact.

    use std::io::{Read, Write};
    use std::net::TcpListener;
    use std::os::unix::net::{UnixListener, UnixStream};
    use std::sync::mpsc;

    use http_body_util::BodyExt;

    use super::*;

    fn upstream_at(listener: &TcpListener) -> Upstream {
        let addr = listener.local_addr().expect("addr").to_string();
        Upstream::new(&config_at(&addr))
    }

    fn config_at(authority: &str) -> UpstreamConfig {
        UpstreamConfig {
            url: UpstreamAddr::Tcp {
                authority: authority.to_owned(),
            },
            token_file: None,
            token_env: None,
            token: None,
            identity_header: None,
            identity: None,
            connect_timeout: Duration::from_secs(5),
            response_timeout: Duration::from_secs(300),
            websocket_idle_timeout: Duration::from_secs(60),
            pool_idle_timeout: Duration::from_secs(60),
            pool_max_idle: 8,
        }
    }

    fn get(up: &Upstream) -> Request<UpstreamBody> {
        Request::builder()
            .uri("/")
            .header(http::header::HOST, up.host_header.clone())
            .body(no_body())
            .expect("request")
    }

    /// Reads one request head (these requests have no body).
    fn read_head(s: &mut impl Read) {
        let mut head = Vec::new();
        let mut b = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            assert_eq!(
                s.read(&mut b).expect("read request"),
                1,
                "request cut short"
            );
            head.push(b[0]);
        }
    }

    /// Reads a request head and answers it with `body`, keeping the
    /// connection open (no `Connection: close`).
    fn answer(s: &mut (impl Read + Write), body: &str) {
        read_head(s);
        write!(
            s,
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .expect("write");
    }

    fn idle(up: &Upstream) -> usize {
        up.pool().idle.lock().expect("pool lock").len()
    }

    #[tokio::test]
    async fn a_body_read_to_its_end_returns_its_connection_and_an_abandoned_one_does_not() {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let up = upstream_at(&listener);
        let (release_tx, release_rx) = mpsc::channel::<()>();
        let server = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().expect("accept");
            read_head(&mut s);
            s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                .expect("write");
            read_head(&mut s);
            // Half of the body, then the rest only when the test says so.
            s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhello")
                .expect("write");
            let _ = release_rx.recv();
            let _ = s.write_all(b"world");
        });

        let resp = up.send(get(&up)).await.expect("first exchange");
        let body = resp.into_body().collect().await.expect("body").to_bytes();
        assert_eq!(&body[..], b"ok");
        assert_eq!(idle(&up), 1, "a finished exchange returns its connection");

        let resp = up.send(get(&up)).await.expect("second exchange");
        assert_eq!(idle(&up), 0, "the connection is on loan");
        let mut body = resp.into_body();
        let first = body.frame().await.expect("a frame").expect("data");
        assert_eq!(first.data_ref().map(|d| &d[..]), Some(&b"hello"[..]));
        drop(body);
        // Half of a body is still unread on that connection: handing it to
        // the next request would make it read "world" as its answer.
        assert_eq!(idle(&up), 0, "an abandoned exchange keeps its connection");
        release_tx.send(()).expect("server waits");
        server.join().expect("server thread");
    }

    #[tokio::test]
    async fn a_request_unanswered_on_a_connection_closed_as_it_went_out_is_sent_again() {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let up = upstream_at(&listener);
        let server = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().expect("accept");
            answer(&mut s, "ok");
            // The next request arrives as the upstream closes the idle
            // connection (its keep-alive timeout): no answer.
            read_head(&mut s);
            drop(s);
            let (mut s, _) = listener.accept().expect("accept the second connection");
            answer(&mut s, "new");
        });

        let resp = up.send(get(&up)).await.expect("first exchange");
        resp.into_body().collect().await.expect("body");
        assert_eq!(idle(&up), 1);
        // Idle long enough for a replay to be allowed.
        tokio::time::sleep(REPLAY_AFTER_IDLE + Duration::from_millis(100)).await;
        let resp = up
            .send(get(&up))
            .await
            .expect("sent again on a new connection");
        let body = resp.into_body().collect().await.expect("body").to_bytes();
        assert_eq!(&body[..], b"new");
        server.join().expect("server thread");
    }

    /// One keep-alive exchange with an upstream on a Unix socket, then
    /// `spoil` done to the idle connection while this single-threaded
    /// runtime is blocked, so that its reactor cannot have seen it; then a
    /// second request, which must go out on a new connection and get the
    /// upstream's answer there. (A Unix socket: what the upstream writes or
    /// closes is in nbgate's socket once the call returns, where loopback
    /// TCP may defer it.)
    async fn assert_next_request_on_a_new_connection_after(
        spoil: fn(UnixStream) -> Option<UnixStream>,
    ) {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("up.sock");
        let listener = UnixListener::bind(&path).expect("bind");
        let up = Upstream::new(&UpstreamConfig {
            url: UpstreamAddr::Unix { path },
            ..config_at("127.0.0.1:1")
        });
        let (spoil_tx, spoil_rx) = mpsc::channel::<()>();
        let (spoiled_tx, spoiled_rx) = mpsc::channel::<()>();
        let server = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().expect("accept");
            answer(&mut s, "ok");
            spoil_rx.recv().expect("test says when");
            let _kept = spoil(s);
            spoiled_tx.send(()).expect("test waits");
            let (mut s, _) = listener.accept().expect("accept a second connection");
            answer(&mut s, "new");
        });

        let resp = up.send(get(&up)).await.expect("first exchange");
        resp.into_body().collect().await.expect("body");
        assert_eq!(idle(&up), 1);
        spoil_tx.send(()).expect("server waits");
        // Blocks the runtime until the upstream is done.
        spoiled_rx.recv().expect("server spoiled the connection");
        let resp = up.send(get(&up)).await.expect("second exchange");
        let body = resp.into_body().collect().await.expect("body").to_bytes();
        // Before the join: the upstream waits for a second connection.
        assert_eq!(String::from_utf8_lossy(&body), "new");
        server.join().expect("server thread");
    }

    #[tokio::test]
    async fn a_connection_closed_while_idle_is_not_reused_though_the_runtime_never_saw_it() {
        // Idle for less than REPLAY_AFTER_IDLE: a request sent on the
        // closed connection would fail, not be sent again, so the checkout
        // itself must see the close.
        let close = |s| {
            drop(s);
            None
        };
        assert_next_request_on_a_new_connection_after(close).await;
    }

    #[tokio::test]
    async fn unasked_bytes_on_an_idle_connection_never_answer_the_next_request() {
        let forge = |mut s: UnixStream| {
            s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nforged")
                .expect("write");
            Some(s)
        };
        assert_next_request_on_a_new_connection_after(forge).await;
    }

    #[test]
    fn an_error_does_not_repeat_its_source_in_its_message() {
        let refused = UpstreamError::Connect(io::ErrorKind::ConnectionRefused.into());
        let invalid = UpstreamError::Protocol(H1Error::Invalid("malformed response head"));
        for e in [refused, invalid] {
            let source = std::error::Error::source(&e).expect("a source").to_string();
            assert!(!e.to_string().contains(&source), "{e}");
        }
    }

    #[tokio::test]
    async fn a_request_body_streams_on_after_an_early_answer_full_duplex() {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let up = upstream_at(&listener);
        let server = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().expect("accept");
            read_head(&mut s);
            // Answers at once, then reads the whole body before ending its
            // own (an echo or a streaming upload handler does this).
            s.write_all(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
                .expect("write");
            let mut body = Vec::new();
            let mut b = [0u8; 256];
            while !body.ends_with(b"0\r\n\r\n") {
                let n = s.read(&mut b).expect("read body");
                assert!(n > 0, "request body cut short");
                body.extend_from_slice(&b[..n]);
            }
            s.write_all(b"2\r\nok\r\n0\r\n\r\n").expect("write");
            String::from_utf8(body).expect("utf-8")
        });
        let parts = futures_util::stream::unfold(0, |i| async move {
            if i == 3 {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(30)).await;
            let frame = Frame::data(Bytes::from(format!("p{i}")));
            Some((Ok::<_, BoxError>(frame), i + 1))
        });
        let mut req = get(&up);
        *req.method_mut() = http::Method::POST;
        *req.body_mut() = http_body_util::StreamBody::new(parts).boxed_unsync();
        let resp = up.send(req).await.expect("exchange");
        let body = resp.into_body().collect().await.expect("body").to_bytes();
        assert_eq!(&body[..], b"ok");
        assert_eq!(
            server.join().expect("server thread"),
            "2\r\np0\r\n2\r\np1\r\n2\r\np2\r\n0\r\n\r\n"
        );
        assert_eq!(
            idle(&up),
            1,
            "both directions ended: the connection is kept"
        );
    }
}
