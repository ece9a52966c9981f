//! Training on real data reaches known results: accuracy targets, the OLS
//! solution, reproducibility, and clean failures on divergence.

use std::path::Path;

use nnc::check::CheckedModel;
use nnc::data::{self, Dataset, RowSpec, Scaler};
use nnc::pipeline::check_source;
use nnc::train::{Backend, TrainError, Trainer};

mod common;

use common::{MODELS, bundled, train_bundled};

#[test]
fn digits_mlp_reaches_96_percent() {
    let (_, m) = train_bundled(&bundled("digits_mlp.nn"));
    assert!(m.accuracy.expect("classifier") >= 0.96, "{m:?}");
}

#[test]
fn layernorm_mlp_reaches_96_percent() {
    let (_, m) = train_bundled(&bundled("layernorm_mlp.nn"));
    assert!(m.accuracy.expect("classifier") >= 0.96, "{m:?}");
}

/// Bundled convolutional models of the digits: two branches joined along
/// the channels (`concat`), the digits as sequences of pixel columns
/// through two 1-D convolutions, and a depthwise separable block (a
/// convolution per channel, `groups`, then a 1×1 one).
#[test]
fn convolutional_digit_models_reach_96_percent() {
    for file in ["inception_digits.nn", "digits_conv1d.nn", "separable_digits.nn"] {
        let (_, m) = train_bundled(&bundled(file));
        assert!(m.accuracy.expect("classifier") >= 0.96, "{file}: {m:?}");
    }
}

/// Each channel's mean over the map, then one dense layer: no weight
/// sees a position, and the convolutions still learn the digits.
#[test]
fn global_average_pooling_classifies_digits() {
    let (_, m) = train_bundled(&bundled("global_pool_digits.nn"));
    assert!(m.accuracy.expect("classifier") >= 0.94, "{m:?}");
}

#[test]
fn xor_is_learned_exactly() {
    let (_, m) = train_bundled(&bundled("xor.nn"));
    assert_eq!(m.accuracy, Some(1.0), "{m:?}");
}

#[test]
fn logistic_regression_separates_zeros_from_ones() {
    let (_, m) = train_bundled(&bundled("logistic.nn"));
    assert!(m.accuracy.expect("binary") >= 0.98, "{m:?}");
}

#[test]
fn diabetes_regression_explains_40_percent_of_variance() {
    let (_, m) = train_bundled(&bundled("diabetes.nn"));
    assert!(m.r2.expect("regression") >= 0.4, "{m:?}");
}

/// Solves the normal equations (XᵀX)β = XᵀY by Gaussian elimination, in f64.
fn ols(x: &[Vec<f64>], y: &[f64]) -> Vec<f64> {
    let k = x[0].len();
    let mut a = vec![vec![0.0; k + 1]; k];
    for (row, &t) in x.iter().zip(y) {
        for i in 0..k {
            for j in 0..k {
                a[i][j] += row[i] * row[j];
            }
            a[i][k] += row[i] * t;
        }
    }
    for col in 0..k {
        let pivot = (col..k).max_by(|&i, &j| a[i][col].abs().total_cmp(&a[j][col].abs())).expect("rows");
        a.swap(col, pivot);
        let pivot_row = a[col].clone();
        for (_, row) in a.iter_mut().enumerate().filter(|(r, _)| *r != col) {
            let f = row[col] / pivot_row[col];
            for (v, p) in row.iter_mut().zip(&pivot_row).skip(col) {
                *v -= f * p;
            }
        }
    }
    (0..k).map(|i| a[i][k] / a[i][i]).collect()
}

#[test]
fn house_price_gradient_descent_reaches_ols() {
    // House data generated here: area, rooms, bathrooms → price with noise.
    let mut state = 12345u64;
    let mut uniform = || {
        state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (state >> 11) as f64 / (1u64 << 53) as f64
    };
    let rows = 300;
    let mut raw = Vec::new();
    let mut prices = Vec::new();
    for _ in 0..rows {
        let (area, rooms, baths) =
            (40.0 + 200.0 * uniform(), (1.0 + 6.0 * uniform()).floor(), (1.0 + 3.0 * uniform()).floor());
        let noise = 40.0 * (uniform() - 0.5);
        raw.push([area, rooms, baths]);
        prices.push(1.1 * area + 12.0 * rooms + 25.0 * baths + 40.0 + noise);
    }
    let design: Vec<Vec<f64>> = raw.iter().map(|r| vec![1.0, r[0], r[1], r[2]]).collect();
    let beta = ols(&design, &prices);

    let model = bundled("house_price.nn");
    let mut train = Dataset {
        rows,
        width: 3,
        x: raw.iter().flat_map(|r| r.iter().map(|&v| v as f32)).collect(),
        target_width: 1,
        y: prices.iter().map(|&p| p as f32).collect(),
        columns: vec![],
    };
    let scaler = Scaler::fit(model.train.preprocess, &train);
    scaler.apply(&mut train);
    let mut trainer = Trainer::new(&model, model.train.clone(), Backend::Jit).expect("trainable");
    trainer.fit(&train, None, None, |_| {}).expect("converges");
    // Map the weights learnt on standardised features back to raw units.
    let params = trainer.params();
    let Scaler::Standardize { mean, std } = scaler else { panic!("house_price standardises its inputs") };
    let (w, b) = (&params[0], params[1][0] as f64);
    let slopes: Vec<f64> = (0..3).map(|j| w[j] as f64 / std[j] as f64).collect();
    let intercept = b - (0..3).map(|j| slopes[j] * mean[j] as f64).sum::<f64>();
    let learnt = [intercept, slopes[0], slopes[1], slopes[2]];
    for (l, o) in learnt.iter().zip(&beta) {
        assert!((l - o).abs() / o.abs() < 1e-3, "learnt {learnt:?} vs OLS {beta:?}");
    }
}

#[test]
fn same_seed_gives_bit_identical_weights() {
    let model = bundled("digits_mlp.nn");
    let mut config = model.train.clone();
    config.epochs = 2;
    let run = |config: &nnc::check::TrainConfig| {
        let source = config.data.clone().expect("data");
        let mut train = data::load(&source, Path::new(MODELS), &RowSpec::of(&model)).expect("data").train;
        Scaler::fit(config.preprocess, &train).apply(&mut train);
        let mut t = Trainer::new(&model, config.clone(), Backend::Jit).expect("trainable");
        t.fit(&train, None, None, |_| {}).expect("trains");
        t.params()
    };
    let (a, b) = (run(&config), run(&config));
    let bits = |p: &Vec<Vec<f32>>| p.iter().flatten().map(|v| v.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(&a), bits(&b));
    config.seed += 1;
    let c = run(&config);
    assert_ne!(bits(&a), bits(&c), "a different seed must give different weights");
}

#[test]
fn divergence_stops_with_epoch_and_step() {
    let source = "model blowup { input x: [2] target y: real[1]
        x |> dense(8) |> relu |> dense(1) => p  loss = mse(p, y)
        train { optimizer = sgd(lr = 1e6) batch = 2 epochs = 50 } }";
    let checked = check_source("blowup.nn", source);
    let model = &checked.models[0];
    let train = Dataset {
        rows: 4,
        width: 2,
        x: vec![1.0, 2.0, 3.0, 4.0, -1.0, 5.0, 2.0, 2.0],
        target_width: 1,
        y: vec![10.0, -20.0, 30.0, 5.0],
        columns: vec![],
    };
    let mut trainer = Trainer::new(model, model.train.clone(), Backend::Jit).expect("trainable");
    match trainer.fit(&train, None, None, |_| {}) {
        Err(TrainError::NonFinite { epoch, step, what, span }) => {
            assert!(epoch >= 1 && (1..=2).contains(&step), "epoch {epoch} step {step}");
            // The first non-finite value is named and points at the line that computes it.
            assert!(what.starts_with("the forward value") || what.starts_with("the backward value"), "{what}");
            let span = span.expect("a source location");
            let line = &source[span.start..span.end];
            assert!(["dense(8)", "relu", "dense(1)", "mse(p, y)"].iter().any(|l| line.contains(l)), "{line}");
            assert!(trainer.params().iter().flatten().all(|v| v.is_finite()), "the last good weights are kept");
        }
        other => panic!("expected divergence, got {other:?}"),
    }
}

#[test]
fn learning_rate_schedules() {
    let base = "model s { input x: [1] target y: real[1] x |> dense(1) => p loss = mse(p, y)
        train { optimizer = sgd(lr = 0.1) epochs = 10 schedule = SCHEDULE } }";
    let lr = |schedule: &str, epoch: usize| {
        let checked = check_source("s.nn", &base.replace("SCHEDULE", schedule));
        assert!(!checked.has_errors(), "{:?}", checked.diags);
        Trainer::new(&checked.models[0], checked.models[0].train.clone(), Backend::Interp)
            .expect("trainable")
            .lr_at(epoch)
    };
    assert!((lr("step(every = 3, gamma = 0.5)", 7) - 0.025).abs() < 1e-12);
    assert!((lr("exponential(gamma = 0.9)", 2) - 0.081).abs() < 1e-12);
    assert!((lr("cosine", 5) - 0.05).abs() < 1e-12);
    assert!((lr("cosine(min_lr = 0.01)", 0) - 0.1).abs() < 1e-12);
}

/// `warmup = 4` over a cosine schedule, full batches (one step an epoch):
/// the epochs run at ¼, ½ and ¾ of the schedule's rate, then at the
/// schedule's; the first step moves the weights a quarter as far as
/// without warmup (plain SGD: the step is the rate times the gradient).
#[test]
fn warmup_raises_the_rate_step_by_step() {
    let source = |warmup: &str| {
        format!(
            "model s {{ input x: [2] target y: real[1] x |> dense(1) => p loss = mse(p, y)
             train {{ optimizer = sgd(lr = 0.1) batch = full epochs = 6 schedule = cosine {warmup} }} }}"
        )
    };
    let data = Dataset {
        rows: 4,
        width: 2,
        x: vec![1.0, 0.0, 0.0, 1.0, 1.0, 1.0, 0.5, -1.0],
        target_width: 1,
        y: vec![1.0, 2.0, 3.0, -1.0],
        columns: vec![],
    };
    let run = |warmup: &str, epochs: usize| {
        let checked = check_source("s.nn", &source(warmup));
        assert!(!checked.has_errors(), "{:?}", checked.diags);
        let model = &checked.models[0];
        let mut trainer = Trainer::new(model, model.train.clone(), Backend::Interp).expect("trainable");
        let start = trainer.params();
        let reports: Vec<f64> = (0..epochs).map(|_| trainer.fit_epoch(&data, None, None).expect("trains").lr).collect();
        let moved: Vec<f64> = start[0].iter().zip(&trainer.params()[0]).map(|(a, b)| f64::from(b - a)).collect();
        (reports, moved, trainer)
    };
    let (lrs, _, trainer) = run("warmup = 4", 6);
    for (epoch, lr) in lrs.iter().enumerate() {
        let ramp = ((epoch + 1) as f64 / 4.0).min(1.0);
        assert!((lr - trainer.lr_at(epoch) * ramp).abs() < 1e-12, "epoch {epoch}: {lr}");
    }
    let (_, warm, _) = run("warmup = 4", 1);
    let (_, cold, _) = run("", 1);
    for (w, c) in warm.iter().zip(&cold) {
        assert!((w * 4.0 - c).abs() <= 1e-6 * c.abs().max(1e-3), "{warm:?} vs {cold:?}");
    }
}

#[test]
fn simulated_annealing_solves_xor_without_gradients() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/models/xor_anneal.nn");
    let checked = nnc::pipeline::check_file(std::path::Path::new(path)).expect("readable");
    assert!(!checked.has_errors(), "{:?}", checked.diags);
    let model = &checked.models[0];
    let xor = Dataset {
        rows: 4,
        width: 2,
        x: vec![0.0, 0.0, 0.0, 1.0, 1.0, 0.0, 1.0, 1.0],
        target_width: 1,
        y: vec![0.0, 1.0, 1.0, 0.0],
        columns: vec![],
    };
    for backend in [Backend::Interp, Backend::Jit] {
        let mut trainer = Trainer::new(model, model.train.clone(), backend).expect("trainable");
        let reports = trainer.fit(&xor, None, None, |_| {}).expect("trains");
        // Only improvements (or, while warm, small setbacks) are kept: the loss ends far below where it began.
        let (first, last) = (reports[0].train_loss, reports[reports.len() - 1].train_loss);
        assert!(last < 0.01 * first, "{backend:?}: loss {first} → {last}");
        let accuracy = trainer.evaluate(&xor).expect("evaluates").accuracy.expect("binary");
        assert_eq!(accuracy, 1.0, "{backend:?}");
    }
}

/// A step that cannot be compiled reports the compiler's message as it is
/// (it once read "internal error: internal error: …").
#[test]
fn compile_failures_are_reported_once() {
    let message = "internal error: the step needs 104.4 GiB of working memory";
    assert_eq!(TrainError::Compile(message.into()).to_string(), message);
}

/// Convolutional steps split each batch over two replicas (one per core)
/// that sum their gradients and batch statistics: ten steps of them land
/// where the interpreter's whole-batch steps do, to float rounding, and
/// give the same bits on one thread as on three. Batch normalisation,
/// dropout and Adam are in the step; the last batch is ragged (26 rows).
#[test]
fn replicated_steps_train_as_whole_batches_do() {
    replicated_steps_match_whole_batches(
        "model split {
        input image: [1, 8, 8]
        target digit: class(10)
        image |> conv2d(16, kernel = 3, padding = 1, bias = false) |> batchnorm |> relu
            |> conv2d(16, kernel = 3, padding = 1) |> relu |> maxpool(2)
            |> flatten |> dense(32) |> relu |> dropout(0.2) |> dense(10) => logits
        loss = cross_entropy(logits, digit)
        train { data = builtin(\"digits\") scale = 16 optimizer = adam(lr = 0.01) batch = 32 epochs = 1 seed = 5 }
    }",
    );
}

/// Recurrent steps split over the replicas however small they are (a
/// time step's kernels are too small to spread over the cores), and train
/// as whole batches do: an LSTM and a GRU reading both ways, their global
/// gradient norm clipped, which the replicas take over their summed
/// gradients.
#[test]
fn replicated_recurrent_steps_train_as_whole_batches_do() {
    replicated_steps_match_whole_batches(
        "model split {
        input rows: seq[8, 8]
        target digit: class(10)
        rows |> lstm(12, sequences = true) |> gru(8, bidirectional = true) |> dense(10) => logits
        loss = cross_entropy(logits, digit)
        train { data = builtin(\"digits\") scale = 16 optimizer = adam(lr = 0.01) batch = 32 epochs = 1 seed = 5
                clip_norm = 0.5 }
    }",
    );
}

/// Trains `source` for an epoch of 314 digits (ten steps, the last of 26
/// rows), split over the replicas, on one thread and on three, and whole
/// in the interpreter, observing health as `nnc train` does: the same bits
/// and health on any thread count, and the interpreter's losses, weights
/// and health to float rounding.
fn replicated_steps_match_whole_batches(source: &str) {
    let mut checked = check_source("split.nn", source);
    assert!(!checked.has_errors(), "{:?}", checked.diags);
    let model = checked.models.remove(0);
    let mut train = data::load(model.train.data.as_ref().expect("data"), Path::new(MODELS), &RowSpec::of(&model))
        .expect("loads")
        .train;
    Scaler::fit(model.train.preprocess, &train).apply(&mut train);
    let train = train.select(&(0..314).collect::<Vec<_>>());
    let run = |backend: Backend, threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().expect("pool");
        pool.install(|| {
            let mut trainer = Trainer::new(&model, model.train.clone(), backend).expect("trainable");
            trainer.track_health();
            assert_eq!(trainer.replicates(32), backend == Backend::Jit, "{backend:?}");
            assert_eq!(trainer.replicates(26), backend == Backend::Jit, "{backend:?}");
            let report = trainer.fit_epoch(&train, None, None).expect("trains");
            (report.train_loss, trainer.params(), report.health.expect("health is tracked"))
        })
    };
    let (reference_loss, reference, reference_health) = run(Backend::Interp, 2);
    let (loss, params, health) = run(Backend::Jit, 1);
    common::assert_health_agrees(&reference_health, &health);
    let (_, params_on_three, health_on_three) = run(Backend::Jit, 3);
    let bits = |p: &[Vec<f32>]| p.iter().flatten().map(|v| v.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(&params), bits(&params_on_three), "the same bits on one thread and on three");
    assert_eq!(health, health_on_three, "the same health on one thread and on three");
    assert!((loss - reference_loss).abs() < 1e-5 * reference_loss, "loss {loss} vs {reference_loss}");
    for (p, (a, b)) in params.iter().zip(&reference).enumerate() {
        let scale = b.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let worst = a.iter().zip(b).fold(0.0f32, |m, (x, y)| m.max((x - y).abs()));
        assert!(worst <= 1e-4 * scale, "parameter {p}: {worst} apart (largest {scale})");
    }
}

/// `init = …` chooses each layer's initialiser: zeros are zeros, and the
/// normal ones have the standard deviation asked for (σ), √(2/fan_in) (he)
/// or √(2/(fan_in + fan_out)) (xavier), to sampling error on thousands of
/// weights; without `init`, a layer before relu gets he's.
#[test]
fn init_chooses_each_layers_initialiser() {
    let source = "model inits {
        input x: [1, 16, 16]
        target y: class(10)
        x |> conv2d(32, kernel = 5, init = xavier) |> tanh |> flatten
          |> dense(200, init = normal(0.05)) |> relu
          |> dense(100) |> relu
          |> dense(50, init = he) |> tanh
          |> dense(10, init = zeros) => logits
        loss = cross_entropy(logits, y)
    }";
    let checked = check_source("inits.nn", source);
    assert!(!checked.has_errors(), "{:?}", checked.diags);
    let model = &checked.models[0];
    let trainer = Trainer::new(model, model.train.clone(), Backend::Jit).expect("trainable");
    let tensors: std::collections::HashMap<String, Vec<f32>> =
        trainer.tensors().into_iter().map(|(name, _, values)| (name, values)).collect();
    let std = |name: &str| {
        let w = &tensors[name];
        let n = w.len() as f64;
        let mean = w.iter().map(|&v| f64::from(v)).sum::<f64>() / n;
        (w.iter().map(|&v| (f64::from(v) - mean).powi(2)).sum::<f64>() / n).sqrt()
    };
    let close = |name: &str, want: f64| {
        let got = std(name);
        assert!((got - want).abs() < 0.05 * want, "{name}: σ {got}, expected {want}");
    };
    // conv2d: fan_in 1·5·5, fan_out 32·5·5; the flattened maps are 32·12·12.
    close("conv2d1.weight", (2.0 / (25.0 + 800.0_f64)).sqrt());
    close("dense1.weight", 0.05);
    close("dense2.weight", (2.0 / 200.0_f64).sqrt());
    close("dense3.weight", (2.0 / 100.0_f64).sqrt());
    assert!(tensors["dense4.weight"].iter().all(|&v| v == 0.0));
}

/// `models/house_sales.nn` reads prices in dollars (hundreds of thousands)
/// and three features chosen by name from a CSV that holds other columns,
/// in another order. With `standardize_target`, Adam on minibatches
/// reaches the R² of the least-squares fit computed here from the raw
/// columns, and reports it in dollars; without it, the same run ends far
/// from any fit (its steps of about `lr` cannot reach outputs that large).
#[test]
fn standardized_targets_reach_the_least_squares_fit() {
    let text = std::fs::read_to_string(Path::new(MODELS).join("data/house_sales.csv")).expect("data");
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().expect("header").split(',').collect();
    let column = |name: &str| header.iter().position(|c| *c == name).expect("column");
    let (features, price) = (["area_m2", "rooms", "bathrooms"].map(column), column("price"));
    let (mut design, mut prices) = (Vec::new(), Vec::new());
    for line in lines {
        let cells: Vec<f64> = line.split(',').map(|c| c.parse().expect("number")).collect();
        design.push(std::iter::once(1.0).chain(features.iter().map(|&f| cells[f])).collect::<Vec<f64>>());
        prices.push(cells[price]);
    }
    let beta = ols(&design, &prices);
    let mean = prices.iter().sum::<f64>() / prices.len() as f64;
    let sse: f64 = design
        .iter()
        .zip(&prices)
        .map(|(x, y)| (y - x.iter().zip(&beta).map(|(a, b)| a * b).sum::<f64>()).powi(2))
        .sum();
    let sst: f64 = prices.iter().map(|y| (y - mean).powi(2)).sum();
    let ols_r2 = 1.0 - sse / sst;

    let standardized = bundled("house_sales.nn");
    assert!(standardized.train.standardize_target);
    let (trainer, m) = train_bundled(&standardized);
    let r2 = m.r2.expect("regression");
    assert!(r2 >= ols_r2 - 0.002 && r2 <= ols_r2 + 1e-9, "R² {r2} vs least squares {ols_r2}");
    assert!((m.rmse.expect("rmse") - (sse / prices.len() as f64).sqrt()).abs() < 0.02 * 15_000.0, "{m:?}");
    // The buffers hold the prices' mean and deviation, in dollars.
    let tensors = trainer.tensors();
    let buffer = |name: &str| tensors.iter().find(|(n, _, _)| n == name).map(|(_, _, v)| f64::from(v[0])).expect(name);
    assert!((buffer("price.mean") - mean).abs() < 1.0, "{}", buffer("price.mean"));

    let raw = CheckedModel {
        train: nnc::check::TrainConfig { standardize_target: false, ..standardized.train.clone() },
        ..standardized
    };
    let (_, m) = train_bundled(&raw);
    assert!(m.r2.expect("regression") < 0.0, "{m:?}");
}

/// `trainable = false`: a frozen layer keeps its initial weights bit for
/// bit, on both backends, with no optimizer state, while the read-out on
/// top trains (random features reach 95 % on digits; the full
/// `models/random_features.nn` run gets 97.8 %).
#[test]
fn frozen_layers_keep_their_weights_while_the_rest_trains() {
    let model = bundled("random_features.nn");
    let source = model.train.data.clone().expect("data");
    let splits = data::load(&source, Path::new(MODELS), &RowSpec::of(&model)).expect("data loads");
    let scaler = Scaler::fit(model.train.preprocess, &splits.train);
    let (mut train, mut test) = (splits.train, splits.test.expect("test split"));
    scaler.apply(&mut train);
    scaler.apply(&mut test);
    let config = nnc::check::TrainConfig { epochs: 6, ..model.train.clone() };
    for backend in [Backend::Jit, Backend::Interp] {
        let mut trainer = Trainer::new(&model, config.clone(), backend).expect("trainable");
        let before = trainer.params();
        trainer.fit(&train, None, None, |_| {}).expect("trains");
        let after = trainer.params();
        let names = &trainer.model.param_names;
        for ((name, b), a) in names.iter().zip(&before).zip(&after) {
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(name.starts_with("dense1."), bits(b) == bits(a), "{backend:?} {name}");
        }
        let tensors = trainer.tensors();
        assert!(
            tensors.iter().all(|(n, _, _)| !n.starts_with("optimizer.dense1.")),
            "{backend:?}: frozen layer has state"
        );
        assert!(tensors.iter().any(|(n, _, _)| n.starts_with("optimizer.dense2.")));
        let m = trainer.evaluate(&test).expect("evaluates");
        assert!(m.accuracy.expect("classifier") >= 0.95, "{backend:?}: {m:?}");
    }
}

/// Optimizer state that decays below the smallest normal float becomes
/// zero rather than subnormal (on which x86 cores take slow microcode
/// assists), on both backends; normal values decay exactly by the rule.
/// dense1.weight sees only zero inputs, so its gradient is zero and its
/// state only decays.
#[test]
fn optimizer_state_stops_at_the_smallest_normal_float() {
    let cases = [
        ("sgd(lr = 0.1, momentum = 0.9)", vec![("momentum", 0.9f32, [1.5e-38f32, 2e-38])]),
        ("adam(lr = 0.1)", vec![("adam_m", 0.9, [1.5e-38, 2e-38]), ("adam_v", 0.999, [1.1756e-38, 3e-38])]),
    ];
    for (optimizer, states) in cases {
        let source = format!(
            "model m {{ input x: [2] target y: [1]  x |> dense(1) => p  loss = mse(p, y)
             train {{ optimizer = {optimizer} batch = 2 epochs = 1 }} }}"
        );
        let checked = check_source("m.nn", &source);
        assert!(!checked.has_errors(), "{:?}", checked.diags);
        let model = &checked.models[0];
        let (x, y) = (vec![0.0f32; 4], vec![1.0f32; 2]);
        for backend in [Backend::Jit, Backend::Interp] {
            let mut t = Trainer::new(model, model.train.clone(), backend).expect("trainable");
            t.step(&x, &y, 2, 0.1).expect("step");
            let mut saved: std::collections::HashMap<String, (Vec<usize>, Vec<f32>)> =
                t.tensors().into_iter().map(|(name, shape, values)| (name, (shape, values))).collect();
            for (what, _, start) in &states {
                saved.get_mut(&format!("optimizer.dense1.weight.{what}")).expect("state").1 = start.to_vec();
            }
            t.restore(&saved, 0, t.steps_done()).expect("restores");
            let mut expected: Vec<[f32; 2]> = states.iter().map(|s| s.2).collect();
            for step in 1..=3 {
                t.step(&x, &y, 2, 0.1).expect("step");
                let now: std::collections::HashMap<String, Vec<f32>> =
                    t.tensors().into_iter().map(|(name, _, values)| (name, values)).collect();
                for ((what, decay, _), expected) in states.iter().zip(&mut expected) {
                    for e in expected.iter_mut() {
                        let decayed = *e * decay;
                        *e = if decayed.abs() < f32::MIN_POSITIVE { 0.0 } else { decayed };
                    }
                    let state = &now[&format!("optimizer.dense1.weight.{what}")];
                    assert_eq!(state, &expected.to_vec(), "{optimizer} {what}, {backend:?}, step {step}");
                }
            }
            // Each case's first value went to zero on the way, its second stayed normal.
            assert!(expected.iter().all(|e| e[0] == 0.0 && e[1] >= f32::MIN_POSITIVE), "{expected:?}");
        }
    }
}
