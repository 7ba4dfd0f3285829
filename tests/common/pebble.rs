//! Pebble, the ACME test server (Debian package `pebble`), with `pebble-challtestsrv` as its DNS
//! server so that every name (e.g. `nb.example.test`) resolves to 127.0.0.1.
//!
//! Each [`Pebble`] gets its own free loopback ports (directory, management, DNS, and the fixed
//! HTTP-01 / TLS-ALPN-01 validation ports nbgate must listen on), its own directory CA made by
//! rcgen at test time, and is killed on drop. It can be stopped and started again on the same
//! ports (a CA outage); a restarted Pebble forgets accounts and orders and has a new issuing root.

use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustls::pki_types::CertificateDer;

use super::process::{drain_lines, kill_tree, OutputLog};

/// How long Pebble and the DNS server may take to accept connections.
const READY_TIMEOUT: Duration = Duration::from_secs(20);

/// What a test sets on its Pebble.
#[derive(Default, Clone)]
pub struct PebbleOptions {
    /// `certificateValidityPeriod` in seconds (Pebble's default is about five years).
    pub validity_secs: Option<u64>,
}

pub struct Pebble {
    dir: tempfile::TempDir,
    options: PebbleOptions,
    pub listen_port: u16,
    pub mgmt_port: u16,
    pub dns_port: u16,
    pub dns_mgmt_port: u16,
    /// Pebble validates HTTP-01 on this port: nbgate's `http_listen` must use it.
    pub http_port: u16,
    /// Pebble validates TLS-ALPN-01 on this port: nbgate's `listen` must use it.
    pub tls_port: u16,
    challtestsrv: Option<Child>,
    pebble: Option<Child>,
    log: Arc<Mutex<OutputLog>>,
}

/// A loopback port that is free for TCP (and UDP when `udp`) for a server that must be told
/// its port before it starts.
///
/// Taken from below the kernel's ephemeral range: a port from `bind(0)` is ephemeral, and the
/// many outgoing connections of tests running in parallel can take it as their source port
/// before the server binds it ("Address already in use", seen once in CI's acme tests).
pub fn free_port(udp: bool) -> u16 {
    let low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    let (start, span) = (10_000u16, low.saturating_sub(10_000).max(1000));
    // Different tests (threads and processes) start at different places.
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos())
        ^ std::process::id().wrapping_mul(2_654_435_761);
    // A port is free only until its server binds it: tests running in parallel in this
    // process must never be handed the same one in between ("Address already in use" for
    // an ACME test's nbgate once, in a targeted run).
    static HANDED_OUT: Mutex<Vec<u16>> = Mutex::new(Vec::new());
    let mut handed_out = HANDED_OUT.lock().unwrap_or_else(|e| e.into_inner());
    for i in 0..u32::from(span) {
        let port = start + ((seed.wrapping_add(i.wrapping_mul(7919)) % u32::from(span)) as u16);
        if handed_out.contains(&port) {
            continue;
        }
        let Ok(_tcp) = TcpListener::bind(("127.0.0.1", port)) else {
            continue;
        };
        if !udp || UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            handed_out.push(port);
            return port;
        }
    }
    panic!("no free port between {start} and {}", start + span)
}

impl Pebble {
    pub async fn start(options: PebbleOptions) -> Pebble {
        let dir = tempfile::Builder::new()
            .prefix("nbgate-pebble-")
            .tempdir()
            .expect("tempdir");
        // The directory's own TLS: a CA and a 127.0.0.1/localhost certificate it signs.
        let ca_key = rcgen::KeyPair::generate().expect("CA key");
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "nbgate test directory CA");
        let ca = ca_params.self_signed(&ca_key).expect("CA cert");
        let leaf_key = rcgen::KeyPair::generate().expect("leaf key");
        let leaf_params =
            rcgen::CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
                .expect("params");
        let leaf = leaf_params
            .signed_by(&leaf_key, &ca, &ca_key)
            .expect("leaf cert");
        std::fs::write(dir.path().join("directory-ca.pem"), ca.pem()).expect("write CA");
        std::fs::write(dir.path().join("cert.pem"), leaf.pem()).expect("write cert");
        std::fs::write(dir.path().join("key.pem"), leaf_key.serialize_pem()).expect("write key");

        let mut pebble = Pebble {
            dir,
            options,
            listen_port: free_port(false),
            mgmt_port: free_port(false),
            dns_port: free_port(true),
            dns_mgmt_port: free_port(false),
            http_port: free_port(false),
            tls_port: free_port(false),
            challtestsrv: None,
            pebble: None,
            log: Arc::new(Mutex::new(OutputLog::default())),
        };
        pebble.start_dns().await;
        pebble.start_ca().await;
        pebble
    }

    async fn start_dns(&mut self) {
        let mut child = Command::new("pebble-challtestsrv")
            .args([
                "-management",
                &format!("127.0.0.1:{}", self.dns_mgmt_port),
                "-dns01",
                &format!("127.0.0.1:{}", self.dns_port),
                "-http01",
                "",
                "-https01",
                "",
                "-tlsalpn01",
                "",
                "-defaultIPv4",
                "127.0.0.1",
                "-defaultIPv6",
                "",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn pebble-challtestsrv (Debian package pebble)");
        drain_lines(child.stdout.take().expect("stdout"), self.log.clone());
        drain_lines(child.stderr.take().expect("stderr"), self.log.clone());
        self.challtestsrv = Some(child);
        wait_for_port(self.dns_mgmt_port, "pebble-challtestsrv management").await;
    }

    /// Starts (or restarts) the CA itself on the same ports.
    pub async fn start_ca(&mut self) {
        let mut config = serde_json::json!({
            "listenAddress": format!("127.0.0.1:{}", self.listen_port),
            "managementListenAddress": format!("127.0.0.1:{}", self.mgmt_port),
            "certificate": self.dir.path().join("cert.pem"),
            "privateKey": self.dir.path().join("key.pem"),
            "httpPort": self.http_port,
            "tlsPort": self.tls_port,
            "ocspResponderURL": "",
            "externalAccountBindingRequired": false,
        });
        if let Some(v) = self.options.validity_secs {
            config["certificateValidityPeriod"] = v.into();
        }
        let path = self.dir.path().join("pebble.json");
        std::fs::write(&path, serde_json::json!({ "pebble": config }).to_string())
            .expect("write pebble config");
        let mut child = Command::new("pebble")
            .arg("-config")
            .arg(&path)
            .arg("-dnsserver")
            .arg(format!("127.0.0.1:{}", self.dns_port))
            // No random validation delays, no rejected nonces, and no reuse of earlier
            // authorizations: every order really validates its challenges.
            .env("PEBBLE_VA_NOSLEEP", "1")
            .env("PEBBLE_WFE_NONCEREJECT", "0")
            .env("PEBBLE_AUTHZREUSE", "0")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn pebble (Debian package pebble)");
        drain_lines(child.stdout.take().expect("stdout"), self.log.clone());
        drain_lines(child.stderr.take().expect("stderr"), self.log.clone());
        self.pebble = Some(child);
        wait_for_port(self.listen_port, "pebble directory").await;
        wait_for_port(self.mgmt_port, "pebble management").await;
    }

    /// Kills the CA (the DNS server keeps running): a CA outage.
    pub fn stop_ca(&mut self) {
        if let Some(mut child) = self.pebble.take() {
            kill_tree(&mut child);
        }
    }

    /// `https://127.0.0.1:PORT/dir`, for `tls.acme.directory`.
    pub fn directory_url(&self) -> String {
        format!("https://127.0.0.1:{}/dir", self.listen_port)
    }

    /// The directory's TLS certificate and key (PEM files; 127.0.0.1 and localhost).
    pub fn directory_tls_files(&self) -> (PathBuf, PathBuf) {
        (
            self.dir.path().join("cert.pem"),
            self.dir.path().join("key.pem"),
        )
    }

    /// The PEM CA that signed the directory's TLS certificate, for `tls.acme.ca_bundle`.
    pub fn directory_ca_path(&self) -> PathBuf {
        self.dir.path().join("directory-ca.pem")
    }

    /// An HTTPS client that trusts only the directory's CA (directory and management API).
    pub fn directory_client(&self) -> reqwest::Client {
        let ca = reqwest::Certificate::from_pem(
            &std::fs::read(self.directory_ca_path()).expect("read directory CA"),
        )
        .expect("directory CA PEM");
        reqwest::Client::builder()
            .use_rustls_tls()
            .tls_built_in_root_certs(false)
            .add_root_certificate(ca)
            .timeout(Duration::from_secs(10))
            .build()
            .expect("client")
    }

    /// The current issuing root (it changes on every CA start), from the management API.
    pub async fn issuing_root(&self) -> CertificateDer<'static> {
        let pem = self
            .directory_client()
            .get(format!("https://127.0.0.1:{}/roots/0", self.mgmt_port))
            .send()
            .await
            .expect("GET /roots/0")
            .error_for_status()
            .expect("/roots/0 status")
            .bytes()
            .await
            .expect("/roots/0 body");
        super::certs::parse_pem_certs(&pem)
            .into_iter()
            .next()
            .expect("a root certificate")
    }

    /// Every line Pebble and the DNS server printed so far.
    pub fn log_text(&self) -> String {
        self.log.lock().expect("log lock").lines.join("\n")
    }

    /// How many printed lines contain `needle`.
    pub fn count_lines(&self, needle: &str) -> usize {
        self.log
            .lock()
            .expect("log lock")
            .lines
            .iter()
            .filter(|l| l.contains(needle))
            .count()
    }
}

impl Drop for Pebble {
    fn drop(&mut self) {
        self.stop_ca();
        if let Some(mut child) = self.challtestsrv.take() {
            kill_tree(&mut child);
        }
    }
}

async fn wait_for_port(port: u16, what: &str) {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    super::poll_until(READY_TIMEOUT, what, || async move {
        tokio::net::TcpStream::connect(addr).await.ok().map(|_| ())
    })
    .await;
}
