//! [`Queue`]: Python's `queue.Queue` for threads, with `task_done` and
//! `join`. For processes, [`crate::queue`] has a queue in shared memory.

use std::collections::VecDeque;
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use super::wait_until;
use crate::error::{Error, Result};
use crate::process::deadline_after;

/// A first-in first-out queue between threads, bounded by `maxsize` (0:
/// unbounded), that also counts unfinished work: every `put` adds a task,
/// every [`Queue::task_done`] finishes one, and [`Queue::join`] waits until
/// none is left. A worker calls `task_done` after it has *handled* an item,
/// so `join` returning means the work is done, not just taken.
///
/// ```
/// use posixkit::thread::{Queue, spawn_daemon};
/// use std::sync::Arc;
/// let q = Arc::new(Queue::new(0));
/// let w = Arc::clone(&q);
/// // A daemon worker, as in Python's documentation: it never ends.
/// spawn_daemon("Worker", move || loop {
///     let item: u32 = w.get();
///     let _ = item * 2; // the work
///     w.task_done().expect("one task_done per get");
/// })?;
/// for item in 0..10 {
///     q.put(item);
/// }
/// q.join(); // every item handled
/// assert_eq!(q.unfinished(), 0);
/// # Ok::<(), posixkit::Error>(())
/// ```
#[derive(Debug)]
pub struct Queue<T> {
    state: Mutex<State<T>>,
    not_empty: Condvar,
    not_full: Condvar,
    all_done: Condvar,
    maxsize: usize,
}

#[derive(Debug)]
struct State<T> {
    items: VecDeque<T>,
    /// Items put and not yet marked done.
    unfinished: usize,
}

impl<T> Queue<T> {
    /// `Queue(maxsize)`; 0 is unbounded.
    pub fn new(maxsize: usize) -> Queue<T> {
        Queue {
            state: Mutex::new(State {
                items: VecDeque::new(),
                unfinished: 0,
            }),
            not_empty: Condvar::new(),
            not_full: Condvar::new(),
            all_done: Condvar::new(),
            maxsize,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State<T>> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn room(&self, s: &State<T>) -> bool {
        self.maxsize == 0 || s.items.len() < self.maxsize
    }

    fn put_by(&self, item: T, deadline: Option<Instant>) -> std::result::Result<(), T> {
        let (mut s, ok) = wait_until(&self.not_full, self.lock(), deadline, |s| self.room(s));
        if !ok {
            return Err(item);
        }
        s.items.push_back(item);
        s.unfinished += 1;
        drop(s);
        self.not_empty.notify_one();
        Ok(())
    }

    /// Add `item` at the end, waiting while the queue is full: `put(item)`.
    pub fn put(&self, item: T) {
        if self.put_by(item, None).is_err() {
            unreachable!("a put without a deadline waits until there is room");
        }
    }

    /// [`Queue::put`], waiting at most `timeout`: `put(item, timeout=t)`.
    /// The item comes back when the queue stayed full (Python's `Full`).
    pub fn put_timeout(&self, item: T, timeout: Duration) -> std::result::Result<(), T> {
        self.put_by(item, deadline_after(timeout))
    }

    /// Add `item` only if there is room: `put_nowait(item)`.
    pub fn try_put(&self, item: T) -> std::result::Result<(), T> {
        self.put_by(item, Some(Instant::now()))
    }

    fn get_by(&self, deadline: Option<Instant>) -> Option<T> {
        let (mut s, ok) = wait_until(&self.not_empty, self.lock(), deadline, |s| {
            !s.items.is_empty()
        });
        let item = if ok { s.items.pop_front() } else { None };
        drop(s);
        if item.is_some() {
            self.not_full.notify_one();
        }
        item
    }

    /// Take the first item, waiting while the queue is empty: `get()`.
    pub fn get(&self) -> T {
        self.get_by(None)
            .expect("a get without a deadline waits for an item")
    }

    /// [`Queue::get`], waiting at most `timeout`: `get(timeout=t)`. `None`
    /// when the queue stayed empty (Python's `Empty`).
    pub fn get_timeout(&self, timeout: Duration) -> Option<T> {
        self.get_by(deadline_after(timeout))
    }

    /// Take the first item only if there is one: `get_nowait()`.
    pub fn try_get(&self) -> Option<T> {
        self.get_by(Some(Instant::now()))
    }

    /// Mark one item as handled: `task_done()`. When none is left
    /// unfinished, every [`Queue::join`] returns. Errors (kind
    /// [`InvalidInput`](crate::ErrorKind::InvalidInput), Python's
    /// `ValueError`) when called more times than items were put.
    pub fn task_done(&self) -> Result<()> {
        let mut s = self.lock();
        if s.unfinished == 0 {
            return Err(Error::invalid(
                "task_done",
                "called too many times (more than items were put)",
            ));
        }
        s.unfinished -= 1;
        if s.unfinished == 0 {
            self.all_done.notify_all();
        }
        Ok(())
    }

    /// Wait until every item put has been marked done: `join()`.
    pub fn join(&self) {
        let _ = wait_until(&self.all_done, self.lock(), None, |s| s.unfinished == 0);
    }

    /// [`Queue::join`] for at most `timeout`; false when work is still
    /// unfinished.
    pub fn join_timeout(&self, timeout: Duration) -> bool {
        wait_until(&self.all_done, self.lock(), deadline_after(timeout), |s| {
            s.unfinished == 0
        })
        .1
    }

    /// Items in the queue now: `qsize()`.
    pub fn qsize(&self) -> usize {
        self.lock().items.len()
    }

    /// Whether it holds no item: `empty()`.
    pub fn is_empty(&self) -> bool {
        self.lock().items.is_empty()
    }

    /// Whether a `put` would wait: `full()`.
    pub fn is_full(&self) -> bool {
        !self.room(&self.lock())
    }

    /// Items put and not yet marked done (Python's `unfinished_tasks`).
    pub fn unfinished(&self) -> usize {
        self.lock().unfinished
    }

    /// The bound given at creation (0: none).
    pub fn maxsize(&self) -> usize {
        self.maxsize
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use crate::ErrorKind;
    use crate::thread::spawn;

    #[test]
    fn fifo_bounds_and_timeouts() {
        let q = Queue::new(2);
        assert!(q.is_empty() && !q.is_full());
        q.put(1);
        q.try_put(2).unwrap();
        assert!(q.is_full());
        assert_eq!(q.try_put(3), Err(3));
        assert_eq!(q.put_timeout(3, Duration::from_millis(5)), Err(3));
        assert_eq!(q.qsize(), 2);
        assert_eq!(q.get(), 1);
        assert_eq!(q.try_get(), Some(2));
        assert_eq!(q.try_get(), None);
        assert_eq!(q.get_timeout(Duration::from_millis(5)), None);
        assert_eq!(q.maxsize(), 2);
    }

    #[test]
    fn join_returns_only_when_every_item_is_done() {
        let q = Arc::new(Queue::new(0));
        let handled = Arc::new(AtomicUsize::new(0));
        let mut workers = Vec::new();
        for i in 0..3 {
            let (q, h) = (Arc::clone(&q), Arc::clone(&handled));
            workers.push(
                spawn(format!("W-{i}"), move || {
                    loop {
                        let item: Option<u32> = q.get();
                        let Some(_) = item else {
                            q.task_done().unwrap();
                            return;
                        };
                        std::thread::yield_now();
                        h.fetch_add(1, Ordering::SeqCst);
                        q.task_done().unwrap();
                    }
                })
                .unwrap(),
            );
        }
        for i in 0..50 {
            q.put(Some(i));
        }
        assert!(!q.join_timeout(Duration::ZERO) || handled.load(Ordering::SeqCst) == 50);
        q.join();
        // join returned: every item was handled, not just taken.
        assert_eq!(handled.load(Ordering::SeqCst), 50);
        assert_eq!(q.unfinished(), 0);
        for _ in 0..3 {
            q.put(None);
        }
        for w in workers {
            w.join().unwrap();
        }
        assert!(q.join_timeout(Duration::MAX));
    }

    #[test]
    fn task_done_once_too_often_is_refused() {
        let q = Queue::new(0);
        q.put("a");
        let _ = q.get();
        q.task_done().unwrap();
        let e = q.task_done().unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidInput);
        assert!(e.to_string().contains("too many times"), "{e}");
    }
}
