#!/usr/bin/env bash
# Build (once) the kernel VM's disk: a Debian bookworm root with the distro kernel, and print
# the directory that holds it (root.img, vmlinuz, initrd.img, kernel-version) on stdout.
#
# The directory is <cache>/<key>, where <key> is the first 12 hex digits of a SHA-256 over
# this script, packages.txt and the pins of the Python packages the VM installs (from
# constraints.txt). A run with unchanged inputs reuses it in well under a second; older keys
# are deleted after a successful build. Nothing of the root tree stays in the checkout: it is
# built under /var/tmp and only the finished ext4 image, kernel and initrd are kept.
#
# Usage: lab/kernel-vm/build-image.sh          (as root; needs debootstrap and e2fsprogs)
#        lab/kernel-vm/build-image.sh --key    print the key only
# Environment: KVM_CACHE (default <repo>/.cache/kernel-vm), KVM_MIRROR (default
# http://deb.debian.org/debian). Progress goes to stderr; only the directory goes to stdout.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
CACHE=${KVM_CACHE:-$REPO/.cache/kernel-vm}
MIRROR=${KVM_MIRROR:-http://deb.debian.org/debian}
SUITE=bookworm
VENV=/opt/mip6
# What the tests import (the agent itself comes from the checkout at run time); ansible-core
# runs the ipsec role itself in agent/tests/test_ipsec_esp.py.
PIP_PACKAGES=(dpkt pyroute2 PyYAML pytest hypothesis ansible-core)
LOCK=/run/lock/mip6-kernel-vm-image.lock

log() { echo "kernel-vm image: $*" >&2; }

pins() {
  local package
  for package in "${PIP_PACKAGES[@]}"; do
    grep -iE "^${package}==" "$REPO/constraints.txt" || { log "no pin for $package"; exit 1; }
  done
}

key() {
  { cat "$HERE/build-image.sh" "$HERE/packages.txt"; pins; } | sha256sum | cut -c1-12
}

KEY=$(key)
case "${1:-}" in
  --key) echo "$KEY"; exit 0 ;;
  "") ;;
  *) echo "usage: $0 [--key]" >&2; exit 2 ;;
esac
OUT=$CACHE/$KEY

WORK=""
cleanup() {
  [ -n "$WORK" ] || return 0
  # debootstrap and this script mount /proc in the target: unmount whatever an interrupted
  # run left before deleting, and never cross into another file system.
  umount -R -l "$WORK/root/proc" 2>/dev/null || true
  rm -rf --one-file-system "$WORK"
}
trap cleanup EXIT

# PID 1 inside the VM: the basics, then the run's share (9p) and the guest.sh it carries.
# Kept tiny and generic so that changing what a run does never rebuilds the image.
write_init() {
  cat >"$1" <<'EOF'
#!/bin/bash
# PID 1 of the mip6 kernel VM (lab/kernel-vm): mount, run the share's guest.sh, power off.
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8
mountpoint -q /proc || mount -t proc proc /proc
mountpoint -q /sys || mount -t sysfs sysfs /sys
mountpoint -q /dev || mount -t devtmpfs devtmpfs /dev
mount -t tmpfs -o mode=0755 tmpfs /run
mount -t tmpfs tmpfs /tmp
hostname mip6-kernel-vm
ip link set lo up
modprobe -q 9pnet_virtio && modprobe -q 9p
mkdir -p /mnt/share
if mount -t 9p -o trans=virtio,version=9p2000.L,msize=524288 share /mnt/share \
  && [ -f /mnt/share/guest.sh ]; then
  bash /mnt/share/guest.sh
else
  echo "mip6-vm-init: no run share with guest.sh"
fi
sync
echo o >/proc/sysrq-trigger # power off now: qemu exits
sleep 30
EOF
  chmod 0755 "$1"
}

build() {
  local root packages kernel started=$SECONDS size_mb
  mkdir -p "$CACHE"
  WORK=$(mktemp -d /var/tmp/mip6-kernel-vm.XXXXXX)
  root=$WORK/root
  packages=$(grep -vE '^\s*(#|$)' "$HERE/packages.txt" | paste -sd, -)
  log "debootstrap $SUITE ($packages) from $MIRROR"
  debootstrap --variant=minbase --include="$packages" "$SUITE" "$root" "$MIRROR" \
    >"$WORK/debootstrap.log" 2>&1 || { tail -20 "$WORK/debootstrap.log" >&2; return 1; }
  log "debootstrap done after $((SECONDS - started)) s"

  # pip runs in the root (its Python, its paths) with this machine's network settings.
  # PyPI may sit behind a proxy whose CA only this machine's bundle has: every variable
  # that names a bundle (requests prefers REQUESTS_CA_BUNDLE/CURL_CA_BUNDLE to --cert)
  # must name this copy, not the root's own bundle at the same path.
  cp /etc/resolv.conf "$root/etc/resolv.conf"
  cp /etc/ssl/certs/ca-certificates.crt "$root/tmp/host-ca.crt"
  pins >"$root/tmp/constraints.txt"
  mount -t proc proc "$root/proc"
  chroot "$root" python3 -m venv "$VENV"
  env -u PIP_FIND_LINKS -u PIP_CONSTRAINT -u SSL_CERT_DIR PIP_CERT=/tmp/host-ca.crt \
    REQUESTS_CA_BUNDLE=/tmp/host-ca.crt CURL_CA_BUNDLE=/tmp/host-ca.crt \
    SSL_CERT_FILE=/tmp/host-ca.crt PIP_DISABLE_PIP_VERSION_CHECK=1 \
    chroot "$root" "$VENV/bin/pip" install -q --no-cache-dir -c /tmp/constraints.txt \
    "${PIP_PACKAGES[@]}" >&2
  umount "$root/proc"
  log "pip done after $((SECONDS - started)) s"

  write_init "$root/usr/local/sbin/mip6-vm-init"
  echo mip6-kernel-vm >"$root/etc/hostname"
  printf '/dev/vda / ext4 rw,relatime 0 1\n' >"$root/etc/fstab"
  : >"$root/etc/resolv.conf" # no network in the VM
  rm -rf "$root"/tmp/* "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/* \
    "$root"/var/log/*.log "$root"/var/log/apt/*

  kernel=$(find "$root/boot" -maxdepth 1 -name 'vmlinuz-*' -printf '%f\n' | sort -V | tail -1)
  kernel=${kernel#vmlinuz-}
  if [ -z "$kernel" ] || [ ! -f "$root/boot/initrd.img-$kernel" ]; then
    log "no kernel or initrd in $root/boot"
    return 1
  fi
  mkdir -p "$WORK/out"
  cp "$root/boot/vmlinuz-$kernel" "$WORK/out/vmlinuz"
  cp "$root/boot/initrd.img-$kernel" "$WORK/out/initrd.img"
  echo "$kernel" >"$WORK/out/kernel-version"
  if findmnt -rn -o TARGET | grep -q "^$root/"; then
    log "something is still mounted under $root"
    return 1
  fi
  # ext4 straight from the tree (mke2fs -d): no loop device, no mount. Room to spare for
  # the tests' temporary files, which go to tmpfs anyway.
  size_mb=$(($(du -sm "$root" | cut -f1) * 5 / 4 + 512))
  mkfs.ext4 -q -F -L mip6root -d "$root" "$WORK/out/root.img" "${size_mb}M" >&2
  rm -rf "$OUT"
  mv "$WORK/out" "$OUT"
  log "built $OUT (kernel $kernel, ${size_mb} MB image) in $((SECONDS - started)) s"
}

mkdir -p "$(dirname "$LOCK")"
exec 9>"$LOCK"
flock 9 # one build at a time; a second caller waits, then finds the image
if [ -f "$OUT/root.img" ] && [ -f "$OUT/kernel-version" ]; then
  log "$OUT exists: reusing it"
else
  command -v debootstrap >/dev/null || { log "debootstrap missing: run lab/kernel-vm/run.sh"; exit 1; }
  build
  for old in "$CACHE"/*/; do
    [ "${old%/}" = "$OUT" ] || rm -rf --one-file-system "${old%/}"
  done
fi
echo "$OUT"
