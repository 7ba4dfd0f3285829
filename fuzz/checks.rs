//! The properties the fuzz targets check, one function per target, shared by
//! `fuzz/fuzz_targets/*.rs` (libFuzzer, nightly) and `tests/fuzz_corpus.rs`
//! (replays the committed corpus and regressions on stable), so a crash the
//! fuzzer found stays fixed in the default test run.
//!
//! Each function takes the raw fuzz input and panics when a property fails.
//! They call nbgate's own parsers through its public API; what is written
//! here is only the oracle: a reference HTTP/1.1 response reader (httparse
//! for the heads, the framing rules of RFC 9112 §6.3 and the chunked grammar
//! of §7.1 written out independently), and the promises each module's docs
//! make. Nothing here re-implements a parser for nbgate to use.

use std::future::Future;
use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::unix::net::UnixStream as StdUnixStream;
use std::path::Path;
use std::pin::Pin;
use std::sync::OnceLock;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use base64::Engine;
use http::header::{HeaderMap, HeaderName, HeaderValue};
use nbgate::auth::next_path::{sanitize_next, MAX_NEXT_LEN};
use nbgate::auth::passkey::{self, LoginFinish, Passkeys, RegisterFinish, RegisterStart};
use nbgate::auth::password::StoredHash;
use nbgate::auth::session::{Claims, SessionKeys, SESSION_COOKIE};
use nbgate::config::Config;
use nbgate::pages::{negotiate_lang, Lang};
use nbgate::policy::cidr::{normalize, Cidr, IpSet};
use nbgate::policy::client_addr::{client_addr, ForwardedHeader};
use nbgate::policy::proxy_protocol::{self, ProxyHeader, V1_MAX_LEN, V2_MAX_PAYLOAD};
use nbgate::proxy::h1;
use nbgate::proxy::transport::UpstreamStream;
use nbgate::proxy::upstream::no_body;

// 1, 2. Upstream HTTP/1.1 responses (src/proxy/h1/)

/// Limits nbgate documents for a response (src/proxy/h1/), restated here
/// as part of the contract the reference reader enforces.
const MAX_HEADERS: usize = 100;
const MAX_HEAD_BYTES: usize = 8192 + 4096 * 100;
const MAX_CHUNK_LINE: usize = 4096;
const MAX_CHUNK_HEX_DIGITS: usize = 16;
const MAX_CHUNK_EXTENSIONS: usize = 16 * 1024;
const MAX_TRAILER_BYTES: usize = 16 * 1024;

/// What one exchange yields, compared field by field.
#[derive(Debug, PartialEq, Eq)]
pub struct Answer {
    status: u16,
    body: Vec<u8>,
    trailers: Vec<(String, Vec<u8>)>,
    keep_alive: bool,
}

/// A whole upstream response: nbgate's reader and the reference must agree
/// on accept or reject, and on status, body, trailers and reuse.
///
/// Input: one flag byte (bit 0: the request was `HEAD`; the other bits seed
/// where the bytes are cut into separate reads), then the response bytes.
pub fn h1_response(data: &[u8]) {
    let Some((&flags, response)) = data.split_first() else {
        return;
    };
    compare_exchange(response, flags & 1 == 1, flags >> 1);
}

/// A chunked body on its own: the input after the flag byte follows a fixed
/// `Transfer-Encoding: chunked` head, so every mutation lands in the body.
pub fn h1_chunked(data: &[u8]) {
    let Some((&flags, body)) = data.split_first() else {
        return;
    };
    let mut response = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    response.extend_from_slice(body);
    compare_exchange(&response, false, flags);
}

fn compare_exchange(response: &[u8], head_request: bool, split_seed: u8) {
    let pieces = split(response, split_seed);
    // A `HeaderMap` groups fields by name: trailers compare in name order,
    // each name's values in the order sent.
    let by_name = |mut a: Answer| {
        a.trailers.sort_by(|x, y| x.0.cmp(&y.0));
        a
    };
    let ours = nbgate_exchange(&pieces, head_request).map(by_name);
    let lenient = reference_exchange(response, head_request, Extensions::AsDocumented).map(by_name);
    let strict = reference_exchange(response, head_request, Extensions::Rfc9112).map(by_name);
    let shown: String = String::from_utf8_lossy(response)
        .chars()
        .take(400)
        .collect();
    match (&ours, &lenient) {
        (Ok(a), Ok(b)) => assert_eq!(a, b, "nbgate and the reference disagree on {shown:?}"),
        (Err(a), Err(b)) => {
            let _ = (a, b);
        }
        _ => panic!(
            "accept/reject differs on {shown:?} (split seed {split_seed}): \
             nbgate {}, reference {}",
            brief(&ours),
            brief(&lenient)
        ),
    }
    if let Ok(strict) = strict {
        assert_eq!(
            ours.as_ref().ok(),
            Some(&strict),
            "a response valid under RFC 9112 was not read as such: {shown:?}"
        );
    }
}

/// The start of a long `Debug` text.
fn brief(value: &dyn std::fmt::Debug) -> String {
    format!("{value:?}").chars().take(400).collect()
}

/// Cuts `bytes` into the reads the peer makes: one piece for seed 0,
/// otherwise pseudo-random sizes from 1 to 4 * seed bytes.
fn split(bytes: &[u8], seed: u8) -> Vec<&[u8]> {
    if bytes.is_empty() {
        // An empty write would wake no one.
        return Vec::new();
    }
    if seed == 0 {
        return vec![bytes];
    }
    let mut state = u32::from(seed).wrapping_mul(0x9E37_79B9) | 1;
    let mut pieces = Vec::new();
    let mut rest = bytes;
    while !rest.is_empty() {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        let n = 1 + (state as usize) % (4 * usize::from(seed));
        let (piece, tail) = rest.split_at(n.min(rest.len()));
        pieces.push(piece);
        rest = tail;
    }
    pieces
}

fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a current-thread runtime builds")
    })
}

/// The peer's side, as Jupyter behaves: reads the request head, then
/// writes the next piece each time nbgate waits for more, and ends the
/// stream after the last one.
struct Peer<'a> {
    /// Non-blocking: read and written only when nbgate waits.
    socket: StdUnixStream,
    request: Vec<u8>,
    /// The write side was shut down: end of stream for nbgate.
    closed: bool,
    pieces: std::slice::Iter<'a, &'a [u8]>,
}

impl Peer<'_> {
    fn feed(&mut self) {
        if !self.request.windows(4).any(|w| w == b"\r\n\r\n") {
            let mut buf = [0u8; 1024];
            while let Ok(n @ 1..) = std::io::Read::read(&mut self.socket, &mut buf) {
                self.request.extend_from_slice(&buf[..n]);
            }
            if !self.request.windows(4).any(|w| w == b"\r\n\r\n") {
                // nbgate is still writing it, and will be woken for that.
                return;
            }
        }
        match self.pieces.next() {
            Some(piece) => self
                .socket
                .write_all(piece)
                .expect("the socket buffer holds a piece"),
            None if !self.closed => {
                self.socket
                    .shutdown(std::net::Shutdown::Write)
                    .expect("shutdown");
                self.closed = true;
            }
            None => {}
        }
    }
}

/// Polls `fut`, feeding the peer's next piece each time it waits.
struct Fed<'p, 'a, F> {
    peer: &'p mut Peer<'a>,
    fut: F,
}

impl<F: Future + Unpin> Future for Fed<'_, '_, F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.fut).poll(cx);
        if polled.is_pending() {
            this.peer.feed();
        }
        polled
    }
}

/// Runs nbgate's real exchange (`h1::exchange`, then the body reader) over
/// a Unix socket whose peer sends `pieces` as separate writes, under a
/// time limit.
fn nbgate_exchange(pieces: &[&[u8]], head_request: bool) -> Result<Answer, String> {
    let (ours, theirs) = StdUnixStream::pair().expect("socket pair");
    ours.set_nonblocking(true).expect("non-blocking");
    theirs.set_nonblocking(true).expect("non-blocking");
    let mut peer = Peer {
        socket: theirs,
        request: Vec::new(),
        closed: false,
        pieces: pieces.iter(),
    };
    runtime().block_on(async {
        // A reader that waits after the end of the stream would hang a
        // real connection.
        let exchange = exchange(ours, &mut peer, head_request);
        tokio::time::timeout(Duration::from_secs(10), exchange)
            .await
            .expect("the exchange ends once the stream has")
    })
}

/// One exchange on `ours`, the peer fed whenever nbgate waits.
async fn exchange(
    ours: StdUnixStream,
    peer: &mut Peer<'_>,
    head_request: bool,
) -> Result<Answer, String> {
    let ours = tokio::net::UnixStream::from_std(ours).expect("register with the reactor");
    let mut conn = h1::Conn::new(UpstreamStream::Unix(ours));
    let mut req = http::Request::new(no_body());
    if head_request {
        *req.method_mut() = http::Method::HEAD;
    }
    let head = Fed {
        peer: &mut *peer,
        fut: Box::pin(h1::exchange(
            &mut conn,
            req,
            std::time::Duration::from_secs(60),
        )),
    }
    .await
    .map_err(|e| e.to_string())?;
    let (response, mut reader, keep_alive, upload) = head.into_parts();
    assert!(upload.is_none(), "a request without a body has none left");
    let headers = response.headers();
    assert!(
        !(headers.contains_key(http::header::TRANSFER_ENCODING)
            && headers.contains_key(http::header::CONTENT_LENGTH)),
        "a length beside Transfer-Encoding is passed on"
    );
    let mut answer = Answer {
        status: response.status().as_u16(),
        body: Vec::new(),
        trailers: Vec::new(),
        keep_alive,
    };
    loop {
        let frame = Fed {
            peer: &mut *peer,
            fut: std::future::poll_fn(|cx| reader.poll_frame(&mut conn, cx)),
        }
        .await;
        match frame {
            None => break,
            Some(Err(e)) => return Err(e.to_string()),
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) => {
                    assert!(!data.is_empty(), "an empty data frame");
                    answer.body.extend_from_slice(&data);
                }
                Err(frame) => {
                    let trailers = frame.into_trailers().expect("data or trailers");
                    assert!(!trailers.is_empty(), "an empty trailers frame");
                    for (name, value) in &trailers {
                        answer
                            .trailers
                            .push((name.as_str().to_owned(), value.as_bytes().to_vec()));
                    }
                }
            },
        }
    }
    assert!(
        reader.is_end_stream(),
        "a body ended before its framing did"
    );
    Ok(answer)
}

/// How chunk extensions are read by the reference.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Extensions {
    /// As src/proxy/h1/body.rs documents: after the size, a CR, `;`, SP or HTAB,
    /// then anything but control bytes (HTAB allowed) up to CRLF.
    AsDocumented,
    /// The RFC 9112 §7.1.1 grammar: `*( BWS ";" BWS name [ BWS "=" BWS
    /// ( token / quoted-string ) ] )`.
    Rfc9112,
}

/// The reference reader. Heads are httparse's (as in nbgate, so they agree
/// by construction on the tokenising); everything after is written here
/// from RFC 9112.
fn reference_exchange(
    mut bytes: &[u8],
    head_request: bool,
    extensions: Extensions,
) -> Result<Answer, &'static str> {
    loop {
        let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut res = httparse::Response::new(&mut fields);
        let len = match res.parse(bytes) {
            Ok(httparse::Status::Complete(len)) if len <= MAX_HEAD_BYTES => len,
            Ok(_) => return Err("incomplete or too large head"),
            Err(_) => return Err("malformed head"),
        };
        let code = res.code.unwrap_or(0);
        if code < 100 {
            return Err("status below 100");
        }
        if code < 200 {
            // Interim responses are skipped (RFC 9110 §15.2); 101 was not asked for.
            if code == 101 {
                return Err("unrequested 101");
            }
            bytes = &bytes[len..];
            continue;
        }
        for f in res.headers.iter() {
            HeaderName::from_bytes(f.name.as_bytes()).map_err(|_| "bad field name")?;
            HeaderValue::from_bytes(f.value).map_err(|_| "bad field value")?;
        }
        let http11 = res.version == Some(1);
        let values = |name: &str| {
            res.headers
                .iter()
                .filter(|f| f.name.eq_ignore_ascii_case(name))
                .map(|f| f.value)
                .collect::<Vec<_>>()
        };
        // RFC 9110 §5.6.1: a list across all field lines, OWS around
        // elements, empty elements ignored.
        let list = |name: &str| {
            values(name)
                .into_iter()
                .flat_map(|v| v.split(|&b| b == b','))
                .map(trim_ows)
                .filter(|e| !e.is_empty())
                .collect::<Vec<_>>()
        };
        let close = list("connection")
            .iter()
            .any(|t| t.eq_ignore_ascii_case(b"close"));
        let mut answer = Answer {
            status: code,
            body: Vec::new(),
            trailers: Vec::new(),
            keep_alive: http11 && !close,
        };
        let rest = &bytes[len..];
        // RFC 9112 §6.3, in its order.
        if head_request || code == 204 || code == 304 {
            return Ok(answer);
        }
        let transfer_encoding = values("transfer-encoding");
        if !transfer_encoding.is_empty() {
            if !http11 {
                return Err("Transfer-Encoding in HTTP/1.0");
            }
            let codings = list("transfer-encoding");
            if codings
                .last()
                .is_some_and(|c| c.eq_ignore_ascii_case(b"chunked"))
            {
                // A length beside it: smuggling attempt, no reuse (§6.3 point 3).
                answer.keep_alive &= values("content-length").is_empty();
                let (body, trailers) = reference_chunked(rest, extensions)?;
                answer.body = body;
                answer.trailers = trailers;
            } else {
                answer.keep_alive = false;
                answer.body = rest.to_vec();
            }
            return Ok(answer);
        }
        let mut length: Option<u64> = None;
        for v in values("content-length") {
            for part in v.split(|&b| b == b',').map(trim_ows) {
                if part.is_empty() || part.len() > 19 || !part.iter().all(u8::is_ascii_digit) {
                    return Err("invalid Content-Length");
                }
                let n = std::str::from_utf8(part)
                    .ok()
                    .and_then(|s| s.parse::<u64>().ok())
                    .ok_or("invalid Content-Length")?;
                if length.is_some_and(|l| l != n) {
                    return Err("conflicting Content-Length");
                }
                length = Some(n);
            }
        }
        match length {
            Some(n) => {
                let n = usize::try_from(n).map_err(|_| "length beyond memory")?;
                answer.body = rest
                    .get(..n)
                    .ok_or("body shorter than its length")?
                    .to_vec();
            }
            None => {
                answer.keep_alive = false;
                answer.body = rest.to_vec();
            }
        }
        return Ok(answer);
    }
}

fn trim_ows(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

type Trailers = Vec<(String, Vec<u8>)>;

/// RFC 9112 §7.1: `*chunk last-chunk trailer-section CRLF`, with nbgate's
/// documented limits. Running out of bytes anywhere is an error.
fn reference_chunked(
    body: &[u8],
    extensions: Extensions,
) -> Result<(Vec<u8>, Trailers), &'static str> {
    let mut out = Vec::new();
    let mut at = 0;
    let mut extension_bytes = 0;
    loop {
        let line = &body[at..];
        let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
        if digits == 0 || digits > MAX_CHUNK_HEX_DIGITS {
            return Err("chunk size");
        }
        let mut size: u64 = 0;
        for &d in &line[..digits] {
            let v = (d as char).to_digit(16).ok_or("hex digit")?;
            size = size * 16 + u64::from(v);
        }
        let ext_len = match extensions {
            Extensions::AsDocumented => documented_extension_len(&line[digits..])?,
            Extensions::Rfc9112 => rfc_extension_len(&line[digits..])?,
        };
        if line.get(digits + ext_len..digits + ext_len + 2) != Some(b"\r\n") {
            return Err("chunk line end");
        }
        let line_len = digits + ext_len + 2;
        if line_len > MAX_CHUNK_LINE {
            return Err("chunk line too long");
        }
        extension_bytes += ext_len;
        if extension_bytes > MAX_CHUNK_EXTENSIONS {
            return Err("too many extension bytes");
        }
        at += line_len;
        if size == 0 {
            break;
        }
        let size = usize::try_from(size).map_err(|_| "chunk beyond memory")?;
        let data = body
            .get(at..at.checked_add(size).ok_or("overflow")?)
            .ok_or("chunk cut short")?;
        out.extend_from_slice(data);
        at += size;
        if body.get(at..at + 2) != Some(b"\r\n") {
            return Err("chunk data not followed by CRLF");
        }
        at += 2;
    }
    let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
    match httparse::parse_headers(&body[at..], &mut fields) {
        Ok(httparse::Status::Complete((used, fields))) if used <= MAX_TRAILER_BYTES => {
            let trailers = fields
                .iter()
                .filter(|f| {
                    HeaderName::from_bytes(f.name.as_bytes()).is_ok()
                        && HeaderValue::from_bytes(f.value).is_ok()
                })
                .map(|f| (f.name.to_ascii_lowercase(), f.value.to_vec()))
                .collect();
            Ok((out, trailers))
        }
        _ => Err("trailer section"),
    }
}

/// Bytes between the size and CR, as nbgate documents them; an error for
/// a bare LF or another control byte, or when no CR comes.
fn documented_extension_len(after: &[u8]) -> Result<usize, &'static str> {
    match after.first() {
        Some(b'\r' | b';' | b' ' | b'\t') => {}
        _ => return Err("after chunk size"),
    }
    for (i, &b) in after.iter().enumerate() {
        if b == b'\r' {
            return Ok(i);
        }
        if b != b'\t' && (b < 0x20 || b == 0x7f) {
            return Err("control byte in chunk line");
        }
    }
    Err("no CR")
}

/// Bytes of a strict RFC 9112 chunk-ext up to the CR.
fn rfc_extension_len(after: &[u8]) -> Result<usize, &'static str> {
    let ws = |i: usize| {
        after[i..]
            .iter()
            .take_while(|&&b| b == b' ' || b == b'\t')
            .count()
    };
    let token = |i: usize| after[i..].iter().take_while(|&&b| is_tchar(b)).count();
    let mut i = 0;
    loop {
        if after.get(i) == Some(&b'\r') {
            return Ok(i);
        }
        let j = i + ws(i);
        if after.get(j) != Some(&b';') {
            return Err("chunk-ext");
        }
        let j = j + 1;
        let j = j + ws(j);
        let name = token(j);
        if name == 0 {
            return Err("chunk-ext name");
        }
        i = j + name;
        let k = i + ws(i);
        if after.get(k) == Some(&b'=') {
            let k = k + 1;
            let k = k + ws(k);
            if after.get(k) == Some(&b'"') {
                let mut q = k + 1;
                loop {
                    match after.get(q) {
                        Some(b'"') => break,
                        Some(b'\\') => match after.get(q + 1) {
                            Some(&c) if c == b'\t' || c >= 0x20 && c != 0x7f => q += 2,
                            _ => return Err("quoted-pair"),
                        },
                        Some(&c) if c == b'\t' || c >= 0x20 && c != 0x7f => q += 1,
                        _ => return Err("qdtext"),
                    }
                }
                i = q + 1;
            } else {
                let v = token(k);
                if v == 0 {
                    return Err("chunk-ext value");
                }
                i = k + v;
            }
        }
    }
}

/// RFC 9110 §5.6.2 tchar.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

// 3. Session cookies (src/auth/session.rs)

fn session_keys() -> &'static SessionKeys {
    static KEYS: OnceLock<SessionKeys> = OnceLock::new();
    KEYS.get_or_init(SessionKeys::ephemeral)
}

/// Anything not sealed with our key is refused, however it arrives; a
/// sealed cookie opens to exactly its claims; any change to one is refused.
pub fn session_cookie(data: &[u8]) {
    let keys = session_keys();
    let text = String::from_utf8_lossy(data);
    assert!(keys.open(&text).is_none(), "forged cookie accepted");
    if let Ok(v) = HeaderValue::from_bytes(data) {
        let mut headers = HeaderMap::new();
        headers.append(http::header::COOKIE, v);
        if let Some(value) = nbgate::proxy::own_pages::cookie(&headers, SESSION_COOKIE) {
            assert!(keys.open(value).is_none(), "forged cookie header accepted");
        }
    }

    let number = |i: usize| {
        let mut b = [0u8; 8];
        for (j, slot) in b.iter_mut().enumerate() {
            *slot = data.get(i * 8 + j).copied().unwrap_or(0);
        }
        u64::from_le_bytes(b)
    };
    let claims = Claims {
        u: text.chars().take(32).collect(),
        sid: text.chars().rev().take(16).collect(),
        iat: number(0),
        lst: number(1),
        gen: number(2),
        pw: text.chars().skip(8).take(16).collect(),
    };
    let set_cookie = keys.seal(&claims, Duration::from_secs(u64::from(data.len() as u32)));
    let value = set_cookie
        .strip_prefix(SESSION_COOKIE)
        .and_then(|rest| rest.strip_prefix('='))
        .and_then(|rest| rest.split(';').next())
        .expect("Set-Cookie starts with name=value");
    assert_eq!(keys.open(value), Some(claims.clone()), "round trip");

    let at = data.iter().map(|&b| usize::from(b)).sum::<usize>() % value.len();
    assert!(
        keys.open(&value[..at]).is_none(),
        "truncated cookie accepted"
    );
    let mut extended = value.to_owned();
    extended.push_str(&text);
    if extended != value {
        assert!(keys.open(&extended).is_none(), "extended cookie accepted");
    }
    const B64: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut tampered = value.as_bytes().to_vec();
    let old = tampered[at];
    tampered[at] = B64[(B64.iter().position(|&c| c == old).unwrap_or(0) + 1 + at) % 64];
    let tampered = String::from_utf8(tampered).expect("base64 is ASCII");
    let engine = base64::engine::general_purpose::STANDARD;
    let same_bytes = matches!(
        (engine.decode(value), engine.decode(&tampered)),
        (Ok(a), Ok(b)) if a == b
    );
    if !same_bytes {
        assert!(keys.open(&tampered).is_none(), "tampered cookie accepted");
    }
}

// 4. The login `next` sanitizer (src/auth/next_path.rs)

/// Base URLs a deployment may configure (trusted; the first byte picks one).
const BASES: [&str; 4] = ["/", "/jupyter/", "/a/b/", "/user/x.y/"];

/// Whatever `next` is, the result is the base or a same-origin path under
/// it that keeps that shape through repeated percent-decoding, and is a
/// valid `Location` value.
pub fn next_path(data: &[u8]) {
    let Some((&pick, raw)) = data.split_first() else {
        return;
    };
    let base = BASES[usize::from(pick) % BASES.len()];
    let raw = String::from_utf8_lossy(raw);
    let out = sanitize_next(Some(&raw), base);
    assert_eq!(sanitize_next(None, base), base);
    if out == base {
        return;
    }
    let shown = format!("{raw:?} -> {out:?} (base {base})");
    assert!(out.len() <= 3 * MAX_NEXT_LEN, "{shown}");
    assert!(
        HeaderValue::from_str(&out).is_ok(),
        "not a header value: {shown}"
    );
    assert!(
        out.bytes()
            .all(|b| b.is_ascii_graphic() && !b"\\\"<>`{}".contains(&b)),
        "unencoded byte: {shown}"
    );
    let path = out.split(['?', '#']).next().unwrap_or_default();
    let base_dir = base.trim_end_matches('/');
    assert!(
        path == base_dir || path.starts_with(&format!("{base_dir}/")),
        "escapes the base: {shown}"
    );
    let mut layer = path.as_bytes().to_vec();
    for _ in 0..8 {
        assert!(same_origin_path_shape(&layer), "{shown}: layer {layer:?}");
        let decoded = percent_decode(&layer);
        if decoded == layer {
            break;
        }
        layer = decoded;
    }
}

/// One leading `/` and no second one or `\` after it (no scheme, no
/// authority), no backslash, no control character, no dot segment.
fn same_origin_path_shape(path: &[u8]) -> bool {
    let start = matches!(path, [b'/'] | [b'/', _, ..]) && !matches!(path, [b'/', b'/' | b'\\', ..]);
    start
        && !path.contains(&b'\\')
        && !String::from_utf8_lossy(path).chars().any(char::is_control)
        && !path.split(|&b| b == b'/').any(|s| s == b"." || s == b"..")
}

/// Percent-decoding as any later component may apply it.
fn percent_decode(input: &[u8]) -> Vec<u8> {
    let hex = |b: u8| (b as char).to_digit(16);
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while i < input.len() {
        if input[i] == b'%' {
            if let (Some(h), Some(l)) = (
                input.get(i + 1).and_then(|&b| hex(b)),
                input.get(i + 2).and_then(|&b| hex(b)),
            ) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(input[i]);
        i += 1;
    }
    out
}

// 5. Forwarded / X-Forwarded-For (src/policy/client_addr.rs)

fn trusted_proxies() -> &'static IpSet {
    static SET: OnceLock<IpSet> = OnceLock::new();
    SET.get_or_init(|| {
        let cidrs: Vec<Cidr> = ["10.0.0.0/8", "127.0.0.0/8", "::1/128", "fd00::/8"]
            .iter()
            .map(|c| c.parse().expect("valid CIDR"))
            .collect();
        IpSet::new(&cidrs)
    })
}

const PEERS: [IpAddr; 6] = [
    IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)),
    IpAddr::V4(Ipv4Addr::new(203, 0, 113, 5)),
    IpAddr::V6(Ipv6Addr::new(0, 0, 0, 0, 0, 0xffff, 0x0a00, 0x0002)),
    IpAddr::V6(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 1)),
    IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1)),
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1)),
];

/// Input: a flag byte (bit 0: `Forwarded` rather than `X-Forwarded-For`;
/// the rest picks the peer), then header lines separated by `\n`.
///
/// Properties: an untrusted peer is the client whatever it sends; the
/// result is normalised; the header nbgate was not told to read changes
/// nothing; and once an untrusted hop is found, what is left of it (a
/// client's own entries) and trusted hops right of it change nothing.
pub fn forwarded(data: &[u8]) {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let (which, name, other) = if flags & 1 == 1 {
        (ForwardedHeader::Forwarded, "forwarded", "x-forwarded-for")
    } else {
        (
            ForwardedHeader::XForwardedFor,
            "x-forwarded-for",
            "forwarded",
        )
    };
    let peer = PEERS[usize::from(flags >> 1) % PEERS.len()];
    let trusted = trusted_proxies();
    let lines: Vec<HeaderValue> = rest
        .split(|&b| b == b'\n')
        .filter_map(|l| HeaderValue::from_bytes(l).ok())
        .collect();
    let with = |lines: &[HeaderValue], extra: &[(&str, HeaderValue)]| {
        let mut headers = HeaderMap::new();
        for l in lines {
            headers.append(HeaderName::from_static(name), l.clone());
        }
        for (n, v) in extra {
            headers.append(
                HeaderName::from_bytes(n.as_bytes()).expect("name"),
                v.clone(),
            );
        }
        client_addr(peer, &headers, trusted, which)
    };
    let result = with(&lines, &[]);
    if !trusted.contains(normalize(peer)) {
        assert_eq!(
            result,
            Some(normalize(peer)),
            "untrusted peer's header was read"
        );
    }
    if let Some(ip) = result {
        assert_eq!(ip, normalize(ip), "result not normalised");
    }
    let foreign: Vec<(&str, HeaderValue)> = lines.iter().map(|l| (other, l.clone())).collect();
    assert_eq!(with(&lines, &foreign), result, "the other header was read");

    let Some(client) = result.filter(|ip| !trusted.contains(*ip)) else {
        return;
    };
    if let Some(first) = lines.first() {
        let hidden_left: &[u8] = if which == ForwardedHeader::Forwarded {
            b"for=unknown, "
        } else {
            b"unknown, "
        };
        let mut value = hidden_left.to_vec();
        value.extend_from_slice(first.as_bytes());
        let mut changed = lines.clone();
        changed[0] = HeaderValue::from_bytes(&value).expect("still a header value");
        assert_eq!(
            with(&changed, &[]),
            Some(client),
            "an entry left of the client counted"
        );
    }
    let trusted_hop = HeaderValue::from_static(if which == ForwardedHeader::Forwarded {
        "for=10.9.9.9"
    } else {
        "10.9.9.9"
    });
    let mut more = lines.clone();
    more.push(trusted_hop);
    assert_eq!(
        with(&more, &[]),
        Some(client),
        "a trusted hop was not skipped"
    );
}

// 6. PROXY protocol v1/v2 (src/policy/proxy_protocol.rs)

/// `parse` is consistent on every prefix of its input, as `read_header`
/// relies on (it consumes the incomplete prefix, then exactly the rest of
/// the header): a header is `Ok(None)` on each of its proper prefixes and
/// found again, alone, on itself; an error stays an error as bytes arrive;
/// lengths stay within the documented bounds.
pub fn proxy_protocol(data: &[u8]) {
    let full = proxy_protocol::parse(data);
    let mut cuts: Vec<usize> = (0..=data.len().min(64)).collect();
    let mut state = data.len() as u32 | 1;
    for _ in 0..16 {
        state = state.wrapping_mul(1_103_515_245).wrapping_add(12_345);
        cuts.push(state as usize % (data.len() + 1));
    }
    match &full {
        Ok(Some((header, len))) => {
            let len = *len;
            assert!(
                len > 0 && len <= data.len(),
                "length {len} of {}",
                data.len()
            );
            assert!(
                len <= V1_MAX_LEN.max(16 + V2_MAX_PAYLOAD),
                "header too long"
            );
            if data[0] == b'P' {
                assert!(len <= V1_MAX_LEN, "v1 header over 107 bytes");
            }
            assert!(
                matches!(proxy_protocol::parse(&data[..len]), Ok(Some((h, l))) if h == *header && l == len),
                "the header alone parses differently"
            );
            cuts.push(len - 1);
            for k in cuts.into_iter().filter(|&k| k < len) {
                assert!(
                    matches!(proxy_protocol::parse(&data[..k]), Ok(None)),
                    "prefix {k} of a {len}-byte header is not incomplete"
                );
            }
            if let ProxyHeader::Proxied {
                source,
                destination,
            } = header
            {
                assert_eq!(source.is_ipv4(), destination.is_ipv4(), "mixed families");
            }
        }
        Ok(None) => {
            for k in cuts {
                assert!(
                    matches!(proxy_protocol::parse(&data[..k]), Ok(None)),
                    "prefix {k} of an incomplete header is not incomplete"
                );
            }
        }
        Err(_) => {
            for k in cuts {
                assert!(
                    !matches!(proxy_protocol::parse(&data[..k]), Ok(Some(_))),
                    "prefix {k} of an invalid header is a header"
                );
            }
        }
    }
}

// 7. The configuration loader (src/config.rs)

/// Any text gives a `Config` or a `ConfigError`, never a panic; a valid
/// one renders for `check-config`.
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // `upstream.token_file` makes the loader read the file it names: not
    // parsing, and a device or FIFO there would hang the fuzzer.
    if let Ok(table) = text.parse::<toml::Table>() {
        if table
            .get("upstream")
            .and_then(|u| u.get("token_file"))
            .is_some()
        {
            return;
        }
        // oidc: `client_secret_file` and `ca_bundle` are read the same way.
        let reads_a_file =
            |p: &toml::Value| p.get("client_secret_file").is_some() || p.get("ca_bundle").is_some();
        if table
            .get("auth")
            .and_then(|a| a.get("oidc"))
            .and_then(toml::Value::as_array)
            .is_some_and(|ps| ps.iter().any(reads_a_file))
        {
            return;
        }
    }
    match Config::from_text(text, Path::new("fuzz.toml")) {
        Ok(config) => {
            let rendered = config.to_toml();
            assert!(!rendered.starts_with("# cannot render"), "{rendered}");
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
}

// 8. Stored password hashes (src/auth/password.rs), parsing only

/// Any string parses or is refused with an error that does not echo it;
/// a parsed hash's `Debug` withholds its salt and digest.
pub fn stored_hash(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let trimmed = text.trim();
    match text.parse::<StoredHash>() {
        Ok(hash) => {
            let shown = format!("{hash:?}");
            let secret = trimmed.rsplit(['$', ':']).next().unwrap_or_default();
            if secret.len() >= 8 {
                assert!(!shown.contains(secret), "Debug shows the digest: {shown}");
            }
            let _ = hash.is_legacy();
        }
        Err(e) => {
            let message = e.to_string();
            if trimmed.len() >= 20 && !trimmed.contains(' ') {
                assert!(
                    !message.contains(trimmed),
                    "error echoes the input: {message}"
                );
            }
        }
    }
}

// 9. Accept-Language (src/pages.rs)

/// Negotiation never fails; a first range with full quality wins; only the
/// first 32 ranges are read.
pub fn accept_language(data: &[u8]) {
    let header = String::from_utf8_lossy(data);
    let _ = negotiate_lang(Some(&header));
    assert_eq!(negotiate_lang(Some(&format!("zh,{header}"))), Lang::ZhHans);
    assert_eq!(negotiate_lang(Some(&format!("en,{header}"))), Lang::En);
    assert_eq!(
        negotiate_lang(Some(&format!("{}{header}", "de,".repeat(32)))),
        Lang::En,
        "a range past the 32nd counted"
    );
    assert_eq!(negotiate_lang(None), Lang::En);
}

// Audit parsers (src/audit/): what a logged-in client sends.

/// Where to cut `data` into pieces, from a seed byte: the same input fed in
/// one piece and in many must give the same result.
fn pieces(data: &[u8], seed: u8) -> Vec<&[u8]> {
    let step = usize::from(seed % 13) + 1;
    data.chunks(step).collect()
}

/// WebSocket frames a client sends on a kernel or terminal socket: the
/// frame reader yields the same messages however the bytes are cut, never
/// keeps more than `MAX_MESSAGE` of one, and the message parsers
/// (`execute_request` in both protocols, terminal stdin) never panic.
///
/// Input: one seed byte (how to cut), then the bytes.
pub fn kernel_frames(data: &[u8]) {
    use nbgate::audit::kernel_frames::{
        execute_request, terminal_stdin, Frames, Message, Protocol, MAX_MESSAGE,
    };
    let Some((&seed, bytes)) = data.split_first() else {
        return;
    };
    let run = |cuts: Vec<&[u8]>| {
        let mut frames = Frames::default();
        let mut seen = Vec::new();
        for piece in cuts {
            frames.feed(piece, &mut |m| {
                let summary = match &m {
                    Message::Text(b) | Message::Binary(b) => {
                        assert!(b.len() <= MAX_MESSAGE);
                        format!("{:?}", b)
                    }
                    other => format!("{other:?}"),
                };
                let x = (
                    execute_request(&m, Protocol::Legacy),
                    execute_request(&m, Protocol::V1),
                    terminal_stdin(&m),
                );
                seen.push((summary, format!("{x:?}")));
            });
        }
        seen
    };
    let whole = run(vec![bytes]);
    let cut = run(pieces(bytes, seed));
    assert_eq!(
        whole, cut,
        "the frame reader depends on how the bytes were cut"
    );
}

/// An HTTP request to Jupyter as the audit classifies it: any method byte,
/// path and JSON body; the body scanner finds the same fields however the
/// body is cut, and building the event never panics.
///
/// Input: method byte, seed byte, then `path\nquery\nbody`.
pub fn audit_classify(data: &[u8]) {
    use nbgate::audit::classify::{classify, event, websocket, Outcome};
    use nbgate::audit::json_scan::Scanner;
    use nbgate::audit::Actor;
    let [m, seed, rest @ ..] = data else {
        return;
    };
    let methods = ["GET", "PUT", "POST", "PATCH", "DELETE", "HEAD"];
    let method: http::Method = methods[usize::from(*m) % methods.len()]
        .parse()
        .expect("a method");
    let mut parts = rest.splitn(3, |&b| b == b'\n');
    let path = String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned();
    let query = parts
        .next()
        .map(|q| String::from_utf8_lossy(q).into_owned());
    let body = parts.next().unwrap_or_default();
    let _ = websocket(&path);
    let scan = |cuts: Vec<&[u8]>| {
        let mut s = Scanner::default();
        for c in cuts {
            s.feed(c);
        }
        s
    };
    let whole = scan(vec![body]);
    let cut = scan(pieces(body, *seed));
    assert_eq!(
        whole.fields(),
        cut.fields(),
        "the scanner depends on how the body was cut"
    );
    assert_eq!(whole.complete(), cut.complete());
    assert!(whole.fields().len() <= 32);
    if let Some(op) = classify(&method, &path, query.as_deref()) {
        let actor = Actor {
            user: "fuzz".into(),
            auth: "token",
            auth_id: "0".into(),
            client: IpAddr::V4(Ipv4Addr::LOCALHOST),
        };
        let out = Outcome {
            status: 200 + u16::from(*seed % 2),
            location: query.as_deref(),
            request: Some(&whole),
            response: Some(&whole),
        };
        let _ = event(&op, &actor, &out);
    }
}

/// `User-Agent` summaries for the sessions page (`auth::user_agent`): any
/// header, however long or hostile, gives a summary made only of the fixed
/// names and a number, and nothing after the scanned prefix changes it.
pub fn user_agent(data: &[u8]) {
    use nbgate::auth::user_agent::summarize;

    let ua = String::from_utf8_lossy(data);
    let s = summarize(Some(&ua));
    if let Some(label) = s.browser_label() {
        assert!(
            label
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == ' ' || c == '-'),
            "label {label:?} holds more than fixed names and digits"
        );
        assert!(label.len() <= 40, "label {label:?} too long");
    }
    assert!(s.major.is_none_or(|v| v < 1_000_000), "{s:?}");
    // What lies past the scanned prefix is not looked at.
    let padded = format!("{}{ua}", "x".repeat(600));
    let far = summarize(Some(&padded));
    assert_eq!(far.browser, None, "{padded:?}");
    assert_eq!(far.os, None, "{padded:?}");
}

// passkeys (issue 22 §2): the JSON the passkey script sends (src/auth/passkey.rs)

/// One relying party (`localhost`) with its state directory under the
/// temporary directory, made once per process.
fn fuzz_passkeys() -> &'static Passkeys {
    static PASSKEYS: OnceLock<Passkeys> = OnceLock::new();
    PASSKEYS.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("nbgate-fuzz-passkeys-{}", std::process::id()));
        let text = format!(
            "[server]\nstate_dir = {:?}\n[auth.passkeys]\nrp_id = \"localhost\"\n",
            dir.display().to_string()
        );
        let config = Config::from_text(&text, Path::new("fuzz.toml")).expect("fuzz config");
        Passkeys::new(&config)
    })
}

/// A body of `POST passkey/...`: parsed into its type or refused, never a
/// panic; a parsed answer, put into a real pending ceremony, runs through
/// webauthn-rs's client-data, CBOR and signature checks and is refused
/// (nobody can forge an answer to a fresh random challenge), as a client's
/// fault, never as nbgate's.
pub fn passkey_json(data: &[u8]) {
    let pk = fuzz_passkeys();
    let _ = passkey::parse::<RegisterStart>(data);
    if let Ok(mut answer) = passkey::parse::<RegisterFinish>(data) {
        let (id, _) = pk
            .start_registration("fuzz", "sid", "key", Instant::now())
            .expect("registration starts");
        answer.ceremony = id;
        let r = pk.finish_registration(&answer, "fuzz", "sid", Instant::now(), 0);
        assert!(matches!(&r, Err(e) if !e.is_ours()), "{r:?}");
    }
    if let Ok(mut answer) = passkey::parse::<LoginFinish>(data) {
        let (id, _) = pk
            .start_login("binding", Instant::now())
            .expect("login starts");
        answer.ceremony = id;
        match pk.identify_login(&answer, "binding", Instant::now(), |_| true) {
            Ok(candidate) => {
                let r = pk.finish_login(candidate, &answer.credential, 0);
                assert!(matches!(&r, Err(e) if !e.is_ours()), "{r:?}");
            }
            Err(e) => assert!(!e.is_ours(), "{e}"),
        }
    }
}

// totp: the second step's pending cookie and typed codes (src/auth/pending.rs, src/auth/totp.rs)

/// What a client can send the TOTP pages: any input, as a pending-login
/// cookie or an account enrolment offer, is refused; a sealed pending login
/// opens to itself, not for the other purpose, and a copy with one character
/// changed does not open; a typed code is accepted only as six ASCII digits
/// that are the code of a step within the skew; a recovery code only in its
/// exact normalized form. Nothing panics.
pub fn second_factor_input(data: &[u8]) {
    use nbgate::auth::pending::{self, EnrolOffer, PendingLogin, Purpose};
    use nbgate::auth::totp::{self, CodeCheck, Secret};
    const KEY: [u8; 64] = [7u8; 64];
    const NOW: u64 = 1_700_000_000;
    let text = String::from_utf8_lossy(data);
    assert!(
        pending::open::<PendingLogin>(&KEY, Purpose::SecondStep, &text, NOW).is_none(),
        "forged pending login accepted"
    );
    assert!(
        pending::open::<EnrolOffer>(&KEY, Purpose::AccountEnrol, &text, NOW).is_none(),
        "forged enrolment offer accepted"
    );

    let p = PendingLogin {
        u: text.chars().take(32).collect(),
        id: text.chars().rev().take(22).collect(),
        exp: NOW + 1 + u64::from(data.first().copied().unwrap_or(0)),
        next: text.chars().skip(8).take(64).collect(),
        enrol: (data.len() % 2 == 1).then(|| text.chars().take(40).collect()),
        stamp: (NOW + data.len() as u64, text.chars().take(16).collect()),
    };
    let sealed = pending::seal(&KEY, Purpose::SecondStep, &p);
    assert_eq!(
        pending::open::<PendingLogin>(&KEY, Purpose::SecondStep, &sealed, NOW).as_ref(),
        Some(&p)
    );
    assert!(pending::open::<PendingLogin>(&KEY, Purpose::AccountEnrol, &sealed, NOW).is_none());
    assert!(pending::open::<PendingLogin>(&KEY, Purpose::SecondStep, &sealed, p.exp).is_none());
    let mut bytes = sealed.into_bytes();
    let i = usize::from(data.get(1).copied().unwrap_or(0)) % bytes.len();
    bytes[i] = if bytes[i] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(bytes).expect("base64 is ASCII");
    assert!(
        pending::open::<PendingLogin>(&KEY, Purpose::SecondStep, &tampered, NOW).is_none(),
        "tampered pending login accepted"
    );

    let secret = Secret::from_base32("GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ").expect("valid secret");
    let normalized = totp::normalize_code(&text);
    if let Some(code) = &normalized {
        assert!(code.len() == 6 && code.bytes().all(|b| b.is_ascii_digit()));
    }
    if let CodeCheck::Accepted { step } = totp::check_code(&secret, &text, NOW, None) {
        assert!(step.abs_diff(totp::step_of(NOW)) <= totp::SKEW_STEPS);
        assert_eq!(normalized, Some(secret.code_at(step * totp::STEP_SECS)));
    }
    if let Some(code) = totp::normalize_recovery(&text) {
        assert_eq!(code.len(), 10);
        assert!(code
            .bytes()
            .all(|b| b.is_ascii_digit() || b.is_ascii_lowercase()));
        let hashes = vec![totp::recovery_hash(b"salt", &code)];
        assert_eq!(totp::find_recovery(b"salt", &hashes, &text), Some(0));
    } else {
        assert_eq!(totp::find_recovery(b"salt", &[], &text), None);
    }
}

/// The single sign-on callback (`auth::oidc::flow`): the query the provider
/// (or anyone) sends to `oidc/callback`, and the flow cookie beside it. The
/// first byte splits the input into a query and a cookie value. A parsed
/// callback always has a non-empty `state`, every parameter under the cap,
/// and an error code made only of log-safe characters; no cookie value
/// the fuzzer makes opens (the key is not the fuzzer's), and a sealed flow
/// opens to its exact contents, while truncated or altered copies do not.
pub fn oidc_callback(data: &[u8]) {
    use nbgate::auth::oidc::flow::{Callback, FlowKey, FlowState, Outcome, MAX_PARAM};

    let split = usize::from(data.first().copied().unwrap_or(0)).min(data.len());
    let rest = data.get(1..).unwrap_or_default();
    let (query, cookie) = rest.split_at(split.min(rest.len()));
    let query = String::from_utf8_lossy(query);
    if let Ok(cb) = Callback::parse(&query) {
        assert!(
            !cb.state.is_empty() && cb.state.len() <= MAX_PARAM,
            "{cb:?}"
        );
        assert!(cb.iss.as_ref().is_none_or(|i| i.len() <= MAX_PARAM));
        match &cb.outcome {
            Outcome::Code(code) => assert!(!code.is_empty() && code.len() <= MAX_PARAM),
            Outcome::Error(e) => assert!(
                e.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
                    && (1..=64).contains(&e.len()),
                "{e:?} is not log-safe"
            ),
        }
    }
    let key = FlowKey::derive(b"nbgate-fuzz-oidc-flow-key-32-byt");
    let cookie = String::from_utf8_lossy(cookie);
    assert_eq!(key.open(&cookie, 0), None, "a made-up cookie opened");
    let flow = FlowState {
        provider: "p".into(),
        state: query.chars().take(64).collect(),
        nonce: "n".into(),
        verifier: "v".into(),
        redirect_uri: "https://h/_nbgate/oidc/callback".into(),
        next: "/".into(),
        expires: 10,
    };
    let sealed = key.seal(&flow);
    assert_eq!(key.open(&sealed, 0).as_ref(), Some(&flow));
    assert_eq!(key.open(&sealed, 10), None, "expired");
    if !cookie.is_empty() {
        let cut = cookie.len() % sealed.len();
        assert_eq!(key.open(&sealed[..cut], 0), None, "a truncated flow opened");
        let mut altered = sealed.clone().into_bytes();
        let i = usize::from(cookie.as_bytes()[0]) % altered.len();
        altered[i] = if altered[i] == b'A' { b'B' } else { b'A' };
        let altered = String::from_utf8(altered).expect("base64url is ASCII");
        assert_eq!(key.open(&altered, 0), None, "an altered flow opened");
    }
}
