//! Connections are spread evenly over nbgate's worker threads, whichever worker the kernel woke
//! to accept them (`src/server/balance.rs`): a burst of connections accepted by one worker must
//! not leave the other cores idle for the connections' whole life.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::nbgate::log_field;
use common::{within, Nbgate, TestUpstream};

const T: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_connections_are_split_evenly_over_the_workers() {
    let upstream = TestUpstream::start().await;
    let gate = Nbgate::builder()
        .upstream(&upstream.url())
        .env("TOKIO_WORKER_THREADS", "2")
        .start()
        .await;
    // Six clients, one keep-alive connection each, all held open; every one is served.
    let mut clients = Vec::new();
    for i in 0..6 {
        let client = gate.client_http1();
        let resp = within(T, "request", client.get(gate.url(&format!("/c{i}"))).send())
            .await
            .expect("request through nbgate");
        assert_eq!(resp.status(), 200, "connection {i}");
        clients.push(client);
    }
    // A second request on each connection: served by the worker it was handed to.
    for (i, client) in clients.iter().enumerate() {
        let resp = within(
            T,
            "request",
            client.get(gate.url(&format!("/again{i}"))).send(),
        )
        .await
        .expect("second request");
        assert_eq!(resp.status(), 200, "connection {i}, second request");
    }
    // Which thread really serves each connection (not only which worker the accepting one
    // chose): nbgate logs it from the connection's task.
    let mut per_thread = BTreeMap::new();
    let mut handed_over = 0;
    for line in gate.log_lines() {
        if line.contains("connection served") {
            let thread = log_field(&line, "thread").expect("thread field");
            *per_thread.entry(thread).or_insert(0) += 1;
        } else if line.contains("connection accepted")
            && log_field(&line, "accepted_by") != log_field(&line, "worker")
        {
            handed_over += 1;
        }
    }
    let counts: Vec<i32> = per_thread.values().copied().collect();
    assert_eq!(
        counts,
        vec![3, 3],
        "three open connections served by each of the two worker threads: {per_thread:?}; log:\n{}",
        gate.log_text()
    );
    // Whether the kernel woke the same worker for several of them is up to it; the split is
    // the same either way. Say how it went when the test is run with --nocapture.
    println!("{handed_over} of 6 connections handed to the other worker");
}
