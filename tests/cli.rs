//! The `nnc` binary: exit codes and output formats.

use std::process::Command;

fn nnc(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_nnc"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("nnc runs");
    let text = |b: Vec<u8>| String::from_utf8_lossy(&b).into_owned();
    (out.status.code().unwrap_or(-1), text(out.stdout), text(out.stderr))
}

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
