#!/usr/bin/env python3
"""Join pk-bench, the Python peers and (optionally) the C baselines into one
Markdown table.

usage: table.py --py PY_JSON --round PK_JSON C_TXT [--round PK_JSON C_TXT ...]

PK_JSON / PY_JSON: one JSON object per line (pk-bench --json, peers.py --json).
C_TXT: "<figure> <value>" lines from the C baselines in ../shared/bench/c,
run right after the pk-bench figures of the same round ("" for none).
posixkit and C columns are medians over the rounds; the ratio column is the
median of the per-round ratios, with their range when there are several.
"""
import json
import statistics
import sys

# posixkit figure -> the C baseline figure that does the same work
C_PEER = {
    "fork_wait_us": "fork_wait_us",
    "process_start_join_us": "fork_wait_us",
    "pool_map10k_warm_us": "pool_map10k_warm_us",
    "pool_apply_async_rtt_us": "pipe_rtt_us",
    "sem_pingpong_us": "sem_pingpong_us",
    "shm_atomic_2p_ns_per_op": "shm_atomic_2p_ns_per_op",
    "shm_semlock_2p_ns_per_op": "shm_semlock_2p_ns_per_op",
    "queue_msgs_per_s": "queue_pipe_msgs_per_s",
    "flock_lock_unlock_ns": "flock_lock_unlock_ns",
    "ticket_flock_K4_per_s": "ticket_flock_K4_per_s",
    "pipe_rtt_us": "pipe_rtt_us",
    "pipe_rtt_framed_us": "pipe_rtt_us",
    "pipe_bw_GBps": "pipe_bw_GBps",
    "pipe_bw_vmsplice_GBps": "pipe_bw_GBps",
    "thread_create_join_us": "pthread_create_join_us",
    "thread_mutex_2t_ns_per_op": "thread_mutex_2t_ns_per_op",
    "thread_std_mutex_2t_ns_per_op": "thread_mutex_2t_ns_per_op",
    "thread_lock_2t_ns_per_op": "thread_mutex_2t_ns_per_op",
}
# posixkit figure -> the Python peer figure, where the names differ
PY_PEER = {
    # threading.Lock is the peer of thread::Mutex, std's Mutex and
    # thread::Lock.
    "thread_std_mutex_2t_ns_per_op": "thread_mutex_2t_ns_per_op",
    "thread_lock_2t_ns_per_op": "thread_mutex_2t_ns_per_op",
}
HIGHER_IS_BETTER = ("per_s", "GBps", "speedup_x")
# Starting /bin/true from parents of several sizes: (row label, posixkit
# figure, its std::process::Command peer). Python's figure has posixkit's name.
SPAWN_ROWS = [
    ("~0", "spawn_us", "spawn_std_us"),
    ("256 MiB", "spawn_256MiB_us", "spawn_std_256MiB_us"),
    ("1 GiB", "spawn_1GiB_us", "spawn_std_1GiB_us"),
    ("4 GiB", "spawn_4GiB_us", "spawn_std_4GiB_us"),
]


def load_json(path):
    out = {}
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line.startswith("{"):
                d = json.loads(line)
                out[d["figure"]] = d
    return out


def load_c(path):
    out = {}
    if not path:
        return out
    with open(path) as f:
        for line in f:
            parts = line.split()
            if len(parts) == 2:
                try:
                    out[parts[0]] = float(parts[1])
                except ValueError:
                    pass
    return out


def fmt(v):
    if v is None:
        return "—"
    return f"{v:,.0f}" if abs(v) >= 1000 else f"{v:.3g}" if abs(v) < 10 else f"{v:.1f}"


def parse_args(argv):
    py, rounds = None, []
    i = 0
    while i < len(argv):
        if argv[i] == "--py" and i + 1 < len(argv):
            py = argv[i + 1]
            i += 2
        elif argv[i] == "--round" and i + 2 < len(argv):
            rounds.append((argv[i + 1], argv[i + 2]))
            i += 3
        else:
            sys.exit(__doc__)
    if py is None or not rounds:
        sys.exit(__doc__)
    return py, rounds


def main():
    py_path, round_paths = parse_args(sys.argv[1:])
    py = load_json(py_path)
    rounds = [(load_json(p), load_c(c)) for p, c in round_paths]
    have_c = any(c for _, c in rounds)
    names = list(C_PEER)
    for pk, _ in rounds:
        names += [n for n in pk if n not in names]
    head = "| figure | unit | posixkit | spread | Python | speed-up vs Python |"
    line = "|---|---|---|---|---|---|"
    if have_c:
        head += " C limit | posixkit ÷ C |"
        line += "---|---|"
    print(head)
    print(line)
    for name in names:
        runs = [pk[name] for pk, _ in rounds if name in pk]
        if not runs:
            continue
        v = statistics.median(d["median"] for d in runs)
        # The spread of the round closest to the median.
        d = min(runs, key=lambda d: abs(d["median"] - v))
        spread = (d["max"] - d["min"]) / d["median"] * 100 if d["median"] else 0.0
        higher = name.endswith(HIGHER_IS_BETTER)
        p = py.get(PY_PEER.get(name, name), {}).get("median")
        speed = None if p is None or not v or not p else (v / p if higher else p / v)
        row = f"| {name} | {runs[0]['unit']} | {fmt(v)} | ±{spread:.0f}% | {fmt(p)} | {fmt(speed) + '×' if speed else '—'} |"
        if have_c:
            peer = C_PEER.get(name, "")
            pairs = [(pk[name]["median"], c[peer]) for pk, c in rounds if name in pk and c.get(peer)]
            if pairs:
                cv = statistics.median(c for _, c in pairs)
                ratios = sorted(a / b for a, b in pairs)
                ratio = fmt(statistics.median(ratios)) + "×"
                if len(ratios) > 1:
                    ratio += f" ({fmt(ratios[0])}–{fmt(ratios[-1])})"
                row += f" {fmt(cv)} | {ratio} |"
            else:
                row += " — | — |"
        print(row)
    print()
    print("speed-up: Python time ÷ posixkit time, or posixkit rate ÷ Python rate.")
    if have_c:
        print(
            f"posixkit ÷ C: ≤ 1 is at the limit for times; for rates (per_s, GBps) ≥ 1 is. "
            f"Each round ran the C program right after the posixkit figures it bounds; "
            f"median of {len(rounds)} round(s), range of the per-round ratios in brackets."
        )
    shape_table(rounds)
    spawn_table(py, rounds)


# The C fork_wait run again with the shared libraries pk-bench maps and it
# does not (LD_PRELOAD, see scripts/bench.sh): its figure under this name.
SAME_LIBS = "fork_wait_same_libs_us"


def shape_table(rounds):
    """fork_wait and Process start+join against the C fork from a process
    mapping the same shared libraries: fork copies every mapping, so a
    parent's shape sets much of its cost."""
    rows = []
    for name in ("fork_wait_us", "process_start_join_us"):
        pairs = [(pk[name]["median"], c[SAME_LIBS]) for pk, c in rounds
                 if name in pk and c.get(SAME_LIBS)]
        if pairs:
            ratios = sorted(a / b for a, b in pairs)
            rows.append((name, statistics.median(a for a, _ in pairs),
                         statistics.median(b for _, b in pairs), ratios))
    if not rows:
        return
    print()
    print("Forking from a parent of the same shape: the C limit above is a small C program")
    print("that maps libc alone; here the same program also maps the shared libraries")
    print("pk-bench maps and it does not (LD_PRELOAD: Rust's unwinder libgcc_s, and libm),")
    print("a handful of mappings each that every fork copies and every exit tears down:")
    print()
    print("| figure | posixkit | C, same libraries | posixkit ÷ C |")
    print("|---|---|---|---|")
    for name, v, c, ratios in rows:
        ratio = fmt(statistics.median(ratios)) + "×"
        if len(ratios) > 1:
            ratio += f" ({fmt(ratios[0])}–{fmt(ratios[-1])})"
        print(f"| {name} | {fmt(v)} | {fmt(c)} | {ratio} |")


def spawn_table(py, rounds):
    """posixkit's Spawn, std's Command and Python's subprocess.run side by
    side, by parent size (figures that were skipped or not run are left out)."""
    def med(name):
        vals = [pk[name]["median"] for pk, _ in rounds if name in pk]
        return statistics.median(vals) if vals else None
    rows = [(label, med(pk), med(std), py.get(pk, {}).get("median"))
            for label, pk, std in SPAWN_ROWS]
    rows = [r for r in rows if r[1] is not None or r[2] is not None]
    if not rows:
        return
    print()
    print("Starting /bin/true (µs per run), by the parent's resident heap:")
    print()
    print("| parent resident | posixkit Spawn | std Command | Python subprocess | posixkit ÷ std | posixkit ÷ Python |")
    print("|---|---|---|---|---|---|")
    for label, p, s, y in rows:
        ratio = lambda a, b: f"{a / b:.2f}×" if a and b else "—"
        print(f"| {label} | {fmt(p)} | {fmt(s)} | {fmt(y)} | {ratio(p, s)} | {ratio(p, y)} |")


if __name__ == "__main__":
    main()
