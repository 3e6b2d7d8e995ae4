//! Cooperative tasks on one OS thread: a tokio current-thread runtime,
//! and the pieces of Python's generator and asyncio lessons: the
//! generator protocol as a state machine ([`Consumer`]), [`gather`],
//! [`wait_for`] and a task queue with `task_done`/`join` ([`TaskQueue`]).
//!
//! What Python's generators, `asyncio` and gevent teach: many tasks take
//! turns on a single thread, and a task gives up the thread only where it
//! awaits. So state shared between tasks needs no lock (an `Rc<Cell<_>>`,
//! which the compiler refuses to send to another thread), as long as no
//! await falls between a check and the update it guards; and a task that
//! blocks the thread (a plain `std::thread::sleep`) stalls every task.
//!
//! ```
//! use posixkit::coro;
//! let (rt, local) = coro::runtime().unwrap();
//! let stock = coro::Stock::new(1);
//! let n = local.block_on(&rt, async move {
//!     let a = tokio::task::spawn_local({ let s = stock.clone(); async move { s.try_take() } });
//!     let b = tokio::task::spawn_local({ let s = stock.clone(); async move { s.try_take() } });
//!     [a.await.unwrap(), b.await.unwrap()].iter().flatten().count()
//! });
//! assert_eq!(n, 1);
//! ```

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::rc::Rc;
use std::time::{Duration, Instant};

use tokio::runtime::{Builder, Runtime};
use tokio::sync::Notify;
use tokio::task::LocalSet;

use crate::error::{Context, Error, ErrorKind, Result};

/// A tokio runtime that runs every task on the calling thread (the
/// current-thread flavour, timers enabled), and a [`LocalSet`] so tasks may
/// hold `!Send` state such as `Rc`. Drive both with
/// `local.block_on(&rt, future)`.
///
/// The runtime starts no thread of its own; only
/// `tokio::task::spawn_blocking` adds one (its blocking pool).
pub fn runtime() -> Result<(Runtime, LocalSet)> {
    let rt = Builder::new_current_thread()
        .enable_time()
        .build()
        .ctx("tokio::runtime::Builder::build", "current-thread runtime")?;
    Ok((rt, LocalSet::new()))
}

pub use crate::thread::os_threads;

/// A time unit: the lessons' "1 second", scaled (`--scale 0.1` makes every
/// unit 100 ms).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Unit(Duration);

impl Unit {
    /// The longest unit accepted: 10 s.
    pub const MAX_SECS: f64 = 10.0;

    /// A unit of `secs` seconds, 0.001 to [`Unit::MAX_SECS`].
    pub fn from_secs(secs: f64) -> Result<Unit> {
        if !(0.001..=Self::MAX_SECS).contains(&secs) {
            return Err(Error::invalid(
                "--scale",
                format!(
                    "{secs} is not in 0.001..={} (seconds per unit)",
                    Self::MAX_SECS
                ),
            ));
        }
        Ok(Unit(Duration::from_secs_f64(secs)))
    }

    /// `n` units as a duration.
    pub fn times(self, n: u32) -> Duration {
        self.0 * n
    }

    /// One unit as a duration.
    pub fn duration(self) -> Duration {
        self.0
    }

    /// `d` expressed in units (3.0 for three units).
    pub fn count(self, d: Duration) -> f64 {
        d.as_secs_f64() / self.0.as_secs_f64()
    }
}

impl std::str::FromStr for Unit {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Unit, String> {
        let secs: f64 = s
            .trim()
            .parse()
            .map_err(|_| format!("'{s}' is not a number of seconds"))?;
        Unit::from_secs(secs).map_err(|_| {
            format!(
                "{secs} is not in 0.001..={} (seconds per unit)",
                Unit::MAX_SECS
            )
        })
    }
}

/// A monotonic stopwatch started when it is made.
#[derive(Debug, Clone, Copy)]
pub struct Clock(Instant);

impl Clock {
    /// Start now.
    pub fn start() -> Clock {
        Clock(Instant::now())
    }

    /// The instant it started.
    pub fn origin(self) -> Instant {
        self.0
    }

    /// Time since it started.
    pub fn elapsed(self) -> Duration {
        self.0.elapsed()
    }
}

/// The time of day in UTC as `HH:MM:SS.mmm`, as Python's
/// `time.strftime('%X')` shows it (with milliseconds).
pub fn time_of_day() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let s = now.as_secs() % 86_400;
    format!(
        "{:02}:{:02}:{:02}.{:03}",
        s / 3600,
        s / 60 % 60,
        s % 60,
        now.subsec_millis()
    )
}

/// A ticket stock shared by tasks on one thread, with no lock: a counter in
/// an `Rc<Cell<i64>>`. `Rc` is `!Send`, so the compiler guarantees that only
/// tasks of this thread touch it; and a task cannot be interrupted between
/// two statements that have no `.await` between them.
#[derive(Debug, Clone)]
pub struct Stock(Rc<Cell<i64>>);

impl Stock {
    /// A stock of `n` tickets.
    pub fn new(n: u32) -> Stock {
        Stock(Rc::new(Cell::new(i64::from(n))))
    }

    /// Tickets left (negative once oversold by [`Stock::take_unchecked`]).
    pub fn left(&self) -> i64 {
        self.0.get()
    }

    /// Check and take one ticket with no await in between: atomic with
    /// respect to every other task. Returns the count left after this sale,
    /// or `None` when sold out.
    pub fn try_take(&self) -> Option<i64> {
        let left = self.0.get();
        if left <= 0 {
            return None;
        }
        self.0.set(left - 1);
        Some(left - 1)
    }

    /// Take one ticket without checking: for the broken variant where the
    /// check happened before an await. Returns the count left.
    pub fn take_unchecked(&self) -> i64 {
        let left = self.0.get() - 1;
        self.0.set(left);
        left
    }
}

/// A small xorshift generator for demo delays, seeded from getrandom(2).
#[derive(Debug, Clone)]
pub struct Jitter(u64);

impl Jitter {
    /// Seeded from getrandom(2).
    pub fn from_os() -> Result<Jitter> {
        let seed = getrandom::u64().map_err(|e| Error::getrandom("seed", e))?;
        Ok(Jitter(seed | 1))
    }

    /// A duration uniformly in `0..=max` (millisecond steps).
    pub fn upto(&mut self, max: Duration) -> Duration {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        let ms = u64::try_from(max.as_millis()).unwrap_or(u64::MAX);
        Duration::from_millis(x % ms.saturating_add(1))
    }
}

/// Where a generator is, as Python's `inspect.getgeneratorstate` names it
/// (`GEN_RUNNING` cannot be seen from outside here: `send` holds the
/// generator mutably while it runs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GenState {
    /// Made, never resumed: `c = consumer()`. Only `send(None)` may start it.
    Created,
    /// Stopped at its `yield`, waiting for the next `send`.
    Suspended,
    /// Returned, failed or closed: every `send` is `StopIteration`.
    Closed,
}

impl fmt::Display for GenState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            GenState::Created => "GEN_CREATED",
            GenState::Suspended => "GEN_SUSPENDED",
            GenState::Closed => "GEN_CLOSED",
        })
    }
}

/// Why a [`Consumer::send`] gave no value, as Python would raise it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendError<E> {
    /// `TypeError: can't send non-None value to a just-started generator`:
    /// a value was sent before the generator was primed with `send(None)`.
    /// Nothing changed; it can still be primed.
    JustStarted,
    /// `StopIteration`: the generator has returned (it was sent `None` or
    /// 0, the lesson's `if not n: return`), or was closed. It is closed.
    Stopped,
    /// The body failed (an exception inside the generator): it is closed.
    Body(E),
}

impl<E: fmt::Display> fmt::Display for SendError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SendError::JustStarted => {
                f.write_str("TypeError: can't send non-None value to a just-started generator")
            }
            SendError::Stopped => f.write_str("StopIteration"),
            SendError::Body(e) => e.fmt(f),
        }
    }
}

/// The lesson's consumer generator, written as the state machine Python
/// makes of it:
///
/// ```python
/// def consumer():
///     r = ''
///     while True:
///         n = yield r          # Suspended here between sends
///         if not n:
///             return           # StopIteration
///         print('[CONSUMER] Consuming %s...' % n)
///         r = '200 OK'
/// ```
///
/// Rust has no stable generators: `std::ops::Coroutine`, `#[coroutine]`
/// closures and `gen` blocks exist only on nightly. A stable program
/// writes the state machine by hand, as here (and as the compiler does
/// for every `async fn`): the state says where the body is suspended, and
/// each [`Consumer::send`] runs it from there to its next `yield`. The
/// body's work between two yields (the `print` and `r = '200 OK'`) is the
/// closure given to [`Consumer::new`], which returns the next `r`.
///
/// ```
/// use posixkit::coro::{Consumer, GenState, SendError};
/// let mut c = Consumer::new(|n| Ok::<_, ()>(format!("took {n}")));
/// assert_eq!(c.send(Some(1)), Err(SendError::JustStarted));
/// assert_eq!(c.send(None), Ok(String::new())); // primed: r = ''
/// assert_eq!(c.send(Some(1)), Ok("took 1".to_string()));
/// c.close();
/// assert_eq!(c.state(), GenState::Closed);
/// assert_eq!(c.send(Some(2)), Err(SendError::Stopped));
/// ```
pub struct Consumer<F> {
    state: GenState,
    body: F,
}

impl<F> fmt::Debug for Consumer<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Consumer")
            .field("state", &self.state)
            .finish()
    }
}

impl<F, E> Consumer<F>
where
    F: FnMut(u64) -> std::result::Result<String, E>,
{
    /// `c = consumer()`: created, nothing run yet.
    pub fn new(body: F) -> Self {
        Consumer {
            state: GenState::Created,
            body,
        }
    }

    /// `c.send(value)`: resume the generator with `value` and run it to its
    /// next `yield`, returning what it yields. `send(None)` primes a new
    /// one (it yields `''`); then `send(Some(n))` consumes `n`, and `None`
    /// or `Some(0)` make it return.
    pub fn send(&mut self, value: Option<u64>) -> std::result::Result<String, SendError<E>> {
        match (self.state, value) {
            (GenState::Created, None) => {
                self.state = GenState::Suspended;
                Ok(String::new())
            }
            (GenState::Created, Some(_)) => Err(SendError::JustStarted),
            (GenState::Suspended, None | Some(0)) | (GenState::Closed, _) => {
                self.state = GenState::Closed;
                Err(SendError::Stopped)
            }
            (GenState::Suspended, Some(n)) => match (self.body)(n) {
                Ok(r) => Ok(r),
                Err(e) => {
                    self.state = GenState::Closed;
                    Err(SendError::Body(e))
                }
            },
        }
    }

    /// `c.close()`: end the generator where it is suspended (Python raises
    /// `GeneratorExit` at the `yield`; this body has nothing to clean up).
    pub fn close(&mut self) {
        self.state = GenState::Closed;
    }

    /// `inspect.getgeneratorstate(c)`.
    pub fn state(&self) -> GenState {
        self.state
    }
}

/// Python's `await asyncio.gather(a, b, c)`: run the futures as tasks of
/// this thread, all at once, and return their results in the order they
/// were given (not the order they finished). Call it inside
/// `LocalSet::block_on` ([`runtime`]). A future that panics is an error
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

    #[test]
    fn the_runtime_adds_no_thread() {
        let before = os_threads().unwrap();
        let (rt, local) = runtime().unwrap();
        local.block_on(&rt, async {
            tokio::time::sleep(Duration::from_millis(1)).await;
        });
        // The test harness may run other tests on other threads, so compare
        // loosely: building and using the runtime never needs a new thread.
        assert!(os_threads().unwrap() <= before + 8);
    }

    #[test]
    fn stock_sells_each_ticket_once() {
        let s = Stock::new(2);
        assert_eq!(s.try_take(), Some(1));
        assert_eq!(s.try_take(), Some(0));
        assert_eq!(s.try_take(), None);
        assert_eq!(s.left(), 0);
        assert_eq!(s.take_unchecked(), -1);
    }

    #[test]
    fn units_scale() {
        let u = Unit::from_secs(0.1).unwrap();
        assert_eq!(u.times(3), Duration::from_millis(300));
        assert!((u.count(Duration::from_millis(200)) - 2.0).abs() < 1e-9);
        assert!(Unit::from_secs(0.0).is_err());
        assert!(Unit::from_secs(f64::NAN).is_err());
        assert!(Unit::from_secs(11.0).is_err());
    }

    #[test]
    fn jitter_stays_in_range() {
        let mut j = Jitter::from_os().unwrap();
        for _ in 0..1000 {
            assert!(j.upto(Duration::from_millis(5)) <= Duration::from_millis(5));
        }
        assert_eq!(j.upto(Duration::ZERO), Duration::ZERO);
    }

    #[test]
    fn time_of_day_is_formatted() {
        let t = time_of_day();
        assert_eq!(t.len(), 12, "{t}");
        assert_eq!(&t[2..3], ":");
        assert_eq!(&t[8..9], ".");
    }

    #[test]
    fn the_consumer_follows_the_generator_protocol() {
        let mut consumed = Vec::new();
        let mut c = Consumer::new(|n| {
            consumed.push(n);
            if n == 13 {
                return Err("unlucky");
            }
            Ok("200 OK".to_string())
        });
        assert_eq!(c.state(), GenState::Created);
        assert_eq!(c.send(Some(1)), Err(SendError::JustStarted));
        assert_eq!(c.state(), GenState::Created, "still primable");
        assert_eq!(c.send(None), Ok(String::new()));
        assert_eq!(c.state(), GenState::Suspended);
        for n in 1..=3 {
            assert_eq!(c.send(Some(n)), Ok("200 OK".to_string()));
        }
        assert_eq!(c.send(Some(0)), Err(SendError::Stopped), "if not n: return");
        assert_eq!(c.state(), GenState::Closed);
        assert_eq!(c.send(Some(4)), Err(SendError::Stopped));

        let mut c2 = Consumer::new(|n| {
            if n == 13 {
                Err("unlucky")
            } else {
                Ok(String::new())
            }
        });
        c2.send(None).unwrap();
        assert_eq!(c2.send(Some(13)), Err(SendError::Body("unlucky")));
        assert_eq!(c2.state(), GenState::Closed);
        assert_eq!(consumed, [1, 2, 3]);
        assert_eq!(
            SendError::<String>::JustStarted.to_string(),
            "TypeError: can't send non-None value to a just-started generator"
        );
        assert_eq!(GenState::Suspended.to_string(), "GEN_SUSPENDED");
    }

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
