//! Gradient checking: autodiff gradients against central finite differences,
//! in f64, on a small random batch. Proves each gradient rule on real graphs:
//! the model is lowered by the pipeline, then `autodiff` is checked directly.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;
use rayon::prelude::*;

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

/// Elements checked per tensor by default; a larger tensor has that many
/// distinct ones sampled.
pub const DEFAULT_ELEMENTS: usize = 40;
const STEP: f64 = 1e-6;
/// The standard deviation of the moves `check_model` gives the parameters.
const JITTER: f64 = 1e-2;

/// What a check tells as it goes (`nnc gradcheck`'s live bar and rows).
pub trait Observer: Sync {
    /// The check takes `differences` finite differences in all.
    fn started(&self, _differences: usize) {}
    /// One more finite difference is done (called from any thread).
    fn difference_done(&self) {}
    /// A tensor is checked.
    fn tensor_done(&self, _report: &TensorReport) {}
}

/// Tells nothing.
impl Observer for () {}

/// How a check samples, and whom it tells.
pub struct Options<'a> {
    /// Seeds the parameters' moves, the batch and the sampled elements.
    pub seed: u64,
    /// Distinct elements checked per tensor (every element of a smaller one).
    pub elements: usize,
    pub observer: &'a dyn Observer,
}

impl Default for Options<'_> {
    fn default() -> Self {
        Options { seed: 0, elements: DEFAULT_ELEMENTS, observer: &() }
    }
}

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

/// Why a check did not run to its end.
#[derive(Debug)]
pub enum CheckError {
    /// With one finite difference at a time it needs `needs` bytes, more
    /// than this machine's `has`.
    Memory { needs: u64, has: u64 },
    /// The graph could not be differentiated or run.
    Failed(String),
}

impl From<String> for CheckError {
    fn from(e: String) -> Self {
        CheckError::Failed(e)
    }
}

/// How many finite differences of `graph` may run at once (at most one per
/// core) in this machine's memory: beside the autodiff pass's values
/// (`full`'s) and the parameters, each holds in f64 a copy of the tensor
/// it moves and the forward values after it.
fn differences_at_once(graph: &Graph, full: &Graph) -> Result<usize, CheckError> {
    let values = |graph: &Graph| -> u64 {
        let computed = graph.nodes.iter().filter(|n| !matches!(n.op, ir::Op::Param(_)));
        computed.map(|n| numel(&n.shape) as u64).fold(0, u64::saturating_add)
    };
    let params = graph.params.iter().map(|p| numel(&p.shape) as u64);
    let (all_params, largest) = params.fold((0, 0), |(sum, max): (u64, u64), n| (sum.saturating_add(n), max.max(n)));
    let shared = values(full).saturating_add(all_params).saturating_mul(8);
    let each = values(graph).saturating_add(largest).saturating_mul(8).max(1);
    let Some(has) = crate::check::machine_memory() else { return Ok(rayon::current_num_threads()) };
    match has.saturating_sub(shared) / each {
        0 => Err(CheckError::Memory { needs: shared.saturating_add(each), has }),
        fit => Ok(usize::try_from(fit).unwrap_or(usize::MAX).min(rayon::current_num_threads())),
    }
}

/// Checks every parameter's gradient of `graph`'s loss. Each finite
/// difference runs again only what the moved element reaches
/// (`interp::rerun`), and a tensor's elements run on all cores (on as
/// many as the machine's memory allows).
pub fn check_graph(
    graph: &Graph,
    batch: &Batch,
    params: &[Vec<f64>],
    options: &Options,
) -> Result<Vec<TensorReport>, CheckError> {
    check_differentiated(Differentiated::new(graph)?, batch, params, options)
}

/// A graph with its backward pass, and how many finite differences of it
/// fit in memory at once.
struct Differentiated<'g> {
    graph: &'g Graph,
    full: Graph,
    grads: Vec<ir::ValueId>,
    threads: usize,
}

impl<'g> Differentiated<'g> {
    /// `graph` differentiated, or the memory a check of it needs when that
    /// is more than the machine has (found before any value is made).
    fn new(graph: &'g Graph) -> Result<Self, CheckError> {
        let (full, grads) = differentiate(graph)?;
        ir::verify(&full)?;
        let threads = differences_at_once(graph, &full)?;
        Ok(Differentiated { graph, full, grads, threads })
    }
}

/// `check_graph` on a graph already differentiated.
fn check_differentiated(
    Differentiated { graph, full, grads, threads }: Differentiated,
    batch: &Batch,
    params: &[Vec<f64>],
    options: &Options,
) -> Result<Vec<TensorReport>, CheckError> {
    let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().map_err(|e| e.to_string())?;
    let loss_id = graph.loss.ok_or_else(|| "no loss".to_string())?;
    let inputs: Vec<&[f64]> = batch.inputs.iter().map(Vec::as_slice).collect();
    let targets: Vec<&[f64]> = batch.targets.iter().map(Vec::as_slice).collect();
    let states: Vec<Vec<f64>> = graph.states.iter().map(|s| vec![f64::from(s.fill); numel(&s.shape)]).collect();
    let bindings = Bindings {
        inputs: &inputs,
        targets: &targets,
        params,
        states: &states,
        lr: 0.0,
        bias1: 1.0,
        bias2: 1.0,
        step: 1.0,
    };
    let values = interp::run_borrowing(&full, &bindings)?;
    // The backward pass only appends to the forward graph: its first
    // values are the forward pass's.
    let before = &values[..graph.nodes.len()];
    let mut rng = ChaCha8Rng::seed_from_u64(options.seed);
    let samples: Vec<Vec<usize>> = graph
        .params
        .iter()
        .map(|info| {
            let n = numel(&info.shape);
            if n <= options.elements {
                (0..n).collect()
            } else {
                rand::seq::index::sample(&mut rng, n, options.elements).into_vec()
            }
        })
        .collect();
    options.observer.started(2 * samples.iter().map(Vec::len).sum::<usize>());
    let loss_with = |(p, e, value): interp::Moved<f64>| -> Result<f64, String> {
        let loss = interp::rerun(graph, &bindings, before, (p, e, value), loss_id)?;
        options.observer.difference_done();
        Ok(loss[0])
    };
    let mut reports = Vec::new();
    for (p, (info, elements)) in graph.params.iter().zip(&samples).enumerate() {
        let analytic = &values[grads[p].0];
        let numeric = pool.install(|| {
            elements
                .par_iter()
                .map(|&e| {
                    let original = params[p][e];
                    let (up, down) = (loss_with((p, e, original + STEP))?, loss_with((p, e, original - STEP))?);
                    Ok((up - down) / (2.0 * STEP))
                })
                .collect::<Result<Vec<f64>, String>>()
        })?;
        let (mut worst_rel, mut worst_abs) = (0.0f64, 0.0f64);
        for (&e, numeric) in elements.iter().zip(numeric) {
            let abs = (analytic[e] - numeric).abs();
            worst_abs = worst_abs.max(abs);
            worst_rel = worst_rel.max(abs / (analytic[e].abs() + numeric.abs()).max(1e-4));
        }
        let report = TensorReport {
            name: info.name.clone(),
            worst_relative_error: worst_rel,
            worst_absolute_error: worst_abs,
            elements_checked: elements.len(),
        };
        options.observer.tensor_done(&report);
        reports.push(report);
    }
    Ok(reports)
}

/// Lowers `model` for a batch of 3 and checks every parameter's gradient,
/// at its initial parameters each moved by a small random amount: biases
/// start at zero, which puts a ReLU after a convolution whose window reads
/// only zeros (a depthwise one's, of a single channel, often does) exactly
/// on its kink, where finite differences measure no derivative.
pub fn check_model(model: &CheckedModel, options: &Options) -> Result<Vec<TensorReport>, Diag> {
    let seed = options.seed;
    let graph = crate::pipeline::training_graph(model, 3)?;
    let error = |e| match e {
        CheckError::Memory { needs, has } => crate::diag::messages::gradcheck_memory(model.span, needs, has),
        CheckError::Failed(e) => crate::diag::messages::internal(model.span, &e),
    };
    let differentiated = Differentiated::new(&graph).map_err(error)?;
    let mut params = init_params::<f64>(&graph.params, seed);
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x7177e5);
    for value in params.iter_mut().flatten() {
        *value += JITTER * rng.sample::<f64, _>(StandardNormal);
    }
    let batch = random_batch(model, &graph, seed);
    check_differentiated(differentiated, &batch, &params, options).map_err(error)
}
