//! The direct convolution against the reference loops, and its two layouts against each other.

use super::*;
use crate::kernels;

fn values(n: usize, seed: usize) -> Vec<f32> {
    (0..n).map(|i| ((i * 7919 + seed * 104_729) % 1000) as f32 / 500.0 - 1.0).collect()
}

/// One image of `channels` × height × width under a square stride-1 kernel.
fn image_window(
    channels: usize,
    (height, width): (usize, usize),
    (kernel, padding, dilation): (usize, usize, usize),
) -> Window {
    let taps = crate::kernels::Taps { kernel, stride: 1, padding, dilation };
    Window { batch: 1, channels, height, width, rows: taps, cols: taps }
}

fn assert_close(a: &[f32], b: &[f32], what: &str) {
    assert_eq!(a.len(), b.len());
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        assert!((x - y).abs() <= 1e-4 * (1.0 + y.abs()), "{what}[{i}]: {x} vs {y}");
    }
}

/// Against the interpreter's loops, on images large enough for several
/// bands, on the threaded path (16 channels of 64×67) and with taps in
/// several passes (32 channels).
#[test]
fn direct_convolution_matches_the_reference_loops() {
    let cases = [
        (3, 40, 5, 2, 1, 7),
        (16, 64, 3, 1, 1, 13),
        (2, 9, 4, 0, 1, 1),
        (3, 30, 3, 1, 2, 8),
        (2, 12, 2, 0, 5, 3),
        (32, 20, 3, 1, 1, 9),
        (16, 14, 5, 0, 1, 32),
        (5, 7, 3, 2, 2, 19),
    ];
    let mut chosen = Vec::new();
    for (channels, size, kernel, padding, dilation, filters) in cases {
        let win = image_window(channels, (size, size + 3), (kernel, padding, dilation));
        if !applies(win) {
            return;
        }
        let (geo, crop) = forward_geometry(win);
        chosen.push(Layout::of(filters, geo, crop));
        let (oh, ow) = (win.out_height(), win.out_width());
        let taps = channels * kernel * kernel;
        let x = values(channels * size * (size + 3), 1);
        let w = values(filters * taps, 2);
        let g = values(filters * oh * ow, 3);

        let mut expected = vec![0.0; filters * oh * ow];
        kernels::conv2d(&x, &w, &mut expected, win, filters, 1);
        let mut y = vec![0.0; filters * oh * ow];
        let mut forward = |epilogue| {
            with_forward_filter(&w, filters, win, |packed| forward_image(packed, filters, &x, win, epilogue, &mut y));
            y.clone()
        };
        assert_close(&forward(Epilogue::default()), &expected, "y");
        let bias = values(filters, 4);
        let plane = oh * ow;
        let biased: Vec<f32> = expected.iter().enumerate().map(|(i, v)| v + bias[i / plane]).collect();
        assert_close(&forward(Epilogue { bias: Some(&bias), relu: false }), &biased, "y + bias");
        let rectified: Vec<f32> = biased.iter().map(|v| v.max(0.0)).collect();
        assert_close(&forward(Epilogue { bias: Some(&bias), relu: true }), &rectified, "relu(y + bias)");
        let positive: Vec<f32> = expected.iter().map(|v| v.max(0.0)).collect();
        assert_close(&forward(Epilogue { bias: None, relu: true }), &positive, "relu(y)");

        let (mut dx_ref, mut dw_ref) = (vec![0.0; x.len()], vec![0.0; w.len()]);
        kernels::conv2d_backward(&x, &w, &g, &mut dx_ref, &mut dw_ref, win, (filters, 1));
        let mut dx = vec![0.0; x.len()];
        with_input_gradient_filter(&w, filters, win, |packed| input_gradient_image(packed, filters, &g, win, &mut dx));
        assert_close(&dx, &dx_ref, "dx");
        let mut dw = vec![0.0; w.len()];
        weight_gradient(&x, &g, filters, win, &mut dw);
        assert_close(&dw, &dw_ref, "dw");
        // Over three images (the second and third the first's values
        // scaled), added to what dw held.
        let scaled = |v: &[f32], by: f32| v.iter().map(|x| x * by).collect::<Vec<f32>>();
        let (x3, g3) =
            ([x.clone(), scaled(&x, 0.5), scaled(&x, -2.0)].concat(), [g.clone(), g.clone(), g.clone()].concat());
        let mut dw3 = dw_ref.clone();
        weight_gradient(&x3, &g3, filters, win, &mut dw3);
        assert_close(&dw3, &scaled(&dw_ref, 0.5), "dw over three images");
    }
    // Both the forward product and the weight gradient ran in each layout.
    assert!(chosen.contains(&Layout::Rows) && chosen.contains(&Layout::Lanes), "{chosen:?}");
}

/// Every product in both layouts, whichever `Layout::of` picks, on every
/// instruction set this CPU has: the same bits.
/// Small images with few and many output rows, one channel and many,
/// padding, dilation, a crop (the input gradient's). One `Blocks` serves
/// every product, as a thread's does, so it must notice each new geometry.
#[test]
fn both_layouts_give_the_same_bits() {
    let cases =
        [(1, 28, 5, 2, 1, 16), (16, 14, 5, 0, 1, 32), (6, 14, 5, 0, 1, 16), (3, 9, 3, 1, 2, 5), (2, 5, 2, 0, 1, 40)];
    let mut chosen = Vec::new();
    let mut blocks = Blocks::default();
    for (channels, size, kernel, padding, dilation, filters) in cases {
        let win = image_window(channels, (size, size + 1), (kernel, padding, dilation));
        if !applies(win) {
            return;
        }
        let x = values(channels * size * (size + 1), 5);
        let w = values(filters * channels * kernel * kernel, 6);
        let g = values(filters * win.out_height() * win.out_width(), 7);
        // The forward product, then the input gradient's: rows, geometry, the image filling the source, its size and margin.
        for (rows, (geo, crop), image, size, margin) in [
            (filters, forward_geometry(win), &x, (size, size + 1), padding),
            (
                channels,
                input_gradient_geometry(win, filters),
                &g,
                (win.out_height(), win.out_width()),
                win.rows.extent() - 1,
            ),
        ] {
            let mut source = Padded::default();
            geo.fill(image, size, (margin, margin), &mut source);
            let a = |m: usize, r: usize| w[(m * geo.taps() + r) % w.len()];
            let runs = [Layout::Rows, Layout::Lanes]
                .into_iter()
                .flat_map(|layout| Isa::available().into_iter().map(move |isa| (layout, isa)))
                .collect::<Vec<_>>();
            let outputs: Vec<Vec<f32>> = runs
                .iter()
                .map(|&(layout, isa)| {
                    let mut buffer = Vec::new();
                    let packed = pack(layout, rows, geo.taps(), a, &mut buffer);
                    let mut out = vec![0.0; rows * crop.height * crop.width];
                    let mut wide = Vec::new();
                    let bias: Vec<f32> = (0..rows).map(|m| m as f32 / 8.0).collect();
                    let epilogue = Epilogue { bias: Some(&bias), relu: rows % 2 == 1 };
                    let product = Product { packed, rows, src: &source.values, geo, crop, epilogue };
                    match layout {
                        Layout::Rows => rows_product(isa, product, &mut out, &mut wide),
                        Layout::Lanes => lanes_product(isa, product, &mut out, (&mut wide, &mut blocks)),
                    }
                    out
                })
                .collect();
            for (run, output) in runs.iter().zip(&outputs).skip(1) {
                assert_eq!(bits(&outputs[0]), bits(output), "{channels}×{size:?}, k {kernel}, {rows} rows, {run:?}");
            }
            chosen.push(Layout::of(rows, geo, crop));
        }
    }
    assert!(chosen.contains(&Layout::Rows) && chosen.contains(&Layout::Lanes), "{chosen:?}");
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

/// The weight gradient in both layouts on every instruction set this CPU
/// has: close to the reference loops and the same bits on each, over two
/// images and added to what dw held, with taps and filters that fill no
/// whole block (25 taps, 40 filters; in the rows layout 50 taps and 7
/// filters, two bands of positions, dilation), and whole blocks.
#[test]
fn the_weight_gradient_is_the_same_bits_on_every_instruction_set() {
    let mut layouts = Vec::new();
    let cases = [
        (1, 28, 5, 2, 1, 16),
        (16, 14, 5, 0, 1, 32),
        (2, 6, 3, 1, 1, 40),
        (3, 40, 3, 1, 1, 13),
        (2, 30, 5, 2, 1, 7),
        (4, 30, 3, 2, 2, 24),
        (8, 24, 3, 1, 1, 64),
    ];
    for (channels, size, kernel, padding, dilation, filters) in cases {
        let win = Window { batch: 2, ..image_window(channels, (size, size + 2), (kernel, padding, dilation)) };
        if !applies(win) {
            return;
        }
        let (geo, crop) = forward_geometry(win);
        layouts.push(Layout::of(filters, geo, crop));
        let x = values(2 * channels * size * (size + 2), 8);
        let g = values(2 * filters * win.out_height() * win.out_width(), 9);
        let held = values(filters * geo.taps(), 10);
        let mut expected = held.clone();
        for (x, g) in x.chunks_exact(x.len() / 2).zip(g.chunks_exact(g.len() / 2)) {
            let (mut dx, mut dw) = (vec![0.0; x.len()], vec![0.0; held.len()]);
            let one = Window { batch: 1, ..win };
            kernels::conv2d_backward(x, &vec![0.0; held.len()], g, &mut dx, &mut dw, one, (filters, 1));
            expected.iter_mut().zip(&dw).for_each(|(e, d)| *e += d);
        }
        let results: Vec<Vec<f32>> = Isa::available()
            .into_iter()
            .map(|isa| {
                let mut dw = held.clone();
                weight_gradient_on(isa, &x, &g, filters, win, &mut dw);
                assert_close(&dw, &expected, &format!("dw on {isa:?}"));
                dw
            })
            .collect();
        for dw in &results[1..] {
            assert_eq!(bits(dw), bits(&results[0]), "{channels}×{size}, {filters} filters");
        }
    }
    assert!(layouts.contains(&Layout::Rows) && layouts.contains(&Layout::Lanes), "{layouts:?}");
}

/// The scattered input gradient against the reference loops, on every
/// instruction set this CPU has and on one thread and two: the same bits.
/// Fewer channels than lanes and several groups (the last ragged), padding,
/// dilation, positions that fill no whole block, an odd number of taps
/// (the last runs alone), and groups split over the threads (40 × 14²).
#[test]
fn the_scattered_input_gradient_is_the_same_bits_everywhere() {
    let cases = [
        (8, 10, 5, 2, 1, 16),
        (12, 7, 3, 1, 1, 16),
        (16, 14, 5, 0, 1, 32),
        (20, 9, 3, 1, 2, 7),
        (40, 14, 5, 0, 1, 32),
        (33, 6, 2, 1, 1, 3),
        (33, 6, 3, 1, 1, 9),
        (16, 20, 3, 1, 1, 5),
    ];
    for (channels, size, kernel, padding, dilation, filters) in cases {
        let win = image_window(channels, (size, size + 1), (kernel, padding, dilation));
        if !applies(win) {
            return;
        }
        assert!(scatters_input_gradient(win, filters), "{channels}×{size}, k {kernel}");
        let x = values(channels * size * (size + 1), 11);
        let w = values(filters * channels * kernel * kernel, 12);
        let g = values(filters * win.out_height() * win.out_width(), 13);
        let (mut expected, mut dw) = (vec![0.0; x.len()], vec![0.0; w.len()]);
        kernels::conv2d_backward(&x, &w, &g, &mut expected, &mut dw, win, (filters, 1));
        let mut results = Vec::new();
        for isa in Isa::available() {
            for threads in [1, 2] {
                let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
                let mut dx = vec![f32::NAN; x.len()];
                pool.install(|| {
                    let (mut packed, mut buffers) = (Vec::new(), lanes::Scattered::default());
                    let packed = pack_scattered_filter(&w, filters, (channels, kernel * kernel), &mut packed);
                    lanes_input_gradient(isa, packed, &g, (win, filters), &mut buffers, &mut dx);
                });
                assert_close(&dx, &expected, &format!("dx on {isa:?}, {threads} threads"));
                results.push(dx);
            }
        }
        for dx in &results[1..] {
            assert_eq!(bits(dx), bits(&results[0]), "{channels}×{size}, k {kernel}, {filters} filters");
        }
    }
}
