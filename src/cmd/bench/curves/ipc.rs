//! Curves between processes: the pool by items and workers, the queue by
//! clients and message size, ticket purchases by buyers, pipes by message
//! size. Each point checks its own result (every item squared, every
//! message once and in order per producer, every ticket sold once).

use std::time::Instant;

use super::{budget, note, per_op, secs};
use crate::cmd::Result;
use crate::cmd::bench::{check, child, join_ok, run_children, ticket::with_ticket_file};
use crate::pool::Pool;

/// ns per item of map(square) over `items` on a warm pool of `workers`,
/// chunks as Python makes them (four per worker).
fn pool_map(items: usize, workers: usize, quick: bool) -> Result<f64> {
    let (registry, tasks) = crate::cmd::pool::registry();
    let mut pool = Pool::new(workers, registry)?;
    let args: Vec<i64> = (0..items as i64).collect();
    let mut r = pool.map(tasks.square, &args, 0)?;
    let last = items as i64 - 1;
    let s = per_op(budget(quick), |k| {
        let t0 = Instant::now();
        for _ in 0..k {
            pool.map_into(tasks.square, &args, 0, &mut r)?;
        }
        let t = secs(t0);
        check(
            r.len() == items && r.get(items - 1) == Ok(last * last) && r.get(0) == Ok(0),
            "pool_map",
            "wrong result",
        )?;
        Ok(t)
    })?;
    pool.close();
    pool.join()?;
    Ok(s * 1e9 / items as f64)
}

pub(super) fn pool_items_point(items: f64, quick: bool) -> Result<Option<(f64, f64)>> {
    Ok(Some((items, pool_map(items as usize, 2, quick)?)))
}

pub(super) fn pool_workers_point(workers: f64, quick: bool) -> Result<Option<(f64, f64)>> {
    let items = if quick { 10_000 } else { 100_000 };
    Ok(Some((workers, pool_map(items, workers as usize, quick)?)))
}

/// `k` producer and `k` consumer processes through one bounded Queue of
/// 1024 slots, `size`-byte messages, `total` in all; messages per second.
/// Each message carries its producer and sequence number: a consumer
/// checks that each producer's numbers rise (FIFO), and the sum of all
/// numbers seen must be the sum of all sent (none lost or duplicated).
fn queue_run(k: usize, size: usize, total: u64) -> Result<f64> {
    use crate::shm::SharedValue;
    use std::sync::atomic::Ordering;
    let per = (total / k as u64).max(1);
    let size = size.max(16);
    let slots = crate::queue::max_capacity(size).min(1024);
    let q = crate::queue::Queue::new(slots, size)?;
    let sum = SharedValue::<u64>::new(0)?;
    let gate = crate::sem::Semaphore::new(0)?;
    let mut procs = Vec::with_capacity(2 * k);
    for p in 0..k as u64 {
        procs.push(child(&gate, || {
            let mut msg = vec![0u8; size];
            msg[..8].copy_from_slice(&p.to_le_bytes());
            for i in 0..per {
                msg[8..16].copy_from_slice(&i.to_le_bytes());
                if q.put(&msg).is_err() {
                    return 1;
                }
            }
            0
        })?);
    }
    for _ in 0..k {
        procs.push(child(&gate, || {
            let mut buf = Vec::with_capacity(size);
            let mut next = vec![0u64; k];
            let mut seen = 0u64;
            // A lost message shows as a consumer that times out.
            let Ok(deadline) =
                crate::sem::Deadline::after(Some(std::time::Duration::from_secs(60)))
            else {
                return 1;
            };
            for _ in 0..per {
                if !matches!(q.get_into_until(&mut buf, deadline), Ok(true)) {
                    return 1;
                }
                let word =
                    |at: usize| u64::from_le_bytes(buf[at..at + 8].try_into().unwrap_or([0xff; 8]));
                let (p, i) = (word(0) as usize, word(8));
                if buf.len() != size || p >= k || i < next[p] {
                    return 2;
                }
                next[p] = i + 1;
                seen += i;
            }
            sum.atomic().fetch_add(seen, Ordering::Relaxed);
            0
        })?);
    }
    let secs = run_children(&gate, procs, "queue")?;
    let want = k as u64 * (per * (per - 1) / 2);
    check(sum.get() == want, "queue", "messages lost or duplicated")?;
    Ok((k as u64 * per) as f64 / secs)
}

pub(super) fn queue_clients_point(k: f64, quick: bool) -> Result<Option<(f64, f64)>> {
    let total = if quick { 20_000 } else { 200_000 };
    Ok(Some((k, queue_run(k as usize, 16, total)?)))
}

pub(super) fn queue_size_point(size: f64, quick: bool) -> Result<Option<(f64, f64)>> {
    let bytes: u64 = if quick { 32 << 20 } else { 256 << 20 };
    let total = (bytes / size as u64).clamp(2_000, if quick { 20_000 } else { 200_000 });
    Ok(Some((size, queue_run(1, size as usize, total)?)))
}

/// `k` buyer processes buy `total` tickets; purchases per second. Every
/// ticket is sold exactly once: the buyers' counts add up to the stock
/// and the file ends at 0.
pub(super) fn ticket_point(k: f64, quick: bool) -> Result<Option<(f64, f64)>> {
    use crate::shm::SharedValue;
    use crate::ticket::{Sale, TicketFile};
    use std::sync::atomic::Ordering;
    let total: u64 = if quick { 5_000 } else { 50_000 };
    let rate = with_ticket_file(total, |path| {
        let gate = crate::sem::Semaphore::new(0)?;
        let sold = SharedValue::<u64>::new(0)?;
        let buyer = || -> i32 {
            let Ok(file) = TicketFile::open(path) else {
                return 1;
            };
            let mut n = 0;
            loop {
                match file.buy() {
                    Ok(Sale::Bought(_)) => n += 1,
                    Ok(Sale::SoldOut) => break,
                    Err(_) => return 1,
                }
            }
            sold.atomic().fetch_add(n, Ordering::Relaxed);
            0
        };
        let children = (0..k as usize)
            .map(|_| child(&gate, buyer))
            .collect::<Result<Vec<_>>>()?;
        let secs = run_children(&gate, children, "ticket_buyers")?;
        check(
            sold.get() == total && TicketFile::open_read_only(path)?.count()? == 0,
            "ticket_buyers",
            "tickets lost or sold twice",
        )?;
        Ok(total as f64 / secs)
    })?;
    Ok(Some((k, rate)))
}

/// The shell peer: each buyer is `sh` looping on `flock FILE sh -c 'read,
/// decrement, write'` until the count is 0, then printing how many it
/// bought.
const SHELL_BUYER: &str = r#"
f=$1; n=0
while flock "$f" sh -c 'read c < "$1" && [ "$c" -gt 0 ] && echo $((c - 1)) > "$1"' sh "$f"; do
  n=$((n + 1))
done
echo "$n"
"#;

pub(super) fn ticket_shell_point(k: f64, quick: bool) -> Result<Option<(f64, f64)>> {
    use std::process::{Command, Stdio};
    if Command::new("flock")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_err()
    {
        note("skipped flock(1) shell buyers: flock(1) is not installed");
        return Ok(None);
    }
    let total: u64 = if quick { 100 } else { 600 };
    let rate = with_ticket_file(total, |path| {
        let t0 = Instant::now();
        let buyers = (0..k as usize)
            .map(|_| {
                Command::new("sh")
                    .args(["-c", SHELL_BUYER, "buyer"])
                    .arg(path)
                    .stdout(Stdio::piped())
                    .spawn()
                    .map_err(|e| crate::error::Error::io("spawn", "sh", &e).into())
            })
            .collect::<Result<Vec<_>>>()?;
        let mut sold = 0u64;
        for b in buyers {
            let out = b
                .wait_with_output()
                .map_err(|e| crate::error::Error::io("wait", "sh", &e))?;
            check(
                out.status.success(),
                "ticket_buyers",
                "a shell buyer failed",
            )?;
            sold += String::from_utf8_lossy(&out.stdout)
                .trim()
                .parse::<u64>()
                .unwrap_or(0);
        }
        let secs = secs(t0);
        check(
            sold == total,
            "ticket_buyers",
            "shell buyers: tickets lost or sold twice",
        )?;
        Ok(total as f64 / secs)
    })?;
    Ok(Some((k, rate)))
}

/// µs per round trip of `size` bytes through two pipes, an echo child on
/// the other side; raw reads and writes or frames.
fn pipe_rtt(size: usize, framed: bool, quick: bool) -> Result<f64> {
    use crate::pipe::{self, FrameReader};
    use std::os::fd::AsFd;
    let (a_r, a_w) = pipe::pipe()?;
    let (b_r, b_w) = pipe::pipe()?;
    let gate = crate::sem::Semaphore::new(0)?;
    // The child holds copies of the parent's ends too, so it would never
    // see end of file: before each run the parent sends how many messages
    // follow (8 bytes), and 0 to stop.
    let mut echo = child(&gate, || {
        let mut frames = FrameReader::new(&a_r);
        let mut buf = vec![0u8; size];
        loop {
            let mut count = [0u8; 8];
            if !matches!(pipe::read_full(a_r.as_fd(), &mut count), Ok(8)) {
                return 1;
            }
            let k = u64::from_le_bytes(count);
            if k == 0 {
                return 0;
            }
            for _ in 0..k {
                let ok = if framed {
                    matches!(frames.recv(), Ok(Some(f)) if b_w.send(f).is_ok())
                } else {
                    matches!(pipe::read_full(a_r.as_fd(), &mut buf), Ok(n) if n == size)
                        && pipe::write_all(b_w.as_fd(), &buf).is_ok()
                };
                if !ok {
                    return 1;
                }
            }
        }
    })?;
    drop((a_r, b_w));
    gate.post()?;
    let mut frames = FrameReader::new(&b_r);
    let msg: Vec<u8> = (0..size).map(|i| i as u8).collect();
    let mut back = vec![0u8; size];
    let s = per_op(budget(quick), |k| {
        a_w.write_all(&k.to_le_bytes())?;
        let t0 = Instant::now();
        for _ in 0..k {
            if framed {
                a_w.send(&msg)?;
                let f = frames.recv()?;
                check(f == Some(&msg[..]), "pipe_rtt_size", "wrong echo")?;
            } else {
                a_w.write_all(&msg)?;
                check(
                    b_r.read_full(&mut back)? == size,
                    "pipe_rtt_size",
                    "lost bytes",
                )?;
            }
        }
        let t = secs(t0);
        check(framed || back == msg, "pipe_rtt_size", "wrong echo")?;
        Ok(t)
    })?;
    a_w.write_all(&0u64.to_le_bytes())?;
    join_ok(&mut echo, "pipe_rtt_size", "the echo child failed")?;
    Ok(s * 1e6)
}

pub(super) fn pipe_rtt_point(size: f64, quick: bool) -> Result<Option<(f64, f64)>> {
    Ok(Some((size, pipe_rtt(size as usize, false, quick)?)))
}

pub(super) fn pipe_rtt_framed_point(size: f64, quick: bool) -> Result<Option<(f64, f64)>> {
    Ok(Some((size, pipe_rtt(size as usize, true, quick)?)))
}

/// GB/s of 256 MiB (32 MiB with --quick) one way through a pipe in
/// `chunk`-byte writes and reads; the pipe's buffer set to `capacity`
/// bytes first when given. The median of three transfers.
fn pipe_bw(chunk: usize, capacity: Option<usize>, quick: bool) -> Result<f64> {
    let total = (if quick { 32usize << 20 } else { 256 << 20 }) / chunk * chunk;
    let mut rates = Vec::with_capacity(3);
    for _ in 0..3 {
        let (r, w) = crate::pipe::pipe()?;
        if let Some(bytes) = capacity {
            w.set_capacity(bytes)?;
        }
        let buf = vec![b'y'; chunk];
        let mut rbuf = vec![0u8; chunk];
        let mut writer = crate::process::Builder::new().name("bench").start(|| {
            for _ in 0..total / chunk {
                if w.write_all(&buf).is_err() {
                    return 1;
                }
            }
            0
        })?;
        let t0 = Instant::now();
        drop(w);
        let mut got = 0;
        loop {
            match r.read(&mut rbuf)? {
                0 => break,
                k => got += k,
            }
        }
        rates.push(got as f64 / secs(t0) / 1e9);
        join_ok(&mut writer, "pipe_bw_size", "short transfer")?;
        check(got == total, "pipe_bw_size", "short transfer")?;
    }
    rates.sort_by(f64::total_cmp);
    Ok(rates[1])
}

pub(super) fn pipe_bw_point(chunk: f64, quick: bool) -> Result<Option<(f64, f64)>> {
    Ok(Some((chunk, pipe_bw(chunk as usize, None, quick)?)))
}

/// The same transfers with the writer's buffers lent to the pipe with
/// vmsplice(2) ([`crate::pipe::PageWriter`]), default pipe buffer.
pub(super) fn pipe_bw_vmsplice_point(chunk: f64, quick: bool) -> Result<Option<(f64, f64)>> {
    let total = if quick { 32usize << 20 } else { 256 << 20 };
    let mut rates = Vec::with_capacity(3);
    for _ in 0..3 {
        rates.push(crate::cmd::bench::pipe::vmsplice_bw(
            chunk as usize,
            total,
            None,
            "pipe_bw_size",
        )?);
    }
    rates.sort_by(f64::total_cmp);
    Ok(Some((chunk, rates[1])))
}

pub(super) fn pipe_bw_big_point(chunk: f64, quick: bool) -> Result<Option<(f64, f64)>> {
    Ok(Some((
        chunk,
        pipe_bw(chunk as usize, Some(1 << 20), quick)?,
    )))
}
