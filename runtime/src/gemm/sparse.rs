//! Blocks of rows of `a` that are mostly zeros (raw images with a dark
//! background, one-hot codes, bags of words) multiplied by reading only
//! the rows of b their nonzero values meet.
//!
//! A zero of `a` adds `0·b(p, j)` to a chain, which leaves it as it is
//! when b's values are finite, so each element of c is the dense kernel's
//! chain without those terms: the same fused multiply-adds in the same
//! order of k, restarted at the same blocks of k. The one difference is
//! the sign of a zero: a chain that has underflowed to −0 becomes +0 when
//! the dense kernel adds a skipped +0 (only values below 2⁻¹⁴⁹ can do
//! that).
#![allow(unsafe_code)]

use super::KC;
use crate::simd::Vector;

/// A block of rows walks when the values of k its groups of rows walk
/// (`rows_together`: where any row of a group is nonzero) are at most this
/// share of the dense kernel's: a walked value also costs its listing,
/// and its loads of b serve fewer rows of a. Rows whose zeros lie in the
/// same places (the background of images, a layer's dead units) walk
/// little more than one row's nonzeros; zeros scattered at random leave
/// little to skip. On AVX2 (four rows walk, against six in the dense
/// kernel), a third walked ran in 0.5–0.67 of the dense kernel's time,
/// three quarters in 0.83–0.93 and 94 % in 0.99–1.07 (W2's products with
/// nine, seven and five zeros in ten at random, one core of a Zen 3); on
/// AVX-512, six rows walk against 12. The one test both a block's count
/// and a run's walk apply.
fn walk_pays<V: Vector>(walked: usize, values: usize) -> bool {
    let (numerator, denominator) = if V::LANES == 16 { (1, 2) } else { (3, 4) };
    walked * denominator <= values * numerator
}

/// Whether sparse blocks walk (tests turn it off on their thread to
/// compare with the dense kernel).
pub(super) fn walked() -> bool {
    #[cfg(test)]
    {
        tests::WALKED.get()
    }
    #[cfg(not(test))]
    {
        true
    }
}

/// Columns below which the dense kernel keeps every block: counting a
/// block's zeros costs about what multiplying it by this many columns does.
pub(super) const SPARSE_MIN_COLUMNS: usize = 64;

/// Whether `rows` rows (at most `SPARSE_ROWS`) of `k` values of a
/// row-major `a` (rows `lda` apart) are sparse enough for
/// `multiply_rows`, counted as it walks them: in each block of k, in
/// groups in the order of their first nonzero. A last group shorter than
/// the others is left out (a run of blocks walks whole groups, and fewer
/// rows walk fewer values: AVX2's first block of six is four and two).
///
/// # Safety
/// The rows lie inside a; the caller is compiled for `V`'s instruction set.
#[inline(always)]
pub(super) unsafe fn is_sparse<V: Vector>(a: *const f32, lda: usize, (rows, k): (usize, usize)) -> bool {
    let (step, together) = (super::k_blocks(k), rows_together::<V>());
    let rows = rows.min(SPARSE_ROWS);
    let counted = if rows < together { rows } else { rows / together * together };
    let (mut order, mut listed) = ([0u8; SPARSE_ROWS], [0u16; KC]);
    let mut walked = 0;
    for p0 in (0..k).step_by(step) {
        let kc = step.min(k - p0);
        let a = |r: usize| a.wrapping_add(r * lda + p0);
        // SAFETY: the caller's contract, for k values p0..p0 + kc ≤ p0 + KC.
        let order = unsafe { by_first_nonzero::<V>(a, (rows, kc), &mut order) };
        for group in order[..counted].chunks(together) {
            let a = group_rows(group).map(a);
            // SAFETY: as above, for the group's rows.
            walked += unsafe { where_any_is_nonzero::<V>(&a[..group.len()], kc, &mut listed) }.len() * group.len();
        }
    }
    walk_pays::<V>(walked, counted * k)
}

/// Whether every value is finite (a zero of a times an infinity or NaN of
/// b is NaN, which the dense kernel would add).
#[inline(always)]
pub(super) fn all_finite(values: &[f32]) -> bool {
    let mut exponents_all_ones = 0u32;
    for x in values {
        exponents_all_ones |= u32::from(x.to_bits() & 0x7f80_0000 == 0x7f80_0000);
    }
    exponents_all_ones == 0
}

/// A block of rows of a row-major `a` times one block of b's columns,
/// packed in panels (`super::pack`, its narrow last panel's missing
/// columns zero), into c.
#[derive(Clone, Copy)]
pub(super) struct Rows {
    /// The block's first row, from column 0.
    pub a: *const f32,
    pub lda: usize,
    pub rows: usize,
    /// The packed panels of every block of k below, and their width.
    pub panels: *const f32,
    pub width: usize,
    /// Columns of b packed.
    pub nc: usize,
    /// The block's first row, from the first packed column.
    pub c: *mut f32,
    pub ldc: usize,
    pub accumulate: bool,
}

/// Rows of a that walk b together, each value of k where any of them is
/// nonzero loading its rows of the panels once for all. More rows walk
/// more values (MNIST's rows: 19 % of k for one, 43 % for six, 46 % for
/// eight); a walk of one row at a time, one load per multiply-add, runs no
/// faster (from the second-level cache, which cannot feed it, nor from
/// the first with each row's nonzeros listed beforehand, which costs more
/// than the walk saves), and eight, in groups of eight and four, 7 %
/// slower than six. Half of a dense block each on AVX-512; on AVX2, four
/// of six (with one panel, 8 of its 16 registers).
fn rows_together<V: Vector>() -> usize {
    if V::LANES == 16 { MAX_TOGETHER } else { MIN_TOGETHER }
}

/// Rows of a (consecutive sparse blocks) among which the rows that walk
/// together are chosen: rows whose nonzeros start at about the same value
/// of k mostly share them (MNIST's rows, groups of six: 43 % of k in
/// their order, 41 % chosen among 12, 38 % among 48, 37 % among 96).
pub(super) const SPARSE_ROWS: usize = 96;
const _: () = assert!(SPARSE_ROWS <= 1 << u8::BITS, "rows are ordered by their index as u8");

/// `c = a·b`, or `c += a·b` when `accumulate`, for rows of a (at most
/// `SPARSE_ROWS`), skipping the values of k where the rows walking b
/// together are all zero: for each block of k (`k_blocks`: its first
/// value, its length and where its panels start), the rows in the order
/// of their first nonzero in it, a few rows and `panels_together` panels
/// at a time (past `CACHED_PANELS`, every group through a few panels
/// before any takes the next). Which rows walk together changes the terms
/// 0·b a chain skips, so no bit but the sign of a zero, as above. Returns
/// whether the walk was worth it (`walk_pays`), counted as walked.
///
/// # Safety
/// a holds the rows of each block of k, the panels hold each block of k's
/// packed values, all finite, and c the rows of `nc` values; there are at
/// most `SPARSE_ROWS` rows; the caller is compiled for `V`'s instruction set.
#[inline(always)]
pub(super) unsafe fn multiply_rows<V: Vector>(
    block: Rows,
    k_blocks: impl Iterator<Item = (usize, usize, usize)> + Clone,
    lists: &mut Vec<[u16; KC]>,
) -> bool {
    let (width, together) = (block.width, rows_together::<V>());
    let panels = block.nc.div_ceil(width);
    debug_assert!(block.rows <= SPARSE_ROWS);
    let rows = block.rows.min(SPARSE_ROWS);
    lists.resize(lists.len().max(SPARSE_ROWS.div_ceil(together)), [0; KC]);
    let mut order = [0u8; SPARSE_ROWS];
    let (mut walked_values, mut k) = (0, 0);
    for (p0, kc, at) in k_blocks {
        k += kc;
        let a = |r: usize| block.a.wrapping_add(r * block.lda + p0);
        // SAFETY: the caller's contract, for k values p0..p0 + kc ≤ p0 + KC.
        let order = unsafe { by_first_nonzero::<V>(a, (rows, kc), &mut order) };
        // Each group walks every panel in turn while this block of k's
        // panels stay in the second-level cache; past that, the groups walk
        // a few panels in turn, which so stay in the first (one group
        // walking every panel read them all from the shared cache for each
        // group: W2's gradients of 1,024 columns on a Zen 3 core ran 5–15 %
        // slower), and each group's list is kept for the next few.
        let step = panels_together::<V>();
        let at_once = if panels * kc * width <= CACHED_PANELS { panels } else { PANELS_AT_ONCE };
        let mut lengths = [0; SPARSE_ROWS];
        for first in (0..panels).step_by(at_once) {
            for (g, group) in order.chunks(together).enumerate() {
                // Every panel at once: one list, walked as soon as it is made.
                let g = if at_once == panels { 0 } else { g };
                let rows = group_rows(group);
                let a = rows.map(a);
                if first == 0 {
                    // SAFETY: the caller's contract, for the group's rows and k values p0..p0 + kc.
                    lengths[g] = unsafe { where_any_is_nonzero::<V>(&a[..group.len()], kc, &mut lists[g]) }.len();
                    walked_values += lengths[g] * group.len();
                }
                let walked = &lists[g][..lengths[g]];
                for panel in (first..panels.min(first + at_once)).step_by(step) {
                    let part = Part {
                        a,
                        // SAFETY: the caller's contract, for this block of k's panels.
                        b: unsafe { block.panels.add(at + panel * kc * width) },
                        stride: kc * width,
                        c: rows.map(|r| block.c.wrapping_add(r * block.ldc + panel * width)),
                        cols: block.nc - panel * width,
                        add: block.accumulate || p0 > 0,
                    };
                    // SAFETY: the caller's contract, for the group's rows, k values p0.. and the panels.
                    unsafe {
                        match step.min(panels - panel) {
                            2 => tile_rows::<V, 2>(group.len(), part, walked),
                            _ => tile_rows::<V, 1>(group.len(), part, walked),
                        }
                    }
                }
            }
        }
    }
    walk_pays::<V>(walked_values, rows * k)
}

/// A group's rows (of a walk's rows in order), the last repeated past
/// its length so that every lane of the array holds one.
#[inline(always)]
fn group_rows(group: &[u8]) -> [usize; MAX_TOGETHER] {
    std::array::from_fn(|i| usize::from(group[i.min(group.len() - 1)]))
}

/// Rows walking together at most and at least (`rows_together`).
const MAX_TOGETHER: usize = 6;
const MIN_TOGETHER: usize = 4;
/// Values of a block of k's packed panels that every group of a walk
/// takes in turn (256 KiB, half of the second-level cache of a Zen 3 core).
const CACHED_PANELS: usize = 1 << 16;
/// Panels every group of a walk takes in turn past `CACHED_PANELS` (a
/// whole number of `panels_together`): 64 KiB of b at most.
const PANELS_AT_ONCE: usize = 4;

/// The first `rows` rows (`a(r)`: row r from the block of k's first
/// value) in the order of their first nonzero among `kc` values (a
/// counting sort, rows without one last), written into `order`.
///
/// # Safety
/// Each row holds `kc` ≤ `KC` values; the caller is compiled for `V`'s
/// instruction set.
#[inline(always)]
unsafe fn by_first_nonzero<V: Vector>(
    a: impl Fn(usize) -> *const f32,
    (rows, kc): (usize, usize),
    order: &mut [u8; SPARSE_ROWS],
) -> &[u8] {
    let lanes = V::LANES;
    let mut first = [0u16; SPARSE_ROWS];
    let mut count = [0u8; KC + 1];
    for (r, first) in first.iter_mut().enumerate().take(rows) {
        let row = a(r);
        let mut p = 0;
        // SAFETY: the caller's contract: values p..p + lanes ≤ kc of the row.
        while p + lanes <= kc {
            let nonzeros = unsafe { V::nonzeros(row.add(p)) };
            if nonzeros != 0 {
                p += nonzeros.trailing_zeros() as usize;
                break;
            }
            p += lanes;
        }
        // SAFETY: as above, for the values past the last whole vector.
        while p < kc && unsafe { *row.add(p) } == 0.0 {
            p += 1;
        }
        *first = p as u16;
        count[p] += 1;
    }
    let mut start = 0;
    for c in &mut count {
        (*c, start) = (start, start + *c);
    }
    for (r, &f) in first.iter().enumerate().take(rows) {
        order[usize::from(count[usize::from(f)])] = r as u8;
        count[usize::from(f)] += 1;
    }
    &order[..rows]
}

/// The values of k (from 0 to `kc` ≤ `KC`) where any of the rows of a
/// (each from the block of k's first value) is nonzero, in order, written
/// into `walked` a vector's worth at a time (`Vector::list_lanes`).
///
/// # Safety
/// The rows hold `kc` values each; the caller is compiled for `V`'s
/// instruction set.
#[inline(always)]
unsafe fn where_any_is_nonzero<'w, V: Vector>(rows: &[*const f32], kc: usize, walked: &'w mut [u16; KC]) -> &'w [u16] {
    let lanes = V::LANES;
    let whole = kc / lanes * lanes;
    let mut len = 0;
    // SAFETY: the caller's contract.
    unsafe {
        for p0 in (0..whole).step_by(lanes) {
            let any = nonzero_in_any::<V>(rows, p0);
            // len ≤ p0 and p0 + lanes ≤ kc ≤ KC: the vector's room lies inside `walked`.
            len += V::list_lanes(any, p0 as u16, walked.as_mut_ptr().add(len));
        }
        for p in whole..kc {
            walked[len] = p as u16;
            len += usize::from(nonzero_at_any(rows, p));
        }
    }
    &walked[..len]
}

/// Bit l set when any of the rows of a is nonzero at value p + l.
///
/// # Safety
/// The rows hold a vector of values from p; the caller is compiled for
/// `V`'s instruction set.
#[inline(always)]
unsafe fn nonzero_in_any<V: Vector>(rows: &[*const f32], p: usize) -> u32 {
    // SAFETY: the caller's contract.
    rows.iter().fold(0, |any, row| any | unsafe { V::nonzeros(row.add(p)) })
}

/// Whether any of the rows of a is nonzero at value p.
///
/// # Safety
/// The rows hold value p.
#[inline(always)]
unsafe fn nonzero_at_any(rows: &[*const f32], p: usize) -> bool {
    // SAFETY: the caller's contract.
    rows.iter().any(|row| unsafe { *row.add(p) } != 0.0)
}

/// Rows of a over one block of k, times a panel of b, into c.
#[derive(Clone, Copy)]
struct Part {
    /// Each row's first value of this block of k.
    a: [*const f32; MAX_TOGETHER],
    /// The first panel's part for this block of k; panels `stride` apart.
    b: *const f32,
    stride: usize,
    /// Each row's first column, `cols` columns from the panel's first on.
    c: [*mut f32; MAX_TOGETHER],
    cols: usize,
    add: bool,
}

/// `R` rows of `P` panels of c, their accumulators in registers, over the
/// values of k `walked` (those where any of the R rows of a is nonzero).
///
/// # Safety
/// As for `multiply_rows`, for the part's rows and panels; each value
/// walked is below the block of k's length.
#[inline(always)]
unsafe fn tile<V: Vector, const R: usize, const P: usize>(part: Part, walked: &[u16]) {
    let lanes = V::LANES;
    // SAFETY: the caller's contract.
    unsafe {
        let mut acc = [[[V::zero(); 2]; P]; R];
        for &p in walked {
            let p = usize::from(p);
            let b: [[V; 2]; P] = std::array::from_fn(|t| {
                let row = part.b.add(t * part.stride + p * 2 * lanes);
                [V::load(row), V::load(row.add(lanes))]
            });
            for (r, sums) in acc.iter_mut().enumerate() {
                let x = V::splat(*part.a[r].add(p));
                for (sums, b) in sums.iter_mut().zip(&b) {
                    sums[0] = V::fmadd(x, b[0], sums[0]);
                    sums[1] = V::fmadd(x, b[1], sums[1]);
                }
            }
        }
        for (r, row) in acc.iter().enumerate() {
            for (t, sums) in row.iter().enumerate() {
                let out = part.c[r].add(t * 2 * lanes);
                super::kernel::store_panel_row(sums, out, (part.cols - t * 2 * lanes).min(2 * lanes), part.add);
            }
        }
    }
}

/// `tile` for `rows` (at most six) rows.
///
/// # Safety
/// As for `tile`.
#[inline(always)]
unsafe fn tile_rows<V: Vector, const P: usize>(rows: usize, part: Part, walked: &[u16]) {
    // SAFETY: the caller's contract.
    unsafe {
        match rows {
            6 => tile::<V, 6, P>(part, walked),
            5 => tile::<V, 5, P>(part, walked),
            4 => tile::<V, 4, P>(part, walked),
            3 => tile::<V, 3, P>(part, walked),
            2 => tile::<V, 2, P>(part, walked),
            _ => tile::<V, 1, P>(part, walked),
        }
    }
}

/// Panels a walk's tile covers: two on AVX-512 (with six rows, 24 of its
/// 32 registers), one on AVX2.
fn panels_together<V: Vector>() -> usize {
    if V::LANES == 16 { 2 } else { 1 }
}

#[cfg(test)]
mod tests;
