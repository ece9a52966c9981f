//! Contrastive divergence (CD-k) for restricted Boltzmann machines, built as
//! IR like every other step, so both backends run it and the JIT is tested
//! against the interpreter. Hidden units are sampled with the counter-based
//! generator dropout uses: reproducible, independent of threads.
//!
//! For an RBM with visible data v₀ (the model's input, or the hidden
//! probabilities of the RBM below it):
//!   p₀ = σ(v₀Wᵀ + b),  h ~ Bernoulli(p₀),
//!   k times: vⱼ = σ(hW + c),  pⱼ = σ(vⱼWᵀ + b),  h ~ Bernoulli(pⱼ),
//!   W += lr·(p₀ᵀv₀ − pₖᵀvₖ)/B,  b += lr·Σ(p₀ − pₖ)/B,  c += lr·Σ(v₀ − vₖ)/B.
//! The step's loss is the mean squared reconstruction error of the first
//! RBM trained, ‖v₀ − vₖ‖²/n.

use crate::ir::lower::{hidden_probabilities, param_node, visible_probabilities};
use crate::ir::{Graph, Hyper, Op, TrainGraph, Unary, ValueId};

/// The CD-k step training the RBMs `layers` (indices into `forward.rbms`)
/// of a forward graph lowered for evaluation.
pub fn cd_step(forward: &Graph, layers: &[usize], k: usize, seed: u64) -> Result<TrainGraph, String> {
    let mut g = forward.clone();
    let mut new_params: Vec<ValueId> = (0..g.params.len()).map(|p| param_node(&mut g, p, Default::default())).collect();
    let mut loss = None;
    for &r in layers {
        let rbm = g.rbms.get(r).cloned().ok_or("no such RBM")?;
        let span = rbm.span;
        let step = g.push(Op::Hyper(Hyper::Step), vec![], vec![], span);
        let lr = g.push(Op::Hyper(Hyper::Lr), vec![], vec![], span);
        let batch = g.shape(rbm.visible)[0] as f64;
        let sample = |g: &mut Graph, p: ValueId, j: usize| {
            let salt = seed.wrapping_mul(0x2545_F491_4F6C_DD1D) ^ ((r as u64) << 32 | j as u64);
            g.push(Op::Bernoulli { salt }, vec![p, step], g.shape(p).clone(), span)
        };
        let v0 = rbm.visible;
        let p0 = hidden_probabilities(&mut g, &rbm, v0);
        let mut h = sample(&mut g, p0, 0);
        let (mut v, mut p) = (v0, p0);
        for j in 1..=k {
            v = visible_probabilities(&mut g, &rbm, h);
            p = hidden_probabilities(&mut g, &rbm, v);
            if j < k {
                h = sample(&mut g, p, j);
            }
        }
        // param + lr·(positive − negative)/B
        let mut update = |g: &mut Graph, param: usize, positive: ValueId, negative: ValueId| {
            let shape = g.params[param].shape.clone();
            let old = param_node(g, param, span);
            let diff = g.push(Op::Sub, vec![positive, negative], shape.clone(), span);
            let mean = g.push(Op::Unary(Unary::Scale(1.0 / batch)), vec![diff], shape.clone(), span);
            let scaled = g.push(Op::MulScalar, vec![mean, lr], shape.clone(), span);
            new_params[param] = g.push(Op::Add, vec![old, scaled], shape, span);
        };
        let w_shape = g.params[rbm.weight].shape.clone();
        let positive = g.push(Op::matmul(true, false), vec![p0, v0], w_shape.clone(), span);
        let negative = g.push(Op::matmul(true, false), vec![p, v], w_shape, span);
        update(&mut g, rbm.weight, positive, negative);
        let hidden = vec![g.shape(p0)[1]];
        let (s0, sk) =
            (g.push(Op::SumRows, vec![p0], hidden.clone(), span), g.push(Op::SumRows, vec![p], hidden, span));
        update(&mut g, rbm.hidden_bias, s0, sk);
        let visible = vec![g.shape(v0)[1]];
        let (s0, sk) =
            (g.push(Op::SumRows, vec![v0], visible.clone(), span), g.push(Op::SumRows, vec![v], visible, span));
        update(&mut g, rbm.visible_bias, s0, sk);
        if loss.is_none() {
            loss = Some(g.push(Op::Mse, vec![v, v0], vec![], span));
        }
    }
    g.loss = loss;
    Ok(TrainGraph { graph: g, grads: vec![], new_params, new_states: vec![], updates: vec![], observed: vec![] })
}
