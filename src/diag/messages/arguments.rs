//! Layer, block and setting arguments: missing, unknown, of the wrong type or out of range.

use super::*;

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

/// `init = …` on a dense layer that uses another layer's matrix.
/// `init` or `trainable` on a layer whose matrix is another's (tied or
/// shared): the owner's setting is the one that counts.
pub fn argument_on_borrowed_weights(value: &Value, argument: &str, owner: &str) -> Diag {
    let (code, message, done) = if argument == "init" {
        ("nnc::arg::init_unused", "`init` would have no effect here", "initialised")
    } else {
        ("nnc::arg::trainable_unused", "`trainable` would reach this layer's bias only", "trained or frozen")
    };
    Diag::error(code, message, value.span(), format!("this layer's matrix is `{owner}`'s, {done} there"))
        .with_help(format!("move `{argument}` to `{owner}`, or remove it"))
}

/// A number too large for the 32-bit floats training runs in.
pub fn beyond_f32(n: &Number, name: &str) -> Diag {
    Diag::error(
        "nnc::arg::range",
        format!("`{name}` is too large for a 32-bit float"),
        n.span,
        format!("found {}, but f32 holds magnitudes up to about 3.4e38", n.text),
    )
    .with_help(format!("`{name}` is far too large; check it for a typo"))
}

pub fn out_of_range(n: &Number, name: &str, expected: &str) -> Diag {
    let help = match name {
        "lr" => "a learning rate must be positive; typical values are 0.001 to 0.1".to_string(),
        "p" => {
            "dropout p is the probability of dropping a unit: 0 keeps all, values near 1 drop almost all".to_string()
        }
        "momentum" => "momentum must be in [0, 1); 0.9 is the usual choice".to_string(),
        "factor" => "each cut multiplies the learning rate by `factor`, so it lies between 0 and 1; 0.1 and 0.5 \
                     are usual"
            .to_string(),
        "weight" => "a loss term's weight scales it in the summed loss and must be > 0; remove a term you do not want"
            .to_string(),
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

/// `n` is not a whole number in [min, max].
pub fn int_out_of_range(n: &Number, name: &str, min: usize, max: f64) -> Diag {
    let (label, help) = if n.value > max {
        (
            format!("a whole number up to {}", crate::shape::grouped(max as u64)),
            format!("`{name}` is far too large; check it for a typo"),
        )
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

/// `features = […]` or `target = …` names another number of columns than
/// the declaration (`owner`) holds per row.
pub fn column_count(span: Span, what: &str, named: usize, wanted: usize, (owner, at): (String, Span)) -> Diag {
    let columns = |n: usize| if n == 1 { "1 column".to_string() } else { format!("{n} columns") };
    let values = if wanted == 1 { "1 value".to_string() } else { format!("{wanted} values") };
    Diag::error(
        "nnc::data::columns",
        format!("`{what}` names {}, but {owner} holds {values} per row", columns(named)),
        span,
        columns(named),
    )
    .with_note(at, format!("{values} per row"))
    .with_help("name one header column per value, in the order the model reads them")
}

pub fn column_twice(name: &str, features: Span, target: Span) -> Diag {
    Diag::error(
        "nnc::data::columns",
        format!("column `{name}` is both a feature and the target"),
        features,
        "read as a feature here",
    )
    .with_note(target, "and as the target here")
    .with_help(format!("a model shown its own target learns nothing it can use later: drop `{name}` from `features`"))
}

pub fn standardize_target_without_regression(setting: Span, loss: Option<Span>) -> Diag {
    let diag = Diag::error(
        "nnc::train::preprocess",
        "`standardize_target` needs a regression: an `mse` loss on a `real` target",
        setting,
        "no real-valued target to standardise",
    );
    let diag = match loss {
        Some(loss) => diag.with_note(loss, "the loss"),
        None => diag,
    };
    diag.with_help("class and binary targets are labels, kept as they are: remove `standardize_target`")
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
