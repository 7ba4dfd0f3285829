//! The password a user set with `jupyter server password` (or, for the
//! classic Notebook, `jupyter notebook password`), so that people who put
//! nbgate in front of their Jupyter keep the password they know.
//!
//! Jupyter stores only a hash (`argon2:…`, or `sha1:…` in old configs) in
//! JSON config files in its config directory; nbgate's password module
//! verifies both formats.

use std::path::{Path, PathBuf};

/// Errors reading a Jupyter config file that exists.
#[derive(Debug, thiserror::Error)]
pub enum JupyterConfigError {
    #[error("{}: cannot read", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: not valid JSON", path.display())]
    Parse {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
}

/// A stored Jupyter password hash and the file it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JupyterHash {
    pub file: PathBuf,
    pub hash: String,
}

/// Jupyter's config directory: `JUPYTER_CONFIG_DIR`, else `~/.jupyter`.
pub fn config_dir() -> Option<PathBuf> {
    super::env_path("JUPYTER_CONFIG_DIR").or_else(|| super::home().map(|h| h.join(".jupyter")))
}

/// Where each Jupyter version keeps the hash, in the order looked at:
/// jupyter_server 2 (`IdentityProvider.hashed_password`), jupyter_server 1
/// (`ServerApp.password`), classic Notebook (`NotebookApp.password`).
const LOCATIONS: [(&str, &str, &str); 3] = [
    (
        "jupyter_server_config.json",
        "IdentityProvider",
        "hashed_password",
    ),
    ("jupyter_server_config.json", "ServerApp", "password"),
    ("jupyter_notebook_config.json", "NotebookApp", "password"),
];

/// The password hash stored in `dir`, if any.
///
/// # Errors
/// A config file that exists but cannot be read or is not JSON: the user
/// meant something by it, so it is not silently skipped.
pub fn find_hash(dir: &Path) -> Result<Option<JupyterHash>, JupyterConfigError> {
    for (file, section, key) in LOCATIONS {
        let path = dir.join(file);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(source) => return Err(JupyterConfigError::Read { path, source }),
        };
        let json: serde_json::Value =
            serde_json::from_str(&text).map_err(|source| JupyterConfigError::Parse {
                path: path.clone(),
                source,
            })?;
        if let Some(hash) = json[section][key].as_str().filter(|h| !h.trim().is_empty()) {
            return Ok(Some(JupyterHash {
                file: path,
                hash: hash.trim().to_owned(),
            }));
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_jupyter_server_2_hash_is_found_first() {
        let d = tempfile::tempdir().expect("tempdir");
        std::fs::write(
            d.path().join("jupyter_server_config.json"),
            r#"{"IdentityProvider": {"hashed_password": "argon2:$argon2id$v=19$m=10240,t=10,p=8$c2FsdA$aGFzaA"}}"#,
        )
        .expect("write");
        std::fs::write(
            d.path().join("jupyter_notebook_config.json"),
            r#"{"NotebookApp": {"password": "sha1:ab:cd"}}"#,
        )
        .expect("write");
        let found = find_hash(d.path()).expect("read").expect("found");
        assert!(found.hash.starts_with("argon2:"));
        assert_eq!(found.file, d.path().join("jupyter_server_config.json"));
    }

    #[test]
    fn the_classic_notebook_hash_is_found_when_no_server_hash_exists() {
        let d = tempfile::tempdir().expect("tempdir");
        std::fs::write(
            d.path().join("jupyter_server_config.json"),
            r#"{"ServerApp": {"password": ""}}"#,
        )
        .expect("write");
        std::fs::write(
            d.path().join("jupyter_notebook_config.json"),
            r#"{"NotebookApp": {"password": "sha1:ab:cd"}}"#,
        )
        .expect("write");
        assert_eq!(
            find_hash(d.path()).expect("read").expect("found").hash,
            "sha1:ab:cd"
        );
    }

    #[test]
    fn no_file_means_no_hash_and_a_broken_file_is_an_error() {
        let d = tempfile::tempdir().expect("tempdir");
        assert_eq!(find_hash(d.path()).expect("read"), None);
        std::fs::write(d.path().join("jupyter_server_config.json"), "{").expect("write");
        let err = find_hash(d.path()).expect_err("broken");
        assert!(
            err.to_string().contains("jupyter_server_config.json"),
            "{err}"
        );
    }
}
