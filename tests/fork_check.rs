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
//! - A typed pool on real workers: strings and tuples in and out, an item
//!   whose worker dies reported alone, a handle from another registry
//!   refused.

use std::sync::mpsc;
use std::time::Duration;

use posixkit::ErrorKind;
use posixkit::pool::{Pool, Registry, TaskError};
use posixkit::process::{self, Builder, Fork};
use posixkit::status::Status;

fn main() {
    fork_right_after_join();
    every_entry_point_refuses_while_a_thread_runs();
    a_panicking_payload_ends_the_child_with_101();
    a_timeout_too_large_for_the_clock_waits_for_ever();
    a_typed_pool_end_to_end();
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
    let mut registry = Registry::new();
    let _id = registry.task("id", |n: u64| n);
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
    let mut registry = Registry::new();
    let double = registry.task("double", |n: u64| 2 * n);
    let mut pool = Pool::new(1, registry).unwrap();
    let h = pool.apply_async(double, 21).unwrap();
    let r = pool
        .get(&h, Some(Duration::MAX))
        .unwrap()
        .expect("no timeout");
    assert_eq!(r, Ok(42));
    pool.close();
    pool.join().unwrap();
}

fn a_typed_pool_end_to_end() {
    let mut registry = Registry::new();
    let shout = registry.task("shout", |s: String| s.to_uppercase());
    let pair = registry.task("pair", |(n, s): (u32, String)| {
        if s == "die" {
            let _ = process::die_of(posixkit::nix::sys::signal::Signal::SIGKILL);
        }
        (s.len() as u32 + n, format!("{s}{n}"))
    });
    let mut elsewhere = Registry::new();
    let foreign = elsewhere.task("shout", |s: String| s);
    let mut pool = Pool::new(2, registry).unwrap();

    let words: Vec<String> = (0..50).map(|i| "ab".repeat(i % 4)).collect();
    let got = pool.map(shout, &words, 7).unwrap();
    assert_eq!(got.len(), 50);
    for (i, r) in got.iter().enumerate() {
        assert_eq!(r, Ok("AB".repeat(i % 4)), "item {i}");
    }

    // Item 3's worker dies: its chunk (items 2 and 3) is lost, the rest runs.
    let args: Vec<(u32, String)> = ["a", "bb", "c", "die", "e", "ff"]
        .iter()
        .enumerate()
        .map(|(i, s)| (i as u32, s.to_string()))
        .collect();
    let got = pool.map(pair, &args, 2).unwrap().to_vec();
    for (i, r) in got.iter().enumerate() {
        if i == 2 || i == 3 {
            assert!(
                matches!(r, Err(TaskError::WorkerDied { index, .. }) if *index == i),
                "item {i}: {r:?}"
            );
        } else {
            let (n, s) = &args[i];
            assert_eq!(r, &Ok((s.len() as u32 + n, format!("{s}{n}"))), "item {i}");
        }
    }
    assert_eq!(pool.take_events().len(), 1, "one worker replaced");

    let h = pool.apply_async(shout, "posix".to_string()).unwrap();
    assert_eq!(pool.get(&h, None).unwrap(), Some(Ok("POSIX".to_string())));
    let e = pool.map(foreign, &words, 0).unwrap_err();
    assert!(e.to_string().contains("another registry"), "{e}");
    pool.close();
    let statuses = pool.join().unwrap();
    assert!(statuses.iter().all(|(_, s)| s.success()), "{statuses:?}");
}
