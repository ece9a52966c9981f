//! The abstract syntax tree: what the user wrote, with a span on every node.
//!
//! Nothing here is checked yet: names may be undefined, numbers out of range,
//! shapes inconsistent. `check` turns an AST model into a `CheckedModel`.

use serde::Serialize;

/// A byte range in the source text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct Span {
    pub start: usize,
    pub end: usize,
}

impl Span {
    pub fn new(start: usize, end: usize) -> Self {
        Span { start, end }
    }

    /// The smallest span covering both.
    pub fn join(self, other: Span) -> Span {
        Span::new(self.start.min(other.start), self.end.max(other.end))
    }
}

impl From<pest::Span<'_>> for Span {
    fn from(s: pest::Span<'_>) -> Self {
        Span::new(s.start(), s.end())
    }
}

impl From<Span> for miette::SourceSpan {
    fn from(s: Span) -> Self {
        (s.start, s.end.saturating_sub(s.start)).into()
    }
}

/// A parsed `.nn` file: its models and reusable blocks, in source order.
#[derive(Debug, Clone, Default)]
pub struct File {
    pub models: Vec<Model>,
    pub blocks: Vec<BlockDef>,
}

/// A name as written, with where it was written.
#[derive(Debug, Clone, PartialEq)]
pub struct Ident {
    pub name: String,
    pub span: Span,
}

/// A number literal; `value` is `inf` when the literal overflows an `f64`.
#[derive(Debug, Clone, PartialEq)]
pub struct Number {
    pub value: f64,
    pub text: String,
    pub span: Span,
}

/// `model NAME { … }`.
#[derive(Debug, Clone)]
pub struct Model {
    pub name: Ident,
    pub inputs: Vec<Decl>,
    pub targets: Vec<Decl>,
    pub flows: Vec<Flow>,
    pub losses: Vec<Loss>,
    pub trains: Vec<TrainBlock>,
    pub span: Span,
}

/// `input x: [3]` or `target y: class(10)`.
#[derive(Debug, Clone)]
pub struct Decl {
    pub name: Ident,
    pub ty: TypeExpr,
    pub span: Span,
}

/// The type of an input or target.
#[derive(Debug, Clone)]
pub enum TypeExpr {
    /// `[1, 28, 28]`, `seq[8, 8]`, `real[1]`: an optional kind and dimensions.
    Dims { kind: Option<Ident>, dims: Vec<Number>, span: Span },
    /// `class(10)`: a kind and one count.
    Count { kind: Ident, count: Number, span: Span },
}

impl TypeExpr {
    pub fn span(&self) -> Span {
        match self {
            TypeExpr::Dims { span, .. } | TypeExpr::Count { span, .. } => *span,
        }
    }
}

/// `source |> stage |> stage => name`.
#[derive(Debug, Clone)]
pub struct Flow {
    pub source: Source,
    pub stages: Vec<Stage>,
    /// The name of the result: `name = …` or `… => name`.
    pub output: Option<Ident>,
    /// `name = … => other`: the first of two names for one result.
    pub named_twice: Option<Ident>,
    pub span: Span,
}

/// Where a flow starts: a named value or a combining call like `add(a, b)`.
#[derive(Debug, Clone)]
pub enum Source {
    Value(Ident),
    Call(Call),
}

/// One step of a pipeline.
#[derive(Debug, Clone)]
pub enum Stage {
    /// `dense(10) as out` or a bare `relu`.
    Layer { call: Call, label: Option<Ident> },
    /// `repeat(3) { … }`.
    Repeat { count: Number, body: Vec<Stage>, span: Span },
}

/// `name(args)`, or a bare `name` (then `args` is empty and `parens` false).
#[derive(Debug, Clone)]
pub struct Call {
    pub name: Ident,
    pub args: Vec<Arg>,
    pub parens: bool,
    pub span: Span,
}

/// A positional (`key = None`) or keyword argument.
#[derive(Debug, Clone)]
pub struct Arg {
    pub key: Option<Ident>,
    pub value: Value,
    pub span: Span,
}

#[derive(Debug, Clone)]
pub enum Value {
    Number(Number),
    String(String, Span),
    List(Vec<Value>, Span),
    Call(Call),
    Name(Ident),
}

impl Value {
    pub fn span(&self) -> Span {
        match self {
            Value::Number(n) => n.span,
            Value::String(_, s) | Value::List(_, s) => *s,
            Value::Call(c) => c.span,
            Value::Name(i) => i.span,
        }
    }

    /// A short description of the kind of value, for "expected X, found Y".
    pub fn kind_name(&self) -> &'static str {
        match self {
            Value::Number(_) => "a number",
            Value::String(..) => "a string",
            Value::List(..) => "a list",
            Value::Call(_) => "a call",
            Value::Name(_) => "a name",
        }
    }
}

/// `loss = mse(pred, target)`.
#[derive(Debug, Clone)]
pub struct Loss {
    pub call: Call,
    /// `0.5 * mse(…)`: the weight of this term in the summed loss.
    pub weight: Option<Number>,
    pub span: Span,
}

/// `train { key = value … }`.
#[derive(Debug, Clone)]
pub struct TrainBlock {
    pub settings: Vec<Setting>,
    pub span: Span,
}

#[derive(Debug, Clone)]
pub struct Setting {
    pub key: Ident,
    pub value: Value,
    pub span: Span,
}

/// `block name(params) { pipeline }`.
#[derive(Debug, Clone)]
pub struct BlockDef {
    pub name: Ident,
    pub params: Vec<Ident>,
    pub body: Vec<Stage>,
    pub span: Span,
}
