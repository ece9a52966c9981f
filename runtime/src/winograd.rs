//! 3×3 stride-1 convolutions by Winograd's minimal filtering F(S×S, 3×3),
//! S = 2 or 4 (Lavin and Gray, "Fast Algorithms for Convolutional Neural
//! Networks").
//!
//! Each S×S block (tile) of outputs comes from an N×N block of inputs,
//! N = S + 2: the filter and the input block are each transformed into
//! N×N values, their products summed over the channels, and the sums
//! transformed back. The sums over channels are N² matrix products, one
//! per point ξ of the transform: M[ξ] (F × tiles) = U[ξ] (F × C) · V[ξ]
//! (C × tiles), run by `gemm`. Per output and channel that is N²/S²
//! multiply-adds where the direct kernel does 9: 4 for F(2×2), 2.25 for
//! F(4×4), for the cost of the transforms, which is small beside the
//! products when both C and F are large (VGG's layers). F(4×4) has four
//! times fewer tiles to fill sgemm's panels with and more filter values to
//! transform, so small images take F(2×2) (`Tiling::choose`). The results
//! differ from the direct kernel's by rounding only, and do not depend on
//! the number of threads. A convolution's input gradient is one too, and
//! runs here where the forward one does (`input_gradient_window`).
#![allow(unsafe_code)]

use std::cell::{Cell, RefCell};

use rayon::prelude::*;

use crate::gemm::Isa;
use crate::kept;
use crate::kernels::{Epilogue, Window};
use crate::products::gemm;
use crate::simd::{aligned, compiled_for_isa};

mod weights;

pub use weights::{weight_gradient, weight_gradient_applies};

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

/// Which F(S×S, 3×3) a convolution runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Tiling {
    Two,
    Four,
}

impl Tiling {
    /// S: outputs per side of a tile.
    fn step(self) -> usize {
        match self {
            Tiling::Two => 2,
            Tiling::Four => 4,
        }
    }

    /// N²: the points of the transform, one product each.
    fn points(self) -> usize {
        (self.step() + 2).pow(2)
    }

    /// The tiling with less work on `win`, counted in sgemm's panels (its
    /// products' columns, each block's tiles rounded up to whole panels)
    /// per filter and channel, the filter's transform as a few more: each
    /// transformed value costs about as much as a product over 24 tiles
    /// (measured on VGG-16's 14×14 layers).
    fn choose(win: Window) -> Tiling {
        let panel = match Isa::detect() {
            Some(Isa::Avx512) => 32,
            _ => 16,
        };
        let work = |tiling: Tiling| {
            let s = tiling.step();
            let (th, tw) = (win.out_height().div_ceil(s), win.out_width().div_ceil(s));
            let rows = rows_per_block(tw);
            let columns: usize =
                (0..th).step_by(rows).map(|ty0| (rows.min(th - ty0) * tw).next_multiple_of(panel)).sum();
            tiling.points() * (columns + 24)
        };
        if work(Tiling::Four) < work(Tiling::Two) { Tiling::Four } else { Tiling::Two }
    }
}

/// Rows of tiles per block of the products, for rows of `tw` tiles.
fn rows_per_block(tw: usize) -> usize {
    (BLOCK_TILES / tw).max(1)
}

/// A filter transformed for one tiling: U[ξ][f][c].
#[derive(Clone, Copy)]
pub struct Transformed<'a> {
    tiling: Tiling,
    u: &'a [f32],
}

thread_local! {
    /// The transformed filter, on the calling thread.
    static FILTER: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
    /// The flipped filter of an input gradient, before its transform.
    static FLIPPED: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
    /// One image's split input planes.
    static SPLIT: Cell<Vec<f32>> = const { Cell::new(Vec::new()) };
    /// A block's transformed inputs and its sums.
    static BLOCK: Cell<(Vec<f32>, Vec<f32>)> = const { Cell::new((Vec::new(), Vec::new())) };
}

/// Runs `work` with the filter `w` (`[F, C, 3, 3]`) transformed for the
/// tiling `win` runs: kept from call to call while the weights keep their
/// `version` (`kept`), else transformed into this thread's buffer.
pub fn with_filter<R>(w: &[f32], filters: usize, win: Window, version: u64, work: impl FnOnce(Transformed) -> R) -> R {
    let tiling = Tiling::choose(win);
    if version == kept::UNVERSIONED {
        return with_filter_for(tiling, w, filters, win, work);
    }
    let source = kept::Source::of(w, [tiling.points(), filters, win.channels]);
    let u = kept::transform(source, version, || {
        let mut u = vec![0.0; tiling.points() * filters * win.channels];
        transform_into(tiling, w, filters, win, &mut u);
        u
    });
    work(Transformed { tiling, u: &u })
}

/// The window of the convolution that gives the input gradient of `win`
/// (`filters` filters), when it runs here: the output gradient's `filters`
/// channels, padded by 2 − p so that the result has the input's size,
/// under the flipped filter with channels and filters swapped
/// (`with_input_gradient_filter`). Padding beyond 2 would crop, which
/// the transforms do not.
pub fn input_gradient_window(win: Window, filters: usize) -> Option<Window> {
    // A 3×3 stride-1 window first: the flipped one's sizes are then defined.
    if !applies(win, filters) {
        return None;
    }
    let taps = |t: crate::kernels::Taps| Some(crate::kernels::Taps { padding: 2usize.checked_sub(t.padding)?, ..t });
    let flipped = Window {
        channels: filters,
        height: win.out_height(),
        width: win.out_width(),
        rows: taps(win.rows)?,
        cols: taps(win.cols)?,
        ..win
    };
    let same_size = flipped.out_height() == win.height && flipped.out_width() == win.width;
    (applies(flipped, win.channels) && same_size).then_some(flipped)
}

/// Runs `work` with the filter of the input gradient of `win` (`w`:
/// `[F, C, 3, 3]`): w'[c][f] = w[f][c] turned by 180°, transformed for
/// `flipped`, its window (`input_gradient_window`).
pub fn with_input_gradient_filter<R>(
    w: &[f32],
    filters: usize,
    (win, flipped): (Window, Window),
    work: impl FnOnce(Transformed) -> R,
) -> R {
    let channels = win.channels;
    FLIPPED.with(|cell| {
        let mut turned = cell.borrow_mut();
        turned.resize(w.len(), 0.0);
        for (c, out) in turned.chunks_exact_mut(filters * 9).enumerate() {
            for (f, out) in out.chunks_exact_mut(9).enumerate() {
                let filter = &w[(f * channels + c) * 9..][..9];
                out.iter_mut().zip(filter.iter().rev()).for_each(|(o, &v)| *o = v);
            }
        }
        with_filter_for(Tiling::choose(flipped), &turned, channels, flipped, work)
    })
}

/// `with_filter` for `tiling`, into this thread's buffer.
fn with_filter_for<R>(
    tiling: Tiling,
    w: &[f32],
    filters: usize,
    win: Window,
    work: impl FnOnce(Transformed) -> R,
) -> R {
    FILTER.with(|cell| {
        let mut u = cell.borrow_mut();
        // Every value is written below, so the old ones need no clearing.
        u.resize(tiling.points() * filters * win.channels, 0.0);
        transform_into(tiling, w, filters, win, &mut u);
        work(Transformed { tiling, u: &u })
    })
}

/// U[ξ][f][c] = (G·g·Gᵀ)[ξ] for the 3×3 filter g of f over channel c, into
/// `u` (exactly as long).
fn transform_into(tiling: Tiling, w: &[f32], filters: usize, win: Window, u: &mut [f32]) {
    let (n, points) = (filters * win.channels, tiling.points());
    assert_eq!(w.len(), n * 9);
    assert_eq!(u.len(), n * points);
    // Chunks of the 3×3 filters run in parallel, each writing its part of the rows U[ξ].
    let mut parts: Vec<Vec<&mut [f32]>> = (0..n.div_ceil(FILTER_CHUNK)).map(|_| Vec::with_capacity(points)).collect();
    for row in u.chunks_exact_mut(n) {
        for (part, chunk) in parts.iter_mut().zip(row.chunks_mut(FILTER_CHUNK)) {
            part.push(chunk);
        }
    }
    parts.into_par_iter().enumerate().for_each(|(k, mut rows)| {
        let len = rows[0].len();
        transform_filters(tiling, &w[k * FILTER_CHUNK * 9..][..len * 9], &mut rows);
    });
}

/// 3×3 filters transformed per parallel task.
const FILTER_CHUNK: usize = 4096;
/// 3×3 filters transformed together, their taps side by side so that each
/// step of the transform is a vector loop over them.
const FILTER_GROUP: usize = 64;

/// rows[ξ][k] = (G·g·Gᵀ)[ξ] for each 3×3 filter g = w[9k..9k + 9] (row-major).
fn transform_filters(tiling: Tiling, w: &[f32], rows: &mut [&mut [f32]]) {
    for (group, w) in w.chunks(9 * FILTER_GROUP).enumerate() {
        let (start, len) = (group * FILTER_GROUP, w.len() / 9);
        // taps[3r + c][k]: the tap at row r and column c of filter k.
        let mut taps = [[0.0f32; FILTER_GROUP]; 9];
        for (k, g) in w.chunks_exact(9).enumerate() {
            for (tap, &value) in taps.iter_mut().zip(g) {
                tap[k] = value;
            }
        }
        let taps = taps.each_ref().map(|tap| &tap[..len]);
        let rows = rows.iter_mut().map(|row| &mut row[start..start + len]);
        match tiling {
            Tiling::Two => filters_two(taps, rows),
            Tiling::Four => filters_four(taps, rows),
        }
    }
}

/// The 16 rows of F(2×2)'s G·g·Gᵀ for the filters of `taps` (a group's).
fn filters_two<'a>(taps: [&[f32]; 9], mut rows: impl Iterator<Item = &'a mut [f32]>) {
    // G·g: the rows g0, (g0 + g1 + g2)/2, (g0 − g1 + g2)/2 and g2, each of three columns.
    let len = taps[0].len();
    let mut halves = [[[0.0f32; FILTER_GROUP]; 3]; 2];
    for c in 0..3 {
        let (g0, g1, g2) = (taps[c], taps[3 + c], taps[6 + c]);
        combine3(&mut halves[0][c][..len], g0, g1, g2, |a, b, c| 0.5 * (a + b + c));
        combine3(&mut halves[1][c][..len], g0, g1, g2, |a, b, c| 0.5 * (a - b + c));
    }
    let gg: [[&[f32]; 3]; 4] = [
        [taps[0], taps[1], taps[2]],
        halves[0].each_ref().map(|half| &half[..len]),
        halves[1].each_ref().map(|half| &half[..len]),
        [taps[6], taps[7], taps[8]],
    ];
    // (G·g)·Gᵀ: each row's a, (a + b + c)/2, (a − b + c)/2 and c.
    for [a, b, c] in gg {
        let mut next = || rows.next().expect("16 rows");
        next().copy_from_slice(a);
        combine3(next(), a, b, c, |a, b, c| 0.5 * (a + b + c));
        combine3(next(), a, b, c, |a, b, c| 0.5 * (a - b + c));
        next().copy_from_slice(c);
    }
}

/// The 36 rows of F(4×4)'s G·g·Gᵀ for the filters of `taps` (a group's).
fn filters_four<'a>(taps: [&[f32]; 9], mut rows: impl Iterator<Item = &'a mut [f32]>) {
    // G·g: six rows of three columns.
    let len = taps[0].len();
    let mut gg = [[[0.0f32; FILTER_GROUP]; 3]; 6];
    for c in 0..3 {
        let mut column = gg.iter_mut().map(|row| &mut row[c][..len]);
        let out = std::array::from_fn(|_| column.next().expect("six rows"));
        filter_rows_four(out, [taps[c], taps[3 + c], taps[6 + c]]);
    }
    // (G·g)·Gᵀ: each row's six combinations of its three columns.
    for row in &gg {
        let out = std::array::from_fn(|_| rows.next().expect("36 rows"));
        filter_rows_four(out, [&row[0][..len], &row[1][..len], &row[2][..len]]);
    }
}

/// out[i] = (G·[a, b, c])[i] for F(4×4), over the values of three rows.
/// Sixths, twelfths and twenty-fourths are multiplications by their
/// (rounded) reciprocals: a division takes several times as long, and in
/// the 36 values per filter this transform writes, dividing took most of
/// its time.
#[inline(always)]
fn filter_rows_four(out: [&mut [f32]; 6], [a, b, c]: [&[f32]; 3]) {
    const SIXTH: f32 = 1.0 / 6.0;
    const TWELFTH: f32 = 1.0 / 12.0;
    const TWENTY_FOURTH: f32 = 1.0 / 24.0;
    let [o0, o1, o2, o3, o4, o5] = out;
    combine3(o0, a, b, c, |a, _, _| 0.25 * a);
    combine3(o1, a, b, c, |a, b, c| -(a + b + c) * SIXTH);
    combine3(o2, a, b, c, |a, b, c| -(a - b + c) * SIXTH);
    combine3(o3, a, b, c, |a, b, c| a * TWENTY_FOURTH + b * TWELFTH + c * SIXTH);
    combine3(o4, a, b, c, |a, b, c| a * TWENTY_FOURTH - b * TWELFTH + c * SIXTH);
    o5.copy_from_slice(c);
}

/// One image `[C, H, W]` convolved into `out` (`[F, OH, OW]`) through
/// `epilogue`, with `filter` from `with_filter`.
pub fn forward_image(
    filter: Transformed,
    filters: usize,
    image: &[f32],
    win: Window,
    epilogue: Epilogue,
    out: &mut [f32],
) {
    let isa = Isa::detect().expect("`applies` checked the CPU");
    forward_image_on(isa, filter, filters, image, win, epilogue, out)
}

/// `forward_image` with the transforms compiled for `isa` (the products
/// are `gemm`'s, on the CPU's widest kernel).
fn forward_image_on(
    isa: Isa,
    Transformed { tiling, u }: Transformed,
    filters: usize,
    image: &[f32],
    win: Window,
    epilogue: Epilogue,
    out: &mut [f32],
) {
    let Window { channels, height, width, .. } = win;
    let (oh, ow) = (win.out_height(), win.out_width());
    let (s, points) = (tiling.step(), tiling.points());
    let (th, tw) = (oh.div_ceil(s), ow.div_ceil(s));
    assert!(
        u.len() == points * filters * channels
            && image.len() == channels * height * width
            && out.len() == filters * oh * ow
            && epilogue.bias.is_none_or(|b| b.len() == filters)
    );
    // Each padded input row split by column modulo S, so that the N×N
    // blocks of consecutive tiles are contiguous runs.
    let plane = Plane { step: s, rows: s * th + 2, phase: tw + 1, padding: win.rows.padding, height, width };
    let rows_per_block = rows_per_block(tw);
    // The buffers are taken, not borrowed, while the parallel parts run: a
    // thread waiting for them may start another image's convolution.
    let mut split = SPLIT.take();
    // `fill_plane` writes every value, padding included (the buffers only
    // grow: zeroing what a layer larger than the last adds took a tenth
    // of VGG-16's batch-1 forward pass).
    let planes_in = aligned(&mut split, channels * plane.len());
    fill_planes(isa, plane, image, planes_in);
    let planes_in = &planes_in[..];
    // Many blocks run side by side, each on one thread (so no thread sleeps
    // and is woken between a block's steps, which took a fifth of a 224×224
    // layer's time); a few run in turn, each step spread over the threads.
    let blocks = th.div_ceil(rows_per_block);
    let side_by_side = blocks >= BLOCKS_PER_THREAD * rayon::current_num_threads();
    // The least a block's parallel step hands a thread: all of it, side by side.
    let least = if side_by_side { usize::MAX } else { 1 };
    // Output rows S·ty0.. of every filter's plane, for the block of tile row ty0.
    let block = |ty0: usize, mut planes: Vec<&mut [f32]>| {
        let (mut v_buffer, mut m_buffer) = BLOCK.take();
        let tiles = rows_per_block.min(th - ty0) * tw;
        // Every value of both is written below: the inputs' transforms and the products.
        let (v, m) =
            (aligned(&mut v_buffer, points * channels * tiles), aligned(&mut m_buffer, points * filters * tiles));
        // V[c][ξ][t] for this block's tiles, channel by channel (a
        // scratch row per rayon task, not per channel).
        let channel_inputs = v.par_chunks_exact_mut(points * tiles).zip(planes_in.par_chunks_exact(plane.len()));
        channel_inputs.with_min_len(least).for_each_init(Vec::new, |scratch, (v, split)| {
            transform_inputs(isa, tiling, plane, split, (ty0, tiles / tw, tw), (v, tiles), scratch);
        });
        m.par_chunks_exact_mut(filters * tiles).enumerate().with_min_len(least).for_each(|(xi, m)| {
            let u = &u[xi * filters * channels..(xi + 1) * filters * channels];
            // V[ξ]: channel c's tiles `points` · tiles apart.
            gemm(filters, channels, tiles, u, (channels, 1), &v[xi * tiles..], (points * tiles, 1), m, false);
        });
        let block_sums = &m[..points * filters * tiles];
        planes.par_iter_mut().enumerate().with_min_len(least).for_each_init(Vec::new, |scratch, (f, out)| {
            let sums = Sums { m: block_sums, filter: f, filters, ty0, tw, tiles };
            let value = epilogue.of(f);
            transform_outputs(isa, tiling, sums, (oh, ow), value, out, scratch);
        });
        BLOCK.set((v_buffer, m_buffer));
    };
    // Each block's rows of each plane.
    let rows = s * rows_per_block * ow;
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

/// Each channel of `image` into its `plane` of `planes`, side by side.
fn fill_planes(isa: Isa, plane: Plane, image: &[f32], planes: &mut [f32]) {
    let area = plane.height * plane.width;
    planes
        .par_chunks_mut(plane.len())
        .zip(image.par_chunks_exact(area))
        .for_each_init(Vec::new, |scratch, (split, image)| fill_plane(isa, plane, image, split, scratch));
}

compiled_for_isa! {
    /// `Plane::fill_two` or `fill_four` in the vectors of `isa`.
    fn fill_plane(plane: Plane, image: &[f32], out: &mut [f32], scratch: &mut Vec<f32>) {
        match plane.step {
            2 => plane.fill_two(image, out),
            _ => plane.fill_four(image, out, scratch),
        }
    }
}

compiled_for_isa! {
    /// `Plane::inputs_two` or `inputs_four` in the vectors of `isa`.
    fn transform_inputs(
        tiling: Tiling,
        plane: Plane,
        split: &[f32],
        tiles: (usize, usize, usize),
        out: (&mut [f32], usize),
        scratch: &mut Vec<f32>,
    ) {
        match tiling {
            Tiling::Two => plane.inputs_two(split, tiles, out, scratch),
            Tiling::Four => plane.inputs_four(split, tiles, out, scratch),
        }
    }
}

compiled_for_isa! {
    /// `outputs_two` or `outputs_four` in the vectors of `isa`.
    fn transform_outputs(
        tiling: Tiling,
        sums: Sums,
        shape: (usize, usize),
        value: impl Fn(f32) -> f32,
        out: &mut [f32],
        scratch: &mut Vec<f32>,
    ) {
        match tiling {
            Tiling::Two => outputs_two(sums, shape, value, out, scratch),
            Tiling::Four => outputs_four(sums, shape, value, out, scratch),
        }
    }
}

/// One channel's input, zero-padded, each row split by column modulo S.
#[derive(Clone, Copy)]
struct Plane {
    /// S: outputs per side of a tile, and the phases a row splits into.
    step: usize,
    /// Padded rows kept: S per row of tiles, plus two.
    rows: usize,
    /// Values per phase of a row: one per column of tiles, plus one.
    phase: usize,
    padding: usize,
    height: usize,
    width: usize,
}

impl Plane {
    /// Values per padded row: its S phases.
    fn line(self) -> usize {
        self.step * self.phase
    }

    fn len(self) -> usize {
        self.rows * self.line()
    }

    /// Padded row r: its even columns, then its odd ones (F(2×2)'s split),
    /// by strided copies the compiler turns into vector code.
    #[inline(always)]
    fn fill_two(self, image: &[f32], out: &mut [f32]) {
        out.fill(0.0);
        let padding = self.padding;
        for (r, phases) in out.chunks_exact_mut(2 * self.phase).enumerate() {
            let Some(y) = r.checked_sub(padding).filter(|&y| y < self.height) else { continue };
            let line = &image[y * self.width..(y + 1) * self.width];
            for (p, phase) in phases.chunks_exact_mut(self.phase).enumerate() {
                // Column x + padding of the padded row: the first x that lands in phase p.
                let x = (p + 2 - padding % 2) % 2;
                let to = phase.iter_mut().skip((x + padding) / 2);
                to.zip(line.iter().skip(x).step_by(2)).for_each(|(slot, &value)| *slot = value);
            }
        }
    }

    /// Padded row r: its columns 4i + p for each phase p, phase by phase
    /// (F(4×4)'s split), each row padded in `scratch` and split by shuffles.
    #[inline(always)]
    fn fill_four(self, image: &[f32], out: &mut [f32], scratch: &mut Vec<f32>) {
        let (line, padding) = (self.line(), self.padding);
        scratch.resize(line, 0.0);
        scratch.fill(0.0);
        for (r, phases) in out.chunks_exact_mut(line).enumerate() {
            let Some(y) = r.checked_sub(padding).filter(|&y| y < self.height) else {
                phases.fill(0.0);
                continue;
            };
            scratch[padding..padding + self.width].copy_from_slice(&image[y * self.width..(y + 1) * self.width]);
            // SAFETY: `fill_plane` runs compiled for AVX2 or AVX-512.
            unsafe { deinterleave4(scratch, phases) };
        }
    }

    /// out[ξ · stride + t] = (Bᵀ·d·B)[ξ] for the 4×4 input block d of each
    /// tile t of `count` rows of `tw` tiles from tile row `ty0`, F(2×2)
    /// (`stride` at least count · tw).
    /// Each step is a loop over a whole row of tiles, so that it runs in
    /// vectors; `scratch` holds its intermediate rows.
    #[inline(always)]
    fn inputs_two(
        self,
        split: &[f32],
        (ty0, count, tw): (usize, usize, usize),
        (out, stride): (&mut [f32], usize),
        scratch: &mut Vec<f32>,
    ) {
        let half = self.phase;
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
                let at = |j: usize| (4 * i + j) * stride + ty * tw;
                combine(&mut out[at(0)..][..tw], &even[..tw], &even[1..], |a, c| a - c);
                combine(&mut out[at(1)..][..tw], &odd[..tw], &even[1..], |b, c| b + c);
                combine(&mut out[at(2)..][..tw], &even[1..], &odd[..tw], |c, b| c - b);
                combine(&mut out[at(3)..][..tw], &odd[..tw], &odd[1..], |b, e| b - e);
            }
        }
    }

    /// `inputs_two` for F(4×4): 6×6 input blocks, 36 values each.
    #[inline(always)]
    fn inputs_four(
        self,
        split: &[f32],
        (ty0, count, tw): (usize, usize, usize),
        (out, stride): (&mut [f32], usize),
        scratch: &mut Vec<f32>,
    ) {
        let phase = self.phase;
        let line = 4 * phase;
        // Bᵀ·d for a row of tiles: six combined rows, each split as the input's.
        scratch.resize(6 * line, 0.0);
        let t = &mut scratch[..6 * line];
        for ty in 0..count {
            let d = &split[4 * (ty0 + ty) * line..][..6 * line];
            let d: [&[f32]; 6] = std::array::from_fn(|i| &d[i * line..(i + 1) * line]);
            let mut rows = t.chunks_exact_mut(line);
            inputs_four_rows(std::array::from_fn(|_| rows.next().expect("six rows")), d);
            for (i, row) in t.chunks_exact(line).enumerate() {
                // (Bᵀ·d)·B: column j of tile tx is value tx + j / 4 of phase j % 4.
                let columns: [&[f32]; 6] = std::array::from_fn(|j| &row[(j % 4) * phase + j / 4..][..tw]);
                // The last row of the last point may end short of a whole stride.
                let mut outs = out[6 * i * stride..].chunks_mut(stride);
                let outs = std::array::from_fn(|_| &mut outs.next().expect("six rows")[ty * tw..][..tw]);
                inputs_four_rows(outs, columns);
            }
        }
    }
}

/// out[i] = (Bᵀ·[d0 … d5])[i] for F(4×4), value by value.
#[inline(always)]
fn inputs_four_rows(out: [&mut [f32]; 6], d: [&[f32]; 6]) {
    let len = out[0].len();
    let [o0, o1, o2, o3, o4, o5] = out.map(|o| &mut o[..len]);
    let [d0, d1, d2, d3, d4, d5] = d.map(|d| &d[..len]);
    for e in 0..len {
        let (d0, d1, d2, d3, d4, d5) = (d0[e], d1[e], d2[e], d3[e], d4[e], d5[e]);
        o0[e] = 4.0 * d0 - 5.0 * d2 + d4;
        o1[e] = (d3 + d4) - 4.0 * (d1 + d2);
        o2[e] = (d4 - d3) + 4.0 * (d1 - d2);
        o3[e] = (d4 - d2) + 2.0 * (d3 - d1);
        o4[e] = (d4 - d2) - 2.0 * (d3 - d1);
        o5[e] = 4.0 * d1 - 5.0 * d3 + d5;
    }
}

/// to[p·n + i] = from[4i + p] for the n = len / 4 groups of four values
/// of `from`: a row split into its phases (columns modulo 4), eight groups
/// at a time by shuffles in 256-bit registers, where the compiler's code
/// for the strided copies moved one value at a time.
///
/// # Safety
/// The CPU has AVX2 (the callers are compiled for AVX2 or AVX-512).
#[inline(always)]
unsafe fn deinterleave4(from: &[f32], to: &mut [f32]) {
    use std::arch::x86_64::{
        _mm256_loadu_ps, _mm256_permutevar8x32_ps, _mm256_setr_epi32, _mm256_shuffle_ps, _mm256_storeu_ps,
        _mm256_unpackhi_ps, _mm256_unpacklo_ps,
    };
    let n = from.len() / 4;
    assert!(from.len() == 4 * n && to.len() == 4 * n);
    let whole = n / 8 * 8;
    // SAFETY: the loads read groups i..i + 8 of `from`, the stores values
    // i..i + 8 of each phase of `to`, all inside (asserted); the CPU's
    // features are the caller's contract.
    unsafe {
        // The shuffles leave each phase's groups in the order 0 2 4 6 1 3 5 7.
        let order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
        for i in (0..whole).step_by(8) {
            let p = from.as_ptr().add(4 * i);
            let [a, b, c, d] = std::array::from_fn(|k| _mm256_loadu_ps(p.add(8 * k)));
            let (low_ab, high_ab) = (_mm256_unpacklo_ps(a, b), _mm256_unpackhi_ps(a, b));
            let (low_cd, high_cd) = (_mm256_unpacklo_ps(c, d), _mm256_unpackhi_ps(c, d));
            let phases = [
                _mm256_shuffle_ps::<0x44>(low_ab, low_cd),
                _mm256_shuffle_ps::<0xEE>(low_ab, low_cd),
                _mm256_shuffle_ps::<0x44>(high_ab, high_cd),
                _mm256_shuffle_ps::<0xEE>(high_ab, high_cd),
            ];
            for (phase, v) in phases.into_iter().enumerate() {
                _mm256_storeu_ps(to.as_mut_ptr().add(phase * n + i), _mm256_permutevar8x32_ps(v, order));
            }
        }
    }
    for i in whole..n {
        for phase in 0..4 {
            to[phase * n + i] = from[4 * i + phase];
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

/// One filter's sums in a block of the products, M[ξ][filter][t]: the
/// block's `tiles` are whole rows of `tw` tiles from tile row `ty0`.
#[derive(Clone, Copy)]
struct Sums<'a> {
    m: &'a [f32],
    filter: usize,
    filters: usize,
    ty0: usize,
    tw: usize,
    tiles: usize,
}

impl Sums<'_> {
    /// Rows of tiles in the block.
    fn rows(&self) -> usize {
        self.tiles / self.tw
    }

    /// M[ξ][filter] for the tiles of the block's row `ty`.
    fn at(&self, xi: usize, ty: usize) -> &[f32] {
        &self.m[(xi * self.filters + self.filter) * self.tiles + ty * self.tw..][..self.tw]
    }
}

/// out[2ty + a, 2tx + b] = value((Aᵀ·m·A)[a][b]) for the 16 sums m of each
/// tile of `sums`, inside (oh, ow), F(2×2); `out` starts at output row
/// 2·ty0, the block's first. As with the inputs, each step
/// is a loop over a row of tiles, and `scratch` holds the intermediate rows.
#[inline(always)]
fn outputs_two(
    sums: Sums,
    (oh, ow): (usize, usize),
    value: impl Fn(f32) -> f32,
    out: &mut [f32],
    scratch: &mut Vec<f32>,
) {
    let (ty0, tw) = (sums.ty0, sums.tw);
    scratch.resize(10 * tw, 0.0);
    // Aᵀ·m: rows m0 + m1 + m2 and m1 − m2 − m3, four columns each; then, for
    // ·A, the even and the odd output columns of one output row.
    let (s, columns) = scratch[..10 * tw].split_at_mut(8 * tw);
    for ty in 0..sums.rows() {
        let m = |xi: usize| sums.at(xi, ty);
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

/// `outputs_two` for F(4×4): 36 sums a tile, 4×4 outputs.
#[inline(always)]
fn outputs_four(
    sums: Sums,
    (oh, ow): (usize, usize),
    value: impl Fn(f32) -> f32,
    out: &mut [f32],
    scratch: &mut Vec<f32>,
) {
    let (ty0, tw) = (sums.ty0, sums.tw);
    scratch.resize(28 * tw, 0.0);
    // Aᵀ·m: four rows of six columns (row a, column j at 6a + j); then, for
    // ·A, the four phases (output columns modulo 4) of one output row.
    let (s, phases) = scratch[..28 * tw].split_at_mut(24 * tw);
    for ty in 0..sums.rows() {
        for j in 0..6 {
            let column: [&[f32]; 6] = std::array::from_fn(|i| sums.at(6 * i + j, ty));
            let mut rows = s.chunks_exact_mut(6 * tw).map(|row| &mut row[j * tw..(j + 1) * tw]);
            outputs_four_rows(std::array::from_fn(|_| rows.next().expect("four rows")), column, |v| v);
        }
        for a in 0..4 {
            let y = 4 * ty + a;
            if 4 * ty0 + y >= oh {
                break;
            }
            let row: [&[f32]; 6] = std::array::from_fn(|j| &s[(6 * a + j) * tw..][..tw]);
            let mut outs = phases.chunks_exact_mut(tw);
            outputs_four_rows(std::array::from_fn(|_| outs.next().expect("four phases")), row, &value);
            let phase: [&[f32]; 4] = std::array::from_fn(|b| &phases[b * tw..(b + 1) * tw]);
            let mut tiles = out[y * ow..(y + 1) * ow].chunks_exact_mut(4);
            for (tx, tile) in (&mut tiles).enumerate() {
                tile.copy_from_slice(&[phase[0][tx], phase[1][tx], phase[2][tx], phase[3][tx]]);
            }
            for (b, o) in tiles.into_remainder().iter_mut().enumerate() {
                *o = phase[b][ow / 4];
            }
        }
    }
}

/// out[i] = value((Aᵀ·[m0 … m5])[i]) for F(4×4), value by value.
#[inline(always)]
fn outputs_four_rows(out: [&mut [f32]; 4], m: [&[f32]; 6], value: impl Fn(f32) -> f32) {
    let len = out[0].len();
    let [o0, o1, o2, o3] = out.map(|o| &mut o[..len]);
    let [m0, m1, m2, m3, m4, m5] = m.map(|m| &m[..len]);
    for e in 0..len {
        let (m0, m1, m2, m3, m4, m5) = (m0[e], m1[e], m2[e], m3[e], m4[e], m5[e]);
        let (sum12, difference12) = (m1 + m2, m1 - m2);
        let (sum34, difference34) = (m3 + m4, m3 - m4);
        o0[e] = value(m0 + sum12 + sum34);
        o1[e] = value(difference12 + 2.0 * difference34);
        o2[e] = value(sum12 + 4.0 * sum34);
        o3[e] = value(difference12 + 8.0 * difference34 + m5);
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
mod tests;
