#!/usr/bin/env bash
# Use pk-spawn's passed-through status the way a shell script would: in `case`,
# with every command under a 2-second timeout as timeout(1) would put it, and
# say beside it what Python's subprocess.call/run would have given.
# Usage: scripts/spawn-status.sh   (pk-spawn on PATH, or built in target/)
set -u
here=$(cd "$(dirname "$0")/.." && pwd)
command -v pk-spawn >/dev/null || PATH="$here/target/release:$here/target/debug:$PATH"

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
printf 'not a program\n' >"$tmp/data.txt"   # exists, but has no x bit

run() {
  label=$1
  shift
  # pk-spawn prints one line on stderr when the exec fails; keep it out of
  # the report, which is about the status alone.
  pk-spawn --timeout 2 -- "$@" >/dev/null 2>&1
  rc=$?
  # $? is the shell's convention (N, 128+N for signal N); Python's
  # subprocess gives returncode N or -N, or raises instead of a status.
  case $rc in
    0)   what="ok"; py="returncode 0" ;;
    124) what="timed out (pk-spawn --timeout 2)"; py="TimeoutExpired" ;;
    126) what="found but not executable"; py="PermissionError" ;;
    127) what="command not found"; py="FileNotFoundError" ;;
    12[89] | 1[3-9][0-9] | 2[0-9][0-9])
         n=$(( rc - 128 ))
         what="killed by signal $n (SIG$(kill -l $n))"; py="returncode -$n" ;;
    *)   what="failed with $rc"; py="returncode $rc" ;;
  esac
  echo "$label -> \$?=$rc: $what (Python: $py)"
}

run "true" true
run "sh -c 'exit 3'" sh -c 'exit 3'
run "sh -c 'kill -TERM \$\$'" sh -c 'kill -TERM $$'
run "no-such-command-here" no-such-command-here
run "data.txt (no x bit)" "$tmp/data.txt"
run "sleep 30" sleep 30
