//! `[upstream]`: where Jupyter listens, its token, the header that names
//! the user to a JupyterHub, and the timeouts and pool sizes of the
//! connection to it.

use std::fmt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http::HeaderName;
use serde::Serialize;

use super::load::read_upstream_token;
use super::raw::RawUpstream;
use super::values::{parse_upstream, ser_duration};
use super::{ConfigError, Ctx, Overrides, Secret};

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
    /// The request header that carries the authenticated user to the
    /// upstream (`X-Nbgate-User` for a JupyterHub whose authenticator
    /// trusts it). Off by default: then nbgate names no user upstream.
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "ser_header_name"
    )]
    pub identity_header: Option<HeaderName>,
    /// `nbgate run` only: the per-start secret that signs the identity
    /// header Jupyter's nbgate provider verifies (`jupyter::identity`).
    /// Never read from the file.
    #[serde(skip)]
    pub identity: Option<IdentityKey>,
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

/// The identity header's secret and whether Jupyter verifies the header.
///
/// Why a flag beside the secret: nbgate signs requests instead of
/// presenting Jupyter's token only once Jupyter has shown that it uses
/// nbgate's provider (`supervisor` probes at start); until then, and for
/// good if the provider is not in use, the token goes as before. Clones
/// share the flag, so a configuration reloaded from the running one keeps it.
#[derive(Debug, Clone)]
pub struct IdentityKey {
    secret: Secret,
    confirmed: Arc<AtomicBool>,
}

impl IdentityKey {
    pub fn new(secret: Secret) -> Self {
        IdentityKey {
            secret,
            confirmed: Arc::new(AtomicBool::new(false)),
        }
    }

    pub fn secret(&self) -> &str {
        self.secret.expose()
    }

    /// Jupyter has shown that it verifies the header.
    pub fn confirm(&self) {
        self.confirmed.store(true, Ordering::Release);
    }

    pub fn confirmed(&self) -> bool {
        self.confirmed.load(Ordering::Acquire)
    }
}

/// Validates `[upstream]` and reads the token it names; `--upstream` wins
/// over the file.
pub(super) fn validate(
    u: RawUpstream,
    overrides: &Overrides,
    ctx: &Ctx,
) -> Result<UpstreamConfig, ConfigError> {
    let url_text = overrides
        .upstream
        .clone()
        .or(u.url)
        .unwrap_or_else(|| "http://127.0.0.1:8888".to_owned());
    let url = parse_upstream(&url_text).map_err(|m| ctx.invalid("upstream.url", m))?;
    if u.token_file.is_some() && u.token_env.is_some() {
        return Err(ctx.invalid(
            "upstream.token_file",
            "set either token_file or token_env, not both".into(),
        ));
    }
    let token = read_upstream_token(u.token_file.as_deref(), u.token_env.as_deref(), ctx)?;
    let identity_header = u
        .identity_header
        .map(|name| {
            parse_identity_header(&name).map_err(|m| ctx.invalid("upstream.identity_header", m))
        })
        .transpose()?;
    Ok(UpstreamConfig {
        url,
        token_file: u.token_file,
        token_env: u.token_env,
        token: token.map(Secret::new),
        identity_header,
        identity: None,
        connect_timeout: ctx.duration(
            "upstream.connect_timeout",
            u.connect_timeout,
            Duration::from_secs(5),
        )?,
        // Minutes, not nginx's 60 s: saving a large notebook or an
        // nbconvert export can take longer than a minute.
        response_timeout: ctx.duration(
            "upstream.response_timeout",
            u.response_timeout,
            Duration::from_secs(300),
        )?,
        // Far above Jupyter's 30 s WebSocket pings: nginx's 60 s default
        // is a known cause of dropped kernels.
        websocket_idle_timeout: ctx.duration(
            "upstream.websocket_idle_timeout",
            u.websocket_idle_timeout,
            Duration::from_secs(3600),
        )?,
        pool_idle_timeout: ctx.duration(
            "upstream.pool_idle_timeout",
            u.pool_idle_timeout,
            Duration::from_secs(60),
        )?,
        pool_max_idle: u.pool_max_idle.unwrap_or(64),
    })
}

/// Headers `upstream.identity_header` must not be: each already means
/// something to a proxy, to Jupyter(Hub) or to a browser, and nbgate sets,
/// strips or forwards it by its own rules (hop-by-hop removal, forwarding
/// headers, `Host`/`Origin` presentation, the injected token, WebSocket
/// handshakes). Naming one of them would let that rule and the identity
/// rule fight over the same header.
const RESERVED_HEADERS: &[&str] = &[
    "accept",
    "accept-encoding",
    "accept-language",
    "authorization",
    "cache-control",
    "connection",
    "content-encoding",
    "content-length",
    "content-type",
    "cookie",
    "expect",
    "forwarded",
    "host",
    "keep-alive",
    "origin",
    "proxy-authenticate",
    "proxy-authorization",
    "proxy-connection",
    "range",
    "referer",
    "set-cookie",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "user-agent",
    "via",
    "x-forwarded-for",
    "x-forwarded-host",
    "x-forwarded-port",
    "x-forwarded-proto",
    "x-real-ip",
    "x-xsrftoken",
    "x-csrftoken",
];

/// `upstream.identity_header`: letters, digits and `-` only (no `_` or
/// `.`: servers that fold those into `-` would read a client's
/// `X_Nbgate_User` as this header; nbgate strips such spellings, and a name
/// without them keeps the rule simple), not a reserved header nor a
/// `Sec-` one (browser-controlled, WebSocket handshakes).
fn parse_identity_header(name: &str) -> Result<HeaderName, String> {
    let legal = !name.is_empty()
        && name.len() <= 64
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    if !legal {
        return Err(format!(
            "{name:?} is not a header name nbgate accepts here: use letters, digits and '-', e.g. \"X-Nbgate-User\""
        ));
    }
    let lower = name.to_ascii_lowercase();
    if RESERVED_HEADERS.contains(&lower.as_str()) || lower.starts_with("sec-") {
        return Err(format!(
            "{name:?} already has a meaning to proxies, Jupyter or browsers: use a header of its own, e.g. \"X-Nbgate-User\""
        ));
    }
    HeaderName::from_bytes(lower.as_bytes()).map_err(|e| format!("{name:?}: {e}"))
}

fn ser_header_name<S: serde::Serializer>(h: &Option<HeaderName>, s: S) -> Result<S::Ok, S::Error> {
    match h {
        Some(h) => s.serialize_str(h.as_str()),
        None => s.serialize_none(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_header_is_a_custom_name_never_a_well_known_one() {
        assert_eq!(
            parse_identity_header("X-Nbgate-User")
                .expect("valid")
                .as_str(),
            "x-nbgate-user"
        );
        assert!(parse_identity_header("Remote-User").is_ok());
        for bad in [
            "Host",
            "cookie",
            "AUTHORIZATION",
            "Connection",
            "Transfer-Encoding",
            "X-Forwarded-For",
            "Sec-WebSocket-Key",
            "x_nbgate_user",
            "x.nbgate.user",
            "X-Nbgate-User ",
            "",
            "-x",
            "x:y",
        ] {
            assert!(parse_identity_header(bad).is_err(), "{bad:?}");
        }
    }
}
