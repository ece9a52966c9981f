"""PyTorch's VGG-16 forward at batch 1, the peer of `nnc bench models/vgg16.nn --batch 1`.

Same network as models/vgg16.nn (13 convolutions 3×3 padding 1 with ReLU,
5 max pools, 3 dense layers), eval mode, inference_mode, 2 threads; prints
the median and best of 5 forwards after 2 warm-up runs. Run it alternately
with nnc on the same machine and compare the ratio:

    python benches/vgg16_torch.py
    nnc bench models/vgg16.nn --batch 1
"""
import time

import torch

torch.set_num_threads(2)


def block(cin, cout, n):
    layers = []
    for i in range(n):
        layers += [torch.nn.Conv2d(cin if i == 0 else cout, cout, 3, padding=1), torch.nn.ReLU()]
    return layers + [torch.nn.MaxPool2d(2)]


net = torch.nn.Sequential(
    *block(3, 64, 2), *block(64, 128, 2), *block(128, 256, 3), *block(256, 512, 3), *block(512, 512, 3),
    torch.nn.Flatten(),
    torch.nn.Linear(25088, 4096), torch.nn.ReLU(), torch.nn.Dropout(0.5),
    torch.nn.Linear(4096, 4096), torch.nn.ReLU(), torch.nn.Dropout(0.5),
    torch.nn.Linear(4096, 1000),
).eval()
x = torch.randn(1, 3, 224, 224)
with torch.inference_mode():
    for _ in range(2):
        net(x)
    times = []
    for _ in range(5):
        t = time.perf_counter()
        net(x)
        times.append(time.perf_counter() - t)
times.sort()
params = sum(p.numel() for p in net.parameters())
print(f"torch vgg16 batch-1 forward: median {times[2] * 1000:.1f} ms, best {times[0] * 1000:.1f} ms, {params} parameters")
