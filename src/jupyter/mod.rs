//! Jupyter's own files, read the way Jupyter's tools read them: the runtime
//! file a running server writes (`jpserver-<pid>.json`, what `jupyter server
//! list` reads) and the password hash `jupyter server password` stores;
//! and the identity header nbgate's own provider for Jupyter verifies
//! (`identity`, pure).
//!
//! Reads only: nbgate never writes into Jupyter's directories. Never logs or
//! returns a token in an error. Imports only `config`.

pub mod identity;
pub mod password;
pub mod runtime;

use std::path::PathBuf;

/// `$HOME`, when set and not empty.
fn home() -> Option<PathBuf> {
    std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(PathBuf::from)
}

/// An environment variable holding a path, when set and not empty.
fn env_path(var: &str) -> Option<PathBuf> {
    std::env::var_os(var)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}
