//! The sessions page (`/_nbgate/sessions`) against a real Jupyter: a user's logins from two
//! addresses and browsers are listed with their address and a browser summary, this one
//! marked; ending one makes its cookie fail at once and closes its open kernel WebSocket;
//! ending all others keeps this session (with a renewed cookie) and its WebSocket; another
//! user's sessions are neither listed nor ended by a forged form; forms without the right
//! CSRF token are refused; the page speaks Chinese, is not cacheable and carries nbgate's
//! security headers; an API token gets a JSON refusal.

mod common;

use std::net::IpAddr;
use std::time::Duration;

use common::kernel::{execute, start_kernel};
use common::login::{browser_client, hidden, login_as, session_cookie, set_cookies};
use common::nbgate::{closed_by_server, test_hashes, TEST_PASSWORD, TEST_USER};
use common::{within, Jupyter, Nbgate};

const T: Duration = Duration::from_secs(30);

const CHROME_LINUX: &str = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like \
                            Gecko) Chrome/131.0.0.0 Safari/537.36";
const FIREFOX_WINDOWS: &str =
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:133.0) Gecko/20100101 Firefox/133.0";
/// A `User-Agent` that is markup: it must never reach the page as such.
const HOSTILE_AGENT: &str = "<script>alert(1)</script> Firefox/99 (Windows)";

const OTHER_USER: &str = "other-user";
const OTHER_PASSWORD: &str = "another correct horse";

fn ip(s: &str) -> Option<IpAddr> {
    Some(s.parse().expect("ip"))
}

/// A browser: its own client from `local` with its `User-Agent`, and its session cookie.
struct Browser {
    client: reqwest::Client,
    cookie: String,
}

async fn log_in(gate: &Nbgate, local: &str, agent: &str, user: &str, password: &str) -> Browser {
    let client = browser_client(gate, ip(local), Some(agent));
    let answer = within(T, "login", login_as(gate, &client, "/", user, password)).await;
    assert_eq!(answer.status(), 303);
    Browser {
        cookie: session_cookie(&answer),
        client,
    }
}

/// The page as `b` sees it: status, headers, HTML.
async fn page(
    gate: &Nbgate,
    b: &Browser,
    language: Option<&str>,
) -> (u16, http::HeaderMap, String) {
    page_at(gate, b, "/_nbgate/sessions", language).await
}

/// The page at `path` (with a query after a form) as `b` sees it.
async fn page_at(
    gate: &Nbgate,
    b: &Browser,
    path: &str,
    language: Option<&str>,
) -> (u16, http::HeaderMap, String) {
    let mut req = b
        .client
        .get(gate.url(path))
        .header("cookie", &b.cookie)
        .header("accept", "text/html");
    if let Some(l) = language {
        req = req.header("accept-language", l);
    }
    let r = req.send().await.expect("GET sessions");
    let (status, headers) = (r.status().as_u16(), r.headers().clone());
    (status, headers, r.text().await.expect("html"))
}

/// The `<li>` rows of the sessions list.
fn rows(html: &str) -> Vec<&str> {
    let start = html.find("<ul class=\"sessions\">").expect("session list");
    let end = html[start..].find("</ul>").expect("list end") + start;
    html[start..end].split("<li").skip(1).collect()
}

/// The row naming `what` (a browser summary), which must be there once.
fn row<'a>(html: &'a str, what: &str) -> &'a str {
    let found: Vec<&str> = rows(html)
        .into_iter()
        .filter(|r| r.contains(what))
        .collect();
    assert_eq!(found.len(), 1, "{what} in {html}");
    found[0]
}

/// POSTs the sessions form as `b` with `fields`; the answer.
async fn post(gate: &Nbgate, b: &Browser, fields: &[(&str, &str)]) -> reqwest::Response {
    b.client
        .post(gate.url("/_nbgate/sessions"))
        .header("cookie", &b.cookie)
        .header("origin", gate.origin())
        .header("accept", "application/json")
        .form(fields)
        .send()
        .await
        .expect("POST sessions")
}

async fn status_of(gate: &Nbgate, b: &Browser, cookie: &str) -> u16 {
    b.client
        .get(gate.url("/api/status"))
        .header("cookie", cookie)
        .send()
        .await
        .expect("GET /api/status")
        .status()
        .as_u16()
}

async fn error_code(r: reqwest::Response) -> (u16, String) {
    let status = r.status().as_u16();
    let body: serde_json::Value = r.json().await.expect("json error");
    (status, body["error"].as_str().expect("code").to_owned())
}

/// Jupyter, nbgate, and the test user logged in twice: a laptop (Chrome on Linux, 127.0.0.1)
/// and a desktop (Firefox on Windows, 127.0.0.2).
async fn laptop_and_desktop() -> (Jupyter, Nbgate, Browser, Browser) {
    let jupyter = Jupyter::start().await;
    let gate = Nbgate::start_for(&jupyter).await;
    let laptop = log_in(&gate, "127.0.0.1", CHROME_LINUX, TEST_USER, TEST_PASSWORD).await;
    let desktop = log_in(
        &gate,
        "127.0.0.2",
        FIREFOX_WINDOWS,
        TEST_USER,
        TEST_PASSWORD,
    )
    .await;
    (jupyter, gate, laptop, desktop)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_logins_are_listed_and_ending_one_ends_its_cookie_and_websocket() {
    let (_jupyter, gate, laptop, desktop) = laptop_and_desktop().await;

    let (status, headers, html) = page(&gate, &laptop, None).await;
    assert_eq!(status, 200, "{html}");
    assert_eq!(headers["cache-control"], "no-store");
    assert_eq!(headers["x-frame-options"], "DENY");
    assert_eq!(headers["x-content-type-options"], "nosniff");
    assert!(headers["content-security-policy"]
        .to_str()
        .expect("csp")
        .contains("default-src 'none'"));
    assert_eq!(rows(&html).len(), 2, "{html}");
    let this = row(&html, "Chrome 131 on Linux");
    assert!(this.contains("This session"), "{this}");
    assert!(this.contains("Address 127.0.0.1 "), "{this}");
    assert!(
        !this.contains("<form"),
        "no form ends the session showing the page"
    );
    let other = row(&html, "Firefox 133 on Windows");
    assert!(other.contains("Address 127.0.0.2 "), "{other}");
    assert!(!other.contains("This session"), "{other}");
    assert!(!html.contains("Mozilla"), "no raw User-Agent on the page");
    let handle = hidden(other, "end");

    // The other browser has a kernel's WebSocket open.
    let kernel = start_kernel(&gate).await;
    let path = format!("/api/kernels/{kernel}/channels");
    let (mut ws, _) = common::login::ws_connect_with_cookie(&gate, &path, &desktop.cookie)
        .await
        .expect("kernel WebSocket with the desktop's cookie");
    assert_eq!(execute(&mut ws, "1+1").await, "2");

    let csrf = hidden(&html, "csrf");
    let ended = post(&gate, &laptop, &[("csrf", &csrf), ("end", &handle)]).await;
    assert_eq!(ended.status(), 303);
    assert_eq!(ended.headers()["location"], "/_nbgate/sessions?ended=one");
    assert_eq!(closed_by_server(&mut ws).await, Some(1001));
    assert_eq!(status_of(&gate, &desktop, &desktop.cookie).await, 401);
    assert_eq!(status_of(&gate, &laptop, &laptop.cookie).await, 200);
    let audit = gate
        .wait_for_line(&["nbgate::audit", "session_revoked", TEST_USER, &handle], T)
        .await;
    let cookie_value = desktop.cookie.split_once('=').expect("pair").1;
    assert!(!audit.contains(cookie_value), "{audit}");

    let (_, _, html) = page_at(&gate, &laptop, "/_nbgate/sessions?ended=one", None).await;
    assert_eq!(rows(&html).len(), 1, "{html}");
    assert!(html.contains("The session was ended."), "{html}");
    assert!(html.contains("No other sessions are active."), "{html}");
    // Ending it again: it is not one of this user's active sessions any more.
    let again = post(&gate, &laptop, &[("csrf", &csrf), ("end", &handle)]).await;
    assert_eq!(
        error_code(again).await,
        (404, "session_not_found".to_owned())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ending_all_other_sessions_keeps_this_one_and_its_websocket() {
    let (_jupyter, gate, mut laptop, desktop) = laptop_and_desktop().await;
    let phone = log_in(&gate, "127.0.0.3", HOSTILE_AGENT, TEST_USER, TEST_PASSWORD).await;

    let (_, _, html) = page(&gate, &laptop, None).await;
    assert_eq!(rows(&html).len(), 3, "{html}");
    assert!(!html.contains("<script>alert"), "{html}");
    assert!(
        row(&html, "Firefox 99 on Windows").contains("Address 127.0.0.3 "),
        "{html}"
    );
    let csrf = hidden(&html, "csrf");

    let path = format!("/api/kernels/{}/channels", start_kernel(&gate).await);
    let connect = |cookie: String| {
        let (gate, path) = (&gate, path.clone());
        async move {
            common::login::ws_connect_with_cookie(gate, &path, &cookie)
                .await
                .expect("kernel WebSocket")
                .0
        }
    };
    let mut own_ws = connect(laptop.cookie.clone()).await;
    let mut phone_ws = connect(phone.cookie.clone()).await;
    assert_eq!(execute(&mut phone_ws, "1+1").await, "2");
    // The WebSocket came from 127.0.0.1 without a User-Agent: the phone's row shows the new
    // address and keeps its browser.
    let (_, _, html) = page(&gate, &laptop, None).await;
    assert!(
        row(&html, "Firefox 99 on Windows").contains("Address 127.0.0.1 "),
        "{html}"
    );
    let ended = post(&gate, &laptop, &[("csrf", &csrf), ("end_others", "1")]).await;
    assert_eq!(ended.status(), 303);
    assert_eq!(
        ended.headers()["location"],
        "/_nbgate/sessions?ended=others"
    );
    let renewed = session_cookie(&ended);
    let old = std::mem::replace(&mut laptop.cookie, renewed);

    assert_eq!(closed_by_server(&mut phone_ws).await, Some(1001));
    assert_eq!(status_of(&gate, &desktop, &desktop.cookie).await, 401);
    assert_eq!(status_of(&gate, &phone, &phone.cookie).await, 401);
    assert_eq!(status_of(&gate, &laptop, &laptop.cookie).await, 200);
    assert_eq!(
        status_of(&gate, &laptop, &old).await,
        401,
        "the cookie before the renewal is of the old generation"
    );
    // This session's own WebSocket was left open.
    assert_eq!(execute(&mut own_ws, "2+2").await, "4");
    gate.wait_for_line(&["nbgate::audit", "other_sessions_revoked", TEST_USER], T)
        .await;
    assert_eq!(
        gate.log_lines()
            .iter()
            .filter(|l| l.contains("session_revoked"))
            .count(),
        2,
        "one audit line per listed session ended"
    );

    let (_, _, html) = page_at(&gate, &laptop, "/_nbgate/sessions?ended=others", None).await;
    assert_eq!(rows(&html).len(), 1, "{html}");
    assert!(html.contains("All other sessions were ended."), "{html}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_users_sessions_are_not_listed_and_a_forged_form_ends_nothing() {
    let jupyter = Jupyter::start().await;
    let other_hash = nbgate::auth::password::hash_password_with_iterations(
        OTHER_PASSWORD,
        nbgate::auth::password::MIN_ITERATIONS,
    )
    .expect("hash");
    let user = |name: &str, hash: &str| {
        let mut t = toml::Table::new();
        t.insert("name".into(), name.into());
        t.insert("password_hash".into(), hash.into());
        toml::Value::Table(t)
    };
    let gate = Nbgate::builder()
        .jupyter(&jupyter)
        .set(
            "users",
            toml::Value::Array(vec![
                user(TEST_USER, &test_hashes().0),
                user(OTHER_USER, &other_hash),
            ]),
        )
        .start()
        .await;
    let mine = log_in(&gate, "127.0.0.1", CHROME_LINUX, TEST_USER, TEST_PASSWORD).await;
    let mine_too = log_in(
        &gate,
        "127.0.0.4",
        FIREFOX_WINDOWS,
        TEST_USER,
        TEST_PASSWORD,
    )
    .await;
    let theirs = log_in(
        &gate,
        "127.0.0.2",
        FIREFOX_WINDOWS,
        OTHER_USER,
        OTHER_PASSWORD,
    )
    .await;
    let theirs_too = log_in(&gate, "127.0.0.3", CHROME_LINUX, OTHER_USER, OTHER_PASSWORD).await;

    let (_, _, html) = page(&gate, &mine, None).await;
    assert_eq!(rows(&html).len(), 2, "{html}");
    assert!(
        !html.contains("127.0.0.2") && !html.contains("127.0.0.3"),
        "{html}"
    );
    assert!(!html.contains(OTHER_USER), "{html}");
    // The other user's own page names the handle of their other session.
    let (_, _, their_html) = page(&gate, &theirs_too, None).await;
    assert_eq!(rows(&their_html).len(), 2, "{their_html}");
    let their_handle = hidden(row(&their_html, "Firefox 133 on Windows"), "end");

    let csrf = hidden(&html, "csrf");
    let forged = post(&gate, &mine, &[("csrf", &csrf), ("end", &their_handle)]).await;
    assert_eq!(
        error_code(forged).await,
        (404, "session_not_found".to_owned())
    );
    assert_eq!(status_of(&gate, &theirs, &theirs.cookie).await, 200);
    gate.wait_for_line(&["nbgate::audit", "session_revoke_refused", TEST_USER], T)
        .await;
    // Ending "all others" ends only this user's others: the other user's stay.
    let all = post(&gate, &mine, &[("csrf", &csrf), ("end_others", "1")]).await;
    assert_eq!(all.status(), 303);
    assert_eq!(status_of(&gate, &mine_too, &mine_too.cookie).await, 401);
    assert_eq!(status_of(&gate, &theirs, &theirs.cookie).await, 200);
    assert_eq!(status_of(&gate, &theirs_too, &theirs_too.cookie).await, 200);
    let (_, _, their_html) = page(&gate, &theirs_too, None).await;
    assert_eq!(rows(&their_html).len(), 2, "{their_html}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forms_without_the_sessions_csrf_token_are_refused_and_end_nothing() {
    let (_jupyter, gate, laptop, desktop) = laptop_and_desktop().await;
    let (_, _, html) = page(&gate, &laptop, None).await;
    let handle = hidden(row(&html, "Firefox 133 on Windows"), "end");
    // A token made for the other session (bound to its id) is not this session's.
    let (_, _, desktop_html) = page(&gate, &desktop, None).await;
    let foreign = hidden(&desktop_html, "csrf");

    for csrf in [None, Some(""), Some("not-a-token"), Some(foreign.as_str())] {
        let mut fields = vec![("end", handle.as_str())];
        fields.extend(csrf.map(|c| ("csrf", c)));
        let r = post(&gate, &laptop, &fields).await;
        assert_eq!(error_code(r).await, (403, "csrf".to_owned()), "{csrf:?}");
        let mut fields = vec![("end_others", "1")];
        fields.extend(csrf.map(|c| ("csrf", c)));
        let r = post(&gate, &laptop, &fields).await;
        assert_eq!(error_code(r).await, (403, "csrf".to_owned()), "{csrf:?}");
    }
    // The same refusal, as a page, that the logout form's CSRF failure gets.
    let browser = laptop
        .client
        .post(gate.url("/_nbgate/sessions"))
        .header("cookie", &laptop.cookie)
        .header("accept", "text/html")
        .form(&[("end", handle.as_str())])
        .send()
        .await
        .expect("POST without token");
    assert_eq!(browser.status(), 403);
    let logout = laptop
        .client
        .post(gate.url("/_nbgate/logout"))
        .header("cookie", &laptop.cookie)
        .header("accept", "text/html")
        .form(&[("csrf", "not-a-token")])
        .send()
        .await
        .expect("logout without token");
    assert_eq!(logout.status(), 403);
    assert_eq!(
        browser.text().await.expect("html"),
        logout.text().await.expect("html")
    );
    assert_eq!(status_of(&gate, &desktop, &desktop.cookie).await, 200);
    assert_eq!(status_of(&gate, &laptop, &laptop.cookie).await, 200);
    gate.wait_for_line(&["nbgate::audit", "sessions_csrf_failed", TEST_USER], T)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_speaks_chinese_and_needs_a_browser_session() {
    let jupyter = Jupyter::start().await;
    let gate = Nbgate::start_for(&jupyter).await;
    let laptop = log_in(&gate, "127.0.0.1", CHROME_LINUX, TEST_USER, TEST_PASSWORD).await;

    let (status, _, html) = page(&gate, &laptop, Some("zh-CN,zh;q=0.9,en;q=0.5")).await;
    assert_eq!(status, 200);
    for needle in [
        "<html lang=\"zh-Hans\">",
        "<h1>您的会话</h1>",
        "Linux 上的 Chrome 131",
        "当前会话",
        "地址 127.0.0.1",
        "没有其他活动的会话。",
    ] {
        assert!(html.contains(needle), "{needle} in {html}");
    }

    // The logout page links here.
    let logout = laptop
        .client
        .get(gate.url("/_nbgate/logout"))
        .header("cookie", &laptop.cookie)
        .send()
        .await
        .expect("logout page")
        .text()
        .await
        .expect("html");
    assert!(logout.contains("href=\"/_nbgate/sessions\""), "{logout}");

    // An API token is refused with a JSON reason; it ends nothing.
    let token = gate
        .client()
        .get(gate.url("/_nbgate/sessions"))
        .send()
        .await
        .expect("GET sessions with a token");
    assert_eq!(
        error_code(token).await,
        (403, "login_session_required".to_owned())
    );
    let token_post = gate
        .client()
        .post(gate.url("/_nbgate/sessions"))
        .form(&[("end_others", "1")])
        .send()
        .await
        .expect("POST sessions with a token");
    assert_eq!(
        error_code(token_post).await,
        (403, "login_session_required".to_owned())
    );
    assert_eq!(status_of(&gate, &laptop, &laptop.cookie).await, 200);

    // No session: a browser goes to log in and comes back; an API call gets 401.
    let anonymous = browser_client(&gate, None, None);
    let nav = anonymous
        .get(gate.url("/_nbgate/sessions"))
        .header("accept", "text/html")
        .send()
        .await
        .expect("anonymous navigation");
    assert_eq!(nav.status(), 303);
    assert_eq!(
        nav.headers()["location"],
        "/_nbgate/login?next=%2F_nbgate%2Fsessions"
    );
    assert!(set_cookies(&nav).is_empty());
    let api = anonymous
        .get(gate.url("/_nbgate/sessions"))
        .send()
        .await
        .expect("anonymous API call");
    assert_eq!(api.status(), 401);
}
