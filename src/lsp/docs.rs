//! What each word of the language means, for hover and completion: every
//! layer, optimizer, schedule, data source, loss and `train` setting, with
//! each argument's meaning and default. A test holds these lists to the
//! checker's, so the editor never offers a word `check` would refuse.

/// One callable word and its arguments (`name`, meaning and default).
#[derive(Debug, PartialEq)]
pub struct Doc {
    pub name: &'static str,
    pub summary: &'static str,
    pub args: &'static [(&'static str, &'static str)],
}

const fn doc(name: &'static str, summary: &'static str, args: &'static [(&'static str, &'static str)]) -> Doc {
    Doc { name, summary, args }
}

const ALPHA_LEAKY: &[(&str, &str)] = &[("alpha", "slope for negative inputs (default 0.01)")];
const NONE: &[(&str, &str)] = &[];
const POOL: &[(&str, &str)] = &[
    ("kernel", "window size, square (required)"),
    ("stride", "step between windows (default: the kernel)"),
    (
        "padding",
        "positions added on each side, at most half the kernel: never a window's largest value; zeros in a mean, \
         which divides by the whole window (PyTorch's `count_include_pad`) (default 0)",
    ),
];
const RECURRENT: &[(&str, &str)] = &[
    ("hidden", "size of the hidden state (required)"),
    ("sequences", "`true`: output the state at every step, `[T, hidden]`; default `false`: the last state"),
    (
        "bidirectional",
        "`true`: also read the sequence backwards, with weights of its own, that direction's states after the \
         forward one's (`2·hidden` features; its last state is the one after the first step); default `false`",
    ),
    ("trainable", TRAINABLE),
];

/// The `trainable` argument of layers with parameters.
const TRAINABLE: &str = "`false`: the layer's parameters keep their values while the rest trains (default `true`)";

/// The `init` argument of layers with weights.
const INIT: &str = "the weights' initialiser: `he` (normal, σ = √(2/fan_in)), `xavier` (σ = √(2/(fan_in + \
                    fan_out))), `normal(σ)` or `zeros` (default: he before a relu-like activation, else xavier)";

/// Layers, in the order of `check::layers::LAYERS`.
pub const LAYERS: &[Doc] = &[
    doc(
        "dense",
        "Fully connected: every output is a weighted sum of all inputs plus a bias. `[n]` → `[units]`.",
        &[
            ("units", "output features (required)"),
            ("bias", "add a learned bias (default `true`)"),
            ("tied", "label (`as …`) of an earlier dense layer whose matrix, transposed, this one uses"),
            ("shared", "label of an earlier layer whose matrix this one uses as it is"),
            ("in", "the input size you expect; checked against the real one"),
            ("init", INIT),
            ("trainable", TRAINABLE),
        ],
    ),
    doc(
        "conv1d",
        "1-D convolution along sequences `[C, L]` (channels first, as PyTorch's `Conv1d`): output length \
         `(L + 2·padding − dilation·(kernel − 1) − 1)/stride + 1`.",
        &[
            ("filters", "output channels (required)"),
            ("kernel", "kernel length (required)"),
            ("stride", "step between windows (default 1)"),
            ("padding", "zeros added at each end (default 0); `same` keeps the length (odd spans, stride 1)"),
            ("dilation", "spacing between kernel taps (default 1)"),
            (
                "groups",
                "split the channels and filters into this many groups, each filter reading its group's channels \
                 only; both must divide evenly (default 1; as many as the channels: depthwise)",
            ),
            ("bias", "add a learned bias per filter (default `true`)"),
            ("in", "the input channels you expect; checked against the real ones"),
            ("init", INIT),
            ("trainable", TRAINABLE),
        ],
    ),
    doc(
        "conv2d",
        "2-D convolution over `[C, H, W]`: output side `(H + 2·padding − dilation·(kernel − 1) − 1)/stride + 1`.",
        &[
            ("filters", "output channels (required)"),
            ("kernel", "kernel size: a number (square), or `[height, width]` (required)"),
            ("stride", "step between windows, or `[height, width]` (default 1)"),
            (
                "padding",
                "zeros added on each side, or `[height, width]` (default 0); `same` keeps height and width (odd \
                 spans, stride 1)",
            ),
            ("dilation", "spacing between kernel taps, or `[height, width]` (default 1)"),
            (
                "groups",
                "split the channels and filters into this many groups, each filter reading its group's channels \
                 only; both must divide evenly (default 1; as many as the channels: depthwise)",
            ),
            ("bias", "add a learned bias per filter (default `true`)"),
            ("in", "the input channels you expect; checked against the real ones"),
            ("init", INIT),
            ("trainable", TRAINABLE),
        ],
    ),
    doc(
        "maxpool",
        "Largest value of each window, per channel: square windows over an image, or windows along a sequence.",
        POOL,
    ),
    doc(
        "avgpool",
        "Mean of each window, per channel: square windows over an image, or windows along a sequence.",
        POOL,
    ),
    doc("global_avgpool", "Each channel's mean over its whole feature map: `[C, H, W]` → `[C]`.", &[]),
    doc(
        "upsample",
        "Nearest-neighbour upsampling: each value becomes a `factor × factor` block, `[C, H, W]` → `[C, H·f, W·f]`.",
        &[("factor", "how many times larger each side becomes (default 2)")],
    ),
    doc("flatten", "All dimensions into one: `[C, H, W]` → `[C·H·W]`.", NONE),
    doc(
        "reshape",
        "The same values in another shape of the same size.",
        &[("shape", "the new shape, e.g. `[4, 7, 7]` (required)")],
    ),
    doc(
        "dropout",
        "While training, zeroes each value with probability `p` and scales the rest by 1/(1 − p); does nothing at evaluation.",
        &[("p", "probability of dropping a value (required)")],
    ),
    doc(
        "batchnorm",
        "Normalises each feature (each channel of an image) over the batch, then scales and shifts it; evaluation uses running statistics.",
        &[
            ("momentum", "weight of the old running statistics at each step (default 0.9)"),
            ("eps", "added to the variance before the square root (default 1e-5)"),
            ("trainable", TRAINABLE),
        ],
    ),
    doc(
        "layernorm",
        "Normalises each sample over all its values (mean 0, variance 1), then scales and shifts every value; the \
         same in training and evaluation, independent of the batch.",
        &[("eps", "added to the variance before the square root (default 1e-5)"), ("trainable", TRAINABLE)],
    ),
    doc(
        "maxout",
        "The largest of `pieces` linear functions per unit. `[n]` → `[units]`.",
        &[
            ("units", "output features (required)"),
            ("pieces", "linear pieces per unit (default 2)"),
            ("trainable", TRAINABLE),
        ],
    ),
    doc("rnn", "Elman recurrent layer with tanh over a sequence `[T, F]`.", RECURRENT),
    doc("lstm", "Long short-term memory over a sequence `[T, F]` (gates i, f, g, o).", RECURRENT),
    doc(
        "gru",
        "Gated recurrent unit over a sequence `[T, F]` (gates r, z, n; the reset gate scales the recurrent \
         product, as PyTorch's `nn.GRU`).",
        RECURRENT,
    ),
    doc(
        "embedding",
        "A learned vector per token id: `tokens[T]` → `[T, dim]`.",
        &[
            ("vocab", "number of distinct token ids (required)"),
            ("dim", "size of each vector (required)"),
            ("trainable", TRAINABLE),
        ],
    ),
    doc(
        "rbm",
        "Restricted Boltzmann machine: outputs the hidden units' probabilities; trained by contrastive divergence.",
        &[("hidden", "hidden units (required)")],
    ),
    doc(
        "add",
        "Adds another value of the same shape (a residual connection).",
        &[("other", "the name of the value to add (required)")],
    ),
    doc(
        "concat",
        "Joins another value after this one along the features (vectors) or channels (feature maps); every other \
         dimension must agree. Also `concat(a, b)` to start a flow.",
        &[("other", "the name of the value to join after this one (required)")],
    ),
    doc("sigmoid", "1/(1 + e^−x); derivative at most ¼.", NONE),
    doc("tanh", "Hyperbolic tangent; values in (−1, 1).", NONE),
    doc("relu", "max(0, x).", NONE),
    doc("leaky_relu", "x for x > 0, alpha·x otherwise.", ALPHA_LEAKY),
    doc(
        "elu",
        "x for x > 0, alpha·(eˣ − 1) otherwise.",
        &[("alpha", "value approached for large negative inputs (default 1.0)")],
    ),
    doc(
        "gelu",
        "x·Φ(x), Φ the normal distribution function.",
        &[("tanh", "use the tanh approximation (default `false`)")],
    ),
    doc("silu", "x·sigmoid(x).", NONE),
    doc("swish", "x·sigmoid(x) (the same as `silu`).", NONE),
    doc("softplus", "ln(1 + eˣ), a smooth relu.", NONE),
    doc(
        "clip",
        "x kept within [min, max]: `clip(min = 0, max = 6)` is relu6, `clip(min = -1, max = 1)` hardtanh; its \
         gradient is 0 outside (min, max).",
        &[("min", "the lowest value (default: none)"), ("max", "the highest value (default: none)")],
    ),
    doc("softmax", "Exponentials normalised to sum to 1 (class probabilities).", NONE),
    doc("identity", "Passes values through unchanged.", NONE),
];

/// Optimizers, in the order of `check::train::OPTIMIZERS`.
pub const OPTIMIZERS: &[Doc] = &[
    doc("gd", "Gradient descent (usually with `batch = full`).", &[("lr", "learning rate (default 0.01)")]),
    doc(
        "sgd",
        "Stochastic gradient descent, optionally with momentum.",
        &[
            ("lr", "learning rate (default 0.01)"),
            ("momentum", "fraction of the last step kept (default 0)"),
            ("nesterov", "Nesterov's look-ahead momentum (default `false`)"),
        ],
    ),
    doc(
        "momentum",
        "Gradient descent with momentum.",
        &[("lr", "learning rate (default 0.01)"), ("momentum", "fraction of the last step kept (default 0.9)")],
    ),
    doc(
        "nesterov",
        "Nesterov's accelerated gradient.",
        &[("lr", "learning rate (default 0.01)"), ("momentum", "fraction of the last step kept (default 0.9)")],
    ),
    doc(
        "adam",
        "Adam: per-weight steps from running means of the gradient and its square.",
        &[
            ("lr", "learning rate (default 0.001)"),
            ("beta1", "decay of the gradient's running mean (default 0.9)"),
            ("beta2", "decay of the squared gradient's running mean (default 0.999)"),
            ("eps", "added to the denominator (default 1e-8)"),
        ],
    ),
    doc(
        "anneal",
        "Simulated annealing: random weight moves, accepted by the Metropolis rule; no gradients.",
        &[
            ("temperature", "starting temperature (default 1.0)"),
            ("cooling", "temperature factor per epoch (default 0.95)"),
            ("scale", "standard deviation of a move (default 0.1)"),
        ],
    ),
    doc(
        "cd",
        "Contrastive divergence for RBMs.",
        &[("k", "Gibbs steps per update (default 1)"), ("lr", "learning rate (default 0.01)")],
    ),
];

/// Learning-rate schedules, in the order of `check::train::SCHEDULES`.
pub const SCHEDULES: &[Doc] = &[
    doc("constant", "The same learning rate every epoch.", NONE),
    doc(
        "step",
        "Multiplies the learning rate by `gamma` every `every` epochs.",
        &[("every", "epochs between drops (required)"), ("gamma", "factor at each drop (default 0.1)")],
    ),
    doc(
        "exponential",
        "Multiplies the learning rate by `gamma` every epoch.",
        &[("gamma", "factor per epoch (required)")],
    ),
    doc(
        "cosine",
        "Cosine decay from the learning rate to `min_lr` over the epochs.",
        &[("min_lr", "final learning rate (default 0)")],
    ),
    doc(
        "plateau",
        "Cuts the learning rate by `factor` when the validation loss (the training loss without a validation \
         split) has not improved for more than `patience` epochs.",
        &[
            ("factor", "factor at each cut (default 0.1)"),
            ("patience", "epochs without improvement tolerated before a cut (default 10)"),
            ("threshold", "an improvement is a loss lower than the best by more than this fraction (default 1e-4)"),
            ("min_lr", "the rate never falls below this (default 0)"),
        ],
    ),
];

/// Data sources, in the order of `check::train::SOURCES`.
pub const SOURCES: &[Doc] = &[
    doc("builtin", "A data set compiled into nnc.", &[("name", "`\"digits\"` or `\"diabetes\"` (required)")]),
    doc(
        "csv",
        "Rows of a CSV file: the features, then the target.",
        &[
            ("train", "path of the training rows (required)"),
            ("test", "path of the test rows"),
            ("target", "header name of the target column, or a list of them (default: the last column)"),
            ("features", "header names of the input's columns, in order (default: every other column)"),
        ],
    ),
    doc(
        "idx",
        "MNIST-style IDX files (gzip allowed).",
        &[
            ("images", "training images (required)"),
            ("labels", "training labels (required)"),
            ("test_images", "test images"),
            ("test_labels", "test labels"),
        ],
    ),
];

const LOSS_ARGS: &[(&str, &str)] =
    &[("prediction", "the value predicted"), ("target", "the target it is compared with")];

/// Losses.
pub const LOSSES: &[Doc] = &[
    doc("mse", "Mean squared error, for `real` targets.", LOSS_ARGS),
    doc(
        "cross_entropy",
        "Softmax cross-entropy of logits against a `class(K)` target.",
        &[
            ("prediction", "the value predicted"),
            ("target", "the target it is compared with"),
            (
                "weights",
                "one weight per class (`[1, 9]`): each row's loss counts its class's weight times, for \
                 imbalanced classes; the mean still divides by the rows (default: all 1)",
            ),
        ],
    ),
    doc(
        "binary_cross_entropy",
        "Cross-entropy of probabilities (end with `sigmoid`) against a `binary` target.",
        LOSS_ARGS,
    ),
];

/// Unsupervised pretraining (`pretrain = cd(…)`).
pub const PRETRAIN: &[Doc] = &[doc(
    "cd",
    "Greedy layer-wise pretraining of every RBM by contrastive divergence before training.",
    &[
        ("k", "Gibbs steps per update (default 1)"),
        ("epochs", "epochs per RBM (default 5)"),
        ("lr", "learning rate (default 0.1)"),
    ],
)];

/// `train { … }` settings, in the order of `check::train::SETTINGS`.
pub const SETTINGS: &[(&str, &str)] = &[
    ("optimizer", "how weights are updated: `sgd(lr = 0.1)`, `adam()`, … (default `sgd(lr = 0.01)`)"),
    ("lr", "learning rate, when the optimizer does not give one"),
    ("schedule", "how the learning rate changes per epoch: `step(every = 10)`, `cosine()`, … (default constant)"),
    ("batch", "rows per step, or `full` for all of them (default 32)"),
    ("epochs", "passes over the training data (default 10)"),
    ("clip_norm", "rescale the whole gradient to at most this L2 norm"),
    ("clip_value", "clip each gradient element to ±this"),
    ("l2", "L2 penalty added to the loss (default 0)"),
    ("weight_decay", "decoupled weight decay per step (default 0)"),
    ("seed", "seed of initialisation, shuffling and dropout (default 0)"),
    ("validation", "fraction of the training rows held out to validate on (default 0)"),
    ("patience", "stop when the validation loss has not improved for this many epochs; keep the best epoch's weights"),
    ("warmup", "epochs over which the learning rate rises linearly, step by step, to the schedule's (default 0)"),
    ("data", "where the rows come from: `builtin(\"digits\")`, `csv(\"train.csv\")`, `idx(…)`"),
    ("scale", "divide every input by this (255 for grey levels)"),
    ("standardize", "`true`: shift and scale each input column to mean 0, deviation 1 (from the training rows)"),
    (
        "standardize_target",
        "`true`: learn a regression target at mean 0, deviation 1 per column; predictions and metrics stay in its units",
    ),
    ("pretrain", "pretrain the RBMs first: `cd(k = 1, epochs = 5)`"),
];

/// The README's language reference, written from these lists and the
/// checker's catalogues (which arguments are required), so the two cannot
/// drift: a test holds the README's section to it.
pub fn reference() -> String {
    use crate::check::{layers, train};
    let required_of = |family: &str, name: &str| -> Vec<&'static str> {
        let listed = |catalogue: &[(&str, &[&'static str], &[&'static str])]| {
            catalogue.iter().find(|(n, _, _)| *n == name).map(|(_, _, r)| r.to_vec()).unwrap_or_default()
        };
        match family {
            "layer" => layers::find(name).map(|s| s.required.to_vec()).unwrap_or_default(),
            "schedule" => listed(train::SCHEDULES),
            "data source" => listed(train::SOURCES),
            "loss" => vec!["prediction", "target"],
            _ => Vec::new(),
        }
    };
    let mut out = String::new();
    let families: [(&str, &str, &[Doc]); 5] = [
        ("layer", "Layers", LAYERS),
        ("loss", "Losses", LOSSES),
        ("optimizer", "Optimizers", OPTIMIZERS),
        ("schedule", "Learning-rate schedules", SCHEDULES),
        ("data source", "Data sources", SOURCES),
    ];
    for (family, title, docs) in families {
        out.push_str(&format!("#### {title}\n\n"));
        for doc in docs {
            out.push_str(&format!("- `{}`: {}\n", doc.signature(&required_of(family, doc.name)), doc.summary));
            for (arg, meaning) in doc.args {
                out.push_str(&format!("  - `{arg}`: {meaning}\n"));
            }
        }
        out.push('\n');
    }
    out.push_str("#### `train { … }` settings\n\n");
    for (setting, meaning) in SETTINGS {
        out.push_str(&format!("- `{setting}`: {meaning}\n"));
    }
    out
}

/// The documentation of a call named `name` where `family` is expected.
pub fn find(family: &'static [Doc], name: &str) -> Option<&'static Doc> {
    family.iter().find(|d| d.name == name)
}

/// Every family a call may belong to, each with its name in words.
pub const FAMILIES: &[(&str, &[Doc])] = &[
    ("layer", LAYERS),
    ("optimizer", OPTIMIZERS),
    ("schedule", SCHEDULES),
    ("data source", SOURCES),
    ("loss", LOSSES),
];

impl Doc {
    /// `conv2d(filters, kernel, stride = …)`: the call as written.
    pub fn signature(&self, required: &[&str]) -> String {
        if self.args.is_empty() {
            return self.name.to_string();
        }
        let args: Vec<String> = self
            .args
            .iter()
            .map(|(a, _)| if required.contains(a) { a.to_string() } else { format!("{a} = …") })
            .collect();
        format!("{}({})", self.name, args.join(", "))
    }

    /// Markdown: the summary and a line per argument.
    pub fn markdown(&self, required: &[&str]) -> String {
        let mut out = format!("```nn\n{}\n```\n{}", self.signature(required), self.summary);
        if !self.args.is_empty() {
            out.push('\n');
            for (arg, meaning) in self.args {
                out.push_str(&format!("\n- `{arg}`: {meaning}"));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::{layers, train};

    fn names(docs: &[Doc]) -> Vec<(&str, Vec<&str>)> {
        docs.iter().map(|d| (d.name, d.args.iter().map(|(a, _)| *a).collect())).collect()
    }

    #[test]
    fn the_documentation_lists_what_the_checker_accepts() {
        let layers: Vec<(&str, Vec<&str>)> = layers::LAYERS.iter().map(|s| (s.keyword, s.params.to_vec())).collect();
        assert_eq!(names(LAYERS), layers);
        let optimizers: Vec<(&str, Vec<&str>)> = train::OPTIMIZERS.iter().map(|(n, a)| (*n, a.to_vec())).collect();
        assert_eq!(names(OPTIMIZERS), optimizers);
        let three = |t: &[(&'static str, &'static [&'static str], &'static [&'static str])]| -> Vec<(&str, Vec<&str>)> {
            t.iter().map(|(n, a, _)| (*n, a.to_vec())).collect()
        };
        assert_eq!(names(SCHEDULES), three(train::SCHEDULES));
        assert_eq!(names(SOURCES), three(train::SOURCES));
        assert_eq!(SETTINGS.iter().map(|(s, _)| *s).collect::<Vec<_>>(), train::SETTINGS);
    }
}
