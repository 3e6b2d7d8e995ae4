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
        &["demo", "--jitter", "11s"],
        &["demo", "--jitter", "soon"],
        &["demo", "--jitter"],
        &["demo", "--stop", "never"],
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
        &[],
        &[
            "create",
            "put",
            "get",
            "stat",
            "unlink",
            "at-most-once",
            "SIGKILL",
            "names its holder",
            "name=<NAME> capacity=<K> max_size=<B> qsize=<Q>",
            "flock -n",
            "65",
            "66",
            "77",
        ],
    );
    assert_help(
        "queue",
        &["create"],
        &["--capacity", "--max-size", "--exist-ok"],
    );
    assert_help(
        "queue",
        &["put"],
        &["--lines", "--null", "--timeout", "--verbose", "MSG"],
    );
    assert_help(
        "queue",
        &["get"],
        &["--count", "--timeout", "--null", "--verbose"],
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
            "--trace",
            "--jitter",
            "--stop",
        ],
    );
    assert_help(
        "queue",
        &[],
        &[
            "producer <pid>: put <ITEM>",
            "consumer <pid>: got <ITEM>",
            "terminate() -> exitcode=-15",
            "time.sleep(random.random())",
            "in the order it put them",
            "--stop terminate",
        ],
    );
}

/// The items of `--trace` lines with `verb` (`put` or `got`), in output
/// order, as (producer letter, sequence number, line index).
fn traced(lines: &[&str], verb: &str) -> Vec<(char, u64, usize)> {
    lines
        .iter()
        .enumerate()
        .filter_map(|(i, l)| {
            let item = l.split(&format!(": {verb} ")).nth(1)?;
            let mut chars = item.chars();
            let letter = chars.next()?;
            Some((letter, chars.as_str().parse().ok()?, i))
        })
        .collect()
}

#[test]
fn several_writers_fifo_within_each_interleaved_across() {
    // Three writers into one queue, each sleeping a random time (up to
    // 10ms) before each put, as the lesson's time.sleep(random.random()).
    let out = pk("queue")
        .args(["demo", "-p", "3", "-c", "1", "-n", "10", "-k", "4"])
        .args(["--trace", "--jitter", "10ms"])
        .output()
        .unwrap();
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{text}");
    let lines: Vec<&str> = text.lines().collect();
    let puts = traced(&lines, "put");
    let gets = traced(&lines, "got");
    assert_eq!(puts.len(), 30, "{text}");
    assert_eq!(gets.len(), 30, "{text}");
    // Each item got once, after the line of its put.
    for &(letter, seq, at) in &gets {
        let put = puts
            .iter()
            .find(|&&(l, s, _)| (l, s) == (letter, seq))
            .unwrap_or_else(|| panic!("{letter}{seq} got but never put: {text}"));
        assert!(put.2 < at, "{letter}{seq} got before its put line: {text}");
    }
    // FIFO within each writer: A1..A10 in order, B1..B10, C1..C10.
    for writer in ['A', 'B', 'C'] {
        let seqs: Vec<u64> = gets.iter().filter(|g| g.0 == writer).map(|g| g.1).collect();
        assert_eq!(seqs, (1..=10).collect::<Vec<_>>(), "{writer}: {text}");
    }
    // Interleaved across writers: the get order switches between them (the
    // jitter makes a run of all 30 in writer order all but impossible).
    let switches = gets.windows(2).filter(|w| w[0].0 != w[1].0).count();
    assert!(switches > 2, "the writers never interleaved: {text}");
    assert!(
        text.contains(&format!(
            "\norder: each producer's items in the order it put them, {switches} switches between producers\n"
        )),
        "{text}"
    );
    assert!(text.contains("\nsum=165 expected=165 ok\n"), "{text}");
}

#[test]
fn terminate_ends_the_readers_blocked_in_get() {
    let check = ShmCheck::start();
    // As the lesson's pr.terminate(): no sentinel; every item is taken and
    // counted, then each reader, blocked in get(), gets SIGTERM.
    let out = pk("queue")
        .args(["demo", "-p", "2", "-c", "2", "-n", "500", "-k", "3"])
        .args(["--stop", "terminate"])
        .output()
        .unwrap();
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{text}");
    let consumers: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("consumer ") && l.ends_with("; terminate() -> exitcode=-15"))
        .collect();
    assert_eq!(consumers.len(), 2, "{text}");
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
    assert_eq!(got, 1000, "{text}");
    assert!(
        text.contains(
            "\nput=1000 got=1000 duplicates=0 missing=0\nsum=250500 expected=250500 ok\n"
        ),
        "{text}"
    );
    let pids: Vec<i32> = consumers
        .iter()
        .filter_map(|l| pid_after(l, "consumer "))
        .collect();
    assert!(leftovers(&pids).is_empty());
    check.finish();
}

// ---- named queues ----

fn q(args: &[&str]) -> std::process::Output {
    pk("queue").args(args).output().unwrap()
}

fn queue_bytes(name: &str) -> Vec<u8> {
    std::fs::read(format!("/dev/shm/{}", &name[1..])).unwrap()
}

#[test]
fn named_queue_put_get_stat_unlink() {
    let mut check = ShmCheck::start();
    let name = check.name("nq");
    let out = q(&["create", &name, "--capacity", "5", "--max-size", "16"]);
    assert_success(&out);
    assert!(out.stdout.is_empty() && out.stderr.is_empty());
    let meta = std::fs::metadata(format!("/dev/shm/{}", &name[1..])).unwrap();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o7777,
        0o600
    );
    assert_eq!(
        stdout(&q(&["stat", &name])),
        format!("name={name} capacity=5 max_size=16 qsize=0\n")
    );
    assert_success(&q(&["put", &name, "one", "two words"]));
    let out = bash(&format!(
        "printf 'three\\nfour\\n' | pk-queue put {name} --lines && printf 'five' | pk-queue put {name} -"
    ))
    .output()
    .unwrap();
    assert_success(&out);
    assert_eq!(
        stdout(&q(&["stat", &name])),
        format!("name={name} capacity=5 max_size=16 qsize=5\n")
    );
    // Full: declined at once, quietly; with -v, one line on stderr.
    let out = q(&["put", &name, "--timeout", "0", "six"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty() && out.stderr.is_empty(), "{out:?}");
    let out = q(&["put", &name, "--timeout", "30ms", "-v", "six"]);
    assert_one_line_error(&out, "queue", 1);
    assert!(out.stdout.is_empty());
    // FIFO out, one per line.
    let out = q(&["get", &name, "-n", "2"]);
    assert_success(&out);
    assert_eq!(stdout(&out), "one\ntwo words\n");
    let out = q(&["get", &name, "-n", "10", "--timeout", "0"]);
    assert_eq!(out.status.code(), Some(1), "only three were left");
    assert_eq!(stdout(&out), "three\nfour\nfive\n");
    assert!(out.stderr.is_empty());
    let out = q(&["get", &name, "--timeout", "0", "-v"]);
    assert_one_line_error(&out, "queue", 1);
    // NUL-separated both ways; empty messages and newlines inside survive.
    let out = bash(&format!(
        "printf 'a\\nb\\0\\0c' | pk-queue put {name} -0 && pk-queue get {name} -0 -n 3 | od -An -c"
    ))
    .output()
    .unwrap();
    assert_success(&out);
    let od: Vec<String> = stdout(&out)
        .split_whitespace()
        .map(str::to_string)
        .collect();
    assert_eq!(od, ["a", "\\n", "b", "\\0", "\\0", "c", "\\0"]);
    // Too big: 65, nothing of it put; the messages before it were.
    let out = q(&["put", &name, "ok", "x".repeat(17).as_str(), "never"]);
    assert_one_line_error(&out, "queue", 65);
    assert_eq!(
        stdout(&q(&["get", &name, "-n", "5", "--timeout", "0"])),
        "ok\n"
    );
    let out = bash(&format!("head -c 17 /dev/zero | pk-queue put {name} -"))
        .output()
        .unwrap();
    assert_one_line_error(&out, "queue", 65);
    let out = bash(&format!(
        "printf 'short\\n%017d\\nnever\\n' 0 | pk-queue put {name} --lines"
    ))
    .output()
    .unwrap();
    assert_one_line_error(&out, "queue", 65);
    assert_eq!(
        stdout(&q(&["get", &name, "-n", "5", "--timeout", "0"])),
        "short\n"
    );
    // create: taken (71), or the same queue with --exist-ok (0), or not (2).
    assert_one_line_error(&q(&["create", &name]), "queue", 71);
    assert_success(&q(&[
        "create",
        &name,
        "-k",
        "5",
        "--max-size",
        "16",
        "--exist-ok",
    ]));
    assert_usage(&q(&["create", &name, "--exist-ok"]), "queue");
    assert_success(&q(&["unlink", &name]));
    for args in [
        vec!["put", &name, "x"],
        vec!["get", &name],
        vec!["stat", &name],
        vec!["unlink", &name],
    ] {
        assert_one_line_error(&q(&args), "queue", 66);
    }
    check.finish();
}

#[test]
fn create_exist_ok_beside_an_unlink_still_leaves_a_queue() {
    // `create --exist-ok` finds the name taken (its link fails), then
    // opens it; an unlink in between made the create exit 66 "not
    // found". strace holds it just after the failed link while the
    // unlink runs.
    if strace_missing() {
        return;
    }
    let mut check = ShmCheck::start();
    let name = check.name("existok");
    assert_success(&q(&["create", &name, "-k", "4"]));
    let dir = tempfile::tempdir().unwrap();
    let trace = dir.path().join("trace");
    let mut cmd = std::process::Command::new("timeout");
    cmd.args(["-s", "KILL", "20", "strace", "-qq", "-o"])
        .arg(&trace)
        .args([
            "-e",
            "trace=linkat",
            "-e",
            "inject=linkat:delay_exit=500000",
        ])
        .arg(bin("pk-queue"))
        .args(["create", &name, "-k", "4", "--exist-ok"]);
    let mut create = Running::start(cmd, false);
    wait_for_traced(&trace, "linkat", 1);
    assert_success(&q(&["unlink", &name]));
    assert_eq!(create.wait().code(), Some(0));
    // The create then made the queue anew (a second link), unless the
    // unlink came only after its open (a machine too loaded to unlink
    // within the half second): then it found the old one.
    let links = std::fs::read_to_string(&trace)
        .unwrap()
        .matches("linkat(")
        .count();
    if links == 2 {
        assert_success(&q(&["put", &name, "x"]));
        assert_success(&q(&["unlink", &name]));
    }
    check.finish();
}

#[test]
fn a_get_waits_for_a_put_from_another_shell() {
    let mut check = ShmCheck::start();
    let name = check.name("wait");
    assert_success(&q(&["create", &name]));
    let mut cmd = pk_std("queue");
    cmd.args(["get", &name, "-n", "2"]);
    let mut getter = Running::start(cmd, false);
    std::thread::sleep(std::time::Duration::from_millis(100));
    assert_success(&q(&["put", &name, "hello"]));
    assert_success(&q(&["put", &name, "world"]));
    assert_eq!(getter.wait_for(|l| l == "world"), ["hello", "world"]);
    assert_eq!(getter.wait().code(), Some(0));
    // A timed get that runs out: exit 1, nothing printed.
    let t0 = std::time::Instant::now();
    let out = q(&["get", &name, "--timeout", "200ms"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(t0.elapsed() >= std::time::Duration::from_millis(200));
    // A timeout of days, or one past what the clock holds, is a wait like
    // any other (no 24 h limit): the gets wait for their puts.
    for long in ["400d", "200000d", "99999999999999999999999d"] {
        let mut cmd = pk_std("queue");
        cmd.args(["get", &name, "--timeout", long]);
        let mut getter = Running::start(cmd, false);
        std::thread::sleep(std::time::Duration::from_millis(100));
        assert_success(&q(&["put", &name, long]));
        assert_eq!(getter.wait_for(|l| l == long), [long]);
        assert_eq!(getter.wait().code(), Some(0), "--timeout {long}");
    }
    assert_success(&q(&["unlink", &name]));
    check.finish();
}

#[test]
fn many_shell_producers_and_consumers_every_message_once_in_order() {
    let mut check = ShmCheck::start();
    let name = check.name("many");
    assert_success(&q(&[
        "create",
        &name,
        "--capacity",
        "8",
        "--max-size",
        "64",
    ]));
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    // 4 producers put 50 lines each through --lines, 4 consumers take 50
    // each.
    let out = bash(&format!(
        "for p in 1 2 3 4; do seq 1 50 | sed \"s/^/p$p-/\" | pk-queue put {name} --lines --timeout 20s & done; \
         for c in 1 2 3 4; do pk-queue get {name} -n 50 --timeout 20s > {d}/c$c & done; wait; \
         pk-queue get {name} -n 200 --timeout 0 > {d}/rest; cat {d}/c? {d}/rest | wc -l"
    ))
    .output()
    .unwrap();
    assert_eq!(
        stdout(&out),
        "200\n",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut all = HashSet::new();
    for f in ["c1", "c2", "c3", "c4", "rest"] {
        let text = std::fs::read_to_string(dir.path().join(f)).unwrap();
        let mut last = [0u32; 5];
        for line in text.lines() {
            let (p, n) = line.split_once('-').unwrap();
            let p: usize = p[1..].parse().unwrap();
            let n: u32 = n.parse().unwrap();
            assert!(n > last[p], "{f}: p{p}-{n} after p{p}-{}", last[p]);
            last[p] = n;
            assert!(all.insert(line.to_string()), "{line} twice");
        }
    }
    assert_eq!(all.len(), 200);
    assert_success(&q(&["unlink", &name]));
    check.finish();
}

#[test]
fn named_queue_bad_input_is_refused_and_changes_nothing() {
    let mut check = ShmCheck::start();
    let name = check.name("bad");
    assert_success(&q(&["create", &name, "-k", "2", "--max-size", "8"]));
    assert_success(&q(&["put", &name, "keep"]));
    let before = queue_bytes(&name);
    let long = format!("/{}", "x".repeat(252));
    let table: Vec<Vec<&str>> = vec![
        vec!["create", "jobs"],
        vec!["create", "/a/b"],
        vec!["create", &long],
        vec!["create", "/pk-never", "--capacity", "0"],
        vec!["create", "/pk-never", "--capacity", "16777217"],
        vec!["create", "/pk-never", "--max-size", "1048577"],
        vec!["create", "/pk-never", "--max-size", "-1"],
        vec![
            "create",
            "/pk-never",
            "--capacity",
            "16777216",
            "--max-size",
            "1048576",
        ],
        vec!["put", &name],
        vec!["put", &name, "a", "-"],
        vec!["put", &name, "--lines", "a"],
        vec!["put", &name, "--lines", "-0"],
        vec!["put", &name, "--timeout", "soon", "a"],
        vec!["put", "nope", "a"],
        vec!["get", &name, "-n", "0"],
        vec!["get", &name, "-n", "x"],
        vec!["get", &name, "--timeout", "-1"],
        vec!["get", &name, "extra"],
        vec!["stat"],
        vec!["unlink", "/"],
    ];
    for args in &table {
        let out = q(args);
        assert_usage(&out, "queue");
        assert!(out.stdout.is_empty(), "{args:?}");
        assert_eq!(queue_bytes(&name), before, "{args:?} changed the queue");
    }
    assert!(!std::path::Path::new("/dev/shm/pk-never").exists());
    assert_eq!(stdout(&q(&["get", &name, "--timeout", "0"])), "keep\n");
    assert_success(&q(&["unlink", &name]));
    check.finish();
}

#[test]
fn foreign_or_damaged_queue_files_are_refused_with_one_line() {
    let mut check = ShmCheck::start();
    let path = |n: &str| format!("/dev/shm/{}", &n[1..]);
    let mut cases = Vec::new();
    // Ours but not a queue: empty, garbage, a pk-shm segment, a queue whose
    // header was damaged.
    let empty = check.name("empty");
    std::fs::write(path(&empty), b"").unwrap();
    cases.push((empty, 65));
    let junk = check.name("junk");
    std::fs::write(path(&junk), [0x5a; 32]).unwrap();
    cases.push((junk, 65));
    let seg = check.name("seg");
    assert_success(
        &pk("shm")
            .args(["create", &seg, "--size", "65536"])
            .output()
            .unwrap(),
    );
    cases.push((seg, 65));
    let hurt = check.name("hurt");
    assert_success(&q(&["create", &hurt, "-k", "4"]));
    let mut bytes = queue_bytes(&hurt);
    bytes[16] ^= 0xff; // the capacity no longer matches the size
    std::fs::write(path(&hurt), &bytes).unwrap();
    cases.push((hurt, 65));
    // A lock word that names no pid; a queue of the older format (robust
    // pthread mutexes; bytes 12..16 are padding); one made in another pid
    // namespace.
    for (tag, at, value) in [
        ("lockword", 64, u64::MAX),
        ("format2", 8, 2),
        ("pidns", 48, 1),
    ] {
        let n = check.name(tag);
        assert_success(&q(&["create", &n, "-k", "4"]));
        let mut bytes = queue_bytes(&n);
        bytes[at..at + 8].copy_from_slice(&value.to_ne_bytes());
        std::fs::write(path(&n), &bytes).unwrap();
        cases.push((n, 65));
    }
    if is_root() {
        for (tag, script) in [
            ("foreign-empty", ": > {p}"),
            ("foreign-rand", "head -c 32 /dev/urandom > {p}"),
        ] {
            let n = check.name(tag);
            let mut words = as_nobody();
            words.extend(["sh".into(), "-c".into(), script.replace("{p}", &path(&n))]);
            assert_success(&command(&words).output().unwrap());
            cases.push((n, 77));
        }
        // A real queue made by another user and left open to everyone.
        let n = check.name("foreign-queue");
        let mut words = as_nobody();
        words.extend([
            bin("pk-queue").display().to_string(),
            "create".into(),
            n.clone(),
        ]);
        assert_success(&command(&words).output().unwrap());
        std::fs::set_permissions(
            path(&n),
            std::os::unix::fs::PermissionsExt::from_mode(0o666),
        )
        .unwrap();
        cases.push((n, 77));
    } else {
        eprintln!("not root: another user's objects are not tried");
    }
    for (n, code) in &cases {
        let before = std::fs::read(path(n)).unwrap();
        for args in [
            vec!["put", n.as_str(), "x"],
            vec!["get", n.as_str(), "--timeout", "0"],
            vec!["stat", n.as_str()],
        ] {
            let out = q(&args);
            assert_one_line_error(&out, "queue", *code);
            assert!(out.stdout.is_empty(), "{args:?}");
        }
        assert_eq!(std::fs::read(path(n)).unwrap(), before, "{n} was changed");
        std::fs::remove_file(path(n)).unwrap();
    }
    check.finish();
}

#[test]
fn a_sigbus_sent_by_a_process_is_not_taken_for_a_truncation() {
    // Another process sends SIGBUS with an address inside the queue's
    // mapping (rt_sigqueueinfo lets it choose one): that is a signal, not
    // a fault, and it ends the process as SIGBUS does. It used to be taken
    // for a truncation: the mapping was cut off from the queue, and the
    // queue, whole, was reported truncated (65).
    let mut check = ShmCheck::start();
    let name = check.name("spoof");
    assert_success(&q(&["create", &name, "-k", "4", "--max-size", "8"]));
    let mut cmd = pk_std("queue");
    cmd.args(["get", &name, "--timeout", "20"]);
    let mut getter = Running::start(cmd, false);
    let pid = getter.child.id();
    let file = format!("/dev/shm/{}", &name[1..]);
    let deadline = std::time::Instant::now() + TIMEOUT;
    let start = loop {
        let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
        if let Some(l) = maps.lines().find(|l| l.ends_with(&file)) {
            break usize::from_str_radix(l.split('-').next().unwrap(), 16).unwrap();
        }
        assert!(std::time::Instant::now() < deadline, "never mapped");
        std::thread::sleep(std::time::Duration::from_millis(5));
    };
    std::thread::sleep(std::time::Duration::from_millis(200));
    // siginfo_t: signo, errno, code, then (at 16) the fault address.
    let mut info = [0u64; 16];
    info[0] = libc::SIGBUS as u64;
    info[1] = (libc::SI_QUEUE as u32) as u64;
    info[2] = start as u64;
    // SAFETY: rt_sigqueueinfo reads the 128-byte siginfo_t at `info`,
    // which lives on this stack for the call; it touches no other memory.
    let r = unsafe {
        libc::syscall(
            libc::SYS_rt_sigqueueinfo,
            pid as libc::pid_t,
            libc::SIGBUS,
            info.as_ptr(),
        )
    };
    assert_eq!(r, 0, "{}", std::io::Error::last_os_error());
    let st = getter.wait();
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&st),
        Some(libc::SIGBUS),
        "{st:?}"
    );
    // The queue is whole.
    assert_success(&q(&["put", &name, "x"]));
    assert_eq!(stdout(&q(&["get", &name])), "x\n");
    assert_success(&q(&["unlink", &name]));
    check.finish();
}

#[test]
fn a_queue_truncated_under_a_consumer_fails_cleanly() {
    let mut check = ShmCheck::start();
    let name = check.name("trunc");
    assert_success(&q(&["create", &name, "-k", "4", "--max-size", "8"]));
    // Asleep with no timeout: nothing will ever wake it through the
    // counter, whose page is gone.
    let mut cmd = pk_std("queue");
    cmd.args(["get", &name])
        .stderr(std::process::Stdio::piped());
    let mut getter = Running::start(cmd, false);
    std::thread::sleep(std::time::Duration::from_millis(300));
    std::fs::OpenOptions::new()
        .write(true)
        .open(format!("/dev/shm/{}", &name[1..]))
        .unwrap()
        .set_len(0)
        .unwrap();
    // A put from elsewhere can no longer open it; the waiting get finds
    // the truncation by itself and ends with one line, never with SIGBUS.
    assert_one_line_error(&q(&["put", &name, "x"]), "queue", 65);
    let st = getter.wait();
    assert_eq!(st.code(), Some(65), "{st:?}");
    let mut err = String::new();
    std::io::Read::read_to_string(&mut getter.child.stderr.take().unwrap(), &mut err).unwrap();
    assert!(err.contains("truncated"), "{err}");
    // What is left is empty: unlink removes it.
    assert_success(&q(&["unlink", &name]));
    check.finish();
}

#[test]
fn a_lock_left_by_a_dead_holder_is_taken_over() {
    // The put lock names a process that is gone (a pid that ended, as a
    // producer SIGKILLed inside the lock leaves it), and the bytes after it
    // are garbage (where a robust pthread mutex kept its list pointers): a
    // put and a stat go through, and nothing else changes.
    let mut check = ShmCheck::start();
    let name = check.name("dead");
    assert_success(&q(&["create", &name, "-k", "4", "--max-size", "8"]));
    let mut gone = std::process::Command::new("true").spawn().unwrap();
    let pid = u64::from(gone.id());
    gone.wait().unwrap();
    let path = format!("/dev/shm/{}", &name[1..]);
    let mut bytes = queue_bytes(&name);
    bytes[64..72].copy_from_slice(&(pid | 1 << 31).to_ne_bytes());
    bytes[72..128].fill(0xa5);
    std::fs::write(&path, &bytes).unwrap();
    assert_success(&q(&["put", &name, "x", "--timeout", "5"]));
    let out = q(&["stat", &name]);
    assert_success(&out);
    assert_eq!(
        stdout(&out),
        format!("name={name} capacity=4 max_size=8 qsize=1\n")
    );
    let after = queue_bytes(&name);
    assert_eq!(&after[64..72], &[0; 8], "the lock was given back");
    assert_eq!(&after[72..128], &bytes[72..128]);
    assert_success(&q(&["unlink", &name]));
    check.finish();
}

#[test]
fn a_truncation_that_spares_the_sleepers_pages_is_found_too() {
    // Cut to its first two pages (header and counters): a get asleep on
    // the empty queue, and a put asleep on a full one, touch nothing else,
    // so no SIGBUS tells them. They used to sleep on for ever; the file's
    // size, looked at as each one-second slice ends, tells them now.
    let mut check = ShmCheck::start();
    for (tag, fill, args) in [("get", "", vec!["get"]), ("put", "1 2", vec!["put", "x"])] {
        let name = check.name(tag);
        assert_success(&q(&["create", &name, "-k", "2", "--max-size", "300"]));
        if !fill.is_empty() {
            assert_success(&q(&["put", &name, "1", "2"]));
        }
        let mut cmd = pk_std("queue");
        cmd.arg(args[0])
            .arg(&name)
            .args(&args[1..])
            .stderr(std::process::Stdio::piped());
        let mut sleeper = Running::start(cmd, false);
        std::thread::sleep(std::time::Duration::from_millis(300));
        std::fs::OpenOptions::new()
            .write(true)
            .open(format!("/dev/shm/{}", &name[1..]))
            .unwrap()
            .set_len(8192)
            .unwrap();
        let st = sleeper.wait();
        assert_eq!(st.code(), Some(65), "{tag}: {st:?}");
        let mut err = String::new();
        std::io::Read::read_to_string(&mut sleeper.child.stderr.take().unwrap(), &mut err).unwrap();
        assert!(err.contains("truncated"), "{err}");
        std::fs::remove_file(format!("/dev/shm/{}", &name[1..])).unwrap();
    }
    check.finish();
}

/// Store `head` and `tail` into a named queue's counters, as a queue that
/// has moved that many messages would hold them.
fn set_counters(name: &str, head: u32, tail: u32) {
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(format!("/dev/shm/{}", &name[1..]))
        .unwrap();
    f.write_all_at(&head.to_le_bytes(), 4096).unwrap();
    f.write_all_at(&tail.to_le_bytes(), 4096 + 64).unwrap();
}

#[test]
fn messages_cross_the_counters_wrap_whole_and_in_order() {
    // After 2^32 messages the counters wrap. With a capacity that does not
    // divide 2^32 (100 here) a ring of `capacity` slots jumped at the
    // wrap: one message was lost and another came out twice.
    let mut check = ShmCheck::start();
    let name = check.name("wrap");
    assert_success(&q(&["create", &name, "-k", "100", "--max-size", "16"]));
    set_counters(&name, u32::MAX - 95, u32::MAX - 95);
    let items: String = (1..=100).map(|i| format!("{i}\n")).collect();
    let put = pk("queue")
        .args(["put", &name, "--lines", "--timeout", "0"])
        .write_stdin(items.clone())
        .output()
        .unwrap();
    assert_success(&put);
    let got = q(&["get", &name, "-n", "100", "--timeout", "0"]);
    assert_success(&got);
    assert_eq!(stdout(&got), items);
    assert_success(&q(&["unlink", &name]));
    check.finish();
}

#[test]
fn a_consumer_away_while_billions_of_messages_passed_takes_no_stale_one() {
    // A get asleep on an empty queue, its view of the head from before
    // others put and took 2^31 + 100 messages (here: the counters are set
    // so). Its old head lies 2^31 - 100 "ahead" of the tail, modulo 2^32:
    // it used to take that for messages, print the stale bytes of four
    // slots and leave counters that made the queue unusable.
    let mut check = ShmCheck::start();
    let name = check.name("stale");
    assert_success(&q(&["create", &name, "-k", "4", "--max-size", "16"]));
    assert_success(&q(&["put", &name, "old-1", "old-2", "old-3"]));
    assert_eq!(
        stdout(&q(&["get", &name, "-n", "3"])),
        "old-1\nold-2\nold-3\n"
    );
    let mut cmd = pk_std("queue");
    cmd.args(["get", &name, "-n", "2", "--timeout", "20"]);
    let mut getter = Running::start(cmd, false);
    std::thread::sleep(std::time::Duration::from_millis(300));
    let moved = 3 + (1u32 << 31) + 100;
    set_counters(&name, moved, moved);
    // It wakes within a second, finds the queue still empty, sleeps on.
    std::thread::sleep(std::time::Duration::from_millis(1500));
    assert_success(&q(&["put", &name, "new-1", "new-2"]));
    assert_eq!(getter.wait_for(|_| true), ["new-1"]);
    assert_eq!(getter.wait_for(|_| true), ["new-2"]);
    assert_eq!(getter.wait().code(), Some(0));
    assert_eq!(
        stdout(&q(&["stat", &name])),
        format!("name={name} capacity=4 max_size=16 qsize=0\n")
    );
    assert_success(&q(&["unlink", &name]));
    check.finish();
}

#[test]
fn counters_that_do_not_add_up_are_refused_untouched() {
    let mut check = ShmCheck::start();
    let path = |n: &str| format!("/dev/shm/{}", &n[1..]);
    for (tag, head, tail) in [("ahead", 100, 0), ("behind", 0, 5)] {
        let name = check.name(tag);
        assert_success(&q(&["create", &name, "-k", "4", "--max-size", "8"]));
        set_counters(&name, head, tail);
        let before = std::fs::read(path(&name)).unwrap();
        for args in [
            vec!["get", name.as_str(), "-n", "3", "--timeout", "0"],
            vec!["put", name.as_str(), "x"],
            vec!["stat", name.as_str()],
        ] {
            let out = q(&args);
            assert_one_line_error(&out, "queue", 65);
            assert!(out.stdout.is_empty(), "{args:?}");
        }
        assert_eq!(std::fs::read(path(&name)).unwrap(), before);
        assert_success(&q(&["unlink", &name]));
    }
    check.finish();
}

#[test]
fn unlink_removes_queues_and_leaves_other_files_alone() {
    let mut check = ShmCheck::start();
    let path = |n: &str| format!("/dev/shm/{}", &n[1..]);
    let seg = check.name("seg");
    assert_success(
        &pk("shm")
            .args(["create", &seg, "--size", "4096"])
            .output()
            .unwrap(),
    );
    let junk = check.name("junk");
    std::fs::write(path(&junk), [0x5a; 32]).unwrap();
    for n in [&seg, &junk] {
        let before = std::fs::read(path(n)).unwrap();
        assert_one_line_error(&q(&["unlink", n]), "queue", 65);
        assert_eq!(std::fs::read(path(n)).unwrap(), before, "{n}");
        std::fs::remove_file(path(n)).unwrap();
    }
    // A directory under the name: not a regular file, 65 as the help says.
    let dir = check.name("dir");
    std::fs::create_dir(path(&dir)).unwrap();
    for args in [vec!["unlink", dir.as_str()], vec!["stat", dir.as_str()]] {
        assert_one_line_error(&q(&args), "queue", 65);
    }
    assert_one_line_error(&pk("shm").args(["get", &dir]).output().unwrap(), "shm", 65);
    std::fs::remove_dir(path(&dir)).unwrap();
    // A Unix socket too (open(2) says ENXIO, which was a 71).
    let socket = check.name("socket");
    drop(std::os::unix::net::UnixListener::bind(path(&socket)).unwrap());
    for args in [
        vec!["unlink", socket.as_str()],
        vec!["stat", socket.as_str()],
        vec!["put", socket.as_str(), "x"],
        vec!["get", socket.as_str(), "--timeout", "0"],
    ] {
        let out = q(&args);
        assert_one_line_error(&out, "queue", 65);
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("not a regular file (a socket)"),
            "{out:?}"
        );
    }
    std::fs::remove_file(path(&socket)).unwrap();
    // A queue of the older format is refused with what to do, and unlink
    // still removes it.
    let old = check.name("old");
    assert_success(&q(&["create", &old, "-k", "4"]));
    {
        use std::os::unix::fs::FileExt;
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(path(&old))
            .unwrap();
        f.write_all_at(&1u32.to_le_bytes(), 8).unwrap();
    }
    let out = q(&["stat", &old]);
    assert_one_line_error(&out, "queue", 65);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("create it again"),
        "{out:?}"
    );
    assert_success(&q(&["unlink", &old]));
    check.finish();
}

#[test]
fn each_message_of_a_stream_waits_its_own_timeout() {
    // A capacity of 1, full from the first line. The second line comes
    // after 4 s, past the 3 s --timeout counted from the start; a consumer
    // makes room at 5 s, 1 s into that line's own wait. One deadline for
    // the whole command gave up at once on the second line (exit 1).
    let mut check = ShmCheck::start();
    let name = check.name("stream");
    assert_success(&q(&["create", &name, "-k", "1", "--max-size", "8"]));
    let script = format!(
        "(echo a; sleep 4; echo b) | {} put {name} --lines --timeout 3",
        bin("pk-queue").display()
    );
    let mut put = std::process::Command::new("sh");
    put.args(["-c", &script]);
    let mut producer = Running::start(put, false);
    std::thread::sleep(std::time::Duration::from_secs(5));
    let got = q(&["get", &name, "-n", "2", "--timeout", "10"]);
    assert_success(&got);
    assert_eq!(stdout(&got), "a\nb\n");
    assert_eq!(producer.wait().code(), Some(0));
    assert_success(&q(&["unlink", &name]));
    check.finish();
}

#[test]
fn a_get_whose_output_is_gone_takes_nothing() {
    // A get used to take a message first and find out at the write that
    // no one would read it: `get >&-` and `get -n 5 | head -1` lost what
    // they took after the reader had gone.
    let mut check = ShmCheck::start();
    let name = check.name("gone");
    assert_success(&q(&["create", &name, "-k", "8", "--max-size", "16"]));
    assert_success(&q(&["put", &name, "one", "two", "three"]));
    // Closed at start: the write error, nothing taken.
    let out = bash(&format!("pk-queue get {name} >&-")).output().unwrap();
    assert_one_line_error(&out, "queue", 71);
    assert!(String::from_utf8_lossy(&out.stderr).contains("Bad file descriptor"));
    // A pipe whose reader has gone: a quiet 141, nothing taken.
    let out = into_a_readerless_pipe("queue", &["get", &name, "-n", "3"]);
    assert_eq!(out.status.code(), Some(141), "{out:?}");
    assert!(out.stderr.is_empty(), "{out:?}");
    assert_eq!(
        stdout(&q(&["stat", &name])),
        format!("name={name} capacity=8 max_size=16 qsize=3\n")
    );
    // A reader that leaves while the get waits for its next message: the
    // message that then comes is left in the queue.
    assert_eq!(stdout(&q(&["get", &name, "-n", "2"])), "one\ntwo\n");
    let mut getter = std::process::Command::new("timeout")
        .args(["-s", "KILL", "60"])
        .arg(bin("pk-queue"))
        .args(["get", &name, "-n", "2"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut reader = std::io::BufReader::new(getter.stdout.take().unwrap());
    let mut line = String::new();
    std::io::BufRead::read_line(&mut reader, &mut line).unwrap();
    assert_eq!(line, "three\n");
    drop(reader);
    std::thread::sleep(std::time::Duration::from_millis(200));
    assert_success(&q(&["put", &name, "four"]));
    let out = getter.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(141), "{out:?}");
    assert!(out.stderr.is_empty(), "{out:?}");
    assert_eq!(stdout(&q(&["get", &name, "--timeout", "0"])), "four\n");
    assert_success(&q(&["unlink", &name]));
    check.finish();
}

#[test]
fn a_put_stopped_by_a_full_queue_says_how_many_and_leaves_the_rest() {
    // `put --lines` read ahead of what it put and said only "the queue is
    // full": a caller could neither tell how far it got nor go on from
    // there.
    let mut check = ShmCheck::start();
    let name = check.name("rest");
    assert_success(&q(&["create", &name, "-k", "3", "--max-size", "16"]));
    let dir = tempfile::tempdir().unwrap();
    let list = dir.path().join("list");
    std::fs::write(&list, "l1\nl2\nl3\nl4\nl5\n").unwrap();
    let out = bash(&format!(
        "(pk-queue put {name} --lines --timeout 0 -v; echo status=$?; cat) < {}",
        list.display()
    ))
    .output()
    .unwrap();
    assert_eq!(stdout(&out), "status=1\nl4\nl5\n", "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        format!("pk-queue: put({name}): the queue is full (3 put)\n")
    );
    assert_eq!(stdout(&q(&["get", &name, "-n", "3"])), "l1\nl2\nl3\n");
    // Given as arguments: how many of how many.
    let out = q(&[
        "put",
        &name,
        "a",
        "b",
        "c",
        "d",
        "e",
        "--timeout",
        "0",
        "-v",
    ]);
    assert_one_line_error(&out, "queue", 1);
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        format!("pk-queue: put({name}): the queue is full (3 of 5 put)\n")
    );
    assert_eq!(stdout(&q(&["get", &name, "-n", "3"])), "a\nb\nc\n");
    assert_success(&q(&["unlink", &name]));
    check.finish();
}

#[test]
fn unlink_removes_an_empty_file_and_the_help_says_so() {
    // The help said unlink removes "only a queue, never another kind of
    // file", while it removes an empty file too (what a truncation leaves
    // of a queue, which no other command can use or remove).
    let mut check = ShmCheck::start();
    let name = check.name("empty");
    std::fs::write(format!("/dev/shm/{}", &name[1..]), b"").unwrap();
    assert_success(&q(&["unlink", &name]));
    let help = assert_help("queue", &[], &["removes a queue, or an empty file"]);
    assert!(!help.contains("never another kind of file"), "{help}");
    check.finish();
}

#[test]
fn a_huge_file_under_the_name_is_not_a_queue() {
    // A sparse petabyte: the whole file was mapped before its header was
    // looked at, and the mmap failed (ENOMEM, 71). With a queue's header
    // (a queue grown with truncate) it is no queue of its size either.
    let mut check = ShmCheck::start();
    let path = |n: &str| format!("/dev/shm/{}", &n[1..]);
    let zeroes = check.name("huge");
    let grown = check.name("grown");
    assert_success(&q(&["create", &grown, "-k", "4"]));
    for n in [&zeroes, &grown] {
        let out = bash(&format!("truncate -s 1P {}", path(n)))
            .output()
            .unwrap();
        assert_success(&out);
    }
    for (n, why) in [
        (&zeroes, "not a queue"),
        (&grown, "does not match its 1125899906842624 bytes"),
    ] {
        for args in [
            vec!["stat", n.as_str()],
            vec!["put", n.as_str(), "x"],
            vec!["get", n.as_str(), "--timeout", "0"],
        ] {
            let out = q(&args);
            assert_one_line_error(&out, "queue", 65);
            assert!(
                String::from_utf8_lossy(&out.stderr).contains(why),
                "{out:?}"
            );
        }
        std::fs::remove_file(path(n)).unwrap();
    }
    check.finish();
}

#[test]
fn a_message_longer_than_the_limit_is_a_damaged_queue() {
    // A slot whose length is above --max-size cannot come from a put: it
    // was cut down to the limit and printed, with bytes that were never
    // part of any message.
    let mut check = ShmCheck::start();
    let name = check.name("longslot");
    assert_success(&q(&["create", &name, "-k", "4", "--max-size", "8"]));
    assert_success(&q(&["put", &name, "abc"]));
    {
        use std::os::unix::fs::FileExt;
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(format!("/dev/shm/{}", &name[1..]))
            .unwrap();
        // The first slot's length, at the start of the ring.
        f.write_all_at(&100u32.to_ne_bytes(), 8192).unwrap();
    }
    let before = queue_bytes(&name);
    let out = q(&["get", &name, "--timeout", "0"]);
    assert_one_line_error(&out, "queue", 65);
    assert!(out.stdout.is_empty(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("damaged"),
        "{out:?}"
    );
    assert_eq!(queue_bytes(&name), before, "nothing was taken");
    assert_success(&q(&["unlink", &name]));
    check.finish();
}

#[test]
fn names_with_control_characters_are_refused() {
    // A newline in a name was taken, and `stat` then printed its one
    // line as two: `name=/a` and `b capacity=...`.
    let check = ShmCheck::start();
    for name in [
        "/pk-ctl\na",
        "/pk-ctl\ta",
        "/pk-ctl\u{1b}[31ma",
        "/pk-ctl\u{7f}",
    ] {
        assert_control_name_refused(
            "queue",
            name,
            &[
                &["create", name],
                &["put", name, "x"],
                &["get", name, "--timeout", "0"],
                &["stat", name],
                &["unlink", name],
            ],
        );
    }
    check.finish();
}
