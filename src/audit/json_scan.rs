//! The scalar fields of a JSON object as its bytes stream past, in
//! bounded memory: what the audit needs from a request body (a rename's
//! new path, a kernel's name, an upload's chunk number and content size)
//! without holding the body, which may be a large upload.
//!
//! Fields at depth 1 and 2 are kept under dotted keys (`path`,
//! `kernel.name`); a string keeps its first `KEEP` bytes and counts all of
//! them. Deeper values, arrays and anything past `MAX_FIELDS` are skipped
//! but still walked. The input is whatever a client sent: the scanner
//! never fails loudly and never allocates beyond its bounds; malformed
//! input leaves it `failed` (and it stops looking).

/// String bytes kept per value.
const KEEP: usize = 4096;
/// Fields kept per body.
const MAX_FIELDS: usize = 32;
/// Nesting followed; deeper input is malformed for the audit's purpose.
const MAX_DEPTH: usize = 64;
/// Key bytes kept; a longer key is not one the audit looks for.
const MAX_KEY: usize = 64;
/// Bytes of a number or literal kept.
const MAX_BARE: usize = 32;

/// A scalar value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// The string's text (its first `KEEP` bytes as sent, unescaped).
    Str(String),
    /// A number or literal as written (`-1`, `true`, `null`).
    Bare(String),
    /// An object or array at depth 1 (a notebook's `content`): only its
    /// size as sent (`Field::len`) is kept.
    Container,
}

/// One field found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field {
    /// Dotted path: `name`, `kernel.name`.
    pub key: String,
    pub value: Value,
    /// A string's length as sent, in bytes (escapes counted as written).
    pub len: u64,
    /// `=` padding at a string's end (its base64 decoded size is
    /// `len / 4 * 3 - padding`).
    pub padding: u8,
}

#[derive(Debug)]
enum Container {
    Object {
        expect_key: bool,
        /// The key of the value being read, if kept.
        key: Option<String>,
    },
    Array,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lex {
    Between,
    Str { escape: bool, is_key: bool },
    Bare,
}

/// The scanner (feed it the body's chunks in order).
#[derive(Debug)]
pub struct Scanner {
    stack: Vec<Container>,
    lex: Lex,
    /// Raw bytes of the current string (up to `KEEP`) or bare token.
    buf: Vec<u8>,
    len: u64,
    /// The current string's last two bytes (base64 padding).
    tail: [u8; 2],
    fields: Vec<Field>,
    done: bool,
    failed: bool,
    /// Bytes consumed so far.
    pos: u64,
    /// Where the depth-1 container being read started.
    container_start: u64,
}

impl Default for Scanner {
    fn default() -> Self {
        Scanner {
            stack: Vec::new(),
            lex: Lex::Between,
            buf: Vec::new(),
            len: 0,
            tail: [0; 2],
            fields: Vec::new(),
            done: false,
            failed: false,
            pos: 0,
            container_start: 0,
        }
    }
}

impl Scanner {
    /// The fields found so far.
    pub fn fields(&self) -> &[Field] {
        &self.fields
    }

    pub fn get(&self, key: &str) -> Option<&Field> {
        self.fields.iter().find(|f| f.key == key)
    }

    /// A string field's text.
    pub fn str(&self, key: &str) -> Option<&str> {
        match &self.get(key)?.value {
            Value::Str(s) => Some(s),
            Value::Bare(_) | Value::Container => None,
        }
    }

    /// An integer field.
    pub fn int(&self, key: &str) -> Option<i64> {
        match &self.get(key)?.value {
            Value::Bare(b) => b.parse().ok(),
            Value::Str(_) | Value::Container => None,
        }
    }

    /// The top-level value ended.
    pub fn complete(&self) -> bool {
        self.done && !self.failed
    }

    /// Feeds the next bytes.
    pub fn feed(&mut self, mut data: &[u8]) {
        while !data.is_empty() && !self.failed {
            let used = match self.lex {
                Lex::Str { escape, is_key } => self.string_bytes(data, escape, is_key),
                Lex::Bare => {
                    let b = data[0];
                    if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'+' | b'.') {
                        if self.buf.len() < MAX_BARE {
                            self.buf.push(b);
                        }
                        1
                    } else {
                        self.end_bare();
                        0
                    }
                }
                Lex::Between => {
                    self.punct(data[0]);
                    1
                }
            };
            self.pos += used as u64;
            data = &data[used..];
        }
    }

    /// Consumes string bytes up to and including the closing quote;
    /// returns how many were used.
    fn string_bytes(&mut self, data: &[u8], mut escape: bool, is_key: bool) -> usize {
        let mut i = 0;
        while i < data.len() {
            if escape {
                escape = false;
                self.push_str_byte(data[i], is_key);
                i += 1;
                continue;
            }
            match memchr::memchr2(b'"', b'\\', &data[i..]) {
                None => {
                    for &b in &data[i..] {
                        self.push_str_byte(b, is_key);
                    }
                    self.lex = Lex::Str { escape, is_key };
                    return data.len();
                }
                Some(at) => {
                    for &b in &data[i..i + at] {
                        self.push_str_byte(b, is_key);
                    }
                    i += at;
                    if data[i] == b'\\' {
                        escape = true;
                        self.push_str_byte(b'\\', is_key);
                        i += 1;
                    } else {
                        self.end_string(is_key);
                        return i + 1;
                    }
                }
            }
        }
        self.lex = Lex::Str { escape, is_key };
        i
    }

    fn push_str_byte(&mut self, b: u8, is_key: bool) {
        let keep = if is_key { MAX_KEY + 1 } else { KEEP };
        if self.buf.len() < keep {
            self.buf.push(b);
        }
        self.len += 1;
        self.tail = [self.tail[1], b];
    }

    fn punct(&mut self, b: u8) {
        match b {
            b' ' | b'\t' | b'\r' | b'\n' => {}
            b'{' | b'[' => {
                if self.done || self.stack.len() >= MAX_DEPTH {
                    self.failed = true;
                    return;
                }
                if self.stack.len() == 1 {
                    self.container_start = self.pos;
                }
                self.stack.push(if b == b'{' {
                    Container::Object {
                        expect_key: true,
                        key: None,
                    }
                } else {
                    Container::Array
                });
            }
            b'}' | b']' => {
                let ok = matches!(
                    (self.stack.pop(), b),
                    (Some(Container::Object { .. }), b'}') | (Some(Container::Array), b']')
                );
                if !ok {
                    self.failed = true;
                } else if self.stack.is_empty() {
                    self.done = true;
                } else if self.stack.len() == 1 {
                    self.len = self.pos + 1 - self.container_start;
                    self.record(Value::Container, 0);
                }
            }
            b':' => match self.stack.last_mut() {
                Some(Container::Object { expect_key, .. }) if !*expect_key => {}
                _ => self.failed = true,
            },
            b',' => match self.stack.last_mut() {
                Some(Container::Object { expect_key, key }) => {
                    *expect_key = true;
                    *key = None;
                }
                Some(Container::Array) => {}
                None => self.failed = true,
            },
            b'"' => {
                let is_key = matches!(
                    self.stack.last(),
                    Some(Container::Object {
                        expect_key: true,
                        ..
                    })
                );
                if self.stack.is_empty() {
                    self.failed = true;
                    return;
                }
                self.buf.clear();
                self.len = 0;
                self.tail = [0; 2];
                self.lex = Lex::Str {
                    escape: false,
                    is_key,
                };
            }
            _ => {
                if self.stack.is_empty() {
                    self.failed = true;
                    return;
                }
                self.buf.clear();
                self.buf.push(b);
                self.lex = Lex::Bare;
            }
        }
    }

    fn end_string(&mut self, is_key: bool) {
        self.lex = Lex::Between;
        if is_key {
            let key = (self.buf.len() <= MAX_KEY)
                .then(|| String::from_utf8(unescape(&self.buf)).ok())
                .flatten();
            if let Some(Container::Object {
                expect_key,
                key: slot,
            }) = self.stack.last_mut()
            {
                *expect_key = false;
                *slot = key;
            }
            return;
        }
        let text = String::from_utf8_lossy(&unescape(&self.buf)).into_owned();
        let padding = self.tail.iter().rev().take_while(|&&b| b == b'=').count() as u8;
        self.record(Value::Str(text), padding);
    }

    fn end_bare(&mut self) {
        self.lex = Lex::Between;
        let text = String::from_utf8_lossy(&self.buf).into_owned();
        self.len = self.buf.len() as u64;
        self.record(Value::Bare(text), 0);
    }

    /// Keeps a scalar read at depth 1 or 2 under its dotted key.
    fn record(&mut self, value: Value, padding: u8) {
        if self.fields.len() >= MAX_FIELDS || self.stack.is_empty() || self.stack.len() > 2 {
            return;
        }
        let mut key = String::new();
        for c in &self.stack {
            match c {
                Container::Object { key: Some(k), .. } => {
                    if !key.is_empty() {
                        key.push('.');
                    }
                    key.push_str(k);
                }
                _ => return,
            }
        }
        self.fields.push(Field {
            key,
            value,
            len: self.len,
            padding,
        });
    }
}

/// JSON string escapes resolved (`\"`, `\n`, `\uXXXX` with surrogate
/// pairs); an escape cut off at the end of a kept prefix is dropped, a
/// malformed one kept as written.
fn unescape(raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        let b = raw[i];
        if b != b'\\' {
            out.push(b);
            i += 1;
            continue;
        }
        let Some(&e) = raw.get(i + 1) else { break };
        i += 2;
        let simple = match e {
            b'"' => Some(b'"'),
            b'\\' => Some(b'\\'),
            b'/' => Some(b'/'),
            b'b' => Some(8),
            b'f' => Some(12),
            b'n' => Some(b'\n'),
            b'r' => Some(b'\r'),
            b't' => Some(b'\t'),
            _ => None,
        };
        if let Some(c) = simple {
            out.push(c);
            continue;
        }
        if e != b'u' {
            out.extend_from_slice(&[b'\\', e]);
            continue;
        }
        let hex4 = |at: usize| {
            raw.get(at..at + 4)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u32::from_str_radix(h, 16).ok())
        };
        let Some(hi) = hex4(i) else { break };
        i += 4;
        let code = if (0xD800..0xDC00).contains(&hi) && raw.get(i..i + 2) == Some(b"\\u") {
            match hex4(i + 2) {
                Some(lo) if (0xDC00..0xE000).contains(&lo) => {
                    i += 6;
                    0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00)
                }
                _ => hi,
            }
        } else {
            hi
        };
        let c = char::from_u32(code).unwrap_or(char::REPLACEMENT_CHARACTER);
        let mut b = [0u8; 4];
        out.extend_from_slice(c.encode_utf8(&mut b).as_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan_in_pieces(json: &str, piece: usize) -> Scanner {
        let mut s = Scanner::default();
        for chunk in json.as_bytes().chunks(piece) {
            s.feed(chunk);
        }
        s
    }

    #[test]
    fn top_level_and_nested_scalars_are_found_whatever_the_chunking() {
        let json = r#"{"path": "dir/new name.txt", "kernel": {"name": "python3", "id": null},
                       "chunk": -1, "type": "file", "deep": {"a": {"b": "x"}}, "list": ["q"]}"#;
        for piece in [1, 2, 3, 7, 1000] {
            let s = scan_in_pieces(json, piece);
            assert!(s.complete(), "piece {piece}");
            assert_eq!(s.str("path"), Some("dir/new name.txt"));
            assert_eq!(s.str("kernel.name"), Some("python3"));
            assert_eq!(s.int("chunk"), Some(-1));
            assert_eq!(s.str("type"), Some("file"));
            assert!(s.get("deep.a.b").is_none());
            let list = s.get("list").expect("a container's size");
            assert_eq!((&list.value, list.len), (&Value::Container, 5));
        }
    }

    #[test]
    fn escapes_are_resolved_and_a_long_string_is_counted_not_kept() {
        let s = scan_in_pieces(r#"{"path":"a\"b\\c\u00e9\ud83d\ude00\n"}"#, 3);
        assert_eq!(s.str("path"), Some("a\"b\\cé😀\n"));
        let big = "QUJD".repeat(100_000) + "QQ==";
        let s = scan_in_pieces(&format!(r#"{{"content":"{big}","format":"base64"}}"#), 4096);
        let f = s.get("content").expect("content");
        assert_eq!(f.len, big.len() as u64);
        assert_eq!(f.padding, 2);
        match &f.value {
            Value::Str(t) => assert_eq!(t.len(), KEEP),
            other => panic!("{other:?}"),
        }
        assert_eq!(s.str("format"), Some("base64"));
    }

    #[test]
    fn malformed_input_fails_quietly() {
        for bad in ["[1,2]x{", "}", r#""top""#, "{\"a\":1]", &"[".repeat(100)] {
            let s = scan_in_pieces(bad, 1);
            assert!(!s.complete(), "{bad}");
        }
    }
}
