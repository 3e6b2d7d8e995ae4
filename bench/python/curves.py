#!/usr/bin/env python3
"""The Python peers of pk-bench's curves: the same work written as a Python
user would (os, subprocess, multiprocessing with the fork start method,
fcntl), printing the same JSON points as `pk-bench --curve`:
    {"curve":"fork_rss","series":"Python os.fork","x":259.3,"y":812.5}

usage: curves.py [--quick] CURVE X
A curve with no Python series prints nothing. Every point checks its own
result (an AssertionError exits 1).
"""
import json
import multiprocessing as mp
import os
import subprocess
import sys
import tempfile
import time

CTX = mp.get_context("fork")
QUICK = "--quick" in sys.argv


def budget():
    return 0.02 if QUICK else 0.15


def point(curve, series, x, y):
    print(json.dumps({"curve": curve, "series": series, "x": x, "y": round(y, 4)},
                     separators=(",", ":")), flush=True)


def per_op(run):
    """Seconds per operation, measured as pk-bench does: k grows tenfold
    until a run takes a twentieth of the budget, then is set so that a run
    takes about the budget; the median of three runs, over k."""
    k = 1
    t = run(k)
    while t < budget() / 20 and k < 1 << 32:
        k *= 10
        t = run(k)
    k = max(1, min(k * 40, int(budget() * k / max(t, 1e-9))))
    s = sorted(run(k) for _ in range(3))
    return s[1] / k


# ---- fork_rss, spawn_rss --------------------------------------------------

BALLAST = []


def hold(mib):
    if mib:
        BALLAST.append(bytearray(b"\x5a") * int(mib * (1 << 20)))
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def fork_wait(k):
    t0 = time.perf_counter()
    for i in range(k):
        pid = os.fork()
        if pid == 0:
            os._exit(i & 0x7F)
        _, st = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(st) == i & 0x7F
    return time.perf_counter() - t0


def _exits(code):
    sys.exit(code)


def process_start_join(k):
    t0 = time.perf_counter()
    for i in range(k):
        p = CTX.Process(target=_exits, args=(i & 0x7F,))
        p.start()
        p.join()
        assert p.exitcode == i & 0x7F
    return time.perf_counter() - t0


def subprocess_run(k):
    t0 = time.perf_counter()
    for _ in range(k):
        assert subprocess.run(["/bin/true"]).returncode == 0
    return time.perf_counter() - t0


# ---- pool_map_items, pool_map_workers ------------------------------------

def _square(x):
    return x * x


def pool_ns_per_item(items, workers):
    args = list(range(items))
    with CTX.Pool(workers) as pool:
        pool.map(_square, args)

        def run(k):
            t0 = time.perf_counter()
            for _ in range(k):
                r = pool.map(_square, args)
            t = time.perf_counter() - t0
            assert len(r) == items and r[-1] == (items - 1) ** 2
            return t

        return per_op(run) * 1e9 / items


# ---- queue_clients, queue_size --------------------------------------------

def _produce(q, who, per, size):
    pad = bytes(size - 16)
    for i in range(per):
        q.put(who.to_bytes(8, "little") + i.to_bytes(8, "little") + pad)


def _consume(q, k, per, size, total):
    nxt = [0] * k
    seen = 0
    for _ in range(per):
        m = q.get(timeout=60)
        who, i = int.from_bytes(m[:8], "little"), int.from_bytes(m[8:16], "little")
        assert len(m) == size and who < k and i >= nxt[who], "out of order"
        nxt[who] = i + 1
        seen += i
    with total.get_lock():
        total.value += seen


def queue_rate(k, size, n):
    size = max(16, size)
    per = max(1, n // k)
    q = CTX.Queue(1024)
    total = CTX.Value("Q", 0)
    procs = [CTX.Process(target=_produce, args=(q, p, per, size)) for p in range(k)]
    procs += [CTX.Process(target=_consume, args=(q, k, per, size, total)) for _ in range(k)]
    t0 = time.perf_counter()
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    s = time.perf_counter() - t0
    assert all(p.exitcode == 0 for p in procs), "a client failed"
    assert total.value == k * (per * (per - 1) // 2), "lost or duplicated messages"
    return k * per / s


# ---- ticket_buyers --------------------------------------------------------

def _buy(path, sold):
    import fcntl
    n = 0
    with open(path, "r+") as f:
        while True:
            fcntl.flock(f, fcntl.LOCK_EX)
            f.seek(0)
            count = int(f.read())
            if count > 0:
                f.seek(0)
                f.truncate()
                f.write(f"{count - 1}\n")
                f.flush()
                n += 1
            fcntl.flock(f, fcntl.LOCK_UN)
            if count == 0:
                break
    with sold.get_lock():
        sold.value += n


def tickets(k, total):
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "product")
        with open(path, "w") as f:
            f.write(f"{total}\n")
        sold = CTX.Value("Q", 0)
        procs = [CTX.Process(target=_buy, args=(path, sold)) for _ in range(k)]
        t0 = time.perf_counter()
        for p in procs:
            p.start()
        for p in procs:
            p.join()
        s = time.perf_counter() - t0
        with open(path) as f:
            assert int(f.read()) == 0 and sold.value == total, "tickets lost or sold twice"
        return total / s


# ---- pipe_rtt_size, pipe_bw_size ------------------------------------------

def _echo(r, w, parents_end):
    # The forked child holds a copy of the parent's write end: close it, or
    # it never sees end of file.
    parents_end.close()
    while True:
        try:
            m = r.recv_bytes()
        except EOFError:
            return
        w.send_bytes(m)


def pipe_rtt(size):
    a_r, a_w = CTX.Pipe(duplex=False)
    b_r, b_w = CTX.Pipe(duplex=False)
    p = CTX.Process(target=_echo, args=(a_r, b_w, a_w))
    p.start()
    a_r.close()
    b_w.close()
    msg = bytes(i & 0xFF for i in range(size))

    def run(k):
        t0 = time.perf_counter()
        for _ in range(k):
            a_w.send_bytes(msg)
            back = b_r.recv_bytes()
        t = time.perf_counter() - t0
        assert back == msg
        return t

    s = per_op(run)
    a_w.close()
    p.join()
    b_r.close()
    return s * 1e6


def pipe_bw_once(chunk):
    total = ((32 << 20) if QUICK else (256 << 20)) // chunk * chunk
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        buf = b"y" * chunk
        for _ in range(total // chunk):
            view = memoryview(buf)
            while view:
                view = view[os.write(w, view):]
        os._exit(0)
    t0 = time.perf_counter()
    os.close(w)
    got = 0
    while True:
        b = os.read(r, chunk)
        if not b:
            break
        got += len(b)
    s = time.perf_counter() - t0
    os.close(r)
    os.waitpid(pid, 0)
    assert got == total, "short transfer"
    return got / s / 1e9


def main():
    args = [a for a in sys.argv[1:] if a != "--quick"]
    if len(args) != 2:
        sys.exit(__doc__)
    c, x = args[0], float(args[1])
    if c == "fork_rss":
        rss = hold(x)
        point(c, "Python os.fork", rss, per_op(fork_wait) * 1e6)
        point(c, "Python Process", rss, per_op(process_start_join) * 1e6)
    elif c == "spawn_rss":
        rss = hold(x)
        point(c, "Python subprocess.run", rss, per_op(subprocess_run) * 1e6)
    elif c == "pool_map_items":
        point(c, "Python", x, pool_ns_per_item(int(x), 2))
    elif c == "pool_map_workers":
        point(c, "Python", x, pool_ns_per_item(10000 if QUICK else 100000, int(x)))
    elif c == "queue_clients":
        point(c, "Python", x, queue_rate(int(x), 16, 4000 if QUICK else 40000))
    elif c == "queue_size":
        hi = 4000 if QUICK else 40000
        n = min(hi, max(1000, ((32 << 20) if QUICK else (256 << 20)) // int(x)))
        point(c, "Python", x, queue_rate(1, int(x), n))
    elif c == "ticket_buyers":
        point(c, "Python fcntl.flock", x, tickets(int(x), 1000 if QUICK else 10000))
    elif c == "pipe_rtt_size":
        point(c, "Python Connection", x, pipe_rtt(int(x)))
    elif c == "pipe_bw_size":
        s = sorted(pipe_bw_once(int(x)) for _ in range(3))
        point(c, "Python os.read/os.write", x, s[1])


if __name__ == "__main__":
    main()
