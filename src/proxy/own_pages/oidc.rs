//! `<prefix>oidc/<name>` (start a sign-in with a provider) and
//! `<prefix>oidc/callback` (the provider's redirect back), and the buttons
//! the login page shows. `auth::oidc` decides; this turns its decisions
//! into redirects, sessions, pages and audit lines.
//!
//! Audit: `oidc_login_started` (provider, client), `login_success` with
//! `method = "oidc"` and the provider, `oidc_login_refused` with the
//! provider (when known), `reason` and, for a person the allow lists refuse,
//! `user` (their address or subject). Never a code, token or secret.
//!
//! A refusal at the callback is a `ProxyError` page (or JSON), except a
//! provider that cannot be reached: that is the login page again with a
//! notice (503), offering the password form when it is on. Every callback
//! answer removes the flow cookie: a flow is used once.
//!
//! SSO refusals do not count toward the lockout: nothing the user typed
//! into nbgate was guessed, and a `state` or token an attacker sends fails
//! cryptographic checks, not a guessable secret; the own pages' rate limit
//! bounds them. SSO logins skip nbgate's TOTP step: the provider's own
//! second factor is the one that applies (docs/sso.md).

use std::net::IpAddr;
use std::sync::Arc;

use http::header::{HeaderMap, HeaderValue};
use http::{Response, StatusCode};

use super::{cookie, query_param, see_other, set_cookie, user_agent, Pages};
use crate::auth::active::Sighting;
use crate::auth::oidc::flow::{clear_flow_cookie, FLOW_COOKIE};
use crate::auth::oidc::{BeginError, FinishError};
use crate::auth::session::{self, short_id};
use crate::auth::{next_path, Identity, Who};
use crate::pages::oidc::{SsoButton, SsoNotice};
use crate::proxy::body::ProxyBody;
use crate::proxy::error::ProxyError;
use crate::telemetry::Chain;

impl Pages<'_> {
    /// The login page's buttons, each carrying `next` to its start URL.
    pub(super) fn sso_buttons(&self, next: &str) -> Vec<SsoButton> {
        let next: String = form_urlencoded::byte_serialize(next.as_bytes()).collect();
        self.sso
            .providers()
            .map(|p| SsoButton {
                display_name: p.display_name.to_owned(),
                href: format!("{}oidc/{}?next={next}", self.prefix, p.name),
            })
            .collect()
    }

    /// `GET oidc/<name>`: to the provider, with a fresh flow cookie.
    /// (The request's parts, not the request: a reference to the body
    /// held across an await would make this future not `Send`.)
    pub(super) async fn oidc_start(
        &self,
        headers: &HeaderMap,
        query: Option<&str>,
        name: &str,
        client: IpAddr,
    ) -> Result<Response<ProxyBody>, ProxyError> {
        let next = next_path::sanitize_next(query_param(query, "next").as_deref(), self.base_url);
        // The provider compares it with the registered redirect URI; a
        // forged Host only breaks the forger's own sign-in.
        let redirect_uri = format!("https://{}{}oidc/callback", self.host, self.prefix);
        match self
            .sso
            .begin(name, &redirect_uri, &next, session::unix_now())
            .await
        {
            Ok((location, flow)) => {
                tracing::info!(target: "nbgate::audit", event = "oidc_login_started", provider = %name, %client, "single sign-on started");
                let mut r = see_other(&location);
                set_cookie(&mut r, &flow);
                Ok(r)
            }
            Err(BeginError::UnknownProvider) => Err(ProxyError::NotFound),
            Err(BeginError::Unavailable { provider, source }) => {
                tracing::warn!(provider = %provider, error = %Chain(&source), "oidc: provider unavailable");
                tracing::info!(target: "nbgate::audit", event = "oidc_login_refused", provider = %provider, %client, reason = "provider_unavailable", "single sign-on refused");
                Ok(self.sso_unavailable_page(headers, &next, &provider))
            }
        }
    }

    /// `GET oidc/callback`: the provider's answer; a session, or a refusal.
    pub(super) async fn oidc_callback(
        &self,
        headers: &HeaderMap,
        query: Option<&str>,
        client: IpAddr,
    ) -> Result<Response<ProxyBody>, ProxyError> {
        let agent = user_agent(headers).unwrap_or("");
        let outcome = self
            .sso
            .finish(
                query.unwrap_or(""),
                cookie(headers, FLOW_COOKIE),
                session::unix_now(),
            )
            .await;
        let mut r = match outcome {
            Ok(signed) => {
                let seen = Sighting {
                    client,
                    user_agent: user_agent(headers),
                };
                let (claims, set) = self.auth.start_sso_session(&signed.user, &signed.tag, seen);
                tracing::info!(target: "nbgate::audit", event = "login_success", method = "oidc", provider = %signed.provider, user = %signed.user, %client, user_agent = agent, session = %short_id(&claims.sid), "login");
                crate::metrics::login(crate::metrics::Login::Success);
                let mut r = see_other(&next_path::sanitize_next(Some(&signed.next), self.base_url));
                set_cookie(&mut r, &set);
                let who = Who::Known(Identity::session(Arc::new(claims), None));
                r.extensions_mut().insert(who);
                r
            }
            Err(e) => self.oidc_refused(headers, e, client),
        };
        set_cookie(&mut r, &clear_flow_cookie());
        Ok(r)
    }

    /// The answer to a refused callback, with its audit line.
    fn oidc_refused(
        &self,
        headers: &HeaderMap,
        e: FinishError,
        client: IpAddr,
    ) -> Response<ProxyBody> {
        let provider = e.provider().unwrap_or("");
        let reason = e.reason();
        let error = match &e {
            FinishError::ProviderError { error, .. } => error.as_str(),
            _ => "",
        };
        match &e {
            FinishError::NotAdmitted { who, .. } => {
                let who = log_safe_who(who);
                tracing::info!(target: "nbgate::audit", event = "oidc_login_refused", provider, user = %who, %client, reason, "single sign-on refused: not on the allow lists");
            }
            FinishError::Unavailable { source, .. } => {
                tracing::warn!(provider, error = %Chain(source), "oidc: provider unavailable");
                tracing::info!(target: "nbgate::audit", event = "oidc_login_refused", provider, %client, reason, "single sign-on refused");
            }
            _ => {
                tracing::info!(target: "nbgate::audit", event = "oidc_login_refused", provider, %client, reason, provider_error = error, "single sign-on refused");
            }
        }
        crate::metrics::login(crate::metrics::Login::Failure);
        let refusal = match e {
            FinishError::State { .. } => ProxyError::OidcState,
            FinishError::ProviderError { .. } => ProxyError::OidcProviderError,
            FinishError::NotAdmitted { who, .. } => {
                let mut r = ProxyError::OidcNotAllowed.into_response(headers);
                r.extensions_mut()
                    .insert(Who::Tried(log_safe_who(&who).to_owned()));
                return r;
            }
            FinishError::Unavailable { provider, .. } => {
                // The flow's `next` is gone with the cookie: back to `/`.
                let next = next_path::sanitize_next(None, self.base_url);
                return self.sso_unavailable_page(headers, &next, &provider);
            }
            FinishError::UnknownProvider { .. }
            | FinishError::CodeRejected { .. }
            | FinishError::Token { .. } => ProxyError::OidcFailed,
        };
        refusal.into_response(headers)
    }

    /// 503: the login page saying the provider did not answer, with the
    /// password form when it is on and every provider's button.
    fn sso_unavailable_page(
        &self,
        headers: &HeaderMap,
        next: &str,
        provider: &str,
    ) -> Response<ProxyBody> {
        let display_name = self.sso.display_name(provider).unwrap_or(provider);
        let notice = SsoNotice::Unavailable { display_name };
        let mut r = self.login_page_with(
            headers,
            next,
            "",
            None,
            Some(notice),
            StatusCode::SERVICE_UNAVAILABLE,
        );
        r.headers_mut()
            .insert(http::header::RETRY_AFTER, HeaderValue::from(5u32));
        r
    }
}

/// The refused person's address (or subject) as a log field: a provider's
/// claim, verified but not checked for shape, so anything but visible ASCII
/// without quotes (a newline would forge a log line), or over 128 bytes, is
/// logged as empty.
fn log_safe_who(who: &str) -> &str {
    let printable = who.bytes().all(|b| b.is_ascii_graphic() && b != b'"');
    if printable && who.len() <= 128 {
        who
    } else {
        ""
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_refused_persons_name_is_logged_only_when_it_cannot_forge_a_line() {
        assert_eq!(
            super::log_safe_who("mallory@evil.test"),
            "mallory@evil.test"
        );
        assert_eq!(super::log_safe_who("a\nevent=\"login_success\""), "");
        assert_eq!(super::log_safe_who("a b"), "");
        assert_eq!(super::log_safe_who(&"a".repeat(129)), "");
    }
}
