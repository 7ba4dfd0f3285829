//! The operation audit: what users did through nbgate (opened, saved,
//! uploaded, renamed, deleted files; started, restarted, interrupted, shut
//! down kernels; opened and closed terminals; optionally the code they ran
//! and the lines they typed), as events with the user, the client address,
//! the time and the outcome.
//!
//! Every event goes to the log on target `nbgate::audit`; with `[audit]
//! file` it is also appended to a tamper-evident JSON-lines file. The field
//! names are stable (docs/audit.md): tools parse them.
//!
//! Submodules: `classify` (an HTTP request to Jupyter → the operation it
//! is), `json_scan` (the fields of a JSON body as it streams, in bounded
//! memory), `body` (the request-body tee and the pending event of one
//! request), `kernel_frames` (the code of `execute_request` messages and
//! terminal input in the WebSocket frames a client sends), `tap` (those
//! frames observed on a tunnel without changing them), `file` (the chained
//! writer with rotation), `verify` (`nbgate audit verify` and `show`).
//!
//! Auditing observes and never changes what Jupyter receives: bodies and
//! frames are forwarded byte for byte, and nothing here can refuse or delay
//! a request beyond the time to look at its bytes. Imports `config`,
//! `metrics` and `ws_frame` only.

pub mod body;
pub mod classify;
pub mod file;
pub mod json_scan;
pub mod kernel_frames;
pub mod tap;
pub mod verify;

use std::net::IpAddr;
use std::sync::OnceLock;

use serde::{Deserialize, Serialize};

pub use self::file::AuditFileError;

/// One audited operation. Field names and `kind` values are stable
/// (docs/audit.md); absent fields are left out of the JSON line.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// UTC, RFC 3339 with milliseconds (`2025-01-31T12:00:00.123Z`): one
    /// format, so times compare as strings.
    pub time: String,
    /// What happened: `file_open`, `kernel_start`, `code_execute`, …
    pub kind: String,
    /// The authenticated user.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub user: String,
    /// `session` or `token`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub auth: String,
    /// The session id's prefix or the token's id (never a secret).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub auth_id: String,
    /// The client address (behind a trusted proxy, the one it named).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub client: String,
    /// Jupyter's answer to the request (its HTTP status).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// The file or directory, relative to Jupyter's root.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// A rename's new path; a copy's new file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    /// A copy's source.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// Size of the content sent (an upload's total over its chunks).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes: Option<u64>,
    /// `file`, `notebook` or `directory`, when the request says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_type: Option<String>,
    /// An export's format (`html`, `pdf`, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint: Option<String>,
    /// The kernel's id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel: Option<String>,
    /// The kernel's spec name (`python3`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel_name: Option<String>,
    /// A Jupyter session's id (`/api/sessions`), or the client session of
    /// a kernel message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<String>,
    /// A terminal's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub terminal: Option<String>,
    /// The kernel message's id (`code_execute`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub msg_id: Option<String>,
    /// The code run, or the line typed, up to `audit.code_max_bytes`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    /// The whole code's (or line's) size in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code_bytes: Option<u64>,
    /// SHA-256 (hex) of the whole code or line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code_sha256: Option<String>,
    /// Set when `code` holds only the start.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub code_truncated: bool,
    /// Events lost before this one (`audit_lost`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<u64>,
}

/// Who did it: the parts of an authenticated request an event names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor {
    pub user: String,
    /// `session` or `token`.
    pub auth: &'static str,
    pub auth_id: String,
    pub client: IpAddr,
}

impl Event {
    /// An event of `kind` by `actor`, stamped now.
    pub fn new(kind: &str, actor: &Actor) -> Event {
        Event {
            time: now(),
            kind: kind.to_owned(),
            user: actor.user.clone(),
            auth: actor.auth.to_owned(),
            auth_id: actor.auth_id.clone(),
            client: actor.client.to_string(),
            ..Event::default()
        }
    }
}

/// The time now as events write it.
pub fn now() -> String {
    humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string()
}

/// The audit file's writer, when `[audit] file` is set (set once, by
/// `start`).
static FILE: OnceLock<file::Writer> = OnceLock::new();

/// Opens the audit file of `config` (when one is set) and starts its
/// writer thread; its first event says nbgate started. Call once, before
/// serving.
///
/// # Errors
/// The file or its directory cannot be opened or read (its last line is
/// where the chain continues).
pub fn start(config: &crate::config::AuditConfig) -> Result<(), AuditFileError> {
    let Some(path) = &config.file else {
        return Ok(());
    };
    let writer = file::Writer::open(path, config.max_size, config.keep)?;
    let mut started = Event {
        time: now(),
        kind: "audit_start".into(),
        ..Event::default()
    };
    started.path = Some(path.display().to_string());
    writer.send(started);
    let _ = FILE.set(writer);
    Ok(())
}

/// Waits (a few seconds at most) until every event recorded so far is in
/// the audit file and on disk: called at shutdown.
pub fn flush() {
    if let Some(w) = FILE.get() {
        w.flush(std::time::Duration::from_secs(5));
    }
}

/// Records one event: to the log (target `nbgate::audit`) and, when
/// configured, to the audit file. Never blocks: see `file::Writer::send`.
pub fn record(e: Event) {
    log(&e);
    if let Some(w) = FILE.get() {
        w.send(e);
    }
}

fn log(e: &Event) {
    fn opt(v: &Option<String>) -> Option<&str> {
        v.as_deref()
    }
    fn some(v: &str) -> Option<&str> {
        (!v.is_empty()).then_some(v)
    }
    tracing::info!(
        target: "nbgate::audit",
        event = %e.kind,
        user = some(&e.user),
        auth = some(&e.auth),
        auth_id = some(&e.auth_id),
        client = some(&e.client),
        status = e.status,
        path = opt(&e.path),
        to = opt(&e.to),
        from = opt(&e.from),
        bytes = e.bytes,
        file_type = opt(&e.file_type),
        format = opt(&e.format),
        checkpoint = opt(&e.checkpoint),
        kernel = opt(&e.kernel),
        kernel_name = opt(&e.kernel_name),
        session = opt(&e.session),
        terminal = opt(&e.terminal),
        msg_id = opt(&e.msg_id),
        code = opt(&e.code),
        code_bytes = e.code_bytes,
        code_sha256 = opt(&e.code_sha256),
        code_truncated = e.code_truncated.then_some(true),
        "operation"
    );
}

/// Hex SHA-256 of `data`.
pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(ring::digest::digest(&ring::digest::SHA256, data).as_ref())
}

/// The first `max` bytes of `text`, cut at a character boundary, and
/// whether anything was cut.
pub fn truncate(text: &str, max: usize) -> (&str, bool) {
    if text.len() <= max {
        return (text, false);
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    (&text[..end], true)
}

/// Percent-decodes a URL path (lossy UTF-8): events name files as users
/// see them. `+` stays a `+` (it is not a space in a path).
pub fn decode_path(p: &str) -> String {
    let b = p.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            let hex = std::str::from_utf8(&b[i + 1..i + 3])
                .ok()
                .and_then(|h| u8::from_str_radix(h, 16).ok());
            if let Some(v) = hex {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_percent_decoded_and_plus_stays() {
        assert_eq!(decode_path("a%20b/c+d.txt"), "a b/c+d.txt");
        assert_eq!(decode_path("%C3%A9t%C3%A9.ipynb"), "été.ipynb");
        assert_eq!(decode_path("bad%zz%"), "bad%zz%");
        assert_eq!(decode_path("end%4"), "end%4");
        assert_eq!(decode_path("%41"), "A");
    }

    #[test]
    fn truncation_keeps_whole_characters() {
        assert_eq!(truncate("héllo", 2), ("h", true));
        assert_eq!(truncate("héllo", 3), ("hé", true));
        assert_eq!(truncate("abc", 3), ("abc", false));
    }

    #[test]
    fn an_event_serializes_without_absent_fields() {
        let actor = Actor {
            user: "ann".into(),
            auth: "session",
            auth_id: "abcd1234".into(),
            client: "127.0.0.1".parse().expect("ip"),
        };
        let mut e = Event::new("file_delete", &actor);
        e.time = "2025-01-01T00:00:00.000Z".into();
        e.path = Some("a.txt".into());
        e.status = Some(204);
        assert_eq!(
            serde_json::to_string(&e).expect("json"),
            r#"{"time":"2025-01-01T00:00:00.000Z","kind":"file_delete","user":"ann","auth":"session","auth_id":"abcd1234","client":"127.0.0.1","status":204,"path":"a.txt"}"#
        );
    }
}
