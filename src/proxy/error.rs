//! The one place where a refusal or failure on the request path becomes what
//! the client sees: a status code, and a short fixed body — an HTML page for
//! a browser, JSON for an API client. Details go to the log, never the client.
//!
//! Every refusal is a `ProxyError`: login required, a bad API token, a
//! lockout, busy verification slots, rate limits, the allowlist, not found,
//! a bad form. The one exception is the login form's own feedback (wrong
//! password, locked out, busy, expired form on `POST /_nbgate/login`): that
//! re-renders the form with a notice, in `own_pages`, because the user is
//! mid-task on that page; so does a single sign-on provider that cannot be
//! reached (the login page, with the password form when it is on).

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Response, StatusCode};

use super::body::{empty, full, ProxyBody};
use crate::pages;

/// Everything that can end a request before or instead of Jupyter's answer.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("missing or invalid Host header")]
    BadHost,
    #[error("cross-origin request refused")]
    CrossOrigin,
    #[error(transparent)]
    Upstream(#[from] super::upstream::UpstreamError),
    #[error("upstream connect failed")]
    UpstreamConnect(#[source] std::io::Error),
    #[error("upstream protocol error")]
    UpstreamProtocol(#[source] hyper::Error),
    /// Jupyter refuses nbgate and nbgate has no token it accepts: the user
    /// gets this page instead of Jupyter's own token page.
    #[error("no token that jupyter accepts")]
    UpstreamAuth,
    /// An HTML answer with a `Content-Encoding` while nbgate injects the
    /// token: it cannot be scrubbed, so it is not passed (fail closed).
    #[error("upstream sent a compressed page that cannot be scrubbed of the token")]
    EncodedPage,
    #[error("invalid request target")]
    BadRequestTarget,
    /// A CONNECT that is not a WebSocket over HTTP/2: nbgate is a gateway
    /// to one origin, not a forward proxy, so the tunnel target such a
    /// request names is not a resource it serves (RFC 9110 §9.3.6: an
    /// origin server need not implement CONNECT). 405 with an empty
    /// `Allow` (§10.2.1: the target allows no method); nginx answers a
    /// CONNECT with 405 too.
    #[error("CONNECT is not allowed")]
    ConnectNotAllowed,
    /// An extended CONNECT (RFC 8441 §4) for a protocol other than
    /// `websocket` (`connect-udp`, WebTransport …): 501, as RFC 9220 §3
    /// says a server answers a `:protocol` it does not support.
    #[error("extended CONNECT for an unsupported protocol")]
    UnsupportedProtocol,
    /// Jupyter answered an HTTP/2 client's WebSocket with a 2xx that is not
    /// a 101 (a page asked for as a WebSocket). An HTTP/1.1 client gets
    /// Jupyter's answer, and no 101 tells it there is no WebSocket; an
    /// HTTP/2 client would take any 2xx to its CONNECT for an open one
    /// (RFC 8441 §5), so it must not see this answer. A client can cause
    /// it at will, so it is logged at debug as any refusal.
    #[error("jupyter answered a websocket request without accepting it")]
    NotAWebSocket,
    #[error("not found")]
    NotFound,
    #[error("client address not allowed")]
    Forbidden,
    #[error("rate limited for {0} s")]
    RateLimited(u64),
    /// No session and no API token. `login` is the login page (with
    /// `next`) for a browser navigation, which is sent there with a 303;
    /// API calls, XHR and WebSocket upgrades get a 401 (a WebSocket cannot
    /// follow a redirect). A `String`, not a `HeaderValue`: it keeps this
    /// enum, which every request's future holds, small.
    #[error("login required")]
    LoginRequired { login: Option<String> },
    #[error("invalid API token")]
    InvalidToken,
    /// The address (or name) failed too often; seconds until it may retry.
    #[error("locked out for {0} s")]
    LockedOut(u64),
    /// Every password-hashing slot is taken, or this address's earlier
    /// attempt is still being verified: retry in a second.
    #[error("authentication attempts busy")]
    Busy,
    #[error("form too large")]
    FormTooLarge,
    /// A form whose CSRF token does not match its session (an old tab).
    #[error("form expired")]
    FormExpired,
    /// The sessions page was asked to end a session that is not one of
    /// the asking user's active sessions (ended already, or another
    /// user's: the answer is the same, and nothing is ended).
    #[error("no such session of this user")]
    SessionNotFound,
    /// The sessions page was asked for with an API token and no login
    /// session: it lists and ends browser sessions, which a token has none
    /// of (and a token must not end the sessions of a person's browser).
    #[error("the sessions page needs a login session")]
    LoginSessionRequired,
    /// passkeys (issue 22 §2): a refused passkey request; the script on
    /// the page shows the code's sentence in the page's language.
    #[error(transparent)]
    Passkey(#[from] crate::auth::passkey::PasskeyError),
    /// totp: a user's second-factor state cannot be read or written (a
    /// corrupt or unreadable file in the state directory): the login is
    /// refused rather than let through on the password alone.
    #[error("second-factor state unavailable")]
    SecondFactorState,
    // oidc: refused single sign-on callbacks, and the password form when off.
    /// The callback is not the end of a sign-in this browser started: no
    /// flow cookie, a tampered or expired one, another `state`, a replay.
    #[error("single sign-on state missing, expired, replayed or mismatched")]
    OidcState,
    /// The provider answered the sign-in with `error=` (cancelled, refused).
    #[error("the single sign-on provider returned an error")]
    OidcProviderError,
    /// The code or the ID token failed a check (wrong audience, expired,
    /// bad signature, nonce, issuer), or the provider was removed.
    #[error("single sign-on failed verification")]
    OidcFailed,
    /// A verified person the provider's allow lists do not admit.
    #[error("single sign-on user not allowed")]
    OidcNotAllowed,
    /// `auth.password = false`: the password form is off.
    #[error("password login is off")]
    PasswordLoginOff,
}

impl ProxyError {
    /// Whether the error is the upstream's (or nbgate's) fault, logged as a
    /// warning; everything else a client can cause at will and is logged at
    /// debug, so no client can flood the log.
    pub fn is_upstream_failure(&self) -> bool {
        match self {
            ProxyError::Upstream(e) => !e.is_client_abort(),
            ProxyError::UpstreamConnect(_)
            | ProxyError::UpstreamProtocol(_)
            | ProxyError::EncodedPage => true,
            _ => false,
        }
    }

    /// Status, stable machine-readable code and an English sentence.
    pub fn parts(&self) -> (StatusCode, &'static str, &'static str) {
        match self {
            ProxyError::BadHost => (
                StatusCode::BAD_REQUEST,
                "bad_host",
                "The request has no valid Host header.",
            ),
            ProxyError::CrossOrigin => (
                StatusCode::FORBIDDEN,
                "cross_origin",
                "Cross-origin request refused.",
            ),
            ProxyError::Upstream(e) if e.is_timeout() => (
                StatusCode::GATEWAY_TIMEOUT,
                "upstream_timeout",
                "Jupyter did not answer in time.",
            ),
            ProxyError::Upstream(e) if e.is_client_abort() => (
                StatusCode::BAD_REQUEST,
                "client_aborted",
                "The request body ended before it was complete.",
            ),
            ProxyError::Upstream(_)
            | ProxyError::UpstreamConnect(_)
            | ProxyError::UpstreamProtocol(_) => (
                StatusCode::BAD_GATEWAY,
                "upstream_unavailable",
                "Jupyter is not reachable right now. Try again in a moment.",
            ),
            ProxyError::UpstreamAuth => (
                StatusCode::BAD_GATEWAY,
                "upstream_auth",
                "nbgate cannot log in to Jupyter: it has no token Jupyter accepts. The \
                 administrator can set upstream.token_file in nbgate's configuration, or start \
                 Jupyter with `nbgate run -- jupyter lab`; nbgate's log says more.",
            ),
            ProxyError::EncodedPage => (
                StatusCode::BAD_GATEWAY,
                "upstream_bad_response",
                "Jupyter sent a response nbgate cannot pass on.",
            ),
            ProxyError::BadRequestTarget => (
                StatusCode::BAD_REQUEST,
                "bad_request",
                "The request target is invalid.",
            ),
            ProxyError::ConnectNotAllowed => (
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "This server is not a proxy: CONNECT is not allowed.",
            ),
            ProxyError::UnsupportedProtocol => (
                StatusCode::NOT_IMPLEMENTED,
                "protocol_not_supported",
                "Only WebSockets can be opened with an extended CONNECT.",
            ),
            ProxyError::NotAWebSocket => (
                StatusCode::BAD_GATEWAY,
                "not_a_websocket",
                "Jupyter has no WebSocket at this address.",
            ),
            ProxyError::NotFound => (StatusCode::NOT_FOUND, "not_found", "Not found."),
            ProxyError::Forbidden => (
                StatusCode::FORBIDDEN,
                "forbidden",
                "Your address is not allowed to use this server.",
            ),
            ProxyError::RateLimited(_) => (
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                "Too many requests. Slow down and retry after the time given.",
            ),
            ProxyError::LoginRequired { .. } => (
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "Log in or send an API token.",
            ),
            ProxyError::InvalidToken => (
                StatusCode::UNAUTHORIZED,
                "invalid_token",
                "The API token is not valid.",
            ),
            ProxyError::LockedOut(_) => (
                StatusCode::TOO_MANY_REQUESTS,
                "locked_out",
                "Too many invalid attempts from this address; retry later.",
            ),
            ProxyError::Busy => (
                StatusCode::TOO_MANY_REQUESTS,
                "busy",
                "Too many authentication attempts; retry shortly.",
            ),
            ProxyError::FormTooLarge => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "form_too_large",
                "The form is too large.",
            ),
            ProxyError::FormExpired => (
                StatusCode::FORBIDDEN,
                "csrf",
                "The form expired; reload the page and try again.",
            ),
            ProxyError::SessionNotFound => (
                StatusCode::NOT_FOUND,
                "session_not_found",
                "No such active session of yours; it may have ended already.",
            ),
            ProxyError::LoginSessionRequired => (
                StatusCode::FORBIDDEN,
                "login_session_required",
                "The sessions page needs a browser login session; an API token cannot use it.",
            ),
            ProxyError::Passkey(e) => passkey_parts(e),
            ProxyError::SecondFactorState => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "second_factor_unavailable",
                "The second factor cannot be checked right now; nbgate's log says why.",
            ),
            ProxyError::OidcState => (
                StatusCode::BAD_REQUEST,
                "oidc_state",
                "This sign-in was already used, expired, or started in another browser; sign in again.",
            ),
            ProxyError::OidcProviderError => (
                StatusCode::FORBIDDEN,
                "oidc_provider_error",
                "The sign-in provider did not sign you in.",
            ),
            ProxyError::OidcFailed => (
                StatusCode::FORBIDDEN,
                "oidc_failed",
                "The sign-in provider's answer could not be verified.",
            ),
            ProxyError::OidcNotAllowed => (
                StatusCode::FORBIDDEN,
                "oidc_not_allowed",
                "Your account is not allowed to use this server.",
            ),
            ProxyError::PasswordLoginOff => (
                StatusCode::FORBIDDEN,
                "password_login_off",
                "Password login is off on this server; use single sign-on.",
            ),
        }
    }

    /// Seconds a client should wait before retrying (`Retry-After`).
    fn retry_after(&self) -> Option<u64> {
        match self {
            ProxyError::RateLimited(secs) | ProxyError::LockedOut(secs) => Some(*secs),
            ProxyError::Busy => Some(1),
            _ => None,
        }
    }

    /// Renders the error for this request's client.
    pub fn into_response(self, req_headers: &HeaderMap) -> Response<ProxyBody> {
        if let ProxyError::LoginRequired { login: Some(login) } = &self {
            let mut r = Response::new(empty());
            *r.status_mut() = StatusCode::SEE_OTHER;
            if let Ok(v) = HeaderValue::from_str(login) {
                r.headers_mut().insert(header::LOCATION, v);
            }
            r.headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            return r;
        }
        let (status, code, message) = self.parts();
        let mut r = error_response(req_headers, status, code, message, self.retry_after());
        // RFC 6750 §3: a 401 names the scheme that would have worked, and
        // says when the credential presented was the problem.
        let challenge = match self {
            ProxyError::LoginRequired { .. } => Some("Bearer realm=\"nbgate\""),
            ProxyError::InvalidToken => Some("Bearer realm=\"nbgate\", error=\"invalid_token\""),
            _ => None,
        };
        if let Some(c) = challenge {
            r.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(c));
        }
        if status == StatusCode::METHOD_NOT_ALLOWED {
            // RFC 9110 §15.5.6: a 405 names the methods the target allows.
            r.headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static(""));
        }
        r
    }
}

// ---- passkeys (issue 22 §2) ----

/// Status, code and sentence of a passkey refusal. A wrong passkey reads
/// the same whether it is nobody's or its signature failed, as a wrong
/// password does: both are 401s, with their own codes for the log reader.
fn passkey_parts(
    e: &crate::auth::passkey::PasskeyError,
) -> (StatusCode, &'static str, &'static str) {
    use crate::auth::passkey::PasskeyError as P;
    match e {
        P::Off => (
            StatusCode::NOT_FOUND,
            "passkeys_off",
            "Passkeys are not enabled on this server.",
        ),
        P::WrongHost { .. } => (
            StatusCode::BAD_REQUEST,
            "passkey_wrong_host",
            "Passkeys are registered for another host name than the one this page was opened by.",
        ),
        P::BadRequest(_) => (
            StatusCode::BAD_REQUEST,
            "passkey_bad_request",
            "The passkey request is not valid JSON of the expected shape.",
        ),
        P::Expired => (
            StatusCode::BAD_REQUEST,
            "passkey_expired",
            "The passkey ceremony expired, was already used, or was never started.",
        ),
        P::WrongOrigin(_) => (
            StatusCode::BAD_REQUEST,
            "passkey_wrong_origin",
            "The browser signed for an origin that is not allowed for passkeys.",
        ),
        P::Unknown => (
            StatusCode::UNAUTHORIZED,
            "passkey_unknown",
            "This passkey is not registered.",
        ),
        P::Rejected(_) => (
            StatusCode::UNAUTHORIZED,
            "passkey_rejected",
            "The passkey could not be verified.",
        ),
        P::NotUserVerified => (
            StatusCode::UNAUTHORIZED,
            "passkey_user_not_verified",
            "The authenticator did not verify the user.",
        ),
        P::BadName => (
            StatusCode::BAD_REQUEST,
            "passkey_bad_name",
            "A passkey name has 1 to 64 characters.",
        ),
        P::TooMany => (
            StatusCode::CONFLICT,
            "passkey_too_many",
            "The most passkeys a user may have are registered.",
        ),
        P::NotFound => (
            StatusCode::NOT_FOUND,
            "passkey_not_found",
            "No such passkey of yours; it may have been removed already.",
        ),
        P::Storage(_) | P::Read { .. } | P::Corrupt { .. } | P::Start(_) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            "passkey_storage",
            "nbgate could not read or store passkeys; its log says more.",
        ),
    }
}

/// Does this request come from a browser navigation that wants a page?
pub fn wants_html(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("text/html"))
}

/// Builds an error response: HTML for browsers, JSON otherwise.
fn error_response(
    req_headers: &HeaderMap,
    status: StatusCode,
    code: &str,
    message: &str,
    retry_after: Option<u64>,
) -> Response<ProxyBody> {
    let (ctype, body) = if wants_html(req_headers) {
        let lang = pages::negotiate_lang(
            req_headers
                .get(header::ACCEPT_LANGUAGE)
                .and_then(|v| v.to_str().ok()),
        );
        (
            "text/html; charset=utf-8",
            pages::render_error_page(status, code, lang, retry_after),
        )
    } else {
        (
            "application/json",
            pages::error_json(status, code, message, retry_after),
        )
    };
    let mut resp = Response::new(full(Bytes::from(body)));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(ctype));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if ctype.starts_with("text/html") {
        h.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(pages::page_csp()),
        );
    }
    if let Some(s) = retry_after {
        h.insert(header::RETRY_AFTER, HeaderValue::from(s));
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api() -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::ACCEPT, HeaderValue::from_static("application/json"));
        h
    }

    fn header(r: &Response<ProxyBody>, name: header::HeaderName) -> Option<&str> {
        r.headers().get(name).and_then(|v| v.to_str().ok())
    }

    #[test]
    fn a_browser_navigation_without_login_is_sent_to_the_login_page() {
        let login = Some("/_nbgate/login?next=%2Flab".to_owned());
        let r = ProxyError::LoginRequired { login }.into_response(&HeaderMap::new());
        assert_eq!(r.status(), StatusCode::SEE_OTHER);
        assert_eq!(
            header(&r, header::LOCATION),
            Some("/_nbgate/login?next=%2Flab")
        );
        assert_eq!(header(&r, header::CACHE_CONTROL), Some("no-store"));
    }

    #[test]
    fn api_clients_get_401_with_the_scheme_that_would_work() {
        let r = ProxyError::LoginRequired { login: None }.into_response(&api());
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(
            header(&r, header::WWW_AUTHENTICATE),
            Some("Bearer realm=\"nbgate\"")
        );
        assert_eq!(header(&r, header::CONTENT_TYPE), Some("application/json"));
        let r = ProxyError::InvalidToken.into_response(&api());
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(
            header(&r, header::WWW_AUTHENTICATE),
            Some("Bearer realm=\"nbgate\", error=\"invalid_token\"")
        );
    }

    #[test]
    fn waits_are_announced_in_retry_after() {
        for (e, secs) in [
            (ProxyError::LockedOut(90), "90"),
            (ProxyError::RateLimited(3), "3"),
            (ProxyError::Busy, "1"),
        ] {
            let r = e.into_response(&api());
            assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
            assert_eq!(header(&r, header::RETRY_AFTER), Some(secs));
        }
        let r = ProxyError::NotFound.into_response(&api());
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
        assert!(r.headers().get(header::RETRY_AFTER).is_none());
    }
}
