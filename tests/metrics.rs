//! The admin listener against a real nbgate in front of a real Jupyter: Prometheus metrics
//! after logins, proxied requests, kernel WebSockets (HTTP/1.1 and HTTP/2) and refusals;
//! `/health` on the admin listener and on the health page when Jupyter stops; off by default; a
//! non-loopback address refused without a token; TLS and the bearer token when one is set.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::h2ws::{h2_connection, h2_ws, ApiClient};
use common::kernel::{execute, start_kernel};
use common::login::{bare_client, login};
use common::nbgate::{log_field, TEST_PASSWORD};
use common::{poll_until, within, Jupyter, Nbgate, NbgateBuilder};

const T: Duration = Duration::from_secs(30);

/// nbgate with the admin listener on a free loopback port.
fn with_admin(builder: NbgateBuilder) -> NbgateBuilder {
    builder.set("admin.listen", "127.0.0.1:0")
}

/// The admin listener's address and scheme, from its start line.
async fn admin_addr(gate: &Nbgate) -> (String, SocketAddr) {
    let line = gate.wait_for_log("admin endpoint up", T).await;
    let scheme = log_field(&line, "admin_scheme").expect("admin_scheme in {line}");
    let addr = log_field(&line, "admin_addr")
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("admin_addr in {line}"));
    (scheme, addr)
}

fn plain_client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(T)
        .build()
        .expect("client")
}

async fn get(client: &reqwest::Client, url: &str) -> reqwest::Response {
    within(T, url, client.get(url).send())
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"))
}

async fn scrape(addr: SocketAddr) -> String {
    let r = get(&plain_client(), &format!("http://{addr}/metrics")).await;
    assert_eq!(r.status(), 200);
    let content_type = r.headers()["content-type"].to_str().unwrap_or_default();
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{content_type}"
    );
    r.text().await.expect("metrics body")
}

/// The value of the sample `series` (name with its labels, exactly as exposed).
fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no sample {series} in:\n{text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scrape_shows_logins_requests_tunnels_and_refusals() {
    let jupyter = Jupyter::start().await;
    let gate = with_admin(Nbgate::builder().jupyter(&jupyter))
        .start()
        .await;
    let (scheme, admin) = admin_addr(&gate).await;
    assert_eq!(scheme, "http", "loopback without a token is plain HTTP");

    // A wrong and a right password through the login form.
    let browser = bare_client(&gate);
    assert_eq!(login(&gate, &browser, "wrong password").await.status(), 401);
    assert_eq!(login(&gate, &browser, TEST_PASSWORD).await.status(), 303);
    // Proxied requests with the API token, and one refused without credentials.
    for _ in 0..3 {
        let r = get(&gate.client(), &gate.url("/api/status")).await;
        assert_eq!(r.status(), 200);
    }
    let refused = get(&bare_client(&gate), &gate.url("/api/contents")).await;
    assert_eq!(refused.status(), 401);
    // A kernel WebSocket, open while scraping.
    let kernel = start_kernel(&gate).await;
    let mut ws = gate
        .ws_connect(&format!("/api/kernels/{kernel}/channels"))
        .await;
    assert_eq!(execute(&mut ws, "6*7").await, "42");
    // And one over HTTP/2 (RFC 8441): its 200 counts as the opened tunnel a 101 is.
    let mut conn = h2_connection(&gate).await;
    let path = format!("/api/kernels/{kernel}/channels");
    let mut h2_ws = h2_ws(&mut conn, &gate, &path, &ApiClient::of(&gate).headers()).await;
    assert_eq!(execute(&mut h2_ws, "6*7").await, "42");

    let text = scrape(admin).await;
    let at_least = |series: &str, n: f64| {
        let v = sample(&text, series);
        assert!(v >= n, "{series} = {v}, expected at least {n}\n{text}");
    };
    at_least("nbgate_logins_total{outcome=\"success\"}", 1.0);
    at_least("nbgate_logins_total{outcome=\"failure\"}", 1.0);
    at_least("nbgate_token_checks_total{outcome=\"valid\"}", 1.0);
    at_least("nbgate_requests_total{kind=\"proxied\",code=\"2xx\"}", 4.0);
    at_least("nbgate_requests_total{kind=\"proxied\",code=\"4xx\"}", 1.0);
    at_least("nbgate_requests_total{kind=\"own_page\",code=\"2xx\"}", 1.0);
    at_least(
        "nbgate_requests_total{kind=\"websocket\",code=\"1xx\"}",
        2.0,
    );
    at_least(
        "nbgate_request_duration_seconds_count{kind=\"proxied\"}",
        5.0,
    );
    at_least("nbgate_received_bytes_total", 1000.0);
    at_least("nbgate_sent_bytes_total", 1000.0);
    at_least("nbgate_open_connections", 1.0);
    assert_eq!(sample(&text, "nbgate_open_tunnels"), 2.0, "{text}");
    assert_eq!(sample(&text, "nbgate_upstream_up"), 1.0, "{text}");
    at_least("nbgate_upstream_connects_total{result=\"success\"}", 1.0);
    at_least("nbgate_certificate_not_after_seconds", 1.0);
    assert!(
        text.contains(&format!(
            "nbgate_build_info{{version=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION")
        )),
        "{text}"
    );
    // Nothing secret in the exposition.
    for secret in [gate.upstream_token(), TEST_PASSWORD] {
        assert!(!text.contains(secret), "secret in metrics");
    }

    drop(ws);
    drop(h2_ws);
    poll_until(T, "the tunnels' gauge back to 0", || {
        let scraped = scrape(admin);
        async move { (sample(&scraped.await, "nbgate_open_tunnels") == 0.0).then_some(()) }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_says_when_jupyter_is_down_on_both_listeners() {
    let mut jupyter = Jupyter::start().await;
    let gate = with_admin(Nbgate::builder().jupyter(&jupyter))
        .start()
        .await;
    let (_, admin) = admin_addr(&gate).await;
    let admin_health = format!("http://{admin}/health");
    // The health page needs no login: a client without credentials.
    let page = bare_client(&gate);
    let page_health = gate.url("/_nbgate/health");

    for url in [&admin_health, &page_health] {
        let client = if url == &admin_health {
            plain_client()
        } else {
            page.clone()
        };
        let r = get(&client, url).await;
        assert_eq!(r.status(), 200, "{url}");
        assert_eq!(r.headers()["cache-control"], "no-store");
        let body: serde_json::Value = r.json().await.expect("health JSON");
        assert_eq!(body["upstream"], "up", "{url}: {body}");
    }

    jupyter.stop();
    for (client, url) in [
        (plain_client(), &admin_health),
        (page.clone(), &page_health),
    ] {
        poll_until(T, "health reports the upstream down", || {
            let answer = client.get(url.as_str()).send();
            async move {
                let r = answer.await.ok()?;
                (r.status() == 503).then_some(())?;
                let body: serde_json::Value = r.json().await.ok()?;
                (body["upstream"] == "down").then_some(())
            }
        })
        .await;
    }
    assert_eq!(sample(&scrape(admin).await, "nbgate_upstream_up"), 0.0);

    jupyter.restart().await;
    poll_until(T, "health reports the upstream up again", || {
        let answer = page.get(page_health.as_str()).send();
        async move { (answer.await.ok()?.status() == 200).then_some(()) }
    })
    .await;
}

/// Listening TCP sockets of `pid` (from /proc: its socket inodes in LISTEN state).
fn listening_sockets(pid: u32) -> usize {
    let inodes: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("fd dir")
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter_map(|l| {
            let l = l.to_string_lossy().into_owned();
            Some(l.strip_prefix("socket:[")?.strip_suffix(']')?.to_owned())
        })
        .collect();
    ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|p| std::fs::read_to_string(p).ok())
        .flat_map(|t| t.lines().skip(1).map(str::to_owned).collect::<Vec<_>>())
        .filter(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            // State 0A is LISTEN; field 9 the inode.
            f.get(3) == Some(&"0A") && f.get(9).is_some_and(|i| inodes.iter().any(|x| x == i))
        })
        .count()
}

#[tokio::test]
async fn admin_is_off_unless_configured() {
    let gate = Nbgate::builder().start().await;
    assert_eq!(
        listening_sockets(gate.pid()),
        1,
        "only the HTTPS listener listens by default"
    );
    assert!(!gate.log_contains("admin endpoint up"));

    let gate = with_admin(Nbgate::builder()).start().await;
    admin_addr(&gate).await;
    assert_eq!(listening_sockets(gate.pid()), 2, "HTTPS and admin");
}

#[tokio::test]
async fn a_non_loopback_admin_address_needs_a_token() {
    let builder = NbgateBuilder::new().set("admin.listen", "0.0.0.0:9180");
    let out = builder.check_config().await;
    assert!(!out.status.success(), "{out:?}");
    let message = format!("{}\n{}", out.stdout, out.stderr);
    let path = builder.dir().join("config.toml").display().to_string();
    for needle in [
        path.as_str(),
        "admin.listen",
        "not a loopback",
        "admin.token_file",
    ] {
        assert!(message.contains(needle), "{needle:?} not said:\n{message}");
    }

    let token_file = builder.dir().join("admin-token");
    std::fs::write(&token_file, "0123456789abcdef0123456789abcdef\n").expect("token");
    let out = builder
        .set("admin.token_file", token_file.display().to_string())
        .check_config()
        .await;
    assert!(out.status.success(), "{out:?}");
    assert!(
        !out.stdout.contains("0123456789abcdef"),
        "token printed:\n{}",
        out.stdout
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_token_the_admin_listener_speaks_tls_and_wants_the_bearer() {
    let token = common::random_hex(24);
    let builder = with_admin(Nbgate::builder());
    let token_file = builder.dir().join("admin-token");
    std::fs::write(&token_file, format!("{token}\n")).expect("token");
    let gate = builder
        .set("admin.token_file", token_file.display().to_string())
        .start()
        .await;
    let (scheme, admin) = admin_addr(&gate).await;
    assert_eq!(scheme, "https");

    let cert = reqwest::Certificate::from_pem(gate.cert_pem()).expect("pem");
    let client = reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(cert)
        .resolve("localhost", admin)
        .timeout(T)
        .build()
        .expect("client");
    let url = format!("https://localhost:{}/metrics", admin.port());
    let send = |auth: Option<String>| {
        let mut r = client.get(&url);
        if let Some(a) = auth {
            r = r.header("authorization", a);
        }
        within(T, "GET admin /metrics", r.send())
    };
    let none = send(None).await.expect("answer without token");
    assert_eq!(none.status(), 401);
    assert!(none.headers().contains_key("www-authenticate"));
    let wrong = send(Some(format!("Bearer {token}x")))
        .await
        .expect("answer");
    assert_eq!(wrong.status(), 401);
    let right = send(Some(format!("Bearer {token}"))).await.expect("answer");
    assert_eq!(right.status(), 200);
    let text = right.text().await.expect("body");
    assert!(text.contains("nbgate_requests_total"), "{text}");
    assert!(!text.contains(&token));
    // Plain HTTP to the TLS listener gets no metrics.
    let plain = plain_client()
        .get(format!("http://{admin}/metrics"))
        .header("authorization", format!("Bearer {token}"))
        .send()
        .await;
    assert!(
        plain.as_ref().map_or(true, |r| r.status() != 200),
        "{plain:?}"
    );
}

fn alerts_file() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/prometheus/alerts.yml")
}

#[tokio::test]
async fn shipped_alert_rules_pass_promtool() {
    let mut cmd = std::process::Command::new("promtool");
    cmd.arg("check").arg("rules").arg(alerts_file());
    let out = common::nbgate::run_to_exit(cmd, T).await;
    assert!(
        out.status.success(),
        "promtool check rules (Debian's `prometheus` package; tests/run.sh installs it): {out:?}"
    );
    assert!(out.stdout.contains("SUCCESS"), "{out:?}");
}

#[tokio::test]
async fn alert_rules_name_only_metrics_nbgate_exposes() {
    let rules = std::fs::read_to_string(alerts_file()).expect("alerts.yml");
    let gate = with_admin(Nbgate::builder()).start().await;
    let (_, admin) = admin_addr(&gate).await;
    let text = scrape(admin).await;
    let mut names: Vec<&str> = rules
        .match_indices("nbgate_")
        .map(|(i, _)| {
            let rest = &rules[i..];
            let end = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(rest.len());
            &rest[..end]
        })
        .collect();
    names.sort_unstable();
    names.dedup();
    assert!(names.len() >= 4, "{names:?}");
    for name in names {
        // `*_last_success` appears once the event first happened (no renewal or reload yet here).
        if name.ends_with("_last_success") {
            assert!(
                name == "nbgate_certificate_renewal_last_success"
                    || name == "nbgate_reload_last_success",
                "{name}"
            );
            continue;
        }
        assert!(
            text.lines().any(|l| l.starts_with(name)),
            "alerts.yml uses {name}, which /metrics lacks:\n{text}"
        );
    }
}
