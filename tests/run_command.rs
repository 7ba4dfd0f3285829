//! `nbgate run -- jupyter lab`: nbgate starts a real JupyterLab from the test venv as its child on
//! a private Unix socket and serves it. Users log in once and reach kernels and terminals; the
//! socket directory keeps other local users out; passwords never reach Jupyter's environment;
//! signals reach Jupyter and nbgate exits with its status; Jupyter never outlives nbgate, even
//! when nbgate is SIGKILLed; a Jupyter that cannot start is reported with its last lines.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::jupyter::venv_dir;
use common::kernel::{execute, read_terminal_until, start_kernel, start_terminal};
use common::login::{bare_client, login, login_as, session_cookie};
use common::nbgate::{NbgateBuilder, TEST_PASSWORD};
use common::{poll_until, within, Nbgate};
use futures_util::SinkExt;
use tokio_tungstenite::tungstenite::Message;

const T: Duration = Duration::from_secs(60);

/// Jupyter's own directories for one test, inside the builder's temp dir, passed through
/// nbgate's environment (nbgate passes its environment on to Jupyter).
fn jupyter_env(builder: NbgateBuilder) -> NbgateBuilder {
    let dir = builder.dir().to_owned();
    for sub in ["root", "runtime", "data", "config", "ipython"] {
        std::fs::create_dir_all(dir.join(sub)).expect("mkdir");
    }
    let path = |s: &str| dir.join(s).display().to_string();
    builder
        .env("JUPYTER_RUNTIME_DIR", &path("runtime"))
        .env("JUPYTER_DATA_DIR", &path("data"))
        .env("JUPYTER_CONFIG_DIR", &path("config"))
        .env("IPYTHONDIR", &path("ipython"))
        // As root (CI), Jupyter refuses to run without this; as anyone else it is a no-op.
        .arg("--allow-root")
}

fn jupyter() -> String {
    venv_dir().join("bin/jupyter").display().to_string()
}

/// `jupyter lab` with its notebooks in the test's root dir.
fn lab(builder: &NbgateBuilder) -> Vec<String> {
    vec![
        jupyter(),
        "lab".into(),
        format!(
            "--ServerApp.root_dir={}",
            builder.dir().join("root").display()
        ),
    ]
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// The pid and socket directory nbgate logged when it started Jupyter.
fn started(gate: &Nbgate) -> (i32, PathBuf) {
    let line = gate
        .find_line(&["jupyter started"])
        .expect("a `jupyter started` line");
    let field = |name: &str| {
        let start = line.find(&format!("{name}=")).expect(name) + name.len() + 1;
        line[start..]
            .split_whitespace()
            .next()
            .expect("value")
            .trim_matches('"')
            .to_owned()
    };
    let pid: i32 = field("pid").parse().expect("pid");
    (pid, PathBuf::from(field("socket_dir")))
}

/// `GET path` through nbgate with the test user's API token.
async fn api_get(gate: &Nbgate, path: &str) -> reqwest::Response {
    gate.client()
        .get(gate.url(path))
        .headers(gate.auth_headers())
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {path}: {e}"))
}

/// Whether `pid` is gone (or a zombie nobody has reaped yet: it runs nothing).
fn gone(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rfind(')')
            .and_then(|i| stat[i + 1..].split_whitespace().next())
            .is_some_and(|state| state == "Z" || state == "X"),
    }
}

/// The running processes whose command line mentions `needle`.
fn processes_with(needle: &str) -> Vec<i32> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(cmd) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        if String::from_utf8_lossy(&cmd).contains(needle) && !gone(pid) {
            found.push(pid);
        }
    }
    found
}

/// The `NAME=value` entries of a process's environment.
fn environ(pid: i32) -> String {
    let raw = std::fs::read(format!("/proc/{pid}/environ")).expect("environ");
    String::from_utf8_lossy(&raw).replace('\0', "\n")
}

#[tokio::test]
async fn run_serves_jupyter_lab_on_a_private_socket_and_stops_with_it() {
    let builder = jupyter_env(NbgateBuilder::new());
    let command = lab(&builder);
    // Present in nbgate's environment but not used for the login (a user is configured): it
    // must still never reach Jupyter or its kernels.
    let gate = builder
        .env("JUPYTER_PASSWORD", "not-for-kernels-1234")
        .env("JUPYTER_TOKEN", "a-token-that-would-override")
        .run_jupyter(&strs(&command));
    let mut gate = gate.start().await;
    let (pid, socket_dir) = started(&gate);

    // The socket directory is the user's alone, and the token file is gone once Jupyter read it.
    assert_eq!(common::file_mode(&socket_dir), 0o700);
    assert!(socket_dir.join("jupyter.sock").exists());
    assert!(!socket_dir.join("token").exists(), "token file left behind");
    // Neither argv nor the environment of Jupyter holds a token or password.
    let cmdline =
        String::from_utf8_lossy(&std::fs::read(format!("/proc/{pid}/cmdline")).expect("cmdline"))
            .replace('\0', " ");
    assert!(cmdline.contains("--ServerApp.sock="), "{cmdline}");
    assert!(!cmdline.contains("token="), "{cmdline}");
    let env = environ(pid);
    assert!(!env.contains("JUPYTER_PASSWORD"), "{env}");
    assert!(!env.contains("JUPYTER_TOKEN="), "{env}");

    // One login, then JupyterLab itself (not Jupyter's token page), without its token.
    let client = bare_client(&gate);
    let answer = login(&gate, &client, TEST_PASSWORD).await;
    assert_eq!(answer.status(), 303);
    let cookie = session_cookie(&answer);
    let page = client
        .get(gate.url("/lab"))
        .header("cookie", &cookie)
        .header("accept", "text/html")
        .send()
        .await
        .expect("GET /lab");
    assert_eq!(page.status(), 200);
    let html = page.text().await.expect("html");
    assert!(
        html.contains("jupyter-config-data"),
        "not JupyterLab: {html:.300}"
    );
    assert!(
        !html.contains("Token authentication is enabled"),
        "{html:.300}"
    );
    let runtime = gate.dir().join("runtime");
    let token = std::fs::read_dir(&runtime)
        .expect("runtime dir")
        .flatten()
        .find(|e| {
            e.file_name().to_string_lossy().starts_with("jpserver-")
                && e.file_name().to_string_lossy().ends_with(".json")
        })
        .map(|e| {
            let v: serde_json::Value =
                serde_json::from_slice(&std::fs::read(e.path()).expect("read")).expect("json");
            v["token"].as_str().expect("token").to_owned()
        })
        .expect("jupyter's runtime file");
    assert!(token.len() >= 32, "nbgate's token is long and random");
    assert!(!html.contains(&token), "the page carries Jupyter's token");
    assert!(
        !gate.log_text().contains(&token),
        "the log carries Jupyter's token"
    );

    // Code runs on a kernel, and the kernel sees none of the secrets.
    let kernel = start_kernel(&gate).await;
    let mut ws = gate
        .ws_connect(&format!("/api/kernels/{kernel}/channels"))
        .await;
    assert_eq!(execute(&mut ws, "6 * 7").await, "42");
    let leaked = execute(
        &mut ws,
        "import os; sorted(k for k in os.environ if 'PASSWORD' in k or k in ('JUPYTER_TOKEN', 'NBGATE_CONFIG'))",
    )
    .await;
    assert_eq!(leaked, "[]");
    drop(ws);

    // A terminal works.
    let term = start_terminal(&gate).await;
    let mut tws = gate
        .ws_connect(&format!("/terminals/websocket/{term}"))
        .await;
    within(
        T,
        "terminal input",
        tws.send(Message::text(r#"["stdin", "echo nbgate-$((6*7))\r"]"#)),
    )
    .await
    .expect("send");
    read_terminal_until(&mut tws, "nbgate-42").await;
    drop(tws);

    // Another local user cannot reach Jupyter around nbgate.
    if unsafe { libc::geteuid() } == 0 {
        assert_eq!(
            connect_as_nobody(&socket_dir.join("jupyter.sock")),
            libc::EACCES,
            "uid 65534 could open Jupyter's socket"
        );
    }

    // SIGTERM reaches Jupyter; both stop, nbgate with Jupyter's exit status 0.
    gate.signal(libc::SIGTERM);
    let status = gate.wait_exit(T).await;
    assert_eq!(status.code(), Some(0), "{}", gate.log_text());
    poll_until(T, "jupyter to exit", || async { gone(pid).then_some(()) }).await;
    assert!(gate.log_contains("forwarding signal to jupyter"));
    assert!(!socket_dir.exists(), "socket directory left behind");
}

/// Connects to `socket` from a forked child running as uid/gid 65534 (nobody); returns the
/// child's errno from `connect` (0 when it connected).
fn connect_as_nobody(socket: &Path) -> i32 {
    use std::os::unix::ffi::OsStrExt as _;
    // SAFETY: sockaddr_un is plain data; all-zero is valid.
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    let bytes = socket.as_os_str().as_bytes();
    assert!(bytes.len() < addr.sun_path.len(), "socket path too long");
    for (dst, src) in addr.sun_path.iter_mut().zip(bytes) {
        *dst = *src as libc::c_char;
    }
    // SAFETY: between fork and _exit the child makes only async-signal-safe system calls on
    // memory prepared before the fork.
    unsafe {
        let pid = libc::fork();
        assert!(pid >= 0, "fork failed");
        if pid == 0 {
            if libc::setgid(65534) != 0 || libc::setuid(65534) != 0 {
                libc::_exit(200);
            }
            let fd = libc::socket(libc::AF_UNIX, libc::SOCK_STREAM, 0);
            let rc = libc::connect(
                fd,
                std::ptr::addr_of!(addr).cast(),
                std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t,
            );
            let errno = if rc == 0 {
                0
            } else {
                *libc::__errno_location()
            };
            libc::_exit(errno);
        }
        let mut status = 0;
        libc::waitpid(pid, &mut status, 0);
        assert!(libc::WIFEXITED(status));
        libc::WEXITSTATUS(status)
    }
}

#[tokio::test]
async fn jupyter_dies_with_nbgate_even_when_nbgate_is_killed() {
    let builder = jupyter_env(NbgateBuilder::new());
    let command = lab(&builder);
    let gate = builder.run_jupyter(&strs(&command)).start().await;
    let (pid, socket_dir) = started(&gate);
    // A kernel too: it must not be orphaned.
    let kernel = start_kernel(&gate).await;
    let kernel_pids = poll_until(T, "the kernel process", || {
        let found = processes_with(&kernel);
        async move { (!found.is_empty()).then_some(found) }
    })
    .await;

    gate.signal(libc::SIGKILL);
    poll_until(T, "jupyter to exit after nbgate was killed", || async {
        gone(pid).then_some(())
    })
    .await;
    poll_until(T, "the kernel to exit after jupyter", || {
        let all_gone = kernel_pids.iter().all(|p| gone(*p));
        async move { all_gone.then_some(()) }
    })
    .await;
    // Jupyter stopped cleanly (the parent-death signal is SIGTERM): its runtime file is gone.
    let runtime = gate.dir().join("runtime");
    poll_until(T, "jupyter's runtime file to be removed", || {
        let left = std::fs::read_dir(&runtime)
            .map(|d| {
                d.flatten()
                    .any(|e| e.file_name().to_string_lossy().ends_with(".json"))
            })
            .unwrap_or(false);
        async move { (!left).then_some(()) }
    })
    .await;
    drop(socket_dir);
}

#[tokio::test]
async fn as_pid_1_nbgate_reaps_the_orphans_of_kernels() {
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: a PID namespace needs root");
        return;
    }
    let builder =
        jupyter_env(NbgateBuilder::new()).wrapped(&["unshare", "--pid", "--fork", "--mount-proc"]);
    let command = lab(&builder);
    let gate = builder.run_jupyter(&strs(&command)).start().await;
    let kernel = start_kernel(&gate).await;
    let mut ws = gate
        .ws_connect(&format!("/api/kernels/{kernel}/channels"))
        .await;
    // A grandchild whose parent exits at once is handed to PID 1 (nbgate, in this namespace);
    // when it exits, only PID 1 can collect it. Uncollected, it stays a zombie in /proc.
    let code = r#"
import os, time
r, w = os.pipe()
child = os.fork()
if child == 0:
    grandchild = os.fork()
    if grandchild == 0:
        time.sleep(0.5)
        os._exit(0)
    os.write(w, str(grandchild).encode())
    os._exit(0)
os.waitpid(child, 0)
orphan = int(os.read(r, 32))
deadline = time.time() + 20
while os.path.exists(f"/proc/{orphan}") and time.time() < deadline:
    time.sleep(0.05)
(open("/proc/1/comm").read().strip(), orphan, os.path.exists(f"/proc/{orphan}"))
"#;
    let result = execute(&mut ws, code).await;
    assert!(
        result.starts_with("('nbgate', "),
        "nbgate is not PID 1: {result}"
    );
    assert!(
        result.ends_with(", False)"),
        "the orphan was never reaped: {result}"
    );
}

#[tokio::test]
async fn jupyter_password_from_the_environment_logs_in_and_is_hidden_from_jupyter() {
    let password = "env-password-5678";
    let builder = jupyter_env(NbgateBuilder::new().remove("users"));
    let command = lab(&builder);
    let gate = builder
        .env("JUPYTER_PASSWORD", password)
        .run_jupyter(&strs(&command))
        .start()
        .await;
    let (pid, _) = started(&gate);
    let client = bare_client(&gate);
    let answer = login_as(&gate, &client, "/", "jupyter", password).await;
    assert_eq!(answer.status(), 303, "login with JUPYTER_PASSWORD");
    let cookie = session_cookie(&answer);
    let api = client
        .get(gate.url("/api/kernels"))
        .header("cookie", &cookie)
        .send()
        .await
        .expect("GET /api/kernels");
    assert_eq!(api.status(), 200);
    // Neither nbgate's own environment (/proc shows it to the same user) nor Jupyter's holds it.
    assert!(!environ(gate.pid() as i32).contains(password));
    assert!(!environ(pid).contains("JUPYTER_PASSWORD"));
    assert!(gate.log_contains("environment variable JUPYTER_PASSWORD"));
    assert!(!gate.log_text().contains(password));
}

#[tokio::test]
async fn an_existing_jupyter_server_password_logs_in() {
    let builder = jupyter_env(NbgateBuilder::new().remove("users"));
    // What `jupyter server password` writes, made by Jupyter's own code.
    let config_dir = builder.dir().join("config");
    let hash = std::process::Command::new(venv_dir().join("bin/python"))
        .args([
            "-c",
            "from jupyter_server.auth import passwd; print(passwd('jupyter-pw-9012'))",
        ])
        .output()
        .expect("python");
    assert!(hash.status.success(), "{hash:?}");
    let hash = String::from_utf8(hash.stdout)
        .expect("utf-8")
        .trim()
        .to_owned();
    assert!(hash.starts_with("argon2:"), "{hash}");
    std::fs::write(
        config_dir.join("jupyter_server_config.json"),
        serde_json::json!({"IdentityProvider": {"hashed_password": hash}}).to_string(),
    )
    .expect("write jupyter config");
    let command = lab(&builder);
    let gate = builder.run_jupyter(&strs(&command)).start().await;
    assert!(gate.log_contains("jupyter_server_config.json"));
    let client = bare_client(&gate);
    let wrong = login_as(&gate, &client, "/", "jupyter", "not-the-password").await;
    assert_ne!(wrong.status(), 303);
    let answer = login_as(&gate, &client, "/", "jupyter", "jupyter-pw-9012").await;
    assert_eq!(answer.status(), 303, "login with Jupyter's own password");
}

#[tokio::test]
async fn other_jupyter_commands_work_too() {
    for command in [
        vec![jupyter(), "server".into()],
        vec![
            venv_dir().join("bin/python").display().to_string(),
            "-m".into(),
            "jupyterlab".into(),
        ],
        vec![jupyter(), "notebook".into()],
    ] {
        let builder = jupyter_env(NbgateBuilder::new());
        let mut command = command;
        command.push(format!(
            "--ServerApp.root_dir={}",
            builder.dir().join("root").display()
        ));
        let gate = builder.run_jupyter(&strs(&command)).start().await;
        let r = api_get(&gate, "/api/status").await;
        assert_eq!(r.status(), 200, "{command:?}");
    }
}

#[tokio::test]
async fn contradicting_arguments_and_root_are_refused_with_the_reason() {
    let builder = jupyter_env(NbgateBuilder::new());
    let mut command = lab(&builder);
    command.push("--ip=0.0.0.0".into());
    let failure = builder
        .run_jupyter(&strs(&command))
        .start_expecting_failure()
        .await;
    assert!(
        failure
            .log
            .contains("`--ip=0.0.0.0`: nbgate puts Jupyter on a private Unix socket"),
        "{}",
        failure.log
    );
    assert_eq!(failure.status.and_then(|s| s.code()), Some(1));

    if unsafe { libc::geteuid() } == 0 {
        // Without --allow-root (jupyter_env adds it; this builder does not).
        let builder = NbgateBuilder::new();
        let command = lab(&builder);
        let failure = builder
            .run_jupyter(&strs(&command))
            .start_expecting_failure()
            .await;
        assert!(
            failure.log.contains("refusing to run Jupyter as root")
                && failure.log.contains("--user NAME")
                && failure.log.contains("--allow-root"),
            "{}",
            failure.log
        );
    }
}

#[tokio::test]
async fn a_jupyter_that_cannot_start_is_reported_with_its_last_lines() {
    let builder = jupyter_env(NbgateBuilder::new());
    let missing = builder.dir().join("no-such-notebook-dir");
    let command = vec![
        jupyter(),
        "lab".into(),
        format!("--ServerApp.root_dir={}", missing.display()),
    ];
    let failure = builder
        .run_jupyter(&strs(&command))
        .start_expecting_failure()
        .await;
    assert!(
        failure.log.contains("before it answered"),
        "{}",
        failure.log
    );
    assert!(failure.log.contains("its last lines:"), "{}", failure.log);
    assert!(
        failure.log.contains("no-such-notebook-dir"),
        "{}",
        failure.log
    );
    assert_ne!(failure.status.and_then(|s| s.code()), Some(0));
}

/// A stand-in for Jupyter for the `--user` test: Jupyter itself cannot run as `nobody` here (the
/// venv's interpreter lives under /root, mode 0700), so Debian's python3 serves what nbgate
/// relies on: Jupyter's socket option, its token file, `GET /api` without and everything else
/// with the token. It answers with the uid it runs as.
const STAND_IN: &str = r#"
import http.server, json, os, socket, socketserver, sys
sock = [a.split("=", 1)[1] for a in sys.argv if a.startswith("--ServerApp.sock=")][0]
token = open(os.environ["JUPYTER_TOKEN_FILE"]).read()
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        ok = self.path == "/api" or self.headers.get("Authorization") == "token " + token
        body = json.dumps({"uid": os.getuid(), "home": os.environ.get("HOME")}).encode()
        self.send_response(200 if ok else 403)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def address_string(self):
        return "unix"
class S(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True
S(sock, H).serve_forever()
"#;

#[tokio::test]
async fn the_child_runs_as_the_user_given_with_user() {
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: --user needs root");
        return;
    }
    let builder = NbgateBuilder::new().remove("upstream.url");
    let dir = builder.dir().to_owned();
    let script = dir.join("stand_in.py");
    std::fs::write(&script, STAND_IN).expect("write stand-in");
    make_traversable(&dir);
    let gate = builder
        .arg("--user")
        .arg("nobody")
        .run_jupyter(&["/usr/bin/python3", &script.display().to_string()])
        .start()
        .await;
    let (pid, socket_dir) = started(&gate);
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    let uid_line = status.lines().find(|l| l.starts_with("Uid:")).expect("Uid");
    assert!(
        uid_line.split_whitespace().skip(1).all(|u| u == "65534"),
        "{uid_line}"
    );
    let owner = std::os::unix::fs::MetadataExt::uid(&std::fs::metadata(&socket_dir).expect("dir"));
    assert_eq!(
        owner, 65534,
        "the socket directory belongs to the child's user"
    );
    assert_eq!(common::file_mode(&socket_dir), 0o700);
    // Through nbgate, with the token nbgate injected.
    let r = api_get(&gate, "/whoami").await;
    assert_eq!(r.status(), 200);
    let v: serde_json::Value = r.json().await.expect("json");
    assert_eq!(v["uid"], 65534);
    assert_eq!(v["home"], "/nonexistent");
}

/// Lets other users pass through `dir` and read its files (tempdirs are 0700).
fn make_traversable(dir: &Path) {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    for e in std::fs::read_dir(dir).expect("dir").flatten() {
        if e.path().is_file() {
            std::fs::set_permissions(e.path(), std::fs::Permissions::from_mode(0o644))
                .expect("chmod");
        }
    }
}
