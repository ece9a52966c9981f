//! nnc: a compiler for neural networks written in a small declarative language.
//!
//! Modules in pipeline order; `pipeline` chains the stages, narrated.

// The bottom of the house, each module importing only those above it here:
// shapes and numeric constants; the syntax tree (what the user wrote, with a
// span on every node); diagnostics (the one error type of the user-facing
// stages); writing files safely. The numeric kernels both backends share
// live in the `nnc-runtime` crate with the routines.
pub mod shape;

pub mod ast;

pub mod diag;

pub mod io;

// 1. `.nn` text → AST with spans (a pest grammar).
pub mod syntax;
// The canonical layout of `.nn` text (`nnc fmt`), from its tokens.
pub mod format;

// 2. AST → checked models: names, shapes, hyperparameters; per-layer costs.
pub mod check;
pub mod summary;

// 3. A checked model → a graph of primitive ops for one batch size.
pub mod ir;

// 4. A forward graph → the same graph with the gradient of every parameter.
pub mod autodiff;

// 5. → a training step: update rules, clipping, CD-k, annealing.
pub mod optim;

// 6. Fusion and static memory.
pub mod plan;

// The executors of a plan: the reference interpreter (the oracle) and the
// Cranelift backend; `exec` wraps both.
pub mod interp;
pub mod jit;

pub mod exec;

// The chain of stages 1–6 as one call.
pub mod pipeline;

// 7. At run time: the model (weights, compiled forward passes) ...
pub mod model;

// ... and the trainer around it (data, epochs, metrics, pretraining).
pub mod data;
pub mod train;

// 8. Ahead of time: a trained model as a C library (`nnc build`).
pub mod library;

// Around them: checkpoints, plots, measurements, the gradient check, and
// explanations of single predictions.
pub mod bench;
pub mod checkpoint;
pub mod cluster;
pub mod explain;
// `nnc export`: a trained model as an ONNX graph.
pub mod onnx;
// `nnc lsp`: the checker, live in an editor.
pub mod gradcheck;
pub mod lsp;
pub mod plot;

// On top of everything: the command line.
pub mod cli;
