#!/usr/bin/env bash
# Run the data-plane tests on a Debian distro kernel under qemu, and exit with pytest's code.
#
# The development machines' kernel has no CONFIG_IPV6_TUNNEL, so the ip6tnl backend can
# only run for real in a VM (docs/dataplane.md, "Testing ip6tnl on a real kernel"):
# 1. apt-get install what is missing (qemu-system-x86, debootstrap, e2fsprogs);
# 2. build the VM's root once (build-image.sh: debootstrap bookworm with linux-image-amd64,
#    Python and the pinned test packages; cached by a hash of its inputs);
# 3. boot that root's own kernel and initrd under qemu (KVM when it works, else TCG) with no
#    network device, the checkout as a tar in a per-run 9p share, the disk copy-on-write;
# 4. in the VM (guest.sh): agent/tests/test_dataplane.py on every backend the kernel has,
#    then agent/tests/test_agent_integration.py with MIP6_TEST_DATAPLANE=ip6tnl;
# 5. power off; exit with the first failing pytest's code (124: the VM timed out).
#
# Usage: lab/kernel-vm/run.sh                 (as root) the default runs above
#        lab/kernel-vm/run.sh PYTEST-ARGS...  one pytest run with these arguments instead,
#                                             e.g. agent/tests/test_dataplane.py -k ip6tnl
# Environment: KVM_TIMEOUT (seconds for the VM, default 900; 3600 under TCG), KVM_MEMORY
# (MB, default 2048), KVM_CPUS (default 2; 1 under TCG), KVM_ACCEL (kvm or tcg, default: probe),
# MIP6_TEST_* and MIP6_INTEROP_* (passed to the VM), KVM_CACHE (see build-image.sh),
# KVM_SHARE_FILES (colon-separated host files copied into the share's files/, e.g. a peer
# implementation's binary; the VM sees them in /mnt/share/files/), KVM_LAST_RUN (where the
# results go, default <cache>/last-run).
# Results of the last run (console log, JUnit XML, timings, and whatever the VM wrote to
# the share's out/) stay in KVM_LAST_RUN.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
CACHE=${KVM_CACHE:-$REPO/.cache/kernel-vm}
export KVM_CACHE=$CACHE
PACKAGES=(qemu-system-x86 debootstrap e2fsprogs)

log() { echo "kernel-vm: $*" >&2; }

if [ "$(id -u)" -ne 0 ]; then
  log "run as root (debootstrap, chroot, /dev/kvm)"
  exit 1
fi
started=$SECONDS

"$HERE/.."/apt-install-missing.sh --no-install-recommends "${PACKAGES[@]}"

image_started=$SECONDS
IMAGE=$("$HERE/build-image.sh")
image_seconds=$((SECONDS - image_started))
KERNEL=$(cat "$IMAGE/kernel-version")

QEMU_PID=""
RUN=""
# shellcheck disable=SC2317 # run by the EXIT trap
cleanup() {
  if [ -n "$QEMU_PID" ] && kill -0 "$QEMU_PID" 2>/dev/null; then
    log "stopping qemu (pid $QEMU_PID)"
    kill -TERM "$QEMU_PID" 2>/dev/null || true
    for _ in 1 2 3 4 5 6 7 8 9 10; do
      kill -0 "$QEMU_PID" 2>/dev/null || break
      sleep 0.5
    done
    kill -KILL "$QEMU_PID" 2>/dev/null || true
    wait "$QEMU_PID" 2>/dev/null || true
  fi
  if [ -n "$RUN" ]; then rm -rf --one-file-system "$RUN"; fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# KVM unless it is missing or refuses this CPU model. Nested under some hypervisors
# `-cpu host` fails to set IA32_ARCH_CAPABILITIES (MSR 0x10a), hence -arch-capabilities.
KVM_CPU=(-accel kvm -cpu "host,-arch-capabilities")
TCG_CPU=(-accel tcg -cpu max)
accel=${KVM_ACCEL:-}
if [ -z "$accel" ]; then
  accel=tcg
  if [ -d /sys/module/kvm_pvm ]; then
    # PVM (pagetable-based nested virtualization, no VMX/SVM) runs only guests built as PVM
    # guests: a stock Debian kernel sat in its decompressor for 300 s on such a machine.
    log "/dev/kvm is kvm_pvm, which cannot boot a stock distro kernel"
  elif [ -w /dev/kvm ]; then
    # A paused VM that stays up for a second: KVM initialised with this CPU model.
    probe_rc=0
    timeout 1 qemu-system-x86_64 "${KVM_CPU[@]}" -S -nodefaults -no-user-config \
      -display none -nic none -m 64 >/dev/null 2>&1 || probe_rc=$?
    if [ "$probe_rc" -eq 124 ]; then accel=kvm; else log "KVM unusable (qemu exit $probe_rc)"; fi
  else
    log "no writable /dev/kvm"
  fi
fi
case "$accel" in
  kvm) CPU=("${KVM_CPU[@]}"); timeout_default=900 ;;
  # One vCPU under TCG: on a 2-core host two (multi-threaded TCG) left the guest silent
  # for 16 minutes before the first console line, where one boots in seconds.
  tcg) CPU=("${TCG_CPU[@]}"); timeout_default=3600; tcg_cpus=1; log "using TCG (software emulation): slow" ;;
  *) log "KVM_ACCEL must be kvm or tcg, not $accel"; exit 2 ;;
esac
TIMEOUT=${KVM_TIMEOUT:-$timeout_default}

# The run's share: the checkout (tracked and untracked files, not ignored ones) as a tar,
# the guest script, optional pytest arguments and environment. The VM writes results here.
RUN=$(mktemp -d /var/tmp/mip6-kernel-vm-run.XXXXXX)
SHARE=$RUN/share
mkdir -p "$SHARE"
if git -C "$REPO" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
  # Files deleted in the work tree but still tracked are skipped (--ignore-failed-read).
  (cd "$REPO" && git ls-files -z -co --exclude-standard \
    | tar --null --ignore-failed-read -cf "$SHARE/repo.tar" -T - 2>/dev/null)
else
  tar -C "$REPO" --exclude=./.venv --exclude=./.build --exclude=./.cache -cf "$SHARE/repo.tar" .
fi
cp "$HERE/guest.sh" "$SHARE/guest.sh"
mkdir -p "$SHARE/out"
if [ -n "${KVM_SHARE_FILES:-}" ]; then
  mkdir -p "$SHARE/files"
  IFS=: read -r -a share_files <<<"$KVM_SHARE_FILES"
  for file in "${share_files[@]}"; do
    [ -f "$file" ] || { log "KVM_SHARE_FILES: no file $file"; exit 2; }
    cp "$file" "$SHARE/files/"
  done
fi
if [ $# -gt 0 ]; then printf '%s\0' "$@" >"$SHARE/args"; fi
: >"$SHARE/env"
while IFS= read -r name; do
  printf '%s=%q\n' "$name" "${!name}" >>"$SHARE/env"
done < <(compgen -e | grep -E '^MIP6_(TEST|INTEROP)_' || true)

CPUS=${KVM_CPUS:-${tcg_cpus:-2}}
log "booting Debian kernel $KERNEL ($accel, $CPUS CPUs, ${KVM_MEMORY:-2048} MB," \
  "timeout ${TIMEOUT} s)"
vm_started=$SECONDS
# No network device at all (-nodefaults, -nic none): test traffic stays in the VM's
# namespaces. The disk is copy-on-write (snapshot=on): the cached image never changes.
timeout -k 10 "$TIMEOUT" qemu-system-x86_64 "${CPU[@]}" \
  -machine q35 -m "${KVM_MEMORY:-2048}" -smp "$CPUS" \
  -nodefaults -no-user-config -display none -nic none -no-reboot \
  -chardev "stdio,id=console,signal=off,logfile=$RUN/console.log" -serial chardev:console \
  -kernel "$IMAGE/vmlinuz" -initrd "$IMAGE/initrd.img" \
  -append "root=/dev/vda rw console=ttyS0 init=/usr/local/sbin/mip6-vm-init panic=-1 quiet loglevel=3" \
  -drive "file=$IMAGE/root.img,format=raw,if=virtio,snapshot=on" \
  -virtfs "local,path=$SHARE,mount_tag=share,security_model=none,id=share" \
  -device virtio-rng-pci \
  </dev/null &
QEMU_PID=$!
qemu_rc=0
wait "$QEMU_PID" || qemu_rc=$?
QEMU_PID=""
vm_seconds=$((SECONDS - vm_started))

if [ -f "$SHARE/rc" ]; then
  rc=$(cat "$SHARE/rc")
elif [ "$qemu_rc" -eq 124 ]; then
  log "the VM did not finish within ${TIMEOUT} s"
  rc=124
else
  log "the VM stopped without a test result (qemu exit $qemu_rc)"
  rc=1
fi

LAST=${KVM_LAST_RUN:-$CACHE/last-run}
rm -rf "$LAST"
mkdir -p "$LAST"
cp "$RUN/console.log" "$LAST/" 2>/dev/null || true
cp "$SHARE"/junit-*.xml "$LAST/" 2>/dev/null || true
cp -r "$SHARE/out" "$LAST/" 2>/dev/null || true
summary="kernel $KERNEL, accel $accel, image $image_seconds s, VM $vm_seconds s,"
summary+=" total $((SECONDS - started)) s, exit $rc"
echo "$summary" >"$LAST/summary.txt"
log "$summary (logs: $LAST)"
exit "$rc"
