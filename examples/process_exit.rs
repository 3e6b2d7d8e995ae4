//! A child process with an exit code, and one stopped by a signal: Python's
//! `multiprocessing.Process` with `join` and `exitcode`. The signal type
//! comes from `posixkit::nix`, the nix posixkit was built with, so it
//! matches whatever nix your own program depends on.
//!
//! Run: cargo run --example process_exit

#![forbid(unsafe_code)]

use std::time::Duration;

use posixkit::nix::sys::signal::Signal;
use posixkit::process::Builder;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // The child runs the closure and exits with the code it returns.
    let mut worker = Builder::new().name("worker").start(|| 3)?;
    let status = worker.join(None)?.expect("no timeout was given");
    println!(
        "{} {status}, exitcode {:?}",
        worker.name(),
        worker.exitcode()
    );
    assert_eq!(worker.exitcode(), Some(3));

    // A child that would sleep for a minute, ended by SIGUSR1.
    let mut sleeper = Builder::new().name("sleeper").start(|| {
        std::thread::sleep(Duration::from_secs(60));
        0
    })?;
    assert!(sleeper.is_alive()?);
    sleeper.signal(Signal::SIGUSR1)?;
    let status = sleeper.join(Some(Duration::from_secs(30)))?;
    println!(
        "{} {}, exitcode {:?}",
        sleeper.name(),
        status.expect("ended"),
        sleeper.exitcode()
    );
    assert_eq!(sleeper.exitcode(), Some(-(Signal::SIGUSR1 as i32)));
    Ok(())
}
