//! Removes Jupyter's token from a response body as it streams, in bounded
//! memory.
//!
//! Jupyter writes the token of a token-authenticated request into its HTML
//! (JupyterLab's page config, `data-jupyter-api-token`). With it, anyone who
//! can reach Jupyter could talk to it around nbgate, so it must never reach a
//! browser. The scrubber works on the body's frames as they pass: it keeps
//! at most `token.len() - 1` bytes between two frames (the longest tail that
//! may be the start of a token split across frames), never the whole page —
//! a page of any size and framing (chunked, unknown length) is scrubbed, and
//! a client cannot make nbgate buffer pages by asking for many of them.
//!
//! Owns only the byte rule and the body wrapper; which responses need it is
//! decided in `response`. Takes the token as an argument, never from config.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use hyper::body::{Body, Frame, SizeHint};
use memchr::memmem::Finder;

use super::body::BoxError;

/// The streaming rule: every occurrence of the token is removed.
pub struct Scrubber {
    finder: Finder<'static>,
    /// The end of what came so far that may be the start of a token:
    /// shorter than the token, so never a whole one.
    carry: Vec<u8>,
}

impl Scrubber {
    /// A scrubber for `token`; `None` for an empty token (nothing to remove).
    pub fn new(token: &str) -> Option<Self> {
        if token.is_empty() {
            return None;
        }
        Some(Scrubber {
            finder: Finder::new(token.as_bytes()).into_owned(),
            carry: Vec::with_capacity(token.len() - 1),
        })
    }

    /// Takes the next chunk; returns what can be sent now, without any token.
    pub fn push(&mut self, chunk: Bytes) -> Bytes {
        let data = if self.carry.is_empty() {
            chunk
        } else {
            let mut joined = BytesMut::with_capacity(self.carry.len() + chunk.len());
            joined.extend_from_slice(&self.carry);
            joined.extend_from_slice(&chunk);
            self.carry.clear();
            joined.freeze()
        };
        let token = self.finder.needle();
        let mut out: Option<BytesMut> = None;
        let mut pos = 0;
        for at in self.finder.find_iter(&data) {
            out.get_or_insert_with(|| BytesMut::with_capacity(data.len()))
                .extend_from_slice(&data[pos..at]);
            pos = at + token.len();
        }
        let keep = token_prefix_at_end(&data[pos..], token);
        let send_end = data.len() - keep;
        self.carry.extend_from_slice(&data[send_end..]);
        match out {
            None => data.slice(..send_end),
            Some(mut out) => {
                out.extend_from_slice(&data[pos..send_end]);
                out.freeze()
            }
        }
    }

    /// The end of the body: what was held back (not a whole token).
    pub fn finish(&mut self) -> Bytes {
        Bytes::from(std::mem::take(&mut self.carry))
    }
}

/// The length of the longest end of `tail` that is a proper prefix of
/// `token`: a token split across frames starts there.
fn token_prefix_at_end(tail: &[u8], token: &[u8]) -> usize {
    let longest = tail.len().min(token.len() - 1);
    (1..=longest)
        .rev()
        .find(|&n| tail.ends_with(&token[..n]))
        .unwrap_or(0)
}

pin_project_lite::pin_project! {
    /// A response body with the token removed from its data frames. Its
    /// length is unknown (`Content-Length` must go with it).
    pub struct ScrubBody<B> {
        #[pin]
        inner: B,
        scrubber: Scrubber,
        // The inner body has ended; what was held back is sent next.
        inner_done: bool,
        // Trailers that came after the data, sent after the held-back bytes.
        trailers: Option<http::HeaderMap>,
        done: bool,
    }
}

impl<B> ScrubBody<B> {
    pub fn new(inner: B, scrubber: Scrubber) -> Self {
        ScrubBody {
            inner,
            scrubber,
            inner_done: false,
            trailers: None,
            done: false,
        }
    }
}

impl<B> Body for ScrubBody<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let mut this = self.project();
        loop {
            if *this.done {
                return Poll::Ready(None);
            }
            if *this.inner_done {
                let rest = this.scrubber.finish();
                if !rest.is_empty() {
                    return Poll::Ready(Some(Ok(Frame::data(rest))));
                }
                *this.done = true;
                return Poll::Ready(this.trailers.take().map(|t| Ok(Frame::trailers(t))));
            }
            match std::task::ready!(this.inner.as_mut().poll_frame(cx)) {
                None => *this.inner_done = true,
                Some(Err(e)) => {
                    *this.done = true;
                    return Poll::Ready(Some(Err(e.into())));
                }
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => {
                        let clean = this.scrubber.push(data);
                        // An empty frame (all held back) is not sent.
                        if !clean.is_empty() {
                            return Poll::Ready(Some(Ok(Frame::data(clean))));
                        }
                    }
                    Err(frame) => {
                        // Trailers end the body: the held-back bytes first.
                        *this.inner_done = true;
                        *this.trailers = frame.into_trailers().ok();
                    }
                },
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, StreamBody};

    const TOKEN: &str = "0123456789abcdef";

    /// Scrubs `chunks` one by one; returns the output and the largest carry.
    fn scrub(chunks: &[&[u8]]) -> (Vec<u8>, usize) {
        let mut s = Scrubber::new(TOKEN).expect("token");
        let mut out = Vec::new();
        let mut max_carry = 0;
        for c in chunks {
            out.extend_from_slice(&s.push(Bytes::copy_from_slice(c)));
            max_carry = max_carry.max(s.carry.len());
        }
        out.extend_from_slice(&s.finish());
        (out, max_carry)
    }

    #[test]
    fn token_is_removed_wherever_frames_split_it() {
        let page = format!(r#"<script>{{"token": "{TOKEN}", "x": "{TOKEN}{TOKEN}"}}</script>"#);
        let want = r#"<script>{"token": "", "x": ""}</script>"#;
        let bytes = page.as_bytes();
        // Every split into two frames, and one byte per frame.
        for cut in 0..=bytes.len() {
            let (out, _) = scrub(&[&bytes[..cut], &bytes[cut..]]);
            assert_eq!(String::from_utf8_lossy(&out), want, "cut at {cut}");
        }
        let singles: Vec<&[u8]> = bytes.chunks(1).collect();
        let (out, max_carry) = scrub(&singles);
        assert_eq!(String::from_utf8_lossy(&out), want);
        assert!(max_carry < TOKEN.len(), "carry {max_carry}");
    }

    #[test]
    fn carry_stays_below_the_token_length_and_text_without_token_is_kept() {
        // A near-miss at every frame end is held back, then sent whole.
        let near = &TOKEN.as_bytes()[..TOKEN.len() - 1];
        let chunks: Vec<&[u8]> = vec![b"a", near, b"b", near, near, b"!"];
        let (out, max_carry) = scrub(&chunks);
        assert_eq!(out, chunks.concat());
        assert_eq!(max_carry, TOKEN.len() - 1);
        // A body ending in a token prefix gets it at the end.
        let (out, _) = scrub(&[b"x", &TOKEN.as_bytes()[..4]]);
        assert_eq!(out, b"x0123");
        assert!(Scrubber::new("").is_none());
    }

    #[test]
    fn frames_without_a_token_prefix_pass_without_a_copy() {
        let mut s = Scrubber::new(TOKEN).expect("token");
        let chunk = Bytes::from_static(b"<html>no secret here</html>");
        let out = s.push(chunk.clone());
        assert_eq!(out.as_ptr(), chunk.as_ptr(), "sliced, not copied");
        assert_eq!(out, chunk);
    }

    #[tokio::test]
    async fn body_wrapper_scrubs_frames_and_keeps_trailers() {
        let mut trailers = http::HeaderMap::new();
        trailers.insert("x-t", http::HeaderValue::from_static("1"));
        let frames: Vec<Result<Frame<Bytes>, BoxError>> = vec![
            Ok(Frame::data(Bytes::from_static(b"a0123456"))),
            Ok(Frame::data(Bytes::from_static(b"789abcdefb0123"))),
            Ok(Frame::trailers(trailers)),
        ];
        let body = ScrubBody::new(
            StreamBody::new(futures_util::stream::iter(frames)),
            Scrubber::new(TOKEN).expect("token"),
        );
        let collected = body.collect().await.expect("body");
        assert_eq!(collected.trailers().expect("trailers")["x-t"], "1");
        assert_eq!(collected.to_bytes(), Bytes::from_static(b"ab0123"));
    }
}
