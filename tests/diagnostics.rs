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
