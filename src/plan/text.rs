//! A plan as text (`nnc check --emit plan`, the kernels' labels in
//! `nnc bench --kernels`): a line per kernel, with where its values live.

use std::fmt::Write;

use super::{Kernel, Plan, TeamSplit, collect_fused, product_dims};
use crate::ir::{Graph, Op};

impl Plan {
    pub fn to_text(&self, g: &Graph) -> String {
        let mut out = format!("store {} floats, scratch {} floats\n", self.store.len, self.scratch_len);
        for kernel in &self.kernels {
            let _ = writeln!(out, "{}", self.kernel_text(g, kernel));
        }
        out
    }

    /// One kernel as `to_text` lists it.
    pub fn kernel_text(&self, g: &Graph, kernel: &Kernel) -> String {
        match kernel {
            Kernel::Elementwise { roots, sums } => {
                let mut members = Vec::new();
                for root in roots {
                    collect_fused(g, &self.locations, *root, &mut members);
                }
                members.sort();
                members.dedup();
                let names: Vec<String> = members.iter().map(|v| format!("{v}={}", g.nodes[v.0].op.name())).collect();
                let outputs: Vec<String> = roots.iter().map(|v| format!("{v} -> {:?}", self.locations[v.0])).collect();
                let sums: String = sums
                    .iter()
                    .map(|v| format!(", sum_squares({}) {v} -> {:?}", g.nodes[v.0].inputs[0], self.locations[v.0]))
                    .collect();
                format!("elementwise {}{sums}  [{}]", outputs.join(", "), names.join(", "))
            }
            Kernel::MatMul { node, team } => {
                let (m, k, n) = product_dims(g, *node);
                let bias = if g.nodes[node.0].inputs.len() == 3 { " + bias" } else { "" };
                let relu = if matches!(g.nodes[node.0].op, Op::MatMul { relu: true, .. }) { ", relu" } else { "" };
                let (name, out) = match team {
                    None => ("matmul", *node),
                    Some(TeamSplit::Columns) => ("team matmul by columns", *node),
                    Some(TeamSplit::Sum { sum, .. }) => ("team matmul summed", *sum),
                };
                let product = format!("{name} {out} -> {:?}{bias}{relu}  [{m}×{k} by {k}×{n}]", self.locations[out.0]);
                match team {
                    Some(TeamSplit::Sum { update, .. }) if !update.is_empty() => {
                        let update = Kernel::Elementwise { roots: update.clone(), sums: Vec::new() };
                        format!("{product}, updating each block: {}", self.kernel_text(g, &update))
                    }
                    _ => product,
                }
            }
            Kernel::Routine { node } => {
                format!("{} {node} -> {:?}", g.nodes[node.0].op.name(), self.locations[node.0])
            }
            Kernel::ChannelSums { sum, product } => format!(
                "sum_channels {sum} -> {:?}, sum_product_channels {product} -> {:?}",
                self.locations[sum.0], self.locations[product.0]
            ),
            Kernel::Copy { from, to, len } => format!("copy {from} -> store[{to}..{}]", to + len),
            Kernel::AwaitSums => "await all_reduce".into(),
        }
    }
}
