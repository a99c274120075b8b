#!/usr/bin/env bash
# Builds the meshcrypt image from deploy/Dockerfile without a container engine or an image
# registry, runs the binary inside it, and reports its size. As root, on a Debian machine (CI runs
# it from .ci/run). Debian's buildah builds the image (no daemon: vfs storage, chroot isolation)
# and mmdebstrap assembles the runtime base from Debian's packages, so everything comes from
# Debian's archive and crates.io.
#
#   bash scripts/image.sh          # -> localhost/meshcrypt:<version> and target/image/meshcrypt-<version>.oci.tar
#
# Steps:
#   1. cargo build --release --locked -p meshcrypt (after scripts/bench.sh, as in CI, it is already
#      built: same profile, same features).
#   2. The runtime base, distroless-style: mmdebstrap's `extract` variant unpacks libc6 and
#      libgcc-s1 (with their dependency gcc-12-base or its release's equivalent) of this machine's
#      Debian release, so the base's glibc is the one the binary was linked against; the CA bundle
#      is made from the ca-certificates package's certificates (its own maintainer script, which
#      would need perl and openssl in the image, is not run). No shell, no dpkg, no apt. Each
#      package's control record goes to /var/lib/dpkg/status.d/ (as distroless images keep them),
#      so image scanners can still list the packages. Imported with `buildah from scratch` + `add`.
#   3. `buildah build -f deploy/Dockerfile` with that base as RUNTIME_BASE and the binary of step 1
#      as the `build` stage (`--build-context build=DIR`: the Rust stage is skipped): the same
#      Dockerfile users build with `docker buildx`, only its two inputs swapped.
#   4. `meshcrypt --version` and `meshcrypt agent --help` inside the image's root filesystem
#      (`buildah mount`, then chroot(8): the image's own glibc and loader, nothing of the host's),
#      that no shell is in it, and its size; the image is written as an OCI archive under
#      target/image/. Not `buildah run`: it re-executes buildah from a sealed memfd copy of its own
#      60 MB binary, and that seal (F_ADD_SEALS with F_SEAL_WRITE) fails now and then with EBUSY
#      while the kernel still counts a reference on one of the copy's pages (it retries briefly,
#      then returns EBUSY); CI once failed on it ("Close_Fd sealing memfd copy: Device or
#      resource busy"). chroot needs no copy of anything.
#
# Storage stays under target/image/ (its own buildah root), apart from any other containers
# storage on the machine. Push the result with skopeo or buildah (docs/eks.md, "The image").
set -euo pipefail
cd "$(dirname "$0")/.."
started=$SECONDS
say() { printf '== image: %s\n' "$*"; }

# --- tools ------------------------------------------------------------------------------------
# shellcheck source=scripts/debian-packages.sh
. scripts/debian-packages.sh
install_debian_packages buildah mmdebstrap >/dev/null
say "$(buildah --version), mmdebstrap $(mmdebstrap --version 2>&1 | awk '{print $2}')"

. /etc/os-release
suite=${VERSION_CODENAME:?no VERSION_CODENAME in /etc/os-release: not a Debian release}
target="${CARGO_TARGET_DIR:-target}"
work="$target/image"
mkdir -p "$work"
work=$(cd "$work" && pwd)
base_image="localhost/meshcrypt-runtime-base:$suite"
bh() { buildah --root "$work/storage" --runroot "$work/run" --storage-driver vfs "$@"; }

# --- 1. the binary ------------------------------------------------------------------------------
say "cargo build --release --locked -p meshcrypt"
t=$SECONDS
cargo build --release --locked -p meshcrypt
rm -rf "$work/build-context"
mkdir -p "$work/build-context/out"
# As the Dockerfile's build stage does: no debug line tables in the image, symbols kept.
objcopy --strip-debug "$target/release/meshcrypt" "$work/build-context/out/meshcrypt"
chmod 0755 "$work/build-context/out/meshcrypt"
version=$("$target/release/meshcrypt" --version | awk '{print $2}')
image="localhost/meshcrypt:$version"
say "binary: $(du -h "$target/release/meshcrypt" | cut -f1) built, $(du -h "$work/build-context/out/meshcrypt" | cut -f1) in the image, $((SECONDS - t)) s"
echo "   needs: $(ldd "$work/build-context/out/meshcrypt" | awk '{print $1}' | grep -v vdso | tr '\n' ' ')"

# --- 2. the runtime base -------------------------------------------------------------------------
say "runtime base: Debian $suite libc6 + libgcc-s1 + CA certificates (mmdebstrap --variant=extract)"
t=$SECONDS
rootfs="$work/rootfs"
rm -rf "$rootfs"
# The extract hook runs while apt's lists are still in place: it fetches ca-certificates' .deb
# next to the others, without unpacking it or its dependencies (openssl, debconf and perl).
mmdebstrap --quiet --variant=extract --include=libc6,libgcc-s1 --skip=cleanup/apt/cache \
  --extract-hook='cd "$1/var/cache/apt/archives" && APT_CONFIG="$MMDEBSTRAP_APT_CONFIG" apt-get download -qq -o APT::Sandbox::User=root ca-certificates' \
  "$suite" "$rootfs"
debs=("$rootfs"/var/cache/apt/archives/*.deb)
ca_deb=$(ls "$rootfs"/var/cache/apt/archives/ca-certificates_*.deb)
dpkg-deb --fsys-tarfile "$ca_deb" | tar -x -C "$rootfs" ./usr/share/ca-certificates
mkdir -p "$rootfs/etc/ssl/certs"
cat "$rootfs"/usr/share/ca-certificates/mozilla/*.crt > "$rootfs/etc/ssl/certs/ca-certificates.crt"
roots=$(grep -c 'BEGIN CERTIFICATE' "$rootfs/etc/ssl/certs/ca-certificates.crt")
mkdir -p "$rootfs/var/lib/dpkg/status.d"
packages=()
for deb in "${debs[@]}"; do
  package=$(dpkg-deb --field "$deb" Package)
  { dpkg-deb --field "$deb"; echo "Status: install ok installed"; } > "$rootfs/var/lib/dpkg/status.d/$package"
  packages+=("$package=$(dpkg-deb --field "$deb" Version)")
done
# What mmdebstrap's apt and dpkg left behind is no part of the image (nor are device nodes: the
# container runtime provides /dev).
rm -rf "$rootfs"/etc/apt "$rootfs"/etc/dpkg "$rootfs"/etc/fstab "$rootfs"/etc/hostname \
  "$rootfs"/etc/resolv.conf "$rootfs"/var/cache "$rootfs"/var/lib/apt "$rootfs"/var/log "$rootfs"/dev \
  "$rootfs"/var/lib/dpkg/{arch,alternatives,available,cmethopt,diversions,info,lock,lock-frontend,statoverride,status,status-old,triggers,updates}
# Names for root and the registry's uid (65532), as distroless has them; hosts before DNS.
printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' > "$rootfs/etc/passwd"
printf 'root:x:0:\nnonroot:x:65532:\n' > "$rootfs/etc/group"
printf 'hosts: files dns\n' > "$rootfs/etc/nsswitch.conf"
mkdir -p "$rootfs/tmp" && chmod 1777 "$rootfs/tmp"
if [ -e "$rootfs/bin/sh" ] || [ -e "$rootfs/usr/bin/sh" ]; then
  echo "image: the runtime base holds a shell; it should not" >&2
  exit 1
fi
echo "   packages: ${packages[*]}"
echo "   CA roots: $roots; base: $(du -sh "$rootfs" | cut -f1)"
bh rmi --force "$base_image" >/dev/null 2>&1 || true
container=$(bh from scratch)
bh add --quiet "$container" "$rootfs/" / >/dev/null
bh config --label "org.opencontainers.image.description=meshcrypt runtime base: Debian $suite libc6, libgcc-s1, CA certificates" "$container"
bh commit --quiet --rm "$container" "$base_image" >/dev/null
say "runtime base $base_image, $((SECONDS - t)) s"

# --- 3. the image, from deploy/Dockerfile --------------------------------------------------------
say "buildah build -f deploy/Dockerfile --build-arg RUNTIME_BASE=$base_image --build-context build=$work/build-context"
t=$SECONDS
bh rmi --force "$image" >/dev/null 2>&1 || true
bh build --quiet --isolation chroot --pull=never --layers=false \
  -f deploy/Dockerfile --ignorefile deploy/Dockerfile.dockerignore \
  --build-arg RUNTIME_BASE="$base_image" \
  --build-context build="$work/build-context" \
  -t "$image" . >/dev/null
bh rmi --prune >/dev/null 2>&1 || true
say "built $image in $((SECONDS - t)) s"

# --- 4. try it -----------------------------------------------------------------------------------
container=$(bh from --pull=never "$image")
trap 'bh umount "$container" >/dev/null 2>&1 || true; bh rm "$container" >/dev/null 2>&1 || true' EXIT
rootfs=$(bh mount "$container")
entrypoint=$(bh inspect --type image --format '{{.OCIv1.Config.Entrypoint}} {{.OCIv1.Config.Cmd}}, user {{.OCIv1.Config.User}}' "$image")
say "config: entrypoint/cmd $entrypoint"
# In the image's root, with an empty environment but for PATH: what the binary loads comes from the
# image alone.
chroot=$(command -v chroot)
in_image() { env -i PATH=/usr/local/bin:/usr/bin:/bin "$chroot" "$rootfs" "$@"; }
say "run: meshcrypt --version"
in_image /usr/local/bin/meshcrypt --version
say "run: meshcrypt agent --help"
in_image /usr/local/bin/meshcrypt agent --help
if in_image /bin/sh -c true >/dev/null 2>&1; then
  echo "image: /bin/sh ran inside the image; it should hold no shell" >&2
  exit 1
fi
say "run: /bin/sh -c true fails: no shell in the image"
# Unmounted before the push (the EXIT trap only covers a failure on the way here).
bh umount "$container" >/dev/null

archive="$work/meshcrypt-$version.oci.tar"
rm -f "$archive"
bh push --quiet "$image" "oci-archive:$archive:meshcrypt:$version" >/dev/null
size=$(bh images --format '{{.Size}}' "$image")
layers=$(bh inspect --type image --format '{{len .OCIv1.RootFS.DiffIDs}}' "$image")
say "$image: $size unpacked, $layers layers; OCI archive (compressed layers) $(du -h "$archive" | cut -f1): ${archive#"$PWD"/}"
say "done in $((SECONDS - started)) s"
