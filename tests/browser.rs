//! End-to-end with real clients: headless Chromium (Playwright, Debian's
//! `chromium`) logs in through nbgate's form and runs a notebook cell in
//! JupyterLab over the hybrid post-quantum key exchange X25519MLKEM768, its
//! kernel WebSocket a stream of the page's HTTP/2 connection (RFC 8441), and
//! again with HTTP/2 disabled (an upgraded HTTP/1.1 connection); a Python API
//! client uses an nbgate API token over HTTPS and a
//! kernel WebSocket, and a wrong token gets 401; two Chromium contexts log in
//! as one user and the first ends the second's session on the sessions page;
//! on a phone-sized screen Chromium turns TOTP on from the account page and
//! logs in again with the password and a code.
//! Screenshots are kept in `target/test-artifacts/browser/`, `browser-http1/`,
//! `browser-sessions/` and `browser-totp/`.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::nbgate::{log_field, TEST_API_TOKEN, TEST_PASSWORD, TEST_USER};
use common::process::kill_tree;
use common::{Jupyter, Nbgate};

fn python() -> PathBuf {
    let venv = std::env::var_os("NBGATE_TEST_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv"));
    let py = venv.join("bin/python");
    assert!(
        py.exists(),
        "{} is missing: run tests/run.sh to install the test venv",
        py.display()
    );
    py
}

fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/browser")
        .join(name)
}

/// Runs a script to completion within `limit`; the whole process tree
/// (Chromium included) is killed on timeout or panic.
fn run(args: &[&str], env: &[(&str, &str)], limit: Duration) -> (bool, String) {
    let mut cmd = Command::new(python());
    cmd.args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .env_remove("REQUESTS_CA_BUNDLE")
        .env_remove("CURL_CA_BUNDLE");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("start python");
    let read = |r: Option<Box<dyn std::io::Read + Send>>| {
        std::thread::spawn(move || {
            let mut s = String::new();
            if let Some(mut r) = r {
                let _ = r.read_to_string(&mut s);
            }
            s
        })
    };
    let out_t = read(
        child
            .stdout
            .take()
            .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
    );
    let err_t = read(
        child
            .stderr
            .take()
            .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
    );
    struct Guard(std::process::Child);
    impl Drop for Guard {
        fn drop(&mut self) {
            if matches!(self.0.try_wait(), Ok(None)) {
                kill_tree(&mut self.0);
            }
        }
    }
    let mut guard = Guard(child);
    let start = Instant::now();
    let finished = loop {
        if let Some(status) = guard.0.try_wait().expect("wait") {
            break Some(status);
        }
        if start.elapsed() > limit {
            kill_tree(&mut guard.0);
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    drop(guard);
    let text = format!(
        "{}{}{}",
        out_t.join().unwrap_or_default(),
        err_t.join().unwrap_or_default(),
        if finished.is_none() {
            "\n(timed out)"
        } else {
            ""
        }
    );
    (finished.is_some_and(|s| s.success()), text)
}

/// Runs the browser script `name` against `gate` as the test user (`--url`, `--user`,
/// `--screenshots`, `--timeout budget_secs`, then `extra`), screenshots in
/// `target/test-artifacts/<shots_dir>`; asserts that it ended with `OK`. Returns that directory.
async fn browser_flow(
    gate: &Nbgate,
    name: &str,
    shots_dir: &str,
    extra: &[&str],
    budget_secs: u64,
) -> PathBuf {
    let shots = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("target/test-artifacts")
        .join(shots_dir);
    std::fs::create_dir_all(&shots).expect("artifact dir");
    let mut args: Vec<String> = vec![
        script(name).to_str().expect("utf-8").to_owned(),
        "--url".into(),
        format!("https://localhost:{}", gate.https_addr().port()),
        "--user".into(),
        TEST_USER.into(),
        "--screenshots".into(),
        shots.display().to_string(),
        "--timeout".into(),
        budget_secs.to_string(),
    ];
    args.extend(extra.iter().map(|a| a.to_string()));
    let (ok, out) = tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        run(
            &args,
            &[("NBGATE_TEST_PASSWORD", TEST_PASSWORD)],
            Duration::from_secs(budget_secs + 30),
        )
    })
    .await
    .expect("join");
    assert!(
        ok,
        "browser flow {name} failed:\n{out}\n--- nbgate log ---\n{}",
        gate.log_text()
    );
    assert!(out.trim_end().ends_with("OK"), "{out}");
    shots
}

/// Chromium logs in through nbgate's form and runs a cell in JupyterLab, the page loaded over
/// `protocol` (`h2`, or `http/1.1` with HTTP/2 disabled); screenshots go to `shots_dir`.
/// Returns nbgate (still running, for its log).
async fn chromium_runs_a_cell(protocol: &str, shots_dir: &str) -> (Jupyter, Nbgate) {
    let jupyter = Jupyter::start_lab().await;
    let gate = Nbgate::start_for(&jupyter).await;
    // Chromium offers the hybrid post-quantum key exchange; the harness's own clients (ring)
    // cannot, so a handshake logged with it below is the browser's.
    let hybrid = ["tls key exchange", "group=X25519MLKEM768"];
    assert_eq!(gate.find_line(&hybrid), None);
    let shots = browser_flow(
        &gate,
        "login_notebook.py",
        shots_dir,
        &["--protocol", protocol],
        150,
    )
    .await;
    for png in ["login.png", "login-error.png", "notebook.png"] {
        assert!(shots.join(png).exists(), "screenshot {png} missing");
    }
    assert!(
        gate.find_line(&hybrid).is_some(),
        "Chromium did not negotiate X25519MLKEM768; nbgate log:\n{}",
        gate.log_text()
    );
    (jupyter, gate)
}

/// The `tunnel opened` line of the notebook kernel's WebSocket (`/api/kernels/ID/channels`).
async fn kernel_tunnel_line(gate: &Nbgate) -> String {
    gate.wait_for_line(
        &["tunnel opened", "/api/kernels/", "/channels"],
        Duration::from_secs(10),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_logs_in_and_runs_a_cell_with_its_kernel_websocket_on_http2() {
    let (_jupyter, gate) = chromium_runs_a_cell("h2", "browser").await;
    // Chromium opens WebSockets as streams of the page's HTTP/2 connection once nbgate
    // advertises extended CONNECT (RFC 8441): nbgate's tunnel log says which way each came.
    let line = kernel_tunnel_line(&gate).await;
    assert_eq!(
        log_field(&line, "via").as_deref(),
        Some("h2"),
        "the kernel's WebSocket did not come over HTTP/2: {line}"
    );
    let upgraded: Vec<String> = gate
        .log_lines()
        .into_iter()
        .filter(|l| l.contains("tunnel opened") && l.contains("via=\"http/1.1\""))
        .collect();
    assert!(
        upgraded.is_empty(),
        "WebSockets opened beside the HTTP/2 connection: {upgraded:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_without_http2_runs_a_cell_over_an_upgraded_websocket() {
    // A browser behind something that only speaks HTTP/1.1 still works.
    let (_jupyter, gate) = chromium_runs_a_cell("http/1.1", "browser-http1").await;
    let line = kernel_tunnel_line(&gate).await;
    assert_eq!(
        log_field(&line, "via").as_deref(),
        Some("http/1.1"),
        "{line}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_api_client_uses_a_token_and_a_wrong_token_gets_401() {
    let jupyter = Jupyter::start().await;
    let gate = Nbgate::start_for(&jupyter).await;
    let url = format!("https://localhost:{}", gate.https_addr().port());
    let cafile = gate.state_dir().join("tls/self-signed.crt");
    let ca = cafile.display().to_string();
    let api = script("api_client.py").display().to_string();
    let (ok, out) = tokio::task::spawn_blocking({
        let (url, ca, api) = (url.clone(), ca.clone(), api.clone());
        move || {
            run(
                &[&api, "--url", &url, "--cafile", &ca],
                &[("NBGATE_TEST_TOKEN", TEST_API_TOKEN)],
                Duration::from_secs(120),
            )
        }
    })
    .await
    .expect("join");
    assert!(
        ok,
        "API client with a good token failed:\n{out}\n--- nbgate log ---\n{}",
        gate.log_text()
    );
    let (ok, out) = tokio::task::spawn_blocking(move || {
        run(
            &[&api, "--url", &url, "--cafile", &ca, "--expect-fail"],
            &[("NBGATE_TEST_TOKEN", "definitely-not-a-valid-token")],
            Duration::from_secs(120),
        )
    })
    .await
    .expect("join");
    assert!(ok, "wrong token was not refused as expected:\n{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_ends_another_session_by_clicking_its_button() {
    let jupyter = Jupyter::start().await;
    let gate = Nbgate::start_for(&jupyter).await;
    let shots = browser_flow(&gate, "sessions.py", "browser-sessions", &[], 90).await;
    for png in ["sessions.png", "sessions-ended.png"] {
        assert!(shots.join(png).exists(), "screenshot {png} missing");
    }
    gate.wait_for_line(
        &["nbgate::audit", "session_revoked", TEST_USER],
        Duration::from_secs(10),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_on_a_phone_turns_totp_on_and_logs_in_with_a_code() {
    let jupyter = Jupyter::start().await;
    let gate = Nbgate::start_for(&jupyter).await;
    let shots = browser_flow(&gate, "totp.py", "browser-totp", &[], 120).await;
    for png in [
        "account.png",
        "recovery-codes.png",
        "second-step.png",
        "logged-in.png",
    ] {
        assert!(shots.join(png).exists(), "screenshot {png} missing");
    }
    gate.wait_for_line(
        &[
            "nbgate::audit",
            "login_success",
            "method=\"totp\"",
            TEST_USER,
        ],
        Duration::from_secs(10),
    )
    .await;
}

/// oidc: Chromium opens JupyterLab, is sent to the login page, signs in with a real OpenID
/// provider (`tests/oidc/provider.mjs`) and lands in JupyterLab; the login page fits a phone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_signs_in_through_an_openid_provider_to_jupyterlab() {
    let jupyter = Jupyter::start_lab().await;
    let port = common::pebble::free_port(false);
    let provider = common::oidc::Provider::start(port, "normal", 0).await;
    let gate = common::oidc::with_providers(
        common::NbgateBuilder::new(),
        port,
        &[("test", &provider.issuer)],
    )
    .jupyter(&jupyter)
    .start()
    .await;
    let shots = browser_flow(
        &gate,
        "oidc_login.py",
        "browser-oidc",
        &["--provider", "Test IdP test", "--account", "alice"],
        150,
    )
    .await;
    for png in [
        "sso-login.png",
        "sso-provider.png",
        "sso-lab.png",
        "sso-login-phone.png",
    ] {
        assert!(shots.join(png).exists(), "screenshot {png} missing");
    }
    let line = gate
        .wait_for_line(
            &["event=\"login_success\"", "method=\"oidc\""],
            Duration::from_secs(10),
        )
        .await;
    assert_eq!(
        log_field(&line, "user").as_deref(),
        Some("alice@example.com")
    );
}
