//! Training: the optimizer step as IR (`update`), seeded initialisation
//! (`init`), metrics, and the trainer loop that feeds minibatches through
//! the reference interpreter.

pub mod init;
pub mod metrics;
pub mod update;

use std::collections::HashMap;

use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;

use crate::check::{Batch, CheckedModel, Optimizer, Schedule, TrainConfig};
use crate::data::Dataset;
use crate::diag::{Diag, messages};
use crate::interp::{self, Bindings};
use crate::ir::{self, Graph, TrainGraph};
pub use metrics::Metrics;

/// Rows per evaluation chunk.
const EVAL_CHUNK: usize = 256;

/// One finished epoch.
#[derive(Debug, Clone, serde::Serialize)]
pub struct EpochReport {
    pub epoch: usize,
    pub lr: f64,
    /// Mean loss over the epoch's minibatches.
    pub train_loss: f64,
    pub validation: Option<Metrics>,
    pub test: Option<Metrics>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum TrainError {
    /// The loss or a parameter stopped being a finite number.
    NonFinite { epoch: usize, step: usize, what: String },
    /// A bug in nnc (a malformed graph); never a user mistake.
    Internal(String),
}

impl std::fmt::Display for TrainError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TrainError::NonFinite { epoch, step, what } => write!(
                f,
                "training diverged at epoch {epoch}, step {step}: {what} is not a finite number; \
                 lower the learning rate, add clip_norm, or scale the inputs"
            ),
            TrainError::Internal(m) => write!(f, "internal error: {m}"),
        }
    }
}

/// A model being trained: its parameters, optimizer state and compiled steps.
pub struct Trainer {
    pub model: CheckedModel,
    pub config: TrainConfig,
    pub params: Vec<Vec<f32>>,
    pub param_names: Vec<String>,
    states: Vec<Vec<f32>>,
    steps_done: u64,
    train_graphs: HashMap<usize, TrainGraph>,
    eval_graphs: HashMap<usize, Graph>,
}

impl Trainer {
    /// Lowers the model, builds its training step and initialises the
    /// parameters from `config.seed`. Reports layers that cannot train yet.
    pub fn new(model: &CheckedModel, config: TrainConfig) -> Result<Trainer, Diag> {
        if model.inputs.len() != 1 {
            return Err(messages::several_inputs(model.span));
        }
        let probe = ir::lower(model, 1)?;
        let step =
            update::train_graph(&probe, &config).map_err(|e| messages::not_trainable_optimizer(model.span, &e))?;
        let params = init::init_params::<f32>(&probe.params, config.seed);
        let states = step.graph.states.iter().map(|s| vec![0.0; ir::numel(&s.shape)]).collect();
        Ok(Trainer {
            model: model.clone(),
            param_names: probe.params.iter().map(|p| p.name.clone()).collect(),
            config,
            params,
            states,
            steps_done: 0,
            train_graphs: HashMap::from([(1, step)]),
            eval_graphs: HashMap::new(),
        })
    }

    fn train_graph(&mut self, batch: usize) -> Result<&TrainGraph, TrainError> {
        if !self.train_graphs.contains_key(&batch) {
            let forward = ir::lower(&self.model, batch).map_err(|d| TrainError::Internal(d.message))?;
            let step = update::train_graph(&forward, &self.config).map_err(TrainError::Internal)?;
            if cfg!(debug_assertions) {
                ir::verify(&step.graph).map_err(TrainError::Internal)?;
            }
            self.train_graphs.insert(batch, step);
        }
        Ok(&self.train_graphs[&batch])
    }

    fn eval_graph(&mut self, batch: usize) -> Result<&Graph, TrainError> {
        if !self.eval_graphs.contains_key(&batch) {
            let forward = ir::lower(&self.model, batch).map_err(|d| TrainError::Internal(d.message))?;
            self.eval_graphs.insert(batch, forward);
        }
        Ok(&self.eval_graphs[&batch])
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

    /// One optimizer step on a batch; returns the batch loss.
    pub fn step(
        &mut self,
        x: &[f32],
        y: &[f32],
        rows: usize,
        lr: f64,
        epoch: usize,
        step: usize,
    ) -> Result<f64, TrainError> {
        self.steps_done += 1;
        let t = self.steps_done as i32;
        let (bias1, bias2) = match self.config.optimizer {
            Optimizer::Adam { beta1, beta2, .. } => (1.0 / (1.0 - beta1.powi(t)), 1.0 / (1.0 - beta2.powi(t))),
            _ => (1.0, 1.0),
        };
        let has_target = !self.model.targets.is_empty();
        let params = std::mem::take(&mut self.params);
        let states = std::mem::take(&mut self.states);
        let graph = self.train_graph(rows)?;
        let targets: Vec<&[f32]> = if has_target { vec![y] } else { vec![] };
        let bindings = Bindings {
            inputs: &[x],
            targets: &targets,
            params: &params,
            states: &states,
            lr: lr as f32,
            bias1: bias1 as f32,
            bias2: bias2 as f32,
        };
        let mut values = interp::run(&graph.graph, &bindings).map_err(TrainError::Internal)?;
        let loss_id = graph.graph.loss.ok_or_else(|| TrainError::Internal("no loss".into()))?;
        let loss = f64::from(values[loss_id.0][0]);
        let new_params: Vec<Vec<f32>> = graph.new_params.iter().map(|v| std::mem::take(&mut values[v.0])).collect();
        let new_states: Vec<Vec<f32>> = graph.new_states.iter().map(|v| std::mem::take(&mut values[v.0])).collect();
        let names = self.param_names.clone();
        // Keep the last good weights when anything went non-finite.
        self.params = params;
        self.states = states;
        if !loss.is_finite() {
            return Err(TrainError::NonFinite { epoch, step, what: "the loss".into() });
        }
        if let Some(p) = new_params.iter().position(|w| w.iter().any(|v| !v.is_finite())) {
            return Err(TrainError::NonFinite { epoch, step, what: format!("parameter `{}`", names[p]) });
        }
        self.params = new_params;
        self.states = new_states;
        Ok(loss)
    }

    /// Trains for `config.epochs` epochs, evaluating on the validation and
    /// test sets (when given) and calling `on_epoch` after each.
    pub fn fit(
        &mut self,
        train: &Dataset,
        validation: Option<&Dataset>,
        test: Option<&Dataset>,
        mut on_epoch: impl FnMut(&EpochReport),
    ) -> Result<Vec<EpochReport>, TrainError> {
        let batch = match self.config.batch {
            Batch::Full => train.rows,
            Batch::Size(b) => b.min(train.rows),
        };
        let mut rng = ChaCha8Rng::seed_from_u64(self.config.seed);
        let mut order: Vec<usize> = (0..train.rows).collect();
        let mut reports = Vec::new();
        for epoch in 0..self.config.epochs {
            let lr = self.lr_at(epoch);
            if batch < train.rows {
                order.shuffle(&mut rng);
            }
            let mut total = 0.0;
            for (step, chunk) in order.chunks(batch).enumerate() {
                let rows = train.select(chunk);
                total += self.step(&rows.x, &rows.y, rows.rows, lr, epoch + 1, step + 1)? * rows.rows as f64;
            }
            let validation = validation.map(|v| self.evaluate(v)).transpose()?;
            let test = test.map(|t| self.evaluate(t)).transpose()?;
            let report = EpochReport { epoch: epoch + 1, lr, train_loss: total / train.rows as f64, validation, test };
            on_epoch(&report);
            reports.push(report);
        }
        Ok(reports)
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
        let mut predictions = Vec::new();
        let mut loss_sum = 0.0;
        let mut start = 0;
        while start < rows {
            let n = EVAL_CHUNK.min(rows - start);
            let params = std::mem::take(&mut self.params);
            let xs = &x[start * width..(start + n) * width];
            let ys: &[f32] = if y.is_empty() { &[] } else { &y[start * target_width..(start + n) * target_width] };
            let targets: Vec<&[f32]> = if self.model.targets.is_empty() { vec![] } else { vec![ys] };
            let graph = self.eval_graph(n)?;
            let mut graph_for_run = graph.clone();
            if y.is_empty() {
                // Without targets only the prediction is computed.
                graph_for_run.nodes.truncate(graph.prediction.0 + 1);
                graph_for_run.loss = None;
            }
            let b = Bindings {
                inputs: &[xs],
                targets: &targets,
                params: &params,
                states: &[],
                lr: 0.0,
                bias1: 1.0,
                bias2: 1.0,
            };
            let result = interp::run(&graph_for_run, &b);
            self.params = params;
            let values = result.map_err(TrainError::Internal)?;
            predictions.extend_from_slice(&values[graph_for_run.prediction.0]);
            if let Some(l) = graph_for_run.loss {
                loss_sum += f64::from(values[l.0][0]) * n as f64;
            }
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
