//! The output transform: Aᵀ·m·A for the N×N sums m of every tile, a
//! whole row of tiles per step, each output through the epilogue's `value`.

use super::{Tiling, combine3};
use crate::simd::compiled_for_isa;

compiled_for_isa! {
    /// `outputs_two` or `outputs_four` in the vectors of `isa`.
    pub(super) fn transform_outputs(
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

/// One filter's sums in a block of the products, M[ξ][filter][t]: the
/// block's `tiles` are whole rows of `tw` tiles from tile row `ty0`.
#[derive(Clone, Copy)]
pub(super) struct Sums<'a> {
    pub(super) m: &'a [f32],
    pub(super) filter: usize,
    pub(super) filters: usize,
    pub(super) ty0: usize,
    pub(super) tw: usize,
    pub(super) tiles: usize,
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
