//! Training: the optimizer step as IR (`update`), seeded initialisation
//! (`init`), metrics, and the trainer loop that feeds minibatches through
//! the reference interpreter.

mod anneal;
pub mod cd;
pub mod engine;
pub mod init;
pub mod metrics;
pub mod update;

use std::collections::HashMap;

use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;

use crate::check::{Batch, CheckedModel, Optimizer, Schedule, TrainConfig};
use crate::data::Dataset;
use crate::diag::{Diag, Span, messages};
use crate::ir::{self, Graph, TrainGraph};
use crate::plan;
pub use cd::PretrainReport;
pub use engine::{Backend, Compiled, Hypers, Store};
pub use metrics::Metrics;

/// Rows per evaluation chunk.
const EVAL_CHUNK: usize = 256;

/// One finished epoch.
#[derive(Debug, Clone, serde::Serialize)]
pub struct EpochReport {
    pub epoch: usize,
    pub lr: f64,
    /// Mean loss over the epoch's minibatches (for contrastive divergence,
    /// the reconstruction error).
    pub train_loss: f64,
    /// For an RBM trained by contrastive divergence: the pseudo-log-likelihood
    /// of (up to 500) training rows.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pseudo_likelihood: Option<f64>,
    pub validation: Option<Metrics>,
    pub test: Option<Metrics>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum TrainError {
    /// The loss or a parameter stopped being a finite number. `what` names
    /// the first value of the step that did; `span` is the source it came from.
    NonFinite { epoch: usize, step: usize, what: String, span: Option<Span> },
    /// The caller asked to stop (Ctrl-C) during this epoch.
    Interrupted { epoch: usize },
    /// A bug in nnc (a malformed graph); never a user mistake.
    Internal(String),
}

impl std::fmt::Display for TrainError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TrainError::NonFinite { epoch, step, what, .. } => write!(
                f,
                "training diverged at epoch {epoch}, step {step}: {what} is not a finite number; \
                 lower the learning rate, add clip_norm, or scale the inputs"
            ),
            TrainError::Interrupted { epoch } => write!(f, "interrupted during epoch {epoch}"),
            TrainError::Internal(m) => write!(f, "internal error: {m}"),
        }
    }
}

impl std::error::Error for TrainError {}

/// The training step the optimizer asks for: contrastive divergence on
/// every RBM, or a gradient step.
fn step_graph(forward: &Graph, config: &TrainConfig) -> Result<TrainGraph, String> {
    match config.optimizer {
        Optimizer::ContrastiveDivergence { k } => {
            let all: Vec<usize> = (0..forward.rbms.len()).collect();
            cd::train_graph(forward, &all, k, config.seed)
        }
        // Annealing proposes and judges weights outside the graph
        // (`anneal_step`); its step graph only lays out the store.
        Optimizer::Anneal { .. } => {
            let mut graph = forward.clone();
            let new_params =
                (0..graph.params.len()).map(|p| ir::lower::param_node(&mut graph, p, Span::default())).collect();
            Ok(TrainGraph { graph, grads: vec![], new_params, new_states: vec![] })
        }
        _ => update::train_graph(forward, config),
    }
}

/// (saved name, shape, (offset, length) in the store, required to load).
type Slot = (String, Vec<usize>, (usize, usize), bool);

/// A model being trained: its parameters, optimizer state and compiled steps.
pub struct Trainer {
    pub model: CheckedModel,
    pub config: TrainConfig,
    pub backend: Backend,
    pub param_names: Vec<String>,
    param_shapes: Vec<Vec<usize>>,
    states: Vec<ir::StateInfo>,
    /// The RBMs of the model, for pretraining and the pseudo-likelihood.
    rbms: Vec<ir::RbmInfo>,
    /// Whether the first RBM reads the model's input directly.
    rbm_reads_input: bool,
    store: Store,
    steps_done: u64,
    epochs_done: usize,
    train_steps: HashMap<usize, Compiled<TrainGraph>>,
    /// Simulated annealing's copy of the weights before a move, reused.
    anneal_backup: Vec<f32>,
    /// CD steps of greedy pretraining by (RBM, batch size).
    pretrain_steps: HashMap<(usize, usize), Compiled<TrainGraph>>,
    /// Forward graphs by (batch size, with loss).
    forwards: HashMap<(usize, bool), Compiled<Graph>>,
}

impl Trainer {
    /// Lowers the model, builds its training step and initialises the
    /// parameters from `config.seed`. Reports layers that cannot train yet.
    pub fn new(model: &CheckedModel, config: TrainConfig, backend: Backend) -> Result<Trainer, Diag> {
        if model.inputs.len() != 1 {
            return Err(messages::several_inputs(model.span));
        }
        // The configuration (with command-line overrides) is the model's from here on.
        let model = &CheckedModel { train: config.clone(), ..model.clone() };
        let probe = ir::lower(model, 1, true)?;
        let step = step_graph(&probe, &config).map_err(|e| messages::not_trainable_optimizer(model.span, &e))?;
        let mut store = Store::new(&step.graph, &plan::plan_train(&step));
        for (p, values) in init::init_params::<f32>(&probe.params, config.seed).iter().enumerate() {
            store.set_param(p, values);
        }
        Ok(Trainer {
            model: model.clone(),
            param_names: probe.params.iter().map(|p| p.name.clone()).collect(),
            param_shapes: probe.params.iter().map(|p| p.shape.clone()).collect(),
            states: step.graph.states.clone(),
            rbms: probe.rbms.clone(),
            rbm_reads_input: probe.rbms.first().is_some_and(|r| matches!(probe.node(r.visible).op, ir::Op::Input(_))),
            epochs_done: 0,
            config,
            backend,
            store,
            steps_done: 0,
            train_steps: HashMap::new(),
            pretrain_steps: HashMap::new(),
            anneal_backup: Vec::new(),
            forwards: HashMap::new(),
        })
    }

    /// The current parameters, one tensor each (PyTorch layouts: dense weights `[out, in]`).
    pub fn params(&self) -> Vec<Vec<f32>> {
        self.store.params()
    }

    /// Compiles (once per batch size) and returns the training step.
    fn train_step(&mut self, batch: usize) -> Result<&mut Compiled<TrainGraph>, TrainError> {
        if !self.train_steps.contains_key(&batch) {
            let forward = ir::lower(&self.model, batch, true).map_err(|d| TrainError::Internal(d.message))?;
            let step = step_graph(&forward, &self.config).map_err(TrainError::Internal)?;
            self.train_steps
                .insert(batch, Compiled::<TrainGraph>::new(step, self.backend).map_err(TrainError::Internal)?);
        }
        self.train_steps.get_mut(&batch).ok_or_else(|| TrainError::Internal("step cache".into()))
    }

    fn forward_graph(&mut self, batch: usize, with_loss: bool) -> Result<&mut Compiled<Graph>, TrainError> {
        let key = (batch, with_loss);
        if !self.forwards.contains_key(&key) {
            let mut forward = ir::lower(&self.model, batch, false).map_err(|d| TrainError::Internal(d.message))?;
            if !with_loss {
                forward.loss = None;
            }
            self.forwards.insert(key, Compiled::<Graph>::new(forward, self.backend).map_err(TrainError::Internal)?);
        }
        self.forwards.get_mut(&key).ok_or_else(|| TrainError::Internal("forward cache".into()))
    }

    /// The batch size for `rows` training rows and the order to visit them:
    /// shuffled by (seed, `stream`) unless one batch holds them all.
    fn batches(&self, rows: usize, stream: u64) -> (usize, Vec<usize>) {
        let batch = match self.config.batch {
            Batch::Full => rows,
            Batch::Size(b) => b.min(rows),
        };
        let mut order: Vec<usize> = (0..rows).collect();
        if batch < rows {
            let mut rng = ChaCha8Rng::seed_from_u64(self.config.seed);
            rng.set_stream(stream);
            order.shuffle(&mut rng);
        }
        (batch, order)
    }

    /// The learning rate of `epoch` (0-based) under the schedule.
    pub fn lr_at(&self, epoch: usize) -> f64 {
        let lr = self.config.lr;
        let e = epoch as f64;
        match self.config.schedule {
            Schedule::Constant => lr,
            Schedule::Step { every, gamma } => lr * gamma.powi((epoch / every) as i32),
            Schedule::Exponential { gamma } => lr * gamma.powf(e),
            Schedule::Cosine { min_lr } => {
                let t = e / self.config.epochs.max(1) as f64;
                min_lr + (lr - min_lr) * (1.0 + (std::f64::consts::PI * t).cos()) / 2.0
            }
        }
    }

    /// The scalars of the current step (`steps_done` counts it already).
    fn hypers(&self, lr: f64) -> Hypers {
        let t = self.steps_done as i32;
        let (bias1, bias2) = match self.config.optimizer {
            Optimizer::Adam { beta1, beta2, .. } => (1.0 / (1.0 - beta1.powi(t)), 1.0 / (1.0 - beta2.powi(t))),
            _ => (1.0, 1.0),
        };
        [lr as f32, bias1 as f32, bias2 as f32, t as f32]
    }

    /// One optimizer step on a batch; returns the batch loss.
    /// (Simulated annealing ignores `lr`: its temperature follows the epoch.)
    pub fn step(&mut self, x: &[f32], y: &[f32], rows: usize, lr: f64) -> Result<f64, TrainError> {
        if let Optimizer::Anneal { temperature, cooling, scale } = self.config.optimizer {
            return self.anneal_step(x, y, rows, temperature * cooling.powi(self.epochs_done as i32), scale);
        }
        self.steps_done += 1;
        let hypers = self.hypers(lr);
        let y: &[f32] = if self.model.targets.is_empty() { &[] } else { y };
        let mut store = std::mem::take(&mut self.store);
        let result =
            self.train_step(rows).and_then(|step| step.run(&mut store, x, y, &hypers).map_err(TrainError::Internal));
        self.store = store;
        Ok(f64::from(result?))
    }

    /// Trains the remaining epochs (all of them, or those after a restored
    /// checkpoint), evaluating on the validation and test sets (when given)
    /// and calling `on_epoch` after each.
    pub fn fit(
        &mut self,
        train: &Dataset,
        validation: Option<&Dataset>,
        test: Option<&Dataset>,
        mut on_epoch: impl FnMut(&EpochReport),
    ) -> Result<Vec<EpochReport>, TrainError> {
        let mut reports = Vec::new();
        while self.epochs_done < self.config.epochs {
            let report = self.fit_epoch(train, validation, test)?;
            on_epoch(&report);
            reports.push(report);
        }
        Ok(reports)
    }

    /// Trains one epoch. Its shuffle depends only on (seed, epoch), so a run
    /// resumed from a checkpoint continues exactly as an uninterrupted one.
    pub fn fit_epoch(
        &mut self,
        train: &Dataset,
        validation: Option<&Dataset>,
        test: Option<&Dataset>,
    ) -> Result<EpochReport, TrainError> {
        self.fit_epoch_with_progress(train, validation, test, &mut |_, _, _| true)
    }

    /// `fit_epoch`, calling `on_step(rows done, rows in the epoch, batch loss)`
    /// after every step. When it returns false the epoch is abandoned and
    /// the weights go back to where the epoch started.
    pub fn fit_epoch_with_progress(
        &mut self,
        train: &Dataset,
        validation: Option<&Dataset>,
        test: Option<&Dataset>,
        on_step: &mut dyn FnMut(usize, usize, f64) -> bool,
    ) -> Result<EpochReport, TrainError> {
        let epoch = self.epochs_done;
        let (batch, order) = self.batches(train.rows, epoch as u64);
        let lr = self.lr_at(epoch);
        let mut total = 0.0;
        // A diverging epoch falls back to the weights it started from.
        let snapshot = (self.store.clone(), self.steps_done);
        // One minibatch buffer for the whole epoch.
        let mut rows = train.select(&order[..0]);
        for (step, chunk) in order.chunks(batch).enumerate() {
            train.select_into(chunk, &mut rows);
            let loss = self.step(&rows.x, &rows.y, rows.rows, lr)?;
            if !loss.is_finite() {
                (self.store, self.steps_done) = snapshot.clone();
                let found = self.first_non_finite(train, &order, batch, step, lr);
                (self.store, self.steps_done) = snapshot;
                let (what, span) = found?.unwrap_or(("the loss".into(), None));
                return Err(TrainError::NonFinite { epoch: epoch + 1, step: step + 1, what, span });
            }
            total += loss * rows.rows as f64;
            if !on_step((step * batch + rows.rows).min(train.rows), train.rows, loss) {
                (self.store, self.steps_done) = snapshot;
                return Err(TrainError::Interrupted { epoch: epoch + 1 });
            }
        }
        if let Some(p) = self.store.params().iter().position(|w| w.iter().any(|v| !v.is_finite())) {
            let what = format!("parameter `{}`", self.param_names[p]);
            (self.store, self.steps_done) = snapshot;
            let step = order.len().div_ceil(batch);
            return Err(TrainError::NonFinite { epoch: epoch + 1, step, what, span: None });
        }
        self.epochs_done += 1;
        let validation = validation.map(|v| self.evaluate(v)).transpose()?;
        let test = test.map(|t| self.evaluate(t)).transpose()?;
        let pseudo_likelihood = self.rbm_pseudo_likelihood(train);
        Ok(EpochReport {
            epoch: epoch + 1,
            lr,
            train_loss: total / train.rows as f64,
            pseudo_likelihood,
            validation,
            test,
        })
    }

    /// Replays the epoch (from its starting weights, which the caller has
    /// restored) up to the step whose loss went non-finite, then runs that
    /// step in the interpreter and names the first value, in evaluation
    /// order, that is not a finite number: where the overflow began.
    fn first_non_finite(
        &mut self,
        train: &Dataset,
        order: &[usize],
        batch: usize,
        failing: usize,
        lr: f64,
    ) -> Result<Option<(String, Option<Span>)>, TrainError> {
        let mut rows = train.select(&order[..0]);
        for chunk in order.chunks(batch).take(failing) {
            train.select_into(chunk, &mut rows);
            self.step(&rows.x, &rows.y, rows.rows, lr)?;
        }
        train.select_into(&order[failing * batch..((failing + 1) * batch).min(order.len())], &mut rows);
        let step = self.train_step(rows.rows)?.graph.clone();
        self.steps_done += 1;
        let y: &[f32] = if self.model.targets.is_empty() { &[] } else { &rows.y };
        let values =
            engine::interpret_step(&step, &self.store, &rows.x, y, &self.hypers(lr)).map_err(TrainError::Internal)?;
        let forward_end = step.graph.loss.map_or(0, |l| l.0);
        let Some(first) = values.iter().position(|v| v.iter().any(|x| !x.is_finite())) else {
            return Ok(None);
        };
        let node = step.graph.node(ir::ValueId(first));
        let kind = if values[first].iter().any(|x| x.is_nan()) { "NaN" } else { "infinite" };
        let what = match node.op {
            ir::Op::Param(p) => format!("parameter `{}`", self.param_names[p]),
            ir::Op::Input(_) => "the input data".to_string(),
            _ if first <= forward_end => format!("the forward value `{}` ({kind})", node.op.name()),
            _ => format!("the backward value `{}` ({kind})", node.op.name()),
        };
        Ok(Some((what, Some(node.span))))
    }

    /// Epochs finished so far (including those of a restored checkpoint).
    pub fn epochs_done(&self) -> usize {
        self.epochs_done
    }

    /// Every parameter and state tensor: (name, shape, values). Parameters
    /// are named `<layer>.weight`/`<layer>.bias`, model buffers
    /// `<layer>.running_mean`, optimizer state `optimizer.<param>.<what>`.
    pub fn tensors(&self) -> Vec<(String, Vec<usize>, Vec<f32>)> {
        self.slots()
            .into_iter()
            .map(|(name, shape, (o, len), _)| (name, shape, self.store.data[o..o + len].to_vec()))
            .collect()
    }

    /// Every tensor a checkpoint holds, with its place in the store.
    fn slots(&self) -> Vec<Slot> {
        let params = self.param_names.iter().zip(&self.param_shapes).zip(&self.store.params);
        let params = params.map(|((n, s), &r)| (n.clone(), s.clone(), r, true));
        let states = self.states.iter().zip(&self.store.states).map(|(s, &r)| {
            let name = if s.buffer { s.name.clone() } else { format!("optimizer.{}", s.name) };
            (name, s.shape.clone(), r, s.buffer)
        });
        params.chain(states).collect()
    }

    /// Loads tensors saved by `tensors` (optimizer state optional), and the
    /// progress counters. Every missing tensor or wrong shape is an error
    /// naming the tensor and both shapes.
    pub fn restore(
        &mut self,
        saved: &HashMap<String, (Vec<usize>, Vec<f32>)>,
        epochs: usize,
        steps: u64,
    ) -> Result<(), String> {
        let wanted = self.slots();
        for (name, shape, _, required) in &wanted {
            match saved.get(name) {
                None if *required => {
                    return Err(format!(
                        "the checkpoint has no tensor `{name}` (the model needs one of shape {shape:?})"
                    ));
                }
                Some((found, _)) if found != shape => {
                    return Err(format!(
                        "tensor `{name}` has shape {found:?} in the checkpoint but {shape:?} in the model"
                    ));
                }
                _ => {}
            }
        }
        for (name, _, (o, len), _) in wanted {
            if let Some((_, values)) = saved.get(&name) {
                self.store.data[o..o + len].copy_from_slice(values);
            }
        }
        self.epochs_done = epochs;
        self.steps_done = steps;
        Ok(())
    }

    /// Optimizer steps taken so far.
    pub fn steps_done(&self) -> u64 {
        self.steps_done
    }

    /// Runs the model forward over `data` and returns the raw predictions
    /// (logits, probabilities or values), one row per sample.
    pub fn predict(&mut self, x: &[f32], rows: usize) -> Result<Vec<f32>, TrainError> {
        Ok(self.forward(x, &[], rows)?.0)
    }

    /// Forward pass in chunks: predictions and the summed loss (when targets are given).
    fn forward(&mut self, x: &[f32], y: &[f32], rows: usize) -> Result<(Vec<f32>, f64), TrainError> {
        let width = x.len() / rows.max(1);
        let target_width = y.len() / rows.max(1);
        let with_loss = !y.is_empty();
        let mut predictions = Vec::new();
        let mut loss_sum = 0.0;
        let mut start = 0;
        while start < rows {
            let n = EVAL_CHUNK.min(rows - start);
            let xs = &x[start * width..(start + n) * width];
            let ys: &[f32] = if with_loss && !self.model.targets.is_empty() {
                &y[start * target_width..(start + n) * target_width]
            } else {
                &[]
            };
            let mut store = std::mem::take(&mut self.store);
            let result =
                self.forward_graph(n, with_loss).and_then(|f| f.run(&mut store, xs, ys).map_err(TrainError::Internal));
            self.store = store;
            let (prediction, loss) = result?;
            predictions.extend_from_slice(&prediction);
            loss_sum += f64::from(loss.unwrap_or(0.0)) * n as f64;
            start += n;
        }
        Ok((predictions, loss_sum))
    }

    /// Loss and task metrics on a data set.
    pub fn evaluate(&mut self, data: &Dataset) -> Result<Metrics, TrainError> {
        let y: &[f32] = if self.model.targets.is_empty() { &data.x } else { &data.y };
        let (predictions, loss_sum) = self.forward(&data.x, y, data.rows)?;
        let kind = metrics::Task::of(&self.model);
        Ok(Metrics::compute(kind, &predictions, y, data.rows, loss_sum / data.rows as f64))
    }
}
