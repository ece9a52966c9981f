//! What a training step reports of each parameter's health, besides the
//! loss: three sums of squares the trainer reads back and turns into the
//! gradient's L2 norm and the update's size relative to the weights.
//! They are extra outputs of the step; the update itself is unchanged.

use crate::diag::Span;
use crate::ir::{Op, TrainGraph, Unary};

/// Scalars observed per parameter, in this order: ‖g‖², ‖Δw‖², ‖w′‖²
/// (g the gradient the optimizer applies, after clipping and L2; Δw what
/// the update subtracts; w′ the updated weights, read where they are
/// written, so the update still happens in place).
pub const HEALTH_VALUES: usize = 3;

/// Adds the health scalars of every parameter to `step.observed`, then,
/// for each activation layer (`activations`: their spans, in the model's
/// order), its output summed per unit (feature or channel) and its sum of
/// squares. A step without gradients (contrastive divergence, annealing)
/// observes nothing; activation layers are observed only when each maps
/// to one node of the graph, in order.
pub fn observe_health(step: &mut TrainGraph, activations: &[Span]) {
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
    // The forward part's activation nodes, in order, that a layer wrote
    // (an LSTM's gates carry the LSTM's span, not an activation's).
    let end = step.graph.loss.map_or(step.graph.nodes.len(), |l| l.0);
    let outputs: Vec<usize> = (0..end)
        .filter(|&i| {
            let node = &step.graph.nodes[i];
            matches!(node.op, Op::Unary(u) if is_activation(u))
                && activations.contains(&node.span)
                && matches!(node.shape.len(), 2 | 4)
        })
        .collect();
    let in_order = outputs.len() == activations.len()
        && outputs.iter().zip(activations).all(|(&i, span)| step.graph.nodes[i].span == *span);
    if !in_order {
        return;
    }
    for i in outputs {
        let (span, shape) = (step.graph.nodes[i].span, step.graph.nodes[i].shape.clone());
        let value = crate::ir::ValueId(i);
        let sums = step.graph.push(Op::SumChannels, vec![value], vec![shape[1]], span);
        let squares = step.graph.push(Op::SumSquares, vec![value], vec![], span);
        step.observed.extend([sums, squares]);
        // Saturated sigmoid and tanh outputs, where f′ < 0.01, and clipped
        // outputs, where f′ = 0: counted as the sum of squares of 0/1 indicators.
        let saturated = match step.graph.nodes[i].op {
            Op::Unary(Unary::Sigmoid) => {
                let centred = step.graph.push(Op::Unary(Unary::AddConst(-0.5)), vec![value], shape.clone(), span);
                Some(step.graph.push(Op::Unary(Unary::Beyond(SIGMOID_SATURATED)), vec![centred], shape, span))
            }
            Op::Unary(Unary::Tanh) => {
                Some(step.graph.push(Op::Unary(Unary::Beyond(TANH_SATURATED)), vec![value], shape, span))
            }
            // 1 − f′(y): a clamp's output is inside its bounds exactly where
            // its input is, so its derivative can be taken at the output.
            Op::Unary(clamp @ Unary::Clamp(..)) => {
                let ones = step.graph.push(Op::Const(1.0), vec![], shape.clone(), span);
                let passed = step.graph.push(Op::UnaryGrad(clamp), vec![value, value, ones], shape.clone(), span);
                Some(step.graph.push(Op::Sub, vec![ones, passed], shape, span))
            }
            _ => None,
        };
        if let Some(saturated) = saturated {
            step.observed.push(step.graph.push(Op::SumSquares, vec![saturated], vec![], span));
        }
    }
}

/// |σ(x) − ½| beyond this has σ′ = σ(1 − σ) < 0.01: √0.96 / 2.
const SIGMOID_SATURATED: f64 = 0.489_897_948_556_635_6;
/// |tanh x| beyond this has tanh′ = 1 − tanh² < 0.01: √0.99.
const TANH_SATURATED: f64 = 0.994_987_437_106_62;

/// The unary ops an activation layer lowers to.
fn is_activation(u: Unary) -> bool {
    matches!(
        u,
        Unary::Relu
            | Unary::LeakyRelu(_)
            | Unary::Elu(_)
            | Unary::Gelu
            | Unary::GeluTanh
            | Unary::Silu
            | Unary::Softplus
            | Unary::Sigmoid
            | Unary::Tanh
            | Unary::Clamp(..)
            | Unary::Identity
    )
}
