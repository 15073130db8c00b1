#!/usr/bin/env bash
# The GPU checks, as one prepared script that fits in about 10 minutes on one GPU: each line it prints is
# Hyrax against the plain PyTorch loop measured in the same run (../shared/notes/gpu.md has the reference
# figures of a plain loop on an H200). Where no GPU is found it runs the same steps on the CPU at a small
# size, so the script itself is tested (tests/test_benchmarks.py); the GPU figures then still have to come.
#
#   bash benchmarks/gpu_check.sh              # on a GPU node: train fp32/bf16, infer float32/float16,
#                                             #   exact k-NN at 1M x 64, a 1-process nccl training
#   PYTHON=.venv/bin/python bash benchmarks/gpu_check.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
PY=$(command -v "$PY")
case "$PY" in /*) ;; *) PY="$PWD/$PY" ;; esac  # absolute (not resolved: a venv's python is a link)
export MLFLOW_DISABLE_TELEMETRY=true ANONYMIZED_TELEMETRY=False ORT_DISABLE_TELEMETRY=1 DO_NOT_TRACK=1
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

if "$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)'; then
    dev=cuda; name=$("$PY" -c 'import torch; print(torch.cuda.get_device_name(0))')
    train_n=40000; infer_n=200000; knn_n=1000000; backend=nccl
else
    dev=cpu; name="no GPU: CPU at a small size"
    train_n=512; infer_n=4000; knn_n=20000; backend=gloo
fi
echo "== gpu_check on $name (device $dev)"

step() { echo; echo "== $*"; }

step "train, fp32: hyrax train vs a plain PyTorch loop (same file, model, batch)"
"$PY" benchmarks/bench_train.py --device "$dev" --n "$train_n" --epochs 3 --rounds 1 | tail -3
if [ "$dev" = cuda ]; then
    step "train, bf16 autocast"
    "$PY" benchmarks/bench_train.py --device cuda --n "$train_n" --epochs 3 --rounds 1 --bf16 | tail -3
fi

for dtype in float32 float16; do
    step "infer from HDF5 stored as $dtype: hyrax infer vs a plain loop"
    "$PY" benchmarks/bench_infer.py --device "$dev" --dtype "$dtype" --n "$infer_n" --n-model "$infer_n" \
        --sizes "$infer_n" --repeats 1 --dir "$tmp" 2>&1 | grep -E "median ratio|peak RSS"
done

step "exact k-NN search, $knn_n x 64"
"$PY" benchmarks/bench_search.py --backends exact --n "$knn_n" --device "$dev" --queries 200 | tail -2

step "one-process $backend training through torchrun (the multi-GPU launch path)"
(cd "$tmp" && timeout 600 "$PY" -m torch.distributed.run --nnodes 1 --nproc_per_node 1 -m hyrax_cli train \
    --set train.epochs=1 --set general.device="$dev" --set model.HyraxAutoencoder.base_channel_size=4 \
    --set model.HyraxAutoencoder.latent_dim=8 </dev/null >"$tmp/train.out" 2>"$tmp/train.err") \
    && echo "ok: $(tail -1 "$tmp/train.out") ($(grep -o 'world_size[^,]*' "$tmp"/results/*/provenance.json | head -1))" \
    || { echo "FAILED:"; tail -20 "$tmp/train.err"; exit 1; }
echo; echo "== gpu_check done ($name)"
