//! The scattered input gradient of a small image (`lanes_input_gradient`):
//! each output position's gradient goes to the inputs it read, so no tap
//! reads the padding's zeros. Its sums run in another order than the
//! gathered product's, the same on both instruction sets.

use std::arch::x86_64::{__m256, __m512};

use rayon::prelude::*;

use super::{LANES, WIDE, rows_from_lanes};
use crate::conv::PARALLEL_WORK;
use crate::gemm::Isa;
use crate::kernels::Window;
use crate::simd::{Vector, aligned};

/// Packs the filter `w` (`[F, C, k, k]`) for `lanes_input_gradient`: for
/// each group of LANES channels, tap by tap, filter by filter, the group's
/// values across the lanes (zero past the last channel).
pub(in crate::conv) fn pack_scattered_filter<'a>(
    w: &[f32],
    filters: usize,
    (channels, area): (usize, usize),
    out: &'a mut Vec<f32>,
) -> &'a [f32] {
    let groups = channels.div_ceil(LANES);
    let packed = aligned(out, groups * area * filters * LANES);
    for (i, lanes) in packed.chunks_exact_mut(LANES).enumerate() {
        let (group, tap, f) = (i / (area * filters), i / filters % area, i % filters);
        for (lane, value) in lanes.iter_mut().enumerate() {
            let c = group * LANES + lane;
            *value = if c < channels { w[(f * channels + c) * area + tap] } else { 0.0 };
        }
    }
    packed
}

/// Positions per block of the scattered input gradient on AVX2: two taps
/// of 2 × 8 lanes for three positions fill 12 of its 16 registers (on
/// AVX-512, `WIDE` positions take 24 of 32).
const SCATTER_NQ: usize = 3;

/// Positions per block of `lanes_input_gradient` on `isa`.
fn scatter_block_len(isa: Isa) -> usize {
    match isa {
        Isa::Avx2 => SCATTER_NQ,
        Isa::Avx512 => WIDE,
    }
}

/// Buffers of `lanes_input_gradient`, reused from image to image.
#[derive(Default)]
pub(in crate::conv) struct Scattered {
    /// The output gradient, each filter's row padded to whole blocks.
    grad: Vec<f32>,
    /// Where each position's sums land for the first tap (spare ones for
    /// the last block's positions past the last).
    bases: Vec<usize>,
    /// The input gradient over the padded plane and some spare positions,
    /// LANES channels to a position.
    sums: Vec<f32>,
}

/// One image's input gradient `[C, H, W]` from its output gradient
/// `[F, OH, OW]`, with `packed` from `pack_scattered_filter`: each output
/// position's gradient scattered to the inputs it read, tap by tap. Only
/// the taps that read inside the image are computed (the gathered form
/// reads the padded output gradient, mostly zeros on small images). Each
/// input sums its taps in order, each tap's Σ over filters one chain: the
/// same bits whatever the block length, the instruction set or the threads.
pub(in crate::conv) fn lanes_input_gradient(
    isa: Isa,
    packed: &[f32],
    grad: &[f32],
    (win, filters): (Window, usize),
    buffers: &mut Scattered,
    dx: &mut [f32],
) {
    let (k, p, d) = (win.rows.kernel, win.rows.padding, win.rows.dilation);
    let (oh, ow, positions) = (win.out_height(), win.out_width(), win.out_height() * win.out_width());
    let (channels, area, nq) = (win.channels, k * k, scatter_block_len(isa));
    let (rows, cols) = (win.height + 2 * p, win.width + 2 * p);
    let groups = channels.div_ceil(LANES);
    assert!(
        dx.len() == channels * win.height * win.width
            && grad.len() == filters * positions
            && packed.len() == groups * area * filters * LANES
            && oh + d * (k - 1) == rows
            && ow + d * (k - 1) == cols
    );
    let slots = positions.next_multiple_of(nq);
    let g = aligned(&mut buffers.grad, filters * slots);
    for (padded, row) in g.chunks_exact_mut(slots).zip(grad.chunks_exact(positions.max(1))) {
        padded[..positions].copy_from_slice(row);
        padded[positions..].fill(0.0);
    }
    let g = &g[..];
    let offset = |tap: usize| d * (tap / k * cols + tap % k);
    // The last block's positions past the last output land in spare
    // positions after the padded plane (their gradients are zeros).
    let stride = rows * cols + offset(area - 1) + 1;
    buffers.bases.clear();
    buffers.bases.extend((0..slots).map(|q| if q < positions { q / ow * cols + q % ow } else { rows * cols }));
    let bases = &buffers.bases[..];
    let plane = stride * LANES;
    let sums = aligned(&mut buffers.sums, groups * plane);
    let run_group = |(group, sums): (usize, &mut [f32])| {
        sums.fill(0.0);
        for first in (0..area).step_by(2) {
            let offsets = [offset(first), offset(first + 1)];
            let offsets = &offsets[..2.min(area - first)];
            let w = &packed[(group * area + first) * filters * LANES..][..offsets.len() * filters * LANES];
            // SAFETY: `isa` runs on this CPU; `w` holds LANES values per
            // filter and tap, `g` `slots` per filter, `bases` `slots`; every
            // base plus an offset is a position of the padded plane or a
            // spare one, which `sums` holds.
            unsafe { scatter_taps(isa, w, (g, slots), bases, (sums, offsets)) };
        }
    };
    if groups > 1 && groups * LANES * area * filters * positions >= PARALLEL_WORK {
        sums.par_chunks_mut(plane).enumerate().for_each(run_group);
    } else {
        sums.chunks_mut(plane).enumerate().for_each(run_group);
    }
    // dx[c, y, x] = the sum at the padded plane's (y + p, x + p).
    let (height, width) = (win.height, win.width);
    for y in 0..height {
        let (line, ld) = (&sums[((y + p) * cols + p) * LANES..], height * width);
        // SAFETY: the CPU has AVX2 (`applies`); `line` holds `width`
        // positions of each group, `plane` apart, and dx `channels` rows
        // of `ld` from row y's first value.
        unsafe { rows_from_lanes(line, stride, (channels, width), &mut dx[y * width..], ld) };
    }
}

/// `scatter_block` over every block of positions, for the one or two taps
/// `w` holds (at `offsets` from a base), in the vectors of `isa`. The
/// positions add their sums last to first (blocks, and positions within
/// one): an input's second tap comes from an earlier position than its
/// first, so each input still sums its taps in order, whatever the block
/// length.
///
/// # Safety
/// As `scatter_block`, with `isa` one this CPU runs.
unsafe fn scatter_taps(
    isa: Isa,
    w: &[f32],
    g: (&[f32], usize),
    bases: &[usize],
    (sums, offsets): (&mut [f32], &[usize]),
) {
    #[target_feature(enable = "avx2,fma")]
    unsafe fn avx2<const T: usize>(w: &[f32], g: (&[f32], usize), bases: &[usize], sums: (&mut [f32], &[usize])) {
        // SAFETY: the caller's contract.
        unsafe { scatter_blocks::<__m256, SCATTER_NQ, T, 2>(w, g, bases, sums) }
    }
    #[target_feature(enable = "avx512f")]
    unsafe fn avx512<const T: usize>(w: &[f32], g: (&[f32], usize), bases: &[usize], sums: (&mut [f32], &[usize])) {
        // SAFETY: the caller's contract.
        unsafe { scatter_blocks::<__m512, WIDE, T, 1>(w, g, bases, sums) }
    }
    let two = offsets.len() == 2;
    // SAFETY: the caller's contract.
    unsafe {
        match (isa, two) {
            (Isa::Avx2, true) => avx2::<2>(w, g, bases, (sums, offsets)),
            (Isa::Avx2, false) => avx2::<1>(w, g, bases, (sums, offsets)),
            (Isa::Avx512, true) => avx512::<2>(w, g, bases, (sums, offsets)),
            (Isa::Avx512, false) => avx512::<1>(w, g, bases, (sums, offsets)),
        }
    }
}

/// Every block of N positions for T taps, last to first (`scatter_taps`),
/// each position's LANES sums in P vectors.
///
/// # Safety
/// As `scatter_block`.
#[inline(always)]
unsafe fn scatter_blocks<V: Vector, const N: usize, const T: usize, const P: usize>(
    w: &[f32],
    g: (&[f32], usize),
    bases: &[usize],
    (sums, offsets): (&mut [f32], &[usize]),
) {
    let (blocks, []) = bases.as_chunks::<N>() else { panic!("the bases fill whole blocks") };
    for block in blocks.iter().enumerate().rev() {
        // SAFETY: the caller's contract.
        unsafe { scatter_block::<V, N, T, P>(w, g, block, (&mut *sums, offsets)) }
    }
}

/// One block of N positions (from position `block · N`) for T taps: each
/// position's Σ over filters of a tap's values times its gradient, added
/// to its sums at its base plus the tap's offset, last position first,
/// first tap first. One broadcast of a gradient value serves both taps.
/// P vectors hold a position's LANES sums. Every block has N bases (the
/// last padded with spare ones) and its accumulators are exactly those
/// used: so they stay in registers (with spare accumulators, or fewer
/// bases in the last block, the compiler kept them in an array on the
/// stack, zeroed for every block).
///
/// # Safety
/// `V`'s instructions run on this CPU; `w` holds LANES values per filter
/// and tap; `g` rows of `slots` (the positions, rounded up to N) per
/// filter; `bases` N positions; every base plus each offset is a position
/// of `sums`.
#[inline(always)]
unsafe fn scatter_block<V: Vector, const N: usize, const T: usize, const P: usize>(
    w: &[f32],
    (g, slots): (&[f32], usize),
    (block, bases): (usize, &[usize; N]),
    (sums, offsets): (&mut [f32], &[usize]),
) {
    assert_eq!(P * V::LANES, LANES);
    let filters = w.len() / (T * LANES);
    // SAFETY (this function): the caller's contract.
    unsafe {
        let mut acc = [[[V::zero(); P]; T]; N];
        let at = g.as_ptr().add(block * N);
        for f in 0..filters {
            let ws: [[V; P]; T] = std::array::from_fn(|t| {
                let wf = w.as_ptr().add((t * filters + f) * LANES);
                std::array::from_fn(|v| V::load(wf.add(v * V::LANES)))
            });
            let at = at.add(f * slots);
            for (j, acc) in acc.iter_mut().enumerate() {
                let x = V::splat(*at.add(j));
                for (acc, ws) in acc.iter_mut().zip(&ws) {
                    for (acc, &w) in acc.iter_mut().zip(ws) {
                        *acc = V::fmadd(w, x, *acc);
                    }
                }
            }
        }
        for (acc, &base) in acc.iter().zip(bases).rev() {
            for (acc, &offset) in acc.iter().zip(offsets) {
                let to = sums.as_mut_ptr().add((base + offset) * LANES);
                for (v, &value) in acc.iter().enumerate() {
                    let to = to.add(v * V::LANES);
                    V::store(to, V::add(V::load(to), value));
                }
            }
        }
    }
}
