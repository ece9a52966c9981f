//! IDX, the MNIST file format: big-endian header, then unsigned bytes.
//! Images `00 00 08 03, count, rows, cols`; labels `00 00 08 01, count`.

use std::path::Path;

use std::io::Read;

use super::{DATA_LIMIT, DataError, Dataset, RowSpec, open, read_bounded};

struct Idx {
    dims: Vec<usize>,
    data: Vec<u8>,
}

/// Reads an IDX file, its data only as far as its header promises (so a
/// damaged header or a gzip bomb is an error, not a huge read).
fn read(path: &Path) -> Result<Idx, DataError> {
    let name = path.display().to_string();
    let bad = |m: String| DataError::about_file(&name, None, m, "is this an IDX file (MNIST format)?");
    let mut reader = open(path)?;
    let magic = read_bounded(&mut reader.by_ref().take(4), 4, &name)?;
    if magic.len() < 4 || magic[0] != 0 || magic[1] != 0 {
        return Err(bad("the file does not start with an IDX header".into()));
    }
    if magic[2] != 0x08 {
        return Err(bad(format!("element type 0x{:02x} is not unsigned bytes (0x08)", magic[2])));
    }
    let rank = magic[3] as usize;
    let header = read_bounded(&mut reader.by_ref().take(4 * rank as u64), 4 * rank as u64, &name)?;
    if rank == 0 || header.len() < 4 * rank {
        return Err(bad("the header is truncated".into()));
    }
    let dims: Vec<usize> =
        header.chunks_exact(4).map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize).collect();
    let expected =
        dims.iter().try_fold(1u64, |a, &d| a.checked_mul(d as u64)).filter(|&n| n <= DATA_LIMIT).ok_or_else(|| {
            bad(format!("the header promises {} bytes of data, more than nnc reads", dims_text(&dims)))
        })?;
    let data = read_bounded(&mut *reader, expected, &name)
        .map_err(|_| bad(format!("the header promises {expected} bytes of data but the file has more")))?;
    if data.len() as u64 != expected {
        return Err(bad(format!("the header promises {expected} bytes of data but the file has {}", data.len())));
    }
    Ok(Idx { dims, data })
}

fn dims_text(dims: &[usize]) -> String {
    dims.iter().map(usize::to_string).collect::<Vec<_>>().join("×")
}

/// Whether the file starts as IDX does (two zero bytes: no text does), so
/// a command line may name IDX or CSV files alike.
pub fn looks_like_idx(path: &Path) -> bool {
    let Ok(mut reader) = open(path) else { return false };
    let mut magic = [0u8; 2];
    reader.read_exact(&mut magic).is_ok() && magic == [0, 0]
}

/// Images without labels (`predict`): inputs only.
pub fn load_images(images: &Path, spec: &RowSpec) -> Result<Dataset, DataError> {
    let img = read(images)?;
    check_images(&img, images, spec)?;
    let (rows, width) = (img.dims[0], spec.features);
    let x = img.data.iter().map(|&b| f32::from(b)).collect();
    Ok(Dataset { rows, width, x, target_width: 0, y: vec![], columns: vec![] })
}

/// Images whose size is the model's input.
fn check_images(img: &Idx, path: &Path, spec: &RowSpec) -> Result<(), DataError> {
    let iname = path.display().to_string();
    if img.dims.len() == 1 {
        return Err(DataError::about_file(
            &iname,
            None,
            format!("this file has one dimension ({} values): it holds labels, not images", img.dims[0]),
            "are the images and labels files swapped? the images file comes first",
        ));
    }
    let size: usize = img.dims[1..].iter().product();
    if size != spec.features {
        let dims: Vec<String> = img.dims[1..].iter().map(|d| d.to_string()).collect();
        return Err(DataError::new(
            &iname,
            None,
            format!("the images are {} = {size} values, the model's input has {}", dims.join("×"), spec.features),
            "declare the input with the images' size, or use the matching files",
        ));
    }
    Ok(())
}

pub fn load_pair(images: &Path, labels: &Path, spec: &RowSpec) -> Result<Dataset, DataError> {
    let lname = labels.display().to_string();
    let (img, lab) = (read(images)?, read(labels)?);
    check_images(&img, images, spec)?;
    let (count, size) = (img.dims[0], spec.features);
    if lab.dims.len() != 1 || lab.dims[0] != count {
        return Err(DataError::new(
            &lname,
            None,
            format!("{} labels for {count} images", lab.dims[0]),
            "use the labels file that belongs to the images",
        )
        .about_target());
    }
    let Some(classes) = spec.only_class() else {
        if spec.target_width() == 0 {
            // An autoencoder reads the images only.
            let x = img.data.iter().map(|&b| f32::from(b)).collect();
            return Ok(Dataset { rows: count, width: size, x, target_width: 0, y: vec![], columns: vec![] });
        }
        return Err(DataError::new(
            &lname,
            None,
            "IDX labels are class ids, but the model's target is not `class(K)`",
            "declare the target as `class(K)`",
        )
        .about_target());
    };
    if let Some((i, &l)) = lab.data.iter().enumerate().find(|(_, l)| **l as usize >= classes) {
        return Err(DataError::new(
            &lname,
            Some(i + 1),
            format!("label {l} is not a class id in 0..{classes}"),
            "fix the labels or the number of classes",
        )
        .about_target());
    }
    Ok(Dataset {
        rows: count,
        width: size,
        x: img.data.iter().map(|&b| f32::from(b)).collect(),
        target_width: 1,
        y: lab.data.iter().map(|&b| f32::from(b)).collect(),
        columns: vec![],
    })
}
