#!/usr/bin/env bash
# How much of what this machine's first two cores can do together a
# model's threaded training step gets: alternating, ROUNDS rounds (default
# 5) of
#
#   one      `nnc bench` on one thread, alone
#   apart    two such runs at once, one pinned to each core (their sum:
#            what two cores give work that shares nothing between them)
#   threaded `nnc bench` on two threads, pinned to the same two cores
#
# then the medians of each, in training samples/s, and threaded/apart.
# Where apart is well under twice one, the cores slow each other down
# (a shared cache, memory or clock, or a host that runs something else
# beside them), and no threading of the step can reach twice one.
#
#   benches/two_cores.sh MODEL [ROUNDS]        (MODEL: a .nn file)
#
# Uses target/release/nnc (`cargo build --release`), taskset (util-linux)
# and python3.
set -euo pipefail
cd "$(dirname "$0")/.."
model=${1:?usage: benches/two_cores.sh MODEL [ROUNDS]}
rounds=${2:-5}
nnc=target/release/nnc
seconds=${BENCH_MIN_S:-2}
[ -x "$nnc" ] || { echo "two_cores.sh: build it first: cargo build --release" >&2; exit 2; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# rate CPUS THREADS: training samples/s of one `nnc bench` on CPUS.
rate() {
    RAYON_NUM_THREADS=$2 taskset -c "$1" "$nnc" bench "$model" --json --seconds "$seconds" |
        python3 -c 'import json, sys; print(json.load(sys.stdin)["train_samples_per_s"])'
}
for r in $(seq "$rounds"); do
    rate 0 1 >>"$work/one"
    rate 0 1 >"$work/a" &
    rate 1 1 >"$work/b"
    wait
    python3 -c 'import sys; print(float(sys.argv[1]) + float(sys.argv[2]))' "$(cat "$work/a")" "$(cat "$work/b")" >>"$work/apart"
    rate 0,1 2 >>"$work/threaded"
    echo "round $r: one $(tail -1 "$work/one"), apart $(tail -1 "$work/apart"), threaded $(tail -1 "$work/threaded")" >&2
done
python3 - "$work" <<'EOF'
import statistics, sys
median = {k: statistics.median(float(x) for x in open(f"{sys.argv[1]}/{k}")) for k in ("one", "apart", "threaded")}
print(f"one core {median['one']:.0f}, two apart {median['apart']:.0f} ({median['apart'] / median['one']:.2f}× one), "
      f"two threads {median['threaded']:.0f} ({median['threaded'] / median['apart']:.2f}× apart), samples/s")
EOF
