//! The optimiser stage: a forward graph → a training step (`TrainGraph`)
//! whose outputs are the new parameters and state.
//!
//! - gradient optimizers (gd, sgd, momentum, Nesterov, Adam): autodiff, then
//!   clipping, L2 and the update rule (`update`);
//! - contrastive divergence: the CD-k graph of each RBM (`cd`);
//! - simulated annealing: no graph work at all; the trainer proposes and
//!   judges moves itself, so its step only lays out the parameter store.
//!
//! The stage knows nothing of epochs or batches: that is the trainer's.

mod cd;
mod health;
mod update;

pub use cd::cd_step;
pub use health::{HEALTH_VALUES, observe_health};
pub use update::gradient_step;

use crate::autodiff::differentiate;
use crate::check::{Optimizer, TrainConfig};
use crate::diag::Span;
use crate::ir::lower::param_node;
use crate::ir::{Graph, Op, TrainGraph};

/// The training step `config.optimizer` asks for, built on `forward` (a
/// graph lowered in training mode). Errors name what cannot be trained.
pub fn step_graph(forward: &Graph, config: &TrainConfig) -> Result<TrainGraph, String> {
    match config.optimizer {
        Optimizer::ContrastiveDivergence { k } => {
            let every_rbm: Vec<usize> = (0..forward.rbms.len()).collect();
            cd_step(forward, &every_rbm, k, config.seed)
        }
        Optimizer::Anneal { .. } => Ok(unchanged_params(forward)),
        Optimizer::Gd
        | Optimizer::Sgd
        | Optimizer::Momentum { .. }
        | Optimizer::Nesterov { .. }
        | Optimizer::Adam { .. } => {
            let (mut graph, mut grads) = differentiate(forward)?;
            if forward.shard.is_split() {
                // Each process's gradients are its rows' part of the whole
                // batch's (its loss is scaled by its share): their sum is it.
                for grad in &mut grads {
                    let (shape, span) = (graph.node(*grad).shape.clone(), graph.node(*grad).span);
                    *grad = graph.push(Op::AllReduce, vec![*grad], shape, span);
                }
            }
            gradient_step(forward, graph, grads, config)
        }
    }
}

/// A step whose new parameters are the old ones: simulated annealing moves
/// the weights outside the graph, and only needs the store laid out.
fn unchanged_params(forward: &Graph) -> TrainGraph {
    let mut graph = forward.clone();
    let new_params = (0..graph.params.len()).map(|p| param_node(&mut graph, p, Span::default())).collect();
    TrainGraph { graph, grads: vec![], new_params, new_states: vec![], updates: vec![], observed: vec![] }
}
