#!/usr/bin/env python3
"""The table of benches/side_by_side.sh: medians over the rounds and nnc's
ratio to the best peer (above 1 means nnc is better, for times and rates
alike). Standard library only.

    python3 benches/side_by_side_table.py RESULTS.jsonl
"""
import collections
import json
import statistics
import sys

rows = [json.loads(line) for line in open(sys.argv[1]) if line.strip()]
cpu = next((r for r in rows if "cpu" in r), {})
values = collections.defaultdict(list)


def add(workload, who, value):
    if value is not None:
        values[(workload, who)].append(float(value))


for r in rows:
    w, who = r.get("w"), r.get("who")
    if w and (w.startswith(("cnn_", "rnn_")) or w == "vgg_train"):
        add(w, who, r.get("train_samples_per_s", r.get("samples_per_s")))
    elif who == "nnc" and w in ("w1", "w2", "w3"):
        add(w, "nnc", r["train_samples_per_s"])
        if w == "w1":
            add("w4", "nnc", r["infer_latency_us"])
    elif who == "nnc" and w == "vgg":
        add("vgg", "nnc", r["infer_latency_us"] / 1000)
    elif w == "fashion":
        add("fashion", who, r["seconds_per_epoch"])
    elif w == "vgg":
        add("vgg", who, r["ms"])
    elif w == "w4":
        add("w4", f"{who} {r.get('variant', '')}".strip(), r.get("latency_us"))
    elif w in ("w1", "w2", "w3"):
        add(w, who, r.get("samples_per_s"))
    elif who == "library":
        add(f"{w} 10k", "nnc library", r.get("samples_per_s", r.get("rows_per_s")))
    elif who == "library_mnist":
        add(f"{w} 10k mnist", "nnc library", r["samples_per_s"])
    elif who == "library_mnist_pre":
        add(f"{w} 10k mnist pre", "nnc library", r["samples_per_s"])
    elif who == "predict":
        add(f"{w} 10k command", "nnc predict", r["rows_per_s"])
    elif who == "ort_script":
        add(f"{w} 10k command", "onnxruntime script", r["rows_per_s"])
    elif who == "onnxruntime" and r.get("intra_op") == 2:
        add("mnist_mlp 10k", "onnxruntime", r["mlp_rows_per_s"])
        add("lenet 10k", "onnxruntime", r["lenet_rows_per_s"])
        for mnist in ("mnist", "mnist pre"):
            add(f"mnist_mlp 10k {mnist}", "onnxruntime", r.get("mlp_mnist_rows_per_s"))
            add(f"lenet 10k {mnist}", "onnxruntime", r.get("lenet_mnist_rows_per_s"))

TABLE = [
    ("w1", "W1 mnist_mlp train b64, samples/s", True),
    ("w2", "W2 mlp_wide train b256, samples/s", True),
    ("w3", "W3 lenet train b64, samples/s", True),
    ("w4", "W4 mnist_mlp b1 latency, µs", False),
    ("fashion", "fashion_cnn, s per epoch (real data)", False),
    ("vgg", "VGG-16 b1 forward, ms", False),
    ("vgg_train", "VGG-16 train b8, samples/s", True),
    ("cnn_digits_cnn", "digits_cnn train b32, samples/s", True),
    ("cnn_conv_autoencoder", "conv_autoencoder train b32, samples/s", True),
    ("cnn_digits_conv1d", "digits_conv1d train b32, samples/s", True),
    ("cnn_global_pool_digits", "global_pool_digits train b32, samples/s", True),
    ("cnn_inception_digits", "inception_digits train b32, samples/s", True),
    ("cnn_separable_digits", "separable_digits train b32, samples/s", True),
    ("cnn_two_inputs_digits", "two_inputs_digits train b32, samples/s", True),
    ("rnn_lstm_digits", "lstm_digits train b32, samples/s", True),
    ("rnn_bigru_digits", "bigru_digits train b32, samples/s", True),
    ("rnn_lstm_mnist", "lstm_mnist train b64, samples/s", True),
    ("mnist_mlp 10k", "mnist_mlp over 10k synthetic rows, rows/s", True),
    ("lenet 10k", "LeNet over 10k synthetic rows, rows/s", True),
    ("mnist_mlp 10k mnist", "mnist_mlp over 10k MNIST rows, rows/s", True),
    ("lenet 10k mnist", "LeNet over 10k MNIST rows, rows/s", True),
    ("mnist_mlp 10k mnist pre", "mnist_mlp over 10k MNIST rows preprocessed by the caller, rows/s", True),
    ("lenet 10k mnist pre", "LeNet over 10k MNIST rows preprocessed by the caller, rows/s", True),
    ("mnist_mlp 10k command", "mnist_mlp over 10k rows, whole command (CSV in and out), rows/s", True),
    ("lenet 10k command", "LeNet over 10k rows, whole command (CSV in and out), rows/s", True),
]
print(f"CPU: {cpu.get('cpu', '?')} (AVX-512: {'yes' if cpu.get('avx512') else 'no'}); medians of {max((r.get('round', 0) for r in rows), default=0)} rounds")
trips = [f"{r['round_trip_ns']:.0f}" for r in sorted(rows, key=lambda r: r.get("round", 0)) if r.get("w") == "core_latency"]
if trips:
    print(f"cross-core round trip by round (ns): {', '.join(trips)}")
print()
print("| workload | nnc | peers | nnc vs best peer |")
print("|---|---|---|---|")
for key, title, higher_is_better in TABLE:
    mine = {who: statistics.median(v) for (w, who), v in values.items() if w == key and who.startswith("nnc")}
    peers = {who: statistics.median(v) for (w, who), v in values.items() if w == key and not who.startswith("nnc")}
    if not mine:
        continue
    best_mine = (max if higher_is_better else min)(mine.values())
    shown = lambda d: ", ".join(f"{who} {v:,.1f}" if v < 100 else f"{who} {v:,.0f}" for who, v in sorted(d.items()))
    ratio = ""
    if peers:
        best_name, best = (max if higher_is_better else min)(peers.items(), key=lambda item: item[1])
        ratio = f"{(best_mine / best if higher_is_better else best / best_mine):.2f}× {best_name}"
    print(f"| {title} | {shown(mine)} | {shown(peers)} | {ratio} |")
