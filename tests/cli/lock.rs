//! pk-lock: the balance race, the ticket purchase and the a==b invariant,
//! with and without the lock.

use std::collections::HashSet;

use crate::common::*;

fn balance_of(text: &str) -> i64 {
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix("balance="))
        .unwrap_or_else(|| panic!("no balance line: {text}"));
    line.parse().unwrap()
}

#[test]
fn with_the_lock_the_balance_is_always_zero() {
    for args in [
        &[][..],
        &["balance"][..],
        &["balance", "--threads", "2", "--iters", "100000"][..],
        &["balance", "--threads", "8", "--iters", "20000", "--yield"][..],
    ] {
        let out = pk("lock").args(args).output().unwrap();
        assert_eq!(out.status.code(), Some(0));
        let text = stdout(&out);
        assert_eq!(balance_of(&text), 0, "{args:?}: {text}");
        assert!(text.lines().last().unwrap() == "balance=0");
    }
    let out = pk("lock").args(["balance", "-q"]).output().unwrap();
    assert_eq!(stdout(&out), "balance=0\n");
    let out = pk("lock")
        .args(["balance", "-t", "3", "-i", "7"])
        .output()
        .unwrap();
    assert_eq!(
        stdout(&out),
        "3 threads x 7 iterations, with the lock\nbalance=0\n"
    );
}

#[test]
fn without_the_lock_yield_loses_updates() {
    // --yield makes the lost updates certain enough to assert in one run;
    // see the comment on `Window` in src/cmd/lock.rs.
    for _ in 0..3 {
        let out = pk("lock")
            .args([
                "balance",
                "--threads",
                "2",
                "--iters",
                "100000",
                "--no-lock",
                "--yield",
            ])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0), "the demo ran");
        let text = stdout(&out);
        assert!(text.starts_with("2 threads x 100000 iterations, without a lock\n"));
        assert_ne!(balance_of(&text), 0, "{text}");
    }
}

/// (buyer, ticket) pairs from `Thread-<i> bought ticket <k>, <left> left`.
fn purchases(text: &str) -> Vec<(String, u32)> {
    text.lines()
        .filter_map(|l| {
            let (who, rest) = l.split_once(" bought ticket ")?;
            Some((who.to_string(), rest.split(',').next()?.parse().ok()?))
        })
        .collect()
}

#[test]
fn ten_buyers_three_tickets_sell_exactly_three() {
    for _ in 0..3 {
        let out = pk("lock")
            .args(["tickets", "--threads", "10", "--stock", "3", "--yield"])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0));
        let text = stdout(&out);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 11, "{text}");
        let bought = purchases(&text);
        // Printed under the lock: tickets 1, 2, 3 in order, each once.
        assert_eq!(
            bought.iter().map(|b| b.1).collect::<Vec<_>>(),
            [1, 2, 3],
            "{text}"
        );
        let sold_out: Vec<&str> = lines
            .iter()
            .filter_map(|l| l.strip_suffix(": sold out"))
            .collect();
        assert_eq!(sold_out.len(), 7, "{text}");
        let buyers: HashSet<String> = bought
            .iter()
            .map(|b| b.0.clone())
            .chain(sold_out.iter().map(|s| s.to_string()))
            .collect();
        assert_eq!(
            buyers,
            (1..=10).map(|i| format!("Thread-{i}")).collect(),
            "every buyer speaks once: {text}"
        );
        assert_eq!(lines[10], "sold=3 sold_out=7 stock=3");
    }
}

#[test]
fn tickets_edge_cases_and_quiet() {
    let out = pk("lock")
        .args(["tickets", "-t", "2", "-s", "5", "-q"])
        .output()
        .unwrap();
    assert_eq!(stdout(&out), "sold=2 sold_out=0 stock=5\n");
    let out = pk("lock")
        .args(["tickets", "-t", "4", "-s", "0"])
        .output()
        .unwrap();
    let text = stdout(&out);
    assert_eq!(text.matches(": sold out\n").count(), 4, "{text}");
    assert!(text.ends_with("sold=0 sold_out=4 stock=0\n"));
}

#[test]
fn without_the_lock_tickets_are_oversold() {
    // 100 buyers and 10 tickets: with a yield between the check and the
    // update, far more than 10 buyers see stock left.
    let out = pk("lock")
        .args(["tickets", "-t", "100", "-s", "10", "--no-lock", "--yield"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let text = stdout(&out);
    let bought = purchases(&text);
    assert!(bought.len() > 10, "{text}");
    let tickets: HashSet<u32> = bought.iter().map(|b| b.1).collect();
    assert!(tickets.len() < bought.len(), "a ticket sold twice: {text}");
    assert!(text.contains("\noversold by "), "{text}");
}

fn summary(text: &str) -> (u64, u64, u64) {
    let last = text.lines().last().unwrap_or_default();
    let nums: Vec<u64> = last
        .split(' ')
        .map(|kv| kv.split_once('=').unwrap().1.parse().unwrap())
        .collect();
    (nums[0], nums[1], nums[2])
}

#[test]
fn with_the_lock_the_checker_never_sees_a_mismatch() {
    for yield_ in [false, true] {
        let mut cmd = pk("lock");
        cmd.args(["invariant", "--seconds", "0.3"]);
        if yield_ {
            cmd.arg("--yield");
        }
        let out = cmd.output().unwrap();
        assert_eq!(out.status.code(), Some(0));
        let text = stdout(&out);
        assert!(!text.contains("mismatch:"), "{text}");
        assert_eq!(text.lines().count(), 1, "{text}");
        let (checks, _updates, mismatches) = summary(&text);
        assert!(checks >= 1);
        assert_eq!(mismatches, 0);
    }
}

#[test]
fn without_the_lock_the_checker_sees_a_half_done_update() {
    let out = pk("lock")
        .args([
            "invariant",
            // Both threads only need to run at the same time once in the
            // window; a second leaves room for a loaded machine.
            "--seconds",
            "1",
            "--no-lock",
            "--yield",
            "--show",
            "2",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let text = stdout(&out);
    let (_, _, mismatches) = summary(&text);
    assert!(mismatches > 0, "{text}");
    let shown = text
        .lines()
        .filter(|l| l.starts_with("mismatch: a="))
        .count() as u64;
    assert_eq!(shown, mismatches.min(2), "{text}");
}

#[test]
fn bad_input_is_a_one_line_usage_error() {
    let table: &[&[&str]] = &[
        &["balance", "--threads", "0"],
        &["balance", "--threads", "65"],
        &["balance", "--iters", "0"],
        &["balance", "--iters", "100000001"],
        &["balance", "--iters", "-5"],
        &["balance", "--iters", "many"],
        &["tickets", "--threads", "0"],
        &["tickets", "--threads", "1001"],
        &["tickets", "--stock", "-1"],
        &["tickets", "--stock", "1000001"],
        &["invariant", "--seconds", "-1"],
        &["invariant", "--seconds", "2d"],
        &["invariant", "--show", "1001"],
        &["balance", "--bogus"],
        &["nope"],
        &["--threads", "2"],
        &["deadlock", "--timeout", "2h"],
        &["deadlock", "--timeout", "x"],
        &["deadlock", "--ordered", "extra"],
        &["rlock", "--timeout", "-1"],
        &["semaphore", "--threads", "0"],
        &["semaphore", "--value", "0"],
        &["semaphore", "--value", "1001"],
        &["semaphore", "--hold", "11s"],
    ];
    assert_usage_table("lock", table);
}

#[test]
fn help_documents_flags_and_output_lines() {
    assert_help(
        "lock",
        &[],
        &[
            "balance=",
            "bought ticket",
            "sold out",
            "mismatch: a=",
            "checks=",
            "Exit status",
            "acquire(timeout=",
            "deadlock:",
            "--ordered",
            "threading.RLock",
            "released too many times",
        ],
    );
    for (sub, flags) in [
        (
            "balance",
            &["--threads", "--iters", "--no-lock", "--yield", "--quiet"][..],
        ),
        (
            "tickets",
            &["--threads", "--stock", "--no-lock", "--yield"][..],
        ),
        (
            "invariant",
            &["--seconds", "--show", "--no-lock", "--yield"][..],
        ),
        ("deadlock", &["--timeout", "--ordered"][..]),
        ("rlock", &["--timeout", "threading.RLock"][..]),
        (
            "semaphore",
            &["--threads", "--value", "--hold", "BoundedSemaphore"][..],
        ),
    ] {
        assert_help("lock", &[sub], flags);
    }
}

#[test]
fn opposite_lock_orders_deadlock_and_the_demo_says_so() {
    let out = pk("lock")
        .args(["deadlock", "--timeout", "50ms"])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "the deadlock is reported with exit 1"
    );
    assert!(out.stderr.is_empty());
    let text = stdout(&out);
    let mut lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines[0],
        "Thread-1 takes lock A then lock B; Thread-2 takes lock B then lock A (the opposite order)"
    );
    assert!(
        lines
            .last()
            .unwrap()
            .starts_with("deadlock: each thread held one lock and waited for the other's"),
        "{text}"
    );
    // Both threads took their first lock before either asked for its
    // second: every `took` line comes before every `waiting` line.
    let last_took = lines
        .iter()
        .rposition(|l| l.contains(": took lock"))
        .unwrap();
    let first_wait = lines
        .iter()
        .position(|l| l.contains(": waiting for lock"))
        .unwrap();
    assert!(last_took < first_wait, "{text}");
    let n = lines.len();
    let body = &mut lines[1..n - 1];
    body.sort_unstable();
    assert_eq!(
        body,
        [
            "thread Thread-1: gave up on lock B after 50ms: the other thread holds it, waiting for lock A, which this thread holds",
            "thread Thread-1: took lock A",
            "thread Thread-1: waiting for lock B...",
            "thread Thread-2: gave up on lock A after 50ms: the other thread holds it, waiting for lock B, which this thread holds",
            "thread Thread-2: took lock B",
            "thread Thread-2: waiting for lock A...",
        ]
    );
}

#[test]
fn one_lock_order_for_all_threads_never_deadlocks() {
    for _ in 0..3 {
        let out = pk("lock").args(["deadlock", "--ordered"]).output().unwrap();
        assert_success(&out);
        let text = stdout(&out);
        assert_eq!(
            text.matches(": took lock B; releasing both").count(),
            2,
            "{text}"
        );
        assert!(!text.contains("gave up"), "{text}");
        assert!(text.ends_with("no deadlock: every thread took both locks, always A before B\n"));
        // Each thread took A before B.
        for t in ["Thread-1", "Thread-2"] {
            let a = text.find(&format!("thread {t}: took lock A")).unwrap();
            let b = text.find(&format!("thread {t}: took lock B")).unwrap();
            assert!(a < b, "{text}");
        }
    }
}

#[test]
fn a_lock_taken_twice_waits_for_itself_an_rlock_does_not() {
    let out = pk("lock")
        .args(["rlock", "--timeout", "20ms"])
        .output()
        .unwrap();
    assert_success(&out);
    assert_eq!(
        stdout(&out),
        "Lock: outer acquire() -> held\n\
         Lock: inner acquire(timeout=20ms) by the same thread -> timed out: a Lock is not reentrant; without a timeout the thread would wait for itself for ever\n\
         RLock: outer acquire() -> held, depth 1\n\
         RLock: inner acquire() by the same thread -> held, depth 2\n\
         RLock: inner released -> still held by this thread: True\n\
         RLock: another thread's acquire(timeout=20ms) while it is held -> timed out: True\n\
         RLock: outer released -> another thread takes it: True\n"
    );
}

#[test]
fn a_bounded_semaphore_admits_at_most_its_value_and_refuses_a_release_too_many() {
    let out = pk("lock")
        .args([
            "semaphore",
            "--threads",
            "8",
            "--value",
            "3",
            "--hold",
            "5ms",
        ])
        .output()
        .unwrap();
    assert_success(&out);
    let text = stdout(&out);
    let in_use = |l: &str| -> u32 {
        l.split(", ")
            .nth(1)
            .unwrap()
            .split(' ')
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    let acquired: Vec<&str> = text
        .lines()
        .filter(|l| l.contains(": acquired, "))
        .collect();
    assert_eq!(acquired.len(), 8, "each thread once: {text}");
    assert!(
        acquired.iter().all(|l| (1..=3).contains(&in_use(l))),
        "{text}"
    );
    let most: u32 = text
        .lines()
        .find_map(|l| l.strip_prefix("most in use at once: "))
        .unwrap()
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=3).contains(&most), "{text}");
    assert!(text.contains(" of 3 (BoundedSemaphore(3), 8 threads)\n"));
    assert!(text.ends_with(
        "release() once more: release(BoundedSemaphore): released too many times (Python: ValueError: Semaphore released too many times)\n"
    ));
}
