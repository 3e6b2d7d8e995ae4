//! `pk-pool demo` (the lesson: long tasks with apply_async, close, join)
//! and `pk-pool calls` (every Pool call of the lesson, one line each).

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::Ordering::SeqCst;
use std::time::{Duration, Instant};

use crate::cmd::Out;
use crate::cmd::Result;
use crate::cmd::duration::DurationArg;
use crate::cmd::exit;
use crate::coro::Jitter;
use crate::error::Error;
use crate::pool::{Pool, Registry, Task, TaskError};
use crate::process;
use crate::shm::SharedValue;
use crate::{note, outln};

/// `pk-pool demo`.
#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// Worker processes (1-1024): Pool(N).
    #[arg(short = 'w', long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=1024))]
    workers: u32,
    /// Tasks to submit with apply_async (1-10000).
    #[arg(short = 't', long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    tasks: u32,
    /// Each task sleeps a random time from 0 to this, as the lesson's
    /// random.random() * 3 (at most 60s).
    #[arg(long, value_name = "DURATION", default_value = "3s")]
    task_time: DurationArg,
    /// Task i finishes only after task i+1 has: the tasks finish last
    /// first, every run. Needs --workers >= --tasks.
    #[arg(long, conflicts_with = "kill_a_worker")]
    reverse: bool,
    /// The middle task SIGKILLs its own worker: its error_callback reports
    /// it lost, the pool replaces the worker and finishes the others.
    #[arg(long)]
    kill_a_worker: bool,
}

/// `pk-pool calls`.
#[derive(Debug, clap::Args)]
pub struct CallsArgs {
    /// Worker processes (2-1024); the nap list has one item per worker, at
    /// most 8.
    #[arg(short = 'w', long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(2..=1024))]
    workers: u32,
    /// How long each nap sleeps before it waits for its turn (at most 10s).
    #[arg(long, value_name = "DURATION", default_value = "100ms")]
    task_time: DurationArg,
}

/// Tasks that finish in reverse order of their index, whatever their
/// sleeps: task i (of n) waits until tasks i+1..n have finished. A counter
/// in shared memory, created before the pool forks, so every worker sees
/// it.
#[derive(Debug)]
struct Turns(SharedValue<u64>);

impl Turns {
    fn new() -> Result<Arc<Turns>> {
        Ok(Arc::new(Turns(SharedValue::new(0)?)))
    }

    /// Wait until the `n - 1 - i` tasks after task `i` have finished.
    fn wait(&self, i: u64, n: u64) {
        while self.0.atomic().load(SeqCst) < n - 1 - i {
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// One more task finished.
    fn done(&self) {
        self.0.atomic().fetch_add(1, SeqCst);
    }

    /// A new round.
    fn reset(&self) {
        self.0.atomic().store(0, SeqCst);
    }
}

/// The lesson's `long_time_task(name)`: printed from the worker, with
/// `out` quiet when pk-pool is. Argument: (task, sleep in µs, reverse,
/// tasks).
fn long_time_task(
    turns: &Turns,
    mut out: Out,
    (i, us, reverse, n): (u64, u64, bool, u64),
) -> std::result::Result<u64, String> {
    let closed = |_| "stdout closed".to_string();
    note!(out, "Run task {i} ({})...", process::getpid()).map_err(closed)?;
    let start = Instant::now();
    std::thread::sleep(Duration::from_micros(us));
    if reverse {
        turns.wait(i, n);
    }
    let said = outln!(
        out,
        "Task {i} runs {:.2} seconds.",
        start.elapsed().as_secs_f64()
    );
    if reverse {
        turns.done();
    }
    said.map_err(closed)?;
    Ok(i)
}

/// The middle task of `--kill-a-worker`: it starts as the others do, then
/// its worker dies as if killed from outside (the pool sees only a closed
/// pipe).
fn dies(mut out: Out, i: u64) -> std::result::Result<u64, String> {
    let _ = note!(out, "Run task {i} ({})...", process::getpid());
    super::crash(i).map(|_| i)
}

/// `nap(k)`: sleep, then wait until the naps after k are finished;
/// returns k. Argument: (k, sleep in µs, naps, who counts). The worker
/// counts its nap finished as it returns (`true`), or the parent counts it
/// when the result has reached it (`false`): then the next nap cannot
/// finish before the parent has seen this one, so even results read from
/// several pipes at once reach the parent in that order.
fn nap(turns: &Turns, (k, us, n, worker_counts): (u64, u64, u64, bool)) -> u64 {
    std::thread::sleep(Duration::from_micros(us));
    turns.wait(k, n);
    if worker_counts {
        turns.done();
    }
    k
}

/// The lesson's tasks, typed.
#[derive(Debug, Clone, Copy)]
struct Tasks {
    long_time_task: Task<(u64, u64, bool, u64), u64>,
    dies: Task<u64, u64>,
    square: Task<i64, i64>,
    add: Task<(i64, i64), i64>,
    nap: Task<(u64, u64, u64, bool), u64>,
    check: Task<i64, i64>,
}

/// The tasks; those that print narrate through an `Out` like `out`.
fn registry(turns: &Arc<Turns>, out: &Out) -> (Registry, Tasks) {
    let mut r = Registry::new();
    let t1 = Arc::clone(turns);
    let t2 = Arc::clone(turns);
    let quiet = out.is_quiet();
    let like = move || {
        let mut out = Out::stdout();
        out.set_quiet(quiet);
        out
    };
    let tasks = Tasks {
        long_time_task: r.task("long_time_task", move |a| long_time_task(&t1, like(), a)),
        dies: r.task("long_time_task", move |i| dies(like(), i)),
        square: r.task("square", super::square),
        add: r.task("add", |(a, b): (i64, i64)| a.wrapping_add(b)),
        nap: r.task("nap", move |a| nap(&t2, a)),
        check: r.task("check", |n: i64| {
            if n < 0 {
                Err(format!("{n} is negative"))
            } else {
                Ok(n)
            }
        }),
    };
    (r, tasks)
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// Run `pk-pool demo`.
pub fn demo(args: DemoArgs, out: &mut Out) -> Result<u8> {
    if args.task_time.0 > Duration::from_secs(60) {
        return Err(Error::invalid("--task-time", "must be at most 60s").into());
    }
    if args.reverse && args.workers < args.tasks {
        return Err(Error::invalid(
            "--reverse",
            "needs --workers >= --tasks: every task must run at once to wait for the next",
        )
        .into());
    }
    let turns = Turns::new()?;
    let (registry, t) = registry(&turns, out);
    note!(out, "Parent process {}.", process::getpid())?;
    let mut pool = Pool::new(args.workers as usize, registry)?;
    let victim = args.kill_a_worker.then_some(u64::from(args.tasks / 2));
    let mut jitter = Jitter::from_os()?;
    // Lines from the callbacks, printed where the pool calls them.
    let failed: Rc<RefCell<Vec<TaskError>>> = Rc::default();
    for i in 0..u64::from(args.tasks) {
        let on_error = {
            let failed = Rc::clone(&failed);
            move |e: TaskError| {
                let mut out = Out::stdout();
                let line = match &e {
                    TaskError::WorkerDied { pid, status, .. } => {
                        format!("task {i} lost: worker {pid} {status}")
                    }
                    other => format!("task {i}: {other}"),
                };
                let _ = outln!(out, "{line}");
                failed.borrow_mut().push(e);
            }
        };
        if Some(i) == victim {
            pool.apply_async_with(t.dies, i, |_| {}, on_error)?;
        } else {
            let us = micros(jitter.upto(args.task_time.0));
            let arg = (i, us, args.reverse, u64::from(args.tasks));
            pool.apply_async_with(t.long_time_task, arg, |_| {}, on_error)?;
        }
    }
    note!(out, "Waiting for all subprocesses done...")?;
    pool.close();
    pool.join()?;
    super::report_events(out, &mut pool)?;
    outln!(out, "All subprocesses done.")?;
    Ok(exit::OK)
}

/// A list as Python prints it: `[1, 4, 9]`.
fn list<T: std::fmt::Display>(items: impl IntoIterator<Item = T>) -> String {
    let items: Vec<String> = items.into_iter().map(|i| i.to_string()).collect();
    format!("[{}]", items.join(", "))
}

/// Every result of a call that should not fail, or the first error.
fn all<T>(results: impl IntoIterator<Item = std::result::Result<T, TaskError>>) -> Result<Vec<T>> {
    results
        .into_iter()
        .collect::<std::result::Result<Vec<T>, TaskError>>()
        .map_err(|e| Error::new(crate::ErrorKind::Other, "pool", "calls", e.to_string()).into())
}

/// Run `pk-pool calls`.
pub fn calls(args: CallsArgs, out: &mut Out) -> Result<u8> {
    if args.task_time.0 > Duration::from_secs(10) {
        return Err(Error::invalid("--task-time", "must be at most 10s").into());
    }
    let turns = Turns::new()?;
    let (registry, t) = registry(&turns, out);
    let mut pool = Pool::new(args.workers as usize, registry)?;

    let v = pool.apply(t.square, 7)?;
    outln!(out, "apply(square, 7) = {}", all([v])?[0])?;
    let h = pool.apply_async(t.square, 8)?;
    let v = pool.get(&h, None)?.expect("no timeout");
    outln!(out, "apply_async(square, 8).get() = {}", all([v])?[0])?;

    let xs = [1i64, 2, 3, 4, 5];
    let r = pool.map(t.square, &xs, 0)?;
    outln!(out, "map(square, {}) = {}", list(xs), list(all(r.iter())?))?;
    let h = pool.map_async(t.square, &xs, 0)?;
    let r = pool.get(&h, None)?.expect("no timeout");
    outln!(
        out,
        "map_async(square, {}).get() = {}",
        list(xs),
        list(all(r.iter())?)
    )?;
    let pairs = [(1i64, 2i64), (3, 4), (5, 6)];
    let r = pool.starmap(t.add, &pairs, 0)?;
    outln!(
        out,
        "starmap(add, {}) = {}",
        list(pairs.iter().map(|(a, b)| format!("({a}, {b})"))),
        list(all(r.iter())?)
    )?;

    // One nap per worker, so that all run at once and each can wait for
    // the next to finish.
    let n = u64::from(args.workers.min(8));
    let us = micros(args.task_time.0);
    let ks = list(0..n);
    let naps = |worker_counts| -> Vec<(u64, u64, u64, bool)> {
        (0..n).map(|k| (k, us, n, worker_counts)).collect()
    };
    let mut got = Vec::new();
    for r in pool.imap(t.nap, &naps(true), 1)? {
        got.push(all([r?])?[0].to_string());
    }
    outln!(out, "imap(nap, {ks}): {}", got.join(" "))?;
    turns.reset();
    let mut got = Vec::new();
    for r in pool.imap_unordered(t.nap, &naps(false), 1)? {
        let (_index, v) = r?;
        got.push(all([v])?[0].to_string());
        turns.done();
    }
    outln!(out, "imap_unordered(nap, {ks}): {}", got.join(" "))?;

    turns.reset();
    let order: Rc<RefCell<Vec<String>>> = Rc::default();
    let mut handles = Vec::new();
    for a in naps(false) {
        let order = Rc::clone(&order);
        let turns = Arc::clone(&turns);
        handles.push(pool.apply_async_with(
            t.nap,
            a,
            move |k| {
                order.borrow_mut().push(k.to_string());
                turns.done();
            },
            |e| {
                let _ = outln!(Out::stdout(), "error_callback({e})");
            },
        )?);
    }
    // The callbacks run inside the pool calls that see results come back:
    // here, wait (Python's AsyncResult.wait()).
    for h in &handles {
        pool.wait(h, None)?;
    }
    outln!(
        out,
        "apply_async(nap, k, callback) for k in {ks}: callbacks ran for {}",
        order.borrow().join(" ")
    )?;

    for k in [-1i64, 5] {
        let said: Rc<RefCell<String>> = Rc::default();
        let (s1, s2) = (Rc::clone(&said), Rc::clone(&said));
        let h = pool.apply_async_with(
            t.check,
            k,
            move |v| *s1.borrow_mut() = format!("callback({v})"),
            move |e| *s2.borrow_mut() = format!("error_callback({e})"),
        )?;
        pool.wait(&h, None)?;
        outln!(
            out,
            "apply_async(check, {k}, callback, error_callback): {}",
            said.borrow()
        )?;
    }
    pool.close();
    pool.join()?;
    note!(out, "close + join: every worker exited")?;
    Ok(exit::OK)
}
