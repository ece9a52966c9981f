//! Plain-loop kernels for the spatial ops (convolution, pooling) and maxout,
//! written once, generic over the float type: the interpreter runs them in
//! f32 or f64 and the JIT runtime calls the f32 instances (convolutions there
//! go through `im2col`/`col2im` and sgemm instead of the direct loops).
//!
//! Layouts are row-major: images `[B, C, H, W]`, filters `[F, C, K, K]`
//! (PyTorch's), maxout pieces `[B, units·pieces]` with a unit's pieces adjacent.

use num_traits::Float;

/// Probabilities are clamped to [ε, 1 − ε] inside binary cross-entropy (and
/// its gradient), so a confident mistake costs a large but finite loss.
pub const BCE_EPS: f64 = 1e-7;

/// Sizes of one convolution or pooling window pass. Generated code passes
/// it to the runtime routines by pointer, so its layout is fixed (`repr(C)`).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub batch: usize,
    pub channels: usize,
    pub height: usize,
    pub width: usize,
    /// The kernel along the height, then along the width (equal for a
    /// square kernel and for pooling).
    pub rows: Taps,
    pub cols: Taps,
}

/// A kernel along one axis: its size, the step between windows, the zeros
/// added on each side, and the spacing between its taps.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Taps {
    pub kernel: usize,
    pub stride: usize,
    pub padding: usize,
    /// Spacing between a kernel's taps (1: adjacent).
    pub dilation: usize,
}

impl Taps {
    /// How many inputs one window spans.
    pub fn extent(&self) -> usize {
        self.dilation * (self.kernel - 1) + 1
    }

    /// Outputs along an axis of `size` inputs.
    pub fn outputs(&self, size: usize) -> usize {
        (size + 2 * self.padding - self.extent()) / self.stride + 1
    }

    /// Input coordinate of output `o` and tap `k`, if inside the `size` inputs.
    pub(crate) fn source(&self, o: usize, k: usize, size: usize) -> Option<usize> {
        (o * self.stride + k * self.dilation).checked_sub(self.padding).filter(|&i| i < size)
    }
}

impl Window {
    pub fn out_height(&self) -> usize {
        self.rows.outputs(self.height)
    }

    pub fn out_width(&self) -> usize {
        self.cols.outputs(self.width)
    }

    /// Taps per channel of the kernel: kh·kw.
    pub fn area(&self) -> usize {
        self.rows.kernel * self.cols.kernel
    }

    /// Whether the kernel is the same along both axes.
    pub fn is_square(&self) -> bool {
        self.rows == self.cols
    }
}

/// Calls `visit(xi, wi, yi)` for every (input, weight, output) index triple
/// a convolution multiplies: the one loop nest the forward and backward
/// passes share, so they cannot disagree about which taps exist. The
/// channels and filters are split into `groups` (1: none), each filter
/// reading its group's channels only; the weights are `[F, C/groups, KH, KW]`.
fn for_each_tap(win: Window, filters: usize, groups: usize, mut visit: impl FnMut(usize, usize, usize)) {
    let (oh, ow, kh, kw) = (win.out_height(), win.out_width(), win.rows.kernel, win.cols.kernel);
    let (per_group, filters_per_group) = (win.channels / groups, filters / groups);
    for b in 0..win.batch {
        for f in 0..filters {
            let first = f / filters_per_group * per_group;
            for c in 0..per_group {
                for ky in 0..kh {
                    for kx in 0..kw {
                        let wi = ((f * per_group + c) * kh + ky) * kw + kx;
                        for oy in 0..oh {
                            let Some(iy) = win.rows.source(oy, ky, win.height) else { continue };
                            for ox in 0..ow {
                                let Some(ix) = win.cols.source(ox, kx, win.width) else { continue };
                                let xi = ((b * win.channels + first + c) * win.height + iy) * win.width + ix;
                                visit(xi, wi, ((b * filters + f) * oh + oy) * ow + ox);
                            }
                        }
                    }
                }
            }
        }
    }
}

/// What a forward convolution or product does to each sum as it stores
/// it: adds its filter's (or column's) bias, if there is one, then, when a
/// ReLU that reads nothing else was fused into it, keeps the positive
/// values only (exactly as the ReLU would: `v > 0 ? v : 0`).
#[derive(Clone, Copy, Default)]
pub struct Epilogue<'a> {
    pub bias: Option<&'a [f32]>,
    pub relu: bool,
}

impl<'a> Epilogue<'a> {
    /// Filter `f`'s value from its sum.
    #[inline(always)]
    pub fn of(self, f: usize) -> impl Fn(f32) -> f32 {
        let (bias, relu) = (self.bias.map_or(0.0, |b| b[f]), self.relu);
        move |sum| finish(sum, bias, relu)
    }

    /// Whether it leaves every sum as it is.
    pub fn is_nothing(self) -> bool {
        self.bias.is_none() && !self.relu
    }

    /// The epilogue of the columns `from..from + len` alone.
    pub fn columns(self, from: usize, len: usize) -> Epilogue<'a> {
        Epilogue { bias: self.bias.map(|b| &b[from..from + len]), ..self }
    }

    /// Applied to one row of sums, its columns those of the bias.
    #[inline(always)]
    pub fn apply(self, row: &mut [f32]) {
        match self.bias {
            Some(bias) => row.iter_mut().zip(bias).for_each(|(v, &b)| *v = finish(*v, b, self.relu)),
            None if self.relu => row.iter_mut().for_each(|v| *v = finish(*v, 0.0, true)),
            None => {}
        }
    }
}

/// One sum plus its bias, and its ReLU when `relu`.
#[inline(always)]
fn finish(sum: f32, bias: f32, relu: bool) -> f32 {
    let v = sum + bias;
    if !relu || v > 0.0 { v } else { 0.0 }
}

/// y[b,f,oy,ox] = Σ_{c,ky,kx} x[b,c,oy·s+ky−p, ox·s+kx−p] · w[f,c,ky,kx],
/// c over filter f's group of channels (`for_each_tap`).
pub fn conv2d<T: Float>(x: &[T], w: &[T], y: &mut [T], win: Window, filters: usize, groups: usize) {
    y.iter_mut().for_each(|v| *v = T::zero());
    for_each_tap(win, filters, groups, |xi, wi, yi| y[yi] = y[yi] + x[xi] * w[wi]);
}

/// ∂x = Σ g·w over every window that read x (the transposed convolution).
/// ∂w = Σ g·x over the batch and output positions.
/// Either output may be skipped by passing an empty slice.
/// `(filters, groups)` as `conv2d`'s.
pub fn conv2d_backward<T: Float>(
    x: &[T],
    w: &[T],
    g: &[T],
    dx: &mut [T],
    dw: &mut [T],
    win: Window,
    (filters, groups): (usize, usize),
) {
    dx.iter_mut().for_each(|v| *v = T::zero());
    dw.iter_mut().for_each(|v| *v = T::zero());
    for_each_tap(win, filters, groups, |xi, wi, yi| {
        if !dx.is_empty() {
            dx[xi] = dx[xi] + g[yi] * w[wi];
        }
        if !dw.is_empty() {
            dw[wi] = dw[wi] + g[yi] * x[xi];
        }
    });
}

/// Max or average over each window. Padding is never a window's largest
/// value, and counts as zeros in its mean (PyTorch's `count_include_pad`):
/// the mean divides by the whole window's size.
pub fn pool<T: Float>(x: &[T], y: &mut [T], win: Window, max: bool) {
    if win.rows.padding > 0 || win.cols.padding > 0 {
        padded_pool(x, y, win, max);
    } else if max && win.is_square() && win.rows.kernel == 2 && win.rows.stride == 2 {
        max_pool_2x2(x, y, win);
    } else if max {
        pool_with(x, y, win, T::neg_infinity(), |a, v| a.max(v), |a| a);
    } else {
        let area = T::from(win.area()).unwrap_or_else(T::one);
        pool_with(x, y, win, T::zero(), |a, v| a + v, |a| a / area);
    }
}

/// Folds every window row by row: `fold` over its values from `init`, then `finish`.
fn pool_with<T: Float>(x: &[T], y: &mut [T], win: Window, init: T, fold: impl Fn(T, T) -> T, finish: impl Fn(T) -> T) {
    let (oh, ow) = (win.out_height(), win.out_width());
    let (Taps { kernel: kr, stride: sr, .. }, Taps { kernel: k, stride: s, .. }) = (win.rows, win.cols);
    for (xp, yp) in x.chunks_exact(win.height * win.width).zip(y.chunks_exact_mut(oh * ow)) {
        for (oy, out) in yp.chunks_exact_mut(ow).enumerate() {
            out.iter_mut().for_each(|o| *o = init);
            for ky in 0..kr {
                let line = &xp[(oy * sr + ky) * win.width..(oy * sr + ky + 1) * win.width];
                if k == s {
                    // Windows side by side (the usual case): no overlap, no index arithmetic.
                    for (o, window) in out.iter_mut().zip(line.chunks_exact(k)) {
                        *o = window.iter().fold(*o, |a, &v| fold(a, v));
                    }
                } else {
                    for (ox, o) in out.iter_mut().enumerate() {
                        *o = line[ox * s..ox * s + k].iter().fold(*o, |a, &v| fold(a, v));
                    }
                }
            }
            out.iter_mut().for_each(|o| *o = finish(*o));
        }
    }
}

/// `pool` over windows that may reach into the padding: each folds the
/// values inside the image, row by row.
fn padded_pool<T: Float>(x: &[T], y: &mut [T], win: Window, max: bool) {
    let (oh, ow) = (win.out_height(), win.out_width());
    let area = T::from(win.area()).unwrap_or_else(T::one);
    for (xp, yp) in x.chunks_exact(win.height * win.width).zip(y.chunks_exact_mut(oh * ow)) {
        for (oy, out) in yp.chunks_exact_mut(ow).enumerate() {
            for (ox, o) in out.iter_mut().enumerate() {
                let cols = inside(ox, win.cols, win.width);
                let values = inside(oy, win.rows, win.height).flat_map(|r| &xp[r * win.width..][cols.clone()]);
                *o = if max {
                    values.fold(T::neg_infinity(), |a, &v| a.max(v))
                } else {
                    values.fold(T::zero(), |a, &v| a + v) / area
                };
            }
        }
    }
}

/// The inputs along an axis of `size` that window `o` covers, the padding left out.
fn inside(o: usize, taps: Taps, size: usize) -> std::ops::Range<usize> {
    let start = o * taps.stride;
    start.saturating_sub(taps.padding)..(start + taps.kernel).saturating_sub(taps.padding).min(size)
}

/// Nearest-neighbour upsampling: every value of each `height × width`
/// plane becomes a `factor × factor` block of the output plane.
pub fn upsample<T: Float>(x: &[T], y: &mut [T], (height, width): (usize, usize), factor: usize) {
    let wide = width * factor;
    for (xp, yp) in x.chunks_exact(height * width).zip(y.chunks_exact_mut(height * wide * factor)) {
        for (line, rows) in xp.chunks_exact(width).zip(yp.chunks_exact_mut(wide * factor)) {
            let (first, copies) = rows.split_at_mut(wide);
            for (block, &v) in first.chunks_exact_mut(factor).zip(line) {
                block.iter_mut().for_each(|o| *o = v);
            }
            copies.chunks_exact_mut(wide).for_each(|row| row.copy_from_slice(first));
        }
    }
}

/// Max pooling over 2×2 windows side by side (the usual case), in the same
/// order as the general fold, written so the compiler vectorises it.
fn max_pool_2x2<T: Float>(x: &[T], y: &mut [T], win: Window) {
    let (oh, ow, w) = (win.out_height(), win.out_width(), win.width);
    for (xp, yp) in x.chunks_exact(win.height * w).zip(y.chunks_exact_mut(oh * ow)) {
        for (rows, out) in xp.chunks_exact(2 * w).zip(yp.chunks_exact_mut(ow)) {
            let (top, bottom) = rows.split_at(w);
            for (o, (a, b)) in out.iter_mut().zip(top.chunks_exact(2).zip(bottom.chunks_exact(2))) {
                *o = T::neg_infinity().max(a[0]).max(a[1]).max(b[0]).max(b[1]);
            }
        }
    }
}

/// g · [y > 0] in place: a ReLU's gradient from its output y.
pub fn relu_gradient<T: Float>(g: &mut [T], y: &[T]) {
    for (g, &y) in g.iter_mut().zip(y) {
        *g = *g * if y > T::zero() { T::one() } else { T::zero() };
    }
}

/// Max pooling sends each gradient to its window's (first) largest input;
/// average pooling spreads it evenly. With `relu` (max pooling of a ReLU's
/// output x, `ir::fuse_activations`) dx is then times [x > 0], the ReLU's
/// gradient.
pub fn pool_backward<T: Float>(x: &[T], g: &[T], dx: &mut [T], win: Window, (max, relu): (bool, bool)) {
    let (oh, ow, w) = (win.out_height(), win.out_width(), win.width);
    let area = T::from(win.area()).unwrap_or_else(T::one);
    dx.iter_mut().for_each(|v| *v = T::zero());
    let plane = win.height * w;
    let planes = x.chunks_exact(plane).zip(dx.chunks_exact_mut(plane)).zip(g.chunks_exact(oh * ow));
    for ((xp, dp), gp) in planes {
        for (oy, grads) in gp.chunks_exact(ow).enumerate() {
            let rows = inside(oy, win.rows, win.height);
            for (ox, &gv) in grads.iter().enumerate() {
                // The window's inputs inside the image (padding has no gradient).
                let cols = inside(ox, win.cols, w);
                if max {
                    // The first largest value, in row-major order within the window.
                    let mut best = rows.start * w + cols.start;
                    let mut top = xp[best];
                    for row in rows.clone() {
                        let first = row * w + cols.start;
                        for (at, &v) in xp[first..row * w + cols.end].iter().enumerate() {
                            if v > top {
                                (best, top) = (first + at, v);
                            }
                        }
                    }
                    dp[best] = dp[best] + gv;
                } else {
                    let share = gv / area;
                    for row in rows.clone() {
                        dp[row * w..][cols.clone()].iter_mut().for_each(|d| *d = *d + share);
                    }
                }
            }
        }
    }
    if relu {
        relu_gradient(dx, x);
    }
}

/// y[b, f, …] = x[b, f, …] + bias[f] for `[B, F, spatial]` tensors.
pub fn add_channel_bias<T: Float>(x: &[T], bias: &[T], y: &mut [T], spatial: usize) {
    per_channel(x, bias, y, spatial, |v, b| v + b);
}

/// y[b, f, …] = x[b, f, …] · s[f]
pub fn mul_channel<T: Float>(x: &[T], scale: &[T], y: &mut [T], spatial: usize) {
    per_channel(x, scale, y, spatial, |v, s| v * s);
}

/// y[b, f, …] = op(x[b, f, …], c[f]) over planes of `spatial` values.
fn per_channel<T: Float>(x: &[T], c: &[T], y: &mut [T], spatial: usize, op: impl Fn(T, T) -> T) {
    for (plane, (out, input)) in y.chunks_exact_mut(spatial).zip(x.chunks_exact(spatial)).enumerate() {
        let k = c[plane % c.len()];
        out.iter_mut().zip(input).for_each(|(o, &v)| *o = op(v, k));
    }
}

/// out[f] = Σ over batch and positions of g[b, f, …].
pub fn sum_channels<T: Float>(g: &[T], out: &mut [T], spatial: usize) {
    let channels = out.len();
    out.iter_mut().enumerate().for_each(|(f, o)| *o = channel_sum(g, f, channels, spatial));
}

/// Channel f's sum: its planes' sums, image by image. Channels are
/// independent, so they can be summed on any threads with the same bits.
pub fn channel_sum<T: Float>(g: &[T], f: usize, channels: usize, spatial: usize) -> T {
    g.chunks_exact(spatial).skip(f).step_by(channels).fold(T::zero(), |acc, plane| acc + sum(plane))
}

/// Σ a·b over the pairs: each product rounded, then summed as `sum` sums.
pub fn sum_products<T: Float>(a: &[T], b: &[T]) -> T {
    let products: Vec<T> = a.iter().zip(b).map(|(&x, &y)| x * y).collect();
    sum(&products)
}

/// Σ x.
pub fn sum<T: Float>(x: &[T]) -> T {
    lane_sum(x, |v| v)
}

/// Σ x².
pub fn sum_squares<T: Float>(x: &[T]) -> T {
    lane_sum(x, |v| v * v)
}

/// Σ term(v) in eight interleaved partial sums, so that it vectorises,
/// block by block: no partial sum adds more than a few hundred terms, so
/// the rounding of a million f32 terms stays near 1e-6 relative, not 1e-4.
fn lane_sum<T: Float>(values: &[T], term: impl Fn(T) -> T) -> T {
    let block_sum = |block: &[T]| {
        let mut lanes = [T::zero(); 8];
        let chunks = block.chunks_exact(8);
        let tail = chunks.remainder().iter().fold(T::zero(), |acc, &v| acc + term(v));
        for chunk in chunks {
            for (lane, &v) in lanes.iter_mut().zip(chunk) {
                *lane = *lane + term(v);
            }
        }
        lanes.iter().fold(tail, |acc, &v| acc + v)
    };
    values.chunks(SUM_BLOCK).fold(T::zero(), |acc, block| acc + block_sum(block))
}

/// Values per block of a long sum.
pub const SUM_BLOCK: usize = 2048;

/// Whether inverted dropout keeps element `i` at `step`: a counter-based
/// hash (SplitMix64) of (salt, step, i) compared with p. No state, so the
/// mask is the same in the backward pass, on any thread, after a resume.
pub fn dropout_keeps(salt: u64, step: u64, i: usize, p: f64) -> bool {
    uniform(salt, step, i) >= p
}

/// A uniform number in [0, 1) from a counter-based hash (SplitMix64) of
/// (salt, step, i): stateless, so any element can be drawn on any thread.
pub fn uniform(salt: u64, step: u64, i: usize) -> f64 {
    let mut z = salt ^ step.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (i as u64).wrapping_mul(0xD1B5_4A32_D192_ED03);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    (z >> 11) as f64 / (1u64 << 53) as f64
}

/// y = 1 where uniform(salt, step, i) < p[i], else 0.
pub fn bernoulli<T: Float>(p: &[T], y: &mut [T], salt: u64, step: u64) {
    for (i, (out, &prob)) in y.iter_mut().zip(p).enumerate() {
        *out = if uniform(salt, step, i) < prob.to_f64().unwrap_or(0.0) { T::one() } else { T::zero() };
    }
}

/// y = x/(1 − p) where kept, else 0.
pub fn dropout<T: Float>(x: &[T], y: &mut [T], p: f64, (salt, first): (u64, usize), step: u64) {
    let scale = T::from(1.0 / (1.0 - p)).unwrap_or_else(T::one);
    for (i, (o, &v)) in y.iter_mut().zip(x).enumerate() {
        *o = if dropout_keeps(salt, step, first + i, p) { v * scale } else { T::zero() };
    }
}

/// y[b, u] = max_k x[b, u·pieces + k]
pub fn max_pieces<T: Float>(x: &[T], y: &mut [T], pieces: usize) {
    for (v, group) in y.iter_mut().zip(x.chunks_exact(pieces)) {
        *v = group.iter().fold(T::neg_infinity(), |m, &p| m.max(p));
    }
}

/// The gradient goes to the (first) winning piece.
pub fn max_pieces_backward<T: Float>(x: &[T], g: &[T], dx: &mut [T], pieces: usize) {
    for ((group, &gv), out) in x.chunks_exact(pieces).zip(g).zip(dx.chunks_exact_mut(pieces)) {
        let best = (0..pieces).fold(0, |best, k| if group[k] > group[best] { k } else { best });
        out.iter_mut().enumerate().for_each(|(k, v)| *v = if k == best { gv } else { T::zero() });
    }
}

/// Unfolds one image `[C, H, W]` into columns `[C·KH·KW, OH·OW]`: row
/// (c, ky, kx) holds the input each output position sees through that tap
/// (zero in the padding), so a convolution becomes one matrix product.
pub fn im2col<T: Float>(image: &[T], columns: &mut [T], win: Window) {
    let (oh, ow, kh, kw) = (win.out_height(), win.out_width(), win.rows.kernel, win.cols.kernel);
    let across = win.cols;
    for c in 0..win.channels {
        for ky in 0..kh {
            for kx in 0..kw {
                let row = ((c * kh + ky) * kw + kx) * oh * ow;
                let (lo, hi) = inside_columns(win, kx, ow);
                for oy in 0..oh {
                    let out = &mut columns[row + oy * ow..row + (oy + 1) * ow];
                    let Some(iy) = win.rows.source(oy, ky, win.height) else {
                        out.iter_mut().for_each(|v| *v = T::zero());
                        continue;
                    };
                    let line = &image[(c * win.height + iy) * win.width..(c * win.height + iy + 1) * win.width];
                    out[..lo].iter_mut().for_each(|v| *v = T::zero());
                    out[hi..].iter_mut().for_each(|v| *v = T::zero());
                    if lo == hi {
                        // A dilated tap can miss the image on every column.
                        continue;
                    }
                    let first = lo * across.stride + kx * across.dilation - across.padding;
                    if across.stride == 1 {
                        out[lo..hi].copy_from_slice(&line[first..first + (hi - lo)]);
                    } else {
                        let taps = line[first..].iter().step_by(across.stride);
                        out[lo..hi].iter_mut().zip(taps).for_each(|(v, &x)| *v = x);
                    }
                }
            }
        }
    }
}

/// The output columns `lo..hi` whose input column, for tap `kx`, lies inside
/// the image (the rest read padding).
pub(crate) fn inside_columns(win: Window, kx: usize, ow: usize) -> (usize, usize) {
    let Taps { stride, padding, dilation, .. } = win.cols;
    let tap = kx * dilation;
    let lo = (padding.saturating_sub(tap)).div_ceil(stride).min(ow);
    let hi = ((win.width + padding).saturating_sub(tap)).div_ceil(stride).min(ow).max(lo);
    (lo, hi)
}

/// The adjoint of `im2col`: adds every column entry back onto the pixel it came from.
pub fn col2im<T: Float>(columns: &[T], image: &mut [T], win: Window) {
    let (oh, ow, kh, kw) = (win.out_height(), win.out_width(), win.rows.kernel, win.cols.kernel);
    let across = win.cols;
    image.iter_mut().for_each(|v| *v = T::zero());
    for c in 0..win.channels {
        for ky in 0..kh {
            for kx in 0..kw {
                let row = ((c * kh + ky) * kw + kx) * oh * ow;
                let (lo, hi) = inside_columns(win, kx, ow);
                if lo == hi {
                    continue;
                }
                let first = lo * across.stride + kx * across.dilation - across.padding;
                for oy in 0..oh {
                    let Some(iy) = win.rows.source(oy, ky, win.height) else { continue };
                    let line = &mut image[(c * win.height + iy) * win.width..(c * win.height + iy + 1) * win.width];
                    let values = &columns[row + oy * ow + lo..row + oy * ow + hi];
                    let taps = line[first..].iter_mut().step_by(across.stride);
                    taps.zip(values).for_each(|(x, &v)| *x = *x + v);
                }
            }
        }
    }
}

/// y[o, j, i] = x[o, start + j, i] for x `[outer, whole, inner]`, y `[outer, part, inner]`.
pub fn slice<T: Float>(x: &[T], y: &mut [T], whole: usize, part: usize, inner: usize, start: usize) {
    for (out, input) in y.chunks_exact_mut(part * inner).zip(x.chunks_exact(whole * inner)) {
        out.copy_from_slice(&input[start * inner..(start + part) * inner]);
    }
}

/// The adjoint of `slice`: dx is zero except where the slice came from.
pub fn slice_backward<T: Float>(g: &[T], dx: &mut [T], whole: usize, part: usize, inner: usize, start: usize) {
    dx.iter_mut().for_each(|v| *v = T::zero());
    place(g, dx, whole, part, inner, start);
}

/// y[o, start + j, i] = x[o, j, i] for x `[outer, part, inner]`, y `[outer,
/// whole, inner]`, the rest of y left as it is: one part of a concatenation.
pub fn place<T: Float>(x: &[T], y: &mut [T], whole: usize, part: usize, inner: usize, start: usize) {
    for (input, out) in x.chunks_exact(part * inner).zip(y.chunks_exact_mut(whole * inner)) {
        out[start * inner..(start + part) * inner].copy_from_slice(input);
    }
}

/// The table row of a token id, or None outside the table.
fn row_of<T: Float>(id: T, vocab: usize) -> Option<usize> {
    let i = id.to_f64().unwrap_or(-1.0);
    (i >= 0.0 && i < vocab as f64).then_some(i as usize)
}

/// out[k, :] = table[ids[k], :] (zeros for an id outside the table).
pub fn gather<T: Float>(ids: &[T], table: &[T], out: &mut [T], dim: usize) {
    let vocab = table.len() / dim.max(1);
    for (&id, row) in ids.iter().zip(out.chunks_exact_mut(dim)) {
        match row_of(id, vocab) {
            Some(r) => row.copy_from_slice(&table[r * dim..(r + 1) * dim]),
            None => row.iter_mut().for_each(|v| *v = T::zero()),
        }
    }
}

/// dtable[ids[k], :] += g[k, :].
pub fn gather_backward<T: Float>(ids: &[T], g: &[T], dtable: &mut [T], dim: usize) {
    dtable.iter_mut().for_each(|v| *v = T::zero());
    let vocab = dtable.len() / dim.max(1);
    for (&id, row) in ids.iter().zip(g.chunks_exact(dim)) {
        if let Some(r) = row_of(id, vocab) {
            dtable[r * dim..(r + 1) * dim].iter_mut().zip(row).for_each(|(d, &v)| *d = *d + v);
        }
    }
}

#[cfg(test)]
mod tests;
