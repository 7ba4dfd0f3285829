//! The request path. `Gateway::handle` is the one function whose steps read
//! in security order: `check_host`, then (as they land) `check_policy`,
//! `serve_own_pages`, `require_session`, then `check_origin` and `forward`
//! (plain HTTP or WebSocket), then `response_filter` and the access log.
//! Forwarded operations Jupyter answered are recorded by `audit` (its
//! request-body tee, its tap on a tunnel's client side): observed, never
//! changed.
//!
//! Submodules: `headers` (pure header rules), `upstream` (connection pool
//! to Jupyter), `transport` (the byte stream to Jupyter and its
//! connector), `upstream_token` (the token presented to Jupyter, configured
//! or discovered), `upstream_identity` (the signed user header that
//! replaces the token under `nbgate run`), `h1` (one HTTP/1.1 exchange on a pooled connection),
//! `websocket` (tunnels), `body` (response body + access log),
//! `response` (the filter every upstream answer passes, whatever the
//! path), `scrub` (the token removed from HTML as it streams),
//! `error` (the single error-to-response mapping). Nothing here accepts
//! connections or touches TLS: `server` does.

pub mod body;
pub mod error;
pub mod guard;
pub mod h1;
pub mod headers;
pub mod health;
pub mod own_pages;
pub mod response;
pub mod scrub;
pub mod transport;
pub mod upstream;
pub mod upstream_identity;
pub mod upstream_token;
pub mod websocket;

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri, Version};
use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;

use self::body::{empty, AccessRecord, LoggedBody, ProxyBody, RequestBody, UpstreamBody};
use self::error::ProxyError;
use self::headers::{strip_token_param, OriginCheck};
use self::upstream::{PooledBody, Upstream};
use self::upstream_token::{Refresh, UpstreamToken};
use self::websocket::{ClientTunnel, TunnelAccepted, Tunnels};
use crate::audit;
use crate::auth::active::Sighting;
use crate::auth::oidc::Sso;
use crate::auth::session::{Claims, Verdict, SESSION_COOKIE};
use crate::auth::{csrf, Authenticator, Check, Identity, SessionCache, UserChanges, Via, Who};
use crate::config::{Config, Secret, UpstreamConfig};
use crate::policy::Refused;
use crate::telemetry::Chain;

/// What the server knows about the connection a request came on.
#[derive(Debug, Clone, Copy)]
pub struct ConnInfo {
    pub peer: SocketAddr,
    /// The connection's client: the peer, or the source a trusted proxy
    /// named in a PROXY protocol header; IPv4-mapped addresses unmapped.
    pub client: IpAddr,
}

/// Shared state of the request path (one per running server): the parts a
/// configuration reload replaces, swapped whole, and the open tunnels.
///
/// Why one swap of everything: a request reads one consistent
/// configuration from its first check to its access line, whatever reload
/// happens meanwhile; the next request sees the new one. Each request
/// takes the snapshot once (`ArcSwap::load_full`, one atomic increment);
/// in-flight requests, uploads, downloads and tunnels keep the one they
/// started with (the upstream connections they hold are theirs).
pub struct Gateway {
    live: ArcSwap<Live>,
    /// Open WebSocket tunnels: shutdown, logout, ending a session on the
    /// sessions page and a reload that revokes a user close them.
    pub tunnels: Arc<Tunnels>,
}

/// One configuration's request path: everything `Gateway::handle` needs.
/// Built at start and at each reload (`Gateway::reload`), sharing state
/// that must outlive a reload with the one before (the upstream pool and
/// token when unchanged, the guard's counts, the session keys).
pub struct Live {
    pub config: Arc<Config>,
    upstream: Arc<Upstream>,
    tunnels: Arc<Tunnels>,
    /// Precomputed `Strict-Transport-Security` value, when enabled.
    hsts: Option<HeaderValue>,
    /// Jupyter's token and its `Authorization: token …` value: configured,
    /// made by `nbgate run`, or found in Jupyter's runtime file.
    token: Arc<UpstreamToken>,
    /// The identity header's key (`nbgate run` only).
    identity: Option<upstream_identity::UpstreamIdentity>,
    pub auth: Arc<Authenticator>,
    /// `<base_url>_nbgate/`: nbgate's own pages.
    prefix: String,
    /// Allowlist, rate limits, lockout, per-client connection caps.
    pub guard: Arc<guard::Guard>,
    /// oidc: single sign-on providers (discovery kept across reloads).
    sso: Arc<Sso>,
    /// passkeys (issue 22 §2): relying party, pending ceremonies (kept
    /// across a reload), credential files.
    pub passkeys: Arc<crate::auth::passkey::Passkeys>,
}

/// The client address with IPv4-mapped IPv6 (`::ffff:1.2.3.4`) unmapped, so
/// logs, headers and (later) allowlists see one form per client.
pub fn client_ip(peer: SocketAddr) -> IpAddr {
    match peer.ip() {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    }
}

impl Gateway {
    pub fn new(config: Arc<Config>, auth: Arc<Authenticator>) -> Self {
        let tunnels = Arc::new(Tunnels::default());
        let upstream = Arc::new(Upstream::new(&config.upstream));
        let token = Arc::new(UpstreamToken::new(&config.upstream));
        let guard = Arc::new(guard::Guard::new(&config.policy));
        let sso = Arc::new(Sso::new(&config.auth, auth.csrf_key()));
        let passkeys = Arc::new(crate::auth::passkey::Passkeys::new(&config));
        let live = Live::new(
            config,
            auth,
            upstream,
            token,
            guard,
            OtherLogins { sso, passkeys },
            Arc::clone(&tunnels),
        );
        Gateway {
            live: ArcSwap::from_pointee(live),
            tunnels,
        }
    }

    /// The configuration's request path in force now.
    pub fn live(&self) -> Arc<Live> {
        self.live.load_full()
    }

    /// The policy in force now (the accept loop asks it first).
    pub fn guard(&self) -> Arc<guard::Guard> {
        Arc::clone(&self.live.load().guard)
    }

    /// Handles one request with the configuration in force when it
    /// arrives. Never fails: every error becomes a response; the `Result`
    /// is hyper's service contract.
    pub fn handle(
        &self,
        req: Request<RequestBody>,
        conn: ConnInfo,
        sessions: Arc<SessionCache>,
    ) -> impl std::future::Future<Output = Result<Response<ProxyBody>, std::convert::Infallible>>
           + Send
           + 'static {
        self.live.load_full().handle(req, conn, sessions)
    }

    /// Puts a reloaded configuration in force for every later request,
    /// with its authenticator (made by `Authenticator::reloaded`). The
    /// upstream pool and Jupyter's token are kept when `[upstream]` did not
    /// change; the guard keeps its counts (`Guard::reloaded`). Closes the
    /// tunnels of users whose credentials the reload revoked (their
    /// sessions and tokens are refused from the next request on).
    pub fn reload(&self, config: Arc<Config>, auth: Arc<Authenticator>, changes: &UserChanges) {
        let old = self.live();
        let same_upstream = upstream_unchanged(&old.config.upstream, &config.upstream);
        let (upstream, token) = if same_upstream {
            (Arc::clone(&old.upstream), Arc::clone(&old.token))
        } else {
            tracing::info!(upstream = %config.upstream.url, "upstream changed: new requests and tunnels go to it");
            (
                Arc::new(Upstream::new(&config.upstream)),
                Arc::new(UpstreamToken::new(&config.upstream)),
            )
        };
        let guard = Arc::new(old.guard.reloaded(&config.policy));
        let sso = Arc::new(old.sso.reloaded(&config.auth, auth.csrf_key()));
        let passkeys = Arc::new(old.passkeys.reloaded(&config));
        let live = Live::new(
            config,
            auth,
            upstream,
            token,
            guard,
            OtherLogins { sso, passkeys },
            Arc::clone(&self.tunnels),
        );
        self.live.store(Arc::new(live));
        for user in &changes.removed {
            self.close_tunnels(user, "user removed", |t| t.close_user(user));
        }
        for user in &changes.password_changed {
            self.close_tunnels(user, "password changed", |t| t.close_user_sessions(user));
        }
        for user in &changes.tokens_changed {
            self.close_tunnels(user, "tokens changed", |t| t.close_user_tokens(user));
        }
    }

    fn close_tunnels(&self, user: &str, reason: &str, close: impl Fn(&Tunnels) -> usize) {
        let closed = close(&self.tunnels);
        tracing::info!(target: "nbgate::audit", event = "credentials_revoked", user = %user, reason, tunnels_closed = closed, "reload: credentials revoked");
    }
}

/// Whether a reload may keep the upstream pool and token: every setting
/// of `[upstream]` is the same (the token compared by value).
fn upstream_unchanged(a: &UpstreamConfig, b: &UpstreamConfig) -> bool {
    a.url == b.url
        && a.token_file == b.token_file
        && a.token_env == b.token_env
        && a.identity_header == b.identity_header
        && a.token.as_ref().map(Secret::expose) == b.token.as_ref().map(Secret::expose)
        && a.connect_timeout == b.connect_timeout
        && a.response_timeout == b.response_timeout
        && a.pool_idle_timeout == b.pool_idle_timeout
        && a.pool_max_idle == b.pool_max_idle
}

/// The ways in besides a password, kept across reloads with their state
/// (SSO discovery, pending passkey ceremonies).
struct OtherLogins {
    sso: Arc<Sso>,
    passkeys: Arc<crate::auth::passkey::Passkeys>,
}

impl Live {
    fn new(
        config: Arc<Config>,
        auth: Arc<Authenticator>,
        upstream: Arc<Upstream>,
        token: Arc<UpstreamToken>,
        guard: Arc<guard::Guard>,
        OtherLogins { sso, passkeys }: OtherLogins,
        tunnels: Arc<Tunnels>,
    ) -> Self {
        let hsts = config.tls.hsts.then(|| {
            HeaderValue::from_str(&format!("max-age={}", config.tls.hsts_max_age.as_secs()))
                .expect("digits are a valid header value")
        });
        let prefix = format!("{}_nbgate/", config.auth.base_url);
        let identity = upstream_identity::UpstreamIdentity::new(&config.upstream);
        Live {
            identity,
            sso,
            guard,
            auth,
            prefix,
            config,
            upstream,
            tunnels,
            hsts,
            token,
            passkeys,
        }
    }

    /// Handles one request (see `Gateway::handle`).
    async fn handle(
        self: Arc<Self>,
        req: Request<RequestBody>,
        conn: ConnInfo,
        sessions: Arc<SessionCache>,
    ) -> Result<Response<ProxyBody>, std::convert::Infallible> {
        let start = Instant::now();
        // Behind a trusted proxy, the client its forwarding headers name;
        // everyone else's such headers are ignored (and replaced upstream).
        let named = self.guard.client_of(conn.client, req.headers());
        let client = named.unwrap_or(conn.client);
        let method = req.method().clone();
        let version = req.version();
        // Only the path is logged (the query may carry tokens). A clone of
        // the parsed URI shares its bytes: no copy per request.
        let uri = req.uri().clone();
        let prefs = ErrorPrefs::of(req.headers());
        // Dropped with this future when the client goes away before the
        // answer (hyper and the h2 driver drop the request's future then).
        let mut gave_up = GiveUpLog {
            client,
            method: &method,
            uri: &uri,
            start,
            armed: self.config.log.access_log,
            who: None,
        };

        let mut resp = match self
            .route(
                req,
                conn,
                client,
                named.is_some(),
                &sessions,
                &mut gave_up.who,
            )
            .await
        {
            Ok(r) => r,
            Err(e) => {
                if e.is_upstream_failure() {
                    tracing::warn!(error = %Chain(&e), path = %uri.path(), "upstream failed");
                } else {
                    tracing::debug!(error = %Chain(&e), %client, path = %uri.path(), "request refused");
                }
                e.into_response(&prefs.headers())
            }
        };
        gave_up.armed = false;
        let who = gave_up.who.take();
        drop(gave_up);
        self.response_filter(&mut resp);
        let h2_tunnel = resp.extensions().get::<TunnelAccepted>().is_some();
        let tunnel = h2_tunnel || resp.status() == StatusCode::SWITCHING_PROTOCOLS;
        // An HTTP/2 tunnel's 200 counts as the opened tunnel it is (the
        // `websocket` kind of the 101 an HTTP/1.1 client gets).
        let status = if h2_tunnel {
            StatusCode::SWITCHING_PROTOCOLS
        } else {
            resp.status()
        };
        crate::metrics::request(
            uri.path().starts_with(self.prefix.as_str()),
            status.as_u16(),
            start,
        );

        // A tunnel logs its own lines (`Tunnel::run`).
        if !self.config.log.access_log || tunnel {
            return Ok(resp);
        }
        // nbgate's own pages (login, logout) say who in the response.
        let who = who.or_else(|| resp.extensions_mut().remove::<Who>());
        let record = AccessRecord {
            client,
            method,
            uri,
            status: resp.status().as_u16(),
            version,
            start,
            who,
        };
        Ok(resp.map(|b| LoggedBody::new(b, Some(record)).boxed_unsync()))
    }

    async fn route(
        &self,
        mut req: Request<RequestBody>,
        conn: ConnInfo,
        client: IpAddr,
        known: bool,
        sessions: &SessionCache,
        who: &mut Option<Who>,
    ) -> Result<Response<ProxyBody>, ProxyError> {
        self.check_policy(conn, client, known)?;
        let host = check_host(&req)?;
        if let Some(rest) = req.uri().path().strip_prefix(self.prefix.as_str()) {
            self.check_rate(client, false)?;
            let rest = rest.to_owned();
            // Boxed: the login handler's state must not enlarge every
            // forwarded request's future (it is moved on each poll setup).
            return Box::pin(self.serve_own_pages(req, &rest, client, &host)).await;
        }
        let identity = match self.require_session(&req, client, sessions).await {
            Ok(id) => id,
            Err(refused) => {
                // Refused requests spend the small anonymous budget.
                self.check_rate(client, false)?;
                return Err(refused);
            }
        };
        *who = Some(Who::Known(identity.clone()));
        self.check_rate(client, true)?;
        check_origin(&req, &host, identity.via)?;
        // A CONNECT opens a WebSocket over HTTP/2 or is refused.
        let h2_tunnel = if *req.method() == Method::CONNECT {
            Some(websocket_connect(&req)?)
        } else {
            None
        };
        // HTTP/1.1 only: RFC 9110 §7.8 says a server must ignore `Upgrade`
        // in an HTTP/1.0 request (an old intermediary may have forwarded
        // it without understanding it, so a 101 could desynchronize the
        // connection); such a request is forwarded as a plain one, its
        // `Upgrade` removed with the other hop-by-hop headers.
        let mut resp = if let Some(tunnel) = h2_tunnel {
            let client_side = ClientSide::Http2(tunnel);
            Box::pin(self.forward_websocket(req, client_side, client, &host, &identity)).await?
        } else if req.version() == Version::HTTP_11 && headers::is_websocket_upgrade(req.headers())
        {
            let client_side = ClientSide::Http1(hyper::upgrade::on(&mut req));
            Box::pin(self.forward_websocket(req, client_side, client, &host, &identity)).await?
        } else {
            // Kept flat (no `forward` future holding the request and
            // the exchange): this future is moved whole whenever hyper
            // spawns or stores it, so its size is a cost per request.
            let mut op = self.audit_op(&req, &identity, client);
            let up_req = self.upstream_request(req, client, &host, &identity, op.as_mut())?;
            // A discovered token may be stale (Jupyter restarted): a
            // request without a body can be sent again with the new one.
            let replay = self
                .token
                .discovers()
                .then(|| upstream::replayable(&up_req))
                .flatten();
            let mut resp = self.upstream.send(up_req).await?;
            if self.token.discovers()
                && upstream_token::refused(
                    resp.status(),
                    resp.headers(),
                    &self.config.auth.base_url,
                )
            {
                resp = Box::pin(self.reauthenticate(resp, replay)).await?;
            }
            audited(self.client_response(resp, &host)?, op)
        };
        if let Some(c) = identity
            .refresh_cookie
            .as_deref()
            .and_then(|c| HeaderValue::from_str(c).ok())
        {
            resp.headers_mut().append(header::SET_COOKIE, c);
        }
        Ok(resp)
    }

    /// The allowlist for clients that only forwarding headers revealed
    /// (every other client was checked at accept, before TLS). A client a
    /// trusted proxy's header hides (`known == false`) fails an allowlist.
    fn check_policy(&self, conn: ConnInfo, client: IpAddr, known: bool) -> Result<(), ProxyError> {
        if !self.guard.is_trusted(conn.client) || self.guard.proxy_protocol {
            return Ok(());
        }
        let allowed = if known {
            self.guard.access.permits(client)
        } else {
            self.guard.access.allow.is_empty()
        };
        if !allowed {
            tracing::info!(target: "nbgate::audit", event = "request_refused", %client, known, via = %conn.client, reason = "not_allowed", "request refused: address not allowed");
            crate::metrics::denied("not_allowed");
            return Err(ProxyError::Forbidden);
        }
        Ok(())
    }

    /// Per-client request budget: anonymous clients get a small one,
    /// logged-in users (JupyterLab loads ~100 files at once) a large one.
    fn check_rate(&self, client: IpAddr, logged_in: bool) -> Result<(), ProxyError> {
        self.guard.check_rate(client, logged_in).map_err(|secs| {
            tracing::debug!(target: "nbgate::audit", event = "rate_limited", %client, logged_in, retry_after = secs, "request rate limited");
            crate::metrics::rate_limited();
            ProxyError::RateLimited(secs)
        })
    }

    async fn serve_own_pages(
        &self,
        req: Request<RequestBody>,
        rest: &str,
        client: IpAddr,
        host: &str,
    ) -> Result<Response<ProxyBody>, ProxyError> {
        own_pages::Pages {
            auth: &self.auth,
            guard: &self.guard,
            tunnels: &self.tunnels,
            base_url: &self.config.auth.base_url,
            prefix: &self.prefix,
            upstream: &self.upstream,
            host,
            passkeys: &self.passkeys,
            config: &self.config,
            sso: &self.sso,
        }
        .serve(req, rest, client)
        .await
    }

    /// Nothing behind nbgate is reachable without a valid session cookie or
    /// API token. A browser navigation is sent to the login page; API calls,
    /// XHR and WebSocket upgrades get 401 JSON (a WebSocket cannot follow a
    /// redirect).
    async fn require_session<B>(
        &self,
        req: &Request<B>,
        client: IpAddr,
        sessions: &SessionCache,
    ) -> Result<Identity, ProxyError> {
        // An `Authorization` header is an API client's explicit choice.
        let (header_token, query_token) = api_token(req);
        if let Some(token) = header_token {
            return self.token_identity(client, token).await;
        }
        // Where the session is seen from, for its sessions page: read only
        // on a connection's first request with a valid cookie.
        let seen = || Sighting {
            client,
            user_agent: req
                .headers()
                .get(header::USER_AGENT)
                .and_then(|v| v.to_str().ok()),
        };
        let verdict = own_pages::cookie(req.headers(), SESSION_COOKIE)
            .and_then(|v| self.auth.check_session_cached(v, sessions, seen));
        if let Some(Verdict::Valid { claims, refresh }) = verdict {
            let refresh_cookie = refresh.then(|| self.auth.refresh(Claims::clone(&claims)));
            return Ok(Identity::session(claims, refresh_cookie));
        }
        // A `?token=` counts only without a valid session: links and
        // bookmarks from Jupyter's own `…/lab?token=…` must not turn a
        // logged-in browser's request into a refused token check. (The
        // parameter never reaches Jupyter either way.)
        if let Some(token) = query_token {
            return self.token_identity(client, token).await;
        }
        let navigation = matches!(*req.method(), Method::GET | Method::HEAD)
            && error::wants_html(req.headers())
            && !headers::is_websocket_upgrade(req.headers());
        let login = navigation.then(|| {
            let target = req.uri().path_and_query().map_or("/", |p| p.as_str());
            let next: String = form_urlencoded::byte_serialize(target.as_bytes()).collect();
            format!("{}login?next={next}", self.prefix)
        });
        Err(ProxyError::LoginRequired { login })
    }

    async fn token_identity(&self, client: IpAddr, token: String) -> Result<Identity, ProxyError> {
        // A token verified moments ago costs nothing to accept again, so
        // it is let through even from a locked-out address (a shared
        // NAT address must not lock out working API clients).
        if let Some(user) = self.auth.recently_verified_token(&token) {
            return Ok(Identity::token(user));
        }
        // Verifying a new token (PBKDF2, refusal timers) is rare: boxed,
        // so that its state does not enlarge the future of every request.
        Box::pin(self.verify_token(client, token)).await
    }

    /// A token not verified recently: checked against the users' tokens,
    /// subject to the anonymous rate budget and the lockout.
    async fn verify_token(&self, client: IpAddr, token: String) -> Result<Identity, ProxyError> {
        let now = std::time::Instant::now();
        // Unverified tokens cost PBKDF2: they spend the anonymous budget
        // first, like any other request without a session.
        self.guard
            .check_rate(client, false)
            .map_err(ProxyError::RateLimited)?;
        let attempt = match self.guard.lockout.begin(client, None, now) {
            Ok(attempt) => attempt,
            Err(Refused::Locked(locked)) => {
                let secs = guard::locked_secs(&locked);
                tracing::info!(target: "nbgate::audit", event = "token_locked", %client, retry_after = secs, "api token refused: locked out");
                crate::metrics::token_check(crate::metrics::TokenCheck::Locked);
                self.guard.hold_refusal().await;
                return Err(ProxyError::LockedOut(secs));
            }
            Err(Refused::InFlight) => {
                tracing::info!(target: "nbgate::audit", event = "token_busy", %client, reason = "in_flight", "api token refused: attempts from this address are still being verified");
                crate::metrics::token_check(crate::metrics::TokenCheck::Busy);
                self.guard.hold_refusal().await;
                return Err(ProxyError::Busy);
            }
        };
        match self.auth.check_token(&token).await {
            Check::Valid(found) => {
                attempt.succeeded(&found.user, now);
                tracing::debug!(target: "nbgate::audit", event = "token_use", user = %found.user, token_id = %found.id, %client, "api token accepted");
                crate::metrics::token_check(crate::metrics::TokenCheck::Valid);
                Ok(Identity::token(found))
            }
            Check::Invalid { .. } => {
                tracing::info!(target: "nbgate::audit", event = "token_failure", %client, "api token refused");
                crate::metrics::token_check(crate::metrics::TokenCheck::Invalid);
                if let Some(locked) = attempt.failed(None, now) {
                    tracing::warn!(target: "nbgate::audit", event = "lockout", %client, scope = ?locked.scope, retry_after = guard::locked_secs(&locked), "too many invalid tokens: locked out");
                    crate::metrics::lockout();
                }
                Err(ProxyError::InvalidToken)
            }
            Check::Busy => {
                drop(attempt);
                tracing::warn!(target: "nbgate::audit", event = "token_busy", %client, "api token refused: too many verifications in flight");
                crate::metrics::token_check(crate::metrics::TokenCheck::Busy);
                self.guard.hold_refusal().await;
                Err(ProxyError::Busy)
            }
        }
    }

    /// Rewrites a client request into the request Jupyter receives.
    fn upstream_request_filter(
        &self,
        parts: &mut http::request::Parts,
        client: IpAddr,
        host: &str,
        identity: &Identity,
    ) -> Result<(), ProxyError> {
        if identity.via == Via::Token {
            // nbgate's API token is for nbgate only: Jupyter gets its own.
            parts.headers.remove(header::AUTHORIZATION);
        }
        // Nor does a `token` parameter reach Jupyter, whoever sent it: it is
        // nbgate's token, or a stale one of Jupyter's that would make Jupyter
        // refuse the request it authenticates itself (nbgate injects the
        // right one). Only a query that may hold one is rewritten.
        if parts
            .uri
            .query()
            .is_some_and(|q| q.contains("oken") || q.contains('%'))
        {
            let pq = parts.uri.path_and_query().map_or("/", |p| p.as_str());
            parts.uri = strip_token_param(pq)
                .parse()
                .map_err(|_| ProxyError::BadRequestTarget)?;
        }
        strip_own_cookies(&mut parts.headers);
        // Jupyter gets the origin-form target (`/path?query`); an HTTP/2
        // request's scheme and authority go (its `Host` is set below).
        // Sharing the parsed path's bytes costs no copy.
        let pq = match parts.uri.path_and_query() {
            Some(pq) if pq.as_str().starts_with('/') => pq.clone(),
            _ => return Err(ProxyError::BadRequestTarget),
        };
        parts.uri = Uri::from(pq);
        parts.version = Version::HTTP_11;
        headers::remove_hop_by_hop(&mut parts.headers);
        headers::set_forwarded(&mut parts.headers, client, host);
        headers::present_to_upstream(
            &mut parts.headers,
            &self.upstream.authority,
            &self.upstream.host_header,
            host,
        );
        if let Some(name) = &self.config.upstream.identity_header {
            headers::set_identity(&mut parts.headers, name, identity.user());
        }
        // Signed with the user's name, the request needs no token: apps
        // behind jupyter-server-proxy no longer receive Jupyter's master
        // credential with every request (issue 9).
        let signed = upstream_identity::present(
            &mut parts.headers,
            self.identity.as_ref(),
            identity.user(),
            &parts.method,
            parts.uri.path_and_query().map_or("/", |p| p.as_str()),
        );
        if let Some(c) = &*self.token.current() {
            if !signed {
                parts
                    .headers
                    .insert(header::AUTHORIZATION, c.header.clone());
            }
            // Fail closed: a compressed page could not be scrubbed of the
            // token, so Jupyter is never asked to compress while it knows
            // a token it may write into a page (on every request: which
            // answers are HTML is known only afterwards). Free for
            // Jupyter: its Tornado app has no `compress_response`, so it
            // compresses nothing anyway.
            parts.headers.remove(header::ACCEPT_ENCODING);
        }
        Ok(())
    }

    /// Jupyter refused the token nbgate sent with a discovered token: look
    /// for Jupyter's current one, send a bodiless request again with it,
    /// and never show Jupyter's own login page to a user who logged in to
    /// nbgate.
    async fn reauthenticate(
        &self,
        resp: Response<PooledBody>,
        replay: Option<Request<UpstreamBody>>,
    ) -> Result<Response<PooledBody>, ProxyError> {
        // The token this request carried (what `upstream_request_filter`
        // injected), else the current one.
        let current = self.token.current().clone();
        let used = match &replay {
            Some(r) => r
                .headers()
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("token ")),
            None => current.as_deref().map(|c| &*c.token),
        };
        match self.token.refresh(used).await {
            Refresh::Unchanged => Ok(resp),
            Refresh::Missing => Err(ProxyError::UpstreamAuth),
            Refresh::Changed => {
                let Some(mut again) = replay else {
                    return Ok(resp);
                };
                drop(resp);
                let h = again.headers_mut();
                match &*self.token.current() {
                    Some(c) => h.insert(header::AUTHORIZATION, c.header.clone()),
                    None => h.remove(header::AUTHORIZATION),
                };
                let resp = self.upstream.send(again).await?;
                if upstream_token::refused(
                    resp.status(),
                    resp.headers(),
                    &self.config.auth.base_url,
                ) && self.token.current().is_none()
                {
                    return Err(ProxyError::UpstreamAuth);
                }
                Ok(resp)
            }
        }
    }

    /// The request Jupyter receives for a client's request; its body is
    /// observed (not changed) when `audit` needs fields of it.
    fn upstream_request(
        &self,
        req: Request<RequestBody>,
        client: IpAddr,
        host: &str,
        identity: &Identity,
        audit: Option<&mut audit::body::Pending>,
    ) -> Result<Request<UpstreamBody>, ProxyError> {
        let (mut parts, body) = req.into_parts();
        self.upstream_request_filter(&mut parts, client, host, identity)?;
        let body = match audit {
            Some(pending) => pending.tee(body).boxed_unsync(),
            None => body.boxed_unsync(),
        };
        Ok(Request::from_parts(parts, body))
    }

    /// The operation a request is, for the audit (`audit::classify`);
    /// `None` for most requests (pages, static files, listings).
    fn audit_op<B>(
        &self,
        req: &Request<B>,
        identity: &Identity,
        client: IpAddr,
    ) -> Option<audit::body::Pending> {
        let path = req.uri().path().strip_prefix(&*self.config.auth.base_url)?;
        let op = audit::classify::classify(req.method(), path, req.uri().query())?;
        Some(audit::body::Pending::new(op, actor(identity, client)))
    }

    /// Jupyter's response as the client gets it (before security headers).
    fn client_response(
        &self,
        resp: Response<PooledBody>,
        host: &str,
    ) -> Result<Response<ProxyBody>, ProxyError> {
        // The guard holds the current token without touching its count.
        let token = self.token.current();
        response::upstream_response_filter(resp, &self.response_rules(host, &token))
    }

    /// The rules of `response::upstream_response_filter` for this request:
    /// the token to scrub is the one nbgate injects now.
    ///
    /// Jupyter writes the token of a token-authenticated request into its
    /// HTML (JupyterLab's page config, `data-jupyter-api-token`). The token
    /// must never reach a browser — with it, anyone on the machine could
    /// talk to Jupyter around nbgate — so every HTML answer is scrubbed of
    /// it (`response`).
    fn response_rules<'a>(
        &'a self,
        host: &'a str,
        token: &'a Option<Arc<upstream_token::Credential>>,
    ) -> response::ResponseRules<'a> {
        response::ResponseRules {
            upstream_origins: &self.upstream.self_origins,
            public_host: host,
            token: token.as_deref().map(|c| &*c.token),
        }
    }

    /// A WebSocket: Jupyter is asked for an HTTP/1.1 upgrade on a
    /// connection of the tunnel's own, whichever way the client came.
    ///
    /// An HTTP/2 client's extended CONNECT (RFC 8441) is bridged to the
    /// upgrade Jupyter speaks: `GET` with `Connection: upgrade`, `Upgrade:
    /// websocket` and a `Sec-WebSocket-Key` of nbgate's own (RFC 8441 §5
    /// has no key: the stream is the proof), the client's
    /// `Sec-WebSocket-Protocol`/`-Extensions`/`-Version` passed on; Jupyter's
    /// 101 becomes a 200 carrying only the chosen subprotocol and
    /// extensions, echoed exactly (`Connection`, `Upgrade` and
    /// `Sec-WebSocket-Accept` mean nothing or are illegal in HTTP/2).
    async fn forward_websocket(
        &self,
        req: Request<RequestBody>,
        client_side: ClientSide,
        client: IpAddr,
        host: &str,
        identity: &Identity,
    ) -> Result<Response<ProxyBody>, ProxyError> {
        let (mut parts, _body) = req.into_parts();
        let log_path = parts.uri.path().to_owned();
        let h2 = matches!(client_side, ClientSide::Http2(_));
        let upgrade = parts
            .headers
            .get(header::UPGRADE)
            .filter(|_| !h2)
            .cloned()
            .unwrap_or_else(|| HeaderValue::from_static("websocket"));
        if h2 {
            parts.method = Method::GET;
            parts
                .headers
                .insert(header::SEC_WEBSOCKET_KEY, websocket::new_key());
            if !parts.headers.contains_key(header::SEC_WEBSOCKET_VERSION) {
                parts.headers.insert(
                    header::SEC_WEBSOCKET_VERSION,
                    HeaderValue::from_static("13"),
                );
            }
        }
        self.upstream_request_filter(&mut parts, client, host, identity)?;
        parts
            .headers
            .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        parts.headers.insert(header::UPGRADE, upgrade);
        let up_req = Request::from_parts(parts, empty());

        // A tunnel gets its own connection: it never returns to the pool.
        let stream = self
            .upstream
            .connector
            .connect()
            .await
            .map_err(ProxyError::UpstreamConnect)?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(ProxyError::UpstreamProtocol)?;
        tokio::spawn(async move {
            if let Err(e) = conn.with_upgrades().await {
                tracing::debug!(error = %e, "upstream websocket connection ended");
            }
        });
        let mut up_resp = sender
            .send_request(up_req)
            .await
            .map_err(ProxyError::UpstreamProtocol)?;
        if up_resp.status() != StatusCode::SWITCHING_PROTOCOLS {
            // A stale discovered token: find the new one for the client's
            // next attempt (JupyterLab reconnects its sockets by itself).
            if self.token.discovers()
                && upstream_token::refused(
                    up_resp.status(),
                    up_resp.headers(),
                    &self.config.auth.base_url,
                )
            {
                let current = self.token.current().clone();
                let used = current.as_deref().map(|c| &*c.token);
                if self.token.refresh(used).await == Refresh::Missing {
                    return Err(ProxyError::UpstreamAuth);
                }
            }
            // An HTTP/2 client takes any 2xx to its CONNECT for an open
            // WebSocket (RFC 8441 §5): a page Jupyter served instead
            // (`/lab` asked for as a WebSocket) must not look like one.
            if h2 && up_resp.status().is_success() {
                return Err(ProxyError::NotAWebSocket);
            }
            // Jupyter refused (unknown kernel, 403 ...) or answered as to a
            // plain request (`GET /lab` with `Upgrade: websocket`): its
            // answer passes the same filter as any other, or the page with
            // the token in it would reach the client unscrubbed.
            let token = self.token.current();
            return response::upstream_response_filter(up_resp, &self.response_rules(host, &token));
        }
        let upstream_upgrade = hyper::upgrade::on(&mut up_resp);
        let mut guard = self.tunnels.register(identity);
        guard.tap = log_path
            .strip_prefix(&*self.config.auth.base_url)
            .and_then(|path| {
                let chosen = up_resp.headers().get(header::SEC_WEBSOCKET_PROTOCOL);
                let chosen = chosen.and_then(|v| v.to_str().ok());
                let actor = actor(identity, client);
                audit::tap::for_tunnel(path, chosen, actor, &self.config.audit)
            });
        let idle = self.config.upstream.websocket_idle_timeout;
        let tunnel = Tunnel {
            guard,
            idle,
            client,
            path: log_path,
        };
        let mut resp = Response::new(empty());
        match client_side {
            ClientSide::Http1(client_upgrade) => {
                tokio::spawn(tunnel.run(
                    async move { client_upgrade.await.map(TokioIo::new) },
                    upstream_upgrade,
                    "http/1.1",
                ));
                *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
                for (name, value) in up_resp.headers() {
                    resp.headers_mut().append(name.clone(), value.clone());
                }
                // `Connection`/`Upgrade` stay (they make the 101); the rest
                // of the header rules hold for a 101 as for any answer.
                let token = self.token.current();
                response::filter_headers(resp.headers_mut(), &self.response_rules(host, &token));
            }
            ClientSide::Http2(stream) => {
                tokio::spawn(tunnel.run(stream, upstream_upgrade, "h2"));
                for name in [
                    header::SEC_WEBSOCKET_PROTOCOL,
                    header::SEC_WEBSOCKET_EXTENSIONS,
                ] {
                    if let Some(v) = up_resp.headers().get(&name) {
                        resp.headers_mut().insert(name, v.clone());
                    }
                }
                resp.extensions_mut().insert(TunnelAccepted);
            }
        }
        Ok(resp)
    }

    /// Jupyter's reachability, for the admin listener's `/health` and metrics.
    pub async fn upstream_health(&self) -> health::Health {
        self.upstream.health().await
    }

    /// Security headers on everything nbgate returns.
    fn response_filter(&self, resp: &mut Response<ProxyBody>) {
        headers::add_security_headers(resp.headers_mut(), self.hsts.as_ref());
    }
}

/// Who did an audited operation.
fn actor(identity: &Identity, client: IpAddr) -> audit::Actor {
    audit::Actor {
        user: identity.user().to_owned(),
        auth: identity.auth_kind(),
        auth_id: identity.credential_id().to_owned(),
        client,
    }
}

/// Jupyter's answer to an audited request: the event is recorded now, or
/// (when it needs a field of the answer) once its body has passed.
fn audited(
    resp: Response<ProxyBody>,
    pending: Option<audit::body::Pending>,
) -> Response<ProxyBody> {
    let Some(pending) = pending else {
        return resp;
    };
    let location = resp
        .headers()
        .get(header::LOCATION)
        .and_then(|v| v.to_str().ok());
    match pending.answered(resp.status().as_u16(), location) {
        Some(answered) => resp.map(|b| audit::body::Observed::new(b, answered).boxed_unsync()),
        None => resp,
    }
}

/// Logs a request whose client gave up before nbgate had an answer for it
/// (a closed connection, an HTTP/2 reset): without it such a request
/// leaves no line at all. Disarmed once the answer exists;
/// from then on the access record logs the request.
struct GiveUpLog<'a> {
    client: IpAddr,
    method: &'a Method,
    uri: &'a Uri,
    start: Instant,
    armed: bool,
    /// Who the request was from, once known: the line names them.
    who: Option<Who>,
}

impl Drop for GiveUpLog<'_> {
    fn drop(&mut self) {
        if self.armed {
            let who = self.who.as_ref();
            tracing::info!(
                target: "nbgate::access",
                client = %self.client,
                user = who.and_then(Who::user),
                auth = who.and_then(Who::auth_kind),
                auth_id = who.and_then(Who::credential_id),
                method = %self.method,
                path = %self.uri.path(),
                duration_ms = self.start.elapsed().as_millis() as u64,
                "client gave up before the answer"
            );
        }
    }
}

/// The client's side of a CONNECT, which opens a WebSocket over HTTP/2
/// (RFC 8441: an extended CONNECT with `:protocol = websocket`, which
/// `server::http2` hands over as a `ClientTunnel`) and nothing else.
///
/// # Errors
/// A CONNECT without `:protocol` asks for a tunnel to another host:
/// `ConnectNotAllowed` (no open proxy). One with another `:protocol`:
/// `UnsupportedProtocol`.
fn websocket_connect(
    req: &Request<RequestBody>,
) -> Result<tokio::sync::oneshot::Receiver<websocket::TunnelIo>, ProxyError> {
    if let Some(tunnel) = req
        .extensions()
        .get::<ClientTunnel>()
        .and_then(ClientTunnel::take)
    {
        return Ok(tunnel);
    }
    if req.extensions().get::<h2::ext::Protocol>().is_some() {
        return Err(ProxyError::UnsupportedProtocol);
    }
    Err(ProxyError::ConnectNotAllowed)
}

/// The client side of a WebSocket: the connection hyper hands over after
/// the 101, or the HTTP/2 stream `server::http2` hands over after the 200.
enum ClientSide {
    Http1(hyper::upgrade::OnUpgrade),
    Http2(tokio::sync::oneshot::Receiver<websocket::TunnelIo>),
}

/// A tunnel accepted by Jupyter, before its two sides are open.
struct Tunnel {
    guard: websocket::TunnelGuard,
    idle: Duration,
    client: IpAddr,
    path: String,
}

impl Tunnel {
    /// Waits for both sides, pumps, and writes the tunnel's access lines
    /// (`via`: the client's protocol).
    async fn run<C, IO, E>(
        self,
        client_side: C,
        upstream_upgrade: hyper::upgrade::OnUpgrade,
        via: &'static str,
    ) where
        C: Future<Output = Result<IO, E>>,
        IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
        E: std::fmt::Display,
    {
        let Tunnel {
            mut guard,
            idle,
            client,
            path,
        } = self;
        let (c, u) = tokio::join!(client_side, upstream_upgrade);
        let (c, u) = match (c, u) {
            (Ok(c), Ok(u)) => (c, u),
            (Err(e), _) => {
                tracing::debug!(error = %e, %client, %path, via, "websocket upgrade failed (client)");
                return;
            }
            (_, Err(e)) => {
                tracing::debug!(error = %e, %client, %path, via, "websocket upgrade failed (upstream)");
                return;
            }
        };
        let start = Instant::now();
        let tap = guard.tap.take();
        let who = &guard.who;
        let (user, auth, auth_id) = (who.user(), who.auth_kind(), who.credential_id());
        tracing::info!(target: "nbgate::access", %client, user, auth, auth_id, %path, via, "tunnel opened");
        let (reason, stats) = websocket::pump(
            audit::tap::Tapped::new(c, tap),
            TokioIo::new(u),
            idle,
            guard.cancel.clone(),
        )
        .await;
        tracing::info!(
            target: "nbgate::access",
            %client,
            user,
            auth,
            auth_id,
            %path,
            via,
            bytes_up = stats.bytes_up,
            bytes_down = stats.bytes_down,
            duration_ms = start.elapsed().as_millis() as u64,
            reason = ?reason,
            "tunnel closed"
        );
    }
}

/// The API token of a request: `Authorization: token …` / `Bearer …`, or
/// `?token=` (what jupyter_client and WebSocket URLs use).
/// The API token of a request: from `Authorization: token|Bearer …`, or
/// else from a `token` query parameter (WebSocket clients cannot set
/// headers). Any other `Authorization` scheme means no token at all.
fn api_token<B>(req: &Request<B>) -> (Option<String>, Option<String>) {
    if let Some(v) = req.headers().get(header::AUTHORIZATION) {
        let token = v.to_str().ok().and_then(|v| {
            let (scheme, rest) = v.trim().split_once(' ')?;
            (scheme.eq_ignore_ascii_case("token") || scheme.eq_ignore_ascii_case("bearer"))
                .then(|| rest.trim().to_owned())
        });
        return (token, None);
    }
    let query = req.uri().query().and_then(|q| {
        form_urlencoded::parse(q.as_bytes())
            .find(|(k, _)| k == "token")
            .map(|(_, v)| v.into_owned())
    });
    (None, query)
}

/// Removes nbgate's own cookies before a request goes to Jupyter.
fn strip_own_cookies(h: &mut HeaderMap) {
    let is_own = |kv: &str| {
        // Trimmed as Jupyter (Tornado) trims names: `name =v` is `name`.
        let name = kv.split_once('=').map_or(kv, |(k, _)| k).trim_end();
        name == SESSION_COOKIE
            || name == csrf::CSRF_COOKIE
            || name == crate::auth::pending::PENDING_COOKIE
    };
    let mut cookies = h.get_all(header::COOKIE).iter();
    let (Some(only), None) = (cookies.next(), cookies.next()) else {
        if h.contains_key(header::COOKIE) {
            rewrite_cookies(h, is_own);
        }
        return;
    };
    // One header with none of nbgate's cookies (or with nothing else) is
    // decided in one pass, without building a new value.
    let Ok(v) = only.to_str() else {
        return rewrite_cookies(h, is_own);
    };
    let (mut own, mut other) = (false, false);
    for kv in own_pages::cookie_pairs(v) {
        if is_own(kv) {
            own = true;
        } else {
            other = true;
        }
    }
    match (own, other) {
        (false, _) => {}
        (true, false) => {
            h.remove(header::COOKIE);
        }
        (true, true) => rewrite_cookies(h, is_own),
    }
}

/// Merges the `Cookie` headers into one without the pairs `is_own` names
/// (and without any header that is not text).
fn rewrite_cookies(h: &mut HeaderMap, is_own: impl Fn(&str) -> bool) {
    let mut kept = String::new();
    for kv in h
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(own_pages::cookie_pairs)
        .filter(|kv| !is_own(kv))
    {
        if !kept.is_empty() {
            kept.push_str("; ");
        }
        kept.push_str(kv);
    }
    h.remove(header::COOKIE);
    if !kept.is_empty() {
        if let Ok(v) = HeaderValue::from_str(&kept) {
            h.insert(header::COOKIE, v);
        }
    }
}

/// Request headers kept for rendering an error after the request has been
/// consumed: only what decides HTML vs JSON and the language.
/// Values, not a map: kept on every request, a map is needed only for an
/// error (cloning a parsed header value only counts a reference).
struct ErrorPrefs {
    accept: Option<HeaderValue>,
    language: Option<HeaderValue>,
}

impl ErrorPrefs {
    fn of(h: &HeaderMap) -> Self {
        ErrorPrefs {
            accept: h.get(header::ACCEPT).cloned(),
            language: h.get(header::ACCEPT_LANGUAGE).cloned(),
        }
    }

    fn headers(self) -> HeaderMap {
        let mut m = HeaderMap::new();
        if let Some(v) = self.accept {
            m.insert(header::ACCEPT, v);
        }
        if let Some(v) = self.language {
            m.insert(header::ACCEPT_LANGUAGE, v);
        }
        m
    }
}

/// The host the client addressed (`:authority` in HTTP/2, `Host` in 1.1),
/// validated as an authority. It defines the public origin for this request.
fn check_host<B>(req: &Request<B>) -> Result<String, ProxyError> {
    // More than one `Host` is a 400 (RFC 9112 §3.2): two hops reading
    // different ones is the stuff of cache poisoning and of checks made on
    // one host while the request goes to another.
    let mut hosts = req.headers().get_all(header::HOST).iter();
    let host_header = hosts.next();
    if hosts.next().is_some() {
        return Err(ProxyError::BadHost);
    }
    let parsed;
    // An HTTP/2 `:authority` (or an absolute-form target) was parsed with
    // the request; only a `Host` header still needs parsing.
    let auth = match req.uri().authority() {
        Some(a) => {
            // HTTP/2: a `Host` beside `:authority` must name the same
            // (RFC 9113 §8.3.1); an absolute-form HTTP/1.1 target
            // overrides `Host` (RFC 9112 §3.2.2).
            let differs = host_header
                .is_some_and(|h| !h.as_bytes().eq_ignore_ascii_case(a.as_str().as_bytes()));
            if req.version() == Version::HTTP_2 && differs {
                return Err(ProxyError::BadHost);
            }
            a
        }
        None => {
            let raw = host_header
                .and_then(|v| v.to_str().ok())
                .ok_or(ProxyError::BadHost)?;
            parsed = raw
                .parse::<http::uri::Authority>()
                .map_err(|_| ProxyError::BadHost)?;
            &parsed
        }
    };
    // No userinfo, and a host before any port (`Authority::host` would
    // find it too, at ~0.8k instructions per request: callgrind, fix 12).
    let a = auth.as_str();
    if a.contains('@') || a.is_empty() || a.starts_with(':') {
        return Err(ProxyError::BadHost);
    }
    Ok(auth.as_str().to_ascii_lowercase())
}

/// Refuses unsafe methods and WebSocket upgrades made by another site.
///
/// nbgate injects Jupyter's token upstream (or the identity header, which
/// nbgate's provider counts alike), and Jupyter skips its own XSRF and
/// Origin checks for token-authenticated requests; so this check is the
/// one that stops cross-site request forgery and cross-site WebSocket
/// hijacking. A request with neither `Origin` nor `Referer` is not made by a
/// browser on another site (browsers send `Origin` on every cross-site POST
/// and WebSocket) and passes here; session checks decide about it.
fn check_origin<B>(req: &Request<B>, host: &str, via: Via) -> Result<(), ProxyError> {
    let unsafe_method = !matches!(
        *req.method(),
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE
    );
    if !unsafe_method && !headers::is_websocket_upgrade(req.headers()) {
        return Ok(());
    }
    match headers::check_origin(req.headers(), host) {
        OriginCheck::CrossOrigin => Err(ProxyError::CrossOrigin),
        OriginCheck::SameOrigin => Ok(()),
        // A cookie rides along on any request the browser makes, so a
        // cookie-authenticated unsafe request must prove where it came
        // from. An API token is never attached automatically.
        OriginCheck::Absent if via == Via::Token => Ok(()),
        OriginCheck::Absent => Err(ProxyError::CrossOrigin),
    }
}

/// The answer to plain HTTP: a permanent redirect to the same path over
/// HTTPS on `https_port`. 308 keeps the method and body (RFC 9110 §15.4.9).
pub fn https_redirect<B>(req: &Request<B>, https_port: u16) -> Response<ProxyBody> {
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .and_then(|h| h.parse::<http::uri::Authority>().ok());
    let Some(host) = host else {
        return ProxyError::BadHost.into_response(req.headers());
    };
    let name = host.host();
    let authority = if https_port == 443 {
        name.to_owned()
    } else {
        format!("{name}:{https_port}")
    };
    let pq = req.uri().path_and_query().map_or("/", |p| p.as_str());
    let location = format!("https://{authority}{pq}");
    let mut resp = Response::new(empty());
    *resp.status_mut() = StatusCode::PERMANENT_REDIRECT;
    match HeaderValue::from_str(&location) {
        Ok(v) => {
            resp.headers_mut().insert(header::LOCATION, v);
        }
        Err(_) => return ProxyError::BadRequestTarget.into_response(req.headers()),
    }
    resp.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(host: &str, path: &str) -> Request<()> {
        Request::builder()
            .uri(path)
            .header("host", host)
            .body(())
            .expect("request")
    }

    #[test]
    fn plain_http_redirects_to_https_port_keeping_path_and_query() {
        let r = https_redirect(&req("nb.example:8080", "/lab?x=1"), 8443);
        assert_eq!(r.status(), StatusCode::PERMANENT_REDIRECT);
        assert_eq!(r.headers()["location"], "https://nb.example:8443/lab?x=1");
        let r = https_redirect(&req("[::1]:80", "/"), 443);
        assert_eq!(r.headers()["location"], "https://[::1]/");
    }

    #[test]
    fn token_param_and_own_cookies_are_stripped_before_forwarding() {
        assert_eq!(strip_token_param("/api/kernels?token=abc"), "/api/kernels");
        assert_eq!(strip_token_param("/x?a=1&token=abc&b=2"), "/x?a=1&b=2");
        assert_eq!(strip_token_param("/x?tokens=1"), "/x?tokens=1");
        // Encoded names are what `api_token` decodes: stripped too.
        assert_eq!(strip_token_param("/x?tok%65n=abc&a=1"), "/x?a=1");
        assert_eq!(strip_token_param("/x?%74oken=abc"), "/x");
        assert_eq!(strip_token_param("/x?a=%74oken"), "/x?a=%74oken");
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static(
                "_xsrf=1; __Host-nbgate-session=abc; __Host-nbgate-csrf=z; u=2",
            ),
        );
        strip_own_cookies(&mut h);
        assert_eq!(h[header::COOKIE], "_xsrf=1; u=2");
        // Only nbgate's cookie: the header goes.
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("__Host-nbgate-session=abc"),
        );
        strip_own_cookies(&mut h);
        assert!(h.get(header::COOKIE).is_none(), "{h:?}");
        // A space before `=` does not hide nbgate's cookie.
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("__Host-nbgate-session =abc; a=1"),
        );
        strip_own_cookies(&mut h);
        assert_eq!(h[header::COOKIE], "a=1");
        // None of nbgate's: left as sent.
        let mut h = HeaderMap::new();
        h.insert(header::COOKIE, HeaderValue::from_static("_xsrf=1;u=2"));
        strip_own_cookies(&mut h);
        assert_eq!(h[header::COOKIE], "_xsrf=1;u=2");
        // Several headers are merged, nbgate's pairs dropped from each.
        let mut h = HeaderMap::new();
        h.append(
            header::COOKIE,
            HeaderValue::from_static("a=1; __Host-nbgate-csrf=z"),
        );
        h.append(
            header::COOKIE,
            HeaderValue::from_static("__Host-nbgate-session=abc; b=2"),
        );
        strip_own_cookies(&mut h);
        assert_eq!(h.get_all(header::COOKIE).iter().count(), 1);
        assert_eq!(h[header::COOKIE], "a=1; b=2");
    }

    #[test]
    fn ipv4_mapped_peer_is_unmapped() {
        let peer: SocketAddr = "[::ffff:10.1.2.3]:5000".parse().expect("addr");
        assert_eq!(client_ip(peer), "10.1.2.3".parse::<IpAddr>().expect("ip"));
    }

    #[test]
    fn cross_origin_post_is_refused_and_same_origin_passes() {
        let mut r = req("localhost:8443", "/api/contents");
        *r.method_mut() = Method::POST;
        r.headers_mut()
            .insert("origin", HeaderValue::from_static("https://evil.example"));
        assert!(matches!(
            check_origin(&r, "localhost:8443", Via::Cookie),
            Err(ProxyError::CrossOrigin)
        ));
        r.headers_mut()
            .insert("origin", HeaderValue::from_static("https://localhost:8443"));
        assert!(check_origin(&r, "localhost:8443", Via::Cookie).is_ok());
        r.headers_mut().remove("origin");
        assert!(check_origin(&r, "localhost:8443", Via::Cookie).is_err());
        assert!(check_origin(&r, "localhost:8443", Via::Token).is_ok());
    }

    #[test]
    fn host_with_userinfo_or_garbage_is_refused() {
        assert!(check_host(&req("a b", "/")).is_err());
        assert!(check_host(&req("user@host", "/")).is_err());
        // Two Host headers: 400, whichever comes first.
        let mut two = req("localhost:8443", "/");
        two.headers_mut()
            .append(header::HOST, HeaderValue::from_static("evil.example"));
        assert!(matches!(check_host(&two), Err(ProxyError::BadHost)));
        // HTTP/2: Host must agree with :authority.
        let mut h2 = Request::builder()
            .version(Version::HTTP_2)
            .uri("https://localhost:8443/")
            .header("host", "evil.example")
            .body(())
            .expect("request");
        assert!(check_host(&h2).is_err());
        h2.headers_mut()
            .insert(header::HOST, HeaderValue::from_static("LOCALHOST:8443"));
        assert_eq!(check_host(&h2).expect("ok"), "localhost:8443");
        assert_eq!(
            check_host(&req("LocalHost:8443", "/")).expect("ok"),
            "localhost:8443"
        );
    }
}
