//! Builds the runtime crate (`runtime/`) once more, as a static library, and
//! hands it to nnc to embed: `nnc build` links it into the libraries it
//! writes, so they call the very same routines as the JIT and need nothing
//! from nnc at run time.
//!
//! The static library is always built with the release profile, into
//! `<target dir>/nnc-runtime`, shared by every profile of nnc.

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    let manifest_dir = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    println!("cargo:rerun-if-changed=runtime/src");
    println!("cargo:rerun-if-changed=runtime/Cargo.toml");
    println!("cargo:rerun-if-changed=Cargo.lock");

    // OUT_DIR is <target dir>/[<triple>/]<profile>/build/<package>/out.
    let target_dir = out_dir.ancestors().nth(4).unwrap_or(&out_dir).join("nnc-runtime");
    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(cargo);
    command
        .current_dir(&manifest_dir)
        .args(["rustc", "--quiet", "--release", "--locked", "--package", "nnc-runtime", "--lib"])
        .args(["--crate-type", "staticlib", "--target-dir"])
        .arg(&target_dir);
    // Not the outer build's linters or flags: a plain release build.
    for var in ["RUSTC_WORKSPACE_WRAPPER", "CARGO_ENCODED_RUSTFLAGS", "RUSTFLAGS", "CARGO_TARGET_DIR"] {
        command.env_remove(var);
    }
    let status = command.status().expect("cargo can be run from a build script");
    assert!(status.success(), "building the runtime as a static library failed");
    let archive = target_dir.join("release").join("libnnc_runtime.a");
    copy(&archive, &out_dir.join("libnnc_runtime.a"));
}

fn copy(from: &Path, to: &Path) {
    if let Err(e) = std::fs::copy(from, to) {
        panic!("cannot copy {} to {}: {e}", from.display(), to.display());
    }
}
