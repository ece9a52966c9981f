//! Task metrics: accuracy, per-class precision, recall and F1 (and their
//! macro averages) for classifiers, ROC AUC for binary targets, RMSE and R²
//! for regression.

use serde::Serialize;

use std::ops::Range;

use crate::check::{CheckedModel, LossKind, LossSpec, TargetKind, ValueRef};

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
    /// The task of a model's (first) output; see `outputs` for models with several.
    pub fn of(model: &CheckedModel) -> Task {
        match model.losses.first() {
            Some(loss) => Task::of_loss(model, loss),
            None => Task::Reconstruction,
        }
    }

    /// The task of the output one loss term compares.
    pub fn of_loss(model: &CheckedModel, loss: &LossSpec) -> Task {
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

/// One output of a model with several loss terms: where its values sit in
/// a prediction row, and where its target's sit in a data row — among the
/// targets, or among the inputs for a reconstruction (none for a target
/// computed by the model itself, which has no metrics).
pub struct Output {
    pub name: String,
    pub task: Task,
    pub kind: LossKind,
    /// A cross-entropy's class weights, which its own loss counts too.
    pub class_weights: Option<Vec<f64>>,
    pub columns: Range<usize>,
    pub target: Option<(Side, Range<usize>)>,
}

/// Which half of a data row holds an output's target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Inputs,
    Targets,
}

/// The outputs of a model, in the order of its loss terms: a prediction row
/// holds their values side by side in this order.
pub fn outputs(model: &CheckedModel) -> Vec<Output> {
    let width = |shape: &[usize]| shape.iter().product::<usize>();
    let target_at = |wanted: usize| -> Range<usize> {
        let before: usize = model
            .row_targets()
            .iter()
            .take_while(|&&t| t != wanted)
            .map(|&t| width(&model.shape_of(ValueRef::Target(t))))
            .sum();
        before..before + width(&model.shape_of(ValueRef::Target(wanted)))
    };
    let input_at = |wanted: usize| -> Range<usize> {
        let before: usize = model.inputs[..wanted].iter().map(|i| width(&i.shape)).sum();
        before..before + width(&model.inputs[wanted].shape)
    };
    let mut start = 0;
    let names = distinct(model.losses.iter().map(|loss| {
        model.values.iter().find(|v| v.value == loss.prediction).map_or("output".into(), |v| v.name.clone())
    }));
    model
        .losses
        .iter()
        .zip(names)
        .map(|(loss, name)| {
            let columns = start..start + width(&model.shape_of(loss.prediction));
            start = columns.end;
            let target = match loss.target {
                ValueRef::Target(t) => Some((Side::Targets, target_at(t))),
                ValueRef::Input(i) => Some((Side::Inputs, input_at(i))),
                ValueRef::Node(_) => None,
            };
            let (task, kind, class_weights) = (Task::of_loss(model, loss), loss.kind, loss.class_weights.clone());
            Output { name, task, kind, class_weights, columns, target }
        })
        .collect()
}

/// The names in order, each one that was given before followed by the
/// first `_2`, `_3`, … taken by no other: two loss terms may read one
/// prediction, and a prediction row, a library's header and an ONNX graph
/// need a name for each.
pub fn distinct(names: impl Iterator<Item = String>) -> Vec<String> {
    let given: Vec<String> = names.collect();
    let mut named: Vec<String> = Vec::with_capacity(given.len());
    for name in &given {
        let taken = |n: &str, named: &[String]| named.iter().any(|m| m == n);
        let free = if taken(name, &named) {
            (2..).map(|k| format!("{name}_{k}")).find(|n| !taken(n, &named) && !given.contains(n)).unwrap_or_default()
        } else {
            name.clone()
        };
        named.push(free);
    }
    named
}

/// Each output's name, task and columns in a prediction row of `width`
/// values, as `predict` and built libraries present them: a model of one
/// output (or none) is named after its target and takes the whole row.
pub fn prediction_columns(model: &CheckedModel, width: usize) -> Vec<(String, Task, Range<usize>)> {
    let all = outputs(model);
    if all.len() > 1 {
        return all.into_iter().map(|o| (o.name, o.task, o.columns)).collect();
    }
    let name = model.targets.first().map_or("output", |t| t.name.as_str());
    vec![(name.to_string(), Task::of(model), 0..width)]
}

/// One loss term's mean over the rows (an output's own loss, as the summed
/// loss counts it, class weights included), gathered a chunk of rows at a
/// time from its predictions (logits, probabilities or values) and targets.
#[derive(Default)]
pub struct OwnLoss {
    /// The terms' running sum, in the rows' order (so chunk by chunk it
    /// adds up as over all rows at once), and how many the mean divides by.
    sum: f64,
    count: usize,
}

impl OwnLoss {
    pub fn add(&mut self, output: &Output, predictions: &[f32], targets: &[f32]) {
        match (output.kind, output.task) {
            (LossKind::CrossEntropy, Task::Classes(k)) => {
                let terms = predictions.chunks(k).zip(targets).map(|(z, &label)| {
                    let class = (label as usize).min(k - 1);
                    let top = z.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
                    let sum: f64 = z.iter().map(|&v| f64::from(v - top).exp()).sum();
                    let weight = output.class_weights.as_ref().map_or(1.0, |w| w[class]);
                    weight * (sum.ln() + f64::from(top) - f64::from(z[class]))
                });
                self.add_terms(predictions.len() / k, terms);
            }
            (LossKind::BinaryCrossEntropy, _) => {
                let eps = nnc_runtime::kernels::BCE_EPS;
                let terms = predictions.iter().zip(targets).map(|(&p, &t)| {
                    let (p, t) = (f64::from(p).clamp(eps, 1.0 - eps), f64::from(t));
                    -(t * p.ln() + (1.0 - t) * (1.0 - p).ln())
                });
                self.add_terms(predictions.len(), terms);
            }
            _ => self.add_terms(predictions.len(), squared_errors(predictions, targets)),
        }
    }

    fn add_terms(&mut self, count: usize, terms: impl Iterator<Item = f64>) {
        self.count += count;
        self.sum = terms.fold(self.sum, |sum, term| sum + term);
    }

    pub fn mean(&self) -> f64 {
        self.sum / self.count.max(1) as f64
    }
}

/// Each prediction's squared error against its target, in order.
fn squared_errors<'a>(predictions: &'a [f32], targets: &'a [f32]) -> impl Iterator<Item = f64> + 'a {
    predictions.iter().zip(targets).map(|(&p, &t)| (f64::from(p) - f64::from(t)).powi(2))
}

/// An output's predictions reduced, a chunk of rows at a time, to what its
/// metrics read: evaluating holds one chunk's predictions, however many
/// rows (a classifier's K scores a row become the class it predicts).
pub enum Tally {
    /// Each row's predicted and actual class.
    Classes {
        k: usize,
        pairs: Vec<(u32, u32)>,
    },
    /// Every probability (one per target value).
    Binary {
        predictions: Vec<f32>,
    },
    /// The squared errors' running sum, in the rows' order.
    Regression {
        sse: f64,
    },
    Reconstruction,
}

impl Tally {
    pub fn new(task: Task) -> Tally {
        match task {
            Task::Classes(k) => Tally::Classes { k, pairs: Vec::new() },
            Task::Binary => Tally::Binary { predictions: Vec::new() },
            Task::Regression => Tally::Regression { sse: 0.0 },
            Task::Reconstruction => Tally::Reconstruction,
        }
    }

    /// Adds a chunk of rows' predictions, with their targets.
    pub fn add(&mut self, predictions: &[f32], targets: &[f32]) {
        match self {
            Tally::Classes { k, pairs } => pairs.extend(
                predictions.chunks(*k).zip(targets).map(|(scores, &label)| (argmax(scores) as u32, label as u32)),
            ),
            Tally::Binary { predictions: all } => all.extend_from_slice(predictions),
            Tally::Regression { sse } => *sse = squared_errors(predictions, targets).fold(*sse, |sum, e| sum + e),
            Tally::Reconstruction => {}
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Metrics {
    pub rows: usize,
    pub loss: f64,
    /// A model with several loss terms: each output's own loss and metrics
    /// (the loss above is their weighted sum).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub outputs: Vec<OutputMetrics>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub accuracy: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rmse: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub r2: Option<f64>,
    /// Classifiers (a binary target: classes 0 and 1).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub classes: Option<ClassScores>,
    /// Binary targets: the area under the ROC curve of the probabilities.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub roc_auc: Option<f64>,
}

/// One output's own loss and metrics, named by the value it predicts.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OutputMetrics {
    pub name: String,
    #[serde(flatten)]
    pub metrics: Metrics,
}

/// Per class (index = class): precision (of the rows predicted as it, the
/// share that are), recall (of the rows that are, the share predicted) and
/// F1 (their harmonic mean), each 0 where undefined; and their plain means
/// over the classes (macro averages).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ClassScores {
    pub precision: Vec<f64>,
    pub recall: Vec<f64>,
    pub f1: Vec<f64>,
    pub macro_precision: f64,
    pub macro_recall: f64,
    pub macro_f1: f64,
    /// Rows by (true, predicted) class, for up to `CONFUSION_CLASSES` classes.
    #[serde(skip)]
    pub confusion: Option<Vec<Vec<usize>>>,
}

/// The most classes whose confusion matrix is counted (and `eval` prints).
pub const CONFUSION_CLASSES: usize = 100;

impl ClassScores {
    /// From (predicted, actual) class pairs over `k` classes.
    pub fn of(pairs: impl Iterator<Item = (usize, usize)>, k: usize) -> ClassScores {
        let (mut hits, mut predicted, mut actual) = (vec![0usize; k], vec![0usize; k], vec![0usize; k]);
        let mut confusion = (k <= CONFUSION_CLASSES).then(|| vec![vec![0usize; k]; k]);
        for (p, a) in pairs.filter(|&(p, a)| p < k && a < k) {
            predicted[p] += 1;
            actual[a] += 1;
            hits[p] += usize::from(p == a);
            if let Some(counts) = &mut confusion {
                counts[a][p] += 1;
            }
        }
        let ratio = |a: usize, b: usize| if b == 0 { 0.0 } else { a as f64 / b as f64 };
        let precision: Vec<f64> = (0..k).map(|c| ratio(hits[c], predicted[c])).collect();
        let recall: Vec<f64> = (0..k).map(|c| ratio(hits[c], actual[c])).collect();
        let f1: Vec<f64> = precision
            .iter()
            .zip(&recall)
            .map(|(&p, &r)| if p + r > 0.0 { 2.0 * p * r / (p + r) } else { 0.0 })
            .collect();
        let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
        ClassScores {
            macro_precision: mean(&precision),
            macro_recall: mean(&recall),
            macro_f1: mean(&f1),
            precision,
            recall,
            f1,
            confusion,
        }
    }
}

/// The area under the ROC curve: the chance that a random positive scores
/// above a random negative (ties count half), by the rank sum
/// (Mann–Whitney U). None without both positives and negatives.
pub fn roc_auc(scores: &[f32], positive: &[bool]) -> Option<f64> {
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]));
    let (mut rank_sum, mut i) = (0.0, 0);
    while i < order.len() {
        // Tied scores share the mean of their ranks (1-based).
        let j = (i..order.len()).find(|&j| scores[order[j]] != scores[order[i]]).unwrap_or(order.len());
        let mean_rank = (i + 1 + j) as f64 / 2.0;
        rank_sum += mean_rank * order[i..j].iter().filter(|&&r| positive[r]).count() as f64;
        i = j;
    }
    let positives = positive.iter().filter(|&&p| p).count() as f64;
    let negatives = positive.len() as f64 - positives;
    (positives > 0.0 && negatives > 0.0)
        .then(|| (rank_sum - positives * (positives + 1.0) / 2.0) / (positives * negatives))
}

impl Metrics {
    pub fn compute(task: Task, predictions: &[f32], targets: &[f32], rows: usize, loss: f64) -> Metrics {
        let mut tally = Tally::new(task);
        tally.add(predictions, targets);
        Metrics::from_tally(tally, targets, rows, loss)
    }

    /// The metrics of `rows` rows from their tally, their targets (all of
    /// them) and their mean loss.
    pub fn from_tally(tally: Tally, targets: &[f32], rows: usize, loss: f64) -> Metrics {
        let mut m = Metrics {
            rows,
            loss,
            outputs: Vec::new(),
            accuracy: None,
            rmse: None,
            r2: None,
            classes: None,
            roc_auc: None,
        };
        match tally {
            Tally::Classes { k, pairs } => {
                let pairs = || pairs.iter().map(|&(p, a)| (p as usize, a as usize));
                let correct = pairs().filter(|(p, a)| p == a).count();
                m.accuracy = Some(correct as f64 / rows.max(1) as f64);
                m.classes = Some(ClassScores::of(pairs(), k));
            }
            Tally::Binary { predictions } => {
                let pairs =
                    || predictions.iter().zip(targets).map(|(&p, &t)| (usize::from(p >= 0.5), usize::from(t >= 0.5)));
                let correct = pairs().filter(|(p, a)| p == a).count();
                m.accuracy = Some(correct as f64 / predictions.len().max(1) as f64);
                m.classes = Some(ClassScores::of(pairs(), 2));
                let positive: Vec<bool> = targets.iter().map(|&t| t >= 0.5).collect();
                m.roc_auc = roc_auc(&predictions, &positive);
            }
            Tally::Reconstruction => {}
            Tally::Regression { sse } => {
                // R² against each output's own mean (variance-weighted over
                // several outputs): 1 − error / the error of always
                // answering the mean row, such as an autoencoder's mean image.
                let n = targets.len().max(1) as f64;
                let outputs = (targets.len() / rows.max(1)).max(1);
                let mut means = vec![0.0f64; outputs];
                for row in targets.chunks(outputs) {
                    means.iter_mut().zip(row).for_each(|(m, &t)| *m += f64::from(t));
                }
                means.iter_mut().for_each(|m| *m /= (targets.len() / outputs).max(1) as f64);
                let sst: f64 = targets
                    .chunks(outputs)
                    .flat_map(|row| row.iter().zip(&means).map(|(&t, m)| (f64::from(t) - m).powi(2)))
                    .sum();
                m.rmse = Some((sse / n).sqrt());
                m.r2 = Some(if sst > 0.0 { 1.0 - sse / sst } else { 0.0 });
            }
        }
        m
    }

    /// `to_text` and, for classifiers, the macro-averaged F1 (and for binary
    /// targets the ROC AUC): a run's final line and `eval`'s.
    pub fn final_text(&self) -> String {
        if !self.outputs.is_empty() {
            return self.joined(Metrics::final_text);
        }
        let mut s = self.to_text();
        if let Some(c) = &self.classes {
            s.push_str(&format!("  macro F1 {:.4}", c.macro_f1));
        }
        if let Some(auc) = self.roc_auc {
            s.push_str(&format!("  ROC AUC {auc:.4}"));
        }
        s
    }

    /// `loss 0.1234  accuracy 97.2%` or `loss 12.3  rmse 3.5  r² 0.61`.
    pub fn to_text(&self) -> String {
        if !self.outputs.is_empty() {
            return self.joined(Metrics::to_text);
        }
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

impl Metrics {
    /// The summed loss, then each output's text: `loss 0.41  [logits: loss 0.2  accuracy 97.2%]  […]`.
    fn joined(&self, text: fn(&Metrics) -> String) -> String {
        let mut s = format!("loss {:.4}", self.loss);
        for output in &self.outputs {
            s.push_str(&format!("  [{}: {}]", output.name, text(&output.metrics)));
        }
        s
    }
}

fn argmax(values: &[f32]) -> usize {
    values.iter().enumerate().fold((0, f32::NEG_INFINITY), |best, (i, &v)| if v > best.1 { (i, v) } else { best }).0
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Three classes, worked by hand: predicted/actual pairs
    /// (0,0) (0,0) (1,0) (1,1) (2,1) (0,2).
    #[test]
    fn class_scores_by_hand() {
        let pairs = [(0, 0), (0, 0), (1, 0), (1, 1), (2, 1), (0, 2)];
        let c = ClassScores::of(pairs.into_iter(), 3);
        assert_eq!(c.precision, vec![2.0 / 3.0, 0.5, 0.0]);
        assert_eq!(c.recall, vec![2.0 / 3.0, 0.5, 0.0]);
        assert!((c.f1[0] - 2.0 / 3.0).abs() < 1e-12 && (c.f1[1] - 0.5).abs() < 1e-12 && c.f1[2] == 0.0);
        assert!((c.macro_f1 - (2.0 / 3.0 + 0.5) / 3.0).abs() < 1e-12);
    }

    #[test]
    fn repeated_names_take_the_first_free_suffix() {
        let names = |given: &[&str]| distinct(given.iter().map(|n| n.to_string()));
        assert_eq!(names(&["p", "q"]), ["p", "q"]);
        assert_eq!(names(&["p", "p", "p"]), ["p", "p_2", "p_3"]);
        // A name given later is not taken by a repeat before it.
        assert_eq!(names(&["p", "p", "p_2"]), ["p", "p_3", "p_2"]);
    }

    #[test]
    fn roc_auc_counts_ordered_pairs_and_half_ties() {
        let positive = [false, false, true, true];
        assert_eq!(roc_auc(&[0.1, 0.2, 0.8, 0.9], &positive), Some(1.0));
        assert_eq!(roc_auc(&[0.9, 0.8, 0.2, 0.1], &positive), Some(0.0));
        assert_eq!(roc_auc(&[0.5; 4], &positive), Some(0.5));
        // (negative, positive) pairs: (0.1, 0.3) and (0.1, 0.4) in order, (0.4, 0.3) not, (0.4, 0.4) tied.
        assert_eq!(roc_auc(&[0.1, 0.4, 0.3, 0.4], &positive), Some((1.0 + 0.0 + 1.0 + 0.5) / 4.0));
        assert_eq!(roc_auc(&[0.1, 0.2], &[true, true]), None);
    }

    /// The rank sum equals counting every (negative, positive) pair, on
    /// scores with many ties.
    #[test]
    fn roc_auc_equals_the_pair_count() {
        let scores: Vec<f32> = (0..300).map(|i| ((i * 7919) % 53) as f32 / 53.0).collect();
        let positive: Vec<bool> = (0..300).map(|i| (i * 104_729) % 7 < 3).collect();
        let (mut wins, mut pairs) = (0.0, 0.0);
        for (n, _) in scores.iter().zip(&positive).filter(|(_, p)| !**p) {
            for (p, _) in scores.iter().zip(&positive).filter(|(_, p)| **p) {
                pairs += 1.0;
                wins += if p > n {
                    1.0
                } else if p == n {
                    0.5
                } else {
                    0.0
                };
            }
        }
        let auc = roc_auc(&scores, &positive).expect("both kinds");
        assert!((auc - wins / pairs).abs() < 1e-12, "{auc} vs {}", wins / pairs);
    }
}
