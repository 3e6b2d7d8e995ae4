//! pk-coro's generator and asyncio demos: the consumer generator driven
//! with send/close, a coroutine created and never run, gather, wait_for,
//! and a queue between worker tasks.

use std::time::Duration;

use super::{Log, say_after, threads_line};
use crate::cmd::{Failure, Result};
use crate::coro::{self, Consumer, GenState, Jitter, SendError, TaskQueue, Unit};
use crate::note;

pub(super) const GENERATOR_HELP: &str = "\
The lesson's consumer generator (c = consumer(); produce(c)), written as a
state machine: Rust has no stable generators (std::ops::Coroutine,
#[coroutine] closures and gen blocks are nightly-only), so each send runs
the body from where it is suspended to its next yield by hand, as the
compiler does for every async fn.

Output (in this order; c.send(None) primes it and prints nothing):
  [PRODUCER] Producing <i>...
  [CONSUMER] Consuming <i>...
  [PRODUCER] Consumer return: 200 OK          (for i = 1..=N)
  c.close() -> GEN_CLOSED
  c.send(<N+1>) -> StopIteration
  consumer().send(1) -> TypeError: can't send non-None value to a just-started generator; state GEN_CREATED
  threads=1
With --quiet only what the calls return: the `Consumer return`, `->` and
threads=1 lines (`Producing` and `Consuming` go).

Exit status: 0 when the demo ran; 2 for a bad flag.";

pub(super) const NEVER_RUN_HELP: &str = "\
Python: print(say(1)) shows <coroutine object say at 0x...> and runs
nothing (RuntimeWarning: coroutine 'say' was never awaited). Calling an
async fn makes a future that does nothing until it is polled: dropped
unpolled, it never ran (rustc warns: futures do nothing unless you
`.await` or poll them).

Output (in this order; say(1, hello) never prints):
  let fut = say(1, hello): a <TYPE> of <N> bytes; nothing ran (Python: ...)
  drop(fut): never polled, so say(1, hello) never ran (...)
  say(2, world).await:
  say(2, world): sleeping 2 units
  world at +<secs>s
  threads=1
With --quiet only the `drop(fut)` line and threads=1.

Exit status: 0 when the demo ran; 2 for a bad flag.";

pub(super) const GATHER_HELP: &str = "\
asyncio.gather(factorial(\"A\", 2), factorial(\"B\", 3), factorial(\"C\", 4)),
Python's documentation example: the three run at once, each awaiting a
sleep of 1 unit per step; gather returns their results in argument order.

Output (the Task lines of A, B and C interleave):
  Task <X>: Compute factorial(<n>), currently i=<i>...
  Task <X>: factorial(<n>) = <f>
  gather(...) = [2, 6, 24] in <x> units (3 planned: the longest, not the sum 6)
  threads=1
With --quiet only the gather(...) line and threads=1.

Exit status: 0 when the demo ran; 2 for a bad flag.";

pub(super) const WAIT_FOR_HELP: &str = "\
asyncio.wait_for(eternity(), timeout=1.0), Python's documentation example:
eternity sleeps an hour and would print 'yay!'; after the timeout it is
cancelled where it awaits, so 'yay!' never prints. Then a coroutine that
finishes in time gives its value.

Output (in this order):
  wait_for(eternity(), timeout=1 unit): timeout! (eternity was cancelled at its await: 'yay!' never prints)
  wait_for(quick(), timeout=1 hour) = 42
  threads=1
Every line is a result: --quiet prints them all.

Exit status: 0 when the demo ran; 2 for a bad flag.";

pub(super) const QUEUE_HELP: &str = "\
asyncio.Queue between coroutines, Python's documentation example: N items
of a random sleep (0.05 to 1 unit) are put, W worker tasks get them, sleep,
call task_done(); main awaits queue.join(), then cancels the workers.

Output:
  queue: <N> items put, <W> worker tasks
  worker-<w> has slept for <secs> seconds (item <k>)    (each item once)
  queue.join() returned: all <N> items done, unfinished=0
  cancelled <W> workers (task.cancel())
  ====
  <W> workers slept in parallel for <secs> seconds
  total expected sleep time: <secs> seconds
  threads=1
join() returns only after the last task_done(): its line comes after
every worker line. With --quiet only the `queue.join() returned`,
`cancelled`, `slept in parallel`, `total expected` and threads=1 lines.

Exit status: 0 when the demo ran; 2 for a bad flag.";

// ---- generator ------------------------------------------------------------

/// The lesson's `produce(c)`: prime the consumer, send it 1..=n, close it.
/// Then what the protocol does at its edges.
pub(super) async fn generator(log: &Log, n: u64) -> Result<()> {
    let consumer = |log: Log| {
        Consumer::new(move |n| -> Result<String> {
            note!(log, "[CONSUMER] Consuming {n}...")?;
            Ok("200 OK".to_string())
        })
    };
    let mut c = consumer(log.clone());
    // c.send(None): run to the first yield.
    send(&mut c, None)?;
    for i in 1..=n {
        note!(log, "[PRODUCER] Producing {i}...")?;
        let r = send(&mut c, Some(i))?;
        say!(log, "[PRODUCER] Consumer return: {r}")?;
    }
    c.close();
    say!(log, "c.close() -> {}", c.state())?;
    match c.send(Some(n + 1)) {
        Err(SendError::Stopped) => say!(log, "c.send({}) -> StopIteration", n + 1)?,
        other => unreachable!("a closed generator stops: {other:?}"),
    }
    let mut fresh = consumer(log.clone());
    match fresh.send(Some(1)) {
        Err(e @ SendError::JustStarted) => {
            say!(log, "consumer().send(1) -> {e}; state {}", fresh.state())?
        }
        other => unreachable!("a new generator needs send(None): {other:?}"),
    }
    debug_assert_eq!(fresh.state(), GenState::Created);
    threads_line(log).await
}

/// One send; the body's own failure (a closed stdout) passes through.
fn send<F>(c: &mut Consumer<F>, v: Option<u64>) -> Result<String>
where
    F: FnMut(u64) -> Result<String>,
{
    c.send(v).map_err(|e| match e {
        SendError::Body(f) => f,
        other => Failure::from(crate::error::Error::new(
            crate::ErrorKind::Other,
            "send",
            "consumer",
            other.to_string(),
        )),
    })
}

// ---- never-run -------------------------------------------------------------

/// `print(say(1))` in Python makes a coroutine object and runs nothing; so
/// does calling an `async fn` here: the future does nothing until polled.
pub(super) async fn never_run(log: &Log, unit: Unit) -> Result<()> {
    let clock = coro::Clock::start();
    let fut = say_after(log.clone(), clock, unit, 1, "hello");
    note!(
        log,
        "let fut = say(1, hello): a {} of {} bytes; nothing ran (Python: <coroutine object say at 0x...>)",
        std::any::type_name_of_val(&fut),
        std::mem::size_of_val(&fut)
    )?;
    drop(fut);
    say!(
        log,
        "drop(fut): never polled, so say(1, hello) never ran (Python: RuntimeWarning: coroutine 'say' was never awaited; rustc: futures do nothing unless you `.await` or poll them)"
    )?;
    note!(log, "say(2, world).await:")?;
    say_after(log.clone(), clock, unit, 2, "world").await?;
    threads_line(log).await
}

// ---- gather ----------------------------------------------------------------

/// Python's documentation example: `gather(factorial("A", 2),
/// factorial("B", 3), factorial("C", 4))`.
async fn factorial(log: Log, unit: Unit, name: &'static str, number: u64) -> Result<u64> {
    let mut f = 1u64;
    for i in 2..=number {
        note!(
            log,
            "Task {name}: Compute factorial({number}), currently i={i}..."
        )?;
        tokio::time::sleep(unit.duration()).await;
        f *= i;
    }
    note!(log, "Task {name}: factorial({number}) = {f}")?;
    Ok(f)
}

pub(super) async fn gather(log: &Log, unit: Unit) -> Result<()> {
    let clock = coro::Clock::start();
    let results = coro::gather([
        factorial(log.clone(), unit, "A", 2),
        factorial(log.clone(), unit, "B", 3),
        factorial(log.clone(), unit, "C", 4),
    ])
    .await?;
    let values = results.into_iter().collect::<Result<Vec<u64>>>()?;
    say!(
        log,
        "gather(...) = {values:?} in {:.1} units (3 planned: the longest, not the sum 6)",
        unit.count(clock.elapsed())
    )?;
    threads_line(log).await
}

// ---- wait-for --------------------------------------------------------------

/// Python's documentation example: `wait_for(eternity(), timeout=1.0)`.
pub(super) async fn wait_for(log: &Log, unit: Unit) -> Result<()> {
    let eternity = {
        let log = log.clone();
        async move {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            say!(log, "yay!")
        }
    };
    match coro::wait_for(eternity, unit.duration()).await {
        Ok(r) => r?,
        Err(e) if e.is_timed_out() => say!(
            log,
            "wait_for(eternity(), timeout=1 unit): timeout! (eternity was cancelled at its await: 'yay!' never prints)"
        )?,
        Err(e) => return Err(e.into()),
    }
    let quick = async { 42 };
    let v = coro::wait_for(quick, Duration::from_secs(3600)).await?;
    say!(log, "wait_for(quick(), timeout=1 hour) = {v}")?;
    threads_line(log).await
}

// ---- queue -----------------------------------------------------------------

/// Python's documentation example of `asyncio.Queue`: workers take sleep
/// times from a queue; main waits in `queue.join()`, then cancels them.
pub(super) async fn queue(log: &Log, unit: Unit, workers: u32, items: u32) -> Result<()> {
    let q: TaskQueue<(u32, Duration)> = TaskQueue::new(0);
    let mut jitter = Jitter::from_os()?;
    let mut total = Duration::ZERO;
    for k in 1..=items {
        // random.uniform(0.05, 1.0) units
        let d = unit.duration().mul_f64(0.05) + jitter.upto(unit.duration().mul_f64(0.95));
        total += d;
        q.try_put((k, d))
            .expect("an unbounded queue takes every item");
    }
    note!(log, "queue: {items} items put, {workers} worker tasks")?;
    let clock = coro::Clock::start();
    let mut tasks = Vec::new();
    for w in 0..workers {
        let (q, log) = (q.clone(), log.clone());
        tasks.push(tokio::task::spawn_local(async move {
            loop {
                let (k, d) = q.get().await;
                tokio::time::sleep(d).await;
                // Every item taken is marked done, or join would wait for
                // ever; a line that cannot be written shows on main's next.
                let _ = q.task_done();
                let _ = note!(
                    log,
                    "worker-{w} has slept for {:.2} seconds (item {k})",
                    d.as_secs_f64()
                );
            }
        }));
    }
    q.join().await;
    let took = clock.elapsed();
    say!(
        log,
        "queue.join() returned: all {items} items done, unfinished={}",
        q.unfinished()
    )?;
    let mut cancelled = 0;
    for t in tasks {
        t.abort();
        if t.await.is_err_and(|e| e.is_cancelled()) {
            cancelled += 1;
        }
    }
    say!(log, "cancelled {cancelled} workers (task.cancel())")?;
    note!(log, "====")?;
    say!(
        log,
        "{workers} workers slept in parallel for {:.2} seconds",
        took.as_secs_f64()
    )?;
    say!(
        log,
        "total expected sleep time: {:.2} seconds",
        total.as_secs_f64()
    )?;
    threads_line(log).await
}
