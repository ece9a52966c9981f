//! The sums behind the routines and the convolutions' bias gradients:
//! each adds its values in an order fixed by the length alone, so the
//! bits are the same on every instruction set and thread count.

use crate::kernels;

/// `out[j]` = Σ_r x[r][start + j], or with `by` Σ_r x·by (each product
/// rounded before it is added), for the columns `out` covers of rows of
/// `cols` values, the rows added in order, in this CPU's vectors: the
/// same bits on every instruction set and however the columns are split.
pub(crate) fn column_sums(x: &[f32], by: Option<&[f32]>, (cols, start): (usize, usize), out: &mut [f32]) {
    match crate::gemm::Isa::detect() {
        Some(isa) => column_sums_for(isa, x, by, cols, start, out),
        None => column_sums_with(x, by, cols, start, out),
    }
}

crate::simd::compiled_for_isa! {
    /// `column_sums_with` in the vectors of `isa`.
    pub(super) fn column_sums_for(x: &[f32], by: Option<&[f32]>, cols: usize, start: usize, out: &mut [f32]) {
        column_sums_with(x, by, cols, start, out)
    }
}

#[inline(always)]
fn column_sums_with(x: &[f32], by: Option<&[f32]>, cols: usize, start: usize, out: &mut [f32]) {
    let cols = cols.max(1);
    out.fill(0.0);
    match by {
        Some(by) => {
            for (row, by) in x.chunks_exact(cols).zip(by.chunks_exact(cols)) {
                out.iter_mut().zip(row[start..].iter().zip(&by[start..])).for_each(|(o, (&x, &y))| *o += x * y);
            }
        }
        None => {
            for row in x.chunks_exact(cols) {
                out.iter_mut().zip(&row[start..]).for_each(|(o, &x)| *o += x);
            }
        }
    }
}

/// Σ v of `values`, or with `by` Σ v·b of the pairs (`Some(values)`: the
/// sum of squares), in AVX2 where the CPU has it (32 lanes, block by
/// block like `kernels`' sums), else by `kernels`. Either way the order of
/// the additions depends only on the length, and each product is rounded
/// before it is added, as when the products are stored first.
pub(crate) fn sum(values: &[f32], by: Option<&[f32]>) -> f32 {
    assert!(by.is_none_or(|b| b.len() == values.len()));
    #[cfg(target_arch = "x86_64")]
    if is_x86_feature_detected!("avx2") {
        let blocks = values.chunks(kernels::SUM_BLOCK);
        // SAFETY (both arms): the CPU has AVX2.
        return match by {
            Some(b) => blocks
                .zip(b.chunks(kernels::SUM_BLOCK))
                .fold(0.0, |acc, (x, y)| acc + unsafe { block_sums_avx2(x, Some(y)) }[1]),
            None => blocks.fold(0.0, |acc, x| acc + unsafe { block_sums_avx2(x, None) }[0]),
        };
    }
    match by {
        Some(b) => kernels::sum_products(values, b),
        None => kernels::sum(values),
    }
}

/// `sum(values, Some(values))`, the sum of squares: on AVX-512 two whole
/// blocks at a time, each block's 32 lanes in two 16-lane registers, which
/// are the lanes of `block_sums_avx2` (so the same bits) in a quarter of
/// the instructions, without the plain sum beside them; and with twice
/// the independent chains of additions.
pub(crate) fn sum_squares(values: &[f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if is_x86_feature_detected!("avx512f") {
        let mut pairs = values.chunks_exact(2 * kernels::SUM_BLOCK);
        // SAFETY (both): the CPU has AVX-512F (and so AVX2).
        let whole = (&mut pairs).fold(0.0, |acc, pair| {
            let [first, second] = unsafe { block_pair_squares_avx512(pair) };
            acc + first + second
        });
        let rest = pairs.remainder().chunks(kernels::SUM_BLOCK);
        return rest.fold(whole, |acc, x| acc + unsafe { block_sums_avx2(x, Some(x)) }[1]);
    }
    sum(values, Some(values))
}

/// The sums of squares of two whole blocks (`pair`: 2 · `SUM_BLOCK`
/// values), interleaved, each with the bits of `block_sums_avx2`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn block_pair_squares_avx512(pair: &[f32]) -> [f32; 2] {
    use std::arch::x86_64::*;
    const BLOCK: usize = kernels::SUM_BLOCK;
    assert!(pair.len() == 2 * BLOCK && BLOCK.is_multiple_of(32));
    // Lanes 0–15 and 16–31 of each block.
    let mut acc = [[_mm512_setzero_ps(); 2]; 2];
    for start in (0..BLOCK).step_by(32) {
        for (b, block) in acc.iter_mut().enumerate() {
            for (h, lanes) in block.iter_mut().enumerate() {
                // SAFETY: the pair holds 16 values from here (asserted above).
                let x = unsafe { _mm512_loadu_ps(pair.as_ptr().add(b * BLOCK + start + 16 * h)) };
                *lanes = _mm512_add_ps(*lanes, _mm512_mul_ps(x, x));
            }
        }
    }
    // As `block_sums_avx2`'s four 8-lane accumulators: lanes 0–7, 8–15, 16–23, 24–31.
    let upper = |v: __m512| _mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(v)));
    let eights =
        |[low, high]: [__m512; 2]| [_mm512_castps512_ps256(low), upper(low), _mm512_castps512_ps256(high), upper(high)];
    [reduce_lanes(eights(acc[0]), 0.0), reduce_lanes(eights(acc[1]), 0.0)]
}

/// `sum(values, None)` and `sum(values, Some(by))` in one pass over both,
/// with the bits of each.
fn sum_pair(values: &[f32], by: &[f32]) -> [f32; 2] {
    assert_eq!(values.len(), by.len());
    #[cfg(target_arch = "x86_64")]
    if is_x86_feature_detected!("avx2") {
        let blocks = values.chunks(kernels::SUM_BLOCK).zip(by.chunks(kernels::SUM_BLOCK));
        return blocks.fold([0.0, 0.0], |[s, p], (x, y)| {
            // SAFETY: the CPU has AVX2.
            let [bs, bp] = unsafe { block_sums_avx2(x, Some(y)) };
            [s + bs, p + bp]
        });
    }
    [kernels::sum(values), kernels::sum_products(values, by)]
}

/// One block's sum in four 8-lane accumulators and, with `by`, the sum of
/// its products with `by`'s values in four more: each the bits of
/// computing it alone.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn block_sums_avx2(block: &[f32], by: Option<&[f32]>) -> [f32; 2] {
    use std::arch::x86_64::*;
    let (mut sums, mut products) = ([_mm256_setzero_ps(); 4], [_mm256_setzero_ps(); 4]);
    let whole = block.len() / 32 * 32;
    let tail: f32 = block[whole..].iter().sum();
    let product_tail: f32 = by.map_or(0.0, |b| block[whole..].iter().zip(&b[whole..]).map(|(x, y)| x * y).sum());
    for start in (0..whole).step_by(32) {
        for k in 0..4 {
            let at = start + 8 * k;
            // SAFETY: the block (and `by`, of the same length) holds 32 values from `start`.
            let x = unsafe { _mm256_loadu_ps(block.as_ptr().add(at)) };
            sums[k] = _mm256_add_ps(sums[k], x);
            if let Some(b) = by {
                // SAFETY: as above.
                let y = unsafe { _mm256_loadu_ps(b.as_ptr().add(at)) };
                products[k] = _mm256_add_ps(products[k], _mm256_mul_ps(x, y));
            }
        }
    }
    [reduce_lanes(sums, tail), reduce_lanes(products, product_tail)]
}

/// A block's 32 lanes (four 8-lane accumulators) summed as one fixed tree,
/// plus the values past the last whole 32.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn reduce_lanes(acc: [std::arch::x86_64::__m256; 4], tail: f32) -> f32 {
    use std::arch::x86_64::*;
    let v = _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]));
    let half = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
    let pairs = _mm_hadd_ps(half, half);
    _mm_cvtss_f32(_mm_hadd_ps(pairs, pairs)) + tail
}

/// Channel f's sum (see `kernels::channel_sum`), or with `by` the sum of
/// its products with `by`'s values, image by image.
pub(crate) fn channel_sum(g: &[f32], by: Option<&[f32]>, f: usize, channels: usize, spatial: usize) -> f32 {
    planes(g.len(), f, channels, spatial).fold(0.0, |acc, at| acc + sum(&g[at.clone()], by.map(|b| &b[at])))
}

/// `channel_sum` of `g` without and with `by`, in one pass: the same bits.
pub(crate) fn channel_sum_pair(g: &[f32], by: &[f32], f: usize, channels: usize, spatial: usize) -> [f32; 2] {
    planes(g.len(), f, channels, spatial).fold([0.0, 0.0], |[s, p], at| {
        let [ps, pp] = sum_pair(&g[at.clone()], &by[at]);
        [s + ps, p + pp]
    })
}

/// Every channel's `channel_sum` in one pass over the planes in the order
/// they lie: each channel's planes are still added image by image from
/// zero, so the bits are those of `channel_sum`, and the pass is one
/// stream through memory instead of a jump from image to image for every
/// channel (a first convolution's outputs, larger than the second-level
/// cache, took about twice as long channel by channel).
pub(crate) fn channel_sums_in_order(g: &[f32], by: Option<&[f32]>, out: &mut [f32], spatial: usize) {
    out.fill(0.0);
    each_plane(g.len(), out.len(), spatial, |f, at| out[f] += sum(&g[at.clone()], by.map(|b| &b[at])));
}

/// `channel_sum_pair` of every channel, in one pass as `channel_sums_in_order`.
pub(crate) fn channel_sum_pairs_in_order(
    g: &[f32],
    by: &[f32],
    sums: &mut [f32],
    products: &mut [f32],
    spatial: usize,
) {
    sums.fill(0.0);
    products.fill(0.0);
    each_plane(g.len(), sums.len(), spatial, |f, at| {
        let [s, p] = sum_pair(&g[at.clone()], &by[at]);
        sums[f] += s;
        products[f] += p;
    });
}

/// Calls `add(channel, plane)` for each plane of a `[B, channels, spatial]`
/// tensor of `len` values, in memory order.
fn each_plane(len: usize, channels: usize, spatial: usize, mut add: impl FnMut(usize, std::ops::Range<usize>)) {
    let spatial = spatial.max(1);
    for p in 0..len / spatial {
        add(p % channels.max(1), p * spatial..(p + 1) * spatial);
    }
}

/// Where channel f's planes lie in a `[B, channels, spatial]` tensor of `len` values.
fn planes(len: usize, f: usize, channels: usize, spatial: usize) -> impl Iterator<Item = std::ops::Range<usize>> {
    (f..len / spatial.max(1)).step_by(channels.max(1)).map(move |p| p * spatial..(p + 1) * spatial)
}
