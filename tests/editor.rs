//! A real editor as the client: Neovim's built-in LSP client, configured by
//! `editors/neovim/nnc.lua`, opens a model with a shape mistake and then a
//! second model, and reports the diagnostics it received from the one
//! `nnc lsp` serving both.
//!
//! Neovim is an optional part (the README's "Editors" section); where it is
//! not installed the test says so and passes, unless `NNC_REQUIRE_EDITORS`
//! is set, as `.ci/run` (which installs Neovim) sets it.

use std::process::Command;

#[test]
fn neovim_shows_the_shape_mistake() {
    if Command::new("nvim").arg("--version").output().is_err() {
        assert!(std::env::var_os("NNC_REQUIRE_EDITORS").is_none(), "NNC_REQUIRE_EDITORS is set but nvim is missing");
        eprintln!("nvim is not installed: the editor test needs it (apt-get install neovim)");
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let model = dir.path().join("bad shape.nn");
    std::fs::write(
        &model,
        "model m {\n  input image: [1, 28, 28] // 28×28\n  target digit: class(10)\n  image |> dense(10) => logits\n  loss = cross_entropy(logits, digit)\n}\n",
    )
    .expect("write");
    let second = dir.path().join("second.nn");
    std::fs::write(
        &second,
        "model n {\n  input x: [4]\n  target y: real[1]\n  x |> dense(1) |> sigmoidd => p\n  loss = mse(p, y)\n}\n",
    )
    .expect("write");
    let out = dir.path().join("seen.txt");
    let root = env!("CARGO_MANIFEST_DIR");
    let status = Command::new("nvim")
        .args(["--headless", "--clean", "-n", "-i", "NONE", "-c", &format!("luafile {root}/tests/editor_client.lua")])
        .env("NNC_BIN", env!("CARGO_BIN_EXE_nnc"))
        .env("CONFIG", format!("{root}/editors/neovim/nnc.lua"))
        .env("MODEL", &model)
        .env("MODEL2", &second)
        .env("OUT", &out)
        .env("HOME", dir.path())
        .env("XDG_STATE_HOME", dir.path())
        .env("XDG_DATA_HOME", dir.path())
        .stdin(std::process::Stdio::null())
        .output()
        .expect("nvim runs");
    let seen = std::fs::read_to_string(&out).unwrap_or_else(|e| panic!("nvim wrote nothing ({e}): {status:?}"));
    let lines: Vec<&str> = seen.lines().collect();
    assert_eq!(lines[..2], ["filetype nn", "clients 1"], "{seen}");
    // Line 4, column 11 (0-based, where `dense` starts), severity 1 (error).
    assert_eq!(lines.len(), 5, "one diagnostic per file: {seen}");
    assert!(lines[2].starts_with("4:11:1:`dense` expects a vector [features]"), "{seen}");
    assert_eq!(lines[3], "servers 1", "{seen}");
    assert!(lines[4].starts_with("4:19:1:unknown layer `sigmoidd`"), "{seen}");
    assert!(lines[2].contains("found [1, 28, 28]") && lines[2].contains("help: insert `flatten` before it"), "{seen}");
}

/// The VS Code extension's files are valid JSON, its grammar highlights
/// every keyword of `grammar/nn.pest`, and it starts `nnc lsp`.
#[test]
fn the_vscode_extension_knows_the_language() {
    let root = env!("CARGO_MANIFEST_DIR");
    let read = |path: &str| std::fs::read_to_string(format!("{root}/editors/vscode/{path}")).expect("readable");
    for path in ["package.json", "language-configuration.json", "syntaxes/nn.tmLanguage.json"] {
        serde_json::from_str::<serde_json::Value>(&read(path)).unwrap_or_else(|e| panic!("{path}: {e}"));
    }
    let grammar = read("syntaxes/nn.tmLanguage.json");
    let pest = std::fs::read_to_string(format!("{root}/grammar/nn.pest")).expect("grammar");
    let keywords = pest.lines().find(|l| l.starts_with("keyword")).expect("the keyword rule");
    for word in keywords.split('"').skip(1).step_by(2) {
        assert!(
            grammar.contains(&format!("{word}|")) || grammar.contains(&format!("|{word})")),
            "{word} not highlighted"
        );
    }
    assert!(read("extension.js").contains(r#"args: ["lsp"]"#));
}
