//! Passkey routes of nbgate's own pages (issue 22 §2): the passkeys page
//! (`GET passkeys`: list and add; `POST passkeys`: remove, a plain form)
//! and the JSON endpoints the page script drives:
//! `passkey/login/{start,finish}` and `passkey/register/{start,finish}`.
//!
//! CSRF: every JSON request carries a token in `X-Nbgate-Csrf` (a custom
//! header, so no other site can send one without a CORS preflight that
//! nbgate never answers), bound to the login CSRF cookie before login and
//! to the session id after. The login's ceremony is also bound to that
//! cookie, the registration's to the user and session.
//!
//! A passkey assertion that fails counts toward the lockout exactly as a
//! wrong password does (`Guard.lockout`), and a passkey login (always
//! user-verified) starts the session itself: it is both factors.
//!
//! The credential files are small and read and written in place, as
//! logout's revocations are.

use std::net::IpAddr;
use std::time::Instant;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;

use super::{
    cookie, full, lang, locked_secs, query_param, said_by, see_other, set_cookie, user_agent,
    Pages, ProxyBody, ProxyError, RequestBody,
};
use crate::auth::active::Sighting;
use crate::auth::passkey::{self, LoginFinish, PasskeyError, RegisterFinish, RegisterStart};
use crate::auth::session::{self, short_id as short};
use crate::auth::{csrf, next_path};
use crate::pages::passkey::{render_passkeys, PasskeyRow, PasskeysNotice, PasskeysView};
use crate::policy::Refused;

/// Largest JSON body accepted: an attestation with its certificate chain
/// is a few KiB.
const MAX_JSON: usize = 64 * 1024;

/// The header the script sends the CSRF token in.
const CSRF_HEADER: &str = "x-nbgate-csrf";

/// A JSON answer for the script.
fn json(status: StatusCode, value: &serde_json::Value) -> Response<ProxyBody> {
    let mut r = Response::new(full(Bytes::from(value.to_string())));
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

async fn read_json(req: Request<RequestBody>) -> Result<(HeaderMap, Bytes), ProxyError> {
    let (parts, body) = req.into_parts();
    let bytes = http_body_util::Limited::new(body, MAX_JSON)
        .collect()
        .await
        .map_err(|_| ProxyError::FormTooLarge)?
        .to_bytes();
    Ok((parts.headers, bytes))
}

fn csrf_header(headers: &HeaderMap) -> &str {
    headers
        .get(CSRF_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

/// The credential id as logs name it: a prefix, enough to tell a user's
/// passkeys apart (the id is public, not a secret).
fn short_credential(id: &str) -> &str {
    id.get(..12).unwrap_or(id)
}

impl Pages<'_> {
    fn passkeys_href(&self) -> String {
        format!("{}passkeys", self.prefix)
    }

    /// `POST passkey/...`: the ceremony endpoints.
    pub(super) async fn passkey_api(
        &self,
        req: Request<RequestBody>,
        rest: &str,
        client: IpAddr,
    ) -> Result<Response<ProxyBody>, ProxyError> {
        match rest {
            "passkey/login/start" => self.passkey_login_start(req, client).await,
            "passkey/login/finish" => self.passkey_login_finish(req, client).await,
            "passkey/register/start" => self.passkey_register_start(req, client).await,
            "passkey/register/finish" => self.passkey_register_finish(req, client).await,
            _ => Err(ProxyError::NotFound),
        }
    }

    /// The login CSRF binding, once the header's token matches it.
    fn passkey_login_binding(
        &self,
        headers: &HeaderMap,
        client: IpAddr,
    ) -> Result<String, ProxyError> {
        let binding = cookie(headers, csrf::CSRF_COOKIE).unwrap_or("");
        if !csrf::verify(self.auth.csrf_key(), binding, csrf_header(headers)) {
            tracing::info!(target: "nbgate::audit", event = "login_csrf_failed", method = "passkey", %client, "passkey login refused: bad CSRF token");
            crate::metrics::login(crate::metrics::Login::CsrfFailed);
            return Err(ProxyError::FormExpired);
        }
        Ok(binding.to_owned())
    }

    /// `passkey/login/start`: a challenge for any passkey of this site.
    async fn passkey_login_start(
        &self,
        req: Request<RequestBody>,
        client: IpAddr,
    ) -> Result<Response<ProxyBody>, ProxyError> {
        let (headers, _) = read_json(req).await?;
        let binding = self.passkey_login_binding(&headers, client)?;
        let started = self
            .passkeys
            .check_host(self.host)
            .and_then(|()| self.passkeys.start_login(&binding, Instant::now()));
        let (ceremony, options) = started.inspect_err(|e| login_failure(None, client, e))?;
        Ok(json(
            StatusCode::OK,
            &serde_json::json!({ "ceremony": ceremony, "publicKey": options.public_key }),
        ))
    }

    /// `passkey/login/finish`: verifies the assertion; on success the
    /// session cookie and `{"next": …}` for the script to go to.
    async fn passkey_login_finish(
        &self,
        req: Request<RequestBody>,
        client: IpAddr,
    ) -> Result<Response<ProxyBody>, ProxyError> {
        let (headers, body) = read_json(req).await?;
        let binding = self.passkey_login_binding(&headers, client)?;
        let users = self.auth.users();
        let identified = self.passkeys.check_host(self.host).and_then(|()| {
            let answer: LoginFinish = passkey::parse(&body)?;
            let found = self
                .passkeys
                .identify_login(&answer, &binding, Instant::now(), |u| {
                    users.get(u).is_some()
                })?;
            Ok((answer, found))
        });
        let (answer, candidate) = identified.inspect_err(|e| login_failure(None, client, e))?;
        let user = candidate.user.clone();
        // Asked before the signature is checked, as for a password: a
        // locked-out address or name gets no verification at all.
        let attempt = match self
            .guard
            .lockout
            .begin(client, user.as_deref(), Instant::now())
        {
            Ok(attempt) => attempt,
            Err(Refused::Locked(locked)) => {
                let secs = locked_secs(&locked);
                tracing::info!(target: "nbgate::audit", event = "login_locked", method = "passkey", user = user.as_deref().unwrap_or(""), %client, scope = ?locked.scope, retry_after = secs, "passkey login refused: locked out");
                crate::metrics::login(crate::metrics::Login::Locked);
                self.guard.hold_refusal().await;
                return Err(ProxyError::LockedOut(secs));
            }
            Err(Refused::InFlight) => {
                tracing::info!(target: "nbgate::audit", event = "login_busy", method = "passkey", user = user.as_deref().unwrap_or(""), %client, reason = "in_flight", "passkey login refused: earlier attempts still being verified");
                crate::metrics::login(crate::metrics::Login::Busy);
                self.guard.hold_refusal().await;
                return Err(ProxyError::Busy);
            }
        };
        match self
            .passkeys
            .finish_login(candidate, &answer.credential, session::unix_now())
        {
            Ok(done) => {
                // The completed login, and only it, clears the counters.
                attempt.succeeded(&done.user, Instant::now());
                let seen = Sighting {
                    client,
                    user_agent: user_agent(&headers),
                };
                let (claims, set) = self.auth.start_session(&done.user, seen);
                tracing::info!(target: "nbgate::audit", event = "login_success", method = "passkey", user = %done.user, %client, user_agent = user_agent(&headers).unwrap_or(""), passkey = %done.name, user_verified = done.user_verified, session = %short(&claims.sid), "login");
                crate::metrics::login(crate::metrics::Login::Success);
                let next = next_path::sanitize_next(answer.next.as_deref(), self.base_url);
                let mut r = json(StatusCode::OK, &serde_json::json!({ "next": next }));
                set_cookie(&mut r, &set);
                Ok(said_by(r, claims))
            }
            Err(e) => {
                login_failure(user.as_deref(), client, &e);
                if !e.counts_as_failure() {
                    drop(attempt);
                    return Err(e.into());
                }
                crate::metrics::login(crate::metrics::Login::Failure);
                if let Some(locked) = attempt.failed(user.as_deref(), Instant::now()) {
                    let secs = locked_secs(&locked);
                    tracing::warn!(target: "nbgate::audit", event = "lockout", method = "passkey", user = user.as_deref().unwrap_or(""), %client, scope = ?locked.scope, retry_after = secs, "too many failed logins: locked out");
                    crate::metrics::lockout();
                    return Err(ProxyError::LockedOut(secs));
                }
                Err(e.into())
            }
        }
    }

    /// The logged-in session of a passkeys request, once its CSRF token
    /// (header or form field `token`) matches the session id.
    fn passkey_session(
        &self,
        headers: &HeaderMap,
        query: Option<&str>,
        client: IpAddr,
        token: &str,
    ) -> Result<session::Claims, ProxyError> {
        let claims = self.login_session(headers, query, client, &self.passkeys_href())?;
        if !csrf::verify(self.auth.csrf_key(), &claims.sid, token) {
            tracing::info!(target: "nbgate::audit", event = "passkeys_csrf_failed", user = %claims.u, %client, session = %short(&claims.sid), "passkeys request refused: bad CSRF token");
            return Err(ProxyError::FormExpired);
        }
        Ok(claims)
    }

    /// The body and logged-in session of a registration request, its CSRF
    /// header checked.
    async fn passkey_registration_request(
        &self,
        req: Request<RequestBody>,
        client: IpAddr,
    ) -> Result<(Bytes, session::Claims), ProxyError> {
        let (headers, body) = read_json(req).await?;
        let claims = self.passkey_session(&headers, None, client, csrf_header(&headers))?;
        Ok((body, claims))
    }

    /// `passkey/register/start`: `{"name": …}` → a creation challenge.
    async fn passkey_register_start(
        &self,
        req: Request<RequestBody>,
        client: IpAddr,
    ) -> Result<Response<ProxyBody>, ProxyError> {
        let (body, claims) = self.passkey_registration_request(req, client).await?;
        let started = self.passkeys.check_host(self.host).and_then(|()| {
            let start: RegisterStart = passkey::parse(&body)?;
            self.passkeys
                .start_registration(&claims.u, &claims.sid, &start.name, Instant::now())
        });
        let (ceremony, options) =
            started.inspect_err(|e| registration_failure(&claims.u, client, e))?;
        let r = json(
            StatusCode::OK,
            &serde_json::json!({ "ceremony": ceremony, "publicKey": options["publicKey"] }),
        );
        Ok(said_by(r, claims))
    }

    /// `passkey/register/finish`: stores the new passkey.
    async fn passkey_register_finish(
        &self,
        req: Request<RequestBody>,
        client: IpAddr,
    ) -> Result<Response<ProxyBody>, ProxyError> {
        let (body, claims) = self.passkey_registration_request(req, client).await?;
        let done = self.passkeys.check_host(self.host).and_then(|()| {
            let answer: RegisterFinish = passkey::parse(&body)?;
            self.passkeys.finish_registration(
                &answer,
                &claims.u,
                &claims.sid,
                Instant::now(),
                session::unix_now(),
            )
        });
        let done = done.inspect_err(|e| registration_failure(&claims.u, client, e))?;
        tracing::info!(target: "nbgate::audit", event = "passkey_registered", user = %claims.u, %client, session = %short(&claims.sid), passkey = %done.name, credential = %short_credential(&done.id), "passkey registered");
        let next = format!("{}?added=1", self.passkeys_href());
        let r = json(StatusCode::OK, &serde_json::json!({ "next": next }));
        Ok(said_by(r, claims))
    }

    /// `GET passkeys`: the user's passkeys and the add form.
    pub(super) fn passkeys_page(
        &self,
        req: &Request<RequestBody>,
        client: IpAddr,
    ) -> Result<Response<ProxyBody>, ProxyError> {
        let headers = req.headers();
        let query = req.uri().query();
        let claims = self.login_session(headers, query, client, &self.passkeys_href())?;
        let rows: Vec<PasskeyRow> = self
            .passkeys
            .store
            .list(&claims.u)
            .inspect_err(|e| tracing::warn!(error = %e, user = %claims.u, "cannot list passkeys"))?
            .into_iter()
            .map(|p| PasskeyRow {
                id: p.id(),
                name: p.name,
                created: p.created,
                last_used: p.last_used,
            })
            .collect();
        let notice = match query_param(query, "added").as_deref() {
            Some(_) => Some(PasskeysNotice::Added),
            None => query_param(query, "removed").map(|_| PasskeysNotice::Removed),
        };
        let token = csrf::token(self.auth.csrf_key(), &claims.sid);
        let view = PasskeysView {
            lang: lang(headers),
            user: &claims.u,
            rows: &rows,
            prefix: self.prefix,
            csrf_token: &token,
            rp_id: self.passkeys.rp_id(),
            notice,
        };
        let r = super::html(StatusCode::OK, render_passkeys(&view));
        Ok(said_by(r, claims))
    }

    /// `POST passkeys`: removes the passkey named by `remove` (its
    /// credential id), then back to the list (303). Only the poster's own
    /// passkeys can be named (the store is asked for this user's file).
    pub(super) async fn passkeys_submit(
        &self,
        req: Request<RequestBody>,
        client: IpAddr,
    ) -> Result<Response<ProxyBody>, ProxyError> {
        let query = req.uri().query().map(str::to_owned);
        let (headers, form) = Self::read_form(req).await.ok_or(ProxyError::FormTooLarge)?;
        let field = |n: &str| {
            form.iter()
                .find(|(k, _)| k == n)
                .map_or("", |(_, v)| v.as_str())
        };
        let claims = self.passkey_session(&headers, query.as_deref(), client, field("csrf"))?;
        match self.passkeys.store.remove(&claims.u, field("remove")) {
            Ok(gone) => {
                tracing::info!(target: "nbgate::audit", event = "passkey_removed", user = %claims.u, %client, session = %short(&claims.sid), passkey = %gone.name, credential = %short_credential(&gone.id()), "passkey removed");
                let r = see_other(&format!("{}?removed=1", self.passkeys_href()));
                Ok(said_by(r, claims))
            }
            Err(e) => {
                tracing::info!(target: "nbgate::audit", event = "passkey_remove_refused", user = %claims.u, %client, reason = e.reason(), "passkey not removed");
                Err(e.into())
            }
        }
    }
}

/// The audit line of a refused passkey login. `user`: whose passkey it
/// claimed to be, when known.
fn login_failure(user: Option<&str>, client: IpAddr, e: &PasskeyError) {
    if e.is_ours() {
        tracing::warn!(error = %e, "passkey login failed on nbgate's side");
    }
    tracing::info!(target: "nbgate::audit", event = "passkey_login_failure", user = user.unwrap_or(""), %client, reason = e.reason(), "passkey login failed");
}

fn registration_failure(user: &str, client: IpAddr, e: &PasskeyError) {
    if e.is_ours() {
        tracing::warn!(error = %e, "passkey registration failed on nbgate's side");
    }
    tracing::info!(target: "nbgate::audit", event = "passkey_registration_failure", user = %user, %client, reason = e.reason(), "passkey registration failed");
}
