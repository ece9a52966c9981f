//! A JIT training step performs no heap allocation of its own: the only
//! allocations are matrixmultiply's packing buffers, one per matrix product
//! that goes through sgemm. Reading a CSV allocates for the values it
//! parses, not for the rows its line count suggests. (The counting
//! allocator needs `unsafe`.)
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use nnc::pipeline::check_source;
use nnc::train::{Backend, Trainer};

struct Counting;

static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);
/// The largest single allocation, in bytes, since it was last reset.
static LARGEST: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to the system allocator, only counting calls.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        LARGEST.fetch_max(layout.size(), Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

use nnc::check::{Optimizer, TrainConfig};
use nnc::diag::Span;
use nnc::ir::{Graph, Init, Op, ParamInfo, Unary};
use nnc::plan::plan_train;
use nnc::train::{Compiled, Store};

/// The counter is global: each test holds this for its whole run.
static COUNTING: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Allocations per step after warm-up, for `steps` of `run`.
fn per_step(mut run: impl FnMut()) -> usize {
    run();
    run();
    let before = ALLOCATIONS.load(Ordering::Relaxed);
    for _ in 0..10 {
        run();
    }
    (ALLOCATIONS.load(Ordering::Relaxed) - before) / 10
}

/// A training step with every kind of kernel except matrix products:
/// fused element-wise loops, the loss routines, clipping and Adam.
fn no_matmul_step(loss: Op) -> Compiled<nnc::ir::TrainGraph> {
    let span = Span::default();
    let mut g = Graph::new(4);
    g.params.push(ParamInfo { name: "w".into(), shape: vec![4, 8], init: Init::Zeros, decay: true, frozen: false });
    let x = g.push(Op::Input(0), vec![], vec![4, 8], span);
    let target_shape = if loss == Op::Mse { vec![4, 8] } else { vec![4] };
    let t = g.push(Op::Target(0), vec![], target_shape, span);
    let w = g.push(Op::Param(0), vec![], vec![4, 8], span);
    let y = g.push(Op::Mul, vec![w, x], vec![4, 8], span);
    let z = g.push(Op::Unary(Unary::Tanh), vec![y], vec![4, 8], span);
    g.prediction = z;
    g.loss = Some(g.push(loss, vec![z, t], vec![], span));
    let config = TrainConfig {
        optimizer: Optimizer::Adam { beta1: 0.9, beta2: 0.999, eps: 1e-8 },
        clip_norm: Some(1.0),
        clip_value: Some(0.5),
        l2: 0.01,
        weight_decay: 0.01,
        ..TrainConfig::default()
    };
    let step = nnc::optim::step_graph(&g, &config).expect("step builds");
    assert!(plan_train(&step).kernels.iter().all(|k| !matches!(k, nnc::plan::Kernel::MatMul { .. })));
    Compiled::<nnc::ir::TrainGraph>::new(step, Backend::Jit).expect("compiles")
}

#[test]
fn generated_code_and_routines_allocate_nothing() {
    let _turn = COUNTING.lock().unwrap_or_else(|e| e.into_inner());
    for loss in [Op::Mse, Op::SoftmaxCrossEntropy] {
        let target: Vec<f32> = if loss == Op::Mse { vec![0.3; 32] } else { vec![1.0, 0.0, 7.0, 2.0] };
        let mut compiled = no_matmul_step(loss.clone());
        let graph = compiled.graph.graph.clone();
        let mut store = Store::new(&graph);
        let x = vec![0.5f32; 32];
        let allocations = per_step(|| {
            compiled
                .run(
                    &mut store,
                    &x,
                    &target,
                    &nnc::exec::Hypers { lr: 0.01, bias1: 1.0, bias2: 1.0, step: 1.0, ..Default::default() },
                )
                .expect("runs");
        });
        assert_eq!(allocations, 0, "{loss:?}");
    }
}

fn allocations_per_step(source: &str, rows: usize) -> usize {
    let checked = check_source("a.nn", source);
    let model = &checked.models[0];
    let mut trainer = Trainer::new(model, model.train.clone(), Backend::Jit).expect("trainable");
    let x = vec![0.5f32; rows * 64];
    let y: Vec<f32> = (0..rows).map(|i| (i % 10) as f32).collect();
    per_step(|| {
        trainer.step(&x, &y, rows, 0.01).expect("step");
    })
}

const MLP: &str = "model a { input x: [64] target y: class(10)
    x |> dense(32) |> relu |> dense(10) => logits  loss = cross_entropy(logits, y)
    train { optimizer = adam(lr = 0.01) clip_norm = 1.0 } }";

#[test]
fn an_mlp_step_allocates_only_inside_sgemm() {
    let _turn = COUNTING.lock().unwrap_or_else(|e| e.into_inner());
    // Five products per step (two forward; dW2, dH1, dW1 backward), of which
    // batch-1 forward products skip sgemm. matrixmultiply allocates its
    // packing buffer (and, with threads, a little bookkeeping) per call.
    for rows in [1, 32] {
        let per_step = allocations_per_step(MLP, rows);
        assert!(per_step <= 3 * 5, "batch {rows}: {per_step} allocations per step");
    }
}

/// Reading a CSV reserves memory for the values it parses, not for as many
/// rows as the file has lines: a wide header over many short, bad lines
/// is an error at its first line, with no allocation much larger than
/// the text (room for 5,000 rows of 1,999 values would be 40 MB).
#[test]
fn a_csv_of_short_bad_lines_allocates_for_its_text_only() {
    use nnc::data::{RowSpec, TargetSpecOfRow, parse_csv};
    let _counting = COUNTING.lock().unwrap_or_else(|e| e.into_inner());
    let spec = RowSpec {
        features: 1999,
        targets: vec![TargetSpecOfRow::Real(1)],
        vocab: None,
        label_names: vec![],
        feature_names: vec![],
    };
    let header = (0..2000).map(|i| format!("c{i}")).collect::<Vec<_>>().join(",");
    let text = format!("{header}\n{}", "1\n".repeat(5000));
    LARGEST.store(0, Ordering::Relaxed);
    let e = parse_csv(text.as_bytes(), "wide.csv", &spec, &Default::default()).expect_err("short rows");
    assert_eq!(e.line, Some(2), "{e:?}");
    let largest = LARGEST.load(Ordering::Relaxed);
    assert!(largest <= 16 * text.len(), "an allocation of {largest} bytes for a text of {}", text.len());
}
