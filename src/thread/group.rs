//! [`Group`]: threads started behind one [`Gate`] and joined together.

use super::{StopFlag, Thread, spawn};
use crate::error::Result;
use std::sync::Arc;

use super::Event;

/// The gate of a [`Group`], as each of its threads sees it: wait at it,
/// open it, and ask or check whether to stop. Clones share the gate.
#[derive(Debug, Clone, Default)]
pub struct Gate {
    go: Arc<Event>,
    stop: StopFlag,
}

impl Gate {
    /// Block until the gate is open. Every thread waiting here starts at
    /// once when it opens.
    pub fn wait(&self) {
        self.go.wait();
    }

    /// Open the gate: every thread waiting at it goes, and later waits
    /// return at once.
    pub fn open(&self) {
        self.go.set();
    }

    /// Ask the threads to stop (they check [`Gate::is_stopped`]).
    pub fn stop(&self) {
        self.stop.stop();
    }

    /// Whether [`Gate::stop`] was called, or the group was dropped or a
    /// thread of it could not be started.
    pub fn is_stopped(&self) -> bool {
        self.stop.is_stopped()
    }
}

/// Threads started behind one [`Gate`] and joined together: the lessons'
/// "start N threads, let them go at once, join them all".
///
/// Each thread gets the gate and waits at it where it should; the caller
/// opens it once every thread is started (or a thread opens it, when the
/// last one arrives). Nothing can hang: when a thread cannot be started,
/// or the group is dropped before it was joined, the group asks its
/// threads to stop and opens the gate before it joins them.
///
/// ```
/// use posixkit::thread::Group;
/// use std::sync::Arc;
/// use std::sync::atomic::{AtomicU64, Ordering};
/// let total = Arc::new(AtomicU64::new(0));
/// let mut group = Group::new();
/// for i in 0..4u64 {
///     let total = Arc::clone(&total);
///     group.spawn(format!("Thread-{i}"), move |gate| {
///         gate.wait();
///         total.fetch_add(i, Ordering::Relaxed);
///         i * 10
///     })?;
/// }
/// group.open();
/// assert_eq!(group.join()?, [0, 10, 20, 30]);
/// assert_eq!(total.load(Ordering::Relaxed), 6);
/// # Ok::<(), posixkit::Error>(())
/// ```
#[derive(Debug)]
pub struct Group<T> {
    gate: Gate,
    threads: Vec<Thread<T>>,
}

impl<T> Default for Group<T> {
    fn default() -> Self {
        Group {
            gate: Gate::default(),
            threads: Vec::new(),
        }
    }
}

impl<T: Send + 'static> Group<T> {
    /// An empty group with a closed gate.
    pub fn new() -> Self {
        Group::default()
    }

    /// Start a joined thread called `name` running `f` with the gate.
    /// When the thread cannot be started, the threads already started are
    /// asked to stop and the gate opens (so joining them cannot hang), and
    /// the error is returned. Errors as for [`spawn`].
    pub fn spawn<F>(&mut self, name: impl Into<String>, f: F) -> Result<()>
    where
        F: FnOnce(&Gate) -> T + Send + 'static,
    {
        let gate = self.gate.clone();
        match spawn(name, move || f(&gate)) {
            Ok(t) => {
                self.threads.push(t);
                Ok(())
            }
            Err(e) => {
                self.release();
                Err(e)
            }
        }
    }

    /// The gate, to open it, or to ask the threads to stop.
    pub fn gate(&self) -> &Gate {
        &self.gate
    }

    /// Open the gate: every thread waiting at it goes.
    pub fn open(&self) {
        self.gate.open();
    }

    /// How many threads the group started.
    pub fn len(&self) -> usize {
        self.threads.len()
    }

    /// Whether it started none.
    pub fn is_empty(&self) -> bool {
        self.threads.is_empty()
    }

    /// Open the gate if it is still closed, join every thread, and return
    /// their values in the order they were started. When a thread
    /// panicked, the error of the first one that did, once all are joined.
    pub fn join(mut self) -> Result<Vec<T>> {
        self.gate.open();
        let mut values = Vec::with_capacity(self.threads.len());
        let mut first_error = None;
        for t in std::mem::take(&mut self.threads) {
            match t.join() {
                Ok(v) => values.push(v),
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        first_error.map_or(Ok(values), Err)
    }

    /// Stop, and let every thread past the gate.
    fn release(&self) {
        self.gate.stop();
        self.gate.open();
    }
}

impl<T> Drop for Group<T> {
    /// Threads not joined are asked to stop and let past the gate, then
    /// joined (each [`Thread`]'s drop waits for it).
    fn drop(&mut self) {
        if !self.threads.is_empty() {
            self.gate.stop();
            self.gate.open();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};

    use super::*;
    use crate::error::ErrorKind;
    use crate::thread::current_name;

    #[test]
    fn a_group_starts_its_threads_at_the_gate_and_joins_them_in_order() {
        let arrived = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let mut group = Group::new();
        for i in 0..5usize {
            let arrived = Arc::clone(&arrived);
            group
                .spawn(format!("G-{i}"), move |gate| {
                    arrived.fetch_add(1, Ordering::SeqCst);
                    gate.wait();
                    (i, current_name())
                })
                .unwrap();
        }
        assert_eq!(group.len(), 5);
        // Everyone reaches the gate and nobody passes it until it opens.
        while arrived.load(Ordering::SeqCst) < 5 {
            std::thread::yield_now();
        }
        assert!(group.threads.iter().all(Thread::is_alive));
        let got = group.join().unwrap();
        let want: Vec<_> = (0..5).map(|i| (i, format!("G-{i}"))).collect();
        assert_eq!(got, want);
    }

    #[test]
    fn a_group_dropped_unjoined_stops_and_releases_its_threads() {
        let stopped = Arc::new(AtomicBool::new(false));
        let mut group = Group::new();
        let s = Arc::clone(&stopped);
        group
            .spawn("Waiting", move |gate| {
                gate.wait();
                s.store(gate.is_stopped(), Ordering::SeqCst);
            })
            .unwrap();
        drop(group); // would hang if the gate stayed closed
        assert!(stopped.load(Ordering::SeqCst), "told to stop");
    }

    #[test]
    fn a_failed_start_releases_the_group_and_a_panic_is_an_error_after_all_joined() {
        let mut group = Group::new();
        let ran = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let r = Arc::clone(&ran);
        group
            .spawn("First", move |gate| {
                gate.wait();
                r.fetch_add(1, Ordering::SeqCst);
                assert!(gate.is_stopped(), "released by the failed start");
            })
            .unwrap();
        // A name with a NUL byte cannot be started.
        assert!(group.spawn("bad\0name", |_| ()).is_err());
        assert!(group.gate().is_stopped());
        group.join().unwrap();
        assert_eq!(ran.load(Ordering::SeqCst), 1);

        let mut group = Group::new();
        let after = Arc::new(AtomicBool::new(false));
        let a = Arc::clone(&after);
        crate::testing::quiet_deliberate_panics();
        group
            .spawn("Boom", |_| panic!("{}boom", crate::testing::DELIBERATE))
            .unwrap();
        group
            .spawn("After", move |_| a.store(true, Ordering::SeqCst))
            .unwrap();
        let e = group.join().unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Panicked);
        assert!(e.to_string().starts_with("join(Boom)"), "{e}");
        assert!(after.load(Ordering::SeqCst), "the other thread was joined");
    }
}
