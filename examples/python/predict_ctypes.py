"""Calls a library written by `nnc build` from Python, with ctypes and numpy only.

usage: python predict_ctypes.py DIR NAME rows.csv

DIR holds NAME.h and libNAME.so; rows.csv has a header row and one sample per
row (the model's inputs first, raw; extra columns such as a label are
ignored). A library built with --preprocessed-input gets the rows
preprocessed here, with the header's shifts and divisors. Prints each row's
outputs in turn: a classifier's class and its probability, any other
output's values.
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


def arrays(header: Path, name: str, key: str, number=int) -> list:
    """The numbers of the header's `NAME_KEY[n] = {…}` array."""
    found = re.search(rf"{name.upper()}_{key}\[\d+\] = \{{([^}}]*)\}}", header.read_text())
    # Float literals end in `f`; the last value may be followed by a comma.
    return [number(v.strip().rstrip("f")) for v in found.group(1).split(",") if v.strip()]


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
    if sizes["INPUT_PREPROCESSED"]:
        # float32 arithmetic, as the header says: the same bits as nnc's.
        shift, divisor = (np.array(arrays(header, name, f"INPUT_{key}", float), np.float32) for key in ("SHIFT", "DIVISOR"))
        x = np.ascontiguousarray((x - shift) / divisor)
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
    outputs = list(zip(*(arrays(header, name, f"OUTPUT_{key}") for key in ("OFFSETS", "SIZES", "CLASSES"))))
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
