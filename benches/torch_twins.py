"""PyTorch twins of the bundled convolutional and recurrent models, for
training samples/s side by side with `nnc bench models/NAME.nn` (synthetic
data of the model's shapes, the model's optimizer, batch and gradient
clipping, eager mode, 2 threads).

    python benches/torch_twins.py NAME [SECONDS] [BATCH]

NAME is digits_cnn, conv_autoencoder, digits_conv1d, global_pool_digits,
inception_digits, separable_digits, two_inputs_digits, vgg16, lstm_digits,
bigru_digits or lstm_mnist (LeNet and fashion_cnn have their own peers: the
W3 bench script and fashion_torch.py). Prints one JSON line: {"model",
"batch", "samples_per_s", "steps"}.
"""
import json
import sys
import time

import torch

torch.set_num_threads(2)
torch.manual_seed(0)
nn = torch.nn


class Inception(nn.Module):
    """models/inception_digits.nn: a 1×1 and a 3×3 branch joined along the channels."""

    def __init__(self):
        super().__init__()
        self.narrow, self.wide = nn.Conv2d(1, 8, 1), nn.Conv2d(1, 8, 3, padding=1)
        self.head = nn.Sequential(nn.MaxPool2d(2), nn.Flatten(), nn.Linear(16 * 4 * 4, 10))

    def forward(self, x):
        return self.head(torch.cat([nn.functional.elu(self.narrow(x)), torch.relu(self.wide(x))], 1))


class TwoInputs(nn.Module):
    """models/two_inputs_digits.nn: the upper rows through a convolution, the lower through a dense layer."""

    def __init__(self):
        super().__init__()
        self.conv, self.dense, self.head = nn.Conv2d(1, 8, 3, padding=1), nn.Linear(32, 32), nn.Linear(8 * 4 * 8 + 32, 10)

    def forward(self, x):
        upper, lower = x[:, :, :4, :], x[:, :, 4:, :].flatten(1)
        return self.head(torch.cat([torch.relu(self.conv(upper)).flatten(1), torch.relu(self.dense(lower))], 1))


class LastState(nn.Module):
    """A recurrent layer read batch-first, and a linear layer on its last step's output
    (both directions' states, when it reads both ways: as nnc's last state)."""

    def __init__(self, layer, hidden, classes):
        super().__init__()
        self.layer, self.hidden = layer, hidden
        self.head = nn.Linear(hidden * (2 if layer.bidirectional else 1), classes)

    def forward(self, x):
        states, _ = self.layer(x)
        last = states[:, -1, :self.hidden]
        if self.layer.bidirectional:
            last = torch.cat([last, states[:, 0, self.hidden:]], 1)
        return self.head(last)


def vgg16():
    def block(cin, cout, n):
        layers = []
        for i in range(n):
            layers += [nn.Conv2d(cin if i == 0 else cout, cout, 3, padding=1), nn.ReLU()]
        return layers + [nn.MaxPool2d(2)]

    return nn.Sequential(
        *block(3, 64, 2), *block(64, 128, 2), *block(128, 256, 3), *block(256, 512, 3), *block(512, 512, 3),
        nn.Flatten(),
        nn.Linear(25088, 4096), nn.ReLU(), nn.Dropout(0.5),
        nn.Linear(4096, 4096), nn.ReLU(), nn.Dropout(0.5),
        nn.Linear(4096, 1000))


def twin(name):
    """(network, input shape, classes or None for a reconstruction, batch, optimizer factory)."""
    adam = lambda lr: (lambda params: torch.optim.Adam(params, lr=lr))
    digits = (1, 8, 8)
    if name == "digits_cnn":
        net = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 16, 3, padding=2, dilation=2),
                            nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(16 * 4 * 4, 10))
        return net, digits, 10, 32, adam(0.003)
    if name == "conv_autoencoder":
        net = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                            nn.Conv2d(16, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                            nn.Upsample(scale_factor=2), nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(),
                            nn.Upsample(scale_factor=2), nn.Conv2d(16, 1, 3, padding=1), nn.Sigmoid())
        return net, digits, None, 32, adam(0.01)
    if name == "digits_conv1d":
        net = nn.Sequential(nn.Conv1d(8, 32, 3, padding=1), nn.ReLU(), nn.Conv1d(32, 32, 2, stride=2), nn.ReLU(),
                            nn.Flatten(), nn.Linear(32 * 4, 10))
        return net, (8, 8), 10, 32, adam(0.003)
    if name == "global_pool_digits":
        net = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(),
                            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 10))
        return net, digits, 10, 32, adam(0.01)
    if name == "inception_digits":
        return Inception(), digits, 10, 32, adam(0.01)
    if name == "separable_digits":
        net = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 16, 3, padding=1, groups=16),
                            nn.ReLU(), nn.Conv2d(16, 32, 1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                            nn.Linear(32 * 4 * 4, 10))
        return net, digits, 10, 32, adam(0.01)
    if name == "two_inputs_digits":
        return TwoInputs(), digits, 10, 32, adam(0.003)
    if name == "lstm_digits":
        return LastState(nn.LSTM(8, 64, batch_first=True), 64, 10), (8, 8), 10, 32, adam(0.005)
    if name == "bigru_digits":
        return LastState(nn.GRU(8, 32, batch_first=True, bidirectional=True), 32, 10), (8, 8), 10, 32, adam(0.005)
    if name == "lstm_mnist":
        return LastState(nn.LSTM(28, 128, batch_first=True), 128, 10), (28, 28), 10, 64, adam(0.005)
    if name == "vgg16":
        sgd = lambda params: torch.optim.SGD(params, lr=0.01, momentum=0.9, weight_decay=5e-4)
        return vgg16(), (3, 224, 224), 1000, 32, sgd
    raise SystemExit(__doc__)


def main():
    name = sys.argv[1] if len(sys.argv) > 1 else ""
    seconds = float(sys.argv[2]) if len(sys.argv) > 2 else 3.0
    net, shape, classes, batch, optimizer = twin(name)
    batch = int(sys.argv[3]) if len(sys.argv) > 3 else batch
    opt = optimizer(net.parameters())
    # The recurrent models clip the gradients' global norm to 5 (`clip_norm`).
    clip = 5.0 if isinstance(net, LastState) else None
    x = torch.rand(batch, *shape)
    y = torch.randint(0, classes, (batch,)) if classes else None

    def step():
        opt.zero_grad()
        out = net(x)
        loss = nn.functional.cross_entropy(out, y) if classes else nn.functional.mse_loss(out, x)
        loss.backward()
        if clip:
            nn.utils.clip_grad_norm_(net.parameters(), clip)
        opt.step()

    for _ in range(2 if name == "vgg16" else 20):
        step()
    steps, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds or steps < 3:
        step()
        steps += 1
    rate = steps * batch / (time.perf_counter() - start)
    print(json.dumps({"model": name, "batch": batch, "samples_per_s": round(rate, 3), "steps": steps}))


if __name__ == "__main__":
    main()
