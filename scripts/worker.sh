#!/bin/sh
# `scripts/worker.sh gpu [MODEL,...]|webhooks|maintenance|beat [celery options]`: the one place the Celery
# processes' options are written. Options after the kind win (a test names its own queue and host).
# A GPU worker serves the models named (else GENERATOR_SERVED_MODELS, else the whole registry) and
# consumes each one's queue, "<GENERATION_QUEUE>.<model>".
set -eu
cd "$(dirname "$0")/.."
PATH="$PWD/.venv/bin:$PATH"
case "${1:-}" in
    # Concurrency 1: one process owns the GPU; prefetch 1: never hold a job another GPU could run.
    gpu) shift
        case "${1:-}" in "" | -*) ;; *) GENERATOR_SERVED_MODELS=$1 && export GENERATOR_SERVED_MODELS && shift ;; esac
        queues=$(python -c "from config.celery import served_generation_queues; print(served_generation_queues())")
        set -- --queues "$queues" --concurrency 1 --prefetch-multiplier 1 --hostname "gpu@%h" "$@" ;;
    webhooks) shift && set -- --queues webhooks --concurrency 4 --hostname "webhooks@%h" "$@" ;;
    # The reaper and sweeps: short, periodic, never behind a slow webhook receiver.
    maintenance) shift && set -- --queues maintenance --concurrency 2 --hostname "maintenance@%h" "$@" ;;
    beat) shift && exec python -m celery -A config beat --schedule /tmp/celerybeat-schedule --loglevel INFO "$@" ;;
    *) echo "usage: scripts/worker.sh gpu [MODEL,...]|webhooks|maintenance|beat [celery options]" >&2 && exit 2 ;;
esac
exec python -m celery -A config worker --without-gossip --without-mingle --loglevel INFO "$@"
