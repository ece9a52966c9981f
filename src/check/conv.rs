//! `conv2d`'s shape rule: the kernel, stride, padding and dilation each a
//! number (the same along both axes) or `[height, width]`, and the output
//! size along each axis with its derivation; `conv1d`'s along a sequence;
//! both split into `groups`.

use crate::ast::{Call, Ident, Value};
use crate::check::args::{Args, int_value};
use crate::check::layers::{Applied, chain, check_declared_size, window};
use crate::check::model::{Layer, Taps};
use crate::diag::{Diag, Incoming, messages};

pub fn conv2d(call: &Call, args: &Args, input: &Incoming, diags: &mut Vec<Diag>) -> Option<Applied> {
    let filters = args.int("filters", 1, 1, diags);
    let kernel = pair(args, "kernel", 1, 1, diags)?;
    let stride = pair(args, "stride", 1, 1, diags)?;
    let dilation = pair(args, "dilation", 1, 1, diags)?;
    let padding = match args.value("padding") {
        Some(Value::Name(same)) if same.name == "same" => [
            same_padding(same, (kernel[0], stride[0], dilation[0]), diags)?,
            same_padding(same, (kernel[1], stride[1], dilation[1]), diags)?,
        ],
        _ => pair(args, "padding", 0, 0, diags)?,
    };
    let bias = args.bool("bias", true, diags);
    let s = &input.shape;
    if s.len() != 3 {
        diags.push(messages::rank_mismatch(
            call,
            input,
            "an image [channels, height, width]",
            "declare the input as `[channels, height, width]` or `reshape` it",
        ));
        return None;
    }
    check_declared_size(call, args, s[0], input, diags);
    let groups = groups(args, s[0], filters, diags)?;
    let axis = |a: usize| Taps { kernel: kernel[a], stride: stride[a], padding: padding[a], dilation: dilation[a] };
    let (rows, cols) = (axis(0), axis(1));
    let (h, hw) = window(call, input, "conv2d", s[1], rows, diags)?;
    let (w, ww) = window(call, input, "conv2d", s[2], cols, diags)?;
    let why = if hw == ww { hw } else { format!("{hw}, {ww}") };
    let area = rows.kernel * cols.kernel;
    Some(Applied {
        layer: Layer::Conv2d { filters, rows, cols, bias, groups },
        shape: vec![filters, h, w],
        why: chain(&input.why, why),
        params: filters * (s[0] / groups) * area + if bias { filters } else { 0 },
        macs: (h * w * filters * (s[0] / groups) * area) as u64,
    })
}

/// `conv1d` over `[channels, length]` (PyTorch's `Conv1d` layout): the
/// kernel, stride, padding (or `same`) and dilation along the length.
pub fn conv1d(call: &Call, args: &Args, input: &Incoming, diags: &mut Vec<Diag>) -> Option<Applied> {
    let filters = args.int("filters", 1, 1, diags);
    let kernel = args.int("kernel", 1, 1, diags);
    let stride = args.int("stride", 1, 1, diags);
    let dilation = args.int("dilation", 1, 1, diags);
    let padding = match args.value("padding") {
        Some(Value::Name(same)) if same.name == "same" => same_padding(same, (kernel, stride, dilation), diags)?,
        _ => args.int("padding", 0, 0, diags),
    };
    let bias = args.bool("bias", true, diags);
    let [channels, length] = input.shape[..] else {
        diags.push(messages::rank_mismatch(
            call,
            input,
            "a sequence [channels, length]",
            "declare the input as `[channels, length]` or `reshape` it",
        ));
        return None;
    };
    check_declared_size(call, args, channels, input, diags);
    let groups = groups(args, channels, filters, diags)?;
    let taps = Taps { kernel, stride, padding, dilation };
    let (out, why) = window(call, input, "conv1d", length, taps, diags)?;
    Some(Applied {
        layer: Layer::Conv1d { filters, taps, bias, groups },
        shape: vec![filters, out],
        why: chain(&input.why, why),
        params: filters * (channels / groups) * kernel + if bias { filters } else { 0 },
        macs: (out * filters * (channels / groups) * kernel) as u64,
    })
}

/// `groups`: how many groups the channels and filters split into; both
/// must divide evenly.
fn groups(args: &Args, channels: usize, filters: usize, diags: &mut Vec<Diag>) -> Option<usize> {
    let groups = args.int("groups", 1, 1, diags);
    if !channels.is_multiple_of(groups) || !filters.is_multiple_of(groups) {
        let span = args.value("groups").map(Value::span)?;
        diags.push(messages::conv_groups(span, groups, channels, filters));
        return None;
    }
    Some(groups)
}

/// A whole number for both axes, or `[height, width]`; `default` when absent.
fn pair(args: &Args, name: &str, default: usize, min: usize, diags: &mut Vec<Diag>) -> Option<[usize; 2]> {
    match args.value(name) {
        None => Some([default; 2]),
        Some(Value::List(items, _)) => match &items[..] {
            [h, w] => Some([int_value(h, name, min, diags)?, int_value(w, name, min, diags)?]),
            _ => {
                let value = args.value(name)?;
                diags.push(messages::wrong_type(value, name, "a whole number, or [height, width]"));
                None
            }
        },
        Some(value) => {
            let n = int_value(value, name, min, diags)?;
            Some([n, n])
        }
    }
}

/// `padding = same`: the padding that keeps a stride-1 convolution's
/// height and width, d·(k − 1)/2 on each side; an even span has no
/// symmetric one, and a larger stride shrinks the image whatever the padding.
fn same_padding(
    same: &Ident,
    (kernel, stride, dilation): (usize, usize, usize),
    diags: &mut Vec<Diag>,
) -> Option<usize> {
    let span = dilation * (kernel - 1);
    if stride != 1 || span % 2 != 0 {
        diags.push(messages::same_padding(same.span, (kernel, stride, dilation)));
        return None;
    }
    Some(span / 2)
}
