//! Which operation an HTTP request to Jupyter is: from the method and the
//! path (after the base URL) first, then, once Jupyter answered, from its
//! status, its `Location` header and the fields of the JSON bodies
//! (`json_scan`) into an `Event`.
//!
//! The routes are jupyter_server's own (2.x): `services/contents`,
//! `services/kernels`, `services/sessions`, `files`, `nbconvert` and
//! jupyter_server_terminals' `api_handlers`. Anything else is not an
//! operation (static files, pages, listings, status polls).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use http::Method;

use super::json_scan::Scanner;
use super::{decode_path, Actor, Event};

/// What a request is, as far as its request line tells.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum What {
    /// `GET /api/contents/<file>` with content.
    Open,
    /// `GET /files/<path>`.
    Download,
    /// `GET /nbconvert/<format>/<path>`.
    Export,
    /// `PUT /api/contents/<path>`: a save, an upload (or one chunk of it),
    /// or a new file; Jupyter's status and the body tell which.
    Put,
    /// `POST /api/contents/<dir>`: a new untitled file or a copy.
    Post,
    /// `PATCH /api/contents/<path>` `{"path": new}`.
    Rename,
    Delete,
    /// `POST /api/contents/<path>/checkpoints/<id>`.
    CheckpointRestore,
    KernelStart,
    KernelRestart,
    KernelInterrupt,
    KernelShutdown,
    SessionStart,
    SessionUpdate,
    SessionShutdown,
    TerminalOpen,
    TerminalClose,
}

impl What {
    /// Whether the event needs fields of the request's JSON body.
    pub fn wants_request_body(self) -> bool {
        matches!(
            self,
            What::Put
                | What::Post
                | What::Rename
                | What::KernelStart
                | What::SessionStart
                | What::SessionUpdate
                | What::TerminalOpen
        )
    }

    /// Whether the event needs fields of Jupyter's answer (a terminal's
    /// name is only there).
    pub fn wants_response_body(self) -> bool {
        self == What::TerminalOpen
    }
}

/// An operation recognized from the request line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Op {
    pub what: What,
    /// The file path, kernel id, session id or terminal name in the URL.
    pub target: Option<String>,
    /// An export's format, a checkpoint's id.
    pub extra: Option<String>,
}

/// A WebSocket whose frames the audit may look at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Channel {
    /// `/api/kernels/<id>/channels`.
    Kernel(String),
    /// `/terminals/websocket/<name>`.
    Terminal(String),
}

/// `path` relative to the base URL (no leading `/`), e.g.
/// `api/contents/a.txt`.
pub fn classify(method: &Method, path: &str, query: Option<&str>) -> Option<Op> {
    let op = |what, target: Option<&str>| {
        Some(Op {
            what,
            target: target.map(decode_path),
            extra: None,
        })
    };
    if let Some(rest) = under(path, "api/contents") {
        return contents(method, rest, query);
    }
    if let Some(rest) = under(path, "files") {
        return (*method == Method::GET && !rest.is_empty()).then(|| Op {
            what: What::Download,
            target: Some(decode_path(rest)),
            extra: None,
        });
    }
    if let Some(rest) = under(path, "nbconvert") {
        let (format, file) = rest.split_once('/')?;
        return (*method == Method::GET && !file.is_empty() && !format.is_empty()).then(|| Op {
            what: What::Export,
            target: Some(decode_path(file)),
            extra: Some(decode_path(format)),
        });
    }
    if let Some(rest) = under(path, "api/kernels") {
        let parts: Vec<&str> = rest.split('/').collect();
        return match (method, parts.as_slice()) {
            (&Method::POST, [""]) => op(What::KernelStart, None),
            (&Method::DELETE, [id]) if !id.is_empty() => op(What::KernelShutdown, Some(id)),
            (&Method::POST, [id, "restart"]) => op(What::KernelRestart, Some(id)),
            (&Method::POST, [id, "interrupt"]) => op(What::KernelInterrupt, Some(id)),
            _ => None,
        };
    }
    if let Some(rest) = under(path, "api/sessions") {
        return match (method, rest) {
            (&Method::POST, "") => op(What::SessionStart, None),
            (&Method::PATCH, id) if !id.is_empty() && !id.contains('/') => {
                op(What::SessionUpdate, Some(id))
            }
            (&Method::DELETE, id) if !id.is_empty() && !id.contains('/') => {
                op(What::SessionShutdown, Some(id))
            }
            _ => None,
        };
    }
    if let Some(rest) = under(path, "api/terminals") {
        return match (method, rest) {
            (&Method::POST, "") => op(What::TerminalOpen, None),
            (&Method::DELETE, name) if !name.is_empty() && !name.contains('/') => {
                op(What::TerminalClose, Some(name))
            }
            _ => None,
        };
    }
    None
}

/// The kernel or terminal a WebSocket path (relative to the base URL)
/// talks to.
pub fn websocket(path: &str) -> Option<Channel> {
    if let Some(rest) = under(path, "api/kernels") {
        let id = rest.strip_suffix("/channels")?;
        return (!id.is_empty() && !id.contains('/')).then(|| Channel::Kernel(decode_path(id)));
    }
    let name = under(path, "terminals/websocket")?;
    (!name.is_empty() && !name.contains('/')).then(|| Channel::Terminal(decode_path(name)))
}

/// What follows `prefix` in `path`: `""` for the prefix itself (with or
/// without a trailing `/`), the rest after `prefix/`, else `None`.
fn under<'a>(path: &'a str, prefix: &str) -> Option<&'a str> {
    let rest = path.strip_prefix(prefix)?;
    if rest.is_empty() {
        return Some("");
    }
    rest.strip_prefix('/')
}

fn contents(method: &Method, rest: &str, query: Option<&str>) -> Option<Op> {
    let rest = rest.trim_end_matches('/');
    // Jupyter routes checkpoints before plain paths: the same order here.
    if let Some((file, id)) = rest.rsplit_once("/checkpoints/") {
        return (*method == Method::POST && !id.is_empty() && !id.contains('/')).then(|| Op {
            what: What::CheckpointRestore,
            target: Some(decode_path(file)),
            extra: Some(decode_path(id)),
        });
    }
    if rest.ends_with("/checkpoints") || rest == "checkpoints" || rest.ends_with("/trust") {
        return None;
    }
    let what = match *method {
        Method::GET => {
            let param = |name: &str| {
                query.and_then(|q| {
                    form_urlencoded::parse(q.as_bytes())
                        .find(|(k, _)| k == name)
                        .map(|(_, v)| v.into_owned())
                })
            };
            if param("content").as_deref() == Some("0") {
                return None;
            }
            // A listing (the file browser polls its directory) is not an
            // operation. Documents are opened with `type=file|notebook`;
            // without a type, a last segment with a dot is taken for a
            // file (directories rarely have one).
            let opens = match param("type").as_deref() {
                Some("file" | "notebook") => true,
                Some(_) => false,
                None => rest
                    .rsplit('/')
                    .next()
                    .is_some_and(|last| last.contains('.')),
            };
            if !opens {
                return None;
            }
            What::Open
        }
        Method::PUT => What::Put,
        Method::POST => What::Post,
        Method::PATCH => What::Rename,
        Method::DELETE => What::Delete,
        _ => return None,
    };
    Some(Op {
        what,
        target: Some(decode_path(rest)),
        extra: None,
    })
}

/// What Jupyter answered, and the JSON fields of both bodies.
#[derive(Debug, Clone, Copy)]
pub struct Outcome<'a> {
    pub status: u16,
    /// Jupyter's `Location` (the created file, kernel or session).
    pub location: Option<&'a str>,
    pub request: Option<&'a Scanner>,
    pub response: Option<&'a Scanner>,
}

/// The event of `op`, once Jupyter answered; `None` for a chunk of an
/// upload that is not its last (the upload is one event, when its last
/// chunk lands, with the total size).
pub fn event(op: &Op, actor: &Actor, out: &Outcome<'_>) -> Option<Event> {
    let body = |key: &str| out.request.and_then(|s| s.str(key)).map(str::to_owned);
    let located = |marker: &str| {
        let loc = out.location?;
        let (_, rest) = loc.split_once(marker)?;
        let rest = rest.split(['?', '#']).next().unwrap_or(rest);
        Some(decode_path(rest))
    };
    let ok = (200..300).contains(&out.status);
    let e = |kind: &str| {
        let mut e = Event::new(kind, actor);
        e.status = Some(out.status);
        e
    };
    let ev = match op.what {
        What::Open => file_event(e("file_open"), op),
        What::Download => file_event(e("file_download"), op),
        What::Export => {
            let mut ev = file_event(e("file_export"), op);
            ev.format.clone_from(&op.extra);
            ev
        }
        What::Put => {
            let path = op.target.clone().unwrap_or_default();
            let scan = out.request;
            // A string's length, a notebook's JSON size, as sent.
            let size = scan.and_then(|s| s.get("content")).map(|c| {
                if scan.and_then(|s| s.str("format")) == Some("base64") {
                    (c.len / 4 * 3).saturating_sub(u64::from(c.padding))
                } else {
                    c.len
                }
            });
            let chunk = scan.and_then(|s| s.int("chunk"));
            let (kind, bytes) = match chunk {
                Some(n) if n != -1 => {
                    // A chunk of a JupyterLab upload (1, 2, … then -1).
                    if ok {
                        UPLOADS.add(&actor.user, &path, n == 1, size.unwrap_or(0));
                    }
                    return None;
                }
                Some(_) => {
                    let before = UPLOADS.finish(&actor.user, &path);
                    ("file_upload", Some(before + size.unwrap_or(0)))
                }
                None if out.status == 201 && size.is_some() => ("file_upload", size),
                None if out.status == 201 => ("file_create", None),
                None => ("file_save", size),
            };
            let mut ev = file_event(e(kind), op);
            ev.bytes = bytes;
            ev.file_type = body("type");
            ev
        }
        What::Post => {
            let created = located("api/contents/");
            match body("copy_from") {
                Some(from) => {
                    let mut ev = e("file_copy");
                    ev.from = Some(from);
                    ev.to = created;
                    ev.path.clone_from(&op.target);
                    ev
                }
                None => {
                    let mut ev = e("file_create");
                    ev.path = created.or_else(|| op.target.clone());
                    ev.file_type = body("type");
                    ev
                }
            }
        }
        What::Rename => {
            let mut ev = file_event(e("file_rename"), op);
            ev.to = body("path");
            ev
        }
        What::Delete => file_event(e("file_delete"), op),
        What::CheckpointRestore => {
            let mut ev = file_event(e("checkpoint_restore"), op);
            ev.checkpoint.clone_from(&op.extra);
            ev
        }
        What::KernelStart => {
            let mut ev = e("kernel_start");
            ev.kernel = located("api/kernels/");
            ev.kernel_name = body("name");
            ev
        }
        What::KernelRestart => kernel_event(e("kernel_restart"), op),
        What::KernelInterrupt => kernel_event(e("kernel_interrupt"), op),
        What::KernelShutdown => kernel_event(e("kernel_shutdown"), op),
        What::SessionStart | What::SessionUpdate => {
            let kind = if op.what == What::SessionStart {
                "session_start"
            } else {
                "session_update"
            };
            let mut ev = e(kind);
            ev.session = op.target.clone().or_else(|| located("api/sessions/"));
            ev.path = body("path");
            ev.kernel = body("kernel.id");
            ev.kernel_name = body("kernel.name");
            ev
        }
        What::SessionShutdown => {
            let mut ev = e("session_shutdown");
            ev.session.clone_from(&op.target);
            ev
        }
        What::TerminalOpen => {
            let mut ev = e("terminal_open");
            ev.terminal = out
                .response
                .and_then(|s| s.str("name"))
                .map(str::to_owned)
                .or_else(|| body("name"));
            ev
        }
        What::TerminalClose => {
            let mut ev = e("terminal_close");
            ev.terminal.clone_from(&op.target);
            ev
        }
    };
    Some(ev)
}

fn file_event(mut e: Event, op: &Op) -> Event {
    e.path.clone_from(&op.target);
    e
}

fn kernel_event(mut e: Event, op: &Op) -> Event {
    e.kernel.clone_from(&op.target);
    e
}

/// Uploads in progress: the bytes of the chunks landed so far, per user
/// and path. Bounded: an upload left unfinished for an hour is forgotten,
/// and past `MAX_UPLOADS` the oldest go.
struct Uploads(Mutex<Option<UploadMap>>);

/// (user, path) -> (bytes so far, last chunk's time).
type UploadMap = HashMap<(String, String), (u64, Instant)>;

const MAX_UPLOADS: usize = 1024;
const UPLOAD_TTL: Duration = Duration::from_secs(3600);

static UPLOADS: Uploads = Uploads(Mutex::new(None));

impl Uploads {
    fn add(&self, user: &str, path: &str, first: bool, bytes: u64) {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let map = map.get_or_insert_with(HashMap::new);
        if map.len() >= MAX_UPLOADS {
            map.retain(|_, (_, at)| at.elapsed() < UPLOAD_TTL);
            if map.len() >= MAX_UPLOADS {
                if let Some(oldest) = map
                    .iter()
                    .min_by_key(|(_, (_, at))| *at)
                    .map(|(k, _)| k.clone())
                {
                    map.remove(&oldest);
                }
            }
        }
        let entry = map
            .entry((user.to_owned(), path.to_owned()))
            .or_insert((0, Instant::now()));
        if first {
            entry.0 = 0;
        }
        entry.0 += bytes;
        entry.1 = Instant::now();
    }

    /// The bytes of the earlier chunks (forgotten now).
    fn finish(&self, user: &str, path: &str) -> u64 {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        map.as_mut()
            .and_then(|m| m.remove(&(user.to_owned(), path.to_owned())))
            .map_or(0, |(b, _)| b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn actor(user: &str) -> Actor {
        Actor {
            user: user.into(),
            auth: "token",
            auth_id: "0011223344556677".into(),
            client: "127.0.0.1".parse().expect("ip"),
        }
    }

    fn scan(json: &str) -> Scanner {
        let mut s = Scanner::default();
        s.feed(json.as_bytes());
        s
    }

    fn what(m: Method, p: &str, q: Option<&str>) -> Option<What> {
        classify(&m, p, q).map(|o| o.what)
    }

    #[test]
    fn jupyter_routes_are_classified() {
        use What::*;
        assert_eq!(
            what(
                Method::GET,
                "api/contents/a.txt",
                Some("type=file&content=1")
            ),
            Some(Open)
        );
        assert_eq!(what(Method::GET, "api/contents/nb.ipynb", None), Some(Open));
        assert_eq!(
            what(Method::GET, "api/contents/dir", Some("content=1&hash=0")),
            None
        );
        assert_eq!(
            what(Method::GET, "api/contents/a.txt", Some("content=0")),
            None
        );
        assert_eq!(what(Method::GET, "api/contents", None), None);
        assert_eq!(what(Method::PUT, "api/contents/a.txt", None), Some(Put));
        assert_eq!(what(Method::POST, "api/contents/dir", None), Some(Post));
        assert_eq!(
            what(Method::PATCH, "api/contents/a.txt", None),
            Some(Rename)
        );
        assert_eq!(
            what(Method::DELETE, "api/contents/a.txt", None),
            Some(Delete)
        );
        assert_eq!(
            what(Method::POST, "api/contents/a.ipynb/checkpoints", None),
            None
        );
        assert_eq!(
            classify(
                &Method::POST,
                "api/contents/d/a.ipynb/checkpoints/checkpoint",
                None
            ),
            Some(Op {
                what: CheckpointRestore,
                target: Some("d/a.ipynb".into()),
                extra: Some("checkpoint".into())
            })
        );
        assert_eq!(what(Method::GET, "files/d/a%20b.csv", None), Some(Download));
        assert_eq!(
            classify(
                &Method::GET,
                "nbconvert/html/nb.ipynb",
                Some("download=true")
            ),
            Some(Op {
                what: Export,
                target: Some("nb.ipynb".into()),
                extra: Some("html".into())
            })
        );
        let k = "6f1e0a6e-0b1c-4e8e-9f0a-2b3c4d5e6f70";
        assert_eq!(what(Method::POST, "api/kernels", None), Some(KernelStart));
        assert_eq!(what(Method::GET, "api/kernels", None), None);
        assert_eq!(
            what(Method::POST, &format!("api/kernels/{k}/restart"), None),
            Some(KernelRestart)
        );
        assert_eq!(
            what(Method::POST, &format!("api/kernels/{k}/interrupt"), None),
            Some(KernelInterrupt)
        );
        assert_eq!(
            what(Method::DELETE, &format!("api/kernels/{k}"), None),
            Some(KernelShutdown)
        );
        assert_eq!(what(Method::POST, "api/sessions", None), Some(SessionStart));
        assert_eq!(
            what(Method::PATCH, &format!("api/sessions/{k}"), None),
            Some(SessionUpdate)
        );
        assert_eq!(
            what(Method::DELETE, &format!("api/sessions/{k}"), None),
            Some(SessionShutdown)
        );
        assert_eq!(
            what(Method::POST, "api/terminals", None),
            Some(TerminalOpen)
        );
        assert_eq!(
            what(Method::DELETE, "api/terminals/1", None),
            Some(TerminalClose)
        );
        assert_eq!(what(Method::GET, "lab/tree/a.txt", None), None);
        assert_eq!(what(Method::GET, "api/contentsx/a.txt", None), None);
        assert_eq!(
            websocket(&format!("api/kernels/{k}/channels")),
            Some(Channel::Kernel(k.into()))
        );
        assert_eq!(
            websocket("terminals/websocket/1"),
            Some(Channel::Terminal("1".into()))
        );
        assert_eq!(websocket("api/events/subscribe"), None);
    }

    #[test]
    fn a_chunked_upload_is_one_event_with_the_total_size() {
        let op = classify(&Method::PUT, "api/contents/up/big.bin", None).expect("op");
        let a = actor("chunky");
        let chunk = |n: i64, b64: &str| {
            scan(&format!(
                r#"{{"type":"file","format":"base64","chunk":{n},"content":"{b64}"}}"#
            ))
        };
        let (c1, c2, last) = (chunk(1, "QUJD"), chunk(2, "QUJDRA=="), chunk(-1, "QQ=="));
        let out = |s| Outcome {
            status: 200,
            location: None,
            request: Some(s),
            response: None,
        };
        assert!(event(&op, &a, &out(&c1)).is_none());
        assert!(event(&op, &a, &out(&c2)).is_none());
        let e = event(&op, &a, &out(&last)).expect("event at the last chunk");
        assert_eq!(e.kind, "file_upload");
        assert_eq!(e.bytes, Some(3 + 4 + 1));
        assert_eq!(e.path.as_deref(), Some("up/big.bin"));
    }

    #[test]
    fn put_is_a_save_or_a_new_file_by_jupyters_status() {
        let op = classify(&Method::PUT, "api/contents/a.txt", None).expect("op");
        let body = scan(r#"{"type":"file","format":"text","content":"hello"}"#);
        let out = |status| Outcome {
            status,
            location: None,
            request: Some(&body),
            response: None,
        };
        let save = event(&op, &actor("ann"), &out(200)).expect("save");
        assert_eq!((save.kind.as_str(), save.bytes), ("file_save", Some(5)));
        let new = event(&op, &actor("ann"), &out(201)).expect("upload");
        assert_eq!(new.kind, "file_upload");
    }

    #[test]
    fn rename_create_and_kernel_start_take_fields_from_bodies_and_location() {
        let a = actor("ann");
        let op = classify(&Method::PATCH, "api/contents/old%20name.txt", None).expect("op");
        let body = scan(r#"{"path":"new name.txt"}"#);
        let e = event(
            &op,
            &a,
            &Outcome {
                status: 200,
                location: Some("/api/contents/new%20name.txt"),
                request: Some(&body),
                response: None,
            },
        )
        .expect("rename");
        assert_eq!(e.path.as_deref(), Some("old name.txt"));
        assert_eq!(e.to.as_deref(), Some("new name.txt"));

        let op = classify(&Method::POST, "api/kernels", None).expect("op");
        let body = scan(r#"{"name":"python3"}"#);
        let e = event(
            &op,
            &a,
            &Outcome {
                status: 201,
                location: Some("/base/api/kernels/abc-1"),
                request: Some(&body),
                response: None,
            },
        )
        .expect("start");
        assert_eq!(e.kernel.as_deref(), Some("abc-1"));
        assert_eq!(e.kernel_name.as_deref(), Some("python3"));

        let op = classify(&Method::POST, "api/contents/dir", None).expect("op");
        let body = scan(r#"{"type":"notebook"}"#);
        let e = event(
            &op,
            &a,
            &Outcome {
                status: 201,
                location: Some("/api/contents/dir/Untitled.ipynb"),
                request: Some(&body),
                response: None,
            },
        )
        .expect("create");
        assert_eq!(e.kind, "file_create");
        assert_eq!(e.path.as_deref(), Some("dir/Untitled.ipynb"));
    }
}
