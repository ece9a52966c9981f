//! The order of a plan's kernels: updates written in place run as soon as
//! what they read is ready, sums over processes start as soon as their
//! input is ready and are awaited once, and per-channel sums over one
//! tensor are paired into one pass.

use std::collections::HashMap;

use super::{Kernel, Location, kernel_reads, produces};
use crate::ir::{Graph, Op, ValueId};

/// The tensor a paired `Kernel::ChannelSums` sums, and the value its
/// products are taken with.
pub fn channel_sums_operands(g: &Graph, sum: ValueId, product: ValueId) -> (ValueId, ValueId) {
    let tensor = g.nodes[sum.0].inputs[0];
    let ins = &g.nodes[product.0].inputs;
    (tensor, if ins[0] == tensor { ins[1] } else { ins[0] })
}

/// Runs each per-channel sum of a tensor together with a later sum of its
/// products with a value computed before the first (batch normalisation's
/// backward pass: β's and γ's gradients both sum its incoming gradient):
/// one pass over the tensor instead of two. `kernels` are in graph order,
/// so a value numbered below the sum's is computed by then.
pub(super) fn pair_channel_sums(g: &Graph, kernels: &mut Vec<Kernel>) {
    let mut i = 0;
    while i < kernels.len() {
        if let Kernel::Routine { node: sum } = kernels[i]
            && g.nodes[sum.0].op == Op::SumChannels
        {
            let tensor = g.nodes[sum.0].inputs[0];
            let partner = kernels.iter().enumerate().skip(i + 1).find_map(|(j, kernel)| match *kernel {
                Kernel::Routine { node } if g.nodes[node.0].op == Op::SumProductChannels => {
                    let other = channel_sums_operands(g, sum, node).1;
                    (g.nodes[node.0].inputs.contains(&tensor) && other.0 < sum.0).then_some((j, node))
                }
                _ => None,
            });
            if let Some((j, product)) = partner {
                kernels.remove(j);
                kernels[i] = Kernel::ChannelSums { sum, product };
            }
        }
        i += 1;
    }
}

/// Moves each element-wise kernel that writes into the store in place (an
/// optimizer's update of a parameter and its state) to just after the last
/// kernel it must follow: the one computing a value it reads, or reading a
/// stored value it overwrites. A step's updates then run one by one as
/// their gradients are ready rather than all together at the end: each
/// gradient's space is free for the rest of the backward pass, so the
/// scratch is smaller (a wide MLP's by a quarter).
pub(super) fn hoist_updates(
    g: &Graph,
    fused: &[bool],
    locations: &[Location],
    in_place: &[Option<usize>],
    kernels: &mut [Kernel],
) {
    // The store offsets a kernel overwrites, and the offset a value it reads lives at.
    let writes = |kernel: &Kernel| produces(kernel).filter_map(|v| in_place[v.0]).collect::<Vec<usize>>();
    let stored_at = |v: &ValueId| match locations[v.0] {
        Location::Store(o) => Some(o),
        _ => None,
    };
    let mut places = Places::new(kernels.len());
    // The last of the kernels placed so far that waits for all before it,
    // that computes each value, that reads a value stored at each offset,
    // and that writes each offset.
    let mut barrier = None;
    let mut producer = vec![None; g.nodes.len()];
    let (mut reader_at, mut writer_at) = (HashMap::new(), HashMap::new());
    for (i, kernel) in kernels.iter().enumerate() {
        let (reads, overwrites) = (kernel_reads(g, kernel, fused), writes(kernel));
        // An update of summed gradients stays last: hoisted, it would
        // await its sum at once rather than while the backward pass runs.
        let hoisted = matches!(kernel, Kernel::Elementwise { .. })
            && !overwrites.is_empty()
            && !reads.iter().any(|v| g.nodes[v.0].op == Op::AllReduce);
        if hoisted {
            let mut after = barrier;
            for v in &reads {
                after = places.later(after, producer[v.0]);
                after = stored_at(v).map_or(after, |o| places.later(after, writer_at.get(&o).copied()));
            }
            for o in &overwrites {
                after = places.later(after, reader_at.get(o).copied());
                after = places.later(after, writer_at.get(o).copied());
            }
            places.put_after(i, after);
        }
        if matches!(kernel, Kernel::Copy { .. } | Kernel::AwaitSums) {
            barrier = places.later(barrier, Some(i));
        }
        for v in produces(kernel) {
            producer[v.0] = places.later(producer[v.0], Some(i));
        }
        for o in reads.iter().filter_map(stored_at) {
            reader_at.insert(o, places.later(reader_at.get(&o).copied(), Some(i)).expect("i is placed"));
        }
        for o in overwrites {
            writer_at.insert(o, places.later(writer_at.get(&o).copied(), Some(i)).expect("i is placed"));
        }
    }
    places.reorder(kernels);
}

/// Where kernels go when some move earlier, one by one in their order, each
/// to just after a kernel before it (or to the front), as a path: a
/// kernel that stays is its index; one moved after kernel j is j's path
/// and one step more, before the steps of those moved after j earlier. The
/// kernels then sort by their paths. Each move costs its path, not the
/// kernels it passes (a model thousands of layers deep has thousands of
/// updates, each moving past most of the backward pass).
pub(super) struct Places {
    paths: Vec<Vec<isize>>,
    /// How many kernels have moved to just after each kernel, and to the front.
    moved_after: Vec<isize>,
    moved_to_front: isize,
}

impl Places {
    /// Every kernel where it is.
    pub(super) fn new(kernels: usize) -> Places {
        Places {
            paths: (0..kernels).map(|i| vec![i as isize]).collect(),
            moved_after: vec![0; kernels],
            moved_to_front: 0,
        }
    }

    /// Moves kernel `i` to just after kernel `j` (before it, in order), or
    /// to the front.
    pub(super) fn put_after(&mut self, i: usize, j: Option<usize>) {
        self.paths[i] = match j {
            Some(j) => {
                self.moved_after[j] += 1;
                [self.paths[j].as_slice(), &[-self.moved_after[j]]].concat()
            }
            None => {
                self.moved_to_front += 1;
                vec![-1, -self.moved_to_front]
            }
        };
    }

    /// Which of two kernels comes later, if any is given.
    pub(super) fn later(&self, a: Option<usize>, b: Option<usize>) -> Option<usize> {
        match (a, b) {
            (Some(a), Some(b)) => Some(if self.paths[a] > self.paths[b] { a } else { b }),
            (a, b) => a.or(b),
        }
    }

    /// Puts the kernels in their places.
    pub(super) fn reorder(self, kernels: &mut [Kernel]) {
        let mut order: Vec<usize> = (0..kernels.len()).collect();
        order.sort_by(|&a, &b| self.paths[a].cmp(&self.paths[b]));
        let mut taken: Vec<Option<Kernel>> =
            kernels.iter_mut().map(|k| Some(std::mem::replace(k, Kernel::AwaitSums))).collect();
        for (slot, i) in kernels.iter_mut().zip(order) {
            *slot = taken[i].take().expect("each kernel placed once");
        }
    }
}

/// Moves each sum over the processes (`all_reduce`) to just after the kernel
/// computing its input, and puts one wait for all started sums before the
/// first kernel reading any of them: the gradient of a layer is sent while
/// the backward pass of the layers below runs. Every process plans the same
/// order, so they start the same sums in the same order.
pub(super) fn overlap_sums(g: &Graph, fused: &[bool], kernels: Vec<Kernel>) -> Vec<Kernel> {
    let is_sum = |k: &Kernel| matches!(k, Kernel::Routine { node } if g.nodes[node.0].op == Op::AllReduce);
    let (sums, rest): (Vec<Kernel>, Vec<Kernel>) = kernels.into_iter().partition(|k| is_sum(k));
    // The first kernel computing each value, and the sums to start just
    // after each kernel (or before all), in their order.
    let mut producer = vec![None; g.nodes.len()];
    for (k, kernel) in rest.iter().enumerate() {
        for v in produces(kernel) {
            producer[v.0] = producer[v.0].or(Some(k));
        }
    }
    let (mut first, mut after) = (Vec::new(), vec![Vec::new(); rest.len()]);
    for sum in sums {
        let Kernel::Routine { node } = sum else { unreachable!("partitioned by is_sum") };
        let mut input = g.nodes[node.0].inputs[0];
        while g.nodes[input.0].op == Op::Reshape {
            input = g.nodes[input.0].inputs[0];
        }
        match producer[input.0] {
            Some(k) => after[k].push(sum),
            None => first.push(sum),
        }
    }
    let rest = first
        .into_iter()
        .chain(rest.into_iter().zip(after).flat_map(|(kernel, sums)| [kernel].into_iter().chain(sums)));
    let mut ordered = Vec::new();
    // Whether each value is a sum started and not yet awaited.
    let (mut started, mut pending) = (vec![false; g.nodes.len()], Vec::new());
    for kernel in rest {
        if !pending.is_empty() && kernel_reads(g, &kernel, fused).iter().any(|v| started[v.0]) {
            ordered.push(Kernel::AwaitSums);
            for v in pending.drain(..) {
                started[v] = false;
            }
        }
        if is_sum(&kernel) {
            for v in produces(&kernel) {
                started[v.0] = true;
                pending.push(v.0);
            }
        }
        ordered.push(kernel);
    }
    if !pending.is_empty() {
        ordered.push(Kernel::AwaitSums);
    }
    ordered
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::Shard;
    use crate::pipeline::{check_source, shard_step_graph};
    use crate::plan::{Location, plan_train};

    /// Each batch normalisation's backward pass sums its incoming gradient
    /// per channel and its products with the centred input in one kernel,
    /// split over processes or not; the forward pass's sums (of different
    /// tensors) stay apart, and every paired output still gets its own
    /// place. (Convolutions without bias: a bias's gradient is one more
    /// sum over channels, with no product to pair.)
    /// Kernels told apart by the copy each stands for.
    fn numbered(n: usize) -> Vec<Kernel> {
        (0..n).map(|i| Kernel::Copy { from: ValueId(i), to: i, len: 1 }).collect()
    }

    fn order(kernels: &[Kernel]) -> Vec<usize> {
        kernels.iter().map(|k| if let Kernel::Copy { to, .. } = k { *to } else { unreachable!() }).collect()
    }

    /// Kernels moved one by one to just after another, as a rotation of
    /// the kernels between would put them: a later move to the same
    /// place goes first, a move after a moved kernel follows it.
    #[test]
    fn places_put_each_moved_kernel_just_after_the_one_given() {
        let mut kernels = numbered(8);
        let mut places = Places::new(8);
        places.put_after(3, Some(0));
        places.put_after(4, Some(0));
        places.put_after(5, Some(3));
        places.put_after(6, None);
        places.put_after(7, None);
        assert_eq!(places.later(Some(3), Some(1)), Some(1));
        assert_eq!(places.later(Some(4), Some(3)), Some(3));
        assert_eq!(places.later(Some(5), Some(4)), Some(5));
        assert_eq!(places.later(None, Some(6)), Some(6));
        places.reorder(&mut kernels);
        assert_eq!(order(&kernels), [7, 6, 0, 4, 3, 5, 1, 2]);
    }

    #[test]
    fn batch_normalisations_gradient_sums_run_in_one_pass() {
        let source = "model m {\n  input x: [1, 8, 8]\n  target y: class(3)\n  \
                      x |> conv2d(4, kernel = 3, bias = false) |> batchnorm |> relu |> conv2d(4, kernel = 3, bias = false) |> batchnorm |> relu \
                      |> flatten |> dense(3) => logits\n  \
                      loss = cross_entropy(logits, y)\n  train { optimizer = adam(lr = 0.01) batch = 8 }\n}\n";
        let checked = check_source("m.nn", source);
        assert!(!checked.has_errors(), "{:?}", checked.diags);
        let model = &checked.models[0];
        for shard in [Shard::whole(8), Shard::part(8, 1, 2)] {
            let step = shard_step_graph(model, &model.train, shard).expect("step builds");
            let plan = plan_train(&step);
            let g = &step.graph;
            let pairs: Vec<(ValueId, ValueId)> = plan
                .kernels
                .iter()
                .filter_map(|k| match *k {
                    Kernel::ChannelSums { sum, product } => Some((sum, product)),
                    _ => None,
                })
                .collect();
            assert_eq!(pairs.len(), 2, "{shard:?}:\n{}", plan.to_text(g));
            for (sum, product) in pairs {
                assert!(g.nodes[product.0].inputs.contains(&g.nodes[sum.0].inputs[0]));
                assert!(matches!(plan.locations[sum.0], Location::Scratch(_)));
                assert_ne!(plan.locations[sum.0], plan.locations[product.0]);
            }
            let alone = |op: Op| {
                plan.kernels
                    .iter()
                    .filter(|k| matches!(k, Kernel::Routine { node } if g.nodes[node.0].op == op))
                    .count()
            };
            assert_eq!((alone(Op::SumChannels), alone(Op::SumProductChannels)), (2, 2), "the forward pass's sums");
        }
    }

    /// A step of one process's share of a batch: each gradient's sum starts
    /// right after the kernel computing it, while the backward pass of the
    /// layers below is still to run, and is written over the gradient,
    /// which nothing else reads; one wait comes before the update.
    #[test]
    fn sums_start_as_each_gradient_is_ready_over_it_and_are_awaited_once_before_the_update() {
        let source = "model m {\n  input x: [20]\n  target y: class(3)\n  \
                      x |> dense(16) |> tanh |> dense(8) |> relu |> dense(3) => logits\n  \
                      loss = cross_entropy(logits, y)\n  train { optimizer = sgd(lr = 0.1) batch = 8 }\n}\n";
        let checked = check_source("m.nn", source);
        assert!(!checked.has_errors(), "{:?}", checked.diags);
        let model = &checked.models[0];
        let step = shard_step_graph(model, &model.train, Shard::part(8, 1, 2)).expect("step builds");
        let plan = plan_train(&step);
        let g = &step.graph;
        let fused: Vec<bool> = plan.locations.iter().map(|l| *l == Location::Fused).collect();
        let is_sum = |k: &Kernel| matches!(k, Kernel::Routine { node } if g.nodes[node.0].op == Op::AllReduce);
        let sums: Vec<usize> = (0..plan.kernels.len()).filter(|&k| is_sum(&plan.kernels[k])).collect();
        assert_eq!(sums.len(), 6, "a sum per weight and bias:\n{}", plan.to_text(g));
        for &k in &sums {
            let Kernel::Routine { node } = plan.kernels[k] else { unreachable!() };
            let input = g.nodes[node.0].inputs[0];
            let producer = (0..k).rev().find(|&j| produces(&plan.kernels[j]).any(|v| v == input));
            assert!(
                producer.is_some_and(|j| (j + 1..k).all(|i| is_sum(&plan.kernels[i]))),
                "sum at {k} does not follow its input's kernel:\n{}",
                plan.to_text(g)
            );
            assert_eq!(plan.locations[node.0], plan.locations[input.0], "sum at {k}:\n{}", plan.to_text(g));
        }
        let waits: Vec<usize> = (0..plan.kernels.len()).filter(|&k| plan.kernels[k] == Kernel::AwaitSums).collect();
        let first_reader = (0..plan.kernels.len())
            .find(|&k| {
                kernel_reads(g, &plan.kernels[k], &fused)
                    .iter()
                    .any(|v| sums.iter().any(|&s| produces(&plan.kernels[s]).any(|p| p == *v)))
            })
            .expect("the update reads the sums");
        assert_eq!(waits, vec![first_reader - 1], "one wait, just before the first reader:\n{}", plan.to_text(g));
        // The first sum starts before the last matrix product (the first layer's gradient) runs.
        let last_product = plan.kernels.iter().rposition(|k| matches!(k, Kernel::MatMul { .. })).expect("products");
        assert!(sums[0] < last_product, "nothing overlaps:\n{}", plan.to_text(g));
    }
}
