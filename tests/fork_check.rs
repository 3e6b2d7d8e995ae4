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
//!   wait for the result instead of panicking; with 30 days, longer than
//!   one poll(2) takes, a poll that returns 0 early is no timeout.
//! - A typed pool on real workers: strings and tuples in and out, an item
//!   whose worker dies reported alone, a handle from another registry
//!   refused.
//! - A worker that writes a bad result frame (a length over the limit) is
//!   killed and replaced, its task alone failing with bad data; one that
//!   stops in the middle of a frame keeps no `get` past its timeout.
//! - Batches of 4 KiB to 1 MiB cross through the worker's arena, not the
//!   pipes (the worker's and the parent's read(2) byte counts show it),
//!   with every result right, larger ones through the pipe; a worker that
//!   dies in the middle of an arena batch loses that batch alone, and its
//!   replacement, then the replacement's, cross their own arenas (the
//!   spare, then the one freed when the dead worker was reaped); a worker that sends a forged note (a slot its
//!   batch did not use, no such slot, more than an area) is killed and
//!   replaced, that task alone failing with bad data.
//! - With SIGCHLD ignored, a child's wait reports its status lost (ECHILD),
//!   without hanging and without signalling anyone; and a `Child` whose pid
//!   the kernel has reaped and handed to another process never signals
//!   that process (tested in a pid namespace of its own, as root).
//! - A forked copy of a thread handle joins no thread of the child (glibc
//!   recycles the finished thread's descriptor there).
//! - A forked copy of a running spawn refuses to wait (its pipe ends were
//!   closed in the child; their numbers may name the child's own files).
//! - A child forked while a spawn's pipes are open (held by this thread,
//!   or by another thread in the middle of its run) keeps no copy of them,
//!   so the spawn finishes while that unrelated child still sleeps.
//! - Python's exit for `Process`es: `join_children` terminates daemons
//!   and waits for the others, held or dropped; a `Process` closure that
//!   returns does the same for its own children; a daemon may not start
//!   children; `kill_on_drop` kills; a forked child never touches the
//!   `Process`es it inherited.
//! - A start after a reaped `Process` was dropped reuses its entry: the
//!   new one has its own name, pid and status, a handle still held keeps
//!   its own, and a dropped, unreaped one is still joined at the end.

use std::sync::mpsc;
use std::time::Duration;

use nix::errno::Errno::ECHILD;
use nix::sys::signal::Signal;
use nix::unistd::Pid;

use posixkit::ErrorKind;
use posixkit::pool::{Pool, Registry, TaskError, Wire};
use posixkit::process::{self, Builder, Children, Fork};
use posixkit::spawn::Spawn;
use posixkit::status::Status;

fn main() {
    match std::env::args().nth(1).as_deref() {
        Some(PID_REUSE_ARG) => std::process::exit(pid_reuse_in_namespace()),
        Some(QUEUE_FIRST_ARG) => {
            // A fresh process whose first use of the fork-wiped page is the
            // queue lock's: then a pool, and a fork.
            let name = format!("/pk-fork-check-{}", std::process::id());
            let q = posixkit::queue::Queue::create(&name, 4, 16).unwrap();
            q.put(b"x").unwrap();
            assert_eq!(q.get().unwrap(), b"x");
            posixkit::queue::unlink(&name).unwrap();
            a_forked_childs_copy_of_a_pool_leaves_the_workers_alone();
            std::process::exit(0);
        }
        Some(LONG_WAIT_ARG) => std::process::exit(long_waits(
            std::env::args().nth(2).as_deref() == Some("pool"),
        )),
        _ => {}
    }
    fork_right_after_join();
    every_entry_point_refuses_while_a_thread_runs();
    a_panicking_payload_ends_the_child_with_101();
    a_timeout_too_large_for_the_clock_waits_for_ever();
    a_wait_past_what_one_poll_takes_is_no_timeout();
    a_typed_pool_end_to_end();
    a_bad_or_unfinished_result_frame_costs_one_worker_not_the_pool();
    pool_values_are_every_result_or_the_first_error();
    large_batches_cross_the_arena_not_the_pipes();
    a_forged_arena_note_costs_one_worker_not_the_pool();
    an_ignored_sigchld_loses_statuses_and_signals_nobody();
    a_reaped_childs_pid_reused_by_another_process_is_never_signalled();
    a_child_of_a_negative_pid_signals_no_process_group();
    a_forked_copy_of_a_robust_semaphore_gives_back_nothing();
    a_fork_keeps_no_pipe_of_a_running_spawn();
    a_fork_from_another_thread_keeps_no_pipe_of_its_spawn();
    a_forked_copy_of_a_running_spawn_does_no_io_on_its_closed_pipes();
    a_forked_copy_of_a_running_spawn_signals_nothing_when_dropped();
    a_forked_copy_of_a_thread_handle_joins_no_thread_of_the_child();
    a_dropped_process_is_waited_for_not_killed();
    join_children_terminates_daemons_and_joins_the_rest();
    a_process_that_returns_ends_its_daemons_and_waits_for_the_rest();
    a_daemon_may_not_start_children();
    kill_on_drop_kills_and_reaps();
    a_forked_child_leaves_its_parents_processes_alone();
    a_recycled_entry_is_the_new_process_alone();
    a_spawn_resets_only_the_ignored_signals_it_is_asked_to();
    a_pool_joins_while_a_later_child_holds_its_pipes();
    a_forked_childs_copy_of_a_pool_leaves_the_workers_alone();
    a_forked_copy_of_a_pool_is_refused_after_a_queue_lock_too();
    a_handle_of_another_pool_is_refused();
    a_pool_is_refused_while_sigchld_is_ignored();
    a_pool_that_fails_to_start_leaves_no_worker_behind();
    a_pool_wait_ends_when_its_interrupt_descriptor_is_readable();
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

/// `Process::join` and `Pool::get` with 30 days, in a process of its own
/// (run under strace by the check below): 0 when each waited for its
/// result, 1 when one said "timed out".
fn long_waits(pool: bool) -> i32 {
    let month = Duration::from_secs(30 * 86_400);
    if !pool {
        let mut p = Builder::new()
            .start(|| {
                std::thread::sleep(Duration::from_millis(300));
                4
            })
            .unwrap();
        return match p.join(Some(month)).unwrap() {
            Some(Status::Exited(4)) => 0,
            other => {
                eprintln!("join(30 days): {other:?}");
                1
            }
        };
    }
    let mut registry = Registry::new();
    let slow = registry.task("slow", |n: u64| {
        std::thread::sleep(Duration::from_millis(300));
        2 * n
    });
    let mut pool = Pool::new(1, registry).unwrap();
    let h = pool.apply_async(slow, 21).unwrap();
    let r = pool.get(&h, Some(month)).unwrap();
    pool.close();
    pool.join().unwrap();
    if r == Some(Ok(42)) {
        0
    } else {
        eprintln!("get(30 days): {r:?}");
        1
    }
}

fn a_wait_past_what_one_poll_takes_is_no_timeout() {
    // poll(2) waits at most i32::MAX ms (24.8 days): a 30-day wait is cut
    // to that, and its poll returns 0 before the deadline. strace makes
    // the wait's poll return 0 at once, as the kernel would after 24.8
    // days (the second poll: the first is the Rust runtime's look at fds
    // 0 to 2 as it starts). join and get took that 0 for their deadline and said "timed
    // out" while the child or task still ran.
    if std::process::Command::new("strace")
        .arg("-V")
        .output()
        .is_err()
    {
        eprintln!("fork_check: skipped the long waits: strace is not installed");
        return;
    }
    let me = std::env::current_exe().unwrap();
    for which in ["join", "pool"] {
        let out = std::process::Command::new("timeout")
            .args(["-s", "KILL", "30", "strace", "-qq", "-o", "/dev/null"])
            .args(["-e", "trace=poll", "-e", "inject=poll:retval=0:when=2"])
            .arg(&me)
            .args([LONG_WAIT_ARG, which])
            .output()
            .unwrap();
        assert!(out.status.success(), "{which} with 30 days: {out:?}");
    }
}

const LONG_WAIT_ARG: &str = "--long-waits";

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

/// This worker's result pipe, reopened through /proc: the highest
/// descriptor that is a pipe open for writing only, close-on-exec (the
/// pool's pipes are; stdout and stderr are not).
fn my_result_pipe() -> std::fs::File {
    let mut found = None;
    for entry in std::fs::read_dir("/proc/self/fd").unwrap() {
        let entry = entry.unwrap();
        let fd: i32 = entry.file_name().to_str().unwrap().parse().unwrap();
        let is_pipe = std::fs::read_link(entry.path())
            .is_ok_and(|l| l.to_string_lossy().starts_with("pipe:"));
        let flags = std::fs::read_to_string(format!("/proc/self/fdinfo/{fd}"))
            .ok()
            .and_then(|info| {
                let f = info.lines().find_map(|l| l.strip_prefix("flags:"))?;
                u32::from_str_radix(f.trim(), 8).ok()
            })
            .unwrap_or(0);
        if is_pipe && flags & 0o3 == 0o1 && flags & 0o2000000 != 0 {
            found = found.max(Some(fd));
        }
    }
    std::fs::OpenOptions::new()
        .write(true)
        .open(format!("/proc/self/fd/{}", found.expect("a result pipe")))
        .unwrap()
}

fn a_bad_or_unfinished_result_frame_costs_one_worker_not_the_pool() {
    use std::io::Write;
    let mut registry = Registry::new();
    let double = registry.task("double", |n: u64| 2 * n);
    // A result frame that claims 4 GiB.
    let lie = registry.task("lie", |n: u64| {
        my_result_pipe().write_all(&u32::MAX.to_le_bytes()).unwrap();
        n
    });
    // The first bytes of a 100-byte frame, then nothing for a minute.
    let stall = registry.task("stall", |n: u64| {
        let mut pipe = my_result_pipe();
        pipe.write_all(&100u32.to_le_bytes()).unwrap();
        pipe.write_all(b"part").unwrap();
        std::thread::sleep(Duration::from_secs(60));
        n
    });
    let mut pool = Pool::new(2, registry).unwrap();
    let h = pool.apply_async(lie, 1).unwrap();
    match pool.get(&h, Some(Duration::from_secs(30))).unwrap() {
        Some(Err(e @ TaskError::BadResult { .. })) => {
            assert_eq!(e.kind(), ErrorKind::BadData);
            assert!(e.to_string().contains("over the limit"), "{e}");
            assert!(e.to_string().contains("SIGKILL"), "{e}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(pool.take_events().len(), 1, "its worker replaced");
    let got = pool.map(double, &[1, 2, 3], 1).unwrap().to_vec();
    assert_eq!(got, [Ok(2), Ok(4), Ok(6)]);
    let h = pool.apply_async(stall, 1).unwrap();
    assert_eq!(
        pool.get(&h, Some(Duration::from_millis(300))).unwrap(),
        None
    );
    // The other worker still works meanwhile.
    assert_eq!(pool.apply(double, 5).unwrap(), Ok(10));
    pool.terminate().unwrap();
}

/// Bytes this process has read with read(2) and its kin, from
/// /proc/self/io.
fn bytes_read() -> u64 {
    let io = std::fs::read_to_string("/proc/self/io").unwrap();
    io.lines()
        .find_map(|l| l.strip_prefix("rchar: "))
        .unwrap()
        .parse()
        .unwrap()
}

fn large_batches_cross_the_arena_not_the_pipes() {
    let mut registry = Registry::new();
    let square = registry.task("square", |n: u64| {
        if n == 4_321 {
            let _ = process::die_of(posixkit::nix::sys::signal::Signal::SIGKILL);
        }
        n.wrapping_mul(n)
    });
    let read = registry.task("read", |_: u64| bytes_read());
    let mut pool = Pool::new(1, registry).unwrap();
    // Bytes the worker and the parent read through the pipes while they
    // map `args` in chunks of `chunk`; every result checked.
    let map = |pool: &mut Pool, args: &[u64], chunk: usize| {
        let worker = pool.apply(read, 0).unwrap().unwrap();
        let parent = bytes_read();
        let got = pool.map(square, args, chunk).unwrap().values().unwrap();
        let parent = bytes_read() - parent;
        let worker = pool.apply(read, 0).unwrap().unwrap() - worker;
        assert!(got.iter().zip(args).all(|(r, x)| *r == x * x));
        (worker, parent)
    };
    // 40 batches of 1 000 items: 8 KiB of arguments and of results each.
    // Through the pipes that would be 320 KiB each way; through the arena
    // each batch is a 16-byte note (plus /proc/self/io itself).
    let small: Vec<u64> = (10_000..50_000).collect();
    let (worker, parent) = map(&mut pool, &small, 1_000);
    assert!(worker < 8 * 1024, "the worker read {worker} bytes");
    assert!(parent < 8 * 1024, "the parent read {parent} bytes");

    // Batches over an area (1 MiB) go through the pipe, and still come back.
    let big: Vec<u64> = (10_000..310_000).collect();
    let (worker, parent) = map(&mut pool, &big, 150_000);
    assert!(worker > 2_400_000, "the worker read {worker} bytes");
    assert!(parent > 2_400_000, "the parent read {parent} bytes");

    // The worker dies in the middle of the batch of items 4 000..5 000:
    // that batch alone is lost. Twice: the first replacement takes the
    // spare arena, the second the arena of the first dead worker, freed
    // when it was reaped; each one's batches cross its arena.
    let args: Vec<u64> = (0..20_000).collect();
    for round in 0..2 {
        let got = pool.map(square, &args, 1_000).unwrap().to_vec();
        for (i, r) in got.iter().enumerate() {
            if (4_000..5_000).contains(&i) {
                assert!(
                    matches!(r, Err(TaskError::WorkerDied { index, .. }) if *index == i),
                    "item {i}: {r:?}"
                );
            } else {
                assert_eq!(r, &Ok(args[i] * args[i]), "item {i}");
            }
        }
        assert_eq!(pool.take_events().len(), 1, "one worker replaced");
        let (worker, parent) = map(&mut pool, &small, 1_000);
        assert!(
            worker < 8 * 1024,
            "round {round}: the worker read {worker} bytes"
        );
        assert!(
            parent < 8 * 1024,
            "round {round}: the parent read {parent} bytes"
        );
    }
    pool.close();
    let statuses = pool.join().unwrap();
    assert!(statuses.iter().all(|(_, s)| s.success()), "{statuses:?}");
}

fn a_forged_arena_note_costs_one_worker_not_the_pool() {
    use std::io::Write;
    // A note frame: length 12, then "PKar", a slot, a length.
    fn note(slot: u32, len: u32) -> Vec<u8> {
        let mut f = 12u32.to_le_bytes().to_vec();
        f.extend_from_slice(b"PKar");
        f.extend_from_slice(&slot.to_le_bytes());
        f.extend_from_slice(&len.to_le_bytes());
        f
    }
    let mut registry = Registry::new();
    let double = registry.task("double", |n: u64| 2 * n);
    // Its batch is small, so it went through the pipe: slot 0 is not its.
    let forge = registry.task("forge", |kind: u64| {
        let frame = match kind {
            0 => note(0, 16),
            1 => note(9, 16),
            _ => note(0, (1 << 20) + 1),
        };
        my_result_pipe().write_all(&frame).unwrap();
        kind
    });
    let mut pool = Pool::new(2, registry).unwrap();
    for (kind, why) in [
        (0, "a slot its batch did not use"),
        (1, "names no slot"),
        (2, "over an area"),
    ] {
        match pool.apply(forge, kind).unwrap() {
            Err(e @ TaskError::BadResult { .. }) => {
                assert_eq!(e.kind(), ErrorKind::BadData);
                assert!(e.to_string().contains(why), "{e}");
                assert!(e.to_string().contains("SIGKILL"), "{e}");
            }
            other => panic!("forge {kind}: {other:?}"),
        }
        assert_eq!(pool.take_events().len(), 1, "its worker replaced");
        let args: Vec<u64> = (0..4_000).collect();
        let got = pool.map(double, &args, 1_000).unwrap().values().unwrap();
        assert!(got.iter().zip(&args).all(|(r, x)| *r == 2 * x));
    }
    pool.close();
    pool.join().unwrap();
}

/// A result type of 8 bytes whose `get` refuses `u64::MAX`, and every
/// second look at 3 (a `get` that is not deterministic is still safe code).
#[derive(Debug, PartialEq)]
struct Flaky(u64);

impl Wire for Flaky {
    const WIDTH: Option<usize> = Some(8);
    fn size(&self) -> usize {
        8
    }
    fn put(&self, out: &mut [u8]) {
        out.copy_from_slice(&self.0.to_le_bytes());
    }
    fn get(bytes: &[u8]) -> Option<Self> {
        static LOOKS_AT_3: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = u64::from_le_bytes(bytes.try_into().ok()?);
        let refused = n == u64::MAX
            || (n == 3 && LOOKS_AT_3.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % 2 == 1);
        (!refused).then_some(Flaky(n))
    }
}

fn as_flaky(b: [u8; 8]) -> Flaky {
    Flaky(u64::from_le_bytes(b))
}

fn pool_values_are_every_result_or_the_first_error() {
    let mut registry = Registry::new();
    let square = registry.task("square", |n: i64| {
        n.checked_mul(n).ok_or(format!("{n} squared overflows"))
    });
    let shout = registry.task("shout", |s: String| s.to_uppercase());
    let flaky = registry.task("flaky", Flaky);
    let as_flaky = registry.task("as_flaky", as_flaky);
    let pair = registry.task("pair", |n: u32| {
        if n == 5 {
            let _ = process::die_of(posixkit::nix::sys::signal::Signal::SIGKILL);
        }
        n
    });
    let mut pool = Pool::new(2, registry).unwrap();

    // Packed results, several chunks: all of them, in order, and the
    // Vec is reused.
    let args: Vec<i64> = (0..1000).collect();
    let got = pool.map(square, &args, 64).unwrap();
    let want: Vec<i64> = args.iter().map(|x| x * x).collect();
    assert_eq!(got.values().unwrap(), want);
    let mut out = vec![7; 3];
    got.values_into(&mut out).unwrap();
    assert_eq!(out, want);

    // Item 700 fails (in the middle of its chunk): its error, and the
    // 700 results before it.
    let mut args = args;
    args[700] = i64::MAX;
    let got = pool.map(square, &args, 64).unwrap();
    let e = got.values_into(&mut out).unwrap_err();
    assert!(
        matches!(&e, TaskError::Failed { index: 700, message, .. } if message.contains("overflows")),
        "{e:?}"
    );
    assert_eq!(out, want[..700]);

    // Results of several widths go the general way.
    let words: Vec<String> = (0..20).map(|i| "ab".repeat(i % 3)).collect();
    let got = pool.map(shout, &words, 3).unwrap();
    let upper: Vec<String> = words.iter().map(|w| w.to_uppercase()).collect();
    assert_eq!(got.values().unwrap(), upper);

    // A type whose get is not the same every time (it says no to every
    // second look at 3): values_into looks once per item, no panic.
    let got = pool.map(flaky, &(0..8).collect::<Vec<u64>>(), 4).unwrap();
    let mut flakes = Vec::new();
    got.values_into(&mut flakes).unwrap();
    assert_eq!(flakes, (0..8).map(Flaky).collect::<Vec<_>>());
    // A fixed-width type that is not a value for every bytes: an item
    // that is none fails alone, with the results before it kept.
    let mut bytes: Vec<[u8; 8]> = (10..18u64).map(|n| n.to_le_bytes()).collect();
    bytes[5] = [0xff; 8];
    let got = pool.map(as_flaky, &bytes, 4).unwrap();
    let e = got.values_into(&mut flakes).unwrap_err();
    assert!(
        matches!(&e, TaskError::Failed { index: 5, message, .. } if message.contains("not a")),
        "{e:?}"
    );
    assert_eq!(flakes, (10..15).map(Flaky).collect::<Vec<_>>());

    // Item 5's worker dies: its chunk (4 and 5) is lost; the first error
    // is item 4's.
    let got = pool.map(pair, &(0..8).collect::<Vec<u32>>(), 2).unwrap();
    let e = got.values_into(&mut Vec::new()).unwrap_err();
    assert!(matches!(e, TaskError::WorkerDied { index: 4, .. }), "{e:?}");
    pool.close();
    pool.join().unwrap();
}

/// A child that ends once the parent has closed its end of a pipe: the
/// closure owns the write end, and the parent drops the closure unused
/// when the fork returns, after SIGCHLD is ignored again.
fn ends_after_fork_returns(code: i32) -> impl FnOnce() -> i32 {
    let (r, w) = nix::unistd::pipe().unwrap();
    move || {
        drop(w);
        let _ = nix::unistd::read(&r, &mut [0u8]);
        code
    }
}

fn an_ignored_sigchld_loses_statuses_and_signals_nobody() {
    use nix::sys::signal::Signal;
    process::ignore(Signal::SIGCHLD).unwrap();
    let mut group = Children::new();
    // One that may end within the fork itself (then a zombie that keeps
    // its status), and one that surely ends after it (reaped by the kernel).
    group.start("quick", || 3).unwrap();
    group.start("late", ends_after_fork_returns(4)).unwrap();
    assert!(
        group.iter().all(|c| c.pidfd().is_some()),
        "a pidfd is taken when the kernel reaps"
    );
    // The wait lasts until the child has ended, then says its status is lost.
    let e = group.wait_all().unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Os, "{e}");
    assert!(e.to_string().contains("its exit status is lost"), "{e}");
    for (i, child) in group.iter_mut().enumerate() {
        match child.wait() {
            Ok(status) => assert_eq!((i, status), (0, Status::Exited(3))),
            Err(e) => assert!(
                e.to_string().contains("reaped before its status was read"),
                "{e}"
            ),
        }
        // Nothing to signal any more, and no error for trying.
        child.signal(Signal::SIGKILL).unwrap();
    }
    let mut p = Builder::new().start(ends_after_fork_returns(5)).unwrap();
    let e = p.join(Some(Duration::from_secs(30))).unwrap_err();
    assert!(e.to_string().contains("its exit status is lost"), "{e}");
    p.kill().unwrap();
    drop(group);
    drop(p);
    process::restore_default(Signal::SIGCHLD).unwrap();
    // With SIGCHLD back to its default, statuses are kept again.
    let mut group = Children::new();
    group.start("after", || 6).unwrap();
    assert!(
        group.get(0).unwrap().pidfd().is_none(),
        "no descriptor needed"
    );
    assert_eq!(
        group.wait_all().unwrap().map(|(_, s)| s),
        Some(Status::Exited(6))
    );
}

/// A `RobustSemaphore` handle copied into a forked child holds none of
/// its parent's slots (the kernel copies no undo to a child): the child's
/// release is refused and changes nothing, so a semaphore of 1 still lets
/// no one else in. The copy used to say it held the parent's slot.
fn a_forked_copy_of_a_robust_semaphore_gives_back_nothing() {
    use posixkit::sem::{Deadline, RobustSemaphore, robust::Taken};
    let name = format!("/pk-fork-check-{}", std::process::id());
    let s = RobustSemaphore::create(&name, 1).unwrap();
    assert_eq!(s.acquire_until(Deadline::Never).unwrap(), Taken::Yes);
    match process::fork().unwrap() {
        Fork::Child => {
            let refused = s
                .release()
                .is_err_and(|e| e.kind() == ErrorKind::InvalidInput);
            let other = RobustSemaphore::open(&name).unwrap();
            let kept_out = other.acquire_until(Deadline::Now).unwrap() == Taken::TimedOut;
            process::_exit(if refused && kept_out { 0 } else { 1 });
        }
        Fork::Parent(pid) => {
            assert_eq!(process::waitpid(pid).unwrap(), Status::Exited(0));
        }
    }
    s.release().unwrap();
    assert_eq!(s.value_and_free().unwrap(), (1, 1));
    RobustSemaphore::unlink(&name).unwrap();
}

/// A `Child` made from a pid of 0 or less names no child: kill(2) would
/// take it for a process group (or every process), so its signal is an
/// error and reaches nobody, and its wait (its drop's too) is an error
/// that reaps nothing. Here -G, G being the group of a sleep that must die
/// of this test's SIGKILL, not of the SIGTERM, and be reaped by it.
fn a_child_of_a_negative_pid_signals_no_process_group() {
    use std::os::unix::process::{CommandExt, ExitStatusExt};
    let mut sleep = std::process::Command::new("sleep")
        .arg("60")
        .process_group(0)
        .spawn()
        .unwrap();
    let group = Pid::from_raw(-(sleep.id() as i32));
    let mut child = process::Child::new(group);
    let err = child.signal(Signal::SIGTERM).unwrap_err();
    assert_eq!(err.errno(), Some(nix::errno::Errno::EINVAL), "{err}");
    let err = child.try_wait().unwrap_err();
    assert_eq!(err.errno(), Some(nix::errno::Errno::EINVAL), "{err}");
    drop(child);
    sleep.kill().unwrap();
    assert_eq!(sleep.wait().unwrap().signal(), Some(libc::SIGKILL));
}

/// In a new pid namespace (so that pids are handed out in order, and this
/// test alone hands them out): fork a child with SIGCHLD ignored, let the
/// kernel reap it, start `sleep` on the very same pid, then drop the
/// `Child`. The sleep must not get the drop's SIGKILL: it dies of the
/// SIGTERM this test sends it afterwards.
fn a_reaped_childs_pid_reused_by_another_process_is_never_signalled() {
    if !nix::unistd::geteuid().is_root() {
        println!("fork_check: skipped the pid-reuse check: needs root for a pid namespace");
        return;
    }
    // This binary again, as pid 1 of a new pid namespace (unshare(1)).
    let me = std::env::current_exe().unwrap();
    let status = std::process::Command::new("unshare")
        .args(["--pid", "--fork"])
        .arg(me)
        .arg(PID_REUSE_ARG)
        .status();
    match status.map(|s| s.code()) {
        Ok(Some(0)) => {}
        Ok(Some(SKIP)) => {
            println!("fork_check: skipped the pid-reuse check: no pid could be reused")
        }
        Ok(Some(1)) | Err(_) => {
            println!("fork_check: skipped the pid-reuse check: no pid namespace here (unshare)")
        }
        other => panic!("the pid-reuse check failed: {other:?}"),
    }
}

/// The argument that makes this binary run [`pid_reuse_in_namespace`].
const PID_REUSE_ARG: &str = "--pid-reuse-in-namespace";

const SKIP: i32 = 77;

/// The check itself, as pid 1 of a fresh pid namespace. Exit 0 when the
/// reused pid's process was left alone, 2 when it was killed, 77 when the
/// pid could not be reused (1, unshare's own failure, is a skip too).
fn pid_reuse_in_namespace() -> i32 {
    use nix::sys::signal::Signal;
    process::ignore(Signal::SIGCHLD).unwrap();
    let mut group = Children::new();
    // It ends after the fork has returned, so the kernel reaps it.
    let first = group.start("first", ends_after_fork_returns(0)).unwrap();
    // Wait until it has ended; the kernel has reaped it at once.
    let pidfd = group.get(0).unwrap().pidfd().expect("a pidfd");
    let mut fds = [nix::poll::PollFd::new(pidfd, nix::poll::PollFlags::POLLIN)];
    nix::poll::poll(&mut fds, nix::poll::PollTimeout::NONE).unwrap();
    // The drop of the reaped child's handle must signal nobody.
    let first_left_alone = on_reused_pid(first, || drop(group));
    if first_left_alone != 0 {
        return first_left_alone;
    }
    // The same for a spawned program, whose handle signals by pid when it
    // holds no pidfd.
    process::ignore(Signal::SIGCHLD).unwrap();
    let running = Spawn::new(["true"]).unwrap().start().unwrap();
    let pid = running.pid();
    let spawn_left_alone = on_reused_pid(pid, || drop(running));
    if spawn_left_alone != 0 {
        return spawn_left_alone;
    }
    // A spawned program started while SIGCHLD was at its default (its
    // `Child` then holds no pidfd), reaped by the kernel once SIGCHLD is
    // ignored, its pid taken by another child of ours: a wait with a
    // deadline must say the status is lost, not watch (nor reap) the new
    // process until the deadline, and the drop must not signal it. A
    // pidfd opened by pid at that wait would name the new process.
    let mut running = Spawn::new(["sleep", "0.2"]).unwrap().start().unwrap();
    process::ignore(Signal::SIGCHLD).unwrap();
    let pid = running.pid();
    let mut waited = None;
    let late_left_alone = on_reused_pid(pid, || {
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        waited = Some(running.wait_event(Some(deadline), None));
        drop(running);
    });
    match waited {
        _ if late_left_alone != 0 => late_left_alone,
        Some(Err(e)) if e.to_string().contains("its exit status is lost") => 0,
        other => {
            eprintln!("fork_check: a late pidfd watched the pid's new process: {other:?}");
            3
        }
    }
}

/// In [`pid_reuse_in_namespace`], once `pid` has ended with SIGCHLD
/// ignored: wait until the kernel has freed it, start `sleep` on the very
/// same pid, run `then` (the drop of the handle of the process that had
/// it), and check that the sleep was left alone. 0 when it was, 2 when it
/// was killed, [`SKIP`] when the pid could not be reused.
fn on_reused_pid(pid: process::Pid, then: impl FnOnce()) -> i32 {
    use nix::sys::signal::{Signal, kill};
    use std::os::unix::process::ExitStatusExt;
    // The pidfd says "ended" a moment before the kernel frees the pid.
    while kill(pid, None).is_ok() {
        std::thread::sleep(Duration::from_millis(1));
    }
    // And the number is free a moment after a lookup stops finding it
    // (recent kernels free it outside the lock the lookup takes).
    std::thread::sleep(Duration::from_millis(20));
    process::restore_default(Signal::SIGCHLD).unwrap();
    // The next pid handed out in this namespace is the reaped child's.
    let last = pid.as_raw() - 1;
    if std::fs::write("/proc/sys/kernel/ns_last_pid", last.to_string()).is_err() {
        return SKIP;
    }
    let mut sleep = std::process::Command::new("sleep")
        .arg("60")
        .spawn()
        .unwrap();
    if sleep.id() as i32 != pid.as_raw() {
        let _ = sleep.kill();
        let _ = sleep.wait();
        return SKIP;
    }
    then();
    // (Gone already, killed and reaped by `then`: ESRCH.)
    let sent = kill(process::Pid::from_raw(sleep.id() as i32), Signal::SIGTERM);
    match sleep.wait().map(|s| s.signal()) {
        _ if sent.is_err() => 2,
        Ok(Some(15)) => 0,
        _ => 2,
    }
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

fn a_forked_copy_of_a_running_spawn_does_no_io_on_its_closed_pipes() {
    // The fork closed the child's copies of the spawn's pipe ends; the
    // numbers go to the next files the child opens. A wait through the
    // inherited Running used to feed the spawn's input into such a file.
    let mut running = Spawn::new(["sleep", "2"])
        .unwrap()
        .input(b"SPAWN-INPUT".repeat(1000))
        .capture(true)
        .start()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    match process::fork().unwrap() {
        Fork::Child => {
            let files: Vec<std::fs::File> = (0..3)
                .map(|i| std::fs::File::create(dir.path().join(format!("f{i}"))).unwrap())
                .collect();
            let refused = running
                .wait_event(
                    Some(std::time::Instant::now() + Duration::from_millis(300)),
                    None,
                )
                .is_err();
            let clean = (0..3).all(|i| {
                std::fs::metadata(dir.path().join(format!("f{i}"))).is_ok_and(|m| m.len() == 0)
            });
            drop(files);
            std::mem::forget(running);
            process::_exit(if refused && clean { 0 } else { 1 });
        }
        Fork::Parent(pid) => {
            let st = process::waitpid(pid).unwrap();
            assert_eq!(st, Status::Exited(0), "the copy wrote or waited");
        }
    }
    running.signal(Signal::SIGKILL).unwrap();
    running.abandon_output();
    let _ = running.wait();
}

/// A forked child's copy of a running spawn, dropped there (the child
/// ends its scope normally), leaves the program alone: it is the
/// parent's. A wait with a deadline had opened the spawn's pidfd, and
/// the copy's drop used to SIGKILL the program through it.
fn a_forked_copy_of_a_running_spawn_signals_nothing_when_dropped() {
    use std::time::Instant;
    for group in [false, true] {
        let mut running = Spawn::new(["sleep", "30"])
            .unwrap()
            .process_group(group)
            .capture(true)
            .start()
            .unwrap();
        let first = running
            .wait_event(Some(Instant::now() + Duration::from_millis(20)), None)
            .unwrap();
        assert_eq!(first, posixkit::spawn::Event::Deadline);
        match process::fork().unwrap() {
            Fork::Child => {
                drop(running);
                process::_exit(0);
            }
            Fork::Parent(pid) => {
                assert_eq!(process::waitpid(pid).unwrap(), Status::Exited(0));
            }
        }
        // Still running: only this process's SIGTERM ends it.
        let later = running
            .wait_event(Some(Instant::now() + Duration::from_millis(300)), None)
            .unwrap();
        assert_eq!(later, posixkit::spawn::Event::Deadline, "group {group}");
        running.signal(Signal::SIGTERM).unwrap();
        assert_eq!(
            running.wait().unwrap(),
            Status::Signaled {
                signal: Signal::SIGTERM as i32,
                core_dumped: false
            },
            "group {group}"
        );
    }
}

fn a_forked_copy_of_a_thread_handle_joins_no_thread_of_the_child() {
    // T1 has finished but is not joined when the process forks. In the
    // child glibc recycles T1's descriptor for the child's next thread,
    // T2: the copy of T1's handle joined T2 (waiting for it, reaping it),
    // and T2's own handle then joined a freed descriptor.
    let t1 = posixkit::thread::spawn("T1", || 1).unwrap();
    while t1.is_alive() {
        std::thread::sleep(Duration::from_millis(1));
    }
    std::thread::sleep(Duration::from_millis(50));
    match process::fork().unwrap() {
        Fork::Child => {
            let t2 = posixkit::thread::spawn("T2", || {
                std::thread::sleep(Duration::from_millis(300));
                2
            })
            .unwrap();
            let refused = t1.join().is_err();
            let t2_alive = t2.is_alive();
            let t2_joined = t2.join().ok() == Some(2);
            process::_exit(if refused && t2_alive && t2_joined {
                0
            } else {
                1
            });
        }
        Fork::Parent(pid) => {
            let st = process::waitpid(pid).unwrap();
            assert_eq!(st, Status::Exited(0), "the copy joined the child's thread");
        }
    }
    assert_eq!(t1.join().unwrap(), 1);
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

/// Block until a signal ends this process.
fn pause_forever() -> ! {
    loop {
        nix::unistd::pause();
    }
}

fn a_dropped_process_is_waited_for_not_killed() {
    let (r, w) = posixkit::pipe::pipe().unwrap();
    let p = Builder::new()
        .name("dropped")
        .start(move || {
            // Still running when its handle is dropped: it ends only
            // after a word from the parent.
            let mut b = [0u8; 1];
            let _ = r.read_full(&mut b);
            7
        })
        .unwrap();
    let pid = p.pid();
    drop(p);
    // Not killed by the drop: it is still there to hear the word.
    w.write_all(b"x").unwrap();
    let joined = process::join_children().unwrap();
    assert_eq!(joined.len(), 1, "{joined:?}");
    assert_eq!(
        (joined[0].name.as_str(), joined[0].pid, joined[0].daemon),
        ("dropped", pid, false)
    );
    assert_eq!(
        joined[0].status,
        Status::Exited(7),
        "waited for, not killed"
    );
    assert!(process::join_children().unwrap().is_empty(), "reaped once");
}

fn join_children_terminates_daemons_and_joins_the_rest() {
    let mut daemon = Builder::new()
        .name("d")
        .daemon(true)
        .start(|| pause_forever())
        .unwrap();
    let mut worker = Builder::new()
        .name("w")
        .start(|| {
            std::thread::sleep(Duration::from_millis(100));
            0
        })
        .unwrap();
    assert!(daemon.daemon() && !worker.daemon());
    let joined = process::join_children().unwrap();
    let got: Vec<(&str, bool, Status)> = joined
        .iter()
        .map(|j| (j.name.as_str(), j.daemon, j.status))
        .collect();
    assert_eq!(
        got,
        [
            (
                "d",
                true,
                Status::Signaled {
                    signal: 15,
                    core_dumped: false
                }
            ),
            ("w", false, Status::Exited(0)),
        ]
    );
    // The held handles see the statuses, as Python's exitcode does.
    assert_eq!((daemon.exitcode(), worker.exitcode()), (Some(-15), Some(0)));
    assert!(!daemon.is_alive().unwrap());
    assert_eq!(worker.join(None).unwrap(), Some(Status::Exited(0)));
}

fn a_process_that_returns_ends_its_daemons_and_waits_for_the_rest() {
    // `daemon_w` is held by the daemon only (the parent's copy is closed
    // before it returns): end of file on `daemon_r` means the daemon died.
    let (daemon_r, daemon_w) = posixkit::pipe::pipe().unwrap();
    let (helper_r, helper_w) = posixkit::pipe::pipe().unwrap();
    let mut parent = Builder::new()
        .name("parent")
        .start(move || {
            let d = Builder::new().name("daemon").daemon(true).start(|| {
                let _keep = &daemon_w;
                pause_forever()
            });
            drop(daemon_w);
            let h = Builder::new().name("helper").start(|| {
                std::thread::sleep(Duration::from_millis(100));
                let _ = helper_w.write_all(b"h");
                0
            });
            drop(helper_w);
            // Return with both running (the handles are dropped here).
            if d.is_ok() && h.is_ok() { 0 } else { 1 }
        })
        .unwrap();
    // (The closure, with both write ends, was dropped unused here.)
    assert_eq!(
        parent.join(Some(Duration::from_secs(30))).unwrap(),
        Some(Status::Exited(0)),
        "the parent returned and ended: its daemon was terminated"
    );
    // The helper wrote before the parent ended, since the parent waited:
    // its word is there now, without waiting.
    use std::os::fd::AsFd;
    let mut fds = [nix::poll::PollFd::new(
        helper_r.as_fd(),
        nix::poll::PollFlags::POLLIN,
    )];
    assert_eq!(
        nix::poll::poll(&mut fds, nix::poll::PollTimeout::ZERO).unwrap(),
        1,
        "the helper was joined"
    );
    let mut b = [0u8; 2];
    assert_eq!(helper_r.read_full(&mut b).unwrap(), 1);
    // End of file (within a minute, not for ever if the daemon lived on).
    let mut fds = [nix::poll::PollFd::new(
        daemon_r.as_fd(),
        nix::poll::PollFlags::POLLIN,
    )];
    let minute = nix::poll::PollTimeout::try_from(60_000).unwrap();
    assert_eq!(
        nix::poll::poll(&mut fds, minute).unwrap(),
        1,
        "the daemon is gone"
    );
    assert_eq!(daemon_r.read_full(&mut b).unwrap(), 0, "the daemon is gone");
}

fn a_daemon_may_not_start_children() {
    assert!(!process::is_daemon());
    let mut d = Builder::new()
        .daemon(true)
        .start(|| {
            let refused = Builder::new().start(|| 0).map(drop).unwrap_err();
            match (process::is_daemon(), refused.kind()) {
                (true, ErrorKind::DaemonicParent)
                    if refused
                        .to_string()
                        .contains("daemonic processes are not allowed to have children") =>
                {
                    42
                }
                _ => 1,
            }
        })
        .unwrap();
    assert_eq!(d.join(None).unwrap(), Some(Status::Exited(42)));
}

fn kill_on_drop_kills_and_reaps() {
    let p = Builder::new()
        .kill_on_drop(true)
        .start(|| pause_forever())
        .unwrap();
    let pid = p.pid();
    drop(p);
    // Killed and reaped by the drop: the pid names nothing now, and there
    // is nothing left to join.
    assert_eq!(
        nix::sys::signal::kill(pid, None),
        Err(nix::errno::Errno::ESRCH)
    );
    assert!(process::join_children().unwrap().is_empty());
}

fn a_forked_child_leaves_its_parents_processes_alone() {
    let mut sleeper = Builder::new()
        .name("sleeper")
        .start(|| pause_forever())
        .unwrap();
    let mut check = Builder::new()
        .name("check")
        .start(|| {
            // The parent's registry (with `sleeper` in it) is not ours:
            // nothing to join, and our own start and join see only ours.
            let inherited = process::join_children().map(|j| j.len());
            let own = Builder::new().start(|| 5).map(drop);
            let joined = process::join_children().unwrap_or_default();
            let statuses: Vec<Status> = joined.iter().map(|j| j.status).collect();
            // Our copy of `sleeper` names our sibling: a kill does
            // nothing, a join or is_alive is ECHILD at once.
            let killed = sleeper.kill();
            let waited = sleeper
                .join(Some(Duration::from_millis(100)))
                .err()
                .and_then(|e| e.errno())
                == Some(ECHILD)
                && sleeper.is_alive().err().and_then(|e| e.errno()) == Some(ECHILD);
            match (inherited, own, statuses.as_slice(), killed, waited) {
                (Ok(0), Ok(()), [Status::Exited(5)], Ok(()), true) => 0,
                _ => 1,
            }
        })
        .unwrap();
    assert_eq!(check.join(None).unwrap(), Some(Status::Exited(0)));
    // The child's kill, and drop of its copy of `sleeper` (in the
    // closure's captures) and its exit left it running.
    assert_eq!(
        sleeper.join(Some(Duration::from_millis(200))).unwrap(),
        None
    );
    assert!(sleeper.is_alive().unwrap());
    sleeper.kill().unwrap();
    assert_eq!(sleeper.exitcode(), None);
    sleeper.join(None).unwrap();
    assert_eq!(sleeper.exitcode(), Some(-9));
}

fn a_recycled_entry_is_the_new_process_alone() {
    // Reaped and dropped: its entry is kept for the next start.
    let mut first = Builder::new().name("first").start(|| 3).unwrap();
    assert_eq!(first.join(None).unwrap(), Some(Status::Exited(3)));
    let first_pid = first.pid();
    drop(first);
    // Reaped and held: its entry is its own.
    let mut held = Builder::new().name("held".to_string()).start(|| 4).unwrap();
    assert_eq!(held.join(None).unwrap(), Some(Status::Exited(4)));
    let (r, w) = posixkit::pipe::pipe().unwrap();
    let mut next = Builder::new()
        .name("next")
        .start(move || {
            let mut b = [0u8; 1];
            let _ = r.read_full(&mut b);
            5
        })
        .unwrap();
    assert_eq!(next.name(), "next");
    assert_ne!(next.pid(), first_pid);
    assert_eq!(next.exitcode(), None, "no status of the entry's last child");
    assert!(next.is_alive().unwrap());
    w.write_all(b"x").unwrap();
    assert_eq!(next.join(None).unwrap(), Some(Status::Exited(5)));
    assert_eq!((held.name(), held.exitcode()), ("held", Some(4)));
    // Dropped before it was reaped: join_children still finds it, after
    // the entry of `next` went back to the spare.
    drop(next);
    let late = Builder::new().name("late").start(|| 6).unwrap();
    let late_pid = late.pid();
    drop(late);
    let joined = process::join_children().unwrap();
    assert_eq!(joined.len(), 1, "{joined:?}");
    assert_eq!((joined[0].name.as_str(), joined[0].pid), ("late", late_pid));
    assert_eq!(joined[0].status, Status::Exited(6));
}

/// Ignored signals stay ignored in a spawned program (nohup's contract),
/// except those asked for with `default_signal` and a timeout's signal.
/// This harness has one thread, so changing dispositions races nothing.
fn a_spawn_resets_only_the_ignored_signals_it_is_asked_to() {
    use nix::sys::signal::{SigHandler, Signal, signal};
    use posixkit::spawn::Timeout;
    for sig in [Signal::SIGUSR1, Signal::SIGUSR2] {
        // SAFETY: SIG_IGN runs no code; this process has one thread.
        unsafe { signal(sig, SigHandler::SigIgn) }.unwrap();
    }
    // USR2 still ignored, USR1 reset: it dies of USR1, not with 3.
    let out = Spawn::new(["sh", "-c", "kill -USR2 $$; kill -USR1 $$; exit 3"])
        .unwrap()
        .default_signal(Signal::SIGUSR1)
        .run()
        .unwrap();
    assert_eq!(
        out.status,
        Status::Signaled {
            signal: libc::SIGUSR1,
            core_dumped: false
        }
    );
    // Neither reset: it lives through both and exits 3.
    let out = Spawn::new(["sh", "-c", "kill -USR2 $$; kill -USR1 $$; exit 3"])
        .unwrap()
        .run()
        .unwrap();
    assert_eq!(out.status, Status::Exited(3));
    // A timeout's signal is reset without being asked: USR2 ends it.
    let out = Spawn::new(["sh", "-c", "kill -USR1 $$; exec sleep 30"])
        .unwrap()
        .timeout(Timeout::new(Duration::from_millis(200)).signal(Signal::SIGUSR2))
        .run()
        .unwrap();
    assert!(out.timed_out);
    assert_eq!(
        out.status,
        Status::Signaled {
            signal: libc::SIGUSR2,
            core_dumped: false
        }
    );
    // A timeout set twice: only the signal it ends with is reset; USR1,
    // the first one's, stays ignored (it exits 3).
    let out = Spawn::new(["sh", "-c", "kill -USR1 $$; exit 3"])
        .unwrap()
        .timeout(Timeout::new(Duration::from_secs(60)).signal(Signal::SIGUSR1))
        .timeout(Timeout::new(Duration::from_secs(60)).signal(Signal::SIGUSR2))
        .run()
        .unwrap();
    assert_eq!(out.status, Status::Exited(3));
    for sig in [Signal::SIGUSR1, Signal::SIGUSR2] {
        // SAFETY: SIG_DFL runs no code; this process has one thread.
        unsafe { signal(sig, SigHandler::SigDfl) }.unwrap();
    }
}

fn square_registry() -> (Registry, posixkit::pool::Task<i64, i64>) {
    let mut registry = Registry::new();
    let square = registry.task("square", |n: i64| n * n);
    (registry, square)
}

/// A child forked after the pool (a Process here; another pool's worker
/// is the same) inherits the task pipes' write ends: end of file alone
/// would keep the workers, and join, waiting until that child ends.
fn a_pool_joins_while_a_later_child_holds_its_pipes() {
    let (registry, square) = square_registry();
    let mut pool = Pool::new(2, registry).unwrap();
    let (other_registry, _) = square_registry();
    let mut other = Pool::new(1, other_registry).unwrap();
    let mut holder = Builder::new()
        .start(|| {
            std::thread::sleep(Duration::from_secs(600));
            0
        })
        .unwrap();
    assert_eq!(
        pool.map(square, &[1, 2, 3], 1).unwrap().values().unwrap(),
        [1, 4, 9]
    );
    pool.close();
    let statuses = pool.join().unwrap();
    assert!(
        statuses.iter().all(|(_, s)| *s == Status::Exited(0)),
        "{statuses:?}"
    );
    // join came back while the holder still runs.
    assert_eq!(holder.join(Some(Duration::ZERO)).unwrap(), None);
    other.close();
    other.join().unwrap();
    holder.kill().unwrap();
    holder.join(None).unwrap();
}

/// A forked child's copy of a pool shares the workers' pipes: using it is
/// an error, and dropping it (a panic, an early return) leaves the
/// parent's workers alone.
fn a_forked_childs_copy_of_a_pool_leaves_the_workers_alone() {
    let (registry, square) = square_registry();
    let mut pool = Pool::new(2, registry).unwrap();
    match process::fork().unwrap() {
        Fork::Child => {
            let refused = matches!(
                pool.apply(square, 3),
                Err(e) if e.kind() == ErrorKind::InvalidInput && e.to_string().contains("cannot use its copy")
            );
            drop(pool);
            process::_exit(if refused { 0 } else { 1 });
        }
        Fork::Parent(pid) => {
            assert_eq!(process::waitpid(pid).unwrap(), Status::Exited(0));
        }
    }
    assert_eq!(
        pool.map(square, &[1, 2, 3], 1).unwrap().values().unwrap(),
        [1, 4, 9]
    );
    assert!(pool.take_events().is_empty(), "no worker was replaced");
    pool.close();
    pool.join().unwrap();
}

const QUEUE_FIRST_ARG: &str = "--queue-first";

/// The queue lock and the pool's owner check keep their process's number
/// in the same fork-wiped page. With two counters behind it, a child
/// forked after the queue set the page took the number the pool had
/// recorded, used the parent's workers and SIGKILLed them when its copy
/// was dropped. Run in a fresh process, where the queue comes first.
fn a_forked_copy_of_a_pool_is_refused_after_a_queue_lock_too() {
    let out = std::process::Command::new("timeout")
        .args(["-s", "KILL", "60"])
        .arg(std::env::current_exe().unwrap())
        .arg(QUEUE_FIRST_ARG)
        .output()
        .unwrap();
    assert!(out.status.success(), "queue, then pool, then fork: {out:?}");
}

/// Handles carry ids unique among all the pools of the process: another
/// pool's handle names none of this pool's batches.
fn a_handle_of_another_pool_is_refused() {
    let (ra, square_a) = square_registry();
    let (rb, square_b) = square_registry();
    let mut a = Pool::new(1, ra).unwrap();
    let mut b = Pool::new(1, rb).unwrap();
    let ha = a.apply_async(square_a, 7).unwrap();
    let hb = b.apply_async(square_b, 8).unwrap();
    let e = b.get(&ha, None).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput, "{e}");
    let args: Vec<i64> = (0..100).collect();
    let ma = a.map_async(square_a, &args, 100).unwrap();
    assert!(b.get(&ma, None).is_err());
    // Each pool's own results are still there.
    assert_eq!(b.get(&hb, None).unwrap(), Some(Ok(64)));
    assert_eq!(a.get(&ha, None).unwrap(), Some(Ok(49)));
    let r = a.get(&ma, None).unwrap().unwrap();
    assert_eq!(r.get(50), Ok(2500));
    for mut p in [a, b] {
        p.close();
        p.join().unwrap();
    }
}

fn a_pool_is_refused_while_sigchld_is_ignored() {
    use nix::sys::signal::Signal;
    process::ignore(Signal::SIGCHLD).unwrap();
    let (registry, _) = square_registry();
    let e = Pool::new(1, registry).unwrap_err();
    process::restore_default(Signal::SIGCHLD).unwrap();
    assert_eq!(e.kind(), ErrorKind::InvalidInput, "{e}");
    assert!(e.to_string().contains("SIGCHLD"), "{e}");
}

/// This process's children: pid and state (`Z` for a zombie), from /proc.
fn my_children() -> Vec<(i32, char)> {
    let me = std::process::id().to_string();
    let mut children: Vec<(i32, char)> = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| {
            let pid = e.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(e.path().join("stat")).ok()?;
            // After the command name in parentheses: state, then ppid.
            let mut rest = stat.get(stat.rfind(')')? + 2..)?.split(' ');
            let state = rest.next()?.chars().next()?;
            (rest.next()? == me).then_some((pid, state))
        })
        .collect();
    children.sort_unstable();
    children
}

/// A pool whose start fails part-way (no descriptor left for a later
/// worker's pipes) kills and reaps the workers it had already forked:
/// they used to stay as zombies for the life of the process.
fn a_pool_that_fails_to_start_leaves_no_worker_behind() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let before = my_children();
    let (registry, _) = square_registry();
    let open = std::fs::read_dir("/proc/self/fd").unwrap().count() as u64;
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
    // Room for a few workers' pipes, not for 32.
    setrlimit(Resource::RLIMIT_NOFILE, open + 12, hard).unwrap();
    let started = Pool::new(32, registry);
    setrlimit(Resource::RLIMIT_NOFILE, soft, hard).unwrap();
    let e = started.unwrap_err();
    assert_eq!(e.errno(), Some(nix::errno::Errno::EMFILE), "{e}");
    assert_eq!(my_children(), before, "workers left behind");
}

fn a_pool_wait_ends_when_its_interrupt_descriptor_is_readable() {
    // A get for a task that runs for a minute, on a pool told to stop
    // waiting when a pipe is readable: a byte already there ends the wait
    // at once (found by the look before sleeping), and one written by
    // another thread while get sleeps ends it too. Both are Interrupted,
    // and the handle is still good afterwards.
    let mut registry = Registry::new();
    let slow = registry.task("slow", |n: u64| {
        std::thread::sleep(Duration::from_secs(60));
        n
    });
    let mut pool = Pool::new(1, registry).unwrap();
    let (r, w) = nix::unistd::pipe().unwrap();
    let r2 = r.try_clone().unwrap();
    pool.interrupt_on(r);
    let h = pool.apply_async(slow, 1).unwrap();
    nix::unistd::write(&w, b"x").unwrap();
    let t0 = std::time::Instant::now();
    let e = pool.get(&h, None).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Interrupted, "{e}");
    // Drained: the next wait sleeps until the other thread writes.
    nix::unistd::read(&r2, &mut [0u8; 1]).unwrap();
    let writer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(200));
        nix::unistd::write(&w, b"y").unwrap();
    });
    let e = pool.get(&h, Some(Duration::from_secs(30))).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Interrupted, "{e}");
    writer.join().unwrap();
    assert!(
        t0.elapsed() < Duration::from_secs(20),
        "interrupted waits took {:?}",
        t0.elapsed()
    );
    pool.terminate().unwrap();
    pool.join().unwrap();
}
