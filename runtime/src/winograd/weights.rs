//! The weight gradient of a 3×3 stride-1 convolution through F(4×4, 3×3)'s
//! transforms turned around. The forward identity y = Aᵀ·[(G·w·Gᵀ) ⊙
//! (Bᵀ·d·B)]·A for a tile's 6×6 input block d holds for every w, so the
//! tile's part of dw = Σ g·d, for its 4×4 block g of the output gradient,
//! is Gᵀ·[(A·g·Aᵀ) ⊙ (Bᵀ·d·B)]·G. The sums over tiles are 36 products,
//! one per point ξ of the transform, M[ξ] (F × C) += W[ξ] (F × tiles) ·
//! V[ξ]ᵀ (tiles × C), and dw comes from M once at the end: per weight and
//! output position 36/16 = 2.25 multiply-adds, where the direct kernel
//! does 9. The tiles are gathered in a fixed order whatever the threads,
//! so the bits do not depend on them.
#![allow(unsafe_code)]

use std::cell::Cell;

use rayon::prelude::*;

use super::inputs::{Run, deinterleave4};
use super::{Plane, SPLIT, Tiling, applies, fill_planes, transform_inputs};
use crate::gemm::Isa;
use crate::kernels::Window;
use crate::products::gemm;
use crate::simd::{aligned, compiled_for_isa};

/// Tiles whose transforms are gathered, from one image or several, before
/// their products run (the products' depth): deep enough that reading and
/// writing the sums M is small beside the products, and one of `gemm`'s
/// blocks of k, so that each product runs over its panels once.
const GATHERED_TILES: usize = 256;

/// Points of F(4×4, 3×3)'s transform.
const POINTS: usize = 36;

thread_local! {
    /// The gathered tiles' transformed inputs V[c][ξ][t] and gradients
    /// W[f][ξ][t], and the sums M[ξ][f][c].
    static BUFFERS: Cell<[Vec<f32>; 3]> = const { Cell::new([Vec::new(), Vec::new(), Vec::new()]) };
}

/// Whether the weight gradient of `win` (`filters` filters) runs here
/// rather than in the direct kernel. Each call pays for writing and
/// reading the sums M (36 per weight), each gathered tile for its
/// transforms, and in short rows of tiles those run in short vector
/// loops: the transforms win where there are many tiles and either many
/// weights or long rows. The bounds are where they broke even on one
/// core of a Zen 5 EPYC: 512 channels and filters at
/// 14 × 14 from 64 tiles (4 images), 128 × 128 at 16 × 16 from 128,
/// 64 × 64 at 32 × 32 not at all (its rows 8 tiles long), 32 × 32 from
/// 112 × 112 (rows of 28 tiles). M is four times the filter's size: past
/// a million weights (1024 channels and filters) the direct kernel, which
/// keeps no such sums, takes the call.
pub fn weight_gradient_applies(win: Window, filters: usize) -> bool {
    let (tiles_high, tiles_wide) = (win.out_height().div_ceil(4), win.out_width().div_ceil(4));
    let tiles = win.batch.saturating_mul(tiles_high).saturating_mul(tiles_wide);
    let weights = filters.saturating_mul(win.channels);
    applies(win, filters)
        && tiles >= 64
        && weights <= 1024 * 1024
        && (tiles_wide >= 28 || weights >= 256 * 256 || (weights >= 128 * 128 && tiles >= 128))
}

/// dw (`[F, C, 3, 3]`) = the weight gradient summed over the images
/// (`[N, C, H, W]`) and their output gradients (`[N, F, OH, OW]`) of a
/// convolution `super::applies` takes (`weight_gradient_applies` tells
/// where that is faster than the direct kernel).
pub fn weight_gradient(images: &[f32], grads: &[f32], filters: usize, win: Window, dw: &mut [f32]) {
    let isa = Isa::detect().expect("`applies` checked the CPU");
    weight_gradient_on(isa, images, grads, filters, win, dw)
}

/// `weight_gradient` with the transforms compiled for `isa` (the products
/// are `gemm`'s, on the CPU's widest kernel).
pub(super) fn weight_gradient_on(isa: Isa, images: &[f32], grads: &[f32], filters: usize, win: Window, dw: &mut [f32]) {
    let Window { channels, height, width, .. } = win;
    let (oh, ow) = (win.out_height(), win.out_width());
    let (th, tw) = (oh.div_ceil(4), ow.div_ceil(4));
    let (image_len, grad_len) = (channels * height * width, filters * oh * ow);
    assert!(
        image_len > 0
            && images.len().is_multiple_of(image_len)
            && grads.len() == images.len() / image_len * grad_len
            && dw.len() == filters * channels * 9
    );
    let plane = Plane { step: 4, rows: 4 * th + 2, phase: tw + 1, padding: win.rows.padding, height, width };
    // Whole rows of tiles are gathered, at least one at a time.
    let capacity = GATHERED_TILES.max(tw);
    // Taken, not borrowed, while the parallel parts run (as in the forward pass).
    let mut split = SPLIT.take();
    let [mut v_buffer, mut w_buffer, mut m_buffer] = BUFFERS.take();
    // Only the gathered tiles' values are read, and each is written first.
    let v = aligned(&mut v_buffer, channels * POINTS * capacity);
    let w = aligned(&mut w_buffer, filters * POINTS * capacity);
    let m = aligned(&mut m_buffer, POINTS * filters * channels);
    let sizes = Sizes { filters, channels, capacity };
    let (mut gathered, mut summed) = (0, false);
    for (image, grad) in images.chunks_exact(image_len).zip(grads.chunks_exact(grad_len)) {
        let planes = aligned(&mut split, channels * plane.len());
        fill_planes(isa, plane, image, planes);
        let planes = &planes[..];
        let mut ty0 = 0;
        while ty0 < th {
            if capacity - gathered < tw {
                add_products(sizes, gathered, (w, v), m, summed);
                (gathered, summed) = (0, true);
            }
            let rows = ((capacity - gathered) / tw).min(th - ty0);
            let tiles = (ty0, rows, tw);
            v.par_chunks_exact_mut(POINTS * capacity).zip(planes.par_chunks_exact(plane.len())).for_each_init(
                Vec::new,
                |scratch, (v, split)| {
                    let mut points = v.chunks_exact_mut(capacity);
                    let mut outs: [&mut [f32]; POINTS] = std::array::from_fn(|_| points.next().expect("36 points"));
                    for ty in 0..rows {
                        let run = Run { row: ty0 + ty, first: 0, len: tw };
                        let out = (&mut outs[..], gathered + ty * tw);
                        transform_inputs(isa, Tiling::Four, plane, split, run, out, scratch);
                    }
                },
            );
            w.par_chunks_exact_mut(POINTS * capacity)
                .zip(grad.par_chunks_exact(oh * ow))
                .for_each_init(Vec::new, |scratch, (w, g)| {
                    transform_gradient(isa, g, (oh, ow), tiles, (&mut w[gathered..], capacity), scratch)
                });
            (gathered, ty0) = (gathered + rows * tw, ty0 + rows);
        }
    }
    if gathered > 0 {
        add_products(sizes, gathered, (w, v), m, summed);
        summed = true;
    }
    if summed {
        let m = &m[..];
        dw.par_chunks_exact_mut(channels * 9)
            .enumerate()
            .for_each_init(Vec::new, |scratch, (f, dw)| weights_of_filter(isa, m, (f, sizes), dw, scratch));
    } else {
        dw.fill(0.0);
    }
    SPLIT.set(split);
    BUFFERS.set([v_buffer, w_buffer, m_buffer]);
}

/// The shapes of the buffers: M's F × C, and the tiles V and W hold.
#[derive(Clone, Copy)]
struct Sizes {
    filters: usize,
    channels: usize,
    capacity: usize,
}

/// M[ξ] (+)= W[ξ] · V[ξ]ᵀ over the first `count` gathered tiles, one
/// product per point, side by side.
fn add_products(sizes: Sizes, count: usize, (w, v): (&[f32], &[f32]), m: &mut [f32], accumulate: bool) {
    let Sizes { filters, channels, capacity } = sizes;
    m.par_chunks_exact_mut(filters * channels).enumerate().for_each(|(xi, m)| {
        // W[ξ]: filter f's tiles POINTS · capacity apart; V[ξ]ᵀ: channel c's likewise, as columns.
        let (a, b) = (&w[xi * capacity..], &v[xi * capacity..]);
        gemm(filters, count, channels, a, (POINTS * capacity, 1), b, (1, POINTS * capacity), m, accumulate);
    });
}

compiled_for_isa! {
    /// out[ξ · stride + i] = (A·g·Aᵀ)[ξ] for the 4×4 block g of one
    /// filter's output gradient (`[OH, OW]`, zero past its edges) at each
    /// tile i of `count` rows of `tw` tiles from tile row `ty0`, numbered
    /// row by row. Each step is one loop over all the tiles: the blocks'
    /// rows are split into phases (column j of tile tx is value tx of
    /// phase j), phase j of row a of every block side by side, so short
    /// rows of tiles still run in whole vectors; `scratch` holds the
    /// phases, the rows A·g, and a row padded to whole tiles.
    fn transform_gradient(
        grad: &[f32],
        shape: (usize, usize),
        tiles: (usize, usize, usize),
        out: (&mut [f32], usize),
        scratch: &mut Vec<f32>,
    ) {
        let ((oh, ow), (ty0, count, tw), (out, stride)) = (shape, tiles, out);
        let (all, line) = (count * tw, 4 * tw);
        // Phase j of row a at (4a + j)·all, row i of A·g likewise at 4i·all.
        scratch.resize(40 * all + line, 0.0);
        let (split, rest) = scratch[..40 * all + line].split_at_mut(16 * all);
        let (combined, padded) = rest.split_at_mut(24 * all);
        padded[ow..].fill(0.0);
        for ty in 0..count {
            for a in 0..4 {
                let (y, to) = (4 * (ty0 + ty) + a, &mut split[4 * a * all + ty * tw..]);
                if y >= oh {
                    to.chunks_mut(all).take(4).for_each(|phase| phase[..tw].fill(0.0));
                    continue;
                }
                let row = &grad[y * ow..(y + 1) * ow];
                let from = if ow == line {
                    row
                } else {
                    padded[..ow].copy_from_slice(row);
                    &padded[..]
                };
                // SAFETY: this runs compiled for AVX2 or AVX-512.
                unsafe { deinterleave4(from, to, all) };
            }
        }
        let g = |a: usize| &split[4 * a * all..][..4 * all];
        let mut outs = combined.chunks_exact_mut(4 * all);
        let mut next = || outs.next().expect("six rows");
        gradient_rows([next(), next(), next(), next(), next(), next()], [g(0), g(1), g(2), g(3)]);
        for (i, row) in combined.chunks_exact(4 * all).enumerate() {
            let phase = |j: usize| &row[j * all..(j + 1) * all];
            // The last row of the last point may end short of a whole stride.
            let mut outs = out[6 * i * stride..].chunks_mut(stride).map(|o| &mut o[..all]);
            let mut next = || outs.next().expect("six rows");
            gradient_rows([next(), next(), next(), next(), next(), next()], [phase(0), phase(1), phase(2), phase(3)]);
        }
    }
}

/// out[ξ] = (A·[g0 … g3])[ξ] for F(4×4), value by value: A is the
/// transpose of the output transform Aᵀ (`super::outputs_four_rows`).
#[inline(always)]
fn gradient_rows(out: [&mut [f32]; 6], g: [&[f32]; 4]) {
    let [o0, o1, o2, o3, o4, o5] = out;
    let len = o0.len();
    let (o1, o2, o3, o4, o5) = (&mut o1[..len], &mut o2[..len], &mut o3[..len], &mut o4[..len], &mut o5[..len]);
    let [g0, g1, g2, g3] = g;
    let (g0, g1, g2, g3) = (&g0[..len], &g1[..len], &g2[..len], &g3[..len]);
    for e in 0..len {
        let (g0, g1, g2, g3) = (g0[e], g1[e], g2[e], g3[e]);
        let (even, odd) = (g0 + g2, g1 + g3);
        let (even_scaled, odd_scaled) = (g0 + 4.0 * g2, 2.0 * g1 + 8.0 * g3);
        o0[e] = g0;
        o1[e] = even + odd;
        o2[e] = even - odd;
        o3[e] = even_scaled + odd_scaled;
        o4[e] = even_scaled - odd_scaled;
        o5[e] = g3;
    }
}

compiled_for_isa! {
    /// dw[c][3u + v] = (Gᵀ·m·G)[u][v] for the 36 sums m of filter f over
    /// each channel c: M[ξ][f] is a row of C values, so each step of the
    /// transform is a loop over the channels; `scratch` holds Gᵀ·m and the
    /// nine rows of results before they are spread over dw.
    fn weights_of_filter(m: &[f32], filter: (usize, Sizes), dw: &mut [f32], scratch: &mut Vec<f32>) {
        let (f, Sizes { filters, channels, .. }) = filter;
        let row = |xi: usize| &m[(xi * filters + f) * channels..][..channels];
        scratch.resize(27 * channels, 0.0);
        // Gᵀ·m: three rows (u) of six columns (t), at 6u + t; then the results at 3u + v.
        let (half, results) = scratch[..27 * channels].split_at_mut(18 * channels);
        for t in 0..6 {
            let mut outs = half.chunks_exact_mut(6 * channels).map(|u| &mut u[t * channels..(t + 1) * channels]);
            let column = std::array::from_fn(|s| row(6 * s + t));
            weight_rows(std::array::from_fn(|_| outs.next().expect("three rows")), column);
        }
        for u in 0..3 {
            let mut outs = results[3 * u * channels..3 * (u + 1) * channels].chunks_exact_mut(channels);
            let columns = std::array::from_fn(|t| &half[(6 * u + t) * channels..][..channels]);
            weight_rows(std::array::from_fn(|_| outs.next().expect("three rows")), columns);
        }
        spread_taps(results, dw);
    }
}

/// dw[9c + k] = results[k · C + c]: the nine rows of results, one per tap,
/// spread into each channel's 3×3 taps. Kept out of the transforms'
/// AVX-512 code, where this loop became scatters that took longer than
/// the plain stores.
#[inline(never)]
fn spread_taps(results: &[f32], dw: &mut [f32]) {
    let channels = dw.len() / 9;
    for (c, dw) in dw.chunks_exact_mut(9).enumerate() {
        dw.iter_mut().enumerate().for_each(|(k, d)| *d = results[k * channels + c]);
    }
}

/// out[u] = (Gᵀ·[m0 … m5])[u] for F(4×4), value by value: Gᵀ is the
/// transpose of the filter transform G (`super::filter_rows_four`), its
/// fractions multiplications by their reciprocals as there.
#[inline(always)]
fn weight_rows(out: [&mut [f32]; 3], m: [&[f32]; 6]) {
    const SIXTH: f32 = 1.0 / 6.0;
    const TWELFTH: f32 = 1.0 / 12.0;
    const TWENTY_FOURTH: f32 = 1.0 / 24.0;
    let [o0, o1, o2] = out;
    let len = o0.len();
    let (o1, o2) = (&mut o1[..len], &mut o2[..len]);
    let [m0, m1, m2, m3, m4, m5] = m;
    let (m0, m1, m2, m3, m4, m5) = (&m0[..len], &m1[..len], &m2[..len], &m3[..len], &m4[..len], &m5[..len]);
    for e in 0..len {
        let (m0, m1, m2, m3, m4, m5) = (m0[e], m1[e], m2[e], m3[e], m4[e], m5[e]);
        let (sum12, sum34) = (m1 + m2, m3 + m4);
        o0[e] = 0.25 * m0 - sum12 * SIXTH + sum34 * TWENTY_FOURTH;
        o1[e] = (m2 - m1) * SIXTH + (m3 - m4) * TWELFTH;
        o2[e] = (sum34 - sum12) * SIXTH + m5;
    }
}
