//! `pk-manager work`: take tasks, run them, put results.

use std::time::Duration;

use super::{ConnectArgs, KeyArgs};
use crate::cmd::Out;
use crate::cmd::Result;
use crate::cmd::duration::DurationArg;
use crate::cmd::exit;
use crate::error::{Error, ErrorKind};
use crate::manager::client::{Client, Got, Put};
use crate::manager::python::client::{Answer, PyClient};
use crate::manager::python::pickle::Value;
use crate::spawn::{Spawn, Stdin};
use crate::{note, outln, process};

pub(super) const HELP: &str = "\
Without CMD: the lesson. A task is a number n; the result is the text
`n * n = n²`, put on --results in the same step that settles the task.
With CMD: each task runs CMD through posixkit's spawn, the task replacing
every `{}` in its arguments (appended as the last argument when none has
`{}`), or fed on stdin with --stdin. The result is one line `<status>
<task>` (status as a shell shows it: 0-255, 128+N for signal N, 127 not
found) followed by the command's stdout; its stderr goes to ours. While CMD
runs, heartbeats keep the lease. With --python the result is the tuple
(task, status, stdout) instead.

Output:
  worker <pid>: authenticated with <addr>
  worker <pid>: task <id> received, n=<n>          (CMD: received: <task>)
  worker <pid>: task <id> done: <n> * <n> = <v>    (CMD: done: exit <status>)
  worker <pid>: task <id> was counted already; result dropped
  worker <pid>: no more tasks, <k> done
With --quiet only the `done` lines are printed.

--python: connect to a CPython manager server (BaseManager(...).start() or
get_server().serve_forever()) as the lesson's Python worker does: type ids
get_task_queue / get_result_queue (from --queue tasks / --results results:
get_NAME_queue, NAME without its final s), get(timeout=--idle), put(result).
Answers are decoded with a pickle subset that never runs code.

Exit status: 0 when the server said the queue is closed and drained (the
lesson: every result is in), or no task came for --idle, or (--python) the
server closed the connection while this worker held no task; 1 when connecting
or the handshake times out; 2 for a bad flag or key; 65 when the server
sent something that is not the protocol, or a lesson task is not a number;
66 when the host does not resolve or the key file does not exist; 71 when
connecting fails, the connection drops, or the server stays silent for a
whole lease (it died or stopped); 77 when the keys differ (the server could
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
    Ran { status: u8, stdout: Vec<u8> },
}

impl Job<'_> {
    fn run(&self, task: &[u8]) -> Result<Done> {
        if let Some(d) = self.delay {
            std::thread::sleep(d);
        }
        if self.cmd.is_empty() {
            let text = String::from_utf8_lossy(task);
            let n: i128 = text.trim().parse().map_err(|_| {
                Error::data(
                    "task",
                    text.trim(),
                    "the lesson's task is not a number (use -- CMD for other tasks)",
                )
            })?;
            return Ok(Done::Square(n, n.wrapping_mul(n)));
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
        let spawn = Spawn::new(&argv)?.stdin(Stdin::Bytes(input)).capture(true);
        match spawn.run() {
            Ok(o) => {
                let _ = std::io::Write::write_all(&mut std::io::stderr(), &o.stderr);
                Ok(Done::Ran {
                    status: o.status.shell_code(),
                    stdout: o.stdout,
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
    // Done (closed and drained) or Empty (idle for --idle) ends the loop.
    while let Got::Item { id, body: task } = c.get(&a.queue, a.idle.map(|d| d.0))? {
        let shown = String::from_utf8_lossy(&task).into_owned();
        if a.cmd.is_empty() {
            note!(out, "worker {me}: task {id} received, n={}", shown.trim())?;
        } else {
            note!(out, "worker {me}: task {id} received: {shown}")?;
        }
        let result = {
            let _beat = c.heartbeats();
            job.run(&task)?
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
        };
        match c.put(&a.results, &body, Some(id), None)? {
            Put::Ok => {
                done += 1;
                outln!(out, "worker {me}: task {id} done: {line}")?;
            }
            Put::Stale => note!(
                out,
                "worker {me}: task {id} was counted already; result dropped"
            )?,
            Put::Full => unreachable!("a put with no time limit waits for room"),
        }
    }
    note!(out, "worker {me}: no more tasks, {done} done")?;
    Ok(exit::OK)
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
        done += 1;
        let id = done;
        let result = if a.cmd.is_empty() {
            note!(out, "worker {me}: task {id} received, n={task}")?;
            let Value::Int(n) = task else {
                return Err(Error::data(
                    "task",
                    &task,
                    "the lesson's task is not an int (use -- CMD for other tasks)",
                )
                .into());
            };
            let v = n.wrapping_mul(n);
            if let Some(d) = job.delay {
                std::thread::sleep(d);
            }
            outln!(out, "worker {me}: task {id} done: {n} * {n} = {v}")?;
            Value::Str(format!("{n} * {n} = {v}"))
        } else {
            let text = task.to_text();
            note!(out, "worker {me}: task {id} received: {text}")?;
            match job.run(text.as_bytes())? {
                Done::Ran { status, stdout } => {
                    outln!(out, "worker {me}: task {id} done: exit {status}")?;
                    Value::Tuple(vec![
                        task,
                        Value::Int(status.into()),
                        Value::Str(String::from_utf8_lossy(&stdout).into_owned()),
                    ])
                }
                Done::Square(..) => unreachable!("a command was given"),
            }
        };
        match c.call(&results, "put", vec![result], vec![], Some(timeout))? {
            Answer::Return(_) => {}
            Answer::Raised(e) => {
                return Err(Error::new(
                    ErrorKind::Other,
                    "put",
                    addr,
                    format!("the server raised {e}"),
                )
                .into());
            }
        }
    }
    note!(out, "worker {me}: no more tasks, {done} done")?;
    Ok(exit::OK)
}
