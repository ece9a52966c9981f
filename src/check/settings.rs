//! The training settings of a checked model: the optimizer and its
//! schedule, the batch, the data and its preprocessing, as the `train`
//! block resolves them.

use crate::diag::Span;

#[derive(Debug, Clone, PartialEq)]
pub enum Optimizer {
    Gd,
    Sgd,
    Momentum { momentum: f64 },
    Nesterov { momentum: f64 },
    Adam { beta1: f64, beta2: f64, eps: f64 },
    Anneal { temperature: f64, cooling: f64, scale: f64 },
    ContrastiveDivergence { k: usize },
}

impl Optimizer {
    pub fn keyword(&self) -> &'static str {
        match self {
            Optimizer::Gd => "gd",
            Optimizer::Sgd => "sgd",
            Optimizer::Momentum { .. } => "momentum",
            Optimizer::Nesterov { .. } => "nesterov",
            Optimizer::Adam { .. } => "adam",
            Optimizer::Anneal { .. } => "anneal",
            Optimizer::ContrastiveDivergence { .. } => "cd",
        }
    }
}

/// `pretrain = cd(k, epochs, lr)`: CD-k for `epochs` epochs per RBM.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Pretrain {
    pub k: usize,
    pub epochs: usize,
    pub lr: f64,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Schedule {
    Constant,
    /// lr · gamma^(epoch / every)
    Step {
        every: usize,
        gamma: f64,
    },
    /// lr · gamma^epoch
    Exponential {
        gamma: f64,
    },
    /// min_lr + (lr − min_lr)·(1 + cos(π·epoch/epochs))/2
    Cosine {
        min_lr: f64,
    },
    /// lr · factor^(cuts), a cut after more than `patience` epochs whose
    /// watched loss is not `threshold` (relative) below the best; never
    /// below `min_lr` (see `train::plateau`).
    Plateau {
        factor: f64,
        patience: usize,
        threshold: f64,
        min_lr: f64,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Batch {
    Full,
    Size(usize),
}

/// Where training data comes from when the command line does not say.
#[derive(Debug, Clone, PartialEq)]
pub enum DataSource {
    /// A data set compiled into nnc: `builtin("digits")`.
    Builtin { name: String },
    /// `csv("train.csv", test = "test.csv", target = "label", features = ["a", "b"])`
    Csv { train: String, test: Option<String>, columns: Columns },
    /// `idx("images", "labels", test_images = …, test_labels = …)`
    Idx { images: String, labels: String, test_images: Option<String>, test_labels: Option<String> },
}

impl DataSource {
    /// The CSV columns the model's data names (by position when it names none).
    pub fn columns(&self) -> Columns {
        match self {
            DataSource::Csv { columns, .. } => columns.clone(),
            _ => Columns::default(),
        }
    }
}

/// Which columns of a CSV feed the model: by header name, or by position
/// where no names are given.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Columns {
    /// The target's columns, in order (empty: the last column or columns).
    pub target: Vec<String>,
    /// The input's columns, in order (empty: every column but the target's).
    pub features: Vec<String>,
    /// Where `target = …` and `features = …` are written.
    pub target_span: Option<Span>,
    pub features_span: Option<Span>,
}

/// Input preprocessing applied by the data loader.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Preprocess {
    None,
    /// Divide every feature by this (e.g. 255 for pixels, 16 for digits).
    Scale(f64),
    /// Zero mean and unit variance per feature, fitted on the training split.
    Standardize,
}

#[derive(Debug, Clone, PartialEq)]
pub struct TrainConfig {
    pub optimizer: Optimizer,
    pub lr: f64,
    pub schedule: Schedule,
    pub batch: Batch,
    pub epochs: usize,
    pub clip_norm: Option<f64>,
    pub clip_value: Option<f64>,
    /// Adds `l2/2 · ‖w‖²` to the loss for every weight matrix (not biases).
    pub l2: f64,
    /// Decoupled decay `w ← w − lr·weight_decay·w` on weight matrices.
    pub weight_decay: f64,
    pub seed: u64,
    /// Fraction of the training rows held out for validation.
    pub validation: f64,
    /// Early stopping: end training when the validation loss has not
    /// improved for this many epochs, keeping the best epoch's weights.
    pub patience: Option<usize>,
    /// Learning-rate warmup: over this many first epochs the rate rises
    /// linearly, step by step, to the schedule's.
    pub warmup: usize,
    pub data: Option<DataSource>,
    /// Where `data = …` is written (for messages about its files).
    pub data_span: Option<Span>,
    pub preprocess: Preprocess,
    /// Regression targets learnt standardised (per column, from the
    /// training rows) and predicted in their original units.
    pub standardize_target: bool,
    /// Greedy layer-wise RBM pretraining before fine-tuning.
    pub pretrain: Option<Pretrain>,
}

impl TrainConfig {
    /// The settings without where they are written, to compare two files'.
    pub fn without_positions(&self) -> TrainConfig {
        let data = self.data.clone().map(|source| match source {
            DataSource::Csv { train, test, columns } => {
                let columns = Columns { target_span: None, features_span: None, ..columns };
                DataSource::Csv { train, test, columns }
            }
            other => other,
        });
        TrainConfig { data, data_span: None, ..self.clone() }
    }
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            optimizer: Optimizer::Sgd,
            lr: 0.01,
            schedule: Schedule::Constant,
            batch: Batch::Size(32),
            epochs: 10,
            clip_norm: None,
            clip_value: None,
            l2: 0.0,
            weight_decay: 0.0,
            seed: 0,
            validation: 0.0,
            patience: None,
            warmup: 0,
            data: None,
            data_span: None,
            preprocess: Preprocess::None,
            standardize_target: false,
            pretrain: None,
        }
    }
}
