//! The filter transform: U[ξ] = G·g·Gᵀ for every 3×3 filter g of a weight
//! (or of its input gradient's turned filter), a group of filters at a
//! time in vector loops, into this thread's buffer, kept from call to call
//! (`kept`), or shared by the members of a team.
#![allow(unsafe_code)]

use std::cell::RefCell;
use std::ops::Range;

use rayon::prelude::*;

use super::{Tiling, Transformed, combine3};
use crate::collective::{ThreadTeam, as_member, part_range};
use crate::gemm::Isa;
use crate::kept;
use crate::kernels::Window;
use crate::products::Output;
use crate::simd::compiled_for_isa;

thread_local! {
    /// The transformed filter, on the calling thread.
    static FILTER: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
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
pub(super) enum Filters<'a> {
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
pub(super) fn with_filter_for<R>(
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
