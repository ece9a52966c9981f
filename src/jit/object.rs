//! Ahead of time: a model's forward passes, weights and C entry points as
//! one relocatable object file, written by the same code generator as the
//! JIT through Cranelift's object backend.
//!
//! The object defines `NAME_create`, `NAME_predict` and `NAME_destroy`, each
//! a call into the runtime's `nnc_library_*` functions with the object's own
//! `Description` (see `nnc_runtime::library`); everything else in it is
//! local. The runtime routines stay undefined symbols, resolved when the
//! object is linked with the runtime's static library.

use std::mem::{offset_of, size_of};

use cranelift_codegen::ir::{AbiParam, InstBuilder, types};
use cranelift_frontend::{FunctionBuilder, FunctionBuilderContext};
use cranelift_module::{DataDescription, DataId, FuncId, Linkage, Module, default_libcall_names};
use cranelift_object::{ObjectBuilder, ObjectModule};
use nnc_runtime::library::{Columns, Description, OUTPUT_IS_INPUT, PASSES, Pass};

use super::{TargetCpu, define_step, enter, function_context};
use crate::ir::{Graph, ValueId};
use crate::plan::{Location, Plan};

/// A planned forward pass for a fixed number of rows.
pub struct PlannedPass<'a> {
    pub graph: &'a Graph,
    pub plan: &'a Plan,
    pub rows: usize,
}

/// Everything the object holds.
pub struct LibraryModel<'a> {
    /// The C identifier every exported symbol starts with.
    pub name: &'a str,
    /// The parameter store the passes read.
    pub weights: &'a [f32],
    /// Per input feature: x' = (x − shift) / divisor.
    pub shift: &'a [f32],
    pub divisor: &'a [f32],
    pub outputs: usize,
    /// The columns of each output that is class scores, returned as probabilities.
    pub softmax: &'a [Columns],
    /// Whether the batched passes spread their images over threads.
    pub parallel_images: bool,
    /// The passes, most rows first (`nnc_runtime::library::pass_rows`).
    pub passes: [PlannedPass<'a>; PASSES],
}

fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

/// The relocatable object file (ELF on Linux) for `model`, for `target`.
pub fn emit(model: &LibraryModel, target: &TargetCpu) -> Result<Vec<u8>, String> {
    let builder = ObjectBuilder::new(target.isa(true)?, model.name, default_libcall_names()).map_err(err)?;
    let mut module = ObjectModule::new(builder);
    let name = model.name;
    // One function per distinct row count.
    let mut functions: Vec<(usize, FuncId)> = Vec::new();
    for pass in &model.passes {
        if !functions.iter().any(|&(rows, _)| rows == pass.rows) {
            let symbol = format!("{name}_forward_{}", pass.rows);
            let id = define_step(&mut module, &symbol, Linkage::Local, (pass.graph, pass.plan), None, None)?;
            functions.push((pass.rows, id));
        }
    }
    let function = |rows: usize| functions.iter().find(|f| f.0 == rows).map(|f| f.1);
    let floats = |module: &mut ObjectModule, suffix: &str, values: &[f32]| {
        let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        define_data(module, &format!("{name}_{suffix}"), bytes, |_, _| {})
    };
    let weights = floats(&mut module, "weights", model.weights)?;
    let shift = floats(&mut module, "shift", model.shift)?;
    let divisor = floats(&mut module, "divisor", model.divisor)?;
    let softmax_bytes = model.softmax.iter().flat_map(|c| [c.start, c.width]).flat_map(|v| (v as u64).to_le_bytes());
    let softmax = define_data(&mut module, &format!("{name}_softmax"), softmax_bytes.collect(), |_, _| {})?;
    let passes = model.passes.each_ref().map(|p| (p, function(p.rows).expect("defined above")));
    let description = describe(&mut module, model, [weights, shift, divisor, softmax], passes)?;
    define_entry_points(&mut module, name, description)?;
    module.finish().emit().map_err(err)
}

/// Defines read-only, cache-line-aligned data `name` holding `bytes`, after
/// `relocate` has added its relocations.
fn define_data(
    module: &mut ObjectModule,
    name: &str,
    bytes: Vec<u8>,
    relocate: impl FnOnce(&mut ObjectModule, &mut DataDescription),
) -> Result<DataId, String> {
    let id = module.declare_data(name, Linkage::Local, false, false).map_err(err)?;
    let mut data = DataDescription::new();
    // An empty array still needs an address.
    data.define(if bytes.is_empty() { vec![0; 4] } else { bytes }.into_boxed_slice());
    data.set_align(64);
    relocate(module, &mut data);
    module.define_data(id, &data).map_err(err)?;
    Ok(id)
}

/// Where a pass leaves its prediction, as `Pass::output` says it.
fn output_offset(pass: &PlannedPass) -> Result<usize, String> {
    let prediction: ValueId = pass.graph.prediction;
    match pass.plan.locations[prediction.0] {
        Location::Scratch(offset) => Ok(offset),
        Location::Input => Ok(OUTPUT_IS_INPUT),
        other => Err(format!("the prediction is planned at {other:?}, which a library cannot return")),
    }
}

/// The `Description` the runtime reads, laid out by its own `repr(C)` type.
fn describe(
    module: &mut ObjectModule,
    model: &LibraryModel,
    [weights, shift, divisor, softmax]: [DataId; 4],
    passes: [(&PlannedPass, FuncId); PASSES],
) -> Result<DataId, String> {
    let mut bytes = vec![0u8; size_of::<Description>()];
    let mut put =
        |offset: usize, value: usize| bytes[offset..offset + 8].copy_from_slice(&(value as u64).to_le_bytes());
    put(offset_of!(Description, features), model.shift.len());
    put(offset_of!(Description, outputs), model.outputs);
    put(offset_of!(Description, softmax_count), model.softmax.len());
    put(offset_of!(Description, parallel_images), usize::from(model.parallel_images));
    let pass_offsets = std::array::from_fn::<_, PASSES, _>(|i| offset_of!(Description, passes) + i * size_of::<Pass>());
    for ((pass, _), base) in passes.iter().zip(pass_offsets) {
        put(base + offset_of!(Pass, rows), pass.rows);
        put(base + offset_of!(Pass, scratch_len), pass.plan.scratch_len.max(1));
        put(base + offset_of!(Pass, output), output_offset(pass)?);
    }
    let name = format!("{}_description", model.name);
    define_data(module, &name, bytes, |module, data| {
        let pointers = [
            (weights, offset_of!(Description, weights)),
            (shift, offset_of!(Description, shift)),
            (divisor, offset_of!(Description, divisor)),
            (softmax, offset_of!(Description, softmax)),
        ];
        for (id, offset) in pointers {
            let value = module.declare_data_in_data(id, data);
            data.write_data_addr(offset as u32, value, 0);
        }
        for ((_, function), base) in passes.iter().zip(pass_offsets) {
            let function = module.declare_func_in_data(*function, data);
            data.write_function_addr((base + offset_of!(Pass, run)) as u32, function);
        }
    })
}

/// `NAME_create()`, `NAME_predict(ctx, in, rows, out)` and
/// `NAME_destroy(ctx)`: each calls its `nnc_library_*` counterpart, passing
/// the description where that takes one.
fn define_entry_points(module: &mut ObjectModule, name: &str, description: DataId) -> Result<(), String> {
    let ptr = module.target_config().pointer_type();
    // (symbol suffix, runtime function, pointer arguments, result)
    let entries = [
        ("create", "nnc_library_create", 0, Some(ptr)),
        ("predict", "nnc_library_predict", 4, Some(types::I32)),
        ("destroy", "nnc_library_destroy", 1, None),
    ];
    for (suffix, runtime_name, args, returns) in entries {
        let passes_description = suffix != "destroy";
        let signature = |module: &ObjectModule, args: usize| {
            let mut sig = module.make_signature();
            sig.params.extend(std::iter::repeat_n(AbiParam::new(ptr), args));
            sig.returns.extend(returns.map(AbiParam::new));
            sig
        };
        let sig = signature(module, args);
        let runtime_sig = signature(module, args + usize::from(passes_description));
        let fid = module.declare_function(&format!("{name}_{suffix}"), Linkage::Export, &sig).map_err(err)?;
        let runtime = module.declare_function(runtime_name, Linkage::Import, &runtime_sig).map_err(err)?;
        let mut ctx = function_context(module, fid, sig);
        let mut fctx = FunctionBuilderContext::new();
        let mut b = FunctionBuilder::new(&mut ctx.func, &mut fctx);
        let entry = enter(&mut b);
        let mut call_args = Vec::new();
        if passes_description {
            let global = module.declare_data_in_func(description, b.func);
            call_args.push(b.ins().symbol_value(ptr, global));
        }
        call_args.extend_from_slice(b.block_params(entry));
        let callee = module.declare_func_in_func(runtime, b.func);
        let call = b.ins().call(callee, &call_args);
        let results = b.inst_results(call).to_vec();
        b.ins().return_(&results);
        b.seal_all_blocks();
        b.finalize(module.target_config());
        module.define_function(fid, &mut ctx).map_err(|e| format!("{e:?}"))?;
    }
    Ok(())
}
