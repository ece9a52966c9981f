//! The one collective generated code calls: `nnc_all_reduce`, the sum of a
//! buffer over every process training together. The runtime knows nothing
//! of how processes talk; the program that trains data-parallel installs
//! the sum (`set_all_reduce`; `nnc` does so under MPI). Alone, a buffer's
//! sum is itself.
#![allow(unsafe_code)]

use std::sync::OnceLock;

use crate::routines::{slice, slice_mut};

/// Writes into `sum` the element-wise sum of `x` over every process.
pub type AllReduce = fn(x: &[f32], sum: &mut [f32]);

static ALL_REDUCE: OnceLock<AllReduce> = OnceLock::new();

/// Installs the sum; false if one was installed already (it stays).
pub fn set_all_reduce(sum: AllReduce) -> bool {
    ALL_REDUCE.set(sum).is_ok()
}

/// `sum` = Σ over processes of `x` (a copy of `x` when none was installed).
pub fn all_reduce(x: &[f32], sum: &mut [f32]) {
    match ALL_REDUCE.get() {
        Some(reduce) => reduce(x, sum),
        None => sum.copy_from_slice(x),
    }
}

#[unsafe(no_mangle)]
pub extern "C" fn nnc_all_reduce(x: *const f32, y: *mut f32, n: usize) {
    if std::ptr::eq(x, y) {
        // The plan wrote the sum over its input: reduce a copy.
        // SAFETY: y holds n values.
        let y = unsafe { slice_mut(y, n) };
        let x = y.to_vec();
        all_reduce(&x, y);
    } else {
        // SAFETY: x and y hold n values each, and do not overlap (distinct buffers of the plan).
        let (x, y) = unsafe { (slice(x, n), slice_mut(y, n)) };
        all_reduce(x, y);
    }
}
