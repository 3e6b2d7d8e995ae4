//! `pk-lock deadlock` (two threads take two locks in opposite order; the
//! demo sees the deadlock through lock timeouts, and `--ordered` avoids
//! it), `pk-lock rlock` (a Lock taken twice by one thread, then an RLock)
//! and `pk-lock semaphore` (a BoundedSemaphore).

use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex, PoisonError};

use crate::cmd::Out;
use crate::cmd::Result;
use crate::cmd::duration::DurationArg;
use crate::cmd::exit;
use crate::thread::{self, Barrier, Lock, RLock, Semaphore};
use crate::{note, outln};

/// Run `pk-lock deadlock`. Thread-1 takes A then B. Thread-2 takes B then
/// A, or A then B with `ordered`. Without `ordered` both first take their
/// first lock and meet at a barrier, so that each holds one lock when it
/// asks for the other: the deadlock is certain, not a matter of timing.
/// Each then waits at most `timeout` and gives up; both keep their first
/// lock until both have given up, so neither can slip through when the
/// other lets go. Exit 1 when the deadlock was seen, 0 when every thread
/// got both locks.
pub fn deadlock(timeout: DurationArg, ordered: bool, out: &mut Out) -> Result<u8> {
    let a = Arc::new(Lock::new());
    let b = Arc::new(Lock::new());
    let met = Arc::new(Barrier::new(2));
    let tried = Arc::new(Barrier::new(2));
    note!(
        out,
        "Thread-1 takes lock A then lock B; Thread-2 takes {}",
        if ordered {
            "lock A then lock B (one order for all)"
        } else {
            "lock B then lock A (the opposite order)"
        }
    )?;
    let orders = [
        (("A", Arc::clone(&a)), ("B", Arc::clone(&b))),
        if ordered {
            (("A", Arc::clone(&a)), ("B", Arc::clone(&b)))
        } else {
            (("B", Arc::clone(&b)), ("A", Arc::clone(&a)))
        },
    ];
    let mut threads = Vec::new();
    for (i, ((first_name, first), (second_name, second))) in orders.into_iter().enumerate() {
        let (met_t, tried_t) = (Arc::clone(&met), Arc::clone(&tried));
        let mut out = out.like();
        let started = thread::spawn(format!("Thread-{}", i + 1), move || -> Result<bool> {
            let (met, tried) = (met_t, tried_t);
            let mut body = || -> Result<bool> {
                let me = thread::current_name();
                if ordered {
                    // Start together; whoever takes A first makes the other wait.
                    met.wait()?;
                }
                let held = first.acquire();
                note!(out, "thread {me}: took lock {first_name}")?;
                if !ordered {
                    // Both hold their first lock now.
                    met.wait()?;
                }
                note!(out, "thread {me}: waiting for lock {second_name}...")?;
                let got = if ordered {
                    Some(second.acquire())
                } else {
                    second.acquire_timeout(timeout.0)
                };
                let ok = got.is_some();
                if ok {
                    note!(out, "thread {me}: took lock {second_name}; releasing both")?;
                } else {
                    note!(
                        out,
                        "thread {me}: gave up on lock {second_name} after {timeout}: the other thread holds it, waiting for lock {first_name}, which this thread holds"
                    )?;
                    // Hold lock `first` until the other thread has given up too.
                    tried.wait()?;
                }
                drop(got);
                drop(held);
                Ok(ok)
            };
            let r = body();
            if r.is_err() {
                // Never leave the other thread waiting at a barrier.
                met.abort();
                tried.abort();
            }
            r
        });
        match started {
            Ok(t) => threads.push(t),
            Err(e) => {
                // Release a thread already waiting at a barrier.
                met.abort();
                tried.abort();
                return Err(e.into());
            }
        }
    }
    let mut all = true;
    for t in threads {
        all &= t.join()??;
    }
    if all {
        outln!(
            out,
            "no deadlock: every thread took both locks{}",
            if ordered { ", always A before B" } else { "" }
        )?;
        Ok(exit::OK)
    } else {
        outln!(
            out,
            "deadlock: each thread held one lock and waited for the other's; without a timeout both would wait for ever (take locks in one order: --ordered)"
        )?;
        Ok(exit::DECLINED)
    }
}

/// Run `pk-lock rlock`: a `Lock` taken again by the thread that holds it
/// waits for itself (seen here through a timeout), an `RLock` does not.
pub fn rlock(timeout: DurationArg, out: &mut Out) -> Result<u8> {
    let lock = Lock::new();
    let outer = lock.acquire();
    outln!(out, "Lock: outer acquire() -> held")?;
    match lock.acquire_timeout(timeout.0) {
        Some(_) => unreachable!("a Lock is not reentrant"),
        None => outln!(
            out,
            "Lock: inner acquire(timeout={timeout}) by the same thread -> timed out: a Lock is not reentrant; without a timeout the thread would wait for itself for ever"
        )?,
    }
    drop(outer);

    let rlock = Arc::new(RLock::new());
    let outer = rlock.acquire();
    outln!(
        out,
        "RLock: outer acquire() -> held, depth {}",
        outer.depth()
    )?;
    let inner = rlock.acquire();
    outln!(
        out,
        "RLock: inner acquire() by the same thread -> held, depth {}",
        inner.depth()
    )?;
    drop(inner);
    outln!(
        out,
        "RLock: inner released -> still held by this thread: {}",
        crate::cmd::threads::py_bool(rlock.is_owned())
    )?;
    let r = Arc::clone(&rlock);
    let blocked = thread::spawn("Other", move || r.acquire_timeout(timeout.0).is_none())?;
    let other_blocked = blocked.join()?;
    outln!(
        out,
        "RLock: another thread's acquire(timeout={timeout}) while it is held -> timed out: {}",
        crate::cmd::threads::py_bool(other_blocked)
    )?;
    drop(outer);
    let r = Arc::clone(&rlock);
    let free = thread::spawn("Other", move || r.acquire_timeout(timeout.0).is_some())?;
    outln!(
        out,
        "RLock: outer released -> another thread takes it: {}",
        crate::cmd::threads::py_bool(free.join()?)
    )?;
    Ok(exit::OK)
}

/// Run `pk-lock semaphore`: `threads` threads share a
/// `BoundedSemaphore(value)`, each holding it for `hold`; then one release
/// too many is refused.
pub fn semaphore(threads: u32, value: u32, hold: DurationArg, out: &mut Out) -> Result<u8> {
    let sem = Arc::new(Semaphore::bounded(value as usize));
    let in_use = Arc::new(Mutex::new(0usize));
    let most = Arc::new(AtomicUsize::new(0));
    let mut group = thread::Group::new();
    for i in 1..=threads {
        let (sem, in_use, most) = (Arc::clone(&sem), Arc::clone(&in_use), Arc::clone(&most));
        let mut out = out.like();
        group.spawn(format!("Thread-{i}"), move |gate| -> Result<()> {
            let me = thread::current_name();
            gate.wait();
            let permit = sem.permit();
            {
                let mut n = in_use.lock().unwrap_or_else(PoisonError::into_inner);
                *n += 1;
                most.fetch_max(*n, SeqCst);
                note!(out, "thread {me}: acquired, {n} of {value} in use")?;
            }
            std::thread::sleep(hold.0);
            {
                let mut n = in_use.lock().unwrap_or_else(PoisonError::into_inner);
                *n -= 1;
                // Printed before the release, under the count's lock.
                note!(out, "thread {me}: releasing, {n} of {value} in use")?;
            }
            drop(permit);
            Ok(())
        })?;
    }
    group.open();
    for r in group.join()? {
        r?;
    }
    outln!(
        out,
        "most in use at once: {} of {value} (BoundedSemaphore({value}), {threads} threads)",
        most.load(SeqCst)
    )?;
    match sem.release() {
        Err(e) => outln!(
            out,
            "release() once more: {e} (Python: ValueError: Semaphore released too many times)"
        )?,
        Ok(()) => unreachable!("every permit was given back"),
    }
    Ok(exit::OK)
}
