//! The admin listener (`[admin] listen`): `GET /metrics` (Prometheus text
//! exposition, `metrics::render`) and `GET /health` (the health page's
//! answer). Nothing else: no login page, no proxying, no Jupyter.
//!
//! Off unless configured. On a loopback address without a token it speaks
//! plain HTTP; with `admin.token_file` (required for any other address, see
//! `config::admin`) it speaks TLS with nbgate's own certificate and refuses
//! every request without `Authorization: Bearer <token>` (401), compared in
//! constant time. It runs on the main runtime, away from the workers that
//! serve clients, with a small connection cap of its own: a scraper that
//! misbehaves cannot take client capacity.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use subtle::ConstantTimeEq;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use super::send_deadline::SendDeadline;
use super::StatusSource;
use crate::config::{AdminConfig, Config, Secret};
use crate::metrics;
use crate::proxy::body::{full, ProxyBody};
use crate::proxy::health;
use crate::tls::{self, CertResolver};

/// Admin connections open at once; more are closed when accepted.
const MAX_CONNECTIONS: usize = 16;
/// A scraper sends a few hundred bytes of request.
const MAX_HEADER_BYTES: usize = 16 * 1024;

/// Starts serving `listener` until `stop`, and starts keeping the
/// per-request metrics (nobody could read them before).
pub(super) fn spawn(
    listener: TcpListener,
    config: &Config,
    admin: &AdminConfig,
    resolver: &Arc<CertResolver>,
    status: StatusSource,
    stop: CancellationToken,
) {
    metrics::enable();
    metrics::started();
    let acceptor = admin.tls().then(|| {
        let mut cfg = (*tls::server_config(Arc::clone(resolver))).clone();
        // HTTP/1.1 only: what scrapers speak, and the only protocol served here.
        cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
        TlsAcceptor::from(Arc::new(cfg))
    });
    let scheme = if acceptor.is_some() { "https" } else { "http" };
    // Not a `listening scheme=… addr=…` line: those name the client listeners.
    match listener.local_addr() {
        Ok(addr) => tracing::info!("admin endpoint up admin_scheme={scheme} admin_addr={addr}"),
        Err(e) => tracing::warn!(error = %e, "admin listener has no local address"),
    }
    let ctx = Arc::new(AdminCtx {
        acceptor,
        token: admin.token.clone(),
        status,
        timeout: config.server.header_read_timeout,
        send_timeout: config.server.send_timeout,
    });
    tokio::spawn(accept_loop(listener, ctx, stop));
}

struct AdminCtx {
    acceptor: Option<TlsAcceptor>,
    token: Option<Secret>,
    status: StatusSource,
    /// Handshake and request-head timeout (`server.header_read_timeout`).
    timeout: Duration,
    /// `server.send_timeout`, as on the client listeners.
    send_timeout: Duration,
}

async fn accept_loop(listener: TcpListener, ctx: Arc<AdminCtx>, stop: CancellationToken) {
    let limit = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            _ = stop.cancelled() => return,
        };
        let (tcp, peer) = match accepted {
            Ok(pair) => pair,
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::warn!(error = %e, "admin accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        // At the cap a connection is closed at once: scrapers open one or two.
        let Ok(permit) = Arc::clone(&limit).try_acquire_owned() else {
            tracing::debug!(%peer, "admin: too many connections; closed");
            continue;
        };
        let ctx = Arc::clone(&ctx);
        tokio::spawn(async move {
            let _permit = permit;
            serve(tcp, peer, ctx).await;
        });
    }
}

async fn serve(tcp: tokio::net::TcpStream, peer: SocketAddr, ctx: Arc<AdminCtx>) {
    let _ = tcp.set_nodelay(true);
    // Under TLS, as on the client listeners.
    let tcp = SendDeadline::new(tcp, ctx.send_timeout);
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(ctx.timeout)
        .max_buf_size(MAX_HEADER_BYTES);
    let service_ctx = Arc::clone(&ctx);
    let service = service_fn(move |req: Request<hyper::body::Incoming>| {
        let ctx = Arc::clone(&service_ctx);
        async move { Ok::<_, std::convert::Infallible>(answer(&ctx, &req).await) }
    });
    let served = match &ctx.acceptor {
        None => builder.serve_connection(TokioIo::new(tcp), service).await,
        Some(acceptor) => match tokio::time::timeout(ctx.timeout, acceptor.accept(tcp)).await {
            Ok(Ok(tls)) => builder.serve_connection(TokioIo::new(tls), service).await,
            Ok(Err(e)) => {
                tracing::debug!(%peer, error = %e, "admin tls handshake failed");
                return;
            }
            Err(_) => {
                tracing::debug!(%peer, "admin tls handshake timed out");
                return;
            }
        },
    };
    if let Err(e) = served {
        tracing::debug!(%peer, error = %e, "admin connection ended with error");
    }
}

/// The answer to one admin request: the token first, then the route.
async fn answer<B>(ctx: &AdminCtx, req: &Request<B>) -> Response<ProxyBody> {
    if let Some(token) = &ctx.token {
        if !bearer_matches(req.headers().get(header::AUTHORIZATION), token) {
            let mut r = text(StatusCode::UNAUTHORIZED, "bearer token required\n");
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"nbgate-admin\""),
            );
            return r;
        }
    }
    if !matches!(*req.method(), Method::GET | Method::HEAD) {
        return text(StatusCode::METHOD_NOT_ALLOWED, "GET only\n");
    }
    match req.uri().path() {
        "/metrics" => {
            let now = ctx.status.now();
            let gauges = metrics::Gauges {
                open_connections: now.connections,
                tunnels: now.tunnels,
                certificate_not_after: now.certificate_expires,
                upstream_up: ctx.status.gateway.live().upstream_health().await.up,
            };
            let mut r = Response::new(full(metrics::render(&gauges)));
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static(metrics::CONTENT_TYPE),
            );
            r
        }
        "/health" => health::response(ctx.status.gateway.live().upstream_health().await),
        _ => text(StatusCode::NOT_FOUND, "not found: /metrics or /health\n"),
    }
}

/// Whether `value` is `Bearer <token>`; the token compared in constant time
/// so that its bytes cannot be found one by one from response timings.
fn bearer_matches(value: Option<&HeaderValue>, token: &Secret) -> bool {
    let Some(given) = value
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, t)| t.trim())
    else {
        return false;
    };
    given.as_bytes().ct_eq(token.expose().as_bytes()).into()
}

fn text(status: StatusCode, body: &'static str) -> Response<ProxyBody> {
    let mut r = Response::new(full(Bytes::from_static(body.as_bytes())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_exact_bearer_token_passes() {
        let token = Secret::new("0123456789abcdef".into());
        let check = |v: &str| bearer_matches(Some(&HeaderValue::from_str(v).unwrap()), &token);
        assert!(check("Bearer 0123456789abcdef"));
        assert!(check("bearer  0123456789abcdef "));
        assert!(!check("Bearer 0123456789abcde"));
        assert!(!check("Bearer 0123456789abcdef0"));
        assert!(!check("Basic 0123456789abcdef"));
        assert!(!check("0123456789abcdef"));
        assert!(!bearer_matches(None, &token));
    }
}
