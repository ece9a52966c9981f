//! Replicated epochs and steps against the same steps taken one by one.

use std::path::Path;

use super::*;
use crate::data::{self, RowSpec, Scaler};
use crate::exec::Backend;
use crate::pipeline::check_source;
use crate::train::health::Health;

/// A convolutional model with batch normalisation, dropout and Adam
/// that replicates, and 314 rows of the digits (the last batch of 26).
fn model_and_rows(lr: &str) -> (crate::check::CheckedModel, Dataset) {
    model_and_rows_of(lr, "|> batchnorm |> relu |> conv2d(16, kernel = 3, padding = 1)", 32)
}

/// `model_and_rows` with the layers `middle` after the first convolution
/// and a first dense layer of `width` units.
fn model_and_rows_of(lr: &str, middle: &str, width: usize) -> (crate::check::CheckedModel, Dataset) {
    let source = format!(
        "model split {{
        input image: [1, 8, 8]
        target digit: class(10)
        image |> conv2d(16, kernel = 3, padding = 1, bias = false) {middle} |> relu |> maxpool(2)
            |> flatten |> dense({width}) |> relu |> dropout(0.2) |> dense(10) => logits
        loss = cross_entropy(logits, digit)
        train {{ data = builtin(\"digits\") scale = 16 optimizer = adam(lr = {lr}) batch = 32 seed = 5 }}
    }}"
    );
    let mut checked = check_source("split.nn", &source);
    assert!(!checked.has_errors(), "{:?}", checked.diags);
    let model = checked.models.remove(0);
    let models = Path::new(env!("CARGO_MANIFEST_DIR")).join("models");
    let mut train =
        data::load(model.train.data.as_ref().expect("data"), &models, &RowSpec::of(&model)).expect("loads").train;
    Scaler::fit(model.train.preprocess, &train).apply(&mut train);
    let rows = train.select(&(0..314).collect::<Vec<_>>());
    (model, rows)
}

fn trainer(model: &crate::check::CheckedModel) -> Trainer {
    let mut trainer = Trainer::new(model, model.train.clone(), Backend::Jit).expect("trainable");
    trainer.track_health();
    trainer
}

/// A trainer whose replicas keep a copy of the store each, as they do
/// where a plan cannot share it: their first steps (none here) decided so.
fn on_copies(model: &crate::check::CheckedModel) -> Trainer {
    let mut trainer = trainer(model);
    let mut replicas = Replicas::new().expect("threads");
    replicas.steps.insert(0, Vec::new());
    trainer.replicas = Some(replicas);
    trainer
}

/// Replicas sharing the store observe the health of replicas on copies:
/// each adds up its part of every sum over the update, so the sums agree
/// to rounding (the activations' sums are the same bits). A million f32
/// squares summed in other orders differ by about 1e-4 of their sum; a
/// part missing or counted twice, by a third or more.
fn assert_same_health(shared: Health, copies: Health) {
    assert_eq!(shared.activations, copies.activations);
    assert_eq!(shared.params.len(), copies.params.len());
    for (s, c) in shared.params.iter().zip(&copies.params) {
        let close = |a: f64, b: f64| (a - b).abs() <= 1e-3 * b.abs() && b > 0.0;
        assert!(close(s.grad_norm, c.grad_norm) && close(s.update_ratio, c.update_ratio), "{s:?} vs {c:?}");
    }
}

fn bits(trainer: &Trainer) -> Vec<u32> {
    trainer.params().iter().flatten().map(|v| v.to_bits()).collect()
}

/// An epoch on the replicas, each running all its steps, gives the bits
/// of the same batches taken step by step (`step_replicated`): the
/// parameters, every step's loss and the epoch's health.
#[test]
fn a_replicated_epoch_is_its_steps_one_by_one() {
    let (model, rows) = model_and_rows("0.01");
    let mut whole = trainer(&model);
    let (batch, order) = whole.batches(rows.rows, 0);
    assert!(whole.replicates_epoch(order.len(), batch) && order.len() % batch == 26);
    let mut losses = Vec::new();
    let report = whole
        .fit_epoch_with_progress(&rows, None, None, &mut |_, _, loss| {
            losses.push(loss);
            true
        })
        .expect("trains");

    let mut stepwise = trainer(&model);
    let mut batch_rows = rows.select(&[]);
    let mut expected = Vec::new();
    stepwise.health.as_mut().expect("tracked").finish_epoch();
    for chunk in order.chunks(batch) {
        rows.select_into(chunk, &mut batch_rows);
        let lr = stepwise.lr_of_step(0, stepwise.steps_done, order.len().div_ceil(batch));
        expected.push(stepwise.step_replicated(&batch_rows.x, &batch_rows.y, chunk.len(), lr).expect("steps"));
    }
    let health = stepwise.health.as_mut().expect("tracked").finish_epoch();
    assert_eq!(bits(&whole), bits(&stepwise));
    assert_eq!(
        losses.iter().map(|l| l.to_bits()).collect::<Vec<_>>(),
        expected.iter().map(|l| l.to_bits()).collect::<Vec<_>>()
    );
    assert_eq!(report.health, Some(health));
    assert_eq!(whole.steps_done, stepwise.steps_done);
}

/// Asked to stop at its third step's report, a replicated epoch stops
/// (every replica at the same step, or at its end: the reports come up
/// to sixteen at a time) and the weights go back to where it started; a
/// loss that overflows stops it at that step, also restored.
#[test]
fn a_replicated_epoch_stops_when_asked_and_when_the_loss_overflows() {
    let (model, rows) = model_and_rows("0.01");
    let mut trainer = trainer(&model);
    let before = bits(&trainer);
    let mut heard = 0;
    let stopped = trainer.fit_epoch_with_progress(&rows, None, None, &mut |_, _, _| {
        heard += 1;
        heard < 3
    });
    assert!(matches!(stopped, Err(TrainError::Interrupted { epoch: 1 })), "{stopped:?}");
    assert_eq!(heard, 3, "no step is reported after the one that stopped");
    assert_eq!(bits(&trainer), before);
    // The replicas go on from the restored weights: a whole epoch trains.
    trainer.fit_epoch(&rows, None, None).expect("trains after the stop");
    assert_ne!(bits(&trainer), before);

    let (model, rows) = model_and_rows("1e30");
    let mut trainer = self::trainer(&model);
    let before = bits(&trainer);
    match trainer.fit_epoch(&rows, None, None) {
        Err(TrainError::NonFinite { epoch: 1, step, .. }) => assert!((2..=10).contains(&step), "step {step}"),
        other => panic!("expected a non-finite loss, got {other:?}"),
    }
    assert_eq!(bits(&trainer), before);
}

/// `step_while` on a batch that replicates runs replicated epochs and
/// says how many steps ran: at least the ones `go_on` allowed, with the
/// bits of as many steps taken one by one.
#[test]
fn stepping_while_asked_counts_the_replicated_steps_it_ran() {
    let (model, rows) = model_and_rows("0.01");
    let batch = rows.select(&(0..32).collect::<Vec<_>>());
    let mut whole = trainer(&model);
    assert!(whole.replicates_epoch(32, 32));
    let lr = model.train.lr;
    let ran = whole.step_while(&batch.x, &batch.y, 32, lr, |steps, _| steps < 5).expect("steps");
    assert!(ran >= 5, "{ran} steps");
    assert_eq!(whole.steps_done, ran as u64);

    let mut stepwise = trainer(&model);
    for _ in 0..ran {
        stepwise.step_replicated(&batch.x, &batch.y, 32, lr).expect("steps");
    }
    assert_eq!(bits(&whole), bits(&stepwise));
}

/// Replicas sharing the store compute a dense layer of a million weights
/// together (`plan::team_products`: its forward pass by columns, its
/// weight gradient summed into their parts), with the bits of replicas
/// computing their own products on copies, and their health; odd batches
/// split unevenly.
#[test]
fn replicas_computing_a_large_layer_together_update_it_as_copies_do() {
    let (model, rows) = model_and_rows_of("0.01", "", 4096);
    let (mut shared, mut copies) = (trainer(&model), on_copies(&model));
    for trainer in [&mut shared, &mut copies] {
        for batch in [32, 7] {
            let batch = rows.select(&(0..batch).collect::<Vec<_>>());
            for _ in 0..2 {
                trainer.step_replicated(&batch.x, &batch.y, batch.rows, model.train.lr).expect("steps");
            }
        }
    }
    let sharing = |trainer: &Trainer| trainer.replicas.as_ref().expect("replicated").shared;
    assert!(sharing(&shared) && !sharing(&copies));
    assert_ne!(bits(&shared), bits(&trainer(&model)));
    assert_eq!(bits(&shared), bits(&copies));
    assert_same_health(shared.take_health().expect("tracked"), copies.take_health().expect("tracked"));
}

/// The replicas of a model without batch statistics and with over a
/// million weights and Adam's values share the trainer's store, each
/// writing its part of the update (and each transforming its share of
/// the 64-channel convolutions' Winograd filters): the bits of replicas
/// on copies of their own, and their health, over a replicated epoch and over steps
/// one by one; an epoch stopped midway puts the shared store back as it
/// was. The same model with a small store keeps a copy for each replica.
#[test]
fn replicas_sharing_the_store_update_it_as_copies_do() {
    let (small, _) = model_and_rows_of("0.01", "|> relu |> conv2d(16, kernel = 3, padding = 1)", 32);
    let mut trainer_of_small = Trainer::new(&small, small.train.clone(), Backend::Jit).expect("trainable");
    trainer_of_small.compile_replicas(32).expect("compiles");
    assert!(!trainer_of_small.replicas.as_ref().expect("replicated").shared);
    let convolutions = "|> relu |> conv2d(64, kernel = 3, padding = 1) |> relu |> conv2d(64, kernel = 3, padding = 1)
        |> relu |> conv2d(64, kernel = 3, padding = 1)";
    let (model, rows) = model_and_rows_of("0.01", convolutions, 320);
    let (mut shared, mut copies) = (trainer(&model), on_copies(&model));
    let batch = rows.select(&(0..32).collect::<Vec<_>>());
    let (size, order) = shared.batches(rows.rows, 0);
    assert!(shared.replicates_epoch(order.len(), size));
    let mut epochs = Vec::new();
    for trainer in [&mut shared, &mut copies] {
        epochs.push(trainer.fit_epoch(&rows, None, None).expect("trains").health.expect("tracked"));
        for _ in 0..2 {
            trainer.step_replicated(&batch.x, &batch.y, 32, model.train.lr).expect("steps");
        }
    }
    let sharing = |trainer: &Trainer| trainer.replicas.as_ref().expect("replicated").shared;
    assert!(sharing(&shared) && !sharing(&copies));
    assert_ne!(bits(&shared), bits(&trainer(&model)));
    assert_eq!(bits(&shared), bits(&copies));
    let [shared_epoch, copies_epoch] = <[Health; 2]>::try_from(epochs).expect("two epochs");
    assert_same_health(shared_epoch, copies_epoch);
    assert_same_health(shared.take_health().expect("tracked"), copies.take_health().expect("tracked"));

    let before = bits(&shared);
    let mut heard = 0;
    let stopped = shared.fit_epoch_with_progress(&rows, None, None, &mut |_, _, _| {
        heard += 1;
        heard < 3
    });
    assert!(matches!(stopped, Err(TrainError::Interrupted { .. })), "{stopped:?}");
    assert_eq!(bits(&shared), before);
}
