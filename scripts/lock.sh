#!/usr/bin/env bash
# Regenerates requirements/lock.txt: every package the project and its dev extra need, pinned
# with their hashes, for Python 3.11 on Linux (scripts/setup.sh installs from it). Run it after
# any change to pyproject.toml's dependencies; `scripts/lock.sh --check` (in scripts/test.sh)
# fails, without the network, while the lock is older than those dependencies.
# torch is the CPU wheel on this machine's disk (pip's find-links), pinned by that file's hash.
set -euo pipefail
cd "$(dirname "$0")/.."
lock=requirements/lock.txt
python=${PYTHON:-python3.11}

# What the lock is made from: pyproject's dependency lists and Python range, not its other tables.
dependencies_hash() {
    "$python" -c '
import hashlib, json, tomllib
project = tomllib.load(open("pyproject.toml", "rb"))["project"]
parts = [project["requires-python"], project["dependencies"], project["optional-dependencies"]]
print(hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest())'
}
stamp_line="# pyproject-dependencies-sha256: $(dependencies_hash)"

if [ "${1:-}" = --check ]; then
    if ! grep -qxF "$stamp_line" "$lock"; then
        echo "lock: $lock is stale: pyproject.toml's dependencies changed; run scripts/lock.sh" >&2
        exit 1
    fi
    exit 0
fi

uv=$(command -v uv || echo .venv/bin/uv)
find_links=${PIP_FIND_LINKS:-$(pip config get global.find-links 2>/dev/null || true)}
compiled=$("$uv" pip compile pyproject.toml --extra dev --generate-hashes --quiet \
    --python-version 3.11 --python-platform x86_64-manylinux_2_28 \
    ${find_links:+--find-links "$find_links"} --override requirements/overrides.txt \
    --custom-compile-command scripts/lock.sh)
printf '%s\n%s\n' "$stamp_line" "$compiled" >"$lock"
echo "lock: wrote $lock"
