//! The library's checked fork, tested from a process whose threads this
//! test controls (the test harness would run each test on a thread of its
//! own, so this binary has `harness = false` and a plain `main`).
//!
//! - No spurious refusal right after a thread was joined: the kernel may
//!   still be finishing the joined thread's exit for a moment.
//! - While a second thread runs, every forking entry point refuses with
//!   `ErrorKind::ThreadsRunning`, and nothing is forked.
//! - A child whose closure panics with a payload whose own `drop` panics
//!   ends with 101, and never returns into this code.
//! - `Process::join` and `Pool::get` with a timeout near `Duration::MAX`
//!   wait for the result instead of panicking.
//! - A child forked while a spawn's pipes are open (held by this thread,
//!   or by another thread in the middle of its run) keeps no copy of them,
//!   so the spawn finishes while that unrelated child still sleeps.

use std::sync::mpsc;
use std::time::Duration;

use posixkit::ErrorKind;
use posixkit::pool::{Pool, Registry};
use posixkit::process::{self, Builder, Fork};
use posixkit::spawn::Spawn;
use posixkit::status::Status;

fn main() {
    fork_right_after_join();
    every_entry_point_refuses_while_a_thread_runs();
    a_panicking_payload_ends_the_child_with_101();
    a_timeout_too_large_for_the_clock_waits_for_ever();
    a_fork_keeps_no_pipe_of_a_running_spawn();
    a_fork_from_another_thread_keeps_no_pipe_of_its_spawn();
    println!("fork_check: ok");
}

fn fork_right_after_join() {
    for i in 0..2000 {
        std::thread::spawn(|| {}).join().expect("the thread ran");
        match process::fork() {
            Ok(Fork::Child) => process::_exit(7),
            Ok(Fork::Parent(pid)) => {
                assert_eq!(process::waitpid(pid).unwrap(), Status::Exited(7));
            }
            Err(e) => panic!("fork {i} refused right after a join: {e}"),
        }
    }
}

fn every_entry_point_refuses_while_a_thread_runs() {
    let (stop_tx, stop_rx) = mpsc::channel::<()>();
    let t = std::thread::spawn(move || {
        let _ = stop_rx.recv();
    });
    let check = |what: &str, e: posixkit::Error| {
        assert_eq!(e.kind(), ErrorKind::ThreadsRunning, "{what}: {e}");
        assert!(e.to_string().starts_with("fork("), "{what}: {e}");
    };
    check("process::fork", process::fork().map(|_| ()).unwrap_err());
    check(
        "Builder::start",
        Builder::new().start(|| 0).map(|_| ()).unwrap_err(),
    );
    let registry = Registry::new().register_typed("id", |n: u64| Ok::<u64, String>(n));
    check("Pool::new", Pool::new(2, registry).map(|_| ()).unwrap_err());
    stop_tx.send(()).unwrap();
    t.join().unwrap();
    // Alone again: the same calls work.
    let mut p = Builder::new().start(|| 3).unwrap();
    assert_eq!(
        p.join(Some(Duration::from_secs(30))).unwrap(),
        Some(Status::Exited(3))
    );
}

struct Bomb;

impl Drop for Bomb {
    fn drop(&mut self) {
        panic!("the payload's drop panics too");
    }
}

fn a_panicking_payload_ends_the_child_with_101() {
    // Quiet: the default hook would print both panics of the child.
    std::panic::set_hook(Box::new(|_| {}));
    let mut p = Builder::new()
        .name("bomb")
        .start(|| std::panic::panic_any(Bomb))
        .unwrap();
    let status = p.join(Some(Duration::from_secs(30))).unwrap();
    let _ = std::panic::take_hook();
    assert_eq!(
        status,
        Some(Status::Exited(101)),
        "the child ended with _exit(101)"
    );
}

fn a_timeout_too_large_for_the_clock_waits_for_ever() {
    let mut p = Builder::new()
        .start(|| {
            std::thread::sleep(Duration::from_millis(50));
            4
        })
        .unwrap();
    assert_eq!(
        p.join(Some(Duration::MAX)).unwrap(),
        Some(Status::Exited(4))
    );
    let registry = Registry::new().register_typed("double", |n: u64| Ok::<u64, String>(2 * n));
    let mut pool = Pool::new(1, registry).unwrap();
    let h = pool.apply_async("double", &21u64.to_le_bytes()).unwrap();
    let r = pool
        .get(&h, Some(Duration::MAX))
        .unwrap()
        .expect("no timeout");
    assert_eq!(r.as_deref(), Ok(&42u64.to_le_bytes()[..]));
    pool.close();
    pool.join().unwrap();
}

/// The pipe inodes (`pipe:[N]`) among the open descriptors of `pid`.
fn pipe_inodes(pid: &str) -> std::collections::BTreeMap<i32, String> {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|e| {
            let e = e.ok()?;
            let fd: i32 = e.file_name().to_str()?.parse().ok()?;
            let link = std::fs::read_link(e.path()).ok()?;
            let link = link.to_str()?.to_string();
            link.starts_with("pipe:").then_some((fd, link))
        })
        .collect()
}

fn a_fork_keeps_no_pipe_of_a_running_spawn() {
    let before = pipe_inodes("self");
    // cat's stdin is a pipe we hold the write end of (the input is not
    // written yet), its stdout and stderr ones we hold the read ends of.
    let mut running = Spawn::new(["cat"])
        .unwrap()
        .input(b"through cat\n".to_vec())
        .capture(true)
        .start()
        .unwrap();
    let spawn_pipes: Vec<String> = pipe_inodes("self")
        .into_iter()
        .filter(|(fd, _)| !before.contains_key(fd))
        .map(|(_, link)| link)
        .collect();
    assert_eq!(
        spawn_pipes.len(),
        3,
        "stdin, stdout, stderr: {spawn_pipes:?}"
    );
    let (ready_r, ready_w) = posixkit::pipe::pipe().unwrap();
    let mut sleeper = Builder::new()
        .name("sleeper")
        .start(move || {
            let _ = ready_w.write_all(b"r");
            std::thread::sleep(Duration::from_secs(3600));
            0
        })
        .unwrap();
    // The sleeper has run past its fork: what it holds now, it keeps.
    let mut b = [0u8; 1];
    assert_eq!(ready_r.read_full(&mut b).unwrap(), 1);
    let held = pipe_inodes(&sleeper.pid().to_string());
    for link in &spawn_pipes {
        assert!(
            !held.values().any(|l| l == link),
            "the forked child holds the spawn's {link}: {held:?}"
        );
    }
    // So cat sees end of file on its input and the spawn ends now.
    assert!(running.wait().unwrap().success());
    assert_eq!(running.take_output().0, b"through cat\n");
    sleeper.kill().unwrap();
    sleeper.join(None).unwrap();
}

fn a_fork_from_another_thread_keeps_no_pipe_of_its_spawn() {
    let (to_main, from_thread) = mpsc::channel::<Vec<u8>>();
    let (to_thread, from_main) = mpsc::channel::<()>();
    let t = std::thread::spawn(move || {
        let mut running = Spawn::new(["cat"])
            .unwrap()
            .input(b"from a thread\n".to_vec())
            .capture(true)
            .start()
            .unwrap();
        to_main.send(Vec::new()).unwrap();
        // Main forks now, while our pipes are open.
        from_main.recv().unwrap();
        assert!(running.wait().unwrap().success());
        to_main.send(running.take_output().0).unwrap();
    });
    from_thread.recv().unwrap();
    // SAFETY: the child only sleeps (nanosleep) and then _exits: no lock,
    // no allocation, though another thread runs.
    let mut sleeper = unsafe {
        Builder::new().name("sleeper").start_unchecked(|| {
            std::thread::sleep(Duration::from_secs(3600));
            0
        })
    }
    .unwrap();
    to_thread.send(()).unwrap();
    // A copy of the spawn's pipes in the sleeper would hold the spawn for
    // an hour; a minute means that.
    let out = from_thread
        .recv_timeout(Duration::from_secs(60))
        .expect("the spawn ended while the forked child sleeps");
    assert_eq!(out, b"from a thread\n");
    sleeper.kill().unwrap();
    sleeper.join(None).unwrap();
    t.join().unwrap();
}
