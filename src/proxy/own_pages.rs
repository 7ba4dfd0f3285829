//! nbgate's own pages under `<base_url>_nbgate/`: login, logout, sessions
//! (a user's active sessions, ending one or all others), health; passkeys
//! and their JSON ceremony endpoints in `passkey` (issue 22 §2).
//! (a user's active sessions, ending one or all others), health; the TOTP
//! second step (`totp`), the account page (`account`) and single sign-on
//! (`oidc`: a provider's start and callback).
//! The prefix cannot clash with Jupyter, whose routes never start with
//! `_nbgate`. Turns `auth` decisions into responses; holds no state.
//! Refusals (not found, a form too large or expired) are `ProxyError`s,
//! rendered where every refusal is (`error`); the login form's feedback
//! (wrong password, locked out, busy, bad CSRF) is the form again with a
//! notice and the matching status.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::BodyExt;

use super::body::{full, ProxyBody, RequestBody};
use super::error::{self, ProxyError};
use super::guard::{locked_secs, Guard};
use super::health;
use super::upstream::Upstream;
use super::websocket::Tunnels;
use crate::auth::active::Sighting;
use crate::auth::session::{short_id as short, Verdict, SESSION_COOKIE};
use crate::auth::{csrf, next_path, session, Authenticator, Check, Identity, Who};
use crate::pages::{self, LoginView, Notice, SessionRow, SessionsNotice, SessionsView};
use crate::policy::Refused;

// passkeys (issue 22 §2): the passkeys page and the ceremony endpoints.
mod passkey;
// totp (issue 22 §1): the login's second step and the account page.
mod account;
mod totp;
// oidc: single sign-on's start and callback.
mod oidc;

/// Largest login/logout form body accepted.
const MAX_FORM: usize = 16 * 1024;

/// Reads one cookie from the request's `Cookie` headers (those that are
/// text: visible ASCII).
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(cookie_pairs)
        .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
}

/// The `name=value` pairs of one `Cookie` header, trimmed, empty ones
/// skipped. Split with `memchr`: on every request this ran as `str::split`
/// and `trim` at ~1.5k instructions (callgrind, fix 12), twice.
pub fn cookie_pairs(v: &str) -> impl Iterator<Item = &str> {
    let bytes = v.as_bytes();
    let mut start = 0;
    let ends = memchr::memchr_iter(b';', bytes).chain(std::iter::once(bytes.len()));
    ends.filter_map(move |end| {
        // `;` is ASCII: both ends are character boundaries.
        let kv = v[start..end].trim_ascii();
        start = end + 1;
        (!kv.is_empty()).then_some(kv)
    })
}

fn lang(headers: &HeaderMap) -> pages::Lang {
    pages::negotiate_lang(
        headers
            .get(header::ACCEPT_LANGUAGE)
            .and_then(|v| v.to_str().ok()),
    )
}

fn user_agent(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
}

fn html(status: StatusCode, body: String) -> Response<ProxyBody> {
    let mut r = Response::new(full(Bytes::from(body)));
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(pages::page_csp()),
    );
    h.insert("x-frame-options", HeaderValue::from_static("DENY"));
    r
}

fn set_cookie(r: &mut Response<ProxyBody>, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        r.headers_mut().append(header::SET_COOKIE, v);
    }
}

fn see_other(location: &str) -> Response<ProxyBody> {
    let mut r = Response::new(full(Bytes::new()));
    *r.status_mut() = StatusCode::SEE_OTHER;
    if let Ok(v) = HeaderValue::from_str(location) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

fn query_param(query: Option<&str>, name: &str) -> Option<String> {
    form_urlencoded::parse(query?.as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

/// Context the pages need.
pub struct Pages<'a> {
    pub auth: &'a Authenticator,
    pub guard: &'a Guard,
    pub tunnels: &'a Tunnels,
    pub base_url: &'a str,
    pub prefix: &'a str,
    /// Asked by the health page.
    pub upstream: &'a Upstream,
    /// The host the request came for: single sign-on's redirect URI is
    /// built on it, and passkeys work on one name (the relying party's).
    pub host: &'a str,
    // passkeys (issue 22 §2): the relying party, ceremonies and credential files.
    pub passkeys: &'a crate::auth::passkey::Passkeys,
    /// totp: who must pass a second factor, and where its state lives.
    pub config: &'a Arc<crate::config::Config>,
    // oidc: the providers.
    pub sso: &'a crate::auth::oidc::Sso,
}

impl Pages<'_> {
    /// Serves `rest` (the path after the prefix).
    pub async fn serve(
        &self,
        req: Request<RequestBody>,
        rest: &str,
        client: IpAddr,
    ) -> Result<Response<ProxyBody>, ProxyError> {
        Ok(match (req.method(), rest) {
            // No login, nothing but up or down (`health` says why).
            (&Method::GET, "health") => health::response(self.upstream.health().await),
            (&Method::GET | &Method::HEAD, "login") => {
                let next = next_path::sanitize_next(
                    query_param(req.uri().query(), "next").as_deref(),
                    self.base_url,
                );
                self.login_page(req.headers(), &next, "", None, StatusCode::OK)
            }
            // oidc: `auth.password = false` refuses the form's POST.
            (&Method::POST, "login") if !self.sso.password() => {
                tracing::info!(target: "nbgate::audit", event = "login_password_off", %client, "password login refused: auth.password = false");
                return Err(ProxyError::PasswordLoginOff);
            }
            (&Method::POST, "login") => self.login_submit(req, client).await?,
            (&Method::GET, "logout") => self.logout_page(req.headers()),
            (&Method::POST, "logout") => self.logout_submit(req, client).await?,
            (&Method::GET | &Method::HEAD, "sessions") => self.sessions_page(&req, client)?,
            (&Method::POST, "sessions") => self.sessions_submit(req, client).await?,
            // passkeys (issue 22 §2)
            (&Method::GET | &Method::HEAD, "passkeys") => self.passkeys_page(&req, client)?,
            (&Method::POST, "passkeys") => self.passkeys_submit(req, client).await?,
            (&Method::POST, r) if r.starts_with("passkey/") => {
                self.passkey_api(req, r, client).await?
            }
            // totp (issue 22 §1)
            (&Method::GET | &Method::HEAD, "login/totp") => self.totp_page(&req),
            (&Method::POST, "login/totp") => self.totp_submit(req, client).await?,
            (&Method::GET | &Method::HEAD, "account") => self.account_page(&req, client).await?,
            (&Method::POST, "account") => self.account_submit(req, client).await?,
            // oidc: start and callback.
            (&Method::GET, "oidc/callback") => {
                self.oidc_callback(req.headers(), req.uri().query(), client)
                    .await?
            }
            (&Method::GET, r) if r.starts_with("oidc/") => {
                let name = &r["oidc/".len()..];
                self.oidc_start(req.headers(), req.uri().query(), name, client)
                    .await?
            }
            _ => return Err(ProxyError::NotFound),
        })
    }

    fn login_href(&self) -> String {
        format!("{}login", self.prefix)
    }

    fn login_page(
        &self,
        headers: &HeaderMap,
        next: &str,
        username: &str,
        notice: Option<Notice>,
        status: StatusCode,
    ) -> Response<ProxyBody> {
        self.login_page_with(headers, next, username, notice, None, status)
    }

    /// The login page, with an SSO notice (oidc).
    fn login_page_with(
        &self,
        headers: &HeaderMap,
        next: &str,
        username: &str,
        notice: Option<Notice>,
        sso_notice: Option<pages::oidc::SsoNotice<'_>>,
        status: StatusCode,
    ) -> Response<ProxyBody> {
        // The CSRF binding lives in its own cookie; make one if missing.
        let (binding, fresh) = match cookie(headers, csrf::CSRF_COOKIE) {
            Some(b) if !b.is_empty() && b.len() <= 64 => (b.to_owned(), false),
            _ => (csrf::new_binding(), true),
        };
        let token = csrf::token(self.auth.csrf_key(), &binding);
        let action = self.login_href();
        let buttons = self.sso_buttons(next);
        let view = LoginView {
            lang: lang(headers),
            action: &action,
            csrf_token: &token,
            next,
            username,
            notice,
            sso: (!buttons.is_empty()).then_some(pages::oidc::SsoLogin {
                buttons: &buttons,
                password: self.sso.password(),
                notice: sso_notice,
            }),
            passkey: self
                .passkeys
                .rp_id()
                .map(|rp_id| pages::passkey::PasskeyLogin {
                    prefix: self.prefix,
                    rp_id,
                }),
        };
        let mut r = html(status, pages::render_login(&view));
        if fresh {
            set_cookie(&mut r, &csrf::binding_cookie(&binding));
        }
        r
    }

    async fn read_form(req: Request<RequestBody>) -> Option<(HeaderMap, Vec<(String, String)>)> {
        let (parts, body) = req.into_parts();
        let bytes = http_body_util::Limited::new(body, MAX_FORM)
            .collect()
            .await
            .ok()?
            .to_bytes();
        let form = form_urlencoded::parse(&bytes).into_owned().collect();
        Some((parts.headers, form))
    }

    async fn login_submit(
        &self,
        req: Request<RequestBody>,
        client: IpAddr,
    ) -> Result<Response<ProxyBody>, ProxyError> {
        let (headers, form) = Self::read_form(req).await.ok_or(ProxyError::FormTooLarge)?;
        let field = |n: &str| {
            form.iter()
                .find(|(k, _)| k == n)
                .map(|(_, v)| v.as_str())
                .unwrap_or("")
        };
        let user = field("username").trim();
        let next = next_path::sanitize_next(Some(field("next")), self.base_url);
        let agent = user_agent(&headers).unwrap_or("");
        let binding = cookie(&headers, csrf::CSRF_COOKIE).unwrap_or("");
        if !csrf::verify(self.auth.csrf_key(), binding, field("csrf")) {
            tracing::info!(target: "nbgate::audit", event = "login_csrf_failed", %client, user_agent = agent, "login refused: bad CSRF token");
            crate::metrics::login(crate::metrics::Login::CsrfFailed);
            return Ok(self.login_page(
                &headers,
                &next,
                "",
                Some(Notice::CsrfFailed),
                StatusCode::FORBIDDEN,
            ));
        }
        let user_shown = if user.len() <= 64 { user } else { "" };
        // The access line of a refused login names the user tried.
        let tried = |mut r: Response<ProxyBody>| {
            r.extensions_mut().insert(Who::Tried(user_shown.to_owned()));
            r
        };
        // Checked before hashing: a locked-out guesser costs no PBKDF2.
        let attempt = match self.guard.lockout.begin(client, Some(user), Instant::now()) {
            Ok(attempt) => attempt,
            Err(Refused::Locked(locked)) => {
                let secs = locked_secs(&locked);
                tracing::info!(target: "nbgate::audit", event = "login_locked", user = %user_shown, %client, scope = ?locked.scope, retry_after = secs, "login refused: locked out");
                crate::metrics::login(crate::metrics::Login::Locked);
                self.guard.hold_refusal().await;
                return Ok(tried(self.locked_page(&headers, &next, user_shown, secs)));
            }
            Err(Refused::InFlight) => {
                tracing::info!(target: "nbgate::audit", event = "login_busy", user = %user_shown, %client, reason = "in_flight", "login refused: attempts from this address or for this name are still being verified");
                crate::metrics::login(crate::metrics::Login::Busy);
                self.guard.hold_refusal().await;
                return Ok(tried(self.busy_page(&headers, &next, user_shown)));
            }
        };
        Ok(
            match self.auth.check_password(user, field("password")).await {
                Check::Valid(name) => {
                    // totp: a second factor first? Then no session yet, and
                    // neither success nor failure is recorded with the
                    // lockout: the counters stay until the login completes.
                    if let Some(r) = self.second_step(&name, &headers, &next, client).await? {
                        drop(attempt);
                        return Ok(r);
                    }
                    attempt.succeeded(&name, Instant::now());
                    let (claims, set) = self.start_session(&name, "password", client, &headers);
                    let mut r = see_other(&next);
                    set_cookie(&mut r, &set);
                    said_by(r, claims)
                }
                Check::Invalid { unknown_user } => {
                    let reason = if unknown_user {
                        "unknown_user"
                    } else {
                        "wrong_password"
                    };
                    tracing::info!(target: "nbgate::audit", event = "login_failure", user = %user_shown, %client, user_agent = agent, reason, "login failed");
                    crate::metrics::login(crate::metrics::Login::Failure);
                    if let Some(locked) = attempt.failed(Some(user), Instant::now()) {
                        let secs = locked_secs(&locked);
                        tracing::warn!(target: "nbgate::audit", event = "lockout", user = %user_shown, %client, scope = ?locked.scope, retry_after = secs, "too many failed logins: locked out");
                        crate::metrics::lockout();
                        return Ok(tried(self.locked_page(&headers, &next, user_shown, secs)));
                    }
                    tried(self.login_page(
                        &headers,
                        &next,
                        user_shown,
                        Some(Notice::WrongCredentials),
                        StatusCode::UNAUTHORIZED,
                    ))
                }
                Check::Busy => {
                    drop(attempt);
                    tracing::warn!(target: "nbgate::audit", event = "login_busy", %client, "login refused: too many verifications in flight");
                    crate::metrics::login(crate::metrics::Login::Busy);
                    self.guard.hold_refusal().await;
                    tried(self.busy_page(&headers, &next, user_shown))
                }
            },
        )
    }

    /// Starts a session for `name`, who proved who they are by `method`
    /// (`password`, `totp`, `recovery_code`, ...): every way in ends here,
    /// with one `login_success` audit line.
    fn start_session(
        &self,
        name: &str,
        method: &'static str,
        client: IpAddr,
        headers: &HeaderMap,
    ) -> (session::Claims, String) {
        let agent = user_agent(headers);
        let seen = Sighting {
            client,
            user_agent: agent,
        };
        let (claims, set) = self.auth.start_session(name, seen);
        tracing::info!(target: "nbgate::audit", event = "login_success", user = %name, %client, user_agent = agent.unwrap_or(""), method, session = %short(&claims.sid), "login");
        crate::metrics::login(crate::metrics::Login::Success);
        (claims, set)
    }

    /// 429 with the login page asking to retry in a second.
    fn busy_page(&self, headers: &HeaderMap, next: &str, user: &str) -> Response<ProxyBody> {
        let mut r = self.login_page(
            headers,
            next,
            user,
            Some(Notice::RateLimited {
                retry_after_secs: 1,
            }),
            StatusCode::TOO_MANY_REQUESTS,
        );
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(1u32));
        r
    }

    /// 429 with the login page saying when to retry.
    fn locked_page(
        &self,
        headers: &HeaderMap,
        next: &str,
        user: &str,
        secs: u64,
    ) -> Response<ProxyBody> {
        let mut r = self.login_page(
            headers,
            next,
            user,
            Some(Notice::LockedOut {
                retry_after_secs: secs,
            }),
            StatusCode::TOO_MANY_REQUESTS,
        );
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        r
    }

    fn session_of(&self, headers: &HeaderMap) -> Option<session::Claims> {
        match self.auth.check_session(cookie(headers, SESSION_COOKIE)?)? {
            Verdict::Valid { claims, .. } => Some(Arc::unwrap_or_clone(claims)),
            _ => None,
        }
    }

    fn logout_page(&self, headers: &HeaderMap) -> Response<ProxyBody> {
        let Some(claims) = self.session_of(headers) else {
            return see_other(&self.login_href());
        };
        let token = csrf::token(self.auth.csrf_key(), &claims.sid);
        let action = format!("{}logout", self.prefix);
        let body = pages::render_logout(
            lang(headers),
            &claims.u,
            &action,
            &token,
            &self.sessions_href(),
            &format!("{}account", self.prefix),
        );
        html(StatusCode::OK, body)
    }

    async fn logout_submit(
        &self,
        req: Request<RequestBody>,
        client: IpAddr,
    ) -> Result<Response<ProxyBody>, ProxyError> {
        let Some((headers, form)) = Self::read_form(req).await else {
            return Ok(see_other(&self.login_href()));
        };
        let Some(claims) = self.session_of(&headers) else {
            return Ok(see_other(&self.login_href()));
        };
        let token = form
            .iter()
            .find(|(k, _)| k == "csrf")
            .map_or("", |(_, v)| v.as_str());
        if !csrf::verify(self.auth.csrf_key(), &claims.sid, token) {
            return Err(ProxyError::FormExpired);
        }
        let everywhere = form.iter().any(|(k, v)| k == "everywhere" && v == "1");
        if everywhere {
            // Bumps the user's generation: every cookie issued so far, on
            // any device, fails its check from now on.
            self.auth.end_all_sessions(&claims.u);
            let closed = self.tunnels.close_user(&claims.u);
            tracing::info!(target: "nbgate::audit", event = "logout_everywhere", user = %claims.u, %client, session = %session::short_id(&claims.sid), tunnels_closed = closed, "logout everywhere");
        } else {
            self.auth.end_session(&claims);
            let closed = self.tunnels.close_session(&claims.sid);
            tracing::info!(target: "nbgate::audit", event = "logout", user = %claims.u, %client, session = %session::short_id(&claims.sid), tunnels_closed = closed, "logout");
        }
        let mut r = html(
            StatusCode::OK,
            pages::render_logged_out(lang(&headers), &self.login_href()),
        );
        set_cookie(&mut r, &session::clear_cookie());
        let who = Who::Known(Identity::session(Arc::new(claims), None));
        r.extensions_mut().insert(who);
        Ok(r)
    }
}

impl Pages<'_> {
    fn sessions_href(&self) -> String {
        format!("{}sessions", self.prefix)
    }

    /// The login session a sessions page request comes with, noted as seen
    /// (so the page lists it even when the registry did not hold it yet).
    ///
    /// Without one: an API token's request gets a JSON refusal saying the
    /// page is for browser sessions (a token has none, and must not end a
    /// person's browser sessions); a browser is sent to log in and come
    /// back; any other client gets the usual 401.
    fn sessions_login(
        &self,
        headers: &HeaderMap,
        query: Option<&str>,
        client: IpAddr,
    ) -> Result<session::Claims, ProxyError> {
        self.login_session(headers, query, client, &self.sessions_href())
    }

    /// What `sessions_login` says, for any page of a logged-in user: a
    /// browser without a session is sent to log in and come back to `page`.
    fn login_session(
        &self,
        headers: &HeaderMap,
        query: Option<&str>,
        client: IpAddr,
        page: &str,
    ) -> Result<session::Claims, ProxyError> {
        if let Some(claims) = self.session_of(headers) {
            let seen = Sighting {
                client,
                user_agent: user_agent(headers),
            };
            self.auth.seen(&claims, seen);
            return Ok(claims);
        }
        if headers.contains_key(header::AUTHORIZATION) || query_param(query, "token").is_some() {
            return Err(ProxyError::LoginSessionRequired);
        }
        let login = error::wants_html(headers).then(|| {
            let next: String = form_urlencoded::byte_serialize(page.as_bytes()).collect();
            format!("{}?next={next}", self.login_href())
        });
        Err(ProxyError::LoginRequired { login })
    }

    /// `GET sessions`: the user's active sessions, this one marked.
    fn sessions_page(
        &self,
        req: &Request<RequestBody>,
        client: IpAddr,
    ) -> Result<Response<ProxyBody>, ProxyError> {
        let headers = req.headers();
        let claims = self.sessions_login(headers, req.uri().query(), client)?;
        let mut rows: Vec<SessionRow> = self
            .auth
            .sessions_of(&claims)
            .into_iter()
            .map(|s| SessionRow {
                handle: short(&s.sid).to_owned(),
                browser: s.agent.browser_label(),
                os: s.agent.os,
                client: s.client.to_string(),
                started: s.started,
                last_seen: s.last_seen,
                current: s.sid == claims.sid,
            })
            .collect();
        // This session first, the others as listed (most recently seen first).
        rows.sort_by_key(|r| !r.current);
        let notice = match query_param(req.uri().query(), "ended").as_deref() {
            Some("one") => Some(SessionsNotice::EndedOne),
            Some("others") => Some(SessionsNotice::EndedOthers),
            _ => None,
        };
        let token = csrf::token(self.auth.csrf_key(), &claims.sid);
        let action = self.sessions_href();
        let logout = format!("{}logout", self.prefix);
        let view = SessionsView {
            lang: lang(headers),
            user: &claims.u,
            rows: &rows,
            action: &action,
            csrf_token: &token,
            logout_href: &logout,
            notice,
        };
        let r = html(StatusCode::OK, pages::render_sessions(&view));
        Ok(said_by(r, claims))
    }

    /// `POST sessions`: ends one other session of the user (`end` = its
    /// handle) or all others (`end_others=1`), closing their WebSocket
    /// tunnels as logout does, then back to the list (303).
    ///
    /// The CSRF token is bound to the session id, as the logout form's: no
    /// other site can make a browser end its user's sessions. Only the
    /// poster's own sessions can be named (`Authenticator::end_other_session`).
    async fn sessions_submit(
        &self,
        req: Request<RequestBody>,
        client: IpAddr,
    ) -> Result<Response<ProxyBody>, ProxyError> {
        let query = req.uri().query().map(str::to_owned);
        let (headers, form) = Self::read_form(req).await.ok_or(ProxyError::FormTooLarge)?;
        let claims = self.sessions_login(&headers, query.as_deref(), client)?;
        let field = |n: &str| {
            form.iter()
                .find(|(k, _)| k == n)
                .map_or("", |(_, v)| v.as_str())
        };
        if !csrf::verify(self.auth.csrf_key(), &claims.sid, field("csrf")) {
            tracing::info!(target: "nbgate::audit", event = "sessions_csrf_failed", user = %claims.u, %client, session = %short(&claims.sid), "sessions form refused: bad CSRF token");
            return Err(ProxyError::FormExpired);
        }
        let by = short(&claims.sid);
        if field("end_others") == "1" {
            let (ended, cookie) = self.auth.end_other_sessions(&claims);
            let closed = self
                .tunnels
                .close_user_sessions_except(&claims.u, &claims.sid);
            for sid in &ended {
                tracing::info!(target: "nbgate::audit", event = "session_revoked", user = %claims.u, %client, session = %short(sid), by_session = %by, "session ended from the sessions page");
            }
            tracing::info!(target: "nbgate::audit", event = "other_sessions_revoked", user = %claims.u, %client, session = %by, listed_ended = ended.len(), tunnels_closed = closed, "all other sessions ended from the sessions page");
            let mut r = see_other(&format!("{}?ended=others", self.sessions_href()));
            set_cookie(&mut r, &cookie);
            return Ok(said_by(r, claims));
        }
        match self.auth.end_other_session(&claims, field("end")) {
            Some(sid) => {
                let closed = self.tunnels.close_session(&sid);
                tracing::info!(target: "nbgate::audit", event = "session_revoked", user = %claims.u, %client, session = %short(&sid), by_session = %by, tunnels_closed = closed, "session ended from the sessions page");
                let r = see_other(&format!("{}?ended=one", self.sessions_href()));
                Ok(said_by(r, claims))
            }
            None => {
                tracing::info!(target: "nbgate::audit", event = "session_revoke_refused", user = %claims.u, %client, session = %by, "sessions form named no other active session of this user");
                Err(ProxyError::SessionNotFound)
            }
        }
    }
}

/// `r` with the session it answers, for the access line's `user`, `auth`
/// and `auth_id` (`Live::handle` takes it from the response's extensions).
fn said_by(mut r: Response<ProxyBody>, claims: session::Claims) -> Response<ProxyBody> {
    r.extensions_mut()
        .insert(Who::Known(Identity::session(Arc::new(claims), None)));
    r
}
