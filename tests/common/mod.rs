//! Helpers the tests that train bundled models on real data share.
// Each test crate uses a part of these helpers.
#![allow(dead_code)]

use std::path::Path;

use nnc::check::CheckedModel;
use nnc::data::{self, Dataset, RowSpec, Scaler};
use nnc::pipeline::{Checked, check_source};

pub const MODELS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/models");

/// A bundled model file, checked; it must have no errors.
pub fn load(file: &str) -> Checked {
    let source = std::fs::read_to_string(Path::new(MODELS).join(file)).expect("readable");
    let checked = check_source(file, &source);
    assert!(!checked.has_errors(), "{file}: {:?}", checked.diags);
    checked
}

/// The train and test splits of the data a model names, scaled as its train block says.
pub fn splits(model: &CheckedModel) -> (Dataset, Dataset) {
    let splits =
        data::load(model.train.data.as_ref().expect("data"), Path::new(MODELS), &RowSpec::of(model)).expect("loads");
    let scaler = Scaler::fit(model.train.preprocess, &splits.train);
    let (mut train, mut test) = (splits.train, splits.test.expect("test split"));
    scaler.apply(&mut train);
    scaler.apply(&mut test);
    (train, test)
}
