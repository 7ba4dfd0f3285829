//! nbgate's keep-alive pool of connections to the upstream: reused for requests in turn
//! and at once, never reused after an exchange that did not finish, closed when idle for
//! `upstream.pool_idle_timeout`, and replaced when the upstream closed it first. The
//! in-process upstream counts the TCP connections it accepts and those still open.

mod common;

use std::time::Duration;

use common::{poll_until, within, Nbgate, TestUpstream};

const T: Duration = Duration::from_secs(30);

async fn get_ok(client: &reqwest::Client, url: String) -> bytes::Bytes {
    let r = within(T, "request through nbgate", client.get(&url).send())
        .await
        .expect("request through nbgate");
    assert_eq!(r.status(), 200, "GET {url}");
    within(T, "response body", r.bytes())
        .await
        .expect("response body")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_in_turn_share_one_upstream_connection() {
    let upstream = TestUpstream::start().await;
    let gate = Nbgate::builder().upstream(&upstream.url()).start().await;
    let client = gate.client();
    for i in 0..20 {
        get_ok(&client, gate.url(&format!("/echo/{i}"))).await;
    }
    assert_eq!(
        upstream.connections(),
        1,
        "20 requests one after another should reuse one keep-alive connection"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_reuse_the_connections_of_an_earlier_burst() {
    let upstream = TestUpstream::start().await;
    let gate = Nbgate::builder().upstream(&upstream.url()).start().await;
    let client = gate.client();
    // One request first: the client's API token is then verified and cached, and the
    // burst is not held to the anonymous rate budget.
    get_ok(&client, gate.url("/warm")).await;
    // Each response takes ~200 ms, so the ten overlap and need ten connections.
    let burst = || {
        futures_util::future::join_all((0..10).map(|_| {
            get_ok(
                &client,
                gate.url("/stream?bytes=4096&chunk=1024&delay_ms=50"),
            )
        }))
    };
    for body in burst().await {
        assert_eq!(body.len(), 4096);
    }
    let after_first = upstream.connections();
    assert!(
        (2..=10).contains(&after_first),
        "ten overlapping requests opened {after_first} connections"
    );
    for body in burst().await {
        assert_eq!(body.len(), 4096);
    }
    assert_eq!(
        upstream.connections(),
        after_first,
        "the second burst should run on the first burst's idle connections"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_response_abandoned_midway_does_not_return_its_connection() {
    let upstream = TestUpstream::start().await;
    let gate = Nbgate::builder().upstream(&upstream.url()).start().await;
    let client = gate.client();

    // 64 MiB at 64 KiB every 20 ms: the client reads one chunk and walks away.
    let mut r = within(
        T,
        "slow download",
        client
            .get(gate.url("/stream?bytes=67108864&chunk=65536&delay_ms=20"))
            .send(),
    )
    .await
    .expect("slow download");
    assert_eq!(r.status(), 200);
    let first = within(T, "first chunk", r.chunk())
        .await
        .expect("first chunk");
    assert!(first.is_some_and(|c| !c.is_empty()));
    drop(r);

    // The upstream connection still has most of the body unread on it: it is closed,
    // and the next request gets its own answer on a new connection. (That the pool never
    // takes such a connection back is checked exactly by the unit tests in
    // src/proxy/upstream.rs, against an upstream that holds back half a body.)
    poll_until(T, "the abandoned upstream connection to close", || async {
        (upstream.open_connections() == 0).then_some(())
    })
    .await;
    let body = get_ok(&client, gate.url("/after")).await;
    let echoed: serde_json::Value = serde_json::from_slice(&body).expect("echo JSON");
    assert_eq!(echoed["uri"], "/after");
    assert_eq!(upstream.connections(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_upstream_connections_are_closed_after_the_pool_idle_timeout() {
    let upstream = TestUpstream::start().await;
    let gate = Nbgate::builder()
        .upstream(&upstream.url())
        .set("upstream.pool_idle_timeout", "1s")
        .start()
        .await;
    let client = gate.client();
    get_ok(&client, gate.url("/one")).await;
    assert_eq!(
        upstream.open_connections(),
        1,
        "kept alive after the request"
    );
    // The test upstream never closes a connection itself: only nbgate can.
    poll_until(
        T,
        "nbgate to close its idle upstream connection",
        || async { (upstream.open_connections() == 0).then_some(()) },
    )
    .await;
    get_ok(&client, gate.url("/two")).await;
    assert_eq!(upstream.connections(), 2);
}

/// The close is seen before the next request here; a close that crosses the request
/// (replayed for safe methods) is the unit test
/// `a_request_on_a_connection_closed_unnoticed_is_sent_on_a_new_one`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_the_upstream_closed_while_idle_is_replaced() {
    let upstream = TestUpstream::start_closing_idle(Duration::from_millis(300)).await;
    let gate = Nbgate::builder().upstream(&upstream.url()).start().await;
    let client = gate.client();
    get_ok(&client, gate.url("/one")).await;
    poll_until(T, "the upstream to close its idle connection", || async {
        (upstream.open_connections() == 0).then_some(())
    })
    .await;
    for path in ["/two", "/three"] {
        let body = get_ok(&client, gate.url(path)).await;
        let echoed: serde_json::Value = serde_json::from_slice(&body).expect("echo JSON");
        assert_eq!(echoed["uri"], path);
    }
    assert_eq!(upstream.connections(), 2);
}
