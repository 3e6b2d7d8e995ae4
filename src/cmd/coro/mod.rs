//! `pk-coro`: cooperative tasks on one OS thread (a tokio current-thread
//! runtime): the generator, asyncio and gevent lessons: the consumer
//! generator driven by send/close, a coroutine never run, gather,
//! wait_for and a queue between tasks.

use std::cell::RefCell;
use std::fmt;
use std::rc::Rc;
use std::time::Duration;

use clap::{Parser, Subcommand};
use tokio::sync::mpsc;
use tokio::task::{JoinHandle, spawn_local};

use crate::cmd::Out;
use crate::cmd::duration::DurationArg;
use crate::cmd::exit;
use crate::cmd::{Failure, Result};
use crate::coro::{self, Clock, Jitter, Stock, Unit};
use crate::error::{Error, ErrorKind};
use crate::note;

const AFTER_HELP: &str = "\
Every demo runs all its tasks on one OS thread and ends with
  threads=1                  (the entries of /proc/self/task)
`pk-coro <demo> --help` lists the demo's output lines, and which of them
are the results that --quiet (-q, before or after the demo's name)
keeps; the lines that narrate each step go. threads=... is always kept.

Exit status: 0 when the demo ran; 2 for a bad flag; 71 when the runtime
cannot start.

Examples:
  pk-coro ask-answer --rounds 3
  pk-coro timing --scale 0.1
  pk-coro tickets --tasks 10 --stock 3 --random-delay
  pk-coro blocking --scale 0.2
  pk-coro generator --items 5
  pk-coro never-run --scale 0.1
  pk-coro gather --scale 0.1
  pk-coro wait-for --scale 0.1
  pk-coro queue --workers 3 --items 10 --scale 0.1";

const ASK_HELP: &str = "\
Output (strictly alternating, one pair per round):
  asker: question <i>
  answerer: answer <i>
  threads=1
With --quiet only threads=1: the questions and answers narrate.

Exit status: 0 when the demo ran; 2 for a bad flag; 71 when the runtime
cannot start.";

const TIMING_HELP: &str = "\
Output, twice: first `sequential` (await say(1, hello), then await say(2,
world): 3 units), then `concurrent` (spawn both tasks, then await both: 2
units, the longer of the two):
  == sequential: ...  |  == concurrent: ...
  started at <HH:MM:SS.mmm UTC>
  say(<n>, <word>): sleeping <n> unit(s)      (a task reaches its await)
  hello at +<secs>s
  world at +<secs>s
  finished at <HH:MM:SS.mmm UTC>
  sequential: elapsed <secs>s = <x> units (3 planned)
  concurrent: elapsed <secs>s = <x> units (2 planned)
  threads=1
In the concurrent run both `say(...): sleeping` lines come before `hello`:
both tasks wait at the same time. With --quiet only the two `elapsed`
lines and threads=1.

Exit status: 0 when the demo ran; 2 for a bad flag; 71 when the runtime
cannot start.";

const TICKETS_HELP: &str = "\
Output (one line per buyer task, in the order they ran):
  buyer <i>: bought a ticket, <left> left
  buyer <i>: sold out
  bought=<b> sold_out=<s> left=<left>
  threads=1
Without a lock exactly min(stock, tasks) tickets are sold: a task is never
interrupted between the check and the sale, because no await lies between
them. --yield-between puts an await there, and every buyer that checked
before anyone bought buys too: the stock is oversold (left goes negative).
With --quiet only the bought=... line and threads=1.

Exit status: 0 when the demo ran; 2 for a bad flag; 71 when the runtime
cannot start.";

const BLOCKING_HELP: &str = "\
Output, three times: `blocked` (the sleeper calls std::thread::sleep on the
runtime thread), `fix 1` (it awaits tokio::time::sleep), `fix 2` (it awaits
spawn_blocking, which runs the sleep on a pool thread):
  == blocked: ...  |  == fix 1: ...  |  == fix 2: ...
  ticker: started, a tick due every unit
  sleeper: <how it sleeps> for <n> units
  ticker: tick <k> at +<secs>s, due +<secs>s, late by <secs>s
  sleeper: woke at +<secs>s
  threads=1           (blocked, fix 1)
  threads=2 during spawn_blocking (the runtime thread + one pool thread)
When blocked, `sleeper: woke` comes before every tick: no task ran while
the only thread slept, and every tick is late. With --quiet only the
`==` titles, the tick lines and threads=1 (the `started`, `sleeper:` and
`threads=2 during` lines go).

Exit status: 0 when the demo ran; 2 for a bad flag; 71 when the runtime
cannot start.";

/// Cooperative tasks on one OS thread: generators (send, close), asyncio
/// (gather, wait_for, Queue), gevent.
#[derive(Debug, Parser)]
#[command(name = "pk-coro", version, after_help = AFTER_HELP)]
pub struct Args {
    /// The demo to run.
    #[command(subcommand)]
    pub demo: Demo,

    /// Print only the result lines (see the demo's --help). Before or
    /// after the demo's name.
    #[arg(short, long, global = true)]
    pub quiet: bool,
}

/// The demos.
#[derive(Debug, Subcommand)]
pub enum Demo {
    /// Two tasks take turns: a question, then its answer (the generator lesson).
    #[command(after_help = ASK_HELP)]
    AskAnswer {
        /// Rounds of question and answer (1-10000).
        #[arg(short = 'n', long, value_name = "N", default_value_t = 5,
              value_parser = clap::value_parser!(u32).range(1..=10_000))]
        rounds: u32,
    },
    /// say(1, hello) and say(2, world): awaited one after another (3 units),
    /// then spawned as tasks (2 units).
    #[command(after_help = TIMING_HELP)]
    Timing {
        /// Seconds per unit (0.001-10); the lesson's units are seconds.
        #[arg(long, value_name = "SECS", default_value = "1")]
        scale: Unit,
    },
    /// N buyer tasks rush a stock of K tickets with no lock (the gevent lesson).
    #[command(after_help = TICKETS_HELP)]
    Tickets {
        /// Buyer tasks (1-10000).
        #[arg(short = 'n', long, value_name = "N", default_value_t = 10,
              value_parser = clap::value_parser!(u32).range(1..=10_000))]
        tasks: u32,
        /// Tickets in stock (0-10000).
        #[arg(short = 'k', long, value_name = "K", default_value_t = 3,
              value_parser = clap::value_parser!(u32).range(0..=10_000))]
        stock: u32,
        /// Each buyer first awaits a random delay (0 to --max-delay).
        #[arg(long)]
        random_delay: bool,
        /// The longest random delay (2, 1.5s, 250ms; at most 10s).
        #[arg(long, value_name = "DURATION", default_value = "50ms")]
        max_delay: DurationArg,
        /// Await (yield) between checking the stock and taking a ticket: oversells.
        #[arg(long)]
        yield_between: bool,
    },
    /// The consumer generator driven by send(None), send(n), close(): a
    /// state machine by hand (Python's generator protocol).
    #[command(after_help = asyncio::GENERATOR_HELP)]
    Generator {
        /// Items the producer sends (1-10000).
        #[arg(short = 'n', long, value_name = "N", default_value_t = 5,
              value_parser = clap::value_parser!(u64).range(1..=10_000))]
        items: u64,
    },
    /// A coroutine created and never run does nothing (Python's
    /// print(say(1))); then one awaited.
    #[command(after_help = asyncio::NEVER_RUN_HELP)]
    NeverRun {
        /// Seconds per unit (0.001-10).
        #[arg(long, value_name = "SECS", default_value = "1")]
        scale: Unit,
    },
    /// asyncio.gather of three factorial coroutines: results in argument order.
    #[command(after_help = asyncio::GATHER_HELP)]
    Gather {
        /// Seconds per unit (0.001-10).
        #[arg(long, value_name = "SECS", default_value = "1")]
        scale: Unit,
    },
    /// asyncio.wait_for with a timeout: the slow coroutine is cancelled.
    #[command(after_help = asyncio::WAIT_FOR_HELP)]
    WaitFor {
        /// Seconds per unit (0.001-10).
        #[arg(long, value_name = "SECS", default_value = "1")]
        scale: Unit,
    },
    /// asyncio.Queue between worker coroutines: get, task_done, join, cancel.
    #[command(after_help = asyncio::QUEUE_HELP)]
    Queue {
        /// Seconds per unit (0.001-10).
        #[arg(long, value_name = "SECS", default_value = "1")]
        scale: Unit,
        /// Worker tasks (1-1000).
        #[arg(short = 'w', long, value_name = "N", default_value_t = 3,
              value_parser = clap::value_parser!(u32).range(1..=1000))]
        workers: u32,
        /// Items put in the queue (1-10000).
        #[arg(short = 'n', long, value_name = "N", default_value_t = 10,
              value_parser = clap::value_parser!(u32).range(1..=10_000))]
        items: u32,
    },
    /// A blocking sleep inside a task delays every task; then two fixes.
    #[command(after_help = BLOCKING_HELP)]
    Blocking {
        /// Seconds per unit (0.001-10).
        #[arg(long, value_name = "SECS", default_value = "1")]
        scale: Unit,
        /// How many units the sleeper sleeps (1-100); the ticker ticks as many times.
        #[arg(long, value_name = "UNITS", default_value_t = 3,
              value_parser = clap::value_parser!(u32).range(1..=100))]
        block: u32,
    },
}

/// Lines printed from many tasks on the one thread: each line is written
/// whole (one write(2)) before any other task can run.
#[derive(Debug, Clone)]
pub(crate) struct Log(Rc<RefCell<Out>>);

impl Log {
    /// A result line (kept by --quiet).
    fn line(&self, args: fmt::Arguments<'_>) -> Result<()> {
        self.0.borrow_mut().line(args)
    }

    /// A line that narrates (dropped by --quiet): `note!(log, ...)`.
    fn note(&self, args: fmt::Arguments<'_>) -> Result<()> {
        self.0.borrow_mut().note(args)
    }
}

/// `say!(log, ...)`: a result line; `note!(log, ...)` narrates.
macro_rules! say {
    ($log:expr, $($arg:tt)*) => { $log.line(format_args!($($arg)*)) };
}

mod asyncio;

/// Run a demo.
pub fn run(args: Args, out: &mut Out) -> Result<u8> {
    if let Demo::Tickets { max_delay, .. } = &args.demo {
        if max_delay.0 > Duration::from_secs(10) {
            return Err(Error::invalid("--max-delay", "must be at most 10s").into());
        }
    }
    out.set_quiet(args.quiet);
    let (rt, local) = coro::runtime()?;
    let log = Log(Rc::new(RefCell::new(std::mem::take(out))));
    local.block_on(&rt, async move {
        match args.demo {
            Demo::AskAnswer { rounds } => ask_answer(&log, rounds).await?,
            Demo::Timing { scale } => timing(&log, scale).await?,
            Demo::Tickets {
                tasks,
                stock,
                random_delay,
                max_delay,
                yield_between,
            } => {
                let max = if random_delay {
                    max_delay.0
                } else {
                    Duration::ZERO
                };
                tickets(&log, tasks, stock, max, yield_between).await?;
            }
            Demo::Blocking { scale, block } => blocking(&log, scale, block).await?,
            Demo::Generator { items } => asyncio::generator(&log, items).await?,
            Demo::NeverRun { scale } => asyncio::never_run(&log, scale).await?,
            Demo::Gather { scale } => asyncio::gather(&log, scale).await?,
            Demo::WaitFor { scale } => asyncio::wait_for(&log, scale).await?,
            Demo::Queue {
                scale,
                workers,
                items,
            } => asyncio::queue(&log, scale, workers, items).await?,
        }
        Ok(exit::OK)
    })
}

/// Await a task and pass on its error; a panic inside it becomes an error
/// too (the panic hook has already printed its line).
async fn join<T, E: Into<Failure>>(handle: JoinHandle<Result<T, E>>, what: &str) -> Result<T> {
    match handle.await {
        Ok(r) => r.map_err(Into::into),
        Err(e) => Err(Error::new(ErrorKind::Panicked, "join", what, e.to_string()).into()),
    }
}

pub(crate) async fn threads_line(log: &Log) -> Result<()> {
    let n = coro::os_threads()?;
    say!(log, "threads={n}")
}

// ---- ask-answer ----------------------------------------------------------

async fn ask_answer(log: &Log, rounds: u32) -> Result<()> {
    // Two rendezvous channels: the asker hands over a question and waits for
    // its answer, so the two tasks strictly take turns.
    let (q_tx, mut q_rx) = mpsc::channel::<u32>(1);
    let (a_tx, mut a_rx) = mpsc::channel::<u32>(1);
    let alog = log.clone();
    let answerer = spawn_local(async move {
        while let Some(i) = q_rx.recv().await {
            note!(alog, "answerer: answer {i}")?;
            if a_tx.send(i).await.is_err() {
                break;
            }
        }
        Ok::<(), Failure>(())
    });
    for i in 1..=rounds {
        note!(log, "asker: question {i}")?;
        if q_tx.send(i).await.is_err() || a_rx.recv().await != Some(i) {
            break; // the answerer stopped: its error comes from join below
        }
    }
    drop(q_tx);
    join(answerer, "answerer").await?;
    threads_line(log).await
}

// ---- timing --------------------------------------------------------------

pub(crate) async fn say_after(
    log: Log,
    clock: Clock,
    unit: Unit,
    n: u32,
    word: &'static str,
) -> Result<()> {
    note!(
        log,
        "say({n}, {word}): sleeping {n} unit{}",
        if n == 1 { "" } else { "s" }
    )?;
    tokio::time::sleep(unit.times(n)).await;
    note!(log, "{word} at +{:.3}s", clock.elapsed().as_secs_f64())
}

async fn timing(log: &Log, unit: Unit) -> Result<()> {
    note!(
        log,
        "== sequential: await say(1, hello), then await say(2, world)"
    )?;
    let clock = Clock::start();
    note!(log, "started at {} UTC", coro::time_of_day())?;
    say_after(log.clone(), clock, unit, 1, "hello").await?;
    say_after(log.clone(), clock, unit, 2, "world").await?;
    let seq = clock.elapsed();
    note!(log, "finished at {} UTC", coro::time_of_day())?;
    say!(
        log,
        "sequential: elapsed {:.3}s = {:.1} units (3 planned)",
        seq.as_secs_f64(),
        unit.count(seq)
    )?;

    note!(
        log,
        "== concurrent: spawn say(1, hello) and say(2, world), then await both"
    )?;
    let clock = Clock::start();
    note!(log, "started at {} UTC", coro::time_of_day())?;
    let t1 = spawn_local(say_after(log.clone(), clock, unit, 1, "hello"));
    let t2 = spawn_local(say_after(log.clone(), clock, unit, 2, "world"));
    join(t1, "say(1, hello)").await?;
    join(t2, "say(2, world)").await?;
    let conc = clock.elapsed();
    note!(log, "finished at {} UTC", coro::time_of_day())?;
    say!(
        log,
        "concurrent: elapsed {:.3}s = {:.1} units (2 planned)",
        conc.as_secs_f64(),
        unit.count(conc)
    )?;
    threads_line(log).await
}

// ---- tickets -------------------------------------------------------------

async fn buyer(
    log: Log,
    stock: Stock,
    i: u32,
    delay: Duration,
    yield_between: bool,
) -> Result<bool> {
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let bought = if yield_between {
        if stock.left() > 0 {
            // A switch point between the check and the sale: every other
            // buyer may run here and pass the same check.
            tokio::task::yield_now().await;
            Some(stock.take_unchecked())
        } else {
            None
        }
    } else {
        stock.try_take()
    };
    match bought {
        Some(left) => note!(log, "buyer {i}: bought a ticket, {left} left")?,
        None => note!(log, "buyer {i}: sold out")?,
    }
    Ok(bought.is_some())
}

async fn tickets(
    log: &Log,
    tasks: u32,
    stock: u32,
    max_delay: Duration,
    yield_between: bool,
) -> Result<()> {
    let shared = Stock::new(stock);
    let mut jitter = Jitter::from_os()?;
    let handles: Vec<_> = (1..=tasks)
        .map(|i| {
            let delay = jitter.upto(max_delay);
            spawn_local(buyer(log.clone(), shared.clone(), i, delay, yield_between))
        })
        .collect();
    let mut bought = 0;
    for h in handles {
        if join(h, "buyer").await? {
            bought += 1;
        }
    }
    say!(
        log,
        "bought={bought} sold_out={} left={}",
        tasks - bought,
        shared.left()
    )?;
    threads_line(log).await
}

// ---- blocking ------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq)]
enum Sleep {
    Blocked,
    Await,
    SpawnBlocking,
}

async fn ticker(log: Log, clock: Clock, unit: Unit, ticks: u32) -> Result<()> {
    note!(log, "ticker: started, a tick due every unit")?;
    for k in 1..=ticks {
        let due = clock.origin() + unit.times(k);
        tokio::time::sleep_until(due.into()).await;
        let at = clock.elapsed();
        let late = at.saturating_sub(unit.times(k));
        say!(
            log,
            "ticker: tick {k} at +{:.3}s, due +{:.3}s, late by {:.3}s",
            at.as_secs_f64(),
            unit.times(k).as_secs_f64(),
            late.as_secs_f64()
        )?;
    }
    Ok(())
}

async fn sleeper(log: Log, clock: Clock, unit: Unit, units: u32, how: Sleep) -> Result<()> {
    let d = unit.times(units);
    // The thread count seen while sleeping, for spawn_blocking.
    let during = match how {
        Sleep::Blocked => {
            note!(
                log,
                "sleeper: std::thread::sleep on the runtime thread for {units} units"
            )?;
            std::thread::sleep(d);
            None
        }
        Sleep::Await => {
            note!(
                log,
                "sleeper: tokio::time::sleep(..).await for {units} units"
            )?;
            tokio::time::sleep(d).await;
            None
        }
        Sleep::SpawnBlocking => {
            note!(
                log,
                "sleeper: spawn_blocking(std::thread::sleep).await for {units} units"
            )?;
            let sleeper = tokio::task::spawn_blocking(move || {
                std::thread::sleep(d);
                coro::os_threads()
            });
            Some(join(sleeper, "spawn_blocking").await?)
        }
    };
    note!(
        log,
        "sleeper: woke at +{:.3}s",
        clock.elapsed().as_secs_f64()
    )?;
    match during {
        Some(n) => note!(
            log,
            "threads={n} during spawn_blocking (the runtime thread + one pool thread)"
        ),
        None => Ok(()),
    }
}

async fn blocking(log: &Log, unit: Unit, units: u32) -> Result<()> {
    for (how, title) in [
        (
            Sleep::Blocked,
            "== blocked: a task calls std::thread::sleep, a blocking call",
        ),
        (Sleep::Await, "== fix 1: the task awaits tokio::time::sleep"),
        (
            Sleep::SpawnBlocking,
            "== fix 2: the task awaits spawn_blocking, the sleep runs on a pool thread",
        ),
    ] {
        say!(log, "{title}")?;
        let clock = Clock::start();
        let t = spawn_local(ticker(log.clone(), clock, unit, units));
        let s = spawn_local(sleeper(log.clone(), clock, unit, units, how));
        join(t, "ticker").await?;
        join(s, "sleeper").await?;
        if how != Sleep::SpawnBlocking {
            threads_line(log).await?;
        }
    }
    Ok(())
}
