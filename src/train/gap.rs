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
/// (a fraction of the best) to count: less is noise.
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

/// Whether the latest window's held-out loss is `RISE` above the best
/// window's while its training loss is below it, from each epoch's held-out
/// loss (`losses`) and the history's training loss.
fn widened(history: &[EpochReport], losses: &[f64]) -> Option<Overfitting> {
    let mean = |values: &mut dyn Iterator<Item = f64>| values.sum::<f64>() / WINDOW as f64;
    let held_out = |start: usize| mean(&mut losses[start..start + WINDOW].iter().copied());
    let train = |start: usize| mean(&mut history[start..start + WINDOW].iter().map(|r| r.train_loss));
    let latest = history.len().checked_sub(WINDOW)?;
    let best =
        (0..=latest).filter(|&s| held_out(s).is_finite()).min_by(|&a, &b| held_out(a).total_cmp(&held_out(b)))?;
    let widened =
        latest >= best + WINDOW && held_out(latest) > held_out(best) * (1.0 + RISE) && train(latest) < train(best);
    widened.then(|| Overfitting {
        windows: ((best + 1, best + WINDOW), (latest + 1, latest + WINDOW)),
        held_out_loss: (held_out(best), held_out(latest)),
        train_loss: (train(best), train(latest)),
    })
}

impl Gap {
    /// The gap over `history`, `None` without held-out rows.
    pub fn of(history: &[EpochReport]) -> Option<Gap> {
        let (held_out, losses): (&'static str, Vec<f64>) =
            if history.iter().all(|r| r.validation.is_some()) && !history.is_empty() {
                ("validation", history.iter().filter_map(|r| r.validation.as_ref().map(|m| m.loss)).collect())
            } else if history.iter().all(|r| r.test.is_some()) && !history.is_empty() {
                ("test", history.iter().filter_map(|r| r.test.as_ref().map(|m| m.loss)).collect())
            } else {
                return None;
            };
        let best =
            (0..losses.len()).filter(|&i| losses[i].is_finite()).min_by(|&a, &b| losses[a].total_cmp(&losses[b]))?;
        // Overfitting as of each of the last WINDOW epochs, the latest kept.
        let overfitting = (history.len().saturating_sub(WINDOW - 1)..=history.len())
            .map(|epochs| widened(&history[..epochs], &losses[..epochs]))
            .reduce(|all, now| all.and(now))
            .flatten();
        Some(Gap { held_out, best_epoch: history[best].epoch, best_loss: losses[best], overfitting })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::Metrics;

    fn history(train: &[f64], validation: &[f64]) -> Vec<EpochReport> {
        let metrics = |loss: f64| Metrics { loss, rows: 10, accuracy: None, rmse: None, r2: None };
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
