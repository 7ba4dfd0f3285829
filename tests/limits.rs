//! Resource limits that keep one client from exhausting nbgate: header size and count (431),
//! slow header senders (`header_read_timeout`), stalled TLS handshakes
//! (`tls_handshake_timeout`) and the connection cap (`max_connections`).

mod common;

use std::time::{Duration, Instant};

use common::{within, Nbgate, TestUpstream};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const T: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_header_gets_431() {
    let upstream = TestUpstream::start().await;
    let gate = Nbgate::builder()
        .upstream(&upstream.url())
        .set("server.max_header_bytes", "32KiB")
        .start()
        .await;
    let client = gate.client_http1();

    let fits = within(
        T,
        "request with a 16 KiB header",
        client
            .get(gate.url("/fits"))
            .header("x-big", "a".repeat(16 * 1024))
            .send(),
    )
    .await
    .expect("16 KiB header");
    assert_eq!(fits.status(), 200);

    let big = within(
        T,
        "request with a 40 KiB header",
        client
            .get(gate.url("/too-big"))
            .header("x-big", "a".repeat(40 * 1024))
            .send(),
    )
    .await
    .expect("40 KiB header gets a response, not a reset");
    assert_eq!(big.status(), 431);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_many_headers_get_431() {
    let upstream = TestUpstream::start().await;
    let gate = Nbgate::builder()
        .upstream(&upstream.url())
        .set("server.max_headers", 100)
        .start()
        .await;
    let mut request = gate.client_http1().get(gate.url("/many"));
    for i in 0..150 {
        request = request.header(format!("x-h{i}"), "1");
    }
    let response = within(T, "request with 150 headers", request.send())
        .await
        .expect("150 headers get a response, not a reset");
    assert_eq!(response.status(), 431);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_trickling_headers_is_disconnected_after_header_read_timeout() {
    let gate = Nbgate::builder()
        .set("server.header_read_timeout", "2s")
        .start()
        .await;
    let tls = gate.tls_connect().await;
    let (mut reader, mut writer) = tokio::io::split(tls);
    let started = Instant::now();

    let closed = async {
        let mut buf = [0u8; 4096];
        loop {
            match reader.read(&mut buf).await {
                Ok(0) | Err(_) => return started.elapsed(),
                // A 408 before closing is fine; keep reading until the close.
                Ok(_) => continue,
            }
        }
    };
    // One byte per second: every single read makes progress, only the total is slow.
    let trickle = async {
        let head = format!(
            "GET / HTTP/1.1\r\nHost: localhost:{}\r\n{}X-Slow: {}",
            gate.https_addr().port(),
            gate.auth_header_lines(),
            "a".repeat(60)
        );
        for byte in head.as_bytes() {
            if writer.write_all(&[*byte]).await.is_err() || writer.flush().await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        // Not reached in time: the header never completes.
        std::future::pending::<()>().await;
    };
    let elapsed = tokio::select! {
        elapsed = closed => elapsed,
        () = trickle => unreachable!(),
        () = tokio::time::sleep(Duration::from_secs(6)) => {
            panic!("a client trickling headers was still connected after 6 s (timeout 2 s)")
        }
    };
    assert!(
        elapsed >= Duration::from_millis(1500),
        "disconnected after {elapsed:?}, before the 2 s header timeout"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_tls_handshake_is_dropped_after_tls_handshake_timeout() {
    let gate = Nbgate::builder()
        .set("server.tls_handshake_timeout", "2s")
        .start()
        .await;
    let mut tcp = gate.tcp_connect().await;
    let started = Instant::now();
    let mut buf = [0u8; 1024];
    within(
        Duration::from_secs(6),
        "a silent TCP client to be dropped (timeout 2 s)",
        async {
            loop {
                match tcp.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => continue,
                }
            }
        },
    )
    .await;
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_millis(1500),
        "dropped after {elapsed:?}, before the 2 s handshake timeout"
    );
    // Still serving others.
    let response = within(T, "GET", gate.client().get(gate.url("/")).send())
        .await
        .expect("GET after a dropped handshake");
    assert_eq!(response.status(), 502);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_beyond_max_connections_are_not_served_until_one_closes() {
    let upstream = TestUpstream::start().await;
    let gate = Nbgate::builder()
        .upstream(&upstream.url())
        .set("server.max_connections", 2)
        .start()
        .await;
    let held_a = gate.tls_connect().await;
    let held_b = gate.tls_connect().await;

    // A third client is held off (left in the backlog or refused): within 1.5 s it must not
    // get a response.
    let third = tokio::time::timeout(
        Duration::from_millis(1500),
        gate.client_http1().get(gate.url("/third")).send(),
    )
    .await;
    if let Ok(Ok(response)) = &third {
        panic!(
            "a connection beyond max_connections = 2 was served: {}",
            response.status()
        );
    }
    drop(third);

    drop(held_a);
    drop(held_b);
    let response = within(
        Duration::from_secs(10),
        "a request once the held connections closed",
        async {
            loop {
                if let Ok(response) = gate.client_http1().get(gate.url("/after")).send().await {
                    return response;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        },
    )
    .await;
    assert_eq!(response.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_client_resetting_streams_in_a_loop_is_sent_away_while_others_are_served() {
    // Rapid Reset (CVE-2023-44487) after acceptance: each stream reaches nbgate's handler and
    // Jupyter before the client cancels it, so h2's own pending-accept limit never sees it.
    let upstream = TestUpstream::start().await;
    let gate = Nbgate::builder().upstream(&upstream.url()).start().await;
    let normal = gate.client();
    let auth = format!("token {}", common::nbgate::TEST_API_TOKEN);
    let tls = gate.tls_connect_alpn(&[b"h2"]).await;
    let (mut send, conn) = within(T, "h2 handshake", h2::client::handshake(tls))
        .await
        .expect("h2 handshake");
    let conn = tokio::spawn(conn);
    let mut sent = 0;
    let mut served = 0;
    loop {
        assert!(sent < 600, "still open after {sent} reset streams");
        let Ok(ready) = within(T, "h2 stream slot", send.ready()).await else {
            break;
        };
        send = ready;
        let request = http::Request::get(gate.url("/stream?bytes=100&chunk=1&delay_ms=10000"))
            .header("authorization", auth.as_str())
            .body(())
            .expect("request");
        let Ok((head, mut stream)) = send.send_request(request, true) else {
            break;
        };
        sent += 1;
        // The head shows nbgate accepted the stream and asked upstream; then cancel.
        if within(T, "response head", head).await.is_err() {
            break;
        }
        stream.send_reset(h2::Reason::CANCEL);
        if sent % 25 == 0 {
            let answer = within(T, "normal request", normal.get(gate.url("/ok")).send())
                .await
                .expect("normal request");
            assert_eq!(answer.status(), 200);
            served += 1;
        }
    }
    let ended = within(T, "h2 connection end", conn)
        .await
        .expect("connection task");
    let reason = ended.as_ref().err().and_then(h2::Error::reason);
    assert_eq!(reason, Some(h2::Reason::ENHANCE_YOUR_CALM), "{ended:?}");
    assert!(sent <= 250, "closed only after {sent} streams");
    assert!(
        served >= 4,
        "normal client served {served} times during the flood"
    );
    let after = within(T, "after the flood", normal.get(gate.url("/after")).send())
        .await
        .expect("request after the flood");
    assert_eq!(after.status(), 200);
}
