#!/usr/bin/env bash
# make interop: our agent against UMIP (mip6d 1.0) on Debian's kernel (CONFIG_IPV6_MIP6) in
# the kernel VM, and a JSON summary. See docs/interop.md.
#
# 1. build UMIP's mip6d statically from UMIP_SRC, once (lab/interop/build-umip.sh, cached
#    under .cache/interop/);
# 2. lab/kernel-vm/run.sh with mip6d in the run's share and lab/interop/test_interop.py as
#    the VM's pytest run (the matrix on network namespaces inside the VM);
# 3. the VM's results (JUnit, summary.json, every link's capture, every daemon's log) land
#    in INTEROP_RESULTS (default .cache/interop/last-run); the summary, with the host's
#    build and VM times added, is printed and kept as interop-summary.json there.
#
# Usage: lab/interop/run.sh [PYTEST-ARGS...]     (as root), e.g. -k umip_mn -m "not lbit"
# Environment: UMIP_SRC (the UMIP source tarball; required), INTEROP_RESULTS, KVM_* (see
# lab/kernel-vm/run.sh; KVM_TIMEOUT defaults to 2400 s here).
# Exit status: pytest's in the VM (0 only when every selected case passed), 2 when
# UMIP_SRC is missing, 124 when the VM timed out.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
RESULTS=${INTEROP_RESULTS:-$REPO/.cache/interop/last-run}

log() { echo "interop: $*" >&2; }

if [ -z "${UMIP_SRC:-}" ] || [ ! -f "$UMIP_SRC" ]; then
  log "no UMIP source tarball${UMIP_SRC:+ at $UMIP_SRC}: set UMIP_SRC=/path/to/umip-1.0.tar.gz"
  log "(UMIP mip6d 1.0, https://github.com/RoadRunnr/umip; docs/interop.md)"
  exit 2
fi
if [ "$(id -u)" -ne 0 ]; then
  log "run as root (apt, debootstrap, network namespaces in the VM)"
  exit 1
fi
started=$SECONDS

build_started=$SECONDS
MIP6D=$("$HERE/build-umip.sh" "$UMIP_SRC")
build_seconds=$((SECONDS - build_started))
umip_build=$(cat "$(dirname "$MIP6D")/build-seconds")

if [ $# -eq 0 ]; then set -- lab/interop/test_interop.py; else set -- lab/interop/test_interop.py "$@"; fi
rc=0
KVM_SHARE_FILES=$MIP6D KVM_LAST_RUN=$RESULTS KVM_TIMEOUT=${KVM_TIMEOUT:-2400} \
  MIP6_INTEROP_MIP6D=/mnt/share/files/mip6d MIP6_INTEROP_OUT=/mnt/share/out \
  "$REPO/lab/kernel-vm/run.sh" "$@" || rc=$?

summary=$RESULTS/out/summary.json
if [ ! -f "$summary" ]; then
  log "the VM wrote no summary (exit $rc); console log: $RESULTS/console.log"
  [ "$rc" -ne 0 ] || rc=1
  exit "$rc"
fi
python3 - "$summary" "$RESULTS/summary.txt" "$umip_build" "$build_seconds" \
  "$((SECONDS - started))" "$rc" >"$RESULTS/interop-summary.json" <<'EOF'
import json
import sys

summary_path, vm_path, umip_build, build_step, total, rc = sys.argv[1:]
summary = json.load(open(summary_path))
summary = {
    "umip_build_seconds": int(umip_build),
    "umip_build_step_seconds": int(build_step),
    "vm": open(vm_path).read().strip(),
    "total_seconds": int(total),
    "exit": int(rc),
    **summary,
}
json.dump(summary, sys.stdout, indent=2)
print()
EOF
cat "$RESULTS/interop-summary.json"
log "results in $RESULTS (out/<case>/pcap, logs, mip6dump.json)"
exit "$rc"
