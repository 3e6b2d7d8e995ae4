//! `pk-manager`: a master hands tasks to workers over TCP, with an auth key
//! (the `multiprocessing.managers` lesson).

use std::net::SocketAddr;
use std::sync::mpsc::RecvTimeoutError;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};

use crate::cmd::Out;
use crate::cmd::Result;
use crate::cmd::duration::DurationArg;
use crate::cmd::exit;
use crate::error::{Error, ErrorKind};
use crate::manager::{Event, Server, Worker};
use crate::{note, outln, process};

const AFTER_HELP: &str = "\
`pk-manager serve` queues N tasks (task i computes i*i) and waits for
workers; `pk-manager work` connects, proves it knows the auth key, takes
tasks until the server says every result is in. See `serve --help` and
`work --help` for the output lines and exit statuses.

Protocol: 4-byte big-endian length frames of at most 4096 bytes; the
server's challenge is 32 bytes from getrandom(2), the worker answers with
HMAC-SHA256 of it under the key (compared in constant time) and a challenge
of its own, which the server answers the same way: both prove the key. A garbage or
oversized frame closes only that connection. A worker that dies with a task
has the task handed to another worker; each result is recorded once.

Examples:
  pk-manager serve --authkey abc --tasks 10 &      # listening on 127.0.0.1:40123
  pk-manager work --connect 127.0.0.1:40123 --authkey abc";

const SERVE_HELP: &str = "\
Output (one line per event):
  listening on <ip>:<port>                  (always first; port 0 = chosen by the kernel)
  queued <N> tasks
  worker <addr> (pid <p>) authenticated
  refused <addr> (pid <p>): wrong authkey
  closed <addr>: <reason>                   (garbage, oversized frame, timeout, dead peer)
  task <id> -> <addr> (pid <p>)
  result <id> from <addr> (pid <p>): <n> * <n> = <v>
  requeued task <id>: <addr> (pid <p>) left holding it
  worker <addr> (pid <p>) left: no more tasks
  all <N> results:
  task <id>: <n> * <n> = <v> by pid <p>     (one per task, by id)
With --quiet only `listening on` and the final results are printed.

Exit status: 0 when all N results are in; 1 when --timeout passed first;
2 for a bad flag; 71 when the address cannot be bound (in use);
77 when binding is not permitted (a port below 1024).";

const WORK_HELP: &str = "\
Output:
  worker <pid>: authenticated with <addr>
  worker <pid>: task <id> received, n=<n>
  worker <pid>: task <id> done: <n> * <n> = <v>
  worker <pid>: no more tasks, <k> done
With --quiet only the `done` lines are printed.

Exit status: 0 when the server said every result is in; 2 for a bad flag;
65 when the server sent something that is not the protocol; 66 when the
host name does not resolve; 71 when connecting fails or the connection
drops; 1 when connecting or the handshake times out; 77 when the server
refused the authkey, or did not prove it knows the key (no task is ever
received then).";

/// A master/worker task queue over TCP with an auth key.
#[derive(Debug, Parser)]
#[command(name = "pk-manager", version, after_help = AFTER_HELP)]
pub struct Args {
    /// serve or work.
    #[command(subcommand)]
    pub role: Role,
}

/// The two roles.
#[derive(Debug, Subcommand)]
pub enum Role {
    /// The master: queue N tasks, collect N results, print them.
    #[command(after_help = SERVE_HELP)]
    Serve {
        /// Address to listen on (port 0: the kernel picks one, printed first).
        #[arg(short, long, value_name = "IP:PORT", default_value = "127.0.0.1:0")]
        bind: SocketAddr,
        /// The shared secret (1-1024 bytes).
        #[arg(short = 'k', long, value_name = "KEY")]
        authkey: String,
        /// Number of tasks (1-100000).
        #[arg(short = 'n', long, value_name = "N", default_value_t = 10,
              value_parser = clap::value_parser!(u32).range(1..=100_000))]
        tasks: u32,
        /// Hand out no task before W workers are waiting for one (1-128).
        #[arg(short = 'w', long, value_name = "W", default_value_t = 1,
              value_parser = clap::value_parser!(u32).range(1..=128))]
        min_workers: u32,
        /// Give up (exit 1) when the results are not all in after DURATION.
        #[arg(long, value_name = "DURATION")]
        timeout: Option<DurationArg>,
        /// Print only the address and the final results.
        #[arg(short, long)]
        quiet: bool,
    },
    /// A worker: take tasks until the queue is empty, return results.
    #[command(after_help = WORK_HELP)]
    Work {
        /// The server's address (host:port).
        #[arg(short, long, value_name = "HOST:PORT")]
        connect: String,
        /// The shared secret (1-1024 bytes).
        #[arg(short = 'k', long, value_name = "KEY")]
        authkey: String,
        /// Sleep this long on each task before computing it (simulated work).
        #[arg(long, value_name = "DURATION")]
        task_delay: Option<DurationArg>,
        /// Give up connecting or authenticating after DURATION.
        #[arg(long, value_name = "DURATION", default_value = "10s")]
        connect_timeout: DurationArg,
        /// Print only the `task <id> done` lines.
        #[arg(short, long)]
        quiet: bool,
    },
}

/// Run a role.
pub fn run(args: Args, out: &mut Out) -> Result<u8> {
    match args.role {
        Role::Serve {
            bind,
            authkey,
            tasks,
            min_workers,
            timeout,
            quiet,
        } => {
            out.set_quiet(quiet);
            serve(
                out,
                bind,
                authkey.as_bytes(),
                tasks,
                min_workers,
                timeout.map(|d| d.0),
            )
        }
        Role::Work {
            connect,
            authkey,
            task_delay,
            connect_timeout,
            quiet,
        } => {
            out.set_quiet(quiet);
            if connect_timeout.0.is_zero() {
                return Err(Error::invalid("--connect-timeout", "must be more than 0").into());
            }
            work(
                out,
                &connect,
                authkey.as_bytes(),
                task_delay.map(|d| d.0),
                connect_timeout.0,
            )
        }
    }
}

fn serve(
    out: &mut Out,
    bind: SocketAddr,
    key: &[u8],
    tasks: u32,
    min_workers: u32,
    timeout: Option<Duration>,
) -> Result<u8> {
    let (server, events) = Server::bind(bind, key, tasks, min_workers as usize)?;
    outln!(out, "listening on {}", server.local_addr()?)?;
    note!(out, "queued {tasks} tasks")?;
    server.start()?;
    let deadline = timeout.map(|t| Instant::now() + t);
    loop {
        let wait = match deadline {
            Some(d) => d.saturating_duration_since(Instant::now()),
            None => Duration::from_secs(3600),
        };
        match events.recv_timeout(wait) {
            Ok(Event::Finished) => break,
            Ok(ev) => report(out, &ev)?,
            Err(RecvTimeoutError::Timeout) if deadline.is_some() => {
                let got = server.results().len();
                return Err(Error::new(
                    ErrorKind::TimedOut,
                    "serve",
                    server.local_addr()?,
                    format!("timed out with {got} of {tasks} results"),
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
        report(out, &ev)?;
    }
    let results = server.results();
    outln!(out, "all {} results:", results.len())?;
    for r in &results {
        outln!(
            out,
            "task {}: {} * {} = {} by pid {}",
            r.task.id,
            r.task.n,
            r.task.n,
            r.value,
            r.by.pid.unwrap_or(0)
        )?;
    }
    Ok(exit::OK)
}

fn report(out: &mut Out, ev: &Event) -> Result<()> {
    match ev {
        Event::Authenticated(p) => note!(out, "worker {p} authenticated"),
        Event::Refused(p) => note!(out, "refused {p}: wrong authkey"),
        Event::Assigned(p, t) => note!(out, "task {} -> {p}", t.id),
        Event::Result(r) => note!(
            out,
            "result {} from {}: {} * {} = {}",
            r.task.id,
            r.by,
            r.task.n,
            r.task.n,
            r.value
        ),
        Event::Requeued(p, t) => note!(out, "requeued task {}: {p} left holding it", t.id),
        Event::Closed(p, why) => note!(out, "closed {p}: {why}"),
        Event::Left(p) => note!(out, "worker {p} left: no more tasks"),
        Event::Finished => Ok(()),
    }
}

fn work(
    out: &mut Out,
    addr: &str,
    key: &[u8],
    task_delay: Option<Duration>,
    connect_timeout: Duration,
) -> Result<u8> {
    let me = process::getpid();
    let pid = u32::try_from(me.as_raw()).unwrap_or(0);
    let mut worker = Worker::connect(addr, key, pid, connect_timeout)?;
    note!(out, "worker {me}: authenticated with {addr}")?;
    let mut done = 0u64;
    while let Some(task) = worker.next_task()? {
        note!(out, "worker {me}: task {} received, n={}", task.id, task.n)?;
        if let Some(d) = task_delay {
            std::thread::sleep(d);
        }
        let value = task.compute();
        worker.send_result(task, value)?;
        done += 1;
        outln!(
            out,
            "worker {me}: task {} done: {} * {} = {}",
            task.id,
            task.n,
            task.n,
            value
        )?;
    }
    note!(out, "worker {me}: no more tasks, {done} done")?;
    Ok(exit::OK)
}
