//! Using nnc as a library: check a model file, load its data, train it with
//! the JIT backend and report the test accuracy.
//!
//!     cargo run --release --example train_digits

use std::path::Path;

use nnc::data::{self, RowSpec, Scaler};
use nnc::pipeline::check_file;
use nnc::train::{Backend, Trainer};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let models = Path::new(env!("CARGO_MANIFEST_DIR")).join("models");
    let checked = check_file(&models.join("digits_mlp.nn"))?;
    let model = checked.models.first().ok_or("digits_mlp.nn has no model without errors")?;
    let source = model.train.data.as_ref().ok_or("the model names no data")?;
    let splits = data::load(source, &models, &RowSpec::of(model)).map_err(|e| e.message)?;
    let scaler = Scaler::fit(model.train.preprocess, &splits.train);
    let (mut train, mut test) = (splits.train, splits.test.ok_or("no test split")?);
    scaler.apply(&mut train);
    scaler.apply(&mut test);
    let mut trainer = Trainer::new(model, model.train.clone(), Backend::Jit).map_err(|d| d.message)?;
    trainer.fit(&train, None, None, |r| println!("epoch {:>2}: train loss {:.4}", r.epoch, r.train_loss))?;
    let metrics = trainer.evaluate(&test)?;
    println!("test accuracy {:.2}%", 100.0 * metrics.accuracy.unwrap_or(0.0));
    assert!(metrics.accuracy.unwrap_or(0.0) > 0.9, "the digits MLP should pass 90 %");
    Ok(())
}
