//! WebSocket tunnels through nbgate: Jupyter kernels and terminals, the Origin check, what the
//! upstream sees in the handshake, idle timeout and the tunnel log events; WebSockets over
//! HTTP/2 (RFC 8441): a kernel runs code, the same refusals as HTTP/1.1, and CONNECTs that are
//! not WebSockets. (Their closing by logout, reload and shutdown: `login.rs`, `reload.rs`,
//! `shutdown.rs`.)

mod common;

use std::time::{Duration, Instant};

use common::h2ws::{h2_connect, h2_connection, h2_websocket, ApiClient};
use common::kernel::{execute, read_terminal_until, start_kernel, start_terminal};
use common::nbgate::log_field;
use common::upstream::echoed_header;
use common::{within, Jupyter, Nbgate, TestUpstream};
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::WebSocketStream;

const T: Duration = Duration::from_secs(30);

/// The next text message, skipping pings (30 s limit).
async fn next_text(ws: &mut common::nbgate::WsStream) -> String {
    within(T, "next WebSocket text message", async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Text(text))) => return text,
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                other => panic!("expected a text message, got {other:?}"),
            }
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kernel_executes_code_over_the_websocket() {
    let jupyter = Jupyter::start().await;
    let gate = Nbgate::start_for(&jupyter).await;
    let kernel = start_kernel(&gate).await;
    let mut ws = gate
        .ws_connect(&format!("/api/kernels/{kernel}/channels"))
        .await;
    assert_eq!(execute(&mut ws, "1+1").await, "2");
    assert_eq!(
        execute(&mut ws, "print('hi from kernel')").await,
        "hi from kernel\n"
    );
    gate.wait_for_log("tunnel opened", Duration::from_secs(5))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminal_echoes_through_the_websocket() {
    let jupyter = Jupyter::start().await;
    let gate = Nbgate::start_for(&jupyter).await;
    let name = start_terminal(&gate).await;
    let mut ws = gate
        .ws_connect(&format!("/terminals/websocket/{name}"))
        .await;
    within(T, "send stdin", async {
        ws.send(Message::Text(r#"["stdin", "echo hel''lo\r"]"#.to_string()))
            .await
            .expect("send stdin")
    })
    .await;
    // The shell echoes the typed `hel''lo`; only the command's output contains `hello`.
    read_terminal_until(&mut ws, "hello").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cross_origin_websocket_to_a_kernel_is_refused() {
    let jupyter = Jupyter::start().await;
    let gate = Nbgate::start_for(&jupyter).await;
    let kernel = start_kernel(&gate).await;
    let path = format!("/api/kernels/{kernel}/channels");
    // Jupyter accepts any Origin on a token-authenticated WebSocket, so this is nbgate's job
    // (cross-site WebSocket hijacking).
    for origin in [
        "http://evil.example.com",
        "null",
        &format!("http://localhost:{}", gate.https_addr().port()),
    ] {
        match gate.ws_connect_with(&path, &[("origin", origin)]).await {
            Err(WsError::Http(response)) => {
                assert_eq!(response.status(), 403, "Origin {origin}")
            }
            Err(e) => panic!(
                "Origin {origin}: expected a 403 response, got {}",
                common::nbgate::describe_ws_error(&e)
            ),
            Ok(_) => panic!("WebSocket with Origin {origin} was accepted"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_sees_its_own_origin_host_and_the_token() {
    let upstream = TestUpstream::start().await;
    let gate = Nbgate::builder().upstream(&upstream.url()).start().await;
    let mut ws = gate.ws_connect("/ws-echo").await;
    let handshake: serde_json::Value =
        serde_json::from_str(&next_text(&mut ws).await).expect("handshake JSON");

    // Origin-form request target (RFC 9112 §3.2.1): Tornado routes on the raw target and
    // answers an absolute-form `GET http://host/path` with 404.
    assert_eq!(handshake["uri"], "/ws-echo", "{handshake}");
    assert_eq!(echoed_header(&handshake, "origin"), Some(upstream.url()));
    assert_eq!(
        echoed_header(&handshake, "host"),
        Some(upstream.addr().to_string())
    );
    assert_eq!(
        echoed_header(&handshake, "authorization"),
        Some(format!("token {}", gate.upstream_token()))
    );
    assert_eq!(
        echoed_header(&handshake, "upgrade").map(|u| u.to_ascii_lowercase()),
        Some("websocket".to_string())
    );

    within(T, "echo text", ws.send(Message::Text("ping-text".into())))
        .await
        .expect("send text");
    assert_eq!(next_text(&mut ws).await, "ping-text");
    let big = vec![0xA5u8; 1 << 20];
    within(T, "echo binary", ws.send(Message::Binary(big.clone())))
        .await
        .expect("send binary");
    let echoed = within(T, "binary echo", ws.next()).await;
    match echoed {
        Some(Ok(Message::Binary(data))) => assert!(data == big, "binary echo differs"),
        other => panic!("expected the binary echo, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tunnel_events_are_logged_with_byte_counts() {
    let upstream = TestUpstream::start().await;
    let gate = Nbgate::builder().upstream(&upstream.url()).start().await;
    let mut ws = gate.ws_connect("/ws-echo").await;
    next_text(&mut ws).await;
    let payload = "x".repeat(10_000);
    within(T, "send", ws.send(Message::Text(payload.clone())))
        .await
        .expect("send");
    assert_eq!(next_text(&mut ws).await, payload);
    gate.wait_for_log("tunnel opened", Duration::from_secs(5))
        .await;
    within(T, "close", ws.close(None)).await.ok();
    drop(ws);

    let line = gate
        .wait_for_line(&["tunnel closed", "bytes_up="], Duration::from_secs(10))
        .await;
    let up: u64 = log_field(&line, "bytes_up")
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("bytes_up is not a number: {line}"));
    let down: u64 = log_field(&line, "bytes_down")
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("bytes_down is not a number: {line}"));
    assert!(up >= 10_000, "bytes_up={up} < the 10000 bytes sent: {line}");
    assert!(
        down >= 10_000,
        "bytes_down={down} < the 10000 bytes echoed: {line}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_tunnel_is_closed_after_the_idle_timeout() {
    let upstream = TestUpstream::start().await;
    let gate = Nbgate::builder()
        .upstream(&upstream.url())
        .set("upstream.websocket_idle_timeout", "2s")
        .start()
        .await;
    let mut ws = gate.ws_connect("/ws-echo").await;
    next_text(&mut ws).await;
    let idle_since = Instant::now();
    match within(
        Duration::from_secs(10),
        "idle tunnel to be closed",
        ws.next(),
    )
    .await
    {
        Some(Ok(Message::Close(_))) | None | Some(Err(_)) => {}
        Some(Ok(other)) => panic!("unexpected message on an idle tunnel: {other:?}"),
    }
    let idle = idle_since.elapsed();
    assert!(
        idle >= Duration::from_millis(1500),
        "closed after {idle:?}, before the 2 s idle timeout"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn active_tunnel_outlives_the_idle_timeout() {
    let upstream = TestUpstream::start().await;
    let gate = Nbgate::builder()
        .upstream(&upstream.url())
        .set("upstream.websocket_idle_timeout", "2s")
        .start()
        .await;
    let mut ws = gate.ws_connect("/ws-echo").await;
    next_text(&mut ws).await;
    // Traffic every 500 ms for 4 s: twice the idle timeout, never idle for long.
    for i in 0..8 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let text = format!("keepalive {i}");
        within(T, "send", ws.send(Message::Text(text.clone())))
            .await
            .expect("send on an active tunnel");
        assert_eq!(next_text(&mut ws).await, text);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kernel_executes_code_over_a_websocket_on_http2() {
    let jupyter = Jupyter::start().await;
    let gate = Nbgate::start_for(&jupyter).await;
    let kernel = start_kernel(&gate).await;
    let path = format!("/api/kernels/{kernel}/channels");
    let api = ApiClient::of(&gate);
    let mut conn = h2_connection(&gate).await;
    let (head, stream) = h2_websocket(&mut conn, &gate, &path, &api.headers()).await;
    assert_eq!(head.status, 200, "{head:?}");
    // Nothing of the HTTP/1.1 handshake reaches an HTTP/2 client (RFC 8441 §5).
    for name in ["sec-websocket-accept", "upgrade", "connection"] {
        assert!(!head.headers.contains_key(name), "{name} in {head:?}");
    }
    let mut ws =
        WebSocketStream::from_raw_socket(stream.expect("the stream of a 200"), Role::Client, None)
            .await;
    assert_eq!(execute(&mut ws, "1+1").await, "2");
    let line = gate
        .wait_for_line(&["tunnel opened", "h2"], Duration::from_secs(5))
        .await;
    assert_eq!(log_field(&line, "via").as_deref(), Some("h2"), "{line}");

    // A second WebSocket on the same connection, asking for Jupyter's kernel subprotocol:
    // the one Jupyter chose is echoed exactly.
    let subprotocol = "v1.kernel.websocket.jupyter.org";
    let (head, stream) = h2_websocket(
        &mut conn,
        &gate,
        &path,
        &[
            api.headers()[0],
            api.headers()[1],
            ("sec-websocket-protocol", subprotocol),
        ],
    )
    .await;
    assert_eq!(head.status, 200, "{head:?}");
    assert_eq!(
        head.headers
            .get("sec-websocket-protocol")
            .map(|v| v.as_bytes()),
        Some(subprotocol.as_bytes()),
        "{head:?}"
    );
    drop(stream);
    within(T, "close", ws.close(None)).await.ok();
    gate.wait_for_line(&["tunnel closed", "h2"], Duration::from_secs(10))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_websocket_without_credentials_or_from_another_site_is_refused() {
    let jupyter = Jupyter::start().await;
    let gate = Nbgate::start_for(&jupyter).await;
    let kernel = start_kernel(&gate).await;
    let path = format!("/api/kernels/{kernel}/channels");
    let token = format!("token {}", common::nbgate::TEST_API_TOKEN);
    let origin = gate.origin();
    let mut conn = h2_connection(&gate).await;
    // No session cookie, no token: 401, as for an HTTP/1.1 upgrade.
    let (head, stream) = h2_websocket(&mut conn, &gate, &path, &[("origin", &origin)]).await;
    assert_eq!(head.status, 401, "{head:?}");
    assert!(stream.is_none());
    // Cross-site WebSocket hijacking: another site's Origin is refused even with a token.
    for other in ["https://evil.example.com", "null"] {
        let (head, _) = h2_websocket(
            &mut conn,
            &gate,
            &path,
            &[("authorization", &token), ("origin", other)],
        )
        .await;
        assert_eq!(head.status, 403, "Origin {other}: {head:?}");
    }
    assert!(!gate.log_contains("tunnel opened"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_connects_that_are_not_websockets_are_refused() {
    let upstream = TestUpstream::start().await;
    let gate = Nbgate::builder().upstream(&upstream.url()).start().await;
    let api = ApiClient::of(&gate);
    let auth = api.headers();
    let mut conn = h2_connection(&gate).await;
    let before = upstream.connections();
    // A plain CONNECT asks for a tunnel to another host: nbgate is no forward proxy.
    let (head, stream) = h2_connect(&mut conn, &gate, "", None, &auth).await;
    assert_eq!(head.status, 405, "{head:?}");
    assert_eq!(
        head.headers.get("allow").map(|v| v.as_bytes()),
        Some(&b""[..])
    );
    assert!(stream.is_none());
    // An extended CONNECT for another protocol: 501 (RFC 9220 §3).
    for protocol in ["connect-udp", "webtransport"] {
        let (head, _) = h2_connect(&mut conn, &gate, "/ws-echo", Some(protocol), &auth).await;
        assert_eq!(head.status, 501, ":protocol {protocol}: {head:?}");
    }
    assert_eq!(
        upstream.connections(),
        before,
        "a refused CONNECT reached the upstream"
    );
    // The connection goes on: a WebSocket on it still opens.
    let (head, _) = h2_websocket(&mut conn, &gate, "/ws-echo", &auth).await;
    assert_eq!(head.status, 200, "{head:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_websocket_to_a_page_gets_502_not_an_open_stream() {
    // Jupyter answers `GET /api` with `Upgrade: websocket` as a plain GET (200 and JSON). An
    // HTTP/2 client takes any 2xx to its CONNECT for an open WebSocket (RFC 8441 §5), so that
    // answer must not reach it.
    let jupyter = Jupyter::start().await;
    let gate = Nbgate::start_for(&jupyter).await;
    let api = ApiClient::of(&gate);
    let mut conn = h2_connection(&gate).await;
    let (head, stream) = h2_websocket(&mut conn, &gate, "/api", &api.headers()).await;
    assert_eq!(head.status, 502, "{head:?}");
    assert!(stream.is_none());
    assert!(!gate.log_contains("tunnel opened"));
}
