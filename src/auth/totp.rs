//! The arithmetic of the TOTP second factor (RFC 6238): secrets, the codes
//! an authenticator app shows, the `otpauth://` URI it scans, and the
//! one-time recovery codes that stand in for a lost phone.
//!
//! Pure functions of their inputs (time included): no I/O, no clock, no
//! logging. Where a user's secret, last accepted step and recovery hashes
//! are kept is `second_factor`; what counts as a failed attempt is the
//! caller's (`proxy::own_pages::totp`).
//!
//! Parameters are the ones every authenticator app supports: HMAC-SHA-1,
//! six digits, 30-second steps (RFC 6238 §4, §5.2), a 160-bit secret
//! (RFC 4226 §4 recommends 160 bits). Apps that "support" SHA-256 often
//! silently fall back to SHA-1, so nothing else is offered.

use subtle::ConstantTimeEq;
use totp_rs::{Algorithm, Builder, Totp};

/// Digits of a code.
pub const DIGITS: u8 = 6;
/// Seconds per time step (RFC 6238 §5.2 recommends 30).
pub const STEP_SECS: u64 = 30;
/// Steps accepted either side of the current one: a phone's clock a little
/// off, or a code typed as it rolled over (RFC 6238 §5.2 recommends at
/// most one).
pub const SKEW_STEPS: u64 = 1;
/// Bytes of a new secret: 160 bits (RFC 4226 §4).
pub const SECRET_BYTES: usize = 20;
/// Recovery codes made at enrolment or regeneration.
pub const RECOVERY_CODES: usize = 10;
/// The issuer an authenticator app lists the account under.
pub const ISSUER: &str = "nbgate";

/// Letters of a recovery code: Crockford's base32 alphabet (digits and
/// lowercase letters without `i l o u`), since a code is read off paper and
/// typed on a phone; typed `o`, `i` and `l` are read as `0` and `1`. Five
/// bits a letter, so a ten-letter code has 50 bits: far beyond online
/// guessing under the lockout.
const RECOVERY_ALPHABET: &[u8; 32] = b"0123456789abcdefghjkmnpqrstvwxyz";
const RECOVERY_LEN: usize = 10;

/// A TOTP secret. Its `Debug` is redacted: secrets never reach a log.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Vec<u8>);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(…)")
    }
}

/// A secret that cannot be used: not base32, or shorter than 128 bits
/// (RFC 4226 §4's minimum).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("not a base32 TOTP secret of at least 128 bits")]
pub struct BadSecret;

impl Secret {
    /// A fresh random secret.
    pub fn generate() -> Secret {
        let mut bytes = vec![0u8; SECRET_BYTES];
        rand::fill(&mut bytes[..]);
        Secret(bytes)
    }

    /// Reads a base32 secret (RFC 4648, as authenticator apps show it):
    /// case, spaces and `=` padding do not matter.
    ///
    /// # Errors
    /// Not base32, or shorter than 128 bits.
    pub fn from_base32(text: &str) -> Result<Secret, BadSecret> {
        let clean: String = text
            .chars()
            .filter(|c| !c.is_whitespace() && *c != '=' && *c != '-')
            .map(|c| c.to_ascii_uppercase())
            .collect();
        let bytes = totp_rs::Secret::try_from_base32(&clean)
            .map_err(|_| BadSecret)?
            .as_ref()
            .to_vec();
        if bytes.len() < 16 {
            return Err(BadSecret);
        }
        Ok(Secret(bytes))
    }

    /// The secret in base32 without padding, as apps expect it typed.
    pub fn to_base32(&self) -> String {
        totp_rs::Secret::from(self.0.clone()).to_base32()
    }

    /// The base32 text in groups of four, for reading off a screen.
    pub fn to_grouped_base32(&self) -> String {
        let text = self.to_base32();
        let groups: Vec<&str> = text
            .as_bytes()
            .chunks(4)
            .map(|c| std::str::from_utf8(c).expect("base32 is ASCII"))
            .collect();
        groups.join(" ")
    }

    fn totp(&self, account: &str) -> Totp {
        Builder::new()
            .with_algorithm(Algorithm::SHA1)
            .with_digits(DIGITS)
            .with_skew(0)
            .with_step_duration(STEP_SECS)
            .with_secret(self.0.clone())
            .with_issuer(Some(ISSUER))
            .with_account_name(account)
            // The secret is at least 128 bits (checked where it is made or
            // read) and the parameters are fixed: only the account name
            // could fail the RFC checks, and a user name has no ':'.
            .build_noncompliant()
    }

    /// The code for the step that `unix` seconds fall in.
    pub fn code_at(&self, unix: u64) -> String {
        self.totp("x").generate(unix).to_string()
    }

    /// The `otpauth://totp/nbgate:USER?secret=…&issuer=nbgate` URI an
    /// authenticator app scans.
    pub fn otpauth_uri(&self, user: &str) -> String {
        // User names are checked (`config::valid_user_name`): no ':', which
        // is all `to_url` refuses.
        self.totp(user)
            .to_url()
            .unwrap_or_else(|_| format!("otpauth://totp/{ISSUER}?secret={}", self.to_base32()))
    }
}

/// The QR code of `uri` drawn with Unicode half blocks (two rows of
/// modules per line), dark on light with its quiet zone, for a terminal;
/// `None` only for text far beyond a QR code's capacity.
pub fn terminal_qr(uri: &str) -> Option<String> {
    let code = qrcode::QrCode::new(uri.as_bytes()).ok()?;
    Some(
        code.render::<qrcode::render::unicode::Dense1x2>()
            .dark_color(qrcode::render::unicode::Dense1x2::Light)
            .light_color(qrcode::render::unicode::Dense1x2::Dark)
            .build(),
    )
}

/// The time step that `unix` seconds fall in.
pub fn step_of(unix: u64) -> u64 {
    unix / STEP_SECS
}

/// What a typed code turned out to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CodeCheck {
    /// The code of `step`, a step not used before.
    Accepted { step: u64 },
    /// The code of a step at or before the last one accepted: a replay
    /// (a code seen over a shoulder, or sent twice).
    Replayed,
    /// Not a code of any step within the skew.
    Wrong,
}

/// Checks `code` against the steps within [`SKEW_STEPS`] of `now_unix`.
///
/// `last_step` is the last step a code was accepted for: codes of that step
/// or earlier are refused (RFC 6238 §5.2: "the verifier MUST NOT accept the
/// second attempt of the same OTP"), so one code opens one login, and a
/// later code used first closes the window of the earlier ones.
pub fn check_code(secret: &Secret, code: &str, now_unix: u64, last_step: Option<u64>) -> CodeCheck {
    let Some(code) = normalize_code(code) else {
        return CodeCheck::Wrong;
    };
    let now = step_of(now_unix);
    let mut replayed = false;
    for step in now.saturating_sub(SKEW_STEPS)..=now + SKEW_STEPS {
        let expected = secret.code_at(step * STEP_SECS);
        if bool::from(expected.as_bytes().ct_eq(code.as_bytes())) {
            if last_step.is_some_and(|last| step <= last) {
                replayed = true;
                continue;
            }
            return CodeCheck::Accepted { step };
        }
    }
    if replayed {
        CodeCheck::Replayed
    } else {
        CodeCheck::Wrong
    }
}

/// The six digits of a typed code (spaces allowed, as apps show `123 456`),
/// or `None`.
pub fn normalize_code(code: &str) -> Option<String> {
    let digits: String = code.chars().filter(|c| !c.is_whitespace()).collect();
    (digits.len() == usize::from(DIGITS) && digits.bytes().all(|b| b.is_ascii_digit()))
        .then_some(digits)
}

/// Whether typed input looks like a TOTP code rather than a recovery code.
pub fn looks_like_code(input: &str) -> bool {
    normalize_code(input).is_some()
}

/// Ten fresh recovery codes, as shown to the user: `abcde-fghjk`.
pub fn new_recovery_codes() -> Vec<String> {
    (0..RECOVERY_CODES)
        .map(|_| {
            let mut raw = [0u8; RECOVERY_LEN];
            rand::fill(&mut raw);
            let letters: String = raw
                .iter()
                .map(|b| char::from(RECOVERY_ALPHABET[usize::from(b & 31)]))
                .collect();
            format!("{}-{}", &letters[..5], &letters[5..])
        })
        .collect()
}

/// A typed recovery code in its stored form (lowercase, no separators), or
/// `None` when it cannot be one.
pub fn normalize_recovery(input: &str) -> Option<String> {
    let letters: String = input
        .chars()
        .filter(|c| !c.is_whitespace() && *c != '-')
        .map(|c| match c.to_ascii_lowercase() {
            'o' => '0',
            'i' | 'l' => '1',
            c => c,
        })
        .collect();
    (letters.len() == RECOVERY_LEN && letters.bytes().all(|b| RECOVERY_ALPHABET.contains(&b)))
        .then_some(letters)
}

/// The stored hash of a recovery code: SHA-256 of a per-user salt and the
/// normalized code, hex. The codes are random with 50 bits each, so a fast
/// hash suffices (no password-style stretching); the salt keeps equal codes
/// of two users from having equal hashes.
pub fn recovery_hash(salt: &[u8], normalized: &str) -> String {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    ctx.update(b"nbgate-recovery-v1\0");
    ctx.update(salt);
    ctx.update(normalized.as_bytes());
    hex::encode(ctx.finish().as_ref())
}

/// The index in `hashes` of the one `input` matches, comparing every hash
/// in constant time (no early exit).
pub fn find_recovery(salt: &[u8], hashes: &[String], input: &str) -> Option<usize> {
    let normalized = normalize_recovery(input)?;
    let typed = recovery_hash(salt, &normalized);
    let mut found = None;
    for (i, h) in hashes.iter().enumerate() {
        if bool::from(h.as_bytes().ct_eq(typed.as_bytes())) && found.is_none() {
            found = Some(i);
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 6238 Appendix B's SHA-1 secret ("12345678901234567890").
    fn rfc_secret() -> Secret {
        Secret(b"12345678901234567890".to_vec())
    }

    #[test]
    fn codes_match_the_rfc_6238_test_vectors() {
        // Appendix B lists eight digits; six are their last six.
        for (t, eight) in [
            (59, "94287082"),
            (1_111_111_109, "07081804"),
            (1_234_567_890, "89005924"),
            (2_000_000_000, "69279037"),
        ] {
            assert_eq!(rfc_secret().code_at(t), &eight[2..], "t={t}");
        }
    }

    #[test]
    fn the_previous_and_next_step_are_accepted_two_steps_off_is_not() {
        let s = Secret::generate();
        let now = 1_700_000_015;
        let step = step_of(now);
        for (offset, accepted) in [(-2i64, false), (-1, true), (0, true), (1, true), (2, false)] {
            let t = (i64::try_from(now).expect("fits") + offset * 30) as u64;
            let got = check_code(&s, &s.code_at(t), now, None);
            if accepted {
                assert_eq!(
                    got,
                    CodeCheck::Accepted {
                        step: (i64::try_from(step).expect("fits") + offset) as u64
                    },
                    "offset {offset}"
                );
            } else {
                assert_eq!(got, CodeCheck::Wrong, "offset {offset}");
            }
        }
    }

    #[test]
    fn a_code_is_accepted_once_and_an_older_one_after_a_newer_is_refused() {
        let s = Secret::generate();
        let now = 1_700_000_015;
        let code = s.code_at(now);
        let CodeCheck::Accepted { step } = check_code(&s, &code, now, None) else {
            panic!("first use")
        };
        assert_eq!(check_code(&s, &code, now, Some(step)), CodeCheck::Replayed);
        // Still a replay a step later, while it is within the skew.
        assert_eq!(
            check_code(&s, &code, now + 30, Some(step)),
            CodeCheck::Replayed
        );
        // The previous step's code after this step's was used: refused too.
        let previous = s.code_at(now - 30);
        assert_eq!(
            check_code(&s, &previous, now, Some(step)),
            CodeCheck::Replayed
        );
        // The next step's code is still fine.
        assert_eq!(
            check_code(&s, &s.code_at(now + 30), now, Some(step)),
            CodeCheck::Accepted { step: step + 1 }
        );
    }

    #[test]
    fn malformed_codes_are_wrong_and_spaces_are_ignored() {
        let s = Secret::generate();
        let now = 1_700_000_015;
        let code = s.code_at(now);
        let spaced = format!("{} {}", &code[..3], &code[3..]);
        assert!(matches!(
            check_code(&s, &spaced, now, None),
            CodeCheck::Accepted { .. }
        ));
        for bad in ["", "12345", "1234567", "+12345", "12345a", "١٢٣٤٥٦"] {
            assert_eq!(check_code(&s, bad, now, None), CodeCheck::Wrong, "{bad:?}");
        }
    }

    #[test]
    fn secrets_round_trip_through_base32_and_short_ones_are_refused() {
        let s = Secret::generate();
        assert_eq!(s.to_base32().len(), 32);
        assert_eq!(Secret::from_base32(&s.to_base32()), Ok(s.clone()));
        let grouped = s.to_grouped_base32().to_lowercase();
        assert_eq!(Secret::from_base32(&grouped), Ok(s.clone()));
        assert_eq!(Secret::from_base32("JBSWY3DPEHPK3PXP"), Err(BadSecret));
        assert_eq!(Secret::from_base32("not base32!"), Err(BadSecret));
        assert_eq!(format!("{s:?}"), "Secret(…)");
    }

    #[test]
    fn the_otpauth_uri_names_issuer_account_and_secret() {
        let s = rfc_secret();
        let uri = s.otpauth_uri("alice");
        assert_eq!(
            uri,
            format!(
                "otpauth://totp/nbgate:alice?secret={}&issuer=nbgate",
                s.to_base32()
            )
        );
    }

    #[test]
    fn recovery_codes_are_distinct_and_found_by_their_hash_in_any_spelling() {
        let codes = new_recovery_codes();
        assert_eq!(codes.len(), RECOVERY_CODES);
        let mut unique = codes.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), RECOVERY_CODES);
        let salt = b"salt";
        let hashes: Vec<String> = codes
            .iter()
            .map(|c| recovery_hash(salt, &normalize_recovery(c).expect("valid")))
            .collect();
        assert_eq!(find_recovery(salt, &hashes, &codes[3]), Some(3));
        let sloppy = codes[7].replace('-', " ").to_uppercase();
        assert_eq!(find_recovery(salt, &hashes, &sloppy), Some(7));
        assert_eq!(find_recovery(b"other salt", &hashes, &codes[3]), None);
        assert_eq!(find_recovery(salt, &hashes, "abcde-fghjk"), None);
        assert_eq!(
            normalize_recovery("Oil23-45678"),
            Some("01123456 78".replace(' ', ""))
        );
        assert_eq!(normalize_recovery("uuuuu-uuuuu"), None);
        assert_eq!(find_recovery(salt, &hashes, "123456"), None);
        assert!(!looks_like_code(&codes[0]));
        assert!(looks_like_code("123 456"));
    }
}
