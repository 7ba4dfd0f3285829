//! The Jupyter process itself: started in its own process group with a
//! parent-death signal (optionally as another user), its output captured,
//! signals forwarded to it, and every child of nbgate reaped.
//!
//! Must not: wait on the child through `std::process::Child` (the reaper
//! owns every `waitpid`, including the zombies of kernels that a container's
//! PID 1 inherits); let the token reach a log line.

use std::collections::VecDeque;
use std::ffi::{CString, OsString};
use std::io::BufRead as _;
use std::os::unix::ffi::OsStrExt as _;
use std::os::unix::process::CommandExt as _;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// Lines of Jupyter's output kept for the message when it fails to start.
const KEPT_LINES: usize = 40;

/// Errors starting Jupyter.
#[derive(Debug, thiserror::Error)]
pub enum ChildError {
    #[error("user {name:?} does not exist")]
    NoSuchUser { name: String },
    #[error("cannot look up user {name:?}")]
    UserLookup {
        name: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot start {program}")]
    Spawn {
        program: String,
        #[source]
        source: std::io::Error,
    },
}

/// The account Jupyter runs as with `--user`.
#[derive(Debug, Clone)]
pub struct RunAs {
    pub name: String,
    pub uid: libc::uid_t,
    pub gid: libc::gid_t,
    /// Supplementary groups (`video`/`render` give GPU access on many hosts).
    pub groups: Vec<libc::gid_t>,
    pub home: PathBuf,
}

impl RunAs {
    /// Looks `name` up in the system's user database.
    ///
    /// # Errors
    /// An unknown user, or a failing lookup.
    pub fn lookup(name: &str) -> Result<RunAs, ChildError> {
        let c_name = CString::new(name).map_err(|_| ChildError::NoSuchUser {
            name: name.to_owned(),
        })?;
        let mut buf = vec![0 as libc::c_char; 16 * 1024];
        // SAFETY: all-zero is a valid `passwd` (null pointers, zero ids);
        // getpwnam_r fills it with pointers into `buf`, which outlives every
        // read below.
        let mut pw: libc::passwd = unsafe { std::mem::zeroed() };
        let mut result: *mut libc::passwd = std::ptr::null_mut();
        // SAFETY: valid NUL-terminated name, buffer and length match.
        let rc = unsafe {
            libc::getpwnam_r(
                c_name.as_ptr(),
                &mut pw,
                buf.as_mut_ptr(),
                buf.len(),
                &mut result,
            )
        };
        if rc != 0 {
            return Err(ChildError::UserLookup {
                name: name.to_owned(),
                source: std::io::Error::from_raw_os_error(rc),
            });
        }
        if result.is_null() {
            return Err(ChildError::NoSuchUser {
                name: name.to_owned(),
            });
        }
        // SAFETY: getpwnam_r succeeded: pw_dir is a NUL-terminated string in `buf`.
        let home = unsafe { std::ffi::CStr::from_ptr(pw.pw_dir) };
        let home = PathBuf::from(std::ffi::OsStr::from_bytes(home.to_bytes()));
        let mut groups = vec![0 as libc::gid_t; 256];
        let mut n = groups.len() as libc::c_int;
        // SAFETY: `groups` has room for `n` entries; getgrouplist writes at most that many.
        let rc =
            unsafe { libc::getgrouplist(c_name.as_ptr(), pw.pw_gid, groups.as_mut_ptr(), &mut n) };
        groups.truncate(if rc < 0 { 0 } else { n.max(0) as usize });
        if groups.is_empty() {
            groups.push(pw.pw_gid);
        }
        Ok(RunAs {
            name: name.to_owned(),
            uid: pw.pw_uid,
            gid: pw.pw_gid,
            groups,
            home,
        })
    }
}

/// Jupyter's output: the last lines, kept for a failure message, and passed
/// through to nbgate's stderr once Jupyter is up.
pub struct Output {
    lines: Mutex<VecDeque<String>>,
    live: AtomicBool,
    /// Removed from every line: Jupyter prints its URL with the token.
    secret: String,
}

impl Output {
    fn push(&self, line: &str) {
        let line = if self.secret.is_empty() {
            line.to_owned()
        } else {
            line.replace(&self.secret, "[redacted]")
        };
        if self.live.load(Ordering::Relaxed) {
            eprintln!("{line}");
        }
        let mut lines = self.lines.lock().unwrap_or_else(|e| e.into_inner());
        if lines.len() == KEPT_LINES {
            lines.pop_front();
        }
        lines.push_back(line);
    }

    /// From now on every line goes to nbgate's stderr as it comes.
    pub fn go_live(&self) {
        self.live.store(true, Ordering::Relaxed);
    }

    /// The last lines Jupyter wrote, token removed.
    pub fn last_lines(&self) -> Vec<String> {
        let lines = self.lines.lock().unwrap_or_else(|e| e.into_inner());
        lines.iter().cloned().collect()
    }
}

/// A started Jupyter.
pub struct Child {
    pub pid: libc::pid_t,
    pub output: Arc<Output>,
}

/// What the child is started with.
pub struct Launch<'a> {
    pub argv: &'a [OsString],
    /// Variables removed from the inherited environment.
    pub remove_env: &'a [&'a str],
    /// Variables set for the child.
    pub set_env: Vec<(String, OsString)>,
    pub run_as: Option<&'a RunAs>,
    /// Removed from the captured output (the token).
    pub secret: &'a str,
}

/// Starts Jupyter.
///
/// The child gets its own process group (a terminal's Ctrl-C reaches nbgate
/// only, which forwards it once), stdin from /dev/null, and — after
/// switching user, because a credential change clears it —
/// `PR_SET_PDEATHSIG(SIGTERM)`: if nbgate dies, even by SIGKILL, the kernel
/// tells Jupyter to stop, and Jupyter shuts its kernels down (a kernel also
/// exits by itself within a second when its parent is gone).
///
/// Call from the thread that lives as long as nbgate: the parent-death
/// signal fires when the forking *thread* exits.
///
/// # Errors
/// The program cannot be started (not found, not executable).
pub fn spawn(launch: &Launch<'_>) -> Result<Child, ChildError> {
    let program = launch.argv[0].to_string_lossy().into_owned();
    let mut cmd = Command::new(&launch.argv[0]);
    cmd.args(&launch.argv[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    for var in launch.remove_env {
        cmd.env_remove(var);
    }
    for (k, v) in &launch.set_env {
        cmd.env(k, v);
    }
    // SAFETY: getpid is always safe to call.
    let parent = unsafe { libc::getpid() };
    let ids = launch.run_as.map(|u| (u.uid, u.gid, u.groups.clone()));
    // SAFETY: the closure runs between fork and exec and only makes
    // async-signal-safe system calls (setgroups, setgid, setuid, prctl,
    // getppid) on values computed before the fork; it allocates nothing.
    unsafe {
        cmd.pre_exec(move || {
            if let Some((uid, gid, groups)) = &ids {
                if libc::setgroups(groups.len(), groups.as_ptr()) != 0
                    || libc::setgid(*gid) != 0
                    || libc::setuid(*uid) != 0
                {
                    return Err(std::io::Error::last_os_error());
                }
            }
            if libc::prctl(
                libc::PR_SET_PDEATHSIG,
                libc::SIGTERM as libc::c_ulong,
                0,
                0,
                0,
            ) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            // nbgate died between fork and prctl: the signal was missed.
            if libc::getppid() != parent {
                return Err(std::io::Error::from_raw_os_error(libc::ESRCH));
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().map_err(|source| ChildError::Spawn {
        program: program.clone(),
        source,
    })?;
    let output = Arc::new(Output {
        lines: Mutex::new(VecDeque::with_capacity(KEPT_LINES)),
        live: AtomicBool::new(false),
        secret: launch.secret.to_owned(),
    });
    // Plain threads: pipe reads block, and two threads for the life of
    // Jupyter cost nothing on the request path.
    if let Some(out) = child.stdout.take() {
        read_lines(out, Arc::clone(&output));
    }
    if let Some(err) = child.stderr.take() {
        read_lines(err, Arc::clone(&output));
    }
    let pid = libc::pid_t::try_from(child.id()).unwrap_or(libc::pid_t::MAX);
    // Dropping `std::process::Child` neither waits nor kills: the reaper
    // collects its exit status.
    drop(child);
    Ok(Child { pid, output })
}

fn read_lines(pipe: impl std::io::Read + Send + 'static, output: Arc<Output>) {
    let spawned = std::thread::Builder::new()
        .name("jupyter-output".into())
        .spawn(move || {
            let mut reader = std::io::BufReader::new(pipe);
            let mut buf = Vec::new();
            loop {
                buf.clear();
                match reader.read_until(b'\n', &mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {
                        let line = String::from_utf8_lossy(&buf);
                        output.push(line.trim_end_matches(['\n', '\r']));
                    }
                }
            }
        });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "cannot start the thread that reads Jupyter's output");
    }
}

/// How a process ended, as a shell reports it: the exit code, or 128 + the
/// signal that killed it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExitCode(pub u8);

impl ExitCode {
    fn from_wait_status(status: libc::c_int) -> ExitCode {
        if libc::WIFEXITED(status) {
            ExitCode(u8::try_from(libc::WEXITSTATUS(status)).unwrap_or(1))
        } else if libc::WIFSIGNALED(status) {
            ExitCode(u8::try_from(128 + libc::WTERMSIG(status)).unwrap_or(255))
        } else {
            ExitCode(1)
        }
    }
}

impl std::fmt::Display for ExitCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            n if n > 128 => write!(f, "killed by signal {}", n - 128),
            n => write!(f, "exit status {n}"),
        }
    }
}

/// Collects every child that has ended (Jupyter, and as PID 1 the orphans
/// the kernel hands to nbgate). Returns Jupyter's exit code if it was among
/// them.
pub fn reap(jupyter: libc::pid_t) -> Option<ExitCode> {
    let mut found = None;
    loop {
        let mut status: libc::c_int = 0;
        // SAFETY: waitpid with a valid out pointer.
        let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
        if pid <= 0 {
            return found;
        }
        if pid == jupyter {
            found = Some(ExitCode::from_wait_status(status));
        }
    }
}

/// Sends `signal` to Jupyter (its process only; kernels run in sessions of
/// their own and are stopped by Jupyter).
pub fn signal(pid: libc::pid_t, signal: libc::c_int) {
    // SAFETY: kill with a pid we started; a gone process gives ESRCH.
    unsafe {
        libc::kill(pid, signal);
    }
}

/// SIGKILL to Jupyter's whole process group: the last resort when it
/// ignores SIGTERM past the grace period.
pub fn kill_group(pid: libc::pid_t) {
    // SAFETY: killpg on the group we created with process_group(0).
    unsafe {
        libc::killpg(pid, libc::SIGKILL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_read_as_a_shell_reports_them() {
        assert_eq!(ExitCode::from_wait_status(3 << 8), ExitCode(3));
        assert_eq!(ExitCode::from_wait_status(libc::SIGKILL), ExitCode(137));
        assert_eq!(ExitCode(137).to_string(), "killed by signal 9");
    }

    #[test]
    fn output_lines_lose_the_secret_and_only_the_last_ones_are_kept() {
        let out = Output {
            lines: Mutex::new(VecDeque::new()),
            live: AtomicBool::new(false),
            secret: "s3cret".into(),
        };
        for i in 0..(KEPT_LINES + 5) {
            out.push(&format!("line {i} http+unix://x/lab?token=s3cret"));
        }
        let lines = out.last_lines();
        assert_eq!(lines.len(), KEPT_LINES);
        assert!(lines[0].starts_with("line 5 "), "{}", lines[0]);
        assert!(lines
            .iter()
            .all(|l| !l.contains("s3cret") && l.contains("[redacted]")));
    }

    #[test]
    fn root_resolves_to_uid_zero_with_its_home() {
        let root = RunAs::lookup("root").expect("root exists");
        assert_eq!((root.uid, root.gid), (0, 0));
        assert!(root.groups.contains(&0));
        assert!(matches!(
            RunAs::lookup("no-such-user-nbgate"),
            Err(ChildError::NoSuchUser { .. })
        ));
    }
}
