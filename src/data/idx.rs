//! IDX, the MNIST file format: big-endian header, then unsigned bytes.
//! Images `00 00 08 03, count, rows, cols`; labels `00 00 08 01, count`.

use std::path::Path;

use std::io::Read;

use super::{DATA_LIMIT, DataError, Dataset, RowSpec, open, read_bounded, read_error};

struct Idx {
    dims: Vec<usize>,
    data: Vec<u8>,
}

/// Reads an IDX file, its data only as far as its header promises (so a
/// damaged header or a gzip bomb is an error, not a huge read).
fn read(path: &Path) -> Result<Idx, DataError> {
    let name = path.display().to_string();
    let mut reader = open(path)?;
    let dims = header(&mut *reader, &name)?;
    let expected = data_bytes(&dims).filter(|&n| n <= DATA_LIMIT).ok_or_else(|| {
        not_idx(&name, format!("the header promises {} bytes of data, more than nnc reads", dims_text(&dims)))
    })?;
    let data = read_bounded(&mut *reader, expected, &name).map_err(|_| longer(&name, expected))?;
    if data.len() as u64 != expected {
        return Err(short(&name, expected, data.len() as u64));
    }
    Ok(Idx { dims, data })
}

/// The dimensions an IDX header gives, leaving `reader` at the data.
fn header(reader: &mut dyn Read, name: &str) -> Result<Vec<usize>, DataError> {
    let magic = read_bounded(&mut (&mut *reader).take(4), 4, name)?;
    if magic.len() < 4 || magic[0] != 0 || magic[1] != 0 {
        return Err(not_idx(name, "the file does not start with an IDX header".into()));
    }
    if magic[2] != 0x08 {
        return Err(not_idx(name, format!("element type 0x{:02x} is not unsigned bytes (0x08)", magic[2])));
    }
    let rank = magic[3] as usize;
    let header = read_bounded(&mut (&mut *reader).take(4 * rank as u64), 4 * rank as u64, name)?;
    if rank == 0 || header.len() < 4 * rank {
        return Err(not_idx(name, "the header is truncated".into()));
    }
    Ok(header.chunks_exact(4).map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize).collect())
}

/// The bytes of data `dims` promise (`None`: more than a `u64` counts).
fn data_bytes(dims: &[usize]) -> Option<u64> {
    dims.iter().try_fold(1u64, |a, &d| a.checked_mul(d as u64))
}

fn not_idx(name: &str, message: String) -> DataError {
    DataError::about_file(name, None, message, "is this an IDX file (MNIST format)?")
}

/// A file whose data goes on after what its header said.
fn longer(name: &str, expected: u64) -> DataError {
    not_idx(name, format!("the header promises {expected} bytes of data but the file has more"))
}

/// A file whose data ends before its header said.
fn short(name: &str, expected: u64, found: u64) -> DataError {
    not_idx(name, format!("the header promises {expected} bytes of data but the file has {found}"))
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

/// Images without labels: inputs only.
pub fn load_images(images: &Path, spec: &RowSpec) -> Result<Dataset, DataError> {
    let img = read(images)?;
    check_images(&img.dims, images, spec)?;
    let (rows, width) = (img.dims[0], spec.features);
    let x = img.data.iter().map(|&b| f32::from(b)).collect();
    Ok(Dataset { rows, width, x, target_width: 0, y: vec![], columns: vec![] })
}

/// IDX images read a part at a time (`nnc predict`): the header checked
/// first, then as many images as are asked for, so a file of any length
/// takes the memory of a part.
pub struct ImageRows {
    reader: Box<dyn Read>,
    name: String,
    /// Images the header promises, and the size of each.
    count: usize,
    size: usize,
    next: usize,
}

pub fn stream_images(path: &Path, spec: &RowSpec) -> Result<ImageRows, DataError> {
    let name = path.display().to_string();
    let mut reader = open(path)?;
    let dims = header(&mut *reader, &name)?;
    // Checked first, so that the size of an image is a product that fits.
    if data_bytes(&dims).is_none() {
        return Err(not_idx(&name, format!("the header promises {} bytes of data", dims_text(&dims))));
    }
    check_images(&dims, path, spec)?;
    Ok(ImageRows { reader, name, count: dims[0], size: spec.features, next: 0 })
}

impl ImageRows {
    /// The next images, at most `max`; `None` after the last. The part
    /// with the last image comes only once the data is found to end where
    /// the header said.
    pub fn next_rows(&mut self, max: usize) -> Result<Option<Dataset>, DataError> {
        let rows = max.min(self.count - self.next);
        if rows == 0 {
            if self.count == 0 {
                self.check_end()?;
            }
            return Ok(None);
        }
        let mut bytes = Vec::new();
        let wanted = rows * self.size;
        self.reader.by_ref().take(wanted as u64).read_to_end(&mut bytes).map_err(|e| read_error(&self.name, &e))?;
        if bytes.len() < wanted {
            return Err(short(&self.name, self.promised(), (self.next * self.size + bytes.len()) as u64));
        }
        self.next += rows;
        if self.next == self.count {
            self.check_end()?;
        }
        let x = bytes.iter().map(|&b| f32::from(b)).collect();
        Ok(Some(Dataset { rows, width: self.size, x, target_width: 0, y: vec![], columns: vec![] }))
    }

    /// The bytes of data the header promises.
    fn promised(&self) -> u64 {
        self.count as u64 * self.size as u64
    }

    /// An error if the data goes on after the last image.
    fn check_end(&mut self) -> Result<(), DataError> {
        let mut byte = Vec::new();
        self.reader.by_ref().take(1).read_to_end(&mut byte).map_err(|e| read_error(&self.name, &e))?;
        if byte.is_empty() { Ok(()) } else { Err(longer(&self.name, self.promised())) }
    }
}

/// Images whose size is the model's input.
fn check_images(dims: &[usize], path: &Path, spec: &RowSpec) -> Result<(), DataError> {
    let iname = path.display().to_string();
    if dims.len() == 1 {
        return Err(DataError::about_file(
            &iname,
            None,
            format!("this file has one dimension ({} values): it holds labels, not images", dims[0]),
            "are the images and labels files swapped? the images file comes first",
        ));
    }
    let size: usize = dims[1..].iter().product();
    if size != spec.features {
        let dims: Vec<String> = dims[1..].iter().map(|d| d.to_string()).collect();
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
    check_images(&img.dims, images, spec)?;
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
