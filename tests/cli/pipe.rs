//! pk-pipe: many writers into one pipe, socketpair duplex, SIGPIPE/EPIPE.

use std::collections::{HashMap, HashSet};

use crate::common::*;

/// The pids named in `child <pid> exited|killed ...` lines.
fn reaped_pids(text: &str) -> Vec<i32> {
    text.lines()
        .filter(|l| l.contains(" exited, status=") || l.contains(" killed by signal "))
        .filter_map(|l| pid_after(l, "child "))
        .collect()
}

#[test]
fn fan_in_five_writers_one_frame_each() {
    // Pipe(False) carrying [1, 2, 3, 4, 5] from five children.
    let out = pk("pipe").arg("fan-in").output().unwrap();
    assert_success(&out);
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert!(
        lines[0].ends_with(": 5 writers x 1 frames of 16 bytes into one pipe"),
        "{text}"
    );
    let frames: Vec<&str> = lines
        .iter()
        .copied()
        .filter(|l| l.starts_with("frame from writer "))
        .collect();
    assert_eq!(frames.len(), 5, "{text}");
    let mut writers = HashMap::new();
    for f in &frames {
        assert!(f.ends_with(": seq=0 bytes=16 whole"), "{f}");
        let w = pid_after(f, "frame from writer ").unwrap();
        let pid = f
            .split("(child ")
            .nth(1)
            .and_then(|r| pid_after(r, ""))
            .unwrap();
        writers.insert(w, pid);
    }
    assert_eq!(
        writers.keys().copied().collect::<HashSet<_>>(),
        (1..=5).collect()
    );
    let reaped = reaped_pids(&text);
    assert_eq!(
        reaped.iter().copied().collect::<HashSet<_>>(),
        writers.values().copied().collect::<HashSet<_>>(),
        "each frame names the child that was reaped: {text}"
    );
    assert!(text.contains(" exited, status=0\n"));
    assert_eq!(*lines.last().unwrap(), "frames=5 torn=0");
    assert!(leftovers(&reaped).is_empty());
}

#[test]
fn sixteen_writers_ten_thousand_pipe_buf_frames_never_tear() {
    let out = pk("pipe")
        .args([
            "fan-in",
            "--writers",
            "16",
            "--messages",
            "10000",
            "--size",
            "4096",
            "--quiet",
        ])
        .output()
        .unwrap();
    assert_success(&out);
    let text = stdout(&out);
    assert!(text.ends_with("frames=160000 torn=0\n"), "{text}");
    let reaped = reaped_pids(&text);
    assert_eq!(reaped.len(), 16, "{text}");
    assert_eq!(
        text.lines().count(),
        17,
        "quiet keeps status lines and the summary"
    );
    assert!(leftovers(&reaped).is_empty());
}

#[test]
fn each_writers_frames_arrive_in_order() {
    let out = pk("pipe")
        .args(["fan-in", "-w", "3", "-m", "50", "-s", "12"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let text = stdout(&out);
    let mut seqs: HashMap<i32, Vec<u32>> = HashMap::new();
    for l in text.lines().filter(|l| l.starts_with("frame from writer ")) {
        assert!(l.ends_with(" bytes=12 whole"), "{l}");
        let w = pid_after(l, "frame from writer ").unwrap();
        let seq: u32 = l
            .split("seq=")
            .nth(1)
            .unwrap()
            .split(' ')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        seqs.entry(w).or_default().push(seq);
    }
    assert_eq!(seqs.len(), 3);
    for (w, s) in seqs {
        assert_eq!(s, (0..50).collect::<Vec<_>>(), "writer {w}");
    }
    assert!(text.ends_with("frames=150 torn=0\n"));
}

#[test]
fn duplex_ping_pongs_both_ways() {
    let out = pk("pipe")
        .args(["duplex", "--rounds", "3"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    let parent = pid_after(lines[0], "parent ").unwrap();
    let child: i32 = lines[0].rsplit(' ').next().unwrap().parse().unwrap();
    assert_eq!(
        lines[0],
        format!("parent {parent}: 3 rounds over a socketpair with child {child}")
    );
    let mut want = Vec::new();
    for r in 1..=3 {
        want.push(format!("child {child} got 'ping {r}'"));
        want.push(format!("parent {parent} got 'pong {r}'"));
    }
    want.push(format!("child {child} got end of file"));
    want.push(format!("child {child} exited, status=0"));
    want.push("rounds=3".into());
    assert_eq!(
        lines[1..],
        want.iter().map(String::as_str).collect::<Vec<_>>()[..],
        "{text}"
    );
    assert!(leftovers(&[child]).is_empty());
}

#[test]
fn duplex_quiet_keeps_the_results() {
    let out = pk("pipe")
        .args(["duplex", "-r", "1000", "-q"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let text = stdout(&out);
    assert_eq!(text.lines().count(), 2, "{text}");
    assert!(text.ends_with(" exited, status=0\nrounds=1000\n"), "{text}");
}

#[test]
fn sigpipe_kills_the_writer_when_the_reader_leaves() {
    let out = pk("pipe").arg("sigpipe").output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    let text = stdout(&out);
    let child = reaped_pids(&text)[0];
    assert!(text.contains("SIGPIPE default in the writer\n"), "{text}");
    assert!(
        text.contains(" got frame 1, closing the read end\n"),
        "{text}"
    );
    assert!(
        text.ends_with(&format!(
            "child {child} killed by signal 13 (SIGPIPE)\nwriter killed by SIGPIPE\n"
        )),
        "{text}"
    );
    assert!(leftovers(&[child]).is_empty());
}

#[test]
fn sigpipe_ignored_gives_the_writer_epipe() {
    let out = pk("pipe").args(["sigpipe", "--ignore"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    let text = stdout(&out);
    let child = reaped_pids(&text)[0];
    assert!(text.contains("SIGPIPE ignored in the writer\n"), "{text}");
    assert!(
        text.contains(&format!("child {child} got EPIPE from write(2) after ")),
        "{text}"
    );
    assert!(
        text.ends_with(&format!(
            "child {child} exited, status=1\nwriter got EPIPE\n"
        )),
        "{text}"
    );
}

#[test]
fn sigpipe_default_even_when_the_shell_ignores_it() {
    // A parent shell that ignores SIGPIPE passes that on; the writer
    // restores the default itself.
    let out = bash("trap '' PIPE; pk-pipe -q sigpipe").output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert!(
        stdout(&out).ends_with("writer killed by SIGPIPE\n"),
        "{}",
        stdout(&out)
    );
}

#[test]
fn bad_input_is_a_one_line_usage_error() {
    let table: &[&[&str]] = &[
        &[],
        &["bogus"],
        &["fan-in", "--size", "0"],
        &["fan-in", "--size", "11"],
        &["fan-in", "--size", "4097"],
        &["fan-in", "--size", "-1"],
        &["fan-in", "--writers", "0"],
        &["fan-in", "--writers", "1025"],
        &["fan-in", "--writers", "x"],
        &["fan-in", "--messages", "0"],
        &["fan-in", "--messages", "1000001"],
        &["fan-in", "--messages"],
        &["duplex", "--rounds", "0"],
        &["duplex", "--rounds", "100001"],
        &["sigpipe", "--ignore=yes"],
        &["sigpipe", "extra"],
        &["fan-in", "--bogus"],
    ];
    assert_usage_table("pipe", table);
}

#[test]
fn closed_stdout_exits_quietly_and_reaps_the_writers() {
    let head = assert_quiet_on_closed_stdout("pk-pipe fan-in -w 4 -m 5000");
    assert!(head.starts_with("parent "), "{head}");
}

#[test]
fn help_documents_subcommands_flags_and_output() {
    assert_help(
        "pipe",
        &[],
        &[
            "fan-in",
            "duplex",
            "sigpipe",
            "--quiet",
            "frames=<total> torn=<T>",
            "PIPE_BUF",
            "SIGPIPE",
            "EPIPE",
            "Exit status",
        ],
    );
    assert_help("pipe", &["fan-in"], &["--writers", "--messages", "--size"]);
    assert_help("pipe", &["duplex"], &["--rounds"]);
    assert_help("pipe", &["sigpipe"], &["--ignore"]);
}
