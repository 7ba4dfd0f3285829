//! Login against a real Jupyter: nothing is reachable without a session or
//! API token; the form login gives a `__Host-` cookie that works for the API
//! and kernel WebSockets; cross-site requests are refused even with the
//! cookie; tampered cookies are refused; logout revokes the cookie and
//! closes the session's open tunnels, over HTTP/1.1 and HTTP/2.

mod common;

use std::time::Duration;

use common::h2ws::{h2_connection, h2_websocket, h2_ws};
use common::kernel::{execute, start_kernel};
use common::login::{
    bare_client, cookie_pair, login, login_as, logout, session_cookie, set_cookies,
};
use common::nbgate::{closed_by_server, TEST_PASSWORD, TEST_USER};
use common::{within, Jupyter, JupyterOptions, Nbgate, TestUpstream};
use futures_util::StreamExt;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;

const T: Duration = Duration::from_secs(30);

/// GET `path` with a cookie; the status.
async fn status_with(gate: &Nbgate, client: &reqwest::Client, path: &str, cookie: &str) -> u16 {
    client
        .get(gate.url(path))
        .header("cookie", cookie)
        .send()
        .await
        .expect("GET with cookie")
        .status()
        .as_u16()
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
    let out = logout(&gate, &client, &cookie, false).await;
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

/// Jupyter prints links like `…/lab?token=abc`; bookmarked and opened through nbgate by a
/// logged-in browser, the stale token must neither override the session nor reach Jupyter.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logout_closes_the_sessions_websocket_on_http2_and_the_connection_goes_on() {
    let jupyter = Jupyter::start().await;
    let gate = Nbgate::start_for(&jupyter).await;
    let path = format!("/api/kernels/{}/channels", start_kernel(&gate).await);
    let client = bare_client(&gate);
    let cookie = session_cookie(&login(&gate, &client, TEST_PASSWORD).await);
    let origin = gate.origin();
    let browser = [("cookie", cookie.as_str()), ("origin", origin.as_str())];
    // As a browser: the kernel's WebSocket is one stream of the tab's HTTP/2 connection.
    let mut conn = h2_connection(&gate).await;
    let mut ws = h2_ws(&mut conn, &gate, &path, &browser).await;
    assert_eq!(execute(&mut ws, "1+1").await, "2");

    let out = logout(&gate, &client, &cookie, false).await;
    assert_eq!(out.status(), 200);
    // The WebSocket gets a close frame (1001 "going away"), then its stream ends.
    assert_eq!(closed_by_server(&mut ws).await, Some(1001));
    gate.wait_for_line(&["tunnel closed", "via=\"h2\"", "Closed"], T)
        .await;
    // Only the stream ended: the connection carries the next request, which the revoked
    // cookie no longer opens.
    let (head, stream) = h2_websocket(&mut conn, &gate, &path, &browser).await;
    assert_eq!(head.status, 401, "{head:?}");
    assert!(stream.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_token_in_a_link_does_not_override_a_valid_session_cookie() {
    let upstream = TestUpstream::start().await;
    let gate = Nbgate::builder().upstream(&upstream.url()).start().await;
    let client = bare_client(&gate);
    let ok = within(T, "login", login(&gate, &client, TEST_PASSWORD)).await;
    assert_eq!(ok.status(), 303);
    let cookie = session_cookie(&ok);

    for (path, forwarded) in [
        ("/lab/tree?token=stale-jupyter-token", "/lab/tree"),
        (
            "/api/contents?tok%65n=stale&type=file",
            "/api/contents?type=file",
        ),
    ] {
        let r = within(
            T,
            "GET with cookie and a stale token",
            client.get(gate.url(path)).header("cookie", &cookie).send(),
        )
        .await
        .expect("GET");
        assert_eq!(r.status(), 200, "{path}");
        let echoed: serde_json::Value = r.json().await.expect("echo JSON");
        assert_eq!(echoed["uri"], forwarded, "what Jupyter was sent for {path}");
    }

    // Without a session the parameter is still a token, and a wrong one is refused.
    let r = client
        .get(gate.url("/api/contents?token=stale"))
        .send()
        .await
        .expect("GET without cookie");
    assert_eq!(r.status(), 401);
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logout_everywhere_revokes_the_cookies_of_every_device() {
    let up = TestUpstream::start().await;
    let gate = Nbgate::builder().upstream(&up.url()).start().await;
    let (laptop, phone, tablet) = (bare_client(&gate), bare_client(&gate), bare_client(&gate));
    let a = session_cookie(&within(T, "laptop login", login(&gate, &laptop, TEST_PASSWORD)).await);
    let b = session_cookie(&within(T, "phone login", login(&gate, &phone, TEST_PASSWORD)).await);
    let c = session_cookie(&within(T, "tablet login", login(&gate, &tablet, TEST_PASSWORD)).await);
    for (client, cookie) in [(&laptop, &a), (&phone, &b), (&tablet, &c)] {
        assert_eq!(status_with(&gate, client, "/api/status", cookie).await, 200);
    }

    let logout = |client: &reqwest::Client, cookie: &str, everywhere: bool| {
        let (client, cookie) = (client.clone(), cookie.to_owned());
        let gate = &gate;
        async move {
            let out = logout(gate, &client, &cookie, everywhere).await;
            assert_eq!(out.status(), 200);
        }
    };

    // A plain logout ends that one session only.
    within(T, "tablet logout", logout(&tablet, &c, false)).await;
    assert_eq!(status_with(&gate, &tablet, "/api/status", &c).await, 401);
    assert_eq!(status_with(&gate, &laptop, "/api/status", &a).await, 200);

    // Logout everywhere from the phone ends the laptop's session too.
    within(T, "phone logs out everywhere", logout(&phone, &b, true)).await;
    assert_eq!(status_with(&gate, &phone, "/api/status", &b).await, 401);
    assert_eq!(status_with(&gate, &laptop, "/api/status", &a).await, 401);
    gate.wait_for_line(&["nbgate::audit", "logout_everywhere", TEST_USER], T)
        .await;

    // Logging in again afterwards gives a working cookie.
    let fresh =
        session_cookie(&within(T, "login again", login(&gate, &laptop, TEST_PASSWORD)).await);
    assert_eq!(
        status_with(&gate, &laptop, "/api/status", &fresh).await,
        200
    );
}

/// Sends `cookie` every 300 ms, taking up refreshed cookies as a browser
/// would, until the gate answers 401; returns how long the session lived.
async fn use_session_until_refused(
    gate: &Nbgate,
    client: &reqwest::Client,
    mut cookie: String,
    limit: Duration,
) -> Duration {
    let started = tokio::time::Instant::now();
    loop {
        let r = client
            .get(gate.url("/api/status"))
            .header("cookie", &cookie)
            .send()
            .await
            .expect("GET with cookie");
        if r.status() == 401 {
            return started.elapsed();
        }
        assert_eq!(r.status(), 200);
        if let Some(refreshed) = set_cookies(&r)
            .into_iter()
            .find(|c| c.starts_with("__Host-nbgate-session="))
        {
            cookie = cookie_pair(&refreshed);
        }
        assert!(
            started.elapsed() < limit,
            "session still valid after {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn active_session_slides_past_the_idle_timeout_but_ends_at_the_absolute_lifetime() {
    let up = TestUpstream::start().await;
    let gate = Nbgate::builder()
        .upstream(&up.url())
        .set("auth.idle_timeout", "2s")
        .set("auth.max_lifetime", "6s")
        .start()
        .await;
    let client = bare_client(&gate);
    let ok = within(T, "login", login(&gate, &client, TEST_PASSWORD)).await;
    let lived = use_session_until_refused(&gate, &client, session_cookie(&ok), T).await;
    // Unix-second granularity: the absolute end lies between 5 and 6 s after
    // login; an idle expiry (no sliding) would have ended it near 2 s.
    assert!(
        lived >= Duration::from_secs(4),
        "an active session ended after {lived:?}: the idle timeout did not slide"
    );
    assert!(lived <= Duration::from_secs(8), "lived {lived:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_and_kernels_work_under_a_jupyter_base_url() {
    let jupyter = Jupyter::start_with(JupyterOptions {
        base_url: Some("/jupyter/".into()),
        ..JupyterOptions::default()
    })
    .await;
    let gate = Nbgate::builder()
        .jupyter(&jupyter)
        .set("auth.base_url", "/jupyter/")
        .start()
        .await;
    let client = bare_client(&gate);

    // A navigation without a session goes to the login page under base_url.
    let nav = client
        .get(gate.url("/jupyter/lab"))
        .header("accept", "text/html")
        .send()
        .await
        .expect("navigation");
    assert_eq!(nav.status(), 303);
    let location = nav.headers()["location"].to_str().expect("ascii");
    assert!(
        location.starts_with("/jupyter/_nbgate/login?next="),
        "{location}"
    );

    let ok = within(
        T,
        "login",
        login_as(&gate, &client, "/jupyter/", TEST_USER, TEST_PASSWORD),
    )
    .await;
    assert_eq!(ok.status(), 303);
    assert_eq!(ok.headers()["location"], "/jupyter/lab");
    let cookie = session_cookie(&ok);
    assert_eq!(
        status_with(&gate, &client, "/jupyter/api/kernels", &cookie).await,
        200
    );

    // Start a kernel and run code over its WebSocket, all under the base URL.
    let kernel: serde_json::Value = client
        .post(gate.url("/jupyter/api/kernels"))
        .header("cookie", &cookie)
        .header("origin", gate.origin())
        .json(&serde_json::json!({"name": "python3"}))
        .send()
        .await
        .expect("start kernel")
        .json()
        .await
        .expect("kernel json");
    let id = kernel["id"].as_str().expect("kernel id");
    let mut request = format!(
        "wss://localhost:{}/jupyter/api/kernels/{id}/channels",
        gate.https_addr().port()
    )
    .into_client_request()
    .expect("ws request");
    request
        .headers_mut()
        .insert("cookie", HeaderValue::from_str(&cookie).expect("cookie"));
    request.headers_mut().insert(
        "origin",
        HeaderValue::from_str(&gate.origin()).expect("origin"),
    );
    let tls = gate.tls_connect().await;
    let (mut ws, _) = within(
        T,
        "kernel websocket",
        tokio_tungstenite::client_async(request, tls),
    )
    .await
    .expect("websocket under base_url");
    assert_eq!(common::kernel::execute(&mut ws, "6*7").await, "42");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn legacy_jupyter_hash_logs_in_and_logs_a_rehash_hint() {
    use sha1::Digest;
    let up = TestUpstream::start().await;
    let password = "legacy-password-123";
    let salt = "0123456789ab";
    let digest = sha1::Sha1::digest(format!("{password}{salt}").as_bytes());
    let legacy = format!("sha1:{salt}:{}", hex::encode(digest));
    let mut user = toml::Table::new();
    user.insert("name".into(), "olduser".into());
    user.insert("password_hash".into(), legacy.into());
    let gate = Nbgate::builder()
        .upstream(&up.url())
        .set("users", toml::Value::Array(vec![toml::Value::Table(user)]))
        .start()
        .await;
    let client = bare_client(&gate);
    let ok = within(
        T,
        "login",
        login_as(&gate, &client, "/", "olduser", password),
    )
    .await;
    assert_eq!(ok.status(), 303);
    let hint = gate
        .wait_for_line(&["legacy Jupyter format", "olduser"], T)
        .await;
    assert!(!hint.contains(password), "{hint}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passwords_from_environment_and_systemd_credentials_log_in() {
    let up = TestUpstream::start().await;
    let (hash, _) = common::nbgate::test_hashes();

    // A plain password in the environment (the `docker run -e` pattern): it
    // logs in, and it is gone from /proc/PID/environ and from the log.
    let plain = "plain-env-password-4711";
    let gate = Nbgate::builder()
        .upstream(&up.url())
        .remove("users")
        .set("auth.password_env", "NBGATE_TEST_PASSWORD")
        .env("NBGATE_TEST_PASSWORD", plain)
        .start()
        .await;
    let client = bare_client(&gate);
    let ok = within(
        T,
        "env password login",
        login_as(&gate, &client, "/", "jupyter", plain),
    )
    .await;
    assert_eq!(ok.status(), 303);
    let environ = std::fs::read(format!("/proc/{}/environ", gate.pid())).expect("environ");
    assert!(
        !environ.windows(plain.len()).any(|w| w == plain.as_bytes()),
        "the plain password is still readable in /proc/PID/environ"
    );
    assert!(!gate.log_text().contains(plain), "the password was logged");
    drop(gate);

    // A hash in the environment.
    let gate = Nbgate::builder()
        .upstream(&up.url())
        .remove("users")
        .set("auth.password_hash_env", "NBGATE_TEST_HASH")
        .env("NBGATE_TEST_HASH", hash)
        .start()
        .await;
    let client = bare_client(&gate);
    let ok = within(
        T,
        "env hash login",
        login_as(&gate, &client, "/", "jupyter", TEST_PASSWORD),
    )
    .await;
    assert_eq!(ok.status(), 303);
    let wrong = within(
        T,
        "env hash wrong",
        login_as(&gate, &client, "/", "jupyter", "not-it-at-all"),
    )
    .await;
    assert_eq!(wrong.status(), 401);
    drop(gate);

    // A systemd credential (`LoadCredential=nbgate-password-hash:...`).
    let creds = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        creds.path().join("nbgate-password-hash"),
        format!("{hash}\n"),
    )
    .expect("write");
    let gate = Nbgate::builder()
        .upstream(&up.url())
        .remove("users")
        .env("CREDENTIALS_DIRECTORY", &creds.path().display().to_string())
        .start()
        .await;
    let client = bare_client(&gate);
    let ok = within(
        T,
        "credential login",
        login_as(&gate, &client, "/", "jupyter", TEST_PASSWORD),
    )
    .await;
    assert_eq!(ok.status(), 303);
    assert!(
        !gate.log_text().contains("first start"),
        "a credential must replace the generated default password"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_user_costs_the_same_time_as_a_wrong_password() {
    let up = TestUpstream::start().await;
    let gate = Nbgate::builder()
        .upstream(&up.url())
        .set("policy.lockout.address_threshold", 1000)
        .start()
        .await;
    let client = bare_client(&gate);
    let mut unknown = Vec::new();
    let mut wrong = Vec::new();
    // Alternated so that machine load hits both alike.
    for _ in 0..7 {
        for (user, times) in [("nobody-here", &mut unknown), (TEST_USER, &mut wrong)] {
            let started = std::time::Instant::now();
            let r = within(
                T,
                "failed login",
                login_as(&gate, &client, "/", user, "wrong-password-x"),
            )
            .await;
            times.push(started.elapsed());
            assert_eq!(r.status(), 401);
            let body = r.text().await.expect("body");
            assert!(body.contains("Wrong user name or password"), "{body}");
        }
    }
    // The minimum is the intrinsic cost: load from tests running alongside
    // (and the low priority hashing runs at) only ever adds time.
    let u = unknown.iter().min().expect("samples").as_secs_f64();
    let w = wrong.iter().min().expect("samples").as_secs_f64();
    // Without a reference hash an unknown user answers in about a
    // millisecond; with a differently priced one (the bug this caught: a
    // 600k-round dummy against 100k-round user hashes) about 10x apart.
    assert!(
        u > w / 3.0 && u < w * 3.0,
        "fastest unknown user {u:.3}s vs fastest wrong password {w:.3}s"
    );
}
