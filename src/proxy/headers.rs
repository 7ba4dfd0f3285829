//! Pure header rewriting for the forwarding path: hop-by-hop removal,
//! `X-Forwarded-*` / `Forwarded`, Host/Origin presentation to Jupyter, the
//! header naming the user to a JupyterHub (`set_identity`), `Location`
//! rewriting and security headers.
//!
//! Takes plain values (`&mut HeaderMap`, `IpAddr`, `&str`) and does no I/O,
//! so every rule is unit-tested without sockets.

use std::net::IpAddr;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

/// Hop-by-hop headers (RFC 9110 §7.6.1, plus the legacy `Keep-Alive` and
/// `Proxy-Connection`): they describe one connection and must not be
/// forwarded to the next.
///
/// Names are constants, not `&str`: a `&str` name is parsed and validated on
/// every lookup, which the profile showed at ~3% of a proxied request.
const HOP_BY_HOP: [HeaderName; 9] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

fn is_hop_by_hop(name: &HeaderName) -> bool {
    HOP_BY_HOP.contains(name)
}

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// Forwarding headers a client may have sent: replaced by nbgate's own.
const CLIENT_FORWARDING: [HeaderName; 6] = [
    X_FORWARDED_FOR,
    X_FORWARDED_PROTO,
    X_FORWARDED_HOST,
    HeaderName::from_static("x-forwarded-port"),
    HeaderName::from_static("x-real-ip"),
    header::FORWARDED,
];

/// A forwarding header spelled with `_` or `.` for `-` (`X_Forwarded_For`,
/// `x.real.ip`). Servers that map all three onto one name (CGI and WSGI
/// environments, and frameworks built on them) would read it as nbgate's
/// own: a client could claim another address past `set_forwarded`
/// (hostile-input battery, issue 20). nginx drops such names by default
/// (`underscores_in_headers off`); nbgate drops just these.
fn is_forwarding_alias(name: &HeaderName) -> bool {
    CLIENT_FORWARDING.iter().any(|f| is_alias_of(name, f))
}

/// Whether `name` is `target` spelled with `_` or `.` for at least one
/// `-` (names are lower-case in a `HeaderMap`, whatever the client sent).
fn is_alias_of(name: &HeaderName, target: &HeaderName) -> bool {
    let (n, t) = (name.as_str().as_bytes(), target.as_str().as_bytes());
    n.iter().any(|&b| b == b'_' || b == b'.')
        && t.len() == n.len()
        && t.iter()
            .zip(n)
            .all(|(&a, &b)| a == b || (a == b'-' && (b == b'_' || b == b'.')))
}

/// Removes hop-by-hop headers, including every header the `Connection`
/// header names (RFC 9110 §7.6.1: a sender may list any field there to make
/// it hop-by-hop, e.g. to smuggle a header past the proxy's own rules).
pub fn remove_hop_by_hop(headers: &mut HeaderMap) {
    // One pass over the names present (a handful) instead of a hashed
    // removal per listed name: most requests carry none of them, and the
    // removals were ~3% of a proxied request's instructions (callgrind).
    if !headers.keys().any(is_hop_by_hop) {
        return;
    }
    if headers.contains_key(header::CONNECTION) {
        let named: Vec<HeaderName> = headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
            .collect();
        for name in named {
            headers.remove(name);
        }
    }
    for name in &HOP_BY_HOP {
        headers.remove(name);
    }
}

/// Is this an HTTP/1.1 WebSocket upgrade request (RFC 6455 §4.1)?
pub fn is_websocket_upgrade(headers: &HeaderMap) -> bool {
    let connection_upgrade = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("upgrade"));
    let upgrade_websocket = headers
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(',')
                .any(|t| t.trim().eq_ignore_ascii_case("websocket"))
        });
    connection_upgrade && upgrade_websocket
}

/// Appends `ip` as text. IPv4 is written digit by digit: `fmt`'s padding
/// machinery made formatting the client address (twice per request) ~4% of
/// a proxied request's instructions.
fn push_ip(out: &mut Vec<u8>, ip: IpAddr) {
    match ip {
        IpAddr::V4(v4) => {
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    out.push(b'.');
                }
                if octet >= 100 {
                    out.push(b'0' + octet / 100);
                }
                if octet >= 10 {
                    out.push(b'0' + octet / 10 % 10);
                }
                out.push(b'0' + octet % 10);
            }
        }
        IpAddr::V6(v6) => {
            use std::io::Write as _;
            write!(out, "{v6}").expect("writing to a Vec cannot fail");
        }
    }
}

/// A header value built from bytes nbgate assembled itself (addresses,
/// a host already validated as a header value); checked all the same.
fn assembled(bytes: Vec<u8>) -> Option<HeaderValue> {
    HeaderValue::from_maybe_shared(bytes::Bytes::from(bytes)).ok()
}

/// Sets `X-Forwarded-For`, `X-Forwarded-Proto`, `X-Forwarded-Host` and
/// `Forwarded` from what nbgate itself knows. Client-sent copies are
/// removed first: a client must not be able to claim another address.
pub fn set_forwarded(headers: &mut HeaderMap, client: IpAddr, public_host: &str) {
    if headers
        .keys()
        .any(|n| CLIENT_FORWARDING.contains(n) || is_forwarding_alias(n))
    {
        for name in &CLIENT_FORWARDING {
            headers.remove(name);
        }
        let aliases: Vec<HeaderName> = headers
            .keys()
            .filter(|n| is_forwarding_alias(n))
            .cloned()
            .collect();
        for name in aliases {
            headers.remove(name);
        }
    }
    let mut xff = Vec::with_capacity(16);
    push_ip(&mut xff, client);
    // Forwarded (RFC 7239 §6): IPv6 in quotes and brackets.
    let mut fwd = Vec::with_capacity(48 + public_host.len());
    fwd.extend_from_slice(b"for=");
    if client.is_ipv6() {
        fwd.extend_from_slice(b"\"[");
        push_ip(&mut fwd, client);
        fwd.extend_from_slice(b"]\"");
    } else {
        fwd.extend_from_slice(&xff);
    }
    fwd.extend_from_slice(b";proto=https");
    headers.insert(
        X_FORWARDED_FOR,
        assembled(xff).expect("a formatted IP address is a valid header value"),
    );
    headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static("https"));
    if let Ok(h) = HeaderValue::from_str(public_host) {
        headers.insert(X_FORWARDED_HOST, h);
        fwd.extend_from_slice(b";host=\"");
        fwd.extend_from_slice(public_host.as_bytes());
        fwd.push(b'"');
    }
    if let Some(v) = assembled(fwd) {
        headers.insert(header::FORWARDED, v);
    }
}

/// Names the user nbgate authenticated to the upstream in `name`
/// (`upstream.identity_header`, e.g. `X-Nbgate-User` for JupyterHub).
///
/// Every copy the client sent goes first — all values of a repeated
/// header (a `HeaderMap` holds names lower-cased, so every case variant is
/// one name) and spellings with `_` or `.` for `-` that CGI/WSGI-style
/// servers fold into the same name. The upstream trusts this header as
/// proof of who is asking: a copy that got through would let a logged-in
/// user act as anyone else (alice sending `X-Nbgate-User: bob` would reach
/// bob's server). The user name is always a valid value (`valid_user_name`);
/// were it not, no header is set, and the upstream sees no one.
pub fn set_identity(headers: &mut HeaderMap, name: &HeaderName, user: &str) {
    headers.remove(name);
    if headers.keys().any(|n| is_alias_of(n, name)) {
        let aliases: Vec<HeaderName> = headers
            .keys()
            .filter(|n| is_alias_of(n, name))
            .cloned()
            .collect();
        for alias in aliases {
            headers.remove(alias);
        }
    }
    if let Ok(v) = HeaderValue::from_str(user) {
        headers.insert(name.clone(), v);
    }
}

/// The origin a browser sends for this deployment: `https://<public host>`.
pub fn public_origin(public_host: &str) -> String {
    format!("https://{public_host}")
}

/// The serialized origin of an `Origin` or `Referer` value (scheme, host,
/// port), lower-cased, with default ports removed so `https://h:443` and
/// `https://h` compare equal.
pub fn origin_of(url: &str) -> Option<String> {
    let uri: http::Uri = url.trim().parse().ok()?;
    let scheme = uri.scheme_str()?.to_ascii_lowercase();
    let auth = uri.authority()?;
    if auth.as_str().contains('@') {
        return None;
    }
    let host = auth.host().to_ascii_lowercase();
    let default_port = match scheme.as_str() {
        "https" => 443,
        "http" => 80,
        _ => return None,
    };
    Some(match auth.port_u16() {
        Some(p) if p != default_port => format!("{scheme}://{host}:{p}"),
        _ => format!("{scheme}://{host}"),
    })
}

/// What the request's `Origin` (or, without one, `Referer`) says about
/// where it was made.
#[derive(Debug, PartialEq, Eq)]
pub enum OriginCheck {
    /// Made by a page of this deployment.
    SameOrigin,
    /// Made by another site: refuse unsafe methods and WebSocket upgrades
    /// (cross-site request forgery, cross-site WebSocket hijacking).
    CrossOrigin,
    /// Neither header: not a browser-made cross-site request (browsers send
    /// `Origin` on every cross-site POST and WebSocket), but not proven
    /// same-origin either.
    Absent,
}

/// Compares `Origin`/`Referer` with the public origin. `Origin: null`
/// (sandboxed frames, some redirects) counts as cross-origin.
pub fn check_origin(headers: &HeaderMap, public_host: &str) -> OriginCheck {
    let expected = origin_of(&public_origin(public_host));
    let claimed = match headers.get(header::ORIGIN) {
        Some(o) => o.to_str().ok().map(str::to_owned),
        None => match headers.get(header::REFERER) {
            Some(r) => r.to_str().ok().map(str::to_owned),
            None => return OriginCheck::Absent,
        },
    };
    match (claimed.as_deref().and_then(origin_of), expected) {
        (Some(c), Some(e)) if c == e => OriginCheck::SameOrigin,
        _ => OriginCheck::CrossOrigin,
    }
}

/// Presents the request to Jupyter as if made on its own origin: `Host` is
/// the upstream authority and a same-origin `Origin`/`Referer` is rewritten
/// to `http://<upstream authority>`. Jupyter's `check_host` and
/// `check_origin` then pass without `allow_remote_access` or `allow_origin`,
/// because nbgate has already done the real check against the public origin.
///
/// Only a same-origin `Origin` is rewritten: a cross-site one (allowed here
/// on safe methods such as GET) is passed as sent, so Jupyter's remaining
/// origin checks (CORS answers, handlers that check it) see the truth
/// instead of their own origin. A same-origin `Referer` loses its `token`
/// parameters: after a browser opened `/lab?token=…` with nbgate's API
/// token, the next requests' `Referer` would carry it to Jupyter (its logs,
/// apps behind jupyter-server-proxy).
pub fn present_to_upstream(
    headers: &mut HeaderMap,
    upstream_authority: &str,
    upstream_host: &HeaderValue,
    public_host: &str,
) {
    headers.insert(header::HOST, upstream_host.clone());
    if !headers.contains_key(header::ORIGIN) && !headers.contains_key(header::REFERER) {
        return;
    }
    let public = public_origin(public_host);
    let upstream = format!("http://{upstream_authority}");
    let same_origin = headers
        .get(header::ORIGIN)
        .and_then(|o| o.to_str().ok())
        .and_then(origin_of)
        .is_some_and(|o| Some(o) == origin_of(&public));
    if same_origin {
        headers.insert(
            header::ORIGIN,
            HeaderValue::from_str(&upstream).expect("validated authority"),
        );
    }
    if let Some(r) = headers.get(header::REFERER).and_then(|v| v.to_str().ok()) {
        if let Some(rest) = strip_origin_prefix(r, &public) {
            if let Ok(v) = HeaderValue::from_str(&format!("{upstream}{}", strip_token_param(rest)))
            {
                headers.insert(header::REFERER, v);
            }
        }
    }
}

/// `path?query` without `token` parameters (nbgate's API token, or a stale
/// one of Jupyter's): they are nbgate's business, never Jupyter's.
pub fn strip_token_param(pq: &str) -> String {
    let Some((path, query)) = pq.split_once('?') else {
        return pq.to_owned();
    };
    // Names are compared decoded, as the request path reads them:
    // `tok%65n=` authenticates just like `token=`, so it must not reach
    // Jupyter (and its logs) either.
    let kept: Vec<&str> = query
        .split('&')
        .filter(|kv| {
            let name = kv.split('=').next().unwrap_or_default();
            form_urlencoded::parse(name.as_bytes())
                .next()
                .is_none_or(|(k, _)| k != "token")
        })
        .collect();
    if kept.is_empty() {
        path.to_owned()
    } else {
        format!("{path}?{}", kept.join("&"))
    }
}

fn strip_origin_prefix<'a>(url: &'a str, origin: &str) -> Option<&'a str> {
    let head = url.get(..origin.len())?;
    if !head.eq_ignore_ascii_case(origin) {
        return None;
    }
    let rest = &url[origin.len()..];
    (rest.is_empty() || rest.starts_with(['/', '?', '#'])).then_some(rest)
}

/// Rewrites an absolute `Location` that points at the upstream (under any
/// of the names Jupyter may use for itself) to the public origin. Relative
/// and foreign locations are left alone.
pub fn rewrite_location(headers: &mut HeaderMap, upstream_origins: &[String], public_host: &str) {
    let Some(loc) = headers.get(header::LOCATION).and_then(|v| v.to_str().ok()) else {
        return;
    };
    for origin in upstream_origins {
        if let Some(rest) = strip_origin_prefix(loc, origin) {
            let new = format!("{}{}", public_origin(public_host), rest);
            if let Ok(v) = HeaderValue::from_str(&new) {
                headers.insert(header::LOCATION, v);
            }
            return;
        }
    }
}

/// Security headers on every response. `hsts` is the full
/// `Strict-Transport-Security` value when enabled. The upstream's `Server`
/// banner is dropped: version numbers only help an attacker pick an exploit.
pub fn add_security_headers(headers: &mut HeaderMap, hsts: Option<&HeaderValue>) {
    headers.remove(header::SERVER);
    if let Some(v) = hsts {
        headers.insert(header::STRICT_TRANSPORT_SECURITY, v.clone());
    }
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    if !headers.contains_key(header::REFERRER_POLICY) {
        headers.insert(
            header::REFERRER_POLICY,
            HeaderValue::from_static("same-origin"),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forwarding_headers_spelled_with_underscores_or_dots_are_removed() {
        let mut h = HeaderMap::new();
        for name in [
            "x_forwarded_for",
            "x.real.ip",
            "x-forwarded_host",
            "x_other",
        ] {
            h.insert(
                HeaderName::from_bytes(name.as_bytes()).expect("name"),
                HeaderValue::from_static("6.6.6.6"),
            );
        }
        set_forwarded(&mut h, IpAddr::from([10, 0, 0, 1]), "nb.example");
        assert_eq!(h["x-forwarded-for"], "10.0.0.1");
        assert_eq!(h["x-forwarded-host"], "nb.example");
        assert!(h.get("x_forwarded_for").is_none());
        assert!(h.get("x.real.ip").is_none());
        assert!(h.get("x-forwarded_host").is_none());
        assert_eq!(h["x_other"], "6.6.6.6", "other names are left alone");
    }

    #[test]
    fn identity_header_replaces_every_client_copy_and_spelling() {
        let name = HeaderName::from_static("x-nbgate-user");
        let mut h = HeaderMap::new();
        for (k, v) in [
            ("X-Nbgate-User", "bob"),
            ("x-nbgate-user", "carol"),
            ("X-NBGATE-USER", "dave"),
            ("x_nbgate_user", "erin"),
            ("x.nbgate_user", "frank"),
            ("x-nbgate-users", "kept"),
        ] {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).expect("name"),
                HeaderValue::from_static(v),
            );
        }
        set_identity(&mut h, &name, "alice");
        let values: Vec<_> = h.get_all(&name).iter().collect();
        assert_eq!(values, ["alice"], "{h:?}");
        assert!(h.get("x_nbgate_user").is_none());
        assert!(h.get("x.nbgate_user").is_none());
        assert_eq!(h["x-nbgate-users"], "kept", "other names are left alone");
        assert_eq!(h.len(), 2, "{h:?}");
    }

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).expect("name"),
                HeaderValue::from_str(v).expect("value"),
            );
        }
        h
    }

    #[test]
    fn hop_by_hop_headers_and_those_named_in_connection_are_removed() {
        let mut h = map(&[
            ("connection", "keep-alive, x-secret"),
            ("keep-alive", "timeout=5"),
            ("x-secret", "1"),
            ("te", "trailers"),
            ("proxy-authorization", "Basic abc"),
            ("upgrade", "h2c"),
            ("x-xsrftoken", "tok"),
            ("cookie", "_xsrf=tok"),
        ]);
        remove_hop_by_hop(&mut h);
        assert_eq!(h.len(), 2, "{h:?}");
        assert_eq!(h["x-xsrftoken"], "tok");
        assert_eq!(h["cookie"], "_xsrf=tok");
    }

    #[test]
    fn client_sent_forwarding_headers_are_replaced_not_trusted() {
        let mut h = map(&[
            ("x-forwarded-for", "6.6.6.6"),
            ("forwarded", "for=6.6.6.6"),
            ("x-real-ip", "6.6.6.6"),
        ]);
        set_forwarded(&mut h, "::1".parse().expect("ip"), "nb.example:8443");
        assert_eq!(h["x-forwarded-for"], "::1");
        assert_eq!(h["x-forwarded-proto"], "https");
        assert_eq!(h["x-forwarded-host"], "nb.example:8443");
        assert_eq!(
            h["forwarded"],
            "for=\"[::1]\";proto=https;host=\"nb.example:8443\""
        );
        assert!(h.get("x-real-ip").is_none());
        assert_eq!(h.get_all("x-forwarded-for").iter().count(), 1);
    }

    #[test]
    fn forwarding_headers_name_ipv4_clients_exactly() {
        for ip in [
            "127.0.0.1",
            "10.20.30.40",
            "255.0.9.100",
            "0.0.0.0",
            "1.99.100.199",
        ] {
            let mut h = HeaderMap::new();
            set_forwarded(&mut h, ip.parse().expect("ip"), "nb.example");
            assert_eq!(h["x-forwarded-for"], ip);
            assert_eq!(
                h["forwarded"],
                format!("for={ip};proto=https;host=\"nb.example\"").as_str()
            );
        }
    }

    #[test]
    fn requests_without_hop_by_hop_headers_are_left_whole() {
        let mut h = map(&[("cookie", "a=1"), ("accept", "*/*"), ("x-keep", "1")]);
        let before = h.clone();
        remove_hop_by_hop(&mut h);
        assert_eq!(h, before);
        // A lone hop-by-hop header is found by the single pass too.
        let mut h = map(&[("accept", "*/*"), ("proxy-connection", "keep-alive")]);
        remove_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1, "{h:?}");
    }

    #[test]
    fn websocket_upgrade_is_detected_with_token_lists() {
        assert!(is_websocket_upgrade(&map(&[
            ("connection", "keep-alive, Upgrade"),
            ("upgrade", "websocket"),
        ])));
        assert!(!is_websocket_upgrade(&map(&[("upgrade", "websocket")])));
        assert!(!is_websocket_upgrade(&map(&[
            ("connection", "upgrade"),
            ("upgrade", "h2c")
        ])));
    }

    #[test]
    fn origin_check_compares_scheme_host_and_port() {
        let host = "localhost:8443";
        let same = map(&[("origin", "https://LOCALHOST:8443")]);
        assert_eq!(check_origin(&same, host), OriginCheck::SameOrigin);
        for evil in [
            "https://evil.example",
            "http://localhost:8443",
            "https://localhost:9999",
            "null",
            "https://localhost:8443.evil.example",
        ] {
            let h = map(&[("origin", evil)]);
            assert_eq!(check_origin(&h, host), OriginCheck::CrossOrigin, "{evil}");
        }
        let referer = map(&[("referer", "https://localhost:8443/lab/tree?x=1")]);
        assert_eq!(check_origin(&referer, host), OriginCheck::SameOrigin);
        assert_eq!(check_origin(&HeaderMap::new(), host), OriginCheck::Absent);
        let default_port = map(&[("origin", "https://nb.example")]);
        assert_eq!(
            check_origin(&default_port, "nb.example:443"),
            OriginCheck::SameOrigin
        );
    }

    /// `present_to_upstream` for Jupyter on 127.0.0.1:8888 behind `localhost:8443`.
    fn present(h: &mut HeaderMap) {
        present_to_upstream(
            h,
            "127.0.0.1:8888",
            &HeaderValue::from_static("127.0.0.1:8888"),
            "localhost:8443",
        );
    }

    #[test]
    fn upstream_sees_its_own_host_and_origin() {
        let mut h = map(&[
            ("host", "localhost:8443"),
            ("origin", "https://localhost:8443"),
            ("referer", "https://localhost:8443/lab?x"),
        ]);
        present(&mut h);
        assert_eq!(h["host"], "127.0.0.1:8888");
        assert_eq!(h["origin"], "http://127.0.0.1:8888");
        assert_eq!(h["referer"], "http://127.0.0.1:8888/lab?x");
    }

    #[test]
    fn cross_site_origin_passes_as_sent_and_referer_loses_token_params() {
        let mut h = map(&[
            ("origin", "https://evil.example"),
            (
                "referer",
                "https://localhost:8443/lab?token=nbgate-api-token&a=1",
            ),
        ]);
        present(&mut h);
        assert_eq!(h["origin"], "https://evil.example");
        assert_eq!(h["referer"], "http://127.0.0.1:8888/lab?a=1");
        let mut h = map(&[
            ("origin", "null"),
            ("referer", "https://localhost:8443/?%74oken=x"),
        ]);
        present(&mut h);
        assert_eq!(h["origin"], "null");
        assert_eq!(h["referer"], "http://127.0.0.1:8888/");
    }

    #[test]
    fn location_pointing_at_upstream_is_rewritten_and_others_kept() {
        let ups = vec![
            "http://127.0.0.1:8888".to_owned(),
            "http://localhost:8888".to_owned(),
        ];
        let mut h = map(&[("location", "http://localhost:8888/lab?a=1")]);
        rewrite_location(&mut h, &ups, "nb.example");
        assert_eq!(h["location"], "https://nb.example/lab?a=1");
        let mut h = map(&[("location", "http://127.0.0.1:88889/x")]);
        rewrite_location(&mut h, &ups, "nb.example");
        assert_eq!(h["location"], "http://127.0.0.1:88889/x");
        let mut h = map(&[("location", "/lab")]);
        rewrite_location(&mut h, &ups, "nb.example");
        assert_eq!(h["location"], "/lab");
    }

    #[test]
    fn security_headers_are_added_and_server_banner_removed() {
        let mut h = map(&[("server", "TornadoServer/6.4")]);
        let hsts = HeaderValue::from_static("max-age=31536000");
        add_security_headers(&mut h, Some(&hsts));
        assert!(h.get("server").is_none());
        assert_eq!(h["strict-transport-security"], "max-age=31536000");
        assert_eq!(h["x-content-type-options"], "nosniff");
        assert_eq!(h["referrer-policy"], "same-origin");
    }
}
