//! The GIL lesson's figures: how much faster N CPU-bound jobs finish on N
//! threads, and in N processes, than one after another on one thread
//! (N: the cores, at least 2). Python's peers run the same xorshift jobs:
//! there, threads stay near 1x (the GIL) and processes reach about Nx.

use super::{Scale, check};
use crate::cmd::Result;
use crate::cmd::threads::{cores, in_processes, on_threads, sequential};

/// Jobs per sample: one per core, at least 2.
fn jobs() -> u64 {
    cores().clamp(2, 64) as u64
}

/// xorshift rounds per job: about 50 ms each here.
fn steps(scale: Scale) -> u64 {
    scale.n(50_000_000)
}

/// Sequential time over the time on N threads.
pub(super) fn threads_speedup(scale: Scale) -> Result<f64> {
    let (n, steps) = (jobs(), steps(scale));
    let (want, t_seq) = sequential(n, steps);
    let (got, t_par) = on_threads(n, steps)?;
    let same = got.iter().map(|(_, _, v)| *v).eq(want.iter().copied());
    check(
        same,
        "gil_threads_speedup_x",
        "a thread computed another value",
    )?;
    Ok(t_seq / t_par)
}

/// Sequential time over the time in N processes (forks and joins
/// included, as Python's Process start/join are).
pub(super) fn procs_speedup(scale: Scale) -> Result<f64> {
    let (n, steps) = (jobs(), steps(scale));
    let (want, t_seq) = sequential(n, steps);
    let (got, t_par) = in_processes(n, steps)?;
    let same = got.iter().map(|(_, v)| *v).eq(want.iter().copied());
    check(
        same,
        "gil_procs_speedup_x",
        "a process computed another value",
    )?;
    Ok(t_seq / t_par)
}
