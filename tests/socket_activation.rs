//! Socket activation: nbgate serves on listening sockets it is handed as fd 3… (`LISTEN_FDS`,
//! `LISTEN_PID`, `LISTEN_FDNAMES`) instead of binding its own. Started by systemd's own
//! `systemd-socket-activate` (named `https`), the socket serves the login page; and because
//! the socket outlives nbgate, a client that connects while no nbgate runs (before the first
//! start, or during a restart) waits in the kernel's backlog and is served by the next nbgate
//! instead of being refused.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use common::nbgate::NbgateBuilder;
use common::{within, Nbgate};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const T: Duration = Duration::from_secs(20);

/// Where Debian's `systemd` package installs `systemd-socket-activate`.
const SOCKET_ACTIVATE: [&str; 2] = [
    "/usr/bin/systemd-socket-activate",
    "/lib/systemd/systemd-socket-activate",
];

fn socket_activate() -> &'static str {
    SOCKET_ACTIVATE
        .into_iter()
        .find(|p| Path::new(p).exists())
        .unwrap_or_else(|| {
            panic!(
                "systemd-socket-activate not found at {SOCKET_ACTIVATE:?}: install Debian's \
                 `systemd` package (apt-get install systemd)"
            )
        })
}

/// Runs nbgate with fd 3 as its only passed socket, as systemd does: `LISTEN_PID` must be
/// nbgate's own pid, which `sh` knows before it execs nbgate in its place.
fn handed(builder: NbgateBuilder, socket: impl Into<std::os::fd::OwnedFd>) -> NbgateBuilder {
    builder.listen_fd(socket).env("LISTEN_FDS", "1").wrapped(&[
        "sh",
        "-c",
        r#"LISTEN_PID=$$ exec "$0" "$@""#,
    ])
}

/// `GET /_nbgate/login` over `tcp` (HTTP/1.1 over TLS as `localhost`): the status line.
async fn login_page_over(gate: &Nbgate, tcp: TcpStream) -> String {
    let mut tls = gate
        .tls_handshake(tcp, &[b"http/1.1"])
        .await
        .expect("TLS handshake on the early connection");
    tls.write_all(b"GET /_nbgate/login HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .expect("write request");
    let mut response = Vec::new();
    within(T, "login page response", tls.read_to_end(&mut response))
        .await
        .ok();
    let response = String::from_utf8_lossy(&response).into_owned();
    assert!(response.contains("<form"), "no login form: {response}");
    response.lines().next().unwrap_or_default().to_owned()
}

/// A loopback port free a moment ago (`systemd-socket-activate` binds a port it is told and
/// cannot report one the kernel picked).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("ephemeral port")
        .port()
}

/// Connects to `addr` as soon as something listens there.
async fn connect_when_listening(addr: SocketAddr) -> TcpStream {
    common::poll_until(T, "systemd-socket-activate listening", || async {
        TcpStream::connect(addr).await.ok()
    })
    .await
}

#[tokio::test]
async fn a_socket_passed_by_systemd_socket_activate_serves_https() {
    let activate = socket_activate();
    let mut attempts = 0;
    let (gate, first) = loop {
        attempts += 1;
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
        let listen = addr.to_string();
        let fdname = "--fdname=https";
        // systemd-socket-activate starts its command on the first connection, which then
        // waits in the backlog until nbgate accepts it. It passes on only the variables named.
        let builder =
            NbgateBuilder::new().wrapped(&[activate, "-l", &listen, fdname, "-E", "RUST_LOG"]);
        let trigger = tokio::spawn(connect_when_listening(addr));
        match builder.try_start().await {
            Ok(gate) => break (gate, trigger.await.expect("trigger task")),
            // Someone took the port between `free_port` and the bind.
            Err(f) if f.log.contains("Address already in use") && attempts < 5 => {
                trigger.abort();
            }
            Err(f) => panic!("nbgate did not start: {}\n{}", f.reason, f.log),
        }
    };

    // The connection that woke systemd-socket-activate, made before nbgate ran, is served.
    assert_eq!(login_page_over(&gate, first).await, "HTTP/1.1 200 OK");
    // And new ones, on the address nbgate logs.
    let page = gate
        .client()
        .get(gate.url("/_nbgate/login"))
        .send()
        .await
        .expect("GET the login page");
    assert_eq!(page.status(), 200);

    assert!(
        gate.find_line(&[
            "socket activation: serving the sockets systemd passed",
            "Name"
        ])
        .is_some(),
        "{}",
        gate.log_text()
    );
    // The config's own listener (127.0.0.1:0 in the test config) is not bound: named.
    assert!(
        gate.find_line(&["server.listen = 127.0.0.1:0", "no socket systemd passed"])
            .is_some(),
        "{}",
        gate.log_text()
    );
}

#[tokio::test]
async fn connections_made_while_no_nbgate_runs_wait_in_the_backlog_and_are_served() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    // Unnamed socket: nbgate matches it by its address in server.listen.
    let config_listen = vec![addr.to_string()];

    // Before nbgate ever ran.
    let early = TcpStream::connect(addr)
        .await
        .expect("connect before start");
    let mut gate = handed(NbgateBuilder::new(), listener.try_clone().expect("dup"))
        .set("server.listen", config_listen.clone())
        .start()
        .await;
    assert_eq!(gate.https_addr(), addr);
    assert_eq!(login_page_over(&gate, early).await, "HTTP/1.1 200 OK");
    assert!(
        gate.find_line(&["socket activation", "Address"]).is_some(),
        "{}",
        gate.log_text()
    );

    // A restart: between the old nbgate's exit and the new one's start, the socket stays open
    // (here in the test, under systemd in the socket unit) and connections queue.
    gate.signal(libc::SIGTERM);
    assert!(gate.wait_exit(T).await.success());
    let during = TcpStream::connect(addr)
        .await
        .expect("connect while no nbgate runs: the backlog takes it");
    let gate = handed(NbgateBuilder::new(), listener.try_clone().expect("dup"))
        .set("server.listen", config_listen)
        .start()
        .await;
    assert_eq!(login_page_over(&gate, during).await, "HTTP/1.1 200 OK");
}

#[tokio::test]
async fn a_passed_socket_that_is_not_a_tcp_listener_is_refused_naming_its_fd() {
    let dir = tempfile::tempdir().expect("tempdir");
    let unix = std::os::unix::net::UnixListener::bind(dir.path().join("s")).expect("bind unix");
    let failure = handed(NbgateBuilder::new(), unix)
        .start_expecting_failure()
        .await;
    assert!(
        failure
            .log
            .contains("socket activation: fd 3 is not a listening TCP socket"),
        "{}",
        failure.log
    );
    assert!(!failure.status.expect("exited").success());
}
