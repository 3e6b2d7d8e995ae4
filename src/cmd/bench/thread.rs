//! Threads: create+join and a contended mutex.

use std::time::Instant;

use super::{Scale, check, us_per};
use crate::cmd::Result;

/// A named thread started and joined, per thread.
pub(super) fn thread_create_join(scale: Scale) -> Result<f64> {
    let n = scale.n(20_000);
    let t0 = Instant::now();
    for i in 0..n {
        let got = crate::thread::spawn("bench", move || i)?.join()?;
        check(got == i, "thread_create_join", "wrong result")?;
    }
    Ok(us_per(t0, n))
}

/// Two threads each calling `add` `per` times; nanoseconds per call.
/// Thread creation is part of the figure (no wait at a gate), as in the C
/// baseline.
fn two_threads<F: Fn() + Send + Sync + 'static>(per: u64, add: F) -> Result<f64> {
    let add = std::sync::Arc::new(add);
    let t0 = Instant::now();
    let mut group = crate::thread::Group::new();
    for _ in 0..2 {
        let add = std::sync::Arc::clone(&add);
        group.spawn("bench", move |_| {
            for _ in 0..per {
                add();
            }
        })?;
    }
    group.join()?;
    Ok(t0.elapsed().as_secs_f64() * 1e9 / (2 * per) as f64)
}

/// Two threads incrementing one counter under one
/// [`crate::thread::Mutex`], per increment.
pub(super) fn thread_mutex_2t(scale: Scale) -> Result<f64> {
    use std::sync::Arc;
    let per = scale.n(5_000_000);
    let counter = Arc::new(crate::thread::Mutex::new(0u64));
    let c = Arc::clone(&counter);
    let ns = two_threads(per, move || {
        *c.lock() += 1;
    })?;
    let total = *counter.lock();
    check(total == 2 * per, "thread_mutex_2t", "lost updates")?;
    Ok(ns)
}

/// The same under one `std::sync::Mutex`, the peer Rust programs use.
pub(super) fn thread_std_mutex_2t(scale: Scale) -> Result<f64> {
    use std::sync::{Arc, Mutex, PoisonError};
    let per = scale.n(5_000_000);
    let counter = Arc::new(Mutex::new(0u64));
    let c = Arc::clone(&counter);
    let ns = two_threads(per, move || {
        *c.lock().unwrap_or_else(PoisonError::into_inner) += 1;
    })?;
    let total = *counter.lock().unwrap_or_else(PoisonError::into_inner);
    check(total == 2 * per, "thread_std_mutex_2t", "lost updates")?;
    Ok(ns)
}

/// Two threads incrementing one counter under a [`crate::thread::Lock`]
/// (a relaxed load and store inside it, so a lock that let both in would
/// lose updates), per increment.
pub(super) fn thread_lock_2t(scale: Scale) -> Result<f64> {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};
    let per = scale.n(5_000_000);
    let lock = crate::thread::Lock::new();
    let counter = Arc::new(AtomicU64::new(0));
    let c = Arc::clone(&counter);
    let ns = two_threads(per, move || {
        let _held = lock.acquire();
        c.store(c.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
    })?;
    check(
        counter.load(Ordering::Relaxed) == 2 * per,
        "thread_lock_2t",
        "lost updates",
    )?;
    Ok(ns)
}
