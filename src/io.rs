//! Writing files safely: a temporary file in the same folder, flushed to
//! disk, then renamed over the target, so a crash never leaves half a file.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

/// Writes `bytes` to `path` atomically. Only a regular file (or nothing) is
/// ever replaced: a folder, a symbolic link or a device at `path` is an error.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut file = AtomicFile::create(path)?;
    file.write_all(bytes)?;
    file.commit()
}

/// A file written a part at a time that appears at its path, whole, only
/// on `commit`; dropped before that, it leaves nothing behind.
pub struct AtomicFile {
    path: PathBuf,
    tmp: PathBuf,
    /// `None` once committed.
    file: Option<BufWriter<File>>,
}

impl AtomicFile {
    /// Starts the file (as `write_atomic` would write it).
    pub fn create(path: &Path) -> std::io::Result<AtomicFile> {
        refuse_non_file(path)?;
        let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("output");
        let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
        let file = File::create(&tmp)?;
        let started = AtomicFile { path: path.to_path_buf(), tmp, file: Some(BufWriter::new(file)) };
        // A file written again (`nnc fmt`) keeps who may read and run it.
        // (An error here drops `started`, which removes the temporary file.)
        if let (Ok(meta), Some(writer)) = (std::fs::metadata(path), &started.file) {
            writer.get_ref().set_permissions(meta.permissions())?;
        }
        Ok(started)
    }

    /// Flushes the file to disk and renames it over the path.
    pub fn commit(mut self) -> std::io::Result<()> {
        let Some(writer) = self.file.take() else { return Ok(()) };
        let result = (|| {
            writer.into_inner().map_err(std::io::IntoInnerError::into_error)?.sync_all()?;
            std::fs::rename(&self.tmp, &self.path)
        })();
        if result.is_err() {
            let _ = std::fs::remove_file(&self.tmp);
        }
        result
    }

    fn writer(&mut self) -> std::io::Result<&mut BufWriter<File>> {
        self.file.as_mut().ok_or_else(|| std::io::Error::other("the file is already committed"))
    }
}

impl Write for AtomicFile {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.writer()?.write(bytes)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.writer()?.flush()
    }
}

impl Drop for AtomicFile {
    fn drop(&mut self) {
        if self.file.take().is_some() {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
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
