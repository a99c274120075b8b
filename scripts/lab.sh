#!/usr/bin/env bash
# The demo: a 3-node lab with two pods per node, pods talking, the leak detector watching the
# underlay, everything removed afterwards. Pass --stay to keep it up until Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# shellcheck source=scripts/release-build.sh
. scripts/release-build.sh
build_release_with meshcrypt-lab
exec "${CARGO_TARGET_DIR:-target}/release/meshcrypt-lab" "$@"
