//! pk-pool: apply_async, map, close/join, and a worker that dies mid-task.

use crate::common::*;

/// Worker pids named in the output: the pool line and every replacement.
fn worker_pids(text: &str) -> Vec<i32> {
    let mut pids: Vec<i32> = text
        .lines()
        .find_map(|l| l.split_once("workers: "))
        .map(|(_, rest)| rest.split(' ').filter_map(|p| p.parse().ok()).collect())
        .unwrap_or_default();
    pids.extend(
        text.lines()
            .filter_map(|l| l.rsplit_once("replaced by worker "))
            .filter_map(|(_, p)| p.parse::<i32>().ok()),
    );
    pids
}

#[test]
fn demo_runs_ten_tasks_on_four_workers_in_task_order() {
    let out = pk("pool")
        .args(["demo", "--workers", "4", "--tasks", "10"])
        .output()
        .unwrap();
    assert_success(&out);
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 12, "{text}");
    let pids = worker_pids(&text);
    assert_eq!(pids.len(), 4);
    for (i, line) in lines[1..11].iter().enumerate() {
        let (head, pid) = line.rsplit_once(" from worker ").unwrap();
        assert_eq!(head, format!("hello {i}"));
        assert!(
            pids.contains(&pid.parse().unwrap()),
            "{line} ran on a pool worker"
        );
    }
    assert_eq!(lines[11], "close + join: 4 workers exited, status=0");
    assert!(leftovers(&pids).is_empty(), "no worker outlives join");
}

#[test]
fn a_worker_killed_mid_task_is_reported_and_replaced_and_the_rest_finish() {
    let out = pk("pool")
        .args(["demo", "--workers", "2", "--tasks", "10", "--kill-a-worker"])
        .output()
        .unwrap();
    assert_success(&out);
    let text = stdout(&out);
    let pids = worker_pids(&text);
    let lost: Vec<&str> = text.lines().filter(|l| l.starts_with("task ")).collect();
    assert_eq!(lost.len(), 1, "{text}");
    let dead = pid_after(lost[0], "task 5 lost: worker ").expect("task 5 named as lost");
    assert!(lost[0].ends_with(" killed by signal 9 (SIGKILL)"), "{text}");
    assert!(
        text.contains(&format!(
            "worker {dead} killed by signal 9 (SIGKILL); replaced by worker "
        )),
        "{text}"
    );
    let hellos: Vec<usize> = text
        .lines()
        .filter_map(|l| l.strip_prefix("hello ")?.split(' ').next()?.parse().ok())
        .collect();
    assert_eq!(
        hellos,
        [0, 1, 2, 3, 4, 6, 7, 8, 9],
        "every other task finished, in order"
    );
    assert!(
        text.ends_with("close + join: 2 workers exited, status=0\n"),
        "{text}"
    );
    assert_eq!(pids.len(), 3);
    assert!(leftovers(&pids).is_empty());
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
            "hello <i> from worker <pid>",
            "replaced by worker",
            "[1, 4, 9, 16, 25]",
            "Exit status",
        ],
    );
}
