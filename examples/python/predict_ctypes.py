"""Calls a library written by `nnc build` from Python, with ctypes and numpy only.

usage: python predict_ctypes.py DIR NAME rows.csv

DIR holds NAME.h and libNAME.so; rows.csv has a header row and one sample per
row (the model's inputs first; extra columns such as a label are ignored).
Prints the predicted class (or the outputs) of every row.
"""
import ctypes
import re
import sys
from pathlib import Path

import numpy as np


def constants(header: Path, name: str) -> dict:
    """The `#define NAME_… number` constants of the generated header."""
    prefix = name.upper() + "_"
    found = re.findall(rf"#define {prefix}(\w+) (\d+)", header.read_text())
    return {key: int(value) for key, value in found}


def main(folder: str, name: str, csv: str) -> None:
    folder = Path(folder)
    sizes = constants(folder / f"{name}.h", name)
    lib = ctypes.CDLL(str(folder / f"lib{name}.so"))
    create = getattr(lib, f"{name}_create")
    create.restype = ctypes.c_void_p
    predict = getattr(lib, f"{name}_predict")
    floats = np.ctypeslib.ndpointer(dtype=np.float32, flags="C_CONTIGUOUS")
    predict.argtypes = [ctypes.c_void_p, floats, ctypes.c_size_t, floats]
    predict.restype = ctypes.c_int
    destroy = getattr(lib, f"{name}_destroy")
    destroy.argtypes = [ctypes.c_void_p]

    rows = np.loadtxt(csv, delimiter=",", skiprows=1, dtype=np.float32, ndmin=2)
    x = np.ascontiguousarray(rows[:, : sizes["INPUT_SIZE"]])
    out = np.empty((len(x), sizes["OUTPUT_SIZE"]), dtype=np.float32)
    ctx = create()
    if not ctx:
        sys.exit("out of memory")
    try:
        status = predict(ctx, x, len(x), out)
    finally:
        destroy(ctx)
    if status != sizes["OK"]:
        sys.exit(f"{name}_predict failed with code {status}")
    if sizes["CLASSES"] > 0:
        for probabilities in out:
            print(int(probabilities.argmax()), f"{probabilities.max():.6f}")
    else:
        np.savetxt(sys.stdout, out, delimiter=",", fmt="%.9g")


if __name__ == "__main__":
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    main(*sys.argv[1:])
