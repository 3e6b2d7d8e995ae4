//! The queue's two locks: a 64-bit word of the shared memory each, taken
//! by compare-and-swap and slept on with futex(2), that names its holder
//! (a thread id and when that thread started) so that a waiter can tell a
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
//! The word: bits 0–21 the holder's thread id (0 when free), bit 30 set
//! when the holder's pid namespace is not the queue's, bit 31 set while
//! someone may sleep on it (the unlock then wakes one), bits 32–63 the low
//! 32 bits of the thread's start time (`/proc/TID/stat` field 22, less the
//! time namespace's boottime offset; 0 where /proc does not show this
//! process). A waiter sleeps at most [`CHECK`] at a time; after each such
//! sleep it asks whether the holder has *certainly* died: its thread id
//! names no thread (kill(2) says ESRCH), or a zombie, or a thread that
//! started at another time (the id was reused). Anything it cannot tell
//! (hidepid, no descriptor left, a /proc of another namespace, a holder of
//! another pid namespace) counts as alive. A dead holder's lock is taken
//! over by compare-and-swap ([`Locked::OwnerDied`]); a live one, even
//! stopped, is waited for, up to the caller's deadline.
//!
//! Left: a holder whose process is replaced by exec(2) from another thread
//! while it holds the lock is still a live thread if it was the leader
//! (the kernel gives the exec'ing thread the leader's id and start time):
//! the lock is held until that program ends. The queue holds its locks
//! only for a copy, so this needs an exec racing a put or get of the same
//! process.

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::time::TimeSpec;

use crate::sys::sem::futex;

/// Set while a waiter may sleep on the word.
const CONTENDED: u64 = 1 << 31;
/// Set by a holder whose pid namespace is not the queue's: its thread id
/// means nothing to the others, who never take its lock over.
const FOREIGN: u64 = 1 << 30;
/// The holder's thread id (Linux hands out ids below 2^22).
const TID: u64 = (1 << 22) - 1;
/// The bits between the thread id and the flags, always clear.
const UNUSED: u64 = FOREIGN - 1 - TID;
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

/// Whether `word` holds what a lock word may hold.
pub(super) fn plausible(word: u64) -> bool {
    word & UNUSED == 0
}

/// This thread as a lock holder, and what it needs to judge others.
#[derive(Clone, Copy)]
struct Me {
    /// The generation this was worked out in (a forked child's copy of
    /// the thread's cache is of its parent's: worked out again).
    generation: u64,
    /// Thread id, and start time (normalised) in the high half.
    word: u64,
    /// The pid namespace (0: unknown).
    pidns: u64,
    /// Whether /proc shows this process's own pid namespace, so that
    /// /proc/TID is the thread a word names.
    own_proc: bool,
    /// Whether start times read here can be normalised (the boottime
    /// offset is known): only then is another start time a reused id.
    judge_start: bool,
    /// The boottime offset of this time namespace, in clock ticks: what
    /// /proc adds to every start time this process reads.
    boot_offset: u64,
}

thread_local! {
    static ME: Cell<Option<Me>> = const { Cell::new(None) };
}

/// This process's generation (`sys::proc::fork_generation`, a number
/// kept in a page every fork wipes): a child, forked by any means, draws
/// a new one, so no thread's cached identity (its copy is the forking
/// thread's) outlives the fork, even when the child has its parent's pid
/// (pid 1 of a new pid namespace). Where the kernel has no such page: the
/// pid, with its pid namespace's inode.
fn generation() -> u64 {
    crate::sys::proc::fork_generation()
        .unwrap_or_else(|| u64::from(std::process::id()) ^ pid_namespace().rotate_left(32))
}

/// Make sure the fork-wiped page exists before any lock is taken (its
/// set-up is the one moment a fork from another thread could catch).
pub(super) fn prepare() {
    let _ = crate::sys::proc::fork_wiped_word();
}

fn me() -> Me {
    let generation = generation();
    ME.with(|c| match c.get() {
        Some(me) if me.generation == generation => me,
        _ => {
            let (me, complete) = identify(generation);
            // An identity worked out without some of /proc (no descriptor
            // left, say) is used once and worked out again next time.
            if complete {
                c.set(Some(me));
            }
            me
        }
    })
}

/// This thread's identity, and whether every part of it could be read.
fn identify(generation: u64) -> (Me, bool) {
    let tid = nix::unistd::gettid().as_raw() as u32;
    let pid = std::process::id();
    let own_proc =
        std::fs::read_link("/proc/self").is_ok_and(|l| l.as_os_str() == pid.to_string().as_str());
    let offset = if own_proc { boot_offset() } else { None };
    let start = match offset {
        Some(off) => proc_stat("thread-self")
            .ok()
            .and_then(|s| s.start.checked_sub(off))
            .map(|s| s as u32),
        None => None,
    };
    let pidns = pid_namespace();
    let me = Me {
        generation,
        word: u64::from(tid) | (u64::from(start.unwrap_or(0)) << 32),
        pidns,
        own_proc,
        // Start times are compared only where this process's own can be
        // read and normalised.
        judge_start: start.is_some(),
        boot_offset: offset.unwrap_or(0),
    };
    let complete = !own_proc || (start.is_some() && pidns != 0);
    (me, complete)
}

/// This process's pid namespace (the inode of /proc/self/ns/pid); 0 where
/// it cannot be told. The link is the process's own even when /proc is
/// the mount of an outer namespace (unshare --pid without --mount-proc).
pub(super) fn pid_namespace() -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self/ns/pid").map_or(0, |m| m.ino())
}

/// The boottime offset of this process's time namespace, in clock ticks
/// (/proc/self/timens_offsets; 0 without time namespaces); `None` when it
/// cannot be told: unreadable, not a whole number of ticks, negative (a
/// start time before it wraps), or a process that made a time namespace
/// for its children (the file then shows theirs, not its own).
fn boot_offset() -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    let ino = |p: &str| std::fs::metadata(p).map(|m| m.ino()).ok();
    if let (Some(own), Some(children)) = (
        ino("/proc/self/ns/time"),
        ino("/proc/self/ns/time_for_children"),
    ) {
        if own != children {
            return None;
        }
    }
    let text = match std::fs::read_to_string("/proc/self/timens_offsets") {
        Ok(t) => t,
        // No time namespaces in this kernel: no offset.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Some(0),
        Err(_) => return None,
    };
    let tick: i64 = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .map_or(100, |t| t.max(1));
    let (secs, nsecs) = text.lines().find_map(|l| {
        let mut f = l.split_ascii_whitespace();
        (f.next()? == "boottime").then_some(())?;
        let secs: i64 = f.next()?.parse().ok()?;
        let nsecs: i64 = f.next()?.parse().ok()?;
        Some((secs, nsecs))
    })?;
    let ns_per_tick = 1_000_000_000 / tick;
    if secs < 0 || nsecs % ns_per_tick != 0 {
        return None;
    }
    u64::try_from(secs * tick + nsecs / ns_per_tick).ok()
}

/// What /proc/ID/stat says of a process or thread.
struct Stat {
    /// A zombie (`Z`) or dead (`X`, `x`).
    ended: bool,
    /// Its start time in clock ticks since boot, as this process sees it.
    start: u64,
}

fn proc_stat(id: &str) -> std::io::Result<Stat> {
    let text = std::fs::read(format!("/proc/{id}/stat"))?;
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
        start,
    })
}

/// Whether the holder `word` names has certainly died: only a definite
/// answer counts, anything this process cannot tell (another user's
/// process behind hidepid, no descriptor left, a /proc of another
/// namespace) is a live holder.
fn holder_dead(word: u64, me: &Me) -> bool {
    let tid = (word & TID) as i32;
    if tid == 0 {
        return true;
    }
    // The thread id in this process's pid namespace: signal 0 says
    // whether it exists at all (any thread's id, not only a leader's).
    match nix::sys::signal::kill(nix::unistd::Pid::from_raw(tid), None) {
        Err(Errno::ESRCH) => return true,
        Ok(()) | Err(Errno::EPERM) => {}
        Err(_) => return false,
    }
    if !me.own_proc {
        return false;
    }
    let Ok(s) = proc_stat(&tid.to_string()) else {
        return false;
    };
    if s.ended {
        // A zombie leader whose other threads still run is alive.
        let threads = std::fs::read_to_string(format!("/proc/{tid}/status")).map(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("Threads:"))
                .and_then(|n| n.trim().parse::<u32>().ok())
        });
        return matches!(threads, Ok(Some(n)) if n <= 1);
    }
    if !me.judge_start {
        return false;
    }
    // Another start time: the id was handed to a new thread. Only a
    // difference of two ticks or more counts (a holder's own reading and
    // ours may round apart by one), and only a start time this process
    // can normalise (see `identify`).
    let start = (word >> 32) as u32;
    let Some(seen) = s.start.checked_sub(me.boot_offset) else {
        return false;
    };
    let diff = (seen as u32).wrapping_sub(start) as i32;
    start != 0 && diff.unsigned_abs() >= 2
}

fn now() -> TimeSpec {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .expect("CLOCK_MONOTONIC is always there")
}

/// A lock held: what [`unlock`] needs.
#[derive(Debug, Clone, Copy)]
pub(super) struct Token(u64);

/// Take the lock `word` of a queue made in pid namespace `pidns` (0:
/// unknown), waiting until `deadline` (CLOCK_MONOTONIC; for ever with
/// `None`): ETIMEDOUT when it passed with the lock still held by a live
/// process. A thread that takes a lock it already holds waits for ever
/// (until its deadline): the queue never does.
pub(super) fn lock(
    word: &AtomicU64,
    pidns: u64,
    deadline: Option<TimeSpec>,
) -> Result<(Locked, Token), Errno> {
    let me = me();
    // A process of another pid namespace can judge no holder, and no
    // holder can judge it; a namespace that cannot be told (no /proc on
    // either side) counts as another.
    let foreign = pidns == 0 || me.pidns == 0 || pidns != me.pidns;
    let mine = if foreign { me.word | FOREIGN } else { me.word };
    for _ in 0..SPINS {
        if word.load(Ordering::Relaxed) == 0
            && word
                .compare_exchange(0, mine, Ordering::Acquire, Ordering::Relaxed)
                .is_ok()
        {
            return Ok((Locked::Clean, Token(mine)));
        }
        std::hint::spin_loop();
    }
    let mut check = crate::sem::timespec_after(now(), CHECK);
    loop {
        let held = word.load(Ordering::Relaxed);
        if held == 0 {
            // Taken marked: others may sleep, and the unlock wakes them.
            if word
                .compare_exchange(0, mine | CONTENDED, Ordering::Acquire, Ordering::Relaxed)
                .is_ok()
            {
                return Ok((Locked::Clean, Token(mine | CONTENDED)));
            }
            continue;
        }
        let t = now();
        if check.is_none_or(|c| t >= c) {
            check = crate::sem::timespec_after(t, CHECK);
            if !foreign
                && held & FOREIGN == 0
                && holder_dead(held, &me)
                && word
                    .compare_exchange(held, mine | CONTENDED, Ordering::Acquire, Ordering::Relaxed)
                    .is_ok()
            {
                return Ok((Locked::OwnerDied, Token(mine | CONTENDED)));
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

/// Give the lock `word` back, taken as `token`, waking one sleeper if
/// any. A lock that no longer names this holder (another process judged
/// it dead and took it over) is left alone.
pub(super) fn unlock(word: &AtomicU64, token: Token) {
    let mut held = word.load(Ordering::Relaxed);
    loop {
        if held & !CONTENDED != token.0 & !CONTENDED {
            return;
        }
        match word.compare_exchange_weak(held, 0, Ordering::Release, Ordering::Relaxed) {
            Ok(_) => break,
            Err(now) => held = now,
        }
    }
    if held & CONTENDED != 0 {
        // Nothing to do about a failed wake: a sleeper looks again within
        // CHECK anyway.
        let _ = futex::wake_low(word, 1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_thread_is_alive_and_a_reused_or_gone_id_is_dead() {
        let me = me();
        assert_eq!(me.word & TID, nix::unistd::gettid().as_raw() as u64);
        assert!(!holder_dead(me.word, &me));
        if me.word >> 32 != 0 {
            // The same id, started two ticks apart: a reused id.
            assert!(holder_dead(me.word ^ (1 << 33), &me));
            // One tick apart is rounding, not another thread.
            assert!(!holder_dead(me.word ^ (1 << 32), &me));
        }
        // Another thread of this process, alive, then gone.
        let (tx, rx) = std::sync::mpsc::channel();
        let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
        let t = std::thread::spawn(move || {
            tx.send(me_word()).unwrap();
            done_rx.recv().unwrap();
        });
        let other = rx.recv().unwrap();
        assert!(!holder_dead(other, &me));
        done_tx.send(()).unwrap();
        t.join().unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !holder_dead(other, &me) {
            assert!(
                std::time::Instant::now() < deadline,
                "a joined thread lives on"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn me_word() -> u64 {
        me().word
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
        assert!(holder_dead(u64::from(pid), &me()));
        child.wait().unwrap();
    }

    #[test]
    fn a_dead_holders_lock_is_taken_over_and_a_live_ones_is_not() {
        let word = AtomicU64::new(0);
        let (how, token) = lock(&word, me().pidns, None).unwrap();
        assert_eq!(how, Locked::Clean);
        unlock(&word, token);
        assert_eq!(word.load(Ordering::Relaxed), 0);
        // Held by an id that names no thread (above the largest pid).
        word.store(TID, Ordering::Relaxed);
        let (how, token) = lock(&word, me().pidns, None).unwrap();
        assert_eq!(how, Locked::OwnerDied);
        assert_eq!(word.load(Ordering::Relaxed) & TID, me().word & TID);
        unlock(&word, token);
        // Held by this very thread: waited for until the deadline.
        let (_, token) = lock(&word, me().pidns, None).unwrap();
        let deadline = crate::sem::timespec_after(now(), Duration::from_millis(60));
        assert_eq!(
            lock(&word, me().pidns, deadline).unwrap_err(),
            Errno::ETIMEDOUT
        );
        // The sleeper marked it: the unlock wakes whoever sleeps.
        assert_ne!(word.load(Ordering::Relaxed) & CONTENDED, 0);
        unlock(&word, token);
        assert_eq!(word.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn a_foreign_holder_is_never_judged_and_an_unlock_of_a_lock_taken_over_does_nothing() {
        let word = AtomicU64::new(TID | FOREIGN);
        let deadline = crate::sem::timespec_after(now(), Duration::from_millis(60));
        assert_eq!(
            lock(&word, me().pidns, deadline).unwrap_err(),
            Errno::ETIMEDOUT
        );
        // A token of a holder whose lock another took over.
        word.store(12345, Ordering::Relaxed);
        unlock(&word, Token(777));
        assert_eq!(word.load(Ordering::Relaxed), 12345);
    }
}
