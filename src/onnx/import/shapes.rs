//! The shape arithmetic PyTorch writes where a shape depends on the batch
//! size: a recurrent layer's initial states are zeros of `[1, batch,
//! hidden]`, built when the graph runs from the input's `Shape` (`Gather`,
//! `Unsqueeze`, `Concat`, then `ConstantOfShape` or `Expand`), and
//! `x.view(x.size(0), -1)` reshapes to such a shape. Shapes are followed
//! with the batch as a symbol, so zero states of any batch become nnc's
//! own (an `lstm` starts from zeros), a shape that keeps the batch first
//! becomes a reshape of each sample, and anything else is refused.

use super::proto::NodeProto;
use super::{Importer, Value, attribute, int_attr, ints_attr, tensor_values, unsupported_detail};

/// One dimension of a shape the graph computes: the batch's, known only
/// when it runs, or a number.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) enum Dim {
    Batch,
    Fixed(i64),
}

impl Importer<'_> {
    /// `Shape`: the dimensions of a value, the batch's among them.
    pub(super) fn shape_of(&mut self, node: &NodeProto) -> Result<(), String> {
        let fixed = |shape: &[usize]| shape.iter().map(|&d| Dim::Fixed(d as i64)).collect::<Vec<_>>();
        let with_batch = |shape: &[usize]| [vec![Dim::Batch], fixed(shape)].concat();
        let dims = match self.value(node, 0)? {
            Value::Input(k) => with_batch(&self.inputs[k].shape),
            Value::Computed { shape, .. } => with_batch(&shape),
            Value::TimeMajor { shape, .. } if shape.len() == 2 => {
                vec![Dim::Fixed(shape[0] as i64), Dim::Batch, Dim::Fixed(shape[1] as i64)]
            }
            Value::DirectionsInner(out) => {
                let rows = [Dim::Batch, Dim::Fixed(out.directions as i64), Dim::Fixed(out.hidden as i64)];
                if out.every_step { [&[Dim::Fixed(out.steps as i64)][..], &rows].concat() } else { rows.to_vec() }
            }
            Value::Zeros(dims) => dims,
            _ => return Err(unsupported_detail(node, "nnc follows `Shape` only of an input or a layer's output")),
        };
        let rank = dims.len() as i64;
        let bound = |k: i64| (if k < 0 { k + rank } else { k }).clamp(0, rank) as usize;
        let (start, end) = (bound(int_attr(node, "start", 0)), bound(int_attr(node, "end", rank)));
        let dims = dims.get(start..end.max(start)).unwrap_or_default().to_vec();
        self.set(node, Value::Dims { dims, scalar: false });
        Ok(())
    }

    /// `Gather` along axis 0 of computed dimensions.
    pub(super) fn gather_dims(&mut self, node: &NodeProto, dims: Vec<Dim>) -> Result<(), String> {
        let (index_dims, indices) = self.constant(node, 1)?;
        if int_attr(node, "axis", 0) != 0 {
            return Err(unsupported_detail(node, "it gathers dimensions along an axis other than 0"));
        }
        let picked = indices
            .iter()
            .map(|&i| {
                let i = i as i64;
                let i = if i < 0 { i + dims.len() as i64 } else { i };
                usize::try_from(i).ok().and_then(|i| dims.get(i).copied())
            })
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| unsupported_detail(node, "its index is outside the shape"))?;
        self.set(node, Value::Dims { dims: picked, scalar: index_dims.is_empty() });
        Ok(())
    }

    /// `Unsqueeze` of one computed dimension into a list of one.
    pub(super) fn unsqueeze(&mut self, node: &NodeProto) -> Result<(), String> {
        let axes = match ints_attr(node, "axes") {
            Some(axes) => axes,
            None => self.constant(node, 1)?.1.iter().map(|&a| a as i64).collect(),
        };
        match self.value(node, 0)? {
            Value::Dims { dims, scalar: true } if axes == [0] => {
                self.set(node, Value::Dims { dims, scalar: false });
                Ok(())
            }
            _ => Err(unsupported_detail(node, "nnc follows `Unsqueeze` only of a dimension, into a shape")),
        }
    }

    /// `Concat` of computed dimensions and constant ones into a shape.
    pub(super) fn concat_dims(&mut self, node: &NodeProto) -> Result<(), String> {
        if !matches!(int_attr(node, "axis", 0), 0 | -1) {
            return Err(unsupported_detail(node, "it joins shapes along an axis they do not have"));
        }
        let mut dims = Vec::new();
        for k in 0..node.input.len() {
            match self.value(node, k)? {
                Value::Dims { dims: part, scalar: false } => dims.extend(part),
                Value::Constant(d, values) if d.len() == 1 => {
                    dims.extend(values.iter().map(|&v| Dim::Fixed(v as i64)));
                }
                _ => return Err(unsupported_detail(node, "it joins a shape with something other than dimensions")),
            }
        }
        self.set(node, Value::Dims { dims, scalar: false });
        Ok(())
    }

    /// Constant input `k` as whole numbers, or `None` when the node leaves
    /// that optional input out (a `Slice`'s axes and steps).
    fn optional_ints(&self, node: &NodeProto, k: usize) -> Result<Option<Vec<i64>>, String> {
        match node.input.get(k).filter(|n| !n.is_empty()) {
            Some(_) => Ok(Some(self.constant(node, k)?.1.iter().map(|&v| v as i64).collect())),
            None => Ok(None),
        }
    }

    /// `Slice` of computed dimensions: some of them, in order.
    pub(super) fn slice_dims(&mut self, node: &NodeProto, dims: Vec<Dim>) -> Result<(), String> {
        let one = |k: usize| -> Result<Option<i64>, String> {
            match self.optional_ints(node, k)?.as_deref() {
                None => Ok(None),
                Some(&[v]) => Ok(Some(v)),
                Some(_) => Err(unsupported_detail(node, "nnc follows `Slice` of a shape along its one axis only")),
            }
        };
        let (start, end) = (one(1)?.unwrap_or(0), one(2)?.unwrap_or(i64::MAX));
        if one(3)?.is_some_and(|axis| axis != 0 && axis != -1) || one(4)?.is_some_and(|step| step != 1) {
            return Err(unsupported_detail(node, "nnc follows `Slice` of a shape along its one axis, step 1"));
        }
        let len = dims.len() as i64;
        let bound = |k: i64| (if k < 0 { k + len } else { k }).clamp(0, len) as usize;
        let dims = dims[bound(start)..bound(end).max(bound(start))].to_vec();
        self.set(node, Value::Dims { dims, scalar: false });
        Ok(())
    }

    /// `Mul` of two computed dimensions (or a dimension and a number).
    pub(super) fn mul_dims(&mut self, node: &NodeProto) -> Result<(), String> {
        let one = |k: usize| -> Option<(Dim, bool)> {
            match self.value(node, k).ok()? {
                Value::Dims { dims, scalar } if dims.len() == 1 => Some((dims[0], scalar)),
                Value::Constant(d, values) if values.len() == 1 && values[0].fract() == 0.0 => {
                    Some((Dim::Fixed(values[0] as i64), d.is_empty()))
                }
                _ => None,
            }
        };
        let product = match (one(0), one(1)) {
            (Some((a, a_scalar)), Some((b, b_scalar))) => match (a, b) {
                (Dim::Fixed(a), Dim::Fixed(b)) => a.checked_mul(b).map(|p| (Dim::Fixed(p), a_scalar && b_scalar)),
                (Dim::Batch, Dim::Fixed(1)) | (Dim::Fixed(1), Dim::Batch) => Some((Dim::Batch, a_scalar && b_scalar)),
                _ => None,
            },
            _ => None,
        };
        let Some((dim, scalar)) = product else {
            return Err(unsupported_detail(node, "nnc follows `Mul` of shapes only of one number by another"));
        };
        self.set(node, Value::Dims { dims: vec![dim], scalar });
        Ok(())
    }

    /// `Reshape` of computed dimensions into a list of them (`[-1]` or
    /// their count).
    pub(super) fn reshape_dims(&mut self, node: &NodeProto, dims: Vec<Dim>) -> Result<(), String> {
        match self.constant(node, 1)?.1[..] {
            [v] if v == -1.0 || v == dims.len() as f32 => {
                self.set(node, Value::Dims { dims, scalar: false });
                Ok(())
            }
            _ => Err(unsupported_detail(node, "nnc follows `Reshape` of a shape only into a list")),
        }
    }

    /// `ConstantOfShape` of zeros: a recurrent layer's initial state.
    pub(super) fn constant_of_shape(&mut self, node: &NodeProto) -> Result<(), String> {
        let Value::Dims { dims, scalar: false } = self.value(node, 0)? else {
            return Err(unsupported_detail(node, "its shape is not one nnc follows"));
        };
        let fill = match attribute(node, "value").and_then(|a| a.t.as_ref()) {
            Some(t) => tensor_values(t, self.folder)?.1,
            None => vec![0.0],
        };
        if fill.iter().any(|&v| v != 0.0) {
            return Err(unsupported_detail(node, "nnc maps `ConstantOfShape` only as zeros"));
        }
        self.set(node, Value::Zeros(dims));
        Ok(())
    }

    /// `Expand` of zeros to a computed shape: a recurrent layer's initial state.
    pub(super) fn expand(&mut self, node: &NodeProto) -> Result<(), String> {
        let zeros = match self.value(node, 0)? {
            Value::Constant(_, values) => values.iter().all(|&v| v == 0.0),
            Value::Zeros(_) => true,
            _ => false,
        };
        match self.value(node, 1)? {
            Value::Dims { dims, scalar: false } if zeros => {
                self.set(node, Value::Zeros(dims));
                Ok(())
            }
            _ => Err(unsupported_detail(node, "nnc maps `Expand` only as zeros of a computed shape")),
        }
    }

    /// `Slice` of zeros: one layer's initial state of a stack's (PyTorch's
    /// `num_layers`).
    pub(super) fn slice_zeros(&mut self, node: &NodeProto, mut dims: Vec<Dim>) -> Result<(), String> {
        let list = |k: usize| self.optional_ints(node, k);
        let (starts, ends) = (list(1)?.unwrap_or_default(), list(2)?.unwrap_or_default());
        let axes = list(3)?.unwrap_or_else(|| (0..starts.len() as i64).collect());
        let steps = list(4)?.unwrap_or_else(|| vec![1; starts.len()]);
        let rank = dims.len() as i64;
        let fits = starts.len() == ends.len() && axes.len() == starts.len() && steps.len() == starts.len();
        if !fits || steps.iter().any(|&s| s != 1) {
            return Err(unsupported_detail(node, "nnc follows `Slice` only with one start and end per axis, step 1"));
        }
        for ((&start, &end), &axis) in starts.iter().zip(&ends).zip(&axes) {
            let axis = if axis < 0 { axis + rank } else { axis };
            let Some(dim) = usize::try_from(axis).ok().and_then(|a| dims.get_mut(a)) else {
                return Err(unsupported_detail(node, "it slices an axis the shape does not have"));
            };
            *dim = match *dim {
                Dim::Fixed(len) => {
                    let len = len.max(0);
                    let bound = |k: i64| (if k < 0 { k + len } else { k }).clamp(0, len);
                    Dim::Fixed((bound(end) - bound(start)).max(0))
                }
                Dim::Batch if start == 0 && end >= i64::from(i32::MAX) => Dim::Batch,
                Dim::Batch => return Err(unsupported_detail(node, "it slices the batch")),
            };
        }
        self.set(node, Value::Zeros(dims));
        Ok(())
    }
}

/// Whether `value`, a recurrent layer's initial state, is zeros of
/// `[directions, batch, hidden]`, as the layer's own start is.
pub(super) fn is_zero_state(value: &Value, directions: usize, hidden: usize) -> bool {
    let one_row = |dims: &[Dim]| {
        matches!(dims, [Dim::Fixed(d), Dim::Batch | Dim::Fixed(1), Dim::Fixed(h)]
            if *d == directions as i64 && *h == hidden as i64)
    };
    match value {
        Value::Zeros(dims) => one_row(dims),
        Value::Constant(dims, values) => {
            dims.len() == 3
                && one_row(&[Dim::Fixed(dims[0] as i64), Dim::Fixed(dims[1] as i64), Dim::Fixed(dims[2] as i64)])
                && values.iter().all(|&v| v == 0.0)
        }
        _ => false,
    }
}

/// A computed target shape that starts with the batch, as a constant one
/// reads: 0 (ONNX's "copy this dimension") for the batch, then its numbers.
pub(super) fn batch_shape(dims: &[Dim]) -> Option<Vec<f32>> {
    let (Dim::Batch, rest) = dims.split_first()? else { return None };
    rest.iter()
        .map(|d| if let Dim::Fixed(v) = d { Some(*v as f32) } else { None })
        .collect::<Option<Vec<_>>>()
        .map(|rest| [vec![0.0], rest].concat())
}
