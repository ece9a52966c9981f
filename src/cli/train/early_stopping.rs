//! Early stopping (`patience`) for `nnc train`: the best epoch so far,
//! kept whole so that training can end on it.

use super::{Failure, Prepared, TrainArgs};
use crate::checkpoint;
use crate::pipeline::Checked;
use crate::train::{EpochReport, Trainer};

/// Early stopping (`patience`): the epoch with the lowest validation loss
/// so far and a copy of everything the trainer holds after it.
#[derive(Default)]
pub(super) struct Best {
    pub(super) epoch: usize,
    loss: f64,
    steps: u64,
    tensors: std::collections::HashMap<String, (Vec<usize>, Vec<f32>)>,
}

impl Best {
    /// Records the epoch if its validation loss is the lowest so far;
    /// whether training should stop (`patience` epochs without one).
    pub(super) fn watch(&mut self, trainer: &Trainer, report: Option<&EpochReport>) -> bool {
        let (Some(patience), Some(report)) = (trainer.config.patience, report) else { return false };
        let Some(loss) = report.validation.as_ref().map(|v| v.loss) else { return false };
        if self.epoch == 0 || loss < self.loss {
            let tensors = trainer.tensors().into_iter().map(|(name, shape, values)| (name, (shape, values)));
            *self = Best { epoch: report.epoch, loss, steps: trainer.steps_done(), tensors: tensors.collect() };
            return false;
        }
        report.epoch - self.epoch >= patience
    }

    /// Puts the best epoch's weights (and optimizer state) back, says so,
    /// and saves them as the run's checkpoint.
    pub(super) fn restore(
        &self,
        args: &TrainArgs,
        (checked, data): (&Checked, &Prepared),
        trainer: &mut Trainer,
        what: &str,
        patience: Option<usize>,
    ) -> Result<(), Failure> {
        if self.epoch == 0 {
            return Ok(());
        }
        let after = trainer.epochs_done();
        trainer.restore(&self.tensors, self.epoch, self.steps).map_err(Failure::Input)?;
        if !args.quiet {
            let epochs = patience.map_or(format!("{} epochs", after - self.epoch), |p| format!("{p} epochs"));
            say!(
                "{}: the validation loss {what} {epochs}; keeping epoch {}'s weights (validation loss {:.4})",
                if patience.is_some() {
                    format!("early stopping after epoch {after}")
                } else {
                    "best epoch".to_string()
                },
                self.epoch,
                self.loss
            );
        }
        if let Some(path) = &args.save {
            checkpoint::save(path, trainer, &data.origin(&checked.source)).map_err(Failure::Usage)?;
        }
        Ok(())
    }
}
