//! The lanes layout of the stride-1 convolutions (`Layout::Lanes`): 16
//! output rows across the vector lanes, each kept position's input
//! broadcast, so small images compute no discarded columns and no rows
//! rounded up to blocks of six.
//!
//! The kernels are written once over `Vector` and compiled for AVX2 (two
//! 8-lane registers to a position or tap, six at a time) and AVX-512 (one
//! 16-lane register, twelve at a time, or two groups of rows at once): both
//! sum every output in the same order, so they give the same bits.
//!
//! The input gradient of a small image is scattered instead (`scatter`).
#![allow(unsafe_code)]

use std::arch::x86_64::{__m256, __m512};

use rayon::prelude::*;

use super::{Crop, PARALLEL_WORK, Product, Source};
use crate::gemm::{Isa, transpose8};
use crate::simd::{Vector, aligned};

mod scatter;

pub(super) use scatter::{Scattered, lanes_input_gradient, pack_scattered_filter};

/// Output rows across the lanes in `Layout::Lanes`: two 8-lane registers.
pub(super) const LANES: usize = 16;
/// Positions per block of `Layout::Lanes` on AVX2: 12 accumulators.
pub(super) const NQ: usize = 6;
/// Positions per block on AVX-512, and taps per block of its weight
/// gradient: 12 accumulators of one register each.
pub(super) const WIDE: usize = 12;

/// Positions (or taps) per block of the lanes kernels on `isa`.
fn block_len(isa: Isa) -> usize {
    match isa {
        Isa::Avx2 => NQ,
        Isa::Avx512 => WIDE,
    }
}

/// `product` in `Layout::Lanes` on `isa`: the kept positions only, each
/// block's LANES × `block_len` sums stored position by position in `wide`,
/// then turned into rows.
pub(super) fn lanes_product(isa: Isa, p: Product, out: &mut [f32], (wide, cached): (&mut Vec<f32>, &mut Blocks)) {
    let Product { packed, rows, src, geo, crop, epilogue } = p;
    let Crop { top, left, height, width } = crop;
    let (taps, positions, nq) = (geo.taps(), height * width, block_len(isa));
    let (groups, blocks) = (rows.div_ceil(LANES), positions.div_ceil(nq));
    assert!(
        positions > 0
            && packed.len() == groups * LANES * taps
            && left + width <= geo.cols
            && src.len() > (top + height - 1) * geo.cols + left + width - 1 + geo.offset(taps - 1)
            && out.len() == rows * positions
    );
    let (group_len, block_len) = (blocks * nq * LANES, nq * LANES);
    let wide = aligned(wide, groups * group_len);
    let filter = |group: usize| &packed[group * LANES * taps..(group + 1) * LANES * taps];
    let kept = cached.of(geo, crop, nq);
    // Large products spread their blocks over the threads.
    let min_len = if groups * LANES * taps * positions >= PARALLEL_WORK { 1 } else { usize::MAX };
    // On AVX-512, groups go two at a time: each broadcast input then
    // serves two multiply-adds, and the loads no longer bound the kernel.
    let pairs = if isa == Isa::Avx512 { groups / 2 } else { 0 };
    let (paired, single) = wide.split_at_mut(pairs * 2 * group_len);
    for (pair, sums) in paired.chunks_mut(2 * group_len).enumerate() {
        let (first, second) = sums.split_at_mut(group_len);
        let filters = [filter(2 * pair), filter(2 * pair + 1)];
        let parts = first.par_chunks_mut(block_len).zip(second.par_chunks_mut(block_len));
        parts.with_min_len(min_len).enumerate().for_each(|(block, (a, b))| {
            // SAFETY: as for one group below, for each of the two.
            unsafe { lanes_pair_avx512(filters, (src, geo), kept.block(block), [a, b]) }
        });
    }
    single.par_chunks_mut(block_len).with_min_len(min_len).enumerate().for_each(|(i, part)| {
        let (group, block) = (2 * pairs + i / blocks, i % blocks);
        // SAFETY: `isa` runs on this CPU (`applies`, `Isa::detect`);
        // `filter` holds LANES values per tap; every base + offset is at
        // most the last kept position's plus offset(last tap), within src
        // (asserted); `part` holds nq × LANES values.
        unsafe {
            match isa {
                Isa::Avx2 => lanes_block_avx2([filter(group)], (src, geo), kept.block(block), [part]),
                Isa::Avx512 => lanes_block_avx512([filter(group)], (src, geo), kept.block(block), [part]),
            }
        }
    });
    // SAFETY: the CPU has AVX2 (`applies`); `wide` holds `groups` runs of
    // `blocks` × nq positions of LANES sums, and `out` rows × positions values (asserted).
    unsafe { rows_from_lanes(wide, blocks * nq, (rows, positions), out, positions) };
    if epilogue.bias.is_some() || epilogue.relu {
        for (m, row) in out.chunks_exact_mut(positions).enumerate() {
            let value = epilogue.of(m);
            row.iter_mut().for_each(|v| *v = value(*v));
        }
    }
}

/// out[m·ld + p] = the sum of output row m at position p, from `wide` where
/// each group of LANES rows holds its sums position by position (`stride`
/// positions a group): 8 × 8 register transposes, the rest one by one.
/// Both halves of a group's lanes go one after the other for each eight
/// positions, so each cache line of `wide` is read once.
#[target_feature(enable = "avx2,fma")]
unsafe fn rows_from_lanes(wide: &[f32], stride: usize, (rows, positions): (usize, usize), out: &mut [f32], ld: usize) {
    for g0 in (0..rows).step_by(LANES) {
        let sums = &wide[g0 / LANES * stride * LANES..];
        // The halves of eight lanes, in full.
        let halves = (rows - g0).min(LANES) / 8;
        let whole = if halves > 0 { positions / 8 * 8 } else { 0 };
        for p0 in (0..whole).step_by(8) {
            for h in 0..halves {
                // SAFETY: reads positions p0..p0 + 8 of lanes 8h..8h + 8,
                // writes rows g0 + 8h.. of 8 at p0..p0 + 8.
                unsafe {
                    transpose8(
                        sums.as_ptr().add(p0 * LANES + 8 * h),
                        LANES,
                        out.as_mut_ptr().add((g0 + 8 * h) * ld + p0),
                        ld,
                    )
                };
            }
        }
        for m in 0..(rows - g0).min(LANES) {
            let first = if m < 8 * halves { whole } else { 0 };
            for p in first..positions {
                out[(g0 + m) * ld + p] = sums[p * LANES + m];
            }
        }
    }
}

/// N consecutive kept positions of a product: where each reads its first
/// tap, and the kernel rows that land in filled source rows for some of
/// them (the others land in rows of zeros for every position).
struct Block<const N: usize> {
    bases: [usize; N],
    kernel_rows: std::ops::Range<usize>,
}

/// Every block of a product's kept positions, kept from image to image
/// (each image of a batch has the same): with few taps (one channel), a
/// block's work is short enough that computing its bases showed.
#[derive(Default)]
pub(super) struct Blocks {
    /// The geometry, crop and block length they were computed for.
    of: Option<(Source, Crop, usize)>,
    bases: Vec<usize>,
    kernel_rows: Vec<std::ops::Range<usize>>,
}

impl Blocks {
    /// The blocks of `n` positions of `crop` from `geo`, computed unless
    /// they were the last. The bases are walked along the output rows; a
    /// last block's extra positions repeat the last.
    fn of(&mut self, geo: Source, crop: Crop, n: usize) -> &Blocks {
        if self.of == Some((geo, crop, n)) {
            return self;
        }
        let Crop { top, left, height, width } = crop;
        let positions = height * width;
        self.bases.clear();
        self.kernel_rows.clear();
        let (mut y, mut x) = (0, 0);
        for first_position in (0..positions).step_by(n) {
            let first = top + y;
            let last_position = (first_position + n - 1).min(positions - 1);
            for q in first_position..first_position + n {
                self.bases.push((top + y) * geo.cols + left + x);
                if q < last_position {
                    x += 1;
                    if x == width {
                        (y, x) = (y + 1, 0);
                    }
                }
            }
            let (last, d) = (top + y, geo.dilation);
            let lowest = geo.filled.0.saturating_sub(last).div_ceil(d);
            let end = geo.kernel.min((geo.filled.1 + d).saturating_sub(first + 1) / d);
            self.kernel_rows.push(lowest..end);
            // The next block starts one past this one's last position.
            x += 1;
            if x == width {
                (y, x) = (y + 1, 0);
            }
        }
        self.of = Some((geo, crop, n));
        self
    }

    /// Block `index`, of N positions (the length they were computed for).
    fn block<const N: usize>(&self, index: usize) -> Block<N> {
        let bases = &self.bases[index * N..(index + 1) * N];
        Block { bases: std::array::from_fn(|j| bases[j]), kernel_rows: self.kernel_rows[index].clone() }
    }
}

#[target_feature(enable = "avx2,fma")]
unsafe fn lanes_block_avx2(filter: [&[f32]; 1], src: (&[f32], Source), block: Block<NQ>, out: [&mut [f32]; 1]) {
    // SAFETY: the caller's contract.
    unsafe { lanes_block::<__m256, NQ, 1>(filter, src, block, out) }
}

#[target_feature(enable = "avx512f")]
unsafe fn lanes_block_avx512(filter: [&[f32]; 1], src: (&[f32], Source), block: Block<WIDE>, out: [&mut [f32]; 1]) {
    // SAFETY: the caller's contract.
    unsafe { lanes_block::<__m512, WIDE, 1>(filter, src, block, out) }
}

#[target_feature(enable = "avx512f")]
unsafe fn lanes_pair_avx512(filters: [&[f32]; 2], src: (&[f32], Source), block: Block<WIDE>, out: [&mut [f32]; 2]) {
    // SAFETY: the caller's contract.
    unsafe { lanes_block::<__m512, WIDE, 2>(filters, src, block, out) }
}

/// One block of `Layout::Lanes` for G groups of LANES output rows (two
/// registers a position in all: two groups of one, or one of two): for
/// its N positions, the sums over the taps, written to each group's `out`
/// position by position. Every output sums its taps in the same order
/// whatever G.
///
/// # Safety
/// `V`'s instructions run on this CPU; each filter holds LANES values per
/// tap, each `out` N × LANES; every base plus offset(last tap) lies within `src`.
#[inline(always)]
unsafe fn lanes_block<V: Vector, const N: usize, const G: usize>(
    filters: [&[f32]; G],
    (src, geo): (&[f32], Source),
    block: Block<N>,
    out: [&mut [f32]; G],
) {
    let per = LANES / V::LANES;
    // Register r holds lanes (r % per)·V::LANES.. of group r / per.
    let registers = G * per;
    // SAFETY (this function): the caller's contract.
    unsafe {
        let mut acc = [[V::zero(); 2]; N];
        let (k, d) = (geo.kernel, geo.dilation);
        let at = block.bases.map(|b| src.as_ptr().add(b));
        for c in 0..geo.planes {
            for ky in block.kernel_rows.clone() {
                let row = c * geo.plane() + ky * d * geo.cols;
                let first = (c * k + ky) * k * LANES;
                for kx in 0..k {
                    let w = |r: usize| filters[r / per].as_ptr().add(first + kx * LANES + r % per * V::LANES);
                    let ws = [V::load(w(0)), if registers == 2 { V::load(w(1)) } else { V::zero() }];
                    for (acc, at) in acc.iter_mut().zip(at) {
                        let x = V::splat(*at.add(row + kx * d));
                        for r in 0..registers {
                            acc[r] = V::fmadd(ws[r], x, acc[r]);
                        }
                    }
                }
            }
        }
        for (i, acc) in acc.iter().enumerate() {
            for (r, &value) in acc.iter().take(registers).enumerate() {
                V::store(out[r / per].as_mut_ptr().add(i * LANES + r % per * V::LANES), value);
            }
        }
    }
}

/// Shorter blocks of the lanes weight gradient's taps, on AVX2 and AVX-512.
const SHORT_NQ: usize = 5;
const SHORT_WIDE: usize = 9;

/// Taps per block of the lanes weight gradient on `isa` for `taps` taps:
/// `block_len`'s, or shorter blocks where they leave a tenth fewer taps
/// computed and dropped (a 5 × 5 kernel on one channel: 27 in blocks of 9
/// against 36 in blocks of 12).
fn weight_block_len(isa: Isa, taps: usize) -> usize {
    let (long, short) = match isa {
        Isa::Avx2 => (NQ, SHORT_NQ),
        Isa::Avx512 => (WIDE, SHORT_WIDE),
    };
    if 10 * taps.next_multiple_of(short) < 9 * taps.next_multiple_of(long) { short } else { long }
}

/// The length of the sums `lanes_weight_sums` adds to on `isa`, for
/// `filters` filters of `taps` taps.
pub(super) fn lanes_weight_sums_len(isa: Isa, filters: usize, taps: usize) -> usize {
    filters.div_ceil(LANES) * taps.next_multiple_of(weight_block_len(isa, taps)) * LANES
}

/// Where each tap of the lanes weight gradient reads, from a position's
/// base, in whole blocks of `weight_block_len` taps: the same for every image.
/// Taps past the last read the first one's inputs; their sums are dropped.
pub(super) fn lanes_weight_offsets(isa: Isa, geo: Source, offsets: &mut Vec<usize>) {
    let (taps, nr) = (geo.taps(), weight_block_len(isa, geo.taps()));
    offsets.clear();
    offsets.extend((0..taps.next_multiple_of(nr)).map(|r| geo.offset(if r < taps { r } else { 0 })));
}

/// The weight gradient in `Layout::Lanes` on `isa`, for one image: adds
/// Σ_q g[f, q] · src[offset(r) + base(q)] over the kept positions q to
/// `sums`, with LANES filters across the lanes and `block_len` taps at a
/// time (`lanes_weight_reduce` then adds them to dw). Each sum is one
/// chain over the images and their positions in order, whatever the
/// threads and the instruction set.
pub(super) fn lanes_weight_sums(
    isa: Isa,
    (src, geo): (&[f32], Source),
    (height, width): (usize, usize),
    grad: &[f32],
    filters: usize,
    (wide, offsets): (&mut Vec<f32>, &[usize]),
    sums: &mut [f32],
) {
    let (taps, positions, nr) = (geo.taps(), height * width, weight_block_len(isa, geo.taps()));
    let (groups, blocks) = (filters.div_ceil(LANES), taps.div_ceil(nr));
    assert!(
        positions > 0
            && grad.len() == filters * positions
            && sums.len() == lanes_weight_sums_len(isa, filters, taps)
            && offsets.len() == blocks * nr
            && width <= geo.cols
            && src.len() > (height - 1) * geo.cols + width - 1 + geo.offset(taps - 1)
    );
    // The gradient position by position, LANES filters to a position (the
    // lanes past the last filter keep what they held: their sums are dropped).
    let wide = aligned(wide, groups * positions * LANES);
    // SAFETY: the CPU has AVX2 (`applies`); the sizes are as asserted and resized.
    unsafe { lanes_from_rows(grad, filters, positions, wide) };
    let wide = &wide[..];
    let run_block = |(i, out): (usize, &mut [f32])| {
        let (group, block) = (i / blocks, i % blocks);
        let g = &wide[group * positions * LANES..(group + 1) * positions * LANES];
        let offsets = &offsets[block * nr..(block + 1) * nr];
        let kept = (height, width);
        // SAFETY: `isa` runs on this CPU; `g` holds LANES values per
        // position; every read of `src` is at most the last position's
        // base plus offset(last tap) (asserted); `out` holds nr × LANES.
        unsafe {
            let src = (src, geo.cols);
            match (isa, nr) {
                (Isa::Avx2, NQ) => lanes_weight_block_avx2::<NQ>(g, src, kept, offsets.try_into().unwrap(), out),
                (Isa::Avx2, _) => lanes_weight_block_avx2::<SHORT_NQ>(g, src, kept, offsets.try_into().unwrap(), out),
                (Isa::Avx512, WIDE) => {
                    lanes_weight_block_avx512::<WIDE>(g, src, kept, offsets.try_into().unwrap(), out)
                }
                (Isa::Avx512, _) => {
                    lanes_weight_block_avx512::<SHORT_WIDE>(g, src, kept, offsets.try_into().unwrap(), out)
                }
            }
        }
    };
    if groups * LANES * taps * positions >= PARALLEL_WORK {
        sums.par_chunks_mut(nr * LANES).enumerate().for_each(run_block);
    } else {
        sums.chunks_mut(nr * LANES).enumerate().for_each(run_block);
    }
}

/// dw[f, r] += the sum `lanes_weight_sums` gathered on `isa` for filter f and tap r.
pub(super) fn lanes_weight_reduce(isa: Isa, sums: &[f32], taps: usize, dw: &mut [f32]) {
    // A group's taps are its blocks' taps in order, LANES filters to a tap.
    let group_taps = taps.next_multiple_of(weight_block_len(isa, taps));
    for (f, dw) in dw.chunks_exact_mut(taps).enumerate() {
        let sums = &sums[f / LANES * group_taps * LANES + f % LANES..];
        for (r, dw) in dw.iter_mut().enumerate() {
            *dw += sums[r * LANES];
        }
    }
}

/// `wide[(f / LANES · positions + q) · LANES + f % LANES] = grad[f · positions + q]`:
/// 8 × 8 register transposes, the rest one by one. Both halves of a
/// group's lanes go one after the other for each eight positions, so each
/// cache line of `wide` is written at once.
#[target_feature(enable = "avx2,fma")]
unsafe fn lanes_from_rows(grad: &[f32], filters: usize, positions: usize, wide: &mut [f32]) {
    for g0 in (0..filters).step_by(LANES) {
        let halves = (filters - g0).min(LANES) / 8;
        let whole = if halves > 0 { positions / 8 * 8 } else { 0 };
        let to = &mut wide[g0 / LANES * positions * LANES..];
        for q0 in (0..whole).step_by(8) {
            for h in 0..halves {
                let f0 = g0 + 8 * h;
                // SAFETY: reads rows f0..f0 + 8 at q0..q0 + 8, writes
                // positions q0..q0 + 8 of lanes 8h..8h + 8.
                unsafe {
                    transpose8(
                        grad.as_ptr().add(f0 * positions + q0),
                        positions,
                        to.as_mut_ptr().add(q0 * LANES + 8 * h),
                        LANES,
                    )
                };
            }
        }
        for f in 0..(filters - g0).min(LANES) {
            let first = if f < 8 * halves { whole } else { 0 };
            for q in first..positions {
                to[q * LANES + f] = grad[(g0 + f) * positions + q];
            }
        }
    }
}

#[target_feature(enable = "avx2,fma")]
unsafe fn lanes_weight_block_avx2<const N: usize>(
    g: &[f32],
    src: (&[f32], usize),
    kept: (usize, usize),
    offsets: [usize; N],
    out: &mut [f32],
) {
    // SAFETY: the caller's contract.
    unsafe { lanes_weight_block::<__m256, N>(g, src, kept, offsets, out) }
}

#[target_feature(enable = "avx512f")]
unsafe fn lanes_weight_block_avx512<const N: usize>(
    g: &[f32],
    src: (&[f32], usize),
    kept: (usize, usize),
    offsets: [usize; N],
    out: &mut [f32],
) {
    // SAFETY: the caller's contract.
    unsafe { lanes_weight_block::<__m512, N>(g, src, kept, offsets, out) }
}

/// N taps × LANES filters of the weight gradient, summed over the
/// `height × width` kept positions, added to `out` tap by tap.
///
/// # Safety
/// `V`'s instructions run on this CPU; `g` holds LANES values per position,
/// `out` N × LANES; every position's base plus each offset lies within `src`.
#[inline(always)]
unsafe fn lanes_weight_block<V: Vector, const N: usize>(
    g: &[f32],
    (src, cols): (&[f32], usize),
    (height, width): (usize, usize),
    offsets: [usize; N],
    out: &mut [f32],
) {
    let per = LANES / V::LANES;
    // SAFETY (this function): the caller's contract.
    unsafe {
        let mut acc: [[V; 2]; N] = std::array::from_fn(|j| {
            std::array::from_fn(
                |v| if v < per { V::load(out.as_ptr().add(j * LANES + v * V::LANES)) } else { V::zero() },
            )
        });
        for y in 0..height {
            let (row, g) = (src.as_ptr().add(y * cols), g.as_ptr().add(y * width * LANES));
            for x in 0..width {
                let g = g.add(x * LANES);
                let gs = [V::load(g), if per == 2 { V::load(g.add(V::LANES)) } else { V::zero() }];
                let at = row.add(x);
                for (acc, &offset) in acc.iter_mut().zip(&offsets) {
                    let value = V::splat(*at.add(offset));
                    for v in 0..per {
                        acc[v] = V::fmadd(gs[v], value, acc[v]);
                    }
                }
            }
        }
        for (j, acc) in acc.iter().enumerate() {
            for (v, &value) in acc.iter().take(per).enumerate() {
                V::store(out.as_mut_ptr().add(j * LANES + v * V::LANES), value);
            }
        }
    }
}
