//! Rewrites of a forward graph for its compiled code alone. The reference
//! interpreter runs graphs as lowered, so the JIT-against-interpreter tests
//! check every rewrite here.

use super::{Graph, Op, Unary};

/// Moves each ReLU that is the only reader of a convolution into the
/// convolution, which applies it as it stores its outputs: one pass over
/// them fewer. The ReLU node becomes a view of the convolution's output,
/// so every value keeps its id. A convolution something else reads (a
/// training step's backward pass reads the ReLU's input) is left alone.
pub fn fuse_activations(graph: &mut Graph) {
    let mut readers = vec![0usize; graph.nodes.len()];
    for input in graph.nodes.iter().flat_map(|n| &n.inputs) {
        readers[input.0] += 1;
    }
    let outputs: Vec<_> = [graph.prediction].into_iter().chain(graph.loss).chain(graph.state_updates.clone()).collect();
    for i in 0..graph.nodes.len() {
        let (op, inputs) = (&graph.nodes[i].op, &graph.nodes[i].inputs);
        let conv = match (op, inputs.as_slice()) {
            (Op::Unary(Unary::Relu), &[conv]) if readers[conv.0] == 1 && !outputs.contains(&conv) => conv,
            _ => continue,
        };
        if let Op::Conv2d { relu: fused @ false, .. } = &mut graph.nodes[conv.0].op {
            *fused = true;
            graph.nodes[i].op = Op::Reshape;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::{check_source, forward_graph, input_gradient_graph};

    /// The first convolution's ReLU moves into it; the second convolution
    /// feeds batch normalisation and keeps its output; a graph whose
    /// backward pass reads the convolutions' outputs keeps every ReLU.
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
            fuse_activations(&mut graph);
            let convs = graph.nodes.iter().filter_map(|n| match n.op {
                Op::Conv2d { relu, .. } => Some(relu),
                _ => None,
            });
            let relus = graph.nodes.iter().filter(|n| n.op == Op::Unary(Unary::Relu)).count();
            (convs.collect::<Vec<_>>(), relus)
        };
        assert_eq!(fused(forward_graph(model, 4, false).expect("forward")), (vec![true, false], 1));
        assert_eq!(fused(input_gradient_graph(model, 4).expect("input gradient")), (vec![false, false], 2));
    }
}
