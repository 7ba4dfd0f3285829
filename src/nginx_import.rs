//! `nbgate import-nginx`: placeholder until the importer lands (owned by the import-nginx work).

use std::path::Path;

/// Errors reading or converting an nginx configuration.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("{path}: not implemented yet")]
    NotImplemented { path: String },
}

/// Reads an nginx configuration and returns the equivalent nbgate TOML.
///
/// # Errors
/// Unreadable file, syntax error, or a directive that cannot be converted safely.
pub fn convert_file(path: &Path) -> Result<String, ImportError> {
    Err(ImportError::NotImplemented {
        path: path.display().to_string(),
    })
}
