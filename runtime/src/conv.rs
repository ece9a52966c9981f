//! Stride-1 convolutions without im2col, on CPUs with AVX2 and FMA.
//!
//! Zero-pad the image into planes of `rows × cols`. A stride-1 output at
//! (y, x) reads the inputs at (y + d·ky, x + d·kx), d the dilation. Computing
//! an output for every column of the padded width (the last d·(k − 1) of each
//! row are discarded), the output at q = y·cols + x reads
//! `src[q + offset(c, ky, kx)]`, where offset = c·rows·cols + d·(ky·cols + kx).
//! Every tap's inputs are then one
//! contiguous run of the padded image, so the product
//! `out[m, q] = Σ_r a[m, r] · src[offset(r) + q]` runs straight from it: no
//! unfolded columns and no packing, only a register-blocked kernel (six
//! output rows by 16 positions, or by 32 on AVX-512). The input
//! gradient is the same product (the flipped, transposed filter over the
//! padded output gradient) and the weight gradient its dot-product twin.
//!
//! Small images waste much of that product: the discarded columns, and
//! output rows rounded up to blocks of six. There the product runs with 16
//! output rows across the lanes instead, and each kept position's input
//! broadcast (`Layout::Lanes`); `Layout::of` takes the one with fewer
//! multiply-adds. Both sum the taps of an output in the same order, so they
//! give the same bits. On such images the input gradient is scattered from
//! each output instead of gathered through the padding's zeros (`lanes`).
#![allow(unsafe_code)]

use std::arch::x86_64::{
    __m256, __m512, _mm256_add_ps, _mm256_loadu_ps, _mm256_max_ps, _mm256_set1_ps, _mm256_setzero_ps, _mm256_storeu_ps,
};
use std::cell::RefCell;

use rayon::prelude::*;

use crate::kernels::{Epilogue, Window};

mod lanes;
mod weights;

use lanes::{
    Blocks, LANES, NQ, Scattered, lanes_input_gradient, lanes_product, lanes_weight_offsets, lanes_weight_reduce,
    lanes_weight_sums, lanes_weight_sums_len, pack_scattered_filter,
};
use weights::rows_weight_gradient;

use crate::gemm::Isa;
use crate::simd::Vector;

/// Outputs per block of the product: two 8-lane registers, or one
/// 16-lane register (two blocks go at once on AVX-512, `product_blocks_in`).
const QB: usize = 16;
/// Output rows (channels) per block of the product: 12 accumulators.
const MB: usize = 6;
/// About how many positions a band of output rows holds: its inputs, over
/// all channels, should stay in the core's cache while they are reused.
const BAND: usize = 256;
/// Taps per pass of the product (about 3 KiB of a block's filter values).
const PASS_TAPS: usize = 128;
/// Products with at least this many multiply-adds spread their bands (or
/// groups of filters) over the threads; a batch of one image needs it.
const PARALLEL_WORK: usize = 1 << 22;
/// `Layout::Lanes` reads a group's filter values once per block of
/// positions: at most this many taps (64 KiB of them) keeps them near.
const LANES_TAPS: usize = 1024;

/// How a product's filter is packed, and so which kernel runs it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Layout {
    /// Blocks of MB output rows; QB positions of the padded width at a time,
    /// or two QB on AVX-512 (`product_blocks_in`).
    Rows,
    /// Groups of LANES output rows across the lanes; the kept positions
    /// only, NQ at a time (`lanes_block`).
    Lanes,
}

impl Layout {
    /// The layout with fewer multiply-adds for `rows` outputs of `crop`
    /// from `geo`, by a tenth at least for the lanes.
    fn of(rows: usize, geo: Source, crop: Crop) -> Layout {
        let padded = rows.next_multiple_of(MB) * (crop.height * geo.cols).next_multiple_of(QB);
        let kept = rows.next_multiple_of(LANES) * (crop.height * crop.width).next_multiple_of(NQ);
        if crop.height * crop.width > 0 && geo.taps() <= LANES_TAPS && 10 * kept < 9 * padded {
            Layout::Lanes
        } else {
            Layout::Rows
        }
    }

    /// Output rows per block of the packed filter.
    fn block(self) -> usize {
        match self {
            Layout::Rows => MB,
            Layout::Lanes => LANES,
        }
    }
}

/// Whether this path can run the convolution `win` on this CPU: a square
/// kernel (which the rest of this module assumes) at stride 1.
pub fn applies(win: Window) -> bool {
    win.is_square() && win.rows.stride == 1 && supported()
}

/// Whether this CPU has what the path needs (AVX2 and FMA).
pub fn supported() -> bool {
    is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma")
}

/// The widest instruction set the lanes kernels run on this CPU (which
/// `supported`).
fn isa() -> Isa {
    Isa::detect().expect("the direct convolution runs only where AVX2 and FMA are")
}

/// A stack of zero-padded planes, and where each tap of a square kernel
/// (taps `dilation` apart) starts reading in it.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Source {
    planes: usize,
    rows: usize,
    cols: usize,
    kernel: usize,
    dilation: usize,
    /// The rows `fill` copies values into, [first, end): the rest are zero.
    filled: (usize, usize),
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
        c * self.plane() + (tap / self.kernel * self.cols + tap % self.kernel) * self.dilation
    }

    /// Copies `[planes, h, w]` values into the planes with their top-left
    /// corner at (top, left); everything else is zero. The zeros are written
    /// only when `out` last held another geometry: a fill writes nowhere else.
    fn fill(self, values: &[f32], (h, w): (usize, usize), (top, left): (usize, usize), out: &mut Padded) {
        assert_eq!(self.filled, (top, top + h));
        let geometry = (self, (h, w), (top, left));
        if out.geometry != Some(geometry) {
            out.values.clear();
            out.values.resize(self.len(), 0.0);
            out.geometry = Some(geometry);
        }
        for (plane, image) in out.values.chunks_exact_mut(self.plane()).zip(values.chunks_exact(h * w)) {
            for (y, line) in image.chunks_exact(w).enumerate() {
                let at = (y + top) * self.cols + left;
                plane[at..at + w].copy_from_slice(line);
            }
        }
    }
}

/// Values `Source::fill` placed among zeros, and the geometry they were
/// placed for.
#[derive(Default)]
struct Padded {
    values: Vec<f32>,
    geometry: Option<Placement>,
}

/// A source, the size of what fills it, and where that goes (top, left).
type Placement = (Source, (usize, usize), (usize, usize));

/// Per-thread buffers, grown to the largest convolution and then reused.
#[derive(Default)]
struct Scratch {
    source: Padded,
    wide: Vec<f32>,
    blocks: Blocks,
    offsets: Vec<usize>,
    sums: Vec<f32>,
    /// One filter's gradient at the padded width (`rows_weight_gradient`).
    row: Vec<f32>,
    scattered: Scattered,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
    /// The filter, packed for the product on the calling thread.
    static PACKED: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// Packs `a(m, r)` (m < rows, r < taps) into blocks of `layout`'s rows, tap
/// by tap, zero beyond the last row: the order its kernel reads. The
/// packed values start on a cache line of `out` (`simd::aligned`).
fn pack(layout: Layout, rows: usize, taps: usize, a: impl Fn(usize, usize) -> f32, out: &mut Vec<f32>) -> &[f32] {
    let size = layout.block();
    let packed = crate::simd::aligned(out, rows.div_ceil(size) * size * taps);
    for (i, values) in packed.chunks_exact_mut(size).enumerate() {
        let (block, r) = (i / taps, i % taps);
        for (lane, value) in values.iter_mut().enumerate() {
            let m = block * size + lane;
            *value = if m < rows { a(m, r) } else { 0.0 };
        }
    }
    packed
}

/// The part of the full product an output keeps: `height × width` values
/// from (top, left).
#[derive(Clone, Copy, PartialEq, Eq)]
struct Crop {
    top: usize,
    left: usize,
    height: usize,
    width: usize,
}

/// A product as the kernels take it: out[m, y, x] = Σ_r a[m, r] ·
/// src[offset(r) + (y + top)·cols + x + left] (+ bias[m]) for the `rows`
/// outputs m and y < height, x < width of `crop`, with `a` packed by
/// `pack` for `Layout::of` the same product.
#[derive(Clone, Copy)]
struct Product<'a> {
    packed: &'a [f32],
    rows: usize,
    src: &'a [f32],
    geo: Source,
    crop: Crop,
    epilogue: Epilogue<'a>,
}

/// Computes `p` into `out` in the layout `Layout::of` picks; `wide` and
/// `blocks` are scratch.
fn product(p: Product, out: &mut [f32], (wide, blocks): (&mut Vec<f32>, &mut Blocks)) {
    match Layout::of(p.rows, p.geo, p.crop) {
        Layout::Rows => rows_product(isa(), p, out, wide),
        Layout::Lanes => lanes_product(isa(), p, out, (wide, blocks)),
    }
}

/// `product` in `Layout::Rows` on the vectors of `isa`: every position of
/// the padded width, stored in `wide` a band at a time, then cropped.
fn rows_product(isa: Isa, p: Product, out: &mut [f32], wide: &mut Vec<f32>) {
    let Product { packed, rows, src, geo, crop, epilogue } = p;
    let Crop { top, left, height, width } = crop;
    let taps = geo.taps();
    let start = top * geo.cols + left;
    let blocks = rows.div_ceil(MB);
    assert!(
        packed.len() == blocks * MB * taps
            && src.len() >= start + (height * geo.cols).next_multiple_of(QB) + geo.offset(taps - 1)
            && left + width <= geo.cols
            && out.len() == rows * height * width
    );
    // Output rows go in bands whose inputs stay in cache while every block
    // of channels reads them. A band's products are stored (row by row,
    // `stride` apart) in its own part of `wide`.
    let band = (BAND / geo.cols).max(1);
    let stride = (band * geo.cols).next_multiple_of(QB);
    let band_len = blocks * MB * stride;
    // Many taps go in passes of whole channels, so a pass's filter values
    // and inputs stay in the first-level cache; later passes add on.
    let area = geo.kernel * geo.kernel;
    let channels_per_pass = if taps > 2 * PASS_TAPS { (PASS_TAPS / area).max(1) } else { geo.planes };
    wide.resize(height.div_ceil(band) * band_len, 0.0);
    let run_band = |(j, part): (usize, &mut [f32])| {
        let first = start + j * band * geo.cols;
        let count = ((height - j * band).min(band) * geo.cols).next_multiple_of(QB);
        for c0 in (0..geo.planes).step_by(channels_per_pass) {
            // This pass's channels: their filter values and inputs.
            let planes = channels_per_pass.min(geo.planes - c0);
            let (pass, src) = (Source { planes, ..geo }, &src[c0 * geo.plane()..]);
            let pass_taps = c0 * area * MB..(c0 + planes) * area * MB;
            for (block, a) in packed.chunks_exact(MB * taps).enumerate() {
                let a = &a[pass_taps.clone()];
                let row_block = RowBlock { a, src, geo: pass, start: first, count, stride, add: c0 > 0 };
                product_blocks(isa, row_block, &mut part[block * MB * stride..]);
            }
        }
    };
    if blocks * MB * taps * height * geo.cols >= PARALLEL_WORK {
        wide.par_chunks_mut(band_len).enumerate().for_each(run_band);
    } else {
        wide.chunks_mut(band_len).enumerate().for_each(run_band);
    }
    // SAFETY: this path runs only where the CPU has AVX2 (`supported`).
    unsafe { crop_bands(wide, out, (band, band_len, stride), (geo.cols, height, width), epilogue) };
}

/// Output row m's lines of a `rows_product`, band by band from `wide`
/// (bands `band` lines of `cols` values, `band_len` apart, each row of
/// products `stride` into its band), cropped to `height` lines of `width`
/// values and through the epilogue. (No division per line: the dividing
/// cost more than the copying on small images.)
#[target_feature(enable = "avx2")]
fn crop_bands(
    wide: &[f32],
    out: &mut [f32],
    (band, band_len, stride): (usize, usize, usize),
    (cols, height, width): (usize, usize, usize),
    epilogue: Epilogue,
) {
    for (m, dst) in out.chunks_exact_mut(height * width).enumerate() {
        let value = epilogue.of(m);
        // The epilogue in vectors: `finish`'s bias, then max(v, 0) is its
        // ReLU (zero for NaN and −0 alike).
        let (bias, relu) = (_mm256_set1_ps(epilogue.bias.map_or(0.0, |b| b[m])), epilogue.relu);
        for (j, lines) in dst.chunks_mut(band * width).enumerate() {
            let first = j * band_len + m * stride;
            for (y, line) in lines.chunks_exact_mut(width).enumerate() {
                let from = &wide[first + y * cols..][..width];
                if width < 8 {
                    line.iter_mut().zip(from).for_each(|(o, &v)| *o = value(v));
                    continue;
                }
                // Eight at a time, the last eight overlapping the ones before.
                for x in (0..width).step_by(8).map(|x| x.min(width - 8)) {
                    // SAFETY: x + 8 ≤ width, the length of both.
                    unsafe {
                        let v = _mm256_add_ps(_mm256_loadu_ps(from.as_ptr().add(x)), bias);
                        let v = if relu { _mm256_max_ps(v, _mm256_setzero_ps()) } else { v };
                        _mm256_storeu_ps(line.as_mut_ptr().add(x), v);
                    }
                }
            }
        }
    }
}

/// One block of MB output rows of a `rows_product` band pass: the pass's
/// filter values (`a`, MB a tap), its source and where the block's
/// products go (`count` positions from `start`, a multiple of QB; the rows
/// `stride` apart in `wide`), added to what is there when `add`.
#[derive(Clone, Copy)]
struct RowBlock<'a> {
    a: &'a [f32],
    src: &'a [f32],
    geo: Source,
    start: usize,
    count: usize,
    stride: usize,
    add: bool,
}

/// The products of `block` on the vectors of `isa`. Each value is the
/// same chain of multiply-adds over the taps whatever the width.
fn product_blocks(isa: Isa, block: RowBlock, wide: &mut [f32]) {
    // SAFETY: `isa` runs on this CPU (`Isa::detect`); `rows_product` checks
    // the bounds — reads end below start + count + offset(last tap), within
    // src; the MB rows of `count` values, `stride` apart, lie in `wide`.
    unsafe {
        match isa {
            Isa::Avx512 => product_blocks_avx512(block, wide),
            Isa::Avx2 => product_blocks_avx2(block, wide),
        }
    }
}

#[target_feature(enable = "avx512f")]
unsafe fn product_blocks_avx512(block: RowBlock, wide: &mut [f32]) {
    // SAFETY: `product_blocks`' contract.
    unsafe { product_blocks_in::<__m512>(block, wide) }
}

#[target_feature(enable = "avx2,fma")]
unsafe fn product_blocks_avx2(block: RowBlock, wide: &mut [f32]) {
    // SAFETY: `product_blocks`' contract.
    unsafe { product_blocks_in::<__m256>(block, wide) }
}

/// `product_blocks` in vectors `V`: two registers of positions at a time
/// (16 on AVX2, a block of QB; 32 on AVX-512), so that each broadcast
/// filter value feeds two multiply-adds, then one register for what is
/// left (a last QB on AVX-512).
///
/// # Safety
/// As `product_blocks`, in a function compiled for `V`'s instruction set.
#[inline(always)]
unsafe fn product_blocks_in<V: Vector>(block: RowBlock, wide: &mut [f32]) {
    let pair = 2 * V::LANES;
    let mut q = 0;
    // SAFETY (each call): the caller's bounds.
    unsafe {
        while q + pair <= block.count {
            product_block::<V, 2>(block, q, &mut wide[q..]);
            q += pair;
        }
        if q < block.count {
            product_block::<V, 1>(block, q, &mut wide[q..]);
        }
    }
}

/// The MB rows of `block` at `XR` vectors of positions from its position
/// `q`, written to (or, with `add`, added to) `wide[i·stride ..]`.
///
/// # Safety
/// `V` is a vector of the calling function's instruction set; `src` holds
/// start + q + offset(last tap) + XR·LANES values, `wide` MB rows of
/// XR·LANES values `stride` apart, `a` MB values per tap.
#[inline(always)]
unsafe fn product_block<V: Vector, const XR: usize>(block: RowBlock, q: usize, wide: &mut [f32]) {
    let RowBlock { a, src, geo, start, stride, add, .. } = block;
    let lanes = V::LANES;
    // SAFETY: the caller's contract.
    unsafe {
        let mut acc = [[V::zero(); XR]; MB];
        if add {
            for (i, acc) in acc.iter_mut().enumerate() {
                for (v, value) in acc.iter_mut().enumerate() {
                    *value = V::load(wide.as_ptr().add(i * stride + lanes * v));
                }
            }
        }
        let mut x = [V::zero(); XR];
        let mut w = a.as_ptr();
        for c in 0..geo.planes {
            for ky in 0..geo.kernel {
                let row = src.as_ptr().add(start + q + c * geo.plane() + ky * geo.dilation * geo.cols);
                for kx in 0..geo.kernel {
                    for (v, xv) in x.iter_mut().enumerate() {
                        *xv = V::load(row.add(kx * geo.dilation + lanes * v));
                    }
                    for (i, acc) in acc.iter_mut().enumerate() {
                        let wi = V::splat(*w.add(i));
                        for v in 0..XR {
                            acc[v] = V::fmadd(wi, x[v], acc[v]);
                        }
                    }
                    w = w.add(MB);
                }
            }
        }
        for (i, acc) in acc.iter().enumerate() {
            for (v, &value) in acc.iter().enumerate() {
                V::store(wide.as_mut_ptr().add(i * stride + lanes * v), value);
            }
        }
    }
}

/// The geometry of a convolution's padded input.
fn input_source(win: Window) -> Source {
    let (p, k, dilation) = (win.rows.padding, win.rows.kernel, win.rows.dilation);
    let (rows, cols, filled) = (win.height + 2 * p, win.width + 2 * p, (p, p + win.height));
    Source { planes: win.channels, rows, cols, kernel: k, dilation, filled }
}

/// The forward product's source and the part of it kept.
fn forward_geometry(win: Window) -> (Source, Crop) {
    (input_source(win), Crop { top: 0, left: 0, height: win.out_height(), width: win.out_width() })
}

/// The input gradient's source (the output gradient padded by the kernel's
/// extent less one on every side) and the part kept (cropped by the
/// forward padding).
fn input_gradient_geometry(win: Window, filters: usize) -> (Source, Crop) {
    let (k, p, dilation, margin) = (win.rows.kernel, win.rows.padding, win.rows.dilation, win.rows.extent() - 1);
    let (oh, ow) = (win.out_height(), win.out_width());
    let (rows, cols, filled) = (oh + 2 * margin, ow + 2 * margin, (margin, margin + oh));
    let geo = Source { planes: filters, rows, cols, kernel: k, dilation, filled };
    (geo, Crop { top: p, left: p, height: win.height, width: win.width })
}

/// Runs `work` with the filter `w` (`[F, C, k, k]`) packed on this thread
/// for `forward_image`.
pub fn with_forward_filter<R>(w: &[f32], filters: usize, win: Window, work: impl FnOnce(&[f32]) -> R) -> R {
    let (geo, crop) = forward_geometry(win);
    let taps = geo.taps();
    with_packed(Layout::of(filters, geo, crop), filters, taps, |f, r| w[f * taps + r], work)
}

/// Whether `input_gradient_image` scatters (small images, where the
/// gathered product would mostly read the padding's zeros).
fn scatters_input_gradient(win: Window, filters: usize) -> bool {
    let (geo, crop) = input_gradient_geometry(win, filters);
    Layout::of(win.channels, geo, crop) == Layout::Lanes
}

/// Runs `work` with the filter packed for `input_gradient_image`: for the
/// scattered gradient, or flipped and transposed for the gathered one.
pub fn with_input_gradient_filter<R>(w: &[f32], filters: usize, win: Window, work: impl FnOnce(&[f32]) -> R) -> R {
    let (c, k) = (win.channels, win.rows.kernel);
    if scatters_input_gradient(win, filters) {
        return PACKED.with(|cell| work(pack_scattered_filter(w, filters, (c, k * k), &mut cell.borrow_mut())));
    }
    let flipped = |channel: usize, r: usize| {
        let (f, tap) = (r / (k * k), r % (k * k));
        let (ky, kx) = (k - 1 - tap / k, k - 1 - tap % k);
        w[((f * c + channel) * k + ky) * k + kx]
    };
    with_packed(Layout::Rows, c, filters * k * k, flipped, work)
}

fn with_packed<R>(
    layout: Layout,
    rows: usize,
    taps: usize,
    a: impl Fn(usize, usize) -> f32,
    work: impl FnOnce(&[f32]) -> R,
) -> R {
    PACKED.with(|cell| {
        let mut packed = cell.borrow_mut();
        work(pack(layout, rows, taps, a, &mut packed))
    })
}

/// One image `[C, H, W]` convolved into `out` (`[F, OH, OW]`), through `epilogue`.
pub fn forward_image(packed: &[f32], filters: usize, image: &[f32], win: Window, epilogue: Epilogue, out: &mut [f32]) {
    let (geo, crop) = forward_geometry(win);
    SCRATCH.with(|cell| {
        let Scratch { source, wide, blocks, .. } = &mut *cell.borrow_mut();
        geo.fill(image, (win.height, win.width), (win.rows.padding, win.rows.padding), source);
        product(Product { packed, rows: filters, src: &source.values, geo, crop, epilogue }, out, (wide, blocks));
    });
}

/// One image's input gradient `[C, H, W]` from its output gradient
/// `[F, OH, OW]`, with the filter packed by `with_input_gradient_filter`:
/// on small images scattered from each output (`lanes_input_gradient`),
/// else the padded output gradient convolved with the flipped filter
/// (`input_gradient_geometry`).
pub fn input_gradient_image(packed: &[f32], filters: usize, grad: &[f32], win: Window, dx: &mut [f32]) {
    let (geo, crop) = input_gradient_geometry(win, filters);
    let margin = win.rows.extent() - 1;
    SCRATCH.with(|cell| {
        let Scratch { source, wide, scattered, .. } = &mut *cell.borrow_mut();
        if scatters_input_gradient(win, filters) {
            return lanes_input_gradient(isa(), packed, grad, (win, filters), scattered, dx);
        }
        geo.fill(grad, (win.out_height(), win.out_width()), (margin, margin), source);
        let epilogue = Epilogue::default();
        let p = Product { packed, rows: win.channels, src: &source.values, geo, crop, epilogue };
        rows_product(isa(), p, dx, wide);
    });
}

/// Adds the weight gradient of a run of images (`[N, C, H, W]`, their
/// output gradients `grads` `[N, F, OH, OW]`) to `dw` (`[F, C, k, k]`).
pub fn weight_gradient(images: &[f32], grads: &[f32], filters: usize, win: Window, dw: &mut [f32]) {
    weight_gradient_on(isa(), images, grads, filters, win, dw)
}

/// `weight_gradient` with the lanes kernels of `isa`.
fn weight_gradient_on(isa: Isa, images: &[f32], grads: &[f32], filters: usize, win: Window, dw: &mut [f32]) {
    let (geo, crop) = forward_geometry(win);
    let (oh, ow, taps) = (win.out_height(), win.out_width(), geo.taps());
    let (image_len, grad_len) = (win.channels * win.height * win.width, filters * oh * ow);
    assert!(
        dw.len() == filters * taps
            && image_len > 0
            && images.len().is_multiple_of(image_len)
            && grads.len() == images.len() / image_len * grad_len
    );
    let lanes = Layout::of(filters, geo, crop) == Layout::Lanes;
    SCRATCH.with(|cell| {
        let Scratch { source, wide, offsets, sums, row, .. } = &mut *cell.borrow_mut();
        // The lanes layout's sums, over every image, then added to dw once.
        let sums = crate::simd::aligned(sums, if lanes { lanes_weight_sums_len(isa, filters, taps) } else { 0 });
        sums.fill(0.0);
        if lanes {
            lanes_weight_offsets(isa, geo, offsets);
        } else {
            // Where each tap's run starts (two divisions each), for every image.
            offsets.clear();
            offsets.extend((0..taps).map(|r| geo.offset(r)));
        }
        for (image, grad) in images.chunks_exact(image_len).zip(grads.chunks_exact(grad_len)) {
            geo.fill(image, (win.height, win.width), (win.rows.padding, win.rows.padding), source);
            if lanes {
                lanes_weight_sums(isa, (&source.values, geo), (oh, ow), grad, filters, (wide, &offsets[..]), sums);
            } else {
                let buffers = (&mut *wide, &mut *row, &offsets[..]);
                rows_weight_gradient(isa, (&source.values, geo), grad, (filters, win), buffers, dw);
            }
        }
        if lanes {
            lanes_weight_reduce(isa, sums, taps, dw);
        }
    });
}

#[cfg(test)]
mod tests;
