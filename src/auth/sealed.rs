//! Values sealed into cookies: serialized as JSON, encrypted and
//! authenticated with AES-256-GCM under a key of their own, returned as
//! base64url of nonce || ciphertext || tag.
//!
//! The one implementation behind the TOTP step's pending login and
//! enrolment offer (`auth::pending`) and single sign-on's flow cookie
//! (`auth::oidc::flow`). Each user derives its key from the session signing
//! key with a label of its own (HMAC-SHA-256), so no key here is the one the
//! session cookies or CSRF tokens use, and binds every value to its purpose
//! through the associated data: a value sealed for one cookie cannot stand
//! in for another's. Nonces are random (96 bits): far below the birthday
//! bound at the number of sealed values a gate ever makes under one key.

use base64::Engine;
use ring::aead::{self, Aad, LessSafeKey, Nonce, UnboundKey, NONCE_LEN};
use serde::de::DeserializeOwned;
use serde::Serialize;

/// An AEAD key for sealed cookie values.
pub struct SealKey(LessSafeKey);

impl SealKey {
    /// The key for `label`: HMAC-SHA-256 of the label under `signing_key`.
    pub fn derive(signing_key: &[u8], label: &[u8]) -> SealKey {
        let mac = ring::hmac::sign(
            &ring::hmac::Key::new(ring::hmac::HMAC_SHA256, signing_key),
            label,
        );
        let unbound =
            UnboundKey::new(&aead::AES_256_GCM, mac.as_ref()).expect("HMAC-SHA-256 gives 32 bytes");
        SealKey(LessSafeKey::new(unbound))
    }

    /// Seals `value`, bound to `aad` (its purpose).
    pub fn seal<T: Serialize>(&self, aad: &[u8], value: &T) -> String {
        let mut nonce = [0u8; NONCE_LEN];
        rand::fill(&mut nonce);
        let mut data = serde_json::to_vec(value).expect("sealed values always serialize");
        self.0
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad),
                &mut data,
            )
            .expect("AES-GCM seals any value this small");
        let mut out = nonce.to_vec();
        out.extend_from_slice(&data);
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(out)
    }

    /// Opens a value sealed under this key for `aad`. `None` for anything
    /// else: longer than `max_len`, not base64url, truncated, tampered with,
    /// sealed under another key or for another purpose, or not a `T`.
    pub fn open<T: DeserializeOwned>(&self, aad: &[u8], sealed: &str, max_len: usize) -> Option<T> {
        if sealed.len() > max_len {
            return None;
        }
        let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(sealed.trim())
            .ok()?;
        if raw.len() < NONCE_LEN + aead::AES_256_GCM.tag_len() {
            return None;
        }
        let (nonce, data) = raw.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
        let mut data = data.to_vec();
        let plain = self
            .0
            .open_in_place(nonce, Aad::from(aad), &mut data)
            .ok()?;
        serde_json::from_slice(plain).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_value_opens_only_under_its_key_and_purpose() {
        let key = SealKey::derive(&[1; 32], b"label-a");
        let sealed = key.seal(b"purpose", &("alice", 7u64));
        assert_eq!(
            key.open::<(String, u64)>(b"purpose", &sealed, 4096),
            Some(("alice".to_owned(), 7))
        );
        assert_eq!(key.open::<(String, u64)>(b"other", &sealed, 4096), None);
        let other_label = SealKey::derive(&[1; 32], b"label-b");
        assert_eq!(
            other_label.open::<(String, u64)>(b"purpose", &sealed, 4096),
            None
        );
        let other_key = SealKey::derive(&[2; 32], b"label-a");
        assert_eq!(
            other_key.open::<(String, u64)>(b"purpose", &sealed, 4096),
            None
        );
        assert_eq!(
            key.open::<(String, u64)>(b"purpose", &sealed, sealed.len() - 1),
            None
        );
        for cut in [0, 5, sealed.len() - 1] {
            assert_eq!(
                key.open::<(String, u64)>(b"purpose", &sealed[..cut], 4096),
                None
            );
        }
    }
}
