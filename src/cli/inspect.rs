//! The commands that look inside a model rather than train or run it:
//! `gradcheck`, `bench` and `check --emit`.

use std::io::IsTerminal;
use std::path::Path;

use indicatif::{ProgressBar, ProgressStyle};

use super::{Emit, Failure, Outcome, load_model, memory_limit, report_diag, set_threading, training_batch};
use crate::check::CheckedModel;
use crate::exec::Backend;
use crate::gradcheck::{Observer, Options, TensorReport};
use crate::pipeline::{self, Checked};

/// `nnc gradcheck`: each parameter tensor's row as soon as it is checked,
/// under a live bar of the finite differences on a terminal (a large
/// model's check takes minutes).
pub(super) fn gradcheck(file: &Path, model: Option<&str>, tolerance: f64, (seed, elements): (u64, usize)) -> Outcome {
    let (checked, index) = load_model(file, model)?;
    let model = &checked.models[index];
    let rows = Rows { tolerance, bar: std::io::stdout().is_terminal().then(progress_bar) };
    let options = Options { seed, elements, observer: &rows };
    let reports = crate::gradcheck::check_model(model, &options);
    if let Some(bar) = &rows.bar {
        bar.finish_and_clear();
    }
    let reports = reports.map_err(|d| report_diag(&checked, &d))?;
    if reports.iter().all(|r| r.worst_relative_error <= tolerance) {
        say!("gradients agree with finite differences (tolerance {tolerance:e})");
        Ok(())
    } else {
        say!("some gradients exceed the tolerance {tolerance:e}");
        Err(Failure::Reported)
    }
}

/// Prints each tensor's row of `nnc gradcheck`, and moves its bar.
struct Rows {
    tolerance: f64,
    bar: Option<ProgressBar>,
}

impl Observer for Rows {
    fn started(&self, differences: usize) {
        let header = format!("{:<24} {:>10} {:>14} {:>14}", "parameter", "checked", "max rel err", "max abs err");
        match &self.bar {
            Some(bar) => {
                bar.suspend(|| say!("{header}"));
                bar.set_length(differences as u64);
                bar.set_message("finite differences");
            }
            None => say!("{header}"),
        }
    }

    fn difference_done(&self) {
        if let Some(bar) = &self.bar {
            bar.inc(1);
        }
    }

    fn tensor_done(&self, r: &TensorReport) {
        let pass = r.worst_relative_error <= self.tolerance;
        let row = format!(
            "{:<24} {:>10} {:>14.3e} {:>14.3e}  {}",
            r.name,
            r.elements_checked,
            r.worst_relative_error,
            r.worst_absolute_error,
            if pass { "ok" } else { "FAIL" }
        );
        match &self.bar {
            Some(bar) => bar.suspend(|| say!("{row}")),
            None => say!("{row}"),
        }
    }
}

/// A bar of the finite differences done, their rate and the time left;
/// before them, the autodiff pass they are compared with.
fn progress_bar() -> ProgressBar {
    let style = ProgressStyle::with_template("[{bar:30}] {pos}/{len} {msg}  {per_sec}  eta {eta}  ({elapsed})")
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
    let bar = ProgressBar::new(0).with_style(style).with_message("the forward and backward passes");
    bar.enable_steady_tick(std::time::Duration::from_secs(1));
    bar
}

pub(super) fn emit_stage(checked: &Checked, model: &CheckedModel, emit: Emit, batch: usize) -> Outcome {
    let text = match emit {
        Emit::Ast => crate::syntax::parse(&checked.source).map(|ast| format!("{ast:#?}\n")),
        Emit::Ir => pipeline::forward_graph(model, batch, true).map(|g| g.to_text()),
        Emit::TrainIr => pipeline::step_graph(model, &model.train, batch).map(|step| step.to_text()),
        // The step as the JIT compiles it.
        Emit::Plan => pipeline::step_graph(model, &model.train, batch).map(|mut step| {
            step.fuse_activations();
            crate::plan::plan_train(&step).to_text(&step.graph)
        }),
        Emit::Clif => pipeline::step_graph(model, &model.train, batch).and_then(|mut step| {
            step.fuse_activations();
            crate::jit::clif(&step.graph, &crate::plan::plan_train(&step))
                .map_err(|e| crate::diag::messages::internal(model.span, &e))
        }),
    };
    let text = text.map_err(|d| report_diag(checked, &d))?;
    say_raw!("{text}");
    Ok(())
}

/// The flags of `nnc bench`.
pub(super) struct BenchOptions {
    pub(super) batch: Option<usize>,
    pub(super) backend: Backend,
    pub(super) seconds: f64,
    pub(super) json: bool,
    pub(super) max_memory: Option<u64>,
    pub(super) kernels: bool,
    pub(super) foreign_max: Option<f64>,
    pub(super) health: bool,
}

pub(super) fn bench(file: &Path, model: Option<&str>, options: &BenchOptions) -> Outcome {
    let BenchOptions { batch, backend, seconds, json, max_memory, kernels, foreign_max, health } = *options;
    if kernels && !backend.compiles() {
        return Err(Failure::Usage(
            "--kernels times the compiled step's kernels; the interpreter has none (drop --backend interp)".into(),
        ));
    }
    let (checked, index) = load_model(file, model)?;
    let model = &checked.models[index];
    let step_batch = batch.unwrap_or_else(|| training_batch(model));
    if let Some(diag) = model.memory_error(step_batch, memory_limit(max_memory)) {
        return Err(report_diag(&checked, &diag));
    }
    set_threading(model, step_batch);
    let settings = crate::bench::Settings { min_seconds: seconds, kernels, foreign_max, health };
    let r = crate::bench::run(model, batch, backend, &settings).map_err(|e| match e {
        crate::bench::BenchError::Model(d) => report_diag(&checked, &d),
        crate::bench::BenchError::Train(e) => Failure::Input(e.to_string()),
    })?;
    if json {
        say!("{}", serde_json::to_string_pretty(&r).unwrap_or_default());
    } else {
        say!(
            "{} ({}, batch {}): train: compile {:.1} ms, {:.0} samples/s (a step {:.2} ms, 99th percentile \
             {:.2} ms); inference at batch 1: compile {:.1} ms, {:.1} µs; predicting {} rows: {:.0} rows/s; \
             peak RSS {:.1} MiB{}",
            r.model,
            r.backend,
            r.batch,
            r.compile_ms,
            r.train_samples_per_s,
            r.train_step_ms,
            r.train_step_p99_ms,
            r.infer_compile_ms,
            r.infer_latency_us,
            r.predict_rows,
            r.predict_rows_per_s,
            r.peak_rss_mib,
            load_note(r.foreign_cores, r.discarded_repeats)
        );
        if let Some(kernels) = &r.kernels {
            say_raw!("{}", kernel_table(kernels));
        }
    }
    Ok(())
}

/// What others used of the machine while training was timed, and how many
/// repeats ran again for it (nothing where /proc cannot tell).
fn load_note(foreign_cores: Option<f64>, discarded: usize) -> String {
    let mut note = foreign_cores.map_or(String::new(), |c| format!("; others used {c:.2} cores"));
    if discarded > 0 {
        let repeats = if discarded == 1 { "repeat" } else { "repeats" };
        note += &format!(" ({discarded} {repeats} run again)");
    }
    note
}

/// `nnc bench --kernels`' table: each kernel's median time, its share of
/// their sum and, for a product, its multiply-adds a second.
fn kernel_table(kernels: &[crate::bench::KernelTime]) -> String {
    let total: f64 = kernels.iter().map(|k| k.median_us).sum();
    let runs = kernels.iter().map(|k| k.runs).max().unwrap_or(0);
    let mut out = format!(
        "the training step's kernels (medians over {runs} runs; {total:.1} µs in all, each kernel timed \
         from its start to the next's):\n{:>10}  {:>6}  {:>7}  kernel\n",
        "µs", "share", "GMAC/s"
    );
    for k in kernels {
        let share = if total > 0.0 { 100.0 * k.median_us / total } else { 0.0 };
        let rate = match k.multiply_adds {
            0 => String::new(),
            macs => format!("{:.1}", macs as f64 / k.median_us / 1e3),
        };
        out += &format!("{:>10.1}  {:>5.1}%  {rate:>7}  {}\n", k.median_us, share, k.kernel);
    }
    out
}
