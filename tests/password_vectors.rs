//! Proves that nbgate verifies the hashes the real Jupyter Server writes, with vectors made at
//! test time by `jupyter_server.auth.security.passwd` in the test venv.
//!
//! Must not: skip when Jupyter is missing (a skipped test proves nothing; it fails with how to
//! install the venv), or hang (the Python child is killed after a deadline).

use std::io::Read as _;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nbgate::auth::password::StoredHash;

/// How long the Python child may run before it is killed.
const PYTHON_DEADLINE: Duration = Duration::from_secs(60);

/// The password the vectors are made from; non-ASCII to pin Jupyter's UTF-8 encoding.
const PASSWORD: &str = "correct hörse 🐴 battery";

/// A near miss, so a verifier that compared only a prefix would be caught.
const WRONG_PASSWORD: &str = "correct hörse 🐴 batterz";

/// Prints one argon2 (Jupyter's default) and one sha1 hash of `sys.argv[1]`, one per line.
const MAKE_VECTORS: &str = "\
import sys
from jupyter_server.auth.security import passwd
print(passwd(sys.argv[1]))
print(passwd(sys.argv[1], 'sha1'))
";

/// The test venv's python: `$NBGATE_TEST_VENV/bin/python`, default `<crate>/.venv`.
fn venv_python() -> PathBuf {
    let venv = std::env::var_os("NBGATE_TEST_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".venv"));
    let python = venv.join("bin").join("python");
    assert!(
        python.exists(),
        "no python at {}: run tests/run.sh to install the test venv \
         (or set NBGATE_TEST_VENV to a venv with jupyter_server)",
        python.display()
    );
    python
}

/// Kills the child when dropped, so a failed assertion cannot leave Python running.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs the real Jupyter `passwd` and returns its (argon2, sha1) hashes of [`PASSWORD`].
fn jupyter_vectors() -> (String, String) {
    let python = venv_python();
    let child = Command::new(&python)
        .args(["-c", MAKE_VECTORS, PASSWORD])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("could not start {}: {e}", python.display()));
    let mut child = KillOnDrop(child);
    let deadline = Instant::now() + PYTHON_DEADLINE;
    // The output is two short lines, far below a pipe buffer, so polling for exit before
    // reading cannot deadlock.
    let status = loop {
        if let Some(status) = child.0.try_wait().expect("polling the python child") {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "jupyter passwd did not finish within {PYTHON_DEADLINE:?}; killed"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stdout = String::new();
    let mut stderr = String::new();
    let out = child.0.stdout.as_mut().expect("stdout is piped");
    out.read_to_string(&mut stdout)
        .expect("reading python stdout");
    let err = child.0.stderr.as_mut().expect("stderr is piped");
    err.read_to_string(&mut stderr)
        .expect("reading python stderr");
    assert!(
        status.success(),
        "jupyter passwd failed ({status}): {stderr}"
    );
    let mut lines = stdout.lines();
    let argon2 = lines.next().expect("an argon2 line").to_owned();
    let sha1 = lines.next().expect("a sha1 line").to_owned();
    (argon2, sha1)
}

#[test]
fn hashes_written_by_real_jupyter_parse_verify_and_count_as_legacy() {
    let (argon2, sha1) = jupyter_vectors();
    assert!(argon2.starts_with("argon2:$argon2id$v=19$"), "{argon2}");
    assert!(sha1.starts_with("sha1:"), "{sha1}");

    for vector in [&argon2, &sha1] {
        let stored: StoredHash = vector
            .parse()
            .unwrap_or_else(|e| panic!("{vector} does not parse: {e}"));
        assert!(
            stored.verify(PASSWORD),
            "{vector} rejects the right password"
        );
        assert!(
            !stored.verify(WRONG_PASSWORD),
            "{vector} accepts a wrong password"
        );
        assert!(!stored.verify(""), "{vector} accepts the empty password");
        assert!(stored.is_legacy(), "{vector} is a Jupyter form");
    }
    assert!(matches!(
        argon2.parse::<StoredHash>(),
        Ok(StoredHash::JupyterArgon2(_))
    ));
    assert!(matches!(
        sha1.parse::<StoredHash>(),
        Ok(StoredHash::JupyterSha1(_))
    ));
}
