"""onnxruntime doing what `nnc predict` does, as one command: read the rows
of a CSV (a header, 784 pixel columns, a trailing label), scale them as the
bundled models' `scale = 255`, run the network (ort_peer.py's graphs, two
intra-op threads) over all rows in one call, and write each row's class and
probabilities to a CSV with six decimals. benches/side_by_side.sh times the
whole process beside `nnc predict`'s, interpreter start-up and imports
included, as nnc's process start and compilation are.

    python benches/ort_predict.py mnist_mlp|lenet ROWS.csv OUT.csv
"""
import sys

import numpy as np

from ort_peer import lenet, mlp, session

PIXELS = 784


def main(network, rows_csv, out_csv):
    rows = np.loadtxt(rows_csv, delimiter=",", skiprows=1, dtype=np.float32, ndmin=2)[:, :PIXELS] / 255
    graph, shape = (mlp(), (PIXELS,)) if network == "mnist_mlp" else (lenet(), (1, 28, 28))
    scores = session(graph, 2).run(None, {"x": rows.reshape(len(rows), *shape)})[0]
    exp = np.exp(scores - scores.max(axis=1, keepdims=True))
    probabilities = exp / exp.sum(axis=1, keepdims=True)
    table = np.column_stack([scores.argmax(axis=1), probabilities])
    header = "class," + ",".join(f"p{c}" for c in range(probabilities.shape[1]))
    np.savetxt(out_csv, table, delimiter=",", header=header, comments="", fmt=["%d"] + ["%.6f"] * 10)


if __name__ == "__main__":
    main(*sys.argv[1:4])
