//! The lanes layout of the stride-1 convolutions (`Layout::Lanes`): 16
//! output rows across the vector lanes, each kept position's input
//! broadcast, so small images compute no discarded columns and no rows
//! rounded up to blocks of six.
#![allow(unsafe_code)]

use std::arch::x86_64::{_mm256_broadcast_ss, _mm256_fmadd_ps, _mm256_loadu_ps, _mm256_setzero_ps, _mm256_storeu_ps};

use rayon::prelude::*;

use super::{Crop, PARALLEL_WORK, Product, Source};
use crate::gemm::transpose8;

/// Output rows across the lanes in `Layout::Lanes`: two 8-lane registers.
pub(super) const LANES: usize = 16;
/// Positions per block of `Layout::Lanes`: 12 accumulators.
pub(super) const NQ: usize = 6;
/// `product` in `Layout::Lanes`: the kept positions only, each block's
/// LANES × NQ sums stored position by position in `wide`, then turned into
/// rows.
pub(super) fn lanes_product(p: Product, out: &mut [f32], wide: &mut Vec<f32>) {
    let Product { packed, rows, src, geo, crop, epilogue } = p;
    let Crop { top, left, height, width } = crop;
    let (taps, positions) = (geo.taps(), height * width);
    let (groups, blocks) = (rows.div_ceil(LANES), positions.div_ceil(NQ));
    assert!(
        positions > 0
            && packed.len() == groups * LANES * taps
            && left + width <= geo.cols
            && src.len() > (top + height - 1) * geo.cols + left + width - 1 + geo.offset(taps - 1)
            && out.len() == rows * positions
    );
    let block_len = NQ * LANES;
    wide.resize(groups * blocks * block_len, 0.0);
    let run_block = |(i, part): (usize, &mut [f32])| {
        let (group, block) = (i / blocks, i % blocks);
        // Where each position reads its first tap, walked along the output
        // rows from the block's first (one division a block, not one a
        // position); a last block's extra positions repeat the last.
        let (mut y, mut x) = (block * NQ / width, block * NQ % width);
        let first = top + y;
        let last_position = (block * NQ + NQ - 1).min(positions - 1);
        let bases = std::array::from_fn(|j| {
            let base = (top + y) * geo.cols + left + x;
            if block * NQ + j < last_position {
                x += 1;
                if x == width {
                    (y, x) = (y + 1, 0);
                }
            }
            base
        });
        let filter = &packed[group * LANES * taps..(group + 1) * LANES * taps];
        // The block's first and last source rows, and the kernel rows that land in filled rows from them.
        let last = top + y;
        let d = geo.dilation;
        let lowest = geo.filled.0.saturating_sub(last).div_ceil(d);
        let end = geo.kernel.min((geo.filled.1 + d).saturating_sub(first + 1) / d);
        // SAFETY: the CPU has AVX2 and FMA (`applies`); `filter` holds LANES
        // values per tap; every base + offset is at most the last kept
        // position's plus offset(last tap), within src (asserted); `part`
        // holds NQ × LANES values.
        unsafe { lanes_block(filter, (src, geo), lowest..end, bases, part) };
    };
    if groups * LANES * taps * positions >= PARALLEL_WORK {
        wide.par_chunks_mut(block_len).enumerate().for_each(run_block);
    } else {
        wide.chunks_mut(block_len).enumerate().for_each(run_block);
    }
    // SAFETY: the CPU has AVX2 (`applies`); `wide` holds `groups` runs of
    // `blocks` × NQ positions of LANES sums, and `out` rows × positions values (asserted).
    unsafe { rows_from_lanes(wide, blocks * NQ, rows, positions, out) };
    if epilogue.bias.is_some() || epilogue.relu {
        for (m, row) in out.chunks_exact_mut(positions).enumerate() {
            let value = epilogue.of(m);
            row.iter_mut().for_each(|v| *v = value(*v));
        }
    }
}

/// out[m, p] = the sum of output row m at position p, from `wide` where
/// each group of LANES rows holds its sums position by position (`stride`
/// positions a group): 8 × 8 register transposes, the rest one by one.
#[target_feature(enable = "avx2,fma")]
unsafe fn rows_from_lanes(wide: &[f32], stride: usize, rows: usize, positions: usize, out: &mut [f32]) {
    for m0 in (0..rows).step_by(8) {
        let sums = &wide[m0 / LANES * stride * LANES + m0 % LANES..];
        let lanes = 8.min(rows - m0);
        let whole = if lanes == 8 { positions / 8 * 8 } else { 0 };
        for p0 in (0..whole).step_by(8) {
            // SAFETY: reads positions p0..p0 + 8 of lanes m0..m0 + 8, writes rows m0..m0 + 8 at p0..p0 + 8.
            unsafe {
                transpose8(sums.as_ptr().add(p0 * LANES), LANES, out.as_mut_ptr().add(m0 * positions + p0), positions)
            };
        }
        for m in 0..lanes {
            for p in whole..positions {
                out[(m0 + m) * positions + p] = sums[p * LANES + m];
            }
        }
    }
}

/// One block of `Layout::Lanes`: for NQ positions (reading from `bases`)
/// and LANES output rows, the sums over the taps, written to `out`
/// position by position. Only the kernel rows `ky` are read: the others
/// land in rows of zeros for every position of the block.
#[target_feature(enable = "avx2,fma")]
unsafe fn lanes_block(
    filter: &[f32],
    (src, geo): (&[f32], Source),
    ky: std::ops::Range<usize>,
    bases: [usize; NQ],
    out: &mut [f32],
) {
    let mut acc = [[_mm256_setzero_ps(); 2]; NQ];
    let (k, d) = (geo.kernel, geo.dilation);
    // SAFETY (this function): see the caller.
    let at = bases.map(|b| unsafe { src.as_ptr().add(b) });
    for c in 0..geo.planes {
        for ky in ky.clone() {
            let row = c * geo.plane() + ky * d * geo.cols;
            let w = unsafe { filter.as_ptr().add((c * k + ky) * k * LANES) };
            for kx in 0..k {
                unsafe {
                    let w = w.add(kx * LANES);
                    let (w0, w1) = (_mm256_loadu_ps(w), _mm256_loadu_ps(w.add(8)));
                    for (acc, at) in acc.iter_mut().zip(at) {
                        let x = _mm256_broadcast_ss(&*at.add(row + kx * d));
                        acc[0] = _mm256_fmadd_ps(w0, x, acc[0]);
                        acc[1] = _mm256_fmadd_ps(w1, x, acc[1]);
                    }
                }
            }
        }
    }
    for (i, acc) in acc.iter().enumerate() {
        for (v, &value) in acc.iter().enumerate() {
            unsafe { _mm256_storeu_ps(out.as_mut_ptr().add(i * LANES + 8 * v), value) };
        }
    }
}

/// The length of the sums `lanes_weight_sums` adds to, for `filters`
/// filters of `taps` taps.
pub(super) fn lanes_weight_sums_len(filters: usize, taps: usize) -> usize {
    filters.div_ceil(LANES) * taps.div_ceil(NR) * NR * LANES
}

/// The weight gradient in `Layout::Lanes`, for one image: adds Σ_q g[f, q] ·
/// src[offset(r) + base(q)] over the kept positions q to `sums`, with
/// LANES filters across the lanes and NR taps at a time
/// (`lanes_weight_reduce` then adds them to dw). Each sum is one chain
/// over the images and their positions in order, whatever the threads.
pub(super) fn lanes_weight_sums(
    (src, geo): (&[f32], Source),
    (height, width): (usize, usize),
    grad: &[f32],
    filters: usize,
    (wide, offsets): (&mut Vec<f32>, &mut Vec<usize>),
    sums: &mut [f32],
) {
    let (taps, positions) = (geo.taps(), height * width);
    let (groups, blocks) = (filters.div_ceil(LANES), taps.div_ceil(NR));
    assert!(
        positions > 0
            && grad.len() == filters * positions
            && sums.len() == lanes_weight_sums_len(filters, taps)
            && width <= geo.cols
            && src.len() > (height - 1) * geo.cols + width - 1 + geo.offset(taps - 1)
    );
    // The gradient position by position, LANES filters to a position (the
    // lanes past the last filter keep what they held: their sums are dropped).
    wide.resize(groups * positions * LANES, 0.0);
    // SAFETY: the CPU has AVX2 (`applies`); the sizes are as asserted and resized.
    unsafe { lanes_from_rows(grad, filters, positions, wide) };
    // Taps past the last read the first one's inputs; their sums are dropped.
    offsets.clear();
    offsets.extend((0..blocks * NR).map(|r| geo.offset(if r < taps { r } else { 0 })));
    let (wide, offsets) = (&wide[..], &offsets[..]);
    let run_block = |(i, out): (usize, &mut [f32])| {
        let (group, block) = (i / blocks, i % blocks);
        let g = &wide[group * positions * LANES..(group + 1) * positions * LANES];
        let offsets = std::array::from_fn(|j| offsets[block * NR + j]);
        // SAFETY: the CPU has AVX2 and FMA; `g` holds LANES values per
        // position; every read of `src` is at most the last position's
        // base plus offset(last tap) (asserted); `out` holds NR × LANES.
        unsafe { lanes_weight_block(g, (src, geo.cols), (height, width), offsets, out) };
    };
    if groups * LANES * taps * positions >= PARALLEL_WORK {
        sums.par_chunks_mut(NR * LANES).enumerate().for_each(run_block);
    } else {
        sums.chunks_mut(NR * LANES).enumerate().for_each(run_block);
    }
}

/// dw[f, r] += the sum `lanes_weight_sums` gathered for filter f and tap r.
pub(super) fn lanes_weight_reduce(sums: &[f32], taps: usize, dw: &mut [f32]) {
    let blocks = taps.div_ceil(NR);
    for (f, dw) in dw.chunks_exact_mut(taps).enumerate() {
        let (group, lane) = (f / LANES, f % LANES);
        for (r, dw) in dw.iter_mut().enumerate() {
            *dw += sums[((group * blocks + r / NR) * NR + r % NR) * LANES + lane];
        }
    }
}

/// Taps per block of the lanes weight gradient: 12 accumulators.
const NR: usize = 6;

/// `wide[(f / LANES · positions + q) · LANES + f % LANES] = grad[f · positions + q]`:
/// 8 × 8 register transposes, the rest one by one.
#[target_feature(enable = "avx2,fma")]
unsafe fn lanes_from_rows(grad: &[f32], filters: usize, positions: usize, wide: &mut [f32]) {
    for f0 in (0..filters).step_by(8) {
        let lanes = 8.min(filters - f0);
        let whole = if lanes == 8 { positions / 8 * 8 } else { 0 };
        let to = &mut wide[(f0 / LANES * positions * LANES) + f0 % LANES..];
        for q0 in (0..whole).step_by(8) {
            // SAFETY: reads rows f0..f0 + 8 at q0..q0 + 8, writes positions q0..q0 + 8 of lanes f0..f0 + 8.
            unsafe {
                transpose8(grad.as_ptr().add(f0 * positions + q0), positions, to.as_mut_ptr().add(q0 * LANES), LANES)
            };
        }
        for f in 0..lanes {
            for q in whole..positions {
                to[q * LANES + f] = grad[(f0 + f) * positions + q];
            }
        }
    }
}

/// NR taps × LANES filters of the weight gradient, summed over the
/// `height × width` kept positions, added to `out` tap by tap.
#[target_feature(enable = "avx2,fma")]
unsafe fn lanes_weight_block(
    g: &[f32],
    (src, cols): (&[f32], usize),
    (height, width): (usize, usize),
    offsets: [usize; NR],
    out: &mut [f32],
) {
    // SAFETY: `out` holds NR × LANES values.
    let mut acc: [[_; 2]; NR] = std::array::from_fn(|j| {
        std::array::from_fn(|v| unsafe { _mm256_loadu_ps(out.as_ptr().add(j * LANES + 8 * v)) })
    });
    for y in 0..height {
        // SAFETY (this loop): see the caller.
        unsafe {
            let (row, g) = (src.as_ptr().add(y * cols), g.as_ptr().add(y * width * LANES));
            for x in 0..width {
                let (g0, g1) = (_mm256_loadu_ps(g.add(x * LANES)), _mm256_loadu_ps(g.add(x * LANES + 8)));
                let at = row.add(x);
                for (acc, &offset) in acc.iter_mut().zip(&offsets) {
                    let v = _mm256_broadcast_ss(&*at.add(offset));
                    acc[0] = _mm256_fmadd_ps(g0, v, acc[0]);
                    acc[1] = _mm256_fmadd_ps(g1, v, acc[1]);
                }
            }
        }
    }
    for (j, acc) in acc.iter().enumerate() {
        for (v, &value) in acc.iter().enumerate() {
            // SAFETY: `out` holds NR × LANES values.
            unsafe { _mm256_storeu_ps(out.as_mut_ptr().add(j * LANES + 8 * v), value) };
        }
    }
}
