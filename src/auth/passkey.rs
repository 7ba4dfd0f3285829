//! Passkeys (WebAuthn, issue 22 §2): registering a passkey for a logged-in
//! user, logging in with one, the per-user credential files.
//!
//! The ceremonies are webauthn-rs's (signature, challenge, origin, RP id
//! hash, user verification, counter); this module holds what they need
//! around them:
//! - the relying party from `[auth.passkeys]` (`config::PasskeysConfig`);
//! - the pending ceremonies, in memory, short-lived and single use
//!   ([`Ceremonies`]): a challenge is taken out of the table by the first
//!   answer to it, so it cannot be replayed, and expires after
//!   [`CEREMONY_TTL`];
//! - the credentials, one file per user, `state_dir/passkeys/<user>.json`
//!   (0600, atomic writes through `crate::state`), read at each login so a
//!   passkey added or removed takes effect at once, with no reload.
//!
//! Login is username-less: the browser offers the passkeys it holds for
//! the RP id (discoverable credentials), and the assertion's user handle
//! (a random UUID per user, kept in the user's file) names the user. Every
//! login requires user verification (PIN or biometrics on the device), so
//! a passkey login counts as both factors.
//!
//! Decisions only: the lockout, audit lines and responses are the caller's
//! (`proxy::own_pages::passkey`). Must not know about HTTP.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use webauthn_rs::prelude::{
    CreationChallengeResponse, DiscoverableAuthentication, Passkey, PasskeyRegistration,
    PublicKeyCredential, RegisterPublicKeyCredential, RequestChallengeResponse, Url, Uuid,
    Webauthn, WebauthnBuilder, WebauthnError,
};

use crate::config::{valid_user_name, Config, PasskeysConfig};

/// How long a started ceremony may be finished. The browser's own dialog
/// times out at [`AUTHENTICATOR_TIMEOUT`]; a little slack for the round trip.
pub const CEREMONY_TTL: Duration = Duration::from_secs(180);

/// What the browser is told to wait for the user at most.
const AUTHENTICATOR_TIMEOUT: Duration = Duration::from_secs(150);

/// Pending ceremonies kept at most. A flood of starts evicts the oldest
/// (a legitimate user's ceremony lives seconds), memory stays bounded.
const MAX_CEREMONIES: usize = 10_000;

/// Passkeys one user may register: each is a file entry read at every
/// login; a real user has a handful.
pub const MAX_PER_USER: usize = 20;

/// Longest passkey name, in characters.
pub const MAX_NAME_CHARS: usize = 64;

/// Why a passkey request was refused. `reason()` is the audit log's word
/// for it; `proxy::error` decides what the client sees.
#[derive(Debug, thiserror::Error)]
pub enum PasskeyError {
    /// `[auth.passkeys]` is off (no relying party configured).
    #[error("passkeys are not enabled")]
    Off,
    /// The page was reached by a host name the passkeys are not for: the
    /// browser would refuse the ceremony; nbgate says why first.
    #[error("passkeys are for {rp_id:?}, the request came for {host:?}")]
    WrongHost { rp_id: String, host: String },
    /// The JSON the script sent is not what a browser sends.
    #[error("malformed passkey request")]
    BadRequest(#[source] serde_json::Error),
    /// No pending ceremony by that id for this browser: expired, already
    /// answered (a replay), or never started.
    #[error("no such pending passkey ceremony (expired, used or unknown)")]
    Expired,
    /// The browser signed for a page origin that is not allowed.
    #[error("origin not allowed for passkeys")]
    WrongOrigin(#[source] WebauthnError),
    /// No user has this passkey (never registered, removed, or its user
    /// no longer exists).
    #[error("unknown passkey")]
    Unknown,
    /// The assertion or attestation did not verify.
    #[error("passkey verification failed")]
    Rejected(#[source] WebauthnError),
    /// The device did not verify the user (no PIN, no biometrics).
    #[error("the passkey did not verify the user")]
    NotUserVerified,
    #[error("invalid passkey name")]
    BadName,
    #[error("too many passkeys for this user")]
    TooMany,
    /// Remove named no passkey of this user.
    #[error("no such passkey of this user")]
    NotFound,
    #[error(transparent)]
    Storage(#[from] crate::state::WriteError),
    #[error("{}: cannot read passkeys", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: invalid passkeys file", path.display())]
    Corrupt {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    /// webauthn-rs could not make a challenge (no randomness).
    #[error("cannot start a passkey ceremony")]
    Start(#[source] WebauthnError),
}

impl PasskeyError {
    /// The audit log's `reason`.
    pub fn reason(&self) -> &'static str {
        match self {
            PasskeyError::Off => "passkeys_off",
            PasskeyError::WrongHost { .. } => "wrong_host",
            PasskeyError::BadRequest(_) => "bad_request",
            PasskeyError::Expired => "expired_or_replayed",
            PasskeyError::WrongOrigin(_) => "wrong_origin",
            PasskeyError::Unknown => "unknown_passkey",
            PasskeyError::Rejected(WebauthnError::CredentialPossibleCompromise) => {
                "counter_regressed"
            }
            PasskeyError::Rejected(_) => "verification_failed",
            PasskeyError::NotUserVerified => "user_not_verified",
            PasskeyError::BadName => "bad_name",
            PasskeyError::TooMany => "too_many",
            PasskeyError::NotFound => "not_found",
            PasskeyError::Storage(_) | PasskeyError::Read { .. } | PasskeyError::Corrupt { .. } => {
                "storage"
            }
            PasskeyError::Start(_) => "start_failed",
        }
    }

    /// Whether the failure is a wrong secret (a passkey that does not
    /// verify, or is nobody's): counted toward the lockout like a wrong
    /// password. A malformed or expired request is not a guess.
    pub fn counts_as_failure(&self) -> bool {
        matches!(
            self,
            PasskeyError::Unknown | PasskeyError::Rejected(_) | PasskeyError::NotUserVerified
        )
    }

    /// nbgate's own fault (a file it cannot read or write): logged as a warning.
    pub fn is_ours(&self) -> bool {
        matches!(
            self,
            PasskeyError::Storage(_)
                | PasskeyError::Read { .. }
                | PasskeyError::Corrupt { .. }
                | PasskeyError::Start(_)
        )
    }
}

/// Maps webauthn-rs's refusal of a ceremony to ours.
fn refused(e: WebauthnError) -> PasskeyError {
    match e {
        WebauthnError::InvalidRPOrigin | WebauthnError::CredentialCrossOrigin => {
            PasskeyError::WrongOrigin(e)
        }
        WebauthnError::UserNotVerified => PasskeyError::NotUserVerified,
        WebauthnError::CredentialNotFound => PasskeyError::Unknown,
        e => PasskeyError::Rejected(e),
    }
}

/// One registered passkey as stored.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoredPasskey {
    pub name: String,
    /// Unix seconds.
    pub created: u64,
    /// Unix seconds of the last login with it.
    #[serde(default)]
    pub last_used: Option<u64>,
    /// Whether the last login said the passkey is backed up (synced).
    #[serde(default)]
    pub backed_up: Option<bool>,
    /// webauthn-rs's credential: public key, id, counter, flags.
    pub passkey: Passkey,
}

impl StoredPasskey {
    /// The credential id, base64url: how the passkeys page names it.
    pub fn id(&self) -> String {
        b64(self.passkey.cred_id())
    }
}

/// `state_dir/passkeys/<user>.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct UserFile {
    version: u32,
    /// The WebAuthn user handle: random, so it says nothing about the
    /// user name to whoever sees the authenticator's list.
    user_handle: Uuid,
    passkeys: Vec<StoredPasskey>,
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// The per-user credential files.
pub struct Store {
    dir: PathBuf,
    /// Serializes read-modify-write of the files (a login's counter update
    /// racing a removal). std Mutex: held for a file read and write only,
    /// never across `.await` (callers run on the blocking pool).
    lock: Mutex<()>,
}

impl Store {
    pub fn new(state_dir: &Path) -> Store {
        Store {
            dir: state_dir.join("passkeys"),
            lock: Mutex::new(()),
        }
    }

    fn path(&self, user: &str) -> Option<PathBuf> {
        // A valid user name has no `/` and is not `..`-only trouble: it
        // cannot leave the directory. Checked again here because the name
        // decides a file path.
        (valid_user_name(user) && !user.starts_with('.'))
            .then(|| self.dir.join(format!("{user}.json")))
    }

    fn load(&self, user: &str) -> Result<Option<UserFile>, PasskeyError> {
        let Some(path) = self.path(user) else {
            return Ok(None);
        };
        read_file(&path)
    }

    fn save(&self, user: &str, file: &UserFile) -> Result<(), PasskeyError> {
        let path = self.path(user).ok_or(PasskeyError::NotFound)?;
        crate::state::ensure_private_dir(&self.dir).map_err(|source| crate::state::WriteError {
            path: self.dir.clone(),
            source,
        })?;
        let json = serde_json::to_vec_pretty(file).expect("passkey files serialize");
        crate::state::write_atomic(&path, &json, 0o600)
            .map_err(|source| crate::state::WriteError { path, source })?;
        Ok(())
    }

    /// The user whose file holds `handle`, and the file. Unreadable files
    /// are skipped (and named in the log): one broken file must not stop
    /// every other user's passkey login.
    fn find_handle(&self, handle: Uuid) -> Option<(String, UserFile)> {
        let entries = std::fs::read_dir(&self.dir).ok()?;
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(user) = name.to_str().and_then(|n| n.strip_suffix(".json")) else {
                continue;
            };
            if self.path(user).is_none() {
                continue;
            }
            match read_file(&entry.path()) {
                Ok(Some(file)) if file.user_handle == handle => {
                    return Some((user.to_owned(), file))
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "passkeys file skipped"),
            }
        }
        None
    }

    /// A user's passkeys, oldest first.
    pub fn list(&self, user: &str) -> Result<Vec<StoredPasskey>, PasskeyError> {
        Ok(self.load(user)?.map(|f| f.passkeys).unwrap_or_default())
    }

    /// Removes the passkey whose id (base64url) is `id`; returns it.
    pub fn remove(&self, user: &str, id: &str) -> Result<StoredPasskey, PasskeyError> {
        let _held = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        let mut file = self.load(user)?.ok_or(PasskeyError::NotFound)?;
        let at = file
            .passkeys
            .iter()
            .position(|p| p.id() == id)
            .ok_or(PasskeyError::NotFound)?;
        let gone = file.passkeys.remove(at);
        self.save(user, &file)?;
        Ok(gone)
    }
}

fn read_file(path: &Path) -> Result<Option<UserFile>, PasskeyError> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(PasskeyError::Read {
                path: path.to_owned(),
                source,
            })
        }
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|source| PasskeyError::Corrupt {
            path: path.to_owned(),
            source,
        })
}

/// What a pending ceremony waits for.
enum Stage {
    /// A login from the browser holding the login CSRF binding `binding`.
    Login {
        binding: String,
        state: DiscoverableAuthentication,
    },
    /// A registration by `user` in session `sid`.
    Register {
        user: String,
        sid: String,
        name: String,
        handle: Uuid,
        state: PasskeyRegistration,
    },
}

struct Pending {
    stage: Stage,
    started: Instant,
}

/// Started ceremonies waiting for the browser's answer: in memory only
/// (never sent to the client, so a challenge cannot be forged or reused),
/// each taken out by the first answer.
#[derive(Default)]
pub struct Ceremonies {
    /// std Mutex: short critical sections, never held across `.await`.
    map: Mutex<HashMap<String, Pending>>,
}

impl Ceremonies {
    fn insert(&self, stage: Stage, now: Instant) -> String {
        let mut id = [0u8; 18];
        rand::fill(&mut id);
        let id = b64(&id);
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() >= MAX_CEREMONIES {
            map.retain(|_, p| now.duration_since(p.started) < CEREMONY_TTL);
        }
        if map.len() >= MAX_CEREMONIES {
            // Still full of live ones: a flood. The oldest go first.
            let mut ages: Vec<(Instant, String)> =
                map.iter().map(|(k, p)| (p.started, k.clone())).collect();
            ages.sort();
            for (_, k) in ages.into_iter().take(MAX_CEREMONIES / 10) {
                map.remove(&k);
            }
        }
        map.insert(
            id.clone(),
            Pending {
                stage,
                started: now,
            },
        );
        id
    }

    /// Takes the ceremony `id` out (single use), if it has not expired.
    fn take(&self, id: &str, now: Instant) -> Option<Stage> {
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        let p = map.remove(id)?;
        (now.duration_since(p.started) < CEREMONY_TTL).then_some(p.stage)
    }

    /// Pending ceremonies (for tests).
    pub fn len(&self) -> usize {
        self.map.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The relying party in force.
struct Rp {
    webauthn: Webauthn,
    rp_id: String,
    /// Exact origins allowed; empty: `https://<rp_id>` on any port.
    origins: Vec<String>,
}

/// The browser's answer to a login ceremony: what `/passkey/login/finish`
/// parses (the `credential` is exactly what `navigator.credentials.get`
/// returned, its binary fields base64url).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoginFinish {
    pub ceremony: String,
    #[serde(default)]
    pub next: Option<String>,
    pub credential: PublicKeyCredential,
}

/// The browser's answer to a registration ceremony.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegisterFinish {
    pub ceremony: String,
    pub credential: RegisterPublicKeyCredential,
}

/// The start of a registration: the name the user gave the passkey.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegisterStart {
    pub name: String,
}

/// Parses one of the request bodies above.
pub fn parse<'a, T: Deserialize<'a>>(body: &'a [u8]) -> Result<T, PasskeyError> {
    serde_json::from_slice(body).map_err(PasskeyError::BadRequest)
}

/// A login assertion matched to its ceremony and (if any) its user,
/// before the signature is checked: the caller asks the lockout first.
pub struct LoginCandidate {
    state: DiscoverableAuthentication,
    /// The user whose passkey file holds the assertion's user handle, if
    /// that user still exists.
    pub user: Option<String>,
    file: Option<UserFile>,
}

/// A verified passkey login.
#[derive(Debug)]
pub struct LoggedIn {
    pub user: String,
    /// The passkey's name.
    pub name: String,
    /// Always true (user verification is required); logged as evidence
    /// that the login counts as two factors.
    pub user_verified: bool,
}

/// A registered passkey.
#[derive(Debug)]
pub struct Registered {
    pub name: String,
    pub id: String,
}

/// Passkeys for one configuration: the relying party, the pending
/// ceremonies and the credential files.
pub struct Passkeys {
    rp: Option<Rp>,
    pub store: Store,
    ceremonies: std::sync::Arc<Ceremonies>,
}

impl Passkeys {
    /// Passkeys for `config` (off when `auth.passkeys` is). A relying
    /// party webauthn-rs refuses (config validation makes that impossible)
    /// turns passkeys off with an error in the log rather than stopping
    /// the gate.
    pub fn new(config: &Config) -> Passkeys {
        Self::with_ceremonies(config, std::sync::Arc::default())
    }

    /// The passkeys of a reloaded configuration, keeping the ceremonies
    /// in progress.
    pub fn reloaded(&self, config: &Config) -> Passkeys {
        Self::with_ceremonies(config, std::sync::Arc::clone(&self.ceremonies))
    }

    fn with_ceremonies(config: &Config, ceremonies: std::sync::Arc<Ceremonies>) -> Passkeys {
        let rp = config
            .auth
            .passkeys
            .as_ref()
            .and_then(|pk| match relying_party(pk) {
                Ok(rp) => Some(rp),
                Err(e) => {
                    tracing::error!(error = %e, rp_id = %pk.rp_id, "passkeys off: webauthn refused the relying party");
                    None
                }
            });
        Passkeys {
            rp,
            store: Store::new(&config.server.state_dir),
            ceremonies,
        }
    }

    pub fn enabled(&self) -> bool {
        self.rp.is_some()
    }

    /// The pending ceremonies (for tests).
    pub fn ceremonies(&self) -> &Ceremonies {
        &self.ceremonies
    }

    fn rp(&self) -> Result<&Rp, PasskeyError> {
        self.rp.as_ref().ok_or(PasskeyError::Off)
    }

    /// Refuses a ceremony for a page reached by another host name than
    /// the passkeys are for (`host`: the request's authority, lowercase).
    /// The browser would refuse it with a bare "SecurityError"; this
    /// names the host to use instead.
    pub fn check_host(&self, host: &str) -> Result<(), PasskeyError> {
        let rp = self.rp()?;
        let name = host_name(host);
        let wrong = || PasskeyError::WrongHost {
            rp_id: rp.rp_id.clone(),
            host: host.to_owned(),
        };
        if name != rp.rp_id && !name.ends_with(&format!(".{}", rp.rp_id)) {
            return Err(wrong());
        }
        if !rp.origins.is_empty() {
            let origin = match host.strip_suffix(":443") {
                Some(h) => format!("https://{h}"),
                None => format!("https://{host}"),
            };
            if !rp.origins.contains(&origin) {
                return Err(wrong());
            }
        }
        Ok(())
    }

    /// The relying party id (for the page saying where passkeys work).
    pub fn rp_id(&self) -> Option<&str> {
        self.rp.as_ref().map(|rp| rp.rp_id.as_str())
    }

    /// Starts a username-less login for the browser with CSRF binding
    /// `binding`: the ceremony id and the options for
    /// `navigator.credentials.get`.
    pub fn start_login(
        &self,
        binding: &str,
        now: Instant,
    ) -> Result<(String, RequestChallengeResponse), PasskeyError> {
        let rp = self.rp()?;
        let (mut rcr, state) = rp
            .webauthn
            .start_discoverable_authentication()
            .map_err(PasskeyError::Start)?;
        // webauthn-rs marks it for conditional UI (autofill); nbgate's
        // button asks with the browser's ordinary dialog.
        rcr.mediation = None;
        let id = self.ceremonies.insert(
            Stage::Login {
                binding: binding.to_owned(),
                state,
            },
            now,
        );
        Ok((id, rcr))
    }

    /// Takes the login ceremony the answer names (single use) and finds
    /// the user its user handle belongs to; `exists` says whether a user
    /// name is still a user (a removed user's passkeys open nothing).
    /// Reads files: call it off the async workers.
    pub fn identify_login(
        &self,
        answer: &LoginFinish,
        binding: &str,
        now: Instant,
        exists: impl Fn(&str) -> bool,
    ) -> Result<LoginCandidate, PasskeyError> {
        let rp = self.rp()?;
        let state = match self.ceremonies.take(&answer.ceremony, now) {
            Some(Stage::Login { binding: b, state }) if b == binding => state,
            _ => return Err(PasskeyError::Expired),
        };
        let (handle, _) = rp
            .webauthn
            .identify_discoverable_authentication(&answer.credential)
            .map_err(|_| PasskeyError::Unknown)?;
        let found = self
            .store
            .find_handle(handle)
            .filter(|(user, _)| exists(user));
        let (user, file) = match found {
            Some((u, f)) => (Some(u), Some(f)),
            None => (None, None),
        };
        Ok(LoginCandidate { state, user, file })
    }

    /// Verifies the assertion against the user's stored passkey, then
    /// stores its new counter, backup state and last use. Reads and
    /// writes files: call it off the async workers.
    pub fn finish_login(
        &self,
        candidate: LoginCandidate,
        credential: &PublicKeyCredential,
        now_unix: u64,
    ) -> Result<LoggedIn, PasskeyError> {
        let rp = self.rp()?;
        let (Some(user), Some(file)) = (candidate.user, candidate.file) else {
            return Err(PasskeyError::Unknown);
        };
        let cred_id = credential.get_credential_id();
        let stored = file
            .passkeys
            .iter()
            .find(|p| p.passkey.cred_id().as_slice() == cred_id)
            .ok_or(PasskeyError::Unknown)?;
        let result = rp
            .webauthn
            .finish_discoverable_authentication_v2(credential, candidate.state, &stored.passkey)
            .map_err(refused)?;
        if !result.user_verified() {
            return Err(PasskeyError::NotUserVerified);
        }
        let name = stored.name.clone();
        // Re-read under the lock: the file may have changed meanwhile (a
        // removal wins: the passkey is then gone, and so is this login).
        let _held = self.store.lock.lock().unwrap_or_else(|e| e.into_inner());
        let mut file = self.store.load(&user)?.ok_or(PasskeyError::Unknown)?;
        let entry = file
            .passkeys
            .iter_mut()
            .find(|p| p.passkey.cred_id().as_slice() == cred_id)
            .ok_or(PasskeyError::Unknown)?;
        entry.passkey.update_credential(&result);
        entry.last_used = Some(now_unix);
        entry.backed_up = Some(result.backup_state());
        self.store.save(&user, &file)?;
        Ok(LoggedIn {
            user,
            name,
            user_verified: result.user_verified(),
        })
    }

    /// Starts registering a passkey named `name` for `user` in session
    /// `sid`: the ceremony id and the options for
    /// `navigator.credentials.create`. Creates the user's file (with a
    /// fresh user handle) when missing. Writes files: call it off the
    /// async workers.
    pub fn start_registration(
        &self,
        user: &str,
        sid: &str,
        name: &str,
        now: Instant,
    ) -> Result<(String, serde_json::Value), PasskeyError> {
        let rp = self.rp()?;
        let name = valid_name(name)?;
        let file = {
            let _held = self.store.lock.lock().unwrap_or_else(|e| e.into_inner());
            match self.store.load(user)? {
                Some(f) => f,
                None => {
                    let f = UserFile {
                        version: 1,
                        user_handle: Uuid::new_v4(),
                        passkeys: Vec::new(),
                    };
                    self.store.save(user, &f)?;
                    f
                }
            }
        };
        if file.passkeys.len() >= MAX_PER_USER {
            return Err(PasskeyError::TooMany);
        }
        let exclude = file
            .passkeys
            .iter()
            .map(|p| p.passkey.cred_id().clone())
            .collect();
        let (ccr, state) = rp
            .webauthn
            .start_passkey_registration(file.user_handle, user, user, Some(exclude))
            .map_err(PasskeyError::Start)?;
        let id = self.ceremonies.insert(
            Stage::Register {
                user: user.to_owned(),
                sid: sid.to_owned(),
                name,
                handle: file.user_handle,
                state,
            },
            now,
        );
        Ok((id, require_resident_key(&ccr)))
    }

    /// Finishes a registration started by `user` in session `sid`, and
    /// stores the passkey. Writes files: call it off the async workers.
    pub fn finish_registration(
        &self,
        answer: &RegisterFinish,
        user: &str,
        sid: &str,
        now: Instant,
        now_unix: u64,
    ) -> Result<Registered, PasskeyError> {
        let rp = self.rp()?;
        let (name, handle, state) = match self.ceremonies.take(&answer.ceremony, now) {
            Some(Stage::Register {
                user: u,
                sid: s,
                name,
                handle,
                state,
            }) if u == user && s == sid => (name, handle, state),
            _ => return Err(PasskeyError::Expired),
        };
        let passkey = rp
            .webauthn
            .finish_passkey_registration(&answer.credential, &state)
            .map_err(refused)?;
        let _held = self.store.lock.lock().unwrap_or_else(|e| e.into_inner());
        let mut file = self.store.load(user)?.ok_or(PasskeyError::Expired)?;
        if file.user_handle != handle {
            // The file was removed and made again meanwhile: the passkey
            // carries a user handle no file holds.
            return Err(PasskeyError::Expired);
        }
        if file.passkeys.len() >= MAX_PER_USER {
            return Err(PasskeyError::TooMany);
        }
        let stored = StoredPasskey {
            name: name.clone(),
            created: now_unix,
            last_used: None,
            backed_up: None,
            passkey,
        };
        let id = stored.id();
        // excludeCredentials keeps a device from registering twice; a
        // browser that ignored it just replaces the entry.
        file.passkeys.retain(|p| p.id() != id);
        file.passkeys.push(stored);
        self.store.save(user, &file)?;
        Ok(Registered { name, id })
    }
}

/// The options for `navigator.credentials.create`, asking for a
/// discoverable credential (a resident key). Login is username-less, so
/// the passkey must be discoverable: webauthn-rs asks for "discouraged",
/// and a security key that honours it makes a passkey that could never log
/// in; "required" makes such a device say no at registration instead.
/// Patched in the JSON: webauthn-rs does not export the type of the field.
fn require_resident_key(ccr: &CreationChallengeResponse) -> serde_json::Value {
    let mut v = serde_json::to_value(ccr).expect("webauthn options serialize");
    if let Some(sel) = v
        .pointer_mut("/publicKey/authenticatorSelection")
        .and_then(serde_json::Value::as_object_mut)
    {
        sel.insert("residentKey".into(), "required".into());
        sel.insert("requireResidentKey".into(), true.into());
    }
    v
}

/// A passkey name: trimmed, 1 to [`MAX_NAME_CHARS`] characters, no
/// control characters (it is shown on a page and written to the log).
fn valid_name(name: &str) -> Result<String, PasskeyError> {
    let name = name.trim();
    let count = name.chars().count();
    if count == 0 || count > MAX_NAME_CHARS || name.chars().any(char::is_control) {
        return Err(PasskeyError::BadName);
    }
    Ok(name.to_owned())
}

/// The host part of an authority (`name:port`, `[v6]:port`), lowercase.
fn host_name(authority: &str) -> String {
    let host = match authority.rsplit_once(':') {
        Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) && !h.ends_with(':') => h,
        _ => authority,
    };
    host.trim_end_matches('.').to_ascii_lowercase()
}

/// webauthn-rs's relying party for `[auth.passkeys]`.
fn relying_party(pk: &PasskeysConfig) -> Result<Rp, WebauthnError> {
    let parse = |o: &str| Url::parse(o).map_err(|_| WebauthnError::Configuration);
    let first = match pk.origins.first() {
        Some(o) => parse(o)?,
        None => parse(&format!("https://{}", pk.rp_id))?,
    };
    let mut builder = WebauthnBuilder::new(&pk.rp_id, &first)?
        .rp_name(&pk.rp_name)
        .timeout(AUTHENTICATOR_TIMEOUT)
        // Without configured origins, any port of https://<rp_id>: the
        // port users reach nbgate on may be mapped by a router or a
        // container runtime. The RP id (the host) is what a passkey is
        // bound to either way.
        .allow_any_port(pk.origins.is_empty());
    for o in pk.origins.iter().skip(1) {
        builder = builder.append_allowed_origin(&parse(o)?);
    }
    Ok(Rp {
        webauthn: builder.build()?,
        rp_id: pk.rp_id.clone(),
        origins: pk.origins.clone(),
    })
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn passkeys(dir: &Path, extra: &str) -> Passkeys {
        let text = format!(
            "[server]\nstate_dir = {:?}\n[auth.passkeys]\nrp_id = \"nb.example.org\"\n{extra}",
            dir.display().to_string()
        );
        let config = Config::from_text(&text, Path::new("test.toml")).expect("config");
        let pk = Passkeys::new(&config);
        assert!(pk.enabled());
        pk
    }

    #[test]
    fn a_ceremony_is_taken_once_and_expires() {
        let c = Ceremonies::default();
        let t0 = Instant::now();
        let stage = |c: &Ceremonies| {
            let (_, state) = passkeys(tempfile::tempdir().expect("dir").path(), "")
                .rp()
                .expect("rp")
                .webauthn
                .start_discoverable_authentication()
                .expect("start");
            c.insert(
                Stage::Login {
                    binding: "b".into(),
                    state,
                },
                t0,
            )
        };
        let id = stage(&c);
        assert!(c.take(&id, t0 + Duration::from_secs(1)).is_some());
        assert!(c.take(&id, t0 + Duration::from_secs(1)).is_none(), "replay");
        let id = stage(&c);
        assert!(c.take(&id, t0 + CEREMONY_TTL).is_none(), "expired");
        assert!(
            c.is_empty(),
            "an expired ceremony is dropped when asked for"
        );
    }

    #[test]
    fn passkeys_work_on_the_rp_id_and_names_below_it_only() {
        let dir = tempfile::tempdir().expect("dir");
        let pk = passkeys(dir.path(), "");
        for ok in ["nb.example.org", "nb.example.org:8443", "a.nb.example.org"] {
            assert!(pk.check_host(ok).is_ok(), "{ok}");
        }
        for bad in [
            "127.0.0.1:8443",
            "[::1]:8443",
            "example.org",
            "nb.example.org.evil.net",
            "evilnb.example.org",
        ] {
            assert!(
                matches!(pk.check_host(bad), Err(PasskeyError::WrongHost { .. })),
                "{bad}"
            );
        }
        let exact = passkeys(dir.path(), "origins = [\"https://nb.example.org:8443\"]\n");
        assert!(exact.check_host("nb.example.org:8443").is_ok());
        assert!(exact.check_host("nb.example.org:9443").is_err());
    }

    #[test]
    fn registration_keeps_a_private_file_and_asks_for_a_discoverable_verified_passkey() {
        let dir = tempfile::tempdir().expect("dir");
        let pk = passkeys(dir.path(), "");
        let (_, options) = pk
            .start_registration("alice", "sid", "laptop", Instant::now())
            .expect("start");
        let sel = &options["publicKey"]["authenticatorSelection"];
        assert_eq!(sel["residentKey"], "required");
        assert_eq!(sel["userVerification"], "required");
        assert_eq!(options["publicKey"]["rp"]["id"], "nb.example.org");
        let file = dir.path().join("passkeys/alice.json");
        let mode = |p: &Path| std::fs::metadata(p).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode(&file), 0o600);
        assert_eq!(mode(file.parent().expect("dir")), 0o700);
        assert!(pk.store.list("alice").expect("list").is_empty());
        assert!(matches!(
            pk.store.remove("alice", "nope"),
            Err(PasskeyError::NotFound)
        ));
        for bad in ["", "   ", "a\u{7}b", &"x".repeat(MAX_NAME_CHARS + 1)] {
            assert!(matches!(
                pk.start_registration("alice", "sid", bad, Instant::now()),
                Err(PasskeyError::BadName)
            ));
        }
        assert!(
            Store::new(dir.path()).path("../x").is_none(),
            "a name that is not a user name is no file"
        );
    }

    #[test]
    fn a_registration_answer_from_another_session_finds_no_ceremony() {
        let dir = tempfile::tempdir().expect("dir");
        let pk = passkeys(dir.path(), "");
        let (ceremony, _) = pk
            .start_registration("alice", "sid-1", "laptop", Instant::now())
            .expect("start");
        let answer: RegisterFinish = parse(
            serde_json::json!({
                "ceremony": ceremony,
                "credential": {
                    "id": "AA", "rawId": "AA", "type": "public-key",
                    "response": {"attestationObject": "oA", "clientDataJSON": "e30"},
                }
            })
            .to_string()
            .as_bytes(),
        )
        .expect("well-formed");
        let r = pk.finish_registration(&answer, "alice", "sid-2", Instant::now(), 0);
        assert!(matches!(r, Err(PasskeyError::Expired)));
        let r = pk.finish_registration(&answer, "alice", "sid-1", Instant::now(), 0);
        assert!(
            matches!(r, Err(PasskeyError::Expired)),
            "taken by the first answer, even a wrong one"
        );
    }
}
