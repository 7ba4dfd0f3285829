//! Logging setup. Events go to stderr (journald picks them up under
//! systemd), filtered `RUST_LOG`-style, as text or JSON lines.
//!
//! Targets: `nbgate::access` (one event per request and per WebSocket
//! tunnel, with the user and how they authenticated), `nbgate::audit`
//! (logins, lockouts, token use, and the operations `audit` records), the
//! rest is operational. Secrets never reach a log event: values that could hold
//! them (query strings, cookies, authorization headers) are never logged.

use std::io::IsTerminal;
use std::sync::OnceLock;

use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// Puts a new filter in force; set once by `init`.
type SetFilter = Box<dyn Fn(EnvFilter) -> Result<(), String> + Send + Sync>;

static SET_FILTER: OnceLock<SetFilter> = OnceLock::new();

/// Why a log level could not be put in force.
#[derive(Debug, thiserror::Error)]
pub enum LevelError {
    #[error("invalid log level {0:?}")]
    Invalid(String, #[source] tracing_subscriber::filter::ParseError),
    #[error("cannot change the log level: {0}")]
    Reload(String),
}

/// The filter for `level` (an `EnvFilter` directive string, `log.level`),
/// or for `RUST_LOG` when that is set (and not empty): an operator's
/// `RUST_LOG` wins over the configuration, at start and at every reload.
fn filter(level: &str) -> Result<EnvFilter, LevelError> {
    let env = std::env::var("RUST_LOG")
        .ok()
        .filter(|v| !v.trim().is_empty());
    let directives = env.as_deref().unwrap_or(level);
    let base = match (EnvFilter::try_new(directives), &env) {
        (Ok(f), _) => f,
        // A malformed RUST_LOG: the configured level instead.
        (Err(_), Some(_)) => {
            EnvFilter::try_new(level).map_err(|e| LevelError::Invalid(level.to_owned(), e))?
        }
        (Err(e), None) => return Err(LevelError::Invalid(level.to_owned(), e)),
    };
    // rustls warns about what any client can trigger at will (an IP
    // address as SNI, as wrk and many scripts send, is one WARN line per
    // handshake): a client must not be able to flood the log. Shown only
    // when the directives name rustls explicitly.
    let names_rustls = directives.contains("rustls");
    Ok(if names_rustls {
        base
    } else {
        base.add_directive("rustls=error".parse().expect("a valid directive"))
    })
}

/// Installs the global subscriber at `level` (`RUST_LOG` wins when set);
/// an invalid level falls back to `info` (configuration validation has
/// already refused one).
pub fn init(format: LogFormat, level: &str) {
    let filter = filter(level).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    let result = match format {
        LogFormat::Text => {
            let builder = builder.with_filter_reloading();
            let handle = builder.reload_handle();
            let set: SetFilter = Box::new(move |f| handle.reload(f).map_err(|e| e.to_string()));
            builder.try_init().map(|()| set)
        }
        LogFormat::Json => {
            let builder = builder.json().flatten_event(true).with_filter_reloading();
            let handle = builder.reload_handle();
            let set: SetFilter = Box::new(move |f| handle.reload(f).map_err(|e| e.to_string()));
            builder.try_init().map(|()| set)
        }
    };
    // A second init (tests calling into the library) keeps the first one.
    if let Ok(set) = result {
        let _ = SET_FILTER.set(set);
    }
}

/// Puts `level` in force for every later event (a configuration reload).
///
/// # Errors
/// An invalid level (nothing changes then).
pub fn set_level(level: &str) -> Result<(), LevelError> {
    let filter = filter(level)?;
    match SET_FILTER.get() {
        Some(set) => set(filter).map_err(LevelError::Reload),
        None => Ok(()),
    }
}

/// An error and its causes on one line, `what failed: why: root cause`:
/// how nbgate prints every error, in logs (`error = %Chain(&e)`) and as the
/// fatal line `main` prints. nbgate's error types name their cause through
/// `source()` and never repeat it in their own message; some library errors
/// do, so a cause whose text the line already holds is not said again.
pub struct Chain<'a>(pub &'a (dyn std::error::Error + 'static));

impl std::fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut line = self.0.to_string();
        let mut cause = self.0.source();
        while let Some(e) = cause {
            let text = e.to_string();
            if !text.is_empty() && !line.contains(&text) {
                line.push_str(": ");
                line.push_str(&text);
            }
            cause = e.source();
        }
        f.write_str(&line)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("{path}: cannot read")]
    struct ReadError {
        path: &'static str,
        #[source]
        source: std::io::Error,
    }

    #[test]
    fn a_chain_names_each_cause_once() {
        let e = ReadError {
            path: "/etc/nbgate.toml",
            source: std::io::Error::from(std::io::ErrorKind::PermissionDenied),
        };
        assert_eq!(
            Chain(&e).to_string(),
            "/etc/nbgate.toml: cannot read: permission denied"
        );
    }

    #[test]
    fn a_cause_a_library_error_already_says_is_not_repeated() {
        #[derive(Debug, thiserror::Error)]
        #[error("request failed: {0}")]
        struct Repeats(#[source] std::io::Error);
        let e = Repeats(std::io::Error::from(std::io::ErrorKind::TimedOut));
        assert_eq!(Chain(&e).to_string(), "request failed: timed out");
    }
}
