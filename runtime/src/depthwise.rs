//! Depthwise convolutions: as many groups as channels, so that every filter
//! reads one channel (filter f of F = m·C reads channel f / m).
//!
//! Run as a product per group, each would be a product of one row, whose
//! packing and blocking cost more than its multiply-adds. Here each output
//! row is instead summed tap by tap: one multiply-add of a row of inputs
//! into the row of outputs per tap, in the vectors of this CPU. Every sum
//! takes its terms in the reference loops' order (`kernels::conv2d`), so
//! the forward pass and the input gradient give their bits; the weight
//! gradient sums each tap's products a row of positions at a time.
#![allow(unsafe_code)]

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
    match crate::gemm::Isa::detect() {
        Some(isa) => forward_for(isa, w, filters, image, win, epilogue, out),
        None => forward_with(w, filters, image, win, epilogue, out),
    }
}

crate::simd::compiled_for_isa! {
    /// `forward_with` in the vectors of `isa`.
    fn forward_for(w: &[f32], filters: usize, image: &[f32], win: Window, epilogue: Epilogue, out: &mut [f32]) {
        forward_with(w, filters, image, win, epilogue, out)
    }
}

#[inline(always)]
fn forward_with(w: &[f32], filters: usize, image: &[f32], win: Window, epilogue: Epilogue, out: &mut [f32]) {
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
    match crate::gemm::Isa::detect() {
        Some(isa) => input_gradient_for(isa, w, filters, grad, win, dx),
        None => input_gradient_with(w, filters, grad, win, dx),
    }
}

crate::simd::compiled_for_isa! {
    /// `input_gradient_with` in the vectors of `isa`.
    fn input_gradient_for(w: &[f32], filters: usize, grad: &[f32], win: Window, dx: &mut [f32]) {
        input_gradient_with(w, filters, grad, win, dx)
    }
}

#[inline(always)]
fn input_gradient_with(w: &[f32], filters: usize, grad: &[f32], win: Window, dx: &mut [f32]) {
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
    SUMS.with(|cell| {
        let sums = &mut cell.borrow_mut();
        sums.resize(win.out_width(), 0.0);
        match crate::gemm::Isa::detect() {
            Some(isa) => weight_gradient_for(isa, images, grads, filters, win, sums, dw),
            None => weight_gradient_with(images, grads, filters, win, sums, dw),
        }
    })
}

thread_local! {
    /// One row of a tap's sums, per position.
    static SUMS: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

crate::simd::compiled_for_isa! {
    /// `weight_gradient_with` in the vectors of `isa`.
    fn weight_gradient_for(
        images: &[f32],
        grads: &[f32],
        filters: usize,
        win: Window,
        sums: &mut [f32],
        dw: &mut [f32],
    ) {
        weight_gradient_with(images, grads, filters, win, sums, dw)
    }
}

#[inline(always)]
fn weight_gradient_with(images: &[f32], grads: &[f32], filters: usize, win: Window, sums: &mut [f32], dw: &mut [f32]) {
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

#[cfg(test)]
mod tests;
