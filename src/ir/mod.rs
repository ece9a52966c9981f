//! The graph IR: a small closed set of primitive ops over tensors with static
//! shapes (the batch dimension included).
//!
//! Nodes are stored in topological order: a node's inputs always come before
//! it. Every node keeps the span of the source it came from. The forward
//! pass, its gradient and the optimizer update are all expressed in this IR,
//! so the interpreter (and later backends) run all three the same way.

mod fuse;
pub mod init;
mod loss;
pub mod lower;
mod print;
mod verify;

use std::fmt;

use nnc_runtime::Hypers;

use crate::diag::Span;

pub use crate::shape::{Shape, around, numel, window};
pub use fuse::fuse_activations;
pub use lower::{lower, lower_shard};
pub use nnc_runtime::kernels::Taps;
pub use verify::verify;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ValueId(pub usize);

impl fmt::Display for ValueId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "%{}", self.0)
    }
}

/// Scalars the trainer sets before each step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hyper {
    /// The learning rate of this step (after the schedule).
    Lr,
    /// Adam's bias corrections 1/(1 − β₁ᵗ) and 1/(1 − β₂ᵗ).
    Bias1,
    Bias2,
    /// The number of the step (1, 2, …), which keys the dropout masks.
    Step,
}

impl Hyper {
    /// Where this scalar lives in the runtime's `Hypers`, in f32 elements.
    pub fn offset(self) -> usize {
        use std::mem::offset_of;
        let bytes = match self {
            Hyper::Lr => offset_of!(Hypers, lr),
            Hyper::Bias1 => offset_of!(Hypers, bias1),
            Hyper::Bias2 => offset_of!(Hypers, bias2),
            Hyper::Step => offset_of!(Hypers, step),
        };
        bytes / std::mem::size_of::<f32>()
    }
}

/// An element-wise function of one tensor.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Unary {
    Identity,
    Relu,
    LeakyRelu(f64),
    Elu(f64),
    /// x·Φ(x), Φ the standard normal distribution function (exact, by erfc).
    Gelu,
    /// x·σ(2·√(2/π)·(x + 0.044715x³)): the tanh approximation of gelu,
    /// written with σ so that nothing cancels for negative x.
    GeluTanh,
    /// x·σ(x), also called swish.
    Silu,
    /// log(1 + eˣ), computed as max(x, 0) + log(1 + e⁻ˡˣˡ).
    Softplus,
    Sigmoid,
    Tanh,
    Exp,
    Log,
    Sqrt,
    Square,
    Neg,
    /// x · c
    Scale(f64),
    /// x + c
    AddConst(f64),
    /// min(max(x, lo), hi); its derivative is 1 strictly inside (lo, hi), 0
    /// at and beyond the bounds, as PyTorch's hardtanh and relu6 take it.
    Clamp(f64, f64),
    /// 1 where |x| > c, else 0: counts saturated units (training health)
    /// and keeps optimizer state out of the subnormal floats.
    Beyond(f64),
}

/// The primitive operations. Every pass matches on this enum without a
/// wildcard arm, so a new op makes the compiler list every place to update.
#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    // ---- leaves -------------------------------------------------------
    /// The model's i-th input, a batch of samples.
    Input(usize),
    /// The model's i-th target: class ids `[B]` or values `[B, …]`.
    Target(usize),
    /// A trainable parameter.
    Param(usize),
    /// Optimizer state (momentum, Adam moments), same shape as its parameter.
    State(usize),
    /// A scalar set by the trainer each step.
    Hyper(Hyper),
    /// A tensor filled with one constant.
    Const(f64),

    // ---- element-wise ------------------------------------------------------
    Unary(Unary),
    /// Gradient of a unary op: inputs `[x, y, g]` with y = f(x), out = g·f′(x).
    UnaryGrad(Unary),
    Add,
    Sub,
    Mul,
    Div,
    /// `[x, s]`: every element of x times the scalar s.
    MulScalar,

    // ---- linear algebra --------------------------------------------------------
    /// `[a, b]` → op(a)·op(b) with op = transpose where the flag is set;
    /// `[a, b, bias [N]]` adds the bias to every row, and with `relu` the
    /// ReLU of the result (both `fuse_activations`, in the pass that
    /// stores the product).
    MatMul {
        ta: bool,
        tb: bool,
        relu: bool,
    },
    /// `[x [B, N], b [N]]` → x + b on every row.
    AddBias,
    /// `[x [B, N]]` → Σ over rows `[N]`.
    SumRows,
    /// Same data, new shape.
    Reshape,

    // ---- images and maxout ---------------------------------------------------------
    /// `[x [B,C,H,W], w [F,C/G,KH,KW]]` or `[x, w, b [F]]` → `[B,F,OH,OW]`,
    /// zero padding, taps `dilation` apart, the kernel along the height
    /// (`rows`) and the width (`cols`); the channels and filters split into
    /// G = `groups` (1: none), each filter reading its group's channels
    /// only. The bias is added in the same pass, and with `relu`
    /// (`fuse_activations`) the ReLU of the result.
    Conv2d {
        rows: Taps,
        cols: Taps,
        groups: usize,
        relu: bool,
    },
    /// `[w, g]` → ∂x `[B,C,H,W]` (the node's shape gives the input size).
    /// With `relu` (`fuse_activations`), `[w, g, y]` → ∂x · [y > 0]: the
    /// gradient through the ReLU whose output y the convolution read.
    Conv2dGradInput {
        rows: Taps,
        cols: Taps,
        groups: usize,
        relu: bool,
    },
    /// `[x, g]` → ∂w `[F,C/G,KH,KW]`.
    Conv2dGradWeight {
        rows: Taps,
        cols: Taps,
        groups: usize,
    },
    /// `[x [B,F,…], b [F]]` → x + b per channel.
    AddChannelBias,
    /// `[g [B,F,…]]` → Σ per channel `[F]`.
    SumChannels,
    /// `[a, b]` (both `[B,F,…]`) → Σ a·b per channel `[F]`, each product
    /// rounded as if stored: in one pass over a and b, with no product
    /// stored (batch normalisation's variance and scale gradient).
    SumProductChannels,
    /// `[x [B,F,…], s [F]]` → x · s per channel (batch normalisation's scales).
    MulChannel,
    /// `[x [B,C,H,W]]` → max or mean over each window, its taps along the
    /// height (`rows`; one row for a sequence's pooling) and the width.
    Pool {
        max: bool,
        rows: Taps,
        cols: Taps,
    },
    /// `[x, g]` → ∂x; with `relu` (`fuse_activations`, max pooling of a
    /// ReLU's output y = x) the ReLU's gradient too: ∂x · [x > 0].
    PoolGrad {
        max: bool,
        rows: Taps,
        cols: Taps,
        relu: bool,
    },
    /// `[x [B,C,H,W]]` → `[B,C,H·f,W·f]`, each value repeated over an f × f
    /// block (nearest neighbour). Its gradient is the sum over each block.
    Upsample(usize),
    /// `[x, step]` → inverted dropout: x/(1 − p) where the mask keeps the
    /// element, else 0. The mask is a hash of (salt, step, first + element),
    /// so it is reproducible and the same in the backward pass; `first` is
    /// where this batch's elements start in the whole batch when the batch
    /// is split over processes (else 0).
    Dropout {
        p: f64,
        salt: u64,
        first: usize,
    },
    /// `[p, step]` → 1 where a uniform draw keyed by (salt, step, element)
    /// falls below p, else 0: sampling binary units, reproducibly.
    Bernoulli {
        salt: u64,
    },
    /// `[x [B, U·P]]` → `[B, U]`, the max of each unit's P pieces.
    MaxPieces(usize),
    /// `[x, g]` → ∂x, routed to each unit's winning piece.
    MaxPiecesGrad(usize),

    // ---- sequences --------------------------------------------------------------
    /// `[x]` → the positions `start..start + len` of `axis` (len from the
    /// node's shape): one time step of a sequence, or one gate of an LSTM.
    Slice {
        axis: usize,
        start: usize,
    },
    /// `[g]` → zeros of the node's shape with g placed where `Slice` took it
    /// from: the gradient of a slice no other slice of its value sits beside.
    SliceGrad {
        axis: usize,
        start: usize,
    },
    /// `[parts…]` → the parts side by side along `axis`, in order: time
    /// steps stacked into a sequence, layers' outputs joined, and the
    /// gradient of a value whose slices (a sequence's steps, an LSTM's
    /// gates) lie side by side, in one pass rather than one per slice.
    Concat {
        axis: usize,
    },
    /// `[ids [B, T], table [V, D]]` → `[B, T, D]`, row `ids[b, t]` of the
    /// table (zeros for an id outside 0..V).
    Gather,
    /// `[ids, g [B, T, D]]` → ∂table `[V, D]`: each g row added to its id's row.
    GatherGrad,

    // ---- rows and losses --------------------------------------------------------
    /// Softmax over the last axis.
    Softmax,
    /// `[y, g]` with y = softmax(x) → y·(g − Σ g·y).
    SoftmaxGrad,
    /// `[logits [B, K], classes [B]]` → mean over the batch of −log softmax(logits)[class];
    /// with a third input, row weights `[B]`, each row's term is multiplied
    /// by its weight (the mean still divides by B).
    SoftmaxCrossEntropy,
    /// `[logits, classes, g]` or `[logits, classes, g, row weights]` →
    /// g·w·(softmax(logits) − onehot)/B.
    SoftmaxCrossEntropyGrad,
    /// `[classes [B]]` → `[B]`, each row's class's weight (0 for a label
    /// that is not a class: the loss reports it).
    ClassWeights(Vec<f64>),
    /// `[p, t]` → mean of (p − t)² over all elements.
    Mse,
    /// `[p, t, g]` → g·2(p − t)/n.
    MseGrad,
    /// `[p, t]` → mean of −(t·log p + (1 − t)·log(1 − p)), p clamped to [ε, 1 − ε].
    Bce,
    /// `[p, t, g]` → g·(p − t)/(p(1 − p))/n, with the same clamp.
    BceGrad,

    // ---- reductions for the optimizer --------------------------------------------
    /// `[x]` → Σ x² (scalar).
    SumSquares,
    /// `[n²]` → min(1, c/√n²): the factor that clips a gradient's global norm to c.
    ClipScale(f64),

    // ---- data parallelism ---------------------------------------------------------
    /// `[x]` → Σ of x over every process training together (x itself when
    /// alone): gradients, and batch normalisation's batch sums.
    AllReduce,
}

impl Op {
    /// op(a)·op(b), nothing fused into it.
    pub fn matmul(ta: bool, tb: bool) -> Op {
        Op::MatMul { ta, tb, relu: false }
    }

    pub fn name(&self) -> String {
        match self {
            Op::Input(i) => format!("input{i}"),
            Op::Target(i) => format!("target{i}"),
            Op::Param(i) => format!("param{i}"),
            Op::State(i) => format!("state{i}"),
            Op::Hyper(h) => format!("{h:?}").to_lowercase(),
            Op::Const(c) => format!("const({c})"),
            Op::Unary(u) => format!("{u:?}").to_lowercase(),
            Op::UnaryGrad(u) => format!("{u:?}_grad").to_lowercase(),
            Op::Add => "add".into(),
            Op::Sub => "sub".into(),
            Op::Mul => "mul".into(),
            Op::Div => "div".into(),
            Op::MulScalar => "mul_scalar".into(),
            Op::MatMul { ta, tb, relu } => {
                let flag = |set: bool, name: &'static str| if set { name } else { "" };
                format!("matmul{}{}{}", flag(*ta, ".ta"), flag(*tb, ".tb"), flag(*relu, "_relu"))
            }
            Op::AddBias => "add_bias".into(),
            Op::SumRows => "sum_rows".into(),
            Op::Reshape => "reshape".into(),
            Op::Softmax => "softmax".into(),
            Op::SoftmaxGrad => "softmax_grad".into(),
            Op::SoftmaxCrossEntropy => "softmax_cross_entropy".into(),
            Op::SoftmaxCrossEntropyGrad => "softmax_cross_entropy_grad".into(),
            Op::ClassWeights(w) => format!("class_weights({w:?})"),
            Op::Mse => "mse".into(),
            Op::MseGrad => "mse_grad".into(),
            Op::Bce => "bce".into(),
            Op::BceGrad => "bce_grad".into(),
            Op::SumSquares => "sum_squares".into(),
            Op::Conv2d { rows, cols, groups, .. }
            | Op::Conv2dGradInput { rows, cols, groups, .. }
            | Op::Conv2dGradWeight { rows, cols, groups } => {
                let name = match self {
                    Op::Conv2d { relu: true, .. } => "conv2d_relu",
                    Op::Conv2d { .. } => "conv2d",
                    Op::Conv2dGradInput { relu: true, .. } => "conv2d_relu_grad_input",
                    Op::Conv2dGradInput { .. } => "conv2d_grad_input",
                    _ => "conv2d_grad_weight",
                };
                let groups = if *groups == 1 { String::new() } else { format!(",g{groups}") };
                format!("{name}({}{groups})", window_text(rows, cols))
            }
            Op::AddChannelBias => "add_channel_bias".into(),
            Op::SumChannels => "sum_channels".into(),
            Op::SumProductChannels => "sum_product_channels".into(),
            Op::MulChannel => "mul_channel".into(),
            Op::Pool { max, rows, cols } => {
                format!("{}({})", if *max { "maxpool" } else { "avgpool" }, window_text(rows, cols))
            }
            Op::PoolGrad { max, rows, cols, relu } => {
                let relu = if *relu { "_relu" } else { "" };
                format!("{}{relu}_grad({})", if *max { "maxpool" } else { "avgpool" }, window_text(rows, cols))
            }
            Op::Upsample(f) => format!("upsample({f})"),
            Op::MaxPieces(p) => format!("max_pieces({p})"),
            Op::Dropout { p, salt, first } => format!("dropout({p},{salt:x},+{first})"),
            Op::MaxPiecesGrad(p) => format!("max_pieces_grad({p})"),
            Op::Slice { axis, start } => format!("slice(axis {axis}, from {start})"),
            Op::SliceGrad { axis, start } => format!("slice_grad(axis {axis}, from {start})"),
            Op::Concat { axis } => format!("concat(axis {axis})"),
            Op::Gather => "gather".into(),
            Op::Bernoulli { salt } => format!("bernoulli({salt:x})"),
            Op::GatherGrad => "gather_grad".into(),
            Op::ClipScale(c) => format!("clip_scale({c})"),
            Op::AllReduce => "all_reduce".into(),
        }
    }
}

/// A window's taps as an op's name shows them: `k3,s1,p1`, each number
/// once for a square window and `3x5` (height × width) otherwise, `,d2`
/// when dilated.
fn window_text(rows: &Taps, cols: &Taps) -> String {
    let both = |a: usize, b: usize| if a == b { a.to_string() } else { format!("{a}x{b}") };
    let (k, s, p) = (both(rows.kernel, cols.kernel), both(rows.stride, cols.stride), both(rows.padding, cols.padding));
    let dilated = match (rows.dilation, cols.dilation) {
        (1, 1) => String::new(),
        (a, b) => format!(",d{}", both(a, b)),
    };
    format!("k{k},s{s},p{p}{dilated}")
}

#[derive(Debug, Clone)]
pub struct Node {
    pub op: Op,
    pub inputs: Vec<ValueId>,
    pub shape: Shape,
    pub span: Span,
}

/// How a parameter is initialised.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Init {
    Zeros,
    /// Batch normalisation's scale γ starts as the identity.
    Ones,
    /// Zeros except `value` in `start..end` (an LSTM's forget-gate bias).
    Range {
        start: usize,
        end: usize,
        value: f64,
    },
    /// Normal with the given standard deviation (embeddings, as PyTorch).
    Normal {
        std: f64,
    },
    /// Normal with std √(2/fan_in): for relu-family activations.
    He {
        fan_in: usize,
    },
    /// Uniform in ±√(6/(fan_in + fan_out)): for sigmoid, tanh and linear outputs.
    Xavier {
        fan_in: usize,
        fan_out: usize,
    },
}

#[derive(Debug, Clone)]
pub struct ParamInfo {
    /// `<layer>.weight` or `<layer>.bias`.
    pub name: String,
    pub shape: Shape,
    pub init: Init,
    /// Weight matrices take L2 / weight decay; biases do not.
    pub decay: bool,
    /// Its layer is `trainable = false`: no update, no optimizer state.
    pub frozen: bool,
}

/// A tensor a step reads and rewrites but never differentiates: optimizer
/// state, or a model buffer such as batch normalisation's running mean.
#[derive(Debug, Clone)]
pub struct StateInfo {
    pub name: String,
    pub shape: Shape,
    /// The value of every element before the first step.
    pub fill: f32,
    /// Part of the model (needed for inference, saved under its own name,
    /// as PyTorch saves buffers) rather than of the optimizer.
    pub buffer: bool,
}

/// Where a restricted Boltzmann machine sits in a graph: its visible input
/// and its parameters (weight `[H, V]`, hidden bias, visible bias).
#[derive(Debug, Clone, PartialEq)]
pub struct RbmInfo {
    pub visible: ValueId,
    pub weight: usize,
    pub hidden_bias: usize,
    pub visible_bias: usize,
    pub span: Span,
}

/// A forward graph: from inputs and parameters to a prediction and a loss.
#[derive(Debug, Clone)]
pub struct Graph {
    pub nodes: Vec<Node>,
    pub params: Vec<ParamInfo>,
    pub states: Vec<StateInfo>,
    pub batch: usize,
    /// Which rows of the whole batch these `batch` rows are.
    pub shard: Shard,
    /// The model's output (logits, probabilities or values), `[B, …]`.
    pub prediction: ValueId,
    /// The scalar loss, when the model has one.
    pub loss: Option<ValueId>,
    /// The restricted Boltzmann machines, in layer order, for contrastive divergence.
    pub rbms: Vec<RbmInfo>,
    /// The new value of each state, in training graphs that update model
    /// buffers (batch normalisation's running statistics); empty otherwise.
    pub state_updates: Vec<ValueId>,
}

/// The rows of a batch one process computes when the batch is split over
/// several (data-parallel training): `rows` of the `total`, from row
/// `first`. A whole batch is one shard of itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Shard {
    pub first: usize,
    pub rows: usize,
    pub total: usize,
}

impl Shard {
    pub fn whole(batch: usize) -> Shard {
        Shard { first: 0, rows: batch, total: batch }
    }

    /// Part `index` of `parts` near-equal parts of a batch of `total` rows
    /// (the first `total % parts` parts have one row more).
    pub fn part(total: usize, index: usize, parts: usize) -> Shard {
        let (base, extra) = (total / parts.max(1), total % parts.max(1));
        let first = index * base + index.min(extra);
        Shard { first, rows: base + usize::from(index < extra), total }
    }

    /// Whether other processes compute the rest of the batch.
    pub fn is_split(&self) -> bool {
        self.rows != self.total
    }
}

impl Graph {
    /// An empty graph for batches of `batch` samples.
    pub fn new(batch: usize) -> Graph {
        Graph {
            nodes: vec![],
            params: vec![],
            states: vec![],
            batch,
            shard: Shard::whole(batch),
            prediction: ValueId(0),
            loss: None,
            rbms: vec![],
            state_updates: vec![],
        }
    }

    pub fn node(&self, v: ValueId) -> &Node {
        &self.nodes[v.0]
    }

    pub fn shape(&self, v: ValueId) -> &Shape {
        &self.nodes[v.0].shape
    }

    /// Appends a node, computing nothing: callers give the output shape.
    pub fn push(&mut self, op: Op, inputs: Vec<ValueId>, shape: Shape, span: Span) -> ValueId {
        self.nodes.push(Node { op, inputs, shape, span });
        ValueId(self.nodes.len() - 1)
    }

    /// `parts` side by side along `axis` (the part itself when there is one).
    pub fn concat(&mut self, parts: Vec<ValueId>, axis: usize, span: Span) -> ValueId {
        if let [one] = parts[..] {
            return one;
        }
        let mut whole = self.shape(parts[0]).clone();
        whole[axis] = parts.iter().map(|&part| self.shape(part)[axis]).sum();
        self.push(Op::Concat { axis }, parts, whole, span)
    }
}

/// A training step: the forward graph extended with gradients and the
/// optimizer update. Running it yields the new parameters and state.
#[derive(Debug, Clone)]
pub struct TrainGraph {
    pub graph: Graph,
    /// Gradient of the loss for each parameter (by parameter index).
    pub grads: Vec<ValueId>,
    /// New value of each parameter after the step (by parameter index).
    pub new_params: Vec<ValueId>,
    /// New value of each optimizer state tensor (by state index).
    pub new_states: Vec<ValueId>,
    /// What each parameter's update subtracts from it (by parameter index;
    /// empty for steps that are not gradient descent).
    pub updates: Vec<ValueId>,
    /// Scalars the trainer reads back after each step (see
    /// `optim::observe_health`); empty unless asked for.
    pub observed: Vec<ValueId>,
}
