#!/usr/bin/env bash
# The test command: formatting, lints, and every test (unit, API server, lab) as root.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# The kernel backend's tests run in a VM whose Debian kernel has WireGuard (.config/nextest.toml).
bash scripts/vm/prepare.sh
# The deploy tests find kubernetes-validate here (scripts/setup.sh installs it).
export KUBERNETES_VALIDATE="$PWD/.venv/bin/kubernetes-validate"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
# nextest does not run doc examples: a broken one would go unnoticed.
cargo test --workspace --doc --locked
# lab_kernel upgrades an agent from the debug build the tests run to this release build (in CI
# scripts/bench.sh and scripts/image.sh have built it already).
cargo build --release --locked -p meshcrypt --bin meshcrypt
cargo nextest run --workspace --locked --profile ci "$@"
