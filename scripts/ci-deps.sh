#!/usr/bin/env bash
# The Debian packages `make test` drives as peers or real clients, installed
# when missing (idempotent: nothing is fetched when all are there). .ci/run
# calls it before `make test`; scripts/check-prereqs.sh names what is missing.
# One package a line.
set -euo pipefail
packages=(
  bash
  python3
  util-linux
  strace
  gcc
  libc6-dev
  openssh-server
  parallel
  man-db
)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null; then
  echo "ci-deps: missing packages: ${missing[*]} (install them as root with apt-get)" >&2
  exit 1
fi
echo "ci-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
