//! Health over an epoch, per parameter: the mean L2 norm of each gradient
//! the optimizer applied and the mean size of each update relative to the
//! weights (‖Δw‖ / ‖w′‖); per activation layer: the mean and standard
//! deviation of its outputs and, for relu, the units that never fired. The
//! step computes sums as extra outputs (`optim::observe_health`); this adds
//! them up on the host, in f64.

use serde::Serialize;

use super::EpochReport;
use crate::check::{Activation, CheckedModel, Layer};
use crate::optim::HEALTH_VALUES;

/// One parameter tensor's health over an epoch.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ParamHealth {
    pub name: String,
    /// Mean over the epoch's steps of ‖g‖₂.
    pub grad_norm: f64,
    /// Mean over the epoch's steps of ‖Δw‖₂ / ‖w′‖₂, the update relative to
    /// the weights it produced (0 while they are all zero).
    pub update_ratio: f64,
}

/// One activation layer's outputs over an epoch's training rows.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ActivationHealth {
    pub name: String,
    pub mean: f64,
    pub std: f64,
    /// For relu: the fraction of units (features, or channels of a
    /// convolution) whose output was 0 for every row of the epoch.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dead_fraction: Option<f64>,
    /// For sigmoid and tanh: the fraction of outputs over the epoch's rows
    /// where the derivative was below 0.01 (the unit passed almost no
    /// gradient); for clip, where the output was at a bound (none passed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub saturated_fraction: Option<f64>,
}

/// An epoch's health report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Health {
    pub params: Vec<ParamHealth>,
    pub activations: Vec<ActivationHealth>,
}

/// An activation layer's running sums.
#[derive(Debug, Clone)]
struct Probe {
    name: String,
    relu: bool,
    /// Sigmoid, tanh or clip: the step also counts saturated outputs.
    saturating: bool,
    /// Values per row, and per unit of a row.
    per_row: usize,
    unit_sums: Vec<f64>,
    squares: f64,
    saturated: f64,
    count: f64,
}

/// The running sums of an epoch, and the buffer each step writes into.
#[derive(Debug, Clone)]
pub struct HealthSums {
    names: Vec<String>,
    /// Per parameter: Σ‖g‖ and Σ‖Δw‖/‖w‖ over the steps so far.
    sums: Vec<(f64, f64)>,
    steps: usize,
    probes: Vec<Probe>,
    /// The latest step's observed values: `HEALTH_VALUES` per parameter,
    /// then per activation layer its per-unit sums and its sum of squares.
    pub observed: Vec<f32>,
}

impl HealthSums {
    /// The sums for `model`'s parameters (`names`) and activation layers.
    pub fn new(names: Vec<String>, model: &CheckedModel) -> HealthSums {
        let probes: Vec<Probe> = model
            .activation_layers()
            .iter()
            .map(|n| Probe {
                name: n.name.clone(),
                relu: matches!(n.layer, Layer::Activation(Activation::Relu)),
                saturating: matches!(
                    n.layer,
                    Layer::Activation(Activation::Sigmoid | Activation::Tanh | Activation::Clip(..))
                ),
                per_row: n.shape.iter().product(),
                unit_sums: vec![0.0; n.shape.first().copied().unwrap_or(1)],
                squares: 0.0,
                saturated: 0.0,
                count: 0.0,
            })
            .collect();
        let values = |p: &Probe| p.unit_sums.len() + 1 + usize::from(p.saturating);
        let len = names.len() * HEALTH_VALUES + probes.iter().map(values).sum::<usize>();
        HealthSums { sums: vec![(0.0, 0.0); names.len()], names, steps: 0, probes, observed: vec![0.0; len] }
    }

    /// How many values a step that observes everything writes.
    pub fn observed_len(&self) -> usize {
        self.observed.len()
    }

    /// The latest step's activation sums (after the parameters' values).
    pub fn activation_sums_mut(&mut self) -> &mut [f32] {
        let params = self.names.len() * HEALTH_VALUES;
        &mut self.observed[params..]
    }

    /// Forgets the activation layers (a step that cannot observe them).
    pub fn without_activations(&mut self) {
        self.probes.clear();
        self.observed.truncate(self.names.len() * HEALTH_VALUES);
    }

    /// Adds the step of `rows` rows whose values are in `observed`.
    pub fn add_step(&mut self, rows: usize) {
        let (params, mut rest) = self.observed.split_at(self.names.len() * HEALTH_VALUES);
        for (sum, squares) in self.sums.iter_mut().zip(params.chunks_exact(HEALTH_VALUES)) {
            let [grad, delta, weights] = [0, 1, 2].map(|i| f64::from(squares[i]).sqrt());
            sum.0 += grad;
            sum.1 += if weights > 0.0 { delta / weights } else { 0.0 };
        }
        for probe in &mut self.probes {
            let (units, tail) = rest.split_at(probe.unit_sums.len());
            probe.unit_sums.iter_mut().zip(units).for_each(|(s, &v)| *s += f64::from(v));
            probe.squares += f64::from(tail[0]);
            if probe.saturating {
                probe.saturated += f64::from(tail[1]);
            }
            probe.count += (rows * probe.per_row) as f64;
            rest = &tail[1 + usize::from(probe.saturating)..];
        }
        self.steps += 1;
    }

    /// The epoch's report, and a fresh start for the next epoch.
    pub fn finish_epoch(&mut self) -> Health {
        let steps = self.steps.max(1) as f64;
        let params = self
            .names
            .iter()
            .zip(&self.sums)
            .map(|(name, (grad, ratio))| ParamHealth {
                name: name.clone(),
                grad_norm: grad / steps,
                update_ratio: ratio / steps,
            })
            .collect();
        let activations = self
            .probes
            .iter_mut()
            .map(|p| {
                let count = p.count.max(1.0);
                let mean = p.unit_sums.iter().sum::<f64>() / count;
                let dead = p.unit_sums.iter().filter(|&&s| s == 0.0).count() as f64 / p.unit_sums.len().max(1) as f64;
                let report = ActivationHealth {
                    name: p.name.clone(),
                    mean,
                    std: (p.squares / count - mean * mean).max(0.0).sqrt(),
                    dead_fraction: p.relu.then_some(dead),
                    saturated_fraction: p.saturating.then_some(p.saturated / count),
                };
                p.unit_sums.iter_mut().for_each(|s| *s = 0.0);
                (p.squares, p.saturated, p.count) = (0.0, 0.0, 0.0);
                report
            })
            .collect();
        self.sums.iter_mut().for_each(|s| *s = (0.0, 0.0));
        self.steps = 0;
        Health { params, activations }
    }
}

/// Epochs in a row the first layer's gradient must stay vanishingly small.
pub const VANISHING_EPOCHS: usize = 3;
/// The first weight's gradient norm below this fraction of the last
/// weight's has vanished.
pub const VANISHED: f64 = 1e-3;
/// A weight's gradient norm this many times its first epoch's is exploding.
pub const EXPLODED: f64 = 100.0;
/// A relu layer with more than this fraction of units that never fired in
/// an epoch has mostly died.
pub const DEAD: f64 = 0.5;

/// What the health numbers of `history` say, once a sign shows.
#[derive(Debug, Clone, PartialEq)]
pub enum Warning {
    /// (first weight, its norm, last weight, its norm), in the latest epoch.
    Vanishing { first: (String, f64), last: (String, f64) },
    /// A weight, its first epoch's norm and its latest.
    Exploding { weight: String, from: f64, to: f64 },
    /// A relu layer and the fraction of its units that never fired.
    Dead { layer: String, fraction: f64 },
}

impl Warning {
    /// The signs in the latest epoch of `history`: its first epoch and its
    /// last `VANISHING_EPOCHS` are all that is read.
    pub fn of(history: &[EpochReport]) -> Vec<Warning> {
        fn weights(epoch: &EpochReport) -> Vec<&ParamHealth> {
            epoch.health.iter().flat_map(|h| &h.params).filter(|p| p.name.ends_with(".weight")).collect()
        }
        let mut found = Vec::new();
        let recent = &history[history.len().saturating_sub(VANISHING_EPOCHS)..];
        let vanished = |epoch: &EpochReport| {
            let w = weights(epoch);
            w.len() >= 2 && w[0].grad_norm < VANISHED * w[w.len() - 1].grad_norm
        };
        if recent.len() == VANISHING_EPOCHS && recent.iter().all(vanished) {
            let w = weights(&recent[VANISHING_EPOCHS - 1]);
            let (first, last) = (w[0], w[w.len() - 1]);
            found.push(Warning::Vanishing {
                first: (first.name.clone(), first.grad_norm),
                last: (last.name.clone(), last.grad_norm),
            });
        }
        if let (Some(first), Some(latest)) = (history.first(), history.last()) {
            for (a, b) in weights(first).iter().zip(weights(latest)) {
                if a.grad_norm > 0.0 && b.grad_norm >= EXPLODED * a.grad_norm {
                    found.push(Warning::Exploding { weight: b.name.clone(), from: a.grad_norm, to: b.grad_norm });
                }
            }
            let layers = latest.health.iter().flat_map(|h| &h.activations);
            for layer in layers.filter(|a| a.dead_fraction.is_some_and(|d| d > DEAD)) {
                found.push(Warning::Dead { layer: layer.name.clone(), fraction: layer.dead_fraction.unwrap_or(0.0) });
            }
        }
        found
    }

    /// The warning as a line, with the remedies.
    pub fn text(&self) -> String {
        match self {
            Warning::Vanishing { first, last } => format!(
                "vanishing gradients: `{}`'s gradient norm is {:.1e}, {:.0e} of `{}`'s ({:.1e}), for {VANISHING_EPOCHS} \
                 epochs; the first layers barely learn: use relu (or leaky_relu, elu, gelu) in the hidden layers, \
                 add batchnorm between them, or use fewer layers",
                first.0,
                first.1,
                first.1 / last.1,
                last.0,
                last.1
            ),
            Warning::Dead { layer, fraction } => format!(
                "dead units: {:.0} % of `{layer}`'s units output 0 for every training row of the epoch and no \
                 longer learn; lower the learning rate, use leaky_relu or elu, or add batchnorm before it",
                100.0 * fraction
            ),
            Warning::Exploding { weight, from, to } => format!(
                "exploding gradients: `{weight}`'s gradient norm grew from {from:.2e} in the first epoch to {to:.2e} \
                 ({:.0}×); add `clip_norm`, add `l2`, or lower the learning rate",
                to / from
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn epoch(norms: &[(&str, f64)]) -> EpochReport {
        EpochReport {
            epoch: 1,
            lr: 0.1,
            train_loss: 1.0,
            pseudo_likelihood: None,
            validation: None,
            test: None,
            train_seconds: 0.0,
            health: Some(Health {
                params: norms
                    .iter()
                    .map(|&(n, g)| ParamHealth { name: n.into(), grad_norm: g, update_ratio: 0.0 })
                    .collect(),
                activations: vec![],
            }),
        }
    }

    #[test]
    fn vanishing_needs_three_epochs_of_a_tiny_first_gradient() {
        let small = epoch(&[("d1.weight", 1e-6), ("d1.bias", 1.0), ("d2.weight", 1.0)]);
        let fine = epoch(&[("d1.weight", 1e-2), ("d1.bias", 1.0), ("d2.weight", 1.0)]);
        assert!(Warning::of(&[fine.clone(), small.clone(), small.clone()]).is_empty());
        let found = Warning::of(&[fine, small.clone(), small.clone(), small]);
        assert_eq!(
            found,
            vec![Warning::Vanishing { first: ("d1.weight".into(), 1e-6), last: ("d2.weight".into(), 1.0) }]
        );
        assert!(found[0].text().contains("`d1.weight`'s gradient norm is 1.0e-6"), "{}", found[0].text());
    }

    #[test]
    fn exploding_is_a_hundredfold_growth_of_a_weight_gradient() {
        let first = epoch(&[("d1.weight", 0.5), ("d1.bias", 0.1)]);
        let grown = epoch(&[("d1.weight", 49.0), ("d1.bias", 100.0)]);
        assert!(Warning::of(&[first.clone(), grown]).is_empty(), "99× is not yet, and biases do not count");
        let exploded = epoch(&[("d1.weight", 50.0), ("d1.bias", 0.1)]);
        let found = Warning::of(&[first, exploded]);
        assert_eq!(found, vec![Warning::Exploding { weight: "d1.weight".into(), from: 0.5, to: 50.0 }]);
        assert!(found[0].text().contains("(100×); add `clip_norm`"), "{}", found[0].text());
    }
}
