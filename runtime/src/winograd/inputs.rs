//! The input transform: each channel's padded rows split by column modulo
//! S (`Plane`), then Bᵀ·d·B for the N×N input block d of every tile, a
//! run of tiles of one row per step.

use rayon::prelude::*;

use super::Tiling;
use crate::gemm::Isa;
use crate::simd::compiled_for_isa;

/// Each channel of `image` into its `plane` of `planes`, side by side.
pub(super) fn fill_planes(isa: Isa, plane: Plane, image: &[f32], planes: &mut [f32]) {
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
    pub(super) fn transform_inputs(
        tiling: Tiling,
        plane: Plane,
        split: &[f32],
        run: Run,
        outs: (&mut [&mut [f32]], usize),
        scratch: &mut Vec<f32>,
    ) {
        match tiling {
            Tiling::Two => plane.inputs_two(split, run, outs, scratch),
            Tiling::Four => plane.inputs_four(split, run, outs, scratch),
        }
    }
}

/// Tiles `first..first + len` of tile row `row`: consecutive tiles, whose
/// transforms are one vector loop each.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Run {
    pub(super) row: usize,
    pub(super) first: usize,
    pub(super) len: usize,
}

/// One channel's input, zero-padded, each row split by column modulo S.
#[derive(Clone, Copy)]
pub(super) struct Plane {
    /// S: outputs per side of a tile, and the phases a row splits into.
    pub(super) step: usize,
    /// Padded rows kept: S per row of tiles, plus two.
    pub(super) rows: usize,
    /// Values per phase of a row: one per column of tiles, plus one.
    pub(super) phase: usize,
    pub(super) padding: usize,
    pub(super) height: usize,
    pub(super) width: usize,
}

impl Plane {
    /// Values per padded row: its S phases.
    fn line(self) -> usize {
        self.step * self.phase
    }

    pub(super) fn len(self) -> usize {
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
            unsafe { deinterleave4(scratch, phases, self.phase) };
        }
    }

    /// The columns of each padded row that the first step (Bᵀ·d) combines
    /// for `run`: values first..=first + len of each phase (whole vectors
    /// where the phase has room, `whole`), or the whole row at once when
    /// that is all of them.
    #[inline(always)]
    fn first_step(self, Run { first, len, .. }: Run) -> impl Iterator<Item = std::ops::Range<usize>> {
        let count = whole(len + 1, self.phase - first);
        let (phases, span) = if first == 0 && count == self.phase { (1, self.line()) } else { (self.step, count) };
        (0..phases).map(move |p| p * self.phase + first..p * self.phase + first + span)
    }

    /// outs[ξ][at + i] = (Bᵀ·d·B)[ξ] for the 4×4 input block d of tile i of
    /// `run`, F(2×2) (each of the 16 outs long enough).
    /// Each step is a loop over the run's tiles, so that it runs in
    /// vectors; `scratch` holds its intermediate rows. The loops run over
    /// whole vectors where the outs have room (`whole`): the values past
    /// the run's are never read.
    #[inline(always)]
    fn inputs_two(self, split: &[f32], run: Run, (outs, at): (&mut [&mut [f32]], usize), scratch: &mut Vec<f32>) {
        let (half, Run { row: ty, first, len }) = (self.phase, run);
        let line = 2 * half;
        // Bᵀ·d for the run: four combined rows, each its even columns then
        // its odd ones, of which the run's tiles read values first..=first + len.
        scratch.resize(4 * line + SLACK, 0.0);
        let (t, d) = (&mut scratch[..], &split[2 * ty * line..][..4 * line]);
        for columns in self.first_step(run) {
            let d = |i: usize| &d[i * line..][columns.clone()];
            let mut rows = t.chunks_exact_mut(line).map(|row| &mut row[columns.clone()]);
            let mut next = || rows.next().expect("four rows");
            combine(next(), d(0), d(2), |a, b| a - b);
            combine(next(), d(1), d(2), |a, b| a + b);
            combine(next(), d(2), d(1), |a, b| a - b);
            combine(next(), d(1), d(3), |a, b| a - b);
        }
        let len = whole(len, room(outs) - at);
        for (i, outs) in outs.chunks_exact_mut(4).enumerate() {
            // (Bᵀ·d)·B: with a, b, c, e the block's columns (even[tx], odd[tx],
            // even[tx + 1], odd[tx + 1]), a − c, b + c, c − b and b − e.
            let (even, odd) = (&t[i * line + first..][..len + 1], &t[i * line + half + first..][..len + 1]);
            let mut outs = outs.iter_mut().map(|o| &mut o[at..at + len]);
            let mut next = || outs.next().expect("four rows");
            combine(next(), &even[..len], &even[1..], |a, c| a - c);
            combine(next(), &odd[..len], &even[1..], |b, c| b + c);
            combine(next(), &even[1..], &odd[..len], |c, b| c - b);
            combine(next(), &odd[..len], &odd[1..], |b, e| b - e);
        }
    }

    /// `inputs_two` for F(4×4): 6×6 input blocks, 36 values each.
    #[inline(always)]
    fn inputs_four(self, split: &[f32], run: Run, (outs, at): (&mut [&mut [f32]], usize), scratch: &mut Vec<f32>) {
        let (phase, Run { row: ty, first, len }) = (self.phase, run);
        let line = 4 * phase;
        // Bᵀ·d for the run: six combined rows, each split as the input's,
        // of which the run's tiles read values first..=first + len of each phase.
        scratch.resize(6 * line + SLACK, 0.0);
        let (t, d) = (&mut scratch[..], &split[4 * ty * line..][..6 * line]);
        for columns in self.first_step(run) {
            let d: [&[f32]; 6] = std::array::from_fn(|i| &d[i * line..][columns.clone()]);
            let mut rows = t.chunks_exact_mut(line).map(|row| &mut row[columns.clone()]);
            inputs_four_rows(std::array::from_fn(|_| rows.next().expect("six rows")), d);
        }
        let len = whole(len, room(outs) - at);
        for (i, outs) in outs.chunks_exact_mut(6).enumerate() {
            // (Bᵀ·d)·B: column j of tile tx is value tx + j / 4 of phase j % 4.
            let columns: [&[f32]; 6] = std::array::from_fn(|j| &t[i * line + (j % 4) * phase + first + j / 4..][..len]);
            let [o0, o1, o2, o3, o4, o5] = outs else { unreachable!("chunks of six") };
            let span = at..at + len;
            // Cut one by one: through `array::map` each cut was a call.
            let (o0, o1, o2) = (&mut o0[span.clone()], &mut o1[span.clone()], &mut o2[span.clone()]);
            let (o3, o4, o5) = (&mut o3[span.clone()], &mut o4[span.clone()], &mut o5[span]);
            inputs_four_rows([o0, o1, o2, o3, o4, o5], columns);
        }
    }
}

/// The widest vector loops run over (AVX-512's 16 values).
pub(super) const LANES: usize = 16;
/// Values past the intermediate rows that a loop over whole vectors reads.
const SLACK: usize = 2 * LANES;

/// `len` rounded up to whole vectors where `room` allows: a loop then
/// ends without a partial vector, which on runs of a few dozen tiles took
/// longer than the whole ones.
#[inline(always)]
pub(super) fn whole(len: usize, room: usize) -> usize {
    len.next_multiple_of(LANES).min(room).max(len)
}

/// Values every one of `outs` has room for.
#[inline(always)]
fn room(outs: &[&mut [f32]]) -> usize {
    outs.iter().map(|o| o.len()).min().unwrap_or(0)
}

/// out[i] = (Bᵀ·[d0 … d5])[i] for F(4×4), value by value.
#[inline(always)]
fn inputs_four_rows(out: [&mut [f32]; 6], d: [&[f32]; 6]) {
    // Each slice cut to one length in place, not by `array::map`, whose
    // closure may stay a call that hides the lengths (the loop then runs
    // one value at a time, each index checked).
    let [o0, o1, o2, o3, o4, o5] = out;
    let [d0, d1, d2, d3, d4, d5] = d;
    let len = o0.len();
    let (o1, o2, o3, o4, o5) = (&mut o1[..len], &mut o2[..len], &mut o3[..len], &mut o4[..len], &mut o5[..len]);
    let (d0, d1, d2, d3, d4, d5) = (&d0[..len], &d1[..len], &d2[..len], &d3[..len], &d4[..len], &d5[..len]);
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

/// to[p·stride + i] = from[4i + p] for the n = len / 4 groups of four
/// values of `from` (stride ≥ n): a row split into its phases (columns
/// modulo 4), each phase `stride` values after the last, eight groups
/// at a time by shuffles in 256-bit registers, where the compiler's code
/// for the strided copies moved one value at a time.
///
/// # Safety
/// The CPU has AVX2 (the callers are compiled for AVX2 or AVX-512).
#[inline(always)]
pub(super) unsafe fn deinterleave4(from: &[f32], to: &mut [f32], stride: usize) {
    use std::arch::x86_64::{
        _mm256_loadu_ps, _mm256_permutevar8x32_ps, _mm256_setr_epi32, _mm256_shuffle_ps, _mm256_storeu_ps,
        _mm256_unpackhi_ps, _mm256_unpacklo_ps,
    };
    let n = from.len() / 4;
    assert!(from.len() == 4 * n && stride >= n && to.len() >= 3 * stride + n);
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
                _mm256_storeu_ps(to.as_mut_ptr().add(phase * stride + i), _mm256_permutevar8x32_ps(v, order));
            }
        }
    }
    for i in whole..n {
        for phase in 0..4 {
            to[phase * stride + i] = from[4 * i + phase];
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
