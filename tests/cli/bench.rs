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
    // A pk-bench that is not built is named in one line, not a bash error.
    let out = bash(&format!(
        "PK_BENCH=/nonexistent/pk-bench bash {script} --quick"
    ))
    .output()
    .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty());
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "bench.sh: /nonexistent/pk-bench is not built: run make build first, or set PK_BENCH\n"
    );
}

#[test]
fn bench_script_refuses_a_bad_repetition_count_before_running_anything() {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/bench.sh");
    for reps in ["0", "x", "100", "5x"] {
        let out = bash(&format!("BENCH_REPS='{reps}' bash {script}"))
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "BENCH_REPS={reps:?}");
        assert!(out.stdout.is_empty(), "BENCH_REPS={reps:?}: no table");
        assert_eq!(
            String::from_utf8_lossy(&out.stderr),
            "bench.sh: BENCH_REPS must be 1 to 99\n",
            "BENCH_REPS={reps:?}"
        );
    }
}

// ---------------------------------------------------------------------------
// Curves: pk-bench --list-curves / --curve / --plot, the C and Python peers,
// and scripts/bench.sh --curves-only drawing them.

/// A string field `"key":"value"` of a one-line JSON object.
fn text_field<'a>(json: &'a str, key: &str) -> &'a str {
    let at = json
        .find(&format!("\"{key}\":\""))
        .unwrap_or_else(|| panic!("no {key} in {json}"));
    json[at + key.len() + 4..].split('"').next().unwrap()
}

/// The curves and their quick x values, from --list-curves --quick.
fn quick_curves() -> Vec<(String, Vec<String>)> {
    let out = pk("bench")
        .args(["--list-curves", "--quick"])
        .output()
        .unwrap();
    assert_success(&out);
    stdout(&out)
        .lines()
        .map(|l| {
            let mut w = l.split(' ').map(String::from);
            (w.next().unwrap(), w.collect())
        })
        .collect()
}

#[test]
fn list_curves_names_each_curve_with_its_x_values_and_help_explains_them() {
    let curves = quick_curves();
    let names: Vec<&str> = curves.iter().map(|(n, _)| n.as_str()).collect();
    for want in [
        "fork_rss",
        "spawn_rss",
        "pool_map_items",
        "pool_map_workers",
        "queue_clients",
        "queue_size",
        "ticket_buyers",
        "pipe_rtt_size",
        "pipe_bw_size",
        "exec_jobs",
    ] {
        assert!(names.contains(&want), "{want} missing from {names:?}");
    }
    for (name, xs) in &curves {
        assert!(!xs.is_empty(), "{name} has no x");
        assert!(
            xs.iter().all(|x| x.parse::<f64>().is_ok()),
            "{name}: {xs:?}"
        );
    }
    let full = stdout(&pk("bench").arg("--list-curves").output().unwrap());
    assert!(full.contains("exec_jobs 100 1000 10000 100000\n"), "{full}");
    assert_help("bench", &[], &names);
}

#[test]
fn every_curve_checks_its_own_result_at_its_first_quick_point() {
    // Each point verifies its work (items squared, messages once and in
    // order per producer, every ticket sold once, echoes equal) and fails
    // with exit 71 otherwise; no timing is asserted.
    for (name, xs) in quick_curves() {
        let out = pk("bench")
            .args(["--curve", &name, "--at", &xs[0], "--quick"])
            .output()
            .unwrap();
        assert_success(&out);
        let text = stdout(&out);
        assert!(!text.is_empty(), "{name}: no point");
        for l in text.lines() {
            assert_eq!(text_field(l, "curve"), name, "{l}");
            assert!(!text_field(l, "series").is_empty(), "{l}");
            assert!(number(l, "x") >= 0.0 && number(l, "y") > 0.0, "{l}");
        }
    }
}

#[test]
fn curve_bad_input_is_a_one_line_usage_error() {
    let table: &[&[&str]] = &[
        &["--curve", "nope"],
        &["--at", "5"],
        &["--curve", "fork_rss", "--at", "x"],
        // Drawing is pk-bench-plot's.
        &["--plot", "points.jsonl"],
        &["--out", "dir"],
        &["--note", "x"],
    ];
    assert_usage_table("bench", table);
}

#[test]
fn plot_bad_input_is_a_one_line_usage_error() {
    let table: &[&[&str]] = &[
        &[],
        &["points.jsonl"],
        &["--out", "dir"],
        &["points.jsonl", "--out"],
        &["points.jsonl", "--out", "dir", "--note"],
        &["points.jsonl", "--out", "dir", "--nope"],
        &["a.jsonl", "b.jsonl", "--out", "dir"],
    ];
    assert_usage_table("bench-plot", table);
}

#[test]
fn pk_bench_maps_no_plotting_library() {
    // Every library mapped into pk-bench is copied by each fork it times:
    // libm, which only the plotting code needs, stays in pk-bench-plot.
    let needed = |bin: &str| {
        let out = bash(&format!("ldd {bin}")).output().unwrap();
        assert_success(&out);
        stdout(&out)
    };
    let bench = needed(env!("CARGO_BIN_EXE_pk-bench"));
    assert!(bench.contains("libc.so"), "{bench}");
    assert!(!bench.contains("libm.so"), "{bench}");
    let plot = needed(env!("CARGO_BIN_EXE_pk-bench-plot"));
    assert!(plot.contains("libm.so"), "{plot}");
}

#[test]
fn plot_of_a_missing_points_file_fails_and_makes_no_directory() {
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("plots");
    let out = pk("bench-plot")
        .arg(dir.path().join("none.jsonl"))
        .arg("--out")
        .arg(&out_dir)
        .output()
        .unwrap();
    assert_one_line_error(&out, "bench-plot", 66);
    assert!(!out_dir.exists());
}

#[test]
fn plot_draws_one_labelled_svg_per_curve_and_an_index() {
    let dir = tempfile::tempdir().unwrap();
    let points = dir.path().join("points.jsonl");
    std::fs::write(
        &points,
        concat!(
            "running something ...\n",
            "{\"curve\":\"fork_rss\",\"series\":\"posixkit fork\",\"x\":3.2,\"y\":150.5}\n",
            "{\"curve\":\"fork_rss\",\"series\":\"posixkit fork\",\"x\":1027.2,\"y\":9000}\n",
            "{\"curve\":\"fork_rss\",\"series\":\"C fork\",\"x\":1.5,\"y\":140}\n",
            "{\"curve\":\"fork_rss\",\"series\":\"C fork\",\"x\":1025.5,\"y\":8800}\n",
            "{\"curve\": \"fork_rss\", \"series\": \"Python os.fork\", \"x\": 15.5, \"y\": 1300}\n",
            "{\"curve\":\"queue_clients\",\"series\":\"posixkit\",\"x\":1,\"y\":2000000}\n",
            "{\"curve\":\"queue_clients\",\"series\":\"posixkit\",\"x\":2,\"y\":3000000}\n",
            "{\"curve\":\"no_such_curve\",\"series\":\"x\",\"x\":1,\"y\":2}\n",
        ),
    )
    .unwrap();
    let plots = dir.path().join("plots");
    let out = pk("bench-plot")
        .arg(&points)
        .arg("--out")
        .arg(&plots)
        .args(["--note", "a <test> run"])
        .output()
        .unwrap();
    assert_success(&out);
    let svg = std::fs::read_to_string(plots.join("fork_rss.svg")).unwrap();
    assert!(svg.starts_with("<svg"), "{}", &svg[..80]);
    for text in [
        "fork + _exit + waitpid, by the parent&apos;s resident memory",
        "parent resident memory (MiB)",
        "µs per child (lower is better)",
        "posixkit fork",
        "C fork",
        "Python os.fork",
    ] {
        let plain = text.replace("&apos;", "'");
        assert!(
            svg.contains(text) || svg.contains(&plain),
            "{text:?} not in fork_rss.svg"
        );
    }
    assert!(plots.join("queue_clients.svg").exists());
    assert!(!plots.join("no_such_curve.svg").exists());
    assert!(
        !plots.join("pool_map_items.svg").exists(),
        "no points, no SVG"
    );
    let index = std::fs::read_to_string(plots.join("index.html")).unwrap();
    assert!(index.contains("<img src=\"fork_rss.svg\""), "{index}");
    assert!(index.contains("<img src=\"queue_clients.svg\""), "{index}");
    assert!(index.contains("a &lt;test&gt; run"), "{index}");
    let listed = stdout(&out);
    assert_eq!(listed.lines().count(), 2, "{listed}");
}

#[test]
fn the_c_and_python_peers_print_points_of_the_same_curves() {
    let root = env!("CARGO_MANIFEST_DIR");
    let dir = tempfile::tempdir().unwrap();
    let cbin = dir.path().join("curves");
    let built = bash(&format!(
        "cc -O2 -pthread -o {} {root}/bench/c/curves.c",
        cbin.display()
    ))
    .output()
    .unwrap();
    assert_success(&built);
    for (curve, x) in [
        ("pipe_rtt_size", "64"),
        ("queue_clients", "2"),
        ("ticket_buyers", "2"),
    ] {
        let c = bash(&format!("{} -q {curve} {x}", cbin.display()))
            .output()
            .unwrap();
        assert_success(&c);
        let py = bash(&format!(
            "python3 {root}/bench/python/curves.py --quick {curve} {x}"
        ))
        .output()
        .unwrap();
        assert_success(&py);
        for (who, text) in [("C", stdout(&c)), ("Python", stdout(&py))] {
            assert_eq!(text.lines().count(), 1, "{who} {curve}: {text}");
            let l = text.trim_end();
            assert_eq!(text_field(l, "curve"), curve, "{l}");
            assert!(text_field(l, "series").starts_with(who), "{l}");
            assert!(number(l, "y") > 0.0, "{l}");
        }
    }
    // A curve a peer has no series for prints nothing; a bad call is usage.
    let none = bash(&format!("{} -q exec_jobs 100", cbin.display()))
        .output()
        .unwrap();
    assert_success(&none);
    assert!(none.stdout.is_empty());
    let bad = bash(&format!("{} fork_rss", cbin.display()))
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
}

#[test]
fn bench_script_draws_the_curves_it_is_asked_for_with_c_and_python_beside_posixkit() {
    let root = env!("CARGO_MANIFEST_DIR");
    let dir = tempfile::tempdir().unwrap();
    let plots = dir.path().join("plots");
    let out = bash(&format!(
        "PK_BENCH={} BENCH_CURVES=pipe_rtt_size BENCH_PLOTS={} bash {root}/scripts/bench.sh --quick --curves-only",
        env!("CARGO_BIN_EXE_pk-bench"),
        plots.display()
    ))
    .timeout(std::time::Duration::from_secs(120))
    .output()
    .unwrap();
    assert_success(&out);
    let svg = std::fs::read_to_string(plots.join("pipe_rtt_size.svg")).unwrap();
    for series in ["posixkit", "posixkit framed", "C", "Python Connection"] {
        assert!(
            svg.contains(&format!("\n{series}\n</text>")),
            "{series} not in the legend"
        );
    }
    assert!(
        !plots.join("fork_rss.svg").exists(),
        "only the curve asked for"
    );
    let points = std::fs::read_to_string(plots.join("points.jsonl")).unwrap();
    assert_eq!(points.lines().count(), 3 * 4, "{points}");
}
