//! CSRF tokens for nbgate's own forms (login, logout).
//!
//! A token is a random nonce plus an HMAC over the nonce and a *binding*:
//! for the login form the binding is a random value in a `__Host-` cookie
//! (so an attacker's page cannot make a victim submit a login into the
//! attacker's account — login CSRF); for the logout form it is the session
//! id (so another site cannot log a user out). Tokens are stateless.

use base64::Engine;
use ring::hmac;

/// Cookie carrying the pre-login binding value.
pub const CSRF_COOKIE: &str = "__Host-nbgate-csrf";

const NONCE: usize = 16;
const MAC: usize = 16;

fn mac(key: &[u8], nonce: &[u8], binding: &str) -> hmac::Tag {
    let k = hmac::Key::new(hmac::HMAC_SHA256, key);
    let mut ctx = hmac::Context::with_key(&k);
    ctx.update(b"nbgate-csrf-v1\0");
    ctx.update(nonce);
    ctx.update(binding.as_bytes());
    ctx.sign()
}

/// Makes a token bound to `binding`.
pub fn token(key: &[u8], binding: &str) -> String {
    let mut nonce = [0u8; NONCE];
    rand::fill(&mut nonce);
    let tag = mac(key, &nonce, binding);
    let mut out = Vec::with_capacity(NONCE + MAC);
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&tag.as_ref()[..MAC]);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(out)
}

/// Checks a token against `binding`, in constant time.
pub fn verify(key: &[u8], binding: &str, token: &str) -> bool {
    let Ok(raw) = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(token.trim()) else {
        return false;
    };
    if raw.len() != NONCE + MAC || binding.is_empty() {
        return false;
    }
    let tag = mac(key, &raw[..NONCE], binding);
    use subtle::ConstantTimeEq;
    bool::from(tag.as_ref()[..MAC].ct_eq(&raw[NONCE..]))
}

/// A fresh random binding value for the CSRF cookie.
pub fn new_binding() -> String {
    let mut b = [0u8; 16];
    rand::fill(&mut b);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

/// `Set-Cookie` for the binding cookie: session-lifetime, script-proof.
pub fn binding_cookie(value: &str) -> String {
    format!("{CSRF_COOKIE}={value}; Path=/; Secure; HttpOnly; SameSite=Strict")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_verifies_only_for_its_binding_and_key() {
        let key = [7u8; 32];
        let t = token(&key, "bind-a");
        assert!(verify(&key, "bind-a", &t));
        assert!(!verify(&key, "bind-b", &t), "another user's binding");
        assert!(!verify(&[8u8; 32], "bind-a", &t), "another key");
        assert!(!verify(&key, "", &t), "empty binding");
    }

    #[test]
    fn malformed_or_tampered_tokens_are_refused() {
        let key = [7u8; 32];
        let t = token(&key, "b");
        let mut chars: Vec<char> = t.chars().collect();
        chars[3] = if chars[3] == 'A' { 'B' } else { 'A' };
        let tampered: String = chars.into_iter().collect();
        assert!(!verify(&key, "b", &tampered));
        assert!(!verify(&key, "b", ""));
        assert!(!verify(&key, "b", "!!!"));
        assert!(!verify(&key, "b", &t[..10]));
    }

    #[test]
    fn tokens_are_not_repeated() {
        let key = [1u8; 32];
        assert_ne!(token(&key, "b"), token(&key, "b"));
    }
}
