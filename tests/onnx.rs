//! `nnc import` on real PyTorch exports (`tests/onnx/make_torch_models.py`
//! made them with `torch.onnx.export`, with PyTorch's outputs for their
//! inputs) and on nnc's own: the imported models check clean and predict
//! the numbers of the model exported.

use std::path::Path;
use std::process::Command;

fn nnc(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_nnc")).args(args).output().expect("nnc runs");
    let text = |b: Vec<u8>| String::from_utf8(b).expect("utf-8");
    (out.status.code().unwrap_or(-1), text(out.stdout), text(out.stderr))
}

fn numbers(line: &str) -> Vec<f64> {
    line.split(',').map(|v| v.parse().expect("a number")).collect()
}

#[test]
fn pytorch_exports_import_and_predict_pytorchs_numbers() {
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/onnx");
    let dir = tempfile::tempdir().expect("temp dir");
    // Each export: whether it is a classifier, its layers and its outputs.
    let exports = [
        ("torch_mlp", false, 5, 5),
        ("torch_lenet", true, 12, 10),
        ("torch_gelu", false, 5, 5),
        ("torch_gelu_op", false, 5, 5),
        ("torch_lstm", false, 3, 3),
        ("torch_rnn", false, 2, 3),
        ("torch_log_softmax", true, 4, 4),
        ("torch_padded_pools", false, 6, 3),
        ("torch_clips", false, 7, 4),
        ("torch_conv1d", false, 7, 3),
        ("torch_gru", false, 3, 3),
        ("torch_lstm_first_state", false, 2, 3),
        ("dynamo_lstm", false, 3, 3),
        ("dynamo_gru", false, 3, 3),
        ("torch_bidirectional", false, 4, 3),
        ("torch_bidirectional_states", false, 3, 3),
        ("dynamo_bidirectional", false, 3, 3),
        ("torch_grouped", false, 7, 3),
        ("torch_grouped_conv1d", false, 3, 3),
        ("torch_mobilenet", false, 22, 3),
    ];
    for (name, classifier, layers, outputs) in exports {
        let model = dir.path().join(format!("{name}.nn"));
        let path = |p: &Path| p.display().to_string();
        let (code, out, err) = nnc(&["import", &path(&data.join(format!("{name}.onnx"))), "-o", &path(&model)]);
        assert_eq!(code, 0, "{err}");
        assert!(out.contains(&format!("({layers} layers,")), "{out}");
        let source = std::fs::read_to_string(&model).expect("written");
        let target =
            if classifier { format!("target y: class({outputs})") } else { format!("target y: real[{outputs}]") };
        assert!(source.contains(&target), "{source}");
        let (code, _, err) = nnc(&["check", &path(&model)]);
        assert_eq!(code, 0, "{err}");
        let weights = model.with_extension("safetensors");
        let inputs = data.join(format!("{name}_inputs.csv"));
        let (code, printed, err) =
            nnc(&["predict", &path(&model), "--weights", &path(&weights), "--input", &path(&inputs)]);
        assert_eq!(code, 0, "{err}");
        let expected = std::fs::read_to_string(data.join(format!("{name}_outputs.csv"))).expect("outputs");
        let rows: Vec<&str> = printed.lines().skip(1).collect();
        assert_eq!(rows.len(), 8);
        for (ours, theirs) in rows.iter().zip(expected.lines()) {
            let ours = numbers(ours);
            // A classifier's line starts with the class.
            let ours = if classifier { &ours[1..] } else { &ours[..] };
            for (a, b) in ours.iter().zip(numbers(theirs)) {
                assert!((a - b).abs() <= 1e-5 + 1e-4 * b.abs(), "{name}: {a} vs PyTorch's {b}\n{printed}");
            }
        }
    }
    let lenet = std::fs::read_to_string(dir.path().join("torch_lenet.nn")).expect("written");
    assert!(lenet.contains("conv2d(6, kernel = 5, padding = 2)") && lenet.contains("avgpool(2)"), "{lenet}");
    assert!(lenet.contains("leaky_relu(alpha = 0.1)"), "{lenet}");
    // PyTorch's gelus, spelt out at opset 17 and as ONNX's op at 20, are nnc's.
    for name in ["torch_gelu", "torch_gelu_op"] {
        let source = std::fs::read_to_string(dir.path().join(format!("{name}.nn"))).expect("written");
        assert!(source.matches("|> gelu").count() == 2 && source.contains("|> gelu(tanh = true)"), "{source}");
    }
    // The recurrent layers start from the zeros PyTorch builds from the
    // batch size, and the dense layer reads their last step.
    let lstm = std::fs::read_to_string(dir.path().join("torch_lstm.nn")).expect("written");
    assert!(lstm.contains("x |> lstm(8, sequences = true) |> lstm(8) |> dense(3)"), "{lstm}");
    let rnn = std::fs::read_to_string(dir.path().join("torch_rnn.nn")).expect("written");
    assert!(rnn.contains("x |> rnn(8) |> dense(3)"), "{rnn}");
    // A stack's final states `h_n`: its last layer's, or its first's alone.
    let gru = std::fs::read_to_string(dir.path().join("torch_gru.nn")).expect("written");
    assert!(gru.contains("x |> gru(8, sequences = true) |> gru(8) |> dense(3)"), "{gru}");
    let first = std::fs::read_to_string(dir.path().join("torch_lstm_first_state.nn")).expect("written");
    assert!(first.contains("x |> lstm(8) |> dense(3)"), "{first}");
    // PyTorch's dynamo exporter reshapes each layer's states to drop their direction axis.
    for (name, cell) in [("dynamo_lstm", "lstm"), ("dynamo_gru", "gru")] {
        let source = std::fs::read_to_string(dir.path().join(format!("{name}.nn"))).expect("written");
        assert!(source.contains(&format!("x |> {cell}(8, sequences = true) |> {cell}(8) |> dense(3)")), "{source}");
    }
    // Both ways: every step's states, and `cat([h[-2], h[-1]])` of a stack.
    let states = std::fs::read_to_string(dir.path().join("torch_bidirectional_states.nn")).expect("written");
    let stack = "x |> gru(8, bidirectional = true, sequences = true) |> gru(8, bidirectional = true) |> dense(3)";
    assert!(states.contains(stack), "{states}");
    let grouped = std::fs::read_to_string(dir.path().join("torch_grouped.nn")).expect("written");
    assert!(grouped.contains("conv2d(8, kernel = 3, groups = 8, bias = false)"), "{grouped}");
    let clips = std::fs::read_to_string(dir.path().join("torch_clips.nn")).expect("written");
    assert!(clips.contains("clip(min = 0.0, max = 6.0)") && clips.contains("clip(min = -1.0, max = 1.0)"), "{clips}");
    let sequence = std::fs::read_to_string(dir.path().join("torch_conv1d.nn")).expect("written");
    assert!(sequence.contains("|> maxpool(2) |> conv1d(4, kernel = 3, padding = 1) |> avgpool(3"), "{sequence}");
    let pools = std::fs::read_to_string(dir.path().join("torch_padded_pools.nn")).expect("written");
    assert!(pools.contains("maxpool(3, stride = 2, padding = 1) |> avgpool(3, stride = 2, padding = 1)"), "{pools}");
}

/// A model of two inputs, exported and imported back, is a model of the
/// same two inputs that predicts the same numbers from the same rows.
#[test]
fn an_export_of_two_inputs_imports_back_and_predicts_the_same() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = |name: &str| dir.path().join(name).display().to_string();
    let original = "models/two_inputs_digits.nn";
    let (code, _, err) = nnc(&["train", original, "--epochs", "1", "--quiet", "--save", &path("w.safetensors")]);
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = nnc(&["export", original, "--weights", &path("w.safetensors"), "-o", &path("m.onnx")]);
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = nnc(&["import", &path("m.onnx"), "-o", &path("imported.nn")]);
    assert_eq!(code, 0, "{err}");
    let source = std::fs::read_to_string(path("imported.nn")).expect("written");
    assert_eq!(source.matches("\n  input ").count(), 2, "{source}");
    let predict = |model: &str, weights: &str| {
        let (code, out, err) =
            nnc(&["predict", model, "--weights", weights, "--input", "builtin:digits", "--full-precision"]);
        assert_eq!(code, 0, "{err}");
        out
    };
    let before = predict(original, &path("w.safetensors"));
    let after = predict(&path("imported.nn"), &path("imported.safetensors"));
    assert_eq!(before.lines().count(), 360);
    assert_eq!(after.lines().count(), 360, "{after}");
    // The rows of numbers, past the CSV header line.
    for (a, b) in before.lines().zip(after.lines()).skip(1) {
        let (a_numbers, b_numbers) = (numbers(a), numbers(b));
        assert_eq!(a_numbers.len(), b_numbers.len(), "{a}\n{b}");
        for (x, y) in a_numbers.iter().zip(b_numbers) {
            assert!((x - y).abs() <= 1e-6, "{a}\n{b}");
        }
    }
}

#[test]
fn files_that_are_not_onnx_models_are_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/onnx/torch_mlp.onnx");
    let bytes = std::fs::read(&data).expect("read");
    let truncated = dir.path().join("cut.onnx");
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).expect("write");
    let text = dir.path().join("text.onnx");
    std::fs::write(&text, "model m { input x: [2] }").expect("write");
    let out = dir.path().join("m.nn").display().to_string();
    for file in [&truncated, &text] {
        let (code, _, err) = nnc(&["import", &file.display().to_string(), "-o", &out]);
        assert_eq!(code, 1, "{err}");
        assert!(err.contains("not an ONNX model") || err.contains("names no ONNX opset"), "{err}");
        assert!(!Path::new(&out).exists());
    }
    let (code, _, err) = nnc(&["import", "no-such.onnx", "-o", &out]);
    assert_eq!(code, 2, "{err}");
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig { cases: 128, ..Default::default() })]

    /// Damaged ONNX files (bytes changed, cut short) are refused or read,
    /// never a panic.
    #[test]
    fn damaged_files_never_panic(
        file in proptest::sample::select(&["torch_lenet", "torch_lstm", "torch_gru"][..]),
        edits in proptest::collection::vec((0usize..300_000, 0u8..=255), 1..8),
        cut in 0usize..300_000,
    ) {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/onnx/{file}.onnx"));
        let mut bytes = std::fs::read(path).expect("read");
        for (at, value) in edits {
            let at = at % bytes.len();
            bytes[at] = value;
        }
        bytes.truncate(bytes.len() - cut % bytes.len());
        let _ = nnc::onnx::import(&bytes, "damaged", None);
    }
}
