#!/usr/bin/env python3
"""The Python package against the nnc command on the same model and data.

    python benches/python_overhead.py [ROUNDS] [NNC]

(NNC defaults to target/release/nnc; run with the package installed in
release, `pip install ./python`.) On `models/mnist_mlp.nn` and its 8,000
MNIST training images, interleaving the two, ROUNDS times (default 5):

- `nnc train --epochs 2`: the seconds of each epoch's steps (`train_seconds`
  in `--metrics-json`);
- `Model.fit(epochs=2)`: the same epoch seconds, and the wall time of the
  whole `fit` call per epoch (array checks, the preprocessed copy, the lock
  released and taken again, one report per epoch);
- `Model.predict` on the 2,000 test images repeated to 10,000 rows (rows/s).

Prints the medians.
"""
import gzip
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import nnc

root = Path(__file__).resolve().parents[1]
rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 5
binary = sys.argv[2] if len(sys.argv) > 2 else str(root / "target" / "release" / "nnc")
data = root / "models" / "data"


def idx(name):
    raw = gzip.open(data / name).read()
    dims = raw[3]
    shape = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(dims)]
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)


x = idx("mnist10k-train-images-idx3-ubyte.gz").reshape(-1, 784).astype(np.float32)
y = idx("mnist10k-train-labels-idx1-ubyte.gz").astype(np.int64)
x_test = idx("mnist10k-test-images-idx3-ubyte.gz").reshape(-1, 784).astype(np.float32)
rows = np.ascontiguousarray(np.tile(x_test, (10_000 // len(x_test) + 1, 1))[:10_000])
model_file = root / "models" / "mnist_mlp.nn"

cli_epoch, py_epoch, py_wall, predict_rate = [], [], [], []
with tempfile.TemporaryDirectory() as tmp:
    metrics = Path(tmp) / "m.json"
    for _ in range(rounds):
        subprocess.run([binary, "train", str(model_file), "--epochs", "2", "--quiet", "--metrics-json", str(metrics)],
                       check=True, capture_output=True)
        cli_epoch += [e["train_seconds"] for e in json.loads(metrics.read_text())["epochs"]]
        model = nnc.compile(model_file)
        start = time.perf_counter()
        history = model.fit(x, y, epochs=2, verbose=False)
        py_wall.append((time.perf_counter() - start) / 2)
        py_epoch += [h["seconds"] for h in history]
        start = time.perf_counter()
        model.predict(rows)
        predict_rate.append(len(rows) / (time.perf_counter() - start))

cli, ours, wall = statistics.median(cli_epoch), statistics.median(py_epoch), statistics.median(py_wall)
print(f"mnist_mlp, {len(x)} rows, {rounds} rounds: nnc train {cli:.3f} s/epoch; fit {ours:.3f} s/epoch "
      f"({ours / cli:.3f}×), whole fit call {wall:.3f} s/epoch ({wall / cli:.3f}×)")
print(f"predict on 10,000 rows: {statistics.median(predict_rate):,.0f} rows/s")
