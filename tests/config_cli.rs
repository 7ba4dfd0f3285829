//! The command line and the config file: `check-config` on the shipped example, redaction,
//! errors that name the file and key, `--help`/`--version`, CLI overrides and JSON logs.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::nbgate::{nbgate_bin, run_to_exit, Finished};
use common::{within, Nbgate, NbgateBuilder, TestUpstream};

const T: Duration = Duration::from_secs(30);

async fn nbgate(args: &[&str]) -> Finished {
    let mut cmd = Command::new(nbgate_bin());
    cmd.args(args);
    run_to_exit(cmd, Duration::from_secs(20)).await
}

fn example_config() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("config/nbgate.example.toml")
        .display()
        .to_string()
}

#[tokio::test]
async fn example_config_passes_check_config() {
    let path = example_config();
    let out = nbgate(&["check-config", "--config", &path]).await;
    assert!(out.status.success(), "{out:?}");
    let effective: toml::Table = toml::from_str(&out.stdout)
        .unwrap_or_else(|e| panic!("check-config output is not TOML ({e}):\n{}", out.stdout));
    for section in ["server", "tls", "upstream", "log"] {
        assert!(
            effective.contains_key(section),
            "[{section}] missing from:\n{}",
            out.stdout
        );
    }
}

#[tokio::test]
async fn check_config_redacts_the_upstream_token() {
    let secret = format!("env-secret-{}", common::random_hex(8));
    let builder = NbgateBuilder::new()
        .remove("upstream.token_file")
        .set("upstream.token_env", "NBGATE_TEST_JUPYTER_TOKEN")
        .env("NBGATE_TEST_JUPYTER_TOKEN", &secret);
    let out = builder.check_config().await;
    assert!(out.status.success(), "{out:?}");
    assert!(
        !out.stdout.contains(&secret),
        "token printed:\n{}",
        out.stdout
    );
    assert!(
        !out.stderr.contains(&secret),
        "token logged:\n{}",
        out.stderr
    );

    let builder = NbgateBuilder::new();
    let token = builder.token().to_string();
    let out = builder.check_config().await;
    assert!(out.status.success(), "{out:?}");
    assert!(
        !out.stdout.contains(&token),
        "token printed:\n{}",
        out.stdout
    );
    assert!(
        !out.stderr.contains(&token),
        "token logged:\n{}",
        out.stderr
    );
}

#[tokio::test]
async fn unknown_key_is_rejected_naming_the_file_and_key() {
    let builder = NbgateBuilder::new().set("server.listen_adress", "127.0.0.1:1");
    let out = builder.check_config().await;
    let path = builder.dir().join("config.toml").display().to_string();
    assert!(!out.status.success(), "{out:?}");
    let message = format!("{}\n{}", out.stdout, out.stderr);
    assert!(message.contains(&path), "file not named:\n{message}");
    assert!(
        message.contains("listen_adress"),
        "key not named:\n{message}"
    );
    assert!(
        message.contains("unknown field"),
        "problem not named:\n{message}"
    );

    // `serve` refuses the same file the same way.
    let failure = NbgateBuilder::new()
        .set("upstream.tokenfile", "/x")
        .start_expecting_failure()
        .await;
    assert!(!failure.status.expect("exits").success());
    assert!(failure.log.contains("tokenfile"), "{}", failure.log);
}

#[tokio::test]
async fn invalid_values_are_rejected_naming_the_key() {
    let cases: [(&str, toml::Value, &str); 8] = [
        (
            "server.header_read_timeout",
            "soon".into(),
            "invalid duration",
        ),
        ("server.max_header_bytes", "lots".into(), ""),
        ("server.max_connections", "many".into(), ""),
        ("tls.mode", "sometimes".into(), ""),
        ("upstream.url", "ftp://127.0.0.1:21".into(), ""),
        ("server.listen", vec!["not-an-address"].into(), ""),
        ("log.level", "nbgate=loud".into(), "not a log filter"),
        (
            "admin.listen",
            "192.0.2.1:9180".into(),
            "not a loopback address",
        ),
    ];
    // Check every case, then report all failures together.
    let mut failures = Vec::new();
    for (key, value, problem) in cases {
        let builder = NbgateBuilder::new().set(key, value.clone());
        let out = builder.check_config().await;
        let message = format!("{}\n{}", out.stdout, out.stderr).trim().to_string();
        let path = builder.dir().join("config.toml").display().to_string();
        let bare = key.rsplit('.').next().expect("key");
        if out.status.success() {
            failures.push(format!("{key} = {value}: accepted"));
        } else if !message.contains(&path) {
            failures.push(format!("{key} = {value}: file not named: {message}"));
        } else if !message.contains(key) && !message.contains(bare) {
            failures.push(format!("{key} = {value}: key not named: {message}"));
        } else if !message.contains(problem) {
            failures.push(format!("{key} = {value}: {problem:?} not said: {message}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[tokio::test]
async fn missing_config_file_is_named() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("absent.toml").display().to_string();
    let out = nbgate(&["check-config", "--config", &path]).await;
    assert!(!out.status.success());
    assert!(out.stderr.contains(&path), "{}", out.stderr);
}

#[tokio::test]
async fn version_and_help() {
    let version = nbgate(&["--version"]).await;
    assert!(version.status.success(), "{version:?}");
    assert!(
        version.stdout.contains(env!("CARGO_PKG_VERSION")),
        "{}",
        version.stdout
    );

    let help = nbgate(&["--help"]).await;
    assert!(help.status.success(), "{help:?}");
    for word in ["serve", "check-config"] {
        assert!(
            help.stdout.contains(word),
            "--help lacks {word}:\n{}",
            help.stdout
        );
    }

    let serve_help = nbgate(&["serve", "--help"]).await;
    assert!(serve_help.status.success(), "{serve_help:?}");
    for flag in ["--config", "--listen", "--upstream", "--state-dir"] {
        assert!(
            serve_help.stdout.contains(flag),
            "serve --help lacks {flag}:\n{}",
            serve_help.stdout
        );
    }

    let bad = nbgate(&["serve", "--no-such-flag"]).await;
    assert!(!bad.status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn command_line_overrides_the_config_file() {
    let upstream = TestUpstream::start().await;
    let state = tempfile::tempdir().expect("tempdir");
    // The config points at a dead upstream and another state dir; the flags win.
    // (The harness trusts the certificate under --state-dir.)
    let gate = Nbgate::builder()
        .arg("--upstream")
        .arg(&upstream.url())
        .arg("--state-dir")
        .arg(&state.path().display().to_string())
        .arg("--listen")
        .arg("127.0.0.1:0")
        .start()
        .await;
    assert!(
        state.path().join("tls/self-signed.crt").exists(),
        "--state-dir ignored"
    );
    let response = within(
        T,
        "GET via --upstream",
        gate.client().get(gate.url("/cli")).send(),
    )
    .await
    .expect("GET via --upstream");
    assert_eq!(response.status(), 200, "--upstream ignored");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_log_format_writes_one_json_object_per_line() {
    let upstream = TestUpstream::start().await;
    let gate = Nbgate::builder()
        .upstream(&upstream.url())
        .set("log.format", "json")
        .start()
        .await;
    let response = within(T, "GET", gate.client().get(gate.url("/json-log")).send())
        .await
        .expect("GET");
    assert_eq!(response.status(), 200);
    gate.wait_for_line(&["/json-log", "status"], Duration::from_secs(5))
        .await;
    for line in gate.log_lines() {
        let value: serde_json::Value = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("not a JSON log line ({e}): {line}"));
        assert!(value.is_object(), "{line}");
    }
}
