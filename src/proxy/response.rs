//! The upstream response filter: every answer Jupyter gives passes here
//! before a client sees it, whichever path produced it (a plain forward, a
//! WebSocket upgrade Jupyter refused, or the head of a 101).
//!
//! It removes what must not cross: hop-by-hop headers, Jupyter's own login
//! cookie (and any cookie claiming one of nbgate's names), Jupyter's token
//! in HTML; and it rewrites `Location` to the public origin. Security
//! headers are added later for every response (`Gateway::response_filter`).
//! Takes plain values (headers, the public host, the token as `&str`) and
//! does no I/O.

use bytes::Bytes;
use http::header::{self, HeaderMap};
use http::Response;
use http_body_util::BodyExt;
use hyper::body::Body;

use super::body::{BoxError, ProxyBody};
use super::error::ProxyError;
use super::headers;
use super::scrub::{ScrubBody, Scrubber};

/// What the filter needs to know about this deployment and request.
pub struct ResponseRules<'a> {
    /// The names Jupyter may use for itself in `Location`.
    pub upstream_origins: &'a [String],
    /// The host the client addressed (the public origin's authority).
    pub public_host: &'a str,
    /// Jupyter's token when nbgate injects it: HTML is scrubbed of it.
    pub token: Option<&'a str>,
}

/// Filters an upstream answer with a body into the client's response.
///
/// HTML (or a body without a `Content-Type`, which a browser may render
/// as HTML) is scrubbed of the token as it streams, whatever its framing
/// and size, and loses its `Content-Length`. Other responses pass with
/// their body untouched (the hot path: no allocation beyond the box).
///
/// # Errors
/// `ProxyError::EncodedPage` for HTML with a `Content-Encoding` while a
/// token is injected: a compressed page cannot be scrubbed, and passing it
/// would fail open (nbgate asks for no compression; Jupyter ignored that).
pub fn upstream_response_filter<B>(
    resp: Response<B>,
    rules: &ResponseRules<'_>,
) -> Result<Response<ProxyBody>, ProxyError>
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let (mut parts, body) = resp.into_parts();
    headers::remove_hop_by_hop(&mut parts.headers);
    filter_headers(&mut parts.headers, rules);
    if let Some(token) = rules.token {
        if !body.is_end_stream() && may_render_as_html(&parts.headers) {
            if is_encoded(&parts.headers) {
                return Err(ProxyError::EncodedPage);
            }
            if let Some(scrubber) = Scrubber::new(token) {
                // The token may be removed: the length is no longer known
                // (chunked in HTTP/1.1, DATA frames until END_STREAM in h2).
                parts.headers.remove(header::CONTENT_LENGTH);
                let body = ScrubBody::new(body, scrubber).boxed_unsync();
                return Ok(Response::from_parts(parts, body));
            }
        }
    }
    Ok(Response::from_parts(
        parts,
        body.map_err(Into::<BoxError>::into).boxed_unsync(),
    ))
}

/// The header rules every upstream answer gets, a 101 included: `Location`
/// rewritten to the public origin, authentication cookies removed.
pub fn filter_headers(h: &mut HeaderMap, rules: &ResponseRules<'_>) {
    headers::rewrite_location(h, rules.upstream_origins, rules.public_host);
    strip_auth_cookies(h);
}

/// Removes `Set-Cookie` headers that would authenticate a browser, or
/// replace nbgate's session, from Jupyter's answer.
///
/// Jupyter sets its login cookie (`username-<host>`, e.g.
/// `username-127-0-0-1-8888`) on every token-authenticated request. That
/// cookie alone authenticates against Jupyter directly, and it would
/// outlive nbgate's logout and password changes; so it never reaches the
/// browser. An answer setting a `__Host-nbgate-*` cookie (an app behind
/// jupyter-server-proxy planting a session: session fixation) is stripped
/// the same way. Everything else — `_xsrf`, apps' own cookies — passes.
pub fn strip_auth_cookies(h: &mut HeaderMap) {
    let (mut total, mut auth) = (0usize, 0usize);
    for v in h.get_all(header::SET_COOKIE) {
        total += 1;
        auth += usize::from(is_auth_cookie(v.as_bytes()));
    }
    if auth == 0 {
        return;
    }
    if auth == total {
        h.remove(header::SET_COOKIE);
        return;
    }
    let kept: Vec<_> = h
        .get_all(header::SET_COOKIE)
        .iter()
        .filter(|v| !is_auth_cookie(v.as_bytes()))
        .cloned()
        .collect();
    h.remove(header::SET_COOKIE);
    for v in kept {
        h.append(header::SET_COOKIE, v);
    }
}

/// Does this `Set-Cookie` value set Jupyter's login cookie or one of
/// nbgate's? Names are compared as browsers read them (up to `=`, trimmed),
/// without regard to case so that no spelling slips through.
fn is_auth_cookie(set_cookie: &[u8]) -> bool {
    let name = set_cookie
        .split(|&b| b == b'=' || b == b';')
        .next()
        .unwrap_or_default()
        .trim_ascii();
    let starts = |prefix: &[u8]| {
        name.get(..prefix.len())
            .is_some_and(|p| p.eq_ignore_ascii_case(prefix))
    };
    starts(b"username-") || starts(b"__Host-nbgate-") || starts(b"__Secure-nbgate-")
}

/// HTML, or no `Content-Type` at all (a browser may sniff it as HTML).
fn may_render_as_html(h: &HeaderMap) -> bool {
    let Some(ct) = h.get(header::CONTENT_TYPE) else {
        return true;
    };
    let media = ct
        .as_bytes()
        .split(|&b| b == b';')
        .next()
        .unwrap_or_default();
    let media = media.trim_ascii();
    media.eq_ignore_ascii_case(b"text/html") || media.eq_ignore_ascii_case(b"application/xhtml+xml")
}

/// A `Content-Encoding` other than `identity`.
fn is_encoded(h: &HeaderMap) -> bool {
    h.get_all(header::CONTENT_ENCODING)
        .iter()
        .any(|v| !v.as_bytes().trim_ascii().eq_ignore_ascii_case(b"identity"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;
    use http_body_util::Full;

    const TOKEN: &str = "jupyter-secret-token";

    fn rules(token: Option<&str>) -> ResponseRules<'_> {
        ResponseRules {
            upstream_origins: &[],
            public_host: "nb.example",
            token,
        }
    }

    fn resp(headers: &[(&str, &str)], body: &'static str) -> Response<Full<Bytes>> {
        let mut r = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
        for (k, v) in headers {
            r.headers_mut().append(
                http::HeaderName::from_bytes(k.as_bytes()).expect("name"),
                HeaderValue::from_str(v).expect("value"),
            );
        }
        r
    }

    async fn body_of(r: Response<ProxyBody>) -> String {
        let b = r.into_body().collect().await.expect("body").to_bytes();
        String::from_utf8_lossy(&b).into_owned()
    }

    #[tokio::test]
    async fn html_is_scrubbed_and_loses_its_length_other_types_pass_whole() {
        let page = "<p>jupyter-secret-token</p>";
        let r = resp(
            &[
                ("content-type", "Text/HTML; charset=utf-8"),
                ("content-length", "27"),
            ],
            page,
        );
        let out = upstream_response_filter(r, &rules(Some(TOKEN))).expect("filtered");
        assert!(out.headers().get("content-length").is_none());
        assert_eq!(body_of(out).await, "<p></p>");
        // No Content-Type: may render as HTML, scrubbed too.
        let out = upstream_response_filter(resp(&[], page), &rules(Some(TOKEN))).expect("ok");
        assert_eq!(body_of(out).await, "<p></p>");
        // JSON passes as sent, its length kept.
        let r = resp(
            &[
                ("content-type", "application/json"),
                ("content-length", "27"),
            ],
            page,
        );
        let out = upstream_response_filter(r, &rules(Some(TOKEN))).expect("ok");
        assert_eq!(out.headers()["content-length"], "27");
        assert_eq!(body_of(out).await, page);
        // Without an injected token there is nothing to scrub.
        let r = resp(&[("content-type", "text/html")], page);
        let out = upstream_response_filter(r, &rules(None)).expect("ok");
        assert_eq!(body_of(out).await, page);
    }

    #[test]
    fn compressed_html_is_refused_while_a_token_is_injected() {
        let r = resp(
            &[("content-type", "text/html"), ("content-encoding", "gzip")],
            "\x1f\u{8b}...",
        );
        assert!(matches!(
            upstream_response_filter(r, &rules(Some(TOKEN))),
            Err(ProxyError::EncodedPage)
        ));
        let r = resp(
            &[
                ("content-type", "text/html"),
                ("content-encoding", "identity"),
            ],
            "<p></p>",
        );
        assert!(upstream_response_filter(r, &rules(Some(TOKEN))).is_ok());
        // Compressed JSON is not HTML: passed.
        let r = resp(
            &[
                ("content-type", "application/json"),
                ("content-encoding", "gzip"),
            ],
            "{}",
        );
        assert!(upstream_response_filter(r, &rules(Some(TOKEN))).is_ok());
    }

    #[test]
    fn jupyter_login_cookie_and_nbgate_cookies_are_stripped_xsrf_kept() {
        let mut h = HeaderMap::new();
        for v in [
            "username-127-0-0-1-8888=\"2|1:0|10:17...\"; expires=Fri; HttpOnly; Path=/",
            "_xsrf=2|abc; Path=/",
            " USERNAME-localhost=x; Path=/",
            "__Host-nbgate-session=planted; Secure; Path=/",
            "app=1",
        ] {
            h.append(header::SET_COOKIE, HeaderValue::from_str(v).expect("value"));
        }
        strip_auth_cookies(&mut h);
        let left: Vec<_> = h.get_all(header::SET_COOKIE).iter().collect();
        assert_eq!(left, ["_xsrf=2|abc; Path=/", "app=1"]);
        // Only Jupyter's: the header goes.
        let mut h = HeaderMap::new();
        h.insert(
            header::SET_COOKIE,
            HeaderValue::from_static("username-localhost-8888=x"),
        );
        strip_auth_cookies(&mut h);
        assert!(h.get(header::SET_COOKIE).is_none());
    }
}
