//! The runtime model: a checked model's parameters and buffers (batch
//! normalisation's running statistics) in one store, and its forward passes
//! compiled once per batch size. This is what inference needs and all it
//! needs — no training step, no optimizer state. The `Trainer` wraps a
//! `Model` and adds those.

use std::collections::HashMap;

use crate::check::{CheckedModel, ValueRef};
use crate::data::Dataset;
use crate::diag::Diag;
use crate::exec::{Backend, Compiled, Store};
use crate::ir::init::init_params;
use crate::ir::{Graph, Shape, StateInfo};
use crate::pipeline;

/// Rows per pass of `nnc explain`'s input gradients.
pub const CHUNK: usize = 256;

/// Activations a forward pass over many rows aims at: enough rows that each
/// product packs its weights once for thousands of rows of an MLP, few
/// enough that a CNN's feature maps stay near the caches (LeNet at 64 MiB
/// of activations per pass predicted 10–30 % slower than at 16 MiB).
const CHUNK_BYTES: usize = 16 << 20;
/// Bounds of the rows per forward pass when predicting or evaluating.
const CHUNK_ROWS: (usize, usize) = (16, 4096);

/// Rows per forward pass when `predict`, `eval` or the Python package run
/// a whole data set: as many as keep one pass's activations near
/// `CHUNK_BYTES` (the MNIST MLP's 4,000-row passes predict 20 % more rows
/// per second than 256-row ones; LeNet's stay near 256 rows).
pub fn chunk_rows(model: &CheckedModel) -> usize {
    let per_row = crate::summary::summarize(model).total_activation_bytes.max(1);
    (CHUNK_BYTES / per_row).clamp(CHUNK_ROWS.0, CHUNK_ROWS.1)
}

/// A tensor a checkpoint holds: its saved name, shape and place in the store.
#[derive(Debug, Clone)]
pub struct Slot {
    pub name: String,
    pub shape: Shape,
    /// (offset, length) in the store.
    pub range: (usize, usize),
    /// Whether loading needs it (parameters and buffers; optimizer state is optional).
    pub required: bool,
}

/// Parameters, buffers and compiled forward passes of one model.
pub struct Model {
    /// The checked model, with the training settings it runs under.
    pub checked: CheckedModel,
    pub backend: Backend,
    /// `<layer>.weight`, `<layer>.bias`, … in parameter order.
    pub param_names: Vec<String>,
    param_shapes: Vec<Shape>,
    /// The model's buffers, in state order.
    buffers: Vec<StateInfo>,
    pub(crate) store: Store,
    /// Forward passes by (batch size, with loss).
    forwards: HashMap<(usize, bool), Compiled<Graph>>,
    /// Input-gradient passes (`nnc explain`) by batch size.
    input_gradients: HashMap<usize, Compiled<Graph>>,
    /// Rows per forward pass over many rows (`chunk_rows`), worked out once:
    /// it walks the whole model, which costs as much as a small forward pass.
    chunk: usize,
}

impl Model {
    /// Lays out the store of `model` and initialises its parameters from
    /// `model.train.seed` (the same weights on every machine).
    pub fn new(model: &CheckedModel, backend: Backend) -> Result<Model, Diag> {
        let probe = pipeline::forward_graph(model, 1, false)?;
        let mut store = Store::new(&probe);
        for (p, values) in init_params::<f32>(&probe.params, model.train.seed).iter().enumerate() {
            store.set_param(p, values);
        }
        Ok(Model {
            checked: model.clone(),
            backend,
            param_names: probe.params.iter().map(|p| p.name.clone()).collect(),
            param_shapes: probe.params.iter().map(|p| p.shape.clone()).collect(),
            buffers: probe.states,
            store,
            forwards: HashMap::new(),
            input_gradients: HashMap::new(),
            chunk: chunk_rows(model),
        })
    }

    /// The current parameters, one tensor each (PyTorch layouts: dense weights `[out, in]`).
    pub fn params(&self) -> Vec<Vec<f32>> {
        self.store.params()
    }

    /// The parameters and buffers, with their place in the store.
    pub fn slots(&self) -> Vec<Slot> {
        let params = self.param_names.iter().zip(&self.param_shapes).zip(&self.store.layout.params);
        let params = params.map(|((name, shape), &range)| Slot {
            name: name.clone(),
            shape: shape.clone(),
            range,
            required: true,
        });
        let buffers = self.buffers.iter().zip(&self.store.layout.states).map(|(b, &range)| Slot {
            name: b.name.clone(),
            shape: b.shape.clone(),
            range,
            required: true,
        });
        params.chain(buffers).collect()
    }

    /// Sets the buffers of `standardize_target` (`<target>.mean` and
    /// `<target>.std`, per column) from the targets of the training rows;
    /// nothing for a model without them.
    pub fn fit_target_scale(&mut self, train: &Dataset) {
        if !self.checked.train.standardize_target || train.target_width == 0 {
            return;
        }
        // Each target a row holds, from its own columns; those with buffers
        // (the regressions' `<target>.mean` and `.std`) take their statistics.
        let mut start = 0;
        for t in self.checked.row_targets() {
            let width: usize = self.checked.shape_of(ValueRef::Target(t)).iter().product();
            let own: Vec<f32> =
                train.y.chunks(train.target_width).flat_map(|row| row[start..start + width].iter().copied()).collect();
            start += width;
            let (mean, std) = crate::data::column_statistics(&own, width);
            for (suffix, values) in [(".mean", mean), (".std", std)] {
                let name = format!("{}{suffix}", self.checked.targets[t].name);
                let slot = self.slots().into_iter().find(|s| s.name == name && s.range.1 == values.len());
                if let Some(Slot { range: (offset, len), .. }) = slot {
                    self.store.data_mut()[offset..offset + len].copy_from_slice(&values);
                }
            }
        }
    }

    /// Every parameter and buffer: (name, shape, values).
    pub fn tensors(&self) -> Vec<(String, Vec<usize>, Vec<f32>)> {
        tensors_of(&self.store, self.slots())
    }

    /// Loads the parameters and buffers from `saved` (which may hold more,
    /// such as optimizer state). Every missing tensor or wrong shape is an
    /// error naming the tensor and both shapes; nothing is loaded then.
    pub fn restore(&mut self, saved: &HashMap<String, (Vec<usize>, Vec<f32>)>) -> Result<(), String> {
        let slots = self.slots();
        restore_slots(&mut self.store, &slots, saved)
    }

    /// Compiles the forward pass for batches of `batch` rows now rather than
    /// at its first use.
    pub fn prepare(&mut self, batch: usize, with_loss: bool) -> Result<(), String> {
        self.forward_pass(batch, with_loss).map(|_| ())
    }

    /// The forward pass for `batch` rows, compiled on first use (running it
    /// checks that the store is laid out as its plan expects).
    fn forward_pass(&mut self, batch: usize, with_loss: bool) -> Result<&mut Compiled<Graph>, String> {
        let key = (batch, with_loss);
        if !self.forwards.contains_key(&key) {
            let compiled =
                pipeline::compile_forward(&self.checked, batch, with_loss, self.backend).map_err(|d| d.message)?;
            self.forwards.insert(key, compiled);
        }
        self.forwards.get_mut(&key).ok_or_else(|| "forward cache".to_string())
    }

    /// One forward pass over exactly `rows` rows: the prediction and, when
    /// targets `y` are given, the mean loss.
    pub fn run_batch(&mut self, x: &[f32], y: &[f32], rows: usize) -> Result<(Vec<f32>, Option<f32>), String> {
        let with_loss = !y.is_empty();
        let y: &[f32] = if self.checked.targets.is_empty() { &[] } else { y };
        let mut store = std::mem::take(&mut self.store);
        let result = self.forward_pass(rows, with_loss).and_then(|f| f.run(&mut store, x, y));
        self.store = store;
        result
    }

    /// The gradient of Σ seed ⊙ output with respect to the (preprocessed)
    /// input, for `rows` samples of `x` and a `seed` shaped like the output
    /// (see `pipeline::input_gradient_graph`).
    pub fn input_gradient(&mut self, x: &[f32], seed: &[f32], rows: usize) -> Result<Vec<f32>, String> {
        if !self.input_gradients.contains_key(&rows) {
            let graph = pipeline::input_gradient_graph(&self.checked, rows).map_err(|d| d.message)?;
            self.input_gradients.insert(rows, Compiled::<Graph>::new(graph, self.backend)?);
        }
        let pass = self.input_gradients.get_mut(&rows).ok_or("input gradient cache")?;
        Ok(pass.run(&mut self.store, x, seed)?.0)
    }

    /// Runs the model forward over `rows` samples and returns the raw
    /// predictions (logits, probabilities or values), one row per sample.
    pub fn predict(&mut self, x: &[f32], rows: usize) -> Result<Vec<f32>, String> {
        Ok(self.forward(x, &[], rows)?.0)
    }

    /// Forward passes in chunks: predictions and the summed loss (when
    /// targets are given; a model without targets is scored against `y`
    /// as its reconstruction).
    pub fn forward(&mut self, x: &[f32], y: &[f32], rows: usize) -> Result<(Vec<f32>, f64), String> {
        let mut predictions = Vec::new();
        let loss_sum = self.forward_chunks(x, y, rows, |chunk, _| predictions.extend_from_slice(chunk))?;
        Ok((predictions, loss_sum))
    }

    /// `forward`, handing each chunk's predictions to `each` with the rows
    /// they are of, and returning only the summed loss.
    pub fn forward_chunks(
        &mut self,
        x: &[f32],
        y: &[f32],
        rows: usize,
        mut each: impl FnMut(&[f32], std::ops::Range<usize>),
    ) -> Result<f64, String> {
        let width = x.len() / rows.max(1);
        let target_width = y.len() / rows.max(1);
        let mut loss_sum = 0.0;
        let mut start = 0;
        let chunk = self.chunk;
        while start < rows {
            let n = chunk.min(rows - start);
            let xs = &x[start * width..(start + n) * width];
            let ys = &y[start * target_width..(start + n) * target_width];
            let (prediction, loss) = self.run_batch(xs, ys, n)?;
            each(&prediction, start..start + n);
            loss_sum += f64::from(loss.unwrap_or(0.0)) * n as f64;
            start += n;
        }
        Ok(loss_sum)
    }
}

/// The values of `slots` in `store`.
pub(crate) fn tensors_of(store: &Store, slots: Vec<Slot>) -> Vec<(String, Vec<usize>, Vec<f32>)> {
    slots.into_iter().map(|s| (s.name, s.shape, store.data()[s.range.0..s.range.0 + s.range.1].to_vec())).collect()
}

/// Checks every wanted slot against `saved`, then copies them in.
pub(crate) fn restore_slots(
    store: &mut Store,
    wanted: &[Slot],
    saved: &HashMap<String, (Vec<usize>, Vec<f32>)>,
) -> Result<(), String> {
    for slot in wanted {
        let (name, shape) = (&slot.name, &slot.shape);
        match saved.get(name) {
            None if slot.required => {
                return Err(format!("the checkpoint has no tensor `{name}` (the model needs one of shape {shape:?})"));
            }
            Some((found, _)) if found != shape => {
                return Err(format!(
                    "tensor `{name}` has shape {found:?} in the checkpoint but {shape:?} in the model"
                ));
            }
            Some((_, values)) if values.len() != slot.range.1 => {
                return Err(format!(
                    "tensor `{name}` holds {} values in the checkpoint; its shape {shape:?} needs {}",
                    values.len(),
                    slot.range.1
                ));
            }
            _ => {}
        }
    }
    for slot in wanted {
        if let Some((_, values)) = saved.get(&slot.name) {
            let (o, len) = slot.range;
            store.data_mut()[o..o + len].copy_from_slice(values);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    /// A saved tensor whose values do not fill its shape is refused before
    /// anything is copied in.
    #[test]
    fn a_tensor_short_of_its_shape_is_refused() {
        let mut store = crate::exec::Store::zeros(6);
        let slot = Slot { name: "w".into(), shape: vec![2, 3], range: (0, 6), required: true };
        let saved = |len: usize| HashMap::from([("w".to_string(), (vec![2, 3], vec![1.0; len]))]);
        let err = restore_slots(&mut store, std::slice::from_ref(&slot), &saved(5)).expect_err("refused");
        assert!(err.contains("holds 5 values") && err.contains("needs 6"), "{err}");
        assert_eq!(store.data(), &[0.0; 6]);
        restore_slots(&mut store, &[slot], &saved(6)).expect("restored");
        assert_eq!(store.data(), &[1.0; 6]);
    }
}
