//! `pk-threads gil`: the GIL lesson. The same CPU-bound jobs run one
//! after another, then on N threads of one process, then in N processes,
//! each timed. In CPython the threads take as long as one thread (the GIL
//! lets one thread at a time run Python code) and only the processes use
//! every core; Rust threads have no such lock and use every core too.

use std::time::Instant;

use crate::cmd::Out;
use crate::cmd::Result;
use crate::cmd::exit;
use crate::error::Error;
use crate::process::{self, Builder};
use crate::shm::SharedArray;
use crate::thread;
use crate::{note, outln};

/// Why the three runs differ, in one sentence: printed by the demo, and
/// in its help.
pub const WHY: &str = "CPython's GIL lets one thread at a time run Python code, so \
CPU-bound threads take turns on one core and only processes (one interpreter and \
one GIL each) use every core; Rust threads have no such lock, so threads and \
processes alike use every core.";

/// The CPU-bound job: `steps` rounds of xorshift64 from `seed` (made odd,
/// never 0). Each round needs the one before, so the compiler can neither
/// skip nor vectorise it; no memory, no system call, no lock. Python's
/// peer (`bench/python/peers.py`) runs the same rounds.
#[inline(never)]
pub fn spin(seed: u64, steps: u64) -> u64 {
    let mut x = std::hint::black_box(seed | 1);
    for _ in 0..steps {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
    }
    x
}

/// The seed of job `i` (1-based): each job computes its own value.
pub fn seed(i: u64) -> u64 {
    i.wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

/// How many cores this process may run on.
pub fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, std::num::NonZero::get)
}

/// One job's run on a thread: the thread's name, its native id, the value.
pub type ThreadJob = (String, i32, u64);

/// The values of `jobs` jobs run on `jobs` threads, and the seconds it took.
pub fn on_threads(jobs: u64, steps: u64) -> Result<(Vec<ThreadJob>, f64)> {
    let t0 = Instant::now();
    let mut group = thread::Group::new();
    for i in 1..=jobs {
        group.spawn(thread::next_name(), move |gate| {
            gate.wait();
            let v = spin(seed(i), steps);
            (thread::current_name(), thread::get_native_id(), v)
        })?;
    }
    let got = group.join()?;
    Ok((got, t0.elapsed().as_secs_f64()))
}

/// The values of `jobs` jobs run in `jobs` child processes (with their
/// pids), and the seconds it took, forks and joins included.
pub fn in_processes(jobs: u64, steps: u64) -> Result<(Vec<(i32, u64)>, f64)> {
    let n = usize::try_from(jobs).map_err(|_| Error::invalid("--jobs", "too many"))?;
    let values = SharedArray::<u64>::new(n)?;
    let t0 = Instant::now();
    let mut children = Vec::with_capacity(n);
    for i in 0..n {
        let values = &values;
        children.push(
            Builder::new()
                .name(format!("job-{}", i + 1))
                .start(move || {
                    values.set(i, spin(seed(i as u64 + 1), steps));
                    0
                })?,
        );
    }
    let mut got = Vec::with_capacity(n);
    for (i, c) in children.iter_mut().enumerate() {
        c.join(None)?;
        if c.exitcode() != Some(0) {
            return Err(Error::new(
                crate::ErrorKind::Other,
                "join",
                c.name(),
                format!("the job's process ended with {:?}", c.status()),
            )
            .into());
        }
        got.push((c.pid().as_raw(), values.get(i)));
    }
    Ok((got, t0.elapsed().as_secs_f64()))
}

/// The values of `jobs` jobs run one after another on this thread, and the
/// seconds it took.
pub fn sequential(jobs: u64, steps: u64) -> (Vec<u64>, f64) {
    let t0 = Instant::now();
    let values = (1..=jobs).map(|i| spin(seed(i), steps)).collect();
    (values, t0.elapsed().as_secs_f64())
}

/// Run `pk-threads gil`.
pub fn run(jobs: Option<u32>, steps: u64, out: &mut Out) -> Result<u8> {
    let cores = cores();
    let jobs = u64::from(jobs.unwrap_or_else(|| u32::try_from(cores.clamp(2, 64)).unwrap_or(2)));
    note!(
        out,
        "cores={cores} jobs={jobs} steps={steps} per job (CPU-bound: xorshift rounds, no I/O, no lock)"
    )?;
    let (want, t_seq) = sequential(jobs, steps);
    outln!(
        out,
        "one thread: {jobs} jobs one after another: {t_seq:.3}s"
    )?;

    let (got, t_thr) = on_threads(jobs, steps)?;
    let pid = process::getpid();
    for (i, (name, tid, v)) in got.iter().enumerate() {
        check(*v, want[i], i)?;
        note!(
            out,
            "threads: job {} on thread {name} (pid {pid}, native_id {tid}) = {v:#018x}",
            i + 1
        )?;
    }
    outln!(
        out,
        "threads: {jobs} jobs on {jobs} threads of one process: {t_thr:.3}s, speed-up {:.2}x (Python: about 1x)",
        t_seq / t_thr
    )?;

    let (got, t_proc) = in_processes(jobs, steps)?;
    for (i, (child, v)) in got.iter().enumerate() {
        check(*v, want[i], i)?;
        note!(
            out,
            "processes: job {} in process {child} = {v:#018x}",
            i + 1
        )?;
    }
    outln!(
        out,
        "processes: {jobs} jobs in {jobs} processes: {t_proc:.3}s, speed-up {:.2}x (Python: about {}x)",
        t_seq / t_proc,
        jobs.min(cores as u64)
    )?;
    note!(out, "why: {WHY}")?;
    Ok(exit::OK)
}

/// A job that computed another value than the sequential run is a bug.
fn check(got: u64, want: u64, i: usize) -> Result<()> {
    if got == want {
        return Ok(());
    }
    Err(Error::data(
        "check",
        format!("job {}", i + 1),
        format!("computed {got:#x}, one thread computed {want:#x}"),
    )
    .into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spin_is_xorshift64() {
        // Marsaglia's xorshift64 (13, 7, 17) from 1: the first values.
        assert_eq!(spin(1, 0), 1);
        assert_eq!(spin(1, 1), 1_082_269_761);
        assert_eq!(spin(1, 2), spin(spin(1, 1), 1));
        assert_ne!(spin(seed(1), 1000), spin(seed(2), 1000));
    }
}
