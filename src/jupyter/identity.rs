//! The identity header nbgate's provider for Jupyter (`python/nbgate_identity.py`,
//! shipped inside the binary as [`PROVIDER_SOURCE`]) verifies: which nbgate
//! user sent a request, signed with a per-start secret so that neither a
//! client nor anything else that reaches Jupyter can claim a name.
//!
//! `X-Nbgate-Identity: v1;user=<form-urlencoded>;ts=<unix seconds>;mac=<hex>`,
//! mac = HMAC-SHA256(secret, `v1;user=…;ts=…` "\n" method "\n" target), the
//! target being what Jupyter receives (path and query). Binding the method
//! and target means a header that leaks to an app behind
//! jupyter-server-proxy (it receives every header of what is proxied to it)
//! authorises nothing but that same request; the timestamp bounds how long
//! (the provider's `max_age`). The threat model is in the Python module.
//!
//! Pure: no I/O; the proxy signs each forwarded request, `supervisor` its
//! probe, with this one function.

use http::HeaderValue;
use ring::hmac;

/// The header's name (lower case, as HTTP/2 needs it).
pub const HEADER: &str = "x-nbgate-identity";

/// The provider's Python source, written where Jupyter imports it from.
pub const PROVIDER_SOURCE: &str = include_str!("../../python/nbgate_identity.py");

/// The module name and class Jupyter is told to load.
pub const PROVIDER_MODULE: &str = "nbgate_identity";
pub const PROVIDER_CLASS: &str = "nbgate_identity.NbgateIdentityProvider";

/// The environment variable naming the 0600 file the secret is handed over in.
pub const SECRET_ENV: &str = "NBGATE_IDENTITY_SECRET_FILE";

/// The signing key made from the secret's text (as the provider reads the file).
pub fn key(secret: &str) -> hmac::Key {
    hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes())
}

/// The header value naming `user` for one request: `method` and `target`
/// exactly as Jupyter receives them, `now` in Unix seconds.
pub fn sign(key: &hmac::Key, user: &str, now: u64, method: &str, target: &str) -> HeaderValue {
    let mut value = String::with_capacity(user.len() + 112);
    value.push_str("v1;user=");
    value.extend(form_urlencoded::byte_serialize(user.as_bytes()));
    value.push_str(";ts=");
    value.push_str(&now.to_string());
    let mut ctx = hmac::Context::with_key(key);
    for part in [
        value.as_bytes(),
        &b"\n"[..],
        method.as_bytes(),
        &b"\n"[..],
        target.as_bytes(),
    ] {
        ctx.update(part);
    }
    value.push_str(";mac=");
    value.push_str(&hex::encode(ctx.sign().as_ref()));
    let mut v = HeaderValue::from_str(&value).expect("url-encoded text, digits and hex");
    // A credential: kept out of HTTP/2 header compression tables.
    v.set_sensitive(true);
    v
}

/// Now in Unix seconds (0 before 1970: such a header never verifies).
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_header_carries_the_encoded_user_the_time_and_a_mac_over_method_and_target() {
        let k = key("s3cret");
        let v = sign(&k, "Ann Lee/ü", 1_700_000_000, "GET", "/api/me?x=1");
        let v = v.to_str().expect("ascii");
        let (signed, mac) = v.split_once(";mac=").expect("mac");
        assert_eq!(signed, "v1;user=Ann+Lee%2F%C3%BC;ts=1700000000");
        // The same computation the Python provider makes.
        let expected = hmac::sign(&k, format!("{signed}\nGET\n/api/me?x=1").as_bytes());
        assert_eq!(mac, hex::encode(expected.as_ref()));
        assert_eq!(mac.len(), 64);
    }

    #[test]
    fn another_method_target_user_or_secret_gives_another_mac() {
        let mac = |secret: &str, user: &str, method: &str, target: &str| {
            let v = sign(&key(secret), user, 1, method, target);
            v.to_str()
                .expect("ascii")
                .split_once(";mac=")
                .expect("mac")
                .1
                .to_owned()
        };
        let base = mac("k", "alice", "GET", "/api/contents");
        assert_ne!(base, mac("k", "alice", "POST", "/api/contents"));
        assert_ne!(base, mac("k", "alice", "GET", "/proxy/8080/"));
        assert_ne!(base, mac("k", "bob", "GET", "/api/contents"));
        assert_ne!(base, mac("k2", "alice", "GET", "/api/contents"));
        assert_eq!(base, mac("k", "alice", "GET", "/api/contents"));
    }

    #[test]
    fn a_user_name_cannot_inject_fields() {
        let v = sign(&key("k"), "eve;ts=1;mac=00", 5, "GET", "/");
        let v = v.to_str().expect("ascii");
        assert!(
            v.starts_with("v1;user=eve%3Bts%3D1%3Bmac%3D00;ts=5;mac="),
            "{v}"
        );
    }
}
