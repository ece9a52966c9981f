//! Stride-1 convolutions without im2col, on CPUs with AVX2 and FMA.
//!
//! Zero-pad the image into planes of `rows × cols`. A stride-1 output at
//! (y, x) reads the inputs at (y + ky, x + kx). Computing an output for every
//! column of the padded width (the last k − 1 of each row are discarded), the
//! output at q = y·cols + x reads `src[q + offset(c, ky, kx)]`, where
//! offset = c·rows·cols + ky·cols + kx. Every tap's inputs are then one
//! contiguous run of the padded image, so the product
//! `out[m, q] = Σ_r a[m, r] · src[offset(r) + q]` runs straight from it: no
//! unfolded columns and no packing, only a register-blocked kernel. The input
//! gradient is the same product (the flipped, transposed filter over the
//! padded output gradient) and the weight gradient its dot-product twin.
#![allow(unsafe_code)]

use std::arch::x86_64::{
    __m256, _mm_add_ps, _mm_cvtss_f32, _mm_hadd_ps, _mm256_castps256_ps128, _mm256_extractf128_ps, _mm256_fmadd_ps,
    _mm256_loadu_ps, _mm256_set1_ps, _mm256_setzero_ps, _mm256_storeu_ps,
};
use std::cell::RefCell;

use crate::kernels::Window;

/// Outputs per block of the product: two 8-lane registers.
const QB: usize = 16;
/// Output rows (channels) per block of the product: 12 accumulators.
const MB: usize = 6;
/// Filters × taps per block of the weight gradient: 12 accumulators.
const FB: usize = 3;
const TB: usize = 4;

/// Whether this path can run the convolution `win` on this CPU.
pub fn applies(win: Window) -> bool {
    win.stride == 1 && is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma")
}

/// A stack of zero-padded planes, and where each tap of a square kernel
/// starts reading in it.
#[derive(Clone, Copy)]
struct Source {
    planes: usize,
    rows: usize,
    cols: usize,
    kernel: usize,
}

impl Source {
    fn plane(self) -> usize {
        self.rows * self.cols
    }

    /// Every plane, plus slack for a block that reads past the last row.
    fn len(self) -> usize {
        self.planes * self.plane() + self.cols + QB
    }

    fn taps(self) -> usize {
        self.planes * self.kernel * self.kernel
    }

    /// How far tap r = (c, ky, kx) reads into the source.
    fn offset(self, r: usize) -> usize {
        let area = self.kernel * self.kernel;
        let (c, tap) = (r / area, r % area);
        c * self.plane() + tap / self.kernel * self.cols + tap % self.kernel
    }

    /// Copies `[planes, h, w]` values into the planes with their top-left
    /// corner at (top, left); everything else is zero.
    fn fill(self, values: &[f32], (h, w): (usize, usize), (top, left): (usize, usize), out: &mut Vec<f32>) {
        out.clear();
        out.resize(self.len(), 0.0);
        for (plane, image) in out.chunks_exact_mut(self.plane()).zip(values.chunks_exact(h * w)) {
            for (y, line) in image.chunks_exact(w).enumerate() {
                let at = (y + top) * self.cols + left;
                plane[at..at + w].copy_from_slice(line);
            }
        }
    }
}

/// Per-thread buffers, grown to the largest convolution and then reused.
#[derive(Default)]
struct Scratch {
    source: Vec<f32>,
    wide: Vec<f32>,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
    /// The filter, packed for the product on the calling thread.
    static PACKED: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// Packs `a(m, r)` (m < rows, r < taps) into blocks of MB rows, tap by tap,
/// zero beyond the last row: the order the product kernel reads.
fn pack(rows: usize, taps: usize, a: impl Fn(usize, usize) -> f32, out: &mut Vec<f32>) {
    out.clear();
    for block in 0..rows.div_ceil(MB) {
        for r in 0..taps {
            out.extend((block * MB..(block + 1) * MB).map(|m| if m < rows { a(m, r) } else { 0.0 }));
        }
    }
}

/// The part of the full product an output keeps: `height × width` values
/// from (top, left).
#[derive(Clone, Copy)]
struct Crop {
    top: usize,
    left: usize,
    height: usize,
    width: usize,
}

/// out[m, y, x] = Σ_r a[m, r] · src[offset(r) + (y + top)·cols + x + left]
/// for y < height, x < width of `crop`, with `a` packed by `pack`.
fn product(
    packed: &[f32],
    rows: usize,
    (src, geo): (&[f32], Source),
    crop: Crop,
    out: &mut [f32],
    wide: &mut Vec<f32>,
) {
    let Crop { top, left, height: out_h, width: out_w } = crop;
    let taps = geo.taps();
    let start = top * geo.cols + left;
    let span = (out_h * geo.cols).next_multiple_of(QB);
    assert!(
        packed.len() == rows.div_ceil(MB) * MB * taps
            && src.len() >= start + span + geo.offset(taps - 1)
            && left + out_w <= geo.cols
            && out.len() == rows * out_h * out_w
    );
    wide.resize(MB * span, 0.0);
    for (block, a) in packed.chunks_exact(MB * taps).enumerate() {
        for q in (0..span).step_by(QB) {
            // SAFETY: the CPU has AVX2 and FMA (`applies`); `a` holds MB
            // values per tap; the reads end at start + span + offset(last tap),
            // within src (asserted); the block's stores fit in `wide`.
            unsafe { product_block(a, src, geo, start + q, &mut wide[q..], span) };
        }
        let first = block * MB;
        for (i, dst) in out.chunks_exact_mut(out_h * out_w).skip(first).take(MB).enumerate() {
            let row = &wide[i * span..];
            for (y, line) in dst.chunks_exact_mut(out_w).enumerate() {
                line.copy_from_slice(&row[y * geo.cols..y * geo.cols + out_w]);
            }
        }
    }
}

/// One MB × QB block of the product, written to `wide[i·span ..][..QB]`.
#[target_feature(enable = "avx2,fma")]
unsafe fn product_block(a: &[f32], src: &[f32], geo: Source, start: usize, wide: &mut [f32], span: usize) {
    let mut acc = [[_mm256_setzero_ps(); 2]; MB];
    let mut w = a.as_ptr();
    for c in 0..geo.planes {
        for ky in 0..geo.kernel {
            // SAFETY (this block): see the caller; every read stays below
            // start + offset(last tap) + QB.
            unsafe {
                let row = src.as_ptr().add(start + c * geo.plane() + ky * geo.cols);
                for kx in 0..geo.kernel {
                    let x0 = _mm256_loadu_ps(row.add(kx));
                    let x1 = _mm256_loadu_ps(row.add(kx + 8));
                    for (i, acc) in acc.iter_mut().enumerate() {
                        let wi = _mm256_set1_ps(*w.add(i));
                        acc[0] = _mm256_fmadd_ps(wi, x0, acc[0]);
                        acc[1] = _mm256_fmadd_ps(wi, x1, acc[1]);
                    }
                    w = w.add(MB);
                }
            }
        }
    }
    for (i, acc) in acc.iter().enumerate() {
        let out = &mut wide[i * span..i * span + QB];
        // SAFETY: `out` holds QB = 16 values.
        unsafe {
            _mm256_storeu_ps(out.as_mut_ptr(), acc[0]);
            _mm256_storeu_ps(out.as_mut_ptr().add(8), acc[1]);
        }
    }
}

/// The geometry of a convolution's padded input.
fn input_source(win: Window) -> Source {
    let (p, k) = (win.padding, win.kernel);
    Source { planes: win.channels, rows: win.height + 2 * p, cols: win.width + 2 * p, kernel: k }
}

/// Runs `work` with the filter `w` (`[F, C, k, k]`) packed on this thread
/// for `forward_image`.
pub fn with_forward_filter<R>(w: &[f32], filters: usize, win: Window, work: impl FnOnce(&[f32]) -> R) -> R {
    let taps = input_source(win).taps();
    with_packed(filters, taps, |f, r| w[f * taps + r], work)
}

/// Runs `work` with the flipped, transposed filter packed for `input_gradient_image`.
pub fn with_input_gradient_filter<R>(w: &[f32], filters: usize, win: Window, work: impl FnOnce(&[f32]) -> R) -> R {
    let (c, k) = (win.channels, win.kernel);
    let flipped = |channel: usize, r: usize| {
        let (f, tap) = (r / (k * k), r % (k * k));
        let (ky, kx) = (k - 1 - tap / k, k - 1 - tap % k);
        w[((f * c + channel) * k + ky) * k + kx]
    };
    with_packed(c, filters * k * k, flipped, work)
}

fn with_packed<R>(rows: usize, taps: usize, a: impl Fn(usize, usize) -> f32, work: impl FnOnce(&[f32]) -> R) -> R {
    PACKED.with(|cell| {
        let mut packed = cell.borrow_mut();
        pack(rows, taps, a, &mut packed);
        work(&packed)
    })
}

/// One image `[C, H, W]` convolved into `out` (`[F, OH, OW]`).
pub fn forward_image(packed: &[f32], filters: usize, image: &[f32], win: Window, out: &mut [f32]) {
    let geo = input_source(win);
    SCRATCH.with(|cell| {
        let Scratch { source, wide } = &mut *cell.borrow_mut();
        geo.fill(image, (win.height, win.width), (win.padding, win.padding), source);
        let crop = Crop { top: 0, left: 0, height: win.out_height(), width: win.out_width() };
        product(packed, filters, (source, geo), crop, out, wide);
    });
}

/// One image's input gradient `[C, H, W]` from its output gradient
/// `[F, OH, OW]`: the output gradient padded by k − 1 on every side, convolved
/// with the flipped filter, cropped by the forward padding.
pub fn input_gradient_image(packed: &[f32], filters: usize, grad: &[f32], win: Window, dx: &mut [f32]) {
    let (k, p) = (win.kernel, win.padding);
    let (oh, ow) = (win.out_height(), win.out_width());
    let geo = Source { planes: filters, rows: oh + 2 * (k - 1), cols: ow + 2 * (k - 1), kernel: k };
    SCRATCH.with(|cell| {
        let Scratch { source, wide } = &mut *cell.borrow_mut();
        geo.fill(grad, (oh, ow), (k - 1, k - 1), source);
        let crop = Crop { top: p, left: p, height: win.height, width: win.width };
        product(packed, win.channels, (source, geo), crop, dx, wide);
    });
}

/// Adds one image's weight gradient to `dw` (`[F, C, k, k]`):
/// dw[f, r] += Σ_q g[f, q] · src[offset(r) + q], with g laid out at the
/// padded width and zero in the discarded columns.
pub fn weight_gradient_image(image: &[f32], grad: &[f32], filters: usize, win: Window, dw: &mut [f32]) {
    let geo = input_source(win);
    let (oh, ow, taps) = (win.out_height(), win.out_width(), geo.taps());
    let span = (oh * geo.cols).next_multiple_of(QB);
    assert!(dw.len() == filters * taps && grad.len() == filters * oh * ow);
    SCRATCH.with(|cell| {
        let Scratch { source, wide } = &mut *cell.borrow_mut();
        geo.fill(image, (win.height, win.width), (win.padding, win.padding), source);
        // The gradient at the padded width, rows padded to whole blocks of FB.
        wide.clear();
        wide.resize(filters.next_multiple_of(FB) * span, 0.0);
        for (row, g) in wide.chunks_exact_mut(span).zip(grad.chunks_exact(oh * ow)) {
            for (y, line) in g.chunks_exact(ow).enumerate() {
                row[y * geo.cols..y * geo.cols + ow].copy_from_slice(line);
            }
        }
        assert!(source.len() >= span + geo.offset(taps - 1));
        for f0 in (0..filters).step_by(FB) {
            for r0 in (0..taps).step_by(TB) {
                // Taps past the last read the first one's inputs; their sums are dropped.
                let offsets = std::array::from_fn(|t| geo.offset(if r0 + t < taps { r0 + t } else { 0 }));
                // SAFETY: the CPU has AVX2 and FMA (`applies`); rows f0..f0+FB
                // of `wide` exist (padded to whole blocks) and every read of
                // `source` ends below offset(last tap) + span (asserted).
                let sums = unsafe { weight_block(&wide[f0 * span..(f0 + FB) * span], span, source, offsets) };
                for (i, sums) in sums.iter().enumerate().take(filters - f0) {
                    for (t, &s) in sums.iter().enumerate().take(taps - r0) {
                        dw[(f0 + i) * taps + r0 + t] += s;
                    }
                }
            }
        }
    });
}

/// FB × TB dot products of gradient rows with tap runs of the source.
#[target_feature(enable = "avx2,fma")]
unsafe fn weight_block(g: &[f32], span: usize, src: &[f32], offsets: [usize; TB]) -> [[f32; TB]; FB] {
    let mut acc = [[_mm256_setzero_ps(); TB]; FB];
    let mut x = [_mm256_setzero_ps(); TB];
    for q in (0..span).step_by(8) {
        // SAFETY: see the caller: q + 8 ≤ span, so every read is in bounds.
        unsafe {
            for t in 0..TB {
                x[t] = _mm256_loadu_ps(src.as_ptr().add(offsets[t] + q));
            }
            for (i, acc) in acc.iter_mut().enumerate() {
                let gi = _mm256_loadu_ps(g.as_ptr().add(i * span + q));
                for t in 0..TB {
                    acc[t] = _mm256_fmadd_ps(gi, x[t], acc[t]);
                }
            }
        }
    }
    let mut sums = [[0.0; TB]; FB];
    for (sums, acc) in sums.iter_mut().zip(&acc) {
        for t in 0..TB {
            sums[t] = horizontal_sum(acc[t]);
        }
    }
    sums
}

#[target_feature(enable = "avx2,fma")]
fn horizontal_sum(v: __m256) -> f32 {
    let half = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
    let pairs = _mm_hadd_ps(half, half);
    _mm_cvtss_f32(_mm_hadd_ps(pairs, pairs))
}
