//! Python's asyncio pieces on the tasks of one thread: [`gather`],
//! [`wait_for`] and [`TaskQueue`] (`asyncio.Queue` with `task_done` and
//! `join`).

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::future::Future;
use std::rc::Rc;
use std::time::Duration;

use tokio::sync::Notify;

use crate::error::{Error, ErrorKind, Result};

/// Python's `await asyncio.gather(a, b, c)`: run the futures as tasks of
/// this thread, all at once, and return their results in the order they
/// were given (not the order they finished). Call it inside
/// `LocalSet::block_on` ([`super::runtime`]). A future that panics is an error
/// of kind [`ErrorKind::Panicked`].
pub async fn gather<F, T>(futures: impl IntoIterator<Item = F>) -> Result<Vec<T>>
where
    F: Future<Output = T> + 'static,
    T: 'static,
{
    let handles: Vec<_> = futures.into_iter().map(tokio::task::spawn_local).collect();
    let mut results = Vec::with_capacity(handles.len());
    for (i, h) in handles.into_iter().enumerate() {
        let r = h
            .await
            .map_err(|e| Error::new(ErrorKind::Panicked, "gather", i, e.to_string()))?;
        results.push(r);
    }
    Ok(results)
}

/// Python's `await asyncio.wait_for(fut, timeout)`: the future's output,
/// or, once `timeout` has passed, an error of kind
/// [`ErrorKind::TimedOut`] (`TimeoutError`). The future is then dropped:
/// cancelled where it was waiting, and none of its later code runs. A
/// timeout too large for the clock waits for ever.
pub async fn wait_for<F: Future>(fut: F, timeout: Duration) -> Result<F::Output> {
    if crate::process::deadline_after(timeout).is_none() {
        return Ok(fut.await);
    }
    tokio::time::timeout(timeout, fut).await.map_err(|_| {
        Error::new(
            ErrorKind::TimedOut,
            "wait_for",
            format_args!("{timeout:?}"),
            "timed out; the coroutine was cancelled",
        )
    })
}

/// Python's `asyncio.Queue` between the tasks of one thread: `put` waits
/// while it is full (`maxsize` 0: never), `get` while it is empty, and
/// [`TaskQueue::join`] until every item put has been marked done with
/// [`TaskQueue::task_done`]. Clones share the queue. No lock: only tasks
/// of this thread touch it (`Rc`), and none is interrupted between two
/// awaits.
#[derive(Debug)]
pub struct TaskQueue<T> {
    inner: Rc<QueueInner<T>>,
}

#[derive(Debug)]
struct QueueInner<T> {
    items: RefCell<VecDeque<T>>,
    unfinished: Cell<usize>,
    maxsize: usize,
    not_empty: Notify,
    not_full: Notify,
    all_done: Notify,
}

impl<T> Clone for TaskQueue<T> {
    fn clone(&self) -> Self {
        TaskQueue {
            inner: Rc::clone(&self.inner),
        }
    }
}

impl<T> TaskQueue<T> {
    /// `asyncio.Queue(maxsize)`; 0 is unbounded.
    pub fn new(maxsize: usize) -> Self {
        TaskQueue {
            inner: Rc::new(QueueInner {
                items: RefCell::new(VecDeque::new()),
                unfinished: Cell::new(0),
                maxsize,
                not_empty: Notify::new(),
                not_full: Notify::new(),
                all_done: Notify::new(),
            }),
        }
    }

    fn full(&self) -> bool {
        self.inner.maxsize != 0 && self.inner.items.borrow().len() >= self.inner.maxsize
    }

    /// `put_nowait(item)`: add it if there is room; the item back if not
    /// (Python's `QueueFull`).
    pub fn try_put(&self, item: T) -> std::result::Result<(), T> {
        if self.full() {
            return Err(item);
        }
        self.inner.items.borrow_mut().push_back(item);
        self.inner.unfinished.set(self.inner.unfinished.get() + 1);
        self.inner.not_empty.notify_one();
        Ok(())
    }

    /// `await put(item)`: add it, waiting while the queue is full.
    pub async fn put(&self, mut item: T) {
        loop {
            match self.try_put(item) {
                Ok(()) => return,
                Err(back) => item = back,
            }
            self.inner.not_full.notified().await;
        }
    }

    /// `get_nowait()`: the first item, if there is one.
    pub fn try_get(&self) -> Option<T> {
        let item = self.inner.items.borrow_mut().pop_front();
        if item.is_some() {
            self.inner.not_full.notify_one();
        }
        item
    }

    /// `await get()`: the first item, waiting while the queue is empty.
    pub async fn get(&self) -> T {
        loop {
            if let Some(item) = self.try_get() {
                return item;
            }
            self.inner.not_empty.notified().await;
        }
    }

    /// `task_done()`: one item taken is handled. Errors (kind
    /// [`ErrorKind::InvalidInput`], Python's `ValueError`) when called more
    /// times than items were put.
    pub fn task_done(&self) -> Result<()> {
        let n = self.inner.unfinished.get();
        if n == 0 {
            return Err(Error::invalid(
                "task_done",
                "called too many times (more than items were put)",
            ));
        }
        self.inner.unfinished.set(n - 1);
        if n == 1 {
            self.inner.all_done.notify_waiters();
        }
        Ok(())
    }

    /// `await join()`: wait until every item put has been marked done.
    pub async fn join(&self) {
        while self.inner.unfinished.get() > 0 {
            self.inner.all_done.notified().await;
        }
    }

    /// `qsize()`.
    pub fn qsize(&self) -> usize {
        self.inner.items.borrow().len()
    }

    /// Items put and not yet marked done.
    pub fn unfinished(&self) -> usize {
        self.inner.unfinished.get()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::coro::runtime;

    #[test]
    fn a_future_never_polled_does_nothing() {
        let ran = Rc::new(Cell::new(false));
        let r = Rc::clone(&ran);
        let fut = async move { r.set(true) };
        drop(fut);
        assert!(!ran.get());
        let (rt, local) = runtime().unwrap();
        let r = Rc::clone(&ran);
        local.block_on(&rt, async move { r.set(true) });
        assert!(ran.get());
    }

    #[test]
    fn gather_keeps_the_argument_order_and_wait_for_cancels() {
        let (rt, local) = runtime().unwrap();
        let finished = Rc::new(RefCell::new(Vec::new()));
        let f = Rc::clone(&finished);
        let (got, timed_out, late) = local.block_on(&rt, async move {
            let futs: Vec<_> = [3u32, 1, 2]
                .into_iter()
                .map(|n| {
                    let f = Rc::clone(&f);
                    async move {
                        // n yields: fewer yields finish first.
                        for _ in 0..n {
                            tokio::task::yield_now().await;
                        }
                        f.borrow_mut().push(n);
                        n * 10
                    }
                })
                .collect();
            let got = gather(futs).await.unwrap();
            let reached = Rc::new(Cell::new(false));
            let r = Rc::clone(&reached);
            let e = wait_for(
                async move {
                    std::future::pending::<()>().await;
                    r.set(true);
                },
                Duration::from_millis(1),
            )
            .await
            .unwrap_err();
            (got, e.kind(), reached.get())
        });
        assert_eq!(got, [30, 10, 20], "argument order");
        assert_eq!(*finished.borrow(), [1, 2, 3], "finish order");
        assert_eq!(timed_out, ErrorKind::TimedOut);
        assert!(!late, "the cancelled coroutine never went on");
    }

    #[test]
    fn a_task_queue_joins_when_every_item_is_done() {
        let (rt, local) = runtime().unwrap();
        let done = local.block_on(&rt, async {
            let q = TaskQueue::new(2);
            let handled = Rc::new(Cell::new(0));
            let mut workers = Vec::new();
            for _ in 0..3 {
                let (q, h) = (q.clone(), Rc::clone(&handled));
                workers.push(tokio::task::spawn_local(async move {
                    loop {
                        let _item: u32 = q.get().await;
                        tokio::task::yield_now().await;
                        h.set(h.get() + 1);
                        q.task_done().unwrap();
                    }
                }));
            }
            for i in 0..20 {
                q.put(i).await; // waits while 2 are queued
                assert!(q.qsize() <= 2);
            }
            q.join().await;
            let at_join = handled.get();
            for w in workers {
                w.abort();
            }
            assert!(q.task_done().is_err());
            assert_eq!(q.try_put(1), Ok(()));
            assert_eq!(q.try_get(), Some(1));
            at_join
        });
        assert_eq!(done, 20);
    }
}
