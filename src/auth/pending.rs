//! The pending second-step login: what a correct password earns when a
//! second factor must follow, instead of a session.
//!
//! It lives in the browser, sealed (AES-256-GCM, key derived from the
//! session signing key): the user, the `next` target, a random id, an expiry
//! a few minutes out and, for a forced enrolment, the secret being offered.
//! Sealed values are bound to their purpose (the cipher's associated data),
//! so a value made for one purpose (the account page's enrolment form)
//! cannot stand in for another (the login's second step). The id binds the
//! step's CSRF token and is used up when the login completes: a copied
//! cookie cannot open a second session, even with another valid code.
//!
//! No session exists until the second step succeeds: holding a pending
//! cookie gives access to nothing but the second-step form.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use base64::Engine;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::sealed::SealKey;

/// The cookie carrying a pending login. `__Host-`: only this origin, over
/// HTTPS, can set it (no sibling subdomain can plant one).
pub const PENDING_COOKIE: &str = "__Host-nbgate-pending";

/// How long the second step may take: long enough to find the phone, short
/// enough that a forgotten tab's pending login is gone soon.
pub const PENDING_TTL: Duration = Duration::from_secs(300);

/// What a sealed value is for: the associated data of its encryption.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// The login's second step (`login/totp`).
    SecondStep,
    /// The account page's enrolment form: the offered secret.
    AccountEnrol,
}

impl Purpose {
    fn aad(self) -> &'static [u8] {
        match self {
            Purpose::SecondStep => b"nbgate-pending-v1 second-step",
            Purpose::AccountEnrol => b"nbgate-pending-v1 account-enrol",
        }
    }
}

/// A login waiting for its second factor. `Debug` shows no offered
/// secret and no password fingerprint.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingLogin {
    /// The user whose password was right.
    pub u: String,
    /// Random; binds the step's CSRF token; used up by the login.
    pub id: String,
    /// Unix seconds after which the step is refused.
    pub exp: u64,
    /// Where to go once logged in (already sanitized).
    pub next: String,
    /// A forced enrolment: the base32 secret offered to the user.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enrol: Option<String>,
    /// The user's revocation generation and password fingerprint when the
    /// password was right (`Authenticator::login_stamp`): a "log out
    /// everywhere" or password change since then ends this login too.
    #[serde(default)]
    pub stamp: (u64, String),
}

impl PendingLogin {
    /// A pending login for `user` expiring [`PENDING_TTL`] after `now`.
    pub fn new(user: &str, next: &str, enrol: Option<String>, now: u64) -> PendingLogin {
        PendingLogin {
            u: user.to_owned(),
            id: random_id(),
            exp: now + PENDING_TTL.as_secs(),
            next: next.to_owned(),
            enrol,
            stamp: (0, String::new()),
        }
    }
}

/// The account page's enrolment offer: the secret shown, for whom, until
/// when. `Debug` shows no secret.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnrolOffer {
    pub u: String,
    pub secret: String,
    pub exp: u64,
}

impl std::fmt::Debug for PendingLogin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PendingLogin")
            .field("u", &self.u)
            .field("id", &self.id)
            .field("exp", &self.exp)
            .field("next", &self.next)
            .field("enrol", &self.enrol.as_ref().map(|_| "<redacted>"))
            .field("gen", &self.stamp.0)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for EnrolOffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EnrolOffer")
            .field("u", &self.u)
            .field("exp", &self.exp)
            .finish_non_exhaustive()
    }
}

/// Something sealed with an expiry.
pub trait Expiring {
    fn expires(&self) -> u64;
}

impl Expiring for PendingLogin {
    fn expires(&self) -> u64 {
        self.exp
    }
}

impl Expiring for EnrolOffer {
    fn expires(&self) -> u64 {
        self.exp
    }
}

fn random_id() -> String {
    let mut b = [0u8; 16];
    rand::fill(&mut b);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

/// The key of pending logins and enrolment offers (`auth::sealed`), its
/// own: never the one the session cookies, CSRF tokens or SSO flows use.
fn key(signing_key: &[u8]) -> SealKey {
    SealKey::derive(signing_key, b"nbgate-pending-key-v1")
}

/// Seals `value` for `purpose`.
pub fn seal<T: Serialize>(signing_key: &[u8], purpose: Purpose, value: &T) -> String {
    key(signing_key).seal(purpose.aad(), value)
}

/// Largest sealed value opened or set: browsers keep a cookie's name and
/// value up to 4096 bytes, and the name is 22 of them. A pending login
/// with the longest `next` (`next_path::MAX_NEXT_LEN`) and an offered
/// secret seals to about 3000.
pub const MAX_SEALED: usize = 4000;

/// Seals `p` for the second step's cookie. A `next` that would make the
/// cookie too long for a browser (one full of characters JSON escapes) is
/// replaced by `fallback_next` (the base URL) first: the login then lands
/// on the start page instead of ending in "session expired" every time.
pub fn seal_login(signing_key: &[u8], mut p: PendingLogin, fallback_next: &str) -> String {
    let sealed = seal(signing_key, Purpose::SecondStep, &p);
    if sealed.len() <= MAX_SEALED {
        return sealed;
    }
    p.next = fallback_next.to_owned();
    seal(signing_key, Purpose::SecondStep, &p)
}

/// Opens a value sealed for `purpose`; `None` when it was tampered with,
/// made with another key or for another purpose, or expired at `now`.
pub fn open<T: DeserializeOwned + Expiring>(
    signing_key: &[u8],
    purpose: Purpose,
    sealed: &str,
    now: u64,
) -> Option<T> {
    let value: T = key(signing_key).open(purpose.aad(), sealed, MAX_SEALED)?;
    (now < value.expires()).then_some(value)
}

/// `Set-Cookie` for a sealed pending login: HTTPS only, script-proof,
/// sent on same-site requests only, gone with the step's time.
pub fn cookie(sealed: &str) -> String {
    format!(
        "{PENDING_COOKIE}={sealed}; Path=/; Secure; HttpOnly; SameSite=Strict; Max-Age={}",
        PENDING_TTL.as_secs()
    )
}

/// `Set-Cookie` that deletes the pending cookie.
pub fn clear_cookie() -> String {
    format!("{PENDING_COOKIE}=; Path=/; Secure; HttpOnly; SameSite=Strict; Max-Age=0")
}

/// Ids of pending logins used up, with their expiry: process-wide (every
/// worker runtime sees one table; a reload keeps it). std Mutex, never held
/// across `.await`. Only completed logins enter it and entries leave at
/// their expiry, so it stays as small as the logins of five minutes.
/// A restart forgets it; the code a login used is then still refused by its
/// recorded step (`second_factor`), so a pending cookie copied before the
/// restart needs a fresh code, as a new login would.
static USED: Mutex<Option<HashMap<String, u64>>> = Mutex::new(None);

/// Marks `pending` used; `false` when it already was (a second completion
/// of one pending login is refused).
pub fn use_up(pending: &PendingLogin, now: u64) -> bool {
    let mut used = USED.lock().unwrap_or_else(|e| e.into_inner());
    let used = used.get_or_insert_with(HashMap::new);
    used.retain(|_, exp| *exp > now);
    used.insert(pending.id.clone(), pending.exp).is_none()
}

/// Wrong codes one pending login may take; then it is used up and the
/// password must be typed again, so one correct password buys a few
/// guesses, not all the guesses the lockout allows in five minutes.
pub const TRIES_PER_LOGIN: u32 = 3;

/// Wrong codes per pending-login id, with its expiry: as [`USED`], small
/// (entries leave at their expiry) and forgotten by a restart, when the
/// per-user count in the state file (`second_factor`) still holds.
static FAILED: Mutex<Option<HashMap<String, (u32, u64)>>> = Mutex::new(None);

/// Counts a wrong code of `pending`; `true` when that was its last try
/// (it is then used up).
pub fn failed_try(pending: &PendingLogin, now: u64) -> bool {
    let tries = {
        let mut failed = FAILED.lock().unwrap_or_else(|e| e.into_inner());
        let failed = failed.get_or_insert_with(HashMap::new);
        failed.retain(|_, (_, exp)| *exp > now);
        let entry = failed.entry(pending.id.clone()).or_insert((0, pending.exp));
        entry.0 += 1;
        entry.0
    };
    if tries >= TRIES_PER_LOGIN {
        use_up(pending, now);
        return true;
    }
    false
}

/// Whether `pending` was used up already.
pub fn is_used(pending: &PendingLogin) -> bool {
    USED.lock()
        .unwrap_or_else(|e| e.into_inner())
        .as_ref()
        .is_some_and(|u| u.contains_key(&pending.id))
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: [u8; 64] = [7u8; 64];
    const NOW: u64 = 1_700_000_000;

    fn pending() -> PendingLogin {
        PendingLogin::new("alice", "/lab", None, NOW)
    }

    #[test]
    fn a_sealed_pending_login_opens_until_it_expires() {
        let p = pending();
        let sealed = seal(&KEY, Purpose::SecondStep, &p);
        assert!(!sealed.contains("alice"), "the content is encrypted");
        assert_eq!(
            open::<PendingLogin>(&KEY, Purpose::SecondStep, &sealed, NOW),
            Some(p.clone())
        );
        let last = NOW + PENDING_TTL.as_secs() - 1;
        assert!(open::<PendingLogin>(&KEY, Purpose::SecondStep, &sealed, last).is_some());
        assert_eq!(
            open::<PendingLogin>(&KEY, Purpose::SecondStep, &sealed, last + 1),
            None
        );
    }

    #[test]
    fn tampered_foreign_and_other_purpose_values_do_not_open() {
        let sealed = seal(&KEY, Purpose::SecondStep, &pending());
        let mut bytes = sealed.clone().into_bytes();
        let mid = bytes.len() / 2;
        bytes[mid] = if bytes[mid] == b'A' { b'B' } else { b'A' };
        let tampered = String::from_utf8(bytes).expect("ascii");
        assert_eq!(
            open::<PendingLogin>(&KEY, Purpose::SecondStep, &tampered, NOW),
            None
        );
        assert_eq!(
            open::<PendingLogin>(&[8u8; 64], Purpose::SecondStep, &sealed, NOW),
            None
        );
        assert_eq!(
            open::<PendingLogin>(&KEY, Purpose::AccountEnrol, &sealed, NOW),
            None
        );
        for junk in ["", "!!!", "AAAA", &"A".repeat(MAX_SEALED + 1)] {
            assert_eq!(
                open::<PendingLogin>(&KEY, Purpose::SecondStep, junk, NOW),
                None
            );
        }
    }

    #[test]
    fn a_pending_login_is_used_up_once() {
        let p = pending();
        assert!(!is_used(&p));
        assert!(use_up(&p, NOW));
        assert!(is_used(&p));
        assert!(!use_up(&p, NOW));
        assert!(!is_used(&pending()), "another login's id is unaffected");
    }

    #[test]
    fn a_pending_login_is_used_up_after_its_tries() {
        let p = pending();
        for _ in 1..TRIES_PER_LOGIN {
            assert!(!failed_try(&p, NOW));
            assert!(!is_used(&p));
        }
        assert!(failed_try(&p, NOW), "the last try");
        assert!(is_used(&p));
        assert!(
            !failed_try(&pending(), NOW),
            "another login has its own tries"
        );
    }

    #[test]
    fn the_longest_next_fits_in_a_cookie_and_a_longer_one_falls_back() {
        let longest = format!("/{}", "a".repeat(crate::auth::next_path::MAX_NEXT_LEN - 1));
        let secret = "A".repeat(52);
        let p = PendingLogin::new(&"u".repeat(64), &longest, Some(secret), NOW);
        let sealed = seal_login(&KEY, p.clone(), "/");
        assert!(sealed.len() <= MAX_SEALED, "{}", sealed.len());
        assert!(PENDING_COOKIE.len() + 1 + sealed.len() <= 4096);
        assert_eq!(
            open::<PendingLogin>(&KEY, Purpose::SecondStep, &sealed, NOW),
            Some(p),
            "the next target survives"
        );
        let escaped = format!("/{}", "\"".repeat(2047));
        let p = PendingLogin::new("alice", &escaped, None, NOW);
        let sealed = seal_login(&KEY, p, "/base/");
        let opened: PendingLogin = open(&KEY, Purpose::SecondStep, &sealed, NOW).expect("opens");
        assert_eq!(opened.next, "/base/");
    }

    #[test]
    fn debug_shows_no_secret() {
        let mut p = PendingLogin::new("alice", "/lab", Some("SECRETSECRET".into()), NOW);
        p.stamp = (3, "FINGERPRINT".into());
        let offer = EnrolOffer {
            u: "alice".into(),
            secret: "SECRETSECRET".into(),
            exp: NOW,
        };
        let shown = format!("{p:?} {offer:?}");
        assert!(!shown.contains("SECRETSECRET"), "{shown}");
        assert!(!shown.contains("FINGERPRINT"), "{shown}");
    }
}
