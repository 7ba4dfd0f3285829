//! Request and response forwarding: what Jupyter (or the in-process echo upstream) receives
//! through nbgate, and what the client gets back. All over HTTPS, trusting nbgate's certificate.

mod common;

use std::time::Duration;

use common::upstream::{echoed_header, echoed_headers};
use common::{within, Jupyter, Nbgate, TestUpstream};
use serde_json::Value;

const T: Duration = Duration::from_secs(30);

async fn gate_for_echo(upstream: &TestUpstream) -> Nbgate {
    Nbgate::builder().upstream(&upstream.url()).start().await
}

/// Sends `request`, returning the echo upstream's description of what arrived.
async fn echo(request: reqwest::RequestBuilder) -> Value {
    let response = within(T, "request through nbgate", request.send())
        .await
        .expect("request through nbgate");
    assert_eq!(response.status(), 200, "echo request failed: {response:?}");
    response.json().await.expect("echo JSON")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_and_status_are_served_by_jupyter_through_nbgate() {
    let jupyter = Jupyter::start().await;
    let gate = Nbgate::start_for(&jupyter).await;
    let client = gate.client();

    let api = within(T, "GET /api", client.get(gate.url("/api")).send())
        .await
        .expect("GET /api");
    assert_eq!(api.status(), 200);
    let api: Value = api.json().await.expect("/api JSON");
    assert!(api["version"].is_string(), "/api has no version: {api}");

    // /api/status needs the token: a 200 shows nbgate injected it.
    let status = within(
        T,
        "GET /api/status",
        client.get(gate.url("/api/status")).send(),
    )
    .await
    .expect("GET /api/status");
    assert_eq!(status.status(), 200);
    let status: Value = status.json().await.expect("/api/status JSON");
    assert!(status["started"].is_string(), "/api/status: {status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_is_the_upstream_authority_and_the_token_is_injected() {
    let upstream = TestUpstream::start().await;
    let gate = gate_for_echo(&upstream).await;
    let seen = echo(
        gate.client_http1()
            .get(gate.url("/some/path?a=1&b=%2F"))
            .header("x-custom", "kept"),
    )
    .await;

    assert_eq!(seen["method"], "GET");
    assert_eq!(seen["uri"], "/some/path?a=1&b=%2F");
    assert_eq!(
        echoed_header(&seen, "host").as_deref(),
        Some(upstream.addr().to_string().as_str())
    );
    assert_eq!(
        echoed_header(&seen, "authorization"),
        Some(format!("token {}", gate.upstream_token()))
    );
    assert_eq!(echoed_header(&seen, "x-custom").as_deref(), Some("kept"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_headers_are_set_by_nbgate_not_the_client() {
    let upstream = TestUpstream::start().await;
    let gate = gate_for_echo(&upstream).await;
    let seen = echo(
        gate.client_http1()
            .get(gate.url("/fwd"))
            .header("x-forwarded-for", "6.6.6.6")
            .header("x-forwarded-proto", "gopher")
            .header("x-forwarded-host", "evil.example")
            .header("forwarded", "for=6.6.6.6;proto=http;host=evil.example"),
    )
    .await;

    let host = format!("localhost:{}", gate.https_addr().port());
    assert_eq!(
        echoed_header(&seen, "x-forwarded-for").as_deref(),
        Some("127.0.0.1")
    );
    assert_eq!(
        echoed_header(&seen, "x-forwarded-proto").as_deref(),
        Some("https")
    );
    assert_eq!(
        echoed_header(&seen, "x-forwarded-host").as_deref(),
        Some(host.as_str())
    );
    let forwarded = echoed_header(&seen, "forwarded").expect("Forwarded header set");
    assert!(!forwarded.contains("6.6.6.6"), "{forwarded}");
    assert!(!forwarded.contains("evil.example"), "{forwarded}");
    assert!(forwarded.contains("for=127.0.0.1") || forwarded.contains("for=\"127.0.0.1"));
    assert!(forwarded.contains("proto=https"), "{forwarded}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hop_by_hop_request_headers_are_removed() {
    let upstream = TestUpstream::start().await;
    let gate = gate_for_echo(&upstream).await;
    // RFC 9110 §7.6.1: Connection and the headers it names are for one hop only.
    let seen = echo(
        gate.client_http1()
            .get(gate.url("/hop"))
            .header("connection", "keep-alive, x-custom-hop")
            .header("x-custom-hop", "secret")
            .header("keep-alive", "timeout=5")
            .header("te", "gzip")
            .header("upgrade", "foo/1")
            .header("proxy-authorization", "Basic dXNlcjpwYXNz")
            .header("proxy-connection", "keep-alive")
            .header("x-end-to-end", "kept"),
    )
    .await;

    for name in [
        "x-custom-hop",
        "keep-alive",
        "te",
        "upgrade",
        "proxy-authorization",
        "proxy-connection",
    ] {
        assert!(
            echoed_headers(&seen, name).is_empty(),
            "{name} reached upstream: {seen}"
        );
    }
    for connection in echoed_headers(&seen, "connection") {
        assert!(
            !connection.contains("x-custom-hop"),
            "client Connection forwarded: {connection}"
        );
    }
    assert_eq!(
        echoed_header(&seen, "x-end-to-end").as_deref(),
        Some("kept")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hop_by_hop_response_headers_are_removed() {
    let upstream = TestUpstream::start().await;
    let gate = gate_for_echo(&upstream).await;
    let response = within(
        T,
        "GET /response-hop",
        gate.client_http1().get(gate.url("/response-hop")).send(),
    )
    .await
    .expect("GET /response-hop");
    assert_eq!(response.status(), 200);
    let headers = response.headers();
    for name in ["x-resp-hop", "keep-alive", "proxy-authenticate"] {
        assert!(headers.get(name).is_none(), "{name} reached the client");
    }
    if let Some(connection) = headers.get("connection") {
        assert!(
            !connection
                .to_str()
                .unwrap_or_default()
                .contains("x-resp-hop"),
            "upstream Connection forwarded: {connection:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn xsrf_cookie_and_header_pass_untouched() {
    let upstream = TestUpstream::start().await;
    let gate = gate_for_echo(&upstream).await;
    let cookie = "_xsrf=2|abc|def|1700000000; other=1";
    let seen = echo(
        gate.client_http1()
            .get(gate.url("/xsrf"))
            .header("cookie", cookie)
            .header("x-xsrftoken", "2|abc|def|1700000000"),
    )
    .await;
    let cookies = echoed_headers(&seen, "cookie").join("; ");
    assert!(cookies.contains("_xsrf=2|abc|def|1700000000"), "{seen}");
    assert!(cookies.contains("other=1"), "{seen}");
    assert_eq!(
        echoed_header(&seen, "x-xsrftoken").as_deref(),
        Some("2|abc|def|1700000000")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn absolute_location_to_the_upstream_is_rewritten_to_nbgate() {
    let upstream = TestUpstream::start().await;
    let gate = gate_for_echo(&upstream).await;
    let response = within(
        T,
        "GET /redirect",
        gate.client().get(gate.url("/redirect")).send(),
    )
    .await
    .expect("GET /redirect");
    assert_eq!(response.status(), 302);
    assert_eq!(
        response.headers()["location"],
        format!("https://localhost:{}/x", gate.https_addr().port()).as_str()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn security_headers_are_on_forwarded_and_own_responses() {
    let upstream = TestUpstream::start().await;
    let gate = gate_for_echo(&upstream).await;
    let client = gate.client();
    let forwarded = within(
        T,
        "GET /response-hop",
        client.get(gate.url("/response-hop")).send(),
    )
    .await
    .expect("GET /response-hop");
    let refused = within(
        T,
        "cross-origin POST",
        client
            .post(gate.url("/x"))
            .header("origin", "https://evil.example")
            .send(),
    )
    .await
    .expect("cross-origin POST");
    assert_eq!(refused.status(), 403);

    for response in [&forwarded, &refused] {
        let headers = response.headers();
        assert_eq!(
            headers.get("x-content-type-options").map(|v| v.as_bytes()),
            Some(&b"nosniff"[..]),
            "{} {headers:?}",
            response.url()
        );
        assert!(headers.get("referrer-policy").is_some(), "{headers:?}");
        // Self-signed mode: no HSTS by default (a browser would pin a certificate it was told
        // to click through).
        assert!(
            headers.get("strict-transport-security").is_none(),
            "{headers:?}"
        );
        for server in headers.get_all("server") {
            let server = server.to_str().unwrap_or_default();
            assert!(
                !server.contains('/') && !server.chars().any(|c| c.is_ascii_digit()),
                "server header carries a version banner: {server:?}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jupyter_server_banner_is_not_passed_on() {
    let jupyter = Jupyter::start().await;
    let gate = Nbgate::start_for(&jupyter).await;
    let response = within(T, "GET /api", gate.client().get(gate.url("/api")).send())
        .await
        .expect("GET /api");
    assert_eq!(response.status(), 200);
    for server in response.headers().get_all("server") {
        let server = server.to_str().unwrap_or_default();
        assert!(
            !server.contains("Tornado") && !server.chars().any(|c| c.is_ascii_digit()),
            "server header carries a version banner: {server:?}"
        );
    }
    assert_eq!(response.headers()["x-content-type-options"], "nosniff");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cross_origin_unsafe_methods_are_refused_and_same_origin_is_rewritten() {
    let upstream = TestUpstream::start().await;
    let gate = gate_for_echo(&upstream).await;
    let client = gate.client();

    // Jupyter skips its own Origin/XSRF checks for token-authenticated requests, and nbgate
    // injects the token: nbgate must refuse a cross-site form post itself.
    for method in ["POST", "PUT", "PATCH", "DELETE"] {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        for origin in [
            "https://evil.example",
            "null",
            &format!("http://localhost:{}", gate.https_addr().port()),
            "https://localhost:1",
        ] {
            let response = within(
                T,
                "cross-origin request",
                client
                    .request(method.clone(), gate.url("/api/contents/x"))
                    .header("origin", origin)
                    .body("{}")
                    .send(),
            )
            .await
            .expect("cross-origin request");
            let status = response.status();
            let body = response.text().await.unwrap_or_default();
            assert_eq!(status, 403, "{method} with Origin {origin}: {body}");
            assert!(
                !body.contains("\"method\""),
                "{method} with Origin {origin} reached upstream: {body}"
            );
        }
    }

    let seen = echo(
        client
            .post(gate.url("/api/contents/x"))
            .header("origin", gate.origin())
            .body("0123456789"),
    )
    .await;
    assert_eq!(seen["method"], "POST");
    assert_eq!(seen["body_bytes"], 10);
    assert_eq!(
        echoed_header(&seen, "origin"),
        Some(upstream.url()),
        "a same-origin Origin is rewritten to the upstream origin"
    );

    // Safe methods are not Origin-checked, and a cross-site Origin reaches Jupyter as sent:
    // rewritten to Jupyter's own origin it would switch off Jupyter's remaining checks.
    let seen = echo(
        client
            .get(gate.url("/api/contents"))
            .header("origin", "https://evil.example"),
    )
    .await;
    assert_eq!(seen["method"], "GET");
    assert_eq!(
        echoed_header(&seen, "origin").as_deref(),
        Some("https://evil.example")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http10_upgrade_is_a_plain_request() {
    let upstream = TestUpstream::start().await;
    let gate = gate_for_echo(&upstream).await;
    let port = gate.https_addr().port();
    // RFC 9110 §7.8: Upgrade is ignored in HTTP/1.0; no 101, and no Upgrade upstream.
    let answer = gate
        .raw_https(&format!(
            "GET /ws-plain HTTP/1.0\r\nHost: localhost:{port}\r\nConnection: Upgrade\r\n\
             Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nOrigin: https://localhost:{port}\r\n\r\n"
        ))
        .await;
    let status = answer.split(' ').nth(1).unwrap_or_default();
    assert_eq!(status, "200", "{answer}");
    let body = answer.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    let seen: Value = serde_json::from_str(body).expect("echo JSON");
    assert_eq!(echoed_header(&seen, "upgrade"), None, "{seen}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_host_headers_are_refused() {
    let upstream = TestUpstream::start().await;
    let gate = gate_for_echo(&upstream).await;
    let port = gate.https_addr().port();
    // RFC 9112 §3.2: more than one Host is a 400, and nothing reaches upstream.
    let before = upstream.connections();
    let answer = gate
        .raw_https(&format!(
            "GET /two-hosts HTTP/1.1\r\nHost: localhost:{port}\r\nHost: evil.example\r\n\
             Connection: close\r\n\r\n"
        ))
        .await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert_eq!(upstream.connections(), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cross_origin_post_to_jupyter_is_refused() {
    let jupyter = Jupyter::start().await;
    let gate = Nbgate::start_for(&jupyter).await;
    let response = within(
        T,
        "cross-origin POST /api/kernels",
        gate.client()
            .post(gate.url("/api/kernels"))
            .header("origin", "http://evil.example.com")
            .json(&serde_json::json!({"name": "python3"}))
            .send(),
    )
    .await
    .expect("POST /api/kernels");
    assert_eq!(response.status(), 403);
    let kernels = within(
        T,
        "GET /api/kernels",
        gate.client().get(gate.url("/api/kernels")).send(),
    )
    .await
    .expect("GET /api/kernels");
    let kernels: Value = kernels.json().await.expect("kernels JSON");
    assert_eq!(
        kernels,
        serde_json::json!([]),
        "a kernel was started anyway"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_request_gets_one_access_log_event() {
    let upstream = TestUpstream::start().await;
    let gate = gate_for_echo(&upstream).await;
    let path = format!("/access-log-probe-{}", common::random_hex(6));
    let response = within(T, "GET probe", gate.client().get(gate.url(&path)).send())
        .await
        .expect("GET probe");
    assert_eq!(response.status(), 200);
    let body = response.bytes().await.expect("body");

    let line = gate
        .wait_for_line(&[&format!("path={path}")], Duration::from_secs(5))
        .await;
    for field in ["client=", "method=", "status=", "bytes=", "duration_ms="] {
        assert!(
            line.contains(field),
            "access log line lacks {field}: {line}"
        );
    }
    assert!(line.contains("method=GET"), "{line}");
    assert!(line.contains("status=200"), "{line}");
    assert!(line.contains("127.0.0.1"), "{line}");
    assert!(
        line.contains(&format!("bytes={}", body.len())),
        "bytes= should count the {} body bytes sent: {line}",
        body.len()
    );
    // Give a duplicate event a moment to show up, then count.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let events = gate
        .log_lines()
        .iter()
        .filter(|l| l.contains(&format!("path={path}")) && l.contains("status="))
        .count();
    assert_eq!(events, 1, "access log:\n{}", gate.log_text());
}

/// The `src` of the first `<script src="...">` in `html`.
fn first_script_src(html: &str) -> Option<String> {
    let start = html.find("<script")?;
    let rest = &html[start..];
    let src = rest.find("src=\"")? + 5;
    let end = rest[src..].find('"')?;
    Some(rest[src..src + end].replace("&amp;", "&"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jupyterlab_page_and_its_scripts_load_through_nbgate() {
    let jupyter = Jupyter::start_lab().await;
    let gate = Nbgate::start_for(&jupyter).await;
    let client = gate.client();
    let page = within(
        T,
        "GET /lab",
        client
            .get(gate.url("/lab"))
            .header("accept", "text/html")
            .send(),
    )
    .await
    .expect("GET /lab");
    assert_eq!(page.status(), 200);
    let html = page.text().await.expect("lab page");
    assert!(html.contains("jupyter-config-data"), "{html}");
    let script = first_script_src(&html).unwrap_or_else(|| panic!("no script in {html}"));
    assert!(script.starts_with('/'), "script URL {script}");
    let asset = within(T, "GET script", client.get(gate.url(&script)).send())
        .await
        .expect("GET script");
    assert_eq!(asset.status(), 200, "{script}");
    let content_type = asset.headers()["content-type"].to_str().unwrap_or_default();
    assert!(
        content_type.contains("javascript"),
        "{script}: {content_type}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jupyter_token_is_not_revealed_to_clients() {
    // nbgate injects the token so that browsers never hold it (config/nbgate.example.toml).
    // Jupyter echoes the token of a token-authenticated request into its HTML: JupyterLab's
    // page config (`"token": ...`) and every page.html (`data-jupyter-api-token`).
    let jupyter = Jupyter::start_lab().await;
    let gate = Nbgate::start_for(&jupyter).await;
    let client = gate.client();
    for path in [
        "/lab",
        "/lab/tree",
        "/no-such-page",
        "/api/no-such-endpoint",
    ] {
        let response = within(
            T,
            path,
            client
                .get(gate.url(path))
                .header("accept", "text/html")
                .send(),
        )
        .await
        .expect("GET through nbgate");
        let status = response.status();
        let body = response.text().await.expect("body");
        assert!(
            !body.contains(jupyter.token()),
            "GET {path} ({status}) hands Jupyter's token to the client"
        );
    }
}
