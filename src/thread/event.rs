//! [`Event`], Python's `threading.Event`, and [`StopFlag`], a flag one
//! thread raises to ask others to stop.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// `threading.Event`: a flag that threads wait on, on a `Mutex` and a
/// `Condvar`. `set` wakes every waiter; the flag stays set until `clear`.
/// The mutex also counts the waiters, so `set` with nobody waiting (every
/// thread's end sets one) makes no futex wake-up call.
#[derive(Debug, Default)]
pub struct Event {
    state: Mutex<EventState>,
    cond: Condvar,
}

#[derive(Debug, Default)]
struct EventState {
    set: bool,
    /// Threads blocked in `cond.wait`.
    waiters: usize,
}

impl Event {
    /// A new event, not set.
    pub fn new() -> Self {
        Event::default()
    }

    // Nothing panics while holding the lock, and the state is two plain
    // fields written whole, so a poisoned lock still holds a valid state.
    fn lock(&self) -> MutexGuard<'_, EventState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Set the flag and wake every thread waiting for it.
    pub fn set(&self) {
        let mut state = self.lock();
        state.set = true;
        if state.waiters > 0 {
            self.cond.notify_all();
        }
    }

    /// Reset the flag; later waits block until the next [`Event::set`].
    pub fn clear(&self) {
        self.lock().set = false;
    }

    /// Whether the flag is set.
    pub fn is_set(&self) -> bool {
        self.lock().set
    }

    /// Block until the flag is set. Spurious wakeups are absorbed.
    pub fn wait(&self) {
        let mut state = self.lock();
        while !state.set {
            state.waiters += 1;
            state = self
                .cond
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
            state.waiters -= 1;
        }
    }

    /// Block until the flag is set or `timeout` has passed on the monotonic
    /// clock; return the flag (false: timed out). Python's `wait(timeout)`.
    /// Spurious wakeups are absorbed: the wait resumes for the time left. A
    /// timeout too large for the clock waits without limit.
    pub fn wait_timeout(&self, timeout: Duration) -> bool {
        let Some(deadline) = Instant::now().checked_add(timeout) else {
            self.wait();
            return true;
        };
        let mut state = self.lock();
        while !state.set {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            state.waiters += 1;
            state = self
                .cond
                .wait_timeout(state, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
            state.waiters -= 1;
        }
        true
    }
}

/// A flag one thread raises to ask others to stop: each worker checks
/// [`StopFlag::is_stopped`] between steps. Clones share the flag.
#[derive(Debug, Clone, Default)]
pub struct StopFlag(Arc<AtomicBool>);

impl StopFlag {
    /// A new flag, not raised.
    pub fn new() -> Self {
        StopFlag::default()
    }

    /// Ask every holder to stop. Release ordering: what this thread wrote
    /// before is visible to a thread that sees the flag.
    pub fn stop(&self) {
        self.0.store(true, Ordering::Release);
    }

    /// Whether [`StopFlag::stop`] was called.
    pub fn is_stopped(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::thread::spawn;

    #[test]
    fn event_set_clear_wait() {
        let e = Event::new();
        assert!(!e.is_set());
        assert!(!e.wait_timeout(Duration::from_millis(1)));
        assert!(!e.wait_timeout(Duration::ZERO));
        e.set();
        assert!(e.is_set());
        assert!(e.wait_timeout(Duration::ZERO));
        e.wait();
        e.clear();
        assert!(!e.is_set());
        // A timeout beyond the clock's range waits for the flag.
        e.set();
        assert!(e.wait_timeout(Duration::MAX));
    }

    #[test]
    fn event_wakes_a_waiting_thread() {
        let e = Arc::new(Event::new());
        let e2 = Arc::clone(&e);
        let t = spawn("Waiter", move || e2.wait_timeout(Duration::from_secs(60))).unwrap();
        e.set();
        assert!(t.join().unwrap());
    }

    #[test]
    fn stop_flag_is_shared_by_clones() {
        let s = StopFlag::new();
        let s2 = s.clone();
        assert!(!s2.is_stopped());
        s.stop();
        assert!(s2.is_stopped());
    }
}
