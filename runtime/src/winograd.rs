//! 3×3 stride-1 convolutions by Winograd's minimal filtering F(S×S, 3×3),
//! S = 2 or 4 (Lavin and Gray, "Fast Algorithms for Convolutional Neural
//! Networks").
//!
//! Each S×S block (tile) of outputs comes from an N×N block of inputs,
//! N = S + 2: the filter and the input block are each transformed into
//! N×N values, their products summed over the channels, and the sums
//! transformed back. The sums over channels are N² matrix products, one
//! per point ξ of the transform: M[ξ] (F × tiles) = U[ξ] (F × C) · V[ξ]
//! (C × tiles), run by `gemm`'s kernels on V as the input transform lays
//! it out (`gemm::multiply_in_place`). Per output and channel that is N²/S²
//! multiply-adds where the direct kernel does 9: 4 for F(2×2), 2.25 for
//! F(4×4), for the cost of the transforms, which is small beside the
//! products when both C and F are large (VGG's layers). F(4×4) has four
//! times fewer tiles to fill sgemm's panels with and more filter values to
//! transform, so small images in small batches take F(2×2)
//! (`Tiling::choose`). The results
//! differ from the direct kernel's by rounding only, and do not depend on
//! the number of threads. A convolution's input gradient is one too, and
//! runs here where the forward one does (`input_gradient_window`).
#![allow(unsafe_code)]

use std::cell::Cell;

use rayon::prelude::*;

use crate::gemm::{Isa, Operand, multiply_in_place};
use crate::kernels::{Epilogue, Window};
use crate::products::Output;
use crate::simd::aligned;

mod filters;
mod inputs;
mod outputs;
mod weights;

pub use filters::{with_filter, with_input_gradient_filter};
use inputs::{LANES, Plane, Run, fill_planes, transform_inputs};
use outputs::{Sums, transform_outputs};
pub use weights::{weight_gradient, weight_gradient_applies};

/// Channels and filters from which the products are large enough to pay
/// for the transforms.
const MIN_CHANNELS: usize = 32;
/// Tiles a block of the products takes: its transformed inputs and sums
/// stay in the caches, and it fills whole panels of `gemm` (32 columns
/// with AVX-512, 16 with AVX2).
const BLOCK_TILES: usize = 96;
/// Tiles from which a group of images is large enough (`Tiles`): their
/// blocks waste at most a part of one panel.
const GROUP_TILES: usize = 512;
/// Blocks per thread from which a group's blocks run side by side rather
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
    /// per filter and channel, and, unless the filter's transform is
    /// `kept` from call to call, that transform as a few more: each
    /// transformed value costs about as much as a product over 96 tiles
    /// (measured on VGG-16's 512-channel layers at batch 4, one thread:
    /// at 14×14 F(2×2) took 22 ms and F(4×4) 28–31, at 28×28 F(4×4)
    /// 58–60 ms and F(2×2) 66).
    fn choose(win: Window, kept: bool) -> Tiling {
        let panel = match Isa::detect() {
            Some(Isa::Avx512) => 32,
            _ => 16,
        };
        let transform = if kept { 0 } else { 96 };
        let work = |tiling: Tiling| tiling.points() * (Tiles::new(tiling, win).columns(win.batch, panel) + transform);
        if work(Tiling::Four) < work(Tiling::Two) { Tiling::Four } else { Tiling::Two }
    }
}

/// How a call takes its tiles: the batch's images `group` at a time (their
/// planes filled together), and a group's tiles, numbered by image, tile
/// row and tile column, in blocks of `BLOCK_TILES`. A block fills whole
/// panels of the products though a row or an image has fewer tiles
/// (VGG-16's 14×14 layers have 16 an image, its 56×56 ones 14 a row).
#[derive(Clone, Copy, Debug)]
struct Tiles {
    /// Tiles per column and per row of an image.
    high: usize,
    wide: usize,
    group: usize,
}

impl Tiles {
    fn new(tiling: Tiling, win: Window) -> Tiles {
        let s = tiling.step();
        let (high, wide) = (win.out_height().div_ceil(s), win.out_width().div_ceil(s));
        Tiles { high, wide, group: GROUP_TILES.div_ceil(high * wide).clamp(1, win.batch.max(1)) }
    }

    fn per_image(self) -> usize {
        self.high * self.wide
    }

    /// The products' columns over `batch` images: each block's tiles
    /// rounded up to whole panels of `panel` columns.
    fn columns(self, batch: usize, panel: usize) -> usize {
        let of_group = |images: usize| {
            let tiles = images * self.per_image();
            tiles / BLOCK_TILES * BLOCK_TILES + (tiles % BLOCK_TILES).next_multiple_of(panel)
        };
        batch / self.group * of_group(self.group) + of_group(batch % self.group)
    }

    /// The runs of tiles `from..to` of a group, each within one tile row,
    /// with the image it is in and where it starts from `from`.
    fn runs(self, from: usize, to: usize) -> impl Iterator<Item = (usize, Run, usize)> {
        let wide = self.wide;
        (from / wide..to.div_ceil(wide)).map(move |r| {
            let (first, last) = (from.max(r * wide) - r * wide, to.min((r + 1) * wide) - r * wide);
            let run = Run { row: r % self.high, first, len: last - first };
            (r / self.high, run, (r * wide + first) - from)
        })
    }
}

/// Where one group's values lie in each image of a batch: image i's from
/// `i · stride + first` on (a grouped convolution's images hold several).
#[derive(Clone, Copy, Debug)]
pub struct Layout {
    pub stride: usize,
    pub first: usize,
}

impl Layout {
    /// The values of image `image` in `values`, `len` of them.
    fn of(self, values: &[f32], image: usize, len: usize) -> &[f32] {
        &values[image * self.stride + self.first..][..len]
    }
}

/// A filter transformed for one tiling: U[ξ][f][c].
#[derive(Clone, Copy)]
pub struct Transformed<'a> {
    tiling: Tiling,
    u: &'a [f32],
}

thread_local! {
    /// One image's split input planes.
    static SPLIT: Cell<Vec<f32>> = const { Cell::new(Vec::new()) };
    /// A block's transformed inputs and its sums.
    static BLOCK: Cell<(Vec<f32>, Vec<f32>)> = const { Cell::new((Vec::new(), Vec::new())) };
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

/// The batch `images` (`[C, H, W]` each, where `from` says) convolved into
/// `out` (`[F, OH, OW]` each, where `to` says) through `epilogue`, with
/// `filter` from `with_filter`.
pub fn forward(
    filter: Transformed,
    filters: usize,
    (images, from): (&[f32], Layout),
    win: Window,
    epilogue: Epilogue,
    (out, to): (&mut [f32], Layout),
) {
    let isa = Isa::detect().expect("`applies` checked the CPU");
    forward_on(isa, filter, filters, (images, from), win, (epilogue, None), (out, to))
}

/// The batch's input gradients `dx` (`[C, H, W]` each, where `to` says)
/// from its output gradients `grads` (where `from` says), as the
/// convolution by the flipped filter (`flipped`, from
/// `with_input_gradient_filter`) of `channels` filters. With `positive`
/// (a ReLU's output, laid out as dx), each value is then times
/// [positive > 0], row by row while the row is in cache.
pub fn input_gradient(
    filter: Transformed,
    channels: usize,
    (grads, from): (&[f32], Layout),
    flipped: Window,
    positive: Option<&[f32]>,
    (dx, to): (&mut [f32], Layout),
) {
    let isa = Isa::detect().expect("`applies` checked the CPU");
    forward_on(isa, filter, channels, (grads, from), flipped, (Epilogue::default(), positive), (dx, to))
}

/// `forward` with the transforms compiled for `isa` (the products are
/// `gemm`'s, on the CPU's widest kernel), and, given `positive` (laid out
/// as `out`), each output then times [positive > 0].
fn forward_on(
    isa: Isa,
    Transformed { tiling, u }: Transformed,
    filters: usize,
    (images, from): (&[f32], Layout),
    win: Window,
    (epilogue, positive): (Epilogue, Option<&[f32]>),
    (out, to): (&mut [f32], Layout),
) {
    let Window { batch, channels, height, width, .. } = win;
    let (oh, ow) = (win.out_height(), win.out_width());
    let (s, points) = (tiling.step(), tiling.points());
    let (image_len, out_len) = (channels * height * width, filters * oh * ow);
    // The last image's values end inside each slice.
    let reaches = |len: usize, layout: Layout, total: usize| {
        batch == 0 || (batch - 1) * layout.stride + layout.first + len <= total
    };
    assert!(
        u.len() == points * filters * channels
            && reaches(image_len, from, images.len())
            && reaches(out_len, to, out.len())
            && positive.is_none_or(|p| p.len() == out.len())
            && epilogue.bias.is_none_or(|b| b.len() == filters)
    );
    let tiles = Tiles::new(tiling, win);
    // The products run on the CPU's widest kernels, whatever `isa` the transforms take.
    let widest = Isa::detect().expect("`applies` checked the CPU");
    // Each padded input row split by column modulo S, so that the N×N
    // blocks of consecutive tiles are contiguous runs; each phase is whole
    // vectors long, so the transforms' loops can run over whole ones
    // (`inputs::whole`).
    let phase = (tiles.wide + 1).next_multiple_of(LANES);
    let plane = Plane { step: s, rows: s * tiles.high + 2, phase, padding: win.rows.padding, height, width };
    // The buffers are taken, not borrowed, while the parallel parts run: a
    // thread waiting for them may start another convolution.
    let mut split = SPLIT.take();
    let shared = Output(out.as_mut_ptr());
    for start in (0..batch).step_by(tiles.group) {
        let count = tiles.group.min(batch - start);
        // `fill_plane` writes every value, padding included (the buffers only
        // grow: zeroing what a layer larger than the last adds took a tenth
        // of VGG-16's batch-1 forward pass).
        let planes_in = aligned(&mut split, count * channels * plane.len());
        for (i, planes) in planes_in.chunks_exact_mut(channels * plane.len()).enumerate() {
            fill_planes(isa, plane, from.of(images, start + i, image_len), planes);
        }
        let planes_in = &planes_in[..];
        // Channel c of the group's image i.
        let split_of = |i: usize, c: usize| &planes_in[(i * channels + c) * plane.len()..][..plane.len()];
        let total = count * tiles.per_image();
        // Many blocks run side by side, each on one thread (so no thread sleeps
        // and is woken between a block's steps, which took a fifth of a 224×224
        // layer's time); a few run in turn, each step spread over the threads.
        let blocks = total.div_ceil(BLOCK_TILES);
        let side_by_side = blocks >= BLOCKS_PER_THREAD * rayon::current_num_threads();
        // The least a block's parallel step hands a thread: all of it, side by side.
        let least = if side_by_side { usize::MAX } else { 1 };
        let block = |first: usize| {
            let (mut v_buffer, mut m_buffer) = BLOCK.take();
            let last = (first + BLOCK_TILES).min(total);
            let n = last - first;
            // V[ξ][c] (channels × the block's tiles), each row whole panels
            // long: the products read it in place, with no packing pass.
            let ldb = n.next_multiple_of(2 * LANES);
            // Every value of both that is read is written below: the
            // inputs' transforms (the rows past n are read only into lanes
            // that are not stored, and hold whatever an earlier block left,
            // or `aligned`'s zeros) and the products; M[ξ][f] reads whole
            // vectors past its end.
            let (v, m) =
                (aligned(&mut v_buffer, points * channels * ldb), aligned(&mut m_buffer, points * filters * n + LANES));
            let rows = Output(v.as_mut_ptr());
            // Each channel's rows of V (a scratch row per rayon task, not per channel).
            (0..channels).into_par_iter().with_min_len(least).for_each_init(Vec::new, |scratch, c| {
                let mut outs: [&mut [f32]; 36] = std::array::from_fn(|_| &mut [][..]);
                for (xi, out) in outs.iter_mut().take(points).enumerate() {
                    // SAFETY: row c of V[ξ] lies inside V, and only this
                    // task (channel c's) writes it.
                    *out = unsafe { rows.run((xi * channels + c) * ldb, ldb) };
                }
                for (i, run, at) in tiles.runs(first, last) {
                    transform_inputs(isa, tiling, plane, split_of(i, c), run, (&mut outs[..points], at), scratch);
                }
            });
            let v = &v[..];
            m.par_chunks_exact_mut(filters * n).enumerate().with_min_len(least).for_each(|(xi, m)| {
                let u = &u[xi * filters * channels..][..filters * channels];
                let u = Operand { ptr: u.as_ptr(), rows: channels as isize, cols: 1 };
                let v = &v[xi * channels * ldb..][..channels * ldb];
                // SAFETY: U[ξ] holds filters × channels row-major, V[ξ]
                // channels rows of ldb (whole panels), M[ξ] filters × n.
                unsafe { multiply_in_place(widest, (filters, channels, n), u, (v.as_ptr(), ldb), m.as_mut_ptr()) };
            });
            let block_sums = &m[..];
            (0..filters).into_par_iter().with_min_len(least).for_each_init(Vec::new, |scratch, f| {
                let value = epilogue.of(f);
                for (i, Run { row, first: tx, len }, at) in tiles.runs(first, last) {
                    let sums = Sums { m: block_sums, filter: f, filters, tiles: n, at, len };
                    // The run's outputs inside the output: rows S·row.., columns S·tx..
                    let plane = to.first + (start + i) * to.stride + f * oh * ow;
                    let (columns, rows) = (s * tx..ow.min(s * (tx + len)), s * row..oh.min(s * (row + 1)));
                    let mut outs: [&mut [f32]; 4] = Default::default();
                    for (out, y) in outs.iter_mut().zip(rows.clone()) {
                        let at = plane + y * ow + columns.start;
                        // SAFETY: each value lies inside `out` (asserted above: the
                        // plane is inside, and so are its row y and its columns),
                        // and only this block's task for filter f writes it: blocks
                        // hold disjoint tiles, tasks disjoint filters.
                        *out = unsafe { shared.run(at, columns.len()) };
                    }
                    let outs = &mut outs[..rows.len()];
                    transform_outputs(isa, tiling, sums, &value, outs, scratch);
                    if let Some(positive) = positive {
                        for (out, y) in outs.iter_mut().zip(rows.clone()) {
                            let at = plane + y * ow + columns.start;
                            crate::kernels::relu_gradient(out, &positive[at..at + columns.len()]);
                        }
                    }
                }
            });
            BLOCK.set((v_buffer, m_buffer));
        };
        if side_by_side {
            (0..blocks).into_par_iter().for_each(|b| block(b * BLOCK_TILES));
        } else {
            (0..blocks).for_each(|b| block(b * BLOCK_TILES));
        }
    }
    SPLIT.set(split);
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
