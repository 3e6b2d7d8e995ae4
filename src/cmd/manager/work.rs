//! `pk-manager work`: take tasks, run them, put results.

use std::time::Duration;

use super::{ConnectArgs, KeyArgs};
use crate::cmd::Out;
use crate::cmd::Result;
use crate::cmd::duration::DurationArg;
use crate::cmd::exit;
use crate::error::{Error, ErrorKind};
use crate::manager::client::{Client, Got, Heartbeats, Put};
use crate::manager::python::client::{Answer, PyClient};
use crate::manager::python::pickle::Value;
use crate::spawn::{Event, Running, Spawn, Stdin};
use crate::{note, outln, process};

pub(super) const HELP: &str = "\
Without CMD: the lesson. A task is a number n; the result is the text
`n * n = n²`, put on --results in the same step that settles the task.
With CMD: each task runs CMD through posixkit's spawn, the task replacing
every `{}` in its arguments (appended as the last argument when none has
`{}`), or fed on stdin with --stdin. The result is one line `<status>
<task>` (status as a shell shows it: 0-255, 128+N for signal N, 127 not
found) followed by the command's stdout; its stderr goes to ours. With
--python the result is the tuple (task, status, stdout) instead.

While a task runs, heartbeats (every third of the server's lease, each
answered) keep the lease. When a heartbeat fails or the server stays silent
for a whole lease (it died, stopped, or the network is cut), the server has
handed the task to another worker: the worker ends CMD's process group (CMD
runs in a group of its own; SIGTERM, then SIGKILL 1s later), reaps it, puts
no result, and exits 71 with one line, within about a lease. A worker that
dies sends SIGTERM to CMD.

Output:
  worker <pid>: authenticated with <addr>
  worker <pid>: task <id> received, n=<n>          (CMD: received: <task>)
  worker <pid>: task <id> done: <n> * <n> = <v>    (CMD: done: exit <status>)
  worker <pid>: task <id> failed: <why>            (the task cannot be run)
  worker <pid>: task <id> was counted already; result dropped
  worker <pid>: no more tasks, <k> done
With --quiet only the `done` and `failed` lines are printed.

A task that cannot be run fails alone, and is not retried: one that is not
a number for the lesson, or whose square does not fit in 128 bits, or
(CMD) holds a NUL byte, which no argument can carry (--stdin can). Its
result says so: `<task>: not a number` (--python: `<task>: not an int`)
or `<task>: its square does not fit in 128 bits`, or with CMD the status 65 (`65 <task>`, the NUL
shown as \\0; --python: (task, 65, '')); the reason goes to stderr, and the
worker takes the next task.

--python: connect to a CPython manager server (BaseManager(...).start() or
get_server().serve_forever()) as the lesson's Python worker does: type ids
get_task_queue / get_result_queue (from --queue tasks / --results results:
get_NAME_queue, NAME without its final s), get(timeout=--idle), put(result).
Answers are decoded with a pickle subset that never runs code (that of
serve --python). A task outside it (a set, an int past 128 bits) fails
alone: its result is `task <n>: a task this worker cannot decode` (with
CMD: (None, 65, '')), so the master still gets one result per task; a
message over 1 MiB ends the worker (65).

Exit status: 0 when the server said the queue is closed and drained (the
lesson: every result is in), or no task came for --idle, or (--python) the
server closed the connection while this worker held no task; 1 when connecting
or the handshake times out; 2 for a bad flag or key; 65 when the server
sent something that is not the protocol (`full` to a put with no time
limit included), or after a task that could not be run (see above);
66 when the host does not resolve or the key file does not exist; 71 when
connecting fails, the connection drops, or the server stays silent for a
whole lease (it died or stopped), while waiting or while a task runs (its
command is ended then, see above); 77 when the keys differ (the server could
not prove our key, or refused ours: no task is received then).";

/// `work` flags.
#[derive(Debug, clap::Args)]
pub struct WorkArgs {
    #[command(flatten)]
    conn: ConnectArgs,
    #[command(flatten)]
    key: KeyArgs,
    /// Take tasks from this queue.
    #[arg(long, value_name = "NAME", default_value = "tasks")]
    queue: String,
    /// Put results on this queue.
    #[arg(long, value_name = "NAME", default_value = "results")]
    results: String,
    /// Speak CPython's manager protocol (a Python master's server).
    #[arg(long)]
    python: bool,
    /// Stop (exit 0) when no task comes for DURATION (--python: default 1s,
    /// as the lesson's get(timeout=1)).
    #[arg(long, value_name = "DURATION")]
    idle: Option<DurationArg>,
    /// Feed the task to CMD on stdin instead of in `{}`.
    #[arg(long, requires = "cmd")]
    stdin: bool,
    /// Sleep this long on each task before computing it (simulated work).
    #[arg(long, value_name = "DURATION")]
    task_delay: Option<DurationArg>,
    /// The command to run for each task (after --).
    #[arg(last = true, value_name = "CMD")]
    cmd: Vec<String>,
}

/// One task's work: the lesson's square, or CMD.
struct Job<'a> {
    cmd: &'a [String],
    stdin: bool,
    delay: Option<Duration>,
}

/// What a task produced.
enum Done {
    Square(i128, i128),
    Ran {
        status: u8,
        stdout: Vec<u8>,
    },
    /// The task cannot be run (not a number for the lesson, a NUL byte for
    /// CMD's arguments): it fails alone, reported, and is not retried.
    Refused(Error),
    /// The lease was lost while the task ran (why): its command was ended.
    Lost(Error),
}

/// How long a command whose lease was lost has between SIGTERM and
/// SIGKILL.
const GRACE: Duration = Duration::from_secs(1);

/// Why the lesson cannot square `task`.
fn not_a_number(task: &str) -> Error {
    Error::data(
        "task",
        task,
        "the lesson's task is not a number (use -- CMD for other tasks)",
    )
}

/// The lesson's task `n` whose square does not fit in 128 bits: refused,
/// not wrapped round to a wrong number.
fn too_big(n: impl std::fmt::Display) -> Error {
    Error::data("task", n, format!("{TOO_BIG} (use -- CMD for other tasks)"))
}

const TOO_BIG: &str = "its square does not fit in 128 bits";

/// A number, but past what i128 holds.
fn too_long(e: &std::num::ParseIntError) -> bool {
    use std::num::IntErrorKind;
    matches!(
        e.kind(),
        IntErrorKind::PosOverflow | IntErrorKind::NegOverflow
    )
}

/// Wait `d`, or until the lease is lost; the reason if it was.
fn pause(d: Duration, beat: Option<&Heartbeats>) -> Result<Option<Error>> {
    let Some(b) = beat else {
        std::thread::sleep(d);
        return Ok(None);
    };
    use nix::poll::{PollFd, PollFlags, poll};
    let deadline = process::deadline_after(d);
    loop {
        let mut fds = [PollFd::new(b.lost_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, process::poll_timeout(deadline)) {
            Ok(0) if process::deadline_passed(deadline) => return Ok(None),
            // Cut to what one poll takes (24.8 days): the rest.
            Ok(0) | Err(nix::errno::Errno::EINTR) => continue,
            Ok(_) => return Ok(Some(lost_why(b))),
            Err(e) => return Err(Error::sys("poll", "heartbeat", e).into()),
        }
    }
}

fn lost_why(b: &Heartbeats) -> Error {
    b.lost().unwrap_or_else(|| {
        Error::new(
            ErrorKind::PeerClosed,
            "heartbeat",
            "server",
            "the heartbeats stopped",
        )
    })
}

/// End the command's whole process group: SIGTERM (and SIGCONT), then
/// SIGKILL if it still runs after [`GRACE`]; reap it.
fn end_group(r: &mut Running) -> Result<()> {
    use nix::sys::signal::Signal;
    r.signal(Signal::SIGTERM)?;
    r.signal(Signal::SIGCONT)?;
    let deadline = process::deadline_after(GRACE);
    loop {
        match r.wait_event(deadline, None)? {
            Event::Exited(_) => return Ok(()),
            Event::Woken => continue,
            Event::Deadline => break,
        }
    }
    r.signal(Signal::SIGKILL)?;
    // A process that left the group may still hold a pipe: not waited on.
    r.abandon_output();
    r.wait()?;
    Ok(())
}

impl Job<'_> {
    /// Run one task; with `beat`, end it when the lease is lost.
    fn run(&self, task: &[u8], beat: Option<&Heartbeats>) -> Result<Done> {
        if let Some(d) = self.delay {
            if let Some(why) = pause(d, beat)? {
                return Ok(Done::Lost(why));
            }
        }
        if self.cmd.is_empty() {
            let text = String::from_utf8_lossy(task);
            return Ok(match text.trim().parse::<i128>() {
                Ok(n) => match n.checked_mul(n) {
                    Some(v) => Done::Square(n, v),
                    None => Done::Refused(too_big(n)),
                },
                Err(e) if too_long(&e) => Done::Refused(too_big(text.trim())),
                Err(_) => Done::Refused(not_a_number(text.trim())),
            });
        }
        if !self.stdin && task.contains(&0) {
            return Ok(Done::Refused(Error::data(
                "task",
                String::from_utf8_lossy(task).replace('\0', "\\0"),
                "a NUL byte cannot be passed in CMD's arguments (use --stdin)",
            )));
        }
        let arg = String::from_utf8_lossy(task).into_owned();
        let mut argv: Vec<String> = self.cmd.iter().map(|a| a.replace("{}", &arg)).collect();
        if !self.stdin && !self.cmd.iter().any(|a| a.contains("{}")) {
            argv.push(arg);
        }
        let input = if self.stdin {
            task.to_vec()
        } else {
            Vec::new()
        };
        // Its own process group, so that a lost lease ends the command
        // and everything it started; SIGTERM when this worker dies.
        let spawn = Spawn::new(&argv)?
            .stdin(Stdin::Bytes(input))
            .capture(true)
            .process_group(true)
            .die_with_parent(nix::sys::signal::Signal::SIGTERM);
        match spawn.start() {
            Ok(mut running) => {
                let status = loop {
                    let wake = beat.map(Heartbeats::lost_fd);
                    match running.wait_event(None, wake)? {
                        Event::Exited(s) => break s,
                        Event::Deadline => continue,
                        Event::Woken => {
                            let why = lost_why(beat.expect("woken by the heartbeats"));
                            end_group(&mut running)?;
                            return Ok(Done::Lost(why));
                        }
                    }
                };
                let (stdout, stderr) = running.take_output();
                let _ = std::io::Write::write_all(&mut std::io::stderr(), &stderr);
                Ok(Done::Ran {
                    status: status.shell_code(),
                    stdout,
                })
            }
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::CommandNotFound | ErrorKind::CommandNotExecutable
                ) =>
            {
                crate::cmd::eprintln_one("pk-manager", &e);
                let status = if e.kind() == ErrorKind::CommandNotFound {
                    exit::NOT_FOUND
                } else {
                    exit::NOT_EXECUTABLE
                };
                Ok(Done::Ran {
                    status,
                    stdout: Vec::new(),
                })
            }
            Err(e) => Err(e.into()),
        }
    }
}

pub(super) fn run(a: WorkArgs, out: &mut Out) -> Result<u8> {
    crate::manager::wire::check_name(&a.queue)?;
    crate::manager::wire::check_name(&a.results)
        .map_err(|_| Error::invalid("--results", format!("'{}' is not a queue name", a.results)))?;
    let timeout = a.conn.timeout()?;
    if a.idle.is_some_and(|d| d.0.is_zero()) {
        return Err(Error::invalid("--idle", "must be more than 0").into());
    }
    let key = a.key.load()?;
    let job = Job {
        cmd: &a.cmd,
        stdin: a.stdin,
        delay: a.task_delay.map(|d| d.0),
    };
    if a.python {
        let idle = a.idle.map_or(Duration::from_secs(1), |d| d.0);
        return work_python(out, &a, &key, timeout, idle, &job);
    }
    let me = process::getpid();
    let addr = &a.conn.connect;
    let mut c = Client::connect(addr, &key, super::my_pid(), timeout)?;
    note!(out, "worker {me}: authenticated with {addr}")?;
    let mut done = 0u64;
    let mut refused = 0u64;
    // Done (closed and drained) or Empty (idle for --idle) ends the loop.
    while let Got::Item { id, body: task } = c.get(&a.queue, a.idle.map(|d| d.0))? {
        let shown = String::from_utf8_lossy(&task).into_owned();
        if a.cmd.is_empty() {
            note!(out, "worker {me}: task {id} received, n={}", shown.trim())?;
        } else {
            note!(out, "worker {me}: task {id} received: {shown}")?;
        }
        let result = {
            let beat = c.heartbeats()?;
            job.run(&task, Some(&beat))?
        };
        let (body, line) = match &result {
            Done::Square(n, v) => (
                format!("{n} * {n} = {v}").into_bytes(),
                format!("{n} * {n} = {v}"),
            ),
            Done::Ran { status, stdout } => {
                let mut b = format!("{status} {}\n", shown.replace('\n', "\\n")).into_bytes();
                b.extend_from_slice(stdout);
                b.truncate(crate::manager::wire::MAX_BODY);
                (b, format!("exit {status}"))
            }
            Done::Refused(e) => {
                refused += 1;
                let b = if a.cmd.is_empty() {
                    let t = shown.trim();
                    let why = match t.parse::<i128>() {
                        Err(e) if !too_long(&e) => "not a number",
                        _ => TOO_BIG,
                    };
                    format!("{t}: {why}")
                } else {
                    let shown = shown.replace('\n', "\\n").replace('\0', "\\0");
                    format!("{} {shown}\n", exit::DATA)
                };
                let mut b = b.into_bytes();
                b.truncate(crate::manager::wire::MAX_BODY);
                (b, e.to_string())
            }
            // The server has handed the task to another worker: its result
            // would be a duplicate. One line, exit 71.
            Done::Lost(why) => {
                let what = if a.cmd.is_empty() { "work" } else { "command" };
                return Err(Error::new(
                    ErrorKind::PeerClosed,
                    "heartbeat",
                    addr,
                    format!(
                        "task {id}: {why}; its {what} was ended, the server gives the task to another worker"
                    ),
                )
                .into());
            }
        };
        match c.put(&a.results, &body, Some(id), None)? {
            Put::Ok if matches!(result, Done::Refused(_)) => {
                task_failed(out, me, id, &line)?;
            }
            Put::Ok => {
                done += 1;
                outln!(out, "worker {me}: task {id} done: {line}")?;
            }
            Put::Stale => note!(
                out,
                "worker {me}: task {id} was counted already; result dropped"
            )?,
            // A put with no time limit waits for room: a server that
            // answers full to it does not speak the protocol.
            Put::Full => {
                return Err(Error::data(
                    "put",
                    &a.conn.connect,
                    "the server answered 'full' to a put with no time limit",
                )
                .into());
            }
        }
    }
    note!(out, "worker {me}: no more tasks, {done} done")?;
    Ok(if refused > 0 { exit::DATA } else { exit::OK })
}

/// A task that cannot be run failed alone: its line on stdout, and the
/// reason as an error line on stderr.
fn task_failed(out: &mut Out, me: process::Pid, id: u64, why: &str) -> Result<()> {
    crate::cmd::eprintln_one("pk-manager", &why);
    outln!(out, "worker {me}: task {id} failed: {why}")?;
    Ok(())
}

/// The queue's type id for CPython: `tasks` → `get_task_queue`.
fn typeid(queue: &str) -> String {
    format!("get_{}_queue", queue.strip_suffix('s').unwrap_or(queue))
}

fn work_python(
    out: &mut Out,
    a: &WorkArgs,
    key: &crate::manager::Key,
    timeout: Duration,
    idle: Duration,
    job: &Job<'_>,
) -> Result<u8> {
    let me = process::getpid();
    let addr = &a.conn.connect;
    let mut c = PyClient::connect(addr, key, timeout)?;
    let tasks = c.create(&typeid(&a.queue))?;
    let results = c.create(&typeid(&a.results))?;
    note!(out, "worker {me}: authenticated with {addr}")?;
    let mut done = 0u64;
    let mut refused = 0u64;
    loop {
        let kwds = vec![(Value::str("timeout"), Value::Float(idle.as_secs_f64()))];
        let answer = match c.call(&tasks, "get", vec![], kwds, Some(idle)) {
            // A master that shut down while we held nothing: we are done.
            Err(e) if e.kind() == ErrorKind::PeerClosed => {
                note!(out, "worker {me}: the server closed the connection")?;
                break;
            }
            other => other?,
        };
        let task = match answer {
            Answer::Return(v) => v,
            Answer::Undecodable(why) => {
                // The task has left the master's queue, and no pickle of
                // it can be made here: a failure result without it, so
                // that the master still gets one result per task.
                let id = done + refused + 1;
                refused += 1;
                task_failed(out, me, id, &why.to_string())?;
                let failed = if a.cmd.is_empty() {
                    Value::Str(format!("task {id}: {UNDECODABLE}"))
                } else {
                    Value::Tuple(vec![
                        Value::None,
                        Value::Int(exit::DATA.into()),
                        Value::str(""),
                    ])
                };
                put_result(&mut c, &results, failed, timeout, addr)?;
                continue;
            }
            Answer::Raised(e) if e.is_empty_exception() => break,
            Answer::Raised(e) => {
                return Err(Error::new(
                    ErrorKind::Other,
                    "get",
                    addr,
                    format!("the server raised {e}"),
                )
                .into());
            }
        };
        // Tasks are numbered as they come: CPython's queues have no ids.
        let id = done + refused + 1;
        let result = if a.cmd.is_empty() {
            note!(out, "worker {me}: task {id} received, n={task}")?;
            if let Some(d) = job.delay {
                std::thread::sleep(d);
            }
            match task {
                Value::Int(n) if n.checked_mul(n).is_some() => {
                    done += 1;
                    let v = n * n;
                    outln!(out, "worker {me}: task {id} done: {n} * {n} = {v}")?;
                    Value::Str(format!("{n} * {n} = {v}"))
                }
                Value::Int(n) => {
                    refused += 1;
                    let why = too_big(n);
                    task_failed(out, me, id, &why.to_string())?;
                    Value::Str(format!("{n}: {TOO_BIG}"))
                }
                other => {
                    refused += 1;
                    let why = Error::data(
                        "task",
                        &other,
                        "the lesson's task is not an int (use -- CMD for other tasks)",
                    );
                    task_failed(out, me, id, &why.to_string())?;
                    Value::Str(format!("{}: not an int", other.to_text()))
                }
            }
        } else {
            let text = task.to_text();
            note!(out, "worker {me}: task {id} received: {text}")?;
            let (status, stdout) = match job.run(text.as_bytes(), None)? {
                Done::Ran { status, stdout } => {
                    done += 1;
                    outln!(out, "worker {me}: task {id} done: exit {status}")?;
                    (status, stdout)
                }
                Done::Refused(why) => {
                    refused += 1;
                    task_failed(out, me, id, &why.to_string())?;
                    (exit::DATA, Vec::new())
                }
                Done::Square(..) | Done::Lost(_) => unreachable!("a command, no heartbeats"),
            };
            Value::Tuple(vec![
                task,
                Value::Int(status.into()),
                Value::Str(String::from_utf8_lossy(&stdout).into_owned()),
            ])
        };
        put_result(&mut c, &results, result, timeout, addr)?;
    }
    note!(out, "worker {me}: no more tasks, {done} done")?;
    Ok(if refused > 0 { exit::DATA } else { exit::OK })
}

/// What a task that cannot be decoded gets as its result (--python).
const UNDECODABLE: &str = "a task this worker cannot decode";

/// Put `result` on the CPython master's results queue.
fn put_result(
    c: &mut PyClient,
    results: &str,
    result: Value,
    timeout: Duration,
    addr: &str,
) -> Result<()> {
    match c.call(results, "put", vec![result], vec![], Some(timeout))? {
        Answer::Return(_) => Ok(()),
        Answer::Raised(e) => Err(Error::new(
            ErrorKind::Other,
            "put",
            addr,
            format!("the server raised {e}"),
        )
        .into()),
        Answer::Undecodable(e) => Err(e.into()),
    }
}
