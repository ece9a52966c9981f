//! Models without labels, on real data: autoencoders (tied and untied)
//! reconstruct digits far better than the mean image.

use std::path::Path;

use nnc::data::{self, Dataset, RowSpec, Scaler};
use nnc::pipeline::check_source;
use nnc::train::{Backend, Trainer};

const MODELS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/models");

/// The scaled train and test splits of the data a model names.
fn splits(model: &nnc::check::CheckedModel) -> (Dataset, Dataset) {
    let splits =
        data::load(model.train.data.as_ref().expect("data"), Path::new(MODELS), &RowSpec::of(model)).expect("loads");
    let scaler = Scaler::fit(model.train.preprocess, &splits.train);
    let (mut train, mut test) = (splits.train, splits.test.expect("test split"));
    scaler.apply(&mut train);
    scaler.apply(&mut test);
    (train, test)
}

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
    for (name, source) in [("tied", &tied), ("untied", &untied)] {
        let checked = check_source("autoencoder.nn", source);
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
