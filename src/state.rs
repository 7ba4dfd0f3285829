//! The state directory: where nbgate keeps what it generates (certificates,
//! keys, session secrets). Owns directory creation and atomic, private file
//! writes (one file, or a set that must change together); knows nothing
//! about what the files mean.

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Creates `dir` (and parents) with mode 0700 if missing, and tightens an
/// existing directory that others can read: it holds private keys.
pub fn ensure_private_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    let meta = std::fs::metadata(dir)?;
    if meta.permissions().mode() & 0o077 != 0 {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    }
    Ok(())
}

/// Writes `bytes` to `path` atomically with the given mode: a temporary file
/// in the same directory, fsync, then rename. A crash leaves either the old
/// file or the new one, never a half-written key; the file is created with
/// `mode` from the start, so a key is never briefly world-readable.
///
/// # Errors
/// The temporary file cannot be created, written, synced or renamed (a
/// read-only or full file system); it is removed again and `path` is
/// untouched.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    write_atomic_all(&[StateFile { path, bytes, mode }]).map_err(|e| e.source)
}

/// One file of a set written by [`write_atomic_all`].
pub struct StateFile<'a> {
    pub path: &'a Path,
    pub bytes: &'a [u8],
    pub mode: u32,
}

/// A file of the state directory that could not be written, and why: the
/// one whose write failed (with [`write_atomic_all`], the others of its set
/// are then untouched too, unless a rename failed half-way).
#[derive(Debug, thiserror::Error)]
#[error("{}: cannot write", path.display())]
pub struct WriteError {
    pub path: PathBuf,
    #[source]
    pub source: std::io::Error,
}

/// Writes a set of files that belong together (a certificate and its key,
/// a session key and its predecessor) as [`write_atomic`] writes one, but
/// every temporary file is written and synced before the first rename.
///
/// Why: a full or read-only file system fails while a temporary file is
/// written, so staging all of them first means such a failure leaves every
/// old file in place. Written one after the other, a failure on the second
/// would leave a new key next to the old certificate: a pair that does not
/// match, and the old key lost. Only the renames (which need no space)
/// remain between old and new; in the same directory they do not fail on a
/// healthy file system, and a crash between two of them is the one case
/// that can still mix old and new.
///
/// # Errors
/// The first file that cannot be staged or renamed; every temporary file is
/// removed again.
pub fn write_atomic_all(files: &[StateFile<'_>]) -> Result<(), WriteError> {
    let mut staged: Vec<PathBuf> = Vec::with_capacity(files.len());
    let result = stage_and_rename(files, &mut staged);
    if result.is_err() {
        for tmp in &staged {
            let _ = std::fs::remove_file(tmp);
        }
    }
    result
}

fn stage_and_rename(files: &[StateFile<'_>], staged: &mut Vec<PathBuf>) -> Result<(), WriteError> {
    for file in files {
        let tmp = temporary_path(file.path);
        let failed = |source| WriteError {
            path: file.path.to_path_buf(),
            source,
        };
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(file.mode)
            .open(&tmp)
            .map_err(failed)?;
        staged.push(tmp);
        f.set_permissions(std::fs::Permissions::from_mode(file.mode))
            .and_then(|()| f.write_all(file.bytes))
            .and_then(|()| f.sync_all())
            .map_err(failed)?;
    }
    for (file, tmp) in files.iter().zip(staged.iter()) {
        std::fs::rename(tmp, file.path).map_err(|source| WriteError {
            path: file.path.to_path_buf(),
            source,
        })?;
    }
    // Renamed: nothing left to clean up on a later error.
    staged.clear();
    let mut dirs: Vec<&Path> = files.iter().filter_map(|f| f.path.parent()).collect();
    dirs.dedup();
    for dir in dirs {
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
    }
    Ok(())
}

/// `.NAME.tmpPID` next to `path`: hidden, and never a name nbgate reads.
fn temporary_path(path: &Path) -> PathBuf {
    let dir = path.parent().unwrap_or_else(|| Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    dir.join(format!(".{name}.tmp{}", std::process::id()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_file_is_written_with_mode_0600_and_replaced_atomically() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("sub/key.pem");
        ensure_private_dir(p.parent().expect("parent")).expect("dir");
        write_atomic(&p, b"one", 0o600).expect("write");
        write_atomic(&p, b"two", 0o600).expect("rewrite");
        assert_eq!(std::fs::read(&p).expect("read"), b"two");
        let mode = std::fs::metadata(&p).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let dmode = std::fs::metadata(p.parent().expect("parent"))
            .expect("meta")
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(dmode, 0o700);
        let leftovers = std::fs::read_dir(p.parent().expect("parent"))
            .expect("ls")
            .count();
        assert_eq!(leftovers, 1, "no temporary file is left behind");
    }

    #[test]
    fn a_set_whose_second_file_cannot_be_staged_leaves_the_first_untouched() {
        let dir = tempfile::tempdir().expect("tempdir");
        let key = dir.path().join("pair.key");
        let crt = dir.path().join("pair.crt");
        write_atomic(&key, b"old key", 0o600).expect("key");
        write_atomic(&crt, b"old crt", 0o644).expect("crt");
        // The certificate's temporary name is taken by a directory: its staging fails as a
        // full disk would, after the key's temporary file was written.
        std::fs::create_dir(temporary_path(&crt)).expect("squat");
        let e = write_atomic_all(&[
            StateFile {
                path: &key,
                bytes: b"new key",
                mode: 0o600,
            },
            StateFile {
                path: &crt,
                bytes: b"new crt",
                mode: 0o644,
            },
        ])
        .expect_err("the certificate cannot be staged");
        assert_eq!(e.path, crt);
        assert_eq!(std::fs::read(&key).expect("key"), b"old key");
        assert_eq!(std::fs::read(&crt).expect("crt"), b"old crt");
        assert!(
            !temporary_path(&key).exists(),
            "the key's temporary file is removed"
        );
    }
}
