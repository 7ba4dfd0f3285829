//! Processes the harness starts: the upstream, Jupyter and the contenders
//! (nbgate, nginx, Caddy). Each runs in its own process group with its own
//! config, pid and log files in the run's temp directory, and is killed
//! (group SIGTERM, then SIGKILL) when its handle drops, also on panic.

use std::fs;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::net::BoxError;

/// A started process (group). Dropping it stops the whole group.
pub struct Proc {
    pub name: String,
    child: Child,
}

impl Proc {
    pub fn spawn(name: &str, cmd: &mut Command, log: &Path) -> Result<Proc, BoxError> {
        let out = fs::File::create(log)?;
        std::os::unix::process::CommandExt::process_group(cmd, 0);
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .map_err(|e| format!("spawn {name}: {e}"))?;
        Ok(Proc {
            name: name.to_owned(),
            child,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Fails if the process has already exited.
    pub fn check_alive(&mut self) -> Result<(), BoxError> {
        match self.child.try_wait()? {
            Some(st) => Err(format!("{} exited early: {st}", self.name).into()),
            None => Ok(()),
        }
    }

    /// Resident memory of the process and all its descendants, KiB.
    pub fn rss_kib(&self) -> u64 {
        tree(self.pid())
            .into_iter()
            .map(|p| status_kib(p, "VmRSS:"))
            .sum()
    }

    /// CPU time (user + system) the process and its descendants have used
    /// so far, seconds: a figure steadier than throughput on a shared
    /// machine, because it does not depend on what else got the cores.
    pub fn cpu_secs(&self) -> f64 {
        // SAFETY: sysconf has no preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
        tree(self.pid())
            .into_iter()
            .filter_map(|p| fs::read_to_string(format!("/proc/{p}/stat")).ok())
            .filter_map(|stat| {
                // Fields 14 and 15 (utime, stime) after the command name.
                let rest = stat.rsplit_once(')')?.1;
                let mut f = rest.split_whitespace().skip(11);
                let user: f64 = f.next()?.parse().ok()?;
                let system: f64 = f.next()?.parse().ok()?;
                Some((user + system) / hz)
            })
            .sum()
    }

    /// Peak resident memory (sum over the tree of each process's peak).
    pub fn peak_rss_kib(&self) -> u64 {
        tree(self.pid())
            .into_iter()
            .map(|p| status_kib(p, "VmHWM:"))
            .sum()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let pgid = self.child.id() as i32;
        // SAFETY: kill(2) with a negative pid signals the process group we
        // created for this child; no memory is touched.
        unsafe {
            libc::kill(-pgid, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                // Children of the leader (nginx workers) may linger a moment.
                unsafe {
                    libc::kill(-pgid, libc::SIGKILL);
                }
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        // SAFETY: as above.
        unsafe {
            libc::kill(-pgid, libc::SIGKILL);
        }
        let _ = self.child.wait();
    }
}

/// `pid` and all its descendants.
fn tree(pid: u32) -> Vec<u32> {
    let mut all = vec![pid];
    let mut parents: Vec<(u32, u32)> = Vec::new();
    if let Ok(rd) = fs::read_dir("/proc") {
        for e in rd.flatten() {
            let Some(p) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            if let Ok(stat) = fs::read_to_string(format!("/proc/{p}/stat")) {
                // Field 4 (ppid) follows the parenthesised command name.
                if let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) {
                    if let Some(ppid) = rest.split_whitespace().nth(1).and_then(|v| v.parse().ok())
                    {
                        parents.push((p, ppid));
                    }
                }
            }
        }
    }
    let mut i = 0;
    while i < all.len() {
        let cur = all[i];
        for (p, pp) in &parents {
            if *pp == cur && !all.contains(p) {
                all.push(*p);
            }
        }
        i += 1;
    }
    all
}

fn status_kib(pid: u32, key: &str) -> u64 {
    fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(key))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// A free loopback port (bound and released; the tiny race is acceptable
/// in a benchmark that owns the machine's loopback).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind 127.0.0.1:0")
}

/// Which proxy (or none) sits in front of the upstream.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    Direct,
    Nbgate,
    /// nbgate built before the fixes (`NBGATE_BEFORE_BIN`), for a
    /// before/after comparison inside one run.
    NbgateBefore,
    /// The same nbgate with `[admin] listen` set, which turns on the
    /// per-request metrics: their cost, measured in one run.
    NbgateMetrics,
    /// The same nbgate with the audit file and code audit on (`[audit]
    /// file`, `code`, `terminal_input`): what looking at every frame a
    /// client sends costs a tunnel (issue 21: within 10% of audit off).
    NbgateAudit,
    Nginx,
    Caddy,
}

impl Kind {
    pub const ALL: [Kind; 4] = [Kind::Direct, Kind::Nbgate, Kind::Nginx, Kind::Caddy];
    pub const WITH_BEFORE: [Kind; 7] = [
        Kind::Direct,
        Kind::Nbgate,
        Kind::NbgateBefore,
        Kind::NbgateMetrics,
        Kind::NbgateAudit,
        Kind::Nginx,
        Kind::Caddy,
    ];

    /// An nbgate build or variant (logs in; runs only where nbgate's
    /// request path is measured, for the extra ones).
    pub fn is_nbgate(self) -> bool {
        matches!(
            self,
            Kind::Nbgate | Kind::NbgateBefore | Kind::NbgateMetrics | Kind::NbgateAudit
        )
    }

    /// A contender that only exists to compare with `nbgate`.
    pub fn is_variant(self) -> bool {
        matches!(
            self,
            Kind::NbgateBefore | Kind::NbgateMetrics | Kind::NbgateAudit
        )
    }

    pub fn name(self) -> &'static str {
        match self {
            Kind::Direct => "direct",
            Kind::Nbgate => "nbgate",
            Kind::NbgateBefore => "nbgate-before",
            Kind::NbgateMetrics => "nbgate-metrics",
            Kind::NbgateAudit => "nbgate-audit",
            Kind::Nginx => "nginx",
            Kind::Caddy => "caddy",
        }
    }

    pub fn parse(s: &str) -> Option<Kind> {
        Kind::WITH_BEFORE.into_iter().find(|k| k.name() == s)
    }
}

/// Everything the contenders share.
pub struct Env {
    pub dir: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
    pub nbgate_bin: PathBuf,
    pub nbgate_before_bin: Option<PathBuf>,
    pub workers: usize,
    pub user: String,
    pub password: String,
    pub password_hash: String,
    /// Extra TOML for nbgate's `[policy]` section (empty until policy lands).
    pub policy_toml: String,
}

/// What a contender forwards to.
#[derive(Clone)]
pub struct Backend {
    pub port: u16,
    /// Jupyter's token, for the Jupyter runs (nbgate injects it upstream).
    pub jupyter_token: Option<String>,
}

/// A running contender.
pub struct Contender {
    pub kind: Kind,
    pub addr: SocketAddr,
    /// `None` for direct (nothing started: the upstream itself).
    pub proc: Option<Proc>,
}

impl Contender {
    pub async fn start(
        kind: Kind,
        env: &Env,
        backend: &Backend,
        tag: &str,
    ) -> Result<Contender, BoxError> {
        if kind == Kind::Direct {
            return Ok(Contender {
                kind,
                addr: SocketAddr::from(([127, 0, 0, 1], backend.port)),
                proc: None,
            });
        }
        let port = free_port();
        let dir = env.dir.join(format!("{}-{tag}", kind.name()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir)?;
        let log = dir.join("log.txt");
        let mut proc = match kind {
            Kind::Nbgate => start_nbgate(env, &env.nbgate_bin, backend, port, &dir, &log, "")?,
            Kind::NbgateMetrics => {
                let admin = format!("[admin]\nlisten = \"127.0.0.1:{}\"\n", free_port());
                start_nbgate(env, &env.nbgate_bin, backend, port, &dir, &log, &admin)?
            }
            Kind::NbgateAudit => {
                let audit = format!(
                    "[audit]\nfile = {:?}\ncode = true\nterminal_input = true\n",
                    dir.join("audit.jsonl").display().to_string()
                );
                start_nbgate(env, &env.nbgate_bin, backend, port, &dir, &log, &audit)?
            }
            Kind::NbgateBefore => {
                let bin = env
                    .nbgate_before_bin
                    .as_ref()
                    .ok_or("NBGATE_BEFORE_BIN not set")?;
                start_nbgate(env, bin, backend, port, &dir, &log, "")?
            }
            Kind::Nginx => start_nginx(env, backend, port, &dir, &log)?,
            Kind::Caddy => start_caddy(env, backend, port, &dir, &log)?,
            Kind::Direct => unreachable!("handled above"),
        };
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        if let Err(e) = crate::net::wait_listening(addr, Duration::from_secs(20)).await {
            let text = fs::read_to_string(&log).unwrap_or_default();
            return Err(format!("{}: {e}\n{text}", kind.name()).into());
        }
        proc.check_alive()?;
        Ok(Contender {
            kind,
            addr,
            proc: Some(proc),
        })
    }
}

fn start_nbgate(
    env: &Env,
    bin: &Path,
    backend: &Backend,
    port: u16,
    dir: &Path,
    log: &Path,
    // Sections of a variant (`[admin]`, `[audit]`).
    extra: &str,
) -> Result<Proc, BoxError> {
    let token = match &backend.jupyter_token {
        Some(t) => {
            let p = dir.join("jupyter-token");
            fs::write(&p, t)?;
            format!("token_file = {:?}\n", p.display().to_string())
        }
        None => String::new(),
    };
    let config = format!(
        r#"# nbgate contender (written by benches/loadgen).
[server]
listen = ["127.0.0.1:{port}"]
http_listen = []
state_dir = {state:?}
# Raised from 4096 for the idle-tunnel measure (10,000 tunnels); nginx's
# worker_connections is raised alike.
max_connections = 30000

[tls]
mode = "files"
cert_file = {cert:?}
key_file = {key:?}

[upstream]
url = "http://127.0.0.1:{up}"
{token}
[log]
# nginx runs with access_log off and Caddy logs no requests by default.
access_log = false

[auth]
# Default: number of cores.
# max_concurrent_verifications = 2

[[users]]
name = {user:?}
password_hash = {hash:?}

{extra}
# ---- policy (allowlist + rate limits, sized not to trigger) ----
{policy}
"#,
        state = dir.join("state").display().to_string(),
        cert = env.cert.display().to_string(),
        key = env.key.display().to_string(),
        up = backend.port,
        user = env.user,
        hash = env.password_hash,
        policy = env.policy_toml,
    );
    let path = dir.join("nbgate.toml");
    fs::write(&path, config)?;
    Proc::spawn(
        "nbgate",
        Command::new(bin)
            .arg("serve")
            .arg("--config")
            .arg(&path)
            .env("RUST_LOG", "warn")
            .env("TOKIO_WORKER_THREADS", env.workers.to_string()),
        log,
    )
}

fn start_nginx(
    env: &Env,
    backend: &Backend,
    port: u16,
    dir: &Path,
    log: &Path,
) -> Result<Proc, BoxError> {
    for sub in ["body", "proxy", "fastcgi", "uwsgi", "scgi"] {
        let d = dir.join("tmp").join(sub);
        fs::create_dir_all(&d)?;
        fs::set_permissions(&d, std::os::unix::fs::PermissionsExt::from_mode(0o777))?;
    }
    let t = |s: &str| dir.join("tmp").join(s).display().to_string();
    let config = format!(
        r#"# nginx contender (written by benches/loadgen): the config a careful admin
# writes for Jupyter (see benches/README.md).
worker_processes {workers};
worker_rlimit_nofile 20000;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 16384; }}
http {{
    access_log off;
    client_body_temp_path {body};
    proxy_temp_path {proxy};
    fastcgi_temp_path {fastcgi};
    uwsgi_temp_path {uwsgi};
    scgi_temp_path {scgi};
    tcp_nodelay on;
    # nginx closes a client connection after 1000 requests by default; the
    # other contenders never do, so a load run would measure reconnects.
    keepalive_requests 1000000;
    map $http_upgrade $connection_upgrade {{ default upgrade; '' ''; }}
    upstream backend {{
        server 127.0.0.1:{up};
        keepalive 64;
    }}
    server {{
        listen 127.0.0.1:{port} ssl http2;
        server_name localhost;
        ssl_certificate {cert};
        ssl_certificate_key {key};
        ssl_protocols TLSv1.2 TLSv1.3;
        ssl_session_cache shared:SSL:10m;
        ssl_session_timeout 1h;
        client_max_body_size 0;
        location / {{
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Host $http_host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto $scheme;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection $connection_upgrade;
            proxy_read_timeout 1h;
            proxy_request_buffering off;
            proxy_max_temp_file_size 0;
        }}
    }}
}}
"#,
        workers = env.workers,
        dir = dir.display(),
        body = t("body"),
        proxy = t("proxy"),
        fastcgi = t("fastcgi"),
        uwsgi = t("uwsgi"),
        scgi = t("scgi"),
        up = backend.port,
        cert = env.cert.display(),
        key = env.key.display(),
    );
    let path = dir.join("nginx.conf");
    fs::write(&path, config)?;
    Proc::spawn(
        "nginx",
        Command::new("nginx")
            .arg("-p")
            .arg(dir)
            .arg("-c")
            .arg(&path)
            .arg("-g")
            .arg("daemon off;"),
        log,
    )
}

fn start_caddy(
    env: &Env,
    backend: &Backend,
    port: u16,
    dir: &Path,
    log: &Path,
) -> Result<Proc, BoxError> {
    let config = format!(
        r#"# Caddy contender (written by benches/loadgen).
{{
	admin off
	auto_https off
	skip_install_trust
	servers {{
		protocols h1 h2
	}}
}}
https://localhost:{port} {{
	bind 127.0.0.1
	tls {cert} {key}
	reverse_proxy 127.0.0.1:{up}
}}
"#,
        cert = env.cert.display(),
        key = env.key.display(),
        up = backend.port,
    );
    let path = dir.join("Caddyfile");
    fs::write(&path, config)?;
    Proc::spawn(
        "caddy",
        Command::new("caddy")
            .arg("run")
            .arg("--config")
            .arg(&path)
            .arg("--adapter")
            .arg("caddyfile")
            .env("HOME", dir)
            .env("XDG_DATA_HOME", dir.join("data"))
            .env("XDG_CONFIG_HOME", dir.join("config"))
            .env("GOMAXPROCS", env.workers.to_string()),
        log,
    )
}
