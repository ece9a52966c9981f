//! Models without labels, on real data: autoencoders (tied, untied and
//! convolutional, with upsampling) reconstruct digits far better than the mean image; an RBM trained by
//! contrastive divergence reconstructs binarised digits better epoch after
//! epoch on both backends; a deep belief network (two pretrained RBMs and a
//! classifier) reaches 93 % on digits.

use std::path::Path;

use nnc::data::Dataset;
use nnc::pipeline::check_source;
use nnc::train::{Backend, Trainer};

mod common;

use common::{MODELS, load, splits};

/// Mean squared error on `test` of predicting the mean training image for every sample.
fn mean_image_mse(train: &Dataset, test: &Dataset) -> f64 {
    let mut mean = vec![0.0f64; train.width];
    for row in train.x.chunks(train.width) {
        mean.iter_mut().zip(row).for_each(|(m, &v)| *m += f64::from(v) / train.rows as f64);
    }
    let sse: f64 =
        test.x.chunks(test.width).flat_map(|row| row.iter().zip(&mean).map(|(&v, m)| (f64::from(v) - m).powi(2))).sum();
    sse / test.x.len() as f64
}

#[test]
fn autoencoders_halve_the_error_of_the_mean_image() {
    let tied = std::fs::read_to_string(Path::new(MODELS).join("autoencoder.nn")).expect("readable");
    let untied = tied.replace("dense(64, tied = encoder)", "dense(64)");
    assert_ne!(tied, untied);
    let convolutional = std::fs::read_to_string(Path::new(MODELS).join("conv_autoencoder.nn")).expect("readable");
    for (name, source) in [("tied", &tied), ("untied", &untied), ("convolutional", &convolutional)] {
        let checked = check_source(name, source);
        assert!(!checked.has_errors(), "{:?}", checked.diags);
        let model = &checked.models[0];
        let (train, test) = splits(model);
        let mut trainer = Trainer::new(model, model.train.clone(), Backend::Jit).expect("trainable");
        trainer.fit(&train, None, None, |_| {}).expect("trains");
        let reconstruction = trainer.evaluate(&test).expect("evaluates").loss;
        let baseline = mean_image_mse(&train, &test);
        assert!(
            reconstruction <= 0.5 * baseline,
            "{name}: reconstruction MSE {reconstruction} vs mean image {baseline}"
        );
    }
}

#[test]
fn rbm_reconstruction_error_falls_every_epoch_on_binarised_digits() {
    let checked = load("rbm_digits.nn");
    let model = &checked.models[0];
    let (mut train, _) = splits(model);
    train.x.iter_mut().for_each(|v| *v = if *v >= 0.5 { 1.0 } else { 0.0 });
    let mut config = model.train.clone();
    config.epochs = 6;
    let mut runs = Vec::new();
    for backend in [Backend::Interp, Backend::Jit] {
        let mut trainer = Trainer::new(model, config.clone(), backend).expect("trainable");
        let reports = trainer.fit(&train, None, None, |_| {}).expect("trains");
        let errors: Vec<f64> = reports.iter().map(|r| r.train_loss).collect();
        assert!(errors.windows(2).all(|w| w[1] < w[0]), "{backend:?}: reconstruction errors {errors:?}");
        let likelihoods: Vec<f64> = reports.iter().filter_map(|r| r.pseudo_likelihood).collect();
        assert_eq!(likelihoods.len(), 6);
        assert!(likelihoods[5] > likelihoods[0], "{backend:?}: pseudo-log-likelihoods {likelihoods:?}");
        runs.push((errors, trainer.params()));
    }
    // The sampled hidden units are the same on both backends, so the runs agree.
    let ((ea, pa), (eb, pb)) = (&runs[0], &runs[1]);
    for (a, b) in ea.iter().zip(eb) {
        assert!((a - b).abs() <= 1e-4 * a.abs(), "interp {ea:?} vs jit {eb:?}");
    }
    let worst = pa.iter().flatten().zip(pb.iter().flatten()).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
    assert!(worst < 1e-3, "weights differ by {worst}");
}

#[test]
fn deep_belief_network_reaches_93_percent_on_digits() {
    let checked = load("dbn_digits.nn");
    let model = &checked.models[0];
    let (train, test) = splits(model);
    let mut trainer = Trainer::new(model, model.train.clone(), Backend::Jit).expect("trainable");
    let pretraining = trainer.pretrain(&train, &mut |_| {}).expect("pretrains");
    // Two RBMs, five epochs each, each ending better than it started.
    assert_eq!(pretraining.len(), 10);
    for layer in pretraining.chunks(5) {
        assert!(layer[4].reconstruction_error < layer[0].reconstruction_error, "{layer:?}");
    }
    trainer.fit(&train, None, None, |_| {}).expect("fine-tunes");
    let accuracy = trainer.evaluate(&test).expect("evaluates").accuracy.expect("classifier");
    assert!(accuracy >= 0.93, "{accuracy}");
}
