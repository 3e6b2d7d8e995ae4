//! The queue's two locks: a 64-bit word of the shared memory each, taken
//! by compare-and-swap and slept on with futex(2), that names its holder
//! (its pid and when that process started) so that a waiter can tell a
//! dead holder from a slow one and take the lock over.
//!
//! A robust pthread mutex would have the kernel hand the lock on at the
//! holder's death, but it links itself into its holder's robust list
//! through pointers kept *in the mutex*, that is in the shared memory, and
//! glibc writes through them at unlock: any process that can write the
//! file (a stray `pk-shm write`, a Python `SharedMemory` on the same name)
//! could make every queue user write where it chose. Here no code follows
//! anything read from the shared memory: the word holds numbers only.
//!
//! The word: bits 0–30 the holder's pid (0 when free), bit 31 set while
//! someone may sleep on it (the unlock then wakes one), bits 32–63 the low
//! 32 bits of the holder's start time (`/proc/PID/stat` field 22; 0 where
//! /proc is missing). A waiter sleeps at most [`CHECK`] at a time; after
//! each such sleep it looks at the holder: a pid that is gone, a zombie, or
//! a pid now used by a process that started at another time (the pid was
//! reused) is a dead holder, whose lock the waiter takes over by
//! compare-and-swap ([`Locked::OwnerDied`]). A holder that is alive but
//! stopped is waited for, up to the caller's deadline.
//!
//! Pids are those of the pid namespace the queue was made in: a queue
//! refuses to be opened from another one (see the module's `open`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::time::TimeSpec;

use crate::sys::sem::futex;

/// Set while a waiter may sleep on the word.
const CONTENDED: u64 = 1 << 31;
/// The holder's pid.
const PID: u64 = CONTENDED - 1;
/// The largest pid Linux hands out (PID_MAX_LIMIT on 64-bit).
pub(super) const PID_MAX: u64 = 1 << 22;
/// How long a waiter sleeps before it looks whether the holder lives.
const CHECK: Duration = Duration::from_millis(20);
/// How many times a lock spins on a held word before it sleeps.
const SPINS: u32 = 100;

/// How a lock was taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Locked {
    /// From a live holder, or free.
    Clean,
    /// From a holder that had died holding it.
    OwnerDied,
}

/// Whether `word` holds what a lock word may hold (a pid in range).
pub(super) fn plausible(word: u64) -> bool {
    word & PID <= PID_MAX
}

/// This process as a holder: its pid and start time, computed once per
/// process (a forked child finds the cache wiped and computes its own).
fn me() -> u64 {
    match crate::sys::proc::fork_wiped_word() {
        Some(cache) => match cache.load(Ordering::Relaxed) {
            0 => {
                let me = identify(std::process::id());
                cache.store(me, Ordering::Relaxed);
                me
            }
            me => me,
        },
        None => identify(std::process::id()),
    }
}

/// The word that names process `pid` as the holder.
fn identify(pid: u32) -> u64 {
    let start = proc_stat(pid).map_or(0, |s| s.start);
    u64::from(pid) | (u64::from(start) << 32)
}

/// What /proc/PID/stat says of a process.
struct Stat {
    /// A zombie (`Z`) or dead (`X`, `x`).
    ended: bool,
    /// Its start time, low 32 bits.
    start: u32,
}

fn proc_stat(pid: u32) -> std::io::Result<Stat> {
    let text = std::fs::read(format!("/proc/{pid}/stat"))?;
    // The command name may hold anything, spaces and ')' included: the
    // fields start after the last ')'.
    let bad = || std::io::Error::from(std::io::ErrorKind::InvalidData);
    let at = text.iter().rposition(|&b| b == b')').ok_or_else(bad)?;
    let rest = std::str::from_utf8(&text[at + 1..]).map_err(|_| bad())?;
    let mut fields = rest.split_ascii_whitespace();
    let state = fields.next().ok_or_else(bad)?;
    // Field 3 is the state; field 22 the start time.
    let start: u64 = fields
        .nth(18)
        .and_then(|f| f.parse().ok())
        .ok_or_else(bad)?;
    Ok(Stat {
        ended: matches!(state, "Z" | "X" | "x"),
        start: start as u32,
    })
}

/// Whether the holder `word` names is still alive.
fn holder_alive(word: u64) -> bool {
    let pid = (word & PID) as u32;
    let start = (word >> 32) as u32;
    match proc_stat(pid) {
        Ok(s) if s.ended => {
            // A zombie leader whose other threads still run is alive.
            std::fs::read_to_string(format!("/proc/{pid}/status")).is_ok_and(|t| {
                t.lines()
                    .find_map(|l| l.strip_prefix("Threads:"))
                    .and_then(|n| n.trim().parse::<u32>().ok())
                    .is_some_and(|n| n > 1)
            })
        }
        Ok(s) => start == 0 || s.start == start,
        // No /proc here (or none of it readable): signal 0 says whether
        // the pid exists at all.
        Err(_) if std::fs::metadata("/proc/self/stat").is_err() => {
            nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), None)
                != Err(Errno::ESRCH)
        }
        Err(_) => false,
    }
}

fn now() -> TimeSpec {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .expect("CLOCK_MONOTONIC is always there")
}

/// Take the lock `word`, waiting until `deadline` (CLOCK_MONOTONIC; for
/// ever with `None`): ETIMEDOUT when it passed with the lock still held by
/// a live process. A thread that takes a lock it already holds waits for
/// ever (until its deadline): the queue never does.
pub(super) fn lock(word: &AtomicU64, deadline: Option<TimeSpec>) -> Result<Locked, Errno> {
    let me = me();
    for _ in 0..SPINS {
        if word.load(Ordering::Relaxed) == 0
            && word
                .compare_exchange(0, me, Ordering::Acquire, Ordering::Relaxed)
                .is_ok()
        {
            return Ok(Locked::Clean);
        }
        std::hint::spin_loop();
    }
    let mut check = crate::sem::timespec_after(now(), CHECK);
    loop {
        let held = word.load(Ordering::Relaxed);
        if held == 0 {
            // Taken marked: others may sleep, and the unlock wakes them.
            if word
                .compare_exchange(0, me | CONTENDED, Ordering::Acquire, Ordering::Relaxed)
                .is_ok()
            {
                return Ok(Locked::Clean);
            }
            continue;
        }
        let t = now();
        if check.is_none_or(|c| t >= c) {
            check = crate::sem::timespec_after(t, CHECK);
            if !holder_alive(held)
                && word
                    .compare_exchange(held, me | CONTENDED, Ordering::Acquire, Ordering::Relaxed)
                    .is_ok()
            {
                return Ok(Locked::OwnerDied);
            }
        }
        if deadline.is_some_and(|d| t >= d) {
            return Err(Errno::ETIMEDOUT);
        }
        if held & CONTENDED == 0
            && word
                .compare_exchange(held, held | CONTENDED, Ordering::Relaxed, Ordering::Relaxed)
                .is_err()
        {
            continue;
        }
        let until = match (deadline, check) {
            (Some(d), Some(c)) => Some(d.min(c)),
            (d, c) => d.or(c),
        };
        match futex::wait_low(word, (held | CONTENDED) as u32, until) {
            Ok(()) | Err(Errno::EAGAIN | Errno::EINTR | Errno::ETIMEDOUT) => {}
            Err(e) => return Err(e),
        }
    }
}

/// Give the lock `word` back (by its holder), waking one sleeper if any.
pub(super) fn unlock(word: &AtomicU64) {
    if word.swap(0, Ordering::Release) & CONTENDED != 0 {
        // Nothing to do about a failed wake: a sleeper looks again within
        // CHECK anyway.
        let _ = futex::wake_low(word, 1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_alive_and_a_reused_or_gone_pid_is_not() {
        let me = me();
        assert_eq!(me & PID, u64::from(std::process::id()));
        assert!(holder_alive(me));
        if me >> 32 != 0 {
            // The same pid, started at another time: a reused pid.
            assert!(!holder_alive(me ^ (1 << 32)));
        }
        // A pid above the limit names no process.
        assert!(!holder_alive(PID_MAX + 1));
    }

    #[test]
    fn a_zombie_holder_is_dead() {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        // Wait for it to end without reaping it.
        nix::sys::wait::waitid(
            nix::sys::wait::Id::Pid(nix::unistd::Pid::from_raw(pid as i32)),
            nix::sys::wait::WaitPidFlag::WEXITED | nix::sys::wait::WaitPidFlag::WNOWAIT,
        )
        .unwrap();
        assert!(!holder_alive(identify(pid)));
        child.wait().unwrap();
    }

    #[test]
    fn a_dead_holders_lock_is_taken_over() {
        let word = AtomicU64::new(0);
        assert_eq!(lock(&word, None), Ok(Locked::Clean));
        unlock(&word);
        assert_eq!(word.load(Ordering::Relaxed), 0);
        // Held by a pid that names no process.
        word.store(PID_MAX, Ordering::Relaxed);
        assert_eq!(lock(&word, None), Ok(Locked::OwnerDied));
        assert_eq!(
            word.load(Ordering::Relaxed) & PID,
            u64::from(std::process::id())
        );
        unlock(&word);
    }

    #[test]
    fn a_live_holder_is_waited_for_until_the_deadline() {
        let word = AtomicU64::new(0);
        assert_eq!(lock(&word, None), Ok(Locked::Clean));
        let deadline = crate::sem::timespec_after(now(), Duration::from_millis(60));
        assert_eq!(lock(&word, deadline), Err(Errno::ETIMEDOUT));
        // The sleeper marked it: the unlock wakes whoever sleeps.
        assert_ne!(word.load(Ordering::Relaxed) & CONTENDED, 0);
        unlock(&word);
    }
}
