//! Recurrent layers unrolled over their steps: each direction's states,
//! step by step, and the layer's output from them.

use super::add_param;
use crate::check::Cell;
use crate::diag::Span;
use crate::ir::{Graph, Init, Op, Shape, Unary, ValueId};

/// A recurrent layer over x `[B, T, F]`, unrolled over the T steps, in
/// PyTorch's formulation, where x_t·W_ihᵀ + b_ih is a step's input part and
/// h·W_hhᵀ + b_hh its recurrent part (zero state at the first step):
/// - RNN: h′ = tanh(input + recurrent);
/// - LSTM (gates i, f, g, o of z = input + recurrent): c′ = σ(f)·c + σ(i)·tanh(g),
///   h′ = σ(o)·tanh(c′);
/// - GRU (blocks r, z, n of each part): r = σ(input_r + recurrent_r),
///   z = σ(input_z + recurrent_z), n = tanh(input_n + r·recurrent_n),
///   h′ = n + z·(h − n).
///
/// The input parts of all steps are one matrix product; each step adds one
/// product with the state. Autodiff through the unrolled graph is
/// backpropagation through time. Parameters use PyTorch's names and layouts
/// (`weight_ih_l0` `[G·H, F]`, …; `weight_ih_l0_reverse`, … when reading
/// `backwards`, from the last step to the first). Returns the state after
/// each step `[B, H]`, in the sequence's order.
pub(super) fn recurrent(
    graph: &mut Graph,
    x: ValueId,
    (name, backwards): (&str, bool),
    cell: Cell,
    hidden: usize,
    span: Span,
) -> Vec<ValueId> {
    let (batch, steps, features) = (graph.shape(x)[0], graph.shape(x)[1], graph.shape(x)[2]);
    let width = cell.gates() * hidden;
    let param = |graph: &mut Graph, what: &str, shape: Shape, init: Init, decay: bool| {
        let suffix = if backwards { "_reverse" } else { "" };
        let p = add_param(graph, format!("{name}.{what}_l0{suffix}"), shape.clone(), init, decay);
        graph.push(Op::Param(p), vec![], shape, span)
    };
    let init = Init::Xavier { fan_in: features + hidden, fan_out: hidden };
    let w_ih = param(graph, "weight_ih", vec![width, features], init, true);
    let w_hh = param(graph, "weight_hh", vec![width, hidden], init, true);
    let b_ih = param(graph, "bias_ih", vec![width], Init::Zeros, false);
    // An LSTM's forget gate starts open (bias 1), so early gradients reach far back.
    let forget_open = match cell {
        Cell::Lstm => Init::Range { start: hidden, end: 2 * hidden, value: 1.0 },
        Cell::Rnn | Cell::Gru => Init::Zeros,
    };
    let b_hh = param(graph, "bias_hh", vec![width], forget_open, false);

    // The input parts are computed time-major, `[T, B, G·H]`, in the order
    // the steps are read, so that a step's part is one block of rows: read
    // where it lies, its gradient written into its place, the recurrent
    // weight's stacked gradient operands already end to end (`plan::scratch`).
    let order: Vec<usize> = if backwards { (0..steps).rev().collect() } else { (0..steps).collect() };
    let time_major: Vec<ValueId> = order
        .iter()
        .map(|&t| {
            let step = graph.push(Op::Slice { axis: 1, start: t }, vec![x], vec![batch, 1, features], span);
            graph.push(Op::Reshape, vec![step], vec![1, batch, features], span)
        })
        .collect();
    let time_major = graph.concat(time_major, 0, span);
    let rows = graph.push(Op::Reshape, vec![time_major], vec![steps * batch, features], span);
    let projected = graph.push(Op::matmul(false, true), vec![rows, w_ih], vec![steps * batch, width], span);
    let projected = graph.push(Op::AddBias, vec![projected, b_ih], vec![steps * batch, width], span);
    let projected = graph.push(Op::Reshape, vec![projected], vec![steps, batch, width], span);
    let state = vec![batch, hidden];
    let block = |graph: &mut Graph, z: ValueId, k: usize| {
        graph.push(Op::Slice { axis: 1, start: k * hidden }, vec![z], state.clone(), span)
    };
    let (mut h, mut c): (Option<ValueId>, Option<ValueId>) = (None, None);
    let mut outputs = Vec::with_capacity(steps);
    for read in 0..steps {
        let step = graph.push(Op::Slice { axis: 0, start: read }, vec![projected], vec![1, batch, width], span);
        let input = graph.push(Op::Reshape, vec![step], vec![batch, width], span);
        // h·W_hhᵀ; none at the first step, whose state is zero.
        let product = h.map(|h| graph.push(Op::matmul(false, true), vec![h, w_hh], vec![batch, width], span));
        let next = match cell {
            Cell::Rnn | Cell::Lstm => {
                let mut z = input;
                if let Some(product) = product {
                    z = graph.push(Op::Add, vec![z, product], vec![batch, width], span);
                }
                z = graph.push(Op::AddBias, vec![z, b_hh], vec![batch, width], span);
                if cell == Cell::Rnn {
                    graph.push(Op::Unary(Unary::Tanh), vec![z], state.clone(), span)
                } else {
                    let gate = |graph: &mut Graph, k: usize, f: Unary| {
                        let part = block(graph, z, k);
                        graph.push(Op::Unary(f), vec![part], state.clone(), span)
                    };
                    let input = gate(graph, 0, Unary::Sigmoid);
                    let forget = gate(graph, 1, Unary::Sigmoid);
                    let candidate = gate(graph, 2, Unary::Tanh);
                    let output = gate(graph, 3, Unary::Sigmoid);
                    let mut cell = graph.push(Op::Mul, vec![input, candidate], state.clone(), span);
                    if let Some(c) = c {
                        let kept = graph.push(Op::Mul, vec![forget, c], state.clone(), span);
                        cell = graph.push(Op::Add, vec![kept, cell], state.clone(), span);
                    }
                    c = Some(cell);
                    let squashed = graph.push(Op::Unary(Unary::Tanh), vec![cell], state.clone(), span);
                    graph.push(Op::Mul, vec![output, squashed], state.clone(), span)
                }
            }
            Cell::Gru => {
                // The reset gate scales the recurrent part with its bias, so
                // that part is kept apart from the input's.
                let product = product.unwrap_or_else(|| graph.push(Op::Const(0.0), vec![], vec![batch, width], span));
                let recurrent = graph.push(Op::AddBias, vec![product, b_hh], vec![batch, width], span);
                let gate = |graph: &mut Graph, k: usize, f: Unary, reset: Option<ValueId>| {
                    let (from_input, mut from_state) = (block(graph, input, k), block(graph, recurrent, k));
                    if let Some(r) = reset {
                        from_state = graph.push(Op::Mul, vec![r, from_state], state.clone(), span);
                    }
                    let sum = graph.push(Op::Add, vec![from_input, from_state], state.clone(), span);
                    graph.push(Op::Unary(f), vec![sum], state.clone(), span)
                };
                let reset = gate(graph, 0, Unary::Sigmoid, None);
                let update = gate(graph, 1, Unary::Sigmoid, None);
                let candidate = gate(graph, 2, Unary::Tanh, Some(reset));
                // h′ = n + z·(h − n), which is n − z·n from a zero state.
                let kept = match h {
                    Some(h) => {
                        let change = graph.push(Op::Sub, vec![h, candidate], state.clone(), span);
                        graph.push(Op::Mul, vec![update, change], state.clone(), span)
                    }
                    None => {
                        let dropped = graph.push(Op::Mul, vec![update, candidate], state.clone(), span);
                        graph.push(Op::Unary(Unary::Neg), vec![dropped], state.clone(), span)
                    }
                };
                graph.push(Op::Add, vec![candidate, kept], state.clone(), span)
            }
        };
        h = Some(next);
        outputs.push(next);
    }
    // In the sequence's order, whichever way it was read.
    if backwards {
        outputs.reverse();
    }
    outputs
}

/// A recurrent layer's output from each direction's states (`runs`, in the
/// sequence's order): each direction's last state `[B, H]` (the forward
/// one's after the last step, the backward one's after the first), or with
/// `sequences` its states stacked `[B, T, H]`, the directions' side by side.
pub(super) fn directions_joined(graph: &mut Graph, runs: Vec<Vec<ValueId>>, sequences: bool, span: Span) -> ValueId {
    let mut parts = Vec::with_capacity(runs.len());
    for (direction, states) in runs.into_iter().enumerate() {
        parts.push(match sequences {
            true => {
                let (batch, hidden) = (graph.shape(states[0])[0], graph.shape(states[0])[1]);
                let steps: Vec<ValueId> = states
                    .into_iter()
                    .map(|h| graph.push(Op::Reshape, vec![h], vec![batch, 1, hidden], span))
                    .collect();
                graph.concat(steps, 1, span)
            }
            false if direction == 0 => states[states.len() - 1],
            false => states[0],
        });
    }
    graph.concat(parts, if sequences { 2 } else { 1 }, span)
}
