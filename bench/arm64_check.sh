#!/usr/bin/env bash
# charrnn on arm64 (aarch64) under qemu-user: runs bench/core_check.py (each cell trained a few
# steps, resumed, sampled with a seed, evaluated) on this machine and in a Debian arm64 root, and
# compares the numbers to a float tolerance; then, if ARM64_TESTS names some, runs tests there.
# Needs root (debootstrap, chroot, mount, binfmt_misc), Debian's qemu-user-static and debootstrap,
# the network for Debian's mirror and PyPI, and a host Python 3.11+ with this checkout's
# dependencies (PYTHON=...). Steps by hand: ../shared/notes/arm64-emulation.md.
#
#   sudo bench/arm64_check.sh                  # root in /var/tmp/charrnn-arm64 (ARM64_ROOT=...)
#   sudo ARM64_TESTS='tests/test_optim.py -x' bench/arm64_check.sh   # pytest's arguments, in /src
#
# Resumable: a stage that finished leaves a marker in the root and is skipped the next time.
#   debootstrap  first stage (download and unpack, native; the .debs are kept in ARM64_DEBS,
#                /var/tmp/charrnn-arm64-debs, so a rebuild does not fetch them again), then the
#                second stage (every package configured by dpkg under qemu: the slow part)
#                -> /.debootstrap-done.
#                Cut short, it cannot be continued: the next run unpacks afresh from the kept .debs.
#   venv         /venv with the checkout's dependencies from PyPI's aarch64 wheels, numpy, numba,
#                llvmlite, scipy, pytest and hypothesis at this machine's versions -> /.venv-done
# The checkout itself (committed or not) is copied to /src on every run and run from there
# (PYTHONPATH=/src; it is pure Python). /numba-cache in the root keeps what Numba compiled, so a
# second run compiles only the kernels whose source changed (compiling is nearly all of a first
# run's time). Each phase's time goes to $ARM64_OUT/phases.txt (default bench/arm64-last/), the
# two runs' numbers to host.json and arm64.json there.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=${ARM64_ROOT:-/var/tmp/charrnn-arm64}
DEBS=${ARM64_DEBS:-$ROOT-debs}
SUITE=bookworm
MIRROR=${DEBIAN_MIRROR:-$(sed -n 's/^URIs: *//p' /etc/apt/sources.list.d/debian.sources 2>/dev/null | head -1)}
MIRROR=${MIRROR:-http://deb.debian.org/debian}
HOST_PYTHON=${PYTHON:-python3}
OUT=${ARM64_OUT:-$PWD/bench/arm64-last}
TESTS=${ARM64_TESTS:-}

case "$ROOT" in
    /?*) ;;
    *) echo "error: ARM64_ROOT must be an absolute path other than /: $ROOT" >&2; exit 2 ;;
esac
if [ "$(id -u)" != 0 ]; then
    echo "error: run as root (debootstrap, chroot, mount and binfmt_misc need it)" >&2
    exit 2
fi
mkdir -p "$OUT"
LOG="$OUT/phases.txt"
: >"$LOG"

say() { echo "$(date -u +%T) $*" | tee -a "$LOG"; }

phase="" phase_start=0 host_pid=""
timed() { # timed NAME COMMAND...: runs COMMAND; its time goes to the log, and so does a failure
    phase=$1
    phase_start=$(date +%s)
    shift
    say "$phase: started"
    "$@"
    say "$phase: done in $(($(date +%s) - phase_start)) s"
    phase=""
}

mounts_under_root() { awk -v r="$ROOT" '$2 == r || index($2, r "/") == 1 { print $2 }' /proc/mounts | sort -r; }
unmount_root() {
    local m
    for m in $(mounts_under_root); do umount "$m" 2>/dev/null || umount -l "$m" || true; done
}
on_exit() {
    local rc=$?
    kill "$host_pid" 2>/dev/null || true
    if [ -n "$phase" ]; then say "$phase: STOPPED (exit $rc) after $(($(date +%s) - phase_start)) s"; fi
    unmount_root
}
trap on_exit EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

wipe_root() { # never with anything mounted inside: rm would reach into it
    unmount_root
    if [ -n "$(mounts_under_root)" ]; then
        echo "error: still mounted under $ROOT: $(mounts_under_root | tr '\n' ' ')" >&2
        exit 1
    fi
    rm -rf --one-file-system "$ROOT"
}

# A command in the root with a clean environment: the host's (NUMBA_CPU_NAME, PIP_FIND_LINKS,
# PYTHONPATH...) names this machine's CPU and paths. NAME=value arguments first set variables.
in_root() {
    chroot "$ROOT" /usr/bin/env -i PATH=/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
        HOME=/root LANG=C.UTF-8 TMPDIR=/tmp "$@"
}

if ! command -v qemu-aarch64-static >/dev/null || ! command -v debootstrap >/dev/null; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq qemu-user-static debootstrap >/dev/null
fi
# arm64 programs (and their subprocesses) run through qemu, by binfmt_misc.
mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc 2>/dev/null || true
if [ ! -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ]; then
    echo ':qemu-aarch64:M::\x7fELF\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\xb7\x00:\xff\xff\xff\xff\xff\xff\xff\x00\xff\xff\xff\xff\xff\xff\xff\xff\xfe\xff\xff\xff:/usr/bin/qemu-aarch64-static:F' \
        >/proc/sys/fs/binfmt_misc/register
fi

# --- the numbers on this machine, in the background: what runs under qemu below takes one core.
run_host() {
    env NUMBA_CACHE_DIR="$OUT/numba-cache-host" PYTHONPATH="$PWD" "$HOST_PYTHON" bench/core_check.py \
        >"$OUT/host.json" 2>"$OUT/host.log"
}
(
    trap - EXIT INT TERM
    timed "core check on this machine ($(uname -m), native)" run_host
) &
host_pid=$!

# --- the root
stage1() {
    wipe_root
    mkdir -p "$DEBS"
    debootstrap --foreign --arch=arm64 --variant=minbase --include=python3,python3-venv,ca-certificates \
        --cache-dir="$DEBS" "$SUITE" "$ROOT" "$MIRROR"
    # The second stage resolves dependencies again and again by reading the suite's whole Packages
    # list (60,000 packages) with grep and perl, under emulation: several minutes a pass, most of
    # its time (it was stopped after 28 minutes once). Only the packages the first stage fetched
    # are installed, so the list is cut to theirs here, natively. (apt in the root then knows
    # only these: nothing here uses it.)
    local list
    for list in "$ROOT"/var/lib/apt/lists/*_Packages; do
        awk 'NR == FNR { keep[$1] = 1; next } /^Package: / { p = ($2 in keep) } p' \
            "$ROOT/debootstrap/debpaths" "$list" >"$list.cut"
        mv "$list.cut" "$list"
    done
    # dpkg need not sync every file it writes to the disk in a root that can be rebuilt.
    mkdir -p "$ROOT/etc/dpkg/dpkg.cfg.d"
    echo force-unsafe-io >"$ROOT/etc/dpkg/dpkg.cfg.d/charrnn-unsafe-io"
}
stage2() {
    in_root /debootstrap/debootstrap --second-stage
    touch "$ROOT/.debootstrap-done"
}
if [ ! -e "$ROOT/.debootstrap-done" ]; then
    timed "debootstrap first stage: download and unpack (native; $MIRROR)" stage1
    timed "debootstrap second stage: configure (dpkg under qemu)" stage2
fi

mountpoint -q "$ROOT/proc" || mount -t proc proc "$ROOT/proc"
mkdir -p "$ROOT/dev/shm"
mountpoint -q "$ROOT/dev/shm" || mount -t tmpfs -o mode=1777 shm "$ROOT/dev/shm"

# The checkout's dependencies; those that compute pinned to this machine's versions.
"$HOST_PYTHON" - >"$OUT/requirements-arm64.txt" <<'EOF'
import importlib.metadata as md, re, tomllib
deps = tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]
pinned = ["numpy", "numba", "llvmlite", "scipy", "pytest", "hypothesis"]
out = [d for d in deps if re.match(r"[A-Za-z0-9_.-]+", d).group(0).lower() not in pinned]
for name in pinned:
    try:
        out.append(f"{name}=={md.version(name)}")
    except md.PackageNotFoundError:
        out.append(name)
print("\n".join(out))
EOF
venv() {
    rm -f "$ROOT/etc/resolv.conf" && cp /etc/resolv.conf "$ROOT/etc/"
    # pip's settings and the certificate file they name, at the same paths inside (without them pip
    # cannot reach the index from here). ~/.config/pip is left out: it names this machine's folders.
    local f cert=${PIP_CERT:-}
    [ -n "$cert" ] || cert=$(sed -n 's/^ *cert *= *//p' /etc/pip.conf 2>/dev/null | tail -1)
    for f in /etc/pip.conf "$cert"; do
        if [ -n "$f" ] && [ -f "$f" ]; then
            mkdir -p "$ROOT$(dirname "$f")"
            rm -f "$ROOT$f" # a link there would lead the copy out of the root
            cp -L "$f" "$ROOT$f"
        fi
    done
    [ -x "$ROOT/venv/bin/python" ] || in_root python3 -m venv /venv
    cp "$OUT/requirements-arm64.txt" "$ROOT/requirements-arm64.txt"
    in_root ${cert:+PIP_CERT=$cert} PIP_DISABLE_PIP_VERSION_CHECK=1 \
        pip install --no-compile --progress-bar off -r /requirements-arm64.txt
    cp "$OUT/requirements-arm64.txt" "$ROOT/.venv-done"
}
if ! cmp -s "$OUT/requirements-arm64.txt" "$ROOT/.venv-done"; then
    timed "venv: $(tr '\n' ' ' <"$OUT/requirements-arm64.txt")(pip under qemu)" venv
fi

# This checkout, as it is (committed or not; what git ignores left out), with its files' times kept:
# the Numba cache in the root knows the unchanged ones.
rm -rf --one-file-system "$ROOT/src"
mkdir -p "$ROOT/src"
if git -c safe.directory='*' rev-parse --is-inside-work-tree >/dev/null 2>&1; then
    git -c safe.directory='*' ls-files -z --cached --others --exclude-standard |
        tar --null --ignore-failed-read -T - -cf - 2>/dev/null | tar -xf - -C "$ROOT/src"
else
    tar --exclude=.git --exclude=.ci-venv --exclude='.ci-numba-*' --exclude=__pycache__ \
        --exclude=bench/arm64-last -cf - . | tar -xf - -C "$ROOT/src"
fi

run_arm64() {
    in_root NUMBA_CACHE_DIR=/numba-cache PYTHONPATH=/src python /src/bench/core_check.py >"$OUT/arm64.json" \
        2> >(tee "$OUT/arm64.log" >&2)
}
timed "core check on arm64 (under qemu; $(uname -m) host)" run_arm64

if ! wait "$host_pid"; then
    echo "error: the core check on this machine failed: $OUT/host.log" >&2
    exit 1
fi
host_pid=""
same=0
compare() {
    if "$HOST_PYTHON" bench/core_check.py --compare "$OUT/host.json" "$OUT/arm64.json" | tee -a "$LOG"; then
        same=1
    fi
}
timed "compare" compare

if [ -n "$TESTS" ]; then
    tests() { # the core check's Numba cache: the same sources, so its kernels need not compile again
        if in_root NUMBA_CACHE_DIR=/numba-cache sh -c "cd /src && exec python -m pytest -p no:cacheprovider -q -rfEs $TESTS" \
            >"$OUT/tests.txt" 2>&1; then
            say "tests passed: $(tail -1 "$OUT/tests.txt")"
        else
            say "TESTS FAILED: $(tail -1 "$OUT/tests.txt") (all of it in $OUT/tests.txt)"
        fi
    }
    timed "tests on arm64: pytest $TESTS" tests
fi
[ "$same" = 1 ]
