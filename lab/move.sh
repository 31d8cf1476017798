#!/usr/bin/env bash
# Move a lab node to another link (a handover): disconnect it from every lab network it
# is on, connect it to the target link with its planned address and MAC, as
# molecule/shared/create.yml would have, and put back what Podman does not: SLAAC for
# nodes that use it (netavark switches it off on new interfaces) and the default route
# via router1 on the new link. The node sees its interface go away and a new eth0 come.
#
# Usage: lab/move.sh INSTANCE NODE LINK      e.g. lab/move.sh default mn1 foreign2
# Everything it needs is in the labels create.yml put on the container and the networks.
set -euo pipefail

if [ $# -ne 3 ]; then
  echo "usage: $0 INSTANCE NODE LINK" >&2
  exit 2
fi
instance=$1 node=$2 link=$3
container=mip6-$instance-$node
network=mip6-$instance-$link

label() { podman inspect --format "{{index .Config.Labels \"mip6-lab.$2\"}}" "$1"; }
net_label() { podman network inspect --format "{{index .Labels \"mip6-lab.$2\"}}" "$1"; }

[ "$(label "$container" node)" = "$node" ] || { echo "$container is not a lab node" >&2; exit 1; }
[ "$(net_label "$network" link)" = "$link" ] || { echo "$network is not a lab link" >&2; exit 1; }

prefix=$(podman network inspect --format '{{range .Subnets}}{{.Subnet}}{{end}}' "$network")
id=$(label "$container" id)
router=$(net_label "$network" router)
mac=$(label "$container" mac)
if [ -z "$id" ] || [ -z "$router" ] || [ "${prefix%::/64}" = "$prefix" ]; then
  echo "$container or $network lacks the labels create.yml sets (id, router, a ::/64 prefix)" >&2
  exit 1
fi
address=${prefix%%/*}$id

for old in $(podman inspect --format '{{range $name, $_ := .NetworkSettings.Networks}}{{$name}} {{end}}' "$container"); do
  podman network disconnect "$old" "$container"
done
podman network connect --ip6 "$address" ${mac:+--mac-address "$mac"} "$network" "$container"
if [ "$(label "$container" slaac)" = true ]; then
  podman exec "$container" sysctl -q -w net.ipv6.conf.eth0.autoconf=1
fi
podman exec "$container" ip -6 route replace default via "$router" dev eth0 metric 512
echo "$node: $link $address"
