//! Joining element-wise loops of one size when one reads what another
//! computes (an optimizer's new state and new weights in one pass), and
//! where each kernel then runs, which decides the in-place writes.

use super::{
    Broadcast, MAX_FUSED_DEPTH, Roots, broadcast_slot, expression_depth, is_elementwise, squashed_where_stored,
};
use crate::ir::{Graph, Op, numel};

/// Loops joined into one hold at most this many roots.
const MAX_JOINED_ROOTS: usize = 4;

/// Joins the element-wise loops that read a value computed by another
/// element-wise loop of the same size into that loop: an optimizer's new
/// momentum, computed and stored by one pass and read back by the weights'
/// update in a second, is read from a register in one pass that reads the
/// old momentum, gradient and weights once each. A value that is neither
/// given back nor read outside the joined loop is no longer stored (a
/// value several loops read, computed once in the joined one). The
/// values are computed by the same operations, so they keep their bits.
///
/// Only loops without broadcast inputs join (every element of every root
/// reads the same element of its inputs, so the loop can compute each
/// root's element before storing any, and a root written over a tensor
/// another root reads still sees its old value), at most
/// `MAX_JOINED_ROOTS`, and only when every kernel outside the joined loop
/// that reads one of its roots runs after the last root's place, where the
/// joined loop runs. Returns each loop of more than one root, its roots in
/// graph order.
pub(super) fn join_loops(
    g: &Graph,
    live: &[bool],
    consumers: &[Vec<usize>],
    roots: &Roots,
    fused: &mut [bool],
    broadcasts: &[Option<Broadcast>],
) -> Loops {
    // Each loop formed so far (None once joined into a later one), and the
    // loop each value is a root of: a value's loop is found without a search.
    let mut loops: Vec<Option<Vec<usize>>> = Vec::new();
    let mut loop_of: Vec<Option<usize>> = vec![None; g.nodes.len()];
    let mut depth = vec![1; g.nodes.len()];
    for (i, node) in g.nodes.iter().enumerate() {
        depth[i] = expression_depth(g, fused, &depth, i);
        if !live[i]
            || fused[i]
            || !is_elementwise(&node.op)
            || broadcasts[i].is_some()
            || squashed_where_stored(g, consumers, roots, i)
        {
            continue;
        }
        let fits = |&c: &usize| {
            let reader = &g.nodes[c];
            let mut slots = reader.inputs.iter().enumerate().filter(|(_, v)| v.0 == i);
            is_elementwise(&reader.op)
                && numel(&reader.shape) == numel(&node.shape)
                && slots.all(|(slot, _)| !broadcast_slot(&reader.op, slot))
        };
        let (inner, outer): (Vec<usize>, Vec<usize>) = consumers[i].iter().partition(|c| fits(c));
        if inner.is_empty() {
            continue;
        }
        let stored = roots.contains(i) || !outer.is_empty() || depth[i] >= MAX_FUSED_DEPTH;
        let mut joined: Vec<usize> = inner.iter().flat_map(|&c| loop_roots(consumers, fused, c)).collect();
        if stored {
            joined.push(i);
        }
        // Loops already joined with one of these, or with `i` itself (which,
        // no longer stored, is then computed in the loops reading it).
        let mut overlapping: Vec<usize> = joined.iter().chain([&i]).filter_map(|&r| loop_of[r]).collect();
        overlapping.sort_unstable();
        overlapping.dedup();
        joined.extend(overlapping.iter().flat_map(|&l| loops[l].iter().flatten()));
        joined.retain(|&r| stored || r != i);
        joined.sort_unstable();
        joined.dedup();
        fused[i] = !stored;
        let last = *joined.last().expect("a value with readers reaches a loop");
        // A reader in the joined loop takes a root's element from a register:
        // never one read whole, as a scalar, which would be loaded before it is stored.
        let inside = |c: usize, r: usize| {
            let in_loop =
                joined.contains(&c) || (fused[c] && loop_roots(consumers, fused, c).iter().all(|x| joined.contains(x)));
            let reader = &g.nodes[c];
            in_loop && reader.inputs.iter().enumerate().all(|(slot, v)| v.0 != r || !broadcast_slot(&reader.op, slot))
        };
        let joinable = |&r: &usize| {
            is_elementwise(&g.nodes[r].op)
                && broadcasts[r].is_none()
                && consumers[r].iter().all(|&c| c > last || inside(c, r))
                && !reads_leaf_broadcast(g, fused, r)
        };
        if joined.len() > MAX_JOINED_ROOTS || !joined.iter().all(joinable) {
            fused[i] = false;
            continue;
        }
        for l in overlapping {
            for r in loops[l].take().into_iter().flatten() {
                loop_of[r] = None;
            }
        }
        if joined.len() > 1 {
            for &r in &joined {
                loop_of[r] = Some(loops.len());
            }
            loops.push(Some(joined));
        }
    }
    Loops::new(loops.into_iter().flatten().collect(), g.nodes.len())
}

/// The joined loops (each of more than one root, in graph order) and the
/// loop each value is a root of.
pub(super) struct Loops {
    roots: Vec<Vec<usize>>,
    of: Vec<Option<usize>>,
}

impl Loops {
    fn new(roots: Vec<Vec<usize>>, values: usize) -> Loops {
        let mut of = vec![None; values];
        for (l, joined) in roots.iter().enumerate() {
            for &r in joined {
                of[r] = Some(l);
            }
        }
        Loops { roots, of }
    }

    /// The roots of the joined loop value `i` is a root of, if any.
    pub(super) fn of(&self, i: usize) -> Option<&[usize]> {
        self.of[i].map(|l| self.roots[l].as_slice())
    }
}

/// The roots of the loops that compute value `i` (itself, unless fused).
fn loop_roots(consumers: &[Vec<usize>], fused: &[bool], i: usize) -> Vec<usize> {
    if !fused[i] {
        return vec![i];
    }
    consumers[i].iter().flat_map(|&c| loop_roots(consumers, fused, c)).collect()
}

/// Whether the expression computing `i` reads a parameter or state in a
/// broadcast slot (a loop storing that tensor would read it at other
/// elements than the one it stores).
fn reads_leaf_broadcast(g: &Graph, fused: &[bool], i: usize) -> bool {
    let node = &g.nodes[i];
    node.inputs.iter().enumerate().any(|(slot, v)| {
        let leaf = matches!(g.nodes[v.0].op, Op::Param(_) | Op::State(_));
        (leaf && broadcast_slot(&node.op, slot)) || (fused[v.0] && reads_leaf_broadcast(g, fused, v.0))
    })
}

/// Where, in graph order, the kernel reading each value's inputs runs: a
/// joined loop at its last root, a fused value or a reshape where the
/// kernels reading it run (the latest of them), anything else at itself.
pub(super) fn runs_at(g: &Graph, consumers: &[Vec<usize>], fused: &[bool], loops: &Loops) -> Vec<usize> {
    let mut at: Vec<usize> = (0..g.nodes.len()).collect();
    for i in (0..g.nodes.len()).rev() {
        if fused[i] || g.nodes[i].op == Op::Reshape {
            at[i] = consumers[i].iter().map(|&c| at[c]).max().unwrap_or(i);
        } else if let Some(&last) = loops.of(i).and_then(|joined| joined.last()) {
            at[i] = last;
        }
    }
    at
}
