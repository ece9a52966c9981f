//! Parsing: `.nn` text → `ast::File`, or syntax diagnostics in plain words.
//!
//! The grammar is `grammar/nn.pest`. This module only builds the AST from
//! pest's pairs; it does not check meaning.

use pest::Parser;
use pest::iterators::Pair;
use pest_derive::Parser;

use crate::ast::*;
use crate::diag::{Diag, Span, messages};

#[derive(Parser)]
#[grammar = "../grammar/nn.pest"]
struct NnParser;

/// Deeper bracket nesting than this is rejected before parsing, so that no
/// input can exhaust the stack of the recursive-descent parser.
const MAX_NESTING: usize = 64;

/// Parses a whole file. On a syntax error, returns the one diagnostic for the
/// first place where the text stops making sense.
pub fn parse(source: &str) -> Result<File, Diag> {
    check_nesting(source)?;
    pest::set_error_detail(true);
    let mut pairs = NnParser::parse(Rule::file, source).map_err(|e| syntax_error(source, &e))?;
    let mut file = File::default();
    let Some(root) = pairs.next() else { return Ok(file) };
    for item in root.into_inner() {
        match item.as_rule() {
            Rule::model => file.models.push(build_model(item)),
            Rule::block_def => file.blocks.push(build_block(item)),
            _ => {}
        }
    }
    Ok(file)
}

/// Where lines begin in a file's canonical layout: the byte offsets at which
/// each model, block, statement and `train` setting starts. The formatter
/// lays out tokens; the grammar alone knows where a statement begins.
#[derive(Debug, Default)]
pub struct Starts {
    pub statements: Vec<usize>,
    pub settings: Vec<usize>,
}

/// The statement starts of a file that parses; its syntax error otherwise.
pub fn statement_starts(source: &str) -> Result<Starts, Diag> {
    check_nesting(source)?;
    pest::set_error_detail(true);
    let pairs = NnParser::parse(Rule::file, source).map_err(|e| syntax_error(source, &e))?;
    let mut starts = Starts::default();
    let mut stack: Vec<Pair<Rule>> = pairs.collect();
    while let Some(pair) = stack.pop() {
        match pair.as_rule() {
            Rule::model
            | Rule::block_def
            | Rule::input_decl
            | Rule::target_decl
            | Rule::loss_decl
            | Rule::train_block
            | Rule::flow => starts.statements.push(pair.as_span().start()),
            Rule::setting => starts.settings.push(pair.as_span().start()),
            _ => {}
        }
        stack.extend(pair.into_inner());
    }
    starts.statements.sort_unstable();
    starts.settings.sort_unstable();
    Ok(starts)
}

fn check_nesting(source: &str) -> Result<(), Diag> {
    let mut depth = 0usize;
    for (i, c) in source.char_indices() {
        match c {
            '(' | '[' | '{' => {
                depth += 1;
                if depth > MAX_NESTING {
                    return Err(messages::nesting_too_deep(Span::new(i, i + 1), MAX_NESTING));
                }
            }
            ')' | ']' | '}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    Ok(())
}

/// Turns pest's error into words: what was expected at the first bad place.
fn syntax_error(source: &str, err: &pest::error::Error<Rule>) -> Diag {
    if let Some(start) = unclosed_block_comment(source) {
        return messages::unclosed_comment(Span::new(start, start + 2));
    }
    let (start, mut expected) = match err.parse_attempts() {
        Some(attempts) => {
            let mut words: Vec<String> = attempts
                .expected_tokens()
                .iter()
                .map(|t| t.to_string())
                .filter(|t| MEANINGFUL_TOKENS.contains(&t.as_str()))
                .map(|t| format!("`{t}`"))
                .collect();
            for stack in attempts.call_stacks() {
                if let Some(word) = stack.parent.and_then(rule_in_words) {
                    words.push(word.to_string());
                }
            }
            (attempts.max_position, words)
        }
        None => match err.location {
            pest::error::InputLocation::Pos(p) => (p, Vec::new()),
            pest::error::InputLocation::Span((s, _)) => (s, Vec::new()),
        },
    };
    expected.sort();
    expected.dedup();
    // Keywords and names read better after the punctuation.
    expected.sort_by_key(|w| !w.starts_with('`'));
    let found = found_token(source, start);
    let end = (start + found.len().max(1)).min(source.len().max(start));
    let (found, help, instead) = described(source, start, &found);
    let expected = instead.map_or(expected, |what| vec![what.to_string()]);
    messages::syntax(Span::new(start, end.max(start)), &found, &expected, help)
}

/// Where a `/*` opens a comment that never closes, outside strings and
/// line comments.
fn unclosed_block_comment(source: &str) -> Option<usize> {
    let mut i = 0;
    while let Some(c) = source[i..].chars().next() {
        let rest = &source[i..];
        let skip = if rest.starts_with("//") {
            rest.find('\n').unwrap_or(rest.len())
        } else if rest.starts_with("/*") {
            match rest.find("*/") {
                Some(end) => end + 2,
                None => return Some(i),
            }
        } else if c == '"' {
            rest[1..].find(['"', '\n']).map_or(rest.len(), |end| end + 2)
        } else {
            c.len_utf8()
        };
        i += skip;
    }
    None
}

/// How to name what was found (`None`: the end of the file), and for the
/// mistakes that have a typical one, its fix and what was meant instead.
fn described(source: &str, start: usize, found: &str) -> (Option<String>, Option<String>, Option<&'static str>) {
    let Some(first) = found.chars().next() else { return (None, None, None) };
    let line_so_far = &source[source[..start].rfind('\n').map_or(0, |i| i + 1)..start];
    if (first == '\n' || first == '\r') && line_so_far.matches('"').count() % 2 == 1 {
        return (
            Some("the end of the line inside a string".to_string()),
            Some("close the string with `\"` before the line ends".to_string()),
            Some("`\"`"),
        );
    }
    if first == '\n' || first == '\r' {
        return (Some("the end of the line".to_string()), None, None);
    }
    if first.is_control() && first != '\t' {
        let name = if first == '\0' {
            "a NUL byte".to_string()
        } else {
            format!("the control character U+{:04X}", first as u32)
        };
        return (Some(name), Some("is this a text file? a model file holds plain text".to_string()), None);
    }
    if first == '.' && found[1..].starts_with(|c: char| c.is_ascii_digit()) {
        let help = format!("write numbers with a digit before the point: `0{found}`");
        return (Some(format!("`{found}`")), Some(help), Some("a number"));
    }
    if !first.is_ascii() && first.is_alphanumeric() {
        return (Some(format!("`{found}`")), Some("names use ASCII letters, digits and `_`".to_string()), None);
    }
    (Some(format!("`{found}`")), None, None)
}

/// Literal tokens worth naming in "expected …"; the rest (exponent letters,
/// digit ranges) would only confuse.
const MEANINGFUL_TOKENS: &[&str] = &[
    "{", "}", "(", ")", "[", "]", ",", "=", ":", "|>", "=>", "model", "block", "input", "target", "loss", "train",
    "repeat", "as",
];

fn rule_in_words(rule: Rule) -> Option<&'static str> {
    Some(match rule {
        Rule::ident | Rule::type_kind | Rule::arg_key => "a name",
        Rule::number => "a number",
        Rule::string => "a string",
        Rule::value | Rule::arg => "a value",
        Rule::model => "`model`",
        Rule::block_def => "`block`",
        Rule::input_decl => "`input`",
        Rule::target_decl => "`target`",
        Rule::loss_decl | Rule::loss_term => "`loss`",
        Rule::train_block => "`train`",
        Rule::flow | Rule::source_call | Rule::source_name => "a pipeline",
        Rule::stage | Rule::layer | Rule::call | Rule::pipeline => "a layer",
        Rule::repeat => "`repeat`",
        Rule::setting => "a setting like `epochs = 10`",
        Rule::dims => "dimensions like `[3]`",
        Rule::list => "a list",
        Rule::type_expr => "a type like `[3]` or `class(10)`",
        Rule::EOI => "end of file",
        _ => return None,
    })
}

/// The word (or single character) at `pos`, for "found …".
fn found_token(source: &str, pos: usize) -> String {
    let rest = source.get(pos..).unwrap_or("");
    if rest.is_empty() {
        return String::new();
    }
    let word: String = rest.chars().take_while(|c| c.is_alphanumeric() || *c == '_' || *c == '.').collect();
    if word.is_empty() {
        let punctuation: String = rest.chars().take_while(|c| "|>=".contains(*c)).take(2).collect();
        if punctuation.is_empty() { rest.chars().next().map(String::from).unwrap_or_default() } else { punctuation }
    } else {
        word
    }
}

fn span(pair: &Pair<Rule>) -> Span {
    pair.as_span().into()
}

fn ident(pair: Pair<Rule>) -> Ident {
    Ident { name: pair.as_str().to_string(), span: span(&pair) }
}

fn number(pair: Pair<Rule>) -> Number {
    let text = pair.as_str().to_string();
    // The grammar only admits valid float syntax; overflow parses to ±inf.
    let value = text.parse::<f64>().unwrap_or(f64::NAN);
    Number { value, text, span: span(&pair) }
}

fn build_model(pair: Pair<Rule>) -> Model {
    let model_span = span(&pair);
    let mut inner = pair.into_inner();
    let name = inner.next().map(ident).unwrap_or(Ident { name: String::new(), span: model_span });
    let mut model = Model {
        name,
        inputs: vec![],
        targets: vec![],
        flows: vec![],
        losses: vec![],
        trains: vec![],
        span: model_span,
    };
    for stmt in inner {
        match stmt.as_rule() {
            Rule::input_decl => model.inputs.push(build_decl(stmt)),
            Rule::target_decl => model.targets.push(build_decl(stmt)),
            Rule::loss_decl => {
                for term in stmt.into_inner() {
                    let s = span(&term);
                    let (mut weight, mut call) = (None, None);
                    for part in term.into_inner() {
                        match part.as_rule() {
                            Rule::number => weight = Some(number(part)),
                            _ => call = Some(build_call(part)),
                        }
                    }
                    if let Some(call) = call {
                        model.losses.push(Loss { call, weight, span: s });
                    }
                }
            }
            Rule::train_block => {
                let s = span(&stmt);
                let settings = stmt.into_inner().map(build_setting).collect();
                model.trains.push(TrainBlock { settings, span: s });
            }
            Rule::flow => model.flows.push(build_flow(stmt)),
            _ => {}
        }
    }
    model
}

fn build_decl(pair: Pair<Rule>) -> Decl {
    let s = span(&pair);
    let mut inner = pair.into_inner();
    let name = inner.next().map(ident).unwrap_or(Ident { name: String::new(), span: s });
    let ty_pair = inner.next();
    let ty = match ty_pair {
        Some(p) => build_type(p),
        None => TypeExpr::Dims { kind: None, dims: vec![], span: s },
    };
    Decl { name, ty, span: s }
}

fn build_type(pair: Pair<Rule>) -> TypeExpr {
    let s = span(&pair);
    let mut kind = None;
    for part in pair.into_inner() {
        match part.as_rule() {
            Rule::type_kind => kind = part.into_inner().next().map(ident),
            Rule::dims => {
                let dims = part.into_inner().map(number).collect();
                return TypeExpr::Dims { kind, dims, span: s };
            }
            Rule::number => {
                let count = number(part);
                let kind = kind.unwrap_or(Ident { name: String::new(), span: s });
                return TypeExpr::Count { kind, count, span: s };
            }
            _ => {}
        }
    }
    TypeExpr::Dims { kind, dims: vec![], span: s }
}

fn build_setting(pair: Pair<Rule>) -> Setting {
    let s = span(&pair);
    let mut inner = pair.into_inner();
    let key = inner.next().map(ident).unwrap_or(Ident { name: String::new(), span: s });
    let value = inner.next().map(build_value).unwrap_or(Value::List(vec![], s));
    Setting { key, value, span: s }
}

fn build_flow(pair: Pair<Rule>) -> Flow {
    let s = span(&pair);
    let mut source = None;
    let mut stages = Vec::new();
    let (mut output, mut assigned) = (None, None);
    for part in pair.into_inner() {
        match part.as_rule() {
            Rule::assigned => assigned = part.into_inner().next().map(ident),
            Rule::source_call => source = part.into_inner().next().map(|c| Source::Call(build_call(c))),
            Rule::source_name => source = part.into_inner().next().map(|n| Source::Value(ident(n))),
            Rule::stage => stages.push(build_stage(part)),
            Rule::ident => output = Some(ident(part)),
            _ => {}
        }
    }
    let source = source.unwrap_or(Source::Value(Ident { name: String::new(), span: s }));
    // The rule's own span ends after trailing whitespace; end at the last token instead.
    let start = match &source {
        Source::Value(id) => id.span,
        Source::Call(c) => c.span,
    };
    let end = output.as_ref().map(|o| o.span).or_else(|| stages.last().map(stage_span)).unwrap_or(start);
    let span = assigned.as_ref().map_or(start, |a| a.span).join(end);
    let (output, named_twice) = match (output, assigned) {
        (Some(output), assigned) => (Some(output), assigned),
        (None, assigned) => (assigned, None),
    };
    Flow { source, stages, output, named_twice, span }
}

fn stage_span(stage: &Stage) -> Span {
    match stage {
        Stage::Layer { call, label } => label.as_ref().map_or(call.span, |l| call.span.join(l.span)),
        Stage::Repeat { span, .. } => *span,
    }
}

fn build_pipeline(pair: Pair<Rule>) -> Vec<Stage> {
    pair.into_inner().map(build_stage).collect()
}

fn build_stage(pair: Pair<Rule>) -> Stage {
    let s = span(&pair);
    let Some(inner) = pair.into_inner().next() else {
        return Stage::Repeat { count: Number { value: 0.0, text: String::new(), span: s }, body: vec![], span: s };
    };
    match inner.as_rule() {
        Rule::repeat => {
            let mut parts = inner.into_inner();
            let count = parts.next().map(number).unwrap_or(Number { value: 0.0, text: String::new(), span: s });
            let body = parts.next().map(build_pipeline).unwrap_or_default();
            Stage::Repeat { count, body, span: s }
        }
        _ => {
            let mut parts = inner.into_inner();
            let call = match parts.next() {
                Some(p) if p.as_rule() == Rule::call => build_call(p),
                Some(p) => bare_call(ident(p)),
                None => bare_call(Ident { name: String::new(), span: s }),
            };
            let label = parts.next().map(ident);
            Stage::Layer { call, label }
        }
    }
}

fn bare_call(name: Ident) -> Call {
    let span = name.span;
    Call { name, args: vec![], parens: false, span }
}

fn build_call(pair: Pair<Rule>) -> Call {
    let s = span(&pair);
    let mut inner = pair.into_inner();
    let name = inner.next().map(ident).unwrap_or(Ident { name: String::new(), span: s });
    let args = inner.next().map(|a| a.into_inner().map(build_arg).collect()).unwrap_or_default();
    Call { name, args, parens: true, span: s }
}

fn build_arg(pair: Pair<Rule>) -> Arg {
    let s = span(&pair);
    let Some(inner) = pair.into_inner().next() else {
        return Arg { key: None, value: Value::List(vec![], s), span: s };
    };
    match inner.as_rule() {
        Rule::keyword_arg => {
            let mut parts = inner.into_inner();
            let key = parts.next().map(ident);
            let value = parts.next().map(build_value).unwrap_or(Value::List(vec![], s));
            Arg { key, value, span: s }
        }
        _ => Arg { key: None, value: build_value(inner), span: s },
    }
}

fn build_value(pair: Pair<Rule>) -> Value {
    let s = span(&pair);
    let Some(inner) = pair.into_inner().next() else {
        return Value::List(vec![], s);
    };
    match inner.as_rule() {
        Rule::number => Value::Number(number(inner)),
        Rule::string => {
            let text = inner.as_str();
            Value::String(text[1..text.len() - 1].to_string(), s)
        }
        Rule::list => Value::List(inner.into_inner().map(build_value).collect(), s),
        Rule::call => Value::Call(build_call(inner)),
        _ => Value::Name(ident(inner)),
    }
}

fn build_block(pair: Pair<Rule>) -> BlockDef {
    let s = span(&pair);
    let mut inner = pair.into_inner();
    let name = inner.next().map(ident).unwrap_or(Ident { name: String::new(), span: s });
    let params = inner.next().map(|p| p.into_inner().map(ident).collect()).unwrap_or_default();
    let body = inner.next().map(build_pipeline).unwrap_or_default();
    BlockDef { name, params, body, span: s }
}
