//! Forking: fork+wait and Process start+join.

use std::time::Instant;

use super::{Scale, check, us_per};
use crate::cmd::Result;
use crate::process::{self, Builder, Fork};

/// fork + `_exit(i & 0x7f)` + waitpid + check WEXITSTATUS, as the C baseline does.
pub(super) fn fork_wait(scale: Scale) -> Result<f64> {
    let n = scale.n(3000);
    let t0 = Instant::now();
    for i in 0..n {
        let code = (i & 0x7f) as u8;
        match process::fork_named("bench child")? {
            Fork::Child => process::_exit(i32::from(code)),
            Fork::Parent(pid) => {
                let status = process::waitpid(pid)?;
                check(
                    status == crate::status::Status::Exited(code),
                    "fork_wait",
                    "wrong exit status",
                )?;
            }
        }
    }
    Ok(us_per(t0, n))
}

/// `Process` start + join + exitcode check, as Python's Process(...).start(); join().
pub(super) fn process_start_join(scale: Scale) -> Result<f64> {
    let n = scale.n(2000);
    let t0 = Instant::now();
    for i in 0..n {
        let code = (i & 0x7f) as i32;
        let mut p = Builder::new().name("bench").start(|| code)?;
        p.join(None)?;
        check(
            p.exitcode() == Some(code),
            "process_start_join",
            "wrong exitcode",
        )?;
    }
    Ok(us_per(t0, n))
}
