//! The audit's view of a WebSocket tunnel: the client's side of the
//! tunnel wrapped so that the bytes read from it (what goes to Jupyter)
//! are looked at as they pass. The bytes themselves go on unchanged, in
//! the same reads: Jupyter receives exactly what the client sent.
//!
//! Kernel channels: the code of each `execute_request` (`audit.code`).
//! Terminals: each line typed (`audit.terminal_input`), recorded when
//! Enter is pressed.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::classify::{self, Channel};
use super::kernel_frames::{self, Frames, Message, Protocol};
use super::{sha256_hex, truncate, Actor, Event};
use crate::config::AuditConfig;

/// What one tunnel's audit looks for, and its state.
pub struct Tap {
    channel: Channel,
    actor: Actor,
    protocol: Protocol,
    frames: Frames,
    code_max: usize,
    /// A terminal line being typed (terminals only).
    line: Option<Line>,
    /// A compressed message was seen (said once per tunnel).
    said_unreadable: bool,
}

/// The tap for a WebSocket at `path` (relative to the base URL), when
/// the configuration asks for one; `subprotocol`: Jupyter's choice.
pub fn for_tunnel(
    path: &str,
    subprotocol: Option<&str>,
    actor: Actor,
    config: &AuditConfig,
) -> Option<Tap> {
    let channel = classify::websocket(path)?;
    let wanted = match channel {
        Channel::Kernel(_) => config.code,
        Channel::Terminal(_) => config.terminal_input,
    };
    wanted.then(|| Tap {
        line: matches!(channel, Channel::Terminal(_)).then(Line::default),
        channel,
        actor,
        protocol: kernel_frames::protocol(subprotocol),
        frames: Frames::default(),
        code_max: config.code_max_bytes,
        said_unreadable: false,
    })
}

impl Tap {
    /// Looks at bytes the client sent (in order).
    pub fn observe(&mut self, data: &[u8]) {
        let Tap {
            channel,
            actor,
            protocol,
            frames,
            code_max,
            line,
            said_unreadable,
        } = self;
        frames.feed(data, &mut |msg| match channel {
            Channel::Kernel(kernel) => {
                kernel_message(&msg, *protocol, kernel, actor, *code_max, said_unreadable);
            }
            Channel::Terminal(name) => {
                if let (Some(line), Some(text)) =
                    (line.as_mut(), kernel_frames::terminal_stdin(&msg))
                {
                    line.typed(&text, *code_max, &mut |l| {
                        let mut e = Event::new("terminal_input", actor);
                        e.terminal = Some(name.clone());
                        let text = String::from_utf8_lossy(l.kept);
                        let (kept, cut) = truncate(&text, *code_max);
                        e.code = Some(kept.to_owned());
                        e.code_bytes = Some(l.len);
                        e.code_sha256 = Some(l.sha256);
                        e.code_truncated = cut || l.len > l.kept.len() as u64;
                        super::record(e);
                    });
                }
            }
        });
    }
}

fn kernel_message(
    msg: &Message<'_>,
    protocol: Protocol,
    kernel: &str,
    actor: &Actor,
    code_max: usize,
    said_unreadable: &mut bool,
) {
    let mut e = Event::new("code_execute", actor);
    e.kernel = Some(kernel.to_owned());
    match msg {
        Message::Oversize { len, execute: true } => {
            e.code_bytes = None;
            e.bytes = Some(*len);
            e.code_truncated = true;
        }
        Message::Compressed => {
            if std::mem::replace(said_unreadable, true) {
                return;
            }
            e.kind = "code_unreadable".into();
        }
        _ => {
            let Some(x) = kernel_frames::execute_request(msg, protocol) else {
                return;
            };
            e.msg_id = x.msg_id;
            e.session = x.session;
            fill_code(&mut e, x.code.as_bytes(), code_max);
        }
    }
    super::record(e);
}

/// `code`, `code_bytes`, `code_sha256`, `code_truncated` from `text`.
fn fill_code(e: &mut Event, text: &[u8], max: usize) {
    let whole = String::from_utf8_lossy(text);
    let (kept, cut) = truncate(&whole, max);
    e.code = Some(kept.to_owned());
    e.code_bytes = Some(text.len() as u64);
    e.code_sha256 = Some(sha256_hex(text));
    e.code_truncated = cut;
}

/// A terminal line as it is typed: kept up to the configured size, all of
/// it hashed and counted.
#[derive(Default)]
struct Line {
    kept: Vec<u8>,
    len: u64,
    hash: Option<ring::digest::Context>,
}

/// A line ended by Enter.
struct Typed<'a> {
    kept: &'a [u8],
    len: u64,
    sha256: String,
}

impl Line {
    /// Adds typed text; calls `done` with each line ended by Enter (`\r`
    /// or `\n`). Empty lines are not recorded.
    fn typed(&mut self, text: &str, max: usize, done: &mut dyn FnMut(Typed<'_>)) {
        for piece in text
            .as_bytes()
            .split_inclusive(|&b| b == b'\r' || b == b'\n')
        {
            let (body, ended) = match piece.last() {
                Some(b'\r' | b'\n') => (&piece[..piece.len() - 1], true),
                _ => (piece, false),
            };
            let room = max.saturating_sub(self.kept.len());
            self.kept.extend_from_slice(&body[..body.len().min(room)]);
            self.len += body.len() as u64;
            self.hash
                .get_or_insert_with(|| ring::digest::Context::new(&ring::digest::SHA256))
                .update(body);
            if ended {
                let hash = self.hash.take();
                if self.len > 0 {
                    let sha256 =
                        hash.map_or_else(String::new, |h| hex::encode(h.finish().as_ref()));
                    done(Typed {
                        kept: &self.kept,
                        len: self.len,
                        sha256,
                    });
                }
                self.kept.clear();
                self.len = 0;
            }
        }
    }
}

pin_project_lite::pin_project! {
    /// The client side of a tunnel, read through the audit's tap (when
    /// there is one). Reads and writes pass unchanged.
    pub struct Tapped<S> {
        #[pin]
        inner: S,
        tap: Option<Box<Tap>>,
    }
}

impl<S> Tapped<S> {
    pub fn new(inner: S, tap: Option<Tap>) -> Self {
        Tapped {
            inner,
            tap: tap.map(Box::new),
        }
    }
}

impl<S: AsyncRead> AsyncRead for Tapped<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.project();
        let before = buf.filled().len();
        let polled = this.inner.poll_read(cx, buf);
        if let (Some(tap), Poll::Ready(Ok(()))) = (this.tap.as_mut(), &polled) {
            tap.observe(&buf.filled()[before..]);
        }
        polled
    }
}

impl<S: AsyncWrite> AsyncWrite for Tapped<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.project().inner.poll_write(cx, data)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.project().inner.poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terminal_lines_end_at_enter_and_long_ones_are_cut_but_hashed_whole() {
        let mut line = Line::default();
        let mut got = Vec::new();
        let mut done = |t: Typed<'_>| got.push((t.kept.to_vec(), t.len, t.sha256));
        for part in ["l", "s -", "l\r", "\r", "echo 0123456789\n"] {
            line.typed(part, 8, &mut done);
        }
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].0, b"ls -l");
        assert_eq!(got[0].2, sha256_hex(b"ls -l"));
        assert_eq!(got[1].0, b"echo 012");
        assert_eq!(got[1].1, 15);
        assert_eq!(got[1].2, sha256_hex(b"echo 0123456789"));
    }
}
