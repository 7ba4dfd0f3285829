//! WebSockets over HTTP/2 (RFC 8441) as a browser opens them through nbgate: one HTTP/2
//! connection on which nbgate has advertised SETTINGS_ENABLE_CONNECT_PROTOCOL, then an extended
//! CONNECT with `:protocol = websocket` per WebSocket, each a stream of that connection. The
//! stream is nbgate's own `H2Stream`, the byte stream its server side runs on too.

use std::time::Duration;

use bytes::Bytes;
use nbgate::server::h2_stream::H2Stream;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::WebSocketStream;

use super::nbgate::{Nbgate, TEST_API_TOKEN};
use super::within;

const T: Duration = Duration::from_secs(30);

/// A WebSocket on one stream of an HTTP/2 connection to nbgate.
pub type H2Ws = WebSocketStream<H2Stream>;

/// The headers of an API client on a same-origin page: nbgate's API token and the `Origin`
/// a browser would send.
pub struct ApiClient {
    token: String,
    origin: String,
}

impl ApiClient {
    pub fn of(gate: &Nbgate) -> Self {
        ApiClient {
            token: format!("token {TEST_API_TOKEN}"),
            origin: gate.origin(),
        }
    }

    pub fn headers(&self) -> [(&str, &str); 2] {
        [("authorization", &self.token), ("origin", &self.origin)]
    }
}

/// An HTTP/2 connection to nbgate on which nbgate has advertised extended CONNECT.
pub async fn h2_connection(gate: &Nbgate) -> h2::client::SendRequest<Bytes> {
    let tls = gate.tls_connect_alpn(&[b"h2"]).await;
    let (send, conn) = within(T, "h2 handshake", h2::client::handshake(tls))
        .await
        .expect("h2 handshake");
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let send = within(T, "h2 ready", send.ready()).await.expect("h2 ready");
    // The server's SETTINGS arrive with its first frames: poll until they have been read.
    within(T, "SETTINGS_ENABLE_CONNECT_PROTOCOL", async {
        while !send.is_extended_connect_protocol_enabled() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    within(T, "h2 ready", send.ready()).await.expect("h2 ready")
}

/// Sends a CONNECT for `path` on `conn` with `protocol` as `:protocol` (none: a plain CONNECT
/// to `localhost:PORT`) and `headers` (no credentials are added); nbgate's answer, and the
/// stream when it is a 200.
pub async fn h2_connect(
    conn: &mut h2::client::SendRequest<Bytes>,
    gate: &Nbgate,
    path: &str,
    protocol: Option<&str>,
    headers: &[(&str, &str)],
) -> (http::response::Parts, Option<H2Stream>) {
    let mut request = http::Request::builder().method(http::Method::CONNECT);
    request = match protocol {
        Some(p) => request
            .uri(gate.url(path))
            .extension(h2::ext::Protocol::from(p))
            .header("sec-websocket-version", "13"),
        None => request.uri(format!("localhost:{}", gate.https_addr().port())),
    };
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let request = request.body(()).expect("request");
    let ready = within(T, "h2 stream slot", conn.clone().ready())
        .await
        .expect("h2 ready");
    *conn = ready;
    let (response, send) = conn.send_request(request, false).expect("send CONNECT");
    let response = within(T, "answer to the CONNECT", response)
        .await
        .expect("answer to the CONNECT");
    let (parts, recv) = response.into_parts();
    let stream = (parts.status == 200).then(|| H2Stream::new(send, recv));
    (parts, stream)
}

/// Opens a WebSocket to `path` over HTTP/2 with `headers` (no credentials are added); nbgate's
/// answer, and the stream when it is a 200.
pub async fn h2_websocket(
    conn: &mut h2::client::SendRequest<Bytes>,
    gate: &Nbgate,
    path: &str,
    headers: &[(&str, &str)],
) -> (http::response::Parts, Option<H2Stream>) {
    h2_connect(conn, gate, path, Some("websocket"), headers).await
}

/// `h2_websocket` that must succeed: the WebSocket, ready for messages.
pub async fn h2_ws(
    conn: &mut h2::client::SendRequest<Bytes>,
    gate: &Nbgate,
    path: &str,
    headers: &[(&str, &str)],
) -> H2Ws {
    let (head, stream) = h2_websocket(conn, gate, path, headers).await;
    let stream = stream.unwrap_or_else(|| panic!("WebSocket {path} over HTTP/2 refused: {head:?}"));
    WebSocketStream::from_raw_socket(stream, Role::Client, None).await
}
