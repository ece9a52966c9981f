//! `nnc lsp`: a language server over standard input and output. Every
//! change re-runs the checker on the document and publishes what `nnc
//! check` would say; hover, inlay hints, go-to-definition, references,
//! completion, document symbols and formatting read the same analysis.

mod analysis;
mod complete;
pub mod docs;
mod text;

use std::collections::HashMap;

use lsp_server::{Connection, ErrorCode, Message, Notification, Request, Response};
use lsp_types::notification::{
    DidChangeTextDocument, DidCloseTextDocument, DidOpenTextDocument, DidSaveTextDocument,
    Notification as NotificationTrait, PublishDiagnostics,
};
use lsp_types::request::{
    Completion, DocumentSymbolRequest, Formatting, GotoDefinition, HoverRequest, InlayHintRequest, References,
    Request as RequestTrait,
};
use lsp_types::{
    CompletionOptions, Diagnostic, DiagnosticRelatedInformation, DiagnosticSeverity, DocumentSymbol,
    DocumentSymbolResponse, GotoDefinitionResponse, Hover, HoverContents, InlayHint, InlayHintKind, InlayHintLabel,
    Location, MarkupContent, MarkupKind, NumberOrString, OneOf, PublishDiagnosticsParams, ServerCapabilities,
    SymbolKind, TextDocumentSyncCapability, TextDocumentSyncKind, TextEdit, Uri,
};

pub use analysis::Analysis;
use text::LineIndex;

use crate::diag::{Diag, Severity, Span};

/// One open document and what is known about its current text.
struct Document {
    text: String,
    lines: LineIndex,
    analysis: Analysis,
}

impl Document {
    fn new(text: String) -> Self {
        let analysis = if text.len() as u64 > crate::pipeline::MODEL_FILE_LIMIT {
            Analysis::too_large(crate::pipeline::MODEL_FILE_LIMIT)
        } else {
            Analysis::of(&text)
        };
        Document { lines: LineIndex::new(&text), text, analysis }
    }

    fn range(&self, span: Span) -> lsp_types::Range {
        self.lines.range(&self.text, span)
    }
}

/// Serves one client until it asks the server to exit.
pub fn serve() -> Result<(), String> {
    let (connection, io_threads) = Connection::stdio();
    let capabilities = ServerCapabilities {
        text_document_sync: Some(TextDocumentSyncCapability::Kind(TextDocumentSyncKind::FULL)),
        hover_provider: Some(lsp_types::HoverProviderCapability::Simple(true)),
        definition_provider: Some(OneOf::Left(true)),
        references_provider: Some(OneOf::Left(true)),
        document_symbol_provider: Some(OneOf::Left(true)),
        document_formatting_provider: Some(OneOf::Left(true)),
        inlay_hint_provider: Some(OneOf::Left(true)),
        completion_provider: Some(CompletionOptions {
            trigger_characters: Some(vec![">".into(), "(".into(), ",".into(), "{".into(), "=".into()]),
            ..Default::default()
        }),
        ..Default::default()
    };
    let capabilities = serde_json::to_value(capabilities).map_err(|e| e.to_string())?;
    connection.initialize(capabilities).map_err(|e| format!("the editor did not start the session: {e}"))?;
    let mut server = Server { connection: &connection, documents: HashMap::new() };
    server.run()?;
    drop(connection);
    io_threads.join().map_err(|e| format!("the connection to the editor failed: {e}"))
}

struct Server<'a> {
    connection: &'a Connection,
    documents: HashMap<String, Document>,
}

impl Server<'_> {
    fn run(&mut self) -> Result<(), String> {
        for message in &self.connection.receiver {
            match message {
                Message::Request(request) => {
                    if self.connection.handle_shutdown(&request).map_err(|e| e.to_string())? {
                        return Ok(());
                    }
                    let id = request.id.clone();
                    let response = match self.request(request) {
                        Ok(result) => Response::new_ok(id, result),
                        Err((code, message)) => Response::new_err(id, code as i32, message),
                    };
                    self.send(Message::Response(response))?;
                }
                Message::Notification(notification) => self.notification(notification)?,
                Message::Response(_) => {}
            }
        }
        Ok(())
    }

    fn send(&self, message: Message) -> Result<(), String> {
        self.connection.sender.send(message).map_err(|e| format!("the editor went away: {e}"))
    }

    fn notification(&mut self, notification: Notification) -> Result<(), String> {
        let uri = match notification.method.as_str() {
            DidOpenTextDocument::METHOD => {
                let Ok(p) = notification.extract::<lsp_types::DidOpenTextDocumentParams>(DidOpenTextDocument::METHOD)
                else {
                    return Ok(());
                };
                self.documents.insert(p.text_document.uri.as_str().to_string(), Document::new(p.text_document.text));
                p.text_document.uri
            }
            DidChangeTextDocument::METHOD => {
                let Ok(p) =
                    notification.extract::<lsp_types::DidChangeTextDocumentParams>(DidChangeTextDocument::METHOD)
                else {
                    return Ok(());
                };
                // Full synchronisation: the last change holds the whole text.
                let Some(change) = p.content_changes.into_iter().last() else { return Ok(()) };
                self.documents.insert(p.text_document.uri.as_str().to_string(), Document::new(change.text));
                p.text_document.uri
            }
            DidSaveTextDocument::METHOD => {
                let Ok(p) = notification.extract::<lsp_types::DidSaveTextDocumentParams>(DidSaveTextDocument::METHOD)
                else {
                    return Ok(());
                };
                if let Some(text) = p.text {
                    self.documents.insert(p.text_document.uri.as_str().to_string(), Document::new(text));
                }
                p.text_document.uri
            }
            DidCloseTextDocument::METHOD => {
                let Ok(p) = notification.extract::<lsp_types::DidCloseTextDocumentParams>(DidCloseTextDocument::METHOD)
                else {
                    return Ok(());
                };
                self.documents.remove(p.text_document.uri.as_str());
                // A closed file's diagnostics are cleared.
                return self.publish(p.text_document.uri, Vec::new());
            }
            _ => return Ok(()),
        };
        let diagnostics = match self.documents.get(uri.as_str()) {
            Some(doc) => doc.analysis.diags.iter().map(|d| diagnostic(doc, &uri, d)).collect(),
            None => Vec::new(),
        };
        self.publish(uri, diagnostics)
    }

    fn publish(&self, uri: Uri, diagnostics: Vec<Diagnostic>) -> Result<(), String> {
        let params = PublishDiagnosticsParams { uri, diagnostics, version: None };
        self.send(Message::Notification(Notification::new(PublishDiagnostics::METHOD.to_string(), params)))
    }

    /// The open document a request points into, and the byte offset it points at.
    fn at(&self, position: &lsp_types::TextDocumentPositionParams) -> Option<(&Document, usize)> {
        let doc = self.documents.get(position.text_document.uri.as_str())?;
        Some((doc, doc.lines.offset(&doc.text, position.position)))
    }

    fn request(&self, request: Request) -> Result<serde_json::Value, (ErrorCode, String)> {
        use serde_json::Value::Null;
        let bad = |e: lsp_server::ExtractError<Request>| (ErrorCode::InvalidParams, format!("{e:?}"));
        let to_json =
            |v: Result<serde_json::Value, serde_json::Error>| v.map_err(|e| (ErrorCode::InternalError, e.to_string()));
        match request.method.as_str() {
            HoverRequest::METHOD => {
                let p = request.extract::<lsp_types::HoverParams>(HoverRequest::METHOD).map_err(bad)?.1;
                let Some((doc, offset)) = self.at(&p.text_document_position_params) else { return Ok(Null) };
                let hover = doc.analysis.hover(offset).map(|(span, value)| Hover {
                    contents: HoverContents::Markup(MarkupContent { kind: MarkupKind::Markdown, value }),
                    range: Some(doc.range(span)),
                });
                to_json(serde_json::to_value(hover))
            }
            GotoDefinition::METHOD => {
                let p = request.extract::<lsp_types::GotoDefinitionParams>(GotoDefinition::METHOD).map_err(bad)?.1;
                let Some((doc, offset)) = self.at(&p.text_document_position_params) else { return Ok(Null) };
                let uri = &p.text_document_position_params.text_document.uri;
                let found = doc.analysis.symbol_at(offset).map(|s| {
                    GotoDefinitionResponse::Scalar(Location { uri: uri.clone(), range: doc.range(s.definition) })
                });
                to_json(serde_json::to_value(found))
            }
            References::METHOD => {
                let p = request.extract::<lsp_types::ReferenceParams>(References::METHOD).map_err(bad)?.1;
                let Some((doc, offset)) = self.at(&p.text_document_position) else { return Ok(Null) };
                let uri = &p.text_document_position.text_document.uri;
                let locations: Option<Vec<Location>> = doc.analysis.symbol_at(offset).map(|s| {
                    let declaration = p.context.include_declaration.then_some(s.definition);
                    declaration
                        .into_iter()
                        .chain(s.references.iter().copied())
                        .map(|span| Location { uri: uri.clone(), range: doc.range(span) })
                        .collect()
                });
                to_json(serde_json::to_value(locations))
            }
            Completion::METHOD => {
                let p = request.extract::<lsp_types::CompletionParams>(Completion::METHOD).map_err(bad)?.1;
                let Some((doc, offset)) = self.at(&p.text_document_position) else { return Ok(Null) };
                to_json(serde_json::to_value(complete::complete(&doc.analysis, &doc.text, offset)))
            }
            InlayHintRequest::METHOD => {
                let p = request.extract::<lsp_types::InlayHintParams>(InlayHintRequest::METHOD).map_err(bad)?.1;
                let Some(doc) = self.documents.get(p.text_document.uri.as_str()) else {
                    return Ok(Null);
                };
                let hints: Vec<InlayHint> = doc
                    .analysis
                    .inlay_hints()
                    .into_iter()
                    .map(|(offset, label)| InlayHint {
                        position: doc.lines.position(&doc.text, offset),
                        label: InlayHintLabel::String(label),
                        kind: Some(InlayHintKind::TYPE),
                        text_edits: None,
                        tooltip: None,
                        padding_left: Some(true),
                        padding_right: None,
                        data: None,
                    })
                    .filter(|h| p.range.start <= h.position && h.position <= p.range.end)
                    .collect();
                to_json(serde_json::to_value(hints))
            }
            DocumentSymbolRequest::METHOD => {
                let p =
                    request.extract::<lsp_types::DocumentSymbolParams>(DocumentSymbolRequest::METHOD).map_err(bad)?.1;
                let Some(doc) = self.documents.get(p.text_document.uri.as_str()) else {
                    return Ok(Null);
                };
                to_json(serde_json::to_value(DocumentSymbolResponse::Nested(document_symbols(doc))))
            }
            Formatting::METHOD => {
                let p = request.extract::<lsp_types::DocumentFormattingParams>(Formatting::METHOD).map_err(bad)?.1;
                let Some(doc) = self.documents.get(p.text_document.uri.as_str()) else {
                    return Ok(Null);
                };
                // A file that does not parse is left as it is (its syntax error is already shown).
                let edits = match crate::format::format_source(&doc.text) {
                    Ok(formatted) if formatted != doc.text => {
                        vec![TextEdit { range: doc.range(Span::new(0, doc.text.len())), new_text: formatted }]
                    }
                    _ => Vec::new(),
                };
                to_json(serde_json::to_value(edits))
            }
            method => Err((ErrorCode::MethodNotFound, format!("nnc lsp does not handle `{method}`"))),
        }
    }
}

/// A checker diagnostic as the editor shows it: the message, then the
/// label and the help; secondary labels as related information.
fn diagnostic(doc: &Document, uri: &Uri, diag: &Diag) -> Diagnostic {
    let mut message = format!("{}\n{}", diag.message, diag.primary.text);
    if let Some(help) = &diag.help {
        message += &format!("\nhelp: {help}");
    }
    let related: Vec<DiagnosticRelatedInformation> = diag
        .secondary
        .iter()
        .map(|label| DiagnosticRelatedInformation {
            location: Location { uri: uri.clone(), range: doc.range(label.span) },
            message: label.text.clone(),
        })
        .collect();
    Diagnostic {
        range: doc.range(diag.primary.span),
        severity: Some(match diag.severity {
            Severity::Error => DiagnosticSeverity::ERROR,
            Severity::Warning => DiagnosticSeverity::WARNING,
        }),
        code: Some(NumberOrString::String(diag.code.to_string())),
        source: Some("nnc".to_string()),
        message,
        related_information: (!related.is_empty()).then_some(related),
        ..Default::default()
    }
}

/// Models with their inputs, targets and named values; blocks.
#[allow(deprecated)] // `DocumentSymbol::deprecated` must still be written.
fn document_symbols(doc: &Document) -> Vec<DocumentSymbol> {
    let Some(file) = &doc.analysis.file else { return Vec::new() };
    let symbol =
        |name: &str, detail: Option<String>, kind: SymbolKind, span: Span, name_span: Span, children| DocumentSymbol {
            name: name.to_string(),
            detail,
            kind,
            tags: None,
            deprecated: None,
            range: doc.range(span),
            selection_range: doc.range(name_span),
            children,
        };
    let mut symbols = Vec::new();
    for (index, model) in file.models.iter().enumerate() {
        let checked = doc.analysis.models.get(index);
        let children: Vec<DocumentSymbol> = checked
            .map(|m| {
                m.values
                    .iter()
                    .map(|v| {
                        let shape = crate::shape::shape_text(&m.shape_of(v.value));
                        symbol(&v.name, Some(shape), SymbolKind::VARIABLE, v.span, v.span, None)
                    })
                    .collect()
            })
            .unwrap_or_default();
        symbols.push(symbol(&model.name.name, None, SymbolKind::MODULE, model.span, model.name.span, Some(children)));
    }
    for block in &file.blocks {
        symbols.push(symbol(&block.name.name, None, SymbolKind::FUNCTION, block.span, block.name.span, None));
    }
    symbols
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::{Analysis, complete};

    const MODELS: [&str; 3] = [
        include_str!("../../models/lenet.nn"),
        include_str!("../../models/autoencoder.nn"),
        include_str!("../../models/vgg16.nn"),
    ];
    const PIECES: [&str; 12] = ["|>", "=>", "(", ")", "{", "}", "[", "=", ",", "conv2d(", "😀", "\n"];

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

        /// Text being typed is mostly broken: every request at every place
        /// of a mangled model answers without panicking.
        #[test]
        fn any_text_and_any_position_is_answered(model in 0usize..3, edits in prop::collection::vec((any::<prop::sample::Index>(), 0usize..12, 0usize..8), 1..6)) {
            let mut text = MODELS[model].to_string();
            for (at, piece, cut) in edits {
                let mut i = at.index(text.len() + 1);
                while !text.is_char_boundary(i) {
                    i -= 1;
                }
                let mut end = (i + cut).min(text.len());
                while !text.is_char_boundary(end) {
                    end += 1;
                }
                text.replace_range(i..end, PIECES[piece]);
            }
            let analysis = Analysis::of(&text);
            analysis.inlay_hints();
            let _ = crate::format::format_source(&text);
            for offset in (0..=text.len()).filter(|&i| text.is_char_boundary(i)).step_by(7) {
                analysis.hover(offset);
                analysis.symbol_at(offset);
                complete::complete(&analysis, &text, offset);
            }
        }
    }
}
