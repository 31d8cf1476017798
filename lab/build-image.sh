#!/usr/bin/env bash
# Build (once) the lab's Debian bookworm image and print its tag on stdout.
#
# The tag is localhost/mip6-lab:<key>, where <key> is the first 12 hex digits of a SHA-256
# over this script and every file under lab/image/ (the package list and the files copied
# into the image), by path relative to lab/. The image is built only when no image with
# that tag exists, so a run with unchanged inputs takes well under a second, and an edit
# to the package list or to this script builds a new one. There is no registry here: the
# root file system comes from debootstrap (Debian's package mirror) and is imported with
# `podman import`.
#
# Usage: lab/build-image.sh            build if missing; print the tag
#        lab/build-image.sh --tag      print the tag only (no podman, no build)
#        lab/build-image.sh --prune    build if missing, then remove the other lab images
#                                      (older keys) that no container uses
# Environment: LAB_MIRROR (default http://deb.debian.org/debian), LAB_IMAGE_REPO
# (default localhost/mip6-lab). Progress goes to stderr; only the tag goes to stdout.
set -euo pipefail

LAB_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=${LAB_IMAGE_REPO:-localhost/mip6-lab}
MIRROR=${LAB_MIRROR:-http://deb.debian.org/debian}
SUITE=bookworm
LOCK=/run/lock/mip6-lab-image.lock

key() {
  (cd "$LAB_DIR" && find build-image.sh image -type f -print0 | LC_ALL=C sort -z \
    | xargs -0 sha256sum) | sha256sum | cut -c1-12
}

log() { echo "build-image: $*" >&2; }

TAG="$REPO:$(key)"
case "${1:-}" in
  --tag) echo "$TAG"; exit 0 ;;
  --prune | "") ;;
  *) echo "usage: $0 [--tag|--prune]" >&2; exit 2 ;;
esac

WORK=""
cleanup() {
  [ -n "$WORK" ] || return 0
  # debootstrap mounts /proc and /sys in the target while it runs: unmount whatever an
  # interrupted run left before deleting, and never cross into another file system.
  umount -R -l "$WORK"/rootfs/* 2>/dev/null || true
  rm -rf --one-file-system "$WORK"
}
trap cleanup EXIT

build() {
  local root packages started=$SECONDS
  WORK=$(mktemp -d /var/tmp/mip6-lab-image.XXXXXX)
  root=$WORK/rootfs
  packages=$(grep -vE '^\s*(#|$)' "$LAB_DIR/image/packages.txt" | paste -sd, -)
  log "debootstrap $SUITE ($packages) from $MIRROR"
  debootstrap --variant=minbase --include="$packages" "$SUITE" "$root" "$MIRROR" \
    >"$WORK/debootstrap.log" 2>&1 || { tail -20 "$WORK/debootstrap.log" >&2; return 1; }

  # Files for the image (systemd drop-ins and units), then container-specific tweaks.
  cp -R --preserve=mode "$LAB_DIR/image/rootfs/." "$root/"
  chmod 0755 "$root/usr/local/sbin/mip6-lab-init"
  # A fresh machine id per container (systemd makes one at boot when the file is empty).
  : >"$root/etc/machine-id"
  rm -f "$root/var/lib/dbus/machine-id"
  # Each container makes its own ssh host keys at first start (ssh.service drop-in).
  rm -f "$root"/etc/ssh/ssh_host_*
  # Nothing to do in a container: consoles, hardware, clock, kernel modules.
  systemctl --root="$root" mask --quiet \
    console-getty.service getty@tty1.service serial-getty@.service \
    systemd-udevd.service systemd-udev-trigger.service systemd-timesyncd.service \
    systemd-modules-load.service sys-kernel-config.mount sys-kernel-debug.mount \
    sys-kernel-tracing.mount 2>/dev/null || true
  rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/* \
    "$root"/var/log/*.log "$root"/var/log/apt/*

  log "importing into podman as $TAG"
  tar --numeric-owner -C "$root" -c . | podman import --quiet \
    --change 'CMD ["/usr/local/sbin/mip6-lab-init"]' \
    --change 'ENV container=podman' \
    --change 'ENV LANG=C.UTF-8' \
    --change 'STOPSIGNAL SIGRTMIN+3' \
    --change "LABEL mip6-lab.image=$(key)" \
    --message "mip6 lab: debootstrap $SUITE minbase" \
    - "$TAG" >/dev/null
  log "built $TAG in $((SECONDS - started)) s"
}

mkdir -p "$(dirname "$LOCK")"
exec 9>"$LOCK"
flock 9 # one build at a time; a second caller waits, then finds the image
if podman image exists "$TAG"; then
  log "$TAG exists: reusing it"
else
  command -v debootstrap >/dev/null || { log "debootstrap missing: run lab/bootstrap.sh"; exit 1; }
  build
fi

if [ "${1:-}" = --prune ]; then
  podman images --filter label=mip6-lab.image --format '{{.Repository}}:{{.Tag}}' \
    | while read -r old; do
      [ "$old" = "$TAG" ] && continue
      if podman rmi "$old" >/dev/null 2>&1; then log "removed $old"; else log "kept $old (in use)"; fi
    done
fi
echo "$TAG"
