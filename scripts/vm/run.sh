#!/usr/bin/env bash
# Runs one command inside the kernel VM (scripts/vm/prepare.sh), with this process's working
# directory and environment, and exits with its status: nextest's wrapper for the kernel backend's
# tests (.config/nextest.toml), or by hand:
#
#   bash scripts/vm/run.sh /usr/sbin/ip link add wg0 type wireguard
#
# The VM sees this machine's files read-only under a throw-away overlay, so the host's own test
# binaries run unchanged; it has no network (the tests build their own namespaces inside it).
# The status comes from a marker line carrying a per-run nonce, so nothing the command prints can
# fake it: a VM that hangs, panics or stops without the marker fails with 125.
# MESHCRYPT_VM_TIMEOUT bounds the whole VM (seconds, default 600).
set -uo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
vm="${MESHCRYPT_VM_DIR:-$here/../../target/vm}"
if [ ! -f "$vm/ready" ]; then
  bash "$here/prepare.sh" >&2 || exit 125
fi
job="$(mktemp -d /tmp/meshcrypt-vm.XXXXXX)"
trap 'rm -rf "$job"' EXIT
nonce="$(od -An -N8 -tx8 /dev/urandom | tr -d ' ')"
{
  export -p
  printf 'cd %q || exit 126\n' "$PWD"
  printf 'exec'
  printf ' %q' "$@"
  printf '\n'
} >"$job/job.sh"
# TCG, not KVM: on the machines this was built on, /dev/kvm exists but a KVM guest hangs at boot.
timeout --kill-after=10 "${MESHCRYPT_VM_TIMEOUT:-600}" \
  qemu-system-x86_64 -accel tcg -smp 2 -m 1024 -nic none \
  -display none -monitor none -serial "file:$job/console.log" -no-reboot \
  -kernel "$vm/vmlinuz" -initrd "$vm/initramfs.cpio.gz" \
  -append "console=ttyS0 quiet loglevel=3 panic=-1 meshcrypt.job=$job/job.sh meshcrypt.nonce=$nonce" \
  -virtfs "local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap" \
  </dev/null
qemu_status=$?
# The console without the marker and the kernel's power-off line (quiet and loglevel=3 keep its
# other lines off it).
grep -av -e "^VM-EXIT-CODE-$nonce=" -e '^\[ *[0-9.]*\] reboot: Power down' "$job/console.log" | tr -d '\r'
status="$(grep -a -o "VM-EXIT-CODE-$nonce=[0-9]*" "$job/console.log" | tail -n 1 | cut -d= -f2)"
if [ -z "$status" ]; then
  echo "kernel VM: no exit marker (qemu exited with $qemu_status; 124 is the timeout)" >&2
  exit 125
fi
exit "$status"
