//! pk-queue: a bounded queue of messages between processes.

use std::collections::HashSet;

use crate::common::*;

#[test]
fn basics_full_qsize_fifo_empty_and_join_after_put() {
    let check = ShmCheck::start();
    let out = pk("queue").arg("basics").output().unwrap();
    assert_success(&out);
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 12, "{text}");
    assert_eq!(lines[0], "put(1) put(2) put(3)");
    assert_eq!(lines[1], "full()=true qsize()=3 empty()=false");
    assert_eq!(lines[2], "try_put(4)=false (full)");
    let getter = pid_after(lines[3], "child ").unwrap();
    for (i, want) in ["1", "2", "3"].iter().enumerate() {
        assert_eq!(
            lines[3 + i],
            format!("child {getter}: get()={want}"),
            "FIFO"
        );
    }
    assert_eq!(lines[6], format!("child {getter} exited, status=0"));
    assert_eq!(lines[7], "empty()=true qsize()=0 full()=false");
    assert_eq!(lines[8], "get(timeout=50ms)=timed out");
    let putter = pid_after(lines[9], "child ").unwrap();
    assert_eq!(
        lines[9],
        format!("child {putter}: put(bye), exiting at once")
    );
    assert_eq!(lines[10], format!("child {putter} exited, status=0"));
    assert_eq!(lines[11], "joined first, then get()=bye");
    assert!(out.stderr.is_empty());
    assert!(leftovers(&[getter, putter]).is_empty());
    check.finish();
}

/// Run the demo; check the result lines and the per-process lines.
fn demo(p: u32, c: u32, n: u64, k: u32) {
    let out = pk("queue")
        .args(["demo", "--producers", &p.to_string()])
        .args(["--consumers", &c.to_string()])
        .args(["--items", &n.to_string()])
        .args(["--capacity", &k.to_string()])
        .output()
        .unwrap();
    let text = stdout(&out);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let total = u64::from(p) * n;
    let sum = u64::from(p) * n * (n + 1) / 2;
    assert!(
        text.contains(&format!(
            "\nput={total} got={total} duplicates=0 missing=0\nsum={sum} expected={sum} ok\n"
        )),
        "{text}"
    );
    let producers: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("producer "))
        .collect();
    assert_eq!(producers.len(), p as usize, "{text}");
    assert!(
        producers
            .iter()
            .all(|l| l.ends_with(&format!(" put {n} items")))
    );
    let consumers: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("consumer "))
        .collect();
    assert_eq!(consumers.len(), c as usize, "{text}");
    let got: u64 = consumers
        .iter()
        .map(|l| {
            l.split(" got ")
                .nth(1)
                .and_then(|r| r.split(' ').next())
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap()
        })
        .sum();
    assert_eq!(got, total, "{text}");
    let pids: Vec<i32> = producers
        .iter()
        .filter_map(|l| pid_after(l, "producer "))
        .chain(consumers.iter().filter_map(|l| pid_after(l, "consumer ")))
        .collect();
    assert_eq!(pids.iter().collect::<HashSet<_>>().len(), (p + c) as usize);
    assert!(leftovers(&pids).is_empty());
}

#[test]
fn two_producers_one_consumer_every_item_once() {
    let check = ShmCheck::start();
    demo(2, 1, 6, 4);
    demo(2, 1, 10, 1);
    check.finish();
}

#[test]
fn four_producers_ten_thousand_items_two_consumers() {
    let check = ShmCheck::start();
    demo(4, 2, 10_000, 64);
    // A tiny ring: every put and get waits on the other side.
    demo(4, 2, 10_000, 2);
    check.finish();
}

#[test]
fn quiet_keeps_the_two_result_lines() {
    let out = pk("queue")
        .args(["demo", "-p", "3", "-c", "3", "-n", "100", "-k", "5", "-q"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        stdout(&out),
        "put=300 got=300 duplicates=0 missing=0\nsum=15150 expected=15150 ok\n"
    );
}

#[test]
fn bad_input_is_a_one_line_usage_error() {
    assert_eq!(pk("queue").output().unwrap().status.code(), Some(2));
    let table: &[&[&str]] = &[
        &["nope"],
        &["basics", "extra"],
        &["demo", "--producers", "0"],
        &["demo", "--producers", "65"],
        &["demo", "--consumers", "0"],
        &["demo", "--consumers", "-1"],
        &["demo", "--items", "0"],
        &["demo", "--items", "10000001"],
        &["demo", "--items", "99999999999999999999999"],
        &["demo", "--items", "10000000", "--producers", "6"],
        &["demo", "--capacity", "0"],
        &["demo", "--capacity", "65537"],
        &["demo", "--capacity", "x"],
        &["demo", "--bogus"],
    ];
    assert_usage_table("queue", table);
}

#[test]
fn help_documents_flags_and_output_lines() {
    assert_help(
        "queue",
        &[],
        &[
            "basics",
            "demo",
            "full()=true qsize()=3",
            "joined first, then get()=bye",
            "put=<P*N> got=<total> duplicates=<D> missing=<M>",
            "sum=<S> expected=<S'>",
            "Exit status",
        ],
    );
    assert_help(
        "queue",
        &["demo"],
        &[
            "--producers",
            "--consumers",
            "--items",
            "--capacity",
            "--quiet",
        ],
    );
}
