//! [`RobustSemaphore`]: a named counting semaphore that heals itself. A
//! slot taken by a process is given back by the kernel when that process
//! dies, however it dies (SIGKILL, the OOM killer), so a killed holder
//! never leaves the count one lower for good.
//!
//! ## How
//!
//! The count is a System V semaphore, and a slot is taken and given back
//! with SEM_UNDO: the kernel records, per process, what each operation
//! must be undone by, and undoes it when the process exits. Waiting is the
//! kernel's own (semtimedop(2)): waiters sleep until a count is posted or
//! undone, with no polling, in the order the kernel wakes them.
//!
//! A command run while holding a slot ([`spawn_holding`]) is started with
//! clone(CLONE_SYSVSEM): it shares its starter's undo list, and the kernel
//! applies the list only when the last process sharing it exits. So the
//! slot stays taken while the starter *or* the command runs, and comes back
//! the moment both are gone: the command keeps the slot, as a command under
//! flock(1) keeps the lock, even when its starter was killed. (Processes
//! the command forks do not share the list: a daemon it leaves behind does
//! not hold the slot.)
//!
//! ## On disk
//!
//! The name is `/dev/shm/pk-sem.<name>`, a one-line text file (mode 0600,
//! created whole or not at all, see [`crate::shm`]):
//! `posixkit-sem 2 key=0x<key> value=<value>`. The key, picked at random
//! when the name is created and unused then, names a System V set of three
//! semaphores (mode 0600): the free slots, the value (how many slots there
//! are), and a tag made from the name. Any opener creates the set if it is
//! missing and fills it in if it is still all zero, in one atomic
//! operation that succeeds only while the tag is 0; so a creator killed at
//! any instant leaves either nothing, or a name whose set the next user
//! makes whole, never a set no name points at. Opening checks the file
//! (ours, regular, the right text) and the set (ours, mode 0600, three
//! semaphores, the tag of this name); anything else is refused with
//! [`ErrorKind::PermissionDenied`] (another user's object) or
//! [`ErrorKind::BadData`]. The file is private to its owner, so no one
//! else learns the key. `value=` is the value the set is made with, should
//! it ever have to be made again (after `ipcrm`).
//!
//! ## Removal
//!
//! [`RobustSemaphore::unlink`] may run at any moment, beside any number of
//! creators, openers, waiters and holders. The name file is the lock
//! that orders them (flock(2), released by the kernel when its holder
//! dies): every open holds a shared lock on it from before its semget
//! (which may create the set) until the set is filled in and checked, and
//! an unlink holds an exclusive one while it removes the set, then the
//! name. Each side checks, once it has the lock, that the file it locked
//! is still the one under the name ([`ErrorKind::NotFound`] otherwise).
//! Every interleaving then ends in one of these:
//!
//! - open, then unlink: the unlink waits until the open has its set; the
//!   set is then removed under the opener, whose next wait or take ends
//!   with [`Taken::Removed`] (a holder's [`RobustSemaphore::release`]
//!   finds nothing to give back, which is not an error).
//! - unlink, then open (of a name file opened before it was removed): the
//!   open gets the lock after the unlink, finds the file unnamed and
//!   fails with NotFound *before* its semget, so no set is ever made
//!   again from the key of a removed name.
//! - create, then unlink before the creator's open: that open fails with
//!   NotFound, and [`RobustSemaphore::open_or_create`] starts over.
//! - two unlinks: the second finds the file unnamed: NotFound.
//! - killed at any instant: a lock dies with its holder; an unlink killed
//!   between removing the set and the name leaves a name without a set,
//!   which its next user makes whole. Never a set without a name.
//!
//! Only pk-sem's own calls take the lock: removing the name file by hand
//! (`rm`) skips the set, which `ipcrm -S <key>` then removes.
//!
//! Limits: the value is at most [`VALUE_MAX`] (SEMVMX, 32767). System V
//! objects belong to the IPC namespace: processes in different IPC
//! namespaces that share `/dev/shm` cannot share these semaphores.

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::time::Duration;

use nix::errno::Errno;
use nix::time::{ClockId, clock_gettime};

use crate::error::{Context, Error, ErrorKind, Result};
use crate::sem::Deadline;
use crate::shm::object;
use crate::sys::flock;
use crate::sys::sysv::{self, Op};

/// The largest value: SEMVMX, the most a System V semaphore holds.
pub const VALUE_MAX: u32 = 32767;

/// The prefix of the name file in `/dev/shm`.
pub const PREFIX: &str = "pk-sem.";

const FREE: u16 = 0;
const VALUE: u16 = 1;
const TAG: u16 = 2;
const HEADER: &str = "posixkit-sem 2 ";

/// The tag of a name: 1 to 32767, from an FNV-1a hash of its bytes.
fn tag(name: &str) -> u16 {
    let mut h: u32 = 0x811c_9dc5;
    for b in name.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    (h % 32767) as u16 + 1
}

/// `key=0x… value=…` from a name file's one line.
fn parse(text: &str) -> Option<(i32, u32)> {
    let rest = text.strip_prefix(HEADER)?.strip_suffix('\n')?;
    let (k, v) = rest.split_once(' ')?;
    let key = i32::from_str_radix(k.strip_prefix("key=0x")?, 16).ok()?;
    let value: u32 = v.strip_prefix("value=")?.parse().ok()?;
    (key > 0 && check_value(value).is_ok()).then_some((key, value))
}

/// A System V key no set has now, for a new name: random bits from the
/// name, the pid and the clock, tried until one is free.
fn fresh_key(name: &str) -> Result<i32> {
    let now = clock_gettime(ClockId::CLOCK_MONOTONIC)
        .map_err(|e| Error::sys("clock_gettime", name, e))?;
    fn mix(h: u64, x: u64) -> u64 {
        (h ^ x).wrapping_mul(0x0100_0000_01b3)
    }
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in name.bytes() {
        h = mix(h, u64::from(b));
    }
    h = mix(h, u64::from(std::process::id()));
    h = mix(h, now.tv_sec() as u64);
    h = mix(h, now.tv_nsec() as u64);
    for _ in 0..64 {
        h = mix(h, 0x9e37_79b9);
        let key = ((h >> 17) as i32) & 0x7fff_ffff;
        if key == 0 {
            continue;
        }
        match sysv::exists(key) {
            Ok(false) => return Ok(key),
            Ok(true) => continue,
            Err(e) => return Err(Error::sys("semget", name, e)),
        }
    }
    Err(Error::new(
        ErrorKind::Other,
        "semget",
        name,
        "no free System V key found",
    ))
}

fn check_value(value: u32) -> Result<()> {
    if value == 0 || value > VALUE_MAX {
        return Err(Error::invalid(
            "value",
            format!("{value} is not in 1..={VALUE_MAX}"),
        ));
    }
    Ok(())
}

/// How a wait for a slot ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Taken {
    /// The slot is ours (until [`RobustSemaphore::release`] or our exit).
    Yes,
    /// The deadline passed first.
    TimedOut,
    /// The semaphore was removed ([`RobustSemaphore::unlink`]) before a
    /// slot was free: open the name again (it may be a new semaphore, or
    /// none) to wait on what it names now.
    Removed,
}

/// A named counting semaphore whose slots come back when their holder
/// dies. See the [module](self) for how.
#[derive(Debug)]
pub struct RobustSemaphore {
    id: i32,
    name: String,
    /// Slots taken through this handle and not given back, by which
    /// process: the pid in the high 32 bits, the count in the low. A
    /// release beyond them would add a free slot that no holder gave up;
    /// a forked child's copy counts none (the kernel does not copy a
    /// process's undo to its children: the parent's slots are not its).
    /// Processes are told apart by pid: a descendant that inherits the
    /// copy and is later given the very pid of the taker, dead by then, is
    /// not told apart.
    held: std::sync::atomic::AtomicU64,
}

impl RobustSemaphore {
    /// Create `name` with `value` slots (1 to [`VALUE_MAX`]), all free.
    /// [`ErrorKind::AlreadyExists`] if the name is taken.
    pub fn create(name: &str, value: u32) -> Result<RobustSemaphore> {
        Self::create_until(name, value, Deadline::Never)
    }

    fn create_until(name: &str, value: u32, deadline: Deadline) -> Result<RobustSemaphore> {
        check_value(value)?;
        object::path(PREFIX, name)?;
        let key = fresh_key(name)?;
        let text = format!("{HEADER}key={key:#010x} value={value}\n");
        object::create(PREFIX, name, text.len() as u64, |file| {
            file.write_all_at(text.as_bytes(), 0).ctx("write", name)
        })?;
        Self::open_until(name, deadline)
    }

    /// Open the existing semaphore `name` (checked: see the [module](self)),
    /// making its set if it is missing or not yet filled in. Under a shared
    /// lock of the name file, so that no [`RobustSemaphore::unlink`] runs
    /// meanwhile (see [Removal](self#removal)).
    pub fn open(name: &str) -> Result<RobustSemaphore> {
        Self::open_until(name, Deadline::Never)
    }

    /// [`RobustSemaphore::open`], waiting for the name file's lock until
    /// `deadline` (but at least a second): the lock is held for a few
    /// system calls, so one held longer has a holder that is stopped (^Z,
    /// a debugger), and the wait ends with [`ErrorKind::TimedOut`].
    pub fn open_until(name: &str, deadline: Deadline) -> Result<RobustSemaphore> {
        let (file, size) = object::open(PREFIX, name)?;
        lock_name_until(&file, name, flock::Op::Shared, deadline)?;
        Self::attach(&file, size, name)
    }

    /// The semaphore whose name file `file` (`size` bytes, locked by the
    /// caller) is: its set made if missing, filled in if new, checked.
    fn attach(file: &File, size: u64, name: &str) -> Result<RobustSemaphore> {
        let bad = |why: String| Error::data("open", name, why);
        if size > 64 {
            return Err(bad(format!("{size} bytes: not a pk-sem name file")));
        }
        let mut text = String::new();
        file.take(64)
            .read_to_string(&mut text)
            .map_err(|_| bad("not a pk-sem name file (not text)".into()))?;
        let (key, value) = parse(&text).ok_or_else(|| {
            bad(format!(
                "not a pk-sem name file: {:?}",
                text.escape_debug().to_string()
            ))
        })?;
        let id = sysv::get(key, 3, 0o600).map_err(|e| match e {
            Errno::EACCES | Errno::EPERM => Error::new(
                ErrorKind::PermissionDenied,
                "open",
                name,
                format!("its System V key {key:#010x} belongs to another user: refusing it"),
            ),
            Errno::EINVAL => bad(format!(
                "its System V key {key:#010x} names a set that is not a pk-sem semaphore"
            )),
            e => Error::sys("semget", name, e),
        })?;
        let st = sysv::stat(id).map_err(|e| Error::sys("semctl", name, e))?;
        let me = nix::unistd::geteuid().as_raw();
        if st.uid != me || st.cuid != me {
            return Err(Error::new(
                ErrorKind::PermissionDenied,
                "open",
                name,
                format!(
                    "its System V semaphore (key {key:#010x}) belongs to uid {}, not to uid {me}: refusing it",
                    st.uid
                ),
            ));
        }
        if st.mode & 0o077 != 0 {
            return Err(Error::new(
                ErrorKind::PermissionDenied,
                "open",
                name,
                format!(
                    "its System V semaphore (key {key:#010x}) has mode {:04o}: other users could change it",
                    st.mode & 0o777
                ),
            ));
        }
        if st.nsems != 3 {
            return Err(bad(format!(
                "its System V key {key:#010x} names a set of {} semaphores, not a pk-sem semaphore",
                st.nsems
            )));
        }
        // Fill it in if no one has yet: only while the tag is 0, all at once.
        let v = value as i16;
        let fill = [
            Op {
                num: TAG,
                delta: 0,
                undo: false,
                nowait: true,
            },
            Op {
                num: TAG,
                delta: tag(name) as i16,
                undo: false,
                nowait: true,
            },
            Op {
                num: VALUE,
                delta: v,
                undo: false,
                nowait: true,
            },
            Op {
                num: FREE,
                delta: v,
                undo: false,
                nowait: true,
            },
        ];
        match sysv::op(id, &fill, None) {
            Ok(()) | Err(Errno::EAGAIN) => {}
            Err(e) => return Err(Error::sys("semop", name, e)),
        }
        let t = sysv::get_val(id, TAG.into()).map_err(|e| Error::sys("semctl", name, e))?;
        let has = sysv::get_val(id, VALUE.into()).map_err(|e| Error::sys("semctl", name, e))?;
        if t != i32::from(tag(name)) || has < 1 {
            return Err(bad(format!(
                "its System V key {key:#010x} names a set that is not the semaphore of {name}"
            )));
        }
        Ok(RobustSemaphore {
            id,
            name: name.to_string(),
            held: std::sync::atomic::AtomicU64::new(0),
        })
    }

    /// Open `name`, or create it with `value` slots if it does not exist;
    /// `true` when this call created it.
    pub fn open_or_create(name: &str, value: u32) -> Result<(RobustSemaphore, bool)> {
        Self::open_or_create_until(name, value, Deadline::Never)
    }

    /// [`RobustSemaphore::open_or_create`], waiting for the name file's
    /// lock as [`RobustSemaphore::open_until`] does.
    pub fn open_or_create_until(
        name: &str,
        value: u32,
        deadline: Deadline,
    ) -> Result<(RobustSemaphore, bool)> {
        loop {
            match Self::open_until(name, deadline) {
                Ok(s) => return Ok((s, false)),
                Err(e) if e.kind() == ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
            match Self::create_until(name, value, deadline) {
                Ok(s) => return Ok((s, true)),
                // Created by someone else between our two calls: open it.
                // Or ours removed by an unlink before we could open it:
                // start over.
                Err(e) if matches!(e.kind(), ErrorKind::AlreadyExists | ErrorKind::NotFound) => {
                    continue;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Remove `name`: its set, then its name file, under an exclusive lock
    /// of the name file (see [Removal](self#removal)). Holders keep
    /// running; waiters wake with [`Taken::Removed`].
    /// [`ErrorKind::NotFound`] if there is no such name; a damaged name
    /// file of ours is removed too, and another user's is refused.
    pub fn unlink(name: &str) -> Result<()> {
        let (file, size) = match object::open(PREFIX, name) {
            Ok(f) => f,
            Err(e) if e.kind() == ErrorKind::BadData => return remove_damaged(name, e),
            Err(e) => return Err(e),
        };
        lock_name(&file, name, flock::Op::Exclusive)?;
        match Self::attach(&file, size, name) {
            Ok(s) => {
                // The set first: killed between the two, we leave a name
                // without a set, which its next user completes; never a
                // set without a name.
                match sysv::remove(s.id) {
                    Ok(()) | Err(Errno::EINVAL) | Err(Errno::EIDRM) => {}
                    Err(e) => return Err(Error::sys("semctl", name, e)),
                }
                object::unlink(PREFIX, name)
            }
            Err(e) if e.kind() == ErrorKind::BadData => remove_damaged(name, e),
            Err(e) => Err(e),
        }
    }

    /// Its name.
    pub fn name(&self) -> &str {
        &self.name
    }

    fn sys(&self, call: &'static str, e: Errno) -> Error {
        Error::sys(call, &self.name, e)
    }

    /// A semctl(2) or set_value's semop(2) error: EINVAL or EIDRM on a set this handle opened means
    /// an unlink removed it since ([`ErrorKind::NotFound`], as if the open
    /// had come a moment later); anything else as it is.
    fn ctl(&self, call: &'static str, e: Errno) -> Error {
        match e {
            Errno::EINVAL | Errno::EIDRM => Error::new(
                ErrorKind::NotFound,
                call,
                &self.name,
                "the semaphore was removed (pk-sem unlink) meanwhile",
            ),
            e => self.sys(call, e),
        }
    }

    /// How many slots it has.
    pub fn value(&self) -> Result<u32> {
        let v = sysv::get_val(self.id, VALUE.into()).map_err(|e| self.ctl("semctl", e))?;
        Ok(v as u32)
    }

    /// How many slots are free now.
    pub fn free(&self) -> Result<u32> {
        let v = sysv::get_val(self.id, FREE.into()).map_err(|e| self.ctl("semctl", e))?;
        Ok(v as u32)
    }

    /// The value and the free slots, as one reset left them: the free
    /// count is read between two reads of the same value (a reset moves
    /// both at once), and read again when it is over the value (resets
    /// there and back between the reads: 1 to 5 to 1), so `free <= value`
    /// always holds in what it returns.
    ///
    /// A free count that stays over the value (a set that another program
    /// changed by hand with semop) is an error of bad data after 10 000
    /// reads, not a spin for ever.
    pub fn value_and_free(&self) -> Result<(u32, u32)> {
        for _ in 0..10_000 {
            let value = self.value()?;
            let free = self.free()?;
            if self.value()? == value && free <= value {
                return Ok((value, free));
            }
        }
        let (value, free) = (self.value()?, self.free()?);
        Err(Error::data(
            "semctl",
            &self.name,
            format!("{free} free slots of {value}: more free than there are"),
        ))
    }

    /// How many processes wait for a slot now.
    pub fn waiting(&self) -> Result<u32> {
        let v = sysv::get_ncnt(self.id, FREE.into()).map_err(|e| self.ctl("semctl", e))?;
        Ok(v as u32)
    }

    /// Take a slot before `deadline` ([`Deadline::Now`]: only if one is
    /// free). The kernel gives it back when this process (and every process
    /// started with [`spawn_holding`]) has exited, unless
    /// [`RobustSemaphore::release`] does first. EINTR (a signal handler
    /// ran) is retried against the same deadline.
    pub fn acquire_until(&self, deadline: Deadline) -> Result<Taken> {
        let op = |nowait| Op {
            num: FREE,
            delta: -1,
            undo: true,
            nowait,
        };
        loop {
            let r = match deadline {
                Deadline::Never => sysv::op(self.id, &[op(false)], None),
                Deadline::Now => sysv::op(self.id, &[op(true)], None),
                Deadline::At(t) => {
                    let now = clock_gettime(ClockId::CLOCK_MONOTONIC)
                        .map_err(|e| self.sys("clock_gettime", e))?;
                    if now >= t {
                        sysv::op(self.id, &[op(true)], None)
                    } else {
                        let left = super::timespec_until(t, now);
                        sysv::op(self.id, &[op(false)], Some(left))
                    }
                }
            };
            match r {
                Ok(()) => {
                    self.count_held(1);
                    return Ok(Taken::Yes);
                }
                // Unlinked before or while we waited.
                Err(Errno::EIDRM | Errno::EINVAL) => return Ok(Taken::Removed),
                Err(Errno::EAGAIN) => {
                    if let Deadline::At(t) = deadline {
                        // semtimedop's timeout ran out; a deadline not yet
                        // reached (a coarse clock) is waited out again.
                        let now = clock_gettime(ClockId::CLOCK_MONOTONIC)
                            .map_err(|e| self.sys("clock_gettime", e))?;
                        if now < t {
                            continue;
                        }
                    }
                    return Ok(Taken::TimedOut);
                }
                Err(Errno::EINTR) => continue,
                Err(e) => return Err(self.sys("semop", e)),
            }
        }
    }

    /// Give back a slot taken with [`RobustSemaphore::acquire_until`] (and
    /// cancel its undo). A set removed meanwhile is not an error. A release
    /// with no slot taken through this handle is refused
    /// ([`ErrorKind::InvalidInput`], nothing changes): it would add a free
    /// slot no holder gave up, and let one more holder in everywhere for
    /// as long as this process lives.
    pub fn release(&self) -> Result<()> {
        if !self.count_held(-1) {
            return Err(Error::invalid(
                "release(RobustSemaphore)",
                format!(
                    "no slot of {} taken through this handle to give back",
                    self.name
                ),
            ));
        }
        let op = Op {
            num: FREE,
            delta: 1,
            undo: true,
            nowait: true,
        };
        match sysv::op(self.id, &[op], None) {
            Ok(()) | Err(Errno::EINVAL) | Err(Errno::EIDRM) => Ok(()),
            Err(e) => {
                // Still held: it may be given back again.
                self.count_held(1);
                Err(self.sys("semop", e))
            }
        }
    }

    /// Add `delta` (+1 or -1) to the slots this process holds through this
    /// handle; false (and nothing changed) for -1 when it holds none. A
    /// count another process left (this handle copied by a fork) is none.
    fn count_held(&self, delta: i8) -> bool {
        use std::sync::atomic::Ordering::Relaxed;
        let me = u64::from(std::process::id());
        self.held
            .fetch_update(Relaxed, Relaxed, |word| {
                let mine = if word >> 32 == me {
                    word & 0xffff_ffff
                } else {
                    0
                };
                let n = if delta > 0 {
                    mine.checked_add(1).filter(|&n| n <= 0xffff_ffff)?
                } else {
                    mine.checked_sub(1)?
                };
                Some(me << 32 | n)
            })
            .is_ok()
    }

    /// Change the number of slots to `value`, returning the old value.
    /// More slots are free at once; fewer wait until enough holders have
    /// given theirs back (the free count and the value drop together, in
    /// one atomic operation), until `deadline`: `None` when it passed.
    ///
    /// The change is a compare-and-set: it applies only while the value
    /// is still the one it was computed from, so two resets at once end at
    /// the value of the one that came last, never at the sum of their
    /// changes (which could pass through 0, go past the value asked for,
    /// or wait for ever for slots that do not exist).
    pub fn set_value(&self, value: u32, deadline: Deadline) -> Result<Option<u32>> {
        check_value(value)?;
        loop {
            let old = self.value()?;
            if old == value {
                return Ok(Some(old));
            }
            // One semop, atomic: VALUE goes from exactly `old` (take `old`,
            // then find zero, neither waiting) to `value`, and FREE moves
            // by the same delta, so the slots held stay held; a shrink
            // waits for free slots. While it waits, a change of VALUE by
            // someone else fails it with EAGAIN, and it starts over.
            let delta = (value as i32 - old as i32) as i16;
            let ops = [
                Op {
                    num: VALUE,
                    delta: -(old as i16),
                    undo: false,
                    nowait: true,
                },
                Op {
                    num: VALUE,
                    delta: 0,
                    undo: false,
                    nowait: true,
                },
                Op {
                    num: VALUE,
                    delta: value as i16,
                    undo: false,
                    nowait: true,
                },
                Op {
                    num: FREE,
                    delta,
                    undo: false,
                    nowait: deadline == Deadline::Now,
                },
            ];
            let timeout = match deadline {
                Deadline::At(t) => {
                    let now = clock_gettime(ClockId::CLOCK_MONOTONIC)
                        .map_err(|e| self.sys("clock_gettime", e))?;
                    if now >= t {
                        return Ok(None);
                    }
                    Some(super::timespec_until(t, now))
                }
                _ => None,
            };
            match sysv::op(self.id, &ops, timeout) {
                Ok(()) => return Ok(Some(old)),
                // The value moved under us (another reset): start over from
                // what it is now. Otherwise the time ran out (or, with
                // Deadline::Now, the slots to take back are held).
                Err(Errno::EAGAIN) if self.value()? != old => continue,
                Err(Errno::EAGAIN) if deadline == Deadline::Now => return Ok(None),
                // The loop's own check of the deadline ends it.
                Err(Errno::EAGAIN) | Err(Errno::EINTR) => continue,
                Err(e) => return Err(self.ctl("semop", e)),
            }
        }
    }
}

/// Lock the name file `file` (flock(2) `op`, waiting; EINTR retried), then
/// check that it is still the name's: [`ErrorKind::NotFound`] if an
/// unlink removed it before we had the lock.
fn lock_name(file: &File, name: &str, op: flock::Op) -> Result<()> {
    lock_name_until(file, name, op, Deadline::Never)
}

/// [`lock_name`], giving up at `deadline` but not before a second has
/// passed: [`ErrorKind::TimedOut`] when the lock stays held that long.
/// Without a deadline, flock(2) waits; with one, a non-blocking flock is
/// tried again every few milliseconds.
fn lock_name_until(file: &File, name: &str, op: flock::Op, deadline: Deadline) -> Result<()> {
    use std::os::fd::AsFd;
    use std::os::unix::fs::MetadataExt;
    let give_up = deadline.for_lock()?;
    let before = |t: nix::sys::time::TimeSpec| {
        nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).is_ok_and(|now| now < t)
    };
    let mut pause = Duration::from_millis(1);
    loop {
        match flock::flock(file.as_fd(), op, give_up.is_some()) {
            Ok(()) => break,
            Err(Errno::EINTR) => continue,
            Err(Errno::EWOULDBLOCK) if give_up.is_some_and(before) => {
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(20));
            }
            Err(Errno::EWOULDBLOCK) => {
                return Err(Error::new(
                    ErrorKind::TimedOut,
                    "flock",
                    name,
                    "another process held the name's lock past the timeout (is it stopped?)",
                ));
            }
            Err(e) => return Err(Error::sys("flock", name, e)),
        }
    }
    let held = file.metadata().ctx("fstat", name)?;
    let named = std::fs::symlink_metadata(object::path(PREFIX, name)?)
        .is_ok_and(|m| m.dev() == held.dev() && m.ino() == held.ino());
    if held.nlink() == 0 || !named {
        return Err(Error::sys("open", name, Errno::ENOENT));
    }
    Ok(())
}

/// Remove the damaged name file of `name` (refused with `why`): a
/// directory is not ours to remove, and stays refused with `why`.
fn remove_damaged(name: &str, why: Error) -> Result<()> {
    object::unlink(PREFIX, name).map_err(|e| {
        if e.errno() == Some(Errno::EISDIR) {
            why
        } else {
            e
        }
    })
}

/// Start `program` sharing this process's undo list:
/// [`Spawn::share_sysv_undo`](crate::spawn::Spawn::share_sysv_undo), so
/// clone(CLONE_VM | CLONE_VFORK | CLONE_SYSVSEM) on a guarded stack of its
/// own, everything else as [`Spawn::start`](crate::spawn::Spawn::start)
/// does it. A slot this process holds stays held until both have exited.
/// An exec failure is an `execvp` error of kind
/// [`ErrorKind::CommandNotFound`] or [`ErrorKind::CommandNotExecutable`]
/// (the child is already reaped).
pub fn spawn_holding(program: crate::spawn::Spawn) -> Result<crate::spawn::Running> {
    program.share_sysv_undo(true).start()
}

/// Check a robust semaphore's name (`/name`, and short enough for the
/// name file): the reason when it is refused.
pub fn check_name(name: &str) -> std::result::Result<(), String> {
    object::path(PREFIX, name).map(drop).map_err(|e| {
        let s = e.to_string();
        s.strip_prefix("name: ").unwrap_or(&s).to_string()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unique() -> String {
        use std::sync::atomic::{AtomicU32, Ordering};
        static N: AtomicU32 = AtomicU32::new(0);
        format!(
            "/pk-unit-rsem-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        )
    }

    #[test]
    fn status_never_shows_more_free_slots_than_the_value() {
        // Resets 1 -> 5 -> 1 between value_and_free's two reads of the
        // value: the same value both times, a free count of the other
        // epoch. Seen as (1, 5) a few hundred times in a million reads.
        let name = unique();
        let s = std::sync::Arc::new(RobustSemaphore::create(&name, 1).unwrap());
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let resets = {
            let (s, stop) = (s.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    s.set_value(5, Deadline::Never).unwrap();
                    s.set_value(1, Deadline::Never).unwrap();
                }
            })
        };
        let t0 = std::time::Instant::now();
        let mut bad = None;
        while t0.elapsed() < Duration::from_millis(1500) && bad.is_none() {
            let (value, free) = s.value_and_free().unwrap();
            if free > value {
                bad = Some((value, free));
            }
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        resets.join().unwrap();
        RobustSemaphore::unlink(&name).unwrap();
        assert_eq!(bad, None, "(value, free)");
    }

    #[test]
    fn a_handle_whose_set_was_unlinked_says_not_found() {
        let name = unique();
        let s = RobustSemaphore::create(&name, 2).unwrap();
        RobustSemaphore::unlink(&name).unwrap();
        for e in [
            s.value().unwrap_err(),
            s.free().unwrap_err(),
            s.waiting().unwrap_err(),
        ] {
            assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
            assert!(e.to_string().contains("removed"), "{e}");
        }
        assert_eq!(
            s.set_value(3, Deadline::Now).unwrap_err().kind(),
            ErrorKind::NotFound
        );
    }

    #[test]
    fn create_take_give_back_and_set_value() {
        let name = unique();
        let s = RobustSemaphore::create(&name, 2).unwrap();
        assert_eq!((s.value().unwrap(), s.free().unwrap()), (2, 2));
        assert_eq!(s.acquire_until(Deadline::Now).unwrap(), Taken::Yes);
        assert_eq!(s.acquire_until(Deadline::Now).unwrap(), Taken::Yes);
        assert_eq!(s.acquire_until(Deadline::Now).unwrap(), Taken::TimedOut);
        let d = Deadline::after(Some(Duration::from_millis(30))).unwrap();
        assert_eq!(s.acquire_until(d).unwrap(), Taken::TimedOut);
        s.release().unwrap();
        assert_eq!(s.free().unwrap(), 1);
        let o = RobustSemaphore::open(&name).unwrap();
        assert_eq!(o.set_value(3, Deadline::Now).unwrap(), Some(2));
        assert_eq!((o.value().unwrap(), o.free().unwrap()), (3, 2));
        // Shrinking by 2 needs 2 free slots: there are.
        assert_eq!(o.set_value(1, Deadline::Now).unwrap(), Some(3));
        assert_eq!((o.value().unwrap(), o.free().unwrap()), (1, 0));
        // Growing back while one is held: the held one stays held.
        assert_eq!(o.set_value(2, Deadline::Now).unwrap(), Some(1));
        assert_eq!(o.free().unwrap(), 1);
        s.release().unwrap();
        assert_eq!(o.free().unwrap(), 2);
        // One release too many, or one through a handle that took nothing:
        // refused, nothing changes (it used to free a third slot of two,
        // and value_and_free then spun for ever).
        for h in [&s, &o] {
            assert_eq!(h.release().unwrap_err().kind(), ErrorKind::InvalidInput);
        }
        assert_eq!(o.value_and_free().unwrap(), (2, 2));
        assert_eq!(
            RobustSemaphore::create(&name, 1).unwrap_err().kind(),
            ErrorKind::AlreadyExists
        );
        RobustSemaphore::unlink(&name).unwrap();
        assert_eq!(
            RobustSemaphore::open(&name).unwrap_err().kind(),
            ErrorKind::NotFound
        );
        assert!(RobustSemaphore::create(&name, 0).is_err());
        assert!(RobustSemaphore::create(&name, VALUE_MAX + 1).is_err());
    }

    #[test]
    fn tags_differ_between_names() {
        assert_ne!(tag("/jobs"), tag("/jobz"));
        assert!((1..=32767).contains(&tag("")));
    }
}
