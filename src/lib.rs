//! nnc: a compiler for neural networks written in a small declarative language.
//!
//! The pipeline, one module per stage:
//! 1. `syntax::parse`: `.nn` text → AST with spans;
//! 2. `check::check`: AST → checked models (names, shapes, hyperparameters);
//! 3. `summary`: per-layer shapes, parameter counts and costs.

pub mod autodiff;
pub mod bench;
pub mod check;
pub mod checkpoint;
pub mod cli;
pub mod data;
pub mod diag;
pub mod gradcheck;
pub mod interp;
pub mod io;
pub mod ir;
pub mod jit;
pub mod kernels;
pub mod pipeline;
pub mod plan;
pub mod plot;
pub mod summary;
pub mod syntax;
pub mod train;
