//! `nbgate audit verify` and `nbgate audit show`: reading audit files.
//!
//! Files are taken in chain order whatever order they are named in (by
//! the `seq` of their first line), so `nbgate audit verify audit.jsonl*`
//! checks the current file and its rotated ones as one chain. Verification
//! stops at the first line that breaks the chain and names it.
//!
//! What the chain cannot show: lines removed from the very end (the last
//! line has no successor to contradict it). The log carries the same
//! events (target `nbgate::audit`); compare the last event there, or keep
//! a copy of the last `hash` elsewhere (docs/audit.md).

use std::io::{self, BufRead, Write};
use std::path::{Path, PathBuf};

use super::file::{split_hash, GENESIS};
use super::{sha256_hex, Event};

/// A chain that verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// The files, in chain order.
    pub files: Vec<PathBuf>,
    pub lines: u64,
    pub first_seq: u64,
    pub last_seq: u64,
    /// The first line follows one not given (rotated away, or a later
    /// file checked alone).
    pub starts_mid_chain: bool,
}

/// Why a chain did not verify: the first line that breaks it.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error("{}: cannot read", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{}:{line}: {problem}", path.display())]
    Broken {
        path: PathBuf,
        /// 1-based line number in `path`.
        line: usize,
        problem: Problem,
    },
    #[error("no audit lines in the files given")]
    Empty,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    #[error("not an audit line")]
    NotAuditLine,
    #[error("incomplete line (no newline at its end): an interrupted write, or a cut file")]
    Incomplete,
    #[error("this line was changed: its content does not match its hash")]
    Changed,
    #[error(
        "seq {found} where {expected} was expected: the line(s) before it were removed or moved"
    )]
    Missing { expected: u64, found: u64 },
    #[error("seq {found} where {expected} was expected: lines are out of order")]
    OutOfOrder { expected: u64, found: u64 },
    #[error(
        "its prev is not the hash of the line before it: that line was changed, or lines removed"
    )]
    NotLinked,
}

#[derive(serde::Deserialize)]
struct Chained {
    seq: u64,
    prev: String,
}

/// Reads one file's lines (with their ending) and passes each, numbered
/// from 1, to `each`.
fn lines_of(
    path: &Path,
    mut each: impl FnMut(usize, &[u8], bool) -> Result<(), VerifyError>,
) -> Result<(), VerifyError> {
    let read_err = |source| VerifyError::Read {
        path: path.to_owned(),
        source,
    };
    let mut r = io::BufReader::new(std::fs::File::open(path).map_err(read_err)?);
    let mut buf = Vec::new();
    let mut n = 0;
    loop {
        buf.clear();
        if r.read_until(b'\n', &mut buf).map_err(read_err)? == 0 {
            return Ok(());
        }
        n += 1;
        let complete = buf.last() == Some(&b'\n');
        if complete {
            buf.pop();
        }
        each(n, &buf, complete)?;
    }
}

/// The seq of a file's first line, for ordering (`None`: empty or not an
/// audit line).
fn first_seq(path: &Path) -> Result<Option<u64>, VerifyError> {
    let mut seq = None;
    let stop = lines_of(path, |_, line, _| {
        seq = serde_json::from_slice::<Chained>(line).ok().map(|c| c.seq);
        Err(VerifyError::Empty)
    });
    match stop {
        Ok(()) | Err(VerifyError::Empty) => Ok(seq),
        Err(e) => Err(e),
    }
}

/// The files in chain order: by their first line's seq; files that do not
/// start with an audit line last (where their first line is reported).
fn chain_order(files: &[PathBuf]) -> Result<Vec<PathBuf>, VerifyError> {
    let mut keyed = Vec::new();
    for f in files {
        keyed.push((first_seq(f)?.unwrap_or(u64::MAX), f.clone()));
    }
    keyed.sort_by_key(|(seq, _)| *seq);
    Ok(keyed.into_iter().map(|(_, f)| f).collect())
}

/// Checks that `files` hold one unbroken chain.
///
/// # Errors
/// The first line that breaks it, or a file that cannot be read.
pub fn verify(files: &[PathBuf]) -> Result<Report, VerifyError> {
    let files = chain_order(files)?;
    let mut expected: Option<(u64, String)> = None;
    let mut report = Report {
        files: files.clone(),
        lines: 0,
        first_seq: 0,
        last_seq: 0,
        starts_mid_chain: false,
    };
    for path in &files {
        lines_of(path, |n, line, complete| {
            let broken = |problem| VerifyError::Broken {
                path: path.clone(),
                line: n,
                problem,
            };
            if !complete {
                return Err(broken(Problem::Incomplete));
            }
            let (hashed, hash) = split_hash(line).ok_or_else(|| broken(Problem::NotAuditLine))?;
            if sha256_hex(&hashed) != hash {
                return Err(broken(Problem::Changed));
            }
            let c: Chained =
                serde_json::from_slice(line).map_err(|_| broken(Problem::NotAuditLine))?;
            match &expected {
                None => {
                    report.first_seq = c.seq;
                    if c.prev != GENESIS {
                        report.starts_mid_chain = true;
                    } else if c.seq != 1 {
                        return Err(broken(Problem::Missing {
                            expected: 1,
                            found: c.seq,
                        }));
                    }
                }
                Some((seq, prev)) => {
                    let want = seq + 1;
                    if c.seq > want {
                        return Err(broken(Problem::Missing {
                            expected: want,
                            found: c.seq,
                        }));
                    }
                    if c.seq < want {
                        return Err(broken(Problem::OutOfOrder {
                            expected: want,
                            found: c.seq,
                        }));
                    }
                    if c.prev != *prev {
                        return Err(broken(Problem::NotLinked));
                    }
                }
            }
            report.lines += 1;
            report.last_seq = c.seq;
            expected = Some((c.seq, hash.to_owned()));
            Ok(())
        })?;
    }
    if report.lines == 0 {
        return Err(VerifyError::Empty);
    }
    Ok(report)
}

/// Which events `show` prints.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub user: Option<String>,
    /// Events at or after this time: RFC 3339 or a prefix of it
    /// (`2025-01-31`, `2025-01-31T10:00`), compared as text (events are
    /// UTC in one format); see `since`.
    pub since: Option<String>,
    pub kind: Option<String>,
}

/// The `--since` value as a time prefix: a time as written (RFC 3339,
/// or a prefix such as a date), or a duration back from now (`2h`, `1d`).
///
/// # Errors
/// Neither.
pub fn since(text: &str) -> Result<String, String> {
    if let Ok(d) = humantime::parse_duration(text) {
        let t = std::time::SystemTime::now()
            .checked_sub(d)
            .ok_or_else(|| format!("{text:?} is too far back"))?;
        return Ok(humantime::format_rfc3339_millis(t).to_string());
    }
    let ok = text.len() >= 4
        && text
            .bytes()
            .all(|b| b.is_ascii_digit() || b"-:T.Z".contains(&b))
        && text.as_bytes()[..4].iter().all(u8::is_ascii_digit);
    if ok {
        Ok(text.to_owned())
    } else {
        Err(format!(
            "{text:?} is neither a time (2025-01-31, 2025-01-31T10:00:00Z) nor a duration (2h, 1d)"
        ))
    }
}

/// Prints the events of `files` that pass `filter` as a table; returns
/// how many. Does not verify (run `verify` for that): damaged lines are
/// skipped with a note.
///
/// # Errors
/// A file cannot be read, or `out` cannot be written.
pub fn show(files: &[PathBuf], filter: &Filter, out: &mut dyn Write) -> Result<usize, VerifyError> {
    let files = chain_order(files)?;
    let write_err = |source| VerifyError::Read {
        path: PathBuf::from("<stdout>"),
        source,
    };
    writeln!(
        out,
        "{:<24} {:<12} {:<15} {:<18} {:>6}  DETAIL",
        "TIME", "USER", "CLIENT", "KIND", "STATUS"
    )
    .map_err(write_err)?;
    let mut shown = 0;
    for path in &files {
        lines_of(path, |n, line, _| {
            let Ok(e) = serde_json::from_slice::<Event>(line) else {
                writeln!(out, "# {}:{n}: not an audit line", path.display()).map_err(write_err)?;
                return Ok(());
            };
            let pass = filter.user.as_ref().is_none_or(|u| *u == e.user)
                && filter.kind.as_ref().is_none_or(|k| *k == e.kind)
                && filter
                    .since
                    .as_ref()
                    .is_none_or(|s| e.time.as_str() >= s.as_str());
            if pass {
                shown += 1;
                writeln!(
                    out,
                    "{:<24} {:<12} {:<15} {:<18} {:>6}  {}",
                    clean(&e.time),
                    clean(&e.user),
                    clean(&e.client),
                    clean(&e.kind),
                    e.status.map_or(String::new(), |s| s.to_string()),
                    clean(&detail(&e)),
                )
                .map_err(write_err)?;
            }
            Ok(())
        })?;
    }
    Ok(shown)
}

/// One line saying what the event was about.
fn detail(e: &Event) -> String {
    let mut parts = Vec::new();
    let mut add = |label: &str, v: &Option<String>| {
        if let Some(v) = v {
            parts.push(if label.is_empty() {
                v.clone()
            } else {
                format!("{label}={v}")
            });
        }
    };
    add("", &e.path);
    add("from", &e.from);
    add("to", &e.to);
    add("format", &e.format);
    add("checkpoint", &e.checkpoint);
    add("kernel", &e.kernel);
    add("kernel_name", &e.kernel_name);
    add("session", &e.session);
    add("terminal", &e.terminal);
    if let Some(b) = e.bytes {
        parts.push(format!("bytes={b}"));
    }
    if let Some(c) = e.count {
        parts.push(format!("count={c}"));
    }
    if let Some(code) = &e.code {
        let first = code.lines().next().unwrap_or("");
        let (first, cut) = super::truncate(first, 60);
        let more = cut || code.lines().nth(1).is_some() || e.code_truncated;
        parts.push(format!("code={first:?}{}", if more { "…" } else { "" }));
    }
    parts.join(" ")
}

/// Control characters shown escaped: a file name or a line of code must
/// not drive the reader's terminal (escape sequences).
fn clean(s: &str) -> String {
    s.chars()
        .flat_map(|c| {
            let escaped: Vec<char> = if c.is_control() {
                c.escape_default().collect()
            } else {
                vec![c]
            };
            escaped
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::super::file::chain_line;
    use super::*;

    fn write_chain(dir: &Path, n: u64) -> PathBuf {
        let path = dir.join("audit.jsonl");
        let mut prev = GENESIS.to_owned();
        let mut text = String::new();
        for seq in 1..=n {
            let e = Event {
                time: format!("2025-01-01T00:00:{seq:02}.000Z"),
                kind: if seq % 2 == 0 {
                    "file_save"
                } else {
                    "file_open"
                }
                .into(),
                user: if seq == 3 { "bob" } else { "ann" }.into(),
                path: Some(format!("f{seq}.txt")),
                ..Event::default()
            };
            let (line, hash) = chain_line(seq, &prev, &e);
            text.push_str(&line);
            text.push('\n');
            prev = hash;
        }
        std::fs::write(&path, text).expect("write");
        path
    }

    fn lines(p: &Path) -> Vec<String> {
        std::fs::read_to_string(p)
            .expect("read")
            .lines()
            .map(str::to_owned)
            .collect()
    }

    fn rewrite(p: &Path, lines: &[String]) {
        std::fs::write(p, lines.join("\n") + "\n").expect("write");
    }

    fn problem(p: &Path) -> (usize, Problem) {
        match verify(&[p.to_owned()]) {
            Err(VerifyError::Broken { line, problem, .. }) => (line, problem),
            other => panic!("expected a broken chain, got {other:?}"),
        }
    }

    #[test]
    fn an_intact_chain_verifies() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = write_chain(dir.path(), 5);
        let r = verify(&[p]).expect("verifies");
        assert_eq!((r.lines, r.first_seq, r.last_seq), (5, 1, 5));
        assert!(!r.starts_mid_chain);
    }

    #[test]
    fn one_changed_byte_anywhere_is_found_on_its_line() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = write_chain(dir.path(), 5);
        let original = std::fs::read(&p).expect("read");
        let newlines: Vec<usize> = original
            .iter()
            .enumerate()
            .filter(|(_, &b)| b == b'\n')
            .map(|(i, _)| i)
            .collect();
        for at in 0..original.len() {
            if original[at] == b'\n' {
                continue;
            }
            let mut bytes = original.clone();
            bytes[at] ^= 0x01;
            std::fs::write(&p, &bytes).expect("write");
            let line = newlines.iter().filter(|&&nl| nl < at).count() + 1;
            match verify(std::slice::from_ref(&p)) {
                Err(VerifyError::Broken { line: l, .. }) => assert_eq!(l, line, "byte {at}"),
                other => panic!("byte {at} changed, got {other:?}"),
            }
        }
    }

    #[test]
    fn a_removed_line_and_swapped_lines_are_named() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = write_chain(dir.path(), 5);
        let mut l = lines(&p);
        l.remove(2);
        rewrite(&p, &l);
        assert_eq!(
            problem(&p),
            (
                3,
                Problem::Missing {
                    expected: 3,
                    found: 4
                }
            )
        );
        let p = write_chain(dir.path(), 5);
        let mut l = lines(&p);
        l.swap(1, 2);
        rewrite(&p, &l);
        assert_eq!(problem(&p).0, 2);
        // A line whose hash was recomputed after an edit: the next one
        // no longer follows it.
        let p = write_chain(dir.path(), 5);
        let mut l = lines(&p);
        let v: serde_json::Value = serde_json::from_str(&l[1]).expect("json");
        let e: Event = serde_json::from_value(v.clone()).expect("event");
        let mut forged = e.clone();
        forged.user = "mallory".into();
        let (line, _) = chain_line(2, v["prev"].as_str().expect("prev"), &forged);
        l[1] = line;
        rewrite(&p, &l);
        assert_eq!(problem(&p), (3, Problem::NotLinked));
    }

    #[test]
    fn show_filters_by_user_kind_and_time() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = write_chain(dir.path(), 6);
        let mut out = Vec::new();
        let f = Filter {
            user: Some("ann".into()),
            kind: Some("file_open".into()),
            since: Some("2025-01-01T00:00:02".into()),
        };
        assert_eq!(show(&[p], &f, &mut out).expect("show"), 1);
        let text = String::from_utf8(out).expect("utf8");
        assert!(
            text.contains("f5.txt") && !text.contains("f3.txt"),
            "{text}"
        );
        assert_eq!(clean("a\x1b[31mb"), "a\\u{1b}[31mb");
        assert!(since("2h").is_ok() && since("2025-01-31").is_ok() && since("yesterday").is_err());
    }
}
