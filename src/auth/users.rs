//! Where users come from: `[[users]]` in the config, a users file, an
//! environment variable or systemd credential holding a hash, a plain
//! password from an environment variable or file (hashed at start, the
//! variable then removed), and — when none is configured — a generated
//! first-start password whose hash is kept in the state directory.
//!
//! Never logs a password, a hash or a token.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use super::password::{self, PasswordError, StoredHash};
use super::second_factor;
use super::session::SessionError;
use crate::config::{valid_user_name, Config};
use crate::state;

/// Errors loading users or session state. Each names its source.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("{source_name}: cannot read")]
    Read {
        source_name: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{source_name}: user {user:?}: invalid hash")]
    BadHash {
        source_name: String,
        user: String,
        #[source]
        source: PasswordError,
    },
    #[error("{source_name}: {message}")]
    Invalid {
        source_name: String,
        message: String,
    },
    #[error("{source_name}: the password is not acceptable")]
    WeakPassword {
        source_name: String,
        #[source]
        source: PasswordError,
    },
    #[error("{path}: cannot write")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Session(#[from] SessionError),
}

/// One user.
pub struct User {
    name: String,
    password: Option<Arc<StoredHash>>,
    /// Each token's id (`token_id`) and hash.
    tokens: Vec<(Arc<str>, Arc<StoredHash>)>,
    /// Short digest of the password hash string, carried in session
    /// cookies: a password change makes every older cookie invalid.
    fingerprint: String,
    /// Digest of the token hash strings: a reload compares it to find the
    /// users whose tokens changed.
    tokens_fingerprint: String,
}

impl User {
    pub fn name(&self) -> &str {
        &self.name
    }
    pub fn password_hash(&self) -> Option<Arc<StoredHash>> {
        self.password.clone()
    }
    pub fn is_legacy(&self) -> bool {
        self.password.as_ref().is_some_and(|h| h.is_legacy())
    }
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }
}

/// All users, by name.
#[derive(Default)]
pub struct UserStore {
    users: HashMap<String, User>,
    /// Hashes nbgate made from plain passwords (`password_env`,
    /// `password_file`), by source name. A reload reuses them: the
    /// variable was removed from the environment at start, and hashing the
    /// same file again would give a new salt, hence a new fingerprint that
    /// would end every session of the user.
    from_plain: HashMap<String, String>,
}

/// How the users of a reload differ from the ones before it.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct UserChanges {
    pub added: Vec<String>,
    /// Sessions, tokens and tunnels of these users end.
    pub removed: Vec<String>,
    /// Their sessions end (the fingerprint in their cookies no longer
    /// matches) and so do their session tunnels.
    pub password_changed: Vec<String>,
    /// Their token tunnels end; their sessions stay.
    pub tokens_changed: Vec<String>,
}

impl UserChanges {
    pub fn is_empty(&self) -> bool {
        *self == UserChanges::default()
    }

    /// Users some of whose credentials stopped being valid.
    pub fn revoked(&self) -> impl Iterator<Item = &str> {
        self.removed
            .iter()
            .chain(&self.password_changed)
            .chain(&self.tokens_changed)
            .map(String::as_str)
    }
}

impl UserStore {
    pub fn get(&self, name: &str) -> Option<&User> {
        self.users.get(name)
    }

    /// The hash an unknown user name is verified against: the password
    /// hash of the first user by name. A guess for a name that does not
    /// exist then costs exactly what a wrong password for a real user costs
    /// (same algorithm, same parameters), so timing does not reveal which
    /// names exist. Users whose hashes have other parameters remain
    /// distinguishable by timing; hashes made by one `nbgate hash-password`
    /// all share the same cost. `None` when no user has a password.
    pub fn timing_reference(&self) -> Option<Arc<StoredHash>> {
        let mut names: Vec<&String> = self.users.keys().collect();
        names.sort();
        names
            .into_iter()
            .find_map(|n| self.users.get(n).and_then(User::password_hash))
    }

    pub fn len(&self) -> usize {
        self.users.len()
    }

    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }

    /// What differs between `self` (before a reload) and `new`.
    pub fn changes(&self, new: &UserStore) -> UserChanges {
        let mut c = UserChanges::default();
        for (name, old) in &self.users {
            match new.users.get(name) {
                None => c.removed.push(name.clone()),
                Some(u) => {
                    if u.fingerprint != old.fingerprint {
                        c.password_changed.push(name.clone());
                    }
                    if u.tokens_fingerprint != old.tokens_fingerprint {
                        c.tokens_changed.push(name.clone());
                    }
                }
            }
        }
        c.added = new
            .users
            .keys()
            .filter(|n| !self.users.contains_key(*n))
            .cloned()
            .collect();
        for list in [
            &mut c.added,
            &mut c.removed,
            &mut c.password_changed,
            &mut c.tokens_changed,
        ] {
            list.sort();
        }
        c
    }

    /// Every user's tokens: (user, token id, token hash).
    pub fn token_hashes(&self) -> Vec<(String, Arc<str>, Arc<StoredHash>)> {
        self.users
            .values()
            .flat_map(|u| {
                u.tokens
                    .iter()
                    .map(|(id, t)| (u.name.clone(), Arc::clone(id), Arc::clone(t)))
            })
            .collect()
    }

    /// Adds a user; a later source may not redefine an earlier one's name.
    pub fn add(
        &mut self,
        source_name: &str,
        name: &str,
        password_hash: Option<&str>,
        tokens: &[&str],
    ) -> Result<(), AuthError> {
        if !valid_user_name(name) {
            return Err(AuthError::Invalid {
                source_name: source_name.to_owned(),
                message: format!("{name:?} is not a valid user name"),
            });
        }
        if self.users.contains_key(name) {
            return Err(AuthError::Invalid {
                source_name: source_name.to_owned(),
                message: format!("user {name:?} is already defined by another source"),
            });
        }
        let parse = |h: &str| {
            h.parse::<StoredHash>()
                .map(Arc::new)
                .map_err(|source| AuthError::BadHash {
                    source_name: source_name.to_owned(),
                    user: name.to_owned(),
                    source,
                })
        };
        let password = password_hash.map(parse).transpose()?;
        let token_texts = tokens;
        let tokens = tokens
            .iter()
            .map(|t| Ok::<_, AuthError>((Arc::from(token_id(t)), parse(t)?)))
            .collect::<Result<Vec<_>, _>>()?;
        let digest = |h: &str| {
            let d = ring::digest::digest(&ring::digest::SHA256, h.as_bytes());
            hex::encode(&d.as_ref()[..8])
        };
        let fingerprint = password_hash.map_or_else(String::new, |h| digest(h.trim()));
        let tokens_fingerprint = digest(
            &token_texts
                .iter()
                .map(|t| t.trim())
                .collect::<Vec<_>>()
                .join("\n"),
        );
        self.users.insert(
            name.to_owned(),
            User {
                name: name.to_owned(),
                password,
                tokens,
                fingerprint,
                tokens_fingerprint,
            },
        );
        Ok(())
    }
}

/// A token's id in logs and audit events: the first 8 bytes of the
/// SHA-256 of its hash as configured, in hex. It names which of a user's
/// tokens was used (and survives reordering them) without revealing
/// anything about the token: it is derived from the stored hash, never the
/// secret. An operator finds it with
/// `printf %s 'HASH' | sha256sum | cut -c1-16`.
pub fn token_id(stored_hash: &str) -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, stored_hash.trim().as_bytes());
    hex::encode(&d.as_ref()[..8])
}

/// A password generated on first start, to be shown once on the terminal.
pub struct InitialPassword {
    pub user: String,
    pub password: String,
    /// Where its hash is stored: removed again if the password cannot be
    /// shown (a start that fails before it is), or nobody could ever log in.
    pub hash_file: PathBuf,
}

impl std::fmt::Debug for InitialPassword {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InitialPassword")
            .field("user", &self.user)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// systemd credential names (`LoadCredential=nbgate-password-hash:...`).
const CREDENTIAL_HASH: &str = "nbgate-password-hash";

/// Removes `var` from the environment and overwrites its value where the
/// kernel shows it.
///
/// `unsetenv` alone is not enough on Linux: `/proc/PID/environ` (and
/// `ps e`) read the environment block the kernel placed on the initial
/// stack, and `unsetenv` only drops the pointer to it. So the value's bytes
/// in that block are zeroed first, then the variable is removed.
///
/// Sound only while the process is single-threaded (no other thread may read
/// or change the environment concurrently); `load` documents that.
pub fn scrub_env_var(var: &str) {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let prefix = format!("{var}=");
        // SAFETY: single-threaded (caller contract), so nothing reads or
        // modifies `environ` or its strings meanwhile. Each entry is a
        // NUL-terminated string in writable memory (the initial stack or a
        // heap copy made by setenv); we write only within that string.
        unsafe {
            let mut entry = libc::environ;
            while !entry.is_null() && !(*entry).is_null() {
                let s = *entry;
                let bytes = std::ffi::CStr::from_ptr(s).to_bytes();
                if bytes.starts_with(prefix.as_bytes()) {
                    let len = bytes.len();
                    std::ptr::write_bytes(s.add(prefix.len()), 0, len - prefix.len());
                }
                entry = entry.add(1);
            }
        }
    }
    std::env::remove_var(var);
}

/// Loads users from every configured source.
///
/// Call before the runtime starts threads: a plain password taken from the
/// environment is removed from it (`remove_var` is only sound while the
/// process is single-threaded), so it does not linger in
/// `/proc/PID/environ` or reach child processes.
///
/// # Errors
/// An unreadable source, an invalid hash or name, a duplicate user.
pub fn load(config: &Config) -> Result<(UserStore, Option<InitialPassword>), AuthError> {
    load_with(config, None)
}

/// Loads users again for a configuration reload, from the same sources and
/// with the same checks as at start, with three differences: a plain
/// password from the environment is the one read at start (the variable was
/// removed then, and a running process's environment cannot change); a
/// plain password file whose content is unchanged keeps its hash (so its
/// sessions stay valid); and no first-start password is ever made, since
/// nobody would see it.
///
/// Runs the password hashing of a changed password file: call it off the
/// async workers. Never touches the environment, so it is sound with
/// threads running.
///
/// # Errors
/// As `load`, and a source only a restart can provide.
pub fn reload(config: &Config, previous: &UserStore) -> Result<UserStore, AuthError> {
    load_with(config, Some(previous)).map(|(store, _)| store)
}

fn load_with(
    config: &Config,
    previous: Option<&UserStore>,
) -> Result<(UserStore, Option<InitialPassword>), AuthError> {
    let mut store = UserStore::default();
    let auth = &config.auth;
    let src = config.source.display().to_string();

    for u in &config.users {
        // A secret file that is missing or holds no secret would refuse every
        // login of its user with a server error: refuse the configuration at
        // start and at reload instead, naming the file.
        if let Some(file) = &u.totp_secret_file {
            second_factor::read_secret_file(file).map_err(|e| AuthError::Invalid {
                source_name: format!("{src}: [[users]] {:?}: totp_secret_file", u.name),
                message: match std::error::Error::source(&e) {
                    Some(cause) => format!("{e}: {cause}"),
                    None => e.to_string(),
                },
            })?;
        }
        let tokens: Vec<&str> = u.tokens.iter().map(|t| t.expose()).collect();
        store.add(
            &format!("{src}: [[users]]"),
            &u.name,
            u.password_hash.as_ref().map(|h| h.expose()),
            &tokens,
        )?;
    }

    if let Some(path) = &auth.users_file {
        let name = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| AuthError::Read {
            source_name: name.clone(),
            source,
        })?;
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let at = format!("{name}:{}", i + 1);
            let (user, hash) = line.split_once(':').ok_or_else(|| AuthError::Invalid {
                source_name: at.clone(),
                message: "expected NAME:HASH".into(),
            })?;
            store.add(&at, user.trim(), Some(hash.trim()), &[])?;
        }
    }

    let default_user = auth.default_user.as_str();
    if let Some(var) = &auth.password_hash_env {
        let source_name = format!("environment variable {var}");
        let hash = std::env::var(var).map_err(|_| AuthError::Invalid {
            source_name: source_name.clone(),
            message: "is not set".into(),
        })?;
        store.add(&source_name, default_user, Some(&hash), &[])?;
    }

    if let Some(dir) = std::env::var_os("CREDENTIALS_DIRECTORY") {
        let path = PathBuf::from(dir).join(CREDENTIAL_HASH);
        if path.exists() {
            let source_name = format!("systemd credential {}", path.display());
            let hash = std::fs::read_to_string(&path).map_err(|source| AuthError::Read {
                source_name: source_name.clone(),
                source,
            })?;
            store.add(&source_name, default_user, Some(hash.trim()), &[])?;
        }
    }

    let plain =
        if let Some(var) = &auth.password_env {
            let source_name = format!("environment variable {var}");
            match previous {
                // Read at start only (see `reload`).
                Some(previous) => {
                    let hash = previous.from_plain.get(&source_name).ok_or_else(|| {
                        AuthError::Invalid {
                            source_name: source_name.clone(),
                            message: "is read at start only: restart nbgate to use it".into(),
                        }
                    })?;
                    Some(Plain::Hashed(source_name, hash.clone()))
                }
                None => {
                    let pw = std::env::var(var).map_err(|_| AuthError::Invalid {
                        source_name: source_name.clone(),
                        message: "is not set".into(),
                    })?;
                    // Scrubbed and removed so it is neither inherited by children nor
                    // readable in /proc/PID/environ (see the function doc on soundness).
                    scrub_env_var(var);
                    Some(Plain::Password(source_name, pw))
                }
            }
        } else if let Some(path) = &auth.password_file {
            let source_name = path.display().to_string();
            let pw = std::fs::read_to_string(path).map_err(|source| AuthError::Read {
                source_name: source_name.clone(),
                source,
            })?;
            let pw = pw.trim_end_matches(['\r', '\n']).to_owned();
            // Unchanged since the last load: the same hash, the same sessions.
            let kept = previous
                .and_then(|p| p.from_plain.get(&source_name))
                .filter(|h| h.parse::<StoredHash>().is_ok_and(|h| h.verify(&pw)));
            Some(match kept {
                Some(hash) => Plain::Hashed(source_name, hash.clone()),
                None => Plain::Password(source_name, pw),
            })
        } else {
            None
        };
    if let Some(plain) = plain {
        let (source_name, hash) = match plain {
            Plain::Hashed(source_name, hash) => (source_name, hash),
            Plain::Password(source_name, pw) => {
                password::check_new_password(&pw).map_err(|source| AuthError::WeakPassword {
                    source_name: source_name.clone(),
                    source,
                })?;
                let hash =
                    password::hash_password(&pw).map_err(|source| AuthError::WeakPassword {
                        source_name: source_name.clone(),
                        source,
                    })?;
                (source_name, hash)
            }
        };
        store.add(&source_name, default_user, Some(&hash), &[])?;
        store.from_plain.insert(source_name, hash);
    }

    let mut initial = None;
    if store.is_empty() {
        initial = embedded_default(config, &mut store, previous.is_none())?;
    }
    Ok((store, initial))
}

/// A plain password source: the password, or the hash kept from before.
enum Plain {
    Password(String, String),
    Hashed(String, String),
}

/// No user configured: use (or make, on first start) a generated password
/// whose hash lives in `<state_dir>/auth/initial-password.hash`. There is
/// no way to run without a login.
fn embedded_default(
    config: &Config,
    store: &mut UserStore,
    may_create: bool,
) -> Result<Option<InitialPassword>, AuthError> {
    let dir = config.server.state_dir.join("auth");
    let path = dir.join("initial-password.hash");
    let user = config.auth.default_user.clone();
    let source_name = path.display().to_string();
    match std::fs::read_to_string(&path) {
        Ok(hash) => {
            store.add(&source_name, &user, Some(hash.trim()), &[])?;
            Ok(None)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !may_create => {
            Err(AuthError::Invalid {
                source_name,
                message: "no user is configured and there is no first-start password: \
                          configure a user, or restart nbgate to make one"
                    .into(),
            })
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let pw = password::generate_password();
            let hash = password::hash_password(&pw).map_err(|source| AuthError::WeakPassword {
                source_name: source_name.clone(),
                source,
            })?;
            state::ensure_private_dir(&dir).map_err(|source| AuthError::Write {
                path: dir.clone(),
                source,
            })?;
            state::write_atomic(&path, format!("{hash}\n").as_bytes(), 0o600).map_err(
                |source| AuthError::Write {
                    path: path.clone(),
                    source,
                },
            )?;
            store.add(&source_name, &user, Some(&hash), &[])?;
            Ok(Some(InitialPassword {
                user,
                password: pw,
                hash_file: path,
            }))
        }
        Err(source) => Err(AuthError::Read {
            source_name,
            source,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Overrides;

    fn config(dir: &std::path::Path, extra: &str) -> Config {
        let path = dir.join("c.toml");
        let text = format!(
            "[server]\nstate_dir = {:?}\n{extra}",
            dir.join("state").display().to_string()
        );
        std::fs::write(&path, text).expect("write");
        Config::load(Some(&path), &Overrides::default()).expect("config")
    }

    fn fast_hash(pw: &str) -> String {
        password::hash_password_with_iterations(pw, password::MIN_ITERATIONS).expect("hash")
    }

    #[test]
    fn first_start_generates_a_password_and_later_starts_reuse_its_hash() {
        let dir = tempfile::tempdir().expect("tempdir");
        let c = config(dir.path(), "");
        let (store, initial) = load(&c).expect("load");
        let initial = initial.expect("generated on first start");
        assert_eq!(initial.user, "jupyter");
        let hash = store
            .get("jupyter")
            .and_then(User::password_hash)
            .expect("user");
        assert!(hash.verify(&initial.password));
        let stored = std::fs::read_to_string(dir.path().join("state/auth/initial-password.hash"))
            .expect("hash file");
        assert!(
            !stored.contains(&initial.password),
            "only the hash is stored"
        );
        let (again, none) = load(&c).expect("reload");
        assert!(none.is_none(), "the password is shown only once");
        assert!(again
            .get("jupyter")
            .and_then(User::password_hash)
            .expect("user")
            .verify(&initial.password));
        assert!(!format!("{initial:?}").contains(&initial.password));
    }

    #[test]
    fn users_file_lines_name_their_line_on_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("users");
        std::fs::write(
            &file,
            format!(
                "# comment\nalice:{}\nbob:notahash\n",
                fast_hash("alice-pw-1")
            ),
        )
        .expect("write");
        let c = config(
            dir.path(),
            &format!("[auth]\nusers_file = {:?}\n", file.display().to_string()),
        );
        let e = load(&c).err().expect("bad hash");
        let msg = e.to_string();
        assert!(msg.contains("users:3") && msg.contains("bob"), "{msg}");
        assert!(!msg.contains("notahash"), "the hash is not echoed: {msg}");
    }

    // `password_env` (which scrubs the process environment and so must run
    // single-threaded) is tested end to end in tests/login.rs, in its own
    // nbgate process; here the file variant of the same path.
    #[test]
    fn plain_password_from_a_file_is_hashed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("pw");
        std::fs::write(&file, "container-secret-1\n").expect("write");
        let c = config(
            dir.path(),
            &format!("[auth]\npassword_file = {:?}\n", file.display().to_string()),
        );
        let (store, initial) = load(&c).expect("load");
        assert!(initial.is_none());
        assert!(store
            .get("jupyter")
            .and_then(User::password_hash)
            .expect("user")
            .verify("container-secret-1"));
    }

    #[test]
    fn config_users_with_tokens_load_and_duplicates_are_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let extra = format!(
            "[[users]]\nname = \"alice\"\npassword_hash = {:?}\ntokens = [{:?}]\n",
            fast_hash("alice-pw-1"),
            fast_hash("tok-abcdefgh")
        );
        let c = config(dir.path(), &extra);
        let (store, initial) = load(&c).expect("load");
        assert!(initial.is_none());
        assert_eq!(store.token_hashes().len(), 1);
        let mut s = UserStore::default();
        s.add("a", "x", Some(&fast_hash("password1")), &[])
            .expect("add");
        assert!(s.add("b", "x", Some(&fast_hash("password2")), &[]).is_err());
    }

    #[test]
    fn a_reload_keeps_an_unchanged_password_files_hash_and_sees_a_changed_one() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("pw");
        std::fs::write(&file, "container-secret-1\n").expect("write");
        let c = config(
            dir.path(),
            &format!("[auth]\npassword_file = {:?}\n", file.display().to_string()),
        );
        let (first, _) = load(&c).expect("load");
        let again = reload(&c, &first).expect("reload");
        assert!(first.changes(&again).is_empty(), "same file, same hash");
        std::fs::write(&file, "container-secret-2\n").expect("write");
        let changed = reload(&c, &again).expect("reload");
        assert_eq!(first.changes(&changed).password_changed, ["jupyter"]);
        assert!(changed
            .get("jupyter")
            .and_then(User::password_hash)
            .expect("user")
            .verify("container-secret-2"));
    }

    /// Security: a `totp_secret_file` that goes missing or bad is refused at
    /// reload (and start) with the file named; the server never runs with a
    /// user whose every login would fail on it.
    #[test]
    fn an_unusable_totp_secret_file_is_refused_at_load_and_reload() {
        let dir = tempfile::tempdir().expect("tempdir");
        let secret = dir.path().join("alice.totp");
        std::fs::write(&secret, "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP\n").expect("write");
        let c = config(
            dir.path(),
            &format!(
                "[[users]]\nname = \"alice\"\npassword_hash = {:?}\ntotp_secret_file = {:?}\n",
                fast_hash("alice-pw-1"),
                secret.display().to_string()
            ),
        );
        let (store, _) = load(&c).expect("a usable secret file loads");
        std::fs::write(&secret, "not a secret\n").expect("write");
        let err = reload(&c, &store).err().expect("refused").to_string();
        assert!(
            err.contains("alice.totp") && err.contains("base32"),
            "{err}"
        );
        std::fs::remove_file(&secret).expect("remove");
        let err = load(&c).err().expect("refused").to_string();
        assert!(
            err.contains("alice.totp") && err.contains("cannot read"),
            "{err}"
        );
    }

    #[test]
    fn a_reload_names_added_removed_and_changed_users() {
        let dir = tempfile::tempdir().expect("tempdir");
        let user = |name: &str, pw: &str, token: Option<&str>| {
            format!(
                "[[users]]\nname = {name:?}\npassword_hash = {:?}\ntokens = [{}]\n",
                fast_hash(pw),
                token
                    .map(|t| format!("{:?}", fast_hash(t)))
                    .unwrap_or_default()
            )
        };
        let before = config(
            dir.path(),
            &[
                user("ann", "ann-password-1", Some("ann-token-1234")),
                user("bob", "bob-password-1", None),
                user("cid", "cid-password-1", None),
            ]
            .concat(),
        );
        let (old, _) = load(&before).expect("load");
        let after = config(
            dir.path(),
            &[
                user("ann", "ann-password-1", Some("ann-token-5678")),
                user("cid", "cid-password-2", None),
                user("dee", "dee-password-1", None),
            ]
            .concat(),
        );
        // Hashes are salted: keep ann's password hash text as it was.
        let mut after = after;
        after.users[0].password_hash = before.users[0].password_hash.clone();
        let new = reload(&after, &old).expect("reload");
        let c = old.changes(&new);
        assert_eq!(c.added, ["dee"]);
        assert_eq!(c.removed, ["bob"]);
        assert_eq!(c.password_changed, ["cid"]);
        assert_eq!(c.tokens_changed, ["ann"]);
    }

    #[test]
    fn a_reload_never_makes_a_first_start_password() {
        let dir = tempfile::tempdir().expect("tempdir");
        let c = config(dir.path(), "");
        let empty = UserStore::default();
        let e = reload(&c, &empty).err().expect("no user source");
        assert!(e.to_string().contains("restart nbgate"), "{e}");
        assert!(!dir.path().join("state/auth/initial-password.hash").exists());
    }

    #[test]
    fn a_reload_keeps_the_hash_of_a_password_read_from_the_environment_at_start() {
        let dir = tempfile::tempdir().expect("tempdir");
        let c = config(
            dir.path(),
            "[auth]\npassword_env = \"NBGATE_TEST_UNSET_VAR\"\n",
        );
        let mut start = UserStore::default();
        let hash = fast_hash("from-the-env-1");
        let source = "environment variable NBGATE_TEST_UNSET_VAR";
        start.add(source, "jupyter", Some(&hash), &[]).expect("add");
        start.from_plain.insert(source.to_owned(), hash);
        let again = reload(&c, &start).expect("reload");
        assert!(start.changes(&again).is_empty());
        // Without a hash from start (the variable was not configured then): a clear refusal.
        let e = reload(&c, &UserStore::default()).err().expect("refused");
        assert!(e.to_string().contains("read at start only"), "{e}");
    }
}
