//! Reading what the configuration names from outside the file: the file
//! itself (with TOML errors placed at file, line and key), the upstream
//! token from its file or environment variable, and the default state
//! directory from the environment. The section validators call these, so a
//! reload reads them again exactly as a start does.

use std::path::{Path, PathBuf};

use super::raw::RawConfig;
use super::values::valid_upstream_token;
use super::{ConfigError, Ctx};

/// Reads `path`.
///
/// # Errors
/// `ConfigError::Read` when the file cannot be read.
pub(super) fn read_file(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// Parses configuration text as if read from `path`: `ConfigError::Parse`
/// (file, line, column, key) when it is not valid TOML for nbgate.
pub(super) fn parse(text: &str, path: &Path) -> Result<RawConfig, ConfigError> {
    toml::from_str(text).map_err(|e| {
        let (line, column) = e.span().map(|s| line_col(text, s.start)).unwrap_or((0, 0));
        let message = match key_at(text, line) {
            Some(key) => format!("{key}: {}", e.message()),
            None => e.message().to_owned(),
        };
        ConfigError::Parse {
            path: path.to_path_buf(),
            line,
            column,
            message,
        }
    })
}

/// Reads the Jupyter token from `token_file` or the variable `token_env`
/// (never from the command line, where `ps` would show it) and checks its
/// characters.
pub(super) fn read_upstream_token(
    token_file: Option<&Path>,
    token_env: Option<&str>,
    ctx: &Ctx,
) -> Result<Option<String>, ConfigError> {
    let token = match (token_file, token_env) {
        (Some(f), _) => {
            let text = std::fs::read_to_string(f).map_err(|e| {
                ctx.invalid(
                    "upstream.token_file",
                    format!("cannot read {}: {e}", f.display()),
                )
            })?;
            Some(text.trim().to_owned())
        }
        (None, Some(var)) => Some(
            std::env::var(var)
                .map_err(|_| {
                    ctx.invalid(
                        "upstream.token_env",
                        format!("environment variable {var} is not set"),
                    )
                })?
                .trim()
                .to_owned(),
        ),
        (None, None) => None,
    };
    if let Some(tok) = &token {
        if !valid_upstream_token(tok) {
            return Err(ctx.invalid(
                "upstream.token_file",
                "the Jupyter token must be letters, digits and - . _ ~ only (Jupyter's own \
                 are hex)"
                    .into(),
            ));
        }
    }
    Ok(token)
}

/// The documented default state directory: systemd's `$STATE_DIRECTORY`
/// when run as a service with `StateDirectory=`, `/var/lib/nbgate` for root,
/// otherwise `$XDG_STATE_HOME/nbgate` or `~/.local/state/nbgate`.
pub fn default_state_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("STATE_DIRECTORY") {
        // systemd may pass several, colon-separated; the first is ours.
        let s = dir.to_string_lossy().into_owned();
        if let Some(first) = s.split(':').next().filter(|p| !p.is_empty()) {
            return PathBuf::from(first);
        }
    }
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } == 0 {
        return PathBuf::from("/var/lib/nbgate");
    }
    if let Some(xdg) = std::env::var_os("XDG_STATE_HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(xdg).join("nbgate");
    }
    if let Some(home) = std::env::var_os("HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(home).join(".local/state/nbgate");
    }
    PathBuf::from("nbgate-state")
}

/// The dotted key assigned on `line` (1-based), e.g. `server.max_connections`,
/// so a type error names the key and not only its position.
fn key_at(text: &str, line: usize) -> Option<String> {
    let lines: Vec<&str> = text.lines().collect();
    let here = lines.get(line.checked_sub(1)?)?;
    let (key, _) = here.split_once('=')?;
    let key = key.trim();
    if key.is_empty() || key.starts_with('[') {
        return None;
    }
    let section = lines[..line - 1]
        .iter()
        .rev()
        .map(|l| l.trim())
        .find(|l| l.starts_with('['))
        .map(|l| l.trim_matches(|c| c == '[' || c == ']').trim().to_owned());
    Some(match section {
        Some(s) if !s.is_empty() => format!("{s}.{key}"),
        _ => key.to_owned(),
    })
}

fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before
        .rfind('\n')
        .map_or(before.len(), |i| before.len() - i - 1)
        + 1;
    (line, column)
}

/// The line (1-based) where the dotted `key` is set in `text`, e.g.
/// `policy.lockout.duration` under `[policy.lockout]` or as
/// `lockout.duration` under `[policy]`; `None` when the file does not set it
/// or it is set in an array of tables (`[[users]]`: which entry is unknown
/// here).
pub(super) fn line_of(text: &str, key: &str) -> Option<usize> {
    let mut section = String::new();
    for (i, line) in text.lines().enumerate() {
        let l = line.trim();
        if l.starts_with("[[") {
            section = "[[".into();
        } else if let Some(s) = l.strip_prefix('[') {
            section = s.trim_end_matches(']').trim().to_owned();
        } else if let Some((k, _)) = l.split_once('=') {
            if l.starts_with('#') || section == "[[" {
                continue;
            }
            let k = k.trim().trim_matches('"');
            let full = if section.is_empty() {
                k.to_owned()
            } else {
                format!("{section}.{k}")
            };
            if full == key {
                return Some(i + 1);
            }
        }
    }
    None
}
