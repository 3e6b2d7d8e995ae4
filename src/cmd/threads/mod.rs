//! `pk-threads`: the threading lesson. A named thread counts while the main
//! thread waits in join; a daemon thread is cut off when the main thread
//! ends, while a joined (non-daemon) thread is waited for; `Thread-N`
//! names, renames and idents; a `Timer`; a `Queue` joined when its work is
//! done; and the GIL lesson, threads against processes on CPU-bound work.

use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand};

use crate::cmd::Out;
use crate::cmd::Result;
use crate::cmd::duration::DurationArg;
use crate::cmd::exit;
use crate::error::Error;
use crate::thread::{self, Event};
use crate::{note, outln};

mod gil;
mod names;
mod queue;

pub use gil::{WHY as GIL_WHY, cores, in_processes, on_threads, sequential, spin};

const LOOP_NAME: &str = "LoopThread";
const LOOP_COUNT: u32 = 5;

const AFTER_HELP: &str = "\
Output of `loop` (always in this order):
  thread MainThread is running...
  thread <NAME> is running...
  thread <NAME> >>> 1          (one line per count, 1..=N)
  thread <NAME> ended.
  thread MainThread ended.     (printed after join returns)

Output of `daemon` (always in this order):
  thread MainThread is running...
  thread <NAME> started, daemon=True|False
  thread <NAME> is_alive=True                        (before join)
  thread MainThread ended.                           (the end of main's own work)
  exit: daemon thread <NAME> is not waited for, is_alive=True     (--daemon)
  exit: waiting for thread <NAME> (not a daemon)                  (--no-daemon)
  thread <NAME> ended after <DUR> of work                         (--no-daemon only)
  exit: thread <NAME> joined, is_alive=False                      (--no-daemon)
The worker starts its --work only after `thread MainThread ended.` is
printed. A daemon is not waited for: the process exits and its `ended`
line never appears (unless --work is so short that it finishes before the
process has exited). A non-daemon thread is joined before the process
exits, as Python does, so its `ended` line always appears.

Output of `names` (threading.current_thread().name, get_ident(),
get_native_id(), t.name = ...; in this order):
  thread MainThread: current_thread().name=MainThread get_ident()=<ID> get_native_id()=<PID>
  started Thread-1, Thread-2, Thread-3 without names (Python 3.11: Thread-N (target))
  thread Thread-<i>: current_thread().name=Thread-<i> get_ident()=<ID> get_native_id()=<TID>
  main: Thread-2 is running (is_alive=True); t.name = '<RENAME>'
  thread Thread-1: ended, OS name Thread-1
  thread <RENAME>: ended, OS name <RENAME>
  thread Thread-3: current_thread().name = '<SELF-NAME>' (renamed itself)
  thread <SELF-NAME>: ended, OS name <SELF-NAME>
The numbers count threads started without a name in this process, as
Python's do; the OS name (ps -L) keeps 15 bytes.

Output of `timer` (threading.Timer(interval, hello), then cancel()):
  Timer(<INTERVAL>, hello) started as Thread-1
  thread Thread-1: hello, world                  (after the interval)
  Thread-1: joined, function ran=True
  Timer(1h, hello) started as Thread-2; cancel() at once
  Thread-2: joined, function ran=False           (hello never runs)

Output of `queue` (queue.Queue: put, get, task_done, join):
  main: <W> daemon worker threads, then q.put() of <N> items
  worker Thread-<i>: working on item <k>        (each item once, any worker)
  worker Thread-<i>: finished item <k>
  main: q.join() returned: all <N> items done, unfinished_tasks=0
  main: q.task_done() once more: task_done: called too many times ... (Python: ValueError)
q.join() returns only after the last task_done(): its line comes after
every `finished` line.

Output of `gil` (the same CPU-bound jobs three ways; times vary):
  cores=<C> jobs=<N> steps=<S> per job (...)
  one thread: <N> jobs one after another: <T>s
  threads: job <i> on thread Thread-<k> (pid <P>, native_id <TID>) = <VALUE>
  threads: <N> jobs on <N> threads of one process: <T>s, speed-up <X>x (Python: about 1x)
  processes: job <i> in process <PID> = <VALUE>
  processes: <N> jobs in <N> processes: <T>s, speed-up <X>x (Python: about <N>x)
  why: ...
Every job's VALUE is the same in all three runs (checked). Why: CPython's
GIL lets one thread at a time run Python code, so CPU-bound threads take
turns on one core and only processes use every core; Rust threads have no
such lock. `make bench` puts Python's threads and processes beside these
(gil_threads_speedup_x, gil_procs_speedup_x).

--quiet (-q, before or after the demo's name) prints only the result
lines: loop's `>>> <n>` counts; daemon's `exit:` lines and the worker's
`ended after` line; names' per-thread `current_thread().name=` and
`ended, OS name` lines; timer's `hello, world` and `joined, function
ran=` lines; queue's two last `main:` lines (q.join() returned,
task_done once more); gil's three timing lines (`one thread:`, and the
`threads:` and `processes:` totals with their speed-up). The other lines
(who is running, started, is_alive, each worker's item, each job's
value, cores=..., why: ...) go.

Exit status: 0 when the demo ran; 2 for a bad flag; 71 when a thread or a
process cannot be started.

Examples:
  pk-threads loop --interval 1s
  pk-threads daemon --daemon --work 2s      # the worker's end never shows
  pk-threads daemon --no-daemon --work 2s   # main waits 2s for it
  pk-threads names --rename Downloader
  pk-threads timer --interval 500ms
  pk-threads queue --workers 3 --items 10
  pk-threads gil --jobs 4";

/// Named threads, join, is_alive, daemon vs joined (non-daemon) threads,
/// names and idents, Timer, Queue, and the GIL: Python's threading.Thread,
/// current_thread, get_ident, Timer, queue.Queue.
#[derive(Debug, Parser)]
#[command(name = "pk-threads", version, after_help = AFTER_HELP)]
pub struct Args {
    /// The demo to run (default: loop).
    #[command(subcommand)]
    pub demo: Option<Demo>,

    /// Print only the result lines (see below). Before or after the demo's name.
    #[arg(short, long, global = true)]
    pub quiet: bool,
}

/// The demos.
#[derive(Debug, Subcommand)]
pub enum Demo {
    /// A named thread counts to N while the main thread waits in join.
    Loop(LoopArgs),
    /// A worker thread outlives main's work: cut off as a daemon, waited
    /// for as a joined thread.
    Daemon(DaemonArgs),
    /// Thread-N names, current_thread().name, get_ident(), get_native_id(),
    /// and t.name = ... on a running thread.
    Names(NamesArgs),
    /// threading.Timer(interval, hello): one fires, one is cancelled.
    Timer(TimerArgs),
    /// queue.Queue between threads: put, get, task_done, join.
    Queue(QueueArgs),
    /// The GIL: the same CPU-bound jobs on one thread, on N threads, in N
    /// processes (Python: threads about 1x, processes about Nx).
    Gil(GilArgs),
}

/// `pk-threads names`.
#[derive(Debug, clap::Args)]
pub struct NamesArgs {
    /// The name main gives Thread-2 while it runs (t.name = NAME).
    #[arg(long, value_name = "NAME", default_value = "Downloader", value_parser = thread_name)]
    pub rename: String,

    /// The name Thread-3 gives itself (current_thread().name = NAME).
    #[arg(long, value_name = "NAME", default_value = "Uploader", value_parser = thread_name)]
    pub self_name: String,
}

/// `pk-threads timer`.
#[derive(Debug, clap::Args)]
pub struct TimerArgs {
    /// How long the first timer waits before it runs hello (at most 1h).
    #[arg(long, value_name = "DURATION", default_value = "1s")]
    pub interval: DurationArg,
}

/// `pk-threads queue`.
#[derive(Debug, clap::Args)]
pub struct QueueArgs {
    /// Worker threads (1-64).
    #[arg(short = 'w', long, value_name = "N", default_value_t = 3,
          value_parser = clap::value_parser!(u32).range(1..=64))]
    pub workers: u32,

    /// Items to put (1-100000).
    #[arg(short = 'n', long, value_name = "N", default_value_t = 10,
          value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub items: u32,

    /// How long a worker works on each item (0, 10ms; at most 10s).
    #[arg(long, value_name = "DURATION", default_value = "10ms")]
    pub work: DurationArg,
}

/// `pk-threads gil`.
#[derive(Debug, clap::Args)]
pub struct GilArgs {
    /// Jobs, and threads and processes (1-64; default: the cores, at least 2).
    #[arg(short = 'j', long, value_name = "N",
          value_parser = clap::value_parser!(u32).range(1..=64))]
    pub jobs: Option<u32>,

    /// xorshift rounds per job (1-100000000000; 100000000 take about 0.25s here).
    #[arg(long, value_name = "N", default_value_t = 100_000_000,
          value_parser = clap::value_parser!(u64).range(1..=100_000_000_000))]
    pub steps: u64,
}

/// `pk-threads loop`.
#[derive(Debug, clap::Args)]
pub struct LoopArgs {
    /// The counting thread's name.
    #[arg(long, value_name = "NAME", default_value = LOOP_NAME, value_parser = thread_name)]
    pub name: String,

    /// Count from 1 to N (1-1000000).
    #[arg(short = 'n', long, value_name = "N", default_value_t = LOOP_COUNT,
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub count: u32,

    /// Sleep this long after each count (0, 1s, 250ms).
    #[arg(long, value_name = "DURATION", default_value = "100ms")]
    pub interval: DurationArg,
}

/// `pk-threads daemon`.
#[derive(Debug, clap::Args)]
pub struct DaemonArgs {
    /// Start the worker as a daemon: not waited for when main ends (default).
    #[arg(long, overrides_with = "no_daemon")]
    pub daemon: bool,

    /// Start the worker as a joined (non-daemon) thread: waited for before exit.
    #[arg(long, overrides_with = "daemon")]
    pub no_daemon: bool,

    /// How long the worker works after the main thread has ended.
    #[arg(long, value_name = "DURATION", default_value = "1s")]
    pub work: DurationArg,

    /// The worker thread's name.
    #[arg(long, value_name = "NAME", default_value = "Worker", value_parser = thread_name)]
    pub name: String,
}

/// A thread name from the command line: 1-64 characters, no control characters.
pub fn thread_name(s: &str) -> std::result::Result<String, String> {
    if s.is_empty() || s.chars().count() > 64 {
        return Err("a thread name has 1 to 64 characters".into());
    }
    if s.chars().any(char::is_control) {
        return Err("a thread name has no control characters".into());
    }
    Ok(s.to_string())
}

/// Run the threads lesson.
pub fn run(args: Args, out: &mut Out) -> Result<u8> {
    out.set_quiet(args.quiet);
    match args.demo {
        None => run_loop(
            LoopArgs {
                name: LOOP_NAME.into(),
                count: LOOP_COUNT,
                interval: DurationArg(Duration::from_millis(100)),
            },
            out,
        ),
        Some(Demo::Loop(a)) => run_loop(a, out),
        Some(Demo::Daemon(a)) => run_daemon(a, out),
        Some(Demo::Names(a)) => names::run(a.rename, a.self_name, out),
        Some(Demo::Timer(a)) => {
            if a.interval.0 > Duration::from_secs(3600) {
                return Err(Error::invalid("--interval", "must be at most 1h").into());
            }
            queue::run_timer(a.interval, out)
        }
        Some(Demo::Queue(a)) => {
            if a.work.0 > Duration::from_secs(10) {
                return Err(Error::invalid("--work", "must be at most 10s").into());
            }
            queue::run_queue(a.workers, a.items, a.work, out)
        }
        Some(Demo::Gil(a)) => gil::run(a.jobs, a.steps, out),
    }
}

fn run_loop(args: LoopArgs, out: &mut Out) -> Result<u8> {
    let me = thread::current_name();
    note!(out, "thread {me} is running...")?;
    let LoopArgs {
        name,
        count,
        interval,
    } = args;
    let mut tout = out.like();
    let t = thread::spawn(name, move || -> Result<()> {
        let out = &mut tout;
        let me = thread::current_name();
        note!(out, "thread {me} is running...")?;
        for n in 1..=count {
            outln!(out, "thread {me} >>> {n}")?;
            std::thread::sleep(interval.0);
        }
        note!(out, "thread {me} ended.")
    })?;
    t.join()??;
    note!(out, "thread {me} ended.")?;
    Ok(exit::OK)
}

fn run_daemon(args: DaemonArgs, out: &mut Out) -> Result<u8> {
    let daemon = !args.no_daemon;
    let me = thread::current_name();
    note!(out, "thread {me} is running...")?;

    let started = Arc::new(Event::new());
    let main_ended = Arc::new(Event::new());
    let work = args.work;
    let worker = {
        let started = Arc::clone(&started);
        let main_ended = Arc::clone(&main_ended);
        let mut out = out.like();
        move || -> Result<()> {
            let me = thread::current_name();
            let said = note!(out, "thread {me} started, daemon={}", py_bool(daemon));
            // Set it even when the line failed, or main would wait for ever.
            started.set();
            said?;
            // The work begins only after main's last line, so what follows
            // shows whether the process waits for this thread.
            main_ended.wait();
            std::thread::sleep(work.0);
            outln!(out, "thread {me} ended after {work} of work")
        }
    };
    let mut t = if daemon {
        thread::spawn_daemon(args.name, worker)?
    } else {
        thread::spawn(args.name, worker)?
    };
    // Whatever path main leaves by (a closed stdout, say), the worker is
    // released; declared after `t`, so it runs before `t` is dropped (and,
    // for a joined thread, waited for).
    let _release = SetOnDrop(&main_ended);
    started.wait();
    note!(
        out,
        "thread {} is_alive={}",
        t.name(),
        py_bool(t.is_alive())
    )?;
    note!(out, "thread {me} ended.")?;

    // What Python does at exit, spelled out.
    if daemon {
        outln!(
            out,
            "exit: daemon thread {} is not waited for, is_alive={}",
            t.name(),
            py_bool(t.is_alive())
        )?;
        main_ended.set();
        // Dropping a daemon's handle detaches it; returning ends the process.
        return Ok(exit::OK);
    }
    outln!(out, "exit: waiting for thread {} (not a daemon)", t.name())?;
    main_ended.set();
    // join_timeout rather than join, so the handle stays ours and is_alive
    // can be shown after the join.
    let result = loop {
        if let Some(result) = t.join_timeout(Duration::from_secs(3600))? {
            break result;
        }
    };
    result?;
    outln!(
        out,
        "exit: thread {} joined, is_alive={}",
        t.name(),
        py_bool(t.is_alive())
    )?;
    Ok(exit::OK)
}

/// Sets the event when dropped.
struct SetOnDrop<'a>(&'a Event);

impl Drop for SetOnDrop<'_> {
    fn drop(&mut self) {
        self.0.set();
    }
}

/// Python's spelling of a bool, as the lesson prints it.
pub fn py_bool(b: bool) -> &'static str {
    if b { "True" } else { "False" }
}
