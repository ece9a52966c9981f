"""Calls a library written by `nnc build` from Python, with ctypes and numpy only.

usage: python predict_ctypes.py DIR NAME rows.csv

DIR holds NAME.h and libNAME.so; rows.csv has a header row and one sample per
row (the model's inputs first; extra columns such as a label are ignored).
Prints each row's outputs in turn: a classifier's class and its probability,
any other output's values.
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


def arrays(header: Path, name: str, key: str) -> list:
    """The numbers of the header's `NAME_OUTPUT_KEY[n] = {…}` array (one per output)."""
    found = re.search(rf"{name.upper()}_OUTPUT_{key}\[\d+\] = \{{([^}}]*)\}}", header.read_text())
    return [int(v) for v in found.group(1).split(",")]


def main(folder: str, name: str, csv: str) -> None:
    folder = Path(folder)
    header = folder / f"{name}.h"
    sizes = constants(header, name)
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
    outputs = list(zip(*(arrays(header, name, key) for key in ("OFFSETS", "SIZES", "CLASSES"))))
    for row in out:
        printed = []
        for offset, size, classes in outputs:
            values = row[offset : offset + size]
            if classes > 0:
                printed.append(f"{int(values.argmax())} {values.max():.6f}")
            else:
                printed.append(",".join(f"{v:.9g}" for v in values))
        print(" ".join(printed))


if __name__ == "__main__":
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    main(*sys.argv[1:])
