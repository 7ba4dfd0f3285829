//! The account page (`account`): for a logged-in browser session only
//! (an API token gets `LoginSessionRequired`, as on the sessions page).
//! Its forms carry a CSRF token bound to the session id; each one that
//! changes the second factor needs a current code (or a recovery code),
//! and a wrong one counts toward the lockout like a wrong password, so a
//! stolen session cookie can neither remove TOTP nor guess codes freely.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use http::header::{self, HeaderMap, HeaderValue};
use http::{Request, Response, StatusCode};

use super::totp::form_field;
use super::{html, lang, query_param, said_by, see_other, Pages};
use crate::auth::csrf;
use crate::auth::pending::{self, EnrolOffer, Purpose};
use crate::auth::second_factor::{self, Status, Verified};
use crate::auth::session::{short_id as short, unix_now, Claims};
use crate::auth::totp::Secret;
use crate::pages::account::{render_account, AccountNotice, AccountView, TotpSection};
use crate::pages::totp::{render_recovery_codes, CodesReason, Offer};
use crate::policy::{Attempt, Refused};
use crate::proxy::body::{ProxyBody, RequestBody};
use crate::proxy::error::ProxyError;
use crate::proxy::guard::locked_secs;

/// How long an enrolment offer on the page stays valid.
const OFFER_TTL: Duration = Duration::from_secs(600);

impl Pages<'_> {
    /// `GET account`.
    pub(super) async fn account_page(
        &self,
        req: &Request<RequestBody>,
        client: IpAddr,
    ) -> Result<Response<ProxyBody>, ProxyError> {
        let claims = self.account_login(req.headers(), req.uri().query(), client)?;
        let notice = match query_param(req.uri().query(), "done").as_deref() {
            Some("removed") => Some(AccountNotice::Removed),
            _ => None,
        };
        self.account_view(req.headers(), claims, None, notice, StatusCode::OK)
            .await
    }

    /// The logged-in session (`sessions_login` with the account page as the
    /// place to come back to).
    fn account_login(
        &self,
        headers: &HeaderMap,
        query: Option<&str>,
        client: IpAddr,
    ) -> Result<Claims, ProxyError> {
        match self.sessions_login(headers, query, client) {
            Err(ProxyError::LoginRequired { login: Some(_) }) => {
                let next: String =
                    form_urlencoded::byte_serialize(self.account_href().as_bytes()).collect();
                Err(ProxyError::LoginRequired {
                    login: Some(format!("{}?next={next}", self.login_href())),
                })
            }
            other => other,
        }
    }

    /// The page for `claims`' user; `offer` keeps the secret already shown
    /// (a mistyped first code must not change the QR code being scanned).
    async fn account_view(
        &self,
        headers: &HeaderMap,
        claims: Claims,
        offer: Option<EnrolOffer>,
        notice: Option<AccountNotice>,
        status: StatusCode,
    ) -> Result<Response<ProxyBody>, ProxyError> {
        let user = claims.u.clone();
        let state = self
            .second_factor_io(move |c| second_factor::status(c, &user))
            .await?;
        let offer = offer.unwrap_or_else(|| EnrolOffer {
            u: claims.u.clone(),
            secret: Secret::generate().to_base32(),
            exp: unix_now() + OFFER_TTL.as_secs(),
        });
        let secret = Secret::from_base32(&offer.secret).unwrap_or_else(|_| Secret::generate());
        let uri = secret.otpauth_uri(&claims.u);
        let grouped = secret.to_grouped_base32();
        let sealed = pending::seal(self.auth.csrf_key(), Purpose::AccountEnrol, &offer);
        let totp = match state {
            Status::Enrolled {
                recovery_left,
                enrolled_at,
            } => TotpSection::On {
                enrolled_at,
                recovery_left,
            },
            Status::NotNeeded | Status::MustEnrol => TotpSection::Off {
                offer: Offer {
                    uri: &uri,
                    secret: &grouped,
                },
                sealed: &sealed,
                required: state == Status::MustEnrol,
            },
        };
        let token = csrf::token(self.auth.csrf_key(), &claims.sid);
        let action = self.account_href();
        let sessions = self.sessions_href();
        let passkeys = format!("{}passkeys", self.prefix);
        let logout = format!("{}logout", self.prefix);
        let view = AccountView {
            lang: lang(headers),
            user: &claims.u,
            action: &action,
            csrf_token: &token,
            sessions_href: &sessions,
            passkeys_href: &passkeys,
            logout_href: &logout,
            totp,
            notice,
        };
        let mut r = html(status, render_account(&view));
        if let Some(AccountNotice::LockedOut { retry_after_secs }) = notice {
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(retry_after_secs));
        }
        Ok(said_by(r, claims))
    }

    /// `POST account`: `action` = `enrol` (with the sealed `offer` and the
    /// first `code`), `regenerate` or `remove` (with a current `code`).
    pub(super) async fn account_submit(
        &self,
        req: Request<RequestBody>,
        client: IpAddr,
    ) -> Result<Response<ProxyBody>, ProxyError> {
        let query = req.uri().query().map(str::to_owned);
        let (headers, form) = Self::read_form(req).await.ok_or(ProxyError::FormTooLarge)?;
        let claims = self.account_login(&headers, query.as_deref(), client)?;
        let field = |n: &str| form_field(&form, n);
        if !csrf::verify(self.auth.csrf_key(), &claims.sid, field("csrf")) {
            tracing::info!(target: "nbgate::audit", event = "account_csrf_failed", user = %claims.u, %client, session = %short(&claims.sid), "account form refused: bad CSRF token");
            return Err(ProxyError::FormExpired);
        }
        let action = field("action");
        if !matches!(action, "enrol" | "regenerate" | "remove") {
            return Err(ProxyError::NotFound);
        }
        let now = unix_now();
        let offer = if action == "enrol" {
            match pending::open::<EnrolOffer>(
                self.auth.csrf_key(),
                Purpose::AccountEnrol,
                field("offer"),
                now,
            )
            .filter(|o| o.u == claims.u)
            {
                Some(o) => Some(o),
                None => {
                    return self
                        .account_view(
                            &headers,
                            claims,
                            None,
                            Some(AccountNotice::OfferExpired),
                            StatusCode::FORBIDDEN,
                        )
                        .await
                }
            }
        } else {
            None
        };
        let refused = match self
            .guard
            .lockout
            .begin(client, Some(&claims.u), Instant::now())
        {
            Ok(a) => Ok(a),
            Err(Refused::Locked(locked)) => {
                let secs = locked_secs(&locked);
                tracing::info!(target: "nbgate::audit", event = "account_totp_locked", user = %claims.u, %client, scope = ?locked.scope, retry_after = secs, "account form refused: locked out");
                Err(secs)
            }
            Err(Refused::InFlight) => Err(1),
        };
        let attempt = match refused {
            Ok(a) => a,
            Err(secs) => {
                self.guard.hold_refusal().await;
                let n = AccountNotice::LockedOut {
                    retry_after_secs: secs,
                };
                return self
                    .account_view(
                        &headers,
                        claims,
                        offer,
                        Some(n),
                        StatusCode::TOO_MANY_REQUESTS,
                    )
                    .await;
            }
        };
        let code = field("code").to_owned();
        let user = claims.u.clone();
        let l = lang(&headers);
        match offer {
            Some(offer) => {
                let secret =
                    Secret::from_base32(&offer.secret).map_err(|_| ProxyError::FormExpired)?;
                let Some(codes) = self.confirm_enrolment(&user, secret, &code).await? else {
                    return self
                        .wrong_code(&headers, claims, Some(offer), attempt, client, "wrong_code")
                        .await;
                };
                attempt.succeeded(&claims.u, Instant::now());
                tracing::info!(target: "nbgate::audit", event = "totp_enrolled", user = %claims.u, %client, via = "account", session = %short(&claims.sid), "TOTP enrolled on the account page");
                let body =
                    render_recovery_codes(l, &codes, CodesReason::Enrolled, &self.account_href());
                Ok(said_by(html(StatusCode::OK, body), claims))
            }
            None => {
                let verified = self
                    .second_factor_io({
                        let user = user.clone();
                        move |c| second_factor::verify(c, &user, &code, now)
                    })
                    .await?;
                match verified {
                    Verified::Replayed => {
                        return self
                            .wrong_code(&headers, claims, None, attempt, client, "replayed_code")
                            .await
                    }
                    Verified::Wrong => {
                        return self
                            .wrong_code(&headers, claims, None, attempt, client, "wrong_code")
                            .await
                    }
                    Verified::Recovery { left } => {
                        tracing::info!(target: "nbgate::audit", event = "recovery_code_used", user = %claims.u, %client, left, session = %short(&claims.sid), "recovery code used on the account page");
                    }
                    Verified::Code => {}
                }
                attempt.succeeded(&claims.u, Instant::now());
                if action == "remove" {
                    self.second_factor_io(move |c| {
                        second_factor::remove(&c.server.state_dir, &user)
                    })
                    .await?;
                    tracing::info!(target: "nbgate::audit", event = "totp_removed", user = %claims.u, %client, via = "account", session = %short(&claims.sid), "TOTP removed on the account page");
                    let r = see_other(&format!("{}?done=removed", self.account_href()));
                    return Ok(said_by(r, claims));
                }
                let codes = self
                    .second_factor_io(move |c| {
                        second_factor::regenerate_recovery(&c.server.state_dir, &user)
                    })
                    .await?;
                tracing::info!(target: "nbgate::audit", event = "recovery_codes_regenerated", user = %claims.u, %client, via = "account", session = %short(&claims.sid), "recovery codes regenerated on the account page");
                let body = render_recovery_codes(
                    l,
                    &codes,
                    CodesReason::Regenerated,
                    &self.account_href(),
                );
                Ok(said_by(html(StatusCode::OK, body), claims))
            }
        }
    }

    /// A wrong code on the account page: counted with the lockout, audited,
    /// the page again with a notice (and the same enrolment offer).
    async fn wrong_code(
        &self,
        headers: &HeaderMap,
        claims: Claims,
        offer: Option<EnrolOffer>,
        attempt: Attempt<'_>,
        client: IpAddr,
        reason: &'static str,
    ) -> Result<Response<ProxyBody>, ProxyError> {
        tracing::info!(target: "nbgate::audit", event = "account_totp_failure", user = %claims.u, %client, reason, session = %short(&claims.sid), "account form refused: code not valid");
        let (notice, status) = match attempt.failed(Some(&claims.u), Instant::now()) {
            Some(locked) => {
                let secs = locked_secs(&locked);
                tracing::warn!(target: "nbgate::audit", event = "lockout", user = %claims.u, %client, scope = ?locked.scope, retry_after = secs, step = "account", "too many failed codes: locked out");
                crate::metrics::lockout();
                (
                    AccountNotice::LockedOut {
                        retry_after_secs: secs,
                    },
                    StatusCode::TOO_MANY_REQUESTS,
                )
            }
            None => (AccountNotice::WrongCode, StatusCode::UNAUTHORIZED),
        };
        self.account_view(headers, claims, offer, Some(notice), status)
            .await
    }
}
