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
mod train;

use std::collections::HashMap;

use crate::diag::{Diag, Incoming, Span, did_you_mean, messages};
use crate::syntax::ast::{self, Call, Ident, Source, Stage, Value};
use args::Args;
use layers::{LAYERS, Labelled};
pub use model::*;

/// How deep blocks may call blocks; deeper means a block calls itself.
const MAX_BLOCK_DEPTH: usize = 16;
/// Most layers a model may expand to (through `repeat` and blocks).
const MAX_LAYERS: usize = 100_000;

/// Checks every model in the file. Returns the models that checked without
/// errors and all diagnostics, in source order.
pub fn check(file: &ast::File) -> (Vec<CheckedModel>, Vec<Diag>) {
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
        if !model_diags.iter().any(Diag::is_error) {
            models.extend(checked);
        }
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
            node_inputs: vec![],
            counters: HashMap::new(),
        }
    }

    fn run(mut self) -> Option<CheckedModel> {
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
        let loss = self.loss();
        self.cross_checks(&train);
        self.report_unused(loss.is_some());
        Some(CheckedModel {
            name: self.ast.name.name.clone(),
            inputs: self.inputs,
            targets: self.targets,
            nodes: self.nodes,
            loss,
            train,
            span: self.ast.span,
        })
    }

    fn define(&mut self, name: &Ident, value: ValueRef, info: Incoming, what: &'static str) {
        if let Some(first) = self.scope.get(&name.name) {
            self.diags.push(messages::duplicate_name(name, first.defined, "value"));
            return;
        }
        let entry = Entry { value, info, defined: name.span, used: false, what };
        self.scope.insert(name.name.clone(), entry);
    }

    fn dims(&mut self, dims: &[ast::Number], what: &str) -> Option<Shape> {
        let mut shape = Vec::new();
        for d in dims {
            shape.push(args::int_value(&Value::Number(d.clone()), what, 1, self.diags)?);
        }
        if shape.is_empty() {
            return None;
        }
        let total = shape.iter().try_fold(1usize, |acc, d| acc.checked_mul(*d));
        match total {
            Some(t) if t as f64 <= args::MAX_INT => Some(shape),
            _ => {
                let span = dims[0].span.join(dims[dims.len() - 1].span);
                self.diags.push(messages::shape_too_large(span));
                None
            }
        }
    }

    fn declare_input(&mut self, decl: &ast::Decl) {
        let (kind, shape) = match &decl.ty {
            ast::TypeExpr::Dims { kind, dims, .. } => {
                let kind = match kind.as_ref().map(|k| k.name.as_str()) {
                    None | Some("real") => InputKind::Real,
                    Some("seq") => InputKind::Seq,
                    Some("tokens") => InputKind::Tokens,
                    Some(_) => {
                        let k = kind.as_ref().map_or(&decl.name, |k| k);
                        self.diags.push(messages::unknown_type(k, &["real", "seq", "tokens"], "input"));
                        return;
                    }
                };
                let Some(shape) = self.dims(dims, "dimension") else {
                    return;
                };
                if kind == InputKind::Seq && shape.len() != 2 {
                    self.diags.push(messages::seq_rank(decl.ty.span(), shape.len()));
                    return;
                }
                if kind == InputKind::Tokens && shape.len() != 1 {
                    self.diags.push(messages::tokens_rank(decl.ty.span(), shape.len()));
                    return;
                }
                (kind, shape)
            }
            ast::TypeExpr::Count { kind, .. } => {
                self.diags.push(messages::input_is_class(kind));
                return;
            }
        };
        let info = Incoming {
            shape: shape.clone(),
            why: format!("input {}", decl.name.name),
            producer: decl.span,
            tokens: kind == InputKind::Tokens,
        };
        let index = self.inputs.len();
        self.inputs.push(InputSpec { name: decl.name.name.clone(), kind, shape, span: decl.span });
        self.define(&decl.name, ValueRef::Input(index), info, "input");
    }

    fn declare_target(&mut self, decl: &ast::Decl) {
        let kinds = ["class", "real", "binary"];
        let kind = match &decl.ty {
            ast::TypeExpr::Count { kind, count, .. } => {
                if kind.name != "class" {
                    self.diags.push(messages::unknown_type(kind, &kinds, "target"));
                    return;
                }
                let Some(k) = args::int_value(&Value::Number(count.clone()), "classes", 2, self.diags) else {
                    return;
                };
                TargetKind::Class(k)
            }
            ast::TypeExpr::Dims { kind, dims, span } => {
                let Some(shape) = self.dims(dims, "dimension") else {
                    return;
                };
                match kind.as_ref().map(|k| k.name.as_str()) {
                    None | Some("real") => TargetKind::Real(shape),
                    Some("binary") => TargetKind::Binary(shape),
                    Some("class") => {
                        self.diags.push(messages::class_needs_count(*span));
                        return;
                    }
                    Some(_) => {
                        let k = kind.as_ref().map_or(&decl.name, |k| k);
                        self.diags.push(messages::unknown_type(k, &kinds, "target"));
                        return;
                    }
                }
            }
        };
        let index = self.targets.len();
        let target = TargetSpec { name: decl.name.name.clone(), kind, span: decl.span };
        let shape = match &target.kind {
            TargetKind::Class(k) => vec![*k],
            TargetKind::Real(s) | TargetKind::Binary(s) => s.clone(),
        };
        self.targets.push(target);
        let info = Incoming { shape, why: String::new(), producer: decl.span, tokens: false };
        self.define(&decl.name, ValueRef::Target(index), info, "target");
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
        let mut stages: Vec<(Stage, usize)> = flow.stages.iter().rev().map(|s| (s.clone(), 0)).collect();
        // Expand blocks and repeats lazily, left to right, with a work stack.
        while let Some((stage, depth)) = stages.pop() {
            if self.nodes.len() >= MAX_LAYERS {
                self.diags.push(messages::too_many_layers(flow.span, MAX_LAYERS));
                return None;
            }
            match stage {
                Stage::Repeat { count, body, span } => {
                    let n = args::int_value(&Value::Number(count.clone()), "repeat count", 1, self.diags)?;
                    if n.saturating_mul(body.len()) > MAX_LAYERS {
                        self.diags.push(messages::too_many_layers(span, MAX_LAYERS));
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
        if let Some(name) = &flow.output {
            self.define(name, value, info, "value");
        } else if flow.stages.is_empty() {
            self.diags.push(messages::pipeline_does_nothing(flow.span));
        } else {
            self.diags.push(messages::unnamed_result(flow.span));
        }
        Some(())
    }

    /// `add(a, b)` at the start of a flow.
    fn combine(&mut self, call: &Call) -> Option<(ValueRef, Incoming)> {
        if call.name.name != "add" {
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
        if a_info.shape != b_info.shape {
            self.diags.push(messages::add_mismatch(call.span, a_info, b_name.span, b_info));
            return None;
        }
        let shape = a_info.shape.clone();
        let node = self.push_node(Layer::Add, None, vec![*a, *b], shape.clone(), 0, 0, call.span);
        let info = Incoming { shape, why: a_info.why.clone(), producer: call.span, tokens: false };
        Some((ValueRef::Node(node), info))
    }

    /// Binds a block's parameters to the call's arguments and returns its body
    /// with the parameters substituted.
    fn expand_block(&mut self, block: &ast::BlockDef, call: &Call) -> Option<Vec<Stage>> {
        let mut bound: HashMap<&str, Value> = HashMap::new();
        let mut position = 0;
        let mut ok = true;
        for arg in &call.args {
            let param = match &arg.key {
                Some(key) => block.params.iter().find(|p| p.name == key.name),
                None => {
                    position += 1;
                    block.params.get(position - 1)
                }
            };
            let Some(param) = param else {
                let names: Vec<&str> = block.params.iter().map(|p| p.name.as_str()).collect();
                self.diags.push(messages::block_argument(arg.span, &block.name, &names));
                ok = false;
                continue;
            };
            if bound.insert(&param.name, arg.value.clone()).is_some() {
                self.diags.push(messages::duplicate_argument(arg.span, arg.span, &param.name));
                ok = false;
            }
        }
        for param in &block.params {
            if !bound.contains_key(param.name.as_str()) {
                self.diags.push(messages::missing_block_argument(call, &block.name, param));
                ok = false;
            }
        }
        ok.then(|| block.body.iter().map(|s| substitute_stage(s, &bound)).collect())
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
        self.nodes.push(Node { name, layer, inputs, shape, params, macs, span });
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
            self.diags.push(messages::unknown_layer(&call.name, suggestion));
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
            (Layer::Add, Some(Value::Name(id))) => self.scope.get_mut(&id.name).map(|e| {
                e.used = true;
                e.value
            }),
            _ => None,
        };
        let mut inputs = vec![value];
        inputs.extend(other_ref);
        let span = call.span.join(label.map_or(call.span, |l| l.span));
        let node =
            self.push_node(applied.layer, label, inputs, applied.shape.clone(), applied.params, applied.macs, span);
        let next = Incoming { shape: applied.shape, why: applied.why, producer: span, tokens: false };
        Some((ValueRef::Node(node), next))
    }

    fn loss(&mut self) -> Option<LossSpec> {
        // A model ending in an RBM needs no loss: CD (or annealing on its
        // reconstruction error) trains it.
        let ends_in_rbm = self.nodes.last().is_some_and(|n| matches!(n.layer, Layer::Rbm { .. }));
        let optimizer_needs_no_loss = self.ast.trains.iter().flat_map(|t| &t.settings).any(|s| {
            s.key.name == "optimizer"
                && matches!(&s.value, Value::Call(c) if c.name.name == "cd" || (c.name.name == "anneal" && ends_in_rbm))
        });
        let Some(first) = self.ast.losses.first() else {
            if !optimizer_needs_no_loss && !self.ast.inputs.is_empty() {
                self.diags.push(messages::missing_loss(&self.ast.name));
            }
            return None;
        };
        for extra in &self.ast.losses[1..] {
            self.diags.push(messages::duplicate_loss(extra.span, first.span));
        }
        let call = &first.call;
        let kind = match call.name.name.as_str() {
            "mse" => LossKind::Mse,
            "cross_entropy" => LossKind::CrossEntropy,
            "binary_cross_entropy" => LossKind::BinaryCrossEntropy,
            other => {
                let known = ["mse", "cross_entropy", "binary_cross_entropy"];
                self.diags.push(messages::unknown_loss(&call.name, did_you_mean(other, known)));
                return None;
            }
        };
        let args = Args::match_call(call, &["prediction", "target"], &["prediction", "target"], self.diags);
        let mut resolve = |key: &str| -> Option<(Ident, ValueRef, Incoming)> {
            match args.value(key)? {
                Value::Name(id) => self.use_value(id).map(|(v, i)| (id.clone(), v, i)),
                v => {
                    self.diags.push(messages::wrong_type(v, key, "the name of a value"));
                    None
                }
            }
        };
        let (prediction, target) = (resolve("prediction"), resolve("target"));
        let ((pred_name, prediction, pred_info), (target_name, target, target_info)) = (prediction?, target?);
        let target_kind = match target {
            ValueRef::Target(t) => Some(self.targets[t].kind.clone()),
            _ => None,
        };
        let spec = LossSpec { kind, prediction, target, span: first.span };
        match (kind, &target_kind) {
            (LossKind::CrossEntropy, Some(TargetKind::Class(k))) => {
                if pred_info.shape != vec![*k] {
                    self.diags.push(messages::loss_shape(&pred_name, &pred_info, &target_name, &[*k], "class scores"));
                    return None;
                }
            }
            (LossKind::CrossEntropy, _) => {
                self.diags.push(messages::loss_target_kind(
                    call,
                    &target_name,
                    target_info.producer,
                    "class(K)",
                    "mse",
                ));
                return None;
            }
            (LossKind::Mse | LossKind::BinaryCrossEntropy, Some(TargetKind::Class(_))) => {
                self.diags.push(messages::loss_target_kind(
                    call,
                    &target_name,
                    target_info.producer,
                    "real[...] or binary[...]",
                    "cross_entropy",
                ));
                return None;
            }
            _ => {
                if pred_info.shape != target_info.shape {
                    self.diags.push(messages::loss_shape(
                        &pred_name,
                        &pred_info,
                        &target_name,
                        &target_info.shape,
                        "values",
                    ));
                    return None;
                }
            }
        }
        self.lint_prediction(&spec, &pred_name);
        Some(spec)
    }

    fn lint_prediction(&mut self, loss: &LossSpec, pred_name: &Ident) {
        let ValueRef::Node(n) = loss.prediction else { return };
        let producer = &self.nodes[n];
        match (&producer.layer, loss.kind) {
            (Layer::Activation(Activation::Softmax), LossKind::CrossEntropy) => {
                self.diags.push(messages::double_softmax(producer.span, loss.span));
            }
            (Layer::Dropout { .. }, _) => self.diags.push(messages::dropout_at_output(producer.span, pred_name)),
            (Layer::Activation(Activation::Sigmoid), LossKind::BinaryCrossEntropy) => {}
            (_, LossKind::BinaryCrossEntropy) => {
                self.diags.push(messages::bce_without_sigmoid(producer.span, loss.span));
            }
            _ => {}
        }
    }

    fn cross_checks(&mut self, train: &TrainConfig) {
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
            let setting = self
                .ast
                .trains
                .iter()
                .flat_map(|t| &t.settings)
                .find(|s| matches!(s.key.name.as_str(), "scale" | "standardize"));
            let at = setting.map_or(span, |s| s.key.span.join(s.value.span()));
            self.diags.push(messages::preprocess_tokens(at, tokens.span));
        }
        if (train.l2 > 0.0 || train.weight_decay > 0.0)
            && let Some(bn) = self.nodes.iter().find(|n| matches!(n.layer, Layer::BatchNorm { .. }))
        {
            self.diags.push(messages::decay_with_batchnorm(bn.span, span));
        }
    }

    /// Without a loss (an RBM trained by CD), named values are the model's outputs.
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

fn substitute_stage(stage: &Stage, bound: &HashMap<&str, Value>) -> Stage {
    match stage {
        Stage::Layer { call, label } => Stage::Layer { call: substitute_call(call, bound), label: label.clone() },
        Stage::Repeat { count, body, span } => Stage::Repeat {
            count: count.clone(),
            body: body.iter().map(|s| substitute_stage(s, bound)).collect(),
            span: *span,
        },
    }
}

fn substitute_call(call: &Call, bound: &HashMap<&str, Value>) -> Call {
    let args = call
        .args
        .iter()
        .map(|a| ast::Arg { key: a.key.clone(), value: substitute_value(&a.value, bound), span: a.span })
        .collect();
    Call { args, ..call.clone() }
}

fn substitute_value(value: &Value, bound: &HashMap<&str, Value>) -> Value {
    match value {
        Value::Name(id) => bound.get(id.name.as_str()).cloned().unwrap_or_else(|| value.clone()),
        Value::List(items, span) => Value::List(items.iter().map(|v| substitute_value(v, bound)).collect(), *span),
        Value::Call(c) => Value::Call(substitute_call(c, bound)),
        Value::Number(_) | Value::String(..) => value.clone(),
    }
}
