//! Finding a running Jupyter's token in its runtime file.
//!
//! A Jupyter server writes `jpserver-<pid>.json` (mode 0600) into its runtime
//! directory with its port or socket, token and whether a password is set,
//! and removes it on a clean exit; `jupyter server list` reads the same
//! files. nbgate matches the file to the upstream it forwards to — the port
//! for TCP, the socket path for a Unix socket — so a Jupyter started with
//! its default random token needs no configuration.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::config::UpstreamAddr;

/// Why no usable token was found. Never holds a token.
#[derive(Debug, thiserror::Error)]
pub enum FindError {
    #[error("cannot read Jupyter's runtime directory {}", dir.display())]
    Unreadable {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("no running Jupyter for {upstream} in {}", list(dirs))]
    NotFound {
        upstream: String,
        dirs: Vec<PathBuf>,
    },
    #[error(
        "the Jupyter at {upstream} ({}) is protected only by its own password, which nbgate cannot \
         send for its users; remove Jupyter's password (nbgate's login replaces it) or start \
         Jupyter with a token",
        file.display()
    )]
    PasswordOnly { upstream: String, file: PathBuf },
}

fn list(dirs: &[PathBuf]) -> String {
    if dirs.is_empty() {
        return "(no runtime directory: HOME and JUPYTER_RUNTIME_DIR are unset)".into();
    }
    dirs.iter()
        .map(|d| d.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// What a runtime file says about a running server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// The runtime file it came from (logged; never the token).
    pub file: PathBuf,
    /// The server's pid, as the file states it.
    pub pid: u32,
    /// The token; empty when the server runs without authentication.
    pub token: String,
}

/// The fields of `jpserver-<pid>.json` nbgate reads; others are ignored.
#[derive(Deserialize)]
struct RuntimeFile {
    #[serde(default)]
    port: u16,
    #[serde(default)]
    sock: String,
    #[serde(default)]
    token: String,
    #[serde(default)]
    password: bool,
    #[serde(default)]
    pid: u32,
}

/// The runtime directories of the user nbgate runs as, in the order Jupyter
/// uses them: `JUPYTER_RUNTIME_DIR`, else `<data dir>/runtime` where the data
/// dir is `JUPYTER_DATA_DIR`, `$XDG_DATA_HOME/jupyter` or
/// `~/.local/share/jupyter`. All candidates are returned (deduplicated): a
/// server started by a shell with other variables than nbgate's is still
/// found.
pub fn runtime_dirs() -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    dirs.extend(super::env_path("JUPYTER_RUNTIME_DIR"));
    dirs.extend(super::env_path("JUPYTER_DATA_DIR").map(|d| d.join("runtime")));
    dirs.extend(super::env_path("XDG_DATA_HOME").map(|d| d.join("jupyter").join("runtime")));
    dirs.extend(super::home().map(|h| h.join(".local/share/jupyter/runtime")));
    let mut seen = Vec::new();
    dirs.retain(|d| {
        let new = !seen.contains(d);
        seen.push(d.clone());
        new
    });
    dirs
}

/// Finds the running server behind `upstream` in `dirs`.
///
/// Several files may match (a crashed server leaves its file behind): one
/// whose pid is alive wins, then the most recently written. A directory that
/// does not exist is skipped; one that exists but cannot be read is an error,
/// so a permission problem is named instead of reported as "not found".
///
/// # Errors
/// [`FindError`]: unreadable directory, no match, or a password-only server.
pub fn find(upstream: &UpstreamAddr, dirs: &[PathBuf]) -> Result<Found, FindError> {
    let mut best: Option<(bool, std::time::SystemTime, Found, bool)> = None;
    for dir in dirs {
        let entries = match std::fs::read_dir(dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(source) => {
                return Err(FindError::Unreadable {
                    dir: dir.clone(),
                    source,
                })
            }
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if !(name.starts_with("jpserver-") && name.ends_with(".json")) {
                continue;
            }
            let path = entry.path();
            // A file being written or removed right now is skipped: the
            // next lookup sees it whole.
            let Ok(text) = std::fs::read_to_string(&path) else {
                continue;
            };
            let Ok(info) = serde_json::from_str::<RuntimeFile>(&text) else {
                continue;
            };
            if !serves(upstream, &info) {
                continue;
            }
            let alive = info.pid != 0 && Path::new(&format!("/proc/{}", info.pid)).exists();
            let mtime = entry
                .metadata()
                .and_then(|m| m.modified())
                .unwrap_or(std::time::SystemTime::UNIX_EPOCH);
            let password_only = info.password && info.token.is_empty();
            let found = Found {
                file: path,
                pid: info.pid,
                token: info.token,
            };
            let better = best
                .as_ref()
                .is_none_or(|(a, t, _, _)| (alive, mtime) > (*a, *t));
            if better {
                best = Some((alive, mtime, found, password_only));
            }
        }
    }
    match best {
        Some((_, _, found, true)) => Err(FindError::PasswordOnly {
            upstream: upstream.to_string(),
            file: found.file,
        }),
        Some((_, _, found, false)) => Ok(found),
        None => Err(FindError::NotFound {
            upstream: upstream.to_string(),
            dirs: dirs.to_vec(),
        }),
    }
}

/// Whether the server a runtime file describes is the one at `upstream`.
fn serves(upstream: &UpstreamAddr, info: &RuntimeFile) -> bool {
    match upstream {
        UpstreamAddr::Tcp { authority } => {
            let port = authority
                .rsplit_once(':')
                .and_then(|(_, p)| p.parse::<u16>().ok())
                .unwrap_or(80);
            info.sock.is_empty() && info.port == port
        }
        UpstreamAddr::Unix { path } => {
            if info.sock.is_empty() {
                return false;
            }
            let sock = Path::new(&info.sock);
            sock == path
                || matches!(
                    (sock.canonicalize(), path.canonicalize()),
                    (Ok(a), Ok(b)) if a == b
                )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, json: &str) {
        std::fs::write(dir.join(name), json).expect("write");
    }

    fn tcp(port: u16) -> UpstreamAddr {
        UpstreamAddr::Tcp {
            authority: format!("127.0.0.1:{port}"),
        }
    }

    #[test]
    fn the_file_for_the_upstream_port_gives_its_token() {
        let d = tempfile::tempdir().expect("tempdir");
        write(
            d.path(),
            "jpserver-1.json",
            r#"{"port": 8889, "sock": "", "token": "other", "pid": 1}"#,
        );
        write(
            d.path(),
            "jpserver-2.json",
            r#"{"port": 8888, "sock": "", "token": "abc", "password": false, "pid": 2}"#,
        );
        write(d.path(), "jpserver-2-open.html", "<html>");
        let found = find(&tcp(8888), &[d.path().to_owned()]).expect("found");
        assert_eq!(found.token, "abc");
        assert_eq!(found.file, d.path().join("jpserver-2.json"));
    }

    #[test]
    fn a_socket_upstream_matches_the_sock_field_only() {
        let d = tempfile::tempdir().expect("tempdir");
        let sock = d.path().join("j.sock");
        write(
            d.path(),
            "jpserver-3.json",
            &format!(
                r#"{{"port": 0, "sock": {:?}, "token": "t", "pid": 3}}"#,
                sock.display().to_string()
            ),
        );
        let up = UpstreamAddr::Unix { path: sock };
        assert_eq!(find(&up, &[d.path().to_owned()]).expect("found").token, "t");
        assert!(matches!(
            find(&tcp(0), &[d.path().to_owned()]),
            Err(FindError::NotFound { .. })
        ));
    }

    #[test]
    fn a_live_pid_wins_over_a_stale_file() {
        let d = tempfile::tempdir().expect("tempdir");
        let me = std::process::id();
        write(
            d.path(),
            "jpserver-999999999.json",
            r#"{"port": 8888, "token": "stale", "pid": 999999999}"#,
        );
        write(
            d.path(),
            "jpserver-me.json",
            &format!(r#"{{"port": 8888, "token": "live", "pid": {me}}}"#),
        );
        assert_eq!(
            find(&tcp(8888), &[d.path().to_owned()])
                .expect("found")
                .token,
            "live"
        );
    }

    #[test]
    fn a_password_only_server_is_an_error_that_names_the_fix() {
        let d = tempfile::tempdir().expect("tempdir");
        write(
            d.path(),
            "jpserver-4.json",
            r#"{"port": 8888, "token": "", "password": true, "pid": 4}"#,
        );
        let err = find(&tcp(8888), &[d.path().to_owned()]).expect_err("password only");
        assert!(matches!(err, FindError::PasswordOnly { .. }));
        assert!(
            err.to_string().contains("remove Jupyter's password"),
            "{err}"
        );
    }

    #[test]
    fn a_server_without_authentication_has_an_empty_token() {
        let d = tempfile::tempdir().expect("tempdir");
        write(
            d.path(),
            "jpserver-5.json",
            r#"{"port": 8888, "token": "", "password": false, "pid": 5}"#,
        );
        assert_eq!(
            find(&tcp(8888), &[d.path().to_owned()])
                .expect("found")
                .token,
            ""
        );
    }

    #[test]
    fn a_missing_directory_is_skipped_and_an_unreadable_one_is_named() {
        let d = tempfile::tempdir().expect("tempdir");
        let missing = d.path().join("missing");
        assert!(matches!(
            find(&tcp(8888), &[missing]),
            Err(FindError::NotFound { .. })
        ));
        // A file where the directory should be cannot be listed (a mode-0
        // directory would do too, but not for root, who runs CI).
        let file = d.path().join("file");
        std::fs::write(&file, "").expect("write");
        let err = find(&tcp(8888), std::slice::from_ref(&file)).expect_err("unreadable");
        assert!(matches!(err, FindError::Unreadable { .. }), "{err}");
        assert!(
            err.to_string().contains(&file.display().to_string()),
            "{err}"
        );
    }
}
