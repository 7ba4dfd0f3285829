//! Jupyter knows who is there: under `nbgate run`, Jupyter's own identity (`/api/me`, what
//! real-time collaboration shows) is the nbgate user, carried by a header nbgate signs with a
//! per-start secret (`python/nbgate_identity.py`). Jupyter refuses a header nbgate did not make
//! for that very request, a client cannot name itself through nbgate, and what Jupyter passes
//! on to apps behind it (jupyter-server-proxy) no longer holds Jupyter's token.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::jupyter::venv_dir;
use common::kernel::{execute, start_kernel};
use common::login::{bare_client, login_as, session_cookie};
use common::nbgate::{test_hashes, NbgateBuilder, TEST_PASSWORD, TEST_USER};
use common::Nbgate;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A Jupyter server extension standing in for an app behind jupyter-server-proxy: an
/// authenticated handler that answers with the headers it received (jupyter-server-proxy
/// passes a request's headers on to the app) and the user Jupyter authenticated.
const ECHO_EXTENSION: &str = r#"
from jupyter_server.base.handlers import JupyterHandler
from tornado import web


class Echo(JupyterHandler):
    @web.authenticated
    def get(self):
        self.finish({"user": self.current_user.username, "headers": dict(self.request.headers)})


def _jupyter_server_extension_points():
    return [{"module": "nbgate_echo"}]


def _load_jupyter_server_extension(app):
    base = app.web_app.settings["base_url"]
    app.web_app.add_handlers(".*$", [(base + "nbgate-echo/.*", Echo)])
"#;

/// `nbgate run -- jupyter lab EXTRA…` with Jupyter's directories in the test's temp dir, the
/// echo extension on Jupyter's path, and users `tester` (password and API token), `alice` and
/// `bob` (the test password).
fn run_lab(extra: impl Fn(&Path) -> Vec<String>) -> NbgateBuilder {
    let builder = NbgateBuilder::new();
    let dir = builder.dir().to_owned();
    for sub in ["root", "runtime", "data", "config", "ipython", "ext"] {
        std::fs::create_dir_all(dir.join(sub)).expect("mkdir");
    }
    std::fs::write(dir.join("ext/nbgate_echo.py"), ECHO_EXTENSION).expect("extension");
    std::fs::write(
        dir.join("config/jupyter_server_config.json"),
        r#"{"ServerApp": {"jpserver_extensions": {"nbgate_echo": true}}}"#,
    )
    .expect("jupyter config");
    let path = |s: &str| dir.join(s).display().to_string();
    let user = |name: &str, tokens: bool| {
        let mut t = toml::Table::new();
        t.insert("name".into(), name.into());
        t.insert("password_hash".into(), test_hashes().0.clone().into());
        if tokens {
            t.insert(
                "tokens".into(),
                toml::Value::Array(vec![test_hashes().1.clone().into()]),
            );
        }
        toml::Value::Table(t)
    };
    let mut command = vec![
        venv_dir().join("bin/jupyter").display().to_string(),
        "lab".into(),
        format!("--ServerApp.root_dir={}", path("root")),
    ];
    command.extend(extra(&dir));
    let command: Vec<&str> = command.iter().map(String::as_str).collect();
    builder
        .set(
            "users",
            toml::Value::Array(vec![
                user(TEST_USER, true),
                user("alice", false),
                user("bob", false),
            ]),
        )
        .env("JUPYTER_RUNTIME_DIR", &path("runtime"))
        .env("JUPYTER_DATA_DIR", &path("data"))
        .env("JUPYTER_CONFIG_DIR", &path("config"))
        .env("IPYTHONDIR", &path("ipython"))
        .env("PYTHONPATH", &path("ext"))
        .arg("--allow-root")
        .run_jupyter(&command)
}

/// Jupyter's socket, from the line nbgate logged when it started Jupyter.
fn jupyter_socket(gate: &Nbgate) -> PathBuf {
    let line = gate
        .find_line(&["jupyter started"])
        .expect("a `jupyter started` line");
    let start = line.find("socket_dir=").expect("socket_dir") + "socket_dir=".len();
    let dir = line[start..]
        .split_whitespace()
        .next()
        .expect("value")
        .trim_matches('"');
    Path::new(dir).join("jupyter.sock")
}

/// One HTTP/1.0 request straight to Jupyter's socket, around nbgate; the status and the
/// whole answer.
async fn direct(
    socket: &Path,
    method: &str,
    target: &str,
    identity: Option<&str>,
) -> (u16, String) {
    let mut s = tokio::net::UnixStream::connect(socket)
        .await
        .expect("connect to jupyter's socket");
    let extra = identity.map_or(String::new(), |v| format!("X-Nbgate-Identity: {v}\r\n"));
    let head = format!("{method} {target} HTTP/1.0\r\nHost: localhost\r\n{extra}\r\n");
    s.write_all(head.as_bytes()).await.expect("write");
    let mut answer = Vec::new();
    common::within(
        Duration::from_secs(30),
        "jupyter's answer",
        s.read_to_end(&mut answer),
    )
    .await
    .expect("read");
    let text = String::from_utf8_lossy(&answer).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status: {text:.200}"));
    (status, text)
}

/// `GET path` through nbgate with `cookie` and optional extra headers; the JSON answer.
async fn get_json(
    gate: &Nbgate,
    client: &reqwest::Client,
    cookie: &str,
    path: &str,
    extra: &[(&str, &str)],
) -> serde_json::Value {
    let mut req = client.get(gate.url(path)).header("cookie", cookie);
    for (k, v) in extra {
        req = req.header(*k, *v);
    }
    let resp = req
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {path}: {e}"));
    let status = resp.status();
    let body = resp.text().await.expect("body");
    assert_eq!(status, 200, "GET {path}: {body:.300}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {path}: {e}: {body:.300}"))
}

/// Jupyter's token, from the runtime file it wrote.
fn jupyter_token(gate: &Nbgate) -> String {
    std::fs::read_dir(gate.dir().join("runtime"))
        .expect("runtime dir")
        .flatten()
        .find(|e| {
            let n = e.file_name().to_string_lossy().into_owned();
            n.starts_with("jpserver-") && n.ends_with(".json")
        })
        .map(|e| {
            let v: serde_json::Value =
                serde_json::from_slice(&std::fs::read(e.path()).expect("read")).expect("json");
            v["token"].as_str().expect("token").to_owned()
        })
        .expect("jupyter's runtime file")
}

#[tokio::test]
async fn jupyter_names_the_nbgate_user_and_refuses_headers_nbgate_did_not_make_for_the_request() {
    let gate = run_lab(|_| Vec::new()).start().await;
    assert!(
        gate.find_line(&["jupyter knows nbgate's users"]).is_some(),
        "the provider was not confirmed:\n{}",
        gate.log_text()
    );
    let socket = jupyter_socket(&gate);
    // The secret's hand-over file is gone once Jupyter read it.
    assert!(!socket.with_file_name("identity").exists());

    // Jupyter's identity of a logged-in user is that user, with what collaborators see.
    let client = bare_client(&gate);
    let answer = login_as(&gate, &client, "/", "alice", TEST_PASSWORD).await;
    assert_eq!(answer.status(), 303);
    let alice = session_cookie(&answer);
    let me = get_json(&gate, &client, &alice, "/api/me", &[]).await;
    let id = &me["identity"];
    assert_eq!(id["username"], "alice", "{me}");
    assert_eq!(id["name"], "alice", "{me}");
    assert_eq!(id["display_name"], "alice", "{me}");
    assert_eq!(id["initials"], "A", "{me}");
    let color = id["color"].as_str().expect("a color");
    assert!(color.starts_with("var(--jp-collaborator-color"), "{color}");
    // The same name gets the same color on every request.
    let again = get_json(&gate, &client, &alice, "/api/me", &[]).await;
    assert_eq!(again["identity"]["color"], color);

    // A client naming itself is not believed: its header is replaced by nbgate's.
    let forged = "v1;user=root;ts=1;mac=00";
    let me = get_json(
        &gate,
        &client,
        &alice,
        "/api/me",
        &[("x-nbgate-identity", forged)],
    )
    .await;
    assert_eq!(me["identity"]["username"], "alice", "{me}");

    // An API client is named by the user its token belongs to.
    let resp = gate
        .client()
        .get(gate.url("/api/me"))
        .send()
        .await
        .expect("GET");
    let me: serde_json::Value = resp.json().await.expect("json");
    assert_eq!(me["identity"]["username"], TEST_USER, "{me}");

    // What an app behind Jupyter receives: the user's header for this request, and neither
    // Jupyter's token nor any `Authorization` (issue 9).
    let echo = get_json(
        &gate,
        &client,
        &alice,
        "/nbgate-echo/app",
        &[("x-nbgate-identity", forged)],
    )
    .await;
    assert_eq!(echo["user"], "alice", "{echo}");
    let headers = echo["headers"].as_object().expect("headers");
    assert!(
        !headers
            .keys()
            .any(|k| k.eq_ignore_ascii_case("authorization")),
        "{echo}"
    );
    let token = jupyter_token(&gate);
    assert!(
        !echo.to_string().contains(&token),
        "the app saw Jupyter's token: {echo}"
    );
    let leaked = headers["X-Nbgate-Identity"]
        .as_str()
        .expect("identity header")
        .to_owned();
    assert!(leaked.starts_with("v1;user=alice;ts="), "{leaked}");

    // Straight to Jupyter's socket, around nbgate: the leaked header is good for nothing but
    // the request it was made for (that is all the app could do anyway) ...
    let (status, answer) = direct(&socket, "GET", "/nbgate-echo/app", Some(&leaked)).await;
    assert_eq!(status, 200, "{answer}");
    // ... not for Jupyter's API, nor for another method, nor with the name changed.
    // (Jupyter refuses an API request with 403 and sends a page's to its login page.)
    for (method, target, header) in [
        ("GET", "/api/me", leaked.clone()),
        ("GET", "/api/contents", leaked.clone()),
        ("POST", "/api/contents", leaked.clone()),
        ("GET", "/nbgate-echo/app?x=1", leaked.clone()),
        (
            "GET",
            "/nbgate-echo/app",
            leaked.replace("user=alice", "user=bob"),
        ),
        ("GET", "/nbgate-echo/app", leaked.replace(";ts=", ";ts=1")),
        ("GET", "/api/me", forged.to_owned()),
    ] {
        let (status, body) = direct(&socket, method, target, Some(&header)).await;
        let to_login = status == 302 && body.contains("Location: /login");
        assert!(
            status == 403 || to_login,
            "{method} {target} with {header}: {status} {body:.300}"
        );
    }
    // Without any header Jupyter still wants its token.
    let (status, _) = direct(&socket, "GET", "/api/me", None).await;
    assert_eq!(status, 403);

    // A signed request counts as token-authenticated: a POST needs no Jupyter XSRF cookie
    // (nbgate checked the Origin), and a kernel's WebSocket opens and runs code.
    let created = client
        .post(gate.url("/api/contents"))
        .header("cookie", &alice)
        .header("origin", gate.origin())
        .json(&serde_json::json!({"type": "notebook"}))
        .send()
        .await
        .expect("POST /api/contents");
    assert_eq!(created.status(), 201, "{:?}", created.text().await);
    let kernel = start_kernel(&gate).await;
    let mut ws = gate
        .ws_connect(&format!("/api/kernels/{kernel}/channels"))
        .await;
    assert_eq!(execute(&mut ws, "6 * 7").await, "42");
    // Neither the secret's variable nor the provider's directory reaches a kernel.
    let env = execute(
        &mut ws,
        "import os; [k for k in os.environ if 'NBGATE_IDENTITY' in k] + [p for p in os.environ.get('PYTHONPATH', '').split(':') if 'nbgate-run' in p]",
    )
    .await;
    assert_eq!(env, "[]");
}

/// Python side of the header, checked against headers the Rust side signs: the provider's
/// `verify` accepts exactly the user, secret, method, target and freshness it was made for.
#[test]
fn the_provider_verifies_what_nbgate_signs_and_nothing_else() {
    use nbgate::jupyter::identity::{key, sign};
    let now: u64 = 1_800_000_000;
    let k = key("per-start-secret");
    let h = |user: &str, ts: u64, method: &str, target: &str| {
        sign(&k, user, ts, method, target)
            .to_str()
            .expect("ascii")
            .to_owned()
    };
    let good = h("Ann Lee/ü", now, "GET", "/api/me?x=1");
    // (header, secret, method, target, expected user or None)
    let cases = serde_json::json!([
        [good, "per-start-secret", "GET", "/api/me?x=1", "Ann Lee/ü"],
        [good, "another-secret", "GET", "/api/me?x=1", null],
        [good, "per-start-secret", "POST", "/api/me?x=1", null],
        [good, "per-start-secret", "GET", "/api/me", null],
        [
            good.replace("Ann", "Bob"),
            "per-start-secret",
            "GET",
            "/api/me?x=1",
            null
        ],
        [
            h("a", now - 301, "GET", "/"),
            "per-start-secret",
            "GET",
            "/",
            null
        ],
        [
            h("a", now - 299, "GET", "/"),
            "per-start-secret",
            "GET",
            "/",
            "a"
        ],
        [
            h("a", now + 60, "GET", "/"),
            "per-start-secret",
            "GET",
            "/",
            null
        ],
        ["v1;user=a;ts=1", "per-start-secret", "GET", "/", null],
        ["", "per-start-secret", "GET", "/", null],
    ]);
    let script = format!(
        r#"
import json, sys
sys.path.insert(0, {dir:?})
import nbgate_identity as m
out = [m.verify(s.encode(), h, meth, t, {now}, 300) for h, s, meth, t, _ in json.load(sys.stdin)]
u = m.user_for("Ann Lee")
out.append([u.username, u.display_name, u.initials, u.color, m.user_for("Ann Lee").color])
print(json.dumps(out))
"#,
        dir = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("python")
            .display()
            .to_string(),
    );
    let mut child = std::process::Command::new(venv_dir().join("bin/python"))
        .args(["-c", &script])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("python");
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().expect("stdin");
        stdin
            .write_all(cases.to_string().as_bytes())
            .expect("cases");
    }
    let out = child.wait_with_output().expect("python ran");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).expect("json");
    for (i, case) in cases.as_array().expect("cases").iter().enumerate() {
        assert_eq!(got[i], case[4], "case {i}: {case}");
    }
    let user = &got[cases.as_array().expect("cases").len()];
    assert_eq!(user[0], "Ann Lee");
    assert_eq!(user[1], "Ann Lee");
    assert_eq!(user[2], "AL");
    assert_eq!(user[3], user[4], "one color per name");
}

/// Real-time collaboration (jupyter-collaboration) in two headless Chromium contexts: alice and
/// bob open the same notebook and each sees the other by name among the collaborators, not as
/// "Anonymous". RTC is off in the test venv by default (tests/run.sh): on for this Jupyter only.
#[tokio::test]
async fn two_browsers_in_one_notebook_see_each_other_by_name() {
    let gate = run_lab(|dir| {
        vec![
            "--YDocExtension.disable_rtc=False".into(),
            format!("--SQLiteYStore.db_path={}", dir.join("ystore.db").display()),
        ]
    });
    std::fs::write(
        gate.dir().join("root/shared.ipynb"),
        r#"{"cells": [{"cell_type": "code", "execution_count": null, "id": "c1", "metadata": {},
            "outputs": [], "source": ["6 * 7"]}],
            "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3",
            "language": "python"}}, "nbformat": 4, "nbformat_minor": 5}"#,
    )
    .expect("notebook");
    let gate = gate.start().await;
    let shots = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-artifacts/collaborate");
    std::fs::create_dir_all(&shots).expect("artifact dir");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser/collaborate.py");
    let url = format!("https://localhost:{}", gate.https_addr().port());
    let out = tokio::task::spawn_blocking(move || {
        let mut child = std::process::Command::new(venv_dir().join("bin/python"))
            .arg(&script)
            .args([
                "--url",
                &url,
                "--users",
                "alice,bob",
                "--notebook",
                "shared.ipynb",
            ])
            .args(["--timeout", "150", "--screenshots"])
            .arg(&shots)
            .env("NBGATE_TEST_PASSWORD", TEST_PASSWORD)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("collaborate.py");
        // The script has a watchdog of its own; this one is the last resort.
        let deadline = std::time::Instant::now() + Duration::from_secs(240);
        while child.try_wait().expect("wait").is_none() {
            if std::time::Instant::now() > deadline {
                let _ = child.kill();
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        child.wait_with_output().expect("output")
    })
    .await
    .expect("collaborate.py ran");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "collaborate.py failed:\n{text}\nnbgate:\n{}",
        gate.log_text()
    );
    assert!(text.contains("info: alice sees ['bob']"), "{text}");
    assert!(text.contains("info: bob sees ['alice']"), "{text}");
}
