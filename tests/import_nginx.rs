//! `nbgate import-nginx` on real-world Jupyter nginx configs (tests/fixtures/nginx/, each citing
//! its source): every one converts with the real binary and the output passes
//! `nbgate check-config`. One, with an htpasswd file of a bcrypt user made here, is then run for
//! real: nbgate on the converted config in front of a real Jupyter on a Unix socket, the user
//! logging in through nbgate's login page and reaching Jupyter's `/api/kernels`.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::login::{bare_client, login_as, session_cookie};
use common::nbgate::Finished;
use common::{certs, Jupyter, NbgateBuilder};

const T: Duration = Duration::from_secs(30);

/// The four configs reconstructed from Jupyter's and JupyterHub's docs and common tutorials.
const REAL_WORLD: &[&str] = &[
    "jupyterhub-docs.conf",
    "notebook-kernels-terminals.conf",
    "vps-websocket-regex.conf",
    "docker-http-wrapper.conf",
];

/// The hardened config that is run for real.
const HARDENED: &str = "hardened-unix-socket.conf";

const LAB_USER: &str = "labuser";
const LAB_PASSWORD: &str = "a bcrypt password from htpasswd";

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/nginx")
        .join(name)
}

/// A `$2y$` hash as `htpasswd -B` writes it (cost 5, its default), made with the `bcrypt`
/// crate and a random salt.
fn htpasswd_bcrypt(password: &str) -> String {
    let salt: [u8; 16] = rand::random();
    bcrypt::hash_with_salt(password, 5, salt)
        .expect("bcrypt with cost 5")
        .format_for_version(bcrypt::Version::TwoY)
}

/// Runs `nbgate import-nginx FILE`; panics unless it succeeds.
async fn import(runner: &NbgateBuilder, file: &Path) -> String {
    let done = runner
        .run(&["import-nginx", file.to_str().expect("utf-8 path")])
        .await;
    assert!(
        done.status.success(),
        "import-nginx {} failed: {}",
        file.display(),
        done.stderr
    );
    done.stdout
}

/// Writes `toml` next to the builder's files and runs `nbgate check-config` on it.
async fn check_config(runner: &NbgateBuilder, name: &str, toml: &str) -> Finished {
    let out = runner.dir().join(name);
    std::fs::write(&out, toml).expect("write converted config");
    runner
        .run(&[
            "check-config",
            "--config",
            out.to_str().expect("utf-8 path"),
        ])
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_real_world_config_converts_and_passes_check_config() {
    let runner = NbgateBuilder::new();
    for name in REAL_WORLD {
        let toml = import(&runner, &fixture(name)).await;
        assert!(toml.contains("[upstream]\n"), "{name}:\n{toml}");
        assert!(toml.contains("\n# Not mapped:\n"), "{name}:\n{toml}");
        let checked = check_config(&runner, &format!("{name}.toml"), &toml).await;
        assert!(
            checked.status.success(),
            "check-config refused the conversion of {name}: {}\n{toml}",
            checked.stderr
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_jupyterhub_docs_config_maps_redirect_certificates_and_hsts() {
    let runner = NbgateBuilder::new();
    let toml = import(&runner, &fixture("jupyterhub-docs.conf")).await;
    for needle in [
        "listen = [\"0.0.0.0:443\"]",
        "http_listen = [\"0.0.0.0:80\"]",
        "mode = \"files\"",
        "cert_file = \"/etc/letsencrypt/live/HUB.DOMAIN.TLD/fullchain.pem\"",
        "hsts = true",
        "url = \"http://127.0.0.1:8000\"",
        "proxy_set_header Upgrade $http_upgrade -- nbgate forwards WebSockets itself",
        "proxy_buffering off -- not needed",
        "ssl on -- every nbgate HTTPS listener is TLS",
        "location ~ /.well-known { ... } -- ACME challenges",
    ] {
        assert!(toml.contains(needle), "{needle}\n{toml}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_websocket_locations_and_long_read_timeout_become_one_idle_timeout() {
    let runner = NbgateBuilder::new();
    for name in [
        "notebook-kernels-terminals.conf",
        "vps-websocket-regex.conf",
    ] {
        let toml = import(&runner, &fixture(name)).await;
        assert!(
            toml.contains("websocket_idle_timeout = \"1days\""),
            "{name}:\n{toml}"
        );
        assert!(
            toml.contains("no separate location is needed"),
            "{name}:\n{toml}"
        );
        assert!(
            toml.contains("listen = [\"0.0.0.0:443\"]")
                && toml.contains("http_listen = [\"0.0.0.0:80\"]"),
            "plain port 80 becomes HTTPS on 443 plus a redirect: {name}:\n{toml}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gives_one_line_naming_file_and_line() {
    let runner = NbgateBuilder::new();
    for (text, want) in [
        (
            "server {\n  listen 80;\n  location / {\n    proxy_pass http://127.0.0.1:8888;\n}\n",
            ":1: unbalanced braces",
        ),
        ("server {\n  listen 80;\n}\n}\n", ":4: unbalanced braces"),
        (
            "server {\n  location / {\n    proxy_pass http://127.0.0.1:8888\n  }\n}\n",
            ":4: unexpected \"}\": directive \"proxy_pass\" has no \";\"",
        ),
        (
            "server {\n  listen 80;\n  add_header X \"open;\n}\n",
            ":3: unterminated quoted string",
        ),
        (
            "\n\nserver {\n  listen 80;\n  root /srv/www;\n}\n",
            ":3: no proxy_pass",
        ),
    ] {
        let file = runner.dir().join("bad.conf");
        std::fs::write(&file, text).expect("write");
        let done = runner
            .run(&["import-nginx", file.to_str().expect("utf-8")])
            .await;
        assert!(!done.status.success(), "{text}");
        assert!(done.stdout.is_empty(), "nothing on stdout: {}", done.stdout);
        let err = done.stderr.trim();
        assert_eq!(err.lines().count(), 1, "one line: {err}");
        assert!(
            err.contains(&format!("{}{want}", file.display())),
            "{want:?} in {err}"
        );
    }
}

/// The hardened fixture with its paths pointed at this test's files.
fn hardened_for_test(socket: &Path, cert: &Path, key: &Path, users: &Path) -> String {
    std::fs::read_to_string(fixture(HARDENED))
        .expect("fixture")
        .replace("/run/jupyter/jupyter.sock", &socket.display().to_string())
        .replace(
            "/etc/letsencrypt/live/lab.example.org/fullchain.pem",
            &cert.display().to_string(),
        )
        .replace(
            "/etc/letsencrypt/live/lab.example.org/privkey.pem",
            &key.display().to_string(),
        )
        .replace("/etc/nginx/htpasswd", &users.display().to_string())
}

/// Every key of a converted config, as dotted names, applied over the builder's defaults.
fn apply(mut builder: NbgateBuilder, table: &toml::Table, prefix: &str) -> NbgateBuilder {
    for (k, v) in table {
        let key = format!("{prefix}{k}");
        builder = match v {
            toml::Value::Table(t) => apply(builder, t, &format!("{key}.")),
            other => builder.set(&key, other.clone()),
        };
    }
    builder
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_converted_config_runs_and_an_htpasswd_bcrypt_user_reaches_jupyter() {
    let jupyter = Jupyter::start_unix().await;
    let socket = match jupyter.endpoint() {
        common::jupyter::Endpoint::Unix(p) => p.clone(),
        common::jupyter::Endpoint::Tcp(a) => panic!("expected a unix socket, got {a}"),
    };
    let work = tempfile::tempdir().expect("tempdir");
    let pair = certs::localhost();
    let (cert, key) = (work.path().join("cert.pem"), work.path().join("key.pem"));
    std::fs::write(&cert, &pair.cert_pem).expect("cert");
    std::fs::write(&key, &pair.key_pem).expect("key");
    let users = work.path().join("htpasswd");
    std::fs::write(
        &users,
        format!("{LAB_USER}:{}\n", htpasswd_bcrypt(LAB_PASSWORD)),
    )
    .expect("htpasswd");
    let nginx = work.path().join("jupyterlab.conf");
    std::fs::write(&nginx, hardened_for_test(&socket, &cert, &key, &users)).expect("nginx conf");

    let builder = NbgateBuilder::new();
    let converted = import(&builder, &nginx).await;
    assert!(
        !converted
            .lines()
            .any(|l| l.starts_with("# WARNING:") && l.contains(LAB_USER)),
        "a bcrypt user is accepted as it is:\n{converted}"
    );
    assert!(
        converted.contains(&format!("users_file = \"{}\"", users.display())),
        "{converted}"
    );
    let checked = check_config(&builder, "converted.toml", &converted).await;
    assert!(checked.status.success(), "{}\n{converted}", checked.stderr);

    let table: toml::Table = toml::from_str(&converted).expect("converted TOML");
    assert_eq!(
        table["upstream"]["url"].as_str(),
        Some(format!("unix:{}", socket.display()).as_str())
    );
    assert_eq!(
        table["policy"]["rate_limit"]["requests_per_second"].as_integer(),
        Some(5)
    );
    assert_eq!(table["auth"]["users_file"].as_str(), users.to_str());

    // The converted config as it is, except what a test must own: loopback listeners on
    // ephemeral ports (no port-80 redirect) and Jupyter's token for the upstream.
    let gate = apply(builder, &table, "")
        .set(
            "server.listen",
            toml::Value::Array(vec!["127.0.0.1:0".into()]),
        )
        .set("server.http_listen", toml::Value::Array(Vec::new()))
        .set(
            "upstream.token_file",
            jupyter.token_file().display().to_string(),
        )
        .start()
        .await;

    let client = bare_client(&gate);
    let denied = client
        .get(gate.url("/api/kernels"))
        .send()
        .await
        .expect("GET without a session");
    assert_eq!(denied.status(), 401, "nothing without a login");

    let wrong = login_as(&gate, &client, "/", LAB_USER, "not the password").await;
    assert_ne!(wrong.status(), 303, "a wrong password does not log in");

    let ok = login_as(&gate, &client, "/", LAB_USER, LAB_PASSWORD).await;
    assert_eq!(ok.status(), 303, "{:?}", ok.text().await);
    let cookie = session_cookie(&ok);
    gate.wait_for_log("login_success", T).await;

    let kernels = client
        .get(gate.url("/api/kernels"))
        .header("cookie", &cookie)
        .send()
        .await
        .expect("GET /api/kernels with the session");
    assert_eq!(kernels.status(), 200);
    let body: serde_json::Value = kernels.json().await.expect("JSON from Jupyter");
    assert!(body.is_array(), "Jupyter's kernel list: {body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weak_htpasswd_users_are_warned_at_import_and_refused_at_start() {
    let builder = NbgateBuilder::new();
    let users = builder.dir().join("htpasswd");
    // From `htpasswd -nbm` (apr1-MD5, htpasswd's default) and `-nbs` ({SHA}).
    std::fs::write(
        &users,
        format!(
            "{LAB_USER}:{}\nbob:$apr1$owjFTuIq$PaOYiiKDtFuTEpM.7RQ4o.\ncarol:{{SHA}}eiYb9tpumeAToEHU+QSPK08CN5Y=\n",
            htpasswd_bcrypt(LAB_PASSWORD)
        ),
    )
    .expect("htpasswd");
    let nginx = builder.dir().join("weak.conf");
    std::fs::write(
        &nginx,
        format!(
            "server {{\n listen 443 ssl;\n auth_basic \"Jupyter\";\n auth_basic_user_file {};\n location / {{ proxy_pass http://127.0.0.1:8888; }}\n}}\n",
            users.display()
        ),
    )
    .expect("nginx conf");
    let converted = import(&builder, &nginx).await;
    let warnings: Vec<&str> = converted
        .lines()
        .filter(|l| l.starts_with("# WARNING:"))
        .collect();
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("user \"bob\": apr1-md5") && w.contains("weak")),
        "{converted}"
    );
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("user \"carol\": {SHA}") && w.contains("htpasswd -B")),
        "{converted}"
    );
    assert!(
        !warnings.iter().any(|w| w.contains(LAB_USER)),
        "{converted}"
    );
    assert!(
        std::fs::read_to_string(&users)
            .expect("read")
            .contains("bob:$apr1$"),
        "the file is left as it was"
    );

    // nbgate's users-file loader refuses the same lines, saying why and how to re-hash.
    let checked = check_config(&builder, "weak.toml", &converted).await;
    assert!(!checked.status.success());
    assert!(
        checked.stderr.contains("bob") && checked.stderr.contains("nbgate hash-password"),
        "{}",
        checked.stderr
    );
    let failure = builder
        .set("auth.users_file", users.display().to_string())
        .start_expecting_failure()
        .await;
    assert!(
        failure.log.contains("apr1-md5") && failure.log.contains("weak"),
        "{}",
        failure.log
    );
}
