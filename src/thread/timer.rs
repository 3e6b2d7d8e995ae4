//! [`Timer`]: Python's `threading.Timer`, a thread that runs a function
//! after a delay unless cancelled first.

use std::sync::Arc;
use std::time::Duration;

use super::{Builder, Event, Thread};
use crate::error::Result;

/// A thread (named `Thread-<N>`, as Python names a Timer's) that waits
/// `interval` and then runs a function, unless [`Timer::cancel`] came
/// first: `Timer(interval, f).start()`.
///
/// Like any joined thread, a timer still pending when its handle is
/// dropped is waited for (Python too waits for a pending timer at exit):
/// cancel it first to end it at once.
///
/// ```
/// use posixkit::thread::Timer;
/// use std::time::Duration;
/// let fired = Timer::start(Duration::from_millis(1), || {})?;
/// assert!(fired.join()?, "ran after 1ms");
/// let never = Timer::start(Duration::from_secs(3600), || unreachable!())?;
/// never.cancel();
/// assert!(!never.join()?, "cancelled: the function never ran");
/// # Ok::<(), posixkit::Error>(())
/// ```
#[derive(Debug)]
pub struct Timer {
    cancelled: Arc<Event>,
    thread: Thread<bool>,
}

impl Timer {
    /// Start a timer thread that runs `f` after `interval`.
    /// Errors as for [`super::spawn`].
    pub fn start(interval: Duration, f: impl FnOnce() + Send + 'static) -> Result<Timer> {
        let cancelled = Arc::new(Event::new());
        let c = Arc::clone(&cancelled);
        let thread = Builder::new().spawn(move || {
            // wait_timeout returns false when the interval passed with no
            // cancel: then, and only then, the function runs.
            if c.wait_timeout(interval) {
                return false;
            }
            f();
            true
        })?;
        Ok(Timer { cancelled, thread })
    }

    /// Stop the timer if it is still waiting: `cancel()`. Its function
    /// will not run; once it has started, it runs to the end.
    pub fn cancel(&self) {
        self.cancelled.set();
    }

    /// The timer thread's name.
    pub fn name(&self) -> String {
        self.thread.name()
    }

    /// Whether the timer thread is still waiting or running its function.
    pub fn is_alive(&self) -> bool {
        self.thread.is_alive()
    }

    /// Wait for the timer thread to end: true when the function ran,
    /// false when the timer was cancelled in time. Errors as for
    /// [`Thread::join`].
    pub fn join(self) -> Result<bool> {
        self.thread.join()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};

    use super::*;

    #[test]
    fn a_timer_runs_its_function_once_unless_cancelled() {
        let ran = Arc::new(AtomicBool::new(false));
        let r = Arc::clone(&ran);
        let t = Timer::start(Duration::ZERO, move || r.store(true, Ordering::SeqCst)).unwrap();
        assert!(t.name().starts_with("Thread-"));
        assert!(t.join().unwrap());
        assert!(ran.load(Ordering::SeqCst));

        let ran = Arc::new(AtomicBool::new(false));
        let r = Arc::clone(&ran);
        let t = Timer::start(Duration::from_secs(3600), move || {
            r.store(true, Ordering::SeqCst)
        })
        .unwrap();
        assert!(t.is_alive());
        t.cancel();
        assert!(!t.join().unwrap());
        assert!(!ran.load(Ordering::SeqCst));
    }
}
