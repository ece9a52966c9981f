//! Where every kernel's output lives in the scratch arena: best fit over
//! the ranges of values no later kernel reads; joins whose parts are
//! computed where the join would have copied them; and slices and joins
//! that are already whole blocks of another value, read where they lie;
//! and sums over the processes written over the gradients they sum.

use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap, HashMap};

use super::{ALIGN, Kernel, Location, Roots, kernel_reads, produces};
use crate::ir::{Graph, Op, Unary, ValueId, numel};

/// Values that live inside another's block rather than in their own.
pub(super) struct Placement {
    /// The joins whose parts are each written straight into their place
    /// in the join (the join is then no kernel).
    hosts: Vec<bool>,
    /// For such a part: its join and its offset there, in elements.
    host: Vec<Option<(usize, usize)>>,
    /// A slice or join that is a block of another value's: that value
    /// and the block's offset (no kernel computes it).
    view: Vec<Option<(usize, usize)>>,
}

/// The value a chain of reshapes starts from.
fn reshaped(g: &Graph, mut v: usize) -> usize {
    while g.nodes[v].op == Op::Reshape {
        v = g.nodes[v].inputs[0].0;
    }
    v
}

/// Finds, in graph order, what can live inside another value's block, and
/// drops the kernels that copied it there:
/// - a slice along an axis with nothing before it (one block of its input:
///   a time step of a time-major sequence) is read where it lies;
/// - a join (`Concat`) along such an axis whose parts already lie end to
///   end, in order, in one join's block is read there;
/// - any other such join whose every part is computed by a kernel of its
///   own, for nothing else's place, has each part written into its block
///   (a weight gradient's stacked operands, a sequence's steps).
///
/// Blocks start at aligned offsets; outputs and values written into the
/// store keep places of their own.
pub(super) fn place_blocks(
    g: &Graph,
    kernels: &mut Vec<Kernel>,
    roots: &Roots,
    in_place: &[Option<usize>],
) -> Placement {
    let n = g.nodes.len();
    let mut computed = vec![false; n];
    for kernel in kernels.iter() {
        for v in produces(kernel) {
            computed[v.0] = in_place[v.0].is_none();
        }
    }
    let mut placed = Placement { hosts: vec![false; n], host: vec![None; n], view: vec![None; n] };
    for (i, node) in g.nodes.iter().enumerate() {
        if !computed[i] {
            continue;
        }
        match node.op {
            Op::Slice { axis, start } => {
                let shape = g.shape(node.inputs[0]);
                let at = start * shape[axis + 1..].iter().product::<usize>();
                let base = reshaped(g, node.inputs[0].0);
                let resident = computed[base] || placed.hosts[base] || placed.view[base].is_some();
                if shape[..axis].iter().product::<usize>() == 1 && at.is_multiple_of(ALIGN) && resident {
                    placed.view[i] = Some((base, at));
                }
            }
            Op::Concat { axis } if node.shape[..axis].iter().product::<usize>() == 1 => {
                let parts: Vec<usize> = node.inputs.iter().map(|v| reshaped(g, v.0)).collect();
                let offsets: Vec<usize> = parts
                    .iter()
                    .scan(0, |at, &p| {
                        let here = *at;
                        *at += numel(&g.nodes[p].shape);
                        Some(here)
                    })
                    .collect();
                // Already end to end in one join's block?
                if let Some((join, first)) = placed.host[parts[0]] {
                    if parts.iter().zip(&offsets).all(|(&p, &at)| placed.host[p] == Some((join, first + at))) {
                        placed.view[i] = Some((join, first));
                    }
                    continue;
                }
                let free = |(k, &p): (usize, &usize)| {
                    computed[p]
                        && placed.host[p].is_none()
                        && !placed.hosts[p]
                        && placed.view[p].is_none()
                        && !roots.contains(p)
                        && !parts[..k].contains(&p)
                        && offsets[k].is_multiple_of(ALIGN)
                };
                if parts.iter().enumerate().all(free) {
                    placed.hosts[i] = true;
                    for (&p, &at) in parts.iter().zip(&offsets) {
                        placed.host[p] = Some((i, at));
                    }
                }
            }
            _ => {}
        }
    }
    kernels.retain(|kernel| match kernel {
        Kernel::Routine { node } => !placed.hosts[node.0] && placed.view[node.0].is_none(),
        _ => true,
    });
    placed
}

/// Drops the kernel copying a slice whose one reader is a σ or tanh
/// routine (an LSTM's or a GRU's gates: blocks of columns of the gates'
/// tensor): the routine reads the slice's rows where they lie in its
/// input. The slice then counts as fused into the routine, so what it
/// slices stays alive until the routine has run.
pub(super) fn squash_slices_where_they_lie(
    g: &Graph,
    kernels: &mut Vec<Kernel>,
    fused: &mut [bool],
    consumers: &[Vec<usize>],
    roots: &Roots,
) {
    let mut routine = vec![false; g.nodes.len()];
    for kernel in kernels.iter() {
        if let Kernel::Routine { node } = kernel {
            routine[node.0] = true;
        }
    }
    let squashes = |c: usize| matches!(g.nodes[c].op, Op::Unary(Unary::Sigmoid | Unary::Tanh));
    let read_in_place: Vec<bool> = (0..g.nodes.len())
        .map(|s| {
            matches!(g.nodes[s].op, Op::Slice { .. })
                && !roots.contains(s)
                && routine[s]
                && matches!(consumers[s][..], [c] if squashes(c) && routine[c])
        })
        .collect();
    for (fused, _) in fused.iter_mut().zip(&read_in_place).filter(|(_, read)| **read) {
        *fused = true;
    }
    kernels.retain(|k| !matches!(k, Kernel::Routine { node } if read_in_place[node.0]));
}

/// Gives every kernel's output a scratch offset (its store place when
/// written in place, its place in its join when `placed` puts it there),
/// reusing the space of values no later kernel reads: best fit over the
/// free ranges. A join whose parts are in place takes its whole block when
/// its first part is computed; a block keeps its space while anything
/// inside it is read. Returns the scratch size.
pub(super) fn assign_scratch(
    g: &Graph,
    kernels: &[Kernel],
    fused: &[bool],
    roots: &Roots,
    (in_place, placed): (&[Option<usize>], &Placement),
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
    // A value inside another's block keeps that block alive. A block
    // comes before what lies in it in graph order, so one pass from the
    // last value back carries a view of a view to its outermost block.
    for v in (0..g.nodes.len()).rev() {
        if let Some((block, _)) = placed.host[v].or(placed.view[v]) {
            last_use[block] = last_use[block].max(last_use[v]);
        }
    }
    let mut space = Space::default();
    for (k, kernel) in kernels.iter().enumerate() {
        // Release values whose last reader ran before this kernel.
        space.release_before(k);
        if let Some((sum, offset)) =
            sum_over_its_input(g, kernel, &last_use, k, (in_place, placed), locations, &mut space)
        {
            locations[sum] = Location::Scratch(offset);
            continue;
        }
        // A sum a loop computes keeps a partial sum per part of the loop.
        let partials =
            |value: usize| matches!(kernel, Kernel::Elementwise { sums, .. } if sums.contains(&ValueId(value)));
        let mut take = |value: usize| {
            let values = if partials(value) { nnc_runtime::KERNEL_PARTS } else { numel(&g.nodes[value].shape) };
            space.take(values.div_ceil(ALIGN) * ALIGN, last_use[value])
        };
        for produced in produces(kernel) {
            let v = produced.0;
            locations[v] = match (in_place[v], placed.host[v]) {
                (Some(offset), _) => Location::Store(offset),
                (None, Some((join, at))) => {
                    let offset = match locations[join] {
                        Location::Scratch(offset) => offset,
                        _ => take(join),
                    };
                    locations[join] = Location::Scratch(offset);
                    Location::Scratch(offset + at)
                }
                (None, None) => Location::Scratch(take(v)),
            };
        }
    }
    space.len
}

/// The scratch arena as it is handed out, kernel by kernel: the free
/// ranges, by length (best fit), and the ranges in use, by the last kernel
/// that reads them. Each step costs a logarithm of the ranges, not their
/// number: a recurrent layer unrolled over thousands of steps keeps
/// thousands of activations alive until its backward pass.
#[derive(Default)]
struct Space {
    /// (length, offset) of each free range.
    free: BTreeSet<(usize, usize)>,
    /// (last reader, offset) of each range in use, the earliest first; an
    /// entry whose range has since been kept longer (`keep_until`) is stale.
    ends: BinaryHeap<Reverse<(usize, usize)>>,
    /// Each range in use by its offset: its length and last reader.
    used: HashMap<usize, (usize, usize)>,
    /// The arena's length so far.
    len: usize,
}

impl Space {
    /// Frees the ranges no kernel from `k` on reads.
    fn release_before(&mut self, k: usize) {
        while let Some(&Reverse((last, offset))) = self.ends.peek().filter(|Reverse((last, _))| *last < k) {
            self.ends.pop();
            if let Some(&(len, current)) = self.used.get(&offset)
                && current == last
            {
                self.used.remove(&offset);
                self.free.insert((len, offset));
            }
        }
    }

    /// A range of `len` values read until kernel `last`: the smallest free
    /// range that holds it (its rest stays free), else new space at the end.
    fn take(&mut self, len: usize, last: usize) -> usize {
        if len == 0 {
            // An empty value holds no space (and no offset of its own).
            return 0;
        }
        let offset = match self.free.range((len, 0)..).next().copied() {
            Some((free, offset)) => {
                self.free.remove(&(free, offset));
                if free > len {
                    self.free.insert((free - len, offset + len));
                }
                offset
            }
            None => {
                self.len += len;
                self.len - len
            }
        };
        self.used.insert(offset, (len, last));
        self.ends.push(Reverse((last, offset)));
        offset
    }

    /// Keeps the range in use at `offset`, if it holds `len` values, until
    /// kernel `last`; whether it did.
    fn keep_until(&mut self, offset: usize, len: usize, last: usize) -> bool {
        match self.used.get_mut(&offset) {
            Some((held, until)) if *held >= len => {
                *until = last;
                self.ends.push(Reverse((last, offset)));
                true
            }
            _ => false,
        }
    }
}

/// The offset of the input of a sum over the processes (`AllReduce`)
/// that nothing reads after it, which the sum then overwrites: writing
/// the sum elsewhere would first read every line of a place no longer in
/// the caches (VGG-16's first dense layer's gradient, 411 MB). The input's
/// place stays alive as long as the sum. The sum and that offset, or None
/// for any other kernel.
fn sum_over_its_input(
    g: &Graph,
    kernel: &Kernel,
    last_use: &[usize],
    k: usize,
    (in_place, placed): (&[Option<usize>], &Placement),
    locations: &[Location],
    space: &mut Space,
) -> Option<(usize, usize)> {
    let Kernel::Routine { node } = kernel else { return None };
    let sum = node.0;
    if g.nodes[sum].op != Op::AllReduce || in_place[sum].is_some() || placed.host[sum].is_some() {
        return None;
    }
    let input = reshaped(g, g.nodes[sum].inputs[0].0);
    let own_place = placed.host[input].is_none() && !placed.hosts[input] && placed.view[input].is_none();
    let Location::Scratch(offset) = locations[input] else { return None };
    if !own_place || last_use[input] != k {
        return None;
    }
    let len = numel(&g.nodes[sum].shape).div_ceil(ALIGN) * ALIGN;
    space.keep_until(offset, len, last_use[sum]).then_some((sum, offset))
}

/// Places the views inside their blocks and the reshapes where what they
/// reshape lives, in graph order (so a view of a view, or of a reshape,
/// finds its block placed).
pub(super) fn place_views(g: &Graph, live: &[bool], placed: &Placement, locations: &mut [Location]) {
    for (i, node) in g.nodes.iter().enumerate() {
        if let Some((block, at)) = placed.view[i] {
            let Location::Scratch(offset) = locations[block] else {
                unreachable!("a view's block is in scratch: %{block} is at {:?}", locations[block])
            };
            locations[i] = Location::Scratch(offset + at);
        } else if live[i] && node.op == Op::Reshape {
            locations[i] = locations[node.inputs[0].0];
        }
    }
}
