//! `nnc train`: load the data the model names (or `--data`), check it
//! against the model, train, and report.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::Instant;

use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use super::{Failure, Outcome, TrainArgs, load_model, report_diag};

mod early_stopping;
use early_stopping::Best;

use crate::check::{CheckedModel, DataSource, TrainConfig};
use crate::checkpoint;
use crate::cluster::Cluster;
use crate::data::{self, DataError, Dataset, RowSpec, Scaler, Splits};
use crate::diag::{Diag, Span, messages};
use crate::pipeline::Checked;
use crate::train::gap::{self, Gap};
use crate::train::health::Warning;
use crate::train::{EpochReport, Metrics, PretrainReport, TrainError, Trainer};

#[derive(Serialize)]
struct MetricsFile<'a> {
    model: &'a str,
    data: &'a str,
    epochs: &'a [EpochReport],
    /// The held-out loss's best epoch, and overfitting when seen.
    #[serde(skip_serializing_if = "Option::is_none")]
    gap: Option<Gap>,
    /// Which split the final metrics come from: "test", else "validation", else "train".
    final_split: &'a str,
    #[serde(flatten)]
    final_metrics: FinalMetrics,
}

#[derive(Serialize)]
struct FinalMetrics {
    test_loss: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    test_accuracy: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    test_rmse: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    test_r2: Option<f64>,
    /// Per-class precision, recall and F1, and their macro averages.
    #[serde(skip_serializing_if = "Option::is_none")]
    test_classes: Option<crate::train::metrics::ClassScores>,
    #[serde(skip_serializing_if = "Option::is_none")]
    test_roc_auc: Option<f64>,
}

pub fn run(args: &TrainArgs) -> Outcome {
    let Some(cluster) = Cluster::join().map_err(Failure::Usage)? else {
        let (checked, index, mut trainer, data) = prepare(args)?;
        return train(args, (&checked, &checked.models[index]), &mut trainer, &data);
    };
    // Rank 0 alone reports and writes; the others train alongside, silent.
    let silent = TrainArgs { quiet: true, save: None, plot: None, metrics_json: None, ..args.clone() };
    let args = if cluster.rank() == 0 { args } else { &silent };
    // A rank that cannot start says why, and every rank stops before training.
    let prepared = prepare(args).and_then(|mut run| {
        run.2.join(cluster.team()).map_err(Failure::Input)?;
        Ok(run)
    });
    if let (Err(failure), true) = (&prepared, cluster.rank() != 0) {
        // Written where `settle` shows it (rank 0's error stream is its own).
        if let Some(message) = failure.message() {
            eprintln!("error: {message}");
        }
    }
    let failed = cluster.settle(prepared.is_err());
    let (checked, index, mut trainer, data) = match prepared {
        Err(failure) => return Err(failure),
        Ok(_) if failed > 0 => {
            if cluster.rank() == 0 {
                eprintln!("error: {failed} process(es) of the job could not start training (see their messages)");
            }
            return Err(Failure::Reported);
        }
        Ok(run) => run,
    };
    let outcome = train(args, (&checked, &checked.models[index]), &mut trainer, &data);
    match outcome {
        // Every rank stops at the same step for these (the trainer agrees
        // on the loss and on Ctrl-C), and rank 0 has said why.
        Ok(()) | Err(Failure::Reported | Failure::Interrupted) => outcome,
        // Anything else is this rank's alone: the others must not wait.
        Err(failure) => {
            cluster.report(failure.message().unwrap_or("failed"));
            cluster.abort(failure.code())
        }
    }
}

/// A run ready to train: the model file, which model, the trainer (after
/// pretraining and `--resume`) and the data.
fn prepare(args: &TrainArgs) -> Result<(Checked, usize, Trainer, Prepared), Failure> {
    let (checked, index) = load_model(&args.target.file, args.target.model.as_deref())?;
    let model = &checked.models[index];
    if let Some(path) = &args.plot
        && !path.extension().is_some_and(|e| e.eq_ignore_ascii_case("svg"))
    {
        return Err(Failure::Usage(format!("--plot writes SVG; name the file `….svg` (got {})", path.display())));
    }
    for path in [&args.save, &args.plot, &args.metrics_json].into_iter().flatten() {
        check_output(path)?;
    }
    let mut config = model.train.clone();
    if let Some(e) = args.epochs {
        config.epochs = e as usize;
    }
    if let Some(s) = args.seed {
        config.seed = s;
    }
    super::set_threading(model, super::training_batch(model));
    let mut trainer =
        Trainer::new(model, config.clone(), args.backend.into()).map_err(|d| report_diag(&checked, &d))?;
    trainer.track_health();
    let data = Prepared::new(load_data(args, &checked, model)?, &config)?;
    // Also before `--epochs 0 --save` writes the initial weights.
    trainer.fit_target_scale(&data.train);
    // `batch = full` is known only now, and --max-memory only here.
    let batch = match config.batch {
        crate::check::Batch::Size(b) => b,
        crate::check::Batch::Full => data.train.rows,
    };
    if let Some(diag) = model.memory_error(batch, super::memory_limit(args.max_memory)) {
        return Err(report_diag(&checked, &diag));
    }
    if !args.quiet {
        say!("training {} on {}, {} epochs", model.name, data.describe(), config.epochs);
    }
    if let Some(path) = &args.resume {
        resume(&mut trainer, path, (model, &checked.source)).map_err(Failure::Input)?;
        if !args.quiet {
            say!("resuming from {} after epoch {}", path.display(), trainer.epochs_done());
        }
    }
    if trainer.epochs_done() == 0 && config.pretrain.is_some() {
        let mut on_epoch = |r: &PretrainReport| {
            if !args.quiet {
                say!("pretrain {} epoch {}  reconstruction error {:.5}", r.layer, r.epoch, r.reconstruction_error);
            }
        };
        trainer.pretrain(&data.train, &mut on_epoch).map_err(|e| Failure::Input(e.to_string()))?;
    }
    Ok((checked, index, trainer, data))
}

/// Trains the prepared run and reports.
fn train(
    args: &TrainArgs,
    (checked, model): (&Checked, &CheckedModel),
    trainer: &mut Trainer,
    data: &Prepared,
) -> Outcome {
    let started = Instant::now();
    if trainer.config.epochs == 0
        && trainer.epochs_done() == 0
        && let Some(path) = &args.save
    {
        // `--epochs 0`: the seed's initial weights, so that a run elsewhere
        // (another framework) can start from the same place.
        checkpoint::save(path, trainer, &data.origin(&checked.source)).map_err(Failure::Usage)?;
    }
    let history = train_epochs(args, (checked, model), trainer, data, started)?;
    final_report(args, model, trainer, data, &history, started)
}

/// The final line (on the test rows, else the validation rows, else the
/// training rows) and the metrics file, for a finished or interrupted run.
fn final_report(
    args: &TrainArgs,
    model: &CheckedModel,
    trainer: &mut Trainer,
    data: &Prepared,
    history: &[EpochReport],
    started: Instant,
) -> Outcome {
    let (split, final_set) = match (&data.test, &data.validation) {
        (Some(t), _) => ("test", t),
        (None, Some(v)) => ("validation", v),
        (None, None) => ("train", &data.train),
    };
    let metrics = trainer.evaluate(final_set).map_err(|e| Failure::Input(e.to_string()))?;
    say!("{split}: {}  ({} rows, {:.1} s)", metrics.final_text(), metrics.rows, started.elapsed().as_secs_f64());
    if let Some(path) = &args.metrics_json {
        write_metrics(path, model, &data.description, history, split, &metrics)?;
    }
    Ok(())
}

/// The data a run trains on, preprocessed by the scaler fitted on its
/// training rows, with the validation rows held out.
struct Prepared {
    train: Dataset,
    validation: Option<Dataset>,
    test: Option<Dataset>,
    scaler: Scaler,
    description: String,
}

impl Prepared {
    fn new(splits: Splits, config: &TrainConfig) -> Result<Prepared, Failure> {
        if config.validation > 0.0 && splits.train.rows < 2 {
            return Err(Failure::Input(format!(
                "`validation = {}` needs at least 2 training rows, and {} has {}; add rows or remove `validation`",
                config.validation, splits.description, splits.train.rows
            )));
        }
        let scaler = Scaler::fit(config.preprocess, &splits.train);
        let mut train = splits.train;
        scaler.apply(&mut train);
        let mut test = splits.test;
        if let Some(t) = test.as_mut() {
            scaler.apply(t);
        }
        let (train, validation) = split_validation(train, config.validation, config.seed);
        Ok(Prepared { train, validation, test, scaler, description: splits.description })
    }

    /// What a checkpoint of this run records besides the weights.
    fn origin<'a>(&'a self, source: &'a str) -> checkpoint::Origin<'a> {
        checkpoint::Origin { source, scaler: &self.scaler, columns: &self.train.columns }
    }

    /// `digits (1150 rows, 288 validation, 359 test)`
    fn describe(&self) -> String {
        format!(
            "{} ({} rows{}{})",
            self.description,
            self.train.rows,
            self.validation.as_ref().map_or(String::new(), |v| format!(", {} validation", v.rows)),
            self.test.as_ref().map_or(String::new(), |t| format!(", {} test", t.rows)),
        )
    }
}

/// Trains the remaining epochs; after each one saves the checkpoint, prints
/// its line and redraws the plot. Ctrl-C ends the current step, saves and
/// stops (see `interrupted`).
fn train_epochs(
    args: &TrainArgs,
    (checked, model): (&Checked, &CheckedModel),
    trainer: &mut Trainer,
    data: &Prepared,
    started: Instant,
) -> Result<Vec<EpochReport>, Failure> {
    super::catch_ctrl_c();
    let epochs = trainer.config.epochs;
    let mut history = Vec::new();
    let (mut gap, mut warned, mut warned_gradients) = (gap::Tracker::default(), false, Vec::new());
    let mut best = Best::default();
    // A live bar on a terminal; plain lines in pipes and CI.
    let live = !args.quiet && std::io::stdout().is_terminal();
    while trainer.epochs_done() < epochs {
        let bar = live.then(|| progress_bar(trainer.epochs_done() + 1, epochs, data.train.rows));
        let mut on_step = |done: usize, _: usize, loss: f64| {
            if let Some(bar) = &bar {
                bar.set_position(done as u64);
                bar.set_message(format!("loss {loss:.4}"));
            }
            !super::ctrl_c_pressed()
        };
        let result =
            trainer.fit_epoch_with_progress(&data.train, data.validation.as_ref(), data.test.as_ref(), &mut on_step);
        if let Some(bar) = bar {
            bar.finish_and_clear();
        }
        let report = match result {
            Ok(report) => report,
            Err(TrainError::Interrupted { epoch }) => {
                interrupted(args, trainer, &data.origin(&checked.source), epoch);
                // The weights kept are the last finished epoch's: report them.
                final_report(args, model, trainer, data, &history, started)?;
                return Err(Failure::Interrupted);
            }
            Err(e) => return Err(training_failed(args, checked, &e)),
        };
        if let Some(path) = &args.save {
            checkpoint::save(path, trainer, &data.origin(&checked.source)).map_err(Failure::Usage)?;
        }
        if !args.quiet {
            say!("{}", epoch_line(&report, epochs, started));
        }
        gap.push(&report);
        history.push(report);
        if let Some(path) = &args.plot {
            write_plot(path, &model.name, &history)?;
        }
        warn_of_overfitting(&gap, &mut warned);
        warn_of_gradients(&history, &mut warned_gradients);
        if best.watch(trainer, history.last()) {
            best.restore(args, (checked, data), trainer, "has not improved for", trainer.config.patience)?;
            return Ok(history);
        }
    }
    if best.epoch < trainer.epochs_done() {
        best.restore(args, (checked, data), trainer, "did not improve in the last", None)?;
    }
    Ok(history)
}

/// Once per run and kind: gradients that vanish before the first layers or
/// explode (see `train::health`), naming the layers and the remedies.
fn warn_of_gradients(history: &[EpochReport], warned: &mut Vec<std::mem::Discriminant<Warning>>) {
    for warning in Warning::of(history) {
        let kind = std::mem::discriminant(&warning);
        if !warned.contains(&kind) {
            warned.push(kind);
            eprintln!("warning: {}", warning.text());
        }
    }
}

/// Once per run: the held-out loss has risen since its best epoch while the
/// training loss fell (see `train::gap`), with the course's remedies.
fn warn_of_overfitting(gap: &gap::Tracker, warned: &mut bool) {
    let Some(gap) = gap.gap() else { return };
    let Some(o) = gap.overfitting.filter(|_| !*warned) else { return };
    *warned = true;
    let ((from, to), (now_from, now_to)) = o.windows;
    eprintln!(
        "warning: overfitting: the mean {} loss of epochs {now_from}–{now_to} is {:.4}, up from {:.4} in epochs \
         {from}–{to}, while the mean training loss fell from {:.4} to {:.4}; add `l2` or `dropout`, get more data, \
         or train for about {} epochs (the best {} loss)",
        gap.held_out,
        o.held_out_loss.1,
        o.held_out_loss.0,
        o.train_loss.0,
        o.train_loss.1,
        gap.best_epoch,
        gap.held_out
    );
}

/// `epoch  3/20  train loss 0.1234  validation …  lr 1.000e-1  (0.4 s)`
fn epoch_line(r: &EpochReport, epochs: usize, started: Instant) -> String {
    let split =
        |name: &str, m: &Option<Metrics>| m.as_ref().map_or(String::new(), |m| format!("  {name} {}", m.to_text()));
    let mut val = split("validation", &r.validation) + &split("test", &r.test);
    if let Some(pl) = r.pseudo_likelihood {
        val = format!("  pseudo-log-likelihood {pl:.3}{val}");
    }
    format!(
        "epoch {:>w$}/{}  train loss {:.4}{val}  lr {:.3e}  ({:.1} s)",
        r.epoch,
        epochs,
        r.train_loss,
        r.lr,
        started.elapsed().as_secs_f64(),
        w = epochs.to_string().len()
    )
}

/// Reports a failed epoch: a diverged step as a diagnostic at the value
/// where it began, with what was kept.
fn training_failed(args: &TrainArgs, checked: &Checked, e: &TrainError) -> Failure {
    match e {
        TrainError::NonFinite { epoch, step, what, span: Some(span) } => {
            report_diag(checked, &messages::non_finite(*span, what, *epoch, *step));
        }
        _ => eprintln!("error: {e}"),
    }
    if let TrainError::NonFinite { .. } = e {
        let kept = args
            .save
            .as_ref()
            .map_or("no checkpoint was written".to_string(), |p| format!("{} holds the last good epoch", p.display()));
        eprintln!("the weights from the start of the failing epoch are kept; {kept}");
    }
    Failure::Reported
}

fn write_metrics(
    path: &Path,
    model: &CheckedModel,
    data: &str,
    history: &[EpochReport],
    split: &str,
    m: &Metrics,
) -> Outcome {
    let file = MetricsFile {
        model: &model.name,
        data,
        epochs: history,
        gap: Gap::of(history),
        final_split: split,
        final_metrics: FinalMetrics {
            test_loss: m.loss,
            test_accuracy: m.accuracy,
            test_rmse: m.rmse,
            test_r2: m.r2,
            test_classes: m.classes.clone(),
            test_roc_auc: m.roc_auc,
        },
    };
    let json = serde_json::to_string_pretty(&file).unwrap_or_default();
    write(path, json.as_bytes())
}

fn write_plot(path: &Path, model: &str, history: &[EpochReport]) -> Outcome {
    let svg = crate::plot::learning_curves(model, history)
        .map_err(|e| Failure::Usage(format!("cannot draw {}: {e}", path.display())))?;
    write(path, svg.as_bytes())
}

/// An error now, before training, unless `path` can be written later: its
/// folder exists and takes files, and nothing but a regular file is there.
pub(super) fn check_output(path: &Path) -> Outcome {
    let usage = |why: String| Failure::Usage(format!("cannot write {}: {why}", path.display()));
    crate::io::refuse_non_file(path).map_err(|e| usage(e.to_string()))?;
    let folder = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let probe = folder.join(format!(".nnc-probe-{}", std::process::id()));
    std::fs::write(&probe, b"").map_err(|e| usage(format!("its folder cannot take files ({e})")))?;
    let _ = std::fs::remove_file(&probe);
    Ok(())
}

fn write(path: &Path, bytes: &[u8]) -> Outcome {
    crate::io::write_atomic(path, bytes).map_err(|e| Failure::Usage(format!("cannot write {}: {e}", path.display())))
}

/// Saves the last finished epoch and tells how to continue.
fn interrupted(args: &TrainArgs, trainer: &Trainer, origin: &checkpoint::Origin, epoch: usize) {
    let path = args.save.clone().unwrap_or_else(|| {
        let stem = args.target.file.file_stem().and_then(|s| s.to_str()).unwrap_or("model");
        PathBuf::from(format!("{stem}.interrupted.safetensors"))
    });
    eprintln!("interrupted during epoch {epoch}; keeping the weights after epoch {}", trainer.epochs_done());
    match checkpoint::save(&path, trainer, origin) {
        Ok(()) => eprintln!("saved {}; continue with: {}", path.display(), resume_command(args, &path)),
        Err(e) => eprintln!("error: {e}"),
    }
}

/// The command that continues this run from `checkpoint`: the same flags,
/// and `--resume`.
fn resume_command(args: &TrainArgs, checkpoint: &Path) -> String {
    let mut words = vec!["nnc".to_string(), "train".to_string(), args.target.file.display().to_string()];
    let mut flag = |name: &str, value: Option<String>| {
        if let Some(value) = value {
            words.extend([name.to_string(), value]);
        }
    };
    let shown = |p: &Option<PathBuf>| p.as_ref().map(|p| p.display().to_string());
    flag("--model", args.target.model.clone());
    flag("--data", args.data.clone());
    flag("--test", shown(&args.test));
    flag("--data-dir", shown(&args.data_dir));
    flag("--epochs", args.epochs.map(|e| e.to_string()));
    flag("--seed", args.seed.map(|s| s.to_string()));
    flag("--metrics-json", shown(&args.metrics_json));
    flag("--plot", shown(&args.plot));
    flag("--save", shown(&args.save));
    flag("--max-memory", args.max_memory.map(|m| m.to_string()));
    if matches!(args.backend, super::BackendArg::Interp) {
        words.extend(["--backend".to_string(), "interp".to_string()]);
    }
    if args.quiet {
        words.push("--quiet".to_string());
    }
    words.extend(["--resume".to_string(), checkpoint.display().to_string()]);
    words.iter().map(|w| shell_word(w)).collect::<Vec<_>>().join(" ")
}

/// `word` quoted for a POSIX shell when it needs it.
fn shell_word(word: &str) -> String {
    if !word.is_empty() && word.chars().all(|c| c.is_ascii_alphanumeric() || "-_./:=,+@%".contains(c)) {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', "'\\''"))
    }
}

/// A bar for one epoch: samples done, live loss, samples/s and time left.
fn progress_bar(epoch: usize, epochs: usize, rows: usize) -> indicatif::ProgressBar {
    let style = indicatif::ProgressStyle::with_template(
        "epoch {prefix} [{bar:30}] {pos}/{len} samples  {msg}  {per_sec}  eta {eta}",
    )
    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
    .progress_chars("=> ");
    indicatif::ProgressBar::new(rows as u64).with_style(style).with_prefix(format!("{epoch}/{epochs}"))
}

/// Restores a checkpoint written for this model (same source text).
/// Restores a checkpoint of this model. The file may have changed (comments,
/// spacing) as long as the model it defines computes and trains the same.
fn resume(trainer: &mut Trainer, path: &Path, (model, source): (&CheckedModel, &str)) -> Result<(), String> {
    let saved = checkpoint::load(path)?;
    if saved.source_hash != checkpoint::source_hash(source) {
        let then = crate::pipeline::check_source("checkpoint", &saved.source);
        let changed = match then.models.iter().find(|m| m.name == saved.model) {
            Some(then) => then.differences_from(model),
            None => vec![format!("model `{}` itself", saved.model)],
        };
        if !changed.is_empty() {
            return Err(format!(
                "{} was written for a different version of model `{}`: {} changed; resuming needs the same model \
                 (train afresh, or undo the change)",
                path.display(),
                saved.model,
                changed.join(", ")
            ));
        }
    }
    trainer.set_plateau(saved.plateau);
    trainer.restore(&saved.tensors, saved.epoch, saved.step)
}

/// Holds out the last `fraction` of a seeded permutation for validation.
pub fn split_validation(data: Dataset, fraction: f64, seed: u64) -> (Dataset, Option<Dataset>) {
    if fraction <= 0.0 {
        return (data, None);
    }
    let mut order: Vec<usize> = (0..data.rows).collect();
    order.shuffle(&mut ChaCha8Rng::seed_from_u64(seed ^ 0x7a11d));
    let held = ((data.rows as f64 * fraction).round() as usize).clamp(1, data.rows.saturating_sub(1).max(1));
    let (keep, val) = order.split_at(data.rows - held);
    (data.select(keep), Some(data.select(val)))
}

/// The data source: `--data` first, then the model's `data = …`.
fn load_data(args: &TrainArgs, checked: &Checked, model: &CheckedModel) -> Result<Splits, Failure> {
    if args.test.is_some() && args.data.is_none() {
        return Err(Failure::Usage(
            "--test goes with --data (the training CSV); the model's own `data = …` names its test split".into(),
        ));
    }
    let source = match (&args.data, &model.train.data) {
        (Some(d), _) => match d.strip_prefix("builtin:") {
            Some(name) => DataSource::Builtin { name: name.to_string() },
            // The model's own column names still choose the columns.
            None => DataSource::Csv {
                train: d.clone(),
                test: args.test.as_ref().map(|t| t.display().to_string()),
                columns: model.train.data.as_ref().map(DataSource::columns).unwrap_or_default(),
            },
        },
        (None, Some(source)) => source.clone(),
        (None, None) => {
            return Err(Failure::Usage(format!(
                "model `{}` names no data; pass --data FILE.csv or builtin:digits, or add `data = …` to its train block",
                model.name
            )));
        }
    };
    let base = match &args.data {
        // Paths given on the command line are relative to the working directory.
        Some(_) => PathBuf::from("."),
        None => super::model_data_dir(&args.target.file, args.data_dir.as_deref()),
    };
    let spec = RowSpec::of(model);
    data::load(&source, &base, &spec).map_err(|e| {
        // A file the model names: its problems point at `data = …`.
        let named_by_model = args.data.is_none();
        report_diag(checked, &data_diag(&e, model, &spec, named_by_model))
    })
}

/// Points a data error at the declaration it disagrees with.
fn data_diag(e: &DataError, model: &CheckedModel, spec: &RowSpec, named_by_model: bool) -> Diag {
    if e.about_file
        && named_by_model
        && let Some(span) = model.train.data_span
    {
        return messages::data_mismatch(&e.location(), &e.message, &e.help, span, "the data named here");
    }
    let (span, expected): (Span, String) = if e.about_input || model.targets.is_empty() {
        let input = &model.inputs[0];
        (input.span, format!("the model expects {} {} values per row", spec.features, data::input_kind_name(model)))
    } else {
        let target = &model.targets[0];
        (target.span, "the data's targets must fit this declaration".to_string())
    };
    messages::data_mismatch(&e.location(), &e.message, &e.help, span, &expected)
}
