//! Reading a new password for `nbgate hash-password`: twice with echo off from a terminal, or one
//! line from a pipe, then the [`check_new_password`] policy.
//!
//! Must not: take the password from argv or the environment (argv is world-readable in `ps` and
//! lands in shell history; the environment is readable in `/proc/<pid>/environ` and inherited by
//! children); echo, log or hash it (the caller hashes); leave the terminal with echo off.

use std::io::{self, BufRead, IsTerminal as _, Write};
use std::mem::MaybeUninit;
use std::os::fd::RawFd;

use crate::auth::password::{check_new_password, PasswordError};

/// Why no acceptable new password was read.
#[derive(Debug, thiserror::Error)]
pub enum PromptError {
    /// Reading stdin, writing the prompt or switching terminal echo failed (also: input that is
    /// not UTF-8).
    #[error("could not read the new password")]
    Io(#[from] io::Error),

    /// Standard input ended before a line was read.
    #[error("no password given: standard input ended before a line was read")]
    NoInput,

    /// The two entries typed at the terminal differ.
    #[error("the two passwords do not match; nothing was changed")]
    Mismatch,

    /// The password breaks the policy in [`check_new_password`].
    #[error("the new password was refused")]
    Weak(#[from] PasswordError),
}

/// Reads a new password from standard input and checks it with [`check_new_password`].
///
/// On a terminal: prompts on stderr ("New password: ", "Repeat password: "), reads both with echo
/// off and fails if they differ. Otherwise (a pipe or file, for scripts): reads one line without
/// prompting. Either way only the line ending (`\n` or `\r\n`) is removed, so leading or trailing
/// spaces stay part of the password.
///
/// # Errors
/// [`PromptError::Io`], [`PromptError::NoInput`], [`PromptError::Mismatch`] or
/// [`PromptError::Weak`].
pub fn read_new_password() -> Result<String, PromptError> {
    let stdin = io::stdin();
    let terminal = stdin.is_terminal().then_some(libc::STDIN_FILENO);
    read_new_password_from(&mut stdin.lock(), &mut io::stderr().lock(), terminal)
}

/// [`read_new_password`] over explicit streams, so tests can drive both paths. `terminal` is the
/// descriptor whose echo is switched off, or `None` for piped input.
fn read_new_password_from(
    input: &mut impl BufRead,
    prompt: &mut impl Write,
    terminal: Option<RawFd>,
) -> Result<String, PromptError> {
    let Some(fd) = terminal else {
        let password = read_line(input)?;
        check_new_password(&password)?;
        return Ok(password);
    };
    let first = read_hidden(fd, input, prompt, "New password: ")?;
    // Refuse a weak password before asking for it a second time.
    check_new_password(&first)?;
    let second = read_hidden(fd, input, prompt, "Repeat password: ")?;
    // Both strings were typed by the person at this terminal, so a plain comparison leaks nothing.
    if first != second {
        return Err(PromptError::Mismatch);
    }
    Ok(first)
}

/// Prints `text` and reads one line with echo off on `fd`.
fn read_hidden(
    fd: RawFd,
    input: &mut impl BufRead,
    prompt: &mut impl Write,
    text: &str,
) -> Result<String, PromptError> {
    let line = {
        // Echo goes off before the prompt appears, so nothing typed early is shown.
        let _echo_off = EchoGuard::disable(fd)?;
        prompt.write_all(text.as_bytes())?;
        prompt.flush()?;
        read_line(input)
    };
    // The Enter key was not echoed either; end the prompt line ourselves.
    prompt.write_all(b"\n")?;
    prompt.flush()?;
    line
}

/// Reads one line and removes its line ending (`\n` or `\r\n`) and nothing else.
fn read_line(input: &mut impl BufRead) -> Result<String, PromptError> {
    let mut line = String::new();
    if input.read_line(&mut line)? == 0 {
        return Err(PromptError::NoInput);
    }
    if line.ends_with('\n') {
        line.pop();
        if line.ends_with('\r') {
            line.pop();
        }
    }
    Ok(line)
}

/// Terminal echo switched off on one descriptor; the saved modes come back on drop, so an error
/// or a panic while reading cannot leave the user's terminal silent (which would hide the next
/// commands they type and invite typing secrets blind).
///
/// A signal that kills the process skips `Drop`; interactive bash restores the terminal modes of
/// a job killed by a signal (checked with bash 5.2), other shells may need `stty echo`.
struct EchoGuard {
    /// The terminal descriptor.
    fd: RawFd,
    /// Modes before echo was switched off.
    saved: libc::termios,
}

impl EchoGuard {
    /// Switches off echo on `fd` (a terminal), keeping its other modes.
    fn disable(fd: RawFd) -> io::Result<Self> {
        let mut saved = MaybeUninit::<libc::termios>::uninit();
        // SAFETY: tcgetattr writes a full termios into the pointer on success, which is checked
        // before the value is read.
        if unsafe { libc::tcgetattr(fd, saved.as_mut_ptr()) } != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: tcgetattr returned 0, so `saved` is initialised.
        let saved = unsafe { saved.assume_init() };
        let mut quiet = saved;
        quiet.c_lflag &= !(libc::ECHO | libc::ECHOE | libc::ECHOK | libc::ECHONL);
        // SAFETY: `quiet` is a valid termios for the duration of the call.
        if unsafe { libc::tcsetattr(fd, libc::TCSANOW, &quiet) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Self { fd, saved })
    }
}

impl Drop for EchoGuard {
    fn drop(&mut self) {
        // SAFETY: `saved` came from tcgetattr on this descriptor.
        if unsafe { libc::tcsetattr(self.fd, libc::TCSANOW, &self.saved) } != 0 {
            // Nothing to return an error to; say so rather than leave the user guessing.
            tracing::warn!(
                error = %io::Error::last_os_error(),
                "could not restore terminal echo; run `stty echo`"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

    /// A pseudo-terminal pair; the slave side behaves like a user's terminal.
    struct Pty {
        _master: OwnedFd,
        slave: OwnedFd,
    }

    fn open_pty() -> Pty {
        // SAFETY: plain libc calls on descriptors this function owns; every result is checked.
        unsafe {
            let master = libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY);
            assert!(master >= 0, "posix_openpt: {}", io::Error::last_os_error());
            let master = OwnedFd::from_raw_fd(master);
            assert_eq!(libc::grantpt(master.as_raw_fd()), 0);
            assert_eq!(libc::unlockpt(master.as_raw_fd()), 0);
            let mut name = [0 as libc::c_char; 128];
            assert_eq!(
                libc::ptsname_r(master.as_raw_fd(), name.as_mut_ptr(), name.len()),
                0
            );
            let slave = libc::open(name.as_ptr(), libc::O_RDWR | libc::O_NOCTTY);
            assert!(slave >= 0, "open pty slave: {}", io::Error::last_os_error());
            Pty {
                _master: master,
                slave: OwnedFd::from_raw_fd(slave),
            }
        }
    }

    fn echo_is_on(fd: RawFd) -> bool {
        let mut modes = MaybeUninit::<libc::termios>::uninit();
        // SAFETY: checked for success before the value is read.
        unsafe {
            assert_eq!(libc::tcgetattr(fd, modes.as_mut_ptr()), 0);
            modes.assume_init().c_lflag & libc::ECHO != 0
        }
    }

    #[test]
    fn read_line_strips_only_the_trailing_newline() {
        let read = |s: &str| read_line(&mut Cursor::new(s.as_bytes().to_vec())).unwrap();
        assert_eq!(read("  pass word \n"), "  pass word ");
        assert_eq!(read("pass word\r\n"), "pass word");
        assert_eq!(read("no newline"), "no newline");
        assert_eq!(read("first\nsecond\n"), "first");
        assert_eq!(read("\n"), "");
    }

    #[test]
    fn read_line_reports_end_of_input_as_no_input() {
        assert!(matches!(
            read_line(&mut Cursor::new(Vec::new())),
            Err(PromptError::NoInput)
        ));
    }

    #[test]
    fn piped_input_is_read_once_without_prompt() {
        let mut prompt = Vec::new();
        let password = read_new_password_from(
            &mut Cursor::new(b"correct horse\n".to_vec()),
            &mut prompt,
            None,
        )
        .unwrap();
        assert_eq!(password, "correct horse");
        assert!(prompt.is_empty(), "no prompt on a pipe");
    }

    #[test]
    fn piped_input_is_refused_when_too_short() {
        let result =
            read_new_password_from(&mut Cursor::new(b"short\n".to_vec()), &mut Vec::new(), None);
        assert!(matches!(
            result,
            Err(PromptError::Weak(PasswordError::PasswordTooShort { .. }))
        ));
    }

    #[test]
    fn piped_empty_line_is_refused_as_empty() {
        let result =
            read_new_password_from(&mut Cursor::new(b"\n".to_vec()), &mut Vec::new(), None);
        assert!(matches!(
            result,
            Err(PromptError::Weak(PasswordError::EmptyPassword))
        ));
    }

    #[test]
    fn terminal_input_is_read_twice_with_prompts_on_the_prompt_stream() {
        let pty = open_pty();
        let mut prompt = Vec::new();
        let password = read_new_password_from(
            &mut Cursor::new(b"correct horse\ncorrect horse\n".to_vec()),
            &mut prompt,
            Some(pty.slave.as_raw_fd()),
        )
        .unwrap();
        assert_eq!(password, "correct horse");
        assert_eq!(
            String::from_utf8(prompt).unwrap(),
            "New password: \nRepeat password: \n"
        );
        assert!(echo_is_on(pty.slave.as_raw_fd()));
    }

    #[test]
    fn terminal_input_fails_with_mismatch_and_restores_echo() {
        let pty = open_pty();
        let result = read_new_password_from(
            &mut Cursor::new(b"correct horse\ncorrect h0rse\n".to_vec()),
            &mut Vec::new(),
            Some(pty.slave.as_raw_fd()),
        );
        assert!(matches!(result, Err(PromptError::Mismatch)));
        assert!(echo_is_on(pty.slave.as_raw_fd()));
    }

    #[test]
    fn terminal_input_restores_echo_when_input_ends_early() {
        let pty = open_pty();
        let result = read_new_password_from(
            &mut Cursor::new(b"correct horse\n".to_vec()),
            &mut Vec::new(),
            Some(pty.slave.as_raw_fd()),
        );
        assert!(matches!(result, Err(PromptError::NoInput)));
        assert!(echo_is_on(pty.slave.as_raw_fd()));
    }

    #[test]
    fn terminal_input_refuses_weak_password_before_asking_again() {
        let pty = open_pty();
        let mut prompt = Vec::new();
        let result = read_new_password_from(
            &mut Cursor::new(b"short\nshort\n".to_vec()),
            &mut prompt,
            Some(pty.slave.as_raw_fd()),
        );
        assert!(matches!(result, Err(PromptError::Weak(_))));
        assert!(!String::from_utf8(prompt).unwrap().contains("Repeat"));
    }

    #[test]
    fn echo_guard_turns_echo_off_and_back_on() {
        let pty = open_pty();
        let fd = pty.slave.as_raw_fd();
        assert!(echo_is_on(fd));
        {
            let _guard = EchoGuard::disable(fd).unwrap();
            assert!(!echo_is_on(fd));
        }
        assert!(echo_is_on(fd));
    }

    #[test]
    fn echo_guard_fails_cleanly_on_a_non_terminal() {
        let file = std::fs::File::open("/dev/null").unwrap();
        let err = EchoGuard::disable(file.as_raw_fd()).err().unwrap();
        assert_eq!(err.raw_os_error(), Some(libc::ENOTTY));
    }
}
