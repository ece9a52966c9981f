//! Runtime routines the generated code calls: the row-wise and reducing
//! ops (softmax, the losses, sums) that are not element-wise loops, and
//! dropout, maxout, slicing and gathering. Products are in `products.rs`,
//! convolution and pooling in `spatial.rs`.
//!
//! Each takes raw pointers and sizes fixed at compile time. None allocates
//! and none can panic (only pointer arithmetic within the sizes given).
#![allow(unsafe_code)]

use rayon::prelude::*;

use crate::kernels;

mod sums;

use sums::sum_squares;
pub(crate) use sums::{channel_sum, channel_sum_pair, channel_sum_pairs_in_order, channel_sums_in_order, column_sums};

/// Sums of at least this many values are split over rayon's threads.
pub(crate) const PARALLEL_SUM: usize = 1 << 16;

/// # Safety (for every routine of this crate)
/// Pointers are valid for the element counts implied by the sizes; the
/// generated code passes buffers planned with exactly those sizes.
pub(crate) unsafe fn slice<'a>(p: *const f32, n: usize) -> &'a [f32] {
    // SAFETY: see the module contract above.
    unsafe { std::slice::from_raw_parts(p, n) }
}

pub(crate) unsafe fn slice_mut<'a>(p: *mut f32, n: usize) -> &'a mut [f32] {
    // SAFETY: see the module contract above.
    unsafe { std::slice::from_raw_parts_mut(p, n) }
}

/// out[j] = Σ_r x[r][j], the rows added in order. Large sums (a bias's
/// gradient over a batch) take their columns in two halves, one on each
/// of the step's threads: each column's sum is the same either way.
#[unsafe(no_mangle)]
pub extern "C" fn nnc_sum_rows(x: *const f32, out: *mut f32, rows: usize, cols: usize) {
    let (x, out) = (x as usize, out as usize);
    let sum = move |(start, end): (usize, usize)| {
        // SAFETY: x holds rows·cols values and out holds cols; each half
        // writes only its columns start..end of out.
        let (x, out) =
            unsafe { (slice(x as *const f32, rows * cols), slice_mut((out as *mut f32).add(start), end - start)) };
        column_sums(x, None, (cols, start), out);
    };
    if rows.saturating_mul(cols) >= PARALLEL_SUM && cols >= 64 {
        let half = (cols / 2).next_multiple_of(16);
        crate::partner::join(|| sum((0, half)), || sum((half, cols)));
    } else {
        sum((0, cols));
    }
}

/// The probabilities of one row of class scores (the ones `nnc predict`
/// prints and a built library returns).
pub fn softmax_row(z: &[f32], out: &mut [f32]) {
    softmax_rows(z, out, z.len());
}

/// `softmax_row` for each row of `width` scores: the exponentials of all
/// rows in one pass of this CPU's vectors (glibc's `expf`, a call per
/// value, took a twentieth of a built MNIST MLP's prediction), then each
/// row's sum in order. The same bits on every instruction set.
pub fn softmax_rows(z: &[f32], out: &mut [f32], width: usize) {
    match crate::gemm::Isa::detect() {
        Some(isa) => softmax_rows_for(isa, z, out, width),
        None => softmax_rows_with(z, out, width),
    }
}

crate::simd::compiled_for_isa! {
    /// `softmax_rows_with` in the vectors of `isa`.
    fn softmax_rows_for(z: &[f32], out: &mut [f32], width: usize) {
        softmax_rows_with(z, out, width)
    }
}

#[inline(always)]
fn softmax_rows_with(z: &[f32], out: &mut [f32], width: usize) {
    let width = width.max(1);
    let rows = z.len().min(out.len()) / width;
    let out = &mut out[..rows * width];
    for (z, o) in z.chunks_exact(width).zip(out.chunks_exact_mut(width)) {
        let max = z.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
        o.iter_mut().zip(z).for_each(|(o, &v)| *o = v - max);
    }
    out.iter_mut().for_each(|o| *o = exp(*o));
    for o in out.chunks_exact_mut(width) {
        let sum = o.iter().fold(0.0, |s, &v| s + v);
        o.iter_mut().for_each(|o| *o /= sum);
    }
}

/// eˣ within one unit in the last place, subnormal results included;
/// +∞ above 88.72, 0 below −103.97, NaN kept. Branch-free, so a loop of
/// it becomes vector code: eˣ = 2ⁿ·eʳ with n = round(x·log₂e) and |r| ≤
/// ln 2 / 2, eʳ by Cephes' polynomial, 2ⁿ applied in two halves so that
/// neither overflows the exponent and a subnormal result is rounded once.
#[inline(always)]
pub(crate) fn exp(x: f32) -> f32 {
    // Beyond these the result is +∞ or 0 all the same; within them n fits -150..=128.
    let x = x.clamp(-104.0, 88.8);
    // n is rounded to an integer in the mantissa of 1.5·2²³, its low bits then n.
    const ROUNDER: f32 = 12_582_912.0;
    let t = x.mul_add(std::f32::consts::LOG2_E, ROUNDER);
    let n = t - ROUNDER;
    // r = x − n·ln 2, ln 2 in two parts (the first exact in a few bits).
    let r = n.mul_add(-0.693_359_4, x);
    let r = n.mul_add(2.121_944_4e-4, r);
    let p = [1.398_199_9e-3, 8.333_452e-3, 4.166_579_6e-2, 0.166_666_65, 0.5]
        .iter()
        .fold(1.987_569_1e-4_f32, |p, &c| p.mul_add(r, c));
    let e_r = p.mul_add(r * r, r) + 1.0;
    let n = t.to_bits().wrapping_sub(ROUNDER.to_bits()) as i32;
    let half = n >> 1;
    let power = |k: i32| f32::from_bits(((k + 127) as u32) << 23);
    e_r * power(half) * power(n - half)
}

/// σ(x) = 1/(1 + e⁻ˣ), with the operations of the compiled element-wise
/// loops' σ (`src/jit/vector.rs`), so it gives their bits: their eˣ is
/// 0 where this one's is subnormal, which leaves 1 + e⁻ˣ at 1 all the same.
#[inline(always)]
fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + exp(-x))
}

/// tanh with the operations of the compiled element-wise loops' tanh
/// (`src/jit/vector.rs`), so it gives their bits: an odd polynomial below
/// |x| = 0.625, else sign(x)·(1 − 2/(e²ˡˣˡ + 1)).
#[inline(always)]
fn tanh(x: f32) -> f32 {
    let z = x * x;
    let p = [2.063_908_8e-2, -5.373_971_6e-2, 0.133_314_42, -0.333_332_8]
        .iter()
        .fold(-5.704_988_7e-3_f32, |p, &c| p.mul_add(z, c));
    let small = (p * z).mul_add(x, x);
    let e = exp(x.abs() * 2.0);
    let big = 1.0 - 2.0 / (e + 1.0);
    let big = f32::from_bits(big.to_bits() | (x.to_bits() & 0x8000_0000));
    if x.abs() < 0.625 { small } else { big }
}

/// The S-shaped functions `nnc_squash` applies to a whole tensor.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[repr(usize)]
pub enum Squash {
    Sigmoid = 0,
    Tanh = 1,
}

crate::simd::compiled_for_isa! {
    /// `squash_with` in the vectors of `isa`.
    fn squash_for(x: &[f32], out: &mut [f32], how: Squash) {
        squash_with(x, out, how)
    }
}

#[inline(always)]
fn squash_with(x: &[f32], out: &mut [f32], how: Squash) {
    let pairs = out.iter_mut().zip(x);
    match how {
        Squash::Sigmoid => pairs.for_each(|(o, &v)| *o = sigmoid(v)),
        Squash::Tanh => pairs.for_each(|(o, &v)| *o = tanh(v)),
    }
}

/// σ or tanh (`how`, a `Squash`) of `rows` rows of `cols` values, in this
/// CPU's widest vectors: the compiled element-wise loops run four lanes,
/// and an LSTM's gates are each a loop of σ or tanh alone. x's rows lie
/// `stride` values apart (a gate's columns, read where they lie in the
/// gates' tensor); out's follow each other.
#[unsafe(no_mangle)]
pub extern "C" fn nnc_squash(x: *const f32, out: *mut f32, rows: usize, cols: usize, stride: usize, how: usize) {
    let how = if how == Squash::Tanh as usize { Squash::Tanh } else { Squash::Sigmoid };
    let isa = crate::gemm::Isa::detect();
    // Rows end to end are one run.
    let (rows, cols) = if stride == cols { (1, rows * cols) } else { (rows, cols) };
    for r in 0..rows {
        // SAFETY: x holds `rows` rows of `cols` values `stride` apart, out
        // `rows · cols` values.
        let (x, out) = unsafe { (slice(x.add(r * stride), cols), slice_mut(out.add(r * cols), cols)) };
        match isa {
            Some(isa) => squash_for(isa, x, out, how),
            None => squash_with(x, out, how),
        }
    }
}

#[unsafe(no_mangle)]
pub extern "C" fn nnc_softmax(x: *const f32, out: *mut f32, rows: usize, cols: usize) {
    // SAFETY: both hold rows·cols values.
    let (x, out) = unsafe { (slice(x, rows * cols), slice_mut(out, rows * cols)) };
    softmax_rows(x, out, cols);
}

/// out = y·(g − Σ g·y) per row
#[unsafe(no_mangle)]
pub extern "C" fn nnc_softmax_grad(y: *const f32, g: *const f32, out: *mut f32, rows: usize, cols: usize) {
    // SAFETY: all hold rows·cols values.
    let (y, g, out) = unsafe { (slice(y, rows * cols), slice(g, rows * cols), slice_mut(out, rows * cols)) };
    for ((y, g), o) in y.chunks_exact(cols).zip(g.chunks_exact(cols)).zip(out.chunks_exact_mut(cols)) {
        let dot: f32 = y.iter().zip(g).map(|(a, b)| a * b).sum();
        for ((o, &a), &b) in o.iter_mut().zip(y).zip(g) {
            *o = a * (b - dot);
        }
    }
}

/// A class id stored as f32, or None when it is not one of `classes`.
fn class(label: f32, classes: usize) -> Option<usize> {
    (label >= 0.0 && label.fract() == 0.0 && (label as usize) < classes).then_some(label as usize)
}

/// out[0] = mean over rows of −log softmax(z)[label]; NaN for a bad label.
#[unsafe(no_mangle)]
pub extern "C" fn nnc_softmax_cross_entropy(
    z: *const f32,
    labels: *const f32,
    weights: *const f32,
    out: *mut f32,
    rows: usize,
    cols: usize,
) {
    // SAFETY: z holds rows·cols values, labels rows, out one; weights is
    // null or holds rows values.
    let (z, labels, out) = unsafe { (slice(z, rows * cols), slice(labels, rows), slice_mut(out, 1)) };
    let weights = row_weights(weights, rows);
    let mut total = 0.0f32;
    for (r, (row, &label)) in z.chunks_exact(cols).zip(labels).enumerate() {
        let Some(c) = class(label, cols) else {
            out[0] = f32::NAN;
            return;
        };
        let max = row.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
        let sum: f32 = row.iter().map(|&v| (v - max).exp()).sum();
        let weight = weights.map_or(1.0, |w| w[r]);
        total += weight * (sum.ln() + max - row[c]);
    }
    out[0] = total / rows as f32;
}

/// out = g·w·(softmax(z) − onehot)/rows, w the row's weight (1 without weights)
#[unsafe(no_mangle)]
pub extern "C" fn nnc_softmax_cross_entropy_grad(
    z: *const f32,
    labels: *const f32,
    g: *const f32,
    weights: *const f32,
    out: *mut f32,
    rows: usize,
    cols: usize,
) {
    // SAFETY: z and out hold rows·cols values, labels rows, g one; weights
    // is null or holds rows values.
    let (z, labels, g, out) =
        unsafe { (slice(z, rows * cols), slice(labels, rows), slice(g, 1), slice_mut(out, rows * cols)) };
    let weights = row_weights(weights, rows);
    let scale = g[0] / rows as f32;
    softmax_rows(z, out, cols);
    for (r, (&label, o)) in labels.iter().zip(out.chunks_exact_mut(cols)).enumerate() {
        let c = class(label, cols);
        let scale = weights.map_or(scale, |w| scale * w[r]);
        for (j, v) in o.iter_mut().enumerate() {
            let onehot = if Some(j) == c { 1.0 } else { 0.0 };
            *v = scale * (*v - onehot);
        }
    }
}

/// The optional row weights of a weighted loss: `rows` values, or none for a null pointer.
fn row_weights<'a>(weights: *const f32, rows: usize) -> Option<&'a [f32]> {
    // SAFETY: generated code passes null or a buffer of `rows` values.
    (!weights.is_null()).then(|| unsafe { slice(weights, rows) })
}

/// out[r] = table[labels[r]], 0 for a label that is not a class.
#[unsafe(no_mangle)]
pub extern "C" fn nnc_class_weights(labels: *const f32, table: *const f32, out: *mut f32, rows: usize, classes: usize) {
    // SAFETY: labels and out hold rows values, table one per class.
    let (labels, table, out) = unsafe { (slice(labels, rows), slice(table, classes), slice_mut(out, rows)) };
    for (o, &label) in out.iter_mut().zip(labels) {
        *o = class(label, classes).map_or(0.0, |c| table[c]);
    }
}

#[unsafe(no_mangle)]
pub extern "C" fn nnc_mse(p: *const f32, t: *const f32, out: *mut f32, n: usize) {
    // SAFETY: p and t hold n values, out one.
    let (p, t, out) = unsafe { (slice(p, n), slice(t, n), slice_mut(out, 1)) };
    out[0] = p.iter().zip(t).map(|(a, b)| (a - b) * (a - b)).sum::<f32>() / n as f32;
}

#[unsafe(no_mangle)]
pub extern "C" fn nnc_bce(p: *const f32, t: *const f32, out: *mut f32, n: usize) {
    // SAFETY: p and t hold n values, out one.
    let (p, t, out) = unsafe { (slice(p, n), slice(t, n), slice_mut(out, 1)) };
    let eps = kernels::BCE_EPS as f32;
    let sum: f32 = p
        .iter()
        .zip(t)
        .map(|(&p, &t)| {
            let p = p.clamp(eps, 1.0 - eps);
            -(t * p.ln() + (1.0 - t) * (1.0 - p).ln())
        })
        .sum();
    out[0] = sum / n as f32;
}

#[unsafe(no_mangle)]
pub extern "C" fn nnc_sum_squares(x: *const f32, out: *mut f32, n: usize) {
    // SAFETY: x holds n values, out one.
    let (x, out) = unsafe { (slice(x, n), slice_mut(out, 1)) };
    // In four parts whatever the thread count (the same bits); large sums
    // (an activation's, observed for training's health) run them on
    // rayon's threads.
    let mut parts = [0.0f32; 4];
    let len = n.div_ceil(parts.len()).max(1);
    if n >= PARALLEL_SUM {
        parts.par_iter_mut().zip(x.par_chunks(len)).for_each(|(s, part)| *s = sum_squares(part));
    } else {
        parts.iter_mut().zip(x.chunks(len)).for_each(|(s, part)| *s = sum_squares(part));
    }
    out[0] = parts.iter().sum();
}

/// out[0] = min(1, c/√x[0])
#[unsafe(no_mangle)]
pub extern "C" fn nnc_clip_scale(x: *const f32, out: *mut f32, c: f32) {
    // SAFETY: one value each.
    let (x, out) = unsafe { (slice(x, 1), slice_mut(out, 1)) };
    let norm = x[0].sqrt();
    out[0] = if norm > c { c / norm } else { 1.0 };
}

#[unsafe(no_mangle)]
pub extern "C" fn nnc_log(x: *const f32, out: *mut f32, n: usize) {
    // SAFETY: both hold n values.
    let (x, out) = unsafe { (slice(x, n), slice_mut(out, n)) };
    for (o, v) in out.iter_mut().zip(x) {
        *o = v.ln();
    }
}

/// One part of a large element-wise kernel, compiled as its own function:
/// the step's five buffer pointers (store, scratch, input, target,
/// hyperparameters), then the range `[begin, end)` of the units (rows or
/// values) it computes.
pub type KernelPart = extern "C" fn(*mut f32, *mut f32, *const f32, *const f32, *const f32, usize, usize);

/// Element-wise kernels of at least this many values run in parts.
pub const PARALLEL_ELEMENTS: usize = 1 << 16;

/// Parts of an element-wise kernel: a fixed number, so the ranges do not
/// depend on the threads (and each value is computed once, from the same
/// inputs, whichever part computes it: the bits do not either).
pub const KERNEL_PARTS: usize = 4;

/// The units each part of a kernel of `units` units takes (`align` a
/// multiple of what they start at): part k starts at k times this, so a
/// part can tell its number from where it starts (a sum the kernel
/// computes keeps a partial sum per part).
pub fn part_units(units: usize, align: usize) -> usize {
    units.div_ceil(KERNEL_PARTS).next_multiple_of(align.max(1)).max(1)
}

/// Runs `part` over `units` units in `KERNEL_PARTS` ranges (whole multiples
/// of `align` but the last) on rayon's threads.
#[unsafe(no_mangle)]
#[allow(clippy::too_many_arguments)]
pub extern "C" fn nnc_parallel_parts(
    part: KernelPart,
    store: *mut f32,
    scratch: *mut f32,
    input: *const f32,
    target: *const f32,
    hyper: *const f32,
    units: usize,
    align: usize,
) {
    // Addresses cross threads as integers; every part writes only its own range.
    let buffers = [store as usize, scratch as usize, input as usize, target as usize, hyper as usize];
    let step = part_units(units, align);
    let run = |begin: usize| {
        let [store, scratch, input, target, hyper] = buffers;
        let end = (begin + step).min(units);
        part(
            store as *mut f32,
            scratch as *mut f32,
            input as *const f32,
            target as *const f32,
            hyper as *const f32,
            begin,
            end,
        );
    };
    let parts = units.div_ceil(step);
    if crate::partner::partnered() {
        // Half the parts here, half on the step's partner.
        let half = parts.div_ceil(2);
        crate::partner::join(|| (0..half).for_each(|k| run(k * step)), || (half..parts).for_each(|k| run(k * step)));
    } else {
        (0..parts).into_par_iter().for_each(|k| run(k * step));
    }
}

#[unsafe(no_mangle)]
pub extern "C" fn nnc_copy(from: *const f32, to: *mut f32, n: usize) {
    // SAFETY: both hold n values and do not overlap (the store and scratch are distinct).
    let (from, to) = unsafe { (slice(from, n), slice_mut(to, n)) };
    to.copy_from_slice(from);
}

/// Inverted dropout; `step` points at the step number (an f32 hyperparameter).
#[unsafe(no_mangle)]
pub extern "C" fn nnc_dropout(
    x: *const f32,
    step: *const f32,
    out: *mut f32,
    n: usize,
    salt: usize,
    first: usize,
    p: f32,
) {
    // SAFETY: x and out hold n values, step one.
    let (x, step, out) = unsafe { (slice(x, n), slice(step, 1), slice_mut(out, n)) };
    kernels::dropout(x, out, f64::from(p), (salt as u64, first), step[0] as u64);
}

#[unsafe(no_mangle)]
pub extern "C" fn nnc_max_pieces(x: *const f32, y: *mut f32, n: usize, pieces: usize) {
    // SAFETY: y holds n values, x n·pieces.
    let (x, y) = unsafe { (slice(x, n * pieces), slice_mut(y, n)) };
    kernels::max_pieces(x, y, pieces);
}

#[unsafe(no_mangle)]
pub extern "C" fn nnc_max_pieces_grad(x: *const f32, g: *const f32, dx: *mut f32, n: usize, pieces: usize) {
    // SAFETY: g holds n values, x and dx n·pieces.
    let (x, g, dx) = unsafe { (slice(x, n * pieces), slice(g, n), slice_mut(dx, n * pieces)) };
    kernels::max_pieces_backward(x, g, dx, pieces);
}

/// What `nnc_slice` does with a part of `axis`.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[repr(usize)]
pub enum SliceMove {
    /// Copies the part out of the whole tensor.
    Take = 0,
    /// Copies the part into a whole tensor of zeros (a slice's adjoint).
    IntoZeros = 1,
    /// Copies the part into its place in the whole tensor, leaving the
    /// rest as it is (one part of a concatenation).
    Place = 2,
}

/// A slice of `axis` taken from the whole tensor or put into it (`how`,
/// a `SliceMove`).
#[allow(clippy::too_many_arguments)]
#[unsafe(no_mangle)]
pub extern "C" fn nnc_slice(
    x: *const f32,
    y: *mut f32,
    outer: usize,
    whole: usize,
    part: usize,
    inner: usize,
    start: usize,
    how: usize,
) {
    let (big, small) = (outer * whole * inner, outer * part * inner);
    if how == SliceMove::Take as usize {
        // SAFETY: x is the whole tensor, y the part.
        let (x, y) = unsafe { (slice(x, big), slice_mut(y, small)) };
        kernels::slice(x, y, whole, part, inner, start);
    } else {
        // SAFETY: x is the part, y the whole tensor.
        let (part_values, whole_values) = unsafe { (slice(x, small), slice_mut(y, big)) };
        if how == SliceMove::IntoZeros as usize {
            kernels::slice_backward(part_values, whole_values, whole, part, inner, start);
        } else {
            kernels::place(part_values, whole_values, whole, part, inner, start);
        }
    }
}

#[unsafe(no_mangle)]
pub extern "C" fn nnc_gather(
    ids: *const f32,
    table: *const f32,
    out: *mut f32,
    count: usize,
    vocab: usize,
    dim: usize,
) {
    // SAFETY: ids holds count values, table vocab·dim, out count·dim.
    let (ids, table, out) = unsafe { (slice(ids, count), slice(table, vocab * dim), slice_mut(out, count * dim)) };
    kernels::gather(ids, table, out, dim);
}

#[unsafe(no_mangle)]
pub extern "C" fn nnc_gather_grad(
    ids: *const f32,
    g: *const f32,
    dtable: *mut f32,
    count: usize,
    vocab: usize,
    dim: usize,
) {
    // SAFETY: ids holds count values, g count·dim, dtable vocab·dim.
    let (ids, g, dtable) = unsafe { (slice(ids, count), slice(g, count * dim), slice_mut(dtable, vocab * dim)) };
    kernels::gather_backward(ids, g, dtable, dim);
}

#[unsafe(no_mangle)]
pub extern "C" fn nnc_bernoulli(p: *const f32, step: *const f32, y: *mut f32, n: usize, salt: usize) {
    // SAFETY: p and y hold n values, step one.
    let (p, step, y) = unsafe { (slice(p, n), slice(step, 1), slice_mut(y, n)) };
    kernels::bernoulli(p, y, salt as u64, step[0] as u64);
}

#[cfg(test)]
mod tests;
