#!/usr/bin/env python3
"""The Python peers of pk-bench: the same work written as a Python user would,
with os, multiprocessing (fork start method) and threading.

Prints the same figure names as pk-bench, one per line:
    <figure> <median> <unit> (min <min>, max <max>, <reps> reps)
or with --json one JSON object per line. --quick: 3 reps, a tenth of the work.
"""
import argparse
import json
import multiprocessing as mp
import os
import sys
import time

CTX = mp.get_context("fork")
FIGURES = {}


def figure(name, unit):
    def register(fn):
        FIGURES[name] = (unit, fn)
        return fn
    return register


def us_per(t0, n):
    return (time.perf_counter_ns() - t0) / n / 1e3


@figure("fork_wait_us", "us")
def fork_wait(scale):
    n = max(1, int(1000 * scale))
    t0 = time.perf_counter_ns()
    for i in range(n):
        pid = os.fork()
        if pid == 0:
            os._exit(i & 0x7F)
        _, st = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(st) == (i & 0x7F)
    return us_per(t0, n)


def _exits(code):
    sys.exit(code)


@figure("process_start_join_us", "us")
def process_start_join(scale):
    n = max(1, int(300 * scale))
    t0 = time.perf_counter_ns()
    for i in range(n):
        p = CTX.Process(target=_exits, args=(i & 0x7F,))
        p.start()
        p.join()
        assert p.exitcode == (i & 0x7F)
    return us_per(t0, n)


def _square(x):
    return x * x


@figure("pool_map10k_warm_us", "us")
def pool_map10k_warm(scale):
    maps = max(1, int(20 * scale))
    items = list(range(10000))
    with CTX.Pool(2) as pool:
        pool.map(_square, items, chunksize=1250)
        t0 = time.perf_counter_ns()
        for _ in range(maps):
            r = pool.map(_square, items, chunksize=1250)
        assert r[9999] == 9999 * 9999
        return us_per(t0, maps)


@figure("pool_apply_async_rtt_us", "us")
def pool_apply_async_rtt(scale):
    n = max(1, int(2000 * scale))
    with CTX.Pool(2) as pool:
        t0 = time.perf_counter_ns()
        for i in range(n):
            assert pool.apply_async(_square, (i,)).get() == i * i
        return us_per(t0, n)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", action="append", default=[])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--reps", type=int)
    a = ap.parse_args()
    unknown = [o for o in a.only if o not in FIGURES]
    if unknown:
        ap.error(f"unknown figure {unknown[0]}")
    scale = 0.1 if a.quick else 1.0
    reps = a.reps or (3 if a.quick else 5)
    for name, (unit, fn) in FIGURES.items():
        if a.only and name not in a.only:
            continue
        print(f"running {name} ...", file=sys.stderr, flush=True)
        fn(scale / 10)
        s = sorted(fn(scale) for _ in range(reps))
        med = s[len(s) // 2] if len(s) % 2 else (s[len(s) // 2 - 1] + s[len(s) // 2]) / 2
        if a.json:
            print(json.dumps({"figure": name, "unit": unit, "median": round(med, 3),
                              "min": round(s[0], 3), "max": round(s[-1], 3), "reps": reps}), flush=True)
        else:
            print(f"{name} {med:.3f} {unit} (min {s[0]:.3f}, max {s[-1]:.3f}, {reps} reps)", flush=True)


if __name__ == "__main__":
    main()
