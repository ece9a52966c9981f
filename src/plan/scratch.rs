//! Where every kernel's output lives in the scratch arena: best fit over
//! the ranges of values no later kernel reads, and joins whose parts are
//! computed where the join would have copied them.

use super::{ALIGN, Kernel, Location, Roots, kernel_reads, produces};
use crate::ir::{Graph, Op, numel};

/// The joins whose parts are each written straight into their place in
/// the join (so the join is no kernel), and where: for each value, the
/// join node it lives in and its offset there, in elements.
pub(super) struct PartsInPlace {
    pub joins: Vec<bool>,
    pub host: Vec<Option<(usize, usize)>>,
}

/// Finds the joins (`Concat`) along an axis with nothing before it, so
/// each part is one block of the result (a stack of rows: a weight
/// gradient's stacked operands, a sequence's steps along time), whose
/// every part is computed by a kernel of its own, for nothing else's
/// place, at an aligned offset. Such a part is written into the join's
/// block, and the copy that joined them is dropped from `kernels`.
/// Outputs, values written into the store and joins that are parts of
/// another are left as they are.
pub(super) fn parts_in_place(
    g: &Graph,
    kernels: &mut Vec<Kernel>,
    roots: &Roots,
    in_place: &[Option<usize>],
) -> PartsInPlace {
    let n = g.nodes.len();
    let mut computed = vec![false; n];
    for kernel in kernels.iter() {
        for v in produces(kernel) {
            computed[v.0] = true;
        }
    }
    let mut placed = PartsInPlace { joins: vec![false; n], host: vec![None; n] };
    for (i, node) in g.nodes.iter().enumerate() {
        let Op::Concat { axis } = node.op else { continue };
        if !computed[i] || in_place[i].is_some() || node.shape[..axis].iter().product::<usize>() != 1 {
            continue;
        }
        let mut parts = Vec::with_capacity(node.inputs.len());
        let mut at = 0;
        for input in &node.inputs {
            // A reshaped part lives where the value it reshapes does.
            let mut part = input.0;
            while g.nodes[part].op == Op::Reshape {
                part = g.nodes[part].inputs[0].0;
            }
            let free = computed[part]
                && !placed.joins[part]
                && placed.host[part].is_none()
                && in_place[part].is_none()
                && !roots.contains(part)
                && !parts.iter().any(|&(p, _)| p == part);
            if !free || at % ALIGN != 0 {
                parts.clear();
                break;
            }
            parts.push((part, at));
            at += numel(&g.nodes[part].shape);
        }
        if parts.is_empty() {
            continue;
        }
        placed.joins[i] = true;
        for (part, at) in parts {
            placed.host[part] = Some((i, at));
        }
    }
    kernels.retain(|kernel| !matches!(kernel, Kernel::Routine { node } if placed.joins[node.0]));
    placed
}

/// Gives every kernel's output a scratch offset (its store place when
/// written in place, its place in its join when `placed` puts it there),
/// reusing the space of values no later kernel reads: best fit over the
/// free ranges. A join whose parts are in place takes its whole block when
/// its first part is computed and keeps it until neither it nor a part is
/// read again. Returns the scratch size.
pub(super) fn assign_scratch(
    g: &Graph,
    kernels: &[Kernel],
    fused: &[bool],
    roots: &Roots,
    (in_place, placed): (&[Option<usize>], &PartsInPlace),
    locations: &mut [Location],
) -> usize {
    let mut last_use = vec![0usize; g.nodes.len()];
    for (k, kernel) in kernels.iter().enumerate() {
        for v in kernel_reads(g, kernel, fused) {
            last_use[v.0] = last_use[v.0].max(k);
        }
    }
    // Outputs stay alive to the end.
    for v in roots.all() {
        last_use[v.0] = usize::MAX;
    }
    for (part, host) in placed.host.iter().enumerate() {
        if let Some((join, _)) = *host {
            last_use[join] = last_use[join].max(last_use[part]);
        }
    }
    let mut free: Vec<(usize, usize)> = Vec::new(); // (offset, len)
    let mut scratch_len = 0;
    let mut alive: Vec<(usize, usize, usize)> = Vec::new(); // (last_use, offset, len)
    let mut join_at: Vec<Option<usize>> = vec![None; g.nodes.len()];
    for (k, kernel) in kernels.iter().enumerate() {
        // Release values whose last reader ran before this kernel.
        alive.retain(|&(last, offset, len)| {
            if last < k {
                free.push((offset, len));
                false
            } else {
                true
            }
        });
        let mut take = |value: usize| {
            let len = numel(&g.nodes[value].shape).div_ceil(ALIGN) * ALIGN;
            let slot =
                free.iter().enumerate().filter(|(_, (_, l))| *l >= len).min_by_key(|(_, (_, l))| *l).map(|(j, _)| j);
            let offset = match slot {
                Some(j) => {
                    let (offset, l) = free.swap_remove(j);
                    if l > len {
                        free.push((offset + len, l - len));
                    }
                    offset
                }
                None => {
                    scratch_len += len;
                    scratch_len - len
                }
            };
            alive.push((last_use[value], offset, len));
            offset
        };
        for produced in produces(kernel) {
            let v = produced.0;
            locations[v] = match (in_place[v], placed.host[v]) {
                (Some(offset), _) => Location::Store(offset),
                (None, Some((join, at))) => {
                    let offset = *join_at[join].get_or_insert_with(|| take(join));
                    locations[join] = Location::Scratch(offset);
                    Location::Scratch(offset + at)
                }
                (None, None) => Location::Scratch(take(v)),
            };
        }
    }
    scratch_len
}
