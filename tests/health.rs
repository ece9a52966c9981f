//! What `nnc train` reports about the inside of training (gradient norms,
//! saturated units, feature maps) is what the reference interpreter
//! computes from the same weights and rows.

use std::path::Path;

use nnc::check::CheckedModel;
use nnc::data::{self, Dataset, RowSpec, Scaler};
use nnc::pipeline::check_source;
use nnc::train::{Backend, Trainer};

mod common;

use common::{MODELS, bundled};

/// The health numbers are the step's own gradients: one full-batch step of
/// the digits MLP reports, per parameter, the L2 norm of the gradient that
/// the reference interpreter computes from the same weights and rows, on
/// both backends; and tracking health changes no weight.
#[test]
fn health_reports_the_norms_of_the_gradients() {
    let model = bundled("digits_mlp.nn");
    let mut config = model.train.clone();
    (config.batch, config.epochs) = (nnc::check::Batch::Full, 1);
    let source = model.train.data.clone().expect("model names its data");
    let mut train = data::load(&source, Path::new(MODELS), &RowSpec::of(&model)).expect("data loads").train;
    Scaler::fit(model.train.preprocess, &train).apply(&mut train);
    // The gradients at the initial weights, by the interpreter.
    let step = nnc::pipeline::step_graph(&model, &config, train.rows).expect("step");
    let initial = Trainer::new(&model, config.clone(), Backend::Interp).expect("trainable").params();
    let mut store = nnc::train::Store::new(&step.graph);
    for (p, values) in initial.iter().enumerate() {
        store.set_param(p, values);
    }
    let hypers = nnc::train::Hypers { lr: 0.003, bias1: 10.0, bias2: 1000.0, step: 1.0, ..Default::default() };
    let values = nnc::exec::interpret(&step.graph, &store, &train.x, &train.y, &hypers).expect("runs");
    let norms: Vec<f64> = step
        .grads
        .iter()
        .map(|g| values[g.0].iter().map(|&v| f64::from(v) * f64::from(v)).sum::<f64>().sqrt())
        .collect();
    // The relu layer's outputs at those weights: mean, std, dead units.
    let relu = step.graph.nodes.iter().position(|n| n.op == nnc::ir::Op::Unary(nnc::ir::Unary::Relu)).expect("relu");
    let h = &values[relu];
    let count = h.len() as f64;
    let mean = h.iter().map(|&v| f64::from(v)).sum::<f64>() / count;
    let std = (h.iter().map(|&v| f64::from(v) * f64::from(v)).sum::<f64>() / count - mean * mean).sqrt();
    let units = step.graph.nodes[relu].shape[1];
    let dead = (0..units).filter(|&u| h.iter().skip(u).step_by(units).all(|&v| v == 0.0)).count() as f64 / units as f64;
    for backend in [Backend::Jit, Backend::Interp] {
        let mut trainer = Trainer::new(&model, config.clone(), backend).expect("trainable");
        trainer.track_health();
        let report = trainer.fit_epoch(&train, None, None).expect("trains");
        let health = report.health.expect("health is tracked");
        let layer = &health.activations[0];
        assert_eq!((health.activations.len(), layer.name.as_str()), (1, "relu1"), "{backend:?}");
        assert!(
            (layer.mean - mean).abs() <= 1e-5 * mean && (layer.std - std).abs() <= 1e-5 * std,
            "{backend:?} {layer:?}"
        );
        assert_eq!(layer.dead_fraction, Some(dead), "{backend:?}");
        let health = health.params;
        assert_eq!(health.len(), norms.len());
        for (h, n) in health.iter().zip(&norms) {
            assert!((h.grad_norm - n).abs() <= 1e-5 * n, "{backend:?} {}: {} vs {n}", h.name, h.grad_norm);
            // Biases start at zero, so their first update is all they are: ratio 1.
            let expected = if h.name.ends_with(".weight") {
                h.update_ratio > 0.0 && h.update_ratio < 1.0
            } else {
                (h.update_ratio - 1.0).abs() < 1e-6
            };
            assert!(expected, "{backend:?} {}: {}", h.name, h.update_ratio);
        }
        let mut plain = Trainer::new(&model, config.clone(), backend).expect("trainable");
        plain.fit_epoch(&train, None, None).expect("trains");
        assert_eq!(plain.params(), trainer.params(), "{backend:?}: observing changed the update");
    }
}

/// The model in `source`, its training rows, its step graph and the values
/// of every node of its first step at the initial weights, by the interpreter.
fn first_full_batch_step(source: &str) -> (CheckedModel, Dataset, nnc::ir::TrainGraph, Vec<Vec<f32>>) {
    let mut checked = check_source("model.nn", source);
    assert!(!checked.has_errors(), "{:?}", checked.diags);
    let model = checked.models.remove(0);
    let train = data::load(model.train.data.as_ref().expect("data"), Path::new(MODELS), &RowSpec::of(&model))
        .expect("loads")
        .train;
    let step = nnc::pipeline::step_graph(&model, &model.train, train.rows).expect("step");
    let initial = Trainer::new(&model, model.train.clone(), Backend::Interp).expect("trainable").params();
    let mut store = nnc::train::Store::new(&step.graph);
    for (p, values) in initial.iter().enumerate() {
        store.set_param(p, values);
    }
    let hypers = nnc::train::Hypers { lr: 0.1, bias1: 1.0, bias2: 1.0, step: 1.0, ..Default::default() };
    let values = nnc::exec::interpret(&step.graph, &store, &train.x, &train.y, &hypers).expect("runs");
    (model, train, step, values)
}

/// Saturated units are counted inside the step: one full-batch step of a
/// sigmoid, tanh and clip MLP on raw grey levels (0..16, so many saturate)
/// reports, per layer, the fraction of outputs whose derivative is below
/// 0.01 (0 for clip, at its bounds), as computed from the interpreter's
/// activations at the same weights. A relu beside them is still reported.
#[test]
fn health_counts_saturated_sigmoid_tanh_and_clipped_units() {
    let source = "model sat {
        input image: [64]
        target digit: class(10)
        image |> dense(32) |> tanh => a
        image |> dense(32) |> sigmoid => b
        image |> dense(32) |> clip(min = -1, max = 2) => c
        image |> dense(32) |> relu => d
        add(a, b) |> add(c) |> add(d) |> dense(10) => logits
        loss = cross_entropy(logits, digit)
        train { data = builtin(\"digits\") optimizer = sgd(lr = 0.1) batch = full seed = 3 }
    }";
    let (model, train, step, values) = first_full_batch_step(source);
    let model = &model;
    let fraction = |unary: nnc::ir::Unary, saturated: fn(f32) -> bool| {
        let node = step.graph.nodes.iter().position(|n| n.op == nnc::ir::Op::Unary(unary)).expect("layer");
        let outputs = &values[node];
        outputs.iter().filter(|&&y| saturated(y)).count() as f64 / outputs.len() as f64
    };
    let sigmoid = fraction(nnc::ir::Unary::Sigmoid, |s| s * (1.0 - s) < 0.01);
    let tanh = fraction(nnc::ir::Unary::Tanh, |t| 1.0 - t * t < 0.01);
    let clip = fraction(nnc::ir::Unary::Clamp(-1.0, 2.0), |y| y <= -1.0 || y >= 2.0);
    assert!(sigmoid > 0.05 && tanh > 0.05 && clip > 0.05, "the test needs saturated units: {sigmoid} {tanh} {clip}");
    for backend in [Backend::Jit, Backend::Interp] {
        let mut trainer = Trainer::new(model, model.train.clone(), backend).expect("trainable");
        trainer.track_health();
        let health = trainer.fit_epoch(&train, None, None).expect("trains").health.expect("tracked");
        let found: Vec<(&str, Option<f64>)> =
            health.activations.iter().map(|a| (a.name.as_str(), a.saturated_fraction)).collect();
        assert_eq!(found.len(), 4, "{backend:?}");
        let expected = [("tanh1", Some(tanh)), ("sigmoid1", Some(sigmoid)), ("clip1", Some(clip)), ("relu1", None)];
        for ((name, got), (want_name, want)) in found.iter().zip(expected) {
            assert_eq!(*name, want_name);
            match (got, want) {
                // Outputs within rounding of the edge may fall either side: a few in 10⁴.
                (Some(got), Some(want)) => assert!((got - want).abs() < 5e-4, "{backend:?} {name}: {got} vs {want}"),
                (got, want) => assert_eq!(*got, want, "{backend:?} {name}"),
            }
        }
    }
}

/// Feature maps are observed too, per channel: one full-batch step of a
/// small CNN on the digits reports, for its convolution's relu, the mean
/// and spread of the outputs and the channels that never fired, as
/// computed from the interpreter's activations at the same weights.
#[test]
fn health_describes_feature_maps_per_channel() {
    let source = "model maps {
        input image: [1, 8, 8]
        target digit: class(10)
        image |> conv2d(8, kernel = 1, bias = false) |> relu |> flatten |> dense(10) => logits
        loss = cross_entropy(logits, digit)
        train { data = builtin(\"digits\") optimizer = sgd(lr = 0.1) batch = full seed = 2 }
    }";
    let (model, train, step, values) = first_full_batch_step(source);
    let model = &model;
    let relu = step.graph.nodes.iter().position(|n| n.op == nnc::ir::Op::Unary(nnc::ir::Unary::Relu)).expect("relu");
    let maps = &values[relu];
    let count = maps.len() as f64;
    let mean = maps.iter().map(|&v| f64::from(v)).sum::<f64>() / count;
    let std = (maps.iter().map(|&v| f64::from(v) * f64::from(v)).sum::<f64>() / count - mean * mean).sqrt();
    // Without a bias, on grey levels ≥ 0, a channel whose one weight is
    // negative never fires: about half of them.
    let channel_fired = |c: usize| maps.chunks_exact(64).skip(c).step_by(8).any(|plane| plane.iter().any(|&v| v > 0.0));
    let dead = (0..8).filter(|&c| !channel_fired(c)).count() as f64 / 8.0;
    assert!(dead > 0.0 && dead < 1.0, "the test needs dead and live channels: {dead}");
    for backend in [Backend::Jit, Backend::Interp] {
        let mut trainer = Trainer::new(model, model.train.clone(), backend).expect("trainable");
        trainer.track_health();
        let health = trainer.fit_epoch(&train, None, None).expect("trains").health.expect("tracked");
        assert_eq!(health.activations.len(), 1, "{backend:?}");
        let layer = &health.activations[0];
        assert!(
            (layer.mean - mean).abs() <= 1e-5 * mean && (layer.std - std).abs() <= 1e-5 * std,
            "{backend:?} {layer:?} vs {mean} {std}"
        );
        assert_eq!(layer.dead_fraction, Some(dead), "{backend:?}");
    }
}
