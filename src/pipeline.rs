//! The whole compiler, chained in one place and in order:
//!
//! 1. read the file;
//! 2. `syntax::parse`: text → AST with spans;
//! 3. `check::check`: AST → checked models (names, shapes, hyperparameters);
//! 4. `ir::lower`: a checked model → a forward graph of primitive ops for one
//!    batch size (training mode or evaluation mode);
//! 5. `optim::step_graph`: the forward graph → a training step — for gradient
//!    optimizers `autodiff::differentiate` and then the update rule, for
//!    contrastive divergence the CD-k graph, for annealing the bare layout;
//! 6. `ir::verify` (debug builds and tests), `plan`: fusion and the memory
//!    plan, and codegen (`jit::compile`), wrapped up in `exec::Compiled`.
//!
//! Steps 1–3 are `check_file`/`check_source`; steps 4–6 are
//! `compile_forward` (evaluation and inference: no gradients, no optimizer
//! state) and `compile_step` (a whole training step). Every user of the back
//! half — the runtime `Model`, the `Trainer`, `--emit`, `bench`,
//! `gradcheck` — goes through these functions.

use std::path::Path;

use crate::check::{self, CheckedModel, TrainConfig};
use crate::diag::{Diag, messages};
use crate::exec::{Backend, Compiled};
use crate::ir::{self, Graph, Shard, TrainGraph};
use crate::{optim, syntax};

/// A source file and everything the front end learnt about it.
pub struct Checked {
    pub file_name: String,
    pub source: String,
    /// Models without errors, in source order.
    pub models: Vec<CheckedModel>,
    /// Errors and warnings, in source order.
    pub diags: Vec<Diag>,
}

impl Checked {
    pub fn has_errors(&self) -> bool {
        self.diags.iter().any(Diag::is_error)
    }
}

/// Steps 2–3: parses and checks `source`.
pub fn check_source(file_name: &str, source: &str) -> Checked {
    // A syntax error stops here: nothing after it can be trusted.
    let (models, diags) = match syntax::parse(source) {
        // Checking collects every independent mistake.
        Ok(file) => check::check(&file),
        Err(diag) => (Vec::new(), vec![diag]),
    };
    Checked { file_name: file_name.to_string(), source: source.to_string(), models, diags }
}

/// The largest model file nnc reads; real ones are a few kilobytes.
pub const MODEL_FILE_LIMIT: u64 = 1 << 20;

/// Steps 1–3: reads and checks a `.nn` file.
pub fn check_file(path: &Path) -> std::io::Result<Checked> {
    let source = read_model(path)?;
    Ok(check_source(&path.display().to_string(), &source))
}

/// A model file's text: at most `MODEL_FILE_LIMIT` bytes of UTF-8 (the
/// error says where the first bytes that are not UTF-8 are).
pub fn read_model(path: &Path) -> std::io::Result<String> {
    read_model_from(std::fs::File::open(path)?)
}

/// A model's text from any reader (`nnc fmt -` reads standard input), with
/// the limits of `read_model`.
pub fn read_model_from(reader: impl std::io::Read) -> std::io::Result<String> {
    use std::io::{Error, ErrorKind, Read};
    let mut bytes = Vec::new();
    reader.take(MODEL_FILE_LIMIT + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > MODEL_FILE_LIMIT {
        let message = format!("the file is larger than {} KiB; is it a model file?", MODEL_FILE_LIMIT >> 10);
        return Err(Error::new(ErrorKind::InvalidData, message));
    }
    String::from_utf8(bytes).map_err(|e| {
        let valid = &e.as_bytes()[..e.utf8_error().valid_up_to()];
        let line = valid.iter().filter(|&&b| b == b'\n').count() + 1;
        let line_start = valid.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        let column = String::from_utf8_lossy(&valid[line_start..]).chars().count() + 1;
        let message = format!("line {line}, column {column}: these bytes are not UTF-8 text; save the file as UTF-8");
        Error::new(ErrorKind::InvalidData, message)
    })
}

/// Step 4 for evaluation and inference: batch normalisation reads its
/// running statistics and dropout passes values through. Without
/// `with_loss` the graph computes the prediction only.
pub fn forward_graph(model: &CheckedModel, batch: usize, with_loss: bool) -> Result<Graph, Diag> {
    let mut forward = ir::lower(model, batch, false)?;
    if !with_loss {
        forward.loss = None;
    }
    Ok(forward)
}

/// Step 4 for training: dropout draws its masks and batch normalisation
/// normalises by the batch's statistics (and updates its running ones).
pub fn training_graph(model: &CheckedModel, batch: usize) -> Result<Graph, Diag> {
    ir::lower(model, batch, true)
}

/// Steps 4–5: the training step of `model` under `config` (the model's own
/// settings, or those with command-line overrides) for one batch size.
pub fn step_graph(model: &CheckedModel, config: &TrainConfig, batch: usize) -> Result<TrainGraph, Diag> {
    shard_step_graph(model, config, Shard::whole(batch))
}

/// `step_graph` for the rows `shard` of a batch split over processes: the
/// loss is this process's rows' share of the whole batch's mean, and the
/// gradients and batch statistics are summed over every process, so each
/// applies the update of the whole batch.
pub fn shard_step_graph(model: &CheckedModel, config: &TrainConfig, shard: Shard) -> Result<TrainGraph, Diag> {
    let model = &CheckedModel { train: config.clone(), ..model.clone() };
    let mut forward = ir::lower_shard(model, shard, true)?;
    if let (Some(loss), true) = (forward.loss, shard.is_split()) {
        let share = shard.rows as f64 / shard.total as f64;
        let span = forward.node(loss).span;
        forward.loss = Some(forward.push(ir::Op::Unary(ir::Unary::Scale(share)), vec![loss], vec![], span));
    }
    optim::step_graph(&forward, config).map_err(|e| messages::not_trainable_optimizer(model.span, &e))
}

/// Steps 4–5 for greedy pretraining: CD-k on the RBM `rbm` alone, over what
/// the (evaluation-mode) layers below it make of the input.
pub fn pretrain_graph(model: &CheckedModel, rbm: usize, k: usize, batch: usize) -> Result<TrainGraph, Diag> {
    let forward = ir::lower(model, batch, false)?;
    optim::cd_step(&forward, &[rbm], k, model.train.seed).map_err(|e| messages::internal(model.span, &e))
}

/// Steps 4–5 for `nnc explain`: the forward graph (evaluation mode) and the
/// gradient of Σ seed ⊙ output with respect to the input, as the graph's
/// prediction; the seed (a one-hot row per sample picks the score to
/// explain) is its target.
pub fn input_gradient_graph(model: &CheckedModel, batch: usize) -> Result<Graph, Diag> {
    let mut g = forward_graph(model, batch, false)?;
    let output = g.prediction;
    let (shape, span) = (g.node(output).shape.clone(), g.node(output).span);
    let seed = g.push(crate::ir::Op::Target(0), vec![], shape, span);
    g.prediction =
        crate::autodiff::input_gradient(&mut g, output, seed).map_err(|e| messages::internal(model.span, &e))?;
    Ok(g)
}

/// Steps 4–6: a forward pass of `model` for `batch` samples, ready to run.
pub fn compile_forward(
    model: &CheckedModel,
    batch: usize,
    with_loss: bool,
    backend: Backend,
) -> Result<Compiled<Graph>, Diag> {
    let forward = forward_graph(model, batch, with_loss)?;
    Compiled::<Graph>::new(forward, backend).map_err(|e| messages::internal(model.span, &e))
}

/// Steps 4–6: a whole training step (forward, backward, update), ready to
/// run; with `observe`, it also reports each parameter's health scalars;
/// with `part`, it is that part of the steps sharing one store, where its
/// plan allows (`Compiled::new_in_part`).
pub fn compile_step(
    model: &CheckedModel,
    config: &TrainConfig,
    (shard, part): (Shard, Option<(usize, usize)>),
    observe: bool,
    backend: Backend,
) -> Result<Compiled<TrainGraph>, Diag> {
    let mut step = shard_step_graph(model, config, shard)?;
    if observe {
        let activations: Vec<_> = model.activation_layers().iter().map(|n| n.span).collect();
        optim::observe_health(&mut step, &activations);
    }
    Compiled::<TrainGraph>::new_in_part(step, backend, part).map_err(|e| messages::internal(model.span, &e))
}

/// Step 6 for a pretraining step built by `pretrain_graph`.
pub fn compile_pretrain_step(
    model: &CheckedModel,
    rbm: usize,
    k: usize,
    batch: usize,
    backend: Backend,
) -> Result<Compiled<TrainGraph>, Diag> {
    let step = pretrain_graph(model, rbm, k, batch)?;
    Compiled::<TrainGraph>::new(step, backend).map_err(|e| messages::internal(model.span, &e))
}
