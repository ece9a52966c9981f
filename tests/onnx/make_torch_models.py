"""Makes the PyTorch exports the import tests read: an MLP and a LeNet-style
CNN (`torch.onnx.export`, opset 17), and an MLP of both gelus at opset 17
(where PyTorch spells gelu out in `Erf`, `Tanh`, `Mul` and `Add` nodes) and
at opset 20 (ONNX's `Gelu` op), a classifier of log-probabilities, an MLP of clipped activations (`ReLU6`,
`Hardtanh`), a CNN of padded pooling (ResNet's
stem: `MaxPool2d(3, 2, 1)`), a 1-D CNN with its pooling, and recurrent networks (LSTM, RNN, GRU) whose zero initial
states PyTorch builds from the batch size when the graph runs (also as PyTorch's
dynamo exporter writes them: `dynamo_*`; bidirectional ones too), grouped and
depthwise convolutions, and a MobileNetV2-style network (inverted residual
blocks: 1×1 expansion, 3×3 depthwise at strides 1 and 2, 1×1 projection,
batch normalisation with running statistics of its own, ReLU6, residual
additions), each with 8 input rows and PyTorch's outputs for them as CSV. Needs torch and onnx:

    python tests/onnx/make_torch_models.py
"""
from pathlib import Path

import numpy as np
import torch
from torch import nn

here = Path(__file__).resolve().parent
torch.manual_seed(0)


class LastStep(nn.Module):
    """A recurrent stack, then a dense layer on its last step: `output[:, -1]`
    or, with `from_state`, a layer's final state `h[layer]` (the last's by default)."""

    def __init__(self, cell, from_state, layer=-1):
        super().__init__()
        self.cell, self.from_state, self.layer = cell, from_state, layer
        self.dense = nn.Linear(cell.hidden_size, 3)

    def forward(self, x):
        output, state = self.cell(x)
        h = state[0] if isinstance(state, tuple) else state
        return self.dense(h[self.layer] if self.from_state else output[:, -1])


def save(name, model, sample_shape, opset=17, probabilities=False, dynamo=False):
    model.eval()
    x = torch.randn(8, *sample_shape)
    if dynamo:  # PyTorch's newer exporter, its weights kept in the one file
        torch.onnx.export(model, (x,), here / f"{name}.onnx", input_names=["x"], output_names=["y"],
                          dynamic_shapes={"x": {0: torch.export.Dim("batch")}}, dynamo=True, external_data=False)
    else:
        torch.onnx.export(model, x[:1], here / f"{name}.onnx", input_names=["x"], output_names=["y"],
                          dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}}, opset_version=opset, dynamo=False)
    with torch.no_grad():
        y = model(x)
        # A classifier ending in log-probabilities: the probabilities nnc prints.
        y = (y.exp() if probabilities else y).numpy()
    flat = x.reshape(8, -1).numpy()
    header = ",".join(f"f{i}" for i in range(flat.shape[1]))
    np.savetxt(here / f"{name}_inputs.csv", flat, fmt="%.9g", delimiter=",", header=header, comments="")
    np.savetxt(here / f"{name}_outputs.csv", y, fmt="%.9g", delimiter=",")


save("torch_mlp", nn.Sequential(nn.Linear(20, 32), nn.ReLU(), nn.Linear(32, 16), nn.Tanh(), nn.Linear(16, 5)), (20,))
lenet = nn.Sequential(
    nn.Conv2d(1, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
    nn.Conv2d(6, 16, 5), nn.BatchNorm2d(16), nn.ReLU(), nn.AvgPool2d(2),
    nn.Flatten(), nn.Linear(400, 120), nn.ReLU(), nn.Dropout(0.5), nn.Linear(120, 84), nn.LeakyReLU(0.1),
    nn.Linear(84, 10), nn.Softmax(dim=1),
)
with torch.no_grad():  # statistics a trained network would have
    lenet[4].running_mean.uniform_(-0.5, 0.5)
    lenet[4].running_var.uniform_(0.5, 2.0)
save("torch_lenet", lenet, (1, 28, 28))
gelus = nn.Sequential(nn.Linear(20, 32), nn.GELU(), nn.Linear(32, 16), nn.GELU(approximate="tanh"), nn.Linear(16, 5))
save("torch_gelu", gelus, (20,))
save("torch_gelu_op", gelus, (20,), opset=20)
save("torch_lstm", LastStep(nn.LSTM(4, 8, num_layers=2, batch_first=True), False), (5, 4))
save("torch_rnn", LastStep(nn.RNN(4, 8, batch_first=True), True), (5, 4))
classifier = nn.Sequential(nn.Linear(20, 32), nn.BatchNorm1d(32), nn.ReLU(), nn.Linear(32, 4), nn.LogSoftmax(dim=1))
with torch.no_grad():
    classifier[1].running_mean.uniform_(-0.5, 0.5)
    classifier[1].running_var.uniform_(0.5, 2.0)
save("torch_log_softmax", classifier, (20,), probabilities=True)
padded = nn.Sequential(
    nn.Conv2d(2, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(3, stride=2, padding=1),
    nn.AvgPool2d(3, stride=2, padding=1), nn.Flatten(), nn.Linear(4 * 3 * 3, 3),
)
save("torch_padded_pools", padded, (2, 10, 10))
clipped = nn.Sequential(
    nn.Linear(20, 32), nn.ReLU6(), nn.Linear(32, 16), nn.Hardtanh(), nn.Linear(16, 16), nn.Hardtanh(-0.5, 2.0),
    nn.Linear(16, 4),
)
save("torch_clips", clipped, (20,))
sequence = nn.Sequential(
    nn.Conv1d(2, 4, 3), nn.ReLU(), nn.MaxPool1d(2), nn.Conv1d(4, 4, 3, padding=1),
    nn.AvgPool1d(3, stride=1, padding=1), nn.Flatten(), nn.Linear(4 * 7, 3),
)
save("torch_conv1d", sequence, (2, 16))
save("torch_gru", LastStep(nn.GRU(4, 8, num_layers=2, batch_first=True), True), (5, 4))
save("torch_lstm_first_state", LastStep(nn.LSTM(4, 8, num_layers=2, batch_first=True), True, layer=0), (5, 4))
save("dynamo_lstm", LastStep(nn.LSTM(4, 8, num_layers=2, batch_first=True), False), (5, 4), dynamo=True)
save("dynamo_gru", LastStep(nn.GRU(4, 8, num_layers=2, batch_first=True), True), (5, 4), dynamo=True)


class EveryStep(nn.Module):
    """A recurrent stack whose every step's output is flattened into a dense layer."""

    def __init__(self, cell, steps):
        super().__init__()
        self.cell = cell
        self.dense = nn.Linear(steps * cell.hidden_size * (2 if cell.bidirectional else 1), 3)

    def forward(self, x):
        return self.dense(self.cell(x)[0].flatten(1))


class BothFinalStates(nn.Module):
    """A bidirectional layer's two final states side by side: `cat([h[-2], h[-1]])`."""

    def __init__(self, cell):
        super().__init__()
        self.cell, self.dense = cell, nn.Linear(2 * cell.hidden_size, 3)

    def forward(self, x):
        h = self.cell(x)[1]
        h = h[0] if isinstance(h, tuple) else h
        return self.dense(torch.cat([h[-2], h[-1]], dim=1))


save("torch_bidirectional", EveryStep(nn.LSTM(4, 8, num_layers=2, batch_first=True, bidirectional=True), 5), (5, 4))
save("torch_bidirectional_states", BothFinalStates(nn.GRU(4, 8, num_layers=2, batch_first=True, bidirectional=True)),
     (5, 4))
save("dynamo_bidirectional", EveryStep(nn.GRU(4, 8, batch_first=True, bidirectional=True), 5), (5, 4), dynamo=True)
grouped = nn.Sequential(
    nn.Conv2d(4, 8, 3, padding=1, groups=2), nn.ReLU(), nn.Conv2d(8, 8, 3, groups=8, bias=False), nn.ReLU(),
    nn.Conv2d(8, 4, 1), nn.Flatten(), nn.Linear(4 * 6 * 6, 3),
)
save("torch_grouped", grouped, (4, 8, 8))
save("torch_grouped_conv1d", nn.Sequential(nn.Conv1d(4, 6, 3, groups=2), nn.Flatten(), nn.Linear(6 * 8, 3)), (4, 10))


def inverted_residual(channels, out, stride, expand=4):
    """MobileNetV2's block: expand 1×1, depthwise 3×3, project 1×1, each normalised."""
    hidden = channels * expand
    return nn.Sequential(
        nn.Conv2d(channels, hidden, 1, bias=False), nn.BatchNorm2d(hidden), nn.ReLU6(),
        nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False), nn.BatchNorm2d(hidden), nn.ReLU6(),
        nn.Conv2d(hidden, out, 1, bias=False), nn.BatchNorm2d(out),
    )


class Residual(nn.Module):
    """x + block(x)."""

    def __init__(self, block):
        super().__init__()
        self.block = block

    def forward(self, x):
        return x + self.block(x)


mobilenet = nn.Sequential(
    nn.Conv2d(1, 8, 3, 2, 1, bias=False), nn.BatchNorm2d(8), nn.ReLU6(),
    Residual(inverted_residual(8, 8, 1)), inverted_residual(8, 12, 2), Residual(inverted_residual(12, 12, 1)),
    nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(12, 3),
)
for norm in (m for m in mobilenet.modules() if isinstance(m, nn.BatchNorm2d)):
    norm.running_mean.uniform_(-0.5, 0.5)
    norm.running_var.uniform_(0.5, 2.0)
    nn.init.uniform_(norm.weight, 0.5, 1.5)
    nn.init.uniform_(norm.bias, -0.2, 0.2)
save("torch_mobilenet", mobilenet, (1, 16, 16))
