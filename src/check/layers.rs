//! The layer catalogue: each layer's parameters, and how it transforms the
//! shape of the value flowing into it (with a human-readable derivation, so a
//! shape error can show where a size came from).

use crate::ast::{Call, Ident, Value};
use crate::check::args::{Args, Bound};
use crate::check::model::{Activation, Cell, Layer, Shape, Taps, WeightInit, Weights};
use crate::diag::{Diag, Incoming, Span, messages};
use crate::shape::shape_text;

/// Every kind of layer. `apply` matches on it without a catch-all, so a new
/// kind does not compile until it has a shape rule, and `ir::lower` matches
/// on the resolved `Layer` the same way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayerKind {
    Dense,
    Conv1d,
    Conv2d,
    MaxPool,
    AvgPool,
    GlobalAvgPool,
    Upsample,
    Flatten,
    Reshape,
    Dropout,
    BatchNorm,
    LayerNorm,
    Maxout,
    Recurrent(Cell),
    Embedding,
    Rbm,
    Add,
    Concat,
    Sigmoid,
    Tanh,
    Relu,
    LeakyRelu,
    Elu,
    Gelu,
    Silu,
    Softplus,
    Clip,
    Softmax,
    Identity,
}

impl LayerKind {
    /// An element-wise function with no parameters of its own.
    pub fn is_activation(self) -> bool {
        match self {
            LayerKind::Sigmoid
            | LayerKind::Tanh
            | LayerKind::Relu
            | LayerKind::LeakyRelu
            | LayerKind::Elu
            | LayerKind::Gelu
            | LayerKind::Silu
            | LayerKind::Softplus
            | LayerKind::Clip
            | LayerKind::Softmax
            | LayerKind::Identity => true,
            LayerKind::Dense
            | LayerKind::Conv1d
            | LayerKind::Conv2d
            | LayerKind::MaxPool
            | LayerKind::AvgPool
            | LayerKind::GlobalAvgPool
            | LayerKind::Upsample
            | LayerKind::Flatten
            | LayerKind::Reshape
            | LayerKind::Dropout
            | LayerKind::BatchNorm
            | LayerKind::LayerNorm
            | LayerKind::Maxout
            | LayerKind::Recurrent(_)
            | LayerKind::Embedding
            | LayerKind::Rbm
            | LayerKind::Add
            | LayerKind::Concat => false,
        }
    }
}

/// A layer keyword: its kind, its parameters in positional order and the
/// required ones.
pub struct LayerSpec {
    pub keyword: &'static str,
    pub kind: LayerKind,
    pub params: &'static [&'static str],
    pub required: &'static [&'static str],
}

const fn layer(
    keyword: &'static str,
    kind: LayerKind,
    params: &'static [&'static str],
    required: &'static [&'static str],
) -> LayerSpec {
    LayerSpec { keyword, kind, params, required }
}

/// The arguments of every recurrent layer.
const RECURRENT: &[&str] = &["hidden", "sequences", "bidirectional", "trainable"];

/// The layer catalogue: every keyword a model may use.
pub const LAYERS: &[LayerSpec] = &[
    layer("dense", LayerKind::Dense, &["units", "bias", "tied", "shared", "in", "init", "trainable"], &["units"]),
    layer(
        "conv1d",
        LayerKind::Conv1d,
        &["filters", "kernel", "stride", "padding", "dilation", "groups", "bias", "in", "init", "trainable"],
        &["filters", "kernel"],
    ),
    layer(
        "conv2d",
        LayerKind::Conv2d,
        &["filters", "kernel", "stride", "padding", "dilation", "groups", "bias", "in", "init", "trainable"],
        &["filters", "kernel"],
    ),
    layer("maxpool", LayerKind::MaxPool, &["kernel", "stride", "padding"], &["kernel"]),
    layer("avgpool", LayerKind::AvgPool, &["kernel", "stride", "padding"], &["kernel"]),
    layer("global_avgpool", LayerKind::GlobalAvgPool, &[], &[]),
    layer("upsample", LayerKind::Upsample, &["factor"], &[]),
    layer("flatten", LayerKind::Flatten, &[], &[]),
    layer("reshape", LayerKind::Reshape, &["shape"], &["shape"]),
    layer("dropout", LayerKind::Dropout, &["p"], &["p"]),
    layer("batchnorm", LayerKind::BatchNorm, &["momentum", "eps", "trainable"], &[]),
    layer("layernorm", LayerKind::LayerNorm, &["eps", "trainable"], &[]),
    layer("maxout", LayerKind::Maxout, &["units", "pieces", "trainable"], &["units"]),
    layer("rnn", LayerKind::Recurrent(Cell::Rnn), RECURRENT, &["hidden"]),
    layer("lstm", LayerKind::Recurrent(Cell::Lstm), RECURRENT, &["hidden"]),
    layer("gru", LayerKind::Recurrent(Cell::Gru), RECURRENT, &["hidden"]),
    layer("embedding", LayerKind::Embedding, &["vocab", "dim", "trainable"], &["vocab", "dim"]),
    layer("rbm", LayerKind::Rbm, &["hidden"], &["hidden"]),
    layer("add", LayerKind::Add, &["other"], &["other"]),
    layer("concat", LayerKind::Concat, &["other"], &["other"]),
    layer("sigmoid", LayerKind::Sigmoid, &[], &[]),
    layer("tanh", LayerKind::Tanh, &[], &[]),
    layer("relu", LayerKind::Relu, &[], &[]),
    layer("leaky_relu", LayerKind::LeakyRelu, &["alpha"], &[]),
    layer("elu", LayerKind::Elu, &["alpha"], &[]),
    layer("gelu", LayerKind::Gelu, &["tanh"], &[]),
    layer("silu", LayerKind::Silu, &[], &[]),
    layer("swish", LayerKind::Silu, &[], &[]),
    layer("softplus", LayerKind::Softplus, &[], &[]),
    layer("clip", LayerKind::Clip, &["min", "max"], &[]),
    layer("softmax", LayerKind::Softmax, &[], &[]),
    layer("identity", LayerKind::Identity, &[], &[]),
];

/// The catalogue entry of `keyword`.
pub fn find(keyword: &str) -> Option<&'static LayerSpec> {
    LAYERS.iter().find(|spec| spec.keyword == keyword)
}

/// A resolved layer and what it produces.
pub struct Applied {
    pub layer: Layer,
    pub shape: Shape,
    pub why: String,
    pub params: usize,
    pub macs: u64,
}

/// An earlier layer that `tied =` or `shared =` may refer to.
pub struct Labelled {
    pub node: usize,
    pub layer: Layer,
    pub input: Shape,
}

pub(super) fn chain(why: &str, step: String) -> String {
    let mut steps: Vec<&str> = why.split(" → ").filter(|s| !s.is_empty()).collect();
    let keep = steps.len().saturating_sub(2);
    steps.drain(..keep);
    let mut out = steps.join(" → ");
    if !out.is_empty() {
        out.push_str(" → ");
    }
    out.push_str(&step);
    out
}

/// Applies the layer `call` (of `kind`, arguments `args`) to `input`.
/// `lookup` resolves layer labels for shared and tied weights; `other`
/// resolves value names for `add`.
pub fn apply(
    call: &Call,
    kind: LayerKind,
    args: &Args,
    input: &Incoming,
    lookup: &dyn Fn(&Ident) -> Option<Labelled>,
    other: &dyn Fn(&Ident) -> Option<Incoming>,
    diags: &mut Vec<Diag>,
) -> Option<Applied> {
    let name = call.name.name.as_str();
    let before = diags.len();
    if input.tokens && kind != LayerKind::Embedding {
        diags.push(messages::tokens_need_embedding(call.span, input.producer));
        return None;
    }
    let s = &input.shape;
    let elementwise = |layer: Layer| Applied { layer, shape: s.clone(), why: input.why.clone(), params: 0, macs: 0 };
    let applied = match kind {
        LayerKind::Dense => {
            let units = args.int("units", 1, 1, diags);
            let bias = args.bool("bias", true, diags);
            if s.len() != 1 {
                diags.push(messages::rank_mismatch(call, input, "a vector [features]", "insert `flatten` before it"));
                return None;
            }
            check_declared_size(call, args, s[0], input, diags);
            let fan_in = s[0];
            let mut weights = Weights::Own;
            let mut weight_params = fan_in * units;
            // A tied layer uses the transpose of another dense layer's matrix, a shared one the matrix itself.
            for (key, tied) in [("tied", true), ("shared", false)] {
                if let Some(label) = args.name(key, diags)
                    && let Some(target) = resolve_dense(label, lookup, diags)
                {
                    let other = (target.input[0], dense_units(&target.layer));
                    let needed = if tied { (other.1, other.0) } else { other };
                    if (fan_in, units) != needed {
                        diags.push(messages::reused_weights_shape(call.span, label, tied, other, (fan_in, units)));
                    }
                    weights = if tied { Weights::Tied(target.node) } else { Weights::Shared(target.node) };
                    weight_params = 0;
                }
            }
            Applied {
                layer: Layer::Dense { units, bias, weights },
                shape: vec![units],
                why: format!("dense({units})"),
                params: weight_params + if bias { units } else { 0 },
                macs: (fan_in * units) as u64,
            }
        }
        LayerKind::Conv1d => super::conv::conv1d(call, args, input, diags)?,
        LayerKind::Conv2d => super::conv::conv2d(call, args, input, diags)?,
        LayerKind::MaxPool | LayerKind::AvgPool => {
            let kernel = args.int("kernel", 1, 1, diags);
            let stride = args.int("stride", kernel, 1, diags);
            let padding = args.int("padding", 0, 0, diags);
            if 2 * padding > kernel {
                if let Some(Value::Number(n)) = args.value("padding") {
                    diags.push(messages::pool_padding(n, kernel));
                }
                return None;
            }
            let taps = Taps { kernel, stride, padding, dilation: 1 };
            // An image's windows are square; a sequence's run along its length.
            let (shape, why) = match s[..] {
                [channels, height, width] => {
                    let (h, hw) = window(call, input, name, height, taps, diags)?;
                    let (w, ww) = window(call, input, name, width, taps, diags)?;
                    (vec![channels, h, w], if hw == ww { hw } else { format!("{hw}, {ww}") })
                }
                [channels, length] => {
                    let (l, why) = window(call, input, name, length, taps, diags)?;
                    (vec![channels, l], why)
                }
                _ => {
                    diags.push(messages::rank_mismatch(
                        call,
                        input,
                        "an image [channels, height, width] or a sequence [channels, length]",
                        "pool after a conv2d or a conv1d, or declare the input with one of those shapes",
                    ));
                    return None;
                }
            };
            let layer = if kind == LayerKind::MaxPool {
                Layer::MaxPool { kernel, stride, padding }
            } else {
                Layer::AvgPool { kernel, stride, padding }
            };
            Applied { layer, shape, why: chain(&input.why, why), params: 0, macs: 0 }
        }
        LayerKind::GlobalAvgPool => {
            let [channels, h, w] = s[..] else {
                diags.push(messages::rank_mismatch(
                    call,
                    input,
                    "an image [channels, height, width]",
                    "average feature maps: put it after a conv2d",
                ));
                return None;
            };
            Applied {
                layer: Layer::GlobalAvgPool,
                shape: vec![channels],
                why: chain(&input.why, format!("mean over {h}×{w} → [{channels}]")),
                params: 0,
                macs: (channels * h * w) as u64,
            }
        }
        LayerKind::Upsample => {
            let factor = args.count("factor", 2, (1, 64), diags);
            let [channels, h, w] = s[..] else {
                diags.push(messages::rank_mismatch(
                    call,
                    input,
                    "an image [channels, height, width]",
                    "upsample feature maps: put it after a conv2d",
                ));
                return None;
            };
            let (oh, ow) = (h.saturating_mul(factor), w.saturating_mul(factor));
            Applied {
                layer: Layer::Upsample { factor },
                shape: vec![channels, oh, ow],
                why: chain(&input.why, format!("{h}×{factor} = {oh}, {w}×{factor} = {ow}")),
                params: 0,
                macs: 0,
            }
        }
        LayerKind::Flatten => {
            let n: usize = s.iter().product();
            Applied {
                layer: Layer::Flatten,
                shape: vec![n],
                why: chain(&input.why, format!("flatten {} = {n}", dims_product(s))),
                params: 0,
                macs: 0,
            }
        }
        LayerKind::Reshape => {
            let shape = list_of_ints(args.value("shape"), diags)?;
            let (from, to): (usize, usize) = (s.iter().product(), shape.iter().product());
            if from != to {
                diags.push(messages::reshape_size(call, input, &shape, from, to));
                return None;
            }
            Applied {
                why: chain(&input.why, format!("reshape {}", shape_text(&shape))),
                layer: Layer::Reshape { shape: shape.clone() },
                shape,
                params: 0,
                macs: 0,
            }
        }
        LayerKind::Dropout => elementwise(Layer::Dropout { p: args.float("p", 0.5, Bound::UnitOpen, diags) }),
        LayerKind::BatchNorm => {
            let momentum = args.float("momentum", 0.9, Bound::UnitOpen, diags);
            let eps = args.float("eps", 1e-5, Bound::Positive, diags);
            if s.len() != 1 && s.len() != 3 {
                diags.push(messages::rank_mismatch(
                    call,
                    input,
                    "[features] or [channels, height, width]",
                    "flatten first",
                ));
                return None;
            }
            Applied { params: 2 * s[0], ..elementwise(Layer::BatchNorm { momentum, eps }) }
        }
        LayerKind::LayerNorm => {
            let eps = args.float("eps", 1e-5, Bound::Positive, diags);
            let values: usize = s.iter().product();
            Applied { params: 2 * values, macs: values as u64, ..elementwise(Layer::LayerNorm { eps }) }
        }
        LayerKind::Maxout => {
            let units = args.int("units", 1, 1, diags);
            let pieces = args.int("pieces", 2, 2, diags);
            if s.len() != 1 {
                diags.push(messages::rank_mismatch(call, input, "a vector [features]", "insert `flatten` before it"));
                return None;
            }
            Applied {
                layer: Layer::Maxout { units, pieces },
                shape: vec![units],
                why: format!("maxout({units})"),
                params: (s[0] * units + units) * pieces,
                macs: (s[0] * units * pieces) as u64,
            }
        }
        LayerKind::Recurrent(cell) => super::sequences::recurrent(call, args, input, cell, diags)?,
        LayerKind::Embedding => super::sequences::embedding(call, args, input, diags)?,
        LayerKind::Rbm => {
            let hidden = args.int("hidden", 1, 1, diags);
            if s.len() != 1 {
                diags.push(messages::rank_mismatch(
                    call,
                    input,
                    "a vector [visible units]",
                    "insert `flatten` before it",
                ));
                return None;
            }
            Applied {
                layer: Layer::Rbm { hidden },
                shape: vec![hidden],
                why: format!("rbm({hidden})"),
                params: s[0] * hidden + hidden + s[0],
                macs: (s[0] * hidden) as u64,
            }
        }
        LayerKind::Add | LayerKind::Concat => {
            let Some(Value::Name(id)) = args.value("other") else {
                if let Some(v) = args.value("other") {
                    diags.push(messages::wrong_type(v, "other", "the name of a value"));
                }
                return None;
            };
            let rhs = other(id)?;
            if kind == LayerKind::Concat {
                return concatenated(call.span, input, (id.span, &rhs), diags);
            }
            if rhs.shape != *s {
                diags.push(messages::add_mismatch(call.span, input, id.span, &rhs));
                return None;
            }
            elementwise(Layer::Add)
        }
        LayerKind::Softmax => {
            if s.len() != 1 {
                diags.push(messages::rank_mismatch(call, input, "a vector [classes]", "insert `flatten` before it"));
                return None;
            }
            elementwise(Layer::Activation(Activation::Softmax))
        }
        LayerKind::Sigmoid => elementwise(Layer::Activation(Activation::Sigmoid)),
        LayerKind::Tanh => elementwise(Layer::Activation(Activation::Tanh)),
        LayerKind::Relu => elementwise(Layer::Activation(Activation::Relu)),
        LayerKind::Identity => elementwise(Layer::Activation(Activation::Identity)),
        LayerKind::Gelu => elementwise(Layer::Activation(Activation::Gelu { tanh: args.bool("tanh", false, diags) })),
        LayerKind::Silu => elementwise(Layer::Activation(Activation::Silu)),
        LayerKind::Softplus => elementwise(Layer::Activation(Activation::Softplus)),
        LayerKind::LeakyRelu => {
            let alpha = args.float("alpha", 0.01, Bound::NonNegative, diags);
            elementwise(Layer::Activation(Activation::LeakyRelu(alpha)))
        }
        LayerKind::Elu => {
            let alpha = args.float("alpha", 1.0, Bound::Positive, diags);
            elementwise(Layer::Activation(Activation::Elu(alpha)))
        }
        LayerKind::Clip => {
            let (lo, hi) = (args.opt_float("min", Bound::Any, diags), args.opt_float("max", Bound::Any, diags));
            if lo.is_none() && hi.is_none() || lo.zip(hi).is_some_and(|(lo, hi)| lo >= hi) {
                diags.push(messages::clip_bounds(call.span, lo, hi));
                return None;
            }
            elementwise(Layer::Activation(Activation::Clip(
                lo.unwrap_or(f64::NEG_INFINITY),
                hi.unwrap_or(f64::INFINITY),
            )))
        }
    };
    (diags.len() == before || diags[before..].iter().all(|d| !d.is_error())).then_some(applied)
}

/// `in = N` is an assertion about the size flowing in.
pub(super) fn check_declared_size(call: &Call, args: &Args, actual: usize, input: &Incoming, diags: &mut Vec<Diag>) {
    if let Some(declared) = args.opt_int("in", 1, diags)
        && declared != actual
    {
        let span = args.value("in").map_or(call.span, Value::span);
        diags.push(messages::declared_size(span, declared, actual, input));
    }
}

/// Output size of a sliding window along one axis, with its derivation.
pub(super) fn window(
    call: &Call,
    input: &Incoming,
    layer: &str,
    size: usize,
    taps: Taps,
    diags: &mut Vec<Diag>,
) -> Option<(usize, String)> {
    let Taps { kernel, stride, padding, dilation } = taps;
    let padded = size + 2 * padding;
    // A dilated kernel spans d·(k − 1) + 1 inputs.
    let extent = dilation * (kernel - 1) + 1;
    let span = if dilation == 1 { kernel.to_string() } else { format!("{dilation}·({kernel} − 1) − 1") };
    let formula = if layer.starts_with("conv") {
        format!("({size} + 2·{padding} − {span})/{stride} + 1")
    } else if padding > 0 {
        format!("{layer} ({size} + 2·{padding} − {kernel})/{stride} + 1")
    } else {
        format!("{layer} ({size} − {kernel})/{stride} + 1")
    };
    if extent > padded {
        diags.push(messages::kernel_too_large(call, input, (kernel, dilation), size, padding));
        return None;
    }
    let out = (padded - extent) / stride + 1;
    // The windows leave out the last positions of the padded axis: the
    // padding first, then the input's own.
    let dropped = ((padded - extent) % stride).saturating_sub(padding);
    if dropped != 0 && !diags.iter().any(|d| d.code == "nnc::shape::stride_drops" && d.primary.span == call.span) {
        diags.push(messages::stride_drops_rows(call.span, input, &formula, out, dropped));
    }
    Some((out, format!("{formula} = {out}")))
}

fn dims_product(shape: &[usize]) -> String {
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    dims.join("·")
}

fn dense_units(layer: &Layer) -> usize {
    match layer {
        Layer::Dense { units, .. } => *units,
        _ => 0,
    }
}

fn resolve_dense(
    label: &Ident,
    lookup: &dyn Fn(&Ident) -> Option<Labelled>,
    diags: &mut Vec<Diag>,
) -> Option<Labelled> {
    let target = lookup(label)?;
    match &target.layer {
        Layer::Dense { weights: Weights::Own, .. } => Some(target),
        other => {
            diags.push(messages::not_a_dense_label(label, other.keyword()));
            None
        }
    }
}

fn list_of_ints(value: Option<&Value>, diags: &mut Vec<Diag>) -> Option<Shape> {
    match value? {
        Value::List(items, _) if !items.is_empty() => {
            let dims: Option<Vec<usize>> =
                items.iter().map(|v| crate::check::args::int_value(v, "shape", 1, diags)).collect();
            dims
        }
        v => {
            diags.push(messages::wrong_type(v, "shape", "a list of sizes like [4, 7, 7]"));
            None
        }
    }
}

/// `concat`: the second value's features (vectors) or channels (feature
/// maps) after the first's; every other dimension must agree.
pub fn concatenated(
    span: Span,
    left: &Incoming,
    (right_span, right): (Span, &Incoming),
    diags: &mut Vec<Diag>,
) -> Option<Applied> {
    let (a, b) = (&left.shape, &right.shape);
    if left.tokens || right.tokens || a.is_empty() || a.len() != b.len() || a[1..] != b[1..] {
        diags.push(messages::concat_mismatch(span, left, right_span, right));
        return None;
    }
    let mut shape = a.clone();
    shape[0] += b[0];
    let why = format!("{} ++ {} = {}", shape_text(a), shape_text(b), shape_text(&shape));
    Some(Applied { layer: Layer::Concat, shape, why, params: 0, macs: 0 })
}

/// The initialiser `init = he | xavier | normal(σ) | zeros` of a dense or
/// convolution layer, when written (and valid).
pub fn weight_init(args: &Args, diags: &mut Vec<Diag>) -> Option<WeightInit> {
    const CHOICES: [&str; 4] = ["he", "xavier", "normal", "zeros"];
    let value = args.value("init")?;
    let (name, call) = match value {
        Value::Name(id) => (id, None),
        Value::Call(call) => (&call.name, Some(call)),
        other => {
            diags.push(messages::wrong_type(other, "init", "`he`, `xavier`, `normal(σ)` or `zeros`"));
            return None;
        }
    };
    match (name.name.as_str(), call) {
        ("he", None) => Some(WeightInit::He),
        ("xavier", None) => Some(WeightInit::Xavier),
        ("zeros", None) => Some(WeightInit::Zeros),
        ("normal", Some(call)) => {
            let args = Args::match_call(call, &["std"], &["std"], diags);
            args.opt_float("std", Bound::Positive, diags).map(WeightInit::Normal)
        }
        ("normal", None) => {
            diags.push(messages::wrong_type(
                value,
                "init",
                "`normal(σ)` with its standard deviation, e.g. `normal(0.02)`",
            ));
            None
        }
        _ => {
            let suggestion = crate::diag::did_you_mean(&name.name, CHOICES);
            diags.push(messages::unknown_choice(name, "initialiser", CHOICES.into_iter(), suggestion));
            None
        }
    }
}
