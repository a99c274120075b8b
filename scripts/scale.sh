#!/usr/bin/env bash
# The scale harness (BENCHMARKS.md, "Scale and churn"): three real agents in the lab, the rest of a
# 5,000-node cluster simulated in the test API server, 10,000 churn events. As root. A benchmark:
# it fails only when the mesh does not converge (nothing stale or missing against the API's truth).
#
#   bash scripts/scale.sh                          # podCIDR mode, 5,000 nodes
#   bash scripts/scale.sh --pods-per-node 30       # pod-IP mode, 150,000 pods
#   bash scripts/scale.sh --nodes 500 --events 1000   # a quick look
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
target="${CARGO_TARGET_DIR:-target}"
cargo build --release --locked -p meshcrypt -p meshcrypt-integration --bin meshcrypt --bin meshcrypt-scale
MESHCRYPT_BIN="$target/release/meshcrypt" "$target/release/meshcrypt-scale" "$@"
