#!/usr/bin/env bash
# The Debian packages `make test` drives as peers, hosts or real clients,
# installed when missing (idempotent: nothing is fetched when all are
# there). .ci/run calls it before `make test`; scripts/check-prereqs.sh
# names what is missing.
#   openssh-server  sshd for pk-pool exec -S (bound to 127.0.0.1 by the tests)
#   openssh-client  ssh, the transport to those hosts
#   parallel        GNU parallel, the peer pk-pool exec is compared with
#   strace, time    fault injection, and max RSS in the benchmarks
#   gcc, libc6-dev  the C peers and the LD_PRELOAD shims the tests build
#   man-db          checks the generated man pages render
# Services are not started by the install (the tests start their own sshd).
set -euo pipefail
packages=(
  bash
  python3
  util-linux
  strace
  time
  gcc
  libc6-dev
  openssh-server
  openssh-client
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

# Keep the package scripts from starting sshd on port 22 (exit 101 is
# invoke-rc.d's "action forbidden"); an existing policy is left as it is.
policy=/usr/sbin/policy-rc.d
made_policy=
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\nexit 101\n' > "$policy"
  chmod 755 "$policy"
  made_policy=1
fi
trap 'if [ -n "$made_policy" ]; then rm -f "$policy"; fi' EXIT

echo "ci-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
