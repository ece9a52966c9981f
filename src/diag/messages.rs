//! The wording of every diagnostic, in one place so nnc speaks with one voice.
//!
//! Codes are `nnc::<stage>::<what>`. Labels say what was found and what was
//! expected; help lines say how to fix it.

use super::{Diag, Incoming, Span};
use crate::shape::shape_text;
use crate::syntax::ast::{Call, Ident, Number, Value};

fn list(items: &[&str]) -> String {
    let quoted: Vec<String> = items.iter().map(|i| format!("`{i}`")).collect();
    match quoted.len() {
        0 => "nothing".to_string(),
        1 => quoted[0].clone(),
        n => format!("{} or {}", quoted[..n - 1].join(", "), quoted[n - 1]),
    }
}

fn maybe(suggestion: Option<&str>) -> String {
    suggestion.map(|s| format!("did you mean `{s}`?")).unwrap_or_default()
}

// ---- syntax ------------------------------------------------------------------

pub fn syntax(span: Span, found: &str, expected: &[String]) -> Diag {
    let expected = match expected.len() {
        0 => "something else".to_string(),
        1 => expected[0].clone(),
        n => format!("{} or {}", expected[..n - 1].join(", "), expected[n - 1]),
    };
    let found = if found.is_empty() { "the end of the file".to_string() } else { format!("`{found}`") };
    Diag::error("nnc::syntax::unexpected", format!("unexpected {found}"), span, format!("expected {expected}"))
        .with_help("check for a missing `|>`, bracket or `=` just before this point")
}

pub fn nesting_too_deep(span: Span, max: usize) -> Diag {
    Diag::error(
        "nnc::syntax::too_deep",
        format!("brackets nested more than {max} deep"),
        span,
        "nesting goes too deep here",
    )
    .with_help("close the open brackets; models never need this much nesting")
}

// ---- names -------------------------------------------------------------------

pub fn no_model() -> Diag {
    Diag::error("nnc::model::empty", "the file defines no model", Span::default(), "expected `model NAME { … }`")
        .with_help("start with `model my_net { input x: [4] … }`")
}

pub fn duplicate_name(name: &Ident, first: Span, what: &str) -> Diag {
    Diag::error(
        "nnc::name::duplicate",
        format!("{what} `{}` is defined twice", name.name),
        name.span,
        "defined again here",
    )
    .with_note(first, "first defined here")
    .with_help(format!("rename one of the two {what}s"))
}

pub fn undefined_value(name: &Ident, suggestion: Option<&str>) -> Diag {
    let help = match suggestion {
        Some(s) => format!("did you mean `{s}`?"),
        None => "declare it with `input`/`target`, or name a pipeline's result with `=> name`".into(),
    };
    Diag::error("nnc::name::undefined", format!("`{}` is not defined", name.name), name.span, "no value has this name")
        .with_help(help)
}

pub fn undefined_label(name: &Ident, suggestion: Option<&str>) -> Diag {
    let help = match suggestion {
        Some(s) => format!("did you mean `{s}`?"),
        None => "name the earlier layer with `as`, e.g. `dense(64) as encoder`".into(),
    };
    Diag::error(
        "nnc::name::undefined_layer",
        format!("no layer is labelled `{}`", name.name),
        name.span,
        "unknown layer label",
    )
    .with_help(help)
}

pub fn unknown_layer(name: &Ident, suggestion: Option<&str>) -> Diag {
    let help = match suggestion {
        Some(s) => maybe(Some(s)),
        None => "layers are dense, conv2d, maxpool, avgpool, flatten, reshape, dropout, batchnorm, maxout, rnn, lstm, embedding, rbm, add and the activations".into(),
    };
    Diag::error(
        "nnc::name::unknown_layer",
        format!("unknown layer `{}`", name.name),
        name.span,
        "not a layer, activation or block",
    )
    .with_help(help)
}

pub fn unknown_loss(name: &Ident, suggestion: Option<&str>) -> Diag {
    Diag::error("nnc::name::unknown_loss", format!("unknown loss `{}`", name.name), name.span, "not a loss").with_help(
        suggestion.map_or("losses are `mse`, `cross_entropy` and `binary_cross_entropy`".into(), |s| maybe(Some(s))),
    )
}

pub fn unknown_choice<'a>(
    name: &Ident,
    setting: &str,
    choices: impl Iterator<Item = &'a str>,
    suggestion: Option<&str>,
) -> Diag {
    let choices: Vec<&str> = choices.collect();
    Diag::error(
        "nnc::name::unknown_choice",
        format!("unknown {setting} `{}`", name.name),
        name.span,
        format!("expected {}", list(&choices)),
    )
    .with_help(suggestion.map_or(format!("choose one of {}", list(&choices)), |s| maybe(Some(s))))
}

pub fn unknown_type(kind: &Ident, kinds: &[&str], what: &str) -> Diag {
    let suggestion = super::did_you_mean(&kind.name, kinds.iter().copied());
    Diag::error(
        "nnc::name::unknown_type",
        format!("unknown {what} type `{}`", kind.name),
        kind.span,
        format!("expected {}", list(kinds)),
    )
    .with_help(suggestion.map_or(format!("write e.g. `{what} x: [3]`"), |s| maybe(Some(s))))
}

pub fn unknown_builtin(span: Span, name: &str, known: &[&str]) -> Diag {
    Diag::error(
        "nnc::name::unknown_dataset",
        format!("no built-in data set `{name}`"),
        span,
        format!("expected {}", list(known)),
    )
    .with_help(
        super::did_you_mean(name, known.iter().copied())
            .map_or("use csv(…) or idx(…) for your own files".into(), |s| maybe(Some(s))),
    )
}

pub fn block_shadows_layer(name: &Ident) -> Diag {
    Diag::error(
        "nnc::name::shadows_layer",
        format!("block `{}` has the name of a layer", name.name),
        name.span,
        "this name is taken by a built-in layer",
    )
    .with_help("give the block another name")
}

// ---- arguments -------------------------------------------------------------------

pub fn unknown_argument(key: &Ident, callee: &str, params: &[&str], suggestion: Option<&str>) -> Diag {
    let help = match suggestion {
        Some(s) => maybe(Some(s)),
        None if params.is_empty() => format!("`{callee}` takes no arguments"),
        None => format!("`{callee}` takes {}", list(params)),
    };
    Diag::error("nnc::arg::unknown", format!("`{callee}` has no argument `{}`", key.name), key.span, "unknown argument")
        .with_help(help)
}

pub fn too_many_arguments(span: Span, callee: &str, params: &[&str]) -> Diag {
    let help = if params.is_empty() {
        format!("`{callee}` takes no arguments; remove this one")
    } else {
        format!("`{callee}` takes {}; pass the others by name", list(params))
    };
    Diag::error(
        "nnc::arg::too_many",
        format!("too many arguments for `{callee}`"),
        span,
        "this argument has no parameter",
    )
    .with_help(help)
}

pub fn duplicate_argument(span: Span, first: Span, name: &str) -> Diag {
    let d = Diag::error("nnc::arg::duplicate", format!("argument `{name}` is given twice"), span, "given again here")
        .with_help("remove one of them");
    if first == span { d } else { d.with_note(first, "first given here") }
}

pub fn missing_argument(callee: &Ident, span: Span, name: &str, params: &[&str]) -> Diag {
    let example = if params.first() == Some(&name) { format!("{}(…)", callee.name) } else { format!("{name} = …") };
    Diag::error("nnc::arg::missing", format!("`{}` needs `{name}`", callee.name), span, format!("`{name}` is missing"))
        .with_help(format!("add it, e.g. `{example}`"))
}

pub fn wrong_type(value: &Value, name: &str, expected: &str) -> Diag {
    Diag::error(
        "nnc::arg::type",
        format!("`{name}` must be {expected}"),
        value.span(),
        format!("found {}, expected {expected}", value.kind_name()),
    )
    .with_help(format!("write `{name}` as {expected}"))
}

pub fn out_of_range(n: &Number, name: &str, expected: &str) -> Diag {
    let help = match name {
        "lr" => "a learning rate must be positive; typical values are 0.001 to 0.1".to_string(),
        "p" => {
            "dropout p is the probability of dropping a unit: 0 keeps all, values near 1 drop almost all".to_string()
        }
        "momentum" => "momentum must be in [0, 1); 0.9 is the usual choice".to_string(),
        "clip_norm" | "clip_value" => {
            "clipping thresholds must be positive; remove the setting to disable clipping".to_string()
        }
        _ => format!("use {expected}"),
    };
    Diag::error(
        "nnc::arg::range",
        format!("`{name}` is out of range"),
        n.span,
        format!("found {}, expected {expected}", n.text),
    )
    .with_help(help)
}

pub fn int_out_of_range(n: &Number, name: &str, min: usize) -> Diag {
    let too_large = n.value > crate::check::args::MAX_INT;
    let (label, help) = if too_large {
        ("a whole number up to 1,000,000,000".to_string(), format!("`{name}` is far too large; check it for a typo"))
    } else if min > 0 {
        (format!("a whole number ≥ {min}"), format!("`{name}` must be at least {min}"))
    } else {
        ("a whole number ≥ 0".to_string(), format!("`{name}` cannot be negative"))
    };
    Diag::error(
        "nnc::arg::range",
        format!("`{name}` is out of range"),
        n.span,
        format!("found {}, expected {label}", n.text),
    )
    .with_help(help)
}

pub fn lr_twice(span: Span) -> Diag {
    Diag::error("nnc::train::lr_twice", "the learning rate is given twice", span, "also given in the optimizer")
        .with_help("keep either `lr = …` or the optimizer's `lr` argument")
}

pub fn scale_and_standardize(span: Span) -> Diag {
    Diag::error(
        "nnc::train::preprocess",
        "`scale` and `standardize` exclude each other",
        span,
        "second preprocessing given here",
    )
    .with_help("keep one of them")
}

pub fn preprocess_tokens(setting: Span, input: Span) -> Diag {
    Diag::error(
        "nnc::train::preprocess",
        "token ids cannot be scaled or standardised",
        setting,
        "this would change every token id",
    )
    .with_note(input, "the input holds token ids")
    .with_help("remove `scale` / `standardize`: an embedding reads the ids as they are")
}

pub fn duplicate_train(span: Span, first: Span) -> Diag {
    Diag::error("nnc::train::duplicate", "a model has one `train` block", span, "second `train` block")
        .with_note(first, "first `train` block")
        .with_help("merge the settings into one block")
}

pub fn block_argument(span: Span, block: &Ident, params: &[&str]) -> Diag {
    Diag::error(
        "nnc::arg::unknown",
        format!("block `{}` has no such parameter", block.name),
        span,
        "unmatched argument",
    )
    .with_note(block.span, "block defined here")
    .with_help(format!("`{}` takes {}", block.name, list(params)))
}

pub fn missing_block_argument(call: &Call, block: &Ident, param: &Ident) -> Diag {
    Diag::error(
        "nnc::arg::missing",
        format!("block `{}` needs `{}`", block.name, param.name),
        call.span,
        format!("`{}` is missing", param.name),
    )
    .with_note(param.span, "parameter declared here")
    .with_help(format!("pass it, e.g. `{}({} = …)`", block.name, param.name))
}

pub fn block_recursion(call: &Call, max: usize) -> Diag {
    Diag::error(
        "nnc::name::recursive_block",
        format!("block `{}` expands more than {max} levels deep", call.name.name),
        call.span,
        "expanded here",
    )
    .with_help("a block must not call itself, directly or through another block")
}

pub fn label_on_block(label: &Ident) -> Diag {
    Diag::error(
        "nnc::name::label_on_block",
        "a block call cannot be labelled",
        label.span,
        "label a layer inside the block instead",
    )
    .with_help("remove `as …`")
}

// ---- model structure -------------------------------------------------------------

pub fn no_input(model: &Ident) -> Diag {
    Diag::error(
        "nnc::model::no_input",
        format!("model `{}` declares no input", model.name),
        model.span,
        "no `input` in this model",
    )
    .with_help("declare one sample's shape, e.g. `input x: [4]`")
}

pub fn missing_loss(model: &Ident) -> Diag {
    Diag::error("nnc::model::no_loss", format!("model `{}` has no loss", model.name), model.span, "nothing to minimise")
        .with_help("add e.g. `loss = cross_entropy(logits, label)`")
}

pub fn duplicate_loss(span: Span, first: Span) -> Diag {
    Diag::error("nnc::model::duplicate_loss", "a model has one loss", span, "second loss")
        .with_note(first, "first loss")
        .with_help("combine them into one model, or keep one")
}

pub fn input_is_class(kind: &Ident) -> Diag {
    Diag::error("nnc::model::input_type", "an input cannot be a class label", kind.span, "`class(K)` is for targets")
        .with_help("declare class labels with `target`, or feed token ids as `tokens[T]`")
}

pub fn class_needs_count(span: Span) -> Diag {
    Diag::error("nnc::model::target_type", "a class target needs its number of classes", span, "expected `class(K)`")
        .with_help("write e.g. `target digit: class(10)`")
}

pub fn seq_rank(span: Span, rank: usize) -> Diag {
    Diag::error(
        "nnc::shape::seq",
        "a sequence has two dimensions: steps and features",
        span,
        format!("found {rank} dimensions, expected 2"),
    )
    .with_help("write `seq[steps, features]`, e.g. `seq[8, 8]`")
}

pub fn tokens_rank(span: Span, rank: usize) -> Diag {
    Diag::error(
        "nnc::shape::tokens",
        "token ids have one dimension: the sequence length",
        span,
        format!("found {rank} dimensions, expected 1"),
    )
    .with_help("write `tokens[steps]`, e.g. `tokens[20]`")
}

pub fn shape_too_large(span: Span) -> Diag {
    Diag::error("nnc::shape::too_large", "this shape has more than a billion elements per sample", span, "too large")
        .with_help("check the dimensions for a typo")
}

pub fn too_many_layers(span: Span, max: usize) -> Diag {
    Diag::error("nnc::model::too_large", format!("this expands to more than {max} layers"), span, "expanded here")
        .with_help("check the `repeat` counts")
}

pub fn bad_source(call: &Call, is_layer: bool) -> Diag {
    let help = if is_layer {
        format!("start from a value and pipe it: `x |> {}(…)`", call.name.name)
    } else {
        "a pipeline starts from a value name or `add(a, b)`".to_string()
    };
    Diag::error(
        "nnc::model::source",
        "a pipeline must start from a value",
        call.span,
        "expected a value name or `add(a, b)`",
    )
    .with_help(help)
}

pub fn pipeline_does_nothing(span: Span) -> Diag {
    Diag::warning("nnc::lint::no_effect", "this statement has no effect", span, "nothing is computed or named")
        .with_help("remove it, or pipe it into layers")
}

pub fn unnamed_result(span: Span) -> Diag {
    Diag::warning(
        "nnc::lint::unnamed_result",
        "the result of this pipeline is never used",
        span,
        "no `=> name` at the end",
    )
    .with_help("name the result with `=> name` and use it in the loss or another pipeline")
}

pub fn unused(span: Span, name: &str, what: &str) -> Diag {
    Diag::warning("nnc::lint::unused", format!("{what} `{name}` is never used"), span, "defined but never used")
        .with_help("use it in a pipeline or the loss, or remove it")
}

// ---- shapes ----------------------------------------------------------------------

fn derived(input: &Incoming) -> String {
    if input.why.is_empty() {
        shape_text(&input.shape)
    } else {
        format!("{} → {}", input.why, shape_text(&input.shape))
    }
}

pub fn rank_mismatch(call: &Call, input: &Incoming, expected: &str, fix: &str) -> Diag {
    Diag::error(
        "nnc::shape::rank",
        format!("`{}` expects {expected}", call.name.name),
        call.span,
        format!("found {}, expected {expected}", shape_text(&input.shape)),
    )
    .with_note(input.producer, format!("this produces {}", derived(input)))
    .with_help(fix.to_string())
}

pub fn declared_size(span: Span, declared: usize, actual: usize, input: &Incoming) -> Diag {
    Diag::error(
        "nnc::shape::mismatch",
        "the declared input size does not match",
        span,
        format!("declared {declared}, but {actual} flows in"),
    )
    .with_note(input.producer, format!("this produces {}", derived(input)))
    .with_help(format!("write `in = {actual}` or fix the layers before it"))
}

pub fn kernel_too_large(
    call: &Call,
    input: &Incoming,
    (kernel, dilation): (usize, usize),
    size: usize,
    padding: usize,
) -> Diag {
    let padded = size + 2 * padding;
    let (what, help) = if dilation == 1 {
        (format!("kernel {kernel}"), format!("use a kernel of at most {padded} or add padding"))
    } else {
        let extent = dilation * (kernel - 1) + 1;
        (
            format!("kernel {kernel} with dilation {dilation} spans {extent} and"),
            format!("make d·(k − 1) + 1 at most {padded}: a smaller kernel or dilation, or more padding"),
        )
    };
    Diag::error(
        "nnc::shape::kernel",
        format!("`{}` kernel is larger than its input", call.name.name),
        call.span,
        format!("{what} does not fit in {size} + 2·{padding} = {padded}"),
    )
    .with_note(input.producer, format!("this produces {}", derived(input)))
    .with_help(help)
}

pub fn stride_drops_rows(span: Span, input: &Incoming, formula: &str, out: usize, dropped: usize) -> Diag {
    Diag::warning(
        "nnc::shape::stride_drops",
        format!("the stride skips the last {dropped} row(s)/column(s) of its input"),
        span,
        format!("{formula} = {out} rounds down"),
    )
    .with_note(input.producer, format!("this produces {}", derived(input)))
    .with_help("adjust padding, kernel or stride so the windows cover the input exactly")
}

pub fn reshape_size(call: &Call, input: &Incoming, shape: &[usize], from: usize, to: usize) -> Diag {
    Diag::error(
        "nnc::shape::reshape",
        "reshape must keep the number of elements",
        call.span,
        format!("{} has {to} elements, the input has {from}", shape_text(shape)),
    )
    .with_note(input.producer, format!("this produces {}", derived(input)))
    .with_help("choose dimensions whose product equals the input's")
}

pub fn add_mismatch(span: Span, left: &Incoming, right_span: Span, right: &Incoming) -> Diag {
    Diag::error(
        "nnc::shape::add",
        "`add` needs two values of the same shape",
        span,
        format!("{} + {}", shape_text(&left.shape), shape_text(&right.shape)),
    )
    .with_note(left.producer, format!("left side: {}", derived(left)))
    .with_note(right_span, format!("right side: {}", shape_text(&right.shape)))
    .with_help("project one side with `dense` or `conv2d` to the other's shape")
}

pub fn tokens_need_embedding(span: Span, producer: Span) -> Diag {
    Diag::error(
        "nnc::shape::tokens",
        "token ids must go through `embedding` first",
        span,
        "found token ids, expected real values",
    )
    .with_note(producer, "declared as tokens here")
    .with_help("insert `embedding(vocab = …, dim = …)` before this layer")
}

pub fn embedding_needs_tokens(call: &Call, input: &Incoming) -> Diag {
    Diag::error(
        "nnc::shape::embedding",
        "`embedding` reads token ids",
        call.span,
        format!("found real values {}", shape_text(&input.shape)),
    )
    .with_note(input.producer, "this is not a `tokens[T]` input")
    .with_help("declare the input as `tokens[steps]`")
}

/// A tied (transposed) or shared weight matrix whose shape does not fit.
pub fn reused_weights_shape(
    span: Span,
    label: &Ident,
    tied: bool,
    other: (usize, usize),
    this: (usize, usize),
) -> Diag {
    let (code, message, note, needed) = if tied {
        ("nnc::shape::tied", "tied weights need the transpose of", "tied to this layer", (other.1, other.0))
    } else {
        ("nnc::shape::shared", "shared weights need the same shape as", "shares this layer's weights", other)
    };
    let kind = if tied { "tied" } else { "shared" };
    Diag::error(
        code,
        format!("{message} `{}`", label.name),
        span,
        format!("this layer maps {} → {}, `{}` maps {} → {}", this.0, this.1, label.name, other.0, other.1),
    )
    .with_note(label.span, note)
    .with_help(format!("a {kind} layer must map {} → {}", needed.0, needed.1))
}

pub fn not_a_dense_label(label: &Ident, layer: &str) -> Diag {
    Diag::error(
        "nnc::shape::tied",
        format!("`{}` is a `{layer}` layer with no weight matrix of its own", label.name),
        label.span,
        "expected a dense layer with its own weights",
    )
    .with_help("tie or share weights with a `dense` layer")
}

// ---- losses ------------------------------------------------------------------------

pub fn loss_shape(pred: &Ident, pred_info: &Incoming, target: &Ident, target_shape: &[usize], what: &str) -> Diag {
    Diag::error(
        "nnc::loss::shape",
        "the prediction and the target have different shapes",
        pred.span,
        format!("prediction is {}, target needs {} {what}", shape_text(&pred_info.shape), shape_text(target_shape)),
    )
    .with_note(pred_info.producer, format!("prediction produced here: {}", derived(pred_info)))
    .with_note(target.span, format!("target {}", shape_text(target_shape)))
    .with_help(format!("make the last layer produce {}", shape_text(target_shape)))
}

pub fn loss_target_kind(call: &Call, target: &Ident, declared: Span, expected: &str, instead: &str) -> Diag {
    Diag::error(
        "nnc::loss::target",
        format!("`{}` does not fit this target", call.name.name),
        target.span,
        format!("`{}` needs a target of type {expected}", call.name.name),
    )
    .with_note(declared, "target declared here")
    .with_help(format!("use `{instead}` for this target, or change the target's type"))
}

// ---- train ---------------------------------------------------------------------------

pub fn cd_without_rbm(span: Span) -> Diag {
    Diag::error(
        "nnc::train::cd",
        "contrastive divergence trains `rbm` layers, and this model has none",
        span,
        "optimizer = cd(…)",
    )
    .with_help("add an `rbm(hidden = …)` layer or choose another optimizer")
}

// ---- lints ------------------------------------------------------------------------------

pub fn rbm_without_cd(span: Span) -> Diag {
    Diag::warning(
        "nnc::lint::rbm_untrained",
        "`rbm` layers are trained by contrastive divergence, which is not enabled",
        span,
        "no `pretrain` and no `optimizer = cd(…)`",
    )
    .with_help("add `pretrain = cd(k = 1, epochs = 5)` for a deep belief network")
}

pub fn double_softmax(softmax: Span, loss: Span) -> Diag {
    Diag::warning("nnc::lint::double_softmax", "softmax is applied twice", softmax, "this softmax")
        .with_note(loss, "cross_entropy applies softmax itself")
        .with_help("remove `softmax` and feed the raw scores to cross_entropy")
}

pub fn dropout_at_output(dropout: Span, pred: &Ident) -> Diag {
    Diag::warning(
        "nnc::lint::dropout_output",
        "dropout on the model's output",
        dropout,
        "drops predictions, not features",
    )
    .with_note(pred.span, "used as the prediction")
    .with_help("move dropout before the last layer")
}

pub fn bce_without_sigmoid(producer: Span, loss: Span) -> Diag {
    Diag::warning(
        "nnc::lint::bce_probability",
        "binary_cross_entropy expects probabilities",
        producer,
        "this output is not a sigmoid",
    )
    .with_note(loss, "binary_cross_entropy here")
    .with_help("end the pipeline with `sigmoid`")
}

pub fn decay_with_batchnorm(bn: Span, train: Span) -> Diag {
    Diag::warning(
        "nnc::lint::decay_batchnorm",
        "weight decay together with batchnorm",
        bn,
        "batchnorm makes the preceding weights scale-invariant",
    )
    .with_note(train, "l2 / weight_decay set here")
    .with_help("decay then only raises the effective learning rate; consider removing it")
}

// ---- lowering ------------------------------------------------------------------------------

pub fn not_trainable(span: Span, layer: &str) -> Diag {
    Diag::error("nnc::lower::not_trainable", format!("`{layer}` layers cannot be trained yet"), span, "no training implementation for this layer")
        .with_help("`nnc check` and `nnc summary` understand it; training supports dense, conv2d, maxpool, avgpool, maxout, the activations, flatten, reshape and add")
}

pub fn nothing_to_train(span: Span, model: &str) -> Diag {
    Diag::error("nnc::lower::no_loss", format!("model `{model}` has no loss to train"), span, "no `loss = …`")
        .with_help("add a loss; contrastive-divergence training of RBMs is not available yet")
}

pub fn internal(span: Span, what: &str) -> Diag {
    Diag::error("nnc::internal", format!("internal error: {what}"), span, "while compiling this model")
        .with_help("this is a bug in nnc; please report it with the model file")
}

pub fn several_inputs(span: Span) -> Diag {
    Diag::error(
        "nnc::lower::several_inputs",
        "training reads one input per model",
        span,
        "this model declares several inputs",
    )
    .with_help("combine the features into one input")
}

pub fn not_trainable_optimizer(span: Span, what: &str) -> Diag {
    Diag::error("nnc::lower::optimizer", what.to_string(), span, "cannot build the training step")
        .with_help("choose gd, sgd, momentum, nesterov or adam")
}

// ---- data ------------------------------------------------------------------------------------

/// A data file that does not fit the model: names the file and line
/// (`location`), and points at the declaration it disagrees with.
pub fn data_mismatch(location: &str, problem: &str, help: &str, declared: Span, expected: &str) -> Diag {
    Diag::error("nnc::data::mismatch", format!("{location}: {problem}"), declared, expected.to_string())
        .with_help(help.to_string())
}

pub fn non_finite(span: Span, what: &str, epoch: usize, step: usize) -> Diag {
    Diag::error(
        "nnc::train::non_finite",
        format!("training diverged at epoch {epoch}, step {step}"),
        span,
        format!("{what} is the first value of the step that is not a finite number"),
    )
    .with_help("lower the learning rate, add `clip_norm`, or scale the inputs (`scale` / `standardize`)")
}
