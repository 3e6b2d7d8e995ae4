#!/usr/bin/env bash
# make test runs this first: one line naming the tools the tests drive that
# are not here, and the package each comes in (scripts/ci-deps.sh installs
# them on Debian). Silent when all are present; never fails the run itself:
# the tests that need a missing tool skip or fail with their own message.
set -uo pipefail
missing=()
need() { # need PACKAGE COMMAND...
  local pkg=$1 c
  shift
  for c in "$@"; do
    command -v "$c" >/dev/null 2>&1 || [ -x "/usr/sbin/$c" ] || missing+=("$c ($pkg)")
  done
}
need bash bash
need python3 python3
need util-linux flock prlimit setpriv unshare ipcrm
need strace strace
need gcc cc
need openssh-server sshd
need openssh-client ssh ssh-keygen
need parallel parallel
need man-db man
if command -v parallel >/dev/null 2>&1 && ! parallel --version 2>/dev/null | grep -q 'GNU parallel'; then
  missing+=("GNU parallel (parallel; $(command -v parallel) is another one)")
fi
if [ ${#missing[@]} -gt 0 ]; then
  joined=$(printf '%s, ' "${missing[@]}")
  echo "make test: missing test prerequisites: ${joined%, }; bash scripts/ci-deps.sh installs them"
fi
exit 0
