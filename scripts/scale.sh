#!/usr/bin/env bash
# The scale harness (BENCHMARKS.md, "Scale and churn"): three real agents in the lab, the rest of a
# 5,000-node cluster simulated in the test API server, 10,000 churn events. As root. A benchmark:
# it fails only when the mesh does not converge (nothing stale or missing against the API's truth).
#
#   bash scripts/scale.sh                          # podCIDR mode, 5,000 nodes
#   bash scripts/scale.sh --pods-per-node 30       # pod-IP mode, 150,000 pods
#   bash scripts/scale.sh --nodes 300 --events 600    # a quick look
#
# Needs root, a Rust toolchain, iproute2 and wireguard-tools (installed here if missing, from
# Debian). The report alone goes to stdout; progress and installs to stderr.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" -ne 0 ]; then
  echo "the scale harness creates network namespaces: run it as root" >&2
  exit 1
fi
. scripts/debian-packages.sh
install_debian_packages iproute2 wireguard-tools >&2
target="${CARGO_TARGET_DIR:-target}"
# shellcheck source=scripts/release-build.sh
. scripts/release-build.sh
build_release_with meshcrypt-scale
MESHCRYPT_BIN="$target/release/meshcrypt" "$target/release/meshcrypt-scale" "$@"
