//! Every gradient rule against central finite differences (f64): one test per
//! op on random shapes, and every bundled model whose layers train.

use nnc::diag::Span;
use nnc::gradcheck::{Batch, Options, check_graph, check_model};
use nnc::ir::{Graph, Init, Op, ParamInfo, Unary};
use nnc::pipeline::check_source;
use proptest::prelude::*;

const TOLERANCE: f64 = 1e-4;

fn assert_model_gradients(source: &str, seed: u64) {
    let checked = check_source("g.nn", source);
    assert!(!checked.has_errors(), "{source}\n{:?}", checked.diags);
    let reports = check_model(&checked.models[0], &Options { seed, ..Options::default() }).expect("gradcheck runs");
    for r in reports {
        assert!(r.worst_relative_error < TOLERANCE, "{source}\n{}: {:e}", r.name, r.worst_relative_error);
    }
}

fn mlp(input: usize, hidden: usize, activation: &str, head: &str) -> String {
    format!(
        "model g {{ input x: [{input}] {head}
           x |> dense({hidden}) |> {activation} |> dense(OUT) => p  loss = LOSS }}"
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 6, ..ProptestConfig::default() })]

    #[test]
    fn activations(input in 1usize..6, hidden in 1usize..7, classes in 2usize..5, seed in 0u64..1000,
                   activation in prop::sample::select(vec!["sigmoid", "tanh", "relu", "leaky_relu(0.1)", "elu(0.7)", "identity", "gelu", "gelu(tanh = true)", "silu", "softplus", "clip(min = -0.5, max = 0.7)"])) {
        let source = mlp(input, hidden, activation, &format!("target y: class({classes})"))
            .replace("OUT", &classes.to_string())
            .replace("LOSS", "cross_entropy(p, y)");
        assert_model_gradients(&source, seed);
    }

    #[test]
    fn class_weighted_cross_entropy(input in 1usize..6, classes in 2usize..5, seed in 0u64..1000,
                                    weights in prop::collection::vec(0.0f64..4.0, 4)) {
        let weights: Vec<String> = weights[..classes].iter().map(|w| format!("{w:.3}")).collect();
        let source = mlp(input, 3, "tanh", &format!("target y: class({classes})"))
            .replace("OUT", &classes.to_string())
            .replace("LOSS", &format!("cross_entropy(p, y, weights = [{}])", weights.join(", ")));
        prop_assume!(!check_source("g.nn", &source).has_errors());
        assert_model_gradients(&source, seed);
    }

    #[test]
    fn mse_loss(input in 1usize..6, hidden in 1usize..7, out in 1usize..4, seed in 0u64..1000) {
        let source = mlp(input, hidden, "tanh", &format!("target y: real[{out}]"))
            .replace("OUT", &out.to_string())
            .replace("LOSS", "mse(p, y)");
        assert_model_gradients(&source, seed);
    }

    #[test]
    fn binary_cross_entropy_loss(input in 1usize..6, hidden in 1usize..7, out in 1usize..4, seed in 0u64..1000) {
        let source = format!("model g {{ input x: [{input}] target y: binary[{out}]
            x |> dense({hidden}) |> tanh |> dense({out}) |> sigmoid => p  loss = binary_cross_entropy(p, y) }}");
        assert_model_gradients(&source, seed);
    }

    #[test]
    fn softmax_layer(input in 1usize..6, classes in 2usize..6, seed in 0u64..1000) {
        let source = format!("model g {{ input x: [{input}] target y: real[{classes}]
            x |> dense({classes}) |> softmax => p  loss = mse(p, y) }}");
        assert_model_gradients(&source, seed);
    }

    #[test]
    fn skip_connection_and_reshape(c in 1usize..4, h in 1usize..4, seed in 0u64..1000) {
        let n = c * h * 2;
        let source = format!("model g {{ input x: [{c}, {h}, 2] target y: real[{n}]
            x |> flatten => f
            f |> dense({n}) |> tanh => h1
            add(h1, f) |> reshape([{n}, 1]) |> flatten |> dense({n}, bias = false) => p  loss = mse(p, y) }}");
        assert_model_gradients(&source, seed);
    }

    #[test]
    fn concatenation_of_feature_maps_and_vectors(c in 1usize..3, h in 1usize..4, f in 1usize..4, seed in 0u64..1000) {
        let source = format!("model g {{ input x: [{c}, {h}, {h}] target y: real[3]
            x |> conv2d({f}, kernel = 1) |> tanh => a
            x |> concat(a) |> flatten => v
            v |> dense(2) |> tanh => b
            concat(v, b) |> dense(3) => p  loss = mse(p, y) }}");
        assert_model_gradients(&source, seed);
    }

    #[test]
    fn global_average_pooling(c in 1usize..4, h in 1usize..5, w in 1usize..5, f in 1usize..4, seed in 0u64..1000) {
        let source = format!("model g {{ input x: [{c}, {h}, {w}] target y: real[2]
            x |> conv2d({f}, kernel = 1) |> tanh |> global_avgpool |> dense(2) => p  loss = mse(p, y) }}");
        assert_model_gradients(&source, seed);
    }

    #[test]
    fn several_inputs(a in 1usize..4, h in 1usize..4, b in 1usize..5, seed in 0u64..1000) {
        let source = format!("model g {{ input img: [{a}, {h}, 2] input v: [{b}] target y: real[2]
            img |> conv2d(2, kernel = 1) |> tanh |> flatten => f
            v |> dense(3) |> tanh => d
            concat(f, d) |> dense(2) => p  loss = mse(p, y) }}");
        assert_model_gradients(&source, seed);
    }

    #[test]
    fn weighted_losses_over_several_targets(input in 1usize..5, classes in 2usize..4, out in 1usize..3,
                                             w in 0.1f64..3.0, seed in 0u64..1000) {
        let source = format!("model g {{ input x: [{input}] target c: class({classes}) target r: real[{out}]
            x |> dense(4) |> tanh => h
            h |> dense({classes}) => logits
            h |> dense({out}) => value
            loss = cross_entropy(logits, c) + {w:.3} * mse(value, r) + 0.5 * mse(value, r) }}");
        assert_model_gradients(&source, seed);
    }

    #[test]
    fn rectangular_convolutions(c in 1usize..3, h in 2usize..6, w in 2usize..6, kh in 1usize..4, kw in 1usize..4,
                                sh in 1usize..3, sw in 1usize..3, ph in 0usize..2, dw in 1usize..3, seed in 0u64..1000) {
        prop_assume!(kh <= h + 2 * ph && dw * (kw - 1) < w);
        let source = format!("model g {{ input x: [{c}, {h}, {w}] target y: real[2]
            x |> conv2d(2, kernel = [{kh}, {kw}], stride = [{sh}, {sw}], padding = [{ph}, 0], dilation = [1, {dw}])
              |> tanh |> flatten |> dense(2) => p  loss = mse(p, y) }}");
        assert_model_gradients(&source, seed);
    }

    #[test]
    fn one_dimensional_convolutions_and_pooling(c in 1usize..3, l in 3usize..9, f in 1usize..3, k in 1usize..4,
                                                stride in 1usize..3, padding in 0usize..2, pk in 1usize..4,
                                                ps in 1usize..3, pp in 0usize..2, max in any::<bool>(),
                                                seed in 0u64..1000) {
        let out = (l + 2 * padding - k) / stride + 1;
        prop_assume!(2 * pp <= pk && pk <= out + 2 * pp);
        let pool = if max { "maxpool" } else { "avgpool" };
        let source = format!("model g {{ input x: [{c}, {l}] target y: real[2]
            x |> conv1d({f}, kernel = {k}, stride = {stride}, padding = {padding}) |> tanh
              |> {pool}({pk}, stride = {ps}, padding = {pp}) |> flatten |> dense(2) => p  loss = mse(p, y) }}");
        assert_model_gradients(&source, seed);
    }

    #[test]
    fn grouped_convolutions(groups in 1usize..4, per_group in 1usize..3, filters_per_group in 1usize..3,
                            size in 3usize..6, k in 1usize..4, padding in 0usize..2, sequence in any::<bool>(),
                            bias in any::<bool>(), seed in 0u64..1000) {
        // Each group's filters read only its channels; depthwise when one channel a group.
        let (c, f) = (groups * per_group, groups * filters_per_group);
        let (input, layer) = if sequence { (format!("[{c}, {size}]"), "conv1d") } else { (format!("[{c}, {size}, {size}]"), "conv2d") };
        let source = format!("model g {{ input x: {input} target y: real[2]
            x |> {layer}({f}, kernel = {k}, padding = {padding}, groups = {groups}, bias = {bias}) |> tanh
              |> flatten |> dense(2) => p  loss = mse(p, y) }}");
        assert_model_gradients(&source, seed);
    }

    #[test]
    fn upsampling(c in 1usize..3, h in 1usize..4, w in 1usize..4, factor in 1usize..4, seed in 0u64..1000) {
        let source = format!("model g {{ input x: [{c}, {h}, {w}] target y: real[2]
            x |> conv2d(2, kernel = 1) |> tanh |> upsample({factor}) |> conv2d(1, kernel = 2) |> tanh |> flatten
              |> dense(2) => p  loss = mse(p, y) }}");
        prop_assume!(h * factor >= 2 && w * factor >= 2);
        assert_model_gradients(&source, seed);
    }

    #[test]
    fn layer_normalisation(c in 1usize..3, h in 1usize..4, features in 2usize..6, seed in 0u64..1000) {
        let source = format!("model g {{ input x: [{c}, {h}, {h}] target y: real[3]
            x |> layernorm |> flatten |> dense({features}) |> layernorm(eps = 1e-3) |> tanh |> dense(3) => p
            loss = mse(p, y) }}");
        assert_model_gradients(&source, seed);
    }

    #[test]
    fn convolution_and_pooling(c in 1usize..3, h in 2usize..7, w in 2usize..7, f in 1usize..3,
                               k in 1usize..4, stride in 1usize..4, padding in 0usize..2, dilation in 1usize..3,
                               pk in 1usize..4, ps in 1usize..3, pp in 0usize..2, max in any::<bool>(),
                               seed in 0u64..1000) {
        let extent = dilation * (k - 1) + 1;
        prop_assume!(extent <= h + 2 * padding && extent <= w + 2 * padding);
        let (oh, ow) = ((h + 2 * padding - extent) / stride + 1, (w + 2 * padding - extent) / stride + 1);
        // A pooling window padded by at most half its size (`pp`).
        prop_assume!(2 * pp <= pk && pk <= oh + 2 * pp && pk <= ow + 2 * pp);
        let pool = if max { "maxpool" } else { "avgpool" };
        let source = format!("model g {{ input x: [{c}, {h}, {w}] target y: class(3)
            x |> conv2d({f}, kernel = {k}, stride = {stride}, padding = {padding}, dilation = {dilation}) |> tanh
              |> {pool}({pk}, stride = {ps}, padding = {pp}) |> flatten |> dense(3) => p  loss = cross_entropy(p, y) }}");
        assert_model_gradients(&source, seed);
    }

    #[test]
    fn batch_normalisation(c in 1usize..4, h in 1usize..4, features in 1usize..6, seed in 0u64..1000) {
        // Over dense features and over image channels (batch statistics: the training graph).
        let source = format!("model g {{ input x: [{c}, {h}, 2] target y: real[3]
            x |> conv2d(2, kernel = 1) |> batchnorm |> tanh |> flatten
              |> dense({features}, bias = false) |> batchnorm(eps = 0.01) |> dense(3) => p  loss = mse(p, y) }}");
        assert_model_gradients(&source, seed);
    }

    #[test]
    fn recurrent_layers_through_time(steps in 5usize..8, features in 1usize..4, hidden in 1usize..5,
                                     layer in prop::sample::select(vec!["rnn", "lstm", "gru"]),
                                     sequences in any::<bool>(), bidirectional in any::<bool>(),
                                     seed in 0u64..1000) {
        // Backpropagation through at least five steps, from the last state or
        // from every state, one way or both.
        let head = if sequences { "|> flatten" } else { "" };
        let source = format!("model g {{ input x: seq[{steps}, {features}] target y: class(3)
            x |> {layer}({hidden}, sequences = {sequences}, bidirectional = {bidirectional}) {head} |> dense(3) => p
            loss = cross_entropy(p, y) }}");
        assert_model_gradients(&source, seed);
    }

    #[test]
    fn embedding_into_lstm(steps in 5usize..7, vocab in 2usize..9, dim in 1usize..4, seed in 0u64..1000) {
        let source = format!("model g {{ input ids: tokens[{steps}] target y: real[2]
            ids |> embedding({vocab}, {dim}) |> lstm(3) |> dense(2) => p  loss = mse(p, y) }}");
        assert_model_gradients(&source, seed);
    }

    #[test]
    fn maxout_units(input in 1usize..6, units in 1usize..5, pieces in 2usize..4, seed in 0u64..1000) {
        let source = format!("model g {{ input x: [{input}] target y: real[2]
            x |> maxout({units}, pieces = {pieces}) |> dense(2) => p  loss = mse(p, y) }}");
        assert_model_gradients(&source, seed);
    }

    #[test]
    fn tied_and_shared_weights(visible in 2usize..7, code in 1usize..5, seed in 0u64..1000) {
        let source = format!("model g {{ input x: [{visible}]
            x |> dense({code}) as enc |> sigmoid |> dense({visible}, tied = enc) |> tanh
              |> dense({code}, shared = enc) |> dense({visible}, tied = enc) => r  loss = mse(r, x) }}");
        assert_model_gradients(&source, seed);
    }
}

/// A graph `loss = mse(f(p), t)` around one op `f` applied to parameters.
fn op_graph(op: Op, arity: usize, shape: Vec<usize>) -> Graph {
    let span = Span::default();
    let mut g = Graph::new(shape[0]);
    let target = g.push(Op::Target(0), vec![], shape.clone(), span);
    let mut args = Vec::new();
    for i in 0..arity {
        g.params.push(ParamInfo {
            name: format!("p{i}"),
            shape: shape.clone(),
            init: Init::Zeros,
            decay: false,
            frozen: false,
        });
        args.push(g.push(Op::Param(i), vec![], shape.clone(), span));
    }
    let y = g.push(op, args, shape.clone(), span);
    g.prediction = y;
    g.loss = Some(g.push(Op::Mse, vec![y, target], vec![], span));
    g
}

fn run_op(op: Op, arity: usize, positive: bool) {
    let shape = vec![3, 4];
    let g = op_graph(op.clone(), arity, shape);
    // Values in [0.5, 2] (positive) or [-2, 2] away from 0, deterministic.
    let params: Vec<Vec<f64>> = (0..arity)
        .map(|p| {
            (0..12)
                .map(|i| {
                    let v = 0.5 + ((i * 7 + p * 5) % 11) as f64 * 0.15;
                    if positive || (i + p) % 2 == 0 { v } else { -v }
                })
                .collect()
        })
        .collect();
    let batch = Batch { inputs: vec![], targets: vec![(0..12).map(|i| (i as f64 * 0.37).sin()).collect()] };
    for r in check_graph(&g, &batch, &params, &Options { seed: 1, ..Options::default() }).expect("gradcheck runs") {
        assert!(r.worst_relative_error < TOLERANCE, "{op:?} {}: {:e}", r.name, r.worst_relative_error);
    }
}

/// A value read through slices along two axes that lie end to end, overlap,
/// and leave a gap (autodiff joins the first, places the others apart):
/// loss = Σ_k (k + 1)·Σ slice_k².
#[test]
fn slices_end_to_end_overlapping_and_apart() {
    let span = Span::default();
    let shape = vec![3, 6, 4];
    let mut g = Graph::new(3);
    g.params.push(ParamInfo { name: "p".into(), shape: shape.clone(), init: Init::Zeros, decay: false, frozen: false });
    let p = g.push(Op::Param(0), vec![], shape, span);
    let slices = [(1, 0, 2), (1, 2, 2), (1, 1, 2), (1, 5, 1), (2, 0, 2), (2, 2, 2), (2, 1, 1)];
    let mut loss = None;
    for (k, &(axis, start, len)) in slices.iter().enumerate() {
        let mut part = vec![3, 6, 4];
        part[axis] = len;
        let slice = g.push(Op::Slice { axis, start }, vec![p], part, span);
        let squares = g.push(Op::SumSquares, vec![slice], vec![], span);
        let term = g.push(Op::Unary(Unary::Scale(k as f64 + 1.0)), vec![squares], vec![], span);
        loss = Some(match loss {
            Some(sum) => g.push(Op::Add, vec![sum, term], vec![], span),
            None => term,
        });
    }
    g.loss = loss;
    g.prediction = loss.expect("terms");
    let params = vec![(0..72).map(|i| ((i * 37 % 29) as f64 - 14.0) / 7.0).collect()];
    let batch = Batch { inputs: vec![], targets: vec![] };
    for r in check_graph(&g, &batch, &params, &Options { seed: 1, ..Options::default() }).expect("gradcheck runs") {
        assert!(r.worst_relative_error < TOLERANCE, "{}: {:e}", r.name, r.worst_relative_error);
    }
}

#[test]
fn elementwise_binary_ops() {
    for op in [Op::Add, Op::Sub, Op::Mul, Op::Div] {
        run_op(op, 2, true);
    }
}

#[test]
fn unary_ops() {
    for u in [Unary::Exp, Unary::Square, Unary::Neg, Unary::Scale(-1.5), Unary::AddConst(0.3), Unary::Clamp(-1.0, 1.0)]
    {
        run_op(Op::Unary(u), 1, false);
    }
    for u in [Unary::Log, Unary::Sqrt] {
        run_op(Op::Unary(u), 1, true);
    }
}

#[test]
fn every_trainable_bundled_model() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/models");
    let mut checked_models = 0;
    for entry in std::fs::read_dir(dir).expect("models/") {
        let path = entry.expect("entry").path();
        if path.extension().is_none_or(|e| e != "nn") {
            continue;
        }
        let source = std::fs::read_to_string(&path).expect("readable");
        let checked = check_source("m.nn", &source);
        let model = &checked.models[0];
        // Huge models (VGG-16) are checked by their layers' own tests.
        if model.total_params() > 200_000 {
            continue;
        }
        match check_model(model, &Options { seed: 7, ..Options::default() }) {
            Ok(reports) => {
                checked_models += 1;
                for r in reports {
                    assert!(
                        r.worst_relative_error < TOLERANCE,
                        "{}: {}: {:e}",
                        path.display(),
                        r.name,
                        r.worst_relative_error
                    );
                }
            }
            Err(d) => assert!(d.code.starts_with("nnc::lower::"), "{}: {d:?}", path.display()),
        }
    }
    assert!(checked_models >= 6, "only {checked_models} models were gradient-checked");
}

/// A finite difference's rerun (only what the moved element reaches, up
/// to the loss, the rest read from a whole run) gives the loss of a whole
/// run with that element moved, to the bit: for every parameter of models
/// with branches, recurrence, two heads, two inputs and batch statistics.
#[test]
fn a_rerun_after_a_moved_element_has_the_bits_of_a_whole_run() {
    use nnc::interp::{self, Bindings};
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/models");
    for file in ["inception_digits.nn", "lstm_digits.nn", "digits_multitask.nn", "two_inputs_digits.nn", "batchnorm.nn"]
    {
        let checked = check_source(file, &std::fs::read_to_string(format!("{dir}/{file}")).expect("readable"));
        let model = &checked.models[0];
        let graph = nnc::pipeline::training_graph(model, 3).expect("lowers");
        let params = nnc::ir::init::init_params::<f64>(&graph.params, 1);
        let batch = nnc::gradcheck::random_batch(model, &graph, 1);
        let inputs: Vec<&[f64]> = batch.inputs.iter().map(Vec::as_slice).collect();
        let targets: Vec<&[f64]> = batch.targets.iter().map(Vec::as_slice).collect();
        let states: Vec<Vec<f64>> =
            graph.states.iter().map(|s| vec![f64::from(s.fill); s.shape.iter().product()]).collect();
        let bindings = Bindings {
            inputs: &inputs,
            targets: &targets,
            params: &params,
            states: &states,
            lr: 0.0,
            bias1: 1.0,
            bias2: 1.0,
            step: 1.0,
        };
        let loss = graph.loss.expect("a loss");
        let before = interp::run(&graph, &bindings).expect("runs");
        let mut moved_the_loss = 0;
        for (p, values) in params.iter().enumerate() {
            let (e, value) = (values.len() / 2, values[values.len() / 2] + 0.25);
            let rerun = interp::rerun(&graph, &bindings, &before, (p, e, value), loss).expect("reruns");
            let mut moved = params.clone();
            moved[p][e] = value;
            let whole = &interp::run(&graph, &Bindings { params: &moved, ..bindings }).expect("runs")[loss.0];
            assert_eq!(rerun[0].to_bits(), whole[0].to_bits(), "{file}: {}", graph.params[p].name);
            moved_the_loss += usize::from(rerun[0] != before[loss.0][0]);
        }
        assert!(
            moved_the_loss * 2 > params.len(),
            "{file}: {moved_the_loss} of {} moves changed the loss",
            params.len()
        );
    }
}
