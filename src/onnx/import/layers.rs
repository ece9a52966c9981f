//! Single ONNX nodes that are one layer each: Gemm and MatMul (dense), Conv,
//! pooling, BatchNormalization, Reshape, the Add of two values, and the
//! scaling of the raw input.

use super::proto::NodeProto;
use super::shapes::{Dim, batch_shape};
use super::{
    Flow, Importer, Value, attribute, float_attr, int_attr, ints_attr, number, per_axis, square, text_attr,
    unsupported_detail,
};
use crate::data::Scaler;

impl Importer<'_> {
    /// `Div(input, s)` → `scale`; `Sub(input, mean)` then `Div(·, std)` →
    /// standardisation, of input `k`.
    pub(super) fn scaling(&mut self, node: &NodeProto) -> Result<(), String> {
        let Value::Input(k) = self.value(node, 0)? else {
            return Err(unsupported_detail(node, "it scales no raw input"));
        };
        let (dims, data) = self.constant(node, 1)?;
        let out = node.output.first().cloned().unwrap_or_default();
        let features: usize = self.inputs[k].shape.iter().product();
        let reader = self.nodes.iter().find(|n| n.input.first() == Some(&out));
        let scaler = &mut self.inputs[k].scaler;
        match (node.op_type.as_deref(), &scaler, data.len()) {
            (Some("Div"), Scaler::None, 1) => *scaler = Scaler::Scale(data[0]),
            (Some("Sub"), Scaler::None, n)
                if n == features && reader.is_some_and(|r| r.op_type.as_deref() == Some("Div")) =>
            {
                *scaler = Scaler::Standardize { mean: data, std: Vec::new() };
                // The `Div` that follows reads the centred input: still the input for the layers.
                self.values.insert(out, Value::Input(k));
                return Ok(());
            }
            (Some("Div"), Scaler::Standardize { mean, std }, n) if std.is_empty() && n == features => {
                *scaler = Scaler::Standardize { mean: mean.clone(), std: data };
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
        self.values.insert(out, Value::Input(k));
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

    pub(super) fn gemm(&mut self, node: &NodeProto) -> Result<(), String> {
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
    pub(super) fn matmul(&mut self, index: usize, node: &NodeProto) -> Result<(), String> {
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
        if let (Some(add), Some(_), Some(v)) = (next, bias, self.values.get(&out).cloned()) {
            // The bias is in the dense layer: the `Add` passes its value on.
            self.values.insert(add.output.first().cloned().unwrap_or_default(), v);
            self.folded.insert(index + 1);
        }
        Ok(())
    }

    /// The sum of two computed values of one shape: `add(a, b)`.
    pub(super) fn add(&mut self, node: &NodeProto) -> Result<(), String> {
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

    /// `Concat` of two computed values along axis 1 (features or channels):
    /// `concat(a, b)`.
    pub(super) fn join(&mut self, node: &NodeProto) -> Result<(), String> {
        if node.input.len() != 2 {
            return Err(unsupported_detail(node, "it joins other than two values; nnc's `concat` joins two"));
        }
        let (a, a_shape) = self.computed(node, 0)?;
        let (b, b_shape) = self.computed(node, 1)?;
        let rank = a_shape.len() as i64 + 1;
        let axis = int_attr(node, "axis", 0);
        let lined_up = a_shape.len() == b_shape.len() && !a_shape.is_empty() && a_shape[1..] == b_shape[1..];
        if (axis != 1 && axis != 1 - rank) || !lined_up {
            return Err(unsupported_detail(
                node,
                &format!(
                    "it joins {a_shape:?} and {b_shape:?} on axis {axis}; nnc joins features or channels (axis 1)"
                ),
            ));
        }
        let mut shape = a_shape;
        shape[0] += b_shape[0];
        let (a, b) = (self.name_flow(a), self.name_flow(b));
        let flow = Flow { source: format!("concat({}, {})", a.source, b.source), stages: Vec::new() };
        self.output(node, flow, shape)
    }

    pub(super) fn conv(&mut self, node: &NodeProto) -> Result<(), String> {
        let (flow, shape) = self.computed(node, 0)?;
        let (dims, weight) = self.constant(node, 1)?;
        if dims.len() == 3 {
            return self.conv1d(node, (flow, shape), (dims, weight));
        }
        let [filters, channels, kh, kw] = dims[..] else {
            return Err(unsupported_detail(node, "it is not a 1-D or 2-D convolution"));
        };
        if attribute(node, "auto_pad").and_then(|a| a.s.as_deref()).is_some_and(|s| s != b"NOTSET") {
            return Err(unsupported_detail(node, "it pads automatically; export with explicit pads"));
        }
        if kh == 0 || kw == 0 {
            return Err(unsupported_detail(node, "its kernel is empty"));
        }
        let [c, h, w] = shape[..] else {
            return Err(unsupported_detail(node, &format!("it reads values of shape {shape:?}, not images")));
        };
        let groups = conv_groups(node, c, channels, filters)?;
        conv_kernel(node, &[kh, kw])?;
        let stride = per_axis(node, "strides", ints_attr(node, "strides"), 1)?;
        let padding = per_axis(node, "pads", ints_attr(node, "pads"), 0)?;
        let dilation = per_axis(node, "dilations", ints_attr(node, "dilations"), 1)?;
        let kernel = [kh, kw];
        let extent = |a: usize| dilation[a] * (kernel[a] - 1) + 1;
        if stride.contains(&0) || h + 2 * padding[0] < extent(0) || w + 2 * padding[1] < extent(1) {
            return Err(unsupported_detail(node, "its window does not fit the image"));
        }
        let side = |n: usize, a: usize| (n + 2 * padding[a] - extent(a)) / stride[a] + 1;
        let name = self.layer_name("conv2d");
        self.tensors.insert(format!("{name}.weight"), (dims.clone(), weight));
        // `3` when both axes agree, `[3, 5]` (height, width) when not.
        let text = |[a, b]: [usize; 2]| if a == b { a.to_string() } else { format!("[{a}, {b}]") };
        let mut args = vec![filters.to_string(), format!("kernel = {}", text(kernel))];
        for (key, v, default) in [("stride", stride, 1), ("padding", padding, 0), ("dilation", dilation, 1)] {
            if v != [default; 2] {
                args.push(format!("{key} = {}", text(v)));
            }
        }
        if groups > 1 {
            args.push(format!("groups = {groups}"));
        }
        self.conv_bias(node, &name, filters, &mut args)?;
        let mut flow = flow;
        flow.stages.push(format!("conv2d({})", args.join(", ")));
        self.output(node, flow, vec![filters, side(h, 0), side(w, 1)])
    }

    /// A convolution's bias (input 2) as `{name}.bias`, or `bias = false`.
    fn conv_bias(
        &mut self,
        node: &NodeProto,
        name: &str,
        filters: usize,
        args: &mut Vec<String>,
    ) -> Result<(), String> {
        match node.input.get(2).filter(|n| !n.is_empty()) {
            Some(_) => {
                let (_, b) = self.constant(node, 2)?;
                if b.len() != filters {
                    return Err(unsupported_detail(
                        node,
                        &format!("its bias has {} values for {filters} filters", b.len()),
                    ));
                }
                self.tensors.insert(format!("{name}.bias"), (vec![filters], b));
            }
            None => args.push("bias = false".into()),
        }
        Ok(())
    }

    /// `Conv` over sequences `[C, L]` with a weight `[F, C, K]`.
    fn conv1d(
        &mut self,
        node: &NodeProto,
        (flow, shape): (Flow, Vec<usize>),
        (dims, weight): (Vec<usize>, Vec<f32>),
    ) -> Result<(), String> {
        let [filters, channels, kernel] = dims[..] else {
            return Err(unsupported_detail(node, "it is not a 1-D convolution"));
        };
        let [c, length] = shape[..] else {
            return Err(unsupported_detail(node, &format!("it reads values of shape {shape:?}, not sequences")));
        };
        let groups = conv_groups(node, c, channels, filters)?;
        conv_kernel(node, &[kernel])?;
        if kernel == 0 {
            return Err(unsupported_detail(node, "its kernel is empty"));
        }
        let one = |what: &str, default: i64| -> Result<usize, String> {
            match ints_attr(node, what).as_deref() {
                None => Ok(default as usize),
                Some([v]) | Some([v, _])
                    if *v >= 0 && ints_attr(node, what).is_some_and(|all| all.iter().all(|x| x == v)) =>
                {
                    Ok(*v as usize)
                }
                Some(values) => Err(unsupported_detail(node, &format!("its {what} {values:?} differ"))),
            }
        };
        let (stride, padding, dilation) = (one("strides", 1)?, one("pads", 0)?, one("dilations", 1)?);
        let extent = dilation * (kernel - 1) + 1;
        if stride == 0 || length + 2 * padding < extent {
            return Err(unsupported_detail(node, "its window does not fit the sequence"));
        }
        let name = self.layer_name("conv1d");
        self.tensors.insert(format!("{name}.weight"), (dims.clone(), weight));
        let mut args = vec![filters.to_string(), format!("kernel = {kernel}")];
        let settings =
            [("stride", stride, 1), ("padding", padding, 0), ("dilation", dilation, 1), ("groups", groups, 1)];
        for (key, v, default) in settings {
            if v != default {
                args.push(format!("{key} = {v}"));
            }
        }
        self.conv_bias(node, &name, filters, &mut args)?;
        let mut flow = flow;
        flow.stages.push(format!("conv1d({})", args.join(", ")));
        self.output(node, flow, vec![filters, (length + 2 * padding - extent) / stride + 1])
    }

    /// `Clip` (PyTorch's `ReLU6` and `Hardtanh`): nnc's `clip`, or `relu`
    /// for a lower bound of 0 alone. The bounds are inputs from opset 11,
    /// attributes before.
    pub(super) fn clip(&mut self, node: &NodeProto) -> Result<(), String> {
        let (mut flow, shape) = self.computed(node, 0)?;
        let bound = |k: usize, name: &str| -> Result<Option<f32>, String> {
            if let Some(v) = attribute(node, name).and_then(|a| a.f) {
                return Ok(Some(v));
            }
            if node.input.get(k).is_none_or(String::is_empty) {
                return Ok(None);
            }
            match self.constant(node, k)? {
                (dims, values) if dims.is_empty() && values.len() == 1 => Ok(Some(values[0])),
                _ => Err(unsupported_detail(node, &format!("its {name} is not one number"))),
            }
        };
        let text = match (bound(1, "min")?, bound(2, "max")?) {
            (Some(lo), Some(hi)) if lo >= hi => return Err(unsupported_detail(node, "its min is not below its max")),
            (Some(0.0), None) => "relu".to_string(),
            (Some(lo), Some(hi)) => format!("clip(min = {}, max = {})", number(lo), number(hi)),
            (Some(lo), None) => format!("clip(min = {})", number(lo)),
            (None, Some(hi)) => format!("clip(max = {})", number(hi)),
            (None, None) => return self.output(node, flow, shape),
        };
        flow.stages.push(text);
        self.output(node, flow, shape)
    }

    pub(super) fn pool(&mut self, node: &NodeProto, max: bool) -> Result<(), String> {
        let (_, shape) = self.computed(node, 0)?;
        let kernel = square(node, "kernel_shape", ints_attr(node, "kernel_shape"), 0)?;
        let stride = square(node, "strides", ints_attr(node, "strides"), 1)?;
        let padding = square(node, "pads", ints_attr(node, "pads"), 0)?;
        if int_attr(node, "ceil_mode", 0) != 0
            || ints_attr(node, "dilations").is_some_and(|d| d.iter().any(|&v| v != 1))
        {
            return Err(unsupported_detail(node, "it dilates or rounds up; nnc's pooling does neither"));
        }
        if padding > 0 && !max && int_attr(node, "count_include_pad", 0) == 0 {
            return Err(unsupported_detail(
                node,
                "its mean leaves the padding out; nnc's counts it as zeros, as PyTorch's does by default",
            ));
        }
        if 2 * padding > kernel {
            return Err(unsupported_detail(node, "it pads by more than half its window"));
        }
        // A sequence `[c, l]` is pooled along its length.
        let (c, spatial) = match shape[..] {
            [c, h, w] => (c, vec![h + 2 * padding, w + 2 * padding]),
            [c, l] => (c, vec![l + 2 * padding]),
            _ => return Err(unsupported_detail(node, &format!("it reads values of shape {shape:?}, not images"))),
        };
        if ints_attr(node, "kernel_shape").is_some_and(|k| k.len() != spatial.len()) {
            return Err(unsupported_detail(node, &format!("its window's axes are not those of its input {shape:?}")));
        }
        if kernel == 0 || stride == 0 || spatial.iter().any(|&size| kernel > size) {
            return Err(unsupported_detail(node, "its window does not fit the image"));
        }
        let keyword = if max { "maxpool" } else { "avgpool" };
        let mut text = format!("{keyword}({kernel}");
        if stride != kernel {
            text += &format!(", stride = {stride}");
        }
        if padding > 0 {
            text += &format!(", padding = {padding}");
        }
        let out = std::iter::once(c).chain(spatial.iter().map(|size| (size - kernel) / stride + 1)).collect();
        self.stage(node, text + ")", out)
    }

    /// `Resize` by a whole factor to the nearest pixel, as `nn.Upsample` and
    /// nnc export it: the scales (input 2) or the sizes (input 3) given as constants.
    pub(super) fn upsample(&mut self, node: &NodeProto) -> Result<(), String> {
        let (_, shape) = self.computed(node, 0)?;
        let [c, h, w] = shape[..] else {
            return Err(unsupported_detail(node, &format!("it reads values of shape {shape:?}, not images")));
        };
        let given = |k: usize| node.input.get(k).is_some_and(|n| !n.is_empty());
        let factors: Vec<f32> = if given(2) {
            self.constant(node, 2)?.1
        } else if given(3) {
            let sizes = self.constant(node, 3)?.1;
            [1, c, h, w].iter().zip(&sizes).map(|(&from, &to)| to / from as f32).collect()
        } else {
            return Err(unsupported_detail(node, "it has neither scales nor sizes"));
        };
        let whole = |f: f32| f >= 1.0 && f.fract() == 0.0;
        let factor = match factors[..] {
            [1.0, 1.0, fh, fw] if fh == fw && whole(fh) => fh as usize,
            _ => {
                return Err(unsupported_detail(
                    node,
                    &format!("its scales {factors:?} are not [1, 1, f, f] for a whole f"),
                ));
            }
        };
        let mode = text_attr(node, "mode", "nearest");
        let coordinates = text_attr(node, "coordinate_transformation_mode", "half_pixel");
        let rounding = text_attr(node, "nearest_mode", "round_prefer_floor");
        // With a whole factor f, output pixel x reads ⌊x/f⌋ under these pairs of modes.
        let nearest_block = match coordinates.as_str() {
            "asymmetric" => rounding == "floor",
            "half_pixel" | "pytorch_half_pixel" => rounding.starts_with("round_prefer"),
            _ => false,
        };
        if mode != "nearest" || !nearest_block {
            return Err(unsupported_detail(
                node,
                &format!("it resizes by `{mode}` ({coordinates}, {rounding}); nnc's upsample repeats each pixel"),
            ));
        }
        self.stage(node, format!("upsample({factor})"), vec![c, h * factor, w * factor])
    }

    pub(super) fn batchnorm(&mut self, node: &NodeProto) -> Result<(), String> {
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

    /// `LayerNormalization` over every dimension but the batch: `layernorm`.
    pub(super) fn layernorm(&mut self, node: &NodeProto) -> Result<(), String> {
        let (_, shape) = self.computed(node, 0)?;
        let rank = shape.len() as i64 + 1;
        let axis = int_attr(node, "axis", -1);
        if axis != 1 && axis != 1 - rank {
            return Err(unsupported_detail(
                node,
                &format!("it normalises from axis {axis}; nnc's layernorm normalises each sample whole (axis 1)"),
            ));
        }
        if node.input.len() < 3 {
            return Err(unsupported_detail(node, "it has no bias; nnc's layernorm has one"));
        }
        let name = self.layer_name("layernorm");
        for (k, what) in [(1, "weight"), (2, "bias")] {
            let (dims, data) = self.constant(node, k)?;
            if dims != shape {
                return Err(unsupported_detail(node, &format!("its {what} is {dims:?}, the values {shape:?}")));
            }
            self.tensors.insert(format!("{name}.{what}"), (dims, data));
        }
        let eps = float_attr(node, "epsilon", 1e-5);
        let text = if (eps - 1e-5).abs() > 1e-12 { format!("layernorm(eps = {eps:e})") } else { "layernorm".into() };
        self.stage(node, text, shape)
    }

    pub(super) fn reshape(&mut self, node: &NodeProto) -> Result<(), String> {
        let (_, shape) = self.computed(node, 0)?;
        // A shape computed from the batch's (`x.view(x.size(0), -1)`) keeps it.
        let target = self.reshape_target(node)?;
        let fixed = |target: &[Dim]| -> Option<Vec<f32>> {
            target.iter().map(|d| if let Dim::Fixed(v) = d { Some(*v as f32) } else { None }).collect()
        };
        let target: Vec<f32> = batch_shape(&target)
            .or_else(|| fixed(&target))
            .ok_or_else(|| unsupported_detail(node, "its computed shape does not keep the batch first"))?;
        let total: usize = shape.iter().product();
        let rest: Vec<i64> = target.iter().skip(1).map(|&v| v as i64).collect();
        if target.first().is_none_or(|&b| b < -1.0 || (b != 0.0 && b != -1.0 && rest.contains(&-1))) {
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
}

/// A convolution's `kernel_shape`, when given, must be its weight's
/// spatial dimensions, as ONNX requires.
fn conv_kernel(node: &NodeProto, kernel: &[usize]) -> Result<(), String> {
    match ints_attr(node, "kernel_shape") {
        Some(given) if !given.iter().map(|&k| usize::try_from(k).ok()).eq(kernel.iter().map(|&k| Some(k))) => {
            Err(unsupported_detail(node, &format!("its kernel_shape {given:?} is not its weight's {kernel:?}")))
        }
        _ => Ok(()),
    }
}

/// A convolution's `group`: the input's `channels` must be the channels
/// each filter reads (`per_filter`) times the groups, which divide the
/// filters too.
fn conv_groups(node: &NodeProto, channels: usize, per_filter: usize, filters: usize) -> Result<usize, String> {
    let groups = usize::try_from(int_attr(node, "group", 1)).unwrap_or(0);
    if groups == 0 || per_filter * groups != channels || !filters.is_multiple_of(groups) {
        return Err(unsupported_detail(
            node,
            &format!(
                "its {filters} filters of {per_filter} channels in {groups} group(s) do not read the input's \
                 {channels} channels"
            ),
        ));
    }
    Ok(groups)
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
