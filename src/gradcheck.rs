//! Gradient checking: autodiff gradients against central finite differences,
//! in f64, on a small random batch. Proves each gradient rule on real graphs:
//! the model is lowered by the pipeline, then `autodiff` is checked directly.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;

use crate::autodiff::differentiate;
use crate::check::{CheckedModel, TargetKind};
use crate::diag::Diag;
use crate::interp::{self, Bindings};
use crate::ir::init::init_params;
use crate::ir::{self, Graph, numel};

/// The worst disagreement found for one parameter tensor.
#[derive(Debug, Clone)]
pub struct TensorReport {
    pub name: String,
    /// max over checked elements of |a − n| / max(|a| + |n|, 1e-4): relative for
    /// real gradients, absolute for the near-zero ones where differences are noise.
    pub worst_relative_error: f64,
    pub worst_absolute_error: f64,
    pub elements_checked: usize,
}

/// Elements checked per tensor; larger tensors are sampled.
const MAX_ELEMENTS: usize = 40;
const STEP: f64 = 1e-6;
/// The standard deviation of the moves `check_model` gives the parameters.
const JITTER: f64 = 1e-2;

/// Random inputs and targets for `graph` (a lowered model), seeded.
pub struct Batch {
    pub inputs: Vec<Vec<f64>>,
    pub targets: Vec<Vec<f64>>,
}

pub fn random_batch(model: &CheckedModel, graph: &Graph, seed: u64) -> Batch {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x5eed);
    let b = graph.batch;
    // Token inputs get valid ids; everything else standard normal values.
    // Several inputs are one row of values (`Op::Input(0)` reads them all).
    let vocab = crate::data::RowSpec::of(model).vocab;
    let row: Vec<f64> = (0..b * model.input_width())
        .map(|_| match vocab {
            Some(v) => rng.random_range(0..v) as f64,
            None => rng.sample::<f64, _>(StandardNormal),
        })
        .collect();
    let inputs = vec![row];
    // The targets the losses read, one row of them per sample, as the data gives them.
    let mut row = Vec::new();
    for _ in 0..b {
        for t in model.row_targets() {
            match &model.targets[t].kind {
                TargetKind::Class(k) => row.push(rng.random_range(0..*k) as f64),
                TargetKind::Real(s) => row.extend((0..numel(s)).map(|_| rng.sample::<f64, _>(StandardNormal))),
                TargetKind::Binary(s) => row.extend((0..numel(s)).map(|_| rng.random_range(0..2) as f64)),
            }
        }
    }
    Batch { inputs, targets: vec![row] }
}

/// Checks every parameter's gradient of `graph`'s loss.
pub fn check_graph(graph: &Graph, batch: &Batch, params: &[Vec<f64>], seed: u64) -> Result<Vec<TensorReport>, String> {
    let (full, grads) = differentiate(graph)?;
    ir::verify(&full)?;
    let loss_id = graph.loss.ok_or("no loss")?;
    let inputs: Vec<&[f64]> = batch.inputs.iter().map(Vec::as_slice).collect();
    let targets: Vec<&[f64]> = batch.targets.iter().map(Vec::as_slice).collect();
    let states: Vec<Vec<f64>> = graph.states.iter().map(|s| vec![f64::from(s.fill); numel(&s.shape)]).collect();
    let eval = |params: &[Vec<f64>], g: &Graph| -> Result<Vec<Vec<f64>>, String> {
        let b = Bindings {
            inputs: &inputs,
            targets: &targets,
            params,
            states: &states,
            lr: 0.0,
            bias1: 1.0,
            bias2: 1.0,
            step: 1.0,
        };
        interp::run(g, &b)
    };
    let values = eval(params, &full)?;
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut reports = Vec::new();
    let mut work = params.to_vec();
    for (p, info) in graph.params.iter().enumerate() {
        let analytic = &values[grads[p].0];
        let n = numel(&info.shape);
        let elements: Vec<usize> = if n <= MAX_ELEMENTS {
            (0..n).collect()
        } else {
            (0..MAX_ELEMENTS).map(|_| rng.random_range(0..n)).collect()
        };
        let (mut worst_rel, mut worst_abs) = (0.0f64, 0.0f64);
        for &e in &elements {
            let original = work[p][e];
            work[p][e] = original + STEP;
            let up = eval(&work, graph)?[loss_id.0][0];
            work[p][e] = original - STEP;
            let down = eval(&work, graph)?[loss_id.0][0];
            work[p][e] = original;
            let numeric = (up - down) / (2.0 * STEP);
            let abs = (analytic[e] - numeric).abs();
            worst_abs = worst_abs.max(abs);
            worst_rel = worst_rel.max(abs / (analytic[e].abs() + numeric.abs()).max(1e-4));
        }
        reports.push(TensorReport {
            name: info.name.clone(),
            worst_relative_error: worst_rel,
            worst_absolute_error: worst_abs,
            elements_checked: elements.len(),
        });
    }
    Ok(reports)
}

/// Lowers `model` for a batch of 3 and checks every parameter's gradient,
/// at its initial parameters each moved by a small random amount: biases
/// start at zero, which puts a ReLU after a convolution whose window reads
/// only zeros (a depthwise one's, of a single channel, often does) exactly
/// on its kink, where finite differences measure no derivative.
pub fn check_model(model: &CheckedModel, seed: u64) -> Result<Vec<TensorReport>, Diag> {
    let graph = crate::pipeline::training_graph(model, 3)?;
    let mut params = init_params::<f64>(&graph.params, seed);
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x7177e5);
    for value in params.iter_mut().flatten() {
        *value += JITTER * rng.sample::<f64, _>(StandardNormal);
    }
    let batch = random_batch(model, &graph, seed);
    check_graph(&graph, &batch, &params, seed).map_err(|e| crate::diag::messages::internal(model.span, &e))
}
