//! A thousand slow clients at once (issue 20 §3): slowloris connections (TLS done, a request
//! head dribbled a few bytes at a time and never finished; some stalled inside the TLS
//! handshake) and slow readers (logged in, a large download from Jupyter they never read, with
//! a small receive buffer), all held open from several loopback addresses. Meanwhile a user on
//! another address logs in and gets API answers and a kernel WebSocket round trip; nbgate's
//! memory and descriptors stay bounded; nbgate itself closes the slowloris connections
//! (`server.header_read_timeout`, `server.tls_handshake_timeout`); once the slow clients are gone
//! its descriptors come back down. With the default limits, one address gets at most
//! `policy.max_connections_per_client` connections and everyone else is still served. A slow
//! reader that takes nothing at all for `server.send_timeout` is disconnected.
//!
//! nbgate runs with the soft descriptor limit systemd gives a service (1024, hard limit
//! unchanged), through `prlimit`: the thousand clients need more than that.

mod common;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::kernel::{execute, start_kernel};
use common::login::{bare_client, login, session_cookie, ws_connect_with_cookie};
use common::nbgate::TEST_PASSWORD;
use common::process::proc_status_kib;
use common::{poll_until, within, Jupyter, Nbgate, NbgateBuilder, TestUpstream};
use futures_util::{SinkExt, StreamExt};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;
use tokio_tungstenite::tungstenite::Message;

const T: Duration = Duration::from_secs(30);

/// Slowloris connections that finished TLS and dribble a request head.
const HEAD_DRIBBLERS: usize = 400;
/// Slowloris connections stalled halfway through their ClientHello.
const HANDSHAKE_STALLERS: usize = 100;
/// Logged-in downloads that are never read.
const SLOW_READERS: usize = 500;
const SLOW_CLIENTS: usize = HEAD_DRIBBLERS + HANDSHAKE_STALLERS + SLOW_READERS;

/// Where the slow clients come from: 250 connections per address. The user checked meanwhile
/// comes from 127.0.0.1.
const SLOW_ADDRESSES: [Ipv4Addr; 4] = [
    Ipv4Addr::new(127, 0, 0, 2),
    Ipv4Addr::new(127, 0, 0, 3),
    Ipv4Addr::new(127, 0, 0, 4),
    Ipv4Addr::new(127, 0, 0, 5),
];

/// `server.header_read_timeout` and `server.tls_handshake_timeout` in the big test: long
/// enough that every slowloris connection is still open while the user is checked (opening
/// them takes a few seconds), short enough to see nbgate close them within the test.
const SERVER_TIMEOUT_SECS: u64 = 12;

/// The download the slow readers ask for: far more than every buffer between Jupyter and the
/// client can hold (sparse, so it costs no disk).
const DOWNLOAD_BYTES: u64 = 64 << 20;

/// Raises this process's soft `RLIMIT_NOFILE` to its hard limit and returns the hard limit.
/// The test holds a socket per slow client, and Jupyter (started afterwards, inheriting it) a
/// socket and a file per slow reader.
fn raise_own_fd_limit() -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one `rlimit` into the valid pointer it is given.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) };
    assert_eq!(rc, 0, "getrlimit: {}", std::io::Error::last_os_error());
    if limit.rlim_cur < limit.rlim_max {
        limit.rlim_cur = limit.rlim_max;
        // SAFETY: setrlimit reads one valid `rlimit`; raising the soft limit up to the hard
        // limit needs no privilege.
        let rc = unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) };
        assert_eq!(rc, 0, "setrlimit: {}", std::io::Error::last_os_error());
    }
    limit.rlim_max
}

/// Open descriptors of process `pid`.
fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or_else(|e| panic!("/proc/{pid}/fd: {e}"))
}

/// A TCP connection to `addr` from `from`, with a receive buffer of `rcvbuf` bytes when set
/// (before connecting, so the window the server sees is small from the start).
async fn connect_from(from: Ipv4Addr, addr: SocketAddr, rcvbuf: Option<u32>) -> TcpStream {
    let socket = TcpSocket::new_v4().expect("socket");
    if let Some(bytes) = rcvbuf {
        socket.set_recv_buffer_size(bytes).expect("SO_RCVBUF");
    }
    socket
        .bind(SocketAddr::new(IpAddr::V4(from), 0))
        .expect("bind the client address");
    within(T, "TCP connect", socket.connect(addr))
        .await
        .expect("TCP connect to nbgate")
}

async fn tls_over(
    connector: &TlsConnector,
    tcp: TcpStream,
) -> std::io::Result<TlsStream<TcpStream>> {
    let name = ServerName::try_from("localhost").expect("server name");
    within(T, "TLS handshake", connector.connect(name, tcp)).await
}

/// A logged-in download that is started and then never read: returns once the status line has
/// arrived, holding the connection.
async fn open_slow_reader(
    gate_addr: SocketAddr,
    from: Ipv4Addr,
    connector: TlsConnector,
    cookie: String,
) -> TlsStream<TcpStream> {
    let tcp = connect_from(from, gate_addr, Some(4096)).await;
    let mut tls = tls_over(&connector, tcp).await.expect("slow reader's TLS");
    let request = format!(
        "GET /files/big.bin HTTP/1.1\r\nHost: localhost:{}\r\nCookie: {cookie}\r\n\r\n",
        gate_addr.port()
    );
    tls.write_all(request.as_bytes())
        .await
        .expect("slow reader's request");
    let mut status = [0u8; 12];
    within(T, "slow reader's status line", tls.read_exact(&mut status))
        .await
        .expect("slow reader's status line");
    assert_eq!(&status, b"HTTP/1.1 200", "the download started");
    tls
}

/// Dribbles a request head that never ends, a few bytes every half second, until the server
/// closes the connection (counted in `closed`); the task is aborted otherwise.
async fn dribble_head(tls: TlsStream<TcpStream>, closed: Arc<AtomicUsize>) {
    let (mut reader, mut writer) = tokio::io::split(tls);
    let ended = async {
        let mut buf = [0u8; 1024];
        loop {
            match reader.read(&mut buf).await {
                // A 408 before the close would be fine: read on until the close.
                Ok(0) | Err(_) => return,
                Ok(_) => continue,
            }
        }
    };
    let dribble = async {
        let mut head = b"GET /api/status HTTP/1.1\r\nHost: localhost\r\n".to_vec();
        loop {
            if writer.write_all(&head).await.is_err() || writer.flush().await.is_err() {
                // The server closed: the read side sees it too.
                std::future::pending::<()>().await;
            }
            head = b"X-a: b\r\n".to_vec();
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    };
    tokio::select! {
        () = ended => {}
        () = dribble => unreachable!("dribbles until the server closes"),
    }
    closed.fetch_add(1, Ordering::SeqCst);
}

/// Sends `hello_prefix` (part of a ClientHello) and waits until the server closes.
async fn stall_handshake(mut tcp: TcpStream, hello_prefix: Arc<Vec<u8>>, closed: Arc<AtomicUsize>) {
    if tcp.write_all(&hello_prefix).await.is_ok() {
        let mut buf = [0u8; 1024];
        while let Ok(n) = tcp.read(&mut buf).await {
            if n == 0 {
                break;
            }
        }
    }
    closed.fetch_add(1, Ordering::SeqCst);
}

/// The first half of a real ClientHello for `localhost`.
fn half_a_client_hello(gate: &Nbgate) -> Vec<u8> {
    let config = Arc::new(gate.tls_client_config(&[b"http/1.1"]));
    let name = ServerName::try_from("localhost").expect("server name");
    let mut conn = rustls::ClientConnection::new(config, name).expect("client connection");
    let mut hello = Vec::new();
    conn.write_tls(&mut hello).expect("ClientHello");
    hello.truncate(hello.len() / 2);
    hello
}

/// What the user on 127.0.0.1 does while the slow clients are held: logs in through the form,
/// lists the contents and the kernel through the API, and runs code over the kernel's
/// WebSocket with the fresh session.
async fn user_is_served(gate: &Nbgate, kernel: &str) {
    let client = bare_client(gate);
    let answer = within(T, "login", login(gate, &client, TEST_PASSWORD)).await;
    assert_eq!(answer.status(), 303, "login");
    let cookie = session_cookie(&answer);
    for path in ["/api/contents".to_owned(), format!("/api/kernels/{kernel}")] {
        let answer = within(
            T,
            "API call",
            client.get(gate.url(&path)).header("cookie", &cookie).send(),
        )
        .await
        .unwrap_or_else(|e| panic!("GET {path}: {e}"));
        assert_eq!(answer.status(), 200, "GET {path}");
        let body: serde_json::Value = within(T, "API answer", answer.json())
            .await
            .expect("JSON answer");
        if path == "/api/contents" {
            let names: Vec<&str> = body["content"]
                .as_array()
                .expect("a directory listing")
                .iter()
                .filter_map(|e| e["name"].as_str())
                .collect();
            assert!(names.contains(&"big.bin"), "{body}");
        }
    }
    let (mut ws, _) =
        ws_connect_with_cookie(gate, &format!("/api/kernels/{kernel}/channels"), &cookie)
            .await
            .expect("kernel WebSocket with the session cookie");
    assert_eq!(execute(&mut ws, "6 * 7").await, "42");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_slow_clients_leave_a_logged_in_user_served_and_nbgate_bounded() {
    let started = std::time::Instant::now();
    let hard_limit = raise_own_fd_limit();
    assert!(
        hard_limit >= 8192,
        "this test needs a hard RLIMIT_NOFILE of at least 8192 (it is {hard_limit})"
    );
    let jupyter = Jupyter::start().await;
    std::fs::File::create(jupyter.root_dir().join("big.bin"))
        .and_then(|f| f.set_len(DOWNLOAD_BYTES))
        .expect("sparse download");
    let timeout = format!("{SERVER_TIMEOUT_SECS}s");
    // As an admin would for many users behind few addresses (a NAT, a campus proxy): room for
    // 250 connections per address and for all of them together.
    let gate = NbgateBuilder::new()
        .jupyter(&jupyter)
        .set("server.max_connections", 2048)
        .set("policy.max_connections_per_client", 300)
        .set("server.header_read_timeout", timeout.as_str())
        .set("server.tls_handshake_timeout", timeout.as_str())
        // Not the limit under test: the slow readers must all be held while the rest open.
        .set("server.send_timeout", "1h")
        // Idle upstream connections close soon, so the descriptor count can settle.
        .set("upstream.pool_idle_timeout", "1s")
        .wrapped(&["prlimit", &format!("--nofile=1024:{hard_limit}"), "--"])
        .start()
        .await;
    let pid = gate.pid();
    let fds_at_start = fd_count(pid);

    // Before the flood: a session for the slow readers and a running kernel.
    let cookie = {
        let client = bare_client(&gate);
        let answer = within(T, "login", login(&gate, &client, TEST_PASSWORD)).await;
        assert_eq!(answer.status(), 303);
        session_cookie(&answer)
    };
    let kernel = start_kernel(&gate).await;

    let addr = gate.https_addr();
    let connector = TlsConnector::from(Arc::new(gate.tls_client_config(&[b"http/1.1"])));
    let from = |i: usize| SLOW_ADDRESSES[i % SLOW_ADDRESSES.len()];
    let setup_done = started.elapsed();

    let readers: Vec<TlsStream<TcpStream>> = futures_util::stream::iter(0..SLOW_READERS)
        .map(|i| open_slow_reader(addr, from(i), connector.clone(), cookie.clone()))
        .buffer_unordered(32)
        .collect()
        .await;

    let readers_open = started.elapsed();
    let closed = Arc::new(AtomicUsize::new(0));
    let dribblers: Vec<TlsStream<TcpStream>> = futures_util::stream::iter(0..HEAD_DRIBBLERS)
        .map(|i| {
            let connector = connector.clone();
            async move {
                let tcp = connect_from(from(i), addr, None).await;
                tls_over(&connector, tcp).await.expect("slowloris TLS")
            }
        })
        .buffer_unordered(32)
        .collect()
        .await;
    let mut slowloris = tokio::task::JoinSet::new();
    for tls in dribblers {
        slowloris.spawn(dribble_head(tls, Arc::clone(&closed)));
    }
    let hello = Arc::new(half_a_client_hello(&gate));
    for i in 0..HANDSHAKE_STALLERS {
        let tcp = connect_from(from(i), addr, None).await;
        slowloris.spawn(stall_handshake(
            tcp,
            Arc::clone(&hello),
            Arc::clone(&closed),
        ));
    }

    // Every slow client is in nbgate's hands (not waiting in the listen backlog).
    let fds_held = poll_until(T, "nbgate to hold every slow client", || async {
        let fds = fd_count(pid);
        (fds >= fds_at_start + SLOW_CLIENTS).then_some(fds)
    })
    .await;

    let slowloris_open = started.elapsed();
    user_is_served(&gate, &kernel).await;
    let user_done = started.elapsed();
    assert_eq!(
        closed.load(Ordering::SeqCst),
        0,
        "the user was checked while every slowloris connection was still open"
    );

    // Bounded: a descriptor per client plus one per download's upstream connection, and
    // memory that a copy of the download per reader, or any per-connection leak, would break.
    let fds = fd_count(pid);
    let rss_kib = proc_status_kib(pid, "VmRSS").expect("nbgate's VmRSS");
    eprintln!(
        "nbgate with {SLOW_CLIENTS} slow clients: {fds} descriptors (started with \
         {fds_at_start}, {fds_held} once all were held), VmRSS {rss_kib} KiB; setup \
         {setup_done:?}, readers open {readers_open:?}, slowloris open {slowloris_open:?}, \
         user served {user_done:?}"
    );
    assert!(
        fds <= fds_at_start + SLOW_CLIENTS + SLOW_READERS + 64,
        "{fds} descriptors"
    );
    assert!(rss_kib <= 256 * 1024, "VmRSS {rss_kib} KiB");

    // The slow readers leave; nbgate closes the slowloris connections itself.
    drop(readers);
    within(
        Duration::from_secs(SERVER_TIMEOUT_SECS + 30),
        "nbgate to close every slowloris connection",
        async {
            while let Some(ended) = slowloris.join_next().await {
                ended.expect("slowloris task");
            }
        },
    )
    .await;
    let slowloris_closed = started.elapsed();
    assert_eq!(
        closed.load(Ordering::SeqCst),
        HEAD_DRIBBLERS + HANDSHAKE_STALLERS
    );
    poll_until(T, "nbgate's descriptors to come back down", || async {
        (fd_count(pid) <= fds_at_start + 8).then_some(())
    })
    .await;
    eprintln!(
        "slowloris closed {:?}, descriptors down {:?}",
        slowloris_closed,
        started.elapsed()
    );
    assert!(gate.log_contains("tls handshake timed out"));
    // Still serving.
    user_is_served(&gate, &kernel).await;
}

/// With the default limits (`policy.max_connections_per_client = 256`,
/// `server.max_connections = 4096`), one address that opens 300 slowloris connections gets
/// 256; the rest are closed at once and audited, and another client is served meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_limits_hold_one_address_to_its_share_and_serve_others() {
    let hard_limit = raise_own_fd_limit();
    let upstream = TestUpstream::start().await;
    let gate = NbgateBuilder::new()
        .upstream(&upstream.url())
        .remove("server.max_connections")
        // Not the limit under test: long enough that no held connection times out (and frees
        // its slot) while the 300 are being opened on a slow machine.
        .set("server.header_read_timeout", "60s")
        .wrapped(&["prlimit", &format!("--nofile=1024:{hard_limit}"), "--"])
        .start()
        .await;
    let addr = gate.https_addr();
    let connector = TlsConnector::from(Arc::new(gate.tls_client_config(&[b"http/1.1"])));
    let attacker = Ipv4Addr::new(127, 0, 0, 20);
    let attempts: Vec<std::io::Result<TlsStream<TcpStream>>> = futures_util::stream::iter(0..300)
        .map(|_| {
            let connector = connector.clone();
            async move {
                let tcp = connect_from(attacker, addr, None).await;
                let mut tls = tls_over(&connector, tcp).await?;
                tls.write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\n")
                    .await?;
                Ok(tls)
            }
        })
        .buffer_unordered(32)
        .collect()
        .await;
    let held = attempts.iter().filter(|a| a.is_ok()).count();
    assert_eq!(held, 256, "connections held for one address");
    gate.wait_for_line(&["connection_refused", "too_many_connections"], T)
        .await;
    let answer = within(
        T,
        "another client's request",
        gate.client().get(gate.url("/api/status")).send(),
    )
    .await
    .expect("another client's request");
    assert_eq!(answer.status(), 200);
    drop(attempts);
}

/// A client that completes the TLS handshake and then sends nothing, only the start of the
/// HTTP/2 preface, or an HTTP/2 preface and never a request, must be closed by
/// `server.header_read_timeout` as a dribbled head (or an idle HTTP/1.1 keep-alive connection)
/// is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_silent_after_the_handshake_is_closed_by_header_read_timeout() {
    let gate = Nbgate::builder()
        .set("server.header_read_timeout", "2s")
        .start()
        .await;
    // (what, ALPN offered, bytes sent after the handshake)
    type Case<'a> = (&'a str, &'a [&'a [u8]], &'a [u8]);
    let cases: [Case; 3] = [
        ("ALPN http/1.1, nothing sent", &[b"http/1.1"], b""),
        ("no ALPN, nothing sent", &[], b""),
        (
            "no ALPN, half the HTTP/2 preface",
            &[],
            b"PRI * HTTP/2.0\r\n",
        ),
    ];
    for (what, alpn, sent) in cases {
        let mut tls = gate.tls_connect_alpn(alpn).await;
        tls.write_all(sent).await.expect("write");
        let mut buf = [0u8; 1024];
        within(Duration::from_secs(10), what, async {
            loop {
                match tls.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => continue,
                }
            }
        })
        .await;
    }
    // HTTP/2: the preface and SETTINGS, PINGs answered (the h2 client does), no request.
    let tls = gate.tls_connect_alpn(&[b"h2"]).await;
    let (_send, conn) = within(T, "h2 handshake", h2::client::handshake(tls))
        .await
        .expect("h2 handshake");
    within(
        Duration::from_secs(10),
        "HTTP/2 connection without a request",
        conn,
    )
    .await
    .ok();
}

/// A gate in front of `upstream` with `server.send_timeout = 2s`, and a session cookie for it.
async fn logged_in_with_send_timeout_2s(upstream: &TestUpstream) -> (Nbgate, String) {
    let gate = NbgateBuilder::new()
        .upstream(&upstream.url())
        .set("server.send_timeout", "2s")
        .start()
        .await;
    let client = bare_client(&gate);
    let answer = within(T, "login", login(&gate, &client, TEST_PASSWORD)).await;
    (gate, session_cookie(&answer))
}

/// `server.send_timeout`: a logged-in download that the client stops reading is cut off once
/// the client has taken nothing for that long, and the upstream connection behind it is closed
/// with it; a WebSocket that was silent all that time stays open (only a stalled send is
/// timed, never an idle connection).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_is_disconnected_after_send_timeout() {
    const BODY: u64 = 1 << 30;
    let upstream = TestUpstream::start().await;
    let (gate, cookie) = logged_in_with_send_timeout_2s(&upstream).await;
    let (mut ws, _) = ws_connect_with_cookie(&gate, "/ws-echo", &cookie)
        .await
        .expect("WebSocket through nbgate");
    // The echo greets with a description of the request it got.
    within(T, "the echo's greeting", ws.next())
        .await
        .expect("a greeting")
        .expect("a message");
    let upstream_before = upstream.open_connections();

    let connector = TlsConnector::from(Arc::new(gate.tls_client_config(&[b"http/1.1"])));
    let addr = gate.https_addr();
    let tcp = connect_from(Ipv4Addr::LOCALHOST, addr, Some(4096)).await;
    let mut tls = tls_over(&connector, tcp).await.expect("TLS");
    let request = format!(
        "GET /stream?bytes={BODY} HTTP/1.1\r\nHost: localhost:{}\r\nCookie: {cookie}\r\n\r\n",
        addr.port()
    );
    tls.write_all(request.as_bytes()).await.expect("request");
    let mut status = [0u8; 12];
    within(T, "status line", tls.read_exact(&mut status))
        .await
        .expect("status line");
    assert_eq!(&status, b"HTTP/1.1 200");
    // The client reads no more. nbgate gives up on it and closes the download's upstream
    // connection too.
    poll_until(T, "the download's upstream connection", || async {
        (upstream.open_connections() > upstream_before).then_some(())
    })
    .await;
    gate.wait_for_line(&["server.send_timeout"], T).await;
    poll_until(T, "nbgate to close the download's upstream", || async {
        (upstream.open_connections() <= upstream_before).then_some(())
    })
    .await;
    // What the client finds when it reads again: the end of the connection, long before the
    // end of the body.
    let mut received = 0u64;
    let mut buf = vec![0u8; 64 * 1024];
    within(T, "the end of the cut-off download", async {
        while let Ok(n) = tls.read(&mut buf).await {
            if n == 0 {
                break;
            }
            received += n as u64;
        }
    })
    .await;
    assert!(received < BODY / 4, "{received} bytes of {BODY}");

    // The WebSocket, silent longer than send_timeout, still works.
    ws.send(Message::Text("still here".into()))
        .await
        .expect("send on the idle WebSocket");
    let echo = within(T, "echo", ws.next())
        .await
        .expect("an answer")
        .expect("a message");
    assert_eq!(echo.into_text().expect("text"), "still here");
}

/// `server.send_timeout` is a limit on a client that takes nothing, not on a slow one: a
/// reader over TLS on a tiny receive buffer that takes 16 KiB every 1.5 seconds (three
/// quarters of the 2-second timeout) gets the whole 160 KiB download, though every byte of it
/// waits on the socket and the whole download takes ten times the timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bursty_reader_over_tls_gets_the_whole_download() {
    const BODY: usize = 160 * 1024;
    let upstream = TestUpstream::start().await;
    let (gate, cookie) = logged_in_with_send_timeout_2s(&upstream).await;
    let connector = TlsConnector::from(Arc::new(gate.tls_client_config(&[b"http/1.1"])));
    let addr = gate.https_addr();
    let tcp = connect_from(Ipv4Addr::LOCALHOST, addr, Some(4096)).await;
    let mut tls = tls_over(&connector, tcp).await.expect("TLS");
    let request = format!(
        "GET /stream?bytes={BODY} HTTP/1.1\r\nHost: localhost:{}\r\nCookie: {cookie}\r\n\
         Connection: close\r\n\r\n",
        addr.port()
    );
    tls.write_all(request.as_bytes()).await.expect("request");
    let mut received = Vec::new();
    let mut buf = vec![0u8; 4096];
    let done = within(Duration::from_secs(120), "the whole download", async {
        loop {
            let burst_end = received.len() + 16 * 1024;
            while received.len() < burst_end {
                match tls.read(&mut buf).await {
                    Ok(0) => return Ok(()),
                    Ok(n) => received.extend_from_slice(&buf[..n]),
                    Err(e) => return Err(e),
                }
            }
            // The pace of a slow link: nothing taken for a while.
            tokio::time::sleep(Duration::from_millis(1500)).await;
        }
    })
    .await;
    let head_end = received
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a response head")
        + 4;
    assert!(received.starts_with(b"HTTP/1.1 200"));
    done.expect("the connection ends cleanly after the body");
    assert_eq!(received.len() - head_end, BODY, "the whole body");
    assert!(!gate.log_contains("server.send_timeout"));
}
