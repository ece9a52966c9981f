//! An ONNX inference graph → a `.nn` model and its weights.
//!
//! The graph is read node by node from its one input, each node mapped to a
//! layer of the language; a tensor read by one node extends the pipeline it
//! is in, one read by several becomes a named value. Weights become the
//! tensors of the layers nnc will name (`dense1.weight`, …). Scaling of the
//! raw input (a `Div` by a constant, or `Sub` then `Div` by per-feature
//! tensors) becomes the checkpoint's preprocessing; each output of the
//! graph is a prediction, a final `Softmax` (or `LogSoftmax`) making it a
//! classifier of the scores before it. What cannot be mapped exactly is an
//! error naming the node, never a different network.

use std::collections::HashMap;
use std::path::Path;

use prost::Message;

use super::proto::{self, ModelProto, NodeProto};
use crate::check::Cell;
use crate::data::Scaler;

mod attributes;
mod composite;
mod external;
mod formula;
mod layers;
mod shapes;
mod tensors;
mod text;

use attributes::{attribute, float_attr, int_attr, ints_attr, per_axis, square, text_attr};
use tensors::{sample_shape, tensor_values};
use text::pipeline_text;

/// The ops the importer maps (as `nnc export` writes them, and as PyTorch
/// writes `nn.Sequential` MLPs and LeNet-style CNNs).
pub const SUPPORTED: &[&str] = &[
    "LSTM",
    "RNN",
    "GRU",
    "Gather",
    "Cast",
    "Transpose",
    "Squeeze",
    "Shape",
    "Unsqueeze",
    "ConstantOfShape",
    "Expand",
    "Slice",
    "Concat",
    "ReduceMax",
    "Mul",
    "Gemm",
    "MatMul",
    "Add",
    "Conv",
    "MaxPool",
    "AveragePool",
    "GlobalAveragePool",
    "Resize",
    "BatchNormalization",
    "LayerNormalization",
    "Relu",
    "Sigmoid",
    "Tanh",
    "LeakyRelu",
    "Elu",
    "Softplus",
    "Gelu",
    "Clip",
    "Softmax",
    "LogSoftmax",
    "Flatten",
    "Reshape",
    "Dropout",
    "Identity",
    "Constant",
    "Sub",
    "Div",
    "Erf",
    "Pow",
];

/// The newest opset whose semantics of these ops the importer knows.
const NEWEST_OPSET: i64 = 21;

/// An imported model: its `.nn` text, its tensors by nnc's names, and the
/// preprocessing of its raw input.
pub struct Imported {
    pub source: String,
    pub tensors: HashMap<String, (Vec<usize>, Vec<f32>)>,
    pub scaler: Scaler,
}

/// A value of the graph as the importer follows it.
#[derive(Clone)]
enum Value {
    /// A constant tensor (an initializer or a `Constant` node).
    Constant(Vec<usize>, Vec<f32>),
    /// Raw input `k`, before any layer.
    Input(usize),
    /// A value computed by the network: the pipeline text that produces it
    /// (its source and stages) and its shape per sample.
    Computed { flow: Flow, shape: Vec<usize> },
    /// A sequence `[T, F]` transposed to time-major, as recurrent ops read it.
    TimeMajor { flow: Flow, shape: Vec<usize> },
    /// An output of a recurrent op, before the `Squeeze` or `Reshape` that
    /// picks it: every step's states `Y` `[T, D, N, H]` or the last ones
    /// `Y_h` `[D, N, H]`.
    Recurrent(RecurrentOutput),
    /// The same with its direction axis moved next to the states' axis,
    /// `[T, N, D, H]` or `[N, D, H]`, before the `Reshape` that joins (or
    /// drops) the directions (as PyTorch's dynamo exporter writes a stack).
    DirectionsInner(RecurrentOutput),
    /// One direction's last states (`Y_h[k]`) of a bidirectional layer,
    /// before the `Concat` that puts the two side by side.
    OneDirection { out: RecurrentOutput, direction: usize },
    /// The last states (`Y_h`) of a stack of recurrent layers concatenated
    /// along the layer axis, first layer first: PyTorch's `h_n`.
    LayerStates(Vec<Value>),
    /// Dimensions the graph computes from a value's `Shape` (one
    /// dimension when `scalar`).
    Dims { dims: Vec<shapes::Dim>, scalar: bool },
    /// Zeros of a computed shape: a recurrent layer's initial state.
    Zeros(Vec<shapes::Dim>),
    /// Part of an element-wise formula of one computed value `x` (its
    /// flow), kept until it is a whole activation.
    Formula { flow: Flow, shape: Vec<usize>, expr: formula::Expr },
}

/// A recurrent op's output: its layer's name, the layer's stage text (without its closing
/// parenthesis), its steps, hidden size and directions (D), and whether it
/// holds every step's states or the last.
#[derive(Clone)]
struct RecurrentOutput {
    /// The layer's name, as its tensors are named.
    layer: String,
    flow: Flow,
    stage: String,
    steps: usize,
    hidden: usize,
    directions: usize,
    every_step: bool,
}

/// One input of the graph, as the model will declare it.
struct GraphInput {
    name: String,
    /// One sample's shape (the dimensions after the batch).
    shape: Vec<usize>,
    /// The scaling of its raw values, the graph's first nodes on it.
    scaler: Scaler,
    /// It holds token ids (it is cast to integers for a `Gather`).
    tokens: bool,
}

/// A standardized target's mean and deviation, one of each per value.
type TargetScale = (Vec<f32>, Vec<f32>);

#[derive(Clone, PartialEq)]
struct Flow {
    source: String,
    stages: Vec<String>,
}

struct Importer<'a> {
    nodes: &'a [NodeProto],
    /// Where tensors stored outside the model are read from.
    folder: Option<&'a Path>,
    values: HashMap<String, Value>,
    /// How many nodes read each tensor.
    readers: HashMap<String, usize>,
    statements: Vec<String>,
    tensors: HashMap<String, (Vec<usize>, Vec<f32>)>,
    counters: HashMap<&'static str, usize>,
    /// The graph's inputs, in order: one data row holds them side by side.
    inputs: Vec<GraphInput>,
    names: usize,
    /// Nodes already folded into an earlier one (the `Add` of a bias after a `MatMul`).
    folded: std::collections::HashSet<usize>,
    /// The graph's outputs: each one a prediction of the model, compared
    /// with a target of its own.
    outputs: Vec<String>,
    /// Each output's target's (mean, std), by the output's name, where the
    /// graph ends by taking the prediction out of standard units
    /// (`standardize_target`).
    target_scales: HashMap<String, TargetScale>,
}

/// Reads ONNX bytes into a model named `name`; tensors stored outside them
/// are read from `folder`, the `.onnx` file's.
pub fn import(bytes: &[u8], name: &str, folder: Option<&Path>) -> Result<Imported, String> {
    let model = ModelProto::decode(bytes).map_err(|e| format!("not an ONNX model ({e})"))?;
    let opset = model
        .opset_import
        .iter()
        .find(|o| o.domain.as_deref().unwrap_or("").is_empty())
        .and_then(|o| o.version)
        .ok_or("the model names no ONNX opset; is it an ONNX model?")?;
    if opset > NEWEST_OPSET {
        return Err(format!("opset {opset} is newer than the {NEWEST_OPSET} nnc imports; export with an older opset"));
    }
    let graph = model.graph.as_ref().ok_or("the model has no graph")?;
    let mut values = HashMap::new();
    for init in &graph.initializer {
        let (dims, data) = tensor_values(init, folder)?;
        values.insert(init.name.clone().unwrap_or_default(), Value::Constant(dims, data));
    }
    let mut inputs = Vec::new();
    // Initializers may be listed among the inputs too.
    let fed: Vec<_> = graph.input.iter().filter(|i| !values.contains_key(i.name.as_deref().unwrap_or(""))).collect();
    for input in fed {
        let name = input.name.clone().unwrap_or_default();
        let shape = sample_shape(input)?;
        values.insert(name.clone(), Value::Input(inputs.len()));
        inputs.push(GraphInput { name: identifier(&name), shape, scaler: Scaler::None, tokens: false });
    }
    if inputs.is_empty() {
        return Err("the graph has no input".to_string());
    }
    if graph.output.is_empty() {
        return Err("the graph has no outputs".to_string());
    }
    let mut readers: HashMap<String, usize> = HashMap::new();
    // The graph's outputs count as readers: a value that is an output and
    // read on, or two outputs, is named rather than computed twice. A
    // `Shape` reads only the dimensions, which are no part of the model's text.
    let outputs = graph.output.iter().map(|o| o.name.clone().unwrap_or_default());
    let computing = graph.node.iter().filter(|node| node.op_type.as_deref() != Some("Shape"));
    for read in computing.flat_map(|node| node.input.iter().filter(|i| !i.is_empty()).cloned()).chain(outputs) {
        *readers.entry(read).or_default() += 1;
    }
    let mut importer = Importer {
        nodes: &graph.node,
        folder,
        values,
        readers,
        statements: Vec::new(),
        tensors: HashMap::new(),
        counters: HashMap::new(),
        inputs,
        names: 0,
        folded: Default::default(),
        outputs: graph.output.iter().map(|o| o.name.clone().unwrap_or_default()).collect(),
        target_scales: HashMap::new(),
    };
    for (index, node) in graph.node.iter().enumerate() {
        if !importer.folded.contains(&index) {
            importer.node(index, node)?;
        }
    }
    importer.finish(name)
}

/// A tensor name made usable as a `.nn` name.
fn identifier(name: &str) -> String {
    let mut out: String = name.chars().map(|c| if c.is_ascii_alphanumeric() || c == '_' { c } else { '_' }).collect();
    if !out.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_') {
        out.insert(0, 'v');
    }
    if matches!(out.as_str(), "model" | "block" | "input" | "target" | "loss" | "train" | "repeat" | "as") {
        out.push('_');
    }
    out
}

fn node_name(node: &NodeProto) -> String {
    let name = node.name.as_deref().filter(|n| !n.is_empty()).unwrap_or("(unnamed)");
    format!("node `{name}` ({})", node.op_type.as_deref().unwrap_or("?"))
}

fn unsupported_detail(node: &NodeProto, why: &str) -> String {
    format!("{} cannot be imported: {why}", node_name(node))
}

fn number(v: f32) -> String {
    let text = format!("{v}");
    if text.contains('.') || text.contains('e') || text.contains("inf") || text.contains("NaN") {
        text
    } else {
        format!("{text}.0")
    }
}

impl Importer<'_> {
    fn value(&self, node: &NodeProto, k: usize) -> Result<Value, String> {
        let name = node
            .input
            .get(k)
            .filter(|n| !n.is_empty())
            .ok_or_else(|| unsupported_detail(node, &format!("it has no input {k}")))?;
        self.values
            .get(name)
            .cloned()
            .ok_or_else(|| unsupported_detail(node, &format!("its input `{name}` is produced by no earlier node")))
    }

    /// A `Reshape`'s target shape, constant or computed, where a 0 copies
    /// the input's dimension. Under `allowzero` a 0 would be a size of 0,
    /// which no value nnc computes has.
    fn reshape_target(&self, node: &NodeProto) -> Result<Vec<shapes::Dim>, String> {
        let target = match self.value(node, 1)? {
            Value::Dims { dims, scalar: false } => dims,
            _ => self.constant(node, 1)?.1.iter().map(|&v| shapes::Dim::Fixed(v as i64)).collect(),
        };
        if int_attr(node, "allowzero", 0) != 0 && target.contains(&shapes::Dim::Fixed(0)) {
            return Err(unsupported_detail(node, "its `allowzero` makes a 0 in its target shape a size of 0"));
        }
        Ok(target)
    }

    fn constant(&self, node: &NodeProto, k: usize) -> Result<(Vec<usize>, Vec<f32>), String> {
        match self.value(node, k)? {
            Value::Constant(dims, data) => Ok((dims, data)),
            _ => Err(unsupported_detail(node, &format!("input {k} is computed; nnc needs a constant there"))),
        }
    }

    /// The flow computing input `k` and its shape; the raw input starts a new flow.
    fn computed(&self, node: &NodeProto, k: usize) -> Result<(Flow, Vec<usize>), String> {
        match self.value(node, k)? {
            Value::Computed { flow, shape } => Ok((flow, shape)),
            Value::Input(k) => {
                let input = &self.inputs[k];
                Ok((Flow { source: input.name.clone(), stages: Vec::new() }, input.shape.clone()))
            }
            Value::Constant(..) => {
                Err(unsupported_detail(node, &format!("input {k} is a constant; nnc's layers read computed values")))
            }
            Value::TimeMajor { .. }
            | Value::Recurrent(_)
            | Value::DirectionsInner(_)
            | Value::OneDirection { .. }
            | Value::LayerStates(_) => Err(unsupported_detail(
                node,
                &format!(
                    "input {k} is a recurrent layer's time-major value; nnc maps only the transposes around it \
                     and the pick of one step or state"
                ),
            )),
            Value::Dims { .. } | Value::Zeros(..) => Err(unsupported_detail(
                node,
                &format!("input {k} is computed from a shape; nnc's layers read values of the network"),
            )),
            Value::Formula { expr, .. } => Err(unsupported_detail(
                node,
                &format!("input {k} is the formula {expr}, which is no activation nnc has"),
            )),
        }
    }

    /// The next layer name nnc gives `keyword` (`dense1`, `dense2`, …).
    fn layer_name(&mut self, keyword: &'static str) -> String {
        let n = self.counters.entry(keyword).or_insert(0);
        *n += 1;
        format!("{keyword}{n}")
    }

    /// Binds the node's output to `value`.
    fn set(&mut self, node: &NodeProto, value: Value) {
        self.values.insert(node.output.first().cloned().unwrap_or_default(), value);
    }

    fn output(&mut self, node: &NodeProto, flow: Flow, shape: Vec<usize>) -> Result<(), String> {
        let out = node.output.first().cloned().unwrap_or_default();
        // A value read by several nodes is named, and each reader starts from the name.
        let flow = if self.readers.get(&out).copied().unwrap_or(0) > 1 { self.name_flow(flow) } else { flow };
        self.values.insert(out, Value::Computed { flow, shape });
        Ok(())
    }

    /// Ends `flow` with `=> name` and returns a flow starting from the name.
    fn name_flow(&mut self, flow: Flow) -> Flow {
        let is_call = flow.source.contains('(');
        if flow.stages.is_empty() && !is_call {
            return flow;
        }
        self.names += 1;
        let name = format!("h{}", self.names);
        self.statements.push(format!("{} => {name}", pipeline_text(&flow)));
        Flow { source: name, stages: Vec::new() }
    }

    fn stage(&mut self, node: &NodeProto, text: String, shape: Vec<usize>) -> Result<(), String> {
        let (mut flow, _) = self.computed(node, 0)?;
        flow.stages.push(text);
        self.output(node, flow, shape)
    }

    fn node(&mut self, index: usize, node: &NodeProto) -> Result<(), String> {
        let op = node.op_type.as_deref().unwrap_or("");
        match op {
            "Constant" => {
                let t = attribute(node, "value")
                    .and_then(|a| a.t.as_ref())
                    .ok_or_else(|| unsupported_detail(node, "it holds no tensor"))?;
                let (dims, data) = tensor_values(t, self.folder)?;
                self.set(node, Value::Constant(dims, data));
                Ok(())
            }
            "Identity" | "Dropout" => {
                let v = self.value(node, 0)?;
                self.set(node, v);
                Ok(())
            }
            "Div" | "Sub" if matches!(self.value(node, 0)?, Value::Input(_)) => self.scaling(node),
            "Div" | "Erf" | "Pow" => self.formula(node),
            "Tanh" | "Add" | "Sub" if self.in_formula(node) => self.formula(node),
            "Gemm" => self.gemm(node),
            "MatMul" => self.matmul(index, node),
            "Add" => self.add(node),
            "Conv" => self.conv(node),
            "MaxPool" | "AveragePool" => self.pool(node, op == "MaxPool"),
            "GlobalAveragePool" => match self.computed(node, 0)? {
                (_, shape) if shape.len() == 3 => self.stage(node, "global_avgpool".into(), vec![shape[0]]),
                (_, shape) => Err(unsupported_detail(node, &format!("it reads values of shape {shape:?}, not images"))),
            },
            "Resize" => self.upsample(node),
            "BatchNormalization" => self.batchnorm(node),
            "LayerNormalization" => self.layernorm(node),
            "Sub" => Err(unsupported_detail(node, "nnc maps `Sub` only where it centres the raw input")),
            "Gelu" => {
                let (_, shape) = self.computed(node, 0)?;
                let stage = match text_attr(node, "approximate", "none").as_str() {
                    "none" => "gelu",
                    "tanh" => "gelu(tanh = true)",
                    other => {
                        return Err(unsupported_detail(
                            node,
                            &format!("its approximation `{other}` is not one nnc has"),
                        ));
                    }
                };
                self.stage(node, stage.into(), shape)
            }
            "Relu" | "Sigmoid" | "Tanh" | "Softplus" => {
                let (_, shape) = self.computed(node, 0)?;
                self.stage(node, op.to_lowercase(), shape)
            }
            "Clip" => self.clip(node),
            "LeakyRelu" => {
                let (_, shape) = self.computed(node, 0)?;
                self.stage(node, format!("leaky_relu(alpha = {})", number(float_attr(node, "alpha", 0.01))), shape)
            }
            "Elu" => {
                let (_, shape) = self.computed(node, 0)?;
                self.stage(node, format!("elu(alpha = {})", number(float_attr(node, "alpha", 1.0))), shape)
            }
            "Softmax" | "LogSoftmax" => {
                let (_, shape) = self.computed(node, 0)?;
                let axis = int_attr(node, "axis", -1);
                if axis != -1 && axis != shape.len() as i64 {
                    return Err(unsupported_detail(node, "it is not over the last axis, as nnc's softmax is"));
                }
                // A classifier's final log-probabilities: the same classifier
                // (its outputs the logarithms of its probabilities).
                let out = node.output.first().cloned().unwrap_or_default();
                let last = self.outputs.contains(&out) && self.readers.get(&out) == Some(&1);
                if op == "LogSoftmax" && !last {
                    return Err(unsupported_detail(node, "nnc maps `LogSoftmax` only as a classifier's final op"));
                }
                self.stage(node, "softmax".into(), shape)
            }
            "Flatten" => {
                let (_, shape) = self.computed(node, 0)?;
                if int_attr(node, "axis", 1) != 1 {
                    return Err(unsupported_detail(node, "it does not keep the batch axis alone"));
                }
                self.stage(node, "flatten".into(), vec![shape.iter().product()])
            }
            "Reshape" => match self.value(node, 0)? {
                Value::Dims { dims, scalar: false } => self.reshape_dims(node, dims),
                Value::DirectionsInner(output) => self.join_directions(node, output),
                _ => self.reshape(node),
            },
            "Mul" if (0..2).any(|k| matches!(self.value(node, k), Ok(Value::Dims { .. }))) => self.mul_dims(node),
            "Mul" => match self.unstandardizing(node) {
                Some((add, output, scale)) => {
                    let (flow, shape) = self.computed(node, 0)?;
                    let out = self.nodes[add].output.first().cloned().unwrap_or_default();
                    self.values.insert(out, Value::Computed { flow, shape });
                    self.folded.insert(add);
                    self.target_scales.insert(output, scale);
                    Ok(())
                }
                None => self.silu(node).or_else(|_| self.formula(node)),
            },
            "ReduceMax" => self.maxout(node),
            "Cast" => self.cast(node),
            "Gather" => match self.value(node, 0)? {
                Value::Dims { dims, scalar: false } => self.gather_dims(node, dims),
                Value::Recurrent(_) | Value::LayerStates(_) | Value::Computed { .. } => self.last_step(node),
                _ => self.embedding(node),
            },
            "Shape" => self.shape_of(node),
            "Unsqueeze" => self.unsqueeze(node),
            "ConstantOfShape" => self.constant_of_shape(node),
            "Expand" => self.expand(node),
            "Slice" => match self.value(node, 0)? {
                Value::Zeros(dims) => self.slice_zeros(node, dims),
                Value::Dims { dims, scalar: false } => self.slice_dims(node, dims),
                _ => Err(unsupported_detail(node, "nnc maps `Slice` only of a recurrent layer's zero initial states")),
            },
            "Concat" if (0..node.input.len()).any(|k| matches!(self.value(node, k), Ok(Value::Dims { .. }))) => {
                self.concat_dims(node)
            }
            "Concat"
                if (0..node.input.len()).all(|k| matches!(self.value(node, k), Ok(Value::OneDirection { .. }))) =>
            {
                self.both_directions(node)
            }
            "Concat"
                if (0..node.input.len()).all(|k| {
                    matches!(self.value(node, k), Ok(Value::Recurrent(RecurrentOutput { every_step: false, .. })))
                }) =>
            {
                self.layer_states(node)
            }
            "Concat" if (0..node.input.len()).all(|k| matches!(self.value(node, k), Ok(Value::Constant(..)))) => {
                self.concat(node)
            }
            "Concat" => self.join(node),
            "Transpose" => self.transpose(node),
            "RNN" => self.recurrent(node, Cell::Rnn),
            "LSTM" => self.recurrent(node, Cell::Lstm),
            "GRU" => self.recurrent(node, Cell::Gru),
            "Squeeze" => self.squeeze(node),
            _ => Err(format!(
                "{} cannot be imported: nnc maps only these ONNX ops: {}",
                node_name(node),
                SUPPORTED.join(", ")
            )),
        }
    }

    /// For `Mul(x, σ)` read only by `Add(·, μ)` that is an output of the
    /// graph (or read by an `Identity` that is), with one σ and μ per
    /// predicted value, as `nnc export` writes a standardised target: the
    /// `Add`'s index, the output and (μ, σ).
    fn unstandardizing(&self, node: &NodeProto) -> Option<(usize, String, TargetScale)> {
        let (_, shape) = self.computed(node, 0).ok()?;
        let width: usize = shape.iter().product();
        let (_, std) = self.constant(node, 1).ok()?;
        let out = node.output.first()?;
        let (add, reader) = self.nodes.iter().enumerate().find(|(_, n)| n.input.first() == Some(out))?;
        let sum = reader.output.first()?;
        let output = if self.outputs.contains(sum) {
            sum.clone()
        } else {
            let identity =
                self.nodes.iter().find(|n| n.op_type.as_deref() == Some("Identity") && n.input.first() == Some(sum))?;
            identity.output.first().filter(|o| self.outputs.contains(o))?.clone()
        };
        let (_, mean) = self.constant(reader, 1).ok()?;
        let fits = reader.op_type.as_deref() == Some("Add") && std.len() == width && mean.len() == width;
        (fits && self.readers.get(out) == Some(&1)).then_some((add, output, (mean, std)))
    }
}

#[cfg(test)]
mod tests;
