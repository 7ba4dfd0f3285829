//! What a sign-in carries between its start and the provider's redirect
//! back: the flow state, sealed into a short-lived cookie bound to the
//! browser that started it, and the callback's query. Both are attacker
//! input at the callback (a fuzz target reads them: `fuzz/checks.rs`).
//!
//! The cookie holds the PKCE verifier, the `state` and `nonce` values, the
//! redirect URI and where to go afterwards, encrypted and authenticated
//! (AES-256-GCM under a key derived from the session signing key, the
//! cookie's name as associated data) with an expiry inside. Why a cookie:
//! the callback must come from the browser that started the flow (a
//! `state` the provider sends back to another browser finds no cookie
//! there: login CSRF and code injection fail), and no server-side table
//! grows per click. The cookie is `SameSite=Lax`: the provider's redirect
//! back is a cross-site top-level GET, which `Strict` would strip.
//! Single use is enforced at the callback (`UsedStates`).

use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;

use crate::auth::sealed::SealKey;

/// The flow cookie's name; `__Host-`: Secure, Path=/, no Domain.
pub const FLOW_COOKIE: &str = "__Host-nbgate-oidc";
/// How long a sign-in may take at the provider (typing a password, MFA).
pub const FLOW_LIFETIME_SECS: u64 = 600;
/// The longest callback parameter read; real codes and states are short.
pub const MAX_PARAM: usize = 2048;
/// The longest sealed value opened (a flow state is under 1 KiB).
const MAX_SEALED: usize = 4096;

/// One sign-in in progress.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlowState {
    /// The provider's name.
    pub provider: String,
    /// The `state` sent to the provider (CSRF binding of the callback).
    pub state: String,
    /// The `nonce` the ID token must carry (replay of an old ID token).
    pub nonce: String,
    /// The PKCE verifier (RFC 7636): a stolen code is useless without it.
    pub verifier: String,
    /// The redirect URI sent at the start; the code exchange repeats it.
    pub redirect_uri: String,
    /// Where to go after the login (already sanitized).
    pub next: String,
    /// Unix seconds after which the flow is refused.
    pub expires: u64,
}

/// The key that seals flow states (`auth::sealed`), derived from the
/// session signing key with its own label, so that no other sealed or
/// signed value of nbgate can be taken for a flow state.
pub struct FlowKey(SealKey);

impl FlowKey {
    pub fn derive(signing_key: &[u8]) -> FlowKey {
        FlowKey(SealKey::derive(signing_key, b"nbgate-oidc-flow-v1"))
    }

    /// The sealed value, bound to the cookie's name.
    pub fn seal(&self, flow: &FlowState) -> String {
        self.0.seal(FLOW_COOKIE.as_bytes(), flow)
    }

    /// The flow state in `value`, if it was sealed by this key and has
    /// not expired at `now`. Anything else (tampered, truncated, another
    /// key, expired, oversized) is `None`.
    pub fn open(&self, value: &str, now: u64) -> Option<FlowState> {
        let flow: FlowState = self.0.open(FLOW_COOKIE.as_bytes(), value, MAX_SEALED)?;
        (now < flow.expires).then_some(flow)
    }
}

/// `Set-Cookie` carrying a sealed flow state.
pub fn flow_cookie(sealed: &str) -> String {
    format!(
        "{FLOW_COOKIE}={sealed}; Path=/; Secure; HttpOnly; SameSite=Lax; Max-Age={FLOW_LIFETIME_SECS}"
    )
}

/// `Set-Cookie` that removes the flow cookie (every callback answer sends it:
/// a flow is used once, whatever its outcome).
pub fn clear_flow_cookie() -> String {
    format!("{FLOW_COOKIE}=; Path=/; Secure; HttpOnly; SameSite=Lax; Max-Age=0")
}

/// What the provider's redirect back says (OpenID Connect Core §3.1.2.5-6).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Callback {
    pub state: String,
    /// `iss` (RFC 9207), when the provider sends it: the callback must
    /// come from the provider the flow went to (mix-up attacks).
    pub iss: Option<String>,
    pub outcome: Outcome,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The user signed in: exchange this code.
    Code(String),
    /// The provider refused or the user cancelled: the code the provider
    /// sent, reduced to what is safe in a log field.
    Error(String),
}

/// Why a callback query is refused before anything is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CallbackError {
    #[error("the callback has no state")]
    NoState,
    #[error("the callback has neither code nor error")]
    NoCode,
    /// A parameter twice: which one counts would be the parser's guess
    /// (parameter pollution), so neither does.
    #[error("a callback parameter appears twice")]
    Repeated,
    #[error("a callback parameter is too long")]
    TooLong,
}

impl Callback {
    /// Parses the callback's query string.
    ///
    /// # Errors
    /// A missing `state`, neither `code` nor `error`, a repeated or overlong
    /// parameter.
    pub fn parse(query: &str) -> Result<Callback, CallbackError> {
        let (mut code, mut state, mut error, mut iss) = (None, None, None, None);
        for (k, v) in form_urlencoded::parse(query.as_bytes()) {
            let slot = match &*k {
                "code" => &mut code,
                "state" => &mut state,
                "error" => &mut error,
                "iss" => &mut iss,
                _ => continue,
            };
            if v.len() > MAX_PARAM {
                return Err(CallbackError::TooLong);
            }
            if slot.replace(v.into_owned()).is_some() {
                return Err(CallbackError::Repeated);
            }
        }
        let state = state
            .filter(|s| !s.is_empty())
            .ok_or(CallbackError::NoState)?;
        let outcome = match (code, error) {
            (_, Some(error)) => Outcome::Error(log_safe(&error)),
            (Some(code), None) if !code.is_empty() => Outcome::Code(code),
            _ => return Err(CallbackError::NoCode),
        };
        Ok(Callback {
            state,
            iss,
            outcome,
        })
    }
}

/// An error code as a log field: RFC 6749 codes are `%x20-21 / %x23-5B /
/// %x5D-7E`; anything else, or longer than 64, is logged as `other`.
fn log_safe(error: &str) -> String {
    if (1..=64).contains(&error.len())
        && error
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
    {
        error.to_owned()
    } else {
        "other".to_owned()
    }
}

/// Whether the callback's `state` is the one this browser's flow sent, in
/// constant time.
pub fn state_matches(flow: &FlowState, state: &str) -> bool {
    bool::from(flow.state.as_bytes().ct_eq(state.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flow() -> FlowState {
        FlowState {
            provider: "corp".into(),
            state: "st".into(),
            nonce: "no".into(),
            verifier: "ve".into(),
            redirect_uri: "https://h/_nbgate/oidc/callback".into(),
            next: "/lab".into(),
            expires: 1000,
        }
    }

    #[test]
    fn a_sealed_flow_opens_only_with_its_key_and_before_it_expires() {
        let key = FlowKey::derive(&[1; 32]);
        let sealed = key.seal(&flow());
        assert_eq!(key.open(&sealed, 999), Some(flow()));
        assert_eq!(key.open(&sealed, 1000), None, "expired");
        assert_eq!(FlowKey::derive(&[2; 32]).open(&sealed, 0), None);
        let mut tampered = sealed.into_bytes();
        let i = tampered.len() / 2;
        tampered[i] = if tampered[i] == b'A' { b'B' } else { b'A' };
        let tampered = String::from_utf8(tampered).expect("ascii");
        assert_eq!(key.open(&tampered, 0), None);
        assert_eq!(key.open("", 0), None);
        assert_eq!(key.open("!!", 0), None);
    }

    #[test]
    fn callbacks_parse_and_refuse_pollution() {
        let cb = |state: &str, iss: Option<&str>, outcome| Callback {
            state: state.into(),
            iss: iss.map(str::to_owned),
            outcome,
        };
        assert_eq!(
            Callback::parse("code=c1&state=s1&session_state=x&iss=https%3A%2F%2Fidp"),
            Ok(cb("s1", Some("https://idp"), Outcome::Code("c1".into())))
        );
        assert_eq!(
            Callback::parse("error=access_denied&error_description=no&state=s"),
            Ok(cb("s", None, Outcome::Error("access_denied".into())))
        );
        assert_eq!(
            Callback::parse("error=%0Afake%20line&state=s"),
            Ok(cb("s", None, Outcome::Error("other".into())))
        );
        assert_eq!(
            Callback::parse("code=a&code=b&state=s"),
            Err(CallbackError::Repeated)
        );
        assert_eq!(
            Callback::parse("code=a&state=s&iss=x&iss=y"),
            Err(CallbackError::Repeated)
        );
        assert_eq!(Callback::parse("code=a"), Err(CallbackError::NoState));
        assert_eq!(Callback::parse("state=s"), Err(CallbackError::NoCode));
        assert_eq!(
            Callback::parse(&format!("code={}&state=s", "a".repeat(MAX_PARAM + 1))),
            Err(CallbackError::TooLong)
        );
    }
}
