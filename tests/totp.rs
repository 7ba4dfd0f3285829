//! The TOTP second factor (issue 22 §1) with the real binary and a real Jupyter: enrolment by
//! `nbgate totp enroll` (state file 0600), the password then a code reaching Jupyter and no
//! session cookie before the code; a wrong code refused and counted toward the lockout, also
//! mixed with wrong passwords (a correct password does not clear the count); a replayed code
//! refused; the previous and next step accepted, two steps off refused; a recovery code working
//! once; a tampered, expired or used-up pending login refused; a user required to have TOTP
//! enrolling during the login; the account page enrolling, making new recovery codes and
//! removing TOTP; API tokens unaffected.
//!
//! Codes are computed here with HMAC-SHA-1 from the printed key (RFC 6238), not with nbgate's
//! own code, so the test checks the server against the standard.

mod common;

use std::time::Duration;

use common::login::{bare_client, cookie_pair, hidden, login, set_cookies};
use common::nbgate::{log_field, test_hashes, TEST_API_TOKEN, TEST_PASSWORD, TEST_USER};
use common::{file_mode, within, Jupyter, Nbgate, NbgateBuilder};

const T: Duration = Duration::from_secs(30);
const PENDING: &str = "__Host-nbgate-pending=";
const SESSION: &str = "__Host-nbgate-session=";

/// RFC 4648 base32 (no padding), as authenticator apps read keys.
fn base32_decode(text: &str) -> Vec<u8> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let mut bits: u64 = 0;
    let mut count = 0;
    let mut out = Vec::new();
    for c in text.bytes().filter(|c| !c.is_ascii_whitespace()) {
        let v = ALPHABET
            .iter()
            .position(|a| *a == c.to_ascii_uppercase())
            .unwrap_or_else(|| panic!("not base32: {text}")) as u64;
        bits = (bits << 5) | v;
        count += 5;
        if count >= 8 {
            count -= 8;
            out.push((bits >> count) as u8);
            bits &= (1 << count) - 1;
        }
    }
    out
}

/// The RFC 6238 code (SHA-1, six digits, 30 s) of `key` at unix second `t`.
fn code_at(key: &[u8], t: u64) -> String {
    let k = ring::hmac::Key::new(ring::hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, key);
    let mac = ring::hmac::sign(&k, &(t / 30).to_be_bytes());
    let m = mac.as_ref();
    let off = usize::from(m[19] & 0xf);
    let v = u32::from_be_bytes([m[off] & 0x7f, m[off + 1], m[off + 2], m[off + 3]]);
    format!("{:06}", v % 1_000_000)
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs()
}

/// Now, at least 4 s before the next step starts: a code computed here is checked by the
/// server within the same step. (A wait for the clock, not for readiness.)
async fn settled_now() -> u64 {
    loop {
        let now = unix_now();
        if 30 - now % 30 >= 4 {
            return now;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// What `nbgate totp enroll` printed: the key and the recovery codes.
struct Enrolled {
    key: Vec<u8>,
    recovery: Vec<String>,
}

fn parse_enrolment(out: &str) -> Enrolled {
    let key_line = out
        .lines()
        .find_map(|l| l.trim().strip_prefix("key: "))
        .unwrap_or_else(|| panic!("no key line in:\n{out}"));
    let recovery: Vec<String> = out
        .lines()
        .map(str::trim)
        .filter(|l| l.len() == 11 && l.as_bytes()[5] == b'-')
        .map(str::to_owned)
        .collect();
    assert_eq!(recovery.len(), 10, "{out}");
    assert!(out.contains("otpauth://totp/nbgate:"), "{out}");
    Enrolled {
        key: base32_decode(key_line),
        recovery,
    }
}

/// Runs `nbgate totp enroll --user <test user>` on `builder`'s config.
async fn run_enrol(builder: &NbgateBuilder) -> common::nbgate::Finished {
    let config = builder.write_config();
    builder
        .run(&[
            "totp",
            "enroll",
            "--user",
            TEST_USER,
            "--config",
            config.to_str().expect("utf-8"),
        ])
        .await
}

/// Enrols the test user with `nbgate totp enroll` on `builder`'s config.
async fn cli_enrol(builder: &NbgateBuilder) -> Enrolled {
    let done = run_enrol(builder).await;
    assert!(done.status.success(), "{}\n{}", done.stdout, done.stderr);
    parse_enrolment(&done.stdout)
}

/// The answer to the password step, the pending cookie it set (if any).
async fn password_step(
    gate: &Nbgate,
    client: &reqwest::Client,
    password: &str,
) -> (reqwest::Response, Option<String>) {
    let r = within(T, "login", login(gate, client, password)).await;
    let pending = set_cookies(&r)
        .into_iter()
        .find(|c| c.starts_with(PENDING))
        .map(|c| cookie_pair(&c));
    (r, pending)
}

/// Fetches the second-step page with `pending`: its status and HTML.
async fn step_page(gate: &Nbgate, client: &reqwest::Client, pending: &str) -> (u16, String) {
    let r = client
        .get(gate.url("/_nbgate/login/totp"))
        .header("cookie", pending)
        .header("accept", "text/html")
        .send()
        .await
        .expect("GET login/totp");
    let status = r.status().as_u16();
    (status, r.text().await.expect("html"))
}

/// Posts `code` to the second step with `pending` and the page's CSRF token.
async fn post_code(
    gate: &Nbgate,
    client: &reqwest::Client,
    pending: &str,
    csrf: &str,
    code: &str,
) -> reqwest::Response {
    client
        .post(gate.url("/_nbgate/login/totp"))
        .header("cookie", pending)
        .header("origin", gate.origin())
        .header("accept", "text/html")
        .form(&[("csrf", csrf), ("code", code)])
        .send()
        .await
        .expect("POST login/totp")
}

/// A correct password then the step page: the pending cookie and the step's CSRF token.
async fn pending_step(gate: &Nbgate, client: &reqwest::Client) -> (String, String) {
    let (r, pending) = password_step(gate, client, TEST_PASSWORD).await;
    assert_eq!(r.status(), 303);
    let pending = pending.expect("a pending cookie");
    let (status, html) = step_page(gate, client, &pending).await;
    assert_eq!(status, 200, "{html}");
    let csrf = hidden(&html, "csrf");
    (pending, csrf)
}

/// Posts the code of the current step (computed here from `key`).
async fn post_current_code(
    gate: &Nbgate,
    client: &reqwest::Client,
    pending: &str,
    csrf: &str,
    key: &[u8],
) -> reqwest::Response {
    post_code(gate, client, pending, csrf, &code_now(key, 0).await).await
}

/// The code of the step `steps` away from the current one, at least 4 s before the step ends.
async fn code_now(key: &[u8], steps: i64) -> String {
    let now = settled_now().await;
    code_at(key, now.checked_add_signed(steps * 30).expect("after 1970"))
}

/// Password then `code` in a fresh pending login: the answer to the code.
async fn log_in_with(gate: &Nbgate, client: &reqwest::Client, code: &str) -> reqwest::Response {
    let (pending, csrf) = pending_step(gate, client).await;
    post_code(gate, client, &pending, &csrf, code).await
}

fn session_of(r: &reqwest::Response) -> Option<String> {
    set_cookies(r)
        .into_iter()
        .find(|c| c.starts_with(SESSION) && !c.contains("Max-Age=0"))
        .map(|c| cookie_pair(&c))
}

async fn api_status(gate: &Nbgate, client: &reqwest::Client, cookie: Option<&str>) -> u16 {
    let mut req = client.get(gate.url("/api/status"));
    if let Some(c) = cookie {
        req = req.header("cookie", c);
    }
    req.send().await.expect("GET /api/status").status().as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_enrolment_then_password_and_code_reach_jupyter_and_codes_work_once() {
    let jupyter = Jupyter::start().await;
    let builder = Nbgate::builder().jupyter(&jupyter);
    let enrolled = cli_enrol(&builder).await;
    let file = builder
        .dir()
        .join("state/totp")
        .join(format!("{TEST_USER}.json"));
    assert_eq!(file_mode(&file), 0o600);
    assert_eq!(file_mode(file.parent().expect("dir")), 0o700);
    let stored = std::fs::read_to_string(&file).expect("state file");
    for code in &enrolled.recovery {
        assert!(
            !stored.contains(code.as_str()),
            "recovery codes are stored hashed"
        );
    }
    // A second enrolment without --force is refused and changes nothing.
    let again = run_enrol(&builder).await;
    assert!(!again.status.success());
    assert!(again.stderr.contains("--force"), "{}", again.stderr);
    assert_eq!(std::fs::read_to_string(&file).expect("state file"), stored);
    let gate = builder.start().await;
    let client = bare_client(&gate);

    // The password alone: a pending login, no session.
    let (r, pending) = password_step(&gate, &client, TEST_PASSWORD).await;
    assert_eq!(r.status(), 303);
    assert_eq!(r.headers()["location"], "/_nbgate/login/totp");
    assert_eq!(session_of(&r), None, "no session before the second step");
    let pending = pending.expect("pending cookie");
    let set = set_cookies(&r).join("\n");
    assert!(
        set.contains("HttpOnly") && set.contains("Secure") && set.contains("SameSite=Strict"),
        "{set}"
    );
    assert_eq!(
        api_status(&gate, &client, Some(&pending)).await,
        401,
        "a pending login opens nothing"
    );
    let (status, html) = step_page(&gate, &client, &pending).await;
    assert_eq!(status, 200);
    assert!(html.contains("autocomplete=\"one-time-code\""), "{html}");
    let csrf = hidden(&html, "csrf");

    // A wrong code: refused, the form again, still no session.
    let wrong = wrong_code(&enrolled.key, settled_now().await);
    let r = post_code(&gate, &client, &pending, &csrf, wrong).await;
    assert_eq!(r.status(), 401);
    assert_eq!(session_of(&r), None);
    gate.wait_for_line(&["login_totp_failure", "reason=\"wrong_code\""], T)
        .await;

    // The previous step's code: accepted, Jupyter reachable.
    let code = code_now(&enrolled.key, -1).await;
    let r = post_code(&gate, &client, &pending, &csrf, &code).await;
    assert_eq!(r.status(), 303, "{:?}", r.headers());
    assert_eq!(r.headers()["location"], "/lab");
    let session = session_of(&r).expect("session cookie");
    assert!(set_cookies(&r)
        .iter()
        .any(|c| c.starts_with(PENDING) && c.contains("Max-Age=0")));
    assert_eq!(api_status(&gate, &client, Some(&session)).await, 200);
    let line = gate
        .wait_for_line(&["login_success", "method=\"totp\""], T)
        .await;
    assert_eq!(log_field(&line, "user").as_deref(), Some(TEST_USER));

    // The used pending login cannot open a second session, even with a valid code.
    let code = code_now(&enrolled.key, 1).await;
    let r = post_code(&gate, &client, &pending, &csrf, &code).await;
    assert_eq!(r.status(), 403);
    assert_eq!(session_of(&r), None);

    // The next step's code: accepted.
    let next = code_now(&enrolled.key, 1).await;
    let r = log_in_with(&gate, &client, &next).await;
    assert_eq!(r.status(), 303);
    assert!(session_of(&r).is_some());
    // The same code again: a replay, refused.
    let r = log_in_with(&gate, &client, &next).await;
    assert_eq!(r.status(), 401);
    assert_eq!(session_of(&r), None);
    gate.wait_for_line(&["login_totp_failure", "reason=\"replayed_code\""], T)
        .await;
    // Two steps off either way: refused.
    let now = settled_now().await;
    for t in [now + 60, now - 60] {
        let r = log_in_with(&gate, &client, &code_at(&enrolled.key, t)).await;
        assert_eq!(r.status(), 401, "two steps off");
    }

    // A recovery code: works once, says how many remain.
    let r = log_in_with(&gate, &client, &enrolled.recovery[4]).await;
    assert_eq!(r.status(), 200);
    let session = session_of(&r).expect("session cookie");
    let html = r.text().await.expect("html");
    assert!(html.contains("9 codes are left"), "{html}");
    assert_eq!(api_status(&gate, &client, Some(&session)).await, 200);
    gate.wait_for_line(&["login_success", "method=\"recovery_code\""], T)
        .await;
    gate.wait_for_line(&["recovery_code_used", "left=9"], T)
        .await;
    let r = log_in_with(&gate, &client, &enrolled.recovery[4].to_uppercase()).await;
    assert_eq!(r.status(), 401, "a used recovery code");

    // API tokens are not asked for a code.
    let r = bare_client(&gate)
        .get(gate.url("/api/status"))
        .header("authorization", format!("token {TEST_API_TOKEN}"))
        .send()
        .await
        .expect("token request");
    assert_eq!(r.status(), 200);

    // No code or secret in the log.
    let log = gate.log_text();
    for code in &enrolled.recovery {
        assert!(!log.contains(code.as_str()), "a recovery code in the log");
    }
    assert!(!log.contains(&next), "a TOTP code in the log");

    // `nbgate totp recovery-codes`: ten new ones; the old ones stop working.
    let config = gate.config_path().to_str().expect("utf-8").to_owned();
    let done = gate
        .run_args(&[
            "totp",
            "recovery-codes",
            "--user",
            TEST_USER,
            "--config",
            &config,
        ])
        .await;
    assert!(done.status.success(), "{}", done.stderr);
    let fresh: Vec<&str> = done
        .stdout
        .lines()
        .map(str::trim)
        .filter(|l| l.len() == 11 && l.as_bytes()[5] == b'-')
        .collect();
    assert_eq!(fresh.len(), 10, "{}", done.stdout);
    let r = log_in_with(&gate, &client, &enrolled.recovery[5]).await;
    assert_eq!(r.status(), 401, "an old recovery code after regeneration");
    let r = log_in_with(&gate, &client, fresh[5]).await;
    assert_eq!(r.status(), 200);
    assert!(session_of(&r).is_some());

    // `nbgate totp disable`: the password alone again, without a reload.
    let done = gate
        .run_args(&["totp", "disable", "--user", TEST_USER, "--config", &config])
        .await;
    assert!(done.status.success(), "{}", done.stderr);
    assert!(!file.exists());
    let (r, pending) = password_step(&gate, &client, TEST_PASSWORD).await;
    assert_eq!(r.status(), 303);
    assert_eq!(pending, None);
    assert!(session_of(&r).is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_codes_count_toward_the_lockout_with_wrong_passwords() {
    let jupyter = Jupyter::start().await;
    let builder = Nbgate::builder()
        .jupyter(&jupyter)
        .set("policy.lockout.address_threshold", 3)
        .set("policy.lockout.user_threshold", 3)
        .set("policy.lockout.refusal_delay", "0s");
    let enrolled = cli_enrol(&builder).await;
    let gate = builder.start().await;
    let client = bare_client(&gate);
    for _ in 0..2 {
        let (r, _) = password_step(&gate, &client, "wrong password").await;
        assert_eq!(r.status(), 401);
    }
    // The right password does not clear the two failures: the second step is pending.
    let (pending, csrf) = pending_step(&gate, &client).await;
    let wrong = wrong_code(&enrolled.key, settled_now().await);
    // The third failure, a wrong code: locked out.
    let r = post_code(&gate, &client, &pending, &csrf, wrong).await;
    assert_eq!(r.status(), 429);
    assert!(r.headers().contains_key("retry-after"));
    assert_eq!(session_of(&r), None);
    gate.wait_for_line(&["\"lockout\"", "step=\"totp\""], T)
        .await;
    // Locked: even the right code is not checked now.
    let r = post_current_code(&gate, &client, &pending, &csrf, &enrolled.key).await;
    assert_eq!(r.status(), 429);
    assert_eq!(session_of(&r), None);
    // And the right password is refused too.
    let (r, _) = password_step(&gate, &client, TEST_PASSWORD).await;
    assert_eq!(r.status(), 429);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tampered_expired_or_foreign_pending_login_is_refused() {
    let jupyter = Jupyter::start().await;
    let builder = Nbgate::builder().jupyter(&jupyter);
    let enrolled = cli_enrol(&builder).await;
    let gate = builder.start().await;
    let client = bare_client(&gate);
    let (pending, csrf) = pending_step(&gate, &client).await;
    let code = code_now(&enrolled.key, 0).await;

    // One character of the sealed value changed.
    let mut tampered = pending.clone().into_bytes();
    let i = tampered.len() - 5;
    tampered[i] = if tampered[i] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(tampered).expect("ascii");
    let r = post_code(&gate, &client, &tampered, &csrf, &code).await;
    assert_eq!(r.status(), 403);
    assert_eq!(session_of(&r), None);
    let (status, _) = step_page(&gate, &client, &tampered).await;
    assert_eq!(
        status, 303,
        "the page sends a tampered pending login back to log in"
    );

    // Sealed with the server's own key but expired a second ago.
    let raw = std::fs::read_to_string(gate.state_dir().join("auth/session.key")).expect("key");
    let raw = {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD
            .decode(raw.trim())
            .expect("base64 key")
    };
    let key = cookie::Key::from(&raw);
    let mut expired =
        nbgate::auth::pending::PendingLogin::new(TEST_USER, "/lab", None, unix_now() - 301);
    expired.exp = unix_now() - 1;
    // The user's revocation stamp, as the server's own pending login has it.
    let genuine: nbgate::auth::pending::PendingLogin = nbgate::auth::pending::open(
        key.signing(),
        nbgate::auth::pending::Purpose::SecondStep,
        pending.trim_start_matches(PENDING),
        unix_now(),
    )
    .expect("the server's pending login opens with its key");
    expired.stamp = genuine.stamp;
    let sealed = nbgate::auth::pending::seal(
        key.signing(),
        nbgate::auth::pending::Purpose::SecondStep,
        &expired,
    );
    let expired_cookie = format!("{PENDING}{sealed}");
    let expired_csrf = nbgate::auth::csrf::token(key.signing(), &expired.id);
    let r = post_code(&gate, &client, &expired_cookie, &expired_csrf, &code).await;
    assert_eq!(r.status(), 403);
    assert_eq!(session_of(&r), None);
    // The same but not expired: the forged value is genuine, so it works (the test's
    // forgery is sound), once the CSRF token is bound to its id.
    let mut fresh = expired.clone();
    fresh.exp = unix_now() + 60;
    let sealed = nbgate::auth::pending::seal(
        key.signing(),
        nbgate::auth::pending::Purpose::SecondStep,
        &fresh,
    );
    let fresh_cookie = format!("{PENDING}{sealed}");
    let r = post_code(&gate, &client, &fresh_cookie, &csrf, &code).await;
    assert_eq!(r.status(), 403, "a CSRF token of another pending login");
    let r = post_code(&gate, &client, &fresh_cookie, &expired_csrf, &code).await;
    assert_eq!(r.status(), 303);
    assert!(session_of(&r).is_some());
    gate.wait_for_line(&["login_totp_failure", "no_pending_login"], T)
        .await;

    // No pending cookie at all.
    let r = post_code(&gate, &client, "x=y", &csrf, &code).await;
    assert_eq!(r.status(), 403);
}

/// `[[users]]` with the test user marked `totp = "required"`.
fn required_user() -> toml::Value {
    let mut user = toml::Table::new();
    user.insert("name".into(), TEST_USER.into());
    user.insert("password_hash".into(), test_hashes().0.clone().into());
    user.insert(
        "tokens".into(),
        toml::Value::Array(vec![test_hashes().1.clone().into()]),
    );
    user.insert("totp".into(), "required".into());
    toml::Value::Array(vec![toml::Value::Table(user)])
}

/// The key shown in a page (`<code>ABCD EFGH …</code>`).
fn key_in(html: &str) -> Vec<u8> {
    let start = html.find("<code>").expect("key shown") + "<code>".len();
    let end = html[start..].find("</code>").expect("end") + start;
    base32_decode(&html[start..end])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_required_to_have_totp_enrols_during_the_login() {
    let jupyter = Jupyter::start().await;
    let builder = Nbgate::builder()
        .jupyter(&jupyter)
        .set("users", required_user());
    let gate = builder.start().await;
    let client = bare_client(&gate);
    let (r, pending) = password_step(&gate, &client, TEST_PASSWORD).await;
    assert_eq!(r.status(), 303);
    assert_eq!(session_of(&r), None);
    let pending = pending.expect("pending");
    let (status, html) = step_page(&gate, &client, &pending).await;
    assert_eq!(status, 200);
    assert!(html.contains("<svg class=\"qr\""), "{html}");
    let key = key_in(&html);
    let csrf = hidden(&html, "csrf");
    let r = post_current_code(&gate, &client, &pending, &csrf, &key).await;
    assert_eq!(r.status(), 200);
    let session = session_of(&r).expect("session");
    let html = r.text().await.expect("html");
    assert_eq!(html.matches("<li><code>").count(), 10, "{html}");
    assert_eq!(api_status(&gate, &client, Some(&session)).await, 200);
    gate.wait_for_line(&["totp_enrolled", "via=\"login\""], T)
        .await;
    let file = gate
        .state_dir()
        .join("totp")
        .join(format!("{TEST_USER}.json"));
    assert_eq!(file_mode(&file), 0o600);
    // From now on the login asks for a code of that key (no new enrolment).
    let (_, pending) = password_step(&gate, &client, TEST_PASSWORD).await;
    let (_, html) = step_page(&gate, &client, &pending.expect("pending")).await;
    assert!(!html.contains("<svg"), "{html}");
    let r = log_in_with(&gate, &client, &code_now(&key, 1).await).await;
    assert_eq!(r.status(), 303);
}

/// POSTs the account form as the session `cookie`.
async fn account_post(
    gate: &Nbgate,
    client: &reqwest::Client,
    cookie: &str,
    fields: &[(&str, &str)],
) -> reqwest::Response {
    client
        .post(gate.url("/_nbgate/account"))
        .header("cookie", cookie)
        .header("origin", gate.origin())
        .header("accept", "text/html")
        .form(fields)
        .send()
        .await
        .expect("POST account")
}

async fn account_get(
    gate: &Nbgate,
    client: &reqwest::Client,
    cookie: &str,
) -> (u16, http::HeaderMap, String) {
    let r = client
        .get(gate.url("/_nbgate/account"))
        .header("cookie", cookie)
        .header("accept", "text/html")
        .header("accept-language", "zh-CN")
        .send()
        .await
        .expect("GET account");
    let (status, headers) = (r.status().as_u16(), r.headers().clone());
    (status, headers, r.text().await.expect("html"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_account_page_enrols_makes_new_recovery_codes_and_removes_totp() {
    let jupyter = Jupyter::start().await;
    let gate = Nbgate::start_for(&jupyter).await;
    let client = bare_client(&gate);
    // Without a session: sent to log in and back; with a token: refused.
    let r = client
        .get(gate.url("/_nbgate/account"))
        .header("accept", "text/html")
        .send()
        .await
        .expect("GET account");
    assert_eq!(r.status(), 303);
    assert_eq!(
        r.headers()["location"],
        "/_nbgate/login?next=%2F_nbgate%2Faccount"
    );
    let r = client
        .get(gate.url("/_nbgate/account"))
        .header("authorization", format!("token {TEST_API_TOKEN}"))
        .send()
        .await
        .expect("GET account with a token");
    assert_eq!(r.status(), 403);

    let r = within(T, "login", login(&gate, &client, TEST_PASSWORD)).await;
    let other_device = session_of(&r).expect("another device's session");
    let r = within(T, "login", login(&gate, &client, TEST_PASSWORD)).await;
    let session = session_of(&r).expect("session");
    let (status, headers, html) = account_get(&gate, &client, &session).await;
    assert_eq!(status, 200);
    assert_eq!(headers["cache-control"], "no-store");
    assert!(headers["content-security-policy"]
        .to_str()
        .expect("csp")
        .contains("default-src 'none'"));
    assert!(html.contains("两步验证"), "{html}");
    assert!(html.contains("<svg class=\"qr\""));
    assert!(
        html.contains("href=\"/_nbgate/passkeys\"") && html.contains("href=\"/_nbgate/sessions\"")
    );
    let key = key_in(&html);
    let csrf = hidden(&html, "csrf");
    let offer = hidden(&html, "offer");

    // A CSRF token of another session is refused.
    let other = bare_client(&gate);
    let r = within(T, "login", login(&gate, &other, TEST_PASSWORD)).await;
    let other_session = session_of(&r).expect("session");
    let now = settled_now().await;
    let r = account_post(
        &gate,
        &other,
        &other_session,
        &[
            ("csrf", &csrf),
            ("action", "enrol"),
            ("offer", &offer),
            ("password", TEST_PASSWORD),
            ("code", &code_at(&key, now)),
        ],
    )
    .await;
    assert_eq!(r.status(), 403);
    // A wrong first code: not enrolled, the same key offered again.
    let wrong = if code_at(&key, now) == "000000" {
        "111111"
    } else {
        "000000"
    };
    let r = account_post(
        &gate,
        &client,
        &session,
        &[
            ("csrf", &csrf),
            ("action", "enrol"),
            ("offer", &offer),
            ("password", TEST_PASSWORD),
            ("code", wrong),
        ],
    )
    .await;
    assert_eq!(r.status(), 401);
    assert_eq!(key_in(&r.text().await.expect("html")), key);
    // The right code without the user's password (a stolen session alone): refused.
    let r = account_post(
        &gate,
        &client,
        &session,
        &[
            ("csrf", &csrf),
            ("action", "enrol"),
            ("offer", &offer),
            ("password", "not the password"),
            ("code", &code_at(&key, now)),
        ],
    )
    .await;
    assert_eq!(r.status(), 401);
    let html = r.text().await.expect("html");
    assert!(html.contains("That password is not right"), "{html}");
    assert_eq!(key_in(&html), key, "not enrolled: the same key offered");
    gate.wait_for_line(&["account_totp_failure", "reason=\"wrong_password\""], T)
        .await;
    let r = account_post(
        &gate,
        &client,
        &session,
        &[
            ("csrf", &csrf),
            ("action", "enrol"),
            ("offer", &offer),
            ("password", TEST_PASSWORD),
            ("code", &code_at(&key, now)),
        ],
    )
    .await;
    assert_eq!(r.status(), 200);
    // Every other session ends (one opened with the password alone must not outlive the
    // new factor); this one carries on with a renewed cookie.
    let session = session_of(&r).expect("a renewed session cookie");
    assert_eq!(api_status(&gate, &client, Some(&other_device)).await, 401);
    assert_eq!(api_status(&gate, &client, Some(&session)).await, 200);
    let html = r.text().await.expect("html");
    assert_eq!(html.matches("<li><code>").count(), 10, "{html}");
    gate.wait_for_line(&["totp_enrolled", "via=\"account\""], T)
        .await;
    let file = gate
        .state_dir()
        .join("totp")
        .join(format!("{TEST_USER}.json"));
    assert_eq!(file_mode(&file), 0o600);

    // The next login asks for a code.
    let (_, pending) = password_step(&gate, &client, TEST_PASSWORD).await;
    assert!(pending.is_some());

    // New recovery codes need a current code (the enrolment's is used up).
    let (_, _, html) = account_get(&gate, &client, &session).await;
    assert!(
        html.contains("<strong class=\"recovery-left\">10</strong>"),
        "{html}"
    );
    let r = account_post(
        &gate,
        &client,
        &session,
        &[
            ("csrf", &csrf),
            ("action", "regenerate"),
            ("code", &code_at(&key, now)),
        ],
    )
    .await;
    assert_eq!(r.status(), 401, "the enrolment's code again");
    let now = settled_now().await;
    let r = account_post(
        &gate,
        &client,
        &session,
        &[
            ("csrf", &csrf),
            ("action", "regenerate"),
            ("code", &code_at(&key, now + 30)),
        ],
    )
    .await;
    assert_eq!(r.status(), 200);
    let html = r.text().await.expect("html");
    let codes = codes_in(&html);
    assert_eq!(codes.len(), 10, "{html}");
    gate.wait_for_line(&["recovery_codes_regenerated"], T).await;

    // Removal with a wrong code does nothing; with one of the new recovery codes it removes.
    let r = account_post(
        &gate,
        &client,
        &session,
        &[
            ("csrf", &csrf),
            ("action", "remove"),
            ("code", "abcde-fghjk"),
        ],
    )
    .await;
    assert_eq!(r.status(), 401);
    assert!(file.exists());
    gate.wait_for_line(&["account_totp_failure", "wrong_code"], T)
        .await;
    let r = account_post(
        &gate,
        &client,
        &session,
        &[("csrf", &csrf), ("action", "remove"), ("code", &codes[0])],
    )
    .await;
    assert_eq!(r.status(), 303);
    assert_eq!(r.headers()["location"], "/_nbgate/account?done=removed");
    assert!(!file.exists());
    gate.wait_for_line(&["totp_removed", "via=\"account\""], T)
        .await;
    let (_, _, html) = account_get(&gate, &client, &session).await;
    assert!(
        html.contains("<svg class=\"qr\""),
        "enrolment offered again"
    );
    // The password alone logs in again.
    let (r, pending) = password_step(&gate, &client, TEST_PASSWORD).await;
    assert_eq!(pending, None);
    assert!(session_of(&r).is_some());
}

/// The recovery codes listed on a page.
fn codes_in(html: &str) -> Vec<String> {
    html.split("<li><code>")
        .skip(1)
        .map(|rest| rest.split("</code>").next().expect("end").to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_printed_secret_in_a_totp_secret_file_is_asked_for_and_a_bad_policy_names_its_line() {
    // An unknown `totp` value: check-config names the file and the line.
    let mut users = required_user();
    users.as_array_mut().expect("users")[0]
        .as_table_mut()
        .expect("user")
        .insert("totp".into(), "sometimes".into());
    let bad = NbgateBuilder::new().set("users", users);
    let done = bad.check_config().await;
    assert!(!done.status.success());
    let config = bad.dir().join("config.toml");
    let text = std::fs::read_to_string(&config).expect("config");
    let line = text
        .lines()
        .position(|l| l.contains("sometimes"))
        .expect("the bad line")
        + 1;
    assert!(
        done.stderr
            .contains(&format!("{}:{line}:", config.display())),
        "{}",
        done.stderr
    );

    // `--print-secret`: the secret alone on stdout, for a file the configuration names.
    let builder = NbgateBuilder::new();
    let path = builder.write_config();
    let done = builder
        .run(&[
            "totp",
            "enroll",
            "--user",
            TEST_USER,
            "--print-secret",
            "--config",
            path.to_str().expect("utf-8"),
        ])
        .await;
    assert!(done.status.success(), "{}", done.stderr);
    let secret = done.stdout.trim().to_owned();
    assert_eq!(secret.len(), 32, "{}", done.stdout);
    assert!(done.stderr.contains("otpauth://"), "{}", done.stderr);
    let secret_file = builder.dir().join("tester.totp");
    std::fs::write(&secret_file, format!("{secret}\n")).expect("secret file");
    let state = builder
        .dir()
        .join("state/totp")
        .join(format!("{TEST_USER}.json"));
    let stored = std::fs::read_to_string(&state).expect("state file");
    assert!(
        !stored.contains(&secret),
        "the state directory keeps no secret then"
    );
    let mut users = required_user();
    let user = users.as_array_mut().expect("users")[0]
        .as_table_mut()
        .expect("user");
    user.remove("totp");
    user.insert(
        "totp_secret_file".into(),
        secret_file.display().to_string().into(),
    );
    // check-config reads the secret file: one without a usable secret is named.
    let junk = builder.dir().join("junk.totp");
    std::fs::write(&junk, "not a secret\n").expect("junk file");
    let mut bad_users = users.clone();
    bad_users.as_array_mut().expect("users")[0]
        .as_table_mut()
        .expect("user")
        .insert("totp_secret_file".into(), junk.display().to_string().into());
    let done = NbgateBuilder::new()
        .set("users", bad_users.clone())
        .check_config()
        .await;
    assert!(!done.status.success());
    assert!(done.stderr.contains("junk.totp"), "{}", done.stderr);
    // The server refuses it too, rather than starting and refusing every login of the user.
    let refused = NbgateBuilder::new()
        .set("users", bad_users)
        .start_expecting_failure()
        .await;
    assert!(
        refused.log.contains("junk.totp") && refused.log.contains("not a base32 TOTP secret"),
        "{}",
        refused.log
    );
    let gate = builder.set("users", users).start().await;
    let client = bare_client(&gate);
    let r = log_in_with(&gate, &client, &code_now(&base32_decode(&secret), 0).await).await;
    assert_eq!(r.status(), 303);
    assert!(session_of(&r).is_some());
}

/// The pending cookie is nbgate's: like the session cookie it never reaches Jupyter (a
/// browser keeps sending it for a while after a login completed elsewhere in the tab).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pending_cookie_is_not_forwarded_to_jupyter() {
    let upstream = common::TestUpstream::start().await;
    let gate = Nbgate::builder().upstream(&upstream.url()).start().await;
    let client = bare_client(&gate);
    let r = within(T, "login", login(&gate, &client, TEST_PASSWORD)).await;
    let session = session_of(&r).expect("a session: no second factor");
    let r = client
        .get(gate.url("/echo"))
        .header(
            "cookie",
            format!("{session}; {PENDING}sealed-value; other=kept"),
        )
        .send()
        .await
        .expect("GET through nbgate");
    assert_eq!(r.status(), 200);
    let seen: serde_json::Value = r.json().await.expect("echo JSON");
    let cookies = common::upstream::echoed_headers(&seen, "cookie").join("; ");
    assert!(!cookies.contains("nbgate-pending"), "{cookies}");
    assert!(!cookies.contains("nbgate-session"), "{cookies}");
    assert!(cookies.contains("other=kept"), "{cookies}");
}

/// A code that is none of the three the server accepts around `now`.
fn wrong_code(key: &[u8], now: u64) -> &'static str {
    let near = [now - 30, now, now + 30].map(|t| code_at(key, t));
    ["123456", "654321", "111111"]
        .into_iter()
        .find(|w| !near.iter().any(|c| c == w))
        .expect("three codes cannot cover three others")
}

/// With the password, guessing codes is slow: a pending login takes three wrong codes, then
/// the password must be typed again; five wrong codes in a row lock the user's code step
/// (whatever the address or pending login), even for the right code, with a warning audit
/// line, and the lock is in the state file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_codes_use_up_the_pending_login_and_then_lock_the_users_code_step() {
    let jupyter = Jupyter::start().await;
    let builder = Nbgate::builder()
        .jupyter(&jupyter)
        .set("policy.lockout.refusal_delay", "0s");
    let enrolled = cli_enrol(&builder).await;
    let file = builder
        .dir()
        .join("state/totp")
        .join(format!("{TEST_USER}.json"));
    let gate = builder.start().await;
    let client = bare_client(&gate);

    let (pending, csrf) = pending_step(&gate, &client).await;
    for _ in 0..2 {
        let wrong = wrong_code(&enrolled.key, settled_now().await);
        let r = post_code(&gate, &client, &pending, &csrf, wrong).await;
        assert_eq!(r.status(), 401);
    }
    let wrong = wrong_code(&enrolled.key, settled_now().await);
    let r = post_code(&gate, &client, &pending, &csrf, wrong).await;
    assert_eq!(r.status(), 403, "the third wrong code uses the login up");
    assert!(set_cookies(&r)
        .iter()
        .any(|c| c.starts_with(PENDING) && c.contains("Max-Age=0")));
    gate.wait_for_line(&["reason=\"pending_login_tries_used\""], T)
        .await;
    let r = post_current_code(&gate, &client, &pending, &csrf, &enrolled.key).await;
    assert_eq!(r.status(), 403, "even the right code: log in again");
    assert_eq!(session_of(&r), None);

    // A new password step; the fourth wrong code is fine, the fifth locks the code step.
    let (pending, csrf) = pending_step(&gate, &client).await;
    let wrong = wrong_code(&enrolled.key, settled_now().await);
    let r = post_code(&gate, &client, &pending, &csrf, wrong).await;
    assert_eq!(r.status(), 401);
    let wrong = wrong_code(&enrolled.key, settled_now().await);
    let r = post_code(&gate, &client, &pending, &csrf, wrong).await;
    assert_eq!(r.status(), 429);
    assert!(r.headers().contains_key("retry-after"));
    gate.wait_for_line(&["\"totp_locked\"", "WARN"], T).await;
    let stored = std::fs::read_to_string(&file).expect("state file");
    assert!(stored.contains("locked_until"), "{stored}");

    // Locked: a fresh pending login with the right code is refused, unchecked.
    let (pending, csrf) = pending_step(&gate, &client).await;
    let r = post_current_code(&gate, &client, &pending, &csrf, &enrolled.key).await;
    assert_eq!(r.status(), 429);
    assert_eq!(session_of(&r), None);
    // The owner's recovery code still works during the lock.
    let r = post_code(&gate, &client, &pending, &csrf, &enrolled.recovery[0]).await;
    assert_eq!(r.status(), 200);
    assert!(session_of(&r).is_some());
}

/// A login waiting for its code is ended by "log out everywhere" as a session is: an attacker
/// who had the password cannot finish it with a code later.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_out_everywhere_ends_a_pending_login_too() {
    let jupyter = Jupyter::start().await;
    let builder = Nbgate::builder().jupyter(&jupyter);
    let enrolled = cli_enrol(&builder).await;
    let gate = builder.start().await;
    let owner = bare_client(&gate);
    let r = log_in_with(&gate, &owner, &enrolled.recovery[0]).await;
    let session = session_of(&r).expect("the owner's session");
    let attacker = bare_client(&gate);
    let (pending, csrf) = pending_step(&gate, &attacker).await;
    let out = common::login::logout(&gate, &owner, &session, true).await;
    assert!(out.status().is_redirection() || out.status().is_success());
    let r = post_current_code(&gate, &attacker, &pending, &csrf, &enrolled.key).await;
    assert_eq!(r.status(), 403, "log in again");
    assert_eq!(session_of(&r), None);
    gate.wait_for_line(&["reason=\"no_pending_login\""], T)
        .await;
}

/// `nbgate totp` run as root on a state directory owned by the service user gives the files
/// it makes to that user (else the service could not read them and the user's logins would
/// fail closed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_run_as_root_gives_its_files_to_the_state_directorys_owner() {
    use std::os::unix::fs::MetadataExt;
    if !is_root() {
        return;
    }
    let jupyter = Jupyter::start().await;
    let builder = Nbgate::builder().jupyter(&jupyter);
    let state = builder.dir().join("state");
    std::fs::create_dir_all(&state).expect("state dir");
    std::os::unix::fs::chown(&state, Some(65534), Some(65534)).expect("chown");
    cli_enrol(&builder).await;
    for path in [
        state.join("totp"),
        state.join("totp/.lock"),
        state.join("totp").join(format!("{TEST_USER}.json")),
    ] {
        let meta = std::fs::metadata(&path).expect("made");
        assert_eq!(
            (meta.uid(), meta.gid()),
            (65534, 65534),
            "{}",
            path.display()
        );
    }
}

fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    let probe = tempfile::tempdir().expect("tempdir");
    std::fs::metadata(probe.path()).map(|m| m.uid()).ok() == Some(0)
}
