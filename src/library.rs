//! `nnc build`: a trained model → `NAME.h`, `libNAME.a` and `libNAME.so`.
//!
//! The forward passes for one row and for a batch are planned as for the
//! JIT and written by the same code generator into one object file, with
//! the weights and the input preprocessing as read-only data
//! (`jit::object`). The static library is that object plus the runtime
//! routines' own static library, which nnc carries inside itself (built by
//! `build.rs`), so a built library needs nothing from nnc at run time. The
//! shared library is the same two, linked by the system C compiler.
//!
//! Everything is made in a private folder inside the output folder and
//! renamed into place at the end: a failure leaves nothing half-written.

use std::path::{Path, PathBuf};
use std::process::Command;

use ar_archive_writer::{ArchiveKind, DEFAULT_OBJECT_READER, NewArchiveMember, write_archive_to_stream};
use object::read::archive::ArchiveFile;

use crate::check::CheckedModel;
use crate::data::Scaler;
use crate::ir::{Graph, numel};
use crate::jit::object::{LibraryModel, PlannedPass};
use crate::jit::{self, TargetCpu};
use crate::model::Model;
use crate::pipeline;
use crate::plan::{self, Plan};
use crate::train::metrics::Task;
use nnc_runtime::library::{Columns, MIDDLE_BATCH, SMALL_BATCH, pass_rows};

/// The runtime routines as a static library, embedded at build time.
static RUNTIME_ARCHIVE: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/libnnc_runtime.a"));

/// Libraries the runtime needs from the system when linked into a program.
pub const SYSTEM_LIBS: &str = "-lpthread -lm -ldl";

/// Rows of a library's large pass unless `--batch` says otherwise: as
/// `nnc predict` runs them (`model::chunk_rows`), at most `LIBRARY_BATCH`.
/// A call of two large passes or more shares its whole passes between two
/// threads, which balance only when a call holds several passes (the
/// MNIST MLP's library: 0.79-0.87 M rows/s in one 3,994-row pass after
/// another, 0.93-1.02 M in 1,024-row passes on two threads).
pub fn default_batch(model: &CheckedModel) -> usize {
    crate::model::chunk_rows(model).min(LIBRARY_BATCH)
}

/// At most this many rows per large pass: a pass's preprocessed input
/// (784 values a row for MNIST, 784 KiB at 256 rows) then stays in the
/// core's second-level cache for the first product, and a call of 10,000
/// rows is 39 passes the two threads share evenly. The MNIST MLP's
/// library over 10,000 MNIST rows beat 1,024-row passes in 18 of 18
/// interleaved pairs (medians 926 k against 757 k rows/s in one run of
/// ten on a Xeon), and on synthetic rows in 8 of 10 (635 k against 563 k).
const LIBRARY_BATCH: usize = 256;

/// What to build, and where.
pub struct BuildOptions {
    /// A C identifier; every symbol and file is named after it.
    pub name: String,
    /// Rows per call of the large batched pass (what is left runs in
    /// passes of `MIDDLE_BATCH` and `SMALL_BATCH` rows, then one row at a
    /// time).
    pub batch: usize,
    pub target: TargetCpu,
    pub out_dir: PathBuf,
    /// The caller passes rows already preprocessed (the header's
    /// `NAME_INPUT_SHIFT` and `NAME_INPUT_DIVISOR`): the library reads
    /// them where they lie, without a pass over a copy of its own.
    pub preprocessed_input: bool,
}

/// The files a build wrote.
pub struct Built {
    pub header: PathBuf,
    pub static_lib: PathBuf,
    pub shared_lib: PathBuf,
}

/// The prefix of the runtime's symbols, which the library carries: a
/// name under it could make one of the library's own (`nnc_library` would
/// define `nnc_library_create` twice).
const RUNTIME_PREFIX: &str = "nnc_";

/// An error unless `name` can start C identifiers that are not the runtime's.
pub fn check_name(name: &str) -> Result<(), String> {
    let mut chars = name.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
    if !first_ok || !chars.all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Err(format!(
            "`{name}` cannot name a C library: use letters, digits and `_`, not starting with a digit (--name)"
        ));
    }
    if name.starts_with(RUNTIME_PREFIX) {
        return Err(format!(
            "`{name}` cannot name a C library: names starting with `{RUNTIME_PREFIX}` are the runtime's it \
             carries; choose another (--name)"
        ));
    }
    Ok(())
}

/// The C compiler that links the shared library (`CC` when set), checked
/// to run before anything is built.
fn c_compiler() -> Result<String, String> {
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".to_string());
    let works = Command::new(&cc).arg("--version").output().is_ok_and(|o| o.status.success());
    if works {
        Ok(cc)
    } else {
        Err(format!(
            "no C compiler: `{cc}` cannot be run, and `nnc build` links the shared library with it; \
             install one (Debian/Ubuntu: `apt install gcc`) or set CC"
        ))
    }
}

/// `libNAME.a`: the runtime archive's members and then the model's object,
/// with a fresh symbol index. Written by rustc's own archive writer, which
/// indexes the Rust objects (LLVM bitcode sections included) correctly.
fn static_library(object_name: &str, object: &[u8]) -> Result<Vec<u8>, String> {
    let damaged = |e: object::Error| format!("nnc's embedded runtime archive is damaged: {e}");
    let runtime = ArchiveFile::parse(RUNTIME_ARCHIVE).map_err(damaged)?;
    let mut members = Vec::new();
    for member in runtime.members() {
        let member = member.map_err(damaged)?;
        let name = String::from_utf8_lossy(member.name()).into_owned();
        members.push(NewArchiveMember::new(
            member.data(RUNTIME_ARCHIVE).map_err(damaged)?,
            &DEFAULT_OBJECT_READER,
            name,
        ));
    }
    members.push(NewArchiveMember::new(object, &DEFAULT_OBJECT_READER, object_name.to_string()));
    let mut out = std::io::Cursor::new(Vec::new());
    write_archive_to_stream(&mut out, &members, ArchiveKind::Gnu, false, None).map_err(|e| e.to_string())?;
    Ok(out.into_inner())
}

/// A forward pass planned for `rows` rows.
fn planned(model: &Model, rows: usize) -> Result<(Graph, Plan), String> {
    let mut graph = pipeline::forward_graph(&model.checked, rows, false).map_err(|d| d.message)?;
    crate::ir::fuse_activations(&mut graph, &[]);
    if cfg!(debug_assertions) {
        crate::ir::verify(&graph)?;
    }
    let plan = plan::plan_forward(&graph);
    // The weights are read-only data in the library.
    if plan.writes_store() {
        return Err("this model's forward pass writes its parameters, so it cannot be built as a library".into());
    }
    Ok((graph, plan))
}

/// Per-feature shift and divisor that reproduce `scaler` (x' = (x − shift) / divisor).
fn preprocessing(scaler: &Scaler, features: usize) -> Result<(Vec<f32>, Vec<f32>), String> {
    let (shift, divisor) = match scaler {
        Scaler::None => (vec![0.0; features], vec![1.0; features]),
        Scaler::Scale(s) => (vec![0.0; features], vec![*s; features]),
        Scaler::Standardize { mean, std } => (mean.clone(), std.clone()),
    };
    if shift.len() != features || divisor.len() != features {
        return Err(format!(
            "the checkpoint's preprocessing is for {} input values, but the model reads {features}",
            shift.len()
        ));
    }
    Ok((shift, divisor))
}

/// The header's words on an input row's values and, when the caller
/// preprocesses them (`BuildOptions::preprocessed_input`), each feature's
/// shift and divisor as C arrays, exactly (the shortest decimals that
/// read back as the same floats).
fn input_values(upper: &str, (shift, divisor): (&[f32], &[f32]), preprocessed: bool) -> String {
    if !preprocessed {
        return format!(
            " * raw values. The library applies the preprocessing the model was trained\n \
             * with (as `nnc predict` does). */\n#define {upper}_INPUT_PREPROCESSED 0"
        );
    }
    let array = |name: &str, values: &[f32]| {
        let lines: Vec<String> = values
            .chunks(8)
            .map(|line| format!("    {},", line.iter().map(|v| format!("{v:?}f")).collect::<Vec<_>>().join(", ")))
            .collect();
        format!("static const float {upper}_INPUT_{name}[{}] = {{\n{}\n}};", values.len(), lines.join("\n"))
    };
    format!(
        " * preprocessed as the model was trained: value j of a row is\n \
         * (raw - {upper}_INPUT_SHIFT[j]) / {upper}_INPUT_DIVISOR[j], in float\n \
         * arithmetic, as `nnc predict` computes it. The library was built with\n \
         * --preprocessed-input: it reads the rows as they are. */\n\
         #define {upper}_INPUT_PREPROCESSED 1\n{}\n{}",
        array("SHIFT", shift),
        array("DIVISOR", divisor)
    )
}

/// Builds the three files of `model` (holding trained weights) as `options` says.
pub fn build(model: &Model, scaler: &Scaler, options: &BuildOptions) -> Result<Built, String> {
    check_name(&options.name)?;
    if options.batch == 0 {
        return Err("--batch must be at least 1".into());
    }
    let out = &options.out_dir;
    if out.exists() && !out.is_dir() {
        return Err(format!(
            "{} is not a folder; -o names the folder that gets {name}.h, lib{name}.a and lib{name}.so",
            out.display(),
            name = options.name
        ));
    }
    let cc = c_compiler()?;
    let name = options.name.as_str();
    let rows = pass_rows(options.batch);
    let [large, middle, small, single] = rows.map(|rows| planned(model, rows));
    let (large, middle, small, single) = (large?, middle?, small?, single?);
    let (single_graph, single_plan) = &single;
    let features = model.checked.input_width();
    let outputs = numel(single_graph.shape(single_graph.prediction));
    let weights = model.store.data();
    if weights.len() != single_plan.store.len {
        return Err(format!(
            "the weights hold {} values; the model's plan expects {}",
            weights.len(),
            single_plan.store.len
        ));
    }
    let (shift, divisor) = preprocessing(scaler, features)?;
    // With none, the runtime reads the caller's rows where they lie.
    let library_scaler = if options.preprocessed_input { &Scaler::None } else { scaler };
    let (library_shift, library_divisor) = preprocessing(library_scaler, features)?;
    let outputs_of_row = output_columns(&model.checked, outputs)?;
    let softmax: Vec<Columns> = outputs_of_row
        .iter()
        .filter(|o| o.classes > 0)
        .map(|o| Columns { start: o.columns.start, width: o.columns.len() })
        .collect();
    let library = LibraryModel {
        name,
        weights,
        shift: &library_shift,
        divisor: &library_divisor,
        outputs,
        softmax: &softmax,
        parallel_images: jit::splits_images(&large.0) && jit::spreads_images(&model.checked, options.batch),
        passes: [(&large, rows[0]), (&middle, rows[1]), (&small, rows[2]), (&single, rows[3])]
            .map(|((graph, plan), rows)| PlannedPass { graph, plan, rows }),
    };
    let object = jit::object::emit(&library, &options.target)?;
    let header = header(model, name, (features, (&shift, &divisor)), (outputs, &outputs_of_row), options);

    std::fs::create_dir_all(out).map_err(|e| format!("cannot create {}: {e}", out.display()))?;
    let finals = [out.join(format!("{name}.h")), out.join(format!("lib{name}.a")), out.join(format!("lib{name}.so"))];
    for path in &finals {
        crate::io::refuse_non_file(path).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    let work = Workdir::new(out)?;
    let object_file = format!("{name}.o");
    work.write(&object_file, &object)?;
    work.write("libnnc_runtime.a", RUNTIME_ARCHIVE)?;
    work.write(&format!("{name}.h"), header.as_bytes())?;
    work.write(&format!("lib{name}.a"), &static_library(&object_file, &object)?)?;
    let mut link = Command::new(&cc);
    link.args(["-shared", "-o", &format!("lib{name}.so"), &object_file, "libnnc_runtime.a"])
        .args(["-Wl,--exclude-libs,ALL", "-Wl,--gc-sections", "-Wl,--strip-debug", "-Wl,-z,noexecstack"])
        .args(SYSTEM_LIBS.split(' '));
    work.run(&mut link, "cc")?;
    for (file, dest) in [format!("{name}.h"), format!("lib{name}.a"), format!("lib{name}.so")].iter().zip(&finals) {
        std::fs::rename(work.dir.join(file), dest).map_err(|e| format!("cannot write {}: {e}", dest.display()))?;
    }
    let [header, static_lib, shared_lib] = finals;
    Ok(Built { header, static_lib, shared_lib })
}

/// One output of a built library: its columns of an output row, and its
/// classes when it returns their probabilities (0 otherwise).
struct OutputColumns {
    name: String,
    columns: std::ops::Range<usize>,
    classes: usize,
}

/// The outputs of `model`'s prediction rows of `width` values, as
/// `nnc predict` writes them.
fn output_columns(model: &CheckedModel, width: usize) -> Result<Vec<OutputColumns>, String> {
    let outputs: Vec<OutputColumns> = crate::train::metrics::prediction_columns(model, width)
        .into_iter()
        .map(|(name, task, columns)| {
            let classes = if let Task::Classes(k) = task { k } else { 0 };
            OutputColumns { name, columns, classes }
        })
        .collect();
    let fits = |o: &OutputColumns| o.columns.end <= width && (o.classes == 0 || o.classes == o.columns.len());
    match outputs.iter().find(|o| !fits(o)) {
        Some(o) => Err(format!("the output `{}` does not fit the model's prediction of {width} values", o.name)),
        None => Ok(outputs),
    }
}

/// A private folder inside the output folder, removed when dropped.
struct Workdir {
    dir: PathBuf,
}

impl Workdir {
    fn new(out: &Path) -> Result<Workdir, String> {
        let dir = out.join(format!(".nnc-build-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir(&dir).map_err(|e| format!("cannot write in {}: {e}", out.display()))?;
        Ok(Workdir { dir })
    }

    fn write(&self, file: &str, bytes: &[u8]) -> Result<(), String> {
        let path = self.dir.join(file);
        std::fs::write(&path, bytes).map_err(|e| format!("cannot write {}: {e}", path.display()))
    }

    /// Runs a tool in the folder; its output becomes the error when it fails.
    fn run(&self, command: &mut Command, what: &str) -> Result<(), String> {
        let output = command.current_dir(&self.dir).output().map_err(|e| format!("cannot run {what}: {e}"))?;
        if output.status.success() {
            return Ok(());
        }
        let stderr = String::from_utf8_lossy(&output.stderr);
        Err(format!("{what} failed ({}):\n{}", output.status, stderr.trim_end()))
    }
}

impl Drop for Workdir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The C header: the API, its contract, and the model's sizes as constants.
fn header(
    model: &Model,
    name: &str,
    (features, preprocessing): (usize, (&[f32], &[f32])),
    (outputs, of_row): (usize, &[OutputColumns]),
    options: &BuildOptions,
) -> String {
    let upper = name.to_ascii_uppercase();
    let input_values = input_values(&upper, preprocessing, options.preprocessed_input);
    let shape = |dims: &[usize]| dims.iter().map(usize::to_string).collect::<Vec<_>>().join(", ");
    // Several inputs are one row: each input's values after the previous one's.
    let inputs = &model.checked.inputs;
    let (input_name, input_shape) = match &inputs[..] {
        [input] => (input.name.clone(), input.shape.clone()),
        several => {
            let names: Vec<&str> = several.iter().map(|i| i.name.as_str()).collect();
            (names.join(","), vec![features])
        }
    };
    let input_text = match &inputs[..] {
        [input] => format!("The input `{}`: {features} floats per row (shape [{}])", input.name, shape(&input.shape)),
        several => {
            let each: Vec<String> = several.iter().map(|i| format!("`{}` [{}]", i.name, shape(&i.shape))).collect();
            format!("The inputs {}, one after the other: {features} floats per row", each.join(" then "))
        }
    };
    let what = |o: &OutputColumns| match o.classes {
        0 => "the model's output values".to_string(),
        k => format!("the probabilities of the {k} classes (softmax of the scores)"),
    };
    let (output_text, classes) = match of_row {
        [one] => (format!("The output `{}`: {outputs} floats per row, {}.", one.name, what(one)), one.classes),
        several => {
            let each: Vec<String> = several
                .iter()
                .map(|o| {
                    format!(" *   `{}`: columns {} to {}, {}", o.name, o.columns.start, o.columns.end - 1, what(o))
                })
                .collect();
            (format!("The outputs, side by side: {outputs} floats per row:\n{}.", each.join(";\n")), 0)
        }
    };
    let names: Vec<String> = of_row.iter().map(|o| o.name.clone()).collect();
    let list = |values: Vec<String>| values.join(", ");
    let target = match &options.target {
        TargetCpu::Native => "the CPU it was built on (native)".to_string(),
        TargetCpu::Preset(p) => p.clone(),
    };
    use nnc_runtime::library::{NO_ROWS, NULL_POINTER, OK, TOO_MANY_ROWS, WRONG_CONTEXT};
    format!(
        r#"/* {name}.h: model `{model_name}`, compiled ahead of time by nnc {version}.
 *
 * Generated code for {target}; the runtime routines choose AVX2 or AVX-512
 * at run time. The weights are inside the library: nothing else is needed.
 *
 *   static: cc main.c -L DIR -l:lib{name}.a {system_libs}
 *   shared: cc main.c -L DIR -l{name} -Wl,-rpath,DIR
 *
 * Use: `{name}_context *ctx = {name}_create();` once per thread, then
 * `{name}_predict(ctx, input, rows, output)` as often as needed, then
 * `{name}_destroy(ctx)`. The first calls allocate the buffers they keep
 * (a second working memory and two threads once a call of two large
 * batches or more runs on two threads; Winograd convolutions' transformed
 * filters);
 * later calls allocate nothing. Several contexts may run at once; one
 * context must not be used by two threads at the same time.
 */
#ifndef {upper}_H
#define {upper}_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {{
#endif

/* {input_text},
{input_values}
#define {upper}_INPUT_NAME "{input_name}"
#define {upper}_INPUT_SIZE {features}
#define {upper}_INPUT_RANK {rank}
static const size_t {upper}_INPUT_SHAPE[{rank}] = {{{input_shape}}};

/* {output_text} */
#define {upper}_OUTPUT_NAME "{output_name}"
#define {upper}_OUTPUT_SIZE {outputs}
/* Number of classes (0 when the model is not a classifier, or has several
 * outputs: see {upper}_OUTPUT_CLASSES). */
#define {upper}_CLASSES {classes}

/* Each output's name, first column and columns in an output row, and its
 * classes (0 when it is not a classifier). */
#define {upper}_OUTPUTS {count}
static const char *const {upper}_OUTPUT_NAMES[{count}] = {{{quoted_names}}};
static const size_t {upper}_OUTPUT_OFFSETS[{count}] = {{{offsets}}};
static const size_t {upper}_OUTPUT_SIZES[{count}] = {{{sizes}}};
static const size_t {upper}_OUTPUT_CLASSES[{count}] = {{{output_classes}}};

/* Rows per call of the large batched pass; what is left runs in passes of
 * {middle} and of {small} rows, then one row at a time. */
#define {upper}_BATCH {batch}

/* Return codes of {name}_predict. */
#define {upper}_OK {ok}
#define {upper}_NULL_POINTER {null}      /* ctx, input or output is NULL */
#define {upper}_NO_ROWS {no_rows}           /* rows is 0 */
#define {upper}_WRONG_CONTEXT {wrong}     /* ctx was made by another model's create */
#define {upper}_TOO_MANY_ROWS {too_many}     /* rows * size cannot be a buffer */

typedef struct {name}_context {name}_context;

/* A context with its working memory; NULL if that cannot be allocated. */
{name}_context *{name}_create(void);

/* Frees a context; NULL is allowed. */
void {name}_destroy({name}_context *ctx);

/* Predicts `rows` rows: `input` holds rows * {upper}_INPUT_SIZE floats
 * (row-major), `output` receives rows * {upper}_OUTPUT_SIZE floats.
 * Returns {upper}_OK or one of the error codes above. */
int {name}_predict({name}_context *ctx, const float *input, size_t rows, float *output);

#ifdef __cplusplus
}}
#endif

#endif /* {upper}_H */
"#,
        model_name = model.checked.name,
        output_name = names.join(","),
        count = of_row.len(),
        quoted_names = list(names.iter().map(|n| format!("\"{n}\"")).collect()),
        offsets = list(of_row.iter().map(|o| o.columns.start.to_string()).collect()),
        sizes = list(of_row.iter().map(|o| o.columns.len().to_string()).collect()),
        output_classes = list(of_row.iter().map(|o| o.classes.to_string()).collect()),
        version = env!("CARGO_PKG_VERSION"),
        system_libs = SYSTEM_LIBS,
        input_shape = shape(&input_shape),
        rank = input_shape.len(),
        batch = options.batch,
        middle = MIDDLE_BATCH.min(options.batch),
        small = SMALL_BATCH.min(options.batch),
        ok = OK,
        null = NULL_POINTER,
        no_rows = NO_ROWS,
        wrong = WRONG_CONTEXT,
        too_many = TOO_MANY_ROWS,
    )
}
