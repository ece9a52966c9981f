//! IDX, the MNIST file format: big-endian header, then unsigned bytes.
//! Images `00 00 08 03, count, rows, cols`; labels `00 00 08 01, count`.

use std::path::Path;

use super::{DataError, Dataset, RowSpec, TargetSpecOfRow, maybe_gunzip, read_file};

struct Idx {
    dims: Vec<usize>,
    data: Vec<u8>,
}

fn parse(bytes: &[u8], name: &str) -> Result<Idx, DataError> {
    let bad = |m: String| DataError::new(name, None, m, "is this an IDX file (MNIST format)?");
    if bytes.len() < 4 || bytes[0] != 0 || bytes[1] != 0 {
        return Err(bad("the file does not start with an IDX header".into()));
    }
    if bytes[2] != 0x08 {
        return Err(bad(format!("element type 0x{:02x} is not unsigned bytes (0x08)", bytes[2])));
    }
    let rank = bytes[3] as usize;
    let header = 4 + 4 * rank;
    if rank == 0 || bytes.len() < header {
        return Err(bad("the header is truncated".into()));
    }
    let dims: Vec<usize> = (0..rank)
        .map(|i| u32::from_be_bytes([bytes[4 + 4 * i], bytes[5 + 4 * i], bytes[6 + 4 * i], bytes[7 + 4 * i]]) as usize)
        .collect();
    let expected =
        dims.iter().try_fold(1usize, |a, d| a.checked_mul(*d)).ok_or_else(|| bad("the dimensions overflow".into()))?;
    let data = &bytes[header..];
    if data.len() != expected {
        return Err(bad(format!("the header promises {expected} bytes of data but the file has {}", data.len())));
    }
    Ok(Idx { dims, data: data.to_vec() })
}

pub fn load_pair(images: &Path, labels: &Path, spec: &RowSpec) -> Result<Dataset, DataError> {
    let (iname, lname) = (images.display().to_string(), labels.display().to_string());
    let img = parse(&maybe_gunzip(read_file(images)?, &iname)?, &iname)?;
    let lab = parse(&maybe_gunzip(read_file(labels)?, &lname)?, &lname)?;
    let count = img.dims[0];
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
    if lab.dims.len() != 1 || lab.dims[0] != count {
        return Err(DataError::new(
            &lname,
            None,
            format!("{} labels for {count} images", lab.dims[0]),
            "use the labels file that belongs to the images",
        )
        .about_target());
    }
    let TargetSpecOfRow::Class(classes) = spec.target else {
        if spec.target_width() == 0 {
            // An autoencoder reads the images only.
            let x = img.data.iter().map(|&b| f32::from(b)).collect();
            return Ok(Dataset { rows: count, width: size, x, target_width: 0, y: vec![] });
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
    })
}
