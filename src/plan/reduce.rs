//! Sums of squares folded into the element-wise loop that computes or
//! reads what they sum. A training step's health sums (‖g‖², ‖Δw‖² and
//! ‖w′‖² of every parameter) then ride in the optimizer's update, which
//! has the gradient, the step and the new weights in registers, instead
//! of taking three more passes over every weight; and Δw, fused into the
//! update again, is no longer stored only to be read back. A wide MLP's
//! training spent about a twelfth of its time on those passes. The sums no
//! loop serves run as soon as what they sum is computed, while it is still
//! in the caches.

use super::order::Places;
use super::{Kernel, Location, Roots, broadcast_slot, kernel_reads, produces};
use crate::ir::{Graph, Op, ValueId, numel};

/// Marks the sums of squares that may ride in a loop: those nothing in the
/// step reads (outputs, read back after it). They are taken out of their
/// input's readers, so that an input they alone read besides one loop is
/// fused into it.
pub(super) fn set_aside_sums(g: &Graph, live: &[bool], consumers: &mut [Vec<usize>]) -> Vec<bool> {
    let foldable: Vec<bool> =
        (0..g.nodes.len()).map(|i| live[i] && g.nodes[i].op == Op::SumSquares && consumers[i].is_empty()).collect();
    for readers in consumers.iter_mut() {
        readers.retain(|&c| !foldable[c]);
    }
    foldable
}

/// Moves each sum `set_aside_sums` marked from its routine into the
/// element-wise kernel that computes its input (as a root or fused into
/// one) or reads all of it element by element; a sum no loop serves stays
/// a routine. A fused input always lies in a loop, so it is always served.
pub(super) fn fold_sums(g: &Graph, fused: &[bool], foldable: &[bool], kernels: &mut Vec<Kernel>) {
    let mut k = 0;
    while k < kernels.len() {
        let (sum, x) = match kernels[k] {
            Kernel::Routine { node } if foldable[node.0] => (node, g.nodes[node.0].inputs[0]),
            _ => {
                k += 1;
                continue;
            }
        };
        let host = kernels.iter().position(|kernel| match kernel {
            Kernel::Elementwise { roots, .. } => serves(g, fused, roots, x),
            _ => false,
        });
        match host {
            Some(h) => {
                if let Kernel::Elementwise { sums, .. } = &mut kernels[h] {
                    sums.push(sum);
                }
                kernels.remove(k);
            }
            None => {
                debug_assert!(!fused[x.0], "{x} is fused into no loop");
                k += 1;
            }
        }
    }
}

/// Takes out of each loop's stored values those that only its own sums
/// read (with weight decay, health's Δw = step + decay, read by ‖Δw‖²
/// alone): the loop computes them for its sums without storing them.
/// (Stored, a training step wrote every weight's Δw to memory, and the
/// replicas could not share out such an update.) A loop keeps at least
/// one stored value.
pub(super) fn store_only_what_is_read(
    g: &Graph,
    consumers: &[Vec<usize>],
    roots: &Roots,
    kernels: &mut [Kernel],
    (locations, fused): (&mut [Location], &mut [bool]),
) {
    for kernel in kernels {
        let Kernel::Elementwise { roots: stored, sums } = kernel else { continue };
        let summed_only = |v: &ValueId| {
            consumers[v.0].is_empty() && !roots.contains(v.0) && sums.iter().any(|s| g.nodes[s.0].inputs[0] == *v)
        };
        if stored.iter().all(summed_only) {
            continue;
        }
        stored.retain(|v| {
            let keep = !summed_only(v);
            if !keep {
                (locations[v.0], fused[v.0]) = (Location::Fused, true);
            }
            keep
        });
    }
}

/// Whether the loop storing `roots` meets every element of `x` once, at
/// the element it is computing: `x` is one of the values it computes, or
/// one of them reads `x` element by element (not broadcast, nor as a
/// slice, which reads a block of it).
fn serves(g: &Graph, fused: &[bool], roots: &[ValueId], x: ValueId) -> bool {
    if numel(g.shape(x)) != numel(g.shape(roots[0])) {
        return false;
    }
    let mut members: Vec<ValueId> = roots.to_vec();
    let mut k = 0;
    while k < members.len() {
        let node = &g.nodes[members[k].0];
        members.extend(node.inputs.iter().filter(|v| fused[v.0] && g.nodes[v.0].op != Op::Reshape));
        k += 1;
    }
    members.iter().any(|&m| {
        let node = &g.nodes[m.0];
        let element_wise = |slot: usize| !broadcast_slot(&node.op, slot) && !matches!(node.op, Op::Slice { .. });
        m == x || node.inputs.iter().enumerate().any(|(slot, &v)| v == x && element_wise(slot))
    })
}

/// Moves each sum nothing in the step reads (`consumers` empty: a health
/// sum, read back after the step) that is still a routine to just after
/// the kernel computing what it sums. Built last in the graph, they ran
/// after the whole backward pass, when a first convolution's outputs had
/// long left the caches: summing them per channel took five times as
/// long as just after they were written.
pub(super) fn hoist_observed_sums(g: &Graph, fused: &[bool], consumers: &[Vec<usize>], kernels: &mut [Kernel]) {
    let mut places = Places::new(kernels.len());
    // The last of the kernels placed so far that computes each value.
    let mut producer = vec![None; g.nodes.len()];
    for (i, kernel) in kernels.iter().enumerate() {
        if let Kernel::Routine { node } = kernel
            && matches!(g.nodes[node.0].op, Op::SumSquares | Op::SumChannels)
            && consumers[node.0].is_empty()
        {
            let input = kernel_reads(g, kernel, fused).iter().fold(None, |after, v| places.later(after, producer[v.0]));
            if input.is_some() {
                places.put_after(i, input);
            }
        }
        for v in produces(kernel) {
            producer[v.0] = places.later(producer[v.0], Some(i));
        }
    }
    places.reorder(kernels);
}
