"""`nnc export` checked by the engines that consume ONNX: onnx's checker and
onnxruntime, against `nnc predict` on the same rows and weights.

Every bundled model (and a few more covering the layers no bundled model
uses) gets weights, biases and batchnorm statistics drawn at random — so
every tensor matters — is exported, checked with `full_check`, run by
onnxruntime on real test rows where the model's data is in the repository
(random rows of the right shape otherwise), and compared with `nnc predict`.
"""

import gzip
import subprocess
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

import nnc
from test_nnc import MODELS, NNC, read_csv

EXTRA = {
    # Token ids through an embedding into an LSTM that returns every state.
    "tokens.nn": """model tokens {
  input ids: tokens[6]
  target y: class(3)
  ids |> embedding(11, 4) |> lstm(5, sequences = true) |> flatten |> dense(3) => p
  loss = cross_entropy(p, y)
}""",
    # Stacked GRUs: ONNX's GRU with PyTorch's reset (linear_before_reset).
    "gru.nn": """model gru {
  input x: seq[7, 3]
  target y: class(3)
  x |> gru(6, sequences = true) |> gru(5) |> dense(3) => p
  loss = cross_entropy(p, y)
}""",
    # Both ways: every step's states side by side, then the last states
    # (the backward direction's after the first step).
    "bidirectional.nn": """model bidirectional {
  input x: seq[6, 3]
  target y: real[2]
  x |> lstm(5, sequences = true, bidirectional = true) |> gru(4, bidirectional = true) |> dense(2) => p
  loss = mse(p, y)
}""",
    "bidirectional_rnn.nn": """model bidirectional_rnn {
  input x: seq[4, 2]
  target y: class(3)
  x |> rnn(3, sequences = true, bidirectional = true) |> flatten |> dense(3) => p
  loss = cross_entropy(p, y)
}""",
    # The activations and shape layers the bundled models do not use, a
    # residual add and an RNN.
    "shapes.nn": """model shapes {
  input x: [12]
  target y: real[2]
  x |> dense(12) |> leaky_relu(alpha = 0.2) => a
  a |> dense(12) |> elu(alpha = 0.7) |> add(a) |> softplus |> reshape([3, 4]) |> rnn(6) |> tanh
    |> dense(8) |> gelu(tanh = true) |> dense(6) |> silu |> dense(6) |> clip(min = -0.5, max = 0.8)
    |> dense(6) |> clip(max = 0.3) |> dense(2, bias = false) => p
  loss = mse(p, y)
}""",
    "conv.nn": """model conv {
  input image: [2, 9, 9]
  target y: binary[3]
  image |> conv2d(4, kernel = 3, stride = 2, padding = 2, dilation = 2, bias = false) |> batchnorm
    |> avgpool(2, stride = 1) |> conv2d(3, kernel = 1) |> gelu |> maxpool(2) |> flatten |> dense(3) |> sigmoid => p
  loss = binary_cross_entropy(p, y)
}""",
    # Grouped and depthwise convolutions (ONNX's `group`).
    "groups.nn": """model groups {
  input image: [4, 7, 7]
  target y: class(3)
  image |> conv2d(6, kernel = 3, padding = 1, groups = 2) |> relu |> conv2d(6, kernel = 3, groups = 6, bias = false)
    |> reshape([6, 25]) |> conv1d(4, kernel = 3, groups = 2) |> flatten |> dense(3) => p
  loss = cross_entropy(p, y)
}""",
    # Padded pooling: ONNX's pads, and a mean that counts them (count_include_pad).
    "pools.nn": """model pools {
  input image: [3, 10, 9]
  target y: class(4)
  image |> conv2d(4, kernel = 3, padding = 1) |> maxpool(3, stride = 2, padding = 1)
    |> avgpool(3, stride = 2, padding = 1) |> avgpool(2, stride = 1, padding = 1) |> flatten |> dense(4) => p
  loss = cross_entropy(p, y)
}""",
    # Pooling along a sequence's length.
    "sequence_pools.nn": """model sequence_pools {
  input signal: [3, 17]
  target y: real[2]
  signal |> conv1d(4, kernel = 3, padding = 1) |> relu |> maxpool(3, stride = 2, padding = 1)
    |> avgpool(3) |> flatten |> dense(2) => p
  loss = mse(p, y)
}""",
}


#: Bundled models with several outputs (one per loss term).
SEVERAL_OUTPUTS = {"digits_multitask.nn"}


def model_files(tmp_path):
    files = sorted(p for p in MODELS.glob("*.nn") if p.name != "vgg16.nn")
    for name, source in EXTRA.items():
        (tmp_path / name).write_text(source)
        files.append(tmp_path / name)
    return files


def idx_images(name):
    raw = gzip.open(MODELS / "data" / name).read()
    dims = raw[3]
    shape = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(dims)]
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape).astype(np.float32)


def rows_for(model, rng, count=16):
    """Real test rows when the repository has data of the model's shape."""
    _, shape, kind = model.input
    features = int(np.prod(shape))
    if kind == "tokens":
        return rng.integers(0, 11, size=(count, features)).astype(np.float32)
    if features == 64:
        return read_csv("digits_test.csv.gz")[0][:count]
    if features == 784:
        return idx_images("mnist10k-test-images-idx3-ubyte.gz").reshape(-1, 784)[:count]
    if features == 10:
        return read_csv("diabetes_test.csv.gz")[0][:count]
    return rng.normal(size=(count, features)).astype(np.float32)


def randomized(model, rows, rng):
    """Every tensor drawn at random, at the scale of a trained network (a
    matrix's entries ~ 1/√fan-in, so scores stay moderate and a
    comparison measures rounding, not its amplification); variances
    positive; the scaler fitted."""
    state = model.state_dict()
    for name, value in state.items():
        fan_in = int(np.prod(value.shape[1:])) if value.ndim > 1 else 10
        drawn = rng.normal(scale=1 / np.sqrt(fan_in), size=value.shape).astype(np.float32)
        state[name] = np.abs(drawn) + 0.5 if name.endswith("running_var") else drawn
    model.load_state_dict(state)
    try:
        model.predict(rows[:1])
    except ValueError:  # a standardizing model learns its scaling from training rows: fit zero epochs
        model.fit(rows, np.zeros(len(rows), dtype=np.float32), epochs=0, verbose=False)


def nnc_predict(model_file, weights, rows, tmp_path):
    csv = tmp_path / "rows.csv"
    header = ",".join(f"f{i}" for i in range(rows.shape[1]))
    np.savetxt(csv, rows, fmt="%.9g", delimiter=",", header=header, comments="")
    done = subprocess.run([NNC, "predict", model_file, "--weights", weights, "--input", csv], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    table = np.array([[float(v) for v in line.split(",")] for line in lines[1:]])
    classifier = lines[0].startswith("class,")
    return (table[:, 1:] if classifier else table), classifier


def export(model_file, weights, out, *extra):
    done = subprocess.run([NNC, "export", model_file, "--weights", weights, "-o", out, *extra], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_every_model_exports_and_onnxruntime_agrees_with_nnc_predict(tmp_path):
    rng = np.random.default_rng(5)
    files = model_files(tmp_path)
    assert len(files) >= 22
    for model_file in files:
        if model_file.name in SEVERAL_OUTPUTS:
            several_outputs(model_file, tmp_path)
            continue
        model = nnc.compile(model_file)
        rows = rows_for(model, rng)
        randomized(model, rows, rng)
        weights = tmp_path / f"{model_file.stem}.safetensors"
        model.save(weights)
        out = tmp_path / f"{model_file.stem}.onnx"
        export(model_file, weights, out)
        onnx.checker.check_model(onnx.load(out), full_check=True)
        session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
        # Several inputs are one row to nnc and one tensor each in the graph.
        given = session.get_inputs()
        assert ",".join(g.name for g in given) == model.input[0], model_file.name
        feeds, start = {}, 0
        for g in given:
            assert g.shape[0] == "batch"
            width = int(np.prod(g.shape[1:]))
            feeds[g.name] = rows[:, start : start + width].reshape((len(rows), *g.shape[1:]))
            start += width
        assert start == rows.shape[1], model_file.name
        ours = session.run(None, feeds)[0].reshape(len(rows), -1)
        expected, classifier = nnc_predict(model_file, weights, rows, tmp_path)
        assert ours.shape == expected.shape, model_file.name
        if classifier:
            assert session.get_outputs()[0].name == "probabilities"
            np.testing.assert_allclose(ours, expected, rtol=0, atol=1e-5, err_msg=model_file.name)
        else:
            np.testing.assert_allclose(ours, expected, rtol=1e-4, atol=1e-5, err_msg=model_file.name)
        round_trip(model_file, out, expected, rows, tmp_path)


def several_outputs(model_file, tmp_path):
    """A model of several outputs, trained an epoch by `nnc train`, exports
    one graph output per loss term, each what `nnc predict` writes in its
    columns (a classifier's probabilities without its class column)."""
    weights = tmp_path / f"{model_file.stem}.safetensors"
    done = subprocess.run([NNC, "train", model_file, "--epochs", "1", "--save", weights], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    out = tmp_path / f"{model_file.stem}.onnx"
    export(model_file, weights, out)
    onnx.checker.check_model(onnx.load(out), full_check=True)
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    rows = read_csv("digits_test.csv.gz")[0][:16]
    ours = session.run(None, {session.get_inputs()[0].name: rows})
    assert [o.name for o in session.get_outputs()] == ["logits_probabilities", "reconstruction"]
    csv = tmp_path / "rows.csv"
    np.savetxt(csv, rows, fmt="%.9g", delimiter=",", header=",".join(f"f{i}" for i in range(64)), comments="")
    predicted = subprocess.run([NNC, "predict", model_file, "--weights", weights, "--input", csv], capture_output=True, text=True)
    assert predicted.returncode == 0, predicted.stderr
    lines = predicted.stdout.splitlines()
    header = lines[0].split(",")
    table = np.array([[float(v) for v in line.split(",")] for line in lines[1:]])
    for name, values in [("logits.p", ours[0]), ("reconstruction.y", ours[1])]:
        columns = [i for i, h in enumerate(header) if h.startswith(name)]
        assert values.shape == (16, len(columns)), name
        np.testing.assert_allclose(values, table[:, columns], rtol=1e-4, atol=1e-5, err_msg=name)
    # Imported back, each graph output is a prediction of its own, as nnc's were.
    imported = tmp_path / "several_imported.nn"
    done = subprocess.run([NNC, "import", out, "-o", imported], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    again = subprocess.run([NNC, "predict", imported, "--weights", imported.with_suffix(".safetensors"), "--input", csv],
                           capture_output=True, text=True)
    assert again.returncode == 0, again.stderr
    assert again.stdout == predicted.stdout


def round_trip(model_file, exported, expected, rows, tmp_path):
    """export → import → the imported model predicts what the original did."""
    imported = tmp_path / f"{model_file.stem}_imported.nn"
    done = subprocess.run([NNC, "import", exported, "-o", imported], capture_output=True, text=True)
    assert done.returncode == 0, f"{model_file.name}: {done.stderr}"
    again, _ = nnc_predict(imported, imported.with_suffix(".safetensors"), rows, tmp_path)
    np.testing.assert_allclose(again, expected, rtol=1e-5, atol=1e-6, err_msg=f"{model_file.name} imported")


def test_a_fixed_batch_an_older_opset_and_bad_requests(tmp_path):
    rng = np.random.default_rng(1)
    model_file = MODELS / "maxout.nn"
    model = nnc.compile(model_file)
    rows = rows_for(model, rng, count=4)
    randomized(model, rows, rng)
    weights = tmp_path / "w.safetensors"
    model.save(weights)
    for opset in ("13", "21"):
        out = tmp_path / f"m{opset}.onnx"
        export(model_file, weights, out, "--opset", opset, "--batch", "4")
        loaded = onnx.load(out)
        onnx.checker.check_model(loaded, full_check=True)
        assert loaded.opset_import[0].version == int(opset)
        session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
        assert session.get_inputs()[0].shape == [4, 64]
        np.testing.assert_allclose(session.run(None, {"image": rows})[0], model.predict(rows), atol=1e-5)
    refused = subprocess.run([NNC, "export", model_file, "--weights", weights, "-o", tmp_path / "x.onnx", "--opset", "9"],
                             capture_output=True, text=True)
    assert refused.returncode == 2 and "opset 9 is not written; choose one from 13 to 21" in refused.stderr
    refused = subprocess.run([NNC, "export", model_file, "--weights", weights, "-o", tmp_path / "x.txt"], capture_output=True, text=True)
    assert refused.returncode == 2 and "`….onnx`" in refused.stderr

    # Graphs nnc cannot take: a newer opset, an output no node computes, a dynamic sample dimension.
    newer = onnx.load(tmp_path / "m21.onnx")
    newer.opset_import[0].version = 25
    several = onnx.load(tmp_path / "m21.onnx")
    several.graph.output.append(onnx.helper.make_tensor_value_info("extra", onnx.TensorProto.FLOAT, [4, 3]))
    dynamic = onnx.load(tmp_path / "m21.onnx")
    dynamic.graph.input[0].type.tensor_type.shape.dim[1].dim_param = "features"
    unknown = onnx.load(tmp_path / "m21.onnx")
    gemm = next(n for n in unknown.graph.node if n.op_type == "Gemm")
    gemm.op_type, gemm.name = "QGemm", "fc"
    for graph, message in [(unknown, "node `fc` (QGemm) cannot be imported: nnc maps only these ONNX ops: LSTM, RNN"),(newer, "opset 25 is newer than the 21 nnc imports"), (several, "the graph's output `extra` is not computed from its input"),
                           (dynamic, "dimension 1 of input `image` is not a fixed size")]:
        path = tmp_path / "bad.onnx"
        onnx.save(graph, path)
        done = subprocess.run([NNC, "import", path, "-o", tmp_path / "bad.nn"], capture_output=True, text=True)
        assert done.returncode == 1 and message in done.stderr, done.stderr
        assert not (tmp_path / "bad.nn").exists()


def test_vgg16_exports_and_runs_in_onnxruntime(tmp_path):
    """VGG-16's 138 M weights (a 553 MB graph). Its 1,000 probabilities of
    random weights are all near 0.001, finer than the 6 decimals `nnc
    predict` prints, so it is compared with `Model.predict` (which the tests
    of the package hold equal to `nnc predict`), relatively."""
    rng = np.random.default_rng(3)
    model_file = MODELS / "vgg16.nn"
    model = nnc.compile(model_file)
    rows = rng.normal(size=(2, 3 * 224 * 224)).astype(np.float32)
    randomized(model, rows, rng)
    weights = tmp_path / "vgg16.safetensors"
    model.save(weights)
    out = tmp_path / "vgg16.onnx"
    export(model_file, weights, out)
    weights.unlink()
    onnx.checker.check_model(str(out), full_check=True)
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    ours = session.run(None, {"image": rows.reshape(2, 3, 224, 224)})[0]
    expected = model.predict(rows)
    assert ours.shape == (2, 1000)
    np.testing.assert_allclose(ours, expected, rtol=1e-4, atol=0)
    assert np.ptp(expected) > 1e-4  # the probabilities differ: the comparison sees the logits


def test_gelu_is_written_as_onnx_gelu_from_opset_20(tmp_path):
    """Below opset 20 gelu is its formula; from 20 ONNX's `Gelu` op, with
    the tanh form as `approximate = "tanh"`. Both run in onnxruntime as
    `nnc predict` does and import back as the same layers."""
    model_file = tmp_path / "gelus.nn"
    model_file.write_text("""model gelus {
  input x: [6]
  target y: real[2]
  x |> dense(8) |> gelu |> dense(8) |> gelu(tanh = true) |> dense(2) => p
  loss = mse(p, y)
}""")
    rng = np.random.default_rng(4)
    model = nnc.compile(model_file)
    rows = rng.normal(scale=2.0, size=(16, 6)).astype(np.float32)
    randomized(model, rows, rng)
    weights = tmp_path / "gelus.safetensors"
    model.save(weights)
    expected, _ = nnc_predict(model_file, weights, rows, tmp_path)
    for opset, gelus in [(17, []), (20, ["none", "tanh"]), (21, ["none", "tanh"])]:
        out = tmp_path / f"gelus{opset}.onnx"
        export(model_file, weights, out, "--opset", str(opset))
        graph = onnx.load(out)
        onnx.checker.check_model(graph, full_check=True)
        written = [n.attribute[0].s.decode() for n in graph.graph.node if n.op_type == "Gelu"]
        assert written == gelus, opset
        assert any(n.op_type == "Erf" for n in graph.graph.node) == (opset < 20), opset
        session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
        ours = session.run(None, {"x": rows})[0]
        np.testing.assert_allclose(ours, expected, rtol=1e-4, atol=1e-5, err_msg=str(opset))
        round_trip(model_file, out, expected, rows, tmp_path)
        imported = (tmp_path / "gelus_imported.nn").read_text()
        assert imported.count("|> gelu") == 2 and "|> gelu(tanh = true)" in imported, imported
