//! `pk-pool guard`: what ends a run's jobs when `pk-pool exec` (or `pk-pool
//! worker`) is killed with SIGKILL and can do nothing itself.
//!
//! Each job runs in a process group of its own and its leader gets SIGTERM
//! as its death signal; but a leader that ignores SIGTERM, and everything
//! a job started, would outlive pk-pool. So [`Local`](super::local::Local)
//! starts this small process first, with the read end of a pipe as its
//! stdin, and writes to it each job's process group as the job starts
//! (`+pgid`) and as its leader ends (`-pgid`, written while the leader is
//! a zombie that still holds the number, so no other group can have it
//! yet). Each message is a little-endian i32: positive adds, negative
//! removes.
//!
//! When the pipe ends, its writer is gone. An orderly run has removed
//! every group by then, and the guard just exits; otherwise each group
//! still listed gets SIGTERM and SIGCONT, then SIGKILL after the
//! kill-after delay given as the argument.
//!
//! The guard runs in a session of its own, so that a signal sent to
//! pk-pool's whole process group (a SIGKILL from `timeout -s KILL` or a
//! shell's `kill -9 %1`) or by its terminal (^C, ^Z, a hang-up) never
//! reaches it; it also blocks the signals a supervisor may send a group
//! (INT, TERM, HUP, QUIT, the job-control stops), so it lives as long as
//! its writer does; and it reads in batches, a read
//! then a pause that only the end of the pipe cuts short, so a run of
//! many short jobs costs it a wake-up per pause, not per job, and an
//! orderly end is not held up.

use std::collections::HashSet;
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{SigSet, SigmaskHow, Signal, pthread_sigmask};

use super::local;
use crate::cmd::Result;
use crate::cmd::exit;
use crate::error::Error;
use crate::process::Pid;

/// `pk-pool guard`'s arguments (it is started by `pk-pool exec`).
#[derive(Debug, clap::Args)]
pub struct GuardArgs {
    /// Milliseconds from SIGTERM to SIGKILL.
    pub kill_after_ms: u64,
}

/// The pause between two reads.
const BATCH: Duration = Duration::from_millis(20);

/// Run the guard on stdin.
pub fn run(a: GuardArgs) -> Result<u8> {
    let mut block = SigSet::empty();
    for s in [
        Signal::SIGINT,
        Signal::SIGTERM,
        Signal::SIGHUP,
        Signal::SIGQUIT,
        Signal::SIGTSTP,
        Signal::SIGTTIN,
        Signal::SIGTTOU,
        Signal::SIGPIPE,
    ] {
        block.add(s);
    }
    pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&block), None)
        .map_err(|e| Error::sys("pthread_sigmask", "SIG_BLOCK", e))?;
    let groups = read_groups()?;
    if !groups.is_empty() {
        end_groups(groups, Duration::from_millis(a.kill_after_ms))?;
    }
    Ok(exit::OK)
}

/// Follow the messages on stdin to its end; the groups still listed.
fn read_groups() -> Result<HashSet<i32>> {
    let stdin = std::io::stdin();
    let mut groups = HashSet::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut have = 0;
    loop {
        match nix::unistd::read(stdin.as_fd(), &mut buf[have..]) {
            Ok(0) => return Ok(groups),
            Ok(n) => have += n,
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(Error::sys("read", "stdin", e).into()),
        }
        let whole = have / 4 * 4;
        for m in buf[..whole].chunks_exact(4) {
            let v = i32::from_le_bytes([m[0], m[1], m[2], m[3]]);
            if v > 0 {
                groups.insert(v);
            } else if let Some(g) = v.checked_neg() {
                groups.remove(&g);
            }
        }
        buf.copy_within(whole..have, 0);
        have -= whole;
        // The pause: poll(2) for no event at all still wakes at a hang-up,
        // so the end of the pipe is seen at once and new messages are not.
        let mut hup = [PollFd::new(stdin.as_fd(), PollFlags::empty())];
        let _ = poll(
            &mut hup,
            PollTimeout::try_from(BATCH).unwrap_or(PollTimeout::MAX),
        );
    }
}

/// SIGTERM and SIGCONT to each group, SIGKILL to those left after `grace`.
fn end_groups(groups: HashSet<i32>, grace: Duration) -> Result<()> {
    let mut groups: Vec<Pid> = groups.into_iter().map(Pid::from_raw).collect();
    for &g in &groups {
        local::signal_group(g, Signal::SIGTERM)?;
        local::signal_group(g, Signal::SIGCONT)?;
    }
    let kill_at = Instant::now().checked_add(grace);
    loop {
        groups.retain(|&g| local::group_alive(g));
        if groups.is_empty() {
            return Ok(());
        }
        if kill_at.is_some_and(|t| Instant::now() >= t) {
            for &g in &groups {
                local::signal_group(g, Signal::SIGKILL)?;
            }
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}
