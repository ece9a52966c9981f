//! What the language server knows about one document, recomputed on every
//! change: the diagnostics `nnc check` gives, the models as far as they
//! checked (shapes of every stage and name), and where each name is defined
//! and used.

use crate::ast::{self, Call, Ident, Source, Stage, Value};
use crate::check::{self, CheckedModel, ValueRef};
use crate::diag::{Diag, Span};
use crate::lsp::docs::{self, Doc};
use crate::shape::shape_text;

pub struct Analysis {
    pub diags: Vec<Diag>,
    /// The syntax tree, when the text parses.
    pub file: Option<ast::File>,
    /// Every model of `file`, in order, as far as it checked.
    pub models: Vec<CheckedModel>,
    pub symbols: Vec<Symbol>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SymbolKind {
    /// An input, a target or a pipeline's `=> name`.
    Value,
    /// A layer's `as name`, which `tied =` and `shared =` refer to.
    Label,
    Block,
    /// A block's parameter.
    Param,
}

/// A name: where it is defined and everywhere it is used.
#[derive(Debug)]
pub struct Symbol {
    pub name: String,
    pub kind: SymbolKind,
    pub definition: Span,
    pub references: Vec<Span>,
    /// The model (index into `models`) it belongs to, if any.
    pub model: Option<usize>,
}

fn contains(span: Span, offset: usize) -> bool {
    span.start <= offset && offset <= span.end
}

impl Analysis {
    pub fn of(source: &str) -> Analysis {
        let file = match crate::syntax::parse(source) {
            Ok(file) => file,
            Err(diag) => return Analysis { diags: vec![diag], file: None, models: vec![], symbols: vec![] },
        };
        let (models, diags) = check::check_all(&file);
        let models = models.into_iter().map(|(model, _)| model).collect();
        let symbols = symbols(&file);
        Analysis { diags, file: Some(file), models, symbols }
    }

    /// A text too large to be a model file: one error, nothing checked.
    pub fn too_large(limit: u64) -> Analysis {
        let diags = vec![crate::diag::messages::too_large(limit)];
        Analysis { diags, file: None, models: vec![], symbols: vec![] }
    }

    /// The name defined or used at `offset`.
    pub fn symbol_at(&self, offset: usize) -> Option<&Symbol> {
        self.symbols
            .iter()
            .find(|s| contains(s.definition, offset) || s.references.iter().any(|r| contains(*r, offset)))
    }

    fn model_at(&self, offset: usize) -> Option<usize> {
        self.file.as_ref()?.models.iter().position(|m| contains(m.span, offset))
    }

    /// The output shape after each stage written in a pipeline: (offset of
    /// the stage's end, label).
    pub fn inlay_hints(&self) -> Vec<(usize, String)> {
        let mut hints: Vec<(usize, String)> = self
            .models
            .iter()
            .flat_map(|m| m.stages.iter().map(move |s| (s.span.end, shape_text(&m.shape_of(s.value)))))
            .collect();
        hints.sort();
        hints
    }

    /// Markdown for what is at `offset`, and the span it describes.
    pub fn hover(&self, offset: usize) -> Option<(Span, String)> {
        let file = self.file.as_ref()?;
        if let Some(found) = argument_doc(file, offset) {
            return Some(found);
        }
        if let Some(symbol) = self.symbol_at(offset) {
            return Some((symbol.definition, self.describe_symbol(symbol)));
        }
        if let Some(model) = self.model_at(offset).map(|i| &self.models[i]) {
            // The innermost stage whose text holds the offset.
            let stages = model.stages.iter().filter(|s| contains(s.span, offset));
            if let Some(stage) = stages.min_by_key(|s| s.span.end - s.span.start) {
                return Some((stage.span, describe_value(model, stage.value)));
            }
        }
        // A layer inside a `repeat` or a block: every time it was applied,
        // in every model that uses it.
        let applied: Vec<(&CheckedModel, usize)> = self
            .models
            .iter()
            .flat_map(|m| (0..m.nodes.len()).filter(|&n| contains(m.nodes[n].span, offset)).map(move |n| (m, n)))
            .collect();
        let (first_model, first) = *applied.first()?;
        let mut text = String::new();
        if applied.len() > 1 {
            text += &format!("applied {} times:\n\n", applied.len());
        }
        for &(model, n) in applied.iter().take(8) {
            text += &describe_value(model, ValueRef::Node(n));
            text += "\n\n";
        }
        Some((first_model.nodes[first].span, text.trim_end().to_string()))
    }

    fn describe_symbol(&self, symbol: &Symbol) -> String {
        let model = symbol.model.map(|m| &self.models[m]);
        match (symbol.kind, model) {
            (SymbolKind::Value, Some(model)) => match model.values.iter().find(|v| v.name == symbol.name) {
                Some(v) => format!("`{}`: {}", symbol.name, describe_value(model, v.value)),
                None => format!("`{}`: its pipeline did not check", symbol.name),
            },
            (SymbolKind::Label, Some(model)) => match model.nodes.iter().position(|n| n.name == symbol.name) {
                Some(n) => describe_value(model, ValueRef::Node(n)),
                None => format!("layer `{}`", symbol.name),
            },
            (SymbolKind::Block, _) => {
                let block = self.file.as_ref().and_then(|f| f.blocks.iter().find(|b| b.name.name == symbol.name));
                let params: Vec<&str> =
                    block.map(|b| b.params.iter().map(|p| p.name.as_str()).collect()).unwrap_or_default();
                format!(
                    "```nn\nblock {}({})\n```\nA reusable pipeline: each call expands to its layers.",
                    symbol.name,
                    params.join(", ")
                )
            }
            _ => format!("`{}`: a block parameter", symbol.name),
        }
    }
}

/// Markdown for a value: its shape and, for a layer's output, the layer,
/// its parameters and cost and how the shape came about.
fn describe_value(model: &CheckedModel, value: ValueRef) -> String {
    let shape = shape_text(&model.shape_of(value));
    match value {
        ValueRef::Input(i) => format!("input `{}` → `{shape}` per sample", model.inputs[i].name),
        ValueRef::Target(t) => format!("target `{}` → `{shape}` per sample", model.targets[t].name),
        ValueRef::Node(n) => {
            let node = &model.nodes[n];
            let keyword = node.layer.keyword();
            let mut text = format!("**{}** · `{keyword}` → `{shape}`", node.name);
            text += &format!(
                "\n\n{} parameters · {} multiply-adds per sample",
                crate::shape::grouped(node.params as u64),
                crate::shape::grouped(node.macs)
            );
            if !node.why.is_empty() {
                text += &format!("\n\nshape: `{}`", node.why);
            }
            if let Some(doc) = docs::find(docs::LAYERS, keyword) {
                text += &format!("\n\n{}", doc.summary);
            }
            text
        }
    }
}

/// The documentation of the keyword argument or `train` setting whose name
/// is at `offset`.
fn argument_doc(file: &ast::File, offset: usize) -> Option<(Span, String)> {
    for model in &file.models {
        if !contains(model.span, offset) {
            continue;
        }
        for setting in model.trains.iter().flat_map(|t| &t.settings) {
            if contains(setting.key.span, offset) {
                let (name, meaning) = docs::SETTINGS.iter().find(|(s, _)| *s == setting.key.name)?;
                return Some((setting.key.span, format!("`{name}`: {meaning}")));
            }
            let family = match setting.key.name.as_str() {
                "optimizer" => docs::OPTIMIZERS,
                "schedule" => docs::SCHEDULES,
                "data" => docs::SOURCES,
                "pretrain" => docs::PRETRAIN,
                _ => continue,
            };
            if let Value::Call(call) = &setting.value
                && let Some(found) = call_doc(family, call, offset)
            {
                return Some(found);
            }
        }
        for loss in &model.losses {
            if let Some(found) = call_doc(docs::LOSSES, &loss.call, offset) {
                return Some(found);
            }
        }
    }
    let mut calls = Vec::new();
    for flow in file.models.iter().flat_map(|m| &m.flows) {
        stage_calls(&flow.stages, &mut calls);
    }
    for block in &file.blocks {
        stage_calls(&block.body, &mut calls);
    }
    // On a layer's name the hover shows what the layer produced instead.
    calls
        .into_iter()
        .filter(|call| !contains(call.name.span, offset))
        .find_map(|call| call_doc(docs::LAYERS, call, offset))
}

/// The documentation of `call` (of `family`) when `offset` is on its name,
/// or of its argument when on an argument's name.
fn call_doc(family: &'static [Doc], call: &Call, offset: usize) -> Option<(Span, String)> {
    if !contains(call.span, offset) {
        return None;
    }
    let doc = docs::find(family, &call.name.name)?;
    if contains(call.name.span, offset) {
        return Some((call.name.span, doc.markdown(&[])));
    }
    let key = call.args.iter().filter_map(|a| a.key.as_ref()).find(|k| contains(k.span, offset))?;
    let (_, meaning) = doc.args.iter().find(|(a, _)| *a == key.name)?;
    Some((key.span, format!("`{}` of `{}`: {meaning}", key.name, doc.name)))
}

fn stage_calls<'a>(stages: &'a [Stage], calls: &mut Vec<&'a Call>) {
    for stage in stages {
        match stage {
            Stage::Layer { call, .. } => calls.push(call),
            Stage::Repeat { body, .. } => stage_calls(body, calls),
        }
    }
}

/// Every name's definition and uses, from the syntax tree alone (so they
/// work in a model that does not check yet).
fn symbols(file: &ast::File) -> Vec<Symbol> {
    let mut symbols = Vec::new();
    let mut uses = Uses::default();
    for block in &file.blocks {
        let mut inner = Uses::default();
        inner.stages(&block.body);
        for param in &block.params {
            symbols.push(Symbol {
                name: param.name.clone(),
                kind: SymbolKind::Param,
                definition: param.span,
                references: inner.values.iter().filter(|u| u.name == param.name).map(|u| u.span).collect(),
                model: None,
            });
        }
        uses.layers.extend(inner.layers);
    }
    for (index, model) in file.models.iter().enumerate() {
        let mut inner = Uses::default();
        for flow in &model.flows {
            match &flow.source {
                Source::Value(name) => inner.values.push(name.clone()),
                Source::Call(call) => inner.call(call),
            }
            inner.stages(&flow.stages);
        }
        for loss in &model.losses {
            inner.call(&loss.call);
        }
        let declared = model.inputs.iter().chain(&model.targets).map(|d| &d.name);
        let outputs = model.flows.iter().filter_map(|f| f.output.as_ref());
        for name in declared.chain(outputs) {
            let references = inner.values.iter().filter(|u| u.name == name.name).map(|u| u.span).collect();
            let definition = name.span;
            symbols.push(Symbol {
                name: name.name.clone(),
                kind: SymbolKind::Value,
                definition,
                references,
                model: Some(index),
            });
        }
        for label in &inner.labels_defined {
            let references = inner.labels.iter().filter(|u| u.name == label.name).map(|u| u.span).collect();
            let (name, definition) = (label.name.clone(), label.span);
            symbols.push(Symbol { name, kind: SymbolKind::Label, definition, references, model: Some(index) });
        }
        uses.layers.extend(inner.layers);
    }
    for block in &file.blocks {
        let references = uses.layers.iter().filter(|u| u.name == block.name.name).map(|u| u.span).collect();
        symbols.push(Symbol {
            name: block.name.name.clone(),
            kind: SymbolKind::Block,
            definition: block.name.span,
            references,
            model: None,
        });
    }
    symbols
}

/// Names used in a stretch of syntax, by what they may refer to.
#[derive(Default)]
struct Uses {
    values: Vec<Ident>,
    labels: Vec<Ident>,
    labels_defined: Vec<Ident>,
    /// Names of layer calls (a block's name where it is called).
    layers: Vec<Ident>,
}

impl Uses {
    fn stages(&mut self, stages: &[Stage]) {
        for stage in stages {
            match stage {
                Stage::Layer { call, label } => {
                    self.layers.push(call.name.clone());
                    self.labels_defined.extend(label.clone());
                    self.call(call);
                }
                Stage::Repeat { body, .. } => self.stages(body),
            }
        }
    }

    fn call(&mut self, call: &Call) {
        for arg in &call.args {
            let refers_to_label = arg.key.as_ref().is_some_and(|k| k.name == "tied" || k.name == "shared");
            self.value(&arg.value, refers_to_label);
        }
    }

    fn value(&mut self, value: &Value, label: bool) {
        match value {
            Value::Name(id) if label => self.labels.push(id.clone()),
            Value::Name(id) => self.values.push(id.clone()),
            Value::Call(call) => self.call(call),
            Value::List(items, _) => items.iter().for_each(|v| self.value(v, label)),
            Value::Number(_) | Value::String(..) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SOURCE: &str = "block conv3(f) { conv2d(f, kernel = 3, padding = 1) |> relu }
model m {
  input x: [3, 8, 8]
  target y: class(2)
  x |> conv3(4) |> repeat(2) { conv3(4) } |> flatten |> maxpool(2) |> dense(2, shared = nothing) => p
  loss = cross_entropy(p, y)
}
";

    fn spans_of(needle: &str) -> Vec<usize> {
        SOURCE.match_indices(needle).map(|(i, _)| i).collect()
    }

    #[test]
    fn blocks_and_their_parameters_resolve() {
        let analysis = Analysis::of(SOURCE);
        let calls = spans_of("conv3(");
        let block = analysis.symbol_at(calls[1] + 1).expect("a block call");
        assert_eq!((block.kind, block.definition.start), (SymbolKind::Block, calls[0]));
        assert_eq!(block.references.iter().map(|r| r.start).collect::<Vec<_>>(), calls[1..]);
        let param = analysis.symbol_at(spans_of("(f,")[0] + 1).expect("a parameter use");
        assert_eq!((param.kind, param.definition.start), (SymbolKind::Param, spans_of("(f)")[0] + 1));
        // A label that is not defined anywhere is not a symbol.
        assert!(analysis.symbol_at(spans_of("nothing")[0]).is_none());
    }

    #[test]
    fn a_model_with_an_error_still_shows_what_checked() {
        let analysis = Analysis::of(SOURCE);
        assert_eq!(analysis.diags.iter().filter(|d| d.is_error()).count(), 1, "{:?}", analysis.diags);
        let hints: Vec<String> = analysis.inlay_hints().into_iter().map(|(_, label)| label).collect();
        // Up to the `maxpool` that cannot take a vector.
        assert_eq!(hints, ["[4, 8, 8]", "[4, 8, 8]", "[256]"]);
        // Hover inside the block's body: the layer as applied, three times.
        let (_, text) = analysis.hover(spans_of("relu")[0]).expect("hover");
        assert!(text.starts_with("applied 3 times") && text.contains("`relu` → `[4, 8, 8]`"), "{text}");
    }
}
