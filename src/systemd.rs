//! systemd integration: the notify protocol (`sd_notify(3)`: `READY`,
//! `RELOADING`, `STOPPING`, `STATUS`, `WATCHDOG`), the watchdog's liveness
//! probe, and socket activation (`sd_listen_fds(3)`).
//!
//! Owns what nbgate tells the service manager and the sockets the service
//! manager hands over. It decides nothing about serving: `server` says when
//! the listeners serve and what the status is, the reload path says when a
//! reload starts and ends. It imports nothing else of the crate.
//!
//! Without `NOTIFY_SOCKET` every notification is a no-op and no task runs,
//! so nbgate outside systemd pays nothing. Messages go through the
//! `sd-notify` crate, which reads the variables on each call: they stay in
//! nbgate's environment (removing them once threads run would race with
//! every `getenv` in other threads). Children never see them: `supervisor`
//! removes [`HANDOVER_ENV`] from Jupyter's environment, and passed sockets
//! are close-on-exec.

use std::fmt;
use std::future::Future;
use std::io;
use std::net::{SocketAddr, TcpListener};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use sd_notify::NotifyState;
use tokio::runtime::Handle;
use tokio_util::sync::CancellationToken;

/// The variables systemd sets for nbgate alone. A child that inherited them
/// could send notifications in nbgate's name (`MAINPID=`, `READY=1`) or take
/// fds 3… as its own listeners.
pub const HANDOVER_ENV: [&str; 6] = [
    "NOTIFY_SOCKET",
    "WATCHDOG_USEC",
    "WATCHDOG_PID",
    "LISTEN_FDS",
    "LISTEN_PID",
    "LISTEN_FDNAMES",
];

/// How often `STATUS=` is refreshed (sent only when its text changed).
const STATUS_EVERY: Duration = Duration::from_secs(5);

/// Whether a service manager listens for notifications.
pub fn enabled() -> bool {
    std::env::var_os("NOTIFY_SOCKET").is_some()
}

/// What `systemctl status` shows after "Status:", kept so that a reload can
/// resend it with the reload's outcome. std Mutex: never held across `.await`.
static SHOWN: Mutex<Shown> = Mutex::new(Shown {
    base: String::new(),
    reload_error: None,
});

struct Shown {
    /// The last status the server reported.
    base: String,
    /// Why the last reload failed, until one succeeds.
    reload_error: Option<String>,
}

impl Shown {
    fn text(&self) -> String {
        match &self.reload_error {
            Some(e) => format!("{}; last reload failed: {e}", self.base),
            None => self.base.clone(),
        }
    }
}

fn shown() -> std::sync::MutexGuard<'static, Shown> {
    SHOWN
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// `READY=1` with the first status: every listener accepts and the
/// certificate is being served.
pub fn ready(status: &str) {
    if !enabled() {
        return;
    }
    let text = {
        let mut s = shown();
        s.base = status.to_owned();
        s.text()
    };
    send(&[NotifyState::Ready, NotifyState::Status(&one_line(&text))]);
}

/// `STATUS=` alone, e.g. while Jupyter starts before `READY=1`.
pub fn status(status: &str) {
    if !enabled() {
        return;
    }
    let text = {
        let mut s = shown();
        s.base = status.to_owned();
        s.text()
    };
    send(&[NotifyState::Status(&one_line(&text))]);
}

/// `RELOADING=1` with `MONOTONIC_USEC=`, sent before a reload asked for by
/// SIGHUP (`systemctl reload`). systemd ≥ 253 (`Type=notify-reload`) fails
/// a reload whose `RELOADING=1` lacks the timestamp; older ones ignore it.
pub fn reloading() {
    if !enabled() {
        return;
    }
    match NotifyState::monotonic_usec_now() {
        Ok(now) => send(&[NotifyState::Reloading, now]),
        Err(e) => {
            tracing::warn!(error = %e, "cannot read CLOCK_MONOTONIC for the systemd reload notification");
            send(&[NotifyState::Reloading]);
        }
    }
}

/// `READY=1` after the reload [`reloading`] announced. A failed reload
/// still ends with `READY=1` (nbgate keeps serving what it served before)
/// and shows why in `STATUS=` until a later reload succeeds.
pub fn reloaded(result: Result<(), String>) {
    let text = {
        let mut s = shown();
        s.reload_error = result.err();
        s.text()
    };
    if enabled() {
        send(&[NotifyState::Ready, NotifyState::Status(&one_line(&text))]);
    }
}

/// `STOPPING=1` when a graceful shutdown starts, with what is left to drain.
pub fn stopping(status: &Status) {
    if !enabled() {
        return;
    }
    send(&[
        NotifyState::Stopping,
        NotifyState::Status(&one_line(&format!("stopping: draining {}", status.open()))),
    ]);
}

/// The notification socket is an admin's choice and cannot fail a request:
/// a send error is logged once, not per message.
fn send(states: &[NotifyState<'_>]) {
    static WARNED: AtomicBool = AtomicBool::new(false);
    if let Err(e) = sd_notify::notify(states) {
        if !WARNED.swap(true, Ordering::Relaxed) {
            tracing::warn!(error = %e, "cannot notify systemd (NOTIFY_SOCKET); further failures are not logged");
        }
    }
}

/// A notification is `KEY=value` lines: a line break inside a status (an
/// error message quoting a file name) would start a new assignment, which
/// could say `MAINPID=` or `READY=1` in nbgate's name. Control characters
/// become spaces.
fn one_line(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// What `systemctl status` shows while nbgate serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    /// `(scheme, address)` of every listener.
    pub listening: Vec<(&'static str, SocketAddr)>,
    /// The served certificate's not-after.
    pub certificate_expires: Option<SystemTime>,
    /// Open client connections (TLS and plain).
    pub connections: usize,
    /// Open WebSocket tunnels (kernels, terminals).
    pub tunnels: usize,
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("listening on ")?;
        for (i, (scheme, addr)) in self.listening.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{scheme}://{addr}")?;
        }
        if let Some(t) = self.certificate_expires {
            write!(
                f,
                "; certificate valid until {}",
                humantime::format_rfc3339_seconds(t)
            )?;
        }
        write!(f, "; {}", self.open())
    }
}

impl Status {
    /// `N open connections, M WebSocket tunnels`: what a drain waits for.
    pub fn open(&self) -> String {
        format!(
            "{} open connection{}, {} WebSocket tunnel{}",
            self.connections,
            if self.connections == 1 { "" } else { "s" },
            self.tunnels,
            if self.tunnels == 1 { "" } else { "s" },
        )
    }
}

/// The watchdog period systemd asked for (`WatchdogSec=`), if it asked this
/// process: `WATCHDOG_PID`, when set, must be nbgate's pid (it is not when
/// nbgate was started by a wrapper that got the variables).
pub fn watchdog() -> Option<Duration> {
    let asked = sd_notify::watchdog_enabled();
    if asked.is_none() && std::env::var_os("WATCHDOG_USEC").is_some() {
        tracing::info!(
            watchdog_pid = ?std::env::var_os("WATCHDOG_PID"),
            pid = std::process::id(),
            "WATCHDOG_USEC is not meant for this process: no watchdog pings"
        );
    }
    asked.filter(|d| !d.is_zero())
}

/// Why the watchdog is not pinged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unresponsive {
    #[error("worker runtime {index} did not run a probe task within {within:?}")]
    Runtime { index: usize, within: Duration },
    #[error("{ended} accept loop(s) ended while nbgate serves")]
    LoopEnded { ended: usize },
}

/// What must respond before each watchdog ping: every worker thread's
/// runtime (a probe task spawned onto it must run) and every accept loop
/// (it must not have ended or panicked before the shutdown).
///
/// An idle accept loop waits in `accept()`, which is healthy, so loops are
/// not asked to answer: a loop lives as a task on a runtime, and a runtime
/// that runs the probe task also polls its accept loops (they are woken by
/// the same reactor); a loop that returned or panicked is counted by the
/// guard [`Liveness::track`] puts around it. A worker thread stuck in a
/// blocking call or a busy loop never runs the probe, so the pings stop
/// and systemd restarts nbgate (`Restart=on-watchdog` or `on-failure`).
#[derive(Debug, Default)]
pub struct Liveness {
    runtimes: Vec<Handle>,
    ended: Arc<AtomicUsize>,
}

impl Liveness {
    /// A worker thread's runtime the probe must reach.
    pub fn watch_runtime(&mut self, runtime: Handle) {
        self.runtimes.push(runtime);
    }

    /// `accept_loop` counted as ended if it returns or panics. A loop never
    /// polled (its worker did not start) does not count.
    pub fn track<F>(&self, accept_loop: F) -> impl Future<Output = ()> + Send + 'static
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let ended = Arc::clone(&self.ended);
        async move {
            let _guard = EndGuard(ended);
            accept_loop.await;
        }
    }

    /// Spawns a probe task onto every watched runtime and waits until all
    /// ran, for at most `within`. Accept loops must still run unless
    /// `stopping` (during the drain they have ended on purpose).
    ///
    /// # Errors
    /// The first runtime that did not answer, or the count of ended loops.
    pub async fn probe(&self, within: Duration, stopping: bool) -> Result<(), Unresponsive> {
        let ended = self.ended.load(Ordering::Relaxed);
        if ended > 0 && !stopping {
            return Err(Unresponsive::LoopEnded { ended });
        }
        let deadline = tokio::time::Instant::now() + within;
        let answers: Vec<_> = self
            .runtimes
            .iter()
            .map(|runtime| {
                let (tx, rx) = tokio::sync::oneshot::channel();
                // Dropped unrun (and `rx` fails) if that runtime is shut down.
                runtime.spawn(async move {
                    let _ = tx.send(());
                });
                rx
            })
            .collect();
        for (index, answer) in answers.into_iter().enumerate() {
            match tokio::time::timeout_at(deadline, answer).await {
                Ok(Ok(())) => {}
                _ => return Err(Unresponsive::Runtime { index, within }),
            }
        }
        Ok(())
    }
}

struct EndGuard(Arc<AtomicUsize>);

impl Drop for EndGuard {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
}

/// One watchdog round: probe, and send `WATCHDOG=1` (through `ping`) only
/// if everything answered. Returns the probe's verdict.
///
/// # Errors
/// What did not respond; no ping was sent.
pub async fn watchdog_round(
    liveness: &Liveness,
    within: Duration,
    stopping: bool,
    ping: impl FnOnce(),
) -> Result<(), Unresponsive> {
    liveness.probe(within, stopping).await?;
    ping();
    Ok(())
}

/// Runs until `done`: pings the watchdog every half `watchdog` period after
/// a successful probe (the probe gets half of that again, so a ping is
/// never later than systemd's deadline), and refreshes `STATUS=` from
/// `status` while `stop` is not cancelled. Spawn it on the runtime that
/// runs the first worker: if that thread wedges, this task does not run
/// and sends nothing.
pub async fn keep_alive(
    liveness: Liveness,
    watchdog: Option<Duration>,
    stop: CancellationToken,
    done: CancellationToken,
    status: impl Fn() -> String,
) {
    let period = watchdog.map(|w| w / 2);
    let mut ping_tick = period.map(|p| {
        let mut tick = tokio::time::interval(p);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick
    });
    let mut status_tick = tokio::time::interval(STATUS_EVERY);
    status_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_status = status();
    let mut failing = false;
    loop {
        tokio::select! {
            () = tick(&mut ping_tick) => {
                let within = period.unwrap_or_default() / 2;
                let round = watchdog_round(&liveness, within, stop.is_cancelled(), || {
                    send(&[NotifyState::Watchdog]);
                })
                .await;
                match round {
                    Ok(()) if failing => {
                        failing = false;
                        tracing::info!("watchdog: every worker and accept loop answers again");
                    }
                    Ok(()) => {}
                    Err(e) if !failing => {
                        failing = true;
                        tracing::error!(error = %e, "watchdog: not pinging systemd");
                    }
                    Err(_) => {}
                }
            }
            _ = status_tick.tick(), if !stop.is_cancelled() => {
                let now = status();
                if now != last_status {
                    self::status(&now);
                    last_status = now;
                }
            }
            _ = done.cancelled() => return,
        }
    }
}

/// The next tick of `interval`; never without one.
async fn tick(interval: &mut Option<tokio::time::Interval>) {
    match interval {
        Some(i) => {
            i.tick().await;
        }
        None => std::future::pending().await,
    }
}

/// Why the sockets systemd passed cannot be used. Each names the socket.
#[derive(Debug, thiserror::Error)]
pub enum ActivationError {
    #[error("socket activation (LISTEN_FDS, LISTEN_FDNAMES)")]
    Environment(#[source] io::Error),
    #[error("socket activation: fd {fd} is not a listening TCP socket")]
    NotTcpListener {
        fd: RawFd,
        #[source]
        source: io::Error,
    },
    #[error(
        "socket activation: fd {fd} is named {name:?}; nbgate takes sockets named \"https\" and \
         \"http\" (FileDescriptorName= in the socket unit)"
    )]
    UnknownName { fd: RawFd, name: String },
    #[error(
        "socket activation: fd {fd} ({addr}) matches no address in server.listen or \
         server.http_listen; name the sockets with FileDescriptorName=https or =http"
    )]
    Unmatched { fd: RawFd, addr: SocketAddr },
    #[error("socket activation: none of the {count} sockets systemd passed is for https")]
    NoHttps { count: usize },
}

/// What a passed socket serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Https,
    Http,
}

/// How the roles were decided, for the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MatchedBy {
    /// `LISTEN_FDNAMES`: `https` and `http`.
    Name,
    /// The sockets' addresses against `server.listen` / `server.http_listen`.
    Address,
    /// Without either: the first socket is https, the second http.
    Position,
}

/// The roles of the passed sockets (in fd order), and the configured
/// addresses that no passed socket has (a warning: systemd's sockets win).
#[derive(Debug, PartialEq, Eq)]
pub struct Assignment {
    pub roles: Vec<Role>,
    pub matched_by: MatchedBy,
    /// `(config key, address)`.
    pub unserved: Vec<(&'static str, SocketAddr)>,
}

/// The first fd systemd passes (`SD_LISTEN_FDS_START`).
const FIRST_FD: RawFd = 3;

/// Decides what each passed socket serves. `passed` holds each socket's
/// local address and `LISTEN_FDNAMES` entry in fd order.
///
/// 1. Names: when any socket is named `https` or `http`, all must be.
/// 2. Addresses: otherwise (no names, or systemd's default name, the
///    socket unit's), when every socket's address is configured in
///    `server.listen` (https) or `server.http_listen` (http).
/// 3. Position: otherwise, when no socket matches and there are at most
///    two: the first is https, the second http.
///
/// # Errors
/// A socket with a foreign name among named ones, a socket no rule places,
/// or no https socket.
pub fn assign(
    passed: &[(SocketAddr, &str)],
    https: &[SocketAddr],
    http: &[SocketAddr],
) -> Result<Assignment, ActivationError> {
    let fd = |i: usize| FIRST_FD + RawFd::try_from(i).unwrap_or(RawFd::MAX - FIRST_FD);
    let named = passed.iter().any(|(_, n)| *n == "https" || *n == "http");
    let by_address = |addr: &SocketAddr| {
        if https.iter().any(|c| same_address(c, addr)) {
            Some(Role::Https)
        } else if http.iter().any(|c| same_address(c, addr)) {
            Some(Role::Http)
        } else {
            None
        }
    };
    let (roles, matched_by) = if named {
        let roles = passed
            .iter()
            .enumerate()
            .map(|(i, (_, name))| match *name {
                "https" => Ok(Role::Https),
                "http" => Ok(Role::Http),
                other => Err(ActivationError::UnknownName {
                    fd: fd(i),
                    name: other.to_owned(),
                }),
            })
            .collect::<Result<Vec<_>, _>>()?;
        (roles, MatchedBy::Name)
    } else {
        let found: Vec<Option<Role>> = passed.iter().map(|(a, _)| by_address(a)).collect();
        if found.iter().all(Option::is_some) {
            (found.into_iter().flatten().collect(), MatchedBy::Address)
        } else if found.iter().all(Option::is_none) && passed.len() <= 2 {
            let roles = [Role::Https, Role::Http][..passed.len()].to_vec();
            (roles, MatchedBy::Position)
        } else {
            let i = found.iter().position(Option::is_none).unwrap_or(0);
            return Err(ActivationError::Unmatched {
                fd: fd(i),
                addr: passed[i].0,
            });
        }
    };
    if !roles.contains(&Role::Https) {
        return Err(ActivationError::NoHttps {
            count: passed.len(),
        });
    }
    let has = |role: Role, addr: &SocketAddr| {
        passed
            .iter()
            .zip(&roles)
            .any(|((a, _), r)| *r == role && same_address(addr, a))
    };
    let unserved = https
        .iter()
        .filter(|a| !has(Role::Https, a))
        .map(|a| ("server.listen", *a))
        .chain(
            http.iter()
                .filter(|a| !has(Role::Http, a))
                .map(|a| ("server.http_listen", *a)),
        )
        .collect();
    Ok(Assignment {
        roles,
        matched_by,
        unserved,
    })
}

/// Equal, or both "any address" on the same port (`0.0.0.0:443` in the
/// config, `[::]:443` from a socket unit's `ListenStream=443`).
fn same_address(a: &SocketAddr, b: &SocketAddr) -> bool {
    a == b || (a.ip().is_unspecified() && b.ip().is_unspecified() && a.port() == b.port())
}

/// The listeners systemd passed, with their roles.
#[derive(Debug)]
pub struct Activated {
    pub https: Vec<TcpListener>,
    pub http: Vec<TcpListener>,
    pub matched_by: MatchedBy,
    pub unserved: Vec<(&'static str, SocketAddr)>,
}

/// Takes the listening sockets systemd passed (`LISTEN_FDS`, for this pid:
/// `LISTEN_PID`), non-blocking and close-on-exec, and assigns them roles
/// ([`assign`]). `None` when none were passed. Takes them once per process:
/// a second call returns `None` rather than owning the same fds twice.
///
/// # Errors
/// Malformed variables, an fd that is not a listening TCP socket (a Unix
/// or datagram socket, or `Accept=yes`, which passes connected sockets), or
/// roles [`assign`] cannot decide.
pub fn take_listeners(
    https: &[SocketAddr],
    http: &[SocketAddr],
) -> Result<Option<Activated>, ActivationError> {
    static TAKEN: AtomicBool = AtomicBool::new(false);
    // Sets FD_CLOEXEC on each fd: Jupyter must not inherit them.
    let fds: Vec<(RawFd, String)> = sd_notify::listen_fds_with_names()
        .map_err(ActivationError::Environment)?
        .collect();
    if fds.is_empty() || TAKEN.swap(true, Ordering::SeqCst) {
        return Ok(None);
    }
    let mut passed = Vec::with_capacity(fds.len());
    for (fd, name) in fds {
        // SAFETY: systemd passed fds 3..3+LISTEN_FDS to this pid for it to
        // own (LISTEN_PID checked by `listen_fds_with_names`); `TAKEN`
        // makes this the only owner.
        let owned = unsafe { OwnedFd::from_raw_fd(fd) };
        let listener = listening_tcp(owned)
            .map_err(|source| ActivationError::NotTcpListener { fd, source })?;
        let addr = listener
            .local_addr()
            .map_err(|source| ActivationError::NotTcpListener { fd, source })?;
        passed.push((listener, addr, name));
    }
    let keys: Vec<(SocketAddr, &str)> = passed.iter().map(|(_, a, n)| (*a, n.as_str())).collect();
    let assignment = assign(&keys, https, http)?;
    let mut activated = Activated {
        https: Vec::new(),
        http: Vec::new(),
        matched_by: assignment.matched_by,
        unserved: assignment.unserved,
    };
    for ((listener, _, _), role) in passed.into_iter().zip(assignment.roles) {
        match role {
            Role::Https => activated.https.push(listener),
            Role::Http => activated.http.push(listener),
        }
    }
    Ok(Some(activated))
}

/// `fd` as a non-blocking listener, if it is a listening IPv4/IPv6 stream
/// socket.
fn listening_tcp(fd: OwnedFd) -> io::Result<TcpListener> {
    let invalid = |what: &str| io::Error::new(io::ErrorKind::InvalidInput, what.to_owned());
    let domain = socket_option(fd.as_fd(), libc::SO_DOMAIN)?;
    if domain != libc::AF_INET && domain != libc::AF_INET6 {
        return Err(invalid("not an IPv4 or IPv6 socket"));
    }
    if socket_option(fd.as_fd(), libc::SO_TYPE)? != libc::SOCK_STREAM {
        return Err(invalid("not a stream socket"));
    }
    if socket_option(fd.as_fd(), libc::SO_ACCEPTCONN)? == 0 {
        return Err(invalid(
            "not listening (Accept=yes passes connections; nbgate needs Accept=no)",
        ));
    }
    let listener = TcpListener::from(fd);
    listener.set_nonblocking(true)?;
    Ok(listener)
}

/// An integer `SOL_SOCKET` option of `fd`.
fn socket_option(fd: BorrowedFd<'_>, name: libc::c_int) -> io::Result<libc::c_int> {
    let mut value: libc::c_int = 0;
    let mut len = libc::socklen_t::try_from(std::mem::size_of::<libc::c_int>())
        .expect("an int's size fits socklen_t");
    // SAFETY: `value` and `len` are valid for writes and `len` is the size
    // of `value`; a non-socket fd yields ENOTSOCK, not undefined behaviour.
    let rc = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            name,
            std::ptr::addr_of_mut!(value).cast(),
            &mut len,
        )
    };
    if rc == 0 {
        Ok(value)
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().expect("socket address")
    }

    #[test]
    fn named_sockets_take_their_role_from_the_name_and_config_addresses_they_lack_are_reported() {
        let passed = [(addr("[::]:80"), "http"), (addr("[::]:443"), "https")];
        let a = assign(&passed, &[addr("0.0.0.0:8443")], &[addr("0.0.0.0:80")]).expect("assign");
        assert_eq!(a.roles, vec![Role::Http, Role::Https]);
        assert_eq!(a.matched_by, MatchedBy::Name);
        // [::]:80 serves 0.0.0.0:80; nothing serves 8443.
        assert_eq!(a.unserved, vec![("server.listen", addr("0.0.0.0:8443"))]);
    }

    #[test]
    fn a_foreign_name_among_named_sockets_is_refused_naming_its_fd() {
        let passed = [
            (addr("[::]:443"), "https"),
            (addr("[::]:80"), "nbgate.socket"),
        ];
        let e = assign(&passed, &[], &[]).expect_err("foreign name");
        assert!(
            matches!(&e, ActivationError::UnknownName { fd: 4, name } if name == "nbgate.socket"),
            "{e}"
        );
        assert!(e.to_string().contains("FileDescriptorName="), "{e}");
    }

    #[test]
    fn unnamed_sockets_are_matched_by_their_configured_addresses() {
        let passed = [
            (addr("127.0.0.1:8080"), "unknown"),
            (addr("127.0.0.1:8443"), "unknown"),
        ];
        let a = assign(
            &passed,
            &[addr("127.0.0.1:8443")],
            &[addr("127.0.0.1:8080")],
        )
        .expect("assign");
        assert_eq!(a.roles, vec![Role::Http, Role::Https]);
        assert_eq!(a.matched_by, MatchedBy::Address);
        assert!(a.unserved.is_empty());
    }

    #[test]
    fn unnamed_unmatched_sockets_are_https_then_http_by_position() {
        let passed = [
            (addr("[::]:443"), "nbgate.socket"),
            (addr("[::]:80"), "nbgate.socket"),
        ];
        let a = assign(&passed, &[addr("0.0.0.0:8443")], &[]).expect("assign");
        assert_eq!(a.roles, vec![Role::Https, Role::Http]);
        assert_eq!(a.matched_by, MatchedBy::Position);
        assert_eq!(a.unserved, vec![("server.listen", addr("0.0.0.0:8443"))]);
    }

    #[test]
    fn a_third_unnamed_socket_or_a_partial_address_match_is_refused() {
        let three = [
            (addr("[::]:443"), "unknown"),
            (addr("[::]:80"), "unknown"),
            (addr("[::]:8443"), "unknown"),
        ];
        assert!(matches!(
            assign(&three, &[], &[]),
            Err(ActivationError::Unmatched { fd: 3, .. })
        ));
        let partial = [
            (addr("127.0.0.1:8443"), "unknown"),
            (addr("127.0.0.1:9"), "unknown"),
        ];
        let e = assign(&partial, &[addr("127.0.0.1:8443")], &[]).expect_err("partial");
        assert!(
            matches!(e, ActivationError::Unmatched { fd: 4, addr } if addr.port() == 9),
            "{e}"
        );
    }

    #[test]
    fn sockets_without_an_https_one_are_refused() {
        let passed = [(addr("[::]:80"), "http")];
        assert!(matches!(
            assign(&passed, &[], &[]),
            Err(ActivationError::NoHttps { count: 1 })
        ));
    }

    #[test]
    fn a_unix_or_datagram_socket_is_not_taken_as_a_listener() {
        let dir = tempfile::tempdir().expect("tempdir");
        let unix = std::os::unix::net::UnixListener::bind(dir.path().join("s")).expect("bind");
        let e = listening_tcp(OwnedFd::from(unix)).expect_err("unix socket");
        assert!(e.to_string().contains("IPv4 or IPv6"), "{e}");
        let udp = std::net::UdpSocket::bind("127.0.0.1:0").expect("udp");
        let e = listening_tcp(OwnedFd::from(udp)).expect_err("udp socket");
        assert!(e.to_string().contains("stream"), "{e}");
        let file = std::fs::File::open("/dev/null").expect("/dev/null");
        assert!(listening_tcp(OwnedFd::from(file)).is_err());
        let tcp = TcpListener::bind("127.0.0.1:0").expect("tcp");
        assert!(listening_tcp(OwnedFd::from(tcp)).is_ok());
    }

    #[test]
    fn a_status_with_a_line_break_cannot_add_an_assignment() {
        assert_eq!(one_line("bad\nMAINPID=1\r"), "bad MAINPID=1 ");
    }

    #[test]
    fn status_names_listeners_certificate_expiry_and_open_counts() {
        let status = Status {
            listening: vec![("https", addr("127.0.0.1:8443")), ("http", addr("[::]:80"))],
            certificate_expires: Some(SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000)),
            connections: 1,
            tunnels: 2,
        };
        assert_eq!(
            status.to_string(),
            "listening on https://127.0.0.1:8443, http://[::]:80; certificate valid until \
             2027-01-15T08:00:00Z; 1 open connection, 2 WebSocket tunnels"
        );
    }

    /// Wedges a worker: sent a `(wedged, release)` pair, its thread tells
    /// `wedged` and then blocks until `release` is dropped.
    type Wedge = (std::sync::mpsc::Sender<()>, std::sync::mpsc::Receiver<()>);

    /// A current-thread runtime on its own thread (a worker), which the
    /// test can wedge in a blocking call and release.
    struct Worker {
        handle: Handle,
        orders: Option<tokio::sync::mpsc::UnboundedSender<Wedge>>,
        thread: Option<std::thread::JoinHandle<()>>,
    }

    impl Worker {
        fn start() -> Worker {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            let handle = runtime.handle().clone();
            let (orders, mut inbox) = tokio::sync::mpsc::unbounded_channel::<Wedge>();
            let thread = std::thread::spawn(move || {
                runtime.block_on(async move {
                    while let Some((wedged, release)) = inbox.recv().await {
                        // A task that blocks its thread: the bug the watchdog catches.
                        let _ = wedged.send(());
                        let _ = release.recv();
                    }
                });
            });
            Worker {
                handle,
                orders: Some(orders),
                thread: Some(thread),
            }
        }

        /// Wedges the worker's thread until the returned sender is dropped;
        /// returns once the thread is in the blocking call.
        fn wedge(&self) -> std::sync::mpsc::Sender<()> {
            let (wedged_tx, wedged) = std::sync::mpsc::channel();
            let (release, release_rx) = std::sync::mpsc::channel();
            self.orders
                .as_ref()
                .expect("worker running")
                .send((wedged_tx, release_rx))
                .expect("worker running");
            wedged
                .recv_timeout(GENEROUS)
                .expect("the worker took the wedge order");
            release
        }
    }

    impl Drop for Worker {
        fn drop(&mut self) {
            // Closing the inbox ends the worker's loop.
            drop(self.orders.take());
            if let Some(t) = self.thread.take() {
                let _ = t.join();
            }
        }
    }

    const GENEROUS: Duration = Duration::from_secs(10);
    const SHORT: Duration = Duration::from_millis(200);

    #[tokio::test]
    async fn a_wedged_worker_stops_the_pings_until_it_runs_again() {
        let worker = Worker::start();
        let mut liveness = Liveness::default();
        liveness.watch_runtime(Handle::current());
        liveness.watch_runtime(worker.handle.clone());
        let pings = AtomicUsize::new(0);
        let ping = || {
            pings.fetch_add(1, Ordering::Relaxed);
        };

        watchdog_round(&liveness, GENEROUS, false, ping)
            .await
            .expect("a healthy worker answers");
        assert_eq!(pings.load(Ordering::Relaxed), 1);

        let release = worker.wedge();
        // However long it is given, a wedged worker never runs the probe;
        // `SHORT` only bounds how long this test waits to see that.
        let e = watchdog_round(&liveness, SHORT, false, ping)
            .await
            .expect_err("a wedged worker cannot answer");
        assert_eq!(
            e,
            Unresponsive::Runtime {
                index: 1,
                within: SHORT
            }
        );
        assert_eq!(pings.load(Ordering::Relaxed), 1, "no ping while wedged");

        drop(release);
        watchdog_round(&liveness, GENEROUS, false, ping)
            .await
            .expect("the released worker answers again");
        assert_eq!(pings.load(Ordering::Relaxed), 2);
    }

    #[tokio::test]
    async fn an_accept_loop_that_panicked_stops_the_pings_until_shutdown() {
        let liveness = Liveness::default();
        let idle = tokio::spawn(liveness.track(std::future::pending()));
        watchdog_round(&liveness, GENEROUS, false, || {})
            .await
            .expect("a loop waiting in accept is healthy");
        let crashed = tokio::spawn(liveness.track(async { panic!("accept loop bug") }));
        assert!(crashed.await.is_err());
        assert_eq!(
            watchdog_round(&liveness, GENEROUS, false, || {}).await,
            Err(Unresponsive::LoopEnded { ended: 1 })
        );
        // During the drain, loops end on purpose.
        watchdog_round(&liveness, GENEROUS, true, || {})
            .await
            .expect("stopping: loops may end");
        idle.abort();
    }

    #[tokio::test]
    async fn a_loop_never_started_does_not_count_as_ended() {
        let liveness = Liveness::default();
        drop(liveness.track(async {}));
        watchdog_round(&liveness, GENEROUS, false, || {})
            .await
            .expect("a loop whose worker never started is not a failure");
    }
}
