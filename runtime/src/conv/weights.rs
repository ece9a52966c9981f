//! The weight gradient in `Layout::Rows`: dw[f, r] = Σ_q g[f, q] ·
//! src[offset(r) + q], dot products over the padded width, a block of
//! filters by a block of taps at a time, each band of positions summed
//! into dw in order (so the result does not depend on threads).

use std::arch::x86_64::{
    __m256, __m512, _mm_add_ps, _mm_cvtss_f32, _mm_hadd_ps, _mm256_castps256_ps128, _mm256_extractf128_ps,
    _mm256_fmadd_ps, _mm256_loadu_ps, _mm256_setzero_ps,
};

use rayon::prelude::*;

use super::{PARALLEL_WORK, QB, Source};
use crate::gemm::Isa;
use crate::kernels::Window;

/// Filters × taps per block of the weight gradient on AVX2: 12
/// accumulators, 3 source runs and a gradient row: the 16 registers, none
/// spilled (3 × 4 spilled one accumulator, a store and a load on its
/// every step).
const FB: usize = 4;
const TB: usize = 3;
/// The same on AVX-512: 8 filters as 4 pairs (a pair's two gradient rows
/// in the halves of one register) × 6 taps: 24 accumulators, the 4 pairs'
/// rows and a source run, in 32 registers.
const FB_512: usize = 8;
const TB_512: usize = 6;
/// The weight gradient's filters are split into this many groups.
const FILTER_GROUPS: usize = 4;
/// Positions per band: a block's sums are reduced and added to dw once a
/// band. Bands of 256 made that a fifth of VGG-16's weight gradients
/// (its 64- to 512-channel layers ran 58 to 65 GMAC/s on one core with
/// them, 65 to 81 with bands of 1,024; 2,048 gained no more).
const POSITIONS: usize = 1024;

/// Adds one image's weight gradient to `dw` in `Layout::Rows`:
/// dw[f, r] += Σ_q g[f, q] · src[offset(r) + q], with g laid out at the
/// padded width and zero in the discarded columns; `tap_offsets` holds
/// `geo.offset(r)` for every tap, `wide` and `row` are scratch.
pub(super) fn rows_weight_gradient(
    isa: Isa,
    (source, geo): (&[f32], Source),
    grad: &[f32],
    (filters, win): (usize, Window),
    (wide, row, tap_offsets): (&mut Vec<f32>, &mut Vec<f32>, &[usize]),
    dw: &mut [f32],
) {
    let (oh, ow, taps) = (win.out_height(), win.out_width(), geo.taps());
    let span = (oh * geo.cols).next_multiple_of(QB);
    let (fb, tb) = if isa == Isa::Avx512 { (FB_512, TB_512) } else { (FB, TB) };
    // The gradient at the padded width, rows padded to whole blocks of
    // filters; on AVX-512 each pair of rows interleaved in runs of 8, so
    // one load fills a register with both rows' runs, from a cache line,
    // so that no such load straddles two.
    let wide = crate::simd::aligned(wide, filters.next_multiple_of(fb) * span);
    wide.fill(0.0);
    let place = |row: &mut [f32], g: &[f32]| {
        for (y, line) in g.chunks_exact(ow).enumerate() {
            row[y * geo.cols..y * geo.cols + ow].copy_from_slice(line);
        }
    };
    if isa == Isa::Avx512 {
        // One filter's rows at a time, zero in the discarded columns.
        row.clear();
        row.resize(span, 0.0);
        for (f, g) in grad.chunks_exact(oh * ow).enumerate() {
            place(row, g);
            let pair = &mut wide[f / 2 * 2 * span..(f / 2 + 1) * 2 * span];
            for (runs, run) in pair.chunks_exact_mut(16).zip(row.chunks_exact(8)) {
                runs[f % 2 * 8..f % 2 * 8 + 8].copy_from_slice(run);
            }
        }
    } else {
        for (row, g) in wide.chunks_exact_mut(span).zip(grad.chunks_exact(oh * ow)) {
            place(row, g);
        }
    }
    assert!(tap_offsets.len() == taps && source.len() >= span + tap_offsets[taps - 1]);
    // The filters go in groups of whole blocks, each group owning its
    // rows of dw; within a group, a band's inputs serve every block
    // before the next band is read. Bands are summed in order, so the
    // result does not depend on threads.
    let blocks_per_group = filters.div_ceil(fb).div_ceil(FILTER_GROUPS);
    let run_group = |(group, dw): (usize, &mut [f32])| {
        for q0 in (0..span).step_by(POSITIONS) {
            let count = POSITIONS.min(span - q0);
            for (block, dw) in dw.chunks_mut(fb * taps).enumerate() {
                let f0 = (group * blocks_per_group + block) * fb;
                let g = &wide[f0 * span..(f0 + fb) * span];
                for r0 in (0..taps).step_by(tb) {
                    // Taps past the last read the first one's inputs; their sums are dropped.
                    let offset = |t: usize| q0 + tap_offsets[if r0 + t < taps { r0 + t } else { 0 }];
                    let dw = (&mut dw[r0..], taps, (filters - f0, taps - r0));
                    // SAFETY: the CPU runs `isa` (`applies`); `g` holds the block's
                    // rows of span values (padded to whole blocks) and every read
                    // of `source` ends below offset(last tap) + span (asserted).
                    unsafe {
                        if isa == Isa::Avx512 {
                            let offsets = std::array::from_fn(offset);
                            add_block(&weight_block_avx512(&g[2 * q0..], span, count, source, offsets), dw);
                        } else {
                            add_block(&weight_block(&g[q0..], span, count, source, std::array::from_fn(offset)), dw);
                        }
                    }
                }
            }
        }
    };
    let group_len = blocks_per_group * fb * taps;
    if filters * taps * span >= PARALLEL_WORK {
        dw.par_chunks_mut(group_len).enumerate().for_each(run_group);
    } else {
        dw.chunks_mut(group_len).enumerate().for_each(run_group);
    }
}

/// Adds a block's sums (a row per filter, a column per tap) to dw, whose
/// rows are `taps` apart, where `(filters, taps)` of them are real: the
/// rest of a block past the last filter or tap is dropped.
fn add_block<const T: usize>(sums: &[[f32; T]], (dw, stride, (filters, taps)): (&mut [f32], usize, (usize, usize))) {
    if filters >= sums.len() && taps >= T {
        // A whole block: rows of T values, which the compiler adds as vectors.
        for (i, sums) in sums.iter().enumerate() {
            let row: &mut [f32; T] = (&mut dw[i * stride..i * stride + T]).try_into().expect("T values");
            row.iter_mut().zip(sums).for_each(|(d, s)| *d += s);
        }
        return;
    }
    for (i, sums) in sums.iter().take(filters).enumerate() {
        for (d, s) in dw[i * stride..].iter_mut().zip(&sums[..T.min(taps)]) {
            *d += s;
        }
    }
}

/// FB × TB dot products, over `count` positions, of gradient rows (`span`
/// apart) with the source runs starting at `offsets`.
#[target_feature(enable = "avx2,fma")]
unsafe fn weight_block(g: &[f32], span: usize, count: usize, src: &[f32], offsets: [usize; TB]) -> [[f32; TB]; FB] {
    let mut acc = [[_mm256_setzero_ps(); TB]; FB];
    let mut x = [_mm256_setzero_ps(); TB];
    for q in (0..count).step_by(8) {
        // SAFETY: see the caller: q + 8 ≤ count, so every read is in bounds.
        unsafe {
            for t in 0..TB {
                x[t] = _mm256_loadu_ps(src.as_ptr().add(offsets[t] + q));
            }
            for (i, acc) in acc.iter_mut().enumerate() {
                let gi = _mm256_loadu_ps(g.as_ptr().add(i * span + q));
                for t in 0..TB {
                    acc[t] = _mm256_fmadd_ps(gi, x[t], acc[t]);
                }
            }
        }
    }
    let mut sums = [[0.0; TB]; FB];
    for (sums, acc) in sums.iter_mut().zip(&acc) {
        for t in 0..TB {
            sums[t] = horizontal_sum(acc[t]);
        }
    }
    sums
}

/// `weight_block` for FB_512 × TB_512 on AVX-512, from paired gradient
/// rows (each pair of rows, 2·span values, alternates runs of 8 of its
/// first and its second row; `g` from the band's first run): each 512-bit
/// accumulator holds a pair's two 8-lane accumulators, each fed the same
/// products in the same order as on AVX2 and summed in the same tree as
/// `horizontal_sum` (`sum_lanes_of_eights`), so the bits are the same.
#[target_feature(enable = "avx512f")]
unsafe fn weight_block_avx512(
    g: &[f32],
    span: usize,
    count: usize,
    src: &[f32],
    offsets: [usize; TB_512],
) -> [[f32; TB_512]; FB_512] {
    use std::arch::x86_64::{
        _mm256_castps_pd, _mm512_broadcast_f64x4, _mm512_castpd_ps, _mm512_fmadd_ps, _mm512_loadu_ps, _mm512_setzero_ps,
    };
    const PAIRS: usize = FB_512 / 2;
    let mut acc = [[_mm512_setzero_ps(); TB_512]; PAIRS];
    for q in (0..count).step_by(8) {
        // SAFETY: see the caller: q + 8 ≤ count, so every read is in bounds.
        unsafe {
            let rows: [__m512; PAIRS] = std::array::from_fn(|p| _mm512_loadu_ps(g.as_ptr().add(p * 2 * span + 2 * q)));
            for t in 0..TB_512 {
                let run = _mm256_castps_pd(_mm256_loadu_ps(src.as_ptr().add(offsets[t] + q)));
                let x = _mm512_castpd_ps(_mm512_broadcast_f64x4(run));
                for (p, acc) in acc.iter_mut().enumerate() {
                    acc[t] = _mm512_fmadd_ps(rows[p], x, acc[t]);
                }
            }
        }
    }
    let totals = sum_lanes_of_eights(acc.as_flattened());
    let mut sums = [[0.0; TB_512]; FB_512];
    for (&(filter, tap), &total) in SUM_OF_LANE.iter().zip(&totals) {
        sums[filter][tap] = total;
    }
    sums
}

/// The filter and tap whose sum `sum_lanes_of_eights` leaves in each of
/// its 48 lanes: lane 16m + 4k + e holds run 16m + 4e + k, the low (even
/// run) or high half of accumulator z = run / 2, which is pair z / TB_512's
/// at tap z % TB_512.
const SUM_OF_LANE: [(usize, usize); 48] = {
    let mut table = [(0, 0); 48];
    let mut lane = 0;
    while lane < 48 {
        let run = lane / 16 * 16 + lane % 4 * 4 + lane % 16 / 4;
        let z = run / 2;
        table[lane] = (2 * (z / TB_512) + run % 2, z % TB_512);
        lane += 1;
    }
    table
};

/// The sums of the 48 runs of 8 lanes in 24 registers (run 2z the low
/// half of register z, 2z + 1 its high half), in the order `SUM_OF_LANE`
/// gives, each summed as `horizontal_sum` does:
/// ((l0 + l4) + (l1 + l5)) + ((l2 + l6) + (l3 + l7)).
/// Three rounds of shuffles and adds serve 16 runs at once, where a
/// horizontal sum each took as long as the multiply-adds of a band.
#[target_feature(enable = "avx512f")]
fn sum_lanes_of_eights(acc: &[__m512]) -> [f32; 48] {
    use std::arch::x86_64::{_mm512_add_ps, _mm512_shuffle_f32x4, _mm512_shuffle_ps, _mm512_storeu_ps};
    assert_eq!(acc.len(), 24);
    // Blocks of 4 lanes: (l0..l3) + (l4..l7) of each run, four runs a register.
    let halves: [__m512; 12] = std::array::from_fn(|i| {
        let (x, y) = (acc[2 * i], acc[2 * i + 1]);
        _mm512_add_ps(_mm512_shuffle_f32x4::<0x88>(x, y), _mm512_shuffle_f32x4::<0xDD>(x, y))
    });
    // In each block of 4: (h0 + h1), (h2 + h3) of a run of one register, then of the next.
    let pairs: [__m512; 6] = std::array::from_fn(|j| {
        let (x, y) = (halves[2 * j], halves[2 * j + 1]);
        _mm512_add_ps(_mm512_shuffle_ps::<0x88>(x, y), _mm512_shuffle_ps::<0xDD>(x, y))
    });
    // The totals: block k, element e of round m holds run 16m + 4e + k.
    let mut lanes = [0.0f32; 48];
    for m in 0..3 {
        let (x, y) = (pairs[2 * m], pairs[2 * m + 1]);
        let totals = _mm512_add_ps(_mm512_shuffle_ps::<0x88>(x, y), _mm512_shuffle_ps::<0xDD>(x, y));
        // SAFETY: `lanes` holds 48 values, 16 from 16·m.
        unsafe { _mm512_storeu_ps(lanes.as_mut_ptr().add(16 * m), totals) };
    }
    lanes
}

#[target_feature(enable = "avx2,fma")]
fn horizontal_sum(v: __m256) -> f32 {
    let half = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
    let pairs = _mm_hadd_ps(half, half);
    _mm_cvtss_f32(_mm_hadd_ps(pairs, pairs))
}
