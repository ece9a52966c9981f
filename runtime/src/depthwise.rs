//! Depthwise convolutions: as many groups as channels, so that every filter
//! reads one channel (filter f of F = m·C reads channel f / m).
//!
//! Run as a product per group, each would be a product of one row, whose
//! packing and blocking cost more than its multiply-adds. Here each output
//! plane is instead summed tap by tap, in the vectors of this CPU. At stride
//! 1, each plane is zero-padded once and every output computed for the
//! padded width (the columns past the output's are dropped): a tap's inputs
//! are then one run of the padded plane, and the plane's outputs one
//! multiply-add of that run per tap, however small the image (`Padded`).
//! At other strides each output row takes one strided row of inputs per tap.
//!
//! Every sum takes its terms in the reference loops' order
//! (`kernels::conv2d`), the padding's zeros added in between, so the
//! forward pass and the input gradient give their bits on finite values;
//! the weight gradient sums each tap's products in sixteen lanes.
#![allow(unsafe_code)]

use crate::gemm::Isa;
use crate::kernels::{Epilogue, Window, inside_columns};

/// Whether a convolution of `channels` channels in `groups` groups is
/// depthwise (and not an ordinary convolution of one channel).
pub fn applies(channels: usize, groups: usize) -> bool {
    groups > 1 && groups == channels
}

/// The output columns whose input column for tap `kx` lies inside the
/// image (`kernels::inside_columns`), and the input column the first of
/// them reads; None when the tap reads only padding.
fn columns(win: Window, kx: usize) -> Option<(std::ops::Range<usize>, usize)> {
    let (lo, hi) = inside_columns(win, kx, win.out_width());
    (lo < hi).then(|| (lo..hi, lo * win.cols.stride + kx * win.cols.dilation - win.cols.padding))
}

/// One image `[C, H, W]` convolved into `out` (`[F, OH, OW]`) by the filter
/// `w` (`[F, 1, KH, KW]`), through `epilogue`.
pub fn forward_image(w: &[f32], filters: usize, image: &[f32], win: Window, epilogue: Epilogue, out: &mut [f32]) {
    forward_on(Isa::detect(), (w, filters, image, win, epilogue), out)
}

/// `forward_image` in the vectors of `isa` (None: the baseline's).
fn forward_on(isa: Option<Isa>, run: Forward, out: &mut [f32]) {
    with_planes(|planes| match isa {
        Some(isa) => forward_for(isa, run, out, planes),
        None => forward_with(run, out, planes),
    })
}

/// A forward pass's filter, filter count, image, window and epilogue.
type Forward<'a> = (&'a [f32], usize, &'a [f32], Window, Epilogue<'a>);

crate::simd::compiled_for_isa! {
    /// `forward_with` in the vectors of `isa`.
    fn forward_for(run: Forward, out: &mut [f32], planes: &mut Planes) {
        forward_with(run, out, planes)
    }
}

#[inline(always)]
fn forward_with((w, filters, image, win, epilogue): Forward, out: &mut [f32], planes: &mut Planes) {
    if unit_strides(win) {
        return forward_padded((w, filters, image, win, epilogue), out, planes);
    }
    let (plane, out_plane) = (win.height * win.width, win.out_height() * win.out_width());
    let (kw, ow, stride) = (win.cols.kernel, win.out_width(), win.cols.stride);
    let per_channel = filters / win.channels;
    for (f, outputs) in out.chunks_exact_mut(out_plane).enumerate().take(filters) {
        let input = &image[f / per_channel * plane..][..plane];
        let taps = &w[f * win.area()..][..win.area()];
        let value = epilogue.of(f);
        for (oy, row) in outputs.chunks_exact_mut(ow).enumerate() {
            row.fill(0.0);
            for (ky, taps) in taps.chunks_exact(kw).enumerate() {
                let Some(iy) = win.rows.source(oy, ky, win.height) else { continue };
                let line = &input[iy * win.width..][..win.width];
                for (kx, &weight) in taps.iter().enumerate() {
                    let Some((kept, first)) = columns(win, kx) else { continue };
                    let (row, line) = (&mut row[kept], &line[first..]);
                    if stride == 1 {
                        row.iter_mut().zip(line).for_each(|(o, &x)| *o += x * weight);
                    } else {
                        row.iter_mut().zip(line.iter().step_by(stride)).for_each(|(o, &x)| *o += x * weight);
                    }
                }
            }
            row.iter_mut().for_each(|v| *v = value(*v));
        }
    }
}

/// One image's input gradient `dx` (`[C, H, W]`) from its output gradient
/// `grad` (`[F, OH, OW]`): each output's gradient scattered back onto the
/// inputs its taps read.
pub fn input_gradient_image(w: &[f32], filters: usize, grad: &[f32], win: Window, dx: &mut [f32]) {
    input_gradient_on(Isa::detect(), (w, filters, grad, win), dx)
}

/// `input_gradient_image` in the vectors of `isa` (None: the baseline's).
fn input_gradient_on(isa: Option<Isa>, run: Backward, dx: &mut [f32]) {
    with_planes(|planes| match isa {
        Some(isa) => input_gradient_for(isa, run, dx, planes),
        None => input_gradient_with(run, dx, planes),
    })
}

/// A gradient's filter (or images), filter count, output gradients and window.
type Backward<'a> = (&'a [f32], usize, &'a [f32], Window);

crate::simd::compiled_for_isa! {
    /// `input_gradient_with` in the vectors of `isa`.
    fn input_gradient_for(run: Backward, dx: &mut [f32], planes: &mut Planes) {
        input_gradient_with(run, dx, planes)
    }
}

#[inline(always)]
fn input_gradient_with((w, filters, grad, win): Backward, dx: &mut [f32], planes: &mut Planes) {
    if unit_strides(win) {
        return input_gradient_padded((w, filters, grad, win), dx, planes);
    }
    let (plane, out_plane) = (win.height * win.width, win.out_height() * win.out_width());
    let (kw, ow, stride) = (win.cols.kernel, win.out_width(), win.cols.stride);
    let per_channel = filters / win.channels;
    dx.fill(0.0);
    for (c, inputs) in dx.chunks_exact_mut(plane).enumerate().take(win.channels) {
        for f in c * per_channel..(c + 1) * per_channel {
            let outputs = &grad[f * out_plane..][..out_plane];
            let taps = &w[f * win.area()..][..win.area()];
            for (ky, taps) in taps.chunks_exact(kw).enumerate() {
                for (kx, &weight) in taps.iter().enumerate() {
                    let Some((kept, first)) = columns(win, kx) else { continue };
                    for (oy, row) in outputs.chunks_exact(ow).enumerate() {
                        let Some(iy) = win.rows.source(oy, ky, win.height) else { continue };
                        let line = &mut inputs[iy * win.width..][..win.width][first..];
                        if stride == 1 {
                            line.iter_mut().zip(&row[kept.clone()]).for_each(|(d, &g)| *d += g * weight);
                        } else {
                            let line = line.iter_mut().step_by(stride);
                            line.zip(&row[kept.clone()]).for_each(|(d, &g)| *d += g * weight);
                        }
                    }
                }
            }
        }
    }
}

/// Adds the weight gradient of a run of images (`[N, C, H, W]`, their
/// output gradients `grads` `[N, F, OH, OW]`) to `dw` (`[F, 1, KH, KW]`).
/// Each tap's products are summed position by position over the rows
/// into `sums`, then across them: a fixed order, whatever the threads.
pub fn weight_gradient(images: &[f32], grads: &[f32], filters: usize, win: Window, dw: &mut [f32]) {
    weight_gradient_on(Isa::detect(), (images, filters, grads, win), dw)
}

/// `weight_gradient` in the vectors of `isa` (None: the baseline's).
fn weight_gradient_on(isa: Option<Isa>, run: Backward, dw: &mut [f32]) {
    with_planes(|planes| match isa {
        Some(isa) => weight_gradient_for(isa, run, dw, planes),
        None => weight_gradient_with(run, dw, planes),
    })
}

crate::simd::compiled_for_isa! {
    /// `weight_gradient_with` in the vectors of `isa`.
    fn weight_gradient_for(run: Backward, dw: &mut [f32], planes: &mut Planes) {
        weight_gradient_with(run, dw, planes)
    }
}

#[inline(always)]
fn weight_gradient_with((images, filters, grads, win): Backward, dw: &mut [f32], planes: &mut Planes) {
    if unit_strides(win) {
        return weight_gradient_padded((images, filters, grads, win), dw, planes);
    }
    // One row of a tap's sums, per position.
    planes.wide.resize(win.out_width(), 0.0);
    let sums = &mut planes.wide;
    let (plane, out_plane) = (win.height * win.width, win.out_height() * win.out_width());
    let (kw, ow, stride) = (win.cols.kernel, win.out_width(), win.cols.stride);
    let per_channel = filters / win.channels;
    let image_len = win.channels * plane;
    for (image, grad) in images.chunks_exact(image_len).zip(grads.chunks_exact(filters * out_plane)) {
        for (f, outputs) in grad.chunks_exact(out_plane).enumerate() {
            let input = &image[f / per_channel * plane..][..plane];
            for (ky, taps) in dw[f * win.area()..][..win.area()].chunks_exact_mut(kw).enumerate() {
                for (kx, tap) in taps.iter_mut().enumerate() {
                    let Some((kept, first)) = columns(win, kx) else { continue };
                    let sums = &mut sums[..kept.len()];
                    sums.fill(0.0);
                    for (oy, row) in outputs.chunks_exact(ow).enumerate() {
                        let Some(iy) = win.rows.source(oy, ky, win.height) else { continue };
                        let line = &input[iy * win.width..][..win.width][first..];
                        let row = &row[kept.clone()];
                        if stride == 1 {
                            sums.iter_mut().zip(row.iter().zip(line)).for_each(|(s, (&g, &x))| *s += g * x);
                        } else {
                            let line = line.iter().step_by(stride);
                            sums.iter_mut().zip(row.iter().zip(line)).for_each(|(s, (&g, &x))| *s += g * x);
                        }
                    }
                    *tap += sums.iter().sum::<f32>();
                }
            }
        }
    }
}

/// Whether `win` steps by one along both axes (and so runs on padded planes).
fn unit_strides(win: Window) -> bool {
    win.rows.stride == 1 && win.cols.stride == 1
}

thread_local! {
    static PLANES: std::cell::RefCell<Planes> = const { std::cell::RefCell::new(Planes { source: Vec::new(), wide: Vec::new() }) };
}

/// Runs `work` with this thread's buffers.
fn with_planes<R>(work: impl FnOnce(&mut Planes) -> R) -> R {
    PLANES.with(|cell| work(&mut cell.borrow_mut()))
}

/// The kernels' buffers. At stride 1, a zero-padded plane the taps read,
/// and one the sums over the padded width go to (or, for the weight
/// gradient, the output gradient laid out at that width); at other
/// strides, `wide` holds a row of the weight gradient's sums.
struct Planes {
    source: Vec<f32>,
    wide: Vec<f32>,
}

/// Where a plane of `height × width` values sits in a zero-padded copy of
/// `rows × cols`, and the `tail` zeros after it that the last tap's run
/// reads past the last row.
#[derive(Clone, Copy)]
struct Padded {
    rows: usize,
    cols: usize,
    top: usize,
    left: usize,
    tail: usize,
}

impl Padded {
    /// An input plane padded as `win` pads it.
    fn input(win: Window) -> Padded {
        let (rows, cols) = (win.rows, win.cols);
        Padded {
            rows: win.height + 2 * rows.padding,
            cols: win.width + 2 * cols.padding,
            top: rows.padding,
            left: cols.padding,
            tail: cols.extent() - 1,
        }
    }

    fn len(self) -> usize {
        self.rows * self.cols + self.tail
    }

    /// `plane` (rows of `width`) padded into `out`, grown to `len` values.
    fn fill<'a>(self, plane: &[f32], width: usize, out: &'a mut Vec<f32>) -> &'a [f32] {
        out.clear();
        out.resize(self.len(), 0.0);
        for (y, line) in plane.chunks_exact(width).enumerate() {
            out[(self.top + y) * self.cols + self.left..][..width].copy_from_slice(line);
        }
        out
    }
}

/// `forward_with` at stride 1: each output plane summed over the padded
/// width, one run of the padded input plane per tap, then cropped.
#[inline(always)]
fn forward_padded((w, filters, image, win, epilogue): Forward, out: &mut [f32], Planes { source, wide }: &mut Planes) {
    let (plane, (oh, ow)) = (win.height * win.width, (win.out_height(), win.out_width()));
    let padded = Padded::input(win);
    let run = oh * padded.cols;
    wide.resize(run, 0.0);
    let per_channel = filters / win.channels;
    for (c, input) in image.chunks_exact(plane).enumerate().take(win.channels) {
        let source = padded.fill(input, win.width, source);
        for f in c * per_channel..(c + 1) * per_channel {
            let wide = &mut wide[..run];
            wide.fill(0.0);
            for (tap, &weight) in w[f * win.area()..][..win.area()].iter().enumerate() {
                let (ky, kx) = (tap / win.cols.kernel, tap % win.cols.kernel);
                let offset = ky * win.rows.dilation * padded.cols + kx * win.cols.dilation;
                wide.iter_mut().zip(&source[offset..]).for_each(|(o, &x)| *o += x * weight);
            }
            let value = epilogue.of(f);
            let outputs = out[f * oh * ow..][..oh * ow].chunks_exact_mut(ow);
            for (row, sums) in outputs.zip(wide.chunks_exact(padded.cols)) {
                row.iter_mut().zip(sums).for_each(|(o, &s)| *o = value(s));
            }
        }
    }
}

/// `input_gradient_with` at stride 1: the output gradient padded by the
/// kernel's extent less one on each side, each tap's run of it scattered
/// back (as one multiply-add over the padded width) onto the padded input,
/// which is then cropped to the input.
#[inline(always)]
fn input_gradient_padded((w, filters, grad, win): Backward, dx: &mut [f32], Planes { source, wide }: &mut Planes) {
    let (plane, (oh, ow)) = (win.height * win.width, (win.out_height(), win.out_width()));
    let (margin_rows, margin_cols) = (win.rows.extent() - 1, win.cols.extent() - 1);
    let padded = Padded {
        rows: oh + 2 * margin_rows,
        cols: ow + 2 * margin_cols,
        top: margin_rows,
        left: margin_cols,
        tail: margin_cols,
    };
    // The padded input's rows, at the padded gradient's width.
    let run = (oh + margin_rows) * padded.cols;
    wide.resize(run, 0.0);
    let per_channel = filters / win.channels;
    for (c, inputs) in dx.chunks_exact_mut(plane).enumerate().take(win.channels) {
        let wide = &mut wide[..run];
        wide.fill(0.0);
        for f in c * per_channel..(c + 1) * per_channel {
            let source = padded.fill(&grad[f * oh * ow..][..oh * ow], ow, source);
            for (tap, &weight) in w[f * win.area()..][..win.area()].iter().enumerate() {
                let (ky, kx) = (tap / win.cols.kernel, tap % win.cols.kernel);
                let offset =
                    (margin_rows - ky * win.rows.dilation) * padded.cols + margin_cols - kx * win.cols.dilation;
                wide.iter_mut().zip(&source[offset..]).for_each(|(d, &g)| *d += g * weight);
            }
        }
        let sums = wide[win.rows.padding * padded.cols..].chunks_exact(padded.cols);
        for (row, sums) in inputs.chunks_exact_mut(win.width).zip(sums) {
            row.copy_from_slice(&sums[win.cols.padding..][..win.width]);
        }
    }
}

/// `weight_gradient_with` at stride 1: each output gradient laid out at
/// the padded input's width (zeros past its columns), and each tap's
/// gradient the dot product of it with the tap's run of the padded input.
#[inline(always)]
fn weight_gradient_padded(
    (images, filters, grads, win): Backward,
    dw: &mut [f32],
    Planes { source, wide }: &mut Planes,
) {
    let (plane, (oh, ow)) = (win.height * win.width, (win.out_height(), win.out_width()));
    let padded = Padded::input(win);
    let spread = Padded { rows: oh, cols: padded.cols, top: 0, left: 0, tail: 0 };
    let per_channel = filters / win.channels;
    let image_len = win.channels * plane;
    for (image, grad) in images.chunks_exact(image_len).zip(grads.chunks_exact(filters * oh * ow)) {
        for (c, input) in image.chunks_exact(plane).enumerate() {
            let source = padded.fill(input, win.width, source);
            for f in c * per_channel..(c + 1) * per_channel {
                let outputs = spread.fill(&grad[f * oh * ow..][..oh * ow], ow, wide);
                for (tap, sum) in dw[f * win.area()..][..win.area()].iter_mut().enumerate() {
                    let (ky, kx) = (tap / win.cols.kernel, tap % win.cols.kernel);
                    let offset = ky * win.rows.dilation * padded.cols + kx * win.cols.dilation;
                    *sum += dot(outputs, &source[offset..]);
                }
            }
        }
    }
}

/// Σ a·b over `a` (and as much of `b`), in sixteen lanes added in order at
/// the end: vector code, and the same sum on every instruction set.
#[inline(always)]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    const LANES: usize = 16;
    let mut lanes = [0.0f32; LANES];
    let (a_blocks, b_blocks) = (a.chunks_exact(LANES), b[..a.len()].chunks_exact(LANES));
    let (a_rest, b_rest) = (a_blocks.remainder(), b_blocks.remainder());
    for (a, b) in a_blocks.zip(b_blocks) {
        for j in 0..LANES {
            lanes[j] += a[j] * b[j];
        }
    }
    for (j, (&a, &b)) in a_rest.iter().zip(b_rest).enumerate() {
        lanes[j] += a * b;
    }
    lanes.iter().sum()
}

#[cfg(test)]
mod tests;
