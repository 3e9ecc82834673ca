#!/usr/bin/env bash
# The test command: install what is missing, unit tests on the host, then for each kernel of the
# bed build (or fetch, or reuse) it and run the VM suite in it; the UAPI layout is checked against
# the newest built kernel's exported headers.
#
#   scripts/test.sh [--unit-only] [--no-install] [--kernel NAME]...
#
# Kernels (all three by default): 6.12 (our build: iommufd + cdev, legacy type1 container),
# 7 (our build of the newest linux-source-7.*: iommufd + cdev with the BIND token flag, iommufd's
# compat container), debian (Debian 13's stock kernel, unmodified: legacy group + container only).
# Each kernel's run ends with `vm[NAME]: N passed, M failed`; the last line is the sum,
# `vm: N passed, M failed`. Fails if any kernel had a failure or ran nothing.
# --unit-only skips the kernels and the VM (and says so).
set -euo pipefail
cd "$(dirname "$0")/.."

unit_only=0
install=1
kernels=()
while [ $# -gt 0 ]; do
    case "$1" in
        --unit-only) unit_only=1 ;;
        --no-install) install=0 ;;
        --kernel) [ $# -ge 2 ] || { echo "test.sh: --kernel needs a NAME (6.12, 7, debian)" >&2; exit 2; }
                  kernels+=("$2"); shift ;;
        --kernel=*) kernels+=("${1#--kernel=}") ;;
        -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
        *) echo "test.sh: unknown option $1 (use --unit-only, --no-install, --kernel NAME)" >&2; exit 2 ;;
    esac
    shift
done
[ "${#kernels[@]}" -gt 0 ] || kernels=(6.12 7 debian)
for k in "${kernels[@]}"; do
    case "$k" in 6.12|7|7.x|7.*|debian) ;; *) echo "test.sh: unknown kernel '$k' (use 6.12, 7, debian)" >&2; exit 2 ;; esac
done

step() { printf '\n== %s\n' "$*"; }
start=$(date +%s)

if [ "$install" = 1 ]; then
    step "dependencies"
    bash scripts/install-deps.sh
fi
py=$(python3 -c 'import os, sys; print(os.path.realpath(sys.executable))')

if [ "$unit_only" = 1 ]; then
    step "unit tests (host) -- the VM tests are NOT run (--unit-only)"
    exec "$py" -m pytest -q -p no:cacheprovider tests
fi

declare -A dir
for k in "${kernels[@]}"; do
    step "test-bed kernel $k"
    t=$(date +%s)
    dir[$k]=$(bash scripts/build-kernel.sh "$k" | tail -n 1)
    echo "kernel $k: ${dir[$k]} ($(( $(date +%s) - t )) s)"
done

# the newest built kernel's headers (the stock kernel ships none)
headers=
for k in "${kernels[@]}"; do
    [ -d "${dir[$k]}/headers" ] || continue
    if [ -z "$headers" ] || [ "$(printf '%s\n%s\n' "$(cat "${dir[$k]}/VERSION")" "$(cat "$(dirname "$headers")/VERSION")" | sort -V | tail -n 1)" = "$(cat "${dir[$k]}/VERSION")" ]; then
        headers="${dir[$k]}/headers"
    fi
done
what="unit tests (host)"
[ -z "$headers" ] || what="$what and the UAPI layout against the headers of $(cat "$(dirname "$headers")/NAME")"
step "$what"
"$py" -m pytest -q -p no:cacheprovider tests ${headers:+--headers "$headers"}

summaries=$(mktemp -d)
trap 'rm -rf "$summaries"' EXIT
rc=0
for k in "${kernels[@]}"; do
    step "VM tests: kernel $k ($(cat "${dir[$k]}/NAME") $(cat "${dir[$k]}/VERSION")), TCG"
    t=$(date +%s)
    "$py" scripts/vm-tests --kernel "${dir[$k]}" --summary "$summaries/$k.json" || rc=1
    echo "vm-tests[$k]: $(( $(date +%s) - t )) s"
done

step "summary ($(( $(date +%s) - start )) s)"
"$py" - "$summaries" "${kernels[@]}" <<'EOF'
import json, sys
from pathlib import Path
total = {"passed": 0, "failed": 0}
bad = []
for k in sys.argv[2:]:
    f = Path(sys.argv[1]) / f"{k}.json"
    s = json.loads(f.read_text()) if f.is_file() else {"kernel": k, "passed": 0, "failed": 1,
                                                         "ok": False}
    aborts = s.get("emulator_aborts") or []
    nudges = s.get("nudges") or []
    print(f"vm[{s['kernel']}]: {s['passed']} passed, {s['failed']} failed"
          + (f" (the VM failed {len(aborts)}x, resumed in a fresh VM)"
             if aborts else "")
          + (f" (a CPU nudged awake {len(nudges)}x)" if nudges else "")
          + ("" if s["ok"] else "  <- FAILED"))
    # each kernel's problems again at the end, where a log cut to its tail still shows them
    for line in aborts + [f"nudged {n}" for n in nudges] + s.get("problems", []):
        print(f"  {line}")
    total["passed"] += s["passed"]
    total["failed"] += s["failed"] + (0 if s["ok"] or s["failed"] else 1)
print(f"vm: {total['passed']} passed, {total['failed']} failed")
EOF
exit $rc
