//! Checkpoints: save → load gives identical predictions, a resumed run equals
//! an uninterrupted one bit for bit, and damaged or mismatched files are
//! clean errors.

use std::path::Path;
use std::process::Command;

use nnc::checkpoint;
use nnc::data::Scaler;
use nnc::pipeline::check_source;
use nnc::train::{Backend, Trainer};

const MODEL: &str = "model m { input x: [4] target y: class(3)
    x |> dense(8) |> relu |> dropout(0.2) |> dense(3) => p  loss = cross_entropy(p, y)
    train { optimizer = adam(lr = 0.01) batch = 2 epochs = 3 seed = 5 } }";

fn data() -> nnc::data::Dataset {
    let x: Vec<f32> = (0..40).map(|i| ((i * 7) % 11) as f32 / 5.0 - 1.0).collect();
    let y: Vec<f32> = (0..10).map(|i| (i % 3) as f32).collect();
    nnc::data::Dataset { rows: 10, width: 4, x, target_width: 1, y, columns: vec![] }
}

fn trainer(source: &str) -> Trainer {
    let checked = check_source("m.nn", source);
    let model = &checked.models[0];
    Trainer::new(model, model.train.clone(), Backend::Jit).expect("trainable")
}

#[test]
fn save_then_load_predicts_identically() {
    let mut a = trainer(MODEL);
    a.fit(&data(), None, None, |_| {}).expect("trains");
    let bytes = checkpoint::to_bytes(&a, &checkpoint::Origin::unnamed(MODEL, &Scaler::None)).expect("serialises");
    let saved = checkpoint::from_bytes(&bytes).expect("reads back");
    assert_eq!((saved.epoch, saved.step, saved.seed), (3, 15, 5));
    assert_eq!(saved.tensors["dense1.weight"].0, vec![8, 4], "PyTorch layout [out, in]");
    let mut b = trainer(MODEL);
    b.restore(&saved.tensors, saved.epoch, saved.step).expect("restores");
    let x = data().x;
    assert_eq!(a.predict(&x, 10).expect("predicts"), b.predict(&x, 10).expect("predicts"));
}

#[test]
fn truncated_checkpoints_are_rejected() {
    let mut a = trainer(MODEL);
    a.fit(&data(), None, None, |_| {}).expect("trains");
    let bytes = checkpoint::to_bytes(&a, &checkpoint::Origin::unnamed(MODEL, &Scaler::None)).expect("serialises");
    assert!(bytes.len() > 1024);
    for cut in (0..bytes.len()).step_by(1024).chain([bytes.len() - 1]) {
        assert!(checkpoint::from_bytes(&bytes[..cut]).is_err(), "a file cut at {cut} bytes was accepted");
    }
    assert!(checkpoint::from_bytes(b"not a checkpoint at all").is_err());
}

#[test]
fn mismatched_weights_name_the_tensor_and_both_shapes() {
    let mut a = trainer(MODEL);
    a.fit(&data(), None, None, |_| {}).expect("trains");
    let saved = checkpoint::from_bytes(
        &checkpoint::to_bytes(&a, &checkpoint::Origin::unnamed(MODEL, &Scaler::None)).expect("bytes"),
    )
    .expect("reads");
    let mut wider = trainer(&MODEL.replace("dense(8)", "dense(9)"));
    let err = wider.restore(&saved.tensors, 0, 0).expect_err("shapes differ");
    assert!(err.contains("dense1.weight") && err.contains("[8, 4]") && err.contains("[9, 4]"), "{err}");
    let mut tensors = saved.tensors.clone();
    tensors.remove("dense2.bias");
    let err = trainer(MODEL).restore(&tensors, 0, 0).expect_err("missing");
    assert!(err.contains("dense2.bias"), "{err}");
}

fn nnc(args: &[&str], dir: &Path) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_nnc")).args(args).current_dir(dir).output().expect("runs");
    assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn resuming_equals_an_uninterrupted_run_bit_for_bit() {
    let dir = tempfile::tempdir().expect("temp dir");
    let model = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/models/maxout.nn")).expect("model");
    std::fs::write(dir.path().join("m.nn"), model).expect("write");
    let p = dir.path();
    nnc(&["train", "m.nn", "--quiet", "--epochs", "4", "--save", "full.safetensors"], p);
    nnc(&["train", "m.nn", "--quiet", "--epochs", "2", "--save", "half.safetensors"], p);
    nnc(
        &["train", "m.nn", "--quiet", "--epochs", "4", "--resume", "half.safetensors", "--save", "resumed.safetensors"],
        p,
    );
    // Tensors and metadata must be equal bit for bit (the metadata's order in the file may differ).
    let full = checkpoint::load(&p.join("full.safetensors")).expect("full");
    let resumed = checkpoint::load(&p.join("resumed.safetensors")).expect("resumed");
    assert_eq!((full.epoch, full.step), (4, resumed.step));
    assert!(!full.tensors.is_empty());
    for (name, (shape, values)) in &full.tensors {
        let (rshape, rvalues) = &resumed.tensors[name];
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert!(shape == rshape && bits(values) == bits(rvalues), "{name} differs after resuming");
    }
    assert_eq!(full, resumed);
    // Evaluation and prediction use the saved weights.
    let eval = nnc(&["eval", "m.nn", "--weights", "full.safetensors"], p);
    assert!(eval.contains("accuracy") && eval.contains("confusion matrix"), "{eval}");
    std::fs::write(
        p.join("rows.csv"),
        format!("{}\n{}\n", (0..64).map(|i| format!("p{i}")).collect::<Vec<_>>().join(","), vec!["8"; 64].join(",")),
    )
    .expect("csv");
    let predicted = nnc(&["predict", "m.nn", "--weights", "full.safetensors", "--input", "rows.csv"], p);
    let lines: Vec<&str> = predicted.lines().collect();
    assert_eq!(lines.len(), 2, "{predicted}");
    assert!(lines[0].starts_with("class,p0,"));
    let probabilities: f32 = lines[1].split(',').skip(1).map(|v| v.parse::<f32>().expect("number")).sum();
    assert!((probabilities - 1.0).abs() < 1e-4, "{predicted}");
}

#[test]
fn non_finite_weights_are_refused_at_load_with_the_tensor_name() {
    let mut a = trainer(MODEL);
    a.fit(&data(), None, None, |_| {}).expect("trains");
    let saved = checkpoint::from_bytes(
        &checkpoint::to_bytes(&a, &checkpoint::Origin::unnamed(MODEL, &Scaler::None)).expect("bytes"),
    )
    .expect("reads");
    let mut tensors = saved.tensors.clone();
    tensors.get_mut("dense2.weight").expect("tensor").1[3] = f32::NAN;
    let mut poisoned = trainer(MODEL);
    poisoned.restore(&tensors, saved.epoch, saved.step).expect("restores");
    let bytes =
        checkpoint::to_bytes(&poisoned, &checkpoint::Origin::unnamed(MODEL, &Scaler::None)).expect("serialises");
    let err = checkpoint::from_bytes(&bytes).expect_err("a NaN weight is refused");
    assert!(err.contains("dense2.weight") && err.contains("NaN") && err.contains("element 3"), "{err}");
}

/// A preprocessing that divides by zero would turn every prediction into
/// infinities or NaN: such a checkpoint is refused at load, naming the
/// input value.
#[test]
fn a_preprocessing_that_divides_by_zero_is_refused_at_load() {
    let a = trainer(MODEL);
    let standardize = Scaler::Standardize { mean: vec![0.5; 4], std: vec![1.0, 0.0, 1.0, 1.0] };
    for (scaler, value) in [(Scaler::Scale(0.0), "input value 0"), (standardize, "input value 1")] {
        let bytes = checkpoint::to_bytes(&a, &checkpoint::Origin::unnamed(MODEL, &scaler)).expect("serialises");
        let err = checkpoint::from_bytes(&bytes).expect_err("a zero divisor is refused");
        assert!(err.contains("scaler") && err.contains(value) && err.contains("nonzero"), "{err}");
    }
    let fine = checkpoint::to_bytes(&a, &checkpoint::Origin::unnamed(MODEL, &Scaler::Scale(16.0))).expect("bytes");
    assert!(checkpoint::from_bytes(&fine).is_ok());
}

/// `nnc predict --input - --output -` reads rows from standard input and
/// writes to standard output, as with files.
#[test]
fn predict_reads_standard_input() {
    use std::io::Write;
    let dir = tempfile::tempdir().expect("temp dir");
    let model = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/models/maxout.nn")).expect("model");
    std::fs::write(dir.path().join("m.nn"), model).expect("write");
    nnc(&["train", "m.nn", "--quiet", "--epochs", "1", "--save", "w.safetensors"], dir.path());
    let rows =
        format!("{}\n{}\n", (0..64).map(|i| format!("p{i}")).collect::<Vec<_>>().join(","), vec!["8"; 64].join(","));
    std::fs::write(dir.path().join("rows.csv"), &rows).expect("csv");
    let from_file = nnc(&["predict", "m.nn", "--weights", "w.safetensors", "--input", "rows.csv"], dir.path());
    let mut child = Command::new(env!("CARGO_BIN_EXE_nnc"))
        .args(["predict", "m.nn", "--weights", "w.safetensors", "--input", "-", "--output", "-"])
        .current_dir(dir.path())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("runs");
    child.stdin.take().expect("stdin").write_all(rows.as_bytes()).expect("writes");
    let out = child.wait_with_output().expect("finishes");
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout), from_file);
    assert!(!dir.path().join("-").exists(), "`-` is standard output, not a file");
}

/// `--resume` after an edit that changes nothing the model computes (a
/// comment) continues; after a real change it is refused, naming what changed.
#[test]
fn resume_compares_the_model_not_the_file_bytes() {
    let dir = tempfile::tempdir().expect("temp dir");
    let p = dir.path();
    let model = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/models/maxout.nn")).expect("model");
    std::fs::write(p.join("m.nn"), &model).expect("write");
    nnc(&["train", "m.nn", "--quiet", "--epochs", "1", "--save", "ck.safetensors"], p);
    std::fs::write(p.join("m.nn"), format!("// a note added after training\n{model}")).expect("write");
    let out = Command::new(env!("CARGO_BIN_EXE_nnc"))
        .args(["train", "m.nn", "--quiet", "--epochs", "2", "--resume", "ck.safetensors"])
        .current_dir(p)
        .output()
        .expect("runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let changed = model.replacen("maxout(64", "maxout(32", 1);
    assert_ne!(changed, model);
    std::fs::write(p.join("m.nn"), changed).expect("write");
    let out = Command::new(env!("CARGO_BIN_EXE_nnc"))
        .args(["train", "m.nn", "--quiet", "--epochs", "2", "--resume", "ck.safetensors"])
        .current_dir(p)
        .output()
        .expect("runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("layer `maxout1`") && stderr.contains("changed"), "{stderr}");
}

/// `schedule = plateau(…)` on the digits with a validation split: the rate
/// halves exactly after the epochs whose validation loss is not 20 % below
/// the best (patience 0), and a run resumed from a checkpoint continues
/// the schedule where it stood: the same rates and weights as one run.
#[test]
fn plateau_schedule_follows_the_validation_loss_and_survives_resume() {
    let dir = tempfile::tempdir().expect("temp dir");
    let p = dir.path();
    let model = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/models/digits_mlp.nn")).expect("model");
    let plateau = "validation = 0.2\n    schedule = plateau(factor = 0.5, patience = 0, threshold = 0.2)\n    seed = 7";
    let model = model.replacen("seed = 7", plateau, 1);
    std::fs::write(p.join("m.nn"), model).expect("write");
    let run = |epochs: &str, extra: &[&str], json: &str| {
        let mut args = vec!["train", "m.nn", "--quiet", "--epochs", epochs, "--metrics-json", json];
        args.extend(extra);
        nnc(&args, p);
        let metrics: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(p.join(json)).expect("metrics")).expect("json");
        metrics["epochs"].as_array().expect("epochs").clone()
    };
    let whole = run("8", &["--save", "whole.safetensors"], "whole.json");
    let (mut best, mut rate, mut cuts) = (f64::INFINITY, 0.003, 0);
    for epoch in &whole {
        assert!((epoch["lr"].as_f64().expect("lr") - rate).abs() < 1e-9 * rate, "{whole:#?}");
        let loss = epoch["validation"]["loss"].as_f64().expect("validation loss");
        if loss < best * 0.8 {
            best = loss;
        } else {
            rate *= 0.5;
            cuts += 1;
        }
    }
    assert!(cuts >= 2, "the rate was cut {cuts} times in 8 epochs: {whole:#?}");

    // Stopped after the first cut (at the end of epoch 5 with this seed).
    let first = run("6", &["--save", "part.safetensors"], "first.json");
    assert!(first.last().expect("epoch 6")["lr"].as_f64().expect("lr") < 0.003, "{first:#?}");
    let rest = run("8", &["--resume", "part.safetensors", "--save", "part.safetensors"], "rest.json");
    assert_eq!(rest.len(), 2);
    for (a, b) in whole[6..].iter().zip(&rest) {
        assert_eq!(a["lr"], b["lr"], "epoch {}", a["epoch"]);
    }
    let (a, b) = (
        checkpoint::load(&p.join("whole.safetensors")).expect("loads"),
        checkpoint::load(&p.join("part.safetensors")).expect("loads"),
    );
    assert_eq!(a.tensors, b.tensors);
    assert_eq!(a.plateau, b.plateau);
}

/// `nnc predict` reads, predicts and writes a part of the rows at a time:
/// ten times the rows take about the memory of one part more, not ten
/// times the predictions and their text (a model of 64 outputs writes
/// ~0.6 KB a row). The rows come out as predicted all at once, and a bad
/// row past the first part stops it with its line and leaves no file.
#[test]
fn predict_streams_rows_in_the_memory_of_a_part() {
    let dir = tempfile::tempdir().expect("temp dir");
    let p = dir.path();
    let model = "model wide { input x: [1] target y: [64]
        x |> dense(64) => out  loss = mse(out, y)
        train { data = csv(\"t.csv\") epochs = 1 batch = 4 } }";
    std::fs::write(p.join("m.nn"), model).expect("write");
    let header: Vec<String> = std::iter::once("x".to_string()).chain((0..64).map(|j| format!("y{j}"))).collect();
    let rows: String = (0..16).map(|i| format!("{i}{}\n", ",0.5".repeat(64))).collect();
    std::fs::write(p.join("t.csv"), format!("{}\n{rows}", header.join(","))).expect("csv");
    nnc(&["train", "m.nn", "--quiet", "--save", "w.safetensors"], p);
    let inputs = |rows: usize| format!("x\n{}", (0..rows).map(|i| format!("{}\n", i % 7)).collect::<String>());
    let peak = |rows: usize| {
        std::fs::write(p.join("rows.csv"), inputs(rows)).expect("rows");
        peak_memory_kib(
            &["predict", "m.nn", "--weights", "w.safetensors", "--input", "rows.csv", "--output", "out.csv"],
            p,
        )
    };
    let (small, large) = (peak(20_000), peak(200_000));
    // All at once, the 180,000 rows more hold 46 MB of predictions and 110 MB of their text.
    assert!(large < small + 40_000, "peak memory {small} KiB for 20,000 rows, {large} KiB for 200,000");
    let out = std::fs::read_to_string(p.join("out.csv")).expect("output");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 200_001);
    assert!(lines[0].starts_with("y0,y1,"));
    // Rows of the same input predict the same, in order, whichever part they were in.
    for (i, line) in lines[1..].iter().enumerate() {
        assert_eq!(line, &lines[1 + i % 7], "row {i}");
    }
    assert_ne!(lines[1], lines[2]);
    // A bad row far past the first part: its line named, no output file left.
    std::fs::remove_file(p.join("out.csv")).expect("remove");
    std::fs::write(p.join("rows.csv"), format!("{}x\n3\n", inputs(150_000))).expect("rows");
    let out = Command::new(env!("CARGO_BIN_EXE_nnc"))
        .args(["predict", "m.nn", "--weights", "w.safetensors", "--input", "rows.csv", "--output", "out.csv"])
        .current_dir(p)
        .output()
        .expect("runs");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("rows.csv:150002") && err.contains("`x` in column `x` is not a number"), "{err}");
    assert!(
        std::fs::read_dir(p).expect("dir").all(|e| !e
            .expect("entry")
            .file_name()
            .to_string_lossy()
            .contains("out.csv"))
    );
}

/// `nnc eval` reduces each chunk's predictions to what the metrics need
/// before the next: a thousand classes over ten times the rows take about
/// the same memory, not ten times 4 KB of scores a row.
#[test]
fn eval_holds_a_chunk_of_predictions() {
    let dir = tempfile::tempdir().expect("temp dir");
    let p = dir.path();
    let model = "model many { input x: [1] target y: class(1000)
        x |> dense(1000) => logits  loss = cross_entropy(logits, y)
        train { data = csv(\"t.csv\") epochs = 1 batch = 4 } }";
    std::fs::write(p.join("m.nn"), model).expect("write");
    let rows = |n: usize| format!("x,y\n{}", (0..n).map(|i| format!("{},{}\n", i % 10, i % 1000)).collect::<String>());
    std::fs::write(p.join("t.csv"), rows(16)).expect("csv");
    nnc(&["train", "m.nn", "--quiet", "--save", "w.safetensors"], p);
    let peak = |n: usize| {
        std::fs::write(p.join("rows.csv"), rows(n)).expect("rows");
        peak_memory_kib(&["eval", "m.nn", "--weights", "w.safetensors", "--data", "rows.csv"], p)
    };
    let (small, large) = (peak(20_000), peak(200_000));
    // All at once, the 180,000 rows more would hold 720 MB of scores.
    assert!(large < small + 100_000, "peak memory {small} KiB for 20,000 rows, {large} KiB for 200,000");
}

/// Ctrl-C stops `nnc predict` between parts: exit 130, and the output file
/// neither written nor left half-written beside its path.
#[test]
fn ctrl_c_leaves_no_predictions_file() {
    use std::io::Write;
    let dir = tempfile::tempdir().expect("temp dir");
    let p = dir.path();
    let model = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/models/maxout.nn")).expect("model");
    std::fs::write(p.join("m.nn"), model).expect("write");
    nnc(&["train", "m.nn", "--quiet", "--epochs", "1", "--save", "w.safetensors"], p);
    let mut child = Command::new(env!("CARGO_BIN_EXE_nnc"))
        .args(["predict", "m.nn", "--weights", "w.safetensors", "--input", "-", "--output", "out.csv"])
        .current_dir(p)
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("runs");
    let mut stdin = child.stdin.take().expect("stdin");
    let header = (0..64).map(|i| format!("p{i}")).collect::<Vec<_>>().join(",");
    let row = format!("{}\n", vec!["8"; 64].join(","));
    // More than the first block read, so that the header is checked and
    // the output started while the input is still open.
    stdin.write_all(format!("{header}\n{}", row.repeat(20_000)).as_bytes()).expect("writes");
    let started = |p: &Path| {
        std::fs::read_dir(p)
            .expect("dir")
            .any(|e| e.expect("entry").file_name().to_string_lossy().starts_with(".out.csv"))
    };
    while !started(p) {
        assert!(child.try_wait().expect("waits").is_none(), "predict ended before its output started");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let pid = child.id().to_string();
    let signalled = Command::new("kill").args(["-INT", &pid]).status().expect("kill runs");
    assert!(signalled.success());
    // The input ends too, as a pipeline's first command would on Ctrl-C.
    stdin.write_all(row.as_bytes()).expect("writes");
    drop(stdin);
    let out = child.wait_with_output().expect("finishes");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{err}");
    assert!(err.contains("stopped by Ctrl-C; out.csv is not written"), "{err}");
    assert!(!p.join("out.csv").exists() && !started(p));
}

/// Runs `nnc args` in `dir` to its successful end: the most memory it
/// held (its peak resident set, as the kernel counted it). The child is
/// reaped by `wait4`, which `std` does not offer.
#[allow(unsafe_code, clippy::zombie_processes)]
fn peak_memory_kib(args: &[&str], dir: &Path) -> i64 {
    let child = Command::new(env!("CARGO_BIN_EXE_nnc"))
        .args(args)
        .current_dir(dir)
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("runs");
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: `wait4` writes only the status and usage it is given, both
    // owned here; the child is waited for once, here, not through `child`.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let waited = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    assert_eq!(waited, pid, "wait4: {}", std::io::Error::last_os_error());
    assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0, "{args:?} failed");
    usage.ru_maxrss
}
