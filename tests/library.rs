//! `nnc build`: libraries built from bundled models, linked into the C
//! example program with the system's `cc`, run on real test rows and
//! compared with the JIT's predictions (same bits at the same batch size
//! and target CPU); a portable build without AVX; and bad input.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use nnc::checkpoint;
use nnc::data::{self, Dataset, RowSpec, Scaler};
use nnc::exec::Backend;
use nnc::model::Model;
use nnc::train::Trainer;
use nnc::train::metrics::{Task, prediction_columns};
use nnc_runtime::library::{SMALL_BATCH, next_pass, pass_rows};

/// Rows per call of the large batched pass in these builds: enough that an
/// MNIST batch's preprocessing runs in parallel parts (≥ 2¹⁶ values).
const BATCH: usize = 100;
/// Test rows predicted: two large batches, a small one and three rows run
/// one at a time.
const ROWS: usize = 2 * BATCH + SMALL_BATCH + 3;

fn nnc(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_nnc"));
    command.args(args).envs(env.iter().copied());
    command.output().expect("nnc runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A checkpoint of `file`'s model after a few optimizer steps on real data,
/// the raw test rows and the scaler the checkpoint records.
fn checkpoint_of(file: &str, dir: &Path) -> (PathBuf, Dataset, Scaler) {
    let checked = common::load(file);
    let model = &checked.models[0];
    let splits = data::load(model.train.data.as_ref().expect("data"), Path::new(common::MODELS), &RowSpec::of(model))
        .expect("loads");
    let scaler = Scaler::fit(model.train.preprocess, &splits.train);
    let mut train = splits.train;
    scaler.apply(&mut train);
    let mut trainer = Trainer::new(model, model.train.clone(), Backend::Jit).expect("trainable");
    let rows = 32.min(train.rows);
    for _ in 0..3 {
        let (x, y) = (&train.x[..rows * train.width], &train.y[..rows * train.target_width]);
        trainer.step(x, y, rows, model.train.lr).expect("steps");
    }
    let path = dir.join("weights.safetensors");
    checkpoint::save(&path, &trainer, &checkpoint::Origin::unnamed(&checked.source, &scaler)).expect("saves");
    (path, splits.test.expect("test split"), scaler)
}

/// The first `ROWS` raw test rows as a CSV with a header row.
fn write_rows(test: &Dataset, path: &Path) -> Vec<f32> {
    let x = test.x[..ROWS * test.width].to_vec();
    let header: Vec<String> = (0..test.width).map(|j| format!("x{j}")).collect();
    let mut csv = header.join(",") + "\n";
    for row in x.chunks(test.width) {
        csv += &(row.iter().map(f32::to_string).collect::<Vec<_>>().join(",") + "\n");
    }
    std::fs::write(path, csv).expect("writes");
    x
}

/// How a test builds a library: the target CPU, the large batch and more flags.
type Build<'a> = (&'a str, usize, &'a [&'a str]);

/// Builds the library `model` in `dir/lib` as `build` says and links the
/// C example against its static library; returns the program.
fn build_and_link(file: &str, weights: &Path, dir: &Path, (target_cpu, batch, flags): Build) -> PathBuf {
    let lib = dir.join("lib");
    let model_file = Path::new(common::MODELS).join(file);
    let args = [model_file.to_str().unwrap(), "--weights", weights.to_str().unwrap(), "-o", lib.to_str().unwrap()];
    let batch = batch.to_string();
    let out = nnc(
        &[&["build"], &args[..], &["--name", "model", "--batch", &batch, "--target-cpu", target_cpu], flags].concat(),
        &[],
    );
    assert!(out.status.success(), "nnc build {file}: {}", text(&out.stderr));
    for made in ["model.h", "libmodel.a", "libmodel.so"] {
        assert!(lib.join(made).is_file(), "{made} written");
    }
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/c/predict_csv.c");
    let defines = ["-DNNC_LIB=model", "-DNNC_LIB_UPPER=MODEL", "-DNNC_LIB_HEADER=\"model.h\""];
    link_c(&source, &lib, &defines, &dir.join("predict_csv"))
}

/// Compiles the C program `source` against `lib/libmodel.a` with `cc`
/// (warnings are errors) and returns the program.
fn link_c(source: &Path, lib: &Path, defines: &[&str], program: &Path) -> PathBuf {
    let out = Command::new("cc")
        .args(["-O2", "-Wall", "-Werror"])
        .args(defines)
        .arg("-I")
        .arg(lib)
        .arg(source)
        .arg(lib.join("libmodel.a"))
        .args(nnc::library::SYSTEM_LIBS.split(' '))
        .arg("-o")
        .arg(program)
        .output()
        .expect("cc runs");
    assert!(out.status.success(), "cc: {}", text(&out.stderr));
    program.to_path_buf()
}

/// The C program's output: one row of floats per input row, each output's
/// columns in turn (`outputs`: their widths, and whether each is a
/// classifier, whose printed class is dropped after checking it is the
/// arg-max of its probabilities).
fn run_program(program: &Path, rows_csv: &Path, outputs: &[(usize, bool)]) -> Vec<Vec<f32>> {
    let out = Command::new(program).arg(rows_csv).output().expect("program runs");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let rows: Vec<Vec<f32>> = text(&out.stdout)
        .lines()
        .map(|line| line.split(',').map(|v| v.parse::<f32>().expect("a float")).collect())
        .collect();
    assert_eq!(rows.len(), ROWS);
    rows.into_iter()
        .map(|printed| {
            let mut printed = printed.into_iter();
            let mut row = Vec::new();
            for &(width, classifier) in outputs {
                let class = if classifier { printed.next() } else { None };
                let values: Vec<f32> = printed.by_ref().take(width).collect();
                assert_eq!(values.len(), width, "a value for each of the output's columns");
                if let Some(class) = class {
                    let best = values.iter().enumerate().fold(0, |b, (i, &p)| if p > values[b] { i } else { b });
                    assert_eq!(class as usize, best, "the printed class is the most probable one");
                }
                row.extend(values);
            }
            assert_eq!(printed.next(), None, "nothing printed past the outputs");
            row
        })
        .collect()
}

/// What the JIT predicts for the raw rows `x` with the checkpoint's weights,
/// batched as the library batches (large batches, small ones, then one row
/// at a time).
fn jit_predictions(
    file: &str,
    weights: &Path,
    x: &[f32],
    (scaler, batch): (&Scaler, usize),
) -> (Vec<Vec<f32>>, Vec<(usize, bool)>) {
    let checked = common::load(file);
    let model = &checked.models[0];
    let saved = checkpoint::load(weights).expect("loads");
    let mut runtime = Model::new(model, Backend::Jit).expect("model");
    runtime.restore(&saved.tensors).expect("restores");
    let width = x.len() / ROWS;
    let mut scaled = Dataset { rows: ROWS, width, x: x.to_vec(), target_width: 0, y: vec![], columns: vec![] };
    scaler.apply(&mut scaled);
    let mut scores = Vec::new();
    let mut done = 0;
    while done < ROWS {
        let n = pass_rows(batch)[next_pass(pass_rows(batch), ROWS - done)];
        let (prediction, _) = runtime.run_batch(&scaled.x[done * width..(done + n) * width], &[], n).expect("runs");
        scores.extend(prediction);
        done += n;
    }
    let outputs = prediction_columns(model, scores.len() / ROWS);
    let width = outputs.last().map_or(0, |(_, _, columns)| columns.end);
    let rows = scores
        .chunks(width)
        .map(|row| {
            let mut out = row.to_vec();
            for (_, task, columns) in &outputs {
                if let Task::Classes(_) = task {
                    nnc_runtime::softmax_row(&row[columns.clone()], &mut out[columns.clone()]);
                }
            }
            out
        })
        .collect();
    let layout = outputs.iter().map(|(_, task, columns)| (columns.len(), matches!(task, Task::Classes(_)))).collect();
    (rows, layout)
}

/// Builds `file`'s library as `build` says, runs the C program on real
/// test rows, and returns its predictions and the JIT's.
fn library_and_jit(file: &str, build: Build) -> (Vec<Vec<f32>>, Vec<Vec<f32>>, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("temp dir");
    let (weights, test, scaler) = checkpoint_of(file, dir.path());
    let rows_csv = dir.path().join("rows.csv");
    let x = write_rows(&test, &rows_csv);
    let program = build_and_link(file, &weights, dir.path(), build);
    let (jit, outputs) = jit_predictions(file, &weights, &x, (&scaler, build.1));
    (run_program(&program, &rows_csv, &outputs), jit, dir)
}

fn assert_same_bits(file: &str) {
    assert_same_bits_at(file, BATCH);
}

/// Returns the folder the library and its test rows were written in.
fn assert_same_bits_at(file: &str, batch: usize) -> tempfile::TempDir {
    assert_same_bits_of(file, ("native", batch, &[]))
}

fn assert_same_bits_of(file: &str, build: Build) -> tempfile::TempDir {
    let (library, jit, dir) = library_and_jit(file, build);
    assert_eq!((library.len(), jit.len()), (ROWS, ROWS));
    for (i, (a, b)) in library.iter().zip(&jit).enumerate() {
        let bits = |row: &[f32]| row.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(a), bits(b), "{file}: row {i} differs:\nlibrary {a:?}\njit     {b:?}");
    }
    dir
}

#[test]
fn mnist_mlp_library_predicts_the_jits_bits() {
    assert_same_bits("mnist_mlp.nn");
}

/// `--preprocessed-input`: the C program divides the raw rows by the
/// header's divisors (255), and the library reads them as they are: the
/// same bits as the JIT, whose rows nnc preprocessed. (The standardized
/// regression below is built this way too, with a shift per feature.)
#[test]
fn a_library_of_preprocessed_rows_predicts_the_jits_bits() {
    assert_same_bits_of("mnist_mlp.nn", ("native", BATCH, &["--preprocessed-input"]));
}

/// `--batch 1`: every row through the single-row pass.
#[test]
fn a_batch_of_one_builds_and_predicts_the_jits_bits() {
    assert_same_bits_at("digits_mlp.nn", 1);
}

#[test]
fn lenet_library_predicts_the_jits_bits() {
    assert_same_bits("lenet.nn");
}

#[test]
fn batchnorm_library_predicts_the_jits_bits() {
    assert_same_bits("batchnorm.nn");
}

#[test]
fn maxout_library_predicts_the_jits_bits() {
    assert_same_bits("maxout.nn");
}

#[test]
fn lstm_library_predicts_the_jits_bits() {
    assert_same_bits("lstm_digits.nn");
}

#[test]
fn bidirectional_gru_library_predicts_the_jits_bits() {
    assert_same_bits("bigru_digits.nn");
}

#[test]
fn tied_autoencoder_library_predicts_the_jits_bits() {
    assert_same_bits("autoencoder.nn");
}

/// Layer norm's gain and bias and a 1-D convolution's filters are read
/// through reshapes of the weights, which write nothing.
#[test]
fn reshaped_weights_build_and_predict_the_jits_bits() {
    assert_same_bits("layernorm_mlp.nn");
    assert_same_bits("digits_conv1d.nn");
}

#[test]
fn dbn_library_predicts_the_jits_bits() {
    assert_same_bits("dbn_digits.nn");
}

/// A model of two outputs, a classifier's and a reconstruction's: one
/// output row holds the class probabilities, then the reconstruction.
#[test]
fn a_library_of_two_outputs_predicts_the_jits_bits() {
    let dir = assert_same_bits_at("digits_multitask.nn", BATCH);
    let header = std::fs::read_to_string(dir.path().join("lib/model.h")).expect("the header");
    for line in [
        "#define MODEL_OUTPUT_SIZE 74",
        "#define MODEL_OUTPUTS 2",
        r#"MODEL_OUTPUT_NAMES[2] = {"logits", "reconstruction"};"#,
        "MODEL_OUTPUT_OFFSETS[2] = {0, 10};",
        "MODEL_OUTPUT_SIZES[2] = {10, 64};",
        "MODEL_OUTPUT_CLASSES[2] = {10, 0};",
    ] {
        assert!(header.contains(line), "{line} in\n{header}");
    }
}

/// Every bundled model builds (its initial weights, no preprocessing);
/// VGG-16 is left out for its 528 MB of weights.
#[test]
fn every_bundled_model_builds() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut files: Vec<PathBuf> = std::fs::read_dir(common::MODELS)
        .expect("models")
        .map(|entry| entry.expect("an entry").path())
        .filter(|path| path.extension().is_some_and(|e| e == "nn") && !path.ends_with("vgg16.nn"))
        .collect();
    files.sort();
    assert!(files.len() > 20, "{} bundled models", files.len());
    for path in files {
        let file = path.file_name().and_then(|f| f.to_str()).expect("a name");
        let checked = common::load(file);
        let trainer =
            Trainer::new(&checked.models[0], checked.models[0].train.clone(), Backend::Jit).expect("trainable");
        let weights = dir.path().join(format!("{file}.safetensors"));
        let origin = checkpoint::Origin::unnamed(&checked.source, &Scaler::None);
        checkpoint::save(&weights, &trainer, &origin).expect("saves");
        let lib = dir.path().join(file);
        let args =
            ["build", path.to_str().unwrap(), "--weights", weights.to_str().unwrap(), "-o", lib.to_str().unwrap()];
        let out = nnc(&args, &[]);
        assert!(out.status.success(), "nnc build {file}: {}", text(&out.stderr));
    }
}

/// The disassembly of the generated object inside `libmodel.a` (the runtime
/// routines, which choose their paths at run time, are left out).
fn generated_code(lib: &Path) -> String {
    let archive = std::fs::read(lib.join("libmodel.a")).expect("reads");
    let parsed = object::read::archive::ArchiveFile::parse(&*archive).expect("an archive");
    let member = parsed.members().map(|m| m.expect("member")).find(|m| m.name() == b"model.o").expect("model.o");
    let object_path = lib.join("model.o");
    std::fs::write(&object_path, member.data(&*archive).expect("data")).expect("writes");
    let out = Command::new("objdump").args(["-d", "--no-show-raw-insn"]).arg(&object_path).output().expect("objdump");
    assert!(out.status.success(), "{}", text(&out.stderr));
    text(&out.stdout)
}

/// Instructions that need AVX: VEX/EVEX-encoded ones all start with `v`.
fn avx_instructions(disassembly: &str) -> Vec<String> {
    disassembly
        .lines()
        .filter_map(|line| line.split('\t').nth(1))
        .filter(|instruction| {
            instruction.starts_with('v') || instruction.contains("%ymm") || instruction.contains("%zmm")
        })
        .map(str::to_string)
        .collect()
}

/// The shared library exports exactly the C API, and neither library holds
/// compiler code (Cranelift, pest, miette).
fn assert_self_contained(lib: &Path) {
    let symbols = |args: &[&str], file: &str| {
        let out = Command::new("nm").args(args).arg(lib.join(file)).output().expect("nm runs");
        assert!(out.status.success(), "{}", text(&out.stderr));
        text(&out.stdout)
    };
    let exported: Vec<String> = symbols(&["-D", "--defined-only"], "libmodel.so")
        .lines()
        .filter(|line| line.contains(" T "))
        .filter_map(|line| line.split_whitespace().last().map(str::to_string))
        .collect();
    assert_eq!(exported, ["model_create", "model_destroy", "model_predict"]);
    for file in ["libmodel.a", "libmodel.so"] {
        let all = symbols(&["-C"], file).to_lowercase();
        for compiler in ["cranelift", "pest::", "miette"] {
            assert!(!all.contains(compiler), "{file} holds {compiler} code");
        }
    }
}

/// The model's GELU and SiLU are element-wise code of the build's own
/// (a ReLU would be stored with its product, in the runtime's code), so
/// the disassembly shows which instructions the target allows.
#[test]
fn a_portable_build_uses_no_avx_stays_close_to_the_jit_and_carries_no_compiler() {
    let (library, jit, dir) = library_and_jit("digits_gelu.nn", ("x86-64-v2", BATCH, &[]));
    for (a, b) in library.iter().flatten().zip(jit.iter().flatten()) {
        assert!((a - b).abs() <= 1e-5, "library {a} vs jit {b}");
    }
    let portable = generated_code(&dir.path().join("lib"));
    assert!(portable.contains("addps"), "the disassembly shows the element-wise vector code");
    assert_eq!(avx_instructions(&portable), Vec::<String>::new(), "x86-64-v2 code uses no AVX");
    if std::arch::is_x86_feature_detected!("avx") {
        // The check can fail: a native build on this machine does use AVX.
        let native = tempfile::tempdir().expect("temp dir");
        let (weights, _, _) = checkpoint_of("digits_gelu.nn", native.path());
        build_and_link("digits_gelu.nn", &weights, native.path(), ("native", BATCH, &[]));
        assert!(!avx_instructions(&generated_code(&native.path().join("lib"))).is_empty());
    }
    assert_self_contained(&dir.path().join("lib"));
}

/// An `nnc build` that must fail: its exit code and message, and nothing left in `out`.
fn failing_build(args: &[&str], env: &[(&str, &str)], out: &Path) -> (i32, String) {
    let output = nnc(&[&["build"], args, &["-o", out.to_str().unwrap()]].concat(), env);
    assert!(!output.status.success());
    let leftovers: Vec<_> =
        std::fs::read_dir(out).map(|d| d.flatten().map(|e| e.file_name()).collect()).unwrap_or_default();
    assert!(leftovers.is_empty(), "nothing is left behind: {leftovers:?}");
    (output.status.code().unwrap_or(-1), text(&output.stderr))
}

#[test]
fn bad_builds_are_clear_errors_that_leave_nothing_behind() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (weights, _, _) = checkpoint_of("digits_mlp.nn", dir.path());
    let weights = weights.to_str().unwrap();
    let model = Path::new(common::MODELS).join("digits_mlp.nn");
    let model = model.to_str().unwrap();
    let out = dir.path().join("out");
    std::fs::create_dir(&out).expect("mkdir");

    let (code, message) = failing_build(&[model, "--weights", weights, "--target-cpu", "pentium9"], &[], &out);
    assert_eq!(code, 2);
    assert!(message.contains("unknown target CPU `pentium9`") && message.contains("x86-64-v3"), "{message}");

    let (code, message) = failing_build(&[model, "--weights", weights, "--name", "2fast"], &[], &out);
    assert_eq!(code, 2);
    assert!(message.contains("cannot name a C library"), "{message}");

    // Its symbols would be the runtime's (`nnc_library_create`, …).
    let (code, message) = failing_build(&[model, "--weights", weights, "--name", "nnc_library"], &[], &out);
    assert_eq!(code, 2);
    assert!(message.contains("starting with `nnc_` are the runtime's"), "{message}");

    let (code, message) = failing_build(&[model, "--weights", weights], &[("CC", "/nonexistent/cc")], &out);
    assert_eq!(code, 2);
    assert!(message.contains("no C compiler") && message.contains("/nonexistent/cc"), "{message}");

    // Weights of another model: the tensor and both shapes are named.
    let other = Path::new(common::MODELS).join("digits_gelu.nn");
    let other_dir = tempfile::tempdir().expect("temp dir");
    let (other_weights, _, _) = checkpoint_of("digits_gelu.nn", other_dir.path());
    let (code, message) = failing_build(&[model, "--weights", other_weights.to_str().unwrap()], &[], &out);
    assert_eq!(code, 1);
    assert!(message.contains("holds weights of model"), "{message}");
    assert!(other.is_file());

    // An output "folder" that is a file, and a folder in the way of a library file.
    let file = dir.path().join("a-file");
    std::fs::write(&file, "keep me").expect("writes");
    let output = nnc(&["build", model, "--weights", weights, "-o", file.to_str().unwrap()], &[]);
    assert_eq!(output.status.code(), Some(2), "{}", text(&output.stderr));
    assert!(text(&output.stderr).contains("a-file is not a folder; -o names the folder"), "{}", text(&output.stderr));
    assert_eq!(std::fs::read_to_string(&file).expect("reads"), "keep me");
    std::fs::create_dir(out.join("libdigits_mlp.so")).expect("mkdir");
    let output = nnc(&["build", model, "--weights", weights, "-o", out.to_str().unwrap()], &[]);
    assert_eq!(output.status.code(), Some(2));
    assert!(text(&output.stderr).contains("not a regular file"), "{}", text(&output.stderr));
    let names: Vec<_> = std::fs::read_dir(&out).expect("reads").flatten().map(|e| e.file_name()).collect();
    assert_eq!(names, vec![std::ffi::OsString::from("libdigits_mlp.so")], "nothing else was written");
}

/// The C API's error codes, from C: null pointers, no rows, a row count no
/// buffer can hold; and a good call after them still works.
#[test]
fn the_c_api_returns_error_codes_instead_of_crashing() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (weights, _, _) = checkpoint_of("digits_mlp.nn", dir.path());
    build_and_link("digits_mlp.nn", &weights, dir.path(), ("native", BATCH, &[]));
    let source = r#"
#include <stdint.h>
#include <stdio.h>
#include "model.h"
int main(void) {
    float in[MODEL_INPUT_SIZE] = {0}, out[MODEL_OUTPUT_SIZE];
    model_context *ctx = model_create();
    if (!ctx) return 10;
    if (model_predict(NULL, in, 1, out) != MODEL_NULL_POINTER) return 11;
    if (model_predict(ctx, NULL, 1, out) != MODEL_NULL_POINTER) return 12;
    if (model_predict(ctx, in, 1, NULL) != MODEL_NULL_POINTER) return 13;
    if (model_predict(ctx, in, 0, out) != MODEL_NO_ROWS) return 14;
    if (model_predict(ctx, in, SIZE_MAX / 2, out) != MODEL_TOO_MANY_ROWS) return 15;
    if (model_predict(ctx, in, 1, out) != MODEL_OK) return 16;
    float sum = 0;
    for (int i = 0; i < MODEL_OUTPUT_SIZE; i++) sum += out[i];
    model_destroy(ctx);
    model_destroy(NULL);
    printf("%.6f\n", sum);
    return 0;
}
"#;
    let lib = dir.path().join("lib");
    std::fs::write(dir.path().join("codes.c"), source).expect("write");
    let program = link_c(&dir.path().join("codes.c"), &lib, &[], &dir.path().join("codes"));
    let run = Command::new(&program).output().expect("runs");
    assert_eq!(run.status.code(), Some(0), "failed check {:?}", run.status.code());
    let sum: f32 = text(&run.stdout).trim().parse().expect("a number");
    assert!((sum - 1.0).abs() < 1e-5, "probabilities sum to {sum}");
}

/// A regression learnt in standard units (`standardize_target`): the
/// library takes its predictions back to the target's units, dollars here,
/// to the same bits as `nnc predict` (rows in the CSV's own column order,
/// matched by name there, by position in C), also when the C program
/// standardizes the rows with the header's means and deviations
/// (`--preprocessed-input`).
#[test]
fn standardized_target_library_predicts_in_the_targets_units() {
    let dir = tempfile::tempdir().expect("temp dir");
    let weights = dir.path().join("w.safetensors");
    let model_file = Path::new(common::MODELS).join("house_sales.nn");
    let out = nnc(
        &["train", model_file.to_str().unwrap(), "--epochs", "20", "--quiet", "--save", weights.to_str().unwrap()],
        &[],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let sales = std::fs::read_to_string(Path::new(common::MODELS).join("data/house_sales.csv")).expect("data");
    let mut rows = "area_m2,rooms,bathrooms\n".to_string();
    for line in sales.lines().skip(1).cycle().take(ROWS) {
        let cells: Vec<&str> = line.split(',').collect();
        rows += &format!("{},{},{}\n", cells[4], cells[5], cells[2]);
    }
    let rows_csv = dir.path().join("rows.csv");
    std::fs::write(&rows_csv, rows).expect("writes");
    let args = ["predict", model_file.to_str().unwrap(), "--weights", weights.to_str().unwrap()];
    let out = nnc(&[&args[..], &["--input", rows_csv.to_str().unwrap(), "--full-precision"]].concat(), &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let predicted: Vec<f32> = text(&out.stdout).lines().skip(1).map(|v| v.parse().expect("a float")).collect();
    assert_eq!(predicted.len(), ROWS);
    for flags in [&[][..], &["--preprocessed-input"]] {
        let program = build_and_link("house_sales.nn", &weights, dir.path(), ("native", BATCH, flags));
        let library = run_program(&program, &rows_csv, &[(1, false)]);
        for (i, (a, b)) in library.iter().zip(&predicted).enumerate() {
            assert_eq!(a[0].to_bits(), b.to_bits(), "{flags:?} row {i}: library {} vs predict {b}", a[0]);
        }
    }
    let mean = predicted.iter().map(|&p| f64::from(p)).sum::<f64>() / ROWS as f64;
    assert!((200_000.0..500_000.0).contains(&mean), "predictions in dollars, mean {mean}");
}
