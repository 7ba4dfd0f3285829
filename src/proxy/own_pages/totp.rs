//! The login's TOTP second step (`login/totp`): what follows a correct
//! password for a user with a second factor, or one required to have one.
//!
//! The password step hands over a sealed pending login (`auth::pending`) in
//! its own cookie and no session. This step checks the code (or a recovery
//! code, or for a forced enrolment the first code of the secret offered),
//! counts every failure toward the lockout as a wrong password is counted,
//! and only then starts the session, audits `login_success` with the method,
//! and records the success with the lockout (which clears the counters).

use std::sync::Arc;
use std::time::Instant;

use http::header::{self, HeaderMap, HeaderValue};
use http::{Request, Response, StatusCode};

use super::{cookie, html, lang, said_by, see_other, set_cookie, user_agent, Pages};
use crate::auth::pending::{self, PendingLogin, Purpose, PENDING_COOKIE};
use crate::auth::second_factor::{self, SecondFactorError, Status, Verified};
use crate::auth::session::unix_now;
use crate::auth::totp::{self, CodeCheck, Secret};
use crate::auth::{csrf, next_path, Who};
use crate::config::Config;
use crate::pages::totp::{
    render_recovery_codes, render_recovery_used, render_second_step, CodesReason, Offer,
    SecondStepView, StepNotice,
};
use crate::pages::Notice;
use crate::policy::Refused;
use crate::proxy::body::{ProxyBody, RequestBody};
use crate::proxy::error::ProxyError;
use crate::proxy::guard::locked_secs;
use crate::telemetry::Chain;

/// What the second step ended with, for its audit line and page.
enum Outcome {
    /// A TOTP code of an enrolled user.
    Code,
    /// A recovery code; `left` remain.
    Recovery { left: usize },
    /// A forced enrolment confirmed by its first code: the recovery codes.
    Enrolled(Vec<String>),
    /// Refused: the audit line's reason.
    Refused(&'static str),
}

/// A form field's value, `""` when absent.
pub(super) fn form_field<'a>(form: &'a [(String, String)], name: &str) -> &'a str {
    form.iter()
        .find(|(k, _)| k == name)
        .map_or("", |(_, v)| v.as_str())
}

impl Pages<'_> {
    pub(super) fn totp_href(&self) -> String {
        format!("{}login/totp", self.prefix)
    }

    pub(super) fn account_href(&self) -> String {
        format!("{}account", self.prefix)
    }

    /// Runs `f` with the live configuration on the blocking pool (the state
    /// files are read, written and fsynced). A failure is logged here, once,
    /// and refuses the request: a second factor that cannot be checked lets
    /// no one in.
    pub(super) async fn second_factor_io<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Config) -> Result<T, SecondFactorError> + Send + 'static,
    ) -> Result<T, ProxyError> {
        let config = Arc::clone(self.config);
        match tokio::task::spawn_blocking(move || f(&config)).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => {
                tracing::error!(error = %Chain(&e), "second-factor state: login refused");
                Err(ProxyError::SecondFactorState)
            }
            Err(e) => {
                tracing::error!(error = %e, "second-factor check did not complete");
                Err(ProxyError::SecondFactorState)
            }
        }
    }

    /// After a correct password: `Some` redirect to the second step (with
    /// the pending cookie, no session) when `user` has a second factor or
    /// must enrol one; `None` when the password is enough.
    pub(super) async fn second_step(
        &self,
        user: &str,
        headers: &HeaderMap,
        next: &str,
        client: std::net::IpAddr,
    ) -> Result<Option<Response<ProxyBody>>, ProxyError> {
        let name = user.to_owned();
        let status = self
            .second_factor_io(move |c| second_factor::status(c, &name))
            .await?;
        let enrol = match status {
            Status::NotNeeded => return Ok(None),
            Status::MustEnrol => Some(Secret::generate().to_base32()),
            Status::Enrolled { .. } => None,
        };
        let forced = enrol.is_some();
        let p = PendingLogin::new(user, next, enrol, unix_now());
        let sealed = pending::seal(self.auth.csrf_key(), Purpose::SecondStep, &p);
        let agent = user_agent(headers).unwrap_or("");
        tracing::info!(target: "nbgate::audit", event = "login_second_step", user = %user, %client, user_agent = agent, factor = "totp", enrol = forced, "password accepted: second step");
        let mut r = see_other(&self.totp_href());
        set_cookie(&mut r, &pending::cookie(&sealed));
        r.extensions_mut().insert(Who::Tried(user.to_owned()));
        Ok(Some(r))
    }

    /// The pending login the request's cookie holds: sealed by this server,
    /// not expired, not used up.
    fn pending_of(&self, headers: &HeaderMap) -> Option<PendingLogin> {
        let value = cookie(headers, PENDING_COOKIE)?;
        let p: PendingLogin =
            pending::open(self.auth.csrf_key(), Purpose::SecondStep, value, unix_now())?;
        (!pending::is_used(&p)).then_some(p)
    }

    /// The second-step page for `p`, with a CSRF token bound to its id.
    fn step_page(
        &self,
        headers: &HeaderMap,
        p: &PendingLogin,
        notice: Option<StepNotice>,
        status: StatusCode,
    ) -> Response<ProxyBody> {
        let token = csrf::token(self.auth.csrf_key(), &p.id);
        let action = self.totp_href();
        let login = self.login_href();
        let secret = p.enrol.as_deref().and_then(|s| Secret::from_base32(s).ok());
        let uri = secret.as_ref().map(|s| s.otpauth_uri(&p.u));
        let grouped = secret.as_ref().map(Secret::to_grouped_base32);
        let view = SecondStepView {
            lang: lang(headers),
            action: &action,
            csrf_token: &token,
            login_href: &login,
            notice,
            enrol: uri
                .as_deref()
                .zip(grouped.as_deref())
                .map(|(uri, secret)| Offer { uri, secret }),
        };
        let mut r = html(status, render_second_step(&view));
        r.extensions_mut().insert(Who::Tried(p.u.clone()));
        r
    }

    /// `GET login/totp`: the code form, or back to the login page when there
    /// is no valid pending login (expired, used, tampered, none).
    pub(super) fn totp_page(&self, req: &Request<RequestBody>) -> Response<ProxyBody> {
        match self.pending_of(req.headers()) {
            Some(p) => self.step_page(req.headers(), &p, None, StatusCode::OK),
            None => see_other(&self.login_href()),
        }
    }

    /// `POST login/totp`: checks the code and completes the login.
    pub(super) async fn totp_submit(
        &self,
        req: Request<RequestBody>,
        client: std::net::IpAddr,
    ) -> Result<Response<ProxyBody>, ProxyError> {
        let (headers, form) = Self::read_form(req).await.ok_or(ProxyError::FormTooLarge)?;
        let field = |n: &str| form_field(&form, n);
        let agent = user_agent(&headers).unwrap_or("");
        let Some(p) = self.pending_of(&headers) else {
            // Expired, used up, tampered with or absent: log in again.
            tracing::info!(target: "nbgate::audit", event = "login_totp_failure", %client, user_agent = agent, reason = "no_pending_login", "second step refused: no valid pending login");
            let next = next_path::sanitize_next(None, self.base_url);
            let mut r = self.login_page(
                &headers,
                &next,
                "",
                Some(Notice::SessionExpired),
                StatusCode::FORBIDDEN,
            );
            set_cookie(&mut r, &pending::clear_cookie());
            return Ok(r);
        };
        if !csrf::verify(self.auth.csrf_key(), &p.id, field("csrf")) {
            tracing::info!(target: "nbgate::audit", event = "login_csrf_failed", user = %p.u, %client, user_agent = agent, step = "totp", "second step refused: bad CSRF token");
            crate::metrics::login(crate::metrics::Login::CsrfFailed);
            return Err(ProxyError::FormExpired);
        }
        // Counted as a password attempt is: a locked user or address is
        // refused before any code is checked.
        let attempt = match self.guard.lockout.begin(client, Some(&p.u), Instant::now()) {
            Ok(attempt) => attempt,
            Err(Refused::Locked(locked)) => {
                let secs = locked_secs(&locked);
                tracing::info!(target: "nbgate::audit", event = "login_locked", user = %p.u, %client, scope = ?locked.scope, retry_after = secs, step = "totp", "second step refused: locked out");
                crate::metrics::login(crate::metrics::Login::Locked);
                self.guard.hold_refusal().await;
                return Ok(self.locked_step(&headers, &p, secs));
            }
            Err(Refused::InFlight) => {
                tracing::info!(target: "nbgate::audit", event = "login_busy", user = %p.u, %client, reason = "in_flight", step = "totp", "second step refused: attempts are still being checked");
                crate::metrics::login(crate::metrics::Login::Busy);
                self.guard.hold_refusal().await;
                let mut r = self.step_page(
                    &headers,
                    &p,
                    Some(StepNotice::Busy),
                    StatusCode::TOO_MANY_REQUESTS,
                );
                r.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(1u32));
                return Ok(r);
            }
        };
        let code = field("code").to_owned();
        let outcome = match self.check_step(&p, code).await {
            Ok(o) => o,
            Err(e) => {
                drop(attempt);
                return Err(e);
            }
        };
        let now = unix_now();
        // One pending login opens one session: a second completion (a copied
        // cookie with another valid code) is refused.
        let outcome = match outcome {
            Outcome::Refused(reason) => Outcome::Refused(reason),
            accepted if !pending::use_up(&p, now) => {
                drop(accepted);
                Outcome::Refused("pending_login_used")
            }
            accepted => accepted,
        };
        let method = match &outcome {
            Outcome::Refused(reason) => {
                tracing::info!(target: "nbgate::audit", event = "login_totp_failure", user = %p.u, %client, user_agent = agent, reason, "second step failed");
                crate::metrics::login(crate::metrics::Login::Failure);
                if let Some(locked) = attempt.failed(Some(&p.u), Instant::now()) {
                    let secs = locked_secs(&locked);
                    tracing::warn!(target: "nbgate::audit", event = "lockout", user = %p.u, %client, scope = ?locked.scope, retry_after = secs, step = "totp", "too many failed logins: locked out");
                    crate::metrics::lockout();
                    return Ok(self.locked_step(&headers, &p, secs));
                }
                return Ok(self.step_page(
                    &headers,
                    &p,
                    Some(StepNotice::WrongCode),
                    StatusCode::UNAUTHORIZED,
                ));
            }
            Outcome::Code | Outcome::Enrolled(_) => "totp",
            Outcome::Recovery { .. } => "recovery_code",
        };
        attempt.succeeded(&p.u, Instant::now());
        match &outcome {
            Outcome::Recovery { left } => {
                tracing::info!(target: "nbgate::audit", event = "recovery_code_used", user = %p.u, %client, left, "recovery code used");
            }
            Outcome::Enrolled(_) => {
                tracing::info!(target: "nbgate::audit", event = "totp_enrolled", user = %p.u, %client, via = "login", "TOTP enrolled during login");
            }
            _ => {}
        }
        let (claims, set) = self.start_session(&p.u, method, client, &headers);
        let l = lang(&headers);
        let mut r = match outcome {
            Outcome::Recovery { left } => html(
                StatusCode::OK,
                render_recovery_used(l, left, &p.next, &self.account_href()),
            ),
            Outcome::Enrolled(codes) => html(
                StatusCode::OK,
                render_recovery_codes(l, &codes, CodesReason::Enrolled, &p.next),
            ),
            _ => see_other(&p.next),
        };
        set_cookie(&mut r, &set);
        set_cookie(&mut r, &pending::clear_cookie());
        Ok(said_by(r, claims))
    }

    /// Checks the typed code of `p`: an enrolled user's code or recovery
    /// code, or a forced enrolment's first code (which then enrols).
    async fn check_step(&self, p: &PendingLogin, code: String) -> Result<Outcome, ProxyError> {
        let now = unix_now();
        let user = p.u.clone();
        match p.enrol.clone() {
            Some(offered) => {
                let Ok(secret) = Secret::from_base32(&offered) else {
                    return Ok(Outcome::Refused("bad_offer"));
                };
                Ok(match self.confirm_enrolment(&p.u, secret, &code).await? {
                    Some(codes) => Outcome::Enrolled(codes),
                    None => Outcome::Refused("wrong_code"),
                })
            }
            None => {
                let verified = self
                    .second_factor_io(move |c| second_factor::verify(c, &user, &code, now))
                    .await?;
                Ok(match verified {
                    Verified::Code => Outcome::Code,
                    Verified::Recovery { left } => Outcome::Recovery { left },
                    Verified::Replayed => Outcome::Refused("replayed_code"),
                    Verified::Wrong => Outcome::Refused("wrong_code"),
                })
            }
        }
    }

    /// Enrols `user` with `secret` if `code` is its current code (the first
    /// code an app shows proves it was set up): the recovery codes, or
    /// `None` for a wrong code. The code's step is recorded as used.
    pub(super) async fn confirm_enrolment(
        &self,
        user: &str,
        secret: Secret,
        code: &str,
    ) -> Result<Option<Vec<String>>, ProxyError> {
        let now = unix_now();
        let CodeCheck::Accepted { step } = totp::check_code(&secret, code, now, None) else {
            return Ok(None);
        };
        let user = user.to_owned();
        self.second_factor_io(move |c| {
            second_factor::enrol(&c.server.state_dir, &user, Some(&secret), Some(step), now)
        })
        .await
        .map(Some)
    }

    /// 429 with the step page saying when to retry.
    fn locked_step(&self, headers: &HeaderMap, p: &PendingLogin, secs: u64) -> Response<ProxyBody> {
        let mut r = self.step_page(
            headers,
            p,
            Some(StepNotice::LockedOut {
                retry_after_secs: secs,
            }),
            StatusCode::TOO_MANY_REQUESTS,
        );
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        r
    }
}
