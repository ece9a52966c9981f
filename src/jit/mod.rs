//! The Cranelift backend: a planned graph → machine code for the exact
//! shapes of one batch size.
//!
//! `compile` emits one function `step(store, scratch, input, target, hyper)`
//! that runs every kernel of the plan in order; `Executable::run` checks the
//! buffer sizes at this safe boundary and calls it. A step allocates nothing
//! itself (sgemm's packing buffers are matrixmultiply's own allocation).
//! `unsafe` lives only in this module.
#![allow(unsafe_code)]

mod codegen;
mod elementwise;
pub mod object;
mod unary;
mod vector;

use std::collections::HashMap;
use std::marker::PhantomData;

use cranelift_codegen::Context;
use cranelift_codegen::ir::{AbiParam, Block, InstBuilder, Signature, UserFuncName};
use cranelift_codegen::isa::OwnedTargetIsa;
use cranelift_codegen::settings::{self, Configurable};
use cranelift_frontend::{FunctionBuilder, FunctionBuilderContext};
use cranelift_jit::{JITBuilder, JITModule};
use cranelift_module::{FuncId, Linkage, Module, default_libcall_names};
use nnc_runtime::Hypers;

use crate::check::{CheckedModel, Layer};
use crate::ir::{Graph, Op, ValueId, numel};
use crate::plan::{Kernel, Location, Plan, TeamSplit};

type StepFn = extern "C" fn(*mut f32, *mut f32, *const f32, *const f32, *const f32);

/// Compiled code for one graph and batch size, with its scratch arena.
pub struct Executable {
    module: Option<JITModule>,
    step: StepFn,
    scratch: nnc_runtime::Arena,
    /// Whether the step splits a batch of images into parts (convolution or
    /// pooling over more than one image).
    splits_images: bool,
    /// Whether the code splits a product over threads (`splits_products`).
    splits_products: bool,
    store_len: usize,
    /// Whether the code writes only its part of the store (`Plan::store_part`).
    shares_store: bool,
    /// The sums it computes over its part of the store alone (`Plan::sums_in_parts`).
    sums_in_parts: Vec<ValueId>,
    input_len: usize,
    target_len: usize,
    locations: Vec<Location>,
    shapes: Vec<Vec<usize>>,
}

/// Which instruction-set extensions generated code may use: every one this
/// CPU has, or a named Cranelift preset (`x86-64-v2`, `x86-64-v3`, `haswell`, …).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetCpu {
    Native,
    Preset(String),
}

impl TargetCpu {
    /// `native` or a preset name; an unknown name is an error listing the usual ones.
    pub fn parse(name: &str) -> Result<TargetCpu, String> {
        let target = if name == "native" { TargetCpu::Native } else { TargetCpu::Preset(name.to_string()) };
        target.isa(false).map(|_| target)
    }

    /// The ISA for this target; position-independent code for libraries.
    pub fn isa(&self, pic: bool) -> Result<OwnedTargetIsa, String> {
        let mut flags = settings::builder();
        flags.set("is_pic", if pic { "true" } else { "false" }).map_err(|e| e.to_string())?;
        flags.set("opt_level", "speed").map_err(|e| e.to_string())?;
        // Cranelift's own checks of the code it is handed cost a tenth of
        // a long step's compile: debug builds (the tests) keep them.
        flags
            .set("enable_verifier", if cfg!(debug_assertions) { "true" } else { "false" })
            .map_err(|e| e.to_string())?;
        let builder = match self {
            TargetCpu::Native => cranelift_native::builder().map_err(|e| e.to_string())?,
            TargetCpu::Preset(name) => {
                let mut builder = cranelift_native::builder_with_options(false).map_err(|e| e.to_string())?;
                builder.enable(name).map_err(|_| {
                    format!(
                        "unknown target CPU `{name}`; use `native` or a name such as x86-64, x86-64-v2, \
                         x86-64-v3, x86-64-v4, haswell, skylake, znver3 or znver4"
                    )
                })?;
                builder
            }
        };
        builder.finish(settings::Flags::new(flags)).map_err(|e| e.to_string())
    }
}

/// A JIT module for this CPU (all the vector extensions it has), with
/// every runtime routine's address registered.
fn module() -> Result<JITModule, String> {
    let mut jb = JITBuilder::with_isa(TargetCpu::Native.isa(false)?, default_libcall_names());
    for routine in nnc_runtime::routines() {
        jb.symbol(routine.name, routine.address);
    }
    Ok(JITModule::new(jb))
}

/// Defines `graph` as planned as one function `name(store, scratch, input,
/// target, hyper)` in `module` (the JIT's or an object file's), with a
/// function of its own for each large element-wise kernel, declaring the
/// runtime routines it calls. With `profile`, the number of a step
/// registered with `nnc_runtime::profile`, it marks the start of each
/// kernel and its end. With `clif`, appends the CLIF text of the function
/// and its parts there (written only when asked: it costs as much as a
/// tenth of the compile).
pub fn define_step(
    module: &mut impl Module,
    name: &str,
    linkage: Linkage,
    (graph, plan): (&Graph, &Plan),
    profile: Option<usize>,
    clif: Option<&mut String>,
) -> Result<FuncId, String> {
    let ptr = module.target_config().pointer_type();
    let mut sig = module.make_signature();
    sig.params.extend([AbiParam::new(ptr); 5]);
    let fid = module.declare_function(name, linkage, &sig).map_err(|e| e.to_string())?;
    let mut routine_ids = Vec::new();
    for routine in nnc_runtime::routines() {
        let id = codegen::declare_routine(module, routine.name, routine.pointer_args, routine.float_args)?;
        routine_ids.push((routine.name, id));
    }
    let (mut part_ids, mut part_clif) = (Vec::new(), String::new());
    for kernel in &plan.kernels {
        let (roots, sums): (&[ValueId], &[ValueId]) = match kernel {
            Kernel::Elementwise { roots, sums } if elementwise::Layout::of(graph, plan, roots[0]).parallel() => {
                (roots, sums)
            }
            // An update a team product runs on each block of its sum.
            Kernel::MatMul { team: Some(TeamSplit::Sum { update, .. }), .. } if !update.is_empty() => (update, &[]),
            _ => continue,
        };
        let part = format!("{name}_part{}", part_ids.len());
        let text = clif.is_some().then_some(&mut part_clif);
        let id = define_part(module, &part, graph, plan, (roots, sums), text)?;
        part_ids.push((roots[0], id));
    }
    let mut ctx = function_context(module, fid, sig);
    let mut fctx = FunctionBuilderContext::new();
    {
        let mut b = FunctionBuilder::new(&mut ctx.func, &mut fctx);
        let entry = enter(&mut b);
        let p = b.block_params(entry).to_vec();
        let mut routines = HashMap::new();
        for (name, id) in &routine_ids {
            routines.insert(*name, module.declare_func_in_func(*id, b.func));
        }
        let parts = part_ids.iter().map(|&(root, id)| (root, module.declare_func_in_func(id, b.func))).collect();
        let args = codegen::Args { store: p[0], scratch: p[1], input: p[2], target: p[3], hyper: p[4] };
        let mut e = codegen::Emitter::new(b, graph, plan, args, routines, parts);
        for (k, kernel) in plan.kernels.iter().enumerate() {
            if let Some(step) = profile {
                e.profile_mark(step, k);
            }
            e.kernel(kernel);
        }
        if let Some(step) = profile {
            e.profile_mark(step, plan.kernels.len());
        }
        e.b.ins().return_(&[]);
        e.b.seal_all_blocks();
        e.b.finalize(module.target_config());
    }
    if let Some(clif) = clif {
        *clif += &(ctx.func.display().to_string() + &part_clif);
    }
    module.define_function(fid, &mut ctx).map_err(|e| format!("{e:?}"))?;
    module.clear_context(&mut ctx);
    Ok(fid)
}

/// Defines the element-wise kernel storing `roots` (and summing `sums`) as
/// a function `name(store, scratch, input, target, hyper, begin, end)`
/// computing its units `[begin, end)`, for `nnc_parallel_parts` to run in
/// parts, appending its CLIF text to `clif` if given.
fn define_part(
    module: &mut impl Module,
    name: &str,
    graph: &Graph,
    plan: &Plan,
    kernel: (&[ValueId], &[ValueId]),
    clif: Option<&mut String>,
) -> Result<FuncId, String> {
    let ptr = module.target_config().pointer_type();
    let mut sig = module.make_signature();
    sig.params.extend([AbiParam::new(ptr); 7]);
    let fid = module.declare_function(name, Linkage::Local, &sig).map_err(|e| e.to_string())?;
    let mut ctx = function_context(module, fid, sig);
    let mut fctx = FunctionBuilderContext::new();
    {
        let mut b = FunctionBuilder::new(&mut ctx.func, &mut fctx);
        let entry = enter(&mut b);
        let p = b.block_params(entry).to_vec();
        let args = codegen::Args { store: p[0], scratch: p[1], input: p[2], target: p[3], hyper: p[4] };
        let (routines, parts) = (HashMap::new(), HashMap::new());
        let mut e = codegen::Emitter::new(b, graph, plan, args, routines, parts);
        e.elementwise(kernel, p[5], p[6]);
        e.b.ins().return_(&[]);
        e.b.seal_all_blocks();
        e.b.finalize(module.target_config());
    }
    if let Some(clif) = clif {
        *clif += &format!("\n; {name}\n{}", ctx.func.display());
    }
    module.define_function(fid, &mut ctx).map_err(|e| format!("{e:?}"))?;
    module.clear_context(&mut ctx);
    Ok(fid)
}

/// A context for defining the function `fid` of signature `sig`.
fn function_context(module: &impl Module, fid: FuncId, sig: Signature) -> Context {
    let mut ctx = module.make_context();
    ctx.func.signature = sig;
    ctx.func.name = UserFuncName::user(0, fid.as_u32());
    ctx
}

/// Starts the function in its entry block, whose parameters are the function's.
fn enter(b: &mut FunctionBuilder) -> Block {
    let entry = b.create_block();
    b.append_block_params_for_function_params(entry);
    b.switch_to_block(entry);
    entry
}

/// Compiles `graph` as planned, for this CPU; with `profiled`, registered
/// with `nnc_runtime::profile` and marking each kernel's start and end.
pub fn compile(graph: &Graph, plan: &Plan, profiled: bool) -> Result<Executable, String> {
    let mut module = module()?;
    let profile = profiled.then(|| {
        let kernel = |kernel: &Kernel| nnc_runtime::profile::Kernel {
            label: plan.kernel_text(graph, kernel),
            multiply_adds: match kernel {
                Kernel::MatMul { node, .. } => {
                    let (m, k, n) = crate::plan::product_dims(graph, *node);
                    (m * k * n) as u64
                }
                _ => 0,
            },
        };
        nnc_runtime::profile::register(plan.kernels.iter().map(kernel).collect())
    });
    let fid = define_step(&mut module, "step", Linkage::Export, (graph, plan), profile, None)?;
    module.finalize_definitions().map_err(|e| e.to_string())?;
    let code = module.get_finalized_function(fid);
    // SAFETY: `code` was just compiled from a function with exactly the
    // signature `StepFn` (five pointer arguments, no results).
    let step: StepFn = unsafe { std::mem::transmute::<*const u8, StepFn>(code) };
    let (input_len, target_len) = leaf_lens(graph, plan);
    Ok(Executable {
        module: Some(module),
        step,
        scratch: nnc_runtime::Arena::zeroed(plan.scratch_len.max(1)).ok_or_else(|| {
            let gib = plan.scratch_len as f64 * 4.0 / f64::from(1u32 << 30);
            format!(
                "the step needs {gib:.1} GiB of working memory, more than this machine can give; use a smaller batch"
            )
        })?,
        splits_images: splits_images(graph),
        splits_products: splits_products(graph),
        store_len: plan.store.len,
        shares_store: plan.store_part.is_some(),
        sums_in_parts: plan.sums_in_parts(),
        input_len,
        target_len,
        locations: plan.locations.clone(),
        shapes: graph.nodes.iter().map(|n| n.shape.clone()).collect(),
    })
}

/// The CLIF text of `graph` as planned, as `compile` generates it for this
/// CPU (`--emit clif`).
pub fn clif(graph: &Graph, plan: &Plan) -> Result<String, String> {
    let mut text = String::new();
    define_step(&mut module()?, "step", Linkage::Export, (graph, plan), None, Some(&mut text))?;
    Ok(text)
}

/// Whether a graph has convolutions or pooling over a batch of more than
/// one image (every image batch is the input batch's).
pub fn splits_images(graph: &Graph) -> bool {
    let batch = graph.nodes.iter().find(|n| matches!(n.op, Op::Input(_))).map_or(0, |n| n.shape[0]);
    let over_images = |op: &Op| {
        matches!(
            op,
            Op::Conv2d { .. }
                | Op::Conv2dGradInput { .. }
                | Op::Conv2dGradWeight { .. }
                | Op::Pool { .. }
                | Op::PoolGrad { .. }
        )
    };
    batch > 1 && graph.nodes.iter().any(|n| over_images(&n.op))
}

/// Whether the code splits a product of its own over threads
/// (`nnc_runtime::product_splits`): it then runs with a partner thread,
/// which takes the products' second halves without being woken for each.
fn splits_products(graph: &Graph) -> bool {
    graph.nodes.iter().any(|node| {
        let Op::MatMul { ta, .. } = node.op else { return false };
        let a = graph.shape(node.inputs[0]);
        let (m, n, k) = (node.shape[0], node.shape[1], if ta { a[0] } else { a[1] });
        nnc_runtime::product_splits(m, k, n)
    })
}

/// Element counts of the input and target batches the code reads (0 when unused).
fn leaf_lens(graph: &Graph, plan: &Plan) -> (usize, usize) {
    let mut lens = (0, 0);
    for (node, location) in graph.nodes.iter().zip(&plan.locations) {
        match location {
            Location::Input => lens.0 = numel(&node.shape),
            Location::Target => lens.1 = numel(&node.shape),
            _ => {}
        }
    }
    lens
}

impl Executable {
    /// Runs the compiled step. Every buffer's size is checked first, so a
    /// wrong-sized input is an error, never undefined behaviour.
    pub fn run(&mut self, store: &mut [f32], input: &[f32], target: &[f32], hyper: &Hypers) -> Result<(), String> {
        let (splits_images, splits_products) = (self.splits_images, self.splits_products);
        let call = self.call(store, input, target, hyper)?;
        if splits_images && nnc_runtime::parallel_images() {
            // The whole step runs on one of rayon's threads, so its image
            // parts start without waking a thread per routine.
            rayon::scope(|_| call());
        } else if splits_products {
            nnc_runtime::with_partner(call);
        } else {
            call();
        }
        Ok(())
    }

    /// `run` once every buffer's size is checked: the call itself, which
    /// may run on another thread (a `ThreadTeam` member's) and borrows the
    /// buffers until it has.
    pub fn call<'a>(
        &'a mut self,
        store: &'a mut [f32],
        input: &'a [f32],
        target: &'a [f32],
        hyper: &'a Hypers,
    ) -> Result<impl FnOnce() + Send + 'a, String> {
        self.call_with(SharedStore::alone(store), input, target, hyper)
    }

    /// `call` on a store that other steps may write at the same time
    /// (`SharedStore::new`): only for code that writes its own part of it
    /// (`Plan::store_part`), else an error.
    pub fn call_with<'a>(
        &'a mut self,
        store: SharedStore<'a>,
        input: &'a [f32],
        target: &'a [f32],
        hyper: &'a Hypers,
    ) -> Result<impl FnOnce() + Send + 'a, String> {
        if !store.alone && !self.shares_store {
            return Err("the step writes all of the store, which it does not have to itself".into());
        }
        // A forward graph uses the parameters only: a prefix of the training store.
        if store.len < self.store_len {
            return Err(format!("parameter store has {} values, expected at least {}", store.len, self.store_len));
        }
        // Leaves the code does not read (an RBM's pretraining in a classifier
        // reads no target; a linear model's input gradient reads no input)
        // may be passed or not.
        if input.len() != self.input_len && self.input_len != 0 {
            return Err(format!("input batch has {} values, expected {}", input.len(), self.input_len));
        }
        if target.len() != self.target_len && self.target_len != 0 {
            return Err(format!("target batch has {} values, expected {}", target.len(), self.target_len));
        }
        let (step, scratch) = (self.step, &mut self.scratch);
        // The generated code only touches `store[..store_len]`,
        // `scratch[..scratch_len]`, `input[..input_len]`, `target[..target_len]`
        // and `hyper`, all checked above and borrowed by the call; the code
        // is alive while `module` is, which `self`'s borrow keeps.
        Ok(move || {
            step(store.ptr(), scratch.as_mut_ptr(), input.as_ptr(), target.as_ptr(), std::ptr::from_ref(hyper).cast())
        })
    }

    /// Whether the code writes only its part of the store (`call_with`).
    pub fn shares_store(&self) -> bool {
        self.shares_store
    }

    /// Whether the code computes the sum `v` over its part of the store alone.
    pub fn sums_in_part(&self, v: ValueId) -> bool {
        self.sums_in_parts.contains(&v)
    }

    /// A value the last run computed in its scratch (its loss), if it did.
    pub fn scratch_value(&self, v: ValueId) -> Option<&[f32]> {
        let n = numel(&self.shapes[v.0]);
        match self.locations[v.0] {
            Location::Scratch(o) => Some(&self.scratch[o..o + n]),
            _ => None,
        }
    }

    /// A value computed by the last run (the loss, the prediction).
    pub fn value<'a>(&'a self, v: ValueId, store: &'a [f32]) -> &'a [f32] {
        let n = numel(&self.shapes[v.0]);
        match self.locations[v.0] {
            Location::Scratch(o) => &self.scratch[o..o + n],
            Location::Store(o) => &store[o..o + n],
            Location::Input | Location::Target | Location::Hyper(_) | Location::Fused => &[],
        }
    }
}

/// A store borrowed by steps that may run at the same time, each writing
/// only its own part of it (`Executable::call_with`), or by one step.
#[derive(Clone, Copy)]
pub struct SharedStore<'a> {
    ptr: *mut f32,
    len: usize,
    /// Whether one step alone has it (`Executable::call`).
    alone: bool,
    store: PhantomData<&'a mut [f32]>,
}

// SAFETY: the steps a shared store is handed to write disjoint parts of it
// (`call_with` takes only code that does) and meet before and after.
unsafe impl Send for SharedStore<'_> {}
// SAFETY: as above.
unsafe impl Sync for SharedStore<'_> {}

impl<'a> SharedStore<'a> {
    /// A store other steps may write at the same time.
    pub fn new(store: &'a mut [f32]) -> SharedStore<'a> {
        SharedStore { ptr: store.as_mut_ptr(), len: store.len(), alone: false, store: PhantomData }
    }

    /// A store one step alone writes.
    pub fn alone(store: &'a mut [f32]) -> SharedStore<'a> {
        SharedStore { alone: true, ..SharedStore::new(store) }
    }

    /// The first value (a method, so closures capture the whole store).
    fn ptr(self) -> *mut f32 {
        self.ptr
    }
}

impl Drop for Executable {
    fn drop(&mut self) {
        if let Some(module) = self.module.take() {
            // SAFETY: `step` is never called after this; the executable is being dropped.
            unsafe { module.free_memory() };
        }
    }
}

/// Below this many multiply-adds per batch in its largest product, a
/// convolutional model spreads its images over the cores; above it, the
/// products (split by the runtime) and the direct kernels use the cores.
const THREADED_GEMM_MACS: u64 = 32_000_000;

/// Multiply-adds of the largest product `model` hands to sgemm for `batch`
/// rows: dense-like layers, and convolutions that run in neither the
/// runtime's direct kernel (which threads its own large products) nor its
/// depthwise one (a loop per channel, not a product).
fn largest_threaded_product(model: &CheckedModel, batch: usize) -> u64 {
    let through_sgemm = |node: &crate::check::Node| match node.layer {
        Layer::Conv2d { rows, cols, .. } if rows == cols && nnc_runtime::direct_convolution(rows.stride) => false,
        Layer::Conv1d { groups, .. } | Layer::Conv2d { groups, .. } => {
            !nnc_runtime::depthwise_convolution(model.shape_of(node.inputs[0])[0], groups)
        }
        _ => true,
    };
    // A grouped convolution is one product per group.
    let product = |n: &crate::check::Node| match n.layer {
        Layer::Conv1d { groups, .. } | Layer::Conv2d { groups, .. } => n.macs / groups as u64,
        _ => n.macs,
    };
    let largest = model.nodes.iter().filter(|n| through_sgemm(n)).map(product).max().unwrap_or(0);
    largest.saturating_mul(batch as u64)
}

/// Whether `model` at `batch` rows spreads a batch's images over the cores
/// rather than threading its products: when no product through sgemm is
/// large enough to thread well.
pub fn spreads_images(model: &CheckedModel, batch: usize) -> bool {
    largest_threaded_product(model, batch) < THREADED_GEMM_MACS
}

/// Picks how `model` at `batch` rows uses the cores: convolution and
/// pooling spread the batch's images when its products are small
/// (`spreads_images`); large products split themselves either way.
pub fn choose_threading(model: &CheckedModel, batch: usize) {
    nnc_runtime::set_parallel_images(spreads_images(model, batch));
}
