//! pk-event: one thread waits for another's password on an Event.

use crate::common::*;

#[test]
fn the_waiter_prints_only_after_the_set() {
    for args in [&[][..], &["--delay", "20ms", "--timeout", "60s"][..]] {
        let out = pk("event").args(args).output().unwrap();
        assert_eq!(out.status.code(), Some(0), "{args:?}");
        assert_eq!(
            stdout(&out),
            "thread Waiter: waiting for the password...\n\
             thread Setter: password stored, event set\n\
             thread Waiter: got the password 'hunter2'\n",
            "{args:?}"
        );
        assert!(out.stderr.is_empty());
    }
}

#[test]
fn the_password_is_handed_over() {
    let out = pk("event").args(["-p", "open sesame"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert!(stdout(&out).ends_with("got the password 'open sesame'\n"));
}

#[test]
fn a_wait_that_times_out_exits_1() {
    let out = pk("event")
        .args(["--timeout", "50ms", "--no-set"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stdout(&out),
        "thread Waiter: waiting for the password...\n\
         thread Waiter: timed out after 50ms, no password\n"
    );
    assert!(out.stderr.is_empty());
}

#[test]
fn a_late_setter_still_finishes() {
    // A zero timeout expires at once; the setter then sets an event no one
    // waits for, and is joined.
    let out = pk("event")
        .args(["--timeout", "0", "--delay", "10ms"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    assert_eq!(lines[0], "thread Waiter: waiting for the password...");
    assert!(lines.contains(&"thread Waiter: timed out after 0ns, no password"));
    assert!(lines.contains(&"thread Setter: password stored, event set"));
}

#[test]
fn bad_input_is_a_one_line_usage_error() {
    let table: &[&[&str]] = &[
        &["--no-set"],
        &["--timeout", "soon"],
        &["--timeout", "-1"],
        &["--timeout"],
        &["--delay", "25h"],
        &["--password", ""],
        &["--password", "a\nb"],
        &["--bogus"],
        &["extra"],
        &["condition", "--consumers", "0"],
        &["condition", "--consumers", "65"],
        &["condition", "--items", "0"],
        &["condition", "--interval", "11s"],
        &["condition", "--delay", "1s"],
        &["barrier", "--parties", "0"],
        &["barrier", "--parties", "65"],
        &["barrier", "--stagger", "11s"],
        &["barrier", "--missing"],
        &["barrier", "--timeout", "x"],
        &["--delay", "1s", "barrier"],
    ];
    assert_usage_table("event", table);
}

#[test]
fn help_documents_flags_and_output_lines() {
    assert_help(
        "event",
        &[],
        &[
            "--timeout",
            "--delay",
            "--no-set",
            "--password",
            "waiting for the password",
            "got the password",
            "timed out after",
            "Exit status",
            "threading.Condition",
            "wait_for(lambda: items)",
            "threading.Barrier",
            "barrier broken",
        ],
    );
    assert_help(
        "event",
        &["condition"],
        &["--consumers", "--items", "--interval"],
    );
    assert_help(
        "event",
        &["barrier"],
        &["--parties", "--stagger", "--missing", "--timeout"],
    );
}

#[test]
fn a_condition_hands_each_item_to_one_consumer_after_it_was_put() {
    let out = pk("event")
        .args([
            "condition",
            "--consumers",
            "3",
            "--items",
            "30",
            "--interval",
            "0",
        ])
        .output()
        .unwrap();
    assert_success(&out);
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    let mut got = Vec::new();
    for (i, l) in lines.iter().enumerate() {
        if let Some(k) = l.split(": got item ").nth(1) {
            let put = lines
                .iter()
                .position(|p| *p == format!("producer: put item {k}, notify(1)"))
                .expect("put line");
            assert!(put < i, "got before put: {text}");
            got.push(k.parse::<u32>().unwrap());
        }
    }
    got.sort_unstable();
    assert_eq!(got, (1..=30).collect::<Vec<_>>(), "each item once: {text}");
    assert_eq!(text.matches(": got None, stops after ").count(), 3);
    let per: u32 = text
        .lines()
        .filter_map(|l| {
            l.split("stops after ")
                .nth(1)?
                .split(' ')
                .next()?
                .parse::<u32>()
                .ok()
        })
        .sum();
    assert_eq!(per, 30);
    assert!(text.contains("producer: put None for each of 3 consumers, notify_all()\n"));
    assert!(text.ends_with("consumed=30 items by 3 consumers\n"));
}

#[test]
fn no_thread_passes_the_barrier_before_all_arrived() {
    let out = pk("event")
        .args(["barrier", "--parties", "4", "--stagger", "5ms"])
        .output()
        .unwrap();
    assert_success(&out);
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 8, "{text}");
    for (i, l) in lines[..4].iter().enumerate() {
        assert!(
            l.ends_with(&format!("arrived, {} of 4 at the barrier", i + 1)),
            "{text}"
        );
    }
    let mut places: Vec<&str> = lines[4..]
        .iter()
        .map(|l| {
            assert!(l.contains(": passed, wait() returned "), "{text}");
            l.rsplit(' ').next().unwrap()
        })
        .collect();
    places.sort_unstable();
    assert_eq!(places, ["0", "1", "2", "3"]);
}

#[test]
fn a_missing_party_breaks_the_barrier_with_exit_1() {
    let out = pk("event")
        .args([
            "barrier",
            "--parties",
            "3",
            "--stagger",
            "0",
            "--missing",
            "--timeout",
            "30ms",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let text = stdout(&out);
    assert_eq!(text.matches(" at the barrier\n").count(), 2, "{text}");
    assert!(!text.contains("passed"), "{text}");
    assert_eq!(text.matches("the barrier is broken").count(), 2, "{text}");
    assert!(
        text.ends_with("barrier broken: 2 of 3 parties came\n"),
        "{text}"
    );
}

#[test]
fn closed_stdout_ends_the_condition_demo_quietly() {
    let head = assert_quiet_on_closed_stdout("pk-event condition -c 3 -n 100000 --interval 0");
    assert_eq!(head, "producer: put item 1, notify(1)\n");
}
