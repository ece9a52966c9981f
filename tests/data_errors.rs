//! Bad data is normal input: every problem exits 1 with a message naming the
//! file and line and pointing at the model's declaration; nothing panics.

use std::path::Path;
use std::process::Command;

const MODEL: &str = "model m {
  input  x: [3]
  target y: class(4)
  x |> dense(4) => logits
  loss = cross_entropy(logits, y)
  train { data = csv(\"train.csv\") epochs = 1 }
}
";

fn train_with(files: &[(&str, &[u8])]) -> (i32, String) {
    let dir = project(MODEL, files);
    run(&dir.path().join("m.nn"), &[])
}

/// A folder holding `model` as `m.nn` and `files`.
fn project(model: &str, files: &[(&str, &[u8])]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("m.nn"), model).expect("write model");
    for (name, bytes) in files {
        std::fs::write(dir.path().join(name), bytes).expect("write data");
    }
    dir
}

fn run(model: &Path, extra: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_nnc")).arg("train").arg(model).args(extra).output().expect("nnc runs");
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stderr).into_owned())
}

fn assert_error(code: i32, err: &str, needles: &[&str]) {
    assert_eq!(code, 1, "{err}");
    assert!(!err.contains("panicked"), "{err}");
    for n in needles {
        assert!(err.contains(n), "expected `{n}` in:\n{err}");
    }
}

#[test]
fn row_of_the_wrong_width() {
    let (code, err) = train_with(&[("train.csv", b"a,b,c,label\n1,2,3,0\n1,2,0\n")]);
    assert_error(
        code,
        &err,
        &["train.csv:3", "this row has 3 values, the header has 4", "input  x: [3]", "nnc::data::mismatch"],
    );
}

#[test]
fn header_of_the_wrong_width() {
    let (code, err) = train_with(&[("train.csv", b"a,b,label\n1,2,0\n")]);
    assert_error(code, &err, &["train.csv:1", "2 feature column(s)", "the model's input has 3"]);
}

/// Spreadsheets quote numbers and names: one pair of quotes is read through;
/// an empty cell is named as empty, not as "`` is not a number".
#[test]
fn quoted_cells_are_read_and_empty_ones_named() {
    let (code, err) = train_with(&[("train.csv", b"\"a\",\"b\",c,\"label\"\n\"1\",\" 2 \",3,0\n1,2,3,\"1\"\n")]);
    assert_eq!(code, 0, "{err}");
    let (code, err) = train_with(&[("train.csv", b"a,b,c,label\n1,2,3,0\n1,,3,1\n")]);
    assert_error(code, &err, &["train.csv:3", "column `b` is empty on this row", "missing values"]);
}

#[test]
fn value_that_is_not_a_number() {
    let (code, err) = train_with(&[("train.csv", b"a,b,c,label\n1,2,3,0\n1,two,3,1\n")]);
    assert_error(code, &err, &["train.csv:3", "`two` in column `b` is not a number"]);
}

#[test]
fn label_out_of_range() {
    let (code, err) = train_with(&[("train.csv", b"a,b,c,label\n1,2,3,0\n1,2,3,4\n")]);
    assert_error(code, &err, &["train.csv:3", "label 4 is not a class id in 0..4", "target y: class(4)"]);
}

#[test]
fn missing_file() {
    let (code, err) = train_with(&[]);
    assert_error(code, &err, &["train.csv", "cannot read the file"]);
}

#[test]
fn empty_and_header_only_files() {
    let (code, err) = train_with(&[("train.csv", b"")]);
    assert_error(code, &err, &["the file is empty"]);
    let (code, err) = train_with(&[("train.csv", b"a,b,c,label\n")]);
    assert_error(code, &err, &["no rows"]);
}

#[test]
fn truncated_gzip() {
    let (code, err) = train_with(&[("train.csv", &[0x1f, 0x8b, 0x08, 0x00, 0x00])]);
    assert_error(code, &err, &["train.csv", "cannot decompress"]);
}

fn idx(dims: &[u32], data: &[u8]) -> Vec<u8> {
    let mut out = vec![0, 0, 8, dims.len() as u8];
    for d in dims {
        out.extend_from_slice(&d.to_be_bytes());
    }
    out.extend_from_slice(data);
    out
}

#[test]
fn idx_images_of_the_wrong_size() {
    let dir = tempfile::tempdir().expect("temp dir");
    let model = MODEL
        .replace("csv(\"train.csv\")", "idx(\"img\", \"lab\")")
        .replace("[3]", "[1, 2, 2]")
        .replace("x |>", "x |> flatten |>");
    std::fs::write(dir.path().join("m.nn"), model).expect("write");
    std::fs::write(dir.path().join("img"), idx(&[2, 3, 3], &[0; 18])).expect("write");
    std::fs::write(dir.path().join("lab"), idx(&[2], &[0, 1])).expect("write");
    let (code, err) = run(&dir.path().join("m.nn"), &[]);
    assert_error(code, &err, &["img", "the images are 3×3 = 9 values, the model's input has 4"]);
    // The right size trains.
    std::fs::write(dir.path().join("img"), idx(&[2, 2, 2], &[0; 8])).expect("write");
    let weights = dir.path().join("w.safetensors");
    let (code, err) = run(&dir.path().join("m.nn"), &["--save", weights.to_str().expect("utf-8")]);
    assert_eq!(code, 0, "{err}");
    // `predict` reads images a part at a time: where the data ends against
    // the header's promise is still an error, however far in.
    let predict = |images: Vec<u8>| {
        std::fs::write(dir.path().join("rows.idx"), images).expect("write");
        let out = Command::new(env!("CARGO_BIN_EXE_nnc"))
            .args(["predict", "m.nn", "--weights", "w.safetensors", "--input", "rows.idx", "--output", "p.csv"])
            .current_dir(dir.path())
            .output()
            .expect("runs");
        (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stderr).into_owned())
    };
    let (code, err) = predict(idx(&[3, 2, 2], &[7; 12]));
    assert_eq!(code, 0, "{err}");
    let written = std::fs::read_to_string(dir.path().join("p.csv")).expect("predictions");
    assert_eq!(written.lines().count(), 4, "{written}");
    for (images, needle) in [
        (idx(&[3, 2, 2], &[7; 13]), "the header promises 12 bytes of data but the file has more"),
        (idx(&[3, 2, 2], &[7; 11]), "the header promises 12 bytes of data but the file has 11"),
        (idx(&[u32::MAX, 2, 2], &[7; 12]), "the header promises 17179869180 bytes of data but the file has 12"),
        (idx(&[3, 3, 1], &[7; 9]), "the images are 3×1 = 3 values, the model's input has 4"),
    ] {
        let (code, err) = predict(images);
        assert_error(code, &err, &["rows.idx", needle]);
        assert_eq!(std::fs::read_to_string(dir.path().join("p.csv")).expect("kept"), written, "{needle}");
    }
    // The end is checked before the last part's rows are predicted, so
    // standard output gets none of a file that is all one part.
    std::fs::write(dir.path().join("rows.idx"), idx(&[3, 2, 2], &[7; 13])).expect("write");
    let out = Command::new(env!("CARGO_BIN_EXE_nnc"))
        .args(["predict", "m.nn", "--weights", "w.safetensors", "--input", "rows.idx"])
        .current_dir(dir.path())
        .output()
        .expect("runs");
    assert_eq!((out.status.code(), out.stdout.len()), (Some(1), 0), "{}", String::from_utf8_lossy(&out.stderr));
    // A truncated IDX file is an error, not a panic.
    std::fs::write(dir.path().join("img"), &idx(&[2, 2, 2], &[0; 8])[..9]).expect("write");
    let (code, err) = run(&dir.path().join("m.nn"), &[]);
    assert_error(code, &err, &["img", "truncated"]);
}

#[test]
fn metrics_json_is_written() {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("m.nn"), MODEL).expect("write model");
    std::fs::write(dir.path().join("train.csv"), "a,b,c,label\n1,2,3,0\n3,2,1,1\n0,0,1,2\n1,1,1,3\n").expect("write");
    let json = dir.path().join("metrics.json");
    let (code, err) =
        run(&dir.path().join("m.nn"), &["--epochs", "3", "--metrics-json", json.to_str().expect("utf-8")]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json).expect("written")).expect("JSON");
    assert_eq!(v["epochs"].as_array().map(Vec::len), Some(3));
    assert!(v["epochs"][2]["train_seconds"].as_f64().is_some_and(|s| s >= 0.0), "{v}");
    assert!(v["test_loss"].as_f64().is_some());
    assert!(v["test_accuracy"].as_f64().is_some());
}

#[test]
fn token_ids_outside_the_vocabulary() {
    let dir = tempfile::tempdir().expect("temp dir");
    let model = "model m {
  input  ids: tokens[3]
  target y: class(2)
  ids |> embedding(5, 2) |> rnn(4) |> dense(2) => logits
  loss = cross_entropy(logits, y)
  train { data = csv(\"train.csv\") epochs = 1 }
}
";
    std::fs::write(dir.path().join("m.nn"), model).expect("write model");
    for (row, needle) in [("1,2,5,0", "`5` is not a token id"), ("1,2.5,3,1", "`2.5` is not a token id")] {
        std::fs::write(dir.path().join("train.csv"), format!("a,b,c,label\n0,1,2,1\n{row}\n")).expect("write");
        let (code, err) = run(&dir.path().join("m.nn"), &[]);
        assert_error(code, &err, &["train.csv:3", needle, "whole numbers from 0"]);
    }
    std::fs::write(dir.path().join("train.csv"), "a,b,c,label\n0,1,2,1\n4,3,0,0\n").expect("write");
    let (code, err) = run(&dir.path().join("m.nn"), &[]);
    assert_eq!(code, 0, "{err}");
}

#[test]
fn a_file_without_a_header_row_is_refused_not_shortened() {
    let (code, err) = train_with(&[("train.csv", b"1,2,3,0\n4,5,6,1\n")]);
    assert_error(code, &err, &["train.csv:1", "first row holds numbers", "add a header row"]);
}

#[test]
fn validation_without_rows_to_spare_is_an_error() {
    let model = MODEL.replace("epochs = 1", "epochs = 1 validation = 0.5");
    let dir = project(&model, &[("train.csv", b"a,b,c,label\n1,2,3,0\n")]);
    let (code, err) = run(&dir.path().join("m.nn"), &[]);
    assert_error(code, &err, &["validation = 0.5", "at least 2 training rows"]);
}

#[test]
fn test_data_without_training_data_is_a_usage_error() {
    let dir = project(MODEL, &[("train.csv", b"a,b,c,label\n1,2,3,0\n")]);
    let (code, err) = run(&dir.path().join("m.nn"), &["--test", "other.csv"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--test goes with --data"), "{err}");
}

#[test]
fn final_metrics_come_from_the_validation_rows_when_there_is_no_test_split() {
    let model = MODEL.replace("epochs = 1", "epochs = 1 validation = 0.5");
    let rows: String = (0..8).map(|i| format!("{i},1,2,{}\n", i % 4)).collect();
    let dir = project(&model, &[("train.csv", format!("a,b,c,label\n{rows}").as_bytes())]);
    let out = Command::new(env!("CARGO_BIN_EXE_nnc")).arg("train").arg(dir.path().join("m.nn")).output().expect("runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let last = stdout.lines().last().unwrap_or_default();
    assert!(last.starts_with("validation:") && last.contains("(4 rows"), "{stdout}");
}

/// Inputs without end or shape are bounded reads with clear errors: a device
/// as data, a binary file as CSV, a model file that is not text or is huge.
#[test]
fn endless_and_binary_inputs_are_refused_quickly() {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("m.nn"), MODEL).expect("write model");
    let (code, err) = run(&dir.path().join("m.nn"), &["--data", "/dev/zero"]);
    assert_error(code, &err, &["/dev/zero", "NUL bytes"]);

    let nnc = |file: &Path| {
        let out = Command::new(env!("CARGO_BIN_EXE_nnc")).arg("check").arg(file).output().expect("runs");
        (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stderr).into_owned())
    };
    let latin1 = dir.path().join("latin1.nn");
    std::fs::write(&latin1, b"model m {\n  input x: [4]\n  caf\xe9\n}\n").expect("write");
    let (code, err) = nnc(&latin1);
    assert_eq!(code, 2);
    assert!(err.contains("line 3, column 6") && err.contains("not UTF-8"), "{err}");
    let huge = dir.path().join("huge.nn");
    std::fs::write(&huge, vec![b' '; 2 << 20]).expect("write");
    let (code, err) = nnc(&huge);
    assert_eq!(code, 2);
    assert!(err.contains("larger than 1024 KiB"), "{err}");
}

#[test]
fn an_idx_header_promising_more_than_nnc_reads_is_refused_before_reading() {
    // 2^31 images of 2^31 pixels: the header alone says it cannot be real.
    let images = idx(&[1 << 31, 1 << 31, 1], &[]);
    let labels = idx(&[4], &[0, 1, 2, 3]);
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("i.idx"), images).expect("write");
    std::fs::write(dir.path().join("l.idx"), labels).expect("write");
    let model = MODEL.replace("csv(\"train.csv\")", "idx(\"i.idx\", \"l.idx\")");
    std::fs::write(dir.path().join("m.nn"), model).expect("write model");
    let (code, err) = run(&dir.path().join("m.nn"), &[]);
    assert_error(code, &err, &["i.idx", "the header promises 2147483648×2147483648×1 bytes"]);
}

/// `nnc predict` matches columns by the names the training data had, in
/// any order, other columns ignored; without those names, by position, and
/// an extra column that is not a label is an error naming both widths —
/// never a shifted, wrong prediction.
#[test]
fn predict_places_columns_by_name_or_refuses() {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("m.nn"), MODEL).expect("write model");
    let rows: String = (0..8).map(|i| format!("{i},1,2,{}\n", i % 4)).collect();
    std::fs::write(dir.path().join("train.csv"), format!("a,b,c,label\n{rows}")).expect("write data");
    let trained = Command::new(env!("CARGO_BIN_EXE_nnc"))
        .args(["train", "m.nn", "--quiet", "--save", "w.safetensors"])
        .current_dir(dir.path())
        .output()
        .expect("runs");
    assert!(trained.status.success(), "{}", String::from_utf8_lossy(&trained.stderr));
    let predict = |csv: &str| {
        std::fs::write(dir.path().join("rows.csv"), csv).expect("write rows");
        let out = Command::new(env!("CARGO_BIN_EXE_nnc"))
            .args(["predict", "m.nn", "--weights", "w.safetensors", "--input", "rows.csv"])
            .current_dir(dir.path())
            .output()
            .expect("runs");
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        (out.status.code().unwrap_or(-1), text(&out.stdout), text(&out.stderr))
    };
    let (code, expected, err) = predict("a,b,c\n5,1,2\n0,3,1\n");
    assert_eq!(code, 0, "{err}");
    // By name: an id first, the columns in another order, a label last.
    for csv in ["id,a,b,c\n7,5,1,2\n8,0,3,1\n", "c,a,b\n2,5,1\n1,0,3\n", "b,label,c,a\n1,0,2,5\n3,1,1,0\n"] {
        let (code, out, err) = predict(csv);
        assert_eq!((code, &out), (0, &expected), "{csv}: {err}");
    }
    // The same values by position in that other order predict otherwise
    // (so the matches above are not a coincidence of the weights).
    let (code, shuffled, err) = predict("p,q,r\n2,5,1\n1,0,3\n");
    assert_eq!(code, 0, "{err}");
    assert_ne!(shuffled, expected);
    let (code, _, err) = predict("id,a,b,x\n7,1,2,3\n");
    assert_error(code, &err, &["no column `c`", "trained on"]);
    // Other names: by position, so an extra column is refused.
    let (code, _, err) = predict("id,p,q,r\n7,1,2,3\n");
    assert_error(code, &err, &["4 feature column(s)", "input has 3 values"]);
    let (code, _, err) = predict("p,q,r,label\n1,2,3,0\n");
    assert_eq!(code, 0, "a trailing label column is fine: {err}");
}

#[test]
fn semicolons_and_swapped_idx_files_say_what_they_are() {
    let (code, err) = train_with(&[("train.csv", b"a;b;c;label\n1;2;3;0\n")]);
    assert_error(code, &err, &["semicolons", "comma-separated"]);
    let images = idx(&[4, 1, 3], &[0; 12]);
    let labels = idx(&[4], &[0, 1, 2, 3]);
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("i.idx"), images).expect("write");
    std::fs::write(dir.path().join("l.idx"), labels).expect("write");
    // The labels named first, where the images go.
    let model = MODEL.replace("csv(\"train.csv\")", "idx(\"l.idx\", \"i.idx\")");
    std::fs::write(dir.path().join("m.nn"), model).expect("write model");
    let (code, err) = run(&dir.path().join("m.nn"), &[]);
    assert_error(code, &err, &["l.idx", "it holds labels, not images", "swapped"]);
}

#[test]
fn unwritable_outputs_are_refused_before_training() {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("m.nn"), MODEL).expect("write model");
    std::fs::write(dir.path().join("train.csv"), "a,b,c,label\n1,2,3,0\n4,5,6,1\n").expect("write data");
    for flag in ["--save", "--plot", "--metrics-json"] {
        let target = if flag == "--plot" { "/nonexistent/curves.svg" } else { "/nonexistent/out" };
        let out = Command::new(env!("CARGO_BIN_EXE_nnc"))
            .args(["train", "m.nn", flag, target])
            .current_dir(dir.path())
            .output()
            .expect("runs");
        let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert_eq!(out.status.code(), Some(2), "{flag}: {stderr}");
        assert!(stderr.contains("cannot write /nonexistent/"), "{flag}: {stderr}");
        assert!(!stdout.contains("epoch"), "{flag}: no epoch ran before the error: {stdout}");
    }
}

/// Argument names may be keywords: the README's `csv(…, target = …)` parses
/// and picks the named column, and a loss takes `target =` by name.
#[test]
fn keyword_argument_names_parse() {
    let model = MODEL
        .replace("csv(\"train.csv\")", "csv(\"train.csv\", target = \"label\")")
        .replace("cross_entropy(logits, y)", "cross_entropy(prediction = logits, target = y)");
    // The label first: only the named column can be the target.
    let dir = project(&model, &[("train.csv", b"label,a,b,c\n0,1,2,3\n3,4,5,6\n")]);
    let (code, err) = run(&dir.path().join("m.nn"), &["--quiet"]);
    assert_eq!(code, 0, "{err}");
}

#[test]
fn a_value_beyond_f32_is_named_as_such() {
    let (code, err) = train_with(&[("train.csv", b"a,b,c,label\n1e39,2,3,0\n")]);
    assert_error(code, &err, &["train.csv:2", "1e39", "beyond the range of 32-bit floats"]);
}

/// A file the model names that cannot be read points at the model's
/// `data = …`, where the name is written; a row that does not fit points at
/// the declaration it disagrees with.
#[test]
fn file_problems_point_at_the_data_setting() {
    let (code, err) = train_with(&[]);
    assert_error(code, &err, &["train.csv", "the data named here", "data = csv(\"train.csv\")"]);
    let (code, err) = train_with(&[("train.csv", b"a,b,label\n1,2,0\n")]);
    assert_error(code, &err, &["input  x: [3]"]);
}

/// Rows of two features and one real target, as `parse_csv` takes them.
fn two_features_and_a_real_target() -> nnc::data::RowSpec {
    nnc::data::RowSpec {
        features: 2,
        targets: vec![nnc::data::TargetSpecOfRow::Real(1)],
        vocab: None,
        label_names: vec![],
        feature_names: vec![],
    }
}

/// A CSV of many rows is read in parts side by side: the rows in the
/// file's order, and of several bad rows the first one reported, whichever
/// part it is in.
#[test]
fn many_rows_read_in_order_and_the_first_bad_one_is_reported() {
    use nnc::data::parse_csv;
    let spec = two_features_and_a_real_target();
    let row = |i: usize| format!("{i},{}.5,{}\n", 2 * i, i % 3);
    let good: String = std::iter::once("a,b,y\n".to_string()).chain((0..2000).map(row)).collect();
    let data = parse_csv(good.as_bytes(), "many.csv", &spec, &Default::default()).expect("reads");
    assert_eq!(data.rows, 2000);
    for i in [0, 255, 256, 1999] {
        assert_eq!((data.x[2 * i], data.x[2 * i + 1], data.y[i]), (i as f32, 2.0 * i as f32 + 0.5, (i % 3) as f32));
    }
    // Line 1 is the header: row i is on line i + 2.
    for (bad, later) in [(1500, 1900), (3, 1000), (300, 301)] {
        let mut rows: Vec<String> = (0..2000).map(row).collect();
        rows[bad] = format!("{bad},x,0\n");
        rows[later] = "1,2\n".to_string();
        let text: String = std::iter::once("a,b,y\n".to_string()).chain(rows).collect();
        let e = parse_csv(text.as_bytes(), "many.csv", &spec, &Default::default()).expect_err("a bad row");
        assert_eq!(e.line, Some(bad + 2), "{e:?}");
        assert!(e.message.contains("`x` in column `b` is not a number"), "{e:?}");
    }
}

/// `csv(…, target = …, features = […])` reads the columns named, in the
/// order named, wherever the header has them, and ignores the others; a
/// name the header lacks is an error naming the closest column; `--data`
/// keeps the model's choice of columns.
#[test]
fn columns_are_chosen_by_name() {
    use nnc::check::Columns;
    use nnc::data::parse_csv;
    let spec = two_features_and_a_real_target();
    let chosen = Columns { target: vec!["price".into()], features: vec!["b".into(), "a".into()], ..Columns::default() };
    let csv = b"id,a,price,b,year\n1,10,500,20,2020\n2,11,600,21,2021\n";
    let data = parse_csv(csv, "sales.csv", &spec, &chosen).expect("columns found");
    assert_eq!(
        (data.x, data.y, data.columns),
        (vec![20.0, 10.0, 21.0, 11.0], vec![500.0, 600.0], vec!["b".to_string(), "a".to_string()])
    );
    let typo = Columns { target: vec!["prise".into()], ..chosen.clone() };
    let e = parse_csv(csv, "sales.csv", &spec, &typo).expect_err("no such column");
    assert!(e.message.contains("no column named `prise`") && e.help.contains("did you mean `price`?"), "{e:?}");
    let missing = Columns { features: vec!["b".into(), "rooms".into()], ..chosen };
    let e = parse_csv(csv, "sales.csv", &spec, &missing).expect_err("no such column");
    assert!(e.message.contains("no column named `rooms`") && e.help.contains("id, a, price, b, year"), "{e:?}");

    let model = "model m {
  input  x: [2]
  target price: real[1]
  x |> dense(1) => p
  loss = mse(p, price)
  train { data = csv(\"train.csv\", target = \"price\", features = [\"b\", \"a\"]) epochs = 1 }
}
";
    let files: [(&str, &[u8]); 3] =
        [("train.csv", csv), ("other.csv", b"year,b,price,a\n2020,1,2,3\n"), ("bad.csv", b"b,price\n1,2\n")];
    let dir = project(model, &files);
    let with_data = |file: &str| {
        let data = dir.path().join(file).display().to_string();
        run(&dir.path().join("m.nn"), &["--quiet", "--data", &data])
    };
    let (code, err) = run(&dir.path().join("m.nn"), &["--quiet"]);
    assert_eq!(code, 0, "{err}");
    let (code, err) = with_data("other.csv");
    assert_eq!(code, 0, "{err}");
    let (code, err) = with_data("bad.csv");
    assert_error(code, &err, &["bad.csv:1", "no column named `a`"]);
}
