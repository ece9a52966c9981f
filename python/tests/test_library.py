"""A library written by `nnc build`, called from Python with ctypes through
examples/python/predict_ctypes.py: built for raw rows, and built with
--preprocessed-input (the example then preprocesses the rows with the
header's shifts and divisors), against `nnc predict` on the same rows and
weights.
"""

import subprocess
import sys

import numpy as np

from test_nnc import MODELS, NNC, ROOT, read_csv


def run(*args):
    done = subprocess.run([*map(str, args)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_the_ctypes_example_predicts_what_nnc_predict_does(tmp_path):
    model = MODELS / "digits_mlp.nn"
    weights = tmp_path / "digits.safetensors"
    run(NNC, "train", model, "--epochs", "1", "--quiet", "--save", weights)
    rows = read_csv("digits_test.csv.gz")[0][:40]
    csv = tmp_path / "rows.csv"
    np.savetxt(csv, rows, fmt="%.9g", delimiter=",", header=",".join(f"f{i}" for i in range(64)), comments="")
    predicted = run(NNC, "predict", model, "--weights", weights, "--input", csv, "--full-precision").splitlines()[1:]
    table = np.array([[float(v) for v in line.split(",")] for line in predicted])
    classes, probabilities = table[:, 0].astype(int), table[:, 1:].max(axis=1)
    assert len(set(classes)) > 1, "rows of several classes"
    for flags in ([], ["--preprocessed-input"]):
        lib = tmp_path / ("preprocessed" if flags else "raw")
        run(NNC, "build", model, "--weights", weights, "-o", lib, *flags)
        printed = [line.split() for line in run(sys.executable, ROOT / "examples/python/predict_ctypes.py", lib, "digits_mlp", csv).splitlines()]
        assert [int(c) for c, _ in printed] == list(classes), flags
        # The example prints six decimals; the library runs these rows one
        # at a time, `nnc predict` in one batch (so the last bit may differ).
        np.testing.assert_allclose([float(p) for _, p in printed], probabilities, atol=1e-6, rtol=0, err_msg=str(flags))
