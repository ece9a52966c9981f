//! Task metrics: accuracy for classifiers, RMSE and R² for regression.

use serde::Serialize;

use crate::check::{CheckedModel, LossKind, TargetKind, ValueRef};

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Task {
    /// Softmax classification over K classes (argmax of logits).
    Classes(usize),
    /// Independent yes/no outputs (probability ≥ 0.5).
    Binary,
    /// Real-valued outputs.
    Regression,
    /// An RBM's reconstruction of its input: the loss is the only metric.
    Reconstruction,
}

impl Task {
    pub fn of(model: &CheckedModel) -> Task {
        let Some(loss) = &model.loss else {
            return Task::Reconstruction;
        };
        match (loss.kind, loss.target) {
            (LossKind::CrossEntropy, ValueRef::Target(t)) => match model.targets[t].kind {
                TargetKind::Class(k) => Task::Classes(k),
                _ => Task::Regression,
            },
            (LossKind::BinaryCrossEntropy, ValueRef::Target(_)) => Task::Binary,
            _ => Task::Regression,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Metrics {
    pub rows: usize,
    pub loss: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub accuracy: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rmse: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub r2: Option<f64>,
}

impl Metrics {
    pub fn compute(task: Task, predictions: &[f32], targets: &[f32], rows: usize, loss: f64) -> Metrics {
        let mut m = Metrics { rows, loss, accuracy: None, rmse: None, r2: None };
        match task {
            Task::Classes(k) => {
                let correct = predictions
                    .chunks(k)
                    .zip(targets)
                    .filter(|(scores, label)| argmax(scores) == **label as usize)
                    .count();
                m.accuracy = Some(correct as f64 / rows.max(1) as f64);
            }
            Task::Binary => {
                let correct = predictions.iter().zip(targets).filter(|(p, t)| (**p >= 0.5) == (**t >= 0.5)).count();
                m.accuracy = Some(correct as f64 / predictions.len().max(1) as f64);
            }
            Task::Reconstruction => {}
            Task::Regression => {
                let n = targets.len().max(1) as f64;
                let mean = targets.iter().map(|&t| f64::from(t)).sum::<f64>() / n;
                let sse: f64 =
                    predictions.iter().zip(targets).map(|(&p, &t)| (f64::from(p) - f64::from(t)).powi(2)).sum();
                let sst: f64 = targets.iter().map(|&t| (f64::from(t) - mean).powi(2)).sum();
                m.rmse = Some((sse / n).sqrt());
                m.r2 = Some(if sst > 0.0 { 1.0 - sse / sst } else { 0.0 });
            }
        }
        m
    }

    /// `loss 0.1234  accuracy 97.2%` or `loss 12.3  rmse 3.5  r² 0.61`.
    pub fn to_text(&self) -> String {
        let mut s = format!("loss {:.4}", self.loss);
        if let Some(a) = self.accuracy {
            s.push_str(&format!("  accuracy {:.2}%", 100.0 * a));
        }
        if let (Some(rmse), Some(r2)) = (self.rmse, self.r2) {
            s.push_str(&format!("  rmse {rmse:.4}  r² {r2:.4}"));
        }
        s
    }
}

fn argmax(values: &[f32]) -> usize {
    values.iter().enumerate().fold((0, f32::NEG_INFINITY), |best, (i, &v)| if v > best.1 { (i, v) } else { best }).0
}
