#!/usr/bin/env bash
# nnc against PyTorch, JAX and onnxruntime on this machine, interleaved,
# ROUNDS rounds (default 3), then a table of medians and ratios:
#
#   W1–W3    training samples/s (`nnc bench` vs the peers' bench scripts)
#   W4       batch-1 latency of the MNIST MLP
#   fashion  seconds per epoch of models/fashion_cnn.nn on the real
#            Fashion-MNIST (`nnc train --epochs 1`) vs its PyTorch twin
#   VGG-16   batch-1 forward, ms
#   the other bundled convolutional models and the recurrent ones:
#            training samples/s at their batch (`nnc bench`) against their
#            PyTorch twins (benches/torch_twins.py), and VGG-16's at batch 8
#   the cross-core round trip at the start of each round (the host
#            places a VM's vCPUs near or far apart from minute to minute)
#   batch inference: mnist_mlp and LeNet over 10,000 rows, through a
#            library `nnc build` wrote (one predict call) against
#            onnxruntime on the same networks (one run call), on synthetic
#            rows in [0, 1) and on the MNIST rows (raw, the library
#            preprocessing them; and preprocessed before the timing, as
#            onnxruntime gets them, by a library built with
#            --preprocessed-input), and as whole
#            commands, CSV in and CSV out: `nnc predict` against
#            benches/ort_predict.py (numpy's CSV reader, onnxruntime)
#
#   benches/side_by_side.sh PEERS [ROUNDS]
#
# PEERS is a writable copy of ../shared/bench after its setup_venv.sh (torch,
# jax, onnxruntime); Fashion-MNIST is the Debian package
# dataset-fashion-mnist; the 10,000 MNIST rows are the CSVs of
# ${SHARED:-../shared}/data/mnist10k. Raw results go to $OUT, a new file
# (default: a temporary .jsonl, named at the end);
# benches/side_by_side_table.py prints the table.
set -euo pipefail
cd "$(dirname "$0")/.."
peers=$(cd "$1" && pwd)
rounds=${2:-3}
py=$peers/.venv/bin/python
if [ -n "${OUT:-}" ] && [ -e "$OUT" ]; then
    echo "side_by_side.sh: $OUT exists; name a new file (the rounds of two runs would mix in one table)" >&2
    exit 2
fi
out=${OUT:-$(mktemp --suffix .jsonl)}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export BENCH_MIN_S=${BENCH_MIN_S:-2} BENCH_REPEATS=${BENCH_REPEATS:-3}
# Repeats disturbed by other processes run again, on both sides alike (the
# peers' harness reads BENCH_FOREIGN_MAX, 0.1 cores unless set).
foreign_max=${BENCH_FOREIGN_MAX:-0.10}

cargo build --release --quiet
nnc=$PWD/target/release/nnc
lscpu | sed -n 's/^Model name: *//p' | head -1 | python3 -c 'import json,sys; print(json.dumps({"cpu": sys.stdin.read().strip(), "avx512": "'"$(grep -c avx512f /proc/cpuinfo)"'" != "0"}))' >>"$out"

# record ROUND WHO WORKLOAD: each JSON object on stdin, tagged, appended to $out.
record() {
    python3 -c '
import json, sys
for line in sys.stdin.read().splitlines():
    if line.strip().startswith("{"):
        d = json.loads(line); d.update(round=int(sys.argv[1]), who=sys.argv[2], w=sys.argv[3]); print(json.dumps(d))
' "$@" >>"$out"
}
# peer FRAMEWORK WORKLOAD ROUND: the peers' own bench script.
peer() {
    local t
    t=$(mktemp)
    (cd "$peers" && BENCH_OUT=$t "$py" "bench_$1.py" "$2" >/dev/null 2>&1) || true
    record "$3" "$1" "$2" <"$t"
    rm -f "$t"
}
# mine WORKLOAD ROUND MODEL BATCH: `nnc bench`.
mine() {
    "$nnc" bench "models/$3.nn" --batch "$4" --json --seconds "$BENCH_MIN_S" --foreign-max "$foreign_max" |
        tr -d '\n' | record "$2" nnc "$1"
}
# elapsed COMMAND…: wall seconds of a command.
elapsed() {
    local t0
    t0=$(date +%s.%N)
    "$@" >/dev/null
    echo "$(date +%s.%N) - $t0" | bc
}

# Batch inference: 10,000 MNIST rows as CSV, and each network trained for an
# epoch, built as a library and linked to the timing program.
rows=$work/mnist10k.csv
mnist=${SHARED:-../shared}/data/mnist10k
{ zcat "$mnist/mnist10k_train.csv.gz"; zcat "$mnist/mnist10k_test.csv.gz" | tail -n +2; } >"$rows"
for model in mnist_mlp lenet; do
    "$nnc" train "models/$model.nn" --epochs 1 --quiet --save "$work/$model.safetensors" >/dev/null
    upper=$(echo "$model" | tr a-z A-Z)
    for build in "$model" "${model}_pre"; do
        flags=()
        [ "$build" = "$model" ] || flags=(--preprocessed-input)
        "$nnc" build "models/$model.nn" --weights "$work/$model.safetensors" -o "$work/$build" --name "$model" \
            "${flags[@]}" >/dev/null
        cc -O2 -DNNC_LIB="$model" -DNNC_LIB_UPPER="$upper" "-DNNC_LIB_HEADER=\"$model.h\"" -I "$work/$build" \
            benches/c/latency.c "$work/$build/lib$model.a" -lpthread -lm -ldl -o "$work/latency_$build"
    done
done

# The vCPUs' cross-core round trip, each round (benches/c/core_latency.c):
# two-core rates fall when the host places them far apart.
cc -O2 benches/c/core_latency.c -lpthread -o "$work/core_latency"

# onnxruntime's W4 runs the PyTorch MLP exported to ONNX.
[ -e "$peers/mlp_small.onnx" ] || (cd "$peers" && "$py" bench_torch.py export >/dev/null)

for r in $(seq "$rounds"); do
    "$work/core_latency" | record "$r" machine core_latency
    mine w1 "$r" mnist_mlp 64
    peer torch w1 "$r"
    peer jax w1 "$r"
    mine w2 "$r" mlp_wide 256
    peer torch w2 "$r"
    peer jax w2 "$r"
    mine w3 "$r" lenet 64
    peer torch w3 "$r"
    peer jax w3 "$r"
    peer torch w4 "$r"
    peer ort w4 "$r"
    peer jax w4 "$r"
    "$nnc" train models/fashion_cnn.nn --epochs 1 --quiet --metrics-json "$work/fashion.json" >/dev/null
    python3 -c 'import json,sys; print(json.dumps({"seconds_per_epoch": json.load(open(sys.argv[1]))["epochs"][0]["train_seconds"]}))' \
        "$work/fashion.json" | record "$r" nnc fashion
    "$py" "$peers/fashion_torch.py" 1 | sed -n 's/^epoch 1: train \([0-9.]*\) s.*/{"seconds_per_epoch": \1}/p' |
        record "$r" torch fashion
    "$nnc" bench models/vgg16.nn --batch 1 --json --seconds 1 --foreign-max "$foreign_max" | tr -d '\n' | record "$r" nnc vgg
    "$py" benches/vgg16_torch.py | sed -n 's/.*median \([0-9.]*\) ms.*/{"ms": \1}/p' | record "$r" torch vgg
    for model in digits_cnn conv_autoencoder digits_conv1d global_pool_digits inception_digits separable_digits two_inputs_digits; do
        mine "cnn_$model" "$r" "$model" 32
        "$py" benches/torch_twins.py "$model" "$BENCH_MIN_S" | record "$r" torch "cnn_$model"
    done
    for twin in lstm_digits:32 bigru_digits:32 lstm_mnist:64; do
        model=${twin%:*}
        mine "rnn_$model" "$r" "$model" "${twin#*:}"
        "$py" benches/torch_twins.py "$model" "$BENCH_MIN_S" | record "$r" torch "rnn_$model"
    done
    mine vgg_train "$r" vgg16 8
    "$py" benches/torch_twins.py vgg16 10 8 | record "$r" torch vgg_train
    for model in mnist_mlp lenet; do
        "$work/latency_$model" "$BENCH_MIN_S" 10000 | record "$r" library "$model"
        "$work/latency_$model" "$BENCH_MIN_S" 10000 "$rows" | record "$r" library_mnist "$model"
        "$work/latency_${model}_pre" "$BENCH_MIN_S" 10000 "$rows" | record "$r" library_mnist_pre "$model"
        s=$(elapsed "$nnc" predict "models/$model.nn" --weights "$work/$model.safetensors" --input "$rows" \
            --output "$work/predictions.csv")
        echo "{\"rows_per_s\": $(echo "10000 / $s" | bc)}" | record "$r" predict "$model"
        s=$(elapsed "$py" benches/ort_predict.py "$model" "$rows" "$work/ort_predictions.csv")
        echo "{\"rows_per_s\": $(echo "10000 / $s" | bc)}" | record "$r" ort_script "$model"
    done
    "$py" benches/ort_peer.py "$BENCH_MIN_S" "$rows" | record "$r" onnxruntime inference
done
python3 benches/side_by_side_table.py "$out"
echo "raw results: $out"
