//! `[admin]`: the listener for `/metrics` (Prometheus) and `/health`. Off
//! unless `listen` is set.
//!
//! Every listener reachable from another host is TLS (nbgate's rule), and
//! metrics tell an attacker a lot (who logs in when, lockouts, upstream
//! state). So: a loopback address is served as plain HTTP without a token
//! (only local processes reach it, as with a Prometheus agent beside
//! nbgate); any other address is refused unless `token_file` is set, and
//! with a token the listener speaks TLS with nbgate's own certificate and
//! wants `Authorization: Bearer <token>` on every request. A token on a
//! loopback address turns TLS and the token check on there too.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Serialize;

use super::raw::RawAdmin;
use super::server::ServerConfig;
use super::values::parse_listen;
use super::{ConfigError, Ctx, Secret};

/// The shortest admin token accepted: 16 characters of a generated token
/// (`openssl rand -hex 16` gives 32) are beyond guessing over the network.
pub const MIN_ADMIN_TOKEN_LEN: usize = 16;

#[derive(Debug, Clone, Serialize)]
pub struct AdminConfig {
    pub listen: SocketAddr,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_file: Option<PathBuf>,
    /// The bearer token read from `token_file`: set exactly when the
    /// listener serves TLS and checks it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<Secret>,
}

impl AdminConfig {
    /// Whether the admin listener speaks TLS and wants the bearer token.
    pub fn tls(&self) -> bool {
        self.token.is_some()
    }
}

/// Validates `[admin]`; `server` for listener clashes.
pub(super) fn validate(
    a: RawAdmin,
    server: &ServerConfig,
    ctx: &Ctx,
) -> Result<Option<AdminConfig>, ConfigError> {
    let Some(listen) = a.listen else {
        if a.token_file.is_some() {
            return Err(ctx.invalid("admin.token_file", "only used with admin.listen".into()));
        }
        return Ok(None);
    };
    let listen = parse_listen(&listen).map_err(|m| ctx.invalid("admin.listen", m))?;
    if server.listen.iter().chain(&server.http_listen).any(|l| {
        // Port 0 (any free port, as tests use) never clashes.
        listen.port() != 0
            && l.port() == listen.port()
            && (l.ip() == listen.ip() || l.ip().is_unspecified() || listen.ip().is_unspecified())
    }) {
        return Err(ctx.invalid(
            "admin.listen",
            format!("{listen} is already a server.listen or server.http_listen address"),
        ));
    }
    let token = match &a.token_file {
        Some(f) => {
            let text = std::fs::read_to_string(f).map_err(|e| {
                ctx.invalid(
                    "admin.token_file",
                    format!("cannot read {}: {e}", f.display()),
                )
            })?;
            let token = text.trim().to_owned();
            if token.len() < MIN_ADMIN_TOKEN_LEN || !token.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(ctx.invalid(
                    "admin.token_file",
                    format!(
                        "the token must be at least {MIN_ADMIN_TOKEN_LEN} visible ASCII \
                         characters (e.g. `openssl rand -hex 32`)"
                    ),
                ));
            }
            Some(Secret::new(token))
        }
        None => None,
    };
    // Security: metrics off-host without TLS and a token would tell anyone
    // who logs in and when, and break "every listener is TLS".
    if token.is_none() && !listen.ip().is_loopback() {
        return Err(ctx.invalid(
            "admin.listen",
            format!(
                "{listen} is not a loopback address: set admin.token_file to serve it over TLS \
                 with a bearer token, or listen on 127.0.0.1 or [::1]"
            ),
        ));
    }
    Ok(Some(AdminConfig {
        listen,
        token_file: a.token_file,
        token,
    }))
}
