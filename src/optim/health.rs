//! What a training step reports of each parameter's health, besides the
//! loss: three sums of squares the trainer reads back and turns into the
//! gradient's L2 norm and the update's size relative to the weights.
//! They are extra outputs of the step; the update itself is unchanged.

use crate::ir::{Op, TrainGraph};

/// Scalars observed per parameter, in this order: ‖g‖², ‖Δw‖², ‖w′‖²
/// (g the gradient the optimizer applies, after clipping and L2; Δw what
/// the update subtracts; w′ the updated weights, read where they are
/// written, so the update still happens in place).
pub const HEALTH_VALUES: usize = 3;

/// Adds the health scalars of every parameter to `step.observed`. A step
/// without gradients (contrastive divergence, annealing) observes nothing.
pub fn observe_health(step: &mut TrainGraph) {
    let params = step.graph.params.len();
    if step.grads.len() != params || step.updates.len() != params {
        return;
    }
    for p in 0..params {
        for value in [step.grads[p], step.updates[p], step.new_params[p]] {
            let span = step.graph.node(value).span;
            let squares = step.graph.push(Op::SumSquares, vec![value], vec![], span);
            step.observed.push(squares);
        }
    }
}
