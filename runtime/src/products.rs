//! Matrix products: sgemm (`gemm`'s kernels, or matrixmultiply on CPUs
//! without AVX2), split over the cores by rows or columns of c (in two,
//! where the two threads' recent speeds call for), and
//! products of a few rows (batch-1 inference) as blocked dot products.
//!
//! Each part runs single-threaded (matrixmultiply's own threading is not
//! built in): threads inside a product slow mid-sized ones down, and they
//! would compete with rayon's, which run the image parts. Splitting
//! here needs no k-split, so every element of c is computed exactly as the
//! whole product computes it: the same bits on any thread count.
#![allow(unsafe_code)]

use rayon::prelude::*;

use crate::gemm::{self, Isa, Operand};
use crate::kernels::Epilogue;
use crate::routines::{slice, slice_mut};

mod team;

pub use team::{nnc_team_sgemm_columns, nnc_team_sgemm_sum};

/// Products with at least this many multiply-adds are split over rayon's
/// threads (below it, waking a thread costs more than it saves).
const SPLIT_MACS: usize = 1 << 20;
/// Parts of a split product start at multiples of this many rows or
/// columns (a whole number of matrixmultiply's tiles).
const SPLIT_ALIGN: usize = 16;

/// Products with at most this many rows (batch-1 inference, tiny batches)
/// skip sgemm's packing and run as dot products.
const SMALL_M: usize = 4;
/// A one-row product with at least this many weights (256 KiB, more than
/// the first-level caches hold, so reading them from further out bounds
/// it) splits its columns over the threads.
const SPLIT_WEIGHTS: usize = 1 << 16;

/// c = op(a)·op(b), row-major with explicit strides (transposes are
/// strides), plus `bias` (n values; none when null) on every row and, when
/// `relu` is not 0, only the positive values kept, as each block of c is
/// stored (a dense layer's bias and ReLU without a pass of their own).
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
    bias: *const f32,
    relu: usize,
) {
    // SAFETY: a bias that is not null holds a value per column of c.
    let bias = (!bias.is_null()).then(|| unsafe { slice(bias, n) });
    sgemm((m, k, n), (a, rsa, csa), (b, rsb, csb), c, Epilogue { bias, relu: relu != 0 });
}

/// `nnc_sgemm`'s product, then `epilogue` on every row of c.
fn sgemm(
    (m, k, n): (usize, usize, usize),
    (a, rsa, csa): (*const f32, isize, isize),
    (b, rsb, csb): (*const f32, isize, isize),
    c: *mut f32,
    epilogue: Epilogue,
) {
    if m <= SMALL_M && csa == 1 && rsb == 1 {
        let (a, b) = (a as usize, b as usize);
        // SAFETY: a holds m rows of stride rsa with k contiguous values.
        let row = move |i: usize| unsafe { slice((a as *const f32).offset(i as isize * rsa), k) };
        // SAFETY: b holds n columns of stride csb with k contiguous values.
        let column = move |j: usize| unsafe { slice((b as *const f32).offset(j as isize * csb), k) };
        let threads = rayon::current_num_threads();
        // Only a thread of rayon's pool splits: any other would hand the
        // parts over and sleep until they are done, which costs more.
        if m == 1 && k * n >= SPLIT_WEIGHTS && threads > 1 && rayon::current_thread_index().is_some() {
            // One row against many weights: the weights' reads bound it, so
            // each thread reads its own columns' (whole blocks of four, so
            // every column is summed as on one thread). This thread starts
            // at once and another only once woken: with two, this one's part
            // is larger by what it reads in that time.
            let step = n.div_ceil(threads).next_multiple_of(4);
            let first = ((n + HEAD_START / k) / 2).next_multiple_of(4).min(n);
            let start = |p: usize| if threads == 2 { [0, first, n][p] } else { (p * step).min(n) };
            let out = Output(c);
            let run = |p: usize| {
                let (start, end) = (start(p), start(p + 1));
                // SAFETY: columns start..end of c's one row, which this part alone writes.
                let c = unsafe { slice_mut(out.at(start), end - start) };
                small(end - start, row, |j| column(start + j), c);
                epilogue.columns(start, end - start).apply(c);
            };
            split_in_parts(if threads == 2 { 2 } else { n.div_ceil(step) }, run);
        } else {
            // SAFETY: c holds m·n values.
            small(n, row, column, unsafe { slice_mut(c, m * n) });
            // SAFETY: as above, m rows of n.
            unsafe { gemm::finish_rows(epilogue, (c, n), (0, m), n) };
        }
        return;
    }
    let (a, b) = (Operand { ptr: a, rows: rsa, cols: csa }, Operand { ptr: b, rows: rsb, cols: csb });
    // SAFETY: the plan sized every buffer for these dimensions and strides.
    unsafe { multiply((m, k, n), a, b, c, false, epilogue) }
}

/// Weights one core reads (from its second-level cache) in about the time
/// another of rayon's threads takes to start on a part it is handed: 48 KiB,
/// half a microsecond (a batch-1 MNIST MLP's first layer split at 72 of
/// 128 columns ran in 3.6 µs against 4.1 µs at 64).
const HEAD_START: usize = 12 * 1024;

/// Values that several threads write at once, each its own: a split
/// product's c (each part its rows or columns), the Winograd kernel's
/// outputs and transformed inputs (each task its tiles or channel), and
/// a filter a team transforms together (each member its share).
#[derive(Clone, Copy)]
pub(crate) struct Output(pub(crate) *mut f32);

impl Output {
    /// The values from `offset` on (a method, so closures capture the
    /// whole `Output` and not its pointer field).
    ///
    /// # Safety
    /// `offset` lies inside the values.
    pub(crate) unsafe fn at(self, offset: usize) -> *mut f32 {
        // SAFETY: the caller's contract.
        unsafe { self.0.add(offset) }
    }

    /// `len` values from `offset` on.
    ///
    /// # Safety
    /// They lie inside the values, and no other reference reaches them.
    pub(crate) unsafe fn run<'a>(self, offset: usize, len: usize) -> &'a mut [f32] {
        // SAFETY: the caller's contract.
        unsafe { std::slice::from_raw_parts_mut(self.at(offset), len) }
    }
}

// SAFETY: each thread writes only its own values (the callers' contract).
unsafe impl Send for Output {}
// SAFETY: as above.
unsafe impl Sync for Output {}

/// `c = a·b`, or `c += a·b` when `accumulate` (c row-major, `n` columns),
/// then `epilogue` on each row, split into parts of rows (or, for few
/// rows, of columns) that run on rayon's threads when the product is large
/// (inside a parallel image part too: idle threads steal the parts, busy
/// ones run them in turn).
///
/// # Safety
/// `a` and `b` reach every element of their `m × k` and `k × n` shapes
/// through their strides; `c` holds `m·n` values.
unsafe fn multiply(
    (m, k, n): (usize, usize, usize),
    a: Operand,
    b: Operand,
    c: *mut f32,
    accumulate: bool,
    epilogue: Epilogue,
) {
    let threads = rayon::current_num_threads();
    let split = m.saturating_mul(k).saturating_mul(n) >= SPLIT_MACS && threads > 1;
    let by_rows = m >= n;
    let length = if by_rows { m } else { n };
    let step = length.div_ceil(threads).next_multiple_of(SPLIT_ALIGN);
    if !split || step >= length {
        // SAFETY: the caller's contract, for the whole product.
        return unsafe { part((m, k, n), a, b, (c, n), accumulate, epilogue) };
    }
    let c = Output(c);
    let run = |start: usize, end: usize| {
        let len = end - start;
        // SAFETY: rows (or columns) start..end lie inside a (or b) and c.
        unsafe {
            if by_rows {
                part((len, k, n), a.at(start, 0), b, (c.at(start * n), n), accumulate, epilogue);
            } else {
                let epilogue = epilogue.columns(start, len);
                part((m, k, len), a, b.at(0, start), (c.at(start), n), accumulate, epilogue);
            }
        }
    };
    match length.div_ceil(step) {
        // Two parts, cut where the threads' speeds call for (`split_by_speed`).
        2 => crate::partner::split_by_speed(length, SPLIT_ALIGN, run),
        parts => (0..parts).into_par_iter().for_each(|p| run(p * step, (p * step + step).min(length))),
    }
}

/// Runs `run(p)` for each of `parts` parts in parallel: two halves with the
/// second on the step's partner if it has one, more on rayon's threads.
fn split_in_parts(parts: usize, run: impl Fn(usize) + Sync + Send) {
    match parts {
        2 => crate::partner::join(|| run(0), || run(1)),
        parts => (0..parts).into_par_iter().for_each(run),
    }
}

/// Whether a product of `m` rows of a row-major `a`, `m × k` by `k × n`,
/// is split over rayon's threads (a compiled step with one runs beside a
/// partner thread, `with_partner`).
pub fn product_splits(m: usize, k: usize, n: usize) -> bool {
    m > SMALL_M && m.saturating_mul(k).saturating_mul(n) >= SPLIT_MACS && rayon::current_num_threads() > 1
}

/// One part of a product, through this CPU's kernel in `gemm` or else
/// matrixmultiply: `c` has row stride `ldc`.
///
/// # Safety
/// As for `multiply`, with c reaching `m` rows of `n` values `ldc` apart.
unsafe fn part(
    (m, k, n): (usize, usize, usize),
    a: Operand,
    b: Operand,
    (c, ldc): (*mut f32, usize),
    accumulate: bool,
    epilogue: Epilogue,
) {
    if let Some(isa) = Isa::detect() {
        // SAFETY: the caller's contract; `detect` chose a kernel this CPU runs.
        return unsafe { gemm::gemm(isa, (m, k, n), a, b, (c, ldc), accumulate, epilogue) };
    }
    let beta = if accumulate { 1.0 } else { 0.0 };
    // SAFETY: the caller's contract.
    unsafe {
        matrixmultiply::sgemm(m, k, n, 1.0, a.ptr, a.rows, a.cols, b.ptr, b.rows, b.cols, beta, c, ldc as isize, 1);
        gemm::finish_rows(epilogue, (c, ldc), (0, m), n);
    }
}

/// `c = op(a)·op(b)` (`m×k` by `k×n`, row-major `c`), then `epilogue` on
/// each row, on slices, for callers other than generated code: an error
/// unless every element the strides reach lies inside the slices (and a
/// bias has a value per column).
#[allow(clippy::too_many_arguments)]
pub fn product(
    (m, k, n): (usize, usize, usize),
    a: &[f32],
    (rsa, csa): (usize, usize),
    b: &[f32],
    (rsb, csb): (usize, usize),
    c: &mut [f32],
    epilogue: Epilogue,
) -> Result<(), String> {
    fits((m, k, n), (a, rsa, csa), (b, rsb, csb), c, epilogue)?;
    let s = |x: usize| x as isize;
    sgemm((m, k, n), (a.as_ptr(), s(rsa), s(csa)), (b.as_ptr(), s(rsb), s(csb)), c.as_mut_ptr(), epilogue);
    Ok(())
}

/// `product` through the kernel of `isa` alone, on this thread, whatever
/// the size (to compare the kernels of one CPU): an error when this CPU
/// cannot run it or the slices do not fit.
#[allow(clippy::too_many_arguments)]
pub fn product_with(
    isa: Isa,
    (m, k, n): (usize, usize, usize),
    a: &[f32],
    (rsa, csa): (usize, usize),
    b: &[f32],
    (rsb, csb): (usize, usize),
    c: &mut [f32],
    epilogue: Epilogue,
) -> Result<(), String> {
    if !Isa::available().contains(&isa) {
        return Err(format!("this CPU has no {isa:?}"));
    }
    fits((m, k, n), (a, rsa, csa), (b, rsb, csb), c, epilogue)?;
    let s = |x: usize| x as isize;
    let a = Operand { ptr: a.as_ptr(), rows: s(rsa), cols: s(csa) };
    let b = Operand { ptr: b.as_ptr(), rows: s(rsb), cols: s(csb) };
    // SAFETY: `fits` checked every element the strides reach; `isa` runs here.
    unsafe { gemm::gemm(isa, (m, k, n), a, b, (c.as_mut_ptr(), n), false, epilogue) };
    Ok(())
}

/// An error unless every element the strides reach lies inside the slices
/// and a bias has a value per column.
fn fits(
    (m, k, n): (usize, usize, usize),
    (a, rsa, csa): (&[f32], usize, usize),
    (b, rsb, csb): (&[f32], usize, usize),
    c: &[f32],
    epilogue: Epilogue,
) -> Result<(), String> {
    if let Some(bias) = epilogue.bias.filter(|bias| bias.len() != n) {
        return Err(format!("a bias of {} values for a product of {n} columns", bias.len()));
    }
    let last = |rows: usize, cols: usize, rs: usize, cs: usize| {
        (rows.max(1) - 1).checked_mul(rs)?.checked_add((cols.max(1) - 1).checked_mul(cs)?)
    };
    let inside = |len: usize, last: Option<usize>| last.is_some_and(|l| l < len);
    if c.len() != m * n || !inside(a.len(), last(m, k, rsa, csa)) || !inside(b.len(), last(k, n, rsb, csb)) {
        return Err(format!("a {m}×{k} by {k}×{n} product does not fit the slices and strides given"));
    }
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

/// `small_product` in this CPU's widest vectors.
fn small<'a>(n: usize, row: impl Fn(usize) -> &'a [f32], column: impl Fn(usize) -> &'a [f32], c: &mut [f32]) {
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
    small_product(n, row, column, c)
}

/// c (rows of n) = the dot products of each `row(i)` with each `column(j)`,
/// four columns at a time: they share the loads of the row and run as
/// independent chains. Each block of columns meets every row before the
/// next block is read, so the weights come from memory once, not once a
/// row (VGG-16's first dense layer, 411 MB, at four rows a replica).
/// Every SIMD width gives the same bits: the lanes and the order of every
/// addition are fixed, and no element depends on the others.
#[inline(always)]
fn small_product<'a>(n: usize, row: impl Fn(usize) -> &'a [f32], column: impl Fn(usize) -> &'a [f32], c: &mut [f32]) {
    let rows = c.len() / n.max(1);
    let whole = n / 4 * 4;
    for j in (0..whole).step_by(4) {
        let columns = [column(j), column(j + 1), column(j + 2), column(j + 3)];
        for i in 0..rows {
            c[i * n + j..][..4].copy_from_slice(&dot4(row(i), columns));
        }
    }
    for j in whole..n {
        let column = column(j);
        for i in 0..rows {
            c[i * n + j] = dot(row(i), column);
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

/// The dot product of `a` and `b` (as much of `b` as `a` is long), with the
/// same lanes and sums as `dot4`: a fixed order on every instruction set.
#[inline(always)]
pub(crate) fn dot(a: &[f32], b: &[f32]) -> f32 {
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

/// A product on slices: c = a·b, or c += a·b when `accumulate` (row-major c).
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
    accumulate: bool,
) {
    let s = |x: usize| x as isize;
    let a = Operand { ptr: a.as_ptr(), rows: s(sa.0), cols: s(sa.1) };
    let b = Operand { ptr: b.as_ptr(), rows: s(sb.0), cols: s(sb.1) };
    // SAFETY: the slices hold the m·k, k·n and m·n elements the strides address.
    unsafe { multiply((m, k, n), a, b, c.as_mut_ptr(), accumulate, Epilogue::default()) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::partner::{ONE_AT_A_TIME, set_step_share, with_partner};

    /// A product split in two by rows or by columns, with a partner, gives
    /// c the bits of the whole product on one thread wherever the split
    /// falls (`split_by_speed`), with an a seven eighths zeros (as a
    /// ReLU's gradient leaves one), whose blocks of rows walk.
    #[test]
    fn a_product_split_anywhere_has_the_bits_of_one_thread() {
        let _one = ONE_AT_A_TIME.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let pool = rayon::ThreadPoolBuilder::new().num_threads(2).build().expect("pool");
        let values = |len: usize, seed: u64, nonzero_in: u64| -> Vec<f32> {
            let mixed = |i: u64| (i ^ seed).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 32;
            (0..len as u64)
                .map(|i| if mixed(i) % nonzero_in == 0 { (mixed(i) % 1000) as f32 / 500.0 - 1.0 } else { 0.0 })
                .collect()
        };
        // By rows (m ≥ n) and by columns.
        for (m, k, n) in [(300, 200, 70), (40, 300, 333)] {
            let (a, b) = (values(m * k, 1, 8), values(k * n, 2, 1));
            let (a_op, b_op) = (
                Operand { ptr: a.as_ptr(), rows: k as isize, cols: 1 },
                Operand { ptr: b.as_ptr(), rows: n as isize, cols: 1 },
            );
            let mut whole = vec![0.0; m * n];
            // SAFETY: a, b and c hold their shapes, row-major.
            unsafe { part((m, k, n), a_op, b_op, (whole.as_mut_ptr(), n), false, Epilogue::default()) };
            for share in [0.25, 0.4, 0.6, 0.75] {
                let mut c = vec![f32::NAN; m * n];
                pool.install(|| {
                    with_partner(|| {
                        set_step_share(share);
                        product((m, k, n), &a, (k, 1), &b, (n, 1), &mut c, Epilogue::default()).expect("fits");
                    })
                });
                let bits = |c: &[f32]| c.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(&c), bits(&whole), "{m}×{k}×{n}, share {share}");
            }
        }
        set_step_share(0.5);
    }
}
