//! How much memory a training step takes, estimated from the checked
//! model alone, so that `check` can warn before anything is allocated.

use crate::check::model::{InputSpec, Node};
use crate::check::settings::Optimizer;

/// About how much memory a training step at `batch` rows takes: each
/// parameter with its gradient and optimizer state, and each layer's output
/// kept for the backward pass with its gradient. Saturates rather than
/// wrapping, so an absurd model reads as absurdly large.
pub fn training_memory(nodes: &[Node], inputs: &[InputSpec], optimizer: &Optimizer, batch: usize) -> TrainingMemory {
    let copies = 2 + match optimizer {
        Optimizer::Adam { .. } => 2,
        Optimizer::Momentum { .. } | Optimizer::Nesterov { .. } => 1,
        _ => 0,
    };
    let per_node: Vec<u64> = nodes
        .iter()
        .map(|n| {
            let params = (n.params as u64).saturating_mul(4 * copies);
            let outputs = n.shape.iter().fold(1u64, |a, &d| a.saturating_mul(d as u64));
            params.saturating_add(outputs.saturating_mul(8).saturating_mul(batch as u64))
        })
        .collect();
    let inputs: u64 = inputs
        .iter()
        .map(|i| i.shape.iter().fold(4u64, |a, &d| a.saturating_mul(d as u64)).saturating_mul(batch as u64))
        .fold(0, u64::saturating_add);
    let dominant = (0..per_node.len()).max_by_key(|&i| per_node[i]);
    TrainingMemory {
        bytes: per_node.iter().fold(inputs, |a, &b| a.saturating_add(b)),
        dominant: dominant.map(|i| (i, per_node[i])),
    }
}

/// The estimate of `CheckedModel::training_memory`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TrainingMemory {
    pub bytes: u64,
    /// The layer that takes the most (node index) and its share in bytes.
    pub dominant: Option<(usize, u64)>,
}
