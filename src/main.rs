//! The `nnc` command line.

use std::process::ExitCode;

fn main() -> ExitCode {
    nnc::cli::run()
}
