//! `nnc fmt`: the canonical layout of model files (see `crate::format`).

use std::io::IsTerminal;
use std::path::PathBuf;

use super::{Failure, Outcome};
use crate::{diag, pipeline};

/// `nnc fmt`: formats each file in place (atomically), or with `check`
/// names those that would change. A file with a syntax error is left as it
/// is and its diagnostic shown; the other files are still formatted.
pub fn run(files: &[PathBuf], check: bool) -> Outcome {
    let mut unformatted = 0;
    let mut failed = false;
    for file in files {
        let stdin = file.as_os_str() == "-";
        if !stdin && !check && std::fs::metadata(file).is_ok_and(|m| !m.is_file()) {
            // A pipe would be read (waiting for a writer) and then could not
            // be written back; a directory cannot be read at all.
            return Err(Failure::Usage(format!(
                "cannot format {} in place: it is not a regular file (`nnc fmt -` formats standard input)",
                file.display()
            )));
        }
        let read = if stdin { pipeline::read_model_from(std::io::stdin().lock()) } else { pipeline::read_model(file) };
        let source = read.map_err(|e| Failure::Usage(format!("cannot read {}: {e}", file.display())))?;
        let name = if stdin { "<stdin>".to_string() } else { file.display().to_string() };
        let formatted = match crate::format::format_source(&source) {
            Ok(formatted) => formatted,
            Err(diag) => {
                eprint!("{}", diag::render(&[diag], &name, &source, std::io::stderr().is_terminal(), 100));
                failed = true;
                continue;
            }
        };
        let changed = formatted != source;
        unformatted += usize::from(changed);
        if check {
            if changed {
                say!("{name}");
            }
        } else if stdin {
            say_raw!("{formatted}");
        } else if changed {
            crate::io::write_atomic(file, formatted.as_bytes())
                .map_err(|e| Failure::Usage(format!("cannot write {name}: {e}")))?;
        }
    }
    if failed || (check && unformatted > 0) { Err(Failure::Reported) } else { Ok(()) }
}
