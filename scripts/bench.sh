#!/usr/bin/env bash
# make bench / make bench-quick: pk-bench, the Python peers and, where the
# C baselines are available (../shared/bench/c, or CBENCH=dir), the C limit,
# in one run, joined into one Markdown table on stdout.
# Usage: scripts/bench.sh [--quick]
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
quick=()
[ "${1:-}" = --quick ] && quick=(--quick)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

echo "== posixkit (pk-bench ${quick[*]:-})" >&2
"$top/target/release/pk-bench" --json "${quick[@]}" > "$work/pk.json"
echo "== Python peers (bench/python/peers.py ${quick[*]:-})" >&2
python3 "$top/bench/python/peers.py" --json "${quick[@]}" > "$work/py.json"

cdir=${CBENCH:-$top/../shared/bench/c}
if [ -f "$cdir/Makefile" ] && command -v gcc >/dev/null; then
  echo "== C limit ($cdir)" >&2
  make -s -C "$cdir" OUT="$work/cbin" >&2
  if [ ${#quick[@]} -gt 0 ]; then export REPS=1 BENCH_SCALE=0.05 TICKETS=2000; fi
  export BENCH_DIR="$work"
  for p in fork_wait pipe sem filelock shm_counter threads pool queue; do
    [ -x "$work/cbin/$p" ] || continue
    echo "running C $p ..." >&2
    "$work/cbin/$p" >> "$work/c.txt"
  done
  python3 "$top/bench/table.py" "$work/pk.json" "$work/py.json" "$work/c.txt"
else
  python3 "$top/bench/table.py" "$work/pk.json" "$work/py.json"
fi
echo >&2
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //'), load $(cut -d' ' -f1-3 /proc/loadavg)" >&2
