//! Static checking: `ast::File` → `CheckedModel`s, or diagnostics.
//!
//! Resolves names, expands blocks and `repeat`, infers every shape, checks
//! every hyperparameter, and lints for likely mistakes. Checking continues
//! after an error wherever the rest of the model still makes sense, so one run
//! reports every independent mistake. A model is returned only when it has no
//! errors (warnings allowed).

pub mod args;
pub mod layers;
pub mod model;

mod blocks;
mod conv;
mod decls;
mod gradients;
mod loss;
mod memory;
mod sequences;
mod settings;
pub mod train;

use std::collections::HashMap;

use crate::ast::{self, Call, Ident, Source, Stage, Value};
use crate::diag::{Diag, Incoming, Span, did_you_mean, messages};
use args::Args;
use layers::{LAYERS, Labelled};
pub use memory::TrainingMemory;
pub use model::*;
pub use settings::*;

/// This machine's memory in bytes (Linux's `MemTotal`), if it can be read.
pub(crate) fn machine_memory() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kib.checked_mul(1024)
}

/// What a training step's memory is held against.
#[derive(Debug, Clone, Copy)]
pub enum MemoryLimit {
    /// All of this machine's memory.
    Machine,
    /// At most this many bytes (`--max-memory`), and the machine's memory.
    Bytes(u64),
}

/// The error for a step of `memory` at `batch` rows that exceeds `limit`,
/// at the layer that takes most (`layer` gives a node's name and span).
fn memory_error<'a>(
    memory: TrainingMemory,
    batch: usize,
    limit: MemoryLimit,
    layer: impl Fn(usize) -> (&'a str, Span),
) -> Option<Diag> {
    let machine = machine_memory();
    let (bytes, what) = match (limit, machine) {
        (MemoryLimit::Bytes(b), Some(m)) if m < b => (m, "this machine has".to_string()),
        (MemoryLimit::Bytes(b), _) => (b, format!("the {} `--max-memory` allows", crate::shape::bytes_text(b))),
        (MemoryLimit::Machine, Some(m)) => (m, "this machine has".to_string()),
        (MemoryLimit::Machine, None) => return None,
    };
    let (node, share) = memory.dominant?;
    (memory.bytes > bytes).then(|| {
        let (name, span) = layer(node);
        messages::too_much_memory(span, (memory.bytes, &what), batch, (name, share))
    })
}

impl CheckedModel {
    /// An error when a training step at `batch` rows needs more memory than
    /// `limit` (for a batch the model file does not give: a flag, or all
    /// the rows of `batch = full`).
    pub fn memory_error(&self, batch: usize, limit: MemoryLimit) -> Option<Diag> {
        let layer = |node: usize| (self.nodes[node].name.as_str(), self.nodes[node].span);
        memory_error(self.training_memory(batch), batch, limit, layer)
    }
}

/// How deep blocks may call blocks; deeper means a block calls itself.
const MAX_BLOCK_DEPTH: usize = 16;
/// Most layers a model may expand to (through `repeat` and blocks).
const MAX_LAYERS: usize = 100_000;

/// Checks every model in the file. Returns the models that checked without
/// errors and all diagnostics, in source order.
pub fn check(file: &ast::File) -> (Vec<CheckedModel>, Vec<Diag>) {
    let (models, diags) = check_all(file);
    (models.into_iter().filter_map(|(model, ok)| ok.then_some(model)).collect(), diags)
}

/// Like `check`, but every model is returned, each with whether it checked
/// without errors: one with errors holds the layers and names that did
/// check, which an editor shows while the rest is being fixed.
pub fn check_all(file: &ast::File) -> (Vec<(CheckedModel, bool)>, Vec<Diag>) {
    let mut diags = Vec::new();
    let mut blocks: HashMap<&str, &ast::BlockDef> = HashMap::new();
    for block in &file.blocks {
        if let Some(first) = blocks.get(block.name.name.as_str()) {
            diags.push(messages::duplicate_name(&block.name, first.name.span, "block"));
        } else if layers::find(&block.name.name).is_some() {
            diags.push(messages::block_shadows_layer(&block.name));
        } else {
            blocks.insert(&block.name.name, block);
        }
    }
    let mut models = Vec::new();
    let mut seen: HashMap<&str, Span> = HashMap::new();
    for model in &file.models {
        if let Some(first) = seen.get(model.name.name.as_str()) {
            diags.push(messages::duplicate_name(&model.name, *first, "model"));
        }
        seen.insert(&model.name.name, model.name.span);
        let mut model_diags = Vec::new();
        let checked = ModelChecker::new(model, &blocks, &mut model_diags).run();
        let ok = !model_diags.iter().any(Diag::is_error);
        models.push((checked, ok));
        diags.extend(model_diags);
    }
    if file.models.is_empty() {
        diags.push(messages::no_model());
    }
    diags.sort_by_key(|d| (d.primary.span.start, d.primary.span.end));
    (models, diags)
}

/// A named value in a model's scope.
struct Entry {
    value: ValueRef,
    info: Incoming,
    defined: Span,
    used: bool,
    /// Inputs and targets are reported unused differently from values.
    what: &'static str,
}

struct ModelChecker<'a> {
    ast: &'a ast::Model,
    blocks: &'a HashMap<&'a str, &'a ast::BlockDef>,
    diags: &'a mut Vec<Diag>,
    scope: HashMap<String, Entry>,
    /// Names of values whose pipeline had an error: using them reports nothing
    /// more, so one mistake gives one diagnostic.
    poisoned: std::collections::HashSet<String>,
    labels: HashMap<String, usize>,
    inputs: Vec<InputSpec>,
    targets: Vec<TargetSpec>,
    nodes: Vec<Node>,
    values: Vec<NamedValue>,
    stages: Vec<StageOutput>,
    /// Node inputs recorded while nodes are built (input value → shape).
    node_inputs: Vec<Shape>,
    counters: HashMap<&'static str, usize>,
}

impl<'a> ModelChecker<'a> {
    fn new(ast: &'a ast::Model, blocks: &'a HashMap<&'a str, &'a ast::BlockDef>, diags: &'a mut Vec<Diag>) -> Self {
        ModelChecker {
            ast,
            blocks,
            diags,
            scope: HashMap::new(),
            poisoned: Default::default(),
            labels: HashMap::new(),
            inputs: vec![],
            targets: vec![],
            nodes: vec![],
            values: vec![],
            stages: vec![],
            node_inputs: vec![],
            counters: HashMap::new(),
        }
    }

    fn run(mut self) -> CheckedModel {
        // A declaration with an error still introduces its name.
        let declared = self.ast.inputs.iter().chain(&self.ast.targets);
        self.poisoned.extend(declared.map(|d| d.name.name.clone()));
        for decl in &self.ast.inputs {
            self.declare_input(decl);
        }
        for decl in &self.ast.targets {
            self.declare_target(decl);
        }
        if self.ast.inputs.is_empty() {
            self.diags.push(messages::no_input(&self.ast.name));
        }
        for flow in &self.ast.flows {
            self.flow(flow);
        }
        let train = train::check_train(&self.ast.trains, self.diags);
        let losses = self.losses();
        let mut predictions = Vec::new();
        for loss in &losses {
            if !predictions.contains(&loss.prediction) {
                predictions.push(loss.prediction);
                self.vanishing_gradients(loss);
            }
        }
        self.bias_before_batchnorm(&losses);
        self.cross_checks(&train, &losses);
        self.report_unused(!losses.is_empty());
        CheckedModel {
            name: self.ast.name.name.clone(),
            inputs: self.inputs,
            targets: self.targets,
            nodes: self.nodes,
            values: self.values,
            stages: self.stages,
            losses,
            train,
            span: self.ast.span,
        }
    }

    fn define(&mut self, name: &Ident, value: ValueRef, info: Incoming, what: &'static str) {
        if let Some(first) = self.scope.get(&name.name) {
            self.diags.push(messages::duplicate_name(name, first.defined, "value"));
            return;
        }
        let entry = Entry { value, info, defined: name.span, used: false, what };
        self.scope.insert(name.name.clone(), entry);
        self.values.push(NamedValue { name: name.name.clone(), value, span: name.span });
    }
    /// Looks a value up by name, marking it used; reports undefined names.
    fn use_value(&mut self, name: &Ident) -> Option<(ValueRef, Incoming)> {
        match self.scope.get_mut(&name.name) {
            Some(entry) => {
                entry.used = true;
                Some((entry.value, entry.info.clone()))
            }
            None if self.poisoned.contains(&name.name) => None,
            None => {
                let names: Vec<&str> = self.scope.keys().map(String::as_str).collect();
                let suggestion = did_you_mean(&name.name, names.iter().copied());
                self.diags.push(messages::undefined_value(name, suggestion));
                None
            }
        }
    }

    fn flow(&mut self, flow: &ast::Flow) {
        if let (Some(first), Some(second)) = (&flow.named_twice, &flow.output) {
            self.diags.push(messages::flow_named_twice(first, second));
        }
        if self.flow_value(flow).is_none()
            && let Some(name) = &flow.output
        {
            self.poisoned.insert(name.name.clone());
        }
    }

    /// Runs a pipeline; `None` when an error stopped it.
    fn flow_value(&mut self, flow: &ast::Flow) -> Option<()> {
        let start = match &flow.source {
            Source::Value(name) => self.use_value(name),
            Source::Call(call) => self.combine(call),
        };
        let (mut value, mut info) = start?;
        for top in &flow.stages {
            (value, info) = self.stage(top, value, info, flow.span)?;
            let span = match top {
                Stage::Layer { call, label } => call.span.join(label.as_ref().map_or(call.span, |l| l.span)),
                Stage::Repeat { span, .. } => *span,
            };
            self.stages.push(StageOutput { span, value });
        }
        if let Some(name) = &flow.output {
            self.define(name, value, info, "value");
        } else if flow.stages.is_empty() {
            self.diags.push(messages::pipeline_does_nothing(flow.span));
        } else {
            self.diags.push(messages::unnamed_result(flow.span));
        }
        Some(())
    }

    /// Applies one stage of a flow (at `flow_span`) to `value`; `None` when
    /// an error stopped it.
    fn stage(
        &mut self,
        top: &Stage,
        mut value: ValueRef,
        mut info: Incoming,
        flow_span: Span,
    ) -> Option<(ValueRef, Incoming)> {
        let mut stages: Vec<(Stage, usize)> = vec![(top.clone(), 0)];
        // Expand blocks and repeats lazily, left to right, with a work stack.
        while let Some((stage, depth)) = stages.pop() {
            if self.nodes.len() >= MAX_LAYERS {
                self.diags.push(messages::too_many_layers(flow_span, MAX_LAYERS, "split the model into smaller ones"));
                return None;
            }
            match stage {
                Stage::Repeat { count, body, span } => {
                    let n = args::int_value(&Value::Number(count.clone()), "repeat count", 1, self.diags)?;
                    if n.saturating_mul(body.len()) > MAX_LAYERS {
                        self.diags.push(messages::too_many_layers(span, MAX_LAYERS, "check the `repeat` count"));
                        return None;
                    }
                    for _ in 0..n {
                        stages.extend(body.iter().rev().map(|s| (s.clone(), depth)));
                    }
                }
                Stage::Layer { call, label } => {
                    if let Some(block) = self.blocks.get(call.name.name.as_str()).copied() {
                        if depth >= MAX_BLOCK_DEPTH {
                            self.diags.push(messages::block_recursion(&call, MAX_BLOCK_DEPTH));
                            return None;
                        }
                        if let Some(label) = &label {
                            self.diags.push(messages::label_on_block(label));
                        }
                        let body = self.expand_block(block, &call)?;
                        stages.extend(body.into_iter().rev().map(|s| (s, depth + 1)));
                        continue;
                    }
                    (value, info) = self.layer(&call, label.as_ref(), value, &info)?;
                }
            }
        }
        Some((value, info))
    }

    /// `add(a, b)` or `concat(a, b)` at the start of a flow.
    fn combine(&mut self, call: &Call) -> Option<(ValueRef, Incoming)> {
        if call.name.name != "add" && call.name.name != "concat" {
            let known = layers::find(&call.name.name).is_some();
            self.diags.push(messages::bad_source(call, known));
            return None;
        }
        let args = Args::match_call(call, &["a", "b"], &["a", "b"], self.diags);
        let mut operands = Vec::new();
        for key in ["a", "b"] {
            match args.value(key) {
                Some(Value::Name(id)) => operands.push((id.clone(), self.use_value(id)?)),
                Some(v) => {
                    self.diags.push(messages::wrong_type(v, key, "the name of a value"));
                    return None;
                }
                None => return None,
            }
        }
        let ((_, (a, a_info)), (b_name, (b, b_info))) = (&operands[0], &operands[1]);
        let (layer, shape, why) = if call.name.name == "concat" {
            let applied = layers::concatenated(call.span, a_info, (b_name.span, b_info), self.diags)?;
            (applied.layer, applied.shape, applied.why)
        } else if a_info.shape != b_info.shape {
            self.diags.push(messages::add_mismatch(call.span, a_info, b_name.span, b_info));
            return None;
        } else {
            (Layer::Add, a_info.shape.clone(), a_info.why.clone())
        };
        let node = self.push_node(layer, None, vec![*a, *b], shape.clone(), 0, 0, why.clone(), call.span);
        let info = Incoming { shape, why, producer: call.span, tokens: false };
        Some((ValueRef::Node(node), info))
    }

    #[allow(clippy::too_many_arguments)]
    fn push_node(
        &mut self,
        layer: Layer,
        label: Option<&Ident>,
        inputs: Vec<ValueRef>,
        shape: Shape,
        params: usize,
        macs: u64,
        why: String,
        span: Span,
    ) -> usize {
        let index = self.nodes.len();
        let name = match label {
            Some(l) => {
                if let Some(first) = self.labels.get(&l.name) {
                    let first_span = self.nodes[*first].span;
                    self.diags.push(messages::duplicate_name(l, first_span, "layer label"));
                } else {
                    self.labels.insert(l.name.clone(), index);
                }
                l.name.clone()
            }
            None => {
                let counter = self.counters.entry(layer.keyword()).or_insert(0);
                *counter += 1;
                format!("{}{}", layer.keyword(), counter)
            }
        };
        let input_shape = inputs.first().map(|v| self.shape_of(*v)).unwrap_or_default();
        self.node_inputs.push(input_shape);
        self.nodes.push(Node { name, layer, inputs, shape, params, macs, why, span, init: None, frozen: false });
        index
    }

    fn shape_of(&self, v: ValueRef) -> Shape {
        match v {
            ValueRef::Input(i) => self.inputs[i].shape.clone(),
            ValueRef::Target(t) => match &self.targets[t].kind {
                TargetKind::Class(k) => vec![*k],
                TargetKind::Real(s) | TargetKind::Binary(s) => s.clone(),
            },
            ValueRef::Node(n) => self.nodes[n].shape.clone(),
        }
    }

    fn layer(
        &mut self,
        call: &Call,
        label: Option<&Ident>,
        value: ValueRef,
        info: &Incoming,
    ) -> Option<(ValueRef, Incoming)> {
        let name = call.name.name.as_str();
        let Some(spec) = layers::find(name) else {
            let candidates = LAYERS.iter().map(|spec| spec.keyword).chain(self.blocks.keys().copied());
            let suggestion = did_you_mean(name, candidates);
            let layers: Vec<&str> =
                LAYERS.iter().filter(|spec| !spec.kind.is_activation()).map(|spec| spec.keyword).collect();
            self.diags.push(messages::unknown_layer(&call.name, suggestion, &layers));
            return None;
        };
        let args = Args::match_call(call, spec.params, spec.required, self.diags);
        let labels = &self.labels;
        let nodes = &self.nodes;
        let node_inputs = &self.node_inputs;
        let lookup_diags = std::cell::RefCell::new(Vec::new());
        let lookup = |id: &Ident| -> Option<Labelled> {
            match labels.get(&id.name) {
                Some(&n) => Some(Labelled { node: n, layer: nodes[n].layer.clone(), input: node_inputs[n].clone() }),
                None => {
                    let suggestion = did_you_mean(&id.name, labels.keys().map(String::as_str));
                    lookup_diags.borrow_mut().push(messages::undefined_label(id, suggestion));
                    None
                }
            }
        };
        let scope = &self.scope;
        let other = |id: &Ident| -> Option<Incoming> {
            match scope.get(&id.name) {
                Some(entry) => Some(entry.info.clone()),
                None => {
                    let suggestion = did_you_mean(&id.name, scope.keys().map(String::as_str));
                    lookup_diags.borrow_mut().push(messages::undefined_value(id, suggestion));
                    None
                }
            }
        };
        let applied = layers::apply(call, spec.kind, &args, info, &lookup, &other, self.diags);
        self.diags.extend(lookup_diags.into_inner());
        let applied = applied?;
        let other_ref = match (&applied.layer, args.value("other")) {
            (Layer::Add | Layer::Concat, Some(Value::Name(id))) => self.scope.get_mut(&id.name).map(|e| {
                e.used = true;
                e.value
            }),
            _ => None,
        };
        let mut inputs = vec![value];
        inputs.extend(other_ref);
        let span = call.span.join(label.map_or(call.span, |l| l.span));
        let (shape, why) = (applied.shape.clone(), applied.why.clone());
        let node = self.push_node(applied.layer, label, inputs, shape, applied.params, applied.macs, why, span);
        self.nodes[node].init = layers::weight_init(&args, self.diags);
        self.nodes[node].frozen = !args.bool("trainable", true, self.diags);
        if let Layer::Dense { weights: Weights::Tied(owner) | Weights::Shared(owner), .. } = &self.nodes[node].layer {
            let owner = self.nodes[*owner].name.clone();
            for argument in ["init", "trainable"] {
                if let Some(value) = args.value(argument) {
                    self.diags.push(messages::argument_on_borrowed_weights(value, argument, &owner));
                }
            }
        }
        let next = Incoming { shape: applied.shape, why: applied.why, producer: span, tokens: false };
        Some((ValueRef::Node(node), next))
    }

    fn cross_checks(&mut self, train: &TrainConfig, losses: &[LossSpec]) {
        if let Some(DataSource::Csv { columns, .. }) = &train.data {
            self.check_columns(columns, losses);
        }
        let regression = losses.iter().any(|l| {
            l.kind == LossKind::Mse
                && matches!(l.target, ValueRef::Target(t) if matches!(self.targets[t].kind, TargetKind::Real(_)))
        });
        if train.standardize_target
            && !regression
            && let Some(setting) = self.setting("standardize_target")
        {
            let loss = losses.first().map(|l| l.span);
            self.diags.push(messages::standardize_target_without_regression(setting, loss));
        }
        let has_rbm = self.nodes.iter().any(|n| matches!(n.layer, Layer::Rbm { .. }));
        let span = self.ast.trains.first().map_or(self.ast.name.span, |t| t.span);
        if matches!(train.optimizer, Optimizer::ContrastiveDivergence { .. }) && !has_rbm {
            self.diags.push(messages::cd_without_rbm(span));
        }
        let trains_rbms = matches!(train.optimizer, Optimizer::ContrastiveDivergence { .. } | Optimizer::Anneal { .. });
        if has_rbm && train.pretrain.is_none() && !trains_rbms {
            self.diags.push(messages::rbm_without_cd(span));
        }
        // Token ids must reach the embedding as they are.
        if train.preprocess != Preprocess::None
            && let Some(tokens) = self.inputs.iter().find(|i| i.kind == InputKind::Tokens)
        {
            let at = self.setting("scale").or_else(|| self.setting("standardize")).unwrap_or(span);
            self.diags.push(messages::preprocess_tokens(at, tokens.span));
        }
        if (train.l2 > 0.0 || train.weight_decay > 0.0)
            && let Some(bn) = self.nodes.iter().find(|n| matches!(n.layer, Layer::BatchNorm { .. }))
        {
            self.diags.push(messages::decay_with_batchnorm(bn.span, span));
        }
        self.check_memory(train);
    }

    /// An error, before anything is allocated, when a training step at the
    /// model's batch cannot fit in this machine's memory.
    fn check_memory(&mut self, train: &TrainConfig) {
        let batch = match train.batch {
            Batch::Size(b) => b,
            // The rows are not known yet; one row is the least it takes.
            Batch::Full => 1,
        };
        let memory = memory::training_memory(&self.nodes, &self.inputs, &train.optimizer, batch);
        let names = |node: usize| (self.nodes[node].name.as_str(), self.nodes[node].span);
        if let Some(diag) = memory_error(memory, batch, MemoryLimit::Machine, names) {
            self.diags.push(diag);
        }
    }

    /// Without a loss (an RBM trained by CD), named values are the model's outputs.
    /// Where the train setting `key = value` is written, if it is.
    fn setting(&self, key: &str) -> Option<Span> {
        let setting = self.ast.trains.iter().flat_map(|t| &t.settings).find(|s| s.key.name == key)?;
        Some(setting.key.span.join(setting.value.span()))
    }

    /// Columns named in `csv(…)`: as many as the input and the target hold
    /// per row, and none both a feature and the target.
    fn check_columns(&mut self, columns: &Columns, losses: &[LossSpec]) {
        if let (Some(span), Some(input)) = (columns.features_span, self.inputs.first()) {
            let wanted = self.inputs.iter().map(|i| i.shape.iter().product::<usize>()).sum();
            if columns.features.len() != wanted {
                let names: Vec<String> = self.inputs.iter().map(|i| format!("`{}`", i.name)).collect();
                let owner = match &names[..] {
                    [one] => format!("input {one}"),
                    several => format!("the row of inputs {}", several.join(", ")),
                };
                self.diags.push(messages::column_count(
                    span,
                    "features",
                    columns.features.len(),
                    wanted,
                    (owner, input.span),
                ));
            }
        }
        // The targets a row holds: those the losses read (else the first declared).
        let mut read = model::row_targets(losses);
        if read.is_empty() && !self.targets.is_empty() {
            read.push(0);
        }
        if let (Some(span), Some(&first)) = (columns.target_span, read.first()) {
            let width = |t: &TargetSpec| match &t.kind {
                TargetKind::Class(_) => 1,
                TargetKind::Real(s) | TargetKind::Binary(s) => s.iter().product(),
            };
            let wanted: usize = read.iter().map(|&t| width(&self.targets[t])).sum();
            if columns.target.len() != wanted {
                let names: Vec<String> = read.iter().map(|&t| format!("`{}`", self.targets[t].name)).collect();
                let owner = match &names[..] {
                    [one] => format!("target {one}"),
                    several => format!("the row of targets {}", several.join(", ")),
                };
                let owner = (owner, self.targets[first].span);
                self.diags.push(messages::column_count(span, "target", columns.target.len(), wanted, owner));
            }
        }
        let both = columns.features.iter().find(|f| columns.target.contains(f));
        if let (Some(name), Some(features), Some(target)) = (both, columns.features_span, columns.target_span) {
            self.diags.push(messages::column_twice(name, features, target));
        }
    }

    fn report_unused(&mut self, has_loss: bool) {
        if self.diags.iter().any(Diag::is_error) {
            return; // after an error, "unused" is usually its echo
        }
        let mut unused: Vec<(&Span, &str, &str)> = self
            .scope
            .iter()
            .filter(|(_, e)| !e.used && (has_loss || e.what != "value"))
            .map(|(name, e)| (&e.defined, name.as_str(), e.what))
            .collect();
        unused.sort_by_key(|(s, _, _)| s.start);
        let found: Vec<Diag> = unused.into_iter().map(|(s, n, w)| messages::unused(*s, n, w)).collect();
        self.diags.extend(found);
    }
}
