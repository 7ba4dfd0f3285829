//! The login form as a browser drives it: fetch the page (CSRF binding
//! cookie + hidden token), post the form, pick up the session cookie.

use std::net::IpAddr;
use std::time::Duration;

use super::nbgate::{Nbgate, TEST_USER};

const T: Duration = Duration::from_secs(30);

/// A client with no credentials of its own (no API token).
pub fn bare_client(gate: &Nbgate) -> reqwest::Client {
    bare_client_from(gate, None)
}

/// A client without credentials whose connections come from `local` (e.g.
/// 127.0.0.2, to be "another client" on loopback).
pub fn bare_client_from(gate: &Nbgate, local: Option<IpAddr>) -> reqwest::Client {
    browser_client(gate, local, None)
}

/// A client without credentials from `local` that sends `user_agent` (none: no `User-Agent`),
/// to be one browser among several.
pub fn browser_client(
    gate: &Nbgate,
    local: Option<IpAddr>,
    user_agent: Option<&str>,
) -> reqwest::Client {
    let cert = reqwest::Certificate::from_pem(gate.cert_pem()).expect("pem");
    let builder = match user_agent {
        Some(ua) => reqwest::Client::builder().user_agent(ua),
        None => reqwest::Client::builder(),
    };
    builder
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(cert)
        .resolve("localhost", gate.https_addr())
        .redirect(reqwest::redirect::Policy::none())
        .timeout(T)
        .local_address(local)
        .build()
        .expect("client")
}

pub fn set_cookies(r: &reqwest::Response) -> Vec<String> {
    r.headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().expect("ascii").to_owned())
        .collect()
}

pub fn cookie_pair(set_cookie: &str) -> String {
    set_cookie
        .split(';')
        .next()
        .expect("pair")
        .trim()
        .to_owned()
}

pub fn hidden(html: &str, name: &str) -> String {
    let marker = format!("name=\"{name}\" value=\"");
    let start = html.find(&marker).expect("hidden input") + marker.len();
    let end = html[start..].find('"').expect("end quote") + start;
    html[start..end].to_owned()
}

/// Logs in through the form as the test user.
pub async fn login(gate: &Nbgate, client: &reqwest::Client, password: &str) -> reqwest::Response {
    login_as(gate, client, "/", TEST_USER, password).await
}

/// Logs in through the form under Jupyter's `base` URL; returns the answer to the POST.
pub async fn login_as(
    gate: &Nbgate,
    client: &reqwest::Client,
    base: &str,
    user: &str,
    password: &str,
) -> reqwest::Response {
    let next = format!("{base}lab");
    let page = client
        .get(gate.url(&format!(
            "{base}_nbgate/login?next={}",
            next.replace('/', "%2F")
        )))
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
    assert_eq!(hidden(&html, "next"), next);
    client
        .post(gate.url(&format!("{base}_nbgate/login")))
        .header("cookie", cookie_pair(&binding))
        .header("origin", gate.origin())
        .form(&[
            ("username", user),
            ("password", password),
            ("csrf", csrf.as_str()),
            ("next", next.as_str()),
        ])
        .send()
        .await
        .expect("POST login")
}

/// The `Cookie` value of the session cookie a login answer set.
pub fn session_cookie(r: &reqwest::Response) -> String {
    cookie_pair(
        &set_cookies(r)
            .into_iter()
            .find(|c| c.starts_with("__Host-nbgate-session="))
            .expect("session cookie"),
    )
}

/// Logs the session `cookie` out through the logout page's form (the page must offer the
/// "every other device" choice); `everywhere` ticks it. Returns the answer to the POST.
pub async fn logout(
    gate: &Nbgate,
    client: &reqwest::Client,
    cookie: &str,
    everywhere: bool,
) -> reqwest::Response {
    let page = client
        .get(gate.url("/_nbgate/logout"))
        .header("cookie", cookie)
        .header("accept", "text/html")
        .send()
        .await
        .expect("logout page");
    assert_eq!(page.status(), 200);
    let html = page.text().await.expect("html");
    assert!(html.contains("name=\"everywhere\""), "{html}");
    let mut form = vec![("csrf", hidden(&html, "csrf"))];
    if everywhere {
        form.push(("everywhere", "1".to_owned()));
    }
    client
        .post(gate.url("/_nbgate/logout"))
        .header("cookie", cookie)
        .header("origin", gate.origin())
        .form(&form)
        .send()
        .await
        .expect("logout")
}

/// Opens a WebSocket to `path` as a browser with the session `cookie` would: the cookie and a
/// same-origin `Origin`, no API token. Returns the socket and nbgate's 101 answer.
pub async fn ws_connect_with_cookie(
    gate: &Nbgate,
    path: &str,
    cookie: &str,
) -> Result<
    (
        super::nbgate::WsStream,
        tokio_tungstenite::tungstenite::handshake::client::Response,
    ),
    tokio_tungstenite::tungstenite::Error,
> {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut request = format!("wss://localhost:{}{path}", gate.https_addr().port())
        .into_client_request()
        .expect("WebSocket request");
    request
        .headers_mut()
        .insert("cookie", cookie.parse().expect("cookie"));
    request
        .headers_mut()
        .insert("origin", gate.origin().parse().expect("origin"));
    let tls = gate.tls_connect().await;
    super::within(
        T,
        "WebSocket handshake with a session cookie",
        tokio_tungstenite::client_async(request, tls),
    )
    .await
}
