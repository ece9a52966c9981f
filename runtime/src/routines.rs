//! Runtime routines the generated code calls: sgemm, and the row-wise and
//! reducing ops (softmax, the losses, sums) that are not element-wise loops.
//!
//! Each takes raw pointers and sizes fixed at compile time. None allocates
//! and none can panic (only pointer arithmetic within the sizes given).
#![allow(unsafe_code)]

use std::sync::atomic::{AtomicBool, Ordering};

use rayon::prelude::*;

use crate::kernels::{self, Window};
#[cfg(target_arch = "x86_64")]
use crate::{conv, pool};

/// Products with at most this many rows (batch-1 inference, tiny batches)
/// skip sgemm's packing and run as dot products.
const SMALL_M: usize = 4;

/// c = op(a)·op(b), row-major with explicit strides (transposes are strides).
#[unsafe(no_mangle)]
pub extern "C" fn nnc_sgemm(
    m: usize,
    k: usize,
    n: usize,
    a: *const f32,
    rsa: isize,
    csa: isize,
    b: *const f32,
    rsb: isize,
    csb: isize,
    c: *mut f32,
) {
    if m <= SMALL_M && csa == 1 && rsb == 1 {
        // SAFETY: a holds m rows of stride rsa with k contiguous values; b holds
        // n columns of stride csb with k contiguous values; c holds m·n.
        let c = unsafe { slice_mut(c, m * n) };
        // SAFETY: as above.
        let row = |i: usize| unsafe { slice(a.offset(i as isize * rsa), k) };
        // SAFETY: as above.
        let column = |j: usize| unsafe { slice(b.offset(j as isize * csb), k) };
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx512f") {
                // SAFETY: the CPU supports AVX-512F (checked just above).
                return unsafe { small_product_avx512(n, row, column, c) };
            }
            if std::arch::is_x86_feature_detected!("avx2") {
                // SAFETY: the CPU supports AVX2 (checked just above).
                return unsafe { small_product_avx2(n, row, column, c) };
            }
        }
        return small_product(n, row, column, c);
    }
    // SAFETY: the plan sized every buffer for these dimensions and strides.
    unsafe { matrixmultiply::sgemm(m, k, n, 1.0, a, rsa, csa, b, rsb, csb, 0.0, c, n as isize, 1) }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn small_product_avx512<'a>(
    n: usize,
    row: impl Fn(usize) -> &'a [f32],
    column: impl Fn(usize) -> &'a [f32],
    c: &mut [f32],
) {
    small_product(n, row, column, c)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn small_product_avx2<'a>(
    n: usize,
    row: impl Fn(usize) -> &'a [f32],
    column: impl Fn(usize) -> &'a [f32],
    c: &mut [f32],
) {
    small_product(n, row, column, c)
}

/// c (rows of n) = the dot products of each `row(i)` with each `column(j)`,
/// four columns at a time: they share the loads of the row and run as
/// independent chains. Every SIMD width gives the same bits: the lanes and
/// the order of every addition are fixed.
#[inline(always)]
fn small_product<'a>(n: usize, row: impl Fn(usize) -> &'a [f32], column: impl Fn(usize) -> &'a [f32], c: &mut [f32]) {
    for (i, out) in c.chunks_exact_mut(n.max(1)).enumerate() {
        let a = row(i);
        let mut blocks = out.chunks_exact_mut(4);
        for (block, out) in (&mut blocks).enumerate() {
            let j = 4 * block;
            out.copy_from_slice(&dot4(a, [column(j), column(j + 1), column(j + 2), column(j + 3)]));
        }
        let rest = blocks.into_remainder();
        let first = n - rest.len();
        for (j, out) in rest.iter_mut().enumerate() {
            *out = dot(a, column(first + j));
        }
    }
}

/// Lanes of one accumulator: a 512-bit vector, or two 256-bit ones.
const LANES: usize = 16;

/// Four dot products of `a` with `b`, each in its own 16-lane accumulator
/// (four named arrays, so that they stay in registers).
#[inline(always)]
fn dot4(a: &[f32], b: [&[f32]; 4]) -> [f32; 4] {
    let (mut acc0, mut acc1, mut acc2, mut acc3) = ([0.0f32; LANES], [0.0f32; LANES], [0.0f32; LANES], [0.0f32; LANES]);
    let chunks = a.chunks_exact(LANES).zip(b[0].chunks_exact(LANES)).zip(b[1].chunks_exact(LANES));
    let chunks = chunks.zip(b[2].chunks_exact(LANES)).zip(b[3].chunks_exact(LANES));
    for ((((x, y0), y1), y2), y3) in chunks {
        for l in 0..LANES {
            acc0[l] += x[l] * y0[l];
            acc1[l] += x[l] * y1[l];
            acc2[l] += x[l] * y2[l];
            acc3[l] += x[l] * y3[l];
        }
    }
    [finish(acc0, a, b[0]), finish(acc1, a, b[1]), finish(acc2, a, b[2]), finish(acc3, a, b[3])]
}

/// The dot product of `a` and `b`, with the same lanes and sums as `dot4`.
#[inline(always)]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0.0f32; LANES];
    for (x, y) in a.chunks_exact(LANES).zip(b.chunks_exact(LANES)) {
        for l in 0..LANES {
            acc[l] += x[l] * y[l];
        }
    }
    finish(acc, a, b)
}

/// An accumulator's lanes summed as a fixed tree (halves added lane-wise,
/// so it vectorises), plus the products past the last whole 16 lanes.
#[inline(always)]
fn finish(acc: [f32; LANES], a: &[f32], b: &[f32]) -> f32 {
    let whole = a.len() / LANES * LANES;
    let tail: f32 = a[whole..].iter().zip(&b[whole..]).map(|(x, y)| x * y).sum();
    let half: [f32; 8] = std::array::from_fn(|i| acc[i] + acc[i + 8]);
    let quarter: [f32; 4] = std::array::from_fn(|i| half[i] + half[i + 4]);
    (quarter[0] + quarter[2]) + (quarter[1] + quarter[3]) + tail
}

/// # Safety (for all routines below)
/// Pointers are valid for the element counts implied by the sizes; the
/// generated code passes buffers planned with exactly those sizes.
unsafe fn slice<'a>(p: *const f32, n: usize) -> &'a [f32] {
    // SAFETY: see the module contract above.
    unsafe { std::slice::from_raw_parts(p, n) }
}

unsafe fn slice_mut<'a>(p: *mut f32, n: usize) -> &'a mut [f32] {
    // SAFETY: see the module contract above.
    unsafe { std::slice::from_raw_parts_mut(p, n) }
}

/// out[j] = Σ_r x[r][j]
#[unsafe(no_mangle)]
pub extern "C" fn nnc_sum_rows(x: *const f32, out: *mut f32, rows: usize, cols: usize) {
    // SAFETY: x holds rows·cols values, out holds cols.
    let (x, out) = unsafe { (slice(x, rows * cols), slice_mut(out, cols)) };
    out.fill(0.0);
    for row in x.chunks_exact(cols) {
        for (o, v) in out.iter_mut().zip(row) {
            *o += v;
        }
    }
}

/// The probabilities of one row of class scores (the ones `nnc predict`
/// prints and a built library returns).
pub fn softmax_row(z: &[f32], out: &mut [f32]) {
    let max = z.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
    let mut sum = 0.0;
    for (o, &v) in out.iter_mut().zip(z) {
        *o = (v - max).exp();
        sum += *o;
    }
    out.iter_mut().for_each(|o| *o /= sum);
}

#[unsafe(no_mangle)]
pub extern "C" fn nnc_softmax(x: *const f32, out: *mut f32, rows: usize, cols: usize) {
    // SAFETY: both hold rows·cols values.
    let (x, out) = unsafe { (slice(x, rows * cols), slice_mut(out, rows * cols)) };
    for (z, o) in x.chunks_exact(cols).zip(out.chunks_exact_mut(cols)) {
        softmax_row(z, o);
    }
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
    out: *mut f32,
    rows: usize,
    cols: usize,
) {
    // SAFETY: z holds rows·cols values, labels rows, out one.
    let (z, labels, out) = unsafe { (slice(z, rows * cols), slice(labels, rows), slice_mut(out, 1)) };
    let mut total = 0.0f32;
    for (row, &label) in z.chunks_exact(cols).zip(labels) {
        let Some(c) = class(label, cols) else {
            out[0] = f32::NAN;
            return;
        };
        let max = row.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
        let sum: f32 = row.iter().map(|&v| (v - max).exp()).sum();
        total += sum.ln() + max - row[c];
    }
    out[0] = total / rows as f32;
}

/// out = g·(softmax(z) − onehot)/rows
#[unsafe(no_mangle)]
pub extern "C" fn nnc_softmax_cross_entropy_grad(
    z: *const f32,
    labels: *const f32,
    g: *const f32,
    out: *mut f32,
    rows: usize,
    cols: usize,
) {
    // SAFETY: z and out hold rows·cols values, labels rows, g one.
    let (z, labels, g, out) =
        unsafe { (slice(z, rows * cols), slice(labels, rows), slice(g, 1), slice_mut(out, rows * cols)) };
    let scale = g[0] / rows as f32;
    for ((row, &label), o) in z.chunks_exact(cols).zip(labels).zip(out.chunks_exact_mut(cols)) {
        softmax_row(row, o);
        let c = class(label, cols);
        for (j, v) in o.iter_mut().enumerate() {
            let onehot = if Some(j) == c { 1.0 } else { 0.0 };
            *v = scale * (*v - onehot);
        }
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
    out[0] = x.iter().map(|v| v * v).sum();
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

#[unsafe(no_mangle)]
pub extern "C" fn nnc_copy(from: *const f32, to: *mut f32, n: usize) {
    // SAFETY: both hold n values and do not overlap (the store and scratch are distinct).
    let (from, to) = unsafe { (slice(from, n), slice_mut(to, n)) };
    to.copy_from_slice(from);
}

/// The window generated code passed, and the element counts of a
/// convolution's image, filter and output.
///
/// # Safety
/// `win` points to a valid `Window`.
unsafe fn conv_sizes(win: *const Window, filters: usize) -> (Window, usize, usize, usize) {
    // SAFETY: the caller's contract.
    let win = unsafe { *win };
    let (b, c, k) = (win.batch, win.channels, win.kernel);
    (win, b * c * win.height * win.width, filters * c * k * k, b * filters * win.out_height() * win.out_width())
}

#[unsafe(no_mangle)]
pub extern "C" fn nnc_conv2d(
    x: *const f32,
    w: *const f32,
    y: *mut f32,
    win: *const Window,
    f: usize,
    bias: *const f32,
) {
    // SAFETY: generated code passes the window of this convolution.
    let (win, image, filter, out) = unsafe { conv_sizes(win, f) };
    let Window { batch: b, channels: c, height: h, width: wd, kernel: k, .. } = win;
    // SAFETY: x holds the image's values, w the filter's, y the output's.
    let (x, w, y) = unsafe { (slice(x, image), slice(w, filter), slice_mut(y, out)) };
    // SAFETY: a bias that is not null holds one value per filter.
    let bias = (!bias.is_null()).then(|| unsafe { slice(bias, f) });
    let (rows, cols) = (c * k * k, win.out_height() * win.out_width());
    let per = images_per_part(b);
    let mut images = |per_image: &(dyn Fn(&[f32], &mut [f32]) + Sync)| {
        each_part(y, per * f * cols, |part, y| {
            let x = &x[part * per * c * h * wd..];
            x.chunks_exact(c * h * wd).zip(y.chunks_exact_mut(f * cols)).for_each(|(image, out)| per_image(image, out));
        })
    };
    #[cfg(target_arch = "x86_64")]
    if conv::applies(win) {
        return conv::with_forward_filter(w, f, win, |packed| {
            images(&|image, out| conv::forward_image(packed, f, image, win, bias, out))
        });
    }
    images(&|image, out| {
        with_columns(rows * cols, |columns| {
            kernels::im2col(image, columns, win);
            // out [F, OH·OW] = w [F, C·K·K] · columns [C·K·K, OH·OW]
            gemm(f, rows, cols, w, (rows, 1), columns, (cols, 1), out, 0.0);
        });
        if let Some(bias) = bias {
            for (plane, &b) in out.chunks_exact_mut(cols).zip(bias) {
                plane.iter_mut().for_each(|v| *v += b);
            }
        }
    });
}

/// A batch's images are split into this many parts, a fixed number, so
/// that results are bit for bit the same whatever the thread count.
const PARTS: usize = 4;

/// Whether the parts run on rayon's threads. Off unless the command line
/// turns it on for models whose products are too small to thread.
static PARALLEL_IMAGES: AtomicBool = AtomicBool::new(false);

/// Runs the convolution and pooling routines' image parts in parallel (or not).
pub fn set_parallel_images(on: bool) {
    PARALLEL_IMAGES.store(on, Ordering::Relaxed);
}

pub fn parallel_images() -> bool {
    PARALLEL_IMAGES.load(Ordering::Relaxed)
}

fn images_per_part(batch: usize) -> usize {
    batch.div_ceil(PARTS).max(1)
}

/// Calls `work(part, chunk)` for each `chunk_len`-sized chunk of `out`, in
/// parallel when image threading is on. Each part writes only its chunk.
fn each_part(out: &mut [f32], chunk_len: usize, work: impl Fn(usize, &mut [f32]) + Sync) {
    let chunk_len = chunk_len.max(1);
    if parallel_images() {
        out.par_chunks_mut(chunk_len).enumerate().for_each(|(i, chunk)| work(i, chunk));
    } else {
        out.chunks_mut(chunk_len).enumerate().for_each(|(i, chunk)| work(i, chunk));
    }
}

/// A product written into c with c = a·b + beta·c (row-major c).
#[allow(clippy::too_many_arguments)]
fn gemm(
    m: usize,
    k: usize,
    n: usize,
    a: &[f32],
    sa: (usize, usize),
    b: &[f32],
    sb: (usize, usize),
    c: &mut [f32],
    beta: f32,
) {
    let s = |x: usize| x as isize;
    // SAFETY: the slices hold the m·k, k·n and m·n elements the strides address.
    unsafe {
        matrixmultiply::sgemm(
            m,
            k,
            n,
            1.0,
            a.as_ptr(),
            s(sa.0),
            s(sa.1),
            b.as_ptr(),
            s(sb.0),
            s(sb.1),
            beta,
            c.as_mut_ptr(),
            s(n),
            1,
        )
    }
}

thread_local! {
    /// The im2col buffer, grown to the largest convolution and then reused.
    static COLUMNS: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
    /// Per-part weight gradients, reused likewise.
    static PARTIALS: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

fn with_columns(len: usize, f: impl FnOnce(&mut [f32])) {
    COLUMNS.with(|cell| {
        let mut columns = cell.borrow_mut();
        if columns.len() < len {
            columns.resize(len, 0.0);
        }
        f(&mut columns[..len]);
    });
}

#[unsafe(no_mangle)]
pub extern "C" fn nnc_conv2d_grad_input(w: *const f32, g: *const f32, dx: *mut f32, win: *const Window, f: usize) {
    // SAFETY: generated code passes the window of this convolution.
    let (win, image, filter, out) = unsafe { conv_sizes(win, f) };
    let Window { batch: b, channels: c, height: h, width: wd, kernel: k, .. } = win;
    // SAFETY: w holds the filter's values, g the output's, dx the image's.
    let (w, g, dx) = unsafe { (slice(w, filter), slice(g, out), slice_mut(dx, image)) };
    let (rows, cols) = (c * k * k, win.out_height() * win.out_width());
    let per = images_per_part(b);
    let mut images = |per_image: &(dyn Fn(&[f32], &mut [f32]) + Sync)| {
        each_part(dx, per * c * h * wd, |part, dx| {
            let g = &g[part * per * f * cols..];
            g.chunks_exact(f * cols)
                .zip(dx.chunks_exact_mut(c * h * wd))
                .for_each(|(grad, image)| per_image(grad, image));
        })
    };
    #[cfg(target_arch = "x86_64")]
    if conv::applies(win) {
        return conv::with_input_gradient_filter(w, f, win, |packed| {
            images(&|grad, image| conv::input_gradient_image(packed, f, grad, win, image))
        });
    }
    images(&|grad, image| {
        with_columns(rows * cols, |columns| {
            // columns [C·K·K, OH·OW] = wᵀ · g
            gemm(rows, f, cols, w, (1, rows), grad, (cols, 1), columns, 0.0);
            kernels::col2im(columns, image, win);
        })
    });
}

#[unsafe(no_mangle)]
pub extern "C" fn nnc_conv2d_grad_weight(x: *const f32, g: *const f32, dw: *mut f32, win: *const Window, f: usize) {
    // SAFETY: generated code passes the window of this convolution.
    let (win, image, filter, out) = unsafe { conv_sizes(win, f) };
    let Window { batch: b, channels: c, height: h, width: wd, kernel: k, .. } = win;
    // SAFETY: x holds the image's values, g the output's, dw the filter's.
    let (x, g, dw) = unsafe { (slice(x, image), slice(g, out), slice_mut(dw, filter)) };
    let (rows, cols) = (c * k * k, win.out_height() * win.out_width());
    let per = images_per_part(b);
    // Each part sums its images' products into its own partial; the partials
    // are then added in part order.
    PARTIALS.with(|cell| {
        let mut partials = cell.borrow_mut();
        partials.clear();
        partials.resize(b.div_ceil(per) * filter, 0.0);
        #[cfg(target_arch = "x86_64")]
        let direct = conv::applies(win);
        each_part(&mut partials, filter, |part, partial| {
            let (x, g) = (&x[part * per * c * h * wd..], &g[part * per * f * cols..]);
            for (image, grad) in x.chunks_exact(c * h * wd).zip(g.chunks_exact(f * cols)).take(per) {
                #[cfg(target_arch = "x86_64")]
                if direct {
                    conv::weight_gradient_image(image, grad, f, win, partial);
                    continue;
                }
                with_columns(rows * cols, |columns| {
                    kernels::im2col(image, columns, win);
                    // dw [F, C·K·K] += g [F, OH·OW] · columnsᵀ
                    gemm(f, cols, rows, grad, (cols, 1), columns, (1, cols), partial, 1.0);
                });
            }
        });
        dw.fill(0.0);
        for partial in partials.chunks_exact(filter) {
            dw.iter_mut().zip(partial).for_each(|(d, &p)| *d += p);
        }
    });
}

#[unsafe(no_mangle)]
pub extern "C" fn nnc_add_channel_bias(
    x: *const f32,
    bias: *const f32,
    y: *mut f32,
    n: usize,
    channels: usize,
    spatial: usize,
) {
    // SAFETY: x and y hold n values, bias one per channel.
    let (x, bias, y) = unsafe { (slice(x, n), slice(bias, channels), slice_mut(y, n)) };
    kernels::add_channel_bias(x, bias, y, spatial);
}

#[unsafe(no_mangle)]
pub extern "C" fn nnc_mul_channel(
    x: *const f32,
    scale: *const f32,
    y: *mut f32,
    n: usize,
    channels: usize,
    spatial: usize,
) {
    // SAFETY: x and y hold n values, scale one per channel.
    let (x, scale, y) = unsafe { (slice(x, n), slice(scale, channels), slice_mut(y, n)) };
    kernels::mul_channel(x, scale, y, spatial);
}

#[unsafe(no_mangle)]
pub extern "C" fn nnc_sum_channels(g: *const f32, out: *mut f32, n: usize, channels: usize, spatial: usize) {
    // SAFETY: g holds n values, out one per channel.
    let (g, out) = unsafe { (slice(g, n), slice_mut(out, channels)) };
    kernels::sum_channels(g, out, spatial);
}

#[unsafe(no_mangle)]
pub extern "C" fn nnc_pool(x: *const f32, y: *mut f32, win: *const Window, max: usize) {
    // SAFETY: generated code passes the window of this pooling.
    let win = unsafe { *win };
    let Window { batch: b, channels: c, height: h, width: w, .. } = win;
    let out = b * c * win.out_height() * win.out_width();
    // SAFETY: x holds b·c·h·w values, y the output's.
    let (x, y) = unsafe { (slice(x, b * c * h * w), slice_mut(y, out)) };
    let per = images_per_part(b);
    each_part(y, per * out / b.max(1), |part, y| {
        let images = y.len() / (out / b.max(1)).max(1);
        let x = &x[part * per * c * h * w..(part * per + images) * c * h * w];
        kernels::pool(x, y, Window { batch: images, ..win }, max != 0);
    });
}

#[unsafe(no_mangle)]
pub extern "C" fn nnc_pool_grad(x: *const f32, g: *const f32, dx: *mut f32, win: *const Window, max: usize) {
    // SAFETY: generated code passes the window of this pooling.
    let win = unsafe { *win };
    let Window { batch: b, channels: c, height: h, width: w, .. } = win;
    let out = b * c * win.out_height() * win.out_width();
    // SAFETY: x and dx hold b·c·h·w values, g the output's.
    let (x, g, dx) = unsafe { (slice(x, b * c * h * w), slice(g, out), slice_mut(dx, b * c * h * w)) };
    let (per, image) = (images_per_part(b), c * h * w);
    each_part(dx, per * image, |part, dx| {
        let images = dx.len() / image.max(1);
        let range = part * per..part * per + images;
        let (x, g) = (&x[range.start * image..range.end * image], &g[range.start * out / b..range.end * out / b]);
        let win = Window { batch: images, ..win };
        #[cfg(target_arch = "x86_64")]
        if max != 0 && pool::applies(win) {
            return pool::max_pool_2x2_backward(x, g, dx, win);
        }
        kernels::pool_backward(x, g, dx, win, max != 0);
    });
}

/// Inverted dropout; `step` points at the step number (an f32 hyperparameter).
#[unsafe(no_mangle)]
pub extern "C" fn nnc_dropout(x: *const f32, step: *const f32, out: *mut f32, n: usize, salt: usize, p: f32) {
    // SAFETY: x and out hold n values, step one.
    let (x, step, out) = unsafe { (slice(x, n), slice(step, 1), slice_mut(out, n)) };
    kernels::dropout(x, out, f64::from(p), salt as u64, step[0] as u64);
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
