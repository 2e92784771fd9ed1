#!/usr/bin/env bash
# Install the Debian packages the real node needs (tools/localcluster/localcluster/node-packages.txt); idempotent, quiet when done.
# Installing the containerd package starts no daemon here (no systemd); the node runs its own containerd.
set -euo pipefail
list="$(dirname "$0")/node-packages.txt"
missing=()
while read -r p; do
  [[ -z "$p" || "$p" == \#* ]] && continue
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done <"$list"
if ((${#missing[@]})); then
  if [[ $(id -u) -ne 0 ]]; then
    echo "node-deps: need root to apt-get install: ${missing[*]}" >&2
    exit 1
  fi
  echo "node-deps: apt-get install ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
