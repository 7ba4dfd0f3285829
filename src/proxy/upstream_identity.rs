//! Who Jupyter is told sent a request: with `nbgate run`, each forwarded
//! request and WebSocket upgrade carries the user in the signed header of
//! `jupyter::identity`, and no longer Jupyter's master token, once Jupyter
//! has shown that it verifies the header (`IdentityKey::confirmed`).
//!
//! Any copy of the header a client sent is removed whatever the mode: only
//! nbgate names users to Jupyter.

use http::header::{self, HeaderMap, HeaderName};
use http::Method;
use ring::hmac;

use crate::config::{IdentityKey, UpstreamConfig};
use crate::jupyter::identity;

/// The signing key, built once per configuration.
pub struct UpstreamIdentity {
    key: hmac::Key,
    state: IdentityKey,
}

impl UpstreamIdentity {
    pub fn new(config: &UpstreamConfig) -> Option<UpstreamIdentity> {
        config.identity.as_ref().map(|k| UpstreamIdentity {
            key: identity::key(k.secret()),
            state: k.clone(),
        })
    }
}

/// Removes any client copy of the identity header, then, when Jupyter
/// verifies it, signs `user` for this `method` and `target` (the target
/// Jupyter receives). Returns whether the request is signed: then it needs
/// no token, and any `Authorization` is removed (Jupyter authenticates it
/// by the header alone, and an app behind jupyter-server-proxy must not
/// receive a credential meant for nbgate).
pub fn present(
    headers: &mut HeaderMap,
    id: Option<&UpstreamIdentity>,
    user: &str,
    method: &Method,
    target: &str,
) -> bool {
    let name = HeaderName::from_static(identity::HEADER);
    headers.remove(&name);
    let Some(id) = id.filter(|id| id.state.confirmed()) else {
        return false;
    };
    headers.remove(header::AUTHORIZATION);
    let value = identity::sign(&id.key, user, identity::now(), method.as_str(), target);
    headers.insert(name, value);
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Secret;
    use http::HeaderValue;

    fn signer(key: &IdentityKey) -> Option<UpstreamIdentity> {
        Some(UpstreamIdentity {
            key: identity::key(key.secret()),
            state: key.clone(),
        })
    }

    #[test]
    fn a_client_copy_is_removed_and_nothing_is_signed_until_jupyter_confirms() {
        let key = IdentityKey::new(Secret::new("k".into()));
        let id = signer(&key);
        let mut h = HeaderMap::new();
        h.insert(
            "x-nbgate-identity",
            HeaderValue::from_static("v1;user=root"),
        );
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Basic eA=="),
        );
        assert!(!present(
            &mut h,
            id.as_ref(),
            "alice",
            &Method::GET,
            "/api/me"
        ));
        assert!(h.get("x-nbgate-identity").is_none());
        assert!(
            h.get(header::AUTHORIZATION).is_some(),
            "left to the token rule"
        );

        key.confirm();
        assert!(present(
            &mut h,
            id.as_ref(),
            "alice",
            &Method::GET,
            "/api/me"
        ));
        let v = h["x-nbgate-identity"].to_str().expect("ascii");
        assert!(v.starts_with("v1;user=alice;ts="), "{v}");
        assert!(h.get(header::AUTHORIZATION).is_none());
    }

    #[test]
    fn without_nbgate_run_only_the_client_copy_goes() {
        let mut h = HeaderMap::new();
        h.append("x-nbgate-identity", HeaderValue::from_static("a"));
        h.append("x-nbgate-identity", HeaderValue::from_static("b"));
        assert!(!present(&mut h, None, "alice", &Method::GET, "/"));
        assert!(h.is_empty());
    }
}
