//! The fast upstream every contender forwards to: plain HTTP/1.1 and h2c
//! (prior knowledge), so that the proxy, not the upstream, is the
//! bottleneck.
//!
//! - `GET /1k` (and any other path): 1 KiB body.
//! - `GET /bytes?n=N`: N bytes, streamed in 64 KiB chunks.
//! - `POST /upload`: reads the body, answers with its length.
//! - `/ws` (and `/api/kernels/<id>/channels`): WebSocket echo (RFC 6455),
//!   for round trips and tunnels.

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::{header, Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_tungstenite::WebSocketStream;

pub const ONE_KIB: &[u8] = &[b'x'; 1024];
const CHUNK: usize = 64 * 1024;

/// Runs the upstream on `port` until killed.
pub async fn serve(port: u16) -> std::io::Result<()> {
    let listener = TcpListener::bind(("127.0.0.1", port)).await?;
    let chunk = Bytes::from(vec![b'z'; CHUNK]);
    loop {
        let (tcp, _) = listener.accept().await?;
        let _ = tcp.set_nodelay(true);
        let chunk = chunk.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| handle(req, chunk.clone()));
            let _ = auto::Builder::new(TokioExecutor::new())
                .serve_connection_with_upgrades(TokioIo::new(tcp), service)
                .await;
        });
    }
}

type Resp = Response<BoxBody<Bytes, hyper::Error>>;

fn full(b: impl Into<Bytes>) -> BoxBody<Bytes, hyper::Error> {
    Full::new(b.into()).map_err(|never| match never {}).boxed()
}

async fn handle(mut req: Request<Incoming>, chunk: Bytes) -> Result<Resp, Infallible> {
    let path = req.uri().path().to_owned();
    // A kernel channel's path too: what nbgate's code audit looks at.
    if path == "/ws" || (path.starts_with("/api/kernels/") && path.ends_with("/channels")) {
        return Ok(websocket(&mut req));
    }
    if path == "/upload" {
        let mut body = req.into_body();
        let mut n: u64 = 0;
        while let Some(frame) = body.frame().await {
            match frame {
                Ok(f) => n += f.data_ref().map_or(0, |d| d.len() as u64),
                Err(_) => break,
            }
        }
        return Ok(Response::new(full(n.to_string())));
    }
    if path == "/bytes" {
        let n = req
            .uri()
            .query()
            .and_then(|q| q.strip_prefix("n="))
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0);
        let body = Repeat { left: n, chunk };
        let mut r = Response::new(body.boxed());
        r.headers_mut().insert(header::CONTENT_LENGTH, n.into());
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/octet-stream"),
        );
        return Ok(r);
    }
    let mut r = Response::new(full(Bytes::from_static(ONE_KIB)));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain"),
    );
    Ok(r)
}

fn websocket(req: &mut Request<Incoming>) -> Resp {
    let Some(key) = req.headers().get("sec-websocket-key").cloned() else {
        let mut r = Response::new(full("not a websocket request"));
        *r.status_mut() = StatusCode::BAD_REQUEST;
        return r;
    };
    let on_upgrade = hyper::upgrade::on(req);
    tokio::spawn(async move {
        let Ok(upgraded) = on_upgrade.await else {
            return;
        };
        let cfg = WebSocketConfig {
            max_message_size: Some(1 << 30),
            max_frame_size: Some(1 << 30),
            ..WebSocketConfig::default()
        };
        let mut ws =
            WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, Some(cfg)).await;
        while let Some(Ok(msg)) = ws.next().await {
            if msg.is_binary() || msg.is_text() {
                if ws.send(msg).await.is_err() {
                    break;
                }
            } else if msg.is_close() {
                break;
            }
        }
    });
    let mut r = Response::new(full(Bytes::new()));
    *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = r.headers_mut();
    h.insert(
        header::CONNECTION,
        http::HeaderValue::from_static("upgrade"),
    );
    h.insert(header::UPGRADE, http::HeaderValue::from_static("websocket"));
    h.insert(
        "sec-websocket-accept",
        http::HeaderValue::from_str(&derive_accept_key(key.as_bytes()))
            .expect("base64 is a valid header value"),
    );
    r
}

/// A body of `left` bytes made of one shared chunk.
pub struct Repeat {
    pub left: u64,
    pub chunk: Bytes,
}

impl Body for Repeat {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        if self.left == 0 {
            return Poll::Ready(None);
        }
        let n = self.left.min(self.chunk.len() as u64) as usize;
        self.left -= n as u64;
        Poll::Ready(Some(Ok(Frame::data(self.chunk.slice(..n)))))
    }

    fn is_end_stream(&self) -> bool {
        self.left == 0
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        hyper::body::SizeHint::with_exact(self.left)
    }
}
