//! `pk-pool`: Python's `multiprocessing.Pool` — apply_async, map,
//! close/join — on pre-forked workers that never hang when one dies.

use clap::{Parser, Subcommand};
use nix::sys::signal::Signal;

use crate::cmd::Out;
use crate::cmd::Result;
use crate::cmd::exit;
use crate::error::Error;
use crate::pool::{Event, Pool, Registry, Task, TaskError};
use crate::process;
use crate::{note, outln};

mod exec;

const AFTER_HELP: &str = "\
pk-pool demo [--workers 4] [--tasks 10] [--kill-a-worker]
  pool of <N> workers: <pid> <pid> ...
  hello <i> from worker <pid>                      (one per task, in task order)
  task <i> lost: worker <pid> killed by signal 9 (SIGKILL)   (--kill-a-worker)
  worker <pid> killed by signal 9 (SIGKILL); replaced by worker <pid>
  close + join: <N> workers exited, status=0
pk-pool map [--workers 2] [--chunksize C] 1 2 3 4 5   ->  [1, 4, 9, 16, 25]
pk-pool map --range N                                 ->  the squares of 0..N
pk-pool map --range 100 -c 10 --kill-worker-at 35     ->  items 30-39 `error` (their worker
  died), the rest squared; one `pk-pool: task square_or_die[<i>] lost: worker <pid> killed
  by signal 9 (SIGKILL)` line on stderr per lost item
  A failed item prints as `error` in the list and one `pk-pool: task square[<i>]
  failed: <why>` line on stderr (an i64 overflow, for example).

pk-pool exec [-j N] [OPTIONS] -- CMD ARGS...   (xargs -P / GNU parallel; see
  pk-pool exec --help for its options, output and exit statuses)
  printf '%s\n' a b c | pk-pool exec -j 2 -- echo item {}

Exit status: 0 when the demo ran or every task succeeded; 1 when a map task
failed; 2 for a bad flag or value; 71 when a system call fails.";

/// A pre-forked process pool: apply_async, map, close/join, dead workers.
#[derive(Debug, Parser)]
#[command(name = "pk-pool", version, after_help = AFTER_HELP)]
pub struct Args {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
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
    /// apply_async of N tasks on a pool, results in task order, then close + join.
    Demo {
        /// Worker processes (1-1024).
        #[arg(short = 'w', long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=1024))]
        workers: u32,
        /// Tasks to submit (1-100000).
        #[arg(short = 't', long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=100_000))]
        tasks: u32,
        /// Make the middle task SIGKILL its own worker: the pool reports that
        /// task as lost, replaces the worker and finishes the others.
        #[arg(long)]
        kill_a_worker: bool,
    },
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

/// `hello`: who ran task `i`.
fn hello(i: u64) -> String {
    format!("hello {i} from worker {}", process::getpid())
}

/// `crash`: the worker dies as if killed from outside; the pool sees only
/// a closed pipe.
fn crash(_: u64) -> std::result::Result<String, String> {
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
    /// `hello {i} from worker {pid}`.
    pub hello: Task<u64, String>,
    /// The worker SIGKILLs itself.
    pub crash: Task<u64, String>,
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
        hello: registry.task("hello", hello),
        crash: registry.task("crash", crash),
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
    match args.command {
        Command::Exec(a) => exec::run(a),
        Command::Worker(a) => exec::worker(a),
        Command::Demo {
            workers,
            tasks,
            kill_a_worker,
        } => demo(out, workers, tasks, kill_a_worker),
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

fn report_events(out: &mut Out, pool: &mut Pool) -> Result<()> {
    for Event::Replaced { old, status, new } in pool.take_events() {
        note!(out, "worker {old} {status}; replaced by worker {new}")?;
    }
    Ok(())
}

fn demo(out: &mut Out, workers: u32, tasks: u32, kill_a_worker: bool) -> Result<u8> {
    let (mut pool, t) = pool_with_tasks(workers)?;
    let pids: Vec<String> = pool.pids().iter().map(ToString::to_string).collect();
    note!(out, "pool of {workers} workers: {}", pids.join(" "))?;
    let victim = kill_a_worker.then_some(tasks / 2);
    let mut handles = Vec::with_capacity(tasks as usize);
    for i in 0..tasks {
        let task = if Some(i) == victim { t.crash } else { t.hello };
        handles.push(pool.apply_async(task, u64::from(i))?);
    }
    for (i, h) in handles.iter().enumerate() {
        match pool.get(h, None)?.expect("no timeout was given") {
            Ok(text) => outln!(out, "{text}")?,
            Err(TaskError::WorkerDied { pid, status, .. }) => {
                outln!(out, "task {i} lost: worker {pid} {status}")?
            }
            Err(e) => outln!(out, "task {i}: {e}")?,
        }
        report_events(out, &mut pool)?;
    }
    pool.close();
    let statuses = pool.join()?;
    let all_ok = statuses.iter().all(|(_, s)| s.success());
    note!(
        out,
        "close + join: {} workers exited, {}",
        statuses.len(),
        if all_ok { "status=0" } else { "some failed" }
    )?;
    Ok(exit::OK)
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
