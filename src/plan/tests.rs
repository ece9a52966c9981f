use super::*;
use crate::exec::{Backend, Compiled, Hypers, Store};
use crate::ir::Shard;
use crate::pipeline::{check_source, shard_step_graph};

/// A two-layer MLP trained by `optimizer` (with `extra` settings), its step
/// observing health when `observe`.
fn step(optimizer: &str, extra: &str, observe: bool) -> TrainGraph {
    let source = format!(
        "model m {{\n  input x: [300]\n  target y: class(3)\n  \
         x |> dense(250) |> relu |> dense(3) => logits\n  loss = cross_entropy(logits, y)\n  \
         train {{ optimizer = {optimizer} {extra} batch = 8 }}\n}}\n"
    );
    let mut step = step_of(&source, 8);
    if observe {
        crate::optim::observe_health(&mut step, &[]);
    }
    step.fuse_activations();
    step
}

/// The first model of a source, checked without errors.
fn model_of(source: &str) -> crate::check::CheckedModel {
    let mut checked = check_source("m.nn", source);
    assert!(!checked.has_errors(), "{:?}", checked.diags);
    checked.models.remove(0)
}

/// The training step of a model's source at a batch of `batch` rows.
fn step_of(source: &str, batch: usize) -> TrainGraph {
    let model = model_of(source);
    shard_step_graph(&model, &model.train, Shard::whole(batch)).expect("step builds")
}

/// `step_of`, observing the health of its parameters and activation
/// layers as `nnc train` does.
fn observed_step_of(source: &str, batch: usize) -> TrainGraph {
    let model = model_of(source);
    let mut train = shard_step_graph(&model, &model.train, Shard::whole(batch)).expect("step builds");
    let activations: Vec<_> = model.activation_layers().iter().map(|n| n.span).collect();
    crate::optim::observe_health(&mut train, &activations);
    train.fuse_activations();
    train
}

/// Runs a step twice from the same weights on the interpreter and compiled,
/// and asserts the losses and every tensor of the store agree.
fn compiled_agrees_with_interpreter(train: &TrainGraph, rows: usize, classes: usize) {
    let mut store = Store::new(&train.graph);
    for (p, param) in train.graph.params.iter().enumerate() {
        let n = numel(&param.shape);
        let values: Vec<f32> = (0..n).map(|i| ((i * 7919 + p * 131) % 1000) as f32 / 1000.0 - 0.5).collect();
        store.set_param(p, &values);
    }
    let input = train.graph.nodes.iter().find(|node| node.op == Op::Input(0)).expect("an input");
    let features = numel(&input.shape) / rows;
    let x: Vec<f32> = (0..rows * features).map(|i| ((i * 104_729) % 997) as f32 / 997.0 - 0.5).collect();
    let y: Vec<f32> = (0..rows).map(|i| (i % classes) as f32).collect();
    let hypers = Hypers { lr: 0.05, bias1: 10.0, bias2: 1000.0, step: 1.0, ..Hypers::default() };
    let observed_len = train.observed.iter().map(|v| numel(train.graph.shape(*v))).sum::<usize>();
    let run = |backend| {
        let mut compiled = Compiled::<TrainGraph>::new(train.clone(), backend).expect("compiles");
        let mut store = store.clone();
        let mut observed = vec![0.0; observed_len];
        let mut losses = Vec::new();
        for _ in 0..2 {
            losses.push(compiled.run_observed(&mut store, &x, &y, &hypers, &mut observed).expect("runs"));
        }
        (losses, observed, store.data().to_vec())
    };
    let (interp, jit) = (run(Backend::Interp), run(Backend::Jit));
    let close = |a: &[f32], b: &[f32]| {
        a.len() == b.len() && a.iter().zip(b).all(|(x, y)| (x - y).abs() <= 1e-4 * x.abs().max(y.abs()).max(1.0))
    };
    assert!(close(&interp.0, &jit.0), "losses {:?} vs {:?}", interp.0, jit.0);
    assert!(close(&interp.1, &jit.1), "observed {:?} vs {:?}", interp.1, jit.1);
    assert!(close(&interp.2, &jit.2), "the parameters and states differ");
}

/// The training step, at a batch of 4, of `layer` (a recurrent layer)
/// over sequences of 5 steps of 4 features, classified in 2 classes.
fn recurrent_step(layer: &str) -> TrainGraph {
    let source = format!(
        "model m {{\n  input x: [5, 4]\n  target y: class(2)\n  \
         x |> {layer} |> dense(2) => logits\n  loss = cross_entropy(logits, y)\n  \
         train {{ optimizer = adam(lr = 0.01) batch = 4 }}\n}}\n"
    );
    step_of(&source, 4)
}

/// The loop storing value `v`: its roots and its sums.
fn loop_of(plan: &Plan, v: ValueId) -> (&[ValueId], &[ValueId]) {
    let mut loops = plan.kernels.iter().filter_map(|k| match k {
        Kernel::Elementwise { roots, sums } if roots.contains(&v) => Some((roots.as_slice(), sums.as_slice())),
        _ => None,
    });
    loops.next().expect("an element-wise loop stores it")
}

/// Each parameter's update — new optimizer state (momentum, Adam's two
/// moments) and new weights — runs as one loop that writes them in place,
/// right after the kernel computing what it reads last (its gradient, as a
/// rule). Observing health adds the three sums of squares to that loop,
/// and the step Δw stays inside it, weight decay's share of it too.
#[test]
fn each_parameters_update_is_one_loop() {
    let optimizers = [("momentum(lr = 0.05)", 1), ("adam(lr = 0.01)", 2), ("sgd(lr = 0.1)", 0)];
    for ((optimizer, states_per_param), decay) in
        optimizers.into_iter().flat_map(|o| [(o, ""), (o, "weight_decay = 0.01")])
    {
        for observe in [false, true] {
            let step = step(optimizer, decay, observe);
            let plan = plan_train(&step);
            let text = plan.to_text(&step.graph);
            for (p, &w) in step.new_params.iter().enumerate() {
                let (roots, sums) = loop_of(&plan, w);
                let states = &step.new_states[p * states_per_param..(p + 1) * states_per_param];
                assert!(states.iter().all(|s| roots.contains(s)), "{optimizer}, param {p}:\n{text}");
                assert_eq!(roots.len(), 1 + states_per_param, "{text}");
                assert!(matches!(plan.locations[w.0], Location::Store(_)), "written in place:\n{text}");
                let observed = if observe { &step.observed[3 * p..3 * p + 3] } else { &[] };
                assert_eq!(sums, observed, "{optimizer}, param {p}:\n{text}");
                assert_eq!(plan.locations[step.updates[p].0], Location::Fused, "{optimizer}, Δw of {p}:\n{text}");
            }
            // Each update runs as soon as its gradient is ready.
            let fused: Vec<bool> = plan.locations.iter().map(|l| *l == Location::Fused).collect();
            for &w in &step.new_params {
                let at = plan.kernels.iter().position(|k| produces(k).any(|v| v == w)).expect("updated");
                let reads = kernel_reads(&step.graph, &plan.kernels[at], &fused);
                assert!(produces(&plan.kernels[at - 1]).any(|v| reads.contains(&v)), "{optimizer}, {w}:\n{text}");
            }
        }
    }
}

/// A clipped gradient is scaled by a factor summed over every gradient: the
/// factor is read in a broadcast slot, so the momentum loop that reads the
/// scaled gradient still joins the weights' update, and the compiled step
/// (joined loops, the health sums inside them) agrees with the
/// interpreter's on the loss, every observed value and every tensor. The
/// clipping's own sums, which the step reads, stay routines.
#[test]
fn joined_loops_compute_what_the_interpreter_does() {
    for (optimizer, extra) in [("momentum(lr = 0.05)", "clip_norm = 0.5"), ("adam(lr = 0.01, eps = 1e-4)", "l2 = 0.01")]
    {
        let step = step(optimizer, extra, true);
        let plan = plan_train(&step);
        let routine_sums = plan.kernels.iter().filter(|k| is_sum_routine(&step.graph, k)).count();
        let clipped = usize::from(extra.starts_with("clip"));
        assert_eq!(routine_sums, clipped * step.grads.len(), "{}", plan.to_text(&step.graph));
        compiled_agrees_with_interpreter(&step, 8, 3);
    }
}

/// Whether `kernel` is a sum of squares run as a routine, not in a loop.
fn is_sum_routine(g: &Graph, kernel: &Kernel) -> bool {
    matches!(kernel, Kernel::Routine { node } if g.nodes[node.0].op == Op::SumSquares)
}

/// Every sum of squares of training's health rides in the loop that
/// computes or reads what it sums: the weights' updates, with weight decay (a weight large
/// enough to run in parts, each keeping a partial sum), and the
/// activations' loops (odd widths, so values are also summed one by one
/// at the end of each row). The compiled step still observes what the
/// interpreter does.
#[test]
fn health_sums_ride_in_the_loops_that_compute_what_they_sum() {
    let source = "model m {\n  input x: [300]\n  target y: class(3)\n  \
                  x |> dense(251) |> tanh |> dense(7) |> sigmoid |> dense(3) => logits\n  \
                  loss = cross_entropy(logits, y)\n  \
                  train { optimizer = momentum(lr = 0.05) weight_decay = 0.01 batch = 8 }\n}\n";
    let train = observed_step_of(source, 8);
    let plan = plan_train(&train);
    let text = plan.to_text(&train.graph);
    assert!(!plan.kernels.iter().any(|k| is_sum_routine(&train.graph, k)), "{text}");
    let in_loops: usize = plan
        .kernels
        .iter()
        .map(|k| match k {
            Kernel::Elementwise { sums, .. } => sums.len(),
            _ => 0,
        })
        .sum();
    // Three a parameter; one an activation, and its saturated outputs'.
    assert_eq!(in_loops, 3 * train.graph.params.len() + 2 * 2, "{text}");
    assert!(numel(&train.graph.params[0].shape) >= nnc_runtime::PARALLEL_ELEMENTS);
    compiled_agrees_with_interpreter(&train, 8, 3);
}

/// Health's sums that no loop serves (each channel's sum of a feature map,
/// the squares of a relu a convolution computes in its epilogue) run right
/// after the kernel computing what they sum, not after the backward pass;
/// the compiled step still observes what the interpreter does.
#[test]
fn health_sums_no_loop_serves_run_as_soon_as_their_input_is_computed() {
    let source = "model m {\n  input x: [2, 9, 9]\n  target y: class(3)\n  \
                  x |> conv2d(4, kernel = 3) |> relu |> maxpool(2) \
                  |> conv2d(5, kernel = 2, bias = false) |> batchnorm |> relu |> flatten |> dense(3) => logits\n  \
                  loss = cross_entropy(logits, y)\n  \
                  train { optimizer = momentum(lr = 0.05) batch = 4 }\n}\n";
    let train = observed_step_of(source, 4);
    let plan = plan_train(&train);
    let (g, text) = (&train.graph, plan.to_text(&train.graph));
    let fused: Vec<bool> = plan.locations.iter().map(|l| *l == Location::Fused).collect();
    let observed = |k: &Kernel| match *k {
        Kernel::Routine { node } => {
            matches!(g.nodes[node.0].op, Op::SumChannels | Op::SumSquares) && train.observed.contains(&node)
        }
        _ => false,
    };
    let hoisted: Vec<usize> = (0..plan.kernels.len()).filter(|&k| observed(&plan.kernels[k])).collect();
    // Both relus' channel sums, and the first one's squares.
    assert_eq!(hoisted.len(), 3, "{text}");
    for &k in &hoisted {
        let reads = kernel_reads(g, &plan.kernels[k], &fused);
        let producer = (0..k).rev().find(|&j| produces(&plan.kernels[j]).any(|v| reads.contains(&v)));
        assert!(
            producer.is_some_and(|j| (j + 1..k).all(|i| observed(&plan.kernels[i]))),
            "the sum at {k} does not follow what it sums:\n{text}"
        );
    }
    let last_product = plan.kernels.iter().rposition(|k| matches!(k, Kernel::MatMul { .. })).expect("products");
    assert!(hoisted.iter().all(|&k| k < last_product), "{text}");
    compiled_agrees_with_interpreter(&train, 4, 3);
}

/// An LSTM reads its sequence time-major (each direction in the order it
/// reads it), so each step's input part is a block of rows. Those blocks
/// are read where they lie (a slice along the first axis is no kernel),
/// and every join along the first axis (the sequence made time-major, the
/// steps' gradients, the recurrent weight's stacked operands) has its
/// parts computed in their place in it, or is itself a block of one that
/// does: no join or step slice copies. The step still computes what the
/// interpreter does.
#[test]
fn blocks_of_rows_are_computed_and_read_in_their_place() {
    for (layer, directions) in [("lstm(16)", 1), ("lstm(16, bidirectional = true)", 2)] {
        let train = recurrent_step(layer);
        let plan = plan_train(&train);
        let text = plan.to_text(&train.graph);
        let g = &train.graph;
        let computed = |i: usize| plan.kernels.iter().any(|k| produces(k).any(|v| v.0 == i));
        let scratch = |v: usize| match plan.locations[v] {
            Location::Scratch(offset) => offset,
            other => panic!("%{v} in scratch, not {other:?}:\n{text}"),
        };
        let (mut joins, mut slices) = (0, 0);
        for (i, node) in g.nodes.iter().enumerate().filter(|(i, _)| plan.locations[*i] != Location::Fused) {
            match node.op {
                Op::Concat { axis: 0 } => {
                    joins += 1;
                    assert!(!computed(i), "{layer}: %{i} copies its parts:\n{text}");
                    let mut at = scratch(i);
                    for part in &node.inputs {
                        assert_eq!(scratch(part.0), at, "{layer}: {part} of %{i}:\n{text}");
                        at += numel(g.shape(*part));
                    }
                }
                Op::Slice { axis: 0, start } => {
                    slices += 1;
                    assert!(!computed(i), "{layer}: %{i} copies its block:\n{text}");
                    let block = numel(&node.shape);
                    assert_eq!(scratch(i), scratch(node.inputs[0].0) + start * block, "{layer}: %{i}:\n{text}");
                }
                _ => {}
            }
        }
        assert_eq!((joins, slices), (4 * directions, 5 * directions), "{layer}:\n{text}");
        compiled_agrees_with_interpreter(&train, 4, 2);
    }
}

/// An LSTM's gates are blocks of columns of one tensor: σ and tanh read
/// each where it lies (their gradients read their outputs, not the
/// slices), so no kernel copies a gate out. A GRU's gates are sums of two
/// slices, which the loop adding them reads where they lie, row by row;
/// the sums are stored for the runtime's σ and tanh rather than fused into
/// a loop of their own. Either step computes what the interpreter does.
#[test]
fn gates_are_squashed_where_they_lie() {
    // The LSTM's first step has no forget gate (nothing to forget).
    for (layer, squashed_slices) in [("lstm(16)", 4 * 5 - 1), ("gru(16)", 0)] {
        let train = recurrent_step(layer);
        let plan = plan_train(&train);
        let text = plan.to_text(&train.graph);
        let g = &train.graph;
        let squash_routines: Vec<ValueId> = plan
            .kernels
            .iter()
            .filter_map(|k| match k {
                Kernel::Routine { node } if matches!(g.nodes[node.0].op, Op::Unary(Unary::Sigmoid | Unary::Tanh)) => {
                    Some(*node)
                }
                _ => None,
            })
            .collect();
        // A GRU's two σ and one tanh a step, or an LSTM's gates and cell.
        assert!(squash_routines.len() >= 3 * 5, "{layer}: gates squashed by the routine:\n{text}");
        let slices: Vec<ValueId> = squash_routines
            .iter()
            .map(|v| g.nodes[v.0].inputs[0])
            .filter(|x| matches!(g.nodes[x.0].op, Op::Slice { .. }))
            .collect();
        assert_eq!(slices.len(), squashed_slices, "{layer}:\n{text}");
        for s in slices {
            assert_eq!(plan.locations[s.0], Location::Fused, "{layer}: {s} copied:\n{text}");
            assert!(!plan.kernels.iter().any(|k| produces(k).any(|v| v == s)), "{layer}: {s} copied:\n{text}");
        }
        // Every gate slice (along the columns) that one loop reads is read there.
        let loop_read = |i: usize| {
            let readers: Vec<&crate::ir::Node> = g.nodes.iter().filter(|n| n.inputs.contains(&ValueId(i))).collect();
            matches!(readers[..], [r] if is_elementwise(&r.op))
        };
        let in_loops = (0..g.nodes.len())
            .filter(|&i| {
                matches!(g.nodes[i].op, Op::Slice { axis: 1, .. }) && g.nodes[i].shape[1] == 16 && loop_read(i)
            })
            .inspect(|&i| assert_eq!(plan.locations[i], Location::Fused, "{layer}: %{i} copied:\n{text}"))
            .count();
        assert!(squashed_slices > 0 || in_loops >= 4 * 5, "{layer}: {in_loops} slices read in loops:\n{text}");
        compiled_agrees_with_interpreter(&train, 4, 2);
    }
}

/// Part 0 of two steps sharing the store of an MLP with two hidden
/// layers of a million weights each, trained with `extra` settings: its
/// step and plan.
fn team_step(extra: &str) -> (TrainGraph, Plan) {
    let source = format!(
        "model m {{\n  input x: [1024]\n  target y: class(3)\n  \
         x |> dense(1024) |> relu |> dense(1024) |> relu |> dense(3) => logits\n  \
         loss = cross_entropy(logits, y)\n  train {{ optimizer = momentum(lr = 0.1) {extra} batch = 8 }}\n}}\n"
    );
    let model = model_of(&source);
    let mut step = shard_step_graph(&model, &model.train, Shard::part(8, 0, 2)).expect("step builds");
    step.fuse_activations();
    let plan = share_store(&step.graph, plan_train(&step), (0, 2)).expect("shares the store");
    (step, plan)
}

/// `team_step`'s kernels with its products computed together, as text.
fn team_kernels(extra: &str) -> Vec<String> {
    let (step, plan) = team_step(extra);
    let plan = team_products(&step.graph, plan);
    plan.kernels.iter().map(|k| plan.kernel_text(&step.graph, k)).collect()
}

/// The steps sharing a store read each large weight together in its
/// products (the forward passes of both hidden layers, the second's input
/// gradient), and sum each large weight gradient into their parts, with
/// no sum of it apart, updating the weights on each block of the sums;
/// the small last layer's products stay their own. A gradient whose norm
/// is taken (clipping) is read whole, and so is summed as before.
#[test]
fn steps_sharing_a_store_compute_large_products_together() {
    let count = |kernels: &[String], what: &str| kernels.iter().filter(|k| k.starts_with(what)).count();
    let kernels = team_kernels("");
    assert_eq!(count(&kernels, "team matmul by columns"), 3, "{kernels:#?}");
    assert_eq!(count(&kernels, "team matmul summed"), 2, "{kernels:#?}");
    assert_eq!(kernels.iter().filter(|k| k.contains("updating each block")).count(), 2, "{kernels:#?}");
    // The last layer's forward, input gradient and weight gradient.
    assert_eq!(count(&kernels, "matmul"), 3, "{kernels:#?}");
    // The sums left: the last layer's weight gradient and the three biases'.
    assert_eq!(count(&kernels, "all_reduce"), 4, "{kernels:#?}");
    // The updates left: the last layer's weight and the three biases.
    let updates = kernels.iter().filter(|k| k.starts_with("elementwise") && k.contains("-> Store(")).count();
    assert_eq!(updates, 4, "{kernels:#?}");

    let clipped = team_kernels("clip_norm = 1.0");
    assert_eq!(count(&clipped, "team matmul by columns"), 3, "{clipped:#?}");
    assert_eq!(count(&clipped, "team matmul summed"), 0, "{clipped:#?}");
    assert_eq!(count(&clipped, "all_reduce"), 6, "{clipped:#?}");
}

/// A kernel after a weight gradient that touches the weight (here a copy
/// into its first values) leaves its update after the wait for the sums:
/// only the other layer's runs on its sum's blocks.
#[test]
fn an_update_runs_on_the_sums_blocks_only_where_nothing_after_touches_its_values() {
    let (step, mut plan) = team_step("");
    let (first_weight, _) = plan.store.params[0];
    let loss = step.graph.loss.expect("a loss");
    plan.kernels.push(Kernel::Copy { from: loss, to: first_weight, len: 1 });
    let plan = team_products(&step.graph, plan);
    let summed: Vec<&[ValueId]> = plan
        .kernels
        .iter()
        .filter_map(|k| match k {
            Kernel::MatMul { team: Some(TeamSplit::Sum { update, .. }), .. } => Some(update.as_slice()),
            _ => None,
        })
        .collect();
    assert_eq!(summed.len(), 2, "{summed:?}");
    let updated: Vec<&[ValueId]> = summed.into_iter().filter(|update| !update.is_empty()).collect();
    assert_eq!(updated.len(), 1, "{updated:?}");
    assert!(updated[0].iter().all(|root| plan.locations[root.0] != Location::Store(first_weight)), "{updated:?}");
}

/// The depth of the expression each loop computes for value `i`, its
/// fused inputs' included (a reshape is read where what it reshapes lies).
fn fused_depth(g: &Graph, plan: &Plan, i: usize, depths: &mut [usize]) -> usize {
    if depths[i] == 0 {
        let fused = |v: &ValueId| plan.locations[v.0] == Location::Fused && g.nodes[v.0].op != Op::Reshape;
        let inputs: Vec<ValueId> = g.nodes[i].inputs.iter().filter(|v| fused(v)).copied().collect();
        depths[i] = 1 + inputs.iter().map(|v| fused_depth(g, plan, v.0, depths)).max().unwrap_or(0);
    }
    depths[i]
}

#[test]
fn a_long_chain_of_element_wise_values_is_stored_every_so_often() {
    // A GRU over 600 steps sums its weights' gradients over the steps: a
    // chain of 600 additions, one loop's expression were it fused whole.
    let source = "model m {\n  input x: seq[600, 3]\n  target y: class(2)\n  \
                  x |> gru(4) |> dense(2) => logits\n  loss = cross_entropy(logits, y)\n  \
                  train { optimizer = sgd(lr = 0.1) batch = 2 }\n}\n";
    let train = step_of(source, 2);
    let plan = plan_train(&train);
    let g = &train.graph;
    let mut depths = vec![0; g.nodes.len()];
    let deepest = (0..g.nodes.len()).map(|i| fused_depth(g, &plan, i, &mut depths)).max().expect("values");
    assert!((MAX_FUSED_DEPTH / 2..=MAX_FUSED_DEPTH).contains(&deepest), "deepest fused expression: {deepest}");
    compiled_agrees_with_interpreter(&train, 2, 2);
}
