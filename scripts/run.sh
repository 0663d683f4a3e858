#!/usr/bin/env bash
# Sets up and runs the whole service on the embedded defaults: Redis, web, the workers and beat.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
export DEBUG=${DEBUG:-0}
.venv/bin/python manage.py migrate --noinput
.venv/bin/python manage.py collectstatic --noinput -v 0
.venv/bin/python manage.py build_tiny_model --if-missing
export REDIS_PORT=${REDIS_PORT:-6379}
export REDIS_URL=${REDIS_URL:-redis://127.0.0.1:$REDIS_PORT/0}
processes=(web worker webhooks maintenance beat)
# Reuse a Redis that already listens there (e.g. Debian's service); otherwise start our own.
redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 || processes=(redis "${processes[@]}")
echo "run: http://127.0.0.1:${WEB_PORT:-8000}/  (API: /api/v1/jobs, admin: /admin/)"
exec .venv/bin/honcho start -f Procfile.dev "${processes[@]}"
