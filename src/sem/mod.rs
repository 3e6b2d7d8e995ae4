//! POSIX counting semaphores: `multiprocessing.Semaphore(3)` done the POSIX
//! way.
//!
//! - [`Semaphore`]: unnamed and process-shared — `sem_init(pshared=1)` on a
//!   `sem_t` inside a MAP_SHARED memfd page, so a forked child shares it.
//!   The `sem_t` never moves: it lives in the mapping, and moving the Rust
//!   value moves only the handle.
//! - [`NamedSemaphore`]: the semaphore `sem_open` names, for independent
//!   processes (it lives as `/dev/shm/sem.<name>`, mode 0600). posixkit
//!   maps that file itself, from the very file it created or checked, so
//!   the name is looked up once; a C program's or Python's `sem_open` of
//!   the same name maps the same `sem_t`.
//!
//! Both have [`wait`](Semaphore::wait), [`try_wait`](Semaphore::try_wait),
//! [`wait_timeout`](Semaphore::wait_timeout) (a CLOCK_MONOTONIC deadline
//! via `sem_clockwait`, so a wall-clock step does not move it),
//! [`post`](Semaphore::post), [`value`](Semaphore::value), and
//! [`acquire`](Semaphore::acquire), an RAII guard that posts on drop.
//! EINTR is retried inside every wait, against the same deadline. A
//! blocking wait spins briefly (sixteen looks with a growing pause, about
//! 10 µs, only where this process may run on more than one CPU) before it
//! sleeps in `sem_wait`, so a count given back at once is taken without a
//! futex sleep and wake-up.
//!
//! A named semaphore's file can be written by any process of its owner
//! (`pk-shm`, Python's `SharedMemory("sem.NAME")`, `dd`): bytes that are
//! no semaphore any more make glibc abort the process in its futex calls.
//! So every call checks the `sem_t`'s words just before it hands them to
//! glibc, and reports damaged ones as [`crate::ErrorKind::BadData`]. That
//! narrows the danger, and cannot close it: bytes damaged between the
//! check and the call, or while a wait sleeps inside glibc, still abort
//! the process. A named semaphore trusts every process that can write its
//! file, as any shared memory does.
//!
//! A process that dies while holding a count of these (SIGKILL) never
//! gives it back: the kernel does not track POSIX semaphore owners. The
//! count stays low until someone posts it back ([`NamedSemaphore::reset`])
//! or the semaphore is unlinked and created anew. [`RobustSemaphore`] is
//! the named semaphore that heals: the kernel gives a dead holder's slot
//! back (System V, SEM_UNDO); `pk-sem run` uses it.
//!
//! ```no_run
//! use posixkit::sem::Semaphore;
//! let sem = Semaphore::new(3).unwrap();
//! {
//!     let _slot = sem.acquire().unwrap(); // value 2 while held
//! } // posted back here
//! assert_eq!(sem.value().unwrap(), 3);
//! ```

use std::time::Duration;

use nix::errno::Errno;
use nix::sys::time::TimeSpec;
use nix::time::{ClockId, clock_gettime};

use crate::error::{Error, Result};

pub mod robust;
use crate::error::Context;
use crate::shm::{anon_shared, object, valid_name};
use crate::sys::sem::{self as raw, Sem};
/// Signal handling for a wait that must end on a signal: install a
/// record-only handler without SA_RESTART for these signals (a blocked
/// `sem_wait` then returns EINTR), and read or take the last one caught.
pub use crate::sys::sem::{interrupt_on, peek_caught, take_caught};
use crate::sys::shm::{Mapping, map_shared_len};
pub use robust::RobustSemaphore;

/// SEM_VALUE_MAX: the largest value a semaphore can hold on Linux.
pub const VALUE_MAX: u32 = raw::VALUE_MAX;

/// A point on CLOCK_MONOTONIC after which a wait gives up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deadline {
    /// Wait as long as it takes.
    Never,
    /// Do not block at all (try_wait).
    Now,
    /// Give up at this CLOCK_MONOTONIC time.
    At(TimeSpec),
}

impl Deadline {
    /// `timeout` from now: `None` waits forever, zero does not block, and
    /// a timeout that lies beyond what a `timespec` can hold (anything near
    /// [`Duration::MAX`]) waits forever too, never "already timed out".
    pub fn after(timeout: Option<Duration>) -> Result<Deadline> {
        Ok(match timeout {
            None => Deadline::Never,
            Some(d) if d.is_zero() => Deadline::Now,
            Some(d) => {
                let now = clock_gettime(ClockId::CLOCK_MONOTONIC)
                    .map_err(|e| Error::sys("clock_gettime", "CLOCK_MONOTONIC", e))?;
                match timespec_after(now, d) {
                    Some(t) => Deadline::At(t),
                    None => Deadline::Never,
                }
            }
        })
    }
}

/// `t` plus `d`, field by field; `None` past what a `timespec` holds.
/// nix's `+` and `-` on `TimeSpec` go through i64 nanoseconds, which
/// overflow (a panic in a debug build, a wrapped value in a release one)
/// past 292 years: a `--timeout 200000d` reaches them.
pub(crate) fn timespec_after(t: TimeSpec, d: Duration) -> Option<TimeSpec> {
    let mut nsec = t.tv_nsec() + i64::from(d.subsec_nanos());
    let carry = nsec / 1_000_000_000;
    nsec %= 1_000_000_000;
    let sec = i64::try_from(d.as_secs())
        .ok()
        .and_then(|s| t.tv_sec().checked_add(s))
        .and_then(|s| s.checked_add(carry))?;
    Some(TimeSpec::new(sec, nsec))
}

/// The time from `now` until `t`, field by field (see [`timespec_after`]);
/// zero once `t` has passed.
pub(crate) fn timespec_until(t: TimeSpec, now: TimeSpec) -> Duration {
    if t <= now {
        return Duration::ZERO;
    }
    // Both normalised (0 <= tv_nsec < 1e9) and t > now: the seconds differ
    // by at least 0 after the borrow, and fit a u64 whatever their signs.
    let (mut sec, mut nsec) = (
        i128::from(t.tv_sec()) - i128::from(now.tv_sec()),
        t.tv_nsec() - now.tv_nsec(),
    );
    if nsec < 0 {
        nsec += 1_000_000_000;
        sec -= 1;
    }
    Duration::new(
        u64::try_from(sec).unwrap_or(0),
        u32::try_from(nsec).unwrap_or(0),
    )
}

/// The least time a wait with a deadline gives a lock that another
/// process holds for a few system calls (a queue's mutex, a pk-sem name
/// file's flock): one held longer has a holder that is stopped (^Z, a
/// debugger, a frozen cgroup), or one preempted on a loaded machine.
pub(crate) const LOCK_GRACE: Duration = Duration::from_secs(1);

impl Deadline {
    /// When a wait for such a lock gives up: this deadline, but never
    /// sooner than [`LOCK_GRACE`] from now; `None` (for ever) for
    /// [`Deadline::Never`].
    pub(crate) fn for_lock(self) -> Result<Option<TimeSpec>> {
        let grace = match Deadline::after(Some(LOCK_GRACE))? {
            Deadline::At(t) => Some(t),
            _ => None,
        };
        Ok(match self {
            Deadline::Never => None,
            Deadline::Now => grace,
            Deadline::At(t) => Some(grace.map_or(t, |g| g.max(t))),
        })
    }
}

/// How a wait ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Waited {
    /// The count was taken.
    Acquired,
    /// The deadline passed (or, for [`Deadline::Now`], the value was 0).
    TimedOut,
    /// A signal interrupted the wait and `stop` said to give up.
    Stopped,
}

/// How often [`Semaphore::wait_or_stop`] asks whether to give up.
const STOP_SLICE: Duration = Duration::from_millis(100);

/// The one wait loop: EINTR retried against the same deadline unless
/// `stop()` says otherwise. `map` holds the `sem_t` (at its start), whose
/// bytes are checked before every call ([`check_intact`]).
#[inline]
pub(crate) fn wait_on(
    sem: &Sem,
    map: &Mapping,
    what: &str,
    deadline: Deadline,
    stop: &dyn Fn() -> bool,
) -> Result<Waited> {
    let call = match deadline {
        Deadline::Never => "sem_wait",
        Deadline::Now => "sem_trywait",
        Deadline::At(_) => "sem_clockwait",
    };
    if deadline != Deadline::Now {
        check_intact(map, call, what)?;
        if spin_until(|| sem.try_wait().is_ok()) {
            return Ok(Waited::Acquired);
        }
        // A signal that arrived during the spin interrupts no sleep:
        // ask now, before sleeping.
        if stop() {
            return Ok(Waited::Stopped);
        }
    }
    loop {
        check_intact(map, call, what)?;
        let r = match deadline {
            Deadline::Never => sem.wait(),
            Deadline::Now => sem.try_wait(),
            Deadline::At(t) => sem.wait_until(t),
        };
        match r {
            Ok(()) => return Ok(Waited::Acquired),
            Err(Errno::EAGAIN | Errno::ETIMEDOUT) => return Ok(Waited::TimedOut),
            Err(Errno::EINTR) if stop() => return Ok(Waited::Stopped),
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(Error::sys(call, what, e)),
        }
    }
}

/// How a blocking wait spins before it sleeps in the kernel: up to
/// [`SPINS`] looks, with 1, 2, 4 … 32 spin-loop hints between them (351
/// hints in all: about 10 µs on a 2-core AMD EPYC VM, where a hint costs
/// 27 ns; under 20 µs where one costs 140 cycles, as on recent Intel
/// cores). A count given back that soon (a semaphore used as a lock, held
/// for a few instructions by a process on another CPU) is then taken in
/// user space, without the futex wait, the futex wake and the two context
/// switches that sleeping costs (together about as long as the spin);
/// glibc's `sem_wait` does not spin at all. A timed wait may end that
/// much after its deadline, less than the 50 µs of timer slack a sleeping
/// wait is allowed anyway.
///
/// The growing pause matters: looking at a steady rate (as Rust's `Mutex`
/// does, 100 times) takes the cache line from the holder at every look,
/// and two processes taking turns at a lock then cost three times as much
/// (pk-bench's `shm_semlock_2p_ns_per_op` on that VM: 140 ns per increment
/// with a steady spin, 45 ns with this one, 160 ns for C's `sem_wait`,
/// 40 ns with pauses up to 64 hints, which spins twice as long). The
/// count of looks bounds the spin, not a clock: reading the clock at each
/// look made the same figure 130–180 ns.
const SPINS: u32 = 16;

/// Spin until `take()` succeeds (see [`SPINS`]). Not at all when this
/// process may run on one CPU only: a spinner there can only delay a
/// holder that shares its CPU. For a semaphore each look is
/// `sem_trywait`, a plain load while the value is 0, so spinners do not
/// take the cache line from the holder. [`crate::thread::Lock`] spins the
/// same way.
#[inline]
pub(crate) fn spin_until(mut take: impl FnMut() -> bool) -> bool {
    if !other_cpus() {
        return false;
    }
    for i in 0..SPINS {
        if take() {
            return true;
        }
        if i + 1 == SPINS {
            break;
        }
        for _ in 0..1u32 << i.min(5) {
            std::hint::spin_loop();
        }
    }
    false
}

/// Whether this process may run on more than one CPU: its affinity mask
/// (sched_getaffinity, one system call), asked at the first wait that
/// spins and kept for the life of the process (a thread pinned to one CPU
/// later still spins).
fn other_cpus() -> bool {
    use std::sync::atomic::{AtomicU8, Ordering};
    static MANY: AtomicU8 = AtomicU8::new(0); // 0 unknown, 1 no, 2 yes
    match MANY.load(Ordering::Relaxed) {
        0 => {
            let many =
                nix::sched::sched_getaffinity(nix::unistd::Pid::from_raw(0)).is_ok_and(|set| {
                    (0..nix::sched::CpuSet::count())
                        .filter(|&c| set.is_set(c).unwrap_or(false))
                        .nth(1)
                        .is_some()
                });
            MANY.store(if many { 2 } else { 1 }, Ordering::Relaxed);
            many
        }
        v => v == 2,
    }
}

pub(crate) fn never() -> bool {
    false
}

/// A held count: posted back when dropped. From [`Semaphore::acquire`] or
/// [`NamedSemaphore::acquire`].
#[derive(Debug)]
#[must_use = "the count is released as soon as the guard is dropped"]
pub struct SemGuard<'a> {
    sem: &'a Sem,
    map: &'a Mapping,
}

impl Drop for SemGuard<'_> {
    fn drop(&mut self) {
        // EOVERFLOW is impossible: we took this count ourselves. Bytes
        // damaged meanwhile would make glibc abort: the count is then not
        // given back (a drop cannot report why).
        if intact(self.map).is_ok() {
            let _ = self.sem.post();
        }
    }
}

macro_rules! sem_methods {
    () => {
        /// Take one count, blocking while the value is 0. EINTR is retried.
        pub fn wait(&self) -> Result<()> {
            wait_on(&self.sem, &self.map, self.what(), Deadline::Never, &never).map(drop)
        }

        /// Take one count if the value is above 0; `false` (without
        /// blocking) when it is 0.
        pub fn try_wait(&self) -> Result<bool> {
            Ok(
                wait_on(&self.sem, &self.map, self.what(), Deadline::Now, &never)?
                    == Waited::Acquired,
            )
        }

        /// Take one count, waiting at most `timeout` (measured on
        /// CLOCK_MONOTONIC); `false` when it ran out. Zero does not block.
        /// EINTR is retried against the same deadline.
        pub fn wait_timeout(&self, timeout: Duration) -> Result<bool> {
            let d = Deadline::after(Some(timeout))?;
            Ok(wait_on(&self.sem, &self.map, self.what(), d, &never)? == Waited::Acquired)
        }

        /// Take one count before `deadline`. On EINTR, `stop()` decides:
        /// `true` gives up with [`Waited::Stopped`], `false` waits on.
        /// `stop()` is also asked before the wait and every 100 ms during
        /// it: a signal that lands after a check but before the wait begins
        /// interrupts nothing, so the wait goes in bounded slices.
        pub fn wait_or_stop(&self, deadline: Deadline, stop: &dyn Fn() -> bool) -> Result<Waited> {
            loop {
                if stop() {
                    return Ok(Waited::Stopped);
                }
                let slice = match Deadline::after(Some(STOP_SLICE))? {
                    Deadline::At(t) => t,
                    _ => unreachable!("a non-zero timeout gives a time"),
                };
                let (d, sliced) = match deadline {
                    Deadline::Never => (Deadline::At(slice), true),
                    Deadline::At(t) if t > slice => (Deadline::At(slice), true),
                    other => (other, false),
                };
                match wait_on(&self.sem, &self.map, self.what(), d, stop)? {
                    Waited::TimedOut if sliced => continue,
                    other => return Ok(other),
                }
            }
        }

        /// Give one count back (sem_post). Fails with EOVERFLOW at
        /// [`VALUE_MAX`].
        pub fn post(&self) -> Result<()> {
            check_intact(&self.map, "sem_post", self.what())?;
            self.sem
                .post()
                .map_err(|e| Error::sys("sem_post", self.what(), e))
        }

        /// The current value (sem_getvalue): free counts; 0 while any
        /// process waits.
        pub fn value(&self) -> Result<u32> {
            check_intact(&self.map, "sem_getvalue", self.what())?;
            let v = self
                .sem
                .value()
                .map_err(|e| Error::sys("sem_getvalue", self.what(), e))?;
            Ok(u32::try_from(v).unwrap_or(0))
        }

        /// [`wait`](Self::wait), then a guard that posts on drop.
        pub fn acquire(&self) -> Result<SemGuard<'_>> {
            self.wait()?;
            Ok(SemGuard {
                sem: &self.sem,
                map: &self.map,
            })
        }

        /// [`wait_timeout`](Self::wait_timeout), then a guard; `None` when
        /// the time ran out.
        pub fn acquire_timeout(&self, timeout: Duration) -> Result<Option<SemGuard<'_>>> {
            // `then`, not `then_some`: an eagerly built guard would post
            // on drop even when the wait failed.
            Ok(self.wait_timeout(timeout)?.then(|| SemGuard {
                sem: &self.sem,
                map: &self.map,
            }))
        }

        /// A guard for a count already taken (with `wait_or_stop`, say).
        pub fn guard_taken(&self) -> SemGuard<'_> {
            SemGuard {
                sem: &self.sem,
                map: &self.map,
            }
        }
    };
}

/// Whether the bytes read from a named semaphore's file hold a semaphore
/// this C library can use (see [`check_sem_words`]).
fn check_sem_bytes(bytes: &[u8]) -> std::result::Result<(), String> {
    if cfg!(all(target_env = "gnu", target_pointer_width = "64")) && bytes.len() >= 16 {
        let data = u64::from_ne_bytes(bytes[0..8].try_into().expect("8 bytes"));
        let private = i32::from_ne_bytes(bytes[8..12].try_into().expect("4 bytes"));
        return check_sem_words(data, private);
    }
    Ok(())
}

/// Whether a `sem_t` whose first word is `data` and whose `private` word
/// is `private` is one glibc (64-bit) can use: the value in the low 32
/// bits of `data` at most SEM_VALUE_MAX, and `private` 128 (the futex
/// flag glibc stores in every process-shared semaphore). Another
/// `private` word makes glibc's futex calls fail, and glibc then aborts
/// the process ("The futex facility returned an unexpected error code").
fn check_sem_words(data: u64, private: i32) -> std::result::Result<(), String> {
    if private != 128 || (data & 0xffff_ffff) > u64::from(VALUE_MAX) {
        return Err("not a valid process-shared semaphore (damaged or foreign bytes)".into());
    }
    Ok(())
}

/// [`check_sem_words`] of the `sem_t` at the start of `map`, read now
/// (relaxed atomic loads: another process may be writing them). With a C
/// library other than glibc (64-bit) nothing is checked.
fn intact(map: &Mapping) -> std::result::Result<(), String> {
    if cfg!(all(target_env = "gnu", target_pointer_width = "64")) {
        return check_sem_words(map.read::<u64>(0), map.read::<i32>(8));
    }
    Ok(())
}

/// [`intact`], as the error of `call` on `what` ([`crate::ErrorKind::BadData`]).
/// Called right before each call that hands the `sem_t` to the C library:
/// any process that can write a named semaphore's file can damage it at
/// any time after [`NamedSemaphore::open`] checked it.
fn check_intact(map: &Mapping, call: &'static str, what: &str) -> Result<()> {
    intact(map).map_err(|why| Error::data(call, what, why))
}

fn check_value(value: u32) -> Result<()> {
    if value > VALUE_MAX {
        return Err(Error::invalid(
            "value",
            format!("{value} is above SEM_VALUE_MAX ({VALUE_MAX})"),
        ));
    }
    Ok(())
}

/// An unnamed, process-shared semaphore in its own MAP_SHARED memfd page:
/// create it, then fork; parent and children share the count.
///
/// Dropping it unmaps the page but does not call `sem_destroy` (a no-op on
/// Linux, and undefined while another process still waits).
#[derive(Debug)]
pub struct Semaphore {
    sem: Sem,
    // Declared after `sem`, which points into it: unmapped last.
    map: Mapping,
}

impl Semaphore {
    /// A semaphore with initial `value` (0 to [`VALUE_MAX`]).
    pub fn new(value: u32) -> Result<Semaphore> {
        check_value(value)?;
        let map = anon_shared(std::mem::size_of::<libc::sem_t>())?;
        let sem = Sem::init(&map, 0, value).map_err(|e| Error::sys("sem_init", value, e))?;
        Ok(Semaphore { sem, map })
    }

    fn what(&self) -> &str {
        "semaphore"
    }

    sem_methods!();
}

/// A named semaphore (the `sem_t` of `/dev/shm/sem.<name>`, as `sem_open`
/// names it), shared by any process that opens the same name. Unmapped on
/// drop; the name stays until [`NamedSemaphore::unlink`].
#[derive(Debug)]
pub struct NamedSemaphore {
    sem: Sem,
    // Declared after `sem`, which points into it: unmapped last.
    map: Mapping,
    name: String,
}

/// The bytes of a `sem_t` that glibc's `sem_open` maps.
const SEM_T: usize = std::mem::size_of::<libc::sem_t>();

impl NamedSemaphore {
    /// Create `name` with `value`, mode 0600; EEXIST if it exists.
    ///
    /// The semaphore is made whole in an unnamed file (`O_TMPFILE`,
    /// `sem_init` with pshared=1 in its mapping) and then linked to
    /// `/dev/shm/sem.<name>`, so a process killed at any instant leaves
    /// nothing behind. (glibc's own `sem_open(O_CREAT)` writes a named
    /// temporary file `/dev/shm/sem.XXXXXX` and links it: killed between
    /// the two, it leaves that file behind; see [`NamedSemaphore::unlink`].)
    /// The semaphore returned is the one made here, in the mapping that
    /// made it: the name is not looked up again, so an unlink (and a new
    /// semaphore under the same name) right after the link changes
    /// nothing for this call.
    pub fn create(name: &str, value: u32) -> Result<NamedSemaphore> {
        check_value(value)?;
        valid_name(name)?;
        let mut made = None;
        object::create("sem.", name, SEM_T as u64, |file| {
            let map = Mapping::new_guarded(map_shared_len(file, SEM_T).ctx("mmap", name)?);
            let sem = Sem::init(&map, 0, value).map_err(|e| Error::sys("sem_init", name, e))?;
            made = Some((sem, map));
            Ok(())
        })?;
        let (sem, map) = made.expect("init ran");
        Ok(NamedSemaphore {
            sem,
            map,
            name: name.to_string(),
        })
    }

    /// Open the existing semaphore `name` ([`crate::ErrorKind::NotFound`] if
    /// missing). The file is checked before it is mapped: ours
    /// (owner, mode 0600 or stricter for others' writes), a regular file
    /// of exactly one `sem_t`, and (with glibc) holding a valid
    /// process-shared semaphore. Another user's object is
    /// [`crate::ErrorKind::PermissionDenied`]; an empty, short or garbage file is
    /// [`crate::ErrorKind::BadData`]: never a crash, never a count someone else
    /// controls. Bytes damaged later (the same user writes the file) are
    /// [`crate::ErrorKind::BadData`] from the next call, which checks them
    /// again; damage that lands between that check and glibc's use of the
    /// bytes still makes glibc abort (see the [module documentation](self)).
    /// The semaphore returned is the file checked, mapped from
    /// the same open file (the name is not looked up twice); it is the
    /// same semaphore that the C library's `sem_open` of the name (Python's
    /// `multiprocessing` locks, C programs) maps.
    pub fn open(name: &str) -> Result<NamedSemaphore> {
        valid_name(name)?;
        let (file, size) = object::open("sem.", name)?;
        if size != SEM_T as u64 {
            return Err(Error::data(
                "sem_open",
                name,
                format!("{size} bytes: not a semaphore (one is {SEM_T} bytes)"),
            ));
        }
        let mut bytes = [0u8; SEM_T];
        std::os::unix::fs::FileExt::read_exact_at(&file, &mut bytes, 0).ctx("read", name)?;
        check_sem_bytes(&bytes).map_err(|why| Error::data("sem_open", name, why))?;
        let map = Mapping::new_guarded(map_shared_len(&file, SEM_T).ctx("mmap", name)?);
        Ok(NamedSemaphore {
            sem: Sem::attach(&map, 0),
            map,
            name: name.to_string(),
        })
    }

    /// Open `name`, creating it with `value` (mode 0600) if it does not
    /// exist; `true` when this call created it. An existing semaphore keeps
    /// its current value. While other processes create and unlink the
    /// name at the same time, it tries again until one of the two
    /// succeeds: created here, or opened (found between a create and an
    /// unlink).
    pub fn open_or_create(name: &str, value: u32) -> Result<(NamedSemaphore, bool)> {
        object::open_or_create(|| Self::create(name, value), || Self::open(name))
    }

    /// Remove `name`; processes that have it open keep using it.
    ///
    /// Also removes what glibc's `sem_open(O_CREAT)` leaves when it is
    /// killed between linking its temporary file `/dev/shm/sem.XXXXXX` to
    /// the name and unlinking it: a second name (six characters after
    /// `sem.`) for the same file, ours. (A temporary file killed *before*
    /// its link has no tie to any name, and cannot be told apart from a
    /// semaphore named with six characters; it is left alone.) Returns the
    /// leftovers removed.
    pub fn unlink(name: &str) -> Result<Vec<std::path::PathBuf>> {
        use std::os::unix::fs::MetadataExt;
        let path = object::path("sem.", name)?;
        let meta = std::fs::symlink_metadata(&path).ctx("sem_unlink", name)?;
        let mut removed = Vec::new();
        let me = nix::unistd::geteuid().as_raw();
        if meta.is_file() && meta.nlink() > 1 && meta.uid() == me {
            for entry in std::fs::read_dir(object::DIR).ctx("opendir", object::DIR)? {
                let Ok(entry) = entry else { continue };
                let file = entry.file_name();
                let f = file.to_string_lossy();
                let temp = f
                    .strip_prefix("sem.")
                    .is_some_and(|t| t.len() == 6 && t.bytes().all(|b| b.is_ascii_alphanumeric()));
                let Ok(m) = entry.metadata() else { continue };
                if temp
                    && entry.path() != path
                    && m.ino() == meta.ino()
                    && m.dev() == meta.dev()
                    && m.uid() == me
                    && std::fs::remove_file(entry.path()).is_ok()
                {
                    removed.push(entry.path());
                }
            }
        }
        let c = valid_name(name)?;
        raw::unlink(&c).map_err(|e| Error::sys("sem_unlink", name, e))?;
        Ok(removed)
    }

    /// The name it was opened with.
    pub fn name(&self) -> &str {
        &self.name
    }

    fn what(&self) -> &str {
        &self.name
    }

    /// Bring the value to `value` by posting or taking counts; returns the
    /// value before. The recovery after a holder died without posting
    /// (SIGKILL). Only correct while nobody holds a count: a running holder
    /// would post its count back later and push the value above `value`.
    pub fn reset(&self, value: u32) -> Result<u32> {
        check_value(value)?;
        let before = self.value()?;
        let mut now = before;
        loop {
            if now < value {
                self.post()?;
            } else if now > value {
                self.try_wait()?;
            } else {
                return Ok(before);
            }
            now = self.value()?;
        }
    }

    sem_methods!();
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    fn unique() -> String {
        static N: AtomicU32 = AtomicU32::new(0);
        format!(
            "/pk-unit-sem-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        )
    }

    #[test]
    fn deadlines_centuries_away_neither_overflow_nor_wrap() {
        let day = Duration::from_secs(86_400);
        for d in [
            Duration::from_millis(1500),
            day * 400,
            day * 200_000,
            day * 2_000_000,
        ] {
            let Deadline::At(t) = Deadline::after(Some(d)).unwrap() else {
                panic!("{d:?} fits a timespec");
            };
            let now = clock_gettime(ClockId::CLOCK_MONOTONIC).unwrap();
            let left = timespec_until(t, now);
            assert!(
                left <= d && left + Duration::from_secs(5) > d,
                "{d:?}: {left:?}"
            );
        }
        let edge = TimeSpec::new(i64::MAX, 999_999_999);
        let low = TimeSpec::new(i64::MIN + 1, 0);
        assert_eq!(
            timespec_until(edge, low),
            Duration::new(u64::MAX - 1, 999_999_999)
        );
        assert_eq!(timespec_until(low, edge), Duration::ZERO);
        assert_eq!(
            timespec_until(TimeSpec::new(5, 100), TimeSpec::new(4, 999_999_999)),
            Duration::from_nanos(101)
        );
        assert_eq!(timespec_after(edge, Duration::from_nanos(1)), None);
        assert_eq!(
            timespec_after(TimeSpec::new(1, 999_999_999), Duration::from_nanos(2)),
            Some(TimeSpec::new(2, 1))
        );
        assert_eq!(
            Deadline::after(Some(Duration::MAX)).unwrap(),
            Deadline::Never
        );
    }

    #[test]
    fn counts_try_wait_timeout_and_guard() {
        let s = Semaphore::new(2).unwrap();
        assert_eq!(s.value().unwrap(), 2);
        {
            let _a = s.acquire().unwrap();
            let _b = s.acquire().unwrap();
            assert_eq!(s.value().unwrap(), 0);
            assert!(!s.try_wait().unwrap());
            assert!(!s.wait_timeout(Duration::from_millis(20)).unwrap());
            assert!(s.acquire_timeout(Duration::ZERO).unwrap().is_none());
        }
        assert_eq!(s.value().unwrap(), 2, "guards posted back");
        assert!(s.try_wait().unwrap());
        s.post().unwrap();
        assert!(Semaphore::new(VALUE_MAX + 1).is_err());
    }

    #[test]
    fn a_timeout_too_large_for_the_clock_waits_for_ever() {
        for huge in [Duration::MAX, Duration::from_secs(u64::MAX / 2)] {
            assert_eq!(
                Deadline::after(Some(huge)).unwrap(),
                Deadline::Never,
                "{huge:?}"
            );
        }
        // 300 years fits a timespec but not i64 nanoseconds: a real deadline.
        let far = Duration::from_secs(300 * 365 * 86_400);
        assert!(matches!(
            Deadline::after(Some(far)).unwrap(),
            Deadline::At(_)
        ));
        // And a wait with it takes the count instead of timing out at once.
        let s = std::sync::Arc::new(Semaphore::new(0).unwrap());
        let poster = {
            let s = std::sync::Arc::clone(&s);
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(50));
                s.post().unwrap();
            })
        };
        assert!(
            s.wait_timeout(Duration::MAX).unwrap(),
            "a count, not a timeout"
        );
        poster.join().unwrap();
        // A real deadline 35 000 years away: the kernel takes it too.
        s.post().unwrap();
        assert!(s.wait_timeout(Duration::from_secs(1 << 40)).unwrap());
        let q = crate::queue::Queue::new(1, 8).unwrap();
        q.put(b"x").unwrap();
        assert_eq!(q.get_timeout(Duration::MAX).unwrap(), Some(b"x".to_vec()));
    }

    #[test]
    fn a_post_from_another_thread_ends_a_timed_wait() {
        let s = std::sync::Arc::new(Semaphore::new(0).unwrap());
        let t = {
            let s = std::sync::Arc::clone(&s);
            std::thread::spawn(move || s.post().unwrap())
        };
        assert!(s.wait_timeout(Duration::from_secs(30)).unwrap());
        t.join().unwrap();
    }

    #[test]
    fn a_wait_that_outlasts_its_spin_sleeps_until_the_post() {
        // Posted long after the spin has given up: the waiter must have
        // gone on to sleep in sem_wait, and the post must wake it.
        let s = std::sync::Arc::new(Semaphore::new(0).unwrap());
        let t = {
            let s = std::sync::Arc::clone(&s);
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(50));
                s.post().unwrap()
            })
        };
        let t0 = std::time::Instant::now();
        s.wait().unwrap();
        let waited = t0.elapsed();
        t.join().unwrap();
        assert!(
            waited >= Duration::from_millis(40),
            "returned before the post: {waited:?}"
        );
        assert_eq!(s.value().unwrap(), 0);
    }

    #[test]
    fn spinning_waiters_never_take_more_than_the_count() {
        // Four threads read-modify-write a counter under Semaphore(1): a
        // count taken twice would lose updates; every wait spins first.
        use std::sync::atomic::AtomicU64;
        let s = std::sync::Arc::new(Semaphore::new(1).unwrap());
        let counter = std::sync::Arc::new(AtomicU64::new(0));
        let inside = std::sync::Arc::new(AtomicU32::new(0));
        let per = 20_000;
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let (s, counter, inside) = (s.clone(), counter.clone(), inside.clone());
                std::thread::spawn(move || {
                    for _ in 0..per {
                        let _held = s.acquire().unwrap();
                        assert_eq!(inside.fetch_add(1, Ordering::SeqCst), 0, "two holders");
                        let v = counter.load(Ordering::Relaxed);
                        counter.store(v + 1, Ordering::Relaxed);
                        inside.fetch_sub(1, Ordering::SeqCst);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(counter.load(Ordering::Relaxed), 4 * per);
        assert_eq!(s.value().unwrap(), 1);
    }

    #[test]
    fn hostile_or_damaged_named_semaphore_files_are_refused() {
        use std::os::unix::fs::PermissionsExt;
        let file = |n: &str| format!("/dev/shm/sem.{}", &n[1..]);
        // Empty, short, garbage: bad data, never SIGBUS or an abort.
        for (bytes, why) in [
            (vec![], "empty"),
            (vec![0u8; 8], "short"),
            (vec![0xa5u8; 32], "garbage"),
        ] {
            let name = unique();
            std::fs::write(file(&name), &bytes).unwrap();
            std::fs::set_permissions(file(&name), std::fs::Permissions::from_mode(0o600)).unwrap();
            let e = NamedSemaphore::open(&name).unwrap_err();
            assert_eq!(e.kind(), crate::ErrorKind::BadData, "{why}: {e}");
            std::fs::remove_file(file(&name)).unwrap();
        }
        // A good semaphore that others may write: refused.
        let name = unique();
        drop(NamedSemaphore::create(&name, 1).unwrap());
        std::fs::set_permissions(file(&name), std::fs::Permissions::from_mode(0o666)).unwrap();
        assert_eq!(
            NamedSemaphore::open(&name).unwrap_err().kind(),
            crate::ErrorKind::PermissionDenied
        );
        // Another user's (made as nobody when we are root).
        if nix::unistd::geteuid().is_root() {
            std::fs::remove_file(file(&name)).unwrap();
            let made = std::process::Command::new("setpriv")
                .args([
                    "--reuid=65534",
                    "--regid=65534",
                    "--clear-groups",
                    "sh",
                    "-c",
                ])
                .arg(format!(
                    "head -c 32 /dev/zero > {}; chmod 600 {0}",
                    file(&name)
                ))
                .status();
            if made.is_ok_and(|s| s.success()) {
                assert_eq!(
                    NamedSemaphore::open(&name).unwrap_err().kind(),
                    crate::ErrorKind::PermissionDenied
                );
            }
        }
        let _ = std::fs::remove_file(file(&name));
    }

    #[test]
    fn unlink_removes_a_glibc_temporary_link_left_behind() {
        use std::os::unix::fs::MetadataExt;
        let name = unique();
        let s = NamedSemaphore::create(&name, 1).unwrap();
        let path = format!("/dev/shm/sem.{}", &name[1..]);
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(meta.nlink(), 1, "created whole, no temporary name");
        // What sem_open leaves when killed between link and unlink.
        let temp = format!("/dev/shm/sem.T{:05}", std::process::id() % 100_000);
        std::fs::hard_link(&path, &temp).unwrap();
        let removed = NamedSemaphore::unlink(&name).unwrap();
        assert_eq!(removed, [std::path::PathBuf::from(&temp)]);
        assert!(!std::path::Path::new(&temp).exists());
        assert!(!std::path::Path::new(&path).exists());
        drop(s);
    }

    #[test]
    fn create_returns_its_own_semaphore_beside_an_unlink_and_a_new_one() {
        // Another thread keeps unlinking the name and making its own
        // semaphore (value 7) under it. A create here must return the
        // semaphore it made (value 3), whatever happens to the name right
        // after its link, and open_or_create must end with a semaphore,
        // never with NotFound. Bounded to a second.
        use std::sync::Arc;
        use std::sync::atomic::AtomicBool;
        use std::time::Instant;
        let name = unique();
        let stop = Arc::new(AtomicBool::new(false));
        let other = {
            let (stop, name) = (stop.clone(), name.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let _ = NamedSemaphore::unlink(&name);
                    let _ = NamedSemaphore::create(&name, 7);
                }
            })
        };
        let t0 = Instant::now();
        let (mut rounds, mut made, mut bad) = (0, 0, Vec::new());
        while t0.elapsed() < Duration::from_secs(1) && bad.is_empty() {
            rounds += 1;
            match NamedSemaphore::create(&name, 3) {
                Ok(s) => {
                    made += 1;
                    let v = s.value().unwrap();
                    if v != 3 {
                        bad.push(format!("create returned a semaphore of value {v}"));
                    }
                }
                Err(e) if e.kind() == crate::ErrorKind::AlreadyExists => {}
                Err(e) => bad.push(format!("create: {e}")),
            }
            match NamedSemaphore::open_or_create(&name, 3) {
                Ok((s, created)) => {
                    let v = s.value().unwrap();
                    if v != 3 && (created || v != 7) {
                        bad.push(format!("open_or_create (created {created}): value {v}"));
                    }
                }
                Err(e) => bad.push(format!("open_or_create: {:?}: {e}", e.kind())),
            }
        }
        stop.store(true, Ordering::Relaxed);
        other.join().unwrap();
        let _ = NamedSemaphore::unlink(&name);
        assert!(bad.is_empty(), "after {rounds} rounds: {bad:?}");
        assert!(made > 0, "no create won in {rounds} rounds");
    }

    /// The other half of the test below: run in a process of its own,
    /// under strace, never on its own (it returns at once without its
    /// names).
    /// Run by [`damaged_bytes_are_an_error_not_an_abort`] in a process of
    /// its own: where the bytes reach glibc, it aborts the process.
    #[test]
    #[ignore = "run in a process of its own by damaged_bytes_are_an_error_not_an_abort"]
    fn damaged_bytes_in_a_process_of_its_own() {
        let Ok(name) = std::env::var("PK_TEST_DAMAGED_SEM") else {
            return;
        };
        let sem = NamedSemaphore::create(&name, 1).unwrap();
        // The file behind it, as pk-shm or any process of the same user
        // can open and write it.
        let file = crate::shm::Segment::open(&format!("/sem.{}", &name[1..])).unwrap();
        let damaged = |what: &str, r: Result<()>| {
            let e = r.expect_err(what);
            assert_eq!(e.kind(), crate::ErrorKind::BadData, "{what}: {e}");
        };
        let guard = sem.acquire().unwrap();
        // glibc's `private` word (offset 8) is 128 in every process-shared
        // semaphore; with another word its futex calls fail, and glibc
        // then aborts the process.
        file.store(8, 0x7fff_ffff).unwrap();
        damaged(
            "wait",
            sem.wait_timeout(Duration::from_millis(50)).map(drop),
        );
        damaged("try_wait", sem.try_wait().map(drop));
        damaged("post", sem.post());
        damaged("value", sem.value().map(drop));
        damaged(
            "wait_or_stop",
            sem.wait_or_stop(Deadline::Never, &never).map(drop),
        );
        // A guard dropped meanwhile gives nothing back (it cannot say
        // why): the count stays taken.
        drop(guard);
        file.store(8, 128).unwrap();
        assert_eq!(sem.value().unwrap(), 0, "mended: the count still taken");
        // A value above SEM_VALUE_MAX is damage too.
        file.store(0, 0xffff_ffff).unwrap();
        damaged("post over a bad value", sem.post());
        file.store(0, 0).unwrap();
        sem.post().unwrap();
        assert!(sem.wait_timeout(Duration::from_millis(50)).unwrap());
        NamedSemaphore::unlink(&name).unwrap();
    }

    #[test]
    fn damaged_bytes_are_an_error_not_an_abort() {
        let name = unique();
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "sem::tests::damaged_bytes_in_a_process_of_its_own",
            ])
            .args(["--ignored", "--nocapture", "--test-threads=1", "-q"])
            .env("PK_TEST_DAMAGED_SEM", &name)
            .output()
            .unwrap();
        let _ = NamedSemaphore::unlink(&name);
        assert!(
            out.status.success(),
            "{:?}\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    #[test]
    #[ignore = "run under strace by create_keeps_its_own_semaphore_when_the_name_changes_at_once"]
    fn create_whose_link_returns_late() {
        let Ok(names) = std::env::var("PK_TEST_SLOW_LINK") else {
            return;
        };
        let (a, b) = names.split_once(' ').expect("two names");
        match NamedSemaphore::create(a, 3) {
            Ok(s) => println!("create: value {}", s.value().unwrap()),
            Err(e) => println!("create: {e}"),
        }
        match NamedSemaphore::open_or_create(b, 3) {
            Ok((s, created)) => println!(
                "open_or_create: created {created} value {}",
                s.value().unwrap()
            ),
            Err(e) => println!("open_or_create: {e}"),
        }
    }

    #[test]
    fn create_keeps_its_own_semaphore_when_the_name_changes_at_once() {
        // strace holds back the return of each linkat (the name is there,
        // the creator not yet told): meanwhile this test unlinks the
        // first name and makes its own semaphore (value 7) under it, and
        // unlinks the second. The creator must come back with the
        // semaphores it made (value 3), not with the one of value 7 nor
        // with NotFound.
        use std::process::{Command, Stdio};
        if Command::new("strace").arg("-V").output().is_err() {
            eprintln!("skipped: strace is not installed");
            return;
        }
        let (a, b) = (unique(), unique());
        let child = Command::new("timeout")
            .args(["30", "strace", "-f", "-qq", "-o", "/dev/null"])
            .args([
                "-e",
                "trace=linkat",
                "-e",
                "inject=linkat:delay_exit=300000",
            ])
            .arg(std::env::current_exe().unwrap())
            .args(["--exact", "sem::tests::create_whose_link_returns_late"])
            .args(["--ignored", "--nocapture", "--test-threads=1", "-q"])
            .env("PK_TEST_SLOW_LINK", format!("{a} {b}"))
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let linked = |name: &str| {
            let path = format!("/dev/shm/sem.{}", &name[1..]);
            let t0 = std::time::Instant::now();
            while !std::path::Path::new(&path).exists() {
                assert!(t0.elapsed() < Duration::from_secs(20), "{name} never made");
                std::thread::sleep(Duration::from_micros(200));
            }
        };
        linked(&a);
        NamedSemaphore::unlink(&a).unwrap();
        let theirs = NamedSemaphore::create(&a, 7).unwrap();
        linked(&b);
        NamedSemaphore::unlink(&b).unwrap();
        let out = child.wait_with_output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        let _ = NamedSemaphore::unlink(&a);
        let _ = NamedSemaphore::unlink(&b);
        assert!(out.status.success(), "{text}");
        assert!(text.contains("create: value 3\n"), "{text}");
        assert!(
            text.contains("open_or_create: created true value 3\n"),
            "{text}"
        );
        assert_eq!(theirs.value().unwrap(), 7, "the other semaphore untouched");
    }

    #[test]
    fn python_multiprocessing_sees_the_same_semaphore() {
        // Python's SemLock is glibc's sem_open: a semaphore made here and
        // one made there are one and the same count on both sides.
        let py = |code: String| {
            std::process::Command::new("timeout")
                .args(["20", "python3", "-c", &code])
                .output()
        };
        if !py("pass".into()).is_ok_and(|o| o.status.success()) {
            eprintln!("skipped: python3 (or timeout) is not installed");
            return;
        }
        let value_then_take = |name: &str| {
            let out = py(format!(
                "import _multiprocessing as m\n\
                 s = m.SemLock._rebuild(0, 1, 100, {name:?})\n\
                 print(s._get_value())\n\
                 assert s.acquire(False)\n"
            ))
            .unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            String::from_utf8_lossy(&out.stdout).trim().to_string()
        };
        // Ours, seen and taken from by Python.
        let name = unique();
        let ours = NamedSemaphore::create(&name, 2).unwrap();
        assert_eq!(value_then_take(&name), "2");
        assert_eq!(ours.value().unwrap(), 1);
        NamedSemaphore::unlink(&name).unwrap();
        // Python's, opened and taken from here, then seen there.
        let name = unique();
        let out = py(format!(
            "import _multiprocessing as m\nm.SemLock(1, 5, 100, {name:?}, False)\n"
        ))
        .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let theirs = NamedSemaphore::open(&name).unwrap();
        assert_eq!(theirs.value().unwrap(), 5);
        assert!(theirs.try_wait().unwrap());
        assert_eq!(value_then_take(&name), "4");
        assert_eq!(theirs.value().unwrap(), 3);
        NamedSemaphore::unlink(&name).unwrap();
    }

    #[test]
    fn named_create_open_reset_unlink() {
        let name = unique();
        let file = format!("/dev/shm/sem.{}", &name[1..]);
        let a = NamedSemaphore::create(&name, 3).unwrap();
        assert!(std::path::Path::new(&file).exists());
        assert_eq!(
            NamedSemaphore::create(&name, 3).unwrap_err().errno(),
            Some(Errno::EEXIST)
        );
        let (b, created) = NamedSemaphore::open_or_create(&name, 9).unwrap();
        assert!(!created, "an existing semaphore keeps its value");
        assert!(a.try_wait().unwrap());
        assert!(a.try_wait().unwrap());
        assert_eq!(b.value().unwrap(), 1, "the same semaphore");
        assert_eq!(b.reset(3).unwrap(), 1);
        assert_eq!(a.value().unwrap(), 3);
        assert_eq!(b.reset(1).unwrap(), 3);
        assert_eq!(a.value().unwrap(), 1);
        NamedSemaphore::unlink(&name).unwrap();
        assert!(!std::path::Path::new(&file).exists());
        assert_eq!(a.value().unwrap(), 1, "still usable after unlink");
        assert_eq!(
            NamedSemaphore::open(&name).unwrap_err().kind(),
            crate::ErrorKind::NotFound
        );
        for bad in ["jobs", "/a/b", "/"] {
            assert_eq!(
                NamedSemaphore::open(bad).unwrap_err().kind(),
                crate::ErrorKind::InvalidInput
            );
        }
    }
}
