//! The multi-node patterns `nnc export` writes, read back into one layer
//! each: element-wise formulas (gelu, silu), maxout's reshape and
//! reduction, an embedding's cast and lookup, and a recurrent layer between
//! its transposes with its concatenated biases.

use super::formula::{Binary, Expr};
use super::proto::{NodeProto, tensor_proto::DataType};
use super::shapes::{Dim, is_zero_state};
use super::{Flow, Importer, RecurrentOutput, Value, attribute, int_attr, ints_attr, unsupported_detail};
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
        // The direction axis moved next to the states': [T, D, N, H] → [T, N, D, H], or [D, N, H] → [N, D, H].
        match (perm.as_deref(), self.value(node, 0)?) {
            (Some([0, 2, 1, 3]), Value::Recurrent(out)) if out.every_step => {
                self.set(node, Value::DirectionsInner(out));
                return Ok(());
            }
            (Some([1, 0, 2]), Value::Recurrent(out)) if !out.every_step => {
                self.set(node, Value::DirectionsInner(out));
                return Ok(());
            }
            (Some([0, 2, 1, 3]), _) => {
                return Err(unsupported_detail(node, "nnc maps this `Transpose` only of a recurrent layer's states"));
            }
            _ => {}
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
        let direction = attribute(node, "direction").and_then(|a| a.s.as_deref()).unwrap_or(b"forward");
        let directions = match direction {
            b"forward" => 1,
            b"bidirectional" => 2,
            _ => {
                return Err(unsupported_detail(
                    node,
                    "nnc reads a sequence forwards, or both ways; not backwards alone",
                ));
            }
        };
        // The activations ONNX would take anyway may be spelt out (PyTorch's
        // RNN does), once per direction.
        let defaults: &[&[u8]] = match cell {
            Cell::Rnn => &[b"Tanh"],
            Cell::Lstm => &[b"Sigmoid", b"Tanh", b"Tanh"],
            Cell::Gru => &[b"Sigmoid", b"Tanh"],
        };
        let default_activations = |a: &super::proto::AttributeProto| {
            a.strings.len() == defaults.len() * directions
                && a.strings
                    .chunks(defaults.len())
                    .all(|chunk| chunk.iter().map(Vec::as_slice).eq(defaults.iter().copied()))
        };
        // Initial states of zeros (what PyTorch writes) are nnc's own start.
        let zero_start = |k: usize| {
            node.input.get(k).is_none_or(String::is_empty)
                || self.value(node, k).is_ok_and(|v| is_zero_state(&v, directions, hidden))
        };
        let plain = attribute(node, "activations").is_none_or(default_activations)
            && attribute(node, "clip").is_none()
            && int_attr(node, "input_forget", 0) == 0
            && int_attr(node, "layout", 0) == 0
            && node.input.get(4).is_none_or(String::is_empty)
            && node.input.len() <= 8
            && (5..8).all(zero_start);
        if !plain {
            return Err(unsupported_detail(
                node,
                "nnc maps recurrent layers with default activations, no clip, lengths or peepholes, \
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
        let fits = w_dims == [directions, width, features]
            && r_dims == [directions, width, hidden]
            && b.len() == directions * 2 * width;
        if hidden == 0 || !fits {
            return Err(unsupported_detail(node, "its weights do not have the shapes of its hidden size and input"));
        }
        let reorder = |values: &[f32]| reorder_gates(cell, values, false);
        let name = self.layer_name(keyword);
        for d in 0..directions {
            let suffix = if d == 0 { "" } else { "_reverse" };
            let w = &w[d * width * features..(d + 1) * width * features];
            let r = &r[d * width * hidden..(d + 1) * width * hidden];
            let b = &b[d * 2 * width..(d + 1) * 2 * width];
            let parts = [("weight_ih", vec![width, features], w), ("weight_hh", vec![width, hidden], r)]
                .into_iter()
                .chain([("bias_ih", vec![width], &b[..width]), ("bias_hh", vec![width], &b[width..])]);
            for (what, dims, values) in parts {
                self.tensors.insert(format!("{name}.{what}_l0{suffix}"), (dims, reorder(values)));
            }
        }
        let both = if directions == 2 { ", bidirectional = true" } else { "" };
        let stage = format!("{keyword}({hidden}{both}");
        for (k, every_step) in [(0, true), (1, false)] {
            if let Some(out) = node.output.get(k).filter(|o| !o.is_empty()) {
                let output = RecurrentOutput {
                    layer: name.clone(),
                    flow: flow.clone(),
                    stage: stage.clone(),
                    steps,
                    hidden,
                    directions,
                    every_step,
                };
                self.values.insert(out.clone(), Value::Recurrent(output));
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
        // A bidirectional layer's states are stacked direction by direction.
        let mut states = Vec::new();
        for k in 0..node.input.len() {
            match self.value(node, k)? {
                Value::Recurrent(out) if out.directions == 2 => {
                    let direction = |d: usize| Value::OneDirection { out: out.clone(), direction: d };
                    states.extend([direction(0), direction(1)]);
                }
                state => states.push(state),
            }
        }
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
            Value::Recurrent(out) if axis == 0 && !out.every_step => match out.directions {
                1 => picked(1).map(|_| Value::Recurrent(out)),
                _ => picked(out.directions).map(|direction| Value::OneDirection { out, direction }),
            },
            Value::Computed { mut flow, shape } if axis == 1 && shape.len() == 2 => {
                let stage = flow.stages.pop().and_then(|s| s.strip_suffix(", sequences = true)").map(String::from));
                return match stage {
                    // A backward direction's last state is after the first step, not at the last.
                    Some(stage) if stage.contains("bidirectional") => Err(unsupported_detail(
                        node,
                        "it takes a bidirectional layer's last step, where its backward direction has read one \
                         step only; nnc's last state of that direction is after the first step",
                    )),
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
            Some(Value::Recurrent(out)) => self.last_states(node, out),
            Some(one @ Value::OneDirection { .. }) => {
                self.set(node, one);
                Ok(())
            }
            _ => Err(unsupported_detail(
                node,
                "nnc maps `Gather` of a computed value only as a recurrent layer's last step or state",
            )),
        }
    }

    /// The `Concat` of a bidirectional layer's two last states, the forward
    /// one first (PyTorch's `torch.cat([h[-2], h[-1]], 1)`): the layer's output.
    pub(super) fn both_directions(&mut self, node: &NodeProto) -> Result<(), String> {
        let parts: Vec<Value> = (0..node.input.len()).map(|k| self.value(node, k)).collect::<Result<_, _>>()?;
        match &parts[..] {
            [Value::OneDirection { out, direction: 0 }, Value::OneDirection { out: other, direction: 1 }]
                if out.layer == other.layer && matches!(int_attr(node, "axis", 0), 1 | -1) =>
            {
                self.last_states(node, out.clone())
            }
            _ => Err(unsupported_detail(
                node,
                "it joins a bidirectional layer's last states other than as nnc's layer does: \
                 the forward direction's, then the backward one's, side by side",
            )),
        }
    }

    /// The `Squeeze` that drops the direction axis of a one-way recurrent
    /// op's output.
    pub(super) fn squeeze(&mut self, node: &NodeProto) -> Result<(), String> {
        let Value::Recurrent(out) = self.value(node, 0)? else {
            return Err(unsupported_detail(node, "nnc maps `Squeeze` only after a recurrent layer"));
        };
        let axes: Vec<i64> = match ints_attr(node, "axes") {
            Some(axes) => axes,
            None => self.constant(node, 1)?.1.iter().map(|&a| a as i64).collect(),
        };
        match (out.every_step, &axes[..]) {
            _ if out.directions != 1 => Err(unsupported_detail(node, "it squeezes the two directions' axis")),
            (true, [1]) => self.every_step_states(node, out),
            (false, [0]) => self.last_states(node, out),
            _ => Err(unsupported_detail(node, "it does not drop the direction axis of a recurrent output")),
        }
    }

    /// A `Reshape` of a recurrent output whose direction axis is next to
    /// the states' (`DirectionsInner`) to `[T, N, D·H]` or `[N, D·H]`: the
    /// directions side by side, as nnc's layer puts them.
    pub(super) fn join_directions(&mut self, node: &NodeProto, out: RecurrentOutput) -> Result<(), String> {
        let target = self.reshape_target(node)?;
        let width = Dim::Fixed((out.directions * out.hidden) as i64);
        let (input, wanted) = if out.every_step {
            let steps = Dim::Fixed(out.steps as i64);
            let input = vec![steps, Dim::Batch, Dim::Fixed(out.directions as i64), Dim::Fixed(out.hidden as i64)];
            (input, vec![steps, Dim::Batch, width])
        } else {
            (
                vec![Dim::Batch, Dim::Fixed(out.directions as i64), Dim::Fixed(out.hidden as i64)],
                vec![Dim::Batch, width],
            )
        };
        if !reshapes_to(&target, &input, &wanted) {
            return Err(unsupported_detail(
                node,
                "it reshapes a recurrent layer's output to other than its directions side by side",
            ));
        }
        if out.every_step { self.every_step_states(node, out) } else { self.last_states(node, out) }
    }

    /// The states of every step: the layer with `sequences = true`, time-major.
    fn every_step_states(&mut self, node: &NodeProto, out: RecurrentOutput) -> Result<(), String> {
        let RecurrentOutput { mut flow, stage, steps, hidden, directions, .. } = out;
        flow.stages.push(format!("{stage}, sequences = true)"));
        self.set(node, Value::TimeMajor { flow, shape: vec![steps, directions * hidden] });
        Ok(())
    }

    /// The last states: the layer's output.
    fn last_states(&mut self, node: &NodeProto, out: RecurrentOutput) -> Result<(), String> {
        let RecurrentOutput { mut flow, stage, hidden, directions, .. } = out;
        flow.stages.push(format!("{stage})"));
        self.output(node, flow, vec![directions * hidden])
    }
}

/// Whether a `Reshape` of a value of shape `input` to `target` (where 0
/// copies the input's dimension and one −1 takes what is left) gives
/// `wanted`: the values keep their count, so every other dimension
/// matching fixes the −1.
fn reshapes_to(target: &[Dim], input: &[Dim], wanted: &[Dim]) -> bool {
    target.len() == wanted.len()
        && target.iter().filter(|&&d| d == Dim::Fixed(-1)).count() <= 1
        && target.iter().zip(wanted).enumerate().all(|(k, (t, w))| match t {
            Dim::Fixed(0) => input.get(k) == Some(w),
            Dim::Fixed(-1) => true,
            t => t == w,
        })
}
