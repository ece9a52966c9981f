//! Writing files safely: a temporary file in the same folder, flushed to
//! disk, then renamed over the target, so a crash never leaves half a file.

use std::io::Write;
use std::path::Path;

/// Writes `bytes` to `path` atomically. Only a regular file (or nothing) is
/// ever replaced: a folder, a symbolic link or a device at `path` is an error.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    refuse_non_file(path)?;
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("output");
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let result = (|| {
        let mut file = std::fs::File::create(&tmp)?;
        // A file written again (`nnc fmt`) keeps who may read and run it.
        if let Ok(meta) = std::fs::metadata(path) {
            file.set_permissions(meta.permissions())?;
        }
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// An error when something other than a regular file is at `path`.
pub fn refuse_non_file(path: &Path) -> std::io::Result<()> {
    match std::fs::symlink_metadata(path) {
        Ok(meta) if !meta.file_type().is_file() => Err(std::io::Error::new(
            std::io::ErrorKind::AlreadyExists,
            "something that is not a regular file is in the way; remove it or choose another path",
        )),
        _ => Ok(()),
    }
}
