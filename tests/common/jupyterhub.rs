//! JupyterHub from the test venv with its configurable-http-proxy (npm, under
//! `$NBGATE_TEST_NODE`, else `<repo>/.node`; `tests/run.sh` installs both), configured by
//! `tests/fixtures/jupyterhub/jupyterhub_config.py`: users named by nbgate's identity header,
//! every user's server a `jupyterhub-singleuser` as the current uid. Everything on loopback
//! ports of its own; the Hub, its proxy and every user's server are killed on drop.

use std::fs::{File, OpenOptions};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::jupyter::{raw_get, venv_dir, Endpoint};
use super::pebble::free_port;
use super::process::kill_tree;

/// How long the Hub and its proxy may take to answer `GET /hub/api` (several seconds here,
/// much longer on a loaded machine: the Hub upgrades its database and starts the proxy first).
const READY_TIMEOUT: Duration = Duration::from_secs(120);

/// The node prefix `tests/run.sh` installs configurable-http-proxy into.
pub fn node_dir() -> PathBuf {
    std::env::var_os("NBGATE_TEST_NODE")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join(".node"))
}

fn required(path: PathBuf) -> PathBuf {
    assert!(
        path.exists(),
        "{} is missing: run `bash tests/run.sh` once (it installs jupyterhub into the test venv \
         and configurable-http-proxy under .node)",
        path.display()
    );
    path
}

/// A running JupyterHub behind its proxy.
pub struct JupyterHub {
    child: Option<Child>,
    /// The proxy's address: what nbgate forwards to.
    public: SocketAddr,
    /// Holds the Hub's database, cookie secret, users' homes and hub.log.
    dir: tempfile::TempDir,
}

impl JupyterHub {
    pub async fn start() -> JupyterHub {
        let venv = venv_dir();
        let hub = required(venv.join("bin/jupyterhub"));
        let singleuser = required(venv.join("bin/jupyterhub-singleuser"));
        let chp = required(node_dir().join("node_modules/.bin/configurable-http-proxy"));
        let config = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/jupyterhub/jupyterhub_config.py");
        let dir = tempfile::Builder::new()
            .prefix("nbgate-hub-")
            .tempdir()
            .expect("tempdir");
        let public = SocketAddr::from(([127, 0, 0, 1], free_port(false)));
        let log: File = OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.path().join("hub.log"))
            .expect("open hub.log");
        let mut cmd = Command::new(&hub);
        cmd.arg("-f")
            .arg(&config)
            .current_dir(dir.path())
            .env("NBGATE_HUB_DIR", dir.path())
            .env("NBGATE_HUB_PUBLIC_PORT", public.port().to_string())
            .env("NBGATE_HUB_PORT", free_port(false).to_string())
            .env("NBGATE_HUB_PROXY_API_PORT", free_port(false).to_string())
            .env("NBGATE_HUB_CHP", &chp)
            .env("NBGATE_HUB_SINGLEUSER", &singleuser)
            // The venv first: the users' servers and their kernels come from it.
            .env(
                "PATH",
                format!(
                    "{}:{}",
                    venv.join("bin").display(),
                    std::env::var("PATH").unwrap_or_default()
                ),
            )
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone log fd"))
            .stderr(log);
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", hub.display()));
        let mut hub = JupyterHub {
            child: Some(child),
            public,
            dir,
        };
        hub.wait_ready().await;
        hub
    }

    /// Polls the Hub's API through its proxy: both are up when it answers.
    async fn wait_ready(&mut self) {
        let deadline = tokio::time::Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                self.child = None;
                panic!("jupyterhub exited with {status}; log:\n{}", self.log());
            }
            if let Some((200, _)) = raw_get(&Endpoint::Tcp(self.public), "/hub/api", "").await {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "jupyterhub not ready on {} after {READY_TIMEOUT:?}; log:\n{}",
                self.public,
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The value for nbgate's `upstream.url`: the Hub's proxy.
    pub fn upstream_url(&self) -> String {
        format!("http://{}", self.public)
    }

    /// The proxy's address, for requests that bypass nbgate.
    pub fn public_addr(&self) -> SocketAddr {
        self.public
    }

    /// Everything the Hub (and its proxy and users' servers) printed so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("hub.log")).unwrap_or_default()
    }
}

impl Drop for JupyterHub {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            kill_tree(&mut child);
        }
        if std::thread::panicking() {
            eprintln!("----- jupyterhub log -----\n{}", self.log());
        }
    }
}
