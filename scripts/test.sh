#!/usr/bin/env bash
# Sets up and runs the whole test suite: lint, types, and pytest against a real Redis,
# a real Celery worker and the tiny model. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
SETUP_TEST_TOOLS=1 scripts/setup.sh

run_dir=$(mktemp -d)
cleanup() {
    [ -f "$run_dir/redis.pid" ] && kill "$(cat "$run_dir/redis.pid")" 2>/dev/null || true
    rm -rf "$run_dir"
}
trap cleanup EXIT

# A private Redis on a free port, so test runs never touch a developer's data or each other.
redis_port=$(.venv/bin/python -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
redis-server --port "$redis_port" --bind 127.0.0.1 --save "" --appendonly no --daemonize yes \
    --pidfile "$run_dir/redis.pid" --dir "$run_dir" --logfile "$run_dir/redis.log"
for _ in $(seq 50); do redis-cli -p "$redis_port" ping >/dev/null 2>&1 && break; sleep 0.1; done
export REDIS_URL="redis://127.0.0.1:$redis_port/0"
export MEDIA_ROOT="$run_dir/media"
export TEST_DATABASE_NAME="$run_dir/test.sqlite3"
export STATIC_ROOT="$run_dir/static"
export DEBUG=0

.venv/bin/python manage.py build_tiny_model --if-missing
.venv/bin/python manage.py collectstatic --noinput -v 0
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy
.venv/bin/pytest "$@"
