//! A short spin before a pool's parent or worker goes to sleep.
//!
//! A map is a relay: the parent writes a batch, a worker runs it and
//! writes the result, the parent reads it and writes the next. When the
//! reader of a pipe is asleep, each of those writes must wake it: on
//! another CPU, an inter-processor interrupt and, in a virtual machine
//! whose idle vCPU halts, an exit to the host, whose cost comes and goes
//! with the host's load. That was most of a warm map of 10 000 ints and
//! all of its spread (about 65 or about 110 us, phase by phase).
//!
//! So before it sleeps on its pipes, the parent (for a result) and a
//! worker (for its next batch) look again for up to [`SPIN`] without
//! sleeping: poll(2) with a zero timeout, and sched_yield(2) between
//! looks, so a process that shares the CPU (the worker the parent waits
//! for, on a machine with fewer CPUs than processes) runs meanwhile. A
//! writer whose reader is not asleep wakes no one. The cost is at most
//! [`SPIN`] of CPU time each time one of them would have slept, nothing
//! while there is work.

use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollTimeout, poll};

/// How long to look before sleeping.
pub(crate) const SPIN: Duration = Duration::from_micros(50);

/// Look at `fds` without sleeping until one is ready (`Ok(true)`, its
/// `revents` set) or [`SPIN`] or `deadline`, whichever is first, has
/// passed (`Ok(false)`). EINTR is returned, as a sleeping poll(2)
/// returns it.
pub(crate) fn ready(fds: &mut [PollFd<'_>], deadline: Option<Instant>) -> nix::Result<bool> {
    let start = Instant::now();
    let until = deadline.map_or(start + SPIN, |d| d.min(start + SPIN));
    loop {
        if poll(fds, PollTimeout::ZERO)? > 0 {
            return Ok(true);
        }
        if Instant::now() >= until {
            return Ok(false);
        }
        // Fails only where there is no scheduler to yield to.
        let _ = nix::sched::sched_yield();
    }
}
