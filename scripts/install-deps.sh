#!/usr/bin/env bash
# Install the Debian packages the local cluster needs, once; idempotent and quiet when done.
set -euo pipefail
packages=(iptables ipset iproute2 conntrack)
missing=()
for p in "${packages[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if ((${#missing[@]})); then
  if [[ $(id -u) -ne 0 ]]; then
    echo "install-deps: need root to apt-get install: ${missing[*]}" >&2
    exit 1
  fi
  echo "install-deps: apt-get install ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
command -v go >/dev/null || { echo "install-deps: the Go toolchain is required (go.dev/doc/install)" >&2; exit 1; }
