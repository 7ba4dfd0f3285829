//! `tls.mode = "files"`: re-reads the certificate and key when the files
//! change, and swaps the new pair into the resolver. (A SIGHUP re-reads
//! them too, with the rest of the configuration: `crate::reload`.)
//!
//! Change detection polls modification times and sizes every few seconds
//! rather than using inotify: it needs no extra crate, works the same on
//! every file system (NFS, bind mounts, Kubernetes secret symlink swaps),
//! and a certificate change is not urgent to the second. A change is only
//! loaded once the files have been stable for one poll interval, so a tool
//! that writes the certificate and then the key is not caught halfway.
//!
//! The "keep the last good one" rule: a pair that fails to load (garbage,
//! mismatched key, expired) is logged as an error and the current
//! certificate keeps being served.
//!
//! A change the poll finds is not a reload systemd asked for and is not
//! told to it.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::{files, fingerprint, serial_hex, CertResolver};
use crate::config::Config;
use crate::telemetry::Chain;

/// How often the files' metadata is compared.
const POLL: Duration = Duration::from_secs(2);

/// What identifies a version of the files: (mtime, size) of each, following
/// symlinks. `None` where a file is missing.
type Signature = Vec<Option<(SystemTime, u64)>>;

fn signature(paths: &[&Path]) -> Signature {
    paths
        .iter()
        .map(|p| {
            std::fs::metadata(p)
                .ok()
                .map(|m| (m.modified().unwrap_or(SystemTime::UNIX_EPOCH), m.len()))
        })
        .collect()
}

/// Runs until the runtime stops or the task is aborted (a reload that
/// changes the TLS settings starts another).
pub async fn run(config: Arc<Config>, resolver: Arc<CertResolver>) {
    let (Some(cert), Some(key)) = (config.tls.cert_file.clone(), config.tls.key_file.clone())
    else {
        return;
    };
    let mut loaded = signature(&[&cert, &key]);
    let mut seen = loaded.clone();
    let mut tick = tokio::time::interval(POLL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let now = signature(&[&cert, &key]);
        let stable_and_new = now == seen && now != loaded;
        seen = now;
        if !stable_and_new {
            continue;
        }
        loaded = signature(&[&cert, &key]);
        seen = loaded.clone();
        let _ = reload(&resolver, &cert, &key, "files changed");
    }
}

/// Loads the pair and swaps it in, or logs why not and keeps the current one.
///
/// # Errors
/// Why the pair was not loaded (already logged; the current one is kept).
pub fn reload(
    resolver: &CertResolver,
    cert: &Path,
    key: &Path,
    trigger: &str,
) -> Result<(), super::TlsError> {
    match files::load(cert, key) {
        Ok(new) => {
            tracing::info!(
                trigger,
                cert = %cert.display(),
                serial = %serial_hex(&new),
                sha256_fingerprint = %fingerprint(&new),
                "reloaded certificate"
            );
            resolver.replace(new);
            Ok(())
        }
        Err(e) => {
            let current = resolver.current();
            tracing::error!(
                trigger,
                error = %Chain(&e),
                serial = %serial_hex(&current),
                "cannot reload certificate; still serving the current one"
            );
            Err(e)
        }
    }
}
