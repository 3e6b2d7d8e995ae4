#!/usr/bin/env bash
# make bench / make bench-quick / make bench-plot: pk-bench, the Python
# peers and, where the C baselines are available, the C limit, joined into
# one Markdown table on stdout.
#
# These machines drift by the minute, so a ratio to C is only worth quoting
# when both sides ran back to back: each C program runs right after
# pk-bench timed the figures it is the limit for, and the whole alternation
# is repeated BENCH_ROUNDS times (default 3; 1 with --quick). Each round
# takes BENCH_REPS repetitions of every figure, posixkit and C alike
# (default 5: the whole of make bench stays under 15 minutes on 2 cores).
# The table gives the median over the rounds and the range of the
# per-round ratios.
#
# --plot also measures the curves (`pk-bench --list-curves`): for each
# point, posixkit (pk-bench --curve), the C limit (bench/c/curves.c, built
# with cc when there is one) and Python (bench/python/curves.py) run one
# after the other; then pk-bench --plot draws one SVG per curve and an
# index.html into BENCH_PLOTS (default target/bench-plots). BENCH_CURVES
# (names, space-separated) limits the curves; --curves-only skips the table.
#
# The C baselines are looked for in $CBENCH, then ../shared/bench/c beside
# this checkout, then beside the main checkout of a git worktree. Without
# them the table has no C columns and says so.
# Usage: scripts/bench.sh [--quick] [--plot] [--curves-only]
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
quick=()
rounds=${BENCH_ROUNDS:-3}
reps=${BENCH_REPS:-5}
plot=
table=1
for arg in "$@"; do
  case $arg in
    --quick) quick=(--quick); rounds=1 ;;
    --plot) plot=1 ;;
    --curves-only) plot=1; table= ;;
    *) echo "usage: scripts/bench.sh [--quick] [--plot] [--curves-only]" >&2; exit 2 ;;
  esac
done
case $rounds in '' | *[!0-9]* | 0) echo "bench.sh: BENCH_ROUNDS must be a positive integer" >&2; exit 2 ;; esac
pk=$top/target/release/pk-bench
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
case $reps in '' | *[!0-9]* | 0 | [0-9][0-9][0-9]*) echo "bench.sh: BENCH_REPS must be 1 to 99" >&2; exit 2 ;; esac
repflag=()
if [ ${#quick[@]} -eq 0 ]; then repflag=(--reps "$reps"); fi

# C program -> the pk-bench figures it is the limit for.
groups=(
  "fork_wait:fork_wait_us process_start_join_us"
  "pool:pool_map10k_warm_us"
  "pipe:pipe_rtt_us pipe_rtt_framed_us pipe_bw_GBps pipe_bw_vmsplice_GBps pool_apply_async_rtt_us"
  "sem:sem_pingpong_us"
  "shm_counter:shm_atomic_2p_ns_per_op shm_semlock_2p_ns_per_op"
  "queue:queue_msgs_per_s"
  "filelock:flock_lock_unlock_ns ticket_flock_K4_per_s"
  "threads:thread_create_join_us thread_mutex_2t_ns_per_op"
)

cdir=
for d in ${CBENCH:+"$CBENCH"} "$top/../shared/bench/c" \
  "$(dirname "$(git -C "$top" rev-parse --path-format=absolute --git-common-dir 2>/dev/null || echo /nonexistent/.git)")/../shared/bench/c"; do
  if [ -f "$d/Makefile" ]; then cdir=$(cd "$d" && pwd); break; fi
done
have_c=
if [ -n "$table" ] && [ -n "$cdir" ] && command -v gcc >/dev/null; then
  make -s -C "$cdir" OUT="$work/cbin" >&2
  have_c=1
fi

args=()
if [ -z "$table" ]; then
  :
elif [ -n "$have_c" ]; then
  if [ ${#quick[@]} -gt 0 ]; then
    export REPS=1 BENCH_SCALE=0.05 TICKETS=2000
  else
    export REPS=$reps
  fi
  export BENCH_DIR="$work"
  for r in $(seq "$rounds"); do
    echo "== round $r of $rounds: posixkit ${quick[*]:-}then the C limit, figure group by group" >&2
    : > "$work/pk.$r.json"
    : > "$work/c.$r.txt"
    for g in "${groups[@]}"; do
      prog=${g%%:*}
      only=()
      for f in ${g#*:}; do only+=(--only "$f"); done
      "$pk" --json "${quick[@]}" "${repflag[@]}" "${only[@]}" >> "$work/pk.$r.json"
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
    "$pk" --json "${quick[@]}" "${repflag[@]}" "${only[@]}" >> "$work/pk.1.json"
  fi
else
  echo "== posixkit (pk-bench ${quick[*]:-}); no C baselines (looked in \$CBENCH, ../shared/bench/c beside this checkout and beside the main one): the table has no C columns" >&2
  "$pk" --json "${quick[@]}" > "$work/pk.1.json"
  args+=(--round "$work/pk.1.json" "")
fi

if [ -n "$table" ]; then
  echo "== Python peers (bench/python/peers.py ${quick[*]:-})" >&2
  python3 "$top/bench/python/peers.py" --json "${quick[@]}" > "$work/py.json"
  python3 "$top/bench/table.py" --py "$work/py.json" "${args[@]}"
  echo >&2
fi

if [ -n "$plot" ]; then
  out=${BENCH_PLOTS:-$top/target/bench-plots}
  ccurves=
  if command -v cc >/dev/null; then
    mkdir -p "$work/cbin"
    cc -O2 -pthread -o "$work/cbin/curves" "$top/bench/c/curves.c" && ccurves=$work/cbin/curves
  else
    echo "== no C compiler: the curves have no C limit" >&2
  fi
  q=()
  if [ ${#quick[@]} -gt 0 ]; then q=(-q); fi
  points=$work/points.jsonl
  : > "$points"
  started=$(date +%s)
  "$pk" --list-curves "${quick[@]}" | while read -r curve xs; do
    if [ -n "${BENCH_CURVES:-}" ]; then
      case " $BENCH_CURVES " in *" $curve "*) ;; *) continue ;; esac
    fi
    echo "== curve $curve: posixkit, C, Python at each of $xs" >&2
    for x in $xs; do
      "$pk" --curve "$curve" --at "$x" "${quick[@]}" >> "$points" \
        || { echo "bench.sh: pk-bench --curve $curve --at $x failed" >&2; exit 1; }
      if [ -n "$ccurves" ]; then "$ccurves" "${q[@]}" "$curve" "$x" >> "$points"; fi
      python3 "$top/bench/python/curves.py" "${quick[@]}" "$curve" "$x" >> "$points"
    done
  done
  load=$(cut -d' ' -f1-3 /proc/loadavg)
  note="$(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //'), load $load at the end; scripts/bench.sh ${*} took $(( $(date +%s) - started )) s for the curves; $(git -C "$top" describe --always --dirty 2>/dev/null || echo unknown)."
  echo "== drawing the curves into $out" >&2
  "$pk" --plot "$points" --out "$out" --note "$note" >&2
  cp "$points" "$out/points.jsonl"
  echo "curves: $out/index.html ($note)" >&2
fi
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //'), load $(cut -d' ' -f1-3 /proc/loadavg)" >&2
