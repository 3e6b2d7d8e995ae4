#!/usr/bin/env bash
# A master and two workers on loopback, as the managers lesson runs them on
# three machines: start the server on port 0, read the address it prints,
# try a wrong key, start two workers, wait for all three. Then the same
# server idea with named queues: put three words, a worker runs a command
# on each, get the three results.
# Usage: scripts/manager-demo.sh [TASKS]   (pk-manager on PATH, or built in target/)
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
command -v pk-manager >/dev/null || PATH="$here/target/release:$here/target/debug:$PATH"
tasks=${1:-6}
# A fresh key per run, in the environment: never on a command line, where
# other users could read it (on a real network: --authkey-file, mode 0600).
PK_AUTHKEY="demo-$$-$RANDOM$RANDOM"
export PK_AUTHKEY

start() { # start a server with "$@", set $addr and $server
  exec 3< <(exec pk-manager serve --bind 127.0.0.1:0 "$@")
  server=$!
  if ! IFS= read -r -t 10 first <&3; then
    echo "manager-demo: the server printed no address" >&2
    kill "$server" 2>/dev/null || true
    exit 1
  fi
  echo "$first"
  addr=${first#listening on }
}

start --tasks "$tasks" --min-workers 2 --timeout 60s
rc=0
echo "a worker with a wrong key (expected to fail: the keys differ, so each side refuses the other):"
PK_AUTHKEY="not-$PK_AUTHKEY" pk-manager work --connect "$addr" 2>&1 | sed 's/^/  /' || rc=$?
echo "a worker with a wrong key: exit $rc"
pk-manager work --connect "$addr" --task-delay 20ms &
a=$!
pk-manager work --connect "$addr" --task-delay 20ms &
b=$!
cat <&3 # the server's lines, until it exits
wait "$a"
wait "$b"
wait "$server"

echo '== named queues: put, a worker running a command per task, get'
start --queue tasks --queue results --quiet
pk-manager put --connect "$addr" --queue tasks --close alpha beta gamma
pk-manager work --connect "$addr" --quiet -- sh -c 'printf "%s\n" "{}" | rev'
pk-manager get --connect "$addr" --queue results -n 3
kill "$server"
wait "$server" 2>/dev/null || true
