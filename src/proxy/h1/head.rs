//! The response head: parsed from what Jupyter sent, with how its body
//! is delimited (RFC 9112 §6.3) and whether the connection survives it.

use std::mem::MaybeUninit;

use bytes::{Buf, Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Response, StatusCode, Version};

use super::body::{BodyReader, Chunk, Framing};
use super::request::Upload;
use super::{H1Error, MAX_HEADERS};

/// Largest response head (hyper's default read buffer limit): beyond it the
/// exchange fails rather than buffering without bound.
const MAX_HEAD_BYTES: usize = 8192 + 4096 * 100;

/// A response head and how to read its body.
pub struct Head {
    response: Response<()>,
    framing: Framing,
    /// The connection may carry another exchange once the body is read.
    pub(super) keep_alive: bool,
    /// The rest of a request body Jupyter answered before it had it all.
    pub(super) upload: Option<Upload>,
}

/// Parses a complete response head from the front of `buf`, consuming it;
/// `None` while more bytes are needed. Interim (1xx) responses are
/// consumed and skipped: the client gets the final one.
pub(super) fn parse_head(buf: &mut BytesMut, head_request: bool) -> Result<Option<Head>, H1Error> {
    loop {
        let mut fields = [MaybeUninit::<httparse::Header<'_>>::uninit(); MAX_HEADERS];
        // Where each name and value lies in `buf`, so that the values can
        // share the buffer's bytes once it is frozen (no copy).
        let mut spans = [(0u32, 0u32, 0u32, 0u32); MAX_HEADERS];
        let mut res = httparse::Response::new(&mut []);
        let len = match httparse::ParserConfig::default().parse_response_with_uninit_headers(
            &mut res,
            buf,
            &mut fields,
        ) {
            Ok(httparse::Status::Complete(len)) if len <= MAX_HEAD_BYTES => len,
            Ok(httparse::Status::Complete(_)) => {
                return Err(H1Error::Invalid("response head too large"));
            }
            Ok(httparse::Status::Partial) if buf.len() >= MAX_HEAD_BYTES => {
                return Err(H1Error::Invalid("response head too large"));
            }
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(httparse::Error::TooManyHeaders) => {
                return Err(H1Error::Invalid("too many response header fields"));
            }
            Err(_) => return Err(H1Error::Invalid("malformed response head")),
        };
        let code = res.code.unwrap_or(0);
        let status =
            StatusCode::from_u16(code).map_err(|_| H1Error::Invalid("invalid status code"))?;
        if status.is_informational() {
            if status == StatusCode::SWITCHING_PROTOCOLS {
                return Err(H1Error::Invalid("unrequested protocol switch"));
            }
            buf.advance(len);
            continue;
        }
        let http11 = res.version == Some(1);
        let reason = res
            .reason
            .filter(|r| Some(*r) != status.canonical_reason() && !r.is_empty())
            .map(|r| Bytes::copy_from_slice(r.as_bytes()));
        let base = buf.as_ptr() as usize;
        let count = res.headers.len();
        for (span, h) in spans.iter_mut().zip(res.headers.iter()) {
            let n = h.name.as_ptr() as usize - base;
            let v = h.value.as_ptr() as usize - base;
            *span = (
                n as u32,
                (n + h.name.len()) as u32,
                v as u32,
                (v + h.value.len()) as u32,
            );
        }
        let bytes = buf.split_to(len).freeze();
        let mut headers = HeaderMap::with_capacity(count);
        for &(ns, ne, vs, ve) in &spans[..count] {
            let name = HeaderName::from_bytes(&bytes[ns as usize..ne as usize])
                .map_err(|_| H1Error::Invalid("invalid header name"))?;
            let value = HeaderValue::from_maybe_shared(bytes.slice(vs as usize..ve as usize))
                .map_err(|_| H1Error::Invalid("invalid header value"))?;
            headers.append(name, value);
        }
        let (framing, mut keep_alive) = framing(&headers, status, head_request, http11)?;
        if headers.contains_key(header::TRANSFER_ENCODING) {
            // Its length is not the body's (RFC 9112 §6.3: an intermediary
            // must remove it), and the client's side reframes the body.
            headers.remove(header::CONTENT_LENGTH);
        }
        if http11 {
            keep_alive &= !has_token(&headers, header::CONNECTION, "close");
        } else {
            // HTTP/1.0 keeps a connection only if asked to; not worth it.
            keep_alive = false;
        }
        let mut response = Response::new(());
        *response.status_mut() = status;
        *response.version_mut() = if http11 {
            Version::HTTP_11
        } else {
            Version::HTTP_10
        };
        *response.headers_mut() = headers;
        if let Some(r) = reason.and_then(|r| hyper::ext::ReasonPhrase::try_from(r).ok()) {
            response.extensions_mut().insert(r);
        }
        return Ok(Some(Head {
            response,
            framing,
            keep_alive,
            upload: None,
        }));
    }
}

/// The body's framing (RFC 9112 §6.3) and whether the connection survives it.
fn framing(
    headers: &HeaderMap,
    status: StatusCode,
    head_request: bool,
    http11: bool,
) -> Result<(Framing, bool), H1Error> {
    if head_request || status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED {
        return Ok((Framing::Done, true));
    }
    if headers.contains_key(header::TRANSFER_ENCODING) {
        // Transfer-Encoding overrides Content-Length; a message with both
        // may be an attempt at smuggling, so its connection is not reused
        // (RFC 9112 §6.3 point 3).
        let both = headers.contains_key(header::CONTENT_LENGTH);
        if !http11 {
            // HTTP/1.0 has no transfer codings (as hyper refuses it).
            return Err(H1Error::Invalid(
                "Transfer-Encoding in an HTTP/1.0 response",
            ));
        }
        // The final coding of the list across all field lines, read as
        // bytes: "gz\xffp, chunked" and "chunked," are chunked too (both
        // were read to the close, the chunk framing passed on as body;
        // fuzz/regressions/h1_response/obs_text_in_transfer_encoding).
        let chunked = last_list_element(headers, header::TRANSFER_ENCODING)
            .is_some_and(|c| c.eq_ignore_ascii_case(b"chunked"));
        return Ok(if chunked {
            (Framing::Chunked(Chunk::Size), !both)
        } else {
            (Framing::Close, false)
        });
    }
    let mut length = None;
    for value in headers.get_all(header::CONTENT_LENGTH) {
        for part in value.as_bytes().split(|&b| b == b',') {
            let n = parse_length(part).ok_or(H1Error::Invalid("invalid Content-Length"))?;
            if length.is_some_and(|l| l != n) {
                return Err(H1Error::Invalid("conflicting Content-Length values"));
            }
            length = Some(n);
        }
    }
    Ok(match length {
        Some(0) => (Framing::Done, true),
        Some(n) => (Framing::Length(n), true),
        None => (Framing::Close, false),
    })
}

fn parse_length(s: &[u8]) -> Option<u64> {
    let s = s.trim_ascii();
    if s.is_empty() || s.len() > 19 || !s.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(s.iter().fold(0u64, |n, &d| n * 10 + u64::from(d - b'0')))
}

/// The elements of a comma-separated field across all its lines, trimmed,
/// empty ones skipped (RFC 9110 §5.6.1); bytes, so that obs-text in one
/// element does not hide the others.
fn list_elements<'a>(
    headers: &'a HeaderMap,
    name: HeaderName,
) -> impl Iterator<Item = &'a [u8]> + 'a {
    headers
        .get_all(name)
        .into_iter()
        .flat_map(|v| v.as_bytes().split(|&b| b == b','))
        .map(<[u8]>::trim_ascii)
        .filter(|e| !e.is_empty())
}

fn last_list_element(headers: &HeaderMap, name: HeaderName) -> Option<&[u8]> {
    list_elements(headers, name).last()
}

fn has_token(headers: &HeaderMap, name: HeaderName, token: &str) -> bool {
    list_elements(headers, name).any(|t| t.eq_ignore_ascii_case(token.as_bytes()))
}

impl Head {
    /// The response head, its body's reader, whether the connection can
    /// carry another exchange once that body is read, and the rest of the
    /// request body still to send.
    pub fn into_parts(self) -> (Response<()>, BodyReader, bool, Option<Upload>) {
        let reader = BodyReader::new(self.framing);
        (self.response, reader, self.keep_alive, self.upload)
    }
}

#[cfg(test)]
mod tests {
    use http::Method;

    use super::*;
    use crate::proxy::h1::tests::{data, no_body, request, run};

    #[tokio::test]
    async fn interim_responses_are_skipped_and_a_custom_reason_is_kept() {
        let (_, r) = run(
            request(Method::GET, no_body()),
            vec![
                b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n",
                b"HTTP/1.1 404 No Such Kernel\r\nContent-Length: 2\r\n\r\nno",
            ],
        )
        .await;
        let (resp, _, frames) = r.expect("exchange");
        assert_eq!(resp.status(), StatusCode::NOT_FOUND);
        assert!(
            !resp.headers().contains_key("link"),
            "interim fields are not merged"
        );
        let reason = resp
            .extensions()
            .get::<hyper::ext::ReasonPhrase>()
            .expect("reason");
        assert_eq!(reason.as_bytes(), b"No Such Kernel");
        assert_eq!(data(&frames), b"no");
    }

    #[tokio::test]
    async fn connections_that_cannot_carry_another_exchange_are_not_kept() {
        let cases: [(&'static [u8], &[u8]); 4] = [
            (b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 1\r\n\r\na", b"a"),
            (b"HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\na", b"a"),
            // Both framings: Transfer-Encoding wins, the connection goes.
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\nTransfer-Encoding: chunked\r\n\r\n1\r\na\r\n0\r\n\r\n",
                b"a",
            ),
            // No length: the body ends when Jupyter closes.
            (b"HTTP/1.1 200 OK\r\n\r\nuntil the end", b"until the end"),
        ];
        for (answer, body) in cases {
            let (_, r) = run(request(Method::GET, no_body()), vec![answer]).await;
            let (resp, keep_alive, frames) = r.expect("exchange");
            assert!(!keep_alive, "{}", String::from_utf8_lossy(answer));
            // A length beside Transfer-Encoding is not passed on.
            let h = resp.headers();
            assert!(
                !(h.contains_key(header::CONTENT_LENGTH)
                    && h.contains_key(header::TRANSFER_ENCODING))
            );
            assert_eq!(data(&frames), body);
        }
    }

    #[tokio::test]
    async fn malformed_heads_fail_the_exchange() {
        let cases: [&'static [u8]; 6] = [
            b"HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\na\r\n0\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
            b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
            b"HTTP/1.1 101 Switching Protocols\r\n\r\n",
            b"HTTP/1.1 2000 OK\r\n\r\n",
            b"NOT HTTP\r\n\r\n",
        ];
        for answer in cases {
            let (_, r) = run(request(Method::GET, no_body()), vec![answer]).await;
            assert!(
                matches!(r, Err(H1Error::Invalid(_))),
                "{}",
                String::from_utf8_lossy(answer)
            );
        }
    }

    #[tokio::test]
    async fn a_head_response_has_no_body_whatever_its_length_says() {
        let (_, r) = run(
            request(Method::HEAD, no_body()),
            vec![b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n"],
        )
        .await;
        let (resp, keep_alive, frames) = r.expect("exchange");
        assert_eq!(resp.headers()[header::CONTENT_LENGTH], "1000");
        assert!(keep_alive && frames.is_empty());
    }
}
