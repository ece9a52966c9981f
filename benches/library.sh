#!/usr/bin/env bash
# Built C libraries vs the JIT vs onnxruntime, interleaved on one machine:
# W4 (the MNIST MLP, batch-1 latency) and LeNet batch-64 inference
# throughput, plus each library's size and create time.
#
#   PYTHON=path/to/python-with-onnxruntime benches/library.sh [ROUNDS] [SECONDS]
#
# PYTHON needs onnxruntime, onnx and numpy (../shared/bench/setup_venv.sh
# makes such an environment). Prints one JSON line per measurement.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-3}
seconds=${2:-3}
python=${PYTHON:-python3}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

cargo build --release --quiet
nnc=target/release/nnc
for model in mnist_mlp lenet; do
    "$nnc" train "models/$model.nn" --epochs 1 --quiet --save "$work/$model.safetensors" >/dev/null
    "$nnc" build "models/$model.nn" --weights "$work/$model.safetensors" -o "$work/$model" --batch 64 >/dev/null
    upper=$(echo "$model" | tr a-z A-Z)
    cc -O2 -DNNC_LIB="$model" -DNNC_LIB_UPPER="$upper" "-DNNC_LIB_HEADER=\"$model.h\"" -I "$work/$model" \
        benches/c/latency.c "$work/$model/lib$model.a" -lpthread -lm -ldl -o "$work/latency_$model"
    echo "{\"library\": \"$model\", \"a_bytes\": $(stat -c %s "$work/$model/lib$model.a"), \"so_bytes\": $(stat -c %s "$work/$model/lib$model.so")}"
done

for round in $(seq "$rounds"); do
    echo "{\"round\": $round, \"library\": \"mnist_mlp\", \"result\": $("$work/latency_mnist_mlp" "$seconds" 64)}"
    echo "{\"round\": $round, \"jit\": \"mnist_mlp\", \"result\": $("$nnc" bench models/mnist_mlp.nn --json --seconds "$seconds")}"
    "$python" benches/ort_peer.py "$seconds"
    echo "{\"round\": $round, \"library\": \"lenet\", \"result\": $("$work/latency_lenet" "$seconds" 64)}"
done
