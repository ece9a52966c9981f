//! Gradient optimizers as IR: clipping, L2, and the update rule of each
//! optimizer, appended to the differentiated graph. The result is a
//! `TrainGraph` whose outputs are the new parameters and optimizer state.

use crate::check::{Optimizer, TrainConfig};
use crate::diag::Span;
use crate::ir::{Graph, Hyper, Op, ParamInfo, StateInfo, TrainGraph, Unary, ValueId};

/// Appends the update of every parameter to `g`, the differentiated
/// `forward` graph whose gradient of the loss for parameter `p` is `grads[p]`.
pub fn gradient_step(
    forward: &Graph,
    mut g: Graph,
    mut grads: Vec<ValueId>,
    config: &TrainConfig,
) -> Result<TrainGraph, String> {
    let span = forward.loss.map(|l| forward.node(l).span).unwrap_or_default();
    let params = forward.params.clone();
    let shape = |p: usize| params[p].shape.clone();
    clip(&mut g, &mut grads, config, &params, span);
    let weights: Vec<ValueId> = (0..params.len()).map(|p| g.push(Op::Param(p), vec![], shape(p), span)).collect();
    // L2 regularisation: the gradient of (l2/2)·‖w‖² is l2·w.
    if config.l2 > 0.0 {
        for (p, grad) in grads.iter_mut().enumerate().filter(|(p, _)| params[*p].decay && !params[*p].frozen) {
            let decay = g.push(Op::Unary(Unary::Scale(config.l2)), vec![weights[p]], shape(p), span);
            *grad = g.push(Op::Add, vec![*grad, decay], shape(p), span);
        }
    }
    let lr = g.push(Op::Hyper(Hyper::Lr), vec![], vec![], span);
    // Model buffers (running statistics) come first, then the optimizer's state.
    let mut new_states = forward.state_updates.clone();
    let state = |g: &mut Graph, p: usize, what: &str| -> ValueId {
        let name = format!("{}.{what}", params[p].name);
        g.states.push(StateInfo { name, shape: params[p].shape.clone(), fill: 0.0, buffer: false });
        g.push(Op::State(g.states.len() - 1), vec![], params[p].shape.clone(), span)
    };
    let (mut new_params, mut updates) = (Vec::new(), Vec::new());
    for p in 0..params.len() {
        if params[p].frozen {
            new_params.push(weights[p]);
            updates.push(g.push(Op::Const(0.0), vec![], shape(p), span));
            continue;
        }
        let (w, grad, s) = (weights[p], grads[p], shape(p));
        let mut state = |g: &mut Graph, what: &str| state(g, p, what);
        let direction = direction(&mut g, &config.optimizer, grad, &s, span, &mut state, &mut new_states)?;
        let step = g.push(Op::MulScalar, vec![direction, lr], s.clone(), span);
        let mut w2 = g.push(Op::Sub, vec![w, step], s.clone(), span);
        let mut update = step;
        // Decoupled weight decay: w' −= lr·wd·w.
        if config.weight_decay > 0.0 && params[p].decay {
            let decay = g.push(Op::Unary(Unary::Scale(config.weight_decay)), vec![w], s.clone(), span);
            let decay_step = g.push(Op::MulScalar, vec![decay, lr], s.clone(), span);
            w2 = g.push(Op::Sub, vec![w2, decay_step], s.clone(), span);
            // Read only when the step observes its health.
            update = g.push(Op::Add, vec![step, decay_step], s, span);
        }
        new_params.push(w2);
        updates.push(update);
    }
    Ok(TrainGraph { graph: g, grads, new_params, new_states, updates, observed: vec![] })
}

/// Clips the gradients as `config` says: each element to [−c, c]
/// (`clip_value`), then all of them together to a global L2 norm of at most
/// c (`clip_norm`).
fn clip(g: &mut Graph, grads: &mut [ValueId], config: &TrainConfig, params: &[ParamInfo], span: Span) {
    let shape = |p: usize| params[p].shape.clone();
    if let Some(c) = config.clip_value {
        for (p, grad) in grads.iter_mut().enumerate() {
            *grad = g.push(Op::Unary(Unary::Clamp(-c, c)), vec![*grad], shape(p), span);
        }
    }
    // Rescale all gradients together so their global L2 norm is at most c.
    if let Some(c) = config.clip_norm {
        // Frozen parameters' gradients are not the step's (as in PyTorch,
        // where they have none).
        let mut total: Option<ValueId> = None;
        for (_, grad) in grads.iter().enumerate().filter(|(p, _)| !params[*p].frozen) {
            let sq = g.push(Op::SumSquares, vec![*grad], vec![], span);
            total = Some(match total {
                Some(t) => g.push(Op::Add, vec![t, sq], vec![], span),
                None => sq,
            });
        }
        if let Some(total) = total {
            let factor = g.push(Op::ClipScale(c), vec![total], vec![], span);
            for (p, grad) in grads.iter_mut().enumerate() {
                *grad = g.push(Op::MulScalar, vec![*grad, factor], shape(p), span);
            }
        }
    }
}

/// The step direction d in w' = w − lr·d of `optimizer` for a parameter of
/// shape `s` whose gradient is `grad`; `state` adds one of its state tensors,
/// whose new values go to `new_states`.
fn direction(
    g: &mut Graph,
    optimizer: &Optimizer,
    grad: ValueId,
    s: &[usize],
    span: Span,
    state: &mut dyn FnMut(&mut Graph, &str) -> ValueId,
    new_states: &mut Vec<ValueId>,
) -> Result<ValueId, String> {
    Ok(match optimizer {
        // w' = w − lr·g
        Optimizer::Gd | Optimizer::Sgd => grad,
        // v' = μv + g;  w' = w − lr·v'
        Optimizer::Momentum { momentum } => {
            let v = state(g, "momentum");
            let decayed = g.push(Op::Unary(Unary::Scale(*momentum)), vec![v], s.to_vec(), span);
            let v2 = g.push(Op::Add, vec![decayed, grad], s.to_vec(), span);
            let v2 = normal_or_zero(g, v2, s, span);
            new_states.push(v2);
            v2
        }
        // v' = μv + g;  w' = w − lr·(g + μv')
        Optimizer::Nesterov { momentum } => {
            let v = state(g, "momentum");
            let decayed = g.push(Op::Unary(Unary::Scale(*momentum)), vec![v], s.to_vec(), span);
            let v2 = g.push(Op::Add, vec![decayed, grad], s.to_vec(), span);
            let v2 = normal_or_zero(g, v2, s, span);
            new_states.push(v2);
            let ahead = g.push(Op::Unary(Unary::Scale(*momentum)), vec![v2], s.to_vec(), span);
            g.push(Op::Add, vec![grad, ahead], s.to_vec(), span)
        }
        // m' = β₁m + (1−β₁)g;  v' = β₂v + (1−β₂)g²;  w' = w − lr·m̂/(√v̂ + ε)
        Optimizer::Adam { beta1, beta2, eps } => {
            let m = state(g, "adam_m");
            let v = state(g, "adam_v");
            let m_old = g.push(Op::Unary(Unary::Scale(*beta1)), vec![m], s.to_vec(), span);
            let m_new = g.push(Op::Unary(Unary::Scale(1.0 - beta1)), vec![grad], s.to_vec(), span);
            let m2 = g.push(Op::Add, vec![m_old, m_new], s.to_vec(), span);
            let m2 = normal_or_zero(g, m2, s, span);
            let g2 = g.push(Op::Unary(Unary::Square), vec![grad], s.to_vec(), span);
            let v_old = g.push(Op::Unary(Unary::Scale(*beta2)), vec![v], s.to_vec(), span);
            let v_new = g.push(Op::Unary(Unary::Scale(1.0 - beta2)), vec![g2], s.to_vec(), span);
            let v2 = g.push(Op::Add, vec![v_old, v_new], s.to_vec(), span);
            let v2 = normal_or_zero(g, v2, s, span);
            new_states.extend([m2, v2]);
            let c1 = g.push(Op::Hyper(Hyper::Bias1), vec![], vec![], span);
            let c2 = g.push(Op::Hyper(Hyper::Bias2), vec![], vec![], span);
            let m_hat = g.push(Op::MulScalar, vec![m2, c1], s.to_vec(), span);
            let v_hat = g.push(Op::MulScalar, vec![v2, c2], s.to_vec(), span);
            let root = g.push(Op::Unary(Unary::Sqrt), vec![v_hat], s.to_vec(), span);
            let denom = g.push(Op::Unary(Unary::AddConst(*eps)), vec![root], s.to_vec(), span);
            g.push(Op::Div, vec![m_hat, denom], s.to_vec(), span)
        }
        Optimizer::Anneal { .. } | Optimizer::ContrastiveDivergence { .. } => {
            return Err(format!("the `{}` optimizer is not available for training yet", optimizer.keyword()));
        }
    })
}

/// `v` with its values below the smallest normal float made zero (NaN
/// kept). Optimizer state that decays geometrically, a parameter whose
/// gradient stays zero (an input that is always zero, a dead unit),
/// would otherwise sink through the subnormal floats, on which x86 cores
/// take microcode assists many times slower than a multiply: Adam's
/// update took 0.3 s of a 4 s Fashion-MNIST epoch. A state that small
/// moves no weight.
fn normal_or_zero(g: &mut Graph, v: ValueId, s: &[usize], span: Span) -> ValueId {
    let largest_subnormal = f64::from(f32::from_bits(f32::MIN_POSITIVE.to_bits() - 1));
    let normal = g.push(Op::Unary(Unary::Beyond(largest_subnormal)), vec![v], s.to_vec(), span);
    g.push(Op::Mul, vec![v, normal], s.to_vec(), span)
}
