//! Starting a program: posixkit's `Spawn` and std's `Command` running
//! `/bin/true`, from a small parent and from parents that first touched
//! 256 MiB, 1 GiB and 4 GiB of heap. A fork-based start grows with the
//! parent's page tables; clone(CLONE_VM|CLONE_VFORK) must not.

use std::sync::Mutex;
use std::time::Instant;

use super::{Scale, check, us_per};
use crate::cmd::exit;
use crate::cmd::{Failure, Result};
use crate::error::{Error, ErrorKind};

const MIB: usize = 1 << 20;
const PROGRAM: &str = "/bin/true";

/// The parent's extra resident memory, kept between figures of the same
/// size so that each size is allocated and touched once.
static BALLAST: Mutex<Vec<u8>> = Mutex::new(Vec::new());

/// Make the process hold `bytes` of touched heap (0: none; a sixteenth
/// with --quick), or decline when the machine lacks the memory: the figure
/// is then skipped.
fn ballast(bytes: usize, figure: &str) -> Result<()> {
    let bytes = if super::QUICK.load(std::sync::atomic::Ordering::Relaxed) {
        bytes / 16
    } else {
        bytes
    };
    hold(bytes, figure)
}

/// Make the process hold exactly `bytes` of touched heap (0: none), or
/// decline when the machine lacks the memory.
pub(super) fn hold(bytes: usize, figure: &str) -> Result<()> {
    let mut held = BALLAST.lock().unwrap_or_else(|p| p.into_inner());
    if held.len() == bytes {
        return Ok(());
    }
    *held = Vec::new();
    if bytes == 0 {
        return Ok(());
    }
    let available = available_memory();
    // Room for the ballast, and 512 MiB for everything else on the machine.
    if available.is_some_and(|a| a < bytes + 512 * MIB) {
        return Err(Failure::from(Error::new(
            ErrorKind::WouldBlock,
            "bench",
            figure,
            format!(
                "needs {} MiB of memory and {} MiB are available",
                (bytes + 512 * MIB) / MIB,
                available.unwrap_or(0) / MIB
            ),
        ))
        .with_code(exit::DECLINED));
    }
    // Written, not just reserved: every page resident, every page-table
    // entry filled in.
    *held = vec![0x5a; bytes];
    Ok(())
}

/// MemAvailable from /proc/meminfo, in bytes.
fn available_memory() -> Option<usize> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kb: usize = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// `n` runs of `/bin/true` through posixkit's Spawn, in µs per run.
fn posixkit(scale: Scale, bytes: usize, figure: &str) -> Result<f64> {
    ballast(bytes, figure)?;
    let n = scale.n(200);
    let t0 = Instant::now();
    for _ in 0..n {
        let out = crate::spawn::Spawn::new([PROGRAM])?.run()?;
        check(out.status.success(), figure, "/bin/true failed")?;
    }
    Ok(us_per(t0, n))
}

/// The same through `std::process::Command::status`, the peer.
fn std_command(scale: Scale, bytes: usize, figure: &str) -> Result<f64> {
    ballast(bytes, figure)?;
    let n = scale.n(200);
    let t0 = Instant::now();
    for _ in 0..n {
        let status = std::process::Command::new(PROGRAM)
            .status()
            .map_err(|e| Error::io("spawn", PROGRAM, &e))?;
        check(status.success(), figure, "/bin/true failed")?;
    }
    Ok(us_per(t0, n))
}

pub(super) fn spawn_small(s: Scale) -> Result<f64> {
    posixkit(s, 0, "spawn_us")
}
pub(super) fn spawn_std_small(s: Scale) -> Result<f64> {
    std_command(s, 0, "spawn_std_us")
}
pub(super) fn spawn_256m(s: Scale) -> Result<f64> {
    posixkit(s, 256 * MIB, "spawn_256MiB_us")
}
pub(super) fn spawn_std_256m(s: Scale) -> Result<f64> {
    std_command(s, 256 * MIB, "spawn_std_256MiB_us")
}
pub(super) fn spawn_1g(s: Scale) -> Result<f64> {
    posixkit(s, 1024 * MIB, "spawn_1GiB_us")
}
pub(super) fn spawn_std_1g(s: Scale) -> Result<f64> {
    std_command(s, 1024 * MIB, "spawn_std_1GiB_us")
}
pub(super) fn spawn_4g(s: Scale) -> Result<f64> {
    posixkit(s, 4096 * MIB, "spawn_4GiB_us")
}
pub(super) fn spawn_std_4g(s: Scale) -> Result<f64> {
    std_command(s, 4096 * MIB, "spawn_std_4GiB_us")
}
