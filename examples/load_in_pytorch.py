"""Load an nnc checkpoint into the equivalent PyTorch model and compare.

    nnc train models/digits_mlp.nn --save digits.safetensors
    nnc predict models/digits_mlp.nn --weights digits.safetensors --input rows.csv
    python examples/load_in_pytorch.py digits.safetensors rows.csv

prints PyTorch's class probabilities for the rows of rows.csv (a header, then
64 pixel values and optionally a label per row) to compare with nnc's.

Needs torch and safetensors (pip install torch safetensors). nnc stores
dense weights as [out, in] under `<layer>.weight`, exactly nn.Linear's layout,
so the tensors load as they are.
"""
import json
import sys

import torch
from safetensors import safe_open
from safetensors.torch import load_file

path = sys.argv[1] if len(sys.argv) > 1 else "digits.safetensors"
tensors = load_file(path)
with safe_open(path, "pt") as f:
    meta = f.metadata()
print("model", meta["model"], "epoch", meta["epoch"], "scaling", meta["scaler"])

# digits_mlp: 64 -> dense(64) -> relu -> dense(10)
net = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.ReLU(), torch.nn.Linear(64, 10))
net[0].weight.data = tensors["dense1.weight"]
net[0].bias.data = tensors["dense1.bias"]
net[2].weight.data = tensors["dense2.weight"]
net[2].bias.data = tensors["dense2.bias"]

# The rows nnc predicts for, scaled as the checkpoint says.
scale = json.loads(meta["scaler"]).get("Scale", 1.0)
with open(sys.argv[2] if len(sys.argv) > 2 else "rows.csv") as f:
    rows = [[float(v) for v in line.split(",")[:64]] for line in f.read().splitlines()[1:] if line]
x = torch.tensor(rows) / scale
probabilities = torch.softmax(net(x), dim=1)
for p in probabilities.detach().numpy():
    print(int(p.argmax()), ",".join(f"{v:.6f}" for v in p))
