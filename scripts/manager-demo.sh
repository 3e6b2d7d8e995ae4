#!/usr/bin/env bash
# A master and two workers on loopback, as the managers lesson runs them on
# three machines: start the server on port 0, read the address it prints,
# try a wrong key, start two workers, wait for all three.
# Usage: scripts/manager-demo.sh [TASKS]   (pk-manager on PATH, or built in target/)
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
command -v pk-manager >/dev/null || PATH="$here/target/release:$here/target/debug:$PATH"
tasks=${1:-6}
# A fresh key per run; on a real network, pass a real secret (and mind that
# command lines are visible in ps).
key="demo-$$-$RANDOM$RANDOM"

exec 3< <(exec pk-manager serve --bind 127.0.0.1:0 --authkey "$key" \
  --tasks "$tasks" --min-workers 2 --timeout 60s)
server=$!
if ! IFS= read -r -t 10 first <&3; then
  echo "manager-demo: the server printed no address" >&2
  kill "$server" 2>/dev/null || true
  exit 1
fi
echo "$first"
addr=${first#listening on }

rc=0
pk-manager work --connect "$addr" --authkey "not-$key" || rc=$?
echo "a worker with a wrong key: exit $rc"

pk-manager work --connect "$addr" --authkey "$key" --task-delay 20ms &
a=$!
pk-manager work --connect "$addr" --authkey "$key" --task-delay 20ms &
b=$!
cat <&3 # the server's lines, until it exits
wait "$a"
wait "$b"
wait "$server"
