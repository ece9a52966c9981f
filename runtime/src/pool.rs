//! The gradient of 2×2, stride-2 max pooling with AVX2: eight windows at a
//! time, by the same rule as `kernels::pool_backward` (each window's
//! gradient goes to its first largest input in row-major order).
#![allow(unsafe_code)]

use std::arch::x86_64::{
    _CMP_GT_OQ, _mm256_and_ps, _mm256_andnot_ps, _mm256_blendv_ps, _mm256_castpd_ps, _mm256_castps_pd, _mm256_cmp_ps,
    _mm256_loadu_ps, _mm256_or_ps, _mm256_permute4x64_pd, _mm256_shuffle_ps, _mm256_storeu_ps, _mm256_unpackhi_ps,
    _mm256_unpacklo_ps,
};

use crate::kernels::Window;

/// Whether this path can run the pooling `win` on this CPU.
pub fn applies(win: Window) -> bool {
    win.is_square() && win.rows.kernel == 2 && win.rows.stride == 2 && is_x86_feature_detected!("avx2")
}

/// dx for `x` (`[n, C, H, W]`) and the pooled gradient `g`.
pub fn max_pool_2x2_backward(x: &[f32], g: &[f32], dx: &mut [f32], win: Window) {
    let (oh, ow, w) = (win.out_height(), win.out_width(), win.width);
    // Rows and columns no window covers (odd sizes) get zero.
    dx.fill(0.0);
    let plane = win.height * w;
    let planes = x.chunks_exact(plane).zip(dx.chunks_exact_mut(plane)).zip(g.chunks_exact(oh * ow));
    for ((xp, dp), gp) in planes {
        let rows = xp.chunks_exact(2 * w).zip(dp.chunks_exact_mut(2 * w)).zip(gp.chunks_exact(ow));
        for ((xr, dr), grads) in rows {
            let ((x0, x1), (d0, d1)) = (xr.split_at(w), dr.split_at_mut(w));
            let whole = ow / 8 * 8;
            for ox in (0..whole).step_by(8) {
                let at = 2 * ox..2 * ox + 16;
                // SAFETY: the CPU has AVX2 (`applies`); each slice holds the
                // 16 inputs of 8 windows, or their 8 gradients.
                unsafe {
                    eight_windows(
                        (&x0[at.clone()], &x1[at.clone()]),
                        &grads[ox..ox + 8],
                        (&mut d0[at.clone()], &mut d1[at]),
                    )
                };
            }
            if whole < ow {
                // The last, partial group runs on zero-padded copies.
                let (ox, n) = (whole, 2 * (ow - whole));
                let at = 2 * ox..2 * ox + n;
                let (mut t, mut b, mut gs, mut dt, mut db) = ([0.0; 16], [0.0; 16], [0.0; 8], [0.0; 16], [0.0; 16]);
                t[..n].copy_from_slice(&x0[at.clone()]);
                b[..n].copy_from_slice(&x1[at.clone()]);
                gs[..n / 2].copy_from_slice(&grads[ox..ox + n / 2]);
                // SAFETY: the CPU has AVX2 (`applies`); the arrays hold the 16
                // inputs (or gradients) of 8 windows and their 8 gradients.
                unsafe { eight_windows((&t, &b), &gs, (&mut dt, &mut db)) };
                d0[at.clone()].copy_from_slice(&dt[..n]);
                d1[at].copy_from_slice(&db[..n]);
            }
        }
    }
}

/// Eight windows: inputs (a0 a1 of each window) on the top row, (b0 b1) on the
/// bottom row, interleaved as in memory.
#[target_feature(enable = "avx2")]
unsafe fn eight_windows((top, bottom): (&[f32], &[f32]), g: &[f32], (dtop, dbottom): (&mut [f32], &mut [f32])) {
    // SAFETY: the caller passes 16 values per row and 8 gradients.
    let (t0, t1, b0, b1, g) = unsafe {
        (
            _mm256_loadu_ps(top.as_ptr()),
            _mm256_loadu_ps(top.as_ptr().add(8)),
            _mm256_loadu_ps(bottom.as_ptr()),
            _mm256_loadu_ps(bottom.as_ptr().add(8)),
            _mm256_loadu_ps(g.as_ptr()),
        )
    };
    // Even and odd elements; windows come out in the order 0 1 4 5 2 3 6 7,
    // so the gradients are permuted the same way.
    let (a0, a1) = (_mm256_shuffle_ps::<0x88>(t0, t1), _mm256_shuffle_ps::<0xDD>(t0, t1));
    let (c0, c1) = (_mm256_shuffle_ps::<0x88>(b0, b1), _mm256_shuffle_ps::<0xDD>(b0, b1));
    let g = _mm256_castpd_ps(_mm256_permute4x64_pd::<0xD8>(_mm256_castps_pd(g)));
    let over_a1 = _mm256_cmp_ps::<_CMP_GT_OQ>(a1, a0);
    let best = _mm256_blendv_ps(a0, a1, over_a1);
    let over_c0 = _mm256_cmp_ps::<_CMP_GT_OQ>(c0, best);
    let best = _mm256_blendv_ps(best, c0, over_c0);
    let over_c1 = _mm256_cmp_ps::<_CMP_GT_OQ>(c1, best);
    let later = _mm256_or_ps(over_c0, over_c1);
    let da0 = _mm256_andnot_ps(_mm256_or_ps(over_a1, later), g);
    let da1 = _mm256_and_ps(_mm256_andnot_ps(later, over_a1), g);
    let dc0 = _mm256_and_ps(_mm256_andnot_ps(over_c1, over_c0), g);
    let dc1 = _mm256_and_ps(over_c1, g);
    // Interleaving back restores memory order: unpacklo holds windows 0–3.
    // SAFETY: the caller passes 16 values per output row.
    unsafe {
        _mm256_storeu_ps(dtop.as_mut_ptr(), _mm256_unpacklo_ps(da0, da1));
        _mm256_storeu_ps(dtop.as_mut_ptr().add(8), _mm256_unpackhi_ps(da0, da1));
        _mm256_storeu_ps(dbottom.as_mut_ptr(), _mm256_unpacklo_ps(dc0, dc1));
        _mm256_storeu_ps(dbottom.as_mut_ptr().add(8), _mm256_unpackhi_ps(dc0, dc1));
    }
}
