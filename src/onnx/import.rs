//! An ONNX inference graph → a `.nn` model and its weights.
//!
//! The graph is read node by node from its one input, each node mapped to a
//! layer of the language; a tensor read by one node extends the pipeline it
//! is in, one read by several becomes a named value. Weights become the
//! tensors of the layers nnc will name (`dense1.weight`, …). Scaling of the
//! raw input (a `Div` by a constant, or `Sub` then `Div` by per-feature
//! tensors) becomes the checkpoint's preprocessing; a final `Softmax` makes
//! the model a classifier of the scores before it. What cannot be mapped
//! exactly is an error naming the node, never a different network.

use std::collections::HashMap;

use prost::Message;

use super::proto::{self, ModelProto, NodeProto, TensorProto, attribute_proto::AttributeType, tensor_proto::DataType};
use crate::data::Scaler;

/// The ops the importer maps (as `nnc export` writes them, and as PyTorch
/// writes `nn.Sequential` MLPs and LeNet-style CNNs).
pub const SUPPORTED: &[&str] = &[
    "LSTM",
    "RNN",
    "Gather",
    "Cast",
    "Transpose",
    "Squeeze",
    "Concat",
    "ReduceMax",
    "Mul",
    "Gemm",
    "MatMul",
    "Add",
    "Conv",
    "MaxPool",
    "AveragePool",
    "BatchNormalization",
    "Relu",
    "Sigmoid",
    "Tanh",
    "LeakyRelu",
    "Elu",
    "Softplus",
    "Softmax",
    "Flatten",
    "Reshape",
    "Dropout",
    "Identity",
    "Constant",
    "Sub",
    "Div",
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
    /// The raw input, before any layer.
    Input,
    /// A value computed by the network: the pipeline text that produces it
    /// (its source and stages) and its shape per sample.
    Computed { flow: Flow, shape: Vec<usize> },
    /// A sequence `[T, F]` transposed to time-major, as recurrent ops read it.
    TimeMajor { flow: Flow, shape: Vec<usize> },
    /// An output of a recurrent op, before the `Squeeze` that picks it:
    /// every step's state (`Y`) or the last one (`Y_h`).
    Recurrent { flow: Flow, stage: String, steps: usize, hidden: usize, every_step: bool },
    /// Part of an element-wise formula of one computed value `x` (its flow),
    /// written out (`(x/1.4142135)`) until it is a whole activation.
    Formula { flow: Flow, shape: Vec<usize>, text: String },
}

/// An operand of an element-wise op: `x` itself, a formula of it, or a number.
enum Term {
    Of { flow: Flow, shape: Vec<usize>, text: String },
    Number(f32),
}

#[derive(Clone, PartialEq)]
struct Flow {
    source: String,
    stages: Vec<String>,
}

struct Importer<'a> {
    nodes: &'a [NodeProto],
    values: HashMap<String, Value>,
    /// How many nodes read each tensor.
    readers: HashMap<String, usize>,
    statements: Vec<String>,
    tensors: HashMap<String, (Vec<usize>, Vec<f32>)>,
    scaler: Scaler,
    counters: HashMap<&'static str, usize>,
    input_name: String,
    input_shape: Vec<usize>,
    names: usize,
    /// Nodes already folded into an earlier one (the `Add` of a bias after a `MatMul`).
    folded: std::collections::HashSet<usize>,
    /// The input holds token ids (it is cast to integers for a `Gather`).
    tokens: bool,
}

/// Reads ONNX bytes into a model named `name`.
pub fn import(bytes: &[u8], name: &str) -> Result<Imported, String> {
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
        let (dims, data) = tensor_values(init)?;
        values.insert(init.name.clone().unwrap_or_default(), Value::Constant(dims, data));
    }
    let inputs: Vec<_> = graph.input.iter().filter(|i| !values.contains_key(i.name.as_deref().unwrap_or(""))).collect();
    let [input] = inputs.as_slice() else {
        return Err(format!("the graph has {} inputs; nnc models read one", inputs.len()));
    };
    let [output] = graph.output.as_slice() else {
        return Err(format!("the graph has {} outputs; nnc models predict one", graph.output.len()));
    };
    let input_name = input.name.clone().unwrap_or_default();
    let input_shape = sample_shape(input)?;
    values.insert(input_name.clone(), Value::Input);
    let mut readers: HashMap<String, usize> = HashMap::new();
    for node in &graph.node {
        for i in node.input.iter().filter(|i| !i.is_empty()) {
            *readers.entry(i.clone()).or_default() += 1;
        }
    }
    let mut importer = Importer {
        nodes: &graph.node,
        values,
        readers,
        statements: Vec::new(),
        tensors: HashMap::new(),
        scaler: Scaler::None,
        counters: HashMap::new(),
        input_name: identifier(&input_name),
        input_shape,
        names: 0,
        folded: Default::default(),
        tokens: false,
    };
    for (index, node) in graph.node.iter().enumerate() {
        if !importer.folded.contains(&index) {
            importer.node(index, node)?;
        }
    }
    importer.finish(name, output.name.as_deref().unwrap_or(""))
}

/// One sample's shape: the input's dimensions after the batch.
fn sample_shape(input: &proto::ValueInfoProto) -> Result<Vec<usize>, String> {
    let name = input.name.as_deref().unwrap_or("");
    let Some(proto::type_proto::Value::TensorType(tensor)) = input.r#type.as_ref().and_then(|t| t.value.as_ref())
    else {
        return Err(format!("input `{name}` is not a tensor"));
    };
    if tensor.elem_type != Some(DataType::Float as i32) {
        return Err(format!("input `{name}` is not float32; nnc models read float32 rows"));
    }
    let dims = tensor.shape.as_ref().map(|s| s.dim.as_slice()).unwrap_or_default();
    let mut shape = Vec::new();
    for (k, dim) in dims.iter().enumerate().skip(1) {
        match dim.value {
            Some(proto::tensor_shape_proto::dimension::Value::DimValue(v)) if v > 0 => shape.push(v as usize),
            _ => {
                return Err(format!(
                    "dimension {k} of input `{name}` is not a fixed size; nnc needs every dimension after the batch"
                ));
            }
        }
    }
    if dims.len() < 2 {
        return Err(format!("input `{name}` has no dimension after the batch"));
    }
    Ok(shape)
}

/// A tensor's dimensions and values as f32 (float or int64 data).
fn tensor_values(t: &TensorProto) -> Result<(Vec<usize>, Vec<f32>), String> {
    let name = t.name.as_deref().unwrap_or("");
    let dims: Vec<usize> = t
        .dims
        .iter()
        .map(|&d| usize::try_from(d).map_err(|_| format!("tensor `{name}` has a negative size")))
        .collect::<Result<_, _>>()?;
    let count = dims
        .iter()
        .try_fold(1usize, |n, &d| n.checked_mul(d))
        .ok_or_else(|| format!("tensor `{name}` is too large"))?;
    let data: Vec<f32> = match DataType::try_from(t.data_type.unwrap_or(0)) {
        Ok(DataType::Float) => match &t.raw_data {
            Some(raw) => raw.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect(),
            None => t.float_data.clone(),
        },
        Ok(DataType::Int64) => match &t.raw_data {
            Some(raw) => {
                raw.chunks_exact(8).map(|b| i64::from_le_bytes(b.try_into().unwrap_or([0; 8])) as f32).collect()
            }
            None => t.int64_data.iter().map(|&v| v as f32).collect(),
        },
        _ => return Err(format!("tensor `{name}` is neither float32 nor int64")),
    };
    if data.len() != count {
        return Err(format!("tensor `{name}` holds {} values for its shape {dims:?} ({count})", data.len()));
    }
    if t.data_location == Some(1) {
        return Err(format!("tensor `{name}` is stored outside the file; save the model with its weights inside"));
    }
    Ok((dims, data))
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

fn attribute<'n>(node: &'n NodeProto, name: &str) -> Option<&'n proto::AttributeProto> {
    node.attribute.iter().find(|a| a.name.as_deref() == Some(name))
}

fn int_attr(node: &NodeProto, name: &str, default: i64) -> i64 {
    attribute(node, name).and_then(|a| a.i).unwrap_or(default)
}

fn float_attr(node: &NodeProto, name: &str, default: f32) -> f32 {
    attribute(node, name).and_then(|a| a.f).unwrap_or(default)
}

fn ints_attr(node: &NodeProto, name: &str) -> Option<Vec<i64>> {
    attribute(node, name)
        .filter(|a| a.r#type == Some(AttributeType::Ints as i32) || !a.ints.is_empty())
        .map(|a| a.ints.clone())
}

/// `[k, k]`-style attributes that nnc's square layers take as one number.
fn square(node: &NodeProto, what: &str, values: Option<Vec<i64>>, default: i64) -> Result<usize, String> {
    let values = values.unwrap_or_else(|| vec![default, default]);
    match values.as_slice() {
        [a, rest @ ..] if *a >= 0 && rest.iter().all(|b| b == a) => Ok(*a as usize),
        _ => Err(unsupported_detail(node, &format!("its {what} {values:?} differ along the axes; nnc's are square"))),
    }
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
            Value::Input => {
                Ok((Flow { source: self.input_name.clone(), stages: Vec::new() }, self.input_shape.clone()))
            }
            Value::Constant(..) => {
                Err(unsupported_detail(node, &format!("input {k} is a constant; nnc's layers read computed values")))
            }
            Value::TimeMajor { .. } | Value::Recurrent { .. } => Err(unsupported_detail(
                node,
                &format!("input {k} is a recurrent layer's time-major value; nnc maps only the transposes around it"),
            )),
            Value::Formula { text, .. } => Err(unsupported_detail(
                node,
                &format!("input {k} is the formula {text}, which is no activation nnc has"),
            )),
        }
    }

    /// The next layer name nnc gives `keyword` (`dense1`, `dense2`, …).
    fn layer_name(&mut self, keyword: &'static str) -> String {
        let n = self.counters.entry(keyword).or_insert(0);
        *n += 1;
        format!("{keyword}{n}")
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
                let (dims, data) = tensor_values(t)?;
                self.values.insert(node.output.first().cloned().unwrap_or_default(), Value::Constant(dims, data));
                Ok(())
            }
            "Identity" | "Dropout" => {
                let v = self.value(node, 0)?;
                self.values.insert(node.output.first().cloned().unwrap_or_default(), v);
                Ok(())
            }
            "Div" | "Sub" if matches!(self.value(node, 0)?, Value::Input) => self.scaling(node),
            "Sub" => Err(unsupported_detail(node, "nnc maps `Sub` only where it centres the raw input")),
            "Div" | "Erf" => self.formula(node),
            "Tanh" | "Add" if self.in_formula(node) => self.formula(node),
            "Gemm" => self.gemm(node),
            "MatMul" => self.matmul(index, node),
            "Add" => self.add(node),
            "Conv" => self.conv(node),
            "MaxPool" | "AveragePool" => self.pool(node, op == "MaxPool"),
            "BatchNormalization" => self.batchnorm(node),
            "Relu" | "Sigmoid" | "Tanh" | "Softplus" => {
                let (_, shape) = self.computed(node, 0)?;
                self.stage(node, op.to_lowercase(), shape)
            }
            "LeakyRelu" => {
                let (_, shape) = self.computed(node, 0)?;
                self.stage(node, format!("leaky_relu(alpha = {})", number(float_attr(node, "alpha", 0.01))), shape)
            }
            "Elu" => {
                let (_, shape) = self.computed(node, 0)?;
                self.stage(node, format!("elu(alpha = {})", number(float_attr(node, "alpha", 1.0))), shape)
            }
            "Softmax" => {
                let (_, shape) = self.computed(node, 0)?;
                let axis = int_attr(node, "axis", -1);
                if axis != -1 && axis != shape.len() as i64 {
                    return Err(unsupported_detail(node, "it is not over the last axis, as nnc's softmax is"));
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
            "Reshape" => self.reshape(node),
            "Mul" => self.silu(node).or_else(|_| self.formula(node)),
            "ReduceMax" => self.maxout(node),
            "Cast" => self.cast(node),
            "Gather" => self.embedding(node),
            "Concat" => self.concat(node),
            "Transpose" => self.transpose(node),
            "LSTM" | "RNN" => self.recurrent(node, op == "LSTM"),
            "Squeeze" => self.squeeze(node),
            _ => Err(format!(
                "{} cannot be imported: nnc maps only these ONNX ops: {}",
                node_name(node),
                SUPPORTED.join(", ")
            )),
        }
    }

    /// `Div(input, s)` → `scale`; `Sub(input, mean)` then `Div(·, std)` → standardisation.
    fn scaling(&mut self, node: &NodeProto) -> Result<(), String> {
        let (dims, data) = self.constant(node, 1)?;
        let out = node.output.first().cloned().unwrap_or_default();
        let features: usize = self.input_shape.iter().product();
        let reader = self.nodes.iter().find(|n| n.input.first() == Some(&out));
        match (node.op_type.as_deref(), &self.scaler, data.len()) {
            (Some("Div"), Scaler::None, 1) => self.scaler = Scaler::Scale(data[0]),
            (Some("Sub"), Scaler::None, n)
                if n == features && reader.is_some_and(|r| r.op_type.as_deref() == Some("Div")) =>
            {
                self.scaler = Scaler::Standardize { mean: data, std: Vec::new() };
                // The `Div` that follows reads the centred input: still the input for the layers.
                self.values.insert(out, Value::Input);
                return Ok(());
            }
            (Some("Div"), Scaler::Standardize { mean, std }, n) if std.is_empty() && n == features => {
                self.scaler = Scaler::Standardize { mean: mean.clone(), std: data };
            }
            _ => {
                return Err(unsupported_detail(
                    node,
                    &format!(
                        "it scales the input by a tensor of shape {dims:?}, which is neither one number nor one per feature"
                    ),
                ));
            }
        }
        self.values.insert(out, Value::Input);
        Ok(())
    }

    fn dense(
        &mut self,
        node: &NodeProto,
        weight: Vec<f32>,
        (units, fan_in): (usize, usize),
        bias: Option<Vec<f32>>,
    ) -> Result<(), String> {
        let (flow, shape) = self.computed(node, 0)?;
        if shape.len() != 1 || shape[0] != fan_in {
            return Err(unsupported_detail(
                node,
                &format!(
                    "it multiplies values of shape {shape:?} by a [{fan_in}, {units}] matrix; nnc's dense layers take vectors"
                ),
            ));
        }
        let name = self.layer_name("dense");
        self.tensors.insert(format!("{name}.weight"), (vec![units, fan_in], weight));
        let text = match bias {
            Some(b) => {
                self.tensors.insert(format!("{name}.bias"), (vec![units], b));
                format!("dense({units})")
            }
            None => format!("dense({units}, bias = false)"),
        };
        let mut flow = flow;
        flow.stages.push(text);
        self.output(node, flow, vec![units])
    }

    fn gemm(&mut self, node: &NodeProto) -> Result<(), String> {
        if float_attr(node, "alpha", 1.0) != 1.0
            || float_attr(node, "beta", 1.0) != 1.0
            || int_attr(node, "transA", 0) != 0
        {
            return Err(unsupported_detail(node, "it scales or transposes its operands beyond x·Wᵀ + b"));
        }
        let (dims, w) = self.constant(node, 1)?;
        let [rows, cols] = dims[..] else { return Err(unsupported_detail(node, "its weight is not a matrix")) };
        let (units, fan_in, weight) =
            if int_attr(node, "transB", 0) == 1 { (rows, cols, w) } else { (cols, rows, transpose(&w, rows, cols)) };
        let bias = match node.input.get(2).filter(|n| !n.is_empty()) {
            Some(_) => {
                let (_, b) = self.constant(node, 2)?;
                match b.len() {
                    n if n == units => Some(b),
                    1 => Some(vec![b[0]; units]),
                    _ => return Err(unsupported_detail(node, "its bias is not one value per output")),
                }
            }
            None => None,
        };
        self.dense(node, weight, (units, fan_in), bias)
    }

    /// `MatMul(x, W)`, with the `Add` of a bias that usually follows.
    fn matmul(&mut self, index: usize, node: &NodeProto) -> Result<(), String> {
        let (dims, w) = self.constant(node, 1)?;
        let [fan_in, units] = dims[..] else { return Err(unsupported_detail(node, "its weight is not a matrix")) };
        let weight = transpose(&w, fan_in, units);
        let out = node.output.first().cloned().unwrap_or_default();
        let next = self.nodes.get(index + 1).filter(|n| {
            n.op_type.as_deref() == Some("Add") && n.input.first() == Some(&out) && self.readers.get(&out) == Some(&1)
        });
        let bias = next.and_then(|n| n.input.get(1)).and_then(|b| match self.values.get(b) {
            Some(Value::Constant(_, data)) if data.len() == units => Some(data.clone()),
            _ => None,
        });
        self.dense(node, weight, (units, fan_in), bias.clone())?;
        if let (Some(add), Some(_)) = (next, bias) {
            // The bias is in the dense layer: the `Add` passes its value on.
            let v = self.values.get(&out).cloned().unwrap_or(Value::Input);
            self.values.insert(add.output.first().cloned().unwrap_or_default(), v);
            self.folded.insert(index + 1);
        }
        Ok(())
    }

    /// The sum of two computed values of one shape: `add(a, b)`.
    fn add(&mut self, node: &NodeProto) -> Result<(), String> {
        let (a, a_shape) = self.computed(node, 0)?;
        let (b, b_shape) = self.computed(node, 1)?;
        if a_shape != b_shape {
            return Err(unsupported_detail(
                node,
                &format!("it adds {a_shape:?} to {b_shape:?}; nnc adds values of one shape"),
            ));
        }
        let (a, b) = (self.name_flow(a), self.name_flow(b));
        let flow = Flow { source: format!("add({}, {})", a.source, b.source), stages: Vec::new() };
        self.output(node, flow, a_shape)
    }

    fn conv(&mut self, node: &NodeProto) -> Result<(), String> {
        let (flow, shape) = self.computed(node, 0)?;
        let (dims, weight) = self.constant(node, 1)?;
        let [filters, channels, kh, kw] = dims[..] else {
            return Err(unsupported_detail(node, "it is not a 2-D convolution"));
        };
        if int_attr(node, "group", 1) != 1 {
            return Err(unsupported_detail(node, "it is a grouped convolution"));
        }
        if attribute(node, "auto_pad").and_then(|a| a.s.as_deref()).is_some_and(|s| s != b"NOTSET") {
            return Err(unsupported_detail(node, "it pads automatically; export with explicit pads"));
        }
        if kh != kw || kh == 0 {
            return Err(unsupported_detail(node, &format!("its kernel is {kh}×{kw}; nnc's are square and not empty")));
        }
        let [c, h, w] = shape[..] else {
            return Err(unsupported_detail(node, &format!("it reads values of shape {shape:?}, not images")));
        };
        if c != channels {
            return Err(unsupported_detail(node, &format!("its filters read {channels} channels, the input has {c}")));
        }
        let stride = square(node, "strides", ints_attr(node, "strides"), 1)?;
        let padding = square(node, "pads", ints_attr(node, "pads"), 0)?;
        let dilation = square(node, "dilations", ints_attr(node, "dilations"), 1)?;
        let extent = dilation * (kh - 1) + 1;
        if stride == 0 || h + 2 * padding < extent || w + 2 * padding < extent {
            return Err(unsupported_detail(node, "its window does not fit the image"));
        }
        let side = |n: usize| (n + 2 * padding - extent) / stride + 1;
        let name = self.layer_name("conv2d");
        self.tensors.insert(format!("{name}.weight"), (dims.clone(), weight));
        let mut args = vec![filters.to_string(), format!("kernel = {kh}")];
        for (key, v, default) in [("stride", stride, 1), ("padding", padding, 0), ("dilation", dilation, 1)] {
            if v != default {
                args.push(format!("{key} = {v}"));
            }
        }
        match node.input.get(2).filter(|n| !n.is_empty()) {
            Some(_) => {
                let (_, b) = self.constant(node, 2)?;
                self.tensors.insert(format!("{name}.bias"), (vec![filters], b));
            }
            None => args.push("bias = false".into()),
        }
        let mut flow = flow;
        flow.stages.push(format!("conv2d({})", args.join(", ")));
        self.output(node, flow, vec![filters, side(h), side(w)])
    }

    fn pool(&mut self, node: &NodeProto, max: bool) -> Result<(), String> {
        let (_, shape) = self.computed(node, 0)?;
        let kernel = square(node, "kernel_shape", ints_attr(node, "kernel_shape"), 0)?;
        let stride = square(node, "strides", ints_attr(node, "strides"), 1)?;
        let padding = square(node, "pads", ints_attr(node, "pads"), 0)?;
        if padding != 0
            || int_attr(node, "ceil_mode", 0) != 0
            || ints_attr(node, "dilations").is_some_and(|d| d.iter().any(|&v| v != 1))
        {
            return Err(unsupported_detail(node, "it pads, dilates or rounds up; nnc's pooling does none of these"));
        }
        let [c, h, w] = shape[..] else {
            return Err(unsupported_detail(node, &format!("it reads values of shape {shape:?}, not images")));
        };
        if kernel == 0 || kernel > h || kernel > w {
            return Err(unsupported_detail(node, "its window does not fit the image"));
        }
        let keyword = if max { "maxpool" } else { "avgpool" };
        let text = if stride == kernel {
            format!("{keyword}({kernel})")
        } else {
            format!("{keyword}({kernel}, stride = {stride})")
        };
        self.stage(node, text, vec![c, (h - kernel) / stride + 1, (w - kernel) / stride + 1])
    }

    fn batchnorm(&mut self, node: &NodeProto) -> Result<(), String> {
        let (_, shape) = self.computed(node, 0)?;
        let name = self.layer_name("batchnorm");
        for (k, what) in [(1, "weight"), (2, "bias"), (3, "running_mean"), (4, "running_var")] {
            let (dims, data) = self.constant(node, k)?;
            if data.len() != shape[0] {
                return Err(unsupported_detail(
                    node,
                    &format!("its {what} has {} values for {} features", data.len(), shape[0]),
                ));
            }
            self.tensors.insert(format!("{name}.{what}"), (vec![dims.iter().product()], data));
        }
        let eps = float_attr(node, "epsilon", 1e-5);
        let momentum = float_attr(node, "momentum", 0.9);
        let mut args = Vec::new();
        if (momentum - 0.9).abs() > f32::EPSILON {
            args.push(format!("momentum = {}", number(momentum)));
        }
        if (eps - 1e-5).abs() > 1e-12 {
            args.push(format!("eps = {eps:e}"));
        }
        let text = if args.is_empty() { "batchnorm".to_string() } else { format!("batchnorm({})", args.join(", ")) };
        self.stage(node, text, shape)
    }

    fn reshape(&mut self, node: &NodeProto) -> Result<(), String> {
        let (_, shape) = self.computed(node, 0)?;
        let (_, target) = self.constant(node, 1)?;
        let total: usize = shape.iter().product();
        let rest: Vec<i64> = target.iter().skip(1).map(|&v| v as i64).collect();
        if target.first().is_none_or(|&b| b != 0.0 && b != -1.0 && rest.contains(&-1)) {
            return Err(unsupported_detail(node, "it reshapes across the batch axis"));
        }
        let known: i64 = rest.iter().filter(|&&v| v > 0).product();
        let dims: Vec<usize> = rest
            .iter()
            .enumerate()
            .map(|(k, &v)| match v {
                -1 if known > 0 => Ok(total / known as usize),
                0 => shape
                    .get(k)
                    .copied()
                    .ok_or_else(|| unsupported_detail(node, "it copies a dimension the input lacks")),
                v if v > 0 => Ok(v as usize),
                _ => Err(unsupported_detail(node, "its target shape is not understood")),
            })
            .collect::<Result<_, _>>()?;
        if dims.iter().product::<usize>() != total {
            return Err(unsupported_detail(
                node,
                &format!("it reshapes {shape:?} to {dims:?}, which does not hold the same values"),
            ));
        }
        if dims.len() == 1 {
            return self.stage(node, "flatten".into(), dims);
        }
        let list: Vec<String> = dims.iter().map(usize::to_string).collect();
        self.stage(node, format!("reshape([{}])", list.join(", ")), dims)
    }

    /// Whether a node reads a formula or a number (so it continues a formula).
    fn in_formula(&self, node: &NodeProto) -> bool {
        node.input.iter().any(|i| matches!(self.values.get(i), Some(Value::Formula { .. } | Value::Constant(..))))
    }

    fn term(&self, node: &NodeProto, k: usize) -> Result<Term, String> {
        match self.value(node, k)? {
            Value::Constant(_, data) if data.len() == 1 => Ok(Term::Number(data[0])),
            Value::Formula { flow, shape, text } => Ok(Term::Of { flow, shape, text }),
            _ => {
                let (flow, shape) = self.computed(node, k)?;
                Ok(Term::Of { flow, shape, text: "x".into() })
            }
        }
    }

    /// An element-wise op in a formula of one value. The formulas `nnc
    /// export` writes for gelu become the layer again; any other formula is
    /// refused where something other than a formula reads it.
    fn formula(&mut self, node: &NodeProto) -> Result<(), String> {
        let op = node.op_type.as_deref().unwrap_or("");
        let mut terms = Vec::new();
        for k in 0..node.input.len() {
            terms.push(self.term(node, k)?);
        }
        let mut of: Option<(Flow, Vec<usize>)> = None;
        let mut texts = Vec::new();
        for term in terms {
            match term {
                Term::Number(v) => texts.push(format!("{v:?}")),
                Term::Of { flow, shape, text } => {
                    if of.as_ref().is_some_and(|(f, _)| *f != flow) {
                        return Err(unsupported_detail(
                            node,
                            "it combines two different values; nnc maps formulas of one",
                        ));
                    }
                    of = Some((flow, shape));
                    texts.push(text);
                }
            }
        }
        let Some((flow, shape)) = of else { return Err(unsupported_detail(node, "it computes on numbers alone")) };
        let text = match (op, texts.as_slice()) {
            ("Div", [a, b]) => format!("({a}/{b})"),
            ("Mul", [a, b]) => format!("({a}*{b})"),
            ("Add", [a, b]) => format!("({a}+{b})"),
            ("Erf", [a]) => format!("erf({a})"),
            ("Tanh", [a]) => format!("tanh({a})"),
            _ => return Err(unsupported_detail(node, "it is not an element-wise op of a formula nnc knows")),
        };
        let (exact, tanh) = gelu_formulas();
        let out = node.output.first().cloned().unwrap_or_default();
        let mut flow = flow;
        if text == exact || text == tanh {
            flow.stages.push(if text == exact { "gelu".into() } else { "gelu(tanh = true)".into() });
            return self.output(node, flow, shape);
        }
        self.values.insert(out, Value::Formula { flow, shape, text });
        Ok(())
    }

    /// `Mul(x, Sigmoid(x))`, as `nnc export` writes silu.
    fn silu(&mut self, node: &NodeProto) -> Result<(), String> {
        let ((a, shape), (b, _)) = (self.computed(node, 0)?, self.computed(node, 1)?);
        let is_sigmoid_of = |s: &Flow, x: &Flow| {
            s.source == x.source
                && s.stages.len() == x.stages.len() + 1
                && s.stages.last().is_some_and(|l| l == "sigmoid")
                && s.stages.starts_with(&x.stages)
        };
        let x = if is_sigmoid_of(&b, &a) {
            a
        } else if is_sigmoid_of(&a, &b) {
            b
        } else {
            return Err(unsupported_detail(node, "nnc maps `Mul` only as silu, x·sigmoid(x)"));
        };
        let mut flow = x;
        flow.stages.push("silu".into());
        self.output(node, flow, shape)
    }

    /// `Gemm` to units·pieces, `Reshape` to [units, pieces], `ReduceMax`
    /// over the pieces: maxout, as `nnc export` writes it.
    fn maxout(&mut self, node: &NodeProto) -> Result<(), String> {
        let (mut flow, shape) = self.computed(node, 0)?;
        let axes = match ints_attr(node, "axes") {
            Some(axes) => axes,
            None => self.constant(node, 1)?.1.iter().map(|&a| a as i64).collect(),
        };
        let [units, pieces] = shape[..] else {
            return Err(unsupported_detail(node, "nnc maps `ReduceMax` only as maxout"));
        };
        let last_two = flow.stages.len().checked_sub(2).map(|k| (flow.stages[k].clone(), flow.stages[k + 1].clone()));
        let dense = self.counters.get("dense").copied().unwrap_or(0);
        let matches = int_attr(node, "keepdims", 1) == 0
            && (axes == [2] || axes == [-1])
            && last_two.is_some_and(|(d, r)| {
                d == format!("dense({})", units * pieces) && r == format!("reshape([{units}, {pieces}])")
            });
        if !matches || dense == 0 {
            return Err(unsupported_detail(
                node,
                "nnc maps `ReduceMax` only as maxout: Gemm, Reshape to [units, pieces], ReduceMax over the pieces",
            ));
        }
        flow.stages.truncate(flow.stages.len() - 2);
        // The dense layer just named becomes the maxout layer.
        self.counters.insert("dense", dense - 1);
        let name = self.layer_name("maxout");
        for what in ["weight", "bias"] {
            if let Some(t) = self.tensors.remove(&format!("dense{dense}.{what}")) {
                self.tensors.insert(format!("{name}.{what}"), t);
            }
        }
        flow.stages.push(format!("maxout({units}, pieces = {pieces})"));
        self.output(node, flow, vec![units])
    }

    /// `Cast` of the raw input to int64: token ids for a `Gather`.
    fn cast(&mut self, node: &NodeProto) -> Result<(), String> {
        let to_int64 = int_attr(node, "to", 0) == DataType::Int64 as i64;
        if !to_int64 || !matches!(self.value(node, 0)?, Value::Input) || self.input_shape.len() != 1 {
            return Err(unsupported_detail(node, "nnc maps `Cast` only of a 1-D input to int64 token ids"));
        }
        self.tokens = true;
        self.values.insert(node.output.first().cloned().unwrap_or_default(), Value::Input);
        Ok(())
    }

    /// `Gather(table, ids)` on token ids: an embedding.
    fn embedding(&mut self, node: &NodeProto) -> Result<(), String> {
        let (dims, table) = self.constant(node, 0)?;
        let [vocab, dim] = dims[..] else { return Err(unsupported_detail(node, "its table is not a matrix")) };
        if !self.tokens || !matches!(self.value(node, 1)?, Value::Input) || int_attr(node, "axis", 0) != 0 {
            return Err(unsupported_detail(node, "nnc maps `Gather` only as an embedding of the input's token ids"));
        }
        let name = self.layer_name("embedding");
        self.tensors.insert(format!("{name}.weight"), (dims.clone(), table));
        let flow = Flow { source: self.input_name.clone(), stages: vec![format!("embedding({vocab}, {dim})")] };
        self.output(node, flow, vec![self.input_shape[0], dim])
    }

    /// Concatenation of constants (a recurrent op's biases).
    fn concat(&mut self, node: &NodeProto) -> Result<(), String> {
        let mut parts = Vec::new();
        for k in 0..node.input.len() {
            parts.push(self.constant(node, k)?);
        }
        let Some((first, _)) = parts.first() else { return Err(unsupported_detail(node, "it has no inputs")) };
        let rank = first.len() as i64;
        let axis = int_attr(node, "axis", 0);
        let axis = if axis < 0 { axis + rank } else { axis };
        let axis = usize::try_from(axis).unwrap_or(usize::MAX);
        let lined_up = axis < first.len()
            && parts.iter().all(|(d, _)| d.len() == first.len() && (0..d.len()).all(|k| k == axis || d[k] == first[k]));
        if !lined_up {
            return Err(unsupported_detail(node, "its constants do not line up"));
        }
        let outer: usize = first[..axis].iter().product();
        let mut dims = first.clone();
        dims[axis] = parts.iter().map(|(d, _)| d[axis]).sum();
        let mut data = Vec::new();
        for o in 0..outer {
            for (d, values) in &parts {
                let inner: usize = d[axis..].iter().product();
                data.extend_from_slice(&values[o * inner..(o + 1) * inner]);
            }
        }
        self.values.insert(node.output.first().cloned().unwrap_or_default(), Value::Constant(dims, data));
        Ok(())
    }

    /// `[N, T, F]` ↔ `[T, N, F]` around a recurrent op.
    fn transpose(&mut self, node: &NodeProto) -> Result<(), String> {
        if ints_attr(node, "perm").as_deref() != Some(&[1, 0, 2]) {
            return Err(unsupported_detail(
                node,
                "nnc maps `Transpose` only as the swap of batch and time around a recurrent layer",
            ));
        }
        let out = node.output.first().cloned().unwrap_or_default();
        let value = match self.value(node, 0)? {
            Value::TimeMajor { flow, shape } => Value::Computed { flow, shape },
            _ => {
                let (flow, shape) = self.computed(node, 0)?;
                if shape.len() != 2 {
                    return Err(unsupported_detail(
                        node,
                        &format!("it transposes values of shape {shape:?}, not sequences"),
                    ));
                }
                Value::TimeMajor { flow, shape }
            }
        };
        self.values.insert(out, value);
        Ok(())
    }

    /// ONNX's LSTM or RNN (forward, default activations) on a time-major
    /// sequence: nnc's `lstm`/`rnn`, its gate blocks put back in PyTorch's order.
    fn recurrent(&mut self, node: &NodeProto, lstm: bool) -> Result<(), String> {
        let Value::TimeMajor { flow, shape } = self.value(node, 0)? else {
            return Err(unsupported_detail(node, "its input is not a sequence transposed to time-major"));
        };
        let plain = attribute(node, "direction").and_then(|a| a.s.as_deref()).is_none_or(|d| d == b"forward")
            && attribute(node, "activations").is_none()
            && attribute(node, "clip").is_none()
            && int_attr(node, "input_forget", 0) == 0
            && int_attr(node, "layout", 0) == 0
            && node.input.iter().skip(4).all(String::is_empty);
        if !plain {
            return Err(unsupported_detail(
                node,
                "nnc maps forward recurrent layers with default activations, no clip, lengths or initial states",
            ));
        }
        let hidden = usize::try_from(int_attr(node, "hidden_size", 0)).unwrap_or(0);
        let gates = if lstm { 4 } else { 1 };
        let (steps, features) = (shape[0], shape[1]);
        let (keyword, width) = (if lstm { "lstm" } else { "rnn" }, gates * hidden);
        let (w_dims, w) = self.constant(node, 1)?;
        let (r_dims, r) = self.constant(node, 2)?;
        let b = match node.input.get(3).filter(|n| !n.is_empty()) {
            Some(_) => self.constant(node, 3)?.1,
            None => vec![0.0; 2 * width],
        };
        if hidden == 0 || w_dims != [1, width, features] || r_dims != [1, width, hidden] || b.len() != 2 * width {
            return Err(unsupported_detail(node, "its weights do not have the shapes of its hidden size and input"));
        }
        // ONNX's blocks i, o, f, c → PyTorch's i, f, g, o.
        let order: &[usize] = if lstm { &[0, 2, 3, 1] } else { &[0] };
        let reorder = |values: &[f32]| -> Vec<f32> {
            let block = values.len() / gates;
            order.iter().flat_map(|&g| values[g * block..(g + 1) * block].iter().copied()).collect()
        };
        let name = self.layer_name(keyword);
        self.tensors.insert(format!("{name}.weight_ih_l0"), (vec![width, features], reorder(&w)));
        self.tensors.insert(format!("{name}.weight_hh_l0"), (vec![width, hidden], reorder(&r)));
        self.tensors.insert(format!("{name}.bias_ih_l0"), (vec![width], reorder(&b[..width])));
        self.tensors.insert(format!("{name}.bias_hh_l0"), (vec![width], reorder(&b[width..])));
        let stage = format!("{keyword}({hidden}");
        for (k, every_step) in [(0, true), (1, false)] {
            if let Some(out) = node.output.get(k).filter(|o| !o.is_empty()) {
                let value = Value::Recurrent { flow: flow.clone(), stage: stage.clone(), steps, hidden, every_step };
                self.values.insert(out.clone(), value);
            }
        }
        Ok(())
    }

    /// The `Squeeze` that picks a recurrent op's output.
    fn squeeze(&mut self, node: &NodeProto) -> Result<(), String> {
        let Value::Recurrent { mut flow, stage, steps, hidden, every_step } = self.value(node, 0)? else {
            return Err(unsupported_detail(node, "nnc maps `Squeeze` only after a recurrent layer"));
        };
        let axes: Vec<i64> = match ints_attr(node, "axes") {
            Some(axes) => axes,
            None => self.constant(node, 1)?.1.iter().map(|&a| a as i64).collect(),
        };
        let out = node.output.first().cloned().unwrap_or_default();
        if every_step && axes == [1] {
            flow.stages.push(format!("{stage}, sequences = true)"));
            self.values.insert(out, Value::TimeMajor { flow, shape: vec![steps, hidden] });
            Ok(())
        } else if !every_step && axes == [0] {
            flow.stages.push(format!("{stage})"));
            self.output(node, flow, vec![hidden])
        } else {
            Err(unsupported_detail(node, "it does not drop the direction axis of a recurrent output"))
        }
    }

    fn finish(mut self, name: &str, output: &str) -> Result<Imported, String> {
        let Some(Value::Computed { mut flow, mut shape }) = self.values.get(output).cloned() else {
            return Err(format!("the graph's output `{output}` is not computed from its input"));
        };
        // A final softmax: a classifier of the scores before it.
        let classes = (flow.stages.last().map(String::as_str) == Some("softmax") && shape.len() == 1).then(|| {
            flow.stages.pop();
            shape[0]
        });
        if flow.stages.is_empty() && !flow.source.contains('(') {
            return Err("the graph computes nothing from its input".to_string());
        }
        let prediction = if classes.is_some() { "logits" } else { "prediction" };
        self.statements.push(format!("{} => {prediction}", pipeline_text(&flow)));
        let dims: Vec<String> = self.input_shape.iter().map(usize::to_string).collect();
        let (target, loss) = match classes {
            Some(k) => (format!("class({k})"), "cross_entropy"),
            None => {
                let out: Vec<String> = shape.drain(..).map(|d| d.to_string()).collect();
                (format!("real[{}]", out.join(", ")), "mse")
            }
        };
        let mut source = format!(
            "// Imported from ONNX by `nnc import`.\nmodel {} {{\n  input {}: {}[{}]\n  target y: {target}\n\n",
            identifier(name),
            self.input_name,
            if self.tokens { "tokens" } else { "" },
            dims.join(", ")
        );
        for statement in &self.statements {
            source += &format!("  {statement}\n");
        }
        source += &format!("  loss = {loss}({prediction}, y)\n");
        match &self.scaler {
            Scaler::Scale(s) => source += &format!("  train {{ scale = {} }}\n", number(*s)),
            Scaler::Standardize { .. } => source += "  train { standardize = true }\n",
            Scaler::None => {}
        }
        source += "}\n";
        let source = crate::format::format_source(&source)
            .map_err(|d| format!("the imported model does not parse: {}", d.message))?;
        Ok(Imported { source, tensors: self.tensors, scaler: self.scaler })
    }
}

/// `source |> stage |> …`; a long pipeline starts a line at each layer
/// with weights, as a person would write it.
fn pipeline_text(flow: &Flow) -> String {
    let long = flow.stages.len() > 4;
    let mut text = flow.source.clone();
    for stage in &flow.stages {
        let weighted = ["dense(", "conv2d(", "batchnorm"].iter().any(|w| stage.starts_with(w));
        text += if long && weighted { "\n    |> " } else { " |> " };
        text += stage;
    }
    text
}

/// `w` `[rows, cols]` as `[cols, rows]`.
fn transpose(w: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut t = vec![0.0; w.len()];
    for r in 0..rows {
        for c in 0..cols {
            t[c * rows + r] = w[r * cols + c];
        }
    }
    t
}

/// The formulas `nnc export` writes for gelu, exact and with tanh, as
/// `Importer::formula` spells them.
fn gelu_formulas() -> (String, String) {
    let half_x_one_plus = |t: String| format!("((x*{:?})*({t}+{:?}))", 0.5f32, 1.0f32);
    let exact = half_x_one_plus(format!("erf((x/{:?}))", std::f32::consts::SQRT_2));
    let inner = format!("((x+(((x*x)*x)*{:?}))*{:?})", 0.044_715f32, (2.0 / std::f32::consts::PI).sqrt());
    (exact, half_x_one_plus(format!("tanh({inner})")))
}
