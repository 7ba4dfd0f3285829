//! The response body, read from the connection by the framing its head
//! gave: a length, chunks (RFC 9112 §7.1, decoded strictly), or the close.

use std::task::{ready, Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use http::header::{HeaderMap, HeaderName, HeaderValue};
use hyper::body::Frame;

use super::{Conn, H1Error, BODY_READ, HEAD_READ, MAX_HEADERS};

/// Largest chunk-size line (with extensions, CRLF included) and trailer
/// section. Enforced on complete lines too, not only while one is still
/// arriving, so that where the reads happen to split a body never decides
/// whether it is accepted.
const MAX_CHUNK_LINE: usize = 4096;
const MAX_TRAILER_BYTES: usize = 16 * 1024;
const MAX_CHUNK_EXTENSIONS: usize = 16 * 1024;

/// How a response body is delimited (RFC 9112 §6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Framing {
    /// No body (HEAD, 204, 304), or a body read to its end.
    Done,
    Length(u64),
    Chunked(Chunk),
    /// Until the connection closes.
    Close,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Chunk {
    Size,
    Data(u64),
    DataEnd,
    Trailers,
}

/// Reads a response body's frames from its connection, as asked for.
pub struct BodyReader {
    framing: Framing,
    /// Bytes of chunk extensions seen: bounded per body, as in hyper.
    extensions: usize,
}

impl BodyReader {
    pub(super) fn new(framing: Framing) -> Self {
        BodyReader {
            framing,
            extensions: 0,
        }
    }

    pub fn is_end_stream(&self) -> bool {
        self.framing == Framing::Done
    }

    /// The body's exact remaining length, when known.
    pub fn exact_len(&self) -> Option<u64> {
        match self.framing {
            Framing::Done => Some(0),
            Framing::Length(n) => Some(n),
            _ => None,
        }
    }

    /// The next frame of the body from `conn`; `None` at its end.
    pub fn poll_frame(
        &mut self,
        conn: &mut Conn,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, H1Error>>> {
        loop {
            match self.framing {
                Framing::Done => return Poll::Ready(None),
                Framing::Length(rest) => {
                    if conn.buf.is_empty() && ready!(self.fill(conn, cx, rest))? == 0 {
                        return Poll::Ready(Some(Err(H1Error::Incomplete)));
                    }
                    let data = take(&mut conn.buf, rest);
                    let rest = rest - data.len() as u64;
                    self.framing = if rest == 0 {
                        Framing::Done
                    } else {
                        Framing::Length(rest)
                    };
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Framing::Close => {
                    if conn.buf.is_empty() && ready!(self.fill(conn, cx, u64::MAX))? == 0 {
                        self.framing = Framing::Done;
                        return Poll::Ready(None);
                    }
                    return Poll::Ready(Some(Ok(Frame::data(conn.buf.split().freeze()))));
                }
                Framing::Chunked(Chunk::Size) => match parse_chunk_size(&conn.buf) {
                    Ok(httparse::Status::Complete((used, ..))) if used > MAX_CHUNK_LINE => {
                        return Poll::Ready(Some(Err(H1Error::Invalid(
                            "chunk size line too long",
                        ))));
                    }
                    Ok(httparse::Status::Complete((used, size, extension_len))) => {
                        // Only the extensions count, not the whole line: a
                        // body of many small chunks is no attack (counting
                        // "1\r\n" lines refused a body of ~5,400 one-byte
                        // chunks; fuzz/regressions/h1_chunked/many_small_chunks).
                        self.extensions += extension_len;
                        if self.extensions > MAX_CHUNK_EXTENSIONS {
                            return Poll::Ready(Some(Err(H1Error::Invalid(
                                "too many chunk extensions",
                            ))));
                        }
                        conn.buf.advance(used);
                        self.framing = Framing::Chunked(if size == 0 {
                            Chunk::Trailers
                        } else {
                            Chunk::Data(size)
                        });
                    }
                    Ok(httparse::Status::Partial) if conn.buf.len() >= MAX_CHUNK_LINE => {
                        return Poll::Ready(Some(Err(H1Error::Invalid(
                            "chunk size line too long",
                        ))));
                    }
                    Ok(httparse::Status::Partial) => ready!(self.need_more(conn, cx))?,
                    Err(_) => {
                        return Poll::Ready(Some(Err(H1Error::Invalid("invalid chunk size"))))
                    }
                },
                Framing::Chunked(Chunk::Data(rest)) => {
                    if conn.buf.is_empty() && ready!(self.fill(conn, cx, rest))? == 0 {
                        return Poll::Ready(Some(Err(H1Error::Incomplete)));
                    }
                    let data = take(&mut conn.buf, rest);
                    let rest = rest - data.len() as u64;
                    self.framing = Framing::Chunked(if rest == 0 {
                        Chunk::DataEnd
                    } else {
                        Chunk::Data(rest)
                    });
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Framing::Chunked(Chunk::DataEnd) => {
                    if conn.buf.len() < 2 {
                        ready!(self.need_more(conn, cx))?;
                        continue;
                    }
                    if &conn.buf[..2] != b"\r\n" {
                        return Poll::Ready(Some(Err(H1Error::Invalid(
                            "chunk not followed by CRLF",
                        ))));
                    }
                    conn.buf.advance(2);
                    self.framing = Framing::Chunked(Chunk::Size);
                }
                Framing::Chunked(Chunk::Trailers) => {
                    let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
                    match httparse::parse_headers(&conn.buf, &mut fields) {
                        Ok(httparse::Status::Complete((used, _))) if used > MAX_TRAILER_BYTES => {
                            return Poll::Ready(Some(Err(H1Error::Invalid("trailers too large"))));
                        }
                        Ok(httparse::Status::Complete((used, fields))) => {
                            let mut trailers = HeaderMap::new();
                            for f in fields.iter() {
                                let name = HeaderName::from_bytes(f.name.as_bytes());
                                let value = HeaderValue::from_bytes(f.value);
                                if let (Ok(n), Ok(v)) = (name, value) {
                                    trailers.append(n, v);
                                }
                            }
                            conn.buf.advance(used);
                            self.framing = Framing::Done;
                            if trailers.is_empty() {
                                return Poll::Ready(None);
                            }
                            return Poll::Ready(Some(Ok(Frame::trailers(trailers))));
                        }
                        Ok(httparse::Status::Partial) if conn.buf.len() >= MAX_TRAILER_BYTES => {
                            return Poll::Ready(Some(Err(H1Error::Invalid("trailers too large"))));
                        }
                        Ok(httparse::Status::Partial) => ready!(self.need_more(conn, cx))?,
                        Err(_) => {
                            return Poll::Ready(Some(Err(H1Error::Invalid("malformed trailers"))))
                        }
                    }
                }
            }
        }
    }

    /// Reads into the buffer for a body part of `rest` bytes; 0 at the end
    /// of the stream.
    fn fill(
        &self,
        conn: &mut Conn,
        cx: &mut Context<'_>,
        rest: u64,
    ) -> Poll<Result<usize, H1Error>> {
        let want = usize::try_from(rest)
            .unwrap_or(usize::MAX)
            .clamp(HEAD_READ, BODY_READ);
        conn.poll_fill(cx, want).map_err(H1Error::Io)
    }

    /// More bytes for a chunk line or trailers; the end of the stream here
    /// is a truncated body.
    fn need_more(&self, conn: &mut Conn, cx: &mut Context<'_>) -> Poll<Result<(), H1Error>> {
        match ready!(conn.poll_fill(cx, HEAD_READ)) {
            Ok(0) => Poll::Ready(Err(H1Error::Incomplete)),
            Ok(_) => Poll::Ready(Ok(())),
            Err(e) => Poll::Ready(Err(H1Error::Io(e))),
        }
    }
}

/// A chunk-size line (RFC 9112 §7.1): hex digits, optional extensions,
/// CRLF. Strict where httparse's version is lenient (no digit at all reads
/// as a last chunk there, which would end a body early and leave the rest
/// of it to be read as the next response). Complete: the line's length, the
/// chunk size, and how many bytes lie between the digits and the CRLF.
fn parse_chunk_size(buf: &[u8]) -> Result<httparse::Status<(usize, u64, usize)>, ()> {
    let digits = buf.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    if digits == buf.len() {
        return if digits > 16 {
            Err(())
        } else {
            Ok(httparse::Status::Partial)
        };
    }
    if digits == 0 || digits > 16 {
        return Err(());
    }
    let size = buf[..digits].iter().fold(0u64, |n, &d| {
        (n << 4) | u64::from((d as char).to_digit(16).unwrap_or(0))
    });
    // Extensions (or whitespace before them) run to the CR; a bare LF or
    // another control byte is refused.
    let rest = &buf[digits..];
    if !matches!(rest[0], b'\r' | b';' | b' ' | b'\t') {
        return Err(());
    }
    for (i, &b) in rest.iter().enumerate() {
        match b {
            b'\r' => {
                return match rest.get(i + 1) {
                    None => Ok(httparse::Status::Partial),
                    Some(b'\n') => Ok(httparse::Status::Complete((digits + i + 2, size, i))),
                    Some(_) => Err(()),
                };
            }
            b'\t' => {}
            b if b < 0x20 || b == 0x7f => return Err(()),
            _ => {}
        }
    }
    Ok(httparse::Status::Partial)
}

/// Up to `rest` bytes from the front of `buf`, sharing its memory.
fn take(buf: &mut BytesMut, rest: u64) -> Bytes {
    let n = usize::try_from(rest).unwrap_or(usize::MAX).min(buf.len());
    buf.split_to(n).freeze()
}

#[cfg(test)]
mod tests {
    use http::Method;

    use super::*;
    use crate::proxy::h1::tests::{data, no_body, request, run};

    #[tokio::test]
    async fn a_chunked_response_is_decoded_across_reads_with_extensions_and_trailers() {
        let (_, r) = run(
            request(Method::GET, no_body()),
            vec![
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nWi",
                b"ki\r\n5;ext=1\r",
                b"\npedia\r\n0\r\nX-Checksum: abc\r\n",
                b"\r\n",
            ],
        )
        .await;
        let (_, keep_alive, frames) = r.expect("exchange");
        assert!(keep_alive);
        assert_eq!(data(&frames), b"Wikipedia");
        let trailers = frames
            .last()
            .and_then(|f| f.trailers_ref())
            .expect("trailers");
        assert_eq!(trailers["x-checksum"], "abc");
    }

    #[tokio::test]
    async fn invalid_chunk_sizes_fail_the_exchange() {
        let (_, r) = run(
            request(Method::GET, no_body()),
            vec![b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"],
        )
        .await;
        assert!(
            matches!(r, Err(H1Error::Invalid("invalid chunk size"))),
            "{r:?}"
        );
        // No size digit is not a last chunk (httparse reads it as one).
        for answer in [
            &b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n\r\n\r\n"[..],
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n;x\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3;x\nabc\r\n0\r\n\r\n",
        ] {
            let (_, r) = run(request(Method::GET, no_body()), vec![answer]).await;
            assert!(
                matches!(r, Err(H1Error::Invalid("invalid chunk size"))),
                "{}: {r:?}",
                String::from_utf8_lossy(answer)
            );
        }
    }
}
