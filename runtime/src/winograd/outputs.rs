//! The output transform: Aᵀ·m·A for the N×N sums m of every tile, a run
//! of tiles per step, each output through the epilogue's `value`.

use super::inputs::{LANES, whole};
use super::{Tiling, combine3};
use crate::simd::compiled_for_isa;

compiled_for_isa! {
    /// `outputs_two` or `outputs_four` in the vectors of `isa`.
    pub(super) fn transform_outputs(
        tiling: Tiling,
        sums: Sums,
        value: impl Fn(f32) -> f32,
        rows: &mut [&mut [f32]],
        scratch: &mut Vec<f32>,
    ) {
        match tiling {
            Tiling::Two => outputs_two(sums, value, rows, scratch),
            Tiling::Four => outputs_four(sums, value, rows, scratch),
        }
    }
}

/// One filter's sums for a run of tiles in a block of the products,
/// M[ξ][filter][at..at + len] of the block's `tiles`.
#[derive(Clone, Copy)]
pub(super) struct Sums<'a> {
    pub(super) m: &'a [f32],
    pub(super) filter: usize,
    pub(super) filters: usize,
    pub(super) tiles: usize,
    pub(super) at: usize,
    pub(super) len: usize,
}

impl Sums<'_> {
    /// Values the steps run over: the run's rounded up to whole vectors
    /// (`inputs::whole`; M has room for them past its end). The outputs
    /// take the run's alone.
    fn whole(&self) -> usize {
        whole(self.len, self.len + LANES)
    }

    /// M[ξ][filter] for the run's tiles, `len` of them.
    fn at(&self, xi: usize, len: usize) -> &[f32] {
        &self.m[(xi * self.filters + self.filter) * self.tiles + self.at..][..len]
    }
}

/// rows[a][2tx + b] = value((Aᵀ·m·A)[a][b]) for the 16 sums m of each tile
/// tx of the run `sums`, F(2×2): `rows` are the run's output rows inside
/// the output (two, or one at its bottom edge), each its columns inside
/// the output. As with the inputs, each step is a loop over the run's
/// tiles, and `scratch` holds the intermediate rows.
#[inline(always)]
fn outputs_two(sums: Sums, value: impl Fn(f32) -> f32, rows: &mut [&mut [f32]], scratch: &mut Vec<f32>) {
    let len = sums.whole();
    scratch.resize(10 * len, 0.0);
    // Aᵀ·m: rows m0 + m1 + m2 and m1 − m2 − m3, four columns each; then, for
    // ·A, the even and the odd output columns of one output row.
    let (s, columns) = scratch[..10 * len].split_at_mut(8 * len);
    let m = |xi: usize| sums.at(xi, len);
    for (j, s) in s.chunks_exact_mut(2 * len).enumerate() {
        let (s0, s1) = s.split_at_mut(len);
        combine3(s0, m(j), m(4 + j), m(8 + j), |a, b, c| a + b + c);
        combine3(s1, m(4 + j), m(8 + j), m(12 + j), |a, b, c| a - b - c);
    }
    for (a, row) in rows.iter_mut().enumerate() {
        let s = |j: usize| &s[(2 * j + a) * len..][..len];
        let (even, odd) = columns.split_at_mut(len);
        combine3(even, s(0), s(1), s(2), |p, q, r| value(p + q + r));
        combine3(odd, s(1), s(2), s(3), |q, r, t| value(q - r - t));
        let mut pairs = row.chunks_exact_mut(2);
        let whole = pairs.len();
        for ((pair, &e), &o) in (&mut pairs).zip(&*even).zip(&*odd) {
            pair.copy_from_slice(&[e, o]);
        }
        if let [last] = pairs.into_remainder() {
            *last = even[whole];
        }
    }
}

/// `outputs_two` for F(4×4): 36 sums a tile, 4×4 outputs.
#[inline(always)]
fn outputs_four(sums: Sums, value: impl Fn(f32) -> f32, rows: &mut [&mut [f32]], scratch: &mut Vec<f32>) {
    let len = sums.whole();
    scratch.resize(28 * len, 0.0);
    // Aᵀ·m: four rows of six columns (row a, column j at 6a + j); then, for
    // ·A, the four phases (output columns modulo 4) of one output row.
    let (s, phases) = scratch[..28 * len].split_at_mut(24 * len);
    for j in 0..6 {
        let column: [&[f32]; 6] = std::array::from_fn(|i| sums.at(6 * i + j, len));
        let mut rows = s.chunks_exact_mut(6 * len).map(|row| &mut row[j * len..(j + 1) * len]);
        outputs_four_rows(std::array::from_fn(|_| rows.next().expect("four rows")), column, |v| v);
    }
    for (a, out) in rows.iter_mut().enumerate() {
        let row: [&[f32]; 6] = std::array::from_fn(|j| &s[(6 * a + j) * len..][..len]);
        let mut outs = phases.chunks_exact_mut(len);
        outputs_four_rows(std::array::from_fn(|_| outs.next().expect("four phases")), row, &value);
        let phase: [&[f32]; 4] = std::array::from_fn(|b| &phases[b * len..(b + 1) * len]);
        let mut tiles = out.chunks_exact_mut(4);
        let whole = tiles.len();
        for (tx, tile) in (&mut tiles).enumerate() {
            tile.copy_from_slice(&[phase[0][tx], phase[1][tx], phase[2][tx], phase[3][tx]]);
        }
        for (b, o) in tiles.into_remainder().iter_mut().enumerate() {
            *o = phase[b][whole];
        }
    }
}

/// out[i] = value((Aᵀ·[m0 … m5])[i]) for F(4×4), value by value.
#[inline(always)]
fn outputs_four_rows(out: [&mut [f32]; 4], m: [&[f32]; 6], value: impl Fn(f32) -> f32) {
    // Cut in place, as in `inputs::inputs_four_rows`.
    let [o0, o1, o2, o3] = out;
    let [m0, m1, m2, m3, m4, m5] = m;
    let len = o0.len();
    let (o1, o2, o3) = (&mut o1[..len], &mut o2[..len], &mut o3[..len]);
    let (m0, m1, m2, m3, m4, m5) = (&m0[..len], &m1[..len], &m2[..len], &m3[..len], &m4[..len], &m5[..len]);
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
