//! Single sign-on with OpenID Connect (`[[auth.oidc]]`): the authorization
//! code flow with PKCE (S256), `state` and `nonce` (OpenID Connect Core
//! §3.1), through the `openidconnect` crate.
//!
//! Owns each provider's discovery (read at first use, cached, read again
//! after an hour, and at once when the provider was down: a provider that
//! is down when nbgate starts never stops nbgate starting), the start of a
//! sign-in (the redirect to the provider and the sealed flow cookie,
//! `flow`), and its end: the code exchanged, the ID token verified
//! (signature against the provider's keys, issuer, audience, expiry, nonce,
//! `azp`, the access token hash when present), the person admitted or not
//! (`admit`). It returns decisions; `proxy::own_pages::oidc` starts the
//! session and answers. Nothing here logs a code, a token or a secret.
//!
//! Submodules: `http` (the HTTP client over nbgate's hyper + rustls),
//! `flow` (the sealed flow cookie, the callback's query), `admit` (allow
//! lists and the user name).

pub mod admit;
pub mod flow;
pub mod http;

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use openidconnect::core::{
    CoreAuthDisplay, CoreAuthPrompt, CoreAuthenticationFlow, CoreClientAuthMethod,
    CoreErrorResponseType, CoreGenderClaim, CoreJsonWebKey, CoreJweContentEncryptionAlgorithm,
    CoreJwsSigningAlgorithm, CoreProviderMetadata, CoreRevocableToken, CoreRevocationErrorResponse,
    CoreTokenIntrospectionResponse, CoreTokenType,
};
use openidconnect::{
    AccessTokenHash, AdditionalClaims, AuthType, AuthorizationCode, ClaimsVerificationError,
    Client, ClientId, ClientSecret, CsrfToken, EmptyExtraTokenFields, EndpointMaybeSet,
    EndpointNotSet, EndpointSet, IdTokenFields, IssuerUrl, Nonce, OAuth2TokenResponse,
    PkceCodeChallenge, PkceCodeVerifier, RedirectUrl, RequestTokenError, Scope,
    SignatureVerificationError, StandardErrorResponse, StandardTokenResponse, TokenResponse,
};
use serde::{Deserialize, Serialize};

use self::admit::{NotAdmitted, Person};
use self::flow::{Callback, CallbackError, FlowKey, FlowState, Outcome};
use self::http::{HttpClient, HttpError};
use crate::config::{AuthConfig, OidcProvider};

/// How long a discovery document and key set are used before they are read
/// again (a provider rotates its signing keys with notice; an unknown key
/// id also triggers a new read, `KEYS_RETRY`).
const DISCOVERY_TTL: Duration = Duration::from_secs(3600);
/// The shortest time between two reads of the keys because an ID token
/// named a key nbgate did not have: a token with a made-up key id cannot
/// make nbgate ask the provider on every callback.
const KEYS_RETRY: Duration = Duration::from_secs(30);
/// Callback `state`s remembered to refuse a second use; beyond this many
/// live ones, the oldest half is forgotten (a replay then still needs the
/// provider to accept a used code, which it does not).
const USED_STATES_MAX: usize = 10_000;

/// The claims of the ID token beyond the standard ones (`groups`, or
/// whatever `groups_claim` / `user_claim` name), kept as JSON.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ExtraClaims {
    #[serde(flatten)]
    claims: serde_json::Map<String, serde_json::Value>,
}

impl AdditionalClaims for ExtraClaims {}

type IdFields = IdTokenFields<
    ExtraClaims,
    EmptyExtraTokenFields,
    CoreGenderClaim,
    CoreJweContentEncryptionAlgorithm,
    CoreJwsSigningAlgorithm,
>;
type TokenAnswer = StandardTokenResponse<IdFields, CoreTokenType>;
type OidcClient = Client<
    ExtraClaims,
    CoreAuthDisplay,
    CoreGenderClaim,
    CoreJweContentEncryptionAlgorithm,
    CoreJsonWebKey,
    CoreAuthPrompt,
    StandardErrorResponse<CoreErrorResponseType>,
    TokenAnswer,
    CoreTokenIntrospectionResponse,
    CoreRevocableToken,
    CoreRevocationErrorResponse,
    EndpointSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointMaybeSet,
    EndpointMaybeSet,
>;

/// The signature algorithms an ID token may use: asymmetric only. The
/// crate would also accept HMAC with the client secret as key for a
/// provider that lists it; a client secret is a weaker key than a
/// provider's signing key, and is known to more parties.
const ALLOWED_ALGS: [CoreJwsSigningAlgorithm; 10] = [
    CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha256,
    CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha384,
    CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha512,
    CoreJwsSigningAlgorithm::RsaSsaPssSha256,
    CoreJwsSigningAlgorithm::RsaSsaPssSha384,
    CoreJwsSigningAlgorithm::RsaSsaPssSha512,
    CoreJwsSigningAlgorithm::EcdsaP256Sha256,
    CoreJwsSigningAlgorithm::EcdsaP384Sha384,
    CoreJwsSigningAlgorithm::EcdsaP521Sha512,
    CoreJwsSigningAlgorithm::EdDsa,
];

/// Why a provider cannot be used right now (down, or its discovery
/// document unusable). The login page says so and offers what else works.
#[derive(Debug, thiserror::Error)]
pub enum Unavailable {
    #[error("cannot build the HTTPS client for the provider")]
    Tls(#[source] Arc<crate::tls::client::ClientTlsError>),
    #[error("discovery failed")]
    Discovery(#[source] openidconnect::DiscoveryError<HttpError>),
    #[error("the discovery document names an endpoint nbgate will not use")]
    Endpoint(#[source] HttpError),
    #[error("the provider has no token endpoint")]
    NoTokenEndpoint,
    #[error("the token exchange failed")]
    Exchange(#[source] HttpError),
}

/// Why a sign-in could not start.
#[derive(Debug, thiserror::Error)]
pub enum BeginError {
    #[error("no provider of that name")]
    UnknownProvider,
    #[error("provider {provider} unavailable")]
    Unavailable {
        provider: String,
        #[source]
        source: Unavailable,
    },
}

/// Why a callback did not log anyone in. `reason()` is the audit field;
/// the provider's name, where known, is in `provider()`.
#[derive(Debug, thiserror::Error)]
pub enum FinishError {
    /// No flow cookie, a tampered or expired one, another `state`, or a
    /// `state` used before: not a sign-in this browser started.
    #[error("the sign-in state is missing, expired, replayed or not this browser's")]
    State { reason: &'static str },
    #[error("the provider is no longer configured")]
    UnknownProvider { provider: String },
    /// The provider sent `error=` (the user cancelled, or it refused).
    #[error("the provider answered with an error")]
    ProviderError { provider: String, error: String },
    #[error("the provider refused the authorization code")]
    CodeRejected { provider: String },
    #[error("provider unavailable")]
    Unavailable {
        provider: String,
        #[source]
        source: Unavailable,
    },
    /// The ID token failed a check: `reason` says which.
    #[error("the ID token failed verification")]
    Token {
        provider: String,
        reason: &'static str,
    },
    /// A verified person the allow lists do not admit. `who`: the address
    /// or subject, for the audit line.
    #[error("not admitted")]
    NotAdmitted {
        provider: String,
        why: NotAdmitted,
        who: String,
    },
}

impl FinishError {
    pub fn reason(&self) -> &'static str {
        match self {
            FinishError::State { reason } | FinishError::Token { reason, .. } => reason,
            FinishError::UnknownProvider { .. } => "unknown_provider",
            FinishError::ProviderError { .. } => "provider_error",
            FinishError::CodeRejected { .. } => "code_rejected",
            FinishError::Unavailable { .. } => "provider_unavailable",
            FinishError::NotAdmitted { why, .. } => why.reason(),
        }
    }

    pub fn provider(&self) -> Option<&str> {
        match self {
            FinishError::State { .. } => None,
            FinishError::UnknownProvider { provider }
            | FinishError::ProviderError { provider, .. }
            | FinishError::CodeRejected { provider }
            | FinishError::Unavailable { provider, .. }
            | FinishError::Token { provider, .. }
            | FinishError::NotAdmitted { provider, .. } => Some(provider),
        }
    }
}

/// A sign-in that succeeded: who, through which provider, where to go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedIn {
    pub provider: String,
    pub user: String,
    /// The session tag of the provider (`session_tag`).
    pub tag: String,
    pub next: String,
}

/// The tag an SSO session carries in place of a password fingerprint
/// (`Authenticator::start_sso_session`). It changes when anything that
/// decided who may enter through the provider changes (issuer, client,
/// claims, allow lists): a reload that narrows a list ends the sessions it
/// admitted, as a password change ends password sessions.
pub fn session_tag(p: &OidcProvider) -> String {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    for part in [&p.issuer, &p.client_id, &p.user_claim, &p.groups_claim] {
        ctx.update(part.as_bytes());
        ctx.update(b"\0");
    }
    for list in [&p.allowed_emails, &p.allowed_domains, &p.allowed_groups] {
        for item in list {
            ctx.update(item.as_bytes());
            ctx.update(b"\0");
        }
        ctx.update(b"\x01");
    }
    ctx.update(&[u8::from(p.require_email_verified)]);
    format!(
        "oidc:{}:{}",
        p.name,
        hex::encode(&ctx.finish().as_ref()[..12])
    )
}

/// The session tags of every configured provider.
pub fn session_tags(auth: &AuthConfig) -> Vec<String> {
    auth.oidc.iter().map(session_tag).collect()
}

/// One provider's discovered client, shared by the configurations that
/// name the same provider the same way (a reload keeps it).
#[derive(Default)]
struct Discovery {
    current: ArcSwapOption<Discovered>,
    /// Held while discovering, so that a burst of sign-ins after a restart
    /// reads the document once. Never held by a request that has a client.
    refreshing: tokio::sync::Mutex<()>,
}

struct Discovered {
    client: OidcClient,
    fetched: Instant,
}

/// One configured provider at run time.
struct Provider {
    config: OidcProvider,
    http: Result<HttpClient, Arc<crate::tls::client::ClientTlsError>>,
    discovery: Arc<Discovery>,
    tag: String,
}

impl Provider {
    fn new(config: OidcProvider, discovery: Arc<Discovery>) -> Provider {
        let http = HttpClient::try_new(config.ca_bundle.as_deref()).map_err(Arc::new);
        if let Err(e) = &http {
            tracing::error!(provider = %config.name, error = %crate::telemetry::Chain(&**e), "oidc: cannot build the provider's HTTPS client");
        }
        Provider {
            tag: session_tag(&config),
            config,
            http,
            discovery,
        }
    }

    fn http(&self) -> Result<&HttpClient, Unavailable> {
        self.http
            .as_ref()
            .map_err(|e| Unavailable::Tls(Arc::clone(e)))
    }

    /// The discovered client: the cached one while fresh, else read again
    /// (a stale one is still used when the provider is down).
    async fn client(&self) -> Result<Arc<Discovered>, Unavailable> {
        if let Some(d) = self.discovery.current.load_full() {
            if d.fetched.elapsed() < DISCOVERY_TTL {
                return Ok(d);
            }
        }
        self.rediscover(None).await
    }

    /// Reads the discovery document and keys again, unless another request
    /// did since `seen` (or, with `seen`, less than `KEYS_RETRY` ago).
    async fn rediscover(
        &self,
        seen: Option<&Arc<Discovered>>,
    ) -> Result<Arc<Discovered>, Unavailable> {
        let _one_at_a_time = self.discovery.refreshing.lock().await;
        let cached = self.discovery.current.load_full();
        if let Some(d) = &cached {
            let newer = seen.is_some_and(|s| !Arc::ptr_eq(s, d));
            let fresh = match seen {
                Some(_) => d.fetched.elapsed() < KEYS_RETRY,
                None => d.fetched.elapsed() < DISCOVERY_TTL,
            };
            if newer || fresh {
                return Ok(Arc::clone(d));
            }
        }
        match self.discover().await {
            Ok(client) => {
                let d = Arc::new(Discovered {
                    client,
                    fetched: Instant::now(),
                });
                self.discovery.current.store(Some(Arc::clone(&d)));
                tracing::info!(provider = %self.config.name, issuer = %self.config.issuer, "oidc: provider discovered");
                Ok(d)
            }
            Err(e) => match cached {
                Some(stale) => {
                    tracing::warn!(provider = %self.config.name, error = %crate::telemetry::Chain(&e), "oidc: discovery failed; using the last document read");
                    Ok(stale)
                }
                None => Err(e),
            },
        }
    }

    async fn discover(&self) -> Result<OidcClient, Unavailable> {
        let http = self.http()?;
        let issuer = IssuerUrl::new(self.config.issuer.clone())
            .map_err(|e| Unavailable::Discovery(openidconnect::DiscoveryError::UrlParse(e)))?;
        let metadata = CoreProviderMetadata::discover_async(issuer, http)
            .await
            .map_err(Unavailable::Discovery)?;
        for url in [
            Some(metadata.authorization_endpoint().url()),
            metadata.token_endpoint().map(|t| t.url()),
        ]
        .into_iter()
        .flatten()
        {
            let uri: ::http::Uri = url.as_str().parse().map_err(|_| {
                Unavailable::Endpoint(HttpError::Scheme(url.origin().ascii_serialization()))
            })?;
            http::url_allowed(&uri).map_err(Unavailable::Endpoint)?;
        }
        if metadata.token_endpoint().is_none() {
            return Err(Unavailable::NoTokenEndpoint);
        }
        // `client_secret_basic` is the default (RFC 6749 §2.3.1); a
        // provider that lists only `client_secret_post` gets the secret in
        // the body.
        let post_only = metadata
            .token_endpoint_auth_methods_supported()
            .is_some_and(|m| {
                !m.contains(&CoreClientAuthMethod::ClientSecretBasic)
                    && m.contains(&CoreClientAuthMethod::ClientSecretPost)
            });
        let secret = self
            .config
            .client_secret
            .as_ref()
            .map(|s| ClientSecret::new(s.expose().to_owned()));
        let mut client = OidcClient::from_provider_metadata(
            metadata,
            ClientId::new(self.config.client_id.clone()),
            secret,
        );
        if post_only || self.config.client_secret.is_none() {
            client = client.set_auth_type(AuthType::RequestBody);
        }
        Ok(client)
    }
}

/// Callback `state`s already used, until their flow would have expired.
#[derive(Default)]
struct UsedStates {
    /// SHA-256 of the state -> unix second it expires. std Mutex: short
    /// critical sections, never held across `.await`.
    seen: Mutex<HashMap<[u8; 32], u64>>,
}

impl UsedStates {
    /// Records `state` as used; `false` when it was used before.
    fn first_use(&self, state: &str, expires: u64, now: u64) -> bool {
        let digest = ring::digest::digest(&ring::digest::SHA256, state.as_bytes());
        let mut key = [0u8; 32];
        key.copy_from_slice(digest.as_ref());
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        if seen.len() >= USED_STATES_MAX {
            seen.retain(|_, exp| *exp > now);
            if seen.len() >= USED_STATES_MAX {
                let mut by_expiry: Vec<u64> = seen.values().copied().collect();
                by_expiry.sort_unstable();
                let cut = by_expiry[by_expiry.len() / 2];
                seen.retain(|_, exp| *exp > cut);
            }
        }
        seen.insert(key, expires).is_none()
    }
}

/// The single sign-on of one configuration: its providers, whether the
/// password form is on, the flow key, the used states. A reload makes a
/// new one with `reloaded`, keeping what each unchanged provider learned.
pub struct Sso {
    providers: Vec<Provider>,
    password: bool,
    key: FlowKey,
    used: Arc<UsedStates>,
}

/// A provider as the login page shows it.
pub struct ProviderView<'a> {
    pub name: &'a str,
    pub display_name: &'a str,
}

impl Sso {
    /// `signing_key`: the session signing key (`Authenticator::csrf_key`);
    /// the flow key is derived from it. Reads nothing from the network.
    pub fn new(auth: &AuthConfig, signing_key: &[u8]) -> Sso {
        Sso {
            providers: auth
                .oidc
                .iter()
                .map(|p| Provider::new(p.clone(), Arc::default()))
                .collect(),
            password: auth.password,
            key: FlowKey::derive(signing_key),
            used: Arc::default(),
        }
    }

    /// The SSO of a reloaded configuration: a provider with the same
    /// name, issuer, client and CA bundle keeps its discovered client;
    /// used states are kept (a replay across a reload is still refused).
    pub fn reloaded(&self, auth: &AuthConfig, signing_key: &[u8]) -> Sso {
        let providers = auth
            .oidc
            .iter()
            .map(|p| {
                let same = self.providers.iter().find(|old| {
                    old.config.name == p.name
                        && old.config.issuer == p.issuer
                        && old.config.client_id == p.client_id
                        && old.config.ca_bundle == p.ca_bundle
                        && old.config.client_secret.as_ref().map(|s| s.expose())
                            == p.client_secret.as_ref().map(|s| s.expose())
                });
                let discovery = same.map_or_else(Arc::default, |old| Arc::clone(&old.discovery));
                Provider::new(p.clone(), discovery)
            })
            .collect();
        Sso {
            providers,
            password: auth.password,
            key: FlowKey::derive(signing_key),
            used: Arc::clone(&self.used),
        }
    }

    /// Whether the password form is offered (and its POST accepted).
    pub fn password(&self) -> bool {
        self.password
    }

    /// The providers, in the configured order.
    pub fn providers(&self) -> impl Iterator<Item = ProviderView<'_>> {
        self.providers.iter().map(|p| ProviderView {
            name: &p.config.name,
            display_name: &p.config.display_name,
        })
    }

    /// The display name of a provider.
    pub fn display_name(&self, name: &str) -> Option<&str> {
        self.find(name).map(|p| p.config.display_name.as_str())
    }

    fn find(&self, name: &str) -> Option<&Provider> {
        self.providers.iter().find(|p| p.config.name == name)
    }

    /// Starts a sign-in with provider `name`: the provider's authorization
    /// URL to send the browser to, and the `Set-Cookie` of the flow.
    ///
    /// # Errors
    /// No such provider; the provider cannot be discovered.
    pub async fn begin(
        &self,
        name: &str,
        redirect_uri: &str,
        next: &str,
        now: u64,
    ) -> Result<(String, String), BeginError> {
        let provider = self.find(name).ok_or(BeginError::UnknownProvider)?;
        let unavailable = |source| BeginError::Unavailable {
            provider: name.to_owned(),
            source,
        };
        let discovered = provider.client().await.map_err(unavailable)?;
        let redirect = RedirectUrl::new(redirect_uri.to_owned()).map_err(|e| {
            unavailable(Unavailable::Discovery(
                openidconnect::DiscoveryError::UrlParse(e),
            ))
        })?;
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let (url, state, nonce) = discovered
            .client
            .authorize_url(
                CoreAuthenticationFlow::AuthorizationCode,
                CsrfToken::new_random,
                Nonce::new_random,
            )
            .add_scopes(
                provider
                    .config
                    .scopes
                    .iter()
                    .filter(|s| *s != "openid")
                    .map(|s| Scope::new(s.clone())),
            )
            .set_pkce_challenge(challenge)
            .set_redirect_uri(Cow::Owned(redirect))
            .url();
        let flow = FlowState {
            provider: name.to_owned(),
            state: state.secret().clone(),
            nonce: nonce.secret().clone(),
            verifier: verifier.secret().clone(),
            redirect_uri: redirect_uri.to_owned(),
            next: next.to_owned(),
            expires: now + flow::FLOW_LIFETIME_SECS,
        };
        Ok((url.to_string(), flow::flow_cookie(&self.key.seal(&flow))))
    }

    /// Ends a sign-in: checks the callback against this browser's flow
    /// cookie, exchanges the code, verifies the ID token and admits the
    /// person (or not).
    ///
    /// # Errors
    /// `FinishError` saying what failed; its `reason()` is for the audit.
    pub async fn finish(
        &self,
        query: &str,
        flow_cookie: Option<&str>,
        now: u64,
    ) -> Result<SignedIn, FinishError> {
        let state_err = |reason| FinishError::State { reason };
        let callback = Callback::parse(query).map_err(|e| {
            state_err(match e {
                CallbackError::NoState => "no_state",
                _ => "bad_callback",
            })
        })?;
        let flow = flow_cookie
            .ok_or(state_err("no_flow_cookie"))
            .and_then(|c| self.key.open(c, now).ok_or(state_err("bad_flow_cookie")))?;
        if !flow::state_matches(&flow, &callback.state) {
            return Err(state_err("state_mismatch"));
        }
        if !self.used.first_use(&flow.state, flow.expires, now) {
            return Err(state_err("state_replayed"));
        }
        let provider = self
            .find(&flow.provider)
            .ok_or_else(|| FinishError::UnknownProvider {
                provider: flow.provider.clone(),
            })?;
        let name = || provider.config.name.clone();
        // RFC 9207 §2.4: an `iss` that is not this provider's is a mix-up.
        if callback
            .iss
            .as_ref()
            .is_some_and(|iss| *iss != provider.config.issuer)
        {
            return Err(FinishError::Token {
                provider: name(),
                reason: "issuer_mismatch",
            });
        }
        let code = match callback.outcome {
            Outcome::Error(error) => {
                return Err(FinishError::ProviderError {
                    provider: name(),
                    error,
                })
            }
            Outcome::Code(code) => code,
        };
        let unavailable = |source| FinishError::Unavailable {
            provider: name(),
            source,
        };
        let token_err = |reason| FinishError::Token {
            provider: name(),
            reason,
        };
        let http = provider.http().map_err(unavailable)?;
        let discovered = provider.client().await.map_err(unavailable)?;
        let redirect =
            RedirectUrl::new(flow.redirect_uri.clone()).map_err(|_| token_err("bad_flow"))?;
        let answer = discovered
            .client
            .exchange_code(AuthorizationCode::new(code))
            .map_err(|_| unavailable(Unavailable::NoTokenEndpoint))?
            .set_pkce_verifier(PkceCodeVerifier::new(flow.verifier.clone()))
            .set_redirect_uri(Cow::Owned(redirect))
            .request_async(http)
            .await
            .map_err(|e| match e {
                RequestTokenError::ServerResponse(_) => {
                    FinishError::CodeRejected { provider: name() }
                }
                RequestTokenError::Request(e) => unavailable(Unavailable::Exchange(e)),
                RequestTokenError::Parse(..) | RequestTokenError::Other(_) => {
                    token_err("unreadable_token_response")
                }
            })?;
        let person = match verify(&discovered.client, &answer, &flow, &provider.config) {
            Err(TokenCheck::UnknownKey) => {
                // The provider may have rotated its keys since discovery.
                let again = provider
                    .rediscover(Some(&discovered))
                    .await
                    .map_err(unavailable)?;
                verify(&again.client, &answer, &flow, &provider.config)
            }
            other => other,
        }
        .map_err(|e| token_err(e.reason()))?;
        let user =
            admit::admit(&provider.config, &person).map_err(|why| FinishError::NotAdmitted {
                provider: name(),
                why,
                who: person
                    .email
                    .clone()
                    .unwrap_or_else(|| person.subject.clone()),
            })?;
        Ok(SignedIn {
            provider: name(),
            user,
            tag: provider.tag.clone(),
            next: flow.next,
        })
    }
}

/// Why an ID token failed (`reason()`: the audit field).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TokenCheck {
    Missing,
    /// Signed with a key id the cached key set lacks: read the keys again.
    UnknownKey,
    Signature,
    Expired,
    Audience,
    Issuer,
    Nonce,
    AccessTokenHash,
    Invalid,
}

impl TokenCheck {
    fn reason(self) -> &'static str {
        match self {
            TokenCheck::Missing => "no_id_token",
            TokenCheck::UnknownKey | TokenCheck::Signature => "bad_signature",
            TokenCheck::Expired => "expired",
            TokenCheck::Audience => "wrong_audience",
            TokenCheck::Issuer => "wrong_issuer",
            TokenCheck::Nonce => "nonce_mismatch",
            TokenCheck::AccessTokenHash => "access_token_hash_mismatch",
            TokenCheck::Invalid => "invalid_id_token",
        }
    }
}

/// Verifies the ID token of `answer` (signature, issuer, audience and
/// `azp`, expiry, nonce, access token hash) and reads the person from it.
fn verify(
    client: &OidcClient,
    answer: &TokenAnswer,
    flow: &FlowState,
    config: &OidcProvider,
) -> Result<Person, TokenCheck> {
    let id_token = answer.id_token().ok_or(TokenCheck::Missing)?;
    let verifier = client.id_token_verifier().set_allowed_algs(ALLOWED_ALGS);
    let claims = id_token
        .claims(&verifier, &Nonce::new(flow.nonce.clone()))
        .map_err(|e| match e {
            ClaimsVerificationError::Expired(_) => TokenCheck::Expired,
            ClaimsVerificationError::InvalidAudience(_) => TokenCheck::Audience,
            ClaimsVerificationError::InvalidIssuer(_) => TokenCheck::Issuer,
            ClaimsVerificationError::InvalidNonce(_) => TokenCheck::Nonce,
            ClaimsVerificationError::SignatureVerification(
                SignatureVerificationError::NoMatchingKey,
            ) => TokenCheck::UnknownKey,
            ClaimsVerificationError::SignatureVerification(_) => TokenCheck::Signature,
            _ => TokenCheck::Invalid,
        })?;
    // OpenID Connect Core §3.1.3.8: the access token belongs to this ID token.
    if let Some(expected) = claims.access_token_hash() {
        let alg = id_token.signing_alg().map_err(|_| TokenCheck::Signature)?;
        let key = id_token
            .signing_key(&verifier)
            .map_err(|_| TokenCheck::Signature)?;
        let actual = AccessTokenHash::from_token(answer.access_token(), alg, key)
            .map_err(|_| TokenCheck::AccessTokenHash)?;
        if actual != *expected {
            return Err(TokenCheck::AccessTokenHash);
        }
    }
    let extra = &claims.additional_claims().claims;
    let user_claim = match config.user_claim.as_str() {
        "sub" => Some(claims.subject().as_str().to_owned()),
        "email" => claims.email().map(|e| e.as_str().to_owned()),
        "preferred_username" => claims.preferred_username().map(|u| u.as_str().to_owned()),
        other => extra.get(other).and_then(|v| v.as_str()).map(str::to_owned),
    };
    Ok(Person {
        subject: claims.subject().as_str().to_owned(),
        email: claims.email().map(|e| e.as_str().to_owned()),
        email_verified: claims.email_verified(),
        user_claim,
        groups: admit::groups_of(extra.get(&config.groups_claim)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_state_is_accepted_once() {
        let used = UsedStates::default();
        assert!(used.first_use("s1", 100, 0));
        assert!(!used.first_use("s1", 100, 0));
        assert!(used.first_use("s2", 100, 0));
    }

    #[test]
    fn a_full_used_state_table_forgets_the_oldest_half() {
        let used = UsedStates::default();
        for i in 0..USED_STATES_MAX {
            assert!(used.first_use(&format!("s{i}"), 1000 + i as u64, 0));
        }
        assert!(used.first_use("new", 99_999, 0));
        assert!(!used.first_use(&format!("s{}", USED_STATES_MAX - 1), 0, 0));
        assert!(used.seen.lock().expect("lock").len() <= USED_STATES_MAX / 2 + 2);
    }
}
