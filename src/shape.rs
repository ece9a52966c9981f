//! Shapes and numeric constants every stage shares, at the bottom of the
//! house: the checker, the IR, both backends and the runtime routines
//! import from here, and this module imports nothing of theirs.

use nnc_runtime::kernels::{Taps, Window};

/// Full shape of a tensor, batch dimension first. A scalar has shape `[]`.
pub type Shape = Vec<usize>;

/// The cubic coefficient of gelu's tanh approximation:
/// 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715x³))).
pub const GELU_CUBIC: f64 = 0.044715;

/// 2√(2/π): gelu's tanh form is x·σ(v) with v = 2√(2/π)·(x + 0.044715x³),
/// since 1 + tanh(u) = 2σ(2u).
pub const GELU_TANH_SCALE: f64 = 1.5957691216057308;

/// `[2, 3]` as the user writes it.
pub fn shape_text(shape: &[usize]) -> String {
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    format!("[{}]", dims.join(", "))
}

/// Elements per channel of a `[B, C, …]` tensor.
pub fn spatial(shape: &[usize]) -> usize {
    shape[2..].iter().product()
}

/// A shape seen as `[outer, shape[axis], inner]`: (outer, inner).
pub fn around(shape: &[usize], axis: usize) -> (usize, usize) {
    (numel(&shape[..axis]), numel(&shape[axis + 1..]))
}

/// Element count of a shape (1 for a scalar).
pub fn numel(shape: &[usize]) -> usize {
    shape.iter().product()
}

/// The window sizes of a convolution or pooling over an input of `shape`
/// `[B,C,H,W]`, its kernel along the height (`rows`) and the width (`cols`).
pub fn window(shape: &[usize], rows: Taps, cols: Taps) -> Window {
    Window { batch: shape[0], channels: shape[1], height: shape[2], width: shape[3], rows, cols }
}

/// A pooling window along either axis: adjacent taps.
pub fn pooling(kernel: usize, stride: usize, padding: usize) -> Taps {
    Taps { kernel, stride, padding, dilation: 1 }
}

/// A size in bytes as people read it: `512 B`, `20.0 KiB`, `1.5 GiB`.
pub fn bytes_text(n: u64) -> String {
    match n {
        0..=9_999 => format!("{n} B"),
        10_000..=9_999_999 => format!("{:.1} KiB", n as f64 / 1024.0),
        10_000_000..=9_999_999_999 => format!("{:.1} MiB", n as f64 / 1048576.0),
        _ => format!("{:.1} GiB", n as f64 / 1073741824.0),
    }
}

/// Groups digits in threes: 138357544 → 138,357,544.
pub fn grouped(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}
