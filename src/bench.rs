//! `nnc bench`: compile time, steady-state training throughput, batch-1
//! inference latency and peak memory, on synthetic data of the model's shapes.

use std::time::Instant;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use crate::check::{Batch, CheckedModel, TargetKind};
use crate::diag::Diag;
use crate::train::{Backend, TrainError, Trainer};

#[derive(Debug, Serialize)]
pub struct BenchReport {
    pub model: String,
    pub backend: String,
    pub batch: usize,
    /// Lowering, autodiff, planning and code generation of the training step.
    pub compile_ms: f64,
    /// Median over repeats of samples per second, after warm-up.
    pub train_samples_per_s: f64,
    /// Median latency of one forward pass of a single sample.
    pub infer_latency_us: f64,
    /// Peak resident memory of the process.
    pub peak_rss_mib: f64,
}

/// Synthetic inputs (standard normal) and valid targets for `rows` samples.
fn synthetic(model: &CheckedModel, rows: usize, rng: &mut ChaCha8Rng) -> (Vec<f32>, Vec<f32>) {
    let width: usize = model.inputs[0].shape.iter().product();
    let x = (0..rows * width).map(|_| rng.sample::<f32, _>(rand_distr::StandardNormal)).collect();
    let y = match model.targets.first().map(|t| &t.kind) {
        Some(TargetKind::Class(k)) => (0..rows).map(|_| rng.random_range(0..*k) as f32).collect(),
        Some(TargetKind::Real(s)) => (0..rows * s.iter().product::<usize>()).map(|_| rng.random::<f32>()).collect(),
        Some(TargetKind::Binary(s)) => {
            (0..rows * s.iter().product::<usize>()).map(|_| rng.random_range(0..2) as f32).collect()
        }
        None => Vec::new(),
    };
    (x, y)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
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

/// Measures `model` at `batch` (default: its training batch).
pub fn run(
    model: &CheckedModel,
    batch: Option<usize>,
    backend: Backend,
    min_seconds: f64,
) -> Result<BenchReport, BenchError> {
    let batch = batch.unwrap_or(match model.train.batch {
        Batch::Size(b) => b,
        Batch::Full => 64,
    });
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let (x, y) = synthetic(model, batch, &mut rng);
    let started = Instant::now();
    let mut trainer = Trainer::new(model, model.train.clone(), backend).map_err(BenchError::Model)?;
    let lr = model.train.lr;
    // The first step compiles.
    trainer.step(&x, &y, batch, lr).map_err(BenchError::Train)?;
    let compile_ms = started.elapsed().as_secs_f64() * 1e3;
    for _ in 0..3 {
        trainer.step(&x, &y, batch, lr).map_err(BenchError::Train)?;
    }
    // Repeats of at least min_seconds/5 each; the median is reported.
    let mut rates = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        let mut steps = 0usize;
        while t.elapsed().as_secs_f64() < min_seconds / 5.0 || steps < 3 {
            trainer.step(&x, &y, batch, lr).map_err(BenchError::Train)?;
            steps += 1;
        }
        rates.push((steps * batch) as f64 / t.elapsed().as_secs_f64());
    }
    let (x1, _) = synthetic(model, 1, &mut rng);
    trainer.predict(&x1, 1).map_err(BenchError::Train)?;
    let mut latencies = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        let mut calls = 0usize;
        while t.elapsed().as_secs_f64() < min_seconds / 10.0 || calls < 10 {
            std::hint::black_box(trainer.predict(&x1, 1).map_err(BenchError::Train)?);
            calls += 1;
        }
        latencies.push(t.elapsed().as_secs_f64() * 1e6 / calls as f64);
    }
    Ok(BenchReport {
        model: model.name.clone(),
        backend: format!("{backend:?}").to_lowercase(),
        batch,
        compile_ms,
        train_samples_per_s: median(rates),
        infer_latency_us: median(latencies),
        peak_rss_mib: peak_rss_mib(),
    })
}

#[derive(Debug)]
pub enum BenchError {
    Model(Diag),
    Train(TrainError),
}
