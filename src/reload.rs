//! Live reload: SIGHUP (`systemctl reload`) re-reads the whole
//! configuration and puts it in force without dropping anything.
//!
//! A reload runs the same loading and validation as a start (the `Source`
//! `main` hands over reads the file, the environment and the command-line
//! overrides exactly as at start), then loads the users and the certificate
//! the new configuration names. Only when every step succeeded does anything
//! change: the request path swaps to the new configuration at once
//! (`proxy::Gateway::reload`), the certificate is replaced, the certificate
//! maintenance restarts if the TLS settings changed, and the log level
//! (`log.level`, unless `RUST_LOG` is set) follows. A file that fails validation is refused with its error logged
//! (file, line, key) and the running configuration stays whole.
//!
//! What survives: every connection, request, upload, download and WebSocket
//! tunnel (they keep the configuration they started with), sessions,
//! lockout counts and locks, rate-limit buckets whose quotas did not change,
//! the upstream pool when `[upstream]` did not change. What a reload ends:
//! the sessions and tunnels of a user it removed or whose password changed,
//! the token tunnels of a user whose tokens changed (`Gateway::reload`).
//!
//! Settings that only a restart can change (listen addresses, the state
//! directory, the connection cap, the log format, the admin listener,
//! switching into ACME mode)
//! are named in a warning and keep their running value; everything else in
//! the new file is in force.
//!
//! systemd hears `RELOADING=1` (with `MONOTONIC_USEC`) when the reload
//! starts and `READY=1` with the outcome in `STATUS=` when it ends.

use std::sync::Arc;

use rustls::sign::CertifiedKey;
use tokio::signal::unix::Signal;
use tokio_util::sync::CancellationToken;

use crate::auth::{AuthError, Authenticator, UserChanges};
use crate::config::{Config, TlsMode};
use crate::proxy::Gateway;
use crate::telemetry::Chain;
use crate::tls::{self, CertResolver, TlsError};

/// An error reading the configuration again (a `ConfigError`, or what the
/// caller adds, such as `nbgate run`'s checks).
pub type LoadError = Box<dyn std::error::Error + Send + Sync>;

/// Reads the configuration again, exactly as at start.
pub type Source = Arc<dyn Fn() -> Result<Config, LoadError> + Send + Sync>;

/// Why a reload was refused. Nothing changed.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("reload refused")]
    Config(#[source] LoadError),
    #[error("reload refused")]
    Users(#[source] AuthError),
    #[error("reload refused")]
    Tls(#[source] TlsError),
    #[error("reload refused: the reload task ended unexpectedly")]
    Aborted,
}

/// Settings a running server cannot change: their keys in the TOML file.
/// `audit.file` stands for the file's settings (`file`, `max_size`,
/// `keep`): its writer thread opened the file at start. `audit.code`,
/// `code_max_bytes` and `terminal_input` apply to tunnels opened after a
/// reload.
const RESTART_ONLY: [&str; 7] = [
    "server.listen",
    "server.http_listen",
    "server.state_dir",
    "server.max_connections",
    "log.format",
    "admin",
    "audit.file",
];

/// Waits for SIGHUP and reloads; owns the certificate maintenance, which a
/// reload may restart.
pub struct Reloader {
    source: Source,
    hup: Option<Signal>,
    maintenance: tls::Maintenance,
}

impl Reloader {
    /// Registers SIGHUP and starts certificate maintenance.
    ///
    /// Call before the listeners serve: SIGHUP's default action is to
    /// terminate, so a `systemctl reload` sent right after start must
    /// already be caught (seen once in CI under load when the handler was
    /// registered later).
    pub fn start(source: Source, config: &Arc<Config>, resolver: &Arc<CertResolver>) -> Reloader {
        let hup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
            Ok(hup) => Some(hup),
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGHUP: no configuration reloads");
                None
            }
        };
        Reloader {
            source,
            hup,
            maintenance: tls::Maintenance::start(config, resolver),
        }
    }

    /// Reloads on every SIGHUP until `stop` is cancelled.
    pub async fn run(mut self, gateway: Arc<Gateway>, stop: CancellationToken) {
        let Some(mut hup) = self.hup.take() else {
            stop.cancelled().await;
            return;
        };
        loop {
            tokio::select! {
                got = hup.recv() => if got.is_none() { return },
                () = stop.cancelled() => return,
            }
            crate::systemd::reloading();
            let result = self.reload(&gateway).await;
            crate::metrics::reload_finished(result.is_ok());
            if let Err(e) = &result {
                tracing::error!(
                    error = %Chain(e),
                    "configuration not reloaded; the running configuration stays in force"
                );
            }
            crate::systemd::reloaded(result.map_err(|e| Chain(&e).to_string()));
        }
    }

    /// One reload: prepare everything off the workers (reading files,
    /// hashing a changed password, generating a key), then apply it all.
    ///
    /// # Errors
    /// The first step that failed; nothing changed then.
    pub async fn reload(&mut self, gateway: &Gateway) -> Result<(), ReloadError> {
        let old = gateway.live();
        let source = Arc::clone(&self.source);
        let resolver = Arc::clone(self.maintenance.resolver());
        let (old_config, old_auth) = (Arc::clone(&old.config), Arc::clone(&old.auth));
        drop(old);
        let prepared = tokio::task::spawn_blocking(move || {
            prepare(&*source, &old_config, &old_auth, &resolver)
        })
        .await
        .map_err(|_| ReloadError::Aborted)??;
        self.apply(gateway, prepared);
        Ok(())
    }

    fn apply(&mut self, gateway: &Gateway, p: Prepared) {
        for key in &p.restart_only {
            tracing::warn!(
                "{key} changed in {}: it takes effect at the next restart; \
                 the running value stays",
                p.config.source.display()
            );
        }
        let config = Arc::new(p.config);
        gateway.reload(Arc::clone(&config), Arc::new(p.auth), &p.changes);
        match p.tls {
            TlsStep::Keep => {}
            TlsStep::Replace { key, restart } => {
                tracing::info!(
                    trigger = "sighup",
                    serial = %tls::serial_hex(&key),
                    sha256_fingerprint = %tls::fingerprint(&key),
                    "reloaded certificate"
                );
                self.maintenance.resolver().replace(key);
                if restart {
                    self.maintenance.restart(&config);
                }
            }
            TlsStep::Restart => self.maintenance.restart(&config),
        }
        // `log.level` was validated with the file; `RUST_LOG`, when set, wins.
        if let Err(e) = crate::telemetry::set_level(&config.log.level) {
            tracing::warn!(error = %Chain(&e), "the new log level is not in force");
        }
        let c = &p.changes;
        tracing::info!(
            file = %config.source.display(),
            users_added = ?c.added,
            users_removed = ?c.removed,
            password_changed = ?c.password_changed,
            tokens_changed = ?c.tokens_changed,
            "configuration reloaded"
        );
    }
}

/// Everything a reload puts in force, prepared before anything changes.
struct Prepared {
    config: Config,
    auth: Authenticator,
    changes: UserChanges,
    tls: TlsStep,
    /// Keys of `RESTART_ONLY` (and `tls.mode`) that changed; their running
    /// values were put back into `config`.
    restart_only: Vec<&'static str>,
}

/// What a reload does to the certificate.
enum TlsStep {
    Keep,
    /// Serve `key` from now on; `restart`: the maintenance task too.
    Replace {
        key: Arc<CertifiedKey>,
        restart: bool,
    },
    /// ACME settings changed: the task orders for the new ones, and the
    /// current certificate is served until the new one is issued.
    Restart,
}

fn prepare(
    source: &(dyn Fn() -> Result<Config, LoadError> + Send + Sync),
    old: &Config,
    old_auth: &Authenticator,
    resolver: &CertResolver,
) -> Result<Prepared, ReloadError> {
    let mut config = source().map_err(ReloadError::Config)?;
    let mut restart_only = keep_restart_only(old, &mut config);
    let tls = tls_step(old, &mut config, resolver, &mut restart_only)?;
    let (auth, changes) = old_auth.reloaded(&config).map_err(ReloadError::Users)?;
    Ok(Prepared {
        config,
        auth,
        changes,
        tls,
        restart_only,
    })
}

/// Puts the running values of the settings only a restart can change back
/// into `new`, and names those that differed.
fn keep_restart_only(old: &Config, new: &mut Config) -> Vec<&'static str> {
    let mut changed = Vec::new();
    let (o, n) = (&old.server, &mut new.server);
    if o.listen != n.listen {
        changed.push(RESTART_ONLY[0]);
        n.listen.clone_from(&o.listen);
    }
    if o.http_listen != n.http_listen {
        changed.push(RESTART_ONLY[1]);
        n.http_listen.clone_from(&o.http_listen);
    }
    if o.state_dir != n.state_dir {
        changed.push(RESTART_ONLY[2]);
        n.state_dir.clone_from(&o.state_dir);
    }
    if o.max_connections != n.max_connections {
        changed.push(RESTART_ONLY[3]);
        n.max_connections = o.max_connections;
    }
    if old.log.format != new.log.format {
        changed.push(RESTART_ONLY[4]);
        new.log.format = old.log.format;
    }
    // The admin listener was bound, and its token read, at start.
    let admin = |c: &Config| {
        c.admin.as_ref().map(|a| {
            (
                a.listen,
                a.token_file.clone(),
                a.token.as_ref().map(|t| t.expose().to_owned()),
            )
        })
    };
    if admin(old) != admin(new) {
        changed.push(RESTART_ONLY[5]);
        new.admin.clone_from(&old.admin);
    }
    let (o, n) = (&old.audit, &mut new.audit);
    if (&o.file, o.max_size, o.keep) != (&n.file, n.max_size, n.keep) {
        changed.push(RESTART_ONLY[6]);
        n.file.clone_from(&o.file);
        n.max_size = o.max_size;
        n.keep = o.keep;
    }
    changed
}

/// Decides (and loads) what the certificate becomes.
///
/// Files mode re-reads its files on every reload, changed settings or not
/// (a SIGHUP is how many tools announce a renewed certificate). Self-signed
/// mode loads or makes the certificate when its settings or names changed.
/// ACME mode restarts its task when its settings changed; switching into
/// it needs a restart (the listeners answer ACME challenges only when
/// started in that mode), so `new` keeps the running TLS settings then.
fn tls_step(
    old: &Config,
    new: &mut Config,
    resolver: &CertResolver,
    restart_only: &mut Vec<&'static str>,
) -> Result<TlsStep, ReloadError> {
    if new.tls.mode == TlsMode::Acme && resolver.challenges().is_none() {
        restart_only.push("tls.mode");
        new.tls = old.tls.clone();
        new.server.server_names.clone_from(&old.server.server_names);
    }
    let changed = section(&old.tls) != section(&new.tls)
        || old.server.server_names != new.server.server_names;
    let step = match new.tls.mode {
        TlsMode::Files => TlsStep::Replace {
            key: tls::load_certificate(new).map_err(ReloadError::Tls)?,
            restart: changed,
        },
        TlsMode::SelfSigned if changed => TlsStep::Replace {
            key: tls::load_certificate(new).map_err(ReloadError::Tls)?,
            restart: true,
        },
        TlsMode::SelfSigned => TlsStep::Keep,
        TlsMode::Acme if old.tls.mode != TlsMode::Acme => TlsStep::Replace {
            key: tls::acme::initial_certificate(new).map_err(ReloadError::Tls)?,
            restart: true,
        },
        TlsMode::Acme if changed => TlsStep::Restart,
        TlsMode::Acme => TlsStep::Keep,
    };
    Ok(step)
}

/// A configuration section as TOML, to compare two of them whole.
fn section<T: serde::Serialize>(s: &T) -> Option<toml::Value> {
    toml::Value::try_from(s).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(text: &str) -> Config {
        Config::from_text(text, std::path::Path::new("t.toml")).expect("config")
    }

    #[test]
    fn restart_only_settings_keep_their_running_value_and_are_named() {
        let old = config("[server]\nlisten = [\"127.0.0.1:8443\"]\nmax_connections = 100\n");
        let mut new = config(
            "[server]\nlisten = [\"127.0.0.1:9443\"]\nmax_connections = 200\n\
             [log]\nformat = \"json\"\n\
             [audit]\nfile = \"/var/log/nbgate/audit.jsonl\"\ncode = true\n",
        );
        let changed = keep_restart_only(&old, &mut new);
        assert_eq!(
            changed,
            [
                "server.listen",
                "server.max_connections",
                "log.format",
                "audit.file"
            ]
        );
        assert_eq!(new.audit.file, None);
        assert!(new.audit.code, "audit.code applies at a reload");
        assert_eq!(new.server.listen, old.server.listen);
        assert_eq!(new.server.max_connections, 100);
        assert_eq!(new.log.format, old.log.format);
    }

    #[test]
    fn nothing_is_named_when_nothing_restart_only_changed() {
        let old = config("[policy]\nallow = [\"127.0.0.1/32\"]\n");
        let mut new = config("[policy]\nallow = [\"10.0.0.0/8\"]\n");
        assert!(keep_restart_only(&old, &mut new).is_empty());
    }
}
