//! Each user's TOTP second factor as kept on disk, and who must pass it.
//!
//! One file per enrolled user, `state_dir/totp/<user>.json` (mode 0600, in
//! a 0700 directory, written atomically by `crate::state`): the secret
//! (unless the configuration names a `totp_secret_file`), the last time
//! step a code was accepted for, and the salted hashes of the unused
//! recovery codes. The running server reads the file at every second step,
//! so `nbgate totp enroll` and `disable` take effect without a reload.
//!
//! Checking a code and recording its step happen under one process-wide
//! lock, and the step is on disk before the caller opens a session: two
//! requests racing with one code, or a restart right after a login, cannot
//! accept a code twice.
//!
//! Owns the files and the policy; the arithmetic is `totp`'s, the lockout
//! and audit lines are the caller's. Never logs a secret or a code.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

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
    #[error("{}: not a TOTP state file", path.display())]
    Corrupt {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("{}: not a base32 TOTP secret of at least 128 bits", path.display())]
    BadSecret { path: PathBuf },
    #[error("{user:?} is not a valid user name")]
    InvalidUser { user: String },
    #[error("user {user:?} has no TOTP enrolment")]
    NotEnrolled { user: String },
}

/// The file's content.
#[derive(Debug, Clone, Serialize, Deserialize)]
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
}

impl Verified {
    pub fn accepted(self) -> bool {
        matches!(self, Verified::Code | Verified::Recovery { .. })
    }
}

/// Serializes every read-check-write of the files: with std's Mutex (never
/// held across `.await`; callers run these on the blocking pool), two
/// requests with one code cannot both read the old step.
static FILES: Mutex<()> = Mutex::new(());

/// Where the users' files live: `state_dir/totp`.
pub fn dir(state_dir: &Path) -> PathBuf {
    state_dir.join("totp")
}

fn path(state_dir: &Path, user: &str) -> Result<PathBuf, SecondFactorError> {
    // Checked although every configured name already is: the name becomes
    // a file name, and a '/' or ".." must never reach the path.
    if !valid_user_name(user) || user.starts_with('.') {
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
                .map_err(|source| SecondFactorError::Corrupt {
                    path: path.to_owned(),
                    source,
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

fn locked() -> std::sync::MutexGuard<'static, ()> {
    FILES.lock().unwrap_or_else(|e| e.into_inner())
}

/// The secret of a record, or of the configured secret file.
fn secret_of(
    config: &Config,
    user: &str,
    record: Option<&Record>,
    path: &Path,
) -> Result<Option<Secret>, SecondFactorError> {
    if let Some(file) = secret_file(config, user) {
        let text = std::fs::read_to_string(file).map_err(|source| SecondFactorError::Io {
            path: file.to_owned(),
            source,
        })?;
        return Secret::from_base32(text.trim()).map(Some).map_err(|_| {
            SecondFactorError::BadSecret {
                path: file.to_owned(),
            }
        });
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
/// and records what it used up, before returning.
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
    let _files = locked();
    let mut record = read(&path)?;
    let Some(secret) = secret_of(config, user, record.as_ref(), &path)? else {
        return Err(SecondFactorError::NotEnrolled {
            user: user.to_owned(),
        });
    };
    if totp::looks_like_code(input) {
        let last = record.as_ref().and_then(|r| r.last_step);
        return match totp::check_code(&secret, input, now, last) {
            CodeCheck::Accepted { step } => {
                // A secret file's user gets a record for the step alone.
                let mut r = record.unwrap_or_else(|| new_record(None, now, Vec::new()).0);
                r.last_step = Some(step);
                write(&path, &r)?;
                Ok(Verified::Code)
            }
            CodeCheck::Replayed => Ok(Verified::Replayed),
            CodeCheck::Wrong => Ok(Verified::Wrong),
        };
    }
    let Some(r) = record.as_mut() else {
        return Ok(Verified::Wrong);
    };
    let salt = hex::decode(&r.salt).unwrap_or_default();
    match totp::find_recovery(&salt, &r.recovery, input) {
        Some(i) => {
            r.recovery.remove(i);
            write(&path, r)?;
            Ok(Verified::Recovery {
                left: r.recovery.len(),
            })
        }
        None => Ok(Verified::Wrong),
    }
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
        },
        codes,
    )
}

/// Enrols `user` with `secret` (`None`: the secret goes into a secret file
/// the caller writes) and ten new recovery codes, replacing any earlier
/// enrolment; `used_step` is the step of the code that confirmed it, which
/// cannot be used again. Returns the recovery codes, to be shown once.
///
/// # Errors
/// The state directory cannot be written.
pub fn enrol(
    state_dir: &Path,
    user: &str,
    secret: Option<&Secret>,
    used_step: Option<u64>,
    now: u64,
) -> Result<Vec<String>, SecondFactorError> {
    let path = path(state_dir, user)?;
    let _files = locked();
    let (mut record, codes) = new_record(secret, now, totp::new_recovery_codes());
    record.last_step = used_step;
    write(&path, &record)?;
    Ok(codes)
}

/// Replaces `user`'s recovery codes with ten new ones; returns them.
///
/// # Errors
/// Not enrolled, or the state cannot be read or written.
pub fn regenerate_recovery(state_dir: &Path, user: &str) -> Result<Vec<String>, SecondFactorError> {
    let path = path(state_dir, user)?;
    let _files = locked();
    let Some(old) = read(&path)? else {
        return Err(SecondFactorError::NotEnrolled {
            user: user.to_owned(),
        });
    };
    let (mut record, codes) = new_record(None, old.enrolled_at, totp::new_recovery_codes());
    record.secret = old.secret;
    record.last_step = old.last_step;
    write(&path, &record)?;
    Ok(codes)
}

/// Removes `user`'s enrolment; `false` when there was none.
///
/// A secret in a `totp_secret_file` is the configuration's: it stays until
/// the configuration drops it.
///
/// # Errors
/// The file exists and cannot be removed.
pub fn remove(state_dir: &Path, user: &str) -> Result<bool, SecondFactorError> {
    let path = path(state_dir, user)?;
    let _files = locked();
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

    #[test]
    fn enrolment_is_a_private_file_and_codes_work_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let c = config(dir.path(), "");
        assert_eq!(status(&c, "alice").expect("status"), Status::NotNeeded);
        let secret = Secret::generate();
        let codes = enrol(dir.path(), "alice", Some(&secret), None, NOW).expect("enrol");
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
        let codes = enrol(dir.path(), "alice", Some(&secret), None, NOW).expect("enrol");
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
        assert!(remove(dir.path(), "alice").expect("remove"));
        assert!(!remove(dir.path(), "alice").expect("remove again"));
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
        let secret = Secret::generate();
        let file = dir.path().join("alice.totp");
        std::fs::write(&file, format!("{}\n", secret.to_base32())).expect("write");
        let text = format!(
            "[server]\nstate_dir = {:?}\n[[users]]\nname = \"alice\"\npassword_hash = \"x\"\ntotp_secret_file = {:?}\n",
            dir.path().display().to_string(),
            file.display().to_string()
        );
        let c = Config::from_text(&text, Path::new("t.toml")).expect("config");
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
        for bad in ["../x", "a/b", "..", ".hidden", ""] {
            assert!(matches!(
                enrol(dir.path(), bad, None, None, NOW),
                Err(SecondFactorError::InvalidUser { .. })
            ));
        }
    }
}
