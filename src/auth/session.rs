//! Login sessions: the encrypted session cookie, its keys, its lifetime
//! rules and revocation.
//!
//! The cookie is the whole session (no server-side session table): its
//! content is encrypted and authenticated with AES-256-GCM by the `cookie`
//! crate's private jar, under a key generated on first start and kept in the
//! state directory (mode 0600). What the server does keep is small: a
//! per-user generation counter (logout everywhere) and the ids of sessions
//! logged out before their natural expiry. Which sessions are active, for
//! the sessions page, is `active`'s memory of what requests showed.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::RwLock;
use std::time::Duration;

use base64::Engine;
use cookie::{Cookie, CookieJar, Key, SameSite};
use serde::{Deserialize, Serialize};

use crate::state::{self, StateFile};

/// The session cookie's name. `__Host-` makes browsers refuse it unless it
/// is `Secure`, has `Path=/` and no `Domain`: a sibling subdomain cannot
/// plant or overwrite it (cookie tossing).
pub const SESSION_COOKIE: &str = "__Host-nbgate-session";

/// Errors reading or writing session state.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("{path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: session key file is corrupt (expected 64 bytes)")]
    BadKey { path: PathBuf },
}

/// What the cookie carries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// User name.
    pub u: String,
    /// Session id: random, identifies this login for logout and tunnels.
    pub sid: String,
    /// Issued at (unix seconds): bounds the absolute lifetime.
    pub iat: u64,
    /// Last seen (unix seconds): the sliding idle timeout counts from here.
    pub lst: u64,
    /// The user's generation when issued; logout-everywhere bumps it.
    pub gen: u64,
    /// Fingerprint of the user's password hash when issued: a password
    /// change invalidates every older cookie without any stored state.
    pub pw: String,
}

/// The current key and, after a rotation, the previous one (still accepted
/// for verification so that a rotation logs nobody out).
pub struct SessionKeys {
    current: Key,
    previous: Option<Key>,
}

impl SessionKeys {
    fn paths(state_dir: &Path) -> (PathBuf, PathBuf) {
        let dir = state_dir.join("auth");
        (dir.join("session.key"), dir.join("session.key.previous"))
    }

    /// Loads the keys, generating the current one on first start.
    ///
    /// # Errors
    /// The state directory cannot be written or a key file is corrupt.
    pub fn load_or_create(state_dir: &Path) -> Result<Self, SessionError> {
        let (cur, prev) = Self::paths(state_dir);
        let dir = cur.parent().expect("paths() joins a file name");
        state::ensure_private_dir(dir).map_err(|source| SessionError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        let current = match read_key(&cur)? {
            Some(k) => k,
            None => {
                let k = Key::generate();
                write_key(&cur, &k)?;
                k
            }
        };
        let previous = read_key(&prev)?;
        Ok(SessionKeys { current, previous })
    }

    /// Makes a new current key and keeps the old one as previous.
    ///
    /// # Errors
    /// The key files cannot be written.
    pub fn rotate(state_dir: &Path) -> Result<(), SessionError> {
        let keys = Self::load_or_create(state_dir)?;
        let (cur, prev) = Self::paths(state_dir);
        let (old, new) = (encode_key(&keys.current), encode_key(&Key::generate()));
        // Both staged before either is replaced: a full or read-only state
        // directory leaves both keys as they were (written one by one, the
        // previous key could be replaced and the rotation still fail).
        state::write_atomic_all(&[
            StateFile {
                path: &prev,
                bytes: old.as_bytes(),
                mode: 0o600,
            },
            StateFile {
                path: &cur,
                bytes: new.as_bytes(),
                mode: 0o600,
            },
        ])
        .map_err(|e| SessionError::Io {
            path: e.path,
            source: e.source,
        })
    }

    /// Keys for tests and benches, not persisted.
    pub fn ephemeral() -> Self {
        SessionKeys {
            current: Key::generate(),
            previous: None,
        }
    }

    /// Bytes to derive other MACs (CSRF tokens) from.
    pub fn signing_key(&self) -> &[u8] {
        self.current.signing()
    }

    /// Encrypts claims into a `Set-Cookie` value.
    pub fn seal(&self, claims: &Claims, max_age: Duration) -> String {
        let json = serde_json::to_string(claims).expect("claims always serialize");
        let mut jar = CookieJar::new();
        jar.private_mut(&self.current)
            .add(Cookie::new(SESSION_COOKIE, json));
        let sealed = jar
            .get(SESSION_COOKIE)
            .expect("cookie was just added")
            .value()
            .to_owned();
        let c = Cookie::build((SESSION_COOKIE, sealed))
            .path("/")
            .secure(true)
            .http_only(true)
            .same_site(SameSite::Lax)
            .max_age(cookie::time::Duration::seconds(
                i64::try_from(max_age.as_secs()).unwrap_or(i64::MAX),
            ))
            .build();
        c.to_string()
    }

    /// Decrypts a cookie value; `None` when it was not made with our key
    /// (tampered, forged, or from before a key loss).
    pub fn open(&self, value: &str) -> Option<Claims> {
        for key in std::iter::once(&self.current).chain(self.previous.as_ref()) {
            let jar = CookieJar::new();
            let c = Cookie::new(SESSION_COOKIE, value.to_owned());
            if let Some(plain) = jar.private(key).decrypt(c) {
                return serde_json::from_str(plain.value()).ok();
            }
        }
        None
    }
}

/// A `Set-Cookie` value that deletes the session cookie.
pub fn clear_cookie() -> String {
    format!("{SESSION_COOKIE}=; Path=/; Secure; HttpOnly; SameSite=Lax; Max-Age=0")
}

fn read_key(path: &Path) -> Result<Option<Key>, SessionError> {
    match std::fs::read(path) {
        Ok(bytes) => {
            let raw = base64::engine::general_purpose::STANDARD
                .decode(bytes.trim_ascii())
                .map_err(|_| SessionError::BadKey {
                    path: path.to_path_buf(),
                })?;
            if raw.len() != 64 {
                return Err(SessionError::BadKey {
                    path: path.to_path_buf(),
                });
            }
            Ok(Some(Key::from(&raw)))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(SessionError::Io {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// A key as stored: base64 of its 64 bytes.
fn encode_key(key: &Key) -> String {
    base64::engine::general_purpose::STANDARD.encode(key.master())
}

fn write_key(path: &Path, key: &Key) -> Result<(), SessionError> {
    state::write_atomic(path, encode_key(key).as_bytes(), 0o600).map_err(|source| {
        SessionError::Io {
            path: path.to_path_buf(),
            source,
        }
    })
}

/// The outcome of checking a session cookie.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Valid. `refresh` asks the caller to send an updated cookie (sliding
    /// idle timeout).
    Valid { claims: Arc<Claims>, refresh: bool },
    /// Was valid once; idle too long or past its absolute lifetime.
    Expired,
    /// Logged out, logged out everywhere, or the password changed.
    Revoked,
}

/// Lifetime rules.
#[derive(Debug, Clone, Copy)]
pub struct Lifetime {
    pub idle: Duration,
    pub max: Duration,
}

/// Revocation state: per-user generations and logged-out session ids.
/// Persisted so that a restart does not bring a logged-out session back.
#[derive(Default, Serialize, Deserialize)]
struct RevocationState {
    generations: HashMap<String, u64>,
    /// sid -> unix time after which the cookie would be expired anyway.
    revoked: HashMap<String, u64>,
}

pub struct Revocations {
    path: Option<PathBuf>,
    /// std RwLock: read on every request, written on logout; never held
    /// across `.await`.
    state: RwLock<RevocationState>,
}

impl Revocations {
    /// Loads the revocation file (missing file: nothing revoked).
    pub fn load(state_dir: &Path) -> Self {
        let path = state_dir.join("auth").join("revocations.json");
        let state = std::fs::read(&path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        Revocations {
            path: Some(path),
            state: RwLock::new(state),
        }
    }

    pub fn in_memory() -> Self {
        Revocations {
            path: None,
            state: RwLock::new(RevocationState::default()),
        }
    }

    pub fn generation(&self, user: &str) -> u64 {
        self.read().generations.get(user).copied().unwrap_or(0)
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, RevocationState> {
        self.state
            .read()
            .expect("revocation lock is never poisoned: no panics while held")
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, RevocationState> {
        self.state
            .write()
            .expect("revocation lock is never poisoned: no panics while held")
    }

    /// Revokes one session until `until` (unix seconds).
    pub fn revoke_session(&self, sid: &str, until: u64, now: u64) {
        {
            let mut s = self.write();
            s.revoked.retain(|_, exp| *exp > now);
            s.revoked.insert(sid.to_owned(), until);
        }
        self.persist();
    }

    /// Revokes every session of `user` issued so far.
    pub fn revoke_user(&self, user: &str) {
        {
            let mut s = self.write();
            *s.generations.entry(user.to_owned()).or_insert(0) += 1;
        }
        self.persist();
    }

    /// Whether this one session was logged out or revoked.
    pub fn is_revoked(&self, sid: &str) -> bool {
        self.read().revoked.contains_key(sid)
    }

    fn persist(&self) {
        let Some(path) = &self.path else { return };
        let bytes = serde_json::to_vec(&*self.read()).expect("state always serializes");
        let dir = path.parent().expect("load() joins a file name");
        if let Err(e) =
            state::ensure_private_dir(dir).and_then(|()| state::write_atomic(path, &bytes, 0o600))
        {
            tracing::error!(path = %path.display(), error = %e, "cannot persist session revocations");
        }
    }
}

/// Checks claims against lifetime and revocation. `pw_fingerprint` is the
/// user's current password-hash fingerprint (`None`: user no longer exists).
pub fn check(
    claims: impl Into<Arc<Claims>>,
    now: u64,
    life: Lifetime,
    revocations: &Revocations,
    pw_fingerprint: Option<&str>,
) -> Verdict {
    let claims = claims.into();
    if now >= claims.iat.saturating_add(life.max.as_secs())
        || now >= claims.lst.saturating_add(life.idle.as_secs())
    {
        return Verdict::Expired;
    }
    if pw_fingerprint != Some(claims.pw.as_str())
        || claims.gen != revocations.generation(&claims.u)
        || revocations.is_revoked(&claims.sid)
    {
        return Verdict::Revoked;
    }
    // Refresh about once a minute (or 1% of a long idle time) so an active
    // user is never logged out, without a new cookie per request; short
    // idle timeouts refresh after half of it, or they could never slide.
    let idle = life.idle.as_secs();
    let refresh_after = (idle / 100).max(60).min(idle / 2).max(1);
    let refresh = now.saturating_sub(claims.lst) >= refresh_after;
    Verdict::Valid { claims, refresh }
}

/// A new random session id (128 bits).
pub fn new_session_id() -> String {
    let mut b = [0u8; 16];
    rand::fill(&mut b);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

/// A session id prefix for logs and the sessions page's forms: enough to
/// correlate and to tell a user's sessions apart, useless to replay (the
/// cookie, not the id, is the credential).
pub fn short_id(sid: &str) -> &str {
    sid.get(..8).unwrap_or(sid)
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIFE: Lifetime = Lifetime {
        idle: Duration::from_secs(3600),
        max: Duration::from_secs(86400),
    };

    fn claims(now: u64) -> Claims {
        Claims {
            u: "alice".into(),
            sid: new_session_id(),
            iat: now,
            lst: now,
            gen: 0,
            pw: "fp1".into(),
        }
    }

    fn value_of(set_cookie: &str) -> String {
        Cookie::parse(set_cookie.to_owned())
            .expect("parse")
            .value()
            .to_owned()
    }

    #[test]
    fn sealed_cookie_opens_and_has_host_prefix_attributes() {
        let keys = SessionKeys::ephemeral();
        let c = claims(1000);
        let set = keys.seal(&c, LIFE.max);
        assert!(set.starts_with("__Host-nbgate-session="));
        for attr in ["Secure", "HttpOnly", "SameSite=Lax", "Path=/"] {
            assert!(set.contains(attr), "{set}");
        }
        assert!(!set.contains("alice"), "content is encrypted: {set}");
        assert_eq!(keys.open(&value_of(&set)), Some(c));
    }

    #[test]
    fn tampered_or_foreign_cookie_is_refused() {
        let keys = SessionKeys::ephemeral();
        let v = value_of(&keys.seal(&claims(1000), LIFE.max));
        let mut bytes = v.into_bytes();
        let mid = bytes.len() / 2;
        bytes[mid] = if bytes[mid] == b'A' { b'B' } else { b'A' };
        let tampered = String::from_utf8(bytes).expect("ascii");
        assert_eq!(keys.open(&tampered), None);
        let other = SessionKeys::ephemeral();
        let foreign = value_of(&other.seal(&claims(1000), LIFE.max));
        assert_eq!(keys.open(&foreign), None);
        assert_eq!(keys.open("garbage"), None);
    }

    #[test]
    fn rotated_keys_still_open_cookies_made_with_the_previous_key() {
        let dir = tempfile::tempdir().expect("tempdir");
        let before = SessionKeys::load_or_create(dir.path()).expect("keys");
        let v = value_of(&before.seal(&claims(1000), LIFE.max));
        SessionKeys::rotate(dir.path()).expect("rotate");
        let after = SessionKeys::load_or_create(dir.path()).expect("keys");
        assert!(after.open(&v).is_some());
        SessionKeys::rotate(dir.path()).expect("rotate twice");
        let later = SessionKeys::load_or_create(dir.path()).expect("keys");
        assert!(later.open(&v).is_none(), "two rotations retire a key");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("auth/session.key"))
            .expect("meta")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn idle_and_absolute_expiry_are_enforced() {
        let r = Revocations::in_memory();
        let c = claims(1000);
        assert!(matches!(
            check(c.clone(), 1000 + 3599, LIFE, &r, Some("fp1")),
            Verdict::Valid { refresh: true, .. }
        ));
        assert_eq!(
            check(c.clone(), 1000 + 3600, LIFE, &r, Some("fp1")),
            Verdict::Expired
        );
        let mut active = c.clone();
        active.lst = 1000 + 86000;
        assert!(matches!(
            check(active.clone(), 1000 + 86399, LIFE, &r, Some("fp1")),
            Verdict::Valid { .. }
        ));
        assert_eq!(
            check(active, 1000 + 86400, LIFE, &r, Some("fp1")),
            Verdict::Expired
        );
        assert!(matches!(
            check(c, 1010, LIFE, &r, Some("fp1")),
            Verdict::Valid { refresh: false, .. }
        ));
    }

    #[test]
    fn short_idle_timeout_still_slides_with_activity() {
        let r = Revocations::in_memory();
        let short = Lifetime {
            idle: Duration::from_secs(10),
            max: Duration::from_secs(3600),
        };
        // Refreshed after half the idle time, not after a minute that
        // would already be past the idle timeout.
        assert!(matches!(
            check(claims(1000), 1004, short, &r, Some("fp1")),
            Verdict::Valid { refresh: false, .. }
        ));
        assert!(matches!(
            check(claims(1000), 1005, short, &r, Some("fp1")),
            Verdict::Valid { refresh: true, .. }
        ));
    }

    #[test]
    fn logout_everywhere_password_change_and_single_logout_revoke() {
        let dir = tempfile::tempdir().expect("tempdir");
        let r = Revocations::load(dir.path());
        let c = claims(1000);
        assert_eq!(
            check(c.clone(), 1001, LIFE, &r, Some("fp2")),
            Verdict::Revoked,
            "password changed"
        );
        assert_eq!(
            check(c.clone(), 1001, LIFE, &r, None),
            Verdict::Revoked,
            "user removed"
        );
        r.revoke_session(&c.sid, 1000 + 86400, 1001);
        assert_eq!(
            check(c.clone(), 1001, LIFE, &r, Some("fp1")),
            Verdict::Revoked
        );
        let other = claims(1000);
        assert!(matches!(
            check(other.clone(), 1001, LIFE, &r, Some("fp1")),
            Verdict::Valid { .. }
        ));
        r.revoke_user("alice");
        assert_eq!(check(other, 1001, LIFE, &r, Some("fp1")), Verdict::Revoked);
        let reloaded = Revocations::load(dir.path());
        assert_eq!(
            reloaded.generation("alice"),
            1,
            "revocations survive a restart"
        );
        assert!(reloaded.is_revoked(&c.sid));
    }
}
