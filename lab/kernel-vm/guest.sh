#!/usr/bin/env bash
# Runs inside the kernel VM (started by the image's init from the run's 9p share): unpack
# the checkout into tmpfs, run the tests, leave each run's JUnit XML and the combined exit
# code (file rc) in the share. The host's run.sh copies this file into the share.
#
# The share may hold `args` (NUL-separated pytest arguments: one run with them instead of
# the default runs) and `env` (VAR=value lines, exported first, e.g. MIP6_TEST_DATAPLANE).
set -uo pipefail

SHARE=/mnt/share
PYTEST=/opt/mip6/bin/pytest
WORK=/tmp/work
rc=0

# POSIX shared memory (the image's init mounts no /dev/shm): ansible-playbook's
# multiprocessing needs it (agent/tests/test_ipsec_esp.py runs the ipsec role).
if ! mountpoint -q /dev/shm; then
  mkdir -p /dev/shm && mount -t tmpfs -o mode=1777 tmpfs /dev/shm
fi
mkdir -p "$WORK"
tar -C "$WORK" -xf "$SHARE/repo.tar" || { echo 1 >"$SHARE/rc"; exit 1; }
cd "$WORK" || exit 1
export PYTHONPATH=$WORK/agent PYTHONDONTWRITEBYTECODE=1 HOME=/root
if [ -f "$SHARE/env" ]; then
  set -a
  # shellcheck disable=SC1091 # written by run.sh for this run
  . "$SHARE/env"
  set +a
fi

echo "=== kernel $(uname -r) ($(uname -v))"
/opt/mip6/bin/python - <<'EOF'
from mip6agent.io.dataplane import probe
caps = probe()
print(f"=== probe: seg6={caps.seg6} ip6tnl={caps.ip6tnl} esp={caps.esp} mip6={caps.mip6}")
for name, reason in caps.reasons.items():
    print(f"===   {name}: {reason}")
EOF

# One pytest run: a name (for the JUnit file), then pytest's arguments. The first failing
# run's exit code is the VM's.
run() {
  local name=$1 status started=$SECONDS
  shift
  echo "=== pytest ($name): $*"
  "$PYTEST" -p no:cacheprovider -v --junitxml="$SHARE/junit-$name.xml" "$@"
  status=$?
  echo "=== pytest ($name) exit $status after $((SECONDS - started)) s"
  if [ "$rc" -eq 0 ]; then rc=$status; fi
}

if [ -f "$SHARE/args" ]; then
  mapfile -d '' -t args <"$SHARE/args"
  run custom "${args[@]}"
else
  # Every data-plane test on both backends (seg6 and ip6tnl both exist on Debian's kernel),
  # then real agents with the ip6tnl backend forced.
  run dataplane agent/tests/test_dataplane.py
  MIP6_TEST_DATAPLANE=ip6tnl run agent-ip6tnl agent/tests/test_agent_integration.py
fi
echo "$rc" >"$SHARE/rc"
echo "=== done: exit $rc"
