//! Each user's TOTP second factor as kept on disk, and who must pass it.
//!
//! One file per enrolled user, `state_dir/totp/<user>.json` (mode 0600, in
//! a 0700 directory, written atomically by `crate::state`): the secret
//! (unless the configuration names a `totp_secret_file`), the last time
//! step a code was accepted for, and the salted hashes of the unused
//! recovery codes. The running server reads the file at every second step,
//! so `nbgate totp enroll` and `disable` take effect without a reload.
//!
//! Every read-check-write of a file happens under one lock shared by the
//! server and `nbgate totp` (a process-wide mutex, then an `flock` on
//! `state_dir/totp/.lock`), and the step is on disk before the caller opens
//! a session: two requests racing with one code, a restart right after a
//! login, or the command line writing while the server checks a code,
//! cannot accept a code twice or undo the other's change.
//!
//! Wrong codes are counted per user in the file, whichever pending login or
//! address they came from: after [`FREE_TRIES`] in a row the user's code
//! step is refused for a doubling time ([`lock_secs`]), which survives a
//! restart and ends early only by an accepted code. This stops an attacker
//! who has the password from guessing codes at the general lockout's pace.
//!
//! Owns the files and the policy; the arithmetic is `totp`'s, the lockout
//! and audit lines are the caller's. Never logs a secret or a code.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use serde::{Deserialize, Serialize};

use super::totp::{self, CodeCheck, Secret};
use crate::config::{valid_user_name, Config, TotpPolicy};
use crate::state;

/// Errors reading or writing a user's second-factor state. A login that
/// meets one is refused (fail closed), never let through on the password.
#[derive(Debug, thiserror::Error)]
pub enum SecondFactorError {
    #[error("{}: cannot read or write", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Where the file stopped parsing, not why: serde's message may quote
    /// the file's content (a secret) into the log.
    #[error("{}: not a TOTP state file (line {line}, column {column})", path.display())]
    Corrupt {
        path: PathBuf,
        line: usize,
        column: usize,
    },
    #[error("{}: not a base32 TOTP secret of at least 128 bits", path.display())]
    BadSecret { path: PathBuf },
    #[error("{user:?} is not a valid user name")]
    InvalidUser { user: String },
    #[error("user {user:?} has no TOTP enrolment")]
    NotEnrolled { user: String },
    #[error("user {user:?} is enrolled already")]
    AlreadyEnrolled { user: String },
    #[error("user {user:?}'s TOTP secret is the configuration's totp_secret_file")]
    ManagedByConfig { user: String },
}

/// The file's content. `Debug` shows no secret and no hash.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Record {
    /// The secret in base32; absent when it lives in the user's
    /// `totp_secret_file`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    secret: Option<String>,
    /// Unix seconds of enrolment (shown on the account page).
    enrolled_at: u64,
    /// The last step a code was accepted for: no code of it or earlier is
    /// accepted again (`totp::check_code`).
    #[serde(default)]
    last_step: Option<u64>,
    /// Hex salt of the recovery-code hashes.
    salt: String,
    /// Hashes of the unused recovery codes; a used one is removed.
    recovery: Vec<String>,
    /// Wrong codes in a row; only an accepted code resets it.
    #[serde(default)]
    failures: u32,
    /// Unix seconds until which no TOTP code of the user is checked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    locked_until: Option<u64>,
}

impl std::fmt::Debug for Record {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Record")
            .field("secret", &self.secret.as_ref().map(|_| "<redacted>"))
            .field("enrolled_at", &self.enrolled_at)
            .field("last_step", &self.last_step)
            .field("recovery_left", &self.recovery.len())
            .field("failures", &self.failures)
            .field("locked_until", &self.locked_until)
            .finish_non_exhaustive()
    }
}

/// What a user's second factor looks like now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Not enrolled and not required: the password is enough.
    NotNeeded,
    /// Required but not enrolled: the login enrols.
    MustEnrol,
    /// Enrolled: the login asks for a code.
    Enrolled {
        recovery_left: usize,
        enrolled_at: u64,
    },
}

/// The outcome of a typed code or recovery code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verified {
    /// A TOTP code, its step now recorded.
    Code,
    /// A recovery code, now used up; `left` remain.
    Recovery { left: usize },
    /// A code already used (or older than the last one used).
    Replayed,
    /// Neither a current code nor an unused recovery code.
    Wrong,
    /// The user's code step is locked for `retry_after` seconds after too
    /// many wrong codes; `started` when this wrong code began the lock
    /// (else the code was not checked at all).
    Locked { retry_after: u64, started: bool },
}

impl Verified {
    pub fn accepted(self) -> bool {
        matches!(self, Verified::Code | Verified::Recovery { .. })
    }
}

/// Serializes the read-check-writes of this process: with std's Mutex
/// (never held across `.await`; callers run these on the blocking pool),
/// two requests with one code cannot both read the old step. The `flock`
/// taken next does the same across processes (`nbgate totp`).
static FILES: Mutex<()> = Mutex::new(());

/// Wrong codes in a row before the user's code step is locked.
pub const FREE_TRIES: u32 = 5;

/// The first lock's length; each further wrong code doubles it.
const LOCK_BASE_SECS: u64 = 60;

/// The longest lock: an hour still leaves a password holder about 24
/// guesses a day (a year-long expected search), while the owner's phone
/// works again within the hour, and a recovery code at once.
const LOCK_MAX_SECS: u64 = 3600;

/// How long the code step locks after `failures` wrong codes in a row:
/// nothing below [`FREE_TRIES`], then 1, 2, 4 … minutes up to an hour.
pub fn lock_secs(failures: u32) -> u64 {
    match failures.checked_sub(FREE_TRIES) {
        None => 0,
        Some(extra) => LOCK_BASE_SECS
            .saturating_mul(1u64 << extra.min(16))
            .min(LOCK_MAX_SECS),
    }
}

/// Holds the lock of the users' files: dropped, it releases the `flock`
/// (the file closes) and then the mutex.
struct FilesLock {
    _file: File,
    _mutex: MutexGuard<'static, ()>,
}

/// The lock every writer of `state_dir/totp` takes, the server and
/// `nbgate totp` alike. `.lock` starts with a dot: no user's file can be
/// named so (`path`).
fn locked(state_dir: &Path) -> Result<FilesLock, SecondFactorError> {
    let mutex = FILES.lock().unwrap_or_else(|e| e.into_inner());
    let dir = dir(state_dir);
    let path = dir.join(".lock");
    let io = |source| SecondFactorError::Io {
        path: path.clone(),
        source,
    };
    state::ensure_private_dir(&dir).map_err(io)?;
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(&path)
        .map_err(io)?;
    loop {
        // SAFETY: flock on a file descriptor this function owns (the File
        // outlives the call); it reads or writes no memory of ours.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } == 0 {
            break;
        }
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            return Err(io(e));
        }
    }
    Ok(FilesLock {
        _file: file,
        _mutex: mutex,
    })
}

/// Where the users' files live: `state_dir/totp`.
pub fn dir(state_dir: &Path) -> PathBuf {
    state_dir.join("totp")
}

fn path(state_dir: &Path, user: &str) -> Result<PathBuf, SecondFactorError> {
    // Checked although every configured name already is: the name becomes
    // a file name, and a '/', ".." or leading '.' must never reach the path.
    if !valid_user_name(user) {
        return Err(SecondFactorError::InvalidUser {
            user: user.to_owned(),
        });
    }
    Ok(dir(state_dir).join(format!("{user}.json")))
}

/// Whether the configuration requires a second factor of `user`.
pub fn required(config: &Config, user: &str) -> bool {
    config.auth.require_second_factor
        || config
            .users
            .iter()
            .any(|u| u.name == user && u.totp == TotpPolicy::Required)
}

fn secret_file<'a>(config: &'a Config, user: &str) -> Option<&'a Path> {
    config
        .users
        .iter()
        .find(|u| u.name == user)
        .and_then(|u| u.totp_secret_file.as_deref())
}

fn read(path: &Path) -> Result<Option<Record>, SecondFactorError> {
    match std::fs::read(path) {
        Ok(bytes) => {
            serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| SecondFactorError::Corrupt {
                    path: path.to_owned(),
                    line: e.line(),
                    column: e.column(),
                })
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(SecondFactorError::Io {
            path: path.to_owned(),
            source,
        }),
    }
}

fn write(path: &Path, record: &Record) -> Result<(), SecondFactorError> {
    let io = |source| SecondFactorError::Io {
        path: path.to_owned(),
        source,
    };
    state::ensure_private_dir(path.parent().expect("a state file has a directory")).map_err(io)?;
    let json = serde_json::to_vec_pretty(record).expect("a record always serializes");
    state::write_atomic(path, &json, 0o600).map_err(io)
}

/// The secret of a record, or of the configured secret file.
fn secret_of(
    config: &Config,
    user: &str,
    record: Option<&Record>,
    path: &Path,
) -> Result<Option<Secret>, SecondFactorError> {
    if let Some(file) = secret_file(config, user) {
        return read_secret_file(file).map(Some);
    }
    match record.and_then(|r| r.secret.as_deref()) {
        Some(text) => {
            Secret::from_base32(text)
                .map(Some)
                .map_err(|_| SecondFactorError::BadSecret {
                    path: path.to_owned(),
                })
        }
        None => Ok(None),
    }
}

/// Reads a `totp_secret_file`: the base32 secret, surrounding whitespace
/// allowed.
///
/// Users loading calls it at start and at every reload, so a missing or
/// unusable file refuses the configuration instead of every login of its
/// user.
///
/// # Errors
/// The file cannot be read, or holds no base32 secret of 128 bits or more.
pub fn read_secret_file(file: &Path) -> Result<Secret, SecondFactorError> {
    let text = std::fs::read_to_string(file).map_err(|source| SecondFactorError::Io {
        path: file.to_owned(),
        source,
    })?;
    Secret::from_base32(text.trim()).map_err(|_| SecondFactorError::BadSecret {
        path: file.to_owned(),
    })
}

/// What `user`'s login needs after the password.
///
/// # Errors
/// The state file or secret file cannot be read or is corrupt.
pub fn status(config: &Config, user: &str) -> Result<Status, SecondFactorError> {
    let path = path(&config.server.state_dir, user)?;
    let record = read(&path)?;
    let enrolled = secret_of(config, user, record.as_ref(), &path)?.is_some();
    Ok(if enrolled {
        Status::Enrolled {
            recovery_left: record.as_ref().map_or(0, |r| r.recovery.len()),
            enrolled_at: record.as_ref().map_or(0, |r| r.enrolled_at),
        }
    } else if required(config, user) {
        Status::MustEnrol
    } else {
        Status::NotNeeded
    })
}

/// Checks a TOTP code or a recovery code of `user` at `now` (unix seconds)
/// and records what it used up, or the wrong code, before returning.
///
/// A TOTP code is not checked while the user's code step is locked
/// ([`Verified::Locked`]); a recovery code is (50 random bits each: no
/// guessing), so the owner gets in at once while someone guesses codes.
///
/// # Errors
/// The state cannot be read or written (nothing is accepted then), or the
/// user is not enrolled.
pub fn verify(
    config: &Config,
    user: &str,
    input: &str,
    now: u64,
) -> Result<Verified, SecondFactorError> {
    let path = path(&config.server.state_dir, user)?;
    let _files = locked(&config.server.state_dir)?;
    let record = read(&path)?;
    let Some(secret) = secret_of(config, user, record.as_ref(), &path)? else {
        return Err(SecondFactorError::NotEnrolled {
            user: user.to_owned(),
        });
    };
    // A secret file's user gets a record for the step and counters alone.
    let mut r = record.unwrap_or_else(|| new_record(None, now, Vec::new()).0);
    let verified = if totp::looks_like_code(input) {
        if let Some(until) = r.locked_until.filter(|&until| until > now) {
            return Ok(Verified::Locked {
                retry_after: until - now,
                started: false,
            });
        }
        match totp::check_code(&secret, input, now, r.last_step) {
            CodeCheck::Accepted { step } => {
                r.last_step = Some(step);
                Verified::Code
            }
            CodeCheck::Replayed => Verified::Replayed,
            CodeCheck::Wrong => Verified::Wrong,
        }
    } else {
        let salt = hex::decode(&r.salt).unwrap_or_default();
        match totp::find_recovery(&salt, &r.recovery, input) {
            Some(i) => {
                r.recovery.remove(i);
                Verified::Recovery {
                    left: r.recovery.len(),
                }
            }
            None => Verified::Wrong,
        }
    };
    let verified = if verified.accepted() {
        r.failures = 0;
        r.locked_until = None;
        verified
    } else {
        r.failures = r.failures.saturating_add(1);
        match lock_secs(r.failures) {
            0 => verified,
            secs => {
                r.locked_until = Some(now + secs);
                Verified::Locked {
                    retry_after: secs,
                    started: true,
                }
            }
        }
    };
    write(&path, &r)?;
    Ok(verified)
}

/// A new record and the recovery codes whose hashes it holds.
fn new_record(secret: Option<&Secret>, now: u64, codes: Vec<String>) -> (Record, Vec<String>) {
    let mut salt = [0u8; 16];
    rand::fill(&mut salt);
    let recovery = codes
        .iter()
        .map(|c| {
            totp::recovery_hash(
                &salt,
                &totp::normalize_recovery(c).expect("made by new_recovery_codes"),
            )
        })
        .collect();
    (
        Record {
            secret: secret.map(Secret::to_base32),
            enrolled_at: now,
            last_step: None,
            salt: hex::encode(salt),
            recovery,
            failures: 0,
            locked_until: None,
        },
        codes,
    )
}

/// Whether [`enrol`] may replace an enrolment that exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Replace {
    /// Only an administrator's `nbgate totp enroll --force`.
    Yes,
    /// The web's enrolments: one made since the offer was shown (by the
    /// owner, in another tab or with the command line) is never silently
    /// replaced by an older offer.
    No,
}

/// Enrols `user` with `secret` (`None`: the secret goes into a secret file
/// the caller writes) and ten new recovery codes; `used_step` is the step
/// of the code that confirmed it, which cannot be used again. Returns the
/// recovery codes, to be shown once.
///
/// # Errors
/// [`SecondFactorError::AlreadyEnrolled`] when the user has a secret (in
/// the state file or a usable `totp_secret_file`) and `replace` is `No`,
/// checked under the lock; or the state directory cannot be written.
pub fn enrol(
    config: &Config,
    user: &str,
    secret: Option<&Secret>,
    used_step: Option<u64>,
    now: u64,
    replace: Replace,
) -> Result<Vec<String>, SecondFactorError> {
    let state_dir = &config.server.state_dir;
    let path = path(state_dir, user)?;
    let _files = locked(state_dir)?;
    let old = read(&path)?;
    if replace == Replace::No {
        let by_file = secret_file(config, user).is_some()
            && matches!(secret_of(config, user, old.as_ref(), &path), Ok(Some(_)));
        if by_file || old.as_ref().is_some_and(|r| r.secret.is_some()) {
            return Err(SecondFactorError::AlreadyEnrolled {
                user: user.to_owned(),
            });
        }
    }
    let (mut record, codes) = new_record(secret, now, totp::new_recovery_codes());
    // A step used before stays used: a new secret file may hold the old
    // secret, whose codes must not come back.
    record.last_step = used_step.max(old.as_ref().and_then(|r| r.last_step));
    write(&path, &record)?;
    Ok(codes)
}

/// Replaces `user`'s recovery codes with ten new ones; returns them.
///
/// # Errors
/// Not enrolled, or the state cannot be read or written.
pub fn regenerate_recovery(state_dir: &Path, user: &str) -> Result<Vec<String>, SecondFactorError> {
    let path = path(state_dir, user)?;
    let _files = locked(state_dir)?;
    let Some(old) = read(&path)? else {
        return Err(SecondFactorError::NotEnrolled {
            user: user.to_owned(),
        });
    };
    let (mut record, codes) = new_record(None, old.enrolled_at, totp::new_recovery_codes());
    record.secret = old.secret;
    record.last_step = old.last_step;
    record.failures = old.failures;
    record.locked_until = old.locked_until;
    write(&path, &record)?;
    Ok(codes)
}

/// Removes `user`'s enrolment; `false` when there was none.
///
/// # Errors
/// [`SecondFactorError::ManagedByConfig`] for a user with a
/// `totp_secret_file`: TOTP stays on through that file, so removing the
/// state would only forget the last step used (letting a used code work
/// again) and say "removed" falsely. Else: the file cannot be removed.
pub fn remove(config: &Config, user: &str) -> Result<bool, SecondFactorError> {
    let state_dir = &config.server.state_dir;
    let path = path(state_dir, user)?;
    if secret_file(config, user).is_some() {
        return Err(SecondFactorError::ManagedByConfig {
            user: user.to_owned(),
        });
    }
    let _files = locked(state_dir)?;
    match std::fs::remove_file(&path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(source) => Err(SecondFactorError::Io { path, source }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn config(dir: &Path, extra: &str) -> Config {
        let text = format!(
            "[server]\nstate_dir = {:?}\n{extra}\n[[users]]\nname = \"alice\"\npassword_hash = \"x\"\n",
            dir.display().to_string()
        );
        Config::from_text(&text, Path::new("test.toml")).expect("config")
    }

    const NOW: u64 = 1_700_000_015;

    /// A configuration whose alice has a `totp_secret_file` in `dir`, and its secret.
    fn secret_file_config(dir: &Path) -> (Config, Secret) {
        let secret = Secret::generate();
        let file = dir.join("alice.totp");
        std::fs::write(&file, format!("{}\n", secret.to_base32())).expect("write");
        let text = format!(
            "[server]\nstate_dir = {:?}\n[[users]]\nname = \"alice\"\npassword_hash = \"x\"\ntotp_secret_file = {:?}\n",
            dir.display().to_string(),
            file.display().to_string()
        );
        let c = Config::from_text(&text, Path::new("t.toml")).expect("config");
        (c, secret)
    }

    #[test]
    fn enrolment_is_a_private_file_and_codes_work_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let c = config(dir.path(), "");
        assert_eq!(status(&c, "alice").expect("status"), Status::NotNeeded);
        let secret = Secret::generate();
        let codes = enrol(&c, "alice", Some(&secret), None, NOW, Replace::No).expect("enrol");
        assert_eq!(codes.len(), 10);
        let file = dir.path().join("totp/alice.json");
        let mode = std::fs::metadata(&file).expect("file").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let text = std::fs::read_to_string(&file).expect("read");
        for code in &codes {
            assert!(
                !text.contains(code.as_str()),
                "recovery codes are stored hashed"
            );
        }
        assert!(matches!(
            status(&c, "alice").expect("status"),
            Status::Enrolled {
                recovery_left: 10,
                ..
            }
        ));
        let code = secret.code_at(NOW);
        assert_eq!(verify(&c, "alice", &code, NOW).expect("v"), Verified::Code);
        assert_eq!(
            verify(&c, "alice", &code, NOW).expect("v"),
            Verified::Replayed,
            "the recorded step survives in the file"
        );
        assert_eq!(
            verify(&c, "alice", "000000", NOW).expect("v"),
            if secret.code_at(NOW + 30) == "000000" {
                Verified::Code
            } else {
                Verified::Wrong
            }
        );
    }

    #[test]
    fn a_recovery_code_works_once_and_regeneration_replaces_them_all() {
        let dir = tempfile::tempdir().expect("tempdir");
        let c = config(dir.path(), "");
        let secret = Secret::generate();
        let codes = enrol(&c, "alice", Some(&secret), None, NOW, Replace::No).expect("enrol");
        assert_eq!(
            verify(&c, "alice", &codes[2], NOW).expect("v"),
            Verified::Recovery { left: 9 }
        );
        assert_eq!(
            verify(&c, "alice", &codes[2], NOW).expect("v"),
            Verified::Wrong
        );
        let fresh = regenerate_recovery(dir.path(), "alice").expect("regenerate");
        assert_eq!(
            verify(&c, "alice", &codes[3], NOW).expect("v"),
            Verified::Wrong
        );
        assert_eq!(
            verify(&c, "alice", &fresh[0], NOW).expect("v"),
            Verified::Recovery { left: 9 }
        );
        assert_eq!(
            verify(&c, "alice", &secret.code_at(NOW), NOW).expect("v"),
            Verified::Code,
            "the secret is kept"
        );
        assert!(remove(&c, "alice").expect("remove"));
        assert!(!remove(&c, "alice").expect("remove again"));
        assert_eq!(status(&c, "alice").expect("status"), Status::NotNeeded);
    }

    #[test]
    fn required_users_must_enrol_and_a_corrupt_file_fails_closed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let c = config(dir.path(), "[auth]\nrequire_second_factor = true\n");
        assert_eq!(status(&c, "alice").expect("status"), Status::MustEnrol);
        std::fs::create_dir_all(dir.path().join("totp")).expect("dir");
        std::fs::write(dir.path().join("totp/alice.json"), "{").expect("write");
        assert!(matches!(
            status(&c, "alice"),
            Err(SecondFactorError::Corrupt { .. })
        ));
        assert!(matches!(
            verify(&c, "alice", "123456", NOW),
            Err(SecondFactorError::Corrupt { .. })
        ));
    }

    #[test]
    fn a_secret_file_enrols_the_user_and_its_steps_are_recorded() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (c, secret) = secret_file_config(dir.path());
        assert!(matches!(
            status(&c, "alice").expect("status"),
            Status::Enrolled {
                recovery_left: 0,
                ..
            }
        ));
        let code = secret.code_at(NOW);
        assert_eq!(verify(&c, "alice", &code, NOW).expect("v"), Verified::Code);
        assert_eq!(
            verify(&c, "alice", &code, NOW).expect("v"),
            Verified::Replayed
        );
    }

    #[test]
    fn names_that_are_no_file_names_are_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let c = config(dir.path(), "");
        for bad in ["../x", "a/b", "..", ".hidden", ".lock", ""] {
            assert!(matches!(
                enrol(&c, bad, None, None, NOW, Replace::Yes),
                Err(SecondFactorError::InvalidUser { .. })
            ));
        }
    }

    fn wrong(secret: &Secret, now: u64) -> &'static str {
        let near = [now - 30, now, now + 30].map(|t| secret.code_at(t));
        ["123456", "654321", "111111"]
            .into_iter()
            .find(|w| !near.iter().any(|c| c == w))
            .expect("three codes cannot cover three others")
    }

    #[test]
    fn wrong_codes_in_a_row_lock_the_user_for_a_doubling_time_until_a_code_is_accepted() {
        let dir = tempfile::tempdir().expect("tempdir");
        let c = config(dir.path(), "");
        let secret = Secret::generate();
        let codes = enrol(&c, "alice", Some(&secret), None, NOW, Replace::No).expect("enrol");
        let bad = wrong(&secret, NOW);
        for _ in 1..FREE_TRIES {
            assert_eq!(verify(&c, "alice", bad, NOW).expect("v"), Verified::Wrong);
        }
        assert_eq!(
            verify(&c, "alice", bad, NOW).expect("v"),
            Verified::Locked {
                retry_after: 60,
                started: true
            }
        );
        // Locked: even the right code is not checked, and the lock is in
        // the file (a restart keeps it).
        assert_eq!(
            verify(&c, "alice", &secret.code_at(NOW + 10), NOW + 10).expect("v"),
            Verified::Locked {
                retry_after: 50,
                started: false
            }
        );
        let text = std::fs::read_to_string(dir.path().join("totp/alice.json")).expect("read");
        assert!(text.contains("locked_until"), "{text}");
        // After the lock, one more wrong code locks for twice as long.
        let later = NOW + 61;
        assert_eq!(
            verify(&c, "alice", wrong(&secret, later), later).expect("v"),
            Verified::Locked {
                retry_after: 120,
                started: true
            }
        );
        assert_eq!(lock_secs(FREE_TRIES + 20), 3600, "an hour at most");
        // A recovery code still works during the lock, and clears it.
        assert_eq!(
            verify(&c, "alice", &codes[0], later).expect("v"),
            Verified::Recovery { left: 9 }
        );
        let code = secret.code_at(later + 30);
        assert_eq!(
            verify(&c, "alice", &code, later + 30).expect("v"),
            Verified::Code
        );
        assert_eq!(
            verify(&c, "alice", wrong(&secret, later + 60), later + 60).expect("v"),
            Verified::Wrong,
            "an accepted code starts the count again"
        );
    }

    #[test]
    fn an_enrolment_is_not_replaced_unless_asked() {
        let dir = tempfile::tempdir().expect("tempdir");
        let c = config(dir.path(), "");
        let first = Secret::generate();
        let other = Secret::generate();
        enrol(&c, "alice", Some(&first), Some(5), NOW, Replace::No).expect("enrol");
        let again = enrol(&c, "alice", Some(&other), None, NOW, Replace::No);
        assert!(matches!(
            again,
            Err(SecondFactorError::AlreadyEnrolled { .. })
        ));
        assert_eq!(
            verify(&c, "alice", &first.code_at(NOW), NOW).expect("v"),
            Verified::Code,
            "the first enrolment stands"
        );
        let second = Secret::generate();
        enrol(&c, "alice", Some(&second), None, NOW, Replace::Yes).expect("replace");
        assert_eq!(
            verify(&c, "alice", &second.code_at(NOW + 30), NOW + 30).expect("v"),
            Verified::Code
        );
    }

    #[test]
    fn a_secret_file_user_is_not_removed_or_enrolled_over_and_keeps_its_step() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (c, secret) = secret_file_config(dir.path());
        let code = secret.code_at(NOW);
        assert_eq!(verify(&c, "alice", &code, NOW).expect("v"), Verified::Code);
        assert!(matches!(
            remove(&c, "alice"),
            Err(SecondFactorError::ManagedByConfig { .. })
        ));
        assert!(matches!(
            enrol(
                &c,
                "alice",
                Some(&Secret::generate()),
                None,
                NOW,
                Replace::No
            ),
            Err(SecondFactorError::AlreadyEnrolled { .. })
        ));
        assert_eq!(
            verify(&c, "alice", &code, NOW).expect("v"),
            Verified::Replayed,
            "the used step is kept"
        );
    }

    #[test]
    fn the_files_lock_excludes_another_process_handle() {
        let dir = tempfile::tempdir().expect("tempdir");
        let held = locked(dir.path()).expect("lock");
        // Another open file description, as `nbgate totp` in another
        // process has: its flock must wait while ours is held.
        let other = std::fs::File::open(dir.path().join("totp/.lock")).expect("open");
        let try_lock = || unsafe { libc::flock(other.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        assert_eq!(try_lock(), -1, "held by the first handle");
        drop(held);
        assert_eq!(try_lock(), 0, "free once released");
    }

    #[test]
    fn debug_and_errors_show_no_secret() {
        let secret = Secret::generate();
        let (record, _) = new_record(Some(&secret), NOW, totp::new_recovery_codes());
        let shown = format!("{record:?}");
        assert!(!shown.contains(&secret.to_base32()), "{shown}");
        assert!(!shown.contains(&record.salt), "{shown}");
        let dir = tempfile::tempdir().expect("tempdir");
        let c = config(dir.path(), "");
        std::fs::create_dir_all(dir.path().join("totp")).expect("dir");
        let leaked = "{\"secret\": 12, \"JBSWY3DPEHPK3PXP\": 1}";
        std::fs::write(dir.path().join("totp/alice.json"), leaked).expect("write");
        let e = status(&c, "alice").expect_err("corrupt");
        let text = format!("{e} {e:?}");
        assert!(!text.contains("JBSWY3DPEHPK3PXP"), "{text}");
    }
}
