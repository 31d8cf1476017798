#!/usr/bin/env bash
# Prepare this (Debian, root) machine for the Podman lab; safe to run any number of times.
#
# 1. apt-get install the container tooling that is missing (podman with the runc runtime
#    and the netavark network backend, iptables for netavark, debootstrap for the image).
# 2. Write the containers.conf settings the lab needs on these machines, each only when
#    it is not set already: runc (crun fails here: cgroup v1 hybrid, no CAP_SYS_RESOURCE),
#    ulimits the sandbox allows, and the netavark network backend (podman 4 otherwise
#    guesses between CNI and netavark from what is on disk).
#
# Usage: lab/bootstrap.sh            (as root)
#        LAB_CONTAINERS_CONF=/path lab/bootstrap.sh   (another containers.conf, for tests)
set -euo pipefail

PACKAGES=(podman runc netavark iptables debootstrap)
CONF=${LAB_CONTAINERS_CONF:-/etc/containers/containers.conf}

if [ "$(id -u)" -ne 0 ]; then
  echo "lab/bootstrap.sh: run as root (rootful Podman)" >&2
  exit 1
fi

"$(dirname "${BASH_SOURCE[0]}")"/apt-install-missing.sh --no-install-recommends "${PACKAGES[@]}"

# Add each key to its [section] unless the file sets it already (in that section, even
# to another value: an operator's choice wins). Keeps the rest of the file as it is.
mkdir -p "$(dirname "$CONF")"
touch "$CONF"
python3 - "$CONF" <<'EOF'
import re
import sys
import tomllib

path = sys.argv[1]
wanted = {
    "containers": {"default_ulimits": '["nofile=20000:20000", "nproc=32768:32768"]'},
    "engine": {"runtime": '"runc"'},
    "network": {"network_backend": '"netavark"'},
}
text = open(path).read()
current = tomllib.loads(text)
lines = text.splitlines()
changed = []
for section, keys in wanted.items():
    for key, value in keys.items():
        if key in current.get(section, {}):
            continue
        header = re.compile(rf"^\s*\[\s*{section}\s*\]\s*(#.*)?$")
        at = next((i for i, line in enumerate(lines) if header.match(line)), None)
        if at is None:
            lines += ["", f"[{section}]"]
            at = len(lines) - 1
        lines.insert(at + 1, f"{key} = {value}")
        changed.append(f"[{section}] {key}")
if changed:
    new = "\n".join(lines).lstrip("\n") + "\n"
    tomllib.loads(new)  # still valid TOML, or nothing is written
    with open(path, "w") as handle:
        handle.write(new)
    print(f"lab/bootstrap.sh: set {', '.join(changed)} in {path}")
EOF

podman info --format '{{.Host.OCIRuntime.Name}} {{.Host.NetworkBackend}}' >/dev/null
echo "lab/bootstrap.sh: podman $(podman version --format '{{.Client.Version}}')," \
  "runtime $(podman info --format '{{.Host.OCIRuntime.Name}}')," \
  "network backend $(podman info --format '{{.Host.NetworkBackend}}')"
