//! JupyterHub behind nbgate (`[upstream] identity_header`, docs/scale-out.md).
//!
//! nbgate names the user it authenticated in one header on every request and WebSocket it
//! forwards (HTTP/1.1 upgrades and HTTP/2 extended CONNECTs alike), after dropping every copy
//! the client sent; with the header on and no token configured it sends Jupyter no token. The
//! echo upstream shows the headers exactly; a real JupyterHub (its proxy, a user's server per
//! user) shows what that means for users: each reaches their own server and no one else's.

mod common;

use std::time::Duration;

use futures_util::StreamExt;
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message;

use common::h2ws::{h2_connection, h2_ws, ApiClient};
use common::jupyterhub::JupyterHub;
use common::kernel::execute;
use common::login::{cookie_pair, login_as, session_cookie, set_cookies, ws_connect_with_cookie};
use common::nbgate::{test_hashes, NbgateBuilder, TEST_PASSWORD, TEST_USER};
use common::upstream::{echoed_header, echoed_headers};
use common::{within, Nbgate, TestUpstream};

const T: Duration = Duration::from_secs(30);
const HEADER: &str = "x-nbgate-user";

/// nbgate in front of the echo upstream with `identity_header` on.
async fn gate_naming_users(upstream: &TestUpstream) -> Nbgate {
    Nbgate::builder()
        .upstream(&upstream.url())
        .set("upstream.identity_header", "X-Nbgate-User")
        .start()
        .await
}

/// `GET /echo` through nbgate (HTTP/2, the test user's API token), with `forged` as the
/// identity header if given; the echo upstream's description of what arrived.
async fn echo(gate: &Nbgate, forged: Option<&str>) -> Value {
    let mut request = gate.client().get(gate.url("/echo"));
    if let Some(who) = forged {
        request = request.header(HEADER, who);
    }
    request
        .send()
        .await
        .expect("GET /echo")
        .json()
        .await
        .expect("echo JSON")
}

async fn next_json<S>(ws: &mut tokio_tungstenite::WebSocketStream<S>) -> Value
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    match within(T, "first WebSocket message", ws.next()).await {
        Some(Ok(Message::Text(t))) => serde_json::from_str(&t).expect("handshake JSON"),
        other => panic!("expected the handshake as text, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_name_the_logged_in_user_and_client_copies_never_arrive() {
    let upstream = TestUpstream::start().await;
    let gate = gate_naming_users(&upstream).await;

    // Every spelling a client could try, repeated, on one HTTP/1.1 request.
    let raw = gate
        .raw_https(
            "GET /echo HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\
             X-Nbgate-User: bob\r\nx-nbgate-user: carol\r\nX-NBGATE-USER: dave\r\n\
             X_Nbgate_User: erin\r\nx.nbgate.user: frank\r\n\r\n",
        )
        .await;
    assert!(raw.starts_with("HTTP/1.1 200"), "{raw}");
    let body = &raw[raw.find("\r\n\r\n").expect("head end") + 4..];
    // The body may be chunked: the JSON object is between the first `{` and the last `}`.
    let json = &body[body.find('{').expect("json")..=body.rfind('}').expect("json")];
    let raw_seen: Value = serde_json::from_str(json).expect("echo JSON");
    assert_eq!(echoed_headers(&raw_seen, HEADER), [TEST_USER], "{raw_seen}");
    assert_eq!(
        echoed_header(&raw_seen, "x_nbgate_user"),
        None,
        "{raw_seen}"
    );
    assert_eq!(
        echoed_header(&raw_seen, "x.nbgate.user"),
        None,
        "{raw_seen}"
    );

    // HTTP/2 (reqwest negotiates it with nbgate).
    let seen = echo(&gate, Some("bob")).await;
    assert_eq!(seen["version"], "HTTP/1.1", "upstream side is HTTP/1.1");
    assert_eq!(echoed_headers(&seen, HEADER), [TEST_USER], "{seen}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websockets_name_the_logged_in_user_over_http1_and_http2() {
    let upstream = TestUpstream::start().await;
    let gate = gate_naming_users(&upstream).await;

    let origin = gate.origin();
    let mut ws = gate
        .ws_connect_with(
            "/ws-echo",
            &[
                ("origin", origin.as_str()),
                ("x-nbgate-user", "bob"),
                ("x_nbgate_user", "bob"),
            ],
        )
        .await
        .expect("HTTP/1.1 WebSocket");
    let handshake = next_json(&mut ws).await;
    assert_eq!(
        echoed_headers(&handshake, HEADER),
        [TEST_USER],
        "{handshake}"
    );
    assert_eq!(echoed_header(&handshake, "x_nbgate_user"), None);

    let mut conn = h2_connection(&gate).await;
    let api = ApiClient::of(&gate);
    let mut headers = api.headers().to_vec();
    headers.push(("x-nbgate-user", "bob"));
    let mut ws = h2_ws(&mut conn, &gate, "/ws-echo", &headers).await;
    let handshake = next_json(&mut ws).await;
    assert_eq!(
        echoed_headers(&handshake, HEADER),
        [TEST_USER],
        "{handshake}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_identity_header_and_no_token_configured_no_token_goes_upstream() {
    let upstream = TestUpstream::start().await;
    let gate = Nbgate::builder()
        .upstream(&upstream.url())
        .set("upstream.identity_header", "X-Nbgate-User")
        .remove("upstream.token_file")
        .start()
        .await;
    let seen = echo(&gate, None).await;
    // nbgate's own API token authenticated this request; nothing of it, and no Jupyter token
    // (none configured, none discovered), reaches the Hub.
    assert_eq!(echoed_header(&seen, "authorization"), None, "{seen}");
    assert_eq!(echoed_header(&seen, HEADER).as_deref(), Some(TEST_USER));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_identity_header_nbgate_names_no_one() {
    let upstream = TestUpstream::start().await;
    let gate = Nbgate::builder().upstream(&upstream.url()).start().await;
    assert_eq!(echoed_header(&echo(&gate, None).await, HEADER), None);
    // Off, nbgate does not know the name, so a client's copy passes like any other header:
    // an upstream must trust such a header only with `identity_header` on.
    let forged = echo(&gate, Some("bob")).await;
    assert_eq!(echoed_header(&forged, HEADER).as_deref(), Some("bob"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identity_header_is_turned_on_by_a_reload() {
    let upstream = TestUpstream::start().await;
    let gate = Nbgate::builder().upstream(&upstream.url()).start().await;
    assert_eq!(echoed_header(&echo(&gate, None).await, HEADER), None);

    let path = gate.config_path();
    let mut config: toml::Table = std::fs::read_to_string(path)
        .expect("read config")
        .parse()
        .expect("config is TOML");
    config["upstream"]
        .as_table_mut()
        .expect("[upstream]")
        .insert("identity_header".into(), "X-Nbgate-User".into());
    std::fs::write(path, toml::to_string(&config).expect("TOML")).expect("write config");
    gate.signal(libc::SIGHUP);
    gate.wait_for_log("configuration reloaded", T).await;

    let seen = echo(&gate, Some("bob")).await;
    assert_eq!(echoed_headers(&seen, HEADER), [TEST_USER], "{seen}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_well_known_header_is_refused_as_identity_header() {
    let builder = Nbgate::builder().set("upstream.identity_header", "Authorization");
    let out = builder.check_config().await;
    assert!(!out.status.success(), "{out:?}");
    assert!(
        out.stderr.contains("upstream.identity_header")
            && out.stderr.contains("config.toml:")
            && out.stderr.contains("\"Authorization\""),
        "{}",
        out.stderr
    );
}

/// A browser as far as this test needs one: nbgate's session cookie, a cookie jar that
/// honours `Path` (the Hub and each user's server set their own `_xsrf`), and redirects
/// followed by hand (nbgate answers with the public origin or with paths).
struct Browser<'a> {
    gate: &'a Nbgate,
    client: reqwest::Client,
    /// `(name, path, value)`.
    jar: Vec<(String, String, String)>,
    /// Sent on every request: a forged identity header.
    forged: Option<&'static str>,
}

impl<'a> Browser<'a> {
    /// Logs `user` in to nbgate through its form.
    async fn login(gate: &'a Nbgate, user: &str, forged: Option<&'static str>) -> Browser<'a> {
        let cert = reqwest::Certificate::from_pem(gate.cert_pem()).expect("pem");
        let client = reqwest::Client::builder()
            .use_rustls_tls()
            .tls_built_in_root_certs(false)
            .add_root_certificate(cert)
            .resolve("localhost", gate.https_addr())
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(120))
            .build()
            .expect("client");
        let answer = login_as(gate, &client, "/", user, TEST_PASSWORD).await;
        assert_eq!(answer.status(), 303, "login as {user}");
        let (name, value) = session_cookie(&answer)
            .split_once('=')
            .map(|(n, v)| (n.to_owned(), v.to_owned()))
            .expect("name=value");
        Browser {
            gate,
            client,
            jar: vec![(name, "/".into(), value)],
            forged,
        }
    }

    fn cookies_for(&self, path: &str) -> String {
        self.jar
            .iter()
            .filter(|(_, p, _)| path.starts_with(p.as_str()) || path == p.trim_end_matches('/'))
            .map(|(n, _, v)| format!("{n}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    fn cookie(&self, name: &str, path: &str) -> Option<&str> {
        self.jar
            .iter()
            .find(|(n, p, _)| n == name && p == path)
            .map(|(_, _, v)| v.as_str())
    }

    fn keep_cookies(&mut self, r: &reqwest::Response) {
        for c in set_cookies(r) {
            let (name, value) = cookie_pair(&c)
                .split_once('=')
                .map(|(n, v)| (n.to_owned(), v.to_owned()))
                .expect("name=value");
            let attr = |a: &str| {
                c.split(';').skip(1).find_map(|kv| {
                    let (k, v) = kv.trim().split_once('=').unwrap_or((kv.trim(), ""));
                    k.eq_ignore_ascii_case(a).then(|| v.to_owned())
                })
            };
            let path = attr("path").unwrap_or_else(|| "/".into());
            let gone = attr("max-age").is_some_and(|a| a == "0")
                || attr("expires").is_some_and(|e| e.contains("1970"));
            self.jar.retain(|(n, p, _)| !(*n == name && *p == path));
            if !gone {
                self.jar.push((name, path, value));
            }
        }
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let mut r = self
            .client
            .request(method, self.gate.url(path))
            .header("cookie", self.cookies_for(path))
            .header("accept", "text/html,application/json");
        if let Some(who) = self.forged {
            r = r.header("x-nbgate-user", who).header("x_nbgate_user", who);
        }
        r
    }

    /// GET `path`, following redirects; the last answer and the path it came from.
    async fn follow(&mut self, path: &str) -> (String, u16, String) {
        let origin = self.gate.origin();
        let mut path = path.to_owned();
        for _ in 0..20 {
            let r = self
                .request(reqwest::Method::GET, &path)
                .send()
                .await
                .unwrap_or_else(|e| panic!("GET {path}: {e}"));
            self.keep_cookies(&r);
            let status = r.status().as_u16();
            if !r.status().is_redirection() {
                return (path, status, r.text().await.unwrap_or_default());
            }
            let location = r.headers()["location"].to_str().expect("ascii").to_owned();
            path = match location.strip_prefix(&origin) {
                Some(rest) => rest.to_owned(),
                None if location.starts_with('/') => location,
                None => panic!("redirect off the gate from {path}: {location}"),
            };
        }
        panic!("more than 20 redirects from {path}");
    }

    /// Logs in to the Hub (the identity nbgate names) and waits until the user's server runs;
    /// returns the path of the page it landed on.
    async fn open_own_server(&mut self, user: &str) -> String {
        let (mut at, mut status, _) = self.follow("/hub/login").await;
        // The Hub's progress page redirects to the server once it is up: poll it.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(180);
        let pending = format!("/hub/spawn-pending/{user}");
        while at.starts_with(&pending) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{user}'s server did not start in 180 s"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
            (at, status, _) = self.follow(&pending).await;
        }
        assert_eq!(status, 200, "landed on {at}");
        at
    }

    /// `POST /user/<user>/api/kernels` as JupyterLab does it: cookie, `X-XSRFToken`, Origin.
    async fn start_kernel(&mut self, user: &str) -> (u16, String) {
        let base = format!("/user/{user}/");
        let xsrf = self.cookie("_xsrf", &base).unwrap_or_default().to_owned();
        let r = self
            .request(reqwest::Method::POST, &format!("{base}api/kernels"))
            .header("origin", self.gate.origin())
            .header("x-xsrftoken", xsrf)
            .json(&serde_json::json!({"name": "python3"}))
            .send()
            .await
            .expect("POST kernels");
        let status = r.status().as_u16();
        (status, r.text().await.unwrap_or_default())
    }
}

/// Two users on nbgate's user list (same test password).
fn two_users(builder: NbgateBuilder) -> NbgateBuilder {
    let users: Vec<toml::Value> = ["alice", "bob"]
        .iter()
        .map(|name| {
            let mut u = toml::Table::new();
            u.insert("name".into(), (*name).into());
            u.insert("password_hash".into(), test_hashes().0.clone().into());
            toml::Value::Table(u)
        })
        .collect();
    builder.set("users", toml::Value::Array(users))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_user_reaches_only_their_own_jupyterhub_server() {
    let hub = JupyterHub::start().await;
    let gate = two_users(Nbgate::builder())
        .upstream(&hub.upstream_url())
        .remove("upstream.token_file")
        .set("upstream.identity_header", "X-Nbgate-User")
        .start()
        .await;

    // bob first, then alice, who claims to be bob on every request she makes.
    let mut bob = Browser::login(&gate, "bob", None).await;
    let at = bob.open_own_server("bob").await;
    assert!(at.starts_with("/user/bob/"), "bob landed on {at}");
    let mut alice = Browser::login(&gate, "alice", Some("bob")).await;
    let at = alice.open_own_server("alice").await;
    assert!(at.starts_with("/user/alice/"), "alice landed on {at}");

    for (browser, user) in [(&mut alice, "alice"), (&mut bob, "bob")] {
        // Who the user's server says is asking.
        let (_, status, me) = browser.follow(&format!("/user/{user}/api/me")).await;
        assert_eq!(status, 200, "{me}");
        let me: Value = serde_json::from_str(&me).expect("api/me JSON");
        assert_eq!(me["identity"]["username"], user, "{me}");

        // Code on a kernel, over the kernel WebSocket through nbgate.
        let (status, body) = browser.start_kernel(user).await;
        assert_eq!(status, 201, "{user}: POST kernels: {body}");
        let kernel: Value = serde_json::from_str(&body).expect("kernel JSON");
        let channels = format!(
            "/user/{user}/api/kernels/{}/channels",
            kernel["id"].as_str().expect("kernel id")
        );
        let (mut ws, _) = ws_connect_with_cookie(&gate, &channels, &browser.cookies_for(&channels))
            .await
            .unwrap_or_else(|e| panic!("{user}: kernel WebSocket: {e}"));
        let out = execute(
            &mut ws,
            "import os; os.environ['JUPYTERHUB_USER'] + str(6 * 7)",
        )
        .await;
        assert_eq!(out, format!("'{user}42'"));
    }

    // alice cannot reach bob's server: not its pages, not its API, not a kernel.
    let (at, status, _) = alice.follow("/user/bob/lab").await;
    assert_eq!(status, 403, "alice at {at}");
    let (at, status, _) = alice.follow("/user/bob/api/me").await;
    assert_eq!(status, 403, "alice at {at}");
    let (status, body) = alice.start_kernel("bob").await;
    assert_eq!(
        status, 403,
        "alice starting a kernel on bob's server: {body}"
    );
}
