//! Simulated annealing: training without gradients, by random moves of all
//! weights judged on the batch loss.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;

use super::{TrainError, Trainer};

impl Trainer {
    /// One step of simulated annealing at `temperature`: every weight moves
    /// by `scale`·N(0, 1); the move is kept when the batch loss falls, or
    /// with probability exp(−Δloss/temperature) when it rises. Returns the
    /// loss of the weights kept. Proposals are seeded by (seed, step).
    pub(super) fn anneal_step(
        &mut self,
        x: &[f32],
        y: &[f32],
        rows: usize,
        temperature: f64,
        scale: f64,
    ) -> Result<f64, TrainError> {
        self.steps_done += 1;
        let y: &[f32] = if self.model.checked.targets.is_empty() { x } else { y };
        let current = self.batch_loss(x, y, rows)?;
        // The weights before the move, in a buffer kept across steps.
        let mut before = std::mem::take(&mut self.anneal_backup);
        before.clear();
        before.extend_from_slice(self.model.store.data());
        let mut rng = ChaCha8Rng::seed_from_u64(self.config.seed);
        rng.set_stream(self.steps_done);
        let store = &mut self.model.store;
        let params = store.layout.params.clone();
        let data = store.data_mut();
        for (offset, len) in params {
            for w in &mut data[offset..offset + len] {
                let z: f64 = rng.sample(StandardNormal);
                *w += (scale * z) as f32;
            }
        }
        let proposed = self.batch_loss(x, y, rows)?;
        let draw: f64 = rng.random();
        let accept_worse = draw < (-(proposed - current) / temperature.max(f64::MIN_POSITIVE)).exp();
        let kept = proposed.is_finite() && (proposed <= current || accept_worse);
        if !kept {
            self.model.store.data_mut().copy_from_slice(&before);
        }
        self.anneal_backup = before;
        Ok(if kept { proposed } else { current })
    }

    /// The mean loss of one batch under the current weights.
    fn batch_loss(&mut self, x: &[f32], y: &[f32], rows: usize) -> Result<f64, TrainError> {
        let (_, loss) = self.model.run_batch(x, y, rows).map_err(TrainError::Internal)?;
        Ok(loss.map_or(f64::NAN, f64::from))
    }
}
