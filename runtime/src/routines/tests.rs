use super::sums::{column_sums_for, sum};
use super::*;

/// The vector sums agree with an f64 sum for lengths around the lane
/// and block sizes (and sums of squares two blocks at a time are the
/// bits of one at a time), and the channel sums (parallel above a size)
/// are the same bits as one channel at a time.
#[test]
fn sums_match_the_reference_loops() {
    let values: Vec<f32> = (0..70_000).map(|i| ((i * 7919) % 1000) as f32 / 250.0 - 2.0).collect();
    for n in [0, 1, 31, 32, 33, 100, 2047, 2048, 2049, 4096, 5000, 6144, 6145, 70_000] {
        let x = &values[..n];
        // Values of many magnitudes, so that the order of additions shows.
        let ragged: Vec<f32> =
            (0..n).map(|i| (i as f32 * 0.618_034).sin() * (i as f32 * 0.377).cos().exp2() * 9.0).collect();
        let bits = |x: &[f32]| (sum_squares(x).to_bits(), sum(x, Some(x)).to_bits());
        assert!([bits(x), bits(&ragged)].iter().all(|(a, b)| a == b), "n {n}");
        for squares in [false, true] {
            let exact: f64 = x.iter().map(|&v| if squares { f64::from(v * v) } else { f64::from(v) }).sum();
            let scale: f64 = x.iter().map(|&v| f64::from(v * v).max(f64::from(v.abs()))).sum::<f64>().max(1.0);
            let got = f64::from(sum(x, squares.then_some(x)));
            assert!((got - exact).abs() <= 1e-6 * scale, "n {n} squares {squares}: {got} vs {exact}");
        }
        let mut out = 0.0;
        nnc_sum_squares(x.as_ptr(), &mut out, n);
        let exact: f64 = x.iter().map(|&v| f64::from(v * v)).sum();
        assert!((f64::from(out) - exact).abs() <= 1e-6 * exact.max(1.0), "n {n}: {out} vs {exact}");
    }
    // Planes of many values, and of one (a dense layer's units, summed row by row).
    for (channels, spatial) in [(7, 100), (70, 1)] {
        let mut out = vec![0.0; channels];
        crate::spatial::nnc_sum_channels(values.as_ptr(), out.as_mut_ptr(), values.len(), channels, spatial);
        for (f, &o) in out.iter().enumerate() {
            let alone = channel_sum(&values, None, f, channels, spatial);
            assert_eq!(o.to_bits(), alone.to_bits(), "channel {f} of {channels}");
        }
    }
    let (channels, spatial) = (7, 100);
    // Sums of products in one pass: the bits of storing the products, then summing them.
    let other: Vec<f32> = values.iter().rev().copied().collect();
    let products: Vec<f32> = values.iter().zip(&other).map(|(a, b)| a * b).collect();
    let (mut fused, mut stored) = (vec![0.0; channels], vec![0.0; channels]);
    let n = values.len();
    crate::spatial::nnc_sum_product_channels(values.as_ptr(), other.as_ptr(), fused.as_mut_ptr(), n, channels, spatial);
    crate::spatial::nnc_sum_channels(products.as_ptr(), stored.as_mut_ptr(), n, channels, spatial);
    assert_eq!(
        fused.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
        stored.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
    );
    let reference = kernels::sum_products(&values[..spatial], &other[..spatial]);
    assert_eq!(reference.to_bits(), kernels::sum(&products[..spatial]).to_bits());
}

/// `exp` is within one unit in the last place of e^x (rounded from
/// f64) across its whole range, subnormal results included, and
/// saturates and keeps NaN as `f32::exp` does.
#[test]
fn exp_is_within_an_ulp_everywhere() {
    let mut worst = 0;
    for i in 0..=2_000_000 {
        let x = -105.0 + 195.0 * i as f32 / 2_000_000.0;
        let (got, want) = (exp(x), f64::from(x).exp() as f32);
        let ulps = (i64::from(got.to_bits()) - i64::from(want.to_bits())).abs();
        assert!(ulps <= 1, "exp({x}) = {got:e}, not {want:e}");
        worst = worst.max(ulps);
    }
    assert_eq!(worst, 1, "the sweep reaches values the polynomial rounds off by one");
    assert_eq!(exp(0.0), 1.0);
    assert_eq!(exp(f32::INFINITY), f32::INFINITY);
    assert_eq!(exp(89.0), f32::INFINITY);
    assert_eq!(exp(f32::NEG_INFINITY), 0.0);
    assert_eq!(exp(-104.0), 0.0);
    assert!(exp(-100.0) > 0.0 && exp(-100.0) < f32::MIN_POSITIVE, "a subnormal result");
    assert!(exp(f32::NAN).is_nan());
}

/// Each row's probabilities are within a few units in the last place
/// of f64's; each instruction set gives the bits of the plain loop,
/// for widths around a vector's lanes; infinite and NaN scores give
/// what the arithmetic does.
#[test]
fn softmax_rows_are_the_same_bits_on_every_instruction_set() {
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    for width in [1, 2, 7, 10, 16, 17, 33] {
        let rows = 37;
        let z: Vec<f32> = (0..rows * width).map(|i| ((i * 7919) % 1000) as f32 / 20.0 - 25.0).collect();
        let mut plain = vec![0.0; z.len()];
        softmax_rows_with(&z, &mut plain, width);
        for isa in crate::gemm::Isa::available() {
            let mut out = vec![0.0; z.len()];
            softmax_rows_for(isa, &z, &mut out, width);
            assert_eq!(bits(&out), bits(&plain), "{isa:?}, width {width}");
        }
        for (z, p) in z.chunks_exact(width).zip(plain.chunks_exact(width)) {
            // Against f64 from the f32 differences to the row's largest score.
            let max = z.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
            let e = |v: f32| f64::from(v - max).exp();
            let sum: f64 = z.iter().map(|&v| e(v)).sum();
            for (&v, &p) in z.iter().zip(p) {
                let want = e(v) / sum;
                assert!((f64::from(p) - want).abs() <= 1e-6 * want.max(1e-30) + 1e-37, "{p} vs {want}");
            }
        }
    }
    // ∞ − ∞ and NaN make the row's sum NaN, and so every probability.
    for bad in [f32::INFINITY, f32::NAN] {
        let mut out = [0.0; 3];
        softmax_row(&[bad, 0.0, 1.0], &mut out);
        assert!(out.iter().all(|p| p.is_nan()), "{bad}: {out:?}");
    }
    let mut out = [0.0; 2];
    softmax_row(&[f32::NEG_INFINITY, 3.0], &mut out);
    assert_eq!(out, [0.0, 1.0]);
}

/// Both sums of a channel in one pass are the bits of each on its own:
/// planes shorter than a vector, with ragged ends, longer than a block;
/// few values (one thread) and many (over the threads).
#[test]
fn a_channel_sum_and_its_product_sum_in_one_pass_are_each_ones_bits() {
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    for (images, channels, spatial) in [(3, 5, 7), (4, 7, 100), (2, 3, 3000), (32, 16, 784), (64, 4, 33), (256, 100, 1)]
    {
        let n = images * channels * spatial;
        let a: Vec<f32> = (0..n).map(|i| ((i * 7919) % 1000) as f32 / 250.0 - 2.0).collect();
        let b: Vec<f32> = (0..n).map(|i| ((i * 104_729) % 997) as f32 / 300.0 - 1.5).collect();
        let (mut sums, mut products) = (vec![0.0; channels], vec![0.0; channels]);
        crate::spatial::nnc_sum_and_product_channels(
            a.as_ptr(),
            b.as_ptr(),
            sums.as_mut_ptr(),
            products.as_mut_ptr(),
            n,
            channels,
            spatial,
        );
        let (mut alone, mut alone_products) = (vec![0.0; channels], vec![0.0; channels]);
        crate::spatial::nnc_sum_channels(a.as_ptr(), alone.as_mut_ptr(), n, channels, spatial);
        crate::spatial::nnc_sum_product_channels(
            a.as_ptr(),
            b.as_ptr(),
            alone_products.as_mut_ptr(),
            n,
            channels,
            spatial,
        );
        assert_eq!(bits(&sums), bits(&alone), "sums, {images}×{channels}×{spatial}");
        assert_eq!(bits(&products), bits(&alone_products), "products, {images}×{channels}×{spatial}");
        let exact: f64 =
            (0..images).map(|i| (0..spatial).map(|q| f64::from(a[i * channels * spatial + q])).sum::<f64>()).sum();
        assert!((f64::from(sums[0]) - exact).abs() <= 1e-3, "{} vs {exact}", sums[0]);
    }
}

/// A batch's column sums, split in two halves over threads when large,
/// are each column's rows added in order (the same bits as one loop).
#[test]
fn column_sums_add_each_column_in_order() {
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    for (rows, cols) in [(3, 5), (256, 1024), (70, 1000), (1000, 77), (65, 1025)] {
        let x: Vec<f32> =
            (0..rows * cols).map(|i| (i as f32 * 0.618_034).sin() * (i as f32 * 0.377).cos().exp2()).collect();
        let mut out = vec![f32::NAN; cols];
        rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .expect("pool")
            .install(|| crate::partner::with_partner(|| nnc_sum_rows(x.as_ptr(), out.as_mut_ptr(), rows, cols)));
        let alone: Vec<f32> = (0..cols).map(|j| (0..rows).fold(0.0f32, |acc, r| acc + x[r * cols + j])).collect();
        assert_eq!(bits(&out), bits(&alone), "{rows}×{cols}");
        // Each instruction set's loop, on a part of the columns.
        for isa in crate::gemm::Isa::available() {
            let mut part = vec![f32::NAN; cols - cols / 3];
            column_sums_for(isa, &x, None, cols, cols / 3, &mut part);
            assert_eq!(bits(&part), bits(&alone[cols / 3..]), "{isa:?}, {rows}×{cols}");
        }
    }
}

/// σ and tanh give the plain loop's bits in every instruction set's
/// vectors, over values of every magnitude, specials and lengths that
/// leave a remainder after the vectors.
#[test]
fn squashes_are_the_same_bits_on_every_instruction_set() {
    let mut x: Vec<f32> = (0..20_011).map(|i| f32::from_bits((i as u32).wrapping_mul(2_654_435_761))).collect();
    x.extend((0..4001).map(|i| -100.0 + 0.05 * i as f32));
    x.extend([0.0, -0.0, 0.625, -0.625, f32::INFINITY, f32::NEG_INFINITY, f32::NAN, 1e-40, f32::MAX]);
    let bits = |v: &[f32]| v.iter().map(|y| if y.is_nan() { u32::MAX } else { y.to_bits() }).collect::<Vec<_>>();
    for how in [Squash::Sigmoid, Squash::Tanh] {
        let mut plain = vec![0.0; x.len()];
        squash_with(&x, &mut plain, how);
        assert_eq!((plain[x.len() - 9], plain[x.len() - 5]), (if how == Squash::Tanh { 0.0 } else { 0.5 }, 1.0));
        for isa in crate::gemm::Isa::available() {
            let mut out = vec![0.0; x.len()];
            squash_for(isa, &x, &mut out, how);
            assert_eq!(bits(&out), bits(&plain), "{how:?} {isa:?}");
        }
    }
}

/// `nnc_squash` over a block of columns (rows `stride` apart) squashes
/// those values, row after row, into consecutive rows, and nothing else.
#[test]
fn squashes_read_a_block_of_columns_where_it_lies() {
    let (rows, stride, start, cols) = (5, 4 * 7, 7, 7);
    let x: Vec<f32> = (0..rows * stride).map(|i| (i as f32 * 0.37).sin() * 4.0).collect();
    let taken: Vec<f32> = x.chunks_exact(stride).flat_map(|row| row[start..start + cols].to_vec()).collect();
    for how in [Squash::Sigmoid, Squash::Tanh] {
        let mut expected = vec![0.0; rows * cols];
        squash_with(&taken, &mut expected, how);
        let mut out = vec![f32::NAN; rows * cols + 1];
        // SAFETY: x holds rows of `stride` values from `start`; out rows · cols (and one more).
        nnc_squash(unsafe { x.as_ptr().add(start) }, out.as_mut_ptr(), rows, cols, stride, how as usize);
        assert_eq!(&out[..rows * cols], &expected[..], "{how:?}");
        assert!(out[rows * cols].is_nan(), "{how:?} wrote past its rows");
    }
}

/// Channel sums give the bits of one channel at a time (`channel_sum`,
/// `channel_sum_pair`) whichever way they are taken: in memory order on a
/// thread of its own (as in a replica's step) and channel by channel over
/// the threads, large tensors and small.
#[test]
fn channel_sums_have_one_channels_bits_on_any_thread_count() {
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    for (images, channels, spatial) in [(3, 5, 7), (32, 16, 784), (9, 3, 3001)] {
        let n = images * channels * spatial;
        let a: Vec<f32> = (0..n).map(|i| (i as f32 * 0.618_034).sin() * (i as f32 * 0.377).cos().exp2()).collect();
        let b: Vec<f32> = (0..n).map(|i| ((i * 104_729) % 997) as f32 / 300.0 - 1.5).collect();
        let one = |f| channel_sum(&a, None, f, channels, spatial);
        let expected: Vec<f32> = (0..channels).map(one).collect();
        let pairs: Vec<[f32; 2]> = (0..channels).map(|f| channel_sum_pair(&a, &b, f, channels, spatial)).collect();
        for threads in [1, 3] {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().expect("pool");
            let (sums, (both, products)) = pool.install(|| {
                let mut sums = vec![0.0; channels];
                crate::spatial::nnc_sum_channels(a.as_ptr(), sums.as_mut_ptr(), n, channels, spatial);
                let (mut both, mut products) = (vec![0.0; channels], vec![0.0; channels]);
                let (s, p) = (both.as_mut_ptr(), products.as_mut_ptr());
                crate::spatial::nnc_sum_and_product_channels(a.as_ptr(), b.as_ptr(), s, p, n, channels, spatial);
                (sums, (both, products))
            });
            let what = format!("{images}×{channels}×{spatial} on {threads} threads");
            assert_eq!(bits(&sums), bits(&expected), "sums, {what}");
            assert_eq!(bits(&both), bits(&pairs.iter().map(|p| p[0]).collect::<Vec<_>>()), "paired sums, {what}");
            assert_eq!(bits(&products), bits(&pairs.iter().map(|p| p[1]).collect::<Vec<_>>()), "products, {what}");
        }
    }
}
