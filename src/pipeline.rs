//! The front half of the pipeline, chained in one place:
//! read → `syntax::parse` → `check::check`.

use std::path::Path;

use crate::check::{self, CheckedModel};
use crate::diag::Diag;
use crate::syntax;

/// A source file and everything the front end learnt about it.
pub struct Checked {
    pub file_name: String,
    pub source: String,
    /// Models without errors, in source order.
    pub models: Vec<CheckedModel>,
    /// Errors and warnings, in source order.
    pub diags: Vec<Diag>,
}

impl Checked {
    pub fn has_errors(&self) -> bool {
        self.diags.iter().any(Diag::is_error)
    }
}

/// Parses and checks `source`.
pub fn check_source(file_name: &str, source: &str) -> Checked {
    // 1. Text → AST (a syntax error stops here: nothing after it can be trusted).
    let (models, diags) = match syntax::parse(source) {
        // 2. AST → checked models, collecting every independent mistake.
        Ok(file) => check::check(&file),
        Err(diag) => (Vec::new(), vec![diag]),
    };
    Checked { file_name: file_name.to_string(), source: source.to_string(), models, diags }
}

/// Reads and checks a `.nn` file.
pub fn check_file(path: &Path) -> std::io::Result<Checked> {
    let source = std::fs::read_to_string(path)?;
    Ok(check_source(&path.display().to_string(), &source))
}
