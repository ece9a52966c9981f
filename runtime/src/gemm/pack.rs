//! Packing for the kernels: blocks of rows of `a` value by value, blocks
//! of b in panels, transposing in registers where the operand's columns
//! are runs of memory.
#![allow(unsafe_code)]

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::{__m256, _mm256_loadu_ps, _mm256_storeu_ps};

use super::Operand;

/// Packs `rows` (at most `mr`) rows of `kc` values of `a` (from its
/// element (0, 0)) value by value: the rows' values at each k side by
/// side, `mr` apart, so the kernel reads the block from one pointer. A
/// short block's missing rows are never read.
///
/// # Safety
/// The rows lie inside a; `out` holds `kc · mr + SPILL` values.
#[inline(always)]
pub(super) unsafe fn pack_rows(a: Operand, (rows, kc): (usize, usize), mr: usize, out: &mut [f32]) {
    debug_assert!(out.len() >= kc * mr + SPILL);
    // a's rows read as k by row: element (p, r) is a(r, p).
    let transposed = Operand { ptr: a.ptr, rows: a.cols, cols: a.rows };
    // SAFETY: the caller's contract.
    unsafe { gather(transposed, (kc, rows), out.as_mut_ptr(), mr) };
}

/// Values `gather` may write past its last row's `cols` (the narrow
/// transposes' eight-wide stores), which the packed rows' buffers keep
/// room for.
pub(super) const SPILL: usize = 8;

/// Packs b's rows p0..p0 + kc, columns j0..j0 + nc into panels of `width`
/// columns, row by row. A last, narrow panel's missing columns are zeros
/// (they land only in lanes the kernels do not store, and keep the check
/// that b's values are finite about b's values alone). With `fetch_ahead`
/// (a large b, `FETCH_AHEAD_FROM`), a row-major b's rows are fetched
/// `PREFETCH_ROWS` ahead.
///
/// # Safety
/// The block lies inside b.
#[inline(always)]
pub(super) unsafe fn pack(
    b: Operand,
    (p0, kc): (usize, usize),
    (j0, nc): (usize, usize),
    (width, fetch_ahead): (usize, bool),
    out: &mut [f32],
) {
    if b.cols == 1 {
        // Row by row, each row's runs to their panels: b is read in the
        // order it lies in memory, which the prefetchers follow (panel by
        // panel, its rows are a stride apart: half again as slow on 1024
        // columns).
        let panels = nc.div_ceil(width);
        for i in 0..kc {
            // SAFETY: row p0 + i, columns j0..j0 + nc lie inside b.
            let row = unsafe { b.at(p0 + i, j0).ptr };
            if fetch_ahead && i + PREFETCH_ROWS < kc {
                // SAFETY: that row lies inside b too.
                prefetch(unsafe { b.at(p0 + i + PREFETCH_ROWS, j0).ptr }, nc);
            }
            for panel in 0..panels {
                let cols = width.min(nc - panel * width);
                let to = &mut out[(panel * kc + i) * width..][..width];
                // SAFETY: as above.
                unsafe { copy_run(row.add(panel * width), to.as_mut_ptr(), cols) };
                to[cols..].fill(0.0);
            }
        }
        return;
    }
    for (panel, chunk) in out.chunks_exact_mut(kc * width).enumerate() {
        let first = j0 + panel * width;
        let cols = width.min(j0 + nc - first);
        // SAFETY: rows p0.., columns first..first + cols lie inside b.
        unsafe { gather(b.at(p0, first), (kc, cols), chunk.as_mut_ptr(), width) };
        if cols < width {
            chunk.chunks_exact_mut(width).for_each(|row| row[cols..].fill(0.0));
        }
    }
}

/// How many rows ahead of the one being packed a large row-major b is
/// fetched. A weight read once a step comes from memory, not the caches,
/// and so arrives sooner than the hardware prefetchers bring it: 2 MiB
/// packed on one thread from memory took 230–240 µs instead of 257–280,
/// and W2's products that pack a row-major b (its input gradient and
/// weight gradients) 0.5–3 % less in a training step.
const PREFETCH_ROWS: usize = 16;

/// Values of b from which its rows are fetched ahead (512 KiB). A smaller
/// b is most often still in the caches from the pass that wrote it, and
/// the fetches only cost their instructions: W1's weight gradient (b of
/// 50 K values) took 1 % longer with them.
pub(super) const FETCH_AHEAD_FROM: usize = 1 << 17;

/// Asks for the cache lines of `len` values from `from` on.
#[inline(always)]
fn prefetch(from: *const f32, len: usize) {
    #[cfg(target_arch = "x86_64")]
    for line in (0..len).step_by(16) {
        use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
        // SAFETY: a prefetch reads nothing and faults on no address.
        unsafe { _mm_prefetch::<_MM_HINT_T0>(from.wrapping_add(line).cast()) };
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (from, len);
}

/// Copies the `rows × cols` values of `from` into `to` (rows `ld` apart):
/// row by row when rows are runs of memory, by 8 × 8 transposes in
/// registers when columns are (a transposed operand; where rows or
/// columns are not a multiple of 8, the last transpose overlaps the one
/// before and writes some values twice), else one by one. Fewer than 8
/// columns (AVX2's blocks of 6 rows of a row-major a) still transpose,
/// their last column read again for the missing ones: each row's 8
/// values are stored whole, in order, so what lands past a row's `cols`
/// is written again by the next row, and past the last by no one.
///
/// # Safety
/// `from` reaches its `rows × cols` values; `to` holds `rows` rows of `ld`,
/// and `SPILL` values more where `ld` is under 8.
#[inline(always)]
pub(super) unsafe fn gather(from: Operand, (rows, cols): (usize, usize), to: *mut f32, ld: usize) {
    // SAFETY: the caller's contract.
    unsafe {
        if from.cols == 1 {
            for i in 0..rows {
                copy_run(from.at(i, 0).ptr, to.add(i * ld), cols);
            }
            return;
        }
        #[cfg(target_arch = "x86_64")]
        if from.rows == 1 && rows >= 8 {
            // Blocks at multiples of 8, then one flush with the last row or
            // column. Eight columns of `from` (rows of the operand, often a
            // power of two apart, so in the same sets of the first-level
            // cache) are read down their length before the next eight: a
            // line's second half is read while the line is still there.
            let starts = |len: usize| (0..len - 7).step_by(8).chain((!len.is_multiple_of(8)).then_some(len - 8));
            if cols < 8 {
                let columns: [*const f32; 8] = std::array::from_fn(|j| from.at(0, j.min(cols - 1)).ptr);
                for i in starts(rows) {
                    transpose_columns(columns.map(|column| column.add(i)), to.add(i * ld), ld);
                }
                return;
            }
            for j in starts(cols) {
                for i in starts(rows) {
                    transpose8(from.at(i, j).ptr, from.cols as usize, to.add(i * ld + j), ld);
                }
            }
            return;
        }
        for i in 0..rows {
            for j in 0..cols {
                *to.add(i * ld + j) = from.get(i, j);
            }
        }
    }
}

/// Copies `len` values. A whole panel's row (32 or 16 values) or a whole
/// block's values of one k (12 or 6) is one fixed-size copy the compiler
/// keeps in registers, not a call of `memcpy` for each 24 to 128 bytes
/// (256 × 1,024 by a row-major 1,024 × 512 on one core: 55.7–57.0 GMAC/s
/// with the calls, 58.1–58.8 without). So is a narrow last panel's row,
/// as two fixed-size copies that overlap: Winograd's products pack one
/// for every channel and point of the transform (a 224 × 224 layer of
/// VGG-16 on one core spent 9 % of its time in those calls).
///
/// # Safety
/// `from` holds `len` values and `to` room for them; they do not overlap.
#[inline(always)]
unsafe fn copy_run(from: *const f32, to: *mut f32, len: usize) {
    /// # Safety
    /// As `copy_run`, with `len` N.
    #[inline(always)]
    unsafe fn fixed<const N: usize>(from: *const f32, to: *mut f32) {
        // SAFETY: the caller's contract.
        unsafe { to.cast::<[f32; N]>().write_unaligned(from.cast::<[f32; N]>().read_unaligned()) }
    }
    // SAFETY: the caller's contract.
    unsafe {
        match len {
            32 => fixed::<32>(from, to),
            16 => fixed::<16>(from, to),
            12 => fixed::<12>(from, to),
            6 => fixed::<6>(from, to),
            // The second copy writes again some of the values the first did.
            17..32 => {
                fixed::<16>(from, to);
                fixed::<16>(from.add(len - 16), to.add(len - 16));
            }
            8..16 => {
                fixed::<8>(from, to);
                fixed::<8>(from.add(len - 8), to.add(len - 8));
            }
            _ => std::ptr::copy_nonoverlapping(from, to, len),
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
    // SAFETY: the caller's contract.
    unsafe { transpose_columns(std::array::from_fn(|j| from.add(j * stride)), to, ld) }
}

/// Writes `to[i·ld + j] = columns[j][i]` for i, j below 8, row i after
/// row i − 1 (`gather`'s narrow blocks rely on the order).
///
/// # Safety
/// Each column holds 8 values and `to` 8 rows of `ld`; the CPU has AVX.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn transpose_columns(columns: [*const f32; 8], to: *mut f32, ld: usize) {
    use std::arch::x86_64::{_mm256_permute2f128_ps, _mm256_shuffle_ps, _mm256_unpackhi_ps, _mm256_unpacklo_ps};
    // SAFETY: the caller's contract.
    unsafe {
        let r: [__m256; 8] = columns.map(|column| _mm256_loadu_ps(column));
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

#[cfg(test)]
mod tests {
    use super::{Operand, SPILL, pack_rows};

    /// Packed rows hold each row's values at each k, `mr` apart, for
    /// blocks of both kernels' heights, short blocks and lengths around
    /// the transposes' 8, and write nothing past the room they are given.
    #[test]
    fn packed_rows_hold_the_rows_and_stay_in_their_room() {
        if crate::gemm::Isa::detect().is_none() {
            return;
        }
        let sentinel = -7.5;
        for mr in [6, 12] {
            for rows in 1..=mr {
                for kc in [1, 5, 7, 8, 9, 16, 23, 196] {
                    let lda = kc + 3;
                    let a: Vec<f32> = (0..rows * lda).map(|i| i as f32).collect();
                    let mut out = vec![sentinel; kc * mr + SPILL + 16];
                    let operand = Operand { ptr: a.as_ptr(), rows: lda as isize, cols: 1 };
                    // SAFETY: a holds `rows` rows of lda ≥ kc values; out has room for kc · mr + SPILL.
                    unsafe { pack_rows(operand, (rows, kc), mr, &mut out) };
                    for p in 0..kc {
                        for r in 0..rows {
                            assert_eq!(out[p * mr + r], a[r * lda + p], "mr {mr}, {rows} rows, kc {kc}: ({r}, {p})");
                        }
                    }
                    assert!(out[kc * mr + SPILL..].iter().all(|&v| v == sentinel), "mr {mr}, {rows} rows, kc {kc}");
                }
            }
        }
    }
}
