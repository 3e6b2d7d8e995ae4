//! `pk-threads queue` (a thread `Queue` with `task_done` and `join`) and
//! `pk-threads timer` (`threading.Timer`, fired and cancelled).

use std::sync::Arc;
use std::time::Duration;

use crate::cmd::Out;
use crate::cmd::Result;
use crate::cmd::duration::DurationArg;
use crate::cmd::exit;
use crate::thread::{self, Builder, Queue, Timer};
use crate::{note, outln};

/// Run `pk-threads queue`: `workers` daemon threads take `items` items
/// from one queue; main waits in `q.join()` until every item is done.
pub fn run_queue(workers: u32, items: u32, work: DurationArg, out: &mut Out) -> Result<u8> {
    let q: Arc<Queue<u32>> = Arc::new(Queue::new(0));
    note!(
        out,
        "main: {workers} daemon worker threads, then q.put() of {items} items"
    )?;
    for _ in 0..workers {
        let q = Arc::clone(&q);
        let mut out = out.like();
        // Daemons, as in Python's documentation: they wait in get() for
        // ever, and the process ends without them once main returns.
        Builder::new().daemon(true).spawn(move || -> Result<()> {
            let me = thread::current_name();
            loop {
                let item = q.get();
                // A line that cannot be written (stdout closed) does not
                // stop the work: main's join waits for every item, and
                // main's own next line reports the closed stdout.
                let _ = note!(out, "worker {me}: working on item {item}");
                std::thread::sleep(work.0);
                let _ = note!(out, "worker {me}: finished item {item}");
                q.task_done()?;
            }
        })?;
    }
    for item in 1..=items {
        q.put(item);
    }
    q.join();
    outln!(
        out,
        "main: q.join() returned: all {items} items done, unfinished_tasks={}",
        q.unfinished()
    )?;
    match q.task_done() {
        Err(e) => outln!(
            out,
            "main: q.task_done() once more: {e} (Python: ValueError)"
        )?,
        Ok(()) => unreachable!("nothing was left unfinished"),
    }
    Ok(exit::OK)
}

/// The interval of the timer that is cancelled: far longer than any run.
const NEVER: Duration = Duration::from_secs(3600);

/// Run `pk-threads timer`: one Timer fires after `interval`; a second,
/// due in an hour, is cancelled at once and never runs its function.
pub fn run_timer(interval: DurationArg, out: &mut Out) -> Result<u8> {
    let hello = || {
        let mut out = Out::stdout();
        let _ = outln!(out, "thread {}: hello, world", thread::current_name());
    };
    let t = Timer::start(interval.0, hello)?;
    let name = t.name();
    let said = note!(out, "Timer({interval}, hello) started as {name}");
    if said.is_err() {
        t.cancel();
    }
    said?;
    let fired = t.join()?;
    outln!(
        out,
        "{name}: joined, function ran={}",
        super::py_bool(fired)
    )?;

    let t = Timer::start(NEVER, hello)?;
    t.cancel();
    let name = t.name();
    note!(out, "Timer(1h, hello) started as {name}; cancel() at once")?;
    let fired = t.join()?;
    outln!(
        out,
        "{name}: joined, function ran={}",
        super::py_bool(fired)
    )?;
    Ok(exit::OK)
}
