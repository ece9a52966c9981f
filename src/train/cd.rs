//! Greedy layer-wise pretraining of deep belief networks by contrastive
//! divergence (the step graph is `optim::cd_step`), and the
//! pseudo-log-likelihood reported per epoch.

use super::{TrainError, Trainer};
use crate::check::{Optimizer, Pretrain};
use crate::data::Dataset;
use crate::pipeline;

/// The pseudo-log-likelihood of binary rows under an RBM (weight `[H, V]`):
/// the mean over rows of V·log σ(F(x̃) − F(x)), where x̃ flips one visible
/// unit chosen by a hash of the row and F is the free energy
/// F(v) = −v·c − Σⱼ log(1 + exp(v·Wⱼ + bⱼ)). Higher is better.
pub fn pseudo_likelihood(weight: &[f32], hidden_bias: &[f32], visible_bias: &[f32], rows: &[f32], seed: u64) -> f64 {
    let visible = visible_bias.len();
    let free_energy = |v: &[f64]| -> f64 {
        let linear: f64 = v.iter().zip(visible_bias).map(|(x, &c)| x * f64::from(c)).sum();
        let softplus: f64 = weight
            .chunks_exact(visible)
            .zip(hidden_bias)
            .map(|(w, &b)| {
                let z = f64::from(b) + v.iter().zip(w).map(|(x, &w)| x * f64::from(w)).sum::<f64>();
                if z > 30.0 { z } else { z.exp().ln_1p() }
            })
            .sum();
        -linear - softplus
    };
    let mut total = 0.0;
    let count = rows.len() / visible.max(1);
    for (r, row) in rows.chunks_exact(visible).enumerate() {
        let x: Vec<f64> = row.iter().map(|&v| f64::from(v)).collect();
        let mut flipped = x.clone();
        let i = (nnc_runtime::kernels::uniform(seed, r as u64, 0) * visible as f64) as usize % visible;
        flipped[i] = 1.0 - flipped[i];
        let d = free_energy(&flipped) - free_energy(&x);
        // log σ(d), computed stably.
        total += visible as f64 * -(if d > 0.0 { (-d).exp().ln_1p() } else { -d + d.exp().ln_1p() });
    }
    total / count.max(1) as f64
}

/// One epoch of greedy pretraining of one RBM.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PretrainReport {
    /// The RBM's layer name.
    pub layer: String,
    pub epoch: usize,
    pub reconstruction_error: f64,
}

impl Trainer {
    /// The pseudo-log-likelihood of the first RBM on (up to 500) rows of
    /// `data`, when contrastive divergence trains it on the model's input.
    pub(super) fn rbm_pseudo_likelihood(&self, data: &Dataset) -> Option<f64> {
        let rbm = self.rbms.first().filter(|_| self.rbm_reads_input)?;
        if !matches!(self.config.optimizer, Optimizer::ContrastiveDivergence { .. }) {
            return None;
        }
        let params = self.model.params();
        let rows = &data.x[..data.width * data.rows.min(500)];
        let (w, b, c) = (&params[rbm.weight], &params[rbm.hidden_bias], &params[rbm.visible_bias]);
        Some(pseudo_likelihood(w, b, c, rows, self.config.seed))
    }

    /// Greedy layer-wise pretraining (`pretrain = cd(k, epochs)`): each RBM
    /// in turn, bottom up, trained by CD-k on what the RBMs below it make of
    /// the data. `on_epoch` sees every epoch's report.
    pub fn pretrain(
        &mut self,
        train: &Dataset,
        on_epoch: &mut dyn FnMut(&PretrainReport),
    ) -> Result<Vec<PretrainReport>, TrainError> {
        let Some(Pretrain { k, epochs, lr }) = self.config.pretrain else { return Ok(Vec::new()) };
        let mut reports = Vec::new();
        for r in 0..self.rbms.len() {
            let layer = self.model.param_names[self.rbms[r].weight].trim_end_matches(".weight").to_string();
            for epoch in 0..epochs {
                // Streams apart from the fine-tuning epochs' (which are the epoch numbers).
                let (batch, order) = self.batches(train.rows, (1 << 40) | ((r as u64) << 20) | epoch as u64);
                let mut rows = train.select(&order[..0]);
                let mut total = 0.0;
                for chunk in order.chunks(batch) {
                    train.select_into(chunk, &mut rows);
                    total += self.pretrain_step(r, k, lr, &rows)? * rows.rows as f64;
                }
                let report = PretrainReport {
                    layer: layer.clone(),
                    epoch: epoch + 1,
                    reconstruction_error: total / train.rows as f64,
                };
                on_epoch(&report);
                reports.push(report);
            }
        }
        Ok(reports)
    }

    /// One CD-k step on RBM `r` (compiled once per batch size).
    fn pretrain_step(&mut self, r: usize, k: usize, lr: f64, rows: &Dataset) -> Result<f64, TrainError> {
        let key = (r, rows.rows);
        if !self.pretrain_steps.contains_key(&key) {
            let step = pipeline::compile_pretrain_step(&self.model.checked, r, k, rows.rows, self.model.backend)
                .map_err(|d| TrainError::Compile(d.message))?;
            self.pretrain_steps.insert(key, step);
        }
        self.steps_done += 1;
        let hypers = self.hypers(lr);
        let step = self.pretrain_steps.get_mut(&key).ok_or_else(|| TrainError::Internal("pretrain cache".into()))?;
        let y: &[f32] = if self.model.checked.targets.is_empty() { &[] } else { &rows.y };
        let loss = step.run(&mut self.model.store, &rows.x, y, &hypers).map_err(TrainError::Internal)?;
        if !loss.is_finite() {
            let what = format!("the reconstruction error of RBM {}", r + 1);
            return Err(TrainError::NonFinite {
                epoch: 0,
                step: self.steps_done as usize,
                what,
                span: Some(self.rbms[r].span),
            });
        }
        Ok(f64::from(loss))
    }
}
