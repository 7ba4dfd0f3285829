//! Big bodies stream through nbgate in both directions without being buffered: nbgate's peak
//! RSS stays under 64 MiB while 256 MiB pass through it.

mod common;

use std::time::Duration;

use base64::Engine;
use common::{within, Jupyter, Nbgate, PatternBytes, TestUpstream};
use futures_util::StreamExt;
use serde_json::Value;

const MIB: usize = 1 << 20;
const TOTAL: usize = 256 * MIB;
/// JupyterLab's upload chunk size (`CHUNK_SIZE` in @jupyterlab/filebrowser).
const CHUNK: usize = MIB;
const RSS_LIMIT_KIB: u64 = 64 * 1024;
const LONG: Duration = Duration::from_secs(600);

/// SHA-256 of the first `total` bytes of the pattern with `seed`.
fn pattern_sha256(seed: u64, total: usize) -> String {
    let mut pattern = PatternBytes::new(seed);
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    let mut buf = vec![0u8; CHUNK];
    let mut left = total;
    while left > 0 {
        let n = left.min(buf.len());
        pattern.fill(&mut buf[..n]);
        ctx.update(&buf[..n]);
        left -= n;
    }
    hex::encode(ctx.finish())
}

/// Reads `response` to the end, returning `(bytes, sha256)`.
async fn hash_body(response: reqwest::Response) -> (usize, String) {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    let mut bytes = 0usize;
    let mut body = response.bytes_stream();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.expect("body chunk");
        ctx.update(&chunk);
        bytes += chunk.len();
    }
    (bytes, hex::encode(ctx.finish()))
}

fn assert_rss_below_limit(gate: &Nbgate, what: &str) {
    let peak = gate.peak_rss_kib();
    eprintln!("nbgate peak RSS after {what}: {peak} KiB");
    assert!(
        peak < RSS_LIMIT_KIB,
        "nbgate peak RSS {peak} KiB >= {RSS_LIMIT_KIB} KiB after {what}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunked_upload_and_download_of_256_mib_through_jupyter() {
    let jupyter = Jupyter::start().await;
    let gate = Nbgate::start_for(&jupyter).await;
    let client = gate.client();
    let url = gate.url("/api/contents/big.bin");

    // The contents API chunk protocol as JupyterLab speaks it: chunks 1, 2, ... and -1 for
    // the last one, each a JSON model with base64 content.
    let mut pattern = PatternBytes::new(11);
    let mut buf = vec![0u8; CHUNK];
    let chunks = TOTAL / CHUNK;
    within(LONG, "chunked upload of 256 MiB", async {
        for index in 1..=chunks {
            pattern.fill(&mut buf);
            let chunk: i64 = if index == chunks { -1 } else { index as i64 };
            let model = serde_json::json!({
                "type": "file",
                "format": "base64",
                "name": "big.bin",
                "path": "big.bin",
                "chunk": chunk,
                "content": base64::engine::general_purpose::STANDARD.encode(&buf),
            });
            let response = client
                .put(&url)
                .header("origin", gate.origin())
                .header("content-type", "application/json")
                .body(model.to_string())
                .send()
                .await
                .expect("PUT chunk");
            let status = response.status();
            if !status.is_success() {
                let body = response.text().await.unwrap_or_default();
                panic!("PUT chunk {chunk}: {status} {body}");
            }
        }
    })
    .await;
    let on_disk = std::fs::metadata(jupyter.root_dir().join("big.bin")).expect("big.bin");
    assert_eq!(on_disk.len(), TOTAL as u64);

    let model: Value = within(
        LONG,
        "GET contents model",
        client
            .get(gate.url("/api/contents/big.bin?content=0"))
            .send(),
    )
    .await
    .expect("GET model")
    .json()
    .await
    .expect("model JSON");
    assert_eq!(model["size"], TOTAL as u64, "{model}");

    let response = within(
        LONG,
        "GET /files/big.bin",
        client.get(gate.url("/files/big.bin")).send(),
    )
    .await
    .expect("GET /files/big.bin");
    assert_eq!(response.status(), 200);
    let (bytes, sha) = within(LONG, "download of 256 MiB", hash_body(response)).await;
    assert_eq!(bytes, TOTAL);
    assert_eq!(sha, pattern_sha256(11, TOTAL));
    assert_rss_below_limit(&gate, "a 256 MiB chunked upload and download via Jupyter");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_reader_is_backpressured_not_buffered() {
    let upstream = TestUpstream::start().await;
    let gate = Nbgate::builder().upstream(&upstream.url()).start().await;
    let response = within(
        LONG,
        "GET /stream",
        gate.client()
            .get(gate.url(&format!("/stream?bytes={TOTAL}&chunk={CHUNK}")))
            .send(),
    )
    .await
    .expect("GET /stream");
    assert_eq!(response.status(), 200);
    let mut body = response.bytes_stream();
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    let mut bytes = 0usize;
    let first = within(LONG, "first chunk", body.next())
        .await
        .expect("first chunk")
        .expect("first chunk");
    ctx.update(&first);
    bytes += first.len();

    // The upstream can produce 256 MiB in well under this stall; a proxy that buffers
    // instead of applying backpressure grows by about that much meanwhile.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_rss_below_limit(&gate, "a 2 s stall of the client mid-download");

    within(LONG, "rest of the download", async {
        while let Some(chunk) = body.next().await {
            let chunk = chunk.expect("chunk");
            ctx.update(&chunk);
            bytes += chunk.len();
        }
    })
    .await;
    assert_eq!(bytes, TOTAL);
    assert_eq!(hex::encode(ctx.finish()), pattern_sha256(7, TOTAL));
    assert_rss_below_limit(&gate, "a 256 MiB streamed download");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streamed_upload_of_256_mib_reaches_upstream_intact() {
    let upstream = TestUpstream::start().await;
    let gate = Nbgate::builder().upstream(&upstream.url()).start().await;
    let chunks = futures_util::stream::unfold(
        (PatternBytes::new(13), TOTAL),
        |(mut pattern, left)| async move {
            if left == 0 {
                return None;
            }
            let n = left.min(CHUNK);
            let mut buf = vec![0u8; n];
            pattern.fill(&mut buf);
            Some((Ok::<_, std::io::Error>(buf), (pattern, left - n)))
        },
    );
    let response = within(
        LONG,
        "PUT /sink",
        gate.client()
            .put(gate.url("/sink"))
            .header("origin", gate.origin())
            .header("content-length", TOTAL)
            .body(reqwest::Body::wrap_stream(chunks))
            .send(),
    )
    .await
    .expect("PUT /sink");
    let status = response.status();
    let seen: Value = response.json().await.expect("sink JSON");
    assert_eq!(status, 200, "{seen}");
    assert_eq!(seen["bytes"], TOTAL as u64, "{seen}");
    assert_eq!(seen["sha256"], pattern_sha256(13, TOTAL), "{seen}");
    assert_rss_below_limit(&gate, "a 256 MiB streamed upload");
}
