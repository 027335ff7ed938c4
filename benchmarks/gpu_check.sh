#!/usr/bin/env bash
# The GPU check, in one run from the repository root (no virtualenv, no Dagster needed):
#
#   PYTHONPATH=<repo root>[:<wheels>] OUT=<dir> bash benchmarks/gpu_check.sh
#
# (a) cuda_smoke: the device sampler against the CPU one (same windows, augmentations equal in
#     distribution), then every registry entry that runs on the device (all but minirocket, numpy/numba on
#     the CPU) trains a few steps there and is probed (tiny data);
# (b) pretrain_throughput at batch 512 on the TCN: the two-view objectives, masked_recon and
#     chart_distill with bf16 autocast (windows/s and pipeline share), the same with the host
#     sampler path for comparison (three objectives), and fp32;
# (c) full_point: vicreg|full-s0 end to end (train + probe), at its declared 4,000 steps.
# Each step writes one JSON document under $OUT (5 documents + gpu_check.log); a failing or
# timed-out step is logged and the next one runs. Total under ~6 minutes on one H200.
#
# Environment: DEVICE (default cuda), PYTHON (default python3), OUT (default ./gpu_check_out),
# GPU_CHECK_SKIP (comma-separated step names to leave out),
# GPU_CHECK_TINY=1 shrinks every step to a smoke run (for trying the script on a CPU:
# DEVICE=cpu GPU_CHECK_TINY=1 bash benchmarks/gpu_check.sh).
set -u
cd "$(dirname "$0")/.."
DEVICE="${DEVICE:-cuda}"
PY="${PYTHON:-python3}"
OUT="${OUT:-$PWD/gpu_check_out}"
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
LOG="$OUT/gpu_check.log"
: > "$LOG"

if [ "${GPU_CHECK_TINY:-0}" = "1" ]; then
  SMOKE=(--steps 2 --tickers 12 --days 400 --objectives vicreg,chart_distill,supervised)
  THROUGHPUT=(--steps 2 --warmup 1 --batch-size 32 --tickers 20 --days 400)
  TWO_VIEW=vicreg,masked_recon
  FULL=(--steps 3 --tickers 20 --days 500)
else
  SMOKE=(--steps 4)
  THROUGHPUT=(--steps 15 --warmup 3 --batch-size 512)
  TWO_VIEW=vicreg,barlow,byol,simsiam,infonce,debiased_infonce,hybrid,ts2vec,cpc,masked_recon,chart_distill
  FULL=()
fi

# Every script runs with Dagster made unimportable: the benchmarks need only the library.
RUNNER='import runpy, sys; sys.modules["dagster"] = None; sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name="__main__")'

step() {  # step <name> <timeout s> <script> <args...>; GPU_CHECK_SKIP="name,name" leaves steps out
  local name="$1" limit="$2"; shift 2
  case ",${GPU_CHECK_SKIP:-}," in *",$name,"*) echo "$name: skipped"; return;; esac
  local t0=$SECONDS
  echo "=== $name (limit ${limit}s) $(date -u +%H:%M:%S)" >> "$LOG"
  # python itself is timeout's child, so a step past its limit is really stopped.
  timeout "$limit" "$PY" -c "$RUNNER" "$@" --json-out "$OUT/$name.json" > /dev/null 2>> "$LOG"
  local rc=$?
  echo "=== $name: rc $rc in $((SECONDS - t0)) s" >> "$LOG"
  echo "$name: rc $rc in $((SECONDS - t0)) s"
}

{
  echo "device $DEVICE, python $("$PY" --version 2>&1), load $(cut -d' ' -f1-3 /proc/loadavg)"
  command -v nvidia-smi > /dev/null && nvidia-smi --query-gpu=name,memory.used,memory.total,utilization.gpu --format=csv
  # What the library needs beside torch; without matplotlib the probes are skipped (and say so).
  "$PY" -c 'import importlib.util as u; print("modules:", {m: u.find_spec(m) is not None for m in ("torch", "numpy", "polars", "duckdb", "pydantic", "yaml", "sklearn", "scipy", "numba", "aeon", "matplotlib", "PIL", "dagster")})'
} >> "$LOG" 2>&1

step cuda_smoke 120 benchmarks/cuda_smoke.py --device "$DEVICE" --threads 2 "${SMOKE[@]}"
step full_point_vicreg 170 benchmarks/full_point.py --objective vicreg --variant full-s0 --device "$DEVICE" "${FULL[@]}"
step pretrain_b512_bf16 80 benchmarks/pretrain_throughput.py --device "$DEVICE" --amp-bf16 --threads 2 \
  --backbones tcn --objectives "$TWO_VIEW" "${THROUGHPUT[@]}"
step pretrain_b512_bf16_host_sampler 40 benchmarks/pretrain_throughput.py --device "$DEVICE" --amp-bf16 --threads 2 \
  --backbones tcn --objectives vicreg,ts2vec,masked_recon --sampler host "${THROUGHPUT[@]}"
step pretrain_b512_fp32 50 benchmarks/pretrain_throughput.py --device "$DEVICE" --threads 2 \
  --backbones tcn --objectives "$TWO_VIEW" "${THROUGHPUT[@]}"
echo "done; documents under $OUT" | tee -a "$LOG"
