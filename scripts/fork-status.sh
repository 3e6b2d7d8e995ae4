#!/usr/bin/env bash
# Use pk-fork's propagated status the way a shell script would: in `case`.
# Usage: scripts/fork-status.sh   (pk-fork on PATH, or built in target/)
set -u
here=$(cd "$(dirname "$0")/.." && pwd)
command -v pk-fork >/dev/null || PATH="$here/target/release:$here/target/debug:$PATH"

describe() {
  if [ "$1" -eq 0 ]; then
    echo "ok"
  elif [ "$1" -gt 128 ]; then
    echo "killed by signal $(( $1 - 128 )) (SIG$(kill -l $(( $1 - 128 ))))"
  else
    echo "failed with $1"
  fi
}

for args in "--exit-code 0" "--exit-code 3" "--signal TERM" "--signal KILL"; do
  # shellcheck disable=SC2086  # word splitting of $args is wanted
  pk-fork --quiet --propagate $args >/dev/null
  rc=$?
  echo "pk-fork $args -> \$?=$rc: $(describe "$rc")"
done
