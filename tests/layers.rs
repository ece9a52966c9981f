//! Convolutional networks and the regularisers on real data: maxout,
//! dropout and batch normalisation train on digits, dropout is off at
//! evaluation, masks are reproducible, gradients through dropout are exact,
//! and batch normalisation uses batch statistics in training and running
//! statistics in evaluation.

use nnc::pipeline::check_source;
use nnc::train::{Backend, Trainer};
use nnc_runtime::kernels::dropout_keeps;

mod common;

/// Trains a bundled digits model as its file says; returns the test accuracy.
fn test_accuracy(file: &str) -> f64 {
    trained_accuracy(&common::load(file).models[0])
}

/// Trains `model` on the data it names; returns the test accuracy.
fn trained_accuracy(model: &nnc::check::CheckedModel) -> f64 {
    let (train, test) = common::splits(model);
    let mut trainer = Trainer::new(model, model.train.clone(), Backend::Jit).expect("trainable");
    trainer.fit(&train, None, None, |_| {}).expect("trains");
    trainer.evaluate(&test).expect("evaluates").accuracy.expect("classifier")
}

#[test]
fn maxout_with_dropout_reaches_96_percent_on_digits() {
    let accuracy = test_accuracy("maxout.nn");
    assert!(accuracy >= 0.96, "{accuracy}");
}

#[test]
fn convolutional_network_reaches_97_percent_on_digits() {
    // Two convolutions (one dilated) and pooling; 98.3 % at the file's settings.
    let accuracy = test_accuracy("digits_cnn.nn");
    assert!(accuracy >= 0.97, "{accuracy}");
}

#[test]
fn gelu_and_silu_mlp_reaches_96_percent_on_digits() {
    // 97.2 % at the file's settings.
    let accuracy = test_accuracy("digits_gelu.nn");
    assert!(accuracy >= 0.96, "{accuracy}");
}

#[test]
fn softplus_and_tanh_gelu_mlp_reaches_95_percent_on_digits() {
    let checked = common::load("digits_gelu.nn");
    let source = checked.source.replace("|> gelu\n", "|> softplus\n").replace("|> silu\n", "|> gelu(tanh = true)\n");
    let checked = check_source("digits_softplus.nn", &source);
    let model = &checked.models[0];
    assert!(model.nodes.iter().any(|n| n.layer.keyword() == "softplus"), "the variant uses softplus");
    // 96.4 % at these settings.
    let accuracy = trained_accuracy(model);
    assert!(accuracy >= 0.95, "{accuracy}");
}

#[test]
fn batchnorm_and_dropout_mlp_reaches_96_percent_on_digits() {
    let accuracy = test_accuracy("batchnorm.nn");
    assert!(accuracy >= 0.96, "{accuracy}");
}

/// One step with learning rate 0 on a 4 × 3 batch, so only the running
/// statistics move; then training normalises with the batch's statistics and
/// evaluation with the running ones.
#[test]
fn batchnorm_uses_batch_statistics_in_training_and_running_statistics_in_evaluation() {
    let source = "model m { input x: [3] target y: real[3]
        x |> batchnorm(momentum = 0.75, eps = 0.001) => p  loss = mse(p, y) }";
    let checked = check_source("m.nn", source);
    let model = &checked.models[0];
    let x: Vec<f32> = vec![1.0, -2.0, 10.0, 3.0, 0.0, 12.0, 5.0, 2.0, 8.0, 7.0, 4.0, 10.0];
    let zeros = vec![0.0f32; 12];
    for backend in [Backend::Interp, Backend::Jit] {
        let mut trainer = Trainer::new(model, model.train.clone(), backend).expect("trainable");
        // Training output x̂ has mean 0 and variance var/(var + eps) per feature, so mse against 0 is about 1.
        let loss = trainer.step(&x, &zeros, 4, 0.0).expect("step");
        assert!((loss - 1.0).abs() < 1e-3, "{backend:?}: training loss {loss}");
        let tensor = |name: &str| {
            trainer.tensors().into_iter().find(|t| t.0 == name).unwrap_or_else(|| panic!("{name} saved")).2
        };
        // Feature means 4, 1, 10; unbiased variances 20/3, 20/3, 8/3. r′ = 0.75·r + 0.25·batch.
        let (mean, var) = (tensor("batchnorm1.running_mean"), tensor("batchnorm1.running_var"));
        let expected_mean = [1.0, 0.25, 2.5];
        let expected_var = [0.75 + 0.25 * 20.0 / 3.0, 0.75 + 0.25 * 20.0 / 3.0, 0.75 + 0.25 * 8.0 / 3.0];
        for f in 0..3 {
            assert!((mean[f] - expected_mean[f]).abs() < 1e-5, "{backend:?}: running mean {mean:?}");
            assert!((var[f] - expected_var[f]).abs() < 1e-5, "{backend:?}: running variance {var:?}");
        }
        // Evaluation: (x − running mean)/√(running var + eps), with γ = 1, β = 0.
        let predicted = trainer.predict(&x, 4).expect("predicts");
        for (i, p) in predicted.iter().enumerate() {
            let f = i % 3;
            let expected = (x[i] - expected_mean[f]) / (expected_var[f] + 0.001).sqrt();
            assert!((p - expected).abs() < 1e-4, "{backend:?}: output {i}: {p} vs {expected}");
        }
    }
}

#[test]
fn dropout_is_the_identity_at_evaluation() {
    let with = "model m { input x: [6] target y: class(3)
        x |> dense(8) |> relu |> dropout(0.5) |> dense(3) => p  loss = cross_entropy(p, y)
        train { seed = 4 } }";
    let without = with.replace(" |> dropout(0.5)", "");
    let x: Vec<f32> = (0..18).map(|i| (i as f32 * 0.37).sin()).collect();
    let predict = |source: &str, backend| {
        let checked = check_source("m.nn", source);
        let model = &checked.models[0];
        Trainer::new(model, model.train.clone(), backend).expect("trainable").predict(&x, 3).expect("predicts")
    };
    for backend in [Backend::Interp, Backend::Jit] {
        let (a, b) = (predict(with, backend), predict(&without, backend));
        assert_eq!(a, b, "{backend:?}: same weights, dropout must not change evaluation");
    }
}

#[test]
fn dropout_is_active_in_training_and_reproducible() {
    let source = "model m { input x: [6] target y: real[8]
        x |> dense(8) |> dropout(0.5) => p  loss = mse(p, y)
        train { optimizer = sgd(lr = 0.1) seed = 9 } }";
    let checked = check_source("m.nn", source);
    let model = &checked.models[0];
    let (x, y) = (vec![1.0f32; 6], vec![0.5f32; 8]);
    let run = |backend| {
        let mut t = Trainer::new(model, model.train.clone(), backend).expect("trainable");
        let losses: Vec<f64> = (0..3).map(|_| t.step(&x, &y, 1, 0.1).expect("step")).collect();
        (losses, t.params())
    };
    let (a, b) = (run(Backend::Jit), run(Backend::Jit));
    assert_eq!(a, b, "same seed, same masks");
    let interp = run(Backend::Interp);
    for (p, q) in a.0.iter().zip(&interp.0) {
        assert!((p - q).abs() <= 1e-5 * p.abs().max(1.0), "jit {p} vs interp {q}");
    }
    // About half of the units are dropped, and the mask changes from step to step.
    let kept = (0..10_000).filter(|&i| dropout_keeps(7, 1, i, 0.5)).count();
    assert!((4_800..5_200).contains(&kept), "{kept}");
    let same = (0..1000).filter(|&i| dropout_keeps(7, 1, i, 0.5) == dropout_keeps(7, 2, i, 0.5)).count();
    assert!(same < 600, "masks of consecutive steps should be independent ({same}/1000 equal)");
}

#[test]
fn gradients_through_dropout_are_exact() {
    let source = "model m { input x: [5] target y: class(3)
        x |> dense(7) |> tanh |> dropout(0.3) |> dense(3) => p  loss = cross_entropy(p, y) }";
    let checked = check_source("m.nn", source);
    for r in nnc::gradcheck::check_model(&checked.models[0], &nnc::gradcheck::Options { seed: 2, ..Default::default() })
        .expect("gradcheck runs")
    {
        assert!(r.worst_relative_error < 1e-4, "{}: {:e}", r.name, r.worst_relative_error);
    }
}
