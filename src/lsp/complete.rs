//! Completion: what may be written at the cursor, read from the text just
//! before it (it is usually incomplete, so the syntax tree cannot help).

use lsp_types::{CompletionItem, CompletionItemKind, Documentation, InsertTextFormat, MarkupContent, MarkupKind};

use crate::check::layers;
use crate::lsp::analysis::{Analysis, SymbolKind};
use crate::lsp::docs::{self, Doc};

/// What the text before the cursor asks for.
#[derive(Debug, PartialEq)]
enum Context {
    /// After `|>` or at the start of a `repeat` or block body: a layer.
    Layer,
    /// Inside `name(…)` of a family: its keyword arguments.
    Arguments(&'static [Doc], String),
    /// A `train { … }` setting.
    Setting,
    /// After `optimizer =`, `loss =`, …: a member of that family.
    Member(&'static [Doc]),
    /// Anything else: the names in scope and the statements.
    Names,
}

/// The family of calls written after `key =`.
fn family_after(key: &str) -> Option<&'static [Doc]> {
    Some(match key {
        "optimizer" => docs::OPTIMIZERS,
        "schedule" => docs::SCHEDULES,
        "data" => docs::SOURCES,
        "pretrain" => docs::PRETRAIN,
        "loss" => docs::LOSSES,
        _ => return None,
    })
}

fn is_word(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// The word that ends at byte `end` of `text`.
fn word_before(text: &str, end: usize) -> &str {
    let before = text[..end].trim_end();
    let start = before.char_indices().rev().find(|(_, c)| !is_word(*c)).map_or(0, |(i, c)| i + c.len_utf8());
    &before[start..]
}

fn context(text: &str, offset: usize) -> Context {
    let offset = offset.min(text.len());
    let Some(text) = text.get(..offset) else { return Context::Names };
    // The partial word being typed, then the text before it.
    let before = text.trim_end_matches(is_word).trim_end();
    if before.ends_with("|>") {
        return Context::Layer;
    }
    if before.ends_with('=') && !before.ends_with("=>") {
        let key = word_before(before, before.len() - 1);
        return family_after(key).map_or(Context::Names, Context::Member);
    }
    // The innermost bracket still open before the cursor.
    let mut depth = 0usize;
    for (i, c) in before.char_indices().rev() {
        match c {
            ')' | ']' | '}' => depth += 1,
            '(' | '[' | '{' if depth > 0 => depth -= 1,
            '(' => {
                let name = word_before(before, i);
                let key_end = before[..i].trim_end().len() - name.len();
                let ahead = before[..key_end].trim_end();
                let family = match ahead.strip_suffix('=') {
                    Some(rest) if !rest.ends_with('=') => family_after(word_before(rest, rest.len())),
                    _ => None,
                };
                return Context::Arguments(family.unwrap_or(docs::LAYERS), name.to_string());
            }
            '{' => {
                let opener = word_before(before, i);
                // Right after `repeat(3) {` or `block name(p) {` a pipeline starts.
                let body_starts = i + 1 == before.len() && before[..i].trim_end().ends_with(')');
                return if opener == "train" {
                    Context::Setting
                } else if body_starts {
                    Context::Layer
                } else {
                    Context::Names
                };
            }
            '[' => return Context::Names,
            _ => {}
        }
    }
    Context::Names
}

fn markdown(value: String) -> Option<Documentation> {
    Some(Documentation::MarkupContent(MarkupContent { kind: MarkupKind::Markdown, value }))
}

/// `conv2d(${1:filters}, kernel = ${2:kernel})`: the first required argument
/// positional, the others by name.
fn snippet(name: &str, required: &[&str]) -> String {
    if required.is_empty() {
        return name.to_string();
    }
    let args: Vec<String> = required
        .iter()
        .enumerate()
        .map(|(i, a)| if i == 0 { format!("${{1:{a}}}") } else { format!("{a} = ${{{}:{a}}}", i + 1) })
        .collect();
    format!("{name}({})", args.join(", "))
}

fn member(doc: &Doc, kind: CompletionItemKind, required: &[&str], insert: String) -> CompletionItem {
    CompletionItem {
        label: doc.name.to_string(),
        kind: Some(kind),
        detail: Some(doc.signature(required)),
        documentation: markdown(doc.markdown(required)),
        insert_text: Some(insert),
        insert_text_format: Some(InsertTextFormat::SNIPPET),
        ..Default::default()
    }
}

fn keyword(label: &str, detail: &str, insert: String) -> CompletionItem {
    CompletionItem {
        label: label.to_string(),
        kind: Some(CompletionItemKind::PROPERTY),
        detail: Some(detail.to_string()),
        insert_text: Some(insert),
        ..Default::default()
    }
}

/// The completions at `offset` of `text`.
pub fn complete(analysis: &Analysis, text: &str, offset: usize) -> Vec<CompletionItem> {
    match context(text, offset) {
        Context::Layer => {
            let mut items: Vec<CompletionItem> = docs::LAYERS
                .iter()
                .map(|doc| {
                    let required = layers::find(doc.name).map_or(&[][..], |s| s.required);
                    member(doc, CompletionItemKind::FUNCTION, required, snippet(doc.name, required))
                })
                .collect();
            for block in analysis.file.iter().flat_map(|f| &f.blocks) {
                let params: Vec<&str> = block.params.iter().map(|p| p.name.as_str()).collect();
                items.push(CompletionItem {
                    label: block.name.name.clone(),
                    kind: Some(CompletionItemKind::MODULE),
                    detail: Some(format!("block {}({})", block.name.name, params.join(", "))),
                    insert_text: Some(snippet(&block.name.name, &params)),
                    insert_text_format: Some(InsertTextFormat::SNIPPET),
                    ..Default::default()
                });
            }
            items
        }
        Context::Arguments(family, name) => match docs::find(family, &name) {
            Some(doc) => doc.args.iter().map(|(arg, meaning)| keyword(arg, meaning, format!("{arg} = "))).collect(),
            None => Vec::new(),
        },
        Context::Setting => {
            docs::SETTINGS.iter().map(|(key, meaning)| keyword(key, meaning, format!("{key} = "))).collect()
        }
        Context::Member(family) => family
            .iter()
            .map(|doc| member(doc, CompletionItemKind::FUNCTION, &[], format!("{}($0)", doc.name)))
            .collect(),
        Context::Names => {
            let mut items: Vec<CompletionItem> = analysis
                .symbols
                .iter()
                .filter(|s| s.kind == SymbolKind::Value)
                .map(|s| CompletionItem {
                    label: s.name.clone(),
                    kind: Some(CompletionItemKind::VARIABLE),
                    ..Default::default()
                })
                .collect();
            items.sort_by(|a, b| a.label.cmp(&b.label));
            items.dedup_by(|a, b| a.label == b.label);
            for (word, what) in [
                ("model", "model NAME { … }"),
                ("block", "block NAME(PARAMS) { … }"),
                ("input", "input NAME: [SHAPE]"),
                ("target", "target NAME: class(K) | real[N] | binary[N]"),
                ("loss", "loss = cross_entropy(PREDICTION, TARGET)"),
                ("train", "train { optimizer = … epochs = … }"),
                ("repeat", "repeat(N) { LAYERS }"),
            ] {
                items.push(CompletionItem {
                    label: word.to_string(),
                    kind: Some(CompletionItemKind::KEYWORD),
                    detail: Some(what.to_string()),
                    ..Default::default()
                });
            }
            items
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at_end(text: &str) -> Context {
        context(text, text.len())
    }

    #[test]
    fn reads_the_context_before_the_cursor() {
        assert_eq!(at_end("model m {\n  x |> "), Context::Layer);
        assert_eq!(at_end("model m {\n  x |> con"), Context::Layer);
        assert_eq!(at_end("  x |> repeat(2) {"), Context::Layer);
        assert_eq!(at_end("  x |> conv2d(6, "), Context::Arguments(docs::LAYERS, "conv2d".into()));
        assert_eq!(at_end("  x |> conv2d(6, kernel = 5, st"), Context::Arguments(docs::LAYERS, "conv2d".into()));
        assert_eq!(at_end("  train { optimizer = sgd(lr = 0.1, "), Context::Arguments(docs::OPTIMIZERS, "sgd".into()));
        assert_eq!(at_end("  train { epochs = 3 "), Context::Setting);
        assert_eq!(at_end("  train {\n    optimizer = "), Context::Member(docs::OPTIMIZERS));
        assert_eq!(at_end("  loss = "), Context::Member(docs::LOSSES));
        assert_eq!(at_end("model m {\n  "), Context::Names);
        assert_eq!(at_end("  x |> dense(3) => "), Context::Names);
    }
}
