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
//! Only the header the operator says the proxies write is read
//! (`policy.forwarded_header`): proxies append to their own header and pass
//! the other one through untouched, so reading both would let a client choose
//! its address with the header the proxy does not write.
//!
//! When the walk reaches a hop it cannot read (`unknown`, an obfuscated
//! identifier, garbage), the client is unknown: `None`. Falling back to the
//! proxy's own address instead would let a client that sends garbage look
//! like the (often allowed) proxy. Entries left of the first untrusted hop
//! are never looked at, so garbage there changes nothing.

use std::net::{IpAddr, SocketAddr};

use http::header::{HeaderMap, FORWARDED};

use super::cidr::{normalize, IpSet};

const X_FORWARDED_FOR: &str = "x-forwarded-for";

/// The header trusted proxies write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ForwardedHeader {
    /// `X-Forwarded-For` (nginx, HAProxy, cloud load balancers, Caddy, Traefik).
    #[default]
    XForwardedFor,
    /// `Forwarded` (RFC 7239).
    Forwarded,
}

/// The client address the rest of nbgate uses (always normalised, so an
/// IPv4-mapped peer comes back as IPv4).
///
/// Only if `peer` is in `trusted` is the `which` header read. Its entries are
/// walked right to left, skipping trusted hops; the first untrusted hop is
/// the client. If every hop is trusted, the leftmost is the client; with no
/// header at all, the peer itself is. `None`: the walk reached a hidden or
/// unreadable hop, so the client is unknown.
pub fn client_addr(
    peer: IpAddr,
    headers: &HeaderMap,
    trusted: &IpSet,
    which: ForwardedHeader,
) -> Option<IpAddr> {
    let peer = normalize(peer);
    if !trusted.contains(peer) {
        return Some(peer);
    }
    let hops = match which {
        ForwardedHeader::XForwardedFor => x_forwarded_for(headers),
        ForwardedHeader::Forwarded if !headers.contains_key(FORWARDED) => Vec::new(),
        // An unparsable Forwarded value hides everything it carries.
        ForwardedHeader::Forwarded => forwarded_for(headers).unwrap_or_else(|| vec![Hop::Hidden]),
    };
    walk(peer, hops.into_iter().rev(), trusted)
}

/// One hop as a proxy reported it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Hop {
    Addr(IpAddr),
    /// `unknown`, an obfuscated identifier, an element without `for=`, or an
    /// entry that is not an address.
    Hidden,
}

/// Walks hops from the right (nearest) to the left.
fn walk(
    peer: IpAddr,
    hops_right_to_left: impl Iterator<Item = Hop>,
    trusted: &IpSet,
) -> Option<IpAddr> {
    let mut last = peer;
    for hop in hops_right_to_left {
        match hop {
            Hop::Hidden => return None,
            Hop::Addr(ip) => {
                let ip = normalize(ip);
                if !trusted.contains(ip) {
                    return Some(ip);
                }
                last = ip;
            }
        }
    }
    Some(last)
}

/// All `X-Forwarded-For` entries, left to right across all header lines; an
/// entry that is not an address (or a line that is not ASCII) is a hidden hop.
fn x_forwarded_for(headers: &HeaderMap) -> Vec<Hop> {
    let mut hops = Vec::new();
    for value in headers.get_all(X_FORWARDED_FOR) {
        let Ok(value) = value.to_str() else {
            hops.push(Hop::Hidden);
            continue;
        };
        for entry in value.split(',') {
            let entry = entry.trim();
            if entry.is_empty() {
                // "a, , b" or a trailing comma: tolerated, as RFC 9110 §5.6.1 allows empty list elements.
                continue;
            }
            // Squid and others write "unknown" for a hidden client.
            hops.push(parse_addr(entry).map_or(Hop::Hidden, Hop::Addr));
        }
    }
    hops
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
    use ForwardedHeader::{Forwarded as FWD, XForwardedFor as XFF};

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

    fn xff(value: &str) -> Option<IpAddr> {
        let h = headers(&[("x-forwarded-for", value)]);
        client_addr(ip(PROXY), &h, &trusted(&["10.0.0.0/24"]), XFF)
    }

    fn fwd(value: &str) -> Option<IpAddr> {
        let h = headers(&[("forwarded", value)]);
        client_addr(ip(PROXY), &h, &trusted(&["10.0.0.0/24"]), FWD)
    }

    #[test]
    fn spoofed_headers_from_untrusted_peer_are_ignored() {
        let t = trusted(&["10.0.0.0/24"]);
        for (name, which) in [("x-forwarded-for", XFF), ("forwarded", FWD)] {
            let h = headers(&[(name, "10.0.0.1"), (name, "for=10.0.0.1")]);
            assert_eq!(
                client_addr(ip("203.0.113.9"), &h, &t, which),
                Some(ip("203.0.113.9"))
            );
        }
    }

    #[test]
    fn x_forwarded_for_is_walked_right_to_left_skipping_trusted_hops() {
        assert_eq!(xff("198.51.100.7"), Some(ip("198.51.100.7")));
        // A client's spoofed left entry is never reached.
        assert_eq!(xff("10.0.0.1, 198.51.100.7"), Some(ip("198.51.100.7")));
        assert_eq!(
            xff("1.1.1.1, 198.51.100.7, 10.0.0.9, 10.0.0.8"),
            Some(ip("198.51.100.7"))
        );
        assert_eq!(xff("10.0.0.7, 10.0.0.8"), Some(ip("10.0.0.7")));
        // Garbage left of the client changes nothing.
        assert_eq!(xff("bogus, 198.51.100.7"), Some(ip("198.51.100.7")));
    }

    #[test]
    fn x_forwarded_for_across_several_header_lines_is_one_list() {
        let h = headers(&[
            ("x-forwarded-for", "198.51.100.7"),
            ("x-forwarded-for", "10.0.0.8"),
        ]);
        let t = trusted(&["10.0.0.0/24"]);
        assert_eq!(
            client_addr(ip(PROXY), &h, &t, XFF),
            Some(ip("198.51.100.7"))
        );
    }

    #[test]
    fn x_forwarded_for_accepts_ports_brackets_and_mapped_addresses() {
        assert_eq!(xff("198.51.100.7:4711"), Some(ip("198.51.100.7")));
        assert_eq!(xff("[2001:db8::1]:4711"), Some(ip("2001:db8::1")));
        assert_eq!(xff("[2001:db8::1]"), Some(ip("2001:db8::1")));
        assert_eq!(xff("::ffff:198.51.100.7"), Some(ip("198.51.100.7")));
        // A mapped trusted hop is skipped like its IPv4 form.
        assert_eq!(
            xff("198.51.100.7, ::ffff:10.0.0.9"),
            Some(ip("198.51.100.7"))
        );
    }

    #[test]
    fn mapped_trusted_peer_is_trusted_and_result_is_normalised() {
        let t = trusted(&["10.0.0.0/24"]);
        let h = headers(&[("x-forwarded-for", "198.51.100.7")]);
        assert_eq!(
            client_addr(ip("::ffff:10.0.0.5"), &h, &t, XFF),
            Some(ip("198.51.100.7"))
        );
        assert_eq!(
            client_addr(ip("::ffff:203.0.113.1"), &HeaderMap::new(), &t, XFF),
            Some(ip("203.0.113.1"))
        );
    }

    #[test]
    fn unreadable_or_hidden_hop_reached_by_the_walk_makes_the_client_unknown() {
        for bad in [
            "not-an-ip",
            "198.51.100.7, bogus",
            "1.2.3.4:99999",
            "198.51.100.7, unknown, 10.0.0.9",
            "198.51.100.7, unknown",
        ] {
            assert_eq!(xff(bad), None, "{bad:?}");
        }
        let mut h = HeaderMap::new();
        h.insert(
            "x-forwarded-for",
            HeaderValue::from_bytes(b"1.2.3.4\xff").unwrap(),
        );
        let t = trusted(&["10.0.0.0/24"]);
        assert_eq!(client_addr(ip(PROXY), &h, &t, XFF), None);
    }

    #[test]
    fn no_forwarding_header_from_trusted_peer_gives_the_peer() {
        let t = trusted(&["10.0.0.0/24"]);
        for which in [XFF, FWD] {
            assert_eq!(
                client_addr(ip(PROXY), &HeaderMap::new(), &t, which),
                Some(ip(PROXY))
            );
        }
        assert_eq!(xff(""), Some(ip(PROXY)));
    }

    #[test]
    fn forwarded_from_trusted_peer_gives_the_client() {
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
            // Hidden nodes left of the client are never reached.
            ("for=unknown, for=198.51.100.7", "198.51.100.7"),
        ];
        for (value, want) in cases {
            assert_eq!(fwd(value), Some(ip(want)), "{value:?}");
        }
    }

    #[test]
    fn forwarded_hidden_or_malformed_hop_makes_the_client_unknown() {
        for value in [
            // RFC 7239 §7.4 examples.
            "for=unknown",
            "for=_hidden, for=10.0.0.9",
            r#"for="_gazonk""#,
            "for=198.51.100.7, for=unknown, for=10.0.0.9",
            "for=198.51.100.7, proto=https",
            r#"for="unknown:_port""#,
            // Malformed values.
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
        ] {
            assert_eq!(fwd(value), None, "{value:?}");
        }
    }

    #[test]
    fn only_the_configured_header_is_read() {
        // The proxy appends to X-Forwarded-For and passes the client's own
        // Forwarded header through: reading Forwarded would believe the client.
        let t = trusted(&["10.0.0.0/24"]);
        let h = headers(&[
            ("x-forwarded-for", "203.0.113.1"),
            ("forwarded", "for=198.51.100.7"),
        ]);
        assert_eq!(client_addr(ip(PROXY), &h, &t, XFF), Some(ip("203.0.113.1")));
        assert_eq!(
            client_addr(ip(PROXY), &h, &t, FWD),
            Some(ip("198.51.100.7"))
        );
    }
}
