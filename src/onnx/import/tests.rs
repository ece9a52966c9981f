//! The importer on graphs built by hand, and on a PyTorch export damaged
//! on purpose.

use prost::Message;

use super::proto::{
    AttributeProto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto, TensorProto, TensorShapeProto, TypeProto,
    ValueInfoProto, attribute_proto::AttributeType, tensor_proto::DataType, tensor_shape_proto, type_proto,
};

/// A constant tensor: its name, dimensions and values.
type Constant<'a> = (&'a str, &'a [i64], &'a [f32]);

/// A graph of `inputs` of two features each, `nodes` (op, inputs,
/// output; a `Concat` joins features), constant tensors and `outputs`,
/// as ONNX bytes.
fn graph(inputs: &[&str], nodes: &[(&str, &[&str], &str)], constants: &[Constant], outputs: &[&str]) -> Vec<u8> {
    let dims = [None, Some(2)].map(|d| tensor_shape_proto::Dimension {
        value: d.map(tensor_shape_proto::dimension::Value::DimValue),
        ..Default::default()
    });
    let input = |name: &&str| ValueInfoProto {
        name: Some(name.to_string()),
        r#type: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: Some(DataType::Float as i32),
                shape: Some(TensorShapeProto { dim: dims.to_vec() }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    };
    let node = |&(op, inputs, output): &(&str, &[&str], &str)| NodeProto {
        op_type: Some(op.into()),
        name: Some(output.into()),
        input: inputs.iter().map(|i| i.to_string()).collect(),
        output: vec![output.into()],
        attribute: (op == "Concat")
            .then(|| AttributeProto {
                name: Some("axis".into()),
                i: Some(1),
                r#type: Some(AttributeType::Int as i32),
                ..Default::default()
            })
            .into_iter()
            .collect(),
        ..Default::default()
    };
    let constant = |&(name, dims, values): &Constant| TensorProto {
        name: Some(name.to_string()),
        dims: dims.to_vec(),
        data_type: Some(DataType::Float as i32),
        float_data: values.to_vec(),
        ..Default::default()
    };
    let output = |name: &&str| ValueInfoProto { name: Some(name.to_string()), ..Default::default() };
    ModelProto {
        opset_import: vec![OperatorSetIdProto { domain: None, version: Some(17) }],
        graph: Some(GraphProto {
            node: nodes.iter().map(node).collect(),
            initializer: constants.iter().map(constant).collect(),
            input: inputs.iter().map(input).collect(),
            output: outputs.iter().map(output).collect(),
            ..Default::default()
        }),
        ..Default::default()
    }
    .encode_to_vec()
}

/// The scores of a classifier that are an output beside its
/// probabilities are computed once: one value both outputs predict.
#[test]
fn an_output_read_on_by_another_is_computed_once() {
    let bytes = graph(
        &["x"],
        &[("MatMul", &["x", "w"], "scores"), ("Softmax", &["scores"], "p")],
        &[("w", &[2, 2], &[0.5, -1.0, 2.0, 0.25])],
        &["p", "scores"],
    );
    let imported = super::import(&bytes, "two", None).expect("imports");
    let source = &imported.source;
    assert_eq!(source.matches("dense(").count(), 1, "{source}");
    assert!(source.contains("loss = cross_entropy(h1, h1_target) + mse(h1, h1_target_2)"), "{source}");
    let checked = crate::pipeline::check_source("two.nn", source);
    assert!(!checked.has_errors() && checked.models.len() == 1, "{source}");
}

/// Two graph inputs are two inputs of the model, read from one row: the
/// first scaled by 4, the second not, which one row's preprocessing
/// holds as per-feature divisors (4, 4, 1, 1) from a mean of 0.
#[test]
fn two_inputs_are_two_inputs_of_one_row() {
    let bytes = graph(
        &["a", "b"],
        &[("Div", &["a", "four"], "scaled"), ("Concat", &["scaled", "b"], "both"), ("MatMul", &["both", "w"], "y")],
        &[("four", &[], &[4.0]), ("w", &[4, 1], &[0.5, -1.0, 2.0, 0.25])],
        &["y"],
    );
    let imported = super::import(&bytes, "two", None).expect("imports");
    let source = &imported.source;
    assert!(source.contains("input a: [2]\n  input b: [2]") && source.contains("standardize = true"), "{source}");
    let crate::data::Scaler::Standardize { mean, std } = &imported.scaler else { panic!("per feature") };
    assert_eq!((&mean[..], &std[..]), (&[0.0; 4][..], &[4.0, 4.0, 1.0, 1.0][..]));
    let checked = crate::pipeline::check_source("two.nn", source);
    assert!(!checked.has_errors() && checked.models[0].inputs.len() == 2, "{source}");
}

/// nnc standardizes every regression target of a model or none: a
/// graph taking one regression output out of standard units and not
/// another is refused, naming both.
#[test]
fn outputs_of_which_one_is_unstandardized_are_refused() {
    let bytes = graph(
        &["x"],
        &[("Gemm", &["x", "w", "b"], "z"), ("Mul", &["z", "std"], "spread"), ("Add", &["spread", "mean"], "price")],
        &[("w", &[2, 1], &[0.5, -1.0]), ("b", &[1], &[0.1]), ("std", &[1], &[3.0]), ("mean", &[1], &[100.0])],
        &["price", "z"],
    );
    let err = super::import(&bytes, "mixed", None).err().expect("refused");
    assert!(err.contains("output `price` is taken out of standard units and `z` is not"), "{err}");
}

/// PyTorch's LeNet with its first convolution's bias cut to `keep` values.
fn lenet_with_short_bias(keep: usize) -> Vec<u8> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/onnx/torch_lenet.onnx");
    let mut model = ModelProto::decode(std::fs::read(path).expect("the export").as_slice()).expect("ONNX");
    let graph = model.graph.as_mut().expect("a graph");
    let conv = graph.node.iter().find(|n| n.op_type.as_deref() == Some("Conv")).expect("a convolution");
    let bias_name = conv.input[2].clone();
    let bias = graph.initializer.iter_mut().find(|t| t.name.as_ref() == Some(&bias_name)).expect("its bias");
    bias.dims = vec![keep as i64];
    bias.raw_data.as_mut().expect("raw values").truncate(4 * keep);
    model.encode_to_vec()
}

/// A convolution's bias must hold one value per filter: one of a
/// different length is refused, naming both counts.
#[test]
fn a_convolution_bias_of_the_wrong_length_is_refused() {
    for keep in [0, 5] {
        let err = super::import(&lenet_with_short_bias(keep), "lenet", None).err().expect("refused");
        assert!(err.contains(&format!("its bias has {keep} values for 6 filters")), "{err}");
    }
    assert!(super::import(&lenet_with_short_bias(6), "lenet", None).is_ok());
}

/// Log-probabilities are a classifier's only as its outputs: read on by
/// another node, or beside the scores as a second output, they are refused.
#[test]
fn log_softmax_is_mapped_only_as_a_final_op() {
    let w: Constant = ("w", &[2, 2], &[0.5, -1.0, 2.0, 0.25]);
    let last = graph(&["x"], &[("MatMul", &["x", "w"], "z"), ("LogSoftmax", &["z"], "p")], &[w], &["p"]);
    let source = super::import(&last, "last", None).expect("imports").source;
    assert!(source.contains("target y: class(2)") && source.contains("cross_entropy(logits, y)"), "{source}");
    let read_on = graph(
        &["x"],
        &[("MatMul", &["x", "w"], "z"), ("LogSoftmax", &["z"], "p"), ("Relu", &["p"], "r")],
        &[w],
        &["r"],
    );
    let err = super::import(&read_on, "read_on", None).err().expect("refused");
    assert!(err.contains("nnc maps `LogSoftmax` only as a classifier's final op"), "{err}");
    let twice = graph(&["x"], &[("MatMul", &["x", "w"], "z"), ("LogSoftmax", &["z"], "p")], &[w], &["p", "p"]);
    let err = super::import(&twice, "twice", None).err().expect("refused");
    assert!(err.contains("only as a classifier's final op"), "{err}");
}

/// PyTorch's MLP with every initializer moved into `mlp.onnx.data` in
/// `folder` (as `torch.onnx.export` stores weights), each entry's
/// location, offset and length passed through `entry` first.
fn mlp_with_external_data(folder: &std::path::Path, entry: impl Fn(usize, [String; 3]) -> [String; 3]) -> Vec<u8> {
    use super::proto::{StringStringEntryProto, tensor_proto::DataLocation};
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/onnx/torch_mlp.onnx");
    let mut model = ModelProto::decode(std::fs::read(path).expect("the export").as_slice()).expect("ONNX");
    let mut data = Vec::new();
    for (k, t) in model.graph.as_mut().expect("a graph").initializer.iter_mut().enumerate() {
        let raw = t.raw_data.take().expect("raw values");
        let [location, offset, length] =
            entry(k, ["mlp.onnx.data".into(), data.len().to_string(), raw.len().to_string()]);
        data.extend_from_slice(&raw);
        t.data_location = Some(DataLocation::External as i32);
        t.external_data = [("location", location), ("offset", offset), ("length", length)]
            .into_iter()
            .map(|(key, value)| StringStringEntryProto { key: Some(key.into()), value: Some(value) })
            .collect();
    }
    std::fs::write(folder.join("mlp.onnx.data"), data).expect("written");
    model.encode_to_vec()
}

/// Weights stored beside the model read back as the weights stored in
/// it; a location outside the model's folder, a length that is not the
/// tensor's, a missing file or no folder at all are refused by name.
#[test]
fn weights_stored_beside_the_model_are_read_from_its_folder_only() {
    let folder = tempfile::tempdir().expect("temp dir");
    let folder = folder.path();
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/onnx/torch_mlp.onnx");
    let inside = super::import(&std::fs::read(path).expect("the export"), "mlp", None).expect("imports");
    let beside = mlp_with_external_data(folder, |_, entry| entry);
    let outside = super::import(&beside, "mlp", Some(folder)).expect("imports");
    assert_eq!(outside.source, inside.source);
    assert_eq!(outside.tensors, inside.tensors);
    let err = super::import(&beside, "mlp", None).err().expect("refused");
    assert!(err.contains("stored in `mlp.onnx.data`, outside the model's bytes"), "{err}");
    let refused = |entry: &dyn Fn(usize, [String; 3]) -> [String; 3], why: &str| {
        let bytes = mlp_with_external_data(folder, entry);
        let err = super::import(&bytes, "mlp", Some(folder)).err().expect("refused");
        assert!(err.contains(why), "{why}: {err}");
    };
    for location in ["../mlp.onnx.data", "/etc/passwd", ""] {
        refused(&|_, [_, o, l]| [location.into(), o, l], "outside the model's folder");
    }
    refused(&|k, [at, o, l]| if k == 1 { [at, o, "4".into()] } else { [at, o, l] }, "bytes, and");
    refused(&|k, [at, _, l]| if k == 1 { [at, "99999999".into(), l] } else { [at, "0".into(), l] }, "bytes, and");
    refused(&|_, [_, o, l]| ["missing.data".into(), o, l], "missing.data");
    refused(&|_, [_, o, l]| [".".into(), o, l], "not a regular file");
}

/// A reshape to a shape computed from the batch's (PyTorch's
/// `x.view(x.size(0), 2, -1)`) keeps the batch and reshapes each sample.
#[test]
fn a_shape_computed_from_the_batch_reshapes_each_sample() {
    let bytes = graph(
        &["x"],
        &[
            ("MatMul", &["x", "w"], "z"),
            ("Shape", &["z"], "dims"),
            ("Gather", &["dims", "first"], "batch"),
            ("Unsqueeze", &["batch", "axes"], "batch_list"),
            ("Concat", &["batch_list", "rest"], "target"),
            ("Reshape", &["z", "target"], "r"),
        ],
        &[
            ("w", &[2, 4], &[0.5, -1.0, 2.0, 0.25, 1.0, 1.5, -0.5, 3.0]),
            ("first", &[], &[0.0]),
            ("axes", &[1], &[0.0]),
            ("rest", &[2], &[2.0, -1.0]),
        ],
        &["r"],
    );
    // A shape's parts are joined along its only axis.
    let mut model = ModelProto::decode(bytes.as_slice()).expect("ONNX");
    let nodes = &mut model.graph.as_mut().expect("a graph").node;
    nodes.iter_mut().filter(|n| n.op_type.as_deref() == Some("Concat")).for_each(|n| n.attribute[0].i = Some(0));
    let source = super::import(&model.encode_to_vec(), "view", None).expect("imports").source;
    assert!(source.contains("x |> dense(4, bias = false) |> reshape([2, 2]) => prediction"), "{source}");
    assert!(source.contains("target y: real[2, 2]"), "{source}");
}

/// A pool whose window has another number of axes than its input (a 2-D
/// window over PyTorch's 1-D sequence) is refused, not read as a square.
#[test]
fn a_pool_window_of_other_axes_than_its_input_is_refused() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/onnx/torch_conv1d.onnx");
    let mut model = ModelProto::decode(std::fs::read(path).expect("the export").as_slice()).expect("ONNX");
    let graph = model.graph.as_mut().expect("a graph");
    let pool = graph.node.iter_mut().find(|n| n.op_type.as_deref() == Some("MaxPool")).expect("a pool");
    let kernel = pool.attribute.iter_mut().find(|a| a.name.as_deref() == Some("kernel_shape")).expect("a window");
    assert_eq!(kernel.ints, [2]);
    kernel.ints = vec![2, 2];
    let err = super::import(&model.encode_to_vec(), "sequence", None).err().expect("refused");
    assert!(err.contains("its window's axes are not those of its input [4, 14]"), "{err}");
}

/// A reshape's target is read as ONNX defines it: under `allowzero` a 0 is
/// a size of 0, not a copy, and a negative size other than −1 is no size;
/// both are refused, where reading them leniently would import a graph no
/// engine runs.
#[test]
fn reshape_targets_of_no_size_are_refused() {
    let reshaped = |target: &[f32], allowzero: i64| {
        let bytes = graph(
            &["x"],
            &[("MatMul", &["x", "w"], "z"), ("Reshape", &["z", "target"], "r")],
            &[("w", &[2, 4], &[0.5, -1.0, 2.0, 0.25, 1.0, 1.5, -0.5, 3.0]), ("target", &[3], target)],
            &["r"],
        );
        let mut model = ModelProto::decode(bytes.as_slice()).expect("ONNX");
        let nodes = &mut model.graph.as_mut().expect("a graph").node;
        nodes[1].attribute.push(AttributeProto {
            name: Some("allowzero".into()),
            i: Some(allowzero),
            r#type: Some(AttributeType::Int as i32),
            ..Default::default()
        });
        super::import(&model.encode_to_vec(), "view", None).map(|imported| imported.source)
    };
    let source = reshaped(&[0.0, 2.0, 2.0], 0).expect("0 copies the batch");
    assert!(source.contains("reshape([2, 2])"), "{source}");
    assert!(reshaped(&[-1.0, 2.0, 2.0], 1).is_ok(), "no 0 to read as a size");
    let error = reshaped(&[0.0, 2.0, 2.0], 1).expect_err("a batch of size 0");
    assert!(error.contains("`allowzero` makes a 0 in its target shape a size of 0"), "{error}");
    let error = reshaped(&[-1e9, 2.0, 2.0], 0).expect_err("a negative size");
    assert!(error.contains("reshapes across the batch axis"), "{error}");
}

/// A sequence laid out `[steps, batch, features]` (PyTorch's recurrent
/// layers without `batch_first`) is refused with the way to export it.
#[test]
fn a_time_major_input_is_refused_with_batch_first_as_the_fix() {
    let bytes = graph(&["x"], &[("Relu", &["x"], "r")], &[], &["r"]);
    let mut model = ModelProto::decode(bytes.as_slice()).expect("ONNX");
    let input = &mut model.graph.as_mut().expect("a graph").input[0];
    let Some(type_proto::Value::TensorType(tensor)) = input.r#type.as_mut().and_then(|t| t.value.as_mut()) else {
        panic!("a tensor input");
    };
    let dim = |d: Option<i64>| tensor_shape_proto::Dimension {
        value: d.map(tensor_shape_proto::dimension::Value::DimValue),
        ..Default::default()
    };
    tensor.shape = Some(TensorShapeProto { dim: vec![dim(Some(5)), dim(None), dim(Some(4))] });
    let error = super::import(&model.encode_to_vec(), "steps_first", None).err().expect("refused");
    assert!(error.contains("dimension 1 of input `x` is not a fixed size"), "{error}");
    assert!(error.contains("`batch_first=True`"), "{error}");
}

/// A convolution's `kernel_shape` that is not its weight's, and a `group`
/// that does not split the channels, are refused: ONNX requires both to
/// agree with the weight, and onnxruntime refuses such graphs.
#[test]
fn a_convolution_whose_attributes_disagree_with_its_weight_is_refused() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/onnx/torch_grouped.onnx");
    let changed = |attribute: &str, edit: &dyn Fn(&mut AttributeProto)| {
        let mut model = ModelProto::decode(std::fs::read(path).expect("the export").as_slice()).expect("ONNX");
        let graph = model.graph.as_mut().expect("a graph");
        let conv = graph.node.iter_mut().find(|n| n.op_type.as_deref() == Some("Conv")).expect("a convolution");
        edit(conv.attribute.iter_mut().find(|a| a.name.as_deref() == Some(attribute)).expect("the attribute"));
        super::import(&model.encode_to_vec(), "grouped", None).err().expect("refused")
    };
    let err = changed("kernel_shape", &|a| a.ints = vec![3, 1]);
    assert!(err.contains("its kernel_shape [3, 1] is not its weight's [3, 3]"), "{err}");
    let err = changed("group", &|a| a.i = Some(4));
    assert!(err.contains("its 8 filters of 2 channels in 4 group(s) do not read the input's 4 channels"), "{err}");
    let err = changed("group", &|a| a.i = Some(0));
    assert!(err.contains("in 0 group(s)"), "{err}");
}
