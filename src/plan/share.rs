//! One store for the replicas of a training step on the threads of one
//! process: each replica writes its own part of every value the store
//! holds (`Plan::store_part`), so the update's passes over the weights,
//! bound by memory, are shared out instead of each replica making all of
//! them on a copy of its own.

use super::{Broadcast, Kernel, Location, Plan, collect_fused, kernel_reads, produces};
use crate::ir::{Graph, ValueId};
pub use nnc_runtime::part_range;

/// `plan` as part `index` of `parts` steps sharing one store, when its
/// writes there can be shared out (else `plan` unchanged, as `Err`):
/// every kernel writing the store is an element-wise loop whose values
/// all live there (an optimizer's update: each value from the values at
/// the same place of its inputs) or a copy into it, and comes after a
/// wait for the sums (a barrier, where every replica has read all it
/// reads of the old values); after that wait no other kernel reads or
/// writes the store.
pub fn share_store(g: &Graph, mut plan: Plan, (index, parts): (usize, usize)) -> Result<Plan, Plan> {
    let in_store = |v: crate::ir::ValueId| matches!(plan.locations[v.0], Location::Store(_));
    let fused: Vec<bool> = plan.locations.iter().map(|l| *l == Location::Fused).collect();
    let writes = |kernel: &Kernel| matches!(kernel, Kernel::Copy { .. }) || produces(kernel).any(in_store);
    let Some(first) = plan.kernels.iter().position(writes) else {
        plan.store_part = Some((index, parts));
        return Ok(plan);
    };
    let Some(barrier) = plan.kernels[..first].iter().rposition(|k| matches!(k, Kernel::AwaitSums)) else {
        return Err(plan);
    };
    let apart = |kernel: &Kernel| !writes(kernel) && !kernel_reads(g, kernel, &fused).into_iter().any(in_store);
    if plan.kernels[barrier + 1..].iter().all(|k| writes_in_parts(g, &plan, k) || apart(k)) {
        plan.store_part = Some((index, parts));
        Ok(plan)
    } else {
        Err(plan)
    }
}

/// Whether `kernel` can write its values part by part: an element-wise
/// loop storing only into the store, each value from the values at the
/// same place of its inputs (no broadcast), or a copy into the store.
/// Each part then writes its `part_range` of the values, from cache
/// lines; the loop's sums (health's) are then over that part alone
/// (`Plan::sums_in_parts`).
pub(super) fn writes_in_parts(g: &Graph, plan: &Plan, kernel: &Kernel) -> bool {
    match kernel {
        Kernel::Copy { .. } => true,
        Kernel::Elementwise { roots, .. } => {
            let mut expression = Vec::new();
            for &root in roots {
                collect_fused(g, &plan.locations, root, &mut expression);
            }
            plan.all_in_store(roots) && expression.iter().all(|v| Broadcast::of(g, &g.nodes[v.0]).is_none())
        }
        _ => false,
    }
}

impl Plan {
    /// Whether all of `values` live in the store (a loop storing them
    /// writes only its part of them when the store is shared).
    pub fn all_in_store(&self, values: &[ValueId]) -> bool {
        values.iter().all(|v| matches!(self.locations[v.0], Location::Store(_)))
    }

    /// The sums that a step sharing the store computes over its part of
    /// their loop's values only (`writes_in_parts`): the steps' partial
    /// sums add up to the whole one.
    pub fn sums_in_parts(&self) -> Vec<ValueId> {
        if self.store_part.is_none() {
            return Vec::new();
        }
        let in_parts = self.kernels.iter().filter_map(|kernel| match kernel {
            Kernel::Elementwise { roots, sums } if self.all_in_store(roots) => Some(sums),
            _ => None,
        });
        in_parts.flatten().copied().collect()
    }
}
