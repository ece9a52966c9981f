"""The nnc Python package against real data and against the nnc command.

Needs the package installed (`maturin develop` in python/) and the `nnc`
command built (`cargo build`; `NNC_BIN` overrides where it is looked for).
"""

import gzip
import json
import os
import signal
import struct
import subprocess
import threading
import time
from pathlib import Path

import numpy as np
import pytest

import nnc

ROOT = Path(__file__).resolve().parents[2]
MODELS = ROOT / "models"
NNC = os.environ.get("NNC_BIN", str(ROOT / "target" / "debug" / "nnc"))


def read_csv(name):
    """A CSV of models/data as (features, last column)."""
    with gzip.open(MODELS / "data" / name, "rt") as f:
        rows = np.loadtxt(f, delimiter=",", skiprows=1, dtype=np.float32)
    return rows[:, :-1], rows[:, -1]


@pytest.fixture(scope="module")
def digits():
    x_train, y_train = read_csv("digits_train.csv.gz")
    x_test, y_test = read_csv("digits_test.csv.gz")
    return x_train, y_train.astype(np.int64), x_test, y_test.astype(np.int64)


def run_nnc(*args, cwd=None):
    done = subprocess.run([NNC, *map(str, args)], capture_output=True, text=True, cwd=cwd)
    assert done.returncode == 0, done.stderr
    return done.stdout


def read_safetensors(path):
    """Every tensor of a safetensors file: {name: float32 array}."""
    data = Path(path).read_bytes()
    (length,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + length])
    body = data[8 + length :]
    tensors = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        start, end = info["data_offsets"]
        assert info["dtype"] == "F32"
        tensors[name] = np.frombuffer(body[start:end], dtype="<f4").reshape(info["shape"])
    return tensors


def test_the_digits_mlp_trains_from_numpy_arrays(digits):
    x_train, y_train, x_test, y_test = digits
    model = nnc.compile(MODELS / "digits_mlp.nn")
    history = model.fit(x_train, y_train, validation_data=(x_test, y_test), verbose=False)
    assert len(history) == 40 and model.epochs_done == 40
    assert history[-1]["loss"] < history[0]["loss"]
    assert {"epoch", "loss", "lr", "seconds", "val_loss", "val_accuracy"} <= set(history[-1])
    result = model.evaluate(x_test, y_test)
    assert result["rows"] == 359
    assert result["accuracy"] >= 0.96, result
    assert result["accuracy"] == pytest.approx(history[-1]["val_accuracy"])


def test_a_model_of_several_outputs_trains_predicts_and_evaluates(digits, tmp_path):
    """`models/digits_multitask.nn`: a classifier and a reconstruction of
    the input, side by side in each row of `predict`, as `nnc predict`
    writes them from the saved weights; each output's metrics by name."""
    x_train, y_train, x_test, y_test = digits
    model = nnc.compile(MODELS / "digits_multitask.nn")
    assert model.outputs == [("logits", slice(0, 10)), ("reconstruction", slice(10, 74))]
    history = model.fit(x_train, y_train, epochs=3, validation_data=(x_test, y_test), verbose=False)
    assert {"val_loss", "val_logits_loss", "val_logits_accuracy", "val_reconstruction_loss"} <= set(history[-1])
    result = model.evaluate(x_test, y_test)
    assert result["logits_accuracy"] >= 0.9, result
    assert result["loss"] == pytest.approx(result["logits_loss"] + 0.5 * result["reconstruction_loss"], rel=1e-6)
    ours = model.predict(x_test)
    assert ours.shape == (359, 74)
    np.testing.assert_allclose(ours[:, :10].sum(axis=1), 1, atol=1e-5)
    scores = model.predict(x_test, logits=True)
    assert np.array_equal(scores[:, 10:], ours[:, 10:]) and not np.allclose(scores[:, :10], ours[:, :10])
    model.save(tmp_path / "w.safetensors")
    csv = tmp_path / "rows.csv"
    np.savetxt(csv, x_test, fmt="%.9g", delimiter=",", header=",".join(f"f{i}" for i in range(64)), comments="")
    lines = run_nnc("predict", MODELS / "digits_multitask.nn", "--weights", tmp_path / "w.safetensors", "--input", csv, "--full-precision").splitlines()
    header = lines[0].split(",")
    table = np.array([[float(v) for v in line.split(",")] for line in lines[1:]])
    for name, columns in model.outputs:
        theirs = table[:, [i for i, h in enumerate(header) if h.startswith(f"{name}.") and h != f"{name}.class"]]
        np.testing.assert_allclose(ours[:, columns], theirs, rtol=1e-6, atol=1e-7, err_msg=name)
    # Targets are checked column by column: a class id out of range is refused.
    with pytest.raises(ValueError, match="is not a class id"):
        model.evaluate(x_test[:2], np.array([3, 10]))


def test_several_targets_are_checked_column_by_column():
    """Each row's targets side by side: a class id where the class target
    is, any finite number where the real one is."""
    model = nnc.compile("""model two {
  input x: [3]
  target kind: class(3)
  target size: real[1]
  x |> dense(8) |> relu => h
  h |> dense(3) => k
  h |> dense(1) => s
  loss = cross_entropy(k, kind) + mse(s, size)
}""")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(6, 3)).astype(np.float32)
    y = np.stack([np.arange(6) % 3, rng.normal(size=6) * 2.5], axis=1).astype(np.float32)
    assert model.fit(x, y, epochs=1, verbose=False)[0]["loss"] > 0
    assert {"k_accuracy", "s_rmse"} <= set(model.evaluate(x, y))
    assert model.predict(x).shape == (6, 4)
    for (row, column, value, message) in [(1, 0, 5, r"y\[1, 0\] = 5 is not a class id"), (2, 1, np.nan, r"y\[2, 1\] = NaN is not a finite number")]:
        bad = y.copy()
        bad[row, column] = value
        with pytest.raises(ValueError, match=message):
            model.evaluate(x, bad)


def test_training_from_python_equals_nnc_train(digits, tmp_path):
    """Same model, data, seed and epochs: every tensor (weights and Adam's
    state) bit for bit, under the same names as the command's checkpoint."""
    x_train, y_train, _, _ = digits
    run_nnc("train", MODELS / "digits_mlp.nn", "--epochs", 2, "--quiet", "--save", tmp_path / "cli.safetensors")
    model = nnc.compile(MODELS / "digits_mlp.nn")
    model.fit(x_train, y_train, epochs=2, verbose=False)
    ours = model.state_dict()
    theirs = read_safetensors(tmp_path / "cli.safetensors")
    assert sorted(ours) == sorted(theirs)
    assert "dense1.weight" in ours and ours["dense1.weight"].shape == (64, 64)
    for name, value in theirs.items():
        assert np.array_equal(ours[name], value), name


def test_predict_equals_nnc_predict(digits, tmp_path):
    x_train, y_train, x_test, _ = digits
    model = nnc.compile(MODELS / "digits_mlp.nn")
    model.fit(x_train, y_train, epochs=3, verbose=False)
    model.save(tmp_path / "w.safetensors")
    rows = x_test[:50]
    header = ",".join(f"p{i}" for i in range(64))
    np.savetxt(tmp_path / "rows.csv", rows, fmt="%d", delimiter=",", header=header, comments="")
    printed = run_nnc("predict", MODELS / "digits_mlp.nn", "--weights", tmp_path / "w.safetensors", "--input", tmp_path / "rows.csv")
    probabilities = model.predict(rows)
    ours = ["class," + ",".join(f"p{c}" for c in range(10))]
    ours += [f"{p.argmax()}," + ",".join(f"{v:.6f}" for v in p) for p in probabilities]
    assert printed.splitlines() == ours
    assert np.allclose(probabilities.sum(axis=1), 1.0, atol=1e-6)
    logits = model.predict(rows, logits=True)
    assert np.array_equal(logits.argmax(axis=1), probabilities.argmax(axis=1))


def test_regression_predictions_equal_nnc_predict_bit_for_bit(tmp_path):
    """`nnc predict` prints regression values in full (shortest round-trip)."""
    x_train, y_train = read_csv("diabetes_train.csv.gz")
    x_test, _ = read_csv("diabetes_test.csv.gz")
    model = nnc.compile(MODELS / "diabetes.nn")
    model.fit(x_train, y_train, epochs=20, verbose=False)
    model.save(tmp_path / "d.safetensors")
    header = ",".join(f"x{i}" for i in range(x_test.shape[1]))
    np.savetxt(tmp_path / "rows.csv", x_test, fmt="%.9g", delimiter=",", header=header, comments="")
    printed = run_nnc("predict", MODELS / "diabetes.nn", "--weights", tmp_path / "d.safetensors", "--input", tmp_path / "rows.csv")
    values = np.array([float(line) for line in printed.splitlines()[1:]], dtype=np.float32)
    rows = np.loadtxt(tmp_path / "rows.csv", delimiter=",", skiprows=1, dtype=np.float32)
    assert np.array_equal(model.predict(rows)[:, 0], values)


def test_a_shape_mistake_raises_compile_error_with_code_line_and_help():
    source = "model m {\n  input image: [1, 28, 28]\n  target digit: class(10)\n  image |> dense(10) => logits\n  loss = cross_entropy(logits, digit)\n}\n"
    with pytest.raises(nnc.CompileError) as raised:
        nnc.compile(source)
    error = raised.value
    assert "`dense` expects a vector [features]" in str(error)
    assert "insert `flatten` before it" in str(error)
    [d] = error.diagnostics
    assert (d["code"], d["line"], d["column"], d["severity"]) == ("nnc::shape::rank", 4, 12, "error")
    assert d["help"] == "insert `flatten` before it"
    with pytest.raises(ValueError, match="no model `other`"):
        nnc.compile(MODELS / "xor.nn", model="other")


def test_warnings_go_through_the_warnings_module():
    source = "model m {\n  input x: [2]\n  target y: real[1]\n  x |> dense(1) => p\n  x |> dense(3) => spare\n  loss = mse(p, y)\n}\n"
    with pytest.warns(UserWarning, match="value `spare` is never used"):
        nnc.compile(source)


def test_bad_arrays_are_refused_with_the_expected_shape(digits):
    x_train, y_train, _, _ = digits
    model = nnc.compile(MODELS / "digits_mlp.nn")
    with pytest.raises(ValueError, match=r"x has shape \(10, 63\); the model's input `image` is \[64\] per row \(line 6\)"):
        model.predict(x_train[:10, :63])
    with pytest.raises(ValueError, match=r"pass an array of shape \(rows, 64\)"):
        model.fit(x_train[0], y_train, verbose=False)
    bad = x_train[:4].copy()
    bad[2, 5] = np.nan
    with pytest.raises(ValueError, match="holds NaN at row 2, feature 5"):
        model.predict(bad)
    with pytest.raises(ValueError, match="not a class id: ids are whole numbers from 0 to 9"):
        model.fit(x_train[:4], np.array([0, 1, 10, 2]), verbose=False)
    with pytest.raises(ValueError, match=r"y has shape \(3,\) for 4 rows"):
        model.fit(x_train[:4], np.array([0, 1, 2]), verbose=False)
    with pytest.raises(ValueError, match=r"validation_data: x has shape \(2, 63\)"):
        model.fit(x_train[:4], y_train[:4], verbose=False, validation_data=(x_train[:2, :63], y_train[:2]))
    with pytest.raises(ValueError, match="holds text"):
        model.predict(np.array([["a"] * 64]))
    with pytest.raises(ValueError, match="complex numbers"):
        model.predict(np.ones((1, 64), dtype=np.complex64))
    # Other dtypes and layouts are converted once, to the same result.
    model.fit(x_train, y_train, epochs=1, verbose=False)
    as_float32 = model.predict(x_train[:5])
    assert np.array_equal(model.predict(x_train[:5].astype(np.int64)), as_float32)
    assert np.array_equal(model.predict(np.asfortranarray(x_train[:5].astype(np.float64))), as_float32)
    assert np.array_equal(model.predict(x_train[:5].reshape(5, 8, 8).reshape(5, 64)), as_float32)
    # No rows give no rows, each as wide as the model's outputs.
    assert model.predict(x_train[:0]).shape == (0, 10)
    with pytest.raises(ValueError, match="x has no rows"):
        model.fit(x_train[:0], y_train[:0], verbose=False)
    with pytest.raises(ValueError, match="x has no rows"):
        model.evaluate(x_train[:0], y_train[:0])


def test_save_load_predict_round_trips_and_state_dicts_load(digits, tmp_path):
    x_train, y_train, x_test, _ = digits
    model = nnc.compile(MODELS / "digits_mlp.nn")
    model.fit(x_train, y_train, epochs=2, verbose=False)
    model.save(tmp_path / "m.safetensors")
    loaded = nnc.load(MODELS / "digits_mlp.nn", tmp_path / "m.safetensors")
    assert loaded.epochs_done == 2
    assert np.array_equal(loaded.predict(x_test), model.predict(x_test))
    fresh = nnc.compile(MODELS / "digits_mlp.nn")
    fresh.fit(x_train[:32], y_train[:32], epochs=1, verbose=False)  # scale = 16 needs no statistics
    fresh.load_state_dict(model.state_dict())
    assert np.array_equal(fresh.predict(x_test), model.predict(x_test))
    weights = model.state_dict()
    weights["dense1.weight"] = weights["dense1.weight"][:, :10]
    with pytest.raises(ValueError, match="dense1.weight"):
        fresh.load_state_dict(weights)
    # A name the model does not have is refused, as PyTorch's strict loading does.
    weights = model.state_dict()
    weights["dense1.wieght"] = weights["dense1.weight"]
    with pytest.raises(ValueError, match="no tensor named `dense1.wieght`"):
        fresh.load_state_dict(weights)
    with pytest.raises(ValueError, match="holds weights of model `digits_mlp`, not `xor`"):
        nnc.load(MODELS / "xor.nn", tmp_path / "m.safetensors")


def test_a_training_in_a_thread_can_be_stopped_and_the_model_stays_usable(digits):
    x_train, y_train, x_test, y_test = digits
    model = nnc.compile(MODELS / "digits_mlp.nn")
    histories = []
    worker = threading.Thread(target=lambda: histories.append(model.fit(x_train, y_train, epochs=100_000, verbose=False)))
    worker.start()
    # The interpreter's lock is free while the worker trains: this thread runs.
    while model.epochs_done < 2:
        time.sleep(0.01)
    model.stop()
    worker.join(timeout=600)
    assert not worker.is_alive()
    [history] = histories
    assert 2 <= len(history) < 100_000
    assert model.epochs_done == len(history)
    assert model.evaluate(x_test, y_test)["accuracy"] > 0.5


def test_ctrl_c_raises_keyboard_interrupt_after_the_current_step(digits):
    x_train, y_train, x_test, y_test = digits
    model = nnc.compile(MODELS / "digits_mlp.nn")
    model.fit(x_train, y_train, epochs=1, verbose=False)
    before = model.predict(x_test)

    def interrupt_soon():
        time.sleep(0.3)
        signal.raise_signal(signal.SIGINT)

    # Python raises KeyboardInterrupt only where SIGINT has its handler: a
    # process started in the background (`cmd &`, nohup) inherits SIGINT
    # ignored, and the signal would never arrive.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    missed = threading.Event()
    # A missed interrupt fails the test within a minute instead of training on.
    watchdog = threading.Timer(60, lambda: (missed.set(), model.stop()))
    try:
        threading.Thread(target=interrupt_soon).start()
        watchdog.start()
        with pytest.raises(KeyboardInterrupt):
            model.fit(x_train, y_train, epochs=100_000, verbose=False)
    finally:
        watchdog.cancel()
        signal.signal(signal.SIGINT, previous)
    assert not missed.is_set()
    # Epochs finished before the interruption are kept; the model still works.
    assert model.epochs_done >= 1
    after = model.evaluate(x_test, y_test)
    assert np.isfinite(after["loss"])
    assert model.predict(x_test).shape == before.shape


def test_summary_as_text_and_dict():
    model = nnc.compile(MODELS / "lenet.nn")
    assert "conv2d1" in model.summary()
    table = model.summary(as_dict=True)
    assert table["model"] == "lenet" and table["total_params"] == 61706
    assert model.input == ("image", (1, 28, 28), "real")


def test_a_learning_rate_schedule_spans_the_epochs_fit_was_asked_for(digits, tmp_path):
    """Cosine decay over the `epochs` of one `fit` call, as over `nnc train --epochs`."""
    x_train, y_train, _, _ = digits
    source = (MODELS / "digits_mlp.nn").read_text().replace("batch = 32", "batch = 32\n    schedule = cosine(min_lr = 0.0001)")
    model_file = tmp_path / "cosine.nn"
    model_file.write_text(source)
    run_nnc("train", model_file, "--data", "builtin:digits", "--epochs", 3, "--quiet", "--metrics-json", tmp_path / "m.json",
            "--save", tmp_path / "cli.safetensors")
    cli_rates = [e["lr"] for e in json.loads((tmp_path / "m.json").read_text())["epochs"]]
    model = nnc.compile(model_file)
    history = model.fit(x_train, y_train, epochs=3, verbose=False)
    assert [h["lr"] for h in history] == cli_rates and cli_rates[0] > cli_rates[1] > cli_rates[2]
    theirs = read_safetensors(tmp_path / "cli.safetensors")
    ours = model.state_dict()
    for name, value in theirs.items():
        assert np.array_equal(ours[name], value), name


def test_patience_stops_fit_and_keeps_the_best_epoch(digits):
    x_train, y_train, x_test, y_test = digits
    source = """model early {
  input image: [64]
  target digit: class(10)
  image |> dense(512) |> relu |> dense(10) => logits
  loss = cross_entropy(logits, digit)
  train { scale = 16  optimizer = adam(lr = 0.003)  batch = 16  epochs = 80  validation = 0.5  patience = 4  seed = 1 }
}"""
    model = nnc.compile(source)
    with pytest.raises(ValueError, match="`patience = 4` watches the validation loss"):
        model.fit(x_train[:72], y_train[:72], verbose=False)
    history = model.fit(x_train[:72], y_train[:72], validation_data=(x_test, y_test), verbose=False)
    losses = [h["val_loss"] for h in history]
    best = int(np.argmin(losses))
    assert len(history) < 80 and len(history) == best + 1 + 4, losses
    assert model.evaluate(x_test, y_test)["loss"] == pytest.approx(losses[best], rel=1e-6)
