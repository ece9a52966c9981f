//! Several inputs and outputs, and weighted losses, on real data: inputs
//! read from one row, outputs scored and predicted each on their own, two
//! targets from named columns under one weighted loss, and class weights.

use std::path::Path;

use nnc::data::{self, Dataset, RowSpec};
use nnc::pipeline::check_source;
use nnc::train::{Backend, Trainer};

mod common;

use common::{MODELS, load, nnc, train_bundled};

/// Two inputs from one data row: half of each image through a convolution,
/// the other half through a dense layer, joined before the classifier.
#[test]
fn two_inputs_reach_96_percent() {
    let model = load("two_inputs_digits.nn").models[0].clone();
    assert_eq!(model.inputs.len(), 2);
    let (_, m) = train_bundled(&model);
    assert!(m.accuracy.expect("classifier") >= 0.96, "{m:?}");
}

/// A model with two inputs reads them from one data row, the first input's
/// values first: 40 + 24 of the digits' 64 pixels train, and a row of the
/// wrong width is refused, naming how many values the inputs take together.
#[test]
fn a_model_with_two_inputs_reads_them_from_one_row() {
    let dir = tempfile::tempdir().expect("temp dir");
    let write = |name: &str, (a, b): (usize, usize)| {
        let file = dir.path().join(name);
        std::fs::write(
            &file,
            format!(
                "model m {{\n  input a: [{a}]\n  input b: [{b}]\n  target y: class(10)\n  \
                 concat(a, b) |> dense(10) => o\n  loss = cross_entropy(o, y)\n  \
                 train {{ data = builtin(\"digits\") scale = 16 epochs = 3 optimizer = adam(lr = 0.01) }}\n}}\n"
            ),
        )
        .expect("write");
        file.to_str().expect("utf-8").to_string()
    };
    let fits = write("fits.nn", (40, 24));
    let (code, out, err) = nnc(&["train", &fits, "--quiet"]);
    assert_eq!(code, 0, "{err}");
    let accuracy: f64 =
        out.split("accuracy ").nth(1).and_then(|t| t.split('%').next()).expect("accuracy").parse().expect("number");
    assert!(accuracy > 85.0, "{out}");
    let (code, _, err) = nnc(&["train", &write("wide.nn", (40, 30)), "--quiet"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("70 feature values per row"), "{err}");
}

/// A model with two outputs (`models/digits_multitask.nn`): `eval` scores
/// each one, `predict` writes each one's columns under its name (the
/// classifier's probabilities sum to 1 and its class is their argmax),
/// `explain`, which takes one output, refuses it and says why, and `export`
/// and `build` write it.
#[test]
fn several_outputs_are_each_scored_and_predicted() {
    let dir = tempfile::tempdir().expect("temp dir");
    let weights = dir.path().join("w.safetensors");
    let w = weights.to_str().expect("utf-8");
    let (code, _, err) = nnc(&["train", "models/digits_multitask.nn", "--epochs", "2", "--quiet", "--save", w]);
    assert_eq!(code, 0, "{err}");
    let (code, out, err) = nnc(&["eval", "models/digits_multitask.nn", "--weights", w]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("[logits: loss ") && out.contains("accuracy") && out.contains("[reconstruction: loss "),
        "{out}"
    );
    // The confusion matrix is the classifier's: its diagonal holds the rows its accuracy counts.
    let accuracy: f64 =
        out.split("accuracy ").nth(1).and_then(|a| a.split('%').next()?.parse().ok()).expect("accuracy");
    let counts: Vec<Vec<usize>> = out
        .lines()
        .skip_while(|l| !l.starts_with("confusion matrix"))
        .skip(2)
        .take(10)
        .map(|l| l.split_whitespace().skip(1).map(|n| n.parse().expect("count")).collect())
        .collect();
    assert_eq!(counts.iter().flatten().sum::<usize>(), 359, "{out}");
    let diagonal: usize = (0..10).map(|c| counts[c][c]).sum();
    assert!((100.0 * diagonal as f64 / 359.0 - accuracy).abs() < 0.01, "{out}");
    let (code, out, err) = nnc(&["predict", "models/digits_multitask.nn", "--weights", w, "--input", "builtin:digits"]);
    assert_eq!(code, 0, "{err}");
    let mut lines = out.lines();
    let header: Vec<&str> = lines.next().expect("header").split(',').collect();
    assert_eq!(header.len(), 1 + 10 + 64);
    assert_eq!(
        (header[0], header[10], header[11], header[74]),
        ("logits.class", "logits.p9", "reconstruction.y0", "reconstruction.y63")
    );
    let rows: Vec<Vec<f64>> = lines.map(|l| l.split(',').map(|v| v.parse().expect("number")).collect()).collect();
    assert_eq!(rows.len(), 359);
    for row in &rows {
        let p = &row[1..11];
        assert!((p.iter().sum::<f64>() - 1.0).abs() < 1e-4, "{p:?}");
        let top = p.iter().enumerate().fold(0, |b, (i, v)| if *v > p[b] { i } else { b });
        assert_eq!(row[0], top as f64);
        assert!(row[11..].iter().all(|v| (0.0..=1.0).contains(v)), "sigmoid outputs");
    }
    // explain asks which output; each explains its own scores.
    let explain = |of: &[&str]| {
        let args = [&["explain", "models/digits_multitask.nn", "--weights", w, "--input", "builtin:digits"], of];
        nnc(&args.concat())
    };
    let (code, _, err) = explain(&[]);
    assert!(code != 0 && err.contains("has 2 outputs") && err.contains("--of (`logits`, `reconstruction`)"), "{err}");
    let (code, _, err) = explain(&["--of", "nope"]);
    assert!(code != 0 && err.contains("no output so named"), "{err}");
    for (of, columns) in [("logits", 1..11), ("reconstruction", 11..75)] {
        let (code, out, err) = explain(&["--of", of, "--json"]);
        assert_eq!(code, 0, "{err}");
        let explained: Vec<serde_json::Value> = serde_json::from_str(&out).expect("JSON");
        assert_eq!(explained.len(), rows.len());
        for (e, row) in explained.iter().zip(&rows) {
            // The explained score is the output's highest, read from its own columns.
            let (k, score) = (e["output"].as_u64().expect("index") as usize, e["score"].as_f64().expect("score"));
            let values = &row[columns.clone()];
            assert!(k < values.len() && values.iter().all(|&v| v <= values[k]), "{of}: {k} of {values:?}");
            if of == "reconstruction" {
                // Its scores are the sigmoid's outputs, which predict prints.
                assert!((score - values[k]).abs() < 1e-5, "{score} vs {}", values[k]);
            }
        }
    }
    // What they write is run by onnxruntime and a C program (python/tests/test_onnx.py, tests/library.rs).
    for (command, out) in [("export", "m.onnx"), ("build", "lib")] {
        let out = dir.path().join(out);
        let args = [command, "models/digits_multitask.nn", "--weights", w, "-o", out.to_str().expect("utf-8")];
        let (code, _, err) = nnc(&args);
        assert!(code == 0 && out.exists(), "{command}: {err}");
    }
}
/// A model of the houses' bathrooms (a classifier) and price (in thousands)
/// from their area and rooms, standardized; `extra` adds a line to its
/// layers and a term to its loss, `settings` lines to its training.
fn houses(name: &str, (extra, loss): (&str, &str), data: &str, settings: &str) -> String {
    format!(
        r#"model {name} {{
  input house: [2]
  target bathrooms: class(4)
  target price: real[1]
  house |> dense(16) |> relu => h
  h |> dense(4) => baths
  h |> dense(1) => value
  {extra}
  loss = cross_entropy(baths, bathrooms) + 0.05 * mse(value, price) {loss}
  train {{
    data = csv("{data}", target = ["bathrooms", "price_k"], features = ["area_m2", "rooms"])
    standardize = true
    optimizer = adam(lr = 0.01)
    seed = 1
    {settings}
  }}
}}"#
    )
}

/// Two outputs learning one standardized target, beside a classifier whose
/// target is not standardized: the target's mean and deviation are one pair
/// of buffers (two made the checkpoint's writer panic on a repeated name),
/// and `predict`, `export` and `build` all give both outputs in the target's
/// units (`export` looked for the class target's deviation).
#[test]
fn two_outputs_of_one_standardized_target_share_its_statistics() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/data/houses.csv");
    let model = dir.path().join("twice.nn");
    let (extra, loss) = ("h |> dense(1) => again", "+ 0.05 * mse(again, price)");
    let settings = "standardize_target = true\n    epochs = 30";
    std::fs::write(&model, houses("twice", (extra, loss), &data.display().to_string(), settings)).expect("writes");
    let path = |name: &str| dir.path().join(name).to_str().expect("utf-8").to_string();
    let (model, weights) = (model.to_str().expect("utf-8"), path("w.safetensors"));
    let (code, out, err) = nnc(&["train", model, "--save", &weights]);
    assert_eq!(code, 0, "{err}");
    for output in ["[value: loss", "[again: loss"] {
        let r2: f64 =
            out.split(output).nth(1).and_then(|t| t.split("r² ").nth(1)?.split(']').next()?.parse().ok()).expect("r²");
        assert!(r2 > 0.8, "{out}");
    }
    let names: Vec<String> =
        nnc::checkpoint::load(Path::new(&weights)).expect("loads").tensors.keys().cloned().collect();
    assert_eq!(names.iter().filter(|n| n.starts_with("price.")).count(), 2, "{names:?}");
    std::fs::write(path("rows.csv"), "area_m2,rooms\n65,5\n140,7\n").expect("writes");
    let (code, out, err) = nnc(&["predict", model, "--weights", &weights, "--input", &path("rows.csv")]);
    assert_eq!(code, 0, "{err}");
    for row in out.lines().skip(1) {
        let values: Vec<f64> = row.split(',').map(|v| v.parse().expect("number")).collect();
        // Prices in thousands, as the data has them (not in deviations from their mean).
        assert!(values[5..].iter().all(|&p| (50.0..1000.0).contains(&p)), "{out}");
    }
    for (command, out) in [("export", "m.onnx"), ("build", "lib")] {
        let (code, _, err) = nnc(&[command, model, "--weights", &weights, "-o", &path(out)]);
        assert_eq!(code, 0, "{command}: {err}");
    }
    // Imported back, the graph's three outputs are three predictions with
    // targets of their own, the prices' taken out of standard units: the
    // same predictions, header and all.
    let (code, _, err) = nnc(&["import", &path("m.onnx"), "-o", &path("imported.nn")]);
    assert_eq!(code, 0, "{err}");
    let source = std::fs::read_to_string(path("imported.nn")).expect("the imported model");
    assert!(
        source.contains("standardize_target = true") && source.contains("target again_target: real[1]"),
        "{source}"
    );
    let imported =
        ["predict", &path("imported.nn"), "--weights", &path("imported.safetensors"), "--input", &path("rows.csv")];
    let (code, again, err) = nnc(&imported);
    assert_eq!(code, 0, "{err}");
    assert_eq!(again, out, "{source}");
}

/// Two loss terms on one prediction are two outputs with names of their
/// own (`value`, `value_2`), the same in `predict`'s header, a built
/// library's header and `explain --of`: before, both were `value`, and
/// `--of value` could reach only the first.
#[test]
fn two_terms_on_one_prediction_are_named_apart() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/data/houses.csv");
    let model = dir.path().join("twice.nn");
    let source = houses("twice", ("", "+ 0.01 * mse(value, price)"), &data.display().to_string(), "epochs = 2");
    std::fs::write(&model, source).expect("writes");
    let path = |name: &str| dir.path().join(name).to_str().expect("utf-8").to_string();
    let (model, weights, rows) = (model.to_str().expect("utf-8"), path("w.safetensors"), path("rows.csv"));
    let (code, out, err) = nnc(&["train", model, "--save", &weights]);
    assert!(code == 0 && out.contains("[value: loss") && out.contains("[value_2: loss"), "{out}{err}");
    std::fs::write(&rows, "area_m2,rooms\n65,5\n140,7\n").expect("writes");
    let (code, out_of_predict, err) = nnc(&["predict", model, "--weights", &weights, "--input", &rows]);
    assert_eq!(code, 0, "{err}");
    let header: Vec<&str> = out_of_predict.lines().next().expect("header").split(',').collect();
    assert_eq!(header[5..], ["value.y0", "value_2.y0"]);
    for row in out_of_predict.lines().skip(1) {
        let values: Vec<&str> = row.split(',').collect();
        assert_eq!(values[5], values[6], "one prediction, written for each term: {out_of_predict}");
    }
    let (code, _, err) = nnc(&["build", model, "--weights", &weights, "-o", &path("lib")]);
    assert_eq!(code, 0, "{err}");
    let library_header = std::fs::read_to_string(path("lib/twice.h")).expect("header");
    assert!(library_header.contains(r#"TWICE_OUTPUT_NAMES[3] = {"baths", "value", "value_2"};"#), "{library_header}");
    // Each explains the one prediction's score, as predict wrote it.
    let predicted: Vec<f64> = out_of_predict
        .lines()
        .skip(1)
        .map(|r| r.split(',').nth(6).expect("value_2"))
        .map(|v| v.parse().expect("number"))
        .collect();
    for of in ["value", "value_2"] {
        let (code, out, err) = nnc(&["explain", model, "--weights", &weights, "--input", &rows, "--of", of, "--json"]);
        assert_eq!(code, 0, "{err}");
        let explained: Vec<serde_json::Value> = serde_json::from_str(&out).expect("JSON");
        let scores: Vec<f64> = explained.iter().map(|e| e["score"].as_f64().expect("score")).collect();
        assert!(scores.iter().zip(&predicted).all(|(s, p)| (s - p).abs() < 1e-4), "{of}: {scores:?} vs {predicted:?}");
    }
}

/// Two declared targets read from named CSV columns, two outputs, one summed
/// loss (`0.05 *` the price's squared error in thousands): both outputs
/// learn — the price far better than its mean (R² 0.93), the bathrooms
/// (which area and rooms hardly tell) better than always answering the
/// commonest count — each output is scored on its own, and the summed
/// loss is the weighted sum of the outputs' own losses (class weights included).
#[test]
fn two_targets_from_named_columns_train_under_one_weighted_loss() {
    let source = houses("houses", ("", ""), "data/houses.csv", "batch = 16\n    epochs = 150")
        .replace("cross_entropy(baths, bathrooms)", "cross_entropy(baths, bathrooms, weights = [1, 1, 2, 1])");
    let checked = check_source("houses.nn", &source);
    assert!(!checked.has_errors(), "{:?}", checked.diags);
    let (_, m) = train_bundled(&checked.models[0]);
    let [baths, value] = &m.outputs[..] else { panic!("two outputs: {m:?}") };
    assert_eq!((baths.name.as_str(), value.name.as_str()), ("baths", "value"));
    let (baths, value) = (&baths.metrics, &value.metrics);
    assert!(value.r2.expect("regression") > 0.5, "{m:?}");
    assert!(baths.accuracy.expect("classifier") > 73.0 / 200.0, "{m:?}");
    let summed = baths.loss + 0.05 * value.loss;
    assert!((m.loss - summed).abs() <= 1e-4 * summed, "{} vs {summed}", m.loss);
}
/// Class weights on an imbalanced two-class task — is the digit a 9? about
/// one row in ten — on the real digits: weighing the nines 9 to 1 raises
/// their recall (and costs precision), as a weighted loss should.
#[test]
fn class_weights_raise_the_recall_of_the_rare_class() {
    let digits = load("digits_mlp.nn").models[0].clone();
    let splits = data::load(digits.train.data.as_ref().expect("data"), Path::new(MODELS), &RowSpec::of(&digits))
        .expect("digits load");
    let nines = |mut set: Dataset| {
        set.y.iter_mut().for_each(|y| *y = f32::from(*y == 9.0));
        set.x.iter_mut().for_each(|x| *x /= 16.0);
        set
    };
    let (train, test) = (nines(splits.train), nines(splits.test.expect("test split")));
    let positives = train.y.iter().filter(|&&y| y == 1.0).count();
    assert!(positives * 8 < train.rows, "{positives} nines of {}", train.rows);
    let scores = |weights: &str| {
        let source = format!(
            "model nines {{ input image: [64] target nine: class(2)
               image |> dense(2) => logits  loss = cross_entropy(logits, nine{weights})
               train {{ optimizer = sgd(lr = 0.1) batch = 32 epochs = 6 seed = 1 }} }}"
        );
        let checked = check_source("nines.nn", &source);
        assert!(!checked.has_errors(), "{:?}", checked.diags);
        let model = &checked.models[0];
        let mut trainer = Trainer::new(model, model.train.clone(), Backend::Jit).expect("trainable");
        trainer.fit(&train, None, None, |_| {}).expect("trains");
        trainer.evaluate(&test).expect("evaluates").classes.expect("class scores")
    };
    let (plain, weighted) = (scores(""), scores(", weights = [1, 9]"));
    assert!(
        weighted.recall[1] >= plain.recall[1] + 0.1,
        "recall of nines {} → {}",
        plain.recall[1],
        weighted.recall[1]
    );
    assert!(
        weighted.precision[1] < plain.precision[1],
        "recall {} → {}, precision {} → {}",
        plain.recall[1],
        weighted.recall[1],
        plain.precision[1],
        weighted.precision[1]
    );
}

/// Class weights for more classes than the compiled step keeps are refused
/// when the model is checked, at the list.
#[test]
fn class_weights_for_too_many_classes_are_refused() {
    let weights = vec!["1"; 5000].join(", ");
    let source = format!(
        "model m {{ input x: [4] target y: class(5000) x |> dense(5000) => p
           loss = cross_entropy(p, y, weights = [{weights}]) }}"
    );
    let checked = check_source("m.nn", &source);
    let diag = checked.diags.iter().find(|d| d.code == "nnc::loss::weights").expect("refused");
    assert!(diag.help.as_deref().is_some_and(|h| h.contains("at most 4096 classes")), "{diag:?}");
}

/// `standardize_target` with two regression targets: each target's buffers
/// hold its own columns' mean and deviation (prices in thousands, rooms in
/// ones), and both outputs are predicted in their own units.
#[test]
fn each_standardized_target_keeps_its_own_scale() {
    let source = r#"model houses {
        input house: [2]
        target price: real[1]
        target rooms: real[1]
        house |> dense(8) |> relu => h
        h |> dense(1) => value
        h |> dense(1) => count
        loss = mse(value, price) + mse(count, rooms)
        train {
          data = csv("data/houses.csv", target = ["price_k", "rooms"], features = ["area_m2", "bathrooms"])
          standardize = true
          standardize_target = true
          optimizer = adam(lr = 0.01)
          epochs = 60
        }
      }"#;
    let checked = check_source("houses.nn", source);
    assert!(!checked.has_errors(), "{:?}", checked.diags);
    let (trainer, m) = train_bundled(&checked.models[0]);
    let text = std::fs::read_to_string(Path::new(MODELS).join("data/houses.csv")).expect("data");
    let column = |index: usize| -> Vec<f64> {
        text.lines().skip(1).map(|l| l.split(',').nth(index).expect("cell").parse().expect("number")).collect()
    };
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    let tensors = trainer.tensors();
    let buffer = |name: &str| tensors.iter().find(|(n, _, _)| n == name).map(|(_, _, v)| f64::from(v[0])).expect(name);
    assert!((buffer("price.mean") - mean(&column(3))).abs() < 1e-3, "{}", buffer("price.mean"));
    assert!((buffer("rooms.mean") - mean(&column(1))).abs() < 1e-4, "{}", buffer("rooms.mean"));
    // The price is learnt (area tells it); its error is in thousands, not in standard units.
    let [price, _] = &m.outputs[..] else { panic!("two outputs: {m:?}") };
    assert!(price.metrics.r2.expect("regression") > 0.5 && price.metrics.rmse.expect("rmse") > 5.0, "{m:?}");
}
