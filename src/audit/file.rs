//! The audit file: events appended as JSON lines, each chained to the one
//! before, written by one thread fed through a bounded queue.
//!
//! # A line
//! `{"seq":N,<event fields>,"prev":"<hex>","hash":"<hex>"}`: `seq` counts
//! from 1 over the whole chain; `prev` is the previous line's `hash` (64
//! zeros for the first line); `hash` is the SHA-256 of the line's text up
//! to `"prev":"…"` and a closing `}`, i.e. the line without its own
//! `,"hash":"…"`. So a changed line no longer matches its `hash`, a line
//! whose `hash` was recomputed no longer matches the next line's `prev`,
//! and a removed or moved line breaks `seq` and `prev` (`verify`).
//!
//! # Rotation
//! Before a line would take the file past `max_size`, the file is synced
//! and renamed `FILE.1` (older ones shift to `.2` … `.keep`; the oldest
//! is removed), and a new `FILE` (mode 0600) continues the same chain:
//! its first line's `prev` is the last line's `hash` in `FILE.1`.
//!
//! # Durability (fsync policy)
//! The writer takes every queued event, writes them in one `write`, then
//! `fdatasync`s the file before taking more (group commit): after a crash
//! of the machine at most the batch being written is lost, and a crash of
//! nbgate alone loses only events still queued. A rotation syncs the file
//! and its directory. At shutdown nbgate waits (5 s at most) for the queue
//! to drain and sync.
//!
//! # When the queue is full
//! Events are dropped, never waited for: the request path must not stall
//! on a slow disk (an audit trail that blocks Jupyter would be turned off,
//! which loses more). Loss is visible three ways: a warning in the log
//! (at most one per 10 s), the metric `nbgate_audit_events_lost_total`, and
//! an `audit_lost` event with the `count` in the file itself, in the chain,
//! before the next event written. The same goes for events whose write
//! failed (a full disk).

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{sha256_hex, Event};

/// Events queued for the writer at most (a burst of JupyterLab activity
/// is a few hundred).
const QUEUE: usize = 8192;
/// Events written per batch at most (one write, one sync).
const BATCH: usize = 512;
/// The `prev` of a chain's first line.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";
/// How far back the last line is looked for when a file is opened.
const MAX_LINE: u64 = 64 << 20;

#[derive(Debug, thiserror::Error)]
pub enum AuditFileError {
    #[error("{}: cannot open the audit file", path.display())]
    Open {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{}: cannot read the audit file's last line", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot start the audit writer thread")]
    Thread(#[source] io::Error),
}

enum Msg {
    Event(Box<Event>),
    /// Answered once everything before it is written and synced.
    Flush(SyncSender<()>),
}

/// The handle the request path sends events to.
pub struct Writer {
    tx: SyncSender<Msg>,
    lost: Arc<AtomicU64>,
    /// When a loss was last warned about (ms since `base`).
    warned_ms: AtomicU64,
    base: Instant,
}

impl Writer {
    /// Opens (or creates, mode 0600, its directory 0700) the file, finds
    /// where its chain ends, and starts the writer thread.
    ///
    /// # Errors
    /// The file cannot be opened or its last line read.
    pub fn open(path: &Path, max_size: u64, keep: usize) -> Result<Writer, AuditFileError> {
        let chain = Chain::resume(path, max_size, keep)?;
        let (tx, rx) = mpsc::sync_channel(QUEUE);
        let lost = Arc::new(AtomicU64::new(0));
        let thread_lost = Arc::clone(&lost);
        std::thread::Builder::new()
            .name("nbgate-audit".into())
            .spawn(move || run(chain, &rx, &thread_lost))
            .map_err(AuditFileError::Thread)?;
        Ok(Writer {
            tx,
            lost,
            warned_ms: AtomicU64::new(0),
            base: Instant::now(),
        })
    }

    /// Queues an event; never blocks (see the module doc for a full queue).
    pub fn send(&self, e: Event) {
        if let Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) =
            self.tx.try_send(Msg::Event(Box::new(e)))
        {
            self.lose(1);
        }
    }

    fn lose(&self, n: u64) {
        self.lost.fetch_add(n, Ordering::Relaxed);
        crate::metrics::audit_lost(n);
        let now = self.base.elapsed().as_millis() as u64 + 10_000;
        let last = self.warned_ms.load(Ordering::Relaxed);
        if now >= last + 10_000
            && self
                .warned_ms
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            tracing::warn!(
                target: "nbgate::audit",
                "audit file queue full: events dropped (counted in the file as audit_lost)"
            );
        }
    }

    /// Waits up to `limit` for every event sent so far to be on disk.
    pub fn flush(&self, limit: Duration) {
        let (tx, rx) = mpsc::sync_channel(1);
        if self.tx.send(Msg::Flush(tx)).is_ok() {
            let _ = rx.recv_timeout(limit);
        }
    }
}

/// The writer thread: batches, writes, syncs, until every sender is gone.
fn run(mut chain: Chain, rx: &Receiver<Msg>, lost: &AtomicU64) {
    let mut failing_since: Option<Instant> = None;
    while let Ok(first) = rx.recv() {
        let mut events = Vec::new();
        let mut flushes = Vec::new();
        let mut next = Some(first);
        while let Some(msg) = next.take() {
            match msg {
                Msg::Event(e) => events.push(*e),
                Msg::Flush(done) => flushes.push(done),
            }
            if events.len() < BATCH {
                next = rx.try_recv().ok();
            }
        }
        let missed = lost.swap(0, Ordering::Relaxed);
        if missed > 0 {
            let mut e = Event {
                time: super::now(),
                kind: "audit_lost".into(),
                ..Event::default()
            };
            e.count = Some(missed);
            events.insert(0, e);
        }
        let n = events.len() as u64;
        match chain.append(&events) {
            Ok(()) => {
                crate::metrics::audit_written(n);
                failing_since = None;
            }
            Err(err) => {
                // Counted as lost: the next batch that lands says so.
                let dropped = n - u64::from(missed > 0);
                lost.fetch_add(dropped + missed, Ordering::Relaxed);
                crate::metrics::audit_lost(dropped);
                if failing_since.is_none_or(|t| t.elapsed() > Duration::from_secs(10)) {
                    tracing::error!(target: "nbgate::audit", path = %chain.path.display(), error = %err, "cannot write the audit file: events lost");
                    failing_since = Some(Instant::now());
                }
            }
        }
        for done in flushes {
            let _ = done.send(());
        }
    }
}

/// The open file and where its chain is.
struct Chain {
    path: PathBuf,
    file: File,
    size: u64,
    seq: u64,
    prev: String,
    max_size: u64,
    keep: usize,
}

impl Chain {
    /// Opens `path` for appending and finds the last line of the chain
    /// (in `path`, or in `path.1` when `path` is new or empty).
    fn resume(path: &Path, max_size: u64, keep: usize) -> Result<Chain, AuditFileError> {
        let open_err = |source| AuditFileError::Open {
            path: path.to_owned(),
            source,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(open_err)?;
        }
        let mut file = open_append(path).map_err(open_err)?;
        let read_err = |source| AuditFileError::Read {
            path: path.to_owned(),
            source,
        };
        let size = file.metadata().map_err(read_err)?.len();
        let (mut seq, mut prev) = (0, GENESIS.to_owned());
        let mut last = last_line(&mut file).map_err(read_err)?;
        if last.is_none() {
            let older = rotated(path, 1);
            if let Ok(mut f) = File::open(&older) {
                last = last_line(&mut f).map_err(read_err)?;
            }
        }
        if let Some((line, complete)) = last {
            if !complete {
                // A line cut short (the machine stopped mid-write): it
                // stays, as `verify` will show; the chain goes on after it.
                file.write_all(b"\n").map_err(read_err)?;
                tracing::warn!(target: "nbgate::audit", path = %path.display(), "the audit file's last line is incomplete (an interrupted write): the chain continues after it");
            }
            match parse_chained(&line) {
                Some((s, h)) => (seq, prev) = (s, h.to_owned()),
                None => {
                    tracing::warn!(target: "nbgate::audit", path = %path.display(), "the audit file's last line is not a valid audit line: the chain continues from its hash");
                    prev = sha256_hex(&line);
                }
            }
        }
        Ok(Chain {
            path: path.to_owned(),
            file,
            size,
            seq,
            prev,
            max_size,
            keep,
        })
    }

    /// Writes `events` (rotating when a line would pass `max_size`) and
    /// syncs.
    fn append(&mut self, events: &[Event]) -> io::Result<()> {
        let mut buf = Vec::new();
        for e in events {
            let (line, hash) = chain_line(self.seq + 1, &self.prev, e);
            let written = self.size + buf.len() as u64;
            if written > 0 && written + line.len() as u64 + 1 > self.max_size {
                self.file.write_all(&buf)?;
                buf.clear();
                self.rotate()?;
            }
            buf.extend_from_slice(line.as_bytes());
            buf.push(b'\n');
            self.seq += 1;
            self.prev = hash;
        }
        self.file.write_all(&buf)?;
        self.size += buf.len() as u64;
        self.file.sync_data()
    }

    fn rotate(&mut self) -> io::Result<()> {
        self.file.sync_all()?;
        if self.keep == 0 {
            std::fs::remove_file(&self.path)?;
        } else {
            let _ = std::fs::remove_file(rotated(&self.path, self.keep));
            for i in (1..self.keep).rev() {
                let from = rotated(&self.path, i);
                if from.exists() {
                    std::fs::rename(&from, rotated(&self.path, i + 1))?;
                }
            }
            std::fs::rename(&self.path, rotated(&self.path, 1))?;
        }
        self.file = open_append(&self.path)?;
        self.size = 0;
        if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            File::open(dir)?.sync_all()?;
        }
        Ok(())
    }
}

fn open_append(path: &Path) -> io::Result<File> {
    let file = OpenOptions::new()
        .append(true)
        .read(true)
        .create(true)
        .mode(0o600)
        .open(path)?;
    // An existing file made by hand keeps no wider mode than a new one.
    file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    Ok(file)
}

/// `FILE.n`.
pub fn rotated(path: &Path, n: usize) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".{n}"));
    PathBuf::from(name)
}

/// The line for `e` at `seq` after `prev`, and its hash.
pub fn chain_line(seq: u64, prev: &str, e: &Event) -> (String, String) {
    let json = serde_json::to_string(e).expect("an event always serializes");
    let fields = &json[1..json.len() - 1];
    let mut line = format!("{{\"seq\":{seq},{fields},\"prev\":\"{prev}\"}}");
    let hash = sha256_hex(line.as_bytes());
    line.pop();
    line.push_str(",\"hash\":\"");
    line.push_str(&hash);
    line.push_str("\"}");
    (line, hash)
}

/// A line's hashed text (without its `hash` field) and its `hash`, when
/// it ends as a chained line does.
pub fn split_hash(line: &[u8]) -> Option<(Vec<u8>, &str)> {
    const TAIL: usize = ",\"hash\":\"".len() + 64 + "\"}".len();
    let cut = line.len().checked_sub(TAIL)?;
    let (body, tail) = line.split_at(cut);
    let hash = std::str::from_utf8(tail.strip_prefix(b",\"hash\":\"")?.strip_suffix(b"\"}")?)
        .ok()
        .filter(|h| {
            h.bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        })?;
    let mut hashed = body.to_vec();
    hashed.push(b'}');
    Some((hashed, hash))
}

/// `seq` and `hash` of a valid chained line (its hash checked).
fn parse_chained(line: &[u8]) -> Option<(u64, &str)> {
    let (hashed, hash) = split_hash(line)?;
    if sha256_hex(&hashed) != hash {
        return None;
    }
    #[derive(serde::Deserialize)]
    struct Seq {
        seq: u64,
    }
    let s: Seq = serde_json::from_slice(line).ok()?;
    Some((s.seq, hash))
}

/// The last line of `file` (without its newline) and whether it ended
/// with one; `None` for an empty file.
fn last_line(file: &mut File) -> io::Result<Option<(Vec<u8>, bool)>> {
    let len = file.seek(SeekFrom::End(0))?;
    if len == 0 {
        return Ok(None);
    }
    let mut tail = Vec::new();
    let mut pos = len;
    let complete;
    loop {
        let step = pos.min(64 * 1024);
        pos -= step;
        let mut chunk = vec![0; step as usize];
        file.seek(SeekFrom::Start(pos))?;
        file.read_exact(&mut chunk)?;
        chunk.extend_from_slice(&tail);
        tail = chunk;
        let body_end = if tail.last() == Some(&b'\n') && pos + tail.len() as u64 == len {
            tail.len() - 1
        } else {
            tail.len()
        };
        if let Some(nl) = memchr::memrchr(b'\n', &tail[..body_end]) {
            complete = body_end < tail.len();
            let line = tail[nl + 1..body_end].to_vec();
            return Ok(Some((line, complete)));
        }
        if pos == 0 || len - pos > MAX_LINE {
            complete = body_end < tail.len();
            return Ok(Some((tail[..body_end].to_vec(), complete)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(kind: &str) -> Event {
        Event {
            time: "2025-01-01T00:00:00.000Z".into(),
            kind: kind.into(),
            user: "ann".into(),
            ..Event::default()
        }
    }

    #[test]
    fn a_line_carries_its_hash_and_the_previous_one() {
        let (line, hash) = chain_line(1, GENESIS, &event("file_open"));
        assert!(line.starts_with("{\"seq\":1,\"time\":"), "{line}");
        assert!(line.ends_with(&format!(",\"prev\":\"{GENESIS}\",\"hash\":\"{hash}\"}}")));
        let (hashed, h) = split_hash(line.as_bytes()).expect("chained");
        assert_eq!(h, hash);
        assert_eq!(sha256_hex(&hashed), hash);
        assert_eq!(parse_chained(line.as_bytes()), Some((1, hash.as_str())));
        let edited = line.replace("ann", "bob");
        assert_eq!(parse_chained(edited.as_bytes()), None);
        let v: serde_json::Value = serde_json::from_str(&line).expect("valid JSON");
        assert_eq!(v["kind"], "file_open");
    }

    #[test]
    fn the_chain_continues_after_a_restart_and_across_rotation() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("audit").join("audit.jsonl");
        let mut c = Chain::resume(&path, 4096, 2).expect("open");
        c.append(&[event("a"), event("b")]).expect("write");
        drop(c);
        assert_eq!(
            std::fs::metadata(&path).expect("file").permissions().mode() & 0o777,
            0o600
        );
        let mut c = Chain::resume(&path, 4096, 2).expect("reopen");
        assert_eq!(c.seq, 2);
        for _ in 0..100 {
            c.append(&[event("c")]).expect("write");
        }
        assert!(rotated(&path, 1).exists() && rotated(&path, 2).exists());
        assert!(!rotated(&path, 3).exists(), "keep = 2");
        let files = [rotated(&path, 2), rotated(&path, 1), path.clone()];
        let report = super::super::verify::verify(&files).expect("one chain");
        assert_eq!(report.last_seq, 102);
        assert!(report.starts_mid_chain, "the oldest file was removed");
    }

    #[test]
    fn the_last_line_is_found_whatever_its_length_and_ending() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("f");
        std::fs::write(&p, "one\ntwo\n").expect("write");
        let mut f = File::open(&p).expect("open");
        assert_eq!(
            last_line(&mut f).expect("read"),
            Some((b"two".to_vec(), true))
        );
        let long = "x".repeat(200_000);
        std::fs::write(&p, format!("one\n{long}")).expect("write");
        let mut f = File::open(&p).expect("open");
        assert_eq!(
            last_line(&mut f).expect("read"),
            Some((long.into_bytes(), false))
        );
        std::fs::write(&p, "only\n").expect("write");
        let mut f = File::open(&p).expect("open");
        assert_eq!(
            last_line(&mut f).expect("read"),
            Some((b"only".to_vec(), true))
        );
    }
}
