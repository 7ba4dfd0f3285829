//! TLS termination: the self-signed certificate (persisted, private key 0600, names, logged
//! fingerprint), `tls.mode = "files"` and its refusals, plain HTTP redirects, HTTP/2 by ALPN,
//! and the key exchange: the hybrid post-quantum X25519MLKEM768 for clients that offer it,
//! X25519 or P-256 for those that do not, ECDHE AEAD suites in the server's order for TLS 1.2.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use common::certs::{self, CertPair};
use common::nbgate::log_field;
use common::upstream::echoed_header;
use common::{within, Nbgate, NbgateBuilder, TestUpstream};
use rustls::crypto::aws_lc_rs::kx_group;
use rustls::crypto::{CryptoProvider, SupportedKxGroup};
use rustls::version::{TLS12, TLS13};
use rustls::{CipherSuite, NamedGroup, ProtocolVersion, SupportedProtocolVersion};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use x509_parser::extensions::GeneralName;

const T: Duration = Duration::from_secs(30);

/// DNS names and IP addresses in the certificate's subjectAltName.
fn subject_alt_names(pem: &[u8]) -> Vec<String> {
    let der = certs::parse_pem_certs(pem).remove(0);
    let (_, cert) = x509_parser::parse_x509_certificate(&der).expect("parse certificate");
    let san = cert
        .subject_alternative_name()
        .expect("valid SAN extension")
        .expect("a SAN extension");
    san.value
        .general_names
        .iter()
        .filter_map(|name| match name {
            GeneralName::DNSName(dns) => Some(dns.to_string()),
            GeneralName::IPAddress(bytes) => match bytes.len() {
                4 => Some(std::net::Ipv4Addr::from(<[u8; 4]>::try_from(*bytes).ok()?).to_string()),
                16 => {
                    Some(std::net::Ipv6Addr::from(<[u8; 16]>::try_from(*bytes).ok()?).to_string())
                }
                _ => None,
            },
            _ => None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn self_signed_certificate_is_reused_and_its_key_is_private() {
    let state = tempfile::tempdir().expect("tempdir");
    let state_dir = state.path().join("state");
    let state_str = state_dir.display().to_string();
    let cert_path = state_dir.join("tls/self-signed.crt");
    let key_path = state_dir.join("tls/self-signed.key");

    let first = Nbgate::builder()
        .set("server.state_dir", state_str.as_str())
        .start()
        .await;
    let cert1 = std::fs::read(&cert_path).expect("certificate written");
    let key1 = std::fs::read(&key_path).expect("key written");
    assert_eq!(common::file_mode(&key_path), 0o600, "key file mode");
    assert_eq!(
        common::file_mode(&state_dir.join("tls")),
        0o700,
        "tls dir mode"
    );
    // The client trusting exactly this file gets through: it is what nbgate serves.
    let response = within(T, "GET over TLS", first.client().get(first.url("/")).send())
        .await
        .expect("TLS with the persisted certificate");
    assert_eq!(response.status(), 502, "no upstream is running");
    drop(first);

    let second = Nbgate::builder()
        .set("server.state_dir", state_str.as_str())
        .start()
        .await;
    assert_eq!(std::fs::read(&cert_path).expect("certificate"), cert1);
    assert_eq!(std::fs::read(&key_path).expect("key"), key1);
    assert_eq!(second.cert_pem(), &cert1[..]);
    let response = within(
        T,
        "GET over TLS",
        second.client().get(second.url("/")).send(),
    )
    .await
    .expect("TLS with the reused certificate");
    assert_eq!(response.status(), 502);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn self_signed_certificate_names_and_logged_fingerprint() {
    let gate = Nbgate::builder()
        .set("server.server_names", vec!["nb.example.test"])
        .start()
        .await;
    let names = subject_alt_names(gate.cert_pem());
    let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .expect("hostname")
        .trim()
        .to_string();
    for want in [
        "localhost",
        "127.0.0.1",
        "::1",
        "nb.example.test",
        &hostname,
    ] {
        assert!(
            names.iter().any(|n| n == want),
            "{want} missing from SANs {names:?}"
        );
    }

    let der = certs::parse_pem_certs(gate.cert_pem()).remove(0);
    let want = certs::sha256_fingerprint(&der);
    let line = gate
        .wait_for_log("sha256_fingerprint=", Duration::from_secs(5))
        .await;
    assert_eq!(
        log_field(&line, "sha256_fingerprint").as_deref(),
        Some(want.as_str()),
        "{line}"
    );
}

fn files_builder(dir: &Path, pair: &CertPair) -> NbgateBuilder {
    let cert = dir.join("cert.pem");
    let key = dir.join("key.pem");
    std::fs::write(&cert, &pair.cert_pem).expect("write cert");
    std::fs::write(&key, &pair.key_pem).expect("write key");
    Nbgate::builder()
        .set("tls.mode", "files")
        .set("tls.cert_file", cert.display().to_string())
        .set("tls.key_file", key.display().to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_mode_serves_the_given_certificate_with_hsts() {
    let upstream = TestUpstream::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let pair = certs::localhost();
    let gate = files_builder(dir.path(), &pair)
        .upstream(&upstream.url())
        .start()
        .await;
    assert_eq!(gate.cert_pem(), pair.cert_pem.as_bytes());
    let response = within(T, "GET", gate.client().get(gate.url("/hsts")).send())
        .await
        .expect("TLS trusting only the configured certificate");
    assert_eq!(response.status(), 200);
    let hsts = response
        .headers()
        .get("strict-transport-security")
        .expect("HSTS in files mode")
        .to_str()
        .expect("ascii");
    assert!(hsts.contains("max-age="), "{hsts}");
    assert!(
        !gate.state_dir().join("tls/self-signed.crt").exists(),
        "files mode must not generate a self-signed certificate"
    );
}

/// Starts `builder` expecting a refusal whose output names `path`.
async fn assert_refused_naming(builder: NbgateBuilder, path: &Path, problem: &str) {
    let failure = builder.start_expecting_failure().await;
    let status = failure
        .status
        .unwrap_or_else(|| panic!("{problem}: nbgate hung instead of exiting: {}", failure.log));
    assert!(!status.success(), "{problem}: exit status {status}");
    assert!(
        failure.log.contains(&path.display().to_string()),
        "{problem}: the error does not name {}:\n{}",
        path.display(),
        failure.log
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_mode_refuses_a_missing_certificate_or_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pair = certs::localhost();
    let missing = dir.path().join("nope.pem");
    let builder =
        files_builder(dir.path(), &pair).set("tls.cert_file", missing.display().to_string());
    assert_refused_naming(builder, &missing, "missing cert file").await;
    let builder =
        files_builder(dir.path(), &pair).set("tls.key_file", missing.display().to_string());
    assert_refused_naming(builder, &missing, "missing key file").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_mode_refuses_unreadable_or_garbage_files() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pair = certs::localhost();
    // Root reads any file regardless of its mode; a directory is unreadable as a file.
    let a_dir = dir.path().join("a-directory.pem");
    std::fs::create_dir(&a_dir).expect("mkdir");
    let garbage = dir.path().join("garbage.pem");
    std::fs::write(&garbage, "this is not PEM\n\x00\x01").expect("write garbage");
    let key_as_cert = dir.path().join("key-as-cert.pem");
    std::fs::write(&key_as_cert, &pair.key_pem).expect("write");
    let cert_as_key = dir.path().join("cert-as-key.pem");
    std::fs::write(&cert_as_key, &pair.cert_pem).expect("write");

    for (key, path, problem) in [
        ("tls.cert_file", &a_dir, "cert file is a directory"),
        ("tls.key_file", &a_dir, "key file is a directory"),
        ("tls.cert_file", &garbage, "garbage cert file"),
        ("tls.key_file", &garbage, "garbage key file"),
        (
            "tls.cert_file",
            &key_as_cert,
            "cert file holds no certificate",
        ),
        ("tls.key_file", &cert_as_key, "key file holds no key"),
    ] {
        let builder = files_builder(dir.path(), &pair).set(key, path.display().to_string());
        assert_refused_naming(builder, path, problem).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_mode_refuses_a_key_that_does_not_match_the_certificate() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pair = certs::localhost();
    let other = certs::localhost();
    let other_key = dir.path().join("other-key.pem");
    std::fs::write(&other_key, &other.key_pem).expect("write");
    let builder =
        files_builder(dir.path(), &pair).set("tls.key_file", other_key.display().to_string());
    let failure = builder.start_expecting_failure().await;
    let status = failure.status.expect("nbgate exits");
    assert!(!status.success());
    let cert = dir.path().join("cert.pem").display().to_string();
    let key = other_key.display().to_string();
    assert!(
        failure.log.contains(&cert) || failure.log.contains(&key),
        "the mismatch error names neither file:\n{}",
        failure.log
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_mode_refuses_an_expired_certificate() {
    let dir = tempfile::tempdir().expect("tempdir");
    let expired = certs::self_signed(&["localhost"], (2019, 1, 1), (2020, 1, 1));
    let builder = files_builder(dir.path(), &expired);
    let cert = dir.path().join("cert.pem");
    assert_refused_naming(builder, &cert, "expired certificate").await;
}

/// Sends a plain-HTTP request to `addr` and returns the response head.
async fn plain_http(addr: std::net::SocketAddr, request: &str) -> String {
    let mut tcp = within(T, "connect", tokio::net::TcpStream::connect(addr))
        .await
        .expect("connect");
    tcp.write_all(request.as_bytes()).await.expect("write");
    let mut response = Vec::new();
    within(T, "plain HTTP response", async {
        let mut buf = [0u8; 4096];
        loop {
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => response.extend_from_slice(&buf[..n]),
            }
            if response.windows(4).any(|w| w == b"\r\n\r\n") {
                break;
            }
        }
    })
    .await;
    String::from_utf8_lossy(&response).into_owned()
}

fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().find_map(|line| {
        let (k, v) = line.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_http_on_the_tls_port_is_redirected_to_https() {
    let gate = Nbgate::builder().start().await;
    let port = gate.https_addr().port();
    let head = plain_http(
        gate.https_addr(),
        &format!(
            "GET /lab/tree?x=1 HTTP/1.1\r\nHost: localhost:{port}\r\nConnection: close\r\n\r\n"
        ),
    )
    .await;
    assert!(head.starts_with("HTTP/1.1 308"), "{head}");
    assert_eq!(
        header(&head, "location"),
        Some(format!("https://localhost:{port}/lab/tree?x=1").as_str()),
        "{head}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_listener_redirects_to_the_https_port() {
    let gate = Nbgate::builder()
        .set("server.http_listen", vec!["127.0.0.1:0"])
        .start()
        .await;
    let http_port = gate.http_addr().port();
    let https_port = gate.https_addr().port();
    assert_ne!(http_port, https_port);
    let head = plain_http(
        gate.http_addr(),
        &format!("GET /tree/a%20b?y=2 HTTP/1.1\r\nHost: localhost:{http_port}\r\nConnection: close\r\n\r\n"),
    )
    .await;
    assert!(head.starts_with("HTTP/1.1 308"), "{head}");
    assert_eq!(
        header(&head, "location"),
        Some(format!("https://localhost:{https_port}/tree/a%20b?y=2").as_str()),
        "{head}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_is_negotiated_by_alpn_and_forwarded_as_http1() {
    let upstream = TestUpstream::start().await;
    let gate = Nbgate::builder().upstream(&upstream.url()).start().await;
    let response = within(
        T,
        "GET over h2",
        gate.client().get(gate.url("/h2?q=1")).send(),
    )
    .await
    .expect("GET over h2");
    assert_eq!(response.version(), reqwest::Version::HTTP_2);
    assert_eq!(response.status(), 200);
    let seen: serde_json::Value = response.json().await.expect("echo JSON");
    assert_eq!(seen["uri"], "/h2?q=1");
    assert_eq!(seen["version"], "HTTP/1.1");
    assert_eq!(
        echoed_header(&seen, "host"),
        Some(upstream.addr().to_string())
    );

    let http1 = within(
        T,
        "GET over http/1.1",
        gate.client_http1().get(gate.url("/h1")).send(),
    )
    .await
    .expect("GET over http/1.1");
    assert_eq!(http1.version(), reqwest::Version::HTTP_11);
    assert_eq!(http1.status(), 200);
}

/// What a handshake with nbgate settled on, seen from the client.
#[derive(Debug)]
struct Negotiated {
    group: NamedGroup,
    suite: CipherSuite,
    version: ProtocolVersion,
}

/// A handshake with nbgate by a rustls client on `provider` (its groups and suites, in its
/// order) speaking only `versions`, then one HTTP/1.1 request over it, so the connection is
/// shown to carry traffic, not only to finish the handshake.
async fn handshake_with(
    gate: &Nbgate,
    provider: CryptoProvider,
    versions: &[&'static SupportedProtocolVersion],
) -> Negotiated {
    let mut roots = rustls::RootCertStore::empty();
    for cert in certs::parse_pem_certs(gate.cert_pem()) {
        roots.add(cert).expect("add nbgate cert to root store");
    }
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(provider))
        .with_protocol_versions(versions)
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let tcp = gate.tcp_connect().await;
    let name = rustls::pki_types::ServerName::try_from("localhost").expect("server name");
    let mut tls = within(
        T,
        "TLS handshake",
        tokio_rustls::TlsConnector::from(Arc::new(config)).connect(name, tcp),
    )
    .await
    .expect("TLS handshake with nbgate");
    let (_, conn) = tls.get_ref();
    let negotiated = Negotiated {
        group: conn
            .negotiated_key_exchange_group()
            .expect("a key exchange group")
            .name(),
        suite: conn.negotiated_cipher_suite().expect("a suite").suite(),
        version: conn.protocol_version().expect("a version"),
    };
    let request =
        gate.with_auth_lines("GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    tls.write_all(request.as_bytes())
        .await
        .expect("write request");
    let mut response = Vec::new();
    within(T, "response until close", tls.read_to_end(&mut response))
        .await
        .ok();
    assert!(
        response.starts_with(b"HTTP/1.1 "),
        "{negotiated:?}: {}",
        String::from_utf8_lossy(&response)
    );
    negotiated
}

/// rustls' aws-lc-rs provider offering exactly `groups`.
fn offering(groups: &[&'static dyn SupportedKxGroup]) -> CryptoProvider {
    CryptoProvider {
        kx_groups: groups.to_vec(),
        ..rustls::crypto::aws_lc_rs::default_provider()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_offering_the_hybrid_post_quantum_group_negotiates_it() {
    let gate = Nbgate::builder().start().await;
    // As Chrome and Firefox offer: X25519MLKEM768 first, then the classical groups.
    let got = handshake_with(
        &gate,
        offering(&[
            kx_group::X25519MLKEM768,
            kx_group::X25519,
            kx_group::SECP256R1,
        ]),
        &[&TLS13, &TLS12],
    )
    .await;
    assert_eq!(got.group, NamedGroup::X25519MLKEM768, "{got:?}");
    assert_eq!(got.version, ProtocolVersion::TLSv1_3);
    // nbgate records the group of each handshake at debug level.
    gate.wait_for_line(&["tls key exchange", "group=X25519MLKEM768"], T)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_without_post_quantum_groups_get_x25519_or_p256() {
    let gate = Nbgate::builder().start().await;
    for (group, name) in [
        (kx_group::X25519, NamedGroup::X25519),
        (kx_group::SECP256R1, NamedGroup::secp256r1),
    ] {
        let got = handshake_with(&gate, offering(&[group]), &[&TLS13, &TLS12]).await;
        assert_eq!(got.group, name, "{got:?}");
        assert_eq!(got.version, ProtocolVersion::TLSv1_3);
    }
    // A ring-based client (rustls' other provider, which has no ML-KEM) as well.
    let got = handshake_with(&gate, rustls::crypto::ring::default_provider(), &[&TLS13]).await;
    assert_eq!(got.group, NamedGroup::X25519, "{got:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls12_clients_get_ecdhe_with_the_servers_first_aead_suite() {
    let gate = Nbgate::builder().start().await;
    // The client lists its suites weakest-first: the server's order decides all the same.
    let mut provider = rustls::crypto::aws_lc_rs::default_provider();
    provider.cipher_suites.reverse();
    let got = handshake_with(&gate, provider, &[&TLS12]).await;
    assert_eq!(got.version, ProtocolVersion::TLSv1_2);
    // The hybrid group is TLS 1.3 only; TLS 1.2 gets the client's first classical group.
    assert_eq!(got.group, NamedGroup::X25519, "{got:?}");
    // The self-signed certificate has an ECDSA P-256 key.
    assert_eq!(
        got.suite,
        CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
        "{got:?}"
    );
    let got = handshake_with(&gate, offering(&[kx_group::SECP256R1]), &[&TLS12]).await;
    assert_eq!(got.group, NamedGroup::secp256r1, "{got:?}");
}
