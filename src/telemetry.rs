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

/// Installs the global subscriber. `RUST_LOG` wins over the default level.
pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
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
