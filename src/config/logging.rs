//! `[log]`: the log format and whether one access event is written per request.

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
    Ok(LogConfig {
        format,
        access_log: l.access_log.unwrap_or(true),
    })
}
