//! The one place where a failure on the request path becomes what the
//! client sees: a status code, and a short fixed body — an HTML page for a
//! browser, JSON for an API client. Details go to the log, never the client.

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Response, StatusCode};

use super::body::{full, ProxyBody};
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
    #[error("upstream connect failed: {0}")]
    UpstreamConnect(#[source] std::io::Error),
    #[error("upstream protocol error: {0}")]
    UpstreamProtocol(#[source] hyper::Error),
    #[error("upstream response body failed")]
    UpstreamBody,
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
    #[error("not found")]
    NotFound,
    #[error("client address not allowed")]
    Forbidden,
    #[error("rate limited for {0} s")]
    RateLimited(u64),
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
            | ProxyError::UpstreamProtocol(_)
            | ProxyError::UpstreamBody => (
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
        }
    }

    /// Renders the error for this request's client.
    pub fn into_response(self, req_headers: &HeaderMap) -> Response<ProxyBody> {
        let (status, code, message) = self.parts();
        let retry_after = match self {
            ProxyError::RateLimited(secs) => Some(secs),
            _ => None,
        };
        error_response(req_headers, status, code, message, retry_after)
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
pub fn error_response(
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
