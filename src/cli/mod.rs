//! The `nnc` command line: argument parsing and one function per command.
//!
//! Exit codes: 0 success (warnings allowed), 1 errors in the model or data,
//! 2 usage or I/O errors.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

/// `println!` that ignores a closed standard output (`nnc train | head`)
/// instead of panicking; the command goes on and its exit code still counts.
macro_rules! say_raw {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = write!(std::io::stdout(), $($arg)*);
    }};
}

macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

use crate::check::CheckedModel;
use crate::diag;
use crate::exec::Backend;
use crate::pipeline::{self, Checked};
use crate::summary;

mod fmt;
mod infer;
mod inspect;
mod train;

#[derive(Parser)]
#[command(name = "nnc", version, about = "Compile, check and train neural networks written in the .nn language")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    Human,
    Json,
}

#[derive(Clone, Copy, ValueEnum)]
enum Emit {
    /// The parsed syntax tree.
    Ast,
    /// The forward graph of primitive ops.
    Ir,
    /// Forward, backward and optimizer update.
    TrainIr,
    /// The training step's kernels and memory plan.
    Plan,
    /// The generated Cranelift IR of the training step.
    Clif,
}

/// Which executor runs the compiled graphs.
#[derive(Clone, Copy, ValueEnum)]
enum BackendArg {
    /// Cranelift-compiled kernels (the default).
    Jit,
    /// The reference interpreter: plain loops, the oracle.
    Interp,
}

impl From<BackendArg> for Backend {
    fn from(b: BackendArg) -> Backend {
        match b {
            BackendArg::Jit => Backend::Jit,
            BackendArg::Interp => Backend::Interp,
        }
    }
}

/// A model file, and which of its models a command works on.
#[derive(Clone, clap::Args)]
struct ModelChoice {
    /// The model file (`.nn`).
    file: PathBuf,
    /// Which model of the file (default: the first).
    #[arg(long)]
    model: Option<String>,
}

#[derive(Subcommand)]
enum Command {
    /// Check a model file: syntax, names, shapes and hyperparameters.
    Check {
        /// The model file (`.nn`).
        file: PathBuf,
        /// How to print diagnostics.
        #[arg(long, value_enum, default_value = "human")]
        format: Format,
        /// Also print an internal stage of the first model.
        #[arg(long, value_enum)]
        emit: Option<Emit>,
        /// Batch size of the stage `--emit` prints (ir, train-ir, plan, clif).
        #[arg(long, default_value_t = 1, value_parser = batch_size, requires = "emit")]
        batch: usize,
        /// Which model's stage `--emit` prints (default: the first).
        #[arg(long, requires = "emit")]
        model: Option<String>,
    },
    /// Per-layer output shapes, parameter counts and costs.
    Summary {
        #[command(flatten)]
        target: ModelChoice,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Train a model and report per-epoch and final test metrics.
    Train(TrainArgs),
    /// Test metrics (and a confusion matrix for classifiers of up to 100 classes) of saved weights.
    Eval {
        #[command(flatten)]
        target: ModelChoice,
        /// A checkpoint written by `nnc train --save`.
        #[arg(long)]
        weights: PathBuf,
        /// Evaluation data: a CSV file, `-` (CSV on standard input),
        /// `builtin:NAME` (its test split) or an IDX images file (with
        /// --labels); default: the test split of the model's data.
        #[arg(long)]
        data: Option<PathBuf>,
        /// The IDX labels of the IDX images given with --data.
        #[arg(long)]
        labels: Option<PathBuf>,
        /// Folder against which the model's relative data paths are resolved
        /// (default: the model file's folder).
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// Predictions for rows of inputs (CSV, IDX images or a built-in set), as CSV.
    Predict {
        #[command(flatten)]
        target: ModelChoice,
        /// A checkpoint written by `nnc train --save`.
        #[arg(long)]
        weights: PathBuf,
        /// The rows to predict: CSV with a header row (column names) and one
        /// sample per row, the model's input values in order (a last column
        /// named `label`, `target`, `class` or `y` is ignored; `-` reads
        /// standard input); an IDX images file; or `builtin:NAME` (its test
        /// split).
        #[arg(long)]
        input: PathBuf,
        /// Write here instead of standard output (`-`). Rows are read,
        /// predicted and written a part at a time, so an input of any
        /// length takes the memory of a part; the file appears, whole, only
        /// once every row is predicted (standard output gets the rows as
        /// they come, and stops at a bad row with its error).
        #[arg(long)]
        output: Option<PathBuf>,
        /// Classifiers: the raw class scores (logits) instead of probabilities.
        #[arg(long)]
        logits: bool,
        /// Every value in full (the shortest text that reads back as the same
        /// f32) instead of probabilities to 6 decimals.
        #[arg(long)]
        full_precision: bool,
    },
    /// Why the network gave its answers: each input feature's gradient and gradient × input.
    Explain {
        #[command(flatten)]
        target: ModelChoice,
        /// A checkpoint written by `nnc train --save`.
        #[arg(long)]
        weights: PathBuf,
        /// Rows to explain, as for `predict` (CSV with a header, `-` for standard input, IDX images or `builtin:NAME`).
        #[arg(long)]
        input: PathBuf,
        /// The output (class) whose score is explained (default: each row's highest).
        #[arg(long)]
        class: Option<usize>,
        /// For a model of several outputs: the one explained, by name (as `predict` names its columns).
        #[arg(long, value_name = "NAME")]
        of: Option<String>,
        /// Also draw each row and its attribution as heatmaps (SVG; image inputs only).
        #[arg(short, long)]
        output: Option<PathBuf>,
        /// Print the explanations as JSON (every feature's gradient and attribution).
        #[arg(long)]
        json: bool,
    },
    /// Compile trained weights ahead of time into a C header, a static and a shared library.
    Build {
        #[command(flatten)]
        target: ModelChoice,
        /// A checkpoint written by `nnc train --save`.
        #[arg(long)]
        weights: PathBuf,
        /// Folder for NAME.h, libNAME.a and libNAME.so (created if missing).
        #[arg(short, long)]
        output: PathBuf,
        /// Prefix of every symbol and file name (default: the model's name).
        #[arg(long)]
        name: Option<String>,
        /// Rows per call of the large batched forward pass (default: as many
        /// as keep its activations near 16 MiB, as `nnc predict` runs, at
        /// most 1,024).
        #[arg(long, value_parser = batch_size)]
        batch: Option<usize>,
        /// Instruction-set extensions the generated code may use: `native`
        /// (this CPU's) or a preset such as x86-64-v2, x86-64-v3, x86-64-v4.
        #[arg(long, default_value = "native")]
        target_cpu: String,
    },
    /// Write trained weights as an ONNX inference graph (onnxruntime, OpenVINO, …).
    Export {
        #[command(flatten)]
        target: ModelChoice,
        /// A checkpoint written by `nnc train --save`.
        #[arg(long)]
        weights: PathBuf,
        /// The `.onnx` file to write.
        #[arg(short, long)]
        output: PathBuf,
        /// The ONNX opset the graph uses (13 to 21).
        #[arg(long, default_value_t = crate::onnx::DEFAULT_OPSET)]
        opset: i64,
        /// The batch dimension: `dynamic` (named `batch`) or a fixed size.
        #[arg(long, default_value = "dynamic", value_parser = export_batch)]
        batch: BatchDim,
    },
    /// Read an ONNX model (from nnc or PyTorch) into a `.nn` file and its weights.
    Import {
        /// The `.onnx` file.
        file: PathBuf,
        /// The `.nn` file to write.
        #[arg(short, long)]
        output: PathBuf,
        /// The checkpoint to write (default: beside the `.nn` file, `.safetensors`).
        #[arg(long)]
        weights_out: Option<PathBuf>,
        /// The model's name (default: the `.onnx` file's name).
        #[arg(long)]
        name: Option<String>,
    },
    /// Measure compile time, training throughput, inference latency and memory.
    Bench {
        #[command(flatten)]
        target: ModelChoice,
        /// Training batch size (default: the model's).
        #[arg(long, value_parser = batch_size)]
        batch: Option<usize>,
        #[arg(long, value_enum, default_value = "jit")]
        backend: BackendArg,
        /// Seconds spent measuring throughput (0.1 to 3600).
        #[arg(long, default_value_t = 3.0, value_parser = bench_seconds)]
        seconds: f64,
        /// Print the results as JSON.
        #[arg(long)]
        json: bool,
        /// Refuse to start when a training step would need more memory than
        /// this (bytes, or with K, M, G, T: 512M, 4G; default: the machine's).
        #[arg(long, value_parser = memory_size)]
        max_memory: Option<u64>,
        /// Also time each kernel of the training step (a product, an
        /// element-wise loop, a routine), in steps of their own after the
        /// measurements, and list them with `--emit plan`'s names.
        #[arg(long)]
        kernels: bool,
        /// Run a repeat again when other processes (or the hypervisor's
        /// steal) used this many cores or more during it, once the machine
        /// has been idle for a second: ten times at most, waiting up to 300
        /// s each (`benches/side_by_side.sh` passes 0.1, the limit of the
        /// PyTorch, JAX and onnxruntime harness it runs beside nnc).
        #[arg(long, value_name = "CORES", value_parser = foreign_cores)]
        foreign_max: Option<f64>,
        /// Train as `nnc train` does: each step also observes the health it
        /// reports (gradient norms, update ratios, activation statistics).
        #[arg(long)]
        health: bool,
    },
    /// Lay model files out in the one canonical way (comments kept).
    Fmt {
        /// Model files to format in place; `-` formats standard input to standard output.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Change nothing; name the files that are not formatted and exit 1 if any.
        #[arg(long)]
        check: bool,
    },
    /// Serve editors over standard input and output (the Language Server Protocol):
    /// diagnostics as you type, shapes on hover and inline, definitions, completion.
    Lsp,
    /// Compare autodiff gradients with central finite differences (f64).
    Gradcheck {
        #[command(flatten)]
        target: ModelChoice,
        /// Largest accepted relative error.
        #[arg(long, default_value_t = 1e-4)]
        tolerance: f64,
        #[arg(long, default_value_t = 0)]
        seed: u64,
    },
}

#[derive(Clone, clap::Args)]
struct TrainArgs {
    #[command(flatten)]
    target: ModelChoice,
    /// Training data instead of the model's `data = …`: a CSV file or `builtin:NAME`.
    #[arg(long)]
    data: Option<String>,
    /// Test data (CSV) to go with --data.
    #[arg(long)]
    test: Option<PathBuf>,
    /// Folder against which the model's relative data paths are resolved
    /// (default: the model file's folder).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Epochs to train (default: the model's `epochs`); 0 trains nothing:
    /// with --save, the initial weights of the seed are written.
    #[arg(long, value_parser = clap::value_parser!(u64).range(0..=1_000_000))]
    epochs: Option<u64>,
    /// Seed for initialisation, shuffling and dropout (default: the model's `seed`).
    #[arg(long)]
    seed: Option<u64>,
    /// Write per-epoch and final metrics as JSON to this file.
    #[arg(long)]
    metrics_json: Option<PathBuf>,
    /// Print only the final line.
    #[arg(long)]
    quiet: bool,
    /// Which executor runs the steps.
    #[arg(long, value_enum, default_value = "jit")]
    backend: BackendArg,
    /// Write a checkpoint (safetensors) here after every epoch, atomically.
    #[arg(long)]
    save: Option<PathBuf>,
    /// Continue from a checkpoint written by --save, bit for bit.
    #[arg(long)]
    resume: Option<PathBuf>,
    /// Draw loss and accuracy per epoch into this SVG file, redrawn after every epoch.
    #[arg(long)]
    plot: Option<PathBuf>,
    /// Refuse to start when a training step would need more memory than
    /// this (bytes, or with K, M, G, T: 512M, 4G; default: the machine's).
    #[arg(long, value_parser = memory_size)]
    max_memory: Option<u64>,
}

/// Why a command stopped early. `run` turns it into the exit code, so the
/// codes are decided here only: 1 for mistakes in the model, its data or
/// its weights; 2 for usage and I/O problems; 130 for Ctrl-C.
pub(crate) enum Failure {
    /// Already shown (rendered diagnostics, or the command's own report): exit 1.
    Reported,
    /// A mistake in the model, its data or its weights: exit 1.
    Input(String),
    /// A usage or I/O problem: exit 2.
    Usage(String),
    /// Stopped by Ctrl-C, after saving what could be saved: exit 130.
    Interrupted,
}

impl Failure {
    /// What the failure says, when it has not been shown already.
    fn message(&self) -> Option<&str> {
        match self {
            Failure::Input(message) | Failure::Usage(message) => Some(message),
            Failure::Reported | Failure::Interrupted => None,
        }
    }

    /// The process's exit status for it.
    fn code(&self) -> i32 {
        match self {
            Failure::Reported | Failure::Input(_) => 1,
            Failure::Usage(_) => 2,
            Failure::Interrupted => 130,
        }
    }

    fn exit_code(self) -> ExitCode {
        if let Some(message) = self.message() {
            eprintln!("error: {message}");
        }
        ExitCode::from(self.code() as u8)
    }
}

/// What a command returns.
pub(crate) type Outcome = Result<(), Failure>;

pub fn run() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() { ExitCode::from(2) } else { ExitCode::SUCCESS };
        }
    };
    // The command runs on a thread of rayon's pool: the products and image
    // parts it splits start on that thread and the others steal from it,
    // with no hand-off from an outside thread for every product.
    let outcome = rayon::scope(|_| execute(cli.command));
    outcome.map_or_else(Failure::exit_code, |()| ExitCode::SUCCESS)
}

fn execute(command: Command) -> Outcome {
    match command {
        Command::Check { file, format, emit, batch, model } => {
            check(&file, format, emit.map(|stage| (stage, batch, model)))
        }
        Command::Summary { target, json } => summary(&target.file, target.model.as_deref(), json),
        Command::Train(args) => train::run(&args),
        Command::Eval { target, weights, data, labels, data_dir } => {
            let data =
                infer::EvalData { data: data.as_deref(), labels: labels.as_deref(), data_dir: data_dir.as_deref() };
            infer::eval(&target.file, target.model.as_deref(), &weights, data)
        }
        Command::Predict { target, weights, input, output, logits, full_precision } => {
            let shown = infer::Shown { logits, full_precision };
            infer::predict(&target.file, target.model.as_deref(), &weights, (&input, output.as_deref()), shown)
        }
        Command::Explain { target, weights, input, class, of, output, json } => {
            let options = infer::ExplainArgs { weights, input, class, of, output, json };
            infer::explain(&target.file, target.model.as_deref(), &options)
        }
        Command::Build { target, weights, output, name, batch, target_cpu } => {
            let options = infer::BuildArgs { weights, output, name, batch, target_cpu };
            infer::build(&target.file, target.model.as_deref(), &options)
        }
        Command::Bench { target, batch, backend, seconds, json, max_memory, kernels, foreign_max, health } => {
            let backend = backend.into();
            let options =
                inspect::BenchOptions { batch, backend, seconds, json, max_memory, kernels, foreign_max, health };
            inspect::bench(&target.file, target.model.as_deref(), &options)
        }
        Command::Export { target, weights, output, opset, batch } => {
            let options = crate::onnx::Options { opset, batch: batch.0 };
            infer::export(&target.file, target.model.as_deref(), &weights, &output, &options)
        }
        Command::Import { file, output, weights_out, name } => {
            infer::import(&file, &output, weights_out.as_deref(), name.as_deref())
        }
        Command::Fmt { files, check } => fmt::run(&files, check),
        Command::Lsp => crate::lsp::serve().map_err(Failure::Usage),
        Command::Gradcheck { target, tolerance, seed } => {
            inspect::gradcheck(&target.file, target.model.as_deref(), tolerance, seed)
        }
    }
}

/// Reads and checks a file; prints its diagnostics.
fn load(file: &Path, format: Format) -> Result<Checked, Failure> {
    let checked =
        pipeline::check_file(file).map_err(|e| Failure::Usage(format!("cannot read {}: {e}", file.display())))?;
    match format {
        Format::Json => say!("{}", diag::to_json(&checked.diags, &checked.file_name, &checked.source)),
        Format::Human => {
            if !checked.diags.is_empty() {
                let color = std::io::stderr().is_terminal();
                eprint!("{}", diag::render(&checked.diags, &checked.file_name, &checked.source, color, 100));
            }
        }
    }
    Ok(checked)
}

/// `nnc check`; with `emit` = (stage, batch, model) it prints that stage.
fn check(file: &Path, format: Format, emit: Option<(Emit, usize, Option<String>)>) -> Outcome {
    let checked = load(file, format)?;
    if checked.has_errors() {
        return Err(Failure::Reported);
    }
    if let Some((stage, batch, model)) = emit {
        let model = select(&checked, model.as_deref())?;
        return inspect::emit_stage(&checked, model, stage, batch);
    }
    if let Format::Human = format {
        let names: Vec<&str> = checked.models.iter().map(|m| m.name.as_str()).collect();
        let warnings = checked.diags.len();
        eprintln!("{}: ok ({}; {warnings} warning(s))", checked.file_name, names.join(", "));
    }
    Ok(())
}

/// Picks the named model, or the first.
fn select<'a>(checked: &'a Checked, name: Option<&str>) -> Result<&'a CheckedModel, Failure> {
    let found = match name {
        Some(n) => checked.models.iter().find(|m| m.name == n),
        None => checked.models.first(),
    };
    found.ok_or_else(|| {
        let names: Vec<&str> = checked.models.iter().map(|m| m.name.as_str()).collect();
        Failure::Usage(format!(
            "no model `{}` in {} (it has: {})",
            name.unwrap_or(""),
            checked.file_name,
            names.join(", ")
        ))
    })
}

fn summary(file: &Path, model: Option<&str>, json: bool) -> Outcome {
    let (checked, index) = load_model(file, model)?;
    let s = summary::summarize(&checked.models[index]);
    if json {
        say!("{}", serde_json::to_string_pretty(&s).unwrap_or_default());
    } else {
        say_raw!("{}", s.to_text());
    }
    Ok(())
}

/// Loads a file and picks a model that checked without errors.
pub(crate) fn load_model(file: &Path, model: Option<&str>) -> Result<(Checked, usize), Failure> {
    let checked = load(file, Format::Human)?;
    if checked.has_errors() {
        return Err(Failure::Reported);
    }
    let index = select(&checked, model).map(|m| checked.models.iter().position(|x| x.name == m.name).unwrap_or(0))?;
    Ok((checked, index))
}

/// Shows one diagnostic; the command then stops with `Failure::Reported`.
pub(crate) fn report_diag(checked: &Checked, d: &crate::diag::Diag) -> Failure {
    let color = std::io::stderr().is_terminal();
    eprint!("{}", diag::render(std::slice::from_ref(d), &checked.file_name, &checked.source, color, 100));
    Failure::Reported
}

/// The largest batch a flag accepts; larger batches are the model's `batch = …`.
const MAX_BATCH_FLAG: usize = 1_000_000;

/// A `--batch` value: a whole number from 1 to `MAX_BATCH_FLAG`.
fn batch_size(text: &str) -> Result<usize, String> {
    match text.parse::<usize>() {
        Ok(n) if (1..=MAX_BATCH_FLAG).contains(&n) => Ok(n),
        _ => Err(format!("expected a whole number from 1 to {MAX_BATCH_FLAG}")),
    }
}

/// A `--seconds` value for `bench`: from 0.1 to 3600.
fn bench_seconds(text: &str) -> Result<f64, String> {
    number_within(text, 0.1..=3600.0, "seconds")
}

/// A `--foreign-max` value for `bench`: cores, from 0.01 to 1024.
fn foreign_cores(text: &str) -> Result<f64, String> {
    number_within(text, 0.01..=1024.0, "cores")
}

/// A number of `unit` within `range` (NaN and infinities are not).
fn number_within(text: &str, range: std::ops::RangeInclusive<f64>, unit: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(v) if range.contains(&v) => Ok(v),
        _ => Err(format!("expected {unit} from {} to {}", range.start(), range.end())),
    }
}

/// A `--max-memory` value: bytes, or a number with K, M, G or T (powers of
/// 1024; `4G`, `512MiB`, `1.5G`).
fn memory_size(text: &str) -> Result<u64, String> {
    let wrong = || format!("expected a size such as 512M or 4G, got `{text}`");
    let upper = text.trim().to_ascii_uppercase();
    let number = upper.trim_end_matches("IB").trim_end_matches('B');
    let (digits, unit) = match number.char_indices().last() {
        Some((at, c)) if c.is_ascii_alphabetic() => (&number[..at], c),
        _ => (number, ' '),
    };
    let scale: u64 = match unit {
        ' ' => 1,
        'K' => 1 << 10,
        'M' => 1 << 20,
        'G' => 1 << 30,
        'T' => 1 << 40,
        _ => return Err(wrong()),
    };
    let value: f64 = digits.trim().parse().map_err(|_| wrong())?;
    let bytes = value * scale as f64;
    if !(1.0..1e18).contains(&bytes) {
        return Err(format!("expected a size from 1 byte to 1,000 PB, got `{text}`"));
    }
    Ok(bytes as u64)
}

/// What `--max-memory` holds a training step against.
fn memory_limit(max_memory: Option<u64>) -> crate::check::MemoryLimit {
    max_memory.map_or(crate::check::MemoryLimit::Machine, crate::check::MemoryLimit::Bytes)
}

/// The one rule for data paths: those a model file names are relative to
/// `--data-dir` when given, else to the model file's folder; paths given on
/// the command line are relative to the working directory.
pub(crate) fn model_data_dir(model_file: &Path, data_dir: Option<&Path>) -> PathBuf {
    match data_dir {
        Some(dir) => dir.to_path_buf(),
        None => model_file.parent().map_or(PathBuf::from("."), Path::to_path_buf),
    }
}

/// The model's training batch size (64 for `batch = full`, a typical size).
/// An exported graph's batch dimension: `None` for dynamic.
#[derive(Clone)]
struct BatchDim(Option<usize>);

/// `--batch dynamic` or a size ≥ 1.
fn export_batch(text: &str) -> Result<BatchDim, String> {
    if text == "dynamic" { Ok(BatchDim(None)) } else { batch_size(text).map(|b| BatchDim(Some(b))) }
}

fn training_batch(model: &CheckedModel) -> usize {
    match model.train.batch {
        crate::check::Batch::Size(b) => b,
        crate::check::Batch::Full => 64,
    }
}

/// Set by Ctrl-C once `catch_ctrl_c` has run.
static CTRL_C: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// From now on Ctrl-C only sets a flag, which a long command checks between
/// its steps, to stop cleanly: training saves its last epoch, `predict`
/// leaves no half-written file.
pub(crate) fn catch_ctrl_c() {
    let _ = ctrlc::set_handler(|| CTRL_C.store(true, std::sync::atomic::Ordering::Relaxed));
}

pub(crate) fn ctrl_c_pressed() -> bool {
    CTRL_C.load(std::sync::atomic::Ordering::Relaxed)
}

/// Images spread over the cores for convolutional models with small
/// products (see `jit::choose_threading`).
pub(crate) fn set_threading(model: &CheckedModel, batch: usize) {
    crate::jit::choose_threading(model, batch);
}
