#!/usr/bin/env bash
# Installs what a fresh Debian machine lacks for building and testing remoteingress.
# Idempotent: installs only what is missing. Needs root (or sudo) for apt.
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages the tests use: python3 (second-language IPC driver), iproute2 (network
# namespaces), nftables (edge firewall; `nft` reads the kernel back in tests, never used at run
# time), util-linux (setpriv and nsenter for the firewall tests), haproxy (real PROXY-protocol
# consumer), procps (RSS), systemd (systemd-analyze verify and systemd-sysusers for the documented
# install, tests/deploy/install.py), openssh-server and openssh-client (a real target that does
# not speak PROXY, and ssh-keyscan).
APT_PACKAGES=(python3 iproute2 nftables util-linux haproxy procps ca-certificates systemd
  openssh-server openssh-client)

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}"
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# The Prometheus text parser the metrics test reads /metrics with (the client library's own).
if ! python3 -c "import prometheus_client" 2>/dev/null; then
  echo "setup: installing the Python prometheus-client"
  python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore "prometheus-client>=0.20,<1"
fi

if ! command -v cargo >/dev/null; then
  echo "setup: cargo is required (install Rust with rustup)" >&2
  exit 1
fi
for component in rustfmt clippy; do
  if ! cargo "${component/rustfmt/fmt}" --version >/dev/null 2>&1; then
    rustup component add "$component"
  fi
done

# The TypeScript wrapper's dependencies, once it has a lockfile.
if [ -f ts-wrapper/package-lock.json ]; then
  if ! command -v npm >/dev/null; then
    echo "setup: npm is required for ts-wrapper (install Node.js 20+)" >&2
    exit 1
  fi
  (cd ts-wrapper && npm ci --no-audit --no-fund --loglevel=error)
fi
