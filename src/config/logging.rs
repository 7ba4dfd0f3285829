//! `[log]`: the log format, the level filter, and whether one access event
//! is written per request.

use serde::Serialize;

use super::raw::RawLog;
use super::{ConfigError, Ctx};

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
    /// A tracing `EnvFilter` directive (`"info"`, `"warn,nbgate::access=info"`);
    /// `RUST_LOG`, when set, wins over it.
    pub level: String,
}

/// Validates `[log]`.
pub(super) fn validate(l: RawLog, ctx: &Ctx) -> Result<LogConfig, ConfigError> {
    let format = match l.format.as_deref() {
        None | Some("text") => LogFormat::Text,
        Some("json") => LogFormat::Json,
        Some(other) => {
            return Err(ctx.invalid(
                "log.format",
                format!("unknown format {other:?} (expected \"text\" or \"json\")"),
            ))
        }
    };
    let level = l.level.unwrap_or_else(|| "info".to_owned());
    // Parsed here, with the same parser the log setup uses, so a typo is a
    // configuration error and not a silently lost directive.
    if let Err(e) = tracing_subscriber::EnvFilter::builder().parse(&level) {
        return Err(ctx.invalid(
            "log.level",
            format!("{level:?} is not a log filter ({e}); e.g. \"info\" or \"warn,nbgate::access=info\""),
        ));
    }
    Ok(LogConfig {
        format,
        access_log: l.access_log.unwrap_or(true),
        level,
    })
}
