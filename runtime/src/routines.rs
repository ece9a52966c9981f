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

/// `out[j]` = Σ_r x[r][start + j], or with `by` Σ_r x·by (each product
/// rounded before it is added), for the columns `out` covers of rows of
/// `cols` values, the rows added in order, in this CPU's vectors: the
/// same bits on every instruction set and however the columns are split.
pub(crate) fn column_sums(x: &[f32], by: Option<&[f32]>, (cols, start): (usize, usize), out: &mut [f32]) {
    match crate::gemm::Isa::detect() {
        Some(isa) => column_sums_for(isa, x, by, cols, start, out),
        None => column_sums_with(x, by, cols, start, out),
    }
}

crate::simd::compiled_for_isa! {
    /// `column_sums_with` in the vectors of `isa`.
    fn column_sums_for(x: &[f32], by: Option<&[f32]>, cols: usize, start: usize, out: &mut [f32]) {
        column_sums_with(x, by, cols, start, out)
    }
}

#[inline(always)]
fn column_sums_with(x: &[f32], by: Option<&[f32]>, cols: usize, start: usize, out: &mut [f32]) {
    let cols = cols.max(1);
    out.fill(0.0);
    match by {
        Some(by) => {
            for (row, by) in x.chunks_exact(cols).zip(by.chunks_exact(cols)) {
                out.iter_mut().zip(row[start..].iter().zip(&by[start..])).for_each(|(o, (&x, &y))| *o += x * y);
            }
        }
        None => {
            for row in x.chunks_exact(cols) {
                out.iter_mut().zip(&row[start..]).for_each(|(o, &x)| *o += x);
            }
        }
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

/// Σ v of `values`, or with `by` Σ v·b of the pairs (`Some(values)`: the
/// sum of squares), in AVX2 where the CPU has it (32 lanes, block by
/// block like `kernels`' sums), else by `kernels`. Either way the order of
/// the additions depends only on the length, and each product is rounded
/// before it is added, as when the products are stored first.
pub(crate) fn sum(values: &[f32], by: Option<&[f32]>) -> f32 {
    assert!(by.is_none_or(|b| b.len() == values.len()));
    #[cfg(target_arch = "x86_64")]
    if is_x86_feature_detected!("avx2") {
        let blocks = values.chunks(kernels::SUM_BLOCK);
        // SAFETY (both arms): the CPU has AVX2.
        return match by {
            Some(b) => blocks
                .zip(b.chunks(kernels::SUM_BLOCK))
                .fold(0.0, |acc, (x, y)| acc + unsafe { block_sums_avx2(x, Some(y)) }[1]),
            None => blocks.fold(0.0, |acc, x| acc + unsafe { block_sums_avx2(x, None) }[0]),
        };
    }
    match by {
        Some(b) => kernels::sum_products(values, b),
        None => kernels::sum(values),
    }
}

/// `sum(values, Some(values))`, the sum of squares: on AVX-512 two whole
/// blocks at a time, each block's 32 lanes in two 16-lane registers, which
/// are the lanes of `block_sums_avx2` (so the same bits) in a quarter of
/// the instructions, without the plain sum beside them; and with twice
/// the independent chains of additions.
pub(crate) fn sum_squares(values: &[f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if is_x86_feature_detected!("avx512f") {
        let mut pairs = values.chunks_exact(2 * kernels::SUM_BLOCK);
        // SAFETY (both): the CPU has AVX-512F (and so AVX2).
        let whole = (&mut pairs).fold(0.0, |acc, pair| {
            let [first, second] = unsafe { block_pair_squares_avx512(pair) };
            acc + first + second
        });
        let rest = pairs.remainder().chunks(kernels::SUM_BLOCK);
        return rest.fold(whole, |acc, x| acc + unsafe { block_sums_avx2(x, Some(x)) }[1]);
    }
    sum(values, Some(values))
}

/// The sums of squares of two whole blocks (`pair`: 2 · `SUM_BLOCK`
/// values), interleaved, each with the bits of `block_sums_avx2`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn block_pair_squares_avx512(pair: &[f32]) -> [f32; 2] {
    use std::arch::x86_64::*;
    const BLOCK: usize = kernels::SUM_BLOCK;
    assert!(pair.len() == 2 * BLOCK && BLOCK.is_multiple_of(32));
    // Lanes 0–15 and 16–31 of each block.
    let mut acc = [[_mm512_setzero_ps(); 2]; 2];
    for start in (0..BLOCK).step_by(32) {
        for (b, block) in acc.iter_mut().enumerate() {
            for (h, lanes) in block.iter_mut().enumerate() {
                // SAFETY: the pair holds 16 values from here (asserted above).
                let x = unsafe { _mm512_loadu_ps(pair.as_ptr().add(b * BLOCK + start + 16 * h)) };
                *lanes = _mm512_add_ps(*lanes, _mm512_mul_ps(x, x));
            }
        }
    }
    // As `block_sums_avx2`'s four 8-lane accumulators: lanes 0–7, 8–15, 16–23, 24–31.
    let upper = |v: __m512| _mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(v)));
    let eights =
        |[low, high]: [__m512; 2]| [_mm512_castps512_ps256(low), upper(low), _mm512_castps512_ps256(high), upper(high)];
    [reduce_lanes(eights(acc[0]), 0.0), reduce_lanes(eights(acc[1]), 0.0)]
}

/// `sum(values, None)` and `sum(values, Some(by))` in one pass over both,
/// with the bits of each.
fn sum_pair(values: &[f32], by: &[f32]) -> [f32; 2] {
    assert_eq!(values.len(), by.len());
    #[cfg(target_arch = "x86_64")]
    if is_x86_feature_detected!("avx2") {
        let blocks = values.chunks(kernels::SUM_BLOCK).zip(by.chunks(kernels::SUM_BLOCK));
        return blocks.fold([0.0, 0.0], |[s, p], (x, y)| {
            // SAFETY: the CPU has AVX2.
            let [bs, bp] = unsafe { block_sums_avx2(x, Some(y)) };
            [s + bs, p + bp]
        });
    }
    [kernels::sum(values), kernels::sum_products(values, by)]
}

/// One block's sum in four 8-lane accumulators and, with `by`, the sum of
/// its products with `by`'s values in four more: each the bits of
/// computing it alone.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn block_sums_avx2(block: &[f32], by: Option<&[f32]>) -> [f32; 2] {
    use std::arch::x86_64::*;
    let (mut sums, mut products) = ([_mm256_setzero_ps(); 4], [_mm256_setzero_ps(); 4]);
    let whole = block.len() / 32 * 32;
    let tail: f32 = block[whole..].iter().sum();
    let product_tail: f32 = by.map_or(0.0, |b| block[whole..].iter().zip(&b[whole..]).map(|(x, y)| x * y).sum());
    for start in (0..whole).step_by(32) {
        for k in 0..4 {
            let at = start + 8 * k;
            // SAFETY: the block (and `by`, of the same length) holds 32 values from `start`.
            let x = unsafe { _mm256_loadu_ps(block.as_ptr().add(at)) };
            sums[k] = _mm256_add_ps(sums[k], x);
            if let Some(b) = by {
                // SAFETY: as above.
                let y = unsafe { _mm256_loadu_ps(b.as_ptr().add(at)) };
                products[k] = _mm256_add_ps(products[k], _mm256_mul_ps(x, y));
            }
        }
    }
    [reduce_lanes(sums, tail), reduce_lanes(products, product_tail)]
}

/// A block's 32 lanes (four 8-lane accumulators) summed as one fixed tree,
/// plus the values past the last whole 32.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn reduce_lanes(acc: [std::arch::x86_64::__m256; 4], tail: f32) -> f32 {
    use std::arch::x86_64::*;
    let v = _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]));
    let half = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
    let pairs = _mm_hadd_ps(half, half);
    _mm_cvtss_f32(_mm_hadd_ps(pairs, pairs)) + tail
}

/// Channel f's sum (see `kernels::channel_sum`), or with `by` the sum of
/// its products with `by`'s values, image by image.
pub(crate) fn channel_sum(g: &[f32], by: Option<&[f32]>, f: usize, channels: usize, spatial: usize) -> f32 {
    planes(g.len(), f, channels, spatial).fold(0.0, |acc, at| acc + sum(&g[at.clone()], by.map(|b| &b[at])))
}

/// `channel_sum` of `g` without and with `by`, in one pass: the same bits.
pub(crate) fn channel_sum_pair(g: &[f32], by: &[f32], f: usize, channels: usize, spatial: usize) -> [f32; 2] {
    planes(g.len(), f, channels, spatial).fold([0.0, 0.0], |[s, p], at| {
        let [ps, pp] = sum_pair(&g[at.clone()], &by[at]);
        [s + ps, p + pp]
    })
}

/// Where channel f's planes lie in a `[B, channels, spatial]` tensor of `len` values.
fn planes(len: usize, f: usize, channels: usize, spatial: usize) -> impl Iterator<Item = std::ops::Range<usize>> {
    (f..len / spatial.max(1)).step_by(channels.max(1)).map(move |p| p * spatial..(p + 1) * spatial)
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
const KERNEL_PARTS: usize = 4;

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
    let step = units.div_ceil(KERNEL_PARTS).next_multiple_of(align.max(1)).max(1);
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

/// A slice of `axis` (`forward`), or its adjoint: the part placed into zeros.
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
    forward: usize,
) {
    let (big, small) = (outer * whole * inner, outer * part * inner);
    if forward == 1 {
        // SAFETY: x is the whole tensor, y the part.
        let (x, y) = unsafe { (slice(x, big), slice_mut(y, small)) };
        kernels::slice(x, y, whole, part, inner, start);
    } else {
        // SAFETY: x is the part (a gradient), y the whole tensor.
        let (g, dx) = unsafe { (slice(x, small), slice_mut(y, big)) };
        kernels::slice_backward(g, dx, whole, part, inner, start);
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
mod tests {
    use super::*;

    /// The vector sums agree with an f64 sum for lengths around the lane
    /// and block sizes (and sums of squares two blocks at a time are the
    /// bits of one at a time), and the channel sums (parallel above a size)
    /// are the same bits as one channel at a time.
    #[test]
    fn sums_match_the_reference_loops() {
        let values: Vec<f32> = (0..70_000).map(|i| ((i * 7919) % 1000) as f32 / 250.0 - 2.0).collect();
        for n in [0, 1, 31, 32, 33, 100, 2047, 2048, 2049, 4096, 5000, 6144, 6145, 70_000] {
            let x = &values[..n];
            // Values of many magnitudes, so that the order of additions shows.
            let ragged: Vec<f32> =
                (0..n).map(|i| (i as f32 * 0.618_034).sin() * (i as f32 * 0.377).cos().exp2() * 9.0).collect();
            let bits = |x: &[f32]| (sum_squares(x).to_bits(), sum(x, Some(x)).to_bits());
            assert!([bits(x), bits(&ragged)].iter().all(|(a, b)| a == b), "n {n}");
            for squares in [false, true] {
                let exact: f64 = x.iter().map(|&v| if squares { f64::from(v * v) } else { f64::from(v) }).sum();
                let scale: f64 = x.iter().map(|&v| f64::from(v * v).max(f64::from(v.abs()))).sum::<f64>().max(1.0);
                let got = f64::from(sum(x, squares.then_some(x)));
                assert!((got - exact).abs() <= 1e-6 * scale, "n {n} squares {squares}: {got} vs {exact}");
            }
            let mut out = 0.0;
            nnc_sum_squares(x.as_ptr(), &mut out, n);
            let exact: f64 = x.iter().map(|&v| f64::from(v * v)).sum();
            assert!((f64::from(out) - exact).abs() <= 1e-6 * exact.max(1.0), "n {n}: {out} vs {exact}");
        }
        // Planes of many values, and of one (a dense layer's units, summed row by row).
        for (channels, spatial) in [(7, 100), (70, 1)] {
            let mut out = vec![0.0; channels];
            crate::spatial::nnc_sum_channels(values.as_ptr(), out.as_mut_ptr(), values.len(), channels, spatial);
            for (f, &o) in out.iter().enumerate() {
                let alone = channel_sum(&values, None, f, channels, spatial);
                assert_eq!(o.to_bits(), alone.to_bits(), "channel {f} of {channels}");
            }
        }
        let (channels, spatial) = (7, 100);
        // Sums of products in one pass: the bits of storing the products, then summing them.
        let other: Vec<f32> = values.iter().rev().copied().collect();
        let products: Vec<f32> = values.iter().zip(&other).map(|(a, b)| a * b).collect();
        let (mut fused, mut stored) = (vec![0.0; channels], vec![0.0; channels]);
        let n = values.len();
        crate::spatial::nnc_sum_product_channels(
            values.as_ptr(),
            other.as_ptr(),
            fused.as_mut_ptr(),
            n,
            channels,
            spatial,
        );
        crate::spatial::nnc_sum_channels(products.as_ptr(), stored.as_mut_ptr(), n, channels, spatial);
        assert_eq!(
            fused.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
            stored.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
        );
        let reference = kernels::sum_products(&values[..spatial], &other[..spatial]);
        assert_eq!(reference.to_bits(), kernels::sum(&products[..spatial]).to_bits());
    }

    /// `exp` is within one unit in the last place of e^x (rounded from
    /// f64) across its whole range, subnormal results included, and
    /// saturates and keeps NaN as `f32::exp` does.
    #[test]
    fn exp_is_within_an_ulp_everywhere() {
        let mut worst = 0;
        for i in 0..=2_000_000 {
            let x = -105.0 + 195.0 * i as f32 / 2_000_000.0;
            let (got, want) = (exp(x), f64::from(x).exp() as f32);
            let ulps = (i64::from(got.to_bits()) - i64::from(want.to_bits())).abs();
            assert!(ulps <= 1, "exp({x}) = {got:e}, not {want:e}");
            worst = worst.max(ulps);
        }
        assert_eq!(worst, 1, "the sweep reaches values the polynomial rounds off by one");
        assert_eq!(exp(0.0), 1.0);
        assert_eq!(exp(f32::INFINITY), f32::INFINITY);
        assert_eq!(exp(89.0), f32::INFINITY);
        assert_eq!(exp(f32::NEG_INFINITY), 0.0);
        assert_eq!(exp(-104.0), 0.0);
        assert!(exp(-100.0) > 0.0 && exp(-100.0) < f32::MIN_POSITIVE, "a subnormal result");
        assert!(exp(f32::NAN).is_nan());
    }

    /// Each row's probabilities are within a few units in the last place
    /// of f64's; each instruction set gives the bits of the plain loop,
    /// for widths around a vector's lanes; infinite and NaN scores give
    /// what the arithmetic does.
    #[test]
    fn softmax_rows_are_the_same_bits_on_every_instruction_set() {
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        for width in [1, 2, 7, 10, 16, 17, 33] {
            let rows = 37;
            let z: Vec<f32> = (0..rows * width).map(|i| ((i * 7919) % 1000) as f32 / 20.0 - 25.0).collect();
            let mut plain = vec![0.0; z.len()];
            softmax_rows_with(&z, &mut plain, width);
            for isa in crate::gemm::Isa::available() {
                let mut out = vec![0.0; z.len()];
                softmax_rows_for(isa, &z, &mut out, width);
                assert_eq!(bits(&out), bits(&plain), "{isa:?}, width {width}");
            }
            for (z, p) in z.chunks_exact(width).zip(plain.chunks_exact(width)) {
                // Against f64 from the f32 differences to the row's largest score.
                let max = z.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
                let e = |v: f32| f64::from(v - max).exp();
                let sum: f64 = z.iter().map(|&v| e(v)).sum();
                for (&v, &p) in z.iter().zip(p) {
                    let want = e(v) / sum;
                    assert!((f64::from(p) - want).abs() <= 1e-6 * want.max(1e-30) + 1e-37, "{p} vs {want}");
                }
            }
        }
        // ∞ − ∞ and NaN make the row's sum NaN, and so every probability.
        for bad in [f32::INFINITY, f32::NAN] {
            let mut out = [0.0; 3];
            softmax_row(&[bad, 0.0, 1.0], &mut out);
            assert!(out.iter().all(|p| p.is_nan()), "{bad}: {out:?}");
        }
        let mut out = [0.0; 2];
        softmax_row(&[f32::NEG_INFINITY, 3.0], &mut out);
        assert_eq!(out, [0.0, 1.0]);
    }

    /// Both sums of a channel in one pass are the bits of each on its own:
    /// planes shorter than a vector, with ragged ends, longer than a block;
    /// few values (one thread) and many (over the threads).
    #[test]
    fn a_channel_sum_and_its_product_sum_in_one_pass_are_each_ones_bits() {
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        for (images, channels, spatial) in
            [(3, 5, 7), (4, 7, 100), (2, 3, 3000), (32, 16, 784), (64, 4, 33), (256, 100, 1)]
        {
            let n = images * channels * spatial;
            let a: Vec<f32> = (0..n).map(|i| ((i * 7919) % 1000) as f32 / 250.0 - 2.0).collect();
            let b: Vec<f32> = (0..n).map(|i| ((i * 104_729) % 997) as f32 / 300.0 - 1.5).collect();
            let (mut sums, mut products) = (vec![0.0; channels], vec![0.0; channels]);
            crate::spatial::nnc_sum_and_product_channels(
                a.as_ptr(),
                b.as_ptr(),
                sums.as_mut_ptr(),
                products.as_mut_ptr(),
                n,
                channels,
                spatial,
            );
            let (mut alone, mut alone_products) = (vec![0.0; channels], vec![0.0; channels]);
            crate::spatial::nnc_sum_channels(a.as_ptr(), alone.as_mut_ptr(), n, channels, spatial);
            crate::spatial::nnc_sum_product_channels(
                a.as_ptr(),
                b.as_ptr(),
                alone_products.as_mut_ptr(),
                n,
                channels,
                spatial,
            );
            assert_eq!(bits(&sums), bits(&alone), "sums, {images}×{channels}×{spatial}");
            assert_eq!(bits(&products), bits(&alone_products), "products, {images}×{channels}×{spatial}");
            let exact: f64 =
                (0..images).map(|i| (0..spatial).map(|q| f64::from(a[i * channels * spatial + q])).sum::<f64>()).sum();
            assert!((f64::from(sums[0]) - exact).abs() <= 1e-3, "{} vs {exact}", sums[0]);
        }
    }

    /// A batch's column sums, split in two halves over threads when large,
    /// are each column's rows added in order (the same bits as one loop).
    #[test]
    fn column_sums_add_each_column_in_order() {
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        for (rows, cols) in [(3, 5), (256, 1024), (70, 1000), (1000, 77), (65, 1025)] {
            let x: Vec<f32> =
                (0..rows * cols).map(|i| (i as f32 * 0.618_034).sin() * (i as f32 * 0.377).cos().exp2()).collect();
            let mut out = vec![f32::NAN; cols];
            rayon::ThreadPoolBuilder::new()
                .num_threads(2)
                .build()
                .expect("pool")
                .install(|| crate::partner::with_partner(|| nnc_sum_rows(x.as_ptr(), out.as_mut_ptr(), rows, cols)));
            let alone: Vec<f32> = (0..cols).map(|j| (0..rows).fold(0.0f32, |acc, r| acc + x[r * cols + j])).collect();
            assert_eq!(bits(&out), bits(&alone), "{rows}×{cols}");
            // Each instruction set's loop, on a part of the columns.
            for isa in crate::gemm::Isa::available() {
                let mut part = vec![f32::NAN; cols - cols / 3];
                column_sums_for(isa, &x, None, cols, cols / 3, &mut part);
                assert_eq!(bits(&part), bits(&alone[cols / 3..]), "{isa:?}, {rows}×{cols}");
            }
        }
    }
}
