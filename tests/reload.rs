//! Live reload (`systemctl reload`, SIGHUP) against a real Jupyter: what was open before a
//! reload keeps working after it (a kernel WebSocket runs code, a download completes
//! byte-identical), what the new file says is in force for the next request (a new user logs
//! in, a new allowlist and upstream apply), a removed user's tunnel is closed and cookie refused,
//! lockout state survives, a bad file changes nothing, settings only a restart can change are
//! named, and twenty reloads under a steady load of requests and tunnels fail nothing.

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::h2ws::{h2_connection, h2_websocket, h2_ws};
use common::kernel::{execute, start_kernel};
use common::login::{
    bare_client, bare_client_from, login_as, session_cookie, ws_connect_with_cookie,
};
use common::nbgate::{closed_by_server, TEST_PASSWORD, TEST_USER};
use common::{poll_until, within, Jupyter, Nbgate, PatternBytes, TestUpstream};
use futures_util::StreamExt;

const T: Duration = Duration::from_secs(30);

fn hash(password: &str) -> String {
    use nbgate::auth::password::{hash_password_with_iterations, MIN_ITERATIONS};
    hash_password_with_iterations(password, MIN_ITERATIONS).expect("hash")
}

/// Rewrites nbgate's config file through `edit`.
fn edit_config(gate: &Nbgate, edit: impl FnOnce(&mut toml::Table)) {
    let path = gate.config_path();
    let mut table: toml::Table = std::fs::read_to_string(path)
        .expect("read config")
        .parse()
        .expect("config is TOML");
    edit(&mut table);
    std::fs::write(path, toml::to_string(&table).expect("TOML")).expect("write config");
}

fn section<'a>(table: &'a mut toml::Table, name: &str) -> &'a mut toml::Table {
    table
        .entry(name.to_owned())
        .or_insert_with(|| toml::Value::Table(toml::Table::new()))
        .as_table_mut()
        .expect("a table")
}

fn add_user(table: &mut toml::Table, name: &str, password: &str) {
    let mut user = toml::Table::new();
    user.insert("name".into(), name.into());
    user.insert("password_hash".into(), hash(password).into());
    table
        .get_mut("users")
        .and_then(toml::Value::as_array_mut)
        .expect("[[users]]")
        .push(toml::Value::Table(user));
}

fn remove_user(table: &mut toml::Table, name: &str) {
    table
        .get_mut("users")
        .and_then(toml::Value::as_array_mut)
        .expect("[[users]]")
        .retain(|u| u.get("name").and_then(toml::Value::as_str) != Some(name));
}

/// Sends SIGHUP and waits for the reload's outcome line; returns it.
async fn reload(gate: &Nbgate) -> String {
    let outcome = |l: &String| {
        l.contains("configuration reloaded") || l.contains("configuration not reloaded")
    };
    let before = gate.log_lines().iter().filter(|l| outcome(l)).count();
    gate.signal(libc::SIGHUP);
    poll_until(T, "the reload's outcome in nbgate's log", || async {
        gate.log_lines().into_iter().filter(outcome).nth(before)
    })
    .await
}

async fn reload_ok(gate: &Nbgate) {
    let line = reload(gate).await;
    assert!(
        line.contains("configuration reloaded"),
        "reload refused: {line}\n{}",
        gate.log_text()
    );
}

/// Logs in as `user` from a fresh client; returns the session cookie.
async fn session_of(gate: &Nbgate, user: &str, password: &str) -> String {
    let client = bare_client(gate);
    let r = login_as(gate, &client, "/", user, password).await;
    assert_eq!(r.status(), 303, "login as {user}");
    session_cookie(&r)
}

/// `GET /api/status` with a session cookie: the status code.
async fn status_with_cookie(gate: &Nbgate, cookie: &str) -> u16 {
    within(
        T,
        "GET /api/status with a cookie",
        bare_client(gate)
            .get(gate.url("/api/status"))
            .header("cookie", cookie)
            .send(),
    )
    .await
    .expect("GET /api/status")
    .status()
    .as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kernel_websocket_and_a_download_survive_a_reload_and_a_new_user_logs_in() {
    const TOTAL: usize = 32 << 20;
    let jupyter = Jupyter::start().await;
    let mut content = vec![0u8; TOTAL];
    PatternBytes::new(7).fill(&mut content);
    std::fs::write(jupyter.root_dir().join("big.bin"), &content).expect("write big.bin");
    let want = common::sha256_hex(&content);
    drop(content);
    let gate = Nbgate::start_for(&jupyter).await;

    let kernel = start_kernel(&gate).await;
    let mut ws = gate
        .ws_connect(&format!("/api/kernels/{kernel}/channels"))
        .await;
    assert_eq!(execute(&mut ws, "x = 20; x + 1").await, "21");

    let response = within(
        T,
        "GET /files/big.bin",
        gate.client().get(gate.url("/files/big.bin")).send(),
    )
    .await
    .expect("GET /files/big.bin");
    assert_eq!(response.status(), 200);
    let mut body = response.bytes_stream();
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    let first = within(T, "first chunk", body.next())
        .await
        .expect("a first chunk")
        .expect("first chunk");
    ctx.update(&first);
    let mut bytes = first.len();

    edit_config(&gate, |c| add_user(c, "newcomer", "newcomer-pass-1"));
    reload_ok(&gate).await;

    within(T, "the rest of the download", async {
        while let Some(chunk) = body.next().await {
            let chunk = chunk.expect("a chunk after the reload");
            ctx.update(&chunk);
            bytes += chunk.len();
        }
    })
    .await;
    assert_eq!(bytes, TOTAL, "the download spanning the reload is whole");
    assert_eq!(hex::encode(ctx.finish()), want, "and byte-identical");

    // The kernel WebSocket opened before the reload runs code after it (its state kept).
    assert_eq!(execute(&mut ws, "x * 2").await, "40");

    // A user the reload added logs in without a restart, and the old one still does.
    let cookie = session_of(&gate, "newcomer", "newcomer-pass-1").await;
    assert_eq!(status_with_cookie(&gate, &cookie).await, 200);
    let cookie = session_of(&gate, TEST_USER, TEST_PASSWORD).await;
    assert_eq!(status_with_cookie(&gate, &cookie).await, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_user_loses_their_tunnel_and_cookie_and_others_keep_theirs() {
    let jupyter = Jupyter::start().await;
    let gate = Nbgate::builder().jupyter(&jupyter).start().await;
    edit_config(&gate, |c| {
        add_user(c, "bob", "bob-password-1");
        add_user(c, "carol", "carol-password-1");
    });
    reload_ok(&gate).await;

    let kernel = start_kernel(&gate).await;
    let path = format!("/api/kernels/{kernel}/channels");
    let bob = session_of(&gate, "bob", "bob-password-1").await;
    let carol = session_of(&gate, "carol", "carol-password-1").await;
    let (mut bob_ws, _) = ws_connect_with_cookie(&gate, &path, &bob)
        .await
        .expect("bob's tunnel");
    let (mut carol_ws, _) = ws_connect_with_cookie(&gate, &path, &carol)
        .await
        .expect("carol's tunnel");
    assert_eq!(execute(&mut bob_ws, "1+1").await, "2");

    // Bob is removed; carol's password changes.
    edit_config(&gate, |c| {
        remove_user(c, "bob");
        remove_user(c, "carol");
        add_user(c, "carol", "carol-password-2");
    });
    reload_ok(&gate).await;

    assert_eq!(closed_by_server(&mut bob_ws).await, Some(1001));
    assert_eq!(closed_by_server(&mut carol_ws).await, Some(1001));
    assert_eq!(status_with_cookie(&gate, &bob).await, 401, "bob's cookie");
    assert_eq!(
        status_with_cookie(&gate, &carol).await,
        401,
        "carol's old cookie"
    );
    let bob_again = login_as(&gate, &bare_client(&gate), "/", "bob", "bob-password-1").await;
    assert_eq!(bob_again.status(), 401, "bob cannot log in any more");
    let carol = session_of(&gate, "carol", "carol-password-2").await;
    assert_eq!(status_with_cookie(&gate, &carol).await, 200);
    gate.wait_for_line(
        &[
            "credentials_revoked",
            "user=bob",
            "user removed",
            "tunnels_closed=1",
        ],
        T,
    )
    .await;

    // The API-token tunnel of the test user was never touched.
    let mut ws = gate.ws_connect(&path).await;
    assert_eq!(execute(&mut ws, "3*3").await, "9");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_user_loses_their_websocket_on_http2_and_others_keep_theirs() {
    let jupyter = Jupyter::start().await;
    let gate = Nbgate::builder().jupyter(&jupyter).start().await;
    edit_config(&gate, |c| add_user(c, "bob", "bob-password-1"));
    reload_ok(&gate).await;

    let path = format!("/api/kernels/{}/channels", start_kernel(&gate).await);
    let bob = session_of(&gate, "bob", "bob-password-1").await;
    let mine = session_of(&gate, TEST_USER, TEST_PASSWORD).await;
    let origin = gate.origin();
    // Bob's and the test user's WebSockets, streams of one HTTP/2 connection each.
    let mut bob_conn = h2_connection(&gate).await;
    let mut bob_ws = h2_ws(
        &mut bob_conn,
        &gate,
        &path,
        &[("cookie", &bob), ("origin", &origin)],
    )
    .await;
    let mut my_conn = h2_connection(&gate).await;
    let mut my_ws = h2_ws(
        &mut my_conn,
        &gate,
        &path,
        &[("cookie", &mine), ("origin", &origin)],
    )
    .await;
    assert_eq!(execute(&mut bob_ws, "1+1").await, "2");

    edit_config(&gate, |c| remove_user(c, "bob"));
    reload_ok(&gate).await;
    // Bob's stream gets a close frame (1001) and ends; his connection refuses him from now on.
    assert_eq!(closed_by_server(&mut bob_ws).await, Some(1001));
    gate.wait_for_line(&["credentials_revoked", "user=bob", "tunnels_closed=1"], T)
        .await;
    let (head, _) = h2_websocket(
        &mut bob_conn,
        &gate,
        &path,
        &[("cookie", &bob), ("origin", &origin)],
    )
    .await;
    assert_eq!(head.status, 401, "{head:?}");
    // The test user's WebSocket on the other connection was never touched.
    assert_eq!(execute(&mut my_ws, "3*3").await, "9");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_file_changes_nothing_and_its_error_names_file_and_line() {
    let jupyter = Jupyter::start().await;
    let gate = Nbgate::builder()
        .jupyter(&jupyter)
        .set("admin.listen", "127.0.0.1:0")
        .start()
        .await;
    let kernel = start_kernel(&gate).await;
    let mut ws = gate
        .ws_connect(&format!("/api/kernels/{kernel}/channels"))
        .await;

    // Valid TOML, invalid value: and the same file removes the test user.
    let path = gate.config_path().to_owned();
    edit_config(&gate, |c| {
        remove_user(c, TEST_USER);
        add_user(c, "other", "other-password-1");
        section(c, "policy").insert("allow".into(), vec!["not-a-network"].into());
    });
    let line = reload(&gate).await;
    assert!(line.contains("configuration not reloaded"), "{line}");
    let text = gate.log_text();
    let error = text
        .lines()
        .find(|l| l.contains("configuration not reloaded"))
        .expect("the error line");
    let allow_line = std::fs::read_to_string(&path)
        .expect("config")
        .lines()
        .position(|l| l.starts_with("allow = "))
        .expect("the allow line")
        + 1;
    assert!(
        error.contains(&format!("{}:{allow_line}: policy.allow", path.display())),
        "the error names the file, line and key: {error}"
    );

    // Nothing changed: the test user's cookie, token and tunnel all still work; the new user
    // of the refused file does not exist.
    let cookie = session_of(&gate, TEST_USER, TEST_PASSWORD).await;
    assert_eq!(status_with_cookie(&gate, &cookie).await, 200);
    assert_eq!(execute(&mut ws, "2+2").await, "4");
    let other = login_as(&gate, &bare_client(&gate), "/", "other", "other-password-1").await;
    assert_eq!(other.status(), 401, "the refused file's user cannot log in");

    // Broken TOML is refused the same way.
    std::fs::write(&path, "[server\nlisten = ").expect("write");
    let line = reload(&gate).await;
    assert!(line.contains("configuration not reloaded"), "{line}");
    assert_eq!(status_with_cookie(&gate, &cookie).await, 200);

    // Prometheus sees both refusals, and that the last reload failed.
    let up = gate.wait_for_log("admin endpoint up", T).await;
    let admin = common::nbgate::log_field(&up, "admin_addr").expect("admin_addr");
    let text = within(
        T,
        "GET /metrics",
        reqwest::Client::new()
            .get(format!("http://{admin}/metrics"))
            .send(),
    )
    .await
    .expect("scrape")
    .text()
    .await
    .expect("metrics");
    assert!(
        text.lines()
            .any(|l| l == "nbgate_reloads_total{result=\"failure\"} 2")
            && text.lines().any(|l| l == "nbgate_reload_last_success 0"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_and_upstream_changes_apply_to_the_next_request_and_lockouts_survive() {
    let jupyter = Jupyter::start().await;
    let gate = Nbgate::builder()
        .jupyter(&jupyter)
        .set("policy.lockout.address_threshold", 3)
        .start()
        .await;

    // Lock 127.0.0.3 out with three wrong passwords.
    let guesser = bare_client_from(&gate, Some("127.0.0.3".parse().expect("ip")));
    for _ in 0..3 {
        login_as(&gate, &guesser, "/", TEST_USER, "wrong-password").await;
    }
    let locked = login_as(&gate, &guesser, "/", TEST_USER, TEST_PASSWORD).await;
    assert_eq!(locked.status(), 429, "locked out before the reload");

    // Only 127.0.0.1 is allowed now, and the upstream is another server.
    let other = TestUpstream::start().await;
    edit_config(&gate, |c| {
        section(c, "policy").insert("allow".into(), vec!["127.0.0.1/32", "127.0.0.3/32"].into());
        section(c, "upstream").insert("url".into(), other.url().into());
    });
    reload_ok(&gate).await;

    let locked = login_as(&gate, &guesser, "/", TEST_USER, TEST_PASSWORD).await;
    assert_eq!(locked.status(), 429, "the lock survives the reload");
    let outsider = bare_client_from(&gate, Some("127.0.0.2".parse().expect("ip")));
    let refused = within(
        T,
        "a request from 127.0.0.2",
        outsider.get(gate.url("/_nbgate/login")).send(),
    )
    .await;
    assert!(
        refused.is_err(),
        "127.0.0.2 is no longer allowed: {refused:?}"
    );
    let r = within(
        T,
        "GET through the new upstream",
        gate.client()
            .get(gate.url("/echo"))
            .headers(gate.auth_headers())
            .send(),
    )
    .await
    .expect("GET /echo");
    assert_eq!(r.status(), 200);
    assert!(
        other.connections() > 0,
        "the request reached the new upstream"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settings_only_a_restart_can_change_are_named_and_the_rest_applies() {
    let jupyter = Jupyter::start().await;
    let gate = Nbgate::start_for(&jupyter).await;
    edit_config(&gate, |c| {
        section(c, "server").insert("max_connections".into(), 77.into());
        section(c, "server").insert("listen".into(), vec!["127.0.0.1:1"].into());
        add_user(c, "dora", "dora-password-1");
    });
    reload_ok(&gate).await;
    gate.wait_for_line(&["server.max_connections changed", "next restart"], T)
        .await;
    gate.wait_for_line(&["server.listen changed", "next restart"], T)
        .await;
    // Still served where it was, and the rest of the file is in force.
    let cookie = session_of(&gate, "dora", "dora-password-1").await;
    assert_eq!(status_with_cookie(&gate, &cookie).await, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_reloads_under_steady_load_fail_no_request_and_no_tunnel() {
    let jupyter = Jupyter::start().await;
    let gate = Arc::new(Nbgate::start_for(&jupyter).await);
    let kernel = start_kernel(&gate).await;
    let path = format!("/api/kernels/{kernel}/channels");

    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicUsize::new(0));
    let mut load = Vec::new();
    for i in 0..4 {
        let (gate, stop, done) = (Arc::clone(&gate), Arc::clone(&stop), Arc::clone(&done));
        load.push(tokio::spawn(async move {
            // Half on HTTP/2, half on HTTP/1.1 keep-alive.
            let client = if i % 2 == 0 {
                gate.client()
            } else {
                gate.client_http1()
            };
            while !stop.load(Ordering::Relaxed) {
                let r = within(
                    T,
                    "a request during reloads",
                    client
                        .get(gate.url("/api/contents"))
                        .headers(gate.auth_headers())
                        .send(),
                )
                .await
                .expect("a request during reloads");
                assert_eq!(r.status(), 200, "a request during reloads");
                r.bytes().await.expect("its body");
                done.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    let executed = Arc::new(AtomicUsize::new(0));
    let tunnels = {
        let (gate, stop, path) = (Arc::clone(&gate), Arc::clone(&stop), path.clone());
        let executed = Arc::clone(&executed);
        tokio::spawn(async move {
            let mut ws = gate.ws_connect(&path).await;
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                assert_eq!(
                    execute(&mut ws, &format!("{n} + 1")).await,
                    format!("{}", n + 1)
                );
                executed.fetch_add(1, Ordering::Relaxed);
            }
        })
    };

    for round in 0..20 {
        let before = done.load(Ordering::Relaxed);
        let ran = executed.load(Ordering::Relaxed);
        edit_config(&gate, |c| {
            let rl = section(section(c, "policy"), "rate_limit");
            rl.insert("logged_in_burst".into(), (1000 + round).into());
        });
        reload_ok(&gate).await;
        // Requests and code run between reloads (the load is steady, not paused).
        poll_until(T, "requests and code between reloads", || async {
            (done.load(Ordering::Relaxed) > before && executed.load(Ordering::Relaxed) > ran)
                .then_some(())
        })
        .await;
    }
    stop.store(true, Ordering::Relaxed);
    for task in load {
        task.await.expect("no request failed");
    }
    tunnels.await.expect("the tunnel never failed");
    assert!(
        !gate.log_text().contains("configuration not reloaded"),
        "{}",
        gate.log_text()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn switching_from_self_signed_to_certificate_files_applies_to_new_handshakes() {
    let jupyter = Jupyter::start().await;
    let gate = Nbgate::start_for(&jupyter).await;
    // A connection made before the switch (it trusts the self-signed certificate).
    let before = gate.client_http1();
    let r = within(
        T,
        "GET before",
        before
            .get(gate.url("/api/status"))
            .headers(gate.auth_headers())
            .send(),
    )
    .await
    .expect("GET before the switch");
    assert_eq!(r.status(), 200);
    assert!(
        r.headers().get("strict-transport-security").is_none(),
        "no HSTS when self-signed"
    );

    let pair = common::certs::localhost();
    let (cert, key) = (gate.dir().join("files.crt"), gate.dir().join("files.key"));
    std::fs::write(&cert, &pair.cert_pem).expect("write cert");
    std::fs::write(&key, &pair.key_pem).expect("write key");
    edit_config(&gate, |c| {
        let tls = section(c, "tls");
        tls.insert("mode".into(), "files".into());
        tls.insert("cert_file".into(), cert.display().to_string().into());
        tls.insert("key_file".into(), key.display().to_string().into());
    });
    reload_ok(&gate).await;

    let trusting_files = reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(
            reqwest::Certificate::from_pem(pair.cert_pem.as_bytes()).expect("PEM"),
        )
        .resolve("localhost", gate.https_addr())
        .build()
        .expect("client");
    let r = within(
        T,
        "GET with the files certificate",
        trusting_files
            .get(gate.url("/api/status"))
            .headers(gate.auth_headers())
            .send(),
    )
    .await
    .expect("a new handshake gets the certificate from the files");
    assert_eq!(r.status(), 200);
    assert!(
        r.headers().get("strict-transport-security").is_some(),
        "HSTS is on by default with certificate files"
    );
    // The connection opened before the switch goes on.
    let r = within(
        T,
        "GET after",
        before
            .get(gate.url("/api/status"))
            .headers(gate.auth_headers())
            .send(),
    )
    .await
    .expect("the old connection still serves");
    assert_eq!(r.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_log_level_follows_a_reload() {
    let jupyter = Jupyter::start().await;
    // Without RUST_LOG (which would win over log.level).
    let gate = Nbgate::builder()
        .jupyter(&jupyter)
        .env("RUST_LOG", "")
        .set("log.level", "info")
        .start()
        .await;
    let get = || async {
        within(
            T,
            "GET /api/status",
            gate.client()
                .get(gate.url("/api/status"))
                .headers(gate.auth_headers())
                .send(),
        )
        .await
        .expect("GET /api/status")
        .bytes()
        .await
        .expect("body");
    };
    let access_lines = || {
        gate.log_lines()
            .iter()
            .filter(|l| l.contains("nbgate::access") && l.contains("/api/status"))
            .count()
    };
    get().await;
    poll_until(T, "an access line at info", || async {
        (access_lines() > 0).then_some(())
    })
    .await;
    edit_config(&gate, |c| {
        section(c, "log").insert("level".into(), "info,nbgate::access=off".into());
    });
    reload_ok(&gate).await;
    let before = access_lines();
    for _ in 0..3 {
        get().await;
    }
    // A marker after the requests: once it is logged, their lines would have been too.
    edit_config(&gate, |c| add_user(c, "marker", "marker-password-1"));
    reload_ok(&gate).await;
    assert_eq!(
        access_lines(),
        before,
        "no access lines with nbgate::access=off"
    );
}
