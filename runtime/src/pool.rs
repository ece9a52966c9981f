//! 2×2, stride-2 max pooling and its gradient with AVX2: eight windows at
//! a time (the last ones of a row read under a mask), by the same rules as
//! `kernels::pool` (a window's largest value, NaNs passed over) and
//! `kernels::pool_backward` (each window's gradient goes to its first
//! largest input in row-major order).
#![allow(unsafe_code)]

use std::arch::x86_64::*;

use crate::kernels::Window;

/// Whether this path can run the pooling `win` on this CPU.
pub fn applies(win: Window) -> bool {
    win.is_square()
        && win.rows.kernel == 2
        && win.rows.stride == 2
        && win.rows.padding == 0
        && is_x86_feature_detected!("avx2")
}

/// y for `x` (`[n, C, H, W]`).
pub fn max_pool_2x2(x: &[f32], y: &mut [f32], win: Window) {
    // SAFETY: the CPU has AVX2 (`applies`).
    unsafe { max_pool_2x2_avx2(x, y, win) }
}

/// dx for `x` (`[n, C, H, W]`) and the pooled gradient `g`; with `relu`
/// times [x > 0] (as `kernels::pool_backward` with `relu`), x being a ReLU's output.
pub fn max_pool_2x2_backward(x: &[f32], g: &[f32], dx: &mut [f32], win: Window, relu: bool) {
    // SAFETY: the CPU has AVX2 (`applies`).
    unsafe { max_pool_2x2_backward_avx2(x, g, dx, win, relu) }
}

#[target_feature(enable = "avx2")]
fn max_pool_2x2_avx2(x: &[f32], y: &mut [f32], win: Window) {
    let (oh, ow, w) = (win.out_height(), win.out_width(), win.width);
    let len = y.len();
    for (p, (xp, yp)) in x.chunks_exact(win.height * w).zip(y.chunks_exact_mut(oh * ow)).enumerate() {
        for (oy, (rows, out)) in xp.chunks_exact(2 * w).zip(yp.chunks_exact_mut(ow)).enumerate() {
            let (top, bottom) = rows.split_at(w);
            for ox in (0..ow).step_by(8) {
                let at = 2 * ox;
                // A row's last group stores a whole vector where y has
                // room: what lands past the row is written again with the
                // next row.
                let room = len - ((p * oh + oy) * ow + ox);
                // SAFETY: the CPU has AVX2; `Group` reads only the windows
                // within the row, and writes within y.
                unsafe {
                    Group::of(ow - ox, room >= 8)
                        .forward((top[at..].as_ptr(), bottom[at..].as_ptr()), out[ox..].as_mut_ptr())
                };
            }
        }
    }
}

#[target_feature(enable = "avx2")]
fn max_pool_2x2_backward_avx2(x: &[f32], g: &[f32], dx: &mut [f32], win: Window, relu: bool) {
    let (oh, ow, w) = (win.out_height(), win.out_width(), win.width);
    // Rows and columns no window covers (odd sizes) get zero.
    if win.height % 2 == 1 || w % 2 == 1 {
        dx.fill(0.0);
    }
    let (plane, len) = (win.height * w, dx.len());
    let planes = x.chunks_exact(plane).zip(dx.chunks_exact_mut(plane)).zip(g.chunks_exact(oh * ow));
    for (p, ((xp, dp), gp)) in planes.enumerate() {
        let rows = xp.chunks_exact(2 * w).zip(dp.chunks_exact_mut(2 * w)).zip(gp.chunks_exact(ow));
        for (oy, ((xr, dr), grads)) in rows.enumerate() {
            let ((x0, x1), (d0, d1)) = (xr.split_at(w), dr.split_at_mut(w));
            // Right to left: a row's last group stores whole vectors where
            // dx has room, and what lands past either of its rows (zeros,
            // from the lanes past the group) is written again by a group
            // stored later, or is a zero of the uncovered rows and columns.
            for ox in (0..ow).step_by(8).rev() {
                let at = 2 * ox;
                let room = len - (p * plane + (2 * oy + 1) * w + at);
                // SAFETY: the CPU has AVX2; `Group` reads only the windows
                // within the row, and writes within dx.
                unsafe {
                    Group::of(ow - ox, room >= 16).backward(
                        (x0[at..].as_ptr(), x1[at..].as_ptr()),
                        grads[ox..].as_ptr(),
                        (d0[at..].as_mut_ptr(), d1[at..].as_mut_ptr()),
                        relu,
                    )
                };
            }
        }
    }
}

/// Up to eight windows side by side: how many, the masks of their
/// values (two registers a row) and of their outputs (one), and whether
/// their stores may write whole vectors. (Masked stores are slow on AMD's
/// cores: on a Zen 3 they took about a quarter of LeNet's pooling.)
struct Group {
    windows: usize,
    masks: [__m256i; 3],
    whole_stores: bool,
}

/// The lanes below `n`, for n in 0..=8 (a window of `LOWEST` from 8 − n).
const LOWEST: [i32; 16] = [-1, -1, -1, -1, -1, -1, -1, -1, 0, 0, 0, 0, 0, 0, 0, 0];

impl Group {
    /// The next `min(remaining, 8)` windows of a row; with `whole_stores`
    /// every store writes all its lanes, the ones past the group included.
    ///
    /// # Safety
    /// The CPU has AVX2.
    #[inline(always)]
    unsafe fn of(remaining: usize, whole_stores: bool) -> Group {
        let windows = remaining.min(8);
        let lanes = |n: usize| {
            let n = n.min(8);
            // SAFETY: 8 − n ≤ 8, so the eight values lie inside LOWEST; the caller's contract.
            unsafe { _mm256_loadu_si256(LOWEST[8 - n..].as_ptr().cast()) }
        };
        let masks = [lanes(2 * windows), lanes((2 * windows).saturating_sub(8)), lanes(windows)];
        Group { windows, masks, whole_stores }
    }

    /// Loads 8 values from `at` (`part` 0 or 1 of a row's 16, or the
    /// outputs' 8 for part 2), the lanes past the group as zero.
    ///
    /// # Safety
    /// The CPU has AVX2; the group's values lie inside the buffer.
    #[inline(always)]
    unsafe fn load(&self, at: *const f32, part: usize) -> __m256 {
        // SAFETY: the caller's contract; a masked load reads only its lanes.
        unsafe { if self.windows == 8 { _mm256_loadu_ps(at) } else { _mm256_maskload_ps(at, self.masks[part]) } }
    }

    /// Stores the group's lanes of `v` to `at` (as `load`), or all eight
    /// with `whole_stores`.
    ///
    /// # Safety
    /// As `load`; with `whole_stores`, all eight values lie inside the buffer.
    #[inline(always)]
    unsafe fn store(&self, at: *mut f32, part: usize, v: __m256) {
        // SAFETY: the caller's contract; a masked store writes only its lanes.
        unsafe {
            if self.windows == 8 || self.whole_stores {
                _mm256_storeu_ps(at, v)
            } else {
                _mm256_maskstore_ps(at, self.masks[part], v)
            }
        }
    }

    /// The windows' two rows as (a0, a1) of the top and (c0, c1) of the
    /// bottom, windows in the order 0 1 4 5 2 3 6 7. (A row's second eight
    /// values may lie past its end, masked off: hence `wrapping_add`.)
    ///
    /// # Safety
    /// As `load`, for both rows.
    #[inline(always)]
    unsafe fn corners(&self, (top, bottom): (*const f32, *const f32)) -> [__m256; 4] {
        // SAFETY: the caller's contract.
        let (t0, t1, b0, b1) = unsafe {
            (
                self.load(top, 0),
                self.load(top.wrapping_add(8), 1),
                self.load(bottom, 0),
                self.load(bottom.wrapping_add(8), 1),
            )
        };
        // SAFETY: the CPU has AVX2 (the caller's contract).
        unsafe {
            [
                _mm256_shuffle_ps::<0x88>(t0, t1),
                _mm256_shuffle_ps::<0xDD>(t0, t1),
                _mm256_shuffle_ps::<0x88>(b0, b1),
                _mm256_shuffle_ps::<0xDD>(b0, b1),
            ]
        }
    }

    /// The windows' largest values, NaNs passed over (−∞ when all are).
    ///
    /// # Safety
    /// As `corners`, and `out` holds the group's outputs.
    #[inline(always)]
    unsafe fn forward(&self, rows: (*const f32, *const f32), out: *mut f32) {
        // SAFETY: the caller's contract.
        unsafe {
            let corners = self.corners(rows);
            // max_ps returns its second operand when either is NaN.
            let best = corners.iter().fold(_mm256_set1_ps(f32::NEG_INFINITY), |best, &v| _mm256_max_ps(v, best));
            self.store(out, 2, in_window_order(best));
        }
    }

    /// Each window's gradient sent to its first largest input, zero to the
    /// others; with `relu`, times [largest > 0] as `kernels::pool_backward`
    /// would multiply it.
    ///
    /// # Safety
    /// As `corners`, for the inputs and for their gradients, and `g` holds
    /// the group's gradients.
    #[inline(always)]
    unsafe fn backward(
        &self,
        rows: (*const f32, *const f32),
        g: *const f32,
        (dtop, dbottom): (*mut f32, *mut f32),
        relu: bool,
    ) {
        // SAFETY: the caller's contract.
        unsafe {
            let [a0, a1, c0, c1] = self.corners(rows);
            let g = in_window_order(self.load(g, 2));
            let over_a1 = _mm256_cmp_ps::<_CMP_GT_OQ>(a1, a0);
            let best = _mm256_blendv_ps(a0, a1, over_a1);
            let over_c0 = _mm256_cmp_ps::<_CMP_GT_OQ>(c0, best);
            let best = _mm256_blendv_ps(best, c0, over_c0);
            let over_c1 = _mm256_cmp_ps::<_CMP_GT_OQ>(c1, best);
            let g = if relu {
                let best = _mm256_blendv_ps(best, c1, over_c1);
                let positive = _mm256_cmp_ps::<_CMP_GT_OQ>(best, _mm256_setzero_ps());
                _mm256_mul_ps(g, _mm256_and_ps(positive, _mm256_set1_ps(1.0)))
            } else {
                g
            };
            let later = _mm256_or_ps(over_c0, over_c1);
            let da0 = _mm256_andnot_ps(_mm256_or_ps(over_a1, later), g);
            let da1 = _mm256_and_ps(_mm256_andnot_ps(later, over_a1), g);
            let dc0 = _mm256_and_ps(_mm256_andnot_ps(over_c1, over_c0), g);
            let dc1 = _mm256_and_ps(over_c1, g);
            // Interleaving back restores memory order: unpacklo holds windows 0–3.
            self.store(dtop, 0, _mm256_unpacklo_ps(da0, da1));
            self.store(dtop.wrapping_add(8), 1, _mm256_unpackhi_ps(da0, da1));
            self.store(dbottom, 0, _mm256_unpacklo_ps(dc0, dc1));
            self.store(dbottom.wrapping_add(8), 1, _mm256_unpackhi_ps(dc0, dc1));
        }
    }
}

/// Swaps the middle pairs of lanes: windows 0 1 2 3 4 5 6 7 to 0 1 4 5 2 3
/// 6 7 and back.
///
/// # Safety
/// The CPU has AVX2.
#[inline(always)]
unsafe fn in_window_order(v: __m256) -> __m256 {
    // SAFETY: the caller's contract.
    unsafe { _mm256_castpd_ps(_mm256_permute4x64_pd::<0xD8>(_mm256_castps_pd(v))) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::{self, Taps};

    /// Both directions against the reference loops, bit for bit: odd and
    /// even sizes, rows of 1 to 21 windows (partial groups of every
    /// length), ties and NaNs, and the gradient with a ReLU's (windows
    /// whose largest value is negative, zero or positive). Each writes only
    /// inside its buffer, though it stores whole vectors where it has room.
    #[test]
    fn two_by_two_max_pooling_matches_the_reference_loops() {
        let taps = Taps { kernel: 2, stride: 2, padding: 0, dilation: 1 };
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        // A buffer of `len` NaNs and eight sentinels after it.
        let guarded = |len: usize| [vec![f32::NAN; len], vec![7.0; 8]].concat();
        for (height, width) in [(2, 2), (3, 5), (4, 16), (7, 17), (6, 30), (5, 43), (2, 9), (5, 2), (3, 3)] {
            let win = Window { batch: 2, channels: 3, height, width, rows: taps, cols: taps };
            if !applies(win) {
                return;
            }
            let n = 2 * 3 * height * width;
            // Few distinct values, so windows tie; a NaN now and then.
            let x: Vec<f32> = (0..n).map(|i| if i % 37 == 5 { f32::NAN } else { ((i * 7) % 5) as f32 - 2.0 }).collect();
            let out = 2 * 3 * win.out_height() * win.out_width();
            let g: Vec<f32> = (0..out).map(|i| i as f32 + 1.0).collect();
            let (mut y, mut y_ref) = (guarded(out), vec![0.0; out]);
            max_pool_2x2(&x, &mut y[..out], win);
            kernels::pool(&x, &mut y_ref, win, true);
            assert_eq!(bits(&y[..out]), bits(&y_ref), "forward {height}×{width}");
            assert_eq!(y[out..], [7.0; 8], "forward {height}×{width} wrote past its buffer");
            for relu in [false, true] {
                let (mut dx, mut dx_ref) = (guarded(n), vec![0.0; n]);
                max_pool_2x2_backward(&x, &g, &mut dx[..n], win, relu);
                kernels::pool_backward(&x, &g, &mut dx_ref, win, (true, relu));
                if height % 2 == 0 && width % 2 == 0 {
                    assert!(dx[..n].iter().all(|v| !v.is_nan()), "every input written");
                }
                assert_eq!(dx[n..], [7.0; 8], "backward {height}×{width} wrote past its buffer");
                assert_eq!(bits(&dx[..n]), bits(&dx_ref), "backward {height}×{width}, relu {relu}");
            }
        }
    }
}
