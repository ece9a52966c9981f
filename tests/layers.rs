//! Convolutional networks and the regularisers on real data: maxout and
//! dropout train on digits, dropout is off at evaluation, masks are
//! reproducible, and gradients through dropout are exact.

use std::path::Path;

use nnc::data::{self, RowSpec, Scaler};
use nnc::kernels::dropout_keeps;
use nnc::pipeline::check_source;
use nnc::train::{Backend, Trainer};

const MODELS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/models");

#[test]
fn maxout_with_dropout_reaches_96_percent_on_digits() {
    let source = std::fs::read_to_string(Path::new(MODELS).join("maxout.nn")).expect("readable");
    let checked = check_source("maxout.nn", &source);
    let model = &checked.models[0];
    let splits =
        data::load(model.train.data.as_ref().expect("data"), Path::new(MODELS), &RowSpec::of(model)).expect("loads");
    let scaler = Scaler::fit(model.train.preprocess, &splits.train);
    let (mut train, mut test) = (splits.train, splits.test.expect("test split"));
    scaler.apply(&mut train);
    scaler.apply(&mut test);
    let mut trainer = Trainer::new(model, model.train.clone(), Backend::Jit).expect("trainable");
    trainer.fit(&train, None, None, |_| {}).expect("trains");
    let accuracy = trainer.evaluate(&test).expect("evaluates").accuracy.expect("classifier");
    assert!(accuracy >= 0.96, "{accuracy}");
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
    for r in nnc::gradcheck::check_model(&checked.models[0], 2).expect("gradcheck runs") {
        assert!(r.worst_relative_error < 1e-4, "{}: {:e}", r.name, r.worst_relative_error);
    }
}
