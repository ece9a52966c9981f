//! The run-time half of nnc: the routines generated code calls and the
//! kernels the interpreter shares with them. The JIT calls these functions
//! in the `nnc` process; `nnc build` links the very same functions, built
//! as a static library, into the libraries it writes.

mod collective;
#[cfg(target_arch = "x86_64")]
mod conv;
mod depthwise;
mod gemm;
mod kept;
pub mod kernels;
pub mod library;
mod partner;
#[cfg(target_arch = "x86_64")]
mod pool;
mod products;
pub mod profile;
mod routines;
mod simd;
mod spatial;
mod subnormals;
#[cfg(target_arch = "x86_64")]
mod winograd;

pub use collective::{AllReduce, ThreadTeam, all_reduce, part_range, set_all_reduce};
pub use gemm::Isa;
pub use kept::{READ_ONLY, UNVERSIONED, fresh_version, release};
pub use kernels::Epilogue;
pub use partner::with_partner;
pub use products::{product, product_splits, product_with};
pub use routines::{KERNEL_PARTS, PARALLEL_ELEMENTS, SliceMove, Squash, part_units, softmax_row, softmax_rows};
pub use subnormals::flush_subnormals;

/// `len` zeros, or None when the memory cannot be had (an error for the
/// caller to report, never an abort).
pub fn zeroed(len: usize) -> Option<Vec<f32>> {
    let mut values = Vec::new();
    values.try_reserve_exact(len).ok()?;
    values.resize(len, 0.0);
    Some(values)
}

/// A compiled pass's working memory: `len` zeros from a 64-byte boundary,
/// so the plan's slots (whole cache lines apart) start on cache lines and
/// vector loads of them never straddle two.
#[derive(Default)]
pub struct Arena {
    values: Vec<f32>,
    start: usize,
    len: usize,
}

impl Arena {
    /// As `zeroed`: None when the memory cannot be had.
    pub fn zeroed(len: usize) -> Option<Arena> {
        let values = zeroed(len.checked_add(simd::LINE)?)?;
        let start = simd::to_line(&values);
        Some(Arena { values, start, len })
    }

    /// As `zeroed`, but like `vec!` the process ends when the memory
    /// cannot be had.
    pub fn zeros(len: usize) -> Arena {
        Arena::zeroed(len).unwrap_or_else(|| {
            let layout = std::alloc::Layout::array::<f32>(len).unwrap_or(std::alloc::Layout::new::<f32>());
            std::alloc::handle_alloc_error(layout)
        })
    }
}

impl Clone for Arena {
    /// The same values, from a cache line of their own.
    fn clone(&self) -> Arena {
        let mut copy = Arena::zeros(self.len);
        copy.copy_from_slice(self);
        copy
    }
}

impl std::fmt::Debug for Arena {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl std::ops::Deref for Arena {
    type Target = [f32];
    fn deref(&self) -> &[f32] {
        &self.values[self.start..self.start + self.len]
    }
}

impl std::ops::DerefMut for Arena {
    fn deref_mut(&mut self) -> &mut [f32] {
        &mut self.values[self.start..self.start + self.len]
    }
}

/// Whether a convolution of this stride runs in the direct kernel on this
/// CPU (which threads its own large products) rather than through im2col and
/// sgemm.
pub fn direct_convolution(stride: usize) -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        stride == 1 && conv::supported()
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = stride;
        false
    }
}

/// Whether a convolution of `channels` channels in `groups` groups runs in
/// the depthwise kernel (a loop per channel rather than a product).
pub fn depthwise_convolution(channels: usize, groups: usize) -> bool {
    depthwise::applies(channels, groups)
}

pub use spatial::{parallel_images, set_parallel_images};

/// The scalars a training step reads, where generated code finds them: the
/// step's last argument points at one (`repr(C)`: the field offsets are the
/// ABI; `ir::Hyper` names the fields).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Hypers {
    /// The learning rate of this step (after the schedule).
    pub lr: f32,
    /// Adam's bias corrections 1/(1 − β₁ᵗ) and 1/(1 − β₂ᵗ).
    pub bias1: f32,
    pub bias2: f32,
    /// The number of the step (1, 2, …), which keys the dropout masks.
    pub step: f32,
    /// The version of the weights a forward pass reads (`fresh_version`),
    /// under which transforms of them are kept between calls; `UNVERSIONED`
    /// for a training step, which writes them.
    pub weights: u64,
}

/// A runtime routine as generated code sees it: its symbol, its arguments
/// (pointer-sized ones first, then f32 ones) and its address. The one list
/// from which the Cranelift declarations and the JIT's symbols both come.
pub struct Routine {
    pub name: &'static str,
    pub pointer_args: usize,
    pub float_args: usize,
    pub address: *const u8,
}

/// Table rows named by the exported function itself, so symbol and address cannot disagree.
macro_rules! routine {
    ($module:ident :: $f:ident, $pointers:expr, $floats:expr) => {
        Routine {
            name: stringify!($f),
            pointer_args: $pointers,
            float_args: $floats,
            address: $module::$f as *const u8,
        }
    };
}

/// Every routine generated code may call.
pub fn routines() -> Vec<Routine> {
    vec![
        routine!(products::nnc_sgemm, 12, 0),
        routine!(products::nnc_team_sgemm_columns, 12, 0),
        routine!(products::nnc_team_sgemm_sum, 18, 0),
        routine!(profile::nnc_profile_mark, 2, 0),
        routine!(routines::nnc_sum_rows, 4, 0),
        routine!(routines::nnc_softmax, 4, 0),
        routine!(routines::nnc_softmax_grad, 5, 0),
        routine!(routines::nnc_softmax_cross_entropy, 6, 0),
        routine!(routines::nnc_softmax_cross_entropy_grad, 7, 0),
        routine!(routines::nnc_class_weights, 5, 0),
        routine!(routines::nnc_mse, 4, 0),
        routine!(routines::nnc_bce, 4, 0),
        routine!(routines::nnc_sum_squares, 3, 0),
        routine!(routines::nnc_clip_scale, 2, 1),
        routine!(routines::nnc_log, 3, 0),
        routine!(routines::nnc_squash, 6, 0),
        routine!(routines::nnc_copy, 3, 0),
        routine!(routines::nnc_parallel_parts, 8, 0),
        routine!(spatial::nnc_conv2d, 10, 0),
        routine!(spatial::nnc_conv2d_grad_input, 8, 0),
        routine!(spatial::nnc_conv2d_grad_weight, 6, 0),
        routine!(spatial::nnc_sum_channels, 5, 0),
        routine!(spatial::nnc_sum_product_channels, 6, 0),
        routine!(spatial::nnc_sum_and_product_channels, 7, 0),
        routine!(spatial::nnc_pool, 4, 0),
        routine!(spatial::nnc_pool_grad, 6, 0),
        routine!(spatial::nnc_upsample, 6, 0),
        routine!(routines::nnc_max_pieces, 4, 0),
        routine!(routines::nnc_dropout, 6, 1),
        routine!(routines::nnc_max_pieces_grad, 5, 0),
        routine!(routines::nnc_slice, 8, 0),
        routine!(routines::nnc_gather, 6, 0),
        routine!(routines::nnc_gather_grad, 6, 0),
        routine!(routines::nnc_bernoulli, 5, 0),
        routine!(collective::nnc_all_reduce_start, 3, 0),
        routine!(collective::nnc_all_reduce_wait, 0, 0),
        routine!(collective::nnc_team_barrier, 0, 0),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An arena starts on a cache line whatever its length, holds exactly
    /// its zeros, and a length past memory is None, not an abort.
    #[test]
    fn an_arena_starts_on_a_cache_line() {
        for len in [1, 15, 16, 1000, 1 << 20] {
            let mut arena = Arena::zeroed(len).expect("memory");
            assert_eq!(arena.as_ptr() as usize % 64, 0, "{len}");
            assert_eq!(arena.len(), len);
            assert!(arena.iter().all(|&v| v == 0.0));
            arena[len - 1] = 1.0;
        }
        assert!(Arena::zeroed(usize::MAX).is_none());
        assert!(Arena::zeroed(usize::MAX / 8).is_none());
    }
}
