//! The JIT against the reference interpreter: one full training step
//! (forward, backward, update) on every trainable bundled model and on
//! hundreds of random models; predictions after every way of writing the
//! weights; the same bits from work split in parts as from one loop. The
//! inline functions' accuracy is tests/jit_math.rs.

use nnc::check::CheckedModel;
use nnc::pipeline::check_source;
use nnc::train::{Backend, Trainer};
use proptest::prelude::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

mod common;

const TOLERANCE: f32 = 1e-4;

fn close(a: f32, b: f32) -> bool {
    (a - b).abs() <= TOLERANCE * a.abs().max(b.abs()).max(1.0)
}

/// Random inputs and valid targets for `rows` samples.
fn batch(model: &CheckedModel, rows: usize, seed: u64) -> (Vec<f32>, Vec<f32>) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let width = model.input_width();
    let vocab = nnc::data::RowSpec::of(model).vocab;
    let x: Vec<f32> = (0..rows * width)
        .map(|_| match vocab {
            Some(v) => rng.random_range(0..v) as f32,
            None => rng.random_range(-2.0..2.0),
        })
        .collect();
    (x, nnc::data::RowSpec::of(model).random_targets(rows, &mut rng))
}

/// Two training steps on both backends; losses, every updated parameter and
/// state tensor (optimizer state, running statistics) and the evaluation-mode
/// predictions must agree.
fn assert_backends_agree(model: &CheckedModel, rows: usize, seed: u64) {
    let (x, y) = batch(model, rows, seed);
    assert_backends_agree_on(model, rows, (&x, &y));
}

/// `assert_backends_agree` on the samples given, for the step as a
/// library's loop runs it and as `nnc train` does (observing its health,
/// which changes how the JIT plans the step): the health reports agree too.
fn assert_backends_agree_on(model: &CheckedModel, rows: usize, (x, y): (&[f32], &[f32])) {
    for health in [false, true] {
        assert_steps_agree(model, rows, (x, y), health);
    }
}

/// Two steps on each backend, observing their health when `health`.
fn assert_steps_agree(model: &CheckedModel, rows: usize, (x, y): (&[f32], &[f32]), health: bool) {
    let trained = [Backend::Interp, Backend::Jit].map(|backend| {
        let mut t = Trainer::new(model, model.train.clone(), backend).expect("trainable");
        if health {
            t.track_health();
        }
        let l1 = t.step(x, y, rows, model.train.lr).expect("step");
        let l2 = t.step(x, y, rows, model.train.lr).expect("step");
        (t, l1, l2)
    });
    let [(mut interp, a1, a2), (mut jit, b1, b2)] = trained;
    if let (Some(ha), Some(hb)) = (interp.take_health(), jit.take_health()) {
        common::assert_health_agrees(&ha, &hb);
    }
    assert!(close(a1 as f32, b1 as f32) && close(a2 as f32, b2 as f32), "losses {a1} {a2} vs {b1} {b2}");
    let values = |t: &Trainer| -> Vec<Vec<f32>> { t.tensors().into_iter().map(|(_, _, values)| values).collect() };
    for (p, (ta, tb)) in values(&interp).iter().zip(&values(&jit)).enumerate() {
        assert_agree(ta, tb, &format!("param {p}"));
    }
    // The evaluation-mode predictions, from the same weights: the
    // interpreter's, given to both. A model that diverges in its two steps
    // (a loss of 1.8, then 30) carries weights that agree to 2e-6 into
    // predictions that differ by 4e-5 of themselves through four layers,
    // which is the training's rounding, not the forward pass's.
    let saved = interp.tensors().into_iter().map(|(name, shape, values)| (name, (shape, values))).collect();
    jit.restore(&saved, 0, 2).expect("the interpreter's tensors fit");
    let (pa, pb) = (interp.predict(x, rows).expect("predict"), jit.predict(x, rows).expect("predict"));
    assert_agree(&pa, &pb, "prediction");
}

/// Each element of `a` and `b` close. An element is a sum of terms as
/// large as the tensor's largest, so one near zero carries their rounding:
/// judge it on that scale too (a diverging model's prediction of -1.28
/// beside -1668 differed by 7e-4 = 4e-7 of it). A wrong element is off by
/// far more.
fn assert_agree(a: &[f32], b: &[f32], what: &str) {
    let scale = b.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        assert!(close(*x, *y) || (x - y).abs() <= 1e-5 * scale, "{what}[{i}]: interp {x} vs jit {y}");
    }
}

/// Inputs that are mostly zeros where every row is (the background of
/// images), whose products skip them, with a block of dense rows: training
/// steps and predictions agree with the interpreter.
#[test]
fn mostly_zero_inputs() {
    let source = "model z { input x: [600] target y: class(10)
        x |> dense(80) |> relu |> dense(10) => p  loss = cross_entropy(p, y)
        train { optimizer = sgd(lr = 0.1, momentum = 0.9) } }";
    let checked = check_source("z.nn", source);
    assert!(!checked.has_errors(), "{:?}", checked.diags);
    let (model, rows) = (&checked.models[0], 128);
    let (mut x, y) = batch(model, rows, 5);
    for (i, v) in x.iter_mut().enumerate() {
        if !(12..24).contains(&(i / 600)) && i % 600 % 7 != 0 {
            *v = 0.0;
        }
    }
    assert_backends_agree_on(model, rows, (&x, &y));
}

#[test]
fn every_trainable_bundled_model() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/models");
    let mut compared = 0;
    for entry in std::fs::read_dir(dir).expect("models/") {
        let path = entry.expect("entry").path();
        if path.extension().is_none_or(|e| e != "nn") {
            continue;
        }
        let checked = check_source("m.nn", &std::fs::read_to_string(&path).expect("readable"));
        let model = &checked.models[0];
        if model.total_params() > 200_000 || Trainer::new(model, model.train.clone(), Backend::Interp).is_err() {
            continue;
        }
        for rows in [1, 5] {
            assert_backends_agree(model, rows, 3);
        }
        compared += 1;
    }
    assert!(compared >= 6, "only {compared} models compared");
}

fn activation() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec![
        "relu",
        "sigmoid",
        "tanh",
        "leaky_relu(0.05)",
        "elu(1.0)",
        "identity",
        "gelu",
        "gelu(tanh = true)",
        "silu",
        "softplus",
        "clip(min = -0.5, max = 0.7)",
    ])
}

fn optimizer() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec![
        "gd(lr = 0.1)",
        "sgd(lr = 0.05)",
        "momentum(lr = 0.05, momentum = 0.9)",
        "nesterov(lr = 0.05)",
        // Adam divides by √v + eps: with the default eps = 1e-8, a gradient that
        // is rounding noise (≈ 1e-8, e.g. summed in another order) becomes a
        // step of up to lr, and the backends legitimately part. A larger eps
        // keeps the comparison about the arithmetic, not that amplification.
        "adam(lr = 0.01, eps = 1e-4)",
    ])
}

fn extras() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec!["", "clip_norm = 0.5", "clip_value = 0.01", "l2 = 0.01", "weight_decay = 0.1"])
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 220, ..ProptestConfig::default() })]

    #[test]
    fn random_models(
        input in 1usize..40,
        widths in prop::collection::vec(1usize..40, 0..4),
        acts in prop::collection::vec(activation(), 4),
        head in 0usize..3,
        out in 1usize..7,
        rows in prop::sample::select(vec![1usize, 2, 3, 7, 16, 33]),
        opt in optimizer(),
        extra in extras(),
        seed in 0u64..1_000_000,
    ) {
        let mut layers = String::new();
        for (w, a) in widths.iter().zip(&acts) {
            layers.push_str(&format!(" |> dense({w}) |> {a}"));
        }
        let (target, tail, loss) = match head {
            0 => (format!("class({})", out + 1), format!(" |> dense({})", out + 1), "cross_entropy"),
            1 => (format!("real[{out}]"), format!(" |> dense({out})"), "mse"),
            _ => (format!("binary[{out}]"), format!(" |> dense({out}) |> sigmoid"), "binary_cross_entropy"),
        };
        let source = format!(
            "model r {{ input x: [{input}] target y: {target}
               x{layers}{tail} => p  loss = {loss}(p, y)
               train {{ optimizer = {opt} seed = {seed} {extra} }} }}"
        );
        let checked = check_source("r.nn", &source);
        prop_assert!(!checked.has_errors(), "{source}: {:?}", checked.diags);
        assert_backends_agree(&checked.models[0], rows, seed);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 30, ..ProptestConfig::default() })]

    /// RNNs, LSTMs and GRUs (slices, per-step products, gates) and embeddings.
    #[test]
    fn random_sequence_models(steps in 1usize..7, features in 1usize..5, hidden in 1usize..6,
                              layer in prop::sample::select(vec!["rnn", "lstm", "gru"]),
                              sequences in any::<bool>(), bidirectional in any::<bool>(), tokens in any::<bool>(),
                              rows in prop::sample::select(vec![1usize, 3, 8]), seed in 0u64..1000) {
        let head = if sequences { "|> flatten" } else { "" };
        let (input, embed) = if tokens {
            (format!("tokens[{steps}]"), format!("|> embedding(7, {features})"))
        } else {
            (format!("seq[{steps}, {features}]"), String::new())
        };
        let source = format!("model g {{ input x: {input} target y: class(3)
            x {embed} |> {layer}({hidden}, sequences = {sequences}, bidirectional = {bidirectional}) {head} |> dense(3) => p
            loss = cross_entropy(p, y)
            train {{ optimizer = adam(lr = 0.01, eps = 1e-4) clip_norm = 1.0 seed = {seed} }} }}");
        let checked = check_source("s.nn", &source);
        prop_assert!(!checked.has_errors(), "{source}: {:?}", checked.diags);
        assert_backends_agree(&checked.models[0], rows, seed);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 60, ..ProptestConfig::default() })]

    /// Convolutions (im2col + sgemm or, at stride 1, the direct kernels in the
    /// JIT; direct loops in the interpreter) with random strides, paddings and
    /// pooling, including kernel = input size and stride > kernel. Up to 8
    /// channels and filters, so the JIT's blocks of 6 and 3 are split.
    #[test]
    fn random_convolutions(c in 1usize..9, h in 2usize..9, w in 2usize..9, f in 1usize..9,
                           k in 1usize..5, stride in 1usize..4, padding in 0usize..3, dilation in 1usize..3,
                           pk in 1usize..4, ps in 1usize..4, pp in 0usize..2, max in any::<bool>(), norm in any::<bool>(),
                           rows in prop::sample::select(vec![1usize, 3, 8]), seed in 0u64..1000) {
        let extent = dilation * (k - 1) + 1;
        prop_assume!(extent <= h + 2 * padding && extent <= w + 2 * padding);
        let (oh, ow) = ((h + 2 * padding - extent) / stride + 1, (w + 2 * padding - extent) / stride + 1);
        // A pooling window padded by at most half its size (`pp`).
        prop_assume!(2 * pp <= pk && pk <= oh + 2 * pp && pk <= ow + 2 * pp);
        // Batch statistics over two values normalise them to ±1 whatever they
        // are: the true gradient is zero and the computed one is rounding
        // noise divided by a tiny deviation, different on each backend.
        prop_assume!(!norm || rows * oh * ow >= 3);
        let pool = if max { "maxpool" } else { "avgpool" };
        // Batchnorm centres its outputs on zero, where relu has its kink: a
        // value within rounding of zero takes a different branch on each
        // backend and one element's gradient flips (seed 985, c = 5, h = 4,
        // w = 3, f = 4, k = 3, padding = 1, rows = 8 did). Elu's derivative
        // is continuous there, so after batchnorm the backends must agree.
        let (norm, act) = if norm { ("|> batchnorm(momentum = 0.8)", "elu") } else { ("", "relu") };
        let source = format!("model g {{ input x: [{c}, {h}, {w}] target y: class(3)
            x |> conv2d({f}, kernel = {k}, stride = {stride}, padding = {padding}, dilation = {dilation}) {norm} |> {act}
              |> {pool}({pk}, stride = {ps}, padding = {pp}) |> flatten |> dense(3) => p  loss = cross_entropy(p, y)
            train {{ optimizer = momentum(lr = 0.05) seed = {seed} }} }}");
        let checked = check_source("c.nn", &source);
        prop_assert!(!checked.has_errors(), "{source}: {:?}", checked.diags);
        assert_backends_agree(&checked.models[0], rows, seed);
    }

    /// Two stacked convolutions, so the second one's input gradient (a
    /// convolution of the padded output gradient with the flipped filter in
    /// the JIT) is computed and checked too; between them a ReLU, whose
    /// gradient the JIT takes in that input gradient, or a tanh.
    #[test]
    fn random_stacked_convolutions(c in 1usize..9, h in 3usize..12, f1 in 1usize..9, f2 in 1usize..9,
                                   k1 in 1usize..4, p1 in 0usize..3, k2 in 1usize..5, s2 in 1usize..3,
                                   p2 in 0usize..3, d2 in 1usize..3, rows in prop::sample::select(vec![1usize, 5]),
                                   relu in any::<bool>(), seed in 0u64..1000) {
        let inner = h + 2 * p1 + 1 - k1.min(h + 2 * p1);
        prop_assume!(k1 <= h + 2 * p1 && d2 * (k2 - 1) < inner + 2 * p2);
        let act = if relu { "relu" } else { "tanh" };
        let source = format!("model g {{ input x: [{c}, {h}, {h}] target y: class(3)
            x |> conv2d({f1}, kernel = {k1}, padding = {p1}) |> {act}
              |> conv2d({f2}, kernel = {k2}, stride = {s2}, padding = {p2}, dilation = {d2}) |> flatten |> dense(3) => p
            loss = cross_entropy(p, y)
            train {{ optimizer = sgd(lr = 0.05) seed = {seed} }} }}");
        let checked = check_source("c.nn", &source);
        prop_assert!(!checked.has_errors(), "{source}: {:?}", checked.diags);
        assert_backends_agree(&checked.models[0], rows, seed);
    }

    /// Grouped and depthwise convolutions of images and sequences: one
    /// convolution per group, of its slices of the channels and filters.
    #[test]
    fn random_grouped_convolutions(groups in 1usize..5, per_group in 1usize..3, filters_per_group in 1usize..3,
                                   size in 3usize..8, k in 1usize..4, stride in 1usize..3, padding in 0usize..2,
                                   sequence in any::<bool>(), rows in prop::sample::select(vec![1usize, 5]),
                                   seed in 0u64..1000) {
        let (c, f) = (groups * per_group, groups * filters_per_group);
        let (input, layer) = if sequence { (format!("[{c}, {size}]"), "conv1d") } else { (format!("[{c}, {size}, {size}]"), "conv2d") };
        let source = format!("model g {{ input x: {input} target y: class(3)
            x |> {layer}({f}, kernel = {k}, stride = {stride}, padding = {padding}, groups = {groups}) |> relu
              |> flatten |> dense(3) => p  loss = cross_entropy(p, y)
            train {{ optimizer = sgd(lr = 0.05) seed = {seed} }} }}");
        let checked = check_source("c.nn", &source);
        prop_assert!(!checked.has_errors(), "{source}: {:?}", checked.diags);
        assert_backends_agree(&checked.models[0], rows, seed);
    }

    /// A sequence's convolution and pooling along its length (an image of
    /// one row to the kernels), padded and strided.
    #[test]
    fn random_sequence_pooling(c in 1usize..5, l in 2usize..12, f in 1usize..5, k in 1usize..4,
                               pk in 1usize..4, ps in 1usize..3, pp in 0usize..2, max in any::<bool>(),
                               rows in prop::sample::select(vec![1usize, 5]), seed in 0u64..1000) {
        prop_assume!(k <= l && 2 * pp <= pk && pk <= l - k + 1 + 2 * pp);
        let pool = if max { "maxpool" } else { "avgpool" };
        let source = format!("model g {{ input x: [{c}, {l}] target y: class(3)
            x |> conv1d({f}, kernel = {k}) |> relu |> {pool}({pk}, stride = {ps}, padding = {pp}) |> flatten
              |> dense(3) => p  loss = cross_entropy(p, y)
            train {{ optimizer = sgd(lr = 0.05) seed = {seed} }} }}");
        let checked = check_source("c.nn", &source);
        prop_assert!(!checked.has_errors(), "{source}: {:?}", checked.diags);
        assert_backends_agree(&checked.models[0], rows, seed);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// Kernels, strides, padding and dilation that differ between the axes
    /// (the im2col path; the interpreter runs the reference loops).
    #[test]
    fn random_rectangular_convolutions(c in 1usize..5, h in 2usize..9, w in 2usize..9, f in 1usize..5,
                                       kh in 1usize..4, kw in 1usize..4, sh in 1usize..3, sw in 1usize..3,
                                       ph in 0usize..2, pw in 0usize..2, dh in 1usize..3, dw in 1usize..3,
                                       rows in prop::sample::select(vec![1usize, 3]), seed in 0u64..1000) {
        prop_assume!(dh * (kh - 1) < h + 2 * ph && dw * (kw - 1) < w + 2 * pw);
        let source = format!("model g {{ input x: [{c}, {h}, {w}] target y: class(3)
            x |> conv2d({f}, kernel = [{kh}, {kw}], stride = [{sh}, {sw}], padding = [{ph}, {pw}],
                        dilation = [{dh}, {dw}]) |> tanh |> flatten |> dense(3) => p
            loss = cross_entropy(p, y)
            train {{ optimizer = sgd(lr = 0.05) seed = {seed} }} }}");
        let checked = check_source("c.nn", &source);
        prop_assert!(!checked.has_errors(), "{source}: {:?}", checked.diags);
        assert_backends_agree(&checked.models[0], rows, seed);
    }
}

/// The case that once found relu's kink after batchnorm, with elu after it.
#[test]
fn batchnorm_after_a_padded_convolution() {
    let source = "model g { input x: [5, 4, 3] target y: class(3)
        x |> conv2d(4, kernel = 3, padding = 1) |> batchnorm(momentum = 0.8) |> elu
          |> avgpool(1) |> flatten |> dense(3) => p  loss = cross_entropy(p, y)
        train { optimizer = momentum(lr = 0.05) seed = 985 } }";
    let checked = check_source("c.nn", source);
    assert!(!checked.has_errors(), "{:?}", checked.diags);
    assert_backends_agree(&checked.models[0], 8, 985);
}

/// Class weights: each row's cross-entropy term and gradient scaled by its
/// class's weight, the same on both backends.
#[test]
fn class_weighted_cross_entropy() {
    let source = "model g { input x: [6] target y: class(4)
        x |> dense(5) |> tanh |> dense(4) => p  loss = cross_entropy(p, y, weights = [0.5, 3, 0, 1.25])
        train { optimizer = adam(lr = 0.01) seed = 4 } }";
    let checked = check_source("w.nn", source);
    assert!(!checked.has_errors(), "{:?}", checked.diags);
    assert_backends_agree(&checked.models[0], 13, 4);
}

/// Two outputs with their own targets, their losses weighted and summed.
#[test]
fn weighted_losses_over_several_targets() {
    let source = "model g { input x: [5] target kind: class(3) target size: real[2]
        x |> dense(6) |> relu => h
        h |> dense(3) => logits
        h |> dense(2) => value
        loss = 0.3 * cross_entropy(logits, kind) + 2 * mse(value, size)
        train { optimizer = momentum(lr = 0.05) seed = 3 } }";
    let checked = check_source("w.nn", source);
    assert!(!checked.has_errors(), "{:?}", checked.diags);
    assert_backends_agree(&checked.models[0], 9, 3);
}

/// A dilated kernel whose outer taps miss the image on every output column
/// (3 taps 3 apart over 3 + 2·2 columns, stride 2): im2col must only zero them.
#[test]
fn dilated_taps_outside_the_image() {
    let source = "model g { input x: [1, 3, 3] target y: class(3)
        x |> conv2d(2, kernel = 3, stride = 2, padding = 2, dilation = 3) |> relu |> flatten |> dense(3) => p
        loss = cross_entropy(p, y)  train { optimizer = sgd(lr = 0.05) } }";
    let checked = check_source("c.nn", source);
    assert!(!checked.has_errors(), "{:?}", checked.diags);
    assert_backends_agree(&checked.models[0], 3, 1);
}

/// A forward pass keeps its Winograd filter transforms while the weights
/// keep their version, so every way of writing the weights between two
/// predictions must show in the second: a training step, a restore, a step
/// after a restore. Each prediction is compared with the interpreter's.
#[test]
fn predictions_follow_every_change_of_the_weights() {
    // 32 channels and filters, 3 × 3, stride 1: the Winograd convolution.
    let source = "model w { input x: [32, 6, 6] target y: class(3)
        x |> conv2d(32, kernel = 3, padding = 1) |> relu |> flatten |> dense(3) => p
        loss = cross_entropy(p, y)
        train { optimizer = sgd(lr = 0.5) seed = 4 } }";
    let checked = check_source("w.nn", source);
    assert!(!checked.has_errors(), "{:?}", checked.diags);
    let model = &checked.models[0];
    let rows = 5;
    let (x, y) = batch(model, rows, 9);
    let run = |backend: Backend| {
        let mut t = Trainer::new(model, model.train.clone(), backend).expect("trainable");
        let start = t.tensors().into_iter().map(|(name, shape, values)| (name, (shape, values))).collect();
        let mut predictions = vec![t.predict(&x, rows).expect("predict")];
        t.step(&x, &y, rows, 0.5).expect("step");
        predictions.push(t.predict(&x, rows).expect("predict"));
        t.restore(&start, 0, 0).expect("restore");
        predictions.push(t.predict(&x, rows).expect("predict"));
        t.step(&x, &y, rows, 0.5).expect("step");
        t.step(&x, &y, rows, 0.5).expect("step");
        predictions.push(t.predict(&x, rows).expect("predict"));
        predictions
    };
    let (interp, jit) = (run(Backend::Interp), run(Backend::Jit));
    for (k, (a, b)) in interp.iter().zip(&jit).enumerate() {
        for (i, (a, b)) in a.iter().zip(b).enumerate() {
            assert!(close(*a, *b), "prediction {k}[{i}]: interp {a} vs jit {b}");
        }
    }
    // The steps moved the predictions, and the restore moved them back.
    let moved = |a: &[f32], b: &[f32]| a.iter().zip(b).any(|(a, b)| (a - b).abs() > 1e-3);
    assert!(moved(&jit[0], &jit[1]) && moved(&jit[2], &jit[3]));
    assert_eq!(jit[0], jit[2]);
}

/// Convolution and pooling split a batch into a fixed number of parts, so
/// running the parts on several threads gives the same bits as one thread.
#[test]
fn parallel_images_give_the_same_bits_as_serial() {
    let source = "model m { input x: [2, 9, 9] target y: class(3)
        x |> conv2d(4, kernel = 3, padding = 1) |> relu |> maxpool(2)
          |> conv2d(5, kernel = 2) |> relu |> avgpool(3) |> flatten |> dense(3) => p
        loss = cross_entropy(p, y)
        train { optimizer = adam(lr = 0.01) seed = 5 } }";
    let checked = check_source("m.nn", source);
    let model = &checked.models[0];
    let rows = 13;
    let (x, y) = batch(model, rows, 3);
    let run = |parallel: bool| {
        nnc_runtime::set_parallel_images(parallel);
        let mut t = Trainer::new(model, model.train.clone(), Backend::Jit).expect("trainable");
        let losses: Vec<u64> = (0..3).map(|_| t.step(&x, &y, rows, 0.01).expect("step").to_bits()).collect();
        let weights: Vec<u32> = t.params().iter().flatten().map(|v| v.to_bits()).collect();
        (losses, weights)
    };
    let (serial, parallel) = (run(false), run(true));
    nnc_runtime::set_parallel_images(false);
    assert_eq!(serial, parallel);
}

/// Element-wise kernels of 65,536 values and more run in parts over the
/// threads: by rows where a bias row sets the columns (a dense layer of 1,027
/// units over 67 rows) or a channel's plane sets them (batch normalisation's
/// per-channel scale and shift of 13 images' feature maps), else by runs of
/// values (74,958 values, not a multiple of the four lanes; the momentum
/// update of a 65,728-value weight). They agree with the interpreter, and their bits
/// do not depend on the number of threads.
#[test]
fn large_elementwise_kernels_run_in_parts() {
    let models = [
        (
            "model d { input x: [64] target y: class(3)
            x |> dense(1027) |> tanh |> dense(3) => p  loss = cross_entropy(p, y)
            train { optimizer = sgd(lr = 0.01, momentum = 0.9) seed = 2 } }",
            67,
        ),
        (
            "model c { input x: [3, 31, 31] target y: class(3)
            x |> conv2d(6, kernel = 3, padding = 1) |> batchnorm |> relu |> maxpool(31) |> flatten |> dense(3) => p
            loss = cross_entropy(p, y)  train { optimizer = sgd(lr = 0.05, momentum = 0.9) seed = 4 } }",
            13,
        ),
    ];
    for (source, rows) in models {
        let checked = check_source("m.nn", source);
        assert!(!checked.has_errors(), "{:?}", checked.diags);
        let model = &checked.models[0];
        assert_backends_agree(model, rows, 7);
        let (x, y) = batch(model, rows, 7);
        let bits = |threads: usize| {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().expect("pool");
            pool.install(|| {
                let mut t = Trainer::new(model, model.train.clone(), Backend::Jit).expect("trainable");
                let losses: Vec<u64> = (0..2).map(|_| t.step(&x, &y, rows, 0.01).expect("step").to_bits()).collect();
                let weights: Vec<u32> = t.params().iter().flatten().map(|v| v.to_bits()).collect();
                (losses, weights)
            })
        };
        assert_eq!(bits(1), bits(2));
    }
}
