//! Checkpoints in safetensors: every parameter (PyTorch names and layouts:
//! dense `[out, in]`, conv `[out, in, kh, kw]`) and the optimizer state, with
//! provenance in the metadata: the model source and its hash, seed, epoch,
//! step and nnc version. Written atomically; a damaged file is an error.

use std::collections::HashMap;
use std::path::Path;

use safetensors::tensor::{Dtype, SafeTensors, TensorView};
use sha2::{Digest, Sha256};

use crate::data::Scaler;
use crate::train::Trainer;
use crate::train::plateau::Plateau;

/// A checkpoint read back from disk.
#[derive(Debug, Clone, PartialEq)]
pub struct Checkpoint {
    pub tensors: HashMap<String, (Vec<usize>, Vec<f32>)>,
    pub model: String,
    /// The model file's text the weights were trained from.
    pub source: String,
    pub source_hash: String,
    pub epoch: usize,
    pub step: u64,
    pub seed: u64,
    /// The input preprocessing the weights were trained with.
    pub scaler: Scaler,
    /// The training data's feature columns by name (empty when unknown).
    pub columns: Vec<String>,
    /// Where a `plateau` learning-rate schedule stood.
    pub plateau: Plateau,
}

/// What a checkpoint records besides the weights: the model file's text and
/// how the training data's inputs were read.
pub struct Origin<'a> {
    pub source: &'a str,
    pub scaler: &'a Scaler,
    /// The feature columns by name, empty when the data had no header.
    pub columns: &'a [String],
}

impl<'a> Origin<'a> {
    /// An origin without column names.
    pub fn unnamed(source: &'a str, scaler: &'a Scaler) -> Origin<'a> {
        Origin { source, scaler, columns: &[] }
    }
}

/// Hex SHA-256 of a model's source text.
pub fn source_hash(source: &str) -> String {
    Sha256::digest(source.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

/// Serialises the trainer's state and where it came from.
pub fn to_bytes(trainer: &Trainer, origin: &Origin) -> Result<Vec<u8>, String> {
    let Origin { source, scaler, columns } = *origin;
    let tensors = trainer.tensors();
    // safetensors' writer indexes past its table on a repeated name.
    let mut names = std::collections::HashSet::new();
    if let Some((name, _, _)) = tensors.iter().find(|(name, _, _)| !names.insert(name)) {
        return Err(format!("two of the model's tensors are named `{name}`; a checkpoint holds each name once"));
    }
    let bytes: Vec<Vec<u8>> =
        tensors.iter().map(|(_, _, v)| v.iter().flat_map(|x| x.to_le_bytes()).collect()).collect();
    let views = tensors
        .iter()
        .zip(&bytes)
        .map(|((name, shape, _), data)| {
            TensorView::new(Dtype::F32, shape.clone(), data).map(|v| (name.clone(), v)).map_err(|e| e.to_string())
        })
        .collect::<Result<Vec<_>, _>>()?;
    let metadata = HashMap::from([
        ("format".to_string(), "pt".to_string()),
        ("model".to_string(), trainer.model.checked.name.clone()),
        ("source".to_string(), source.to_string()),
        ("source_sha256".to_string(), source_hash(source)),
        ("seed".to_string(), trainer.config.seed.to_string()),
        ("epoch".to_string(), trainer.epochs_done().to_string()),
        ("step".to_string(), trainer.steps_done().to_string()),
        ("nnc_version".to_string(), env!("CARGO_PKG_VERSION").to_string()),
        ("scaler".to_string(), serde_json::to_string(scaler).map_err(|e| e.to_string())?),
        ("columns".to_string(), serde_json::to_string(columns).map_err(|e| e.to_string())?),
        ("plateau".to_string(), serde_json::to_string(&trainer.plateau()).map_err(|e| e.to_string())?),
    ]);
    safetensors::serialize(views, Some(metadata)).map_err(|e| e.to_string())
}

/// Writes a checkpoint atomically (temporary file, fsync, rename).
pub fn save(path: &Path, trainer: &Trainer, origin: &Origin) -> Result<(), String> {
    let bytes = to_bytes(trainer, origin)?;
    crate::io::write_atomic(path, &bytes).map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// Parses a checkpoint; truncated or foreign files are errors, never panics.
pub fn from_bytes(bytes: &[u8]) -> Result<Checkpoint, String> {
    let (_, header) =
        SafeTensors::read_metadata(bytes).map_err(|e| format!("not a readable safetensors file ({e})"))?;
    let file = SafeTensors::deserialize(bytes).map_err(|e| format!("not a readable safetensors file ({e})"))?;
    let meta = header.metadata().clone().unwrap_or_default();
    let field = |k: &str| {
        meta.get(k).cloned().ok_or_else(|| format!("the checkpoint's metadata has no `{k}`; was it written by nnc?"))
    };
    let number =
        |k: &str| field(k).and_then(|v| v.parse::<u64>().map_err(|_| format!("metadata `{k}` is not a number")));
    let mut tensors = HashMap::new();
    for (name, view) in file.tensors() {
        if view.dtype() != Dtype::F32 {
            return Err(format!("tensor `{name}` is {:?}, expected F32", view.dtype()));
        }
        let values: Vec<f32> =
            view.data().chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
        if let Some(i) = values.iter().position(|v| !v.is_finite()) {
            return Err(format!(
                "tensor `{name}` holds {} at element {i}; a checkpoint with non-finite weights would predict nonsense",
                values[i]
            ));
        }
        tensors.insert(name, (view.shape().to_vec(), values));
    }
    Ok(Checkpoint {
        tensors,
        model: field("model")?,
        source: field("source")?,
        source_hash: field("source_sha256")?,
        epoch: number("epoch")? as usize,
        step: number("step")?,
        seed: number("seed")?,
        scaler: usable(
            serde_json::from_str(&field("scaler")?).map_err(|e| format!("metadata `scaler` is unreadable ({e})"))?,
        )?,
        // Checkpoints from before column names were kept have none.
        columns: match meta.get("columns") {
            Some(text) => serde_json::from_str(text).map_err(|e| format!("metadata `columns` is unreadable ({e})"))?,
            None => Vec::new(),
        },
        // Checkpoints from before the plateau schedule start it afresh.
        plateau: match meta.get("plateau") {
            Some(text) => serde_json::from_str(text).map_err(|e| format!("metadata `plateau` is unreadable ({e})"))?,
            None => Plateau::default(),
        },
    })
}

/// The scaler, when it shifts by finite values and divides by finite
/// nonzero ones: anything else would turn every prediction into
/// infinities or NaN.
fn usable(scaler: Scaler) -> Result<Scaler, String> {
    let (shift, divisor): (&[f32], &[f32]) = match &scaler {
        Scaler::None => (&[], &[]),
        Scaler::Scale(s) => (&[0.0], std::slice::from_ref(s)),
        Scaler::Standardize { mean, std } => (mean, std),
    };
    let fits = |(s, d): (&f32, &f32)| s.is_finite() && d.is_finite() && *d != 0.0;
    match shift.iter().zip(divisor).position(|pair| !fits(pair)) {
        Some(j) => Err(format!(
            "metadata `scaler` preprocesses input value {j} as (x - {}) / {}; a checkpoint's preprocessing \
             needs finite shifts and finite, nonzero divisors",
            shift[j], divisor[j]
        )),
        None if shift.len() != divisor.len() => Err("metadata `scaler` has unequal means and deviations".into()),
        None => Ok(scaler),
    }
}

pub fn load(path: &Path) -> Result<Checkpoint, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    from_bytes(&bytes).map_err(|e| format!("{}: {e}", path.display()))
}
