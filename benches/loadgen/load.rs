//! The load generators, one function per measure. Each returns named
//! figures for one run against one contender; `main` alternates contenders
//! and takes medians.

use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::{HeaderValue, Request};
use http_body_util::{BodyExt, Empty, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use nbgate::server::h2_stream::H2Stream;
use serde_json::{json, Value};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::Semaphore;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use crate::net::{self, Alpn, BoxError, Percentiles, Stream, Target};
use crate::procs::Proc;
use crate::upstream::Repeat;

/// Named figures of one run.
pub type Figures = Vec<(&'static str, f64)>;

const WRK_SCRIPT: &str = r#"
done = function(summary, latency, requests)
  io.write(string.format(
    "JSON {\"requests\":%d,\"duration_us\":%d,\"status_errors\":%d,\"socket_errors\":%d,\"p50\":%f,\"p99\":%f,\"p999\":%f}\n",
    summary.requests, summary.duration, summary.errors.status,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    latency:percentile(50), latency:percentile(99), latency:percentile(99.9)))
end
"#;

/// Measure 1: HTTP/1.1 keep-alive with wrk (`-t2 -c50`).
pub fn wrk(target: &Target, dir: &Path, conns: usize, dur: Duration) -> Result<Figures, BoxError> {
    let script = dir.join("report.lua");
    std::fs::write(&script, WRK_SCRIPT)?;
    let mut cmd = Command::new("wrk");
    cmd.arg("-t2")
        .arg(format!("-c{conns}"))
        .arg(format!("-d{}s", dur.as_secs()))
        .arg("-s")
        .arg(&script);
    for (k, v) in &target.auth {
        cmd.arg("-H")
            .arg(format!("{}: {}", k, v.to_str().unwrap_or("")));
    }
    cmd.arg(target.url("/1k"));
    let out = cmd.output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix("JSON "))
        .ok_or_else(|| {
            format!(
                "wrk printed no result: {text} {}",
                String::from_utf8_lossy(&out.stderr)
            )
        })?;
    let v: Value = serde_json::from_str(line)?;
    let f = |k: &str| v[k].as_f64().unwrap_or(0.0);
    let secs = f("duration_us") / 1e6;
    let requests = f("requests");
    if f("status_errors") > requests * 0.001 {
        return Err(format!(
            "wrk: {} non-2xx responses of {requests}",
            f("status_errors")
        )
        .into());
    }
    Ok(vec![
        ("rps", requests / secs),
        ("p50_ms", f("p50") / 1000.0),
        ("p99_ms", f("p99") / 1000.0),
        ("p999_ms", f("p999") / 1000.0),
        ("socket_errors", f("socket_errors")),
    ])
}

/// Measure 2: HTTP/2, `conns` connections with `streams` requests in flight
/// on each (h2c prior knowledge for direct).
pub async fn h2(
    target: &Target,
    conns: usize,
    streams: usize,
    dur: Duration,
) -> Result<Figures, BoxError> {
    let mut senders = Vec::new();
    for _ in 0..conns {
        let s = target.connect(Alpn::H2).await?;
        let (sender, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
            .handshake::<_, Empty<Bytes>>(TokioIo::new(s))
            .await?;
        tokio::spawn(conn);
        senders.push(sender);
    }
    let uri: http::Uri = target.url("/1k").parse()?;
    let start = Instant::now();
    let deadline = start + dur;
    let errors = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for sender in &senders {
        for _ in 0..streams {
            let mut sender = sender.clone();
            let uri = uri.clone();
            let auth = target.auth.clone();
            let errors = Arc::clone(&errors);
            tasks.push(tokio::spawn(async move {
                let mut lat = Vec::with_capacity(1 << 14);
                while Instant::now() < deadline {
                    let mut req = Request::get(uri.clone())
                        .body(Empty::<Bytes>::new())
                        .expect("valid request");
                    req.headers_mut().extend(auth.clone());
                    let t = Instant::now();
                    let ok = match sender.send_request(req).await {
                        Ok(resp) => {
                            let status = resp.status();
                            resp.into_body().collect().await.is_ok() && status == 200
                        }
                        Err(_) => false,
                    };
                    if ok {
                        lat.push(t.elapsed().as_micros() as u32);
                    } else {
                        errors.fetch_add(1, Ordering::Relaxed);
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                }
                lat
            }));
        }
    }
    let mut lat = Vec::new();
    for t in tasks {
        lat.extend(t.await?);
    }
    let secs = start.elapsed().as_secs_f64();
    let n = lat.len() as f64;
    let errors = errors.load(Ordering::Relaxed) as f64;
    if errors > n * 0.001 {
        return Err(format!("h2: {errors} failed requests of {n}").into());
    }
    let p = Percentiles::of(&mut lat);
    Ok(vec![
        ("rps", n / secs),
        ("p50_ms", p.p50 / 1000.0),
        ("p99_ms", p.p99 / 1000.0),
        ("p999_ms", p.p999 / 1000.0),
    ])
}

/// Reads one HTTP/1.1 response with a `Content-Length` body; returns the status.
async fn read_response(s: &mut Stream) -> Result<u16, BoxError> {
    let mut buf = Vec::with_capacity(2048);
    let mut tmp = [0u8; 4096];
    let head_end = loop {
        let n = s.read(&mut tmp).await?;
        if n == 0 {
            return Err("connection closed before the response head".into());
        }
        buf.extend_from_slice(&tmp[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .ok_or("bad status line")?;
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    let mut have = buf.len() - head_end;
    while have < len {
        let n = s.read(&mut tmp).await?;
        if n == 0 {
            return Err("connection closed mid-body".into());
        }
        have += n;
    }
    Ok(status)
}

/// Measure 3: new connections per second, each doing a TLS 1.3 handshake
/// (full with `Alpn::H1NoResume`, resumed with a session ticket otherwise)
/// and one `GET /1k`.
pub async fn handshakes(
    target: &Target,
    alpn: Alpn,
    workers: usize,
    dur: Duration,
) -> Result<Figures, BoxError> {
    let mut head = format!("GET /1k HTTP/1.1\r\nHost: {}\r\n", target.authority);
    for (k, v) in &target.auth {
        head.push_str(&format!("{}: {}\r\n", k, v.to_str().unwrap_or("")));
    }
    head.push_str("Connection: close\r\n\r\n");
    let head = Arc::new(head);
    let start = Instant::now();
    let deadline = start + dur;
    let mut tasks = Vec::new();
    for _ in 0..workers {
        let target = target.clone();
        let head = Arc::clone(&head);
        tasks.push(tokio::spawn(async move {
            let (mut ok, mut resumed, mut failed) = (0u64, 0u64, 0u64);
            while Instant::now() < deadline {
                let r: Result<bool, BoxError> = async {
                    let mut s = target.connect(alpn).await?;
                    s.write_all(head.as_bytes()).await?;
                    let status = read_response(&mut s).await?;
                    if status != 200 {
                        return Err(format!("status {status}").into());
                    }
                    Ok(s.resumed())
                }
                .await;
                match r {
                    Ok(r) => {
                        ok += 1;
                        resumed += u64::from(r);
                    }
                    Err(_) => failed += 1,
                }
            }
            (ok, resumed, failed)
        }));
    }
    let (mut ok, mut resumed, mut failed) = (0, 0, 0);
    for t in tasks {
        let (a, b, c) = t.await?;
        ok += a;
        resumed += b;
        failed += c;
    }
    if failed as f64 > ok as f64 * 0.01 {
        return Err(format!("handshakes: {failed} failed, {ok} ok").into());
    }
    Ok(vec![
        ("conns_per_s", ok as f64 / start.elapsed().as_secs_f64()),
        ("resumed_pct", 100.0 * resumed as f64 / ok.max(1) as f64),
    ])
}

pub type Ws = WebSocketStream<Stream>;

/// A WebSocket on one stream of an HTTP/2 connection (RFC 8441).
pub type H2Ws = WebSocketStream<H2Stream>;

/// An HTTP/2 connection to the target for WebSockets.
pub type H2Conn = h2::client::SendRequest<Bytes>;

/// Streams per HTTP/2 connection in the idle measure (nbgate allows 256).
const STREAMS_PER_CONN: usize = 100;

fn ws_config() -> WebSocketConfig {
    WebSocketConfig {
        max_message_size: Some(1 << 30),
        max_frame_size: Some(1 << 30),
        ..WebSocketConfig::default()
    }
}

/// Opens a WebSocket through the target, as a browser would (same-origin
/// `Origin`, the auth headers).
pub async fn ws_connect(target: &Target, path: &str) -> Result<Ws, BoxError> {
    let s = target.connect(Alpn::H1).await?;
    let mut req =
        format!("{}://{}{path}", target.ws_scheme(), target.authority).into_client_request()?;
    req.headers_mut().extend(target.auth.clone());
    req.headers_mut()
        .insert("origin", HeaderValue::from_str(&target.origin())?);
    let (ws, _) = tokio_tungstenite::client_async_with_config(req, s, Some(ws_config())).await?;
    Ok(ws)
}

/// An HTTP/2 connection on which the target has advertised extended
/// CONNECT (SETTINGS_ENABLE_CONNECT_PROTOCOL), as a browser tab's.
pub async fn h2_ws_connection(target: &Target) -> Result<H2Conn, BoxError> {
    let s = target.connect(Alpn::H2).await?;
    let (send, conn) = h2::client::handshake(s).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let send = send.ready().await?;
    // The server's SETTINGS come with its first frames.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !send.is_extended_connect_protocol_enabled() {
        if Instant::now() > deadline {
            return Err(NO_RFC8441.into());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(send)
}

/// The error of a contender that does not offer WebSockets over HTTP/2.
pub const NO_RFC8441: &str =
    "no SETTINGS_ENABLE_CONNECT_PROTOCOL: no WebSockets over HTTP/2 (RFC 8441)";

/// Opens a WebSocket as one more stream of `conn` (extended CONNECT,
/// RFC 8441), as a browser does when the page came over HTTP/2.
pub async fn ws_connect_h2(
    conn: &mut H2Conn,
    target: &Target,
    path: &str,
) -> Result<H2Ws, BoxError> {
    let mut req = Request::builder()
        .method(http::Method::CONNECT)
        .uri(target.url(path))
        .extension(h2::ext::Protocol::from("websocket"))
        .header("sec-websocket-version", "13")
        .header("origin", target.origin())
        .body(())?;
    req.headers_mut().extend(target.auth.clone());
    *conn = conn.clone().ready().await?;
    let (resp, send) = conn.send_request(req, false)?;
    let resp = resp.await?;
    if resp.status() != 200 {
        return Err(format!("extended CONNECT {path}: status {}", resp.status()).into());
    }
    let stream = H2Stream::new(send, resp.into_body());
    Ok(WebSocketStream::from_raw_socket(stream, Role::Client, Some(ws_config())).await)
}

async fn next_data<S>(ws: &mut WebSocketStream<S>) -> Result<usize, BoxError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    loop {
        match ws.next().await {
            Some(Ok(Message::Binary(b))) => return Ok(b.len()),
            Some(Ok(Message::Text(t))) => return Ok(t.len()),
            Some(Ok(Message::Close(_))) | None => return Err("websocket closed".into()),
            Some(Ok(_)) => continue,
            Some(Err(e)) => return Err(e.into()),
        }
    }
}

/// A kernel channel's path, for the WebSocket measures: with code audit
/// on (`nbgate-audit`), nbgate reads every frame sent on it.
pub const KERNEL_WS: &str = "/api/kernels/00000000-0000-4000-8000-000000000000/channels";

/// How a measure's WebSockets reach the contender.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Via {
    /// An upgraded HTTP/1.1 connection each.
    Http1,
    /// Streams of HTTP/2 connections (RFC 8441).
    Http2,
}

/// Measures 4a and 4d: echo round trips of 100-byte messages on one
/// WebSocket.
pub async fn ws_rtt(target: &Target, via: Via, dur: Duration) -> Result<Figures, BoxError> {
    match via {
        Via::Http1 => echo_round_trips(ws_connect(target, KERNEL_WS).await?, dur).await,
        Via::Http2 => {
            let mut conn = h2_ws_connection(target).await?;
            echo_round_trips(ws_connect_h2(&mut conn, target, KERNEL_WS).await?, dur).await
        }
    }
}

/// 100-byte echo round trips on `ws` for `dur`, one in flight.
async fn echo_round_trips<S>(mut ws: WebSocketStream<S>, dur: Duration) -> Result<Figures, BoxError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let msg = vec![7u8; 100];
    let deadline = Instant::now() + dur;
    let mut lat = Vec::with_capacity(1 << 16);
    while Instant::now() < deadline {
        let t = Instant::now();
        ws.send(Message::Binary(msg.clone())).await?;
        next_data(&mut ws).await?;
        lat.push(t.elapsed().as_micros() as u32);
    }
    let _ = ws.close(None).await;
    let n = lat.len() as f64;
    let p = Percentiles::of(&mut lat);
    Ok(vec![
        ("p50_us", p.p50),
        ("p99_us", p.p99),
        ("round_trips_per_s", n / dur.as_secs_f64()),
    ])
}

/// Measure 4b: echo throughput of 64 KiB messages, 8 in flight.
pub async fn ws_throughput(target: &Target, dur: Duration) -> Result<Figures, BoxError> {
    const SIZE: usize = 64 * 1024;
    const WINDOW: usize = 8;
    let ws = ws_connect(target, KERNEL_WS).await?;
    let (mut tx, mut rx) = ws.split();
    let window = Arc::new(Semaphore::new(WINDOW));
    let start = Instant::now();
    let deadline = start + dur;
    let w = Arc::clone(&window);
    let sender = tokio::spawn(async move {
        let msg = vec![9u8; SIZE];
        while Instant::now() < deadline {
            let Ok(p) = w.acquire().await else { break };
            p.forget();
            if tx.send(Message::Binary(msg.clone())).await.is_err() {
                break;
            }
        }
        tx
    });
    let mut bytes = 0u64;
    while Instant::now() < deadline {
        match tokio::time::timeout_at(deadline.into(), rx.next()).await {
            Ok(Some(Ok(Message::Binary(b)))) => {
                bytes += b.len() as u64;
                window.add_permits(1);
            }
            Ok(Some(Ok(_))) => {}
            Ok(_) => return Err("websocket closed during throughput run".into()),
            Err(_) => break,
        }
    }
    let secs = start.elapsed().as_secs_f64();
    window.close();
    sender.abort();
    Ok(vec![("mb_per_s", bytes as f64 / secs / 1e6)])
}

/// Measure 4c: Jupyter `execute_request` -> `execute_reply` round trips on
/// a kernel's channels socket.
pub async fn kernel_rtt(target: &Target, kernel: &str, dur: Duration) -> Result<Figures, BoxError> {
    let mut ws = ws_connect(target, &format!("/api/kernels/{kernel}/channels")).await?;
    // The kernel refuses a message it has seen (same signature), so ids
    // are unique across calls, not only within one.
    let session = format!("bench-{:016x}", rand::random::<u64>());
    let deadline = Instant::now() + dur;
    let mut lat = Vec::new();
    let mut i = 0u64;
    while Instant::now() < deadline {
        i += 1;
        let msg_id = format!("{session}-{i}");
        let req = json!({
            "header": {"msg_id": msg_id, "msg_type": "execute_request", "session": session,
                       "username": "bench", "date": "2024-01-01T00:00:00.000000Z", "version": "5.3"},
            "parent_header": {}, "metadata": {}, "channel": "shell",
            "content": {"code": "1+1", "silent": false, "store_history": false,
                        "user_expressions": {}, "allow_stdin": false, "stop_on_error": true},
            "buffers": [],
        });
        let t = Instant::now();
        ws.send(Message::Text(req.to_string())).await?;
        loop {
            let m = tokio::time::timeout(Duration::from_secs(30), ws.next())
                .await?
                .ok_or("kernel socket closed")??;
            let Message::Text(text) = m else { continue };
            let v: Value = serde_json::from_str(&text)?;
            if v["msg_type"] == "execute_reply" && v["parent_header"]["msg_id"] == msg_id.as_str() {
                break;
            }
        }
        lat.push(t.elapsed().as_micros() as u32);
    }
    let _ = ws.close(None).await;
    let p = Percentiles::of(&mut lat);
    Ok(vec![("p50_ms", p.p50 / 1000.0), ("p99_ms", p.p99 / 1000.0)])
}

/// `POST /api/kernels` through the target; returns the kernel id.
pub async fn start_kernel(target: &Target) -> Result<String, BoxError> {
    let req = net::request(target, "POST", "/api/kernels")
        .header("content-type", "application/json")
        .header("origin", target.origin())
        .body(Full::new(Bytes::from_static(b"{\"name\":\"python3\"}")))?;
    let (status, _, body) = net::one_shot(target, req).await?;
    if status != 201 {
        return Err(format!(
            "POST /api/kernels: {status} {}",
            String::from_utf8_lossy(&body)
        )
        .into());
    }
    let v: Value = serde_json::from_slice(&body)?;
    Ok(v["id"].as_str().ok_or("kernel without id")?.to_owned())
}

/// Measure 5a: one download of `size` bytes over HTTP/1.1.
pub async fn download(
    target: &Target,
    size: u64,
    proc: Option<&Proc>,
) -> Result<Figures, BoxError> {
    let mut sender = net::h1_connect::<Empty<Bytes>>(target).await?;
    let req = net::request(target, "GET", &format!("/bytes?n={size}")).body(Empty::new())?;
    let start = Instant::now();
    let resp = sender.send_request(req).await?;
    if resp.status() != 200 {
        return Err(format!("download: status {}", resp.status()).into());
    }
    let mut body = resp.into_body();
    let mut got = 0u64;
    while let Some(f) = body.frame().await {
        got += f?.data_ref().map_or(0, |d| d.len() as u64);
    }
    let secs = start.elapsed().as_secs_f64();
    if got != size {
        return Err(format!("download: got {got} of {size} bytes").into());
    }
    let mut out = vec![("mb_per_s", size as f64 / secs / 1e6)];
    if let Some(p) = proc {
        out.push(("peak_rss_mib", p.peak_rss_kib() as f64 / 1024.0));
    }
    Ok(out)
}

/// Measure 5b: one upload of `size` bytes over HTTP/1.1.
pub async fn upload(target: &Target, size: u64, proc: Option<&Proc>) -> Result<Figures, BoxError> {
    let mut sender = net::h1_connect::<Repeat>(target).await?;
    let body = Repeat {
        left: size,
        chunk: Bytes::from(vec![b'u'; 64 * 1024]),
    };
    let req = net::request(target, "POST", "/upload")
        .header("content-length", size)
        .header("content-type", "application/octet-stream")
        .header("origin", target.origin())
        .body(body)?;
    let start = Instant::now();
    let resp = sender.send_request(req).await?;
    let status = resp.status();
    let text = resp.into_body().collect().await?.to_bytes();
    let secs = start.elapsed().as_secs_f64();
    if status != 200 || text != size.to_string().as_bytes() {
        return Err(format!("upload: {status} {}", String::from_utf8_lossy(&text)).into());
    }
    let mut out = vec![("mb_per_s", size as f64 / secs / 1e6)];
    if let Some(p) = proc {
        out.push(("peak_rss_mib", p.peak_rss_kib() as f64 / 1024.0));
    }
    Ok(out)
}

/// Measures 6 and 6b: `n` idle WebSocket tunnels; the memory they cost the
/// process that holds them.
pub async fn idle(target: &Target, via: Via, n: usize, holder: &Proc) -> Result<Figures, BoxError> {
    match via {
        Via::Http1 => idle_h1(target, n, holder).await,
        Via::Http2 => idle_h2(target, n, holder).await,
    }
}

/// Measure 6: each tunnel a TLS connection of its own.
async fn idle_h1(target: &Target, n: usize, holder: &Proc) -> Result<Figures, BoxError> {
    let target = target.clone();
    idle_tunnels(n, holder, move |_| {
        let target = target.clone();
        async move {
            let mut ws = ws_connect(&target, "/ws").await?;
            ws.send(Message::Binary(vec![1; 16])).await?;
            next_data(&mut ws).await?;
            Ok(ws)
        }
    })
    .await
}

/// Measure 6b: each tunnel a stream of an HTTP/2 connection carrying
/// `STREAMS_PER_CONN` of them. The connections are opened before the count
/// starts, as a browser's page connection exists before its WebSockets: the
/// figure is what one more WebSocket costs.
async fn idle_h2(target: &Target, n: usize, holder: &Proc) -> Result<Figures, BoxError> {
    let mut conns = Vec::new();
    for _ in 0..n.div_ceil(STREAMS_PER_CONN).max(1) {
        conns.push(h2_ws_connection(target).await?);
    }
    let conns = Arc::new(conns);
    let target = target.clone();
    idle_tunnels(n, holder, move |i| {
        let target = target.clone();
        let mut conn = conns[i % conns.len()].clone();
        async move {
            let mut ws = ws_connect_h2(&mut conn, &target, "/ws").await?;
            ws.send(Message::Binary(vec![1; 16])).await?;
            next_data(&mut ws).await?;
            Ok(ws)
        }
    })
    .await
}

/// Opens `n` tunnels with `connect` (given each tunnel's index), 64 at a
/// time, each having echoed one message; the RSS growth of `holder` per
/// tunnel.
async fn idle_tunnels<F, Fut, W>(n: usize, holder: &Proc, connect: F) -> Result<Figures, BoxError>
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = Result<W, BoxError>> + Send + 'static,
    W: Send + 'static,
{
    // A few tunnels first, so one-time allocations are not counted.
    let mut warm = Vec::new();
    for i in 0..8 {
        warm.push(connect(n + i).await?);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = holder.rss_kib();
    let gate = Arc::new(Semaphore::new(64));
    let start = Instant::now();
    let mut tasks = Vec::with_capacity(n);
    for i in 0..n {
        let gate = Arc::clone(&gate);
        let tunnel = connect(i);
        tasks.push(tokio::spawn(async move {
            let _p = gate.acquire().await.expect("never closed");
            tunnel.await
        }));
    }
    let mut open = Vec::with_capacity(n);
    let mut failed = 0usize;
    let mut first_err = None;
    for t in tasks {
        match t.await? {
            Ok(ws) => open.push(ws),
            Err(e) => {
                failed += 1;
                first_err.get_or_insert(e.to_string());
            }
        }
    }
    let setup = start.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = holder.rss_kib();
    let opened = open.len();
    drop(open);
    drop(warm);
    if opened < n * 9 / 10 {
        return Err(format!(
            "idle: only {opened} of {n} tunnels opened ({failed} failed: {first_err:?})"
        )
        .into());
    }
    Ok(vec![
        ("tunnels", opened as f64),
        (
            "kib_per_tunnel",
            after.saturating_sub(before) as f64 / opened as f64,
        ),
        ("rss_mib", after as f64 / 1024.0),
        ("opened_per_s", opened as f64 / setup),
    ])
}

/// Measure 7: a logged-in user's request latency (10 connections, 50
/// requests/s each), optionally while `flood` connections send wrong-password
/// logins as fast as they are answered.
pub async fn isolation(target: &Target, flood: usize, dur: Duration) -> Result<Figures, BoxError> {
    let start = Instant::now();
    let deadline = start + dur;
    let mut users = Vec::new();
    for _ in 0..10 {
        let target = target.clone();
        users.push(tokio::spawn(async move {
            let mut sender = net::h1_connect::<Empty<Bytes>>(&target).await?;
            let mut tick = tokio::time::interval(Duration::from_millis(20));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut lat = Vec::new();
            while Instant::now() < deadline {
                tick.tick().await;
                let req = net::request(&target, "GET", "/1k").body(Empty::new())?;
                let t = Instant::now();
                let resp = sender.send_request(req).await?;
                let ok = resp.status() == 200;
                resp.into_body().collect().await?;
                if !ok {
                    return Err::<Vec<u32>, BoxError>("user request refused".into());
                }
                lat.push(t.elapsed().as_micros() as u32);
            }
            Ok(lat)
        }));
    }
    let attempts = Arc::new(AtomicU64::new(0));
    let refused_busy = Arc::new(AtomicU64::new(0));
    let mut flooders = Vec::new();
    if flood > 0 {
        let anon = target.with_auth(http::HeaderMap::new());
        let form = Arc::new(net::login_form(&anon).await?);
        for _ in 0..flood {
            let anon = anon.clone();
            let form = Arc::clone(&form);
            let attempts = Arc::clone(&attempts);
            let busy = Arc::clone(&refused_busy);
            flooders.push(tokio::spawn(async move {
                while Instant::now() < deadline {
                    let Ok(mut sender) = net::h1_connect::<Full<Bytes>>(&anon).await else {
                        continue;
                    };
                    while Instant::now() < deadline {
                        let req = net::login_post(&anon, &form, "bench", "wrong-password");
                        let Ok(resp) = sender.send_request(req).await else {
                            break;
                        };
                        if resp.status() == 429 {
                            busy.fetch_add(1, Ordering::Relaxed);
                        }
                        let _ = resp.into_body().collect().await;
                        attempts.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }));
        }
    }
    let mut lat = Vec::new();
    for u in users {
        lat.extend(u.await??);
    }
    for f in flooders {
        let _ = f.await;
    }
    let secs = start.elapsed().as_secs_f64();
    let p = Percentiles::of(&mut lat);
    let a = attempts.load(Ordering::Relaxed) as f64;
    Ok(vec![
        ("p50_ms", p.p50 / 1000.0),
        ("p99_ms", p.p99 / 1000.0),
        ("p999_ms", p.p999 / 1000.0),
        ("flood_attempts_per_s", a / secs),
        (
            "flood_refused_busy_pct",
            100.0 * refused_busy.load(Ordering::Relaxed) as f64 / a.max(1.0),
        ),
    ])
}
