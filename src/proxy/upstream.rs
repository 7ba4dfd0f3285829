//! The connection to Jupyter: a TCP or Unix-socket connector and the pooled
//! keep-alive HTTP/1.1 client built on it.
//!
//! Owns how bytes reach the upstream; it does not decide what is sent
//! (that is `headers` and the router).
//!
//! Each thread that forwards requests gets its own pool. The server runs one
//! single-threaded runtime per core (`server::run`), and hyper's pooled client
//! drives every upstream connection as a task fed through channels: with one
//! shared pool a request on one thread would often check out a connection
//! whose task lives on the other, and every request then costs cross-thread
//! wake-ups (the largest item in the profile of issue 6). With a pool per
//! thread, a request and its upstream connection stay on one thread, as in
//! an nginx worker.

use std::future::Future;
use std::io;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use hyper::Uri;
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use thread_local::ThreadLocal;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpStream, UnixStream};

use crate::config::{UpstreamAddr, UpstreamConfig};

/// Request body type sent upstream: the client's body, streamed.
pub type UpstreamBody = UnsyncBoxBody<Bytes, hyper::Error>;

/// A byte stream to Jupyter over TCP or a Unix socket.
pub enum UpstreamStream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl AsyncRead for UpstreamStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            UpstreamStream::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            UpstreamStream::Unix(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for UpstreamStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            UpstreamStream::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            UpstreamStream::Unix(s) => Pin::new(s).poll_write(cx, buf),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            UpstreamStream::Tcp(s) => Pin::new(s).poll_flush(cx),
            UpstreamStream::Unix(s) => Pin::new(s).poll_flush(cx),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            UpstreamStream::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            UpstreamStream::Unix(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            UpstreamStream::Tcp(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            UpstreamStream::Unix(s) => Pin::new(s).poll_write_vectored(cx, bufs),
        }
    }
    fn is_write_vectored(&self) -> bool {
        match self {
            UpstreamStream::Tcp(s) => s.is_write_vectored(),
            UpstreamStream::Unix(s) => s.is_write_vectored(),
        }
    }
}

impl Connection for UpstreamStream {
    fn connected(&self) -> Connected {
        Connected::new()
    }
}

/// Connects to the configured upstream whatever the request URI says: the
/// URI only carries the path, so a request can never steer nbgate to
/// another host (no open proxy).
#[derive(Clone)]
pub struct UpstreamConnector {
    target: Arc<Target>,
    connect_timeout: Duration,
}

enum Target {
    Tcp(String),
    Unix(PathBuf),
}

impl UpstreamConnector {
    pub fn new(addr: &UpstreamAddr, connect_timeout: Duration) -> Self {
        let target = match addr {
            UpstreamAddr::Tcp { authority } => Target::Tcp(authority.clone()),
            UpstreamAddr::Unix { path } => Target::Unix(path.clone()),
        };
        UpstreamConnector {
            target: Arc::new(target),
            connect_timeout,
        }
    }

    /// Opens a fresh connection (used directly for WebSocket tunnels, which
    /// never return to the pool).
    pub async fn connect(&self) -> io::Result<UpstreamStream> {
        tokio::time::timeout(self.connect_timeout, self.connect_now())
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "upstream connect timed out"))?
    }

    async fn connect_now(&self) -> io::Result<UpstreamStream> {
        match &*self.target {
            Target::Tcp(authority) => {
                let s = TcpStream::connect(authority.as_str()).await?;
                // Small WebSocket frames (kernel messages, keystrokes in a
                // terminal) must not wait for Nagle's algorithm.
                s.set_nodelay(true)?;
                Ok(UpstreamStream::Tcp(s))
            }
            Target::Unix(path) => Ok(UpstreamStream::Unix(UnixStream::connect(path).await?)),
        }
    }
}

impl tower_service::Service<Uri> for UpstreamConnector {
    type Response = TokioIo<UpstreamStream>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<Self::Response>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _uri: Uri) -> Self::Future {
        let this = self.clone();
        Box::pin(async move { this.connect().await.map(TokioIo::new) })
    }
}

/// The pooled HTTP/1.1 client to Jupyter.
pub type UpstreamClient = Client<UpstreamConnector, UpstreamBody>;

/// The pooled clients (one per thread) and what requests need to know about
/// the upstream.
#[derive(Clone)]
pub struct Upstream {
    /// One pool per thread (see the module doc); `pool_max_idle` and
    /// `pool_idle_timeout` apply to each. Dropped with the `Upstream`, so a
    /// pool never outlives the gateway that made it.
    clients: Arc<ThreadLocal<UpstreamClient>>,
    pool_idle_timeout: Duration,
    pool_max_idle: usize,
    pub connector: UpstreamConnector,
    /// `Host` value Jupyter expects: its own `host:port`, or `localhost`
    /// for a Unix socket (Jupyter's `check_host` accepts it).
    pub authority: String,
    /// Absolute origins under which Jupyter may name itself in `Location`.
    pub self_origins: Vec<String>,
    pub connect_timeout: Duration,
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
        Upstream {
            clients: Arc::new(ThreadLocal::new()),
            pool_idle_timeout: cfg.pool_idle_timeout,
            pool_max_idle: cfg.pool_max_idle,
            connector,
            authority,
            self_origins,
            connect_timeout: cfg.connect_timeout,
        }
    }

    /// This thread's pooled client, created on first use. Its connection
    /// tasks are spawned on the runtime of the request that opened them,
    /// which on a per-core runtime is this thread's.
    pub fn client(&self) -> &UpstreamClient {
        self.clients.get_or(|| {
            Client::builder(TokioExecutor::new())
                .pool_idle_timeout(self.pool_idle_timeout)
                .pool_max_idle_per_host(self.pool_max_idle)
                .pool_timer(TokioTimer::new())
                .timer(TokioTimer::new())
                // Jupyter speaks HTTP/1.1; keep its header case as sent.
                .http1_preserve_header_case(false)
                .build(self.connector.clone())
        })
    }

    /// The absolute URI the pooled client needs for a request path.
    pub fn uri_for(&self, path_and_query: &str) -> Result<Uri, http::Error> {
        Uri::builder()
            .scheme("http")
            .authority(self.authority.as_str())
            .path_and_query(path_and_query)
            .build()
    }
}
