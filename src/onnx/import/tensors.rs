//! A graph's inputs and tensors read from their protobuf messages: one
//! sample's shape, and a tensor's values as f32 wherever they are stored.

use std::path::Path;

use super::external;
use super::proto::tensor_proto::{DataLocation, DataType};
use super::proto::{self, TensorProto};

/// One sample's shape: the input's dimensions after the batch.
pub(super) fn sample_shape(input: &proto::ValueInfoProto) -> Result<Vec<usize>, String> {
    let name = input.name.as_deref().unwrap_or("");
    let Some(proto::type_proto::Value::TensorType(tensor)) = input.r#type.as_ref().and_then(|t| t.value.as_ref())
    else {
        return Err(format!("input `{name}` is not a tensor"));
    };
    if tensor.elem_type != Some(DataType::Float as i32) {
        return Err(format!("input `{name}` is not float32; nnc models read float32 rows"));
    }
    let dims = tensor.shape.as_ref().map(|s| s.dim.as_slice()).unwrap_or_default();
    let mut shape = Vec::new();
    for (k, dim) in dims.iter().enumerate().skip(1) {
        match dim.value {
            Some(proto::tensor_shape_proto::dimension::Value::DimValue(v)) if v > 0 => shape.push(v as usize),
            _ => {
                let fixed_first =
                    matches!(dims[0].value, Some(proto::tensor_shape_proto::dimension::Value::DimValue(_)));
                // PyTorch's recurrent layers read [T, N, F] unless built with batch_first.
                let hint = if k == 1 && dims.len() == 3 && fixed_first {
                    " (a sequence laid out [steps, batch, features]: build PyTorch's recurrent layers with \
                     `batch_first=True` and export again)"
                } else {
                    ""
                };
                return Err(format!(
                    "dimension {k} of input `{name}` is not a fixed size; nnc needs every dimension after the batch{hint}"
                ));
            }
        }
    }
    if dims.len() < 2 {
        return Err(format!("input `{name}` has no dimension after the batch"));
    }
    Ok(shape)
}

/// A tensor's dimensions and values as f32 (float or int64 data), read
/// from the file beside the model (in `folder`) when stored outside it.
pub(super) fn tensor_values(t: &TensorProto, folder: Option<&Path>) -> Result<(Vec<usize>, Vec<f32>), String> {
    let name = t.name.as_deref().unwrap_or("");
    let dims: Vec<usize> = t
        .dims
        .iter()
        .map(|&d| usize::try_from(d).map_err(|_| format!("tensor `{name}` has a negative size")))
        .collect::<Result<_, _>>()?;
    let count = dims
        .iter()
        .try_fold(1usize, |n, &d| n.checked_mul(d))
        .ok_or_else(|| format!("tensor `{name}` is too large"))?;
    let width = match DataType::try_from(t.data_type.unwrap_or(0)) {
        Ok(DataType::Float) => 4,
        Ok(DataType::Int64) => 8,
        _ => return Err(format!("tensor `{name}` is neither float32 nor int64")),
    };
    let stored_outside;
    let raw = if t.data_location == Some(DataLocation::External as i32) {
        let bytes = count.checked_mul(width).ok_or_else(|| format!("tensor `{name}` is too large"))?;
        stored_outside = external::read(t, folder, bytes)?;
        Some(stored_outside.as_slice())
    } else {
        t.raw_data.as_deref()
    };
    let data: Vec<f32> = match (width, raw) {
        (4, Some(raw)) => raw.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect(),
        (4, None) => t.float_data.clone(),
        (_, Some(raw)) => {
            raw.chunks_exact(8).map(|b| i64::from_le_bytes(b.try_into().unwrap_or([0; 8])) as f32).collect()
        }
        (_, None) => t.int64_data.iter().map(|&v| v as f32).collect(),
    };
    if data.len() != count {
        return Err(format!("tensor `{name}` holds {} values for its shape {dims:?} ({count})", data.len()));
    }
    Ok((dims, data))
}
