//! The systemd notify protocol as a service manager sees it: the test binds the notification
//! socket (`NOTIFY_SOCKET`) systemd would, and reads what nbgate sends: `READY=1` once HTTPS
//! serves, `RELOADING=1` with the time and `READY=1` around a SIGHUP reload (also a failed
//! one), `STOPPING=1` on SIGTERM before a clean exit, `STATUS=` lines naming the listener, and
//! `WATCHDOG=1` pings only when the watchdog is meant for nbgate's pid.
//!
//! A wedged worker stopping the pings is proven by the unit tests of `nbgate::systemd` (a
//! worker runtime blocked on purpose), which no network request can reach.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::nbgate::NbgateBuilder;
use common::{within, Nbgate};
use tokio::net::UnixDatagram;

const T: Duration = Duration::from_secs(20);

/// The socket systemd would listen on for nbgate's notifications.
struct NotifySocket {
    socket: UnixDatagram,
    path: PathBuf,
    _dir: tempfile::TempDir,
}

/// One datagram: its `KEY=value` lines.
#[derive(Debug, Clone)]
struct Message(Vec<(String, String)>);

impl Message {
    fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    fn has(&self, key: &str, value: &str) -> bool {
        self.get(key) == Some(value)
    }

    /// A periodic status refresh or a watchdog ping: not a state change.
    fn is_routine(&self) -> bool {
        self.0.iter().all(|(k, _)| k == "STATUS" || k == "WATCHDOG")
    }
}

impl NotifySocket {
    fn bind() -> NotifySocket {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("notify");
        let socket = UnixDatagram::bind(&path).expect("bind notify socket");
        NotifySocket {
            socket,
            path,
            _dir: dir,
        }
    }

    fn path(&self) -> &str {
        self.path.to_str().expect("utf-8 path")
    }

    async fn recv(&self) -> Message {
        let mut buf = vec![0u8; 4096];
        let n = within(T, "a notification from nbgate", self.socket.recv(&mut buf))
            .await
            .expect("recv");
        let text = String::from_utf8(buf[..n].to_vec()).expect("utf-8 notification");
        Message(
            text.lines()
                .map(|l| {
                    let (k, v) = l
                        .split_once('=')
                        .unwrap_or_else(|| panic!("not KEY=value: {l:?}"));
                    (k.to_owned(), v.to_owned())
                })
                .collect(),
        )
    }

    /// The next message that changes the state (skipping status refreshes and pings),
    /// with everything received on the way.
    async fn next_change(&self, seen: &mut Vec<Message>) -> Message {
        loop {
            let m = self.recv().await;
            seen.push(m.clone());
            if !m.is_routine() {
                return m;
            }
        }
    }
}

/// Starts `builder`'s nbgate with a notification socket and waits for its first state
/// change, which must be `READY=1` (the last message in the returned list).
async fn start_notified(builder: NbgateBuilder) -> (Nbgate, NotifySocket, Vec<Message>) {
    let notify = NotifySocket::bind();
    let gate = builder.env("NOTIFY_SOCKET", notify.path()).start().await;
    let mut seen = Vec::new();
    let first = notify.next_change(&mut seen).await;
    assert!(first.has("READY", "1"), "first state change: {first:?}");
    (gate, notify, seen)
}

/// Waits for `n` more `WATCHDOG=1` pings.
async fn pings(notify: &NotifySocket, n: usize) {
    let mut seen = 0;
    while seen < n {
        if notify.recv().await.has("WATCHDOG", "1") {
            seen += 1;
        }
    }
}

/// CLOCK_MONOTONIC in microseconds: the clock `MONOTONIC_USEC=` is read from (system-wide).
fn monotonic_usec() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec to write to.
    assert_eq!(
        unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) },
        0
    );
    u64::try_from(ts.tv_sec).expect("positive") * 1_000_000
        + u64::try_from(ts.tv_nsec).expect("positive") / 1_000
}

/// `GET /_nbgate/login` on a fresh connection: HTTPS serves.
async fn login_page_status(gate: &Nbgate) -> u16 {
    gate.client()
        .get(gate.url("/_nbgate/login"))
        .send()
        .await
        .expect("GET the login page")
        .status()
        .as_u16()
}

/// Sends SIGHUP and checks `RELOADING=1` with a `MONOTONIC_USEC` taken during the reload,
/// then returns the `READY=1` message that ends it.
async fn reload(gate: &Nbgate, notify: &NotifySocket, seen: &mut Vec<Message>) -> Message {
    let before = monotonic_usec();
    gate.signal(libc::SIGHUP);
    let reloading = notify.next_change(seen).await;
    let after = monotonic_usec();
    assert!(reloading.has("RELOADING", "1"), "{reloading:?}");
    let stamp: u64 = reloading
        .get("MONOTONIC_USEC")
        .unwrap_or_else(|| panic!("RELOADING=1 without MONOTONIC_USEC: {reloading:?}"))
        .parse()
        .expect("MONOTONIC_USEC is a number");
    assert!(
        (before..=after).contains(&stamp),
        "MONOTONIC_USEC={stamp} is not between the SIGHUP ({before}) and its notification ({after})"
    );
    let ready = notify.next_change(seen).await;
    assert!(
        ready.has("READY", "1"),
        "reload did not end with READY=1: {ready:?}"
    );
    ready
}

/// Sends SIGTERM, checks `STOPPING=1` comes next and nbgate exits 0; returns the status
/// `STOPPING=1` came with.
async fn stop(mut gate: Nbgate, notify: &NotifySocket, seen: &mut Vec<Message>) -> String {
    gate.signal(libc::SIGTERM);
    let stopping = notify.next_change(seen).await;
    assert!(stopping.has("STOPPING", "1"), "{stopping:?}");
    let status = gate.wait_exit(T).await;
    assert!(status.success(), "nbgate exited with {status}");
    stopping.get("STATUS").unwrap_or_default().to_owned()
}

#[tokio::test]
async fn start_reload_and_stop_are_told_in_order() {
    let (gate, notify, mut seen) = start_notified(NbgateBuilder::new()).await;
    let ready = seen.last().expect("READY=1").clone();
    // Told ready: HTTPS answers now, on the address the status names.
    assert_eq!(login_page_status(&gate).await, 200);
    let status = ready.get("STATUS").expect("READY=1 comes with a STATUS=");
    assert!(
        status.contains(&format!("https://{}", gate.https_addr())),
        "{status}"
    );
    assert!(status.contains("certificate valid until"), "{status}");

    let ready = reload(&gate, &notify, &mut seen).await;
    assert!(
        !ready.get("STATUS").unwrap_or_default().contains("failed"),
        "{ready:?}"
    );
    assert_eq!(login_page_status(&gate).await, 200);

    // A connection open when the stop comes is what the drain waits for; the status says so
    // (earlier clients' connections may or may not have closed yet: at least this one).
    let held = gate.tls_connect().await;
    let stopping = stop(gate, &notify, &mut seen).await;
    let open: usize = stopping
        .strip_prefix("stopping: draining ")
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("STOPPING=1 without the drain's count: {stopping:?}"));
    assert!(open >= 1, "{stopping}");
    drop(held);
    assert!(
        !seen.iter().any(|m| m.has("WATCHDOG", "1")),
        "no WatchdogSec, yet pings: {seen:?}"
    );
}

#[tokio::test]
async fn a_failed_certificate_reload_ends_with_ready_and_the_reason_in_the_status() {
    let builder = NbgateBuilder::new();
    let pair = common::certs::localhost();
    let cert = builder.dir().join("cert.pem");
    let key = builder.dir().join("key.pem");
    std::fs::write(&cert, &pair.cert_pem).expect("write cert");
    std::fs::write(&key, &pair.key_pem).expect("write key");
    let builder = builder
        .set("tls.mode", "files")
        .set("tls.cert_file", cert.display().to_string())
        .set("tls.key_file", key.display().to_string());
    let (gate, notify, mut seen) = start_notified(builder).await;

    std::fs::write(&cert, "not a certificate").expect("break cert");
    let ready = reload(&gate, &notify, &mut seen).await;
    let status = ready.get("STATUS").expect("STATUS with the outcome");
    assert!(status.contains("last reload failed"), "{status}");
    assert!(
        status.contains("cert.pem"),
        "the reason names the file: {status}"
    );
    // Still serving the certificate it had.
    assert_eq!(login_page_status(&gate).await, 200);

    std::fs::write(&cert, &pair.cert_pem).expect("restore cert");
    let ready = reload(&gate, &notify, &mut seen).await;
    let status = ready.get("STATUS").expect("STATUS with the outcome");
    assert!(
        !status.contains("failed"),
        "a good reload clears it: {status}"
    );
    stop(gate, &notify, &mut seen).await;
}

#[tokio::test]
async fn watchdog_pings_arrive_while_nbgate_serves() {
    let builder = NbgateBuilder::new().env("WATCHDOG_USEC", "200000");
    let (gate, notify, mut seen) = start_notified(builder).await;
    pings(&notify, 5).await;
    gate.wait_for_log("systemd watchdog: pinging", T).await;
    // Pings go on while a request is served and after it.
    assert_eq!(login_page_status(&gate).await, 200);
    pings(&notify, 2).await;
    stop(gate, &notify, &mut seen).await;
}

#[tokio::test]
async fn a_watchdog_meant_for_another_pid_gets_no_pings() {
    let builder = NbgateBuilder::new()
        .env("WATCHDOG_USEC", "200000")
        // A wrapper's pid (systemd sets it when the main process is not the one it started).
        .env("WATCHDOG_PID", "1");
    let (gate, notify, mut seen) = start_notified(builder).await;
    gate.wait_for_log("WATCHDOG_USEC is not meant for this process", T)
        .await;
    assert_eq!(login_page_status(&gate).await, 200);
    reload(&gate, &notify, &mut seen).await;
    stop(gate, &notify, &mut seen).await;
    assert!(
        !seen.iter().any(|m| m.has("WATCHDOG", "1")),
        "pings for another pid: {seen:?}"
    );
}
