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
        ],
    );
}
