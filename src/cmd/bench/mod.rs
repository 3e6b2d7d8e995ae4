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

mod curves;
mod exec;
mod forking;
mod gil;
mod ipc;
mod named;
mod pipe;
pub mod plot;
mod pool;
mod spawn;
mod thread;
mod ticket;
use crate::process::{self, Builder};

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
  pipe_bw_vmsplice_GBps     the same with the writer's 64 KiB buffers lent to the pipe by
                            vmsplice(2) (pipe::PageWriter): one copy instead of two
                            (higher is better)
  thread_create_join_us     thread::spawn (a named thread) + join, per thread
  thread_mutex_2t_ns_per_op two threads adding 1 to a counter under one thread::Mutex
  thread_std_mutex_2t_ns_per_op
                            the same under one std::sync::Mutex (the peer)
  thread_lock_2t_ns_per_op  the same under one thread::Lock (threading.Lock)
  spawn_us                  Spawn::new([\"/bin/true\"]).run(), per run (clone(CLONE_VM|CLONE_VFORK)
                            + exec + wait)
  spawn_std_us              the peer: std::process::Command::new(\"/bin/true\").status()
  spawn_256MiB_us, spawn_std_256MiB_us, spawn_1GiB_us, spawn_std_1GiB_us,
  spawn_4GiB_us, spawn_std_4GiB_us
                            the same two from a parent that first wrote 256 MiB, 1 GiB,
                            4 GiB of heap (a fork-based start grows with it); skipped,
                            with a message on stderr, when the machine lacks the memory
  gil_threads_speedup_x     N CPU-bound xorshift jobs (N = cores, at least 2): time one
                            after another on one thread / time on N threads (higher is
                            better; Python's GIL keeps its threads near 1x)
  gil_procs_speedup_x       the same jobs: time on one thread / time in N processes,
                            forks and joins included (higher is better; about N)
  queue_named_1p1c_msgs_per_s      a named Queue (1024 slots), one producer and one consumer
                            process each opening it by name, 16-byte messages (higher is better)
  queue_posix_mq_1p1c_msgs_per_s   the same through a POSIX message queue of 10 messages
                            (higher is better)
  queue_pipe_1p1c_msgs_per_s       the same through a pipe, one write and one read per
                            message (higher is better)
  sem_run_true_us           `pk-sem run --name /X -- true`, per call
  flock_n_true_us           `flock -n FILE true`, per call
  gnu_sem_true_us           `sem --fg --id X -j1 true` (GNU parallel), per call; only where
                            it is installed
  sem_heal_us               a holder of a pk-sem slot is SIGKILLed: time until the waiter,
                            asleep in the kernel, holds the slot
  exec_true_j2_us           pk-pool exec -j 2 -- true over 10 000 lines, wall time per job
  exec_xargs_true_j2_us     the peer: xargs -P 2 -n 1 true, same input
  exec_parallel_true_j2_us  the peer: parallel -j 2 true (1 000 lines), per job
  exec_overhead_j1_us       CPU time pk-pool adds per job: pk-pool exec -j 1 -- /bin/true
                            (itself and its commands) minus as many Spawn::run of
                            /bin/true ITEM (the same argument: true loads its locale then)
  exec_1m_lines_maxrss_KiB  peak RSS (GNU time %M) of pk-pool exec -j 2 -n 1000 -- true
                            over 1 000 000 lines
  exec_xargs_1m_lines_maxrss_KiB, exec_parallel_1m_lines_maxrss_KiB
                            the peers on the same input (xargs -P 2 -n 1000, parallel)
  exec_10m_lines_dry_run_maxrss_KiB
                            pk-pool exec --dry-run over 10 000 000 lines: constant memory
  exec_ssh2_jobs_per_s      pk-pool exec -S 2/127.0.0.1 -- true over a private sshd
                            (higher is better)
  exec_parallel_ssh2_jobs_per_s
                            the peer: parallel -S 2/127.0.0.1 true (40 lines)
  The exec figures skip (a message on stderr) where a peer, sshd or
  /usr/bin/time is missing.

Curves (--list-curves names them with their x values; --curve NAME runs
posixkit's series of one, and the peers pk-bench runs itself, as JSON points
{\"curve\":..,\"series\":..,\"x\":..,\"y\":..}, one per line):
  fork_rss          fork+wait and Process start+join, µs, by the parent's resident MiB
  spawn_rss         Spawn and std Command of /bin/true, µs, by the parent's resident MiB
  pool_map_items    Pool(2).map(square), ns per item, by items (10 .. 1 000 000)
  pool_map_workers  Pool(N).map(square) of 100 000 items, ns per item, by N (1 .. 2x cores)
  queue_clients     Queue, N producers and N consumers, msgs/s, by N (1 .. 32)
  queue_size        Queue, 1 producer and 1 consumer, msgs/s, by message size (8 B .. 64 KiB)
  ticket_buyers     purchases/s by buyers (1 .. 64); peer: flock(1) shell buyers
  pipe_rtt_size     pipe round trip, µs, by message size (raw and framed)
  pipe_bw_size      pipe GB/s by write size: default buffer, 1 MiB (F_SETPIPE_SZ),
                    and PageWriter (vmsplice)
  exec_jobs         jobs/s of `pk-pool exec -j CPUS -- true`, `xargs -P CPUS -n 1 true`
                    and GNU parallel (up to 1 000 jobs; skipped when not installed)
                    by jobs (100 .. 100 000)
pk-bench-plot draws such points as one SVG per curve: a binary of its own, so
that the plotting library (and the libm it needs) is not mapped into the
process whose forks pk-bench times.

--quick: 1 warm-up, 3 reps, a tenth of the work and a sixteenth of the spawn
figures' parent sizes: a smoke run, not a figure to quote.

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

    /// List the curves, each with the x values it is measured at, and exit.
    #[arg(long)]
    pub list_curves: bool,

    /// Measure posixkit's series of this curve (repeatable) and print its
    /// points as JSON lines.
    #[arg(long, value_name = "CURVE")]
    pub curve: Vec<String>,

    /// With --curve: measure only at this x (repeatable).
    #[arg(long, value_name = "X", requires = "curve")]
    pub at: Vec<f64>,
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
    fig("fork_wait_us", "us", forking::fork_wait),
    fig("process_start_join_us", "us", forking::process_start_join),
    fig("pool_map10k_warm_us", "us", pool::pool_map10k_warm),
    fig("pool_apply_async_rtt_us", "us", pool::pool_apply_async_rtt),
    fig("sem_pingpong_us", "us", ipc::sem_pingpong),
    fig("shm_atomic_2p_ns_per_op", "ns", ipc::shm_atomic_2p),
    fig("shm_semlock_2p_ns_per_op", "ns", ipc::shm_semlock_2p),
    fig("queue_msgs_per_s", "msgs/s", ipc::queue_msgs),
    fig("flock_lock_unlock_ns", "ns", ticket::flock_lock_unlock),
    fig(
        "ticket_flock_K4_per_s",
        "tickets/s",
        ticket::ticket_flock_k4,
    ),
    fig("pipe_rtt_us", "us", pipe::pipe_rtt),
    fig("pipe_rtt_framed_us", "us", pipe::pipe_rtt_framed),
    fig("pipe_bw_GBps", "GB/s", pipe::pipe_bw),
    fig("pipe_bw_vmsplice_GBps", "GB/s", pipe::pipe_bw_vmsplice),
    fig("thread_create_join_us", "us", thread::thread_create_join),
    fig("thread_mutex_2t_ns_per_op", "ns", thread::thread_mutex_2t),
    fig(
        "thread_std_mutex_2t_ns_per_op",
        "ns",
        thread::thread_std_mutex_2t,
    ),
    fig("thread_lock_2t_ns_per_op", "ns", thread::thread_lock_2t),
    fig("spawn_us", "us", spawn::spawn_small),
    fig("spawn_std_us", "us", spawn::spawn_std_small),
    fig("spawn_256MiB_us", "us", spawn::spawn_256m),
    fig("spawn_std_256MiB_us", "us", spawn::spawn_std_256m),
    fig("spawn_1GiB_us", "us", spawn::spawn_1g),
    fig("spawn_std_1GiB_us", "us", spawn::spawn_std_1g),
    fig("spawn_4GiB_us", "us", spawn::spawn_4g),
    fig("spawn_std_4GiB_us", "us", spawn::spawn_std_4g),
    fig("gil_threads_speedup_x", "x", gil::threads_speedup),
    fig("gil_procs_speedup_x", "x", gil::procs_speedup),
    fig("queue_named_1p1c_msgs_per_s", "msgs/s", named::queue_named),
    fig(
        "queue_posix_mq_1p1c_msgs_per_s",
        "msgs/s",
        named::queue_posix_mq,
    ),
    fig("queue_pipe_1p1c_msgs_per_s", "msgs/s", named::queue_pipe),
    fig("sem_run_true_us", "us", named::sem_run_true),
    fig("flock_n_true_us", "us", named::flock_n_true),
    fig("gnu_sem_true_us", "us", named::gnu_sem_true),
    fig("sem_heal_us", "us", named::sem_heal),
    fig("exec_true_j2_us", "us", exec::exec_true_j2),
    fig("exec_xargs_true_j2_us", "us", exec::xargs_true_j2),
    fig("exec_parallel_true_j2_us", "us", exec::parallel_true_j2),
    fig("exec_overhead_j1_us", "us", exec::exec_overhead_j1),
    fig("exec_1m_lines_maxrss_KiB", "KiB", exec::exec_1m_rss),
    fig("exec_xargs_1m_lines_maxrss_KiB", "KiB", exec::xargs_1m_rss),
    fig(
        "exec_parallel_1m_lines_maxrss_KiB",
        "KiB",
        exec::parallel_1m_rss,
    ),
    fig(
        "exec_10m_lines_dry_run_maxrss_KiB",
        "KiB",
        exec::exec_10m_rss,
    ),
    fig("exec_ssh2_jobs_per_s", "jobs/s", exec::exec_ssh2),
    fig(
        "exec_parallel_ssh2_jobs_per_s",
        "jobs/s",
        exec::parallel_ssh2,
    ),
];

/// Set by `--quick`, for figures whose cost is not a count of iterations.
static QUICK: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Run the benchmarks.
pub fn run(args: Args, out: &mut Out) -> Result<u8> {
    if args.list {
        for f in FIGURES.iter().filter(|f| named::available(f.name)) {
            outln!(out, "{} {}", f.name, f.unit)?;
        }
        return Ok(exit::OK);
    }
    if args.list_curves {
        for c in curves::CURVES {
            let xs: Vec<String> = (c.xs)(args.quick).iter().map(|x| x.to_string()).collect();
            outln!(out, "{} {}", c.name, xs.join(" "))?;
        }
        return Ok(exit::OK);
    }
    if !args.curve.is_empty() {
        return curves::run(&args.curve, &args.at, args.quick, out);
    }
    for name in &args.only {
        if !FIGURES.iter().any(|f| f.name == name) {
            return Err(
                Error::invalid("--only", format!("unknown figure '{name}' (see --list)")).into(),
            );
        }
    }
    let scale = Scale(if args.quick { 0.1 } else { 1.0 });
    QUICK.store(args.quick, std::sync::atomic::Ordering::Relaxed);
    let reps = args.reps.unwrap_or(if args.quick { 3 } else { 7 }) as usize;
    for f in FIGURES
        .iter()
        .filter(|f| args.only.is_empty() || args.only.iter().any(|o| o == f.name))
        .filter(|f| named::available(f.name))
    {
        let _ = std::io::Write::write_all(
            &mut std::io::stderr(),
            format!("running {} ...\n", f.name).as_bytes(),
        );
        // Warm-up. A figure that declines (exit code 1: the machine lacks
        // what it needs) is skipped with a message.
        match (f.sample)(Scale(scale.0 / 10.0)) {
            Err(e) if e.code() == exit::DECLINED => {
                let _ = std::io::Write::write_all(
                    &mut std::io::stderr(),
                    format!("skipped {}: {e}\n", f.name).as_bytes(),
                );
                continue;
            }
            r => r?,
        };
        let mut samples = Vec::with_capacity(reps);
        for _ in 0..reps {
            samples.push((f.sample)(scale)?);
        }
        // A parent size a spawn figure set up is not the next figure's:
        // the figures after spawn_4GiB_us would otherwise fork from a
        // 4 GiB process.
        spawn::hold(0, f.name)?;
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
pub(super) fn us_per(t0: Instant, n: u64) -> f64 {
    t0.elapsed().as_secs_f64() * 1e6 / n as f64
}

/// Join a figure's helper process: its failure fails the figure.
pub(super) fn join_ok(p: &mut process::Process, figure: &str, why: &str) -> Result<()> {
    p.join(None)?;
    check(p.exitcode() == Some(0), figure, why)
}

/// A benchmark that computed a wrong answer is an error, not a figure.
pub(super) fn check(ok: bool, figure: &str, why: &str) -> Result<()> {
    if ok {
        Ok(())
    } else {
        Err(Failure::from(Error::data("check", figure, why)).with_code(exit::OS_ERR))
    }
}

/// Start a child process running `f`, released when the parent posts `gate`.
pub(super) fn child(
    gate: &crate::sem::Semaphore,
    f: impl FnOnce() -> i32,
) -> Result<crate::process::Process> {
    Ok(Builder::new().name("bench").start(|| match gate.wait() {
        Ok(()) => f(),
        Err(_) => 1,
    })?)
}

/// Release `children` from `gate`, time them to the end, check they succeeded.
pub(super) fn run_children(
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
