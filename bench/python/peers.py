#!/usr/bin/env python3
"""The Python peers of pk-bench: the same work written as a Python user would,
with os, multiprocessing (fork start method) and threading.

Prints the same figure names as pk-bench, one per line (a figure whose
parent size does not fit in the available memory is skipped, with a line on
stderr):
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
    # About 2.5 ms a call: 500 calls are a steady mean.
    n = max(1, int(500 * scale))
    with CTX.Pool(2) as pool:
        t0 = time.perf_counter_ns()
        for i in range(n):
            assert pool.apply_async(_square, (i,)).get() == i * i
        return us_per(t0, n)


def _pong(ping, pong, n):
    for _ in range(n):
        ping.acquire()
        pong.release()


@figure("sem_pingpong_us", "us")
def sem_pingpong(scale):
    n = max(1, int(20000 * scale))
    ping, pong = CTX.Semaphore(0), CTX.Semaphore(0)
    p = CTX.Process(target=_pong, args=(ping, pong, n))
    p.start()
    t0 = time.perf_counter_ns()
    for _ in range(n):
        ping.release()
        pong.acquire()
    t = us_per(t0, n)
    p.join()
    return t


def _add(value, per):
    for _ in range(per):
        with value.get_lock():
            value.value += 1


@figure("shm_semlock_2p_ns_per_op", "ns")
def shm_semlock_2p(scale):
    per = max(1, int(100000 * scale))
    value = CTX.Value("q", 0)
    procs = [CTX.Process(target=_add, args=(value, per)) for _ in range(2)]
    t0 = time.perf_counter_ns()
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    assert value.value == 2 * per
    return (time.perf_counter_ns() - t0) / (2 * per)


def _produce(q, n):
    for i in range(n):
        q.put(i.to_bytes(8, "little") + bytes(8))


@figure("queue_msgs_per_s", "msgs/s")
def queue_msgs(scale):
    n = max(1, int(100000 * scale))
    q = CTX.Queue(1024)
    p = CTX.Process(target=_produce, args=(q, n))
    p.start()
    t0 = time.perf_counter_ns()
    for i in range(n):
        assert q.get()[:8] == i.to_bytes(8, "little")
    rate = n / ((time.perf_counter_ns() - t0) / 1e9)
    p.join()
    return rate


# The named queue's peer: Python has no named queue, so the closest is the
# same work between two processes through multiprocessing.Queue.
figure("queue_named_1p1c_msgs_per_s", "msgs/s")(queue_msgs)


@figure("flock_lock_unlock_ns", "ns")
def flock_lock_unlock(scale):
    import fcntl
    import tempfile
    n = max(1, int(100000 * scale))
    with tempfile.NamedTemporaryFile() as f:
        t0 = time.perf_counter_ns()
        for _ in range(n):
            fcntl.flock(f, fcntl.LOCK_EX)
            fcntl.flock(f, fcntl.LOCK_UN)
        return (time.perf_counter_ns() - t0) / n


def _buy(path):
    import fcntl
    with open(path, "r+") as f:
        while True:
            fcntl.flock(f, fcntl.LOCK_EX)
            f.seek(0)
            count = int(f.read())
            if count > 0:
                f.seek(0)
                f.write(str(count - 1).ljust(len(str(count))))
                f.flush()
            fcntl.flock(f, fcntl.LOCK_UN)
            if count == 0:
                return


@figure("ticket_flock_K4_per_s", "tickets/s")
def ticket_flock_k4(scale):
    import tempfile
    total = max(1, int(20000 * scale))
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "product")
        with open(path, "w") as f:
            f.write(f"{total}\n")
        procs = [CTX.Process(target=_buy, args=(path,)) for _ in range(4)]
        t0 = time.perf_counter_ns()
        for p in procs:
            p.start()
        for p in procs:
            p.join()
        with open(path) as f:
            assert int(f.read()) == 0
        return total / ((time.perf_counter_ns() - t0) / 1e9)


@figure("thread_create_join_us", "us")
def thread_create_join(scale):
    import threading
    n = max(1, int(5000 * scale))
    t0 = time.perf_counter_ns()
    for _ in range(n):
        t = threading.Thread(target=lambda: None, name="bench")
        t.start()
        t.join()
    return us_per(t0, n)


@figure("thread_mutex_2t_ns_per_op", "ns")
def thread_mutex_2t(scale):
    import threading
    per = max(1, int(200000 * scale))
    lock = threading.Lock()
    box = [0]

    def add():
        for _ in range(per):
            with lock:
                box[0] += 1

    ts = [threading.Thread(target=add) for _ in range(2)]
    t0 = time.perf_counter_ns()
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert box[0] == 2 * per
    return (time.perf_counter_ns() - t0) / (2 * per)


def _echo(conn, n):
    # The forked child holds a copy of the parent's end as well, so it
    # would never see EOF: echo exactly n messages.
    for _ in range(n):
        conn.send_bytes(conn.recv_bytes())


@figure("pipe_rtt_framed_us", "us")
def pipe_rtt_framed(scale):
    n = max(1, int(20000 * scale))
    a, b = CTX.Pipe()
    p = CTX.Process(target=_echo, args=(b, n))
    p.start()
    b.close()
    t0 = time.perf_counter_ns()
    for _ in range(n):
        a.send_bytes(b"x")
        assert a.recv_bytes() == b"x"
    t = us_per(t0, n)
    a.close()
    p.join()
    return t


@figure("pipe_rtt_us", "us")
def pipe_rtt(scale):
    n = max(1, int(20000 * scale))
    a_r, a_w = os.pipe()
    b_r, b_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(a_w)
        os.close(b_r)
        while True:
            c = os.read(a_r, 1)
            if not c:
                os._exit(0)
            os.write(b_w, c)
    os.close(a_r)
    os.close(b_w)
    t0 = time.perf_counter_ns()
    for _ in range(n):
        os.write(a_w, b"x")
        assert os.read(b_r, 1) == b"x"
    t = us_per(t0, n)
    os.close(a_w)
    os.close(b_r)
    os.waitpid(pid, 0)
    return t


@figure("pipe_bw_GBps", "GB/s")
def pipe_bw(scale):
    chunk = 64 * 1024
    total = max(chunk, int((256 << 20) * scale)) // chunk * chunk
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        buf = b"y" * chunk
        for _ in range(total // chunk):
            os.write(w, buf)
        os._exit(0)
    os.close(w)
    got = 0
    t0 = time.perf_counter_ns()
    while True:
        b = os.read(r, chunk)
        if not b:
            break
        got += len(b)
    s = (time.perf_counter_ns() - t0) / 1e9
    os.close(r)
    os.waitpid(pid, 0)
    assert got == total
    return got / s / 1e9


MIB = 1 << 20
QUICK = [False]
BALLAST = [bytearray()]


def _available_memory():
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return None


def _ballast(nbytes):
    """Hold nbytes of written heap (a sixteenth with --quick); False when
    the machine lacks the memory."""
    if QUICK[0]:
        nbytes //= 16
    if len(BALLAST[0]) == nbytes:
        return True
    BALLAST[0] = bytearray()
    if nbytes == 0:
        return True
    avail = _available_memory()
    if avail is not None and avail < nbytes + 512 * MIB:
        return False
    BALLAST[0] = bytearray(b"\x5a") * nbytes  # memset: every page resident
    return True


def _spawn(scale, nbytes):
    import subprocess
    if not _ballast(nbytes):
        return None
    n = max(1, int(200 * scale))
    t0 = time.perf_counter_ns()
    for _ in range(n):
        subprocess.run(["/bin/true"], check=True)
    return us_per(t0, n)


# subprocess.run(['/bin/true']) from parents of the sizes pk-bench uses.
for _name, _size in (("spawn_us", 0), ("spawn_256MiB_us", 256 * MIB),
                     ("spawn_1GiB_us", 1024 * MIB), ("spawn_4GiB_us", 4096 * MIB)):
    FIGURES[_name] = ("us", lambda scale, size=_size: _spawn(scale, size))


M64 = (1 << 64) - 1


def _spin(seed, steps):
    """The CPU-bound job of pk-threads gil: xorshift64 (13, 7, 17) rounds."""
    x = seed | 1
    for _ in range(steps):
        x ^= (x << 13) & M64
        x ^= x >> 7
        x ^= (x << 17) & M64
    return x


def _gil_jobs():
    return min(max(os.cpu_count() or 1, 2), 64)


def _gil_seed(i):
    return (i * 0x9E3779B97F4A7C15) & M64


def _spin_job(args):
    return _spin(*args)


def _gil_sample(scale, parallel):
    n = _gil_jobs()
    steps = max(1, int(600_000 * scale))
    jobs = [(_gil_seed(i), steps) for i in range(1, n + 1)]
    t0 = time.perf_counter_ns()
    want = [_spin(*j) for j in jobs]
    t_seq = time.perf_counter_ns() - t0
    t0 = time.perf_counter_ns()
    got = parallel(jobs)
    t_par = time.perf_counter_ns() - t0
    assert got == want
    return t_seq / t_par


@figure("gil_threads_speedup_x", "x")
def gil_threads_speedup(scale):
    import threading

    def on_threads(jobs):
        out = [None] * len(jobs)

        def run(i):
            out[i] = _spin(*jobs[i])

        ts = [threading.Thread(target=run, args=(i,)) for i in range(len(jobs))]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        return out

    return _gil_sample(scale, on_threads)


def _spin_into(i, args, out):
    out[i] = _spin(*args)


@figure("gil_procs_speedup_x", "x")
def gil_procs_speedup(scale):
    def in_processes(jobs):
        out = CTX.Array("Q", len(jobs), lock=False)
        ps = [CTX.Process(target=_spin_into, args=(i, j, out)) for i, j in enumerate(jobs)]
        for p in ps:
            p.start()
        for p in ps:
            p.join()
        return list(out)

    return _gil_sample(scale, in_processes)


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
    QUICK[0] = a.quick
    reps = a.reps or (3 if a.quick else 5)
    for name, (unit, fn) in FIGURES.items():
        if a.only and name not in a.only:
            continue
        print(f"running {name} ...", file=sys.stderr, flush=True)
        if fn(scale / 10) is None:
            print(f"skipped {name}: not enough memory", file=sys.stderr, flush=True)
            continue
        s = sorted(fn(scale) for _ in range(reps))
        med = s[len(s) // 2] if len(s) % 2 else (s[len(s) // 2 - 1] + s[len(s) // 2]) / 2
        if a.json:
            print(json.dumps({"figure": name, "unit": unit, "median": round(med, 3),
                              "min": round(s[0], 3), "max": round(s[-1], 3), "reps": reps}), flush=True)
        else:
            print(f"{name} {med:.3f} {unit} (min {s[0]:.3f}, max {s[-1]:.3f}, {reps} reps)", flush=True)


if __name__ == "__main__":
    main()
