//! `pk-queue`: a bounded queue between processes. `basics` is the
//! full/empty/qsize lesson; `demo` runs producers and consumers and checks
//! that every item is consumed exactly once, in each producer's order
//! (`--trace` shows every put and get, `--stop terminate` ends the readers
//! with terminate() as the lesson does). `create`, `put`, `get`, `stat`
//! and `unlink` work on a named queue in `/dev/shm` that independent shell
//! processes share.

use std::ffi::OsString;
use std::io::{BufRead, Read};
use std::os::unix::ffi::OsStrExt;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use clap::{Args as ClapArgs, Parser, Subcommand};

use crate::cmd::Out;
use crate::cmd::Result;
use crate::cmd::duration::{self, DurationArg};
use crate::cmd::exit;
use crate::error::{Context, Error};
use crate::process::{self, Builder, Child, Children, Fork};
use crate::queue::{self, Queue};
use crate::sem::Deadline;
use crate::sem::Semaphore;
use crate::shm::SharedArray;
use crate::status::Status;
use crate::{note, outln};

const AFTER_HELP: &str = "\
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
  producer <pid>: put <ITEM>       (with --trace, one per item, before the put)
  consumer <pid>: got <ITEM>       (with --trace, one per item, after the get)
  producer <pid> put <N> items
  consumer <pid> got <M> items, sum=<S>
  consumer <pid> got <M> items, sum=<S>; terminate() -> exitcode=-15
                                   (instead, with --stop terminate)
  order: each producer's items in the order it put them, <W> switches between producers
  put=<P*N> got=<total> duplicates=<D> missing=<M>   (result line)
  sum=<S> expected=<S'> <ok|WRONG>                    (result line)
  elapsed=<seconds>s msgs_per_s=<rate>                (timing, not a result)
Each item is 16 bytes: its producer's number and a sequence number 1..N;
--trace names it A1, A2 ... for the first producer, B1 ... for the second
(P27-1 ... past Z). Consumers mark each item in a shared table, so a
duplicate or a missing item is counted, not guessed. The queue is FIFO:
one producer's items come out in the order it put them (a consumer that
sees them otherwise makes the result WRONG), while the items of several
producers interleave in whatever order the puts happened: the lesson's
random-looking output, which --jitter (a random sleep before each put,
Python's time.sleep(random.random())) makes plain. The producers start
together, released by one semaphore once all are forked.
How the consumers stop: --stop sentinel (the default) puts one empty
message per consumer once the producers are done; --stop terminate
waits until every item has been taken and counted, then calls
terminate() on each consumer, blocked in get() (SIGTERM, exitcode -15),
as the lesson's pr.terminate() does. --quiet keeps only the result lines.

Named queues: a NAME is /name (one leading slash, no other, 1-251 bytes
after it, no control character) and lives in /dev/shm/name, mode 0600,
until `unlink` (which removes a queue, or an empty file: what is left of
a queue truncated to nothing; never a file that holds anything else);
any number of producers and consumers, each its own process, may use it
at once. Every message is delivered at most once and, unless its consumer is
killed holding it, exactly once; messages from one producer come out in
the order it put them. A producer or consumer killed at any instant
(SIGKILL, the OOM killer) loses no other process's message and leaves
nothing locked: a lock names its holder (pid and start time), a waiter
takes over the lock of one that died (within 20ms), and the queue's state
is two counters, each moved by one atomic store.
`get` is at-most-once: a message is the consumer's once it is taken; a
`get` killed after taking it and before printing it has lost it, one
killed before taking it has taken nothing. Before each take, `get` looks
at its stdout: closed (`>&-`) or a pipe or socket whose reader has gone
(`| head -1` after head exits), it takes nothing more.
Output: `get` prints each message followed by a newline (with -0, a NUL);
`stat` prints `name=<NAME> capacity=<K> max_size=<B> qsize=<Q>`; create,
put and unlink print nothing. A full queue (put) or an empty one (get)
that stays so past --timeout ends the command with exit 1 and prints
nothing (one line on stderr with -v), as `flock -n` does; so does a lock
that another process (a stopped one) holds past --timeout and at least
1s, with one line on stderr that says so; `stat` waits 1s for such a lock,
then ends the same way. A `put` that stops on a full queue says with -v
how many it put (`(2 of 5 put)`); reading stdin from a regular file, it
leaves the file just after the last message put, so the rest can be put
later: `(pk-queue put /jobs --lines --timeout 0; cat) < list` prints
what was not put.

Exit status: 0 when done (a demo ran and every item arrived exactly once);
1 when the queue stayed full (put) or empty (get) past --timeout; 2 for a
bad flag, or create's flags differing from an existing queue's with
--exist-ok; 65 when a message is larger than the queue's --max-size (the
messages before it were put), a demo item was lost, duplicated or damaged,
or the file is not a queue (or one whose counters do not add up, a get
that finds a message longer than the limit, or of an older format:
unlink it and create it again); 66 when the queue does not exist; 71 when a
system call fails (EEXIST: the name is taken), or a demo child fails; 77
when the queue belongs to another user or others may write it; 141 when
stdout closed early (the messages not yet taken stay in the queue). A
message taken and then not written (71 for /dev/full, or a reader gone
between the look and the write) is lost: at-most-once.

Examples:
  pk-queue basics
  pk-queue demo --producers 4 --consumers 2 --items 10000 --capacity 64 -q
  pk-queue demo -p 2 -c 1 -n 3 --trace --jitter 100ms --stop terminate   # the lesson
  pk-queue create /jobs --capacity 100
  pk-queue put /jobs 'build a' 'build b'
  ls *.c | pk-queue put /jobs --lines
  while msg=$(pk-queue get /jobs --timeout 0); do echo \"got $msg\"; done
  pk-queue stat /jobs
  pk-queue unlink /jobs";

/// A bounded queue of messages between processes, in shared memory.
#[derive(Debug, Parser)]
#[command(name = "pk-queue", version, after_help = AFTER_HELP)]
pub struct Args {
    #[command(subcommand)]
    pub cmd: Cmd,

    /// Print only the result lines (`demo`'s; the other commands print only
    /// results anyway). Before or after the command's name.
    #[arg(short, long, global = true)]
    pub quiet: bool,
}

/// What to show.
#[derive(Debug, Subcommand)]
pub enum Cmd {
    /// put/get, full/empty/qsize, try_put, a timeout, and a child that exits
    /// right after put.
    Basics,
    /// P producer processes put N items each; C consumer processes get them.
    Demo(Demo),
    /// Create the named queue NAME (mode 0600).
    Create(Create),
    /// Put messages into NAME: each MSG, or from stdin (-, --lines, -0).
    Put(Put),
    /// Take messages out of NAME and print them, one per line.
    Get(Get),
    /// Print NAME's capacity, message limit and current size.
    Stat {
        /// The queue: /name.
        #[arg(value_name = "NAME", value_parser = name)]
        name: String,
    },
    /// Remove the named queue NAME (processes using it keep it).
    Unlink {
        /// The queue: /name.
        #[arg(value_name = "NAME", value_parser = name)]
        name: String,
    },
}

fn name(s: &str) -> std::result::Result<String, String> {
    crate::shm::check_name(s).map(|_| s.to_string())
}

/// `pk-queue create` arguments.
#[derive(Debug, ClapArgs)]
pub struct Create {
    /// The queue: /name.
    #[arg(value_name = "NAME", value_parser = name)]
    pub name: String,
    /// How many messages it holds (1-16777216). The ring has K rounded up
    /// to a power of two slots of max-size + 4 bytes, at most 1 GiB.
    #[arg(short = 'k', long, value_name = "K", default_value_t = 256,
          value_parser = clap::value_parser!(u32).range(1..=queue::MAX_CAPACITY as i64))]
    pub capacity: u32,
    /// The largest message, in bytes (0-1048576).
    #[arg(long, value_name = "B", default_value_t = 4096,
          value_parser = clap::value_parser!(u32).range(0..=queue::MAX_MESSAGE_SIZE as i64))]
    pub max_size: u32,
    /// Succeed if NAME is already a queue with this capacity and message limit.
    #[arg(long)]
    pub exist_ok: bool,
}

/// `pk-queue put` arguments.
#[derive(Debug, ClapArgs)]
pub struct Put {
    /// The queue: /name.
    #[arg(value_name = "NAME", value_parser = name)]
    pub name: String,
    /// The messages, one each; `-` reads one message, all of stdin.
    #[arg(value_name = "MSG", required_unless_present_any = ["lines", "null"],
          conflicts_with_all = ["lines", "null"])]
    pub messages: Vec<OsString>,
    /// Each line of stdin is a message (without its newline).
    #[arg(long, conflicts_with = "null")]
    pub lines: bool,
    /// Stdin holds messages separated by NUL bytes.
    #[arg(short = '0', long = "null")]
    pub null: bool,
    /// Give up when the queue stays full this long for one message (each
    /// message waits anew; 0: do not wait; 2, 1.5s, 250ms, 1m, 1h, 2d, any
    /// length).
    #[arg(long, value_name = "DUR", value_parser = duration::unbounded)]
    pub timeout: Option<DurationArg>,
    /// Say on stderr why nothing more was put (a full queue), and how
    /// many were.
    #[arg(short, long)]
    pub verbose: bool,
}

/// `pk-queue get` arguments.
#[derive(Debug, ClapArgs)]
pub struct Get {
    /// The queue: /name.
    #[arg(value_name = "NAME", value_parser = name)]
    pub name: String,
    /// How many messages to take (1-1000000000).
    #[arg(short = 'n', long, value_name = "N", default_value_t = 1,
          value_parser = clap::value_parser!(u64).range(1..=1_000_000_000))]
    pub count: u64,
    /// Give up when the queue stays empty this long (0: do not wait; 2,
    /// 1.5s, 250ms, 1m, 1h, 2d, any length); one deadline for all N
    /// messages.
    #[arg(long, value_name = "DUR", value_parser = duration::unbounded)]
    pub timeout: Option<DurationArg>,
    /// End each message with a NUL byte instead of a newline.
    #[arg(short = '0', long = "null")]
    pub null: bool,
    /// Say on stderr why fewer than N messages came (an empty queue).
    #[arg(short, long)]
    pub verbose: bool,
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
    /// A line for every put and every get (Python's `Put A to queue...`,
    /// `Get A from queue.`).
    #[arg(short, long)]
    pub trace: bool,
    /// Before each put, sleep a random time up to DUR (0-10s), as the
    /// lesson's time.sleep(random.random()).
    #[arg(short, long, value_name = "DUR", value_parser = jitter)]
    pub jitter: Option<DurationArg>,
    /// How the consumers end: an empty message each (sentinel), or
    /// terminate() once every item is taken (terminate).
    #[arg(long, value_enum, default_value = "sentinel")]
    pub stop: Stop,
}

/// How `demo` ends its consumers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Stop {
    /// One empty message per consumer, once the producers are done.
    Sentinel,
    /// terminate() (SIGTERM) once every item has been taken.
    Terminate,
}

fn jitter(s: &str) -> std::result::Result<DurationArg, String> {
    let d: DurationArg = s.parse()?;
    if d.0 > Duration::from_secs(10) {
        return Err(format!("{s} is more than 10s"));
    }
    Ok(d)
}

/// Run pk-queue.
pub fn run(args: Args, out: &mut Out) -> Result<u8> {
    out.set_quiet(args.quiet);
    match args.cmd {
        Cmd::Basics => basics(out),
        Cmd::Demo(d) => demo(d, out),
        Cmd::Create(c) => create(c),
        Cmd::Put(p) => put(p),
        Cmd::Get(g) => get(g, out),
        Cmd::Stat { name } => {
            let q = Queue::open(&name)?;
            outln!(
                out,
                "name={name} capacity={} max_size={} qsize={}",
                q.capacity(),
                q.max_message(),
                // A stopped lock holder ends stat after the lock grace,
                // as it ends a put with --timeout 0.
                q.qsize_until(crate::sem::Deadline::Now)?
            )?;
            Ok(exit::OK)
        }
        Cmd::Unlink { name } => {
            queue::unlink(&name)?;
            Ok(exit::OK)
        }
    }
}

fn create(c: Create) -> Result<u8> {
    let (k, b) = (c.capacity as usize, c.max_size as usize);
    if !c.exist_ok {
        Queue::create(&c.name, k, b)?;
        return Ok(exit::OK);
    }
    // An unlink between finding the name taken and opening it is not
    // "not found": open_or_create tries again.
    match Queue::open_or_create(&c.name, k, b) {
        Ok((_, true)) => Ok(exit::OK),
        Ok((q, false)) => {
            if (q.capacity(), q.max_message()) != (k, b) {
                return Err(Error::invalid(
                    "--exist-ok",
                    format!(
                        "{} exists with capacity {} and max size {}, not {k} and {b}",
                        c.name,
                        q.capacity(),
                        q.max_message()
                    ),
                )
                .into());
            }
            Ok(exit::OK)
        }
        Err(e) => Err(e.into()),
    }
}

/// Put one message before `deadline`: `false` when the queue stayed full.
fn put_one(q: &Queue, msg: &[u8], deadline: Deadline, name: &str) -> Result<bool> {
    if msg.len() > q.max_message() {
        return Err(Error::data(
            "put",
            name,
            format!(
                "a message of {} bytes is larger than the queue's limit of {}",
                msg.len(),
                q.max_message()
            ),
        )
        .into());
    }
    Ok(q.put_until(msg, deadline)?)
}

/// Read stdin up to `delim` (or all of it), at most `max` bytes; `None` at
/// end of input. A longer message is an error before it is put. With the
/// message, how many bytes of stdin it took (its delimiter included).
fn next_message(
    input: &mut impl BufRead,
    delim: Option<u8>,
    max: usize,
    name: &str,
) -> Result<Option<(Vec<u8>, u64)>> {
    let mut msg = Vec::new();
    let mut limited = input.take(max as u64 + 1);
    let n = match delim {
        Some(d) => limited.read_until(d, &mut msg),
        None => limited.read_to_end(&mut msg),
    }
    .ctx("read", "stdin")?;
    if n == 0 && delim.is_some() {
        return Ok(None);
    }
    if let Some(d) = delim {
        if msg.last() == Some(&d) {
            msg.pop();
            return Ok(Some((msg, n as u64)));
        }
    }
    if msg.len() > max {
        return Err(Error::data(
            "put",
            name,
            format!("a message of more than {max} bytes is larger than the queue's limit"),
        )
        .into());
    }
    Ok(Some((msg, n as u64)))
}

/// Where stdin stands now when it is a regular file, which can be put
/// back there (`None` for a pipe, a terminal...).
fn stdin_offset() -> Option<i64> {
    use nix::sys::stat::{SFlag, fstat};
    let stdin = std::io::stdin();
    let st = fstat(&stdin).ok()?;
    if SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT != SFlag::S_IFREG {
        return None;
    }
    nix::unistd::lseek(&stdin, 0, nix::unistd::Whence::SeekCur).ok()
}

fn put(p: Put) -> Result<u8> {
    let q = Queue::open(&p.name)?;
    // Each message waits up to --timeout for room, counted from when it is
    // ready to go: a stream (`tail -f log | pk-queue put --lines`) may run
    // for hours, and only a queue that stays full that long ends it.
    let deadline = || Deadline::after(p.timeout.map(|t| t.0));
    // The queue stayed full: say how many went in (of how many, when
    // they were given as arguments).
    let full = |put: usize, of: Option<usize>| {
        if p.verbose {
            let of = of.map(|n| format!(" of {n}")).unwrap_or_default();
            crate::cmd::eprintln_one(
                "pk-queue",
                &format_args!("put({}): the queue is full ({put}{of} put)", p.name),
            );
        }
        Ok(exit::DECLINED)
    };
    let delim = if p.lines {
        Some(b'\n')
    } else if p.null {
        Some(0)
    } else {
        None
    };
    if delim.is_some() || p.messages.iter().any(|m| m == "-") {
        if p.messages.len() > 1 {
            return Err(Error::invalid("MSG", "`-` reads stdin and comes alone").into());
        }
        let stdin = crate::cmd::stdin_for_input()?;
        let start = stdin_offset();
        let mut input = stdin.lock();
        let (mut put, mut used) = (0, 0);
        while let Some((msg, took)) = next_message(&mut input, delim, q.max_message(), &p.name)? {
            if !put_one(&q, &msg, deadline()?, &p.name)? {
                // A regular file is left just after the last message put,
                // for the caller to go on from (the read ran ahead).
                if let Some(start) = start {
                    nix::unistd::lseek(
                        std::io::stdin(),
                        start + used,
                        nix::unistd::Whence::SeekSet,
                    )
                    .ctx("lseek", "stdin")?;
                }
                return full(put, None);
            }
            put += 1;
            used += took as i64;
            if delim.is_none() {
                break;
            }
        }
        return Ok(exit::OK);
    }
    for (put, m) in p.messages.iter().enumerate() {
        if !put_one(&q, m.as_bytes(), deadline()?, &p.name)? {
            return full(put, Some(p.messages.len()));
        }
    }
    Ok(exit::OK)
}

fn get(g: Get, out: &mut Out) -> Result<u8> {
    let q = Queue::open(&g.name)?;
    let deadline = Deadline::after(g.timeout.map(|t| t.0))?;
    let end = if g.null { 0 } else { b'\n' };
    let mut buf = Vec::with_capacity(q.max_message() + 1);
    for got in 0..g.count {
        // Nothing is taken for a stdout that cannot be written (closed,
        // its reader gone), looked at just before each take: the message
        // stays for another consumer.
        if !q.get_into_until_ready(&mut buf, deadline, crate::cmd::stdout_writable)? {
            if g.verbose {
                crate::cmd::eprintln_one(
                    "pk-queue",
                    &format_args!(
                        "get({}): the queue is empty ({got} of {} taken)",
                        g.name, g.count
                    ),
                );
            }
            return Ok(exit::DECLINED);
        }
        // Ours now (at-most-once): print it in one write.
        buf.push(end);
        out.bytes(&buf)?;
    }
    Ok(exit::OK)
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
/// Items a consumer saw before an earlier item of the same producer.
const OUT_OF_ORDER: usize = 2;
/// Consecutive gets (by one consumer) from two different producers.
const SWITCHES: usize = 3;
/// Items taken and counted, by all consumers.
const CONSUMED: usize = 4;

/// The demo's shared state, set up before the fork.
struct Shared {
    q: Queue,
    /// One mark per item: consumers count arrivals; 1 is right, 0
    /// missing, more is a duplicate.
    seen: SharedArray<u8>,
    stats: SharedArray<u64>,
    /// Per consumer: items got, sum of their sequence numbers.
    per: SharedArray<u64>,
    /// Posted once, when the last item has been counted.
    done: Semaphore,
    /// Producers wait here until all are forked.
    gate: Semaphore,
}

/// An item's name in --trace lines: A1 for the first producer's first.
fn label(producer: u64, seq: u64) -> String {
    match u8::try_from(producer) {
        Ok(p) if p < 26 => format!("{}{seq}", char::from(b'A' + p)),
        _ => format!("P{}-{seq}", producer + 1),
    }
}

fn demo(d: Demo, out: &mut Out) -> Result<u8> {
    let (p, c, n) = (d.producers as u64, d.consumers as usize, d.items);
    let total = p * n;
    if total > 50_000_000 {
        return Err(Error::invalid(
            "--items",
            format!("{p} producers x {n} items is more than 50000000"),
        )
        .into());
    }
    let sh = Shared {
        q: Queue::new(d.capacity as usize, 16)?,
        seen: SharedArray::<u8>::new(total as usize)?,
        stats: SharedArray::<u64>::new(5)?,
        per: SharedArray::<u64>::new(2 * c)?,
        done: Semaphore::new(0)?,
        gate: Semaphore::new(0)?,
    };
    let jitter = d.jitter.map(|j| j.0).filter(|j| !j.is_zero());
    note!(
        out,
        "parent {}: {p} producer{} x {n} items -> {c} consumer{}, capacity {}",
        process::getpid(),
        if p == 1 { "" } else { "s" },
        if c == 1 { "" } else { "s" },
        d.capacity
    )?;
    let start = Instant::now();
    // The consumers are Processes, as the lesson's reader is; they wait
    // for items from us, so an error path here kills them (kill_on_drop).
    let mut consumers = Vec::with_capacity(c);
    for i in 0..c {
        let me = Builder::new()
            .name(format!("consumer {}", i + 1))
            .kill_on_drop(true);
        consumers.push(me.start(|| match consume(i, &sh, p, n, d.trace, out) {
            Ok(()) => 0,
            Err(_) => i32::from(exit::OS_ERR),
        })?);
    }
    // Every producer's branch ends with _exit (child_exit).
    let mut producers = Children::new();
    for i in 0..p {
        producers.start("producer", || {
            child_exit(produce(i, &sh, n, d.trace, jitter, out))
        })?;
    }
    for _ in 0..p {
        sh.gate.post()?;
    }
    let mut failed = producers.wait_all()?;
    match d.stop {
        Stop::Sentinel => {
            // Every item is in the queue or taken: one empty message per
            // consumer tells it to stop.
            for _ in 0..c {
                sh.q.put(b"")?;
            }
            for consumer in &mut consumers {
                let status = consumer.join(None)?.unwrap_or(Status::Exited(0));
                if !status.success() && failed.is_none() {
                    failed = Some((consumer.pid(), status));
                }
            }
        }
        Stop::Terminate => {
            // Wait until every item has been taken and counted (or every
            // consumer has died), then end the readers blocked in get().
            while !sh.done.wait_timeout(Duration::from_millis(100))? {
                let mut alive = false;
                for consumer in &mut consumers {
                    alive |= consumer.is_alive()?;
                }
                if !alive {
                    break;
                }
            }
            for consumer in &consumers {
                consumer.terminate()?;
            }
            for (i, consumer) in consumers.iter_mut().enumerate() {
                let status = consumer.join(None)?.unwrap_or(Status::Exited(0));
                note!(
                    out,
                    "consumer {} got {} items, sum={}; terminate() -> exitcode={}",
                    consumer.pid(),
                    sh.per.get(2 * i),
                    sh.per.get(2 * i + 1),
                    status.exitcode()
                )?;
                if status.signal() != Some(libc::SIGTERM) && failed.is_none() {
                    failed = Some((consumer.pid(), status));
                }
            }
        }
    }
    let elapsed = start.elapsed();
    crate::cmd::fail_on_child(failed, "child")?;
    let got: u64 = (0..c).map(|i| sh.per.get(2 * i)).sum();
    let sum: u64 = (0..c).map(|i| sh.per.get(2 * i + 1)).sum();
    let missing = (0..sh.seen.len()).filter(|&i| sh.seen.get(i) == 0).count();
    let duplicates = sh.stats.get(DUPLICATES);
    let damaged = sh.stats.get(DAMAGED);
    let out_of_order = sh.stats.get(OUT_OF_ORDER);
    let expected = p * (n * (n + 1) / 2);
    if out_of_order == 0 {
        let switches = sh.stats.get(SWITCHES);
        note!(
            out,
            "order: each producer's items in the order it put them, {switches} switch{} between producers",
            if switches == 1 { "" } else { "es" }
        )?;
    } else {
        note!(
            out,
            "order: {out_of_order} items came before an earlier one of their producer (NOT FIFO)"
        )?;
    }
    outln!(
        out,
        "put={total} got={got} duplicates={duplicates} missing={missing}{}",
        if damaged > 0 {
            format!(" damaged={damaged}")
        } else {
            String::new()
        }
    )?;
    let ok = sum == expected
        && got == total
        && duplicates == 0
        && missing == 0
        && damaged == 0
        && out_of_order == 0;
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

fn produce(
    i: u64,
    sh: &Shared,
    n: u64,
    trace: bool,
    jitter: Option<Duration>,
    out: &mut Out,
) -> Result<()> {
    sh.gate.wait()?;
    let mut rng = match jitter {
        Some(_) => Some(crate::coro::Jitter::from_os()?),
        None => None,
    };
    let mut msg = [0u8; 16];
    msg[..8].copy_from_slice(&i.to_le_bytes());
    let me = process::getpid();
    for seq in 1..=n {
        if let (Some(rng), Some(max)) = (rng.as_mut(), jitter) {
            std::thread::sleep(rng.upto(max));
        }
        msg[8..].copy_from_slice(&seq.to_le_bytes());
        // Said before the put, as the lesson's `Put A to queue...`: a get
        // line never comes before the put line of its item.
        if trace {
            let _ = note!(out, "producer {me}: put {}", label(i, seq));
        }
        sh.q.put(&msg)?;
    }
    // The last put is in shared memory already: exiting now loses nothing.
    let _ = note!(out, "producer {me} put {n} items");
    Ok(())
}

fn consume(i: usize, sh: &Shared, p: u64, n: u64, trace: bool, out: &mut Out) -> Result<()> {
    let total = p * n;
    let (mut got, mut sum) = (0u64, 0u64);
    // The last sequence number seen from each producer, and the producer
    // of the previous item.
    let mut last = vec![0u64; p as usize];
    let mut previous = None;
    let mut buf = Vec::with_capacity(16);
    let me = process::getpid();
    loop {
        sh.q.get_into(&mut buf)?;
        if buf.is_empty() {
            break;
        }
        let word = |r: std::ops::Range<usize>| {
            buf.get(r)
                .and_then(|b| <[u8; 8]>::try_from(b).ok())
                .map(u64::from_le_bytes)
        };
        let (Some(producer), Some(seq)) = (word(0..8), word(8..16)) else {
            sh.stats.atomic(DAMAGED).fetch_add(1, Ordering::Relaxed);
            continue;
        };
        let index = producer
            .checked_mul(n)
            .and_then(|b| b.checked_add(seq.wrapping_sub(1)))
            .filter(|&x| buf.len() == 16 && (1..=n).contains(&seq) && (x as usize) < sh.seen.len());
        let Some(index) = index else {
            sh.stats.atomic(DAMAGED).fetch_add(1, Ordering::Relaxed);
            continue;
        };
        if trace {
            let _ = note!(out, "consumer {me}: got {}", label(producer, seq));
        }
        if sh
            .seen
            .atomic(index as usize)
            .fetch_add(1, Ordering::Relaxed)
            != 0
        {
            sh.stats.atomic(DUPLICATES).fetch_add(1, Ordering::Relaxed);
        }
        let from = &mut last[producer as usize];
        if seq < *from {
            sh.stats
                .atomic(OUT_OF_ORDER)
                .fetch_add(1, Ordering::Relaxed);
        }
        *from = seq;
        if previous.is_some_and(|q| q != producer) {
            sh.stats.atomic(SWITCHES).fetch_add(1, Ordering::Relaxed);
        }
        previous = Some(producer);
        got += 1;
        sum += seq;
        // Kept current, so the parent can report a consumer it terminated.
        sh.per.set(2 * i, got);
        sh.per.set(2 * i + 1, sum);
        if sh.stats.atomic(CONSUMED).fetch_add(1, Ordering::Relaxed) + 1 == total {
            sh.done.post()?;
        }
    }
    let _ = note!(out, "consumer {me} got {got} items, sum={sum}");
    Ok(())
}
