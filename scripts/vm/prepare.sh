#!/usr/bin/env bash
# Prepares the VM that runs the kernel backend's tests: this machine's kernel may have no WireGuard
# module (and none can be loaded into a container's kernel), so they boot Debian's kernel, which
# has it, under qemu (scripts/vm/run.sh). Installs qemu and busybox from Debian, downloads Debian's
# current kernel package (extracted, not installed) and builds an initramfs of busybox, the
# modules the tests need (in dependency order) and scripts/vm/init. Idempotent: a VM prepared
# from the same kernel version, this script and init is not made again. As root, on Debian x86_64.
#
#   bash scripts/vm/prepare.sh      # into target/vm (or $MESHCRYPT_VM_DIR)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
vm="${MESHCRYPT_VM_DIR:-$here/../../target/vm}"

if [ "$(uname -m)" != x86_64 ]; then
  echo "the kernel VM runs on x86_64 only (qemu-system-x86_64 with Debian's amd64 kernel)" >&2
  exit 1
fi

# qemu and a static busybox for the VM; kmod's modprobe and depmod and xz for the modules.
# shellcheck source=scripts/debian-packages.sh
. "$here/../debian-packages.sh"
# A machine whose qemu-utils comes from backports (as some machine images ship it) cannot take
# the release's own qemu-system-x86 beside it (apt would remove qemu-utils): qemu-system-x86 then
# comes from backports too.
qemu_utils="$(dpkg-query -W -f='${Version}' qemu-utils 2>/dev/null || true)"
if [[ "$qemu_utils" == *~bpo* ]]; then
  install_debian_backports qemu-system-x86
fi
install_debian_packages qemu-system-x86 busybox-static kmod xz-utils

# The versioned package behind Debian's metapackage, e.g. linux-image-6.1.0-57-amd64.
package="$(apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-[0-9]/ { print $2; exit }')"
if [ -z "$package" ]; then
  apt-get update -qq
  package="$(apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-[0-9]/ { print $2; exit }')"
fi
version="${package#linux-image-}"
# What a prepared VM was made from: the kernel version and this script and the init it packs, so
# a change to either rebuilds the initramfs instead of booting a stale one.
stamp="$version $(cat "$here/prepare.sh" "$here/init" | sha256sum | cut -c1-16)"
if [ -f "$vm/ready" ] && [ "$(cat "$vm/ready")" = "$stamp" ]; then
  exit 0
fi
echo "preparing the kernel VM: $package into $vm"
rm -rf "$vm"
mkdir -p "$vm/download" "$vm/kernel"
(cd "$vm/download" && apt-get download -qq "$package" 2>/dev/null || apt-get download "$package")
dpkg-deb -x "$vm"/download/*.deb "$vm/kernel"
cp "$vm/kernel/boot/vmlinuz-$version" "$vm/vmlinuz"

root="$vm/initramfs"
mkdir -p "$root/bin" "$root/modules"
cp /bin/busybox "$root/bin/busybox"
cp "$here/init" "$root/init"
chmod 0755 "$root/init"
# The package's modules.dep is made at install time: make it here.
depmod -b "$vm/kernel" "$version"
# WireGuard (with its crypto and UDP tunnel modules); veth, bridge and dummy for the tests'
# namespaces; tun for the userspace device; 9p over virtio for the host's files; overlay for a
# writable root over them.
modprobe -d "$vm/kernel" -S "$version" -a --show-depends \
  wireguard veth bridge tun dummy 9p 9pnet_virtio virtio_pci overlay |
  awk '$1 == "insmod" { print $2 }' |
  while read -r module; do
    name="$(basename "$module")"
    case "$name" in
      *.xz) xz -dc "$module" >"$root/modules/${name%.xz}"; name="${name%.xz}" ;;
      *) cp "$module" "$root/modules/$name" ;;
    esac
    # Each module once, in the order modprobe gave (dependencies first).
    grep -qxF "$name" "$root/modules/order" 2>/dev/null || echo "$name" >>"$root/modules/order"
  done
(cd "$root" && find . | busybox cpio -o -H newc 2>/dev/null | gzip -1) >"$vm/initramfs.cpio.gz"
rm -rf "$vm/download" "$vm/kernel"
echo "$stamp" >"$vm/ready"
echo "kernel VM ready: Linux $version"
