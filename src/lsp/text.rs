//! Positions: byte offsets (what spans hold) ↔ LSP positions (line and
//! UTF-16 code unit, what editors send), so a line with `×` or an emoji in
//! a comment still puts every range under the right characters.

use lsp_types::{Position, Range};

use crate::diag::Span;

/// Where each line of a text starts.
pub struct LineIndex {
    starts: Vec<usize>,
}

impl LineIndex {
    pub fn new(text: &str) -> Self {
        let mut starts = vec![0];
        starts.extend(text.match_indices('\n').map(|(i, _)| i + 1));
        LineIndex { starts }
    }

    pub fn position(&self, text: &str, offset: usize) -> Position {
        let offset = offset.min(text.len());
        let line = self.starts.partition_point(|&s| s <= offset) - 1;
        let start = self.starts[line];
        let prefix = text.get(start..offset).unwrap_or("");
        let character = prefix.chars().map(char::len_utf16).sum::<usize>();
        Position { line: line as u32, character: character as u32 }
    }

    pub fn range(&self, text: &str, span: Span) -> Range {
        Range { start: self.position(text, span.start), end: self.position(text, span.end) }
    }

    /// The byte offset of `position`, clamped to its line (and the text).
    pub fn offset(&self, text: &str, position: Position) -> usize {
        let Some(&start) = self.starts.get(position.line as usize) else { return text.len() };
        let end = self.starts.get(position.line as usize + 1).map_or(text.len(), |&next| next - 1);
        let mut units = 0;
        for (i, c) in text[start..end].char_indices() {
            if units >= position.character as usize {
                return start + i;
            }
            units += c.len_utf16();
        }
        end
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utf16_columns_round_trip() {
        let text = "// 8×8 😀 pixels\nx |> dense(3)\n";
        let index = LineIndex::new(text);
        let dense = text.find("dense").unwrap();
        assert_eq!(index.position(text, dense), Position { line: 1, character: 5 });
        let after_emoji = text.find(" pixels").unwrap();
        // "// 8×8 " is 7 units, the emoji 2 more.
        assert_eq!(index.position(text, after_emoji), Position { line: 0, character: 9 });
        assert_eq!(index.offset(text, Position { line: 0, character: 9 }), after_emoji);
        assert_eq!(index.offset(text, Position { line: 1, character: 5 }), dense);
        assert_eq!(index.offset(text, Position { line: 9, character: 0 }), text.len());
        assert_eq!(index.offset(text, Position { line: 0, character: 99 }), text.find('\n').unwrap());
    }
}
