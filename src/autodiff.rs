//! Reverse-mode automatic differentiation, IR → IR.
//!
//! From the scalar loss, walks the forward graph backwards and appends, for
//! every node that depends on a parameter, the ops computing its adjoint
//! ("gradient"). One rule per op, its maths above it. Contributions to a
//! value used several times are summed. The result is an ordinary graph, so
//! the interpreter (and any backend) runs the backward pass like the forward.

use crate::ir::{Graph, Op, Unary, ValueId};
use crate::shape::pooling;

/// Appends the backward pass to `forward`. Returns the extended graph and,
/// for each parameter, the value holding ∂loss/∂parameter.
pub fn differentiate(forward: &Graph) -> Result<(Graph, Vec<ValueId>), String> {
    let loss = forward.loss.ok_or("the graph has no loss to differentiate")?;
    let mut g = forward.clone();
    let span = forward.node(loss).span;
    let seed = g.push(Op::Const(1.0), vec![], vec![], span);
    let Backward { params, .. } = backward(&mut g, loss, seed, false)?;
    let grads = params
        .into_iter()
        .enumerate()
        .map(|(p, grad)| match grad {
            Some(v) => v,
            // A parameter the loss does not depend on has a zero gradient.
            None => g.push(Op::Const(0.0), vec![], forward.params[p].shape.clone(), span),
        })
        .collect();
    Ok((g, grads))
}

/// Appends to `g` the gradient of Σ seed ⊙ `output` with respect to the
/// model's input (`seed`, a node of `g` shaped like `output`, weighs each
/// element: a one-hot row picks one class's score). Returns the node of
/// that gradient, shaped like the input batch.
pub fn input_gradient(g: &mut Graph, output: ValueId, seed: ValueId) -> Result<ValueId, String> {
    let input = g.nodes.iter().position(|n| matches!(n.op, Op::Input(_))).ok_or("the graph reads no input")?;
    let shape = g.nodes[input].shape.clone();
    let span = g.node(output).span;
    let Backward { adjoints, .. } = backward(g, output, seed, true)?;
    // An output that does not depend on the input has a zero gradient.
    Ok(adjoints[input].unwrap_or_else(|| g.push(Op::Const(0.0), vec![], shape, span)))
}

/// What a backward pass found: each parameter's gradient, and the adjoint
/// of every forward node that needed one.
struct Backward {
    params: Vec<Option<ValueId>>,
    adjoints: Vec<Option<ValueId>>,
}

/// Walks `g` backwards from `root`, whose adjoint is `seed`, appending the
/// adjoint of every node that depends on a parameter (or, with `inputs`,
/// on the input too).
fn backward(g: &mut Graph, root: ValueId, seed: ValueId, inputs: bool) -> Result<Backward, String> {
    let forward = g.clone();
    let n = root.0 + 1;
    let mut needs = vec![false; n];
    for (i, node) in forward.nodes[..n].iter().enumerate() {
        let leaf = matches!(node.op, Op::Param(_)) || (inputs && matches!(node.op, Op::Input(_)));
        needs[i] = leaf || node.inputs.iter().any(|v| needs[v.0]);
    }
    let mut adjoint: Vec<Option<ValueId>> = vec![None; n];
    adjoint[root.0] = Some(seed);
    let mut param_grads: Vec<Option<ValueId>> = vec![None; forward.params.len()];
    // The gradients of each value's slices, placed once all are known, and
    // its gradient's terms aᵀ·b, multiplied once all are known.
    let mut slices: Vec<Vec<SliceGradient>> = vec![Vec::new(); n];
    let mut products: Vec<Vec<(ValueId, ValueId)>> = vec![Vec::new(); n];

    for i in (0..n).rev() {
        let node = &forward.nodes[i];
        let mut gathered = Vec::new();
        if !slices[i].is_empty() {
            gathered.push(slices_placed(g, std::mem::take(&mut slices[i]), &node.shape, node.span));
        }
        if !products[i].is_empty() {
            gathered.push(products_stacked(g, std::mem::take(&mut products[i]), &node.shape, node.span));
        }
        for term in gathered {
            adjoint[i] = Some(match adjoint[i] {
                Some(prev) => g.push(Op::Add, vec![prev, term], node.shape.clone(), node.span),
                None => term,
            });
        }
        let Some(dy) = adjoint[i] else { continue };
        let node = forward.nodes[i].clone();
        let y = ValueId(i);
        let ins = &node.inputs;
        let span = node.span;
        // (input index, its gradient contribution)
        let mut contrib: Vec<(usize, ValueId)> = Vec::new();
        let shape_of = |k: usize| forward.nodes[ins[k].0].shape.clone();
        let wants = |k: usize| needs[ins[k].0];
        match &node.op {
            // Leaves: a parameter collects its gradient; the rest have none.
            Op::Param(p) => {
                param_grads[*p] = Some(match param_grads[*p] {
                    Some(prev) => g.push(Op::Add, vec![prev, dy], node.shape.clone(), span),
                    None => dy,
                });
            }
            Op::Input(_) | Op::Target(_) | Op::State(_) | Op::Hyper(_) | Op::Const(_) => {}
            // y = f(x) ⇒ ∂x = g·f′(x). relu′(x) = relu′(relu(x)), σ′ = y(1 − y)
            // and tanh′ = 1 − y², so their rules read the output in place of
            // the input: the input then need not be kept, a ReLU's producer
            // fuses into it, and a slice σ or tanh reads (an LSTM's gate) is
            // read where it lies.
            Op::Unary(u) => {
                let x = if matches!(u, Unary::Relu | Unary::Sigmoid | Unary::Tanh) { y } else { ins[0] };
                let dx = g.push(Op::UnaryGrad(*u), vec![x, y, dy], node.shape.clone(), span);
                contrib.push((0, dx));
            }
            // y = a + b ⇒ ∂a = g, ∂b = g
            Op::Add => contrib.extend([(0, dy), (1, dy)]),
            // y = a − b ⇒ ∂a = g, ∂b = −g
            Op::Sub => {
                contrib.push((0, dy));
                if wants(1) {
                    contrib.push((1, g.push(Op::Unary(Unary::Neg), vec![dy], node.shape.clone(), span)));
                }
            }
            // y = a·b ⇒ ∂a = g·b, ∂b = g·a
            Op::Mul => {
                if wants(0) {
                    contrib.push((0, g.push(Op::Mul, vec![dy, ins[1]], node.shape.clone(), span)));
                }
                if wants(1) {
                    contrib.push((1, g.push(Op::Mul, vec![dy, ins[0]], node.shape.clone(), span)));
                }
            }
            // y = a/b ⇒ ∂a = g/b, ∂b = −g·y/b
            Op::Div => {
                let ga = g.push(Op::Div, vec![dy, ins[1]], node.shape.clone(), span);
                contrib.push((0, ga));
                if wants(1) {
                    let t = g.push(Op::Mul, vec![ga, y], node.shape.clone(), span);
                    contrib.push((1, g.push(Op::Unary(Unary::Neg), vec![t], node.shape.clone(), span)));
                }
            }
            // y = x·s (s scalar, a step constant) ⇒ ∂x = g·s
            Op::MulScalar => {
                if wants(1) {
                    return Err(format!("%{i}: gradient through the scalar of mul_scalar is not supported"));
                }
                contrib.push((0, g.push(Op::MulScalar, vec![dy, ins[1]], node.shape.clone(), span)));
            }
            // C = op(A)·op(B) ⇒ ∂op(A) = G·op(B)ᵀ, ∂op(B) = op(A)ᵀ·G, transposed back where A or B was.
            // A term aᵀ·b waits for its value's others (`products_stacked`).
            Op::MatMul { ta, tb, relu: false } if ins.len() == 2 => {
                let (ta, tb) = (*ta, *tb);
                if wants(0) {
                    let da = if ta {
                        g.push(Op::matmul(tb, true), vec![ins[1], dy], shape_of(0), span)
                    } else {
                        g.push(Op::matmul(false, !tb), vec![dy, ins[1]], shape_of(0), span)
                    };
                    contrib.push((0, da));
                }
                if wants(1) {
                    match (ta, tb) {
                        (false, true) => products[ins[1].0].push((dy, ins[0])),
                        (false, false) => products[ins[1].0].push((ins[0], dy)),
                        (true, _) => {
                            let db = if tb {
                                g.push(Op::matmul(true, true), vec![dy, ins[0]], shape_of(1), span)
                            } else {
                                g.push(Op::matmul(false, false), vec![ins[0], dy], shape_of(1), span)
                            };
                            contrib.push((1, db));
                        }
                    }
                }
            }
            Op::MatMul { .. } => {
                return Err(format!("%{i}: a product with a fused bias or ReLU is compiled, not differentiated"));
            }
            // y = x + b (b on every row) ⇒ ∂x = g, ∂b = Σ_rows g
            Op::AddBias => {
                contrib.push((0, dy));
                if wants(1) {
                    contrib.push((1, g.push(Op::SumRows, vec![dy], shape_of(1), span)));
                }
            }
            // y = reshape(x) ⇒ ∂x = reshape(g)
            Op::Reshape => contrib.push((0, g.push(Op::Reshape, vec![dy], shape_of(0), span))),
            // y = softmax(x) ⇒ ∂x = y·(g − Σ g·y)
            Op::Softmax => contrib.push((0, g.push(Op::SoftmaxGrad, vec![y, dy], node.shape.clone(), span))),
            // L = mean −log softmax(z)[c] ⇒ ∂z = g·(softmax(z) − onehot(c))/B
            Op::SoftmaxCrossEntropy => {
                let mut inputs = vec![ins[0], ins[1], dy];
                inputs.extend(ins.get(2));
                let dz = g.push(Op::SoftmaxCrossEntropyGrad, inputs, shape_of(0), span);
                contrib.push((0, dz));
            }
            // L = mean (p − t)² ⇒ ∂p = g·2(p − t)/n, ∂t = −∂p
            // L = mean BCE(p, t) ⇒ ∂p = g·(p − t)/(p(1 − p))/n, ∂t = g·log((1 − p)/p)/n (targets never need it)
            Op::Mse | Op::Bce => {
                let grad_op = if node.op == Op::Mse { Op::MseGrad } else { Op::BceGrad };
                let dp = g.push(grad_op, vec![ins[0], ins[1], dy], shape_of(0), span);
                contrib.push((0, dp));
                if wants(1) {
                    if node.op == Op::Bce {
                        return Err(format!("%{i}: gradient of binary cross-entropy for its target is not supported"));
                    }
                    contrib.push((1, g.push(Op::Unary(Unary::Neg), vec![dp], shape_of(1), span)));
                }
            }
            // y = x ⋆ w + b ⇒ ∂x = g ⋆ᵀ w (transposed convolution), ∂w = Σ g·x
            // over windows, ∂b = Σ g per channel
            Op::Conv2d { relu: true, .. } => {
                return Err(format!("%{i}: a convolution with a fused ReLU is compiled, not differentiated"));
            }
            &Op::Conv2d { rows, cols, groups, relu: false } => {
                if wants(0) {
                    let dx = g.push(
                        Op::Conv2dGradInput { rows, cols, groups, relu: false },
                        vec![ins[1], dy],
                        shape_of(0),
                        span,
                    );
                    contrib.push((0, dx));
                }
                if wants(1) {
                    let dw = g.push(Op::Conv2dGradWeight { rows, cols, groups }, vec![ins[0], dy], shape_of(1), span);
                    contrib.push((1, dw));
                }
                if ins.len() == 3 && wants(2) {
                    contrib.push((2, g.push(Op::SumChannels, vec![dy], shape_of(2), span)));
                }
            }
            // y = x + b[channel] ⇒ ∂x = g, ∂b = Σ g per channel
            Op::AddChannelBias => {
                contrib.push((0, dy));
                if wants(1) {
                    contrib.push((1, channel_sums(g, dy, shape_of(1), span)));
                }
            }
            // y = x·s[channel] ⇒ ∂x = g·s[channel], ∂s = Σ g·x per channel
            Op::MulChannel => {
                if wants(0) {
                    contrib.push((0, g.push(Op::MulChannel, vec![dy, ins[1]], node.shape.clone(), span)));
                }
                if wants(1) {
                    contrib.push((1, g.push(Op::SumProductChannels, vec![dy, ins[0]], shape_of(1), span)));
                }
            }
            // y[c] = Σ a·b over channel c ⇒ ∂a = g[c]·b, ∂b = g[c]·a
            Op::SumProductChannels => {
                for (k, other) in [(0, ins[1]), (1, ins[0])] {
                    if wants(k) {
                        contrib.push((k, g.push(Op::MulChannel, vec![other, dy], shape_of(k), span)));
                    }
                }
            }
            // y[c] = Σ x[·, c, ·] ⇒ ∂x = g[c] at every position of channel c
            Op::SumChannels => {
                let zeros = g.push(Op::Const(0.0), vec![], shape_of(0), span);
                contrib.push((0, g.push(Op::AddChannelBias, vec![zeros, dy], shape_of(0), span)));
            }
            // y = max/mean over windows ⇒ ∂x = g at each window's argmax / g/K² everywhere in it
            Op::Pool { max, rows, cols } => {
                let op = Op::PoolGrad { max: *max, rows: *rows, cols: *cols, relu: false };
                contrib.push((0, g.push(op, vec![ins[0], dy], shape_of(0), span)));
            }
            // y = x repeated over f × f blocks ⇒ ∂x = Σ g over each block = f² · mean
            Op::Upsample(f) => {
                let block = pooling(*f, *f, 0);
                let mean = g.push(Op::Pool { max: false, rows: block, cols: block }, vec![dy], shape_of(0), span);
                let area = (f * f) as f64;
                contrib.push((0, g.push(Op::Unary(Unary::Scale(area)), vec![mean], shape_of(0), span)));
            }
            // y = x·mask/(1 − p) ⇒ ∂x = g·mask/(1 − p): the same op on g
            Op::Dropout { p, salt, first } => {
                let op = Op::Dropout { p: *p, salt: *salt, first: *first };
                contrib.push((0, g.push(op, vec![dy, ins[1]], node.shape.clone(), span)));
            }
            // y = max of pieces ⇒ ∂x = g at the winning piece, 0 elsewhere
            Op::MaxPieces(p) => contrib.push((0, g.push(Op::MaxPiecesGrad(*p), vec![ins[0], dy], shape_of(0), span))),
            // y = x[…, start..start + len, …] ⇒ ∂x = g placed back, zeros
            // elsewhere: with the gradients of x's other slices (`slices_placed`)
            Op::Slice { axis, start } => {
                if wants(0) {
                    slices[ins[0].0].push(SliceGradient { axis: *axis, start: *start, grad: dy });
                }
            }
            // y = parts side by side ⇒ ∂part = its slice of g
            Op::Concat { axis } => {
                let mut start = 0;
                for k in 0..ins.len() {
                    let part = shape_of(k);
                    if wants(k) {
                        let op = Op::Slice { axis: *axis, start };
                        contrib.push((k, g.push(op, vec![dy], part.clone(), span)));
                    }
                    start += part[*axis];
                }
            }
            // y = x placed into zeros ⇒ ∂x = the same slice of g
            Op::SliceGrad { axis, start } => {
                let op = Op::Slice { axis: *axis, start: *start };
                contrib.push((0, g.push(op, vec![dy], shape_of(0), span)));
            }
            // y[k] = table[ids[k]] ⇒ ∂table[r] = Σ over k with ids[k] = r of g[k]
            Op::Gather => {
                if wants(1) {
                    contrib.push((1, g.push(Op::GatherGrad, vec![ins[0], dy], shape_of(1), span)));
                }
            }
            // y = Σ over processes of x ⇒ ∂x = Σ over processes of g (every
            // process's loss depends on y)
            Op::AllReduce => contrib.push((0, g.push(Op::AllReduce, vec![dy], shape_of(0), span))),
            // s = Σ x² ⇒ ∂x = 2x·g
            Op::SumSquares => {
                let two_x = g.push(Op::Unary(Unary::Scale(2.0)), vec![ins[0]], shape_of(0), span);
                contrib.push((0, g.push(Op::MulScalar, vec![two_x, dy], shape_of(0), span)));
            }
            Op::UnaryGrad(_)
            | Op::SumRows
            | Op::SoftmaxGrad
            | Op::SoftmaxCrossEntropyGrad
            | Op::ClassWeights(_)
            | Op::MseGrad
            | Op::BceGrad
            | Op::ClipScale(_)
            | Op::Conv2dGradInput { .. }
            | Op::Conv2dGradWeight { .. }
            | Op::PoolGrad { .. }
            | Op::MaxPiecesGrad(_)
            | Op::GatherGrad
            | Op::Bernoulli { .. } => return Err(format!("%{i}: `{}` has no gradient rule", node.op.name())),
        }
        for (k, d) in contrib {
            let target = ins[k].0;
            if !needs[target] {
                continue;
            }
            adjoint[target] = Some(match adjoint[target] {
                Some(prev) => g.push(Op::Add, vec![prev, d], forward.nodes[target].shape.clone(), span),
                None => d,
            });
        }
    }
    Ok(Backward { params: param_grads, adjoints: adjoint })
}

/// The gradient of one slice of a value: `grad`, from `start` on `axis`.
#[derive(Clone, Copy)]
struct SliceGradient {
    axis: usize,
    start: usize,
    grad: ValueId,
}

/// The gradient of a value (shaped `shape`) read only through the slices
/// whose gradients are `pieces`. Slices that lie end to end along one
/// axis (a sequence's steps, an LSTM's gates) are joined by one `Concat`,
/// placed into zeros where they leave part of the axis uncovered; slices
/// overlapping others are placed apart; all are summed. Placing each
/// slice into zeros and summing those would read and write the whole
/// value once per slice.
fn slices_placed(g: &mut Graph, mut pieces: Vec<SliceGradient>, shape: &[usize], span: crate::diag::Span) -> ValueId {
    pieces.sort_by_key(|piece| (piece.axis, piece.start));
    let len = |g: &Graph, piece: &SliceGradient| g.shape(piece.grad)[piece.axis];
    let mut runs: Vec<Vec<SliceGradient>> = Vec::new();
    for piece in pieces {
        let ends_at = |run: &Vec<SliceGradient>| {
            let last = run[run.len() - 1];
            last.axis == piece.axis && last.start + len(g, &last) == piece.start
        };
        match runs.iter_mut().find(|run| ends_at(run)) {
            Some(run) => run.push(piece),
            None => runs.push(vec![piece]),
        }
    }
    let mut total: Option<ValueId> = None;
    for run in runs {
        let (axis, start) = (run[0].axis, run[0].start);
        let mut grad = g.concat(run.iter().map(|piece| piece.grad).collect(), axis, span);
        if g.shape(grad) != shape {
            grad = g.push(Op::SliceGrad { axis, start }, vec![grad], shape.to_vec(), span);
        }
        total = Some(match total {
            Some(sum) => g.push(Op::Add, vec![sum, grad], shape.to_vec(), span),
            None => grad,
        });
    }
    total.expect("a value with slices")
}

/// The sum of the products aᵀ·b of `terms` (each a `[K, M]`, b `[K, N]`,
/// the sum `shape` `[M, N]`): one product of the a's and the b's stacked
/// along K. A weight a recurrent layer uses at every time step gets its
/// gradient Σ_t ∂z_tᵀ·h_t as one product over all steps' rows rather than
/// one small product a step and a sum of them.
fn products_stacked(
    g: &mut Graph,
    terms: Vec<(ValueId, ValueId)>,
    shape: &[usize],
    span: crate::diag::Span,
) -> ValueId {
    // The terms came last step first; stacked first step first, a forward
    // layer's ∂z_t lie in the order of its input parts' gradient, whose
    // block they already are (`plan::scratch`).
    let (a, b): (Vec<ValueId>, Vec<ValueId>) = terms.into_iter().rev().unzip();
    let (a, b) = (g.concat(a, 0, span), g.concat(b, 0, span));
    g.push(Op::matmul(true, false), vec![a, b], shape.to_vec(), span)
}

/// Σ per channel of `dy` (shaped `shape`), without a pass over it when its
/// terms allow. When dy is a sum of terms a·s[channel], each term's sum is
/// s·Σa, where Σa is zero for a tensor centred per channel (batch
/// normalisation's x − mean, `centred_per_channel`) and already computed
/// for the others. Batch normalisation's mean then needs no pass over its
/// gradient, and that gradient's terms and the mean's share of ∂x are one
/// element-wise pass. (Σa is zero over all rows: when the batch is split,
/// the sums of the rows here are summed over every part before they are
/// used, as the mean's are.)
fn channel_sums(g: &mut Graph, dy: ValueId, shape: Vec<usize>, span: crate::diag::Span) -> ValueId {
    let mut terms = vec![dy];
    let mut sums = Vec::new();
    while let Some(term) = terms.pop() {
        let node = &g.nodes[term.0];
        match (&node.op, node.inputs.as_slice()) {
            (Op::Add, &[a, b]) => terms.extend([a, b]),
            (Op::MulChannel, &[a, _]) if centred_per_channel(g, a) => {}
            (Op::MulChannel, &[a, s]) => {
                let summed = g.nodes.iter().position(|n| n.op == Op::SumChannels && n.inputs == [a]);
                match summed {
                    Some(sum) => sums.push((ValueId(sum), s)),
                    None => return g.push(Op::SumChannels, vec![dy], shape, span),
                }
            }
            _ => return g.push(Op::SumChannels, vec![dy], shape, span),
        }
    }
    let scaled: Vec<ValueId> =
        sums.into_iter().map(|(sum, s)| g.push(Op::Mul, vec![sum, s], shape.clone(), span)).collect();
    let total = scaled.into_iter().reduce(|a, b| g.push(Op::Add, vec![a, b], shape.clone(), span));
    total.unwrap_or_else(|| g.push(Op::Const(0.0), vec![], shape, span))
}

/// Whether `v` is x − mean per channel of x (as batch normalisation
/// lowers it: x plus the negated, scaled channel sums of x, summed over
/// every part of a split batch), whose channel sums are zero.
fn centred_per_channel(g: &Graph, v: ValueId) -> bool {
    let node = |v: ValueId| (&g.nodes[v.0].op, g.nodes[v.0].inputs.as_slice());
    let (Op::AddChannelBias, &[x, negated]) = node(v) else { return false };
    let (Op::Unary(Unary::Neg), &[mean]) = node(negated) else { return false };
    let (&Op::Unary(Unary::Scale(scale)), &[mut sum]) = node(mean) else { return false };
    if let (Op::AllReduce, &[part]) = node(sum) {
        sum = part;
    }
    let shape = &g.nodes[x.0].shape;
    let count = (crate::shape::numel(shape) / shape[0] / shape[1] * g.shard.total) as f64;
    node(sum) == (&Op::SumChannels, &[x][..]) && scale == 1.0 / count
}

#[cfg(test)]
mod tests {
    use crate::ir::{Op, Unary};
    use crate::plan::{Location, plan_train};

    /// A ReLU's backward rule reads the ReLU's output, not its input, so
    /// the training step keeps no pre-activation: the bias addition before
    /// the ReLU fuses into it.
    #[test]
    fn a_relu_gradient_reads_the_relu_output_and_its_input_fuses_away() {
        let source = "model m {\n  input x: [20]\n  target y: class(3)\n  \
                      x |> dense(16) |> relu |> dense(3) => logits\n  \
                      loss = cross_entropy(logits, y)\n  train { optimizer = sgd(lr = 0.1) batch = 8 }\n}\n";
        let checked = crate::pipeline::check_source("m.nn", source);
        assert!(!checked.has_errors(), "{:?}", checked.diags);
        let model = &checked.models[0];
        let step = crate::pipeline::step_graph(model, &model.train, 8).expect("step builds");
        let g = &step.graph;
        let relu = g.nodes.iter().position(|n| n.op == Op::Unary(Unary::Relu)).expect("relu");
        let grad = g.nodes.iter().find(|n| n.op == Op::UnaryGrad(Unary::Relu)).expect("relu gradient");
        assert_eq!(grad.inputs[0].0, relu, "the rule reads the ReLU's output");
        let plan = plan_train(&step);
        let input = g.nodes[relu].inputs[0].0;
        assert_eq!(plan.locations[input], Location::Fused, "{}", plan.to_text(g));
    }

    /// The training step of an LSTM of `hidden` units over `steps` steps of
    /// two features, at `batch` rows.
    fn lstm_step(batch: usize, steps: usize, hidden: usize) -> crate::ir::TrainGraph {
        let source = format!(
            "model m {{\n  input x: seq[{steps}, 2]\n  target y: class(3)\n  \
             x |> lstm({hidden}) |> dense(3) => logits\n  \
             loss = cross_entropy(logits, y)\n  train {{ optimizer = sgd(lr = 0.1) batch = {batch} }}\n}}\n"
        );
        let checked = crate::pipeline::check_source("m.nn", &source);
        assert!(!checked.has_errors(), "{:?}", checked.diags);
        let model = &checked.models[0];
        crate::pipeline::step_graph(model, &model.train, batch).expect("step builds")
    }

    /// An LSTM's backward pass joins the gradients of its steps' slices of
    /// the input product, and of each step's gates, with one `Concat`
    /// each, rather than placing every slice into zeros of the whole and
    /// summing those (which read and wrote the whole product once per
    /// step). At the first step the forget gate reads no state, so its
    /// slice has no gradient: the input gate's is placed apart from the
    /// other two's.
    #[test]
    fn an_lstm_joins_its_slices_gradients_in_one_pass_each() {
        let (batch, steps, hidden) = (4, 5, 3);
        let step = lstm_step(batch, steps, hidden);
        let g = &step.graph;
        let width = 4 * hidden;
        let of_shape = |shape: Vec<usize>| g.nodes.iter().filter(move |n| n.shape == shape);
        let projected = vec![steps, batch, width];
        let joins: Vec<_> = of_shape(projected.clone()).filter(|n| n.op == Op::Concat { axis: 0 }).collect();
        assert_eq!(joins.len(), 1, "{}", g.to_text());
        assert_eq!(joins[0].inputs.len(), steps);
        let whole_passes = of_shape(projected).filter(|n| matches!(n.op, Op::Add | Op::SliceGrad { .. }));
        assert_eq!(whole_passes.count(), 0, "{}", g.to_text());
        let gates = of_shape(vec![batch, width]).filter(|n| matches!(n.op, Op::Concat { .. }));
        let parts: Vec<usize> = gates.map(|n| n.inputs.len()).collect();
        assert_eq!(parts.iter().filter(|&&p| p == 4).count(), steps - 1, "{parts:?}");
        let first_step = of_shape(vec![batch, 2 * hidden]).filter(|n| n.op == Op::Concat { axis: 1 });
        assert_eq!(first_step.count(), 1, "{}", g.to_text());
    }

    /// The recurrent weight an LSTM uses at every step after the first gets
    /// its gradient Σ_t ∂z_tᵀ·h_(t−1) as one product of the steps' rows
    /// stacked, not one product a step and a sum of them.
    #[test]
    fn a_weight_used_at_every_step_gets_its_gradient_in_one_product() {
        let (batch, steps, hidden) = (4, 5, 3);
        let step = lstm_step(batch, steps, hidden);
        let g = &step.graph;
        let p = g.params.iter().position(|p| p.name == "lstm1.weight_hh_l0").expect("the recurrent weight");
        let grad = g.node(step.grads[p]);
        assert_eq!(grad.op, Op::matmul(true, false), "{}", g.to_text());
        for (operand, width) in grad.inputs.iter().zip([4 * hidden, hidden]) {
            let stacked = g.node(*operand);
            assert_eq!(stacked.op, Op::Concat { axis: 0 });
            assert_eq!((stacked.inputs.len(), &stacked.shape), (steps - 1, &vec![(steps - 1) * batch, width]));
        }
        let sums = g.nodes.iter().filter(|n| n.op == Op::Add && n.shape == [4 * hidden, hidden]);
        assert_eq!(sums.count(), 0, "{}", g.to_text());
    }

    /// Batch normalisation's backward pass sums its incoming gradient per
    /// channel once (for β, and from it the mean's share), not its ∂x̂ as
    /// well, so ∂x̂ fuses into ∂x; whole or split in two (where the sums
    /// are summed over both parts). `tests/gradients.rs` checks the
    /// gradient against finite differences.
    #[test]
    fn batch_normalisation_sums_its_incoming_gradient_once() {
        let source = "model m {\n  input x: [2, 6, 6]\n  target y: class(3)\n  \
                      x |> conv2d(4, kernel = 3, bias = false) |> batchnorm |> relu |> flatten |> dense(3) => logits\n  \
                      loss = cross_entropy(logits, y)\n  train { optimizer = sgd(lr = 0.1) batch = 8 }\n}\n";
        let checked = crate::pipeline::check_source("m.nn", source);
        assert!(!checked.has_errors(), "{:?}", checked.diags);
        let model = &checked.models[0];
        for shard in [crate::ir::Shard::whole(8), crate::ir::Shard::part(8, 1, 2)] {
            let step = crate::pipeline::shard_step_graph(model, &model.train, shard).expect("step builds");
            let g = &step.graph;
            let image_sums: Vec<_> =
                g.nodes.iter().filter(|n| n.op == Op::SumChannels && g.nodes[n.inputs[0].0].shape.len() == 4).collect();
            // Σx in the forward pass, Σ of the incoming gradient in the backward.
            assert_eq!(image_sums.len(), 2, "{}", g.to_text());
            let plan = plan_train(&step);
            let terms = g.nodes.iter().filter(|n| n.op == Op::MulChannel && n.shape.len() == 4);
            assert!(terms.clone().count() >= 2);
            for term in terms.map(|n| g.nodes.iter().position(|m| std::ptr::eq(m, n)).expect("node")) {
                assert_eq!(plan.locations[term], Location::Fused, "{}", plan.to_text(g));
            }
        }
    }
}
