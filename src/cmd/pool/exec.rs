//! `pk-pool exec`: run a command for each input item on pre-forked workers,
//! like `xargs -P`.

use clap::Args as ClapArgs;
use nix::sys::signal::Signal;

use crate::cmd::exit;
use crate::cmd::pool::new_pool;
use crate::cmd::{Failure, Result};
use crate::error::{Error, ErrorKind};
use crate::pool::TaskError;

/// `pk-pool exec`'s arguments.
#[derive(Debug, ClapArgs)]
pub struct ExecArgs {
    /// Worker processes, so commands running at once (1-1024; default: the CPU count).
    #[arg(short = 'j', long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub jobs: Option<u32>,
    /// The command and its arguments, after `--`.
    #[arg(last = true, required = true, value_name = "CMD")]
    pub command: Vec<std::ffi::OsString>,
}

/// Run `pk-pool exec`.
pub fn run(a: ExecArgs) -> Result<u8> {
    exec(a.jobs, &a.command)
}

/// The `exec` task: run the NUL-separated argv with /dev/null as stdin and
/// the worker's stdout/stderr; the result is one byte, the shell status.
pub(super) fn exec_task(arg: &[u8], out: &mut Vec<u8>) -> std::result::Result<(), String> {
    use std::os::unix::ffi::OsStrExt;
    let argv = arg.split(|&b| b == 0).map(std::ffi::OsStr::from_bytes);
    let code = match run_one(argv) {
        Ok(status) => status.shell_code(),
        Err(e) => {
            crate::cmd::eprintln_one("pk-pool", &e);
            e.code()
        }
    };
    out.push(code);
    Ok(())
}

fn run_one<'a>(argv: impl Iterator<Item = &'a std::ffi::OsStr>) -> Result<crate::status::Status> {
    let devnull =
        std::fs::File::open("/dev/null").map_err(|e| Error::io("open", "/dev/null", &e))?;
    // The command dies with its worker: a pool terminated on SIGTERM or
    // SIGINT leaves no command running.
    let spawn = crate::spawn::Spawn::new(argv)?
        .stdin(crate::spawn::Stdin::Fd(devnull.into()))
        .die_with_parent(Signal::SIGTERM);
    Ok(spawn.run()?.status)
}

/// The argv for one input line: `{}` replaced in every argument, or the line
/// appended when no argument holds `{}`; NUL-separated for the task.
fn command_for(command: &[std::ffi::OsString], line: &[u8]) -> Vec<u8> {
    use std::os::unix::ffi::OsStrExt;
    let has_slot = command
        .iter()
        .any(|a| a.as_bytes().windows(2).any(|w| w == b"{}"));
    let mut argv: Vec<Vec<u8>> = command
        .iter()
        .map(|a| {
            let a = a.as_bytes();
            let mut out = Vec::with_capacity(a.len());
            let mut i = 0;
            while i < a.len() {
                if a[i..].starts_with(b"{}") {
                    out.extend_from_slice(line);
                    i += 2;
                } else {
                    out.push(a[i]);
                    i += 1;
                }
            }
            out
        })
        .collect();
    if !has_slot {
        argv.push(line.to_vec());
    }
    argv.join(&0u8)
}

fn exec(jobs: Option<u32>, command: &[std::ffi::OsString]) -> Result<u8> {
    use std::io::Read;
    use std::os::unix::ffi::OsStrExt;
    if command.iter().any(|a| a.as_bytes().contains(&0)) {
        return Err(Error::invalid("CMD", "an argument contains a NUL byte").into());
    }
    let mut input = Vec::new();
    std::io::stdin()
        .read_to_end(&mut input)
        .map_err(|e| Error::io("read", "stdin", &e))?;
    let lines: Vec<&[u8]> = input
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .collect();
    if let Some(n) = lines.iter().position(|l| l.contains(&0)) {
        return Err(Error::data(
            "read",
            "stdin",
            format!("line {} contains a NUL byte", n + 1),
        )
        .into());
    }
    if lines.is_empty() {
        return Ok(exit::OK);
    }
    let jobs =
        jobs.unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get() as u32));
    let args: Vec<Vec<u8>> = lines.iter().map(|l| command_for(command, l)).collect();
    let caught = stop_on_signals()?;
    let mut pool = new_pool(jobs.min(lines.len() as u32))?;
    pool.interrupt_on(
        caught
            .wake
            .try_clone()
            .map_err(|e| Error::io("dup", "self-pipe", &e))?,
    );
    let results = match pool.map("exec", &args, 1) {
        Ok(r) => r,
        Err(e) if e.is_interrupted() => {
            // Kill the workers (their commands get SIGTERM through
            // PR_SET_PDEATHSIG) and reap them, then end as the signal says.
            pool.terminate()?;
            let sig = caught.signal.load(std::sync::atomic::Ordering::SeqCst) as i32;
            let name = crate::status::signal_name(sig);
            return Err(Failure::from(Error::new(
                ErrorKind::Interrupted,
                "wait",
                "pool",
                format!("stopped by {name}: workers and commands ended"),
            ))
            .with_code(exit::signal_code(sig)));
        }
        Err(e) => return Err(e.into()),
    };
    pool.close();
    pool.join()?;
    let mut first_failure = None;
    for r in results.iter() {
        let code = match r {
            Ok(&[code]) => code,
            Ok(_) => exit::OS_ERR,
            Err(e) => {
                crate::cmd::eprintln_one("pk-pool", &e);
                match e {
                    TaskError::WorkerDied { status, .. } => status.shell_code(),
                    _ => exit::OS_ERR,
                }
            }
        };
        if code != 0 && first_failure.is_none() {
            first_failure = Some(code);
        }
    }
    Ok(first_failure.unwrap_or(exit::OK))
}

/// What [`stop_on_signals`] set up: the signal caught last, and the read end
/// of the self-pipe its handler writes to.
struct Caught {
    signal: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    wake: std::os::fd::OwnedFd,
}

/// SIGINT, SIGTERM and SIGHUP stop `pk-pool exec` cleanly: signal-hook
/// records the signal, then writes to a self-pipe the pool polls, so the
/// wait ends at once, whatever the pool was waiting for.
fn stop_on_signals() -> Result<Caught> {
    use std::os::fd::OwnedFd;
    let (read, write) = crate::pipe::pipe()?;
    let write = OwnedFd::from(write);
    let signal = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    for sig in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
        let n = sig as i32;
        // The flag first, then the pipe: whoever wakes up finds the flag set.
        signal_hook::flag::register_usize(n, std::sync::Arc::clone(&signal), n as usize)
            .map_err(|e| Error::io("sigaction", sig.as_str(), &e))?;
        let end = write
            .try_clone()
            .map_err(|e| Error::io("dup", "self-pipe", &e))?;
        signal_hook::low_level::pipe::register(n, end)
            .map_err(|e| Error::io("sigaction", sig.as_str(), &e))?;
    }
    Ok(Caught {
        signal,
        wake: read.into(),
    })
}
