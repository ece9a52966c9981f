//! The blocked sgemm under every product of more than a few rows, on CPUs
//! with AVX-512 or AVX2 and FMA (others use matrixmultiply).
//!
//! `b` is packed into panels of two vectors' width, `KC` rows at a time
//! at most (or all of k, when that fits the same room), so a block of rows
//! of c (12 on AVX-512, 6 on AVX2) keeps its accumulators in registers for
//! a whole panel. Each value of `a` is
//! broadcast to a vector: a block's rows are packed value by value just
//! before they meet the panels (so the packed block stays in L1), when
//! they meet enough panels to pay for it, and read where they lie
//! otherwise. matrixmultiply packs both operands on every
//! call, and packs a row-major `a` with gathers, which took half as long
//! as its kernel on the products of an MLP.
//!
//! Every element of c is one chain of fused multiply-adds over k in order,
//! restarted at the same points of k (`k_blocks`) and added to c: the bits
//! depend on k alone, not on
//! the vector width, the blocking of rows and columns or how the product is
//! split over threads. Blocks of rows that are mostly zeros skip them
//! (`sparse`), which leaves the chains as they are.
#![allow(unsafe_code)]

use std::cell::RefCell;

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::{__m256, __m512};

use crate::kernels::Epilogue;
use crate::simd::Vector;

mod kernel;
mod pack;
mod sparse;
mod zero_rows;

use kernel::{Block, Kernels, panels_for_rows};

pub(crate) use pack::transpose8;
use pack::{SPILL, pack, pack_rows};

/// Values of k per packed panel (a 12-row block reads 12 KiB of `a`,
/// which stays in L1 while the block walks the panels).
const KC: usize = 256;
/// Columns of b packed at once (with `KC`, 1 MiB, which the kernel streams
/// from the caches: each block of rows of a is packed once per block of
/// columns, and W2's weight gradients, split by rows over 1,024 columns,
/// ran 4–7 % faster than with blocks of 512 on a Zen 3 core, whose
/// second-level cache holds 512 KiB).
const NC: usize = 1024;

/// The instruction sets this module has kernels for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Isa {
    Avx512,
    Avx2,
}

impl Isa {
    /// The widest this CPU runs, if any.
    pub fn detect() -> Option<Isa> {
        #[cfg(target_arch = "x86_64")]
        {
            // Every CPU with either set counts bits in one instruction too
            // (the sparse walk's counts of nonzeros use it).
            if !is_x86_feature_detected!("popcnt") {
                return None;
            }
            if is_x86_feature_detected!("avx512f") {
                return Some(Isa::Avx512);
            }
            if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
                return Some(Isa::Avx2);
            }
        }
        None
    }

    /// Every kernel this CPU can run (for tests that compare them).
    pub fn available() -> Vec<Isa> {
        match Isa::detect() {
            Some(Isa::Avx512) => vec![Isa::Avx512, Isa::Avx2],
            Some(Isa::Avx2) => vec![Isa::Avx2],
            None => Vec::new(),
        }
    }
}

/// A matrix operand: element (i, j) at `ptr + i·rows + j·cols`.
#[derive(Clone, Copy)]
pub(crate) struct Operand {
    pub ptr: *const f32,
    pub rows: isize,
    pub cols: isize,
}

// SAFETY: the parts of a split product only read a and b, which the caller
// keeps alive and unchanged until every part has finished.
unsafe impl Send for Operand {}
// SAFETY: as above.
unsafe impl Sync for Operand {}

impl Operand {
    /// The operand from row `i`, column `j` on.
    ///
    /// # Safety
    /// (i, j) lies inside the operand.
    pub unsafe fn at(self, i: usize, j: usize) -> Operand {
        // SAFETY: the caller's contract.
        Operand { ptr: unsafe { self.ptr.offset(i as isize * self.rows + j as isize * self.cols) }, ..self }
    }

    /// Element (i, j).
    ///
    /// # Safety
    /// (i, j) lies inside the operand.
    pub unsafe fn get(self, i: usize, j: usize) -> f32 {
        // SAFETY: the caller's contract.
        unsafe { *self.ptr.offset(i as isize * self.rows + j as isize * self.cols) }
    }
}

/// Each thread's scratch, kept between products.
struct Buffers {
    /// Packed panels of b.
    panels: Vec<f32>,
    /// One block's rows of `a`, packed.
    rows_of_a: Vec<f32>,
    /// Which blocks of rows walk (see `sparse`), once counted.
    sparse_blocks: Vec<Option<bool>>,
    /// The nonzero rows of each block of k's panels (see `zero_rows`).
    walks: Vec<zero_rows::Walks>,
    /// A transposed a copied row by row, when it walks (`find_sparse_blocks`).
    a_by_rows: Vec<f32>,
    /// The values of k each group of a walk's rows walks (`sparse`).
    walk_lists: Vec<[u16; KC]>,
}

thread_local! {
    static BUFFERS: RefCell<Buffers> = const {
        RefCell::new(Buffers {
            panels: Vec::new(),
            rows_of_a: Vec::new(),
            sparse_blocks: Vec::new(),
            walks: Vec::new(),
            a_by_rows: Vec::new(),
            walk_lists: Vec::new(),
        })
    };
}

/// `c = a·b`, or `c += a·b` when `accumulate`, then `epilogue` on each
/// row, on one thread (`m×k` by `k×n`; c has rows `ldc` apart).
///
/// # Safety
/// `a` and `b` reach every element of their shapes through their strides;
/// c holds `m` rows of `n` values `ldc` apart; `isa` runs on this CPU.
pub(crate) unsafe fn gemm(
    isa: Isa,
    (m, k, n): (usize, usize, usize),
    a: Operand,
    b: Operand,
    (c, ldc): (*mut f32, usize),
    accumulate: bool,
    epilogue: Epilogue,
) {
    BUFFERS.with_borrow_mut(|buffers| {
        let c = Stored { c, ldc, accumulate, epilogue };
        // SAFETY: the caller's contract.
        unsafe {
            match isa {
                #[cfg(target_arch = "x86_64")]
                Isa::Avx512 => blocked_avx512((m, k, n), a, b, c, buffers),
                #[cfg(target_arch = "x86_64")]
                Isa::Avx2 => blocked_avx2((m, k, n), a, b, c, buffers),
                #[cfg(not(target_arch = "x86_64"))]
                _ => unreachable!("no kernels on this architecture"),
            }
        }
    })
}

/// Where and how a product stores c: rows `ldc` apart, added to what c
/// holds when `accumulate`, `epilogue` applied to each finished block.
#[derive(Clone, Copy)]
struct Stored<'a> {
    c: *mut f32,
    ldc: usize,
    accumulate: bool,
    epilogue: Epilogue<'a>,
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,popcnt")]
unsafe fn blocked_avx512(dims: (usize, usize, usize), a: Operand, b: Operand, c: Stored, buffers: &mut Buffers) {
    // SAFETY: the caller's contract.
    unsafe { blocked::<__m512>(dims, a, b, c, buffers) }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,popcnt")]
unsafe fn blocked_avx2(dims: (usize, usize, usize), a: Operand, b: Operand, c: Stored, buffers: &mut Buffers) {
    // SAFETY: the caller's contract.
    unsafe { blocked::<__m256>(dims, a, b, c, buffers) }
}

/// `epilogue` on rows `i0..i0 + rows` of c (`n` values from its first
/// column, rows `ldc` apart), whose sums are final: in the pass that
/// stores them, while they are in the first-level cache.
///
/// # Safety
/// The rows lie inside c.
#[inline(always)]
pub(crate) unsafe fn finish_rows(
    epilogue: Epilogue,
    (c, ldc): (*mut f32, usize),
    (i0, rows): (usize, usize),
    n: usize,
) {
    if epilogue.is_nothing() {
        return;
    }
    for i in i0..i0 + rows {
        // SAFETY: the caller's contract.
        epilogue.apply(unsafe { std::slice::from_raw_parts_mut(c.add(i * ldc), n) });
    }
}

/// The loops around the kernel: k by `k_blocks` (or all blocks of k at
/// once, see `at_once`), columns by `NC` (b packed once per such block),
/// rows by `rows_per_block` (each block of rows of a packed, unless a is
/// row-major and its rows meet few panels), then the blocks of k taken at
/// once and the panels. Each element of c sees the blocks of k in order;
/// after the last, its block gets the epilogue.
#[inline(always)]
unsafe fn blocked<V: Kernels>(
    (m, k, n): (usize, usize, usize),
    a: Operand,
    b: Operand,
    Stored { c, ldc, accumulate, epilogue }: Stored,
    buffers: &mut Buffers,
) {
    let (width, mr) = (2 * V::LANES, rows_per_block::<V>());
    let Buffers { panels, rows_of_a, sparse_blocks, walks, a_by_rows, walk_lists } = buffers;
    if k == 0 {
        // An empty sum: no block of k below writes c.
        for i in (0..m).filter(|_| !accumulate) {
            // SAFETY: c holds m rows of n values, ldc apart.
            unsafe { std::ptr::write_bytes(c.add(i * ldc), 0, n) };
        }
        // SAFETY: as above.
        return unsafe { finish_rows(epilogue, (c, ldc), (0, m), n) };
    }
    // SAFETY: the caller's contract.
    let a = unsafe { find_sparse_blocks::<V>((m, k, n), a, mr, sparse_blocks, a_by_rows) };
    // Packing costs a pass over a, which pays for itself when each row of a
    // serves at least `pack_panels` panels.
    let packed = a.cols != 1 || n >= pack_panels::<V>() * width;
    let rows_of_a = crate::simd::aligned(rows_of_a, mr * KC + SPILL);
    let step = k_blocks(k);
    // When b's columns for every block of k fit in the room of one packed
    // block, they are packed at once and each block of rows meets them all
    // in turn: its part of c stays in L1 between the blocks of k instead of
    // going out to L2 and back for each.
    let at_once = if k.saturating_mul(n.min(NC).next_multiple_of(width)) <= KC * NC { k } else { step };
    let fetch_ahead = k.saturating_mul(n) >= pack::FETCH_AHEAD_FROM;
    let mut listed = None;
    for p1 in (0..k).step_by(at_once) {
        let ks = at_once.min(k - p1);
        for j0 in (0..n).step_by(NC) {
            let nc = NC.min(n - j0);
            // After the last blocks of k, each block of rows of c is final.
            let finished = epilogue.columns(j0, nc);
            let finish = |(i0, rows): (usize, usize)| {
                if p1 + ks == k {
                    // SAFETY: rows i0.. and columns j0..j0 + nc lie inside c.
                    unsafe { finish_rows(finished, (c.add(j0), ldc), (i0, rows), nc) };
                }
            };
            let block_len = |kc: usize| nc.div_ceil(width) * kc * width;
            let panels = crate::simd::aligned(panels, block_len(ks));
            let k_blocks = (p1..p1 + ks).step_by(step).map(|p0| (p0, step.min(p1 + ks - p0), block_len(p0 - p1)));
            for (p0, kc, at) in k_blocks.clone() {
                // SAFETY: the block lies inside b.
                unsafe { pack(b, (p0, kc), (j0, nc), (width, fetch_ahead), &mut panels[at..at + block_len(kc)]) };
            }
            // Zero rows of b's panels are listed if the first panel has
            // enough of them (a is packed, so any layout of a can skip them).
            let first_kc = step.min(ks);
            // SAFETY: the first panel's rows lie inside the packed block.
            let list = packed
                && zero_rows::skipped()
                && *listed.get_or_insert_with(|| unsafe {
                    zero_rows::worth_listing::<V>(panels.as_ptr(), (first_kc, width))
                });
            if list {
                walks.resize_with(walks.len().max(ks.div_ceil(step)), Default::default);
                for (walk, (_, kc, at)) in walks.iter_mut().zip(k_blocks.clone()) {
                    // SAFETY: the block of k's panels lies inside the packed block.
                    unsafe { walk.list::<V>(panels.as_ptr().add(at), (nc.div_ceil(width), kc, width)) };
                }
            }
            let finite = !sparse_blocks.is_empty() && sparse::all_finite(panels);
            // Consecutive sparse blocks of rows walk together, up to `SPARSE_ROWS` rows.
            let mut run: Option<(usize, usize)> = None;
            // The first block was counted sparse (`find_sparse_blocks`).
            let mut walks_pay = true;
            let rows_from = |(i0, rows): (usize, usize)| {
                // SAFETY: a run's rows lie inside a.
                let (a, c) = (unsafe { a.at(i0, 0) }, c.wrapping_add(i0 * ldc + j0));
                let lda = a.rows as usize;
                sparse::Rows { a: a.ptr, lda, rows, panels: panels.as_ptr(), width, nc, c, ldc, accumulate }
            };
            for i0 in (0..m).step_by(mr) {
                let rows = mr.min(m - i0);
                // SAFETY: rows i0.. lie inside a.
                if finite
                    && unsafe { block_is_sparse::<V>(a.at(i0, 0), (rows, k), &mut sparse_blocks[i0 / mr], walks_pay) }
                {
                    run = match run {
                        Some((start, len)) if len + rows <= sparse::SPARSE_ROWS => Some((start, len + rows)),
                        Some(full) => {
                            // SAFETY: the run's rows of a and c, and b's packed panels, all finite.
                            walks_pay =
                                unsafe { sparse::multiply_rows::<V>(rows_from(full), k_blocks.clone(), walk_lists) };
                            finish(full);
                            Some((i0, rows))
                        }
                        None => Some((i0, rows)),
                    };
                    continue;
                }
                if let Some(sparse_rows) = run.take() {
                    // SAFETY: as above.
                    walks_pay =
                        unsafe { sparse::multiply_rows::<V>(rows_from(sparse_rows), k_blocks.clone(), walk_lists) };
                    finish(sparse_rows);
                }
                for (index, (p0, kc, at)) in k_blocks.clone().enumerate() {
                    let add = accumulate || p0 > 0;
                    if packed {
                        // SAFETY: rows i0..i0 + rows and k values p0.. lie inside a.
                        unsafe { pack_rows(a.at(i0, p0), (rows, kc), mr, rows_of_a) };
                    }
                    // A zero row of b may be skipped where a is finite (a
                    // short block's unused lanes hold an earlier block's
                    // values: at worst they keep this one dense).
                    let walk = list && sparse::all_finite(&rows_of_a[..kc * mr]);
                    // SAFETY: the packed rows, this block's panels, and rows i0.., columns j0.. of c.
                    unsafe {
                        let rows_a = if packed { rows_of_a.as_ptr() } else { a.at(i0, p0).ptr };
                        let block = Block {
                            a: rows_a,
                            lda: a.rows as usize,
                            b: panels.as_ptr().add(at),
                            ldb: width,
                            next_panel: kc * width,
                            kc,
                            c: c.add(i0 * ldc + j0),
                            ldc,
                            cols: nc,
                            add,
                            walks: if walk { &walks[index] } else { std::ptr::null() },
                        };
                        if packed {
                            panels_for_rows::<V, true>(mr, rows, block)
                        } else {
                            panels_for_rows::<V, false>(mr, rows, block)
                        }
                    }
                }
                finish((i0, rows));
            }
            if let Some(sparse_rows) = run {
                // SAFETY: as above.
                unsafe { sparse::multiply_rows::<V>(rows_from(sparse_rows), k_blocks.clone(), walk_lists) };
                finish(sparse_rows);
            }
        }
    }
}

/// `c = a·b` on one thread, with a and b row-major and read in place (no
/// packing pass: the caller keeps both in cache, as the Winograd kernel
/// keeps a block's transformed inputs): the bits of `gemm`'s product.
///
/// # Safety
/// `a` reaches its `m × k` values, row-major; b holds k rows `ldb` apart,
/// each readable for n rounded up to whole panels (two vectors; the
/// values past n are read into lanes that are not stored, and must be
/// initialized); c holds m rows of n; `isa` runs on this CPU.
pub(crate) unsafe fn multiply_in_place(
    isa: Isa,
    (m, k, n): (usize, usize, usize),
    a: Operand,
    (b, ldb): (*const f32, usize),
    c: *mut f32,
) {
    assert!(a.cols == 1 && k > 0);
    // SAFETY: the caller's contract.
    unsafe {
        match isa {
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => in_place_avx512((m, k, n), a, (b, ldb), c),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => in_place_avx2((m, k, n), a, (b, ldb), c),
            #[cfg(not(target_arch = "x86_64"))]
            _ => unreachable!("no kernels on this architecture"),
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,popcnt")]
unsafe fn in_place_avx512(dims: (usize, usize, usize), a: Operand, b: (*const f32, usize), c: *mut f32) {
    // SAFETY: the caller's contract.
    unsafe { in_place::<__m512>(dims, a, b, c) }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,popcnt")]
unsafe fn in_place_avx2(dims: (usize, usize, usize), a: Operand, b: (*const f32, usize), c: *mut f32) {
    // SAFETY: the caller's contract.
    unsafe { in_place::<__m256>(dims, a, b, c) }
}

/// `blocked`'s loops over rows and blocks of k (`k_blocks`) for a b read
/// in place: each element of c sees the blocks of k in order, as there.
///
/// # Safety
/// As for `multiply_in_place`.
#[inline(always)]
unsafe fn in_place<V: Kernels>(
    (m, k, n): (usize, usize, usize),
    a: Operand,
    (b, ldb): (*const f32, usize),
    c: *mut f32,
) {
    let (mr, step) = (rows_per_block::<V>(), k_blocks(k));
    for i0 in (0..m).step_by(mr) {
        let rows = mr.min(m - i0);
        for p0 in (0..k).step_by(step) {
            // SAFETY: rows i0.. of a and c, and b's rows p0.., lie inside.
            unsafe {
                let block = Block {
                    a: a.at(i0, p0).ptr,
                    lda: a.rows as usize,
                    b: b.add(p0 * ldb),
                    ldb,
                    next_panel: 2 * V::LANES,
                    kc: step.min(k - p0),
                    c: c.add(i0 * n),
                    ldc: n,
                    cols: n,
                    add: p0 > 0,
                    walks: std::ptr::null(),
                };
                panels_for_rows::<V, false>(mr, rows, block);
            }
        }
    }
}

/// Which blocks of `mr` rows of a may walk (`sparse`), and the a they
/// read: none unless c is wide enough to pay for counting and the first
/// rows are sparse (a dense product counts them alone); the others are
/// decided when they are first reached (`block_is_sparse`). They walk
/// where b's packed values are finite.
///
/// A walk reads rows of a, so a transposed a (a weight gradient's
/// `∂zᵀ`, a row for each of a layer's units, where a ReLU's gradient is
/// zero for the inputs that left a unit off, and for every input of a dead
/// one) is counted, and multiplied, from a row-major copy in `by_rows`:
/// of the first `KC` values of k of its first two blocks of rows (rows of
/// units differ more than rows of inputs do; a dense a pays for no more),
/// then, when they are sparse, of all of it. Up to `BY_ROWS_MAX` values.
///
/// # Safety
/// As for `blocked`.
#[inline(always)]
unsafe fn find_sparse_blocks<V: Vector>(
    (m, k, n): (usize, usize, usize),
    a: Operand,
    mr: usize,
    sparse_blocks: &mut Vec<Option<bool>>,
    by_rows: &mut Vec<f32>,
) -> Operand {
    sparse_blocks.clear();
    if a.rows < 0 || m == 0 || k == 0 || n < sparse::SPARSE_MIN_COLUMNS || !sparse::walked() {
        return a;
    }
    let (a, sparse) = if a.cols == 1 {
        // SAFETY: the caller's contract: the first block's rows lie inside a.
        (a, unsafe { sparse::is_sparse::<V>(a.ptr, a.rows as usize, (mr.min(m), k)) })
    } else if a.rows == 1 && m * k <= BY_ROWS_MAX {
        let (rows, values) = ((2 * mr).min(m), k.min(KC));
        let sample = crate::simd::aligned(by_rows, rows * values + SPILL).as_mut_ptr();
        // SAFETY: the caller's contract: a's rows lie inside it; each copy
        // holds what it is given, and `SPILL` values more.
        unsafe {
            pack::gather(a, (rows, values), sample, values);
            if !sparse::is_sparse::<V>(sample, values, (rows, values)) {
                return a;
            }
        }
        let copy = crate::simd::aligned(by_rows, m * k + SPILL).as_mut_ptr();
        // SAFETY: as above.
        unsafe { pack::gather(a, (m, k), copy, k) };
        (Operand { ptr: copy, rows: k as isize, cols: 1 }, true)
    } else {
        (a, false)
    };
    if sparse {
        sparse_blocks.push(Some(true));
        sparse_blocks.resize(m.div_ceil(mr), None);
    }
    a
}

/// Values of a transposed a copied row by row to walk (4 MiB: W2's weight
/// gradients copy 512 KiB on each core).
const BY_ROWS_MAX: usize = 1 << 20;

/// Whether the block of `rows` rows of a from `a` walks, decided the first
/// time it is asked: without a count while the last run of walking blocks
/// walked no more than it should (`walks_pay`, what `sparse::multiply_rows`
/// returned: counting a block's nonzeros took 6 % of a product over MNIST
/// rows, and images mostly follow images), otherwise by counting (their
/// rows then in cache for the walk). Dense blocks after sparse ones may
/// so walk, a run's worth (`sparse::SPARSE_ROWS`) at most before the
/// walk's answer, at about twice the dense kernel's time, with its bits.
///
/// # Safety
/// The rows lie inside a, which is row-major.
#[inline(always)]
unsafe fn block_is_sparse<V: Vector>(
    a: Operand,
    (rows, k): (usize, usize),
    counted: &mut Option<bool>,
    walks_pay: bool,
) -> bool {
    match *counted {
        Some(sparse) => sparse,
        None if walks_pay => {
            *counted = Some(true);
            true
        }
        None => {
            // SAFETY: the caller's contract.
            let sparse = unsafe { sparse::is_sparse::<V>(a.ptr, a.rows as usize, (rows, k)) };
            *counted = Some(sparse);
            sparse
        }
    }
}

/// Whether a product over `k` on this CPU, accumulating, adds each
/// element's whole chain to c (k is one block): c + a·b then has the bits
/// of c plus the product computed alone.
pub(crate) fn adds_whole_chains(k: usize) -> bool {
    Isa::detect().is_some() && k_blocks(k) >= k
}

/// How many values of k each block of k takes: as even as blocks of at
/// most `KC` allow (784 as 4 × 196, not 3 × 256 and a 16 whose every
/// block of c is loaded and stored again for 16 multiply-adds).
fn k_blocks(k: usize) -> usize {
    k.div_ceil(k.div_ceil(KC).max(1)).max(1)
}

/// Rows of c per block: two vectors of accumulators each, and room for two
/// panel vectors and a broadcast, in the 32 vector registers of AVX-512
/// (12 rows) or the 16 of AVX2 (6).
fn rows_per_block<V: Vector>() -> usize {
    if V::LANES == 16 { 12 } else { 6 }
}

/// Panels from which a row-major a is packed rather than read in place:
/// 4 on AVX-512; on AVX2, whose blocks of 6 rows pack by transposes that
/// are three-quarters used, 9 (on a Zen 3 core, W1's forward half, 4
/// panels, ran 6 % faster read in place, an LSTM's state gradient, 8
/// panels, 3 %).
fn pack_panels<V: Vector>() -> usize {
    if V::LANES == 16 { 4 } else { 9 }
}

#[cfg(test)]
mod tests;
