//! `[server]`: listeners, names, the state directory and the limits every
//! connection is held to.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;

use super::load::default_state_dir;
use super::raw::RawServer;
use super::values::{parse_listen, parse_size, ser_duration, ser_size};
use super::{ConfigError, Ctx, Overrides};

/// The HTTPS port used when no listener is configured. 8443 rather than 443
/// so that nbgate runs unprivileged out of the box; systemd socket or
/// `CAP_NET_BIND_SERVICE` moves it to 443.
pub const DEFAULT_HTTPS_PORT: u16 = 8443;

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
    /// How long a client may take nothing of what nbgate sends it before
    /// its connection is closed (`server::send_deadline`).
    #[serde(serialize_with = "ser_duration")]
    pub send_timeout: Duration,
    #[serde(serialize_with = "ser_size")]
    pub max_header_bytes: usize,
    pub max_headers: usize,
    #[serde(serialize_with = "ser_duration")]
    pub shutdown_grace: Duration,
}

/// Validates `[server]`; `--listen` and `--state-dir` win over the file.
pub(super) fn validate(
    s: RawServer,
    overrides: &Overrides,
    ctx: &Ctx,
) -> Result<ServerConfig, ConfigError> {
    let listen_text = match &overrides.listen {
        Some(l) => vec![l.clone()],
        None => s
            .listen
            .unwrap_or_else(|| vec![format!("0.0.0.0:{DEFAULT_HTTPS_PORT}")]),
    };
    if listen_text.is_empty() {
        return Err(ctx.invalid(
            "server.listen",
            "at least one HTTPS listener is required".into(),
        ));
    }
    let listen = listen_text
        .iter()
        .map(|l| parse_listen(l))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|m| ctx.invalid("server.listen", m))?;
    let http_listen = s
        .http_listen
        .unwrap_or_default()
        .iter()
        .map(|l| parse_listen(l))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|m| ctx.invalid("server.http_listen", m))?;
    let server_names = s.server_names.unwrap_or_default();
    for name in &server_names {
        if name.is_empty() || name.contains(['/', ':', ' ', '*']) {
            return Err(ctx.invalid(
                "server.server_names",
                format!("{name:?} is not a host name"),
            ));
        }
    }
    let max_header_bytes = match s.max_header_bytes {
        Some(t) => parse_size(&t).map_err(|m| ctx.invalid("server.max_header_bytes", m))?,
        None => 32 * 1024,
    };
    if !(1024..=1 << 20).contains(&max_header_bytes) {
        return Err(ctx.invalid(
            "server.max_header_bytes",
            "must be between 1KiB and 1MiB".into(),
        ));
    }
    let max_connections = s.max_connections.unwrap_or(4096);
    if max_connections == 0 {
        return Err(ctx.invalid("server.max_connections", "must be at least 1".into()));
    }
    let max_headers = s.max_headers.unwrap_or(100);
    if max_headers == 0 {
        return Err(ctx.invalid("server.max_headers", "must be at least 1".into()));
    }
    let send_timeout = ctx.duration(
        "server.send_timeout",
        s.send_timeout,
        Duration::from_secs(60),
    )?;
    // Zero would time out every write the socket cannot take at once,
    // cutting off any download larger than the send buffer.
    if send_timeout < Duration::from_secs(1) {
        return Err(ctx.invalid("server.send_timeout", "must be at least 1s".into()));
    }
    Ok(ServerConfig {
        listen,
        http_listen,
        server_names,
        state_dir: overrides
            .state_dir
            .clone()
            .or(s.state_dir)
            .unwrap_or_else(default_state_dir),
        max_connections,
        header_read_timeout: ctx.duration(
            "server.header_read_timeout",
            s.header_read_timeout,
            Duration::from_secs(10),
        )?,
        tls_handshake_timeout: ctx.duration(
            "server.tls_handshake_timeout",
            s.tls_handshake_timeout,
            Duration::from_secs(10),
        )?,
        send_timeout,
        max_header_bytes,
        max_headers,
        shutdown_grace: ctx.duration(
            "server.shutdown_grace",
            s.shutdown_grace,
            Duration::from_secs(30),
        )?,
    })
}
