//! The state directory read-only or full while nbgate writes into it (issue 20 §3): the
//! self-signed certificate and its key, the session keys (`nbgate rotate-session-key`), the
//! first-start password hash, the session revocations (at runtime, on logout) and ACME
//! certificates (at runtime, on renewal). Each write that fails gives a one-line error naming
//! the file and the cause ("Read-only file system", "No space left on device"); a start exits
//! non-zero, a runtime write logs and nbgate keeps serving; the old files are byte-identical
//! afterwards and no temporary file is left behind.
//!
//! Tests may run as root, where `chmod 0500` stops no write. So nbgate runs in a user and mount
//! namespace of its own (`unshare --user --map-root-user --mount`, no privilege needed) where
//! the state directory is either bind-mounted read-only onto itself or replaced by a tiny full
//! tmpfs holding a copy of its content. What nbgate left there is copied out when it exits, or
//! read through `/proc/PID/root` while it runs.
//!
//! Not provoked here: the supervisor's token file (`nbgate run`) is written to
//! `$XDG_RUNTIME_DIR` or the temp dir, not the state directory.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::login::{bare_client, login, logout, session_cookie};
use common::nbgate::{nbgate_bin, run_to_exit, Finished, TEST_PASSWORD};
use common::pebble::{Pebble, PebbleOptions};
use common::process::descendants;
use common::{within, Nbgate, NbgateBuilder, TestUpstream};

const T: Duration = Duration::from_secs(30);

/// Two tests for a case `async fn(Fault)`: the state directory read-only, and full.
macro_rules! read_only_and_full {
    ($read_only:ident, $full:ident, $case:ident) => {
        #[tokio::test]
        async fn $read_only() {
            $case(Fault::ReadOnly).await;
        }

        #[tokio::test]
        async fn $full() {
            $case(Fault::Full).await;
        }
    };
}

/// How the state directory is broken.
#[derive(Clone, Copy, Debug)]
enum Fault {
    /// Bind-mounted read-only onto itself.
    ReadOnly,
    /// A 1 MiB tmpfs with a copy of the directory's content, then filled up.
    Full,
    /// Like `Full`, but with room left for this many small files (a page each: tmpfs
    /// allocates 4 KiB pages on x86-64).
    RoomFor(usize),
}

impl Fault {
    /// What the error must say.
    fn cause(self) -> &'static str {
        match self {
            Fault::ReadOnly => "Read-only file system",
            Fault::Full | Fault::RoomFor(_) => "No space left on device",
        }
    }
}

/// Where a broken state directory's content ends up after nbgate exits.
struct Broken {
    /// Temp dir holding `seed` (the content before) and `after` (the content nbgate left).
    dir: tempfile::TempDir,
    /// The command prefix: `unshare … sh -c SCRIPT` (nbgate and its arguments follow).
    wrapper: Vec<String>,
}

impl Broken {
    /// A wrapper that breaks `state` as `fault` says, runs nbgate (its path and arguments are
    /// the script's `$0 "$@"`) and copies what the state directory holds when it exits into
    /// [`Broken::after`].
    fn new(fault: Fault, state: &Path) -> Broken {
        let dir = tempfile::Builder::new()
            .prefix("nbgate-state-fault-")
            .tempdir()
            .expect("tempdir");
        let seed = dir.path().join("seed");
        let after = dir.path().join("after");
        std::fs::create_dir(&after).expect("mkdir after");
        copy_dir(state, &seed);
        let (s, seed, after) = (quote(state), quote(&seed), quote(&after));
        let tmpfs =
            format!("mount -t tmpfs -o size=1m,mode=0700 nbgate-full {s} && cp -a {seed}/. {s}/");
        // `cat` stops with ENOSPC, which is the point.
        let fill = format!("{{ cat /dev/zero > {s}/.fill 2>/dev/null || true; }}");
        let setup = match fault {
            Fault::ReadOnly => format!("mount --bind {s} {s} && mount -o remount,bind,ro {s}"),
            Fault::Full => format!("{tmpfs} && {fill}"),
            // Pages set aside, everything else filled, then the pages given back.
            Fault::RoomFor(files) => format!(
                "{tmpfs} && head -c {} /dev/zero > {s}/.room && {fill} && rm {s}/.room",
                files * 4096
            ),
        };
        let script = format!(
            "set -e; {setup}; set +e; \"$0\" \"$@\"; rc=$?; rm -f {s}/.fill; \
             cp -a {s}/. {after}/; exit $rc"
        );
        let wrapper = [
            "unshare",
            "--user",
            "--map-root-user",
            "--mount",
            "sh",
            "-c",
        ]
        .iter()
        .map(|s| s.to_string())
        .chain([script])
        .collect();
        Broken { dir, wrapper }
    }

    fn wrapper(&self) -> Vec<&str> {
        self.wrapper.iter().map(String::as_str).collect()
    }

    /// What the state directory held when nbgate exited.
    fn after(&self) -> PathBuf {
        self.dir.path().join("after")
    }
}

/// `'path'` for sh (test temp paths hold no quote).
fn quote(path: &Path) -> String {
    let text = path.display().to_string();
    assert!(!text.contains('\''), "{text}");
    format!("'{text}'")
}

/// Every file under `dir` (recursively) with its content, sorted by path relative to `dir`.
fn snapshot(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap_or_else(|e| panic!("{}: {e}", d.display())) {
            let path = entry.expect("dir entry").path();
            if path.is_dir() {
                stack.push(path);
            } else {
                let bytes =
                    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                out.push((
                    path.strip_prefix(dir).expect("under dir").to_path_buf(),
                    bytes,
                ));
            }
        }
    }
    out.sort();
    out
}

/// Asserts `after` holds exactly the files of `before`, byte for byte: no file changed, none
/// added (a temporary `.NAME.tmpPID` included), none removed.
fn assert_unchanged(before: &[(PathBuf, Vec<u8>)], after: &Path) {
    let now = snapshot(after);
    let names = |s: &[(PathBuf, Vec<u8>)]| s.iter().map(|(p, _)| p.clone()).collect::<Vec<_>>();
    assert_eq!(names(&now), names(before), "files in the state directory");
    for ((path, old), (_, new)) in before.iter().zip(&now) {
        assert!(old == new, "{} changed", path.display());
    }
}

/// Asserts that `line` names `file` and says `cause` exactly once.
fn assert_says(line: &str, file: &str, cause: &str) {
    assert!(line.contains(file), "names {file}: {line}");
    assert_eq!(
        line.matches(cause).count(),
        1,
        "says {cause:?} once: {line}"
    );
}

/// The one line nbgate printed as its error (`nbgate: …`); asserts there is exactly one, that
/// it names `file` and says `cause` once.
fn error_line(output: &str, file: &str, cause: &str) {
    let lines: Vec<&str> = output
        .lines()
        .filter(|l| l.starts_with("nbgate: "))
        .collect();
    assert_eq!(lines.len(), 1, "one error line:\n{output}");
    assert_says(lines[0], file, cause);
}

/// The state directory's files as the running nbgate under the wrapper sees them (through
/// `/proc/PID/root`, the tmpfs included), without the filler.
fn seen_by(gate: &Nbgate, state: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut seen = snapshot(&PathBuf::from(format!(
        "/proc/{}/root{}",
        nbgate_pid(gate),
        state.display()
    )));
    seen.retain(|(p, _)| p != Path::new(".fill"));
    seen
}

/// Starts `builder` under `broken`'s wrapper expecting it to exit non-zero with one error line
/// that names `file` and says the fault's cause; returns what it printed.
async fn start_fails(builder: NbgateBuilder, broken: &Broken, fault: Fault, file: &str) -> String {
    let failure = builder
        .wrapped(&broken.wrapper())
        .start_expecting_failure()
        .await;
    assert!(
        failure.status.is_some_and(|s| !s.success()),
        "{fault:?}: exits non-zero: {}",
        failure.reason
    );
    error_line(&failure.log, file, fault.cause());
    failure.log
}

/// `cp -a from to`: a copy of a state directory, modes kept.
fn copy_dir(from: &Path, to: &Path) {
    let copied = Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()
        .expect("cp");
    assert!(
        copied.success(),
        "cp -a {} {}",
        from.display(),
        to.display()
    );
}

/// A gate with the default test config whose state directory is `state`.
fn builder_on(state: &Path) -> NbgateBuilder {
    NbgateBuilder::new().set("server.state_dir", state.display().to_string())
}

/// A state directory populated by one start (certificate, key, session key), in a temp dir.
async fn populated_state() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let state = dir.path().join("state");
    drop(builder_on(&state).start().await);
    (dir, state)
}

async fn certificate_regeneration_fails_cleanly(fault: Fault) {
    let (_dir, state) = populated_state().await;
    let before = snapshot(&state);
    let broken = Broken::new(fault, &state);
    // A new server name: the stored certificate no longer fits and is regenerated.
    let builder =
        builder_on(&state).set("server.server_names", vec!["nb.example.test".to_string()]);
    start_fails(builder, &broken, fault, "tls/self-signed.").await;
    assert_unchanged(&before, &broken.after());
}

read_only_and_full!(
    certificate_on_a_read_only_state_dir,
    certificate_on_a_full_state_dir,
    certificate_regeneration_fails_cleanly
);

/// `nbgate rotate-session-key --state-dir STATE`, run under `wrapper` when given.
async fn rotate(state: &Path, wrapper: Option<&Broken>) -> Finished {
    let mut cmd = match wrapper {
        Some(b) => {
            let mut cmd = Command::new(&b.wrapper[0]);
            cmd.args(&b.wrapper[1..]).arg(nbgate_bin());
            cmd
        }
        None => Command::new(nbgate_bin()),
    };
    cmd.arg("rotate-session-key").arg("--state-dir").arg(state);
    run_to_exit(cmd, T).await
}

async fn session_key_rotation_fails_cleanly(fault: Fault) {
    let (_dir, state) = populated_state().await;
    // A rotation first, so that both the current and the previous key exist.
    let first = rotate(&state, None).await;
    assert!(first.status.success(), "{}", first.stderr);
    let before = snapshot(&state);
    assert!(before
        .iter()
        .any(|(p, _)| p.ends_with("auth/session.key.previous")));
    let broken = Broken::new(fault, &state);
    let failed = rotate(&state, Some(&broken)).await;
    assert!(!failed.status.success(), "{fault:?}: exits non-zero");
    error_line(&failed.stderr, "auth/session.key", fault.cause());
    assert_unchanged(&before, &broken.after());
}

read_only_and_full!(
    session_key_rotation_on_a_read_only_state_dir,
    session_key_rotation_on_a_full_state_dir,
    session_key_rotation_fails_cleanly
);

/// First start without a configured user: nbgate makes a password, stores its hash and shows
/// the password once. When the state directory cannot take everything the start writes, no
/// hash may stay behind whose password was never shown (later starts would reuse it, and
/// nobody would know the password).
async fn first_password_fails_cleanly(fault: Fault, state_before: Option<&Path>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let state = dir.path().join("state");
    match state_before {
        Some(populated) => copy_dir(populated, &state),
        None => std::fs::create_dir(&state).expect("mkdir state"),
    }
    let before = snapshot(&state);
    let broken = Broken::new(fault, &state);
    let log = start_fails(builder_on(&state).remove("users"), &broken, fault, "auth/").await;
    let after = snapshot(&broken.after());
    let hash_kept = after
        .iter()
        .any(|(p, _)| p.ends_with("auth/initial-password.hash"));
    let shown = log.contains("nbgate first start");
    assert!(
        !hash_kept || shown,
        "{fault:?}: a password hash was kept but its password never shown:\n{log}"
    );
    if state_before.is_some() {
        error_line(&log, "auth/initial-password.hash", fault.cause());
        assert_unchanged(&before, &broken.after());
    }
    assert!(
        !after.iter().any(|(p, _)| p
            .file_name()
            .is_some_and(|n| n.to_string_lossy().contains(".tmp"))),
        "a temporary file was left: {after:?}"
    );
}

/// The hash is the only write: the certificate and session key are there from a start with
/// a configured user.
async fn first_password_fails_cleanly_after_a_start(fault: Fault) {
    let (_dir, state) = populated_state().await;
    first_password_fails_cleanly(fault, Some(&state)).await;
}

read_only_and_full!(
    first_password_on_a_read_only_state_dir,
    first_password_on_a_full_state_dir,
    first_password_fails_cleanly_after_a_start
);

#[tokio::test]
async fn first_start_with_room_for_one_file_keeps_no_unshown_password() {
    first_password_fails_cleanly(Fault::RoomFor(1), None).await;
}

/// `nbgate run` shows the first password in its banner once Jupyter is ready. A first start
/// that fails before (here: the session key and the hash fit, the certificate does not) must
/// not keep the hash of a password it never showed.
#[tokio::test]
async fn run_first_start_that_fails_keeps_no_unshown_password() {
    let dir = tempfile::tempdir().expect("tempdir");
    let state = dir.path().join("state");
    std::fs::create_dir(&state).expect("mkdir state");
    let broken = Broken::new(Fault::RoomFor(2), &state);
    let jupyter = common::jupyter::venv_dir().join("bin/jupyter");
    // No password set with `jupyter server password` is found: nbgate makes one.
    let jupyter_config = dir.path().join("jupyter-config");
    std::fs::create_dir(&jupyter_config).expect("mkdir");
    let builder = builder_on(&state)
        .remove("users")
        .env("JUPYTER_CONFIG_DIR", &jupyter_config.display().to_string())
        .run_jupyter(&[&jupyter.display().to_string(), "server"])
        .arg("--allow-root");
    let log = start_fails(builder, &broken, Fault::RoomFor(2), "tls/self-signed.").await;
    let hash_kept = snapshot(&broken.after())
        .iter()
        .any(|(p, _)| p.ends_with("auth/initial-password.hash"));
    assert!(
        !hash_kept || log.contains("password:"),
        "a password hash was kept but its password never shown:\n{log}"
    );
}

/// The pid of the nbgate process under the wrapper (the shell's child).
fn nbgate_pid(gate: &Nbgate) -> u32 {
    descendants(gate.pid())
        .into_iter()
        .find(|p| {
            std::fs::read_to_string(format!("/proc/{p}/comm")).is_ok_and(|c| c.trim() == "nbgate")
        })
        .expect("nbgate under the wrapper")
}

/// Runtime: a logout cannot be persisted. nbgate logs it (naming the file and the cause),
/// keeps serving, still refuses the logged-out cookie, and leaves the old file as it was.
async fn logout_persistence_fails_cleanly(fault: Fault) {
    let upstream = TestUpstream::start().await;
    let (_dir, state) = populated_state().await;
    // One logout first, so that the revocation file exists.
    {
        let gate = builder_on(&state).upstream(&upstream.url()).start().await;
        let client = bare_client(&gate);
        let cookie =
            session_cookie(&within(T, "login", login(&gate, &client, TEST_PASSWORD)).await);
        assert_eq!(logout(&gate, &client, &cookie, false).await.status(), 200);
    }
    let before = snapshot(&state);
    assert!(before
        .iter()
        .any(|(p, _)| p.ends_with("auth/revocations.json")));
    let broken = Broken::new(fault, &state);
    let gate = builder_on(&state)
        .upstream(&upstream.url())
        .wrapped(&broken.wrapper())
        .start()
        .await;
    let client = bare_client(&gate);
    let cookie = session_cookie(&within(T, "login", login(&gate, &client, TEST_PASSWORD)).await);
    assert_eq!(logout(&gate, &client, &cookie, false).await.status(), 200);
    let line = gate
        .wait_for_line(&["cannot persist session revocations", fault.cause()], T)
        .await;
    assert_says(&line, "auth/revocations.json", fault.cause());
    // The logout still holds (in memory), and everyone else is served.
    let refused = within(
        T,
        "logged-out cookie",
        client
            .get(gate.url("/api/status"))
            .header("cookie", &cookie)
            .send(),
    )
    .await
    .expect("GET with the logged-out cookie");
    assert_eq!(refused.status(), 401);
    let served = within(
        T,
        "API token",
        gate.client().get(gate.url("/api/status")).send(),
    )
    .await
    .expect("GET with the API token");
    assert_eq!(served.status(), 200);
    assert_eq!(
        seen_by(&gate, &state),
        before,
        "{fault:?}: the state directory changed"
    );
}

read_only_and_full!(
    logout_on_a_read_only_state_dir,
    logout_on_a_full_state_dir,
    logout_persistence_fails_cleanly
);

const ACME_DOMAIN: &str = "nb.example.test";

/// nbgate in ACME mode against `pebble` with its state in `state`.
fn acme_gate(pebble: &Pebble, upstream: &TestUpstream, state: &Path) -> NbgateBuilder {
    builder_on(state)
        .upstream(&upstream.url())
        .set(
            "server.listen",
            vec![format!("127.0.0.1:{}", pebble.tls_port)],
        )
        .set("tls.mode", "acme")
        .set("tls.acme.domains", vec![ACME_DOMAIN.to_string()])
        .set("tls.acme.challenges", vec!["tls-alpn-01".to_string()])
        .set("tls.acme.directory", pebble.directory_url())
        .set(
            "tls.acme.ca_bundle",
            pebble.directory_ca_path().display().to_string(),
        )
        .env("NBGATE_TEST_ACME_RETRY_BASE", "300ms")
}

/// The serial of the certificate a fresh connection to `gate` sees.
async fn served_serial(gate: &Nbgate, pebble: &Pebble) -> String {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(pebble.issuing_root().await).expect("root");
    let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("TLS versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let tcp = within(T, "TCP", tokio::net::TcpStream::connect(gate.https_addr()))
        .await
        .expect("TCP connect");
    let name = rustls::pki_types::ServerName::try_from(ACME_DOMAIN).expect("name");
    let tls = within(T, "TLS", connector.connect(name, tcp))
        .await
        .expect("a verified handshake");
    let leaf = &tls.get_ref().1.peer_certificates().expect("certificates")[0];
    let (_, cert) = x509_parser::parse_x509_certificate(leaf.as_ref()).expect("x509");
    hex::encode(cert.raw_serial())
}

/// An ACME gate whose renewal is due at once, started on a state directory broken by `fault`
/// after a first start stored its account and certificate.
struct AcmeRenewal {
    pebble: Pebble,
    _upstream: TestUpstream,
    _dir: tempfile::TempDir,
    state: PathBuf,
    /// The state directory's files before the renewal.
    before: Vec<(PathBuf, Vec<u8>)>,
    /// The serial of the certificate served before the renewal.
    first_serial: String,
    /// Certificates Pebble had issued before the renewal (finalized orders).
    issued_before: usize,
    gate: Nbgate,
    _broken: Broken,
}

/// What Pebble logs for each order it finalizes, i.e. each certificate it issues.
const PEBBLE_FINALIZE: &str = "/finalize-order/";

impl AcmeRenewal {
    async fn start(fault: Fault) -> AcmeRenewal {
        let pebble = Pebble::start(PebbleOptions::default()).await;
        let upstream = TestUpstream::start().await;
        let dir = tempfile::tempdir().expect("tempdir");
        let state = dir.path().join("state");
        let first_serial = {
            let gate = acme_gate(&pebble, &upstream, &state).start().await;
            gate.wait_for_log("acme: certificate issued", T).await;
            served_serial(&gate, &pebble).await
        };
        let before = snapshot(&state);
        let issued_before = pebble.count_lines(PEBBLE_FINALIZE);
        assert!(issued_before >= 1, "{}", pebble.log_text());
        let broken = Broken::new(fault, &state);
        // Renewal due at once: more than the whole lifetime before expiry.
        let gate = acme_gate(&pebble, &upstream, &state)
            .set("tls.acme.renew_before", "36500days")
            .wrapped(&broken.wrapper())
            .start()
            .await;
        AcmeRenewal {
            pebble,
            _upstream: upstream,
            _dir: dir,
            state,
            before,
            first_serial,
            issued_before,
            gate,
            _broken: broken,
        }
    }
}

/// Runtime: an ACME renewal whose certificate cannot be stored. nbgate logs it, keeps serving
/// the certificate it has, and leaves the stored files as they were.
async fn acme_renewal_fails_cleanly(fault: Fault) {
    let r = AcmeRenewal::start(fault).await;
    let line = r
        .gate
        .wait_for_line(&["acme: renewal failed", fault.cause()], T)
        .await;
    assert_says(&line, "certs/acme/", fault.cause());
    assert_eq!(served_serial(&r.gate, &r.pebble).await, r.first_serial);
    assert_eq!(
        seen_by(&r.gate, &r.state),
        r.before,
        "{fault:?}: the state directory changed"
    );
}

read_only_and_full!(
    acme_renewal_on_a_read_only_state_dir,
    acme_renewal_on_a_full_state_dir,
    acme_renewal_fails_cleanly
);

/// A renewal that cannot store its certificate must fail before the CA issues one: each
/// discarded certificate counts against the CA's limit on duplicate certificates (Let's
/// Encrypt: 5 a week for the same names), and every retry would order another.
#[tokio::test]
async fn an_acme_renewal_that_cannot_be_stored_has_no_certificate_issued() {
    let r = AcmeRenewal::start(Fault::ReadOnly).await;
    r.gate
        .wait_for_line(&["acme: renewal failed", Fault::ReadOnly.cause()], T)
        .await;
    assert_eq!(
        r.pebble.count_lines(PEBBLE_FINALIZE),
        r.issued_before,
        "certificates issued for a renewal that could not be stored"
    );
}
