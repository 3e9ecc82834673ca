#!/usr/bin/env bash
# The test command: install what is missing, unit tests on the host, build (or reuse) the
# test-bed kernel, check the UAPI layout against its headers, then boot the VM once and run the
# VM tests inside it. Ends with `vm: N passed, M failed`.
#
#   scripts/test.sh [--unit-only] [--no-install]
#
# --unit-only skips the kernel and the VM (and says so); without it, a missing QEMU or kernel
# fails the run.
set -euo pipefail
cd "$(dirname "$0")/.."

unit_only=0
install=1
for arg in "$@"; do
    case "$arg" in
        --unit-only) unit_only=1 ;;
        --no-install) install=0 ;;
        -h|--help) sed -n '2,10p' "$0"; exit 0 ;;
        *) echo "test.sh: unknown option $arg (use --unit-only, --no-install)" >&2; exit 2 ;;
    esac
done

step() { printf '\n== %s\n' "$*"; }

if [ "$install" = 1 ]; then
    step "dependencies"
    bash scripts/install-deps.sh
fi
py=$(python3 -c 'import os, sys; print(os.path.realpath(sys.executable))')

if [ "$unit_only" = 1 ]; then
    step "unit tests (host) -- the VM tests are NOT run (--unit-only)"
    exec "$py" -m pytest -q -p no:cacheprovider tests
fi

step "test-bed kernel"
kernel=$(bash scripts/build-kernel.sh | tail -n 1)
echo "kernel: $kernel"

step "unit and header-layout tests (host)"
"$py" -m pytest -q -p no:cacheprovider tests --headers "$kernel/headers"

step "VM tests (guest kernel $(cat "$kernel/VERSION"), TCG)"
"$py" scripts/vm-tests --kernel "$kernel"
