//! pk-local: a thread-local keeps Alice and Bob apart.

use std::collections::HashSet;

use crate::common::*;

#[test]
fn alice_and_bob_each_see_their_own_name() {
    for _ in 0..3 {
        let out = pk("local").output().unwrap();
        assert_eq!(out.status.code(), Some(0));
        let text = stdout(&out);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        // The two threads print in either order.
        assert_eq!(
            lines[..2].iter().copied().collect::<HashSet<_>>(),
            HashSet::from(["Hello, Alice (in Thread-A)", "Hello, Bob (in Thread-B)"]),
        );
        assert_eq!(lines[2], "thread MainThread: local value unset");
        assert!(out.stderr.is_empty());
    }
}

#[test]
fn many_names_many_threads() {
    let names: Vec<String> = (0..26).map(|i| format!("S{i}")).collect();
    let out = pk("local")
        .args(["-q", "--names", &names.join(",")])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let got: HashSet<String> = stdout(&out).lines().map(String::from).collect();
    let want: HashSet<String> = ('A'..='Z')
        .zip(&names)
        .map(|(l, n)| format!("Hello, {n} (in Thread-{l})"))
        .collect();
    assert_eq!(got, want);
}

#[test]
fn bad_input_is_a_one_line_usage_error() {
    let many: Vec<String> = (0..27).map(|i| format!("S{i}")).collect();
    let many = many.join(",");
    let table: &[&[&str]] = &[
        &["--names", ""],
        &["--names", "Alice,,Bob"],
        &["--names", &many],
        &["--names", "a\tb"],
        &["--names"],
        &["--bogus"],
        &["extra"],
    ];
    assert_usage_table("local", table);
}

#[test]
fn help_documents_flags_and_output_lines() {
    assert_help(
        "local",
        &[],
        &[
            "--names",
            "--quiet",
            "Hello, <NAME> (in Thread-<L>)",
            "local value unset",
            "Exit status",
        ],
    );
}
