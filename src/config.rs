//! Configuration: the TOML file as written (`RawConfig`), and the validated
//! `Config` the rest of nbgate runs on.
//!
//! Parse, then validate: serde mirrors the file with `deny_unknown_fields`
//! (a typo is an error, not a silently ignored key), and `Config::try_from_raw`
//! applies defaults, parses durations, sizes and addresses, and rejects bad
//! combinations with a message naming the key. Only `Config` leaves this
//! module. This module imports nothing else of the crate.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

/// The HTTPS port used when no listener is configured. 8443 rather than 443
/// so that nbgate runs unprivileged out of the box; systemd socket or
/// `CAP_NET_BIND_SERVICE` moves it to 443.
pub const DEFAULT_HTTPS_PORT: u16 = 8443;

/// Errors from loading or validating a configuration file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: cannot read")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}:{line}:{column}: {message}")]
    Parse {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
    #[error("{path}: {key}: {message}")]
    Invalid {
        path: PathBuf,
        key: &'static str,
        message: String,
    },
}

/// The file as written. Every field optional: defaults live in `try_from_raw`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    #[serde(default)]
    server: RawServer,
    #[serde(default)]
    tls: RawTls,
    #[serde(default)]
    upstream: RawUpstream,
    #[serde(default)]
    log: RawLog,
    #[serde(default)]
    auth: RawAuth,
    #[serde(default)]
    policy: RawPolicy,
    #[serde(default)]
    users: Vec<RawUser>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    allow: Option<Vec<String>>,
    deny: Option<Vec<String>>,
    trusted_proxies: Option<Vec<String>>,
    forwarded_header: Option<String>,
    proxy_protocol: Option<bool>,
    max_connections_per_client: Option<usize>,
    #[serde(default)]
    rate_limit: RawRateLimit,
    #[serde(default)]
    lockout: RawLockout,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRateLimit {
    requests_per_second: Option<u32>,
    burst: Option<u32>,
    logged_in_requests_per_second: Option<u32>,
    logged_in_burst: Option<u32>,
    max_clients: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLockout {
    address_threshold: Option<u32>,
    user_threshold: Option<u32>,
    duration: Option<String>,
    address_max: Option<String>,
    user_max: Option<String>,
    refusal_delay: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAuth {
    base_url: Option<String>,
    default_user: Option<String>,
    users_file: Option<PathBuf>,
    password_hash_env: Option<String>,
    password_env: Option<String>,
    password_file: Option<PathBuf>,
    idle_timeout: Option<String>,
    max_lifetime: Option<String>,
    max_concurrent_verifications: Option<usize>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawUser {
    name: String,
    password_hash: Option<String>,
    #[serde(default)]
    tokens: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawServer {
    listen: Option<Vec<String>>,
    http_listen: Option<Vec<String>>,
    server_names: Option<Vec<String>>,
    state_dir: Option<PathBuf>,
    max_connections: Option<usize>,
    header_read_timeout: Option<String>,
    tls_handshake_timeout: Option<String>,
    max_header_bytes: Option<String>,
    max_headers: Option<usize>,
    shutdown_grace: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTls {
    mode: Option<String>,
    cert_file: Option<PathBuf>,
    key_file: Option<PathBuf>,
    hsts: Option<bool>,
    hsts_max_age: Option<String>,
    acme: Option<RawAcme>,
}

/// `[tls.acme]`: automatic certificates (RFC 8555).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAcme {
    domains: Option<Vec<String>>,
    directory: Option<String>,
    ca_bundle: Option<PathBuf>,
    contact: Option<String>,
    eab_key_id: Option<String>,
    eab_hmac_key_file: Option<PathBuf>,
    challenges: Option<Vec<String>>,
    key_type: Option<String>,
    renew_before: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawUpstream {
    url: Option<String>,
    token_file: Option<PathBuf>,
    token_env: Option<String>,
    connect_timeout: Option<String>,
    response_timeout: Option<String>,
    websocket_idle_timeout: Option<String>,
    pool_idle_timeout: Option<String>,
    pool_max_idle: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLog {
    format: Option<String>,
    access_log: Option<bool>,
}

/// Command-line values that override the file (`--listen`, `--upstream`, ...).
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub listen: Option<String>,
    pub upstream: Option<String>,
    pub state_dir: Option<PathBuf>,
}

/// The validated configuration.
#[derive(Debug, Clone, Serialize)]
pub struct Config {
    /// Where the configuration came from ("<defaults>" when no file was given).
    #[serde(skip)]
    pub source: PathBuf,
    pub server: ServerConfig,
    pub tls: TlsConfig,
    pub upstream: UpstreamConfig,
    pub log: LogConfig,
    pub auth: AuthConfig,
    pub policy: PolicyConfig,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub users: Vec<UserEntry>,
}

/// Who may connect, how often, and how many wrong passwords they get.
#[derive(Debug, Clone, Serialize)]
pub struct PolicyConfig {
    /// Client networks allowed in; empty means everyone.
    pub allow: Vec<IpNet>,
    /// Client networks refused; wins over `allow`.
    pub deny: Vec<IpNet>,
    /// Peers whose `X-Forwarded-For` / `Forwarded` headers and PROXY
    /// protocol headers are believed. Nobody else's are.
    pub trusted_proxies: Vec<IpNet>,
    /// The header the trusted proxies write: `x-forwarded-for` or
    /// `forwarded`. Only that one is read; the other passes through from
    /// the client untouched by most proxies and is therefore ignored.
    pub forwarded_header: String,
    /// HTTPS listeners expect a PROXY protocol v1/v2 header first.
    pub proxy_protocol: bool,
    pub max_connections_per_client: usize,
    pub rate_limit: RateLimitConfig,
    pub lockout: LockoutConfig,
}

/// Per-client request rates (GCRA: a steady rate plus a burst).
#[derive(Debug, Clone, Serialize)]
pub struct RateLimitConfig {
    /// Clients without a session: login pages, refused requests.
    pub requests_per_second: u32,
    pub burst: u32,
    /// Logged-in users: JupyterLab fires a hundred requests at page load.
    pub logged_in_requests_per_second: u32,
    pub logged_in_burst: u32,
    /// Hard cap on tracked client addresses (memory stays flat in a flood).
    pub max_clients: usize,
}

/// Brute-force protection for logins and API tokens.
#[derive(Debug, Clone, Serialize)]
pub struct LockoutConfig {
    /// Wrong attempts from one address before it is locked.
    pub address_threshold: u32,
    /// Wrong attempts for one user name (from anywhere) before it is locked.
    pub user_threshold: u32,
    /// The first lockout; each further one doubles.
    #[serde(serialize_with = "ser_duration")]
    pub duration: Duration,
    #[serde(serialize_with = "ser_duration")]
    pub address_max: Duration,
    /// Bound on a user-name lockout: how long a guessing flood from
    /// elsewhere can keep the owner out.
    #[serde(serialize_with = "ser_duration")]
    pub user_max: Duration,
    /// How long a refused login or token attempt (locked out, or too many
    /// verifications in flight) waits for its answer. See `Guard::hold_refusal`.
    #[serde(serialize_with = "ser_duration")]
    pub refusal_delay: Duration,
}

/// Where users and passwords come from, and how long a login lasts.
#[derive(Debug, Clone, Serialize)]
pub struct AuthConfig {
    /// Jupyter's `base_url`; nbgate's own pages live under `<base_url>_nbgate/`.
    pub base_url: String,
    /// The user name for single-password sources (env, file, credential,
    /// embedded default).
    pub default_user: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub users_file: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password_hash_env: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password_env: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password_file: Option<PathBuf>,
    #[serde(serialize_with = "ser_duration")]
    pub idle_timeout: Duration,
    #[serde(serialize_with = "ser_duration")]
    pub max_lifetime: Duration,
    pub max_concurrent_verifications: usize,
}

/// A `[[users]]` entry. Hashes are not secrets in the cryptographic sense,
/// but they are redacted from output anyway: offline guessing needs them.
#[derive(Debug, Clone, Serialize)]
pub struct UserEntry {
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password_hash: Option<Secret>,
    pub tokens: Vec<Secret>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ServerConfig {
    pub listen: Vec<SocketAddr>,
    pub http_listen: Vec<SocketAddr>,
    pub server_names: Vec<String>,
    pub state_dir: PathBuf,
    pub max_connections: usize,
    #[serde(serialize_with = "ser_duration")]
    pub header_read_timeout: Duration,
    #[serde(serialize_with = "ser_duration")]
    pub tls_handshake_timeout: Duration,
    #[serde(serialize_with = "ser_size")]
    pub max_header_bytes: usize,
    pub max_headers: usize,
    #[serde(serialize_with = "ser_duration")]
    pub shutdown_grace: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum TlsMode {
    SelfSigned,
    Files,
    Acme,
}

#[derive(Debug, Clone, Serialize)]
pub struct TlsConfig {
    pub mode: TlsMode,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cert_file: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_file: Option<PathBuf>,
    pub hsts: bool,
    #[serde(serialize_with = "ser_duration")]
    pub hsts_max_age: Duration,
    /// Set exactly when `mode` is `Acme`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub acme: Option<AcmeConfig>,
}

/// Let's Encrypt's production directory, the default.
pub const LETSENCRYPT_DIRECTORY: &str = "https://acme-v02.api.letsencrypt.org/directory";
/// Let's Encrypt's staging directory: untrusted certificates, generous rate limits.
pub const LETSENCRYPT_STAGING_DIRECTORY: &str =
    "https://acme-staging-v02.api.letsencrypt.org/directory";

/// The ACME challenge types nbgate can answer itself. DNS-01 needs a DNS
/// provider API and is out of scope.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum AcmeChallenge {
    /// RFC 8737: answered on the HTTPS listener during the TLS handshake.
    #[serde(rename = "tls-alpn-01")]
    TlsAlpn01,
    /// RFC 8555 §8.3: answered on the plain-HTTP listener.
    #[serde(rename = "http-01")]
    Http01,
}

impl fmt::Display for AcmeChallenge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AcmeChallenge::TlsAlpn01 => "tls-alpn-01",
            AcmeChallenge::Http01 => "http-01",
        })
    }
}

/// The certificate key algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum AcmeKeyType {
    EcdsaP256,
    EcdsaP384,
}

/// External Account Binding (RFC 8555 §7.3.4), for CAs such as ZeroSSL.
#[derive(Debug, Clone, Serialize)]
pub struct AcmeEab {
    pub key_id: String,
    /// Holds the base64url HMAC key; read when the account is created.
    pub hmac_key_file: PathBuf,
}

#[derive(Debug, Clone, Serialize)]
pub struct AcmeConfig {
    /// Lowercase DNS names; the certificate covers all of them.
    pub domains: Vec<String>,
    /// The directory URL.
    pub directory: String,
    /// PEM roots that replace the system roots for talking to the directory.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_bundle: Option<PathBuf>,
    /// `mailto:` URLs.
    pub contact: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub eab: Option<AcmeEab>,
    /// Tried in this order; a failure of one falls back to the next.
    pub challenges: Vec<AcmeChallenge>,
    pub key_type: AcmeKeyType,
    /// Renew when less than this is left; `None`: a third of the lifetime.
    #[serde(
        serialize_with = "ser_opt_duration",
        skip_serializing_if = "Option::is_none"
    )]
    pub renew_before: Option<Duration>,
}

/// Where Jupyter listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpstreamAddr {
    /// `http://host:port` — the authority is what Jupyter sees as `Host`.
    Tcp { authority: String },
    /// `unix:/path` — Jupyter's `--ServerApp.sock`.
    Unix { path: PathBuf },
}

impl fmt::Display for UpstreamAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UpstreamAddr::Tcp { authority } => write!(f, "http://{authority}"),
            UpstreamAddr::Unix { path } => write!(f, "unix:{}", path.display()),
        }
    }
}

impl Serialize for UpstreamAddr {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// Whether `token` can be Jupyter's token: URL-unreserved characters only
/// (RFC 3986 §2.3). Pages carry the token as HTML, JSON or URL text; a
/// character any of those escapes (`"`, `<`, `&`, `+`, `/`, …) would appear
/// escaped and slip past the byte-exact scrubber that keeps it out of
/// browsers. Jupyter's generated tokens are hex; `nbgate run`'s base64url.
pub fn valid_upstream_token(token: &str) -> bool {
    !token.is_empty()
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'))
}

/// The Jupyter token, kept out of `Debug` and serialized output.
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: String) -> Self {
        Secret(value)
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str("<redacted>")
    }
}

/// Where the upstream token is read from. The token itself is read at
/// startup by `load_upstream_token`, never from argv.
#[derive(Debug, Clone, Serialize)]
pub struct UpstreamConfig {
    pub url: UpstreamAddr,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_file: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_env: Option<String>,
    /// The token value, loaded from `token_file` or `token_env`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<Secret>,
    #[serde(serialize_with = "ser_duration")]
    pub connect_timeout: Duration,
    /// How long Jupyter may take to answer a request once it has been
    /// sent whole: a Jupyter that accepts and never answers (or trickles
    /// its answer) must not hold a client's request forever.
    #[serde(serialize_with = "ser_duration")]
    pub response_timeout: Duration,
    #[serde(serialize_with = "ser_duration")]
    pub websocket_idle_timeout: Duration,
    #[serde(serialize_with = "ser_duration")]
    pub pool_idle_timeout: Duration,
    pub pool_max_idle: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Serialize)]
pub struct LogConfig {
    pub format: LogFormat,
    pub access_log: bool,
}

fn ser_duration<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(&humantime::format_duration(*d))
}

fn ser_opt_duration<S: serde::Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => ser_duration(d, s),
        None => s.serialize_none(),
    }
}

fn ser_size<S: serde::Serializer>(n: &usize, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(&format_size(*n))
}

/// Parses a human size: `"512"`, `"16KiB"`, `"10MiB"`, `"1GiB"`, `"64kB"`.
pub fn parse_size(text: &str) -> Result<usize, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: usize = num
        .parse()
        .map_err(|_| format!("invalid size {text:?} (expected e.g. \"16KiB\" or \"10MiB\")"))?;
    let mult: usize = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "kB" | "KB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        other => {
            return Err(format!(
                "invalid size unit {other:?} in {text:?} (use B, KiB, MiB, GiB, kB, MB, GB)"
            ))
        }
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("size {text:?} is too large"))
}

fn format_size(n: usize) -> String {
    for (unit, m) in [("GiB", 1usize << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)] {
        if n >= m && n % m == 0 {
            return format!("{}{unit}", n / m);
        }
    }
    format!("{n}B")
}

/// Parses a human duration: `"30s"`, `"5m"`, `"1h 30m"`, `"365days"`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text.trim()).map_err(|e| {
        format!("invalid duration {text:?}: {e} (expected e.g. \"30s\", \"5m\", \"1h\")")
    })
}

/// The documented default state directory: systemd's `$STATE_DIRECTORY`
/// when run as a service with `StateDirectory=`, `/var/lib/nbgate` for root,
/// otherwise `$XDG_STATE_HOME/nbgate` or `~/.local/state/nbgate`.
pub fn default_state_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("STATE_DIRECTORY") {
        // systemd may pass several, colon-separated; the first is ours.
        let s = dir.to_string_lossy().into_owned();
        if let Some(first) = s.split(':').next().filter(|p| !p.is_empty()) {
            return PathBuf::from(first);
        }
    }
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } == 0 {
        return PathBuf::from("/var/lib/nbgate");
    }
    if let Some(xdg) = std::env::var_os("XDG_STATE_HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(xdg).join("nbgate");
    }
    if let Some(home) = std::env::var_os("HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(home).join(".local/state/nbgate");
    }
    PathBuf::from("nbgate-state")
}

/// Parses an upstream: `http://127.0.0.1:8888`, `http://localhost:8888/`,
/// `unix:/run/jupyter.sock`. HTTPS upstreams are refused: Jupyter sits on
/// loopback or a socket, and TLS there only hides misconfiguration.
pub fn parse_upstream(text: &str) -> Result<UpstreamAddr, String> {
    let t = text.trim();
    if let Some(path) = t.strip_prefix("unix:") {
        let path = path.strip_prefix("//").unwrap_or(path);
        if !path.starts_with('/') {
            return Err(format!(
                "{text:?}: a unix socket path must be absolute (unix:/path/to/jupyter.sock)"
            ));
        }
        return Ok(UpstreamAddr::Unix {
            path: PathBuf::from(path),
        });
    }
    let rest = t
        .strip_prefix("http://")
        .ok_or_else(|| format!("{text:?}: expected http://HOST:PORT or unix:/path/to/socket"))?;
    let authority = rest.trim_end_matches('/');
    if authority.is_empty() || authority.contains(['/', '?', '#', '@']) {
        return Err(format!(
            "{text:?}: give only scheme, host and port (Jupyter's base_url is forwarded unchanged)"
        ));
    }
    let uri: http::uri::Authority = authority
        .parse()
        .map_err(|e| format!("{text:?}: invalid host:port: {e}"))?;
    let authority = if uri.port().is_some() {
        uri.as_str().to_owned()
    } else {
        format!("{}:80", uri.as_str())
    };
    Ok(UpstreamAddr::Tcp { authority })
}

fn parse_listen(text: &str) -> Result<SocketAddr, String> {
    text.trim()
        .parse()
        .map_err(|_| format!("{text:?}: expected IP:PORT, e.g. \"0.0.0.0:8443\" or \"[::]:8443\""))
}

impl Config {
    /// Loads `path` (or embedded defaults when `None`), applies CLI overrides
    /// and validates. The upstream token is read here, from a file or an
    /// environment variable, never from the command line.
    ///
    /// # Errors
    /// A `ConfigError` that names the file, the key and the problem.
    pub fn load(path: Option<&Path>, overrides: &Overrides) -> Result<Config, ConfigError> {
        let (raw, source) = match path {
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(|source| ConfigError::Read {
                    path: p.to_path_buf(),
                    source,
                })?;
                (Self::parse_raw(&text, p)?, p.to_path_buf())
            }
            None => (RawConfig::default(), PathBuf::from("<defaults>")),
        };
        Self::try_from_raw(raw, source, overrides)
    }

    /// Parses and validates configuration text as if read from `path`.
    ///
    /// # Errors
    /// As [`Config::load`].
    pub fn from_text(text: &str, path: &Path) -> Result<Config, ConfigError> {
        Self::try_from_raw(
            Self::parse_raw(text, path)?,
            path.to_path_buf(),
            &Overrides::default(),
        )
    }

    fn parse_raw(text: &str, path: &Path) -> Result<RawConfig, ConfigError> {
        toml::from_str(text).map_err(|e| {
            let (line, column) = e.span().map(|s| line_col(text, s.start)).unwrap_or((0, 0));
            let message = match key_at(text, line) {
                Some(key) => format!("{key}: {}", e.message()),
                None => e.message().to_owned(),
            };
            ConfigError::Parse {
                path: path.to_path_buf(),
                line,
                column,
                message,
            }
        })
    }

    /// Validates a parsed file; `source` is used in error messages.
    pub fn try_from_raw(
        raw: RawConfig,
        source: PathBuf,
        overrides: &Overrides,
    ) -> Result<Config, ConfigError> {
        let invalid = |key: &'static str, message: String| ConfigError::Invalid {
            path: source.clone(),
            key,
            message,
        };
        let dur = |key: &'static str, v: Option<String>, default: Duration| match v {
            Some(t) => parse_duration(&t).map_err(|m| invalid(key, m)),
            None => Ok(default),
        };

        let s = raw.server;
        let listen_text = match &overrides.listen {
            Some(l) => vec![l.clone()],
            None => s
                .listen
                .unwrap_or_else(|| vec![format!("0.0.0.0:{DEFAULT_HTTPS_PORT}")]),
        };
        if listen_text.is_empty() {
            return Err(invalid(
                "server.listen",
                "at least one HTTPS listener is required".into(),
            ));
        }
        let listen = listen_text
            .iter()
            .map(|l| parse_listen(l))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|m| invalid("server.listen", m))?;
        let http_listen = s
            .http_listen
            .unwrap_or_default()
            .iter()
            .map(|l| parse_listen(l))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|m| invalid("server.http_listen", m))?;
        let server_names = s.server_names.unwrap_or_default();
        for name in &server_names {
            if name.is_empty() || name.contains(['/', ':', ' ', '*']) {
                return Err(invalid(
                    "server.server_names",
                    format!("{name:?} is not a host name"),
                ));
            }
        }
        let max_header_bytes = match s.max_header_bytes {
            Some(t) => parse_size(&t).map_err(|m| invalid("server.max_header_bytes", m))?,
            None => 32 * 1024,
        };
        if !(1024..=1 << 20).contains(&max_header_bytes) {
            return Err(invalid(
                "server.max_header_bytes",
                "must be between 1KiB and 1MiB".into(),
            ));
        }
        let max_connections = s.max_connections.unwrap_or(4096);
        if max_connections == 0 {
            return Err(invalid(
                "server.max_connections",
                "must be at least 1".into(),
            ));
        }
        let max_headers = s.max_headers.unwrap_or(100);
        if max_headers == 0 {
            return Err(invalid("server.max_headers", "must be at least 1".into()));
        }
        let server = ServerConfig {
            listen,
            http_listen,
            server_names,
            state_dir: overrides
                .state_dir
                .clone()
                .or(s.state_dir)
                .unwrap_or_else(default_state_dir),
            max_connections,
            header_read_timeout: dur(
                "server.header_read_timeout",
                s.header_read_timeout,
                Duration::from_secs(10),
            )?,
            tls_handshake_timeout: dur(
                "server.tls_handshake_timeout",
                s.tls_handshake_timeout,
                Duration::from_secs(10),
            )?,
            max_header_bytes,
            max_headers,
            shutdown_grace: dur(
                "server.shutdown_grace",
                s.shutdown_grace,
                Duration::from_secs(30),
            )?,
        };

        let t = raw.tls;
        let mode = match t.mode.as_deref() {
            None | Some("self-signed") => TlsMode::SelfSigned,
            Some("files") => TlsMode::Files,
            Some("acme") => TlsMode::Acme,
            Some(other) => {
                return Err(invalid(
                    "tls.mode",
                    format!(
                        "unknown mode {other:?} (expected \"self-signed\", \"files\" or \"acme\")"
                    ),
                ))
            }
        };
        if mode == TlsMode::Files {
            if t.cert_file.is_none() {
                return Err(invalid(
                    "tls.cert_file",
                    "must be set when tls.mode = \"files\"".into(),
                ));
            }
            if t.key_file.is_none() {
                return Err(invalid(
                    "tls.key_file",
                    "must be set when tls.mode = \"files\"".into(),
                ));
            }
        } else if t.cert_file.is_some() || t.key_file.is_some() {
            return Err(invalid(
                "tls.cert_file",
                "cert_file/key_file are only used with tls.mode = \"files\"".into(),
            ));
        }
        let acme = match (mode, t.acme) {
            (TlsMode::Acme, raw) => Some(
                acme_from_raw(raw.unwrap_or_default(), !server.http_listen.is_empty())
                    .map_err(|(key, m)| invalid(key, m))?,
            ),
            (_, Some(_)) => {
                return Err(invalid(
                    "tls.acme",
                    "only used with tls.mode = \"acme\"".into(),
                ))
            }
            (_, None) => None,
        };
        let tls = TlsConfig {
            mode,
            cert_file: t.cert_file,
            key_file: t.key_file,
            // HSTS pins browsers to this host's certificate chain; with a
            // self-signed certificate that would lock users out after the
            // first certificate change, so it is off by default there.
            hsts: t.hsts.unwrap_or(mode != TlsMode::SelfSigned),
            hsts_max_age: dur(
                "tls.hsts_max_age",
                t.hsts_max_age,
                Duration::from_secs(365 * 24 * 3600),
            )?,
            acme,
        };

        let u = raw.upstream;
        let url_text = overrides
            .upstream
            .clone()
            .or(u.url)
            .unwrap_or_else(|| "http://127.0.0.1:8888".to_owned());
        let url = parse_upstream(&url_text).map_err(|m| invalid("upstream.url", m))?;
        if u.token_file.is_some() && u.token_env.is_some() {
            return Err(invalid(
                "upstream.token_file",
                "set either token_file or token_env, not both".into(),
            ));
        }
        let token = match (&u.token_file, &u.token_env) {
            (Some(f), _) => {
                let text = std::fs::read_to_string(f).map_err(|e| {
                    invalid(
                        "upstream.token_file",
                        format!("cannot read {}: {e}", f.display()),
                    )
                })?;
                Some(text.trim().to_owned())
            }
            (None, Some(var)) => Some(
                std::env::var(var)
                    .map_err(|_| {
                        invalid(
                            "upstream.token_env",
                            format!("environment variable {var} is not set"),
                        )
                    })?
                    .trim()
                    .to_owned(),
            ),
            (None, None) => None,
        };
        if let Some(tok) = &token {
            if !valid_upstream_token(tok) {
                return Err(invalid(
                    "upstream.token_file",
                    "the Jupyter token must be letters, digits and - . _ ~ only (Jupyter's own \
                     are hex)"
                        .into(),
                ));
            }
        }
        let upstream = UpstreamConfig {
            url,
            token_file: u.token_file,
            token_env: u.token_env,
            token: token.map(Secret::new),
            connect_timeout: dur(
                "upstream.connect_timeout",
                u.connect_timeout,
                Duration::from_secs(5),
            )?,
            // Minutes, not nginx's 60 s: saving a large notebook or an
            // nbconvert export can take longer than a minute.
            response_timeout: dur(
                "upstream.response_timeout",
                u.response_timeout,
                Duration::from_secs(300),
            )?,
            // Far above Jupyter's 30 s WebSocket pings: nginx's 60 s default
            // is a known cause of dropped kernels.
            websocket_idle_timeout: dur(
                "upstream.websocket_idle_timeout",
                u.websocket_idle_timeout,
                Duration::from_secs(3600),
            )?,
            pool_idle_timeout: dur(
                "upstream.pool_idle_timeout",
                u.pool_idle_timeout,
                Duration::from_secs(60),
            )?,
            pool_max_idle: u.pool_max_idle.unwrap_or(64),
        };

        let l = raw.log;
        let format = match l.format.as_deref() {
            None | Some("text") => LogFormat::Text,
            Some("json") => LogFormat::Json,
            Some(other) => {
                return Err(invalid(
                    "log.format",
                    format!("unknown format {other:?} (expected \"text\" or \"json\")"),
                ))
            }
        };
        let a = raw.auth;
        let base_url = a.base_url.unwrap_or_else(|| "/".to_owned());
        if !base_url.starts_with('/')
            || !base_url.ends_with('/')
            || base_url.contains(['?', '#', '\\'])
        {
            return Err(invalid(
                "auth.base_url",
                format!("{base_url:?} must start and end with '/' (Jupyter's base_url, e.g. \"/jupyter/\")"),
            ));
        }
        let default_user = a.default_user.unwrap_or_else(|| "jupyter".to_owned());
        if !valid_user_name(&default_user) {
            return Err(invalid(
                "auth.default_user",
                format!("{default_user:?} is not a valid user name"),
            ));
        }
        let idle_timeout = dur(
            "auth.idle_timeout",
            a.idle_timeout,
            Duration::from_secs(24 * 3600),
        )?;
        let max_lifetime = dur(
            "auth.max_lifetime",
            a.max_lifetime,
            Duration::from_secs(7 * 24 * 3600),
        )?;
        if idle_timeout > max_lifetime {
            return Err(invalid(
                "auth.idle_timeout",
                "must not exceed auth.max_lifetime".into(),
            ));
        }
        if a.password_env.is_some() && a.password_file.is_some() {
            return Err(invalid(
                "auth.password_env",
                "set either password_env or password_file, not both".into(),
            ));
        }
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        let auth = AuthConfig {
            base_url,
            default_user,
            users_file: a.users_file,
            password_hash_env: a.password_hash_env,
            password_env: a.password_env,
            password_file: a.password_file,
            idle_timeout,
            max_lifetime,
            max_concurrent_verifications: a.max_concurrent_verifications.unwrap_or(cores).max(1),
        };
        let policy = policy_config(raw.policy, &invalid)?;
        let mut users = Vec::new();
        for u in raw.users {
            if !valid_user_name(&u.name) {
                return Err(invalid(
                    "users.name",
                    format!("{:?} is not a valid user name", u.name),
                ));
            }
            if users.iter().any(|e: &UserEntry| e.name == u.name) {
                return Err(invalid(
                    "users.name",
                    format!("user {:?} is defined twice", u.name),
                ));
            }
            if u.password_hash.is_none() && u.tokens.is_empty() {
                return Err(invalid(
                    "users.password_hash",
                    format!("user {:?} has neither password_hash nor tokens", u.name),
                ));
            }
            users.push(UserEntry {
                name: u.name,
                password_hash: u.password_hash.map(Secret::new),
                tokens: u.tokens.into_iter().map(Secret::new).collect(),
            });
        }
        Ok(Config {
            source,
            server,
            tls,
            upstream,
            log: LogConfig {
                format,
                access_log: l.access_log.unwrap_or(true),
            },
            auth,
            policy,
            users,
        })
    }

    /// The effective configuration as TOML, secrets redacted (`check-config`).
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_else(|e| format!("# cannot render: {e}\n"))
    }
}

/// Validates `[policy]` and applies its defaults.
fn policy_config(
    p: RawPolicy,
    invalid: &dyn Fn(&'static str, String) -> ConfigError,
) -> Result<PolicyConfig, ConfigError> {
    let nets = |key: &'static str, v: Option<Vec<String>>| -> Result<Vec<IpNet>, ConfigError> {
        v.unwrap_or_default()
            .iter()
            .map(|t| parse_cidr(t).map_err(|m| invalid(key, m)))
            .collect()
    };
    let allow = nets("policy.allow", p.allow)?;
    let deny = nets("policy.deny", p.deny)?;
    let trusted_proxies = nets("policy.trusted_proxies", p.trusted_proxies)?;
    let forwarded_header = p
        .forwarded_header
        .unwrap_or_else(|| "x-forwarded-for".to_owned())
        .to_ascii_lowercase();
    if !matches!(forwarded_header.as_str(), "x-forwarded-for" | "forwarded") {
        return Err(invalid(
            "policy.forwarded_header",
            format!("{forwarded_header:?}: expected \"x-forwarded-for\" or \"forwarded\""),
        ));
    }
    let proxy_protocol = p.proxy_protocol.unwrap_or(false);
    if proxy_protocol && trusted_proxies.is_empty() {
        return Err(invalid(
            "policy.proxy_protocol",
            "needs policy.trusted_proxies: PROXY headers are only accepted from trusted proxies"
                .into(),
        ));
    }
    let positive = |key: &'static str, v: Option<u32>, default: u32| match v {
        Some(0) => Err(invalid(key, "must be at least 1".into())),
        Some(n) => Ok(n),
        None => Ok(default),
    };
    let r = p.rate_limit;
    let rate_limit = RateLimitConfig {
        requests_per_second: positive(
            "policy.rate_limit.requests_per_second",
            r.requests_per_second,
            10,
        )?,
        burst: positive("policy.rate_limit.burst", r.burst, 40)?,
        logged_in_requests_per_second: positive(
            "policy.rate_limit.logged_in_requests_per_second",
            r.logged_in_requests_per_second,
            200,
        )?,
        logged_in_burst: positive("policy.rate_limit.logged_in_burst", r.logged_in_burst, 1000)?,
        max_clients: match r.max_clients {
            Some(n) if n < 100 => {
                return Err(invalid(
                    "policy.rate_limit.max_clients",
                    "must be at least 100".into(),
                ))
            }
            Some(n) => n,
            None => 100_000,
        },
    };
    let l = p.lockout;
    let dur = |key: &'static str, v: Option<String>, default: Duration| match v {
        Some(t) => match parse_duration(&t) {
            Ok(d) if d.is_zero() => Err(invalid(key, "must be longer than 0s".into())),
            // Bounded so that `Instant + duration` can never overflow.
            Ok(d) if d > Duration::from_secs(30 * 24 * 3600) => {
                Err(invalid(key, "must be at most 30 days".into()))
            }
            Ok(d) => Ok(d),
            Err(m) => Err(invalid(key, m)),
        },
        None => Ok(default),
    };
    let lockout = LockoutConfig {
        address_threshold: positive("policy.lockout.address_threshold", l.address_threshold, 10)?,
        user_threshold: positive("policy.lockout.user_threshold", l.user_threshold, 50)?,
        duration: dur(
            "policy.lockout.duration",
            l.duration,
            Duration::from_secs(60),
        )?,
        address_max: dur(
            "policy.lockout.address_max",
            l.address_max,
            Duration::from_secs(3600),
        )?,
        user_max: dur(
            "policy.lockout.user_max",
            l.user_max,
            Duration::from_secs(300),
        )?,
        refusal_delay: match l.refusal_delay {
            Some(t) => match parse_duration(&t) {
                // 0s switches the delay off; more than 10s only makes
                // legitimate users wait without slowing a guesser further.
                Ok(d) if d > Duration::from_secs(10) => {
                    return Err(invalid(
                        "policy.lockout.refusal_delay",
                        "must be at most 10s".into(),
                    ))
                }
                Ok(d) => d,
                Err(m) => return Err(invalid("policy.lockout.refusal_delay", m)),
            },
            None => Duration::from_secs(1),
        },
    };
    if lockout.duration > lockout.address_max || lockout.duration > lockout.user_max {
        return Err(invalid(
            "policy.lockout.duration",
            "must not exceed policy.lockout.address_max or user_max".into(),
        ));
    }
    let max_connections_per_client = p.max_connections_per_client.unwrap_or(256);
    if max_connections_per_client == 0 {
        return Err(invalid(
            "policy.max_connections_per_client",
            "must be at least 1".into(),
        ));
    }
    Ok(PolicyConfig {
        allow,
        deny,
        trusted_proxies,
        forwarded_header,
        proxy_protocol,
        max_connections_per_client,
        rate_limit,
        lockout,
    })
}

/// `10.0.0.0/8`, `2001:db8::/32`, or a bare address (one host). Host bits
/// are masked off (`10.1.2.3/8` means `10.0.0.0/8`), as nginx does.
pub fn parse_cidr(text: &str) -> Result<IpNet, String> {
    let t = text.trim();
    let net = if t.contains('/') {
        t.parse::<IpNet>().map_err(|_| {
            format!("{text:?} is not a network (expected e.g. \"10.0.0.0/8\" or \"2001:db8::/32\")")
        })?
    } else {
        let ip: std::net::IpAddr = t
            .parse()
            .map_err(|_| format!("{text:?} is not an IP address or network"))?;
        IpNet::from(ip)
    };
    Ok(net.trunc())
}

/// Validates `[tls.acme]`; errors carry the dotted key. `has_http_listener`
/// picks the default challenge list: TLS-ALPN-01 always works on the HTTPS
/// listener; HTTP-01 only where a plain-HTTP listener exists.
fn acme_from_raw(
    raw: RawAcme,
    has_http_listener: bool,
) -> Result<AcmeConfig, (&'static str, String)> {
    let domains: Vec<String> = raw
        .domains
        .unwrap_or_default()
        .into_iter()
        .map(|d| d.trim().trim_end_matches('.').to_ascii_lowercase())
        .collect();
    if domains.is_empty() {
        return Err((
            "tls.acme.domains",
            "must be set when tls.mode = \"acme\"".into(),
        ));
    }
    for d in &domains {
        if d.starts_with("*.") {
            return Err((
                "tls.acme.domains",
                format!("{d:?}: wildcard names need DNS-01, which nbgate does not support"),
            ));
        }
        let valid_label = |l: &str| {
            (1..=63).contains(&l.len())
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        };
        if d.parse::<std::net::IpAddr>().is_ok()
            || d.len() > 253
            || !d.contains('.')
            || !d.split('.').all(valid_label)
        {
            return Err((
                "tls.acme.domains",
                format!("{d:?} is not a public DNS name"),
            ));
        }
    }
    let directory = match raw.directory.as_deref() {
        None | Some("letsencrypt") => LETSENCRYPT_DIRECTORY.to_owned(),
        Some("letsencrypt-staging") => LETSENCRYPT_STAGING_DIRECTORY.to_owned(),
        Some(url) if url.starts_with("https://") && url.len() > "https://".len() => url.to_owned(),
        Some(other) => {
            return Err((
                "tls.acme.directory",
                format!(
                "{other:?}: expected \"letsencrypt\", \"letsencrypt-staging\" or an https:// URL"
            ),
            ))
        }
    };
    let contact = match raw.contact {
        None => Vec::new(),
        Some(c) if c.contains('@') && !c.contains([' ', ',']) => {
            vec![if c.starts_with("mailto:") {
                c
            } else {
                format!("mailto:{c}")
            }]
        }
        Some(c) => return Err(("tls.acme.contact", format!("{c:?} is not an email address"))),
    };
    let eab = match (raw.eab_key_id, raw.eab_hmac_key_file) {
        (None, None) => None,
        (Some(key_id), Some(hmac_key_file)) => Some(AcmeEab {
            key_id,
            hmac_key_file,
        }),
        (Some(_), None) => {
            return Err((
                "tls.acme.eab_hmac_key_file",
                "must be set together with tls.acme.eab_key_id".into(),
            ))
        }
        (None, Some(_)) => {
            return Err((
                "tls.acme.eab_key_id",
                "must be set together with tls.acme.eab_hmac_key_file".into(),
            ))
        }
    };
    let challenges = match raw.challenges {
        None if has_http_listener => vec![AcmeChallenge::TlsAlpn01, AcmeChallenge::Http01],
        None => vec![AcmeChallenge::TlsAlpn01],
        Some(list) => {
            let mut out = Vec::new();
            for c in list {
                let kind = match c.as_str() {
                    "tls-alpn-01" => AcmeChallenge::TlsAlpn01,
                    "http-01" => AcmeChallenge::Http01,
                    "dns-01" => {
                        return Err((
                            "tls.acme.challenges",
                            "dns-01 is not supported; use \"tls-alpn-01\" and/or \"http-01\""
                                .into(),
                        ))
                    }
                    other => {
                        return Err((
                            "tls.acme.challenges",
                            format!(
                            "unknown challenge {other:?} (expected \"tls-alpn-01\" or \"http-01\")"
                        ),
                        ))
                    }
                };
                if !out.contains(&kind) {
                    out.push(kind);
                }
            }
            if out.is_empty() {
                return Err(("tls.acme.challenges", "must not be empty".into()));
            }
            out
        }
    };
    let key_type = match raw.key_type.as_deref() {
        None | Some("ecdsa-p256") => AcmeKeyType::EcdsaP256,
        Some("ecdsa-p384") => AcmeKeyType::EcdsaP384,
        Some(other) => {
            return Err((
                "tls.acme.key_type",
                format!("{other:?}: expected \"ecdsa-p256\" or \"ecdsa-p384\""),
            ))
        }
    };
    let renew_before = raw
        .renew_before
        .map(|t| parse_duration(&t))
        .transpose()
        .map_err(|m| ("tls.acme.renew_before", m))?;
    Ok(AcmeConfig {
        domains,
        directory,
        ca_bundle: raw.ca_bundle,
        contact,
        eab,
        challenges,
        key_type,
        renew_before,
    })
}

/// User names: 1-64 characters of letters, digits, `.`, `_`, `-`, `@`.
/// Kept narrow so a name is safe in logs and cookies.
pub fn valid_user_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'@'))
}

/// The dotted key assigned on `line` (1-based), e.g. `server.max_connections`,
/// so a type error names the key and not only its position.
fn key_at(text: &str, line: usize) -> Option<String> {
    let lines: Vec<&str> = text.lines().collect();
    let here = lines.get(line.checked_sub(1)?)?;
    let (key, _) = here.split_once('=')?;
    let key = key.trim();
    if key.is_empty() || key.starts_with('[') {
        return None;
    }
    let section = lines[..line - 1]
        .iter()
        .rev()
        .map(|l| l.trim())
        .find(|l| l.starts_with('['))
        .map(|l| l.trim_matches(|c| c == '[' || c == ']').trim().to_owned());
    Some(match section {
        Some(s) if !s.is_empty() => format!("{s}.{key}"),
        _ => key.to_owned(),
    })
}

fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before
        .rfind('\n')
        .map_or(before.len(), |i| before.len() - i - 1)
        + 1;
    (line, column)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load_str(text: &str) -> Result<Config, ConfigError> {
        let raw = Config::parse_raw(text, Path::new("test.toml"))?;
        Config::try_from_raw(raw, PathBuf::from("test.toml"), &Overrides::default())
    }

    #[test]
    fn empty_file_gives_documented_defaults() {
        let c = load_str("").expect("defaults are valid");
        assert_eq!(c.server.listen, vec!["0.0.0.0:8443".parse().expect("addr")]);
        assert_eq!(c.tls.mode, TlsMode::SelfSigned);
        assert!(!c.tls.hsts, "no HSTS with a self-signed certificate");
        assert_eq!(
            c.upstream.url,
            UpstreamAddr::Tcp {
                authority: "127.0.0.1:8888".into()
            }
        );
        assert_eq!(c.server.header_read_timeout, Duration::from_secs(10));
    }

    #[test]
    fn unknown_key_is_an_error_naming_file_line_and_key() {
        let e = load_str("[server]\nlisten = [\"127.0.0.1:1\"]\nlistne = 3\n")
            .expect_err("typo must fail");
        let msg = e.to_string();
        assert!(msg.starts_with("test.toml:3:"), "{msg}");
        assert!(msg.contains("listne"), "{msg}");
    }

    #[test]
    fn wrong_type_names_the_dotted_key() {
        let e = load_str("[server]\nmax_connections = \"many\"\n").expect_err("bad type");
        let msg = e.to_string();
        assert!(
            msg.contains("test.toml:2:") && msg.contains("server.max_connections"),
            "{msg}"
        );
    }

    #[test]
    fn bad_duration_names_the_key() {
        let e = load_str("[server]\nheader_read_timeout = \"ten seconds\"\n").expect_err("bad");
        assert!(e.to_string().contains("server.header_read_timeout"), "{e}");
    }

    #[test]
    fn sizes_and_durations_parse_in_human_form() {
        assert_eq!(parse_size("10MiB"), Ok(10 << 20));
        assert_eq!(parse_size("16KiB"), Ok(16384));
        assert_eq!(parse_size("512"), Ok(512));
        assert!(parse_size("10 parsecs").is_err());
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("1h 30m"), Ok(Duration::from_secs(5400)));
    }

    #[test]
    fn upstream_forms_are_parsed_and_https_refused() {
        assert_eq!(
            parse_upstream("http://127.0.0.1:8888/"),
            Ok(UpstreamAddr::Tcp {
                authority: "127.0.0.1:8888".into()
            })
        );
        assert_eq!(
            parse_upstream("unix:/run/j.sock"),
            Ok(UpstreamAddr::Unix {
                path: "/run/j.sock".into()
            })
        );
        assert!(parse_upstream("https://127.0.0.1:8888").is_err());
        assert!(parse_upstream("unix:relative.sock").is_err());
        assert!(parse_upstream("http://127.0.0.1:8888/lab").is_err());
    }

    #[test]
    fn policy_cidrs_are_parsed_masked_and_bad_ones_name_the_key() {
        let c = load_str("[policy]\nallow = [\"10.1.2.3/8\", \"2001:db8::/32\", \"192.0.2.7\"]\n")
            .expect("valid policy");
        let shown: Vec<String> = c.policy.allow.iter().map(ToString::to_string).collect();
        assert_eq!(shown, ["10.0.0.0/8", "2001:db8::/32", "192.0.2.7/32"]);
        assert!(c.policy.deny.is_empty() && !c.policy.proxy_protocol);
        let e = load_str("[policy]\ndeny = [\"10.0.0.0/33\"]\n").expect_err("bad prefix");
        let msg = e.to_string();
        assert!(
            msg.contains("policy.deny") && msg.contains("10.0.0.0/33"),
            "{msg}"
        );
        let e = load_str("[policy]\nallow = [\"example.com\"]\n").expect_err("not an address");
        assert!(e.to_string().contains("policy.allow"), "{e}");
    }

    #[test]
    fn proxy_protocol_without_trusted_proxies_is_refused() {
        let e = load_str("[policy]\nproxy_protocol = true\n").expect_err("no trusted proxies");
        assert!(e.to_string().contains("policy.trusted_proxies"), "{e}");
        let c = load_str("[policy]\nproxy_protocol = true\ntrusted_proxies = [\"127.0.0.1\"]\n")
            .expect("valid");
        assert!(c.policy.proxy_protocol);
    }

    #[test]
    fn rate_limit_and_lockout_defaults_and_bounds() {
        let c = load_str("").expect("defaults");
        assert_eq!(c.policy.rate_limit.requests_per_second, 10);
        assert!(c.policy.rate_limit.logged_in_burst > c.policy.rate_limit.burst);
        assert!(c.policy.lockout.user_threshold > c.policy.lockout.address_threshold);
        assert!(load_str("[policy.rate_limit]\nburst = 0\n").is_err());
        assert!(load_str("[policy.lockout]\nduration = \"2h\"\n").is_err());
        assert!(load_str("[policy.lockout]\nunknown = 1\n").is_err());
        // Bounded: Instant + duration must never overflow.
        assert!(load_str("[policy.lockout]\naddress_max = \"1000000000years\"\n").is_err());
        assert_eq!(c.policy.lockout.refusal_delay, Duration::from_secs(1));
        let off = load_str("[policy.lockout]\nrefusal_delay = \"0s\"\n").expect("0s");
        assert!(off.policy.lockout.refusal_delay.is_zero());
        let e = load_str("[policy.lockout]\nrefusal_delay = \"1m\"\n").expect_err("too long");
        assert!(
            e.to_string().contains("policy.lockout.refusal_delay"),
            "{e}"
        );
        let e = load_str("[policy]\nforwarded_header = \"x-real-ip\"\n").expect_err("header");
        assert!(e.to_string().contains("policy.forwarded_header"), "{e}");
        assert_eq!(
            load_str("").expect("defaults").policy.forwarded_header,
            "x-forwarded-for"
        );
    }

    #[test]
    fn files_mode_requires_cert_and_key() {
        let e = load_str("[tls]\nmode = \"files\"\n").expect_err("missing cert");
        assert!(e.to_string().contains("tls.cert_file"), "{e}");
    }

    #[test]
    fn acme_mode_without_domains_names_the_key() {
        let e = load_str("[tls]\nmode = \"acme\"\n").expect_err("no domains");
        assert!(
            e.to_string()
                .contains("tls.acme.domains: must be set when tls.mode = \"acme\""),
            "{e}"
        );
    }

    #[test]
    fn acme_defaults_are_letsencrypt_p256_and_challenges_follow_the_listeners() {
        let c = load_str("[tls]\nmode = \"acme\"\n[tls.acme]\ndomains = [\"NB.Example.org\"]\n")
            .expect("valid");
        let a = c.tls.acme.expect("acme section");
        assert_eq!(a.domains, ["nb.example.org"]);
        assert_eq!(a.directory, LETSENCRYPT_DIRECTORY);
        assert_eq!(a.key_type, AcmeKeyType::EcdsaP256);
        assert_eq!(a.challenges, [AcmeChallenge::TlsAlpn01]);
        assert!(c.tls.hsts, "a CA-issued certificate gets HSTS by default");
        let c = load_str(
            "[server]\nhttp_listen = [\"0.0.0.0:80\"]\n[tls]\nmode = \"acme\"\n\
             [tls.acme]\ndomains = [\"nb.example.org\"]\ncontact = \"ops@example.org\"\n\
             directory = \"letsencrypt-staging\"\n",
        )
        .expect("valid");
        let a = c.tls.acme.expect("acme section");
        assert_eq!(
            a.challenges,
            [AcmeChallenge::TlsAlpn01, AcmeChallenge::Http01]
        );
        assert_eq!(a.contact, ["mailto:ops@example.org"]);
        assert_eq!(a.directory, LETSENCRYPT_STAGING_DIRECTORY);
    }

    #[test]
    fn acme_rejects_wildcards_ip_addresses_dns01_and_half_an_eab() {
        let base = "[tls]\nmode = \"acme\"\n[tls.acme]\n";
        for (extra, key) in [
            ("domains = [\"*.example.org\"]", "tls.acme.domains"),
            ("domains = [\"10.0.0.1\"]", "tls.acme.domains"),
            (
                "domains = [\"a.example.org\"]\nchallenges = [\"dns-01\"]",
                "tls.acme.challenges",
            ),
            (
                "domains = [\"a.example.org\"]\neab_key_id = \"kid\"",
                "tls.acme.eab_hmac_key_file",
            ),
            (
                "domains = [\"a.example.org\"]\ndirectory = \"http://ca.example\"",
                "tls.acme.directory",
            ),
        ] {
            let e = load_str(&format!("{base}{extra}\n")).expect_err(extra);
            assert!(e.to_string().contains(key), "{extra}: {e}");
        }
        let e = load_str("[tls.acme]\ndomains = [\"a.example.org\"]\n").expect_err("wrong mode");
        assert!(e.to_string().contains("tls.acme"), "{e}");
    }

    #[test]
    fn upstream_tokens_are_limited_to_characters_no_page_escapes() {
        assert!(valid_upstream_token("0123abcdef"));
        assert!(valid_upstream_token("base64url-_token~x.y"));
        for bad in ["", "a\"b", "a<b", "a&b", "a+b", "a/b", "a b", "a%20"] {
            assert!(!valid_upstream_token(bad), "{bad:?}");
        }
        std::env::set_var("NBGATE_TEST_TOKEN_CHARS", "tok/en");
        let err =
            load_str("[upstream]\ntoken_env = \"NBGATE_TEST_TOKEN_CHARS\"\n").expect_err("refused");
        assert!(err.to_string().contains("letters, digits"), "{err}");
    }

    #[test]
    fn check_config_output_redacts_the_token() {
        std::env::set_var("NBGATE_TEST_TOKEN_CONFIG", "s3cr3t-token");
        let c = load_str("[upstream]\ntoken_env = \"NBGATE_TEST_TOKEN_CONFIG\"\n").expect("valid");
        let out = c.to_toml();
        assert!(!out.contains("s3cr3t-token"), "{out}");
        assert!(out.contains("<redacted>"), "{out}");
        assert!(!format!("{c:?}").contains("s3cr3t-token"));
    }

    #[test]
    fn example_config_parses() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/nbgate.example.toml");
        Config::load(Some(&path), &Overrides::default()).expect("example is valid");
    }
}
