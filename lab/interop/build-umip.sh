#!/usr/bin/env bash
# Build UMIP's mip6d (the Linux reference Mobile IPv6 daemon, the interop test peer) as a
# static binary from its source tarball, once, and print the binary's path on stdout.
#
# The build happens under /var/tmp and only the binary (plus the tarball's SHA-256 and the
# build log) is kept, in <cache>/umip-<key>/, the key being the first 12 hex digits of a
# SHA-256 over the tarball's SHA-256 and this script; older keys are deleted. Nothing of
# UMIP's source or build output goes into the checkout.
#
# Usage: lab/interop/build-umip.sh TARBALL     (as root for apt; see docs/interop.md)
# Environment: INTEROP_CACHE (default <repo>/.cache/interop). Progress goes to stderr.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
CACHE=${INTEROP_CACHE:-$REPO/.cache/interop}
PACKAGES=(autoconf automake bison flex indent build-essential)
LOCK=/run/lock/mip6-interop-umip.lock

log() { echo "umip: $*" >&2; }

TARBALL=${1:-}
if [ -z "$TARBALL" ] || [ ! -f "$TARBALL" ]; then
  log "no UMIP source tarball at '${TARBALL}': pass UMIP_SRC=/path/to/umip-1.0.tar.gz"
  exit 2
fi
TARBALL=$(cd "$(dirname "$TARBALL")" && pwd)/$(basename "$TARBALL")
SUM=$(sha256sum "$TARBALL" | cut -d' ' -f1)
KEY=$({ echo "$SUM"; cat "$HERE/build-umip.sh"; } | sha256sum | cut -c1-12)
OUT=$CACHE/umip-$KEY

mkdir -p "$(dirname "$LOCK")"
exec 9>"$LOCK"
flock 9
if [ -x "$OUT/mip6d" ]; then
  log "$OUT/mip6d exists: reusing it"
  echo "$OUT/mip6d"
  exit 0
fi

"$HERE/.."/apt-install-missing.sh --no-install-recommends "${PACKAGES[@]}"

WORK=$(mktemp -d /var/tmp/mip6-umip-build.XXXXXX)
trap 'rm -rf --one-file-system "$WORK"' EXIT
started=$SECONDS
tar -C "$WORK" -xzf "$TARBALL"
src=$(find "$WORK" -mindepth 1 -maxdepth 1 -type d | head -1)
[ -f "$src/configure.ac" ] || { log "$TARBALL holds no configure.ac at its top"; exit 1; }
log "building $(basename "$src") from $TARBALL"
{
  cd "$src"
  autoreconf -fi
  # --with-builtin-crypto: UMIP predates OpenSSL 3's API.
  # --enable-vt: the debug console on localhost:7777 that shows the binding cache and the
  # binding update list (commands bc and bul).
  ./configure --with-builtin-crypto --enable-vt --prefix=/usr
  make -j"$(nproc)"
  rm -f src/mip6d
  make -C src LDFLAGS=-static mip6d
} >"$WORK/build.log" 2>&1 || { tail -30 "$WORK/build.log" >&2; log "build failed"; exit 1; }
# A static binary runs in the VM's Debian root whatever its libraries are.
linkage=$(ldd "$src/src/mip6d" 2>&1 || true)
case "$linkage" in
  *"not a dynamic executable"*) ;;
  *) log "mip6d is not statically linked: $linkage"; exit 1 ;;
esac
mkdir -p "$OUT.tmp"
cp "$src/src/mip6d" "$OUT.tmp/mip6d"
cp "$WORK/build.log" "$OUT.tmp/build.log"
echo "$SUM  $(basename "$TARBALL")" >"$OUT.tmp/source.sha256"
echo "$((SECONDS - started))" >"$OUT.tmp/build-seconds"
rm -rf "$OUT"
mv "$OUT.tmp" "$OUT"
for old in "$CACHE"/umip-*/; do
  [ "${old%/}" = "$OUT" ] || rm -rf --one-file-system "${old%/}"
done
log "built $OUT/mip6d in $((SECONDS - started)) s"
echo "$OUT/mip6d"
