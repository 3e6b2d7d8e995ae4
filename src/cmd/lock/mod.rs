//! `pk-lock`: the threading.Lock lesson. Two threads add and subtract on a
//! shared balance and lose updates without a lock; ten buyers share three
//! tickets; a checker sees `a != b` halfway through an update unless the
//! writer holds the lock. Then the deadlock of two locks taken in opposite
//! orders (seen through timeouts), RLock, and BoundedSemaphore.
//!
//! Without `--no-lock` every shared value sits in a `thread::Mutex`.
//! With it, the values are atomics updated by a separate load and store
//! (Relaxed): each access is atomic, so there is no data race in the
//! language's sense and no undefined behaviour, but the read-modify-write
//! as a whole is not, and another thread's update between the load and the
//! store is lost. That is exactly the race `balance = balance + n` has in
//! Python. `--yield` calls sched_yield(2) between the load and the store,
//! which makes the window wide enough to hit every run, on any machine.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU32, AtomicU64, Ordering::Relaxed};

use clap::{Parser, Subcommand};

use crate::cmd::Out;
use crate::cmd::Result;
use crate::cmd::duration::DurationArg;
use crate::cmd::exit;
use crate::thread::{self, Group, Mutex};
use crate::{note, outln};

mod deadlock;

const AFTER_HELP: &str = "\
Output of `balance` (thread i adds and subtracts 5+3*i, i = 0..N-1):
  <N> threads x <ITERS> iterations, with the lock|without a lock
  balance=<B>                 (always 0 with the lock)

Output of `tickets` (thread names Thread-1..Thread-N; order varies):
  Thread-<i> bought ticket <k>, <left> left
  Thread-<i>: sold out
  sold=<S> sold_out=<O> stock=<T>            (with the lock S = min(T, N))
  oversold by <X>                            (only when S > T, --no-lock)

Output of `invariant` (a writer does a+=1; b+=1, a checker compares):
  mismatch: a=<A> b=<B>       (at most --show of them; never with the lock)
  checks=<C> updates=<U> mismatches=<M>

--quiet (-q) drops the first line of `balance` and the per-thread lines of
`tickets`, `deadlock` and `semaphore`: what is left are the result lines
(balance=, sold=, oversold, mismatch, checks=, the `deadlock:` or `no
deadlock:` verdict, `most in use` and `release() once more`, and every
line of `rlock`, each an outcome). The demos start their threads together (all wait for one Event) so
they overlap.

Output of `deadlock` (Thread-1 takes lock A then B, Thread-2 B then A;
lines of the two threads interleave):
  Thread-1 takes lock A then lock B; Thread-2 takes lock B then lock A (...)
  thread Thread-<i>: took lock <X>
  thread Thread-<i>: waiting for lock <Y>...
  thread Thread-<i>: gave up on lock <Y> after <TIMEOUT>: the other thread holds it, ...
  deadlock: each thread held one lock and waited for the other's; ...   (exit 1)
Both threads take their first lock before either asks for its second (they
meet at a Barrier), so the deadlock is certain; Lock.acquire(timeout=...)
is how the demo sees it instead of hanging. With --ordered both take A
before B: `took lock B; releasing both` twice, then
  no deadlock: every thread took both locks, always A before B     (exit 0)

Output of `rlock` (threading.RLock; a Lock taken twice by one thread):
  Lock: outer acquire() -> held
  Lock: inner acquire(timeout=<T>) by the same thread -> timed out: a Lock is not reentrant; ...
  RLock: outer acquire() -> held, depth 1
  RLock: inner acquire() by the same thread -> held, depth 2
  RLock: inner released -> still held by this thread: True
  RLock: another thread's acquire(timeout=<T>) while it is held -> timed out: True
  RLock: outer released -> another thread takes it: True

Output of `semaphore` (threading.BoundedSemaphore(value); order varies):
  thread Thread-<i>: acquired, <n> of <V> in use
  thread Thread-<i>: releasing, <n> of <V> in use
  most in use at once: <M> of <V> (BoundedSemaphore(<V>), <N> threads)   (M <= V)
  release() once more: release(BoundedSemaphore): released too many times (Python: ValueError: ...)

Exit status: 0 when the demo ran (whatever the race did); 1 when `deadlock`
saw the deadlock; 2 for a bad flag; 71 when a thread cannot be started.

Examples:
  pk-lock balance                       # balance=0
  pk-lock balance --no-lock --yield     # balance=-1234 (varies, not 0)
  pk-lock tickets --threads 10 --stock 3
  pk-lock invariant --seconds 1 --no-lock
  pk-lock deadlock --timeout 500ms; echo $?    # 1
  pk-lock deadlock --ordered                   # 0
  pk-lock rlock
  pk-lock semaphore --threads 5 --value 2";

/// Threads racing on shared data with and without a Mutex, a deadlock, RLock
/// and BoundedSemaphore: Python's threading.Lock, RLock, BoundedSemaphore.
#[derive(Debug, Parser)]
#[command(name = "pk-lock", version, after_help = AFTER_HELP)]
pub struct Args {
    /// The demo to run (default: balance).
    #[command(subcommand)]
    pub demo: Option<Demo>,

    /// Print only the result lines (before or after the demo's name).
    #[arg(short, long, global = true)]
    pub quiet: bool,
}

/// The demos.
#[derive(Debug, Subcommand)]
pub enum Demo {
    /// Each thread adds then subtracts its amount ITERS times; the balance
    /// stays 0 only with the lock.
    Balance(BalanceArgs),
    /// N buyer threads, one ticket each at most, from a stock of T.
    Tickets(TicketsArgs),
    /// A writer keeps a == b; a checker reports when it sees them differ.
    Invariant(InvariantArgs),
    /// Two threads take two Locks in opposite orders: a deadlock, detected
    /// with acquire(timeout=...) (exit 1); --ordered avoids it.
    Deadlock(DeadlockArgs),
    /// A Lock taken twice by one thread waits for itself; an RLock does not
    /// (threading.RLock).
    Rlock(RlockArgs),
    /// N threads share a threading.BoundedSemaphore(value); one release too
    /// many is refused.
    Semaphore(SemaphoreArgs),
}

/// `pk-lock deadlock`.
#[derive(Debug, clap::Args)]
pub struct DeadlockArgs {
    /// How long each thread waits for its second lock before it gives up
    /// (at most 1h).
    #[arg(short = 't', long, value_name = "DURATION", default_value = "1s")]
    pub timeout: DurationArg,

    /// Both threads take lock A before lock B: no deadlock.
    #[arg(long)]
    pub ordered: bool,
}

/// `pk-lock rlock`.
#[derive(Debug, clap::Args)]
pub struct RlockArgs {
    /// How long an acquire that cannot succeed waits (at most 1h).
    #[arg(short = 't', long, value_name = "DURATION", default_value = "200ms")]
    pub timeout: DurationArg,
}

/// `pk-lock semaphore`.
#[derive(Debug, clap::Args)]
pub struct SemaphoreArgs {
    /// Threads (1-1000).
    #[arg(short = 't', long, value_name = "N", default_value_t = 5,
          value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub threads: u32,

    /// The semaphore's value: how many threads may hold it at once (1-1000).
    #[arg(short = 'v', long, value_name = "V", default_value_t = 2,
          value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub value: u32,

    /// How long each thread holds it (at most 10s).
    #[arg(long, value_name = "DURATION", default_value = "50ms")]
    pub hold: DurationArg,
}

/// `d` when it is at most `max`, else a usage error naming `flag`.
fn at_most(
    flag: &'static str,
    d: DurationArg,
    max: std::time::Duration,
    shown: &str,
) -> Result<DurationArg> {
    if d.0 > max {
        return Err(crate::error::Error::invalid(flag, format!("must be at most {shown}")).into());
    }
    Ok(d)
}

/// Flags every demo shares.
#[derive(Debug, Clone, Copy, clap::Args)]
pub struct Race {
    /// Do not take the lock: a separate atomic load and store, which races.
    #[arg(long)]
    pub no_lock: bool,

    /// sched_yield between reading and writing the shared value, so the race
    /// shows reliably (and with the lock, a thread yields while holding it).
    #[arg(long = "yield")]
    pub yield_: bool,
}

/// `pk-lock balance`.
#[derive(Debug, clap::Args)]
pub struct BalanceArgs {
    /// Number of threads (1-64).
    #[arg(short = 't', long, value_name = "N", default_value_t = 2,
          value_parser = clap::value_parser!(u32).range(1..=64))]
    pub threads: u32,

    /// Add-and-subtract rounds per thread (1-100000000).
    #[arg(short = 'i', long, value_name = "N", default_value_t = 100_000,
          value_parser = clap::value_parser!(u64).range(1..=100_000_000))]
    pub iters: u64,

    #[command(flatten)]
    pub race: Race,
}

/// `pk-lock tickets`.
#[derive(Debug, clap::Args)]
pub struct TicketsArgs {
    /// Number of buyer threads (1-1000).
    #[arg(short = 't', long, value_name = "N", default_value_t = 10,
          value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub threads: u32,

    /// Tickets in stock at the start (0-1000000).
    #[arg(short = 's', long, value_name = "T", default_value_t = 3,
          value_parser = clap::value_parser!(u32).range(0..=1_000_000))]
    pub stock: u32,

    #[command(flatten)]
    pub race: Race,
}

/// `pk-lock invariant`.
#[derive(Debug, clap::Args)]
pub struct InvariantArgs {
    /// How long the writer and the checker run (1, 0.5, 250ms).
    #[arg(long, value_name = "S", default_value = "1")]
    pub seconds: DurationArg,

    /// Print at most this many mismatch lines (0-1000); all are counted.
    #[arg(long, value_name = "N", default_value_t = 5,
          value_parser = clap::value_parser!(u32).range(0..=1000))]
    pub show: u32,

    #[command(flatten)]
    pub race: Race,
}

const HOUR: std::time::Duration = std::time::Duration::from_secs(3600);

/// Run the lock lesson.
pub fn run(args: Args, out: &mut Out) -> Result<u8> {
    out.set_quiet(args.quiet);
    match args.demo {
        None => balance(
            BalanceArgs {
                threads: 2,
                iters: 100_000,
                race: Race {
                    no_lock: false,
                    yield_: false,
                },
            },
            out,
        ),
        Some(Demo::Balance(a)) => balance(a, out),
        Some(Demo::Tickets(a)) => tickets(a, out),
        Some(Demo::Invariant(a)) => invariant(a, out),
        Some(Demo::Deadlock(a)) => {
            let t = at_most("--timeout", a.timeout, HOUR, "1h")?;
            deadlock::deadlock(t, a.ordered, out)
        }
        Some(Demo::Rlock(a)) => deadlock::rlock(at_most("--timeout", a.timeout, HOUR, "1h")?, out),
        Some(Demo::Semaphore(a)) => {
            let hold = at_most("--hold", a.hold, std::time::Duration::from_secs(10), "10s")?;
            deadlock::semaphore(a.threads, a.value, hold, out)
        }
    }
}

/// The window between a read and the write that depends on it. With
/// `--yield`, each read-modify-write yields the CPU (sched_yield) at
/// pseudo-random points: between the read and the write half of the time,
/// and after the write half of the time, independently. Threads then
/// interleave at varying points, as Python's interpreter switches threads
/// at varying points, on one core as on two. A yield inside every window
/// would make two threads alternate in lockstep, where the other thread's
/// whole `+n, -n` pair is lost at once and the balance stays 0; a yield
/// after the write too, at random, breaks that pattern so that single
/// updates are lost and the balance drifts.
#[derive(Debug)]
struct Window {
    on: bool,
    rng: u64,
}

impl Window {
    fn new(on: bool, seed: u64) -> Self {
        // Mix in the clock so runs differ; xorshift needs a non-zero state.
        let clock = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        Window {
            on,
            rng: (seed.wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ u64::from(clock)) | 1,
        }
    }

    /// Between the read and the write.
    fn open(&mut self) {
        if !self.on {
            return;
        }
        // xorshift64
        let mut x = self.rng;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.rng = x;
        if x & 1 != 0 {
            std::thread::yield_now();
        }
    }

    /// After the write.
    fn close(&mut self) {
        if self.on && self.rng & 4 != 0 {
            std::thread::yield_now();
        }
    }
}

/// An integer updated the racy way: `v = load(); store(v + n)`. No undefined
/// behaviour (every access is atomic), but updates between the load and the
/// store are lost.
#[derive(Debug, Default)]
struct Unlocked(AtomicI64);

impl Unlocked {
    fn add(&self, n: i64, window: &mut Window) {
        let v = self.0.load(Relaxed);
        window.open();
        self.0.store(v.wrapping_add(n), Relaxed);
        window.close();
    }
}

/// Join every thread of `group`; the first error any of them returned,
/// once all are joined.
fn join_all(group: Group<Result<()>>) -> Result<()> {
    group.join()?.into_iter().collect()
}

fn lock_word(race: Race) -> &'static str {
    if race.no_lock {
        "without a lock"
    } else {
        "with the lock"
    }
}

fn balance(args: BalanceArgs, out: &mut Out) -> Result<u8> {
    let race = args.race;
    note!(
        out,
        "{} threads x {} iterations, {}",
        args.threads,
        args.iters,
        lock_word(race)
    )?;
    let locked = Arc::new(Mutex::new(0i64));
    let unlocked = Arc::new(Unlocked::default());
    let iters = args.iters;
    let mut group = Group::new();
    for i in 0..args.threads {
        let (locked, unlocked) = (Arc::clone(&locked), Arc::clone(&unlocked));
        let n = 5 + 3 * i64::from(i);
        group.spawn(format!("Thread-{}", i + 1), move |gate| {
            gate.wait();
            let mut window = Window::new(race.yield_, u64::from(i));
            for _ in 0..iters {
                if race.no_lock {
                    unlocked.add(n, &mut window);
                    unlocked.add(-n, &mut window);
                } else {
                    // Python: with lock: balance = balance + n; balance = balance - n
                    let mut b = locked.lock();
                    *b += n;
                    window.open();
                    *b -= n;
                }
            }
            Ok(())
        })?;
    }
    group.open();
    join_all(group)?;
    let b = if race.no_lock {
        unlocked.0.load(Relaxed)
    } else {
        *locked.lock()
    };
    outln!(out, "balance={b}")?;
    Ok(exit::OK)
}

fn tickets(args: TicketsArgs, out: &mut Out) -> Result<u8> {
    let race = args.race;
    let quiet = out.is_quiet();
    let total = args.stock;
    let locked = Arc::new(Mutex::new(total));
    let unlocked = Arc::new(AtomicU32::new(total));
    let sold = Arc::new(AtomicU32::new(0));
    let mut group = Group::new();
    for i in 1..=args.threads {
        let (locked, unlocked, sold) = (
            Arc::clone(&locked),
            Arc::clone(&unlocked),
            Arc::clone(&sold),
        );
        group.spawn(format!("Thread-{i}"), move |gate| {
            let mut out = Out::stdout();
            out.set_quiet(quiet);
            let me = thread::current_name();
            gate.wait();
            // One purchase per buyer: no lockstep to break, so --yield
            // always yields between the check and the update.
            let pause = || {
                if race.yield_ {
                    std::thread::yield_now();
                }
            };
            let bought = if race.no_lock {
                // Check, then act: another buyer can take the same ticket
                // between the two.
                let left = unlocked.load(Relaxed);
                if left > 0 {
                    pause();
                    unlocked.store(left - 1, Relaxed);
                    Some(left)
                } else {
                    None
                }
            } else {
                let mut left = locked.lock();
                if *left > 0 {
                    let was = *left;
                    pause();
                    *left = was - 1;
                    // Printed under the lock, so the lines come in ticket order.
                    note!(
                        out,
                        "{me} bought ticket {}, {} left",
                        total - was + 1,
                        was - 1
                    )?;
                    sold.fetch_add(1, Relaxed);
                    return Ok(());
                }
                None
            };
            match bought {
                Some(was) => {
                    sold.fetch_add(1, Relaxed);
                    note!(
                        out,
                        "{me} bought ticket {}, {} left",
                        total - was + 1,
                        was - 1
                    )
                }
                None => note!(out, "{me}: sold out"),
            }
        })?;
    }
    group.open();
    join_all(group)?;
    let sold = sold.load(Relaxed);
    outln!(
        out,
        "sold={sold} sold_out={} stock={total}",
        args.threads - sold
    )?;
    if sold > total {
        outln!(out, "oversold by {}", sold - total)?;
    }
    Ok(exit::OK)
}

/// What each thread of `invariant` counted.
enum Tally {
    Writer { updates: u64 },
    Checker { checks: u64, mismatches: u64 },
}

fn invariant(args: InvariantArgs, out: &mut Out) -> Result<u8> {
    let race = args.race;
    // With the lock: both numbers in one Mutex. Without: two atomics, each
    // written by the writer alone, read one after the other by the checker.
    let locked = Arc::new(Mutex::new((0u64, 0u64)));
    let a = Arc::new(AtomicU64::new(0));
    let b = Arc::new(AtomicU64::new(0));
    let mut group = Group::new();
    {
        let (locked, a, b) = (Arc::clone(&locked), Arc::clone(&a), Arc::clone(&b));
        group.spawn("Writer", move |gate| {
            gate.wait();
            let mut window = Window::new(race.yield_, 0);
            let mut updates = 0u64;
            while !gate.is_stopped() {
                if race.no_lock {
                    a.store(a.load(Relaxed) + 1, Relaxed);
                    window.open();
                    b.store(b.load(Relaxed) + 1, Relaxed);
                } else {
                    let mut g = locked.lock();
                    g.0 += 1;
                    window.open();
                    g.1 += 1;
                }
                updates += 1;
            }
            Ok(Tally::Writer { updates })
        })?;
    }
    {
        let (locked, a, b) = (Arc::clone(&locked), Arc::clone(&a), Arc::clone(&b));
        let show = u64::from(args.show);
        group.spawn("Checker", move |gate| -> Result<Tally> {
            let mut out = Out::stdout();
            gate.wait();
            let (mut checks, mut mismatches) = (0u64, 0u64);
            // At least one check, however short the run.
            loop {
                let (x, y) = if race.no_lock {
                    let x = a.load(Relaxed);
                    (x, b.load(Relaxed))
                } else {
                    *locked.lock()
                };
                checks += 1;
                if x != y {
                    mismatches += 1;
                    if mismatches <= show {
                        outln!(out, "mismatch: a={x} b={y}")?;
                    }
                }
                if gate.is_stopped() {
                    return Ok(Tally::Checker { checks, mismatches });
                }
            }
        })?;
    }
    group.open();
    std::thread::sleep(args.seconds.0);
    group.gate().stop();
    let (mut updates, mut checks, mut mismatches) = (0, 0, 0);
    for tally in group.join()? {
        match tally? {
            Tally::Writer { updates: u } => updates = u,
            Tally::Checker {
                checks: c,
                mismatches: m,
            } => (checks, mismatches) = (c, m),
        }
    }
    outln!(
        out,
        "checks={checks} updates={updates} mismatches={mismatches}"
    )?;
    Ok(exit::OK)
}
