//! The `nbgate` binary: parse the command line, load the configuration,
//! start logging and the runtime, run the chosen command, map errors to an
//! exit code.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::Parser;

use nbgate::cli::{AuditCommand, Cli, Command, TotpCommand, TotpTarget};
use nbgate::config::{Config, LogFormat, Overrides};
use nbgate::telemetry::Chain;

/// mimalloc instead of glibc malloc: a proxied request allocates and frees
/// dozens of small buffers across threads' lifetimes, and glibc's
/// `_int_malloc`/`malloc_consolidate` were ~8% of nbgate's CPU per request
/// in the issue-6 profile (benches/REPORT.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve {
            config,
            listen,
            upstream,
            state_dir,
            acme_ip,
        } => {
            let overrides = Overrides {
                listen,
                upstream,
                state_dir,
                acme_ip,
            };
            serve(config, overrides)
        }
        Command::Run {
            config,
            listen,
            state_dir,
            acme_ip,
            user,
            allow_root,
            command,
        } => {
            let overrides = Overrides {
                listen,
                upstream: None,
                state_dir,
                acme_ip,
            };
            let child = nbgate::supervisor::ChildSpec {
                command,
                user,
                allow_root,
            };
            return match run(config, overrides, child) {
                Ok(code) => ExitCode::from(code),
                Err(e) => {
                    eprintln!("nbgate: {}", Chain(e.as_ref()));
                    ExitCode::FAILURE
                }
            };
        }
        Command::ImportNginx { file } => nbgate::nginx_import::convert_file(&file)
            .map(|toml| print!("{toml}"))
            .map_err(Into::into),
        Command::CheckConfig { config } => check_config(config.as_deref()),
        Command::Audit { command } => audit(command),
        Command::Totp { command } => totp(command),
        Command::HashPassword => hash_password(),
        Command::RotateSessionKey { state_dir } => {
            let dir = state_dir.unwrap_or_else(nbgate::config::default_state_dir);
            nbgate::auth::session::SessionKeys::rotate(&dir)
                .map(|()| {
                    eprintln!(
                        "new session key in {}; restart nbgate to use it",
                        dir.join("auth").display()
                    )
                })
                .map_err(Into::into)
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("nbgate: {}", Chain(e.as_ref()));
            ExitCode::FAILURE
        }
    }
}

/// Raises the soft limit on open files to the hard limit.
///
/// Why: every proxied connection holds two descriptors (the client's and
/// Jupyter's), so `server.max_connections` (4096 by default) needs
/// thousands, while systemd starts services with a soft limit of 1024 (hard
/// limit 524288) and expects a program that needs more to raise it itself,
/// as nginx (`worker_rlimit_nofile`) and Go programs do. At 1024, a few
/// hundred slow downloads made accepts and upstream connects fail with
/// EMFILE for everyone (tests/slow_clients.rs).
fn raise_fd_limit(max_connections: usize) {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one `rlimit` into the valid pointer it is given.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        let e = std::io::Error::last_os_error();
        tracing::warn!(error = %e, "cannot read the open-file limit");
        return;
    }
    if limit.rlim_cur < limit.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: limit.rlim_max,
            rlim_max: limit.rlim_max,
        };
        // SAFETY: setrlimit reads one valid `rlimit`; raising the soft limit
        // up to the hard limit needs no privilege.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            tracing::debug!(
                from = limit.rlim_cur,
                to = raised.rlim_cur,
                "open-file limit raised"
            );
            limit = raised;
        } else {
            let e = std::io::Error::last_os_error();
            tracing::warn!(error = %e, "cannot raise the open-file limit");
        }
    }
    let needed = (max_connections as u64)
        .saturating_mul(2)
        .saturating_add(64);
    if limit.rlim_cur < needed {
        tracing::warn!(
            limit = limit.rlim_cur,
            max_connections,
            "the open-file limit is below two per connection of server.max_connections: \
             raise it (systemd: LimitNOFILE=) or lower server.max_connections"
        );
    }
}

/// `nbgate audit verify|show`.
fn audit(command: AuditCommand) -> anyhow::Result<()> {
    use nbgate::audit::verify;
    match command {
        AuditCommand::Verify { files } => {
            let r = verify::verify(&files)?;
            println!(
                "ok: {} lines, seq {}..{}, in {} file(s){}",
                r.lines,
                r.first_seq,
                r.last_seq,
                r.files.len(),
                if r.starts_mid_chain {
                    " (the chain starts after lines not given: rotated away or in other files)"
                } else {
                    ""
                }
            );
        }
        AuditCommand::Show {
            user,
            since,
            kind,
            files,
        } => {
            let since = since
                .map(|s| verify::since(&s))
                .transpose()
                .map_err(anyhow::Error::msg)?;
            let filter = verify::Filter { user, since, kind };
            verify::show(&files, &filter, &mut std::io::stdout().lock())?;
        }
    }
    Ok(())
}

/// `nbgate totp enroll|disable|recovery-codes`: the state directory's
/// TOTP files (`auth::second_factor`), which the running server reads at
/// each login (no reload needed).
fn totp(command: TotpCommand) -> anyhow::Result<()> {
    use nbgate::auth::{second_factor, totp};
    let (TotpCommand::Enroll { target, .. }
    | TotpCommand::Disable { target }
    | TotpCommand::RecoveryCodes { target }) = &command;
    let (config, state_dir) = totp_target(target)?;
    let user = target.user.as_str();
    let now = nbgate::auth::session::unix_now();
    match &command {
        TotpCommand::Enroll {
            print_secret,
            force,
            ..
        } => {
            let (print_secret, force) = (*print_secret, *force);
            let has_file = config
                .users
                .iter()
                .any(|u| u.name == user && u.totp_secret_file.is_some());
            if has_file && !print_secret {
                anyhow::bail!(
                    "{}: user {user:?} has a totp_secret_file: make its secret with --print-secret",
                    config.source.display()
                );
            }
            if !force
                && matches!(
                    second_factor::status(&config, user)?,
                    second_factor::Status::Enrolled { .. }
                )
            {
                anyhow::bail!("user {user:?} is enrolled already: --force replaces the enrolment");
            }
            let secret = totp::Secret::generate();
            let stored = (!print_secret).then_some(&secret);
            let codes = second_factor::enrol(&state_dir, user, stored, None, now)?;
            let uri = secret.otpauth_uri(user);
            let qr = totp::terminal_qr(&uri).unwrap_or_default();
            let mut shown = format!(
                "\nScan with an authenticator app, or open the URI on the phone:\n\n{qr}\n{uri}\n\nkey: {}\n\nRecovery codes (each works once; shown only now, only their hashes are kept in {}):\n",
                secret.to_grouped_base32(),
                second_factor::dir(&state_dir).display()
            );
            for code in &codes {
                shown.push_str(&format!("    {code}\n"));
            }
            if print_secret {
                // stdout carries the secret alone, for `> secret-file`.
                eprint!("{shown}");
                println!("{}", secret.to_base32());
            } else {
                print!("{shown}");
            }
        }
        TotpCommand::Disable { .. } => {
            if second_factor::remove(&state_dir, user)? {
                eprintln!("TOTP removed for {user:?}");
            } else {
                eprintln!(
                    "user {user:?} had no TOTP enrolment in {}",
                    state_dir.display()
                );
            }
        }
        TotpCommand::RecoveryCodes { .. } => {
            let codes = second_factor::regenerate_recovery(&state_dir, user)?;
            println!("New recovery codes for {user:?} (the old ones no longer work):");
            for code in &codes {
                println!("    {code}");
            }
        }
    }
    Ok(())
}

/// The configuration and state directory `nbgate totp` works on; refuses
/// a user the configuration does not know.
fn totp_target(target: &TotpTarget) -> anyhow::Result<(Config, PathBuf)> {
    let overrides = Overrides {
        state_dir: target.state_dir.clone(),
        ..Overrides::default()
    };
    let config = Config::load(target.config.as_deref(), &overrides)?;
    let user = target.user.as_str();
    let known = if config.auth.users_file.is_some() {
        true
    } else if config.users.is_empty() {
        user == config.auth.default_user
    } else {
        config.users.iter().any(|u| u.name == user)
    };
    if !known || !nbgate::config::valid_user_name(user) {
        anyhow::bail!(
            "{}: no user {user:?} in the configuration",
            config.source.display()
        );
    }
    let dir = config.server.state_dir.clone();
    Ok((config, dir))
}

fn hash_password() -> anyhow::Result<()> {
    let pw = nbgate::auth::prompt::read_new_password()?;
    println!("{}", nbgate::auth::password::hash_password(&pw)?);
    Ok(())
}

fn check_config(path: Option<&std::path::Path>) -> anyhow::Result<()> {
    let config = Config::load(path, &Overrides::default())?;
    // Validate user sources too (hash formats, files), without creating
    // state: the embedded default only applies when none is configured.
    if !config.users.is_empty() || config.auth.users_file.is_some() {
        let mut probe = config.clone();
        probe.auth.password_env = None;
        nbgate::auth::users::load(&probe)?;
    }
    // totp: a user's secret file must hold a usable secret (the server
    // would refuse that user's logins).
    for user in config.users.iter().filter(|u| u.totp_secret_file.is_some()) {
        nbgate::auth::second_factor::status(&config, &user.name)?;
    }
    println!("# effective configuration from {}", config.source.display());
    let guard = nbgate::proxy::guard::Guard::new(&config.policy);
    for line in guard.describe().lines() {
        println!("# policy: {line}");
    }
    print!("{}", config.to_toml());
    Ok(())
}

fn serve(path: Option<PathBuf>, overrides: Overrides) -> anyhow::Result<()> {
    let config = load_config(path.as_deref(), &overrides)?;
    raise_fd_limit(config.server.max_connections);
    // Before the runtime starts threads: loading may remove a plain
    // password from the environment.
    let (auth, initial) = nbgate::auth::Authenticator::try_new(&config)?;
    if let Some(first) = initial {
        // Shown once, on the terminal only (not through the log), as
        // Jupyter shows its token; only the hash is stored.
        let port = config.server.listen.first().map_or(8443, |a| a.port());
        eprintln!(
            "\n    nbgate first start: log in at https://localhost:{port}{}_nbgate/login\n    user: {}\n    password: {}\n    (shown once; only its hash is kept in {})\n",
            config.auth.base_url,
            first.user,
            first.password,
            config.server.state_dir.join("auth").display()
        );
    }
    let auth = Arc::new(auth);
    // Its writer is a thread: only once the environment was read above.
    nbgate::audit::start(&config.audit)?;
    // A reload reads the file, the environment and the overrides as this
    // start did.
    let source: nbgate::reload::Source =
        Arc::new(move || Ok(Config::load(path.as_deref(), &overrides)?));
    runtime()?.block_on(async move {
        let (config, listeners, resolver, reloader) = start_listening(config, source).await?;
        nbgate::server::run(
            config,
            listeners,
            reloader,
            resolver,
            auth,
            shutdown_signal(),
        )
        .await;
        Ok::<(), anyhow::Error>(())
    })?;
    nbgate::audit::flush();
    tracing::info!("nbgate stopped");
    Ok(())
}

/// `nbgate run`: Jupyter as a child behind nbgate; nbgate exits with
/// Jupyter's exit code.
fn run(
    path: Option<PathBuf>,
    overrides: Overrides,
    child: nbgate::supervisor::ChildSpec,
) -> anyhow::Result<u8> {
    use nbgate::supervisor;
    let mut config = load_config(path.as_deref(), &overrides)?;
    raise_fd_limit(config.server.max_connections);
    // All before the runtime starts threads: these read and remove
    // password variables from the environment.
    let password_source = supervisor::choose_login(&mut config)?;
    let prepared = supervisor::prepare(&mut config, child)?;
    let (auth, initial) = nbgate::auth::Authenticator::try_new(&config)?;
    // The banner shows a first-start password only once Jupyter is ready;
    // a start that fails before that must not keep its hash, or nobody
    // could ever log in (tests/state_faults.rs).
    let mut unshown = Unshown(initial.as_ref().map(|i| i.hash_file.clone()));
    supervisor::scrub_password_env();
    // Its writer is a thread: only once the environment was scrubbed.
    nbgate::audit::start(&config.audit)?;
    let auth = Arc::new(auth);
    let source = supervisor::reload_source(&config, move || {
        Ok(Config::load(path.as_deref(), &overrides)?)
    });
    let code = runtime()?.block_on(async move {
        // Listeners first: a port already taken fails before Jupyter starts.
        let (config, listeners, resolver, reloader) = start_listening(config, source).await?;
        let grace = config.server.shutdown_grace;
        // READY=1 follows once Jupyter answers and the listeners serve.
        nbgate::systemd::status("starting Jupyter");
        let mut jupyter = supervisor::start(prepared, grace)?;
        if let Err(e) = jupyter.ready().await {
            jupyter.stop(grace).await;
            return Err(e.into());
        }
        eprint!(
            "{}",
            supervisor::banner(
                &config.server.listen,
                &config.auth.base_url,
                initial
                    .as_ref()
                    .map(|i| (i.user.as_str(), i.password.as_str())),
                password_source.as_deref(),
                &config.server.state_dir,
            )
        );
        unshown.shown();
        nbgate::server::run(config, listeners, reloader, resolver, auth, jupyter.ended()).await;
        let code = jupyter.exit_code().map_or(1, |c| c.0);
        tracing::info!(exit_code = code, "jupyter ended; nbgate stopped");
        Ok::<u8, anyhow::Error>(code)
    })?;
    nbgate::audit::flush();
    Ok(code)
}

/// A first-start password's hash file, until the password has been shown.
struct Unshown(Option<std::path::PathBuf>);

impl Unshown {
    fn shown(&mut self) {
        self.0 = None;
    }
}

impl Drop for Unshown {
    fn drop(&mut self) {
        if let Some(path) = self.0.take() {
            let _ = std::fs::remove_file(path);
        }
    }
}

fn load_config(path: Option<&std::path::Path>, overrides: &Overrides) -> anyhow::Result<Config> {
    match Config::load(path, overrides) {
        Ok(c) => {
            nbgate::telemetry::init(c.log.format, &c.log.level);
            Ok(c)
        }
        Err(e) => {
            nbgate::telemetry::init(LogFormat::Text, "info");
            Err(e.into())
        }
    }
}

/// Single-threaded: `server::run` starts one more single-threaded runtime
/// per further core and this thread serves as the first (see
/// `server::spawn_worker` for why not a multi-threaded runtime).
fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// Loads the certificate, binds the listeners, registers SIGHUP and
/// starts certificate maintenance: everything before the first connection
/// is served.
async fn start_listening(
    config: Config,
    source: nbgate::reload::Source,
) -> anyhow::Result<(
    Arc<Config>,
    nbgate::server::Listeners,
    Arc<nbgate::tls::CertResolver>,
    nbgate::reload::Reloader,
)> {
    let config = Arc::new(config);
    let resolver = nbgate::tls::load_resolver(&config)?;
    let listeners = nbgate::server::Listeners::bind(&config).await?;
    if config.tls.mode == nbgate::config::TlsMode::Acme {
        nbgate::tls::acme::preflight(&config).await?;
    }
    let reloader = nbgate::reload::Reloader::start(source, &config, &resolver);
    tracing::info!(
        upstream = %config.upstream.url,
        state_dir = %config.server.state_dir.display(),
        version = env!("CARGO_PKG_VERSION"),
        "nbgate started"
    );
    Ok((config, listeners, resolver, reloader))
}

/// Resolves on SIGTERM (systemd, docker stop) or SIGINT (Ctrl-C).
async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot listen for SIGTERM");
            std::future::pending::<()>().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received"),
    }
}
