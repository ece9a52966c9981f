//! What `nnc train` warns of as it trains: overfitting (and early
//! stopping at the best epoch), vanishing and exploding gradients, dead
//! units; each warned of where it happens and not where it does not.

mod common;

use common::nnc;

/// A wide MLP on 72 training digits keeps lowering its training loss while
/// its validation loss climbs: `train` warns of overfitting once, names the
/// best epoch, and `--metrics-json` records the gap. The bundled MLP, whose
/// test loss only wobbles on its way down, gets no warning.
#[test]
fn overfitting_is_reported_and_a_healthy_run_is_not() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("overfit.nn");
    std::fs::write(
        &file,
        "model overfit {\n  input image: [64]\n  target digit: class(10)\n  image |> dense(512) |> relu |> dense(10) => logits\n  \
         loss = cross_entropy(logits, digit)\n  train {\n    data = builtin(\"digits\")\n    scale = 16\n    \
         optimizer = adam(lr = 0.003)\n    batch = 16\n    epochs = 80\n    validation = 0.95\n    seed = 1\n  }\n}\n",
    )
    .expect("write");
    let (metrics, plot) = (dir.path().join("metrics.json"), dir.path().join("curves.svg"));
    let path = |p: &std::path::Path| p.to_str().expect("utf-8").to_string();
    let args = ["train", &path(&file), "--quiet", "--metrics-json", &path(&metrics), "--plot", &path(&plot)];
    let (code, _, err) = nnc(&args);
    assert_eq!(code, 0, "{err}");
    assert_eq!(err.matches("warning: overfitting").count(), 1, "{err}");
    assert!(err.contains("mean validation loss of epochs") && err.contains("add `l2` or `dropout`"), "{err}");
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&metrics).expect("read")).expect("JSON");
    let gap = &v["gap"];
    assert_eq!(gap["held_out"], "validation", "{v}");
    let best = gap["best_epoch"].as_u64().expect("best epoch");
    assert!((2..60).contains(&best), "{gap}");
    let held_out = &gap["overfitting"]["held_out_loss"];
    assert!(held_out[1].as_f64() > held_out[0].as_f64(), "{gap}");
    let svg = std::fs::read_to_string(&plot).expect("plot");
    assert!(svg.contains(&format!("best held-out loss (epoch {best})")), "the plot marks the best epoch");
    let (code, _, err) = nnc(&["train", "models/digits_mlp.nn", "--quiet"]);
    assert_eq!(code, 0, "{err}");
    assert!(!err.contains("overfitting"), "{err}");
}

/// Early stopping: the overfitting MLP with `patience = 5` stops five
/// epochs after its best validation loss, keeps and saves that epoch's
/// weights (the saved checkpoint evaluates to the final line's numbers);
/// a run that ends before patience runs out keeps its best epoch too.
#[test]
fn patience_stops_early_and_keeps_the_best_epoch() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("early.nn");
    std::fs::write(
        &file,
        "model early {\n  input image: [64]\n  target digit: class(10)\n  image |> dense(512) |> relu |> dense(10) => logits\n  \
         loss = cross_entropy(logits, digit)\n  train {\n    data = builtin(\"digits\")\n    scale = 16\n    \
         optimizer = adam(lr = 0.003)\n    batch = 16\n    epochs = 80\n    validation = 0.95\n    patience = 5\n    seed = 1\n  }\n}\n",
    )
    .expect("write");
    let path = |p: &std::path::Path| p.to_str().expect("utf-8").to_string();
    let (metrics, weights) = (dir.path().join("m.json"), dir.path().join("w.safetensors"));
    let (code, out, err) = nnc(&["train", &path(&file), "--metrics-json", &path(&metrics), "--save", &path(&weights)]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&metrics).expect("read")).expect("JSON");
    let losses: Vec<f64> = v["epochs"]
        .as_array()
        .expect("epochs")
        .iter()
        .map(|e| e["validation"]["loss"].as_f64().expect("loss"))
        .collect();
    let ran = losses.len();
    let best = 1 + (0..ran).fold(0, |b, i| if losses[i] < losses[b] { i } else { b });
    assert!(ran < 80 && ran == best + 5, "stopped after {ran} epochs, best {best}: {losses:?}");
    assert!(
        out.contains(&format!(
            "early stopping after epoch {ran}: the validation loss has not improved for 5 epochs; keeping epoch {best}'s weights"
        )),
        "{out}"
    );
    let last = out.lines().last().expect("final line");
    let (code, evaluated, err) = nnc(&["eval", &path(&file), "--weights", &path(&weights)]);
    assert_eq!(code, 0, "{err}");
    let first = evaluated.lines().next().expect("metrics").trim_end_matches(')');
    assert!(last.starts_with(&format!("test: {first}")), "the checkpoint holds the kept weights: {last} / {first}");
    // Patience never runs out in 20 epochs: the best epoch is kept at the end.
    let patient = std::fs::read_to_string(&file).expect("read").replace("patience = 5", "patience = 100");
    std::fs::write(&file, patient).expect("write");
    let (code, out, err) = nnc(&["train", &path(&file), "--epochs", "20"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("best epoch: the validation loss did not improve in the last"), "{out}");
}

/// Ten sigmoid layers on digits: training reports a first-layer gradient
/// norm over 100× below the last layer's and warns that gradients vanish;
/// the same stack with relu does not. A full-batch regression at a huge
/// learning rate warns that gradients explode before it diverges. Relu
/// units killed by a harsh learning rate are named.
#[test]
fn training_warns_of_vanishing_and_exploding_gradients_and_dead_units() {
    let dir = tempfile::tempdir().expect("temp dir");
    let metrics = dir.path().join("metrics.json");
    let deep = std::fs::read_to_string("tests/diagnostics/vanishing_gradients.nn").expect("model");
    let run = |name: &str, model: &str, extra: &[&str]| {
        let file = dir.path().join(name);
        std::fs::write(&file, model).expect("write");
        let mut args = vec!["train", file.to_str().expect("utf-8"), "--quiet"];
        args.extend(extra);
        nnc(&args)
    };
    let plot = dir.path().join("deep.svg");
    let json = ["--data", "builtin:digits", "--epochs", "4", "--metrics-json", metrics.to_str().expect("utf-8")];
    let (code, _, err) = run("deep.nn", &deep, &[&json[..], &["--plot", plot.to_str().expect("utf-8")]].concat());
    assert_eq!(code, 0, "{err}");
    let svg = std::fs::read_to_string(&plot).expect("plot");
    assert!(svg.contains("log₁₀ gradient norm") && svg.contains("dense11.weight"), "a panel of gradient norms");
    assert_eq!(err.matches("warning: vanishing gradients: `dense1.weight`").count(), 1, "{err}");
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&metrics).expect("read")).expect("JSON");
    let health = v["epochs"][3]["health"]["params"].as_array().expect("health per epoch").clone();
    let norm = |name: &str| health.iter().find(|p| p["name"] == name).and_then(|p| p["grad_norm"].as_f64());
    let (first, last) = (norm("dense1.weight").expect("first"), norm("dense11.weight").expect("last"));
    assert!(first > 0.0 && first * 100.0 < last, "{first} vs {last}");
    let (code, _, err) = run("relu.nn", &deep.replace("sigmoid }", "relu }"), &json);
    assert_eq!(code, 0, "{err}");
    assert!(!err.contains("vanishing"), "{err}");

    let diabetes = std::fs::read_to_string("models/diabetes.nn").expect("model");
    assert!(diabetes.contains("gd(lr = 0.05)"), "the model to edit");
    let (code, _, err) = run("hot.nn", &diabetes.replace("gd(lr = 0.05)", "gd(lr = 1.0)"), &["--epochs", "60"]);
    assert_eq!(code, 1, "{err}");
    let (warned, diverged) = (err.find("warning: exploding gradients: `dense1.weight`"), err.find("training diverged"));
    assert!(warned.is_some() && warned < diverged, "the warning comes first: {err}");
    assert!(err.contains("add `clip_norm`"), "{err}");

    // Raw grey levels 0..16 at sgd(lr = 1): after one epoch nearly every
    // relu unit is dead; the bundled settings (scaled, Adam) keep them alive.
    let digits = std::fs::read_to_string("models/digits_mlp.nn").expect("model");
    let harsh = digits.replace("adam(lr = 0.003)", "sgd(lr = 1)").replace("scale = 16", "scale = 1");
    assert_ne!(harsh, digits, "the model to edit");
    let (code, _, err) = run("dead.nn", &harsh, &["--epochs", "3", "--metrics-json", metrics.to_str().expect("utf-8")]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(err.matches("warning: dead units: ").count(), 1, "{err}");
    assert!(err.contains("of `relu1`'s units output 0 for every training row"), "{err}");
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&metrics).expect("read")).expect("JSON");
    let dead = v["epochs"][2]["health"]["activations"][0]["dead_fraction"].as_f64().expect("dead fraction");
    assert!(dead > 0.5, "{v}");
    let (code, _, err) = run("alive.nn", &digits, &["--epochs", "3"]);
    assert_eq!(code, 0, "{err}");
    assert!(!err.contains("warning"), "{err}");
}
