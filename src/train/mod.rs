//! Training: the loops around a compiled step — epochs, seeded minibatch
//! order, learning-rate schedules, metrics, checkpoints' contents, greedy
//! pretraining (`cd`) and simulated annealing (`anneal`). The step itself
//! comes from `pipeline::compile_step`; the weights live in a runtime
//! `Model`, which the `Trainer` wraps.

mod anneal;
pub mod cd;
mod divergence;
mod epoch;
pub mod gap;
pub mod health;

pub mod metrics;
pub mod plateau;
mod replicas;

use std::collections::HashMap;

use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;

use crate::check::{Batch, CheckedModel, Optimizer, Schedule, TrainConfig};
use crate::data::Dataset;
use crate::diag::{Diag, Span, messages};
pub use crate::exec::{Backend, Compiled, Hypers, Store};
use crate::ir::{self, Shard, TrainGraph};
use crate::model::{Model, Slot, restore_slots, tensors_of};
use crate::pipeline;
pub use cd::PretrainReport;
pub use epoch::EpochReport;
use epoch::Stopped;
pub use metrics::Metrics;

/// The rows `shard` of `values`, a batch of `rows` rows.
fn rows_of(values: &[f32], rows: usize, shard: Shard) -> &[f32] {
    let width = values.len() / rows.max(1);
    &values[shard.first * width..(shard.first + shard.rows) * width]
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
    /// The step could not be compiled; the message is complete as it is.
    Compile(String),
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
            TrainError::Compile(m) => write!(f, "{m}"),
        }
    }
}

impl std::error::Error for TrainError {}

/// A model being trained: the runtime model, its optimizer state (in the
/// model's store, after its own tensors) and the compiled steps.
pub struct Trainer {
    pub model: Model,
    pub config: TrainConfig,
    /// Every state tensor of the step: the model's buffers, then the optimizer's.
    states: Vec<ir::StateInfo>,
    /// The RBMs of the model, for pretraining and the pseudo-likelihood.
    rbms: Vec<ir::RbmInfo>,
    /// Whether the first RBM reads the model's input directly.
    rbm_reads_input: bool,
    steps_done: u64,
    epochs_done: usize,
    train_steps: HashMap<usize, Compiled<TrainGraph>>,
    /// Simulated annealing's copy of the weights before a move, reused.
    anneal_backup: Vec<f32>,
    /// CD steps of greedy pretraining by (RBM, batch size).
    pretrain_steps: HashMap<(usize, usize), Compiled<TrainGraph>>,
    /// Per-parameter health of the current epoch, when tracked.
    health: Option<health::HealthSums>,
    /// The processes training together with this one, if any.
    team: Option<Box<dyn Team>>,
    /// The copies of the step that split each batch over the cores, once started.
    replicas: Option<replicas::Replicas>,
    /// Whether `standardize_target`'s buffers hold the training rows'
    /// statistics (fitted, or restored from a checkpoint).
    target_scale_known: bool,
    /// Where `schedule = plateau(…)` stands.
    plateau: plateau::Plateau,
}

/// The processes a trainer trains with, data-parallel (`nnc train` under
/// MPI): each holds the same weights, computes its share of every batch's
/// rows (`Shard::part`) and applies the same update, that of the whole
/// batch. Batches with fewer rows than processes run whole on each.
pub trait Team: Send {
    /// This process's place, 0 to `size() − 1`.
    fn rank(&self) -> usize;
    fn size(&self) -> usize;
    /// Sums `values` over the team, in place, on every process.
    fn sum(&self, values: &mut [f64]);
    /// Copies rank 0's `values` to every process.
    fn broadcast(&self, values: &mut [f32]);
}

impl Trainer {
    /// Lays out the model and its optimizer state and initialises the
    /// parameters from `config.seed`. Reports models that cannot train.
    pub fn new(model: &CheckedModel, config: TrainConfig, backend: Backend) -> Result<Trainer, Diag> {
        // The configuration (with command-line overrides) is the model's from here on.
        let checked = CheckedModel { train: config.clone(), ..model.clone() };
        let mut model = Model::new(&checked, backend)?;
        let probe = pipeline::step_graph(&checked, &config, 1)?;
        model.store.extend_to(&probe.graph).map_err(|e| messages::internal(checked.span, &e))?;
        let graph = &probe.graph;
        Ok(Trainer {
            rbm_reads_input: graph.rbms.first().is_some_and(|r| matches!(graph.node(r.visible).op, ir::Op::Input(_))),
            rbms: graph.rbms.clone(),
            states: probe.graph.states,
            model,
            config,
            epochs_done: 0,
            steps_done: 0,
            train_steps: HashMap::new(),
            pretrain_steps: HashMap::new(),
            anneal_backup: Vec::new(),
            health: None,
            team: None,
            replicas: None,
            target_scale_known: false,
            plateau: plateau::Plateau::default(),
        })
    }

    /// Trains with `team` from now on: compiles its steps for this process's
    /// share of each batch and takes rank 0's parameters and optimizer
    /// state, so that every process starts from the same place. Only
    /// gradient optimizers train data-parallel.
    pub fn join(&mut self, team: Box<dyn Team>) -> Result<(), String> {
        if !self.has_gradients() {
            return Err("only gradient optimizers (gd, sgd, momentum, nesterov, adam) train on several processes; \
                 run contrastive divergence and annealing as one process"
                .into());
        }
        team.broadcast(self.model.store.data_mut());
        self.team = Some(team);
        self.train_steps.clear();
        Ok(())
    }

    /// Which rows of a batch of `batch` rows this process computes.
    fn shard(&self, batch: usize) -> Shard {
        match &self.team {
            Some(team) if team.size() > 1 && batch >= team.size() => Shard::part(batch, team.rank(), team.size()),
            _ => Shard::whole(batch),
        }
    }

    /// Whether the optimizer follows gradients (and so has them to report or share).
    fn has_gradients(&self) -> bool {
        matches!(
            self.config.optimizer,
            Optimizer::Gd
                | Optimizer::Sgd
                | Optimizer::Momentum { .. }
                | Optimizer::Nesterov { .. }
                | Optimizer::Adam { .. }
        )
    }

    /// `standardize_target`'s column means and deviations, from the
    /// training rows. The first epoch of a fresh run does it by itself; a
    /// restored run keeps the saved ones.
    pub fn fit_target_scale(&mut self, train: &Dataset) {
        self.model.fit_target_scale(train);
        self.target_scale_known = true;
    }

    /// Reports each parameter's gradient norm and relative update in every
    /// epoch from now on (a few more reductions per step; the updates are
    /// unchanged). Only gradient optimizers have gradients to report.
    pub fn track_health(&mut self) {
        if self.has_gradients() && self.health.is_none() {
            self.health = Some(health::HealthSums::new(self.model.param_names.clone(), &self.model.checked));
            // Steps compiled so far observe nothing.
            self.train_steps.clear();
            self.replicas = None;
        }
    }

    /// The health of the steps taken since the last report (an epoch's or
    /// this call's), and a fresh start: for loops that call `step`
    /// themselves. `None` unless `track_health` was called.
    pub fn take_health(&mut self) -> Option<health::Health> {
        self.health.as_mut().map(health::HealthSums::finish_epoch)
    }

    /// The current parameters, one tensor each (PyTorch layouts: dense weights `[out, in]`).
    pub fn params(&self) -> Vec<Vec<f32>> {
        self.model.params()
    }

    /// Compiles the training step for batches of `batch` rows (the
    /// replicas' steps, when they take them) now rather than at its first use.
    pub fn prepare(&mut self, batch: usize) -> Result<(), TrainError> {
        if self.replicates(batch) { self.compile_replicas(batch) } else { self.train_step(batch).map(|_| ()) }
    }

    /// Compiles (once per batch size) and returns the training step.
    fn train_step(&mut self, batch: usize) -> Result<&mut Compiled<TrainGraph>, TrainError> {
        if !self.train_steps.contains_key(&batch) {
            let (observe, shard) = (self.health.is_some(), self.shard(batch));
            let step =
                pipeline::compile_step(&self.model.checked, &self.config, (shard, None), observe, self.model.backend)
                    .map_err(|d| TrainError::Compile(d.message))?;
            // Activation layers the step could not map to its nodes go unreported.
            let observed: usize =
                step.graph.observed.iter().map(|&v| crate::shape::numel(&step.graph.graph.node(v).shape)).sum();
            if let Some(h) = self.health.as_mut().filter(|h| h.observed_len() != observed) {
                h.without_activations();
            }
            self.train_steps.insert(batch, step);
        }
        self.train_steps.get_mut(&batch).ok_or_else(|| TrainError::Internal("step cache".into()))
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
            Schedule::Plateau { factor, min_lr, .. } => self.plateau.rate(lr, factor, min_lr),
        }
    }

    /// Where `schedule = plateau(…)` stands (for checkpoints).
    pub fn plateau(&self) -> plateau::Plateau {
        self.plateau
    }

    /// Continues a plateau schedule from a checkpoint's state.
    pub fn set_plateau(&mut self, state: plateau::Plateau) {
        self.plateau = state;
    }

    /// The rate of the step after `steps_done` steps, `per_epoch` to an
    /// epoch: the schedule's for `epoch`, times (s + 1)/(warmup · per_epoch)
    /// during the warmup's first steps.
    fn lr_of_step(&self, epoch: usize, steps_done: u64, per_epoch: usize) -> f64 {
        let warmup_steps = (self.config.warmup * per_epoch) as f64;
        let ramp = ((steps_done + 1) as f64 / warmup_steps).min(1.0);
        self.lr_at(epoch) * if self.config.warmup > 0 { ramp } else { 1.0 }
    }

    /// The scalars of the current step (`steps_done` counts it already).
    fn hypers(&self, lr: f64) -> Hypers {
        self.hypers_of_step(self.steps_done, lr)
    }

    /// The scalars of step `t` (counted from 1).
    fn hypers_of_step(&self, t: u64, lr: f64) -> Hypers {
        let t = t as i32;
        let (bias1, bias2) = match self.config.optimizer {
            Optimizer::Adam { beta1, beta2, .. } => (1.0 / (1.0 - beta1.powi(t)), 1.0 / (1.0 - beta2.powi(t))),
            _ => (1.0, 1.0),
        };
        // A step writes the weights it reads: nothing made from them is kept.
        let weights = nnc_runtime::UNVERSIONED;
        Hypers { lr: lr as f32, bias1: bias1 as f32, bias2: bias2 as f32, step: t as f32, weights }
    }

    /// One optimizer step on a batch; returns the batch loss.
    /// (Simulated annealing ignores `lr`: its temperature follows the epoch.)
    pub fn step(&mut self, x: &[f32], y: &[f32], rows: usize, lr: f64) -> Result<f64, TrainError> {
        let (x, y) = self.own_rows(x, y, rows);
        self.step_own(x, y, rows, lr)
    }

    /// `step` given only this process's rows (`own_rows`) of a batch of `rows`.
    fn step_own(&mut self, x: &[f32], y: &[f32], rows: usize, lr: f64) -> Result<f64, TrainError> {
        if let Optimizer::Anneal { temperature, cooling, scale } = self.config.optimizer {
            return self.anneal_step(x, y, rows, temperature * cooling.powi(self.epochs_done as i32), scale);
        }
        self.steps_done += 1;
        // The store moves on without the replicas' copies.
        if let Some(replicas) = self.replicas.as_mut() {
            replicas.unsync();
        }
        // Where the MPI tests make one rank fail (`cluster`'s FAILPOINTS).
        #[cfg(feature = "mpi")]
        fail::fail_point!("train-step");
        let hypers = self.hypers(lr);
        // Compiled (observing health or not) before the sums are taken out.
        self.train_step(rows)?;
        let mut store = std::mem::take(&mut self.model.store);
        let mut health = self.health.take();
        let observed = health.as_mut().map_or(&mut [][..], |h| &mut h.observed[..]);
        let result = self
            .train_step(rows)
            .and_then(|step| step.run_observed(&mut store, x, y, &hypers, observed).map_err(TrainError::Internal));
        self.model.store = store;
        let mut loss = match result {
            Ok(loss) => f64::from(loss),
            Err(e) => {
                self.health = health;
                return Err(e);
            }
        };
        if let (Some(team), true) = (&self.team, self.shard(rows).is_split()) {
            // Each process's loss is its rows' share of the batch's mean, and
            // its activation sums cover its rows: the batch's are their sums
            // (one collective for both).
            let sums = health.as_mut().map_or(&mut [][..], |h| h.activation_sums_mut());
            let mut all: Vec<f64> = std::iter::once(loss).chain(sums.iter().map(|&v| f64::from(v))).collect();
            team.sum(&mut all);
            loss = all[0];
            sums.iter_mut().zip(&all[1..]).for_each(|(s, &v)| *s = v as f32);
        }
        if let Some(h) = health.as_mut() {
            h.add_step(rows);
        }
        self.health = health;
        Ok(loss)
    }

    /// The rows of the batch (`x`, `y`: `rows` rows) this process computes,
    /// and no targets for a model without any.
    fn own_rows<'a>(&self, x: &'a [f32], y: &'a [f32], rows: usize) -> (&'a [f32], &'a [f32]) {
        let shard = self.shard(rows);
        (rows_of(x, rows, shard), if self.model.checked.targets.is_empty() { &[] } else { rows_of(y, rows, shard) })
    }

    /// Epochs finished so far (including those of a restored checkpoint).
    pub fn epochs_done(&self) -> usize {
        self.epochs_done
    }

    /// Every parameter and state tensor: (name, shape, values). Parameters
    /// are named `<layer>.weight`/`<layer>.bias`, model buffers
    /// `<layer>.running_mean`, optimizer state `optimizer.<param>.<what>`.
    pub fn tensors(&self) -> Vec<(String, Vec<usize>, Vec<f32>)> {
        tensors_of(&self.model.store, self.slots())
    }

    /// The names `tensors` gives, without their values.
    pub fn tensor_names(&self) -> Vec<String> {
        self.slots().into_iter().map(|slot| slot.name).collect()
    }

    /// The model's tensors, then the optimizer's (optional when loading).
    fn slots(&self) -> Vec<Slot> {
        let mut slots = self.model.slots();
        let optimizer = self.states.iter().zip(&self.model.store.layout.states).filter(|(s, _)| !s.buffer);
        slots.extend(optimizer.map(|(s, &range)| Slot {
            name: format!("optimizer.{}", s.name),
            shape: s.shape.clone(),
            range,
            required: false,
        }));
        slots
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
        let slots = self.slots();
        restore_slots(&mut self.model.store, &slots, saved)?;
        self.target_scale_known = true;
        self.epochs_done = epochs;
        self.steps_done = steps;
        Ok(())
    }

    /// Optimizer steps taken so far.
    pub fn steps_done(&self) -> u64 {
        self.steps_done
    }

    /// Runs the model forward and returns the raw predictions (logits,
    /// probabilities or values), one row per sample.
    pub fn predict(&mut self, x: &[f32], rows: usize) -> Result<Vec<f32>, TrainError> {
        self.model.predict(x, rows).map_err(TrainError::Internal)
    }

    /// Loss and task metrics on a data set.
    pub fn evaluate(&mut self, data: &Dataset) -> Result<Metrics, TrainError> {
        evaluate(&mut self.model, data).map_err(TrainError::Internal)
    }
}

/// Loss and task metrics of `model` on a data set, from forward passes
/// over chunks of its rows, each chunk's predictions reduced to what the
/// metrics need before the next (so the predictions of every row are never
/// held at once).
pub fn evaluate(model: &mut Model, data: &Dataset) -> Result<Metrics, String> {
    let y: &[f32] = if model.checked.targets.is_empty() { &data.x } else { &data.y };
    let rows = data.rows;
    let outputs = metrics::outputs(&model.checked);
    if outputs.len() < 2 {
        let mut tally = metrics::Tally::new(metrics::Task::of(&model.checked));
        let target_width = y.len() / rows.max(1);
        let loss_sum = model.forward_chunks(&data.x, y, rows, |predictions, at| {
            tally.add(predictions, &y[at.start * target_width..at.end * target_width]);
        })?;
        return Ok(Metrics::from_tally(tally, y, rows, loss_sum / rows as f64));
    }
    // Several outputs: each scored on its columns of the predictions and its target's of the data.
    let columns = |all: &[f32], row_width: usize, at: &std::ops::Range<usize>| -> Vec<f32> {
        all.chunks(row_width.max(1)).flat_map(|row| row[at.clone()].iter().copied()).collect()
    };
    let mut scored: Vec<_> = outputs
        .into_iter()
        .filter_map(|output| {
            let (side, at) = output.target.clone()?;
            let targets = match side {
                metrics::Side::Inputs => columns(&data.x, data.width, &at),
                metrics::Side::Targets => columns(&data.y, data.target_width, &at),
            };
            let tally = metrics::Tally::new(output.task);
            Some((output, targets, tally, metrics::OwnLoss::default()))
        })
        .collect();
    let loss_sum = model.forward_chunks(&data.x, y, rows, |predictions, at| {
        let width = predictions.len() / at.len().max(1);
        for (output, targets, tally, own) in &mut scored {
            let p = columns(predictions, width, &output.columns);
            let per_row = targets.len() / rows.max(1);
            let t = &targets[at.start * per_row..at.end * per_row];
            tally.add(&p, t);
            own.add(output, &p, t);
        }
    })?;
    let mut total = Metrics::compute(metrics::Task::Reconstruction, &[], &[], rows, loss_sum / rows as f64);
    for (output, targets, tally, own) in scored {
        let metrics = Metrics::from_tally(tally, &targets, rows, own.mean());
        total.outputs.push(metrics::OutputMetrics { name: output.name, metrics });
    }
    Ok(total)
}
