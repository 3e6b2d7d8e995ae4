//! [`LockedCell`]: a value that only the holder of one
//! [`Lock`] may reach, the storage of
//! [`thread::Mutex`](crate::thread::Mutex).

use std::cell::UnsafeCell;

use crate::thread::{Lock, LockGuard};

/// A [`Lock`] and the value it guards. The value is reached only through
/// a [`LockGuard`] of this very lock, so at most one thread reaches it at
/// a time, and every access is ordered after the previous holder's by the
/// lock's Acquire take and Release release.
pub(crate) struct LockedCell<T: ?Sized> {
    lock: Lock,
    value: UnsafeCell<T>,
}

// SAFETY: a LockedCell only moves its value with it (T: Send); nothing
// else of it is tied to a thread.
unsafe impl<T: ?Sized + Send> Send for LockedCell<T> {}
// SAFETY: shared between threads, the value is reached only by the thread
// holding the lock's guard (see `get` and `get_mut`), one thread at a
// time, so it is in effect sent from holder to holder: T: Send suffices,
// as for std::sync::Mutex.
unsafe impl<T: ?Sized + Send> Sync for LockedCell<T> {}

impl<T> LockedCell<T> {
    pub(crate) const fn new(value: T) -> LockedCell<T> {
        LockedCell {
            lock: Lock::new(),
            value: UnsafeCell::new(value),
        }
    }

    pub(crate) fn into_inner(self) -> T {
        self.value.into_inner()
    }
}

impl<T: ?Sized> LockedCell<T> {
    /// The lock that guards the value.
    pub(crate) fn lock(&self) -> &Lock {
        &self.lock
    }

    /// Whether `held` is a guard of this cell's lock.
    fn check(&self, held: &LockGuard<'_>) {
        assert!(
            std::ptr::eq(held.lock(), &self.lock),
            "a LockedCell was given the guard of another lock"
        );
    }

    /// The value, for the holder of the lock, for as long as it lends its
    /// guard.
    pub(crate) fn get<'s>(&'s self, held: &'s LockGuard<'_>) -> &'s T {
        self.check(held);
        // SAFETY: `held` is a live guard of this cell's lock (checked just
        // above), so no other thread holds the lock, and no `&mut T` from
        // `get_mut` can exist: it would need `held` borrowed mutably,
        // which the shared borrow here excludes for 's.
        unsafe { &*self.value.get() }
    }

    /// The value, mutably, for the holder of the lock, for as long as it
    /// lends its guard mutably.
    pub(crate) fn get_mut<'s>(&'s self, held: &'s mut LockGuard<'_>) -> &'s mut T {
        self.check(held);
        // SAFETY: `held` is a live guard of this cell's lock (checked just
        // above), so no other thread holds the lock; it is borrowed
        // mutably for 's, so no other `&T` or `&mut T` handed out through
        // it lives during 's.
        unsafe { &mut *self.value.get() }
    }

    /// The value through a unique borrow of the cell: no lock needed.
    pub(crate) fn get_unique(&mut self) -> &mut T {
        self.value.get_mut()
    }
}
