//! `nnc fmt`: one canonical layout for `.nn` text.
//!
//! The file is parsed first (a file with a syntax error is left as it is),
//! then its tokens are laid out again: every model, block and statement on a
//! line of its own, two spaces per level of braces, continuation lines
//! (`|> …`, `=> …`) one level deeper, one space between tokens except around
//! brackets and before `,` and `:`. What a person chose and a canonical form
//! should keep is kept: a line break before `|>` or `=>` or inside a long
//! argument list, one blank line where there were any, settings written on
//! one line, a `train { … }` or `repeat` body written on one line, and every
//! comment, on its own line, at the end of one or (`/* … */`) inside one. Only whitespace
//! changes, so the formatted file means exactly what the original meant.

use std::collections::HashSet;

use crate::diag::Diag;
use crate::syntax;

/// The canonical layout of `source`, or its syntax error.
pub fn format_source(source: &str) -> Result<String, Diag> {
    let starts = syntax::statement_starts(source)?;
    let tokens = lex(source);
    Ok(Layout::new(&tokens, &starts).run())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Word,
    Number,
    Text,
    Punct,
    Comment,
}

#[derive(Debug)]
struct Token<'a> {
    text: &'a str,
    start: usize,
    kind: Kind,
    /// Line breaks in the whitespace just before this token.
    newlines_before: usize,
}

impl Token<'_> {
    fn is(&self, punct: &str) -> bool {
        self.kind == Kind::Punct && self.text == punct
    }
}

/// Splits text that parses into tokens and comments. The grammar already
/// accepted it, so every character is whitespace or part of a token.
fn lex(source: &str) -> Vec<Token<'_>> {
    let bytes = source.as_bytes();
    let mut tokens = Vec::new();
    let (mut i, mut newlines) = (0, 0);
    while i < bytes.len() {
        let c = bytes[i];
        if c.is_ascii_whitespace() {
            newlines += usize::from(c == b'\n');
            i += 1;
            continue;
        }
        let rest = &source[i..];
        let (kind, len) = if rest.starts_with("//") {
            let line = rest.find('\n').unwrap_or(rest.len());
            (Kind::Comment, rest[..line].trim_end().len())
        } else if rest.starts_with("/*") {
            (Kind::Comment, rest.find("*/").map_or(rest.len(), |end| end + 2))
        } else if c == b'"' {
            (Kind::Text, rest[1..].find('"').map_or(rest.len(), |end| end + 2))
        } else if rest.starts_with("|>") || rest.starts_with("=>") {
            (Kind::Punct, 2)
        } else if c == b'-' || c.is_ascii_digit() {
            let end = rest[1..].find(|ch: char| !(ch.is_ascii_alphanumeric() || "._+-".contains(ch)));
            (Kind::Number, end.map_or(rest.len(), |e| e + 1))
        } else if c.is_ascii_alphabetic() || c == b'_' {
            (Kind::Word, rest.find(|ch: char| !(ch.is_ascii_alphanumeric() || ch == '_')).unwrap_or(rest.len()))
        } else {
            (Kind::Punct, rest.chars().next().map_or(1, char::len_utf8))
        };
        tokens.push(Token { text: &rest[..len], start: i, kind, newlines_before: newlines });
        newlines = 0;
        i += len;
    }
    tokens
}

/// The state of laying tokens out again, one token at a time.
struct Layout<'a> {
    tokens: &'a [Token<'a>],
    statements: HashSet<usize>,
    settings: HashSet<usize>,
    /// For each `{` (by token index): whether its body takes several lines.
    multiline: Vec<bool>,
    out: String,
    /// Open braces: whether each takes several lines.
    braces: Vec<bool>,
    /// Open `(` and `[`.
    nest: usize,
    /// The last token written that is not a comment.
    prev: Option<&'a Token<'a>>,
    /// A comment ended the line: the next token starts a new one.
    line_ended: bool,
    /// A block comment was just written inside a line: a space follows it.
    after_block: bool,
}

impl<'a> Layout<'a> {
    fn new(tokens: &'a [Token<'a>], starts: &syntax::Starts) -> Self {
        Layout {
            tokens,
            statements: starts.statements.iter().copied().collect(),
            settings: starts.settings.iter().copied().collect(),
            multiline: multiline_braces(tokens),
            out: String::new(),
            braces: Vec::new(),
            nest: 0,
            prev: None,
            line_ended: false,
            after_block: false,
        }
    }

    fn run(mut self) -> String {
        for (i, token) in self.tokens.iter().enumerate() {
            if token.kind == Kind::Comment {
                self.comment(i, token);
            } else {
                self.token(i, token);
            }
        }
        let mut out = self.out.trim_end().to_string();
        if !out.is_empty() {
            out.push('\n');
        }
        out
    }

    fn depth(&self) -> usize {
        self.braces.len()
    }

    fn starts_statement(&self, token: &Token) -> bool {
        self.statements.contains(&token.start) || self.settings.contains(&token.start)
    }

    /// Ends the line (keeping one blank line if `blank`) and indents the next.
    fn newline(&mut self, blank: bool, indent: usize) {
        self.out.truncate(self.out.trim_end_matches(' ').len());
        self.out.push('\n');
        if blank {
            self.out.push('\n');
        }
        self.out.push_str(&"  ".repeat(indent));
    }

    fn comment(&mut self, i: usize, comment: &Token) {
        if self.out.is_empty() {
            // The file starts with it.
        } else if comment.newlines_before > 0 {
            let after_open = self.prev.is_some_and(|p| p.is("{"));
            let indent = self.indent_before(i);
            self.newline(comment.newlines_before > 1 && !after_open, indent);
        } else if !self.prev.is_some_and(|p| p.is("(") || p.is("[")) {
            self.out.push(' ');
        }
        self.out.push_str(comment.text);
        // A line comment runs to the end of its line; a block comment may
        // end inside one, and then the line goes on after it.
        let next_on_this_line = self.tokens.get(i + 1).is_some_and(|t| t.newlines_before == 0);
        self.line_ended = comment.text.starts_with("//") || !next_on_this_line;
        self.after_block = !self.line_ended;
    }

    /// The indent of the next token that is not a comment, were it to
    /// start a line: where a comment on its own line before it goes.
    fn indent_before(&self, i: usize) -> usize {
        let next = self.tokens[i..].iter().find(|t| t.kind != Kind::Comment);
        match next {
            None => 0,
            Some(t) if t.is("}") || self.starts_statement(t) => self.depth(),
            Some(_) if self.prev.is_none_or(|p| p.is("{")) => self.depth(),
            Some(_) => self.depth() + 1,
        }
    }

    fn token(&mut self, i: usize, token: &'a Token<'a>) {
        self.place(token);
        self.out.push_str(token.text);
        match token.text {
            "{" if token.kind == Kind::Punct => self.braces.push(self.multiline[i]),
            "(" | "[" if token.kind == Kind::Punct => self.nest += 1,
            ")" | "]" if token.kind == Kind::Punct => self.nest = self.nest.saturating_sub(1),
            _ => {}
        }
        self.prev = Some(token);
        self.line_ended = false;
        self.after_block = false;
    }

    /// Writes what goes between the previous token and `token`.
    fn place(&mut self, token: &Token) {
        let Some(prev) = self.prev else {
            if self.line_ended {
                self.newline(token.newlines_before > 1, 0);
            }
            return;
        };
        let open_multiline = self.braces.last().copied().unwrap_or(true);
        if token.is("}") {
            let multiline = self.braces.pop().unwrap_or(true);
            if multiline || self.line_ended {
                self.newline(false, self.depth());
            } else if !prev.is("{") {
                self.out.push(' ');
            }
        } else if self.starts_statement(token) && self.depth() == 0 {
            // Top-level items are one blank line apart.
            self.newline(!self.line_ended || token.newlines_before > 1, 0);
        } else if prev.is("{") && open_multiline {
            self.newline(false, self.depth());
        } else if self.statements.contains(&token.start)
            || (self.settings.contains(&token.start) && open_multiline && token.newlines_before > 0)
        {
            self.newline(token.newlines_before > 1, self.depth());
        } else if self.settings.contains(&token.start) {
            // Settings written on one line stay there, two spaces apart.
            self.out.push_str(if prev.is("{") { " " } else { "  " });
        } else if self.line_ended || (token.newlines_before > 0 && self.nest == 0 && is_pipe(token)) {
            self.newline(false, self.depth() + 1);
        } else if token.newlines_before > 0 && self.nest > 0 {
            // A long argument list broken over lines stays broken there.
            self.newline(false, self.depth() + 2);
        } else if !tight(prev, token) || (self.after_block && !closes(token)) {
            self.out.push(' ');
        }
    }
}

fn is_pipe(token: &Token) -> bool {
    token.is("|>") || token.is("=>")
}

fn closes(token: &Token) -> bool {
    token.kind == Kind::Punct && [")", "]", ","].contains(&token.text)
}

/// No space between these two tokens: inside brackets, before `,` and `:`,
/// and between a name and its `(` or `[`.
fn tight(prev: &Token, token: &Token) -> bool {
    let punct = |t: &Token, set: &[&str]| t.kind == Kind::Punct && set.contains(&t.text);
    punct(token, &[")", "]", ",", ":"])
        || punct(prev, &["(", "["])
        || (prev.kind == Kind::Word && punct(token, &["(", "["]))
}

/// For each token index, whether the `{` there opens a body of several
/// lines: a model's always; another's when it was written over several
/// lines or holds a comment.
fn multiline_braces(tokens: &[Token]) -> Vec<bool> {
    let mut multiline = vec![false; tokens.len()];
    let mut open: Vec<usize> = Vec::new();
    for (i, token) in tokens.iter().enumerate() {
        if token.is("{") {
            let is_model = i >= 2 && tokens[i - 2].kind == Kind::Word && tokens[i - 2].text == "model";
            multiline[i] = is_model;
            open.push(i);
        } else if token.is("}")
            && let Some(start) = open.pop()
        {
            let spread = tokens[start + 1..=i].iter().any(|t| t.newlines_before > 0 || t.kind == Kind::Comment);
            multiline[start] |= spread;
        }
    }
    multiline
}

#[cfg(test)]
mod tests {
    use super::format_source;

    #[test]
    fn lays_out_a_model_written_on_one_line() {
        let source = "model g { input x: [3]  target y : real[ 1 ] x|>dense( 1,bias=false )=>p loss=mse(p,y) train{epochs=2 batch = 4} }";
        let expected = "model g {\n  input x: [3]\n  target y: real[1]\n  x |> dense(1, bias = false) => p\n  loss = mse(p, y)\n  train { epochs = 2  batch = 4 }\n}\n";
        assert_eq!(format_source(source).unwrap(), expected);
        assert_eq!(format_source(expected).unwrap(), expected);
    }

    #[test]
    fn names_its_results_either_way() {
        let source = "model g {\n  input x: [3]\n  target y: real[1]\n  h   =x |> dense(4)\n  |> relu\n  p=h |> dense(1)\n  h |> dense(1) => q\n  loss = mse(p, y)\n}\n";
        let expected = "model g {\n  input x: [3]\n  target y: real[1]\n  h = x |> dense(4)\n    |> relu\n  p = h |> dense(1)\n  h |> dense(1) => q\n  loss = mse(p, y)\n}\n";
        assert_eq!(format_source(source).unwrap(), expected);
    }

    #[test]
    fn keeps_block_comments_where_they_are() {
        let source = "/* header,\n   two lines */\nmodel g {\n  input x: [3] /* raw */\n  target y: real[1]\n  x |> dense(  /* units */ 4)|>relu /* hidden */\n    |> dense(1 /* one */) => p\n  loss = mse(p, y)\n}\n";
        let expected = "/* header,\n   two lines */\nmodel g {\n  input x: [3] /* raw */\n  target y: real[1]\n  x |> dense(/* units */ 4) |> relu /* hidden */\n    |> dense(1 /* one */) => p\n  loss = mse(p, y)\n}\n";
        let formatted = format_source(source).unwrap();
        assert_eq!(formatted, expected, "\n{formatted}");
        assert_eq!(format_source(&formatted).unwrap(), formatted);
    }

    #[test]
    fn keeps_comments_line_breaks_and_blank_lines() {
        let source = "// header\n\n\n\nmodel g { // the model\n  input x: [3]\n\n\n  target y: real[1]\n  x\n      |> dense(4)   // hidden\n |> relu\n   // last layer\n   |> dense(1) => p\n  loss = mse(p, y)\n  train {\n optimizer = sgd(lr = 0.1)\n    epochs = 2 }\n}\n// end";
        let expected = "// header\n\nmodel g { // the model\n  input x: [3]\n\n  target y: real[1]\n  x\n    |> dense(4) // hidden\n    |> relu\n    // last layer\n    |> dense(1) => p\n  loss = mse(p, y)\n  train {\n    optimizer = sgd(lr = 0.1)\n    epochs = 2\n  }\n}\n// end\n";
        let formatted = format_source(source).unwrap();
        assert_eq!(formatted, expected, "\n{formatted}");
        assert_eq!(format_source(&formatted).unwrap(), formatted);
    }

    #[test]
    fn a_syntax_error_is_returned_not_formatted() {
        let err = format_source("model g { input x: [3 }").unwrap_err();
        assert_eq!(err.code, "nnc::syntax::unexpected");
    }
}
