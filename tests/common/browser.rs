//! Running the Python end-to-end scripts of `tests/browser/` (Playwright driving Debian's
//! Chromium, sharing `tests/browser/harness.py`) with the test venv's python: a time limit,
//! the whole process tree killed on timeout or panic, and the script's `OK` contract.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::nbgate::{Nbgate, TEST_PASSWORD, TEST_USER};
use super::process::kill_tree;

pub fn python() -> PathBuf {
    let venv = std::env::var_os("NBGATE_TEST_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv"));
    let py = venv.join("bin/python");
    assert!(
        py.exists(),
        "{} is missing: run tests/run.sh to install the test venv",
        py.display()
    );
    py
}

pub fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/browser")
        .join(name)
}

/// Runs a script to completion within `limit`; the whole process tree
/// (Chromium included) is killed on timeout or panic.
pub fn run(args: &[&str], env: &[(&str, &str)], limit: Duration) -> (bool, String) {
    let mut cmd = Command::new(python());
    cmd.args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .env_remove("REQUESTS_CA_BUNDLE")
        .env_remove("CURL_CA_BUNDLE");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("start python");
    let read = |r: Option<Box<dyn std::io::Read + Send>>| {
        std::thread::spawn(move || {
            let mut s = String::new();
            if let Some(mut r) = r {
                let _ = r.read_to_string(&mut s);
            }
            s
        })
    };
    let out_t = read(
        child
            .stdout
            .take()
            .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
    );
    let err_t = read(
        child
            .stderr
            .take()
            .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
    );
    struct Guard(std::process::Child);
    impl Drop for Guard {
        fn drop(&mut self) {
            if matches!(self.0.try_wait(), Ok(None)) {
                kill_tree(&mut self.0);
            }
        }
    }
    let mut guard = Guard(child);
    let start = Instant::now();
    let finished = loop {
        if let Some(status) = guard.0.try_wait().expect("wait") {
            break Some(status);
        }
        if start.elapsed() > limit {
            kill_tree(&mut guard.0);
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    drop(guard);
    let text = format!(
        "{}{}{}",
        out_t.join().unwrap_or_default(),
        err_t.join().unwrap_or_default(),
        if finished.is_none() {
            "\n(timed out)"
        } else {
            ""
        }
    );
    (finished.is_some_and(|s| s.success()), text)
}

/// Runs the browser script `name` against `gate` as the test user (`--url`, `--user`,
/// `--screenshots`, `--timeout budget_secs`, then `extra`), screenshots in
/// `target/test-artifacts/<shots_dir>`; asserts that it ended with `OK`. Returns that directory.
pub async fn browser_flow(
    gate: &Nbgate,
    name: &str,
    shots_dir: &str,
    extra: &[&str],
    budget_secs: u64,
) -> PathBuf {
    let shots = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("target/test-artifacts")
        .join(shots_dir);
    std::fs::create_dir_all(&shots).expect("artifact dir");
    let mut args: Vec<String> = vec![
        script(name).to_str().expect("utf-8").to_owned(),
        "--url".into(),
        format!("https://localhost:{}", gate.https_addr().port()),
        "--user".into(),
        TEST_USER.into(),
        "--screenshots".into(),
        shots.display().to_string(),
        "--timeout".into(),
        budget_secs.to_string(),
    ];
    args.extend(extra.iter().map(|a| a.to_string()));
    let (ok, out) = tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        run(
            &args,
            &[("NBGATE_TEST_PASSWORD", TEST_PASSWORD)],
            Duration::from_secs(budget_secs + 30),
        )
    })
    .await
    .expect("join");
    assert!(
        ok,
        "browser flow {name} failed:\n{out}\n--- nbgate log ---\n{}",
        gate.log_text()
    );
    assert!(out.trim_end().ends_with("OK"), "{out}");
    shots
}
