//! Shared integration-test harness: starts the real pieces (Jupyter Server, nbgate) and small
//! in-process upstreams on ephemeral loopback ports, and kills them on drop.
//!
//! # Layout
//! - `jupyter`  Jupyter Server from the test venv (`$NBGATE_TEST_VENV`), over TCP or a Unix socket.
//! - `nbgate`   the nbgate binary: config builder, readiness from its log, clients that trust its
//!   certificate, raw TLS and WebSocket connectors. Every request a test makes goes through
//!   `Nbgate` helpers so that authentication can later be added in one place.
//! - `jupyterhub` JupyterHub with its configurable-http-proxy (the venv, `.node`), trusting
//!   nbgate's identity header (`tests/fixtures/jupyterhub`).
//! - `kernel`   the Jupyter kernel and terminal WebSocket protocols.
//! - `oidc`     a real OpenID Connect provider (`tests/oidc/provider.mjs`, npm `oidc-provider`).
//! - `h2ws`     WebSockets over HTTP/2 (RFC 8441): extended CONNECT on one h2 connection.
//! - `upstream` an in-process hyper upstream (echo, redirect, slow stream, sink, WebSocket echo).
//! - `pebble`   the Pebble ACME test server with its mock DNS, on its own loopback ports.
//! - `certs`    rcgen certificates for `tls.mode = "files"` and fingerprints.
//! - `process`  process-tree kill and `/proc` readings.
//! - `browser`  runs the Python browser scripts of `tests/browser/` (Playwright + Chromium).
//!
//! It must not sleep to wait for readiness: everything is polled, and every await that could
//! hang sits under [`within`].

// Each tests/*.rs file is its own crate and uses a different subset of this harness.
#![allow(dead_code)]

pub mod ari;
pub mod browser;
pub mod certs;
pub mod h2ws;
pub mod jupyter;
pub mod jupyterhub;
pub mod kernel;
pub mod login;
pub mod nbgate;
pub mod oidc;
pub mod pebble;
pub mod process;
pub mod upstream;

use std::future::Future;
use std::time::Duration;

// Re-exports for the test files; each uses some of them.
#[allow(unused_imports)]
pub use jupyter::{Jupyter, JupyterOptions};
#[allow(unused_imports)]
pub use nbgate::{Nbgate, NbgateBuilder};
#[allow(unused_imports)]
pub use upstream::TestUpstream;

/// Awaits `fut`, panicking with `what` if it takes longer than `limit`.
pub async fn within<T>(limit: Duration, what: &str, fut: impl Future<Output = T>) -> T {
    match tokio::time::timeout(limit, fut).await {
        Ok(value) => value,
        Err(_) => panic!("timed out after {limit:?}: {what}"),
    }
}

/// Polls `check` every 50 ms until it returns `Some`, panicking with `what` after `limit`.
pub async fn poll_until<T, F, Fut>(limit: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        if tokio::time::Instant::now() >= deadline {
            panic!("timed out after {limit:?}: {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A random lowercase hex string of `bytes` random bytes, for tokens and unique names.
pub fn random_hex(bytes: usize) -> String {
    (0..bytes)
        .map(|_| format!("{:02x}", rand::random::<u8>()))
        .collect()
}

/// Lowercase hex SHA-256 of `data`.
pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(ring::digest::digest(&ring::digest::SHA256, data))
}

/// Deterministic pseudo-random bytes (xorshift64) so big bodies need not be kept in memory:
/// the sender generates and hashes them on the fly, the receiver hashes what arrives.
pub struct PatternBytes {
    state: u64,
}

impl PatternBytes {
    pub fn new(seed: u64) -> Self {
        PatternBytes { state: seed | 1 }
    }

    /// Fills `buf` with the next bytes of the pattern.
    pub fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            self.state ^= self.state << 13;
            self.state ^= self.state >> 7;
            self.state ^= self.state << 17;
            let bytes = self.state.to_le_bytes();
            chunk.copy_from_slice(&bytes[..chunk.len()]);
        }
    }
}

/// The permission bits of a file or directory (keys must be 0600, their directories 0700).
pub fn file_mode(path: &std::path::Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

/// The logical lines of a file that continues lines with a trailing `\` (Dockerfiles, systemd
/// units): continued lines joined with a space, blank lines between logical lines dropped, and
/// lines starting with one of `comment` dropped even inside a continuation, as both Docker and
/// systemd do. `name` is for the panic when the file ends inside a continued line.
pub fn logical_lines(name: &str, text: &str, comment: &[char]) -> Vec<String> {
    let mut lines = Vec::new();
    let mut logical = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with(comment) || (trimmed.is_empty() && logical.is_empty()) {
            continue;
        }
        if let Some(continued) = trimmed.strip_suffix('\\') {
            logical.push_str(continued);
            logical.push(' ');
            continue;
        }
        logical.push_str(trimmed);
        lines.push(std::mem::take(&mut logical));
    }
    assert!(logical.is_empty(), "{name}: ends inside a continued line");
    lines
}
