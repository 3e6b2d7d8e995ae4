//! POSIX semaphores (sem_overview(7)): nix does not wrap them, so these are
//! the thin libc calls. Each function makes exactly one call and returns its
//! errno; retrying on EINTR is the caller's decision ([`crate::sem`]).

use std::ffi::CStr;
use std::ptr::NonNull;

use nix::errno::Errno;
use nix::sys::time::TimeSpec;

use crate::sys::shm::Mapping;

/// The address of a live `sem_t`: one that `sem_init` initialised inside a
/// shared [`Mapping`], or that `sem_open` returned.
///
/// Invariant (kept by every holder in this crate): the memory stays mapped
/// for as long as the `Sem` is used — [`crate::sem::Semaphore`] and
/// [`crate::queue::Queue`] hold the `Mapping` next to it, and
/// [`crate::sem::NamedSemaphore`] holds an [`OpenSem`], closed only on drop.
#[derive(Debug)]
pub struct Sem(NonNull<libc::sem_t>);

// SAFETY: a sem_t is designed for concurrent use by many threads and (when
// process-shared) many processes; the pointer is only passed to sem_* calls.
unsafe impl Send for Sem {}
// SAFETY: as for Send: every sem_* call is thread-safe.
unsafe impl Sync for Sem {}

impl Sem {
    /// sem_init(3) with pshared=1 at byte offset `off` of `map`: a
    /// semaphore shared by every process that maps the same memory. The
    /// `sem_t` is never moved afterwards (it lives in the mapping, not in
    /// any Rust value).
    pub fn init(map: &Mapping, off: usize, value: u32) -> Result<Sem, Errno> {
        let p = map.sem_addr(off);
        // SAFETY: `p` points at size_of::<sem_t>() writable, aligned bytes
        // inside a live MAP_SHARED mapping (checked by sem_addr); nobody
        // uses this sem_t yet, since the caller just laid it out.
        let r = unsafe { libc::sem_init(p.as_ptr(), 1, value) };
        if r == -1 {
            return Err(Errno::last());
        }
        Ok(Sem(p))
    }

    /// sem_open(3): open the named semaphore, creating it with `mode` and
    /// `value` when `create` is given (O_CREAT | O_EXCL: it must not exist).
    pub fn open(name: &CStr, create: Option<(u32, u32)>) -> Result<OpenSem, Errno> {
        let p = match create {
            Some((mode, value)) => {
                let flags = libc::O_CREAT | libc::O_EXCL;
                // SAFETY: `name` is a NUL-terminated string that outlives
                // the call; with O_CREAT sem_open reads exactly two more
                // variadic arguments, a mode_t (promoted to unsigned int)
                // and an unsigned int value, which we pass.
                unsafe {
                    libc::sem_open(
                        name.as_ptr(),
                        flags,
                        mode as libc::c_uint,
                        value as libc::c_uint,
                    )
                }
            }
            // SAFETY: `name` is NUL-terminated and outlives the call;
            // without O_CREAT no variadic argument is read.
            None => unsafe { libc::sem_open(name.as_ptr(), 0) },
        };
        if p == libc::SEM_FAILED {
            return Err(Errno::last());
        }
        NonNull::new(p)
            .map(|p| OpenSem(Sem(p)))
            .ok_or(Errno::EINVAL)
    }

    /// sem_wait(3), once (EINTR is returned, not retried).
    #[inline]
    pub fn wait(&self) -> Result<(), Errno> {
        // SAFETY: `self.0` is a live sem_t (the type's invariant).
        Errno::result(unsafe { libc::sem_wait(self.0.as_ptr()) }).map(drop)
    }

    /// sem_trywait(3): EAGAIN when the value is 0.
    pub fn try_wait(&self) -> Result<(), Errno> {
        // SAFETY: `self.0` is a live sem_t.
        Errno::result(unsafe { libc::sem_trywait(self.0.as_ptr()) }).map(drop)
    }

    /// Wait until the absolute CLOCK_MONOTONIC time `deadline`, once:
    /// ETIMEDOUT when it passes, EINTR on a signal. Uses sem_clockwait
    /// (glibc 2.30+), so setting the wall clock does not move the deadline.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    pub fn wait_until(&self, deadline: TimeSpec) -> Result<(), Errno> {
        unsafe extern "C" {
            // glibc 2.30+: int sem_clockwait(sem_t *, clockid_t, const struct timespec *);
            fn sem_clockwait(
                sem: *mut libc::sem_t,
                clock: libc::clockid_t,
                abstime: *const libc::timespec,
            ) -> libc::c_int;
        }
        let ts: libc::timespec = *deadline.as_ref();
        // SAFETY: `self.0` is a live sem_t; `ts` is a valid timespec on our
        // stack for the duration of the call; the declaration above matches
        // glibc's prototype.
        Errno::result(unsafe { sem_clockwait(self.0.as_ptr(), libc::CLOCK_MONOTONIC, &ts) })
            .map(drop)
    }

    /// Wait until the absolute CLOCK_MONOTONIC time `deadline`, once. Without
    /// sem_clockwait, the remaining time is converted to a CLOCK_REALTIME
    /// deadline for sem_timedwait (a wall-clock step during the wait moves it).
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    pub fn wait_until(&self, deadline: TimeSpec) -> Result<(), Errno> {
        use nix::time::{ClockId, clock_gettime};
        let now = clock_gettime(ClockId::CLOCK_MONOTONIC)?;
        let left = if deadline > now {
            deadline - now
        } else {
            TimeSpec::new(0, 0)
        };
        let abs = clock_gettime(ClockId::CLOCK_REALTIME)? + left;
        let ts: libc::timespec = *abs.as_ref();
        // SAFETY: `self.0` is a live sem_t; `ts` is valid for the call.
        Errno::result(unsafe { libc::sem_timedwait(self.0.as_ptr(), &ts) }).map(drop)
    }

    /// sem_post(3): EOVERFLOW at SEM_VALUE_MAX.
    #[inline]
    pub fn post(&self) -> Result<(), Errno> {
        // SAFETY: `self.0` is a live sem_t.
        Errno::result(unsafe { libc::sem_post(self.0.as_ptr()) }).map(drop)
    }

    /// sem_getvalue(3): the current value (never negative on Linux).
    pub fn value(&self) -> Result<i32, Errno> {
        let mut v: libc::c_int = 0;
        // SAFETY: `self.0` is a live sem_t; `v` is a writable int.
        Errno::result(unsafe { libc::sem_getvalue(self.0.as_ptr(), &mut v) })?;
        Ok(v)
    }
}

/// A semaphore from sem_open: sem_close(3) on drop, exactly once, after
/// which nobody can reach the pointer (the `Sem` is owned here).
#[derive(Debug)]
pub struct OpenSem(Sem);

impl std::ops::Deref for OpenSem {
    type Target = Sem;
    fn deref(&self) -> &Sem {
        &self.0
    }
}

impl Drop for OpenSem {
    fn drop(&mut self) {
        // SAFETY: the pointer came from sem_open and is closed only here,
        // once; `self` is being dropped, so no borrow of the inner Sem
        // (a SemGuard borrows its owner) can outlive the close.
        unsafe { libc::sem_close((self.0).0.as_ptr()) };
    }
}

/// sem_unlink(3): remove the name; processes that have it open keep using it.
pub fn unlink(name: &CStr) -> Result<(), Errno> {
    // SAFETY: `name` is NUL-terminated and outlives the call.
    Errno::result(unsafe { libc::sem_unlink(name.as_ptr()) }).map(drop)
}

/// SEM_VALUE_MAX on Linux.
pub const VALUE_MAX: u32 = i32::MAX as u32;

/// The last signal caught by [`interrupt_on`]'s handler (0: none yet).
static CAUGHT: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(0);

extern "C" fn record_signal(sig: libc::c_int) {
    // An atomic store is async-signal-safe.
    CAUGHT.store(sig, std::sync::atomic::Ordering::SeqCst);
}

/// Catch each of `sigs` that is not ignored with a handler that only records it (see
/// [`take_caught`]) and that is installed *without* SA_RESTART, so a
/// blocking sem_wait, sem_clockwait or waitpid returns EINTR and the caller
/// can decide what the signal means. (signal-hook always sets SA_RESTART,
/// under which Linux restarts those waits and the signal goes unnoticed.)
pub fn interrupt_on(sigs: &[nix::sys::signal::Signal]) -> Result<(), Errno> {
    use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, sigaction};
    let action = SigAction::new(
        SigHandler::Handler(record_signal),
        SaFlags::empty(),
        SigSet::empty(),
    );
    for &sig in sigs {
        // SAFETY: the handler only stores into a static atomic, which is
        // async-signal-safe and touches no lock, allocation or other state.
        let old = unsafe { sigaction(sig, &action) }?;
        if old.handler() == SigHandler::SigIgn {
            // Ignored by whoever started us (`cmd &` in a script ignores
            // SIGINT and SIGQUIT): keep it ignored, so the command inherits
            // that across exec as it would without us.
            // SAFETY: restoring SIG_IGN installs no handler at all.
            unsafe { sigaction(sig, &old) }?;
        }
    }
    Ok(())
}

/// The signal recorded by [`interrupt_on`]'s handler since the last call,
/// cleared; 0 when none.
pub fn take_caught() -> i32 {
    CAUGHT.swap(0, std::sync::atomic::Ordering::SeqCst)
}

/// The signal recorded so far, left in place; 0 when none.
pub fn peek_caught() -> i32 {
    CAUGHT.load(std::sync::atomic::Ordering::SeqCst)
}
