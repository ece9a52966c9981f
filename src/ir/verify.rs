//! The IR's structural invariants: every input defined before its use, and
//! every op's shapes consistent with its inputs'. A failure is a bug in
//! nnc, never a user error, so it is reported as a message for a panic in
//! tests (and checked in debug builds before every compile).

use super::{Graph, Node, Op, numel};

/// Checks `graph`; the error names the first node that breaks an invariant.
pub fn verify(graph: &Graph) -> Result<(), String> {
    let n = graph.nodes.len();
    for (i, node) in graph.nodes.iter().enumerate() {
        let problem = if node.inputs.iter().any(|input| input.0 >= i) {
            Err("input defined after use")
        } else {
            shapes_fit(graph, node)
        };
        problem.map_err(|what| format!("node %{i}: {what}"))?;
    }
    let check = |ok: bool, i: usize, what: &str| if ok { Ok(()) } else { Err(format!("node %{i}: {what}")) };
    check(graph.prediction.0 < n, n, "prediction out of range")?;
    if let Some(loss) = graph.loss {
        check(loss.0 < n && graph.shape(loss).is_empty(), loss.0, "loss must be a scalar")?;
    }
    for (s, v) in graph.state_updates.iter().enumerate() {
        check(v.0 < n && graph.states.get(s).is_some_and(|st| st.shape == *graph.shape(*v)), v.0, "state update")?;
    }
    Ok(())
}

/// Whether `node`'s op accepts its inputs' shapes and produces its own: one
/// rule per op.
fn shapes_fit(graph: &Graph, node: &Node) -> Result<(), &'static str> {
    let check = |ok: bool, what: &'static str| if ok { Ok(()) } else { Err(what) };
    let shape = |k: usize| &graph.nodes[node.inputs[k].0].shape;
    let arity = node.inputs.len();
    match &node.op {
        Op::Input(_) | Op::Target(_) | Op::Hyper(_) | Op::Const(_) => check(arity == 0, "leaf with inputs")?,
        Op::Param(p) => {
            check(arity == 0 && *p < graph.params.len() && graph.params[*p].shape == node.shape, "bad param")?
        }
        Op::State(s) => {
            check(arity == 0 && *s < graph.states.len() && graph.states[*s].shape == node.shape, "bad state")?
        }
        Op::Unary(_) => check(arity == 1 && *shape(0) == node.shape, "unary shape")?,
        Op::UnaryGrad(_) => check(
            arity == 3 && *shape(0) == node.shape && *shape(1) == node.shape && *shape(2) == node.shape,
            "unary grad shape",
        )?,
        Op::Add | Op::Sub | Op::Mul | Op::Div => {
            check(arity == 2 && *shape(0) == node.shape && *shape(1) == node.shape, "element-wise shapes differ")?
        }
        Op::MulScalar => check(arity == 2 && *shape(0) == node.shape && numel(shape(1)) == 1, "mul_scalar shapes")?,
        Op::MatMul { ta, tb, .. } => {
            check(
                (arity == 2 || arity == 3 && node.shape.len() == 2 && *shape(2) == vec![node.shape[1]])
                    && shape(0).len() == 2
                    && shape(1).len() == 2
                    && node.shape.len() == 2,
                "matmul rank",
            )?;
            let (a, b) = (shape(0), shape(1));
            let (m, k1) = if *ta { (a[1], a[0]) } else { (a[0], a[1]) };
            let (k2, nn) = if *tb { (b[1], b[0]) } else { (b[0], b[1]) };
            check(k1 == k2 && node.shape == vec![m, nn], "matmul dimensions")?
        }
        Op::AddBias => check(
            arity == 2 && shape(0).len() == 2 && *shape(0) == node.shape && *shape(1) == vec![node.shape[1]],
            "add_bias shapes",
        )?,
        Op::SumRows => check(arity == 1 && shape(0).len() == 2 && node.shape == vec![shape(0)[1]], "sum_rows")?,
        Op::Reshape => check(arity == 1 && numel(shape(0)) == numel(&node.shape), "reshape size")?,
        Op::Softmax => check(arity == 1 && *shape(0) == node.shape && node.shape.len() == 2, "softmax")?,
        Op::SoftmaxGrad => check(arity == 2 && *shape(0) == node.shape && *shape(1) == node.shape, "softmax grad")?,
        Op::SoftmaxCrossEntropy => check(
            (arity == 2 || arity == 3 && *shape(2) == *shape(1))
                && shape(0).len() == 2
                && *shape(1) == vec![shape(0)[0]]
                && node.shape.is_empty(),
            "cross-entropy shapes",
        )?,
        Op::SoftmaxCrossEntropyGrad => check(
            (arity == 3 || arity == 4 && *shape(3) == *shape(1))
                && *shape(0) == node.shape
                && *shape(1) == vec![node.shape[0]]
                && shape(2).is_empty(),
            "cross-entropy grad shapes",
        )?,
        Op::ClassWeights(_) => check(arity == 1 && *shape(0) == node.shape && node.shape.len() == 1, "class weights")?,
        Op::Mse | Op::Bce => check(arity == 2 && shape(0) == shape(1) && node.shape.is_empty(), "loss shapes")?,
        Op::MseGrad | Op::BceGrad => check(
            arity == 3 && *shape(0) == node.shape && *shape(1) == node.shape && shape(2).is_empty(),
            "loss grad shapes",
        )?,
        Op::SumSquares => check(arity == 1 && node.shape.is_empty(), "sum_squares")?,
        Op::AllReduce => check(arity == 1 && *shape(0) == node.shape, "all_reduce")?,
        Op::Conv2d { groups, .. } => check(
            (arity == 2 || arity == 3 && *shape(2) == vec![node.shape[1]])
                && shape(0).len() == 4
                && shape(1).len() == 4
                && node.shape.len() == 4
                && grouped(shape(0)[1], shape(1), *groups),
            "conv2d shapes",
        )?,
        Op::Conv2dGradInput { groups, relu, .. } => check(
            (arity == 2 && !relu || arity == 3 && *relu && *shape(2) == node.shape)
                && node.shape.len() == 4
                && shape(0).len() == 4
                && grouped(node.shape[1], shape(0), *groups),
            "conv2d grad input",
        )?,
        Op::Conv2dGradWeight { groups, .. } => check(
            arity == 2 && node.shape.len() == 4 && shape(0).len() == 4 && grouped(shape(0)[1], &node.shape, *groups),
            "conv2d grad weight",
        )?,
        Op::AddChannelBias => {
            check(arity == 2 && *shape(0) == node.shape && *shape(1) == vec![node.shape[1]], "channel bias")?
        }
        Op::SumChannels => check(arity == 1 && node.shape == vec![shape(0)[1]], "sum_channels")?,
        Op::SumProductChannels => {
            check(arity == 2 && shape(0) == shape(1) && node.shape == vec![shape(0)[1]], "sum_product_channels")?
        }
        Op::MulChannel => {
            check(arity == 2 && *shape(0) == node.shape && *shape(1) == vec![node.shape[1]], "mul_channel")?
        }
        Op::Pool { .. } => check(arity == 1 && shape(0).len() == 4 && node.shape.len() == 4, "pool rank")?,
        Op::PoolGrad { max, relu, .. } => {
            check(arity == 2 && *shape(0) == node.shape && (*max || !*relu), "pool grad")?
        }
        Op::Upsample(f) => {
            let x = shape(0);
            let fits = arity == 1 && x.len() == 4 && node.shape == [x[0], x[1], x[2] * f, x[3] * f];
            check(fits, "upsample")?
        }
        Op::Dropout { .. } | Op::Bernoulli { .. } => {
            check(arity == 2 && *shape(0) == node.shape && shape(1).is_empty(), "random mask")?
        }
        Op::MaxPieces(p) => check(arity == 1 && numel(shape(0)) == numel(&node.shape) * p, "max_pieces")?,
        Op::MaxPiecesGrad(_) => check(arity == 2 && *shape(0) == node.shape, "max_pieces grad")?,
        Op::Slice { axis, start } | Op::SliceGrad { axis, start } => {
            let (whole, part) =
                if matches!(node.op, Op::Slice { .. }) { (shape(0), &node.shape) } else { (&node.shape, shape(0)) };
            let fits = arity == 1
                && whole.len() == part.len()
                && *axis < whole.len()
                && start + part[*axis] <= whole[*axis]
                && (0..whole.len()).all(|d| d == *axis || whole[d] == part[d]);
            check(fits, "slice bounds")?
        }
        Op::Concat { axis } => {
            let along: usize =
                node.inputs.iter().map(|v| graph.nodes[v.0].shape.get(*axis).copied().unwrap_or(0)).sum();
            let beside = |part: &Vec<usize>| {
                part.len() == node.shape.len() && (0..part.len()).all(|d| d == *axis || part[d] == node.shape[d])
            };
            let fits = arity >= 1 && *axis < node.shape.len() && along == node.shape[*axis];
            check(fits && (0..arity).all(|k| beside(shape(k))), "concat shapes")?
        }
        Op::Gather => check(
            arity == 2 && shape(1).len() == 2 && node.shape == [shape(0).clone(), vec![shape(1)[1]]].concat(),
            "gather shapes",
        )?,
        Op::GatherGrad => check(arity == 2 && node.shape.len() == 2, "gather grad shapes")?,
        Op::ClipScale(_) => check(arity == 1 && shape(0).is_empty() && node.shape.is_empty(), "clip_scale")?,
    }
    Ok(())
}

/// Whether a convolution's `channels` and filter `[F, C/G, KH, KW]` split into `groups` groups.
fn grouped(channels: usize, filter: &[usize], groups: usize) -> bool {
    groups > 0 && filter[0].is_multiple_of(groups) && filter[1] * groups == channels
}
