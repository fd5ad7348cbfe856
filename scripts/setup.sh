#!/usr/bin/env bash
# One-step set-up for a fresh Debian 12 machine, as root.
#   scripts/setup.sh run [ktrail run options]   install, build, then start `ktrail run`
#   scripts/setup.sh test                       install, build, then run the whole test suite
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
missing=()
for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "setup.sh: installing ${missing[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# BPF objects: compiled here, against this kernel's BTF, into the package.
make -s -C bpf

# Debian's python3 (3.11 on bookworm), not whatever python is first on PATH.
if [ ! -x .venv/bin/python ]; then
    /usr/bin/python3 -m venv .venv
fi
.venv/bin/pip install -q --disable-pip-version-check ".[test]"

case "$mode" in
    install) echo "setup.sh: installed; run .venv/bin/ktrail" >&2 ;;
    run) exec .venv/bin/ktrail run "$@" ;;
    test)
        # Tests import the installed package (with its shipped objects), not src/.
        .venv/bin/ruff check src tests
        exec .venv/bin/python -m pytest -p no:cacheprovider "$@" tests
        ;;
    *) echo "setup.sh: unknown mode '$mode' (run, test or install)" >&2; exit 2 ;;
esac
