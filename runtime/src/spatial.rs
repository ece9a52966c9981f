//! Convolution, pooling and per-channel routines over a batch of images.
//! A batch is split into a fixed number of parts, run in parallel when the
//! command line (or a built library) turns image threading on; the results
//! are the same bits either way.
#![allow(unsafe_code)]

use std::sync::atomic::{AtomicBool, Ordering};

use rayon::prelude::*;

use crate::depthwise;
use crate::kernels::{self, Epilogue, Window};
use crate::products::gemm;
use crate::routines::{slice, slice_mut};
#[cfg(target_arch = "x86_64")]
use crate::{conv, pool, winograd};

/// The window generated code passed, and the element counts of a
/// convolution's image, filter (`[F, C/groups, KH, KW]`) and output.
///
/// # Safety
/// `win` points to a valid `Window`.
unsafe fn conv_sizes(win: *const Window, filters: usize, groups: usize) -> (Window, usize, usize, usize) {
    // SAFETY: the caller's contract.
    let win = unsafe { *win };
    let (b, c) = (win.batch, win.channels);
    let filter = filters * (c / groups) * win.area();
    (win, b * c * win.height * win.width, filter, b * filters * win.out_height() * win.out_width())
}

/// Work on one image (its input and output, or its output gradient and
/// input gradient), which `images` runs on every image of a batch.
type PerImage<'a> = &'a (dyn Fn(&[f32], &mut [f32]) + Sync);

/// One group of a grouped convolution: its filters and channels, and where
/// its weights, channels and filters start in the whole convolution's.
struct Group {
    win: Window,
    filters: usize,
    first_filter: usize,
    weights: std::ops::Range<usize>,
    channels: std::ops::Range<usize>,
    outputs: std::ops::Range<usize>,
}

/// The `groups` groups of the convolution `win` of `filters` filters; the
/// channel and output ranges are within one image's values.
fn groups_of(win: Window, filters: usize, groups: usize) -> impl Iterator<Item = Group> {
    let (channels, per_group) = (win.channels / groups, filters / groups);
    let (plane, out_plane) = (win.height * win.width, win.out_height() * win.out_width());
    let weights = per_group * channels * win.area();
    (0..groups).map(move |g| Group {
        win: Window { channels, ..win },
        filters: per_group,
        first_filter: g * per_group,
        weights: g * weights..(g + 1) * weights,
        channels: g * channels * plane..(g + 1) * channels * plane,
        outputs: g * per_group * out_plane..(g + 1) * per_group * out_plane,
    })
}

/// y (`[B, F, OH, OW]`) = the convolution of x (`[B, C, H, W]`) by `w`
/// (`[F, C/groups, KH, KW]`), plus `bias` where it is not null, through a
/// ReLU where `relu` is not 0. Weights of a `weights_version` keep their
/// Winograd transform between calls; with `together` not 0 (generated
/// for replicas of a step sharing one store, every one of which calls
/// this for the same weight), the members of this thread's team
/// transform it together, each a share.
#[unsafe(no_mangle)]
pub extern "C" fn nnc_conv2d(
    x: *const f32,
    w: *const f32,
    y: *mut f32,
    win: *const Window,
    f: usize,
    groups: usize,
    bias: *const f32,
    relu: usize,
    weights_version: u64,
    together: usize,
) {
    // SAFETY: generated code passes the window of this convolution.
    let (win, image, filter, out) = unsafe { conv_sizes(win, f, groups) };
    let Window { batch: b, channels: c, height: h, width: wd, .. } = win;
    // SAFETY: x holds the image's values, w the filter's, y the output's.
    let (x, w, y) = unsafe { (slice(x, image), slice(w, filter), slice_mut(y, out)) };
    // SAFETY: a bias that is not null holds one value per filter.
    let bias = (!bias.is_null()).then(|| unsafe { slice(bias, f) });
    let epilogue = Epilogue { bias, relu: relu != 0 };
    let cols = win.out_height() * win.out_width();
    let per = images_per_part(b);
    let images = |y: &mut [f32], per_image: PerImage| {
        each_part(y, per * f * cols, |part, y| {
            let x = &x[part * per * c * h * wd..];
            x.chunks_exact(c * h * wd).zip(y.chunks_exact_mut(f * cols)).for_each(|(image, out)| per_image(image, out));
        })
    };
    if depthwise::applies(c, groups) {
        return images(y, &|image, out| depthwise::forward_image(w, f, image, win, epilogue, out));
    }
    for group in groups_of(win, f, groups) {
        let epilogue = epilogue.columns(group.first_filter, group.filters);
        let w = &w[group.weights.clone()];
        // The Winograd kernel takes the whole batch: its blocks of tiles
        // may span images.
        #[cfg(target_arch = "x86_64")]
        if winograd::applies(group.win, group.filters) {
            let from = winograd::Layout { stride: c * h * wd, first: group.channels.start };
            let to = winograd::Layout { stride: f * cols, first: group.outputs.start };
            winograd::with_filter(w, group.filters, group.win, (weights_version, together != 0), |u| {
                winograd::forward(u, group.filters, (x, from), group.win, epilogue, (&mut *y, to))
            });
            continue;
        }
        forward_group(w, group.filters, group.win, epilogue, &mut |per_image| {
            images(&mut *y, &|image, out| per_image(&image[group.channels.clone()], &mut out[group.outputs.clone()]))
        });
    }
}

/// The convolution of one group (the whole convolution when ungrouped) by
/// its filter `w`, on every image `images` runs: in the direct kernel, or
/// as a product of the unfolded image (`im2col`).
fn forward_group(w: &[f32], f: usize, win: Window, epilogue: Epilogue, images: &mut dyn FnMut(PerImage)) {
    #[cfg(target_arch = "x86_64")]
    if conv::applies(win) {
        return conv::with_forward_filter(w, f, win, |packed| {
            images(&|image, out| conv::forward_image(packed, f, image, win, epilogue, out))
        });
    }
    let (rows, cols) = (win.channels * win.area(), win.out_height() * win.out_width());
    images(&|image, out| {
        with_columns(rows * cols, |columns| {
            kernels::im2col(image, columns, win);
            // out [F, OH·OW] = w [F, C·KH·KW] · columns [C·KH·KW, OH·OW]
            gemm(f, rows, cols, w, (rows, 1), columns, (cols, 1), out, false);
        });
        if !epilogue.is_nothing() {
            for (f, plane) in out.chunks_exact_mut(cols).enumerate() {
                let value = epilogue.of(f);
                plane.iter_mut().for_each(|v| *v = value(*v));
            }
        }
    });
}

/// A batch's images are split into this many parts, a fixed number, so
/// that results are bit for bit the same whatever the thread count.
const PARTS: usize = 4;

/// Whether the parts run on rayon's threads. Off unless the command line
/// turns it on for models whose products are too small to thread.
static PARALLEL_IMAGES: AtomicBool = AtomicBool::new(false);

/// Runs the convolution and pooling routines' image parts in parallel (or not).
pub fn set_parallel_images(on: bool) {
    PARALLEL_IMAGES.store(on, Ordering::Relaxed);
}

pub fn parallel_images() -> bool {
    PARALLEL_IMAGES.load(Ordering::Relaxed)
}

fn images_per_part(batch: usize) -> usize {
    batch.div_ceil(PARTS).max(1)
}

/// Calls `work(part, chunk)` for each `chunk_len`-sized chunk of `out`, in
/// parallel when image threading is on. Each part writes only its chunk.
fn each_part(out: &mut [f32], chunk_len: usize, work: impl Fn(usize, &mut [f32]) + Sync) {
    let chunk_len = chunk_len.max(1);
    if parallel_images() {
        out.par_chunks_mut(chunk_len).enumerate().for_each(|(i, chunk)| work(i, chunk));
    } else {
        out.chunks_mut(chunk_len).enumerate().for_each(|(i, chunk)| work(i, chunk));
    }
}

thread_local! {
    /// The im2col buffer, grown to the largest convolution and then reused.
    static COLUMNS: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
    /// Per-part weight gradients, reused likewise.
    static PARTIALS: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

fn with_columns(len: usize, f: impl FnOnce(&mut [f32])) {
    COLUMNS.with(|cell| {
        let mut columns = cell.borrow_mut();
        if columns.len() < len {
            columns.resize(len, 0.0);
        }
        f(&mut columns[..len]);
    });
}

/// Work on one image's output gradient and input gradient, given the
/// output of the ReLU whose gradient is fused (`positive`), if any.
type PerGradient<'a> = &'a (dyn Fn(&[f32], &mut [f32], Option<&[f32]>) + Sync);

/// dx (`[B, C, H, W]`) = the gradient of the convolution's input from its
/// output's, `g` (`[B, F, OH, OW]`), and its filter `w`. Where `positive`
/// is not null (`[B, C, H, W]`, the output of a ReLU the convolution
/// read), each value of dx is then times [positive > 0]: the gradient
/// through that ReLU too, taken while the values are in cache. With
/// `together` not 0, the members of this thread's team transform a
/// Winograd filter together, as in `nnc_conv2d`.
#[unsafe(no_mangle)]
pub extern "C" fn nnc_conv2d_grad_input(
    w: *const f32,
    g: *const f32,
    dx: *mut f32,
    win: *const Window,
    f: usize,
    groups: usize,
    positive: *const f32,
    together: usize,
) {
    // SAFETY: generated code passes the window of this convolution.
    let (win, image, filter, out) = unsafe { conv_sizes(win, f, groups) };
    let Window { batch: b, channels: c, height: h, width: wd, .. } = win;
    // SAFETY: w holds the filter's values, g the output's, dx the image's.
    let (w, g, dx) = unsafe { (slice(w, filter), slice(g, out), slice_mut(dx, image)) };
    // SAFETY: a ReLU's output that is not null holds the image's values.
    let positive = (!positive.is_null()).then(|| unsafe { slice(positive, image) });
    let (cols, image_len) = (win.out_height() * win.out_width(), c * h * wd);
    let per = images_per_part(b);
    let images = |dx: &mut [f32], per_image: PerGradient| {
        each_part(dx, per * image_len, |part, dx| {
            let g = &g[part * per * f * cols..];
            for (i, (grad, image)) in g.chunks_exact(f * cols).zip(dx.chunks_exact_mut(image_len)).enumerate() {
                let first = (part * per + i) * image_len;
                per_image(grad, image, positive.map(|p| &p[first..first + image_len]));
            }
        })
    };
    if depthwise::applies(c, groups) {
        return images(dx, &|grad, image, positive| {
            depthwise::input_gradient_image(w, f, grad, win, image);
            through_relu(image, positive);
        });
    }
    // The groups' channels are disjoint: each writes its own.
    for group in groups_of(win, f, groups) {
        let w = &w[group.weights.clone()];
        // The Winograd kernel takes the whole batch, as in `nnc_conv2d`.
        #[cfg(target_arch = "x86_64")]
        if let Some(flipped) = winograd::input_gradient_window(group.win, group.filters) {
            let from = winograd::Layout { stride: f * cols, first: group.outputs.start };
            let to = winograd::Layout { stride: image_len, first: group.channels.start };
            winograd::with_input_gradient_filter(w, group.filters, (group.win, flipped), together != 0, |u| {
                winograd::input_gradient(u, group.win.channels, (g, from), flipped, positive, (&mut *dx, to))
            });
            continue;
        }
        input_gradient_group(w, group.filters, group.win, &mut |per_image| {
            images(&mut *dx, &|grad, image, positive| {
                let channels = group.channels.clone();
                per_image(&grad[group.outputs.clone()], &mut image[channels.clone()], positive.map(|p| &p[channels]))
            })
        });
    }
}

/// dx · [positive > 0] in place, where a ReLU's gradient is fused.
fn through_relu(dx: &mut [f32], positive: Option<&[f32]>) {
    if let Some(positive) = positive {
        kernels::relu_gradient(dx, positive);
    }
}

/// The input gradient of one group's convolution (the whole one when
/// ungrouped), image by image as `forward_group` runs them: in the direct
/// kernel, or as a product and its folding back (`col2im`).
fn input_gradient_group(w: &[f32], f: usize, win: Window, images: &mut dyn FnMut(PerGradient)) {
    let c = win.channels;
    #[cfg(target_arch = "x86_64")]
    if conv::applies(win) {
        return conv::with_input_gradient_filter(w, f, win, |packed| {
            images(&|grad, image, positive| {
                conv::input_gradient_image(packed, f, grad, win, image);
                through_relu(image, positive);
            })
        });
    }
    let (rows, cols) = (c * win.area(), win.out_height() * win.out_width());
    images(&|grad, image, positive| {
        with_columns(rows * cols, |columns| {
            // columns [C·KH·KW, OH·OW] = wᵀ · g
            gemm(rows, f, cols, w, (1, rows), grad, (cols, 1), columns, false);
            kernels::col2im(columns, image, win);
        });
        through_relu(image, positive);
    });
}

#[unsafe(no_mangle)]
pub extern "C" fn nnc_conv2d_grad_weight(
    x: *const f32,
    g: *const f32,
    dw: *mut f32,
    win: *const Window,
    f: usize,
    groups: usize,
) {
    // SAFETY: generated code passes the window of this convolution.
    let (win, image, filter, out) = unsafe { conv_sizes(win, f, groups) };
    let Window { batch: b, channels: c, height: h, width: wd, .. } = win;
    // SAFETY: x holds the image's values, g the output's, dw the filter's.
    let (x, g, dw) = unsafe { (slice(x, image), slice(g, out), slice_mut(dw, filter)) };
    #[cfg(target_arch = "x86_64")]
    if groups == 1 && winograd::weight_gradient_applies(win, f) {
        return winograd::weight_gradient(x, g, f, win, dw);
    }
    let cols = win.out_height() * win.out_width();
    let per = images_per_part(b);
    let (image_len, grad_len) = (c * h * wd, f * cols);
    let depthwise = depthwise::applies(c, groups);
    // Each part sums its images' products into its own partial; the partials
    // are then added in part order.
    PARTIALS.with(|cell| {
        let mut partials = cell.borrow_mut();
        partials.clear();
        partials.resize(b.div_ceil(per) * filter, 0.0);
        each_part(&mut partials, filter, |part, partial| {
            let images = per.min(b - part * per);
            let x = &x[part * per * image_len..(part * per + images) * image_len];
            let g = &g[part * per * grad_len..(part * per + images) * grad_len];
            if depthwise {
                depthwise::weight_gradient(x, g, f, win, partial);
            } else if groups == 1 {
                add_weight_gradient(x, g, f, win, partial);
            } else {
                for (image, grad) in x.chunks_exact(image_len).zip(g.chunks_exact(grad_len)) {
                    for group in groups_of(win, f, groups) {
                        let (image, grad) = (&image[group.channels.clone()], &grad[group.outputs.clone()]);
                        add_weight_gradient(image, grad, group.filters, group.win, &mut partial[group.weights]);
                    }
                }
            }
        });
        dw.fill(0.0);
        for partial in partials.chunks_exact(filter) {
            dw.iter_mut().zip(partial).for_each(|(d, &p)| *d += p);
        }
    });
}

/// Adds the weight gradient of a run of images (`[N, C, H, W]`, their output
/// gradients `grads` `[N, F, OH, OW]`) to `dw`: in the direct kernel, or as
/// products of the unfolded images.
fn add_weight_gradient(images: &[f32], grads: &[f32], f: usize, win: Window, dw: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if conv::applies(win) {
        return conv::weight_gradient(images, grads, f, win, dw);
    }
    let (rows, cols) = (win.channels * win.area(), win.out_height() * win.out_width());
    let image_len = win.channels * win.height * win.width;
    for (image, grad) in images.chunks_exact(image_len).zip(grads.chunks_exact(f * cols)) {
        with_columns(rows * cols, |columns| {
            kernels::im2col(image, columns, win);
            // dw [F, C·KH·KW] += g [F, OH·OW] · columnsᵀ
            gemm(f, cols, rows, grad, (cols, 1), columns, (1, cols), dw, true);
        });
    }
}

#[unsafe(no_mangle)]
pub extern "C" fn nnc_sum_channels(g: *const f32, out: *mut f32, n: usize, channels: usize, spatial: usize) {
    // SAFETY: g holds n values, out one per channel.
    let (g, out) = unsafe { (slice(g, n), slice_mut(out, channels)) };
    sum_channels(g, None, out, spatial);
}

/// out[f] = Σ a·b over channel f: one pass where storing the products
/// first would take two (batch normalisation's variance and scale gradient).
#[unsafe(no_mangle)]
pub extern "C" fn nnc_sum_product_channels(
    a: *const f32,
    b: *const f32,
    out: *mut f32,
    n: usize,
    channels: usize,
    spatial: usize,
) {
    // SAFETY: a and b hold n values each, out one per channel.
    let (a, b, out) = unsafe { (slice(a, n), slice(b, n), slice_mut(out, channels)) };
    sum_channels(a, Some(b), out, spatial);
}

/// Each channel's sum of `a` and sum of its products with `b`, in one pass
/// over them: batch normalisation's backward pass reads its incoming
/// gradient once for both (β's gradient and γ's); channels of one value a
/// row (a dense layer's) take a pass each, row by row. The bits of
/// `nnc_sum_channels` and `nnc_sum_product_channels`.
#[unsafe(no_mangle)]
pub extern "C" fn nnc_sum_and_product_channels(
    a: *const f32,
    b: *const f32,
    sums: *mut f32,
    products: *mut f32,
    n: usize,
    channels: usize,
    spatial: usize,
) {
    // SAFETY: a and b hold n values each, sums and products one per channel.
    let (a, b, sums, products) =
        unsafe { (slice(a, n), slice(b, n), slice_mut(sums, channels), slice_mut(products, channels)) };
    if spatial == 1 {
        row_by_row_sums(a, None, sums);
        return row_by_row_sums(a, Some(b), products);
    }
    if spread_channels(n, spatial) {
        let pair = |(f, (s, p)): (usize, (&mut f32, &mut f32))| {
            [*s, *p] = crate::routines::channel_sum_pair(a, b, f, channels, spatial);
        };
        sums.par_iter_mut().zip(products.par_iter_mut()).enumerate().for_each(pair);
    } else {
        crate::routines::channel_sum_pairs_in_order(a, b, sums, products, spatial);
    }
}

/// Whether channel sums over `n` values go channel by channel over the
/// threads (channels are independent, so the bits do not depend on them);
/// otherwise one thread takes them in memory order (the same bits).
fn spread_channels(n: usize, spatial: usize) -> bool {
    n >= crate::routines::PARALLEL_SUM && spatial >= 16 && rayon::current_num_threads() > 1
}

/// Each channel's sum of `g` (or of its products with `by`), over the
/// threads when it is large (`spread_channels`).
fn sum_channels(g: &[f32], by: Option<&[f32]>, out: &mut [f32], spatial: usize) {
    if spatial == 1 {
        return row_by_row_sums(g, by, out);
    }
    let (n, channels) = (g.len(), out.len());
    if spread_channels(n, spatial) {
        let sum = |(f, o): (usize, &mut f32)| *o = crate::routines::channel_sum(g, by, f, channels, spatial);
        out.par_iter_mut().enumerate().for_each(sum);
    } else {
        crate::routines::channel_sums_in_order(g, by, out, spatial);
    }
}

/// The channel sums of `[B, channels]` values, one per channel and row
/// (a dense layer's units): `out[f]` = Σ a[r, f], or with `by` Σ
/// a[r, f]·by[r, f], the rows added in order a vector of channels at a
/// time. Each channel's values are added one by one from zero, each
/// product rounded first, as `channel_sum` adds its one-value planes: the
/// same bits, without a call for every value (which took a tenth of an
/// MLP's training step when its activations' health is watched).
fn row_by_row_sums(a: &[f32], by: Option<&[f32]>, out: &mut [f32]) {
    crate::routines::column_sums(a, by, (out.len(), 0), out);
}

#[unsafe(no_mangle)]
pub extern "C" fn nnc_pool(x: *const f32, y: *mut f32, win: *const Window, max: usize) {
    // SAFETY: generated code passes the window of this pooling.
    let win = unsafe { *win };
    let Window { batch: b, channels: c, height: h, width: w, .. } = win;
    let out = b * c * win.out_height() * win.out_width();
    // SAFETY: x holds b·c·h·w values, y the output's.
    let (x, y) = unsafe { (slice(x, b * c * h * w), slice_mut(y, out)) };
    let per = images_per_part(b);
    each_part(y, per * out / b.max(1), |part, y| {
        let images = y.len() / (out / b.max(1)).max(1);
        let x = &x[part * per * c * h * w..(part * per + images) * c * h * w];
        let win = Window { batch: images, ..win };
        #[cfg(target_arch = "x86_64")]
        if max != 0 && pool::applies(win) {
            return pool::max_pool_2x2(x, y, win);
        }
        kernels::pool(x, y, win, max != 0);
    });
}

/// `planes` planes of `height × width` values, each value repeated over a
/// `factor × factor` block.
#[unsafe(no_mangle)]
pub extern "C" fn nnc_upsample(x: *const f32, y: *mut f32, planes: usize, height: usize, width: usize, factor: usize) {
    let n = planes * height * width;
    // SAFETY: x holds the planes, y the planes `factor`² times larger.
    let (x, y) = unsafe { (slice(x, n), slice_mut(y, n * factor * factor)) };
    kernels::upsample(x, y, (height, width), factor);
}

/// dx from the pooled gradient g; with `relu` (max pooling of a ReLU's
/// output x) the ReLU's gradient too, dx · [x > 0], in the same pass.
#[unsafe(no_mangle)]
pub extern "C" fn nnc_pool_grad(
    x: *const f32,
    g: *const f32,
    dx: *mut f32,
    win: *const Window,
    max: usize,
    relu: usize,
) {
    // SAFETY: generated code passes the window of this pooling.
    let win = unsafe { *win };
    let Window { batch: b, channels: c, height: h, width: w, .. } = win;
    let out = b * c * win.out_height() * win.out_width();
    // SAFETY: x and dx hold b·c·h·w values, g the output's.
    let (x, g, dx) = unsafe { (slice(x, b * c * h * w), slice(g, out), slice_mut(dx, b * c * h * w)) };
    let (per, image) = (images_per_part(b), c * h * w);
    each_part(dx, per * image, |part, dx| {
        let images = dx.len() / image.max(1);
        let range = part * per..part * per + images;
        let (x, g) = (&x[range.start * image..range.end * image], &g[range.start * out / b..range.end * out / b]);
        let win = Window { batch: images, ..win };
        #[cfg(target_arch = "x86_64")]
        if max != 0 && pool::applies(win) {
            return pool::max_pool_2x2_backward(x, g, dx, win, relu != 0);
        }
        kernels::pool_backward(x, g, dx, win, (max != 0, relu != 0));
    });
}

#[cfg(test)]
mod tests;
