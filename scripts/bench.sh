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
# after the other; then pk-bench-plot draws one SVG per curve and an
# index.html into BENCH_PLOTS (default target/bench-plots). BENCH_CURVES
# (names, space-separated) limits the curves; --curves-only skips the table.
# PK_BENCH names the pk-bench to run (default target/release/pk-bench);
# the pk-bench-plot beside it draws.
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
case $reps in '' | *[!0-9]* | 0 | [0-9][0-9][0-9]*) echo "bench.sh: BENCH_REPS must be 1 to 99" >&2; exit 2 ;; esac
# PK_BENCH: the pk-bench to run (the tests pass the one cargo built).
pk=${PK_BENCH:-$top/target/release/pk-bench}
if [ ! -x "$pk" ]; then
  echo "bench.sh: $pk is not built: run make build first, or set PK_BENCH" >&2
  exit 2
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
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
  "threads:thread_create_join_us thread_mutex_2t_ns_per_op thread_std_mutex_2t_ns_per_op thread_lock_2t_ns_per_op"
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
  # The shared libraries pk-bench maps and the C fork program does not
  # (libgcc_s for Rust's unwinder, libm): fork copies every mapping, so the
  # C fork runs a second time with them preloaded, a parent of our shape.
  same_libs=
  if [ -x "$work/cbin/fork_wait" ] && command -v ldd >/dev/null; then
    same_libs=$(comm -23 <(ldd "$pk" | awk '/=>/ {print $1}' | sort) \
      <(ldd "$work/cbin/fork_wait" | awk '/=>/ {print $1}' | sort) | tr '\n' ' ')
    same_libs=${same_libs% }
  fi
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
      if [ "$prog" = fork_wait ] && [ -n "$same_libs" ] && [ -x "$work/cbin/$prog" ]; then
        echo "running C $prog with $same_libs preloaded ..." >&2
        LD_PRELOAD="$same_libs" "$work/cbin/$prog" \
          | sed -n 's/^fork_wait_us /fork_wait_same_libs_us /p' >> "$work/c.$r.txt"
      fi
    done
    args+=(--round "$work/pk.$r.json" "$work/c.$r.txt")
  done
  # Figures no C program covers.
  # (pk-pool exec's figures run in rounds of their own below.)
  rest=$("$pk" --list | awk '{print $1}' | while read -r f; do
    case $f in exec_*) continue ;; esac
    case " ${groups[*]} " in *" $f "* | *":$f "*) ;; *) echo "$f" ;; esac
  done)
  if [ -n "$rest" ]; then
    only=()
    for f in $rest; do only+=(--only "$f"); done
    "$pk" --json "${quick[@]}" "${repflag[@]}" "${only[@]}" >> "$work/pk.1.json"
  fi
else
  echo "== posixkit (pk-bench ${quick[*]:-}); no C baselines (looked in \$CBENCH, ../shared/bench/c beside this checkout and beside the main one): the table has no C columns" >&2
  "$pk" --list | awk '{print $1}' | grep -v '^exec_' | while read -r f; do
    "$pk" --json "${quick[@]}" --only "$f"
  done > "$work/pk.1.json"
  args+=(--round "$work/pk.1.json" "")
fi

if [ -n "$table" ]; then
  echo "== Python peers (bench/python/peers.py ${quick[*]:-})" >&2
  python3 "$top/bench/python/peers.py" --json "${quick[@]}" > "$work/py.json"
  python3 "$top/bench/table.py" --py "$work/py.json" "${args[@]}"
  echo >&2
fi

if [ -n "$table" ]; then
# pk-pool exec beside xargs and GNU parallel: the tools alternate, figure
# by figure, in each of the rounds; the table gives the median per figure.
exec_figs=$("$pk" --list | awk '$1 ~ /^exec_/ {print $1}')
: > "$work/exec.json"
for r in $(seq "$rounds"); do
  echo "== round $r of $rounds: pk-pool exec, xargs, parallel in turn" >&2
  for f in $exec_figs; do
    # A peak RSS does not move with the machine's load: once is enough
    # (GNU parallel takes a minute over its million lines).
    case $f in *_KiB) if [ "$r" -gt 1 ]; then continue; fi ;; esac
    "$pk" --json "${quick[@]}" --reps 1 --only "$f" >> "$work/exec.json" || true
  done
done
python3 - "$work/exec.json" <<'PY'
import json, statistics, sys
by = {}
for line in open(sys.argv[1]):
    line = line.strip()
    if line.startswith("{"):
        d = json.loads(line)
        by.setdefault(d["figure"], []).append(d["median"])
med = {k: statistics.median(v) for k, v in by.items()}
rows = [
    ("10 000 x true, -j 2 (us per job)", "exec_true_j2_us", "exec_xargs_true_j2_us", "exec_parallel_true_j2_us", False),
    ("1 000 000 lines, -n 1000 (max RSS KiB)", "exec_1m_lines_maxrss_KiB", "exec_xargs_1m_lines_maxrss_KiB", "exec_parallel_1m_lines_maxrss_KiB", False),
    ("ssh to 127.0.0.1, 2 slots (jobs/s)", "exec_ssh2_jobs_per_s", None, "exec_parallel_ssh2_jobs_per_s", True),
]
print()
print("| pk-pool exec | pk-pool | xargs | parallel | xargs / pk-pool | parallel / pk-pool |")
print("|---|---|---|---|---|---|")
fmt = lambda v: "-" if v is None else f"{v:.1f}"
for name, pk, xa, pa, higher in rows:
    p, x, q = med.get(pk), med.get(xa) if xa else None, med.get(pa)
    ratio = lambda o: "-" if o is None or p is None or p == 0 or o == 0 else (f"{p / o:.2f}x" if higher else f"{o / p:.2f}x")
    print(f"| {name} | {fmt(p)} | {fmt(x)} | {fmt(q)} | {ratio(x)} | {ratio(q)} |")
for f in ("exec_overhead_j1_us", "exec_10m_lines_dry_run_maxrss_KiB"):
    if f in med:
        print(f"| {f} | {med[f]:.1f} | | | | |")
print("(ratios: how many times better pk-pool is; medians over the rounds, peak RSS from the first round)")
PY
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
  "$(dirname "$pk")/pk-bench-plot" "$points" --out "$out" --note "$note" >&2
  cp "$points" "$out/points.jsonl"
  echo "curves: $out/index.html ($note)" >&2
fi
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //'), load $(cut -d' ' -f1-3 /proc/loadavg)" >&2
