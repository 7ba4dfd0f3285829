//! The nbgate binary under test: a config builder, start with readiness read from the log, and
//! the clients tests use to reach it.
//!
//! Every request a test makes goes through [`Nbgate::client`], [`Nbgate::ws_connect`] or the
//! raw helpers here, which all take their credentials from [`Nbgate::auth_headers`]: when login
//! lands, that is the one place to add a session cookie or API token.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{HeaderMap, HeaderName, HeaderValue};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::WebSocketStream;

use super::jupyter::Jupyter;
use super::process::{drain_lines, kill_tree, proc_status_kib, send_signal, OutputLog};

/// How long nbgate may take to log one `listening` line per configured listener.
const READY_TIMEOUT: Duration = Duration::from_secs(20);

/// How much longer `nbgate run` may take: it starts Jupyter and waits for it.
const RUN_READY_TIMEOUT: Duration = Duration::from_secs(60);

/// The `RUST_LOG` nbgate runs with.
const RUST_LOG: &str = "info,nbgate=debug";

/// A WebSocket through nbgate.
pub type WsStream = WebSocketStream<TlsStream<TcpStream>>;

/// The nbgate binary cargo built for this test run.
/// The user every test nbgate knows, its password and API token.
pub const TEST_USER: &str = "tester";
pub const TEST_PASSWORD: &str = "correct horse battery";
pub const TEST_API_TOKEN: &str = "nbgate-test-api-token-5f0c1e2d";

/// PBKDF2 hashes of the test password and token, made once per test binary
/// (with the minimum accepted iteration count, to keep tests quick).
pub fn test_hashes() -> &'static (String, String) {
    static HASHES: std::sync::OnceLock<(String, String)> = std::sync::OnceLock::new();
    HASHES.get_or_init(|| {
        use nbgate::auth::password::{hash_password_with_iterations, MIN_ITERATIONS};
        (
            hash_password_with_iterations(TEST_PASSWORD, MIN_ITERATIONS).expect("hash"),
            hash_password_with_iterations(TEST_API_TOKEN, MIN_ITERATIONS).expect("hash"),
        )
    })
}

pub fn nbgate_bin() -> &'static str {
    env!("CARGO_BIN_EXE_nbgate")
}

/// A config file in a fresh temp dir, with every key of the contract set explicitly so tests
/// override one thing at a time.
pub struct NbgateBuilder {
    dir: tempfile::TempDir,
    config: toml::Table,
    env: Vec<(String, String)>,
    /// Extra `nbgate serve` arguments after `--config FILE`.
    args: Vec<String>,
    /// The upstream token nbgate is configured with (what `Authorization: token …` must carry).
    token: String,
    /// `nbgate run [OPTIONS] -- COMMAND…` instead of `nbgate serve`.
    run_command: Option<Vec<String>>,
    /// A command nbgate runs under, e.g. `unshare --pid --fork` to make it PID 1.
    wrapper: Vec<String>,
    /// A socket the process gets as fd 3, as systemd passes a listener (see `listen_fd`).
    listen_fd: Option<std::os::fd::OwnedFd>,
}

impl Default for NbgateBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl NbgateBuilder {
    pub fn new() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("nbgate-test-")
            .tempdir()
            .expect("tempdir");
        let token = format!("upstream-token-{}", super::random_hex(16));
        let token_file = dir.path().join("token");
        std::fs::write(&token_file, &token).expect("write token file");
        let state_dir = dir.path().join("state");
        let config: toml::Table = toml::from_str(&format!(
            r#"
[server]
listen = ["127.0.0.1:0"]
http_listen = []
server_names = []
state_dir = {state_dir:?}
max_connections = 1024
header_read_timeout = "10s"
tls_handshake_timeout = "10s"
max_header_bytes = "32KiB"
max_headers = 100
shutdown_grace = "30s"

[tls]
mode = "self-signed"

[upstream]
url = "http://127.0.0.1:1"
token_file = {token_file:?}
websocket_idle_timeout = "1h"

[log]
format = "text"
"#,
            state_dir = state_dir.display().to_string(),
            token_file = token_file.display().to_string(),
        ))
        .expect("default test config is TOML");
        let mut config = config;
        let mut user = toml::Table::new();
        user.insert("name".into(), TEST_USER.into());
        user.insert("password_hash".into(), test_hashes().0.clone().into());
        user.insert(
            "tokens".into(),
            toml::Value::Array(vec![test_hashes().1.clone().into()]),
        );
        config.insert(
            "users".into(),
            toml::Value::Array(vec![toml::Value::Table(user)]),
        );
        NbgateBuilder {
            dir,
            config,
            env: Vec::new(),
            args: Vec::new(),
            token,
            run_command: None,
            wrapper: Vec::new(),
            listen_fd: None,
        }
    }

    /// Starts `nbgate run [OPTIONS] -- COMMAND…` instead of `serve`; readiness then also waits
    /// for the `jupyter is ready` line. The builder's upstream settings are removed (`run` makes
    /// its own).
    /// Runs nbgate under `wrapper` (`wrapper… nbgate …`); the handle's pid is the wrapper's.
    pub fn wrapped(mut self, wrapper: &[&str]) -> Self {
        self.wrapper = wrapper.iter().map(|s| s.to_string()).collect();
        self
    }

    pub fn run_jupyter(mut self, command: &[&str]) -> Self {
        self.run_command = Some(command.iter().map(|s| s.to_string()).collect());
        self.remove("upstream.url").remove("upstream.token_file")
    }

    /// Forward to `url` (`http://HOST:PORT` or `unix:/path`), keeping the builder's token.
    pub fn upstream(self, url: &str) -> Self {
        self.set("upstream.url", url)
    }

    /// Forward to `jupyter` with its token.
    pub fn jupyter(mut self, jupyter: &Jupyter) -> Self {
        self.token = jupyter.token().to_string();
        self.set("upstream.url", jupyter.upstream_url().as_str())
            .set(
                "upstream.token_file",
                jupyter.token_file().display().to_string(),
            )
    }

    /// Sets a dotted key, e.g. `set("server.header_read_timeout", "2s")`, creating tables.
    pub fn set(mut self, key: &str, value: impl Into<toml::Value>) -> Self {
        let (table, last) = self.table_for(key);
        table.insert(last.to_string(), value.into());
        self
    }

    /// Removes a dotted key (absent keys are fine).
    pub fn remove(mut self, key: &str) -> Self {
        let (table, last) = self.table_for(key);
        table.remove(last);
        self
    }

    /// Gives the started process `socket` as fd 3 (inheritable), as systemd's socket activation
    /// does; the test sets `LISTEN_FDS` and makes `LISTEN_PID` the exec'd nbgate's pid (e.g.
    /// with the wrapper `sh -c 'LISTEN_PID=$$ exec "$0" "$@"'`).
    pub fn listen_fd(mut self, socket: impl Into<std::os::fd::OwnedFd>) -> Self {
        self.listen_fd = Some(socket.into());
        self
    }

    /// An environment variable for the nbgate process.
    pub fn env(mut self, name: &str, value: &str) -> Self {
        self.env.push((name.to_string(), value.to_string()));
        self
    }

    /// An extra `nbgate serve` argument (after `--config FILE`), e.g. `--upstream`.
    pub fn arg(mut self, arg: &str) -> Self {
        self.args.push(arg.to_string());
        self
    }

    /// The temp dir holding the config, token and (by default) the state dir.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn token(&self) -> &str {
        &self.token
    }

    fn table_for<'a>(&mut self, key: &'a str) -> (&mut toml::Table, &'a str) {
        let mut parts: Vec<&str> = key.split('.').collect();
        let last = parts.pop().expect("non-empty key");
        let mut table = &mut self.config;
        for part in parts {
            table = table
                .entry(part.to_string())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()))
                .as_table_mut()
                .unwrap_or_else(|| panic!("config key {part} in {key} is not a table"));
        }
        (table, last)
    }

    fn get_str(&self, key: &str) -> Option<String> {
        let mut value: Option<&toml::Value> = None;
        let mut table = Some(&self.config);
        for part in key.split('.') {
            value = table?.get(part);
            table = value.and_then(toml::Value::as_table);
        }
        value.and_then(toml::Value::as_str).map(str::to_string)
    }

    fn listener_count(&self, key: &str) -> usize {
        let (section, name) = key.split_once('.').expect("dotted key");
        self.config
            .get(section)
            .and_then(|s| s.get(name))
            .and_then(toml::Value::as_array)
            .map_or(0, Vec::len)
    }

    /// Writes `config.toml` into the temp dir and returns its path.
    pub fn write_config(&self) -> PathBuf {
        let path = self.dir.path().join("config.toml");
        std::fs::write(
            &path,
            toml::to_string(&self.config).expect("serialize config"),
        )
        .expect("write config");
        path
    }

    /// Runs `nbgate ARGS` to completion (20 s limit), with the builder's environment.
    pub async fn run(&self, args: &[&str]) -> Finished {
        let mut cmd = Command::new(nbgate_bin());
        cmd.args(args).env("RUST_LOG", RUST_LOG);
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        run_to_exit(cmd, Duration::from_secs(20)).await
    }

    /// `nbgate check-config --config <written config>`.
    pub async fn check_config(&self) -> Finished {
        let path = self.write_config();
        self.run(&[
            "check-config",
            "--config",
            path.to_str().expect("utf-8 path"),
        ])
        .await
    }

    /// Starts `nbgate serve` and waits until it logs one `listening` line per listener.
    pub async fn start(self) -> Nbgate {
        match self.try_start().await {
            Ok(gate) => gate,
            Err(failure) => panic!(
                "nbgate did not become ready: {}\n----- nbgate output -----\n{}",
                failure.reason, failure.log
            ),
        }
    }

    /// Starts `nbgate serve` expecting it to refuse: it must exit (non-ready) within 20 s.
    pub async fn start_expecting_failure(self) -> StartFailure {
        match self.try_start().await {
            Ok(gate) => panic!(
                "nbgate started although it should have refused the config; log:\n{}",
                gate.log_text()
            ),
            Err(failure) => failure,
        }
    }

    pub async fn try_start(self) -> Result<Nbgate, StartFailure> {
        let config_path = self.write_config();
        let want_https = self.listener_count("server.listen");
        let want_http = self.listener_count("server.http_listen");
        let mut cmd = match self.wrapper.split_first() {
            Some((program, args)) => {
                let mut cmd = Command::new(program);
                cmd.args(args).arg(nbgate_bin());
                cmd
            }
            None => Command::new(nbgate_bin()),
        };
        cmd.arg(if self.run_command.is_some() {
            "run"
        } else {
            "serve"
        })
        .arg("--config")
        .arg(&config_path)
        .args(&self.args);
        if let Some(command) = &self.run_command {
            cmd.arg("--").args(command);
        }
        cmd.env("RUST_LOG", RUST_LOG)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        if let Some(socket) = &self.listen_fd {
            use std::os::fd::AsRawFd;
            use std::os::unix::process::CommandExt;
            let fd = socket.as_raw_fd();
            // SAFETY: between fork and exec this makes only async-signal-safe calls (dup2,
            // fcntl) on an fd the builder keeps open until after the spawn.
            unsafe {
                cmd.pre_exec(move || {
                    if libc::dup2(fd, 3) < 0 || libc::fcntl(3, libc::F_SETFD, 0) < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        let mut child = cmd.spawn().expect("spawn nbgate");
        let log = Arc::new(Mutex::new(OutputLog::default()));
        drain_lines(child.stdout.take().expect("stdout"), log.clone());
        drain_lines(child.stderr.take().expect("stderr"), log.clone());

        let deadline = tokio::time::Instant::now() + READY_TIMEOUT;
        let deadline = if self.run_command.is_some() {
            deadline + RUN_READY_TIMEOUT
        } else {
            deadline
        };
        let (https, http) = loop {
            let (https, http) = listening_addrs(&log);
            let jupyter_ready = self.run_command.is_none()
                || log
                    .lock()
                    .expect("log lock")
                    .lines
                    .iter()
                    .any(|l| l.contains("jupyter is ready"));
            if https.len() >= want_https && http.len() >= want_http && jupyter_ready {
                break (https, http);
            }
            if let Ok(Some(status)) = child.try_wait() {
                // Let the drain threads catch the last lines.
                let _ = tokio::time::timeout(Duration::from_secs(2), async {
                    while log.lock().expect("log lock").closed < 2 {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                })
                .await;
                return Err(StartFailure {
                    reason: format!("exited with {status}"),
                    status: Some(status),
                    log: log.lock().expect("log lock").lines.join("\n"),
                });
            }
            if tokio::time::Instant::now() >= deadline {
                kill_tree(&mut child);
                return Err(StartFailure {
                    reason: format!(
                        "no `listening` line for all {want_https} https + {want_http} http \
                         listeners within {READY_TIMEOUT:?} (saw https={https:?} http={http:?})"
                    ),
                    status: None,
                    log: log.lock().expect("log lock").lines.join("\n"),
                });
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        };

        // `serve --state-dir DIR` overrides the config file.
        let state_dir = self
            .args
            .iter()
            .position(|a| a == "--state-dir")
            .and_then(|i| self.args.get(i + 1).cloned())
            .or_else(|| self.get_str("server.state_dir"))
            .map(PathBuf::from)
            .expect("server.state_dir in config");
        let cert_path = match self.get_str("tls.mode").as_deref() {
            Some("files") => Some(PathBuf::from(
                self.get_str("tls.cert_file").expect("tls.cert_file"),
            )),
            // ACME: clients trust the CA's root (see `pebble`), not a file nbgate wrote.
            Some("acme") => None,
            _ => Some(state_dir.join("tls/self-signed.crt")),
        };
        let cert_pem = cert_path.map_or_else(Vec::new, |cert_path| {
            std::fs::read(&cert_path).unwrap_or_else(|e| {
                panic!(
                    "nbgate is ready but its certificate {} is unreadable: {e}",
                    cert_path.display()
                )
            })
        });
        Ok(Nbgate {
            pid: child.id(),
            child: Some(child),
            dir: self.dir,
            config_path,
            state_dir,
            https,
            http,
            log,
            cert_pem,
            token: self.token,
        })
    }
}

/// Why `nbgate serve` did not become ready.
#[derive(Debug)]
pub struct StartFailure {
    pub reason: String,
    /// The exit status, if it exited (rather than hanging).
    pub status: Option<ExitStatus>,
    /// Everything it printed (stdout and stderr, interleaved by line).
    pub log: String,
}

/// A finished `nbgate` command.
#[derive(Debug)]
pub struct Finished {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `cmd` with piped output until it exits; kills it and panics after `limit`.
pub async fn run_to_exit(mut cmd: Command, limit: Duration) -> Finished {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn command");
    let out = Arc::new(Mutex::new(OutputLog::default()));
    let err = Arc::new(Mutex::new(OutputLog::default()));
    drain_lines(child.stdout.take().expect("stdout"), out.clone());
    drain_lines(child.stderr.take().expect("stderr"), err.clone());
    let deadline = tokio::time::Instant::now() + limit;
    let status = loop {
        if let Ok(Some(status)) = child.try_wait() {
            break status;
        }
        if tokio::time::Instant::now() >= deadline {
            kill_tree(&mut child);
            panic!(
                "{cmd:?} did not exit within {limit:?}; stderr:\n{}",
                err.lock().expect("lock").lines.join("\n")
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        while out.lock().expect("lock").closed < 1 || err.lock().expect("lock").closed < 1 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    let stdout = out.lock().expect("lock").lines.join("\n");
    let stderr = err.lock().expect("lock").lines.join("\n");
    Finished {
        status,
        stdout,
        stderr,
    }
}

/// A running `nbgate serve`, killed on drop.
pub struct Nbgate {
    child: Option<Child>,
    pid: u32,
    dir: tempfile::TempDir,
    config_path: PathBuf,
    state_dir: PathBuf,
    https: Vec<SocketAddr>,
    http: Vec<SocketAddr>,
    log: Arc<Mutex<OutputLog>>,
    /// The certificate clients trust: the self-signed one from the state dir, or the
    /// configured `tls.cert_file`.
    cert_pem: Vec<u8>,
    token: String,
}

impl Nbgate {
    /// Starts nbgate with the default test config forwarding to `jupyter`.
    pub async fn start_for(jupyter: &Jupyter) -> Nbgate {
        NbgateBuilder::new().jupyter(jupyter).start().await
    }

    pub fn builder() -> NbgateBuilder {
        NbgateBuilder::new()
    }

    /// The first HTTPS listener's bound address.
    pub fn https_addr(&self) -> SocketAddr {
        self.https[0]
    }

    pub fn https_addrs(&self) -> &[SocketAddr] {
        &self.https
    }

    /// The first plain-HTTP (redirect) listener's bound address.
    pub fn http_addr(&self) -> SocketAddr {
        *self
            .http
            .first()
            .expect("no http_listen listener configured")
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    pub fn state_dir(&self) -> &Path {
        &self.state_dir
    }

    pub fn config_path(&self) -> &Path {
        &self.config_path
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The upstream token nbgate was configured with.
    pub fn upstream_token(&self) -> &str {
        &self.token
    }

    /// The PEM certificate clients trust.
    pub fn cert_pem(&self) -> &[u8] {
        &self.cert_pem
    }

    /// `https://localhost:PORT`: the origin browsers would send.
    pub fn origin(&self) -> String {
        format!("https://localhost:{}", self.https_addr().port())
    }

    /// `https://localhost:PORT{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.origin())
    }

    /// Credentials every test request carries. Empty until nbgate has authentication; then this
    /// is the one place to add the session cookie or API token.
    pub fn auth_headers(&self) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            "authorization",
            format!("token {TEST_API_TOKEN}")
                .parse()
                .expect("header value"),
        );
        h
    }

    /// `auth_headers` as raw `Name: value\r\n` lines, for hand-written HTTP/1.1 requests.
    pub fn auth_header_lines(&self) -> String {
        self.auth_headers()
            .iter()
            .map(|(k, v)| format!("{k}: {}\r\n", v.to_str().expect("ascii header")))
            .collect()
    }

    /// A reqwest client that trusts exactly nbgate's certificate, resolves `localhost` to the
    /// HTTPS listener, offers h2 and http/1.1 via ALPN and does not follow redirects.
    pub fn client(&self) -> reqwest::Client {
        self.client_builder().build().expect("build reqwest client")
    }

    /// Like [`Nbgate::client`] but HTTP/1.1 only (for HTTP/1.1-specific behaviour).
    pub fn client_http1(&self) -> reqwest::Client {
        self.client_builder()
            .http1_only()
            .build()
            .expect("build reqwest client")
    }

    /// The builder behind [`Nbgate::client`], for tests that need one more option.
    pub fn client_builder(&self) -> reqwest::ClientBuilder {
        let cert = reqwest::Certificate::from_pem(&self.cert_pem).expect("nbgate cert is PEM");
        reqwest::Client::builder()
            .use_rustls_tls()
            .tls_built_in_root_certs(false)
            .add_root_certificate(cert)
            .resolve("localhost", self.https_addr())
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(10))
            // No single read may stall longer than this, so body reads cannot hang a test.
            .read_timeout(Duration::from_secs(60))
            .default_headers(self.auth_headers())
    }

    /// A rustls client config trusting exactly nbgate's certificate, with `alpn`.
    pub fn tls_client_config(&self, alpn: &[&[u8]]) -> rustls::ClientConfig {
        let mut roots = rustls::RootCertStore::empty();
        for cert in super::certs::parse_pem_certs(&self.cert_pem) {
            roots.add(cert).expect("add nbgate cert to root store");
        }
        let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        config
    }

    /// A client like [`Nbgate::client`] whose connections come from `local`.
    pub fn client_from(&self, local: std::net::IpAddr) -> reqwest::Client {
        self.client_builder()
            .local_address(local)
            .build()
            .expect("build reqwest client")
    }

    /// A TCP connection to `addr` from the local address `local` (127.0.0.2,
    /// ::1, ...: "another client" on loopback).
    pub async fn tcp_connect_from(
        local: std::net::IpAddr,
        addr: SocketAddr,
    ) -> std::io::Result<TcpStream> {
        let socket = if local.is_ipv4() {
            tokio::net::TcpSocket::new_v4()?
        } else {
            tokio::net::TcpSocket::new_v6()?
        };
        socket.bind(SocketAddr::new(local, 0))?;
        tokio::time::timeout(Duration::from_secs(10), socket.connect(addr))
            .await
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out"))?
    }

    /// A TCP connection to the HTTPS listener (no TLS yet).
    pub async fn tcp_connect(&self) -> TcpStream {
        super::within(
            Duration::from_secs(10),
            "TCP connect to nbgate",
            TcpStream::connect(self.https_addr()),
        )
        .await
        .expect("TCP connect to nbgate")
    }

    /// A TLS connection to `localhost` on the HTTPS listener, offering `http/1.1` only.
    pub async fn tls_connect(&self) -> TlsStream<TcpStream> {
        self.tls_connect_alpn(&[b"http/1.1"]).await
    }

    pub async fn tls_connect_alpn(&self, alpn: &[&[u8]]) -> TlsStream<TcpStream> {
        let tcp = self.tcp_connect().await;
        self.tls_handshake(tcp, alpn)
            .await
            .expect("TLS handshake with nbgate")
    }

    /// A TLS handshake as `localhost` over `tcp`.
    pub async fn tls_handshake(
        &self,
        tcp: TcpStream,
        alpn: &[&[u8]],
    ) -> std::io::Result<TlsStream<TcpStream>> {
        let connector = tokio_rustls::TlsConnector::from(Arc::new(self.tls_client_config(alpn)));
        let name = rustls::pki_types::ServerName::try_from("localhost").expect("server name");
        super::within(
            Duration::from_secs(10),
            "TLS handshake with nbgate",
            connector.connect(name, tcp),
        )
        .await
    }

    /// Sends `head` (a complete HTTP/1.1 request head; auth lines are inserted after the request
    /// line) over a fresh TLS connection and reads until the server closes (10 s limit).
    pub async fn raw_https(&self, head: &str) -> String {
        let mut tls = self.tls_connect().await;
        let request = self.with_auth_lines(head);
        tls.write_all(request.as_bytes())
            .await
            .expect("write request");
        let mut response = Vec::new();
        super::within(
            Duration::from_secs(10),
            "raw HTTPS response until close",
            tls.read_to_end(&mut response),
        )
        .await
        .ok();
        String::from_utf8_lossy(&response).into_owned()
    }

    /// Inserts [`Nbgate::auth_header_lines`] after the request line of `head`.
    pub fn with_auth_lines(&self, head: &str) -> String {
        match head.split_once("\r\n") {
            Some((line, rest)) => format!("{line}\r\n{}{rest}", self.auth_header_lines()),
            None => head.to_string(),
        }
    }

    /// Opens a WebSocket to `path` with the matching `Origin` a browser would send.
    pub async fn ws_connect(&self, path: &str) -> WsStream {
        let origin = self.origin();
        match self
            .ws_connect_with(path, &[("origin", origin.as_str())])
            .await
        {
            Ok(ws) => ws,
            Err(e) => panic!(
                "WebSocket {path} through nbgate failed: {}",
                describe_ws_error(&e)
            ),
        }
    }

    /// Opens a WebSocket to `path` with exactly `headers` (plus auth), returning the handshake
    /// error (e.g. `Error::Http(response)` for a 403) instead of panicking.
    pub async fn ws_connect_with(
        &self,
        path: &str,
        headers: &[(&str, &str)],
    ) -> Result<WsStream, tokio_tungstenite::tungstenite::Error> {
        let mut request = format!("wss://localhost:{}{path}", self.https_addr().port())
            .into_client_request()
            .expect("WebSocket request");
        request.headers_mut().extend(self.auth_headers());
        for (name, value) in headers {
            request.headers_mut().insert(
                HeaderName::from_bytes(name.as_bytes()).expect("header name"),
                HeaderValue::from_str(value).expect("header value"),
            );
        }
        let tls = self.tls_connect().await;
        super::within(
            Duration::from_secs(20),
            "WebSocket handshake through nbgate",
            tokio_tungstenite::client_async(request, tls),
        )
        .await
        .map(|(ws, _response)| ws)
    }

    /// Runs `nbgate ARGS…` (another command, e.g. `audit verify`) to its exit (20 s limit).
    pub async fn run_args(&self, args: &[&str]) -> Finished {
        let mut cmd = Command::new(nbgate_bin());
        cmd.args(args).env("RUST_LOG", RUST_LOG);
        run_to_exit(cmd, Duration::from_secs(20)).await
    }

    /// Peak resident set size of nbgate (`VmHWM`), in KiB.
    pub fn peak_rss_kib(&self) -> u64 {
        proc_status_kib(self.pid, "VmHWM").expect("nbgate is running: /proc/PID/status VmHWM")
    }

    /// Sends `signal` (e.g. `libc::SIGTERM`) to nbgate.
    pub fn signal(&self, signal: i32) {
        send_signal(self.pid, signal);
    }

    /// Waits for nbgate to exit, panicking after `limit`.
    pub async fn wait_exit(&mut self, limit: Duration) -> ExitStatus {
        let child = self.child.as_mut().expect("nbgate already reaped");
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            if let Some(status) = child.try_wait().expect("try_wait") {
                self.child = None;
                return status;
            }
            if tokio::time::Instant::now() >= deadline {
                panic!(
                    "nbgate did not exit within {limit:?}; log:\n{}",
                    self.log_text()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Whether nbgate is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(Child::try_wait), Some(Ok(None)))
    }

    /// Every line nbgate printed so far (stdout and stderr).
    pub fn log_lines(&self) -> Vec<String> {
        self.log.lock().expect("log lock").lines.clone()
    }

    pub fn log_text(&self) -> String {
        self.log_lines().join("\n")
    }

    pub fn log_contains(&self, needle: &str) -> bool {
        self.log
            .lock()
            .expect("log lock")
            .lines
            .iter()
            .any(|l| l.contains(needle))
    }

    /// Waits until a log line contains `needle`; returns that line.
    pub async fn wait_for_log(&self, needle: &str, limit: Duration) -> String {
        self.wait_for_line(&[needle], limit).await
    }

    /// Waits until one log line contains every string in `parts`; returns that line.
    pub async fn wait_for_line(&self, parts: &[&str], limit: Duration) -> String {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            if let Some(line) = self.find_line(parts) {
                return line;
            }
            if tokio::time::Instant::now() >= deadline {
                panic!(
                    "no nbgate log line with all of {parts:?} within {limit:?}; log:\n{}",
                    self.log_text()
                );
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// The first log line containing every string in `parts`.
    pub fn find_line(&self, parts: &[&str]) -> Option<String> {
        self.log
            .lock()
            .expect("log lock")
            .lines
            .iter()
            .find(|l| parts.iter().all(|p| l.contains(p)))
            .cloned()
    }
}

impl Drop for Nbgate {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            kill_tree(&mut child);
        }
        if std::thread::panicking() {
            eprintln!(
                "----- nbgate log (pid {}) -----\n{}",
                self.pid,
                self.log_text()
            );
        }
    }
}

/// The `listening` addresses logged so far: `(https, http)`.
fn listening_addrs(log: &Mutex<OutputLog>) -> (Vec<SocketAddr>, Vec<SocketAddr>) {
    let log = log.lock().expect("log lock");
    let mut https = Vec::new();
    let mut http = Vec::new();
    for line in &log.lines {
        assert!(
            !line.contains('\u{1b}'),
            "nbgate log has ANSI escape codes although stderr is not a terminal: {line:?}"
        );
        if !line.contains("listening") {
            continue;
        }
        let (Some(scheme), Some(addr)) = (log_field(line, "scheme"), log_field(line, "addr"))
        else {
            continue;
        };
        let Ok(addr) = addr.parse::<SocketAddr>() else {
            continue;
        };
        match scheme.as_str() {
            "https" => https.push(addr),
            "http" => http.push(addr),
            _ => {}
        }
    }
    (https, http)
}

/// The value of field `name` in a log line: `name=value` / `name="value"` in text format, or
/// `fields.name` (or top-level `name`) in JSON format.
pub fn log_field(line: &str, name: &str) -> Option<String> {
    if line.trim_start().starts_with('{') {
        let json: serde_json::Value = serde_json::from_str(line).ok()?;
        let fields = json.get("fields").unwrap_or(&json);
        if let Some(value) = fields.get(name).or_else(|| json.get(name)) {
            return Some(match value {
                serde_json::Value::String(s) => s.clone(),
                other => other.to_string(),
            });
        }
        // Fields formatted into the message text: `"message": "listening scheme=https ..."`.
        let message = fields.get("message").or_else(|| json.get("message"))?;
        return log_field(message.as_str()?, name);
    }
    let key = format!("{name}=");
    let start = line
        .match_indices(&key)
        .find(|(i, _)| *i == 0 || line.as_bytes()[i - 1] == b' ')?
        .0
        + key.len();
    let rest = &line[start..];
    let value = match rest.strip_prefix('"') {
        Some(quoted) => quoted.split('"').next(),
        None => rest.split_whitespace().next(),
    };
    value.map(str::to_string)
}

/// Waits (30 s at most) for the server to close `ws`: the close frame's code (`None`: no close
/// frame, the connection or HTTP/2 stream just ended).
pub async fn closed_by_server<S>(ws: &mut WebSocketStream<S>) -> Option<u16>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::Message;
    super::within(Duration::from_secs(30), "the tunnel to be closed", async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Close(frame))) => return frame.map(|f| u16::from(f.code)),
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => return None,
            }
        }
    })
    .await
}

/// A WebSocket handshake error with an HTTP response shown as status, headers and (lossy,
/// truncated) body text rather than a byte array.
pub fn describe_ws_error(error: &tokio_tungstenite::tungstenite::Error) -> String {
    match error {
        tokio_tungstenite::tungstenite::Error::Http(response) => {
            let body = response
                .body()
                .as_deref()
                .map(|b| String::from_utf8_lossy(&b[..b.len().min(500)]).into_owned())
                .unwrap_or_default();
            format!(
                "HTTP {} {:?} body: {body}",
                response.status(),
                response.headers()
            )
        }
        other => format!("{other:?}"),
    }
}
