#!/usr/bin/env python3
"""Join pk-bench, the Python peers and (optionally) the C baselines into one
Markdown table.

usage: table.py PK_JSON PY_JSON [C_TXT]
PK_JSON / PY_JSON: one JSON object per line (pk-bench --json, peers.py --json).
C_TXT: "<figure> <value>" lines from the C baselines in ../shared/bench/c.
"""
import json
import sys

# posixkit figure -> the C baseline figure that does the same work
C_PEER = {
    "fork_wait_us": "fork_wait_us",
    "process_start_join_us": "fork_wait_us",
    "pipe_rtt_us": "pipe_rtt_us",
    "pipe_bw_GBps": "pipe_bw_GBps",
    "pipe_rtt_framed_us": "pipe_rtt_us",
    "sem_pingpong_us": "sem_pingpong_us",
    "flock_lock_unlock_ns": "flock_lock_unlock_ns",
    "ticket_flock_K4_per_s": "ticket_flock_K4_per_s",
    "shm_atomic_2p_ns_per_op": "shm_atomic_2p_ns_per_op",
    "shm_semlock_2p_ns_per_op": "shm_semlock_2p_ns_per_op",
    "queue_msgs_per_s": "queue_pipe_msgs_per_s",
    "thread_create_join_us": "pthread_create_join_us",
    "thread_mutex_2t_ns_per_op": "thread_mutex_2t_ns_per_op",
    "pool_map10k_warm_us": "pool_map10k_warm_us",
    "pool_apply_async_rtt_us": "pipe_rtt_us",
}
HIGHER_IS_BETTER = ("per_s", "GBps")


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


def main():
    pk = load_json(sys.argv[1])
    py = load_json(sys.argv[2])
    c = load_c(sys.argv[3]) if len(sys.argv) > 3 else {}
    head = "| figure | unit | posixkit | spread | Python | speed-up vs Python |"
    line = "|---|---|---|---|---|---|"
    if c:
        head += " C limit | posixkit ÷ C |"
        line += "---|---|"
    print(head)
    print(line)
    for name, d in pk.items():
        v = d["median"]
        spread = (d["max"] - d["min"]) / v * 100 if v else 0.0
        higher = name.endswith(HIGHER_IS_BETTER)
        p = py.get(name, {}).get("median")
        speed = None if p is None or not v or not p else (v / p if higher else p / v)
        row = f"| {name} | {d['unit']} | {fmt(v)} | ±{spread:.0f}% | {fmt(p)} | {fmt(speed) + '×' if speed else '—'} |"
        if c:
            cv = c.get(C_PEER.get(name, ""))
            ratio = v / cv if cv else None
            row += f" {fmt(cv)} | {fmt(ratio) + '×' if ratio else '—'} |"
        print(row)
    print()
    print("speed-up: Python time ÷ posixkit time, or posixkit rate ÷ Python rate.")
    if c:
        print("posixkit ÷ C: ≤ 1 is at the limit for times; for rates (per_s, GBps) ≥ 1 is.")


if __name__ == "__main__":
    main()
