//! Shapes that do not fit, each with the derivation of the size that was found.

use super::*;

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

pub fn too_many_steps(call: &Call, input: &Incoming, steps: usize, max: usize) -> Diag {
    use crate::shape::grouped;
    Diag::error(
        "nnc::shape::too_many_steps",
        format!("`{}` reads more steps than nnc unrolls", call.name.name),
        call.span,
        format!("found {} steps, expected at most {}", grouped(steps as u64), grouped(max as u64)),
    )
    .with_note(input.producer, format!("this produces {}", derived(input)))
    .with_help(format!(
        "each step is a copy of the cell in the compiled step: shorten the sequence, or split it into windows of at most {} steps",
        grouped(max as u64)
    ))
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
    // A sequence (`conv1d`'s `[channels, length]`) has positions, an image rows and columns.
    let what = if input.shape.len() == 2 { "position(s)" } else { "row(s)/column(s)" };
    Diag::warning(
        "nnc::shape::stride_drops",
        format!("the stride skips the last {dropped} {what} of its input"),
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

pub fn concat_mismatch(span: Span, left: &Incoming, right_span: Span, right: &Incoming) -> Diag {
    let (a, b) = (&left.shape, &right.shape);
    let (label, help) = if left.tokens || right.tokens {
        ("token ids cannot be concatenated".to_string(), "embed them first, then concatenate the embeddings")
    } else if a.len() != b.len() {
        (
            format!(
                "{} ++ {}: a {}-dimensional and a {}-dimensional value",
                shape_text(a),
                shape_text(b),
                a.len(),
                b.len()
            ),
            "flatten the feature maps, or reshape the vector to their shape",
        )
    } else {
        (
            format!("{} ++ {}: only the first dimension may differ", shape_text(a), shape_text(b)),
            "pool or pad the feature maps to the same height and width",
        )
    };
    Diag::error(
        "nnc::shape::concat",
        "`concat` joins values along their features or channels; everything else must agree",
        span,
        label,
    )
    .with_note(left.producer, format!("first: {}", derived(left)))
    .with_note(right_span, format!("second: {}", shape_text(b)))
    .with_help(help)
}

/// `padding = same` where no symmetric padding keeps the size.
pub fn clip_bounds(span: Span, min: Option<f64>, max: Option<f64>) -> Diag {
    let label = match (min, max) {
        (Some(min), Some(max)) => format!("found min = {min} and max = {max}, expected min below max"),
        _ => "found no bound, expected `min`, `max` or both".to_string(),
    };
    Diag::error("nnc::arg::clip", "`clip` needs a range to keep its values in", span, label)
        .with_help("write `clip(min = 0, max = 6)` (relu6), `clip(min = -1, max = 1)` (hardtanh) or one bound alone")
}

pub fn pool_padding(n: &Number, kernel: usize) -> Diag {
    Diag::error(
        "nnc::shape::pool_padding",
        "a pooling window cannot be padded by more than half its size",
        n.span,
        format!("found {}, expected at most {} for a window of {kernel}", n.text, kernel / 2),
    )
    .with_help("windows of only padding would have no value to pool: pad by at most half the kernel, as PyTorch does")
}

pub fn conv_groups(span: Span, groups: usize, channels: usize, filters: usize) -> Diag {
    let uneven: Vec<String> = [("input channels", channels), ("filters", filters)]
        .iter()
        .filter(|(_, n)| !n.is_multiple_of(groups))
        .map(|(what, n)| format!("{n} {what}"))
        .collect();
    Diag::error(
        "nnc::shape::conv_groups",
        "the convolution's groups do not divide its channels and filters",
        span,
        format!("{groups} groups do not split {} evenly", uneven.join(" or ")),
    )
    .with_help(format!(
        "use a number of groups that divides both {channels} and {filters} (groups = {channels} with {channels} \
         filters or a multiple is a depthwise convolution)"
    ))
}

pub fn same_padding(span: Span, (kernel, stride, dilation): (usize, usize, usize)) -> Diag {
    let (label, help) = if stride != 1 {
        (format!("stride {stride} shrinks the image whatever the padding"), "give the padding as a number")
    } else {
        (
            format!(
                "the kernel spans {} inputs, an even number: no padding is the same on both sides",
                dilation * (kernel - 1) + 1
            ),
            "use an odd kernel size, or give the padding as a number",
        )
    };
    Diag::error("nnc::shape::same_padding", "`padding = same` cannot keep this convolution's size", span, label)
        .with_help(help)
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
