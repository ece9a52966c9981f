//! Diagnostics: the one type every stage reports user mistakes with.
//!
//! A `Diag` has a stable code (`nnc::<stage>::<what>`), a primary span with a
//! label saying what was found and what was expected, optional secondary
//! labels (the line that produced a shape), and a help line with the fix.
//! Stages collect diagnostics and keep going, so one run reports every
//! independent mistake. The wording lives in `messages.rs`.

pub mod messages;

pub use crate::ast::Span;

use std::fmt;

use miette::{Diagnostic, GraphicalReportHandler, GraphicalTheme, LabeledSpan, NamedSource};
use serde::Serialize;

/// A value flowing into a layer, as checking tracks it and shape messages
/// show it: its shape and how that shape came about.
#[derive(Debug, Clone)]
pub struct Incoming {
    pub shape: crate::shape::Shape,
    /// How the shape came about, e.g. `(28 + 2·0 − 5)/1 + 1 = 24 → maxpool 24/2 = 12`.
    pub why: String,
    /// The line that produced this value.
    pub producer: Span,
    /// Integer token ids (only `embedding` accepts them).
    pub tokens: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Error,
    Warning,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Label {
    pub span: Span,
    pub text: String,
}

/// One user-facing problem found in a model or its data.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Diag {
    pub code: &'static str,
    pub severity: Severity,
    pub message: String,
    pub primary: Label,
    pub secondary: Vec<Label>,
    pub help: Option<String>,
}

impl Diag {
    pub fn error(code: &'static str, message: impl Into<String>, span: Span, label: impl Into<String>) -> Self {
        Diag {
            code,
            severity: Severity::Error,
            message: message.into(),
            primary: Label { span, text: label.into() },
            secondary: Vec::new(),
            help: None,
        }
    }

    pub fn warning(code: &'static str, message: impl Into<String>, span: Span, label: impl Into<String>) -> Self {
        Diag { severity: Severity::Warning, ..Diag::error(code, message, span, label) }
    }

    pub fn with_help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }

    /// Adds a secondary label, e.g. on the layer that produced a shape.
    pub fn with_note(mut self, span: Span, text: impl Into<String>) -> Self {
        self.secondary.push(Label { span, text: text.into() });
        self
    }

    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }
}

impl fmt::Display for Diag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Diag {}

impl Diagnostic for Diag {
    fn code<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        Some(Box::new(self.code))
    }

    fn severity(&self) -> Option<miette::Severity> {
        Some(match self.severity {
            Severity::Error => miette::Severity::Error,
            Severity::Warning => miette::Severity::Warning,
        })
    }

    fn help<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        self.help.as_ref().map(|h| Box::new(h) as Box<dyn fmt::Display>)
    }

    fn labels(&self) -> Option<Box<dyn Iterator<Item = LabeledSpan> + '_>> {
        let primary = LabeledSpan::new_primary_with_span(Some(self.primary.text.clone()), self.primary.span);
        let secondary = self.secondary.iter().map(|l| LabeledSpan::new_with_span(Some(l.text.clone()), l.span));
        Some(Box::new(std::iter::once(primary).chain(secondary)))
    }
}

/// Renders diagnostics as text: without colour for files and snapshots, with
/// colour for a terminal.
pub fn render(diags: &[Diag], file_name: &str, source: &str, color: bool, width: usize) -> String {
    let theme = if color { GraphicalTheme::unicode() } else { GraphicalTheme::unicode_nocolor() };
    let handler = GraphicalReportHandler::new_themed(theme).with_width(width);
    let mut out = String::new();
    for diag in diags {
        let (source, diag) = excerpt(source, diag);
        let report = miette::Report::new(diag).with_source_code(NamedSource::new(file_name, source));
        // Rendering into a String cannot fail.
        let _ = handler.render_report(&mut out, report.as_ref());
        out.push('\n');
    }
    out
}

/// Lines longer than this are shown as an excerpt around what a diagnostic
/// points at, so a huge line never floods the terminal.
const SHOWN_LINE: usize = 200;

/// The source a report is drawn from: the file, or an excerpt of it whose
/// header still names the file's own column.
struct Excerpt {
    text: String,
    /// Kept pieces: (their start in `text`, their column in the file).
    pieces: Vec<(usize, usize)>,
}

impl miette::SourceCode for Excerpt {
    fn read_span<'a>(
        &'a self,
        span: &miette::SourceSpan,
        before: usize,
        after: usize,
    ) -> Result<Box<dyn miette::SpanContents<'a> + 'a>, miette::MietteError> {
        let contents = self.text.as_str().read_span(span, before, after)?;
        // Without context lines miette reads the header's position; give
        // the column the span has in the file, not in the excerpt.
        let column = match self.pieces.iter().rev().find(|(at, _)| *at <= span.offset()) {
            Some((at, column)) if before == 0 && after == 0 => column + span.offset() - at,
            _ => contents.column(),
        };
        Ok(Box::new(miette::MietteSpanContents::new(
            contents.data(),
            *contents.span(),
            contents.line(),
            column,
            contents.line_count(),
        )))
    }
}

/// `source` with every line longer than `SHOWN_LINE` cut to an excerpt (the
/// part around the first label on it), and `diag` with its spans moved to
/// match. Short sources come back unchanged.
fn excerpt(source: &str, diag: &Diag) -> (Excerpt, Diag) {
    let mut diag = diag.clone();
    if source.lines().all(|line| line.len() <= SHOWN_LINE) {
        return (Excerpt { text: source.to_string(), pieces: vec![] }, diag);
    }
    let spans: Vec<Span> = std::iter::once(diag.primary.span).chain(diag.secondary.iter().map(|l| l.span)).collect();
    // Kept pieces of the source: (old start, old end, new start).
    let mut kept: Vec<(usize, usize, usize)> = Vec::new();
    let mut pieces = Vec::new();
    let mut out = String::new();
    let mut start = 0;
    for line in source.split_inclusive('\n') {
        let end = start + line.len();
        let (from, to) = if line.len() <= SHOWN_LINE {
            (start, end)
        } else {
            let at = spans.iter().map(|s| s.start).filter(|&s| s >= start && s < end).min().unwrap_or(start);
            let from = floor_char(source, at.saturating_sub(SHOWN_LINE / 4).max(start));
            (from, floor_char(source, (from + SHOWN_LINE).min(end)))
        };
        if from > start {
            out.push('…');
        }
        kept.push((from, to, out.len()));
        pieces.push((out.len(), from - start));
        out.push_str(&source[from..to]);
        if to < end {
            out.push_str(if line.ends_with('\n') { "…\n" } else { "…" });
        }
        start = end;
    }
    let map = |offset: usize| {
        let piece = kept.iter().rev().find(|(from, _, _)| *from <= offset).copied().unwrap_or((0, 0, 0));
        piece.2 + offset.min(piece.1) - piece.0
    };
    let moved = |span: Span| {
        let start = map(span.start);
        Span::new(start, map(span.end).max(start))
    };
    diag.primary.span = moved(diag.primary.span);
    for label in &mut diag.secondary {
        label.span = moved(label.span);
    }
    (Excerpt { text: out, pieces }, diag)
}

/// The largest char boundary of `text` at or before `offset`.
fn floor_char(text: &str, offset: usize) -> usize {
    (0..=offset.min(text.len())).rev().find(|&i| text.is_char_boundary(i)).unwrap_or(0)
}

/// A diagnostic for editors: positions as 1-based line and column.
#[derive(Debug, Serialize)]
pub struct JsonDiag<'a> {
    pub code: &'a str,
    pub severity: Severity,
    pub message: &'a str,
    pub file: &'a str,
    pub line: usize,
    pub column: usize,
    pub span: Span,
    pub label: &'a str,
    pub notes: &'a [Label],
    pub help: Option<&'a str>,
}

/// Serialises diagnostics as a JSON array.
pub fn to_json(diags: &[Diag], file_name: &str, source: &str) -> String {
    let items: Vec<JsonDiag> = diags
        .iter()
        .map(|d| {
            let (line, column) = line_col(source, d.primary.span.start);
            JsonDiag {
                code: d.code,
                severity: d.severity,
                message: &d.message,
                file: file_name,
                line,
                column,
                span: d.primary.span,
                label: &d.primary.text,
                notes: &d.secondary,
                help: d.help.as_deref(),
            }
        })
        .collect();
    serde_json::to_string_pretty(&items).unwrap_or_else(|_| "[]".to_string())
}

/// 1-based line and column (in characters) of a byte offset.
pub fn line_col(source: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(source.len());
    let before = source.get(..offset).unwrap_or(source);
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

/// The closest known name to `name`, if close enough to be a likely typo.
pub fn did_you_mean<'a>(name: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    candidates
        .into_iter()
        .map(|c| (strsim::damerau_levenshtein(name, c), c))
        .filter(|(d, c)| *d <= 2.max(c.len() / 3) && *d < c.len())
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}
