//! Training: the optimizer step as IR, the trainer loop, metrics.

pub mod init;
pub mod update;
