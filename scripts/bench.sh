#!/usr/bin/env bash
# make bench / make bench-quick: pk-bench, the Python peers and, where the
# C baselines are available (../shared/bench/c, or CBENCH=dir), the C limit,
# joined into one Markdown table on stdout.
#
# These machines drift by the minute, so a ratio to C is only worth quoting
# when both sides ran back to back: each C program runs right after
# pk-bench timed the figures it is the limit for, and the whole alternation
# is repeated BENCH_ROUNDS times (default 3; 1 with --quick). The table
# gives the median over the rounds and the range of the per-round ratios.
# Usage: scripts/bench.sh [--quick]
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
quick=()
rounds=${BENCH_ROUNDS:-3}
if [ "${1:-}" = --quick ]; then
  quick=(--quick)
  rounds=1
fi
case $rounds in '' | *[!0-9]* | 0) echo "bench.sh: BENCH_ROUNDS must be a positive integer" >&2; exit 2 ;; esac
pk=$top/target/release/pk-bench
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# C program -> the pk-bench figures it is the limit for.
groups=(
  "fork_wait:fork_wait_us process_start_join_us"
  "pool:pool_map10k_warm_us"
  "pipe:pipe_rtt_us pipe_rtt_framed_us pipe_bw_GBps pool_apply_async_rtt_us"
  "sem:sem_pingpong_us"
  "shm_counter:shm_atomic_2p_ns_per_op shm_semlock_2p_ns_per_op"
  "queue:queue_msgs_per_s"
  "filelock:flock_lock_unlock_ns ticket_flock_K4_per_s"
  "threads:thread_create_join_us thread_mutex_2t_ns_per_op"
)

cdir=${CBENCH:-$top/../shared/bench/c}
have_c=
if [ -f "$cdir/Makefile" ] && command -v gcc >/dev/null; then
  make -s -C "$cdir" OUT="$work/cbin" >&2
  have_c=1
fi

args=()
if [ -n "$have_c" ]; then
  if [ ${#quick[@]} -gt 0 ]; then export REPS=1 BENCH_SCALE=0.05 TICKETS=2000; fi
  export BENCH_DIR="$work"
  for r in $(seq "$rounds"); do
    echo "== round $r of $rounds: posixkit ${quick[*]:-}then the C limit, figure group by group" >&2
    : > "$work/pk.$r.json"
    : > "$work/c.$r.txt"
    for g in "${groups[@]}"; do
      prog=${g%%:*}
      only=()
      for f in ${g#*:}; do only+=(--only "$f"); done
      "$pk" --json "${quick[@]}" "${only[@]}" >> "$work/pk.$r.json"
      if [ -x "$work/cbin/$prog" ]; then
        echo "running C $prog ..." >&2
        "$work/cbin/$prog" >> "$work/c.$r.txt"
      fi
    done
    args+=(--round "$work/pk.$r.json" "$work/c.$r.txt")
  done
  # Figures no C program covers.
  rest=$("$pk" --list | awk '{print $1}' | while read -r f; do
    case " ${groups[*]} " in *" $f "* | *":$f "*) ;; *) echo "$f" ;; esac
  done)
  if [ -n "$rest" ]; then
    only=()
    for f in $rest; do only+=(--only "$f"); done
    "$pk" --json "${quick[@]}" "${only[@]}" >> "$work/pk.1.json"
  fi
else
  echo "== posixkit (pk-bench ${quick[*]:-}); no C baselines at $cdir" >&2
  "$pk" --json "${quick[@]}" > "$work/pk.1.json"
  args+=(--round "$work/pk.1.json" "")
fi

echo "== Python peers (bench/python/peers.py ${quick[*]:-})" >&2
python3 "$top/bench/python/peers.py" --json "${quick[@]}" > "$work/py.json"
python3 "$top/bench/table.py" --py "$work/py.json" "${args[@]}"
echo >&2
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //'), load $(cut -d' ' -f1-3 /proc/loadavg)" >&2
