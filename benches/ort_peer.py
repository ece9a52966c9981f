"""onnxruntime on the networks `benches/library.sh` times as built C libraries.

W4: the MNIST MLP (784 → 128 relu → 10), batch-1 latency; LeNet (models/lenet.nn),
batch-64 throughput; both networks' throughput on 10,000 rows in one call
(batch inference, as `nnc predict` and a library's predict run it). The ONNX graphs are written here with onnx.helper (random
weights: speed does not depend on them), run on the CPU provider with all graph
optimisations, sequentially, with 2 and 1 intra-op threads. Latency is the
median of five runs' median per-call times after a second of warm-up, as
../shared/bench/harness.py measures. One JSON line per measurement. Given a
CSV of MNIST rows (a header, then 784 pixel values and a label a line), the
10,000-row runs on two threads are repeated on those rows (`…_mnist_…`), as
the libraries are.

    python benches/ort_peer.py [SECONDS [ROWS.csv]]
"""
import json
import statistics
import sys
import time

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

RNG = np.random.default_rng(7)


def weights(name, *shape):
    return numpy_helper.from_array((RNG.standard_normal(shape) * 0.05).astype(np.float32), name)


def model(nodes, initializers, input_shape):
    graph = helper.make_graph(
        nodes,
        "net",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", *input_shape])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 10])],
        initializers,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()


def dense(i, x, out, inputs, relu=True):
    y = f"d{i}"
    nodes = [helper.make_node("Gemm", [x, f"w{i}", f"b{i}"], [y if relu else "y"], transB=1)]
    if relu:
        nodes.append(helper.make_node("Relu", [y], [f"r{i}"]))
    return nodes, [weights(f"w{i}", out, inputs), weights(f"b{i}", out)]


def mlp():
    n1, w1 = dense(1, "x", 128, 784)
    n2, w2 = dense(2, "r1", 10, 128, relu=False)
    return model(n1 + n2, w1 + w2, [784])


def lenet():
    nodes = [
        helper.make_node("Conv", ["x", "c1", "cb1"], ["a1"], kernel_shape=[5, 5], pads=[2, 2, 2, 2]),
        helper.make_node("Relu", ["a1"], ["r1"]),
        helper.make_node("MaxPool", ["r1"], ["p1"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Conv", ["p1", "c2", "cb2"], ["a2"], kernel_shape=[5, 5]),
        helper.make_node("Relu", ["a2"], ["r2"]),
        helper.make_node("MaxPool", ["r2"], ["p2"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Flatten", ["p2"], ["r0"]),
    ]
    inits = [weights("c1", 6, 1, 5, 5), weights("cb1", 6), weights("c2", 16, 6, 5, 5), weights("cb2", 16)]
    x = "r0"
    for i, (out, inputs, relu) in enumerate([(120, 400, True), (84, 120, True), (10, 84, False)], start=3):
        n, w = dense(i, x, out, inputs, relu)
        nodes += n
        inits += w
        x = f"r{i}"
    return model(nodes, inits, [1, 28, 28])


def session(graph, threads):
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(graph, so, providers=["CPUExecutionProvider"])


def latency_us(call, seconds):
    end = time.perf_counter() + 1.0
    while time.perf_counter() < end:
        call()
    runs = []
    for _ in range(5):
        times, end = [], time.perf_counter() + seconds / 5
        while len(times) < 10 or time.perf_counter() < end:
            t0 = time.perf_counter_ns()
            call()
            times.append(time.perf_counter_ns() - t0)
        runs.append(statistics.median(times) / 1000)
    return statistics.median(runs)


ROWS = 10_000


def mnist_rows(path):
    """ROWS rows of the CSV's first 784 cells (repeated as needed), scaled as the networks' inputs are."""
    pixels = np.loadtxt(path, delimiter=",", skiprows=1, dtype=np.float32)[:, :784] / 255
    return np.resize(pixels, (ROWS, 784)).reshape(ROWS, 1, 28, 28)


def main(seconds, csv):
    x1 = RNG.random((1, 784), dtype=np.float32)
    x64 = RNG.random((64, 1, 28, 28), dtype=np.float32)
    rows = RNG.random((ROWS, 1, 28, 28), dtype=np.float32)
    real = mnist_rows(csv) if csv else None
    for threads in (2, 1):
        mlp_session = session(mlp(), threads)
        w4 = latency_us(lambda: mlp_session.run(None, {"x": x1}), seconds)
        mlp_rows = latency_us(lambda: mlp_session.run(None, {"x": rows.reshape(ROWS, 784)}), seconds)
        lenet_session = session(lenet(), threads)
        per_batch = latency_us(lambda: lenet_session.run(None, {"x": x64}), seconds)
        lenet_rows = latency_us(lambda: lenet_session.run(None, {"x": rows}), seconds)
        result = {"framework": "onnxruntime", "intra_op": threads, "w4_latency_us": round(w4, 2),
                  "lenet_b64_samples_per_s": round(64 / per_batch * 1e6),
                  "mlp_rows_per_s": round(ROWS / mlp_rows * 1e6),
                  "lenet_rows_per_s": round(ROWS / lenet_rows * 1e6)}
        if real is not None and threads == 2:
            mlp_real = latency_us(lambda: mlp_session.run(None, {"x": real.reshape(ROWS, 784)}), seconds)
            lenet_real = latency_us(lambda: lenet_session.run(None, {"x": real}), seconds)
            result |= {"mlp_mnist_rows_per_s": round(ROWS / mlp_real * 1e6),
                       "lenet_mnist_rows_per_s": round(ROWS / lenet_real * 1e6)}
        print(json.dumps(result), flush=True)


if __name__ == "__main__":
    onnx.checker.check_model(onnx.load_from_string(mlp()))
    main(float(sys.argv[1]) if len(sys.argv) > 1 else 3.0, sys.argv[2] if len(sys.argv) > 2 else None)
