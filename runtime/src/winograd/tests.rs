use super::filters::{Filters, with_filter_for};
use super::*;
use crate::kernels::{self, Taps};

fn values(n: usize, seed: usize) -> Vec<f32> {
    (0..n).map(|i| ((i * 7919 + seed * 104_729) % 1000) as f32 / 500.0 - 1.0).collect()
}

/// The input gradient through the flipped filter's transforms
/// (`nnc_conv2d_grad_input`, two images) against the reference loops
/// in f64: padding 0, 1 and 2, odd sizes, more channels than filters
/// and fewer; and the same bits on one thread as on all.
#[test]
fn the_input_gradient_matches_the_reference_loops() {
    // Windows the transforms do not take have no flipped window (and
    // working one out must not overflow): a 5×5 kernel over one pixel,
    // stride 2, dilation 2, padding 3, too few channels.
    for (kernel, stride, dilation, padding, size, channels) in
        [(5, 1, 1, 2, 1, 32), (3, 2, 1, 1, 9, 32), (3, 1, 2, 2, 5, 32), (3, 1, 1, 3, 4, 32), (3, 1, 1, 1, 9, 8)]
    {
        let taps = Taps { kernel, stride, padding, dilation };
        let win = Window { batch: 1, channels, height: size, width: size, rows: taps, cols: taps };
        assert_eq!(input_gradient_window(win, 32), None, "{taps:?} over {size}², {channels} channels");
    }
    for (channels, height, width, padding, filters) in
        [(32, 9, 7, 1, 40), (48, 8, 11, 0, 32), (32, 6, 5, 2, 32), (64, 30, 29, 1, 33)]
    {
        let taps = Taps { kernel: 3, stride: 1, padding, dilation: 1 };
        let win = Window { batch: 2, channels, height, width, rows: taps, cols: taps };
        let Some(flipped) = input_gradient_window(win, filters) else {
            // Only a CPU without AVX2 takes no window here.
            assert!(Isa::detect().is_none(), "{channels}×{height}×{width} p{padding}");
            return;
        };
        assert_eq!((flipped.channels, flipped.out_height(), flipped.out_width()), (filters, height, width));
        let (oh, ow) = (win.out_height(), win.out_width());
        let w = values(filters * channels * 9, 4);
        let g = values(2 * filters * oh * ow, 5);
        let wide = |v: &[f32]| v.iter().map(|&v| f64::from(v)).collect::<Vec<f64>>();
        let (mut expected, mut dw) = (vec![0.0f64; 2 * channels * height * width], vec![0.0f64; w.len()]);
        let x = vec![0.0f64; expected.len()];
        kernels::conv2d_backward(&x, &wide(&w), &wide(&g), &mut expected, &mut dw, win, (filters, 1));
        let run = || {
            let mut dx = vec![f32::NAN; expected.len()];
            crate::spatial::nnc_conv2d_grad_input(
                w.as_ptr(),
                g.as_ptr(),
                dx.as_mut_ptr(),
                &win,
                filters,
                1,
                std::ptr::null(),
                0,
            );
            dx
        };
        let dx = run();
        for (i, (&a, &e)) in dx.iter().zip(&expected).enumerate() {
            assert!(
                (f64::from(a) - e).abs() <= 4e-4 * (1.0 + e.abs()),
                "{channels}×{height}×{width} p{padding}, {filters} filters, [{i}]: {a} vs {e}"
            );
        }
        let one_thread = rayon::ThreadPoolBuilder::new().num_threads(1).build().expect("pool");
        let alone = one_thread.install(run);
        assert!(dx.iter().zip(&alone).all(|(a, b)| a.to_bits() == b.to_bits()), "threads change the bits");
    }
}

/// The runs of a block cover its tiles once each, in order, within rows
/// and images.
#[test]
fn a_blocks_runs_cover_its_tiles_in_order() {
    let tiles = Tiles { high: 3, wide: 5, group: 4 };
    for (from, to) in [(0, 15), (3, 4), (2, 33), (14, 16), (0, 60), (59, 60)] {
        let mut next = from;
        for (image, run, at) in tiles.runs(from, to) {
            assert!(run.len > 0 && run.first + run.len <= 5 && run.row < 3, "{run:?}");
            assert_eq!((image * 3 + run.row) * 5 + run.first, next, "{from}..{to}: {run:?}");
            assert_eq!(at, next - from);
            next += run.len;
        }
        assert_eq!(next, to, "{from}..{to}");
    }
    // Blocks waste at most part of one panel a group: 16 tiles an image in
    // groups of four, 60 an image alone.
    let win = |size: usize, batch: usize| {
        let taps = Taps { kernel: 3, stride: 1, padding: 1, dilation: 1 };
        Window { batch, channels: 32, height: size, width: size, rows: taps, cols: taps }
    };
    assert_eq!(Tiles::new(Tiling::Four, win(14, 8)).columns(8, 32), 128);
    assert_eq!(Tiles::new(Tiling::Four, win(14, 3)).columns(3, 32), 64);
    assert_eq!(Tiles::new(Tiling::Four, win(40, 1)).columns(1, 32), 96 + 32);
}

/// Both tilings against the reference loops (in f64): odd and even
/// sizes (partial tiles), padding 0, 1 and 2, a batch whose blocks of
/// tiles span rows and images, an image of several blocks, a filter
/// transformed in several chunks, with a bias and with and without a
/// fused ReLU; and the same bits on one thread as on all, and on every
/// instruction set.
#[test]
fn winograd_matches_the_reference_loops() {
    for (channels, height, width, padding, filters) in [
        (32, 9, 7, 1, 32),
        (33, 8, 8, 0, 35),
        (40, 30, 9, 1, 33),
        (32, 5, 6, 2, 40),
        (32, 3, 3, 0, 32),
        (72, 6, 5, 1, 64),
        // 600 tiles an image (F(4×4)): a group of two images, then one
        // alone, their blocks run side by side, the last ones ragged.
        (32, 96, 99, 1, 32),
        // A sum over many channels, as in VGG-16's deep layers.
        (512, 14, 14, 1, 32),
    ] {
        let taps = Taps { kernel: 3, stride: 1, padding, dilation: 1 };
        let batch = 3;
        let win = Window { batch, channels, height, width, rows: taps, cols: taps };
        if !applies(win, filters) {
            return;
        }
        let (oh, ow) = (win.out_height(), win.out_width());
        let x = values(batch * channels * height * width, 1);
        let w = values(filters * channels * 9, 2);
        let bias = values(filters, 3);
        // The reference in f64: its own rounding does not count against the transforms'.
        let wide = |v: &[f32]| v.iter().map(|&v| f64::from(v)).collect::<Vec<f64>>();
        let mut expected = vec![0.0f64; batch * filters * oh * ow];
        kernels::conv2d(&wide(&x), &wide(&w), &mut expected, win, filters, 1);
        // A fused ReLU on every other case.
        let relu = channels % 2 == 0;
        let epilogue = Epilogue { bias: Some(&bias), relu };
        for tiling in [Tiling::Two, Tiling::Four] {
            let run_on = |isa: Isa| {
                let mut y = vec![0.0; batch * filters * oh * ow];
                let (from, to) =
                    (Layout { stride: x.len() / batch, first: 0 }, Layout { stride: y.len() / batch, first: 0 });
                with_filter_for(tiling, Filters::InOrder(&w), filters, win, false, |u: Transformed| {
                    forward_on(isa, u, filters, (&x, from), win, (epilogue, None), (&mut y, to))
                });
                y
            };
            let widest = Isa::detect().expect("`applies` checked the CPU");
            let y = run_on(widest);
            // F(4×4)'s transforms multiply by up to 8 and 1/24: its
            // rounding error is several times F(2×2)'s (about 1e-4 of a
            // sum over 512 channels, against 1e-5).
            let tolerance = match tiling {
                Tiling::Two => 1e-4,
                Tiling::Four => 4e-4,
            };
            for (i, (&a, &e)) in y.iter().zip(&expected).enumerate() {
                let e = e as f32 + bias[i / (oh * ow) % filters];
                let e = if relu { e.max(0.0) } else { e };
                assert!(
                    (a - e).abs() <= tolerance * (1.0 + e.abs()),
                    "{tiling:?}, {channels}×{height}×{width} p{padding}, [{i}]: {a} vs {e}"
                );
            }
            let one_thread = rayon::ThreadPoolBuilder::new().num_threads(1).build().expect("pool");
            let alone = one_thread.install(|| run_on(widest));
            let same = |other: &[f32]| y.iter().zip(other).all(|(a, b)| a.to_bits() == b.to_bits());
            assert!(same(&alone), "{tiling:?}: threads change the bits");
            // The transforms on every instruction set: the same bits.
            for isa in Isa::available() {
                assert!(same(&run_on(isa)), "{tiling:?}: {isa:?} changes the bits");
            }
        }
    }
}

/// The weight gradient through the transforms against the reference loops
/// in f64, each weight within a tolerance of the sum of its terms'
/// magnitudes (Σ|g·x|, the scale of the rounding): odd sizes (partial
/// tiles), padding 0, 1 and 2, more channels than filters and fewer, small
/// images gathered together into one product, images whose tiles take
/// several, a row of more tiles than a product gathers; the same bits on
/// one thread as on all, and with the transforms on every instruction set;
/// and `nnc_conv2d_grad_weight` runs it where `weight_gradient_applies`.
#[test]
fn the_weight_gradient_matches_the_reference_loops() {
    // Its sums M, 36 per weight, are kept to a million weights.
    let taps = Taps { kernel: 3, stride: 1, padding: 1, dilation: 1 };
    let deep = Window { batch: 4, channels: 1024, height: 28, width: 28, rows: taps, cols: taps };
    if Isa::detect().is_some() {
        assert!(weight_gradient_applies(deep, 1024) && !weight_gradient_applies(deep, 1025));
    }
    for (batch, channels, height, width, padding, filters) in [
        (2, 32, 9, 7, 1, 40),
        (3, 48, 8, 11, 0, 32),
        (1, 32, 6, 5, 2, 33),
        // 16 tiles an image: all five images in one product.
        (5, 64, 14, 14, 1, 32),
        // 18 × 9 tiles an image: several products, one ending mid-image.
        (2, 32, 70, 35, 1, 40),
        // 258 tiles in a row.
        (1, 32, 3, 1030, 1, 32),
    ] {
        let taps = Taps { kernel: 3, stride: 1, padding, dilation: 1 };
        let win = Window { batch, channels, height, width, rows: taps, cols: taps };
        if !applies(win, filters) {
            // Only a CPU without AVX2 runs none.
            assert!(Isa::detect().is_none());
            return;
        }
        // Many tiles in long rows: the only case here the routine sends on.
        assert_eq!(weight_gradient_applies(win, filters), width == 1030, "{win:?}");
        let (oh, ow) = (win.out_height(), win.out_width());
        let x = values(batch * channels * height * width, 6);
        let g = values(batch * filters * oh * ow, 7);
        let wide = |v: &[f32], f: fn(f64) -> f64| v.iter().map(|&v| f(f64::from(v))).collect::<Vec<f64>>();
        let reference = |f: fn(f64) -> f64| {
            let (mut dx, mut dw) = (vec![0.0f64; x.len()], vec![0.0f64; filters * channels * 9]);
            let w = vec![0.0f64; dw.len()];
            kernels::conv2d_backward(&wide(&x, f), &w, &wide(&g, f), &mut dx, &mut dw, win, (filters, 1));
            dw
        };
        let (expected, magnitude) = (reference(|v| v), reference(f64::abs));
        let run = || {
            let mut dw = vec![f32::NAN; expected.len()];
            weight_gradient(&x, &g, filters, win, &mut dw);
            dw
        };
        let dw = run();
        let case = format!("{batch}×{channels}×{height}×{width} p{padding}, {filters} filters");
        for (i, ((&a, &e), &m)) in dw.iter().zip(&expected).zip(&magnitude).enumerate() {
            assert!((f64::from(a) - e).abs() <= 1e-5 * m, "{case}, [{i}]: {a} vs {e} (Σ|g·x| {m})");
        }
        let same = |other: &[f32]| dw.iter().zip(other).all(|(a, b)| a.to_bits() == b.to_bits());
        let one_thread = rayon::ThreadPoolBuilder::new().num_threads(1).build().expect("pool");
        assert!(same(&one_thread.install(run)), "{case}: threads change the bits");
        for isa in Isa::available() {
            let mut on_isa = vec![f32::NAN; dw.len()];
            weights::weight_gradient_on(isa, &x, &g, filters, win, &mut on_isa);
            assert!(same(&on_isa), "{case}: {isa:?} changes the bits");
        }
        let mut routed = vec![f32::NAN; dw.len()];
        crate::spatial::nnc_conv2d_grad_weight(x.as_ptr(), g.as_ptr(), routed.as_mut_ptr(), &win, filters, 1);
        let sent_on = same(&routed);
        assert_eq!(sent_on, weight_gradient_applies(win, filters), "{case}: the routine's choice");
    }
}

/// Runs `work(rank)` on each member of a team of `members` threads.
fn on_team<R: Send>(members: usize, work: impl Fn(usize) -> R + Sync) -> Vec<R> {
    let team = crate::collective::ThreadTeam::new(members);
    std::thread::scope(|s| {
        let (team, work) = (&team, &work);
        let handles: Vec<_> = (0..members).map(|rank| s.spawn(move || team.member(rank, || work(rank)))).collect();
        handles.into_iter().map(|h| h.join().expect("member")).collect()
    })
}

/// Members of a team convolving their own images by one weight, its
/// Winograd filter transformed together (forward and input gradient),
/// get the bits each gets alone: two and three members with equal
/// batches (each transforms a share), and batches of 1 and 8, for which
/// the members choose different tilings and each transforms the whole.
#[test]
fn a_filter_transformed_together_gives_each_member_the_bits_it_gets_alone() {
    let (channels, size, filters) = (32, 28, 40);
    let taps = Taps { kernel: 3, stride: 1, padding: 1, dilation: 1 };
    let w = values(filters * channels * 9, 3);
    if !applies(Window { batch: 1, channels, height: size, width: size, rows: taps, cols: taps }, filters) {
        // Only a CPU without AVX2 runs none.
        assert!(Isa::detect().is_none());
        return;
    }
    for batches in [vec![2, 2], vec![1, 2, 1], vec![1, 8]] {
        let run = |rank: usize, together: usize| {
            let win = Window { batch: batches[rank], channels, height: size, width: size, rows: taps, cols: taps };
            let x = values(win.batch * channels * size * size, 10 + rank);
            let g = values(win.batch * filters * size * size, 20 + rank);
            let (mut y, mut dx) = (vec![f32::NAN; g.len()], vec![f32::NAN; x.len()]);
            let (x, w, g, null) = (x.as_ptr(), w.as_ptr(), g.as_ptr(), std::ptr::null());
            crate::spatial::nnc_conv2d(x, w, y.as_mut_ptr(), &win, filters, 1, null, 0, 0, together);
            crate::spatial::nnc_conv2d_grad_input(w, g, dx.as_mut_ptr(), &win, filters, 1, null, together);
            let bits = |v: &[f32]| v.iter().map(|v| v.to_bits()).collect::<Vec<u32>>();
            (bits(&y), bits(&dx))
        };
        let together = on_team(batches.len(), |rank| run(rank, 1));
        for (rank, shared) in together.iter().enumerate() {
            assert!(*shared == run(rank, 0), "{batches:?}: member {rank}'s results differ from its own");
        }
    }
}
