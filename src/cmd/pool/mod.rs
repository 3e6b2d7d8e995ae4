//! `pk-pool`: Python's `multiprocessing.Pool` — the lesson's
//! apply_async of long tasks, then apply, map, map_async, imap,
//! imap_unordered, starmap and callbacks — on pre-forked workers that
//! never hang when one dies.

use clap::{Parser, Subcommand};
use nix::sys::signal::Signal;

use crate::cmd::Out;
use crate::cmd::Result;
use crate::cmd::exit;
use crate::error::Error;
use crate::pool::{Event, Pool, Registry, Task};
use crate::process;
use crate::{note, outln};

mod exec;
mod lesson;

const AFTER_HELP: &str = "\
pk-pool demo [--workers 4] [--tasks 5] [--task-time 3s] [--reverse] [--kill-a-worker]
  Python's lesson: Pool(4), apply_async(long_time_task, (i,)) for 5 tasks,
  close(), join(). Each task sleeps a random time up to --task-time.
  Parent process <pid>.
  Waiting for all subprocesses done...         (right after the apply_async calls)
  Run task <i> (<worker pid>)...                (printed by the worker as it starts)
  Task <i> runs <secs> seconds.                 (by the worker, as it finishes)
  All subprocesses done.                        (after close + join)
  The Run and Task lines come in the order the workers reach them: not
  the task order. With more tasks than workers, a task starts only when a
  worker is free: `Run task 4` comes after some `Task <k> runs` line.
  --reverse: task i finishes only after task i+1 (a counter in shared
  memory), so the Task lines come last task first, every run (needs
  --workers >= --tasks).
  --kill-a-worker: the middle task SIGKILLs its worker; its error_callback
  prints `task <i> lost: worker <pid> killed by signal 9 (SIGKILL)`, the
  pool replaces the worker (`worker <pid> ...; replaced by worker <pid>`)
  and the other tasks finish. Python's Pool would wait for ever.

pk-pool calls [--workers 4] [--task-time 100ms]
  Every Pool call of the lesson, one line each, named by its Python call:
  apply(square, 7) = 49                            (blocks until the result is back)
  apply_async(square, 8).get() = 64
  map(square, [1, 2, 3, 4, 5]) = [1, 4, 9, 16, 25]
  map_async(square, [1, 2, 3, 4, 5]).get() = [1, 4, 9, 16, 25]
  starmap(add, [(1, 2), (3, 4), (5, 6)]) = [3, 7, 11]
  imap(nap, [0, 1, 2, 3]): 0 1 2 3                 (argument order)
  imap_unordered(nap, [0, 1, 2, 3]): 3 2 1 0       (as they finish)
  apply_async(nap, k, callback) for k in [0, 1, 2, 3]: callbacks ran for 3 2 1 0
  apply_async(check, -1, callback, error_callback): error_callback(task check[0] failed: -1 is negative)
  apply_async(check, 5, callback, error_callback): callback(5)
  nap(k) sleeps --task-time and finishes only after nap(k+1) has (a
  counter in shared memory): the last argument finishes first, every run.
  The list has one nap per worker (at most 8).
pk-pool map [--workers 2] [--chunksize C] 1 2 3 4 5   ->  [1, 4, 9, 16, 25]
pk-pool map --range N                                 ->  the squares of 0..N
pk-pool map --range 100 -c 10 --kill-worker-at 35     ->  items 30-39 `error` (their worker
  died), the rest squared; one `pk-pool: task square_or_die[<i>] lost: worker <pid> killed
  by signal 9 (SIGKILL)` line on stderr per lost item
  A failed item prints as `error` in the list and one `pk-pool: task square[<i>]
  failed: <why>` line on stderr (an i64 overflow, for example).

pk-pool exec [-j N] [OPTIONS] -- CMD ARGS...   (xargs -P / GNU parallel; see
  pk-pool exec --help for its options, output and exit statuses)
  printf '%s\\n' a b c | pk-pool exec -j 2 -- echo item {}

--quiet (-q, before or after the command's name) keeps the results: in
`demo` the `Task <i> runs`, `task <i> lost` and `All subprocesses done.`
lines (`Parent process`, `Waiting for`, `Run task` and the replaced
worker's line go); in `calls` every line above (the closing `close +
join` note goes); `map` prints only its result anyway; for `exec` see
pk-pool exec --help.

Exit status: 0 when the demo ran or every task succeeded; 1 when a map task
failed; 2 for a bad flag or value; 71 when a system call fails.";

/// A pre-forked process pool: apply_async, map, close/join, dead workers.
#[derive(Debug, Parser)]
#[command(name = "pk-pool", version, after_help = AFTER_HELP)]
pub struct Args {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,

    /// Print only the results (demo, calls), or no note of pk-pool's own
    /// that is not a failure (exec; see below). Before or after the
    /// command's name.
    #[arg(short, long, global = true)]
    pub quiet: bool,
}

/// pk-pool's subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// For each input item, run CMD with `{}` replaced by the item (or the
    /// items appended), N at a time, here or on ssh hosts: xargs -P and GNU
    /// parallel.
    Exec(exec::ExecArgs),
    /// The remote side of `exec -S HOST`, started through ssh.
    #[command(hide = true)]
    Worker(exec::WorkerArgs),
    /// Ends the jobs of a SIGKILLed `exec`, started by it.
    #[command(hide = true)]
    Guard(exec::GuardArgs),
    /// The lesson: apply_async of long tasks on Pool(4), "Waiting for all
    /// subprocesses done...", close, join, "All subprocesses done.".
    Demo(lesson::DemoArgs),
    /// apply, apply_async + get, map, map_async, starmap, imap,
    /// imap_unordered, callback and error_callback: one line each.
    Calls(lesson::CallsArgs),
    /// map(square, items): results in item order.
    Map {
        /// Worker processes (1-1024).
        #[arg(short = 'w', long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=1024))]
        workers: u32,
        /// Items per task message (0: four chunks per worker).
        #[arg(short = 'c', long, default_value_t = 0, value_parser = clap::value_parser!(u32).range(0..=1_000_000))]
        chunksize: u32,
        /// Square 0..N instead of the listed items (1-10000000).
        #[arg(long, value_name = "N", conflicts_with = "items", value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
        range: Option<u64>,
        /// The worker that squares item I SIGKILLs itself first: that item's
        /// chunk is reported lost, the pool replaces the worker and finishes the rest.
        #[arg(long, value_name = "I")]
        kill_worker_at: Option<usize>,
        /// The integers to square.
        #[arg(required_unless_present = "range", allow_negative_numbers = true)]
        items: Vec<i64>,
    },
}

/// `crash`: the worker dies as if killed from outside; the pool sees only
/// a closed pipe.
pub(super) fn crash(_: u64) -> std::result::Result<String, String> {
    let _ = process::die_of(Signal::SIGKILL);
    Err("SIGKILL did not end the worker".into())
}

/// The `square` task of `pk-pool map`: an i64, squared, or an overflow
/// error.
pub fn square(n: i64) -> std::result::Result<i64, String> {
    n.checked_mul(n)
        .ok_or_else(|| format!("{n} squared overflows i64"))
}

/// `square`, or, when `die` is set, the worker SIGKILLs itself first.
fn square_or_die((die, n): (bool, i64)) -> std::result::Result<i64, String> {
    if die {
        crash(0)?;
    }
    square(n)
}

/// The typed handles of pk-pool's tasks.
#[derive(Debug, Clone, Copy)]
pub struct Tasks {
    /// An i64 squared.
    pub square: Task<i64, i64>,
    /// An i64 squared, or the worker dies first when the flag is set.
    pub square_or_die: Task<(bool, i64), i64>,
}

/// The tasks pk-pool's workers know: the typed ones, and `exec` (raw,
/// by name).
pub fn registry() -> (Registry, Tasks) {
    let mut registry = Registry::new().register("exec", exec::exec_task);
    let tasks = Tasks {
        square: registry.task("square", square),
        square_or_die: registry.task("square_or_die", square_or_die),
    };
    (registry, tasks)
}

fn pool_with_tasks(workers: u32) -> Result<(Pool, Tasks)> {
    let (registry, tasks) = registry();
    Ok((Pool::new(workers as usize, registry)?, tasks))
}

/// Run pk-pool.
pub fn run(args: Args, out: &mut Out) -> Result<u8> {
    out.set_quiet(args.quiet);
    match args.command {
        Command::Exec(a) => exec::run(a, args.quiet),
        Command::Worker(a) => exec::worker(a),
        Command::Guard(a) => exec::guard(a),
        Command::Demo(a) => lesson::demo(a, out),
        Command::Calls(a) => lesson::calls(a, out),
        Command::Map {
            workers,
            chunksize,
            range,
            kill_worker_at,
            items,
        } => {
            let values: Vec<i64> = match range {
                Some(n) => (0..n as i64).collect(),
                None => items,
            };
            map(out, workers, chunksize, &values, kill_worker_at)
        }
    }
}

/// Print the workers the pool replaced since the last call.
pub(super) fn report_events(out: &mut Out, pool: &mut Pool) -> Result<()> {
    for Event::Replaced { old, status, new } in pool.take_events() {
        note!(out, "worker {old} {status}; replaced by worker {new}")?;
    }
    Ok(())
}

fn map(
    out: &mut Out,
    workers: u32,
    chunksize: u32,
    values: &[i64],
    kill_worker_at: Option<usize>,
) -> Result<u8> {
    let (mut pool, t) = pool_with_tasks(workers)?;
    let chunk = chunksize as usize;
    let results = if let Some(victim) = kill_worker_at {
        if victim >= values.len() {
            return Err(Error::invalid(
                "--kill-worker-at",
                format!("there are only {} items", values.len()),
            )
            .into());
        }
        let args: Vec<(bool, i64)> = values
            .iter()
            .enumerate()
            .map(|(i, &v)| (i == victim, v))
            .collect();
        pool.map(t.square_or_die, &args, chunk)?
    } else {
        pool.map(t.square, values, chunk)?
    };
    pool.close();
    pool.join()?;
    let mut line = String::with_capacity(results.len() * 8 + 2);
    let mut failed = Vec::new();
    line.push('[');
    for (i, r) in results.iter().enumerate() {
        if i > 0 {
            line.push_str(", ");
        }
        match r {
            Ok(v) => line.push_str(&v.to_string()),
            Err(e) => {
                line.push_str("error");
                failed.push(e);
            }
        }
    }
    line.push(']');
    outln!(out, "{line}")?;
    for e in &failed {
        crate::cmd::eprintln_one("pk-pool", &e);
    }
    Ok(if failed.is_empty() {
        exit::OK
    } else {
        exit::DECLINED
    })
}
