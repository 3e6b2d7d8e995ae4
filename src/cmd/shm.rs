//! `pk-shm`: memory that forked children really share. `bytes` is
//! `Array('c', b'Hello')` changed by a child; `counter` is ten processes
//! adding 1 fifty times to a shared `Value`, without a lock, with one, and
//! with an atomic add.

use std::sync::atomic::Ordering;
use std::time::Instant;

use clap::{Parser, Subcommand, ValueEnum};

use crate::cmd::Out;
use crate::cmd::Result;
use crate::cmd::exit;
use crate::process::{self, Child, Children, Fork};
use crate::sem::Semaphore;
use crate::shm::{SharedArray, SharedValue};
use crate::{note, outln};

const AFTER_HELP: &str = "\
Subcommands:
  bytes     a child reads and changes a shared byte array; the parent sees it
  counter   N processes add 1 M times to one shared counter

Output of `bytes` (<pid> is a process id):
  parent <pid>: array=b'Hello' (5 bytes, memfd mapped MAP_SHARED)
  child <pid>: arr[<i>]=<byte> '<char>'        (one line per byte)
  child <pid>: set arr[0]=<byte> '<char>'      (the first byte, lowercased)
  child <pid> exited, status=0
  parent <pid>: array=b'hello'
  value=hello                                   (the result line)

Output of `counter`:
  parent <pid>: <N> processes x <M> increments, sync=<mode>[, yield]
  expected=<N*M> got=<count> lost=<N*M-count>  (the result line)
  elapsed=<seconds>s ns_per_op=<ns>             (timing, not a result)
With --sync lock or atomic, got == expected, always. With --sync none the
read-modify-write is split into an atomic load and a later atomic store, so
two processes can read the same value and one update is lost; --yield calls
sched_yield between the two, which makes losses all but certain.

--quiet keeps only the result lines (value=..., expected=...).

Exit status: 0 when the demo ran (lost updates are the lesson, not an
error); 2 for a bad flag; 71 when fork, memfd_create, mmap or a semaphore
call fails, or a child fails.

Examples:
  pk-shm bytes --text Hello
  pk-shm counter --procs 10 --iters 50 --sync none --yield
  pk-shm counter --procs 10 --iters 50 --sync lock   # expected=500 got=500 lost=0";

/// Shared memory across fork: a byte array and a counter.
#[derive(Debug, Parser)]
#[command(name = "pk-shm", version, after_help = AFTER_HELP)]
pub struct Args {
    #[command(subcommand)]
    pub cmd: Cmd,

    /// Print only the result lines.
    #[arg(short, long, global = true)]
    pub quiet: bool,
}

/// What to show.
#[derive(Debug, Subcommand)]
pub enum Cmd {
    /// A child prints each byte of a shared array and lowercases the first;
    /// the parent sees the change.
    Bytes {
        /// The array's initial bytes (1-4096 bytes).
        #[arg(long, value_name = "TEXT", default_value = "Hello", value_parser = text)]
        text: String,
    },
    /// N processes each add 1 to a shared counter M times.
    Counter {
        /// Number of processes (1-1024).
        #[arg(short = 'n', long, value_name = "N", default_value_t = 10,
              value_parser = clap::value_parser!(u32).range(1..=1024))]
        procs: u32,
        /// Increments per process (1-100000000).
        #[arg(short = 'i', long, value_name = "M", default_value_t = 50,
              value_parser = clap::value_parser!(u64).range(1..=100_000_000))]
        iters: u64,
        /// none: load then store (updates get lost); lock: a process-shared
        /// semaphore around the load/store; atomic: fetch_add.
        #[arg(short, long, value_enum, default_value = "none")]
        sync: Sync,
        /// sched_yield between the load and the store (with --sync none or
        /// lock), so other processes run in between.
        #[arg(short = 'y', long = "yield")]
        yield_: bool,
    },
}

/// How the counter's increments are protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Sync {
    /// Nothing: an atomic load, then an atomic store of the value plus one.
    None,
    /// A process-shared semaphore used as a lock around the load and store.
    Lock,
    /// One atomic fetch_add per increment.
    Atomic,
}

fn text(s: &str) -> std::result::Result<String, String> {
    match s.len() {
        0 => Err("the text needs at least 1 byte".into()),
        1..=4096 => Ok(s.to_string()),
        n => Err(format!("{n} bytes is more than the limit of 4096")),
    }
}

/// Run pk-shm.
pub fn run(args: Args, out: &mut Out) -> Result<u8> {
    out.set_quiet(args.quiet);
    match args.cmd {
        Cmd::Bytes { text } => bytes(text.as_bytes(), out),
        Cmd::Counter {
            procs,
            iters,
            sync,
            yield_,
        } => counter(procs, iters, sync, yield_, out),
    }
}

fn show(b: &[u8]) -> String {
    format!("b'{}'", b.escape_ascii())
}

fn byte_char(b: u8) -> String {
    std::ascii::escape_default(b).to_string()
}

fn bytes(text: &[u8], out: &mut Out) -> Result<u8> {
    let arr = SharedArray::from_slice(text)?;
    let me = process::getpid();
    note!(
        out,
        "parent {me}: array={} ({} bytes, memfd mapped MAP_SHARED)",
        show(&arr.to_vec()),
        arr.len()
    )?;
    // Fork: pk-shm is single-threaded, and the child ends with _exit.
    let pid = match crate::cmd::fork("child")? {
        Fork::Child => {
            let me = process::getpid();
            for i in 0..arr.len() {
                let b = arr.get(i);
                let _ = note!(out, "child {me}: arr[{i}]={b} '{}'", byte_char(b));
            }
            let first = arr.get(0).to_ascii_lowercase();
            arr.set(0, first);
            let _ = note!(out, "child {me}: set arr[0]={first} '{}'", byte_char(first));
            process::_exit(0)
        }
        Fork::Parent(pid) => pid,
    };
    let mut child = Child::new(pid);
    let status = child.wait()?;
    note!(out, "child {pid} {status}")?;
    let now = arr.to_vec();
    note!(out, "parent {me}: array={}", show(&now))?;
    outln!(out, "value={}", now.escape_ascii())?;
    Ok(exit::OK)
}

fn counter(procs: u32, iters: u64, sync: Sync, yield_: bool, out: &mut Out) -> Result<u8> {
    let count = SharedValue::<u64>::new(0)?;
    let lock = Semaphore::new(1)?;
    // Children wait at this gate until all are forked, so they really run
    // at the same time instead of one after another.
    let gate = Semaphore::new(0)?;
    let mode = match sync {
        Sync::None => "none",
        Sync::Lock => "lock",
        Sync::Atomic => "atomic",
    };
    note!(
        out,
        "parent {}: {procs} processes x {iters} increments, sync={mode}{}",
        process::getpid(),
        if yield_ { ", yield" } else { "" }
    )?;

    // On an error, the group kills and reaps the children already made.
    let mut children = Children::new();
    for i in 1..=procs {
        // The child never returns from add: it ends with _exit.
        children.start(format_args!("child {i} of {procs}"), || {
            add(&gate, &lock, &count, iters, sync, yield_)
        })?;
    }
    let start = Instant::now();
    for _ in 0..procs {
        gate.post()?;
    }
    let failed = children.wait_all()?;
    let elapsed = start.elapsed();
    crate::cmd::fail_on_child(failed, "child")?;
    let expected = u64::from(procs) * iters;
    let got = count.get();
    outln!(
        out,
        "expected={expected} got={got} lost={}",
        expected.saturating_sub(got)
    )?;
    note!(
        out,
        "elapsed={:.3}s ns_per_op={:.1}",
        elapsed.as_secs_f64(),
        elapsed.as_nanos() as f64 / expected as f64
    )?;
    Ok(exit::OK)
}

/// A child's increments. Never returns.
fn add(
    gate: &Semaphore,
    lock: &Semaphore,
    count: &SharedValue<u64>,
    iters: u64,
    sync: Sync,
    yield_: bool,
) -> ! {
    if gate.wait().is_err() {
        process::_exit(i32::from(exit::OS_ERR));
    }
    let cell = count.atomic();
    for _ in 0..iters {
        match sync {
            Sync::Atomic => {
                cell.fetch_add(1, Ordering::Relaxed);
            }
            Sync::None => {
                // A read-modify-write split in two: another process may
                // store between our load and our store, and its update is
                // then overwritten. Atomic load/store keep it free of UB.
                let v = cell.load(Ordering::Relaxed);
                if yield_ {
                    std::thread::yield_now();
                }
                cell.store(v + 1, Ordering::Relaxed);
            }
            Sync::Lock => {
                let Ok(_held) = lock.acquire() else {
                    process::_exit(i32::from(exit::OS_ERR));
                };
                let v = cell.load(Ordering::Relaxed);
                if yield_ {
                    std::thread::yield_now();
                }
                cell.store(v + 1, Ordering::Relaxed);
            }
        }
    }
    process::_exit(0)
}
