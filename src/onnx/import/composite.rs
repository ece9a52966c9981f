//! The multi-node patterns `nnc export` writes, read back into one layer
//! each: element-wise formulas (gelu, silu), maxout's reshape and
//! reduction, an embedding's cast and lookup, and a recurrent layer between
//! its transposes with its concatenated biases.

use super::formula::{Binary, Expr};
use super::proto::{NodeProto, tensor_proto::DataType};
use super::shapes::{Dim, is_zero_state};
use super::{Flow, Importer, Value, attribute, int_attr, ints_attr, unsupported_detail};
use crate::check::Cell;
use crate::onnx::reorder_gates;

/// An operand of an element-wise op: a formula of a computed value, or a number.
enum Term {
    Of { flow: Flow, shape: Vec<usize>, expr: Expr },
    Number(f32),
}

impl Importer<'_> {
    /// Whether a node reads a formula or a number (so it continues a formula).
    pub(super) fn in_formula(&self, node: &NodeProto) -> bool {
        node.input.iter().any(|i| matches!(self.values.get(i), Some(Value::Formula { .. } | Value::Constant(..))))
    }

    fn term(&self, node: &NodeProto, k: usize) -> Result<Term, String> {
        match self.value(node, k)? {
            Value::Constant(_, data) if data.len() == 1 => Ok(Term::Number(data[0])),
            Value::Formula { flow, shape, expr } => Ok(Term::Of { flow, shape, expr }),
            _ => {
                let (flow, shape) = self.computed(node, k)?;
                Ok(Term::Of { flow, shape, expr: Expr::X })
            }
        }
    }

    /// An element-wise op in a formula of one value. A formula that
    /// computes one of nnc's activations (gelu, however it is spelled,
    /// `formula::Expr::activation`) becomes that layer; any other is
    /// refused where something other than a formula reads it.
    pub(super) fn formula(&mut self, node: &NodeProto) -> Result<(), String> {
        let op = node.op_type.as_deref().unwrap_or("");
        let mut of: Option<(Flow, Vec<usize>)> = None;
        let mut operands = Vec::new();
        for k in 0..node.input.len() {
            match self.term(node, k)? {
                Term::Number(v) => operands.push(Expr::Number(v)),
                Term::Of { flow, shape, expr } => {
                    if of.as_ref().is_some_and(|(f, _)| *f != flow) {
                        return Err(unsupported_detail(
                            node,
                            "it combines two different values; nnc maps formulas of one",
                        ));
                    }
                    of = Some((flow, shape));
                    operands.push(expr);
                }
            }
        }
        let Some((mut flow, shape)) = of else { return Err(unsupported_detail(node, "it computes on numbers alone")) };
        let expr = match (op, <[Expr; 1]>::try_from(operands)) {
            ("Erf", Ok([a])) => Expr::Erf(Box::new(a)),
            ("Tanh", Ok([a])) => Expr::Tanh(Box::new(a)),
            (_, Err(operands)) => match (Binary::of(op), <[Expr; 2]>::try_from(operands)) {
                (Some(binary), Ok([a, b])) => Expr::Binary(binary, Box::new(a), Box::new(b)),
                _ => return Err(unsupported_detail(node, "it is not an element-wise op of a formula nnc knows")),
            },
            _ => return Err(unsupported_detail(node, "it is not an element-wise op of a formula nnc knows")),
        };
        if let Some(stage) = expr.activation() {
            flow.stages.push(stage.into());
            return self.output(node, flow, shape);
        }
        self.set(node, Value::Formula { flow, shape, expr });
        Ok(())
    }

    /// `Mul(x, Sigmoid(x))`, as `nnc export` writes silu.
    pub(super) fn silu(&mut self, node: &NodeProto) -> Result<(), String> {
        let ((a, shape), (b, _)) = (self.computed(node, 0)?, self.computed(node, 1)?);
        let is_sigmoid_of = |s: &Flow, x: &Flow| {
            s.source == x.source
                && s.stages.len() == x.stages.len() + 1
                && s.stages.last().is_some_and(|l| l == "sigmoid")
                && s.stages.starts_with(&x.stages)
        };
        let x = if is_sigmoid_of(&b, &a) {
            a
        } else if is_sigmoid_of(&a, &b) {
            b
        } else {
            return Err(unsupported_detail(node, "nnc maps `Mul` only as silu, x·sigmoid(x)"));
        };
        let mut flow = x;
        flow.stages.push("silu".into());
        self.output(node, flow, shape)
    }

    /// `Gemm` to units·pieces, `Reshape` to [units, pieces], `ReduceMax`
    /// over the pieces: maxout, as `nnc export` writes it.
    pub(super) fn maxout(&mut self, node: &NodeProto) -> Result<(), String> {
        let (mut flow, shape) = self.computed(node, 0)?;
        let axes = match ints_attr(node, "axes") {
            Some(axes) => axes,
            None => self.constant(node, 1)?.1.iter().map(|&a| a as i64).collect(),
        };
        let [units, pieces] = shape[..] else {
            return Err(unsupported_detail(node, "nnc maps `ReduceMax` only as maxout"));
        };
        let last_two = flow.stages.len().checked_sub(2).map(|k| (flow.stages[k].clone(), flow.stages[k + 1].clone()));
        let dense = self.counters.get("dense").copied().unwrap_or(0);
        let matches = int_attr(node, "keepdims", 1) == 0
            && (axes == [2] || axes == [-1])
            && last_two.is_some_and(|(d, r)| {
                d == format!("dense({})", units * pieces) && r == format!("reshape([{units}, {pieces}])")
            });
        if !matches || dense == 0 {
            return Err(unsupported_detail(
                node,
                "nnc maps `ReduceMax` only as maxout: Gemm, Reshape to [units, pieces], ReduceMax over the pieces",
            ));
        }
        flow.stages.truncate(flow.stages.len() - 2);
        // The dense layer just named becomes the maxout layer.
        self.counters.insert("dense", dense - 1);
        let name = self.layer_name("maxout");
        for what in ["weight", "bias"] {
            if let Some(t) = self.tensors.remove(&format!("dense{dense}.{what}")) {
                self.tensors.insert(format!("{name}.{what}"), t);
            }
        }
        flow.stages.push(format!("maxout({units}, pieces = {pieces})"));
        self.output(node, flow, vec![units])
    }

    /// `Cast` of the raw input to int64: token ids for a `Gather`.
    pub(super) fn cast(&mut self, node: &NodeProto) -> Result<(), String> {
        let to_int64 = int_attr(node, "to", 0) == DataType::Int64 as i64;
        let input = match self.value(node, 0)? {
            Value::Input(k) if to_int64 && self.inputs[k].shape.len() == 1 => k,
            _ => return Err(unsupported_detail(node, "nnc maps `Cast` only of a 1-D input to int64 token ids")),
        };
        self.inputs[input].tokens = true;
        self.set(node, Value::Input(input));
        Ok(())
    }

    /// `Gather(table, ids)` on token ids: an embedding.
    pub(super) fn embedding(&mut self, node: &NodeProto) -> Result<(), String> {
        let (dims, table) = self.constant(node, 0)?;
        let [vocab, dim] = dims[..] else { return Err(unsupported_detail(node, "its table is not a matrix")) };
        let input = match self.value(node, 1)? {
            Value::Input(k) if self.inputs[k].tokens && int_attr(node, "axis", 0) == 0 => &self.inputs[k],
            _ => {
                return Err(unsupported_detail(
                    node,
                    "nnc maps `Gather` only as an embedding of the input's token ids",
                ));
            }
        };
        let flow = Flow { source: input.name.clone(), stages: vec![format!("embedding({vocab}, {dim})")] };
        let shape = vec![input.shape[0], dim];
        let name = self.layer_name("embedding");
        self.tensors.insert(format!("{name}.weight"), (dims.clone(), table));
        self.output(node, flow, shape)
    }

    /// Concatenation of constants (a recurrent op's biases).
    pub(super) fn concat(&mut self, node: &NodeProto) -> Result<(), String> {
        let mut parts = Vec::new();
        for k in 0..node.input.len() {
            parts.push(self.constant(node, k)?);
        }
        let Some((first, _)) = parts.first() else { return Err(unsupported_detail(node, "it has no inputs")) };
        let rank = first.len() as i64;
        let axis = int_attr(node, "axis", 0);
        let axis = if axis < 0 { axis + rank } else { axis };
        let axis = usize::try_from(axis).unwrap_or(usize::MAX);
        let lined_up = axis < first.len()
            && parts.iter().all(|(d, _)| d.len() == first.len() && (0..d.len()).all(|k| k == axis || d[k] == first[k]));
        if !lined_up {
            return Err(unsupported_detail(node, "its constants do not line up"));
        }
        let outer: usize = first[..axis].iter().product();
        let mut dims = first.clone();
        dims[axis] = parts.iter().map(|(d, _)| d[axis]).sum();
        let mut data = Vec::new();
        for o in 0..outer {
            for (d, values) in &parts {
                let inner: usize = d[axis..].iter().product();
                data.extend_from_slice(&values[o * inner..(o + 1) * inner]);
            }
        }
        self.set(node, Value::Constant(dims, data));
        Ok(())
    }

    /// `[N, T, F]` ↔ `[T, N, F]` around a recurrent op, and the move of a
    /// recurrent output's direction axis next to its states'.
    pub(super) fn transpose(&mut self, node: &NodeProto) -> Result<(), String> {
        let perm = ints_attr(node, "perm");
        if perm.as_deref() == Some(&[0, 2, 1, 3]) {
            let Value::Recurrent { flow, stage, steps, hidden, every_step: true } = self.value(node, 0)? else {
                return Err(unsupported_detail(node, "nnc maps this `Transpose` only of a recurrent layer's states"));
            };
            self.set(node, Value::StepsTransposed { flow, stage, steps, hidden });
            return Ok(());
        }
        if perm.as_deref() != Some(&[1, 0, 2]) {
            return Err(unsupported_detail(
                node,
                "nnc maps `Transpose` only as the swap of batch and time around a recurrent layer",
            ));
        }
        let value = match self.value(node, 0)? {
            Value::TimeMajor { flow, shape } => Value::Computed { flow, shape },
            _ => {
                let (flow, shape) = self.computed(node, 0)?;
                if shape.len() != 2 {
                    return Err(unsupported_detail(
                        node,
                        &format!("it transposes values of shape {shape:?}, not sequences"),
                    ));
                }
                Value::TimeMajor { flow, shape }
            }
        };
        self.set(node, value);
        Ok(())
    }

    /// ONNX's RNN, LSTM or GRU (forward, default activations; a GRU's reset
    /// applied after its recurrent product, as PyTorch's) on a time-major
    /// sequence: nnc's `rnn`, `lstm` or `gru`, its gate blocks put back in
    /// PyTorch's order.
    pub(super) fn recurrent(&mut self, node: &NodeProto, cell: Cell) -> Result<(), String> {
        let Value::TimeMajor { flow, shape } = self.value(node, 0)? else {
            return Err(unsupported_detail(node, "its input is not a sequence transposed to time-major"));
        };
        let hidden = usize::try_from(int_attr(node, "hidden_size", 0)).unwrap_or(0);
        // The activations ONNX would take anyway may be spelt out (PyTorch's RNN does).
        let defaults: &[&[u8]] = match cell {
            Cell::Rnn => &[b"Tanh"],
            Cell::Lstm => &[b"Sigmoid", b"Tanh", b"Tanh"],
            Cell::Gru => &[b"Sigmoid", b"Tanh"],
        };
        // Initial states of zeros (what PyTorch writes) are nnc's own start.
        let zero_start = |k: usize| {
            node.input.get(k).is_none_or(String::is_empty)
                || self.value(node, k).is_ok_and(|v| is_zero_state(&v, hidden))
        };
        let plain = attribute(node, "direction").and_then(|a| a.s.as_deref()).is_none_or(|d| d == b"forward")
            && attribute(node, "activations").is_none_or(|a| a.strings == defaults)
            && attribute(node, "clip").is_none()
            && int_attr(node, "input_forget", 0) == 0
            && int_attr(node, "layout", 0) == 0
            && node.input.get(4).is_none_or(String::is_empty)
            && node.input.len() <= 8
            && (5..8).all(zero_start);
        if !plain {
            return Err(unsupported_detail(
                node,
                "nnc maps forward recurrent layers with default activations, no clip, lengths or peepholes, \
                 starting from zeros",
            ));
        }
        if cell == Cell::Gru && int_attr(node, "linear_before_reset", 0) != 1 {
            return Err(unsupported_detail(
                node,
                "nnc's gru applies the reset gate after the recurrent product, as PyTorch's does \
                 (`linear_before_reset = 1`); this GRU applies it before",
            ));
        }
        let (steps, features) = (shape[0], shape[1]);
        let (keyword, width) = (cell.keyword(), cell.gates() * hidden);
        let (w_dims, w) = self.constant(node, 1)?;
        let (r_dims, r) = self.constant(node, 2)?;
        let b = match node.input.get(3).filter(|n| !n.is_empty()) {
            Some(_) => self.constant(node, 3)?.1,
            None => vec![0.0; 2 * width],
        };
        if hidden == 0 || w_dims != [1, width, features] || r_dims != [1, width, hidden] || b.len() != 2 * width {
            return Err(unsupported_detail(node, "its weights do not have the shapes of its hidden size and input"));
        }
        let reorder = |values: &[f32]| reorder_gates(cell, values, false);
        let name = self.layer_name(keyword);
        self.tensors.insert(format!("{name}.weight_ih_l0"), (vec![width, features], reorder(&w)));
        self.tensors.insert(format!("{name}.weight_hh_l0"), (vec![width, hidden], reorder(&r)));
        self.tensors.insert(format!("{name}.bias_ih_l0"), (vec![width], reorder(&b[..width])));
        self.tensors.insert(format!("{name}.bias_hh_l0"), (vec![width], reorder(&b[width..])));
        let stage = format!("{keyword}({hidden}");
        for (k, every_step) in [(0, true), (1, false)] {
            if let Some(out) = node.output.get(k).filter(|o| !o.is_empty()) {
                let value = Value::Recurrent { flow: flow.clone(), stage: stage.clone(), steps, hidden, every_step };
                self.values.insert(out.clone(), value);
            }
        }
        Ok(())
    }

    /// The last states of stacked recurrent layers, concatenated along the
    /// layer axis.
    pub(super) fn layer_states(&mut self, node: &NodeProto) -> Result<(), String> {
        if int_attr(node, "axis", 0) != 0 {
            return Err(unsupported_detail(node, "it joins recurrent states along another axis than the layers'"));
        }
        let states = (0..node.input.len()).map(|k| self.value(node, k)).collect::<Result<_, _>>()?;
        self.set(node, Value::LayerStates(states));
        Ok(())
    }

    /// The `Gather` of one recurrent state: a layer's last state (`Y_h[-1]`,
    /// or `h_n[k]` of a stack), or the last of its states for every step,
    /// batch-major (`Y[:, -1]`, as PyTorch writes `output[:, -1]`).
    pub(super) fn last_step(&mut self, node: &NodeProto) -> Result<(), String> {
        let (index_dims, index) = self.constant(node, 1)?;
        let axis = int_attr(node, "axis", 0);
        // The position a scalar index picks among `len`, counted from the end when negative.
        let picked = |len: usize| -> Option<usize> {
            let i = *index.first()?;
            let from_start = if i < 0.0 { i + len as f32 } else { i };
            (index_dims.is_empty() && from_start >= 0.0 && from_start < len as f32 && from_start.fract() == 0.0)
                .then_some(from_start as usize)
        };
        let state = match self.value(node, 0)? {
            Value::LayerStates(states) if axis == 0 => picked(states.len()).map(|k| states[k].clone()),
            state @ Value::Recurrent { every_step: false, .. } if axis == 0 => picked(1).map(|_| state),
            Value::Computed { mut flow, shape } if axis == 1 && shape.len() == 2 => {
                let stage = flow.stages.pop().and_then(|s| s.strip_suffix(", sequences = true)").map(String::from));
                return match stage {
                    Some(stage) if picked(shape[0]) == Some(shape[0] - 1) => {
                        flow.stages.push(format!("{stage})"));
                        self.output(node, flow, vec![shape[1]])
                    }
                    Some(_) => Err(unsupported_detail(node, "nnc maps a `Gather` of the last step only")),
                    None => {
                        Err(unsupported_detail(node, "nnc maps a `Gather` of one step only after a recurrent layer"))
                    }
                };
            }
            _ => None,
        };
        match state {
            Some(Value::Recurrent { mut flow, stage, hidden, .. }) => {
                flow.stages.push(format!("{stage})"));
                self.output(node, flow, vec![hidden])
            }
            _ => Err(unsupported_detail(
                node,
                "nnc maps `Gather` of a computed value only as a recurrent layer's last step or state",
            )),
        }
    }

    /// The `Squeeze` that picks a recurrent op's output.
    pub(super) fn squeeze(&mut self, node: &NodeProto) -> Result<(), String> {
        let Value::Recurrent { mut flow, stage, steps, hidden, every_step } = self.value(node, 0)? else {
            return Err(unsupported_detail(node, "nnc maps `Squeeze` only after a recurrent layer"));
        };
        let axes: Vec<i64> = match ints_attr(node, "axes") {
            Some(axes) => axes,
            None => self.constant(node, 1)?.1.iter().map(|&a| a as i64).collect(),
        };
        if every_step && axes == [1] {
            self.drop_direction(node, flow, stage, steps, hidden)
        } else if !every_step && axes == [0] {
            flow.stages.push(format!("{stage})"));
            self.output(node, flow, vec![hidden])
        } else {
            Err(unsupported_detail(node, "it does not drop the direction axis of a recurrent output"))
        }
    }

    /// A recurrent layer's states for every step, its direction axis
    /// dropped (by a `Squeeze`, or a `Reshape` to `[T, N, H]`): the layer
    /// with `sequences = true`, time-major.
    pub(super) fn drop_direction(
        &mut self,
        node: &NodeProto,
        mut flow: Flow,
        stage: String,
        steps: usize,
        hidden: usize,
    ) -> Result<(), String> {
        if node.op_type() == "Reshape" {
            let target = match self.value(node, 1)? {
                Value::Dims { dims, scalar: false } => dims,
                _ => self.constant(node, 1)?.1.iter().map(|&v| Dim::Fixed(v as i64)).collect(),
            };
            let (t, h) = (Dim::Fixed(steps as i64), Dim::Fixed(hidden as i64));
            let batch = |d: &Dim| matches!(d, Dim::Batch | Dim::Fixed(0 | -1));
            if !matches!(&target[..], [a, b, c] if *a == t && batch(b) && *c == h) {
                return Err(unsupported_detail(node, "it reshapes a recurrent layer's states to other than [T, N, H]"));
            }
        }
        flow.stages.push(format!("{stage}, sequences = true)"));
        self.set(node, Value::TimeMajor { flow, shape: vec![steps, hidden] });
        Ok(())
    }
}
