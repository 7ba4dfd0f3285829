//! When Jupyter is down nbgate answers 502 itself (an HTML page for browsers, JSON for API
//! clients) and recovers by itself when Jupyter is back.

mod common;

use std::time::Duration;

use common::{within, Jupyter, Nbgate};
use serde_json::Value;

const T: Duration = Duration::from_secs(30);

/// Asserts the two 502 shapes: HTML for `Accept: text/html`, JSON otherwise.
async fn assert_bad_gateway(gate: &Nbgate) {
    let client = gate.client();
    let page = within(
        T,
        "GET / (html)",
        client
            .get(gate.url("/lab"))
            .header("accept", "text/html,application/xhtml+xml,*/*;q=0.8")
            .send(),
    )
    .await
    .expect("GET /lab");
    assert_eq!(page.status(), 502);
    let content_type = page.headers()["content-type"].to_str().unwrap_or_default();
    assert!(content_type.starts_with("text/html"), "{content_type}");
    assert_eq!(page.headers()["x-content-type-options"], "nosniff");
    let html = page.text().await.expect("502 page");
    assert!(html.to_ascii_lowercase().contains("<html"), "{html}");

    let api = within(
        T,
        "GET /api (json)",
        client
            .get(gate.url("/api/contents"))
            .header("accept", "application/json")
            .send(),
    )
    .await
    .expect("GET /api/contents");
    assert_eq!(api.status(), 502);
    let content_type = api.headers()["content-type"].to_str().unwrap_or_default();
    assert!(
        content_type.starts_with("application/json"),
        "{content_type}"
    );
    let body: Value = api.json().await.expect("502 JSON body");
    assert!(body["error"].is_string(), "{body}");
    assert!(body["message"].is_string(), "{body}");

    // Without any Accept header: JSON too.
    let bare = within(T, "GET /api", client.get(gate.url("/api")).send())
        .await
        .expect("GET /api");
    assert_eq!(bare.status(), 502);
    let content_type = bare.headers()["content-type"].to_str().unwrap_or_default();
    assert!(
        content_type.starts_with("application/json"),
        "{content_type}"
    );
}

async fn assert_api_ok(gate: &Nbgate) {
    let response = within(
        T,
        "GET /api/status",
        gate.client().get(gate.url("/api/status")).send(),
    )
    .await
    .expect("GET /api/status");
    assert_eq!(response.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jupyter_down_gives_502_and_nbgate_recovers_when_it_returns() {
    let mut jupyter = Jupyter::start().await;
    let gate = Nbgate::start_for(&jupyter).await;
    assert_api_ok(&gate).await;

    jupyter.stop();
    assert_bad_gateway(&gate).await;

    jupyter.restart().await;
    let pid = gate.pid();
    // Pooled connections to the dead Jupyter must not turn into errors now.
    for _ in 0..3 {
        assert_api_ok(&gate).await;
    }
    assert_eq!(gate.pid(), pid);
    assert!(
        common::process::proc_status_kib(pid, "VmRSS").is_some(),
        "nbgate is no longer running"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_to_a_down_upstream_gets_502() {
    let mut jupyter = Jupyter::start().await;
    let gate = Nbgate::start_for(&jupyter).await;
    jupyter.stop();
    let origin = gate.origin();
    match gate
        .ws_connect_with("/api/kernels/x/channels", &[("origin", origin.as_str())])
        .await
    {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 502)
        }
        Err(e) => panic!(
            "expected a 502 handshake response, got {}",
            common::nbgate::describe_ws_error(&e)
        ),
        Ok(_) => panic!("WebSocket to a down upstream was accepted"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn never_started_upstream_gives_502_quickly() {
    // Nothing listens on the default test upstream (127.0.0.1:1): connection refused.
    let gate = Nbgate::builder().start().await;
    let started = std::time::Instant::now();
    assert_bad_gateway(&gate).await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "a refused upstream connection took {:?} to report",
        started.elapsed()
    );
}
