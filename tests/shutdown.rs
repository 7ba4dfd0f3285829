//! Graceful shutdown on SIGTERM/SIGINT: stop accepting, let in-flight requests finish within
//! `shutdown_grace`, close WebSocket tunnels (HTTP/1.1 and HTTP/2), exit 0.

mod common;

use std::cell::Cell;
use std::io::ErrorKind;
use std::time::{Duration, Instant};

use common::h2ws::{h2_connection, h2_ws, ApiClient};
use common::nbgate::closed_by_server;
use common::{within, Nbgate, PatternBytes, TestUpstream};
use futures_util::StreamExt;
use tokio_tungstenite::tungstenite::Message;

const T: Duration = Duration::from_secs(30);

/// SHA-256 of the first `total` bytes of the upstream's `/stream` pattern (seed 7).
fn pattern_sha256(total: usize) -> String {
    let mut pattern = PatternBytes::new(7);
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    let mut buf = vec![0u8; 64 * 1024];
    let mut left = total;
    while left > 0 {
        let n = left.min(buf.len());
        pattern.fill(&mut buf[..n]);
        ctx.update(&buf[..n]);
        left -= n;
    }
    hex::encode(ctx.finish())
}

/// Polls new TCP connections to `addr` until one is refused (ECONNREFUSED).
async fn wait_until_refused(addr: std::net::SocketAddr, limit: Duration) {
    common::poll_until(limit, "a new connection to be refused", || async {
        match tokio::net::TcpStream::connect(addr).await {
            Err(e) if e.kind() == ErrorKind::ConnectionRefused => Some(()),
            _ => None,
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_a_running_download_finish_and_refuses_new_connections() {
    let upstream = TestUpstream::start().await;
    let mut gate = Nbgate::builder()
        .upstream(&upstream.url())
        .set("server.shutdown_grace", "30s")
        .start()
        .await;
    // 4 MiB in 64 chunks, 60 ms apart: about 4 s on the wire.
    let total = 4 << 20;
    let response = within(
        T,
        "start the download",
        gate.client()
            .get(gate.url(&format!("/stream?bytes={total}&chunk=65536&delay_ms=60")))
            .send(),
    )
    .await
    .expect("GET /stream");
    assert_eq!(response.status(), 200);
    let mut body = response.bytes_stream();
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    let received = Cell::new(0usize);
    let first = within(T, "first chunk", body.next())
        .await
        .expect("a first chunk")
        .expect("first chunk");
    ctx.update(&first);
    received.set(first.len());

    gate.signal(libc::SIGTERM);
    let reader = async {
        while let Some(chunk) = body.next().await {
            let chunk = chunk.expect("download interrupted by shutdown");
            ctx.update(&chunk);
            received.set(received.get() + chunk.len());
        }
    };
    let refusal = async {
        wait_until_refused(gate.https_addr(), Duration::from_secs(2)).await;
        received.get()
    };
    let (received_when_refused, ()) =
        tokio::join!(refusal, within(T, "rest of the download", reader));
    assert!(
        received_when_refused < total,
        "the download had already finished when new connections were refused"
    );
    assert_eq!(received.get(), total, "download truncated by shutdown");
    assert_eq!(hex::encode(ctx.finish()), pattern_sha256(total));

    let status = gate.wait_exit(Duration::from_secs(10)).await;
    assert_eq!(status.code(), Some(0), "exit status {status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_closes_websocket_tunnels_with_a_close_frame_and_exits_zero() {
    let upstream = TestUpstream::start().await;
    let mut gate = Nbgate::builder()
        .upstream(&upstream.url())
        .set("server.shutdown_grace", "30s")
        .start()
        .await;
    let mut ws = gate.ws_connect("/ws-echo").await;
    within(T, "handshake description", ws.next()).await;

    let signalled = Instant::now();
    gate.signal(libc::SIGTERM);
    let ended = within(Duration::from_secs(10), "tunnel to be closed", async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Close(frame))) => return Some(frame),
                Some(Ok(_)) => continue,
                None | Some(Err(_)) => return None,
            }
        }
    })
    .await;
    assert!(
        ended.is_some(),
        "tunnel ended without a WebSocket close frame"
    );
    let status = gate.wait_exit(Duration::from_secs(10)).await;
    assert_eq!(status.code(), Some(0), "exit status {status}");
    assert!(
        signalled.elapsed() < Duration::from_secs(10),
        "an open tunnel held shutdown for {:?}",
        signalled.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_closes_websockets_on_http2_with_a_close_frame_and_exits_zero() {
    let upstream = TestUpstream::start().await;
    let mut gate = Nbgate::builder()
        .upstream(&upstream.url())
        .set("server.shutdown_grace", "30s")
        .start()
        .await;
    let api = ApiClient::of(&gate);
    let auth = api.headers();
    // Two WebSockets on one HTTP/2 connection, as a browser tab holds them.
    let mut conn = h2_connection(&gate).await;
    let mut first = h2_ws(&mut conn, &gate, "/ws-echo", &auth).await;
    let mut second = h2_ws(&mut conn, &gate, "/ws-echo", &auth).await;
    within(T, "handshake description", first.next()).await;
    within(T, "handshake description", second.next()).await;

    let signalled = Instant::now();
    gate.signal(libc::SIGTERM);
    // Each gets a close frame (1001 "going away"): the connection's GOAWAY alone would let
    // them run until the grace period ends.
    assert_eq!(closed_by_server(&mut first).await, Some(1001));
    assert_eq!(closed_by_server(&mut second).await, Some(1001));
    let status = gate.wait_exit(Duration::from_secs(10)).await;
    assert_eq!(status.code(), Some(0), "exit status {status}");
    assert!(
        signalled.elapsed() < Duration::from_secs(10),
        "open HTTP/2 tunnels held shutdown for {:?}",
        signalled.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigint_exits_zero() {
    let mut gate = Nbgate::builder().start().await;
    gate.signal(libc::SIGINT);
    let status = gate.wait_exit(Duration::from_secs(10)).await;
    assert_eq!(status.code(), Some(0), "exit status {status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_and_does_not_stop_a_self_signed_gate() {
    let up = TestUpstream::start().await;
    let mut gate = Nbgate::builder().upstream(&up.url()).start().await;
    gate.signal(libc::SIGHUP);
    gate.wait_for_log("configuration reloaded", Duration::from_secs(10))
        .await;
    assert!(gate.is_running());
    let r = gate
        .client()
        .get(gate.url("/after-hup"))
        .send()
        .await
        .expect("request after SIGHUP");
    assert_eq!(r.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_download_longer_than_the_grace_is_cut_off() {
    let upstream = TestUpstream::start().await;
    let mut gate = Nbgate::builder()
        .upstream(&upstream.url())
        .set("server.shutdown_grace", "1s")
        .start()
        .await;
    // 200 chunks 100 ms apart: 20 s, far beyond the 1 s grace.
    let response = within(
        T,
        "start the download",
        gate.client()
            .get(gate.url("/stream?bytes=13107200&chunk=65536&delay_ms=100"))
            .send(),
    )
    .await
    .expect("GET /stream");
    let mut body = response.bytes_stream();
    within(T, "first chunk", body.next()).await;

    let signalled = Instant::now();
    gate.signal(libc::SIGTERM);
    let status = gate.wait_exit(Duration::from_secs(8)).await;
    let took = signalled.elapsed();
    assert!(
        took < Duration::from_secs(5),
        "shutdown took {took:?} with a 1 s grace"
    );
    assert_eq!(status.code(), Some(0), "exit status {status}");
    let mut received = 0usize;
    let truncated = within(T, "client sees the cut", async {
        while let Some(chunk) = body.next().await {
            match chunk {
                Ok(chunk) => received += chunk.len(),
                Err(_) => return true,
            }
        }
        false
    })
    .await;
    assert!(
        truncated || received < 13_107_200,
        "the cut download must not look complete"
    );
}
