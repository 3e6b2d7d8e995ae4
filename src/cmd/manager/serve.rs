//! `pk-manager serve`.

use std::net::SocketAddr;
use std::sync::mpsc::RecvTimeoutError;
use std::time::{Duration, Instant};

use super::KeyArgs;
use crate::cmd::Out;
use crate::cmd::Result;
use crate::cmd::duration::DurationArg;
use crate::cmd::exit;
use crate::error::{Error, ErrorKind};
use crate::manager::{Config, Event, Mode, QueueSpec, Server};
use crate::{note, outln};

pub(super) const HELP: &str = "\
Without --queue: the i*i lesson. Tasks 1..N sit in queue `tasks`; a
worker's result for task i must read `i * i = i²` and settles it; the
server prints the results and exits once all N are in.
With --queue NAME (repeatable): named queues of at most --capacity items
each (queued and out on lease together), served until the server is killed
or --timeout passes.

A task whose worker dies, disconnects or stays silent for --lease goes
back to the end of its queue, behind the tasks already waiting (the worker
may have died of it: the others are not held up behind it). A task whose
lease has been lost --max-deliveries times (default 3) is not handed out
again: it fails, and its failure result goes on --dead-letters (default
`results`, when served) in the form a worker gives a task it cannot run:
`65 <task>` (--python: the tuple (task, 65, '')), added even to a full
queue. So a task that crashes every worker that runs it (kill -9 $PPID, the
OOM killer) costs N workers, not all of them. The lesson has no limit.

Output (one line per event):
  listening on <ip>:<port>                  (always first; port 0 = chosen by the kernel)
  queued <N> tasks | queues: <name> (capacity <c>), ...[; a task whose lease is lost <N> times fails onto <queue>]
  worker <addr> (pid <p>) authenticated
  refused <addr>: wrong authkey
  closed <addr>: <reason>                   (garbage, oversized frame, bad MAC, handshake timeout)
  dropped <addr>: too many unauthenticated connections | out of file descriptors
  accept: <error>; backing off <d>          (EMFILE/ENFILE: no spinning)
  task <id> -> <addr> (pid <p>)
  result <id> from <addr> (pid <p>): <n> * <n> = <v>
  late result <id> from <addr> (pid <p>): already counted, dropped
  late put from <addr> (python): its lease on task <id> had run out; stored all the same
  requeued task <id>: <addr> (pid <p>) left holding it
  lease expired: task <id> held by <addr> (pid <p>) silent for <lease>; requeued
  task <id> failed: its lease was lost <N> times (last held by <addr> (pid <p>)); failure result put on <queue>
  worker <addr> (pid <p>) left: no more tasks | disconnected
  all <N> results:
  task <id>: <n> * <n> = <v> by pid <p>     (python workers: by python <addr>)
With --quiet only `listening on` and the final results are printed.

--python: the port speaks CPython's manager protocol, so the classic
lesson's worker (a BaseManager subclass registering get_task_queue and
get_result_queue, connect() with authkey=..., get(timeout=...) and put())
runs unmodified against it. A type id get_NAME_queue reaches queue NAME or
NAMEs. Requests are decoded with a pickle subset (None, bool, int of at
most 128 bits, float, str, bytes, tuple, list, dict, and the manager's
Token and queue exceptions), each message at most 1 MiB; any other pickle, GLOBAL os.system included, closes the
connection and nothing runs, as does a value nested more than 32 deep or a
pickle whose memo references would make it more than 64 KiB plus 32 bytes
per byte received. CPython's protocol has no MAC after its
handshake: use it on a network you trust. An item a Python worker gets from
the first queue is leased until its next put (or get). Unlike
queue.Queue's, task_done() counts nothing (an extra one raises nothing)
and join() returns once the queue is empty and no item is out on lease.

Exit status: 0 when all N results are in (queues: at --timeout); 1 when
--timeout passed first (lesson); 2 for a bad flag or key; 66 when the key
file does not exist; 71 when the address cannot be bound (in use); 77 when
binding is not permitted, or the key file is readable by group or others.";

/// `serve` flags.
#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// Address to listen on (port 0: the kernel picks one, printed first).
    #[arg(short, long, value_name = "IP:PORT", default_value_t = super::default_bind())]
    bind: SocketAddr,
    #[command(flatten)]
    key: KeyArgs,
    /// The lesson's number of tasks (1-100000).
    #[arg(short = 'n', long, value_name = "N", default_value_t = 10, conflicts_with = "queue",
          value_parser = clap::value_parser!(u32).range(1..=100_000))]
    tasks: u32,
    /// Serve a named queue instead of the lesson (repeatable; the first is
    /// the task queue the lesson's Python workers take leases on).
    #[arg(long, value_name = "NAME")]
    queue: Vec<String>,
    /// Items each --queue holds at most (1-1000000).
    #[arg(long, value_name = "N", default_value_t = 1000,
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    capacity: u32,
    /// Hand out no task before W live workers are waiting for one (1-128).
    #[arg(short = 'w', long, value_name = "W", default_value_t = 1,
          value_parser = clap::value_parser!(u32).range(1..=128))]
    min_workers: u32,
    /// A worker silent this long (no result, no heartbeat) loses its task.
    #[arg(long, value_name = "DURATION", default_value = "30s")]
    lease: DurationArg,
    /// The deadline for a connection's whole handshake.
    #[arg(long, value_name = "DURATION", default_value = "5s")]
    handshake_timeout: DurationArg,
    /// Connections allowed in their handshake at once; a new one beyond
    /// that pushes out the oldest once it has had 100 ms, and waits until
    /// then (1-10000).
    #[arg(long, value_name = "N", default_value_t = 64,
          value_parser = clap::value_parser!(u32).range(1..=10_000))]
    max_unauthenticated: u32,
    /// Speak CPython's manager protocol instead of pk-manager's own.
    #[arg(long)]
    python: bool,
    /// Queues: a task whose lease is lost N times (its worker died,
    /// disconnected or fell silent) fails onto --dead-letters (0: no
    /// limit; 0-1000000).
    #[arg(long, value_name = "N", default_value_t = 3,
          value_parser = clap::value_parser!(u32).range(0..=1_000_000))]
    max_deliveries: u32,
    /// Queues: where a failed task's result goes (default: `results`, when
    /// served).
    #[arg(long, value_name = "NAME", requires = "queue")]
    dead_letters: Option<String>,
    /// Lesson: give up (exit 1) when the results are not all in after
    /// DURATION. Queues: stop serving after DURATION (exit 0).
    #[arg(long, value_name = "DURATION")]
    timeout: Option<DurationArg>,
}

pub(super) fn run(a: ServeArgs, out: &mut Out) -> Result<u8> {
    for (name, d) in [
        ("--lease", a.lease),
        ("--handshake-timeout", a.handshake_timeout),
    ] {
        if d.0.is_zero() {
            return Err(Error::invalid(name, "must be more than 0").into());
        }
    }
    let mode = if a.queue.is_empty() {
        Mode::Lesson(a.tasks)
    } else {
        let mut specs: Vec<QueueSpec> = Vec::new();
        for name in &a.queue {
            crate::manager::wire::check_name(name)?;
            if specs.iter().any(|s| &s.name == name) {
                return Err(Error::invalid("--queue", format!("'{name}' given twice")).into());
            }
            specs.push(QueueSpec {
                name: name.clone(),
                capacity: a.capacity as usize,
            });
        }
        if let Some(d) = &a.dead_letters {
            if !specs.iter().any(|s| &s.name == d) {
                return Err(Error::invalid(
                    "--dead-letters",
                    format!("'{d}' is not one of the --queue names"),
                )
                .into());
            }
        }
        Mode::Queues(specs)
    };
    let dead_letters = a.dead_letters.clone().unwrap_or_else(|| "results".into());
    let key = a.key.load()?;
    let cfg = Config {
        lease: a.lease.0,
        handshake: a.handshake_timeout.0,
        max_unauthenticated: a.max_unauthenticated as usize,
        min_workers: a.min_workers as usize,
        python: a.python,
        max_deliveries: a.max_deliveries,
        dead_letters: dead_letters.clone(),
        ..Config::default()
    };
    let lesson = matches!(mode, Mode::Lesson(_));
    let (server, events) = Server::bind(a.bind, key, mode.clone(), cfg)?;
    outln!(out, "listening on {}", server.local_addr()?)?;
    match &mode {
        Mode::Lesson(n) => note!(out, "queued {n} tasks")?,
        Mode::Queues(q) => {
            let list: Vec<String> = q
                .iter()
                .map(|s| format!("{} (capacity {})", s.name, s.capacity))
                .collect();
            let limit = if a.max_deliveries > 0 && q.iter().any(|s| s.name == dead_letters) {
                format!(
                    "; a task whose lease is lost {} times fails onto {dead_letters}",
                    a.max_deliveries
                )
            } else {
                String::new()
            };
            note!(out, "queues: {}{limit}", list.join(", "))?;
        }
    }
    server.start()?;
    let deadline = a.timeout.and_then(|t| crate::process::deadline_after(t.0));
    let lease = a.lease.0;
    loop {
        let wait = match deadline {
            Some(d) => d.saturating_duration_since(Instant::now()),
            None => Duration::from_secs(3600),
        };
        match events.recv_timeout(wait) {
            Ok(Event::Finished) => break,
            Ok(ev) => report(out, &ev, lease)?,
            Err(RecvTimeoutError::Timeout) if deadline.is_some() => {
                if !lesson {
                    return Ok(exit::OK);
                }
                let got = server.results().len();
                return Err(Error::new(
                    ErrorKind::TimedOut,
                    "serve",
                    server.local_addr()?,
                    format!("timed out with {got} of {} results", a.tasks),
                )
                .into());
            }
            Err(RecvTimeoutError::Timeout) => continue,
            Err(RecvTimeoutError::Disconnected) => break,
        }
    }
    // Let the workers still connected hear `done`, then report what is left.
    server.drain(Duration::from_secs(5));
    while let Ok(ev) = events.try_recv() {
        report(out, &ev, lease)?;
    }
    let results = server.results();
    outln!(out, "all {} results:", results.len())?;
    for r in &results {
        let by = match r.by.pid {
            Some(pid) => format!("pid {pid}"),
            None => format!("python {}", r.by.addr),
        };
        outln!(
            out,
            "task {}: {} * {} = {} by {by}",
            r.id,
            r.n,
            r.n,
            r.value
        )?;
    }
    Ok(exit::OK)
}

fn report(out: &mut Out, ev: &Event, lease: Duration) -> Result<()> {
    match ev {
        Event::Authenticated(p) => note!(out, "worker {p} authenticated"),
        Event::Refused(p) => note!(out, "refused {p}: wrong authkey"),
        Event::Closed(p, why) => note!(out, "closed {p}: {why}"),
        Event::Dropped(addr, why) => note!(out, "dropped {addr}: {why}"),
        Event::Backoff(why, d) => note!(out, "accept: {why}; backing off {d:?}"),
        Event::Assigned(p, id) => note!(out, "task {id} -> {p}"),
        Event::Result(r) => note!(
            out,
            "result {} from {}: {} * {} = {}",
            r.id,
            r.by,
            r.n,
            r.n,
            r.value
        ),
        Event::Late(p, id) => note!(out, "late result {id} from {p}: already counted, dropped"),
        Event::LateKept(p, id) => note!(
            out,
            "late put from {p}: its lease on task {id} had run out; stored all the same"
        ),
        Event::Requeued(p, id) => note!(out, "requeued task {id}: {p} left holding it"),
        Event::Expired(p, id) => {
            note!(
                out,
                "lease expired: task {id} held by {p} silent for {lease:?}; requeued"
            )
        }
        Event::Failed(p, id, n, queue) => note!(
            out,
            "task {id} failed: its lease was lost {n} times (last held by {p}); failure result put on {queue}"
        ),
        Event::Left(p) => note!(out, "worker {p} left: no more tasks"),
        Event::Gone(p) => note!(out, "worker {p} disconnected"),
        Event::Finished => Ok(()),
    }
}
