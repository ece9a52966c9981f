//! Helpers the integration tests share.
// Each test crate uses a part of these helpers.
#![allow(dead_code)]

use std::path::Path;
use std::process::Command;

use nnc::check::CheckedModel;
use nnc::data::{self, Dataset, RowSpec, Scaler};
use nnc::pipeline::{Checked, check_source};
use nnc::train::health::{ActivationHealth, Health};
use nnc::train::{Backend, Metrics, Trainer};

pub const MODELS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/models");

/// A bundled model file, checked; it must have no errors.
pub fn load(file: &str) -> Checked {
    let source = std::fs::read_to_string(Path::new(MODELS).join(file)).expect("readable");
    let checked = check_source(file, &source);
    assert!(!checked.has_errors(), "{file}: {:?}", checked.diags);
    checked
}

/// The first model of a bundled model file, checked without errors.
pub fn bundled(file: &str) -> CheckedModel {
    load(file).models.remove(0)
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

/// Runs the `nnc` binary in the repository's folder: exit code, stdout, stderr.
pub fn nnc(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_nnc"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("nnc runs");
    let text = |b: Vec<u8>| String::from_utf8_lossy(&b).into_owned();
    (out.status.code().unwrap_or(-1), text(out.stdout), text(out.stderr))
}

/// Trains `model` on the data its file names; returns the trainer and the
/// metrics on the test split (or the training data when there is none).
pub fn train_bundled(model: &CheckedModel) -> (Trainer, Metrics) {
    let source = model.train.data.clone().expect("model names its data");
    let splits = data::load(&source, Path::new(MODELS), &RowSpec::of(model)).expect("data loads");
    let scaler = Scaler::fit(model.train.preprocess, &splits.train);
    let mut train = splits.train;
    scaler.apply(&mut train);
    let mut trainer = Trainer::new(model, model.train.clone(), Backend::Jit).expect("trainable");
    trainer.fit(&train, None, None, |_| {}).expect("training succeeds");
    let metrics = match splits.test {
        Some(mut test) => {
            scaler.apply(&mut test);
            trainer.evaluate(&test)
        }
        None => trainer.evaluate(&train),
    }
    .expect("evaluation succeeds");
    (trainer, metrics)
}

/// Two health reports of the same steps agree: the gradients' norms, the
/// updates' relative sizes, and each activation's mean and mean square
/// (the sums the step computes; a deviation is their difference, which
/// cancels). An update made of rounding noise has no size to agree on: a
/// gradient below 1e-4 of the largest, the absolute tolerance the norms
/// agree to, or one the backends compute only to within a hundredth of
/// itself (a bias before batch normalisation, whose true gradient is
/// zero, came to 2.3e-5 and 3.1e-5 of a largest 0.47 in a three-row
/// batch, and to 2.1e-5 and 3.8e-6 of 0.10 in another). An update far larger than the new
/// weights (which then nearly cancelled: a bias crossing zero) agrees only
/// to rounding scaled by that ratio. Units counted dead or saturated are
/// left out: one output within rounding of a threshold would flip a count.
pub fn assert_health_agrees(a: &Health, b: &Health) {
    assert_eq!((a.params.len(), a.activations.len()), (b.params.len(), b.activations.len()));
    let largest = a.params.iter().fold(0.0f64, |m, p| m.max(p.grad_norm));
    for (pa, pb) in a.params.iter().zip(&b.params) {
        let what = &pa.name;
        assert!(close_enough(pa.grad_norm, pb.grad_norm), "{what}: ‖g‖ {} vs {}", pa.grad_norm, pb.grad_norm);
        let (ra, rb) = (pa.update_ratio, pb.update_ratio);
        let (ga, gb) = (pa.grad_norm, pb.grad_norm);
        let noise = ga < 1e-4 * largest || (ga - gb).abs() > 1e-2 * ga.max(gb);
        // ‖w′‖ = ‖w − Δw‖ loses as many digits as ‖Δw‖ outweighs it: the
        // relative tolerance of `close_enough`, times that ratio.
        let ratio = ra.max(rb).max(1.0);
        assert!(noise || (ra - rb).abs() <= 1e-4 * ratio * ratio, "{what}: ‖Δw‖/‖w′‖ {ra} vs {rb}");
    }
    for (aa, ab) in a.activations.iter().zip(&b.activations) {
        let square = |h: &ActivationHealth| h.std * h.std + h.mean * h.mean;
        let what = &aa.name;
        assert!(close_enough(aa.mean, ab.mean), "{what}: mean {} vs {}", aa.mean, ab.mean);
        assert!(close_enough(square(aa), square(ab)), "{what}: mean square {} vs {}", square(aa), square(ab));
    }
}

/// Equal to a part in 10⁴ of the larger, or within 10⁻⁴ of each other.
fn close_enough(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-4 * a.abs().max(b.abs()).max(1.0)
}
