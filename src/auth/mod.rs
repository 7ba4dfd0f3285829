//! Authentication: who may pass the gate.
//!
//! Owns password and token verification (off the async executor, with a
//! cap on verifications in flight), login sessions (encrypted cookies),
//! CSRF tokens for nbgate's forms and the `next=` sanitizer. It returns
//! decisions; the router (`proxy`) turns them into responses.
//!
//! Submodules: `password` (hash formats), `prompt` (reading a new password
//! from a terminal), `users` (where users come from), `session` (cookies,
//! lifetime, revocation), `active` (the in-memory list of each user's
//! active sessions, for the sessions page), `user_agent` (a browser
//! summary for that list), `csrf`, `next_path`, `oidc` (single sign-on
//! with OpenID Connect providers), `passkey` (WebAuthn ceremonies and the
//! per-user passkey files). The TOTP second factor: `totp` (codes and
//! recovery codes), `second_factor` (each user's state file and who must
//! pass it), `pending` (the sealed login between password and code).
//! `sealed`: the one AEAD sealer of values kept in cookies (the pending
//! login, the enrolment offer, single sign-on's flow).

pub mod active;
pub mod csrf;
pub mod next_path;
pub mod oidc;
// passkeys (issue 22 §2)
pub mod passkey;
pub mod password;
pub mod pending;
pub mod prompt;
pub mod sealed;
pub mod second_factor;
pub mod session;
pub mod totp;
pub mod user_agent;
pub mod users;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;

use self::active::{ActiveSession, ActiveSessions, Entry, Sighting};
use self::password::StoredHash;
use self::session::{Claims, Lifetime, Revocations, SessionKeys, Verdict};
use self::users::{User, UserStore};
use crate::config::Config;

pub use self::users::{AuthError, InitialPassword, UserChanges};

/// The outcome of a password or token check.
#[derive(Debug, PartialEq, Eq)]
pub enum Check<T = String> {
    /// Verified: the user's name (a password), or `TokenUser` (a token).
    Valid(T),
    /// Wrong credentials. `unknown_user` is for the audit log only: the
    /// client sees the same answer either way.
    Invalid { unknown_user: bool },
    /// Too many verifications in flight: refused before any hashing.
    Busy,
}

/// Whose API token a request carried, and which of theirs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenUser {
    pub user: String,
    /// `users::token_id`: names the token, reveals nothing of it.
    pub id: Arc<str>,
}

/// How a request proved who it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    Cookie,
    Token,
}

/// A successfully authenticated request.
#[derive(Debug, Clone)]
pub struct Identity {
    pub via: Via,
    principal: Principal,
    /// A refreshed `Set-Cookie` to send (sliding idle timeout).
    pub refresh_cookie: Option<String>,
}

#[derive(Debug, Clone)]
enum Principal {
    /// The claims of the session cookie, shared with the connection's
    /// cache (no copy per request).
    Session(Arc<Claims>),
    /// The user an API token belongs to, and which token.
    Token(TokenUser),
}

impl Identity {
    pub fn session(claims: Arc<Claims>, refresh_cookie: Option<String>) -> Self {
        Identity {
            via: Via::Cookie,
            principal: Principal::Session(claims),
            refresh_cookie,
        }
    }

    pub fn token(token: TokenUser) -> Self {
        Identity {
            via: Via::Token,
            principal: Principal::Token(token),
            refresh_cookie: None,
        }
    }

    pub fn user(&self) -> &str {
        match &self.principal {
            Principal::Session(c) => &c.u,
            Principal::Token(t) => &t.user,
        }
    }

    /// How the request authenticated, for logs: `session` or `token`.
    pub fn auth_kind(&self) -> &'static str {
        match self.via {
            Via::Cookie => "session",
            Via::Token => "token",
        }
    }

    /// Which session or token, for logs: `session::short_id` of the
    /// session id, or the token's id. Never the secret itself.
    pub fn credential_id(&self) -> &str {
        match &self.principal {
            Principal::Session(c) => session::short_id(&c.sid),
            Principal::Token(t) => &t.id,
        }
    }

    /// Session id (cookie logins only): tunnels are tagged with it so
    /// logout can close them.
    pub fn session_id(&self) -> Option<&str> {
        match &self.principal {
            Principal::Session(c) => Some(&c.sid),
            Principal::Token(_) => None,
        }
    }
}

/// Who made a request, as its access line tells: an authenticated
/// identity, or the user name a refused login tried.
#[derive(Debug, Clone)]
pub enum Who {
    Known(Identity),
    /// The name typed into a login form that was refused (or not yet
    /// checked); shown as `user_tried`, never as `user`.
    Tried(String),
}

impl Who {
    /// The authenticated user.
    pub fn user(&self) -> Option<&str> {
        match self {
            Who::Known(id) => Some(id.user()),
            Who::Tried(_) => None,
        }
    }

    /// `session` or `token` (authenticated requests only).
    pub fn auth_kind(&self) -> Option<&'static str> {
        match self {
            Who::Known(id) => Some(id.auth_kind()),
            Who::Tried(_) => None,
        }
    }

    /// The session or token id (authenticated requests only).
    pub fn credential_id(&self) -> Option<&str> {
        match self {
            Who::Known(id) => Some(id.credential_id()),
            Who::Tried(_) => None,
        }
    }

    /// The name a refused login tried.
    pub fn tried(&self) -> Option<&str> {
        match self {
            Who::Known(_) => None,
            Who::Tried(name) => Some(name),
        }
    }
}

/// Verified API tokens are remembered by their SHA-256 so that a client
/// making many requests pays PBKDF2 once, not per request.
const TOKEN_CACHE_TTL: Duration = Duration::from_secs(300);
const TOKEN_CACHE_MAX: usize = 1024;

pub struct Authenticator {
    users: UserStore,
    /// Shared with the authenticator a reload makes: the same keys open
    /// the same cookies, and logouts recorded before it stay recorded.
    keys: Arc<SessionKeys>,
    revocations: Arc<Revocations>,
    /// Shared with the authenticator a reload makes, like `revocations`.
    active: Arc<ActiveSessions>,
    life: Lifetime,
    /// Caps password/token verifications in flight (each is ~0.1 s of a
    /// core): a guessing flood cannot take every core from proxying.
    verify_slots: Arc<Semaphore>,
    /// The number `verify_slots` was made with.
    verify_slots_max: usize,
    /// std Mutex: short critical sections, never held across `.await`.
    token_cache: Mutex<HashMap<[u8; 32], (TokenUser, Instant)>>,
    // oidc: the session tags (`oidc::session_tag`) of the configured
    // providers: a session of a user nbgate has no password for is valid
    // while its tag is one of these.
    sso_tags: Vec<String>,
}

/// The last session cookie value one client connection carried and what
/// it decrypted to: browsers send the same cookie on every request of a
/// keep-alive or HTTP/2 connection, and decrypting it (AES-GCM, base64,
/// JSON) was the largest cost of a logged-in request that nbgate adds.
/// It also holds the session's entry in the active-sessions registry, so
/// that keeping "last seen" current costs a request one atomic load.
#[derive(Default)]
pub struct SessionCache {
    last: Mutex<Option<CachedSession>>,
}

struct CachedSession {
    value: Box<str>,
    claims: Arc<Claims>,
    /// Set by the first request that found the session valid.
    entry: Option<Arc<Entry>>,
}

impl Authenticator {
    /// Loads users, session keys and revocations from the configuration and
    /// state directory. Returns the generated first-start password, if one
    /// was made, for the caller to show once.
    ///
    /// # Errors
    /// An unreadable source, an invalid hash, an unwritable state directory.
    pub fn try_new(config: &Config) -> Result<(Self, Option<InitialPassword>), AuthError> {
        let state_dir = &config.server.state_dir;
        // The session key before the users: on a first start without a
        // configured user, `users::load` stores the hash of a password the
        // caller shows only once this returns. Were the key written after
        // it and failed (a full disk), the hash would stay and later starts
        // would reuse a password nobody was shown (tests/state_faults.rs).
        let keys = SessionKeys::load_or_create(state_dir)?;
        let (users, initial) = users::load(config)?;
        let revocations = Revocations::load(state_dir);
        let auth = Authenticator {
            users,
            keys: Arc::new(keys),
            revocations: Arc::new(revocations),
            active: Arc::new(ActiveSessions::default()),
            life: Lifetime {
                idle: config.auth.idle_timeout,
                max: config.auth.max_lifetime,
            },
            verify_slots: Arc::new(Semaphore::new(config.auth.max_concurrent_verifications)),
            verify_slots_max: config.auth.max_concurrent_verifications,
            token_cache: Mutex::new(HashMap::new()),
            sso_tags: oidc::session_tags(&config.auth),
        };
        Ok((auth, initial))
    }

    /// For tests and benches: given users, in-memory keys and state.
    pub fn for_tests(users: UserStore, life: Lifetime) -> Self {
        Authenticator {
            users,
            keys: Arc::new(SessionKeys::ephemeral()),
            revocations: Arc::new(Revocations::in_memory()),
            active: Arc::new(ActiveSessions::default()),
            life,
            verify_slots: Arc::new(Semaphore::new(2)),
            verify_slots_max: 2,
            token_cache: Mutex::new(HashMap::new()),
            sso_tags: Vec::new(),
        }
    }

    pub fn users(&self) -> &UserStore {
        &self.users
    }

    /// The authenticator for a reloaded configuration: users read again
    /// (`users::reload`), the new session lifetime and verification cap,
    /// the same session keys and revocations. Sessions of a removed user,
    /// or one whose password changed, stop being valid through the
    /// fingerprint check every request makes; remembered token checks of
    /// users whose tokens changed are forgotten.
    ///
    /// Hashes a changed password file: call it off the async workers.
    ///
    /// # Errors
    /// What `users::reload` finds wrong; nothing is changed then.
    pub fn reloaded(&self, config: &Config) -> Result<(Authenticator, UserChanges), AuthError> {
        let users = users::reload(config, &self.users)?;
        let changes = self.users.changes(&users);
        // Their cookies fail the fingerprint check from now on: no longer
        // active sessions.
        for user in changes.removed.iter().chain(&changes.password_changed) {
            self.active.forget_others(user, None);
        }
        let revoked: Vec<&str> = changes.revoked().collect();
        let token_cache = self
            .token_cache
            .lock()
            .expect("token cache lock never poisoned")
            .iter()
            .filter(|(_, (t, _))| !revoked.contains(&t.user.as_str()))
            .map(|(k, v)| (*k, v.clone()))
            .collect();
        let slots = config.auth.max_concurrent_verifications;
        let verify_slots = if slots == self.verify_slots_max {
            Arc::clone(&self.verify_slots)
        } else {
            Arc::new(Semaphore::new(slots))
        };
        let auth = Authenticator {
            users,
            keys: Arc::clone(&self.keys),
            revocations: Arc::clone(&self.revocations),
            active: Arc::clone(&self.active),
            life: Lifetime {
                idle: config.auth.idle_timeout,
                max: config.auth.max_lifetime,
            },
            verify_slots,
            verify_slots_max: slots,
            token_cache: Mutex::new(token_cache),
            sso_tags: oidc::session_tags(&config.auth),
        };
        Ok((auth, changes))
    }

    /// Verifies a password on the blocking pool. An unknown user is
    /// verified against a dummy hash so that it costs the same time.
    pub async fn check_password(&self, user: &str, password: &str) -> Check {
        let Ok(permit) = Arc::clone(&self.verify_slots).try_acquire_owned() else {
            return Check::Busy;
        };
        let found = self.users.get(user).and_then(User::password_hash);
        let unknown_user = found.is_none();
        // An unknown name is checked against a real user's hash (its result
        // is ignored below), so it costs what a wrong password costs.
        let hash: Arc<StoredHash> = found
            .or_else(|| self.users.timing_reference())
            .unwrap_or_else(|| Arc::new(password::dummy_hash().clone()));
        let pw = password.to_owned();
        let ok = verify_in_background(move || {
            let _permit = permit;
            hash.verify(&pw)
        })
        .await
        .unwrap_or(false);
        if ok && !unknown_user {
            if self.users.get(user).is_some_and(User::is_legacy) {
                tracing::warn!(
                    target: "nbgate::audit",
                    user,
                    "password hash uses a legacy Jupyter format: re-hash with `nbgate hash-password`"
                );
            }
            Check::Valid(user.to_owned())
        } else {
            Check::Invalid { unknown_user }
        }
    }

    /// The user of a token verified recently (no hashing), if any.
    pub fn recently_verified_token(&self, token: &str) -> Option<TokenUser> {
        self.cached_token(&sha256(token.as_bytes()))
    }

    /// Verifies an API token against every user's token hashes.
    pub async fn check_token(&self, token: &str) -> Check<TokenUser> {
        let digest = sha256(token.as_bytes());
        if let Some(user) = self.cached_token(&digest) {
            return Check::Valid(user);
        }
        let candidates = self.users.token_hashes();
        if candidates.is_empty() {
            return Check::Invalid { unknown_user: true };
        }
        let Ok(permit) = Arc::clone(&self.verify_slots).try_acquire_owned() else {
            return Check::Busy;
        };
        let tok = token.to_owned();
        let found = verify_in_background(move || {
            let _permit = permit;
            // Every candidate is tried (no early exit), so the time taken
            // does not reveal which user's token came close.
            let mut found = None;
            for (user, id, hash) in candidates {
                if hash.verify(&tok) && found.is_none() {
                    found = Some(TokenUser { user, id });
                }
            }
            found
        })
        .await
        .unwrap_or(None);
        match found {
            Some(found) => {
                self.remember_token(digest, &found);
                Check::Valid(found)
            }
            None => Check::Invalid {
                unknown_user: false,
            },
        }
    }

    fn cached_token(&self, digest: &[u8; 32]) -> Option<TokenUser> {
        let cache = self
            .token_cache
            .lock()
            .expect("token cache lock never poisoned");
        cache
            .get(digest)
            .filter(|(_, at)| at.elapsed() < TOKEN_CACHE_TTL)
            .map(|(u, _)| u.clone())
    }

    fn remember_token(&self, digest: [u8; 32], user: &TokenUser) {
        let mut cache = self
            .token_cache
            .lock()
            .expect("token cache lock never poisoned");
        if cache.len() >= TOKEN_CACHE_MAX {
            cache.retain(|_, (_, at)| at.elapsed() < TOKEN_CACHE_TTL);
            if cache.len() >= TOKEN_CACHE_MAX {
                cache.clear();
            }
        }
        cache.insert(digest, (user.clone(), Instant::now()));
    }

    /// Starts a session for `user`: a fresh session id every time, so a
    /// cookie planted before login is never promoted (session fixation).
    /// The session is listed as active, seen from `seen`.
    pub fn start_session(&self, user: &str, seen: Sighting<'_>) -> (Claims, String) {
        let (_, pw) = self.login_stamp(user);
        self.start_session_with(user, pw, seen)
    }

    // oidc: sessions of single sign-on.
    /// Starts a session for `user`, admitted by the provider whose session
    /// tag is `tag` (`oidc::session_tag`). A user nbgate knows (a password
    /// or token user of the same name) gets that user's ordinary session;
    /// any other carries the tag where a password fingerprint would be, and
    /// stays valid while the provider is configured the same way.
    pub fn start_sso_session(&self, user: &str, tag: &str, seen: Sighting<'_>) -> (Claims, String) {
        if self.users.get(user).is_some() {
            return self.start_session(user, seen);
        }
        self.start_session_with(user, tag.to_owned(), seen)
    }

    fn start_session_with(&self, user: &str, pw: String, seen: Sighting<'_>) -> (Claims, String) {
        let now = session::unix_now();
        let claims = Claims {
            u: user.to_owned(),
            sid: session::new_session_id(),
            iat: now,
            lst: now,
            gen: self.revocations.generation(user),
            pw,
        };
        let cookie = self.keys.seal(&claims, self.life.max);
        self.active.observe(&claims, seen, now, self.life);
        (claims, cookie)
    }

    /// What a session of `user` started now is stamped with: the user's
    /// revocation generation and password fingerprint. A pending second
    /// step keeps them too, so "log out everywhere" or a password change
    /// also ends logins waiting for their second factor.
    pub fn login_stamp(&self, user: &str) -> (u64, String) {
        let pw = self
            .users
            .get(user)
            .map(|u| u.fingerprint().to_owned())
            .unwrap_or_default();
        (self.revocations.generation(user), pw)
    }

    /// Checks a session cookie value.
    pub fn check_session(&self, value: &str) -> Option<Verdict> {
        let claims = self.keys.open(value)?;
        Some(self.check_claims(Arc::new(claims)))
    }

    /// Checks a session cookie value, skipping its decryption when it is
    /// the value this connection's last request carried. Only the pure part
    /// is remembered — the claims a value decrypts to under this process's
    /// keys, which never change while it runs — and every check that can
    /// change (expiry, logout, logout everywhere, password change) runs on
    /// every request. A different value, tampered or not, is decrypted.
    ///
    /// A valid session is kept in the active-sessions registry: `seen`
    /// (called only on the connection's first valid request, so the
    /// request path reads no `User-Agent` otherwise) says from where.
    pub fn check_session_cached<'a>(
        &self,
        value: &str,
        cache: &SessionCache,
        seen: impl FnOnce() -> Sighting<'a>,
    ) -> Option<Verdict> {
        let now = session::unix_now();
        // The connection's own lock: other connections never wait on it.
        let mut last = cache.last.lock().unwrap_or_else(|e| e.into_inner());
        let cached = match &mut *last {
            Some(c) if *c.value == *value => c,
            slot => slot.insert(CachedSession {
                value: value.into(),
                claims: Arc::new(self.keys.open(value)?),
                entry: None,
            }),
        };
        let verdict = self.check_claims_at(Arc::clone(&cached.claims), now);
        if let Verdict::Valid { .. } = verdict {
            match &cached.entry {
                Some(entry) => self.active.touch(entry, now),
                None => {
                    let entry = self.active.observe(&cached.claims, seen(), now, self.life);
                    cached.entry = Some(entry);
                }
            }
        }
        Some(verdict)
    }

    fn check_claims(&self, claims: Arc<Claims>) -> Verdict {
        self.check_claims_at(claims, session::unix_now())
    }

    fn check_claims_at(&self, claims: Arc<Claims>, now: u64) -> Verdict {
        let fp = match self.users.get(&claims.u) {
            Some(u) => Some(u.fingerprint()),
            // oidc: an SSO session of a user without a password.
            None => self
                .sso_tags
                .iter()
                .find(|t| **t == claims.pw)
                .map(String::as_str),
        };
        session::check(claims, now, self.life, &self.revocations, fp)
    }

    /// A refreshed cookie for an active session (sliding idle timeout).
    pub fn refresh(&self, mut claims: Claims) -> String {
        claims.lst = session::unix_now();
        let remaining = claims
            .iat
            .saturating_add(self.life.max.as_secs())
            .saturating_sub(claims.lst);
        self.keys.seal(&claims, Duration::from_secs(remaining))
    }

    /// Ends one session (logout).
    pub fn end_session(&self, claims: &Claims) {
        self.revoke_session(&claims.u, &claims.sid, claims.iat);
    }

    /// Revokes one session by id (until its absolute expiry, after which
    /// the cookie is refused anyway), then drops it from the active list.
    fn revoke_session(&self, user: &str, sid: &str, iat: u64) {
        let now = session::unix_now();
        self.revocations
            .revoke_session(sid, iat.saturating_add(self.life.max.as_secs()), now);
        self.active.forget(user, sid);
    }

    /// Ends every session of a user (logout everywhere).
    pub fn end_all_sessions(&self, user: &str) {
        self.revocations.revoke_user(user);
        self.active.forget_others(user, None);
    }

    /// Notes a valid session as seen now from `seen` (the sessions page,
    /// which the request path's check does not pass through).
    pub fn seen(&self, claims: &Claims, seen: Sighting<'_>) {
        self.active
            .observe(claims, seen, session::unix_now(), self.life);
    }

    /// The active sessions of the user `current` belongs to, most recently
    /// seen first. Never another user's: the registry is asked for this
    /// user's list only.
    pub fn sessions_of(&self, current: &Claims) -> Vec<ActiveSession> {
        self.active
            .list(&current.u, session::unix_now(), self.life, |sid| {
                self.revocations.is_revoked(sid)
            })
    }

    /// Ends the session of `current`'s user whose short id is `handle`
    /// (`session::short_id`); returns its id. `None` (nothing ended): no
    /// such session of this user, or `handle` names `current` itself
    /// (that is what logout is for).
    pub fn end_other_session(&self, current: &Claims, handle: &str) -> Option<String> {
        let target = self.active.find(&current.u, handle)?;
        if target.sid == current.sid {
            return None;
        }
        self.revoke_session(&current.u, &target.sid, target.started);
        Some(target.sid)
    }

    /// Ends every session of `current`'s user except `current`; returns the
    /// ids of the listed sessions that ended, and a new cookie for
    /// `current` (the same session id and issue time).
    ///
    /// The user's generation is bumped (as for logout everywhere), which
    /// ends every cookie of the user, also those the active list does not
    /// hold (evicted from a full list, or issued before a restart and not
    /// used since); the current session carries on with a cookie of the
    /// new generation. A request of the current session in flight with the
    /// old cookie is refused once this returns; the browser has the new
    /// cookie from this answer on.
    pub fn end_other_sessions(&self, current: &Claims) -> (Vec<String>, String) {
        self.revocations.revoke_user(&current.u);
        let ended = self.active.forget_others(&current.u, Some(&current.sid));
        let mut renewed = current.clone();
        renewed.gen = self.revocations.generation(&current.u);
        (ended, self.refresh(renewed))
    }

    /// Key for CSRF tokens.
    pub fn csrf_key(&self) -> &[u8] {
        self.keys.signing_key()
    }
}

/// Runs a password or token verification (~0.1-0.3 s of one core) on its
/// own thread at the lowest CPU priority (`SCHED_IDLE`), and waits for it.
///
/// On the blocking pool at normal priority, a flood of wrong-password
/// logins keeps `max_concurrent_verifications` cores busy at the same
/// priority as the proxy's workers: on a 2-core machine a logged-in user's
/// p99 went from 3.5 ms to 38 ms (benches/REPORT.md, measure 7). At the lowest
/// priority the scheduler gives hashing only the CPU the proxy leaves idle, so
/// guessing cannot slow down the people already logged in; logins still
/// complete whenever the proxy is not saturated. A thread per verification
/// (at most `max_concurrent_verifications` at once) costs microseconds
/// against the hash's tenths of a second, and leaves no thread behind at a
/// lowered priority for other blocking work.
async fn verify_in_background<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Option<T> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let spawned = std::thread::Builder::new()
        .name("nbgate-verify".into())
        .spawn(move || {
            lower_own_priority();
            let _ = tx.send(f());
        });
    match spawned {
        Ok(_) => rx.await.ok(),
        Err(e) => {
            tracing::error!(error = %e, "cannot start a verification thread");
            None
        }
    }
}

/// Puts the calling thread in Linux's `SCHED_IDLE` class, falling back to
/// nice 19. Lowering one's own priority needs no privilege; failure only
/// means hashing runs at normal priority.
///
/// Why `SCHED_IDLE` and not only nice 19: a nice-19 thread still runs out
/// its time slice when a proxy worker wakes up, and during a login flood
/// (hashing on every core) that put the logged-in user's p99 at 3.3x its
/// quiet value (benches measure 7). A worker waking up preempts a
/// `SCHED_IDLE` thread at once; hashing still progresses (the class has a
/// tiny weight, it is not starved), so logins complete under load.
fn lower_own_priority() {
    // SAFETY: gettid, sched_setscheduler and setpriority take plain
    // integers and a pointer to a local; on Linux pid 0 / a thread id apply
    // to this thread only.
    unsafe {
        // Zeroed, not a literal: musl's sched_param has more fields than
        // glibc's. The raw system call, not libc's wrapper: musl's
        // sched_setscheduler always fails with ENOSYS.
        let param: libc::sched_param = std::mem::zeroed();
        if libc::syscall(
            libc::SYS_sched_setscheduler,
            0,
            libc::SCHED_IDLE,
            &param as *const libc::sched_param,
        ) != 0
        {
            let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
            libc::setpriority(libc::PRIO_PROCESS, tid, 19);
        }
    }
}

fn sha256(data: &[u8]) -> [u8; 32] {
    let d = ring::digest::digest(&ring::digest::SHA256, data);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alice() -> Authenticator {
        let hash = password::hash_password_with_iterations("password-1", password::MIN_ITERATIONS)
            .expect("hash");
        let mut users = UserStore::default();
        users.add("test", "alice", Some(&hash), &[]).expect("user");
        Authenticator::for_tests(
            users,
            Lifetime {
                idle: Duration::from_secs(3600),
                max: Duration::from_secs(86400),
            },
        )
    }

    fn value_of(set_cookie: &str) -> String {
        let (_, rest) = set_cookie.split_once('=').expect("name=value");
        rest.split(';').next().expect("value").to_owned()
    }

    fn here() -> Sighting<'static> {
        Sighting {
            client: std::net::IpAddr::from([127, 0, 0, 1]),
            user_agent: Some("Mozilla/5.0 (X11; Linux x86_64) Chrome/131.0 Safari/537.36"),
        }
    }

    fn is_valid(v: Option<Verdict>) -> bool {
        matches!(v, Some(Verdict::Valid { .. }))
    }

    #[test]
    fn a_cached_session_cookie_is_still_checked_for_logout() {
        let auth = alice();
        let cache = SessionCache::default();
        let (claims, set) = auth.start_session("alice", here());
        let value = value_of(&set);
        assert!(is_valid(auth.check_session_cached(&value, &cache, here)));
        // Served from the cache now; a logout must still end it.
        assert!(is_valid(auth.check_session_cached(&value, &cache, here)));
        auth.end_session(&claims);
        assert_eq!(
            auth.check_session_cached(&value, &cache, here),
            Some(Verdict::Revoked)
        );
    }

    #[test]
    fn a_cached_session_cookie_is_still_checked_for_logout_everywhere() {
        let auth = alice();
        let cache = SessionCache::default();
        let value = value_of(&auth.start_session("alice", here()).1);
        assert!(is_valid(auth.check_session_cached(&value, &cache, here)));
        auth.end_all_sessions("alice");
        assert_eq!(
            auth.check_session_cached(&value, &cache, here),
            Some(Verdict::Revoked)
        );
    }

    #[test]
    fn a_tampered_value_is_not_taken_from_the_cache() {
        let auth = alice();
        let cache = SessionCache::default();
        let value = value_of(&auth.start_session("alice", here()).1);
        assert!(is_valid(auth.check_session_cached(&value, &cache, here)));
        let mut tampered = value.clone().into_bytes();
        let last = tampered.len() - 1;
        tampered[last] = if tampered[last] == b'A' { b'B' } else { b'A' };
        let tampered = String::from_utf8(tampered).expect("ascii");
        assert_eq!(auth.check_session_cached(&tampered, &cache, here), None);
        // A value that only extends the cached one is no match either.
        assert_eq!(
            auth.check_session_cached(&format!("{value}x"), &cache, here),
            None
        );
        // The genuine value still works (decrypted again after the misses).
        assert!(is_valid(auth.check_session_cached(&value, &cache, here)));
    }

    fn alice_and_bob() -> Authenticator {
        let hash = password::hash_password_with_iterations("password-1", password::MIN_ITERATIONS)
            .expect("hash");
        let mut users = UserStore::default();
        users.add("test", "alice", Some(&hash), &[]).expect("user");
        users.add("test", "bob", Some(&hash), &[]).expect("user");
        Authenticator::for_tests(
            users,
            Lifetime {
                idle: Duration::from_secs(3600),
                max: Duration::from_secs(86400),
            },
        )
    }

    fn listed(auth: &Authenticator, c: &Claims) -> Vec<String> {
        let mut sids: Vec<String> = auth.sessions_of(c).into_iter().map(|s| s.sid).collect();
        sids.sort();
        sids
    }

    fn sorted(mut v: Vec<String>) -> Vec<String> {
        v.sort();
        v
    }

    #[test]
    fn logins_are_listed_per_user_and_logout_removes_them() {
        let auth = alice_and_bob();
        let (a1, _) = auth.start_session("alice", here());
        let (a2, _) = auth.start_session("alice", here());
        let (b1, _) = auth.start_session("bob", here());
        assert_eq!(
            listed(&auth, &a1),
            sorted(vec![a1.sid.clone(), a2.sid.clone()])
        );
        assert_eq!(listed(&auth, &b1), [b1.sid.as_str()]);
        auth.end_session(&a2);
        assert_eq!(listed(&auth, &a1), [a1.sid.as_str()]);
        auth.end_all_sessions("alice");
        assert!(listed(&auth, &a1).is_empty());
        assert_eq!(listed(&auth, &b1), [b1.sid.as_str()]);
    }

    #[test]
    fn ending_one_session_refuses_this_one_and_other_users_sessions() {
        let auth = alice_and_bob();
        let (a1, _) = auth.start_session("alice", here());
        let (a2, a2_cookie) = auth.start_session("alice", here());
        let (b1, b1_cookie) = auth.start_session("bob", here());
        assert_eq!(
            auth.end_other_session(&a1, session::short_id(&a1.sid)),
            None
        );
        assert_eq!(
            auth.end_other_session(&a1, session::short_id(&b1.sid)),
            None
        );
        assert_eq!(auth.end_other_session(&a1, &b1.sid), None);
        assert_eq!(auth.end_other_session(&a1, ""), None);
        assert!(is_valid(auth.check_session(&value_of(&b1_cookie))));
        assert_eq!(
            auth.end_other_session(&a1, session::short_id(&a2.sid)),
            Some(a2.sid.clone())
        );
        assert_eq!(
            auth.check_session(&value_of(&a2_cookie)),
            Some(Verdict::Revoked)
        );
        assert_eq!(listed(&auth, &a1), [a1.sid.as_str()]);
    }

    #[test]
    fn ending_all_other_sessions_renews_this_one_and_ends_unlisted_cookies_too() {
        let auth = alice_and_bob();
        let (a1, a1_cookie) = auth.start_session("alice", here());
        let (a2, a2_cookie) = auth.start_session("alice", here());
        // A cookie the list does not hold (issued before a restart, or evicted).
        auth.active.forget("alice", &a2.sid);
        let (_, b1_cookie) = auth.start_session("bob", here());
        let (ended, renewed) = auth.end_other_sessions(&a1);
        assert!(ended.is_empty(), "{ended:?}");
        assert_eq!(
            auth.check_session(&value_of(&a2_cookie)),
            Some(Verdict::Revoked)
        );
        assert_eq!(
            auth.check_session(&value_of(&a1_cookie)),
            Some(Verdict::Revoked),
            "the old cookie of this session is of the old generation"
        );
        match auth.check_session(&value_of(&renewed)) {
            Some(Verdict::Valid { claims, .. }) => {
                assert_eq!((&claims.sid, claims.iat), (&a1.sid, a1.iat));
            }
            other => panic!("renewed cookie: {other:?}"),
        }
        assert!(is_valid(auth.check_session(&value_of(&b1_cookie))));
    }

    #[test]
    fn a_valid_cached_cookie_is_listed_once_with_where_it_was_seen() {
        let auth = alice();
        let cache = SessionCache::default();
        let (claims, set) = auth.start_session("alice", here());
        auth.active.forget("alice", &claims.sid);
        let elsewhere = || Sighting {
            client: std::net::IpAddr::from([127, 0, 0, 2]),
            user_agent: Some("curl/8.5.0"),
        };
        let value = value_of(&set);
        assert!(is_valid(
            auth.check_session_cached(&value, &cache, elsewhere)
        ));
        assert!(is_valid(auth.check_session_cached(&value, &cache, || {
            panic!("a connection's later requests read no User-Agent")
        })));
        let list = auth.sessions_of(&claims);
        assert_eq!(list.len(), 1);
        assert_eq!(list[0].client, std::net::IpAddr::from([127, 0, 0, 2]));
        assert_eq!(list[0].agent.browser_label().as_deref(), Some("curl 8"));
    }

    // oidc: single sign-on sessions.
    #[test]
    fn an_sso_session_lives_while_its_provider_is_configured_the_same_way() {
        let mut auth = alice();
        auth.sso_tags = vec!["oidc:corp:aaaa".into()];
        let (claims, set) = auth.start_sso_session("bob@example.com", "oidc:corp:aaaa", here());
        assert_eq!(claims.pw, "oidc:corp:aaaa");
        assert!(is_valid(auth.check_session(&value_of(&set))));
        // The provider's lists changed at a reload: its tag did too.
        auth.sso_tags = vec!["oidc:corp:bbbb".into()];
        assert_eq!(auth.check_session(&value_of(&set)), Some(Verdict::Revoked));
        // A name nbgate knows gets that user's ordinary session.
        let (claims, set) = auth.start_sso_session("alice", "oidc:corp:bbbb", here());
        assert_ne!(claims.pw, "oidc:corp:bbbb");
        assert!(is_valid(auth.check_session(&value_of(&set))));
        // An SSO session without a tag would be a password user's without a password.
        let (_, set) = auth.start_session("nobody", here());
        assert_eq!(auth.check_session(&value_of(&set)), Some(Verdict::Revoked));
    }

    #[tokio::test]
    async fn verification_runs_on_a_thread_in_the_idle_scheduling_class() {
        // SAFETY: sched_getscheduler(0) reads the calling thread's policy.
        let policy = verify_in_background(|| unsafe { libc::sched_getscheduler(0) })
            .await
            .expect("the verification thread ran");
        assert_eq!(policy, libc::SCHED_IDLE);
        // The caller's thread is untouched.
        // SAFETY: as above.
        assert_eq!(unsafe { libc::sched_getscheduler(0) }, libc::SCHED_OTHER);
    }
}
