#!/usr/bin/env bash
# Data-parallel scaling on this machine: training samples/s of W1
# (mnist_mlp, batch 64), W2 (mlp_wide, batch 256) and LeNet (batch 64) on
# the 8,000 MNIST training images, as one process and as 2 ranks, one
# thread each (RAYON_NUM_THREADS=1, --bind-to none), interleaved, ROUNDS
# rounds (default 3), the median of each run's epochs after the first;
# then the time of one MPI_Allreduce of each model's gradients (and of
# VGG-16's). Needs OpenMPI (mpicc, mpirun). One JSON line per measurement.
#
#   benches/mpi_scaling.sh [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-3}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 RAYON_NUM_THREADS=1

cargo build --release --quiet --features mpi
nnc=$PWD/target/release/nnc
mpicc -O2 benches/c/allreduce.c -o "$work/allreduce"

# epoch_seconds RANKS MODEL: the median train_seconds of epochs 2–4.
epoch_seconds() {
    local json=$work/metrics.json
    if [ "$1" = 1 ]; then
        "$nnc" train "models/$2.nn" --epochs 4 --quiet --metrics-json "$json" >/dev/null
    else
        mpirun -np "$1" --bind-to none --oversubscribe "$nnc" train "models/$2.nn" --epochs 4 --quiet \
            --metrics-json "$json" >/dev/null
    fi
    python3 -c 'import json,statistics,sys; e=json.load(open(sys.argv[1]))["epochs"][1:]; print(statistics.median(x["train_seconds"] for x in e))' "$json"
}

for round in $(seq "$rounds"); do
    for model in mnist_mlp mlp_wide lenet; do
        for ranks in 1 2; do
            s=$(epoch_seconds "$ranks" "$model")
            echo "{\"round\": $round, \"model\": \"$model\", \"ranks\": $ranks, \"samples_per_s\": $(echo "8000 / $s" | bc)}"
        done
    done
done
# Gradients: mnist_mlp, lenet, mlp_wide, VGG-16.
mpirun -np 2 --bind-to none "$work/allreduce" 101770 61706 1863690 138357544
