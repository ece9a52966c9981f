//! The losses of a lowered model: each loss term (with its class weights,
//! or the standardised target of a regression) weighted and summed, and
//! the prediction the model's outputs make, side by side when several.

use std::collections::HashMap;

use super::lower::visible_probabilities;
use super::{Graph, Op, Shape, StateInfo, Unary, ValueId, numel};
use crate::check::{CheckedModel, Layer, LossKind, LossSpec, ValueRef};
use crate::diag::{Diag, messages};

/// The loss node and the prediction: the model's loss, or for a stack
/// ending in an RBM the error of reconstructing its input.
pub(super) fn attach_loss(
    graph: &mut Graph,
    model: &CheckedModel,
    values: &HashMap<ValueRef, ValueId>,
    training: bool,
) -> Result<(), Diag> {
    if model.losses.is_empty() {
        // A stack ending in an RBM: its output is the hidden probabilities,
        // its loss the error of reconstructing its input from them.
        let ends_in_rbm = model.nodes.last().is_some_and(|n| matches!(n.layer, Layer::Rbm { .. }));
        let (Some(rbm), true) = (graph.rbms.last().cloned(), ends_in_rbm) else {
            return Err(messages::nothing_to_train(model.span, &model.name));
        };
        let hidden = values[&ValueRef::Node(model.nodes.len() - 1)];
        let reconstruction = visible_probabilities(graph, &rbm, hidden);
        graph.loss = Some(graph.push(Op::Mse, vec![reconstruction, rbm.visible], vec![], rbm.span));
        graph.prediction = hidden;
        return Ok(());
    }
    // The summed loss, and each term's prediction (in the target's units).
    let mut total = None;
    let mut outputs = Vec::with_capacity(model.losses.len());
    for loss in &model.losses {
        let (term, output) = loss_term(graph, model, values, loss, training);
        let term = if loss.weight == 1.0 {
            term
        } else {
            graph.push(Op::Unary(Unary::Scale(loss.weight)), vec![term], vec![], loss.span)
        };
        total = Some(match total {
            Some(sum) => graph.push(Op::Add, vec![sum, term], vec![], loss.span),
            None => term,
        });
        outputs.push(output);
    }
    graph.loss = total;
    graph.prediction = match outputs[..] {
        [one] => one,
        // Several outputs: each row's values side by side, in the losses' order.
        _ => {
            let rows = graph.batch;
            let span = model.losses[0].span;
            let flat: Vec<ValueId> = (outputs.iter())
                .map(|&output| {
                    let width = numel(graph.shape(output)) / rows.max(1);
                    graph.push(Op::Reshape, vec![output], vec![rows, width], span)
                })
                .collect();
            graph.concat(flat, 1, span)
        }
    };
    Ok(())
}

/// One loss term's node and its prediction in the target's units.
fn loss_term(
    graph: &mut Graph,
    model: &CheckedModel,
    values: &HashMap<ValueRef, ValueId>,
    loss: &LossSpec,
    training: bool,
) -> (ValueId, ValueId) {
    let prediction = values[&loss.prediction];
    let target = values[&loss.target];
    let op = match loss.kind {
        LossKind::CrossEntropy => Op::SoftmaxCrossEntropy,
        LossKind::Mse => Op::Mse,
        LossKind::BinaryCrossEntropy => Op::Bce,
    };
    if let (true, ValueRef::Target(t), LossKind::Mse) = (model.train.standardize_target, loss.target, loss.kind) {
        let target = (model.targets[t].name.as_str(), target);
        let (scaled_target, original) = standardized_target(graph, target, prediction, training);
        return (graph.push(op, vec![prediction, scaled_target], vec![], loss.span), original);
    }
    let mut inputs = vec![prediction, target];
    if let Some(weights) = &loss.class_weights {
        let rows = graph.shape(target).clone();
        inputs.push(graph.push(Op::ClassWeights(weights.clone()), vec![target], rows, loss.span));
    }
    (graph.push(op, inputs, vec![], loss.span), prediction)
}

/// `standardize_target`: the network learns the target in units of its
/// training rows' deviation from their mean, `(y − μ) / σ` per column, and
/// predicts `ŷ·σ + μ`, so everything that reads predictions (metrics,
/// `predict`, built libraries) sees the original units. μ and σ are the
/// buffers `<target>.mean` and `<target>.std`, set from the training rows
/// before the first step and saved with the weights; a training step
/// leaves them as they are. Returns the scaled target and the prediction
/// in original units.
fn standardized_target(
    graph: &mut Graph,
    (name, target): (&str, ValueId),
    prediction: ValueId,
    training: bool,
) -> (ValueId, ValueId) {
    let (shape, span) = (graph.shape(target).clone(), graph.nodes[target.0].span);
    let columns = vec![shape[1..].iter().product()];
    let rows = vec![shape[0], columns[0]];
    // Two loss terms on one target share its buffers (one tensor each in a checkpoint).
    let shared = |graph: &Graph, name: &str| {
        let state = graph.states.iter().position(|s| s.name == name)?;
        graph.nodes.iter().position(|n| matches!(n.op, Op::State(i) if i == state)).map(ValueId)
    };
    let mut buffer = |what: &str, fill: f32| {
        let name = format!("{name}.{what}");
        if let Some(node) = shared(graph, &name) {
            return node;
        }
        graph.states.push(StateInfo { name, shape: columns.clone(), fill, buffer: true });
        let node = graph.push(Op::State(graph.states.len() - 1), vec![], columns.clone(), span);
        if training {
            graph.state_updates.push(node);
        }
        node
    };
    let (mean, std) = (buffer("mean", 0.0), buffer("std", 1.0));
    let view = |graph: &mut Graph, v: ValueId, shape: &Shape| graph.push(Op::Reshape, vec![v], shape.clone(), span);
    let y = view(graph, target, &rows);
    let negated = graph.push(Op::Unary(Unary::Neg), vec![mean], columns.clone(), span);
    let centred = graph.push(Op::AddChannelBias, vec![y, negated], rows.clone(), span);
    let one = graph.push(Op::Const(1.0), vec![], columns.clone(), span);
    let inverse = graph.push(Op::Div, vec![one, std], columns.clone(), span);
    let scaled = graph.push(Op::MulChannel, vec![centred, inverse], rows.clone(), span);
    let p = view(graph, prediction, &rows);
    let stretched = graph.push(Op::MulChannel, vec![p, std], rows.clone(), span);
    let original = graph.push(Op::AddChannelBias, vec![stretched, mean], rows, span);
    (view(graph, scaled, &shape), view(graph, original, &shape))
}
