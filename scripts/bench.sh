#!/usr/bin/env bash
# Benchmarks: criterion benches of the hot paths and the data-plane throughput bench (meshcrypt vs
# wireguard-go, and boringtun-cli when installed in target/tools). As root. `--quick` is what CI
# runs: it fails on a crash, never on a number. See BENCHMARKS.md for the full run and its table.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
quick=0
if [ "${1:-}" = "--quick" ]; then quick=1; shift; fi
target="${CARGO_TARGET_DIR:-target}"
cargo build --release --locked -p meshcrypt -p meshcrypt-benches --bins
if [ "$quick" = 1 ]; then
  cargo bench --locked -p meshcrypt-benches -- --quick
  "$target/release/throughput" --quick
else
  cargo bench --locked -p meshcrypt-benches
  "$target/release/throughput" --rounds 5 --seconds 5 "$@"
fi
