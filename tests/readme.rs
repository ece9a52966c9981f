//! The README's session is real: every `$ nnc …` command in it runs, and its
//! output matches the README's text (times masked; a `...` line stands for
//! lines the README leaves out). The README cannot drift from nnc.

use std::io::Read;
use std::path::Path;
use std::process::Command;

/// The commands of the README's "A session" block, each with its output.
fn session() -> Vec<(String, Vec<String>)> {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).expect("README");
    let section = readme.split("## A session").nth(1).expect("a session section");
    let block = section.split("```").nth(1).expect("a code block");
    let mut commands: Vec<(String, Vec<String>)> = Vec::new();
    // The block's first line (after the fence) is empty and belongs to no command.
    for line in block.lines() {
        if let Some(command) = line.strip_prefix("$ nnc ") {
            commands.push((command.to_string(), Vec::new()));
        } else if let Some((_, output)) = commands.last_mut()
            && !line.is_empty()
        {
            output.push(line.to_string());
        }
    }
    commands
}

/// `(0.4 s)` and `(359 rows, 1.2 s)` become `(… s)` and `(359 rows, … s)`.
fn mask_times(line: &str) -> String {
    let mut out = String::new();
    for (i, part) in line.split(" s)").enumerate() {
        if i > 0 {
            out.push_str("… s)");
        }
        // Drop the number that ends `part` when a ` s)` follows it.
        let keep = if line.split(" s)").count() > i + 1 {
            part.trim_end_matches(|c: char| c.is_ascii_digit() || c == '.')
        } else {
            part
        };
        out.push_str(keep);
    }
    out
}

/// Whether `actual` is `expected` with each `...` line standing for any lines.
fn matches(expected: &[String], actual: &[String]) -> bool {
    match expected.split_first() {
        None => actual.is_empty(),
        Some((first, rest)) if first.trim() == "..." => {
            (0..=actual.len()).any(|left_out| matches(rest, &actual[left_out..]))
        }
        Some((first, rest)) => {
            actual.first().is_some_and(|line| mask_times(line) == mask_times(first)) && matches(rest, &actual[1..])
        }
    }
}

#[test]
fn the_readme_session_is_real_output() {
    let dir = tempfile::tempdir().expect("temp dir");
    let models = Path::new(env!("CARGO_MANIFEST_DIR")).join("models");
    std::os::unix::fs::symlink(&models, dir.path().join("models")).expect("link models");
    // rows.csv: the first two digits of the test split.
    let mut text = String::new();
    flate2::read::GzDecoder::new(std::fs::File::open(models.join("data/digits_test.csv.gz")).expect("digits"))
        .read_to_string(&mut text)
        .expect("gunzip");
    let rows: Vec<&str> = text.lines().take(3).collect();
    std::fs::write(dir.path().join("rows.csv"), rows.join("\n") + "\n").expect("rows.csv");
    let commands = session();
    assert!(commands.len() >= 5, "the session shows check, summary, train, eval and predict");
    for (command, expected) in commands {
        let out = Command::new(env!("CARGO_BIN_EXE_nnc"))
            .args(command.split_whitespace())
            .current_dir(dir.path())
            .output()
            .expect("nnc runs");
        assert!(out.status.success(), "nnc {command}: {}", String::from_utf8_lossy(&out.stderr));
        let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
        let actual: Vec<String> = text.lines().filter(|l| !l.is_empty()).map(str::to_string).collect();
        assert!(
            matches(&expected, &actual),
            "the README shows for `nnc {command}`:\n{}\n\nbut nnc prints:\n{}",
            expected.join("\n"),
            actual.join("\n")
        );
    }
}
