#!/usr/bin/env bash
# apt-get install the packages given that are not installed yet; silent when none is missing.
#
# Usage: lab/apt-install-missing.sh [--no-install-recommends] PACKAGE...   (as root)
# Used by the Makefile (apt), lab/bootstrap.sh and lab/kernel-vm/run.sh.
set -euo pipefail

options=()
if [ "${1:-}" = "--no-install-recommends" ]; then
  options+=("$1")
  shift
fi

missing=()
for package in "$@"; do
  # "install ok installed" only: dpkg -s also succeeds for removed packages' leftovers.
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q '^install ok installed$' \
    || missing+=("$package")
done
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
echo "installing ${missing[*]}" >&2
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${options[@]}" "${missing[@]}" >/dev/null
