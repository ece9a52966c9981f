//! Syntax errors and names: unknown, duplicate or shadowed.

use super::*;

/// A parse error: `found` names what was there (`None`: the end of the
/// file); `help` is a fix when the mistake has a typical one.
pub fn syntax(span: Span, found: &Option<String>, expected: &[String], help: Option<String>) -> Diag {
    let expected = match expected.len() {
        0 => "something else".to_string(),
        1 => expected[0].clone(),
        n => format!("{} or {}", expected[..n - 1].join(", "), expected[n - 1]),
    };
    let found = found.clone().unwrap_or_else(|| "the end of the file".to_string());
    Diag::error("nnc::syntax::unexpected", format!("unexpected {found}"), span, format!("expected {expected}"))
        .with_help(
            help.unwrap_or_else(|| "check for a missing `|>`, bracket or `=` just before this point".to_string()),
        )
}

pub fn flow_named_twice(first: &crate::ast::Ident, second: &crate::ast::Ident) -> Diag {
    Diag::error(
        "nnc::syntax::named_twice",
        format!("the result is named twice, `{}` and `{}`", first.name, second.name),
        second.span,
        "second name",
    )
    .with_note(first.span, "first name")
    .with_help(format!("keep one: `{} = …` or `… => {}`", first.name, second.name))
}

pub fn unclosed_comment(span: Span) -> Diag {
    Diag::error("nnc::syntax::unclosed_comment", "a block comment that never closes", span, "opened here")
        .with_help("close it with `*/`; everything up to there is the comment (block comments do not nest)")
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

pub fn too_large(limit: u64) -> Diag {
    Diag::error(
        "nnc::syntax::too_large",
        format!("the text is larger than {} KiB", limit >> 10),
        Span::default(),
        "not checked",
    )
    .with_help("model files are a few kilobytes; is this a model file?")
}

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

/// `layers`: the catalogue's layer keywords, activations left out, listed
/// when nothing is near the name.
pub fn unknown_layer(name: &Ident, suggestion: Option<&str>, layers: &[&str]) -> Diag {
    let help = match suggestion {
        Some(s) => maybe(Some(s)),
        None => format!("layers are {} and the activations", layers.join(", ")),
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
    let suggestion = crate::diag::did_you_mean(&kind.name, kinds.iter().copied());
    Diag::error(
        "nnc::name::unknown_type",
        format!("unknown {what} type `{}`", kind.name),
        kind.span,
        format!("expected {}", list(kinds)),
    )
    .with_help(suggestion.map_or(format!("write e.g. `{what} x: [3]`"), |s| maybe(Some(s))))
}

/// `data = "file"`: a path alone, where a source reads it as CSV or IDX.
pub fn path_as_data_source(span: Span, path: &str) -> Diag {
    let path = path.escape_default();
    Diag::error("nnc::arg::type", "`data` names a source, not a file", span, "a path alone").with_help(format!(
        "read it as CSV with `data = csv(\"{path}\")`, or as IDX files with `idx(images = …, labels = …)`"
    ))
}

pub fn unknown_builtin(span: Span, name: &str, known: &[&str]) -> Diag {
    Diag::error(
        "nnc::name::unknown_dataset",
        format!("no built-in data set `{name}`"),
        span,
        format!("expected {}", list(known)),
    )
    .with_help(
        crate::diag::did_you_mean(name, known.iter().copied())
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
