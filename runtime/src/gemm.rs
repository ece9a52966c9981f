//! The blocked sgemm under every product of more than a few rows, on CPUs
//! with AVX-512 or AVX2 and FMA (others use matrixmultiply).
//!
//! Rows of `a` are read where they lie, each value broadcast to a vector
//! (a copy is made only when a row's values are not contiguous); `b` is
//! packed into panels of two vectors' width, `KC` rows at a time, so a
//! 6-row block of c keeps its 12 accumulators in registers for a whole
//! panel. matrixmultiply packs both operands on every call, and packs a
//! row-major `a` with gathers, which took half as long as its kernel on
//! the products of an MLP.
//!
//! Every element of c is one chain of fused multiply-adds over k in order,
//! restarted every `KC` values and added to c: the bits do not depend on
//! the vector width, the blocking of rows and columns or how the product is
//! split over threads.
#![allow(unsafe_code)]

use std::cell::RefCell;

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::{__m256, __m512, _mm256_loadu_ps, _mm256_storeu_ps};

use crate::simd::Vector;

/// Rows of c per block: 6 × 2 accumulators, 2 panel vectors and a
/// broadcast fit the 16 vector registers of AVX2.
const MR: usize = 6;
/// Values of k per packed panel (a 6-row block reads 6 KiB of `a`, which
/// stays in L1 while the block walks the panels).
const KC: usize = 256;
/// Columns of b packed at once (with `KC`, 512 KiB: within L2).
const NC: usize = 512;

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
    unsafe fn get(self, i: usize, j: usize) -> f32 {
        // SAFETY: the caller's contract.
        unsafe { *self.ptr.offset(i as isize * self.rows + j as isize * self.cols) }
    }
}

/// Packed panels of b, and a row-major copy of `a` when it needs one.
type Buffers = (Vec<f32>, Vec<f32>);

thread_local! {
    static BUFFERS: RefCell<Buffers> = const { RefCell::new((Vec::new(), Vec::new())) };
}

/// `c = a·b`, or `c += a·b` when `accumulate`, on one thread (`m×k` by
/// `k×n`; c has rows `ldc` apart).
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
) {
    BUFFERS.with_borrow_mut(|buffers| {
        // SAFETY: the caller's contract.
        unsafe {
            match isa {
                #[cfg(target_arch = "x86_64")]
                Isa::Avx512 => blocked_avx512((m, k, n), a, b, (c, ldc), accumulate, buffers),
                #[cfg(target_arch = "x86_64")]
                Isa::Avx2 => blocked_avx2((m, k, n), a, b, (c, ldc), accumulate, buffers),
                #[cfg(not(target_arch = "x86_64"))]
                _ => unreachable!("no kernels on this architecture"),
            }
        }
    })
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn blocked_avx512(
    dims: (usize, usize, usize),
    a: Operand,
    b: Operand,
    c: (*mut f32, usize),
    accumulate: bool,
    buffers: &mut Buffers,
) {
    // SAFETY: the caller's contract.
    unsafe { blocked::<__m512>(dims, a, b, c, accumulate, buffers) }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn blocked_avx2(
    dims: (usize, usize, usize),
    a: Operand,
    b: Operand,
    c: (*mut f32, usize),
    accumulate: bool,
    buffers: &mut Buffers,
) {
    // SAFETY: the caller's contract.
    unsafe { blocked::<__m256>(dims, a, b, c, accumulate, buffers) }
}

/// The loops around the kernel: columns by `NC`, k by `KC` (b packed once
/// per such block), rows by `MR`, then the panels.
#[inline(always)]
unsafe fn blocked<V: Vector>(
    (m, k, n): (usize, usize, usize),
    a: Operand,
    b: Operand,
    (c, ldc): (*mut f32, usize),
    accumulate: bool,
    (panels, copy): &mut Buffers,
) {
    let width = 2 * V::LANES;
    if k == 0 && !accumulate {
        // An empty sum: no block of k below writes c.
        for i in 0..m {
            // SAFETY: c holds m rows of n values, ldc apart.
            unsafe { std::ptr::write_bytes(c.add(i * ldc), 0, n) };
        }
        return;
    }
    let (a, lda) = if a.cols == 1 {
        (a.ptr, a.rows as usize)
    } else {
        copy.clear();
        copy.resize(m * k, 0.0);
        // SAFETY: the caller's contract on a; the copy holds m rows of k.
        unsafe { gather(a, (m, k), copy.as_mut_ptr(), k) };
        (copy.as_ptr(), k)
    };
    for j0 in (0..n).step_by(NC) {
        let nc = NC.min(n - j0);
        for p0 in (0..k).step_by(KC) {
            let kc = KC.min(k - p0);
            // SAFETY: the block lies inside b.
            unsafe { pack(b, (p0, kc), (j0, nc), width, panels) };
            let add = accumulate || p0 > 0;
            for i0 in (0..m).step_by(MR) {
                let rows = MR.min(m - i0);
                for (panel, j) in (j0..j0 + nc).step_by(width).enumerate() {
                    let cols = width.min(j0 + nc - j);
                    // SAFETY: rows i0.., k values p0.. of a; columns j.. of c.
                    unsafe {
                        let block = Block {
                            a: a.add(i0 * lda + p0),
                            lda,
                            b: panels.as_ptr().add(panel * kc * width),
                            kc,
                            c: c.add(i0 * ldc + j),
                            ldc,
                            cols,
                            add,
                        };
                        match rows {
                            6 => kernel::<V, 6>(block),
                            5 => kernel::<V, 5>(block),
                            4 => kernel::<V, 4>(block),
                            3 => kernel::<V, 3>(block),
                            2 => kernel::<V, 2>(block),
                            _ => kernel::<V, 1>(block),
                        }
                    }
                }
            }
        }
    }
}

/// Packs b's rows p0..p0 + kc, columns j0..j0 + nc into panels of `width`
/// columns, row by row (zero past the last column).
///
/// # Safety
/// The block lies inside b.
#[inline(always)]
unsafe fn pack(b: Operand, (p0, kc): (usize, usize), (j0, nc): (usize, usize), width: usize, out: &mut Vec<f32>) {
    out.clear();
    out.resize(nc.div_ceil(width) * kc * width, 0.0);
    for (panel, chunk) in out.chunks_exact_mut(kc * width).enumerate() {
        let first = j0 + panel * width;
        let cols = width.min(j0 + nc - first);
        // SAFETY: rows p0.., columns first..first + cols lie inside b.
        unsafe { gather(b.at(p0, first), (kc, cols), chunk.as_mut_ptr(), width) };
    }
}

/// Copies the `rows × cols` values of `from` into `to` (rows `ld` apart):
/// row by row when rows are runs of memory, by 8 × 8 transposes in
/// registers when columns are (a transposed operand), else one by one.
///
/// # Safety
/// `from` reaches its `rows × cols` values; `to` holds `rows` rows of `ld`.
#[inline(always)]
unsafe fn gather(from: Operand, (rows, cols): (usize, usize), to: *mut f32, ld: usize) {
    // SAFETY: the caller's contract.
    unsafe {
        if from.cols == 1 {
            for i in 0..rows {
                std::ptr::copy_nonoverlapping(from.at(i, 0).ptr, to.add(i * ld), cols);
            }
            return;
        }
        let (mut whole_rows, mut whole_cols) = (0, 0);
        #[cfg(target_arch = "x86_64")]
        if from.rows == 1 {
            (whole_rows, whole_cols) = (rows / 8 * 8, cols / 8 * 8);
            for i in (0..whole_rows).step_by(8) {
                for j in (0..whole_cols).step_by(8) {
                    transpose8(from.at(i, j).ptr, from.cols as usize, to.add(i * ld + j), ld);
                }
            }
        }
        for i in 0..rows {
            let start = if i < whole_rows { whole_cols } else { 0 };
            for j in start..cols {
                *to.add(i * ld + j) = from.get(i, j);
            }
        }
    }
}

/// Writes `to[i·ld + j] = from[j·stride + i]` for an 8 × 8 block: eight
/// loads of 8, three rounds of shuffles, eight stores.
///
/// # Safety
/// Both blocks lie inside their buffers; the CPU has AVX (the callers are
/// compiled for AVX2 or AVX-512).
#[cfg(target_arch = "x86_64")]
#[inline(always)]
pub(crate) unsafe fn transpose8(from: *const f32, stride: usize, to: *mut f32, ld: usize) {
    use std::arch::x86_64::{_mm256_permute2f128_ps, _mm256_shuffle_ps, _mm256_unpackhi_ps, _mm256_unpacklo_ps};
    // SAFETY: the caller's contract.
    unsafe {
        let r: [__m256; 8] = std::array::from_fn(|j| _mm256_loadu_ps(from.add(j * stride)));
        let t: [__m256; 8] = std::array::from_fn(|q| {
            let (x, y) = (r[q / 2 * 2], r[q / 2 * 2 + 1]);
            if q % 2 == 0 { _mm256_unpacklo_ps(x, y) } else { _mm256_unpackhi_ps(x, y) }
        });
        // u[0..4] from t[0..4], u[4..8] from t[4..8]: rows 4h + q of each half.
        let u: [__m256; 8] = std::array::from_fn(|q| {
            let base = q / 4 * 4;
            let (x, y) = (t[base + (q % 4) / 2], t[base + 2 + (q % 4) / 2]);
            if q % 2 == 0 { _mm256_shuffle_ps::<0x44>(x, y) } else { _mm256_shuffle_ps::<0xEE>(x, y) }
        });
        for i in 0..8 {
            let v = if i < 4 {
                _mm256_permute2f128_ps::<0x20>(u[i], u[i + 4])
            } else {
                _mm256_permute2f128_ps::<0x31>(u[i - 4], u[i])
            };
            _mm256_storeu_ps(to.add(i * ld), v);
        }
    }
}

/// One kernel call: `rows` (the kernel's R) rows of `a` from `a` (`lda`
/// apart) times one packed panel, into c (`ldc` apart), `cols` of the
/// panel's columns kept; added to c when `add`.
#[derive(Clone, Copy)]
struct Block {
    a: *const f32,
    lda: usize,
    b: *const f32,
    kc: usize,
    c: *mut f32,
    ldc: usize,
    cols: usize,
    add: bool,
}

/// R rows × two vectors of c, the accumulators held in registers for the
/// whole panel.
///
/// # Safety
/// The block's pointers reach R rows of kc values, kc rows of the panel and
/// R rows of `cols` values of c.
#[inline(always)]
unsafe fn kernel<V: Vector, const R: usize>(block: Block) {
    let lanes = V::LANES;
    // SAFETY: the caller's contract (and `V` is this function's instruction set).
    unsafe {
        let mut acc = [[V::zero(); 2]; R];
        for p in 0..block.kc {
            let b0 = V::load(block.b.add(p * 2 * lanes));
            let b1 = V::load(block.b.add(p * 2 * lanes + lanes));
            for (r, row) in acc.iter_mut().enumerate() {
                let x = V::splat(*block.a.add(r * block.lda + p));
                row[0] = V::fmadd(x, b0, row[0]);
                row[1] = V::fmadd(x, b1, row[1]);
            }
        }
        for (r, row) in acc.iter().enumerate() {
            let out = block.c.add(r * block.ldc);
            if block.cols == 2 * lanes {
                for (h, &v) in row.iter().enumerate() {
                    let sum = if block.add { V::add(V::load(out.add(h * lanes)), v) } else { v };
                    V::store(out.add(h * lanes), sum);
                }
            } else {
                let mut tile = [0.0f32; 32];
                V::store(tile.as_mut_ptr(), row[0]);
                V::store(tile.as_mut_ptr().add(lanes), row[1]);
                for (l, &v) in tile[..block.cols].iter().enumerate() {
                    *out.add(l) = if block.add { *out.add(l) + v } else { v };
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A product over k = 0 is zero, whatever c held (no block of k writes it).
    #[test]
    fn an_empty_sum_writes_zeros() {
        for isa in Isa::available() {
            let mut c = vec![f32::NAN; 6];
            let empty = Operand { ptr: [0.0f32; 1].as_ptr(), rows: 0, cols: 1 };
            // SAFETY: with k = 0 neither operand is read; c holds 2 × 3.
            unsafe { gemm(isa, (2, 0, 3), empty, empty, (c.as_mut_ptr(), 3), false) };
            assert_eq!(c, [0.0; 6], "{isa:?}");
        }
    }
}
