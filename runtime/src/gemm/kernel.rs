//! The register kernel: a block of rows of c, its sums held in vector
//! registers, over each packed panel of b (`Block`), one function per
//! shape compiled for each instruction set (`Kernels`).
#![allow(unsafe_code)]

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::{__m256, __m512};

use super::zero_rows;
use crate::simd::Vector;

/// The kernels for `rows` rows of a block of `mr` (`rows_per_block`), a
/// packed or read in place, over every panel of a block of b.
///
/// # Safety
/// As `panels`.
#[inline(always)]
pub(super) unsafe fn panels_for_rows<V: Kernels, const PACKED: bool>(mr: usize, rows: usize, block: Block) {
    // SAFETY: the caller's contract.
    unsafe {
        match (mr, rows) {
            (12, 12) => V::panels::<12, 12, PACKED>(block),
            (12, 11) => V::panels::<12, 11, PACKED>(block),
            (12, 10) => V::panels::<12, 10, PACKED>(block),
            (12, 9) => V::panels::<12, 9, PACKED>(block),
            (12, 8) => V::panels::<12, 8, PACKED>(block),
            (12, 7) => V::panels::<12, 7, PACKED>(block),
            (12, 6) => V::panels::<12, 6, PACKED>(block),
            (12, 5) => V::panels::<12, 5, PACKED>(block),
            (12, 4) => V::panels::<12, 4, PACKED>(block),
            (12, 3) => V::panels::<12, 3, PACKED>(block),
            (12, 2) => V::panels::<12, 2, PACKED>(block),
            (12, _) => V::panels::<12, 1, PACKED>(block),
            (_, 6) => V::panels::<6, 6, PACKED>(block),
            (_, 5) => V::panels::<6, 5, PACKED>(block),
            (_, 4) => V::panels::<6, 4, PACKED>(block),
            (_, 3) => V::panels::<6, 3, PACKED>(block),
            (_, 2) => V::panels::<6, 2, PACKED>(block),
            _ => V::panels::<6, 1, PACKED>(block),
        }
    }
}

/// The kernel over each panel of a block of b (`block.b` the first,
/// `block.cols` the block's columns, `block.c` its first column of c):
/// both vectors of a panel or, when it keeps no more columns than one
/// holds (ten classes' logits, a last narrow panel), the first.
///
/// # Safety
/// As `kernel`, for every panel of the block.
#[inline(always)]
unsafe fn panels<V: Vector, const S: usize, const R: usize, const PACKED: bool>(block: Block) {
    let width = 2 * V::LANES;
    let whole = block.cols / width;
    // SAFETY: the caller's contract: panel p and its columns of c.
    let panel = |p: usize, cols: usize| unsafe {
        Block { b: block.b.add(p * block.next_panel), c: block.c.add(p * width), cols, ..block }
    };
    // SAFETY: the caller's contract: null or the lists of these panels.
    let walks = unsafe { block.walks.as_ref() };
    for p in 0..whole {
        // SAFETY: as above.
        unsafe {
            match walks.and_then(|walks| walks.of(p)) {
                Some(rows) => kernel_over::<V, S, R, PACKED, 2>(panel(p, width), rows.iter().map(|&p| usize::from(p))),
                None => kernel::<V, S, R, PACKED, 2>(panel(p, width)),
            }
        }
    }
    let rest = block.cols - whole * width;
    // SAFETY: as above.
    unsafe {
        if rest > V::LANES {
            kernel::<V, S, R, PACKED, 2>(panel(whole, rest))
        } else if rest > 0 {
            kernel::<V, S, R, PACKED, 1>(panel(whole, rest))
        }
    }
}

/// Each vector width's kernels as functions of their own, called once per
/// block of rows and block of b. Inlined, the three dozen of them turned
/// the loops around them into one function that reloaded hundreds of
/// values from the stack around every call: on products of small k more
/// time than the multiply-adds themselves.
pub(super) trait Kernels: Vector {
    /// `panels` for this width.
    ///
    /// # Safety
    /// As `panels`.
    unsafe fn panels<const S: usize, const R: usize, const PACKED: bool>(block: Block);
}

/// `Kernels` for the vector type `$v`, its functions compiled for `$isa`.
macro_rules! kernels {
    ($v:ty, $isa:literal) => {
        #[cfg(target_arch = "x86_64")]
        impl Kernels for $v {
            #[inline(always)]
            unsafe fn panels<const S: usize, const R: usize, const PACKED: bool>(block: Block) {
                #[target_feature(enable = $isa)]
                #[inline(never)]
                unsafe fn compiled<const S: usize, const R: usize, const PACKED: bool>(block: Block) {
                    // SAFETY: the caller's contract.
                    unsafe { panels::<$v, S, R, PACKED>(block) }
                }
                // SAFETY: the caller's contract; only code compiled for `$isa` calls this.
                unsafe { compiled::<S, R, PACKED>(block) }
            }
        }
    };
}
kernels!(__m512, "avx512f");
kernels!(__m256, "avx2,fma");

/// One kernel call: the kernel's R rows of `a`, packed (`pack_rows`) or
/// in place (`lda` apart), times one packed panel, into c (`ldc` apart),
/// `cols` of the panel's columns kept; added to c when `add`. For
/// `panels`, the first of a block's panels and the block's columns.
#[derive(Clone, Copy)]
pub(super) struct Block {
    pub a: *const f32,
    pub lda: usize,
    pub b: *const f32,
    /// Values from one row of a panel of b to the next, and from one panel
    /// to the next: a packed b's `2 · LANES` and kc times that, a b read
    /// in place its rows' stride and `2 · LANES`.
    pub ldb: usize,
    pub next_panel: usize,
    pub kc: usize,
    pub c: *mut f32,
    pub ldc: usize,
    pub cols: usize,
    pub add: bool,
    /// For `panels`: the nonzero rows of the block's panels, or null.
    pub walks: *const zero_rows::Walks,
}

/// R rows × `H` vectors of c (the panel's two, or its first), the
/// accumulators held in registers for the whole panel; the rows of `a`
/// packed `S` to a value of k, or with `PACKED` false read in place.
///
/// # Safety
/// The block's pointers reach kc × S packed values of a (or R rows of kc
/// values), kc rows of the panel and R rows of `cols` values of c, at
/// most `H` vectors' worth.
#[inline(always)]
unsafe fn kernel<V: Vector, const S: usize, const R: usize, const PACKED: bool, const H: usize>(block: Block) {
    // SAFETY: the caller's contract.
    unsafe { kernel_over::<V, S, R, PACKED, H>(block, 0..block.kc) }
}

/// `kernel` over the values of k `ks` yields, in order (all of them, or
/// the panel's nonzero rows).
///
/// # Safety
/// As `kernel`; each value of k is below `kc`.
#[inline(always)]
unsafe fn kernel_over<V: Vector, const S: usize, const R: usize, const PACKED: bool, const H: usize>(
    block: Block,
    ks: impl Iterator<Item = usize>,
) {
    let lanes = V::LANES;
    // SAFETY: the caller's contract (and `V` is this function's instruction set).
    unsafe {
        let mut acc = [[V::zero(); H]; R];
        for p in ks {
            let b: [V; H] = std::array::from_fn(|h| V::load(block.b.add(p * block.ldb + h * lanes)));
            for (r, row) in acc.iter_mut().enumerate() {
                let at = if PACKED { p * S + r } else { r * block.lda + p };
                let x = V::splat(*block.a.add(at));
                for (sum, &b) in row.iter_mut().zip(&b) {
                    *sum = V::fmadd(x, b, *sum);
                }
            }
        }
        if block.cols == H * lanes {
            for (r, row) in acc.iter().enumerate() {
                store_panel_row(row, block.c.add(r * block.ldc), block.cols, block.add);
            }
        } else {
            // A narrow panel's loop over columns keeps the loop over rows
            // rolled, which would index `acc` at run time and keep it in
            // memory for the whole kernel: the narrow stores read a copy.
            let sums = acc;
            for (r, row) in sums.iter().enumerate() {
                store_panel_row(row, block.c.add(r * block.ldc), block.cols, block.add);
            }
        }
    }
}

/// Stores (or adds, when `add`) the first `cols` columns of one row of a
/// panel's `H` vectors of sums at `out`.
///
/// # Safety
/// `out` holds `cols` values, at most `H` vectors' worth.
#[inline(always)]
pub(super) unsafe fn store_panel_row<V: Vector, const H: usize>(sums: &[V; H], out: *mut f32, cols: usize, add: bool) {
    let lanes = V::LANES;
    // SAFETY: the caller's contract.
    unsafe {
        if cols == H * lanes {
            for (h, &v) in sums.iter().enumerate() {
                let sum = if add { V::add(V::load(out.add(h * lanes)), v) } else { v };
                V::store(out.add(h * lanes), sum);
            }
        } else {
            let mut tile = [0.0f32; 32];
            for (h, &v) in sums.iter().enumerate() {
                V::store(tile.as_mut_ptr().add(h * lanes), v);
            }
            for (l, &v) in tile[..cols].iter().enumerate() {
                *out.add(l) = if add { *out.add(l) + v } else { v };
            }
        }
    }
}
