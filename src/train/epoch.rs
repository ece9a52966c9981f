//! One epoch of training: its steps (on the replicas, the whole epoch at
//! once, where they apply), the fall back to its starting weights when it
//! diverges or is stopped, and what it reports.

use std::time::Instant;

use super::{Metrics, TrainError, Trainer, health};
use crate::check::Schedule;
use crate::data::Dataset;

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
    /// Wall seconds of the epoch's training steps alone (no evaluation).
    pub train_seconds: f64,
    /// Each parameter's gradient norm and relative update, when tracked
    /// (`Trainer::track_health`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub health: Option<health::Health>,
}

/// Why an epoch's steps stopped before its end.
pub(super) enum Stopped {
    /// Step `step` (from 0) gave a loss that is not finite.
    NonFinite { step: usize },
    /// The caller asked to stop (Ctrl-C).
    Interrupted,
}

impl Trainer {
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
        if !self.target_scale_known && self.steps_done == 0 {
            self.fit_target_scale(train);
        }
        let epoch = self.epochs_done;
        let (batch, order) = self.batches(train.rows, epoch as u64);
        let per_epoch = order.len().div_ceil(batch);
        let mut lr = self.lr_at(epoch);
        let mut total = 0.0;
        // A diverging epoch falls back to the weights it started from.
        let snapshot = (self.model.store.clone(), self.steps_done);
        // Health counts this epoch's steps only (not those of one abandoned).
        if let Some(h) = self.health.as_mut() {
            h.finish_epoch();
        }
        let started = Instant::now();
        if let Some(replicas) = self.replicas.as_mut() {
            replicas.unsync();
        }
        // Each step's loss, added to the total; whether to go on.
        let mut after_step = |step: usize, rows: usize, loss: f64, _finished| {
            total += loss * rows as f64;
            on_step((step * batch + rows).min(train.rows), train.rows, loss)
        };
        let stopped = if self.replicates_epoch(order.len(), batch) {
            let lrs: Vec<f64> =
                (0..per_epoch).map(|i| self.lr_of_step(epoch, self.steps_done + i as u64, per_epoch)).collect();
            let (stopped, steps) = self.epoch_replicated(train, &order, batch, &lrs, &mut after_step)?;
            lr = lrs[steps.saturating_sub(1)];
            stopped
        } else {
            self.steps_one_by_one(train, &order, (epoch, batch, per_epoch), &mut lr, &mut after_step)?
        };
        match stopped {
            Some(Stopped::NonFinite { step }) => {
                (self.model.store, self.steps_done) = snapshot.clone();
                let found = self.first_non_finite(train, &order, (epoch, batch), step);
                (self.model.store, self.steps_done) = snapshot;
                let (what, span) = found?.unwrap_or(("the loss".into(), None));
                return Err(TrainError::NonFinite { epoch: epoch + 1, step: step + 1, what, span });
            }
            Some(Stopped::Interrupted) => {
                (self.model.store, self.steps_done) = snapshot;
                return Err(TrainError::Interrupted { epoch: epoch + 1 });
            }
            None => {}
        }
        if let Some(p) = self.model.store.params().iter().position(|w| w.iter().any(|v| !v.is_finite())) {
            let what = format!("parameter `{}`", self.model.param_names[p]);
            (self.model.store, self.steps_done) = snapshot;
            let step = order.len().div_ceil(batch);
            return Err(TrainError::NonFinite { epoch: epoch + 1, step, what, span: None });
        }
        let train_seconds = started.elapsed().as_secs_f64();
        let health = self.health.as_mut().map(health::HealthSums::finish_epoch);
        self.epochs_done += 1;
        let validation = validation.map(|v| self.evaluate(v)).transpose()?;
        let test = test.map(|t| self.evaluate(t)).transpose()?;
        if let Schedule::Plateau { patience, threshold, .. } = self.config.schedule {
            let watched = validation.as_ref().map_or(total / train.rows as f64, |v| v.loss);
            self.plateau.observe(watched, patience, threshold);
        }
        let pseudo_likelihood = self.rbm_pseudo_likelihood(train);
        Ok(EpochReport {
            epoch: epoch + 1,
            lr,
            train_loss: total / train.rows as f64,
            pseudo_likelihood,
            validation,
            test,
            train_seconds,
            health,
        })
    }

    /// `fit_epoch`'s steps one at a time on this thread (split over the
    /// replicas step by step where they apply): each batch's rows of this
    /// process, the learning rate of each step left in `lr`, and
    /// `after_step(step, rows, loss, when it finished)`, false to stop.
    /// Returns why the steps stopped early, if they did.
    fn steps_one_by_one(
        &mut self,
        train: &Dataset,
        order: &[usize],
        (epoch, batch, per_epoch): (usize, usize, usize),
        lr: &mut f64,
        after_step: &mut dyn FnMut(usize, usize, f64, Instant) -> bool,
    ) -> Result<Option<Stopped>, TrainError> {
        // One minibatch buffer for the whole epoch.
        let mut rows = train.select(&order[..0]);
        for (step, chunk) in order.chunks(batch).enumerate() {
            // This process's rows of the batch (all of them, alone).
            let shard = self.shard(chunk.len());
            train.select_into(&chunk[shard.first..shard.first + shard.rows], &mut rows);
            let y: &[f32] = if self.model.checked.targets.is_empty() { &[] } else { &rows.y };
            *lr = self.lr_of_step(epoch, self.steps_done, per_epoch);
            let loss = if self.replicates(chunk.len()) {
                self.step_replicated(&rows.x, y, chunk.len(), *lr)?
            } else {
                self.step_own(&rows.x, y, chunk.len(), *lr)?
            };
            if !loss.is_finite() {
                return Ok(Some(Stopped::NonFinite { step }));
            }
            let mut go_on = after_step(step, chunk.len(), loss, Instant::now());
            if let Some(team) = &self.team {
                // One process stopping (Ctrl-C) stops them all at the same step.
                let mut stops = [f64::from(u8::from(!go_on))];
                team.sum(&mut stops);
                go_on = stops[0] == 0.0;
            }
            if !go_on {
                return Ok(Some(Stopped::Interrupted));
            }
        }
        Ok(None)
    }
}
