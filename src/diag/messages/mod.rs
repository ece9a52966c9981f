//! The wording of every diagnostic, in one place so nnc speaks with one voice.
//!
//! Codes are `nnc::<stage>::<what>`. Labels say what was found and what was
//! expected; help lines say how to fix it.

mod arguments;
mod shapes;
mod structure;
mod syntax;
mod training;

pub use arguments::*;
pub use shapes::*;
pub use structure::*;
pub use syntax::*;
pub use training::*;

use super::{Diag, Incoming, Span};
use crate::ast::{Call, Ident, Number, Value};
use crate::shape::shape_text;

fn list(items: &[&str]) -> String {
    let quoted: Vec<String> = items.iter().map(|i| format!("`{i}`")).collect();
    match quoted.len() {
        0 => "nothing".to_string(),
        1 => quoted[0].clone(),
        n => format!("{} or {}", quoted[..n - 1].join(", "), quoted[n - 1]),
    }
}

fn maybe(suggestion: Option<&str>) -> String {
    suggestion.map(|s| format!("did you mean `{s}`?")).unwrap_or_default()
}

fn derived(input: &Incoming) -> String {
    if input.why.is_empty() {
        shape_text(&input.shape)
    } else {
        format!("{} → {}", input.why, shape_text(&input.shape))
    }
}
