//! Login against a real Jupyter: nothing is reachable without a session or
//! API token; the form login gives a `__Host-` cookie that works for the API
//! and kernel WebSockets; cross-site requests are refused even with the
//! cookie; tampered cookies are refused; logout revokes the cookie and
//! closes the session's open tunnels.

mod common;

use std::time::Duration;

use common::nbgate::{TEST_PASSWORD, TEST_USER};
use common::{within, Jupyter, Nbgate};
use futures_util::StreamExt;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;

const T: Duration = Duration::from_secs(30);

/// A client with no credentials of its own (no API token).
fn bare_client(gate: &Nbgate) -> reqwest::Client {
    let cert = reqwest::Certificate::from_pem(gate.cert_pem()).expect("pem");
    reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(cert)
        .resolve("localhost", gate.https_addr())
        .redirect(reqwest::redirect::Policy::none())
        .timeout(T)
        .build()
        .expect("client")
}

fn set_cookies(r: &reqwest::Response) -> Vec<String> {
    r.headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().expect("ascii").to_owned())
        .collect()
}

fn cookie_pair(set_cookie: &str) -> String {
    set_cookie
        .split(';')
        .next()
        .expect("pair")
        .trim()
        .to_owned()
}

fn hidden(html: &str, name: &str) -> String {
    let marker = format!("name=\"{name}\" value=\"");
    let start = html.find(&marker).expect("hidden input") + marker.len();
    let end = html[start..].find('"').expect("end quote") + start;
    html[start..end].to_owned()
}

/// Logs in through the form; returns the `Cookie` header value to send.
async fn login(gate: &Nbgate, client: &reqwest::Client, password: &str) -> reqwest::Response {
    let page = client
        .get(gate.url("/_nbgate/login?next=%2Flab"))
        .header("accept", "text/html")
        .send()
        .await
        .expect("GET login");
    assert_eq!(page.status(), 200);
    let csp = page.headers()["content-security-policy"]
        .to_str()
        .expect("csp")
        .to_owned();
    assert!(csp.contains("default-src 'none'"), "{csp}");
    let binding = set_cookies(&page)
        .into_iter()
        .find(|c| c.starts_with("__Host-nbgate-csrf="))
        .expect("csrf binding cookie");
    let html = page.text().await.expect("html");
    let csrf = hidden(&html, "csrf");
    assert_eq!(hidden(&html, "next"), "/lab");
    client
        .post(gate.url("/_nbgate/login"))
        .header("cookie", cookie_pair(&binding))
        .header("origin", gate.origin())
        .form(&[
            ("username", TEST_USER),
            ("password", password),
            ("csrf", csrf.as_str()),
            ("next", "/lab"),
        ])
        .send()
        .await
        .expect("POST login")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_credentials_browsers_are_sent_to_login_and_apis_get_401() {
    let jupyter = Jupyter::start().await;
    let gate = Nbgate::start_for(&jupyter).await;
    let client = bare_client(&gate);

    let nav = client
        .get(gate.url("/lab?reset"))
        .header("accept", "text/html,application/xhtml+xml")
        .send()
        .await
        .expect("GET /lab");
    assert_eq!(nav.status(), 303);
    assert_eq!(
        nav.headers()["location"],
        "/_nbgate/login?next=%2Flab%3Freset"
    );

    for path in ["/api", "/api/kernels"] {
        let api = client.get(gate.url(path)).send().await.expect("GET api");
        assert_eq!(api.status(), 401, "{path}");
        let body: serde_json::Value = api.json().await.expect("json body");
        assert_eq!(body["error"], "unauthorized");
    }

    let wrong = client
        .get(gate.url("/api/kernels"))
        .header("authorization", "token not-the-token")
        .send()
        .await
        .expect("wrong token");
    assert_eq!(wrong.status(), 401);
    let wrong_query = client
        .get(gate.url("/api/kernels?token=not-the-token"))
        .send()
        .await
        .expect("wrong token in query");
    assert_eq!(wrong_query.status(), 401);
    // The log is read by a drain thread: wait for the line, don't race it.
    gate.wait_for_log("token_failure", T).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn form_login_cookie_drives_a_kernel_and_cross_site_use_is_refused() {
    let jupyter = Jupyter::start().await;
    let gate = Nbgate::start_for(&jupyter).await;
    let client = bare_client(&gate);

    let bad = within(
        T,
        "wrong password",
        login(&gate, &client, "wrong password!"),
    )
    .await;
    assert_eq!(bad.status(), 401);
    let page = bad.text().await.expect("html");
    assert!(page.contains("role=\"alert\""), "{page}");
    assert!(page.contains("Wrong user name or password."), "{page}");
    gate.wait_for_log("wrong_password", T).await;

    let ok = within(T, "right password", login(&gate, &client, TEST_PASSWORD)).await;
    assert_eq!(ok.status(), 303);
    assert_eq!(ok.headers()["location"], "/lab");
    let session = set_cookies(&ok)
        .into_iter()
        .find(|c| c.starts_with("__Host-nbgate-session="))
        .expect("session cookie");
    for attr in ["Secure", "HttpOnly", "SameSite=Lax", "Path=/"] {
        assert!(session.contains(attr), "{session}");
    }
    let cookie = cookie_pair(&session);
    gate.wait_for_log("login_success", T).await;

    let kernels = client
        .get(gate.url("/api/kernels"))
        .header("cookie", &cookie)
        .send()
        .await
        .expect("GET kernels with cookie");
    assert_eq!(kernels.status(), 200);

    // Cross-site POST with the cookie (CSRF): refused by nbgate.
    for origin in [Some("https://evil.example"), None] {
        let mut req = client
            .post(gate.url("/api/kernels"))
            .header("cookie", &cookie)
            .body("{}");
        if let Some(o) = origin {
            req = req.header("origin", o);
        }
        let r = req.send().await.expect("cross-site POST");
        assert_eq!(r.status(), 403, "origin {origin:?}");
    }

    let started = client
        .post(gate.url("/api/kernels"))
        .header("cookie", &cookie)
        .header("origin", gate.origin())
        .body("{}")
        .send()
        .await
        .expect("same-origin POST");
    assert_eq!(started.status(), 201);
    let kernel: serde_json::Value = started.json().await.expect("kernel json");
    let id = kernel["id"].as_str().expect("kernel id").to_owned();

    let ws_path = format!("/api/kernels/{id}/channels");
    let open_ws = |origin: String| {
        let mut request = format!("wss://localhost:{}{ws_path}", gate.https_addr().port())
            .into_client_request()
            .expect("ws request");
        request
            .headers_mut()
            .insert("cookie", HeaderValue::from_str(&cookie).expect("cookie"));
        request
            .headers_mut()
            .insert("origin", HeaderValue::from_str(&origin).expect("origin"));
        let gate = &gate;
        async move {
            let tls = gate.tls_connect().await;
            tokio_tungstenite::client_async(request, tls).await
        }
    };
    let hijack = within(
        T,
        "cross-site websocket",
        open_ws("https://evil.example".into()),
    )
    .await;
    match hijack {
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => assert_eq!(r.status(), 403),
        other => panic!(
            "cross-site WebSocket was not refused: {:?}",
            other.map(|_| ())
        ),
    }
    let (mut ws, _) = within(T, "same-origin websocket", open_ws(gate.origin()))
        .await
        .expect("websocket with cookie");
    let out = common::kernel::execute(&mut ws, "1+1").await;
    assert_eq!(out, "2");

    // Logout: revokes the cookie and closes this session's tunnel.
    let logout_page = client
        .get(gate.url("/_nbgate/logout"))
        .header("cookie", &cookie)
        .send()
        .await
        .expect("logout page");
    assert_eq!(logout_page.status(), 200);
    let csrf = hidden(&logout_page.text().await.expect("html"), "csrf");
    let out = client
        .post(gate.url("/_nbgate/logout"))
        .header("cookie", &cookie)
        .header("origin", gate.origin())
        .form(&[("csrf", csrf.as_str())])
        .send()
        .await
        .expect("logout");
    assert_eq!(out.status(), 200);
    assert!(set_cookies(&out)
        .iter()
        .any(|c| c.starts_with("__Host-nbgate-session=;") && c.contains("Max-Age=0")));
    let closed = within(T, "tunnel closed by logout", async {
        loop {
            match ws.next().await {
                None | Some(Err(_)) => return,
                Some(Ok(m)) if m.is_close() => return,
                Some(Ok(_)) => {}
            }
        }
    })
    .await;
    let () = closed;
    let after = client
        .get(gate.url("/api/kernels"))
        .header("cookie", &cookie)
        .send()
        .await
        .expect("GET after logout");
    assert_eq!(after.status(), 401, "a logged-out cookie is revoked");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tampered_cookie_is_refused() {
    let jupyter = Jupyter::start().await;
    let gate = Nbgate::start_for(&jupyter).await;
    let client = bare_client(&gate);
    let ok = within(T, "login", login(&gate, &client, TEST_PASSWORD)).await;
    let session = set_cookies(&ok)
        .into_iter()
        .find(|c| c.starts_with("__Host-nbgate-session="))
        .expect("session cookie");
    let mut pair = cookie_pair(&session).into_bytes();
    let i = pair.len() - 5;
    pair[i] = if pair[i] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(pair).expect("ascii");
    let r = client
        .get(gate.url("/api/kernels"))
        .header("cookie", tampered)
        .send()
        .await
        .expect("GET with tampered cookie");
    assert_eq!(r.status(), 401);
}

#[test]
fn hash_password_reads_stdin_and_refuses_short_passwords() {
    use std::io::Write;
    let run = |input: &str| {
        let mut child = std::process::Command::new(common::nbgate::nbgate_bin())
            .arg("hash-password")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawn");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(input.as_bytes())
            .expect("write");
        child.wait_with_output().expect("output")
    };
    let ok = run("a long enough password\n");
    assert!(ok.status.success());
    let phc = String::from_utf8(ok.stdout).expect("utf-8");
    assert!(phc.starts_with("$pbkdf2-sha256$i=600000,l=32$"), "{phc}");
    let parsed: nbgate::auth::password::StoredHash = phc.trim().parse().expect("parses");
    assert!(parsed.verify("a long enough password"));
    let short = run("short\n");
    assert!(!short.status.success());
    let err = String::from_utf8_lossy(&short.stderr);
    assert!(err.contains("too short"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_session_expires_and_browser_is_sent_back_to_login() {
    let jupyter = Jupyter::start().await;
    let gate = Nbgate::builder()
        .jupyter(&jupyter)
        .set("auth.idle_timeout", "2s")
        .set("auth.max_lifetime", "1h")
        .start()
        .await;
    let client = bare_client(&gate);
    let ok = within(T, "login", login(&gate, &client, TEST_PASSWORD)).await;
    let cookie = cookie_pair(
        &set_cookies(&ok)
            .into_iter()
            .find(|c| c.starts_with("__Host-nbgate-session="))
            .expect("session cookie"),
    );
    let fresh = client
        .get(gate.url("/api/kernels"))
        .header("cookie", &cookie)
        .send()
        .await
        .expect("GET with fresh cookie");
    assert_eq!(fresh.status(), 200);
    // Polled, not slept: the cookie must stop working within a few seconds
    // of its 2 s idle timeout.
    common::poll_until(Duration::from_secs(10), "idle cookie expires", || {
        let req = client
            .get(gate.url("/api/kernels"))
            .header("cookie", &cookie)
            .send();
        async move { (req.await.ok()?.status() == 401).then_some(()) }
    })
    .await;
    let nav = client
        .get(gate.url("/lab"))
        .header("cookie", &cookie)
        .header("accept", "text/html")
        .send()
        .await
        .expect("navigation with expired cookie");
    assert_eq!(nav.status(), 303);
}
