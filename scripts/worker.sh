#!/bin/sh
# `scripts/worker.sh gpu|webhooks|beat [celery options]`: the one place the Celery processes'
# options are written. Options after the kind win (a test names its own queue and host).
set -eu
cd "$(dirname "$0")/.."
PATH="$PWD/.venv/bin:$PATH"
case "${1:-}" in
    # Concurrency 1: one process owns the GPU; prefetch 1: never hold a job another GPU could run.
    gpu) shift && set -- --queues gpu --concurrency 1 --prefetch-multiplier 1 --hostname "gpu@%h" "$@" ;;
    webhooks) shift && set -- --queues webhooks,default --concurrency 4 --hostname "webhooks@%h" "$@" ;;
    beat) shift && exec python -m celery -A config beat --schedule /tmp/celerybeat-schedule --loglevel INFO "$@" ;;
    *) echo "usage: scripts/worker.sh gpu|webhooks|beat [celery options]" >&2 && exit 2 ;;
esac
exec python -m celery -A config worker --without-gossip --without-mingle --loglevel INFO "$@"
