//! The client address behind trusted proxies and load balancers.
//!
//! Owns one decision: which address is "the client" for the allowlist, rate
//! limits, lockout, logs and the `X-Forwarded-For` sent upstream. Only when the
//! TCP peer is a trusted proxy are `Forwarded` (RFC 7239) or `X-Forwarded-For`
//! read; from anyone else they are ignored, because any client can send them.
//!
//! The walk goes right to left, the order in which proxies append: the rightmost
//! entry was written by the proxy that connected to us, and each entry is only
//! as trustworthy as the hop that wrote it. Trusted hops are skipped; the first
//! untrusted one is the client. Security: taking the leftmost entry (as naive
//! code does) lets a client put any address there and walk past the allowlist.
//!
//! It must not fail a request: a malformed header yields the peer address,
//! which is what nginx's `real_ip` does too.

use std::net::{IpAddr, SocketAddr};

use http::header::{HeaderMap, FORWARDED};

use super::cidr::{normalize, IpSet};

const X_FORWARDED_FOR: &str = "x-forwarded-for";

/// The client address the rest of nbgate uses (always normalised, so an
/// IPv4-mapped peer comes back as IPv4).
///
/// Only if `peer` is in `trusted` are the forwarding headers read:
/// - `Forwarded` takes precedence when present: it is the standard, and a proxy
///   that sends it has chosen it; `X-Forwarded-For` is then ignored entirely
///   (mixing the two would let one proxy's header vouch for the other's).
/// - Otherwise `X-Forwarded-For`.
///
/// Entries are walked right to left, skipping trusted hops; the first
/// untrusted hop is the client. If every hop is trusted, the leftmost is the
/// client. An obfuscated or `unknown` node (RFC 7239 §6.2, §6.3) stops the
/// walk: the client is then the last trusted hop seen, the proxy that hid it.
/// A malformed header yields `peer`; so does an unreadable one.
pub fn client_addr(peer: IpAddr, headers: &HeaderMap, trusted: &IpSet) -> IpAddr {
    let peer = normalize(peer);
    if !trusted.contains(peer) {
        return peer;
    }
    if headers.contains_key(FORWARDED) {
        return match forwarded_for(headers) {
            Some(hops) => walk(peer, hops.into_iter().rev(), trusted),
            None => peer,
        };
    }
    if headers.contains_key(X_FORWARDED_FOR) {
        return match x_forwarded_for(headers) {
            Some(hops) => walk(peer, hops.into_iter().rev(), trusted),
            None => peer,
        };
    }
    peer
}

/// One hop as a proxy reported it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Hop {
    Addr(IpAddr),
    /// `unknown`, an obfuscated identifier, or an element without `for=`.
    Hidden,
}

/// Walks hops from the right (nearest) to the left.
fn walk(peer: IpAddr, hops_right_to_left: impl Iterator<Item = Hop>, trusted: &IpSet) -> IpAddr {
    let mut last = peer;
    for hop in hops_right_to_left {
        match hop {
            Hop::Hidden => return last,
            Hop::Addr(ip) => {
                let ip = normalize(ip);
                if !trusted.contains(ip) {
                    return ip;
                }
                last = ip;
            }
        }
    }
    last
}

/// All `X-Forwarded-For` entries, left to right across all header lines;
/// `None` if any entry is not an address.
fn x_forwarded_for(headers: &HeaderMap) -> Option<Vec<Hop>> {
    let mut hops = Vec::new();
    for value in headers.get_all(X_FORWARDED_FOR) {
        let value = value.to_str().ok()?;
        for entry in value.split(',') {
            let entry = entry.trim();
            if entry.is_empty() {
                // "a, , b" or a trailing comma: tolerated, as RFC 9110 §5.6.1 allows empty list elements.
                continue;
            }
            hops.push(Hop::Addr(parse_addr(entry)?));
        }
    }
    if hops.is_empty() {
        return None;
    }
    Some(hops)
}

/// An address as proxies write it in `X-Forwarded-For`: bare, `v4:port`, or
/// `[v6]:port` (Azure and some CDNs add ports).
fn parse_addr(s: &str) -> Option<IpAddr> {
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Some(ip);
    }
    if let Ok(sa) = s.parse::<SocketAddr>() {
        return Some(sa.ip());
    }
    // "[2001:db8::1]" without a port.
    let inner = s.strip_prefix('[')?.strip_suffix(']')?;
    inner.parse::<std::net::Ipv6Addr>().ok().map(IpAddr::V6)
}

/// The `for=` node of every `Forwarded` element, left to right across all
/// header lines; `None` if the header does not parse.
fn forwarded_for(headers: &HeaderMap) -> Option<Vec<Hop>> {
    let mut hops = Vec::new();
    for value in headers.get_all(FORWARDED) {
        let value = value.to_str().ok()?;
        parse_forwarded(value, &mut hops)?;
    }
    if hops.is_empty() {
        return None;
    }
    Some(hops)
}

/// Parses one `Forwarded` field value (RFC 7239 §4):
/// `forwarded-element *( "," forwarded-element )`, each element
/// `forwarded-pair *( ";" forwarded-pair )`, each pair `token "=" value` where
/// the value is a token or a quoted-string. Appends one hop per element.
fn parse_forwarded(value: &str, hops: &mut Vec<Hop>) -> Option<()> {
    let bytes = value.as_bytes();
    let mut i = 0;
    let mut element_for: Option<Hop> = None;
    let mut element_has_pairs = false;
    loop {
        skip_ows(bytes, &mut i);
        if i >= bytes.len() {
            break;
        }
        match bytes[i] {
            b',' => {
                // End of an element. Empty elements are tolerated (RFC 9110 §5.6.1).
                if element_has_pairs {
                    hops.push(element_for.take().unwrap_or(Hop::Hidden));
                }
                element_has_pairs = false;
                i += 1;
                continue;
            }
            b';' => {
                i += 1;
                continue;
            }
            _ => {}
        }
        let name_start = i;
        while i < bytes.len() && is_tchar(bytes[i]) {
            i += 1;
        }
        let name = &value[name_start..i];
        if name.is_empty() || bytes.get(i) != Some(&b'=') {
            return None;
        }
        i += 1;
        let pair_value = if bytes.get(i) == Some(&b'"') {
            quoted_string(value, &mut i)?
        } else {
            let start = i;
            while i < bytes.len() && is_tchar(bytes[i]) {
                i += 1;
            }
            if start == i {
                return None;
            }
            value[start..i].to_owned()
        };
        element_has_pairs = true;
        if name.eq_ignore_ascii_case("for") {
            // A parameter must not occur more than once per element (§4).
            if element_for.is_some() {
                return None;
            }
            element_for = Some(parse_node(&pair_value)?);
        }
        skip_ows(bytes, &mut i);
        match bytes.get(i) {
            None | Some(b',') | Some(b';') => {}
            Some(_) => return None,
        }
    }
    if element_has_pairs {
        hops.push(element_for.unwrap_or(Hop::Hidden));
    }
    Some(())
}

/// A node (RFC 7239 §6): `nodename [ ":" node-port ]`, where nodename is an
/// IPv4 address, a bracketed IPv6 address, `unknown`, or an obfuscated
/// identifier starting with `_`.
fn parse_node(node: &str) -> Option<Hop> {
    let (name, port) = if let Some(rest) = node.strip_prefix('[') {
        let (v6, after) = rest.split_once(']')?;
        let port = match after {
            "" => None,
            p => Some(p.strip_prefix(':')?),
        };
        let ip: std::net::Ipv6Addr = v6.parse().ok()?;
        if let Some(port) = port {
            valid_port(port)?;
        }
        return Some(Hop::Addr(IpAddr::V6(ip)));
    } else {
        match node.split_once(':') {
            Some((n, p)) => (n, Some(p)),
            None => (node, None),
        }
    };
    if let Some(port) = port {
        valid_port(port)?;
    }
    if name.eq_ignore_ascii_case("unknown") || name.starts_with('_') {
        return Some(Hop::Hidden);
    }
    name.parse::<std::net::Ipv4Addr>()
        .ok()
        .map(|v4| Hop::Addr(IpAddr::V4(v4)))
}

/// `node-port = port / obfport` (§6.1, §6.3).
fn valid_port(port: &str) -> Option<()> {
    let ok = if let Some(obf) = port.strip_prefix('_') {
        !obf.is_empty()
            && obf
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
    } else {
        !port.is_empty() && port.len() <= 5 && port.bytes().all(|b| b.is_ascii_digit())
    };
    ok.then_some(())
}

/// Reads a quoted-string starting at `*i` (on the opening quote), unescaping
/// quoted-pairs (RFC 9110 §5.6.4).
fn quoted_string(value: &str, i: &mut usize) -> Option<String> {
    let bytes = value.as_bytes();
    *i += 1;
    let mut out = String::new();
    while let Some(&b) = bytes.get(*i) {
        match b {
            b'"' => {
                *i += 1;
                return Some(out);
            }
            b'\\' => {
                let escaped = *bytes.get(*i + 1)?;
                out.push(char::from(escaped));
                *i += 2;
            }
            _ => {
                out.push(char::from(b));
                *i += 1;
            }
        }
    }
    None
}

fn skip_ows(bytes: &[u8], i: &mut usize) {
    while *i < bytes.len() && (bytes[*i] == b' ' || bytes[*i] == b'\t') {
        *i += 1;
    }
}

/// RFC 9110 §5.6.2 token characters.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::cidr::Cidr;
    use http::HeaderValue;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn trusted(list: &[&str]) -> IpSet {
        let cidrs: Vec<Cidr> = list.iter().map(|s| s.parse().unwrap()).collect();
        IpSet::new(&cidrs)
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (name, value) in pairs {
            h.append(
                http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        h
    }

    const PROXY: &str = "10.0.0.5";

    #[test]
    fn spoofed_x_forwarded_for_from_untrusted_peer_is_ignored() {
        let h = headers(&[("x-forwarded-for", "10.0.0.1")]);
        let t = trusted(&["10.0.0.0/24"]);
        assert_eq!(client_addr(ip("203.0.113.9"), &h, &t), ip("203.0.113.9"));
        let h = headers(&[("forwarded", "for=10.0.0.1")]);
        assert_eq!(client_addr(ip("203.0.113.9"), &h, &t), ip("203.0.113.9"));
    }

    #[test]
    fn x_forwarded_for_from_trusted_peer_gives_the_client() {
        let h = headers(&[("x-forwarded-for", "198.51.100.7")]);
        let t = trusted(&["10.0.0.0/24"]);
        assert_eq!(client_addr(ip(PROXY), &h, &t), ip("198.51.100.7"));
    }

    #[test]
    fn x_forwarded_for_is_walked_right_to_left_so_a_spoofed_left_entry_is_not_used() {
        // Client 198.51.100.7 sent "XFF: 10.0.0.1" hoping to look internal;
        // the trusted proxy appended the real address.
        let h = headers(&[("x-forwarded-for", "10.0.0.1, 198.51.100.7")]);
        let t = trusted(&["10.0.0.0/24"]);
        assert_eq!(client_addr(ip(PROXY), &h, &t), ip("198.51.100.7"));
    }

    #[test]
    fn x_forwarded_for_skips_trusted_hops() {
        let h = headers(&[(
            "x-forwarded-for",
            "1.1.1.1, 198.51.100.7, 10.0.0.9, 10.0.0.8",
        )]);
        let t = trusted(&["10.0.0.0/24"]);
        assert_eq!(client_addr(ip(PROXY), &h, &t), ip("198.51.100.7"));
    }

    #[test]
    fn x_forwarded_for_with_only_trusted_hops_gives_the_leftmost() {
        let h = headers(&[("x-forwarded-for", "10.0.0.7, 10.0.0.8")]);
        let t = trusted(&["10.0.0.0/24"]);
        assert_eq!(client_addr(ip(PROXY), &h, &t), ip("10.0.0.7"));
    }

    #[test]
    fn x_forwarded_for_across_several_header_lines_is_one_list() {
        let h = headers(&[
            ("x-forwarded-for", "198.51.100.7"),
            ("x-forwarded-for", "10.0.0.8"),
        ]);
        let t = trusted(&["10.0.0.0/24"]);
        assert_eq!(client_addr(ip(PROXY), &h, &t), ip("198.51.100.7"));
    }

    #[test]
    fn x_forwarded_for_accepts_ports_brackets_and_mapped_addresses() {
        let t = trusted(&["10.0.0.0/24"]);
        let h = headers(&[("x-forwarded-for", "198.51.100.7:4711")]);
        assert_eq!(client_addr(ip(PROXY), &h, &t), ip("198.51.100.7"));
        let h = headers(&[("x-forwarded-for", "[2001:db8::1]:4711")]);
        assert_eq!(client_addr(ip(PROXY), &h, &t), ip("2001:db8::1"));
        let h = headers(&[("x-forwarded-for", "[2001:db8::1]")]);
        assert_eq!(client_addr(ip(PROXY), &h, &t), ip("2001:db8::1"));
        let h = headers(&[("x-forwarded-for", "::ffff:198.51.100.7")]);
        assert_eq!(client_addr(ip(PROXY), &h, &t), ip("198.51.100.7"));
        // A mapped trusted hop is skipped like its IPv4 form.
        let h = headers(&[("x-forwarded-for", "198.51.100.7, ::ffff:10.0.0.9")]);
        assert_eq!(client_addr(ip(PROXY), &h, &t), ip("198.51.100.7"));
    }

    #[test]
    fn mapped_trusted_peer_is_trusted_and_result_is_normalised() {
        let t = trusted(&["10.0.0.0/24"]);
        let h = headers(&[("x-forwarded-for", "198.51.100.7")]);
        assert_eq!(
            client_addr(ip("::ffff:10.0.0.5"), &h, &t),
            ip("198.51.100.7")
        );
        assert_eq!(
            client_addr(ip("::ffff:203.0.113.1"), &HeaderMap::new(), &t),
            ip("203.0.113.1")
        );
    }

    #[test]
    fn malformed_x_forwarded_for_gives_the_peer() {
        let t = trusted(&["10.0.0.0/24"]);
        for bad in ["not-an-ip", "198.51.100.7, bogus", "1.2.3.4:99999", ""] {
            let h = headers(&[("x-forwarded-for", bad)]);
            assert_eq!(client_addr(ip(PROXY), &h, &t), ip(PROXY), "{bad:?}");
        }
        let mut h = HeaderMap::new();
        h.insert(
            "x-forwarded-for",
            HeaderValue::from_bytes(b"1.2.3.4\xff").unwrap(),
        );
        assert_eq!(client_addr(ip(PROXY), &h, &t), ip(PROXY));
    }

    #[test]
    fn no_forwarding_header_from_trusted_peer_gives_the_peer() {
        let t = trusted(&["10.0.0.0/24"]);
        assert_eq!(client_addr(ip(PROXY), &HeaderMap::new(), &t), ip(PROXY));
    }

    #[test]
    fn forwarded_from_trusted_peer_gives_the_client() {
        let t = trusted(&["10.0.0.0/24"]);
        let cases = [
            ("for=198.51.100.7", "198.51.100.7"),
            ("For=198.51.100.7;proto=https;by=10.0.0.5", "198.51.100.7"),
            (r#"for="198.51.100.7:4711""#, "198.51.100.7"),
            (r#"for="[2001:db8:cafe::17]:4711""#, "2001:db8:cafe::17"),
            (r#"for="[2001:db8:cafe::17]""#, "2001:db8:cafe::17"),
            (
                r#"proto=https; for="198.51.100.7" ; host=example.com"#,
                "198.51.100.7",
            ),
            ("for=192.0.2.43, for=198.51.100.17", "198.51.100.17"),
            (
                "for=192.0.2.43, for=198.51.100.17, for=10.0.0.9",
                "198.51.100.17",
            ),
            ("for=10.0.0.7, for=10.0.0.9", "10.0.0.7"),
            (r#"for="\[2001:db8::1\]""#, "2001:db8::1"),
        ];
        for (value, want) in cases {
            let h = headers(&[("forwarded", value)]);
            assert_eq!(client_addr(ip(PROXY), &h, &t), ip(want), "{value:?}");
        }
    }

    #[test]
    fn forwarded_hidden_node_stops_the_walk_at_the_proxy_that_hid_it() {
        let t = trusted(&["10.0.0.0/24"]);
        let cases = [
            // RFC 7239 §7.4 examples.
            ("for=unknown", PROXY),
            ("for=_hidden, for=10.0.0.9", "10.0.0.9"),
            (r#"for="_gazonk""#, PROXY),
            ("for=198.51.100.7, for=unknown, for=10.0.0.9", "10.0.0.9"),
            ("for=198.51.100.7, proto=https", PROXY),
            (r#"for="unknown:_port""#, PROXY),
        ];
        for (value, want) in cases {
            let h = headers(&[("forwarded", value)]);
            assert_eq!(client_addr(ip(PROXY), &h, &t), ip(want), "{value:?}");
        }
    }

    #[test]
    fn malformed_forwarded_gives_the_peer() {
        let t = trusted(&["10.0.0.0/24"]);
        for bad in [
            "for=",
            "for=2001:db8::1",
            "for=[2001:db8::1]",
            r#"for="198.51.100.7"#,
            "for=198.51.100.7 garbage",
            "for=198.51.100.7;for=198.51.100.8",
            "=198.51.100.7",
            "for=not.an.ip.addr",
            r#"for="198.51.100.7:http""#,
            r#"for="[2001:db8::1]x""#,
            ",",
        ] {
            let h = headers(&[("forwarded", bad)]);
            assert_eq!(client_addr(ip(PROXY), &h, &t), ip(PROXY), "{bad:?}");
        }
    }

    #[test]
    fn forwarded_takes_precedence_over_x_forwarded_for() {
        let t = trusted(&["10.0.0.0/24"]);
        let h = headers(&[
            ("x-forwarded-for", "203.0.113.1"),
            ("forwarded", "for=198.51.100.7"),
        ]);
        assert_eq!(client_addr(ip(PROXY), &h, &t), ip("198.51.100.7"));
        // A present but malformed Forwarded does not fall back to XFF.
        let h = headers(&[("x-forwarded-for", "203.0.113.1"), ("forwarded", "for=")]);
        assert_eq!(client_addr(ip(PROXY), &h, &t), ip(PROXY));
    }

    #[test]
    fn forwarded_across_several_header_lines_is_one_list() {
        let t = trusted(&["10.0.0.0/24"]);
        let h = headers(&[
            ("forwarded", "for=198.51.100.7"),
            ("forwarded", "for=10.0.0.9"),
        ]);
        assert_eq!(client_addr(ip(PROXY), &h, &t), ip("198.51.100.7"));
    }
}
