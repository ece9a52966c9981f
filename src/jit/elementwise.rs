//! Element-wise kernels: a fused expression (or several joined roots of
//! one layout) as a loop over its elements, four lanes at a time and then
//! one by one, reading stored tensors and computing fused ones inline.

use cranelift_codegen::ir::condcodes::IntCC;
use cranelift_codegen::ir::{InstBuilder, MemFlagsData, Value, types};
use cranelift_frontend::Variable;

use super::codegen::{Emitter, PTR, V};
use super::vector::splat;
use crate::ir::{Graph, Op, ValueId, numel};
use crate::plan::{Broadcast, Location, Plan, collect_fused};

/// How an element-wise kernel is laid out: `rows × cols` values, the
/// columns a bias row's length when the expression adds one, or a
/// channel's plane when it reads one value per channel (row r is then
/// channel r mod `channels`). Its units, the ranges its parts take, are
/// rows when it has several, else values.
pub struct Layout {
    pub rows: usize,
    pub cols: usize,
    pub channels: usize,
}

impl Layout {
    pub fn of(graph: &Graph, plan: &Plan, root: ValueId) -> Layout {
        let total = numel(graph.shape(root));
        let (cols, channels) = match broadcast(graph, plan, root) {
            Some(Broadcast::Bias(width) | Broadcast::Rows(width)) => (width, 1),
            Some(Broadcast::Channels { channels, spatial }) => (spatial, channels),
            None => (total, 1),
        };
        let cols = cols.max(1);
        Layout { rows: total / cols, cols, channels }
    }

    /// How many units the kernel has, and what a part's range is a multiple of.
    pub fn units(&self) -> (usize, usize) {
        if self.rows > 1 { (self.rows, 1) } else { (self.cols, 4) }
    }

    /// Whether the kernel is large enough to run in parts.
    pub fn parallel(&self) -> bool {
        self.rows * self.cols >= nnc_runtime::PARALLEL_ELEMENTS && self.units().0 >= 2
    }
}

/// The broadcast inside the fused expression at `v`, if any (the plan
/// fuses at most one kind into a loop).
fn broadcast(graph: &Graph, plan: &Plan, v: ValueId) -> Option<Broadcast> {
    let node = &graph.nodes[v.0];
    Broadcast::of(graph, node).or_else(|| {
        node.inputs
            .iter()
            .filter(|i| plan.locations[i.0] == Location::Fused && graph.nodes[i.0].op != Op::Reshape)
            .find_map(|i| broadcast(graph, plan, *i))
    })
}

/// Groups of four lanes a large element-wise loop (one run in parts)
/// takes a pass: the loop's test and jumps and the constants it
/// materialises are then shared by four groups (a momentum update's body
/// is some twenty instructions). Small loops keep one group a pass: four
/// copies of every body tripled the compile time of an LSTM's step.
const GROUPS: usize = 4;

/// Groups a pass in a large loop that also sums squares (`Kernel::Elementwise`'s
/// sums). Cranelift computes the squares at the end of the pass, so every
/// group's values wait there: four groups' did out of registers (W2's
/// update ran 30 % slower than with two), one group a pass reloaded the
/// loop's constants for every four values (10 % slower).
const GROUPS_WITH_SUMS: usize = 2;

impl Emitter<'_, '_> {
    /// A counted loop `for i in (start..end).step_by(step)`, while `i + step ≤ end`;
    /// returns the `i` it stopped at.
    fn counted(&mut self, start: Value, end: Value, step: usize, body: &mut dyn FnMut(&mut Self, Value)) -> Value {
        let header = self.b.create_block();
        let work = self.b.create_block();
        let exit = self.b.create_block();
        self.b.append_block_param(header, PTR);
        self.b.ins().jump(header, &[start.into()]);
        self.b.switch_to_block(header);
        let i = self.b.block_params(header)[0];
        let next = self.b.ins().iadd_imm_s(i, step as i64);
        let more = self.b.ins().icmp(IntCC::UnsignedLessThanOrEqual, next, end);
        self.b.ins().brif(more, work, &[], exit, &[]);
        self.b.switch_to_block(work);
        body(self, i);
        let next = self.b.ins().iadd_imm_s(i, step as i64);
        self.b.ins().jump(header, &[next.into()]);
        self.b.switch_to_block(exit);
        i
    }

    /// The loop evaluating the fused expressions rooted at `roots` (one
    /// layout, see `Layout`) over its units `[begin, end)`: each row's
    /// columns, or a run of values, four lanes at a time (`GROUPS` groups
    /// of four a pass while they last, in large loops) and then one by
    /// one. Every root's element is computed before any is stored, so a
    /// root written over a tensor another root reads sees its old value.
    /// Each of `sums` adds up the squares of its input over the range, in
    /// one chain of four lanes and one for the values one by one, and
    /// stores the total as its partial sum for the part starting at `begin`.
    pub fn elementwise(&mut self, (roots, sums): (&[ValueId], &[ValueId]), begin: Value, end: Value) {
        let layout = Layout::of(self.graph, self.plan, roots[0]);
        let groups = match (layout.parallel() && layout.cols >= 4 * GROUPS, sums.is_empty()) {
            (true, true) => GROUPS,
            (true, false) => GROUPS_WITH_SUMS,
            (false, _) => 1,
        };
        let (units, align) = layout.units();
        let Layout { rows, cols, channels } = layout;
        self.load_scalars(roots);
        let outs: Vec<Value> = roots.iter().map(|&root| self.base(root)).collect();
        let summed: Vec<ValueId> = sums.iter().map(|s| self.graph.nodes[s.0].inputs[0]).collect();
        let chains = self.sum_chains(sums.len());
        let run = |e: &mut Self, row_start: Value, (start, vec_end, end): (Value, Value, Value)| {
            let group = |e: &mut Self, j: Value| {
                e.computed.clear();
                let values: Vec<Value> = roots.iter().map(|&root| e.eval(root, row_start, j, true)).collect();
                let squared: Vec<Value> = summed.iter().map(|&x| e.operand(x, row_start, j, true)).collect();
                for (&value, &out) in values.iter().zip(&outs) {
                    let at = e.element_addr(out, row_start, j);
                    e.b.ins().store(MemFlagsData::new().with_notrap(), value, at, 0);
                }
                for (&x, &(lanes, _)) in squared.iter().zip(&chains) {
                    e.add_square(lanes, x);
                }
            };
            // The groups of a pass run in order, each stored before the
            // next is computed: the same operations as one group a pass.
            let rest = if groups > 1 {
                e.counted(start, vec_end, 4 * groups, &mut |e, j| {
                    for g in 0..groups {
                        let j = e.b.ins().iadd_imm_s(j, 4 * g as i64);
                        group(e, j);
                    }
                })
            } else {
                start
            };
            e.counted(rest, vec_end, 4, &mut |e, j| group(e, j));
            e.counted(vec_end, end, 1, &mut |e, j| {
                e.computed.clear();
                let values: Vec<Value> = roots.iter().map(|&root| e.eval(root, row_start, j, false)).collect();
                let squared: Vec<Value> = summed.iter().map(|&x| e.operand(x, row_start, j, false)).collect();
                for (&value, &out) in values.iter().zip(&outs) {
                    let lane = e.b.ins().extractlane(value, 0);
                    let at = e.element_addr(out, row_start, j);
                    e.b.ins().store(MemFlagsData::new().with_notrap(), lane, at, 0);
                }
                for (&x, &(_, single)) in squared.iter().zip(&chains) {
                    let x = e.b.ins().extractlane(x, 0);
                    e.add_square(single, x);
                }
            });
        };
        if rows > 1 {
            self.counted(begin, end, 1, &mut |e, r| {
                e.row = Some(r);
                // (A division a row, where no channel op needs it, cost a
                // GRU's step more than its gates' copies.)
                e.channel = Some(if channels > 1 { e.b.ins().urem_imm_u(r, channels as i64) } else { e.imm(0) });
                let row_start = e.b.ins().imul_imm_u(r, cols as i64);
                let (zero, vec_end, cols) = (e.imm(0), e.imm(cols - cols % 4), e.imm(cols));
                run(e, row_start, (zero, vec_end, cols));
            });
        } else {
            // One row: the range is of values, `begin` a multiple of four
            // (and a channel op here has one channel of one image).
            let row_start = self.imm(0);
            self.channel = Some(row_start);
            self.row = None;
            let length = self.b.ins().isub(end, begin);
            let tail = self.b.ins().band_imm_u(length, 3);
            let vec_end = self.b.ins().isub(end, tail);
            run(self, row_start, (begin, vec_end, end));
        }
        if !sums.is_empty() {
            // Part k of `nnc_parallel_parts` starts at k · part_units.
            let part = self.b.ins().udiv_imm_u(begin, nnc_runtime::part_units(units, align) as i64);
            let offset = self.b.ins().ishl_imm_u(part, 2);
            for (&sum, (lanes, single)) in sums.iter().zip(chains) {
                let total = self.sum_of_chains(lanes, single);
                let base = self.base(sum);
                let at = self.b.ins().iadd(base, offset);
                self.b.ins().store(MemFlagsData::new().with_notrap(), total, at, 0);
            }
        }
    }

    /// For each of `sums` sums, a chain of four lanes and one of single
    /// values, each starting at zero. One chain of lanes a sum, whatever
    /// the groups of a pass: a chain per group held a large update's
    /// sums in twelve registers, more than the loop had to spare (the
    /// loop ran 10–15 % slower), and the chain's additions still wait
    /// less than the pass takes.
    fn sum_chains(&mut self, sums: usize) -> Vec<(Variable, Variable)> {
        let (zeros, zero) = (splat(&mut self.b, 0.0), self.b.ins().f32const(0.0));
        let mut chain = |start: Value, ty| {
            let var = self.b.declare_var(ty);
            self.b.def_var(var, start);
            var
        };
        (0..sums).map(|_| (chain(zeros, V), chain(zero, types::F32))).collect()
    }

    /// `chain` += x·x (four lanes or one).
    fn add_square(&mut self, chain: Variable, x: Value) {
        let square = self.b.ins().fmul(x, x);
        let sum = self.b.use_var(chain);
        let sum = self.b.ins().fadd(sum, square);
        self.b.def_var(chain, sum);
    }

    /// The chains of one sum added in a fixed order: the four lanes
    /// pairwise, then the single values.
    fn sum_of_chains(&mut self, lanes: Variable, single: Variable) -> Value {
        let vector = self.b.use_var(lanes);
        let lane: Vec<Value> = (0..4).map(|k| self.b.ins().extractlane(vector, k)).collect();
        let (low, high) = (self.b.ins().fadd(lane[0], lane[1]), self.b.ins().fadd(lane[2], lane[3]));
        let four = self.b.ins().fadd(low, high);
        let single = self.b.use_var(single);
        self.b.ins().fadd(four, single)
    }

    /// Moves each sum's partial sum `slot` into its first.
    pub fn move_partial_sums(&mut self, sums: &[ValueId], slot: usize) {
        if slot == 0 {
            return;
        }
        let flags = MemFlagsData::new().with_notrap();
        for &sum in sums {
            let base = self.base(sum);
            let partial = self.b.ins().load(types::F32, flags, base, (4 * slot) as i32);
            self.b.ins().store(flags, partial, base, 0);
        }
    }

    /// Adds each sum's partial sums, one per part of its loop, in order,
    /// into its first.
    pub fn add_partial_sums(&mut self, sums: &[ValueId], parts: usize) {
        if parts < 2 {
            return;
        }
        let flags = MemFlagsData::new().with_notrap();
        for &sum in sums {
            let base = self.base(sum);
            let mut total = self.b.ins().load(types::F32, flags, base, 0);
            for k in 1..parts {
                let partial = self.b.ins().load(types::F32, flags, base, (4 * k) as i32);
                total = self.b.ins().fadd(total, partial);
            }
            self.b.ins().store(flags, total, base, 0);
        }
    }

    fn element_addr(&mut self, base: Value, row_start: Value, j: Value) -> Value {
        let i = self.b.ins().iadd(row_start, j);
        let off = self.b.ins().ishl_imm_u(i, 2);
        self.b.ins().iadd(base, off)
    }

    /// Loads lanes of a stored tensor at the current element (4 lanes or 1 splatted).
    fn load(&mut self, v: ValueId, row_start: Value, j: Value, vector: bool) -> Value {
        let base = self.base(v);
        self.load_from(base, row_start, j, vector)
    }

    /// Loads lanes at element `row_start + j` of the values from `base`.
    fn load_from(&mut self, base: Value, row_start: Value, j: Value, vector: bool) -> Value {
        let at = self.element_addr(base, row_start, j);
        self.load_at(at, vector)
    }

    fn load_at(&mut self, at: Value, vector: bool) -> Value {
        let flags = MemFlagsData::new().with_notrap();
        if vector {
            self.b.ins().load(V, flags, at, 0)
        } else {
            let x = self.b.ins().load(types::F32, flags, at, 0);
            self.b.ins().splat(V, x)
        }
    }

    /// A scalar input broadcast to all lanes, as loaded before the loop
    /// (`load_scalars`).
    fn scalar(&self, v: ValueId) -> Value {
        self.scalars[&v]
    }

    /// Loads and broadcasts, where the loop will start, every scalar that
    /// the expressions at `roots` read. The loop never writes one: it
    /// stores only its roots, all of one layout, and a loop of one element
    /// loads before it stores either way.
    fn load_scalars(&mut self, roots: &[ValueId]) {
        self.scalars.clear();
        let mut members = Vec::new();
        for &root in roots {
            collect_fused(self.graph, &self.plan.locations, root, &mut members);
        }
        for v in members {
            let node = &self.graph.nodes[v.0];
            let scalar = match node.op {
                Op::MulScalar => Some(node.inputs[1]),
                Op::MseGrad | Op::BceGrad => Some(node.inputs[2]),
                _ => None,
            };
            if let Some(s) = scalar.filter(|s| !self.scalars.contains_key(s)) {
                let base = self.base(s);
                let x = self.b.ins().load(types::F32, MemFlagsData::new().with_notrap(), base, 0);
                let lanes = self.b.ins().splat(V, x);
                self.scalars.insert(s, lanes);
            }
        }
    }

    /// The value of `v` at the current element: as computed already in
    /// this loop's body, else computed if fused, else loaded.
    fn operand(&mut self, v: ValueId, row_start: Value, j: Value, vector: bool) -> Value {
        if let Some(&value) = self.computed.get(&v) {
            return value;
        }
        let fused = self.plan.locations[v.0] == Location::Fused && self.graph.nodes[v.0].op != Op::Reshape;
        if fused { self.eval(v, row_start, j, vector) } else { self.load(v, row_start, j, vector) }
    }

    /// `v` at the current element, computed once per loop body.
    fn eval(&mut self, v: ValueId, row_start: Value, j: Value, vector: bool) -> Value {
        if let Some(&value) = self.computed.get(&v) {
            return value;
        }
        let value = self.compute(v, row_start, j, vector);
        self.computed.insert(v, value);
        value
    }

    fn compute(&mut self, v: ValueId, row_start: Value, j: Value, vector: bool) -> Value {
        let node = self.graph.nodes[v.0].clone();
        let ins = node.inputs.clone();
        let n = numel(&node.shape) as f32;
        let arg = |e: &mut Self, k: usize| e.operand(ins[k], row_start, j, vector);
        match node.op {
            Op::Const(c) => splat(&mut self.b, c as f32),
            Op::Unary(u) => {
                let x = arg(self, 0);
                self.unary(u, x)
            }
            Op::UnaryGrad(u) => {
                let g = arg(self, 2);
                let d = self.derivative(u, &mut |e, k| arg(e, k));
                self.b.ins().fmul(g, d)
            }
            Op::Add | Op::Sub | Op::Mul | Op::Div => {
                let (a, c) = (arg(self, 0), arg(self, 1));
                match node.op {
                    Op::Add => self.b.ins().fadd(a, c),
                    Op::Sub => self.b.ins().fsub(a, c),
                    Op::Mul => self.b.ins().fmul(a, c),
                    _ => self.b.ins().fdiv(a, c),
                }
            }
            Op::MulScalar => {
                let a = arg(self, 0);
                let s = self.scalar(ins[1]);
                self.b.ins().fmul(a, s)
            }
            Op::AddBias => {
                let x = arg(self, 0);
                let base = self.base(ins[1]);
                let off = self.b.ins().ishl_imm_u(j, 2);
                let at = self.b.ins().iadd(base, off);
                let bias = self.load_at(at, vector);
                self.b.ins().fadd(x, bias)
            }
            Op::AddChannelBias | Op::MulChannel => {
                let x = arg(self, 0);
                let base = self.base(ins[1]);
                let channel = self.channel.expect("a channel op runs in a loop over channels' planes");
                let off = self.b.ins().ishl_imm_u(channel, 2);
                let at = self.b.ins().iadd(base, off);
                let c = self.load_at(at, false);
                if node.op == Op::AddChannelBias { self.b.ins().fadd(x, c) } else { self.b.ins().fmul(x, c) }
            }
            // g·2(p − t)/n
            Op::MseGrad => {
                let (p, t) = (arg(self, 0), arg(self, 1));
                let g = self.scalar(ins[2]);
                let k = splat(&mut self.b, 2.0 / n);
                let d = self.b.ins().fsub(p, t);
                let gk = self.b.ins().fmul(g, k);
                self.b.ins().fmul(gk, d)
            }
            // g·(p − t)/(p(1 − p))/n with p clamped to [ε, 1 − ε]
            Op::BceGrad => {
                let (p, t) = (arg(self, 0), arg(self, 1));
                let g = self.scalar(ins[2]);
                let eps = nnc_runtime::kernels::BCE_EPS as f32;
                let (lo, hi) = (splat(&mut self.b, eps), splat(&mut self.b, 1.0 - eps));
                let p = self.b.ins().fmax(p, lo);
                let p = self.b.ins().fmin(p, hi);
                let one = splat(&mut self.b, 1.0);
                let q = self.b.ins().fsub(one, p);
                let den = self.b.ins().fmul(p, q);
                let d = self.b.ins().fsub(p, t);
                let ratio = self.b.ins().fdiv(d, den);
                let k = splat(&mut self.b, 1.0 / n);
                let gk = self.b.ins().fmul(g, k);
                self.b.ins().fmul(gk, ratio)
            }
            // A block of columns read where it lies, row by row.
            Op::Slice { .. } => {
                let (first, (_, _, stride)) = self.rows_of(v);
                let row = self.row.expect("a slice is read in a loop over rows");
                let row_start = self.b.ins().imul_imm_u(row, stride as i64);
                self.load_from(first, row_start, j, vector)
            }
            // Everything else is stored, never fused (see plan::is_elementwise).
            _ => self.load(v, row_start, j, vector),
        }
    }
}
