//! Child-process plumbing shared by the Jupyter and nbgate handles: killing a whole process
//! tree (Jupyter's kernels and terminals start their own sessions, so a process-group kill alone
//! would leave them running), draining output into a shared buffer, and `/proc` readings.

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Read};
use std::process::Child;
use std::sync::{Arc, Mutex};

/// Every descendant of `root` (children, grandchildren, ...), read from `/proc/*/stat`.
pub fn descendants(root: u32) -> Vec<u32> {
    let mut parents: Vec<(u32, u32)> = Vec::new();
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for entry in entries.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<u32>().ok())
            else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                continue;
            };
            // The command name in parentheses may hold spaces; the fields after it do not.
            let Some(after) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
                continue;
            };
            if let Some(ppid) = after.split_whitespace().nth(1).and_then(|p| p.parse().ok()) {
                parents.push((pid, ppid));
            }
        }
    }
    let mut found: HashSet<u32> = HashSet::new();
    let mut frontier = vec![root];
    while let Some(parent) = frontier.pop() {
        for &(pid, ppid) in &parents {
            if ppid == parent && found.insert(pid) {
                frontier.push(pid);
            }
        }
    }
    found.into_iter().collect()
}

/// SIGKILLs `child`, its process group and every descendant, then reaps `child`.
pub fn kill_tree(child: &mut Child) {
    let pid = child.id();
    let others = descendants(pid);
    // SAFETY: kill(2) has no memory-safety preconditions; a stale pid only yields ESRCH.
    unsafe {
        libc::kill(-(pid as i32), libc::SIGKILL);
        libc::kill(pid as i32, libc::SIGKILL);
        for other in others {
            libc::kill(other as i32, libc::SIGKILL);
        }
    }
    let _ = child.wait();
}

/// Sends `signal` to the single process `pid`.
pub fn send_signal(pid: u32, signal: i32) {
    // SAFETY: kill(2) has no memory-safety preconditions.
    let rc = unsafe { libc::kill(pid as i32, signal) };
    assert_eq!(
        rc,
        0,
        "kill({pid}, {signal}) failed: {}",
        std::io::Error::last_os_error()
    );
}

/// A field of `/proc/PID/status` in KiB (e.g. `VmHWM`, `VmRSS`), if the process still exists.
pub fn proc_status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
}

/// Lines read so far from a child's output, and whether the stream has ended.
#[derive(Default)]
pub struct OutputLog {
    pub lines: Vec<String>,
    pub closed: usize,
}

/// Spawns a thread that appends every line of `stream` to `log` until EOF.
pub fn drain_lines(stream: impl Read + Send + 'static, log: Arc<Mutex<OutputLog>>) {
    std::thread::spawn(move || {
        let mut reader = BufReader::new(stream);
        let mut raw = Vec::new();
        loop {
            raw.clear();
            match reader.read_until(b'\n', &mut raw) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    let line = String::from_utf8_lossy(&raw).trim_end().to_string();
                    log.lock().expect("log lock").lines.push(line);
                }
            }
        }
        log.lock().expect("log lock").closed += 1;
    });
}
