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
use ring::aead::{self, Aad, LessSafeKey, Nonce, UnboundKey, NONCE_LEN};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

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

/// A login waiting for its second factor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
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
        }
    }
}

/// The account page's enrolment offer: the secret shown, for whom, until when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnrolOffer {
    pub u: String,
    pub secret: String,
    pub exp: u64,
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

/// The AEAD key: HMAC-SHA-256 of a label under the signing key, so this
/// key is never the one the session cookies or CSRF tokens use.
fn key(signing_key: &[u8]) -> LessSafeKey {
    let mac = ring::hmac::sign(
        &ring::hmac::Key::new(ring::hmac::HMAC_SHA256, signing_key),
        b"nbgate-pending-key-v1",
    );
    let unbound =
        UnboundKey::new(&aead::AES_256_GCM, mac.as_ref()).expect("HMAC-SHA-256 gives 32 bytes");
    LessSafeKey::new(unbound)
}

/// Seals `value` for `purpose`: base64url of nonce and ciphertext.
pub fn seal<T: Serialize>(signing_key: &[u8], purpose: Purpose, value: &T) -> String {
    let mut nonce = [0u8; NONCE_LEN];
    rand::fill(&mut nonce);
    let mut data = serde_json::to_vec(value).expect("sealed values always serialize");
    key(signing_key)
        .seal_in_place_append_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(purpose.aad()),
            &mut data,
        )
        .expect("AES-GCM seals any value this small");
    let mut out = nonce.to_vec();
    out.extend_from_slice(&data);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(out)
}

/// Largest sealed value opened: a pending cookie is a few hundred bytes.
const MAX_SEALED: usize = 2048;

/// Opens a value sealed for `purpose`; `None` when it was tampered with,
/// made with another key or for another purpose, or expired at `now`.
pub fn open<T: DeserializeOwned + Expiring>(
    signing_key: &[u8],
    purpose: Purpose,
    sealed: &str,
    now: u64,
) -> Option<T> {
    if sealed.len() > MAX_SEALED {
        return None;
    }
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(sealed.trim())
        .ok()?;
    if raw.len() < NONCE_LEN {
        return None;
    }
    let (nonce, data) = raw.split_at(NONCE_LEN);
    let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
    let mut data = data.to_vec();
    let plain = key(signing_key)
        .open_in_place(nonce, Aad::from(purpose.aad()), &mut data)
        .ok()?;
    let value: T = serde_json::from_slice(plain).ok()?;
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
        for junk in ["", "!!!", "AAAA", &"A".repeat(4000)] {
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
}
