//! Lowering: a `CheckedModel` and a batch size → a forward `Graph` of
//! primitive ops. Layers are sugar: dense is matmul + add_bias, activations
//! are unary ops, the losses are single fused ops with their own gradients.

use std::collections::HashMap;

use super::loss::attach_loss;
use super::{Graph, Hyper, Init, Op, ParamInfo, RbmInfo, Shape, Shard, StateInfo, Taps, Unary, ValueId, numel};
use crate::check::{Activation, CheckedModel, Layer, Node, TargetKind, ValueRef, WeightInit, Weights};
use crate::diag::{Diag, Span};

mod recurrent;

use recurrent::{directions_joined, recurrent};

/// Lowers the model for batches of `batch` samples, for training (dropout
/// active) or evaluation (dropout is the identity). Layers without a
/// training implementation yet are reported, never mis-compiled.
pub fn lower(model: &CheckedModel, batch: usize, training: bool) -> Result<Graph, Diag> {
    lower_shard(model, Shard::whole(batch), training)
}

/// `lower` for the rows `shard` of a batch split over several processes:
/// dropout draws the masks of those rows, and batch normalisation sums its
/// statistics over every process (`Op::AllReduce`) and divides by the
/// whole batch, so the shards together compute the whole batch's step.
pub fn lower_shard(model: &CheckedModel, shard: Shard, training: bool) -> Result<Graph, Diag> {
    let batch = shard.rows;
    let mut graph = Graph::new(batch);
    graph.shard = shard;
    let mut values: HashMap<ValueRef, ValueId> = HashMap::new();
    let with_batch = |shape: &[usize]| -> Shape { std::iter::once(batch).chain(shape.iter().copied()).collect() };
    let parts = model.inputs.iter().map(|i| (with_batch(&i.shape), i.span)).collect();
    for (i, v) in row_leaves(&mut graph, Op::Input(0), parts).into_iter().enumerate() {
        values.insert(ValueRef::Input(i), v);
    }
    let row_targets = model.row_targets();
    let target_shape = |t: usize| match &model.targets[t].kind {
        TargetKind::Class(_) => vec![batch],
        TargetKind::Real(s) | TargetKind::Binary(s) => with_batch(s),
    };
    let parts = row_targets.iter().map(|&t| (target_shape(t), model.targets[t].span)).collect();
    for (&t, v) in row_targets.iter().zip(row_leaves(&mut graph, Op::Target(0), parts)) {
        values.insert(ValueRef::Target(t), v);
    }
    // The dense layer's weight parameter, for shared and tied layers.
    let mut weight_of: HashMap<usize, usize> = HashMap::new();
    for (index, node) in model.nodes.iter().enumerate() {
        let first_param = graph.params.len();
        let x = values[&node.inputs[0]];
        let out_shape = with_batch(&node.shape);
        let span = node.span;
        let v = match &node.layer {
            Layer::Dense { units, bias, weights } => {
                let own = Weights::Own == *weights;
                let (w, tb) = match weights {
                    Weights::Own => (None, true),
                    Weights::Shared(n) => (Some(weight_of[n]), true),
                    Weights::Tied(n) => (Some(weight_of[n]), false),
                };
                let (y, w) = dense(&mut graph, (model, index, node), x, (*units, *bias), (w, tb), out_shape);
                if own {
                    weight_of.insert(index, w);
                }
                y
            }
            Layer::Activation(Activation::Softmax) => graph.push(Op::Softmax, vec![x], out_shape, span),
            Layer::Activation(a) => graph.push(Op::Unary(unary_of(*a)), vec![x], out_shape, span),
            Layer::Flatten | Layer::Reshape { .. } => graph.push(Op::Reshape, vec![x], out_shape, span),
            Layer::Add => {
                let other = values[&node.inputs[1]];
                graph.push(Op::Add, vec![x, other], out_shape, span)
            }
            Layer::Concat => graph.concat(vec![x, values[&node.inputs[1]]], 1, span),
            Layer::Conv1d { .. } | Layer::Conv2d { .. } => convolution(&mut graph, (model, index, node), x, out_shape),
            Layer::MaxPool { kernel, stride, padding } | Layer::AvgPool { kernel, stride, padding } => {
                let max = matches!(node.layer, Layer::MaxPool { .. });
                let taps = crate::shape::pooling(*kernel, *stride, *padding);
                pool(&mut graph, (x, max, taps), out_shape, span)
            }
            Layer::GlobalAvgPool => {
                // Each image's channels as rows of H·W values, times a column of 1/(H·W).
                let s = graph.shape(x).clone();
                let (planes, area) = (s[0] * s[1], s[2] * s[3]);
                let rows = graph.push(Op::Reshape, vec![x], vec![planes, area], span);
                let weights = graph.push(Op::Const(1.0 / area as f64), vec![], vec![area, 1], span);
                let means = graph.push(Op::matmul(false, false), vec![rows, weights], vec![planes, 1], span);
                graph.push(Op::Reshape, vec![means], out_shape, span)
            }
            Layer::Upsample { factor } => graph.push(Op::Upsample(*factor), vec![x], out_shape, span),
            Layer::Maxout { units, pieces } => maxout(&mut graph, node, x, (*units, *pieces), out_shape),
            Layer::Dropout { p } if training => {
                let step = graph.push(Op::Hyper(Hyper::Step), vec![], vec![], span);
                // Each dropout layer draws its own masks from the model's seed.
                let salt = model.train.seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (index as u64 + 1);
                let first = shard.first * numel(&node.shape);
                graph.push(Op::Dropout { p: *p, salt, first }, vec![x, step], out_shape, span)
            }
            Layer::Dropout { .. } => x,
            Layer::BatchNorm { momentum, eps } => batchnorm(&mut graph, x, &node.name, *momentum, *eps, training, span),
            Layer::LayerNorm { eps } => layernorm(&mut graph, x, (&node.name, &node.shape), *eps, span),
            Layer::Recurrent { cell, hidden, sequences, bidirectional } => {
                let directions: &[bool] = if *bidirectional { &[false, true] } else { &[false] };
                let runs: Vec<Vec<ValueId>> = directions
                    .iter()
                    .map(|&backwards| recurrent(&mut graph, x, (&node.name, backwards), *cell, *hidden, span))
                    .collect();
                directions_joined(&mut graph, runs, *sequences, span)
            }
            Layer::Embedding { vocab, dim } => {
                let init = Init::Normal { std: 1.0 };
                let table = add_param(&mut graph, format!("{}.weight", node.name), vec![*vocab, *dim], init, true);
                let table = graph.push(Op::Param(table), vec![], vec![*vocab, *dim], span);
                graph.push(Op::Gather, vec![x, table], out_shape, span)
            }
            Layer::Rbm { hidden } => rbm(&mut graph, x, &node.name, *hidden, span),
        };
        values.insert(ValueRef::Node(index), v);
        graph.params[first_param..].iter_mut().for_each(|p| p.frozen = node.frozen);
    }
    attach_loss(&mut graph, model, &values, training)?;
    Ok(graph)
}

/// The leaves of a data row's several inputs (or targets), each `(shape,
/// span)` with the batch first: one leaf when there is one, else one leaf
/// `[B, Σ widths]` read once, each part its columns in its own shape, one
/// after the other.
fn row_leaves(graph: &mut Graph, leaf: Op, parts: Vec<(Shape, Span)>) -> Vec<ValueId> {
    if let [(shape, span)] = &parts[..] {
        return vec![graph.push(leaf, vec![], shape.clone(), *span)];
    }
    let Some(&(_, span)) = parts.first() else { return Vec::new() };
    let batch = graph.batch;
    let widths: Vec<usize> = parts.iter().map(|(shape, _)| numel(&shape[1..])).collect();
    let rows = graph.push(leaf, vec![], vec![batch, widths.iter().sum()], span);
    let mut start = 0;
    let mut leaves = Vec::with_capacity(parts.len());
    for ((shape, span), width) in parts.into_iter().zip(widths) {
        let columns = graph.push(Op::Slice { axis: 1, start }, vec![rows], vec![batch, width], span);
        leaves.push(graph.push(Op::Reshape, vec![columns], shape, span));
        start += width;
    }
    leaves
}

/// The node being lowered: its model, its index and itself.
type Lowered<'a> = (&'a CheckedModel, usize, &'a Node);

/// x·Wᵀ (+ b) for a dense layer; `weight` is the parameter of the layer it
/// shares or ties with (None: its own, initialised here) and `tb` whether
/// the product transposes it. Returns the output and the weight parameter.
fn dense(
    graph: &mut Graph,
    (model, index, node): Lowered,
    x: ValueId,
    (units, bias): (usize, bool),
    (weight, tb): (Option<usize>, bool),
    out_shape: Shape,
) -> (ValueId, usize) {
    let span = node.span;
    let fan_in = graph.shape(x)[1];
    let w = weight.unwrap_or_else(|| {
        let init = init_for(model, index, fan_in, units);
        add_param(graph, format!("{}.weight", node.name), vec![units, fan_in], init, true)
    });
    let w_shape = graph.params[w].shape.clone();
    let wv = graph.push(Op::Param(w), vec![], w_shape, span);
    // The bias's node comes before the product, which may take it in
    // (`fuse_activations`).
    let bv = bias.then(|| {
        let b = add_param(graph, format!("{}.bias", node.name), vec![units], Init::Zeros, false);
        graph.push(Op::Param(b), vec![], vec![units], span)
    });
    let y = graph.push(Op::matmul(false, tb), vec![x, wv], out_shape.clone(), span);
    match bv {
        Some(bv) => (graph.push(Op::AddBias, vec![y, bv], out_shape, span), w),
        None => (y, w),
    }
}

/// A convolution with its filter (and bias) parameters. A `conv1d` over
/// `[B, C, L]` is a `conv2d` over `[B, C, 1, L]` with a one-row kernel; its
/// weight keeps PyTorch's `[F, C, K]`, viewed as `[F, C, 1, K]`.
fn convolution(graph: &mut Graph, (model, index, node): Lowered, x: ValueId, out_shape: Shape) -> ValueId {
    let (filters, rows, cols, bias, groups) = match node.layer {
        Layer::Conv1d { filters, taps, bias, groups } => (filters, ONE_ROW, taps, bias, groups),
        Layer::Conv2d { filters, rows, cols, bias, groups } => (filters, rows, cols, bias, groups),
        _ => return x,
    };
    let span = node.span;
    let image = graph.shape(x).clone();
    // Each filter reads its group's channels only.
    let channels = image[1] / groups;
    let area = rows.kernel * cols.kernel;
    let init = init_for(model, index, channels * area, filters * area);
    let shape = vec![filters, channels, rows.kernel, cols.kernel];
    let stored = match node.layer {
        Layer::Conv1d { .. } => vec![filters, channels, cols.kernel],
        _ => shape.clone(),
    };
    let w = add_param(graph, format!("{}.weight", node.name), stored.clone(), init, true);
    let mut wv = graph.push(Op::Param(w), vec![], stored.clone(), span);
    let mut x = x;
    let mut conv_shape = out_shape.clone();
    if stored != shape {
        wv = graph.push(Op::Reshape, vec![wv], shape, span);
        x = graph.push(Op::Reshape, vec![x], vec![image[0], image[1], 1, image[2]], span);
        conv_shape = vec![out_shape[0], out_shape[1], 1, out_shape[2]];
    }
    let b = bias.then(|| {
        let b = add_param(graph, format!("{}.bias", node.name), vec![filters], Init::Zeros, false);
        graph.push(Op::Param(b), vec![], vec![filters], span)
    });
    let mut inputs = vec![x, wv];
    inputs.extend(b);
    let y = graph.push(Op::Conv2d { rows, cols, groups, relu: false }, inputs, conv_shape.clone(), span);
    if conv_shape == out_shape { y } else { graph.push(Op::Reshape, vec![y], out_shape, span) }
}

/// The taps along the height of a sequence seen as an image of one row.
const ONE_ROW: Taps = Taps { kernel: 1, stride: 1, padding: 0, dilation: 1 };

/// Pooling of images `[B, C, H, W]` by square windows, or of sequences
/// `[B, C, L]` as images of one row.
fn pool(graph: &mut Graph, (x, max, taps): (ValueId, bool, Taps), out_shape: Shape, span: Span) -> ValueId {
    let input = graph.shape(x).clone();
    let [batch, channels, length] = input[..] else {
        return graph.push(Op::Pool { max, rows: taps, cols: taps }, vec![x], out_shape, span);
    };
    let rows = graph.push(Op::Reshape, vec![x], vec![batch, channels, 1, length], span);
    let pooled_shape = vec![batch, channels, 1, out_shape[2]];
    let pooled = graph.push(Op::Pool { max, rows: ONE_ROW, cols: taps }, vec![rows], pooled_shape, span);
    graph.push(Op::Reshape, vec![pooled], out_shape, span)
}

/// Maxout: `units·pieces` affine outputs, then the largest of each unit's pieces.
fn maxout(graph: &mut Graph, node: &Node, x: ValueId, (units, pieces): (usize, usize), out_shape: Shape) -> ValueId {
    let span = node.span;
    let (batch, fan_in) = (graph.shape(x)[0], graph.shape(x)[1]);
    let width = units * pieces;
    let init = Init::Xavier { fan_in, fan_out: units };
    let w = add_param(graph, format!("{}.weight", node.name), vec![width, fan_in], init, true);
    let wv = graph.push(Op::Param(w), vec![], vec![width, fan_in], span);
    let affine = vec![batch, width];
    let b = add_param(graph, format!("{}.bias", node.name), vec![width], Init::Zeros, false);
    let bv = graph.push(Op::Param(b), vec![], vec![width], span);
    let y = graph.push(Op::matmul(false, true), vec![x, wv], affine.clone(), span);
    let y = graph.push(Op::AddBias, vec![y, bv], affine, span);
    graph.push(Op::MaxPieces(pieces), vec![y], out_shape, span)
}

/// Batch normalisation over the features (dimension 1; for images, the
/// channels). Training normalises with the batch's statistics, built from
/// primitive ops so autodiff derives the backward pass, and moves the
/// running statistics: r′ = momentum·r + (1 − momentum)·batch value (the
/// variance unbiased, as PyTorch keeps it). Evaluation uses the running
/// statistics. y = γ·x̂ + β, with γ = `<layer>.weight`, β = `<layer>.bias`.
fn batchnorm(
    graph: &mut Graph,
    x: ValueId,
    name: &str,
    momentum: f64,
    eps: f64,
    training: bool,
    span: Span,
) -> ValueId {
    let shape = graph.shape(x).clone();
    let features = vec![shape[1]];
    let buffer = |graph: &mut Graph, what: &str, fill: f32| {
        let name = format!("{name}.{what}");
        graph.states.push(StateInfo { name, shape: features.clone(), fill, buffer: true });
        graph.push(Op::State(graph.states.len() - 1), vec![], features.clone(), span)
    };
    let running_mean = buffer(graph, "running_mean", 0.0);
    let running_var = buffer(graph, "running_var", 1.0);
    let unary =
        |graph: &mut Graph, u: Unary, v: ValueId| graph.push(Op::Unary(u), vec![v], graph.shape(v).clone(), span);
    // Sums per channel (`SumChannels` or `SumProductChannels` of `inputs`),
    // over every process's rows when the batch is split.
    let sum_channels = |graph: &mut Graph, op: Op, inputs: Vec<ValueId>| {
        let sum = graph.push(op, inputs, features.clone(), span);
        if graph.shard.is_split() { graph.push(Op::AllReduce, vec![sum], features.clone(), span) } else { sum }
    };
    let negate_channels = |graph: &mut Graph, mean: ValueId| {
        let negated = unary(graph, Unary::Neg, mean);
        graph.push(Op::AddChannelBias, vec![x, negated], shape.clone(), span)
    };
    let (centred, var) = if training {
        let count = (numel(&shape) / shape[0] / shape[1] * graph.shard.total) as f64;
        let sum = sum_channels(graph, Op::SumChannels, vec![x]);
        let mean = unary(graph, Unary::Scale(1.0 / count), sum);
        let centred = negate_channels(graph, mean);
        let sum_squares = sum_channels(graph, Op::SumProductChannels, vec![centred, centred]);
        let var = unary(graph, Unary::Scale(1.0 / count), sum_squares);
        let unbiased = if count > 1.0 { count / (count - 1.0) } else { 1.0 };
        let moving = |graph: &mut Graph, old: ValueId, batch: ValueId, correction: f64| {
            let kept = unary(graph, Unary::Scale(momentum), old);
            let new = unary(graph, Unary::Scale((1.0 - momentum) * correction), batch);
            let updated = graph.push(Op::Add, vec![kept, new], features.clone(), span);
            graph.state_updates.push(updated);
        };
        moving(graph, running_mean, mean, 1.0);
        moving(graph, running_var, var, unbiased);
        (centred, var)
    } else {
        (negate_channels(graph, running_mean), running_var)
    };
    let shifted = unary(graph, Unary::AddConst(eps), var);
    let std = unary(graph, Unary::Sqrt, shifted);
    let gamma = add_param(graph, format!("{name}.weight"), features.clone(), Init::Ones, false);
    let gamma = graph.push(Op::Param(gamma), vec![], features.clone(), span);
    // γ/σ per channel first, so the whole tensor is scaled once (and its
    // gradient summed once), not by 1/σ and then by γ.
    let channel_scale = graph.push(Op::Div, vec![gamma, std], features.clone(), span);
    let scaled = graph.push(Op::MulChannel, vec![centred, channel_scale], shape.clone(), span);
    let beta = add_param(graph, format!("{name}.bias"), features.clone(), Init::Zeros, false);
    let beta = graph.push(Op::Param(beta), vec![], features, span);
    graph.push(Op::AddChannelBias, vec![scaled, beta], shape, span)
}

/// Layer normalisation: each sample's values (all of them, whatever its
/// shape) normalised by their own mean and variance, then y = γ·x̂ + β with
/// γ = `<layer>.weight`, β = `<layer>.bias` of the sample's shape, as
/// PyTorch's `LayerNorm(sample shape)`. The same in training and
/// evaluation. Built from batch normalisation's per-channel ops on a
/// `[1, B, F]` view, where each row is a channel, so autodiff derives the
/// backward pass.
fn layernorm(graph: &mut Graph, x: ValueId, (name, sample): (&str, &[usize]), eps: f64, span: Span) -> ValueId {
    let shape = graph.shape(x).clone();
    let (batch, values) = (shape[0], numel(sample));
    let rows = vec![1, batch, values];
    let per_row = vec![batch];
    let unary =
        |graph: &mut Graph, u: Unary, v: ValueId| graph.push(Op::Unary(u), vec![v], graph.shape(v).clone(), span);
    let view = graph.push(Op::Reshape, vec![x], rows.clone(), span);
    let sum = graph.push(Op::SumChannels, vec![view], per_row.clone(), span);
    let mean = unary(graph, Unary::Scale(1.0 / values as f64), sum);
    let negated = unary(graph, Unary::Neg, mean);
    let centred = graph.push(Op::AddChannelBias, vec![view, negated], rows.clone(), span);
    let sum_squares = graph.push(Op::SumProductChannels, vec![centred, centred], per_row.clone(), span);
    let var = unary(graph, Unary::Scale(1.0 / values as f64), sum_squares);
    let shifted = unary(graph, Unary::AddConst(eps), var);
    let std = unary(graph, Unary::Sqrt, shifted);
    let one = graph.push(Op::Const(1.0), vec![], per_row, span);
    let inv_std = graph.push(Op::Div, vec![one, std], vec![batch], span);
    let normalised = graph.push(Op::MulChannel, vec![centred, inv_std], rows, span);
    // γ and β per value: the normalised rows `[B, F]`, each value a channel.
    let flat = vec![batch, values];
    let normalised = graph.push(Op::Reshape, vec![normalised], flat.clone(), span);
    let affine = |graph: &mut Graph, what: &str, init: Init| {
        let p = add_param(graph, format!("{name}.{what}"), sample.to_vec(), init, false);
        let p = graph.push(Op::Param(p), vec![], sample.to_vec(), span);
        graph.push(Op::Reshape, vec![p], vec![values], span)
    };
    let gamma = affine(graph, "weight", Init::Ones);
    let scaled = graph.push(Op::MulChannel, vec![normalised, gamma], flat.clone(), span);
    let beta = affine(graph, "bias", Init::Zeros);
    let shifted = graph.push(Op::AddChannelBias, vec![scaled, beta], flat, span);
    graph.push(Op::Reshape, vec![shifted], shape, span)
}

/// A restricted Boltzmann machine seen as a layer: the probabilities of its
/// hidden units, σ(v·Wᵀ + b). Contrastive divergence trains it
/// (`train::cd`); after pretraining, fine-tuning treats it as dense + sigmoid.
fn rbm(graph: &mut Graph, v: ValueId, name: &str, hidden: usize, span: Span) -> ValueId {
    let visible = graph.shape(v)[1];
    let init = Init::Normal { std: 0.01 };
    let weight = add_param(graph, format!("{name}.weight"), vec![hidden, visible], init, true);
    let hidden_bias = add_param(graph, format!("{name}.bias"), vec![hidden], Init::Zeros, false);
    let visible_bias = add_param(graph, format!("{name}.visible_bias"), vec![visible], Init::Zeros, false);
    let info = RbmInfo { visible: v, weight, hidden_bias, visible_bias, span };
    graph.rbms.push(info.clone());
    hidden_probabilities(graph, &info, v)
}

/// σ(v·Wᵀ + b_hidden), `[B, H]`.
pub fn hidden_probabilities(graph: &mut Graph, rbm: &RbmInfo, v: ValueId) -> ValueId {
    sigmoid_layer(graph, v, rbm.weight, true, rbm.hidden_bias, rbm.span)
}

/// σ(h·W + b_visible), `[B, V]`: the same weights, read the other way.
pub fn visible_probabilities(graph: &mut Graph, rbm: &RbmInfo, h: ValueId) -> ValueId {
    sigmoid_layer(graph, h, rbm.weight, false, rbm.visible_bias, rbm.span)
}

/// σ(x·op(W) + b), with op(W) = Wᵀ when `transposed`.
fn sigmoid_layer(graph: &mut Graph, x: ValueId, weight: usize, transposed: bool, bias: usize, span: Span) -> ValueId {
    let (w, b) = (param_node(graph, weight, span), param_node(graph, bias, span));
    let units = graph.shape(w)[usize::from(!transposed)];
    let shape = vec![graph.shape(x)[0], units];
    let z = graph.push(Op::matmul(false, transposed), vec![x, w], shape.clone(), span);
    let z = graph.push(Op::AddBias, vec![z, b], shape.clone(), span);
    graph.push(Op::Unary(Unary::Sigmoid), vec![z], shape, span)
}

/// A node reading parameter `p`.
pub fn param_node(graph: &mut Graph, p: usize, span: Span) -> ValueId {
    let shape = graph.params[p].shape.clone();
    graph.push(Op::Param(p), vec![], shape, span)
}

fn add_param(graph: &mut Graph, name: String, shape: Shape, init: Init, decay: bool) -> usize {
    graph.params.push(ParamInfo { name, shape, init, decay, frozen: false });
    graph.params.len() - 1
}

pub fn unary_of(a: Activation) -> Unary {
    match a {
        Activation::Sigmoid => Unary::Sigmoid,
        Activation::Tanh => Unary::Tanh,
        Activation::Relu => Unary::Relu,
        Activation::LeakyRelu(alpha) => Unary::LeakyRelu(alpha),
        Activation::Elu(alpha) => Unary::Elu(alpha),
        Activation::Gelu { tanh: false } => Unary::Gelu,
        Activation::Gelu { tanh: true } => Unary::GeluTanh,
        Activation::Silu => Unary::Silu,
        Activation::Softplus => Unary::Softplus,
        Activation::Clip(lo, hi) => Unary::Clamp(lo, hi),
        Activation::Identity | Activation::Softmax => Unary::Identity,
    }
}

/// He initialisation before relu-family activations (the smooth ones
/// included), Xavier otherwise.
fn init_for(model: &CheckedModel, index: usize, fan_in: usize, fan_out: usize) -> Init {
    match model.nodes[index].init {
        Some(WeightInit::He) => return Init::He { fan_in },
        Some(WeightInit::Xavier) => return Init::Xavier { fan_in, fan_out },
        Some(WeightInit::Normal(std)) => return Init::Normal { std },
        Some(WeightInit::Zeros) => return Init::Zeros,
        None => {}
    }
    let relu_like = model.nodes.iter().any(|n| {
        n.inputs.first() == Some(&ValueRef::Node(index))
            && matches!(
                n.layer,
                Layer::Activation(
                    Activation::Relu
                        | Activation::LeakyRelu(_)
                        | Activation::Elu(_)
                        | Activation::Gelu { .. }
                        | Activation::Silu
                        | Activation::Softplus
                )
            )
    });
    if relu_like { Init::He { fan_in } } else { Init::Xavier { fan_in, fan_out } }
}
