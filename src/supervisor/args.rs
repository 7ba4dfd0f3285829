//! The command line Jupyter is started with: the user's own, checked for
//! options that would undo what nbgate sets up, plus the `--ServerApp.*`
//! options nbgate needs.
//!
//! Pure: no process or file is touched here, so every rule is unit-tested.

use std::ffi::OsString;
use std::path::Path;

/// An argument of the user's that contradicts nbgate's setup.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ArgError {
    #[error("no Jupyter command after `--` (e.g. `nbgate run -- jupyter lab`)")]
    Empty,
    #[error("`{arg}`: {why}")]
    Contradicts { arg: String, why: &'static str },
}

/// What nbgate adds to the user's command.
#[derive(Debug, Clone)]
pub struct Setup<'a> {
    /// Jupyter's Unix socket, inside nbgate's private directory.
    pub socket: &'a Path,
    /// nbgate's `auth.base_url` ("/" when Jupyter is served at the root).
    pub base_url: &'a str,
    /// Jupyter runs as root (only with `--allow-root`).
    pub allow_root: bool,
}

/// Why an option of the user's is refused: each one would let clients reach
/// Jupyter around nbgate, or stop nbgate from reaching it.
fn refusal(name: &str) -> Option<&'static str> {
    const LISTEN: &str = "nbgate puts Jupyter on a private Unix socket and listens for it; \
                          set nbgate's --listen (before `--`) instead";
    const TOKEN: &str = "nbgate gives Jupyter a fresh token of its own and never shows it; \
                         nbgate's login protects Jupyter";
    const TLS: &str = "nbgate terminates HTTPS itself; Jupyter behind it speaks plain HTTP on \
                       its private socket";
    const ROOT: &str = "pass --allow-root to nbgate (before `--`) instead, or --user NAME";
    const BASE: &str = "set auth.base_url in nbgate's config instead; nbgate passes it on";
    // Compared without the class prefix (`ServerApp.`, `NotebookApp.`,
    // `IdentityProvider.`), the way Jupyter's aliases resolve.
    let short = name
        .strip_prefix("ServerApp.")
        .or_else(|| name.strip_prefix("NotebookApp."))
        .or_else(|| name.strip_prefix("IdentityProvider."))
        .unwrap_or(name);
    Some(match short {
        "ip"
        | "port"
        | "port-retries"
        | "port_retries"
        | "sock"
        | "sock-mode"
        | "sock_mode"
        | "allow_remote_access" => LISTEN,
        "token" => TOKEN,
        "certfile" | "keyfile" | "client-ca" | "client_ca" => TLS,
        "allow-root" | "allow_root" => ROOT,
        "base_url" | "base-url" => BASE,
        _ => return None,
    })
}

/// The full argv for Jupyter: the user's command, then nbgate's options.
/// nbgate's come last so that, were a contradicting one missed, Jupyter's
/// "last one wins" rule still applies nbgate's.
///
/// # Errors
/// An empty command, or a user argument that contradicts nbgate's setup.
pub fn build(user: &[OsString], setup: &Setup<'_>) -> Result<Vec<OsString>, ArgError> {
    if user.is_empty() {
        return Err(ArgError::Empty);
    }
    for arg in &user[1..] {
        let Some(text) = arg.to_str() else { continue };
        let Some(opt) = text.strip_prefix("--") else {
            continue;
        };
        let name = opt.split_once('=').map_or(opt, |(n, _)| n);
        if let Some(why) = refusal(name) {
            return Err(ArgError::Contradicts {
                arg: text.to_owned(),
                why,
            });
        }
    }
    let mut argv = user.to_vec();
    // A socket path need not be UTF-8: built as an OsString.
    let mut sock = OsString::from("--ServerApp.sock=");
    sock.push(setup.socket.as_os_str());
    argv.push(sock);
    argv.push("--ServerApp.sock_mode=0600".into());
    argv.push("--ServerApp.open_browser=False".into());
    // Without a terminal to ask, Jupyter's first SIGINT would only ask
    // "Shut down this Jupyter server (y/[n])?" and carry on; nbgate forwards
    // SIGINT meaning "stop", as Ctrl-C or an orchestrator means it.
    argv.push("--ServerApp.answer_yes=True".into());
    if setup.base_url != "/" {
        argv.push(format!("--ServerApp.base_url={}", setup.base_url).into());
    }
    if setup.allow_root {
        argv.push("--ServerApp.allow_root=True".into());
    }
    // A class name, no secret. A jupyter_server without identity providers
    // (< 2.0) only warns about an option it does not know; whether the
    // provider is in use is checked once Jupyter answers
    // (`Supervised::ready`).
    argv.push(
        format!(
            "--ServerApp.identity_provider_class={}",
            crate::jupyter::identity::PROVIDER_CLASS
        )
        .into(),
    );
    Ok(argv)
}

/// The program's name as shown in messages (`jupyter lab`, `python -m jupyterlab`).
pub fn display(user: &[OsString]) -> String {
    user.iter()
        .take(3)
        .map(|a| a.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(args: &[&str]) -> Vec<OsString> {
        args.iter().map(OsString::from).collect()
    }

    fn setup() -> Setup<'static> {
        Setup {
            socket: Path::new("/tmp/nbgate-run-x/jupyter.sock"),
            base_url: "/",
            allow_root: false,
        }
    }

    #[test]
    fn the_users_arguments_pass_through_with_nbgates_options_after_them() {
        let argv = build(&os(&["jupyter", "lab", "--notebook-dir=/data"]), &setup()).expect("ok");
        let argv: Vec<String> = argv.iter().map(|a| a.to_string_lossy().into()).collect();
        assert_eq!(&argv[..3], ["jupyter", "lab", "--notebook-dir=/data"]);
        assert!(argv.contains(&"--ServerApp.sock=/tmp/nbgate-run-x/jupyter.sock".into()));
        assert!(argv.contains(&"--ServerApp.open_browser=False".into()));
        assert!(argv.contains(
            &"--ServerApp.identity_provider_class=nbgate_identity.NbgateIdentityProvider".into()
        ));
        assert!(!argv
            .iter()
            .any(|a| a.contains("base_url") || a.contains("allow_root")));
        // The token never travels in argv.
        assert!(!argv.iter().any(|a| a.contains("token")), "{argv:?}");
    }

    #[test]
    fn base_url_and_allow_root_are_passed_when_set() {
        let s = Setup {
            base_url: "/nb/",
            allow_root: true,
            ..setup()
        };
        let argv = build(&os(&["python", "-m", "jupyterlab"]), &s).expect("ok");
        let argv: Vec<String> = argv.iter().map(|a| a.to_string_lossy().into()).collect();
        assert!(argv.contains(&"--ServerApp.base_url=/nb/".into()));
        assert!(argv.contains(&"--ServerApp.allow_root=True".into()));
    }

    #[test]
    fn options_that_would_expose_jupyter_are_refused_with_the_reason() {
        for bad in [
            "--ip=0.0.0.0",
            "--port=8888",
            "--ServerApp.ip=0.0.0.0",
            "--ServerApp.port=9999",
            "--NotebookApp.ip=*",
            "--sock=/tmp/x.sock",
            "--IdentityProvider.token=abc",
            "--ServerApp.token=",
            "--certfile=/x.pem",
            "--allow-root",
            "--ServerApp.allow_remote_access=True",
            "--ServerApp.base_url=/x/",
        ] {
            let err = build(&os(&["jupyter", "lab", bad]), &setup()).expect_err(bad);
            assert!(matches!(err, ArgError::Contradicts { .. }), "{bad}");
            assert!(err.to_string().starts_with(&format!("`{bad}`: ")), "{err}");
        }
        // The space-separated form too.
        let err = build(&os(&["jupyter", "lab", "--port", "9999"]), &setup()).expect_err("port");
        assert!(err.to_string().contains("--listen"), "{err}");
    }

    #[test]
    fn harmless_lookalikes_pass() {
        for ok in [
            "--no-browser",
            "--notebook-dir=/x",
            "--ServerApp.root_dir=/x",
            "--ip-ranges",
        ] {
            build(&os(&["jupyter", "lab", ok]), &setup()).expect(ok);
        }
        assert_eq!(build(&[], &setup()).expect_err("empty"), ArgError::Empty);
    }
}
