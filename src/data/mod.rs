//! Data sets: CSV, IDX (the MNIST format, gzipped or not) and the data sets
//! built into the binary, checked against the model's input and target
//! shapes before training starts.
//!
//! Every loader returns rows of f32 features and f32 targets (class ids as
//! whole numbers). A problem is a `DataError` naming the file and line; the
//! caller turns it into a diagnostic that also points at the model's spec.

mod csv;
mod idx;

use std::io::{BufRead, Read};
use std::path::{Path, PathBuf};

use crate::check::{CheckedModel, Columns, DataSource, InputKind, Layer, TargetKind, ValueRef};

pub use self::csv::parse_csv;

/// Rows of features and targets.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Dataset {
    pub rows: usize,
    /// Features per row.
    pub width: usize,
    pub x: Vec<f32>,
    /// Target values per row.
    pub target_width: usize,
    pub y: Vec<f32>,
    /// The features' column names (a CSV's header), empty when the format
    /// has none; a checkpoint keeps them so `predict` can match by name.
    pub columns: Vec<String>,
}

impl Dataset {
    /// The rows at `indices`, in that order.
    pub fn select(&self, indices: &[usize]) -> Dataset {
        let mut out = Dataset {
            rows: 0,
            width: self.width,
            x: vec![],
            target_width: self.target_width,
            y: vec![],
            columns: self.columns.clone(),
        };
        self.select_into(indices, &mut out);
        out
    }

    /// `select` into `out`, reusing its buffers (no allocation once they are large enough).
    pub fn select_into(&self, indices: &[usize], out: &mut Dataset) {
        out.x.clear();
        out.y.clear();
        for &i in indices {
            out.x.extend_from_slice(&self.x[i * self.width..(i + 1) * self.width]);
            out.y.extend_from_slice(&self.y[i * self.target_width..(i + 1) * self.target_width]);
        }
        (out.rows, out.width, out.target_width) = (indices.len(), self.width, self.target_width);
    }
}

/// What went wrong with a data file, and where.
#[derive(Debug, Clone, PartialEq)]
pub struct DataError {
    pub file: String,
    /// 1-based line (CSV) or record (IDX), when the problem is in one place.
    pub line: Option<usize>,
    pub message: String,
    pub help: String,
    /// Whether the model's input (rather than its target) declaration is involved.
    pub about_input: bool,
    /// Whether the file itself is the problem (unreadable, not CSV or IDX),
    /// not how its rows fit the model.
    pub about_file: bool,
}

impl DataError {
    pub fn new(file: &str, line: Option<usize>, message: impl Into<String>, help: impl Into<String>) -> Self {
        let (message, help) = (message.into(), help.into());
        DataError { file: file.to_string(), line, message, help, about_input: true, about_file: false }
    }

    /// A problem with the file itself rather than with how it fits the model.
    pub fn about_file(file: &str, line: Option<usize>, message: impl Into<String>, help: impl Into<String>) -> Self {
        DataError { about_file: true, ..DataError::new(file, line, message, help) }
    }

    fn about_target(mut self) -> Self {
        self.about_input = false;
        self
    }

    pub fn location(&self) -> String {
        match self.line {
            Some(l) => format!("{}:{l}", self.file),
            None => self.file.clone(),
        }
    }
}

/// What the model expects of each row.
#[derive(Debug, Clone, PartialEq)]
pub struct RowSpec {
    pub features: usize,
    /// The targets a row holds after its features, in the model's order
    /// (none when the model reconstructs its input).
    pub targets: Vec<TargetSpecOfRow>,
    /// For token inputs: the size of the smallest embedding table reading
    /// them, so every feature must be a whole number below it.
    pub vocab: Option<usize>,
    /// The model's target names: a trailing column named so (or `label`,
    /// `target`, `class`, `y`) is a label that rows without a target ignore.
    pub label_names: Vec<String>,
    /// The feature columns the weights were trained on, by name (empty:
    /// unknown). A header that has names from them is matched by name.
    pub feature_names: Vec<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum TargetSpecOfRow {
    Class(usize),
    Real(usize),
    Binary(usize),
}

impl RowSpec {
    pub fn of(model: &CheckedModel) -> RowSpec {
        let features = model.input_width();
        let targets = model
            .row_targets()
            .into_iter()
            .map(|t| match &model.targets[t].kind {
                TargetKind::Class(k) => TargetSpecOfRow::Class(*k),
                TargetKind::Real(s) => TargetSpecOfRow::Real(s.iter().product()),
                TargetKind::Binary(s) => TargetSpecOfRow::Binary(s.iter().product()),
            })
            .collect();
        let vocab = model
            .nodes
            .iter()
            .filter(|n| n.inputs.first() == Some(&ValueRef::Input(0)))
            .filter_map(|n| if let Layer::Embedding { vocab, .. } = n.layer { Some(vocab) } else { None })
            .min();
        let label_names = model.targets.iter().map(|t| t.name.clone()).collect();
        RowSpec { features, targets, vocab, label_names, feature_names: Vec::new() }
    }

    /// Checks one input value; `Err` says what is wrong.
    pub fn check_feature(&self, value: f32) -> Result<(), String> {
        match self.vocab {
            Some(vocab) if value < 0.0 || value.fract() != 0.0 || value >= vocab as f32 => {
                Err(format!("`{value}` is not a token id: ids are whole numbers from 0 to {}", vocab - 1))
            }
            _ => Ok(()),
        }
    }

    /// Target values per row, every target's together.
    pub fn target_width(&self) -> usize {
        self.targets.iter().map(TargetSpecOfRow::width).sum()
    }

    /// Valid targets for `rows` rows, drawn at random (benchmarks and tests):
    /// class ids, 0 or 1, or values in [−1, 1).
    pub fn random_targets(&self, rows: usize, rng: &mut impl rand::Rng) -> Vec<f32> {
        let mut y = Vec::with_capacity(rows * self.target_width());
        for _ in 0..rows {
            for target in &self.targets {
                match *target {
                    TargetSpecOfRow::Class(k) => y.push(rng.random_range(0..k) as f32),
                    TargetSpecOfRow::Binary(n) => y.extend((0..n).map(|_| rng.random_range(0..2) as f32)),
                    TargetSpecOfRow::Real(n) => y.extend((0..n).map(|_| rng.random_range(-1.0..1.0))),
                }
            }
        }
        y
    }

    /// The class count when a row's one target is a class id (as IDX labels are).
    pub fn only_class(&self) -> Option<usize> {
        match self.targets[..] {
            [TargetSpecOfRow::Class(k)] => Some(k),
            _ => None,
        }
    }

    /// Checks one row's target values; `Err` says what is wrong.
    fn check_target(&self, values: &[f32]) -> Result<(), String> {
        let mut start = 0;
        for target in &self.targets {
            let own = &values[start..start + target.width()];
            start += target.width();
            match target {
                TargetSpecOfRow::Class(k) => {
                    let v = own[0];
                    if v.fract() != 0.0 || v < 0.0 || v >= *k as f32 {
                        return Err(format!("label {v} is not a class id in 0..{k}"));
                    }
                }
                TargetSpecOfRow::Binary(_) => {
                    if let Some(v) = own.iter().find(|v| **v != 0.0 && **v != 1.0) {
                        return Err(format!("target {v} is not 0 or 1"));
                    }
                }
                TargetSpecOfRow::Real(_) => {}
            }
        }
        Ok(())
    }
}

impl TargetSpecOfRow {
    /// Values a row holds for this target.
    pub fn width(&self) -> usize {
        match self {
            TargetSpecOfRow::Class(_) => 1,
            TargetSpecOfRow::Real(n) | TargetSpecOfRow::Binary(n) => *n,
        }
    }
}

/// Train and (optional) test sets.
pub struct Splits {
    pub train: Dataset,
    pub test: Option<Dataset>,
    /// Where the data came from, for messages.
    pub description: String,
}

/// Built-in data sets: (name, train CSV.gz, test CSV.gz).
const BUILTIN: &[(&str, &[u8], &[u8])] = &[
    (
        "digits",
        include_bytes!("../../models/data/digits_train.csv.gz"),
        include_bytes!("../../models/data/digits_test.csv.gz"),
    ),
    (
        "diabetes",
        include_bytes!("../../models/data/diabetes_train.csv.gz"),
        include_bytes!("../../models/data/diabetes_test.csv.gz"),
    ),
];

/// Loads the data a model's `data = …` names. Relative paths are resolved
/// against `base` (the model file's folder, or `--data-dir`).
pub fn load(source: &DataSource, base: &Path, spec: &RowSpec) -> Result<Splits, DataError> {
    let resolve = |p: &str| -> PathBuf { base.join(p) };
    match source {
        DataSource::Builtin { name } => {
            let Some((_, train, test)) = BUILTIN.iter().find(|(n, _, _)| n == name) else {
                return Err(DataError::about_file(
                    name,
                    None,
                    format!("no built-in data set `{name}`"),
                    "use digits or diabetes",
                ));
            };
            let label = format!("builtin:{name}");
            let by_position = Columns::default();
            let train = parse_csv(&gunzip(train, &label)?, &format!("{label}/train"), spec, &by_position)?;
            let test = parse_csv(&gunzip(test, &label)?, &format!("{label}/test"), spec, &by_position)?;
            Ok(Splits { train, test: Some(test), description: label })
        }
        DataSource::Csv { train, test, columns } => {
            let train_path = resolve(train);
            let train_set = load_csv(&train_path, spec, columns)?;
            let test_set = match test {
                Some(t) => Some(load_csv(&resolve(t), spec, columns)?),
                None => None,
            };
            Ok(Splits { train: train_set, test: test_set, description: train_path.display().to_string() })
        }
        DataSource::Idx { images, labels, test_images, test_labels } => {
            let train = idx::load_pair(&resolve(images), &resolve(labels), spec)?;
            let test = match (test_images, test_labels) {
                (Some(i), Some(l)) => Some(idx::load_pair(&resolve(i), &resolve(l), spec)?),
                _ => None,
            };
            Ok(Splits { train, test, description: resolve(images).display().to_string() })
        }
    }
}

/// Data a command line names (`--data`, `--input`): `builtin:NAME` (a
/// built-in set, both splits); an IDX images file, recognised by its
/// header, with the IDX `labels` file when the rows need targets; or CSV, a
/// file or `-` (standard input), whose columns `columns` may choose.
pub fn load_named(text: &str, labels: Option<&Path>, spec: &RowSpec, columns: &Columns) -> Result<Splits, DataError> {
    if let Some(name) = text.strip_prefix("builtin:") {
        if labels.is_some() {
            return Err(DataError::about_file(text, None, "a built-in set has its own labels", "leave out --labels"));
        }
        return load(&DataSource::Builtin { name: name.to_string() }, Path::new("."), spec);
    }
    let path = Path::new(text);
    let train = if text != "-" && idx::looks_like_idx(path) {
        match labels {
            Some(labels) => idx::load_pair(path, labels, spec)?,
            None if spec.target_width() == 0 => idx::load_images(path, spec)?,
            None => {
                return Err(DataError::about_file(
                    text,
                    None,
                    "these are IDX images, and their labels are in a file of their own",
                    "name the labels file with --labels",
                ));
            }
        }
    } else {
        if let Some(labels) = labels {
            return Err(DataError::about_file(
                &labels.display().to_string(),
                None,
                format!("--labels goes with IDX images, and {text} is CSV, whose targets are columns"),
                "leave out --labels",
            ));
        }
        load_csv(path, spec, columns)?
    };
    Ok(Splits { train, test: None, description: text.to_string() })
}

/// Rows read a part at a time, so that reading holds one part, not the
/// whole input (`nnc predict` over inputs of any length).
pub enum RowStream {
    /// Rows already in memory (a built-in set), given out in parts.
    Loaded {
        data: Dataset,
        next: usize,
    },
    Csv(Box<csv::CsvRows<Box<dyn Read>>>),
    Images(idx::ImageRows),
}

impl RowStream {
    /// The next rows, at most `max` (a CSV may give fewer before its end);
    /// `None` after the last.
    pub fn next_rows(&mut self, max: usize) -> Result<Option<Dataset>, DataError> {
        match self {
            RowStream::Loaded { data, next } => {
                let rows = max.min(data.rows - *next);
                if rows == 0 {
                    return Ok(None);
                }
                let part = data.select(&(*next..*next + rows).collect::<Vec<_>>());
                *next += rows;
                Ok(Some(part))
            }
            RowStream::Csv(csv) => csv.next_rows(max),
            RowStream::Images(images) => images.next_rows(max),
        }
    }
}

/// Rows without targets from a file a command line names: IDX images,
/// recognised by their header, or CSV (a file or `-`, standard input).
/// Nothing bounds the input's length: only a part is held at a time.
pub fn stream_inputs(text: &str, spec: &RowSpec) -> Result<RowStream, DataError> {
    let path = Path::new(text);
    if text != "-" && idx::looks_like_idx(path) {
        return Ok(RowStream::Images(idx::stream_images(path, spec)?));
    }
    let csv = csv::CsvRows::new(open(path)?, text, spec, &Columns::default(), None)?;
    Ok(RowStream::Csv(Box::new(csv)))
}

/// Reads a CSV file (gzipped if it ends in `.gz` or starts with the gzip magic).
pub fn load_csv(path: &Path, spec: &RowSpec, columns: &Columns) -> Result<Dataset, DataError> {
    csv::CsvRows::new(open(path)?, &path.display().to_string(), spec, columns, Some(DATA_LIMIT))?.read_all()
}

/// The most a data file may hold (after decompression): a bound, so that
/// `/dev/zero` or a gzip bomb is an error rather than exhausted memory.
const DATA_LIMIT: u64 = 1 << 30;

/// A data file as a stream of its bytes (`-`: standard input), decompressed
/// when it starts with the gzip magic.
fn open(path: &Path) -> Result<Box<dyn Read>, DataError> {
    let name = path.display().to_string();
    if path == Path::new("-") {
        return gzip_aware(std::io::BufReader::new(std::io::stdin()), &name);
    }
    let file = std::fs::File::open(path).map_err(|e| {
        DataError::about_file(
            &name,
            None,
            format!("cannot read the file: {e}"),
            "check the path (paths a model file names are relative to its folder or --data-dir; paths on the \
             command line, to the working directory)",
        )
    })?;
    gzip_aware(std::io::BufReader::new(file), &name)
}

/// `reader`, decompressed when it starts with the gzip magic.
fn gzip_aware<R: BufRead + 'static>(mut reader: R, name: &str) -> Result<Box<dyn Read>, DataError> {
    let gzipped = reader.fill_buf().map(|head| head.starts_with(&[0x1f, 0x8b])).map_err(|e| {
        DataError::about_file(name, None, format!("cannot read the file: {e}"), "is it a regular, readable file?")
    })?;
    Ok(if gzipped { Box::new(flate2::read::GzDecoder::new(reader)) } else { Box::new(reader) })
}

/// Decompresses a gzipped data set built into nnc.
fn gunzip(bytes: &[u8], name: &str) -> Result<Vec<u8>, DataError> {
    read_bounded(&mut flate2::read::GzDecoder::new(bytes), DATA_LIMIT, name)
}

/// Reads at most `limit` bytes from `reader`; more is an error.
fn read_bounded(reader: &mut dyn Read, limit: u64, name: &str) -> Result<Vec<u8>, DataError> {
    let mut out = Vec::new();
    reader.take(limit.saturating_add(1)).read_to_end(&mut out).map_err(|e| read_error(name, &e))?;
    if out.len() as u64 > limit {
        return Err(past_limit(name, limit));
    }
    Ok(out)
}

/// A data file longer than nnc keeps in memory.
fn past_limit(name: &str, limit: u64) -> DataError {
    DataError::about_file(
        name,
        None,
        format!("the data goes on past {limit} bytes"),
        "is this the right file (not a device or a stream)?",
    )
}

/// A data file that could not be read or decompressed to its end.
fn read_error(name: &str, e: &std::io::Error) -> DataError {
    DataError::about_file(name, None, format!("cannot decompress or read: {e}"), "is the file whole (not truncated)?")
}

/// Whether the model reads sequences or images (for messages only).
pub fn input_kind_name(model: &CheckedModel) -> &'static str {
    match model.inputs.first().map(|i| i.kind) {
        Some(InputKind::Seq) => "sequence",
        Some(InputKind::Tokens) => "token",
        _ => "feature",
    }
}

/// The mean and standard deviation of each of `width` columns of `rows`
/// (population deviation, summed in f64; 1 where a column is constant).
pub fn column_statistics(rows: &[f32], width: usize) -> (Vec<f32>, Vec<f32>) {
    if width == 0 {
        return (Vec::new(), Vec::new());
    }
    let n = (rows.len() / width.max(1)).max(1) as f64;
    let mut mean = vec![0f64; width];
    let mut sq = vec![0f64; width];
    for row in rows.chunks(width) {
        for (j, &v) in row.iter().enumerate() {
            mean[j] += f64::from(v) / n;
        }
    }
    for row in rows.chunks(width) {
        for (j, &v) in row.iter().enumerate() {
            sq[j] += (f64::from(v) - mean[j]).powi(2) / n;
        }
    }
    let std = sq.iter().map(|v| if v.sqrt() > 1e-12 { v.sqrt() as f32 } else { 1.0 }).collect();
    (mean.into_iter().map(|m| m as f32).collect(), std)
}

/// Input preprocessing fitted on the training rows and applied to every split.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum Scaler {
    None,
    /// x / s
    Scale(f32),
    /// (x − mean) / std per feature (std 1 where a feature is constant).
    Standardize {
        mean: Vec<f32>,
        std: Vec<f32>,
    },
}

impl Scaler {
    /// The preprocessing of the columns `range` of a row (one of several
    /// inputs); none when the scaler has fewer columns.
    pub fn columns(&self, range: std::ops::Range<usize>) -> Option<Scaler> {
        Some(match self {
            Scaler::None => Scaler::None,
            Scaler::Scale(s) => Scaler::Scale(*s),
            Scaler::Standardize { mean, std } => {
                Scaler::Standardize { mean: mean.get(range.clone())?.to_vec(), std: std.get(range)?.to_vec() }
            }
        })
    }

    pub fn fit(preprocess: crate::check::Preprocess, train: &Dataset) -> Scaler {
        use crate::check::Preprocess;
        match preprocess {
            Preprocess::None => Scaler::None,
            Preprocess::Scale(s) => Scaler::Scale(s as f32),
            Preprocess::Standardize => {
                let (mean, std) = column_statistics(&train.x, train.width);
                Scaler::Standardize { mean, std }
            }
        }
    }

    pub fn apply(&self, data: &mut Dataset) {
        match self {
            Scaler::None => {}
            Scaler::Scale(s) => data.x.iter_mut().for_each(|v| *v /= s),
            Scaler::Standardize { mean, std } => {
                for row in data.x.chunks_mut(data.width) {
                    for (j, v) in row.iter_mut().enumerate() {
                        *v = (*v - mean[j]) / std[j];
                    }
                }
            }
        }
    }
}
