#!/usr/bin/env bash
# One-step set-up for a fresh Debian 12 machine, as root.
#   scripts/setup.sh run [ktrail run options]   install, build, then start `ktrail run`
#   scripts/setup.sh test                       install, build, then run the whole test suite
#   scripts/setup.sh bench [bench/run.py options]  install, build, then run the benchmark suite
#   scripts/setup.sh install                    install and build only
set -euo pipefail
cd "$(dirname "$0")/.."
mode=${1:-install}
[ $# -gt 0 ] && shift

if [ "$(id -u)" -ne 0 ]; then
    echo "setup.sh: run as root (it installs packages and loads BPF programs)" >&2
    exit 2
fi

# Build and run-time packages. Only install when something is missing, so a
# second run starts at once.
pkgs=(clang llvm libbpf-dev libbpf1 bpftool make python3 python3-venv python3-dev
      kmod util-linux mount gcc liburing-dev)
# The bench compares against auditd and bpftrace, and counts syscalls with strace.
if [ "$mode" = bench ]; then pkgs+=(auditd bpftrace strace); fi
missing=()
for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "setup.sh: installing ${missing[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    # Installing auditd must not start its service: the bench starts and stops
    # its own auditd, and leaves no service behind. policy-rc.d is Debian's
    # switch for that (only added if the machine has none).
    policy=""
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        policy=/usr/sbin/policy-rc.d
        printf '#!/bin/sh\nexit 101\n' >"$policy"
        chmod +x "$policy"
    fi
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    if [ -n "$policy" ]; then rm -f "$policy"; fi
fi

# BPF objects: compiled here, against this kernel's BTF, into the package.
make -s -C bpf

# Debian's python3 (3.11 on bookworm), not whatever python is first on PATH.
if [ ! -x .venv/bin/python ]; then
    /usr/bin/python3 -m venv .venv
fi
extras=test
if [ "$mode" = bench ]; then extras=test,bench; fi
# setuptools packs whatever build/lib holds: a module deleted from src/ would
# still be installed from there.
rm -rf build
.venv/bin/pip install -q --disable-pip-version-check ".[$extras]"

case "$mode" in
    install) echo "setup.sh: installed; run .venv/bin/ktrail" >&2 ;;
    run) exec .venv/bin/ktrail run "$@" ;;
    test)
        # Tests import the installed package (with its shipped objects), not src/.
        .venv/bin/ruff check src tests
        exec .venv/bin/python -m pytest -p no:cacheprovider "$@" tests
        ;;
    bench) exec .venv/bin/python bench/run.py "$@" ;;
    *) echo "setup.sh: unknown mode '$mode' (run, test, bench or install)" >&2; exit 2 ;;
esac
