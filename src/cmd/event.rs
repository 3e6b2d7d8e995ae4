//! `pk-event`: the threading.Event lesson. A waiting thread blocks until a
//! second thread has stored the password and set the event; with
//! `--timeout` it gives up after a while. Then the other ways threads wait
//! for each other: a Condition between a producer and its consumers, and a
//! Barrier.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use clap::{Parser, Subcommand};

use crate::cmd::Out;
use crate::cmd::Result;
use crate::cmd::duration::DurationArg;
use crate::cmd::exit;
use crate::error::Error;
use crate::thread::{self, Barrier, Condition, Event};
use crate::{note, outln};

const AFTER_HELP: &str = "\
Output (always in this order):
  thread Waiter: waiting for the password...            (then Event.wait)
  thread Setter: password stored, event set              (after --delay)
  thread Waiter: got the password '<PASSWORD>'            (only after the set)
When the wait times out (--timeout shorter than --delay, or --no-set):
  thread Waiter: timed out after <DURATION>, no password
  thread Setter: password stored, event set              (late; not with --no-set)
The setter starts its --delay only once the waiter is waiting, so the
waiter always prints `waiting` first.

Output of `condition` (threading.Condition: a producer and consumers):
  producer: put item <k>, notify(1)        (under the condition's lock)
  consumer Thread-<i>: got item <k>        (after `put item <k>`; each item once)
  producer: put None for each of <C> consumers, notify_all()
  consumer Thread-<i>: got None, stops after <n> items
  consumed=<N> items by <C> consumers
A consumer waits with wait_for(lambda: items) and prints under the lock,
so no `got` line comes before its `put` line.

Output of `barrier` (threading.Barrier(parties); thread i arrives after
i x --stagger):
  thread Thread-<i>: arrived, <k> of <N> at the barrier
  thread Thread-<i>: passed, wait() returned <place>
Every `arrived` line comes before every `passed` line: no thread passes
until all have arrived. With --missing one party never comes, and the
waits time out (--timeout):
  thread Thread-<i>: wait(timeout=<T>) failed: ... the barrier is broken
  barrier broken: <N-1> of <N> parties came                      (exit 1)

--quiet (-q, before or after the demo's name) prints only the result
lines: `got the password` or `timed out` (the handshake), `consumed=`
(condition), and each `passed` or `failed` line and `barrier broken`
(barrier); the `waiting`, `stored`, `put`, `got item`, `got None` and
`arrived` lines go.

Exit status: 0 when the waiter got the password (or the demo ran); 1 when
a wait timed out; 2 for a bad flag; 71 when a thread cannot be started.

Examples:
  pk-event --delay 1s
  pk-event --timeout 200ms --no-set; echo $?     # 1
  pk-event condition --consumers 2 --items 6
  pk-event barrier --parties 3 --stagger 100ms
  pk-event barrier --parties 3 --missing --timeout 300ms; echo $?   # 1";

/// Two threads hand over a password with an Event: Python's threading.Event;
/// then threading.Condition and threading.Barrier.
#[derive(Debug, Parser)]
#[command(name = "pk-event", version, after_help = AFTER_HELP)]
pub struct Args {
    /// Another demo than the Event handshake (the default).
    #[command(subcommand)]
    pub demo: Option<Demo>,

    #[command(flatten)]
    pub handshake: HandshakeArgs,

    /// Print only the result lines (see below). Before or after the demo's name.
    #[arg(short, long, global = true)]
    pub quiet: bool,
}

/// The demos besides the handshake.
#[derive(Debug, Subcommand)]
pub enum Demo {
    /// A producer and consumers share a list through a threading.Condition.
    Condition(ConditionArgs),
    /// Threads arriving at different times wait for each other at a
    /// threading.Barrier.
    Barrier(BarrierArgs),
}

/// `pk-event condition`.
#[derive(Debug, clap::Args)]
pub struct ConditionArgs {
    /// Consumer threads (1-64).
    #[arg(short = 'c', long, value_name = "N", default_value_t = 2,
          value_parser = clap::value_parser!(u32).range(1..=64))]
    pub consumers: u32,

    /// Items the producer puts (1-100000).
    #[arg(short = 'n', long, value_name = "N", default_value_t = 6,
          value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub items: u32,

    /// The producer's pause between items (at most 10s).
    #[arg(long, value_name = "DURATION", default_value = "10ms")]
    pub interval: DurationArg,
}

/// `pk-event barrier`.
#[derive(Debug, clap::Args)]
pub struct BarrierArgs {
    /// Threads the barrier waits for (1-64).
    #[arg(short = 'n', long, value_name = "N", default_value_t = 3,
          value_parser = clap::value_parser!(u32).range(1..=64))]
    pub parties: u32,

    /// Thread i arrives after i times this (at most 10s).
    #[arg(long, value_name = "DURATION", default_value = "100ms")]
    pub stagger: DurationArg,

    /// Start one thread fewer than --parties: the waits time out and the
    /// barrier breaks. Needs --timeout.
    #[arg(long)]
    pub missing: bool,

    /// Each thread waits at most this long: wait(timeout) (default: for ever).
    #[arg(short = 't', long, value_name = "DURATION")]
    pub timeout: Option<DurationArg>,
}

/// The Event handshake's flags.
#[derive(Debug, clap::Args)]
pub struct HandshakeArgs {
    /// The waiter gives up after this long (default: it waits for ever).
    #[arg(short = 't', long, value_name = "DURATION")]
    pub timeout: Option<DurationArg>,

    /// How long the setter takes before it stores the password and sets
    /// the event (default: 0).
    #[arg(short = 'd', long, value_name = "DURATION")]
    pub delay: Option<DurationArg>,

    /// Start no setter: the event is never set, so the wait times out.
    /// Needs --timeout.
    #[arg(long)]
    pub no_set: bool,

    /// The password the setter hands over (1-256 characters, no control
    /// characters; default: hunter2).
    #[arg(short, long, value_name = "TEXT", value_parser = password)]
    pub password: Option<String>,
}

impl HandshakeArgs {
    /// The first handshake flag given, if any: the other demos take none
    /// (a global --quiet rules out clap's args_conflicts_with_subcommands,
    /// so the check is here).
    fn given(&self) -> Option<&'static str> {
        [
            (self.timeout.is_some(), "--timeout"),
            (self.delay.is_some(), "--delay"),
            (self.no_set, "--no-set"),
            (self.password.is_some(), "--password"),
        ]
        .into_iter()
        .find_map(|(given, flag)| given.then_some(flag))
    }
}

fn password(s: &str) -> std::result::Result<String, String> {
    if s.is_empty() || s.chars().count() > 256 || s.chars().any(char::is_control) {
        return Err("a password has 1 to 256 characters, none of them control characters".into());
    }
    Ok(s.to_string())
}

/// Run the event lesson.
pub fn run(args: Args, out: &mut Out) -> Result<u8> {
    out.set_quiet(args.quiet);
    let demo = match &args.demo {
        None => None,
        Some(Demo::Condition(_)) => Some("condition"),
        Some(Demo::Barrier(_)) => Some("barrier"),
    };
    if let (Some(demo), Some(flag)) = (demo, args.handshake.given()) {
        return Err(Error::invalid(
            flag,
            format!("is the Event handshake's; `{demo}` does not take it"),
        )
        .into());
    }
    match args.demo {
        None => handshake(args.handshake, out),
        Some(Demo::Condition(a)) => condition(a, out),
        Some(Demo::Barrier(a)) => barrier(a, out),
    }
}

fn handshake(args: HandshakeArgs, out: &Out) -> Result<u8> {
    if args.no_set && args.timeout.is_none() {
        return Err(Error::invalid(
            "--no-set",
            "needs --timeout, or the waiter would wait for ever",
        )
        .into());
    }
    let event = Arc::new(Event::new());
    let waiting = Arc::new(Event::new());
    let secret: Arc<Mutex<Option<String>>> = Arc::new(Mutex::new(None));

    let waiter = {
        let (event, waiting, secret) = (
            Arc::clone(&event),
            Arc::clone(&waiting),
            Arc::clone(&secret),
        );
        let timeout = args.timeout;
        let mut out = out.like();
        thread::spawn("Waiter", move || -> Result<bool> {
            let me = thread::current_name();
            // Set `waiting` even when the line cannot be written (stdout
            // closed), or the setter would wait for it for ever.
            let said = note!(out, "thread {me}: waiting for the password...");
            waiting.set();
            said?;
            let set = match timeout {
                Some(t) => event.wait_timeout(t.0),
                None => {
                    event.wait();
                    true
                }
            };
            if !set {
                let t = timeout.unwrap_or_default();
                outln!(out, "thread {me}: timed out after {t}, no password")?;
                return Ok(false);
            }
            let pw = secret
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone();
            outln!(
                out,
                "thread {me}: got the password '{}'",
                pw.unwrap_or_default()
            )?;
            Ok(true)
        })?
    };

    let setter = if args.no_set {
        None
    } else {
        let (ev, waiting, secret) = (
            Arc::clone(&event),
            Arc::clone(&waiting),
            Arc::clone(&secret),
        );
        let delay = args.delay.unwrap_or_default();
        let pw = args.password.unwrap_or_else(|| "hunter2".into());
        let mut out = out.like();
        let started = thread::spawn("Setter", move || -> Result<()> {
            let me = thread::current_name();
            waiting.wait();
            std::thread::sleep(delay.0);
            *secret.lock().unwrap_or_else(PoisonError::into_inner) = Some(pw);
            // The line comes before set(): the waiter cannot print first.
            let said = note!(out, "thread {me}: password stored, event set");
            // Set the event whatever happened to the line, or the waiter
            // would wait for ever.
            ev.set();
            said
        });
        match started {
            Ok(t) => Some(t),
            Err(e) => {
                // Release the waiter so that joining it cannot hang.
                event.set();
                return Err(e.into());
            }
        }
    };

    let got = waiter.join()??;
    if let Some(setter) = setter {
        setter.join()??;
    }
    Ok(if got { exit::OK } else { exit::DECLINED })
}

/// A duration flag of at most 10s.
fn at_most_10s(flag: &'static str, d: DurationArg) -> Result<Duration> {
    if d.0 > Duration::from_secs(10) {
        return Err(Error::invalid(flag, "must be at most 10s").into());
    }
    Ok(d.0)
}

/// `pk-event condition`: the producer puts items 1..=N into a list guarded
/// by a Condition and notifies one consumer per item; then one `None` per
/// consumer, and notify_all.
fn condition(args: ConditionArgs, out: &mut Out) -> Result<u8> {
    let interval = at_most_10s("--interval", args.interval)?;
    let items: Arc<Condition<VecDeque<Option<u32>>>> = Arc::new(Condition::new(VecDeque::new()));
    let mut consumers = Vec::new();
    // However main leaves, every consumer gets its None and ends.
    let stop = StopConsumers {
        items: Arc::clone(&items),
        consumers: args.consumers,
    };
    for _ in 0..args.consumers {
        let items = Arc::clone(&items);
        let mut out = out.like();
        consumers.push(thread::Builder::new().spawn(move || -> Result<u32> {
            let me = thread::current_name();
            let mut got = 0;
            loop {
                let mut q = items.lock();
                q.wait_for(|q| !q.is_empty()); // cond.wait_for(lambda: items)
                match q.pop_front().flatten() {
                    Some(k) => {
                        got += 1;
                        note!(out, "consumer {me}: got item {k}")?;
                    }
                    None => {
                        note!(out, "consumer {me}: got None, stops after {got} items")?;
                        return Ok(got);
                    }
                }
            }
        })?);
    }
    for k in 1..=args.items {
        {
            let mut q = items.lock();
            q.push_back(Some(k));
            note!(out, "producer: put item {k}, notify(1)")?;
            q.notify(1);
        }
        std::thread::sleep(interval);
    }
    {
        let _q = items.lock();
        note!(
            out,
            "producer: put None for each of {} consumers, notify_all()",
            args.consumers
        )?;
    }
    drop(stop);
    let mut total = 0;
    for c in consumers {
        total += c.join()??;
    }
    outln!(
        out,
        "consumed={total} items by {} consumers",
        args.consumers
    )?;
    Ok(exit::OK)
}

/// Puts one `None` per consumer and wakes them all when dropped.
struct StopConsumers {
    items: Arc<Condition<VecDeque<Option<u32>>>>,
    consumers: u32,
}

impl Drop for StopConsumers {
    fn drop(&mut self) {
        let mut q = self.items.lock();
        for _ in 0..self.consumers {
            q.push_back(None);
        }
        q.notify_all();
    }
}

/// `pk-event barrier`: thread i (1-based) arrives after (i - 1) x stagger
/// and waits at a Barrier of `parties`.
fn barrier(args: BarrierArgs, out: &mut Out) -> Result<u8> {
    let stagger = at_most_10s("--stagger", args.stagger)?;
    if args.missing && args.timeout.is_none() {
        return Err(Error::invalid(
            "--missing",
            "needs --timeout, or the threads would wait for ever",
        )
        .into());
    }
    let parties = args.parties;
    let barrier = Arc::new(Barrier::new(parties as usize));
    let arrived = Arc::new(Mutex::new(0u32));
    let come = if args.missing { parties - 1 } else { parties };
    let mut threads = Vec::new();
    for i in 1..=come {
        let (b, arrived) = (Arc::clone(&barrier), Arc::clone(&arrived));
        let timeout = args.timeout;
        let mut out = out.like();
        let started = thread::spawn(format!("Thread-{i}"), move || -> Result<bool> {
            let me = thread::current_name();
            std::thread::sleep(stagger * (i - 1));
            {
                let mut n = arrived.lock().unwrap_or_else(PoisonError::into_inner);
                *n += 1;
                let said = note!(out, "thread {me}: arrived, {n} of {parties} at the barrier");
                if said.is_err() {
                    // Nobody waits for a thread that cannot go on.
                    b.abort();
                }
                said?;
            }
            let passed = match timeout {
                Some(t) => b.wait_timeout(t.0),
                None => b.wait(),
            };
            match passed {
                Ok(place) => {
                    outln!(out, "thread {me}: passed, wait() returned {place}")?;
                    Ok(true)
                }
                Err(e) => {
                    outln!(out, "thread {me}: {e}")?;
                    Ok(false)
                }
            }
        });
        match started {
            Ok(t) => threads.push(t),
            Err(e) => {
                barrier.abort();
                return Err(e.into());
            }
        }
    }
    let mut all = true;
    for t in threads {
        all &= t.join()??;
    }
    if all {
        return Ok(exit::OK);
    }
    outln!(out, "barrier broken: {come} of {parties} parties came")?;
    Ok(exit::DECLINED)
}
