//! The credential nbgate presents to Jupyter: the configured token (or the
//! one `nbgate run` made), or — with none configured — the token of the
//! running Jupyter, found in its runtime file the way `jupyter server list`
//! finds it, and found again when Jupyter starts refusing it (a Jupyter
//! restarted with a new token keeps working without restarting nbgate).
//! Under `nbgate run` with Jupyter's identity provider in use, requests
//! carry the signed user header instead (`upstream_identity`); the token
//! is then still what the scrubber removes from Jupyter's answers.
//!
//! Read on every request: one `ArcSwap` load, no lock, no allocation.
//! Never logs the token, only the file it came from.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use arc_swap::ArcSwapOption;
use http::header::{self, HeaderMap, HeaderValue};
use http::StatusCode;

use crate::config::{UpstreamAddr, UpstreamConfig};
use crate::jupyter::runtime::{self, FindError};
use crate::telemetry::Chain;

/// Fewest time between two lookups of the runtime files: a burst of refused
/// requests (JupyterLab opening) costs one directory scan, not one each.
const LOOKUP_INTERVAL: Duration = Duration::from_secs(1);

/// A token and the `Authorization` value that carries it.
pub struct Credential {
    pub header: HeaderValue,
    pub token: Box<str>,
}

impl Credential {
    fn new(token: &str) -> Option<Credential> {
        // See `valid_upstream_token`: an escapable character would slip
        // past the scrubber.
        if !crate::config::valid_upstream_token(token) {
            return None;
        }
        let mut header = HeaderValue::from_str(&format!("token {token}")).ok()?;
        header.set_sensitive(true);
        Some(Credential {
            header,
            token: token.into(),
        })
    }
}

/// What a new look at the runtime files found, relative to the credential a
/// refused request used.
#[derive(Debug, PartialEq, Eq)]
pub enum Refresh {
    /// Another credential than the one used is current now: retry with it.
    Changed,
    /// The credential used is still Jupyter's: its refusal stands.
    Unchanged,
    /// nbgate has no credential Jupyter accepts.
    Missing,
}

/// The upstream credential, fixed or discovered.
pub struct UpstreamToken {
    current: ArcSwapOption<Credential>,
    /// Set when the token is discovered rather than configured.
    discovery: Option<Discovery>,
}

struct Discovery {
    upstream: UpstreamAddr,
    dirs: Vec<PathBuf>,
    /// When the runtime files were last read, and whether that lookup
    /// found a usable answer (a token, or "no authentication").
    last: tokio::sync::Mutex<(Instant, bool)>,
}

impl UpstreamToken {
    /// A configured token, or discovery in the runtime directories of the
    /// user nbgate runs as when none is configured.
    pub fn new(config: &UpstreamConfig) -> UpstreamToken {
        match &config.token {
            Some(t) => UpstreamToken {
                current: ArcSwapOption::new(Credential::new(t.expose()).map(Arc::new)),
                discovery: None,
            },
            // An upstream told who the user is (JupyterHub) has no Jupyter
            // token to find: the Hub would read a discovered one as a Hub
            // API token of whoever owns it, so nbgate sends none.
            None if config.identity_header.is_some() => UpstreamToken {
                current: ArcSwapOption::empty(),
                discovery: None,
            },
            None => UpstreamToken::discover(config.url.clone(), runtime::runtime_dirs()),
        }
    }

    /// Discovery of the token of the Jupyter at `upstream` in `dirs`; the
    /// first lookup happens now, and its outcome is logged.
    pub fn discover(upstream: UpstreamAddr, dirs: Vec<PathBuf>) -> UpstreamToken {
        let found = runtime::find(&upstream, &dirs);
        let usable = found.is_ok();
        let t = UpstreamToken {
            current: ArcSwapOption::empty(),
            discovery: Some(Discovery {
                upstream,
                dirs,
                last: tokio::sync::Mutex::new((Instant::now(), usable)),
            }),
        };
        t.apply(found, true);
        t
    }

    /// The credential to inject now, if any.
    #[inline]
    pub fn current(&self) -> arc_swap::Guard<Option<Arc<Credential>>> {
        self.current.load()
    }

    /// Whether the token is discovered (and so may change).
    #[inline]
    pub fn discovers(&self) -> bool {
        self.discovery.is_some()
    }

    /// Looks at the runtime files again after Jupyter refused `used`.
    pub async fn refresh(&self, used: Option<&str>) -> Refresh {
        let Some(d) = &self.discovery else {
            return Refresh::Unchanged;
        };
        let mut last = d.last.lock().await;
        // Someone else's lookup may have replaced the credential meanwhile.
        let changed = |cur: &Option<Arc<Credential>>| match (cur, used) {
            (Some(c), Some(u)) => &*c.token != u,
            (Some(_), None) => true,
            (None, _) => false,
        };
        if changed(&self.current.load()) {
            return Refresh::Changed;
        }
        if last.0.elapsed() >= LOOKUP_INTERVAL {
            let (upstream, dirs) = (d.upstream.clone(), d.dirs.clone());
            let found = tokio::task::spawn_blocking(move || runtime::find(&upstream, &dirs)).await;
            let found = match found {
                Ok(f) => f,
                Err(e) => {
                    tracing::warn!(error = %e, "jupyter token lookup failed");
                    return Refresh::Unchanged;
                }
            };
            *last = (Instant::now(), found.is_ok());
            self.apply(found, !last.1);
            if changed(&self.current.load()) {
                return Refresh::Changed;
            }
        }
        if last.1 {
            Refresh::Unchanged
        } else {
            Refresh::Missing
        }
    }

    /// Installs what a lookup found; logs a change, and a failure when
    /// `log_failure` (once per run of failures, not per request).
    fn apply(&self, found: Result<runtime::Found, FindError>, log_failure: bool) {
        match found {
            Ok(f) if f.token.is_empty() => {
                if self.current.load().is_some() || log_failure {
                    tracing::warn!(file = %f.file.display(), pid = f.pid, "jupyter runs without authentication: nbgate's login is all that protects it, and local users can reach it directly");
                }
                self.current.store(None);
            }
            Ok(f) => {
                let same = self
                    .current
                    .load()
                    .as_ref()
                    .is_some_and(|c| *c.token == *f.token);
                if !same {
                    match Credential::new(&f.token) {
                        Some(c) => {
                            tracing::info!(file = %f.file.display(), pid = f.pid, "jupyter token found in its runtime file");
                            self.current.store(Some(Arc::new(c)));
                        }
                        None => {
                            tracing::error!(file = %f.file.display(), "jupyter's runtime file holds a token with characters other than letters, digits and - . _ ~: not used")
                        }
                    }
                }
            }
            Err(e) => {
                self.current.store(None);
                if log_failure {
                    let fix = match e {
                        FindError::PasswordOnly { .. } => "",
                        _ => "; set upstream.token_file (or token_env) to Jupyter's token, or let nbgate start Jupyter: nbgate run -- jupyter lab",
                    };
                    tracing::error!(error = %Chain(&e), "cannot authenticate to jupyter{fix}");
                }
            }
        }
    }
}

/// Whether Jupyter's answer says the credential was not accepted: 401/403,
/// or a redirect to its own login page (what a browser navigation gets).
pub fn refused(status: StatusCode, headers: &HeaderMap, base_url: &str) -> bool {
    if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
        return true;
    }
    status.is_redirection()
        && headers
            .get(header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|l| {
                let path = l
                    .split_once("://")
                    .map_or(l, |(_, rest)| rest.find('/').map_or("", |i| &rest[i..]));
                path.strip_prefix(base_url)
                    .is_some_and(|rest| rest.starts_with("login"))
            })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tcp() -> UpstreamAddr {
        UpstreamAddr::Tcp {
            authority: "127.0.0.1:8888".into(),
        }
    }

    fn write(dir: &std::path::Path, pid: u32, token: &str) {
        std::fs::write(
            dir.join(format!("jpserver-{pid}.json")),
            format!(r#"{{"port": 8888, "sock": "", "token": "{token}", "pid": {pid}}}"#),
        )
        .expect("write");
    }

    #[tokio::test]
    async fn a_jupyter_restarted_with_a_new_token_is_followed() {
        let d = tempfile::tempdir().expect("tempdir");
        let me = std::process::id();
        write(d.path(), me, "first");
        let t = UpstreamToken::discover(tcp(), vec![d.path().to_owned()]);
        assert_eq!(&*t.current().clone().expect("found").token, "first");
        let used = Some("first");
        // Refused with the current token, no new file: the refusal stands.
        tokio::time::pause();
        assert_eq!(t.refresh(used).await, Refresh::Unchanged);
        // Jupyter restarted: a new file, a new token.
        std::fs::remove_file(d.path().join(format!("jpserver-{me}.json"))).expect("rm");
        write(d.path(), me, "second");
        tokio::time::advance(LOOKUP_INTERVAL).await;
        assert_eq!(t.refresh(used).await, Refresh::Changed);
        assert_eq!(&*t.current().clone().expect("found").token, "second");
    }

    #[tokio::test]
    async fn no_runtime_file_means_no_credential() {
        let d = tempfile::tempdir().expect("tempdir");
        let t = UpstreamToken::discover(tcp(), vec![d.path().to_owned()]);
        assert!(t.current().is_none());
        assert_eq!(t.refresh(None).await, Refresh::Missing);
    }

    #[test]
    fn refusals_are_401_403_and_redirects_to_jupyters_login() {
        let h = |loc: &str| {
            let mut h = HeaderMap::new();
            h.insert(header::LOCATION, HeaderValue::from_str(loc).expect("value"));
            h
        };
        let none = HeaderMap::new();
        assert!(refused(StatusCode::FORBIDDEN, &none, "/"));
        assert!(refused(StatusCode::UNAUTHORIZED, &none, "/"));
        assert!(!refused(StatusCode::OK, &none, "/"));
        assert!(refused(StatusCode::FOUND, &h("/login?next=%2Flab"), "/"));
        assert!(refused(
            StatusCode::FOUND,
            &h("http://127.0.0.1:8888/nb/login?next=x"),
            "/nb/"
        ));
        assert!(!refused(
            StatusCode::FOUND,
            &h("/lab/tree/login.ipynb"),
            "/"
        ));
        assert!(!refused(StatusCode::FOUND, &h("/lab"), "/"));
    }
}
