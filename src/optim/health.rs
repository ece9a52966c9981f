//! What a training step reports of each parameter's health, besides the
//! loss: three sums of squares the trainer reads back and turns into the
//! gradient's L2 norm and the update's size relative to the weights.
//! They are extra outputs of the step; the update itself is unchanged.

use crate::ir::lower::param_node;
use crate::ir::{Op, TrainGraph};

/// Scalars observed per parameter, in this order: ‖g‖², ‖w′ − w‖², ‖w‖²
/// (g the gradient the optimizer applies, after clipping and L2).
pub const HEALTH_VALUES: usize = 3;

/// Adds the health scalars of every parameter to `step.observed`. A step
/// without gradients (contrastive divergence, annealing) observes nothing.
pub fn observe_health(step: &mut TrainGraph) {
    if step.grads.len() != step.graph.params.len() {
        return;
    }
    let g = &mut step.graph;
    for p in 0..g.params.len() {
        let (grad, new) = (step.grads[p], step.new_params[p]);
        let span = g.node(grad).span;
        let shape = g.params[p].shape.clone();
        let old = param_node(g, p, span);
        let delta = g.push(Op::Sub, vec![new, old], shape, span);
        for value in [grad, delta, old] {
            let squares = g.push(Op::SumSquares, vec![value], vec![], span);
            step.observed.push(squares);
        }
    }
}
