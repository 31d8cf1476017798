#!/usr/bin/env bash
# Does this host's kernel offer the agent a data plane (seg6, ip6tnl or the eBPF tunnel)?
# The Podman lab runs the agent in containers on this kernel: without one it cannot pass.
#
# Usage: lab/dataplane-available.sh   (as root; used by make lab-test and make molecule)
# Exit 1 with the reason on stdout (one line) when the kernel has no data plane; exit 0
# when it has one, and also when the check itself cannot run (a warning on stderr): then
# the lab runs as it always did and says for itself what is wrong.
#
# The answer is the agent's own probe (agent/tests/dataplane_probe.py, which the test
# suite's skips use too), run in a throwaway network namespace that it deletes again.
set -uo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
python=${MIP6_PYTHON:-$root/.venv/bin/python}
no_dataplane=10 # dataplane_probe.EXIT_NO_DATAPLANE

output=$("$python" "$root/agent/tests/dataplane_probe.py")
status=$?
case $status in
  0) exit 0 ;;
  "$no_dataplane")
    echo "$output"
    exit 1
    ;;
  *)
    echo "dataplane-available: could not probe the kernel (exit $status), running anyway" >&2
    exit 0
    ;;
esac
