//! [`Mutex`]: data behind a [`Lock`](super::Lock), with `lock_timeout`, which
//! `std::sync::Mutex` lacks.
//!
//! The value sits in a cell (`src/sys/cell.rs`, where the crate's `unsafe`
//! lives) that hands it out only against a guard of the mutex's own
//! [`Lock`](super::Lock); every wait is the [`Lock`](super::Lock)'s: a short spin with a growing
//! pause, then a private futex.

use std::fmt;
use std::marker::PhantomData;
use std::ops::{Deref, DerefMut};
use std::time::Duration;

use super::lock::LockGuard;
use crate::sys::cell::LockedCell;

/// A value shared between threads, one at a time: `std::sync::Mutex`
/// built on [`Lock`](super::Lock), plus [`Mutex::lock_timeout`] (Python's
/// `acquire(timeout=…)` for data).
///
/// Two threads taking turns at one cost less than at a glibc
/// `pthread_mutex_t` or a `std::sync::Mutex` (`thread_mutex_2t_ns_per_op`
/// under Performance in the README): a taken one is looked at again with
/// a growing pause instead of a steady spin, and a release makes a system
/// call only when a thread may be asleep on it.
///
/// No poisoning: a thread that panics while holding the guard releases it
/// as it unwinds, and the next holder sees the value as that thread left
/// it (as with Python's locks, and `parking_lot`). Like std's, it is not
/// reentrant: a thread that locks it twice waits for itself (use
/// [`lock_timeout`](Mutex::lock_timeout) to find out instead of hanging).
/// A guard may be sent to another thread and dropped there. Not
/// `RefUnwindSafe` (std's is, through poisoning): to use one inside
/// `catch_unwind`, wrap it in `AssertUnwindSafe`.
///
/// A `Mutex` is shared between threads when its value may be sent between
/// them (`T: Send`), as std's is; a value that may not, may not be locked
/// from two threads:
///
/// ```compile_fail
/// fn shared<T: Sync>() {}
/// shared::<posixkit::thread::Mutex<std::rc::Rc<u8>>>();
/// ```
///
/// ```compile_fail
/// fn sent<T: Send>() {}
/// sent::<posixkit::thread::Mutex<std::rc::Rc<u8>>>();
/// ```
///
/// ```
/// use posixkit::thread::Mutex;
/// use std::time::Duration;
/// let m = Mutex::new(Vec::new());
/// m.lock().push(1);
/// let held = m.lock();
/// // Taken: a second lock, even by this thread, gives up after 1 ms.
/// assert!(m.lock_timeout(Duration::from_millis(1)).is_none());
/// drop(held);
/// assert_eq!(*m.try_lock().unwrap(), [1]);
/// assert_eq!(m.into_inner(), [1]);
/// ```
pub struct Mutex<T: ?Sized> {
    cell: LockedCell<T>,
}

/// A locked [`Mutex`]: dereference it for the value; dropping it unlocks.
///
/// Unlike std's, a guard may be sent to another thread (when `T` is
/// `Send`) and dropped there: a [`Lock`](super::Lock) has no owner thread.
/// It is shared between threads only when `T` is both `Send` and `Sync`,
/// since each sharer reads the value:
///
/// ```compile_fail
/// fn shared<T: Sync>() {}
/// shared::<posixkit::thread::MutexGuard<'static, std::cell::Cell<u8>>>();
/// ```
///
/// ```compile_fail
/// fn sent<T: Send>() {}
/// sent::<posixkit::thread::MutexGuard<'static, std::rc::Rc<u8>>>();
/// ```
#[must_use = "the mutex is unlocked as soon as the guard is dropped"]
pub struct MutexGuard<'a, T: ?Sized> {
    cell: &'a LockedCell<T>,
    held: LockGuard<'a>,
    _value: PhantomData<&'a mut T>,
}

impl<T> Mutex<T> {
    /// An unlocked mutex holding `value`.
    pub const fn new(value: T) -> Mutex<T> {
        Mutex {
            cell: LockedCell::new(value),
        }
    }

    /// The value, taking the mutex apart (no lock needed: nobody else can
    /// hold it).
    pub fn into_inner(self) -> T {
        self.cell.into_inner()
    }
}

impl<T: ?Sized> Mutex<T> {
    /// Lock it, waiting as long as it takes.
    pub fn lock(&self) -> MutexGuard<'_, T> {
        self.guard(self.cell.lock().acquire())
    }

    /// Lock it, waiting at most `timeout`; `None` when the time ran out.
    /// A zero timeout is [`try_lock`](Mutex::try_lock).
    pub fn lock_timeout(&self, timeout: Duration) -> Option<MutexGuard<'_, T>> {
        self.cell
            .lock()
            .acquire_timeout(timeout)
            .map(|g| self.guard(g))
    }

    /// Lock it only if nobody holds it.
    pub fn try_lock(&self) -> Option<MutexGuard<'_, T>> {
        self.cell.lock().try_acquire().map(|g| self.guard(g))
    }

    /// Whether some thread holds it now (stale as soon as it is read).
    pub fn is_locked(&self) -> bool {
        self.cell.lock().locked()
    }

    /// The value, through a unique borrow (no lock needed).
    pub fn get_mut(&mut self) -> &mut T {
        self.cell.get_unique()
    }

    fn guard<'a>(&'a self, held: LockGuard<'a>) -> MutexGuard<'a, T> {
        MutexGuard {
            cell: &self.cell,
            held,
            _value: PhantomData,
        }
    }
}

impl<T: Default> Default for Mutex<T> {
    fn default() -> Mutex<T> {
        Mutex::new(T::default())
    }
}

impl<T> From<T> for Mutex<T> {
    fn from(value: T) -> Mutex<T> {
        Mutex::new(value)
    }
}

impl<T: ?Sized + fmt::Debug> fmt::Debug for Mutex<T> {
    /// Shows the value only if the mutex is free now (it never waits).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Mutex");
        match self.try_lock() {
            Some(g) => d.field("data", &&*g),
            None => d.field("data", &format_args!("<locked>")),
        };
        d.finish()
    }
}

impl<T: ?Sized> Deref for MutexGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        self.cell.get(&self.held)
    }
}

impl<T: ?Sized> DerefMut for MutexGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        self.cell.get_mut(&mut self.held)
    }
}

impl<T: ?Sized + fmt::Debug> fmt::Debug for MutexGuard<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&**self, f)
    }
}

impl<T: ?Sized + fmt::Display> fmt::Display for MutexGuard<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&**self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Instant;

    fn send_and_sync<T: Send + Sync>() {}
    fn send<T: Send>() {}

    #[test]
    fn auto_traits() {
        // Compiled, not run: a Mutex of a Send value is shared between
        // threads; a guard is sent (and dropped) anywhere, and shared for
        // a Send + Sync value (the compile_fail examples on the types
        // check the refusals).
        send_and_sync::<Mutex<std::cell::Cell<u8>>>();
        send::<MutexGuard<'static, std::cell::Cell<u8>>>();
        send_and_sync::<MutexGuard<'static, Vec<u8>>>();
    }

    #[test]
    fn a_guard_dropped_on_another_thread_unlocks() {
        let m = Arc::new(Mutex::new(1));
        let g = m.lock();
        std::thread::scope(|s| {
            s.spawn(move || drop(g));
        });
        assert_eq!(*m.try_lock().expect("unlocked by the other thread"), 1);
    }

    #[test]
    fn no_lost_update_between_four_threads() {
        let m = Arc::new(Mutex::new(0u64));
        let per = 50_000;
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let m = Arc::clone(&m);
                std::thread::spawn(move || {
                    for _ in 0..per {
                        // A read, then a write: two holders at once would
                        // lose updates.
                        let mut g = m.lock();
                        let v = *g;
                        std::hint::black_box(&v);
                        *g = v + 1;
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(*m.lock(), 4 * per);
    }

    #[test]
    fn a_held_mutex_refuses_try_and_times_out() {
        let m = Mutex::new(5);
        let g = m.lock();
        assert!(m.is_locked());
        assert!(m.try_lock().is_none());
        let t0 = Instant::now();
        assert!(m.lock_timeout(Duration::from_millis(30)).is_none());
        assert!(t0.elapsed() >= Duration::from_millis(30));
        assert!(m.lock_timeout(Duration::ZERO).is_none());
        drop(g);
        assert!(!m.is_locked());
        assert_eq!(*m.lock_timeout(Duration::ZERO).unwrap(), 5);
    }

    #[test]
    fn a_waiter_gets_it_when_another_thread_unlocks() {
        let m = Arc::new(Mutex::new(String::new()));
        let g = m.lock();
        let taken = Arc::new(AtomicBool::new(false));
        let (m2, taken2) = (Arc::clone(&m), Arc::clone(&taken));
        let waiter = std::thread::spawn(move || {
            let mut g = m2
                .lock_timeout(Duration::from_secs(30))
                .expect("unlocked well within 30 s");
            g.push_str("waiter");
            taken2.store(true, Ordering::SeqCst);
        });
        // Long enough for the waiter to give up spinning and sleep.
        std::thread::sleep(Duration::from_millis(50));
        assert!(!taken.load(Ordering::SeqCst), "got in while it was held");
        drop(g);
        waiter.join().unwrap();
        assert_eq!(*m.lock(), "waiter");
    }

    #[test]
    fn a_panic_while_held_leaves_the_value_and_frees_it() {
        let m = Arc::new(Mutex::new(vec![1]));
        let m2 = Arc::clone(&m);
        let r = std::thread::spawn(move || {
            let mut g = m2.lock();
            g.push(2);
            panic!("while holding it");
        })
        .join();
        assert!(r.is_err());
        assert!(!m.is_locked());
        assert_eq!(*m.lock(), [1, 2]);
        let m = Arc::into_inner(m).unwrap();
        assert_eq!(m.into_inner(), [1, 2]);
    }

    #[test]
    fn debug_does_not_wait_on_a_held_mutex() {
        let mut m = Mutex::new(7);
        *m.get_mut() += 1;
        assert_eq!(format!("{m:?}"), "Mutex { data: 8 }");
        let g = m.lock();
        assert_eq!(format!("{g:?} {g}"), "8 8");
        assert_eq!(format!("{m:?}"), "Mutex { data: <locked> }");
    }

    #[test]
    fn unsized_values_work() {
        let m: &Mutex<[u8]> = &Mutex::new([1u8, 2, 3]);
        m.lock()[0] = 9;
        assert_eq!(&*m.lock(), &[9, 2, 3]);
    }
}
