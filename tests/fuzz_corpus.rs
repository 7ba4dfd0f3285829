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

/// One test per target, named `every_committed_input_passes::<target>`.
macro_rules! replay_tests {
    ($($target:ident),* $(,)?) => {
        mod every_committed_input_passes {
            $(
                #[test]
                fn $target() {
                    super::replay(stringify!($target), super::checks::$target);
                }
            )*
        }
    };
}

replay_tests!(
    h1_response,
    h1_chunked,
    session_cookie,
    next_path,
    forwarded,
    proxy_protocol,
    config,
    stored_hash,
    accept_language,
    kernel_frames,
    audit_classify,
    user_agent,
    passkey_json,
    second_factor_input,
    oidc_callback,
);
