//! pk-pool: apply_async, map, close/join, and a worker that dies mid-task.

use crate::common::*;

/// The lesson's lines of one task: where its `Run task <i> (<pid>)...`
/// and `Task <i> runs <secs> seconds.` lines are, and the worker's pid.
fn task_lines(lines: &[&str], i: usize) -> (usize, usize, i32) {
    let run: Vec<usize> = (0..lines.len())
        .filter(|&n| lines[n].starts_with(&format!("Run task {i} (")))
        .collect();
    let done: Vec<usize> = (0..lines.len())
        .filter(|&n| {
            lines[n].starts_with(&format!("Task {i} runs ")) && lines[n].ends_with(" seconds.")
        })
        .collect();
    assert_eq!((run.len(), done.len()), (1, 1), "task {i}: {lines:#?}");
    let pid = pid_after(lines[run[0]], &format!("Run task {i} (")).unwrap();
    (run[0], done[0], pid)
}

#[test]
fn demo_is_the_lesson_five_long_tasks_on_pool_4() {
    let out = pk("pool")
        .args([
            "demo",
            "--workers",
            "4",
            "--tasks",
            "5",
            "--task-time",
            "20ms",
        ])
        .output()
        .unwrap();
    assert_success(&out);
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 13, "{text}");
    assert!(pid_after(lines[0], "Parent process ").is_some(), "{text}");
    assert!(lines[0].ends_with('.'));
    assert!(lines.contains(&"Waiting for all subprocesses done..."));
    assert_eq!(lines[12], "All subprocesses done.");
    let mut pids = Vec::new();
    let mut first_done = usize::MAX;
    for i in 0..5 {
        let (run, done, pid) = task_lines(&lines, i);
        assert!(run < done, "task {i} starts before it ends: {text}");
        first_done = first_done.min(done);
        pids.push(pid);
    }
    // Four workers: the fifth task starts only once a worker is free,
    // after some task has finished.
    assert!(task_lines(&lines, 4).0 > first_done, "{text}");
    pids.sort_unstable();
    pids.dedup();
    assert!(pids.len() <= 4, "at most 4 worker processes: {pids:?}");
    assert!(!pids.contains(&pid_after(lines[0], "Parent process ").unwrap()));
    assert!(leftovers(&pids).is_empty(), "no worker outlives join");
}

#[test]
fn tasks_that_finish_out_of_order_print_out_of_order() {
    // --reverse: task i finishes only after task i+1 (a shared counter),
    // so the Task lines come last task first, whatever the timing.
    for _ in 0..2 {
        let out = pk("pool")
            .args([
                "demo",
                "-w",
                "5",
                "-t",
                "5",
                "--task-time",
                "5ms",
                "--reverse",
            ])
            .output()
            .unwrap();
        assert_success(&out);
        let text = stdout(&out);
        let done: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("Task "))
            .map(|l| l.split(' ').nth(1).unwrap())
            .collect();
        assert_eq!(done, ["4", "3", "2", "1", "0"], "{text}");
        assert!(text.ends_with("All subprocesses done.\n"));
    }
}

#[test]
fn a_worker_killed_mid_task_reaches_the_error_callback_and_the_rest_finish() {
    let out = pk("pool")
        .args([
            "demo",
            "-w",
            "2",
            "-t",
            "10",
            "--task-time",
            "1ms",
            "--kill-a-worker",
        ])
        .output()
        .unwrap();
    assert_success(&out);
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    let lost: Vec<&str> = text.lines().filter(|l| l.starts_with("task ")).collect();
    assert_eq!(lost.len(), 1, "{text}");
    let dead = pid_after(lost[0], "task 5 lost: worker ").expect("task 5 named as lost");
    assert!(lost[0].ends_with(" killed by signal 9 (SIGKILL)"), "{text}");
    let replaced = format!("worker {dead} killed by signal 9 (SIGKILL); replaced by worker ");
    let new = text
        .lines()
        .find_map(|l| pid_after(l, &replaced))
        .expect("the replacement is reported");
    // Task 5 started on the worker that died, and never finished.
    assert!(text.contains(&format!("Run task 5 ({dead})...")), "{text}");
    assert!(!text.contains("Task 5 runs"), "{text}");
    let mut pids = vec![dead, new];
    for i in (0..10).filter(|&i| i != 5) {
        let (run, done, pid) = task_lines(&lines, i);
        assert!(run < done);
        pids.push(pid);
    }
    assert!(text.ends_with("All subprocesses done.\n"), "{text}");
    pids.sort_unstable();
    pids.dedup();
    assert!(leftovers(&pids).is_empty());
}

#[test]
fn closed_stdout_ends_the_demo_quietly() {
    let head = assert_quiet_on_closed_stdout("pk-pool demo -w 4 -t 3000 --task-time 0");
    assert!(head.starts_with("Parent process "), "{head}");
}

#[test]
fn calls_print_what_python_s_pool_prints() {
    let lesson = "\
from multiprocessing import get_context
def square(x): return x * x
def add(a, b): return a + b
def nap(k): return k
if __name__ == '__main__':
    with get_context('fork').Pool(4) as pool:
        print('apply(square, 7) =', pool.apply(square, (7,)))
        print('apply_async(square, 8).get() =', pool.apply_async(square, (8,)).get())
        print('map(square, [1, 2, 3, 4, 5]) =', pool.map(square, [1, 2, 3, 4, 5]))
        print('map_async(square, [1, 2, 3, 4, 5]).get() =', pool.map_async(square, [1, 2, 3, 4, 5]).get())
        print('starmap(add, [(1, 2), (3, 4), (5, 6)]) =', pool.starmap(add, [(1, 2), (3, 4), (5, 6)]))
        print('imap(nap, [0, 1, 2, 3]):', *pool.imap(nap, range(4)))
";
    let out = assert_cmd::Command::new("python3")
        .arg("-c")
        .arg(lesson)
        .timeout(TIMEOUT)
        .output();
    let py = match out {
        Ok(out) if out.status.success() => String::from_utf8(out.stdout).unwrap(),
        _ => {
            eprintln!("skipped: python3 is not available");
            return;
        }
    };
    let ours = pk("pool")
        .args(["calls", "--task-time", "0"])
        .output()
        .unwrap();
    assert_success(&ours);
    assert!(
        stdout(&ours).starts_with(&py),
        "python:\n{py}\nours:\n{}",
        stdout(&ours)
    );
    assert_eq!(py.lines().count(), 6);
}

#[test]
fn calls_shows_every_pool_call_and_results_in_the_order_they_finish() {
    for _ in 0..2 {
        let out = pk("pool")
            .args(["calls", "--workers", "4", "--task-time", "1ms"])
            .output()
            .unwrap();
        assert_success(&out);
        assert_eq!(
            stdout(&out),
            "apply(square, 7) = 49\n\
             apply_async(square, 8).get() = 64\n\
             map(square, [1, 2, 3, 4, 5]) = [1, 4, 9, 16, 25]\n\
             map_async(square, [1, 2, 3, 4, 5]).get() = [1, 4, 9, 16, 25]\n\
             starmap(add, [(1, 2), (3, 4), (5, 6)]) = [3, 7, 11]\n\
             imap(nap, [0, 1, 2, 3]): 0 1 2 3\n\
             imap_unordered(nap, [0, 1, 2, 3]): 3 2 1 0\n\
             apply_async(nap, k, callback) for k in [0, 1, 2, 3]: callbacks ran for 3 2 1 0\n\
             apply_async(check, -1, callback, error_callback): error_callback(task check[0] failed: -1 is negative)\n\
             apply_async(check, 5, callback, error_callback): callback(5)\n\
             close + join: every worker exited\n"
        );
    }
}

#[test]
fn map_squares_in_order() {
    let out = pk("pool")
        .args(["map", "--workers", "2", "1", "2", "3", "4", "5"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(stdout(&out), "[1, 4, 9, 16, 25]\n");
}

#[test]
fn a_thousand_tasks_on_two_workers_come_back_in_order() {
    for chunk in ["1", "7", "0"] {
        let out = pk("pool")
            .args(["map", "-w", "2", "--range", "1000", "--chunksize", chunk])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0));
        let want: Vec<String> = (0..1000i64).map(|i| (i * i).to_string()).collect();
        assert_eq!(
            stdout(&out),
            format!("[{}]\n", want.join(", ")),
            "chunksize {chunk}"
        );
    }
}

#[test]
fn a_worker_dying_in_map_loses_only_its_chunk() {
    // Chunks of 10 on 2 workers, two chunks in flight per worker: the chunk
    // holding item 35 dies with its worker; the chunk queued behind it on
    // that worker had not started and is run by the replacement.
    let out = pk("pool")
        .args([
            "map",
            "-w",
            "2",
            "--range",
            "100",
            "-c",
            "10",
            "--kill-worker-at",
            "35",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let want: Vec<String> = (0..100i64)
        .map(|i| {
            if (30..40).contains(&i) {
                "error".into()
            } else {
                (i * i).to_string()
            }
        })
        .collect();
    assert_eq!(stdout(&out), format!("[{}]\n", want.join(", ")));
    let err = String::from_utf8_lossy(&out.stderr);
    let lost: Vec<&str> = err.lines().collect();
    assert_eq!(lost.len(), 10, "{err}");
    for (k, line) in lost.iter().enumerate() {
        assert!(
            line.starts_with(&format!(
                "pk-pool: task square_or_die[{}] lost: worker ",
                30 + k
            )),
            "{line}"
        );
        assert!(line.ends_with(" killed by signal 9 (SIGKILL)"), "{line}");
    }
}

#[test]
fn a_failing_task_fails_alone_with_exit_1() {
    let out = pk("pool")
        .args(["map", "3", "3037000500", "-4"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(stdout(&out), "[9, error, 16]\n");
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "pk-pool: task square[1] failed: 3037000500 squared overflows i64\n"
    );
}

#[test]
fn bad_input_is_a_one_line_usage_error() {
    let table: &[&[&str]] = &[
        &[],
        &["nope"],
        &["demo", "--workers", "0"],
        &["demo", "--workers", "1025"],
        &["demo", "--tasks", "0"],
        &["demo", "--tasks", "x"],
        &["demo", "--tasks", "10001"],
        &["demo", "--task-time", "61s"],
        &["demo", "--task-time", "soon"],
        &["demo", "-w", "2", "-t", "3", "--reverse"],
        &["demo", "--reverse", "--kill-a-worker"],
        &["calls", "--workers", "1"],
        &["calls", "--task-time", "11s"],
        &["calls", "extra"],
        &["map"],
        &["map", "abc"],
        &["map", "1.5"],
        &["map", "99999999999999999999"],
        &["map", "--range", "0"],
        &["map", "--range", "5", "1"],
        &["map", "--workers", "0", "1"],
        &["map", "--chunksize", "-1", "1"],
        &["map", "--bogus", "1"],
        &["map", "--kill-worker-at", "5", "1", "2"],
        &["map", "--kill-worker-at", "-1", "1", "2"],
    ];
    assert_usage_table("pool", table);
}

#[test]
fn help_documents_the_output() {
    assert_help(
        "pool",
        &[],
        &[
            "demo",
            "map",
            "calls",
            "Parent process <pid>.",
            "Waiting for all subprocesses done...",
            "Run task <i> (<worker pid>)...",
            "Task <i> runs <secs> seconds.",
            "All subprocesses done.",
            "--reverse",
            "apply(square, 7)",
            "map_async",
            "imap_unordered",
            "starmap",
            "error_callback",
            "replaced by worker",
            "[1, 4, 9, 16, 25]",
            "Exit status",
        ],
    );
}

/// The squares of 0..2 000 in chunks of 1 000 (8 KiB frames) from a pool
/// of `workers` started under `limit` (a shell `ulimit`), against those of
/// a pool of 2 started without it: the same, and neither pool dies.
fn same_squares_under(limit: &str, workers: u32) {
    let map = "pk-pool map --range 2000 --chunksize 1000";
    let out = bash(&format!(
        "set -o pipefail; ({limit}; {map} -w {workers}) | md5sum; {map} -w 2 | md5sum"
    ))
    .output()
    .unwrap();
    assert_success(&out);
    let text = stdout(&out);
    let sums: Vec<&str> = text.lines().collect();
    assert_eq!(sums.len(), 2, "{text}");
    assert_eq!(sums[0], sums[1], "the same squares both ways");
}

#[test]
fn a_pool_whose_arenas_cannot_be_mapped_runs_on_the_pipes() {
    // 256 workers reserve 1 GiB of address space for their arenas; under
    // a limit of 1 GB the pool runs without them, its chunks through the
    // pipes.
    same_squares_under("ulimit -v 1000000", 256);
}

#[test]
fn a_pool_under_a_small_file_size_limit_runs_on_the_pipes() {
    // The arenas are a memfd of 4 MiB per worker: sizing it past
    // `ulimit -f` would raise SIGXFSZ (status 153). The pool runs without
    // them instead, its chunks through the pipes.
    same_squares_under("ulimit -f 1000", 2);
}
