//! flock(2) on a borrowed descriptor.
//!
//! nix wraps flock only as `Flock<T>`, which takes the descriptor by value
//! for the life of the lock; a [`crate::ticket::TicketFile`] keeps one
//! descriptor open across many purchases and locks it for each one, so it
//! needs the plain call.

use std::os::fd::{AsRawFd, BorrowedFd};

use nix::errno::Errno;

/// What to do to the lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// `LOCK_SH`: many holders, no exclusive holder.
    Shared,
    /// `LOCK_EX`: one holder.
    Exclusive,
    /// `LOCK_UN`: release.
    Unlock,
}

/// flock(2): `op` on the open file description behind `fd`; with
/// `nonblock` (`LOCK_NB`) a busy lock fails with `EWOULDBLOCK` instead of
/// waiting. Not retried on EINTR here: callers decide.
pub fn flock(fd: BorrowedFd<'_>, op: Op, nonblock: bool) -> Result<(), Errno> {
    let mut flags = match op {
        Op::Shared => libc::LOCK_SH,
        Op::Exclusive => libc::LOCK_EX,
        Op::Unlock => libc::LOCK_UN,
    };
    if nonblock {
        flags |= libc::LOCK_NB;
    }
    // SAFETY: flock takes a descriptor number and an int; `fd` is borrowed,
    // so the descriptor stays open for the call, and no memory is passed.
    let r = unsafe { libc::flock(fd.as_raw_fd(), flags) };
    Errno::result(r).map(drop)
}
