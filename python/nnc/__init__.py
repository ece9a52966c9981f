"""nnc from Python: compile a `.nn` model, train and predict on numpy arrays.

    import nnc
    model = nnc.compile("models/digits_mlp.nn")
    history = model.fit(x_train, y_train, validation_data=(x_val, y_val))
    probabilities = model.predict(x_test)

Mistakes in the model raise `CompileError` with the same report `nnc check`
prints; warnings go through Python's `warnings` module. Training runs in
compiled code with the interpreter's lock released.
"""

from __future__ import annotations

import os
import sys
import warnings
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Tuple, Union

import numpy as np

from . import _nnc

__all__ = ["CompileError", "Model", "compile", "load", "__version__"]
__version__ = _nnc.__version__


class CompileError(Exception):
    """The model file has mistakes. `str(error)` is the rendered report of
    `nnc check`; `.diagnostics` has one dict per mistake with its `code`,
    `severity`, `message`, `line`, `column`, `label` and `help`."""

    def __init__(self, report: str, diagnostics: List[Dict[str, Any]]):
        super().__init__(report)
        self.diagnostics = diagnostics


_REFUSED_KINDS = {"c": "complex numbers", "O": "Python objects", "U": "text", "S": "bytes", "M": "dates", "m": "time spans", "V": "raw records"}


def _float32(name: str, values: Any) -> np.ndarray:
    """`values` as a C-contiguous float32 array: returned as it is when it
    already is one, converted once otherwise; refused when the conversion
    would lose meaning."""
    array = np.asarray(values)
    if array.dtype.kind in _REFUSED_KINDS:
        raise ValueError(f"{name} holds {_REFUSED_KINDS[array.dtype.kind]} ({array.dtype}); nnc takes numbers")
    if array.ndim == 0:
        raise ValueError(f"{name} is a single number; pass one row per sample")
    return np.ascontiguousarray(array, dtype=np.float32)


class Model:
    """A checked model, its weights and its training state."""

    def __init__(self, core: Any):
        self._core = core
        self.name: str = core.name()
        input_name, shape, kind = core.input()
        #: The input's name, shape of one sample, and kind ("real", "seq", "tokens").
        self.input: Tuple[str, Tuple[int, ...], str] = (input_name, tuple(shape), kind)
        #: Each output's name and its columns in a row of `predict`: one
        #: output takes the whole row; a model of several outputs (loss terms)
        #: has them side by side, in the order of its losses.
        self.outputs: List[Tuple[str, slice]] = [(name, slice(start, end)) for name, start, end in core.outputs()]

    def __repr__(self) -> str:
        return f"<nnc.Model {self.name}: input {self.input[0]} {list(self.input[1])}>"

    def summary(self, as_dict: bool = False) -> Union[str, Dict[str, Any]]:
        """The table of `nnc summary` (per layer: output shape, parameters,
        multiply-adds, activation memory), or its JSON form as a dict."""
        if as_dict:
            import json

            return json.loads(self._core.summary_json())
        return self._core.summary_text()

    def fit(
        self,
        x: Any,
        y: Any = None,
        *,
        epochs: Optional[int] = None,
        batch_size: Optional[int] = None,
        validation_data: Optional[Tuple[Any, Any]] = None,
        callbacks: Optional[Iterable[Callable[[int, Dict[str, float]], Any]]] = None,
        verbose: bool = True,
    ) -> List[Dict[str, float]]:
        """Trains `epochs` more epochs (default: the model's `epochs`) on rows
        `x` (shape `(rows, *input shape)` or `(rows, features)`) and targets
        `y` (class ids, or values of the target's shape; for several
        targets, each row's targets side by side, in the order they are
        declared). Returns one dict
        per epoch: `epoch`, `loss`, `lr`, `seconds`, and `val_loss`,
        `val_accuracy`, … with `validation_data`.

        Each callback is called as `callback(epoch, logs)` after every
        epoch; one that returns `False` stops training. A model with
        `patience = N` stops when the validation loss has not improved for
        N epochs and keeps its best epoch's weights (it needs
        `validation_data`). Ctrl-C raises
        `KeyboardInterrupt` after the current step, and `stop()` from another
        thread ends training after it; either way the weights are those of
        the last finished epoch."""
        default_epochs, _, patience = self._core.defaults()
        epochs = default_epochs if epochs is None else epochs
        if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 0:
            raise ValueError(f"epochs must be a whole number ≥ 0, not {epochs!r}")
        if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1):
            raise ValueError(f"batch_size must be a whole number ≥ 1, not {batch_size!r}")
        if patience is not None and validation_data is None:
            raise ValueError(f"the model's `patience = {patience}` watches the validation loss: pass validation_data")
        validation = None
        if validation_data is not None:
            xv, yv = validation_data
            validation = (_float32("validation x", xv), None if yv is None else _float32("validation y", yv))
        self._core.set_data(_float32("x", x), None if y is None else _float32("y", y), validation)
        x = y = validation = None  # the core holds its own preprocessed copy
        callbacks = list(callbacks or [])
        bar = verbose and sys.stderr.isatty()
        history: List[Dict[str, float]] = []
        total = self._core.epochs_done() + epochs
        best: Optional[Tuple[float, int, Dict[str, np.ndarray]]] = None  # early stopping's (loss, epoch, weights)
        try:
            for _ in range(epochs):
                logs = self._core.train_epoch(total, batch_size, bar)
                if logs is None:  # stop() was called
                    break
                history.append(logs)
                if verbose:
                    shown = "  ".join(f"{k} {v:.4f}" for k, v in logs.items() if k not in ("epoch", "lr", "seconds"))
                    print(f"epoch {logs['epoch']}  {shown}  ({logs['seconds']:.1f} s)", flush=True)
                if any(callback(logs["epoch"], logs) is False for callback in callbacks):
                    break
                if patience is not None:
                    if best is None or logs["val_loss"] < best[0]:
                        best = (logs["val_loss"], logs["epoch"], self.state_dict())
                    elif logs["epoch"] - best[1] >= patience:
                        break
        finally:
            self._core.clear_data()
        if best is not None and history and best[1] != history[-1]["epoch"]:
            self.load_state_dict(best[2])
            if verbose:
                print(f"keeping epoch {best[1]}'s weights (validation loss {best[0]:.4f})", flush=True)
        return history

    def stop(self) -> None:
        """Ends a `fit` running in another thread after its current step."""
        self._core.stop()

    def predict(self, x: Any, *, logits: bool = False) -> np.ndarray:
        """One row of outputs per row of `x`: a classifier's class
        probabilities (as `nnc predict` prints them; raw scores with
        `logits=True`), otherwise the predicted values. A model of several
        outputs returns them side by side, each in its columns of
        `outputs`."""
        return self._core.predict(_float32("x", x), not logits)

    def evaluate(self, x: Any, y: Any = None) -> Dict[str, float]:
        """`loss` and the task's metrics (`accuracy`, or `rmse` and `r2`) on
        rows and their targets, as `nnc eval` reports them; a model of
        several outputs adds each one's own under its name
        (`logits_loss`, `logits_accuracy`, …)."""
        return self._core.evaluate(_float32("x", x), None if y is None else _float32("y", y))

    def save(self, path: Union[str, "os.PathLike[str]"]) -> None:
        """Writes the weights, optimizer state and preprocessing to a
        safetensors checkpoint (atomically); `nnc predict --weights` and
        `nnc.load` read it."""
        self._core.save(os.fspath(path))

    def state_dict(self) -> Dict[str, np.ndarray]:
        """Every parameter and state tensor by its PyTorch name
        (`dense1.weight`, `batchnorm1.running_mean`, …) in PyTorch's layout."""
        return dict(self._core.state_dict())

    def load_state_dict(self, tensors: Mapping[str, Any]) -> None:
        """Loads tensors by name; every parameter must be given, with its shape."""
        self._core.load_state_dict({name: _float32(name, value) for name, value in tensors.items()})

    @property
    def epochs_done(self) -> int:
        """Epochs trained so far (including those of loaded weights)."""
        return self._core.epochs_done()


def compile(path_or_source: Union[str, "os.PathLike[str]"], model: Optional[str] = None) -> Model:
    """Checks a `.nn` file (a path) or `.nn` text and returns its model (the
    first, or the one named `model`). Raises `CompileError` on mistakes;
    warnings are issued as `UserWarning`s."""
    text = os.fspath(path_or_source)
    if "{" not in text and (os.path.exists(text) or text.endswith(".nn")):
        with open(text, encoding="utf-8") as f:
            source, file_name = f.read(), text
    else:
        source, file_name = text, "<source>"
    core, report, diagnostics = _nnc.compile(source, file_name, model)
    if core is None:
        raise CompileError(report, diagnostics)
    for d in diagnostics:
        warnings.warn(d["rendered"], UserWarning, stacklevel=2)
    return Model(core)


def load(model_path: Union[str, "os.PathLike[str]"], weights_path: Union[str, "os.PathLike[str]"], model: Optional[str] = None) -> Model:
    """A model file with the weights of a checkpoint (from `Model.save` or
    `nnc train --save`)."""
    loaded = compile(model_path, model)
    loaded._core.load_weights(os.fspath(weights_path))
    return loaded
