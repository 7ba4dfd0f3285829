//! The byte stream to Jupyter: a TCP or Unix-socket connection
//! (`UpstreamStream`) and the connector that opens it to the configured
//! address and nowhere else.
//!
//! A leaf: the HTTP/1.1 exchange (`h1`), the pool (`upstream`) and the
//! WebSocket tunnels all carry bytes on it, and it imports none of them.
//! It does not decide what is sent.

use std::io;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpStream, UnixStream};

use crate::config::UpstreamAddr;

/// A byte stream to Jupyter over TCP or a Unix socket.
pub enum UpstreamStream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl UpstreamStream {
    /// Whether nothing waits to be read and the peer has not closed: one
    /// `recv(2)` with `MSG_PEEK | MSG_DONTWAIT`, which neither waits nor
    /// consumes.
    ///
    /// Asked of the kernel every time, not of tokio: `try_read` makes no
    /// system call while tokio's cached readiness says "not readable", and
    /// a busy worker thread polls epoll only now and then, so bytes already
    /// in the socket went unseen (tests/hostile.rs,
    /// `unasked_bytes_on_an_idle_upstream_connection_never_answer_the_next_request`).
    pub fn is_quiet(&self) -> bool {
        let fd = match self {
            UpstreamStream::Tcp(s) => s.as_raw_fd(),
            UpstreamStream::Unix(s) => s.as_raw_fd(),
        };
        let mut probe = 0u8;
        // SAFETY: `fd` is the socket `self` owns, open for the whole call,
        // and the buffer is one writable byte.
        let n = unsafe {
            libc::recv(
                fd,
                std::ptr::addr_of_mut!(probe).cast(),
                1,
                libc::MSG_PEEK | libc::MSG_DONTWAIT,
            )
        };
        // 1: bytes nobody asked for; 0: the peer closed; an error other
        // than "nothing yet" (a reset): the connection is broken.
        n < 0 && io::Error::last_os_error().kind() == io::ErrorKind::WouldBlock
    }
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
        let start = std::time::Instant::now();
        let connected = tokio::time::timeout(self.connect_timeout, self.connect_now())
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "upstream connect timed out"))
            .and_then(|r| r);
        crate::metrics::upstream_connect(start.elapsed(), connected.is_ok());
        connected
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
