//! pk-threads: named threads, join, is_alive, daemon vs joined threads.

use crate::common::*;

fn lines(out: &std::process::Output) -> Vec<String> {
    stdout(out).lines().map(String::from).collect()
}

#[test]
fn loop_counts_to_five_while_main_waits_in_join() {
    for args in [&["loop", "--interval", "0"][..], &[][..]] {
        let out = pk("threads").args(args).output().unwrap();
        assert_eq!(out.status.code(), Some(0));
        assert!(out.stderr.is_empty());
        assert_eq!(
            lines(&out),
            [
                "thread MainThread is running...",
                "thread LoopThread is running...",
                "thread LoopThread >>> 1",
                "thread LoopThread >>> 2",
                "thread LoopThread >>> 3",
                "thread LoopThread >>> 4",
                "thread LoopThread >>> 5",
                "thread LoopThread ended.",
                "thread MainThread ended.",
            ],
            "{args:?}"
        );
    }
}

#[test]
fn loop_takes_a_name_and_a_count() {
    let out = pk("threads")
        .args(["loop", "--name", "Counter", "-n", "3", "--interval", "1ms"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        lines(&out),
        [
            "thread MainThread is running...",
            "thread Counter is running...",
            "thread Counter >>> 1",
            "thread Counter >>> 2",
            "thread Counter >>> 3",
            "thread Counter ended.",
            "thread MainThread ended.",
        ]
    );
}

const HEAD: [&str; 4] = [
    "thread MainThread is running...",
    "",
    "thread Worker is_alive=True",
    "thread MainThread ended.",
];

#[test]
fn a_daemon_is_cut_off_when_main_ends() {
    // The worker starts its 30s of work only after main's last line; the
    // process must end long before, and the worker's end never shows.
    for args in [
        &["daemon", "--work", "30s"][..],
        &["daemon", "--no-daemon", "--daemon", "--work", "30s"][..],
    ] {
        let out = pk("threads").args(args).output().unwrap();
        assert_eq!(out.status.code(), Some(0));
        let mut want: Vec<&str> = HEAD.to_vec();
        want[1] = "thread Worker started, daemon=True";
        want.push("exit: daemon thread Worker is not waited for, is_alive=True");
        assert_eq!(lines(&out), want, "{args:?}");
        assert!(out.stderr.is_empty());
    }
}

#[test]
fn a_joined_thread_is_waited_for_before_exit() {
    let out = pk("threads")
        .args(["daemon", "--no-daemon", "--work", "50ms", "--name", "Slow"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        lines(&out),
        [
            "thread MainThread is running...",
            "thread Slow started, daemon=False",
            "thread Slow is_alive=True",
            "thread MainThread ended.",
            "exit: waiting for thread Slow (not a daemon)",
            "thread Slow ended after 50ms of work",
            "exit: thread Slow joined, is_alive=False",
        ]
    );
}

#[test]
fn strace_shows_threads_not_processes() {
    if strace_missing() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("trace");
    let out = assert_cmd::Command::new("strace")
        .args(["-f", "-qq", "-e", "trace=clone,clone3,fork,vfork", "-o"])
        .arg(&log)
        .arg(bin("pk-threads"))
        .args(["loop", "--interval", "0"])
        .timeout(TIMEOUT)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let trace = std::fs::read_to_string(&log).unwrap();
    let clones: Vec<&str> = trace
        .lines()
        .filter(|l| l.contains("clone") || l.contains("fork("))
        .collect();
    assert_eq!(clones.len(), 1, "{trace}");
    assert!(
        clones[0].contains("CLONE_VM") && clones[0].contains("CLONE_THREAD"),
        "{trace}"
    );
}

#[test]
fn bad_input_is_a_one_line_usage_error() {
    let table: &[&[&str]] = &[
        &["loop", "--count", "0"],
        &["loop", "--count", "-1"],
        &["loop", "--count", "1000001"],
        &["loop", "--count", "x"],
        &["loop", "--interval", "soon"],
        &["loop", "--interval", "-1"],
        &["loop", "--name", ""],
        &["loop", "--name", "a\tb"],
        &["loop", "--name", &"x".repeat(65)],
        &["daemon", "--work", "2d"],
        &["daemon", "--work"],
        &["daemon", "--bogus"],
        &["nope"],
        &["--bogus"],
        &["loop", "extra"],
        &["names", "--rename", ""],
        &["names", "--self-name", "a\nb"],
        &["names", "extra"],
        &["timer", "--interval", "2h"],
        &["timer", "--interval", "soon"],
        &["queue", "--workers", "0"],
        &["queue", "--workers", "65"],
        &["queue", "--items", "0"],
        &["queue", "--items", "100001"],
        &["queue", "--work", "11s"],
        &["gil", "--jobs", "0"],
        &["gil", "--jobs", "65"],
        &["gil", "--steps", "0"],
        &["gil", "--steps", "100000000001"],
        &["gil", "--steps", "x"],
    ];
    assert_usage_table("threads", table);
}

#[test]
fn closed_stdout_exits_quietly() {
    let head = assert_quiet_on_closed_stdout("pk-threads loop -n 100000 --interval 0");
    assert_eq!(head, "thread MainThread is running...\n");
    // The queue's workers write most of the lines: they keep working, so
    // that main's join returns and main stops quietly.
    let head = assert_quiet_on_closed_stdout("pk-threads queue -w 4 -n 100000 --work 0");
    assert_eq!(
        head,
        "main: 4 daemon worker threads, then q.put() of 100000 items\n"
    );
}

#[test]
fn help_documents_flags_and_output_lines() {
    assert_help(
        "threads",
        &[],
        &[
            "loop",
            "daemon",
            ">>> 1",
            "is_alive=",
            "exit: ",
            "Exit status",
        ],
    );
    assert_help("threads", &["loop"], &["--name", "--count", "--interval"]);
    assert_help(
        "threads",
        &["daemon"],
        &["--daemon", "--no-daemon", "--work", "--name"],
    );
    // Each demo names the Python call it mirrors.
    assert_help(
        "threads",
        &[],
        &[
            "current_thread().name",
            "get_ident()",
            "t.name = ",
            "threading.Timer",
            "queue.Queue",
            "task_done",
            "q.join()",
            "GIL",
            "gil_threads_speedup_x",
        ],
    );
    assert_help("threads", &["names"], &["--rename", "--self-name"]);
    assert_help("threads", &["timer"], &["--interval", "threading.Timer"]);
    assert_help("threads", &["queue"], &["--workers", "--items", "--work"]);
    assert_help("threads", &["gil"], &["--jobs", "--steps"]);
}

#[test]
fn unnamed_threads_are_thread_n_and_a_running_thread_is_renamed() {
    let out = pk("threads")
        .args(["names", "--rename", "Downloader", "--self-name", "Uploader"])
        .output()
        .unwrap();
    assert_success(&out);
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 10, "{text}");
    // get_ident() and get_native_id() of each thread: the main thread's
    // native id is the pid; every thread's numbers differ.
    let field = |line: &str, key: &str| -> u64 {
        line.split(key)
            .nth(1)
            .unwrap()
            .split(' ')
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    let main = lines[0];
    assert!(
        main.starts_with("thread MainThread: current_thread().name=MainThread get_ident()="),
        "{text}"
    );
    assert_eq!(
        lines[1],
        "started Thread-1, Thread-2, Thread-3 without names (Python 3.11: Thread-N (target))"
    );
    let mut idents = vec![field(main, "get_ident()=")];
    let mut natives = vec![field(main, "get_native_id()=")];
    for (i, line) in lines[2..5].iter().enumerate() {
        let n = i + 1;
        assert!(
            line.starts_with(&format!(
                "thread Thread-{n}: current_thread().name=Thread-{n} get_ident()="
            )),
            "{text}"
        );
        idents.push(field(line, "get_ident()="));
        natives.push(field(line, "get_native_id()="));
    }
    let distinct = |v: &[u64]| v.iter().collect::<std::collections::HashSet<_>>().len();
    assert_eq!(distinct(&idents), 4, "{text}");
    assert_eq!(distinct(&natives), 4, "{text}");
    assert_eq!(
        lines[5..],
        [
            "main: Thread-2 is running (is_alive=True); t.name = 'Downloader'",
            "thread Thread-1: ended, OS name Thread-1",
            "thread Downloader: ended, OS name Downloader",
            "thread Thread-3: current_thread().name = 'Uploader' (renamed itself)",
            "thread Uploader: ended, OS name Uploader",
        ]
    );
}

#[test]
fn main_thread_native_id_is_the_pid() {
    let child = pk_std("threads")
        .arg("names")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id() as i32;
    let out = child.wait_with_output().unwrap();
    assert_success(&out);
    let text = stdout(&out);
    let native = |line: &str| -> i32 {
        line.rsplit("get_native_id()=")
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        native(lines[0]),
        pid,
        "threading.get_native_id() in the main thread"
    );
    for l in &lines[2..5] {
        assert_ne!(native(l), pid, "{l}");
    }
}

#[test]
fn a_timer_fires_once_and_a_cancelled_one_never() {
    let out = pk("threads")
        .args(["timer", "--interval", "20ms"])
        .output()
        .unwrap();
    assert_success(&out);
    assert_eq!(
        stdout(&out),
        "Timer(20ms, hello) started as Thread-1\n\
         thread Thread-1: hello, world\n\
         Thread-1: joined, function ran=True\n\
         Timer(1h, hello) started as Thread-2; cancel() at once\n\
         Thread-2: joined, function ran=False\n"
    );
}

#[test]
fn queue_join_returns_after_every_item_is_done() {
    let out = pk("threads")
        .args(["queue", "--workers", "3", "--items", "40", "--work", "0"])
        .output()
        .unwrap();
    assert_success(&out);
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines[0],
        "main: 3 daemon worker threads, then q.put() of 40 items"
    );
    let join = lines
        .iter()
        .position(|l| l.starts_with("main: q.join() returned"))
        .expect("a join line");
    assert_eq!(
        lines[join],
        "main: q.join() returned: all 40 items done, unfinished_tasks=0"
    );
    // Every item finished exactly once, all before join returned.
    let mut finished: Vec<u32> = lines[..join]
        .iter()
        .filter_map(|l| l.split(": finished item ").nth(1)?.parse().ok())
        .collect();
    finished.sort_unstable();
    assert_eq!(finished, (1..=40).collect::<Vec<_>>(), "{text}");
    let workers: std::collections::HashSet<&str> = lines[..join]
        .iter()
        .filter_map(|l| l.strip_prefix("worker ")?.split(':').next())
        .collect();
    assert!(
        workers
            .iter()
            .all(|w| ["Thread-1", "Thread-2", "Thread-3"].contains(w))
    );
    assert_eq!(lines.len(), join + 2, "{text}");
    assert!(
        lines[join + 1]
            .starts_with("main: q.task_done() once more: task_done: called too many times"),
        "{text}"
    );
}

/// Marsaglia's xorshift64 (13, 7, 17): the demo's job, computed here on
/// its own.
fn xorshift(seed: u64, steps: u64) -> u64 {
    let mut x = seed | 1;
    for _ in 0..steps {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
    }
    x
}

#[test]
fn gil_runs_the_same_jobs_on_threads_of_one_process_and_in_processes() {
    let out = pk("threads")
        .args(["gil", "--jobs", "3", "--steps", "1000"])
        .output()
        .unwrap();
    assert_success(&out);
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[0].contains("jobs=3 steps=1000 per job"), "{text}");
    let value = |l: &str| u64::from_str_radix(l.rsplit("= 0x").next().unwrap(), 16).unwrap();
    let want: Vec<u64> = (1..=3u64)
        .map(|i| xorshift(i.wrapping_mul(0x9E37_79B9_7F4A_7C15), 1000))
        .collect();
    let threads: Vec<&str> = lines
        .iter()
        .copied()
        .filter(|l| l.starts_with("threads: job "))
        .collect();
    let procs: Vec<&str> = lines
        .iter()
        .copied()
        .filter(|l| l.starts_with("processes: job "))
        .collect();
    assert_eq!((threads.len(), procs.len()), (3, 3), "{text}");
    let parent = out_pid(&threads);
    for (i, l) in threads.iter().enumerate() {
        assert_eq!(value(l), want[i], "{l}");
        assert!(
            l.contains(&format!("job {} on thread Thread-", i + 1)),
            "{l}"
        );
    }
    // Threads share one pid; each job's process is another process.
    let mut pids: Vec<i32> = procs
        .iter()
        .enumerate()
        .map(|(i, l)| {
            assert_eq!(value(l), want[i], "{l}");
            pid_after(l, &format!("processes: job {} in process ", i + 1)).unwrap()
        })
        .collect();
    assert!(!pids.contains(&parent));
    pids.dedup();
    assert_eq!(pids.len(), 3);
    for (prefix, python) in [
        (
            "threads: 3 jobs on 3 threads of one process: ",
            "(Python: about 1x)",
        ),
        ("processes: 3 jobs in 3 processes: ", "(Python: about "),
    ] {
        let l = lines.iter().find(|l| l.starts_with(prefix)).expect(prefix);
        assert!(l.contains(", speed-up ") && l.contains(python), "{l}");
    }
    assert!(
        lines
            .last()
            .unwrap()
            .starts_with("why: CPython's GIL lets one thread at a time run Python code")
    );
    assert!(leftovers(&pids).is_empty());
}

/// The one pid every `threads: job` line names.
fn out_pid(lines: &[&str]) -> i32 {
    let pids: std::collections::HashSet<i32> = lines
        .iter()
        .map(|l| pid_after(l.split("(pid ").nth(1).unwrap(), "").unwrap())
        .collect();
    assert_eq!(pids.len(), 1, "{lines:?}");
    *pids.iter().next().unwrap()
}

#[test]
fn the_gil_jobs_compute_what_python_s_peer_computes() {
    // bench/python/peers.py's _spin is the Python side of the gil figures:
    // the same rounds must give the same values.
    let peers = concat!(env!("CARGO_MANIFEST_DIR"), "/bench/python");
    let code = format!(
        "import sys; sys.argv = ['peers']; sys.path.insert(0, '{peers}'); import peers\n\
         print(' '.join(hex(peers._spin(peers._gil_seed(i), 1000)) for i in (1, 2, 3)))"
    );
    let out = assert_cmd::Command::new("python3")
        .arg("-c")
        .arg(&code)
        .timeout(TIMEOUT)
        .output();
    let py = match out {
        Ok(out) if out.status.success() => String::from_utf8(out.stdout).unwrap(),
        _ => {
            eprintln!("skipped: python3 is not available");
            return;
        }
    };
    let ours = pk("threads")
        .args(["gil", "--jobs", "3", "--steps", "1000"])
        .output()
        .unwrap();
    assert_success(&ours);
    let values: Vec<String> = stdout(&ours)
        .lines()
        .filter(|l| l.starts_with("threads: job "))
        .map(|l| {
            let v = u64::from_str_radix(l.rsplit("= 0x").next().unwrap(), 16).unwrap();
            format!("{v:#x}")
        })
        .collect();
    assert_eq!(values.join(" "), py.trim_end());
}
