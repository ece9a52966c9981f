//! Products the replicas sharing one store compute together
//! (`nnc_runtime`'s team products). A replica's product of its own rows
//! by a large weight reads the whole weight, and its weight gradient is
//! written whole and then read again by the sum over the replicas: past
//! the caches, those passes over memory are the products' cost. Computed
//! together, each replica reads its share of the weight's columns for
//! every replica's rows, and computes only the part of the summed
//! gradient its part of the update reads (`share_store`), with no sum
//! after it; where nothing after it touches the weight, the update runs
//! on each block of the sum as it is finished, so the gradient never
//! goes out to memory.

use super::share::writes_in_parts;
use super::{Kernel, Location, Plan, kernel_reads, produces};
use crate::ir::{Graph, Op, ValueId, numel};

/// How the steps sharing a store split a product between them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TeamSplit {
    /// op(b) is a value of the store: each step computes its share of the
    /// columns for every step's rows.
    Columns,
    /// The product's only reader is `sum`, its sum over the steps, whose
    /// every reader writes the store by parts: each step computes its part
    /// of the sum, into the sum, and runs the element-wise loop storing
    /// `update` (when not empty) on each block of it as it is finished.
    Sum { sum: ValueId, update: Vec<ValueId> },
}

/// Values of a weight (or its gradient) from which the steps sharing the
/// store compute its products together: 4 MiB, past the second-level
/// caches, where each product's pass over the weight streams from memory.
const TOGETHER_FROM: usize = 1 << 20;

/// `plan`, a part of the steps sharing one store (`share_store`), with its
/// products of large weights and its large weight gradients summed over
/// the steps computed together (`TeamSplit`). Every part's plan makes the
/// same choices: they depend on the graph's shapes and structure alone.
pub fn team_products(g: &Graph, mut plan: Plan) -> Plan {
    if plan.store_part.is_none() {
        return plan;
    }
    let fused: Vec<bool> = plan.locations.iter().map(|l| *l == Location::Fused).collect();
    let readers = |plan: &Plan, v: ValueId| -> Vec<usize> {
        (0..plan.kernels.len()).filter(|&k| kernel_reads(g, &plan.kernels[k], &fused).contains(&v)).collect()
    };
    let mut moved = Vec::new();
    for k in 0..plan.kernels.len() {
        let Kernel::MatMul { node, team: None } = plan.kernels[k] else { continue };
        let product = &g.nodes[node.0];
        let in_store = |v: ValueId| matches!(plan.locations[v.0], Location::Store(_));
        let weight = product.inputs[1];
        let split = if matches!(product.op, Op::MatMul { ta: false, .. })
            && in_store(weight)
            && !in_store(product.inputs[0])
            && product.inputs.get(2).is_none_or(|&bias| in_store(bias))
            && matches!(plan.locations[node.0], Location::Scratch(_))
            && numel(g.shape(weight)) >= TOGETHER_FROM
        {
            Some(TeamSplit::Columns)
        } else {
            summed_by_parts(g, &plan, node, &readers).map(|(sum, kernel)| {
                moved.push(kernel);
                let update = update_to_run_on_blocks(g, &plan, (k, sum), &readers, &fused);
                if let Some(u) = update {
                    moved.push(u);
                }
                let update = match update.map(|u| &plan.kernels[u]) {
                    Some(Kernel::Elementwise { roots, .. }) => roots.clone(),
                    _ => Vec::new(),
                };
                TeamSplit::Sum { sum, update }
            })
        };
        if split.is_some() {
            plan.kernels[k] = Kernel::MatMul { node, team: split };
        }
    }
    let mut index = 0;
    plan.kernels.retain(|_| {
        index += 1;
        !moved.contains(&(index - 1))
    });
    plan
}

/// The kernel that may update the store on each finished block of `sum`,
/// computed by kernel `k`: the sum's one reader, reading nothing but the
/// sum, hyperparameters and values of the store that no kernel after `k`
/// reads or writes (every step has read them by the time it meets the
/// others at kernel `k`'s start).
fn update_to_run_on_blocks(
    g: &Graph,
    plan: &Plan,
    (k, sum): (usize, ValueId),
    readers: &impl Fn(&Plan, ValueId) -> Vec<usize>,
    fused: &[bool],
) -> Option<usize> {
    let [u] = readers(plan, sum)[..] else { return None };
    // (A loop's sums, health's, are over whole parts, not blocks.)
    let Kernel::Elementwise { roots, sums } = &plan.kernels[u] else { return None };
    if !sums.is_empty() {
        return None;
    }
    let store_range = |v: &ValueId| match plan.locations[v.0] {
        Location::Store(offset) => Some((offset, offset + numel(g.shape(*v)))),
        _ => None,
    };
    let reads = kernel_reads(g, &plan.kernels[u], fused);
    let apart = |v: &ValueId| *v == sum || matches!(plan.locations[v.0], Location::Hyper(_) | Location::Store(_));
    if !reads.iter().all(apart) {
        return None;
    }
    let touched: Vec<(usize, usize)> = reads.iter().chain(roots).filter_map(store_range).collect();
    let overlaps =
        |v: &ValueId| store_range(v).is_some_and(|(start, end)| touched.iter().any(|&(s, e)| start < e && s < end));
    let untouched_after = (k + 1..plan.kernels.len()).filter(|&j| j != u).all(|j| {
        let kernel = &plan.kernels[j];
        !kernel_reads(g, kernel, fused).iter().any(overlaps)
            && !produces(kernel).any(|v| overlaps(&v))
            && !matches!(kernel, Kernel::Copy { to, len, .. } if touched.iter().any(|&(s, e)| *to < e && s < to + len))
    });
    untouched_after.then_some(u)
}

/// The sum over the steps that is `product`'s only reader, and that
/// sum's kernel, when the product is a large one of two operands apart
/// from the store and every reader of the sum writes the store by parts.
fn summed_by_parts(
    g: &Graph,
    plan: &Plan,
    product: ValueId,
    readers: &impl Fn(&Plan, ValueId) -> Vec<usize>,
) -> Option<(ValueId, usize)> {
    let node = &g.nodes[product.0];
    let in_store = |v: ValueId| matches!(plan.locations[v.0], Location::Store(_));
    let plain = matches!(node.op, Op::MatMul { relu: false, .. }) && node.inputs.len() == 2;
    if !plain || node.inputs.iter().any(|&v| in_store(v)) || numel(&node.shape) < TOGETHER_FROM {
        return None;
    }
    let [kernel] = readers(plan, product)[..] else { return None };
    let Kernel::Routine { node: sum } = plan.kernels[kernel] else { return None };
    let sum_readers = readers(plan, sum);
    (g.nodes[sum.0].op == Op::AllReduce
        && matches!(plan.locations[sum.0], Location::Scratch(_))
        && !sum_readers.is_empty()
        && sum_readers.iter().all(|&r| writes_in_parts(g, plan, &plan.kernels[r])))
    .then_some((sum, kernel))
}
