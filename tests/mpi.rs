//! Data-parallel training under MPI: `mpirun -np N nnc train` ends with the
//! weights one process trains (same global batch and seed), rank 0 alone
//! speaks and writes, `--resume` works with another number of ranks, and a
//! rank that cannot start or dies ends the whole job. Needs OpenMPI's
//! `mpirun` and `cargo test --features mpi --test mpi`.
#![cfg(feature = "mpi")]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const MODELS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/models");
/// Longer than any run here takes; a job still running then has hung.
const HANG: Duration = Duration::from_secs(120);

fn nnc() -> &'static str {
    env!("CARGO_BIN_EXE_nnc")
}

/// `mpirun` for `ranks` processes on this machine: as root if need be, more
/// ranks than cores, each free to use every core.
fn mpirun(ranks: usize) -> Command {
    let mut command = Command::new("mpirun");
    command
        .args(["--oversubscribe", "--bind-to", "none", "-np", &ranks.to_string()])
        .envs([("OMPI_ALLOW_RUN_AS_ROOT", "1"), ("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")]);
    command
}

/// Waits for `child`, failing the test if it runs past `HANG`. Its output
/// is read as it comes: a job that writes more than a pipe holds would
/// otherwise block on the write and look hung.
fn finish(mut child: Child) -> Output {
    let (stdout, stderr) = (drain(child.stdout.take()), drain(child.stderr.take()));
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("waits") {
            break status;
        }
        if started.elapsed() > HANG {
            let _ = child.kill();
            panic!("the job was still running after {HANG:?}: it hung");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let read = |pipe: std::thread::JoinHandle<Vec<u8>>| pipe.join().expect("the pipe is read");
    Output { status, stdout: read(stdout), stderr: read(stderr) }
}

/// Reads a child's pipe to its end on a thread of its own.
fn drain<R: std::io::Read + Send + 'static>(pipe: Option<R>) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        if let Some(mut pipe) = pipe {
            let _ = pipe.read_to_end(&mut bytes);
        }
        bytes
    })
}

fn run(mut command: Command) -> Output {
    finish(command.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("starts"))
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Trains `model` (args after it) alone and on 2 and 3 ranks; every tensor
/// of the checkpoints (weights and optimizer state) agrees within 1e-5 of
/// its largest value, and each job printed one final line.
fn assert_ranks_train_as_one(model: &Path, args: &[&str], env: &[(&str, &str)]) {
    let dir = tempfile::tempdir().expect("temp dir");
    let train = |command: &mut Command, save: &Path| {
        command.args(["train", model.to_str().expect("utf-8")]).args(args);
        command.args(["--quiet", "--save", save.to_str().expect("utf-8")]);
        command.args(["--metrics-json", save.with_extension("json").to_str().expect("utf-8")]);
    };
    let alone = dir.path().join("alone.safetensors");
    let mut command = Command::new(nnc());
    train(&mut command, &alone);
    let out = run(command);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let reference = nnc::checkpoint::load(&alone).expect("loads").tensors;
    let reference_epochs = epoch_numbers(&alone.with_extension("json"));
    for ranks in [2, 3] {
        let saved = dir.path().join(format!("ranks{ranks}.safetensors"));
        let mut command = mpirun(ranks);
        command.envs(env.iter().copied()).arg(nnc());
        train(&mut command, &saved);
        let out = run(command);
        assert!(out.status.success(), "{ranks} ranks: {}", text(&out.stderr));
        let stdout = text(&out.stdout);
        assert_eq!(stdout.lines().count(), 1, "{ranks} ranks: one voice, one final line:\n{stdout}");
        // The losses and health numbers rank 0 reports are the whole batch's.
        let epochs = epoch_numbers(&saved.with_extension("json"));
        assert_eq!(epochs.len(), reference_epochs.len());
        for ((what, a), (_, b)) in reference_epochs.iter().zip(&epochs) {
            assert!((a - b).abs() <= 1e-5 * a.abs().max(1e-3), "{ranks} ranks, {what}: {b} vs {a}");
        }
        let tensors = nnc::checkpoint::load(&saved).expect("loads").tensors;
        assert_eq!(tensors.len(), reference.len());
        for (name, (shape, values)) in &reference {
            let (other_shape, other) = &tensors[name];
            assert_eq!(shape, other_shape, "{name}");
            let scale = values.iter().fold(1e-12f32, |m, v| m.max(v.abs()));
            let worst = values.iter().zip(other).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
            assert!(
                worst <= 1e-5 * scale,
                "{}, {ranks} ranks, {name}: off by {worst} (largest {scale})",
                model.display()
            );
        }
    }
}

/// Every number of every epoch in a metrics file (losses, accuracies and
/// the health report) but the timings, with where it is.
fn epoch_numbers(path: &Path) -> Vec<(String, f64)> {
    fn walk(value: &serde_json::Value, at: String, out: &mut Vec<(String, f64)>) {
        match value {
            serde_json::Value::Number(n) if !at.ends_with("seconds") => out.push((at, n.as_f64().unwrap_or(f64::NAN))),
            serde_json::Value::Array(items) => {
                items.iter().enumerate().for_each(|(i, v)| walk(v, format!("{at}[{i}]"), out))
            }
            serde_json::Value::Object(fields) => fields.iter().for_each(|(k, v)| walk(v, format!("{at}.{k}"), out)),
            _ => {}
        }
    }
    let text = std::fs::read_to_string(path).expect("metrics written");
    let metrics: serde_json::Value = serde_json::from_str(&text).expect("JSON");
    let mut out = Vec::new();
    walk(&metrics["epochs"], "epochs".into(), &mut out);
    out
}

fn model(file: &str) -> PathBuf {
    Path::new(MODELS).join(file)
}

#[test]
fn an_mlp_trains_on_2_and_3_ranks_as_on_one() {
    assert_ranks_train_as_one(&model("digits_mlp.nn"), &["--epochs", "2"], &[]);
}

/// Batch statistics are summed over the ranks, and dropout masks follow the
/// row, not the rank.
#[test]
fn batchnorm_and_dropout_train_on_2_and_3_ranks_as_on_one() {
    assert_ranks_train_as_one(&model("batchnorm.nn"), &["--epochs", "2"], &[]);
}

/// The same with every sum on a thread of its own (as between machines),
/// sent while the step goes on: the result does not change.
#[test]
fn sums_overlapping_the_step_give_the_same_training() {
    assert_ranks_train_as_one(&model("batchnorm.nn"), &["--epochs", "2"], &[("NNC_OVERLAP", "1")]);
}

/// LeNet for one epoch on the 2,000 MNIST test images (31 steps of 64 and a
/// last one of 16, split 6/5/5 on three ranks). Longer runs drift apart as
/// any change of rounding does with this learning rate and momentum.
#[test]
fn lenet_trains_on_2_and_3_ranks_as_on_one() {
    let dir = tempfile::tempdir().expect("temp dir");
    let source = std::fs::read_to_string(model("lenet.nn")).expect("readable");
    let data = Path::new(MODELS).join("data");
    let short =
        source.replace("mnist10k-train-", "mnist10k-test-").replace("\"data/", &format!("\"{}/", data.display()));
    let file = dir.path().join("lenet.nn");
    std::fs::write(&file, short).expect("writes");
    assert_ranks_train_as_one(&file, &["--epochs", "1"], &[]);
}

/// A checkpoint holds the whole run, not one rank's part: one epoch on two
/// ranks, resumed for a second on three, ends where two epochs alone do.
#[test]
fn a_run_resumes_on_another_number_of_ranks() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = |name: &str| dir.path().join(name).to_str().expect("utf-8").to_string();
    let file = model("batchnorm.nn");
    let file = file.to_str().expect("utf-8");
    let out = run({
        let mut c = Command::new(nnc());
        c.args(["train", file, "--epochs", "2", "--quiet", "--save", &path("alone.safetensors")]);
        c
    });
    assert!(out.status.success(), "{}", text(&out.stderr));
    for (ranks, epochs, resume) in [(2, "1", None), (3, "2", Some(path("split.safetensors")))] {
        let mut command = mpirun(ranks);
        command.args([nnc(), "train", file, "--epochs", epochs, "--quiet", "--save", &path("split.safetensors")]);
        if let Some(checkpoint) = &resume {
            command.args(["--resume", checkpoint]);
        }
        let out = run(command);
        assert!(out.status.success(), "{ranks} ranks: {}", text(&out.stderr));
    }
    let alone = nnc::checkpoint::load(Path::new(&path("alone.safetensors"))).expect("loads").tensors;
    let split = nnc::checkpoint::load(Path::new(&path("split.safetensors"))).expect("loads").tensors;
    for (name, (_, values)) in &alone {
        let scale = values.iter().fold(1e-12f32, |m, v| m.max(v.abs()));
        let worst = values.iter().zip(&split[name].1).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
        assert!(worst <= 1e-5 * scale, "{name}: off by {worst} (largest {scale})");
    }
}

/// Bad data on one rank: that rank says what is wrong (once, naming
/// itself), and every rank stops before training, with a failing status.
#[test]
fn a_rank_that_cannot_start_stops_the_job() {
    let dir = tempfile::tempdir().expect("temp dir");
    let good = dir.path().join("good.csv");
    let rows: String = (0..40).map(|i| format!("{},{},{}\n", i % 7, i % 5, i % 2)).collect();
    std::fs::write(&good, format!("a,b,y\n{rows}")).expect("writes");
    let bad = dir.path().join("bad.csv");
    std::fs::write(&bad, "a,b,y\n1,2,0\n3,oops,1\n").expect("writes");
    let file = dir.path().join("logistic.nn");
    std::fs::write(
        &file,
        "model logistic {\n  input x: [2]\n  target y: binary[1]\n  x |> dense(1) |> sigmoid => p\n  \
         loss = binary_cross_entropy(p, y)\n  train { optimizer = sgd(lr = 0.1) batch = 8 epochs = 1000 }\n}\n",
    )
    .expect("writes");
    let file = file.to_str().expect("utf-8");
    let mut command = mpirun(1);
    command.args([nnc(), "train", file, "--data", good.to_str().expect("utf-8")]);
    command.args([":", "-np", "1", nnc(), "train", file, "--data", bad.to_str().expect("utf-8")]);
    let out = run(command);
    let stderr = text(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert_eq!(stderr.matches("oops").count(), 1, "the bad rank's message, once:\n{stderr}");
    assert!(stderr.contains("rank 1:"), "{stderr}");
    assert!(stderr.contains("could not start training"), "{stderr}");
    assert!(!text(&out.stdout).contains("epoch 1/"), "nothing trained");
}

/// A rank that panics in the middle of training (a fail point armed on
/// rank 1 alone) ends the job within seconds: the panic is shown once,
/// naming the rank, and the status is a failure.
#[test]
fn a_rank_that_panics_ends_the_job() {
    let file = model("digits_mlp.nn");
    let file = file.to_str().expect("utf-8");
    let mut command = mpirun(1);
    command.args([nnc(), "train", file, "--epochs", "100000"]);
    command.args([":", "-np", "1", "env", "FAILPOINTS=train-step=20*off->panic(forced failure)", nnc(), "train", file]);
    command.args(["--epochs", "100000"]);
    let started = Instant::now();
    let out = run(command);
    let stderr = text(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert_eq!(stderr.matches("forced failure").count(), 1, "the panic, once:\n{stderr}");
    assert!(stderr.contains("rank 1:"), "{stderr}");
    assert!(started.elapsed() < Duration::from_secs(60), "the job took {:?} to end", started.elapsed());
}

/// A rank killed in the middle of training ends the job within seconds,
/// with a failing status, instead of leaving the others waiting.
#[test]
fn a_rank_that_dies_ends_the_job() {
    let mut command = mpirun(2);
    command.args([nnc(), "train", model("digits_mlp.nn").to_str().expect("utf-8"), "--epochs", "100000"]);
    let child = command.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("starts");
    // The ranks are mpirun's children running nnc; wait until both train.
    let started = Instant::now();
    let ranks = loop {
        let ranks = children_running_nnc(child.id());
        if ranks.len() == 2 && started.elapsed() > Duration::from_secs(2) {
            break ranks;
        }
        assert!(started.elapsed() < HANG, "the ranks never started");
        std::thread::sleep(Duration::from_millis(100));
    };
    let killed = Command::new("kill").args(["-KILL", &ranks[1].to_string()]).status().expect("kill runs");
    assert!(killed.success());
    let killed_at = Instant::now();
    let out = finish(child);
    assert!(!out.status.success(), "{}", text(&out.stderr));
    assert!(killed_at.elapsed() < Duration::from_secs(60), "the job took {:?} to end", killed_at.elapsed());
}

/// The processes whose parent is `parent` and whose command is nnc.
fn children_running_nnc(parent: u32) -> Vec<u32> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("proc").flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else { continue };
        // pid (comm) state ppid …: comm may hold spaces, so read after its ')'.
        let Some(rest) = stat.rsplit_once(')').map(|(_, rest)| rest) else { continue };
        let ppid = rest.split_whitespace().nth(1).and_then(|p| p.parse::<u32>().ok());
        let exe = std::fs::read_link(entry.path().join("exe")).unwrap_or_default();
        if ppid == Some(parent) && exe == Path::new(nnc()) {
            found.push(pid);
        }
    }
    found.sort_unstable();
    found
}
