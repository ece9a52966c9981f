//! The `nnc` command line: one function per command, run on what `args`
//! accepted.
//!
//! Exit codes: 0 success (warnings allowed), 1 errors in the model or data,
//! 2 usage or I/O errors.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Parser;

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
use crate::pipeline::{self, Checked};
use crate::summary;

mod args;
mod fmt;
mod infer;
mod inspect;
mod train;

use args::{BackendArg, Cli, Command, Emit, Format, TrainArgs};

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
        Command::Build { target, weights, output, name, batch, target_cpu, preprocessed_input } => {
            let options = infer::BuildArgs { weights, output, name, batch, target_cpu, preprocessed_input };
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
        Command::Gradcheck { target, tolerance, seed, elements } => {
            inspect::gradcheck(&target.file, target.model.as_deref(), tolerance, (seed, elements))
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
