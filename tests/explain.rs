//! `nnc explain`: the input gradients it reports are the network's — exact
//! for a linear model, equal to finite differences for an MLP — and its
//! pictures and mistakes are what a user sees.

use std::process::Command;

use nnc::data::Scaler;
use nnc::model::Model;
use nnc::pipeline::check_source;
use nnc::train::{Backend, Trainer};

fn nnc(dir: &std::path::Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_nnc")).args(args).current_dir(dir).output().expect("nnc runs");
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (out.status.code().unwrap_or(-1), text(&out.stdout), text(&out.stderr))
}

const LINEAR: &str = "model m {
  input  x: [3]
  target y: class(4)
  x |> dense(4) => logits
  loss = cross_entropy(logits, y)
  train { data = csv(\"train.csv\") scale = 2 epochs = 3 }
}
";

/// A linear classifier's attribution is weight × scaled input and its
/// gradient weight / scale, for the class asked for; without `--class`,
/// each row's highest score is explained.
#[test]
fn a_linear_models_attribution_is_weight_times_input() {
    let dir = tempfile::tempdir().expect("temp dir");
    let rows: String = (0..12).map(|i| format!("{},{},{},{}\n", i % 5, (i * 3) % 7, (i * 2) % 3, i % 4)).collect();
    std::fs::write(dir.path().join("train.csv"), format!("a,b,c,label\n{rows}")).expect("data");
    std::fs::write(dir.path().join("m.nn"), LINEAR).expect("model");
    let (code, _, err) = nnc(dir.path(), &["train", "m.nn", "--quiet", "--save", "w.safetensors"]);
    assert_eq!(code, 0, "{err}");
    std::fs::write(dir.path().join("rows.csv"), "a,b,c\n4,1,2\n0,6,1\n").expect("rows");
    let weights = nnc::checkpoint::load(&dir.path().join("w.safetensors")).expect("checkpoint");
    let (_, w) = &weights.tensors["dense1.weight"];
    let x = [[4.0f32, 1.0, 2.0], [0.0, 6.0, 1.0]];
    let (code, out, err) = nnc(
        dir.path(),
        &["explain", "m.nn", "--weights", "w.safetensors", "--input", "rows.csv", "--class", "2", "--json"],
    );
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).expect("JSON");
    for (r, row) in x.iter().enumerate() {
        assert_eq!(v[r]["output"], 2);
        for j in 0..3 {
            let (weight, s) = (w[2 * 3 + j], row[j] / 2.0);
            let attribution = v[r]["attribution"][j].as_f64().expect("number");
            let gradient = v[r]["gradient"][j].as_f64().expect("number");
            assert!((attribution - f64::from(weight * s)).abs() < 1e-6, "row {r} feature {j}: {attribution}");
            assert!((gradient - f64::from(weight / 2.0)).abs() < 1e-6, "row {r} feature {j}: {gradient}");
        }
    }
    // More rows than one pass takes (256) go through in chunks, alike.
    let many: String = (0..150).map(|_| "4,1,2\n0,6,1\n").collect();
    std::fs::write(dir.path().join("many.csv"), format!("a,b,c\n{many}")).expect("rows");
    let args = ["explain", "m.nn", "--weights", "w.safetensors", "--input", "many.csv", "--class", "2", "--json"];
    let (code, out, err) = nnc(dir.path(), &args);
    assert_eq!(code, 0, "{err}");
    let all: serde_json::Value = serde_json::from_str(&out).expect("JSON");
    assert_eq!(all.as_array().map(Vec::len), Some(300));
    assert_eq!((&all[298], &all[299]), (&v[0], &v[1]), "the last chunk's rows are explained as the first's");
    // Default: each row's own highest score, and a readable summary.
    let (code, out, err) = nnc(dir.path(), &["explain", "m.nn", "--weights", "w.safetensors", "--input", "rows.csv"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("row 1: output ") && out.contains("gradient × input: "), "{out}");
    // Mistakes: a class the model does not have; a picture of a non-image.
    let (code, _, err) =
        nnc(dir.path(), &["explain", "m.nn", "--weights", "w.safetensors", "--input", "rows.csv", "--class", "4"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("--class 4 is not an output of the model: it has 4 (0 to 3)"), "{err}");
    let (code, _, err) =
        nnc(dir.path(), &["explain", "m.nn", "--weights", "w.safetensors", "--input", "rows.csv", "-o", "x.svg"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("-o draws images, and this model's input [3] is not one"), "{err}");
}

/// For the digits MLP (relu, scaled inputs) the gradient of the top score
/// matches central finite differences of the compiled forward pass, and
/// the picture has one image and one heatmap per row.
#[test]
fn an_mlps_input_gradient_matches_finite_differences() {
    let source = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/models/digits_mlp.nn")).expect("model");
    let checked = check_source("digits_mlp.nn", &source);
    let model = &checked.models[0];
    let mut config = model.train.clone();
    config.epochs = 2;
    let data = nnc::data::load(
        model.train.data.as_ref().expect("data"),
        std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/models")),
        &nnc::data::RowSpec::of(model),
    )
    .expect("digits");
    let scaler = Scaler::Scale(16.0);
    let mut train = data.train.clone();
    scaler.apply(&mut train);
    let mut trainer = Trainer::new(model, config, Backend::Jit).expect("trainable");
    trainer.fit(&train, None, None, |_| {}).expect("trains");
    let mut runtime: Model = trainer.model;
    let x: Vec<f32> = data.test.expect("test split").x[..64].to_vec();
    let explained = nnc::explain::explain(&mut runtime, &scaler, (&x, 1), (None, None)).expect("explains");
    let e = &explained[0];
    let score = |runtime: &mut Model, raw: &[f32]| {
        let scaled: Vec<f32> = raw.iter().map(|v| v / 16.0).collect();
        runtime.predict(&scaled, 1).expect("runs")[e.output]
    };
    let largest = e.gradient.iter().fold(0.0f32, |m, g| m.max(g.abs()));
    assert!(largest > 0.0);
    // Central differences of a piecewise-linear network are exact unless a
    // relu flips inside the step, so each feature gets two step sizes (of
    // raw grey levels 0..16) and the closer one counts.
    for j in 0..64 {
        let mut numeric = |h: f32| {
            let (mut up, mut down) = (x.clone(), x.clone());
            up[j] += h;
            down[j] -= h;
            (score(&mut runtime, &up) - score(&mut runtime, &down)) / (2.0 * h)
        };
        let error =
            [0.01f32, 0.004].map(|h| (numeric(h) - e.gradient[j]).abs()).into_iter().fold(f32::INFINITY, f32::min);
        assert!(error <= 2e-3 * largest, "feature {j}: off by {error} (largest gradient {largest})");
    }
    let svg = nnc::explain::heatmaps(&x, &explained, (8, 8)).expect("svg");
    assert!(svg.starts_with("<svg"));
    assert_eq!(svg.matches("<rect").count(), 1 + 2 * 64, "a background, then 64 cells of image and of heatmap");
    // One picture holds 2^20 cells: 8,192 rows of 8×8, a 224×224 image's 10.
    assert!(nnc::explain::check_picture(8192, (8, 8)).is_ok());
    let err = nnc::explain::check_picture(8193, (8, 8)).expect_err("too many");
    assert!(err.contains("8193 rows") && err.contains("at most 8192 rows"), "{err}");
    let err = nnc::explain::check_picture(usize::MAX, (224, 224)).expect_err("too many");
    assert!(err.contains("at most 10 rows"), "{err}");
}
