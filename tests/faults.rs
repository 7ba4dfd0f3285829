//! Faults around nbgate: an upstream that accepts and never answers, or trickles its answer,
//! hits `upstream.response_timeout` (504) while other users are served; a client that gives up
//! before the answer leaves a log line saying so; Jupyter killed in the middle of a download and
//! of a WebSocket gives clients a clean end, leaves nbgate serving, and leaks no descriptor.

mod common;

use std::time::Duration;

use common::kernel::start_kernel;
use common::nbgate::{log_field, TEST_API_TOKEN, TEST_USER};
use common::{poll_until, within, Jupyter, Nbgate, TestUpstream};
use futures_util::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const T: Duration = Duration::from_secs(30);

/// An upstream that answers `/ok` at once, never answers `/hang`, and sends `/trickle`'s head
/// one byte every 200 ms without ever finishing it. Runs until the test ends.
async fn faulty_upstream() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut b = [0u8; 4096];
                loop {
                    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                        match s.read(&mut b).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&b[..n]),
                        }
                    }
                    let head = String::from_utf8_lossy(&buf).into_owned();
                    let end = buf.windows(4).position(|w| w == b"\r\n\r\n").expect("end") + 4;
                    buf.drain(..end);
                    let path = head.split_whitespace().nth(1).unwrap_or("/").to_owned();
                    match path.as_str() {
                        "/ok" => {
                            let answer = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
                            if s.write_all(answer).await.is_err() {
                                return;
                            }
                        }
                        "/trickle" => {
                            for byte in b"HTTP/1.1 200 OK\r\nX-Slow: "
                                .iter()
                                .chain(std::iter::repeat(&b'a'))
                            {
                                if s.write_all(&[*byte]).await.is_err() {
                                    return;
                                }
                                tokio::time::sleep(Duration::from_millis(200)).await;
                            }
                        }
                        _ => {
                            // Hold the connection, answer nothing.
                            while s.read(&mut b).await.is_ok_and(|n| n > 0) {}
                            return;
                        }
                    }
                }
            });
        }
    });
    format!("http://{addr}")
}

async fn gate_for_faulty() -> Nbgate {
    let upstream = faulty_upstream().await;
    Nbgate::builder()
        .upstream(&upstream)
        .set("upstream.response_timeout", "5s")
        .start()
        .await
}

async fn get(gate: &Nbgate, client: &reqwest::Client, path: &str) -> reqwest::Response {
    client
        .get(gate.url(path))
        .headers(gate.auth_headers())
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {path}: {e}"))
}

#[tokio::test]
async fn a_silent_or_trickling_upstream_times_out_while_others_are_served() {
    let gate = gate_for_faulty().await;
    let client = gate.client();
    let started = tokio::time::Instant::now();
    let hang = tokio::spawn({
        let (client, url, headers) = (client.clone(), gate.url("/hang"), gate.auth_headers());
        async move {
            let r = client
                .get(url)
                .headers(headers)
                .send()
                .await
                .expect("GET /hang");
            (r.status(), r.text().await.expect("body"), started.elapsed())
        }
    });
    // Served while /hang waits (ordering, not speed: /hang cannot end before its 5 s).
    let ok = within(T, "GET /ok", get(&gate, &client, "/ok")).await;
    assert_eq!(ok.status(), 200);
    assert!(
        !hang.is_finished(),
        "GET /ok waited for the silent upstream's request"
    );
    let (status, body, took) = within(T, "GET /hang", hang).await.expect("task");
    assert_eq!(status, 504, "{body}");
    assert!(body.contains("upstream_timeout"), "{body}");
    assert!(took >= Duration::from_secs(5), "{took:?}");
    let trickle = within(T, "GET /trickle", get(&gate, &client, "/trickle")).await;
    assert_eq!(trickle.status(), 504);
    // Logged as Jupyter's failure, once.
    gate.wait_for_line(&["upstream failed", "/hang"], T).await;
    assert_eq!(get(&gate, &client, "/ok").await.status(), 200);
}

#[tokio::test]
async fn a_client_that_gives_up_before_the_answer_is_logged() {
    let gate = gate_for_faulty().await;
    for (client, proto) in [(gate.client(), "h2"), (gate.client_http1(), "http/1.1")] {
        // The token verified once first (PBKDF2 takes longer than the client waits below): the
        // line names the user only when the request got as far as being authenticated.
        assert_eq!(get(&gate, &client, "/ok").await.status(), 200);
        let path = format!("/hang-{}", proto.replace('/', ""));
        let r = client
            .get(gate.url(&path))
            .headers(gate.auth_headers())
            .timeout(Duration::from_millis(300))
            .send()
            .await;
        assert!(
            r.is_err(),
            "{proto}: the request should time out on the client"
        );
        let line = gate
            .wait_for_line(
                &["client gave up before the answer", &format!("path={path}")],
                T,
            )
            .await;
        assert!(line.contains("duration_ms="), "{line}");
        assert!(line.contains("client=127.0.0.1"), "{line}");
        // Who it was: the token's user and the token's id, never the token.
        assert_eq!(
            log_field(&line, "user").as_deref(),
            Some(TEST_USER),
            "{line}"
        );
        assert_eq!(log_field(&line, "auth").as_deref(), Some("token"), "{line}");
        assert!(!line.contains(TEST_API_TOKEN), "{line}");
    }
}

/// Open descriptors and threads of a process.
fn fds_and_threads(pid: u32) -> (usize, usize) {
    let count = |dir: String| std::fs::read_dir(dir).map_or(0, |d| d.count());
    (
        count(format!("/proc/{pid}/fd")),
        count(format!("/proc/{pid}/task")),
    )
}

#[tokio::test]
async fn jupyter_killed_mid_download_and_mid_websocket_ends_both_cleanly_and_leaks_nothing() {
    let mut jupyter = Jupyter::start().await;
    // A file big enough that the download is still running when Jupyter dies.
    let big = jupyter.root_dir().join("big.bin");
    std::fs::File::create(&big)
        .and_then(|f| f.set_len(256 << 20))
        .expect("sparse file");
    let gate = Nbgate::start_for(&jupyter).await;
    let client = gate.client();
    // Warm up (pools, workers), then take the baseline.
    assert_eq!(get(&gate, &client, "/api/status").await.status(), 200);
    let kernel = start_kernel(&gate).await;
    let (fds_before, threads_before) = fds_and_threads(gate.pid());

    let mut download = get(&gate, &client, "/files/big.bin").await;
    assert_eq!(download.status(), 200);
    let first = within(T, "first bytes", download.chunk())
        .await
        .expect("chunk");
    assert!(first.is_some());
    let mut ws = gate
        .ws_connect(&format!("/api/kernels/{kernel}/channels"))
        .await;

    jupyter.stop();
    // The download ends with an error (not a silently short "complete" file), the WebSocket
    // ends (close or error), both promptly.
    let rest = within(T, "download end", async {
        loop {
            match download.chunk().await {
                Ok(Some(_)) => continue,
                Ok(None) => return Ok(()),
                Err(e) => return Err(e),
            }
        }
    })
    .await;
    assert!(rest.is_err(), "a cut download must not look complete");
    within(T, "websocket end", async {
        while let Some(Ok(_)) = ws.next().await {}
    })
    .await;
    drop(ws);
    drop(download);

    // nbgate keeps serving: Jupyter's absence is a 502, its return is served again.
    assert_eq!(get(&gate, &client, "/api/status").await.status(), 502);
    jupyter.restart().await;
    assert_eq!(get(&gate, &client, "/api/status").await.status(), 200);
    drop(client);
    // Nothing leaked: the descriptors and threads of the baseline, once idle pools close.
    poll_until(T, "nbgate's descriptors back to the baseline", || {
        let (fds, threads) = fds_and_threads(gate.pid());
        async move { (fds <= fds_before && threads <= threads_before).then_some(()) }
    })
    .await;
}

#[tokio::test]
async fn handshakes_a_client_sends_at_will_do_not_flood_the_log() {
    // An upstream that answers: the health page asked below says 503 without one.
    let upstream = TestUpstream::start().await;
    let gate = Nbgate::builder().upstream(&upstream.url()).start().await;
    let addr = gate.https_addr();
    let lines_before = gate.log_lines().len();
    // An IP address as SNI (what wrk and many scripts send): rustls warns about each one.
    for _ in 0..20 {
        let out = tokio::task::spawn_blocking(move || {
            std::process::Command::new("openssl")
                .args([
                    "s_client",
                    "-connect",
                    &addr.to_string(),
                    "-servername",
                    "127.0.0.1",
                ])
                .stdin(std::process::Stdio::null())
                .output()
        });
        within(T, "openssl s_client", out)
            .await
            .expect("task")
            .expect("openssl");
    }
    // The server is still fine, and the 20 handshakes added no warning or error line.
    assert_eq!(
        get(&gate, &gate.client(), "/_nbgate/health").await.status(),
        200
    );
    let new: Vec<String> = gate.log_lines()[lines_before..].to_vec();
    let loud: Vec<&String> = new
        .iter()
        .filter(|l| l.contains(" WARN ") || l.contains(" ERROR "))
        .collect();
    assert!(loud.is_empty(), "client-triggered warnings: {loud:#?}");
}
