//! [`Barrier`]: Python's `threading.Barrier`, with timeouts, `abort` and
//! `reset` (std's `Barrier` has none of them).

use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use crate::error::{Error, ErrorKind, Result};
use crate::process::deadline_after;

/// `parties` threads wait until all of them have arrived, then all go on
/// at once; the barrier is then ready for the next round.
///
/// A wait that times out breaks the barrier: that thread gets
/// [`ErrorKind::TimedOut`], every thread waiting with it and every later
/// one [`ErrorKind::Interrupted`], until [`Barrier::reset`]. Python raises
/// `BrokenBarrierError` in all of them. [`Barrier::abort`] breaks it on
/// purpose.
///
/// ```
/// use posixkit::thread::{Barrier, spawn};
/// use std::sync::Arc;
/// let barrier = Arc::new(Barrier::new(2));
/// let b = Arc::clone(&barrier);
/// let t = spawn("Other", move || b.wait())?;
/// let mine = barrier.wait()?;
/// let theirs = t.join()??;
/// // Each thread gets its place in the order of arrival, 0 for the first.
/// assert_eq!(mine + theirs, 1);
/// # Ok::<(), posixkit::Error>(())
/// ```
#[derive(Debug)]
pub struct Barrier {
    parties: usize,
    state: Mutex<State>,
    cond: Condvar,
}

#[derive(Debug, Default)]
struct State {
    /// Threads waiting in this round.
    waiting: usize,
    /// Rounds completed: a waiter whose round has passed goes on.
    round: u64,
    broken: bool,
}

impl Barrier {
    /// A barrier for `parties` threads (at least 1).
    ///
    /// # Panics
    /// When `parties` is 0, as Python raises `ValueError`.
    pub fn new(parties: usize) -> Barrier {
        assert!(parties > 0, "a barrier needs at least one party");
        Barrier {
            parties,
            state: Mutex::new(State::default()),
            cond: Condvar::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn broken() -> Error {
        Error::new(
            ErrorKind::Interrupted,
            "wait",
            "barrier",
            "the barrier is broken (a wait timed out, or abort was called)",
        )
    }

    /// Wait for the other parties: `wait()`. Returns this thread's place
    /// in the order of arrival, 0 to `parties - 1` (the last one to arrive
    /// gets `parties - 1` and releases the others). Errors when the
    /// barrier is or becomes broken.
    pub fn wait(&self) -> Result<usize> {
        self.wait_deadline(None, Duration::MAX)
    }

    /// [`Barrier::wait`] for at most `timeout`: `wait(timeout)`. When the
    /// time runs out the barrier breaks, and this thread's error is of kind
    /// [`ErrorKind::TimedOut`].
    pub fn wait_timeout(&self, timeout: Duration) -> Result<usize> {
        self.wait_deadline(deadline_after(timeout), timeout)
    }

    fn wait_deadline(&self, deadline: Option<Instant>, timeout: Duration) -> Result<usize> {
        let mut s = self.lock();
        if s.broken {
            return Err(Self::broken());
        }
        let index = s.waiting;
        if index + 1 == self.parties {
            s.waiting = 0;
            s.round += 1;
            drop(s);
            self.cond.notify_all();
            return Ok(index);
        }
        s.waiting += 1;
        let round = s.round;
        loop {
            s = match deadline {
                None => self.cond.wait(s).unwrap_or_else(PoisonError::into_inner),
                Some(d) => {
                    let left = d.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        // Break it: everyone waiting leaves with an error.
                        let there = s.waiting;
                        s.broken = true;
                        s.waiting -= 1;
                        drop(s);
                        self.cond.notify_all();
                        return Err(Error::new(
                            ErrorKind::TimedOut,
                            "wait",
                            "barrier",
                            format!(
                                "timed out after {timeout:?} with {there} of {} parties there; the barrier is broken",
                                self.parties
                            ),
                        ));
                    }
                    self.cond
                        .wait_timeout(s, left)
                        .unwrap_or_else(PoisonError::into_inner)
                        .0
                }
            };
            if s.round != round {
                return Ok(index);
            }
            if s.broken {
                s.waiting -= 1;
                drop(s);
                // `reset` may be waiting for the last one to leave.
                self.cond.notify_all();
                return Err(Self::broken());
            }
        }
    }

    /// Break the barrier: every waiting and later `wait` fails until
    /// [`Barrier::reset`]: `abort()`.
    pub fn abort(&self) {
        self.lock().broken = true;
        self.cond.notify_all();
    }

    /// Make a broken barrier usable again: `reset()`. Threads still waiting
    /// get the broken error first, and `reset` returns once they have left.
    pub fn reset(&self) {
        let mut s = self.lock();
        if s.waiting > 0 {
            s.broken = true;
            self.cond.notify_all();
            while s.waiting > 0 {
                s = self.cond.wait(s).unwrap_or_else(PoisonError::into_inner);
            }
        }
        s.broken = false;
    }

    /// Whether it is broken: `broken`.
    pub fn is_broken(&self) -> bool {
        self.lock().broken
    }

    /// Threads waiting now: `n_waiting`.
    pub fn n_waiting(&self) -> usize {
        self.lock().waiting
    }

    /// How many threads it waits for: `parties`.
    pub fn parties(&self) -> usize {
        self.parties
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use crate::thread::spawn;

    #[test]
    fn no_thread_passes_before_all_arrive_and_the_places_are_distinct() {
        let barrier = Arc::new(Barrier::new(4));
        let arrived = Arc::new(AtomicUsize::new(0));
        let mut threads = Vec::new();
        for r in 0..3 {
            for i in 0..4 {
                let (b, a) = (Arc::clone(&barrier), Arc::clone(&arrived));
                threads.push(
                    spawn(format!("B-{r}-{i}"), move || {
                        a.fetch_add(1, Ordering::SeqCst);
                        let place = b.wait().unwrap();
                        // Everyone of this round had arrived.
                        (place, a.load(Ordering::SeqCst) >= 4 * (r + 1))
                    })
                    .unwrap(),
                );
            }
            let mut places: Vec<usize> = threads
                .drain(..)
                .map(|t| {
                    let (place, all_there) = t.join().unwrap();
                    assert!(all_there);
                    place
                })
                .collect();
            places.sort_unstable();
            assert_eq!(places, [0, 1, 2, 3], "round {r}");
        }
        assert_eq!(barrier.n_waiting(), 0);
    }

    #[test]
    fn a_timeout_breaks_it_for_everyone_until_reset() {
        let barrier = Arc::new(Barrier::new(3));
        let b = Arc::clone(&barrier);
        let waiter = spawn("Waiter", move || b.wait()).unwrap();
        while barrier.n_waiting() < 1 {
            std::thread::yield_now();
        }
        let e = barrier.wait_timeout(Duration::from_millis(5)).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::TimedOut);
        let e = waiter.join().unwrap().unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Interrupted);
        assert!(barrier.is_broken());
        assert!(barrier.wait().is_err(), "broken until reset");
        barrier.reset();
        assert!(!barrier.is_broken());
        let b = Barrier::new(1);
        assert_eq!(b.wait().unwrap(), 0, "one party passes at once");
    }

    #[test]
    fn abort_and_reset_release_the_waiters() {
        let barrier = Arc::new(Barrier::new(2));
        let b = Arc::clone(&barrier);
        let waiter = spawn("Waiter", move || b.wait()).unwrap();
        while barrier.n_waiting() < 1 {
            std::thread::yield_now();
        }
        barrier.reset();
        assert!(waiter.join().unwrap().is_err());
        assert!(!barrier.is_broken());
        barrier.abort();
        assert_eq!(barrier.wait().unwrap_err().kind(), ErrorKind::Interrupted);
        assert_eq!(barrier.parties(), 2);
    }
}
