//! The `nnc` binary: exit codes and output formats.

use std::process::Command;

mod common;

use common::nnc;

#[test]
fn check_exit_codes() {
    assert_eq!(nnc(&["check", "models/lenet.nn"]).0, 0);
    let (code, _, err) = nnc(&["check", "tests/diagnostics/unknown_layer.nn"]);
    assert_eq!(code, 1);
    assert!(err.contains("did you mean `relu`?"), "{err}");
    let (code, _, err) = nnc(&["check", "no/such/file.nn"]);
    assert_eq!(code, 2);
    assert!(err.contains("no/such/file.nn"), "{err}");
    assert_eq!(nnc(&["check"]).0, 2);
}

#[test]
fn warnings_alone_exit_zero() {
    let (code, _, err) = nnc(&["check", "tests/diagnostics/double_softmax.nn"]);
    assert_eq!(code, 0);
    assert!(err.contains("nnc::lint::double_softmax"), "{err}");
}

#[test]
fn check_json_is_machine_readable() {
    let (code, out, _) = nnc(&["check", "--format", "json", "tests/diagnostics/hyperparameters_out_of_range.nn"]);
    assert_eq!(code, 1);
    let v: serde_json::Value = serde_json::from_str(&out).expect("valid JSON");
    assert_eq!(v.as_array().map(Vec::len), Some(5));
}

#[test]
fn summary_json_reports_totals() {
    let (code, out, _) = nnc(&["summary", "--json", "models/mnist_mlp.nn"]);
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(&out).expect("valid JSON");
    assert_eq!(v["total_params"], 101_770);
}

#[test]
fn plot_draws_one_point_per_epoch_and_curve() {
    let dir = tempfile::tempdir().expect("temp dir");
    let svg = dir.path().join("curves.svg");
    let (code, _, err) =
        nnc(&["train", "models/digits_mlp.nn", "--epochs", "3", "--quiet", "--plot", svg.to_str().expect("utf-8")]);
    assert_eq!(code, 0, "{err}");
    let text = std::fs::read_to_string(&svg).expect("plot written");
    assert!(text.starts_with("<svg"), "{text}");
    let needles = [
        "digits_mlp",
        "train",
        "test",
        "loss",
        "accuracy (%)",
        "epoch",
        "log₁₀ gradient norm",
        "activation mean ± std",
        "dead (relu), saturated (σ, tanh) or clipped units (%)",
    ];
    for needle in needles {
        assert!(text.contains(needle), "`{needle}` missing from the plot");
    }
    // Train and test loss, test accuracy, the gradient norms of the two
    // weight matrices, relu1's mean output and its dead units: 7 curves × 3
    // epochs; the mean's band is one polygon.
    assert_eq!(text.matches("<circle").count(), 21);
    assert_eq!(text.matches("<polygon").count(), 1);
}

#[test]
fn plot_refuses_formats_it_cannot_write_before_training() {
    let dir = tempfile::tempdir().expect("temp dir");
    let png = dir.path().join("curves.png");
    let (code, out, err) = nnc(&["train", "models/digits_mlp.nn", "--plot", png.to_str().expect("utf-8")]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains(".svg"), "{err}");
    assert!(!out.contains("epoch"), "training must not start: {out}");
    assert!(!png.exists());
}

/// Golden file: the rendered report of a diverging run.
#[test]
fn divergence_points_at_the_first_non_finite_value() {
    let (code, _, err) = nnc(&["train", "tests/runtime/diverges.nn", "--quiet"]);
    assert_eq!(code, 1, "{err}");
    // The growing gradients were announced first; their figures are not the
    // golden file's business.
    let (warnings, report): (Vec<&str>, Vec<&str>) = err.lines().partition(|l| l.starts_with("warning: "));
    assert!(warnings.iter().any(|w| w.starts_with("warning: exploding gradients")), "{err}");
    insta::assert_snapshot!(report.join("\n") + "\n");
}

/// Paths a model names are relative to its own folder (or `--data-dir`),
/// whatever the working directory, for `train` and `eval` alike.
#[test]
fn model_data_paths_resolve_by_one_rule() {
    let run = |args: &[&str], dir: &std::path::Path| {
        let out = Command::new(env!("CARGO_BIN_EXE_nnc")).args(args).current_dir(dir).output().expect("nnc runs");
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let models = concat!(env!("CARGO_MANIFEST_DIR"), "/models");
    let logistic = format!("{models}/logistic.nn");
    let elsewhere = tempfile::tempdir().expect("temp dir");
    let cwd = elsewhere.path();
    run(&["train", &logistic, "--quiet", "--epochs", "2", "--save", "w.safetensors"], cwd);
    let eval = run(&["eval", &logistic, "--weights", "w.safetensors"], cwd);
    assert!(eval.contains("accuracy"), "{eval}");
    // The same relative paths under another folder, named by --data-dir.
    let copy = cwd.join("copy");
    std::fs::create_dir_all(copy.join("data")).expect("mkdir");
    for file in ["digits01_train.csv", "digits01_test.csv"] {
        std::fs::copy(format!("{models}/data/{file}"), copy.join("data").join(file)).expect("copy");
    }
    let eval = run(&["eval", &logistic, "--weights", "w.safetensors", "--data-dir", "copy"], cwd);
    assert!(eval.contains("accuracy"), "{eval}");
    std::fs::remove_file(copy.join("data/digits01_test.csv")).expect("remove");
    let out = Command::new(env!("CARGO_BIN_EXE_nnc"))
        .args(["eval", &logistic, "--weights", "w.safetensors", "--data-dir", "copy"])
        .current_dir(cwd)
        .output()
        .expect("nnc runs");
    assert_eq!(out.status.code(), Some(1), "a missing file under --data-dir is an error");
}

#[test]
fn check_batch_needs_a_stage_to_print() {
    let (code, _, err) = nnc(&["check", "models/lenet.nn", "--batch", "4"]);
    assert_eq!(code, 2);
    assert!(err.contains("--emit"), "{err}");
    let (code, out, _) = nnc(&["check", "models/lenet.nn", "--emit", "plan", "--batch", "4"]);
    assert_eq!(code, 0);
    assert!(!out.is_empty());
}

/// `--emit clif` prints the step (five pointer arguments) and, after it,
/// each large element-wise loop compiled as a function run in parts
/// (seven: the five and its range), as the JIT compiles them.
#[test]
fn check_emits_the_step_and_its_parts_as_clif() {
    let (code, out, err) = nnc(&["check", "models/mlp_wide.nn", "--emit", "clif"]);
    assert_eq!(code, 0, "{err}");
    let functions: Vec<&str> = out.lines().filter(|line| line.starts_with("function ")).collect();
    assert!(functions[0].contains("(i64, i64, i64, i64, i64) system_v"), "{}", functions[0]);
    let parts = out.lines().filter(|line| line.starts_with("; step_part")).count();
    assert!(parts >= 2, "the momentum updates of the two 1024-wide layers run in parts: {parts}");
    assert_eq!(functions.len(), 1 + parts);
    assert!(functions[1..].iter().all(|f| f.contains("(i64, i64, i64, i64, i64, i64, i64) system_v")));
}

#[test]
fn check_emits_the_chosen_model() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("two.nn");
    std::fs::write(
        &file,
        "model a { input x: [4] target y: class(3)\n x |> dense(3) => p loss = cross_entropy(p, y) }\n\
         model b { input x: [4] target y: class(3)\n x |> dense(5) |> relu |> dense(3) => p loss = cross_entropy(p, y) }\n",
    )
    .expect("write");
    let file = file.to_str().expect("utf-8 path");
    let (code, out, _) = nnc(&["check", file, "--emit", "ir", "--model", "b"]);
    assert_eq!(code, 0);
    assert!(out.contains("dense1.weight [5, 4]"), "{out}");
    let (code, _, err) = nnc(&["check", file, "--emit", "ir", "--model", "c"]);
    assert_eq!(code, 2);
    assert!(err.contains("no model `c`") && err.contains("a, b"), "{err}");
}

/// A step that needs more memory than `--max-memory` allows is refused
/// before anything is allocated, at the layer that takes most — for the
/// model's batch, a `--batch` flag and `batch = full` alike.
#[test]
fn max_memory_refuses_a_step_that_does_not_fit() {
    let (code, _, err) = nnc(&["bench", "models/lenet.nn", "--batch", "4096", "--max-memory", "64M"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("training this model at batch 4096 needs about"), "{err}");
    assert!(err.contains("the 64.0 MiB `--max-memory`") && err.contains("`conv2d1` alone takes"), "{err}");
    let (code, _, err) = nnc(&["train", "models/digits_mlp.nn", "--max-memory", "100K", "--quiet"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("at batch 32 needs about 117.7 KiB") && err.contains("100.0 KiB"), "{err}");
    // The limit holds for a batch known only from the data: all 1,438 digits rows.
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("full.nn");
    let model = std::fs::read_to_string("models/digits_mlp.nn").expect("model");
    assert!(model.contains("batch = 32"), "the model to edit: {model}");
    std::fs::write(&file, model.replace("batch = 32", "batch = full")).expect("write");
    let (code, _, err) = nnc(&["train", file.to_str().expect("utf-8"), "--max-memory", "1M", "--quiet"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("at batch 1438 needs about"), "{err}");
    // Within the limit it trains; bad sizes are usage errors.
    let (code, out, err) = nnc(&["train", "models/digits_mlp.nn", "--max-memory", "1GiB", "--epochs", "1", "--quiet"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("accuracy"), "{out}");
    for bad in ["12X", "0", "-1G", "nan", "G"] {
        let (code, _, err) = nnc(&["bench", "models/lenet.nn", &format!("--max-memory={bad}")]);
        assert_eq!(code, 2, "{bad}: {err}");
        assert!(err.contains("--max-memory"), "{bad}: {err}");
    }
}

/// `bench --json` reports the median step and its 99th percentile beside
/// the throughput, timed one step at a time over the same repeats: the
/// median step is about the batch over the samples per second, for steps
/// taken one by one and for a CNN's replicated steps, which the main
/// thread hears in bursts (its median step read 0.00 ms).
#[test]
fn bench_times_each_step() {
    for (model, seconds) in [("models/digits_mlp.nn", "0.1"), ("models/digits_cnn.nn", "1")] {
        let (code, out, err) = nnc(&["bench", model, "--seconds", seconds, "--json"]);
        assert_eq!(code, 0, "{err}");
        let v: serde_json::Value = serde_json::from_str(&out).expect("valid JSON");
        let number = |key: &str| v[key].as_f64().unwrap_or_else(|| panic!("{key} in {out}"));
        let (step, p99) = (number("train_step_ms"), number("train_step_p99_ms"));
        assert!(step > 0.0 && p99 >= step, "{model}: {out}");
        let from_throughput = number("batch") / number("train_samples_per_s") * 1e3;
        assert!((0.25..4.0).contains(&(step / from_throughput)), "{model}: {step} ms against {from_throughput} ms");
    }
}

/// `bench --kernels` times every kernel of the training step: each
/// product of the plan `check --emit plan` prints is listed, in the plan's
/// order, with a median over at least ten steps; without the flag there is
/// no list. With `--health` the step is `nnc train`'s, its health sums in
/// its loops.
#[test]
fn bench_kernels_times_each_kernel_of_the_step() {
    let (code, out, err) = nnc(&["bench", "models/digits_mlp.nn", "--seconds", "0.1", "--json", "--kernels"]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).expect("valid JSON");
    let kernels = v["kernels"].as_array().unwrap_or_else(|| panic!("kernels in {out}"));
    let batch = v["batch"].as_u64().expect("batch").to_string();
    let (code, plan, err) = nnc(&["check", "models/digits_mlp.nn", "--emit", "plan", "--batch", &batch]);
    assert_eq!(code, 0, "{err}");
    let products: Vec<&str> = plan.lines().filter(|l| l.starts_with("matmul")).collect();
    let timed: Vec<&str> =
        kernels.iter().filter_map(|k| k["kernel"].as_str()).filter(|k| k.starts_with("matmul")).collect();
    assert!(!products.is_empty() && timed == products, "{timed:?} against the plan's {products:?}");
    for k in kernels {
        let (us, runs) = (k["median_us"].as_f64().expect("median"), k["runs"].as_u64().expect("runs"));
        assert!(us.is_finite() && us >= 0.0 && runs >= 10, "{k}");
        // A product's multiply-adds from its shapes, `[m×k by k×n]`; none for other kernels.
        let label = k["kernel"].as_str().expect("kernel");
        let shapes = label.split_once('[').filter(|_| label.starts_with("matmul")).map(|(_, s)| s);
        let expected = shapes.map_or(0, |s| {
            let d: Vec<u64> = s.trim_end_matches(']').split([' ', '×']).filter_map(|d| d.parse().ok()).collect();
            d[0] * d[1] * d[3]
        });
        assert_eq!(k["multiply_adds"].as_u64(), Some(expected), "{k}");
    }
    let (code, out, err) = nnc(&["bench", "models/digits_mlp.nn", "--seconds", "0.1", "--json"]);
    assert_eq!(code, 0, "{err}");
    assert!(!out.contains("\"kernels\""), "{out}");
    // With --health the step observes what `nnc train` reports: ‖g‖², ‖Δw‖²
    // and ‖w′‖² of each of the four parameters and the relu layer's
    // squares, each summed inside the element-wise loop that computes or
    // reads what it sums (no sum of squares is a kernel of its own).
    let labels = |v: &serde_json::Value| -> Vec<String> {
        v["kernels"].as_array().into_iter().flatten().filter_map(|k| k["kernel"].as_str().map(String::from)).collect()
    };
    let sums = |labels: &[String], kind: &str| -> usize {
        labels.iter().filter(|k| k.starts_with(kind)).map(|k| k.matches("sum_squares").count()).sum()
    };
    assert_eq!(sums(&labels(&v), ""), 0, "{:?}", labels(&v));
    let args = ["bench", "models/digits_mlp.nn", "--seconds", "0.1", "--json", "--kernels", "--health"];
    let (code, out, err) = nnc(&args);
    assert_eq!(code, 0, "{err}");
    let observed = labels(&serde_json::from_str(&out).expect("valid JSON"));
    assert_eq!((sums(&observed, ""), sums(&observed, "elementwise")), (3 * 4 + 1, 3 * 4 + 1), "{observed:?}");
    let (code, _, err) = nnc(&["bench", "models/xor.nn", "--backend", "interp", "--kernels"]);
    assert_eq!(code, 2, "the interpreter has no kernels to time: {err}");
    assert!(err.contains("--kernels"), "{err}");
}

/// `bench --foreign-max` takes 0.01 to 1024 cores.
#[test]
fn bench_foreign_max_is_bounded() {
    for bad in ["0", "-1", "nan", "inf", "2000", "x"] {
        let (code, _, err) = nnc(&["bench", "models/xor.nn", &format!("--foreign-max={bad}")]);
        assert_eq!(code, 2, "{bad}: {err}");
        assert!(err.contains("expected cores from 0.01 to 1024"), "{bad}: {err}");
    }
}

/// `bench --seconds` takes 0.1 to 3600 (1e12 ran for ever; a negative value
/// was quietly raised).
#[test]
fn bench_seconds_are_bounded() {
    for bad in ["1e12", "-1", "0", "nan", "inf"] {
        let (code, _, err) = nnc(&["bench", "models/xor.nn", &format!("--seconds={bad}")]);
        assert_eq!(code, 2, "{bad}: {err}");
        assert!(err.contains("expected seconds from 0.1 to 3600"), "{bad}: {err}");
    }
}

/// A temporary folder with the digits MLP's weights after `epochs` epochs.
fn trained_digits(epochs: usize) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().expect("temp dir");
    let weights = dir.path().join("w.safetensors");
    let epochs = epochs.to_string();
    let args = ["train", "models/digits_mlp.nn", "--epochs", &epochs, "--quiet", "--save"];
    let (code, _, err) = nnc(&[&args[..], &[weights.to_str().expect("utf-8")]].concat());
    assert_eq!(code, 0, "{err}");
    (dir, weights)
}

/// `eval` prints precision, recall and F1 per class that agree with its own
/// confusion matrix, and their macro averages (the final line's macro F1).
#[test]
fn eval_scores_every_class_as_its_confusion_matrix_says() {
    let (_dir, weights) = trained_digits(2);
    let w = weights.to_str().expect("utf-8");
    let (code, out, err) = nnc(&["eval", "models/digits_mlp.nn", "--weights", w]);
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    let matrix_at = lines.iter().position(|l| l.starts_with("confusion matrix")).expect("a confusion matrix");
    let counts: Vec<Vec<f64>> = lines[matrix_at + 2..matrix_at + 12]
        .iter()
        .map(|l| l.split_whitespace().skip(1).map(|n| n.parse().expect("count")).collect())
        .collect();
    let table_at = lines.iter().position(|l| l.trim_start().starts_with("class")).expect("a class table");
    let mut f1s = Vec::new();
    for c in 0..10 {
        let row: Vec<f64> = lines[table_at + 1 + c].split_whitespace().map(|v| v.parse().expect("number")).collect();
        let hits = counts[c][c];
        let predicted: f64 = counts.iter().map(|r| r[c]).sum();
        let actual: f64 = counts[c].iter().sum();
        let (p, r) = (hits / predicted, hits / actual);
        let f1 = 2.0 * p * r / (p + r);
        for (shown, want) in row[1..].iter().zip([p, r, f1]) {
            assert!((shown - want).abs() < 6e-5, "class {c}: {row:?} vs {p} {r} {f1}");
        }
        f1s.push(f1);
    }
    let macro_f1 = f1s.iter().sum::<f64>() / 10.0;
    assert!(lines[table_at + 11].starts_with("macro"), "{out}");
    assert!(lines[0].contains(&format!("macro F1 {macro_f1:.4}")), "{}", lines[0]);
}

/// `predict --logits` writes the class scores whose softmax is what
/// `--full-precision` writes, and the default output is the same to 6
/// decimals.
#[test]
fn predict_writes_logits_or_probabilities_in_full() {
    let (dir, weights) = trained_digits(1);
    let w = weights.to_str().expect("utf-8");
    let rows = dir.path().join("rows.csv");
    let header: Vec<String> = (0..64).map(|j| format!("p{j}")).collect();
    let body: Vec<String> =
        (0..5).map(|r| (0..64).map(|j| ((r * 7 + j) % 17).to_string()).collect::<Vec<_>>().join(",")).collect();
    std::fs::write(&rows, format!("{}\n{}\n", header.join(","), body.join("\n"))).expect("writes");
    let predict = |flag: Option<&str>| {
        let mut args =
            vec!["predict", "models/digits_mlp.nn", "--weights", w, "--input", rows.to_str().expect("utf-8")];
        args.extend(flag);
        let (code, out, err) = nnc(&args);
        assert_eq!(code, 0, "{err}");
        let mut lines = out.lines();
        let header = lines.next().expect("header").to_string();
        let values: Vec<Vec<f64>> = lines.map(|l| l.split(',').map(|v| v.parse().expect("number")).collect()).collect();
        (header, values)
    };
    let (logit_header, logits) = predict(Some("--logits"));
    let (full_header, full) = predict(Some("--full-precision"));
    let (_, rounded) = predict(None);
    assert!(
        logit_header.starts_with("class,s0,") && full_header.starts_with("class,p0,"),
        "{logit_header} {full_header}"
    );
    assert_eq!(logits.len(), 5);
    for ((s, p), r) in logits.iter().zip(&full).zip(&rounded) {
        let top = s[1..].iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let total: f64 = s[1..].iter().map(|v| (v - top).exp()).sum();
        for (k, score) in s[1..].iter().enumerate() {
            assert!(((score - top).exp() / total - p[k + 1]).abs() < 1e-6, "{s:?} {p:?}");
            assert!((p[k + 1] - r[k + 1]).abs() <= 5.1e-7, "{p:?} {r:?}");
        }
        let argmax = s[1..].iter().enumerate().fold(0, |b, (i, v)| if *v > s[1 + b] { i } else { b });
        assert_eq!((s[0], p[0], r[0]), (argmax as f64, argmax as f64, argmax as f64));
    }
}

/// `--epochs 0 --save` writes the seed's initial weights (those a trainer
/// starts from), so another framework can start from the same place; a
/// second seed gives other weights.
#[test]
fn zero_epochs_save_the_initial_weights() {
    let dir = tempfile::tempdir().expect("temp dir");
    let saved = |seed: &str| {
        let path = dir.path().join(format!("init{seed}.safetensors"));
        let args = ["train", "models/digits_mlp.nn", "--epochs", "0", "--seed", seed, "--quiet", "--save"];
        let (code, _, err) = nnc(&[&args[..], &[path.to_str().expect("utf-8")]].concat());
        assert_eq!(code, 0, "{err}");
        nnc::checkpoint::load(&path).expect("loads").tensors
    };
    let source = std::fs::read_to_string("models/digits_mlp.nn").expect("readable");
    let checked = nnc::pipeline::check_source("digits_mlp.nn", &source);
    let model = &checked.models[0];
    let config = nnc::check::TrainConfig { seed: 11, ..model.train.clone() };
    let trainer = nnc::train::Trainer::new(model, config, nnc::exec::Backend::Jit).expect("trainable");
    let initial = saved("11");
    for (name, _, values) in trainer.tensors() {
        assert_eq!(initial[&name].1, values, "{name}");
    }
    assert_ne!(saved("12")["dense1.weight"].1, initial["dense1.weight"].1);
}

/// Started by an MPI launcher (its environment says so) but built without
/// MPI, `train` says that each process trains alone, and still trains.
#[cfg(not(feature = "mpi"))]
#[test]
fn train_under_mpirun_without_mpi_says_so() {
    let out = Command::new(env!("CARGO_BIN_EXE_nnc"))
        .args(["train", "models/xor.nn", "--epochs", "1", "--quiet"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("OMPI_COMM_WORLD_SIZE", "2")
        .output()
        .expect("nnc runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("built without MPI: each process trains alone"), "{stderr}");
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("test: "));
}

/// `eval` and `predict` read every source `train` does: the model's own
/// test split, `builtin:NAME`, CSV on standard input (gzipped here), and
/// IDX images (with `--labels` for `eval`) — the same rows give the same
/// metrics and the same predictions whichever way they come in.
#[test]
fn eval_and_predict_read_every_data_source() {
    use std::io::{Read, Write};
    let (dir, weights) = trained_digits(1);
    let w = weights.to_str().expect("utf-8");
    let test_gz = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("models/data/digits_test.csv.gz");
    let gz = std::fs::read(&test_gz).expect("test split");
    let piped = |args: &[&str], stdin: &[u8]| {
        let mut child = Command::new(env!("CARGO_BIN_EXE_nnc"))
            .args(args)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("nnc runs");
        child.stdin.take().expect("stdin").write_all(stdin).expect("writes");
        let out = child.wait_with_output().expect("finishes");
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    // The test split as IDX: 8×8 grey levels 0..16 fit in bytes.
    let mut csv = String::new();
    flate2::read::GzDecoder::new(&gz[..]).read_to_string(&mut csv).expect("gunzips");
    let rows: Vec<Vec<u8>> =
        csv.lines().skip(1).map(|l| l.split(',').map(|v| v.parse().expect("byte")).collect()).collect();
    let count = (rows.len() as u32).to_be_bytes();
    let mut images = [&[0, 0, 8, 3][..], &count, &8u32.to_be_bytes(), &8u32.to_be_bytes()].concat();
    let mut labels = [&[0, 0, 8, 1][..], &count].concat();
    for row in &rows {
        images.extend(&row[..64]);
        labels.push(row[64]);
    }
    let (images_path, labels_path) = (dir.path().join("images.idx"), dir.path().join("labels.idx"));
    std::fs::write(&images_path, images).expect("writes");
    std::fs::write(&labels_path, labels).expect("writes");
    let (images_path, labels_path) = (images_path.to_str().expect("utf-8"), labels_path.to_str().expect("utf-8"));

    let eval = |extra: &[&str]| {
        let (code, out, err) = nnc(&[&["eval", "models/digits_mlp.nn", "--weights", w], extra].concat());
        assert_eq!(code, 0, "{extra:?}: {err}");
        out
    };
    let own = eval(&[]);
    assert!(own.contains("(359 rows)"), "{own}");
    assert_eq!(eval(&["--data", "builtin:digits"]), own);
    assert_eq!(eval(&["--data", images_path, "--labels", labels_path]), own);
    assert_eq!(piped(&["eval", "models/digits_mlp.nn", "--weights", w, "--data", "-"], &gz), own);

    let predict = |input: &str| {
        let (code, out, err) = nnc(&["predict", "models/digits_mlp.nn", "--weights", w, "--input", input]);
        assert_eq!(code, 0, "{input}: {err}");
        out
    };
    let from_stdin = piped(&["predict", "models/digits_mlp.nn", "--weights", w, "--input", "-"], &gz);
    assert_eq!(from_stdin.lines().count(), 360);
    assert_eq!(predict("builtin:digits"), from_stdin);
    assert_eq!(predict(images_path), from_stdin);

    // IDX images without their labels cannot be scored, and labels belong to IDX images only.
    let (code, _, err) = nnc(&["eval", "models/digits_mlp.nn", "--weights", w, "--data", images_path]);
    assert!(code != 0 && err.contains("--labels"), "{err}");
    let csv_path = test_gz.to_str().expect("utf-8");
    let (code, _, err) =
        nnc(&["eval", "models/digits_mlp.nn", "--weights", w, "--data", csv_path, "--labels", labels_path]);
    assert!(code != 0 && err.contains("--labels goes with IDX images"), "{err}");
}

/// `gradcheck --elements N` checks N elements of each tensor with more (all
/// of a smaller one), and a tolerance no error can meet, or every error
/// meets, is refused before any work.
#[test]
fn gradcheck_checks_the_elements_asked_for_and_a_real_tolerance() {
    let (code, out, err) = nnc(&["gradcheck", "models/logistic.nn", "--elements", "3"]);
    assert_eq!(code, 0, "{err}");
    let counts: Vec<&str> = out.lines().skip(1).filter_map(|l| l.split_whitespace().nth(1)).collect();
    // Logistic regression: a weight per feature, and one bias.
    assert_eq!(counts[..2], ["3", "1"], "{out}");
    for tolerance in ["0", "-1e-4", "nan", "inf", "2"] {
        let (code, _, err) = nnc(&["gradcheck", "models/logistic.nn", &format!("--tolerance={tolerance}")]);
        assert_eq!(code, 2, "--tolerance {tolerance}");
        assert!(err.contains("relative error above 0"), "{err}");
    }
    let (code, _, _) = nnc(&["gradcheck", "models/logistic.nn", "--elements", "0"]);
    assert_eq!(code, 2);
}

/// A model whose training fits in memory, but whose gradient check (in
/// f64, with the autodiff pass's values and a moved copy of the tensor
/// beside the weights) does not, is refused before any value is made.
#[test]
fn gradcheck_refuses_a_model_it_cannot_hold() {
    let meminfo = std::fs::read_to_string("/proc/meminfo").expect("Linux");
    let kib: f64 = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .expect("MemTotal")
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .expect("a number");
    // Weights of a fourteenth of the memory: training by sgd holds them
    // and their gradients in f32 (4/7 of it), the check three copies in f64.
    let width = (kib * 1024.0 / 14.0).sqrt() as usize;
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("wide.nn");
    let source = format!(
        "model wide {{\n  input x: [{width}]\n  target y: [1]\n  x |> dense({width}) |> dense(1) => out\n  \
         loss = mse(out, y)\n  train {{ data = csv(\"d.csv\")  optimizer = sgd(lr = 0.1)  batch = 1  epochs = 1 }}\n}}\n"
    );
    std::fs::write(&file, source).expect("written");
    let file = file.to_str().expect("a UTF-8 path");
    let (code, _, err) = nnc(&["check", file]);
    assert_eq!(code, 0, "training it fits: {err}");
    let (code, out, err) = nnc(&["gradcheck", file]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(err.contains("nnc::gradcheck::memory") && err.contains("more than this machine"), "{err}");
    assert!(out.is_empty(), "no rows: {out}");
}
