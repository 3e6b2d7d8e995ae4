//! `pk-bench`: every primitive timed through the library: median and spread
//! of several repetitions after a warm-up.
//!
//! Figure names match the C baselines where the work is the same (for
//! example `fork_wait_us`), so a table can put posixkit, Python and the C
//! limit side by side.

use std::time::Instant;

use clap::Parser;

use crate::cmd::Out;
use crate::cmd::exit;
use crate::cmd::{Failure, Result};
use crate::error::Error;
use crate::outln;
use crate::process::{self, Builder, Fork};

const AFTER_HELP: &str = "\
Output: one line per figure,
  <figure> <median> <unit> (min <min>, max <max>, <reps> reps)
or with --json one JSON object per line:
  {\"figure\":\"fork_wait_us\",\"unit\":\"us\",\"median\":148.2,\"min\":140.1,\"max\":160.3,\"reps\":7}
Progress lines (`running <figure> ...`) go to stderr.

Figures (unit; lower is better unless marked higher):
  fork_wait_us              fork + _exit(code) + waitpid + WEXITSTATUS, per child
  process_start_join_us     Process start (fork, pidfd) + join + exitcode, per child
  pool_map10k_warm_us       Pool of 2, map_into(square) over 10 000 ints in chunks of 1 250,
                            pool already up, one result set reused; square is a typed
                            task, fn(i64) -> Result<i64, String>
  pool_apply_async_rtt_us   Pool of 2, one apply_async(square) + get, round trip
  sem_pingpong_us           two processes, two pshared semaphores, post/wait round trip
  shm_atomic_2p_ns_per_op   two processes adding 1 to one SharedValue<u64> with fetch_add
  shm_semlock_2p_ns_per_op  the same under a pshared Semaphore(1) used as a lock
  queue_msgs_per_s          Queue of 1024 slots, one producer and one consumer process,
                            16-byte messages (higher is better)
  flock_lock_unlock_ns      TicketFile::lock_exclusive + drop (LOCK_EX, LOCK_UN), uncontended
  ticket_flock_K4_per_s     four processes buying 100 000 tickets from one flock-locked
                            ticket file (higher is better)
  pipe_rtt_us               1 byte there and back over two pipes (pipe::read/write)
  pipe_rtt_framed_us        the same as 1-byte frames: send + FrameReader::recv
  pipe_bw_GBps              1 GiB one way in 64 KiB write_all/read calls (higher is better)
  thread_create_join_us     thread::spawn (a named thread) + join, per thread
  thread_mutex_2t_ns_per_op two threads adding 1 to a counter under one std Mutex

--quick: 1 warm-up, 3 reps, a tenth of the work: a smoke run, not a figure to quote.

Exit status: 0 when every figure ran; 2 for a bad flag or an unknown figure;
71 when a system call fails.";

/// Time each primitive through the library; print medians and spreads.
#[derive(Debug, Parser)]
#[command(name = "pk-bench", version, after_help = AFTER_HELP)]
pub struct Args {
    /// Run only this figure (repeatable); see the list below.
    #[arg(long, value_name = "FIGURE")]
    pub only: Vec<String>,

    /// A quick smoke run: fewer repetitions and a tenth of the work.
    #[arg(long)]
    pub quick: bool,

    /// Repetitions per figure (1-99), after one warm-up run.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=99))]
    pub reps: Option<u32>,

    /// Print one JSON object per figure instead of text.
    #[arg(long)]
    pub json: bool,

    /// List the figure names and exit.
    #[arg(long)]
    pub list: bool,
}

/// How much work one sample does: a base count scaled by --quick.
#[derive(Debug, Clone, Copy)]
pub struct Scale(f64);

impl Scale {
    fn n(self, base: u64) -> u64 {
        ((base as f64 * self.0) as u64).max(1)
    }
}

type Sample = fn(Scale) -> Result<f64>;

/// One benchmark figure.
struct Figure {
    name: &'static str,
    unit: &'static str,
    sample: Sample,
}

const fn fig(name: &'static str, unit: &'static str, sample: Sample) -> Figure {
    Figure { name, unit, sample }
}

const FIGURES: &[Figure] = &[
    fig("fork_wait_us", "us", fork_wait),
    fig("process_start_join_us", "us", process_start_join),
    fig("pool_map10k_warm_us", "us", pool_map10k_warm),
    fig("pool_apply_async_rtt_us", "us", pool_apply_async_rtt),
    fig("sem_pingpong_us", "us", sem_pingpong),
    fig("shm_atomic_2p_ns_per_op", "ns", shm_atomic_2p),
    fig("shm_semlock_2p_ns_per_op", "ns", shm_semlock_2p),
    fig("queue_msgs_per_s", "msgs/s", queue_msgs),
    fig("flock_lock_unlock_ns", "ns", flock_lock_unlock),
    fig("ticket_flock_K4_per_s", "tickets/s", ticket_flock_k4),
    fig("pipe_rtt_us", "us", pipe_rtt),
    fig("pipe_rtt_framed_us", "us", pipe_rtt_framed),
    fig("pipe_bw_GBps", "GB/s", pipe_bw),
    fig("thread_create_join_us", "us", thread_create_join),
    fig("thread_mutex_2t_ns_per_op", "ns", thread_mutex_2t),
];

/// Run the benchmarks.
pub fn run(args: Args, out: &mut Out) -> Result<u8> {
    if args.list {
        for f in FIGURES {
            outln!(out, "{} {}", f.name, f.unit)?;
        }
        return Ok(exit::OK);
    }
    for name in &args.only {
        if !FIGURES.iter().any(|f| f.name == name) {
            return Err(
                Error::invalid("--only", format!("unknown figure '{name}' (see --list)")).into(),
            );
        }
    }
    let scale = Scale(if args.quick { 0.1 } else { 1.0 });
    let reps = args.reps.unwrap_or(if args.quick { 3 } else { 7 }) as usize;
    for f in FIGURES
        .iter()
        .filter(|f| args.only.is_empty() || args.only.iter().any(|o| o == f.name))
    {
        let _ = std::io::Write::write_all(
            &mut std::io::stderr(),
            format!("running {} ...\n", f.name).as_bytes(),
        );
        (f.sample)(Scale(scale.0 / 10.0))?; // warm-up
        let mut samples = Vec::with_capacity(reps);
        for _ in 0..reps {
            samples.push((f.sample)(scale)?);
        }
        samples.sort_by(f64::total_cmp);
        let median = median(&samples);
        let (min, max) = (samples[0], samples[samples.len() - 1]);
        if args.json {
            outln!(
                out,
                "{{\"figure\":\"{}\",\"unit\":\"{}\",\"median\":{median:.3},\"min\":{min:.3},\"max\":{max:.3},\"reps\":{reps}}}",
                f.name,
                f.unit
            )?;
        } else {
            outln!(
                out,
                "{} {median:.3} {} (min {min:.3}, max {max:.3}, {reps} reps)",
                f.name,
                f.unit
            )?;
        }
    }
    Ok(exit::OK)
}

fn median(sorted: &[f64]) -> f64 {
    let n = sorted.len();
    if n % 2 == 1 {
        sorted[n / 2]
    } else {
        (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
    }
}

/// Microseconds per item for `n` items done since `t0`.
fn us_per(t0: Instant, n: u64) -> f64 {
    t0.elapsed().as_secs_f64() * 1e6 / n as f64
}

/// fork + `_exit(i & 0x7f)` + waitpid + check WEXITSTATUS, as the C baseline does.
fn fork_wait(scale: Scale) -> Result<f64> {
    let n = scale.n(3000);
    let t0 = Instant::now();
    for i in 0..n {
        let code = (i & 0x7f) as u8;
        match process::fork_named("bench child")? {
            Fork::Child => process::_exit(i32::from(code)),
            Fork::Parent(pid) => {
                let status = process::waitpid(pid)?;
                check(
                    status == crate::status::Status::Exited(code),
                    "fork_wait",
                    "wrong exit status",
                )?;
            }
        }
    }
    Ok(us_per(t0, n))
}

/// `Process` start + join + exitcode check, as Python's Process(...).start(); join().
fn process_start_join(scale: Scale) -> Result<f64> {
    let n = scale.n(2000);
    let t0 = Instant::now();
    for i in 0..n {
        let code = (i & 0x7f) as i32;
        let mut p = Builder::new().name("bench").start(|| code)?;
        p.join(None)?;
        check(
            p.exitcode() == Some(code),
            "process_start_join",
            "wrong exitcode",
        )?;
    }
    Ok(us_per(t0, n))
}

/// Join a figure's helper process: its failure fails the figure.
fn join_ok(p: &mut process::Process, figure: &str, why: &str) -> Result<()> {
    p.join(None)?;
    check(p.exitcode() == Some(0), figure, why)
}

/// A benchmark that computed a wrong answer is an error, not a figure.
fn check(ok: bool, figure: &str, why: &str) -> Result<()> {
    if ok {
        Ok(())
    } else {
        Err(Failure::from(Error::data("check", figure, why)).with_code(exit::OS_ERR))
    }
}

fn bench_pool() -> Result<crate::pool::Pool> {
    Ok(crate::pool::Pool::new(2, crate::cmd::pool::registry())?)
}

/// map(square) of 10 000 items in chunks of 1 250 on a warm pool of 2, per map.
fn pool_map10k_warm(scale: Scale) -> Result<f64> {
    let maps = scale.n(200);
    let args: Vec<[u8; 8]> = (0..10_000i64).map(i64::to_le_bytes).collect();
    let mut pool = bench_pool()?;
    // map_into reuses one result set, as the C baseline reuses its arrays.
    let mut r = pool.map("square", &args, 1250)?; // warm the workers
    let t0 = Instant::now();
    for _ in 0..maps {
        pool.map_into("square", &args, 1250, &mut r)?;
        check(
            r.get(9999) == Ok(&(9999i64 * 9999).to_le_bytes()[..]),
            "pool_map10k_warm",
            "wrong result",
        )?;
    }
    let t = us_per(t0, maps);
    pool.close();
    pool.join()?;
    Ok(t)
}

/// apply_async(square) + get on a warm pool of 2, per round trip.
fn pool_apply_async_rtt(scale: Scale) -> Result<f64> {
    let n = scale.n(20_000);
    let mut pool = bench_pool()?;
    let t0 = Instant::now();
    for i in 0..n as i64 {
        let h = pool.apply_async("square", &i.to_le_bytes())?;
        let r = pool.get(&h, None)?.expect("no timeout");
        check(
            r.as_deref() == Ok(&(i * i).to_le_bytes()[..]),
            "pool_apply_async_rtt",
            "wrong result",
        )?;
    }
    let t = us_per(t0, n);
    pool.close();
    pool.join()?;
    Ok(t)
}

/// Start a child process running `f`, released when the parent posts `gate`.
fn child(gate: &crate::sem::Semaphore, f: impl FnOnce() -> i32) -> Result<crate::process::Process> {
    Ok(Builder::new().name("bench").start(|| match gate.wait() {
        Ok(()) => f(),
        Err(_) => 1,
    })?)
}

/// Release `children` from `gate`, time them to the end, check they succeeded.
fn run_children(
    gate: &crate::sem::Semaphore,
    mut children: Vec<crate::process::Process>,
    figure: &str,
) -> Result<f64> {
    let t0 = Instant::now();
    for _ in &children {
        gate.post()?;
    }
    for c in &mut children {
        join_ok(c, figure, "a worker process failed")?;
    }
    Ok(t0.elapsed().as_secs_f64())
}

/// Round trip through two process-shared semaphores: post a, wait b.
fn sem_pingpong(scale: Scale) -> Result<f64> {
    use crate::sem::Semaphore;
    let n = scale.n(100_000);
    let (ping, pong, gate) = (Semaphore::new(0)?, Semaphore::new(0)?, Semaphore::new(0)?);
    let mut c = child(&gate, || {
        for _ in 0..n {
            if ping.wait().is_err() || pong.post().is_err() {
                return 1;
            }
        }
        0
    })?;
    gate.post()?;
    let t0 = Instant::now();
    for _ in 0..n {
        ping.post()?;
        pong.wait()?;
    }
    let t = us_per(t0, n);
    join_ok(&mut c, "sem_pingpong", "the partner failed")?;
    Ok(t)
}

fn counter_2p(scale: Scale, figure: &str, locked: bool) -> Result<f64> {
    use crate::sem::Semaphore;
    use crate::shm::SharedValue;
    use std::sync::atomic::Ordering;
    let per = scale.n(2_000_000);
    let value = SharedValue::<u64>::new(0)?;
    let (lock, gate) = (Semaphore::new(1)?, Semaphore::new(0)?);
    let add = || -> i32 {
        for _ in 0..per {
            if locked {
                let Ok(_held) = lock.acquire() else { return 1 };
                value.set(value.get() + 1);
            } else {
                value.atomic().fetch_add(1, Ordering::Relaxed);
            }
        }
        0
    };
    let children = vec![child(&gate, add)?, child(&gate, add)?];
    let secs = run_children(&gate, children, figure)?;
    check(value.get() == 2 * per, figure, "lost updates")?;
    Ok(secs * 1e9 / (2 * per) as f64)
}

/// Two processes, fetch_add on one shared u64.
fn shm_atomic_2p(scale: Scale) -> Result<f64> {
    counter_2p(scale, "shm_atomic_2p", false)
}

/// Two processes, a read-modify-write under a Semaphore(1) lock.
fn shm_semlock_2p(scale: Scale) -> Result<f64> {
    counter_2p(scale, "shm_semlock_2p", true)
}

/// One producer process and one consumer (this one), 16-byte messages.
fn queue_msgs(scale: Scale) -> Result<f64> {
    let n = scale.n(1_000_000);
    let q = crate::queue::Queue::new(1024, 16)?;
    let gate = crate::sem::Semaphore::new(0)?;
    let mut producer = child(&gate, || {
        for i in 0..n {
            let mut msg = [0u8; 16];
            msg[..8].copy_from_slice(&i.to_le_bytes());
            if q.put(&msg).is_err() {
                return 1;
            }
        }
        0
    })?;
    let mut buf = Vec::with_capacity(16);
    gate.post()?;
    let t0 = Instant::now();
    for i in 0..n {
        q.get_into(&mut buf)?;
        check(
            buf.get(..8) == Some(&i.to_le_bytes()[..]),
            "queue_msgs",
            "out of order",
        )?;
    }
    let rate = n as f64 / t0.elapsed().as_secs_f64();
    join_ok(&mut producer, "queue_msgs", "the producer failed")?;
    Ok(rate)
}

/// Four processes buy 100 000 tickets from one file; tickets per second.
fn ticket_flock_k4(scale: Scale) -> Result<f64> {
    use crate::ticket::{Sale, TicketFile};
    let total = scale.n(100_000);
    with_ticket_file(total, |path| {
        let gate = crate::sem::Semaphore::new(0)?;
        let buyer = || -> i32 {
            let Ok(file) = TicketFile::open(path) else {
                return 1;
            };
            loop {
                match file.buy() {
                    Ok(Sale::Bought(_)) => {}
                    Ok(Sale::SoldOut) => return 0,
                    Err(_) => return 1,
                }
            }
        };
        let children = (0..4)
            .map(|_| child(&gate, buyer))
            .collect::<Result<Vec<_>>>()?;
        let secs = run_children(&gate, children, "ticket_flock_K4")?;
        check(
            TicketFile::open_read_only(path)?.count()? == 0,
            "ticket_flock_K4",
            "tickets left",
        )?;
        Ok(total as f64 / secs)
    })
}

/// A named thread started and joined, per thread.
fn thread_create_join(scale: Scale) -> Result<f64> {
    let n = scale.n(20_000);
    let t0 = Instant::now();
    for i in 0..n {
        let got = crate::thread::spawn("bench", move || i)?.join()?;
        check(got == i, "thread_create_join", "wrong result")?;
    }
    Ok(us_per(t0, n))
}

/// Two threads incrementing one counter under a Mutex, per increment.
fn thread_mutex_2t(scale: Scale) -> Result<f64> {
    use std::sync::{Arc, Mutex};
    let per = scale.n(5_000_000);
    let counter = Arc::new(Mutex::new(0u64));
    let t0 = Instant::now();
    let threads = (0..2)
        .map(|_| {
            let c = Arc::clone(&counter);
            crate::thread::spawn("bench", move || {
                for _ in 0..per {
                    *c.lock().unwrap_or_else(std::sync::PoisonError::into_inner) += 1;
                }
            })
        })
        .collect::<crate::Result<Vec<_>>>()?;
    for t in threads {
        t.join()?;
    }
    let ns = t0.elapsed().as_secs_f64() * 1e9 / (2 * per) as f64;
    let total = *counter
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    check(total == 2 * per, "thread_mutex_2t", "lost updates")?;
    Ok(ns)
}

/// Round trip of one byte through two pipes, raw or framed, per trip.
fn pipe_round_trip(scale: Scale, framed: bool) -> Result<f64> {
    use crate::pipe::{self, FrameReader};
    use std::os::fd::AsFd;
    let n = scale.n(100_000);
    let (a_r, a_w) = pipe::pipe()?;
    let (b_r, b_w) = pipe::pipe()?;
    let gate = crate::sem::Semaphore::new(0)?;
    // The echo child holds copies of the parent's ends too, so it would
    // never see end of file: it echoes exactly n bytes instead.
    let mut echo = child(&gate, || {
        let mut frames = FrameReader::new(&a_r);
        let mut c = [0u8; 1];
        for _ in 0..n {
            let ok = if framed {
                matches!(frames.recv(), Ok(Some(f)) if b_w.send(f).is_ok())
            } else {
                matches!(pipe::read(a_r.as_fd(), &mut c), Ok(1))
                    && matches!(pipe::write(b_w.as_fd(), &c), Ok(1))
            };
            if !ok {
                return 1;
            }
        }
        0
    })?;
    drop((a_r, b_w));
    gate.post()?;
    let mut frames = FrameReader::new(&b_r);
    let mut c = [b'x'; 1];
    let t0 = Instant::now();
    for _ in 0..n {
        if framed {
            a_w.send(&c)?;
            check(
                frames.recv()?.is_some_and(|f| f == b"x"),
                "pipe_rtt",
                "lost the byte",
            )?;
        } else {
            a_w.write_all(&c)?;
            check(b_r.read(&mut c)? == 1, "pipe_rtt", "lost the byte")?;
        }
    }
    let t = us_per(t0, n);
    drop(frames);
    join_ok(&mut echo, "pipe_rtt", "the echo child failed")?;
    Ok(t)
}

fn pipe_rtt(scale: Scale) -> Result<f64> {
    pipe_round_trip(scale, false)
}

fn pipe_rtt_framed(scale: Scale) -> Result<f64> {
    pipe_round_trip(scale, true)
}

/// 1 GiB one way through a pipe in 64 KiB writes; GB per second.
fn pipe_bw(scale: Scale) -> Result<f64> {
    const CHUNK: usize = 64 * 1024;
    let total = scale.n(1 << 30) as usize / CHUNK * CHUNK;
    let (r, w) = crate::pipe::pipe()?;
    let buf = vec![b'y'; CHUNK];
    let mut rbuf = vec![0u8; CHUNK];
    // No start gate here, unlike the other figures: the writer starts as
    // the C baseline's does, running from fork, with the clock started
    // right after fork. (A writer woken from a semaphore wait may be put
    // on the waker's CPU, so that both sides share one core at first.)
    let mut writer = Builder::new().name("bench").start(|| {
        for _ in 0..total / CHUNK {
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
    let gbps = got as f64 / t0.elapsed().as_secs_f64() / 1e9;
    join_ok(&mut writer, "pipe_bw", "short transfer")?;
    check(got == total, "pipe_bw", "short transfer")?;
    Ok(gbps)
}

/// A scratch ticket file in a directory of its own, removed afterwards.
fn with_ticket_file<T>(count: u64, f: impl FnOnce(&std::path::Path) -> Result<T>) -> Result<T> {
    let dir = std::env::temp_dir().join(format!("pk-bench-{}", process::getpid()));
    std::fs::create_dir_all(&dir).map_err(|e| Error::io("mkdir", dir.display(), &e))?;
    let path = dir.join("product");
    let result = crate::ticket::TicketFile::init(&path, count)
        .map_err(Failure::from)
        .and_then(|_| f(&path));
    let _ = std::fs::remove_dir_all(&dir);
    result
}

/// Uncontended flock LOCK_EX + LOCK_UN on a ticket file, per pair.
fn flock_lock_unlock(scale: Scale) -> Result<f64> {
    let n = scale.n(1_000_000);
    with_ticket_file(1, |path| {
        let file = crate::ticket::TicketFile::open(path)?;
        let t0 = Instant::now();
        for _ in 0..n {
            drop(file.lock_exclusive()?);
        }
        Ok(t0.elapsed().as_secs_f64() * 1e9 / n as f64)
    })
}
