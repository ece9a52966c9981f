"""Train the bundled digits MLP from numpy arrays and use it.

    pip install ./python          # once, from the repository's root
    python examples/python/quickstart.py
"""

import gzip
from pathlib import Path

import numpy as np

import nnc

root = Path(__file__).resolve().parents[2]


def read(name):
    with gzip.open(root / "models" / "data" / name, "rt") as f:
        rows = np.loadtxt(f, delimiter=",", skiprows=1, dtype=np.float32)
    return rows[:, :-1], rows[:, -1].astype(np.int64)


x_train, y_train = read("digits_train.csv.gz")  # 1438 images of 8×8 grey levels
x_test, y_test = read("digits_test.csv.gz")

model = nnc.compile(root / "models" / "digits_mlp.nn")
print(model.summary())
history = model.fit(x_train, y_train, epochs=20, validation_data=(x_test, y_test))
print("test:", model.evaluate(x_test, y_test))

probabilities = model.predict(x_test[:3])
print("first three:", probabilities.argmax(axis=1), "true:", y_test[:3])
model.save("digits.safetensors")  # `nnc predict models/digits_mlp.nn --weights digits.safetensors …` reads it
