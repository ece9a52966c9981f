//! A stable text form of the IR for `nnc check --emit ir|train-ir`.

use std::fmt::Write;

use super::{Graph, TrainGraph};
use crate::shape::shape_text;

impl Graph {
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        for (i, p) in self.params.iter().enumerate() {
            let _ = writeln!(out, "param{i} {} {}", p.name, shape_text(&p.shape));
        }
        for (i, s) in self.states.iter().enumerate() {
            let _ = writeln!(out, "state{i} {} {}", s.name, shape_text(&s.shape));
        }
        for (i, node) in self.nodes.iter().enumerate() {
            let args: Vec<String> = node.inputs.iter().map(|v| v.to_string()).collect();
            let _ = writeln!(out, "%{i} = {}({}) : {}", node.op.name(), args.join(", "), shape_text(&node.shape));
        }
        let _ = writeln!(out, "prediction {}", self.prediction);
        if let Some(loss) = self.loss {
            let _ = writeln!(out, "loss {loss}");
        }
        out
    }
}

impl TrainGraph {
    pub fn to_text(&self) -> String {
        let mut out = self.graph.to_text();
        for (i, v) in self.grads.iter().enumerate() {
            let _ = writeln!(out, "grad param{i} = {v}");
        }
        for (i, v) in self.new_params.iter().enumerate() {
            let _ = writeln!(out, "param{i} <- {v}");
        }
        for (i, v) in self.new_states.iter().enumerate() {
            let _ = writeln!(out, "state{i} <- {v}");
        }
        out
    }
}
