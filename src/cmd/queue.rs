//! `pk-queue`: a bounded queue between processes. `basics` is the
//! full/empty/qsize lesson; `demo` runs producers and consumers and checks
//! that every item is consumed exactly once.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use clap::{Args as ClapArgs, Parser, Subcommand};

use crate::cmd::Out;
use crate::cmd::Result;
use crate::cmd::exit;
use crate::error::Error;
use crate::process::{self, Child, Children, Fork};
use crate::queue::Queue;
use crate::shm::SharedArray;
use crate::{note, outln};

const AFTER_HELP: &str = "\
Subcommands:
  basics   put 3 into a queue of 3: full, qsize, FIFO gets in a child, empty
  demo     producers and consumers; every item consumed exactly once

Output of `basics` (<pid> is a process id):
  put(1) put(2) put(3)
  full()=true qsize()=3 empty()=false
  try_put(4)=false (full)
  child <pid>: get()=1          (three lines: FIFO order, in another process)
  child <pid> exited, status=0
  empty()=true qsize()=0 full()=false
  get(timeout=50ms)=timed out
  child <pid>: put(bye), exiting at once
  child <pid> exited, status=0
  joined first, then get()=bye  (no message lost, no deadlock on join)

Output of `demo`:
  parent <pid>: <P> producers x <N> items -> <C> consumers, capacity <K>
  producer <pid> put <N> items
  consumer <pid> got <M> items, sum=<S>
  put=<P*N> got=<total> duplicates=<D> missing=<M>   (result line)
  sum=<S> expected=<S'> <ok|WRONG>                    (result line)
  elapsed=<seconds>s msgs_per_s=<rate>                (timing, not a result)
Each item is 16 bytes: its producer's number and a sequence number 1..N.
Consumers mark each item in a shared table, so a duplicate or a missing
item is counted, not guessed. --quiet keeps only the result lines.

Exit status: 0 when the demo ran and every item arrived exactly once;
65 when an item was lost, duplicated or damaged; 2 for a bad flag; 71 when
fork, memfd_create, mmap or a semaphore call fails, or a child fails.

Examples:
  pk-queue basics
  pk-queue demo --producers 2 --consumers 1 --items 10 --capacity 4
  pk-queue demo --producers 4 --consumers 2 --items 10000 --capacity 64 -q";

/// A bounded queue of messages between processes, in shared memory.
#[derive(Debug, Parser)]
#[command(name = "pk-queue", version, after_help = AFTER_HELP)]
pub struct Args {
    #[command(subcommand)]
    pub cmd: Cmd,
}

/// What to show.
#[derive(Debug, Subcommand)]
pub enum Cmd {
    /// put/get, full/empty/qsize, try_put, a timeout, and a child that exits
    /// right after put.
    Basics,
    /// P producer processes put N items each; C consumer processes get them.
    Demo(Demo),
}

/// `pk-queue demo` arguments.
#[derive(Debug, ClapArgs)]
pub struct Demo {
    /// Producer processes (1-64).
    #[arg(short, long, value_name = "P", default_value_t = 2,
          value_parser = clap::value_parser!(u32).range(1..=64))]
    pub producers: u32,
    /// Consumer processes (1-64).
    #[arg(short, long, value_name = "C", default_value_t = 1,
          value_parser = clap::value_parser!(u32).range(1..=64))]
    pub consumers: u32,
    /// Items per producer (1-10000000; P x N at most 50000000).
    #[arg(short = 'n', long, value_name = "N", default_value_t = 10,
          value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    pub items: u64,
    /// Queue capacity in messages (1-65536).
    #[arg(short = 'k', long, value_name = "K", default_value_t = 8,
          value_parser = clap::value_parser!(u32).range(1..=65536))]
    pub capacity: u32,
    /// Print only the result lines.
    #[arg(short, long)]
    pub quiet: bool,
}

/// Run pk-queue.
pub fn run(args: Args, out: &mut Out) -> Result<u8> {
    match args.cmd {
        Cmd::Basics => basics(out),
        Cmd::Demo(d) => demo(d, out),
    }
}

fn text(m: &[u8]) -> String {
    m.escape_ascii().to_string()
}

fn fork_child(what: &str) -> Result<Option<Child>> {
    // Fork: pk-queue is single-threaded; every caller's child branch
    // ends with _exit.
    match crate::cmd::fork(what)? {
        Fork::Child => Ok(None),
        Fork::Parent(pid) => Ok(Some(Child::new(pid))),
    }
}

fn child_exit<E>(r: std::result::Result<(), E>) -> ! {
    process::_exit(match r {
        Ok(()) => 0,
        Err(_) => i32::from(exit::OS_ERR),
    })
}

fn basics(out: &mut Out) -> Result<u8> {
    let q = Queue::new(3, 64)?;
    for m in ["1", "2", "3"] {
        q.put(m.as_bytes())?;
    }
    outln!(out, "put(1) put(2) put(3)")?;
    outln!(
        out,
        "full()={} qsize()={} empty()={}",
        q.full()?,
        q.qsize()?,
        q.empty()?
    )?;
    outln!(
        out,
        "try_put(4)={}{}",
        q.try_put(b"4")?,
        if q.full()? { " (full)" } else { "" }
    )?;

    let Some(mut child) = fork_child("getter")? else {
        let me = process::getpid();
        child_exit::<crate::cmd::Failure>((|| {
            for _ in 0..3 {
                let m = q.get()?;
                outln!(out, "child {me}: get()={}", text(&m))?;
            }
            Ok(())
        })())
    };
    let status = child.wait()?;
    outln!(out, "child {} {status}", child.pid())?;
    outln!(
        out,
        "empty()={} qsize()={} full()={}",
        q.empty()?,
        q.qsize()?,
        q.full()?
    )?;
    let got = q.get_timeout(Duration::from_millis(50))?;
    outln!(
        out,
        "get(timeout=50ms)={}",
        got.map_or("timed out".to_string(), |m| text(&m))
    )?;

    // The multiprocessing.Queue trap: a child puts and exits at once; the
    // parent joins it before getting. Here put has already copied the
    // message into shared memory, so nothing is lost and join cannot hang.
    let Some(mut child) = fork_child("putter")? else {
        let me = process::getpid();
        let _ = outln!(out, "child {me}: put(bye), exiting at once");
        child_exit(q.put(b"bye"))
    };
    let status = child.wait()?;
    outln!(out, "child {} {status}", child.pid())?;
    let got = q.get_timeout(Duration::from_secs(5))?;
    outln!(
        out,
        "joined first, then get()={}",
        got.map_or("nothing (lost!)".to_string(), |m| text(&m))
    )?;
    Ok(exit::OK)
}

// Shared counters of the demo.
const DUPLICATES: usize = 0;
const DAMAGED: usize = 1;

fn demo(d: Demo, out: &mut Out) -> Result<u8> {
    out.set_quiet(d.quiet);
    let (p, c, n) = (d.producers as u64, d.consumers as usize, d.items);
    let total = p * n;
    if total > 50_000_000 {
        return Err(Error::invalid(
            "--items",
            format!("{p} producers x {n} items is more than 50000000"),
        )
        .into());
    }
    let q = Queue::new(d.capacity as usize, 16)?;
    // One mark per item: consumers count arrivals; 1 is right, 0 missing,
    // more is a duplicate.
    let seen = SharedArray::<u8>::new(total as usize)?;
    let stats = SharedArray::<u64>::new(2)?;
    // Per consumer: items got, sum of their sequence numbers.
    let per = SharedArray::<u64>::new(2 * c)?;
    note!(
        out,
        "parent {}: {p} producer{} x {n} items -> {c} consumer{}, capacity {}",
        process::getpid(),
        if p == 1 { "" } else { "s" },
        if c == 1 { "" } else { "s" },
        d.capacity
    )?;
    let start = Instant::now();
    // Every child's branch ends with _exit (child_exit).
    let mut consumers = Children::new();
    for i in 0..c {
        consumers.start("consumer", || {
            child_exit(consume(i, &q, n, &seen, &stats, &per, out))
        })?;
    }
    let mut producers = Children::new();
    for i in 0..p {
        producers.start("producer", || child_exit(produce(i, &q, n, out)))?;
    }
    let failed = producers.wait_all()?;
    // Every item is in the queue or taken: one empty message per consumer
    // tells it to stop.
    for _ in 0..c {
        q.put(b"")?;
    }
    let failed = failed.or(consumers.wait_all()?);
    let elapsed = start.elapsed();
    crate::cmd::fail_on_child(failed, "child")?;
    let got: u64 = (0..c).map(|i| per.get(2 * i)).sum();
    let sum: u64 = (0..c).map(|i| per.get(2 * i + 1)).sum();
    let missing = (0..seen.len()).filter(|&i| seen.get(i) == 0).count();
    let duplicates = stats.get(DUPLICATES);
    let damaged = stats.get(DAMAGED);
    let expected = p * (n * (n + 1) / 2);
    outln!(
        out,
        "put={total} got={got} duplicates={duplicates} missing={missing}{}",
        if damaged > 0 {
            format!(" damaged={damaged}")
        } else {
            String::new()
        }
    )?;
    let ok = sum == expected && got == total && duplicates == 0 && missing == 0 && damaged == 0;
    outln!(
        out,
        "sum={sum} expected={expected} {}",
        if ok { "ok" } else { "WRONG" }
    )?;
    note!(
        out,
        "elapsed={:.3}s msgs_per_s={:.0}",
        elapsed.as_secs_f64(),
        total as f64 / elapsed.as_secs_f64().max(1e-9)
    )?;
    Ok(if ok { exit::OK } else { exit::DATA })
}

fn produce(i: u64, q: &Queue, n: u64, out: &mut Out) -> Result<()> {
    let mut msg = [0u8; 16];
    msg[..8].copy_from_slice(&i.to_le_bytes());
    for seq in 1..=n {
        msg[8..].copy_from_slice(&seq.to_le_bytes());
        q.put(&msg)?;
    }
    // The last put is in shared memory already: exiting now loses nothing.
    let _ = note!(out, "producer {} put {n} items", process::getpid());
    Ok(())
}

fn consume(
    i: usize,
    q: &Queue,
    n: u64,
    seen: &SharedArray<u8>,
    stats: &SharedArray<u64>,
    per: &SharedArray<u64>,
    out: &mut Out,
) -> Result<()> {
    let (mut got, mut sum) = (0u64, 0u64);
    let mut buf = Vec::with_capacity(16);
    loop {
        q.get_into(&mut buf)?;
        if buf.is_empty() {
            break;
        }
        let word = |r: std::ops::Range<usize>| {
            buf.get(r)
                .and_then(|b| <[u8; 8]>::try_from(b).ok())
                .map(u64::from_le_bytes)
        };
        let (Some(producer), Some(seq)) = (word(0..8), word(8..16)) else {
            stats.atomic(DAMAGED).fetch_add(1, Ordering::Relaxed);
            continue;
        };
        let index = producer
            .checked_mul(n)
            .and_then(|b| b.checked_add(seq.wrapping_sub(1)))
            .filter(|&x| buf.len() == 16 && (1..=n).contains(&seq) && (x as usize) < seen.len());
        let Some(index) = index else {
            stats.atomic(DAMAGED).fetch_add(1, Ordering::Relaxed);
            continue;
        };
        if seen.atomic(index as usize).fetch_add(1, Ordering::Relaxed) != 0 {
            stats.atomic(DUPLICATES).fetch_add(1, Ordering::Relaxed);
        }
        got += 1;
        sum += seq;
    }
    per.set(2 * i, got);
    per.set(2 * i + 1, sum);
    let _ = note!(
        out,
        "consumer {} got {got} items, sum={sum}",
        process::getpid()
    );
    Ok(())
}
