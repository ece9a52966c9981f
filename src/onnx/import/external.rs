//! Tensors stored outside the `.onnx` file (ONNX's external data): PyTorch's
//! `torch.onnx.export` writes every weight above a few hundred bytes into a
//! file beside the model (`model.onnx.data`), naming it, an offset and a
//! length. The file is read from the model's own folder only: a location
//! that is absolute or climbs out of it is refused, as ONNX's own checker
//! does.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Component, Path};

use super::proto::TensorProto;

/// The `bytes` bytes of tensor `t`'s values, from the external file it
/// names, relative to `folder` (the model's).
pub(super) fn read(t: &TensorProto, folder: Option<&Path>, bytes: usize) -> Result<Vec<u8>, String> {
    let name = t.name.as_deref().unwrap_or("");
    let entry =
        |key: &str| t.external_data.iter().find(|e| e.key.as_deref() == Some(key)).and_then(|e| e.value.clone());
    let location =
        entry("location").ok_or_else(|| format!("tensor `{name}` is stored outside the file, but not where"))?;
    let Some(folder) = folder else {
        return Err(format!(
            "tensor `{name}` is stored in `{location}`, outside the model's bytes; import it from its file"
        ));
    };
    let inside = Path::new(&location).components().all(|c| matches!(c, Component::Normal(_) | Component::CurDir));
    if location.is_empty() || !inside {
        return Err(format!(
            "tensor `{name}` is stored at `{location}`, outside the model's folder; nnc reads only files beside the model"
        ));
    }
    let number = |key: &str| -> Result<Option<u64>, String> {
        entry(key)
            .map(|v| v.trim().parse::<u64>().map_err(|_| format!("tensor `{name}`: its {key} `{v}` is not a number")))
            .transpose()
    };
    let path = folder.join(&location);
    let open = || -> std::io::Result<(File, u64)> {
        let file = File::open(&path)?;
        let meta = file.metadata()?;
        if !meta.is_file() {
            return Err(std::io::Error::other("not a regular file"));
        }
        Ok((file, meta.len()))
    };
    let (mut file, size) = open().map_err(|e| format!("tensor `{name}` is stored in {}: {e}", path.display()))?;
    let offset = number("offset")?.unwrap_or(0);
    let length = number("length")?.unwrap_or(size.saturating_sub(offset));
    if length != bytes as u64 || offset.checked_add(length).is_none_or(|end| end > size) {
        return Err(format!(
            "tensor `{name}` needs {bytes} bytes, and {} holds {length} from byte {offset} of its {size}",
            path.display()
        ));
    }
    let mut values = vec![0; bytes];
    file.seek(SeekFrom::Start(offset))
        .and_then(|_| file.read_exact(&mut values))
        .map_err(|e| format!("tensor `{name}` cannot be read from {}: {e}", path.display()))?;
    Ok(values)
}
