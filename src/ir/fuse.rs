//! Rewrites of a forward graph for its compiled code alone. The reference
//! interpreter runs graphs as lowered, so the JIT-against-interpreter tests
//! check every rewrite here.

use super::{Graph, Op, TrainGraph, Unary, ValueId};

impl TrainGraph {
    /// `fuse_activations` for a training step, whose gradients, updates,
    /// new values and observed scalars are read back too.
    pub fn fuse_activations(&mut self) {
        let kept = [&self.grads, &self.new_params, &self.new_states, &self.updates, &self.observed];
        let kept: Vec<ValueId> = kept.into_iter().flatten().copied().collect();
        fuse_activations(&mut self.graph, &kept);
    }
}

/// Moves biases, ReLUs and ReLUs' gradients into the kernels next to
/// them: one pass over their values fewer each. The fused node becomes a
/// view of the kernel's output, so every value keeps its id.
///
/// - A bias added to a product that only it reads moves into the product,
///   which adds it as it stores each block of its output (a dense layer).
/// - A ReLU of a convolution or product that only it reads (through views
///   that only it reads) moves into that kernel, which applies it as it
///   stores its outputs. (A ReLU's gradient reads the ReLU's output, which
///   the view still gives, so graphs with a backward pass fuse too.)
/// - A ReLU's gradient whose incoming gradient is the only reader of a max
///   pooling's gradient, over that ReLU's output, moves into the pooling's
///   gradient, which routes each window's gradient only where its largest
///   value is positive.
/// - A ReLU's gradient whose incoming gradient is the only reader of a
///   convolution's input gradient moves into it, which zeroes each value
///   where the ReLU's output is not positive as it stores it.
///
/// A kernel whose output something else reads, or that the graph gives
/// back (its outputs, state updates, or the values in `kept`), is left alone.
pub fn fuse_activations(graph: &mut Graph, kept: &[ValueId]) {
    let mut readers = vec![0usize; graph.nodes.len()];
    for input in graph.nodes.iter().flat_map(|n| &n.inputs) {
        readers[input.0] += 1;
    }
    let roots = [graph.prediction].into_iter().chain(graph.loss).chain(graph.state_updates.iter().copied());
    let outputs: Vec<_> = roots.chain(kept.iter().copied()).collect();
    let alone = |v: ValueId| readers[v.0] == 1 && !outputs.contains(&v);
    for i in 0..graph.nodes.len() {
        let (op, inputs) = (graph.nodes[i].op.clone(), graph.nodes[i].inputs.clone());
        let fused = match (op, inputs.as_slice()) {
            // (A bias defined after the product could not be its input.)
            (Op::AddBias, &[product, bias]) if alone(product) && bias.0 < product.0 => {
                let node = &mut graph.nodes[product.0];
                let unfused = matches!(node.op, Op::MatMul { relu: false, .. }) && node.inputs.len() == 2;
                unfused.then(|| node.inputs.push(bias)).map(|()| product)
            }
            (Op::Unary(Unary::Relu), &[x]) => {
                behind_views(graph, x, &alone).and_then(|kernel| match &mut graph.nodes[kernel.0].op {
                    Op::Conv2d { relu: fused @ false, .. } | Op::MatMul { relu: fused @ false, .. } => {
                        *fused = true;
                        Some(kernel)
                    }
                    _ => None,
                })
            }
            // (A ReLU output defined after the gradient could not be its input.)
            (Op::UnaryGrad(Unary::Relu), &[y, _, gradient]) if alone(gradient) && y.0 < gradient.0 => {
                let node = &mut graph.nodes[gradient.0];
                match &mut node.op {
                    Op::PoolGrad { max: true, relu: fused @ false, .. } if node.inputs[0] == y => {
                        *fused = true;
                        Some(gradient)
                    }
                    Op::Conv2dGradInput { relu: fused @ false, .. } => {
                        *fused = true;
                        node.inputs.push(y);
                        Some(gradient)
                    }
                    _ => None,
                }
            }
            _ => None,
        };
        if let Some(kernel) = fused {
            graph.nodes[i].op = Op::Reshape;
            graph.nodes[i].inputs = vec![kernel];
        }
    }
}

/// The node whose output `v` is, through views (`Reshape`), when `v`, each
/// view and that node have no other reader (`alone`).
fn behind_views(graph: &Graph, mut v: ValueId, alone: &dyn Fn(ValueId) -> bool) -> Option<ValueId> {
    while alone(v) {
        match graph.nodes[v.0].op {
            Op::Reshape => v = graph.nodes[v.0].inputs[0],
            _ => return Some(v),
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exec::{Backend, Compiled, Store};
    use crate::pipeline::{check_source, forward_graph, input_gradient_graph};

    /// The first convolution's ReLU moves into it; the second convolution
    /// feeds batch normalisation and keeps its output. `nnc explain`'s graph,
    /// whose backward pass reads the ReLUs' outputs, fuses alike, and its
    /// input gradient stays that of the unfused graph.
    #[test]
    fn a_relu_moves_into_the_convolution_only_it_reads() {
        let source = "model m {\n  input x: [1, 8, 8]\n  target y: class(3)\n  \
                      x |> conv2d(4, kernel = 3) |> relu |> conv2d(4, kernel = 3) |> batchnorm |> relu \
                      |> flatten |> dense(3) => logits\n  \
                      loss = cross_entropy(logits, y)\n  train { optimizer = sgd(lr = 0.1) batch = 4 }\n}\n";
        let checked = check_source("m.nn", source);
        assert!(!checked.has_errors(), "{:?}", checked.diags);
        let model = &checked.models[0];
        let fused = |mut graph: Graph| {
            fuse_activations(&mut graph, &[]);
            let convs = graph.nodes.iter().filter_map(|n| match n.op {
                Op::Conv2d { relu, .. } => Some(relu),
                _ => None,
            });
            let relus = graph.nodes.iter().filter(|n| n.op == Op::Unary(Unary::Relu)).count();
            (convs.collect::<Vec<_>>(), relus)
        };
        assert_eq!(fused(forward_graph(model, 4, false).expect("forward")), (vec![true, false], 1));
        assert_eq!(fused(input_gradient_graph(model, 4).expect("input gradient")), (vec![true, false], 1));

        // The compiled (fused) input gradient against the interpreter's (unfused).
        let graph = input_gradient_graph(model, 4).expect("input gradient");
        let mut store = Store::new(&graph);
        for (p, param) in graph.params.iter().enumerate() {
            let n = crate::shape::numel(&param.shape);
            let values: Vec<f32> = (0..n).map(|i| ((i * 7919 + p * 131) % 1000) as f32 / 1000.0 - 0.4).collect();
            store.set_param(p, &values);
        }
        let x: Vec<f32> = (0..4 * 64).map(|i| ((i * 104_729) % 997) as f32 / 997.0).collect();
        let seed: Vec<f32> = (0..4 * 3).map(|i| f32::from(u8::from(i % 4 == 0))).collect();
        let gradient = |graph: &Graph, backend| {
            let mut compiled = Compiled::<Graph>::new(graph.clone(), backend).expect("compiles");
            compiled.run(&mut store.clone(), &x, &seed).expect("runs").0
        };
        // The forward pass keeps the class target's leaf, which nothing
        // reads here; the interpreter would bind the seed to it too.
        let mut unfused = graph.clone();
        for node in unfused.nodes.iter_mut().filter(|n| n.op == Op::Target(0) && n.shape != [4, 3]) {
            node.op = Op::Const(0.0);
        }
        let (jit, interp) = (gradient(&graph, Backend::Jit), gradient(&unfused, Backend::Interp));
        assert!(interp.iter().any(|&v| v != 0.0), "the gradient reaches the input");
        for (a, b) in jit.iter().zip(&interp) {
            assert!((a - b).abs() <= 1e-4 * (1.0 + b.abs()), "{a} vs {b}");
        }
    }

    /// Each dense layer's bias moves into its product, and a ReLU after it
    /// too; a sigmoid stays a kernel of its own. In a training step, whose
    /// backward pass reads the activations' outputs, the same.
    #[test]
    fn a_dense_layers_bias_and_relu_move_into_its_product() {
        let source = "model m {\n  input x: [6]\n  target y: class(3)\n  \
                      x |> dense(8) |> sigmoid |> dense(8) |> relu |> dense(3) => logits\n  \
                      loss = cross_entropy(logits, y)\n  train { optimizer = sgd(lr = 0.1) batch = 4 }\n}\n";
        let checked = check_source("m.nn", source);
        assert!(!checked.has_errors(), "{:?}", checked.diags);
        let model = &checked.models[0];
        // Products with a bias, with a ReLU, and the add_bias and activation nodes left.
        let counts = |graph: &Graph| {
            let count = |wanted: &dyn Fn(&crate::ir::Node) -> bool| graph.nodes.iter().filter(|n| wanted(n)).count();
            (
                count(&|n| matches!(n.op, Op::MatMul { .. }) && n.inputs.len() == 3),
                count(&|n| matches!(n.op, Op::MatMul { relu: true, .. })),
                count(&|n| n.op == Op::AddBias),
                count(&|n| matches!(n.op, Op::Unary(_))),
            )
        };
        let mut forward = forward_graph(model, 4, false).expect("forward");
        assert_eq!(counts(&forward), (0, 0, 3, 2));
        fuse_activations(&mut forward, &[]);
        assert_eq!(counts(&forward), (3, 1, 0, 1));
        crate::ir::verify(&forward).expect("the fused graph is well formed");
        let mut step = crate::pipeline::step_graph(model, &model.train, 4).expect("step");
        step.fuse_activations();
        assert_eq!(counts(&step.graph), (3, 1, 0, 1));
        crate::ir::verify(&step.graph).expect("the fused step is well formed");
    }

    /// In a training step, each ReLU's gradient under a max pooling moves
    /// into the pooling's gradient, and only there: the dense layer's ReLU
    /// and the average pooling's keep theirs. (`tests/jit.rs` runs such
    /// steps against the interpreter's unfused ones.)
    #[test]
    fn a_relu_gradient_moves_into_the_max_pooling_gradient_of_its_output() {
        let source = "model m {\n  input x: [1, 18, 18]\n  target y: class(3)\n  \
                      x |> conv2d(4, kernel = 3) |> relu |> maxpool(2) |> conv2d(4, kernel = 3, padding = 1) |> batchnorm \
                      |> relu |> maxpool(2) |> conv2d(2, kernel = 1) |> relu |> avgpool(2) \
                      |> flatten |> dense(8) |> relu |> dense(3) => logits\n  \
                      loss = cross_entropy(logits, y)\n  train { optimizer = adam(lr = 0.01) batch = 4 }\n}\n";
        let checked = check_source("m.nn", source);
        assert!(!checked.has_errors(), "{:?}", checked.diags);
        let model = &checked.models[0];
        let mut step = crate::pipeline::step_graph(model, &model.train, 4).expect("step");
        let count = |graph: &Graph, wanted: &dyn Fn(&Op) -> bool| graph.nodes.iter().filter(|n| wanted(&n.op)).count();
        let relu_grads = |graph: &Graph| count(graph, &|op| *op == Op::UnaryGrad(Unary::Relu));
        let fused_pools = |graph: &Graph| count(graph, &|op| matches!(op, Op::PoolGrad { relu: true, .. }));
        assert_eq!((relu_grads(&step.graph), fused_pools(&step.graph)), (4, 0));
        step.fuse_activations();
        assert_eq!((relu_grads(&step.graph), fused_pools(&step.graph)), (2, 2));
        crate::ir::verify(&step.graph).expect("the fused step is well formed");
    }

    /// A ReLU's gradient moves into the input gradient of the one
    /// convolution that read its output; a ReLU two convolutions read gets
    /// the sum of their input gradients and keeps its own. (`tests/jit.rs`
    /// runs such steps against the interpreter's unfused ones.)
    #[test]
    fn a_relu_gradient_moves_into_the_input_gradient_of_the_convolution_that_read_it() {
        let source = "model m {\n  input x: [2, 9, 9]\n  target y: class(3)\n  \
                      x |> conv2d(4, kernel = 3, padding = 1) |> relu |> conv2d(5, kernel = 3) |> relu => a\n  \
                      a |> conv2d(3, kernel = 1) => b\n  a |> conv2d(3, kernel = 3, padding = 1) |> relu => c\n  \
                      concat(b, c) |> flatten |> dense(3) => logits\n  \
                      loss = cross_entropy(logits, y)\n  train { optimizer = sgd(lr = 0.1) batch = 4 }\n}\n";
        let checked = check_source("m.nn", source);
        assert!(!checked.has_errors(), "{:?}", checked.diags);
        let model = &checked.models[0];
        let step = crate::pipeline::step_graph(model, &model.train, 4).expect("step");
        let count = |graph: &Graph, wanted: &dyn Fn(&Op) -> bool| graph.nodes.iter().filter(|n| wanted(&n.op)).count();
        let relu_grads = |graph: &Graph| count(graph, &|op| *op == Op::UnaryGrad(Unary::Relu));
        let fused = |graph: &Graph| count(graph, &|op| matches!(op, Op::Conv2dGradInput { relu: true, .. }));
        assert_eq!((relu_grads(&step.graph), fused(&step.graph)), (3, 0));
        let mut fused_step = step.clone();
        fused_step.fuse_activations();
        // The first ReLU's; `a`'s is read by two; `c`'s gradient comes from the dense layer.
        assert_eq!((relu_grads(&fused_step.graph), fused(&fused_step.graph)), (2, 1));
        crate::ir::verify(&fused_step.graph).expect("the fused step is well formed");
    }
}
