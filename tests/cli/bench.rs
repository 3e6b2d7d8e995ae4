//! pk-bench: the harness runs and its --json parses. No timing assertions.

use crate::common::*;

/// The value of `"key":<number>` in a one-line JSON object.
fn number(json: &str, key: &str) -> f64 {
    let at = json
        .find(&format!("\"{key}\":"))
        .unwrap_or_else(|| panic!("no {key} in {json}"));
    json[at + key.len() + 3..]
        .split([',', '}'])
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

#[test]
fn quick_json_run_of_one_cheap_figure_parses() {
    let out = pk("bench")
        .args(["--quick", "--only", "fork_wait_us", "--json", "--reps", "2"])
        .output()
        .unwrap();
    assert_success(&out);
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 1, "{text}");
    let l = lines[0];
    assert!(
        l.starts_with("{\"figure\":\"fork_wait_us\",\"unit\":\"us\",") && l.ends_with('}'),
        "{l}"
    );
    let (median, min, max) = (number(l, "median"), number(l, "min"), number(l, "max"));
    assert!(min > 0.0 && min <= median && median <= max, "{l}");
    assert_eq!(number(l, "reps"), 2.0);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("running fork_wait_us ..."),
        "progress on stderr"
    );
}

#[test]
fn text_output_names_figure_unit_and_spread() {
    let out = pk("bench")
        .args(["--quick", "--only", "process_start_join_us", "--reps", "1"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let text = stdout(&out);
    assert!(
        text.starts_with("process_start_join_us ")
            && text.contains(" us (min ")
            && text.ends_with(", 1 reps)\n"),
        "{text}"
    );
}

#[test]
fn list_names_every_figure() {
    let text = stdout(&pk("bench").arg("--list").output().unwrap());
    assert!(text.lines().any(|l| l == "fork_wait_us us"), "{text}");
    let names: Vec<&str> = text.lines().map(|l| l.split(' ').next().unwrap()).collect();
    assert_help("bench", &[], &names);
}

#[test]
fn bad_input_is_a_one_line_usage_error() {
    let table: &[&[&str]] = &[
        &["--only", "nope"],
        &["--reps", "0"],
        &["--reps", "100"],
        &["--reps", "x"],
        &["--bogus"],
    ];
    assert_usage_table("bench", table);
}

#[test]
fn every_figure_checks_its_own_result_in_a_quick_run() {
    // Each figure verifies what it computed (no lost update, results in
    // order, every ticket sold) and fails with exit 71 otherwise, so a quick
    // run of all of them is a test of the primitives under load, with no
    // timing asserted. One rep each keeps it short.
    let out = pk("bench")
        .args(["--quick", "--reps", "1", "--json"])
        .output()
        .unwrap();
    assert_success(&out);
    let list = stdout(&pk("bench").arg("--list").output().unwrap());
    assert_eq!(
        stdout(&out).lines().count(),
        list.lines().count(),
        "one line per figure"
    );
}

#[test]
fn bench_script_refuses_a_bad_round_count_before_running_anything() {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/bench.sh");
    for rounds in ["0", "x", "-1", "2.5", "007x"] {
        let out = bash(&format!("BENCH_ROUNDS='{rounds}' bash {script}"))
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "BENCH_ROUNDS={rounds:?}");
        assert!(out.stdout.is_empty(), "BENCH_ROUNDS={rounds:?}: no table");
        assert_eq!(
            String::from_utf8_lossy(&out.stderr),
            "bench.sh: BENCH_ROUNDS must be a positive integer\n",
            "BENCH_ROUNDS={rounds:?}"
        );
    }
}
