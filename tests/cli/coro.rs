//! pk-coro: cooperative tasks on one OS thread (tokio current-thread).

use crate::common::*;

fn run_ok(args: &[&str]) -> String {
    let out = pk("coro").args(args).output().unwrap();
    assert_success(&out);
    assert!(out.stderr.is_empty(), "{out:?}");
    stdout(&out)
}

/// The index of the first line that starts with `prefix`.
#[track_caller]
fn pos(lines: &[&str], prefix: &str) -> usize {
    lines
        .iter()
        .position(|l| l.starts_with(prefix))
        .unwrap_or_else(|| panic!("no line starting with {prefix:?} in {lines:#?}"))
}

/// The `<x>` of `... = <x> units ...`.
fn units(line: &str) -> f64 {
    let after = line.split(" = ").nth(1).expect("= <x> units");
    after.split(' ').next().unwrap().parse().unwrap()
}

#[test]
fn ask_answer_strictly_alternates_on_one_thread() {
    let text = run_ok(&["ask-answer", "--rounds", "4"]);
    let mut want = String::new();
    for i in 1..=4 {
        want += &format!("asker: question {i}\nanswerer: answer {i}\n");
    }
    want += "threads=1\n";
    assert_eq!(text, want);
}

#[test]
fn timing_shows_the_sequential_and_concurrent_schedules() {
    let text = run_ok(&["timing", "--scale", "0.02"]);
    let lines: Vec<&str> = text.lines().collect();
    let conc = pos(&lines, "== concurrent");
    let (seq, conc) = lines.split_at(conc);

    // Sequential: the second say starts only after the first printed hello.
    for l in [seq, conc] {
        let started = pos(l, "started at ");
        let hello = pos(l, "hello at +");
        let world = pos(l, "world at +");
        let finished = pos(l, "finished at ");
        assert!(
            started < hello && hello < world && world < finished,
            "{text}"
        );
    }
    assert!(
        pos(seq, "hello at") < pos(seq, "say(2, world): sleeping"),
        "{text}"
    );
    // Concurrent: both tasks reach their await before either wakes.
    assert!(
        pos(conc, "say(1, hello): sleeping") < pos(conc, "hello at"),
        "{text}"
    );
    assert!(
        pos(conc, "say(2, world): sleeping") < pos(conc, "hello at"),
        "{text}"
    );
    // Both elapsed figures are printed; a timer never fires early, so they
    // are at least the planned units (printed rounded to 0.1).
    let s = units(seq[pos(seq, "sequential: elapsed ")]);
    let c = units(conc[pos(conc, "concurrent: elapsed ")]);
    assert!(s >= 2.9 && c >= 1.9, "{text}");
    assert_eq!(lines.last(), Some(&"threads=1"), "{text}");
}

#[test]
fn tickets_sell_exactly_the_stock_without_a_lock() {
    for extra in [&[][..], &["--random-delay", "--max-delay", "20ms"][..]] {
        let mut args = vec!["tickets", "--tasks", "10", "--stock", "3"];
        args.extend_from_slice(extra);
        let text = run_ok(&args);
        let bought: Vec<&str> = text
            .lines()
            .filter(|l| l.contains(": bought a ticket, "))
            .collect();
        assert_eq!(bought.len(), 3, "{text}");
        let mut left: Vec<&str> = bought
            .iter()
            .map(|l| l.rsplit(", ").next().unwrap())
            .collect();
        left.sort_unstable();
        assert_eq!(left, ["0 left", "1 left", "2 left"], "{text}");
        assert_eq!(text.matches(": sold out\n").count(), 7, "{text}");
        let mut buyers: Vec<i32> = text
            .lines()
            .filter_map(|l| pid_after(l, "buyer "))
            .collect();
        buyers.sort_unstable();
        assert_eq!(buyers, (1..=10).collect::<Vec<_>>(), "{text}");
        assert!(
            text.ends_with("bought=3 sold_out=7 left=0\nthreads=1\n"),
            "{text}"
        );
    }
}

#[test]
fn an_await_between_check_and_sale_oversells() {
    let text = run_ok(&[
        "tickets",
        "--tasks",
        "10",
        "--stock",
        "3",
        "--yield-between",
    ]);
    assert!(
        text.ends_with("bought=10 sold_out=0 left=-7\nthreads=1\n"),
        "{text}"
    );
}

#[test]
fn more_stock_than_buyers_and_no_stock() {
    let text = run_ok(&["tickets", "--tasks", "2", "--stock", "5"]);
    assert!(
        text.ends_with("bought=2 sold_out=0 left=3\nthreads=1\n"),
        "{text}"
    );
    let text = run_ok(&["tickets", "--tasks", "2", "--stock", "0"]);
    assert!(
        text.ends_with("bought=0 sold_out=2 left=0\nthreads=1\n"),
        "{text}"
    );
}

#[test]
fn a_blocking_call_stalls_every_task_and_the_fixes_do_not() {
    let text = run_ok(&["blocking", "--scale", "0.1", "--block", "5"]);
    let lines: Vec<&str> = text.lines().collect();
    let fix1 = pos(&lines, "== fix 1");
    let fix2 = pos(&lines, "== fix 2");
    let blocked = &lines[..fix1];
    let await_fix = &lines[fix1..fix2];
    let pool_fix = &lines[fix2..];

    // Blocked: no tick can run while the only thread sleeps, whatever the load.
    assert!(
        pos(blocked, "sleeper: woke") < pos(blocked, "ticker: tick 1 "),
        "{text}"
    );
    assert_eq!(
        blocked
            .iter()
            .filter(|l| l.starts_with("ticker: tick "))
            .count(),
        5
    );
    assert_eq!(blocked.last(), Some(&"threads=1"), "{text}");
    // Fixed: the first tick (due after 1 unit) runs while the sleeper waits
    // its 5 units.
    for fixed in [await_fix, pool_fix] {
        assert!(
            pos(fixed, "ticker: tick 1 ") < pos(fixed, "sleeper: woke"),
            "{text}"
        );
    }
    assert_eq!(await_fix.last(), Some(&"threads=1"), "{text}");
    assert!(text.contains("threads=2 during spawn_blocking"), "{text}");
}

#[test]
fn help_documents_every_demo_and_line() {
    assert_help(
        "coro",
        &[],
        &[
            "ask-answer",
            "timing",
            "tickets",
            "blocking",
            "threads=1",
            "Exit status",
        ],
    );
    for (demo, needles) in [
        (
            "ask-answer",
            &["--rounds", "asker: question", "answerer: answer"][..],
        ),
        (
            "timing",
            &[
                "--scale",
                "started at",
                "hello at",
                "finished at",
                "elapsed",
            ][..],
        ),
        (
            "tickets",
            &[
                "--tasks",
                "--stock",
                "--random-delay",
                "--max-delay",
                "--yield-between",
                "bought a ticket",
                "sold out",
                "bought=",
            ][..],
        ),
        (
            "blocking",
            &[
                "--scale",
                "--block",
                "ticker: tick",
                "sleeper: woke",
                "threads=2",
            ][..],
        ),
        (
            "generator",
            &[
                "--items",
                "send(None)",
                "c.close()",
                "StopIteration",
                "no stable generators",
                "[CONSUMER] Consuming",
            ][..],
        ),
        (
            "never-run",
            &["--scale", "print(say(1))", "never awaited", "polled"][..],
        ),
        ("gather", &["--scale", "asyncio.gather", "[2, 6, 24]"][..]),
        (
            "wait-for",
            &["--scale", "asyncio.wait_for", "timeout!", "cancelled"][..],
        ),
        (
            "queue",
            &[
                "--scale",
                "--workers",
                "--items",
                "asyncio.Queue",
                "task_done()",
                "queue.join()",
            ][..],
        ),
    ] {
        assert_help(
            "coro",
            &[demo],
            &[needles, &["Exit status", "threads="]].concat(),
        );
    }
}

#[test]
fn bad_input_is_one_line_and_exit_2() {
    for args in [
        &["nonsense"][..],
        &["ask-answer", "--rounds", "0"],
        &["ask-answer", "--rounds", "x"],
        &["timing", "--scale", "0"],
        &["timing", "--scale", "-1"],
        &["timing", "--scale", "nan"],
        &["timing", "--scale", "11"],
        &["tickets", "--tasks", "0"],
        &["tickets", "--stock", "-1"],
        &["tickets", "--max-delay", "11s"],
        &["tickets", "--max-delay", "soon"],
        &["blocking", "--block", "0"],
        &["blocking", "--block", "101"],
        &["generator", "--items", "0"],
        &["generator", "--items", "10001"],
        &["never-run", "--scale", "0"],
        &["gather", "--scale", "x"],
        &["wait-for", "--scale", "11"],
        &["queue", "--workers", "0"],
        &["queue", "--items", "0"],
        &["queue", "--items", "10001"],
        &["queue", "--scale", "-1"],
    ] {
        let out = pk("coro").args(args).output().unwrap();
        assert_usage(&out, "coro");
        assert!(out.stdout.is_empty(), "{args:?}");
    }
}

#[test]
fn a_closed_stdout_ends_quietly() {
    // 10 000 rounds print about 400 KB, more than a pipe holds (64 KiB), so
    // pk-coro is still writing when head exits: the write must hit EPIPE.
    let head = assert_quiet_on_closed_stdout("pk-coro ask-answer --rounds 10000");
    assert_eq!(head, "asker: question 1\n");
}

#[test]
fn the_generator_protocol_as_the_lesson_prints_it() {
    let text = run_ok(&["generator", "--items", "3"]);
    let mut want = String::new();
    for i in 1..=3 {
        want += &format!(
            "[PRODUCER] Producing {i}...\n[CONSUMER] Consuming {i}...\n[PRODUCER] Consumer return: 200 OK\n"
        );
    }
    want += "c.close() -> GEN_CLOSED\n\
             c.send(4) -> StopIteration\n\
             consumer().send(1) -> TypeError: can't send non-None value to a just-started generator; state GEN_CREATED\n\
             threads=1\n";
    assert_eq!(text, want);
}

#[test]
fn a_coroutine_never_polled_never_runs() {
    let text = run_ok(&["never-run", "--scale", "0.01"]);
    let lines: Vec<&str> = text.lines().collect();
    assert!(
        lines[0].starts_with("let fut = say(1, hello): a ")
            && lines[0].contains(" bytes; nothing ran"),
        "{text}"
    );
    assert!(lines[1].starts_with("drop(fut): never polled"), "{text}");
    assert!(
        !text.contains("say(1, hello): sleeping") && !text.contains("hello at"),
        "{text}"
    );
    assert_eq!(lines[2], "say(2, world).await:");
    assert_eq!(lines[3], "say(2, world): sleeping 2 units");
    assert!(lines[4].starts_with("world at +"), "{text}");
    assert_eq!(lines[5..], ["threads=1"]);
}

#[test]
fn gather_returns_the_results_in_argument_order() {
    let text = run_ok(&["gather", "--scale", "0.01"]);
    let lines: Vec<&str> = text.lines().collect();
    // Each task's own lines in order; the three interleave.
    for (name, n, f) in [("A", 2, 2), ("B", 3, 6), ("C", 4, 24)] {
        let mine: Vec<&str> = lines
            .iter()
            .copied()
            .filter(|l| l.starts_with(&format!("Task {name}: ")))
            .collect();
        let mut want: Vec<String> = (2..=n)
            .map(|i| format!("Task {name}: Compute factorial({n}), currently i={i}..."))
            .collect();
        want.push(format!("Task {name}: factorial({n}) = {f}"));
        assert_eq!(mine, want, "{text}");
    }
    // All three started before any finished: they ran at once.
    let first_done = lines.iter().position(|l| l.contains(") = ")).unwrap();
    for name in ["A", "B", "C"] {
        let start = lines
            .iter()
            .position(|l| l.starts_with(&format!("Task {name}: Compute")))
            .unwrap();
        assert!(start < first_done, "{text}");
    }
    assert!(
        lines[lines.len() - 2].starts_with("gather(...) = [2, 6, 24] in "),
        "{text}"
    );
    assert_eq!(lines.last(), Some(&"threads=1"));
}

#[test]
fn wait_for_cancels_the_coroutine_that_times_out() {
    let text = run_ok(&["wait-for", "--scale", "0.01"]);
    assert_eq!(
        text,
        "wait_for(eternity(), timeout=1 unit): timeout! (eternity was cancelled at its await: 'yay!' never prints)\n\
         wait_for(quick(), timeout=1 hour) = 42\n\
         threads=1\n"
    );
}

#[test]
fn queue_join_returns_after_every_item_and_the_workers_are_cancelled() {
    let text = run_ok(&[
        "queue",
        "--scale",
        "0.002",
        "--workers",
        "3",
        "--items",
        "12",
    ]);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "queue: 12 items put, 3 worker tasks");
    let join = lines
        .iter()
        .position(|l| l.starts_with("queue.join() returned"))
        .expect("a join line");
    assert_eq!(
        lines[join],
        "queue.join() returned: all 12 items done, unfinished=0"
    );
    let mut items: Vec<u32> = lines[1..join]
        .iter()
        .map(|l| {
            assert!(
                l.starts_with("worker-") && l.contains(" has slept for "),
                "{text}"
            );
            l.rsplit("(item ")
                .next()
                .unwrap()
                .trim_end_matches(')')
                .parse()
                .unwrap()
        })
        .collect();
    items.sort_unstable();
    assert_eq!(
        items,
        (1..=12).collect::<Vec<_>>(),
        "each item once: {text}"
    );
    assert_eq!(lines[join + 1], "cancelled 3 workers (task.cancel())");
    assert_eq!(lines[join + 2], "====");
    assert_eq!(lines.last(), Some(&"threads=1"));
}

/// The lesson's Python, run by python3 (None when python3 is missing).
fn python(code: &str) -> Option<String> {
    let out = assert_cmd::Command::new("python3")
        .arg("-c")
        .arg(code)
        .timeout(TIMEOUT)
        .output()
        .ok()?;
    if !out.status.success() {
        eprintln!(
            "skipped: python3 failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        return None;
    }
    Some(String::from_utf8(out.stdout).unwrap())
}

#[test]
fn the_generator_lines_are_the_python_lesson_s() {
    let lesson = "\
def consumer():
    r = ''
    while True:
        n = yield r
        if not n:
            return
        print('[CONSUMER] Consuming %s...' % n)
        r = '200 OK'

def produce(c):
    c.send(None)
    n = 0
    while n < 5:
        n = n + 1
        print('[PRODUCER] Producing %s...' % n)
        r = c.send(n)
        print('[PRODUCER] Consumer return: %s' % r)
    c.close()

produce(consumer())
";
    let Some(py) = python(lesson) else {
        eprintln!("skipped: python3 is not available");
        return;
    };
    let ours = run_ok(&["generator", "--items", "5"]);
    assert!(ours.starts_with(&py), "python:\n{py}\nours:\n{ours}");
    assert_eq!(py.lines().count(), 15);
}
