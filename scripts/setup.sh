#!/usr/bin/env bash
# Installs what meshcrypt's lab and tests need on a fresh Debian machine, as root. Idempotent:
# packages already present are not fetched again.
set -euo pipefail

need_root() {
  if [ "$(id -u)" -ne 0 ]; then
    echo "meshcrypt's lab creates network namespaces: run this as root" >&2
    exit 1
  fi
}
need_root

# Debian packages: iproute2 (ip netns, veth, bridge), iputils-ping (lab connectivity checks),
# wireguard-tools (`wg`, to inspect and configure devices), wireguard-go (an independent
# WireGuard implementation the tests interoperate with and the benches compare with), iperf3 (the
# throughput bench), util-linux (`nsenter`, `mount`) and prometheus (`promtool`: the monitoring
# component's alert rules are checked and unit-tested, integration/tests/deploy_monitoring.rs).
# shellcheck source=scripts/debian-packages.sh
. "$(dirname "$0")/debian-packages.sh"
install_debian_packages iproute2 iputils-ping wireguard-tools wireguard-go iperf3 util-linux prometheus

# kubectl 1.32 ships with this machine image; the kubectl tests need it.
command -v kubectl >/dev/null || { echo "kubectl is required: install it from the Kubernetes project's packages (pkgs.k8s.io)" >&2; exit 1; }

# cargo-nextest runs the tests (lab tests one at a time, see .config/nextest.toml); 0.9.98 or
# later, for the wrapper scripts that run the kernel backend's tests in the VM.
nextest_at_least=0.9.98
nextest_version="$(cargo-nextest nextest --version 2>/dev/null | awk '{ print $2; exit }' || true)"
if [ -z "$nextest_version" ] ||
  [ "$(printf '%s\n%s\n' "$nextest_at_least" "$nextest_version" | sort -V | head -n 1)" != "$nextest_at_least" ]; then
  cargo install --locked cargo-nextest
fi

# kubernetes-validate (PyPI) checks the deploy manifests offline against Kubernetes' OpenAPI
# schemas (integration/tests/deploy_manifests.rs). It lives in a virtualenv at .venv/ (git-ignored);
# scripts/test.sh points the tests at it with KUBERNETES_VALIDATE.
kubernetes_validate_version=1.37.0
venv="$(cd "$(dirname "$0")/.." && pwd)/.venv"
# (grep reads to the end, not -q: under pipefail a writer cut off early would fail the check.)
if ! "$venv/bin/kubernetes-validate" --version 2>/dev/null | grep -xF "$kubernetes_validate_version" >/dev/null; then
  echo "installing: kubernetes-validate==$kubernetes_validate_version into $venv"
  if ! python3 -m venv "$venv" >/dev/null 2>&1; then
    # Debian's own python3 needs python3-venv (ensurepip) for this.
    install_debian_packages python3 python3-venv
    python3 -m venv "$venv"
  fi
  "$venv/bin/python3" -m pip install --quiet --disable-pip-version-check \
    "kubernetes-validate==$kubernetes_validate_version"
fi

# moto's server (PyPI `moto[server]`) plays AWS Secrets Manager on a loopback port for the
# registry's tests (registry/tests/secrets_manager.rs starts it from .venv/bin/moto_server).
moto_version=5.2.5
if ! "$venv/bin/python3" -m pip show moto 2>/dev/null | grep -xF "Version: $moto_version" >/dev/null; then
  echo "installing: moto[server]==$moto_version into $venv"
  "$venv/bin/python3" -m pip install --quiet --disable-pip-version-check "moto[server]==$moto_version"
fi
