//! The runtime's matrix products against plain f64 loops: odd sizes,
//! transposes, products split over the threads, and each SIMD kernel the
//! CPU has, which must agree to the bit.

use nnc_runtime::{Epilogue, Isa};
use proptest::prelude::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// `c = op(a)·op(b)` through the runtime, and the largest error of an
/// element against a plain f64 loop, scaled by √k (`ta`: a stored `[k, m]`;
/// `tb`: b stored `[n, k]`), through `isa`'s kernel alone or else the
/// whole runtime path.
fn product_and_error(
    (m, k, n): (usize, usize, usize),
    (ta, tb): (bool, bool),
    seed: u64,
    isa: Option<Isa>,
) -> (Vec<f32>, f64) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let a: Vec<f32> = (0..m * k).map(|_| rng.random_range(-1.0..1.0)).collect();
    let b: Vec<f32> = (0..k * n).map(|_| rng.random_range(-1.0..1.0)).collect();
    // op(A)[i][p] at i·rs + p·cs; A is stored [k, m] when transposed.
    let (rsa, csa) = if ta { (1, m) } else { (k, 1) };
    let (rsb, csb) = if tb { (1, k) } else { (n, 1) };
    let mut c = vec![f32::NAN; m * n];
    match isa {
        None => nnc_runtime::product((m, k, n), &a, (rsa, csa), &b, (rsb, csb), &mut c, Epilogue::default()),
        Some(isa) => {
            nnc_runtime::product_with(isa, (m, k, n), &a, (rsa, csa), &b, (rsb, csb), &mut c, Epilogue::default())
        }
    }
    .expect("the slices fit");
    let mut worst = 0.0f64;
    for i in 0..m {
        for j in 0..n {
            let exact: f64 = (0..k).map(|p| f64::from(a[i * rsa + p * csa]) * f64::from(b[p * rsb + j * csb])).sum();
            let error = (f64::from(c[i * n + j]) - exact).abs() / (k as f64).sqrt();
            worst = if error.is_nan() { f64::INFINITY } else { worst.max(error) };
        }
    }
    (c, worst)
}

/// Products large enough to split over the threads (by rows, and by
/// columns when rows are few, down to one row's dot products) give the
/// bits they give on one thread. The split side runs on a thread of a
/// two- or three-thread pool, as the runtime's own calls do (on two, a
/// one-row product's first part is the larger, by a head start that is
/// many columns when k is small).
#[test]
fn split_products_have_the_bits_of_one_thread() {
    let pool = |threads| rayon::ThreadPoolBuilder::new().num_threads(threads).build().expect("pool");
    let one_thread = pool(1);
    let shapes = [
        ((200, 300, 150), (false, false)),
        ((64, 784, 128), (false, true)),
        ((784, 64, 128), (true, false)),
        ((40, 900, 333), (true, true)),
        ((1, 784, 128), (false, true)),
        ((1, 300, 251), (false, true)),
        ((1, 70, 1001), (false, true)),
    ];
    for threads in [2, 3] {
        let split_pool = pool(threads);
        for (dims, transposes) in shapes {
            let (split, error) = split_pool.install(|| product_and_error(dims, transposes, 3, None));
            assert!(error < 1e-5, "{dims:?} on {threads} threads: {error}");
            let (whole, _) = one_thread.install(|| product_and_error(dims, transposes, 3, None));
            let bits = |c: &[f32]| c.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&split), bits(&whole), "{dims:?} on {threads} threads");
        }
    }
}

/// Each kernel this CPU runs on products past one block of columns (1,024)
/// and of k (256) at once, so a block of packed rows of a serves several
/// blocks of columns, and on one whose b is packed for all four of its
/// blocks of k at once (784 × 100), each block of rows meeting them in
/// turn, with ragged row blocks of both kernels (13 and 31 rows): against
/// the loops, and the same bits on each.
#[test]
fn each_simd_kernel_crosses_blocks_of_columns_and_of_k() {
    let shapes = [(13, 300, 1050), (31, 784, 100)];
    for (dims, transposes) in shapes.into_iter().flat_map(|d| [(d, (false, false)), (d, (true, true))]) {
        let results: Vec<Vec<u32>> = Isa::available()
            .into_iter()
            .map(|isa| {
                let (c, error) = product_and_error(dims, transposes, 5, Some(isa));
                assert!(error <= 1e-5, "{isa:?}: {error}");
                c.iter().map(|v| v.to_bits()).collect()
            })
            .collect();
        assert!(results.windows(2).all(|w| w[0] == w[1]), "the kernels disagree");
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    /// The runtime's product against a plain f64 loop: few rows (the blocked
    /// dot-product path) and more (matrixmultiply), odd sizes, transposes.
    #[test]
    fn products_match_the_reference_loops(
        m in 1usize..7, k in 1usize..70, n in 1usize..14, ta in any::<bool>(), tb in any::<bool>(), seed in 0u64..1000,
    ) {
        let (_, error) = product_and_error((m, k, n), (ta, tb), seed, None);
        prop_assert!(error <= 1e-5, "{error}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// Products large enough to split over the threads, with ragged parts.
    #[test]
    fn split_products_match_the_reference_loops(
        m in 1usize..130, k in 60usize..530, n in 1usize..130, ta in any::<bool>(), tb in any::<bool>(), seed in 0u64..1000,
    ) {
        prop_assume!(m * k * n >= 1 << 20);
        let (_, error) = product_and_error((m, k, n), (ta, tb), seed, None);
        prop_assert!(error <= 1e-5, "{error}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Each kernel this CPU runs (AVX-512 and AVX2 on CPUs with both)
    /// against the reference loops and each other: ragged row blocks and
    /// panels, k past one packed block (256), every transpose.
    #[test]
    fn each_simd_kernel_matches_the_loops_and_the_others(
        m in 1usize..20, k in 1usize..600, n in 1usize..80, ta in any::<bool>(), tb in any::<bool>(), seed in 0u64..1000,
    ) {
        let mut results = Vec::new();
        for isa in Isa::available() {
            let (c, error) = product_and_error((m, k, n), (ta, tb), seed, Some(isa));
            prop_assert!(error <= 1e-5, "{isa:?}: {error}");
            results.push(c.iter().map(|v| v.to_bits()).collect::<Vec<_>>());
        }
        prop_assert!(results.windows(2).all(|w| w[0] == w[1]), "the kernels disagree");
    }
}

/// A product's bias and ReLU, applied as its blocks are stored, give the
/// bits of the plain product followed by `c + bias` and the ReLU, on every
/// path: a row's dot products split by columns, a few rows, blocks past one
/// block of columns and of k, rows of mostly zeros that walk b, products
/// split by rows and by columns; through the runtime and each kernel.
#[test]
fn a_bias_and_relu_stored_with_the_product_match_them_applied_after() {
    let pool = rayon::ThreadPoolBuilder::new().num_threads(2).build().expect("pool");
    let shapes = [
        ((1, 784, 128), (false, true), false),
        ((3, 50, 37), (false, false), false),
        ((13, 300, 1050), (false, false), false),
        ((31, 784, 100), (true, true), false),
        ((64, 784, 128), (false, true), true),
        ((200, 300, 150), (false, false), false),
        ((40, 900, 333), (true, true), false),
    ];
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    for ((m, k, n), (ta, tb), mostly_zeros) in shapes {
        // Mostly zeros: every row nonzero only in a third of k, as images' backgrounds.
        let a: Vec<f32> = (0..m * k)
            .map(|e| if mostly_zeros && (e % k) % 3 != 0 { 0.0 } else { rng.random_range(-1.0..1.0) })
            .collect();
        let b: Vec<f32> = (0..k * n).map(|_| rng.random_range(-1.0..1.0)).collect();
        let bias: Vec<f32> = (0..n).map(|_| rng.random_range(-0.5..0.5)).collect();
        let (rsa, csa) = if ta { (1, m) } else { (k, 1) };
        let (rsb, csb) = if tb { (1, k) } else { (n, 1) };
        let run = |isa: Option<Isa>, epilogue: Epilogue| {
            let mut c = vec![f32::NAN; m * n];
            pool.install(|| match isa {
                None => nnc_runtime::product((m, k, n), &a, (rsa, csa), &b, (rsb, csb), &mut c, epilogue),
                Some(isa) => {
                    nnc_runtime::product_with(isa, (m, k, n), &a, (rsa, csa), &b, (rsb, csb), &mut c, epilogue)
                }
            })
            .expect("the slices fit");
            c
        };
        for isa in [None].into_iter().chain(Isa::available().into_iter().map(Some)) {
            let plain = run(isa, Epilogue::default());
            for (with_bias, relu) in [(true, false), (true, true), (false, true)] {
                let epilogue = Epilogue { bias: with_bias.then_some(bias.as_slice()), relu };
                let expected: Vec<u32> = plain
                    .iter()
                    .enumerate()
                    .map(|(e, &sum)| {
                        let v = if with_bias { sum + bias[e % n] } else { sum };
                        if !relu || v > 0.0 { v } else { 0.0 }.to_bits()
                    })
                    .collect();
                let stored: Vec<u32> = run(isa, epilogue).iter().map(|v| v.to_bits()).collect();
                assert_eq!(stored, expected, "{:?} {isa:?} bias {with_bias} relu {relu}", (m, k, n));
            }
        }
    }
    let mut c = vec![0.0; 4];
    let short_bias = Epilogue { bias: Some(&[1.0]), relu: false };
    assert!(nnc_runtime::product((2, 1, 2), &[1.0; 2], (1, 1), &[1.0; 2], (2, 1), &mut c, short_bias).is_err());
}
