//! Planning: a graph → the kernels a backend runs and where every value lives.
//!
//! - Element-wise chains are fused: a value whose only consumer is an
//!   element-wise op of the same size is computed inside that consumer's
//!   loop and never stored. Loops that read a value another loop of the
//!   same size computes run inside it (`join_loops`): an optimizer's new
//!   momentum is stored and read by the weights' update in one pass.
//! - Every stored value gets a static offset: parameters and optimizer state
//!   in the persistent *store*, intermediates in one *scratch* arena whose
//!   slots are reused once a value is dead (liveness over the kernel order).
//! - Reshapes alias their input; a parameter's (or state's) new value is
//!   written in place when nothing reads the old value afterwards; a
//!   slice that is a whole block of its value is read where it lies, and
//!   the parts of a join of whole blocks (a stack of rows) are computed
//!   in their place in it; a sum over the processes is written over its
//!   input when nothing reads the input afterwards (`scratch`).
//!
//! The plan is data: `--emit plan` prints it, the JIT compiles it.

use crate::ir::{Graph, Op, ParamInfo, StateInfo, TrainGraph, Unary, ValueId, numel};

mod join;
mod order;
mod reduce;
mod scratch;
mod share;
mod team;
mod text;

use join::{Loops, join_loops, runs_at};
pub use order::channel_sums_operands;
use order::{hoist_updates, overlap_sums, pair_channel_sums};
use reduce::{fold_sums, hoist_observed_sums, set_aside_sums, store_only_what_is_read};
use scratch::{assign_scratch, place_blocks, place_views, squash_slices_where_they_lie};
pub use share::{part_range, share_store};
pub use team::{TeamSplit, team_products};

/// Where a value's elements live.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Location {
    /// Offset (in f32 elements) into the persistent parameter/state store.
    Store(usize),
    /// Offset into the per-executable scratch arena.
    Scratch(usize),
    /// The batch of inputs passed to the step.
    Input,
    /// The batch of targets passed to the step.
    Target,
    /// Index into the step's scalar hyperparameters (lr, bias1, bias2).
    Hyper(usize),
    /// Computed inside a fused kernel, never stored.
    Fused,
}

/// One unit of work, in execution order.
#[derive(Debug, Clone, PartialEq)]
pub enum Kernel {
    /// One fused element-wise loop storing each of `roots` (in graph order;
    /// several when later ones read earlier ones or share their inputs'
    /// expressions, see `join_loops`), and computing each of `sums`, sums
    /// of squares of values it computes or reads (`reduce`).
    Elementwise { roots: Vec<ValueId>, sums: Vec<ValueId> },
    /// A matrix product through sgemm, or computed with the other steps
    /// sharing the store (`team_products`).
    MatMul { node: ValueId, team: Option<TeamSplit> },
    /// A row-wise or reducing op run by a runtime routine.
    Routine { node: ValueId },
    /// A per-channel sum of a tensor and a per-channel sum of its products
    /// with another, in one pass over both (`pair_channel_sums`).
    ChannelSums { sum: ValueId, product: ValueId },
    /// Copies a finished value into the store (when it could not be written in place).
    Copy { from: ValueId, to: usize, len: usize },
    /// Waits for every sum over the processes started so far (an
    /// `all_reduce` routine starts one; its output is read only after this).
    AwaitSums,
}

#[derive(Debug, Clone)]
pub struct Plan {
    pub kernels: Vec<Kernel>,
    pub locations: Vec<Location>,
    /// f32 elements of scratch needed.
    pub scratch_len: usize,
    /// Where the parameters and states live in the store.
    pub store: StoreLayout,
    /// For part `index` of `parts` steps sharing one store, (index,
    /// parts): each kernel writing the store writes only its part of the
    /// values (`share_store`, `part_range`).
    pub store_part: Option<(usize, usize)>,
}

/// The persistent store's layout: every parameter, then every state, each
/// aligned. Computed here only, from the graph's parameter and state lists,
/// so every plan of a model (any batch size, forward or step) agrees on the
/// offsets of what they share: model buffers come before optimizer state.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StoreLayout {
    /// (offset, length) in f32 elements of each parameter tensor.
    pub params: Vec<(usize, usize)>,
    /// (offset, length) of each state tensor.
    pub states: Vec<(usize, usize)>,
    /// f32 elements in all.
    pub len: usize,
}

impl StoreLayout {
    pub fn of(params: &[ParamInfo], states: &[StateInfo]) -> StoreLayout {
        let mut len = 0;
        let mut place = |shape: &[usize]| {
            let (offset, n) = (len, numel(shape));
            len += n.div_ceil(ALIGN) * ALIGN;
            (offset, n)
        };
        let params = params.iter().map(|p| place(&p.shape)).collect();
        let states = states.iter().map(|s| place(&s.shape)).collect();
        StoreLayout { params, states, len }
    }

    /// Whether a store laid out as `self` can run a plan laid out as
    /// `other`: the same parameters, and `other`'s states a prefix of ours
    /// (a forward pass reads the model's buffers, never optimizer state).
    pub fn holds(&self, other: &StoreLayout) -> bool {
        self.params == other.params && self.states.starts_with(&other.states) && other.len <= self.len
    }
}

/// Scratch slots are aligned to 16 floats (64 bytes, one cache line).
const ALIGN: usize = 16;

/// Whether an op is computed element by element (and so can be fused).
pub fn is_elementwise(op: &Op) -> bool {
    match op {
        Op::Unary(u) => !matches!(u, Unary::Log),
        Op::UnaryGrad(_) => true,
        Op::Add
        | Op::Sub
        | Op::Mul
        | Op::Div
        | Op::MulScalar
        | Op::AddBias
        | Op::AddChannelBias
        | Op::MulChannel
        | Op::MseGrad
        | Op::BceGrad
        | Op::Const(_) => true,
        Op::Input(_)
        | Op::Target(_)
        | Op::Param(_)
        | Op::State(_)
        | Op::Hyper(_)
        | Op::MatMul { .. }
        | Op::SumRows
        | Op::Reshape
        | Op::Softmax
        | Op::SoftmaxGrad
        | Op::SoftmaxCrossEntropy
        | Op::SoftmaxCrossEntropyGrad
        | Op::ClassWeights(_)
        | Op::Mse
        | Op::Bce
        | Op::SumSquares
        | Op::ClipScale(_)
        | Op::Conv2d { .. }
        | Op::Conv2dGradInput { .. }
        | Op::Conv2dGradWeight { .. }
        | Op::SumChannels
        | Op::SumProductChannels
        | Op::Pool { .. }
        | Op::PoolGrad { .. }
        | Op::Upsample(_)
        | Op::MaxPieces(_)
        | Op::MaxPiecesGrad(_)
        | Op::Slice { .. }
        | Op::SliceGrad { .. }
        | Op::Concat { .. }
        | Op::Gather
        | Op::GatherGrad
        | Op::Bernoulli { .. }
        | Op::Dropout { .. }
        | Op::AllReduce => false,
    }
}

/// Whether input `slot` of `op` is read broadcast (a scalar, a bias row or
/// one value per channel) rather than element by element; such inputs are
/// stored, never fused.
fn broadcast_slot(op: &Op, slot: usize) -> bool {
    matches!(
        (op, slot),
        (Op::MulScalar | Op::AddBias | Op::AddChannelBias | Op::MulChannel, 1) | (Op::MseGrad | Op::BceGrad, 2)
    )
}

/// How an element-wise op reads a per-feature or per-channel input, or a
/// block of columns of a wider tensor, which shapes the loop computing it
/// (row by row): one fused loop serves one of these.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Broadcast {
    /// A bias row of this length, repeated for every row (`add_bias`).
    Bias(usize),
    /// One value per channel of `[B, channels, spatial…]`.
    Channels { channels: usize, spatial: usize },
    /// Rows of this length, each read from a row of a wider tensor (a
    /// slice along an inner axis, read where it lies: a GRU's gates).
    Rows(usize),
}

impl Broadcast {
    pub fn of(g: &Graph, node: &crate::ir::Node) -> Option<Broadcast> {
        match node.op {
            Op::AddBias => Some(Broadcast::Bias(g.shape(node.inputs[1])[0])),
            Op::AddChannelBias | Op::MulChannel => {
                Some(Broadcast::Channels { channels: node.shape[1], spatial: crate::shape::spatial(&node.shape) })
            }
            Op::Slice { axis, .. } => {
                Some(Broadcast::Rows(node.shape[axis] * crate::shape::around(&node.shape, axis).1))
            }
            _ => None,
        }
    }

    /// The broadcast of one loop computing both, if one loop can: a bias
    /// row and slices' rows of the same length read the same rows.
    fn merge(a: Option<Broadcast>, b: Option<Broadcast>) -> Result<Option<Broadcast>, ()> {
        match (a, b) {
            (Some(Broadcast::Rows(w)), Some(Broadcast::Bias(v)))
            | (Some(Broadcast::Bias(v)), Some(Broadcast::Rows(w)))
                if v == w =>
            {
                Ok(Some(Broadcast::Bias(v)))
            }
            (Some(x), Some(y)) if x != y => Err(()),
            (x, y) => Ok(x.or(y)),
        }
    }
}

/// Plans a training step: its outputs are the loss, the prediction, the
/// observed scalars and the updated parameters and state.
pub fn plan_train(step: &TrainGraph) -> Plan {
    let g = &step.graph;
    let mut outputs: Vec<ValueId> = vec![g.prediction];
    outputs.extend(g.loss);
    outputs.extend(&step.observed);
    plan(g, &outputs, &step.new_params, &step.new_states)
}

/// Plans a forward graph (evaluation and inference).
pub fn plan_forward(g: &Graph) -> Plan {
    let mut outputs: Vec<ValueId> = vec![g.prediction];
    outputs.extend(g.loss);
    plan(g, &outputs, &[], &[])
}

/// What a plan must produce: the outputs it reads back, and the new value of
/// every parameter and state tensor (a training step's update).
struct Roots<'a> {
    outputs: &'a [ValueId],
    new_params: &'a [ValueId],
    new_states: &'a [ValueId],
    /// Whether each value is one of them (a deep model has thousands).
    marked: Vec<bool>,
}

impl<'a> Roots<'a> {
    fn new(g: &Graph, outputs: &'a [ValueId], new_params: &'a [ValueId], new_states: &'a [ValueId]) -> Roots<'a> {
        let mut marked = vec![false; g.nodes.len()];
        for v in outputs.iter().chain(new_params).chain(new_states) {
            marked[v.0] = true;
        }
        Roots { outputs, new_params, new_states, marked }
    }

    fn all(&self) -> impl Iterator<Item = &ValueId> {
        self.outputs.iter().chain(self.new_params).chain(self.new_states)
    }

    /// Whether node `i` is one of them.
    fn contains(&self, i: usize) -> bool {
        self.marked[i]
    }
}

fn plan(g: &Graph, outputs: &[ValueId], new_params: &[ValueId], new_states: &[ValueId]) -> Plan {
    let roots = Roots::new(g, outputs, new_params, new_states);
    let (live, mut consumers) = liveness(g, &roots);
    let foldable = set_aside_sums(g, &live, &mut consumers);
    let store = StoreLayout::of(&g.params, &g.states);
    let offsets = (store.params.iter().map(|&(o, _)| o).collect(), store.states.iter().map(|&(o, _)| o).collect());
    let (mut locations, mut fused, broadcasts) = place_and_fuse(g, &live, &consumers, &roots, &offsets);
    let loops = join_loops(g, &live, &consumers, &roots, &mut fused, &broadcasts);
    let runs_at = runs_at(g, &consumers, &fused, &loops);
    let in_place = in_place_updates(g, &consumers, &roots, &offsets, &runs_at);
    let mut kernels = kernels(g, (&live, &fused, &loops), &locations, &in_place, &roots, &offsets);
    fold_sums(g, &fused, &foldable, &mut kernels);
    store_only_what_is_read(g, &consumers, &roots, &mut kernels, (&mut locations, &mut fused));
    hoist_observed_sums(g, &fused, &consumers, &mut kernels);
    hoist_updates(g, &fused, &locations, &in_place, &mut kernels);
    let mut kernels = overlap_sums(g, &fused, kernels);
    let placed = place_blocks(g, &mut kernels, &roots, &in_place);
    squash_slices_where_they_lie(g, &mut kernels, &mut fused, &consumers, &roots);
    let scratch_len = assign_scratch(g, &kernels, &fused, &roots, (&in_place, &placed), &mut locations);
    place_views(g, &live, &placed, &mut locations);
    Plan { kernels, locations, scratch_len, store, store_part: None }
}

/// Store offsets of the parameters and of the states.
type Offsets = (Vec<usize>, Vec<usize>);

/// Which values the roots need (only those are computed), and each value's
/// live readers.
fn liveness(g: &Graph, roots: &Roots) -> (Vec<bool>, Vec<Vec<usize>>) {
    let n = g.nodes.len();
    let mut live = vec![false; n];
    for v in roots.all() {
        live[v.0] = true;
    }
    for i in (0..n).rev() {
        if live[i] {
            for v in &g.nodes[i].inputs {
                live[v.0] = true;
            }
        }
    }
    let mut consumers: Vec<Vec<usize>> = vec![Vec::new(); n];
    for (i, node) in g.nodes.iter().enumerate().filter(|(i, _)| live[*i]) {
        for v in &node.inputs {
            consumers[v.0].push(i);
        }
    }
    (live, consumers)
}

/// Where the leaves live, which element-wise values fuse into their
/// single element-wise consumer of the same size, and the broadcast of
/// each expression as fused.
fn place_and_fuse(
    g: &Graph,
    live: &[bool],
    consumers: &[Vec<usize>],
    roots: &Roots,
    (param_offsets, state_offsets): &Offsets,
) -> (Vec<Location>, Vec<bool>, Vec<Option<Broadcast>>) {
    let n = g.nodes.len();
    let mut locations = vec![Location::Fused; n];
    let mut fused = vec![false; n];
    // The broadcast of each expression as fused so far (its inputs come first).
    let mut broadcasts: Vec<Option<Broadcast>> = g.nodes.iter().map(|node| Broadcast::of(g, node)).collect();
    let mut depth = vec![1; n];
    for (i, node) in g.nodes.iter().enumerate() {
        if !live[i] {
            continue;
        }
        depth[i] = expression_depth(g, &fused, &depth, i);
        locations[i] = match node.op {
            Op::Input(_) => Location::Input,
            Op::Target(_) => Location::Target,
            Op::Param(p) => Location::Store(param_offsets[p]),
            Op::State(s) => Location::Store(state_offsets[s]),
            Op::Hyper(h) => Location::Hyper(h.offset()),
            _ => Location::Fused,
        };
        let single = consumers[i].len() == 1 && consumers[i][0] > i;
        let loop_reads = is_elementwise(&node.op) || read_in_rows(g, node);
        if loop_reads
            && single
            && depth[i] < MAX_FUSED_DEPTH
            && !roots.contains(i)
            && !squashed_where_stored(g, consumers, roots, i)
        {
            let c = &g.nodes[consumers[i][0]];
            let slot = c.inputs.iter().position(|v| v.0 == i).unwrap_or(0);
            let merged = Broadcast::merge(broadcasts[consumers[i][0]], broadcasts[i]);
            if let (true, Ok(merged)) =
                (is_elementwise(&c.op) && numel(&c.shape) == numel(&node.shape) && !broadcast_slot(&c.op, slot), merged)
            {
                fused[i] = true;
                broadcasts[consumers[i][0]] = merged;
            }
        }
    }
    (locations, fused, broadcasts)
}

/// The deepest expression one loop computes: a value deeper in a chain of
/// element-wise operations (a recurrent layer's state carried through
/// thousands of steps) is stored, and the chain goes on from it, so the
/// passes that walk an expression and the code that computes it stay
/// within their stack.
const MAX_FUSED_DEPTH: usize = 256;

/// The depth of the expression computing value `i`, its fused inputs'
/// included (`depth` holds theirs).
fn expression_depth(g: &Graph, fused: &[bool], depth: &[usize], i: usize) -> usize {
    1 + g.nodes[i].inputs.iter().filter(|v| fused[v.0]).map(|v| depth[v.0]).max().unwrap_or(0)
}

/// Whether `node` is a slice along an inner axis (rows of a block of
/// columns) that a loop reading it can read where it lies: not a slice of
/// a parameter or state, which a loop may be writing in place.
fn read_in_rows(g: &Graph, node: &crate::ir::Node) -> bool {
    let Op::Slice { axis, .. } = node.op else { return false };
    let leaf = matches!(g.nodes[node.inputs[0].0].op, Op::Param(_) | Op::State(_));
    crate::shape::around(&node.shape, axis).0 > 1 && !leaf
}

/// Whether value `i`'s one reader is σ or tanh, stored (read again, as by
/// its gradient): `i` is then stored too, for the runtime's routine, whose
/// vectors are four times as wide as a loop's, to squash it there.
fn squashed_where_stored(g: &Graph, consumers: &[Vec<usize>], roots: &Roots, i: usize) -> bool {
    let [c] = consumers[i][..] else { return false };
    matches!(g.nodes[c].op, Op::Unary(Unary::Sigmoid | Unary::Tanh)) && (consumers[c].len() != 1 || roots.contains(c))
}

/// The new values that can be written straight into the store: element-wise
/// ones whose old value no reader still needs when they are written.
fn in_place_updates(
    g: &Graph,
    consumers: &[Vec<usize>],
    roots: &Roots,
    offsets: &Offsets,
    runs_at: &[usize],
) -> Vec<Option<usize>> {
    let mut in_place: Vec<Option<usize>> = vec![None; g.nodes.len()];
    // The leaf holding the old value: parameter or state number `k`.
    let leaf = |op: &Op, states: bool| match (op, states) {
        (Op::Param(p), false) | (Op::State(p), true) => Some(*p),
        _ => None,
    };
    for (targets, offsets, states) in [(roots.new_params, &offsets.0, false), (roots.new_states, &offsets.1, true)] {
        // Where the last reader of each leaf's old value runs.
        let mut last_reads = vec![0; targets.len()];
        for (j, node) in g.nodes.iter().enumerate() {
            if let Some(last) = leaf(&node.op, states).and_then(|k| last_reads.get_mut(k)) {
                *last = consumers[j].iter().map(|&c| runs_at[c]).fold(*last, usize::max);
            }
        }
        for (k, v) in targets.iter().enumerate() {
            // Every reader of the old value must run no later than the writer.
            let last_read = last_reads[k];
            let node = &g.nodes[v.0];
            if last_read <= runs_at[v.0]
                && is_elementwise(&node.op)
                && !matches!(node.op, Op::Const(_))
                && in_place[v.0].is_none()
            {
                in_place[v.0] = Some(offsets[k]);
            }
        }
    }
    in_place
}

/// The kernels in graph order (a joined loop at its last root's place),
/// then a copy for each new store value not written in place.
fn kernels(
    g: &Graph,
    (live, fused, loops): (&[bool], &[bool], &Loops),
    locations: &[Location],
    in_place: &[Option<usize>],
    roots: &Roots,
    (param_offsets, state_offsets): &Offsets,
) -> Vec<Kernel> {
    let mut kernels = Vec::new();
    for (i, node) in g.nodes.iter().enumerate() {
        if !live[i]
            || fused[i]
            || matches!(locations[i], Location::Input | Location::Target | Location::Hyper(_) | Location::Store(_))
        {
            continue;
        }
        let v = ValueId(i);
        match &node.op {
            Op::Reshape => {}
            Op::MatMul { .. } => kernels.push(Kernel::MatMul { node: v, team: None }),
            op if is_elementwise(op) => match loops.of(i) {
                Some(joined) if joined.last() == Some(&i) => kernels.push(Kernel::Elementwise {
                    roots: joined.iter().map(|&r| ValueId(r)).collect(),
                    sums: Vec::new(),
                }),
                Some(_) => {}
                None if squashes_a_stored_value(g, fused, v) => kernels.push(Kernel::Routine { node: v }),
                None => kernels.push(Kernel::Elementwise { roots: vec![v], sums: Vec::new() }),
            },
            _ => kernels.push(Kernel::Routine { node: v }),
        }
    }
    pair_channel_sums(g, &mut kernels);
    for (targets, offsets) in [(roots.new_params, param_offsets), (roots.new_states, state_offsets)] {
        for (k, v) in targets.iter().enumerate() {
            // A parameter a step leaves alone is its own new value: nothing to copy.
            let unchanged = matches!(locations[v.0], Location::Store(o) if o == offsets[k]);
            if in_place[v.0].is_none() && !unchanged {
                kernels.push(Kernel::Copy { from: *v, to: offsets[k], len: numel(&g.nodes[v.0].shape) });
            }
        }
    }
    kernels
}

/// Whether `v` is σ or tanh of a value stored before its loop, and nothing
/// else: the runtime's routine computes it with the loops' operations, so
/// with their bits, in vectors four times as wide as theirs (an LSTM's
/// gates are such loops, each over a slice).
fn squashes_a_stored_value(g: &Graph, fused: &[bool], v: ValueId) -> bool {
    let node = &g.nodes[v.0];
    match (&node.op, node.inputs.as_slice()) {
        (Op::Unary(Unary::Sigmoid | Unary::Tanh), &[x]) => !fused[x.0],
        _ => false,
    }
}

/// The values a kernel computes.
fn produces(kernel: &Kernel) -> impl Iterator<Item = ValueId> {
    match kernel {
        Kernel::Elementwise { roots, sums } => [roots.as_slice(), sums].concat(),
        Kernel::MatMul { team: Some(TeamSplit::Sum { sum, update }), .. } => [&[*sum], update.as_slice()].concat(),
        Kernel::MatMul { node, .. } | Kernel::Routine { node } => vec![*node],
        Kernel::ChannelSums { sum, product } => vec![*sum, *product],
        Kernel::Copy { .. } | Kernel::AwaitSums => vec![],
    }
    .into_iter()
}

/// The stored values a kernel reads (looking through fused values and reshapes).
pub fn kernel_reads(g: &Graph, kernel: &Kernel, fused: &[bool]) -> Vec<ValueId> {
    let mut out = Vec::new();
    let mut stack: Vec<ValueId> = match kernel {
        Kernel::Elementwise { roots, sums } => {
            roots.iter().chain(sums).flat_map(|v| g.nodes[v.0].inputs.clone()).collect()
        }
        Kernel::MatMul { node, team: Some(TeamSplit::Sum { update, .. }) } => {
            [node].into_iter().chain(update).flat_map(|v| g.nodes[v.0].inputs.clone()).collect()
        }
        Kernel::MatMul { node, .. } | Kernel::Routine { node } => g.nodes[node.0].inputs.clone(),
        Kernel::ChannelSums { sum, product } => {
            [sum, product].iter().flat_map(|v| g.nodes[v.0].inputs.clone()).collect()
        }
        Kernel::Copy { from, .. } => vec![*from],
        Kernel::AwaitSums => vec![],
    };
    while let Some(v) = stack.pop() {
        let node = &g.nodes[v.0];
        if fused.get(v.0).copied().unwrap_or(false) || node.op == Op::Reshape {
            stack.extend(node.inputs.iter().copied());
        }
        if !fused.get(v.0).copied().unwrap_or(false) {
            out.push(v);
        }
    }
    out
}

impl Plan {
    /// Whether a kernel writes the store (a step's new parameters and
    /// states): a value placed there that no kernel computes, such as a
    /// reshape of a parameter, is the parameter read another way.
    pub fn writes_store(&self) -> bool {
        self.kernels.iter().any(|kernel| {
            matches!(kernel, Kernel::Copy { .. })
                || produces(kernel).any(|v| matches!(self.locations[v.0], Location::Store(_)))
        })
    }
}

/// A product's m, k and n: `m×k` by `k×n` (after its transposes).
pub fn product_dims(g: &Graph, v: ValueId) -> (usize, usize, usize) {
    let node = &g.nodes[v.0];
    let ta = matches!(node.op, Op::MatMul { ta: true, .. });
    let a = g.shape(node.inputs[0]);
    (node.shape[0], if ta { a[0] } else { a[1] }, node.shape[1])
}

/// The root and every value fused into it.
pub fn collect_fused(g: &Graph, locations: &[Location], v: ValueId, out: &mut Vec<ValueId>) {
    out.push(v);
    for input in &g.nodes[v.0].inputs {
        if locations[input.0] == Location::Fused && g.nodes[input.0].op != Op::Reshape {
            collect_fused(g, locations, *input, out);
        }
    }
}

#[cfg(test)]
mod tests;
