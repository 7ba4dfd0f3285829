//! A real OpenID Connect provider for the single sign-on tests (`tests/oidc.rs`, the Chromium
//! sign-in in `tests/browser.rs`): `tests/oidc/provider.mjs`, the certified `oidc-provider`
//! library from npm under `$NBGATE_TEST_NODE` (`tests/run.sh` installs it), on a loopback port,
//! killed on drop; and the `[[auth.oidc]]` entries that point nbgate at it.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::jupyterhub::node_dir;
use super::nbgate::NbgateBuilder;
use super::poll_until;
use super::process::{drain_lines, kill_tree, OutputLog};

const T: Duration = Duration::from_secs(30);
/// The secret of the provider's client `nbgate` (a file nbgate reads: `client_secret_file`).
pub const CLIENT_SECRET: &str = "nbgate-test-client-secret-7d1f";

/// The provider process; killed on drop.
pub struct Provider {
    child: Option<Child>,
    pub issuer: String,
    log: Arc<Mutex<OutputLog>>,
}

impl Provider {
    /// Starts the provider (`mode`: see provider.mjs) for nbgate on `gate_port`, on any free
    /// port (`port` 0) or the given one; waits for its `ready` line.
    pub async fn start(gate_port: u16, mode: &str, port: u16) -> Provider {
        Self::start_with(gate_port, mode, port, None).await
    }

    /// As `start`, over HTTPS with the certificate and key in `tls` (PEM files: cert, key);
    /// the issuer is then `https://127.0.0.1:PORT`.
    pub async fn start_https(gate_port: u16, tls: (&Path, &Path)) -> Provider {
        Self::start_with(gate_port, "normal", 0, Some(tls)).await
    }

    async fn start_with(
        gate_port: u16,
        mode: &str,
        port: u16,
        tls: Option<(&Path, &Path)>,
    ) -> Provider {
        let node_modules = node_dir().join("node_modules/oidc-provider");
        assert!(
            node_modules.exists(),
            "{} is missing: run `bash tests/run.sh` once (it installs oidc-provider under .node)",
            node_modules.display()
        );
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/oidc/provider.mjs");
        let mut cmd = Command::new("node");
        cmd.arg(&script)
            .env("NBGATE_TEST_NODE", node_dir())
            .env("OIDC_REDIRECT_URIS", redirect_uris(gate_port))
            .env("OIDC_CLIENT_SECRET", CLIENT_SECRET)
            .env("OIDC_MODE", mode)
            .env("OIDC_PORT", port.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some((cert, key)) = tls {
            cmd.env("OIDC_TLS_CERT", cert).env("OIDC_TLS_KEY", key);
        }
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        let mut child = cmd.spawn().expect("start node");
        let log = Arc::new(Mutex::new(OutputLog::default()));
        drain_lines(child.stdout.take().expect("stdout"), Arc::clone(&log));
        drain_lines(child.stderr.take().expect("stderr"), Arc::clone(&log));
        let mut provider = Provider {
            child: Some(child),
            issuer: String::new(),
            log,
        };
        let log = Arc::clone(&provider.log);
        provider.issuer = poll_until(T, "the provider's ready line", || {
            let log = Arc::clone(&log);
            async move {
                let log = log.lock().expect("log lock");
                assert!(
                    log.closed < 2,
                    "the provider exited:\n{}",
                    log.lines.join("\n")
                );
                log.lines
                    .iter()
                    .find_map(|l| l.strip_prefix("ready ").map(str::to_owned))
            }
        })
        .await;
        provider
    }

    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            kill_tree(&mut child);
        }
    }
}

impl Drop for Provider {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The redirect URIs registered at the provider: what nbgate derives from the Host a client
/// sends (`localhost:PORT`, as the test clients do, or `127.0.0.1:PORT`).
fn redirect_uris(gate_port: u16) -> String {
    format!(
        "https://localhost:{gate_port}/_nbgate/oidc/callback,https://127.0.0.1:{gate_port}/_nbgate/oidc/callback"
    )
}

/// One `[[auth.oidc]]` entry: e-mail domain example.com or group jupyter-users.
pub fn provider_entry(dir: &Path, name: &str, issuer: &str) -> toml::Value {
    let secret = dir.join(format!("{name}-secret"));
    std::fs::write(&secret, format!("{CLIENT_SECRET}\n")).expect("write secret");
    let mut t = toml::Table::new();
    t.insert("name".into(), name.into());
    t.insert("display_name".into(), format!("Test IdP {name}").into());
    t.insert("issuer".into(), issuer.into());
    t.insert("client_id".into(), "nbgate".into());
    t.insert(
        "client_secret_file".into(),
        secret.display().to_string().into(),
    );
    t.insert(
        "scopes".into(),
        toml::Value::Array(vec![
            "openid".into(),
            "email".into(),
            "profile".into(),
            "groups".into(),
        ]),
    );
    t.insert(
        "allowed_domains".into(),
        toml::Value::Array(vec!["example.com".into()]),
    );
    t.insert(
        "allowed_groups".into(),
        toml::Value::Array(vec!["jupyter-users".into()]),
    );
    toml::Value::Table(t)
}

/// `builder` listening on `127.0.0.1:port` (the port the provider's redirect URIs name) with the
/// given providers (name, issuer).
pub fn with_providers(
    builder: NbgateBuilder,
    port: u16,
    providers: &[(&str, &str)],
) -> NbgateBuilder {
    let builder = builder.set(
        "server.listen",
        toml::Value::Array(vec![format!("127.0.0.1:{port}").into()]),
    );
    let entries = providers
        .iter()
        .map(|(name, issuer)| provider_entry(builder.dir(), name, issuer))
        .collect();
    builder.set("auth.oidc", toml::Value::Array(entries))
}
