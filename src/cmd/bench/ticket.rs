//! flock(2) and the ticket file.

use std::time::Instant;

use super::{Scale, check, child, run_children};
use crate::cmd::{Failure, Result};
use crate::error::Error;
use crate::process::{self};

/// A scratch ticket file in a directory of its own, removed afterwards.
pub(super) fn with_ticket_file<T>(
    count: u64,
    f: impl FnOnce(&std::path::Path) -> Result<T>,
) -> Result<T> {
    let dir = std::env::temp_dir().join(format!("pk-bench-{}", process::getpid()));
    std::fs::create_dir_all(&dir).map_err(|e| Error::io("mkdir", dir.display(), &e))?;
    let path = dir.join("product");
    let result = crate::ticket::TicketFile::init(&path, count)
        .map_err(Failure::from)
        .and_then(|_| f(&path));
    let _ = std::fs::remove_dir_all(&dir);
    result
}

/// Uncontended flock LOCK_EX + LOCK_UN on a ticket file, per pair.
pub(super) fn flock_lock_unlock(scale: Scale) -> Result<f64> {
    let n = scale.n(1_000_000);
    with_ticket_file(1, |path| {
        let file = crate::ticket::TicketFile::open(path)?;
        let t0 = Instant::now();
        for _ in 0..n {
            drop(file.lock_exclusive()?);
        }
        Ok(t0.elapsed().as_secs_f64() * 1e9 / n as f64)
    })
}

/// Four processes buy 100 000 tickets from one file; tickets per second.
pub(super) fn ticket_flock_k4(scale: Scale) -> Result<f64> {
    use crate::ticket::{Sale, TicketFile};
    let total = scale.n(100_000);
    with_ticket_file(total, |path| {
        let gate = crate::sem::Semaphore::new(0)?;
        let buyer = || -> i32 {
            let Ok(file) = TicketFile::open(path) else {
                return 1;
            };
            loop {
                match file.buy() {
                    Ok(Sale::Bought(_)) => {}
                    Ok(Sale::SoldOut) => return 0,
                    Err(_) => return 1,
                }
            }
        };
        let children = (0..4)
            .map(|_| child(&gate, buyer))
            .collect::<Result<Vec<_>>>()?;
        let secs = run_children(&gate, children, "ticket_flock_K4")?;
        check(
            TicketFile::open_read_only(path)?.count()? == 0,
            "ticket_flock_K4",
            "tickets left",
        )?;
        Ok(total as f64 / secs)
    })
}
