//! Access policy end to end, with different loopback source addresses as
//! different clients (127.0.0.2, 127.0.0.3, ::1 ...): allow/deny lists at
//! accept, forwarding headers only from trusted proxies, PROXY protocol,
//! per-client rate limits and connection caps, login lockout, and isolation
//! of logged-in users from a login flood.

mod common;

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use common::login::{bare_client_from, login_as, session_cookie};
use common::nbgate::{TEST_PASSWORD, TEST_USER};
use common::{within, Jupyter, Nbgate, TestUpstream};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const T: Duration = Duration::from_secs(30);

fn ip(s: &str) -> IpAddr {
    s.parse().expect("ip")
}

/// Connects from `local` and expects the server to close the socket without
/// sending a byte, while we have not sent one either: a TLS server would sit
/// waiting for our ClientHello, so a close means the policy refused us
/// before any TLS work.
async fn assert_closed_before_tls(local: IpAddr, addr: SocketAddr) {
    let mut tcp = match Nbgate::tcp_connect_from(local, addr).await {
        Ok(tcp) => tcp,
        // Refused at connect is also "before TLS".
        Err(_) => return,
    };
    let mut buf = [0u8; 16];
    match tokio::time::timeout(Duration::from_secs(5), tcp.read(&mut buf)).await {
        Ok(Ok(0)) | Ok(Err(_)) => {}
        Ok(Ok(n)) => panic!("{local} got {n} bytes from {addr}; expected a closed socket"),
        Err(_) => panic!("{local} -> {addr}: connection still open after 5 s"),
    }
}

/// GET `/echo` (the test upstream describes the request it received) as the
/// test user (API token), from `local`; returns (status, upstream's view).
async fn echo_from(
    gate: &Nbgate,
    local: IpAddr,
    extra: &[(&str, &str)],
) -> Result<(u16, serde_json::Value), reqwest::Error> {
    let mut req = gate.client_from(local).get(gate.url("/echo"));
    for (k, v) in extra {
        req = req.header(*k, *v);
    }
    let r = req.send().await?;
    let status = r.status().as_u16();
    let body = r.json().await.unwrap_or(serde_json::Value::Null);
    Ok((status, body))
}

/// The value of a request header as the upstream saw it.
fn upstream_header(echo: &serde_json::Value, name: &str) -> Option<String> {
    echo["headers"].as_array()?.iter().find_map(|pair| {
        let pair = pair.as_array()?;
        (pair[0].as_str()? == name).then(|| pair[1].as_str().map(str::to_owned))?
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn denied_addresses_are_closed_before_tls_and_allowed_ones_work() {
    let up = TestUpstream::start().await;
    // Listener 3 is an IPv6 socket bound to a v4-mapped address: its IPv4
    // clients appear as ::ffff:127.0.0.x and must match IPv4 rules.
    let gate = Nbgate::builder()
        .upstream(&up.url())
        .set(
            "server.listen",
            toml::Value::Array(vec![
                "127.0.0.1:0".into(),
                "[::1]:0".into(),
                "[::ffff:127.0.0.1]:0".into(),
            ]),
        )
        .set(
            "policy.allow",
            toml::Value::Array(vec!["127.0.0.0/8".into()]),
        )
        .set(
            "policy.deny",
            toml::Value::Array(vec!["127.0.0.3".into(), "::1".into()]),
        )
        .start()
        .await;
    let addrs = gate.https_addrs().to_vec();
    let (v4, v6, mapped) = (
        addrs[0],
        addrs[1],
        SocketAddr::new(ip("127.0.0.1"), addrs[2].port()),
    );

    let (status, _) = echo_from(&gate, ip("127.0.0.2"), &[])
        .await
        .expect("allowed client");
    assert_eq!(status, 200);
    assert_closed_before_tls(ip("127.0.0.3"), v4).await;
    assert_closed_before_tls(ip("::1"), v6).await;
    assert_closed_before_tls(ip("127.0.0.3"), mapped).await;
    // The allowed client through the mapped listener completes TLS.
    let tcp = Nbgate::tcp_connect_from(ip("127.0.0.2"), mapped)
        .await
        .expect("connect");
    gate.tls_handshake(tcp, &[b"http/1.1"])
        .await
        .expect("allowed v4-mapped client gets TLS");
    gate.wait_for_line(
        &["connection_refused", "client=127.0.0.3", "not_allowed"],
        T,
    )
    .await;

    // An IPv6-only allow list: ::1 works, IPv4 clients are refused.
    let gate = Nbgate::builder()
        .upstream(&up.url())
        .set(
            "server.listen",
            toml::Value::Array(vec!["127.0.0.1:0".into(), "[::1]:0".into()]),
        )
        .set("policy.allow", toml::Value::Array(vec!["::1/128".into()]))
        .start()
        .await;
    let addrs = gate.https_addrs().to_vec();
    assert_closed_before_tls(ip("127.0.0.2"), addrs[0]).await;
    let tcp = Nbgate::tcp_connect_from(ip("::1"), addrs[1])
        .await
        .expect("connect ::1");
    gate.tls_handshake(tcp, &[b"http/1.1"])
        .await
        .expect("::1 is allowed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spoofed_forwarded_for_is_ignored_from_untrusted_peers_and_used_from_trusted_ones() {
    let up = TestUpstream::start().await;
    let gate = Nbgate::builder()
        .upstream(&up.url())
        .set(
            "policy.allow",
            toml::Value::Array(vec![
                "127.0.0.2".into(),
                "127.0.0.4".into(),
                "198.51.100.0/24".into(),
            ]),
        )
        .set(
            "policy.trusted_proxies",
            toml::Value::Array(vec!["127.0.0.4".into()]),
        )
        .start()
        .await;

    // An untrusted, not allowed client cannot talk its way in.
    let spoof = echo_from(&gate, ip("127.0.0.3"), &[("x-forwarded-for", "127.0.0.2")]).await;
    assert!(spoof.is_err(), "127.0.0.3 got through: {spoof:?}");

    // An allowed but untrusted client's header is ignored and replaced.
    let (status, echo) = echo_from(
        &gate,
        ip("127.0.0.2"),
        &[("x-forwarded-for", "198.51.100.9")],
    )
    .await
    .expect("request");
    assert_eq!(status, 200);
    assert_eq!(
        upstream_header(&echo, "x-forwarded-for").as_deref(),
        Some("127.0.0.2")
    );

    // A trusted proxy's header names the client, for upstream and the log.
    let (status, echo) = echo_from(
        &gate,
        ip("127.0.0.4"),
        &[("x-forwarded-for", "203.0.113.50, 198.51.100.9")],
    )
    .await
    .expect("request");
    assert_eq!(status, 200);
    assert_eq!(
        upstream_header(&echo, "x-forwarded-for").as_deref(),
        Some("198.51.100.9")
    );
    gate.wait_for_line(&["nbgate::access", "client=198.51.100.9", "/echo"], T)
        .await;
    // Proxies append to X-Forwarded-For and pass a client's own Forwarded
    // header through: only the configured header (default XFF) is read.
    let (status, _) = echo_from(
        &gate,
        ip("127.0.0.4"),
        &[
            ("forwarded", "for=198.51.100.10"),
            ("x-forwarded-for", "203.0.113.5"),
        ],
    )
    .await
    .expect("request");
    assert_eq!(
        status, 403,
        "a client-written Forwarded header was believed"
    );
    // Garbage the walk reaches hides the client: refused, not taken for the
    // (allowed) proxy's own address.
    let (status, _) = echo_from(&gate, ip("127.0.0.4"), &[("x-forwarded-for", "junk")])
        .await
        .expect("request");
    assert_eq!(status, 403);

    // ... and the allowlist applies to that client.
    let (status, body) = echo_from(
        &gate,
        ip("127.0.0.4"),
        &[("x-forwarded-for", "203.0.113.5")],
    )
    .await
    .expect("request");
    assert_eq!(status, 403);
    assert_eq!(body["error"], "forbidden", "{body}");
}

/// A PROXY protocol v2 header for a TCP connection from `src` (IPv6).
fn proxy_v2_tcp6(src: std::net::Ipv6Addr, src_port: u16) -> Vec<u8> {
    let mut h = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    h.push(0x21); // version 2, PROXY
    h.push(0x21); // AF_INET6, STREAM
    h.extend_from_slice(&36u16.to_be_bytes());
    h.extend_from_slice(&src.octets());
    h.extend_from_slice(&std::net::Ipv6Addr::LOCALHOST.octets());
    h.extend_from_slice(&src_port.to_be_bytes());
    h.extend_from_slice(&8443u16.to_be_bytes());
    h
}

/// Connects from `local`, sends `header`, then a request over TLS; returns
/// the raw response, or `None` when the connection was refused.
async fn request_after_proxy_header(gate: &Nbgate, local: IpAddr, header: &[u8]) -> Option<String> {
    let mut tcp = Nbgate::tcp_connect_from(local, gate.https_addr())
        .await
        .ok()?;
    tcp.write_all(header).await.ok()?;
    let mut tls = gate.tls_handshake(tcp, &[b"http/1.1"]).await.ok()?;
    let head =
        gate.with_auth_lines("GET /echo HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    tls.write_all(head.as_bytes()).await.ok()?;
    let mut out = Vec::new();
    within(T, "response", tls.read_to_end(&mut out))
        .await
        .ok()?;
    Some(String::from_utf8_lossy(&out).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_protocol_from_a_trusted_peer_sets_the_client_and_untrusted_peers_are_refused() {
    let up = TestUpstream::start().await;
    let gate = Nbgate::builder()
        .upstream(&up.url())
        .set("policy.proxy_protocol", true)
        .set(
            "policy.trusted_proxies",
            toml::Value::Array(vec!["127.0.0.4".into()]),
        )
        .set(
            "policy.allow",
            toml::Value::Array(vec!["192.0.2.10".into(), "2001:db8::/32".into()]),
        )
        .start()
        .await;

    let v1 = b"PROXY TCP4 192.0.2.10 127.0.0.1 5555 8443\r\n";
    let resp = request_after_proxy_header(&gate, ip("127.0.0.4"), v1)
        .await
        .expect("v1 from trusted proxy");
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    assert!(
        resp.contains("[\"x-forwarded-for\",\"192.0.2.10\"]"),
        "{resp}"
    );

    let v2 = proxy_v2_tcp6("2001:db8::7".parse().expect("v6"), 6000);
    let resp = request_after_proxy_header(&gate, ip("127.0.0.4"), &v2)
        .await
        .expect("v2 from trusted proxy");
    assert!(
        resp.contains("[\"x-forwarded-for\",\"2001:db8::7\"]"),
        "{resp}"
    );

    // The named client must pass the allowlist.
    let outsider = b"PROXY TCP4 192.0.2.99 127.0.0.1 5555 8443\r\n";
    assert!(request_after_proxy_header(&gate, ip("127.0.0.4"), outsider)
        .await
        .is_none());
    // Nobody else may send a PROXY header (or connect at all).
    assert!(request_after_proxy_header(&gate, ip("127.0.0.3"), v1)
        .await
        .is_none());
    gate.wait_for_line(
        &[
            "connection_refused",
            "client=127.0.0.3",
            "proxy_protocol_from_untrusted_peer",
        ],
        T,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn burst_then_429_with_retry_after_and_recovery_after_the_wait() {
    let up = TestUpstream::start().await;
    let gate = Nbgate::builder()
        .upstream(&up.url())
        .set("policy.rate_limit.requests_per_second", 1)
        .set("policy.rate_limit.burst", 3)
        .start()
        .await;
    // An API client verifies its token once (spending one anonymous unit,
    // as every not-yet-verified token does); from then on it uses the
    // logged-in budget.
    let (status, _) = echo_from(&gate, ip("127.0.0.2"), &[])
        .await
        .expect("token request");
    assert_eq!(status, 200);
    let anon = bare_client_from(&gate, Some(ip("127.0.0.2")));
    // Burst 3 minus the token's unit leaves 2; the token's verification
    // (PBKDF2, about a second in a debug build) may have refilled one more.
    let mut answered = 0;
    let limited = loop {
        let r = anon.get(gate.url("/api/status")).send().await.expect("GET");
        if r.status() != 401 {
            break r;
        }
        answered += 1;
        assert!(answered <= 3, "burst 3 must be enforced");
    };
    assert!(
        answered >= 2,
        "the burst allows 2 after the token: {answered}"
    );
    assert_eq!(limited.status(), 429);
    let retry: u64 = limited.headers()["retry-after"]
        .to_str()
        .expect("ascii")
        .parse()
        .expect("seconds");
    assert_eq!(
        retry, 1,
        "one request per second: the next slot is 1 s away"
    );
    let body: serde_json::Value = limited.json().await.expect("json");
    assert_eq!(body["error"], "rate_limited");
    let page = anon
        .get(gate.url("/lab"))
        .header("accept", "text/html")
        .send()
        .await
        .expect("GET page");
    assert_eq!(page.status(), 429);
    assert!(page.headers()["content-type"]
        .to_str()
        .expect("ascii")
        .starts_with("text/html"));

    // Logged-in users have their own budget, even from the same address.
    let (status, _) = echo_from(&gate, ip("127.0.0.2"), &[])
        .await
        .expect("token request");
    assert_eq!(status, 200);
    // Another address has its own budget too.
    let other = bare_client_from(&gate, Some(ip("127.0.0.3")));
    assert_eq!(
        other
            .get(gate.url("/api/status"))
            .send()
            .await
            .expect("GET")
            .status(),
        401
    );

    // Waiting what Retry-After said is enough.
    tokio::time::sleep(Duration::from_secs(retry)).await;
    let after = anon.get(gate.url("/api/status")).send().await.expect("GET");
    assert_eq!(after.status(), 401, "budget refilled after Retry-After");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simultaneous_wrong_passwords_get_no_more_guesses_than_the_threshold() {
    let up = TestUpstream::start().await;
    let gate = Nbgate::builder()
        .upstream(&up.url())
        .set("policy.lockout.address_threshold", 3)
        // Room for all eight to be verified at once, as on a big machine.
        .set("auth.max_concurrent_verifications", 8)
        .start()
        .await;
    let attacker = bare_client_from(&gate, Some(ip("127.0.0.2")));
    let guesses = (0..8).map(|_| login_as(&gate, &attacker, "/", TEST_USER, "not-the-password"));
    let answers = within(
        T,
        "eight simultaneous logins",
        futures_util::future::join_all(guesses),
    )
    .await;
    let mut statuses: Vec<u16> = answers.iter().map(|r| r.status().as_u16()).collect();
    statuses.sort_unstable();
    // Three were verified (two wrong-password pages, then the lock); the
    // other five waited for them and were refused, none verified.
    assert_eq!(statuses, [401, 401, 429, 429, 429, 429, 429, 429]);
    gate.wait_for_line(
        &["nbgate::audit", "event=\"lockout\"", "client=127.0.0.2"],
        T,
    )
    .await;
    let verified = gate
        .log_lines()
        .iter()
        .filter(|l| l.contains("event=\"login_failure\"") && l.contains("client=127.0.0.2"))
        .count();
    assert_eq!(verified, 3, "{}", gate.log_text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_wrong_passwords_lock_the_address_not_the_owner_elsewhere_and_fail2ban_matches() {
    let up = TestUpstream::start().await;
    let gate = Nbgate::builder()
        .upstream(&up.url())
        .set("policy.lockout.duration", "3s")
        .start()
        .await;
    let attacker = bare_client_from(&gate, Some(ip("127.0.0.2")));
    for i in 1..=10 {
        let r = within(
            T,
            "wrong login",
            login_as(&gate, &attacker, "/", TEST_USER, "not-the-password"),
        )
        .await;
        let expected = if i < 10 { 401 } else { 429 };
        assert_eq!(r.status(), expected, "attempt {i}");
    }
    // Locked: even the right password is refused, before hashing, and the
    // refusal is held for `refusal_delay` (default 1 s) so that a guesser
    // cannot get thousands of answers a second.
    let asked = std::time::Instant::now();
    let locked = within(
        T,
        "locked login",
        login_as(&gate, &attacker, "/", TEST_USER, TEST_PASSWORD),
    )
    .await;
    assert_eq!(locked.status(), 429);
    assert!(
        asked.elapsed() >= Duration::from_secs(1),
        "a refused attempt is answered only after the refusal delay: {:?}",
        asked.elapsed()
    );
    let retry: u64 = locked.headers()["retry-after"]
        .to_str()
        .expect("ascii")
        .parse()
        .expect("seconds");
    assert!((1..=3).contains(&retry), "retry-after {retry}");
    let page = locked.text().await.expect("html");
    assert!(page.contains("role=\"alert\""), "{page}");
    assert!(
        page.contains(&format!("{retry} second")),
        "page must say when to retry: {page}"
    );
    gate.wait_for_line(
        &["nbgate::audit", "event=\"lockout\"", "client=127.0.0.2"],
        T,
    )
    .await;

    // The owner, from another address, logs in meanwhile.
    let owner = bare_client_from(&gate, Some(ip("127.0.0.3")));
    let ok = within(
        T,
        "owner login",
        login_as(&gate, &owner, "/", TEST_USER, TEST_PASSWORD),
    )
    .await;
    assert_eq!(ok.status(), 303);
    let _ = session_cookie(&ok);

    // The lockout expires.
    tokio::time::sleep(Duration::from_secs(retry)).await;
    let later = within(
        T,
        "login after lockout",
        login_as(&gate, &attacker, "/", TEST_USER, TEST_PASSWORD),
    )
    .await;
    assert_eq!(later.status(), 303);

    // The shipped fail2ban filter matches exactly the failures and the lockout.
    let log = gate.dir().join("nbgate.log");
    std::fs::write(&log, gate.log_text()).expect("write log");
    let filter = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/config/fail2ban/filter.d/nbgate.conf"
    );
    let out = std::process::Command::new("fail2ban-regex")
        .arg("--print-all-matched")
        .arg(&log)
        .arg(filter)
        .output()
        .expect("run fail2ban-regex (Debian package fail2ban)");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let matched = text
        .lines()
        .find(|l| l.starts_with("Lines:"))
        .and_then(|l| l.split(',').find(|p| p.contains("matched")))
        .and_then(|p| p.split_whitespace().next().map(str::to_owned))
        .and_then(|n| n.parse::<u32>().ok())
        .unwrap_or_else(|| panic!("no match count in fail2ban-regex output:\n{text}"));
    // 10 failures + 1 lockout + 1 refused while locked.
    assert_eq!(matched, 12, "{text}");
    assert!(
        !text.contains("127.0.0.3"),
        "a successful login must not match: {text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_per_client_are_capped() {
    let up = TestUpstream::start().await;
    let gate = Nbgate::builder()
        .upstream(&up.url())
        .set("policy.max_connections_per_client", 2)
        .start()
        .await;
    let addr = gate.https_addr();
    let mut held = Vec::new();
    for _ in 0..2 {
        let tcp = Nbgate::tcp_connect_from(ip("127.0.0.2"), addr)
            .await
            .expect("connect");
        held.push(gate.tls_handshake(tcp, &[b"http/1.1"]).await.expect("tls"));
    }
    assert_closed_before_tls(ip("127.0.0.2"), addr).await;
    let tcp = Nbgate::tcp_connect_from(ip("127.0.0.3"), addr)
        .await
        .expect("connect");
    gate.tls_handshake(tcp, &[b"http/1.1"])
        .await
        .expect("another client is not affected");
    gate.wait_for_line(&["connection_refused", "too_many_connections"], T)
        .await;
    // A closed connection gives its slot back.
    held.pop();
    common::poll_until(T, "slot returned", || async {
        let tcp = Nbgate::tcp_connect_from(ip("127.0.0.2"), addr).await.ok()?;
        gate.tls_handshake(tcp, &[b"http/1.1"]).await.ok()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_flood_does_not_stall_a_logged_in_kernel() {
    let jupyter = Jupyter::start().await;
    let gate = Nbgate::builder()
        .jupyter(&jupyter)
        // Let the flood really hash: no lockout, no rate limit in the way.
        .set("policy.lockout.address_threshold", 1_000_000)
        .set("policy.lockout.user_threshold", 1_000_000)
        .set("policy.rate_limit.requests_per_second", 100_000)
        .set("policy.rate_limit.burst", 100_000)
        .start()
        .await;
    // Log in (the token is verified once and cached) and open a kernel.
    let kernel = common::kernel::start_kernel(&gate).await;
    let mut ws = gate
        .ws_connect(&format!("/api/kernels/{kernel}/channels"))
        .await;
    assert_eq!(common::kernel::execute(&mut ws, "1+1").await, "2");

    let stop = tokio_util::sync::CancellationToken::new();
    let flood = futures_util::future::join_all((0..8u8).map(|i| {
        let client = bare_client_from(&gate, Some(IpAddr::from([127, 0, 1, 10 + i])));
        let (stop, gate) = (stop.clone(), &gate);
        async move {
            let mut statuses = Vec::new();
            while !stop.is_cancelled() {
                let r = login_as(gate, &client, "/", TEST_USER, "a-wrong-guess").await;
                statuses.push(r.status().as_u16());
            }
            statuses
        }
    }));
    // While it runs: kernel round trips and API calls still work.
    let checks = async {
        // Let the flood get going first.
        common::poll_until(T, "flood under way", || async {
            gate.find_line(&["event=\"login_failure\""]).map(|_| ())
        })
        .await;
        for n in 0..5 {
            let out = within(
                Duration::from_secs(10),
                "kernel round trip during the flood",
                common::kernel::execute(&mut ws, &format!("{n}*7")),
            )
            .await;
            assert_eq!(out, (n * 7).to_string());
            let r = gate
                .client()
                .get(gate.url("/api/kernels"))
                .send()
                .await
                .expect("API call during flood");
            assert_eq!(r.status(), 200);
        }
        stop.cancel();
    };
    let (statuses, ()) = tokio::join!(flood, checks);
    let statuses: Vec<u16> = statuses.into_iter().flatten().collect();
    // Wrong passwords were hashed (401); the excess was refused before
    // hashing (429, verification cap).
    // Refusals are held for the refusal delay, so the flood is slow but
    // both paths must have been taken.
    let hashed = statuses.iter().filter(|s| **s == 401).count();
    let refused = statuses.iter().filter(|s| **s == 429).count();
    assert!(
        hashed >= 1 && refused >= 1,
        "the flood must actually have run: {hashed} hashed, {refused} refused of {}",
        statuses.len()
    );
}
