//! Products the replicas sharing one store compute together
//! (`nnc_runtime`'s team products). A replica's product of its own rows
//! by a large weight reads the whole weight, and its weight gradient is
//! written whole and then read again by the sum over the replicas: past
//! the caches, those passes over memory are the products' cost. Computed
//! together, each replica reads its share of the weight's columns for
//! every replica's rows, and computes only the part of the summed
//! gradient its part of the update reads (`share_store`), with no sum
//! after it.

use super::share::writes_in_parts;
use super::{Kernel, Location, Plan, kernel_reads};
use crate::ir::{Graph, Op, ValueId, numel};

/// How the steps sharing a store split a product between them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TeamSplit {
    /// op(b) is a value of the store: each step computes its share of the
    /// columns for every step's rows.
    Columns,
    /// The product's only reader is this sum over the steps, whose every
    /// reader writes the store by parts: each step computes its part of
    /// the sum, into the sum.
    Sum(ValueId),
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
    let mut summed_apart = Vec::new();
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
                summed_apart.push(kernel);
                TeamSplit::Sum(sum)
            })
        };
        if split.is_some() {
            plan.kernels[k] = Kernel::MatMul { node, team: split };
        }
    }
    let mut index = 0;
    plan.kernels.retain(|_| {
        index += 1;
        !summed_apart.contains(&(index - 1))
    });
    plan
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
