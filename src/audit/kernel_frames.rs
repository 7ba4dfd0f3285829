//! What a client sends on a kernel or terminal WebSocket, read from the
//! raw bytes: WebSocket frames (RFC 6455 §5.2, client frames masked) put
//! together into messages, then the Jupyter message inside.
//!
//! Kernel messages come in three shapes (jupyter_server
//! `services/kernels/connection/base.py`): JSON text (the legacy
//! protocol), legacy binary (`nbufs` and offsets as big-endian u32, then
//! the message JSON and its buffers), and the
//! `v1.kernel.websocket.jupyter.org` binary protocol (a count and offsets
//! as little-endian u64, then the channel and the header, parent header,
//! metadata and content, each JSON). Terminal messages are JSON arrays,
//! `["stdin", "text"]` (terminado).
//!
//! Everything here reads bytes any logged-in client chose: lengths and
//! offsets are checked, memory is bounded (`MAX_MESSAGE`), and nothing
//! fails louder than "no message found".

/// A message is kept up to this size to be parsed; past it, only whether
/// it is an `execute_request` is looked for (its code is not recorded,
/// the event says so).
pub const MAX_MESSAGE: usize = 4 << 20;

const NEEDLE: &[u8] = b"execute_request";

/// A complete message a client sent.
#[derive(Debug, PartialEq, Eq)]
pub enum Message<'a> {
    Text(&'a [u8]),
    Binary(&'a [u8]),
    /// Larger than `MAX_MESSAGE`: its size, and whether the bytes held an
    /// `execute_request`.
    Oversize {
        len: u64,
        execute: bool,
    },
    /// Compressed (permessage-deflate, RSV1): not readable here.
    Compressed,
}

/// WebSocket frames → messages, fed the client's bytes in order.
#[derive(Debug, Default)]
pub struct Frames {
    header: [u8; crate::ws_frame::MAX_HEADER],
    have: usize,
    /// Payload bytes left in the current frame.
    left: u64,
    mask: [u8; 4],
    /// Position in the mask of the next payload byte.
    mask_at: usize,
    /// The current frame is a control frame (its payload is skipped).
    control: bool,
    fin: bool,
    /// The message being put together.
    msg: Vec<u8>,
    msg_len: u64,
    msg_binary: bool,
    compressed: bool,
    /// Over `MAX_MESSAGE`: `msg` holds the last bytes only, to find the
    /// needle across frame and read boundaries.
    over: bool,
    over_execute: bool,
}

impl Frames {
    /// Feeds bytes; calls `each` for every message completed.
    pub fn feed(&mut self, mut data: &[u8], each: &mut dyn FnMut(Message<'_>)) {
        while !data.is_empty() {
            if self.left > 0 {
                let take = self.left.min(data.len() as u64) as usize;
                if !self.control {
                    self.payload(&data[..take]);
                }
                self.left -= take as u64;
                data = &data[take..];
                if self.left == 0 {
                    self.frame_end(each);
                }
                continue;
            }
            self.header[self.have] = data[0];
            self.have += 1;
            data = &data[1..];
            if let Some(h) = crate::ws_frame::header(&self.header[..self.have]) {
                self.have = 0;
                self.start_frame(h);
                if h.payload_len == 0 {
                    self.frame_end(each);
                }
            }
        }
    }

    fn start_frame(&mut self, h: crate::ws_frame::Header) {
        self.mask = h.mask.unwrap_or([0; 4]);
        self.mask_at = 0;
        self.left = h.payload_len;
        self.fin = h.fin;
        self.control = h.opcode >= 8;
        if h.opcode == 1 || h.opcode == 2 {
            // A new message (a continuation, opcode 0, adds to the last).
            self.msg.clear();
            self.msg_len = 0;
            self.msg_binary = h.opcode == 2;
            self.compressed = h.rsv1;
            self.over = false;
            self.over_execute = false;
        }
    }

    fn payload(&mut self, data: &[u8]) {
        self.msg_len += data.len() as u64;
        if self.compressed {
            return;
        }
        let start = self.msg.len();
        if !self.over && start + data.len() > MAX_MESSAGE {
            self.over = true;
            self.over_execute = memchr::memmem::find(&self.msg, NEEDLE).is_some();
        }
        self.msg.extend(
            data.iter()
                .enumerate()
                .map(|(i, b)| b ^ self.mask[(self.mask_at + i) % 4]),
        );
        self.mask_at = (self.mask_at + data.len()) % 4;
        if self.over {
            self.over_execute |= memchr::memmem::find(&self.msg, NEEDLE).is_some();
            // Keep just enough to find the needle across boundaries.
            let keep = NEEDLE.len() - 1;
            if self.msg.len() > keep {
                self.msg.drain(..self.msg.len() - keep);
            }
        }
    }

    fn frame_end(&mut self, each: &mut dyn FnMut(Message<'_>)) {
        if self.control || !self.fin {
            return;
        }
        let msg = if self.compressed {
            Message::Compressed
        } else if self.over {
            Message::Oversize {
                len: self.msg_len,
                execute: self.over_execute,
            }
        } else if self.msg_binary {
            Message::Binary(&self.msg)
        } else {
            Message::Text(&self.msg)
        };
        each(msg);
        self.msg.clear();
        self.msg_len = 0;
        if self.msg.capacity() > 64 * 1024 {
            self.msg.shrink_to(64 * 1024);
        }
    }
}

/// How a kernel WebSocket's binary messages are laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// No subprotocol: JSON text, legacy binary for messages with buffers.
    Legacy,
    /// `v1.kernel.websocket.jupyter.org`.
    V1,
}

/// The subprotocol Jupyter chose (its `Sec-WebSocket-Protocol`).
pub fn protocol(chosen: Option<&str>) -> Protocol {
    match chosen.map(str::trim) {
        Some("v1.kernel.websocket.jupyter.org") => Protocol::V1,
        _ => Protocol::Legacy,
    }
}

/// An `execute_request` a client sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Execute {
    pub code: String,
    pub msg_id: Option<String>,
    /// The client's session (the message header's `session`).
    pub session: Option<String>,
}

#[derive(serde::Deserialize)]
struct Header {
    msg_type: String,
    #[serde(default)]
    msg_id: Option<String>,
    #[serde(default)]
    session: Option<String>,
}

#[derive(serde::Deserialize, Default)]
struct Content {
    #[serde(default)]
    code: Option<String>,
}

#[derive(serde::Deserialize)]
struct JsonMessage {
    header: Header,
    #[serde(default)]
    content: Content,
}

/// The `execute_request` in a kernel message, if it is one.
pub fn execute_request(msg: &Message<'_>, protocol: Protocol) -> Option<Execute> {
    let bytes = match msg {
        Message::Text(b) | Message::Binary(b) => *b,
        Message::Oversize { .. } | Message::Compressed => return None,
    };
    // Most messages (comm, kernel_info, completion) are not: no parse.
    memchr::memmem::find(bytes, NEEDLE)?;
    let (header, content) = match (msg, protocol) {
        (Message::Text(_), _) => {
            let m: JsonMessage = serde_json::from_slice(bytes).ok()?;
            (m.header, m.content)
        }
        (_, Protocol::V1) => {
            let parts = v1_parts(bytes)?;
            let header: Header = serde_json::from_slice(parts.get(1)?).ok()?;
            let content: Content = serde_json::from_slice(parts.get(4)?).ok()?;
            (header, content)
        }
        (_, Protocol::Legacy) => {
            let m: JsonMessage = serde_json::from_slice(legacy_first_buffer(bytes)?).ok()?;
            (m.header, m.content)
        }
    };
    (header.msg_type == "execute_request").then(|| Execute {
        code: content.code.unwrap_or_default(),
        msg_id: header.msg_id,
        session: header.session,
    })
}

/// v1 parts: `[channel, header, parent_header, metadata, content,
/// buffers…]`, each checked to lie inside the message.
fn v1_parts(b: &[u8]) -> Option<Vec<&[u8]>> {
    let word = |i: usize| -> Option<u64> {
        let s = b.get(i * 8..i * 8 + 8)?;
        Some(u64::from_le_bytes(s.try_into().ok()?))
    };
    let n = usize::try_from(word(0)?).ok()?;
    if !(2..=1024).contains(&n) {
        return None;
    }
    let offsets: Vec<usize> = (1..=n)
        .map(|i| word(i).and_then(|o| usize::try_from(o).ok()))
        .collect::<Option<_>>()?;
    let mut parts = Vec::with_capacity(n - 1);
    for w in offsets.windows(2) {
        parts.push(b.get(w[0]..w[1])?);
    }
    Some(parts)
}

/// The message JSON of a legacy binary message (its first buffer).
fn legacy_first_buffer(b: &[u8]) -> Option<&[u8]> {
    let word = |i: usize| -> Option<usize> {
        let s = b.get(i * 4..i * 4 + 4)?;
        usize::try_from(u32::from_be_bytes(s.try_into().ok()?)).ok()
    };
    let nbufs = word(0)?;
    if !(1..=1024).contains(&nbufs) {
        return None;
    }
    let start = word(1)?;
    let end = if nbufs > 1 { word(2)? } else { b.len() };
    b.get(start..end)
}

/// The text of a terminal `["stdin", text]` message.
pub fn terminal_stdin(msg: &Message<'_>) -> Option<String> {
    let Message::Text(b) = msg else {
        return None;
    };
    let (kind, text): (String, String) = serde_json::from_slice(b).ok()?;
    (kind == "stdin").then_some(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A masked client frame.
    pub(crate) fn frame(opcode: u8, fin: bool, payload: &[u8]) -> Vec<u8> {
        let mask = [0x12, 0x34, 0x56, 0x78];
        let mut f = vec![opcode | if fin { 0x80 } else { 0 }];
        match payload.len() {
            n if n < 126 => f.push(0x80 | n as u8),
            n if n <= 0xFFFF => {
                f.push(0x80 | 126);
                f.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                f.push(0x80 | 127);
                f.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        f.extend_from_slice(&mask);
        f.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        f
    }

    fn messages(bytes: &[u8], piece: usize) -> Vec<(bool, Vec<u8>)> {
        let mut frames = Frames::default();
        let mut out = Vec::new();
        for chunk in bytes.chunks(piece) {
            frames.feed(chunk, &mut |m| match m {
                Message::Text(b) => out.push((false, b.to_vec())),
                Message::Binary(b) => out.push((true, b.to_vec())),
                other => panic!("{other:?}"),
            });
        }
        out
    }

    fn execute_json(code: &str) -> String {
        serde_json::json!({
            "header": {"msg_id": "m1", "msg_type": "execute_request", "session": "s1",
                       "username": "u", "date": "", "version": "5.3"},
            "parent_header": {}, "metadata": {}, "channel": "shell",
            "content": {"code": code, "silent": false}, "buffers": []
        })
        .to_string()
    }

    /// A v1 message as jupyter_server's `serialize_msg_to_ws_v1` makes it.
    pub(crate) fn v1(channel: &str, parts: &[&[u8]]) -> Vec<u8> {
        let mut offsets = vec![8 * (1 + 1 + parts.len() as u64 + 1)];
        offsets.push(offsets[0] + channel.len() as u64);
        for p in parts {
            offsets.push(offsets.last().copied().unwrap_or(0) + p.len() as u64);
        }
        let mut out = (offsets.len() as u64).to_le_bytes().to_vec();
        for o in &offsets {
            out.extend_from_slice(&o.to_le_bytes());
        }
        out.extend_from_slice(channel.as_bytes());
        for p in parts {
            out.extend_from_slice(p);
        }
        out
    }

    #[test]
    fn fragmented_masked_messages_are_reassembled_around_control_frames() {
        let mut bytes = frame(1, false, b"hel");
        bytes.extend(frame(9, true, b"ping"));
        bytes.extend(frame(0, true, b"lo"));
        bytes.extend(frame(2, true, &[0u8; 300]));
        bytes.extend(frame(1, true, b""));
        for piece in [1, 3, 1000] {
            let got = messages(&bytes, piece);
            assert_eq!(got.len(), 3, "piece {piece}");
            assert_eq!(got[0], (false, b"hello".to_vec()));
            assert_eq!(got[1], (true, vec![0u8; 300]));
            assert_eq!(got[2], (false, vec![]));
        }
    }

    #[test]
    fn execute_requests_are_found_in_all_three_shapes() {
        let text = execute_json("print('héllo')\n1+1");
        let e = execute_request(&Message::Text(text.as_bytes()), Protocol::Legacy).expect("text");
        assert_eq!(e.code, "print('héllo')\n1+1");
        assert_eq!(e.msg_id.as_deref(), Some("m1"));

        let header = br#"{"msg_id":"m2","msg_type":"execute_request","session":"s2"}"#;
        let content = br#"{"code":"x = 42","silent":false}"#;
        let bin = v1("shell", &[header, b"{}", b"{}", content]);
        let e = execute_request(&Message::Binary(&bin), Protocol::V1).expect("v1");
        assert_eq!(
            (e.code.as_str(), e.session.as_deref()),
            ("x = 42", Some("s2"))
        );

        let json = execute_json("legacy()");
        let mut legacy = 2u32.to_be_bytes().to_vec();
        let start = 12u32;
        legacy.extend_from_slice(&start.to_be_bytes());
        legacy.extend_from_slice(&(start + json.len() as u32).to_be_bytes());
        legacy.extend_from_slice(json.as_bytes());
        legacy.extend_from_slice(b"buffer");
        let e = execute_request(&Message::Binary(&legacy), Protocol::Legacy).expect("legacy");
        assert_eq!(e.code, "legacy()");

        let other = br#"{"header":{"msg_type":"comm_msg"},"content":{"code":"execute_request"}}"#;
        assert_eq!(
            execute_request(&Message::Text(other), Protocol::Legacy),
            None
        );
        let short = v1("shell", &[header]);
        assert_eq!(
            execute_request(&Message::Binary(&short), Protocol::V1),
            None
        );
        let mut lying = bin.clone();
        lying[8..16].copy_from_slice(&u64::MAX.to_le_bytes());
        assert_eq!(
            execute_request(&Message::Binary(&lying), Protocol::V1),
            None
        );
    }

    #[test]
    fn an_oversize_message_is_reported_with_whether_it_executes() {
        let code = "x".repeat(MAX_MESSAGE + 10);
        let bytes = frame(1, true, execute_json(&code).as_bytes());
        let mut frames = Frames::default();
        let mut got = Vec::new();
        for chunk in bytes.chunks(8192) {
            frames.feed(chunk, &mut |m| {
                if let Message::Oversize { execute, .. } = m {
                    got.push(execute);
                }
            });
        }
        assert_eq!(got, [true]);
    }

    #[test]
    fn terminal_input_is_read_from_stdin_messages_only() {
        let m = br#"["stdin", "ls -l\r"]"#;
        assert_eq!(
            terminal_stdin(&Message::Text(m)).as_deref(),
            Some("ls -l\r")
        );
        assert_eq!(
            terminal_stdin(&Message::Text(br#"["set_size", 24, 80]"#)),
            None
        );
    }
}
