//! `schedule = plateau(…)`: the learning rate falls by `factor` once the
//! watched loss has not improved for more than `patience` epochs, as
//! PyTorch's `ReduceLROnPlateau` (mode `min`, relative threshold, no
//! cooldown) and Keras's callback of the same name do. The watched loss is
//! the validation loss when training holds rows out, else the training loss.

use serde::{Deserialize, Serialize};

/// Where the schedule stands; a checkpoint keeps it, so `--resume` goes on
/// from the same best loss, patience and rate.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Plateau {
    /// The lowest watched loss so far (none before the first epoch).
    pub best: Option<f64>,
    /// Epochs since it last improved.
    pub waited: usize,
    /// How many times the rate has been cut.
    pub reductions: u32,
}

impl Plateau {
    /// Takes an epoch's watched loss: an improvement is a loss below the
    /// best by more than `threshold` of it; after more than `patience`
    /// epochs without one the rate is cut and the wait starts again.
    pub fn observe(&mut self, loss: f64, patience: usize, threshold: f64) {
        if self.best.is_none_or(|best| loss < best * (1.0 - threshold)) {
            self.best = Some(loss);
            self.waited = 0;
        } else {
            self.waited += 1;
            if self.waited > patience {
                self.reductions += 1;
                self.waited = 0;
            }
        }
    }

    /// The rate after the cuts so far, never below `min_lr`.
    pub fn rate(&self, lr: f64, factor: f64, min_lr: f64) -> f64 {
        (lr * factor.powi(self.reductions as i32)).max(min_lr)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cuts_the_rate_after_patience_epochs_without_improvement() {
        let mut p = Plateau::default();
        let mut rates = Vec::new();
        for loss in [1.2, 1.0, 0.995, 0.999, 0.98, 0.98, 0.98, 0.5] {
            p.observe(loss, 1, 0.01);
            rates.push(p.rate(0.1, 0.5, 0.03));
        }
        // 1.2 best; 1.0 best; 0.995 not 1 % better (wait 1); 0.999 (wait 2 > 1: cut, wait 0);
        // 0.98 better than 1.0·0.99 → best; 0.98 wait 1; 0.98 wait 2: cut; 0.5 best.
        let expected = [0.1, 0.1, 0.1, 0.05, 0.05, 0.05, 0.03, 0.03];
        for (r, e) in rates.iter().zip(expected) {
            assert!((r - e).abs() < 1e-12, "{rates:?}");
        }
        assert_eq!(p.reductions, 2);
        assert_eq!(p.best, Some(0.5));

        // The state survives a checkpoint's metadata, before and after the first epoch.
        for state in [Plateau::default(), p] {
            let text = serde_json::to_string(&state).expect("serialises");
            assert_eq!(serde_json::from_str::<Plateau>(&text).expect("reads back"), state);
        }
    }
}
