//! `nnc fmt`: the layout is canonical (idempotent, the same whatever the
//! spacing) and meaning-preserving (the formatted file checks to the same
//! models), on every bundled model and on mutated copies of them.

use std::os::unix::fs::FileTypeExt;
use std::process::Command;

use nnc::format::format_source;
use nnc::pipeline::{Checked, check_source};
use proptest::prelude::*;

/// Every bundled and example model file, with its text.
fn bundled() -> Vec<(String, String)> {
    let root = env!("CARGO_MANIFEST_DIR");
    let mut files = Vec::new();
    for dir in ["models", "examples"] {
        for entry in std::fs::read_dir(format!("{root}/{dir}")).expect("folder") {
            let path = entry.expect("entry").path();
            if path.extension().is_some_and(|e| e == "nn") {
                files.push((path.display().to_string(), std::fs::read_to_string(&path).expect("readable")));
            }
        }
    }
    files.sort();
    assert!(files.len() >= 20, "only {} model files", files.len());
    files
}

/// What checking a file concluded, without positions: each model's layers,
/// shapes, costs, loss and training settings, and the diagnostics' codes.
fn meaning(checked: &Checked) -> String {
    let mut out = String::new();
    for model in &checked.models {
        out += &nnc::summary::summarize(model).to_text();
        for node in &model.nodes {
            out += &format!("{} {:?} {:?} {:?}\n", node.name, node.layer, node.inputs, node.shape);
        }
        let train = model.train.without_positions();
        let losses: Vec<_> = model.losses.iter().map(|l| (l.kind, l.prediction, l.target, l.weight)).collect();
        out += &format!("{losses:?}\n{train:?}\n");
    }
    let codes: Vec<&str> = checked.diags.iter().map(|d| d.code).collect();
    out + &codes.join(" ")
}

fn without_whitespace(text: &str) -> String {
    text.chars().filter(|c| !c.is_whitespace()).collect()
}

/// Formatting `source` is idempotent, keeps every token and comment, and
/// the result checks to the same models; returns the formatted text.
fn assert_canonical(name: &str, source: &str) -> String {
    let formatted = format_source(source).unwrap_or_else(|d| panic!("{name}: {d:?}\n{source}"));
    assert_eq!(format_source(&formatted).expect("formats"), formatted, "{name}: not idempotent\n{source}");
    assert_eq!(without_whitespace(&formatted), without_whitespace(source), "{name}: tokens changed");
    let (before, after) = (check_source(name, source), check_source(name, &formatted));
    assert_eq!(meaning(&after), meaning(&before), "{name}: meaning changed\n{source}\n---\n{formatted}");
    formatted
}

#[test]
fn every_bundled_model_is_formatted() {
    for (name, source) in bundled() {
        let formatted = assert_canonical(&name, &source);
        assert_eq!(formatted, source, "{name} is not in the canonical layout: run `nnc fmt {name}`");
    }
}

/// Byte offsets of the whitespace runs between tokens (outside strings and
/// comments), and of the places between a bracket or separator and the
/// next character where whitespace may be added.
fn gaps(source: &str) -> Vec<(usize, usize)> {
    let bytes = source.as_bytes();
    let mut gaps = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'"' => i += 1 + source[i + 1..].find('"').map_or(bytes.len(), |e| e + 1),
            b'/' if bytes.get(i + 1) == Some(&b'/') => i += source[i..].find('\n').unwrap_or(bytes.len() - i),
            c if c.is_ascii_whitespace() => {
                let end = i + source[i..].find(|c: char| !c.is_ascii_whitespace()).unwrap_or(bytes.len() - i);
                gaps.push((i, end));
                i = end;
            }
            c => {
                let next = bytes.get(i + 1).copied().unwrap_or(b' ');
                if (b"()[]{},:".contains(&c) || b"()[]{},:".contains(&next)) && !next.is_ascii_whitespace() {
                    gaps.push((i + 1, i + 1));
                }
                i += 1;
            }
        }
    }
    gaps
}

/// `source` with the whitespace of some gaps replaced by `choose(old run)`.
fn mutate(source: &str, picks: &[u8], choose: impl Fn(&str, u8) -> String) -> String {
    let mut out = String::new();
    let mut at = 0;
    for (k, (start, end)) in gaps(source).into_iter().enumerate() {
        out += &source[at..start];
        let pick = picks[k % picks.len()];
        let run = &source[start..end];
        out += &if pick.is_multiple_of(3) { run.to_string() } else { choose(run, pick) };
        at = end;
    }
    out + &source[at..]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    /// Spaces and tabs moved around (line breaks kept): the same layout.
    #[test]
    fn spacing_does_not_matter(file in 0usize..21, picks in prop::collection::vec(any::<u8>(), 1..64)) {
        let files = bundled();
        let (name, source) = &files[file % files.len()];
        let spaced = mutate(source, &picks, |run, pick| {
            let lines = run.matches('\n').count();
            let pad = ["", " ", "  ", "\t", "   \t "][usize::from(pick) % 5];
            let horizontal = if lines == 0 && pad.is_empty() { " " } else { pad };
            "\n".repeat(lines) + horizontal
        });
        prop_assert_eq!(assert_canonical(name, &spaced), source.clone());
    }

    /// Line breaks, blank lines and comments added anywhere between tokens:
    /// still canonical and the same models.
    #[test]
    fn line_breaks_and_comments_keep_the_meaning(file in 0usize..21,
                                                 picks in prop::collection::vec(any::<u8>(), 1..64)) {
        let files = bundled();
        let (name, source) = &files[file % files.len()];
        let broken = mutate(source, &picks, |_, pick| {
            ["\n", "\n\n\n", " // a remark\n", "\n  // a remark on its own line\n", "\t\n  "][usize::from(pick) % 5]
                .to_string()
        });
        assert_canonical(name, &broken);
    }
}

fn nnc(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_nnc")).args(args).output().expect("nnc runs");
    let text = |b: Vec<u8>| String::from_utf8(b).expect("utf-8");
    (out.status.code().unwrap_or(-1), text(out.stdout), text(out.stderr))
}

#[test]
fn fmt_rewrites_check_names_and_syntax_errors_stay_untouched() {
    let dir = tempfile::tempdir().expect("tempdir");
    let messy = dir.path().join("messy.nn");
    let tidy = dir.path().join("tidy.nn");
    let broken = dir.path().join("broken.nn");
    let source = "model m{input x:[2] target y:real[1]\nx|>dense(1)=>p loss=mse(p,y)}";
    std::fs::write(&messy, source).expect("write");
    std::fs::write(&tidy, format_source(source).expect("formats")).expect("write");
    std::fs::write(&broken, "model m { input x: [2\n").expect("write");
    let path = |p: &std::path::Path| p.display().to_string();

    let (code, out, _) = nnc(&["fmt", "--check", &path(&messy), &path(&tidy)]);
    assert_eq!((code, out.trim()), (1, path(&messy).as_str()));
    assert_eq!(std::fs::read_to_string(&messy).expect("read"), source, "--check changed a file");

    let (code, _, err) = nnc(&["fmt", &path(&messy), &path(&broken)]);
    assert_eq!(code, 1, "a syntax error is a failure: {err}");
    assert!(err.contains("nnc::syntax::unexpected") && err.contains("broken.nn:2:1"), "{err}");
    assert_eq!(std::fs::read_to_string(&broken).expect("read"), "model m { input x: [2\n");
    assert_eq!(std::fs::read_to_string(&messy).expect("read"), std::fs::read_to_string(&tidy).expect("read"));

    let (code, out, err) = nnc(&["fmt", "--check", &path(&messy), &path(&tidy)]);
    assert_eq!((code, out.as_str(), err.as_str()), (0, "", ""));
}

/// A named pipe formatted in place is refused before it is read: reading
/// would wait for a writer, and the result could not replace it. `--check`
/// reads it as it would a file.
#[test]
fn fmt_in_place_refuses_a_pipe_without_reading_it() {
    use std::io::Write;
    use std::time::{Duration, Instant};
    let dir = tempfile::tempdir().expect("tempdir");
    let pipe = dir.path().join("model.nn");
    let path = pipe.to_str().expect("a path").to_string();
    let made = Command::new("mkfifo").arg(&pipe).status().expect("mkfifo runs");
    assert!(made.success());
    let mut child = Command::new(env!("CARGO_BIN_EXE_nnc"))
        .args(["fmt", &path])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("nnc runs");
    // A guard against waiting for ever on a reader that blocks, not a time limit on nnc.
    let waited = Instant::now();
    while child.try_wait().expect("waits").is_none() && waited.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(20));
    }
    if child.try_wait().expect("waits").is_none() {
        child.kill().expect("kills");
        panic!("nnc fmt waited for a writer to the pipe");
    }
    let out = child.wait_with_output().expect("output");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("not a regular file") && err.contains("nnc fmt -"), "{err}");
    assert!(std::fs::symlink_metadata(&pipe).expect("still there").file_type().is_fifo());

    // --check reads the pipe like a file.
    let writer_path = path.clone();
    let writer = std::thread::spawn(move || {
        let mut pipe = std::fs::OpenOptions::new().write(true).open(writer_path).expect("opens the pipe");
        pipe.write_all(b"model m{input x:[2] target y:real[1]\nx|>dense(1)=>p loss=mse(p,y)}").expect("writes");
    });
    let (code, out, err) = nnc(&["fmt", "--check", &path]);
    writer.join().expect("the writer finishes");
    assert_eq!((code, out.trim()), (1, path.as_str()), "{err}");
}
