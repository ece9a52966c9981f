//! The reference interpreter: runs an IR graph with plain loops, in f32 or
//! f64. It defines what every op means and is the oracle other backends and
//! the gradient checks are tested against. Clarity over speed.

use std::borrow::Cow;

use nnc_runtime::kernels::{self, BCE_EPS};
use num_traits::Float;

use crate::ir::{self, Graph, Hyper, Op, Unary, numel};
use crate::shape::{GELU_CUBIC, GELU_TANH_SCALE, spatial};

/// The data a graph reads: one flat row-major buffer per leaf.
pub struct Bindings<'a, T> {
    pub inputs: &'a [&'a [T]],
    /// Class ids are stored as whole numbers.
    pub targets: &'a [&'a [T]],
    pub params: &'a [Vec<T>],
    pub states: &'a [Vec<T>],
    pub lr: T,
    pub bias1: T,
    pub bias2: T,
    /// The step number (keys dropout masks).
    pub step: T,
}

/// Runs every node of `graph` and returns all values, indexed by node.
/// Buffer sizes are checked against the graph; a mismatch is an error.
pub fn run<T: Float>(graph: &Graph, b: &Bindings<T>) -> Result<Vec<Vec<T>>, String> {
    Ok(run_borrowing(graph, b)?.into_iter().map(Cow::into_owned).collect())
}

/// `run`, with each parameter's value the binding itself rather than a
/// copy (a check of a large model holds its weights once).
pub fn run_borrowing<'v, T: Float>(graph: &Graph, b: &Bindings<'v, T>) -> Result<Vec<Cow<'v, [T]>>, String> {
    run_nodes(graph, b, |_| Recompute::Yes, None)
}

/// One element of a parameter set to another value: parameter, element, value.
pub type Moved<T> = (usize, usize, T);

/// `graph`'s value `want` with one parameter element moved (`moved`), given
/// the values `before` of a `run` with the same bindings: only the nodes
/// that read the moved parameter and that `want` reads are run again,
/// the rest read from `before` (a finite difference of a late layer's
/// weight runs that layer and what follows it).
pub fn rerun<T: Float>(
    graph: &Graph,
    b: &Bindings<T>,
    before: &[impl std::ops::Deref<Target = [T]>],
    moved: Moved<T>,
    want: ir::ValueId,
) -> Result<Vec<T>, String> {
    let mut moves = vec![false; graph.nodes.len()];
    for (i, node) in graph.nodes.iter().enumerate() {
        moves[i] = node.op == Op::Param(moved.0) || node.inputs.iter().any(|v| moves[v.0]);
    }
    let mut wanted = vec![false; graph.nodes.len()];
    wanted[want.0] = true;
    for (i, node) in graph.nodes.iter().enumerate().rev() {
        if wanted[i] {
            node.inputs.iter().for_each(|v| wanted[v.0] = true);
        }
    }
    let recompute = |i: usize| match (moves[i], wanted[i]) {
        (true, true) => Recompute::Yes,
        (true, false) => Recompute::Skip,
        (false, _) => Recompute::No(&before[i]),
    };
    let mut values = run_nodes(graph, b, recompute, Some(moved))?;
    Ok(values.swap_remove(want.0).into_owned())
}

/// Whether `run_nodes` computes a node: yes, no (its value is given), or
/// not at all (nothing that is wanted reads it).
enum Recompute<'v, T> {
    Yes,
    No(&'v [T]),
    Skip,
}

/// Runs `graph`'s nodes as `recompute` says, with the parameter element
/// `moved` (if any) set to its value.
fn run_nodes<'v, T: Float>(
    graph: &Graph,
    b: &Bindings<'v, T>,
    recompute: impl Fn(usize) -> Recompute<'v, T>,
    moved: Option<Moved<T>>,
) -> Result<Vec<Cow<'v, [T]>>, String> {
    let mut values: Vec<Cow<[T]>> = Vec::with_capacity(graph.nodes.len());
    for (i, node) in graph.nodes.iter().enumerate() {
        match recompute(i) {
            Recompute::Yes => {}
            Recompute::No(value) => {
                values.push(Cow::Borrowed(value));
                continue;
            }
            Recompute::Skip => {
                values.push(Cow::Owned(Vec::new()));
                continue;
            }
        }
        let n = numel(&node.shape);
        let input = |k: usize| -> &[T] { &values[node.inputs[k].0] };
        let in_shape = |k: usize| &graph.nodes[node.inputs[k].0].shape;
        let bound = |what: &str, buffers: &[&'v [T]], index: usize| -> Result<&'v [T], String> {
            let data = buffers.get(index).ok_or(format!("{what} {index} is not bound"))?;
            if data.len() != n {
                return Err(format!("{what} {index} has {} values, expected {n}", data.len()));
            }
            Ok(data)
        };
        let slices = |buffers: &'v [Vec<T>]| buffers.iter().map(Vec::as_slice).collect::<Vec<_>>();
        let out: Vec<T> = match &node.op {
            Op::Input(k) => bound("input", b.inputs, *k)?.to_vec(),
            Op::Target(k) => bound("target", b.targets, *k)?.to_vec(),
            Op::Param(k) => {
                let value = bound("parameter", &slices(b.params), *k)?;
                match moved.filter(|m| m.0 == *k) {
                    Some((param, element, moved)) => {
                        let mut value = value.to_vec();
                        *value.get_mut(element).ok_or(format!("parameter {param} has no element {element}"))? = moved;
                        value
                    }
                    None => {
                        values.push(Cow::Borrowed(value));
                        continue;
                    }
                }
            }
            Op::State(k) => bound("state", &slices(b.states), *k)?.to_vec(),
            Op::Hyper(h) => vec![match h {
                Hyper::Lr => b.lr,
                Hyper::Bias1 => b.bias1,
                Hyper::Bias2 => b.bias2,
                Hyper::Step => b.step,
            }],
            Op::Const(c) => vec![cast(*c); n],
            Op::Unary(u) => input(0).iter().map(|&x| unary(*u, x)).collect(),
            Op::UnaryGrad(u) => {
                let (x, y, g) = (input(0), input(1), input(2));
                (0..n).map(|j| g[j] * derivative(*u, x[j], y[j])).collect()
            }
            Op::Add => zip(input(0), input(1), |a, b| a + b),
            Op::Sub => zip(input(0), input(1), |a, b| a - b),
            Op::Mul => zip(input(0), input(1), |a, b| a * b),
            Op::Div => zip(input(0), input(1), |a, b| a / b),
            Op::MulScalar => {
                let s = input(1)[0];
                input(0).iter().map(|&x| x * s).collect()
            }
            Op::MatMul { ta, tb, relu } => {
                let product = matmul(input(0), in_shape(0), *ta, input(1), in_shape(1), *tb, &node.shape);
                let biased = match node.inputs.len() {
                    3 => product.iter().enumerate().map(|(e, &v)| v + input(2)[e % node.shape[1]]).collect(),
                    _ => product,
                };
                if *relu { biased.iter().map(|&v| unary(Unary::Relu, v)).collect() } else { biased }
            }
            Op::AddBias => {
                let (x, bias) = (input(0), input(1));
                let cols = bias.len();
                x.iter().enumerate().map(|(j, &v)| v + bias[j % cols]).collect()
            }
            Op::SumRows => {
                let cols = n;
                let mut out = vec![T::zero(); cols];
                for (j, &v) in input(0).iter().enumerate() {
                    out[j % cols] = out[j % cols] + v;
                }
                out
            }
            Op::Reshape => input(0).to_vec(),
            Op::Softmax => {
                let cols = *node.shape.last().unwrap_or(&1);
                input(0).chunks(cols).flat_map(softmax).collect()
            }
            Op::SoftmaxGrad => {
                let cols = *node.shape.last().unwrap_or(&1);
                let mut out = Vec::with_capacity(n);
                for (y, g) in input(0).chunks(cols).zip(input(1).chunks(cols)) {
                    let dot = y.iter().zip(g).fold(T::zero(), |acc, (&a, &b)| acc + a * b);
                    out.extend(y.iter().zip(g).map(|(&a, &b)| a * (b - dot)));
                }
                out
            }
            Op::SoftmaxCrossEntropy => {
                let cols = in_shape(0)[1];
                let rows = in_shape(0)[0];
                let mut total = T::zero();
                for (r, z) in input(0).chunks(cols).enumerate() {
                    let c = class(input(1)[r], cols)?;
                    let max = z.iter().fold(T::neg_infinity(), |m, &v| m.max(v));
                    let sum = z.iter().fold(T::zero(), |s, &v| s + (v - max).exp());
                    let weight = if node.inputs.len() == 3 { input(2)[r] } else { T::one() };
                    total = total + weight * (sum.ln() + max - z[c]);
                }
                vec![total / cast(rows as f64)]
            }
            Op::SoftmaxCrossEntropyGrad => {
                let (rows, cols) = (node.shape[0], node.shape[1]);
                let g = input(2)[0] / cast(rows as f64);
                let mut out = Vec::with_capacity(n);
                for (r, z) in input(0).chunks(cols).enumerate() {
                    let c = class(input(1)[r], cols)?;
                    let g = if node.inputs.len() == 4 { g * input(3)[r] } else { g };
                    out.extend(softmax(z).into_iter().enumerate().map(|(j, p)| {
                        let onehot = if j == c { T::one() } else { T::zero() };
                        g * (p - onehot)
                    }));
                }
                out
            }
            Op::ClassWeights(weights) => {
                let cols = weights.len();
                let mut out = Vec::with_capacity(n);
                for &label in input(0) {
                    out.push(class(label, cols).map_or(T::zero(), |c| cast(weights[c])));
                }
                out
            }
            Op::Mse => {
                let count = cast::<T>(numel(in_shape(0)) as f64);
                let sum = input(0).iter().zip(input(1)).fold(T::zero(), |s, (&p, &t)| s + (p - t) * (p - t));
                vec![sum / count]
            }
            Op::MseGrad => {
                let scale = input(2)[0] * cast(2.0) / cast(n as f64);
                zip(input(0), input(1), |p, t| scale * (p - t))
            }
            Op::Bce => {
                let count = cast::<T>(numel(in_shape(0)) as f64);
                let sum = input(0).iter().zip(input(1)).fold(T::zero(), |s, (&p, &t)| {
                    let p = clamp_probability(p);
                    s - (t * p.ln() + (T::one() - t) * (T::one() - p).ln())
                });
                vec![sum / count]
            }
            Op::BceGrad => {
                let scale = input(2)[0] / cast(n as f64);
                zip(input(0), input(1), |p, t| {
                    let p = clamp_probability(p);
                    scale * (p - t) / (p * (T::one() - p))
                })
            }
            Op::SumSquares => vec![kernels::sum_squares(input(0))],
            Op::Conv2d { rows, cols, groups, relu } => {
                let mut out = vec![T::zero(); n];
                let win = ir::window(in_shape(0), *rows, *cols);
                kernels::conv2d(input(0), input(1), &mut out, win, in_shape(1)[0], *groups);
                if node.inputs.len() == 3 {
                    let unbiased = out.clone();
                    kernels::add_channel_bias(&unbiased, input(2), &mut out, spatial(&node.shape));
                }
                if *relu {
                    out.iter_mut().for_each(|v| *v = unary(Unary::Relu, *v));
                }
                out
            }
            Op::Conv2dGradInput { rows, cols, groups, relu } => {
                let mut out = vec![T::zero(); n];
                let win = ir::window(&node.shape, *rows, *cols);
                let filters = (in_shape(0)[0], *groups);
                kernels::conv2d_backward(&[], input(0), input(1), &mut out, &mut [], win, filters);
                if *relu {
                    kernels::relu_gradient(&mut out, input(2));
                }
                out
            }
            Op::Conv2dGradWeight { rows, cols, groups } => {
                let mut out = vec![T::zero(); n];
                let win = ir::window(in_shape(0), *rows, *cols);
                let filters = (node.shape[0], *groups);
                kernels::conv2d_backward(input(0), &[], input(1), &mut [], &mut out, win, filters);
                out
            }
            Op::AddChannelBias => {
                let mut out = vec![T::zero(); n];
                kernels::add_channel_bias(input(0), input(1), &mut out, spatial(&node.shape));
                out
            }
            Op::MulChannel => {
                let mut out = vec![T::zero(); n];
                kernels::mul_channel(input(0), input(1), &mut out, spatial(&node.shape));
                out
            }
            Op::SumChannels => {
                let mut out = vec![T::zero(); n];
                kernels::sum_channels(input(0), &mut out, spatial(in_shape(0)));
                out
            }
            Op::SumProductChannels => {
                let products: Vec<T> = input(0).iter().zip(input(1)).map(|(&a, &b)| a * b).collect();
                let mut out = vec![T::zero(); n];
                kernels::sum_channels(&products, &mut out, spatial(in_shape(0)));
                out
            }
            Op::Pool { max, rows, cols } => {
                let mut out = vec![T::zero(); n];
                kernels::pool(input(0), &mut out, ir::window(in_shape(0), *rows, *cols), *max);
                out
            }
            Op::PoolGrad { max, rows, cols, relu } => {
                let mut out = vec![T::zero(); n];
                let win = ir::window(in_shape(0), *rows, *cols);
                kernels::pool_backward(input(0), input(1), &mut out, win, (*max, *relu));
                out
            }
            Op::Upsample(f) => {
                let mut out = vec![T::zero(); n];
                let s = in_shape(0);
                kernels::upsample(input(0), &mut out, (s[2], s[3]), *f);
                out
            }
            Op::Dropout { p, salt, first } => {
                let mut out = vec![T::zero(); n];
                let step = input(1)[0].to_u64().unwrap_or(0);
                kernels::dropout(input(0), &mut out, *p, (*salt, *first), step);
                out
            }
            Op::AllReduce => {
                // The processes exchange f32, as the compiled step does.
                let x: Vec<f32> = input(0).iter().map(|v| v.to_f32().unwrap_or(f32::NAN)).collect();
                let mut sum = vec![0.0; n];
                nnc_runtime::all_reduce(&x, &mut sum);
                sum.into_iter().map(|v| T::from(v).unwrap_or_else(T::nan)).collect()
            }
            Op::MaxPieces(p) => {
                let mut out = vec![T::zero(); n];
                kernels::max_pieces(input(0), &mut out, *p);
                out
            }
            Op::Slice { axis, start } | Op::SliceGrad { axis, start } => {
                let mut out = vec![T::zero(); n];
                let (whole, part) = if matches!(node.op, Op::Slice { .. }) {
                    (in_shape(0)[*axis], node.shape[*axis])
                } else {
                    (node.shape[*axis], in_shape(0)[*axis])
                };
                let inner = ir::around(&node.shape, *axis).1;
                if matches!(node.op, Op::Slice { .. }) {
                    kernels::slice(input(0), &mut out, whole, part, inner, *start);
                } else {
                    kernels::slice_backward(input(0), &mut out, whole, part, inner, *start);
                }
                out
            }
            Op::Concat { axis } => {
                let mut out = vec![T::zero(); n];
                let (whole, inner) = (node.shape[*axis], ir::around(&node.shape, *axis).1);
                let mut start = 0;
                for k in 0..node.inputs.len() {
                    let part = in_shape(k)[*axis];
                    kernels::place(input(k), &mut out, whole, part, inner, start);
                    start += part;
                }
                out
            }
            Op::Bernoulli { salt } => {
                let mut out = vec![T::zero(); n];
                let step = input(1)[0].to_u64().unwrap_or(0);
                kernels::bernoulli(input(0), &mut out, *salt, step);
                out
            }
            Op::Gather => {
                let mut out = vec![T::zero(); n];
                kernels::gather(input(0), input(1), &mut out, in_shape(1)[1]);
                out
            }
            Op::GatherGrad => {
                let mut out = vec![T::zero(); n];
                kernels::gather_backward(input(0), input(1), &mut out, node.shape[1]);
                out
            }
            Op::MaxPiecesGrad(p) => {
                let mut out = vec![T::zero(); n];
                kernels::max_pieces_backward(input(0), input(1), &mut out, *p);
                out
            }
            Op::ClipScale(c) => {
                let norm = input(0)[0].sqrt();
                let c: T = cast(*c);
                vec![if norm > c { c / norm } else { T::one() }]
            }
        };
        if out.len() != n {
            return Err(format!(
                "internal error: %{i} ({}) produced {} values, expected {n}",
                node.op.name(),
                out.len()
            ));
        }
        values.push(Cow::Owned(out));
    }
    Ok(values)
}

fn cast<T: Float>(x: f64) -> T {
    T::from(x).unwrap_or_else(T::nan)
}

fn class<T: Float>(label: T, classes: usize) -> Result<usize, String> {
    let c = label.to_f64().unwrap_or(-1.0);
    if c >= 0.0 && c < classes as f64 && c.fract() == 0.0 {
        Ok(c as usize)
    } else {
        Err(format!("class label {c} is outside 0..{classes}"))
    }
}

fn clamp_probability<T: Float>(p: T) -> T {
    let eps: T = cast(BCE_EPS);
    p.max(eps).min(T::one() - eps)
}

fn zip<T: Float>(a: &[T], b: &[T], f: impl Fn(T, T) -> T) -> Vec<T> {
    a.iter().zip(b).map(|(&x, &y)| f(x, y)).collect()
}

fn softmax<T: Float>(z: &[T]) -> Vec<T> {
    let max = z.iter().fold(T::neg_infinity(), |m, &v| m.max(v));
    let exps: Vec<T> = z.iter().map(|&v| (v - max).exp()).collect();
    let sum = exps.iter().fold(T::zero(), |s, &e| s + e);
    exps.into_iter().map(|e| e / sum).collect()
}

/// op(A)·op(B) for row-major A and B, with plain loops.
fn matmul<T: Float>(a: &[T], sa: &[usize], ta: bool, b: &[T], sb: &[usize], tb: bool, out: &[usize]) -> Vec<T> {
    let (m, n) = (out[0], out[1]);
    let k = if ta { sa[0] } else { sa[1] };
    let at = |i: usize, p: usize| if ta { a[p * sa[1] + i] } else { a[i * sa[1] + p] };
    let bt = |p: usize, j: usize| if tb { b[j * sb[1] + p] } else { b[p * sb[1] + j] };
    let mut c = vec![T::zero(); m * n];
    for i in 0..m {
        for p in 0..k {
            let aip = at(i, p);
            for j in 0..n {
                c[i * n + j] = c[i * n + j] + aip * bt(p, j);
            }
        }
    }
    c
}

pub fn unary<T: Float>(u: Unary, x: T) -> T {
    match u {
        Unary::Identity => x,
        Unary::Relu => x.max(T::zero()),
        Unary::LeakyRelu(a) => {
            if x > T::zero() {
                x
            } else {
                x * cast(a)
            }
        }
        Unary::Elu(a) => {
            if x > T::zero() {
                x
            } else {
                cast::<T>(a) * x.exp_m1()
            }
        }
        Unary::Gelu => x * cast(normal_cdf(to_f64(x))),
        Unary::GeluTanh => x * sigmoid(gelu_tanh_arg(x)),
        Unary::Silu => x * sigmoid(x),
        Unary::Softplus => x.max(T::zero()) + (-x.abs()).exp().ln_1p(),
        Unary::Sigmoid => sigmoid(x),
        Unary::Tanh => x.tanh(),
        Unary::Exp => x.exp(),
        Unary::Log => x.ln(),
        Unary::Sqrt => x.sqrt(),
        Unary::Square => x * x,
        Unary::Neg => -x,
        Unary::Scale(c) => x * cast(c),
        Unary::AddConst(c) => x + cast(c),
        // NaN stays NaN, as in the compiled code (and PyTorch's clamp).
        Unary::Clamp(lo, hi) => {
            if x.is_nan() {
                x
            } else {
                x.max(cast(lo)).min(cast(hi))
            }
        }
        Unary::Beyond(c) => {
            if x.abs() > cast(c) {
                T::one()
            } else {
                T::zero()
            }
        }
    }
}

/// 1/(1 + e⁻ˣ)
fn sigmoid<T: Float>(x: T) -> T {
    T::one() / (T::one() + (-x).exp())
}

fn to_f64<T: Float>(x: T) -> f64 {
    x.to_f64().unwrap_or(f64::NAN)
}

/// Φ(x) = erfc(−x/√2)/2: accurate to the last bits in both tails.
fn normal_cdf(x: f64) -> f64 {
    0.5 * libm::erfc(-x * std::f64::consts::FRAC_1_SQRT_2)
}

/// φ(x) = e^(−x²/2)/√(2π)
fn normal_pdf(x: f64) -> f64 {
    (-0.5 * x * x).exp() * (0.5 * std::f64::consts::FRAC_2_SQRT_PI * std::f64::consts::FRAC_1_SQRT_2)
}

/// 2u for gelu's tanh form, u = √(2/π)·(x + 0.044715x³): 1 + tanh(u) = 2σ(2u).
fn gelu_tanh_arg<T: Float>(x: T) -> T {
    let c: T = cast(GELU_TANH_SCALE);
    c * (x + cast::<T>(GELU_CUBIC) * x * x * x)
}

/// f′(x), given x and y = f(x).
fn derivative<T: Float>(u: Unary, x: T, y: T) -> T {
    let (zero, one) = (T::zero(), T::one());
    match u {
        // (xΦ(x))′ = Φ(x) + xφ(x)
        Unary::Gelu => cast::<T>(normal_cdf(to_f64(x))) + x * cast(normal_pdf(to_f64(x))),
        // (xσ(v))′ = σ(v) + x·σ(v)(1 − σ(v))·v′,  v = 2√(2/π)(x + 0.044715x³)
        Unary::GeluTanh => {
            let s = sigmoid(gelu_tanh_arg(x));
            let c: T = cast(GELU_TANH_SCALE);
            let dv = c * (one + cast::<T>(3.0 * GELU_CUBIC) * x * x);
            s + x * s * (one - s) * dv
        }
        // (xσ(x))′ = σ(x)(1 + x(1 − σ(x)))
        Unary::Silu => {
            let s = sigmoid(x);
            s * (one + x * (one - s))
        }
        // log(1 + eˣ)′ = σ(x)
        Unary::Softplus => sigmoid(x),
        Unary::Identity => one,
        Unary::Relu => {
            if x > zero {
                one
            } else {
                zero
            }
        }
        Unary::LeakyRelu(a) => {
            if x > zero {
                one
            } else {
                cast(a)
            }
        }
        Unary::Elu(a) => {
            if x > zero {
                one
            } else {
                y + cast(a)
            }
        }
        Unary::Sigmoid => y * (one - y),
        Unary::Tanh => one - y * y,
        Unary::Exp => y,
        Unary::Log => one / x,
        Unary::Sqrt => cast::<T>(0.5) / y,
        Unary::Square => cast::<T>(2.0) * x,
        Unary::Neg => -one,
        Unary::Scale(c) => cast(c),
        Unary::AddConst(_) => one,
        Unary::Clamp(lo, hi) => {
            if x > cast(lo) && x < cast(hi) {
                one
            } else {
                zero
            }
        }
        Unary::Beyond(_) => zero,
    }
}
