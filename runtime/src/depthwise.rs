//! Depthwise convolutions: as many groups as channels, so that every filter
//! reads one channel (filter f of F = m·C reads channel f / m).
//!
//! Run as a product per group, each would be a product of one row, whose
//! packing and blocking cost more than its multiply-adds. Here each output
//! plane is instead summed tap by tap, in the vectors of this CPU. Each
//! input plane is zero-padded once and split by the stride into phases
//! (`Phases`; at stride 1, the padded plane itself), and every output is
//! computed for a phase's whole width (the columns past the output's are
//! dropped): a tap's inputs for a whole output plane are then one run of
//! one phase, and the plane one multiply-add of that run per tap, however
//! small the image. The input gradient scatters each tap's run back the
//! same way; the weight gradient is one dot product per tap.
//!
//! Every sum takes its terms in the reference loops' order
//! (`kernels::conv2d`), the padding's zeros added in between, so the
//! forward pass and the input gradient give their bits on finite values;
//! the weight gradient sums each tap's products in sixteen lanes
//! (`products::dot`).
#![allow(unsafe_code)]

use crate::gemm::Isa;
use crate::kernels::{Epilogue, Window};
use crate::products::dot;

/// Whether a convolution of `channels` channels in `groups` groups is
/// depthwise (and not an ordinary convolution of one channel).
pub fn applies(channels: usize, groups: usize) -> bool {
    groups > 1 && groups == channels
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
fn forward_with((w, filters, image, win, epilogue): Forward, out: &mut [f32], Planes { source, wide }: &mut Planes) {
    let (plane, (oh, ow)) = (win.height * win.width, (win.out_height(), win.out_width()));
    let phases = Phases::of(win);
    let run = oh * phases.cols;
    wide.resize(run, 0.0);
    let per_channel = filters / win.channels;
    for (c, input) in image.chunks_exact(plane).enumerate().take(win.channels) {
        let source = phases.split(input, win, source);
        for f in c * per_channel..(c + 1) * per_channel {
            let wide = &mut wide[..run];
            wide.fill(0.0);
            for (tap, &weight) in w[f * win.area()..][..win.area()].iter().enumerate() {
                let inputs = &source[phases.tap(win, tap)..];
                wide.iter_mut().zip(inputs).for_each(|(o, &x)| *o += x * weight);
            }
            let value = epilogue.of(f);
            let outputs = out[f * oh * ow..][..oh * ow].chunks_exact_mut(ow);
            for (row, sums) in outputs.zip(wide.chunks_exact(phases.cols)) {
                row.iter_mut().zip(sums).for_each(|(o, &s)| *o = value(s));
            }
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
fn input_gradient_with((w, filters, grad, win): Backward, dx: &mut [f32], Planes { source, wide }: &mut Planes) {
    let (plane, (oh, ow)) = (win.height * win.width, (win.out_height(), win.out_width()));
    let phases = Phases::of(win);
    let run = oh * phases.cols;
    let per_channel = filters / win.channels;
    for (c, inputs) in dx.chunks_exact_mut(plane).enumerate().take(win.channels) {
        // The padded input's gradient, phase by phase.
        source.clear();
        source.resize(phases.total(), 0.0);
        for f in c * per_channel..(c + 1) * per_channel {
            let outputs = phases.spread(&grad[f * oh * ow..][..oh * ow], ow, wide);
            for (tap, &weight) in w[f * win.area()..][..win.area()].iter().enumerate() {
                let inputs = &mut source[phases.tap(win, tap)..][..run];
                inputs.iter_mut().zip(outputs).for_each(|(d, &g)| *d += g * weight);
            }
        }
        phases.join(source, win, inputs);
    }
}

/// Adds the weight gradient of a run of images (`[N, C, H, W]`, their
/// output gradients `grads` `[N, F, OH, OW]`) to `dw` (`[F, 1, KH, KW]`).
/// Each tap's products are summed in sixteen lanes, then across them
/// (`dot`): a fixed order, whatever the threads.
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
fn weight_gradient_with((images, filters, grads, win): Backward, dw: &mut [f32], Planes { source, wide }: &mut Planes) {
    let (plane, (oh, ow)) = (win.height * win.width, (win.out_height(), win.out_width()));
    let phases = Phases::of(win);
    let per_channel = filters / win.channels;
    let image_len = win.channels * plane;
    for (image, grad) in images.chunks_exact(image_len).zip(grads.chunks_exact(filters * oh * ow)) {
        for (c, input) in image.chunks_exact(plane).enumerate() {
            let source = phases.split(input, win, source);
            for f in c * per_channel..(c + 1) * per_channel {
                let outputs = phases.spread(&grad[f * oh * ow..][..oh * ow], ow, wide);
                for (tap, sum) in dw[f * win.area()..][..win.area()].iter_mut().enumerate() {
                    *sum += dot(outputs, &source[phases.tap(win, tap)..]);
                }
            }
        }
    }
}

thread_local! {
    static PLANES: std::cell::RefCell<Planes> = const { std::cell::RefCell::new(Planes { source: Vec::new(), wide: Vec::new() }) };
}

/// Runs `work` with this thread's buffers.
fn with_planes<R>(work: impl FnOnce(&mut Planes) -> R) -> R {
    PLANES.with(|cell| work(&mut cell.borrow_mut()))
}

/// The kernels' buffers: a plane's phases (`Phases`) the taps read or the
/// input gradient's are scattered into, and an output plane at a phase's
/// width (its sums, or its gradient with zeros past its columns).
struct Planes {
    source: Vec<f32>,
    wide: Vec<f32>,
}

/// A plane zero-padded as a window pads it, then split by its strides into
/// phases: phase (a, b) holds the padded rows a, a + sᵣ, … and columns
/// b, b + s꜀, …. Output (y, x) reads tap (ky, kx) from padded (y·sᵣ + ky·dᵣ,
/// x·s꜀ + kx·d꜀), which is (y + ky·dᵣ / sᵣ, x + kx·d꜀ / s꜀) of the phase
/// (ky·dᵣ mod sᵣ, kx·d꜀ mod s꜀): at stride 1 in every phase. So a tap's
/// inputs for every output of a plane, computed for the phase's whole
/// width, are one run of one phase.
#[derive(Clone, Copy)]
struct Phases {
    /// sᵣ·s꜀ phases of some rows of `cols`.
    count: usize,
    cols: usize,
    /// Values per phase: its rows, then the zeros the widest tap's run
    /// reads past the last row.
    len: usize,
}

impl Phases {
    fn of(win: Window) -> Phases {
        let (r, c) = (win.rows, win.cols);
        let rows = (win.height + 2 * r.padding).div_ceil(r.stride);
        let cols = (win.width + 2 * c.padding).div_ceil(c.stride);
        let tail = (c.extent() - 1) / c.stride;
        Phases { count: r.stride * c.stride, cols, len: rows * cols + tail }
    }

    /// Values in all the phases.
    fn total(self) -> usize {
        self.count * self.len
    }

    /// Where tap `tap` (row-major in the kernel) of `win` starts reading:
    /// its phase's start, and its offset in the phase.
    #[inline(always)]
    fn tap(self, win: Window, tap: usize) -> usize {
        let (dy, dx) = (tap / win.cols.kernel * win.rows.dilation, tap % win.cols.kernel * win.cols.dilation);
        let phase = dy % win.rows.stride * win.cols.stride + dx % win.cols.stride;
        phase * self.len + dy / win.rows.stride * self.cols + dx / win.cols.stride
    }

    /// `plane` (`win`'s height × width) padded and split into `out`.
    #[inline(always)]
    fn split<'a>(self, plane: &[f32], win: Window, out: &'a mut Vec<f32>) -> &'a [f32] {
        out.clear();
        out.resize(self.total(), 0.0);
        for (y, line) in plane.chunks_exact(win.width).enumerate() {
            for (start, values) in self.row_runs(win, y) {
                let runs = out[start..].iter_mut().zip(line[values].iter().step_by(win.cols.stride));
                runs.for_each(|(o, &v)| *o = v);
            }
        }
        out
    }

    /// The plane within the padding, read back from its phases: `split`'s inverse.
    #[inline(always)]
    fn join(self, phases: &[f32], win: Window, plane: &mut [f32]) {
        for (y, line) in plane.chunks_exact_mut(win.width).enumerate() {
            for (start, values) in self.row_runs(win, y) {
                let runs = line[values].iter_mut().step_by(win.cols.stride).zip(&phases[start..]);
                runs.for_each(|(v, &p)| *v = p);
            }
        }
    }

    /// Row `y` of a plane in the phases: for each column phase, where its
    /// values start there, and the columns from the first of them on (every
    /// s꜀-th of which are its).
    #[inline(always)]
    fn row_runs(self, win: Window, y: usize) -> impl Iterator<Item = (usize, std::ops::RangeFrom<usize>)> {
        let (sr, sc, left) = (win.rows.stride, win.cols.stride, win.cols.padding);
        let py = y + win.rows.padding;
        let row = py % sr * sc * self.len + py / sr * self.cols;
        // Column x lies in phase (left + x) mod s꜀, at (left + x) / s꜀.
        (0..sc.min(win.width)).map(move |x| (row + (left + x) % sc * self.len + (left + x) / sc, x..))
    }

    /// An output plane (rows of `width`) laid out at the phases' width,
    /// zeros past its columns, in `out`.
    #[inline(always)]
    fn spread<'a>(self, plane: &[f32], width: usize, out: &'a mut Vec<f32>) -> &'a [f32] {
        out.clear();
        out.resize(plane.len() / width * self.cols, 0.0);
        for (line, wide) in plane.chunks_exact(width).zip(out.chunks_exact_mut(self.cols)) {
            wide[..width].copy_from_slice(line);
        }
        out
    }
}

#[cfg(test)]
mod tests;
