//! `pk-pool`: Python's `multiprocessing.Pool` — apply_async, map,
//! close/join — on pre-forked workers that never hang when one dies.

use clap::{Parser, Subcommand};
use nix::sys::signal::Signal;

use crate::cmd::Out;
use crate::cmd::exit;
use crate::cmd::{Failure, Result};
use crate::error::{Error, ErrorKind};
use crate::pool::{Event, Pool, Registry, TaskError, Wire};
use crate::process;
use crate::{note, outln};

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

pk-pool exec [-j N] -- CMD ARGS...   (reads stdin; CMD's own output passes through)
  printf '%s\n' a b c | pk-pool exec -j 2 -- echo item {}
  Commands get /dev/null as stdin. Exit status: 0 when every command
  succeeded, else the status of the first failing line in input order
  (N, 126/127 when CMD cannot run, 128+N for a signal), with one
  `pk-pool: ...` line on stderr per failure; 65 when a line holds a NUL byte
  (nothing is run then). SIGINT, SIGTERM or SIGHUP stop it: no new command
  starts, the workers are killed, their running commands get SIGTERM, all
  are reaped, and pk-pool exits 128+N with one line on stderr.

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
    /// For each line of stdin, run CMD with `{}` replaced by the line (or the
    /// line appended when no argument holds `{}`), on N pre-forked workers,
    /// like `xargs -P N -I {}`.
    Exec {
        /// Worker processes, so commands running at once (1-1024; default: the CPU count).
        #[arg(short = 'j', long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=1024))]
        jobs: Option<u32>,
        /// The command and its arguments, after `--`.
        #[arg(last = true, required = true, value_name = "CMD")]
        command: Vec<std::ffi::OsString>,
    },
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

fn hello(arg: &[u8], out: &mut Vec<u8>) -> std::result::Result<(), String> {
    let i = u64::from_le_bytes(arg.try_into().map_err(|_| "hello wants 8 bytes")?);
    use std::io::Write;
    write!(out, "hello {i} from worker {}", process::getpid()).map_err(|e| e.to_string())
}

fn crash(_arg: &[u8], _out: &mut Vec<u8>) -> std::result::Result<(), String> {
    // Die as if killed from outside: the pool sees only a closed pipe.
    let _ = process::die_of(Signal::SIGKILL);
    Err("SIGKILL did not end the worker".into())
}

/// The `square` task of `pk-pool map`, a typed task: an i64, squared, or
/// an overflow error.
pub fn square(n: i64) -> std::result::Result<i64, String> {
    n.checked_mul(n)
        .ok_or_else(|| format!("{n} squared overflows i64"))
}

/// `square` with a leading flag byte: 1 makes the worker SIGKILL itself first.
fn square_or_die(arg: &[u8], out: &mut Vec<u8>) -> std::result::Result<(), String> {
    match arg.split_first() {
        Some((1, _)) => crash(arg, out),
        Some((_, rest)) => {
            let n = i64::get(rest).ok_or("square wants 8 bytes")?;
            out.extend_from_slice(&square(n)?.to_le_bytes());
            Ok(())
        }
        None => Err("square_or_die wants 9 bytes".into()),
    }
}

/// The tasks pk-pool's workers know.
pub fn registry() -> Registry {
    Registry::new()
        .register("hello", hello)
        .register("crash", crash)
        .register_typed("square", square)
        .register("square_or_die", square_or_die)
        .register("exec", exec_task)
}

fn new_pool(workers: u32) -> Result<Pool> {
    Ok(Pool::new(workers as usize, registry())?)
}

/// Run pk-pool.
pub fn run(args: Args, out: &mut Out) -> Result<u8> {
    match args.command {
        Command::Exec { jobs, command } => exec(jobs, &command),
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
    let mut pool = new_pool(workers)?;
    let pids: Vec<String> = pool.pids().iter().map(ToString::to_string).collect();
    note!(out, "pool of {workers} workers: {}", pids.join(" "))?;
    let victim = kill_a_worker.then_some(tasks / 2);
    let mut handles = Vec::with_capacity(tasks as usize);
    for i in 0..tasks {
        let task = if Some(i) == victim { "crash" } else { "hello" };
        handles.push(pool.apply_async(task, &u64::from(i).to_le_bytes())?);
    }
    for (i, h) in handles.iter().enumerate() {
        match pool.get(h, None)?.expect("no timeout was given") {
            Ok(text) => outln!(out, "{}", String::from_utf8_lossy(&text))?,
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
    let mut pool = new_pool(workers)?;
    let chunk = chunksize as usize;
    let results = if let Some(victim) = kill_worker_at {
        if victim >= values.len() {
            return Err(Error::invalid(
                "--kill-worker-at",
                format!("there are only {} items", values.len()),
            )
            .into());
        }
        let args: Vec<Vec<u8>> = values
            .iter()
            .enumerate()
            .map(|(i, v)| [&[u8::from(i == victim)][..], &v.to_le_bytes()].concat())
            .collect();
        pool.map("square_or_die", &args, chunk)?
    } else {
        let args: Vec<[u8; 8]> = values.iter().map(|v| v.to_le_bytes()).collect();
        pool.map("square", &args, chunk)?
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
            Ok(bytes) => {
                let v = i64::from_le_bytes(
                    bytes
                        .try_into()
                        .map_err(|_| Error::data("recv", "square", "not 8 bytes"))?,
                );
                line.push_str(&v.to_string());
            }
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

/// The `exec` task: run the NUL-separated argv with /dev/null as stdin and
/// the worker's stdout/stderr; the result is one byte, the shell status.
fn exec_task(arg: &[u8], out: &mut Vec<u8>) -> std::result::Result<(), String> {
    use std::os::unix::ffi::OsStrExt;
    let argv = arg.split(|&b| b == 0).map(std::ffi::OsStr::from_bytes);
    let code = match run_one(argv) {
        Ok(status) => status.shell_code(),
        Err(e) => {
            crate::cmd::eprintln_one("pk-pool", &e);
            e.code()
        }
    };
    out.push(code);
    Ok(())
}

fn run_one<'a>(argv: impl Iterator<Item = &'a std::ffi::OsStr>) -> Result<crate::status::Status> {
    let devnull =
        std::fs::File::open("/dev/null").map_err(|e| Error::io("open", "/dev/null", &e))?;
    // The command dies with its worker: a pool terminated on SIGTERM or
    // SIGINT leaves no command running.
    let spawn = crate::spawn::Spawn::new(argv)?
        .stdin(crate::spawn::Stdin::Fd(devnull.into()))
        .die_with_parent(Signal::SIGTERM);
    Ok(spawn.run()?.status)
}

/// The argv for one input line: `{}` replaced in every argument, or the line
/// appended when no argument holds `{}`; NUL-separated for the task.
fn command_for(command: &[std::ffi::OsString], line: &[u8]) -> Vec<u8> {
    use std::os::unix::ffi::OsStrExt;
    let has_slot = command
        .iter()
        .any(|a| a.as_bytes().windows(2).any(|w| w == b"{}"));
    let mut argv: Vec<Vec<u8>> = command
        .iter()
        .map(|a| {
            let a = a.as_bytes();
            let mut out = Vec::with_capacity(a.len());
            let mut i = 0;
            while i < a.len() {
                if a[i..].starts_with(b"{}") {
                    out.extend_from_slice(line);
                    i += 2;
                } else {
                    out.push(a[i]);
                    i += 1;
                }
            }
            out
        })
        .collect();
    if !has_slot {
        argv.push(line.to_vec());
    }
    argv.join(&0u8)
}

fn exec(jobs: Option<u32>, command: &[std::ffi::OsString]) -> Result<u8> {
    use std::io::Read;
    use std::os::unix::ffi::OsStrExt;
    if command.iter().any(|a| a.as_bytes().contains(&0)) {
        return Err(Error::invalid("CMD", "an argument contains a NUL byte").into());
    }
    let mut input = Vec::new();
    std::io::stdin()
        .read_to_end(&mut input)
        .map_err(|e| Error::io("read", "stdin", &e))?;
    let lines: Vec<&[u8]> = input
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .collect();
    if let Some(n) = lines.iter().position(|l| l.contains(&0)) {
        return Err(Error::data(
            "read",
            "stdin",
            format!("line {} contains a NUL byte", n + 1),
        )
        .into());
    }
    if lines.is_empty() {
        return Ok(exit::OK);
    }
    let jobs =
        jobs.unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get() as u32));
    let args: Vec<Vec<u8>> = lines.iter().map(|l| command_for(command, l)).collect();
    let caught = stop_on_signals()?;
    let mut pool = new_pool(jobs.min(lines.len() as u32))?;
    pool.interrupt_on(
        caught
            .wake
            .try_clone()
            .map_err(|e| Error::io("dup", "self-pipe", &e))?,
    );
    let results = match pool.map("exec", &args, 1) {
        Ok(r) => r,
        Err(e) if e.is_interrupted() => {
            // Kill the workers (their commands get SIGTERM through
            // PR_SET_PDEATHSIG) and reap them, then end as the signal says.
            pool.terminate()?;
            let sig = caught.signal.load(std::sync::atomic::Ordering::SeqCst) as i32;
            let name = crate::status::signal_name(sig);
            return Err(Failure::from(Error::new(
                ErrorKind::Interrupted,
                "wait",
                "pool",
                format!("stopped by {name}: workers and commands ended"),
            ))
            .with_code(exit::signal_code(sig)));
        }
        Err(e) => return Err(e.into()),
    };
    pool.close();
    pool.join()?;
    let mut first_failure = None;
    for r in results.iter() {
        let code = match r {
            Ok(&[code]) => code,
            Ok(_) => exit::OS_ERR,
            Err(e) => {
                crate::cmd::eprintln_one("pk-pool", &e);
                match e {
                    TaskError::WorkerDied { status, .. } => status.shell_code(),
                    _ => exit::OS_ERR,
                }
            }
        };
        if code != 0 && first_failure.is_none() {
            first_failure = Some(code);
        }
    }
    Ok(first_failure.unwrap_or(exit::OK))
}

/// What [`stop_on_signals`] set up: the signal caught last, and the read end
/// of the self-pipe its handler writes to.
struct Caught {
    signal: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    wake: std::os::fd::OwnedFd,
}

/// SIGINT, SIGTERM and SIGHUP stop `pk-pool exec` cleanly: signal-hook
/// records the signal, then writes to a self-pipe the pool polls, so the
/// wait ends at once, whatever the pool was waiting for.
fn stop_on_signals() -> Result<Caught> {
    use std::os::fd::OwnedFd;
    let (read, write) = crate::pipe::pipe()?;
    let write = OwnedFd::from(write);
    let signal = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    for sig in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
        let n = sig as i32;
        // The flag first, then the pipe: whoever wakes up finds the flag set.
        signal_hook::flag::register_usize(n, std::sync::Arc::clone(&signal), n as usize)
            .map_err(|e| Error::io("sigaction", sig.as_str(), &e))?;
        let end = write
            .try_clone()
            .map_err(|e| Error::io("dup", "self-pipe", &e))?;
        signal_hook::low_level::pipe::register(n, end)
            .map_err(|e| Error::io("sigaction", sig.as_str(), &e))?;
    }
    Ok(Caught {
        signal,
        wake: read.into(),
    })
}
