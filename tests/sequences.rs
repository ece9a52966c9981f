//! Recurrent networks on real and synthetic sequences: an LSTM, a GRU and a
//! bidirectional GRU read digits row by row, an LSTM reads MNIST digits row
//! by row, and an LSTM solves the adding problem, whose answer depends on two
//! inputs many steps apart.

use nnc::data::Dataset;
use nnc::pipeline::check_source;
use nnc::train::{Backend, Trainer};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

mod common;

/// `models/lstm_digits.nn` with `layer` as its recurrent layer, trained for
/// ten epochs: its test accuracy.
fn digits_row_by_row(layer: &str) -> f64 {
    let source = std::fs::read_to_string(format!("{}/lstm_digits.nn", common::MODELS)).expect("readable");
    let changed = source.replace("|> lstm(64) |>", &format!("|> {layer} |>")).replace("epochs = 30", "epochs = 10");
    assert!(
        changed.contains(layer) && changed.contains("epochs = 10"),
        "the model reads rows with lstm(64), 30 epochs"
    );
    let checked = check_source("digits_row_by_row.nn", &changed);
    assert!(!checked.has_errors(), "{:?}", checked.diags);
    common::train_bundled(&checked.models[0]).1.accuracy.expect("classifier")
}

#[test]
fn lstm_reads_digits_row_by_row_to_90_percent() {
    let accuracy = digits_row_by_row("lstm(64)");
    assert!(accuracy >= 0.90, "{accuracy}");
}

#[test]
fn gru_reads_digits_row_by_row_to_90_percent() {
    let accuracy = digits_row_by_row("gru(64)");
    assert!(accuracy >= 0.90, "{accuracy}");
}

#[test]
fn bidirectional_gru_reads_digits_row_by_row_to_90_percent() {
    let checked = common::load("bigru_digits.nn");
    let accuracy = common::train_bundled(&checked.models[0]).1.accuracy.expect("classifier");
    assert!(accuracy >= 0.90, "{accuracy}");
}

/// `models/lstm_mnist.nn` (28 rows of 28 pixels, 128 units) after two of
/// its five epochs: 92 % on the 2,000 test digits (96.7 % after five).
#[test]
fn lstm_reads_mnist_row_by_row_to_90_percent_in_two_epochs() {
    let source = std::fs::read_to_string(format!("{}/lstm_mnist.nn", common::MODELS)).expect("readable");
    let shorter = source.replace("epochs = 5", "epochs = 2");
    assert_ne!(shorter, source, "the model trains for 5 epochs");
    let checked = check_source("lstm_mnist.nn", &shorter);
    assert!(!checked.has_errors(), "{:?}", checked.diags);
    let accuracy = common::train_bundled(&checked.models[0]).1.accuracy.expect("classifier");
    assert!(accuracy >= 0.90, "{accuracy}");
}

/// The adding problem: each step holds a random value in [0, 1) and a marker;
/// exactly two steps are marked, one in each half, and the target is the sum
/// of their values. Without memory the best guess is the mean sum, 1.
fn adding_problem(rows: usize, steps: usize, seed: u64) -> Dataset {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let (mut x, mut y) = (Vec::new(), Vec::new());
    for _ in 0..rows {
        let (a, b) = (rng.random_range(0..steps / 2), rng.random_range(steps / 2..steps));
        let mut sum = 0.0;
        for t in 0..steps {
            let value: f32 = rng.random_range(0.0..1.0);
            let marked = t == a || t == b;
            if marked {
                sum += value;
            }
            x.extend([value, if marked { 1.0 } else { 0.0 }]);
        }
        y.push(sum);
    }
    Dataset { rows, width: steps * 2, x, target_width: 1, y, columns: vec![] }
}

#[test]
fn lstm_remembers_across_twenty_steps_in_the_adding_problem() {
    const STEPS: usize = 20;
    let checked = common::load("adding_lstm.nn");
    let model = &checked.models[0];
    let (train, test) = (adding_problem(2000, STEPS, 1), adding_problem(500, STEPS, 2));
    let baseline: f64 = test.y.iter().map(|&s| (f64::from(s) - 1.0).powi(2)).sum::<f64>() / test.rows as f64;
    let mut trainer = Trainer::new(model, model.train.clone(), Backend::Jit).expect("trainable");
    trainer.fit(&train, None, None, |_| {}).expect("trains");
    let mse = trainer.evaluate(&test).expect("evaluates").loss;
    assert!(mse < 0.1 * baseline, "LSTM test MSE {mse} against {baseline} for always answering 1");
}
