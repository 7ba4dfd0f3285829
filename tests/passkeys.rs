//! Passkeys (issue 22 §2). In Chromium with a virtual authenticator from the DevTools protocol
//! (`tests/browser/passkeys.py`): log in with the password, register a passkey, log out, log in
//! with it into JupyterLab, remove it, a login with it is refused; the password form works with
//! JavaScript off. Without a browser: the JSON endpoints' refusals (bad CSRF, bad JSON, an
//! expired or replayed challenge, a wrong host, a wrong origin) are clear JSON errors with
//! audit lines, failed assertions count toward the lockout like wrong passwords, and the
//! credential file is private (0600 in a 0700 directory). Screenshots are kept in
//! `target/test-artifacts/browser-passkeys/`.

mod common;

use std::time::Duration;

use base64::Engine as _;
use common::browser::browser_flow;
use common::login::{bare_client, cookie_pair, hidden, login, session_cookie, set_cookies};
use common::nbgate::{TEST_PASSWORD, TEST_USER};
use common::{file_mode, Jupyter, Nbgate, NbgateBuilder};

const T: Duration = Duration::from_secs(10);

/// nbgate as users reach it in these tests: `https://localhost:PORT`, the passkeys' RP id.
fn passkey_gate() -> NbgateBuilder {
    Nbgate::builder().set("auth.passkeys.rp_id", "localhost")
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// A browser before login: the login page's CSRF binding cookie and token.
struct Anonymous {
    client: reqwest::Client,
    cookie: String,
    csrf: String,
}

async fn anonymous(gate: &Nbgate) -> Anonymous {
    let client = bare_client(gate);
    let page = client
        .get(gate.url("/_nbgate/login"))
        .header("accept", "text/html")
        .send()
        .await
        .expect("login page");
    let cookie = cookie_pair(
        &set_cookies(&page)
            .into_iter()
            .find(|c| c.starts_with("__Host-nbgate-csrf="))
            .expect("binding cookie"),
    );
    let html = page.text().await.expect("html");
    assert!(
        html.contains("Sign in with a passkey"),
        "no passkey button: {html}"
    );
    let csrf = hidden(&html, "csrf");
    Anonymous {
        client,
        cookie,
        csrf,
    }
}

/// POSTs `body` to `/_nbgate/<path>` as the page script does; returns status and JSON.
async fn post_json(
    gate: &Nbgate,
    client: &reqwest::Client,
    path: &str,
    cookie: &str,
    csrf: Option<&str>,
    body: &str,
) -> (u16, serde_json::Value) {
    let mut req = client
        .post(gate.url(&format!("/_nbgate/{path}")))
        .header("cookie", cookie)
        .header("accept", "application/json")
        .header("content-type", "application/json")
        .header("origin", gate.origin())
        .body(body.to_owned());
    if let Some(t) = csrf {
        req = req.header("x-nbgate-csrf", t);
    }
    let r = req.send().await.expect("POST");
    let status = r.status().as_u16();
    let text = r.text().await.expect("body");
    let json = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}: {text}"));
    (status, json)
}

/// POSTs like `post_json` and returns the status with the JSON `error` code (the whole
/// answer when it has none, so that a failed comparison shows it).
async fn refusal(
    gate: &Nbgate,
    client: &reqwest::Client,
    path: &str,
    cookie: &str,
    csrf: Option<&str>,
    body: &str,
) -> (u16, String) {
    let (status, j) = post_json(gate, client, path, cookie, csrf, body).await;
    let error = j["error"]
        .as_str()
        .map_or_else(|| j.to_string(), str::to_owned);
    (status, error)
}

/// A CBOR attestation object of format `none` whose authenticator data is for `localhost`
/// (user present and verified) but holds no credential: well-formed enough that webauthn-rs
/// goes on to check the client data.
fn none_attestation() -> Vec<u8> {
    let mut auth_data = ring::digest::digest(&ring::digest::SHA256, b"localhost")
        .as_ref()
        .to_vec();
    auth_data.extend_from_slice(&[0x05, 0, 0, 0, 0]);
    let mut cbor = vec![0xa3, 0x63];
    cbor.extend_from_slice(b"fmt");
    cbor.push(0x64);
    cbor.extend_from_slice(b"none");
    cbor.push(0x67);
    cbor.extend_from_slice(b"attStmt");
    cbor.push(0xa0);
    cbor.push(0x68);
    cbor.extend_from_slice(b"authData");
    cbor.extend_from_slice(&[0x58, u8::try_from(auth_data.len()).expect("short")]);
    cbor.extend_from_slice(&auth_data);
    cbor
}

/// A well-formed assertion that no authenticator made, for `user_handle`.
fn fake_assertion(ceremony: &str, user_handle: &[u8], client_data: &str) -> String {
    serde_json::json!({
        "ceremony": ceremony,
        "next": "/lab",
        "credential": {
            "id": "AAAAAAAAAAAAAAAAAAAAAA",
            "rawId": "AAAAAAAAAAAAAAAAAAAAAA",
            "type": "public-key",
            "response": {
                "authenticatorData": b64(&[0u8; 37]),
                "clientDataJSON": b64(client_data.as_bytes()),
                "signature": b64(&[1u8; 64]),
                "userHandle": b64(user_handle),
            },
            "extensions": {}
        }
    })
    .to_string()
}

async fn start_login(gate: &Nbgate, a: &Anonymous) -> (String, String) {
    let (status, j) = post_json(
        gate,
        &a.client,
        "passkey/login/start",
        &a.cookie,
        Some(&a.csrf),
        "{}",
    )
    .await;
    assert_eq!(status, 200, "{j}");
    let pk = &j["publicKey"];
    assert_eq!(pk["rpId"], "localhost", "{j}");
    assert_eq!(pk["userVerification"], "required", "{j}");
    (
        j["ceremony"].as_str().expect("ceremony").to_owned(),
        pk["challenge"].as_str().expect("challenge").to_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_registers_logs_in_with_and_removes_a_passkey_with_a_virtual_authenticator() {
    let jupyter = Jupyter::start_lab().await;
    let gate = passkey_gate().jupyter(&jupyter).start().await;
    let shots = browser_flow(&gate, "passkeys.py", "browser-passkeys", &[], 180).await;
    for png in [
        "passkeys-added.png",
        "lab-after-passkey.png",
        "removed-passkey-refused.png",
        "login-without-js.png",
    ] {
        assert!(shots.join(png).exists(), "screenshot {png} missing");
    }
    for parts in [
        &["nbgate::audit", "passkey_registered", TEST_USER][..],
        &[
            "nbgate::audit",
            "login_success",
            "method=\"passkey\"",
            TEST_USER,
        ],
        &["nbgate::audit", "passkey_removed", TEST_USER],
        &["nbgate::audit", "passkey_login_failure", "unknown_passkey"],
    ] {
        gate.wait_for_line(parts, T).await;
    }
    let file = gate.state_dir().join(format!("passkeys/{TEST_USER}.json"));
    assert_eq!(file_mode(&file), 0o600);
    assert_eq!(file_mode(file.parent().expect("dir")), 0o700);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_endpoints_refuse_bad_csrf_bad_json_and_expired_or_replayed_challenges() {
    let gate = passkey_gate().start().await;
    let a = anonymous(&gate).await;
    let start = "passkey/login/start";
    let finish = "passkey/login/finish";

    // No token, or a token for another binding: the form has expired.
    assert_eq!(
        refusal(&gate, &a.client, start, &a.cookie, None, "{}").await,
        (403, "csrf".into())
    );
    let other = anonymous(&gate).await;
    assert_eq!(
        refusal(&gate, &a.client, start, &a.cookie, Some(&other.csrf), "{}").await,
        (403, "csrf".into())
    );

    // Not JSON, or JSON of another shape.
    for body in [
        "{",
        "[]",
        "{\"ceremony\": 1}",
        "{\"ceremony\":\"x\",\"credential\":{}}",
    ] {
        assert_eq!(
            refusal(&gate, &a.client, finish, &a.cookie, Some(&a.csrf), body).await,
            (400, "passkey_bad_request".into()),
            "{body}"
        );
    }

    // A ceremony nobody started.
    let body = fake_assertion("never-started", &[7u8; 16], "{}");
    assert_eq!(
        refusal(&gate, &a.client, finish, &a.cookie, Some(&a.csrf), &body).await,
        (400, "passkey_expired".into())
    );

    // A started one answered by a passkey nobody has: refused, and the challenge is used up.
    let (ceremony, _) = start_login(&gate, &a).await;
    let body = fake_assertion(&ceremony, &[7u8; 16], "{}");
    assert_eq!(
        refusal(&gate, &a.client, finish, &a.cookie, Some(&a.csrf), &body).await,
        (401, "passkey_unknown".into())
    );
    assert_eq!(
        refusal(&gate, &a.client, finish, &a.cookie, Some(&a.csrf), &body).await,
        (400, "passkey_expired".into()),
        "a replayed challenge"
    );

    // A ceremony is bound to the browser (CSRF cookie) that started it.
    let (ceremony, _) = start_login(&gate, &a).await;
    let body = fake_assertion(&ceremony, &[7u8; 16], "{}");
    assert_eq!(
        refusal(
            &gate,
            &other.client,
            finish,
            &other.cookie,
            Some(&other.csrf),
            &body
        )
        .await,
        (400, "passkey_expired".into())
    );

    for reason in ["expired_or_replayed", "unknown_passkey", "bad_request"] {
        gate.wait_for_line(&["nbgate::audit", "passkey_login_failure", reason], T)
            .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_reached_by_another_host_name_is_told_where_passkeys_work() {
    let gate = passkey_gate().start().await;
    let a = anonymous(&gate).await;
    // The same server by its IP address: not the RP id (IP addresses never are).
    let r = a
        .client
        .post(format!(
            "https://127.0.0.1:{}/_nbgate/passkey/login/start",
            gate.https_addr().port()
        ))
        .header("cookie", &a.cookie)
        .header("accept", "application/json")
        .header("x-nbgate-csrf", &a.csrf)
        .body("{}")
        .send()
        .await;
    let r = r.expect("POST by IP address (the certificate covers 127.0.0.1)");
    let status = r.status().as_u16();
    let j: serde_json::Value = r.json().await.expect("json");
    assert_eq!(
        (status, j["error"].as_str()),
        (400, Some("passkey_wrong_host")),
        "{j}"
    );
    gate.wait_for_line(&["passkey_login_failure", "wrong_host"], T)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registration_signed_for_another_origin_is_refused_and_the_file_is_private() {
    let gate = passkey_gate().start().await;
    let client = bare_client(&gate);
    let r = login(&gate, &client, TEST_PASSWORD).await;
    assert_eq!(r.status(), 303);
    let session = session_cookie(&r);
    let page = client
        .get(gate.url("/_nbgate/passkeys"))
        .header("cookie", &session)
        .header("accept", "text/html")
        .send()
        .await
        .expect("passkeys page");
    assert_eq!(page.status(), 200);
    let html = page.text().await.expect("html");
    assert!(html.contains("You have no passkeys yet."), "{html}");
    let csrf = {
        let marker = "data-csrf=\"";
        let at = html.find(marker).expect("data-csrf") + marker.len();
        html[at..at + html[at..].find('"').expect("quote")].to_owned()
    };
    assert_eq!(
        refusal(
            &gate,
            &client,
            "passkey/register/start",
            &session,
            Some(&csrf),
            "{\"name\":\"\"}"
        )
        .await,
        (400, "passkey_bad_name".into())
    );
    let (status, j) = post_json(
        &gate,
        &client,
        "passkey/register/start",
        &session,
        Some(&csrf),
        "{\"name\":\"laptop\"}",
    )
    .await;
    assert_eq!(status, 200, "{j}");
    let pk = &j["publicKey"];
    assert_eq!(pk["rp"]["id"], "localhost");
    assert_eq!(pk["authenticatorSelection"]["residentKey"], "required");
    assert_eq!(pk["authenticatorSelection"]["userVerification"], "required");
    // The user's file exists from the start of a registration (its user handle), private.
    let file = gate.state_dir().join(format!("passkeys/{TEST_USER}.json"));
    assert_eq!(file_mode(&file), 0o600);
    assert_eq!(file_mode(file.parent().expect("dir")), 0o700);

    let client_data = serde_json::json!({
        "type": "webauthn.create",
        "challenge": pk["challenge"],
        "origin": "https://evil.example",
        "crossOrigin": false,
    })
    .to_string();
    let body = serde_json::json!({
        "ceremony": j["ceremony"],
        "credential": {
            "id": "AAAAAAAAAAAAAAAAAAAAAA",
            "rawId": "AAAAAAAAAAAAAAAAAAAAAA",
            "type": "public-key",
            "response": {
                "attestationObject": b64(&none_attestation()),
                "clientDataJSON": b64(client_data.as_bytes()),
            },
            "extensions": {}
        }
    })
    .to_string();
    assert_eq!(
        refusal(
            &gate,
            &client,
            "passkey/register/finish",
            &session,
            Some(&csrf),
            &body
        )
        .await,
        (400, "passkey_wrong_origin".into())
    );
    gate.wait_for_line(&["passkey_registration_failure", "wrong_origin"], T)
        .await;
    // Without the session's token the endpoints refuse, and without a session they ask for one.
    assert_eq!(
        refusal(
            &gate,
            &client,
            "passkey/register/start",
            &session,
            None,
            "{\"name\":\"x\"}"
        )
        .await,
        (403, "csrf".into())
    );
    assert_eq!(
        refusal(
            &gate,
            &client,
            "passkey/register/start",
            "",
            Some(&csrf),
            "{\"name\":\"x\"}"
        )
        .await,
        (401, "unauthorized".into())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_passkey_assertions_count_toward_the_lockout_like_wrong_passwords() {
    let gate = passkey_gate()
        .set("policy.lockout.address_threshold", 3)
        .start()
        .await;
    let a = anonymous(&gate).await;
    let mut statuses = Vec::new();
    for _ in 0..3 {
        let (ceremony, _) = start_login(&gate, &a).await;
        let body = fake_assertion(&ceremony, &[9u8; 16], "{}");
        let (status, j) = post_json(
            &gate,
            &a.client,
            "passkey/login/finish",
            &a.cookie,
            Some(&a.csrf),
            &body,
        )
        .await;
        statuses.push((status, j["error"].as_str().map(str::to_owned)));
    }
    assert_eq!(
        statuses,
        vec![
            (401, Some("passkey_unknown".to_owned())),
            (401, Some("passkey_unknown".to_owned())),
            (429, Some("locked_out".to_owned())),
        ]
    );
    gate.wait_for_line(&["nbgate::audit", "lockout", "method=\"passkey\""], T)
        .await;
    // The same lock holds the password form.
    let r = login(&gate, &bare_client(&gate), TEST_PASSWORD).await;
    assert_eq!(r.status(), 429, "the password login is locked out too");
}
