//! Replays every committed fuzz input on the stable toolchain: each file in
//! `fuzz/corpus/<target>/` and `fuzz/regressions/<target>/` goes through the
//! same check function the libFuzzer target calls (`fuzz/checks.rs`), so an
//! input that once crashed nbgate or broke a property stays fixed.
//!
//! Fuzzing itself needs nightly and cargo-fuzz: see `docs/security.md`.

#[path = "../fuzz/checks.rs"]
mod checks;

use std::path::Path;

/// Runs `check` on every file of the target's corpus and regressions,
/// naming the file that fails.
fn replay(target: &str, check: fn(&[u8])) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut corpus_files = 0;
    for dir in ["corpus", "regressions"] {
        let Ok(entries) = std::fs::read_dir(root.join(dir).join(target)) else {
            continue;
        };
        let mut paths: Vec<_> = entries
            .map(|e| e.expect("readable directory entry").path())
            .collect();
        paths.sort();
        for path in paths {
            let data = std::fs::read(&path).expect("readable corpus file");
            if let Err(panic) = std::panic::catch_unwind(|| check(&data)) {
                eprintln!("fuzz input {} fails its check", path.display());
                std::panic::resume_unwind(panic);
            }
            corpus_files += usize::from(dir == "corpus");
        }
    }
    assert!(corpus_files > 0, "no committed corpus for {target}");
}

#[test]
fn h1_response_corpus_passes() {
    replay("h1_response", checks::h1_response);
}

#[test]
fn h1_chunked_corpus_passes() {
    replay("h1_chunked", checks::h1_chunked);
}

#[test]
fn session_cookie_corpus_passes() {
    replay("session_cookie", checks::session_cookie);
}

#[test]
fn next_path_corpus_passes() {
    replay("next_path", checks::next_path);
}

#[test]
fn forwarded_corpus_passes() {
    replay("forwarded", checks::forwarded);
}

#[test]
fn proxy_protocol_corpus_passes() {
    replay("proxy_protocol", checks::proxy_protocol);
}

#[test]
fn config_corpus_passes() {
    replay("config", checks::config);
}

#[test]
fn stored_hash_corpus_passes() {
    replay("stored_hash", checks::stored_hash);
}

#[test]
fn accept_language_corpus_passes() {
    replay("accept_language", checks::accept_language);
}
