#!/usr/bin/env bash
# Sets up and runs the whole test suite: lint, types, and pytest against a real Redis,
# a real Celery worker and the tiny model. Extra arguments go to pytest.
# TEST_DATABASES (default "sqlite postgres") runs pytest once per database; "postgres"
# starts a private PostgreSQL cluster in a temporary folder for that run.
set -euo pipefail
cd "$(dirname "$0")/.."
# A lock older than pyproject.toml's dependencies would install something else than it says.
scripts/lock.sh --check
SETUP_TEST_TOOLS=1 scripts/setup.sh

run_dir=$(mktemp -d)
pg_dir=""
cleanup() {
    [ -f "$run_dir/redis.pid" ] && kill "$(cat "$run_dir/redis.pid")" 2>/dev/null || true
    if [ -n "$pg_dir" ] && [ -f "$pg_dir/data/postmaster.pid" ]; then
        as_pg "$pg_bin/pg_ctl" -D "$pg_dir/data" -m immediate -w stop >/dev/null || true
    fi
    rm -rf "$run_dir" "$pg_dir"
}
trap cleanup EXIT

free_port() {
    .venv/bin/python -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# A private Redis on a free port, so test runs never touch a developer's data or each other.
redis_port=$(free_port)
redis-server --port "$redis_port" --bind 127.0.0.1 --save "" --appendonly no --daemonize yes \
    --pidfile "$run_dir/redis.pid" --dir "$run_dir" --logfile "$run_dir/redis.log"
for _ in $(seq 50); do redis-cli -p "$redis_port" ping >/dev/null 2>&1 && break; sleep 0.1; done
export REDIS_URL="redis://127.0.0.1:$redis_port/0"
export MEDIA_ROOT="$run_dir/media"
export TEST_DATABASE_NAME="$run_dir/test.sqlite3"
export STATIC_ROOT="$run_dir/static"
export DEBUG=0

# PostgreSQL refuses to run as root: as root, the cluster belongs to Debian's postgres user.
as_pg() {
    if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

start_postgres() {
    pg_bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
    pg_dir=$(mktemp -d)
    [ "$(id -u)" = 0 ] && chown postgres: "$pg_dir"
    local port
    port=$(free_port)
    as_pg "$pg_bin/initdb" -D "$pg_dir/data" -U imagegen -A trust --no-sync -E UTF8 >"$pg_dir/initdb.log"
    # Durability is worthless for a throwaway test cluster; skipping fsync makes it fast.
    as_pg "$pg_bin/pg_ctl" -D "$pg_dir/data" -l "$pg_dir/postgres.log" -w -o \
        "-p $port -k $pg_dir -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c full_page_writes=off" \
        start >/dev/null
    as_pg "$pg_bin/createdb" -h 127.0.0.1 -p "$port" -U imagegen imagegen
    postgres_url="postgres://imagegen@127.0.0.1:$port/imagegen"
}

.venv/bin/python manage.py build_tiny_model --if-missing
.venv/bin/python manage.py collectstatic --noinput -v 0
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy
.venv/bin/lint-imports

for database in ${TEST_DATABASES:-sqlite postgres}; do
    selection=("$@")
    case "$database" in
        sqlite) unset DATABASE_URL ;;
        postgres)
            [ -n "$pg_dir" ] || start_postgres
            export DATABASE_URL="$postgres_url"
            # The generator knows no database: its (slow) tests would only repeat themselves.
            [ $# -gt 0 ] || selection=(--ignore=tests/generator)
            ;;
        *) echo "test: TEST_DATABASES may name sqlite and postgres, not '$database'" >&2; exit 2 ;;
    esac
    echo "test: pytest on $database"
    .venv/bin/pytest "${selection[@]}"
done
