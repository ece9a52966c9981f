//! How a model is put together: its inputs and targets, its flows and what they produce.

use super::*;

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

/// The same loss term twice in the summed loss.
pub fn duplicate_loss(span: Span, first: Span) -> Diag {
    Diag::warning("nnc::lint::duplicate_loss", "this loss is already in the sum", span, "the same loss again")
        .with_note(first, "first written here")
        .with_help("the losses add up, so this doubles its weight: write it once, with a weight (`2 * mse(p, y)`)")
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

/// A `tokens` input beside another input.
pub fn tokens_with_other_inputs(span: Span, other: Span) -> Diag {
    Diag::error("nnc::input::tokens_mixed", "token ids must be the model's only input", span, "a second input here")
        .with_note(other, "the other input")
        .with_help("read token ids in a model of their own, or declare every input as numbers (`[n]`)")
}

pub fn shape_too_large(span: Span) -> Diag {
    Diag::error("nnc::shape::too_large", "this shape has more than a billion elements per sample", span, "too large")
        .with_help("check the dimensions for a typo")
}

/// More than `max` layers; `fix` fits the cause (a `repeat` count, or a
/// pipeline that is simply that long).
pub fn too_many_layers(span: Span, max: usize, fix: &str) -> Diag {
    Diag::error("nnc::model::too_large", format!("this expands to more than {max} layers"), span, "expanded here")
        .with_help(fix.to_string())
}

pub fn bad_source(call: &Call, is_layer: bool) -> Diag {
    let help = if is_layer {
        format!("start from a value and pipe it: `x |> {}(…)`", call.name.name)
    } else {
        "a pipeline starts from a value name, `add(a, b)` or `concat(a, b)`".to_string()
    };
    Diag::error(
        "nnc::model::source",
        "a pipeline must start from a value",
        call.span,
        "expected a value name, `add(a, b)` or `concat(a, b)`",
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
