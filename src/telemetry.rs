//! Logging setup. Events go to stderr (journald picks them up under
//! systemd), filtered `RUST_LOG`-style, as text or JSON lines.
//!
//! Targets: `nbgate::access` (one event per request and per WebSocket
//! tunnel), `nbgate::audit` (logins, lockouts, token use), the rest is
//! operational. Secrets never reach a log event: values that could hold
//! them (query strings, cookies, authorization headers) are never logged.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// Installs the global subscriber. `RUST_LOG` wins over `level` (`log.level`,
/// validated at config load).
pub fn init(format: LogFormat, level: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level));
    // rustls warns about what any client can trigger at will (an IP
    // address as SNI, as wrk and many scripts send, is one WARN line per
    // handshake): a client must not be able to flood the log. Shown only
    // when RUST_LOG names rustls explicitly.
    let names_rustls = std::env::var("RUST_LOG").is_ok_and(|v| v.contains("rustls"));
    let filter = if names_rustls {
        filter
    } else {
        filter.add_directive("rustls=error".parse().expect("a valid directive"))
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    let result = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
    // A second init (tests calling into the library) keeps the first one.
    let _ = result;
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
