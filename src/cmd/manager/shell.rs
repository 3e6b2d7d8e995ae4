//! `pk-manager put` and `pk-manager get`: the queues from a shell.

use std::io::BufRead;
use std::time::Instant;

use super::{ConnectArgs, KeyArgs};
use crate::cmd::Out;
use crate::cmd::Result;
use crate::cmd::duration::{self, DurationArg};
use crate::cmd::exit;
use crate::error::{Error, ErrorKind};
use crate::manager::client::{Client, Got, Put};

pub(super) const PUT_HELP: &str = "\
Each MSG is one message; with `-` (or no MSG) each line of stdin is one
(without its newline). A full queue makes put wait for room, up to
--timeout. --close closes the queue after the messages: workers that find
it drained stop with exit 0, and further puts are refused.
Prints nothing.

Exit status: 0 when every message is on the queue; 1 when the queue stayed
full for --timeout (the messages before it are on the queue); 2 for a bad
flag, key, or a queue the server does not have; 65, 66, 71, 77 as for work.";

pub(super) const GET_HELP: &str = "\
Takes N messages (default 1) and prints each, followed by a newline unless
it ends with one (with -0: followed by a NUL). Each message is leased
until printed, then acknowledged: a get killed before it printed leaves
the message for another.

Exit status: 0 when N messages were printed; 1 when --timeout passed or
the queue was closed and drained first (those that came are printed); 2
for a bad flag, key, or a queue the server does not have; 65, 66, 71, 77 as
for work.";

/// `put` flags.
#[derive(Debug, clap::Args)]
pub struct PutArgs {
    #[command(flatten)]
    conn: ConnectArgs,
    #[command(flatten)]
    key: KeyArgs,
    /// The queue.
    #[arg(long, value_name = "NAME")]
    queue: String,
    /// Close the queue after the messages.
    #[arg(long)]
    close: bool,
    /// Wait at most DURATION in all for room in a full queue (2, 1.5s,
    /// 250ms, 1m, 1h, 2d, any length).
    #[arg(long, value_name = "DURATION", value_parser = duration::unbounded)]
    timeout: Option<DurationArg>,
    /// The messages; `-` (or none) reads lines from stdin.
    #[arg(value_name = "MSG")]
    msgs: Vec<String>,
}

/// `get` flags.
#[derive(Debug, clap::Args)]
pub struct GetArgs {
    #[command(flatten)]
    conn: ConnectArgs,
    #[command(flatten)]
    key: KeyArgs,
    /// The queue.
    #[arg(long, value_name = "NAME")]
    queue: String,
    /// How many messages to take (1-1000000).
    #[arg(short = 'n', value_name = "N", default_value_t = 1,
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    count: u32,
    /// Wait at most DURATION in all (2, 1.5s, 250ms, 1m, 1h, 2d, any
    /// length).
    #[arg(long, value_name = "DURATION", value_parser = duration::unbounded)]
    timeout: Option<DurationArg>,
    /// End each message with a NUL instead of a newline.
    #[arg(short = '0', long)]
    null: bool,
}

fn left(deadline: Option<Instant>) -> Option<std::time::Duration> {
    deadline.map(|d| d.saturating_duration_since(Instant::now()))
}

/// A refused request (no such queue, a closed queue) is the user's mistake.
fn usage_if_refused(e: Error) -> crate::cmd::Failure {
    let code = if e.kind() == ErrorKind::InvalidInput {
        exit::USAGE
    } else {
        crate::cmd::exit_code(e.kind())
    };
    crate::cmd::Failure::from(e).with_code(code)
}

pub(super) fn put(a: PutArgs, _out: &mut Out) -> Result<u8> {
    crate::manager::wire::check_name(&a.queue)?;
    let timeout = a.conn.timeout()?;
    let from_stdin = a.msgs.is_empty() || a.msgs == ["-"];
    if from_stdin && a.key.reads_stdin() {
        return Err(Error::invalid(
            "--authkey-file",
            "- reads the key from stdin, where put reads its messages: give the messages as arguments, or the key another way",
        )
        .into());
    }
    let key = a.key.load()?;
    let mut c = Client::connect(&a.conn.connect, &key, super::my_pid(), timeout)?;
    let deadline = a.timeout.and_then(|t| crate::process::deadline_after(t.0));
    let one = |c: &mut Client, msg: &[u8]| -> Result<bool> {
        match c
            .put(&a.queue, msg, None, left(deadline))
            .map_err(usage_if_refused)?
        {
            Put::Ok | Put::Stale => Ok(true),
            Put::Full => Ok(false),
        }
    };
    let full = || {
        Error::new(
            ErrorKind::TimedOut,
            "put",
            &a.queue,
            "the queue stayed full",
        )
        .into()
    };
    if from_stdin {
        for line in crate::cmd::stdin_for_input()?.lock().split(b'\n') {
            let line = line.map_err(|e| Error::io("read", "stdin", &e))?;
            if !one(&mut c, &line)? {
                return Err(full());
            }
        }
    } else {
        for m in &a.msgs {
            if !one(&mut c, m.as_bytes())? {
                return Err(full());
            }
        }
    }
    if a.close {
        c.close_queue(&a.queue).map_err(usage_if_refused)?;
    }
    Ok(exit::OK)
}

pub(super) fn get(a: GetArgs, out: &mut Out) -> Result<u8> {
    crate::manager::wire::check_name(&a.queue)?;
    let timeout = a.conn.timeout()?;
    let key = a.key.load()?;
    let mut c = Client::connect(&a.conn.connect, &key, super::my_pid(), timeout)?;
    let deadline = a.timeout.and_then(|t| crate::process::deadline_after(t.0));
    for got in 0..a.count {
        match c.get(&a.queue, left(deadline)).map_err(usage_if_refused)? {
            Got::Item { id, mut body } => {
                if a.null {
                    body.push(0);
                } else if !body.ends_with(b"\n") {
                    body.push(b'\n');
                }
                out.bytes(&body)?;
                c.ack(id)?;
            }
            Got::Empty => {
                return Err(Error::new(
                    ErrorKind::TimedOut,
                    "get",
                    &a.queue,
                    format!("timed out after {got} of {} messages", a.count),
                )
                .into());
            }
            Got::Done => {
                return Err(Error::new(
                    ErrorKind::TimedOut,
                    "get",
                    &a.queue,
                    format!(
                        "the queue is closed and drained after {got} of {} messages",
                        a.count
                    ),
                )
                .into());
            }
        }
    }
    Ok(exit::OK)
}
