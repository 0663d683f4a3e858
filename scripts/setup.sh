#!/usr/bin/env bash
# Installs what the project needs on a fresh Debian machine; safe to run again (fast when done).
# Debian packages only when missing, a venv with the locked packages, then the project.
set -euo pipefail
cd "$(dirname "$0")/.."

packages=()
command -v redis-server >/dev/null || packages+=(redis-server)
if [ "${SETUP_TEST_TOOLS:-0}" = 1 ]; then
    command -v chromium >/dev/null || packages+=(chromium)
    ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || packages+=(postgresql)
    # tests/security runs the shipped docker/nginx.conf in front of the web process.
    command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || packages+=(nginx)
    # promtool checks the monitoring profile's rules and scrape config.
    command -v promtool >/dev/null || packages+=(prometheus)
fi
if [ ${#packages[@]} -gt 0 ]; then
    echo "setup: installing Debian packages: ${packages[*]}"
    apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${packages[@]}"
fi

python=${PYTHON:-python3.11}
[ -x .venv/bin/python ] || "$python" -m venv .venv
stamp=.venv/.installed-$(cat pyproject.toml requirements/lock.txt | sha256sum | cut -c1-16)
if [ ! -f "$stamp" ]; then
    .venv/bin/pip install -q --upgrade pip
    # Every package pinned with its hashes (scripts/lock.sh); torch is the CPU wheel on disk,
    # pinned as torch==2.13.0+cpu with that file's hash, so no CUDA build can come instead.
    .venv/bin/pip install -q --require-hashes -r requirements/lock.txt
    .venv/bin/pip install -q --no-deps -e .
    rm -f .venv/.installed-*
    touch "$stamp"
fi
mkdir -p var
