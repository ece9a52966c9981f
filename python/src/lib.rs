//! The compiled core of the `nnc` Python package. `nnc/__init__.py` is the
//! public API; this module holds a checked model and its trainer, and does
//! the work with the interpreter's lock released.
//!
//! Locking rule: the trainer's mutex is only ever taken with the Python lock
//! released (inside `py.detach`), so a thread training and a thread
//! predicting never wait on each other's lock in opposite order.

use std::collections::HashMap;
use std::ops::Range;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use numpy::{PyArray1, PyArrayDyn, PyArrayMethods, PyReadonlyArrayDyn, PyUntypedArrayMethods};
use pyo3::exceptions::{PyKeyboardInterrupt, PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};

use nnc::check::{Batch, CheckedModel, InputKind};
use nnc::checkpoint::{self, Origin};
use nnc::data::{Dataset, RowSpec, Scaler};
use nnc::diag::{self, Diag};
use nnc::exec::Backend;
use nnc::pipeline::{self, Checked};
use nnc::train::metrics::{Task, outputs, prediction_columns};
use nnc::train::{EpochReport, Metrics, TrainError, Trainer};

mod arrays;

/// How often a running epoch looks for Ctrl-C.
const SIGNAL_CHECK: Duration = Duration::from_millis(100);

/// The data `fit` trains on, preprocessed once.
struct Prepared {
    train: Dataset,
    validation: Option<Dataset>,
}

struct State {
    trainer: Trainer,
    /// The input preprocessing: fitted on the first training rows (or read
    /// from a checkpoint); `None` until known for `standardize`.
    scaler: Option<Scaler>,
    data: Option<Prepared>,
}

/// A checked model and its trainer.
#[pyclass(module = "nnc._nnc")]
struct Core {
    checked: Checked,
    index: usize,
    spec: RowSpec,
    state: Mutex<State>,
    stop: Arc<AtomicBool>,
}

fn model_error(message: impl Into<String>) -> PyErr {
    PyValueError::new_err(message.into())
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    // A panic while training cannot leave the weights half-written in a way
    // that matters more than losing the model: keep serving.
    state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Each diagnostic as a dict: code, severity, message, line, column, label, help.
fn diagnostics<'py>(py: Python<'py>, checked: &Checked, diags: &[&Diag]) -> PyResult<Bound<'py, PyList>> {
    let list = PyList::empty(py);
    for d in diags {
        let (line, column) = diag::line_col(&checked.source, d.primary.span.start);
        let item = PyDict::new(py);
        item.set_item("code", d.code)?;
        item.set_item("severity", if d.is_error() { "error" } else { "warning" })?;
        item.set_item("message", &d.message)?;
        item.set_item("line", line)?;
        item.set_item("column", column)?;
        item.set_item("label", &d.primary.text)?;
        item.set_item("help", d.help.as_deref())?;
        item.set_item("rendered", diag::render(&[(*d).clone()], &checked.file_name, &checked.source, false, 100))?;
        list.append(item)?;
    }
    Ok(list)
}

/// Checks `source`. Returns (core or None, the rendered report, the
/// diagnostics); the Python side raises or warns.
#[pyfunction]
#[pyo3(signature = (source, file_name, model=None))]
fn compile<'py>(
    py: Python<'py>,
    source: &str,
    file_name: &str,
    model: Option<&str>,
) -> PyResult<(Option<Core>, String, Bound<'py, PyList>)> {
    let checked = pipeline::check_source(file_name, source);
    let report = diag::render(&checked.diags, file_name, source, false, 100);
    let all: Vec<&Diag> = checked.diags.iter().collect();
    let list = diagnostics(py, &checked, &all)?;
    if checked.has_errors() {
        return Ok((None, report, list));
    }
    let index = match model {
        Some(name) => checked.models.iter().position(|m| m.name == name).ok_or_else(|| {
            let names: Vec<&str> = checked.models.iter().map(|m| m.name.as_str()).collect();
            model_error(format!("no model `{name}` in {file_name} (it has: {})", names.join(", ")))
        })?,
        None => 0,
    };
    let checked_model = &checked.models[index];
    let trainer = match Trainer::new(checked_model, checked_model.train.clone(), Backend::Jit) {
        Ok(trainer) => trainer,
        Err(diag) => {
            let report = diag::render(std::slice::from_ref(&diag), file_name, source, false, 100);
            return Ok((None, report, diagnostics(py, &checked, &[&diag])?));
        }
    };
    let batch = match checked_model.train.batch {
        Batch::Size(b) => b,
        Batch::Full => 64,
    };
    nnc::jit::choose_threading(checked_model, batch);
    let scaler = match checked_model.train.preprocess {
        nnc::check::Preprocess::Standardize => None,
        preprocess => Some(Scaler::fit(preprocess, &Dataset::default())),
    };
    let spec = RowSpec::of(checked_model);
    let state = State { trainer, scaler, data: None };
    let core = Core { checked, index, spec, state: Mutex::new(state), stop: Arc::new(AtomicBool::new(false)) };
    Ok((Some(core), report, list))
}

impl Core {
    fn model(&self) -> &CheckedModel {
        &self.checked.models[self.index]
    }

    /// Values per row of `predict`.
    fn output_width(&self) -> usize {
        let model = self.model();
        match outputs(model).last() {
            Some(last) => last.columns.end,
            None => model.nodes.last().map_or(0, |n| n.shape.iter().product()),
        }
    }

    fn scaler(state: &State) -> PyResult<&Scaler> {
        state.scaler.as_ref().ok_or_else(|| {
            model_error("the model standardizes its inputs with the training rows' statistics: call fit (or load saved weights) first")
        })
    }
}

fn metrics_dict<'py>(py: Python<'py>, metrics: &Metrics, prefix: &str) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item(format!("{prefix}loss"), metrics.loss)?;
    for (key, value) in [("accuracy", metrics.accuracy), ("rmse", metrics.rmse), ("r2", metrics.r2)] {
        if let Some(v) = value {
            d.set_item(format!("{prefix}{key}"), v)?;
        }
    }
    // Several outputs: each one's own loss and metrics, under its name.
    for output in &metrics.outputs {
        d.update(metrics_dict(py, &output.metrics, &format!("{prefix}{}_", output.name))?.as_mapping())?;
    }
    Ok(d)
}

fn train_error(e: TrainError) -> PyErr {
    PyRuntimeError::new_err(e.to_string())
}

#[pymethods]
impl Core {
    /// (name, shape, kind) of the input; kind is "real", "seq" or "tokens".
    /// Several inputs are one row: their names joined by commas, the row's width.
    fn input(&self) -> (String, Vec<usize>, &'static str) {
        let inputs = &self.model().inputs;
        let kind = match inputs[0].kind {
            InputKind::Real => "real",
            InputKind::Seq => "seq",
            InputKind::Tokens => "tokens",
        };
        let names: Vec<&str> = inputs.iter().map(|i| i.name.as_str()).collect();
        (names.join(","), self.row_shape(), kind)
    }

    fn name(&self) -> String {
        self.model().name.clone()
    }

    /// Each output's name and columns (start, end) in a row of `predict`:
    /// one output takes them all; several lie side by side.
    fn outputs(&self) -> Vec<(String, usize, usize)> {
        prediction_columns(self.model(), self.output_width())
            .into_iter()
            .map(|(name, _, columns)| (name, columns.start, columns.end))
            .collect()
    }

    /// The table of `nnc summary`.
    fn summary_text(&self) -> String {
        nnc::summary::summarize(self.model()).to_text()
    }

    /// `nnc summary --json`.
    fn summary_json(&self) -> String {
        serde_json::to_string(&nnc::summary::summarize(self.model())).unwrap_or_default()
    }

    /// The model's own epochs, batch and patience (`train { }`).
    fn defaults(&self) -> (usize, Option<usize>, Option<usize>) {
        let train = &self.model().train;
        let batch = match train.batch {
            Batch::Size(b) => Some(b),
            Batch::Full => None,
        };
        (train.epochs, batch, train.patience)
    }

    /// Copies and preprocesses the training (and validation) rows once for
    /// the epochs that follow; the scaler is fitted on the first rows given.
    #[pyo3(signature = (x, y=None, validation=None))]
    fn set_data(
        &self,
        py: Python<'_>,
        x: PyReadonlyArrayDyn<'_, f32>,
        y: Option<PyReadonlyArrayDyn<'_, f32>>,
        validation: Option<(PyReadonlyArrayDyn<'_, f32>, Option<PyReadonlyArrayDyn<'_, f32>>)>,
    ) -> PyResult<()> {
        let mut train = self.dataset(&x, y.as_ref())?;
        let mut held_out = match &validation {
            Some((xv, yv)) => Some(
                self.dataset(xv, yv.as_ref()).map_err(|e| model_error(format!("validation_data: {}", e.value(py))))?,
            ),
            None => None,
        };
        let preprocess = self.model().train.preprocess;
        py.detach(|| {
            let mut state = lock(&self.state);
            let scaler = state.scaler.get_or_insert_with(|| Scaler::fit(preprocess, &train)).clone();
            scaler.apply(&mut train);
            if let Some(v) = held_out.as_mut() {
                scaler.apply(v);
            }
            state.data = Some(Prepared { train, validation: held_out });
        });
        Ok(())
    }

    fn clear_data(&self, py: Python<'_>) {
        py.detach(|| lock(&self.state).data = None);
    }

    /// Trains one epoch on the rows of `set_data` with the Python lock
    /// released, of a run of `total` epochs (the schedule's length). Returns
    /// the epoch's report as a dict, or None when `stop` was called (the
    /// weights are those the epoch started from). Ctrl-C raises
    /// KeyboardInterrupt the same way.
    #[pyo3(signature = (total, batch=None, progress=false))]
    fn train_epoch<'py>(
        &self,
        py: Python<'py>,
        total: usize,
        batch: Option<usize>,
        progress: bool,
    ) -> PyResult<Option<Bound<'py, PyDict>>> {
        if batch == Some(0) {
            return Err(model_error("batch_size must be at least 1"));
        }
        // Steps check for Ctrl-C every SIGNAL_CHECK; epochs shorter than that
        // would leave it to the interpreter between calls, which can miss a
        // signal raised from another thread. The check reads the signal's
        // flag itself.
        py.check_signals()?;
        let stop = Arc::clone(&self.stop);
        let mut interrupted: Option<PyErr> = None;
        let result = py.detach(|| {
            let mut guard = lock(&self.state);
            let state = &mut *guard;
            let data = state.data.as_ref().ok_or_else(|| model_error("no training rows: call set_data first"))?;
            if let Some(b) = batch {
                state.trainer.config.batch = Batch::Size(b);
            }
            // A learning-rate schedule spans the epochs `fit` was asked for.
            state.trainer.config.epochs = total.max(state.trainer.epochs_done() + 1);
            let bar = progress.then(|| {
                let bar = indicatif::ProgressBar::new(data.train.rows as u64);
                bar.set_style(
                    indicatif::ProgressStyle::with_template("epoch {prefix} {bar:30} {pos}/{len} rows  {msg}")
                        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
                );
                bar.set_prefix((state.trainer.epochs_done() + 1).to_string());
                bar
            });
            let mut last_check = Instant::now();
            let mut on_step = |done: usize, _: usize, loss: f64| {
                if let Some(bar) = &bar {
                    bar.set_position(done as u64);
                    bar.set_message(format!("loss {loss:.4}"));
                }
                if last_check.elapsed() >= SIGNAL_CHECK {
                    last_check = Instant::now();
                    if let Err(e) = Python::attach(|py| py.check_signals()) {
                        interrupted = Some(e);
                        return false;
                    }
                }
                !stop.swap(false, Ordering::Relaxed)
            };
            let report =
                state.trainer.fit_epoch_with_progress(&data.train, data.validation.as_ref(), None, &mut on_step);
            if let Some(bar) = bar {
                bar.finish_and_clear();
            }
            Ok::<_, PyErr>(report)
        })?;
        match result {
            Ok(report) => Ok(Some(epoch_dict(py, &report)?)),
            Err(TrainError::Interrupted { .. }) => match interrupted {
                Some(e) if e.is_instance_of::<PyKeyboardInterrupt>(py) => Err(e),
                Some(e) => Err(e),
                None => Ok(None),
            },
            Err(e) => Err(train_error(e)),
        }
    }

    /// Asks a running `train_epoch` (in another thread) to stop after its
    /// current step.
    fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }

    /// The model's outputs for `x`: with `probabilities`, a classifier's
    /// softmax (what `nnc predict` prints), else the raw outputs.
    #[pyo3(signature = (x, probabilities=true))]
    fn predict<'py>(
        &self,
        py: Python<'py>,
        x: PyReadonlyArrayDyn<'py, f32>,
        probabilities: bool,
    ) -> PyResult<Bound<'py, PyArrayDyn<f32>>> {
        let rows = self.check_x("x", &x)?;
        let values = x.as_slice().map_err(|e| model_error(e.to_string()))?;
        let width = self.output_width();
        let classifiers: Vec<Range<usize>> = prediction_columns(self.model(), width)
            .into_iter()
            .filter_map(|(_, task, columns)| matches!(task, Task::Classes(_)).then_some(columns))
            .collect();
        let outputs = py.detach(|| {
            let mut state = lock(&self.state);
            let state = &mut *state;
            let scaler = Core::scaler(state)?;
            // Unscaled float32 rows are read where numpy keeps them.
            let scaled;
            let input: &[f32] = match scaler {
                Scaler::None => values,
                scaler => {
                    let mut data =
                        Dataset { rows, width: self.spec.features, x: values.to_vec(), ..Dataset::default() };
                    scaler.apply(&mut data);
                    scaled = data.x;
                    &scaled
                }
            };
            let mut outputs = state.trainer.predict(input, rows).map_err(train_error)?;
            if probabilities && !classifiers.is_empty() {
                let scores = outputs.clone();
                for (scores, p) in scores.chunks_exact(width).zip(outputs.chunks_exact_mut(width)) {
                    for columns in &classifiers {
                        nnc_runtime::softmax_row(&scores[columns.clone()], &mut p[columns.clone()]);
                    }
                }
            }
            Ok::<_, PyErr>(outputs)
        })?;
        PyArray1::from_vec(py, outputs).reshape(vec![rows, width])
    }

    /// Loss and metrics on rows and their targets.
    #[pyo3(signature = (x, y=None))]
    fn evaluate<'py>(
        &self,
        py: Python<'py>,
        x: PyReadonlyArrayDyn<'py, f32>,
        y: Option<PyReadonlyArrayDyn<'py, f32>>,
    ) -> PyResult<Bound<'py, PyDict>> {
        let mut data = self.dataset(&x, y.as_ref())?;
        let metrics = py.detach(|| {
            let mut state = lock(&self.state);
            Core::scaler(&state)?.apply(&mut data);
            state.trainer.evaluate(&data).map_err(train_error)
        })?;
        let d = metrics_dict(py, &metrics, "")?;
        d.set_item("rows", metrics.rows)?;
        Ok(d)
    }

    /// Writes a checkpoint `nnc predict`, `nnc eval` and `nnc.load` read.
    fn save(&self, py: Python<'_>, path: std::path::PathBuf) -> PyResult<()> {
        py.detach(|| {
            let state = lock(&self.state);
            let scaler = Core::scaler(&state)?;
            let origin = Origin::unnamed(&self.checked.source, scaler);
            checkpoint::save(&path, &state.trainer, &origin)
                .map_err(|e| PyRuntimeError::new_err(format!("cannot save {}: {e}", path.display())))
        })
    }

    /// Loads a checkpoint written by `save` or `nnc train --save`.
    fn load_weights(&self, py: Python<'_>, path: std::path::PathBuf) -> PyResult<()> {
        let name = self.model().name.clone();
        py.detach(|| {
            let saved = checkpoint::load(&path).map_err(|e| model_error(format!("{}: {e}", path.display())))?;
            if saved.model != name {
                return Err(model_error(format!(
                    "{} holds weights of model `{}`, not `{name}`",
                    path.display(),
                    saved.model
                )));
            }
            let mut state = lock(&self.state);
            state
                .trainer
                .restore(&saved.tensors, saved.epoch, saved.step)
                .map_err(|e| model_error(format!("{}: {e}", path.display())))?;
            state.scaler = Some(saved.scaler);
            Ok(())
        })
    }

    /// Every parameter and state tensor: (name, array) with PyTorch's names
    /// and layouts, as a checkpoint holds them.
    fn state_dict<'py>(&self, py: Python<'py>) -> PyResult<Vec<(String, Bound<'py, PyArrayDyn<f32>>)>> {
        let tensors = py.detach(|| lock(&self.state).trainer.tensors());
        tensors
            .into_iter()
            .map(|(name, shape, values)| Ok((name, PyArray1::from_vec(py, values).reshape(shape)?)))
            .collect()
    }

    /// Loads tensors by name; every parameter must be there with its shape.
    fn load_state_dict(&self, py: Python<'_>, tensors: HashMap<String, PyReadonlyArrayDyn<'_, f32>>) -> PyResult<()> {
        let known: Vec<String> = py.detach(|| lock(&self.state).trainer.tensor_names());
        let mut unknown: Vec<&String> = tensors.keys().filter(|name| !known.contains(name)).collect();
        if !unknown.is_empty() {
            unknown.sort();
            return Err(model_error(format!(
                "the model has no tensor named {}: its names are those state_dict() gives",
                unknown.iter().map(|n| format!("`{n}`")).collect::<Vec<_>>().join(", ")
            )));
        }
        let mut saved = HashMap::new();
        for (name, array) in &tensors {
            let values = array.as_slice().map_err(|e| model_error(format!("{name}: {e}")))?;
            if let Some(i) = values.iter().position(|v| !v.is_finite()) {
                return Err(model_error(format!("{name}[{i}] is {}; weights must be finite", values[i])));
            }
            saved.insert(name.clone(), (array.shape().to_vec(), values.to_vec()));
        }
        py.detach(|| {
            let mut state = lock(&self.state);
            let (epochs, steps) = (state.trainer.epochs_done(), state.trainer.steps_done());
            state.trainer.restore(&saved, epochs, steps).map_err(model_error)
        })
    }

    /// Epochs trained so far.
    fn epochs_done(&self, py: Python<'_>) -> usize {
        py.detach(|| lock(&self.state).trainer.epochs_done())
    }
}

fn epoch_dict<'py>(py: Python<'py>, report: &EpochReport) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("epoch", report.epoch)?;
    d.set_item("loss", report.train_loss)?;
    d.set_item("lr", report.lr)?;
    d.set_item("seconds", report.train_seconds)?;
    if let Some(v) = &report.validation {
        d.update(metrics_dict(py, v, "val_")?.as_mapping())?;
    }
    Ok(d)
}

#[pymodule]
fn _nnc(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(compile, m)?)?;
    m.add_class::<Core>()?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
