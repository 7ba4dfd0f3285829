//! Jupyter Server (or JupyterLab) from the test venv, on an ephemeral loopback port or a Unix
//! socket, with its own token and directories. Killed with all its kernels and terminals on drop.
//!
//! It runs without `allow_remote_access`, `allow_origin` or `trust_xheaders`: nbgate must make
//! requests that a default Jupyter accepts.

use std::fs::{File, OpenOptions};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::process::kill_tree;

/// How long Jupyter may take to answer `GET /api` after start (about 2 s normally).
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// What to start.
#[derive(Clone, Debug, Default)]
pub struct JupyterOptions {
    /// `jupyter lab` (with the Lab UI) instead of `jupyter server`.
    pub lab: bool,
    /// Listen on a Unix socket (`--ServerApp.sock`) instead of a TCP port.
    pub unix_socket: bool,
    /// `--ServerApp.base_url` (e.g. `/jupyter/`); `None` is Jupyter's `/`.
    pub base_url: Option<String>,
    /// Jupyter's defaults: no token option, so it makes a random one on every start (read back
    /// from its runtime file), as a user's plain `jupyter lab` does.
    pub generated_token: bool,
}

/// Where Jupyter listens.
#[derive(Clone, Debug)]
pub enum Endpoint {
    Tcp(SocketAddr),
    Unix(PathBuf),
}

/// A running Jupyter Server.
pub struct Jupyter {
    child: Option<Child>,
    options: JupyterOptions,
    endpoint: Endpoint,
    token: String,
    /// Holds root/, runtime/, data/, config/, ipython/, the token file and jupyter.log.
    dir: tempfile::TempDir,
}

/// The venv the tests use: `$NBGATE_TEST_VENV`, else `<repo>/.venv`.
pub fn venv_dir() -> PathBuf {
    std::env::var_os("NBGATE_TEST_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv"))
}

fn jupyter_bin() -> PathBuf {
    let bin = venv_dir().join("bin/jupyter");
    assert!(
        bin.exists(),
        "{} is missing: run `bash tests/run.sh` once to create the test venv \
         (or point NBGATE_TEST_VENV at a venv with jupyter-server and ipykernel)",
        bin.display()
    );
    bin
}

fn free_port() -> u16 {
    super::pebble::free_port(false)
}

impl Jupyter {
    /// `jupyter server` on a TCP port.
    pub async fn start() -> Jupyter {
        Self::start_with(JupyterOptions::default()).await
    }

    /// `jupyter server` on a Unix socket.
    pub async fn start_unix() -> Jupyter {
        Self::start_with(JupyterOptions {
            unix_socket: true,
            ..JupyterOptions::default()
        })
        .await
    }

    /// `jupyter lab` (the browser UI) on a TCP port.
    pub async fn start_lab() -> Jupyter {
        Self::start_with(JupyterOptions {
            lab: true,
            ..JupyterOptions::default()
        })
        .await
    }

    pub async fn start_with(options: JupyterOptions) -> Jupyter {
        let bin = jupyter_bin();
        let dir = tempfile::Builder::new()
            .prefix("nbgate-jupyter-")
            .tempdir()
            .expect("tempdir");
        for sub in ["root", "runtime", "data", "config", "ipython"] {
            std::fs::create_dir(dir.path().join(sub)).expect("create jupyter dir");
        }
        let token = super::random_hex(24);
        std::fs::write(dir.path().join("token"), &token).expect("write token file");
        let endpoint = if options.unix_socket {
            Endpoint::Unix(dir.path().join("jupyter.sock"))
        } else {
            Endpoint::Tcp(SocketAddr::from(([127, 0, 0, 1], free_port())))
        };
        let mut jupyter = Jupyter {
            child: None,
            options,
            endpoint,
            token,
            dir,
        };
        // The port was free a moment ago; if something took it meanwhile, pick another once.
        if let Err(first) = jupyter.spawn_and_wait(&bin).await {
            if let Endpoint::Tcp(_) = jupyter.endpoint {
                jupyter.endpoint = Endpoint::Tcp(SocketAddr::from(([127, 0, 0, 1], free_port())));
                if let Err(second) = jupyter.spawn_and_wait(&bin).await {
                    panic!("jupyter did not start (twice): {first}\n{second}");
                }
            } else {
                panic!("jupyter did not start: {first}");
            }
        }
        jupyter
    }

    /// Kills Jupyter (and its kernels), keeping its directories, port and token.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            kill_tree(&mut child);
        }
        if let Endpoint::Unix(path) = &self.endpoint {
            let _ = std::fs::remove_file(path);
        }
    }

    /// Starts Jupyter again on the same port or socket, with the same token.
    pub async fn restart(&mut self) {
        self.stop();
        let bin = jupyter_bin();
        if let Err(e) = self.spawn_and_wait(&bin).await {
            panic!("jupyter did not restart on {:?}: {e}", self.endpoint);
        }
    }

    pub fn token(&self) -> &str {
        &self.token
    }

    /// Jupyter's runtime directory (`JUPYTER_RUNTIME_DIR`), where it writes `jpserver-PID.json`.
    pub fn runtime_dir(&self) -> PathBuf {
        self.dir.path().join("runtime")
    }

    /// The token in the running server's runtime file.
    fn runtime_token(&self) -> Option<String> {
        let pid = self.pid()?;
        let text = std::fs::read_to_string(self.runtime_dir().join(format!("jpserver-{pid}.json")))
            .ok()?;
        let v: serde_json::Value = serde_json::from_str(&text).ok()?;
        Some(v["token"].as_str()?.to_owned())
    }

    /// A file holding the token, for `upstream.token_file`.
    pub fn token_file(&self) -> PathBuf {
        self.dir.path().join("token")
    }

    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// The value for nbgate's `upstream.url`: `http://127.0.0.1:PORT` or `unix:/path`.
    pub fn upstream_url(&self) -> String {
        match &self.endpoint {
            Endpoint::Tcp(addr) => format!("http://{addr}"),
            Endpoint::Unix(path) => format!("unix:{}", path.display()),
        }
    }

    /// Jupyter's `root_dir` (where the contents API reads and writes).
    pub fn root_dir(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Everything Jupyter printed so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("jupyter.log")).unwrap_or_default()
    }

    /// `GET path` straight to Jupyter (not through nbgate), with the token: `(status, body)`.
    pub async fn direct_get(&self, path: &str) -> Option<(u16, String)> {
        let auth = format!("Authorization: token {}\r\n", self.token);
        raw_get(&self.endpoint, path, &auth).await
    }

    async fn spawn_and_wait(&mut self, bin: &Path) -> Result<(), String> {
        let d = self.dir.path();
        let log: File = OpenOptions::new()
            .create(true)
            .append(true)
            .open(d.join("jupyter.log"))
            .expect("open jupyter.log");
        let mut cmd = Command::new(bin);
        cmd.arg(if self.options.lab { "lab" } else { "server" });
        match &self.endpoint {
            Endpoint::Tcp(addr) => {
                cmd.arg("--ServerApp.ip=127.0.0.1")
                    .arg(format!("--ServerApp.port={}", addr.port()))
                    // Without this Jupyter silently moves to another port when ours is taken.
                    .arg("--ServerApp.port_retries=0");
            }
            Endpoint::Unix(path) => {
                cmd.arg(format!("--ServerApp.sock={}", path.display()));
            }
        }
        if let Some(base) = &self.options.base_url {
            cmd.arg(format!("--ServerApp.base_url={base}"));
        }
        if !self.options.generated_token {
            cmd.arg(format!("--IdentityProvider.token={}", self.token));
        }
        cmd.arg(format!("--ServerApp.root_dir={}", d.join("root").display()))
            .arg("--ServerApp.allow_root=True")
            .arg("--no-browser")
            // Terminals start in the working directory: keep them out of the repository.
            .current_dir(d.join("root"))
            .env("JUPYTER_RUNTIME_DIR", d.join("runtime"))
            .env("JUPYTER_DATA_DIR", d.join("data"))
            .env("JUPYTER_CONFIG_DIR", d.join("config"))
            .env("IPYTHONDIR", d.join("ipython"))
            .env("JUPYTER_PLATFORM_DIRS", "1")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone log fd"))
            .stderr(log);
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        let child = cmd
            .spawn()
            .map_err(|e| format!("spawn {}: {e}", bin.display()))?;
        self.child = Some(child);

        let deadline = tokio::time::Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                self.child = None;
                return Err(format!(
                    "jupyter exited with {status}; log:\n{}",
                    self.log()
                ));
            }
            let api = format!("{}api", self.options.base_url.as_deref().unwrap_or("/"));
            if let Some((200, _)) = raw_get(&self.endpoint, &api, "").await {
                if self.options.generated_token {
                    self.token = self.runtime_token().ok_or("no token in the runtime file")?;
                }
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                self.stop();
                return Err(format!(
                    "jupyter not ready on {:?} after {READY_TIMEOUT:?}; log:\n{}",
                    self.endpoint,
                    self.log()
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Jupyter {
    fn drop(&mut self) {
        self.stop();
        if std::thread::panicking() {
            eprintln!(
                "----- jupyter log ({:?}) -----\n{}",
                self.endpoint,
                self.log()
            );
        }
    }
}

/// A minimal HTTP/1.1 GET straight to Jupyter (`Connection: close`), so readiness checks do not
/// depend on nbgate or on reqwest's Unix-socket support. `None` when it cannot connect or times
/// out.
pub async fn raw_get(
    endpoint: &Endpoint,
    path: &str,
    extra_headers: &str,
) -> Option<(u16, String)> {
    let exchange = async {
        match endpoint {
            Endpoint::Tcp(addr) => {
                let stream = tokio::net::TcpStream::connect(addr).await.ok()?;
                exchange(stream, &addr.to_string(), path, extra_headers).await
            }
            Endpoint::Unix(sock) => {
                let stream = tokio::net::UnixStream::connect(sock).await.ok()?;
                exchange(stream, "localhost", path, extra_headers).await
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(5), exchange)
        .await
        .ok()
        .flatten()
}

async fn exchange(
    mut stream: impl AsyncRead + AsyncWrite + Unpin,
    host: &str,
    path: &str,
    extra_headers: &str,
) -> Option<(u16, String)> {
    let request =
        format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n{extra_headers}Connection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.ok()?;
    let text = String::from_utf8_lossy(&response);
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string())?;
    Some((status, body))
}
