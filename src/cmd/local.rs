//! `pk-local`: the threading.local lesson. Every thread stores its
//! student's name in the same thread-local slot, and each reads back only
//! its own.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use clap::Parser;

use crate::cmd::Out;
use crate::cmd::Result;
use crate::cmd::exit;
use crate::error::Error;
use crate::thread::{self, Group, local};
use crate::{note, outln};

const AFTER_HELP: &str = "\
Output (the Hello lines come in any order):
  Hello, <NAME> (in Thread-<L>)        one per name; L is A, B, C ...
  thread MainThread: local value unset (the main thread's own slot)
Every thread stores its name in the one thread-local slot, then waits until
all the others have stored theirs, then reads the slot back: each sees
only its own value. --quiet drops the MainThread line.

Exit status: 0 when the demo ran; 2 for a bad flag; 71 when a thread cannot
be started.

Examples:
  pk-local                          # Alice in Thread-A, Bob in Thread-B
  pk-local --names Ann,Ben,Cy";

/// Thread-local values: each thread sees only what it stored. Python's
/// threading.local.
#[derive(Debug, Parser)]
#[command(name = "pk-local", version, after_help = AFTER_HELP)]
pub struct Args {
    /// Comma-separated names, one thread each (1-26 names, 1-64 characters each).
    #[arg(short, long, value_name = "NAME,NAME", default_value = "Alice,Bob",
          value_delimiter = ',', value_parser = crate::cmd::threads::thread_name)]
    pub names: Vec<String>,

    /// Print only the Hello lines.
    #[arg(short, long)]
    pub quiet: bool,
}

/// Python's `process_student`: reads the name from the thread-local slot,
/// not from an argument.
fn process_student(out: &mut Out) -> Result<()> {
    let student = local::get().unwrap_or_default();
    outln!(out, "Hello, {student} (in {})", thread::current_name())
}

/// Run the thread-local lesson.
pub fn run(args: Args, out: &mut Out) -> Result<u8> {
    if args.names.len() > 26 {
        return Err(Error::invalid("--names", "at most 26 names (Thread-A to Thread-Z)").into());
    }
    out.set_quiet(args.quiet);
    // Every thread stores its value, then waits at the gate, which the
    // last one to store opens, before it reads: proof that they share no
    // slot. A thread that cannot be started stops and releases the group.
    let left = Arc::new(AtomicUsize::new(args.names.len()));
    let mut group = Group::new();
    for (letter, name) in ('A'..='Z').zip(args.names) {
        let left = Arc::clone(&left);
        group.spawn(format!("Thread-{letter}"), move |gate| -> Result<()> {
            local::set(name);
            if left.fetch_sub(1, Ordering::AcqRel) == 1 {
                gate.open();
            }
            gate.wait();
            process_student(&mut Out::stdout())
        })?;
    }
    group.join()?.into_iter().collect::<Result<()>>()?;
    match local::get() {
        None => note!(out, "thread {}: local value unset", thread::current_name())?,
        Some(v) => note!(out, "thread {}: local value {v}", thread::current_name())?,
    }
    Ok(exit::OK)
}
