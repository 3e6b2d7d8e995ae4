//! Shared memory, semaphores and the queue between processes.

use std::time::Instant;

use super::{Scale, check, child, join_ok, run_children, us_per};
use crate::cmd::Result;

/// Round trip through two process-shared semaphores: post a, wait b.
pub(super) fn sem_pingpong(scale: Scale) -> Result<f64> {
    use crate::sem::Semaphore;
    let n = scale.n(100_000);
    let (ping, pong, gate) = (Semaphore::new(0)?, Semaphore::new(0)?, Semaphore::new(0)?);
    let mut c = child(&gate, || {
        for _ in 0..n {
            if ping.wait().is_err() || pong.post().is_err() {
                return 1;
            }
        }
        0
    })?;
    gate.post()?;
    let t0 = Instant::now();
    for _ in 0..n {
        ping.post()?;
        pong.wait()?;
    }
    let t = us_per(t0, n);
    join_ok(&mut c, "sem_pingpong", "the partner failed")?;
    Ok(t)
}

pub(super) fn counter_2p(scale: Scale, figure: &str, locked: bool) -> Result<f64> {
    use crate::sem::Semaphore;
    use crate::shm::SharedValue;
    use std::sync::atomic::Ordering;
    let per = scale.n(2_000_000);
    let value = SharedValue::<u64>::new(0)?;
    let (lock, gate) = (Semaphore::new(1)?, Semaphore::new(0)?);
    let add = || -> i32 {
        for _ in 0..per {
            if locked {
                let Ok(_held) = lock.acquire() else { return 1 };
                value.set(value.get() + 1);
            } else {
                value.atomic().fetch_add(1, Ordering::Relaxed);
            }
        }
        0
    };
    let children = vec![child(&gate, add)?, child(&gate, add)?];
    let secs = run_children(&gate, children, figure)?;
    check(value.get() == 2 * per, figure, "lost updates")?;
    Ok(secs * 1e9 / (2 * per) as f64)
}

/// Two processes, fetch_add on one shared u64.
pub(super) fn shm_atomic_2p(scale: Scale) -> Result<f64> {
    counter_2p(scale, "shm_atomic_2p", false)
}

/// Two processes, a read-modify-write under a Semaphore(1) lock.
pub(super) fn shm_semlock_2p(scale: Scale) -> Result<f64> {
    counter_2p(scale, "shm_semlock_2p", true)
}

/// One producer process and one consumer (this one), 16-byte messages.
pub(super) fn queue_msgs(scale: Scale) -> Result<f64> {
    let n = scale.n(1_000_000);
    let q = crate::queue::Queue::new(1024, 16)?;
    let gate = crate::sem::Semaphore::new(0)?;
    let mut producer = child(&gate, || {
        for i in 0..n {
            let mut msg = [0u8; 16];
            msg[..8].copy_from_slice(&i.to_le_bytes());
            if q.put(&msg).is_err() {
                return 1;
            }
        }
        0
    })?;
    let mut buf = Vec::with_capacity(16);
    gate.post()?;
    let t0 = Instant::now();
    for i in 0..n {
        q.get_into(&mut buf)?;
        check(
            buf.get(..8) == Some(&i.to_le_bytes()[..]),
            "queue_msgs",
            "out of order",
        )?;
    }
    let rate = n as f64 / t0.elapsed().as_secs_f64();
    join_ok(&mut producer, "queue_msgs", "the producer failed")?;
    Ok(rate)
}
