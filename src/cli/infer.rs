//! `nnc eval`, `nnc predict` and `nnc build`: use trained weights from a checkpoint.

use std::io::Write;
use std::path::{Path, PathBuf};

use super::{Failure, Outcome, load_model, report_diag};
use crate::check::CheckedModel;
use crate::checkpoint::{self, Checkpoint};
use crate::data::{self, RowSpec};
use crate::exec::Backend;
use crate::jit::TargetCpu;
use crate::library::{self, BuildOptions};
use crate::model::Model;
use crate::pipeline::Checked;
use crate::train::metrics::Task;

/// The checked file, the chosen model's index, and the runtime model holding
/// the checkpoint's weights after checking they fit that model.
fn trained(file: &Path, model: Option<&str>, weights: &Path) -> Result<(Checked, usize, Model, Checkpoint), Failure> {
    let (checked, index) = load_model(file, model)?;
    // Inference runs in chunks of rows: use the cores as for that batch.
    super::set_threading(&checked.models[index], crate::model::chunk_rows(&checked.models[index]));
    let (model, saved) = restore(&checked, &checked.models[index], weights)?;
    Ok((checked, index, model, saved))
}

fn restore(checked: &Checked, model: &CheckedModel, weights: &Path) -> Result<(Model, Checkpoint), Failure> {
    let saved = checkpoint::load(weights).map_err(Failure::Input)?;
    if saved.model != model.name {
        return Err(Failure::Input(format!(
            "{} holds weights of model `{}`, not `{}`",
            weights.display(),
            saved.model,
            model.name
        )));
    }
    let mut runtime = Model::new(model, Backend::Jit).map_err(|d| report_diag(checked, &d))?;
    runtime.restore(&saved.tensors).map_err(|e| Failure::Input(format!("{}: {e}", weights.display())))?;
    if saved.source_hash != checkpoint::source_hash(&checked.source) {
        eprintln!(
            "warning: {} was trained from a different version of {}; using it because every tensor still fits",
            weights.display(),
            checked.file_name
        );
    }
    Ok((runtime, saved))
}

/// `nnc eval`'s data: `--data` (CSV, `-`, `builtin:NAME`, or IDX images
/// with `--labels`), or the test split of the data the model names
/// (relative to `--data-dir` or the model file's folder).
pub struct EvalData<'a> {
    pub data: Option<&'a Path>,
    pub labels: Option<&'a Path>,
    pub data_dir: Option<&'a Path>,
}

pub fn eval(file: &Path, model: Option<&str>, weights: &Path, data_source: EvalData) -> Outcome {
    let (checked, index, mut runtime, saved) = trained(file, model, weights)?;
    let model = &checked.models[index];
    let spec = RowSpec::of(model);
    let loaded = match (data_source.data, &model.train.data) {
        (Some(path), _) => {
            let columns = model.train.data.as_ref().map(crate::check::DataSource::columns).unwrap_or_default();
            // A built-in set is evaluated on its test split.
            data::load_named(&path.to_string_lossy(), data_source.labels, &spec, &columns)
                .map(|s| s.test.unwrap_or(s.train))
        }
        (None, Some(source)) => {
            let base = super::model_data_dir(file, data_source.data_dir);
            data::load(source, &base, &spec).map(|s| {
                s.test.unwrap_or_else(|| {
                    eprintln!("warning: the model's data has no test split; these are its training rows");
                    s.train
                })
            })
        }
        (None, None) => {
            return Err(Failure::Usage(format!(
                "model `{}` names no data; pass --data FILE.csv (or builtin:NAME, or IDX images with --labels)",
                model.name
            )));
        }
    };
    if data_source.labels.is_some() && data_source.data.is_none() {
        return Err(Failure::Usage("--labels goes with --data (the IDX images they label)".into()));
    }
    let mut data = loaded.map_err(|e| data_error(&e))?;
    saved.scaler.apply(&mut data);
    let metrics = crate::train::evaluate(&mut runtime, &data).map_err(Failure::Input)?;
    say!("{}  ({} rows)", metrics.final_text(), metrics.rows);
    // The one class target's output: the model's, or one of its several.
    let classes = std::iter::once(&metrics).chain(metrics.outputs.iter().map(|o| &o.metrics));
    if spec.only_class().is_some()
        && let Some(counts) = classes.filter_map(|m| m.classes.as_ref()?.confusion.as_ref()).next()
    {
        say_raw!("{}", confusion_matrix(counts));
    }
    if let Some(scores) = &metrics.classes {
        say_raw!("{}", class_table(scores));
    }
    Ok(())
}

/// Precision, recall and F1 per class, then their macro averages.
fn class_table(scores: &crate::train::metrics::ClassScores) -> String {
    let width = (scores.f1.len().saturating_sub(1)).to_string().len().max("class".len());
    let mut out = format!("{:>width$}  precision  recall      F1\n", "class");
    let rows = scores.precision.iter().zip(&scores.recall).zip(&scores.f1).enumerate();
    for (c, ((p, r), f)) in rows {
        out.push_str(&format!("{c:>width$}  {p:>9.4}  {r:>6.4}  {f:>6.4}\n"));
    }
    let (p, r, f) = (scores.macro_precision, scores.macro_recall, scores.macro_f1);
    out.push_str(&format!("{:>width$}  {p:>9.4}  {r:>6.4}  {f:>6.4}\n", "macro"));
    out
}

/// Rows: true class; columns: predicted class.
fn confusion_matrix(counts: &[Vec<usize>]) -> String {
    let classes = counts.len();
    let width = counts.iter().flatten().max().map_or(1, |m| m.to_string().len()).max(classes.to_string().len());
    let mut out = format!("confusion matrix (rows: true class, columns: predicted)\n{:>w$}", "", w = width + 1);
    for c in 0..classes {
        out.push_str(&format!(" {c:>width$}"));
    }
    out.push('\n');
    for (c, row) in counts.iter().enumerate() {
        out.push_str(&format!("{c:>w$}", w = width + 1));
        for n in row {
            out.push_str(&format!(" {n:>width$}"));
        }
        out.push('\n');
    }
    out
}

/// How `predict` writes a classifier's outputs.
#[derive(Clone, Copy, Default)]
pub struct Shown {
    /// The raw class scores instead of probabilities.
    pub logits: bool,
    /// Every value in full instead of to 6 decimals.
    pub full_precision: bool,
}

/// Input values `predict` reads at a time (whole forward chunks of rows):
/// reading, predicting and writing take the memory of a part, however long
/// the input.
const PART_VALUES: usize = 1 << 22;

pub fn predict(
    file: &Path,
    model: Option<&str>,
    weights: &Path,
    (input, output): (&Path, Option<&Path>),
    shown: Shown,
) -> Outcome {
    let (checked, index, mut runtime, saved) = trained(file, model, weights)?;
    let model = &checked.models[index];
    let mut rows = stream_rows(input, model, &saved)?;
    super::catch_ctrl_c();
    let mut sink = Sink::open(output)?;
    let (width, chunk) = (model.input_width().max(1), crate::model::chunk_rows(model));
    let output_width = crate::train::metrics::outputs(model).last().map_or(1, |o| o.columns.end);
    let part_rows = chunk * (PART_VALUES / (chunk * width.max(output_width))).max(1);
    let mut csv: Option<PredictionsCsv> = None;
    // Rows read and not yet predicted: fewer than a chunk until the input ends,
    // so every pass but the last has the same rows (and the same bits) as
    // when the rows are predicted all at once.
    let mut waiting: Vec<f32> = Vec::new();
    loop {
        let part = rows.next_rows(part_rows).map_err(|e| data_error(&e))?;
        // (Checked after reading: Ctrl-C in a pipeline may also end the input.)
        if super::ctrl_c_pressed() {
            return Err(sink.interrupted());
        }
        let ended = part.is_none();
        if let Some(mut part) = part {
            saved.scaler.apply(&mut part);
            waiting.extend_from_slice(&part.x);
        }
        let ready = match waiting.len() / width {
            all if ended => all,
            some => some / chunk * chunk,
        };
        if ready > 0 {
            let predictions = runtime.predict(&waiting[..ready * width], ready).map_err(Failure::Input)?;
            waiting.drain(..ready * width);
            let csv = csv.get_or_insert_with(|| PredictionsCsv::new(model, predictions.len() / ready, shown));
            if !sink.write(|out| csv.write(&predictions, out))? {
                return Ok(());
            }
        }
        if ended {
            break;
        }
    }
    // No rows: the header alone.
    if csv.is_none() && !sink.write(|out| PredictionsCsv::new(model, 0, shown).write(&[], out))? {
        return Ok(());
    }
    sink.finish()
}

/// Where `predict` writes: standard output as the rows are predicted, or a
/// file that appears, whole, once every row is written.
enum Sink {
    Stdout(std::io::BufWriter<std::io::StdoutLock<'static>>),
    File(crate::io::AtomicFile, PathBuf),
}

impl Sink {
    fn open(output: Option<&Path>) -> Result<Sink, Failure> {
        Ok(match output.filter(|path| *path != Path::new("-")) {
            Some(path) => {
                Sink::File(crate::io::AtomicFile::create(path).map_err(|e| cannot_write(path, &e))?, path.into())
            }
            None => Sink::Stdout(std::io::BufWriter::new(std::io::stdout().lock())),
        })
    }

    /// Writes with `what`, and says whether to go on: a reader of standard
    /// output that has gone (`| head`) ends the predictions quietly; any
    /// other failure is an error.
    fn write(&mut self, what: impl FnOnce(&mut dyn Write) -> std::io::Result<()>) -> Result<bool, Failure> {
        let result = what(match self {
            Sink::Stdout(out) => out,
            Sink::File(file, _) => file,
        });
        match (result, &*self) {
            (Ok(()), _) => Ok(true),
            (Err(e), Sink::Stdout(_)) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(false),
            (Err(e), Sink::Stdout(_)) => Err(Failure::Usage(format!("cannot write standard output: {e}"))),
            (Err(e), Sink::File(_, path)) => Err(cannot_write(path, &e)),
        }
    }

    /// Stops at Ctrl-C: a file is left unwritten (the rows on standard
    /// output so far stay there).
    fn interrupted(self) -> Failure {
        match &self {
            Sink::Stdout(_) => eprintln!("stopped by Ctrl-C"),
            Sink::File(_, path) => eprintln!("stopped by Ctrl-C; {} is not written", path.display()),
        }
        Failure::Interrupted
    }

    fn finish(mut self) -> Outcome {
        self.write(|out| out.flush())?;
        if let Sink::File(file, path) = self {
            file.commit().map_err(|e| cannot_write(&path, &e))?;
        }
        Ok(())
    }
}

fn cannot_write(path: &Path, e: &std::io::Error) -> Failure {
    Failure::Usage(format!("cannot write {}: {e}", path.display()))
}

/// How `predict` writes a model's outputs as CSV: for a classifier the
/// class and its probabilities (columns `p0…`) or, with `logits`, its
/// scores (`s0…`); otherwise the output values (`y0…`), always in full. A
/// model with several outputs writes each one's columns in turn, named
/// `output.column`.
struct PredictionsCsv {
    /// Each output's name, task and columns of a prediction row.
    outputs: Vec<(String, Task, std::ops::Range<usize>)>,
    /// Values per prediction row.
    width: usize,
    shown: Shown,
    /// Whether the header is written.
    started: bool,
}

impl PredictionsCsv {
    fn new(model: &CheckedModel, width: usize, shown: Shown) -> PredictionsCsv {
        let outputs = crate::train::metrics::prediction_columns(model, width);
        PredictionsCsv { outputs, width, shown, started: false }
    }

    /// One CSV line per row of `predictions`, after the header the first time.
    fn write(&mut self, predictions: &[f32], out: &mut dyn Write) -> std::io::Result<()> {
        if !self.started {
            self.write_header(out)?;
            self.started = true;
        }
        self.write_rows(predictions, out)
    }

    fn write_header(&self, out: &mut dyn Write) -> std::io::Result<()> {
        let several = self.outputs.len() > 1;
        let mut header = Vec::new();
        for (name, task, columns) in &self.outputs {
            let cells = match task {
                Task::Classes(k) => {
                    let column = if self.shown.logits { "s" } else { "p" };
                    std::iter::once("class".to_string()).chain((0..*k).map(|c| format!("{column}{c}"))).collect()
                }
                _ => (0..columns.len()).map(|c| format!("y{c}")).collect::<Vec<_>>(),
            };
            header.extend(cells.into_iter().map(|c| if several { format!("{name}.{c}") } else { c }));
        }
        writeln!(out, "{}", header.join(","))
    }

    fn write_rows(&self, predictions: &[f32], out: &mut dyn Write) -> std::io::Result<()> {
        let (mut line, mut probabilities) = (String::new(), Vec::new());
        let shown = self.shown;
        for row in predictions.chunks(self.width.max(1)) {
            line.clear();
            for (_, task, columns) in &self.outputs {
                let values = &row[columns.clone()];
                match task {
                    Task::Classes(_) => {
                        let class =
                            values.iter().enumerate().fold(0, |best, (i, &v)| if v > values[best] { i } else { best });
                        push_cell(&mut line, format_args!("{class}"));
                        let shown_values = if shown.logits {
                            values
                        } else {
                            probabilities.resize(values.len(), 0.0);
                            nnc_runtime::softmax_row(values, &mut probabilities);
                            &probabilities[..]
                        };
                        for v in shown_values {
                            if shown.full_precision || shown.logits {
                                push_cell(&mut line, format_args!("{v:?}"));
                            } else {
                                push_cell(&mut line, format_args!("{v:.6}"));
                            }
                        }
                    }
                    _ => values.iter().for_each(|v| push_cell(&mut line, format_args!("{v}"))),
                }
            }
            line.push('\n');
            out.write_all(line.as_bytes())?;
        }
        Ok(())
    }
}

/// Appends a cell to a CSV line, after a comma unless it is the first.
fn push_cell(line: &mut String, cell: std::fmt::Arguments) {
    use std::fmt::Write as _;
    if !line.is_empty() {
        line.push(',');
    }
    // Writing to a `String` cannot fail.
    let _ = line.write_fmt(cell);
}

fn data_error(e: &data::DataError) -> Failure {
    Failure::Input(format!("{}: {} ({})", e.location(), e.message, e.help))
}

/// The inputs `predict` and `explain` read: the rows of a CSV (or `-`,
/// standard input; a trailing label column is ignored, and columns are
/// matched by name to the training data's when the header has them), of
/// IDX images, or of a built-in set's test split (`builtin:NAME`).
fn read_rows(input: &Path, model: &CheckedModel, saved: &Checkpoint) -> Result<data::Dataset, Failure> {
    let text = input.to_string_lossy();
    if text.starts_with("builtin:") {
        let splits = data::load_named(&text, None, &RowSpec::of(model), &Default::default());
        let mut rows = splits.map(|s| s.test.unwrap_or(s.train)).map_err(|e| data_error(&e))?;
        (rows.y, rows.target_width) = (Vec::new(), 0);
        return Ok(rows);
    }
    data::load_named(&text, None, &input_spec(model, saved), &Default::default())
        .map(|s| s.train)
        .map_err(|e| data_error(&e))
}

/// `read_rows`'s rows a part at a time (`predict`): a file is never held whole.
fn stream_rows(input: &Path, model: &CheckedModel, saved: &Checkpoint) -> Result<data::RowStream, Failure> {
    let text = input.to_string_lossy();
    if text.starts_with("builtin:") {
        return Ok(data::RowStream::Loaded { data: read_rows(input, model, saved)?, next: 0 });
    }
    data::stream_inputs(&text, &input_spec(model, saved)).map_err(|e| data_error(&e))
}

/// Rows of the model's inputs alone, whose columns go by the names the
/// weights were trained on when a header has them.
fn input_spec(model: &CheckedModel, saved: &Checkpoint) -> RowSpec {
    RowSpec { targets: Vec::new(), feature_names: saved.columns.clone(), ..RowSpec::of(model) }
}

/// `nnc explain`'s arguments after the model choice.
pub struct ExplainArgs {
    pub weights: PathBuf,
    pub input: PathBuf,
    pub class: Option<usize>,
    /// The output explained, by name, when the model has several.
    pub of: Option<String>,
    pub output: Option<PathBuf>,
    pub json: bool,
}

/// How many features each row's summary names.
const TOP_FEATURES: usize = 8;

pub fn explain(file: &Path, model: Option<&str>, args: &ExplainArgs) -> Outcome {
    let (checked, index, mut runtime, saved) = trained(file, model, &args.weights)?;
    let model = &checked.models[index];
    if model.inputs.iter().any(|i| i.kind == crate::check::InputKind::Tokens) {
        return Err(Failure::Usage("explain needs numeric features; token ids have no gradient".into()));
    }
    let columns = explained_columns(model, args.of.as_deref())?;
    // Several inputs are explained as the one row they are read from.
    let shape = match &model.inputs[..] {
        [input] => input.shape.clone(),
        _ => vec![model.input_width()],
    };
    let picture = crate::explain::picture_shape(&shape);
    if let Some(path) = &args.output {
        if picture.is_none() {
            return Err(Failure::Usage(format!(
                "-o draws images, and this model's input {} is not one; the ranked features are printed",
                crate::shape::shape_text(&shape)
            )));
        }
        super::train::check_output(path)?;
    }
    let data = read_rows(&args.input, model, &saved)?;
    if let (Some(_), Some(picture)) = (&args.output, picture) {
        crate::explain::check_picture(data.rows, picture).map_err(Failure::Usage)?;
    }
    let explanations =
        crate::explain::explain(&mut runtime, &saved.scaler, (&data.x, data.rows), (columns, args.class))
            .map_err(Failure::Input)?;
    if args.json {
        say!("{}", serde_json::to_string_pretty(&explanations).unwrap_or_default());
    } else {
        let name = |j: usize| data.columns.get(j).cloned().unwrap_or_else(|| format!("x{j}"));
        for (r, e) in explanations.iter().enumerate() {
            let mut order: Vec<usize> = (0..e.attribution.len()).collect();
            order.sort_by(|&a, &b| e.attribution[b].abs().total_cmp(&e.attribution[a].abs()));
            let top: Vec<String> =
                order.iter().take(TOP_FEATURES).map(|&j| format!("{} {:+.4}", name(j), e.attribution[j])).collect();
            say!("row {}: output {} (score {:.4}); gradient × input: {}", r + 1, e.output, e.score, top.join(", "));
        }
    }
    if let (Some(path), Some(picture)) = (&args.output, picture) {
        let svg = crate::explain::heatmaps(&data.x, &explanations, picture).map_err(Failure::Input)?;
        crate::io::write_atomic(path, svg.as_bytes())
            .map_err(|e| Failure::Usage(format!("cannot write {}: {e}", path.display())))?;
    }
    Ok(())
}

/// The columns of the prediction `explain` explains: a model's one output
/// (`None`: all of them), or of several the one `of` names.
fn explained_columns(model: &CheckedModel, of: Option<&str>) -> Result<Option<std::ops::Range<usize>>, Failure> {
    let outputs = crate::train::metrics::outputs(model);
    let names = || outputs.iter().map(|o| format!("`{}`", o.name)).collect::<Vec<_>>().join(", ");
    match (of, &outputs[..]) {
        (None, [_, _, ..]) => Err(Failure::Usage(format!(
            "model `{}` has {} outputs (one per loss term): name the one to explain with --of ({})",
            model.name,
            outputs.len(),
            names()
        ))),
        (None, _) => Ok(None),
        (Some(name), _) => match outputs.iter().find(|o| o.name == name) {
            Some(output) if outputs.len() > 1 => Ok(Some(output.columns.clone())),
            Some(_) => Ok(None),
            None if outputs.is_empty() => {
                Err(Failure::Usage(format!("--of {name}: model `{}` has no named outputs", model.name)))
            }
            None => {
                Err(Failure::Usage(format!("--of {name}: model `{}` has no output so named ({})", model.name, names())))
            }
        },
    }
}

/// `nnc build`'s arguments after the model choice.
pub struct BuildArgs {
    pub weights: PathBuf,
    pub output: PathBuf,
    pub name: Option<String>,
    /// Rows of the large batched pass; `None`: `library::default_batch`.
    pub batch: Option<usize>,
    pub target_cpu: String,
    /// The caller applies the checkpoint's preprocessing (`--preprocessed-input`).
    pub preprocessed_input: bool,
}

/// `nnc export`: the checkpoint's model as an ONNX graph, written atomically.
pub fn export(
    file: &Path,
    model: Option<&str>,
    weights: &Path,
    output: &Path,
    options: &crate::onnx::Options,
) -> Outcome {
    if output.extension().is_none_or(|e| !e.eq_ignore_ascii_case("onnx")) {
        return Err(Failure::Usage(format!("-o names the ONNX file to write: `….onnx` (got {})", output.display())));
    }
    crate::io::refuse_non_file(output)
        .map_err(|e| Failure::Usage(format!("cannot write {}: {e}", output.display())))?;
    let (checked, index, runtime, saved) = trained(file, model, weights)?;
    let tensors: crate::onnx::Tensors =
        runtime.tensors().into_iter().map(|(name, shape, values)| (name, (shape, values))).collect();
    let bytes =
        crate::onnx::export(&checked.models[index], &tensors, &saved.scaler, options).map_err(Failure::Usage)?;
    crate::io::write_atomic(output, &bytes)
        .map_err(|e| Failure::Usage(format!("cannot write {}: {e}", output.display())))?;
    say!("wrote {} ({} bytes, opset {})", output.display(), bytes.len(), options.opset);
    Ok(())
}

/// `nnc import`: an ONNX graph as a `.nn` model that checks clean and a
/// checkpoint with its weights and input scaling.
pub fn import(file: &Path, output: &Path, weights_out: Option<&Path>, name: Option<&str>) -> Outcome {
    let weights = weights_out.map_or_else(|| output.with_extension("safetensors"), Path::to_path_buf);
    for path in [output, weights.as_path()] {
        crate::io::refuse_non_file(path)
            .map_err(|e| Failure::Usage(format!("cannot write {}: {e}", path.display())))?;
    }
    let bytes = std::fs::read(file).map_err(|e| Failure::Usage(format!("cannot read {}: {e}", file.display())))?;
    let stem = file.file_stem().and_then(|s| s.to_str()).unwrap_or("imported");
    let imported = crate::onnx::import(&bytes, name.unwrap_or(stem), Some(file.parent().unwrap_or(Path::new("."))))
        .map_err(|e| Failure::Input(format!("{}: {e}", file.display())))?;
    let file_name = output.display().to_string();
    let checked = crate::pipeline::check_source(&file_name, &imported.source);
    if checked.has_errors() {
        eprint!("{}", crate::diag::render(&checked.diags, &file_name, &imported.source, false, 100));
        return Err(Failure::Input(format!("the model imported from {} does not check (above)", file.display())));
    }
    let model = &checked.models[0];
    let mut trainer =
        crate::train::Trainer::new(model, model.train.clone(), Backend::Jit).map_err(|d| Failure::Input(d.message))?;
    trainer.restore(&imported.tensors, 0, 0).map_err(|e| Failure::Input(format!("{}: {e}", file.display())))?;
    let origin = checkpoint::Origin::unnamed(&imported.source, &imported.scaler);
    crate::io::write_atomic(output, imported.source.as_bytes())
        .map_err(|e| Failure::Usage(format!("cannot write {}: {e}", output.display())))?;
    checkpoint::save(&weights, &trainer, &origin).map_err(Failure::Usage)?;
    say!(
        "wrote {} ({} layers, {} parameters) and {}",
        output.display(),
        model.nodes.len(),
        crate::shape::grouped(model.total_params() as u64),
        weights.display()
    );
    Ok(())
}

pub fn build(file: &Path, model: Option<&str>, args: &BuildArgs) -> Outcome {
    let target = TargetCpu::parse(&args.target_cpu).map_err(Failure::Usage)?;
    if let Some(name) = &args.name {
        library::check_name(name).map_err(Failure::Usage)?;
    }
    let (checked, index, runtime, saved) = trained(file, model, &args.weights)?;
    let name = args.name.clone().unwrap_or_else(|| checked.models[index].name.clone());
    let batch = args.batch.unwrap_or_else(|| crate::library::default_batch(&runtime.checked));
    let preprocessed_input = args.preprocessed_input;
    let options = BuildOptions { name, batch, target, out_dir: args.output.clone(), preprocessed_input };
    let built = library::build(&runtime, &saved.scaler, &options).map_err(Failure::Usage)?;
    for path in [&built.header, &built.static_lib, &built.shared_lib] {
        say!("wrote {}", path.display());
    }
    Ok(())
}
