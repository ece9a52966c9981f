//! A run can be stopped at any moment without losing work: Ctrl-C saves the
//! last finished epoch and exits 130; SIGKILL at any time leaves the previous
//! checkpoint whole (checkpoints are written to a temporary file and renamed).

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use nnc::checkpoint;

fn setup() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    let model = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/models/digits_mlp.nn")).expect("model");
    std::fs::write(dir.path().join("m.nn"), model).expect("write");
    dir
}

fn signal(pid: u32, sig: &str) {
    let status = Command::new("kill").args([sig, &pid.to_string()]).status().expect("kill runs");
    assert!(status.success());
}

#[test]
fn ctrl_c_saves_a_checkpoint_and_exits_130() {
    let dir = setup();
    let mut child = Command::new(env!("CARGO_BIN_EXE_nnc"))
        .args(["train", "m.nn", "--epochs", "100000", "--save", "ck.safetensors", "--metrics-json", "m.json"])
        .current_dir(dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starts");
    let stdout = child.stdout.take().expect("stdout");
    // Wait for three finished epochs, then interrupt.
    let epochs =
        BufReader::new(stdout).lines().map_while(Result::ok).filter(|l| l.starts_with("epoch")).take(3).count();
    assert_eq!(epochs, 3);
    signal(child.id(), "-INT");
    let out = child.wait_with_output().expect("exits");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{stderr}");
    assert!(stderr.contains("--resume ck.safetensors"), "{stderr}");
    // The command that continues keeps the run's own flags.
    let resume = "nnc train m.nn --epochs 100000 --metrics-json m.json --save ck.safetensors --resume ck.safetensors";
    assert!(stderr.contains(resume), "{stderr}");
    // The metrics of the weights kept are written too.
    let metrics: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("m.json")).expect("metrics written"))
            .expect("JSON");
    assert!(metrics["epochs"].as_array().is_some_and(|e| e.len() >= 3), "{metrics}");
    assert!(metrics["test_loss"].as_f64().is_some_and(f64::is_finite), "{metrics}");
    let saved = checkpoint::load(&dir.path().join("ck.safetensors")).expect("a whole checkpoint");
    assert!(saved.epoch >= 3, "epoch {}", saved.epoch);
}

#[test]
fn sigkill_at_any_moment_leaves_a_loadable_checkpoint() {
    let dir = setup();
    for delay_ms in [30, 90, 170, 260, 400, 650] {
        let mut child = Command::new(env!("CARGO_BIN_EXE_nnc"))
            .args(["train", "m.nn", "--quiet", "--epochs", "100000", "--save", "ck.safetensors"])
            .current_dir(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starts");
        std::thread::sleep(Duration::from_millis(delay_ms));
        signal(child.id(), "-KILL");
        let _ = child.wait();
        let path = dir.path().join("ck.safetensors");
        if path.exists() {
            checkpoint::load(&path).expect("the checkpoint on disk is always whole");
        }
    }
    // Once an epoch has been reported, its checkpoint is on disk, whole.
    let mut child = Command::new(env!("CARGO_BIN_EXE_nnc"))
        .args(["train", "m.nn", "--epochs", "100000", "--save", "ck.safetensors", "--metrics-json", "m.json"])
        .current_dir(dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("starts");
    let stdout = child.stdout.take().expect("stdout");
    let first = BufReader::new(stdout).lines().map_while(Result::ok).find(|l| l.starts_with("epoch"));
    signal(child.id(), "-KILL");
    let _ = child.wait();
    assert!(first.is_some());
    checkpoint::load(&dir.path().join("ck.safetensors")).expect("the checkpoint on disk is always whole");
}
