//! A checked model with its trained tensors → an ONNX inference graph.
//!
//! The graph computes what `nnc predict` prints from the same raw rows: the
//! checkpoint's input scaling first, the layers in evaluation mode (dropout
//! gone, batchnorm on its running statistics), and for a classifier the
//! softmax of its scores; a model of several outputs (loss terms) has one
//! graph output each. Only the layers the predictions depend on are
//! written. Weights keep their checkpoint names as initializers; a shared
//! or tied weight is one initializer.

use std::collections::{HashMap, HashSet};

use prost::Message;

use super::proto::{
    AttributeProto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto, TensorProto, TensorShapeProto, TypeProto,
    ValueInfoProto, attribute_proto::AttributeType, tensor_proto::DataType, tensor_shape_proto, type_proto,
};
use crate::check::{
    Activation, CheckedModel, InputKind, InputSpec, Layer, LossKind, LossSpec, Taps, ValueRef, Weights,
};
use crate::data::Scaler;
use crate::train::metrics::{self, Task};

mod recurrent;

/// The opsets written: from 13 `Squeeze` takes its axes as an input, as
/// written here; 21 is the newest the checker and onnxruntime here know.
pub const OPSETS: std::ops::RangeInclusive<i64> = 13..=21;
pub const DEFAULT_OPSET: i64 = 17;

/// Tensors by checkpoint name: (shape, values).
pub type Tensors = HashMap<String, (Vec<usize>, Vec<f32>)>;

pub struct Options {
    pub opset: i64,
    /// A fixed batch; `None`: the batch dimension is named and dynamic.
    pub batch: Option<usize>,
}

/// The model as ONNX protobuf bytes.
pub fn export(model: &CheckedModel, tensors: &Tensors, scaler: &Scaler, options: &Options) -> Result<Vec<u8>, String> {
    if !OPSETS.contains(&options.opset) {
        return Err(format!(
            "opset {} is not written; choose one from {} to {}",
            options.opset,
            OPSETS.start(),
            OPSETS.end()
        ));
    }
    if model.inputs.is_empty() {
        return Err("the model has no input".into());
    }
    let mut g = Builder {
        opset: options.opset,
        tensors,
        nodes: Vec::new(),
        initializers: Vec::new(),
        written: HashSet::new(),
        counter: 0,
    };
    let mut values: HashMap<ValueRef, String> = HashMap::new();
    // Several inputs are one data row to nnc; the graph takes each as its
    // own tensor, with its columns' share of the preprocessing.
    let mut start = 0;
    for (i, input) in model.inputs.iter().enumerate() {
        let width: usize = input.shape.iter().product();
        let columns = scaler.columns(start..start + width).ok_or("the checkpoint's scaler does not fit the inputs")?;
        values.insert(ValueRef::Input(i), g.preprocess(&input.name, &input.shape, &columns)?);
        start += width;
    }

    // Each loss term's prediction is an output; a stack ending in an RBM
    // outputs its last layer.
    let predictions: Vec<(ValueRef, Option<&LossSpec>)> = if model.losses.is_empty() {
        let last = model.nodes.len().checked_sub(1).ok_or("the model has no layers")?;
        vec![(ValueRef::Node(last), None)]
    } else {
        model.losses.iter().map(|loss| (loss.prediction, Some(loss))).collect()
    };
    let all: HashSet<usize> = predictions.iter().flat_map(|&(prediction, _)| needed(model, prediction)).collect();
    let mut order: Vec<usize> = all.into_iter().collect();
    order.sort_unstable();
    for index in order {
        let node = &model.nodes[index];
        let x = values
            .get(&node.inputs[0])
            .cloned()
            .ok_or_else(|| format!("`{}` reads a value nnc cannot export", node.name))?;
        let y = g.layer(model, index, x, &values)?;
        values.insert(ValueRef::Node(index), y);
    }
    let several = predictions.len() > 1;
    // Named as `predict` and built libraries name them.
    let names = if model.losses.is_empty() {
        vec![model.values.iter().find(|v| v.value == predictions[0].0).map_or("prediction".into(), |v| v.name.clone())]
    } else {
        metrics::outputs(model).into_iter().map(|o| o.name).collect()
    };
    let mut outputs: Vec<(String, Vec<usize>, &str)> = Vec::with_capacity(predictions.len());
    // The names above are distinct, but a classifier's `…_probabilities` or an
    // output renamed away from an input's name may meet another output's.
    let unused = |name: String, outputs: &[(String, Vec<usize>, &str)]| {
        let taken = |n: &str| outputs.iter().any(|(o, _, _)| o == n);
        let free = (2..).map(|k| format!("{name}_{k}")).find(|n| !taken(n));
        if taken(&name) { free.unwrap_or(name) } else { name }
    };
    for ((prediction, loss), value_name) in predictions.into_iter().zip(names) {
        let output_shape = model.shape_of(prediction);
        let mut result = values.get(&prediction).cloned().ok_or("the prediction reads the input directly")?;
        // As the IR standardizes: the targets of squared errors alone.
        let standardized = loss.filter(|l| model.train.standardize_target && l.kind == LossKind::Mse);
        if let Some(ValueRef::Target(t)) = standardized.map(|l| l.target) {
            result = g.unstandardize(result, &model.targets[t].name, &output_shape)?;
        }
        let task = loss.map_or(Task::Reconstruction, |loss| Task::of_loss(model, loss));
        let (output, doc) = match task {
            Task::Classes(_) => {
                // One classifier's output is `probabilities`; several are each
                // named after their scores.
                let probabilities =
                    if several { format!("{value_name}_probabilities") } else { "probabilities".to_string() };
                let probabilities = unused(probabilities, &outputs);
                g.node_to("Softmax", vec![result], &probabilities, vec![int("axis", -1)]);
                (probabilities, "the class probabilities (softmax of the scores)")
            }
            _ => {
                let clashes = model.inputs.iter().any(|i| i.name == value_name);
                let name = unused(if clashes { format!("{value_name}_out") } else { value_name }, &outputs);
                g.node_to("Identity", vec![result], &name, vec![]);
                (name, "the predicted values")
            }
        };
        outputs.push((output, output_shape, doc));
    }
    let batch = match options.batch {
        Some(b) => dim_value(b as i64),
        None => dim_param("batch"),
    };
    let tensor_type = |dims: Vec<tensor_shape_proto::Dimension>| TypeProto {
        denotation: None,
        value: Some(type_proto::Value::TensorType(type_proto::Tensor {
            elem_type: Some(DataType::Float as i32),
            shape: Some(TensorShapeProto { dim: dims }),
        })),
    };
    let shape_of = |shape: &[usize]| {
        std::iter::once(batch.clone()).chain(shape.iter().map(|&d| dim_value(d as i64))).collect::<Vec<_>>()
    };
    let kind = |input: &InputSpec| match input.kind {
        InputKind::Tokens => "token ids (whole numbers, as floats)",
        InputKind::Seq => "sequences, raw as in the training data",
        InputKind::Real => "raw features, as in the training data",
    };
    let inputs = model.inputs.iter().map(|input| ValueInfoProto {
        name: Some(input.name.clone()),
        r#type: Some(tensor_type(shape_of(&input.shape))),
        doc_string: Some(kind(input).to_string()),
        ..Default::default()
    });
    let graph = GraphProto {
        name: Some(model.name.clone()),
        node: g.nodes,
        initializer: g.initializers,
        input: inputs.collect(),
        output: outputs
            .into_iter()
            .map(|(name, shape, doc)| ValueInfoProto {
                name: Some(name),
                r#type: Some(tensor_type(shape_of(&shape))),
                doc_string: Some(doc.to_string()),
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    };
    let proto = ModelProto {
        ir_version: Some(if options.opset >= 21 { 10 } else { 8 }),
        opset_import: vec![OperatorSetIdProto { domain: Some(String::new()), version: Some(options.opset) }],
        producer_name: Some("nnc".into()),
        producer_version: Some(env!("CARGO_PKG_VERSION").into()),
        doc_string: Some(format!("model `{}`, exported by nnc", model.name)),
        graph: Some(graph),
        ..Default::default()
    };
    Ok(proto.encode_to_vec())
}

/// The layers the prediction depends on, in order.
fn needed(model: &CheckedModel, prediction: ValueRef) -> Vec<usize> {
    let mut keep = HashSet::new();
    let mut stack = vec![prediction];
    while let Some(value) = stack.pop() {
        if let ValueRef::Node(n) = value
            && keep.insert(n)
        {
            stack.extend(model.nodes[n].inputs.iter().copied());
        }
    }
    let mut order: Vec<usize> = keep.into_iter().collect();
    order.sort_unstable();
    order
}

fn dim_value(v: i64) -> tensor_shape_proto::Dimension {
    tensor_shape_proto::Dimension { denotation: None, value: Some(tensor_shape_proto::dimension::Value::DimValue(v)) }
}

fn dim_param(name: &str) -> tensor_shape_proto::Dimension {
    tensor_shape_proto::Dimension {
        denotation: None,
        value: Some(tensor_shape_proto::dimension::Value::DimParam(name.to_string())),
    }
}

fn int(name: &str, v: i64) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        r#type: Some(AttributeType::Int as i32),
        i: Some(v),
        ..Default::default()
    }
}

fn ints(name: &str, v: &[i64]) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        r#type: Some(AttributeType::Ints as i32),
        ints: v.to_vec(),
        ..Default::default()
    }
}

fn text(name: &str, v: &str) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        r#type: Some(AttributeType::String as i32),
        s: Some(v.as_bytes().to_vec()),
        ..Default::default()
    }
}

fn float(name: &str, v: f32) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        r#type: Some(AttributeType::Float as i32),
        f: Some(v),
        ..Default::default()
    }
}

/// The graph being written.
struct Builder<'a> {
    opset: i64,
    tensors: &'a Tensors,
    nodes: Vec<NodeProto>,
    initializers: Vec<TensorProto>,
    written: HashSet<String>,
    counter: usize,
}

impl Builder<'_> {
    fn fresh(&mut self, base: &str) -> String {
        self.counter += 1;
        format!("{base}_{}", self.counter)
    }

    fn node_to(&mut self, op: &str, inputs: Vec<String>, output: &str, attributes: Vec<AttributeProto>) {
        let name = self.fresh(op);
        self.nodes.push(NodeProto {
            name: Some(name),
            op_type: Some(op.into()),
            input: inputs,
            output: vec![output.to_string()],
            attribute: attributes,
            domain: Some(String::new()),
            ..Default::default()
        });
    }

    /// A node with one fresh output named after `base`.
    fn node(&mut self, op: &str, inputs: Vec<String>, base: &str, attributes: Vec<AttributeProto>) -> String {
        let output = self.fresh(base);
        self.node_to(op, inputs, &output, attributes);
        output
    }

    fn initializer(&mut self, name: &str, dims: &[usize], values: &[f32]) -> String {
        if self.written.insert(name.to_string()) {
            self.initializers.push(TensorProto {
                name: Some(name.to_string()),
                dims: dims.iter().map(|&d| d as i64).collect(),
                data_type: Some(DataType::Float as i32),
                raw_data: Some(values.iter().flat_map(|v| v.to_le_bytes()).collect()),
                ..Default::default()
            });
        }
        name.to_string()
    }

    fn int64s(&mut self, base: &str, values: &[i64]) -> String {
        let name = self.fresh(base);
        self.written.insert(name.clone());
        self.initializers.push(TensorProto {
            name: Some(name.clone()),
            dims: vec![values.len() as i64],
            data_type: Some(DataType::Int64 as i32),
            raw_data: Some(values.iter().flat_map(|v| v.to_le_bytes()).collect()),
            ..Default::default()
        });
        name
    }

    fn constant(&mut self, base: &str, value: f32) -> String {
        let name = self.fresh(base);
        self.initializer(&name, &[], &[value])
    }

    /// A trained tensor by its checkpoint name, as an initializer.
    fn weight(&mut self, name: &str) -> Result<String, String> {
        let (shape, values) = self.tensors.get(name).ok_or_else(|| format!("the weights have no tensor `{name}`"))?;
        let (shape, values) = (shape.clone(), values.clone());
        Ok(self.initializer(name, &shape, &values))
    }

    /// A prediction in standard units back in the target's: `ŷ·σ + μ` with
    /// the `<target>.std` and `<target>.mean` buffers (`standardize_target`).
    fn unstandardize(&mut self, prediction: String, target: &str, shape: &[usize]) -> Result<String, String> {
        let mut buffer = |what: &str| -> Result<String, String> {
            let name = format!("{target}.{what}");
            let (_, values) = self.tensors.get(&name).ok_or_else(|| format!("the weights have no tensor `{name}`"))?;
            let values = values.clone();
            Ok(self.initializer(&name, shape, &values))
        };
        let (std, mean) = (buffer("std")?, buffer("mean")?);
        let stretched = self.node("Mul", vec![prediction, std], "stretched", vec![]);
        Ok(self.node("Add", vec![stretched, mean], "unstandardized", vec![]))
    }

    /// The raw input, scaled as the checkpoint's scaler says.
    fn preprocess(&mut self, input: &str, shape: &[usize], scaler: &Scaler) -> Result<String, String> {
        Ok(match scaler {
            Scaler::None => input.to_string(),
            Scaler::Scale(s) => {
                let s = self.constant("scale", *s);
                self.node("Div", vec![input.to_string(), s], "scaled", vec![])
            }
            Scaler::Standardize { mean, std } => {
                let m = self.fresh("mean");
                let m = self.initializer(&m, shape, mean);
                let s = self.fresh("std");
                let s = self.initializer(&s, shape, std);
                let centred = self.node("Sub", vec![input.to_string(), m], "centred", vec![]);
                self.node("Div", vec![centred, s], "standardized", vec![])
            }
        })
    }

    fn layer(
        &mut self,
        model: &CheckedModel,
        index: usize,
        x: String,
        values: &HashMap<ValueRef, String>,
    ) -> Result<String, String> {
        let node = &model.nodes[index];
        let name = node.name.as_str();
        let w = |suffix: &str| format!("{name}.{suffix}");
        Ok(match &node.layer {
            Layer::Dense { bias, weights, .. } => {
                let (owner, trans_b) = match weights {
                    Weights::Own => (name.to_string(), 1),
                    Weights::Shared(n) => (model.nodes[*n].name.clone(), 1),
                    Weights::Tied(n) => (model.nodes[*n].name.clone(), 0),
                };
                let mut inputs = vec![x, self.weight(&format!("{owner}.weight"))?];
                if *bias {
                    inputs.push(self.weight(&w("bias"))?);
                }
                self.node("Gemm", inputs, name, vec![int("transB", trans_b)])
            }
            Layer::Conv1d { taps, bias, groups, .. } => {
                let mut inputs = vec![x, self.weight(&w("weight"))?];
                if *bias {
                    inputs.push(self.weight(&w("bias"))?);
                }
                let Taps { kernel, stride, padding, dilation } = *taps;
                let attributes = vec![
                    ints("kernel_shape", &[kernel as i64]),
                    ints("strides", &[stride as i64]),
                    ints("pads", &[padding as i64, padding as i64]),
                    ints("dilations", &[dilation as i64]),
                    int("group", *groups as i64),
                ];
                self.node("Conv", inputs, name, attributes)
            }
            Layer::Conv2d { rows, cols, bias, groups, .. } => {
                let mut inputs = vec![x, self.weight(&w("weight"))?];
                if *bias {
                    inputs.push(self.weight(&w("bias"))?);
                }
                let both = |of: fn(&Taps) -> usize| [of(rows) as i64, of(cols) as i64];
                let [ph, pw] = both(|t| t.padding);
                let attributes = vec![
                    ints("kernel_shape", &both(|t| t.kernel)),
                    ints("strides", &both(|t| t.stride)),
                    ints("pads", &[ph, pw, ph, pw]),
                    ints("dilations", &both(|t| t.dilation)),
                    int("group", *groups as i64),
                ];
                self.node("Conv", inputs, name, attributes)
            }
            Layer::MaxPool { kernel, stride, padding } | Layer::AvgPool { kernel, stride, padding } => {
                let max = matches!(node.layer, Layer::MaxPool { .. });
                // One value per spatial axis (two for an image, one for a sequence), pads two.
                let per_axis = |v: usize, times: usize| vec![v as i64; times * (node.shape.len() - 1)];
                let (k, s, p) = (per_axis(*kernel, 1), per_axis(*stride, 1), per_axis(*padding, 2));
                let mut attributes = vec![ints("kernel_shape", &k), ints("strides", &s), ints("pads", &p)];
                // nnc's mean, as PyTorch's, counts the padding's zeros.
                attributes.extend((!max).then(|| int("count_include_pad", 1)));
                self.node(if max { "MaxPool" } else { "AveragePool" }, vec![x], name, attributes)
            }
            Layer::GlobalAvgPool => {
                let pooled = self.node("GlobalAveragePool", vec![x], name, vec![]);
                self.node("Flatten", vec![pooled], name, vec![int("axis", 1)])
            }
            Layer::Upsample { factor } => {
                // Output pixel (y, x) reads input (⌊y/f⌋, ⌊x/f⌋): nearest with these two modes.
                let f = *factor as f32;
                let scales = self.fresh("scales");
                let scales = self.initializer(&scales, &[4], &[1.0, 1.0, f, f]);
                let attributes = vec![
                    text("mode", "nearest"),
                    text("coordinate_transformation_mode", "asymmetric"),
                    text("nearest_mode", "floor"),
                ];
                self.node("Resize", vec![x, String::new(), scales], name, attributes)
            }
            Layer::Flatten => self.node("Flatten", vec![x], name, vec![int("axis", 1)]),
            Layer::Reshape { shape } => {
                let target: Vec<i64> = std::iter::once(-1).chain(shape.iter().map(|&d| d as i64)).collect();
                let target = self.int64s("shape", &target);
                self.node("Reshape", vec![x, target], name, vec![])
            }
            Layer::Dropout { .. } | Layer::Activation(Activation::Identity) => x,
            Layer::BatchNorm { eps, .. } => {
                let inputs = vec![
                    x,
                    self.weight(&w("weight"))?,
                    self.weight(&w("bias"))?,
                    self.weight(&w("running_mean"))?,
                    self.weight(&w("running_var"))?,
                ];
                self.node("BatchNormalization", inputs, name, vec![float("epsilon", *eps as f32)])
            }
            Layer::LayerNorm { eps } => {
                if self.opset < 17 {
                    return Err(format!(
                        "`{name}` (layernorm) needs opset 17 or newer (LayerNormalization); use --opset 17"
                    ));
                }
                let inputs = vec![x, self.weight(&w("weight"))?, self.weight(&w("bias"))?];
                self.node("LayerNormalization", inputs, name, vec![int("axis", 1), float("epsilon", *eps as f32)])
            }
            Layer::Maxout { units, pieces } => {
                let inputs = vec![x, self.weight(&w("weight"))?, self.weight(&w("bias"))?];
                let affine = self.node("Gemm", inputs, name, vec![int("transB", 1)]);
                let shape = self.int64s("pieces", &[-1, *units as i64, *pieces as i64]);
                let grouped = self.node("Reshape", vec![affine, shape], name, vec![]);
                if self.opset >= 18 {
                    let axes = self.int64s("axes", &[2]);
                    self.node("ReduceMax", vec![grouped, axes], name, vec![int("keepdims", 0)])
                } else {
                    self.node("ReduceMax", vec![grouped], name, vec![ints("axes", &[2]), int("keepdims", 0)])
                }
            }
            Layer::Recurrent { cell, hidden, sequences, bidirectional } => {
                self.recurrent(x, name, *cell, *hidden, (*sequences, *bidirectional))?
            }
            Layer::Embedding { .. } => {
                let ids = self.node("Cast", vec![x], name, vec![int("to", DataType::Int64 as i64)]);
                let table = self.weight(&w("weight"))?;
                self.node("Gather", vec![table, ids], name, vec![int("axis", 0)])
            }
            Layer::Rbm { .. } => {
                let inputs = vec![x, self.weight(&w("weight"))?, self.weight(&w("bias"))?];
                let z = self.node("Gemm", inputs, name, vec![int("transB", 1)]);
                self.node("Sigmoid", vec![z], name, vec![])
            }
            Layer::Add | Layer::Concat => {
                let other = values
                    .get(&node.inputs[1])
                    .cloned()
                    .ok_or_else(|| format!("`{name}` reads a value nnc cannot export"))?;
                if node.layer == Layer::Concat {
                    self.node("Concat", vec![x, other], name, vec![int("axis", 1)])
                } else {
                    self.node("Add", vec![x, other], name, vec![])
                }
            }
            Layer::Activation(a) => self.activation(*a, x, name),
        })
    }

    fn activation(&mut self, a: Activation, x: String, name: &str) -> String {
        match a {
            Activation::Sigmoid => self.node("Sigmoid", vec![x], name, vec![]),
            Activation::Tanh => self.node("Tanh", vec![x], name, vec![]),
            Activation::Relu => self.node("Relu", vec![x], name, vec![]),
            Activation::LeakyRelu(alpha) => self.node("LeakyRelu", vec![x], name, vec![float("alpha", alpha as f32)]),
            Activation::Elu(alpha) => self.node("Elu", vec![x], name, vec![float("alpha", alpha as f32)]),
            Activation::Softplus => self.node("Softplus", vec![x], name, vec![]),
            Activation::Softmax => self.node("Softmax", vec![x], name, vec![int("axis", -1)]),
            Activation::Identity => x,
            // The bounds are Clip's inputs (from opset 11); an infinite one is left out.
            Activation::Clip(lo, hi) => {
                let mut bound =
                    |at: &str, v: f64| if v.is_finite() { self.constant(at, v as f32) } else { String::new() };
                let bounds = vec![x, bound("min", lo), bound("max", hi)];
                self.node("Clip", bounds, name, vec![])
            }
            Activation::Silu => {
                let s = self.node("Sigmoid", vec![x.clone()], name, vec![]);
                self.node("Mul", vec![x, s], name, vec![])
            }
            // ONNX's own op from opset 20.
            Activation::Gelu { tanh } if self.opset >= 20 => {
                let approximate = if tanh { "tanh" } else { "none" };
                self.node("Gelu", vec![x], name, vec![text("approximate", approximate)])
            }
            // x·Φ(x) = ½·x·(1 + erf(x/√2))
            Activation::Gelu { tanh: false } => {
                let root2 = self.constant("sqrt2", std::f32::consts::SQRT_2);
                let scaled = self.node("Div", vec![x.clone(), root2], name, vec![]);
                let erf = self.node("Erf", vec![scaled], name, vec![]);
                self.half_x_one_plus(x, erf, name)
            }
            // ½·x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))
            Activation::Gelu { tanh: true } => {
                let (c, k) = (self.constant("c", 0.044_715), self.constant("k", (2.0 / std::f32::consts::PI).sqrt()));
                let square = self.node("Mul", vec![x.clone(), x.clone()], name, vec![]);
                let cube = self.node("Mul", vec![square, x.clone()], name, vec![]);
                let term = self.node("Mul", vec![cube, c], name, vec![]);
                let inner = self.node("Add", vec![x.clone(), term], name, vec![]);
                let inner = self.node("Mul", vec![inner, k], name, vec![]);
                let t = self.node("Tanh", vec![inner], name, vec![]);
                self.half_x_one_plus(x, t, name)
            }
        }
    }

    /// ½·x·(1 + t).
    fn half_x_one_plus(&mut self, x: String, t: String, name: &str) -> String {
        let (one, half) = (self.constant("one", 1.0), self.constant("half", 0.5));
        let shifted = self.node("Add", vec![t, one], name, vec![]);
        let halved = self.node("Mul", vec![x, half], name, vec![]);
        self.node("Mul", vec![halved, shifted], name, vec![])
    }
}
