#!/usr/bin/env bash
# charrnn on arm64 (aarch64) under qemu-user: builds a Debian arm64 root if there is none, installs
# this checkout there, runs bench/core_check.py (each cell trained a few steps, resumed, sampled
# with a seed, evaluated) there and on this machine, and compares the numbers to a float
# tolerance. Needs root (debootstrap, chroot, binfmt_misc), Debian's qemu-user-static and
# debootstrap, and the network for Debian's mirror and PyPI. Slow: building the root takes about
# 10 minutes, the check itself 5-10 (nearly all of it Numba compiling under emulation; the root
# keeps its Numba cache, so a second run is faster). Steps: ../shared/notes/arm64-emulation.md.
#
#   sudo bench/arm64_check.sh                 # root in /var/tmp/charrnn-arm64 (ARM64_ROOT=...)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=${ARM64_ROOT:-/var/tmp/charrnn-arm64}
MIRROR=${DEBIAN_MIRROR:-$(sed -n 's/^URIs: *//p' /etc/apt/sources.list.d/debian.sources 2>/dev/null | head -1)}
MIRROR=${MIRROR:-http://deb.debian.org/debian}
HOST_PYTHON=${PYTHON:-python3}
OUT=${ARM64_OUT:-$PWD/bench/arm64-last}
mkdir -p "$OUT"

if [ "$(id -u)" != 0 ]; then
    echo "error: run as root (debootstrap, chroot and binfmt_misc need it)" >&2
    exit 2
fi
if ! command -v qemu-aarch64-static >/dev/null || ! command -v debootstrap >/dev/null; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq qemu-user-static debootstrap >/dev/null
fi
# arm64 programs (and their subprocesses) run through qemu, by binfmt_misc.
mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc 2>/dev/null || true
if [ ! -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ]; then
    echo ':qemu-aarch64:M::\x7fELF\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\xb7\x00:\xff\xff\xff\xff\xff\xff\xff\x00\xff\xff\xff\xff\xff\xff\xff\xff\xfe\xff\xff\xff:/usr/bin/qemu-aarch64-static:F' \
        > /proc/sys/fs/binfmt_misc/register
fi

if [ ! -x "$ROOT/venv/bin/python" ]; then
    echo "building the arm64 root in $ROOT from $MIRROR (about 10 minutes)"
    if [ ! -e "$ROOT/.debootstrap-done" ]; then      # none, or one cut short: start afresh
        rm -rf "$ROOT"
        debootstrap --arch=arm64 --variant=minbase \
            --include=python3,python3-venv,python3-pip,ca-certificates bookworm "$ROOT" "$MIRROR"
        touch "$ROOT/.debootstrap-done"
    fi
    cp /etc/resolv.conf "$ROOT/etc/"
    # pip's settings and the certificate file they name, at the same paths inside.
    for f in /etc/pip.conf /root/.config/pip/pip.conf /etc/ssl/certs/ca-certificates.crt; do
        if [ -f "$f" ]; then mkdir -p "$ROOT$(dirname "$f")"; cp "$f" "$ROOT$f"; fi
    done
    chroot "$ROOT" python3 -m venv /venv
    chroot "$ROOT" env PIP_CERT="${PIP_CERT:-}" /venv/bin/pip install -q numpy numba scipy click requests
fi

mountpoint -q "$ROOT/proc" || mount --bind /proc "$ROOT/proc"
trap 'umount "$ROOT/proc" 2>/dev/null || true' EXIT

# This checkout, as it is (committed or not), installed in the root.
rm -rf "$ROOT/src" && mkdir -p "$ROOT/src"
tar --exclude=.git --exclude='.ci-venv' --exclude='__pycache__' --exclude='bench/arm64-last' \
    -cf - . | tar -xf - -C "$ROOT/src"
chroot "$ROOT" /venv/bin/pip install -q --no-deps --force-reinstall /src

echo "x86-64: $(date -u +%T)"
env NUMBA_CACHE_DIR="$OUT/numba-cache-host" PYTHONPATH="$PWD" "$HOST_PYTHON" bench/core_check.py > "$OUT/host.json"
echo "arm64 under qemu: $(date -u +%T)"
start=$(date +%s)
chroot "$ROOT" env NUMBA_CACHE_DIR=/numba-cache HOME=/root /venv/bin/python /src/bench/core_check.py \
    > "$OUT/arm64.json"
echo "arm64 took $(( $(date +%s) - start )) s; done $(date -u +%T)"
"$HOST_PYTHON" bench/core_check.py --compare "$OUT/host.json" "$OUT/arm64.json"
