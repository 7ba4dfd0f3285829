//! `[audit]`: the operation audit (who opened, saved, ran what). Events
//! always go to the log (target `nbgate::audit`); `file` adds the
//! tamper-evident JSON-lines file. Executed code and terminal input are
//! recorded only when asked for (`code`, `terminal_input`): they may hold
//! data (and secrets typed into a cell) that an operator must decide to
//! keep.

use std::path::PathBuf;

use serde::Serialize;

use super::raw::RawAudit;
use super::values::parse_size;
use super::{ConfigError, Ctx};

/// Default `max_size`: a rotated file stays small enough to read and
/// verify in seconds.
const DEFAULT_MAX_SIZE: u64 = 100 << 20;
/// Default `keep`: rotated files kept besides the current one.
const DEFAULT_KEEP: usize = 10;
/// Default `code_max_bytes`: a long cell is kept in part, with the
/// SHA-256 of all of it.
const DEFAULT_CODE_MAX: usize = 4096;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AuditConfig {
    /// The audit file; `None`: the log only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<PathBuf>,
    /// Rotate the file once it reaches this many bytes.
    pub max_size: u64,
    /// Rotated files kept (`FILE.1` newest … `FILE.<keep>` oldest).
    pub keep: usize,
    /// Record the code of each `execute_request` sent to a kernel.
    pub code: bool,
    /// How much of a cell's code (and of a terminal line) is kept.
    pub code_max_bytes: usize,
    /// Record the lines typed into terminals.
    pub terminal_input: bool,
}

impl Default for AuditConfig {
    fn default() -> Self {
        AuditConfig {
            file: None,
            max_size: DEFAULT_MAX_SIZE,
            keep: DEFAULT_KEEP,
            code: false,
            code_max_bytes: DEFAULT_CODE_MAX,
            terminal_input: false,
        }
    }
}

/// Validates `[audit]`.
pub(super) fn validate(a: RawAudit, ctx: &Ctx) -> Result<AuditConfig, ConfigError> {
    let d = AuditConfig::default();
    if let Some(f) = &a.file {
        if !f.is_absolute() {
            return Err(ctx.invalid(
                "audit.file",
                format!(
                    "{} is not an absolute path (a service's working directory is not a place to keep an audit trail)",
                    f.display()
                ),
            ));
        }
    }
    let max_size = match a.max_size {
        Some(t) => parse_size(&t).map_err(|m| ctx.invalid("audit.max_size", m))? as u64,
        None => d.max_size,
    };
    if max_size < 4096 {
        return Err(ctx.invalid(
            "audit.max_size",
            "must be at least 4KiB (a file must hold more than a few events)".into(),
        ));
    }
    let keep = a.keep.unwrap_or(d.keep);
    if keep > 10_000 {
        return Err(ctx.invalid("audit.keep", "must be at most 10000".into()));
    }
    let code_max_bytes = match a.code_max_bytes {
        Some(t) => parse_size(&t).map_err(|m| ctx.invalid("audit.code_max_bytes", m))?,
        None => d.code_max_bytes,
    };
    if !(16..=1 << 20).contains(&code_max_bytes) {
        return Err(ctx.invalid(
            "audit.code_max_bytes",
            "must be between 16B and 1MiB".into(),
        ));
    }
    Ok(AuditConfig {
        file: a.file,
        max_size,
        keep,
        code: a.code.unwrap_or(d.code),
        code_max_bytes,
        terminal_input: a.terminal_input.unwrap_or(d.terminal_input),
    })
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::super::Config;

    fn load(text: &str) -> Result<Config, super::ConfigError> {
        Config::from_text(text, Path::new("test.toml"))
    }

    #[test]
    fn audit_is_log_only_and_code_off_by_default() {
        let a = load("").expect("defaults").audit;
        assert_eq!(a, super::AuditConfig::default());
        assert!(a.file.is_none() && !a.code && !a.terminal_input);
    }

    #[test]
    fn bad_audit_settings_name_their_line() {
        let e = load("[audit]\nfile = \"audit.jsonl\"\n").expect_err("relative");
        assert!(e.to_string().starts_with("test.toml:2: audit.file:"), "{e}");
        let e = load("[audit]\ncode = true\nmax_size = \"1KiB\"\n").expect_err("small");
        assert!(
            e.to_string().starts_with("test.toml:3: audit.max_size:"),
            "{e}"
        );
        let e = load("[audit]\ncode_max_bytes = \"2MiB\"\n").expect_err("large");
        assert!(e.to_string().contains("audit.code_max_bytes"), "{e}");
        let a = load("[audit]\nfile = \"/var/log/nbgate/a.jsonl\"\nmax_size = \"1MiB\"\nkeep = 3\ncode = true\ncode_max_bytes = \"100B\"\nterminal_input = true\n")
            .expect("valid")
            .audit;
        assert_eq!((a.max_size, a.keep, a.code_max_bytes), (1 << 20, 3, 100));
        assert!(a.code && a.terminal_input);
    }
}
