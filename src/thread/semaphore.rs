//! [`Semaphore`]: Python's `threading.Semaphore` and, made with
//! [`Semaphore::bounded`], `threading.BoundedSemaphore`. For threads of one
//! process; [`crate::sem`] has the POSIX semaphores processes share.

use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use super::wait_until;
use crate::error::{Error, Result};
use crate::process::deadline_after;

/// A counter threads take from (`acquire`, waiting while it is 0) and give
/// back to (`release`). Bounded ([`Semaphore::bounded`]), a `release` that
/// would raise it above its initial value is refused: the bug of a
/// release without its acquire shows at once, as Python's
/// `BoundedSemaphore` raises `ValueError`.
///
/// ```
/// use posixkit::thread::Semaphore;
/// let sem = Semaphore::bounded(2);
/// let a = sem.permit(); // with sem:
/// sem.acquire();
/// assert_eq!(sem.value(), 0);
/// assert!(!sem.try_acquire());
/// sem.release()?;
/// drop(a);
/// let e = sem.release().unwrap_err(); // one release too many
/// assert_eq!(e.to_string(), "release(BoundedSemaphore): released too many times");
/// # Ok::<(), posixkit::Error>(())
/// ```
#[derive(Debug)]
#[doc(alias = "BoundedSemaphore")]
pub struct Semaphore {
    value: Mutex<usize>,
    cond: Condvar,
    /// The initial value, for a bounded semaphore.
    bound: Option<usize>,
}

/// One unit taken from a [`Semaphore`] and given back when dropped
/// (`with sem:`).
#[must_use = "the unit is given back as soon as the permit is dropped"]
#[derive(Debug)]
pub struct Permit<'a> {
    sem: &'a Semaphore,
}

impl Semaphore {
    /// `Semaphore(value)`.
    pub const fn new(value: usize) -> Semaphore {
        Semaphore {
            value: Mutex::new(value),
            cond: Condvar::new(),
            bound: None,
        }
    }

    /// `BoundedSemaphore(value)`: [`Semaphore::release`] refuses to go
    /// above `value`.
    pub const fn bounded(value: usize) -> Semaphore {
        Semaphore {
            value: Mutex::new(value),
            cond: Condvar::new(),
            bound: Some(value),
        }
    }

    fn lock(&self) -> MutexGuard<'_, usize> {
        self.value.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn take(&self, deadline: Option<Instant>) -> bool {
        let (mut v, ok) = wait_until(&self.cond, self.lock(), deadline, |v| *v > 0);
        if ok {
            *v -= 1;
        }
        ok
    }

    /// Take a unit, waiting while there is none: `acquire()`.
    pub fn acquire(&self) {
        self.take(None);
    }

    /// Take a unit, waiting at most `timeout`: `acquire(timeout=t)`. False
    /// when the time ran out.
    pub fn acquire_timeout(&self, timeout: Duration) -> bool {
        self.take(deadline_after(timeout))
    }

    /// Take a unit only if there is one: `acquire(blocking=False)`.
    pub fn try_acquire(&self) -> bool {
        self.take(Some(Instant::now()))
    }

    /// Take a unit and hold it until the [`Permit`] is dropped.
    pub fn permit(&self) -> Permit<'_> {
        self.acquire();
        Permit { sem: self }
    }

    /// Give a unit back and wake one waiter: `release()`. Errors: for a
    /// bounded semaphore already at its initial value, `release
    /// (BoundedSemaphore): released too many times` (kind
    /// [`InvalidInput`](crate::ErrorKind::InvalidInput); nothing changes).
    pub fn release(&self) -> Result<()> {
        let mut v = self.lock();
        if self.bound.is_some_and(|b| *v >= b) {
            return Err(Error::invalid(
                "release(BoundedSemaphore)",
                "released too many times",
            ));
        }
        *v = v.saturating_add(1);
        drop(v);
        self.cond.notify_one();
        Ok(())
    }

    /// The units there are now (Python's `_value`).
    pub fn value(&self) -> usize {
        *self.lock()
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        // A permit's unit was taken, so there is room for it: a bounded
        // semaphore cannot refuse it back.
        let _ = self.sem.release();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use crate::ErrorKind;
    use crate::thread::Group;

    #[test]
    fn at_most_value_threads_hold_it_at_once() {
        let sem = Arc::new(Semaphore::bounded(2));
        let inside = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let mut group = Group::new();
        for i in 0..6 {
            let (sem, inside, most) = (Arc::clone(&sem), Arc::clone(&inside), Arc::clone(&most));
            group
                .spawn(format!("S-{i}"), move |gate| {
                    gate.wait();
                    for _ in 0..100 {
                        let _p = sem.permit();
                        let n = inside.fetch_add(1, Ordering::SeqCst) + 1;
                        most.fetch_max(n, Ordering::SeqCst);
                        std::thread::yield_now();
                        inside.fetch_sub(1, Ordering::SeqCst);
                    }
                })
                .unwrap();
        }
        group.join().unwrap();
        let most = most.load(Ordering::SeqCst);
        assert!((1..=2).contains(&most), "{most}");
        assert_eq!(sem.value(), 2);
    }

    #[test]
    fn a_bounded_semaphore_refuses_a_release_too_many_and_a_plain_one_does_not() {
        let b = Semaphore::bounded(1);
        let e = b.release().unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidInput);
        assert_eq!(b.value(), 1, "nothing changed");
        let s = Semaphore::new(1);
        s.release().unwrap();
        assert_eq!(s.value(), 2);
    }

    #[test]
    fn waits_time_out_at_zero() {
        let s = Semaphore::new(0);
        assert!(!s.try_acquire());
        assert!(!s.acquire_timeout(Duration::from_millis(5)));
        s.release().unwrap();
        assert!(s.acquire_timeout(Duration::MAX));
        assert_eq!(s.value(), 0);
    }
}
