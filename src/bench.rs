//! `nnc bench`: compile time and steady-state throughput of training, compile
//! time and latency of batch-1 inference (a forward pass alone, as a shipped
//! model runs), and peak memory, on synthetic data of the model's shapes.

use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use crate::check::{Batch, CheckedModel};
use crate::diag::Diag;
use crate::exec::Backend;
use crate::model::Model;
use crate::train::{TrainError, Trainer};

#[derive(Debug, Serialize)]
pub struct BenchReport {
    pub model: String,
    pub backend: String,
    pub batch: usize,
    /// Lowering, autodiff, planning and code generation of the training step.
    pub compile_ms: f64,
    /// Median over repeats of samples per second, after warm-up.
    pub train_samples_per_s: f64,
    /// Median of the same repeats' training steps, timed one by one.
    pub train_step_ms: f64,
    /// Their 99th percentile: a step split over the cores waits for both,
    /// so a thread the system stops shows here (and in the throughput).
    pub train_step_p99_ms: f64,
    /// Lowering, planning and code generation of the batch-1 forward pass.
    pub infer_compile_ms: f64,
    /// Median latency of one forward pass of a single sample.
    pub infer_latency_us: f64,
    /// Rows in the batch-inference measurement (up to 10,000; fewer for
    /// models costing more than 500 k multiply-adds a row).
    pub predict_rows: usize,
    /// Rows per second predicting them in one call, as `nnc predict` and
    /// the Python package run a data set (in chunks; median of 3 after a
    /// warm-up that compiles the passes).
    pub predict_rows_per_s: f64,
    /// Peak resident memory of the process.
    pub peak_rss_mib: f64,
    /// Cores that other processes, and the hypervisor taking the virtual
    /// CPUs away (steal), used during the kept training repeats (median;
    /// absent where /proc cannot tell).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub foreign_cores: Option<f64>,
    /// Repeats of any measurement run again because others used
    /// `--foreign-max` cores or more during them.
    pub discarded_repeats: usize,
    /// With `--kernels`: each kernel of a training step, in order, with
    /// its median time (after the measurements above, in steps of their own).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kernels: Option<Vec<KernelTime>>,
}

/// One kernel of the training step as `nnc check --emit plan` lists it,
/// and the median of its times.
#[derive(Debug, Serialize)]
pub struct KernelTime {
    pub kernel: String,
    /// A product's multiply-adds (0 for other kernels).
    pub multiply_adds: u64,
    pub median_us: f64,
    /// How many runs of the kernel were timed.
    pub runs: usize,
}

/// Synthetic inputs (standard normal) and valid targets for `rows` samples.
fn synthetic(model: &CheckedModel, rows: usize, rng: &mut ChaCha8Rng) -> (Vec<f32>, Vec<f32>) {
    let width = model.input_width();
    let x = (0..rows * width).map(|_| rng.sample::<f32, _>(rand_distr::StandardNormal)).collect();
    (x, crate::data::RowSpec::of(model).random_targets(rows, rng))
}

fn median(v: Vec<f64>) -> f64 {
    percentile(v, 0.5)
}

/// The value a fraction `q` of the way through `v` sorted (NaN if none).
fn percentile(mut v: Vec<f64>, q: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    let last = v.len().saturating_sub(1);
    v.get((last as f64 * q).round() as usize).copied().unwrap_or(f64::NAN)
}

/// Peak resident set size from /proc (0 where unavailable).
pub fn peak_rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

/// The CPU time the whole machine and this process have used, from
/// /proc, in clock ticks.
#[derive(Clone, Copy)]
struct CpuTicks {
    /// Every CPU's busy time (user, nice, system, irq, softirq and steal).
    machine: u64,
    /// This process's (user and system, all threads).
    own: u64,
    /// The CPUs /proc/stat lists.
    cpus: u64,
    at: Instant,
}

/// Clock ticks a second in /proc's CPU times (Linux's USER_HZ, 100 on
/// every architecture it runs on today).
const TICKS_PER_SECOND: f64 = 100.0;

impl CpuTicks {
    /// Now, or None where /proc cannot tell.
    fn now() -> Option<CpuTicks> {
        let stat = std::fs::read_to_string("/proc/stat").ok()?;
        let machine: Vec<u64> = stat
            .lines()
            .next()?
            .strip_prefix("cpu ")?
            .split_whitespace()
            .map(|v| v.parse().ok())
            .collect::<Option<_>>()?;
        let own = std::fs::read_to_string("/proc/self/stat").ok()?;
        // Fields after the command's name (which may hold spaces): utime and stime are 14 and 15 of the line.
        let after_name: Vec<&str> = own.rsplit_once(')')?.1.split_whitespace().collect();
        let times: u64 = after_name.get(11..13)?.iter().map(|v| v.parse::<u64>().ok()).sum::<Option<u64>>()?;
        let busy: u64 = [0, 1, 2, 5, 6, 7].iter().map(|&i| machine.get(i).copied().unwrap_or(0)).sum();
        let cpus = stat.lines().filter(|l| l.starts_with("cpu") && !l.starts_with("cpu ")).count() as u64;
        Some(CpuTicks { machine: busy, own: times, cpus, at: Instant::now() })
    }

    /// Cores others used on average since `self`. The machine's times
    /// count whole ticks, each CPU's off by up to one at either end, so
    /// two ticks a CPU are forgiven: a busy neighbour shows in a repeat of
    /// some tenths of a second, not in one of a few milliseconds.
    fn foreign_cores_since(self) -> Option<f64> {
        let now = CpuTicks::now()?;
        let seconds = now.at.duration_since(self.at).as_secs_f64();
        let others = now.machine.saturating_sub(self.machine).saturating_sub(now.own.saturating_sub(self.own));
        let foreign = others.saturating_sub(2 * now.cpus) as f64 / TICKS_PER_SECOND;
        (seconds > 0.0).then(|| foreign / seconds)
    }
}

/// Repeats disturbed by other processes, as the peers' benchmark harness
/// treats them: with a limit, a repeat during which others used that many
/// cores or more is discarded and, once the machine has been idle for a
/// second (or after `IDLE_WAIT`), run again, `MAX_DISCARDS` times at most.
/// Without one every repeat is kept and the load only reported.
struct LoadGuard {
    limit: Option<f64>,
    discarded: usize,
    /// Others' cores during each kept repeat (the training repeats' are
    /// taken for the report before the others run).
    kept: Vec<f64>,
}

/// Discards at most, over a whole `nnc bench` run.
const MAX_DISCARDS: usize = 10;
/// Longest wait for the machine to go idle after a discard.
const IDLE_WAIT: Duration = Duration::from_secs(300);

impl LoadGuard {
    /// Whether a repeat that started at `start` is kept (waiting for the
    /// machine to go idle first when it is not); a kept repeat's load is
    /// noted in `kept`.
    fn keep(&mut self, start: Option<CpuTicks>) -> bool {
        let Some(foreign) = start.and_then(CpuTicks::foreign_cores_since) else { return true };
        match self.limit {
            Some(limit) if foreign >= limit && self.discarded < MAX_DISCARDS => {
                self.discarded += 1;
                let give_up = Instant::now() + IDLE_WAIT;
                while Instant::now() < give_up {
                    let second = CpuTicks::now();
                    std::thread::sleep(Duration::from_secs(1));
                    if second.and_then(CpuTicks::foreign_cores_since).is_none_or(|f| f < limit) {
                        break;
                    }
                }
                false
            }
            _ => {
                self.kept.push(foreign);
                true
            }
        }
    }
}

/// How `run` measures.
pub struct Settings {
    /// Seconds spent measuring throughput.
    pub min_seconds: f64,
    /// Also time each kernel of the training step.
    pub kernels: bool,
    /// Run again repeats during which other processes used this many cores.
    pub foreign_max: Option<f64>,
    /// Train as `nnc train` does, observing each parameter's and activation
    /// layer's health in every step.
    pub health: bool,
}

/// Measures `model` at `batch` (default: its training batch); with
/// `foreign_max`, repeats during which other processes used that many
/// cores are run again (`LoadGuard`).
pub fn run(
    model: &CheckedModel,
    batch: Option<usize>,
    backend: Backend,
    &Settings { min_seconds, kernels, foreign_max, health }: &Settings,
) -> Result<BenchReport, BenchError> {
    let batch = batch.unwrap_or(match model.train.batch {
        Batch::Size(b) => b,
        Batch::Full => 64,
    });
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let (x, y) = synthetic(model, batch, &mut rng);
    let mut trainer = trainer(model, backend, health)?;
    let lr = model.train.lr;
    let started = Instant::now();
    trainer.prepare(batch).map_err(BenchError::Train)?;
    let compile_ms = started.elapsed().as_secs_f64() * 1e3;
    trainer.step_while(&x, &y, batch, lr, |steps, _| steps < 4).map_err(BenchError::Train)?;
    // Repeats of at least min_seconds/5 and 3 steps each; the median is
    // reported. They run in one `step_while`, timed from after its first
    // step: each call starts by copying the store to the replicas (1.1 GB
    // for VGG-16), which a training run does once an epoch. A discarded
    // repeat's steps are dropped, and the next starts two steps after the
    // wait, warm again.
    let mut guard = LoadGuard { limit: foreign_max, discarded: 0, kept: Vec::new() };
    let mut rates = Vec::new();
    let (mut start_at, mut repeat) = (1, None);
    let (mut step_ms, mut repeat_ms, mut last_step) = (Vec::new(), Vec::new(), Instant::now());
    // Steps are timed by when each finished: replicated steps are heard in
    // bursts, long after some of them ended.
    let go_on = |steps: usize, finished: Instant| {
        let since = |t: Instant| finished.saturating_duration_since(t).as_secs_f64();
        if repeat.is_some() {
            repeat_ms.push(since(last_step) * 1e3);
        }
        match repeat {
            None if steps >= start_at => repeat = Some((finished, steps, CpuTicks::now())),
            Some((t, first, load)) if since(t) >= min_seconds / 5.0 && steps - first >= 3 => {
                let rate = ((steps - first) * batch) as f64 / since(t);
                if guard.keep(load) {
                    rates.push(rate);
                    step_ms.append(&mut repeat_ms);
                    repeat = Some((finished, steps, CpuTicks::now()));
                } else {
                    repeat_ms.clear();
                    (start_at, repeat) = (steps + 2, None);
                }
            }
            _ => {}
        }
        last_step = finished;
        rates.len() < 5
    };
    trainer.step_while(&x, &y, batch, lr, go_on).map_err(BenchError::Train)?;
    let foreign_cores = (!guard.kept.is_empty()).then(|| median(std::mem::take(&mut guard.kept)));
    let (infer_compile_ms, infer_latency_us) = inference(model, backend, min_seconds, &mut rng, &mut guard)?;
    let (predict_rows, predict_rows_per_s) = batch_inference(model, backend, &mut rng, &mut guard)?;
    let kernels = match kernels {
        true => Some(kernel_times(model, (&x, &y, batch), min_seconds, health)?),
        false => None,
    };
    Ok(BenchReport {
        model: model.name.clone(),
        backend: format!("{backend:?}").to_lowercase(),
        batch,
        compile_ms,
        train_samples_per_s: median(rates),
        train_step_ms: median(step_ms.clone()),
        train_step_p99_ms: percentile(step_ms, 0.99),
        infer_compile_ms,
        infer_latency_us,
        predict_rows,
        predict_rows_per_s,
        peak_rss_mib: peak_rss_mib(),
        foreign_cores,
        discarded_repeats: guard.discarded,
        kernels,
    })
}

/// A trainer of `model` on `backend`, observing health as `nnc train`
/// does when `health`.
fn trainer(model: &CheckedModel, backend: Backend, health: bool) -> Result<Trainer, BenchError> {
    let mut trainer = Trainer::new(model, model.train.clone(), backend).map_err(BenchError::Model)?;
    if health {
        trainer.track_health();
    }
    Ok(trainer)
}

/// Steps whose kernels `--kernels` times at most: their marks are kept
/// (a step of a few microseconds would otherwise keep millions).
const PROFILED_STEPS: usize = 2000;

/// Each kernel of the training step (observing health when `health`) and
/// the median of its times, over steps run for `seconds` (at least ten, at
/// most `PROFILED_STEPS`) by a step compiled to mark its kernels
/// (`nnc_runtime::profile`).
fn kernel_times(
    model: &CheckedModel,
    (x, y, batch): (&[f32], &[f32], usize),
    seconds: f64,
    health: bool,
) -> Result<Vec<KernelTime>, BenchError> {
    let mut trainer = trainer(model, Backend::Profiled, health)?;
    trainer.prepare(batch).map_err(BenchError::Train)?;
    trainer.step_while(x, y, batch, model.train.lr, |steps, _| steps < 4).map_err(BenchError::Train)?;
    nnc_runtime::profile::take();
    let started = Instant::now();
    trainer
        .step_while(x, y, batch, model.train.lr, |steps, _| {
            steps < 10 || (steps < PROFILED_STEPS && started.elapsed().as_secs_f64() < seconds)
        })
        .map_err(BenchError::Train)?;
    // The step that ran most (a model may compile others, such as a forward pass).
    let step = nnc_runtime::profile::take().into_iter().max_by_key(|k| k.iter().map(|t| t.micros.len()).sum::<usize>());
    Ok(step
        .unwrap_or_default()
        .into_iter()
        .map(|t| KernelTime {
            kernel: t.kernel.label,
            multiply_adds: t.kernel.multiply_adds,
            runs: t.micros.len(),
            median_us: median(t.micros),
        })
        .collect())
}

/// The compile time (ms) and median latency (µs) of batch-1 inference by a
/// runtime model of its own: no training step, no optimizer state.
fn inference(
    model: &CheckedModel,
    backend: Backend,
    min_seconds: f64,
    rng: &mut ChaCha8Rng,
    guard: &mut LoadGuard,
) -> Result<(f64, f64), BenchError> {
    let (x1, _) = synthetic(model, 1, rng);
    let internal = |e| BenchError::Train(TrainError::Internal(e));
    let mut runtime = Model::new(model, backend).map_err(BenchError::Model)?;
    let started = Instant::now();
    runtime.prepare(1, false).map_err(internal)?;
    let compile_ms = started.elapsed().as_secs_f64() * 1e3;
    let predict = |runtime: &mut Model| runtime.predict(&x1, 1).map_err(internal);
    predict(&mut runtime)?;
    let mut latencies = Vec::new();
    while latencies.len() < 5 {
        let (t, load) = (Instant::now(), CpuTicks::now());
        let mut calls = 0usize;
        while t.elapsed().as_secs_f64() < min_seconds / 10.0 || calls < 10 {
            std::hint::black_box(predict(&mut runtime)?);
            calls += 1;
        }
        let latency = t.elapsed().as_secs_f64() * 1e6 / calls as f64;
        if guard.keep(load) {
            latencies.push(latency);
        } else {
            predict(&mut runtime)?;
        }
    }
    Ok((compile_ms, median(latencies)))
}

/// Multiply-adds one batch-inference measurement may take.
const PREDICT_BUDGET_MACS: u64 = 5_000_000_000;

/// Rows per second of `Model::predict` over many rows.
fn batch_inference(
    model: &CheckedModel,
    backend: Backend,
    rng: &mut ChaCha8Rng,
    guard: &mut LoadGuard,
) -> Result<(usize, f64), BenchError> {
    let rows = (PREDICT_BUDGET_MACS / model.total_macs().max(1)).clamp(1, 10_000) as usize;
    let (x, _) = synthetic(model, rows, rng);
    let internal = |e| BenchError::Train(TrainError::Internal(e));
    let mut runtime = Model::new(model, backend).map_err(BenchError::Model)?;
    runtime.predict(&x, rows).map_err(internal)?;
    let mut rates = Vec::new();
    while rates.len() < 3 {
        let (t, load) = (Instant::now(), CpuTicks::now());
        std::hint::black_box(runtime.predict(&x, rows).map_err(internal)?);
        let rate = rows as f64 / t.elapsed().as_secs_f64();
        if guard.keep(load) {
            rates.push(rate);
        }
    }
    Ok((rows, median(rates)))
}

#[derive(Debug)]
pub enum BenchError {
    Model(Diag),
    Train(TrainError),
}
