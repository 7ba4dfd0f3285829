//! Secrets that must never cross nbgate: Jupyter's token (in pages, whichever path answered
//! and however the page is framed), Jupyter's own login cookie, and nbgate's API token on its
//! way to Jupyter (`Referer`). Claims about Jupyter are proven against Jupyter; framing edge
//! cases against the in-process upstream, whose `/html` page carries the token nbgate injected.

mod common;

use std::time::Duration;

use common::login::{bare_client, login, session_cookie, ws_connect_with_cookie};
use common::nbgate::{TEST_API_TOKEN, TEST_PASSWORD};
use common::upstream::{echoed_header, html_page};
use common::{within, Jupyter, Nbgate, TestUpstream};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const T: Duration = Duration::from_secs(30);

/// A raw HTTP/1.1 answer: status, header lines (lower-cased names) and the de-chunked body.
struct Raw {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Raw {
    fn all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }
}

/// Sends `head` (complete, with `Connection: …, close`) on a fresh TLS connection, without the
/// test API token, and reads the answer until nbgate closes.
async fn raw(gate: &Nbgate, head: &str) -> Raw {
    let mut tls = gate.tls_connect().await;
    tls.write_all(head.as_bytes()).await.expect("write request");
    let mut bytes = Vec::new();
    within(T, "raw answer until close", tls.read_to_end(&mut bytes))
        .await
        .ok();
    let split = bytes
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("end of response head");
    let head = String::from_utf8_lossy(&bytes[..split]).into_owned();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .expect("status line");
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let mut body = bytes[split + 4..].to_vec();
    if headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.eq_ignore_ascii_case("chunked"))
    {
        body = dechunk(&body);
    }
    Raw {
        status,
        headers,
        body,
    }
}

fn dechunk(mut rest: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let Some(eol) = rest.windows(2).position(|w| w == b"\r\n") else {
            return out;
        };
        let size = std::str::from_utf8(&rest[..eol])
            .ok()
            .and_then(|s| usize::from_str_radix(s.split(';').next()?.trim(), 16).ok())
            .expect("chunk size");
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&rest[eol + 2..eol + 2 + size]);
        rest = &rest[eol + 4 + size..];
    }
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

/// A session cookie (`name=value`) for the test user.
async fn session(gate: &Nbgate) -> String {
    let client = bare_client(gate);
    let answer = within(T, "login", login(gate, &client, TEST_PASSWORD)).await;
    session_cookie(&answer)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lab_page_asked_for_with_upgrade_headers_carries_no_token() {
    let jupyter = Jupyter::start_lab().await;
    let gate = Nbgate::start_for(&jupyter).await;
    let cookie = session(&gate).await;
    let port = gate.https_addr().port();
    // Jupyter answers a page to a GET that asks for a WebSocket (200, not 101): that answer
    // came back through the WebSocket path unfiltered.
    let page = raw(
        &gate,
        &format!(
            "GET /lab HTTP/1.1\r\nHost: localhost:{port}\r\nCookie: {cookie}\r\n\
             Accept: text/html\r\nConnection: Upgrade, close\r\nUpgrade: websocket\r\n\
             Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
             Origin: https://localhost:{port}\r\n\r\n"
        ),
    )
    .await;
    assert_eq!(page.status, 200, "{:?}", page.headers);
    let text = String::from_utf8_lossy(&page.body);
    assert!(
        text.contains("jupyter-config-data"),
        "not Lab's page: {text:.300}"
    );
    assert!(
        !contains(&page.body, jupyter.token()),
        "Jupyter's token reached the client"
    );
    for c in page.all("set-cookie") {
        assert!(!c.starts_with("username-"), "Jupyter's login cookie: {c}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jupyter_login_cookie_never_reaches_the_browser() {
    let jupyter = Jupyter::start_lab().await;
    let gate = Nbgate::start_for(&jupyter).await;
    let common::jupyter::Endpoint::Tcp(addr) = jupyter.endpoint().clone() else {
        panic!("TCP Jupyter");
    };
    // The premise: Jupyter sets it on a token-authenticated request.
    let direct = reqwest::Client::new()
        .get(format!("http://{addr}/api/status"))
        .header("authorization", format!("token {}", jupyter.token()))
        .send()
        .await
        .expect("direct GET");
    let direct_cookies: Vec<_> = direct.headers().get_all("set-cookie").iter().collect();
    assert!(
        direct_cookies
            .iter()
            .any(|c| c.to_str().unwrap_or_default().starts_with("username-")),
        "Jupyter set no login cookie: {direct_cookies:?}"
    );

    let cookie = session(&gate).await;
    let port = gate.https_addr().port();
    for (what, extra) in [
        ("plain request", ""),
        (
            "WebSocket path",
            "Connection: Upgrade, close\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n",
        ),
    ] {
        let close = if extra.is_empty() {
            "Connection: close\r\n"
        } else {
            ""
        };
        let answer = raw(
            &gate,
            &format!(
                "GET /api/status HTTP/1.1\r\nHost: localhost:{port}\r\nCookie: {cookie}\r\n\
                 Origin: https://localhost:{port}\r\n{close}{extra}\r\n"
            ),
        )
        .await;
        assert_eq!(answer.status, 200, "{what}: {:?}", answer.headers);
        for c in answer.all("set-cookie") {
            assert!(!c.starts_with("username-"), "{what}: Jupyter's cookie {c}");
        }
    }

    // A real WebSocket (101) is filtered too.
    let (_ws, answer) = ws_connect_with_cookie(&gate, "/api/events/subscribe", &cookie)
        .await
        .expect("WebSocket through nbgate");
    for c in answer.headers().get_all("set-cookie") {
        let c = c.to_str().unwrap_or_default();
        assert!(!c.starts_with("username-"), "101: Jupyter's cookie {c}");
    }
}

/// What the echo upstream saw of `request`.
async fn echo(request: reqwest::RequestBuilder) -> serde_json::Value {
    let answer = within(T, "echo", request.send()).await.expect("echo");
    answer.json().await.expect("echo JSON")
}

/// `GET /html…` through nbgate over `client`, returning status, headers and body.
async fn fetch(
    client: &reqwest::Client,
    url: String,
) -> (u16, reqwest::header::HeaderMap, Vec<u8>) {
    let answer = within(T, "GET html", client.get(url).send())
        .await
        .expect("GET html");
    let status = answer.status().as_u16();
    let headers = answer.headers().clone();
    let body = within(T, "html body", answer.bytes())
        .await
        .expect("html body")
        .to_vec();
    (status, headers, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn html_is_scrubbed_whatever_its_framing_and_size() {
    let upstream = TestUpstream::start().await;
    let gate = Nbgate::builder().upstream(&upstream.url()).start().await;
    let token = gate.upstream_token().to_owned();
    // Chunked, with a length, bigger than any buffer nbgate had; frames of 1000 and 7 bytes
    // so that tokens straddle frame ends; over HTTP/1.1 and HTTP/2.
    for (query, bytes, every) in [
        ("bytes=200000&chunk=1000&every=9999", 200_000, 9999),
        ("bytes=200000&chunk=7&every=997&length=1", 200_000, 997),
        ("bytes=6000000&chunk=65536&every=65530", 6_000_000, 65530),
        (
            "bytes=6000000&chunk=65536&every=65530&length=1",
            6_000_000,
            65530,
        ),
    ] {
        let expected: Vec<u8> = {
            let page = html_page(&token, bytes, every);
            String::from_utf8(page)
                .expect("ascii")
                .replace(&token, "")
                .into_bytes()
        };
        for client in [gate.client_http1(), gate.client()] {
            let (status, headers, body) = fetch(&client, gate.url(&format!("/html?{query}"))).await;
            assert_eq!(status, 200, "{query}");
            assert!(
                !contains(&body, &token),
                "{query}: token reached the client"
            );
            assert_eq!(body.len(), expected.len(), "{query}");
            assert!(body == expected, "{query}: page changed beyond the token");
            if let Some(length) = headers.get("content-length") {
                assert_eq!(length.to_str().ok(), Some(body.len().to_string().as_str()));
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compressed_html_is_refused_and_compression_never_asked_for() {
    let upstream = TestUpstream::start().await;
    let gate = Nbgate::builder().upstream(&upstream.url()).start().await;
    // Jupyter ignored nbgate's request for an uncompressed answer: 502, not the page.
    let (status, _, body) = fetch(&gate.client(), gate.url("/html?bytes=5000&gzip=1")).await;
    assert_eq!(status, 502);
    assert!(!contains(&body, gate.upstream_token()));
    // An API call (not a page) asking for gzip: Jupyter is not asked to compress either.
    let seen = echo(
        gate.client_http1()
            .get(gate.url("/api/contents"))
            .header("accept", "application/json")
            .header("accept-encoding", "gzip, br"),
    )
    .await;
    assert_eq!(echoed_header(&seen, "accept-encoding"), None, "{seen}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_token_in_a_same_origin_referer_does_not_reach_jupyter() {
    let upstream = TestUpstream::start().await;
    let gate = Nbgate::builder().upstream(&upstream.url()).start().await;
    let seen = echo(
        gate.client_http1()
            .get(gate.url("/static/lab/main.js"))
            .header(
                "referer",
                gate.url(&format!("/lab?token={TEST_API_TOKEN}&reset")),
            ),
    )
    .await;
    let referer = echoed_header(&seen, "referer").expect("referer forwarded");
    assert!(!referer.contains(TEST_API_TOKEN), "{referer}");
    assert_eq!(referer, format!("http://{}/lab?reset", upstream.addr()));
}
