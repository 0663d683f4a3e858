#!/usr/bin/env bash
# Run here, on the development machine, before a GPU run: fills .gpu-bench/ (ignored) with what
# bench/gpu/run.sh installs on the GPU machine, which has no network: CPython 3.12 wheels of
# the packages its image lacks (at the versions this checkout's .venv holds) and Debian's
# redis-server with the shared libraries it links. Everything must stay under the 64 MiB that
# travels with a device call.
set -euo pipefail
cd "$(dirname "$0")/../.."

target=.gpu-bench
wheels=$target/wheels
redis=$target/redis
budget_mib=60
# The GPU machine's Python; 3.11 only for a rehearsal of run.sh --smoke here, where torch is 3.11's.
python_version=${GPU_BENCH_PYTHON_VERSION:-3.12}
[ -x .venv/bin/python ] || { echo "prepare: run scripts/setup.sh first (versions come from .venv)" >&2; exit 1; }
rm -rf "$target"
mkdir -p "$wheels" "$redis/bin" "$redis/lib"

# The development versions, so the GPU run measures the code the tests ran against.
constraints=$(mktemp)
trap 'rm -f "$constraints"' EXIT
.venv/bin/pip freeze --exclude-editable | grep -v '^torch==' >"$constraints"

# The project's runtime requirements but those the GPU image has (torch, transformers, ...).
mapfile -t roots < <(.venv/bin/python bench/gpu/wheels.py roots bench/gpu/gpu-image-packages.txt)
echo "prepare: downloading CPython $python_version wheels"
.venv/bin/pip download -q --only-binary=:all: --python-version "$python_version" --implementation cp \
    --abi "cp${python_version/./}" --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform any -c "$constraints" -d "$wheels" "${roots[@]}"

echo "prepare: carrying $(.venv/bin/python bench/gpu/wheels.py prune "$wheels" bench/gpu/gpu-image-packages.txt)"

echo "prepare: extracting Debian's redis-server"
debs=$(mktemp -d)
trap 'rm -f "$constraints"; rm -rf "$debs"' EXIT
apt-cache show redis-tools >/dev/null 2>&1 || apt-get update -q >/dev/null
# redis-server is a link to redis-tools' binary; jemalloc and lzf are rarely on a CUDA image.
(cd "$debs" && apt-get download -q -o APT::Sandbox::User=root redis-server redis-tools libjemalloc2 liblzf1 >/dev/null)
for deb in "$debs"/*.deb; do
    dpkg -x "$deb" "$debs/root"
done
# The binary picks its mode from its name: it must be called redis-server.
cp "$debs/root/usr/bin/redis-check-rdb" "$redis/bin/redis-server"
needs=$(LD_LIBRARY_PATH="$debs/root/usr/lib/x86_64-linux-gnu" ldd "$redis/bin/redis-server")
if grep -q "not found" <<<"$needs"; then
    echo "prepare: redis-server needs libraries not found here:" >&2
    grep "not found" <<<"$needs" >&2
    exit 1
fi
# Every library travels but glibc's and the C++ runtime (newer there: torch needs them), so
# it does not matter what else the GPU image lacks.
awk '/=> \// {print $3}' <<<"$needs" | grep -Ev '/(libc|libm|libdl|libpthread|librt|libstdc\+\+|libgcc_s)\.so' |
    while read -r library; do cp -L "$library" "$redis/lib/"; done
newest_glibc=$(objdump -T "$redis/bin/redis-server" "$redis"/lib/*.so* | grep -o 'GLIBC_[0-9.]*' | sort -uV | tail -1)
echo "prepare: redis-server and $(ls "$redis/lib" | wc -l) libraries; newest glibc symbol wanted: $newest_glibc"
# Ubuntu 22.04's glibc; the GPU image (Python 3.12.3) is Ubuntu 24.04's, 2.39.
if [ "$(printf '%s\n' "$newest_glibc" GLIBC_2.35 | sort -V | tail -1)" != GLIBC_2.35 ]; then
    echo "prepare: that glibc may be newer than the GPU machine's" >&2
    exit 1
fi
LD_LIBRARY_PATH="$redis/lib" "$redis/bin/redis-server" --version >/dev/null

size_mib=$(($(du -sb "$target" | cut -f1) / 1048576))
echo "prepare: $target is $size_mib MiB (the working tree adds ~1 MiB)"
if [ "$size_mib" -gt "$budget_mib" ]; then
    echo "prepare: over the $budget_mib MiB budget" >&2
    exit 1
fi
