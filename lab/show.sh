#!/usr/bin/env bash
# Show that a converged lab works (make lab runs it last): wait until ha1 binds every
# mobile node that is away from home, print ha1's binding cache (mip6stat -b), and ping
# mn1's home address from cn1, through ha1's tunnel when mn1 is away.
#
# Usage: lab/show.sh [INSTANCE]      (default: lab, the instance make lab creates)
set -euo pipefail

instance=${1:-lab}
ha=mip6-$instance-ha1
cn=mip6-$instance-cn1
hoa=2001:db8:1::100 # mn1's home address (inventories/lab/host_vars/mn1.yml)

for node in ha1 cn1 mn1; do
  if ! podman container exists "mip6-$instance-$node"; then
    echo "lab/show.sh: no container mip6-$instance-$node: is the lab up (make lab)?" >&2
    exit 1
  fi
done

# mn1 starts on foreign1 (molecule/shared/vars/topology.yml), so it must register.
for _ in $(seq 60); do
  if podman exec "$ha" mip6stat -b 2>/dev/null | grep -q "^$hoa "; then
    break
  fi
  sleep 1
done

echo "== ha1: mip6stat -b (binding cache)"
podman exec "$ha" mip6stat -b
echo
echo "== cn1: ping $hoa (mn1's home address)"
podman exec "$cn" ping -6 -c 3 -i 0.2 -W 2 "$hoa"
