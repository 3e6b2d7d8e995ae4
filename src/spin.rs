//! A short look before a wait goes to sleep.
//!
//! A pool's map is a relay of pipe writes (a batch out, its result back,
//! the next batch out), and `Process` start + join is a fork and a wait
//! for the child's end. When the waiting process is asleep, the event has
//! to wake it: on another CPU, an inter-processor interrupt and, in a
//! virtual machine whose idle vCPU halts, an exit to the host, whose cost
//! comes and goes with the host's load (10-20 µs a wake-up on the 2-vCPU
//! VM these were measured on, and most of the spread of a warm map:
//! about 65 or about 110 µs, phase by phase).
//!
//! So before it sleeps, a waiter looks again for a short budget without
//! sleeping: poll(2) with a zero timeout, and sched_yield(2) between looks,
//! so that a process sharing the CPU (the worker or the child waited for,
//! on a machine with fewer CPUs than processes) runs meanwhile. Without
//! the yield, three processes on two CPUs made a map six times slower. An
//! event whose waiter is not asleep wakes no one. The cost is at most the
//! budget of CPU time each time the waiter would have slept: a pool's
//! parent (for a result) and each worker (for its next batch) look for 50
//! µs ([`POOL`]); `Process::join` for 200 µs ([`JOIN`], about what a fork
//! and an exit take there).

use std::time::{Duration, Instant};

use std::os::fd::BorrowedFd;

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};

/// A pool's look, before a wait for a result or a batch.
pub(crate) const POOL: Duration = Duration::from_micros(50);

/// `Process::join`'s look, before a wait for the child's end.
pub(crate) const JOIN: Duration = Duration::from_micros(200);

/// Look at `fds` without sleeping until one is ready (`Ok(true)`, its
/// `revents` set) or `budget` or `deadline`, whichever is first, has
/// passed (`Ok(false)`). EINTR is returned, as a sleeping poll(2)
/// returns it.
pub(crate) fn ready(
    fds: &mut [PollFd<'_>],
    deadline: Option<Instant>,
    budget: Duration,
) -> nix::Result<bool> {
    let start = Instant::now();
    let until = deadline.map_or(start + budget, |d| d.min(start + budget));
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

/// [`ready`] for one descriptor to become readable: true when it did
/// within the look. An error counts as not yet: it is the wait's, which
/// follows, to report.
pub(crate) fn readable(fd: BorrowedFd<'_>, deadline: Option<Instant>, budget: Duration) -> bool {
    ready(&mut [PollFd::new(fd, PollFlags::POLLIN)], deadline, budget).unwrap_or(false)
}
