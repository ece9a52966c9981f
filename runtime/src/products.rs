//! Matrix products: sgemm through matrixmultiply, and products of a few
//! rows (batch-1 inference) as blocked dot products.
#![allow(unsafe_code)]

use crate::routines::{slice, slice_mut};

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

/// `c = op(a)·op(b)` (`m×k` by `k×n`, row-major `c`) on slices, for callers
/// other than generated code: an error unless every element the strides
/// reach lies inside the slices.
#[allow(clippy::too_many_arguments)]
pub fn product(
    (m, k, n): (usize, usize, usize),
    a: &[f32],
    (rsa, csa): (usize, usize),
    b: &[f32],
    (rsb, csb): (usize, usize),
    c: &mut [f32],
) -> Result<(), String> {
    let last = |rows: usize, cols: usize, rs: usize, cs: usize| {
        (rows.max(1) - 1).checked_mul(rs)?.checked_add((cols.max(1) - 1).checked_mul(cs)?)
    };
    let inside = |len: usize, last: Option<usize>| last.is_some_and(|l| l < len);
    if c.len() != m * n || !inside(a.len(), last(m, k, rsa, csa)) || !inside(b.len(), last(k, n, rsb, csb)) {
        return Err(format!("a {m}×{k} by {k}×{n} product does not fit the slices and strides given"));
    }
    let s = |x: usize| x as isize;
    nnc_sgemm(m, k, n, a.as_ptr(), s(rsa), s(csa), b.as_ptr(), s(rsb), s(csb), c.as_mut_ptr());
    Ok(())
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

/// A product written into c with c = a·b + beta·c (row-major c).
#[allow(clippy::too_many_arguments)]
pub(crate) fn gemm(
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
