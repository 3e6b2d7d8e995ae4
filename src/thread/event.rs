//! [`Event`], Python's `threading.Event`, and [`StopFlag`], a flag one
//! thread raises to ask others to stop.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// `threading.Event`: a flag that threads wait on, on a `Mutex` and a
/// `Condvar`. `set` wakes every waiter; the flag stays set until `clear`.
/// A waiter that a `set` woke returns true even when a `clear` came
/// before it ran again (`set(); clear()` wakes every waiter, as in
/// Python, whose `wait` returns what its condition's wait said): each
/// `set` counts a generation, and a waiter looks for a new one as well as
/// for the flag. The mutex also counts the waiters, so `set` with nobody
/// waiting (every thread's end sets one) makes no futex wake-up call.
#[derive(Debug, Default)]
pub struct Event {
    state: Mutex<EventState>,
    cond: Condvar,
}

#[derive(Debug, Default)]
struct EventState {
    set: bool,
    /// How many times `set` was called (wrapping): a waiter that sees it
    /// move was woken by a `set`, whatever the flag is now.
    sets: u64,
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
        state.sets = state.sets.wrapping_add(1);
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

    /// Block until the flag is set (or a [`Event::set`] came, even one a
    /// [`Event::clear`] undid before this thread ran). Spurious wakeups
    /// are absorbed.
    pub fn wait(&self) {
        let mut state = self.lock();
        let sets = state.sets;
        while !state.set && state.sets == sets {
            state.waiters += 1;
            state = self
                .cond
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
            state.waiters -= 1;
        }
    }

    /// Block until the flag is set (or a [`Event::set`] came, even one a
    /// [`Event::clear`] undid) or `timeout` has passed on the monotonic
    /// clock; false when it timed out. Python's `wait(timeout)`.
    /// Spurious wakeups are absorbed: the wait resumes for the time left. A
    /// timeout too large for the clock waits without limit.
    pub fn wait_timeout(&self, timeout: Duration) -> bool {
        let Some(deadline) = Instant::now().checked_add(timeout) else {
            self.wait();
            return true;
        };
        let mut state = self.lock();
        let sets = state.sets;
        while !state.set && state.sets == sets {
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
    fn a_set_undone_by_a_clear_still_wakes_the_waiters() {
        // set() then clear() before the woken waiter runs again: Python's
        // wait returns True; a waiter that looked only at the flag went
        // back to sleep (for ever, or until its timeout: false).
        let e = Arc::new(Event::new());
        let (woke, woken) = std::sync::mpsc::channel();
        let waiters: Vec<_> = (0..2)
            .map(|i| {
                let (e, woke) = (Arc::clone(&e), woke.clone());
                spawn(format!("Waiter{i}"), move || {
                    let got = if i == 0 {
                        e.wait();
                        true
                    } else {
                        e.wait_timeout(Duration::from_secs(60))
                    };
                    let _ = woke.send(i);
                    got
                })
                .unwrap()
            })
            .collect();
        while e.lock().waiters < 2 {
            std::thread::yield_now();
        }
        {
            // set() and clear() with no room between them for a waiter.
            let mut st = e.lock();
            st.set = true;
            st.sets = st.sets.wrapping_add(1);
            e.cond.notify_all();
            st.set = false;
        }
        // Both come back within the suite's patience; a waiter that went
        // back to sleep is let go by a set that stays, and fails below.
        let mut back = 0;
        while back < 2 && woken.recv_timeout(Duration::from_secs(10)).is_ok() {
            back += 1;
        }
        if back < 2 {
            e.set();
        }
        assert_eq!(back, 2, "a waiter slept through the set");
        for t in waiters {
            assert!(t.join().unwrap());
        }
        // Through the API too: a pulse wakes a waiter.
        let e2 = Arc::clone(&e);
        let t = spawn("Pulsed", move || e2.wait_timeout(Duration::from_secs(60))).unwrap();
        while e.lock().waiters < 1 {
            std::thread::yield_now();
        }
        e.set();
        e.clear();
        assert!(t.join().unwrap());
        assert!(!e.is_set());
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
