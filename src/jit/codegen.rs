//! Code generation: a `Plan` → one Cranelift function that runs the whole
//! step. Shapes, offsets and strides are immediates. Element-wise kernels
//! become f32x4 loops over the fused expression (`elementwise`; scalar tail
//! lanes reuse the vector code on a splatted value); matrix products and
//! row-wise ops call the runtime routines.

use std::collections::HashMap;
use std::mem::offset_of;

use cranelift_codegen::ir::{
    AbiParam, FuncRef, InstBuilder, MemFlagsData, Signature, StackSlotData, StackSlotKind, Value, types,
};
use cranelift_frontend::FunctionBuilder;
use cranelift_module::{Linkage, Module};
use nnc_runtime::kernels::{Taps, Window};
use nnc_runtime::{SliceMove, Squash};

use super::elementwise::Layout;
use crate::ir::{Graph, Op, Unary, ValueId, numel};
use crate::plan::{Kernel, Location, Plan, TeamSplit};

/// Floats per cache line: where a replica's part of the store starts.
const LINE: usize = 16;

pub(super) const PTR: types::Type = types::I64;
pub(super) const V: types::Type = types::F32X4;

/// The step function's arguments, in order.
pub struct Args {
    pub store: Value,
    pub scratch: Value,
    pub input: Value,
    pub target: Value,
    pub hyper: Value,
}

pub struct Emitter<'a, 'b> {
    pub b: FunctionBuilder<'b>,
    pub graph: &'a Graph,
    pub plan: &'a Plan,
    pub args: Args,
    pub routines: HashMap<&'static str, FuncRef>,
    /// The element-wise kernels compiled as functions of their own, run in
    /// parts over the threads (`nnc_parallel_parts`), by root.
    pub parts: HashMap<ValueId, FuncRef>,
    /// In an element-wise loop over channels' planes: the current row's channel.
    pub channel: Option<Value>,
    /// In an element-wise loop over rows: the current row.
    pub row: Option<Value>,
    /// In an element-wise loop's body: the values computed so far at the
    /// current element (a joined loop's roots read earlier roots from here).
    pub computed: HashMap<ValueId, Value>,
    /// In an element-wise loop: its scalar inputs (a learning rate, a
    /// loss's seed), loaded and broadcast once before it. Loaded in the
    /// body they would be loaded again for every group of lanes, since
    /// Cranelift keeps a load below the stores before it.
    pub scalars: HashMap<ValueId, Value>,
}

impl<'a, 'b> Emitter<'a, 'b> {
    /// An emitter of `graph`'s kernels as `plan` lays them out, into `b`.
    pub fn new(
        b: FunctionBuilder<'b>,
        graph: &'a Graph,
        plan: &'a Plan,
        args: Args,
        routines: HashMap<&'static str, FuncRef>,
        parts: HashMap<ValueId, FuncRef>,
    ) -> Self {
        let (channel, row, computed, scalars) = (None, None, HashMap::new(), HashMap::new());
        Emitter { b, graph, plan, args, routines, parts, channel, row, computed, scalars }
    }
}

/// Declares a runtime routine taking `ptrs` pointer-sized and `floats` f32 arguments.
pub fn declare_routine(
    module: &mut impl Module,
    name: &str,
    ptrs: usize,
    floats: usize,
) -> Result<cranelift_module::FuncId, String> {
    let mut sig: Signature = module.make_signature();
    sig.params.extend(std::iter::repeat_n(AbiParam::new(PTR), ptrs));
    sig.params.extend(std::iter::repeat_n(AbiParam::new(types::F32), floats));
    module.declare_function(name, Linkage::Import, &sig).map_err(|e| e.to_string())
}

impl Emitter<'_, '_> {
    pub(super) fn imm(&mut self, x: usize) -> Value {
        self.b.ins().iconst(PTR, x as i64)
    }

    /// Where a stored value lives: reshapes alias their input (resolved by
    /// the plan), so they are followed to it.
    fn location(&self, v: ValueId) -> Location {
        let mut loc = self.plan.locations[v.0];
        let mut node = v;
        while loc == Location::Fused && self.graph.nodes[node.0].op == Op::Reshape {
            node = self.graph.nodes[node.0].inputs[0];
            loc = self.plan.locations[node.0];
        }
        loc
    }

    /// Address of element 0 of a stored value.
    pub(super) fn base(&mut self, v: ValueId) -> Value {
        let (ptr, offset) = match self.location(v) {
            Location::Store(o) => (self.args.store, o),
            Location::Scratch(o) => (self.args.scratch, o),
            Location::Input => (self.args.input, 0),
            Location::Target => (self.args.target, 0),
            Location::Hyper(k) => (self.args.hyper, k),
            Location::Fused => (self.args.scratch, 0),
        };
        self.b.ins().iadd_imm_s(ptr, (offset * 4) as i64)
    }

    /// Where `v`'s rows start and how they lie, (rows, values a row, values
    /// from one row's start to the next's): a slice the plan leaves where
    /// it lies (fused into its reader) as rows of its input, anything else
    /// as one row.
    pub(super) fn rows_of(&mut self, v: ValueId) -> (Value, (usize, usize, usize)) {
        let node = &self.graph.nodes[v.0];
        match node.op {
            Op::Slice { axis, start } if self.plan.locations[v.0] == Location::Fused => {
                let input = node.inputs[0];
                let whole = self.graph.shape(input)[axis];
                let (outer, inner) = crate::ir::around(&node.shape, axis);
                let (part, base) = (node.shape[axis], self.base(input));
                let first = self.b.ins().iadd_imm_s(base, (start * inner * 4) as i64);
                (first, (outer, part * inner, whole * inner))
            }
            _ => {
                let n = numel(&node.shape);
                (self.base(v), (1, n, n))
            }
        }
    }

    /// The version of the weights `w` is part of (the call's
    /// `Hypers::weights`) when it is read straight from the store, under
    /// which the runtime keeps what it makes from them; else `UNVERSIONED`
    /// (a value computed in the pass has no version of its own).
    fn weights_version(&mut self, w: ValueId) -> Value {
        if !matches!(self.location(w), Location::Store(_)) {
            return self.imm(nnc_runtime::UNVERSIONED as usize);
        }
        let offset = offset_of!(nnc_runtime::Hypers, weights) as i32;
        self.b.ins().load(PTR, MemFlagsData::new().with_notrap(), self.args.hyper, offset)
    }

    /// `win` in a stack slot of the step, laid out as the runtime's
    /// `repr(C)` `Window`; returns its address.
    fn window(&mut self, win: Window) -> Value {
        let size = std::mem::size_of::<Window>() as u32;
        let slot = self.b.create_sized_stack_slot(StackSlotData::new(StackSlotKind::ExplicitSlot, size, 3));
        let fields = [
            (offset_of!(Window, batch), win.batch),
            (offset_of!(Window, channels), win.channels),
            (offset_of!(Window, height), win.height),
            (offset_of!(Window, width), win.width),
        ];
        let taps = [(offset_of!(Window, rows), win.rows), (offset_of!(Window, cols), win.cols)];
        let fields = fields.into_iter().chain(taps.into_iter().flat_map(|(at, t)| {
            [
                (at + offset_of!(Taps, kernel), t.kernel),
                (at + offset_of!(Taps, stride), t.stride),
                (at + offset_of!(Taps, padding), t.padding),
                (at + offset_of!(Taps, dilation), t.dilation),
            ]
        }));
        for (offset, value) in fields {
            let value = self.imm(value);
            self.b.ins().stack_store(PTR, value, slot, offset as i32);
        }
        self.b.ins().stack_addr(PTR, slot, 0)
    }

    /// `values` as f32 in a stack slot of the step (a small table such as
    /// class weights); returns its address.
    fn f32_table(&mut self, values: &[f64]) -> Value {
        let size = (values.len() * 4) as u32;
        let slot = self.b.create_sized_stack_slot(StackSlotData::new(StackSlotKind::ExplicitSlot, size, 2));
        for (k, &v) in values.iter().enumerate() {
            let value = self.b.ins().f32const(v as f32);
            self.b.ins().stack_store(PTR, value, slot, (k * 4) as i32);
        }
        self.b.ins().stack_addr(PTR, slot, 0)
    }

    fn call(&mut self, name: &str, args: &[Value]) {
        let f = self.routines[name];
        self.b.ins().call(f, args);
    }

    /// `nnc_slice` moving a part of `axis` (`whole` long, the part `part`
    /// long from `start`) between `from` and `to`; `shape` is the output's.
    fn slice_call(
        &mut self,
        how: SliceMove,
        (from, to): (Value, Value),
        shape: &[usize],
        axis: usize,
        (whole, part, start): (usize, usize, usize),
    ) {
        let (outer, inner) = crate::ir::around(shape, axis);
        let dims: Vec<Value> = [outer, whole, part, inner, start, how as usize].iter().map(|&d| self.imm(d)).collect();
        let mut args = vec![from, to];
        args.extend(dims);
        self.call("nnc_slice", &args);
    }

    /// Marks the start of kernel `kernel` of the profiled step `step` (`nnc_runtime::profile`).
    pub fn profile_mark(&mut self, step: usize, kernel: usize) {
        let (step, kernel) = (self.imm(step), self.imm(kernel));
        self.call("nnc_profile_mark", &[step, kernel]);
    }

    pub fn kernel(&mut self, kernel: &Kernel) {
        match kernel {
            Kernel::Elementwise { roots, sums } => {
                let (units, align) = Layout::of(self.graph, self.plan, roots[0]).units();
                if let (Some(part), true) = (self.plan.store_part, self.plan.all_in_store(roots)) {
                    // This step's part of the values (`plan::share_store`),
                    // starting on cache lines, on this thread.
                    let (first, last) = crate::plan::part_range(units, align.max(LINE), part);
                    let (begin, end) = (self.imm(first), self.imm(last));
                    match self.parts.get(&roots[0]).copied() {
                        Some(part) => {
                            let Args { store, scratch, input, target, hyper } = self.args;
                            self.b.ins().call(part, &[store, scratch, input, target, hyper, begin, end]);
                        }
                        None => self.elementwise((roots, sums), begin, end),
                    }
                    // The loop stored each sum over this part as the partial
                    // sum of the part of `nnc_parallel_parts` it starts in:
                    // it is the step's whole sum (`Plan::sums_in_parts`).
                    let slot = first / nnc_runtime::part_units(units, align);
                    return self.move_partial_sums(sums, slot);
                }
                match self.parts.get(&roots[0]).copied() {
                    Some(part) => {
                        let f = self.b.ins().func_addr(PTR, part);
                        let (units_arg, align_arg) = (self.imm(units), self.imm(align));
                        let Args { store, scratch, input, target, hyper } = self.args;
                        self.call(
                            "nnc_parallel_parts",
                            &[f, store, scratch, input, target, hyper, units_arg, align_arg],
                        );
                        let parts = units.div_ceil(nnc_runtime::part_units(units, align));
                        self.add_partial_sums(sums, parts);
                    }
                    None => {
                        let (begin, end) = (self.imm(0), self.imm(units));
                        self.elementwise((roots, sums), begin, end);
                    }
                }
            }
            Kernel::MatMul { node, team } => self.matmul(*node, team.as_ref()),
            Kernel::Routine { node } => self.routine(*node),
            Kernel::ChannelSums { sum, product } => self.channel_sums(*sum, *product),
            Kernel::Copy { from, to, len } => {
                let (begin, end) =
                    self.plan.store_part.map_or((0, *len), |part| crate::plan::part_range(*len, LINE, part));
                let src = self.base(*from);
                let src = self.b.ins().iadd_imm_s(src, (begin * 4) as i64);
                let dst = self.b.ins().iadd_imm_s(self.args.store, ((*to + begin) * 4) as i64);
                let n = self.imm(end - begin);
                self.call("nnc_copy", &[src, dst, n]);
            }
            Kernel::AwaitSums => {
                self.call("nnc_all_reduce_wait", &[]);
                if self.plan.store_part.is_some() {
                    // Steps sharing the store meet: past the last such wait,
                    // each has read all it reads of the old values, and
                    // writes its part of the new ones (`plan::share_store`).
                    self.call("nnc_team_barrier", &[]);
                }
            }
        }
    }

    /// A product, alone or computed with the other steps sharing the
    /// store (`plan::team_products`).
    fn matmul(&mut self, v: ValueId, team: Option<&TeamSplit>) {
        let node = &self.graph.nodes[v.0];
        let Op::MatMul { ta, tb, relu } = node.op else { return };
        let (sa, sb) = (self.graph.shape(node.inputs[0]).clone(), self.graph.shape(node.inputs[1]).clone());
        let (m, k, n) = crate::plan::product_dims(self.graph, v);
        // op(A)[i][p] lives at i·rs + p·cs.
        let (rsa, csa) = if ta { (1, sa[1]) } else { (sa[1], 1) };
        let (rsb, csb) = if tb { (1, sb[1]) } else { (sb[1], 1) };
        let (a, bb, c) = (self.base(node.inputs[0]), self.base(node.inputs[1]), self.base(v));
        // The bias fused into the product, if any (`ir::fuse_activations`).
        let bias = match node.inputs.get(2) {
            Some(&bias) => self.base(bias),
            None => self.imm(0),
        };
        let values = m * n;
        let [m, k, n, rsa, csa, rsb, csb, relu] = [m, k, n, rsa, csa, rsb, csb, usize::from(relu)].map(|d| self.imm(d));
        match team {
            None => self.call("nnc_sgemm", &[m, k, n, a, rsa, csa, bb, rsb, csb, c, bias, relu]),
            Some(TeamSplit::Columns) => {
                self.call("nnc_team_sgemm_columns", &[m, k, n, a, rsa, csa, bb, rsb, csb, c, bias, relu]);
            }
            Some(TeamSplit::Sum { sum, update }) => {
                // The part of the sum this step's part of the update reads.
                let part = self.plan.store_part.expect("a summed team product shares the store");
                let (begin, end) = crate::plan::part_range(values, LINE, part);
                let (sum, begin, end) = (self.base(*sum), self.imm(begin), self.imm(end));
                // The update run on each finished block, a null pointer for none.
                let update = match update.first() {
                    Some(root) => self.b.ins().func_addr(PTR, self.parts[root]),
                    None => self.imm(0),
                };
                let Args { store, scratch, input, target, hyper } = self.args;
                let args =
                    [m, k, n, a, rsa, csa, bb, rsb, csb, sum, begin, end, update, store, scratch, input, target, hyper];
                self.call("nnc_team_sgemm_sum", &args);
            }
        }
    }

    /// `sum` = Σ per channel of a tensor and `product` = Σ per channel of
    /// its products with another, in one routine call.
    fn channel_sums(&mut self, sum: ValueId, product: ValueId) {
        let (tensor, other) = crate::plan::channel_sums_operands(self.graph, sum, product);
        let shape = self.graph.shape(tensor).clone();
        let (a, b) = (self.base(tensor), self.base(other));
        let (sums, products) = (self.base(sum), self.base(product));
        let (n, c, sp) = (self.imm(numel(&shape)), self.imm(shape[1]), self.imm(crate::shape::spatial(&shape)));
        self.call("nnc_sum_and_product_channels", &[a, b, sums, products, n, c, sp]);
    }

    fn routine(&mut self, v: ValueId) {
        let node = self.graph.nodes[v.0].clone();
        let ins: Vec<Value> = node.inputs.iter().map(|&i| self.base(i)).collect();
        let out = self.base(v);
        let in_shape = self.graph.shape(node.inputs[0]).clone();
        let n_in = numel(&in_shape);
        let rows_cols = |shape: &[usize]| (shape[0], numel(shape) / shape[0].max(1));
        match node.op {
            Op::SumRows => {
                let (r, c) = rows_cols(&in_shape);
                let (r, c) = (self.imm(r), self.imm(c));
                self.call("nnc_sum_rows", &[ins[0], out, r, c]);
            }
            Op::Softmax => {
                let (r, c) = rows_cols(&node.shape);
                let (r, c) = (self.imm(r), self.imm(c));
                self.call("nnc_softmax", &[ins[0], out, r, c]);
            }
            Op::SoftmaxGrad => {
                let (r, c) = rows_cols(&node.shape);
                let (r, c) = (self.imm(r), self.imm(c));
                self.call("nnc_softmax_grad", &[ins[0], ins[1], out, r, c]);
            }
            Op::SoftmaxCrossEntropy => {
                let (r, c) = rows_cols(&in_shape);
                let weights = ins.get(2).copied().unwrap_or_else(|| self.imm(0));
                let (r, c) = (self.imm(r), self.imm(c));
                self.call("nnc_softmax_cross_entropy", &[ins[0], ins[1], weights, out, r, c]);
            }
            Op::SoftmaxCrossEntropyGrad => {
                let (r, c) = rows_cols(&node.shape);
                let weights = ins.get(3).copied().unwrap_or_else(|| self.imm(0));
                let (r, c) = (self.imm(r), self.imm(c));
                self.call("nnc_softmax_cross_entropy_grad", &[ins[0], ins[1], ins[2], weights, out, r, c]);
            }
            Op::ClassWeights(ref weights) => {
                let table = self.f32_table(weights);
                let (r, c) = (self.imm(n_in), self.imm(weights.len()));
                self.call("nnc_class_weights", &[ins[0], table, out, r, c]);
            }
            Op::Mse | Op::Bce => {
                let n = self.imm(n_in);
                let name = if node.op == Op::Mse { "nnc_mse" } else { "nnc_bce" };
                self.call(name, &[ins[0], ins[1], out, n]);
            }
            Op::SumSquares => {
                let n = self.imm(n_in);
                self.call("nnc_sum_squares", &[ins[0], out, n]);
            }
            Op::ClipScale(c) => {
                let c = self.b.ins().f32const(c as f32);
                self.call("nnc_clip_scale", &[ins[0], out, c]);
            }
            Op::Conv2d { rows, cols, groups, .. }
            | Op::Conv2dGradInput { rows, cols, groups, .. }
            | Op::Conv2dGradWeight { rows, cols, groups } => {
                // The image is the input of a forward conv and of a weight gradient, and the output of an input gradient.
                let (image, filters) = match node.op {
                    Op::Conv2d { .. } => (in_shape.clone(), self.graph.shape(node.inputs[1])[0]),
                    Op::Conv2dGradWeight { .. } => (in_shape.clone(), node.shape[0]),
                    _ => (node.shape.clone(), in_shape[0]),
                };
                let name = match node.op {
                    Op::Conv2d { .. } => "nnc_conv2d",
                    Op::Conv2dGradInput { .. } => "nnc_conv2d_grad_input",
                    _ => "nnc_conv2d_grad_weight",
                };
                let win = self.window(crate::shape::window(&image, rows, cols));
                let (filters, groups) = (self.imm(filters), self.imm(groups));
                let mut args = vec![ins[0], ins[1], out, win, filters, groups];
                // Steps sharing the store all convolve by the same weight
                // there: their team transforms its filter together.
                let weight = if let Op::Conv2d { .. } = node.op { node.inputs[1] } else { node.inputs[0] };
                let shared = self.plan.store_part.is_some() && matches!(self.location(weight), Location::Store(_));
                if let Op::Conv2d { relu, .. } = node.op {
                    // The bias, or a null pointer for none, and whether a ReLU is fused.
                    let bias = if ins.len() == 3 { ins[2] } else { self.imm(0) };
                    let version = self.weights_version(node.inputs[1]);
                    args.extend([bias, self.imm(usize::from(relu)), version, self.imm(usize::from(shared))]);
                }
                if let Op::Conv2dGradInput { relu, .. } = node.op {
                    // The ReLU's output whose gradient is fused, or a null pointer for none.
                    args.extend([if relu { ins[2] } else { self.imm(0) }, self.imm(usize::from(shared))]);
                }
                self.call(name, &args);
            }
            Op::SumChannels => {
                let (n, c) = (self.imm(n_in), self.imm(in_shape[1]));
                let sp = self.imm(crate::shape::spatial(&in_shape));
                self.call("nnc_sum_channels", &[ins[0], out, n, c, sp]);
            }
            Op::SumProductChannels => {
                let (n, c) = (self.imm(n_in), self.imm(in_shape[1]));
                let sp = self.imm(crate::shape::spatial(&in_shape));
                self.call("nnc_sum_product_channels", &[ins[0], ins[1], out, n, c, sp]);
            }
            Op::Pool { max, rows, cols } | Op::PoolGrad { max, rows, cols, .. } => {
                let win = self.window(crate::shape::window(&in_shape, rows, cols));
                let max = self.imm(usize::from(max));
                let mut args = ins.clone();
                args.extend([out, win, max]);
                if let Op::PoolGrad { relu, .. } = node.op {
                    args.push(self.imm(usize::from(relu)));
                    self.call("nnc_pool_grad", &args);
                } else {
                    self.call("nnc_pool", &args);
                }
            }
            Op::Upsample(f) => {
                let planes = self.imm(in_shape[0] * in_shape[1]);
                let (h, w, f) = (self.imm(in_shape[2]), self.imm(in_shape[3]), self.imm(f));
                self.call("nnc_upsample", &[ins[0], out, planes, h, w, f]);
            }
            Op::MaxPieces(p) | Op::MaxPiecesGrad(p) => {
                let units = if matches!(node.op, Op::MaxPieces(_)) { numel(&node.shape) } else { n_in / p };
                let (n, p) = (self.imm(units), self.imm(p));
                let mut args = ins.clone();
                args.extend([out, n, p]);
                let name = if matches!(node.op, Op::MaxPieces(_)) { "nnc_max_pieces" } else { "nnc_max_pieces_grad" };
                self.call(name, &args);
            }
            Op::Dropout { p, salt, first } => {
                let (n, salt, first) = (self.imm(n_in), self.imm(salt as usize), self.imm(first));
                let p = self.b.ins().f32const(p as f32);
                self.call("nnc_dropout", &[ins[0], ins[1], out, n, salt, first, p]);
            }
            Op::AllReduce => {
                let n = self.imm(n_in);
                self.call("nnc_all_reduce_start", &[ins[0], out, n]);
            }
            Op::Slice { axis, start } | Op::SliceGrad { axis, start } => {
                let (how, whole, part) = match node.op {
                    Op::Slice { .. } => (SliceMove::Take, in_shape[axis], node.shape[axis]),
                    _ => (SliceMove::IntoZeros, node.shape[axis], in_shape[axis]),
                };
                self.slice_call(how, (ins[0], out), &node.shape, axis, (whole, part, start));
            }
            Op::Concat { axis } => {
                let mut start = 0;
                for (&part, input) in ins.iter().zip(&node.inputs) {
                    let len = self.graph.shape(*input)[axis];
                    self.slice_call(SliceMove::Place, (part, out), &node.shape, axis, (node.shape[axis], len, start));
                    start += len;
                }
            }
            Op::Bernoulli { salt } => {
                let (n, salt) = (self.imm(n_in), self.imm(salt as usize));
                self.call("nnc_bernoulli", &[ins[0], ins[1], out, n, salt]);
            }
            Op::Gather | Op::GatherGrad => {
                let (ids, rows) = (self.imm(numel(self.graph.shape(node.inputs[0]))), node.shape.clone());
                let table = if node.op == Op::Gather { self.graph.shape(node.inputs[1]).clone() } else { rows };
                let (vocab, dim) = (self.imm(table[0]), self.imm(table[1]));
                let name = if node.op == Op::Gather { "nnc_gather" } else { "nnc_gather_grad" };
                self.call(name, &[ins[0], ins[1], out, ids, vocab, dim]);
            }
            Op::Unary(Unary::Log) => {
                let n = self.imm(n_in);
                self.call("nnc_log", &[ins[0], out, n]);
            }
            Op::Unary(squash @ (Unary::Sigmoid | Unary::Tanh)) => {
                let how = if squash == Unary::Tanh { Squash::Tanh } else { Squash::Sigmoid };
                let (x, (rows, cols, stride)) = self.rows_of(node.inputs[0]);
                let [rows, cols, stride, how] = [rows, cols, stride, how as usize].map(|d| self.imm(d));
                self.call("nnc_squash", &[x, out, rows, cols, stride, how]);
            }
            // Leaves, element-wise loops, products and reshapes are other kernels (see plan::Kernel).
            Op::Input(_)
            | Op::Target(_)
            | Op::Param(_)
            | Op::State(_)
            | Op::Hyper(_)
            | Op::Const(_)
            | Op::Unary(_)
            | Op::UnaryGrad(_)
            | Op::Add
            | Op::Sub
            | Op::Mul
            | Op::Div
            | Op::MulScalar
            | Op::AddBias
            | Op::AddChannelBias
            | Op::MulChannel
            | Op::MseGrad
            | Op::BceGrad
            | Op::MatMul { .. }
            | Op::Reshape => {}
        }
    }
}
