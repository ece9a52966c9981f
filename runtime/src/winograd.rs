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

use std::cell::{Cell, RefCell};
use std::ops::Range;

use rayon::prelude::*;

use crate::collective::{ThreadTeam, as_member, part_range};
use crate::gemm::{Isa, Operand, multiply_in_place};
use crate::kept;
use crate::kernels::{Epilogue, Window};
use crate::products::Output;
use crate::simd::{aligned, compiled_for_isa};

mod inputs;
mod outputs;
mod weights;

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
    /// The transformed filter, on the calling thread.
    static FILTER: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
    /// One image's split input planes.
    static SPLIT: Cell<Vec<f32>> = const { Cell::new(Vec::new()) };
    /// A block's transformed inputs and its sums.
    static BLOCK: Cell<(Vec<f32>, Vec<f32>)> = const { Cell::new((Vec::new(), Vec::new())) };
}

/// Runs `work` with the filter `w` (`[F, C, 3, 3]`) transformed for the
/// tiling `win` runs: kept from call to call while the weights keep their
/// `version` (`kept`), else transformed into this thread's buffer, or,
/// `together`, with the other members of its team (`with_filter_for`).
pub fn with_filter<R>(
    w: &[f32],
    filters: usize,
    win: Window,
    (version, together): (u64, bool),
    work: impl FnOnce(Transformed) -> R,
) -> R {
    let tiling = Tiling::choose(win, version != kept::UNVERSIONED);
    if version == kept::UNVERSIONED {
        return with_filter_for(tiling, Filters::InOrder(w), filters, win, together, work);
    }
    let source = kept::Source::of(w, [tiling.points(), filters, win.channels]);
    let u = kept::transform(source, version, || {
        let mut u = vec![0.0; tiling.points() * filters * win.channels];
        transform_into(tiling, Filters::InOrder(w), filters, win, &mut u);
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
/// `flipped`, its window (`input_gradient_window`), `together` as in
/// `with_filter`.
pub fn with_input_gradient_filter<R>(
    w: &[f32],
    filters: usize,
    (win, flipped): (Window, Window),
    together: bool,
    work: impl FnOnce(Transformed) -> R,
) -> R {
    let turned = Filters::Turned { w, filters, channels: win.channels };
    with_filter_for(Tiling::choose(flipped, false), turned, win.channels, flipped, together, work)
}

/// The 3×3 filters a transform reads, numbered f·C + c for filter f's
/// channel c: a weight (`[F, C, 3, 3]`) in order, or the filter of its
/// input gradient, whose filter c·F + f is the weight's filter f over
/// channel c turned by 180° (read where it lies, with no copy).
#[derive(Clone, Copy)]
enum Filters<'a> {
    InOrder(&'a [f32]),
    Turned { w: &'a [f32], filters: usize, channels: usize },
}

impl Filters<'_> {
    fn count(self) -> usize {
        let (Filters::InOrder(w) | Filters::Turned { w, .. }) = self;
        w.len() / 9
    }

    /// taps[3r + c][i]: the tap at row r and column c of filter `first + i`,
    /// for the first `len` values of each row of `taps`.
    #[inline(always)]
    fn gather(self, first: usize, len: usize, taps: &mut [[f32; FILTER_GROUP]; 9]) {
        match self {
            Filters::InOrder(w) => {
                for (i, g) in w[9 * first..][..9 * len].chunks_exact(9).enumerate() {
                    taps.iter_mut().zip(g).for_each(|(tap, &value)| tap[i] = value);
                }
            }
            Filters::Turned { w, filters, channels } => {
                for i in 0..len {
                    let (c, f) = ((first + i) / filters, (first + i) % filters);
                    let g = &w[(f * channels + c) * 9..][..9];
                    taps.iter_mut().zip(g.iter().rev()).for_each(|(tap, &value)| tap[i] = value);
                }
            }
        }
    }
}

/// `with_filter` for `tiling`, into this thread's buffer; `together`,
/// on a thread of a team whose members all call it for the same weight
/// (replicas of a step sharing one store), each member transforms its
/// share of the filters, into the first member's buffer, where every
/// member's `work` reads them (`transform_together`).
fn with_filter_for<R>(
    tiling: Tiling,
    w: Filters,
    filters: usize,
    win: Window,
    together: bool,
    work: impl FnOnce(Transformed) -> R,
) -> R {
    FILTER.with(|cell| {
        let mut u = cell.borrow_mut();
        // Every value is written below, so the old ones need no clearing.
        u.resize(tiling.points() * filters * win.channels, 0.0);
        let mut work = Some(work);
        let mut take = || work.take().expect("`work` runs once");
        if together {
            let shared = as_member(|team, rank| transform_together(team, rank, tiling, w, &mut u, take()));
            if let Some(result) = shared {
                return result;
            }
        }
        transform_into(tiling, w, filters, win, &mut u);
        take()(Transformed { tiling, u: &u })
    })
}

/// One member's side of `with_filter_for` together: where its buffer is,
/// and the shape of the transform it asks for.
struct Share {
    u: Output,
    len: usize,
    tiling: Tiling,
}

/// `work` with the filter `w` transformed into `u` (`tiling`'s U, exactly
/// as long) by the members of `team` together: each transforms its share
/// of the filters into the first member's buffer, and once all have,
/// every member's `work` reads the whole of it there. Should the members
/// ask for different shapes (replicas of unequal batches may choose
/// different tilings), each transforms the whole filter into its own.
/// Each filter's values are computed as alone, so the bits do not change.
fn transform_together<R>(
    team: &ThreadTeam,
    rank: usize,
    tiling: Tiling,
    w: Filters,
    u: &mut [f32],
    work: impl FnOnce(Transformed) -> R,
) -> R {
    let (len, points) = (u.len(), tiling.points());
    let mine = Share { u: Output(u.as_mut_ptr()), len, tiling };
    team.together(rank, &mine, |members| {
        let first = members.get(0);
        let filters = len / points;
        if members.iter().any(|other| other.len != len || other.tiling != tiling) {
            // SAFETY: this member's own buffer, which no other member
            // touches when they transform apart.
            unsafe { transform_rows(tiling, w, (mine.u, filters), 0..filters) };
            return work(Transformed { tiling, u: unsafe { read_only(mine.u, len) } });
        }
        let share = part_range(filters, FILTER_GROUP, (rank, members.count()));
        // SAFETY: each member writes only its own share of each row U[ξ] of
        // the first member's buffer (as long as this one), and no member
        // reads any of it before the barrier below.
        unsafe { transform_rows(tiling, w, (first.u, filters), share.0..share.1) };
        team.wait();
        // SAFETY: every share is written, and no member writes the buffer
        // again before every member's `work` has returned (`together`).
        work(Transformed { tiling, u: unsafe { read_only(first.u, len) } })
    })
}

/// The `len` values from `u` on, read only.
///
/// # Safety
/// They are initialized, and no thread writes them while they are read.
unsafe fn read_only<'a>(u: Output, len: usize) -> &'a [f32] {
    // SAFETY: the caller's contract.
    unsafe { std::slice::from_raw_parts(u.0, len) }
}

/// U[ξ][f][c] = (G·g·Gᵀ)[ξ] for the 3×3 filter g of f over channel c, into
/// `u` (exactly as long).
fn transform_into(tiling: Tiling, w: Filters, filters: usize, win: Window, u: &mut [f32]) {
    let n = filters * win.channels;
    assert_eq!(u.len(), n * tiling.points());
    // SAFETY: `u` holds the rows U[ξ], n values each, and is borrowed here alone.
    unsafe { transform_rows(tiling, w, (Output(u.as_mut_ptr()), n), 0..n) };
}

/// Row ξ of U (`n` values from `u` + ξ·n) = (G·g·Gᵀ)[ξ] for filters
/// `filters` of `w` (`Filters`' numbering), in chunks that run in
/// parallel, each writing its part of every row.
///
/// # Safety
/// `u` holds `tiling`'s points rows of `n` values, and nothing else reads
/// or writes their values `filters` while this runs.
unsafe fn transform_rows(tiling: Tiling, w: Filters, (u, n): (Output, usize), filters: Range<usize>) {
    assert!(filters.end <= n && n == w.count());
    let isa = Isa::detect().expect("`applies` checked the CPU");
    let points = tiling.points();
    (0..filters.len().div_ceil(FILTER_CHUNK)).into_par_iter().for_each(|k| {
        let start = filters.start + k * FILTER_CHUNK;
        let len = FILTER_CHUNK.min(filters.end - start);
        let mut rows: [&mut [f32]; 36] = std::array::from_fn(|_| &mut [][..]);
        for (xi, row) in rows.iter_mut().take(points).enumerate() {
            // SAFETY: filters start.. of row ξ lie inside `u`, and only this chunk writes them.
            *row = unsafe { u.run(xi * n + start, len) };
        }
        transform_filters(isa, tiling, (w, start), &mut rows[..points]);
    });
}

/// 3×3 filters transformed per parallel task.
const FILTER_CHUNK: usize = 4096;
/// 3×3 filters transformed together, their taps side by side so that each
/// step of the transform is a vector loop over them.
const FILTER_GROUP: usize = 128;

compiled_for_isa! {
    /// rows[ξ][i] = (G·g·Gᵀ)[ξ] for each 3×3 filter g = filter `first + i`
    /// of `w`, for the values of `rows`.
    fn transform_filters(tiling: Tiling, source: (Filters, usize), rows: &mut [&mut [f32]]) {
        let (w, first) = source;
        // Each group's taps and intermediate rows, every value written before it is read.
        let mut taps = [[0.0f32; FILTER_GROUP]; 9];
        let mut gg = [[[0.0f32; FILTER_GROUP]; 3]; 6];
        let count = rows[0].len();
        for start in (0..count).step_by(FILTER_GROUP) {
            let len = FILTER_GROUP.min(count - start);
            w.gather(first + start, len, &mut taps);
            let taps = taps.each_ref().map(|tap| &tap[..len]);
            let rows = rows.iter_mut().map(|row| &mut row[start..start + len]);
            match tiling {
                Tiling::Two => filters_two(taps, rows, &mut gg),
                Tiling::Four => filters_four(taps, rows, &mut gg),
            }
        }
    }
}

/// G·g for a group of filters: up to six rows of three columns.
type Rows = [[[f32; FILTER_GROUP]; 3]; 6];

/// The 16 rows of F(2×2)'s G·g·Gᵀ for the filters of `taps` (a group's).
#[inline(always)]
fn filters_two<'a>(taps: [&[f32]; 9], mut rows: impl Iterator<Item = &'a mut [f32]>, scratch: &mut Rows) {
    // G·g: the rows g0, (g0 + g1 + g2)/2, (g0 − g1 + g2)/2 and g2, each of three columns.
    let len = taps[0].len();
    let halves = &mut scratch[..2];
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
#[inline(always)]
fn filters_four<'a>(taps: [&[f32]; 9], mut rows: impl Iterator<Item = &'a mut [f32]>, gg: &mut Rows) {
    // G·g: six rows of three columns.
    let len = taps[0].len();
    for c in 0..3 {
        let mut column = gg.iter_mut().map(|row| &mut row[c][..len]);
        let out = std::array::from_fn(|_| column.next().expect("six rows"));
        filter_rows_four(out, [taps[c], taps[3 + c], taps[6 + c]]);
    }
    // (G·g)·Gᵀ: each row's six combinations of its three columns.
    for row in gg.iter() {
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
