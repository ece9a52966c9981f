//! 3×3 stride-1 convolutions by Winograd's minimal filtering F(2×2, 3×3)
//! (Lavin and Gray, "Fast Algorithms for Convolutional Neural Networks").
//!
//! Each 2×2 block (tile) of outputs comes from a 4×4 block of inputs: the
//! filter and the input block are each transformed into 4×4 values, their
//! 16 products summed over the channels, and the sums transformed back. The
//! sums over channels are 16 matrix products, one per point ξ of the 4×4
//! transform: M[ξ] (F × tiles) = U[ξ] (F × C) · V[ξ] (C × tiles), run by
//! `gemm`. That is 16 multiply-adds per tile and channel where the direct
//! kernel does 36: 2.25 times fewer, for the cost of the transforms, which
//! is small beside the products when both C and F are large (VGG's layers).
//! The results differ from the direct kernel's by rounding only, and do not
//! depend on the number of threads.
#![allow(unsafe_code)]

use std::cell::{Cell, RefCell};

use rayon::prelude::*;

use crate::gemm::Isa;
use crate::kernels::{Epilogue, Window};
use crate::products::gemm;
use crate::simd::compiled_for_isa;

/// Channels and filters from which the products are large enough to pay
/// for the transforms.
const MIN_CHANNELS: usize = 32;
/// About how many tiles a block of the products takes (whole rows of
/// tiles): its transformed inputs and sums stay in the caches.
const BLOCK_TILES: usize = 96;
/// Blocks per thread from which an image's blocks run side by side rather
/// than in turn (enough to share them out evenly).
const BLOCKS_PER_THREAD: usize = 4;

/// Whether the forward convolution `win` with `filters` filters runs here.
pub fn applies(win: Window, filters: usize) -> bool {
    let three = |t: crate::kernels::Taps| t.kernel == 3 && t.stride == 1 && t.dilation == 1;
    three(win.rows)
        && three(win.cols)
        && win.channels >= MIN_CHANNELS
        && filters >= MIN_CHANNELS
        && win.out_height() > 0
        && win.out_width() > 0
        && Isa::detect().is_some()
}

thread_local! {
    /// The transformed filter, on the calling thread.
    static FILTER: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
    /// One image's split input planes.
    static SPLIT: Cell<Vec<f32>> = const { Cell::new(Vec::new()) };
    /// A block's transformed inputs and its sums.
    static BLOCK: Cell<(Vec<f32>, Vec<f32>)> = const { Cell::new((Vec::new(), Vec::new())) };
}

/// Runs `work` with the filter `w` (`[F, C, 3, 3]`) transformed:
/// U[ξ][f][c] = (G·g·Gᵀ)[ξ] for the 3×3 filter g of f over channel c.
pub fn with_filter<R>(w: &[f32], filters: usize, win: Window, work: impl FnOnce(&[f32]) -> R) -> R {
    let channels = win.channels;
    assert_eq!(w.len(), filters * channels * 9);
    FILTER.with(|cell| {
        let mut u = cell.borrow_mut();
        // Every value is written below, so the old ones need no clearing.
        u.resize(16 * filters * channels, 0.0);
        // Chunks of the 3×3 filters run in parallel, each writing its part of the 16 rows U[ξ].
        let n = filters * channels;
        let mut parts: Vec<Vec<&mut [f32]>> = (0..n.div_ceil(FILTER_CHUNK)).map(|_| Vec::with_capacity(16)).collect();
        for row in u[..16 * n].chunks_exact_mut(n) {
            for (part, chunk) in parts.iter_mut().zip(row.chunks_mut(FILTER_CHUNK)) {
                part.push(chunk);
            }
        }
        parts.into_par_iter().enumerate().for_each(|(k, mut rows)| {
            let len = rows[0].len();
            transform_filters(&w[k * FILTER_CHUNK * 9..][..len * 9], &mut rows);
        });
        work(&u[..16 * n])
    })
}

/// 3×3 filters transformed per parallel task.
const FILTER_CHUNK: usize = 4096;
/// 3×3 filters transformed together, their taps side by side so that each
/// step of the transform is a vector loop over them.
const FILTER_GROUP: usize = 64;

/// rows[ξ][k] = (G·g·Gᵀ)[ξ] for each 3×3 filter g = w[9k..9k + 9] (row-major).
fn transform_filters(w: &[f32], rows: &mut [&mut [f32]]) {
    for (group, w) in w.chunks(9 * FILTER_GROUP).enumerate() {
        let (start, len) = (group * FILTER_GROUP, w.len() / 9);
        // taps[3r + c][k]: the tap at row r and column c of filter k.
        let mut taps = [[0.0f32; FILTER_GROUP]; 9];
        for (k, g) in w.chunks_exact(9).enumerate() {
            for (tap, &value) in taps.iter_mut().zip(g) {
                tap[k] = value;
            }
        }
        // G·g: the rows g0, (g0 + g1 + g2)/2, (g0 − g1 + g2)/2 and g2, each of three columns.
        let mut halves = [[[0.0f32; FILTER_GROUP]; 3]; 2];
        for c in 0..3 {
            let (g0, g1, g2) = (&taps[c], &taps[3 + c], &taps[6 + c]);
            combine3(&mut halves[0][c], g0, g1, g2, |a, b, c| 0.5 * (a + b + c));
            combine3(&mut halves[1][c], g0, g1, g2, |a, b, c| 0.5 * (a - b + c));
        }
        let gg: [[&[f32; FILTER_GROUP]; 3]; 4] = [
            [&taps[0], &taps[1], &taps[2]],
            halves[0].each_ref(),
            halves[1].each_ref(),
            [&taps[6], &taps[7], &taps[8]],
        ];
        // (G·g)·Gᵀ: each row's a, (a + b + c)/2, (a − b + c)/2 and c.
        for (i, [a, b, c]) in gg.into_iter().enumerate() {
            let (a, b, c) = (&a[..len], &b[..len], &c[..len]);
            let [o0, o1, o2, o3]: &mut [&mut [f32]; 4] = (&mut rows[4 * i..4 * i + 4]).try_into().expect("16 rows");
            o0[start..start + len].copy_from_slice(a);
            combine3(&mut o1[start..start + len], a, b, c, |a, b, c| 0.5 * (a + b + c));
            combine3(&mut o2[start..start + len], a, b, c, |a, b, c| 0.5 * (a - b + c));
            o3[start..start + len].copy_from_slice(c);
        }
    }
}

/// One image `[C, H, W]` convolved into `out` (`[F, OH, OW]`) through
/// `epilogue`, with `u` from `with_filter`.
pub fn forward_image(u: &[f32], filters: usize, image: &[f32], win: Window, epilogue: Epilogue, out: &mut [f32]) {
    let isa = Isa::detect().expect("`applies` checked the CPU");
    forward_image_on(isa, u, filters, image, win, epilogue, out)
}

/// `forward_image` with the transforms compiled for `isa` (the products
/// are `gemm`'s, on the CPU's widest kernel).
fn forward_image_on(
    isa: Isa,
    u: &[f32],
    filters: usize,
    image: &[f32],
    win: Window,
    epilogue: Epilogue,
    out: &mut [f32],
) {
    let Window { channels, height, width, .. } = win;
    let (oh, ow) = (win.out_height(), win.out_width());
    let (th, tw) = (oh.div_ceil(2), ow.div_ceil(2));
    assert!(
        u.len() == 16 * filters * channels
            && image.len() == channels * height * width
            && out.len() == filters * oh * ow
            && epilogue.bias.is_none_or(|b| b.len() == filters)
    );
    // Each padded input row split into its even and odd columns, so that
    // the 4×4 blocks of consecutive tiles are contiguous runs.
    let plane = Plane { rows: 2 * th + 2, half: tw + 1, padding: win.rows.padding, height, width };
    let rows_per_block = (BLOCK_TILES / tw).max(1);
    // The buffers are taken, not borrowed, while the parallel parts run: a
    // thread waiting for them may start another image's convolution.
    let mut split = SPLIT.take();
    // `fill_plane` writes every value, padding included.
    split.resize(channels * plane.len(), 0.0);
    split
        .par_chunks_mut(plane.len())
        .zip(image.par_chunks_exact(height * width))
        .for_each(|(split, image)| fill_plane(isa, plane, image, split));
    let planes_in = &split[..];
    // Many blocks run side by side, each on one thread (so no thread sleeps
    // and is woken between a block's steps, which took a fifth of a 224×224
    // layer's time); a few run in turn, each step spread over the threads.
    let blocks = th.div_ceil(rows_per_block);
    let side_by_side = blocks >= BLOCKS_PER_THREAD * rayon::current_num_threads();
    // The least a block's parallel step hands a thread: all of it, side by side.
    let least = if side_by_side { usize::MAX } else { 1 };
    // Output rows 2·ty0.. of every filter's plane, for the block of tile row ty0.
    let block = |ty0: usize, mut planes: Vec<&mut [f32]>| {
        let (mut v, mut m) = BLOCK.take();
        let tiles = rows_per_block.min(th - ty0) * tw;
        v.resize(16 * channels * tiles, 0.0);
        m.resize(16 * filters * tiles, 0.0);
        // V[c][ξ][t] for this block's tiles, channel by channel (a
        // scratch row per rayon task, not per channel).
        let channel_inputs = v.par_chunks_exact_mut(16 * tiles).zip(planes_in.par_chunks_exact(plane.len()));
        channel_inputs.with_min_len(least).for_each_init(Vec::new, |scratch, (v, split)| {
            transform_inputs(isa, plane, split, (ty0, tiles / tw, tw), v, scratch);
        });
        m.par_chunks_exact_mut(filters * tiles).enumerate().with_min_len(least).for_each(|(xi, m)| {
            let u = &u[xi * filters * channels..(xi + 1) * filters * channels];
            // V[ξ]: channel c's tiles 16 · tiles apart.
            gemm(filters, channels, tiles, u, (channels, 1), &v[xi * tiles..], (16 * tiles, 1), m, false);
        });
        let sums = &m[..16 * filters * tiles];
        planes.par_iter_mut().enumerate().with_min_len(least).for_each_init(Vec::new, |scratch, (f, out)| {
            let sums: [&[f32]; 16] = std::array::from_fn(|xi| &sums[(xi * filters + f) * tiles..][..tiles]);
            let value = epilogue.of(f);
            transform_outputs(isa, sums, (ty0, tiles / tw, tw), (oh, ow), value, out, scratch);
        });
        BLOCK.set((v, m));
    };
    // Each block's rows of each plane.
    let rows = 2 * rows_per_block * ow;
    let mut parts: Vec<Vec<&mut [f32]>> = (0..blocks).map(|_| Vec::with_capacity(filters)).collect();
    for plane in out.chunks_exact_mut(oh * ow) {
        for (part, rows) in parts.iter_mut().zip(plane.chunks_mut(rows)) {
            part.push(rows);
        }
    }
    if side_by_side {
        parts.into_par_iter().enumerate().for_each(|(i, planes)| block(i * rows_per_block, planes));
    } else {
        parts.into_iter().enumerate().for_each(|(i, planes)| block(i * rows_per_block, planes));
    }
    SPLIT.set(split);
}

compiled_for_isa! {
    /// `Plane::fill` in the vectors of `isa`.
    fn fill_plane(plane: Plane, image: &[f32], out: &mut [f32]) {
        plane.fill(image, out)
    }
}

compiled_for_isa! {
    /// `Plane::transform_inputs` in the vectors of `isa`.
    fn transform_inputs(
        plane: Plane,
        split: &[f32],
        tiles: (usize, usize, usize),
        out: &mut [f32],
        scratch: &mut Vec<f32>,
    ) {
        plane.transform_inputs(split, tiles, out, scratch)
    }
}

compiled_for_isa! {
    /// `outputs_of_tiles` in the vectors of `isa`.
    fn transform_outputs(
        sums: [&[f32]; 16],
        tiles: (usize, usize, usize),
        shape: (usize, usize),
        value: impl Fn(f32) -> f32,
        out: &mut [f32],
        scratch: &mut Vec<f32>,
    ) {
        outputs_of_tiles(sums, tiles, shape, value, out, scratch)
    }
}

/// One channel's input, zero-padded and split by column parity.
#[derive(Clone, Copy)]
struct Plane {
    /// Padded rows kept: two per row of tiles, plus two.
    rows: usize,
    /// Values per half row (even or odd columns): one per column of tiles, plus one.
    half: usize,
    padding: usize,
    height: usize,
    width: usize,
}

impl Plane {
    fn len(self) -> usize {
        self.rows * 2 * self.half
    }

    /// Padded row r: its even columns, then its odd ones.
    #[inline(always)]
    fn fill(self, image: &[f32], out: &mut [f32]) {
        out.fill(0.0);
        for (r, halves) in out.chunks_exact_mut(2 * self.half).enumerate() {
            let Some(y) = r.checked_sub(self.padding).filter(|&y| y < self.height) else { continue };
            let line = &image[y * self.width..(y + 1) * self.width];
            // Column x + padding of the padded row: the first value of the
            // row that lands in an even column is x = padding % 2.
            let (even, odd) = halves.split_at_mut(self.half);
            let (e, o) = (self.padding % 2, 1 - self.padding % 2);
            let to_even = even.iter_mut().skip((self.padding + e) / 2);
            to_even.zip(line.iter().skip(e).step_by(2)).for_each(|(slot, &value)| *slot = value);
            let to_odd = odd.iter_mut().skip((self.padding + o) / 2);
            to_odd.zip(line.iter().skip(o).step_by(2)).for_each(|(slot, &value)| *slot = value);
        }
    }

    /// out[ξ · tiles + t] = (Bᵀ·d·B)[ξ] for the 4×4 input block d of each
    /// tile t of `count` rows of `tw` tiles from tile row `ty0`. Each step
    /// is a loop over a whole row of tiles, so that it runs in vectors;
    /// `scratch` holds its intermediate rows.
    #[inline(always)]
    fn transform_inputs(
        self,
        split: &[f32],
        (ty0, count, tw): (usize, usize, usize),
        out: &mut [f32],
        scratch: &mut Vec<f32>,
    ) {
        let (half, tiles) = (self.half, count * tw);
        let line = 2 * half;
        // Bᵀ·d for a row of tiles: four combined rows, each its even columns then its odd ones.
        scratch.resize(4 * line, 0.0);
        let t = &mut scratch[..4 * line];
        for ty in 0..count {
            let d = &split[2 * (ty0 + ty) * line..][..4 * line];
            let d = |i: usize| &d[i * line..(i + 1) * line];
            let (t0, rest) = t.split_at_mut(line);
            let (t1, rest) = rest.split_at_mut(line);
            let (t2, t3) = rest.split_at_mut(line);
            combine(t0, d(0), d(2), |a, b| a - b);
            combine(t1, d(1), d(2), |a, b| a + b);
            combine(t2, d(2), d(1), |a, b| a - b);
            combine(t3, d(1), d(3), |a, b| a - b);
            for (i, row) in t.chunks_exact(line).enumerate() {
                // (Bᵀ·d)·B: with a, b, c, e the block's columns (even[tx], odd[tx],
                // even[tx + 1], odd[tx + 1]), a − c, b + c, c − b and b − e.
                let (even, odd) = row.split_at(half);
                let at = |j: usize| (4 * i + j) * tiles + ty * tw;
                combine(&mut out[at(0)..][..tw], &even[..tw], &even[1..], |a, c| a - c);
                combine(&mut out[at(1)..][..tw], &odd[..tw], &even[1..], |b, c| b + c);
                combine(&mut out[at(2)..][..tw], &even[1..], &odd[..tw], |c, b| c - b);
                combine(&mut out[at(3)..][..tw], &odd[..tw], &odd[1..], |b, e| b - e);
            }
        }
    }
}

/// out[i] = f(a[i], b[i]) over `out`: a loop the compiler turns into vector code.
#[inline(always)]
fn combine(out: &mut [f32], a: &[f32], b: &[f32], f: impl Fn(f32, f32) -> f32) {
    for ((o, &a), &b) in out.iter_mut().zip(a).zip(b) {
        *o = f(a, b);
    }
}

/// out[2ty + a, 2tx + b] = value((Aᵀ·m·A)[a][b]) for the 16 sums m of each
/// tile of `count` rows of `tw` tiles from tile row `ty0`, inside (oh, ow);
/// `out` starts at output row 2·ty0.
/// As with the inputs, each step is a loop over a row of tiles, and
/// `scratch` holds the intermediate rows.
#[inline(always)]
fn outputs_of_tiles(
    sums: [&[f32]; 16],
    (ty0, count, tw): (usize, usize, usize),
    (oh, ow): (usize, usize),
    value: impl Fn(f32) -> f32,
    out: &mut [f32],
    scratch: &mut Vec<f32>,
) {
    scratch.resize(10 * tw, 0.0);
    // Aᵀ·m: rows m0 + m1 + m2 and m1 − m2 − m3, four columns each; then, for
    // ·A, the even and the odd output columns of one output row.
    let (s, columns) = scratch[..10 * tw].split_at_mut(8 * tw);
    for ty in 0..count {
        let m = |xi: usize| &sums[xi][ty * tw..][..tw];
        for (j, s) in s.chunks_exact_mut(2 * tw).enumerate() {
            let (s0, s1) = s.split_at_mut(tw);
            combine3(s0, m(j), m(4 + j), m(8 + j), |a, b, c| a + b + c);
            combine3(s1, m(4 + j), m(8 + j), m(12 + j), |a, b, c| a - b - c);
        }
        for a in 0..2 {
            let y = 2 * ty + a;
            if 2 * ty0 + y >= oh {
                break;
            }
            let s = |j: usize| &s[(2 * j + a) * tw..][..tw];
            let (even, odd) = columns.split_at_mut(tw);
            combine3(even, s(0), s(1), s(2), |p, q, r| value(p + q + r));
            combine3(odd, s(1), s(2), s(3), |q, r, t| value(q - r - t));
            let row = &mut out[y * ow..(y + 1) * ow];
            let mut pairs = row.chunks_exact_mut(2);
            for ((pair, &e), &o) in (&mut pairs).zip(&*even).zip(&*odd) {
                pair.copy_from_slice(&[e, o]);
            }
            if let [last] = pairs.into_remainder() {
                *last = even[ow / 2];
            }
        }
    }
}

/// out[i] = f(a[i], b[i], c[i]) over `out`, as `combine` with three operands.
#[inline(always)]
fn combine3(out: &mut [f32], a: &[f32], b: &[f32], c: &[f32], f: impl Fn(f32, f32, f32) -> f32) {
    for (((o, &a), &b), &c) in out.iter_mut().zip(a).zip(b).zip(c) {
        *o = f(a, b, c);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::{self, Taps};

    fn values(n: usize, seed: usize) -> Vec<f32> {
        (0..n).map(|i| ((i * 7919 + seed * 104_729) % 1000) as f32 / 500.0 - 1.0).collect()
    }

    /// Against the reference loops: odd and even sizes (partial tiles),
    /// padding 0, 1 and 2, several blocks of tiles, a filter transformed in
    /// several chunks, with a bias and with and without a fused ReLU; and
    /// the same bits on one thread as on all.
    #[test]
    fn winograd_matches_the_reference_loops() {
        for (channels, height, width, padding, filters) in [
            (32, 9, 7, 1, 32),
            (33, 8, 8, 0, 35),
            (40, 30, 9, 1, 33),
            (32, 5, 6, 2, 40),
            (32, 3, 3, 0, 32),
            (72, 6, 5, 1, 64),
            // Nine blocks of tiles, run side by side, the last one ragged.
            (32, 82, 35, 1, 32),
        ] {
            let taps = Taps { kernel: 3, stride: 1, padding, dilation: 1 };
            let win = Window { batch: 1, channels, height, width, rows: taps, cols: taps };
            if !applies(win, filters) {
                return;
            }
            let (oh, ow) = (win.out_height(), win.out_width());
            let x = values(channels * height * width, 1);
            let w = values(filters * channels * 9, 2);
            let bias = values(filters, 3);
            let mut expected = vec![0.0; filters * oh * ow];
            kernels::conv2d(&x, &w, &mut expected, win, filters);
            // A fused ReLU on every other case.
            let relu = channels % 2 == 0;
            let run = || {
                let mut y = vec![0.0; filters * oh * ow];
                let epilogue = Epilogue { bias: Some(&bias), relu };
                with_filter(&w, filters, win, |u| forward_image(u, filters, &x, win, epilogue, &mut y));
                y
            };
            let y = run();
            for (i, (a, e)) in y.iter().zip(&expected).enumerate() {
                let e = e + bias[i / (oh * ow)];
                let e = if relu { e.max(0.0) } else { e };
                assert!(
                    (a - e).abs() <= 1e-4 * (1.0 + e.abs()),
                    "{channels}×{height}×{width} p{padding}, [{i}]: {a} vs {e}"
                );
            }
            let alone = rayon::ThreadPoolBuilder::new().num_threads(1).build().expect("pool").install(run);
            assert!(y.iter().zip(&alone).all(|(a, b)| a.to_bits() == b.to_bits()), "threads change the bits");
            // The transforms on every instruction set: the same bits.
            for isa in Isa::available() {
                let mut on = vec![0.0; filters * oh * ow];
                let epilogue = Epilogue { bias: Some(&bias), relu };
                with_filter(&w, filters, win, |u| forward_image_on(isa, u, filters, &x, win, epilogue, &mut on));
                assert!(y.iter().zip(&on).all(|(a, b)| a.to_bits() == b.to_bits()), "{isa:?} changes the bits");
            }
        }
    }
}
