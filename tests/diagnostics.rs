//! Golden tests: every file under `tests/diagnostics/` is checked and its
//! source plus the rendered report (no colour, width 80) is compared with the
//! committed snapshot in `tests/snapshots/`. A changed report fails the test.

use nnc::diag;
use nnc::pipeline::check_source;

#[test]
fn diagnostics_match_snapshots() {
    insta::glob!("diagnostics/*.nn", |path| {
        let source = std::fs::read_to_string(path).expect("test file is readable");
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("model.nn");
        let checked = check_source(name, &source);
        assert!(!checked.diags.is_empty(), "{name} should produce at least one diagnostic");
        let report = diag::render(&checked.diags, name, &source, false, 80);
        insta::assert_snapshot!(format!("{source}\n----\n{report}"));
    });
}

#[test]
fn json_format_has_positions() {
    let source = "model m {\n  input x: [4]\n  target y: class(3)\n  x |> dense(3) |> rleu => logits\n  loss = cross_entropy(logits, y)\n}\n";
    let checked = check_source("m.nn", source);
    let json: serde_json::Value =
        serde_json::from_str(&diag::to_json(&checked.diags, "m.nn", source)).expect("valid JSON");
    let first = &json[0];
    assert_eq!(first["code"], "nnc::name::unknown_layer");
    assert_eq!(first["line"], 4);
    assert_eq!(first["column"], 20);
    assert_eq!(first["severity"], "error");
    assert_eq!(first["help"], "did you mean `relu`?");
}

/// A diagnostic on a huge line shows an excerpt around what it points at,
/// never the whole line.
#[test]
fn huge_lines_are_shown_as_excerpts() {
    let source = format!(
        "model m {{\n  input x: [4]\n  target y: class(4)\n  x{} |> rleu |> dense(4) => p\n  loss = cross_entropy(p, y)\n}}\n",
        " |> relu".repeat(20_000)
    );
    let checked = check_source("m.nn", &source);
    let report = diag::render(&checked.diags, "m.nn", &source, false, 100);
    assert!(report.contains("unknown layer `rleu`") && report.contains("|> rleu |>"), "{report}");
    // The header names the file's column, not the excerpt's.
    let column = source.lines().nth(3).and_then(|l| l.find("rleu")).expect("rleu") + 1;
    assert!(report.contains(&format!("[m.nn:4:{column}]")), "column {column}: {report}");
    assert!(report.len() < 2_000, "{} bytes of report", report.len());
}

/// The vanishing-gradient lint counts the sigmoids a gradient passes on its
/// way to the first layer: ten warn (¼¹⁰ < 1e-4), six do not (¼⁶ > 1e-4),
/// nor do relu layers, nor sigmoids with batchnorm between them, nor a path
/// around the stack through `add`.
#[test]
fn vanishing_gradient_lint_follows_the_derivatives() {
    let model = |body: &str| {
        format!("model m {{\n  input x: [64]\n  target y: class(10)\n{body}\n  loss = cross_entropy(logits, y)\n}}\n")
    };
    let warns = |body: &str| {
        let checked = check_source("m.nn", &model(body));
        assert!(!checked.has_errors(), "{body}: {:?}", checked.diags);
        checked.diags.iter().any(|d| d.code == "nnc::lint::vanishing_gradients")
    };
    let stack = |n: usize, layer: &str| format!("  x |> repeat({n}) {{ dense(32) |> {layer} }} |> dense(10) => logits");
    assert!(warns(&stack(10, "sigmoid")));
    assert!(warns(&stack(7, "sigmoid")));
    assert!(!warns(&stack(6, "sigmoid")));
    assert!(!warns(&stack(10, "relu")));
    assert!(!warns(&stack(10, "tanh")));
    assert!(!warns(&stack(10, "sigmoid |> batchnorm")));
    let around = "  x |> dense(32) => h\n  h |> repeat(10) { dense(32) |> sigmoid } => deep\n  \
                  add(h, deep) |> dense(10) => logits";
    assert!(!warns(around), "a path around the stack keeps the gradient");
    // The example that shows it.
    let example =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/deep_sigmoid.nn")).expect("example");
    let checked = check_source("deep_sigmoid.nn", &example);
    let codes: Vec<&str> = checked.diags.iter().map(|d| d.code).collect();
    assert_eq!(codes, ["nnc::lint::vanishing_gradients"]);
}
