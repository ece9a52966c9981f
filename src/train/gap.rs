//! The generalisation gap: how the loss on held-out rows (validation, else
//! test) moves against the training loss, epoch by epoch. A held-out loss
//! that keeps rising while the training loss keeps falling is the course's
//! picture of overfitting: the model learns its training rows, not the task.

use serde::Serialize;

use super::EpochReport;

/// Losses are compared as means over windows of this many epochs: one
/// epoch's held-out loss is too noisy to judge by.
pub const WINDOW: usize = 5;
/// How far above its best window the latest window's held-out loss must be
/// (a fraction of the best), for `WINDOW` epochs in a row: a smaller or
/// shorter rise is the noise of a held-out loss still on its way down.
pub const RISE: f64 = 0.05;

/// Where the held-out loss was best, and whether it has since risen.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Gap {
    /// "validation" or "test": the rows the gap is measured on.
    pub held_out: &'static str,
    /// The epoch with the lowest held-out loss (1-based).
    pub best_epoch: usize,
    pub best_loss: f64,
    /// Set when, at each of the last `WINDOW` epochs, the latest `WINDOW`
    /// epochs (all after the best window) had a mean held-out loss more than
    /// `RISE` above the best window's while their mean training loss was
    /// below it: the gap between them grew, and kept growing.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub overfitting: Option<Overfitting>,
}

/// The windows' mean losses: the best held-out window's, then the latest's.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Overfitting {
    /// The epochs (1-based, inclusive) of the best and the latest window.
    pub windows: ((usize, usize), (usize, usize)),
    pub held_out_loss: (f64, f64),
    pub train_loss: (f64, f64),
}

impl Gap {
    /// The gap over `history`, `None` without held-out rows in every epoch.
    pub fn of(history: &[EpochReport]) -> Option<Gap> {
        let mut tracker = Tracker::default();
        history.iter().for_each(|r| tracker.push(r));
        tracker.gap()
    }
}

/// Follows the gap epoch by epoch, in constant time per epoch (a run may
/// have a million of them): window means come from running sums.
#[derive(Debug, Default)]
pub struct Tracker {
    /// Which rows are held out, fixed by the first epoch; `None` once an
    /// epoch lacks them.
    held_out: Option<&'static str>,
    epochs: Vec<usize>,
    /// Running sums of the held-out and training losses: entry i sums the
    /// first i epochs.
    held_out_sums: Vec<f64>,
    train_sums: Vec<f64>,
    best_epoch: Option<(usize, f64)>,
    /// Start of the held-out window with the lowest mean so far.
    best_window: Option<usize>,
    /// Epochs in a row the gap has been wider than at the best window.
    streak: usize,
    widened: Option<Overfitting>,
}

impl Tracker {
    /// Adds an epoch.
    pub fn push(&mut self, report: &EpochReport) {
        let held_out = match (&report.validation, &report.test) {
            (Some(m), _) if self.epochs.is_empty() || self.held_out == Some("validation") => {
                self.held_out = Some("validation");
                m.loss
            }
            (_, Some(m)) if self.epochs.is_empty() || self.held_out == Some("test") => {
                self.held_out = Some("test");
                m.loss
            }
            _ => {
                self.held_out = None;
                f64::NAN
            }
        };
        let i = self.epochs.len();
        if self.held_out_sums.is_empty() {
            self.held_out_sums.push(0.0);
            self.train_sums.push(0.0);
        }
        self.held_out_sums.push(self.held_out_sums[i] + held_out);
        self.train_sums.push(self.train_sums[i] + report.train_loss);
        self.epochs.push(report.epoch);
        if held_out.is_finite() && self.best_epoch.is_none_or(|(_, best)| held_out < best) {
            self.best_epoch = Some((i, held_out));
        }
        let Some(latest) = (i + 1).checked_sub(WINDOW) else { return };
        let mean = |sums: &[f64], start: usize| (sums[start + WINDOW] - sums[start]) / WINDOW as f64;
        let now = mean(&self.held_out_sums, latest);
        if now.is_finite() && self.best_window.is_none_or(|b| now < mean(&self.held_out_sums, b)) {
            self.best_window = Some(latest);
        }
        self.widened = self.best_window.and_then(|best| {
            let (held_out, train) = (
                (mean(&self.held_out_sums, best), now),
                (mean(&self.train_sums, best), mean(&self.train_sums, latest)),
            );
            let wider = latest >= best + WINDOW && held_out.1 > held_out.0 * (1.0 + RISE) && train.1 < train.0;
            wider.then_some(Overfitting {
                windows: ((best + 1, best + WINDOW), (latest + 1, latest + WINDOW)),
                held_out_loss: held_out,
                train_loss: train,
            })
        });
        self.streak = if self.widened.is_some() { self.streak + 1 } else { 0 };
    }

    /// The gap so far, `None` without held-out rows in every epoch.
    pub fn gap(&self) -> Option<Gap> {
        let held_out = self.held_out?;
        let (best, best_loss) = self.best_epoch?;
        let overfitting = self.widened.clone().filter(|_| self.streak >= WINDOW);
        Some(Gap { held_out, best_epoch: self.epochs[best], best_loss, overfitting })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::Metrics;

    fn history(train: &[f64], validation: &[f64]) -> Vec<EpochReport> {
        let metrics = |loss: f64| Metrics::compute(crate::train::metrics::Task::Reconstruction, &[], &[], 10, loss);
        train
            .iter()
            .zip(validation)
            .enumerate()
            .map(|(i, (&t, &v))| EpochReport {
                epoch: i + 1,
                lr: 0.1,
                train_loss: t,
                pseudo_likelihood: None,
                validation: Some(metrics(v)),
                test: None,
                train_seconds: 0.0,
                health: None,
            })
            .collect()
    }

    #[test]
    fn a_widening_gap_after_the_best_window_is_overfitting() {
        let train: Vec<f64> = (0..16).map(|i| 1.0 - 0.05 * f64::from(i)).collect();
        let validation = [1.0, 0.6, 0.6, 0.6, 0.6, 0.6, 0.7, 0.8, 0.9, 1.0, 1.1, 1.2, 1.3, 1.4, 1.5, 1.6];
        let gap = Gap::of(&history(&train, &validation)).expect("gap");
        assert_eq!((gap.held_out, gap.best_epoch, gap.best_loss), ("validation", 2, 0.6));
        let o = gap.overfitting.expect("overfitting");
        assert_eq!(o.windows, ((2, 6), (12, 16)));
        let close = |a: (f64, f64), b: (f64, f64)| (a.0 - b.0).abs() < 1e-9 && (a.1 - b.1).abs() < 1e-9;
        assert!(close(o.held_out_loss, (0.6, 1.4)) && close(o.train_loss, (0.85, 0.35)), "{o:?}");
        // Four epochs of it are not yet enough.
        assert_eq!(Gap::of(&history(&train[..10], &validation[..10])).expect("gap").overfitting, None);
    }

    #[test]
    fn improving_noisy_or_jointly_rising_losses_are_not_overfitting() {
        let train: Vec<f64> = (0..16).map(|i| 1.0 - 0.05 * f64::from(i)).collect();
        let improving: Vec<f64> = (0..16).map(|i| 1.2 - 0.05 * f64::from(i)).collect();
        assert_eq!(Gap::of(&history(&train, &improving)).expect("gap").overfitting, None);
        // A bad stretch that passes (digits_mlp's test loss looks so).
        let noisy = [1.0, 0.8, 0.6, 0.5, 0.45, 0.4, 0.5, 0.55, 0.5, 0.42, 0.38, 0.4, 0.36, 0.37, 0.35, 0.36];
        assert_eq!(Gap::of(&history(&train, &noisy)).expect("gap").overfitting, None);
        let rising_train: Vec<f64> = train.iter().rev().copied().collect();
        let rising: Vec<f64> = (0..16).map(|i| 0.5 + 0.05 * f64::from(i)).collect();
        assert_eq!(Gap::of(&history(&rising_train, &rising)).expect("gap").overfitting, None, "not a gap");
        let none =
            history(&[1.0], &[1.0]).into_iter().map(|r| EpochReport { validation: None, ..r }).collect::<Vec<_>>();
        assert_eq!(Gap::of(&none), None);
    }
}
