//! A small in-process HTTP/1.1 upstream for edge cases Jupyter cannot show cheaply. Routes:
//!
//! - `/redirect`: 302 with an absolute `Location: http://127.0.0.1:PORT/x` (its own origin).
//! - `/response-hop`: 200 carrying hop-by-hop response headers (`Connection: x-resp-hop`,
//!   `X-Resp-Hop`, `Keep-Alive`, `Proxy-Authenticate`) and `Server: TestUpstream/1.2.3`.
//! - `/stream?bytes=N&chunk=C&delay_ms=D`: N bytes of [`PatternBytes`] (seed 7) in chunks of C
//!   with D ms between chunks, with a `Content-Length`.
//! - `/sink`: reads the whole request body as it arrives; answers JSON `{"bytes", "sha256"}`.
//! - `/ws-echo`: a WebSocket whose first message is the handshake's request as JSON (see
//!   below), then echoes every message.
//! - `/html?bytes=N&chunk=C&every=E&length=1&gzip=1`: a `text/html` page of N bytes that
//!   carries the token of the request's `Authorization: token …` every E bytes (as Jupyter
//!   puts its token in its pages), in frames of C bytes (so tokens straddle frames); chunked
//!   unless `length=1`; `Content-Encoding: gzip` claimed with `gzip=1`. See [`html_page`].
//! - anything else: JSON `{"method", "uri", "version", "headers": [[name, value], ...],
//!   "body_bytes"}` describing the request as received.
//!
//! Every accepted connection is counted, and so is every one still open, so tests can see
//! whether nbgate reached upstream and how it keeps its connections.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http_body_util::{combinators::BoxBody, BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use super::PatternBytes;

type Body = BoxBody<Bytes, Infallible>;

/// A running in-process upstream; stops accepting on drop.
pub struct TestUpstream {
    addr: SocketAddr,
    connections: Arc<AtomicUsize>,
    open: Arc<AtomicUsize>,
    accept_loop: tokio::task::JoinHandle<()>,
}

impl TestUpstream {
    /// Binds `127.0.0.1:0` and serves the routes above on the current tokio runtime.
    pub async fn start() -> TestUpstream {
        Self::start_with(None).await
    }

    /// Like [`TestUpstream::start`], but closes a keep-alive connection that stays idle
    /// for `idle_close` (as Jupyter's Tornado does after its idle timeout).
    pub async fn start_closing_idle(idle_close: Duration) -> TestUpstream {
        Self::start_with(Some(idle_close)).await
    }

    async fn start_with(idle_close: Option<Duration>) -> TestUpstream {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind test upstream");
        let addr = listener.local_addr().expect("local addr");
        let connections = Arc::new(AtomicUsize::new(0));
        let open = Arc::new(AtomicUsize::new(0));
        let counter = connections.clone();
        let open_counter = open.clone();
        let accept_loop = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                counter.fetch_add(1, Ordering::SeqCst);
                open_counter.fetch_add(1, Ordering::SeqCst);
                let open_counter = open_counter.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| route(req, addr));
                    let mut builder = hyper::server::conn::http1::Builder::new();
                    if let Some(idle) = idle_close {
                        builder
                            .timer(hyper_util::rt::TokioTimer::new())
                            .header_read_timeout(idle);
                    }
                    let _ = builder
                        .serve_connection(TokioIo::new(stream), service)
                        .with_upgrades()
                        .await;
                    open_counter.fetch_sub(1, Ordering::SeqCst);
                });
            }
        });
        TestUpstream {
            addr,
            connections,
            open,
            accept_loop,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`, for `upstream.url`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// How many TCP connections nbgate opened to this upstream.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    /// How many of them are still open (served until the peer closes).
    pub fn open_connections(&self) -> usize {
        self.open.load(Ordering::SeqCst)
    }
}

impl Drop for TestUpstream {
    fn drop(&mut self) {
        self.accept_loop.abort();
    }
}

fn full(body: impl Into<Bytes>) -> Body {
    Full::new(body.into()).boxed()
}

fn json_response(status: StatusCode, value: &Value) -> Response<Body> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(full(value.to_string()))
        .expect("response")
}

/// The request line and headers as JSON (header values lossily decoded).
fn describe<B>(req: &Request<B>) -> Value {
    let headers: Vec<Value> = req
        .headers()
        .iter()
        .map(|(k, v)| json!([k.as_str(), String::from_utf8_lossy(v.as_bytes())]))
        .collect();
    json!({
        "method": req.method().as_str(),
        "uri": req.uri().to_string(),
        "version": format!("{:?}", req.version()),
        "headers": headers,
    })
}

fn query_param(req: &Request<Incoming>, name: &str) -> Option<u64> {
    req.uri().query()?.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        (k == name).then(|| v.parse().ok())?
    })
}

async fn route(req: Request<Incoming>, own: SocketAddr) -> Result<Response<Body>, Infallible> {
    let response = match req.uri().path() {
        "/redirect" => Response::builder()
            .status(StatusCode::FOUND)
            .header("location", format!("http://{own}/x"))
            .body(full("moved"))
            .expect("response"),
        "/response-hop" => Response::builder()
            .header("connection", "x-resp-hop")
            .header("x-resp-hop", "1")
            .header("keep-alive", "timeout=5")
            .header("proxy-authenticate", "Basic realm=\"upstream\"")
            .header("server", "TestUpstream/1.2.3")
            .body(full("ok"))
            .expect("response"),
        "/stream" => stream_response(&req),
        "/sink" => sink(req).await,
        "/ws-echo" => ws_echo(req),
        "/html" => html_response(&req),
        _ => {
            let mut description = describe(&req);
            let mut body = req.into_body();
            let mut body_bytes = 0usize;
            while let Some(Ok(frame)) = body.frame().await {
                body_bytes += frame.data_ref().map_or(0, Bytes::len);
            }
            description["body_bytes"] = json!(body_bytes);
            json_response(StatusCode::OK, &description)
        }
    };
    Ok(response)
}

fn stream_response(req: &Request<Incoming>) -> Response<Body> {
    let total = query_param(req, "bytes").unwrap_or(1 << 20);
    let chunk = query_param(req, "chunk").unwrap_or(64 * 1024).max(1);
    let delay = Duration::from_millis(query_param(req, "delay_ms").unwrap_or(0));
    let state = (PatternBytes::new(7), total, true);
    let frames =
        futures_util::stream::unfold(state, move |(mut pattern, left, first)| async move {
            if left == 0 {
                return None;
            }
            if !first && !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            let n = left.min(chunk);
            let mut buf = vec![0u8; n as usize];
            pattern.fill(&mut buf);
            Some((
                Ok::<_, Infallible>(Frame::data(Bytes::from(buf))),
                (pattern, left - n, false),
            ))
        });
    Response::builder()
        .header("content-type", "application/octet-stream")
        .header("content-length", total)
        .body(BodyExt::boxed(StreamBody::new(frames)))
        .expect("response")
}

/// The page `/html` serves for `token`: filler (`<p>` and a counter) with the token
/// at every multiple of `every`, cut to `bytes`.
pub fn html_page(token: &str, bytes: usize, every: usize) -> Vec<u8> {
    let mut page = Vec::with_capacity(bytes + token.len());
    let mut n = 0u64;
    let mut next_token = every;
    while page.len() < bytes {
        if every > 0 && page.len() >= next_token {
            page.extend_from_slice(token.as_bytes());
            next_token += every;
        }
        page.extend_from_slice(format!("<p>{n:011}</p>").as_bytes());
        n += 1;
    }
    page.truncate(bytes);
    page
}

fn html_response(req: &Request<Incoming>) -> Response<Body> {
    let token = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("token "))
        .unwrap_or_default()
        .to_owned();
    let bytes = query_param(req, "bytes").unwrap_or(100_000) as usize;
    let chunk = query_param(req, "chunk").unwrap_or(1000).max(1) as usize;
    let every = query_param(req, "every").unwrap_or(10_000) as usize;
    let page = Bytes::from(html_page(&token, bytes, every));
    let frames: Vec<Result<Frame<Bytes>, Infallible>> = (0..page.len())
        .step_by(chunk)
        .map(|at| Ok(Frame::data(page.slice(at..(at + chunk).min(page.len())))))
        .collect();
    let mut builder = Response::builder().header("content-type", "text/html; charset=UTF-8");
    if query_param(req, "length") == Some(1) {
        builder = builder.header("content-length", page.len());
    }
    if query_param(req, "gzip") == Some(1) {
        builder = builder.header("content-encoding", "gzip");
    }
    builder
        .body(BodyExt::boxed(StreamBody::new(futures_util::stream::iter(
            frames,
        ))))
        .expect("response")
}

async fn sink(req: Request<Incoming>) -> Response<Body> {
    let mut body = req.into_body();
    let mut hasher = ring::digest::Context::new(&ring::digest::SHA256);
    let mut bytes = 0u64;
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(frame) => {
                if let Some(data) = frame.data_ref() {
                    hasher.update(data);
                    bytes += data.len() as u64;
                }
            }
            Err(e) => {
                return json_response(
                    StatusCode::BAD_REQUEST,
                    &json!({"error": e.to_string(), "bytes": bytes}),
                )
            }
        }
    }
    json_response(
        StatusCode::OK,
        &json!({"bytes": bytes, "sha256": hex::encode(hasher.finish())}),
    )
}

/// RFC 6455 §4.2.2 server handshake by hand (as hyper's `upgrades.rs` example does), then an
/// echo loop whose first message describes the handshake request.
fn ws_echo(mut req: Request<Incoming>) -> Response<Body> {
    let Some(key) = req.headers().get("sec-websocket-key").cloned() else {
        return json_response(
            StatusCode::BAD_REQUEST,
            &json!({"error": "not a WebSocket handshake", "request": describe(&req)}),
        );
    };
    let description = describe(&req);
    let upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        let Ok(upgraded) = upgrade.await else { return };
        let mut ws =
            WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await;
        if ws
            .send(Message::Text(description.to_string()))
            .await
            .is_err()
        {
            return;
        }
        while let Some(Ok(message)) = ws.next().await {
            let reply = match message {
                Message::Text(_) | Message::Binary(_) => message,
                Message::Close(_) => break,
                _ => continue,
            };
            if ws.send(reply).await.is_err() {
                break;
            }
        }
    });
    let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header("connection", "upgrade")
        .header("upgrade", "websocket")
        .header("sec-websocket-accept", accept)
        .body(full(Bytes::new()))
        .expect("response")
}

/// The value of header `name` (lowercase) in an echo description, if present exactly once.
pub fn echoed_header(description: &Value, name: &str) -> Option<String> {
    let values = echoed_headers(description, name);
    assert!(
        values.len() <= 1,
        "header {name} arrived upstream {} times: {values:?}",
        values.len()
    );
    values.into_iter().next()
}

/// Every value of header `name` (lowercase) in an echo description.
pub fn echoed_headers(description: &Value, name: &str) -> Vec<String> {
    description["headers"]
        .as_array()
        .expect("headers array")
        .iter()
        .filter(|pair| pair[0] == name)
        .map(|pair| pair[1].as_str().unwrap_or_default().to_string())
        .collect()
}

/// A raw upstream that keeps every byte nbgate sends it, for the hostile-input battery
/// (tests/hostile.rs): no HTTP library sits between nbgate and the record, so a smuggled or
/// malformed request shows up exactly as written. It answers each complete request (framed by
/// `Content-Length` or chunked, as RFC 9112 §6 says) with a fixed valid response whose body
/// starts with [`RECORDED_MARK`], except for these paths:
///
/// - `/cut`: a `Content-Length: 20` body cut after 10 bytes; the rest, followed by a forged
///   second response (`EVIL!`), is sent only when the test calls [`RecordingUpstream::release`].
/// - `/overlong`: a 2-byte body followed at once, in the same write, by a forged response.
/// - `/late`: a complete response; a forged response follows on the idle connection when the
///   test calls `release`.
/// - a WebSocket handshake (`Upgrade: websocket`): 101 when `Sec-WebSocket-Version: 13` and a
///   24-character key, else 400 (as Tornado does); after a 101 the bytes are only recorded.
pub struct RecordingUpstream {
    addr: SocketAddr,
    conns: Arc<std::sync::Mutex<Vec<Arc<std::sync::Mutex<RecordedConn>>>>>,
    release: Arc<tokio::sync::Notify>,
    forged: Arc<AtomicUsize>,
    accept_loop: tokio::task::JoinHandle<()>,
}

/// The first bytes of every ordinary answer of a [`RecordingUpstream`].
pub const RECORDED_MARK: &str = "recorded-upstream-ok";

/// A forged response the hostile upstream routes send where no response was asked for.
pub const FORGED_RESPONSE: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nEVIL!";

/// What one upstream connection received.
#[derive(Debug, Default, Clone)]
pub struct RecordedConn {
    pub bytes: Vec<u8>,
    /// nbgate closed this connection.
    pub closed: bool,
}

/// One request parsed out of recorded bytes.
#[derive(Debug, Clone)]
pub struct RecordedRequest {
    pub method: String,
    pub target: String,
    pub headers: Vec<(String, Vec<u8>)>,
    pub body: Vec<u8>,
}

impl RecordedRequest {
    /// Every value of header `name` (case-insensitive), lossily decoded.
    pub fn header(&self, name: &str) -> Vec<String> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
            .collect()
    }
}

/// A request's end in a byte stream, or why it has none.
#[derive(Debug)]
pub enum Framed {
    Complete(usize, RecordedRequest),
    Partial,
    Invalid(String),
}

/// Parses one request from the front of `buf` strictly: CRLF head (httparse), then a body
/// delimited by `Transfer-Encoding: chunked` (exactly) or one `Content-Length`. A request
/// carrying both, several lengths, or another transfer coding is `Invalid`: nbgate must never
/// send one.
pub fn frame_request(buf: &[u8]) -> Framed {
    let mut headers = [httparse::EMPTY_HEADER; 128];
    let mut req = httparse::Request::new(&mut headers);
    let head_len = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Framed::Partial,
        Err(e) => return Framed::Invalid(format!("head: {e}")),
    };
    if buf[..head_len].windows(2).filter(|w| w == b"\r\n").count()
        != buf[..head_len].iter().filter(|&&b| b == b'\n').count()
    {
        return Framed::Invalid("bare LF in the head".into());
    }
    let fields: Vec<(String, Vec<u8>)> = req
        .headers
        .iter()
        .map(|h| (h.name.to_ascii_lowercase(), h.value.to_vec()))
        .collect();
    let mut recorded = RecordedRequest {
        method: req.method.unwrap_or_default().to_owned(),
        target: req.path.unwrap_or_default().to_owned(),
        headers: fields.clone(),
        body: Vec::new(),
    };
    let te: Vec<&Vec<u8>> = fields
        .iter()
        .filter(|(n, _)| n == "transfer-encoding")
        .map(|(_, v)| v)
        .collect();
    let cl: Vec<&Vec<u8>> = fields
        .iter()
        .filter(|(n, _)| n == "content-length")
        .map(|(_, v)| v)
        .collect();
    if !te.is_empty() && !cl.is_empty() {
        return Framed::Invalid("both Transfer-Encoding and Content-Length".into());
    }
    let rest = &buf[head_len..];
    if !te.is_empty() {
        if te.len() != 1 || te[0].as_slice() != b"chunked" {
            return Framed::Invalid(format!("transfer-encoding {te:?}"));
        }
        let mut pos = 0;
        loop {
            match httparse::parse_chunk_size(&rest[pos..]) {
                Ok(httparse::Status::Complete((used, size))) => {
                    pos += used;
                    if size == 0 {
                        // No trailers from nbgate: the empty line follows at once.
                        return match rest.get(pos..pos + 2) {
                            None | Some([b'\r']) => Framed::Partial,
                            Some(b"\r\n") => Framed::Complete(head_len + pos + 2, recorded),
                            Some(_) => Framed::Invalid("trailer section".into()),
                        };
                    }
                    let size = size as usize;
                    if rest.len() < pos + size + 2 {
                        return Framed::Partial;
                    }
                    recorded.body.extend_from_slice(&rest[pos..pos + size]);
                    if &rest[pos + size..pos + size + 2] != b"\r\n" {
                        return Framed::Invalid("chunk not followed by CRLF".into());
                    }
                    pos += size + 2;
                }
                Ok(httparse::Status::Partial) => return Framed::Partial,
                Err(_) => return Framed::Invalid("chunk size".into()),
            }
        }
    }
    let len = match cl.as_slice() {
        [] => 0,
        [v] => match std::str::from_utf8(v)
            .ok()
            .and_then(|s| s.parse::<usize>().ok())
        {
            Some(n) => n,
            None => return Framed::Invalid(format!("content-length {v:?}")),
        },
        _ => return Framed::Invalid("several Content-Length fields".into()),
    };
    if rest.len() < len {
        return Framed::Partial;
    }
    recorded.body = rest[..len].to_vec();
    Framed::Complete(head_len + len, recorded)
}

impl RecordingUpstream {
    pub async fn start() -> RecordingUpstream {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind recording upstream");
        let addr = listener.local_addr().expect("local addr");
        let conns: Arc<std::sync::Mutex<Vec<Arc<std::sync::Mutex<RecordedConn>>>>> = Arc::default();
        let release = Arc::new(tokio::sync::Notify::new());
        let forged = Arc::new(AtomicUsize::new(0));
        let (all, rel, sent) = (conns.clone(), release.clone(), forged.clone());
        let accept_loop = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let record = Arc::new(std::sync::Mutex::new(RecordedConn::default()));
                all.lock().expect("conns lock").push(record.clone());
                tokio::spawn(record_conn(stream, record, rel.clone(), sent.clone()));
            }
        });
        RecordingUpstream {
            addr,
            conns,
            release,
            forged,
            accept_loop,
        }
    }

    /// `http://127.0.0.1:PORT`, for `upstream.url`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Lets the `/cut` and `/late` routes send what they hold back.
    /// (One stored permit: a route that reaches its wait later still gets it.)
    pub fn release(&self) {
        self.release.notify_one();
    }

    /// How many held-back forged responses the routes have written so far.
    pub fn forged_sent(&self) -> usize {
        self.forged.load(Ordering::SeqCst)
    }

    /// How many connections nbgate opened so far.
    pub fn connections(&self) -> usize {
        self.conns.lock().expect("conns lock").len()
    }

    /// What every connection received since the last `take`, left in place.
    pub fn snapshot(&self) -> Vec<RecordedConn> {
        self.conns
            .lock()
            .expect("conns lock")
            .iter()
            .map(|c| c.lock().expect("conn lock").clone())
            .filter(|c| !c.bytes.is_empty())
            .collect()
    }

    /// Takes what every connection received since the last `take` (connections stay open).
    pub fn take(&self) -> Vec<RecordedConn> {
        self.conns
            .lock()
            .expect("conns lock")
            .iter()
            .map(|c| {
                let mut c = c.lock().expect("conn lock");
                RecordedConn {
                    bytes: std::mem::take(&mut c.bytes),
                    closed: c.closed,
                }
            })
            .filter(|c| !c.bytes.is_empty())
            .collect()
    }
}

impl Drop for RecordingUpstream {
    fn drop(&mut self) {
        self.accept_loop.abort();
    }
}

async fn record_conn(
    mut stream: tokio::net::TcpStream,
    record: Arc<std::sync::Mutex<RecordedConn>>,
    release: Arc<tokio::sync::Notify>,
    forged: Arc<AtomicUsize>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = Vec::new();
    let mut read = [0u8; 16 * 1024];
    let mut tunnel = false;
    loop {
        let n = match stream.read(&mut read).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        record
            .lock()
            .expect("conn lock")
            .bytes
            .extend_from_slice(&read[..n]);
        if tunnel {
            continue;
        }
        buf.extend_from_slice(&read[..n]);
        loop {
            let (used, req) = match frame_request(&buf) {
                Framed::Complete(used, req) => (used, req),
                Framed::Partial => break,
                Framed::Invalid(why) => {
                    let body = format!("recorded upstream refused: {why}");
                    let _ = stream
                        .write_all(
                            format!(
                                "HTTP/1.1 400 Bad Request\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                                body.len()
                            )
                            .as_bytes(),
                        )
                        .await;
                    record.lock().expect("conn lock").closed = true;
                    return;
                }
            };
            buf.drain(..used);
            let upgrade = req
                .header("upgrade")
                .iter()
                .any(|v| v.eq_ignore_ascii_case("websocket"));
            let sent = if upgrade {
                let key = req.header("sec-websocket-key");
                let good = req.header("sec-websocket-version") == ["13"]
                    && key.len() == 1
                    && key[0].len() == 24;
                if good {
                    tunnel = true;
                    let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(
                        key[0].as_bytes(),
                    );
                    stream
                        .write_all(
                            format!(
                                "HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: upgrade\r\nsec-websocket-accept: {accept}\r\n\r\n"
                            )
                            .as_bytes(),
                        )
                        .await
                } else {
                    stream
                        .write_all(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 17\r\n\r\nbad ws handshake\n")
                        .await
                }
            } else {
                match req.target.as_str() {
                    "/cut" => {
                        let r = stream
                            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 20\r\n\r\n0123456789")
                            .await;
                        release.notified().await;
                        let mut rest = b"0123456789".to_vec();
                        rest.extend_from_slice(FORGED_RESPONSE);
                        let _ = stream.write_all(&rest).await;
                        forged.fetch_add(1, Ordering::SeqCst);
                        r
                    }
                    "/overlong" => {
                        let mut all = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok".to_vec();
                        all.extend_from_slice(FORGED_RESPONSE);
                        stream.write_all(&all).await
                    }
                    "/late" => {
                        let r = stream
                            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\nlate")
                            .await;
                        release.notified().await;
                        let _ = stream.write_all(FORGED_RESPONSE).await;
                        forged.fetch_add(1, Ordering::SeqCst);
                        r
                    }
                    _ => {
                        let body = format!("{RECORDED_MARK} {} {}", req.method, req.target);
                        stream
                            .write_all(
                                format!(
                                    "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {}\r\n\r\n{body}",
                                    body.len()
                                )
                                .as_bytes(),
                            )
                            .await
                    }
                }
            };
            if sent.is_err() {
                break;
            }
        }
    }
    record.lock().expect("conn lock").closed = true;
}
