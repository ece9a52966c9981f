//! Recurrent layers written as ONNX's recurrent ops.

use super::{Builder, int, ints, text};
use crate::check::Cell;
use crate::onnx::proto::NodeProto;
use crate::onnx::{recurrent_op, reorder_gates};

impl Builder<'_> {
    /// A recurrent layer as ONNX's RNN, LSTM or GRU on the time-major
    /// sequence, its output brought back to nnc's: the direction axis
    /// squeezed (one way) or the directions side by side (both ways),
    /// batch first.
    pub(super) fn recurrent(
        &mut self,
        x: String,
        name: &str,
        cell: Cell,
        hidden: usize,
        (sequences, bidirectional): (bool, bool),
    ) -> Result<String, String> {
        let w = |suffix: &str| format!("{name}.{suffix}");
        let directions: &[&str] = if bidirectional { &["", "_reverse"] } else { &[""] };
        let mut gates = |what: &str, base: &str| {
            let names: Vec<String> = directions.iter().map(|d| w(&format!("{what}_l0{d}"))).collect();
            self.gates(&names, cell, &w(base))
        };
        let (weight_ih, weight_hh) = (gates("weight_ih", "W")?, gates("weight_hh", "R")?);
        // B is [D, 2·G·H]: the input biases, then the recurrent ones.
        let (b_ih, b_hh) = (gates("bias_ih", "Wb")?, gates("bias_hh", "Rb")?);
        let bias = self.node("Concat", vec![b_ih, b_hh], &w("B"), vec![int("axis", 1)]);
        let op = recurrent_op(cell);
        let outputs = [self.fresh(&w("Y")), self.fresh(&w("Y_h"))];
        let mut node_outputs = outputs.to_vec();
        let mut attributes = vec![int("hidden_size", hidden as i64)];
        if bidirectional {
            attributes.push(text("direction", "bidirectional"));
        }
        match cell {
            Cell::Lstm => node_outputs.push(self.fresh(&w("Y_c"))),
            // PyTorch's GRU resets the recurrent product, bias included.
            Cell::Gru => attributes.push(int("linear_before_reset", 1)),
            Cell::Rnn => {}
        }
        // Time-major, as onnxruntime runs them: [N, T, F] → [T, N, F].
        let time_major = self.node("Transpose", vec![x], name, vec![ints("perm", &[1, 0, 2])]);
        let proto_name = self.fresh(op);
        self.nodes.push(NodeProto {
            name: Some(proto_name),
            op_type: Some(op.into()),
            input: vec![time_major, weight_ih, weight_hh, bias],
            output: node_outputs,
            attribute: attributes,
            domain: Some(String::new()),
            ..Default::default()
        });
        // Y is [T, D, N, H]; Y_h [D, N, H]. One direction's axis is
        // squeezed; two directions' states are put side by side.
        let [y, y_h] = outputs;
        let batch_major =
            |exporter: &mut Self, v: String| exporter.node("Transpose", vec![v], name, vec![ints("perm", &[1, 0, 2])]);
        Ok(match (sequences, bidirectional) {
            (true, false) => {
                let axes = self.int64s("axes", &[1]);
                let squeezed = self.node("Squeeze", vec![y, axes], name, vec![]);
                batch_major(self, squeezed)
            }
            (false, false) => {
                let axes = self.int64s("axes", &[0]);
                self.node("Squeeze", vec![y_h, axes], name, vec![])
            }
            (true, true) => {
                let steps_first = self.node("Transpose", vec![y], name, vec![ints("perm", &[0, 2, 1, 3])]);
                let shape = self.int64s("shape", &[0, 0, -1]);
                let joined = self.node("Reshape", vec![steps_first, shape], name, vec![]);
                batch_major(self, joined)
            }
            (false, true) => {
                let rows_first = batch_major(self, y_h);
                let shape = self.int64s("shape", &[0, -1]);
                self.node("Reshape", vec![rows_first, shape], name, vec![])
            }
        })
    }

    /// A recurrent weight in ONNX's layout: `[D, rows, cols]`, one block
    /// per direction (`names`), with the gate blocks of PyTorch's order put
    /// in ONNX's.
    fn gates(&mut self, names: &[String], cell: Cell, base: &str) -> Result<String, String> {
        let mut reordered = Vec::new();
        let mut shape = Vec::new();
        for name in names {
            let (s, values) = self.tensors.get(name).ok_or_else(|| format!("the weights have no tensor `{name}`"))?;
            reordered.extend(reorder_gates(cell, values, true));
            shape.clone_from(s);
        }
        let dims: Vec<usize> = std::iter::once(names.len()).chain(shape).collect();
        let out = self.fresh(base);
        Ok(self.initializer(&out, &dims, &reordered))
    }
}
