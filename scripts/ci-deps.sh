#!/usr/bin/env bash
# Install the Debian packages the test suite drives as peers or hosts:
#   openssh-server  sshd for pk-pool exec -S (bound to 127.0.0.1 by the tests)
#   parallel        GNU parallel, the peer pk-pool exec is compared with
#   openssh-client  ssh, the transport to those hosts
#   strace, time    fault injection, and max RSS in the benchmarks
# Idempotent: nothing is fetched when every package is already installed.
# Services are not started by the install (the tests start their own sshd).
set -euo pipefail

packages=(openssh-server openssh-client parallel strace time)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "ci-deps: all installed (${packages[*]})"
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "ci-deps: missing ${missing[*]}, and not root: install them with apt-get" >&2
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
apt-get update -q
apt-get install -y -q --no-install-recommends "${missing[@]}"
