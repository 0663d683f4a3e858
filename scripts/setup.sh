#!/usr/bin/env bash
# Installs what the project needs on a fresh Debian machine; safe to run again (fast when done).
# Debian packages only when missing, a venv with the CPU torch wheel first, then the project.
set -euo pipefail
cd "$(dirname "$0")/.."

packages=()
command -v redis-server >/dev/null || packages+=(redis-server)
if [ "${SETUP_TEST_TOOLS:-0}" = 1 ]; then
    command -v chromium >/dev/null || packages+=(chromium)
    ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || packages+=(postgresql)
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
stamp=.venv/.installed-$(sha256sum pyproject.toml | cut -c1-16)
if [ ! -f "$stamp" ]; then
    .venv/bin/pip install -q --upgrade pip
    # First, so that the CPU wheel on disk satisfies the project's torch range; any other
    # torch spec would download a multi-GB CUDA build.
    .venv/bin/pip install -q "torch==2.13.0"
    .venv/bin/pip install -q -e ".[dev]"
    rm -f .venv/.installed-*
    touch "$stamp"
fi
mkdir -p var
