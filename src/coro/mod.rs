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

use std::cell::Cell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use tokio::runtime::{Builder, Runtime};
use tokio::task::LocalSet;

use crate::error::{Context, Error, Result};

mod asyncio;
mod generator;

pub use asyncio::{TaskQueue, gather, wait_for};
pub use generator::{Consumer, GenState, SendError};

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
}
