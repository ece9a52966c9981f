//! What the command line accepts: the commands, their flags, and the
//! parsers that check a flag's value before any command runs (clap
//! reports a rejected value as a usage error, exit code 2).

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

use crate::exec::Backend;

#[derive(Parser)]
#[command(name = "nnc", version, about = "Compile, check and train neural networks written in the .nn language")]
pub(super) struct Cli {
    #[command(subcommand)]
    pub(super) command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
pub(super) enum Format {
    Human,
    Json,
}

#[derive(Clone, Copy, ValueEnum)]
pub(super) enum Emit {
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
pub(super) enum BackendArg {
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
pub(super) struct ModelChoice {
    /// The model file (`.nn`).
    pub(super) file: PathBuf,
    /// Which model of the file (default: the first).
    #[arg(long)]
    pub(super) model: Option<String>,
}

#[derive(Subcommand)]
pub(super) enum Command {
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
        /// most 256).
        #[arg(long, value_parser = batch_size)]
        batch: Option<usize>,
        /// Instruction-set extensions the generated code may use: `native`
        /// (this CPU's) or a preset such as x86-64-v2, x86-64-v3, x86-64-v4.
        #[arg(long, default_value = "native")]
        target_cpu: String,
        /// The caller passes rows already preprocessed as in training (the
        /// header gives each feature's shift and divisor), and the library
        /// reads them where they lie instead of preprocessing a copy.
        #[arg(long)]
        preprocessed_input: bool,
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
        /// Largest accepted relative error (above 0, at most 1).
        #[arg(long, default_value_t = 1e-4, value_parser = tolerance)]
        tolerance: f64,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Elements checked per parameter tensor, distinct ones sampled at
        /// random from a larger one (each costs two forward passes of the reference
        /// interpreter from the layer it is in)
        #[arg(long, default_value_t = crate::gradcheck::DEFAULT_ELEMENTS,
              value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=1_000_000))]
        elements: usize,
    },
}

#[derive(Clone, clap::Args)]
pub(super) struct TrainArgs {
    #[command(flatten)]
    pub(super) target: ModelChoice,
    /// Training data instead of the model's `data = …`: a CSV file or `builtin:NAME`.
    #[arg(long)]
    pub(super) data: Option<String>,
    /// Test data (CSV) to go with --data.
    #[arg(long)]
    pub(super) test: Option<PathBuf>,
    /// Folder against which the model's relative data paths are resolved
    /// (default: the model file's folder).
    #[arg(long)]
    pub(super) data_dir: Option<PathBuf>,
    /// Epochs to train (default: the model's `epochs`); 0 trains nothing:
    /// with --save, the initial weights of the seed are written.
    #[arg(long, value_parser = clap::value_parser!(u64).range(0..=1_000_000))]
    pub(super) epochs: Option<u64>,
    /// Seed for initialisation, shuffling and dropout (default: the model's `seed`).
    #[arg(long)]
    pub(super) seed: Option<u64>,
    /// Write per-epoch and final metrics as JSON to this file.
    #[arg(long)]
    pub(super) metrics_json: Option<PathBuf>,
    /// Print only the final line.
    #[arg(long)]
    pub(super) quiet: bool,
    /// Which executor runs the steps.
    #[arg(long, value_enum, default_value = "jit")]
    pub(super) backend: BackendArg,
    /// Write a checkpoint (safetensors) here after every epoch, atomically.
    #[arg(long)]
    pub(super) save: Option<PathBuf>,
    /// Continue from a checkpoint written by --save, bit for bit.
    #[arg(long)]
    pub(super) resume: Option<PathBuf>,
    /// Draw loss and accuracy per epoch into this SVG file, redrawn after every epoch.
    #[arg(long)]
    pub(super) plot: Option<PathBuf>,
    /// Refuse to start when a training step would need more memory than
    /// this (bytes, or with K, M, G, T: 512M, 4G; default: the machine's).
    #[arg(long, value_parser = memory_size)]
    pub(super) max_memory: Option<u64>,
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

/// A `--tolerance` value for `gradcheck`: a relative error above 0, at most 1.
fn tolerance(text: &str) -> Result<f64, String> {
    number_within(text, f64::MIN_POSITIVE..=1.0, "a relative error")
        .map_err(|_| format!("expected a relative error above 0 and at most 1, such as 1e-4, got `{text}`"))
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

/// An exported graph's batch dimension: `None` for dynamic.
#[derive(Clone)]
pub(super) struct BatchDim(pub(super) Option<usize>);

/// `--batch dynamic` or a size ≥ 1.
fn export_batch(text: &str) -> Result<BatchDim, String> {
    if text == "dynamic" { Ok(BatchDim(None)) } else { batch_size(text).map(|b| BatchDim(Some(b))) }
}
