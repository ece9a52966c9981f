//! The checked model: every name resolved, every shape known, every
//! hyperparameter in range. Built only by `check::check_model`.

use crate::check::settings::TrainConfig;
use crate::diag::Span;
pub use nnc_runtime::kernels::Taps;

/// One sample's shape; the batch dimension is implicit.
pub type Shape = Vec<usize>;

/// What an input holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputKind {
    /// Real-valued features or images: `[3]`, `[1, 28, 28]`.
    Real,
    /// A sequence of feature vectors `[T, F]`, read along the first axis.
    Seq,
    /// Integer token ids `[T]`, fed to an `embedding`.
    Tokens,
}

#[derive(Debug, Clone)]
pub struct InputSpec {
    pub name: String,
    pub kind: InputKind,
    pub shape: Shape,
    pub span: Span,
}

/// What a target holds; this decides which losses and metrics apply.
#[derive(Debug, Clone, PartialEq)]
pub enum TargetKind {
    /// An integer class id in `0..classes`.
    Class(usize),
    /// Real values of the given shape (regression).
    Real(Shape),
    /// Values in {0, 1} of the given shape (binary cross-entropy).
    Binary(Shape),
}

#[derive(Debug, Clone)]
pub struct TargetSpec {
    pub name: String,
    pub kind: TargetKind,
    pub span: Span,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Activation {
    Sigmoid,
    Tanh,
    Relu,
    LeakyRelu(f64),
    Elu(f64),
    /// `tanh`: the tanh approximation instead of the exact erf form.
    Gelu {
        tanh: bool,
    },
    Silu,
    Softplus,
    Softmax,
    Identity,
    /// min(max(x, lo), hi), a missing bound infinite: relu6, hardtanh.
    Clip(f64, f64),
}

/// Where a layer's weight matrix comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Weights {
    /// Its own, freshly initialised.
    Own,
    /// The same matrix as an earlier layer (node index).
    Shared(usize),
    /// The transpose of an earlier dense layer's matrix (node index).
    Tied(usize),
}

/// A layer with its hyperparameters resolved.
#[derive(Debug, Clone, PartialEq)]
pub enum Layer {
    Dense {
        units: usize,
        bias: bool,
        weights: Weights,
    },
    /// A convolution along sequences `[C, L]`: `taps` along the length.
    Conv1d {
        filters: usize,
        taps: Taps,
        bias: bool,
        groups: usize,
    },
    /// The kernel along the height (`rows`) and the width (`cols`).
    Conv2d {
        filters: usize,
        rows: Taps,
        cols: Taps,
        bias: bool,
        /// The channels and filters split into this many groups, each
        /// filter reading its group's channels only (PyTorch's `groups`).
        groups: usize,
    },
    /// `padding` on each side is never a window's largest value, and is
    /// zeros in an average (PyTorch's `count_include_pad`).
    MaxPool {
        kernel: usize,
        stride: usize,
        padding: usize,
    },
    AvgPool {
        kernel: usize,
        stride: usize,
        padding: usize,
    },
    /// Each channel's mean over its whole feature map: `[C, H, W]` → `[C]`.
    GlobalAvgPool,
    /// Nearest-neighbour upsampling: each value becomes a `factor × factor` block.
    Upsample {
        factor: usize,
    },
    Flatten,
    Reshape {
        shape: Shape,
    },
    Dropout {
        p: f64,
    },
    BatchNorm {
        momentum: f64,
        eps: f64,
    },
    /// Normalises each sample over all its values, then scales and shifts
    /// every value (γ, β of the sample's shape).
    LayerNorm {
        eps: f64,
    },
    Maxout {
        units: usize,
        pieces: usize,
    },
    /// A recurrent layer over a sequence `[steps, features]`: its last
    /// state `[hidden]`, or with `sequences` every step's `[steps, hidden]`.
    /// A `bidirectional` one also reads the sequence backwards, with
    /// weights of its own, and puts that direction's states after the
    /// forward one's (`2·hidden` features; its last state is the one after
    /// reading the first step).
    Recurrent {
        cell: Cell,
        hidden: usize,
        sequences: bool,
        bidirectional: bool,
    },
    Embedding {
        vocab: usize,
        dim: usize,
    },
    Rbm {
        hidden: usize,
    },
    Activation(Activation),
    Add,
    /// Another value's features (or channels) after this one's.
    Concat,
}

impl Layer {
    /// The layer's name as the user writes it.
    pub fn keyword(&self) -> &'static str {
        match self {
            Layer::Dense { .. } => "dense",
            Layer::Conv1d { .. } => "conv1d",
            Layer::Conv2d { .. } => "conv2d",
            Layer::MaxPool { .. } => "maxpool",
            Layer::AvgPool { .. } => "avgpool",
            Layer::GlobalAvgPool => "global_avgpool",
            Layer::Upsample { .. } => "upsample",
            Layer::Flatten => "flatten",
            Layer::Reshape { .. } => "reshape",
            Layer::Dropout { .. } => "dropout",
            Layer::BatchNorm { .. } => "batchnorm",
            Layer::LayerNorm { .. } => "layernorm",
            Layer::Maxout { .. } => "maxout",
            Layer::Recurrent { cell, .. } => cell.keyword(),
            Layer::Embedding { .. } => "embedding",
            Layer::Rbm { .. } => "rbm",
            Layer::Activation(a) => match a {
                Activation::Sigmoid => "sigmoid",
                Activation::Tanh => "tanh",
                Activation::Relu => "relu",
                Activation::LeakyRelu(_) => "leaky_relu",
                Activation::Elu(_) => "elu",
                Activation::Gelu { .. } => "gelu",
                Activation::Silu => "silu",
                Activation::Softplus => "softplus",
                Activation::Softmax => "softmax",
                Activation::Identity => "identity",
                Activation::Clip(..) => "clip",
            },
            Layer::Add => "add",
            Layer::Concat => "concat",
        }
    }
}

/// What a recurrent layer computes at each step, in PyTorch's formulation
/// (and with its parameters' names, layouts and gate order).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cell {
    /// Elman: h′ = tanh(z).
    Rnn,
    /// Long short-term memory: gates i, f, g, o and a cell state.
    Lstm,
    /// Gated recurrent unit: gates r, z, n, the reset gate applied to the
    /// recurrent product (ONNX's `linear_before_reset = 1`).
    Gru,
}

impl Cell {
    pub fn keyword(self) -> &'static str {
        match self {
            Cell::Rnn => "rnn",
            Cell::Lstm => "lstm",
            Cell::Gru => "gru",
        }
    }

    /// How many blocks of `hidden` rows its weights and biases stack.
    pub fn gates(self) -> usize {
        match self {
            Cell::Rnn => 1,
            Cell::Lstm => 4,
            Cell::Gru => 3,
        }
    }
}

/// A value in the dataflow graph: a model input or a layer's output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ValueRef {
    Input(usize),
    Target(usize),
    Node(usize),
}

/// One layer application in the checked graph.
#[derive(Debug, Clone)]
pub struct Node {
    /// Unique name: the user's `as` label, or the keyword and a counter (`dense2`).
    pub name: String,
    pub layer: Layer,
    pub inputs: Vec<ValueRef>,
    pub shape: Shape,
    /// Trainable parameters this node owns.
    pub params: usize,
    /// Forward multiply-adds per sample.
    pub macs: u64,
    /// How the output shape came about, as shape diagnostics show it.
    pub why: String,
    pub span: Span,
    /// The initialiser chosen for the weights (`init = …`); None: he
    /// before a relu-family activation, else xavier.
    pub init: Option<WeightInit>,
    /// `trainable = false`: the layer's parameters keep their values (a
    /// loaded checkpoint's, for fine-tuning) while the rest trains.
    pub frozen: bool,
}

/// A layer's weight initialiser, as `init = he | xavier | normal(σ) | zeros` names it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum WeightInit {
    He,
    Xavier,
    Normal(f64),
    Zeros,
}

/// The value one stage of a pipeline produced.
#[derive(Debug, Clone)]
pub struct StageOutput {
    pub span: Span,
    pub value: ValueRef,
}

/// A name the model defines: an input, a target or a pipeline's `=> name`.
#[derive(Debug, Clone)]
pub struct NamedValue {
    pub name: String,
    pub value: ValueRef,
    /// Where the name is written in its definition.
    pub span: Span,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LossKind {
    Mse,
    CrossEntropy,
    BinaryCrossEntropy,
}

/// The most classes class weights are taken for: the compiled step keeps
/// them in its stack frame.
pub const MAX_CLASS_WEIGHTS: usize = 4096;

#[derive(Debug, Clone)]
pub struct LossSpec {
    pub kind: LossKind,
    pub prediction: ValueRef,
    pub target: ValueRef,
    /// `cross_entropy(…, weights = [w₀, …])`: each row's loss counts its
    /// class's weight times (the batch mean stays a division by the rows).
    pub class_weights: Option<Vec<f64>>,
    /// `0.5 * mse(…)`: this term's weight in the summed loss (default 1).
    pub weight: f64,
    pub span: Span,
}

/// The declared targets the losses read, in declaration order, once each.
pub fn row_targets(losses: &[LossSpec]) -> Vec<usize> {
    let mut targets: Vec<usize> =
        losses.iter().filter_map(|l| if let ValueRef::Target(t) = l.target { Some(t) } else { None }).collect();
    targets.sort_unstable();
    targets.dedup();
    targets
}

/// A model that passed every static check.
#[derive(Debug, Clone)]
pub struct CheckedModel {
    pub name: String,
    pub inputs: Vec<InputSpec>,
    pub targets: Vec<TargetSpec>,
    pub nodes: Vec<Node>,
    /// Every name defined, in source order.
    pub values: Vec<NamedValue>,
    /// What each stage written in a model's pipelines produced (a `repeat`
    /// or a block call is one stage), in source order.
    pub stages: Vec<StageOutput>,
    /// The loss terms the model minimises the weighted sum of (none for an
    /// RBM trained by contrastive divergence).
    pub losses: Vec<LossSpec>,
    pub train: TrainConfig,
    pub span: Span,
}

impl CheckedModel {
    pub fn shape_of(&self, v: ValueRef) -> Shape {
        match v {
            ValueRef::Input(i) => self.inputs[i].shape.clone(),
            ValueRef::Target(t) => match &self.targets[t].kind {
                TargetKind::Class(_) => vec![1],
                TargetKind::Real(s) | TargetKind::Binary(s) => s.clone(),
            },
            ValueRef::Node(n) => self.nodes[n].shape.clone(),
        }
    }

    /// The declared targets a data row holds, in declaration order: those
    /// the losses compare with, each target's values after the previous one's.
    pub fn row_targets(&self) -> Vec<usize> {
        row_targets(&self.losses)
    }

    /// Values per data row across every input: a model with several inputs
    /// reads them from one row, each input's values after the previous one's.
    pub fn input_width(&self) -> usize {
        self.inputs.iter().map(|i| i.shape.iter().product::<usize>()).sum()
    }

    pub fn total_params(&self) -> usize {
        self.nodes.iter().map(|n| n.params).sum()
    }

    pub fn total_macs(&self) -> u64 {
        self.nodes.iter().map(|n| n.macs).sum()
    }

    /// What differs between this model and `other` in what they compute
    /// and how they train (names, layers, shapes, loss, settings), as short
    /// phrases; empty when only comments, spacing or positions changed.
    pub fn differences_from(&self, other: &CheckedModel) -> Vec<String> {
        let mut out = Vec::new();
        let inputs = |m: &CheckedModel| m.inputs.iter().map(|i| (i.name.clone(), i.shape.clone())).collect::<Vec<_>>();
        if inputs(self) != inputs(other) {
            out.push("the inputs".to_string());
        }
        let targets = |m: &CheckedModel| m.targets.iter().map(|t| (t.name.clone(), t.kind.clone())).collect::<Vec<_>>();
        if targets(self) != targets(other) {
            out.push("the targets".to_string());
        }
        let layer = |n: &Node| (n.name.clone(), n.layer.clone(), n.shape.clone(), n.inputs.clone());
        for (a, b) in self.nodes.iter().zip(&other.nodes) {
            if layer(a) != layer(b) {
                out.push(format!("layer `{}`", a.name));
            }
        }
        if self.nodes.len() != other.nodes.len() {
            out.push(format!("the number of layers ({} and {})", self.nodes.len(), other.nodes.len()));
        }
        let losses = |m: &CheckedModel| -> Vec<_> {
            m.losses.iter().map(|l| (l.kind, l.prediction, l.target, l.weight, l.class_weights.clone())).collect()
        };
        if losses(self) != losses(other) {
            out.push("the loss".to_string());
        }
        if self.train.without_positions() != other.train.without_positions() {
            out.push("the training settings".to_string());
        }
        out
    }

    /// The activation layers whose outputs are vectors (after dense-like
    /// layers) or feature maps (after convolutions), softmax aside, in
    /// order: those whose outputs training's health report describes, per
    /// feature or per channel.
    pub fn activation_layers(&self) -> Vec<&Node> {
        let activation = |n: &&Node| {
            matches!(&n.layer, Layer::Activation(a) if *a != Activation::Softmax) && matches!(n.shape.len(), 1 | 3)
        };
        self.nodes.iter().filter(activation).collect()
    }

    /// About how much memory a training step at `batch` rows takes (see `training_memory`).
    pub fn training_memory(&self, batch: usize) -> super::memory::TrainingMemory {
        super::memory::training_memory(&self.nodes, &self.inputs, &self.train.optimizer, batch)
    }
}
