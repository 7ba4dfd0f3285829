//! Jupyter behind a Unix socket (`--ServerApp.sock`, `upstream.url = "unix:/path"`): the same
//! REST and kernel WebSocket flow as over TCP, and 502 while the socket is gone.

mod common;

use std::time::Duration;

use common::kernel::{execute, start_kernel};
use common::{within, Jupyter, Nbgate};
use serde_json::Value;

const T: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_and_kernel_work_over_a_unix_socket_upstream() {
    let jupyter = Jupyter::start_unix().await;
    assert!(jupyter.upstream_url().starts_with("unix:/"));
    let gate = Nbgate::start_for(&jupyter).await;
    let client = gate.client();

    let api = within(T, "GET /api", client.get(gate.url("/api")).send())
        .await
        .expect("GET /api");
    assert_eq!(api.status(), 200);
    let api: Value = api.json().await.expect("/api JSON");
    assert!(api["version"].is_string(), "{api}");

    let status = within(
        T,
        "GET /api/status",
        client.get(gate.url("/api/status")).send(),
    )
    .await
    .expect("GET /api/status");
    assert_eq!(status.status(), 200, "token not injected over the socket?");

    let kernel = start_kernel(&gate).await;
    let mut ws = gate
        .ws_connect(&format!("/api/kernels/{kernel}/channels"))
        .await;
    assert_eq!(execute(&mut ws, "1+1").await, "2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unix_socket_upstream_down_gives_502_and_recovers() {
    let mut jupyter = Jupyter::start_unix().await;
    let gate = Nbgate::start_for(&jupyter).await;
    jupyter.stop();
    let down = within(T, "GET /api", gate.client().get(gate.url("/api")).send())
        .await
        .expect("GET /api");
    assert_eq!(down.status(), 502);

    jupyter.restart().await;
    let up = within(
        T,
        "GET /api/status",
        gate.client().get(gate.url("/api/status")).send(),
    )
    .await
    .expect("GET /api/status");
    assert_eq!(up.status(), 200);
}
