#!/usr/bin/env bash
# On the GPU machine (no network), from the repo root, with .gpu-bench/ from prepare.sh carried:
#     bash bench/gpu/run.sh RESULTS_DIR [--smoke]
# Installs the carried wheels, puts the carried redis-server on the PATH and runs
# bench/worker_throughput.py for the SD 1.5 (512 px) and SDXL (1024 px) architectures, fp16,
# 25 steps: plain diffusers against the worker path, batch 1 and a queued burst. Writes
# environment.txt, sd15.txt and sdxl.txt to RESULTS_DIR, all within 8 minutes.
# --smoke: narrow models, 128 px, 2 steps, 2 jobs: the same path on a CPU in minutes.
set -uo pipefail
results=${1:?usage: bench/gpu/run.sh RESULTS_DIR [--smoke]}
mode=${2:-}
cd "$(dirname "$0")/../.."
carried=$PWD/.gpu-bench
python=${PYTHON:-python3}
started=$(date +%s)
# Under the 8 minutes the lease's plan gives this run, stops included.
deadline=$((started + 420))
mkdir -p "$results"

site=$(mktemp -d)
"$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$site" \
    "$carried"/wheels/*.whl || exit 1
export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
# The benches start redis-server by name; only it should see the carried libraries.
bin=$(mktemp -d)
printf '#!/bin/sh\nLD_LIBRARY_PATH=%s exec %s "$@"\n' "$carried/redis/lib" "$carried/redis/bin/redis-server" \
    >"$bin/redis-server"
# scripts/worker.sh runs `python` (the checkout's .venv, which does not travel, or the PATH's).
# A script, not a link: a virtual environment's interpreter finds its packages by its own path.
printf '#!/bin/sh\nexec %s "$@"\n' "$(command -v "$python")" >"$bin/python"
chmod +x "$bin/redis-server" "$bin/python"
export PATH="$bin:$PATH" PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1

{
    date -u
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv 2>&1
    "$python" --version
    redis-server --version
    "$python" -c 'import diffusers, django, celery, torch, transformers
print("torch", torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available())
print("diffusers", diffusers.__version__, "transformers", transformers.__version__)
print("django", django.__version__, "celery", celery.__version__)'
    echo "installed in $(($(date +%s) - started)) s"
} 2>&1 | tee "$results/environment.txt"

# name, seconds allowed, then worker_throughput.py's arguments.
bench() {
    local name=$1 allowed=$2 began
    shift 2
    began=$(date +%s)
    allowed=$((allowed < deadline - began ? allowed : deadline - began))
    if [ "$mode" = --smoke ]; then
        set -- "$@" --reduced --size 128 --steps 2 --jobs 2
    fi
    # SIGINT lets the bench stop its worker and Redis (up to 60 s) before the hard kill.
    timeout -s INT -k 60 "$allowed" "$python" bench/worker_throughput.py "$@" 2>&1 | tee "$results/$name.txt"
    echo "$name: exit status ${PIPESTATUS[0]} after $(($(date +%s) - began)) s (allowed $allowed s)" |
        tee -a "$results/$name.txt"
}

bench sd15 200 --full-size sd15 --jobs 16 --batch-images 4 --memory-jobs 0
bench sdxl 300 --full-size sdxl --jobs 6 --batch-images 4 --memory-jobs 0
echo "total: $(($(date +%s) - started)) s" | tee -a "$results/environment.txt"
