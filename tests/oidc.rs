//! Single sign-on against a real OpenID Connect provider: the certified `oidc-provider`
//! library (npm) in `tests/oidc/provider.mjs`, on a loopback port, started and killed here.
//! The code flow is driven as a browser would with an HTTP client that follows the provider's
//! login form: a person on the allow lists reaches Jupyter; one not on them gets a clear page and
//! an audit line; a replayed or foreign `state` is refused; tampered, expired and wrong-audience
//! ID tokens are refused; a provider that is down gets a clear page while the password still
//! works, and is used once it is up; `auth.password = false` hides the form and refuses its
//! POST; a reload that narrows a list ends the sessions it admitted; an HTTPS provider behind a
//! private CA is used through `ca_bundle`, and refused without it. Chromium signs in through
//! the provider to JupyterLab in `tests/browser/oidc_login.py`.

mod common;

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use common::login::{bare_client, cookie_pair, login, set_cookies};
use common::nbgate::{log_field, TEST_PASSWORD};
use common::oidc::{provider_entry, Provider, CLIENT_SECRET};
use common::pebble::free_port;
use common::{poll_until, within, Jupyter, Nbgate, NbgateBuilder};

const T: Duration = Duration::from_secs(30);

/// nbgate on `port` with the given providers (name, issuer).
fn gate_builder(port: u16, providers: &[(&str, &str)]) -> NbgateBuilder {
    common::oidc::with_providers(NbgateBuilder::new(), port, providers)
}

/// The cookies one browser holds for one site, by name.
#[derive(Default, Clone)]
struct Jar(HashMap<String, String>);

impl Jar {
    fn take(&mut self, r: &reqwest::Response) {
        for c in set_cookies(r) {
            let pair = cookie_pair(&c);
            let (name, value) = pair.split_once('=').expect("name=value");
            if value.is_empty() || c.contains("Max-Age=0") {
                self.0.remove(name);
            } else {
                self.0.insert(name.to_owned(), value.to_owned());
            }
        }
    }

    fn header(&self) -> String {
        self.0
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }
}

/// A browser: one client for nbgate (its certificate trusted), one for the provider, a jar each.
struct Browser {
    nb: reqwest::Client,
    idp: reqwest::Client,
    nb_jar: Jar,
    idp_jar: Jar,
}

impl Browser {
    fn new(gate: &Nbgate) -> Browser {
        Browser {
            nb: bare_client(gate),
            idp: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .timeout(T)
                .build()
                .expect("client"),
            nb_jar: Jar::default(),
            idp_jar: Jar::default(),
        }
    }

    /// This browser, trusting the provider's certificate `pem` (an HTTPS provider).
    fn trusting(mut self, pem: &str) -> Browser {
        let root = reqwest::Certificate::from_pem(pem.as_bytes()).expect("pem");
        self.idp = reqwest::Client::builder()
            .use_rustls_tls()
            .tls_built_in_root_certs(false)
            .add_root_certificate(root)
            .redirect(reqwest::redirect::Policy::none())
            .timeout(T)
            .build()
            .expect("client");
        self
    }

    /// GET on nbgate as a browser navigation, keeping cookies.
    async fn nb_get(&mut self, url: &str) -> reqwest::Response {
        let r = self
            .nb
            .get(url)
            .header("accept", "text/html")
            .header("cookie", self.nb_jar.header())
            .send()
            .await
            .expect("GET nbgate");
        self.nb_jar.take(&r);
        r
    }

    async fn idp_send(&mut self, req: reqwest::RequestBuilder) -> reqwest::Response {
        let r = req
            .header("cookie", self.idp_jar.header())
            .send()
            .await
            .expect("provider request");
        self.idp_jar.take(&r);
        r
    }

    /// From the login page to the provider's redirect back: clicks the button of provider
    /// `name` (with `next`), signs in at the provider as `account`, and returns the callback
    /// URL the provider sends the browser to (not yet followed).
    async fn until_callback(
        &mut self,
        gate: &Nbgate,
        name: &str,
        next: &str,
        account: &str,
    ) -> String {
        let page = self
            .nb_get(&gate.url(&format!("/_nbgate/login?next={next}")))
            .await;
        assert_eq!(page.status(), 200);
        let html = page.text().await.expect("login page");
        let href = button_href(&html, name);
        let start = self.nb_get(&gate.url(&href)).await;
        assert_eq!(
            start.status(),
            303,
            "{}",
            start.text().await.unwrap_or_default()
        );
        assert!(
            self.nb_jar.get("__Host-nbgate-oidc").is_some(),
            "flow cookie"
        );
        let mut url = location(&start);
        assert!(url.contains("code_challenge_method=S256"), "{url}");
        assert!(url.contains("nonce="), "{url}");
        assert!(url.contains("state="), "{url}");
        // The provider: authorization endpoint -> login form -> post -> resume -> callback.
        for _ in 0..10 {
            if url.starts_with(&gate.origin()) || url.contains("/_nbgate/oidc/callback") {
                return url;
            }
            let r = self.idp_send(self.idp.get(&url)).await;
            match r.status().as_u16() {
                302 | 303 => url = resolve(&url, &location(&r)),
                200 => {
                    let form = r.text().await.expect("provider page");
                    assert!(form.contains("name=\"login\""), "{form}");
                    let action = resolve(&url, &between(&form, "action=\"", "\""));
                    let posted = self
                        .idp_send(self.idp.post(&action).form(&[("login", account)]))
                        .await;
                    assert!(
                        matches!(posted.status().as_u16(), 302 | 303),
                        "login at the provider: {}",
                        posted.status()
                    );
                    url = resolve(&action, &location(&posted));
                }
                other => panic!(
                    "provider answered {other} at {url}: {}",
                    r.text().await.unwrap_or_default()
                ),
            }
        }
        panic!("no redirect back to nbgate; last URL {url}");
    }

    /// The provider's login form, cancelled: the callback URL carrying `error=`.
    async fn cancelled_callback(&mut self, gate: &Nbgate, name: &str) -> String {
        let page = self.nb_get(&gate.url("/_nbgate/login")).await;
        let href = button_href(&page.text().await.expect("page"), name);
        let start = self.nb_get(&gate.url(&href)).await;
        let auth = location(&start);
        let r = self.idp_send(self.idp.get(&auth)).await;
        let form_url = resolve(&auth, &location(&r));
        let form = self.idp_send(self.idp.get(&form_url)).await;
        let html = form.text().await.expect("form");
        let abort = html
            .split("action=\"")
            .filter_map(|s| s.split('"').next())
            .find(|a| a.ends_with("/abort"))
            .expect("cancel form")
            .to_owned();
        let abort = resolve(&form_url, &abort);
        let r = self.idp_send(self.idp.post(&abort)).await;
        let mut url = resolve(&abort, &location(&r));
        while !url.contains("/_nbgate/oidc/callback") {
            let r = self.idp_send(self.idp.get(&url)).await;
            url = resolve(&url, &location(&r));
        }
        url
    }
}

fn location(r: &reqwest::Response) -> String {
    r.headers()
        .get("location")
        .unwrap_or_else(|| panic!("no Location in a {} answer", r.status()))
        .to_str()
        .expect("ascii")
        .to_owned()
}

/// `location` resolved against `base` (the provider sends relative redirects).
fn resolve(base: &str, location: &str) -> String {
    if location.starts_with("http://") || location.starts_with("https://") {
        return location.to_owned();
    }
    let scheme_end = base.find("://").expect("absolute base") + 3;
    let host_end = base[scheme_end..]
        .find('/')
        .map_or(base.len(), |i| scheme_end + i);
    format!("{}{location}", &base[..host_end])
}

fn between(s: &str, start: &str, end: &str) -> String {
    let i = s.find(start).unwrap_or_else(|| panic!("{start:?} in {s}")) + start.len();
    let j = s[i..].find(end).expect("end") + i;
    s[i..j].replace("&amp;", "&")
}

/// The href of the "Sign in with" button of provider `name` on a login page.
fn button_href(html: &str, name: &str) -> String {
    let marker = format!("href=\"/_nbgate/oidc/{name}?");
    let i = html
        .find(&marker)
        .unwrap_or_else(|| panic!("no button for {name}: {html}"))
        + "href=\"".len();
    let j = html[i..].find('"').expect("end quote") + i;
    html[i..j].replace("&amp;", "&")
}

/// Follows a callback URL in `browser`; the answer.
async fn follow_callback(
    browser: &mut Browser,
    gate: &Nbgate,
    callback: &str,
) -> reqwest::Response {
    // The provider names https://localhost:PORT; the client resolves localhost to nbgate.
    let path = &callback[callback.find("/_nbgate/").expect("callback path")..];
    browser.nb_get(&gate.url(path)).await
}

/// A provider (`normal`) and nbgate using it as provider `test`, its config adjusted by `tune`.
async fn provider_and_gate(
    tune: impl FnOnce(NbgateBuilder) -> NbgateBuilder,
) -> (Provider, Nbgate) {
    let port = free_port(false);
    let provider = Provider::start(port, "normal", 0).await;
    let gate = tune(gate_builder(port, &[("test", &provider.issuer)]))
        .start()
        .await;
    (provider, gate)
}

/// A whole sign-in in `browser` with provider `name` as `account`: nbgate's answer to the
/// provider's redirect back.
async fn sign_in(
    browser: &mut Browser,
    gate: &Nbgate,
    name: &str,
    next: &str,
    account: &str,
) -> reqwest::Response {
    let callback = within(
        T,
        "sign-in at the provider",
        browser.until_callback(gate, name, next, account),
    )
    .await;
    follow_callback(browser, gate, &callback).await
}

/// The audit line of `event` with `reason` (when given), waited for.
async fn audit_line(gate: &Nbgate, event: &str, reason: Option<&str>) -> String {
    let event = format!("event=\"{event}\"");
    let reason = reason.map(|r| format!("reason=\"{r}\""));
    let mut parts = vec![event.as_str()];
    if let Some(r) = &reason {
        parts.push(r);
    }
    gate.wait_for_line(&parts, T).await
}

#[tokio::test]
async fn people_on_the_lists_sign_in_and_reach_jupyter() {
    let jupyter = Jupyter::start().await;
    let (_provider, gate) = provider_and_gate(|b| b.jupyter(&jupyter)).await;

    // alice: a verified address in an allowed domain.
    let mut browser = Browser::new(&gate);
    let r = sign_in(&mut browser, &gate, "test", "%2Fapi%2Fcontents", "alice").await;
    assert_eq!(r.status(), 303, "{}", r.text().await.unwrap_or_default());
    assert_eq!(location(&r), "/api/contents");
    assert!(
        set_cookies(&r)
            .iter()
            .any(|c| c.starts_with("__Host-nbgate-oidc=;") && c.contains("Max-Age=0")),
        "the flow cookie is removed"
    );
    let session = browser
        .nb_jar
        .get("__Host-nbgate-session")
        .expect("session cookie")
        .to_owned();
    let contents = browser.nb_get(&gate.url("/api/contents")).await;
    assert_eq!(contents.status(), 200);
    let json: serde_json::Value = contents.json().await.expect("Jupyter's JSON");
    assert_eq!(json["type"], "directory");
    let line = audit_line(&gate, "login_success", None).await;
    assert_eq!(
        log_field(&line, "method").as_deref(),
        Some("oidc"),
        "{line}"
    );
    assert_eq!(log_field(&line, "provider").as_deref(), Some("test"));
    assert_eq!(
        log_field(&line, "user").as_deref(),
        Some("alice@example.com")
    );
    assert!(
        !gate.log_text().contains(CLIENT_SECRET),
        "secret in the log"
    );
    assert!(!gate.log_text().contains("code="), "a code in the log");
    // The sessions page names the user.
    let sessions = browser.nb_get(&gate.url("/_nbgate/sessions")).await;
    assert_eq!(sessions.status(), 200);
    assert!(sessions
        .text()
        .await
        .expect("page")
        .contains("alice@example.com"));
    assert!(!session.is_empty());

    // bob: an address elsewhere, but in the allowed group.
    let mut bob = Browser::new(&gate);
    let r = sign_in(&mut bob, &gate, "test", "%2Flab", "bob").await;
    assert_eq!(r.status(), 303);
    assert_eq!(location(&r), "/lab");
    gate.wait_for_line(&["event=\"login_success\"", "user=bob@other.test"], T)
        .await;
}

#[tokio::test]
async fn people_not_on_the_lists_get_a_clear_page_and_an_audit_line() {
    let (_provider, gate) = provider_and_gate(|b| b).await;

    for (account, address) in [
        // Verified, but neither the domain nor a group.
        ("mallory", "mallory@evil.test"),
        // In the domain, but the provider has not verified the address.
        ("eve", "eve@example.com"),
    ] {
        let mut browser = Browser::new(&gate);
        let r = sign_in(&mut browser, &gate, "test", "%2Flab", account).await;
        assert_eq!(r.status(), 403, "{account}");
        assert!(browser.nb_jar.get("__Host-nbgate-session").is_none());
        let page = r.text().await.expect("page");
        assert!(page.contains("Access not granted"), "{page}");
        assert!(page.contains("not on the list"), "{page}");
        let line = gate
            .wait_for_line(
                &[
                    "event=\"oidc_login_refused\"",
                    "reason=\"not_allowed\"",
                    &format!("user={address}"),
                ],
                T,
            )
            .await;
        assert_eq!(log_field(&line, "provider").as_deref(), Some("test"));
    }

    // In Chinese, for a browser that asks for it; JSON for an API client.
    let mut browser = Browser::new(&gate);
    let callback = browser
        .until_callback(&gate, "test", "%2F", "mallory")
        .await;
    let path = &callback[callback.find("/_nbgate/").expect("path")..];
    let r = browser
        .nb
        .get(gate.url(path))
        .header("accept", "application/json")
        .header("cookie", browser.nb_jar.header())
        .send()
        .await
        .expect("callback");
    assert_eq!(r.status(), 403);
    let json: serde_json::Value = r.json().await.expect("json");
    assert_eq!(json["error"], "oidc_not_allowed");
}

#[tokio::test]
async fn a_replayed_or_foreign_state_is_refused() {
    let (_provider, gate) = provider_and_gate(|b| b).await;

    let mut browser = Browser::new(&gate);
    let callback = browser
        .until_callback(&gate, "test", "%2Flab", "alice")
        .await;
    let flow = browser
        .nb_jar
        .get("__Host-nbgate-oidc")
        .expect("flow")
        .to_owned();
    let r = follow_callback(&mut browser, &gate, &callback).await;
    assert_eq!(r.status(), 303);

    // The same callback with the same flow cookie (a replay: a copied URL and cookie).
    browser
        .nb_jar
        .0
        .insert("__Host-nbgate-oidc".into(), flow.clone());
    let r = follow_callback(&mut browser, &gate, &callback).await;
    assert_eq!(r.status(), 400);
    assert!(r.text().await.expect("page").contains("Sign-in expired"));
    audit_line(&gate, "oidc_login_refused", Some("state_replayed")).await;

    // A callback in a browser that did not start it (login CSRF / a stolen redirect).
    let mut other = Browser::new(&gate);
    let r = follow_callback(&mut other, &gate, &callback).await;
    assert_eq!(r.status(), 400);
    audit_line(&gate, "oidc_login_refused", Some("no_flow_cookie")).await;

    // A browser with its own flow, handed another flow's callback.
    let mut victim = Browser::new(&gate);
    let mut attacker = Browser::new(&gate);
    let attacker_callback = attacker
        .until_callback(&gate, "test", "%2F", "mallory")
        .await;
    let _victim_callback = victim.until_callback(&gate, "test", "%2F", "alice").await;
    let r = follow_callback(&mut victim, &gate, &attacker_callback).await;
    assert_eq!(r.status(), 400);
    assert!(victim.nb_jar.get("__Host-nbgate-session").is_none());
    audit_line(&gate, "oidc_login_refused", Some("state_mismatch")).await;

    // A tampered flow cookie.
    let mut tamper = Browser::new(&gate);
    let callback = tamper.until_callback(&gate, "test", "%2F", "alice").await;
    let mut value = tamper
        .nb_jar
        .get("__Host-nbgate-oidc")
        .expect("flow")
        .to_owned()
        .into_bytes();
    let i = value.len() / 2;
    value[i] = if value[i] == b'A' { b'B' } else { b'A' };
    tamper.nb_jar.0.insert(
        "__Host-nbgate-oidc".into(),
        String::from_utf8(value).expect("ascii"),
    );
    let r = follow_callback(&mut tamper, &gate, &callback).await;
    assert_eq!(r.status(), 400);
    audit_line(&gate, "oidc_login_refused", Some("bad_flow_cookie")).await;
}

#[tokio::test]
async fn tampered_expired_and_wrong_audience_id_tokens_are_refused() {
    let port = free_port(false);
    let tampered = Provider::start(port, "tampered", 0).await;
    let expired = Provider::start(port, "expired", 0).await;
    let wrong_audience = Provider::start(port, "wrong_audience", 0).await;
    let gate = gate_builder(
        port,
        &[
            ("tampered", &tampered.issuer),
            ("expired", &expired.issuer),
            ("wrongaud", &wrong_audience.issuer),
        ],
    )
    .start()
    .await;
    for (name, reason) in [
        ("tampered", "bad_signature"),
        ("expired", "expired"),
        ("wrongaud", "wrong_audience"),
    ] {
        let mut browser = Browser::new(&gate);
        let r = sign_in(&mut browser, &gate, name, "%2F", "alice").await;
        assert_eq!(r.status(), 403, "{name}");
        assert!(
            browser.nb_jar.get("__Host-nbgate-session").is_none(),
            "{name}"
        );
        assert!(r.text().await.expect("page").contains("Sign-in failed"));
        let line = audit_line(&gate, "oidc_login_refused", Some(reason)).await;
        assert_eq!(log_field(&line, "provider").as_deref(), Some(name));
    }
}

#[tokio::test]
async fn a_cancelled_sign_in_is_the_providers_error_page() {
    let (_provider, gate) = provider_and_gate(|b| b).await;
    let mut browser = Browser::new(&gate);
    let callback = browser.cancelled_callback(&gate, "test").await;
    assert!(callback.contains("error=access_denied"), "{callback}");
    let r = follow_callback(&mut browser, &gate, &callback).await;
    assert_eq!(r.status(), 403);
    assert!(r.text().await.expect("page").contains("Sign-in cancelled"));
    let line = audit_line(&gate, "oidc_login_refused", Some("provider_error")).await;
    assert_eq!(
        log_field(&line, "provider_error").as_deref(),
        Some("access_denied")
    );
}

#[tokio::test]
async fn a_provider_down_gets_a_clear_page_the_password_works_and_it_is_used_once_up() {
    let port = free_port(false);
    let idp_port = free_port(false);
    let issuer = format!("http://127.0.0.1:{idp_port}");
    // Nothing listens there yet: nbgate must start anyway.
    let gate = gate_builder(port, &[("test", &issuer)]).start().await;
    let mut browser = Browser::new(&gate);
    let page = browser.nb_get(&gate.url("/_nbgate/login")).await;
    let href = button_href(&page.text().await.expect("page"), "test");
    let r = browser.nb_get(&gate.url(&href)).await;
    assert_eq!(r.status(), 503);
    let html = r.text().await.expect("page");
    assert!(html.contains("is not possible right now"), "{html}");
    assert!(html.contains("Log in with your password"), "{html}");
    assert!(
        html.contains("name=\"password\""),
        "the password form is offered"
    );
    audit_line(&gate, "oidc_login_refused", Some("provider_unavailable")).await;
    // The password still logs in.
    let client = bare_client(&gate);
    let r = login(&gate, &client, TEST_PASSWORD).await;
    assert_eq!(r.status(), 303);

    // The provider comes up: the next click discovers it.
    let _provider = Provider::start(port, "normal", idp_port).await;
    let mut browser = Browser::new(&gate);
    let r = sign_in(&mut browser, &gate, "test", "%2Flab", "alice").await;
    assert_eq!(r.status(), 303);
    assert_eq!(location(&r), "/lab");
}

#[tokio::test]
async fn password_off_hides_the_form_and_refuses_its_post() {
    let (_provider, gate) = provider_and_gate(|b| b.set("auth.password", false)).await;
    let client = bare_client(&gate);
    let page = client
        .get(gate.url("/_nbgate/login?next=%2Flab"))
        .header("accept", "text/html")
        .header("accept-language", "zh-CN")
        .send()
        .await
        .expect("login page");
    assert_eq!(page.status(), 200);
    let html = page.text().await.expect("html");
    assert!(!html.contains("name=\"password\""), "{html}");
    assert!(!html.contains("<form"), "{html}");
    assert!(html.contains("使用 Test IdP test 登录"), "{html}");
    assert!(
        html.contains("href=\"/_nbgate/oidc/test?next=%2Flab\""),
        "{html}"
    );
    // The form's POST, as a script would send it.
    let r = client
        .post(gate.url("/_nbgate/login"))
        .header("origin", gate.origin())
        .form(&[("username", "tester"), ("password", TEST_PASSWORD)])
        .send()
        .await
        .expect("POST login");
    assert_eq!(r.status(), 403);
    assert!(set_cookies(&r).is_empty());
    let json: serde_json::Value = r.json().await.expect("json");
    assert_eq!(json["error"], "password_login_off");
    gate.wait_for_log("login_password_off", T).await;
    // SSO still works.
    let mut browser = Browser::new(&gate);
    assert_eq!(
        sign_in(&mut browser, &gate, "test", "%2Flab", "alice")
            .await
            .status(),
        303
    );
}

/// Rewrites nbgate's config through `edit`, then reloads (SIGHUP) and waits for the outcome.
async fn reload_with(gate: &Nbgate, edit: impl FnOnce(&mut toml::Table)) {
    let path: PathBuf = gate.config_path().to_path_buf();
    let mut table: toml::Table = std::fs::read_to_string(&path)
        .expect("read config")
        .parse()
        .expect("TOML");
    edit(&mut table);
    std::fs::write(&path, toml::to_string(&table).expect("TOML")).expect("write config");
    let before = gate
        .log_lines()
        .iter()
        .filter(|l| l.contains("configuration reloaded"))
        .count();
    gate.signal(libc::SIGHUP);
    poll_until(T, "the reload", || async {
        (gate
            .log_lines()
            .iter()
            .filter(|l| l.contains("configuration reloaded"))
            .count()
            > before)
            .then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_reload_changes_who_may_enter_and_ends_sessions_it_no_longer_admits() {
    let (_provider, gate) = provider_and_gate(|b| b).await;
    let mut alice = Browser::new(&gate);
    assert_eq!(
        sign_in(&mut alice, &gate, "test", "%2F_nbgate%2Fsessions", "alice")
            .await
            .status(),
        303
    );
    assert_eq!(
        alice.nb_get(&gate.url("/_nbgate/sessions")).await.status(),
        200
    );

    // Only mallory's address from now on.
    reload_with(&gate, |t| {
        let entry = t["auth"]["oidc"][0].as_table_mut().expect("entry");
        entry.remove("allowed_domains");
        entry.remove("allowed_groups");
        entry.insert(
            "allowed_emails".into(),
            toml::Value::Array(vec!["mallory@evil.test".into()]),
        );
    })
    .await;
    let r = alice.nb_get(&gate.url("/_nbgate/sessions")).await;
    assert_eq!(
        r.status(),
        303,
        "alice's session ended with the list change"
    );
    let mut mallory = Browser::new(&gate);
    assert_eq!(
        sign_in(&mut mallory, &gate, "test", "%2F", "mallory")
            .await
            .status(),
        303
    );
    let mut alice = Browser::new(&gate);
    assert_eq!(
        sign_in(&mut alice, &gate, "test", "%2F", "alice")
            .await
            .status(),
        403
    );
}

#[tokio::test]
async fn config_errors_name_the_file_line_and_key() {
    let builder = NbgateBuilder::new();
    let entry = provider_entry(builder.dir(), "test", "http://idp.example.com");
    let out = builder
        .set("auth.oidc", toml::Value::Array(vec![entry]))
        .check_config()
        .await;
    assert!(!out.status.success(), "{}", out.stderr);
    assert!(out.stderr.contains("auth.oidc.issuer"), "{}", out.stderr);
    assert!(out.stderr.contains("config.toml:"), "{}", out.stderr);
}

#[tokio::test]
async fn an_https_provider_behind_a_private_ca_is_trusted_only_through_ca_bundle() {
    let certs = tempfile::tempdir().expect("tempdir");
    let pair = common::certs::localhost();
    let (cert, key) = (certs.path().join("idp.pem"), certs.path().join("idp.key"));
    std::fs::write(&cert, &pair.cert_pem).expect("write cert");
    std::fs::write(&key, &pair.key_pem).expect("write key");
    let port = free_port(false);
    let provider = Provider::start_https(port, (&cert, &key)).await;
    assert!(
        provider.issuer.starts_with("https://"),
        "{}",
        provider.issuer
    );
    let builder = gate_builder(port, &[]);
    let mut private = provider_entry(builder.dir(), "private", &provider.issuer);
    private
        .as_table_mut()
        .expect("entry")
        .insert("ca_bundle".into(), cert.display().to_string().into());
    let public = provider_entry(builder.dir(), "public", &provider.issuer);
    let gate = builder
        .set("auth.oidc", toml::Value::Array(vec![private, public]))
        .start()
        .await;
    // With the CA bundle: a whole sign-in over HTTPS.
    let mut browser = Browser::new(&gate).trusting(&pair.cert_pem);
    let r = sign_in(&mut browser, &gate, "private", "%2Flab", "alice").await;
    assert_eq!(r.status(), 303, "{}", gate.log_text());
    // Without it, the platform's roots do not know the private CA: the provider is unusable.
    let mut browser = Browser::new(&gate);
    let page = browser.nb_get(&gate.url("/_nbgate/login")).await;
    let href = button_href(&page.text().await.expect("page"), "public");
    assert_eq!(browser.nb_get(&gate.url(&href)).await.status(), 503);
    audit_line(&gate, "oidc_login_refused", Some("provider_unavailable")).await;
}
