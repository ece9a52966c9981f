//! The JIT's inline exp, sigmoid, tanh and the smooth activations, over
//! the whole f32 range (specials, denormals, a dense sweep and random
//! bits) against their definitions in f64; each gives the same bits in a
//! compiled loop as alone.

use nnc::diag::Span;
use nnc::ir::{Graph, Op, Unary};
use nnc::train::{Backend, Compiled, Store};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Applies `u` to `xs` with the JIT, to each value as it is read
/// (`in_a_loop`: u of x·1, in a compiled element-wise loop) or to the
/// stored input (σ and tanh then run in a routine of the runtime).
fn jit_unary(u: Unary, xs: &[f32], in_a_loop: bool) -> Vec<f32> {
    let span = Span::default();
    let mut g = Graph::new(1);
    let mut x = g.push(Op::Input(0), vec![], vec![1, xs.len()], span);
    if in_a_loop {
        x = g.push(Op::Unary(Unary::Scale(1.0)), vec![x], vec![1, xs.len()], span);
    }
    g.prediction = g.push(Op::Unary(u), vec![x], vec![1, xs.len()], span);
    let mut compiled = Compiled::<Graph>::new(g, Backend::Jit).expect("compiles");
    compiled.run(&mut Store::default(), xs, &[]).expect("runs").0
}

/// Inputs across the whole f32 range: specials, denormals, and a dense sweep.
fn sweep() -> Vec<f32> {
    let mut xs = vec![
        0.0,
        -0.0,
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::NAN,
        f32::MIN_POSITIVE,
        1e-40,
        -1e-40,
        f32::MAX,
        f32::MIN,
    ];
    let mut x = -120.0f32;
    while x <= 120.0 {
        xs.push(x);
        x += 0.0137;
    }
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    xs.extend((0..20_000).map(|_| f32::from_bits(rng.random::<u32>())));
    xs.push(3.0); // an odd count exercises the scalar tail
    xs
}

/// Checks `u` over `sweep()` against `reference` in f64, computed by a
/// compiled loop and alone, which must give the same bits (NaN aside).
fn check_against(u: Unary, reference: impl Fn(f64) -> f64, max_rel: f64) {
    let xs = sweep();
    let ys = jit_unary(u, &xs, false);
    for ((&x, &alone), looped) in xs.iter().zip(&ys).zip(jit_unary(u, &xs, true)) {
        let same = alone.to_bits() == looped.to_bits() || (alone.is_nan() && looped.is_nan());
        assert!(same, "{u:?}({x}) = {alone} alone and {looped} in a loop");
    }
    for (&x, &y) in xs.iter().zip(&ys) {
        let want = reference(f64::from(x));
        if want.is_nan() {
            assert!(y.is_nan(), "{u:?}({x}) = {y}, expected NaN");
        } else if want.is_infinite() || want.abs() > f64::from(f32::MAX) {
            assert!(y.is_infinite() && y.signum() as f64 == want.signum(), "{u:?}({x}) = {y}, expected {want}");
        } else if want.abs() < f64::from(f32::MIN_POSITIVE) {
            // Results below the normal range are flushed to zero.
            assert!(f64::from(y).abs() < f64::from(f32::MIN_POSITIVE), "{u:?}({x}) = {y}, expected {want}");
        } else {
            let rel = (f64::from(y) - want).abs() / want.abs();
            assert!(rel <= max_rel, "{u:?}({x}) = {y}, expected {want} (relative error {rel:e})");
        }
    }
}

#[test]
fn exp_over_the_whole_range() {
    check_against(Unary::Exp, f64::exp, 2e-7);
}

#[test]
fn sigmoid_over_the_whole_range() {
    check_against(Unary::Sigmoid, |x| 1.0 / (1.0 + (-x).exp()), 2e-7);
}

#[test]
fn tanh_over_the_whole_range() {
    check_against(Unary::Tanh, f64::tanh, 2e-7);
}

/// e^x − 1 for x ≤ 0 without the cancellation of `exp(x) − 1` near 0,
/// which erred by 2.2e-4 of the result at x = −1e-4 even from a correctly
/// rounded eˣ (PyTorch's elu is expm1's).
#[test]
fn elu_over_the_whole_range() {
    check_against(Unary::Elu(1.0), |x| if x > 0.0 { x } else { x.exp_m1() }, 3e-7);
}

/// x·Φ(x) with Φ(x) = erfc(−x/√2)/2: in the left tail the result is
/// e^(−x²/2)-small, and rounding x² to f32 alone costs x²·2⁻²⁴ of it.
#[test]
fn gelu_over_the_whole_range() {
    check_against(Unary::Gelu, |x| x * 0.5 * libm::erfc(-x / std::f64::consts::SQRT_2), 1.5e-5);
}

/// x·σ(v), with σ(v) = 1/(1 + e⁻ᵛ) as the JIT computes it: 0 once e⁻ᵛ
/// overflows f32 (v < −88.72), and so x·0 (NaN for x = −∞, as in f64).
fn times_sigmoid(x: f64, v: f64) -> f64 {
    let e = (-v).exp();
    x * if e > f64::from(f32::MAX) { 0.0 } else { 1.0 / (1.0 + e) }
}

#[test]
fn gelu_tanh_over_the_whole_range() {
    // 0.5·x·(1 + tanh u) = x·σ(2u), which does not cancel for negative x.
    // In the left tail the result is about e^v, and rounding v (≈ −88 at
    // its smallest) to f32 alone costs |v|·2⁻²⁴ of it.
    let v = |x: f64| 2.0 * (2.0 / std::f64::consts::PI).sqrt() * (x + 0.044715 * x.powi(3));
    check_against(Unary::GeluTanh, move |x| times_sigmoid(x, v(x)), 2e-5);
}

#[test]
fn silu_over_the_whole_range() {
    check_against(Unary::Silu, |x| times_sigmoid(x, x), 4e-7);
}

#[test]
fn softplus_over_the_whole_range() {
    check_against(Unary::Softplus, |x| x.max(0.0) + (-x.abs()).exp().ln_1p(), 4e-7);
}

/// gelu, gelu's tanh form, silu and softplus at −2, −0.5, 1 and 3, through
/// the interpreter and the JIT, against their definitions evaluated in f64
/// by CPython's `math` (erfc, tanh, exp, log1p): the formulas PyTorch
/// documents for GELU (both `approximate` modes), SiLU and Softplus.
#[test]
fn smooth_activations_match_their_definitions() {
    let xs = [-2.0f32, -0.5, 1.0, 3.0];
    let expected: [(Unary, [f64; 4]); 4] = [
        (Unary::Gelu, [-0.04550026389635844, -0.15426876936299344, 0.8413447460685429, 2.99595030590511]),
        (Unary::GeluTanh, [-0.04540230591222494, -0.15428599017485606, 0.8411919906082768, 2.996362607918227]),
        (Unary::Silu, [-0.2384058440442351, -0.1887703343990727, 0.7310585786300049, 2.8577223804672998]),
        (Unary::Softplus, [0.1269280110429725, 0.4740769841801067, 1.3132616875182228, 3.048587351573742]),
    ];
    for (u, want) in expected {
        let jit = jit_unary(u, &xs, false);
        let interp: Vec<f64> = xs.iter().map(|&x| nnc::interp::unary(u, f64::from(x))).collect();
        for i in 0..xs.len() {
            assert!((interp[i] - want[i]).abs() <= 1e-12 * want[i].abs().max(1.0), "{u:?}({}) = {}", xs[i], interp[i]);
            let rel = (f64::from(jit[i]) - want[i]).abs() / want[i].abs();
            assert!(rel < 1e-6, "{u:?}({}) = {} by the JIT, expected {}", xs[i], jit[i], want[i]);
        }
    }
}
