//! Automatic HTTPS against the real ACME server Pebble: HTTP-01, TLS-ALPN-01, fallback between
//! them, IP address certificates (RFC 8738) over both, restart without a new order, renewal while
//! connections stay open, a CA outage, and certificate reload in files mode.
//!
//! Every test starts its own Pebble on its own ports, so the tests may run in parallel. Clients
//! trust only Pebble's issuing root (fetched from its management API) and connect with SNI
//! `nb.example.test`, which Pebble's mock DNS resolves to 127.0.0.1.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use common::certs;
use common::pebble::{Pebble, PebbleOptions};
use common::{within, Nbgate, NbgateBuilder, TestUpstream};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;

const DOMAIN: &str = "nb.example.test";
/// Issuance with Pebble takes about a second; this leaves room for a loaded machine.
const ISSUE_TIMEOUT: Duration = Duration::from_secs(45);

/// nbgate in ACME mode against `pebble`, listening on Pebble's TLS-ALPN-01 port; `http` adds a
/// plain listener on Pebble's HTTP-01 port.
fn acme_gate(pebble: &Pebble, upstream: &TestUpstream, http: bool) -> NbgateBuilder {
    let http_listen: Vec<String> = if http {
        vec![format!("127.0.0.1:{}", pebble.http_port)]
    } else {
        Vec::new()
    };
    NbgateBuilder::new()
        .upstream(&upstream.url())
        .set(
            "server.listen",
            vec![format!("127.0.0.1:{}", pebble.tls_port)],
        )
        .set("server.http_listen", http_listen)
        .set("tls.mode", "acme")
        .set("tls.acme.domains", vec![DOMAIN.to_string()])
        .set("tls.acme.directory", pebble.directory_url())
        .set(
            "tls.acme.ca_bundle",
            pebble.directory_ca_path().display().to_string(),
        )
        .set("tls.acme.contact", "ops@example.test")
        .env("NBGATE_TEST_ACME_RETRY_BASE", "300ms")
}

fn client_config(roots: &[CertificateDer<'static>], alpn: &[&[u8]]) -> rustls::ClientConfig {
    let mut store = rustls::RootCertStore::empty();
    for r in roots {
        store.add(r.clone()).expect("add root");
    }
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("TLS versions")
    .with_root_certificates(store)
    .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    config
}

/// A verified TLS connection to `addr` as `name`, trusting only `roots`.
async fn tls_connect(
    addr: SocketAddr,
    name: &str,
    roots: &[CertificateDer<'static>],
    alpn: &[&[u8]],
) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let connector = tokio_rustls::TlsConnector::from(Arc::new(client_config(roots, alpn)));
    let tcp = within(
        Duration::from_secs(10),
        "TCP connect",
        TcpStream::connect(addr),
    )
    .await?;
    let name = ServerName::try_from(name.to_string()).expect("server name");
    within(
        Duration::from_secs(10),
        "TLS handshake",
        connector.connect(name, tcp),
    )
    .await
}

fn leaf_serial(tls: &tokio_rustls::client::TlsStream<TcpStream>) -> String {
    let leaf = &tls.get_ref().1.peer_certificates().expect("peer certs")[0];
    let (_, cert) = x509_parser::parse_x509_certificate(leaf.as_ref()).expect("x509");
    hex::encode(cert.raw_serial())
}

/// The serial a fresh, verified connection sees.
async fn served_serial(addr: SocketAddr, name: &str, roots: &[CertificateDer<'static>]) -> String {
    let tls = tls_connect(addr, name, roots, &[b"http/1.1"])
        .await
        .expect("verified TLS handshake");
    leaf_serial(&tls)
}

/// GET `path` over a verified HTTP/1.1 connection: status and body.
async fn get(
    gate: &Nbgate,
    roots: &[CertificateDer<'static>],
    path: &str,
) -> (http::StatusCode, String) {
    let tls = tls_connect(gate.https_addr(), DOMAIN, roots, &[b"http/1.1"])
        .await
        .expect("verified TLS handshake");
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .expect("HTTP/1.1 handshake");
    tokio::spawn(conn);
    request(&mut sender, gate, path).await
}

async fn request(
    sender: &mut hyper::client::conn::http1::SendRequest<Empty<bytes::Bytes>>,
    gate: &Nbgate,
    path: &str,
) -> (http::StatusCode, String) {
    let mut req = http::Request::get(path)
        .header("host", format!("{DOMAIN}:{}", gate.https_addr().port()))
        .body(Empty::new())
        .expect("request");
    req.headers_mut().extend(gate.auth_headers());
    let resp = within(
        Duration::from_secs(10),
        "response",
        sender.send_request(req),
    )
    .await
    .expect("response");
    let status = resp.status();
    let body = within(Duration::from_secs(10), "body", resp.into_body().collect())
        .await
        .expect("body")
        .to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// `<state_dir>/certs/acme/<directory>/`.
fn acme_store(state_dir: &Path) -> std::path::PathBuf {
    let base = state_dir.join("certs/acme");
    let mut dirs: Vec<_> = std::fs::read_dir(&base)
        .unwrap_or_else(|e| panic!("{}: {e}", base.display()))
        .flatten()
        .map(|e| e.path())
        .collect();
    assert_eq!(dirs.len(), 1, "one directory per CA: {dirs:?}");
    dirs.remove(0)
}

#[tokio::test]
async fn http01_gets_a_certificate_that_a_client_trusting_only_pebble_accepts() {
    let pebble = Pebble::start(PebbleOptions::default()).await;
    let upstream = TestUpstream::start().await;
    let gate = acme_gate(&pebble, &upstream, true)
        .set("tls.acme.challenges", vec!["http-01".to_string()])
        .start()
        .await;
    // Up at once, on the temporary certificate, while the order runs.
    gate.wait_for_log("temporary self-signed certificate", ISSUE_TIMEOUT)
        .await;
    gate.wait_for_log("acme: certificate issued", ISSUE_TIMEOUT)
        .await;
    for step in [
        "acme: account created",
        "acme: order placed",
        "acme: challenge ready",
        "acme: validation succeeded",
    ] {
        assert!(
            gate.log_contains(step),
            "missing {step:?}:\n{}",
            gate.log_text()
        );
    }
    assert!(gate
        .find_line(&["acme: validation succeeded", "http-01"])
        .is_some());

    let root = pebble.issuing_root().await;
    let (status, body) = get(&gate, &[root], "/api/echo").await;
    assert_eq!(status, 200, "{body}");
    assert!(
        body.contains("/api/echo"),
        "proxied to the upstream: {body}"
    );

    // The plain listener still redirects everything but pending challenge tokens.
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let base = format!("http://{}", gate.http_addr());
    let r = http.get(format!("{base}/lab")).send().await.expect("GET");
    assert_eq!(r.status(), 308);
    let r = http
        .get(format!("{base}/.well-known/acme-challenge/unknown-token"))
        .send()
        .await
        .expect("GET");
    assert_eq!(r.status(), 404);

    let store = acme_store(gate.state_dir());
    assert_eq!(common::file_mode(&store.join("key.pem")), 0o600);
    assert_eq!(common::file_mode(&store.join("account.json")), 0o600);
    assert!(store.join("cert.pem").exists());
}

#[tokio::test]
async fn http01_validation_passes_an_allowlist_that_does_not_admit_the_ca() {
    let pebble = Pebble::start(PebbleOptions::default()).await;
    let upstream = TestUpstream::start().await;
    // Pebble validates from 127.0.0.1, which the allowlist does not admit.
    let gate = acme_gate(&pebble, &upstream, true)
        .set("tls.acme.challenges", vec!["http-01".to_string()])
        .set("policy.allow", vec!["127.0.0.2".to_string()])
        .start()
        .await;
    gate.wait_for_log("acme: certificate issued", ISSUE_TIMEOUT)
        .await;
    assert!(gate
        .find_line(&["acme: validation succeeded", "http-01"])
        .is_some());
    // The HTTPS listener still applies the allowlist to 127.0.0.1.
    let root = pebble.issuing_root().await;
    assert!(
        tls_connect(gate.https_addr(), DOMAIN, &[root], &[b"http/1.1"])
            .await
            .is_err()
    );
    gate.wait_for_line(&["connection_refused", "client=127.0.0.1"], ISSUE_TIMEOUT)
        .await;
}

#[tokio::test]
async fn tls_alpn01_alone_gets_the_certificate_and_validation_handshakes_never_reach_http() {
    let pebble = Pebble::start(PebbleOptions::default()).await;
    let upstream = TestUpstream::start().await;
    // No plain listener: the default challenge list is TLS-ALPN-01 only.
    let gate = acme_gate(&pebble, &upstream, false).start().await;
    gate.wait_for_log("acme: certificate issued", ISSUE_TIMEOUT)
        .await;
    assert!(gate
        .find_line(&["acme: validation succeeded", "tls-alpn-01"])
        .is_some());
    let root = pebble.issuing_root().await;
    let (status, body) = get(&gate, std::slice::from_ref(&root), "/api/echo").await;
    assert_eq!(status, 200, "{body}");

    // A client offering h2 and http/1.1 (and even acme-tls/1 among them) gets the real
    // certificate and a normal protocol.
    let tls = tls_connect(
        gate.https_addr(),
        DOMAIN,
        std::slice::from_ref(&root),
        &[b"acme-tls/1", b"h2", b"http/1.1"],
    )
    .await
    .expect("verified handshake");
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    // Offering only acme-tls/1 with no pending challenge: no certificate at all.
    let refused = tls_connect(gate.https_addr(), DOMAIN, &[root], &[b"acme-tls/1"]).await;
    assert!(
        refused.is_err(),
        "acme-tls/1 handshake without a challenge must fail"
    );
}

#[tokio::test]
async fn when_http01_is_impossible_tls_alpn01_still_gets_the_certificate() {
    let pebble = Pebble::start(PebbleOptions::default()).await;
    let upstream = TestUpstream::start().await;
    // HTTP-01 first, but no plain listener: Pebble's HTTP-01 connection is refused.
    let gate = acme_gate(&pebble, &upstream, false)
        .set(
            "tls.acme.challenges",
            vec!["http-01".to_string(), "tls-alpn-01".to_string()],
        )
        .start()
        .await;
    gate.wait_for_log("acme: certificate issued", ISSUE_TIMEOUT)
        .await;
    assert!(
        gate.find_line(&["attempt with this challenge failed", "http-01"])
            .is_some(),
        "{}",
        gate.log_text()
    );
    assert!(gate
        .find_line(&["acme: validation succeeded", "tls-alpn-01"])
        .is_some());
    let root = pebble.issuing_root().await;
    let (status, _) = get(&gate, &[root], "/api/echo").await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn a_restart_serves_the_stored_certificate_and_places_no_new_order() {
    let pebble = Pebble::start(PebbleOptions::default()).await;
    let upstream = TestUpstream::start().await;
    let state = tempfile::tempdir().expect("state dir");
    let state_dir = state.path().display().to_string();
    let gate = acme_gate(&pebble, &upstream, false)
        .set("server.state_dir", state_dir.as_str())
        .start()
        .await;
    gate.wait_for_log("acme: certificate issued", ISSUE_TIMEOUT)
        .await;
    let root = pebble.issuing_root().await;
    let first = served_serial(gate.https_addr(), DOMAIN, std::slice::from_ref(&root)).await;
    drop(gate);
    let orders_before = pebble.count_lines("/order-plz");
    assert!(
        orders_before >= 1,
        "pebble logs orders:\n{}",
        pebble.log_text()
    );

    let gate = acme_gate(&pebble, &upstream, false)
        .set("server.state_dir", state_dir.as_str())
        .start()
        .await;
    // Served from the first handshake: no temporary certificate in between.
    assert_eq!(
        served_serial(gate.https_addr(), DOMAIN, std::slice::from_ref(&root)).await,
        first
    );
    gate.wait_for_log("acme: renewal scheduled", ISSUE_TIMEOUT)
        .await;
    assert!(gate.log_contains("no order placed"), "{}", gate.log_text());
    assert!(
        !gate.log_contains("acme: order placed"),
        "{}",
        gate.log_text()
    );
    assert_eq!(pebble.count_lines("/order-plz"), orders_before);
    let (status, _) = get(&gate, &[root], "/api/echo").await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn renewal_swaps_the_certificate_while_an_open_connection_keeps_working() {
    let pebble = Pebble::start(PebbleOptions {
        validity_secs: Some(15),
    })
    .await;
    let upstream = TestUpstream::start().await;
    let gate = acme_gate(&pebble, &upstream, false)
        .set("server.header_read_timeout", "60s")
        .start()
        .await;
    gate.wait_for_log("acme: certificate issued", ISSUE_TIMEOUT)
        .await;
    let root = pebble.issuing_root().await;
    let roots = [root];

    // A connection opened before the renewal.
    let tls = tls_connect(gate.https_addr(), DOMAIN, &roots, &[b"http/1.1"])
        .await
        .expect("handshake");
    let old = leaf_serial(&tls);
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .expect("HTTP/1.1 handshake");
    tokio::spawn(conn);
    assert_eq!(request(&mut sender, &gate, "/api/echo").await.0, 200);

    // Renewal at half the 15 s lifetime (a short-lived certificate), without any help.
    common::poll_until(Duration::from_secs(40), "a second issuance", || async {
        (gate.log_text().matches("acme: certificate issued").count() >= 2).then_some(())
    })
    .await;
    let new = served_serial(gate.https_addr(), DOMAIN, &roots).await;
    assert_ne!(new, old, "a new connection sees the renewed certificate");
    assert!(gate.log_contains(&new), "the log names the new serial");
    // Pebble 2.4 offers no renewal window (ARI): the lifetime rule decided.
    assert!(
        gate.log_text()
            .lines()
            .any(|l| l.contains("acme: renewal scheduled") && l.contains("basis=\"lifetime\"")),
        "{}",
        gate.log_text()
    );
    // The old connection is untouched.
    assert_eq!(request(&mut sender, &gate, "/api/echo").await.0, 200);
}

/// The IP address SANs of a connection's leaf certificate.
fn leaf_ips(tls: &tokio_rustls::client::TlsStream<TcpStream>) -> Vec<std::net::IpAddr> {
    let leaf = &tls.get_ref().1.peer_certificates().expect("peer certs")[0];
    let (_, cert) = x509_parser::parse_x509_certificate(leaf.as_ref()).expect("x509");
    let san = cert
        .subject_alternative_name()
        .expect("SAN extension")
        .expect("a SAN");
    san.value
        .general_names
        .iter()
        .filter_map(|n| match n {
            x509_parser::extensions::GeneralName::IPAddress(b) if b.len() == 4 => Some(
                std::net::IpAddr::from(<[u8; 4]>::try_from(*b).expect("4 bytes")),
            ),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn an_ip_address_gets_a_certificate_over_http01() {
    let pebble = Pebble::start(PebbleOptions::default()).await;
    let upstream = TestUpstream::start().await;
    let gate = acme_gate(&pebble, &upstream, true)
        .set("tls.acme.domains", vec!["127.0.0.1".to_string()])
        .set("tls.acme.challenges", vec!["http-01".to_string()])
        .start()
        .await;
    gate.wait_for_log("acme: certificate issued", ISSUE_TIMEOUT)
        .await;
    assert!(gate
        .find_line(&["acme: validation succeeded", "http-01"])
        .is_some());
    // Pebble 2.4 offers no profiles: none is asked for (with Let's Encrypt it is
    // `shortlived`; see the unit tests of `choose_profile`).
    assert!(gate
        .find_line(&["acme: order placed", "the CA's default"])
        .is_some());
    let root = pebble.issuing_root().await;
    // A client that knows the address only, as a browser typing https://IP/ does: no SNI,
    // the certificate is checked against the address.
    let tls = tls_connect(gate.https_addr(), "127.0.0.1", &[root], &[b"http/1.1"])
        .await
        .expect("a client verifying the IP address accepts the certificate");
    assert_eq!(
        leaf_ips(&tls),
        ["127.0.0.1".parse::<std::net::IpAddr>().expect("ip")]
    );
}

#[tokio::test]
async fn an_ip_address_gets_a_certificate_over_tls_alpn01_and_renews_while_a_connection_stays_open()
{
    let pebble = Pebble::start(PebbleOptions {
        validity_secs: Some(15),
    })
    .await;
    let upstream = TestUpstream::start().await;
    let gate = acme_gate(&pebble, &upstream, false)
        .set("tls.acme.domains", vec!["127.0.0.1".to_string()])
        .set("server.header_read_timeout", "60s")
        .set("admin.listen", "127.0.0.1:0")
        .start()
        .await;
    gate.wait_for_log("acme: certificate issued", ISSUE_TIMEOUT)
        .await;
    // The validator named the address's reverse-DNS name in SNI (RFC 8738 §6).
    assert!(gate
        .find_line(&["acme: validation succeeded", "tls-alpn-01"])
        .is_some());
    let roots = [pebble.issuing_root().await];
    let tls = tls_connect(gate.https_addr(), "127.0.0.1", &roots, &[b"http/1.1"])
        .await
        .expect("verified handshake to the address");
    let old = leaf_serial(&tls);
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .expect("HTTP/1.1 handshake");
    tokio::spawn(conn);
    assert_eq!(request(&mut sender, &gate, "/api/echo").await.0, 200);

    // A short-lived certificate renews at half its lifetime.
    common::poll_until(Duration::from_secs(40), "a second issuance", || async {
        (gate.log_text().matches("acme: certificate issued").count() >= 2).then_some(())
    })
    .await;
    let new = served_serial(gate.https_addr(), "127.0.0.1", &roots).await;
    assert_ne!(new, old, "a new connection sees the renewed certificate");
    // The connection opened before the renewal is untouched.
    assert_eq!(request(&mut sender, &gate, "/api/echo").await.0, 200);
    // The log and the metrics say when the next renewal is.
    assert!(gate
        .find_line(&["acme: renewal scheduled", "renew_in"])
        .is_some());
    let up = gate.wait_for_log("admin endpoint up", ISSUE_TIMEOUT).await;
    let admin = common::nbgate::log_field(&up, "admin_addr").expect("admin_addr");
    let text = reqwest::get(format!("http://{admin}/metrics"))
        .await
        .expect("scrape")
        .text()
        .await
        .expect("metrics");
    let next: i64 = text
        .lines()
        .find_map(|l| l.strip_prefix("nbgate_certificate_next_renewal_seconds "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no next renewal in:\n{text}"));
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    assert!(
        (now - 60..now + 60).contains(&next),
        "next renewal {next}, now {now}"
    );
}

/// ARI (RFC 9773): where the directory offers renewal windows, the window decides, not the
/// lifetime. Pebble 2.4 has no ARI endpoint, so `AriMock` (tests/common/ari.rs, a mock of that
/// one endpoint) serves Pebble's real directory with `renewalInfo` added; accounts, orders,
/// validation and certificates are the real Pebble's.
#[tokio::test]
async fn a_started_ari_window_renews_a_certificate_years_before_a_third_of_its_lifetime() {
    // Pebble's default validity is about five years: the lifetime rule would wait ~3 years.
    let pebble = Pebble::start(PebbleOptions {
        validity_secs: None,
    })
    .await;
    let ari = common::ari::AriMock::start(&pebble).await;
    let upstream = TestUpstream::start().await;
    let gate = acme_gate(&pebble, &upstream, false)
        .set("tls.acme.directory", ari.directory_url())
        .start()
        .await;
    // The first certificate's window has started: a second order follows at once.
    common::poll_until(
        ISSUE_TIMEOUT * 2,
        "a renewal the CA's window asked for",
        || async {
            (gate.log_text().matches("acme: certificate issued").count() >= 2).then_some(())
        },
    )
    .await;
    // The renewed certificate is asked about too; its window is 30 days ahead, so the
    // next renewal is scheduled inside it.
    let scheduled = tokio::time::timeout(ISSUE_TIMEOUT, async {
        loop {
            let found = gate.log_text().lines().any(|l| {
                l.contains("acme: renewal scheduled")
                    && l.contains("basis=\"ari\"")
                    // 30 to 31 days; humantime calls 30.44 days a month.
                    && (l.contains("renew_in=30days") || l.contains("renew_in=1month"))
            });
            if found {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    assert!(
        scheduled.is_ok(),
        "the next renewal must be scheduled by ARI, 30 days ahead; asked {:?}\n{}",
        ari.asked(),
        gate.log_text()
    );
    let asked = ari.asked();
    assert!(asked.len() >= 2, "{asked:?}");
    assert_ne!(
        asked.first(),
        asked.last(),
        "each certificate is asked about by its own identifier: {asked:?}"
    );
    let root = pebble.issuing_root().await;
    let (status, _) = get(&gate, &[root], "/api/echo").await;
    assert_eq!(status, 200, "the renewed certificate is served and trusted");
    assert_eq!(
        gate.log_text().matches("acme: certificate issued").count(),
        2,
        "no renewal beyond what the windows asked for"
    );
    // The renewal order named the certificate it replaces (RFC 9773 §5); Pebble 2.4 accepts
    // the order without reflecting the field, so nbgate ordered again without it.
    assert!(
        gate.find_line(&["did not take the order's replaces field"])
            .is_some(),
        "{}",
        gate.log_text()
    );
}

#[tokio::test]
async fn while_the_ca_is_down_the_gate_keeps_serving_and_renews_once_it_is_back() {
    let mut pebble = Pebble::start(PebbleOptions {
        validity_secs: Some(20),
    })
    .await;
    let upstream = TestUpstream::start().await;
    let gate = acme_gate(&pebble, &upstream, false).start().await;
    gate.wait_for_log("acme: certificate issued", ISSUE_TIMEOUT)
        .await;
    let old_root = pebble.issuing_root().await;
    let old = served_serial(gate.https_addr(), DOMAIN, std::slice::from_ref(&old_root)).await;

    pebble.stop_ca();
    gate.wait_for_line(
        &["acme: renewal failed", "retry_in"],
        Duration::from_secs(40),
    )
    .await;
    // Still serving the current certificate.
    assert_eq!(
        served_serial(gate.https_addr(), DOMAIN, std::slice::from_ref(&old_root)).await,
        old
    );
    let (status, _) = get(&gate, &[old_root], "/api/echo").await;
    assert_eq!(status, 200);
    // It keeps retrying.
    common::poll_until(Duration::from_secs(20), "a second failed retry", || async {
        (gate.log_text().matches("acme: renewal failed").count() >= 2).then_some(())
    })
    .await;

    // The CA comes back (with a new root, and no memory of the account).
    pebble.start_ca().await;
    common::poll_until(
        Duration::from_secs(40),
        "issuance after the outage",
        || async {
            (gate.log_text().matches("acme: certificate issued").count() >= 2).then_some(())
        },
    )
    .await;
    let new_root = pebble.issuing_root().await;
    let new = served_serial(gate.https_addr(), DOMAIN, &[new_root]).await;
    assert_ne!(new, old);
}

#[tokio::test]
async fn files_mode_reloads_on_sighup_and_keeps_the_last_good_certificate() {
    let upstream = TestUpstream::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let (cert, key) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
    let first = certs::localhost();
    let second = certs::localhost();
    let write_pair = |cert_pem: &str, key_pem: &str| {
        // As a deployment tool would: complete files moved into place.
        for (path, text) in [(&key, key_pem), (&cert, cert_pem)] {
            let tmp = path.with_extension("tmp");
            std::fs::write(&tmp, text).expect("write");
            std::fs::rename(&tmp, path).expect("rename");
        }
    };
    write_pair(&first.cert_pem, &first.key_pem);
    let gate = NbgateBuilder::new()
        .upstream(&upstream.url())
        .set("tls.mode", "files")
        .set("tls.cert_file", cert.display().to_string())
        .set("tls.key_file", key.display().to_string())
        .start()
        .await;
    let roots: Vec<_> = [&first, &second]
        .iter()
        .flat_map(|p| certs::parse_pem_certs(p.cert_pem.as_bytes()))
        .collect();
    let old = served_serial(gate.https_addr(), "localhost", &roots).await;

    write_pair(&second.cert_pem, &second.key_pem);
    gate.signal(libc::SIGHUP);
    gate.wait_for_line(&["reloaded certificate", "sighup"], Duration::from_secs(10))
        .await;
    let new = served_serial(gate.https_addr(), "localhost", &roots).await;
    assert_ne!(new, old);
    assert!(gate.log_contains(&new), "the log names the new serial");

    write_pair("garbage", "more garbage");
    gate.signal(libc::SIGHUP);
    // The whole reload is refused, naming the file; the current certificate stays.
    gate.wait_for_line(
        &["configuration not reloaded", "tls.crt", "stays in force"],
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(
        served_serial(gate.https_addr(), "localhost", &roots).await,
        new
    );
    let (status, _) = get_localhost(&gate, &roots).await;
    assert_eq!(status, 200);
}

async fn get_localhost(
    gate: &Nbgate,
    roots: &[CertificateDer<'static>],
) -> (http::StatusCode, String) {
    let tls = tls_connect(gate.https_addr(), "localhost", roots, &[b"http/1.1"])
        .await
        .expect("handshake");
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .expect("HTTP/1.1 handshake");
    tokio::spawn(conn);
    request(&mut sender, gate, "/api/echo").await
}

#[tokio::test]
async fn a_profile_the_directory_does_not_offer_stops_the_start_with_a_clear_error() {
    let pebble = Pebble::start(PebbleOptions::default()).await;
    let upstream = TestUpstream::start().await;
    let failure = acme_gate(&pebble, &upstream, false)
        .set("tls.acme.profile", "shortlived")
        .start_expecting_failure()
        .await;
    assert!(
        failure.log.contains("tls.acme.profile = \"shortlived\"")
            && failure
                .log
                .contains("does not support the profiles extension"),
        "{}",
        failure.log
    );
    assert!(
        !failure.log.contains("acme: order placed"),
        "{}",
        failure.log
    );
}
