//! `nbgate run -- jupyter lab …`: nbgate starts Jupyter as its child and
//! serves it — the one command for a data scientist or a container's
//! entrypoint.
//!
//! Jupyter listens on a Unix socket in a directory only its user can enter
//! (0700): loopback TCP would let every local user, and every container on
//! the host network, reach Jupyter around nbgate. Its token is fresh and
//! random, reaches Jupyter through a 0600 file named by
//! `JUPYTER_TOKEN_FILE` (never argv, never the environment kernels
//! inherit), and the file is removed once Jupyter has read it.
//!
//! Jupyter also learns who each request is from: nbgate writes its identity
//! provider (`python/nbgate_identity.py`, built into the binary) into the
//! private directory, puts that on Jupyter's `PYTHONPATH`, names the class
//! in argv, and hands a fresh signing secret over the way it hands the
//! token (`NBGATE_IDENTITY_SECRET_FILE`, a 0600 file removed once read; the
//! provider also drops the variable and its `PYTHONPATH` entry from the
//! environment kernels inherit). Once Jupyter answers, a signed probe of
//! `/api/me` shows whether the provider is in use; only then does nbgate
//! sign requests instead of presenting the token (`proxy::upstream_identity`).
//!
//! Submodules: `args` (Jupyter's command line), `child` (the process,
//! signals, reaping). `main` wires the pieces to `server::run`; this module
//! does not import `server`.

pub mod args;
pub mod child;

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::sync::watch;

use self::args::ArgError;
use self::child::{ChildError, ExitCode, Output, RunAs};
use crate::config::{Config, IdentityKey, Secret, UpstreamAddr, UserEntry};
use crate::jupyter::identity;

/// How long Jupyter may take to answer on its socket after it starts. Cold
/// starts with many extensions take tens of seconds on small machines.
const READY_TIMEOUT: Duration = Duration::from_secs(120);

/// Plain-password environment variables read in `run` mode, in this order:
/// nbgate's own, then the one the usual Jupyter image recipes use. Both are
/// removed from the environment Jupyter (and so every kernel) gets.
pub const PASSWORD_ENV: [&str; 2] = ["NBGATE_PASSWORD", "JUPYTER_PASSWORD"];

/// Variables Jupyter must not inherit: passwords (a notebook could read
/// them from `os.environ`), tokens that would override nbgate's, and
/// systemd's hand-over variables meant for nbgate alone.
const REMOVED_ENV: [&str; 13] = [
    "NBGATE_PASSWORD",
    "NBGATE_IDENTITY_SECRET_FILE",
    "JUPYTER_PASSWORD",
    "JUPYTER_TOKEN",
    "JUPYTER_TOKEN_FILE",
    "NBGATE_CONFIG",
    "CREDENTIALS_DIRECTORY",
    "NOTIFY_SOCKET",
    "LISTEN_FDS",
    "LISTEN_PID",
    "LISTEN_FDNAMES",
    "WATCHDOG_USEC",
    "WATCHDOG_PID",
];

/// What the user asked to run.
#[derive(Debug)]
pub struct ChildSpec {
    pub command: Vec<OsString>,
    pub user: Option<String>,
    pub allow_root: bool,
}

/// Why `nbgate run` cannot start or keep Jupyter running.
#[derive(Debug, thiserror::Error)]
pub enum SuperviseError {
    #[error(transparent)]
    Args(#[from] ArgError),
    #[error(
        "refusing to run Jupyter as root: its kernels would run every notebook's code as root. \
         Pass --user NAME to run Jupyter as that user, or --allow-root to run it as root anyway \
         (both go before `--`)"
    )]
    Root,
    #[error("--user needs nbgate to run as root (it runs as uid {uid})")]
    UserNeedsRoot { uid: u32 },
    #[error("{key}: nbgate run starts Jupyter with a token of its own; remove {key} from {}", source_file.display())]
    UpstreamConfigured {
        key: &'static str,
        source_file: PathBuf,
    },
    #[error(transparent)]
    Child(#[from] ChildError),
    #[error("{}: cannot create Jupyter's private directory", path.display())]
    PrivateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    JupyterConfig(#[from] crate::jupyter::password::JupyterConfigError),
    #[error("{}: Jupyter's stored password is in a format nbgate cannot verify", file.display())]
    JupyterHash {
        file: PathBuf,
        #[source]
        source: crate::auth::password::PasswordError,
    },
    #[error("Jupyter ({command}) ended with {code} before it answered{}", lines(.output))]
    EndedEarly {
        command: String,
        code: ExitCode,
        output: Vec<String>,
    },
    #[error("Jupyter ({command}) did not answer on its socket within {}s{}", READY_TIMEOUT.as_secs(), lines(.output))]
    NotReady {
        command: String,
        output: Vec<String>,
    },
}

fn lines(output: &[String]) -> String {
    if output.is_empty() {
        return "; it printed nothing".into();
    }
    let mut s = String::from("; its last lines:");
    for l in output {
        s.push_str("\n    ");
        s.push_str(l);
    }
    s
}

/// Where the login password comes from in `run` mode, in the order a user
/// expects: the configuration (hash, users file, credential, …), then
/// `NBGATE_PASSWORD`/`JUPYTER_PASSWORD`, then the password set with
/// `jupyter server password`, else nbgate's generated first password.
///
/// Call before threads start (a password variable is removed from the
/// environment). Returns a description of the source for the log.
///
/// # Errors
/// A Jupyter config that cannot be read, or a hash nbgate cannot verify.
pub fn choose_login(config: &mut Config) -> Result<Option<String>, SuperviseError> {
    let mut chosen = None;
    if !login_configured(config) {
        if let Some(var) = PASSWORD_ENV.iter().find(|v| std::env::var_os(v).is_some()) {
            // users::load reads, hashes and scrubs it.
            config.auth.password_env = Some((*var).to_owned());
            chosen = Some(format!("environment variable {var}"));
        } else if let Some(dir) = crate::jupyter::password::config_dir() {
            if let Some(found) = crate::jupyter::password::find_hash(&dir)? {
                found
                    .hash
                    .parse::<crate::auth::password::StoredHash>()
                    .map_err(|source| SuperviseError::JupyterHash {
                        file: found.file.clone(),
                        source,
                    })?;
                config.users.push(UserEntry {
                    name: config.auth.default_user.clone(),
                    password_hash: Some(Secret::new(found.hash)),
                    tokens: Vec::new(),
                    totp: Default::default(),
                    totp_secret_file: None,
                });
                chosen = Some(format!(
                    "Jupyter's own password, from {}",
                    found.file.display()
                ));
            }
        }
    }
    Ok(chosen)
}

/// Whether the configuration names a login source of its own.
fn login_configured(config: &Config) -> bool {
    let auth = &config.auth;
    !config.users.is_empty()
        || auth.users_file.is_some()
        || auth.password_hash_env.is_some()
        || auth.password_env.is_some()
        || auth.password_file.is_some()
        || std::env::var_os("CREDENTIALS_DIRECTORY").is_some()
}

/// How `nbgate run` reads its configuration again at a reload: `load` (the
/// file and overrides, as at start), then what `run` decided at start and
/// Jupyter depends on, taken from `running` (the configuration after
/// `choose_login` and `prepare`):
/// - `[upstream]` is Jupyter's private socket and token, whatever the file
///   says (as at start); a token source in the file is refused as at start;
/// - `auth.base_url` is the one Jupyter was started with: a change is named
///   in a warning and waits for a restart;
/// - without a login source in the file, the one `choose_login` chose: the
///   password variable read at start (its hash is kept, `users::reload`), or
///   Jupyter's own password, read again.
pub fn reload_source(
    running: &Config,
    load: impl Fn() -> Result<Config, crate::reload::LoadError> + Send + Sync + 'static,
) -> crate::reload::Source {
    let upstream = running.upstream.clone();
    let base_url = running.auth.base_url.clone();
    let env_choice = running
        .auth
        .password_env
        .clone()
        .filter(|v| PASSWORD_ENV.contains(&v.as_str()));
    Arc::new(move || {
        let mut config = load()?;
        for (key, set) in [
            ("upstream.token_file", config.upstream.token_file.is_some()),
            ("upstream.token_env", config.upstream.token_env.is_some()),
        ] {
            if set {
                return Err(SuperviseError::UpstreamConfigured {
                    key,
                    source_file: config.source.clone(),
                }
                .into());
            }
        }
        config.upstream = upstream.clone();
        if config.auth.base_url != base_url {
            tracing::warn!(
                "auth.base_url changed in {}: Jupyter runs with {base_url:?} until the next restart",
                config.source.display()
            );
            config.auth.base_url.clone_from(&base_url);
        }
        if !login_configured(&config) {
            match &env_choice {
                Some(var) => config.auth.password_env = Some(var.clone()),
                None => {
                    choose_login(&mut config)?;
                }
            }
        }
        Ok(config)
    })
}

/// Removes the plain-password variables nbgate did not use from its own
/// environment (the one it used is already scrubbed), so that neither
/// `/proc/<pid>/environ` nor Jupyter holds them. Call before threads start.
pub fn scrub_password_env() {
    for var in PASSWORD_ENV {
        if std::env::var_os(var).is_some() {
            crate::auth::users::scrub_env_var(var);
        }
    }
}

/// Everything decided before Jupyter starts.
pub struct Prepared {
    dir: PrivateDir,
    argv: Vec<OsString>,
    run_as: Option<RunAs>,
    token: String,
    /// Signs the readiness probe of the identity provider.
    identity: IdentityKey,
    base_url: String,
    command: String,
}

/// Checks the command and the account, makes the private directory and the
/// token, and points `config.upstream` at the socket.
///
/// # Errors
/// A contradicting argument, root without `--user`/`--allow-root`, an
/// unknown user, an upstream token already configured, or a directory that
/// cannot be made.
pub fn prepare(config: &mut Config, spec: ChildSpec) -> Result<Prepared, SuperviseError> {
    if config.upstream.token_file.is_some() {
        return Err(SuperviseError::UpstreamConfigured {
            key: "upstream.token_file",
            source_file: config.source.clone(),
        });
    }
    if config.upstream.token_env.is_some() {
        return Err(SuperviseError::UpstreamConfigured {
            key: "upstream.token_env",
            source_file: config.source.clone(),
        });
    }
    // SAFETY: geteuid cannot fail.
    let euid = unsafe { libc::geteuid() };
    let run_as = match &spec.user {
        Some(_) if euid != 0 => return Err(SuperviseError::UserNeedsRoot { uid: euid }),
        Some(name) => Some(RunAs::lookup(name)?),
        None if euid == 0 && !spec.allow_root => return Err(SuperviseError::Root),
        None => None,
    };
    let as_root = run_as.as_ref().map_or(euid == 0, |u| u.uid == 0);
    if as_root && !spec.allow_root {
        return Err(SuperviseError::Root);
    }
    let dir = PrivateDir::create(run_as.as_ref())?;
    let socket = dir.path.join("jupyter.sock");
    let argv = args::build(
        &spec.command,
        &args::Setup {
            socket: &socket,
            base_url: &config.auth.base_url,
            allow_root: as_root,
        },
    )?;
    let token = crate::auth::password::generate_token();
    dir.write(&dir.token_file(), &token, run_as.as_ref())?;
    let secret = crate::auth::password::generate_token();
    dir.write(&dir.identity_file(), &secret, run_as.as_ref())?;
    let python = dir.python_dir();
    dir.mkdir(&python, run_as.as_ref())?;
    dir.write(
        &python.join(format!("{}.py", identity::PROVIDER_MODULE)),
        identity::PROVIDER_SOURCE,
        run_as.as_ref(),
    )?;
    let identity = IdentityKey::new(Secret::new(secret));
    config.upstream.url = UpstreamAddr::Unix { path: socket };
    config.upstream.token = Some(Secret::new(token.clone()));
    config.upstream.identity = Some(identity.clone());
    Ok(Prepared {
        command: args::display(&spec.command),
        dir,
        argv,
        run_as,
        token,
        identity,
        base_url: config.auth.base_url.clone(),
    })
}

/// A directory only Jupyter's user can enter, holding its socket and
/// (until Jupyter has read it) its token file; removed when nbgate exits.
struct PrivateDir {
    path: PathBuf,
}

impl PrivateDir {
    fn create(run_as: Option<&RunAs>) -> Result<PrivateDir, SuperviseError> {
        // $XDG_RUNTIME_DIR is per user and cleaned at logout; it is not
        // the target user's with --user.
        let base = std::env::var_os("XDG_RUNTIME_DIR")
            .filter(|d| run_as.is_none() && !d.is_empty() && Path::new(d).is_dir())
            .map_or_else(std::env::temp_dir, PathBuf::from);
        let path = base.join(format!(
            "nbgate-run-{}",
            &crate::auth::password::generate_token()[..16]
        ));
        let made = {
            use std::os::unix::fs::DirBuilderExt as _;
            std::fs::DirBuilder::new().mode(0o700).create(&path)
        };
        made.map_err(|source| SuperviseError::PrivateDir {
            path: path.clone(),
            source,
        })?;
        let dir = PrivateDir { path };
        if let Some(u) = run_as {
            chown(&dir.path, u).map_err(|source| SuperviseError::PrivateDir {
                path: dir.path.clone(),
                source,
            })?;
        }
        Ok(dir)
    }

    fn token_file(&self) -> PathBuf {
        self.path.join("token")
    }

    /// The identity header's secret, until Jupyter has read it.
    fn identity_file(&self) -> PathBuf {
        self.path.join("identity")
    }

    /// Where Jupyter imports nbgate's identity provider from.
    fn python_dir(&self) -> PathBuf {
        self.path.join("python")
    }

    /// A 0600 file of Jupyter's user.
    fn write(&self, path: &Path, text: &str, run_as: Option<&RunAs>) -> Result<(), SuperviseError> {
        let failed = |source| SuperviseError::PrivateDir {
            path: path.to_owned(),
            source,
        };
        crate::state::write_atomic(path, text.as_bytes(), 0o600).map_err(failed)?;
        run_as.map_or(Ok(()), |u| chown(path, u)).map_err(failed)
    }

    /// A 0700 directory of Jupyter's user.
    fn mkdir(&self, path: &Path, run_as: Option<&RunAs>) -> Result<(), SuperviseError> {
        use std::os::unix::fs::DirBuilderExt as _;
        let failed = |source| SuperviseError::PrivateDir {
            path: path.to_owned(),
            source,
        };
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(path)
            .map_err(failed)?;
        run_as.map_or(Ok(()), |u| chown(path, u)).map_err(failed)
    }
}

impl Drop for PrivateDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

fn chown(path: &Path, u: &RunAs) -> std::io::Result<()> {
    std::os::unix::fs::chown(path, Some(u.uid), Some(u.gid))
}

/// A running Jupyter under nbgate's watch.
pub struct Supervised {
    prepared: Prepared,
    pid: libc::pid_t,
    output: Arc<Output>,
    exited: watch::Receiver<Option<ExitCode>>,
}

/// Starts Jupyter, the reaper and signal forwarding. Call on the thread
/// that lives as long as nbgate (see `child::spawn`), inside the runtime.
///
/// # Errors
/// Jupyter cannot be started, or a signal handler cannot be installed.
pub fn start(prepared: Prepared, grace: Duration) -> Result<Supervised, SuperviseError> {
    use tokio::signal::unix::{signal, SignalKind};
    let signal_error = |source| {
        SuperviseError::Child(ChildError::Spawn {
            program: "signal handlers".into(),
            source,
        })
    };
    // Registered before the child exists, so no SIGCHLD is missed.
    let mut chld = signal(SignalKind::child()).map_err(signal_error)?;
    let mut term = signal(SignalKind::terminate()).map_err(signal_error)?;
    let mut int = signal(SignalKind::interrupt()).map_err(signal_error)?;
    let mut hup = signal(SignalKind::hangup()).map_err(signal_error)?;

    // The provider's directory first; the user's own PYTHONPATH after it.
    let mut pythonpath = prepared.dir.python_dir().into_os_string();
    if let Some(theirs) = std::env::var_os("PYTHONPATH").filter(|p| !p.is_empty()) {
        pythonpath.push(":");
        pythonpath.push(theirs);
    }
    let mut set_env = vec![
        (
            "JUPYTER_TOKEN_FILE".to_owned(),
            prepared.dir.token_file().into_os_string(),
        ),
        (
            identity::SECRET_ENV.to_owned(),
            prepared.dir.identity_file().into_os_string(),
        ),
        ("PYTHONPATH".to_owned(), pythonpath),
    ];
    if let Some(u) = &prepared.run_as {
        set_env.push(("HOME".into(), u.home.clone().into_os_string()));
        set_env.push(("USER".into(), u.name.clone().into()));
        set_env.push(("LOGNAME".into(), u.name.clone().into()));
    }
    let mut remove_env: Vec<&str> = REMOVED_ENV.to_vec();
    if prepared.run_as.is_some() {
        // nbgate's own (root's) runtime directory is not the user's.
        remove_env.push("XDG_RUNTIME_DIR");
    }
    let child = child::spawn(&child::Launch {
        argv: &prepared.argv,
        remove_env: &remove_env,
        set_env,
        run_as: prepared.run_as.as_ref(),
        secret: &prepared.token,
    })?;
    let pid = child.pid;
    tracing::info!(pid, socket_dir = %prepared.dir.path.display(), command = %prepared.command, "jupyter started");

    let (tx, exited) = watch::channel(None);
    tokio::spawn(async move {
        loop {
            if let Some(code) = child::reap(pid) {
                tx.send_replace(Some(code));
            }
            if chld.recv().await.is_none() {
                return;
            }
        }
    });
    let mut stopping = exited.clone();
    tokio::spawn(async move {
        let mut deadline: Option<tokio::time::Instant> = None;
        loop {
            let until_kill = async {
                match deadline {
                    Some(d) => tokio::time::sleep_until(d).await,
                    None => std::future::pending().await,
                }
            };
            let sig = tokio::select! {
                _ = term.recv() => libc::SIGTERM,
                _ = int.recv() => libc::SIGINT,
                _ = hup.recv() => libc::SIGHUP,
                _ = stopping.wait_for(Option::is_some) => return,
                () = until_kill => {
                    tracing::warn!(pid, grace_s = grace.as_secs(), "jupyter did not stop within the grace period: killing it");
                    child::kill_group(pid);
                    deadline = None;
                    continue;
                }
            };
            tracing::info!(pid, signal = sig, "forwarding signal to jupyter");
            child::signal(pid, sig);
            if sig != libc::SIGHUP && deadline.is_none() {
                deadline = Some(tokio::time::Instant::now() + grace);
            }
        }
    });
    Ok(Supervised {
        prepared,
        pid,
        output: child.output,
        exited,
    })
}

impl Supervised {
    /// Waits until Jupyter answers `GET /api` on its socket, then removes
    /// the token file (Jupyter has read it) and passes Jupyter's output
    /// through from now on.
    ///
    /// # Errors
    /// Jupyter ended first, or did not answer within [`READY_TIMEOUT`].
    pub async fn ready(&mut self) -> Result<(), SuperviseError> {
        let socket = self.prepared.dir.path.join("jupyter.sock");
        let deadline = tokio::time::Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(code) = *self.exited.borrow() {
                // Let the output threads drain the pipes.
                tokio::time::sleep(Duration::from_millis(100)).await;
                return Err(SuperviseError::EndedEarly {
                    command: self.prepared.command.clone(),
                    code,
                    output: self.output.last_lines(),
                });
            }
            if answers(&socket).await {
                break;
            }
            if tokio::time::Instant::now() >= deadline {
                child::kill_group(self.pid);
                return Err(SuperviseError::NotReady {
                    command: self.prepared.command.clone(),
                    output: self.output.last_lines(),
                });
            }
            let exited = self.exited.wait_for(Option::is_some);
            let _ = tokio::time::timeout(Duration::from_millis(100), exited).await;
        }
        let _ = std::fs::remove_file(self.prepared.dir.token_file());
        let _ = std::fs::remove_file(self.prepared.dir.identity_file());
        self.output.go_live();
        let p = &self.prepared;
        match probe_identity(&socket, &p.identity, &p.base_url).await {
            Ok(()) => {
                p.identity.confirm();
                tracing::info!(
                    "jupyter knows nbgate's users: requests carry a signed user name, not Jupyter's token"
                );
            }
            Err(why) => tracing::info!(
                "jupyter does not use nbgate's identity provider ({why}): every user reaches it as its token holder"
            ),
        }
        tracing::info!(pid = self.pid, "jupyter is ready");
        Ok(())
    }

    /// Resolves when Jupyter has ended; nbgate then stops serving.
    pub fn ended(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut exited = self.exited.clone();
        async move {
            let _ = exited.wait_for(Option::is_some).await;
        }
    }

    /// Jupyter's exit code, once it has ended.
    pub fn exit_code(&self) -> Option<ExitCode> {
        *self.exited.borrow()
    }

    /// Stops Jupyter (SIGTERM, then SIGKILL after `grace`) when nbgate
    /// must end for a reason of its own, and waits for it.
    pub async fn stop(&mut self, grace: Duration) -> Option<ExitCode> {
        if self.exit_code().is_none() {
            child::signal(self.pid, libc::SIGTERM);
            let exited = self.exited.wait_for(Option::is_some);
            if tokio::time::timeout(grace, exited).await.is_err() {
                child::kill_group(self.pid);
                let _ = self.exited.wait_for(Option::is_some).await;
            }
        }
        self.exit_code()
    }
}

/// Whether Jupyter answers `GET /api` on `socket` with 200 (it needs no
/// authentication).
async fn answers(socket: &Path) -> bool {
    let attempt = async {
        let mut s = tokio::net::UnixStream::connect(socket).await.ok()?;
        s.write_all(b"GET /api HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            .await
            .ok()?;
        let mut head = [0u8; 12];
        s.read_exact(&mut head).await.ok()?;
        Some(head.starts_with(b"HTTP/1.1 200") || head.starts_with(b"HTTP/1.0 200"))
    };
    tokio::time::timeout(Duration::from_secs(2), attempt)
        .await
        .ok()
        .flatten()
        .unwrap_or(false)
}

/// The user name of the identity probe (it appears in Jupyter's log).
const PROBE_USER: &str = "nbgate-probe";

/// Whether Jupyter verifies nbgate's identity header: `GET <base>api/me`
/// signed for [`PROBE_USER`], without the token, must name that user. Else
/// why not, in words for the log (an older jupyter_server, or another
/// provider configured).
async fn probe_identity(socket: &Path, key: &IdentityKey, base_url: &str) -> Result<(), String> {
    let target = format!("{base_url}api/me");
    let header = identity::sign(
        &identity::key(key.secret()),
        PROBE_USER,
        identity::now(),
        "GET",
        &target,
    );
    let header = header.to_str().expect("sign makes ASCII");
    let attempt = async {
        let mut s = tokio::net::UnixStream::connect(socket).await?;
        // HTTP/1.0: the answer ends with the connection, never chunked.
        let head = format!(
            "GET {target} HTTP/1.0\r\nHost: localhost\r\n{}: {header}\r\n\r\n",
            identity::HEADER
        );
        s.write_all(head.as_bytes()).await?;
        let mut answer = Vec::new();
        s.take(64 * 1024).read_to_end(&mut answer).await?;
        Ok::<_, std::io::Error>(answer)
    };
    let answer = match tokio::time::timeout(Duration::from_secs(10), attempt).await {
        Ok(Ok(a)) => a,
        Ok(Err(e)) => return Err(format!("probe failed: {e}")),
        Err(_) => return Err("no answer to the probe within 10s".into()),
    };
    let text = String::from_utf8_lossy(&answer);
    let status = text.split_whitespace().nth(1).unwrap_or("");
    if status != "200" {
        return Err(format!(
            "a signed request got {status}, not 200; it needs jupyter_server >= 2.0 and no identity_provider_class of its own"
        ));
    }
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    let user = serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v["identity"]["username"].as_str().map(str::to_owned));
    match user {
        Some(u) if u == PROBE_USER => Ok(()),
        _ => {
            Err("Jupyter did not name the signed user: another identity provider is in use".into())
        }
    }
}

/// The lines printed once Jupyter is ready, the way Jupyter prints its URL:
/// where to open it, and on first start the generated password.
pub fn banner(
    listen: &[SocketAddr],
    base_url: &str,
    initial: Option<(&str, &str)>,
    password_source: Option<&str>,
    state_dir: &Path,
) -> String {
    let mut s = String::from("\n    Jupyter is running behind nbgate. Open it at:\n");
    for addr in listen {
        let host = if addr.ip().is_unspecified() {
            "localhost".to_owned()
        } else if addr.is_ipv6() {
            format!("[{}]", addr.ip())
        } else {
            addr.ip().to_string()
        };
        let port = if addr.port() == 443 {
            String::new()
        } else {
            format!(":{}", addr.port())
        };
        s.push_str(&format!("        https://{host}{port}{base_url}\n"));
    }
    match (initial, password_source) {
        (Some((user, password)), _) => s.push_str(&format!(
            "    user: {user}\n    password: {password}\n    (shown once; only its hash is kept in {})\n",
            state_dir.join("auth").display()
        )),
        (None, Some(src)) => s.push_str(&format!("    log in with the password from {src}\n")),
        (None, None) => {}
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jupyter_gets_none_of_the_variables_systemd_hands_nbgate() {
        for var in crate::systemd::HANDOVER_ENV {
            assert!(REMOVED_ENV.contains(&var), "{var} would reach Jupyter");
        }
    }

    #[test]
    fn the_banner_names_a_reachable_url_and_the_first_password() {
        let listen: Vec<SocketAddr> = vec!["0.0.0.0:8443".parse().expect("addr")];
        let b = banner(
            &listen,
            "/",
            Some(("jupyter", "pw123")),
            None,
            Path::new("/s"),
        );
        assert!(b.contains("https://localhost:8443/\n"), "{b}");
        assert!(b.contains("password: pw123"), "{b}");
        let listen: Vec<SocketAddr> = vec!["[::1]:443".parse().expect("addr")];
        let b = banner(
            &listen,
            "/nb/",
            None,
            Some("environment variable JUPYTER_PASSWORD"),
            Path::new("/s"),
        );
        assert!(b.contains("https://[::1]/nb/\n"), "{b}");
        assert!(b.contains("JUPYTER_PASSWORD"), "{b}");
    }
}
