//! The HAProxy PROXY protocol header (v1 text and v2 binary), as sent by
//! HAProxy and cloud L4 load balancers in front of a listener.
//!
//! Owns reading exactly the header from a fresh connection and turning it into
//! the original client and destination addresses. Reference: "The PROXY
//! protocol, Versions 1 & 2" (haproxy.org, `doc/proxy-protocol.txt`); section
//! numbers below are from it.
//!
//! It must not read a byte past the header: the TLS ClientHello follows on the
//! same stream, and a byte taken here would be lost to rustls. So the reader
//! peeks to find the header's length and only consumes bytes that are known to
//! be part of the header. It must not decide whom to trust either: the caller
//! calls [`read_header`] only for peers in `trusted_proxies` and refuses the
//! connection on any error. Security: a header from an untrusted peer would let
//! anyone choose their own client address.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

/// What the proxy said about the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyHeader {
    /// The connection was proxied for `source`, which is the client address.
    Proxied {
        source: SocketAddr,
        destination: SocketAddr,
    },
    /// The proxy's own connection (v2 `LOCAL`, e.g. a health check), or an
    /// address family it could not express (v1 `UNKNOWN`, v2 `AF_UNSPEC` or
    /// `AF_UNIX`): use the real peer address.
    Local,
}

/// Why no header could be read; the caller closes the connection.
#[derive(Debug, thiserror::Error)]
pub enum ProxyProtocolError {
    #[error("no complete PROXY protocol header within the time limit")]
    Timeout,
    #[error("reading the PROXY protocol header failed")]
    Io(#[from] std::io::Error),
    #[error("connection closed before the PROXY protocol header was complete")]
    UnexpectedEof,
    #[error("malformed PROXY protocol header: {0}")]
    Malformed(&'static str),
}

/// The longest v1 header, CRLF included (§2.1).
pub const V1_MAX_LEN: usize = 107;

/// The v2 signature (§2.2).
pub const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";

/// The largest v2 payload (addresses + TLVs) accepted. The format allows
/// 65,535 bytes; real proxies send a few hundred (addresses plus a few TLVs
/// such as AWS's VPC endpoint id). The cap bounds what one connection can make
/// us buffer before TLS even starts.
pub const V2_MAX_PAYLOAD: usize = 4096;

const V1_PREFIX: &[u8] = b"PROXY ";

/// Reads one PROXY protocol header (v1 or v2) from `stream`, leaving the
/// stream positioned at the first byte after it.
///
/// Peeks at what has arrived, and consumes only bytes known to be header: all
/// of an incomplete header (it continues past them), or exactly the header's
/// length once it is complete. Consuming the incomplete part also means the
/// next peek waits for new data instead of returning the same bytes again.
///
/// # Errors
/// [`ProxyProtocolError::Timeout`] if the whole header has not arrived within
/// `timeout`; `UnexpectedEof`, `Malformed` or `Io` otherwise.
pub async fn read_header(
    stream: &mut TcpStream,
    timeout: Duration,
) -> Result<ProxyHeader, ProxyProtocolError> {
    match tokio::time::timeout(timeout, read_header_inner(stream)).await {
        Ok(result) => result,
        Err(_elapsed) => Err(ProxyProtocolError::Timeout),
    }
}

async fn read_header_inner(stream: &mut TcpStream) -> Result<ProxyHeader, ProxyProtocolError> {
    // Header bytes seen so far (consumed from the socket, except for the
    // last peek's bytes while they are being judged).
    let mut buf: Vec<u8> = Vec::with_capacity(V1_MAX_LEN + 1);
    let mut chunk = [0u8; 512];
    loop {
        let n = stream.peek(&mut chunk).await?;
        if n == 0 {
            return Err(ProxyProtocolError::UnexpectedEof);
        }
        let consumed = buf.len();
        buf.extend_from_slice(&chunk[..n]);
        match parse(&buf)? {
            Some((header, len)) => {
                // `len > consumed`: the previous round found the header
                // incomplete. Take exactly the rest of it and no more.
                let rest = len - consumed;
                stream.read_exact(&mut chunk[..rest]).await?;
                return Ok(header);
            }
            None => {
                // All peeked bytes belong to the still incomplete header.
                stream.read_exact(&mut chunk[..n]).await?;
            }
        }
    }
}

/// Parses a v1 or v2 header from the start of `buf`.
///
/// `Ok(None)`: `buf` is a valid beginning of a header but it is incomplete.
/// `Ok(Some((header, len)))`: the header is the first `len` bytes.
///
/// # Errors
/// [`ProxyProtocolError::Malformed`] when `buf` cannot start a valid header.
pub fn parse(buf: &[u8]) -> Result<Option<(ProxyHeader, usize)>, ProxyProtocolError> {
    match buf.first() {
        None => Ok(None),
        Some(b'P') => parse_v1(buf),
        Some(b'\r') => parse_v2(buf),
        Some(_) => Err(ProxyProtocolError::Malformed("not a PROXY protocol header")),
    }
}

/// Parses a v1 (text) header (§2.1):
/// `"PROXY" SP ("TCP4" | "TCP6") SP src SP dst SP sport SP dport CRLF`, or
/// `"PROXY UNKNOWN" ... CRLF` (anything up to the CRLF is ignored).
///
/// # Errors
/// [`ProxyProtocolError::Malformed`] on any deviation, and for a header
/// longer than 107 bytes.
pub fn parse_v1(buf: &[u8]) -> Result<Option<(ProxyHeader, usize)>, ProxyProtocolError> {
    use ProxyProtocolError::Malformed;
    let prefix_len = buf.len().min(V1_PREFIX.len());
    if buf[..prefix_len] != V1_PREFIX[..prefix_len] {
        return Err(Malformed("v1 header does not start with \"PROXY \""));
    }
    let scan = &buf[..buf.len().min(V1_MAX_LEN)];
    let Some(lf) = scan.iter().position(|&b| b == b'\n') else {
        if buf.len() >= V1_MAX_LEN {
            return Err(Malformed("v1 header longer than 107 bytes"));
        }
        return Ok(None);
    };
    if lf == 0 || scan[lf - 1] != b'\r' {
        return Err(Malformed("v1 header line does not end in CRLF"));
    }
    let len = lf + 1;
    let line = std::str::from_utf8(&buf[V1_PREFIX.len()..lf - 1])
        .map_err(|_| Malformed("v1 header is not ASCII"))?;
    let mut fields = line.split(' ');
    let family = fields.next().unwrap_or("");
    if family == "UNKNOWN" {
        // §2.1: "the receiver must ignore anything presented before the CRLF".
        return Ok(Some((ProxyHeader::Local, len)));
    }
    let (src, dst, sport, dport) = match (
        fields.next(),
        fields.next(),
        fields.next(),
        fields.next(),
        fields.next(),
    ) {
        (Some(s), Some(d), Some(sp), Some(dp), None) => (s, d, sp, dp),
        _ => return Err(Malformed("v1 header does not have exactly six fields")),
    };
    let (source, destination) = match family {
        "TCP4" => {
            let s: Ipv4Addr = src.parse().map_err(|_| Malformed("v1 bad IPv4 source"))?;
            let d: Ipv4Addr = dst
                .parse()
                .map_err(|_| Malformed("v1 bad IPv4 destination"))?;
            (IpAddr::V4(s), IpAddr::V4(d))
        }
        "TCP6" => {
            let s: Ipv6Addr = src.parse().map_err(|_| Malformed("v1 bad IPv6 source"))?;
            let d: Ipv6Addr = dst
                .parse()
                .map_err(|_| Malformed("v1 bad IPv6 destination"))?;
            (IpAddr::V6(s), IpAddr::V6(d))
        }
        _ => return Err(Malformed("v1 protocol is not TCP4, TCP6 or UNKNOWN")),
    };
    let sport = parse_v1_port(sport)?;
    let dport = parse_v1_port(dport)?;
    Ok(Some((
        ProxyHeader::Proxied {
            source: SocketAddr::new(source, sport),
            destination: SocketAddr::new(destination, dport),
        },
        len,
    )))
}

/// A v1 port: 1 to 5 decimal digits, no sign, at most 65535.
fn parse_v1_port(s: &str) -> Result<u16, ProxyProtocolError> {
    if s.is_empty() || s.len() > 5 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ProxyProtocolError::Malformed("v1 bad port"));
    }
    s.parse()
        .map_err(|_| ProxyProtocolError::Malformed("v1 port out of range"))
}

/// Parses a v2 (binary) header (§2.2): 12-byte signature, version/command,
/// family/transport, 16-bit big-endian payload length, then the addresses
/// and TLVs (skipped).
///
/// # Errors
/// [`ProxyProtocolError::Malformed`] for a wrong signature or version, an
/// unknown command, a datagram transport, a payload shorter than its
/// addresses, or one longer than [`V2_MAX_PAYLOAD`].
pub fn parse_v2(buf: &[u8]) -> Result<Option<(ProxyHeader, usize)>, ProxyProtocolError> {
    use ProxyProtocolError::Malformed;
    let sig_len = buf.len().min(V2_SIGNATURE.len());
    if buf[..sig_len] != V2_SIGNATURE[..sig_len] {
        return Err(Malformed("v2 signature mismatch"));
    }
    if buf.len() < 16 {
        return Ok(None);
    }
    let ver_cmd = buf[12];
    let fam = buf[13];
    let payload_len = usize::from(u16::from_be_bytes([buf[14], buf[15]]));
    if ver_cmd >> 4 != 0x2 {
        return Err(Malformed("v2 version is not 2"));
    }
    if payload_len > V2_MAX_PAYLOAD {
        return Err(Malformed("v2 payload longer than the accepted maximum"));
    }
    let len = 16 + payload_len;
    if buf.len() < len {
        return Ok(None);
    }
    let payload = &buf[16..len];
    match ver_cmd & 0x0f {
        // LOCAL: the proxy's own connection; addresses are to be ignored.
        0x0 => return Ok(Some((ProxyHeader::Local, len))),
        0x1 => {}
        _ => return Err(Malformed("v2 command is neither LOCAL nor PROXY")),
    }
    let transport = fam & 0x0f;
    match transport {
        // UNSPEC: §2.2 lets the receiver use the real endpoints.
        0x0 => return Ok(Some((ProxyHeader::Local, len))),
        0x1 => {}
        0x2 => return Err(Malformed("v2 datagram transport on a stream listener")),
        _ => return Err(Malformed("v2 unknown transport")),
    }
    let header = match fam >> 4 {
        // AF_UNSPEC and AF_UNIX: no IP address to report.
        0x0 | 0x3 => ProxyHeader::Local,
        0x1 => {
            let a = payload
                .get(..12)
                .ok_or(Malformed("v2 payload too short for IPv4 addresses"))?;
            let src = Ipv4Addr::new(a[0], a[1], a[2], a[3]);
            let dst = Ipv4Addr::new(a[4], a[5], a[6], a[7]);
            ProxyHeader::Proxied {
                source: SocketAddr::new(IpAddr::V4(src), u16::from_be_bytes([a[8], a[9]])),
                destination: SocketAddr::new(IpAddr::V4(dst), u16::from_be_bytes([a[10], a[11]])),
            }
        }
        0x2 => {
            let a = payload
                .get(..36)
                .ok_or(Malformed("v2 payload too short for IPv6 addresses"))?;
            let mut src = [0u8; 16];
            let mut dst = [0u8; 16];
            src.copy_from_slice(&a[..16]);
            dst.copy_from_slice(&a[16..32]);
            ProxyHeader::Proxied {
                source: SocketAddr::new(
                    IpAddr::V6(Ipv6Addr::from(src)),
                    u16::from_be_bytes([a[32], a[33]]),
                ),
                destination: SocketAddr::new(
                    IpAddr::V6(Ipv6Addr::from(dst)),
                    u16::from_be_bytes([a[34], a[35]]),
                ),
            }
        }
        _ => return Err(Malformed("v2 unknown address family")),
    };
    // TLVs after the addresses are skipped: nbgate uses none of them.
    Ok(Some((header, len)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;
    use tokio::net::TcpListener;

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn proxied(src: &str, dst: &str) -> ProxyHeader {
        ProxyHeader::Proxied {
            source: sa(src),
            destination: sa(dst),
        }
    }

    /// A v2 header: signature, ver_cmd, fam, payload.
    fn v2(ver_cmd: u8, fam: u8, payload: &[u8]) -> Vec<u8> {
        let mut out = V2_SIGNATURE.to_vec();
        out.push(ver_cmd);
        out.push(fam);
        out.extend_from_slice(&(payload.len() as u16).to_be_bytes());
        out.extend_from_slice(payload);
        out
    }

    fn v2_inet_payload() -> Vec<u8> {
        let mut p = vec![192, 0, 2, 1, 198, 51, 100, 2];
        p.extend_from_slice(&56324u16.to_be_bytes());
        p.extend_from_slice(&443u16.to_be_bytes());
        p
    }

    #[test]
    fn v1_parses_the_specification_examples() {
        let cases: &[(&[u8], ProxyHeader)] = &[
            (
                b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n",
                proxied("192.168.0.1:56324", "192.168.0.11:443"),
            ),
            (
                b"PROXY TCP4 255.255.255.255 255.255.255.255 65535 65535\r\n",
                proxied("255.255.255.255:65535", "255.255.255.255:65535"),
            ),
            (
                b"PROXY TCP6 2001:db8::1 2001:db8::2 4711 443\r\n",
                proxied("[2001:db8::1]:4711", "[2001:db8::2]:443"),
            ),
            (b"PROXY UNKNOWN\r\n", ProxyHeader::Local),
            (
                b"PROXY UNKNOWN ffff:f...f:ffff ffff:f...f:ffff 65535 65535\r\n",
                ProxyHeader::Local,
            ),
        ];
        for (input, want) in cases {
            let mut buf = input.to_vec();
            buf.extend_from_slice(b"\x16\x03\x01hello");
            assert_eq!(
                parse(&buf).unwrap(),
                Some((*want, input.len())),
                "{}",
                String::from_utf8_lossy(input)
            );
        }
    }

    #[test]
    fn v1_longest_header_of_107_bytes_is_accepted() {
        // §2.1's worst case.
        let mut line = b"PROXY UNKNOWN ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff \
ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n"
            .to_vec();
        assert_eq!(line.len(), V1_MAX_LEN);
        let len = line.len();
        line.extend_from_slice(b"tail");
        assert_eq!(parse_v1(&line).unwrap(), Some((ProxyHeader::Local, len)));
        // The longest TCP6 line is shorter.
        let tcp6 = b"PROXY TCP6 ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff \
ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n";
        assert!(matches!(
            parse_v1(tcp6),
            Ok(Some((ProxyHeader::Proxied { .. }, 104)))
        ));
    }

    #[test]
    fn v1_needs_more_bytes_for_every_proper_prefix() {
        let full = b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n";
        for cut in 0..full.len() {
            assert!(
                matches!(parse(&full[..cut]), Ok(None)),
                "prefix of {cut} bytes"
            );
        }
    }

    #[test]
    fn v1_rejects_malformed_headers() {
        let bad: &[&[u8]] = &[
            b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\n",
            b"PROXY TCP4 192.168.0.1 192.168.0.11 56324\r\n",
            b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443 extra\r\n",
            b"PROXY TCP4  192.168.0.1 192.168.0.11 56324 443\r\n",
            b"PROXY TCP4 2001:db8::1 192.168.0.11 56324 443\r\n",
            b"PROXY TCP6 192.168.0.1 2001:db8::2 56324 443\r\n",
            b"PROXY TCP4 192.168.0.1 192.168.0.11 65536 443\r\n",
            b"PROXY TCP4 192.168.0.1 192.168.0.11 +1 443\r\n",
            b"PROXY UDP4 192.168.0.1 192.168.0.11 56324 443\r\n",
            b"PROXY\r\n",
            b"PROXZ TCP4",
            b"GET / HTTP/1.1\r\n",
            b"\x16\x03\x01\x02\x00",
        ];
        for input in bad {
            assert!(
                matches!(parse(input), Err(ProxyProtocolError::Malformed(_))),
                "{}",
                String::from_utf8_lossy(input)
            );
        }
        // No CRLF within 107 bytes.
        let long = [b"PROXY UNKNOWN ".as_slice(), &[b'x'; 100]].concat();
        assert!(matches!(
            parse(&long),
            Err(ProxyProtocolError::Malformed(_))
        ));
    }

    #[test]
    fn v2_parses_ipv4_ipv6_local_unspec_and_unix() {
        let h = v2(0x21, 0x11, &v2_inet_payload());
        assert_eq!(
            parse(&h).unwrap(),
            Some((proxied("192.0.2.1:56324", "198.51.100.2:443"), 28))
        );

        let mut p = Vec::new();
        p.extend_from_slice(&"2001:db8::1".parse::<Ipv6Addr>().unwrap().octets());
        p.extend_from_slice(&"2001:db8::2".parse::<Ipv6Addr>().unwrap().octets());
        p.extend_from_slice(&4711u16.to_be_bytes());
        p.extend_from_slice(&443u16.to_be_bytes());
        let h = v2(0x21, 0x21, &p);
        assert_eq!(
            parse(&h).unwrap(),
            Some((proxied("[2001:db8::1]:4711", "[2001:db8::2]:443"), 16 + 36))
        );

        // LOCAL with addresses present: ignored.
        let h = v2(0x20, 0x11, &v2_inet_payload());
        assert_eq!(parse(&h).unwrap(), Some((ProxyHeader::Local, 28)));
        // LOCAL, AF_UNSPEC, empty payload (a health check).
        let h = v2(0x20, 0x00, &[]);
        assert_eq!(parse(&h).unwrap(), Some((ProxyHeader::Local, 16)));
        // PROXY over AF_UNIX.
        let h = v2(0x21, 0x31, &[0u8; 216]);
        assert_eq!(parse(&h).unwrap(), Some((ProxyHeader::Local, 16 + 216)));
        // PROXY with AF_UNSPEC.
        let h = v2(0x21, 0x00, &[]);
        assert_eq!(parse(&h).unwrap(), Some((ProxyHeader::Local, 16)));
    }

    #[test]
    fn v2_skips_tlvs_and_stops_at_the_header_end() {
        let mut p = v2_inet_payload();
        // PP2_TYPE_AUTHORITY "example.com", PP2_TYPE_NOOP.
        p.extend_from_slice(&[0x02, 0x00, 0x0b]);
        p.extend_from_slice(b"example.com");
        p.extend_from_slice(&[0x04, 0x00, 0x02, 0, 0]);
        let mut h = v2(0x21, 0x11, &p);
        let len = h.len();
        h.extend_from_slice(b"\x16\x03\x01");
        assert_eq!(
            parse(&h).unwrap(),
            Some((proxied("192.0.2.1:56324", "198.51.100.2:443"), len))
        );
    }

    #[test]
    fn v2_needs_more_bytes_for_every_proper_prefix() {
        let h = v2(0x21, 0x11, &v2_inet_payload());
        for cut in 0..h.len() {
            assert!(
                matches!(parse(&h[..cut]), Ok(None)),
                "prefix of {cut} bytes"
            );
        }
    }

    #[test]
    fn v2_rejects_malformed_headers() {
        let inet = v2_inet_payload();
        let bad = [
            v2(0x11, 0x11, &inet),       // version 1 in a v2 signature
            v2(0x22, 0x11, &inet),       // command 2
            v2(0x21, 0x12, &inet),       // datagram
            v2(0x21, 0x13, &inet),       // transport 3
            v2(0x21, 0x41, &inet),       // family 4
            v2(0x21, 0x11, &inet[..11]), // too short for IPv4
            v2(0x21, 0x21, &inet),       // too short for IPv6
            b"\r\n\r\n\0\r\nQUIX\n\x21\x11\x00\x0c".to_vec(),
        ];
        for h in bad {
            assert!(
                matches!(parse(&h), Err(ProxyProtocolError::Malformed(_))),
                "{h:02x?}"
            );
        }
    }

    #[test]
    fn v2_rejects_payload_above_the_cap_before_it_arrives() {
        let mut h = V2_SIGNATURE.to_vec();
        h.extend_from_slice(&[0x21, 0x11]);
        h.extend_from_slice(&u16::MAX.to_be_bytes());
        assert!(matches!(parse(&h), Err(ProxyProtocolError::Malformed(_))));
        let at_cap = v2(0x21, 0x11, &vec![0u8; V2_MAX_PAYLOAD]);
        assert!(matches!(parse(&at_cap), Ok(Some((_, l))) if l == 16 + V2_MAX_PAYLOAD));
    }

    /// A connected pair: (client side, server side).
    async fn pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (client, accepted) = tokio::join!(TcpStream::connect(addr), listener.accept());
        let client = client.unwrap();
        client.set_nodelay(true).unwrap();
        (client, accepted.unwrap().0)
    }

    async fn rest_of(mut server: TcpStream) -> Vec<u8> {
        let mut rest = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), server.read_to_end(&mut rest))
            .await
            .unwrap()
            .unwrap();
        rest
    }

    const LIMIT: Duration = Duration::from_secs(5);

    #[tokio::test]
    async fn read_header_leaves_stream_exactly_at_the_following_bytes_v1() {
        let (mut client, mut server) = pair().await;
        client
            .write_all(b"PROXY TCP4 192.0.2.1 198.51.100.2 56324 443\r\nhello")
            .await
            .unwrap();
        client.shutdown().await.unwrap();
        let header = read_header(&mut server, LIMIT).await.unwrap();
        assert_eq!(header, proxied("192.0.2.1:56324", "198.51.100.2:443"));
        assert_eq!(rest_of(server).await, b"hello");
    }

    #[tokio::test]
    async fn read_header_leaves_stream_exactly_at_the_following_bytes_v2() {
        let (mut client, mut server) = pair().await;
        let mut bytes = v2(0x21, 0x11, &v2_inet_payload());
        bytes.extend_from_slice(b"hello");
        client.write_all(&bytes).await.unwrap();
        client.shutdown().await.unwrap();
        let header = read_header(&mut server, LIMIT).await.unwrap();
        assert_eq!(header, proxied("192.0.2.1:56324", "198.51.100.2:443"));
        assert_eq!(rest_of(server).await, b"hello");
    }

    #[tokio::test]
    async fn read_header_handles_a_header_arriving_in_two_chunks() {
        for bytes in [
            b"PROXY TCP6 2001:db8::1 2001:db8::2 4711 443\r\n".to_vec(),
            {
                let mut p = v2_inet_payload();
                // A 768-byte PP2_TYPE_NOOP TLV: longer than one peek.
                p.extend_from_slice(&[0x04, 0x03, 0x00]);
                p.extend_from_slice(&[0u8; 0x300]);
                v2(0x21, 0x11, &p)
            },
        ] {
            let (mut client, mut server) = pair().await;
            let reader = tokio::spawn(async move {
                let header = read_header(&mut server, LIMIT).await;
                (header, server)
            });
            let (first, second) = bytes.split_at(7);
            client.write_all(first).await.unwrap();
            tokio::time::sleep(Duration::from_millis(50)).await;
            client.write_all(second).await.unwrap();
            client.write_all(b"hello").await.unwrap();
            client.shutdown().await.unwrap();
            let (header, server) = reader.await.unwrap();
            assert!(
                matches!(header, Ok(ProxyHeader::Proxied { .. })),
                "{header:?}"
            );
            assert_eq!(rest_of(server).await, b"hello");
        }
    }

    #[tokio::test]
    async fn read_header_handles_a_header_split_inside_the_crlf() {
        let (mut client, mut server) = pair().await;
        let reader = tokio::spawn(async move {
            let header = read_header(&mut server, LIMIT).await;
            (header, server)
        });
        client.write_all(b"PROXY UNKNOWN\r").await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        client.write_all(b"\nhello").await.unwrap();
        client.shutdown().await.unwrap();
        let (header, server) = reader.await.unwrap();
        assert_eq!(header.unwrap(), ProxyHeader::Local);
        assert_eq!(rest_of(server).await, b"hello");
    }

    #[tokio::test]
    async fn read_header_times_out_on_an_incomplete_header() {
        let (mut client, mut server) = pair().await;
        client.write_all(b"PROXY TCP4 192.0.2.1").await.unwrap();
        let result = read_header(&mut server, Duration::from_millis(200)).await;
        assert!(
            matches!(result, Err(ProxyProtocolError::Timeout)),
            "{result:?}"
        );
        drop(client);
    }

    #[tokio::test]
    async fn read_header_reports_eof_before_the_header_is_complete() {
        let (mut client, mut server) = pair().await;
        client.write_all(b"PROXY TCP4 192.0.2.1").await.unwrap();
        client.shutdown().await.unwrap();
        let result = read_header(&mut server, LIMIT).await;
        assert!(
            matches!(result, Err(ProxyProtocolError::UnexpectedEof)),
            "{result:?}"
        );
    }

    #[tokio::test]
    async fn read_header_rejects_a_tls_client_hello_without_consuming_it() {
        let (mut client, mut server) = pair().await;
        client
            .write_all(b"\x16\x03\x01\x00\x05hello")
            .await
            .unwrap();
        client.shutdown().await.unwrap();
        let result = read_header(&mut server, LIMIT).await;
        assert!(matches!(result, Err(ProxyProtocolError::Malformed(_))));
        assert_eq!(rest_of(server).await, b"\x16\x03\x01\x00\x05hello");
    }
}
