//! pk-pool exec on this machine, flag by flag against xargs and GNU
//! parallel run on the same input (the parallel comparisons are skipped,
//! with one line, where parallel is not installed).

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::process::Stdio;

use crate::common::*;

/// Whether GNU parallel is here; says so once per test when it is not.
pub fn have_parallel() -> bool {
    let ok = std::process::Command::new("parallel")
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        eprintln!(
            "skipped the GNU parallel comparison: parallel is not installed (scripts/ci-deps.sh)"
        );
    }
    ok
}

/// stdout of a bash script (pk-pool on PATH), asserting its exit code.
fn sh(script: &str, code: i32) -> String {
    let out = bash(script).output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(code),
        "{script}\nstderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout(&out)
}

fn sorted(s: &str) -> Vec<String> {
    let mut v: Vec<String> = s.lines().map(String::from).collect();
    v.sort();
    v
}

fn exec(args: &[&str], input: &str) -> std::process::Output {
    pk("pool")
        .arg("exec")
        .args(args)
        .write_stdin(input)
        .output()
        .unwrap()
}

#[test]
fn the_first_command_starts_before_the_input_ends() {
    let mut cmd = pk_std("pool");
    cmd.args(["exec", "-j", "2", "--", "echo", "got"])
        .stdin(Stdio::piped());
    let mut run = Running::start(cmd, true);
    let mut stdin = run.child.stdin.take().unwrap();
    stdin.write_all(b"a\n").unwrap();
    // The input is still open: `a` runs anyway (the old exec read all of
    // stdin first).
    run.wait_for(|l| l == "got a");
    stdin.write_all(b"b\n").unwrap();
    run.wait_for(|l| l == "got b");
    drop(stdin);
    assert_eq!(run.wait().code(), Some(0));
}

#[test]
fn endless_input_is_read_only_as_slots_free_up() {
    // `yes` never ends: only reading as jobs need items lets this finish
    // (the old exec read everything and died of memory).
    let out = bash("yes | pk-pool exec -j 2 --halt now,success=5 -- true")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
}

#[test]
fn lines_are_whole_items_and_empty_lines_jobs_as_in_parallel() {
    let input = "a b\n\n'q'\n";
    let ours = stdout(&exec(&["-k", "--", "echo", "x{}y"], input));
    assert_eq!(ours, "xa by\nxy\nx'q'y\n");
    let skipped = stdout(&exec(&["-k", "--skip-empty", "--", "echo", "x{}y"], input));
    assert_eq!(skipped, "xa by\nx'q'y\n");
    // xargs -d '\n' reads lines the same way (its default splits at blanks).
    assert_eq!(
        sh("printf 'a b\\n\\nc\\n' | xargs -d '\\n' -n 1 echo x", 0),
        sh("printf 'a b\\n\\nc\\n' | pk-pool exec -k -- echo x", 0)
    );
    if have_parallel() {
        assert_eq!(
            sh(
                "printf 'a\\n\\nb\\n' | parallel --will-cite -k echo x{}y",
                0
            ),
            sh("printf 'a\\n\\nb\\n' | pk-pool exec -k -- echo x{}y", 0)
        );
    }
}

#[test]
fn null_delimiter_files_and_groups_match_xargs() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    for (xargs, ours) in [
        (
            "printf 'a b\\nc\\0d\\0' | xargs -0 -n 1 printf '[%s]\\n'",
            "printf 'a b\\nc\\0d\\0' | pk-pool exec -k -0 -- printf '[%s]\\n'",
        ),
        (
            "printf 'a,b,,c' | xargs -d , -n 1 printf '[%s]\\n'",
            "printf 'a,b,,c' | pk-pool exec -k -d , -- printf '[%s]\\n'",
        ),
        (
            "seq 7 | xargs -n 3 echo",
            "seq 7 | pk-pool exec -k -n 3 -- echo",
        ),
        (
            "seq 4 | xargs -I {} echo [{}] {}",
            "seq 4 | pk-pool exec -k -I {} -- echo [{}] {}",
        ),
        (
            "seq 3 | xargs -I XX echo XX {}",
            "seq 3 | pk-pool exec -k -I XX -- echo XX {}",
        ),
    ] {
        assert_eq!(sh(xargs, 0), sh(ours, 0), "{ours}");
    }
    let script = format!(
        "printf '1\\n2\\n' > {d}/f1; printf '3\\n' > {d}/f2; \
         cat {d}/f1 {d}/f2 | xargs -d '\\n' -n 1 echo; echo --; \
         echo stdin-is-not-read | pk-pool exec -k -a {d}/f1 -a {d}/f2 -- echo"
    );
    let out = sh(&script, 0);
    let (x, o) = out.split_once("--\n").unwrap();
    assert_eq!(x, o, "-a files one after the other");
    assert_eq!(o, "1\n2\n3\n");
}

#[test]
fn replacement_strings_match_parallel() {
    let items = "a/b.c.d\n.bashrc\n/x/y/\ndir.x/file\n\n/x\n";
    // ({%}, the slot, depends on which job ends first: checked alone.)
    let args = ["[{}]", "[{.}]", "[{/}]", "[{//}]", "[{/.}]", "{#}"];
    let mut a = vec!["-k", "-j", "2", "--", "echo"];
    a.extend(args);
    let ours = stdout(&exec(&a, items));
    assert_eq!(
        ours.lines().next(),
        Some("[a/b.c.d] [a/b.c] [b.c.d] [a] [b.c] 1")
    );
    let slots = stdout(&exec(&["-j", "3", "--", "echo", "{%}"], "a\nb\nc\nd\ne\n"));
    assert!(
        slots.lines().all(|l| ["1", "2", "3"].contains(&l)) && slots.lines().count() == 5,
        "{slots}"
    );
    if have_parallel() {
        // Quoted, so parallel's shell does not glob the brackets.
        let quoted: Vec<String> = args.iter().map(|a| format!("'{a}'")).collect();
        let theirs = sh(
            &format!(
                "printf '{}' | parallel --will-cite -k -j 2 echo {}",
                items.replace('\n', "\\n"),
                quoted.join(" ")
            ),
            0,
        );
        assert_eq!(ours, theirs);
        // -n 2: a lone {} is both items, {} in a word the items joined.
        assert_eq!(
            sh("seq 5 | parallel --will-cite -k -n 2 echo {} x{}y", 0),
            sh("seq 5 | pk-pool exec -k -n 2 -- echo {} x{}y", 0)
        );
    }
}

/// A job script that waits for `$1.go` to exist before its last line.
const WAIT_GO: &str = "echo \"$1 first\"; touch \"$1.ready\"; \
    while [ ! -e \"$1.go\" ]; do sleep 0.01; done; echo \"$1 last\"";

#[test]
fn grouped_output_never_mixes_the_lines_of_two_jobs() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    // a prints, b prints, then both finish: interleaved in time, never in
    // the output.
    let script = format!(
        "( until [ -e {a}.ready ] && [ -e {b}.ready ]; do sleep 0.01; done; touch {a}.go {b}.go ) & \
         printf '%s\\n' {a} {b} | pk-pool exec -j 2 -- sh -c '{WAIT_GO}' sh; wait",
        a = a.display(),
        b = b.display()
    );
    let out = sh(&script, 0);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 4, "{out}");
    for pair in lines.chunks(2) {
        let job = pair[0].split(' ').next().unwrap();
        assert_eq!(
            pair,
            [format!("{job} first"), format!("{job} last")],
            "{out}"
        );
    }
}

#[test]
fn line_buffer_prints_a_line_while_its_job_still_runs() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a");
    let mut cmd = pk_std("pool");
    cmd.args(["exec", "--line-buffer", "--", "sh", "-c", WAIT_GO, "sh"])
        .stdin(Stdio::piped());
    let mut run = Running::start(cmd, true);
    let mut stdin = run.child.stdin.take().unwrap();
    writeln!(stdin, "{}", a.display()).unwrap();
    drop(stdin);
    // The job is blocked until we create a.go: its first line is out.
    run.wait_for(|l| l.ends_with("a first"));
    std::fs::write(a.with_extension("go"), "").unwrap();
    run.wait_for(|l| l.ends_with("a last"));
    assert_eq!(run.wait().code(), Some(0));
}

#[test]
fn keep_order_prints_in_input_order_as_parallel_does() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    // Job 1 waits for job 3 to finish: it ends last, prints first.
    let script = dir.path().join("job.sh");
    std::fs::write(
        &script,
        format!(
            "if [ $1 = 1 ]; then while [ ! -e {d}/3 ]; do sleep 0.01; done; fi\n\
             echo out $1; echo err $1 >&2; touch {d}/$1\n"
        ),
    )
    .unwrap();
    let clean = || {
        for f in 1..=3 {
            let _ = std::fs::remove_file(dir.path().join(f.to_string()));
        }
    };
    for mode in ["", "--line-buffer"] {
        clean();
        let out = sh(
            &format!(
                "seq 3 | pk-pool exec -j 3 -k {mode} -- sh {} 2>/dev/null",
                script.display()
            ),
            0,
        );
        assert_eq!(out, "out 1\nout 2\nout 3\n", "-k {mode}");
    }
    if have_parallel() {
        clean();
        let theirs = sh(
            &format!(
                "seq 3 | parallel --will-cite -j 3 -k sh {} 2>/dev/null",
                script.display()
            ),
            0,
        );
        assert_eq!(theirs, "out 1\nout 2\nout 3\n");
    }
}

#[test]
fn ungroup_writes_straight_through() {
    let out = exec(&["-u", "-k", "--", "echo"], "1\n2\n");
    assert_eq!(sorted(&stdout(&out)), ["1", "2"]);
}

#[test]
fn exit_statuses_follow_xargs() {
    // xargs: 123 when a command failed, 125 killed, 126/127 cannot run.
    for (cmd, code) in [
        ("sh -c 'exit $0'", 123),
        ("sh -c 'kill -9 $$; echo $0'", 125),
        ("pk-no-such-command", 127),
    ] {
        sh(&format!("printf '0\\n3\\n' | xargs -n 1 {cmd}"), code);
        sh(&format!("printf '0\\n3\\n' | pk-pool exec -- {cmd}"), code);
    }
    let dir = tempfile::tempdir().unwrap();
    let plain = dir.path().join("plain");
    std::fs::write(&plain, "not a program").unwrap();
    // A path through a plain file (ENOTDIR) is there but cannot run: 126.
    for cmd in [plain.clone(), plain.join("x")] {
        sh(&format!("echo x | xargs {}", cmd.display()), 126);
        sh(&format!("echo x | pk-pool exec -- {}", cmd.display()), 126);
    }
    // One line per failed job, and the summary.
    let out = exec(&["-j", "1", "--", "sh", "-c", "exit $0"], "0\n5\n3\n");
    assert_eq!(out.status.code(), Some(123));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr)
            .lines()
            .collect::<Vec<_>>(),
        [
            "pk-pool: job 2 (sh -c 'exit $0' 5): exited, status=5",
            "pk-pool: job 3 (sh -c 'exit $0' 3): exited, status=3",
            "pk-pool: 2 of 3 jobs failed",
        ]
    );
    let out = exec(&["--", "pk-no-such-command"], "x\n");
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).lines().next(),
        Some(
            "pk-pool: job 1 (pk-no-such-command x): execvp(pk-no-such-command): No such file or directory"
        )
    );
    let out = exec(&["--", "echo"], "");
    assert_eq!(out.status.code(), Some(0), "no input, nothing to run");
    assert!(out.stdout.is_empty());
}

#[test]
fn timeouts_end_the_whole_group_and_count_as_killed() {
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("pid");
    // The command ignores TERM and has a child: SIGKILL after
    // --kill-after takes both.
    let script = format!(
        "trap '' TERM; sleep 60 & echo $! > {}; wait",
        pidfile.display()
    );
    let out = exec(
        &[
            "--timeout",
            "0.3",
            "--kill-after",
            "0.2",
            "--",
            "sh",
            "-c",
            &script,
        ],
        "x\n",
    );
    assert_eq!(out.status.code(), Some(125), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.starts_with("pk-pool: job 1 (sh -c ")
            && err.contains("): timed out after 300ms: killed by signal 9 (SIGKILL)\n"),
        "{err}"
    );
    let pid: i32 = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_gone(pid);
    if have_parallel() {
        // parallel also kills a job that runs out of time (and counts it failed).
        let out = bash("echo 5 | parallel --will-cite --timeout 0.3 sleep")
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1));
    }
}

#[test]
fn halt_stops_where_parallel_stops() {
    // now,fail=1 with one slot: 0 runs, 3 fails, the last 0 never runs.
    let ours = exec(
        &[
            "-j",
            "1",
            "--halt",
            "now,fail=1",
            "--",
            "sh",
            "-c",
            "echo $0; exit $0",
        ],
        "0\n3\n0\n",
    );
    assert_eq!(ours.status.code(), Some(124));
    assert_eq!(stdout(&ours), "0\n3\n");
    assert!(String::from_utf8_lossy(&ours.stderr).contains("--halt now,fail=1: 1 job failed"));
    let soon = exec(
        &[
            "-j",
            "1",
            "--halt",
            "soon,success=1",
            "--",
            "sh",
            "-c",
            "echo $0; exit $0",
        ],
        "1\n0\n2\n",
    );
    assert_eq!(
        soon.status.code(),
        Some(123),
        "job 1 failed before the halt"
    );
    assert_eq!(stdout(&soon), "1\n0\n");
    let legacy = exec(
        &["-j", "1", "--halt", "2", "--", "sh", "-c", "exit $0"],
        "0\n4\n0\n",
    );
    assert_eq!(legacy.status.code(), Some(124));
    if have_parallel() {
        let theirs = sh(
            "printf '0\\n3\\n0\\n' | parallel --will-cite -j 1 --halt now,fail=1 'echo {}; exit {}' 2>/dev/null || true",
            0,
        );
        assert_eq!(theirs, stdout(&ours));
        let theirs = sh(
            "printf '1\\n0\\n2\\n' | parallel --will-cite -j 1 --halt soon,success=1 'echo {}; exit {}' 2>/dev/null || true",
            0,
        );
        assert_eq!(theirs, stdout(&soon));
    }
}

#[test]
fn retries_run_a_failed_job_again() {
    let dir = tempfile::tempdir().unwrap();
    let count = dir.path().join("count");
    // Fails on its first two tries.
    let script = format!(
        "echo x >> {0}; [ $(wc -l < {0}) -ge 3 ] && echo ok",
        count.display()
    );
    let out = exec(&["--retries", "2", "--", "sh", "-c", &script], "a\n");
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(stdout(&out), "ok\n", "only the last try's output");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.matches("trying again").count(), 2, "{err}");
    std::fs::remove_file(&count).unwrap();
    let out = exec(&["--retries", "1", "--", "sh", "-c", &script], "a\n");
    assert_eq!(out.status.code(), Some(123));
    assert_eq!(std::fs::read_to_string(&count).unwrap().lines().count(), 2);
}

#[test]
fn dry_run_and_verbose_print_the_commands_as_parallel_and_xargs_do() {
    let input = "a b\nc'd\ne\n";
    let out = exec(&["--dry-run", "--", "echo", "{}"], input);
    assert_eq!(stdout(&out), "echo 'a b'\necho 'c'\"'\"'d'\necho e\n");
    if have_parallel() {
        assert_eq!(
            sh(
                "printf \"a b\\nc'd\\ne\\n\" | parallel --will-cite --dry-run -k echo {}",
                0
            ),
            stdout(&out)
        );
    }
    let x = bash("printf 'a\\nb\\n' | xargs -t -n 1 echo 2>&1 >/dev/null")
        .output()
        .unwrap();
    let o = bash("printf 'a\\nb\\n' | pk-pool exec -j 1 -t -- echo 2>&1 >/dev/null")
        .output()
        .unwrap();
    assert_eq!(stdout(&x), stdout(&o));
}

#[test]
fn joblog_has_parallels_columns() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("log");
    let out = exec(
        &[
            "--joblog",
            log.to_str().unwrap(),
            "--",
            "sh",
            "-c",
            "echo out; exit $0",
        ],
        "0\n3\n",
    );
    assert_eq!(out.status.code(), Some(123));
    let text = std::fs::read_to_string(&log).unwrap();
    let mut lines = text.lines();
    let header = lines.next().unwrap();
    assert_eq!(
        header,
        "Seq\tHost\tStarttime\tJobRuntime\tSend\tReceive\tExitval\tSignal\tCommand"
    );
    let mut rows: Vec<Vec<&str>> = lines.map(|l| l.split('\t').collect()).collect();
    rows.sort();
    assert_eq!(rows.len(), 2);
    for (row, (seq, exitval)) in rows.iter().zip([("1", "0"), ("2", "3")]) {
        assert_eq!(row.len(), 9);
        assert_eq!((row[0], row[1], row[4], row[5]), (seq, ":", "0", "4"));
        assert_eq!((row[6], row[7]), (exitval, "0"));
        assert!(row[2].parse::<f64>().unwrap() > 1.0e9, "{row:?}");
        assert!(row[3].trim().parse::<f64>().unwrap() >= 0.0);
    }
    if have_parallel() {
        let plog = dir.path().join("plog");
        bash(&format!(
            "seq 1 | parallel --will-cite --joblog {} true",
            plog.display()
        ))
        .output()
        .unwrap();
        let theirs = std::fs::read_to_string(&plog).unwrap();
        assert_eq!(theirs.lines().next(), Some(header));
        let cols = theirs.lines().nth(1).unwrap().split('\t').count();
        assert_eq!(cols, 9);
    }
}

#[test]
fn progress_off_a_terminal_ends_with_one_count_line() {
    let out = exec(&["--progress", "--", "true"], "1\n2\n3\n");
    assert_success(&out);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        err.lines().last(),
        Some("pk-pool: progress: 3 done, 0 running, 0 failed, 0 left")
    );
    let out = exec(&["--eta", "--", "true"], "1\n");
    assert!(String::from_utf8_lossy(&out.stderr).contains(", eta "));
    // Not a terminal and not asked for: nothing.
    let out = exec(&["--", "true"], "1\n");
    assert!(out.stderr.is_empty());
}

/// `pk-pool exec -j 2 --kill-after KILL_AFTER -- sh -c SCRIPT` in a
/// group of its own, default signal actions, stderr piped, fed `items`.
fn exec_sh_j2(kill_after: &str, script: &str, items: &[u8]) -> Running {
    let mut cmd = pk_std_default_signals("pool");
    cmd.args([
        "exec",
        "-j",
        "2",
        "--kill-after",
        kill_after,
        "--",
        "sh",
        "-c",
        script,
    ])
    .stdin(Stdio::piped())
    .stderr(Stdio::piped());
    let mut run = Running::start(cmd, true);
    let mut stdin = run.child.stdin.take().unwrap();
    stdin.write_all(items).unwrap();
    run
}

#[test]
fn a_signal_stops_everything_and_no_command_survives() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    // Each command ignores TERM and starts a child that does too.
    let script = format!(
        "trap '' TERM; sh -c \"trap '' TERM; echo \\$\\$ > {d}/child.$0; exec sleep 60\" & echo started $$; wait"
    );
    for sig in [
        nix::sys::signal::Signal::SIGTERM,
        nix::sys::signal::Signal::SIGINT,
        nix::sys::signal::Signal::SIGHUP,
    ] {
        let mut run = exec_sh_j2("0.2", &script, b"1\n2\n3\n4\n");
        // Grouped output: the `started` lines come out only at the end, so
        // wait for the children's pid files instead.
        let pids: Vec<i32> = (1..=2)
            .map(|i| {
                let f = dir.path().join(format!("child.{i}"));
                let deadline = std::time::Instant::now() + TIMEOUT;
                loop {
                    if let Ok(t) = std::fs::read_to_string(&f) {
                        if let Ok(p) = t.trim().parse() {
                            return p;
                        }
                    }
                    assert!(
                        std::time::Instant::now() < deadline,
                        "job {i} did not start"
                    );
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
            })
            .collect();
        run.signal(sig);
        let status = run.wait();
        assert_eq!(status.code(), Some(128 + sig as i32), "{sig}");
        let mut err = String::new();
        std::io::Read::read_to_string(run.child.stderr.as_mut().unwrap(), &mut err).unwrap();
        assert!(
            err.contains(&format!(
                "pk-pool: stopped by {}: 2 running jobs ended, no new job started",
                sig.as_str()
            )),
            "{err}"
        );
        for pid in pids {
            assert_gone(pid);
        }
        for i in 1..=4 {
            let _ = std::fs::remove_file(dir.path().join(format!("child.{i}")));
        }
    }
}

#[test]
fn a_stop_does_not_wait_out_the_kill_after_for_dead_grandchildren() {
    // Each job's shell has a child (the sleep): the stop's SIGTERM ends
    // both, and the sleep, an orphan, comes to pk-pool as a zombie. Its
    // group is dead: pk-pool ends at once, not an hour later (the
    // kill-after). It waited in most runs, on its own zombies.
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    let script = format!("echo $$ > {d}/job.$0; sleep 60; echo $0");
    for round in 0..3 {
        let mut run = exec_sh_j2("1h", &script, b"1\n2\n3\n");
        for i in 1..=2 {
            wait_for_line_in(&dir.path().join(format!("job.{i}")), "a job");
        }
        run.signal(nix::sys::signal::Signal::SIGTERM);
        // Within the test's timeout (a minute), not the hour.
        assert_eq!(run.wait().code(), Some(143), "round {round}");
        for i in 1..=3 {
            let _ = std::fs::remove_file(dir.path().join(format!("job.{i}")));
        }
    }
}

#[test]
fn a_closed_stdout_stops_quietly() {
    let out = bash("seq 100000 | pk-pool exec -j 2 -k -- echo | head -1")
        .output()
        .unwrap();
    assert_success(&out);
    assert_eq!(stdout(&out), "1\n");
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn bad_input() {
    // Usage errors: exit 2, one line, nothing run.
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("log");
    let log = log.to_str().unwrap();
    for args in [
        &["exec"][..],
        &["exec", "echo"],
        &["exec", "-j", "1025", "--", "echo"],
        &["exec", "-n", "0", "--", "echo"],
        &["exec", "-d", "ab", "--", "echo"],
        &["exec", "-d", "", "--", "echo"],
        &["exec", "-0", "-d", ",", "--", "echo"],
        &["exec", "--halt", "later", "--", "echo"],
        &["exec", "--halt", "soon,fail=0", "--", "echo"],
        &["exec", "--halt", "now,fail=10%", "--", "echo"],
        &["exec", "--timeout", "soon", "--", "echo"],
        &["exec", "--retries", "-1", "--", "echo"],
        &["exec", "-S", "", "--", "echo"],
        &["exec", "-S", "0/host", "--", "echo"],
        &["exec", "-S", "-oProxyCommand=x", "--", "echo"],
        &["exec", "--ssh", "", "--joblog", log, "--", "echo"],
        &["exec", "-I", "", "--joblog", log, "--", "echo"],
        &["exec", "--line-buffer", "-u", "--", "echo"],
    ] {
        let out = pk("pool").args(args).write_stdin("x\n").output().unwrap();
        assert_usage(&out, "pool");
        assert!(out.stdout.is_empty(), "{args:?}");
    }
    assert!(
        !std::path::Path::new(log).exists(),
        "no joblog for a usage error"
    );
    // Bad data: 65, after the good items ran.
    let out = exec(&["-k", "--", "echo"], "ok\na\0b\nnever\n");
    assert_one_line_error(&out, "pool", 65);
    assert_eq!(stdout(&out), "ok\n");
    assert!(String::from_utf8_lossy(&out.stderr).contains("item 2 holds a NUL byte (use -0)"));
    // A missing -a file: 66 before anything runs.
    let out = exec(&["-a", "/nonexistent/items", "--", "echo"], "");
    assert_one_line_error(&out, "pool", 66);
    let out = exec(&["-a", "/", "--", "echo"], "");
    assert_eq!(out.status.code(), Some(71), "{out:?}");
    // Files of pk-pool's own that cannot be made are failed system calls
    // (71), not a missing input (66).
    let out = exec(&["--joblog", "/nonexistent/log", "--", "echo"], "x\n");
    assert_one_line_error(&out, "pool", 71);
    assert!(out.stdout.is_empty(), "{out:?}");
    let out = pk("pool")
        .args(["exec", "--", "head", "-c", "200000", "/dev/zero"])
        .env("TMPDIR", "/nonexistent")
        .write_stdin("1\n")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(71), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).starts_with("pk-pool: open(/nonexistent"),
        "{out:?}"
    );
    // An empty -d is said to be empty.
    let out = exec(&["-d", "", "--", "echo"], "x\n");
    assert_usage(&out, "pool");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("the delimiter is empty"),
        "{out:?}"
    );
}

#[test]
fn arg_file_dash_is_stdin_in_its_turn() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    std::fs::write(&a, "a1\na2\n").unwrap();
    std::fs::write(&b, "b1\n").unwrap();
    let (a, b) = (a.to_str().unwrap(), b.to_str().unwrap());
    let out = exec(
        &["-j", "1", "-k", "-a", a, "-a", "-", "-a", b, "--", "echo"],
        "in1\nin2\n",
    );
    assert_success(&out);
    assert_eq!(stdout(&out), "a1\na2\nin1\nin2\nb1\n");
}

#[test]
fn help_documents_the_contract() {
    assert_help(
        "pool",
        &["exec"],
        &[
            "{//}",
            "--line-buffer",
            "--halt",
            "--joblog",
            "-S",
            "123 one or more failed",
            "pk-pool: <F> of <M> jobs failed",
            "line is a job with an empty argument",
            "stopped by signal 19 (SIGSTOP); continued",
            "SIGTSTP (^Z, or kill -TSTP) stops",
            "input (-a FILE, stdin) is refused",
            "left, as with xargs -r and parallel",
        ],
    );
}

#[test]
fn never_more_than_j_jobs_at_once_as_xargs_p() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("log");
    let script = format!(
        "echo start >> {0}; sleep 0.02; echo end >> {0}",
        log.display()
    );
    let input: String = (0..12).map(|i| format!("{i}\n")).collect();
    let out = exec(&["-j", "3", "--", "sh", "-c", &script], &input);
    assert_success(&out);
    let (mut running, mut most, mut starts) = (0, 0, 0);
    for line in std::fs::read_to_string(&log).unwrap().lines() {
        if line == "start" {
            running += 1;
            starts += 1;
            most = most.max(running);
        } else {
            running -= 1;
        }
    }
    assert_eq!(starts, 12);
    assert!((1..=3).contains(&most), "at most 3 at once, saw {most}");
    // -P is xargs' name for it.
    let out = exec(&["-P", "2", "-k", "--", "echo"], "a\nb\n");
    assert_eq!(stdout(&out), "a\nb\n");
}

#[test]
fn a_sigkilled_pk_pool_takes_its_commands_along() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    let mut cmd = pk_std("pool");
    cmd.args([
        "exec",
        "-j",
        "2",
        "--",
        "sh",
        "-c",
        &format!("echo $$ > {d}/pid.$0; exec sleep 60"),
    ])
    .stdin(Stdio::piped());
    let mut run = Running::start(cmd, true);
    {
        let mut stdin = run.child.stdin.take().unwrap();
        stdin.write_all(b"1\n2\n").unwrap();
    }
    let pids: Vec<i32> = (1..=2)
        .map(|i| {
            let f = dir.path().join(format!("pid.{i}"));
            let deadline = std::time::Instant::now() + TIMEOUT;
            loop {
                if let Some(p) = std::fs::read_to_string(&f)
                    .ok()
                    .and_then(|t| t.trim().parse().ok())
                {
                    return p;
                }
                assert!(
                    std::time::Instant::now() < deadline,
                    "job {i} did not start"
                );
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
        })
        .collect();
    // No chance to clean up: each command's death signal (SIGTERM) ends it.
    run.signal(nix::sys::signal::Signal::SIGKILL);
    assert_signal(&run.wait(), libc::SIGKILL);
    for pid in pids {
        assert_gone(pid);
    }
}

#[test]
fn dry_run_prints_the_very_bytes_a_shell_runs() {
    // Items a shell treats specially, one with a newline, one not UTF-8.
    let dir = tempfile::tempdir().unwrap();
    let items = dir.path().join("items");
    std::fs::write(
        &items,
        b"a b\0c'd\0e\nf\0\xff\xfe\0$(touch pwned)\0x=y\0~\0*\0-n\0\0a,b:c@d%e^f\0+g_h.i/j\0",
    )
    .unwrap();
    let items = items.to_str().unwrap();
    let run = |extra: &[&str]| {
        let mut args = vec!["exec", "-0", "-k", "-j", "1", "-a", items];
        args.extend(extra);
        args.extend(["--", "printf", "[%s]\\n"]);
        pk("pool").args(&args).output().unwrap()
    };
    let real = run(&[]);
    let dry = run(&["--dry-run"]);
    assert_success(&real);
    assert_success(&dry);
    // The printed lines, run by sh, pass the same arguments: byte for byte.
    let replayed = std::process::Command::new("sh")
        .current_dir(dir.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .and_then(|mut sh| {
            sh.stdin.take().unwrap().write_all(&dry.stdout)?;
            sh.wait_with_output()
        })
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&replayed.stdout),
        String::from_utf8_lossy(&real.stdout)
    );
    assert_eq!(replayed.stdout, real.stdout);
    assert!(!dir.path().join("pwned").exists());
    // -t shows the same lines on stderr.
    let traced = run(&["-t"]);
    assert_eq!(traced.stderr, dry.stdout);
    if have_parallel() {
        let theirs = bash(&format!(
            "parallel --will-cite -0 -k -a {items} --dry-run echo"
        ))
        .output()
        .unwrap();
        let ours = pk("pool")
            .args(["exec", "-0", "-a", items, "--dry-run", "--", "echo"])
            .output()
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&ours.stdout),
            String::from_utf8_lossy(&theirs.stdout)
        );
        assert_eq!(ours.stdout, theirs.stdout);
    }
}

#[test]
fn dry_run_quotes_a_command_name_that_is_a_reserved_word() {
    // The items are the commands: programs on PATH named `if`, `a b`,
    // `$(x)` and `'q'`. `if x` printed bare is the start of an if
    // statement to a shell, not the program `if`.
    let dir = tempfile::tempdir().unwrap();
    let names = ["if", "a b", "$(x)", "'q'", "then", "time"];
    for name in names {
        let path = dir.path().join(name);
        std::fs::write(
            &path,
            "#!/bin/sh\nprintf '[%s]' \"${0##*/}\" \"$@\"; echo\n",
        )
        .unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let path = format!("{}:/usr/bin:/bin", dir.path().display());
    let input = names.join("\n") + "\n";
    let run = |extra: &[&str]| {
        pk("pool")
            .args(["exec", "-k", "-j", "1"])
            .args(extra)
            .args(["--", "{}", "if", "a b"])
            .env("PATH", &path)
            .write_stdin(input.as_str())
            .output()
            .unwrap()
    };
    let real = run(&[]);
    let dry = run(&["--dry-run"]);
    assert_success(&real);
    assert_success(&dry);
    assert_eq!(
        stdout(&dry),
        "'if' if 'a b'\n'a b' if 'a b'\n'$(x)' if 'a b'\n\
         ''\"'\"'q'\"'\"'' if 'a b'\n'then' if 'a b'\n'time' if 'a b'\n"
    );
    // Run by sh, the printed lines do what the jobs did.
    let replayed = assert_cmd::Command::new("sh")
        .env("PATH", &path)
        .timeout(TIMEOUT)
        .write_stdin(dry.stdout.clone())
        .output()
        .unwrap();
    assert_eq!(stdout(&replayed), stdout(&real), "{replayed:?}");
    assert_eq!(
        stdout(&real),
        "[if][if][a b]\n[a b][if][a b]\n[$(x)][if][a b]\n\
         ['q'][if][a b]\n[then][if][a b]\n[time][if][a b]\n"
    );
    // -t shows the same lines on stderr.
    assert_eq!(run(&["-t"]).stderr, dry.stdout);
}

#[test]
fn ungrouped_jobs_stop_quietly_when_the_reader_goes() {
    // With -u the jobs write to our stdout themselves: once its reader has
    // gone, each would die of SIGPIPE (or fail with EPIPE where SIGPIPE is
    // ignored). pk-pool stops there, as it does when its own write fails,
    // instead of running every item into the closed pipe.
    let dir = tempfile::tempdir().unwrap();
    let count = dir.path().join("count");
    for trap in ["", "trap '' PIPE; "] {
        let _ = std::fs::remove_file(&count);
        let out = bash(&format!(
            "set -o pipefail; seq 100000 | pk-pool exec -u -j 2 -- \
             sh -c '{trap}echo $0 >> {}; echo $0' 2>err | head -1; echo status=$?; \
             grep '^pk-pool' err",
            count.display()
        ))
        .current_dir(dir.path())
        .output()
        .unwrap();
        let text = stdout(&out);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2, "{trap}: {text}");
        assert_eq!(lines[1], "status=141", "{trap}: no pk-pool line on stderr");
        let ran = std::fs::read_to_string(&count).unwrap().lines().count();
        assert!(ran < 100, "{trap}: {ran} jobs ran after the reader left");
    }
}

#[test]
fn a_jobs_background_process_never_writes_into_a_later_jobs_output() {
    // Job 1 leaves a background process that prints after job 1 has ended,
    // while job 2 runs. Its line belongs to no job that is still printing:
    // it is lost, as in parallel (whose files are per job too), and never
    // shows up as job 2's output.
    let dir = tempfile::tempdir().unwrap();
    let late = dir.path().join("late");
    let script = dir.path().join("job.sh");
    std::fs::write(
        &script,
        format!(
            "if [ $1 = 1 ]; then (trap '' PIPE; sleep 0.3; echo late; touch {0}) & echo one; \
             else while [ ! -e {0} ]; do sleep 0.01; done; echo two; fi\n",
            late.display()
        ),
    )
    .unwrap();
    let script = script.to_str().unwrap();
    for mode in [&[][..], &["-k"], &["--line-buffer", "-k"]] {
        let _ = std::fs::remove_file(&late);
        let mut args = vec!["-j", "1"];
        args.extend(mode);
        args.extend(["--", "sh", script]);
        let out = exec(&args, "1\n2\n");
        assert_success(&out);
        assert_eq!(stdout(&out), "one\ntwo\n", "{mode:?}");
    }
    if have_parallel() {
        let _ = std::fs::remove_file(&late);
        let theirs = sh(
            &format!("printf '1\\n2\\n' | parallel --will-cite -j 1 sh {script}"),
            0,
        );
        assert_eq!(theirs, "one\ntwo\n");
    }
}

#[test]
fn a_signal_stops_the_run_while_the_reader_is_not_reading() {
    // Job 1 prints more than a pipe holds and ends; job 2 runs on. Our
    // reader never reads, so pk-pool waits to write job 1's output. A
    // SIGTERM then must still stop job 2 and end the run, not wait for a
    // reader that may never come (`| less` left on its first page).
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    let script = format!(
        "if [ $0 = 1 ]; then head -c 1000000 /dev/zero; touch {d}/printed; \
         else echo $$ > {d}/pid; exec sleep 60; fi"
    );
    let mut child = pk_std("pool")
        .args([
            "exec",
            "-j",
            "2",
            "--kill-after",
            "0.2",
            "--",
            "sh",
            "-c",
            &script,
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"1\n2\n").unwrap();
    let _never_read = child.stdout.take().unwrap();
    let deadline = std::time::Instant::now() + TIMEOUT;
    let pid: i32 = loop {
        let pid = std::fs::read_to_string(dir.path().join("pid"))
            .ok()
            .and_then(|p| p.trim().parse().ok());
        if let (Some(pid), true) = (pid, dir.path().join("printed").exists()) {
            break pid;
        }
        assert!(std::time::Instant::now() < deadline, "the jobs did not run");
        std::thread::sleep(std::time::Duration::from_millis(10));
    };
    // Time to copy job 1's output into the full pipe.
    std::thread::sleep(std::time::Duration::from_millis(200));
    let me = nix::unistd::Pid::from_raw(child.id() as i32);
    nix::sys::signal::kill(me, nix::sys::signal::Signal::SIGTERM).unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("SIGTERM did not stop pk-pool while its stdout was full");
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    };
    assert_eq!(status.code(), Some(143));
    assert_gone(pid);
    let mut err = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
    assert!(
        err.contains("pk-pool: stopped by SIGTERM: 1 running job ended"),
        "{err}"
    );
}

#[test]
fn line_buffer_keeps_a_long_line_whole_without_holding_it_in_memory() {
    // 50 MB without a newline, under a 60 MB address-space limit: the line
    // is gathered in a file, not in memory.
    let out = bash(
        "ulimit -v 60000; echo x | pk-pool exec -j 1 --line-buffer -- \
         sh -c 'head -c 50000000 /dev/zero; echo; echo next' | wc -c",
    )
    .output()
    .unwrap();
    assert_success(&out);
    assert_eq!(stdout(&out).trim(), "50000006");
    // A long line that comes in pieces while another job prints short
    // lines is still written whole, never cut by them.
    let out = exec(
        &[
            "-j",
            "2",
            "--line-buffer",
            "--",
            "sh",
            "-c",
            "for i in 1 2 3; do if [ $0 = A ]; then head -c 100000 /dev/zero | tr '\\0' A; \
             else echo B; fi; sleep 0.2; done; echo",
        ],
        "A\nB\n",
    );
    assert_success(&out);
    let text = stdout(&out);
    let mut lines: Vec<&str> = text.lines().collect();
    lines.sort();
    assert_eq!(lines.len(), 5, "{:?}", &text[..text.len().min(200)]);
    assert_eq!(
        [lines[0], lines[2], lines[3], lines[4]],
        ["", "B", "B", "B"]
    );
    assert_eq!(lines[1], "A".repeat(300_000));
}

#[test]
fn j_0_runs_as_many_at_once_as_xargs_p_0() {
    // Five jobs that each wait until all five have started: they finish
    // only if all run at once (a smaller -j would time out).
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    let barrier = format!(
        "touch {d}/$0.$1; while [ $(ls {d} | grep -c \"^$0\\.\") -lt 5 ]; do sleep 0.01; done; echo $1"
    );
    for (tool, cmd) in [
        ("xargs", "xargs -P 0 -n 1"),
        ("ours", "pk-pool exec -j 0 --timeout 20s --"),
    ] {
        let out = sh(&format!("seq 5 | {cmd} sh -c '{barrier}' {tool}-item"), 0);
        assert_eq!(sorted(&out), ["1", "2", "3", "4", "5"], "{tool}");
    }
}

#[test]
fn more_slots_than_file_descriptors_allow_run_fewer_at_once() {
    // With `ulimit -n 64` there are not descriptors for 100 jobs' output
    // files: pk-pool says so once and runs as many as fit, where it ran out
    // of descriptors half-way through and stopped.
    let out =
        bash("ulimit -n 64; seq 100 | pk-pool exec -j 100 -- sh -c 'sleep 0.05; echo $0' | wc -l")
            .output()
            .unwrap();
    assert_success(&out);
    assert_eq!(stdout(&out).trim(), "100");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with("pk-pool: 100 jobs at once here: only enough file descriptors for ")
            && err.trim_end().ends_with(" (ulimit -n 64)"),
        "{err}"
    );
    // The same for --line-buffer (pipes) and -j 0.
    for mode in ["--line-buffer -j 100", "-j 0"] {
        let out = bash(&format!(
            "ulimit -n 64; seq 100 | pk-pool exec {mode} -- sh -c 'sleep 0.05; echo $0' | wc -l"
        ))
        .output()
        .unwrap();
        assert_success(&out);
        assert_eq!(stdout(&out).trim(), "100", "{mode}");
    }
}

#[test]
fn a_sigkilled_pk_pool_takes_the_whole_of_each_job_along() {
    // Each job ignores SIGTERM and has a child in the background: neither
    // goes with a death signal alone (and both outlast the test's wait).
    // pk-pool gets SIGKILL, no chance to stop anything itself, and still
    // nothing of its jobs survives it.
    let dir = tempfile::tempdir().unwrap();
    let (mut run, mut pids) = two_stubborn_jobs(dir.path());
    // pk-pool's other children (its guard) must end too, and are reaped here.
    pids.extend(children_of(run.child.id() as i32));
    run.signal(nix::sys::signal::Signal::SIGKILL);
    assert_signal(&run.wait(), libc::SIGKILL);
    for pid in pids {
        assert_gone(pid);
    }
}

/// `pk-pool exec -j 2 --kill-after 0.3` (in a process group of its own)
/// running two jobs that ignore SIGTERM, each with a child in the
/// background; returns it with the pids of both jobs and both children,
/// once all four have written them into `dir`.
fn two_stubborn_jobs(dir: &std::path::Path) -> (Running, Vec<i32>) {
    let d = dir.display();
    let mut cmd = pk_std("pool");
    cmd.args([
        "exec",
        "-j",
        "2",
        "--kill-after",
        "0.3",
        "--",
        "sh",
        "-c",
        &format!("trap '' TERM; sleep 300 & echo $! > {d}/child.$0; echo $$ > {d}/pid.$0; wait"),
    ])
    .stdin(Stdio::piped());
    let mut run = Running::start(cmd, true);
    run.child
        .stdin
        .take()
        .unwrap()
        .write_all(b"1\n2\n")
        .unwrap();
    let jobs = ["pid.1", "child.1", "pid.2", "child.2"]
        .iter()
        .map(|f| pid_in(&dir.join(f)))
        .collect();
    (run, jobs)
}

/// The pids whose parent is `parent`.
fn children_of(parent: i32) -> Vec<i32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
                s[s.rfind(')').map_or(0, |i| i + 2)..]
                    .split_whitespace()
                    .nth(1)
                    == Some(&parent.to_string())
            })
        })
        .collect()
}

#[test]
fn keep_order_runs_a_bounded_way_ahead_of_a_slow_first_job() {
    // -k holds the output of every job that ends before job 1 (a record
    // each, and their output in a spill file). Behind a job that never
    // ends that would grow without bound: pk-pool runs at most 1024 jobs
    // per slot ahead of the oldest, then waits for it.
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    let script = format!(
        "if [ $0 = 1 ]; then while [ ! -e {d}/go ]; do sleep 0.01; done; \
         else echo $0 >> {d}/ran; fi; echo $0"
    );
    let mut cmd = pk_std("pool");
    cmd.args(["exec", "-j", "2", "-k", "--", "sh", "-c", &script])
        .stdin(Stdio::piped());
    let mut run = Running::start(cmd, true);
    let mut stdin = run.child.stdin.take().unwrap();
    let input: String = (1..=2100).map(|i| format!("{i}\n")).collect();
    stdin.write_all(input.as_bytes()).unwrap();
    drop(stdin);
    let ran = || std::fs::read_to_string(dir.path().join("ran")).map_or(0, |t| t.lines().count());
    // Jobs 2 to 2048 run (2 slots × 1024 ahead of job 1), then no more.
    let deadline = std::time::Instant::now() + TIMEOUT;
    while ran() < 2047 {
        assert!(std::time::Instant::now() < deadline, "only {} ran", ran());
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert_eq!(ran(), 2047, "jobs ran too far ahead of job 1");
    std::fs::write(dir.path().join("go"), "").unwrap();
    let out = run.rest();
    assert_eq!(run.wait().code(), Some(0));
    assert_eq!(out, input, "all of them, in order");
}

#[test]
fn n_items_that_would_not_fit_one_command_line_make_several_as_in_xargs() {
    // 30 000 items of 100 bytes with -n 100000: 3 MB, more than one
    // command line takes (E2BIG). xargs and parallel put fewer items in
    // each command; so does pk-pool, and every item gets through.
    let items = "head -c 3000000 /dev/zero | tr '\\0' x | fold -w 100";
    let theirs = sh(&format!("{items} | xargs -n 100000 echo | wc -c"), 0);
    let ours = sh(
        &format!("{items} | pk-pool exec -k -n 100000 -- echo | wc -c"),
        0,
    );
    assert_eq!(ours, theirs);
    assert_eq!(ours.trim(), "3030000");
    // A word that holds the items ({} in other text) is one argument,
    // which Linux limits to 128 KiB: the groups fit that too.
    let ours = sh(
        &format!("{items} | pk-pool exec -k -n 100000 -- echo x{{}}y | wc -c"),
        0,
    );
    let commands = sh(
        &format!("{items} | pk-pool exec -k -n 100000 -- echo x{{}}y | wc -l"),
        0,
    );
    let commands: usize = commands.trim().parse().unwrap();
    assert_eq!(
        ours.trim().parse::<usize>().unwrap(),
        3_030_000 + 2 * commands
    );
}

#[test]
fn a_failed_jobs_line_shows_a_long_command_shortened() {
    // -n 1000 of long items: the failure line names the command by its
    // beginning, not by all its 128 KiB (the joblog keeps it whole).
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("log");
    let out = sh(
        &format!(
            "head -c 300000 /dev/zero | tr '\\0' x | fold -w 100 | \
             pk-pool exec -n 1000 --joblog {} -- sh -c 'exit 3' sh 2>&1 >/dev/null | head -3",
            log.display()
        ),
        0,
    );
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines.len() >= 2, "{out}");
    for line in &lines[..lines.len() - 1] {
        assert!(line.len() < 300, "{} bytes: {}", line.len(), &line[..100]);
        assert!(
            line.starts_with("pk-pool: job ") && line.ends_with("...): exited, status=3"),
            "{line}"
        );
    }
    let joblog = std::fs::read_to_string(&log).unwrap();
    assert!(joblog.lines().nth(1).unwrap().len() > 100_000);
}

#[test]
fn a_job_that_uses_the_terminal_fails_instead_of_stopping_for_ever() {
    // Jobs run in groups of their own, in the background of a terminal:
    // one that reads /dev/tty (a password prompt), or writes to the
    // terminal under `stty tostop` (-u), was stopped by SIGTTIN/SIGTTOU and
    // pk-pool waited for it for ever. In a session of their own they have
    // no controlling terminal: the read fails at once, the write goes
    // through. script(1) gives the run a terminal.
    if no_script() {
        return;
    }
    let inner = "stty tostop; echo x | pk-pool exec --no-progress -u -- echo hi; echo rc=$?; \
                 echo y | pk-pool exec --no-progress -- sh -c 'read a < /dev/tty'; echo rc=$?";
    // (timeout(1): a stopped job would hold script's output open, and the
    // test would hang instead of failing.)
    let out = bash(&format!(
        "timeout -k 5 30 script -qec {} /dev/null < /dev/null | tr -d '\\r'",
        shell_quote(inner)
    ))
    .output()
    .unwrap();
    assert_success(&out);
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.get(..2), Some(&["hi x", "rc=0"][..]), "{text}");
    assert!(
        text.contains("/dev/tty: No such device or address"),
        "{text}"
    );
    assert_eq!(lines.last(), Some(&"rc=123"), "{text}");
}

/// `s` in single quotes for a shell script.
fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\"'\"'"))
}

#[test]
fn keep_order_with_ungroup_runs_every_job() {
    // -u writes straight through, so -k has nothing to hold: the jobs
    // must all run, however many finish out of order.
    let input: String = (1..=3000).map(|i| format!("{i}\n")).collect();
    let out = exec(&["-u", "-k", "-j", "2", "--", "echo"], &input);
    assert_success(&out);
    assert_eq!(sorted(&stdout(&out)), sorted(&input));
}

#[test]
fn grouped_output_of_big_jobs_comes_out_whole_and_in_order() {
    // Each job prints 300 000 bytes to stdout and 200 000 to stderr, more
    // than a pipe and than a job keeps in memory, in many writes while the
    // other jobs print too: each job's output comes out whole, in one
    // piece, and with -k in input order.
    let dir = tempfile::tempdir().unwrap();
    let job = dir.path().join("job.sh");
    std::fs::write(
        &job,
        "i=0; while [ $i -lt 3000 ]; do printf '%099d\\n' $1; printf '%065d\\n' $1 >&2; i=$((i+1)); done\n",
    )
    .unwrap();
    for keep in [false, true] {
        let err = dir.path().join("err");
        let k = if keep { "-k" } else { "" };
        let out = bash(&format!(
            "seq 6 | pk-pool exec -j 3 {k} -- sh {} 2>{}",
            job.display(),
            err.display()
        ))
        .output()
        .unwrap();
        assert_success(&out);
        let check = |text: &str, width: usize, what: &str| {
            let mut order = Vec::new();
            for line in text.lines() {
                assert_eq!(line.len(), width, "{what}: a torn line");
                let n: u32 = line.parse().unwrap();
                if order.last() != Some(&n) {
                    assert!(!order.contains(&n), "{what}: job {n}'s output in pieces");
                    order.push(n);
                }
            }
            assert_eq!(text.lines().count(), 6 * 3000, "{what}");
            let mut sorted = order.clone();
            sorted.sort();
            assert_eq!(sorted, [1, 2, 3, 4, 5, 6], "{what}");
            if keep {
                assert_eq!(order, sorted, "{what}: -k");
            }
        };
        check(&stdout(&out), 99, &format!("stdout {k}"));
        check(
            &std::fs::read_to_string(&err).unwrap(),
            65,
            &format!("stderr {k}"),
        );
    }
}

#[test]
fn a_quiet_job_needs_no_temporary_file() {
    // Grouped output is kept in memory while it is small: jobs that print
    // little run even where $TMPDIR cannot take a file; a job whose output
    // outgrows memory needs one, and says why it has none.
    let out = bash("seq 3 | TMPDIR=/nonexistent pk-pool exec -k -j 2 -- echo")
        .output()
        .unwrap();
    assert_success(&out);
    assert_eq!(stdout(&out), "1\n2\n3\n");
    let out = bash("echo x | TMPDIR=/nonexistent pk-pool exec -- head -c 1000000 /dev/zero")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(71));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("pk-pool: open(/nonexistent (O_TMPFILE)): No such file or directory"),
        "{err}"
    );
}

#[test]
fn a_jobs_background_process_may_write_on_after_the_job_ended() {
    // Job 1 leaves a process behind that writes more than a pipe holds
    // after job 1 has ended. Its output is dropped, but its writes succeed
    // (no EPIPE, no full pipe to block on) while pk-pool runs, as they
    // would into an output file of its own.
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    let script = dir.path().join("job.sh");
    std::fs::write(
        &script,
        format!(
            "if [ $1 = 1 ]; then (trap '' PIPE; sleep 0.2; \
             if head -c 300000 /dev/zero; then touch {d}/ok; else touch {d}/failed; fi) & echo one; \
             else while [ ! -e {d}/ok ] && [ ! -e {d}/failed ]; do sleep 0.01; done; echo two; fi\n"
        ),
    )
    .unwrap();
    let script = script.to_str().unwrap();
    for mode in [&[][..], &["-k"], &["--line-buffer"]] {
        for f in ["ok", "failed"] {
            let _ = std::fs::remove_file(dir.path().join(f));
        }
        let mut args = vec!["-j", "1"];
        args.extend(mode);
        args.extend(["--", "sh", script]);
        let out = exec(&args, "1\n2\n");
        assert_success(&out);
        assert_eq!(stdout(&out), "one\ntwo\n", "{mode:?}");
        assert!(
            dir.path().join("ok").exists(),
            "{mode:?}: its writes failed"
        );
    }
}

/// The state letter of `/proc/PID/stat` (R, S, T ...).
fn proc_state(pid: i32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat[stat.rfind(')')? + 2..].chars().next()
}

/// Wait until every one of `pids` is stopped (`stopped`) or not.
fn wait_state(pids: &[i32], stopped: bool) {
    let deadline = std::time::Instant::now() + TIMEOUT;
    loop {
        let states: Vec<Option<char>> = pids.iter().map(|&p| proc_state(p)).collect();
        if states.iter().all(|s| (*s == Some('T')) == stopped) {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "want stopped={stopped}: {pids:?} are {states:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

/// The pid written into `file`, once it is there.
fn pid_in(file: &std::path::Path) -> i32 {
    let deadline = std::time::Instant::now() + TIMEOUT;
    loop {
        if let Some(p) = std::fs::read_to_string(file)
            .ok()
            .and_then(|t| t.trim().parse().ok())
        {
            return p;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{} never came",
            file.display()
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

#[test]
fn a_tstp_stops_the_jobs_with_pk_pool_and_a_cont_continues_them() {
    // ^Z reaches the terminal's foreground group, pk-pool's, and not the
    // jobs in their sessions of their own: pk-pool stops each job's whole
    // group, then itself; continued, it continues them (what a shell user
    // of xargs, whose jobs share its group, expects of ^Z and fg).
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    let script =
        format!("sleep 60 & echo $! > {d}/$1.child; echo $$ > {d}/$1.pid; wait; echo done $1");
    let mut cmd = pk_std("pool");
    cmd.args([
        "exec",
        "-j",
        "2",
        "--kill-after",
        "0.2",
        "--",
        "sh",
        "-c",
        &script,
        "sh",
    ])
    .stdin(Stdio::piped())
    .stderr(Stdio::piped());
    let mut run = Running::start(cmd, true);
    run.child
        .stdin
        .take()
        .unwrap()
        .write_all(b"1\n2\n")
        .unwrap();
    let jobs: Vec<i32> = ["1.pid", "1.child", "2.pid", "2.child"]
        .iter()
        .map(|f| pid_in(&dir.path().join(f)))
        .collect();
    let me = run.child.id() as i32;
    wait_state(&jobs, false);
    for _ in 0..2 {
        run.signal(nix::sys::signal::Signal::SIGTSTP);
        wait_state(&[me], true);
        wait_state(&jobs, true);
        run.signal(nix::sys::signal::Signal::SIGCONT);
        wait_state(&[me], false);
        wait_state(&jobs, false);
    }
    run.signal(nix::sys::signal::Signal::SIGTERM);
    assert_eq!(run.wait().code(), Some(143));
    for pid in jobs {
        assert_gone(pid);
    }
}

#[test]
fn a_job_that_stops_itself_is_continued_not_waited_for_for_ever() {
    // It has no terminal and no shell to continue it: pk-pool does, and
    // says so once. (xargs and parallel wait for it for ever.)
    let out = exec(
        &[
            "--",
            "sh",
            "-c",
            "kill -STOP $$; kill -STOP $$; echo after $0",
        ],
        "1\n",
    );
    assert_success(&out);
    assert_eq!(stdout(&out), "after 1\n");
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "pk-pool: job 1 (sh -c 'kill -STOP $$; kill -STOP $$; echo after $0' 1): \
         stopped by signal 19 (SIGSTOP); continued\n"
    );
}

#[test]
fn a_joblog_that_is_also_the_input_is_refused_and_left_alone() {
    // Emptying the joblog would empty the items: a usage error, the file
    // as it was, nothing run. Under another name (a hard link) and as
    // stdin too.
    let dir = tempfile::tempdir().unwrap();
    let items = dir.path().join("items");
    let link = dir.path().join("link");
    std::fs::write(&items, "a\nb\n").unwrap();
    std::fs::hard_link(&items, &link).unwrap();
    let (i, l) = (items.to_str().unwrap(), link.to_str().unwrap());
    for (args, stdin) in [
        (vec!["-a", i, "--joblog", i], false),
        (vec!["-a", "/dev/null", "-a", i, "--joblog", l], false),
        (vec!["--joblog", l], true),
    ] {
        // With stdin: the file itself (`< items`), not its bytes in a pipe.
        let out = bash(&format!(
            "pk-pool exec {} -- echo {}",
            args.join(" "),
            if stdin {
                format!("<{i}")
            } else {
                String::new()
            }
        ))
        .output()
        .unwrap();
        assert_usage(&out, "pool");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("is also the input"),
            "{args:?}"
        );
        assert!(out.stdout.is_empty(), "{args:?}");
        assert_eq!(
            std::fs::read_to_string(&items).unwrap(),
            "a\nb\n",
            "{args:?}"
        );
    }
    // Another file is fine, and emptied first.
    let log = dir.path().join("log");
    std::fs::write(&log, "old\n".repeat(100)).unwrap();
    let out = exec(
        &["-a", i, "--joblog", log.to_str().unwrap(), "--", "true"],
        "",
    );
    assert_success(&out);
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.starts_with("Seq\t") && !text.contains("old"), "{text}");
    assert_eq!(text.lines().count(), 3, "{text}");
}

#[test]
fn a_joblog_goes_to_any_file_stdout_or_the_end_of_a_file_as_parallels() {
    // /dev/null, a pipe (bash's >(…)) and a FIFO are written, not emptied
    // (ftruncate failed with EINVAL there: status 71 before any job ran).
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    let out = bash(&format!(
        "mkfifo {d}/fifo; (timeout 20 cat {d}/fifo > {d}/from-fifo 2>/dev/null &); \
         seq 2 | pk-pool exec -k --joblog /dev/null -- echo && \
         seq 2 | pk-pool exec -k --joblog >(cat > {d}/from-pipe) -- echo && \
         seq 2 | pk-pool exec -k --joblog {d}/fifo -- echo; \
         echo status $?"
    ))
    .output()
    .unwrap();
    assert_eq!(stdout(&out), "1\n2\n1\n2\n1\n2\nstatus 0\n", "{out:?}");
    for f in ["from-pipe", "from-fifo"] {
        let path = dir.path().join(f);
        let deadline = std::time::Instant::now() + TIMEOUT;
        let text = loop {
            let t = std::fs::read_to_string(&path).unwrap_or_default();
            if t.lines().count() == 3 || std::time::Instant::now() > deadline {
                break t;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        };
        assert!(
            text.starts_with("Seq\t") && text.lines().count() == 3,
            "{f}: {text}"
        );
    }
    // `-` is stdout, beside the jobs' output.
    let out = exec(&["-j", "1", "--joblog", "-", "--", "echo"], "a\n");
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    assert!(lines[0].starts_with("Seq\t") && lines[1] == "a", "{text}");
    assert!(
        lines[2].starts_with("1\t:\t") && lines[2].ends_with("\techo a"),
        "{text}"
    );
    assert!(!std::path::Path::new("-").exists());
    // A `-` joblog whose reader goes away ends the run as a closed stdout
    // does (141, quietly), not as a failed write (71).
    for _ in 0..3 {
        let out = bash(
            "(printf '0\\n1\\n1\\n' | pk-pool exec --joblog - -j 3 -- sh -c 'sleep $0; echo $0'; \
             echo rc=$? >&2) | head -c 1 >/dev/null",
        )
        .output()
        .unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stderr), "rc=141\n", "{out:?}");
    }
    // And one whose reader had gone before the header (a pipe with no
    // read end left): 141 too, quietly, nothing run.
    let (read_end, write_end) = nix::unistd::pipe().unwrap();
    drop(read_end);
    let ran = dir.path().join("ran");
    let mut cmd = pk_std("pool");
    cmd.args([
        "exec",
        "--joblog",
        "-",
        "--",
        "touch",
        ran.to_str().unwrap(),
    ])
    .stdin(Stdio::piped())
    .stdout(Stdio::from(write_end))
    .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    // pk-pool may have ended (its stdout gone) before this write: EPIPE
    // then, and nothing to check here.
    let _ = child.stdin.take().unwrap().write_all(b"a\n");
    let deadline = std::time::Instant::now() + TIMEOUT;
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(std::time::Instant::now() < deadline, "pk-pool did not end");
        std::thread::sleep(std::time::Duration::from_millis(10));
    };
    let mut err = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
    assert_eq!((status.code(), err.as_str()), (Some(141), ""));
    assert!(!ran.exists());
    // +FILE appends: one header, the lines of both runs.
    let log = dir.path().join("log");
    let plus = format!("+{}", log.display());
    for item in ["x\n", "y\n"] {
        assert_success(&exec(&["--joblog", &plus, "--", "true"], item));
    }
    let text = std::fs::read_to_string(&log).unwrap();
    assert_eq!(text.matches("Seq\t").count(), 1, "{text}");
    assert!(
        text.contains("\ttrue x\n") && text.ends_with("\ttrue y\n"),
        "{text}"
    );
}

#[test]
fn no_input_and_no_host_left_runs_nothing_and_succeeds_as_xargs_r_and_parallel() {
    // Every host fails at once (an ssh that cannot start, one that exits):
    // with no items there is nothing to run, so nothing failed. With items,
    // 124 as before.
    for ssh in ["/nonexistent/ssh", "false"] {
        for input in ["", "\n\n"] {
            let out = pk("pool")
                .args([
                    "exec",
                    "--skip-empty",
                    "-S",
                    "1/somehost",
                    "--ssh",
                    ssh,
                    "--",
                    "echo",
                ])
                .write_stdin(input)
                .output()
                .unwrap();
            assert_success(&out);
            assert!(out.stdout.is_empty());
        }
        let out = exec(&["-S", "1/somehost", "--ssh", ssh, "--", "echo"], "x\n");
        assert_eq!(out.status.code(), Some(124), "{ssh}");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("pk-pool: no host left to run jobs on"),
            "{ssh}"
        );
    }
    let theirs = bash("xargs -r echo </dev/null").output().unwrap();
    assert_success(&theirs);
    if have_parallel() {
        let theirs = bash("parallel --will-cite -S 1/somehost --ssh false echo </dev/null")
            .output()
            .unwrap();
        assert_success(&theirs);
    }
}

#[test]
fn timeouts_of_any_length_are_taken() {
    // --timeout and --kill-after of days, or past what the clock holds,
    // as GNU parallel's --timeout takes (they were refused past 24 h).
    for long in ["400d", "99999999999999999999999d"] {
        let out = exec(
            &["-k", "--timeout", long, "--kill-after", long, "--", "echo"],
            "a\nb\n",
        );
        assert_success(&out);
        assert_eq!(stdout(&out), "a\nb\n", "{long}");
    }
    // A kill-after past the clock: a job that ignores SIGTERM is never
    // killed, and ends on its own; its --timeout caught it all the same,
    // so it failed (as GNU parallel and timeout(1) count it), though it
    // exited 0; its joblog line says so (Exitval -1).
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("log");
    let out = exec(
        &[
            "--joblog",
            log.to_str().unwrap(),
            "--timeout",
            "0.2",
            "--kill-after",
            "99999999999999999999999d",
            "--",
            "sh",
            "-c",
            "trap '' TERM; sleep 0.6; echo {}",
        ],
        "done\n",
    );
    assert_eq!(stdout(&out), "done\n", "{out:?}");
    assert_eq!(out.status.code(), Some(125), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("timed out after 200ms: exited, status=0"),
        "{out:?}"
    );
    let log = std::fs::read_to_string(&log).unwrap();
    let fields: Vec<&str> = log.lines().nth(1).unwrap().split('\t').collect();
    assert_eq!(fields[6..8], ["-1", "0"], "{log}");
}

#[test]
fn a_job_that_ended_in_time_while_the_output_was_stuck_did_not_time_out() {
    // Job 1 fills pk-pool's stdout, whose reader waits: pk-pool is stuck
    // in a write while job 2 ends (exit 0) well inside its --timeout, and
    // the time is up before pk-pool runs its loop again. Job 2 ended in
    // time: it succeeded, runs once in spite of --retries, and the joblog
    // says so. It used to count as timed out, failed, and ran again.
    // (Job 1, still writing when the time is up, is caught and run again.)
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    let job = format!(
        "if [ \"$1\" = 1 ]; then yes xxxxxxxxxxxxxxx | head -c 2000000; \
         else echo run >> {d}/runs; sleep 0.3; touch {d}/ended; fi"
    );
    std::fs::write(dir.path().join("job"), job).unwrap();
    // The reader starts only after job 2 has ended and its time is up.
    let out = bash(&format!(
        "printf '1\\n2\\n' | pk-pool exec -j 2 --line-buffer --timeout 2 \
         --kill-after 0.1 --retries 1 --joblog {d}/log -- sh {d}/job \
         | {{ until [ -e {d}/ended ]; do sleep 0.05; done; sleep 2.5; cat >/dev/null; }}; \
         echo \"status ${{PIPESTATUS[1]}}\""
    ))
    .output()
    .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    // Job 1 was still writing when the time was up: caught, and run
    // again (with a reader by then, it succeeds).
    assert!(
        err.starts_with("pk-pool: job 1 (sh ") && err.contains(" timed out after 2s: "),
        "{err}"
    );
    assert!(!err.contains("job 2 "), "{err}");
    assert_eq!(stdout(&out), "status 0\n", "{err}");
    assert_eq!(
        std::fs::read_to_string(dir.path().join("runs")).unwrap(),
        "run\n",
        "{err}"
    );
    let log = std::fs::read_to_string(dir.path().join("log")).unwrap();
    let job2: Vec<&str> = log
        .lines()
        .find(|l| l.starts_with("2\t"))
        .expect("job 2 in the joblog")
        .split('\t')
        .collect();
    assert_eq!(job2[6..8], ["0", "0"], "{log}");
}

#[test]
fn after_a_sigkill_the_guard_holds_no_pipe_of_the_caller() {
    // The guard, which ends the jobs --kill-after after pk-pool's SIGKILL,
    // had pk-pool's stderr: `2>&1 | cat` then saw its end of file only
    // when the guard was done (11 s here, so the outer timeout's 124).
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("pid");
    let out = bash(&format!(
        "echo x | timeout 6 bash -c \"timeout -s KILL 1 pk-pool exec --kill-after 10 \
           -- sh -c 'trap \\\"\\\" TERM; echo \\$\\$ > {}; exec sleep 60' 2>&1 | cat\"",
        pidfile.display()
    ))
    .output()
    .unwrap();
    let job = pid_in(&pidfile);
    // The guard ends it 10 s later; no need to wait for that here.
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(job),
        nix::sys::signal::Signal::SIGKILL,
    );
    assert_eq!(out.status.code(), Some(0), "{out:?}");
}

#[test]
fn a_sigkill_of_pk_pools_whole_group_takes_the_jobs_along() {
    // `timeout -s KILL`, `kill -9 %1`: the SIGKILL goes to pk-pool's whole
    // process group. Its guard, in a session of its own, is not in that
    // group: it outlives the kill, ends every job's group (a leader that
    // ignores SIGTERM, a child in the background) and exits.
    let dir = tempfile::tempdir().unwrap();
    let (mut run, jobs) = two_stubborn_jobs(dir.path());
    let me = run.child.id() as i32;
    let guard: Vec<i32> = children_of(me)
        .into_iter()
        .filter(|p| !jobs.contains(p))
        .collect();
    assert_eq!(guard.len(), 1, "pk-pool's guard: {guard:?}");
    nix::sys::signal::killpg(
        nix::unistd::Pid::from_raw(me),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    assert_signal(&run.wait(), libc::SIGKILL);
    for pid in jobs.into_iter().chain(guard) {
        assert_gone(pid);
    }
}

#[test]
fn the_terminals_tstp_and_int_leave_the_guard_to_its_work_and_end_it_with_the_run() {
    // Under a terminal, ^Z and ^C go to the foreground group, pk-pool's:
    // not to its guard, in a session of its own, which neither stops nor
    // is left behind once the run ends. script(1) gives the run a
    // terminal; what this test writes to it is what the keys send.
    if no_script() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    // (set -m: the run in a foreground group of its own, as an
    // interactive shell runs it, which ^Z stops and `fg` continues.)
    let inner = format!(
        "set -m; seq 2 | pk-pool exec --no-progress -j 2 --kill-after 0.3 -- sh -c \
         'sleep 60 & echo $! > {d}/child.$0; echo $$ > {d}/pid.$0; echo $PPID > {d}/pk; wait'; \
         echo rc=$?; read line; fg; echo rc=$?"
    );
    // (env(1): ^C must work though the suite may run with SIGINT ignored.)
    let mut script = std::process::Command::new("env");
    script
        .args(["--default-signal=INT,QUIT", "timeout", "-k", "5", "30"])
        .args(["script", "-qec", &inner, "/dev/null"])
        .env("SHELL", "/bin/bash")
        .env(
            "PATH",
            format!(
                "{}:{}",
                bin("pk-pool").parent().unwrap().display(),
                std::env::var("PATH").unwrap_or_default()
            ),
        )
        .stdin(Stdio::piped())
        .stderr(Stdio::null());
    let mut run = Running::start(script, true);
    let jobs: Vec<i32> = ["pid.1", "child.1", "pid.2", "child.2"]
        .iter()
        .map(|f| pid_in(&dir.path().join(f)))
        .collect();
    let pk_pool = pid_in(&dir.path().join("pk"));
    let guard: Vec<i32> = children_of(pk_pool)
        .into_iter()
        .filter(|p| !jobs.contains(p))
        .collect();
    assert_eq!(guard.len(), 1, "pk-pool's guard: {guard:?}");
    let mut keys = run.child.stdin.take().unwrap();
    keys.write_all(b"\x1a").unwrap();
    run.wait_for(|l| l.starts_with("rc="));
    wait_state(&[pk_pool], true);
    wait_state(&jobs, true);
    assert_ne!(proc_state(guard[0]), Some('T'), "the guard stopped");
    // A line for `read`, then `fg` continues pk-pool, which continues its jobs.
    keys.write_all(b"\n").unwrap();
    wait_state(&jobs, false);
    keys.write_all(b"\x03").unwrap();
    let said = run.wait_for(|l| l.trim() == "rc=130");
    assert!(
        said.iter().any(|l| l.contains("stopped by SIGINT")),
        "{said:?}"
    );
    drop(keys);
    run.wait();
    for pid in jobs.into_iter().chain(guard) {
        assert_gone(pid);
    }
}

#[test]
fn a_timeout_kills_what_is_left_of_the_group_after_the_command_has_ended() {
    // The command ends at SIGTERM; the child it started in the background
    // ignores SIGTERM: SIGKILL --kill-after later takes it, and pk-pool
    // does not exit before (it exited at the timeout, the child ran on).
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("pid");
    let script = format!(
        "(trap '' TERM; exec sleep 300) & echo $! > {}; wait",
        pidfile.display()
    );
    let out = exec(
        &[
            "--timeout",
            "0.3",
            "--kill-after",
            "0.3",
            "--",
            "sh",
            "-c",
            &script,
        ],
        "x\n",
    );
    let pid = pid_in(&pidfile);
    let ended = |pid: i32| matches!(proc_state(pid), None | Some('Z'));
    // (SIGKILL is sent before pk-pool exits; its delivery may take a moment.)
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !ended(pid) && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let ran_on = !ended(pid);
    if ran_on {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    assert_gone(pid);
    assert!(!ran_on, "the job's child {pid} outlived its --kill-after");
    assert_eq!(out.status.code(), Some(125), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("): timed out after 300ms: killed by signal 15 (SIGTERM)\n"),
        "{err}"
    );
}

#[test]
fn a_timed_out_group_that_died_with_its_command_is_not_waited_for() {
    // SIGTERM ends the shell and the sleep it forked; the sleep, orphaned,
    // stays a zombie (still in the group) until its reaper waits for it.
    // pk-pool reaps its jobs' orphans itself (a subreaper): without that,
    // under a reaper that takes its time (a container's init, or this
    // test process), the group looked alive and the run waited out the
    // whole --kill-after (60 s here, so the outer timeout's 124).
    let out = bash(
        "echo 10 | timeout -k 5 20 pk-pool exec --timeout 0.3 --kill-after 60 \
           -- sh -c 'sleep {}; :'",
    )
    .output()
    .unwrap();
    assert_eq!(out.status.code(), Some(125), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("timed out after 300ms"), "{err}");
}

#[test]
fn jobs_that_leave_processes_behind_do_not_exhaust_the_descriptors() {
    // Each job leaves a sleep holding its stdout and stderr pipes. Kept
    // open without a bound, those pipes took every descriptor under
    // `ulimit -n 128` and the run stopped half-way (pipe2: EMFILE, 71):
    // the oldest give way instead, and every job runs, as with xargs -P.
    let dir = tempfile::tempdir().unwrap();
    let pids = dir.path().join("pids");
    let out = bash(&format!(
        "ulimit -n 128; seq 150 | pk-pool exec -j 4 -- sh -c 'sleep 4 & echo $! >> {}; echo $0' \
         | sort -n | tr '\\n' ' '; echo rc=${{PIPESTATUS[1]}}",
        pids.display()
    ))
    .output()
    .unwrap();
    for pid in std::fs::read_to_string(&pids).unwrap_or_default().lines() {
        if let Ok(p) = pid.trim().parse::<i32>() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(p),
                nix::sys::signal::Signal::SIGKILL,
            );
            assert_gone(p);
        }
    }
    let all: Vec<String> = (1..=150).map(|i| i.to_string()).collect();
    assert_eq!(
        stdout(&out),
        format!("{} rc=0\n", all.join(" ")),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.stderr.is_empty(), "{out:?}");
}

#[test]
fn n_items_fit_a_command_line_with_its_environment_and_every_copy_of_the_item() {
    // What execve(2) counts: each argument and its pointer, each copy of
    // the items (18 lone {} here), and the environment; and each argument
    // within 128 KiB. Jobs failed with E2BIG (126) where xargs sizes
    // around all of it; now every item gets through (the sum of the
    // counts is the number of items).
    let sum = "awk '{ s += $1 } END { print s }'";
    let braces = ["{}"; 18].join(" ");
    let out = sh(
        &format!(
            "seq 100000 | pk-pool exec -n 100000 -- sh -c 'echo $(($# / 18))' x {braces} | {sum}; \
             echo rc=${{PIPESTATUS[1]}}"
        ),
        0,
    );
    assert_eq!(out, "100000\nrc=0\n", "18 copies of the items");
    // 15 variables of 120 000 bytes: 1.8 MB of a 2 MiB execve limit.
    let out = sh(
        &format!(
            "big=$(head -c 120000 /dev/zero | tr '\\0' v); for i in $(seq 15); do export V$i=$big; done; \
             seq 100000 | pk-pool exec -n 100000 -- sh -c 'echo $#' x | {sum}; echo rc=${{PIPESTATUS[1]}}; \
             seq 100000 | xargs -n 100000 sh -c 'echo $#' x | {sum}"
        ),
        0,
    );
    assert_eq!(
        out, "100000\nrc=0\n100000\n",
        "a large environment, as xargs"
    );
    // A small stack limit makes a small execve limit (a quarter of it):
    // the pointers count.
    let out = sh(
        &format!(
            "ulimit -s 1024; seq 100000 | pk-pool exec -n 100000 -- sh -c 'echo $#' x | {sum}; \
             echo rc=${{PIPESTATUS[1]}}"
        ),
        0,
    );
    assert_eq!(out, "100000\nrc=0\n", "ulimit -s 1024");
    // An item that can never fit (here twice in one argument: 140 000
    // bytes, past the 128 KiB an argument may have) is bad input: one
    // line, 65, after the items before it ran and before any after it.
    let out = bash(
        "(echo a; head -c 70000 /dev/zero | tr '\\0' x; echo; echo b) \
         | pk-pool exec -j 1 -- echo 'a{}b{}'",
    )
    .output()
    .unwrap();
    assert_one_line_error(&out, "pool", 65);
    assert_eq!(stdout(&out), "aaba\n");
    assert!(
        String::from_utf8_lossy(&out.stderr).starts_with(
            "pk-pool: read(stdin): item 2 (70000 bytes) does not fit in a command line"
        ),
        "{out:?}"
    );
}

#[test]
fn jobs_started_after_the_guard_died_still_run() {
    // Each job tells the guard its group through a pipe, while SIGPIPE is
    // at its default action and blocked: with the guard gone, that write
    // left a SIGPIPE pending, which killed every later job the moment its
    // mask emptied ("killed by signal 13") before it ran anything.
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    let job = format!(
        "if [ $0 = 1 ]; then echo $PPID > {d}/pk; echo $$ > {d}/job; \
         until [ -e {d}/go ]; do sleep 0.02; done; fi; echo $0"
    );
    let mut cmd = pk_std("pool");
    cmd.args(["exec", "--no-progress", "-j", "1", "--", "sh", "-c", &job])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped());
    let mut run = Running::start(cmd, true);
    run.child
        .stdin
        .take()
        .unwrap()
        .write_all(b"1\n2\n3\n4\n")
        .unwrap();
    let pk_pool = pid_in(&dir.path().join("pk"));
    let job1 = pid_in(&dir.path().join("job"));
    let guard: Vec<i32> = children_of(pk_pool)
        .into_iter()
        .filter(|&p| p != job1)
        .collect();
    assert_eq!(guard.len(), 1, "pk-pool's guard: {guard:?}");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(guard[0]),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    // Dead (a zombie until pk-pool reaps it): the pipe has no reader.
    while !matches!(proc_state(guard[0]), Some('Z') | None) {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    std::fs::write(dir.path().join("go"), "").unwrap();
    let status = run.wait();
    let mut err = String::new();
    std::io::Read::read_to_string(run.child.stderr.as_mut().unwrap(), &mut err).unwrap();
    assert_eq!(run.rest(), "1\n2\n3\n4\n", "{err}");
    assert_eq!(status.code(), Some(0), "{err}");
}

#[test]
fn jobs_that_lack_a_process_to_start_wait_for_a_running_one_to_end() {
    // A limit on processes (ulimit -u, a container's pids.max) that lets
    // one job run at a time: clone gives EAGAIN for the second. pk-pool
    // ended the run there (71) and SIGKILLed the running jobs; now the job
    // waits for the running one to end, as GNU parallel runs fewer at once.
    // (A uid of its own, so that no other process counts against it.)
    if !is_root() {
        eprintln!("skipped: not root (a process limit for a uid of its own is needed)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let input = dir.path().join("in");
    std::fs::write(&input, "0.2\n0.2\n0.2\n0.2\n").unwrap();
    std::fs::set_permissions(&input, std::fs::Permissions::from_mode(0o644)).unwrap();
    // pk-pool's own tasks: its thread, one spawner thread per slot, the
    // guard; 5 leaves room for one job.
    let out = std::process::Command::new("setpriv")
        .args(["--reuid=54321", "--regid=54321", "--clear-groups"])
        .args(["bash", "-c", "ulimit -u 5 && exec \"$@\"", "-"])
        .arg(bin("pk-pool"))
        .args(["exec", "--no-progress", "-j", "2", "--joblog", "-", "-a"])
        .arg(&input)
        .args(["--", "sleep"])
        .env(TAG, new_tag())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    let log = stdout(&out);
    let exitvals: Vec<&str> = log
        .lines()
        .skip(1)
        .map(|l| l.split('\t').nth(6).unwrap_or("?"))
        .collect();
    assert_eq!(exitvals, ["0"; 4], "{log}");
    assert_eq!(
        err.lines().collect::<Vec<_>>(),
        [
            "pk-pool: clone(sleep): Resource temporarily unavailable: fewer jobs at once, each waiting for one to end"
        ]
    );
}

#[test]
fn an_output_error_stops_the_running_jobs_as_a_signal_does() {
    // Our stdout fails (a full disk): pk-pool ended at once and SIGKILLed
    // the jobs still running, with no grace, no joblog line for them and
    // no summary. Now they get SIGTERM, each is recorded, and pk-pool
    // says what it stopped before it exits 71.
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    let log = dir.path().join("log");
    let job = format!(
        "if [ $0 = 1 ]; then until [ -e {d}/2 ] && [ -e {d}/3 ]; do sleep 0.01; done; echo one; \
         else trap 'touch {d}/term.$0; exit 0' TERM; touch {d}/$0; sleep 30 & wait; fi"
    );
    let out = bash(&format!(
        "seq 3 | pk-pool exec --no-progress -j 3 --joblog {} -- sh -c \"$0\" >/dev/full",
        log.display()
    ))
    .arg(&job)
    .output()
    .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(71), "{err}");
    assert_eq!(
        err.lines().collect::<Vec<_>>(),
        [
            "pk-pool: write(stdout): No space left on device",
            "pk-pool: stopped by the error above: 2 running jobs ended, no new job started",
        ]
    );
    assert!(dir.path().join("term.2").exists() && dir.path().join("term.3").exists());
    let lines = std::fs::read_to_string(&log).unwrap().lines().count();
    assert_eq!(lines, 4, "a header and a line per job");
}

#[test]
fn a_stop_counts_the_jobs_it_ended_however_they_exit() {
    // Jobs that exit 0 on SIGTERM were not counted: "0 running jobs ended".
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    let mut cmd = pk_std("pool");
    cmd.args(["exec", "--no-progress", "-j", "3", "-a", "/dev/stdin", "--"])
        .args([
            "sh",
            "-c",
            &format!("trap 'exit 0' TERM; touch {d}/$0; sleep 30 & wait"),
        ])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped());
    let mut run = Running::start(cmd, true);
    run.child
        .stdin
        .take()
        .unwrap()
        .write_all(b"1\n2\n3\n4\n5\n")
        .unwrap();
    for i in 1..=3 {
        wait_until_exists(&dir.path().join(i.to_string()));
    }
    run.signal(nix::sys::signal::Signal::SIGTERM);
    assert_eq!(run.wait().code(), Some(143));
    let mut err = String::new();
    std::io::Read::read_to_string(run.child.stderr.as_mut().unwrap(), &mut err).unwrap();
    assert_eq!(
        err,
        "pk-pool: stopped by SIGTERM: 3 running jobs ended, no new job started\n"
    );
}

#[test]
fn a_retried_job_has_one_joblog_line_as_with_parallel() {
    let ours = exec(
        &[
            "--retries",
            "2",
            "--joblog",
            "-",
            "--",
            "sh",
            "-c",
            "exit 3",
        ],
        "1\n",
    );
    assert_eq!(ours.status.code(), Some(123));
    let lines: Vec<String> = stdout(&ours).lines().map(String::from).collect();
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert_eq!(lines[1].split('\t').nth(6), Some("3"), "{lines:?}");
    if have_parallel() {
        let theirs = bash("echo 1 | parallel --retries 3 --joblog - sh -c \"'exit 3'\"")
            .output()
            .unwrap();
        assert_eq!(stdout(&theirs).lines().count(), 2, "{theirs:?}");
    }
}

#[test]
fn halt_soon_that_skipped_nothing_exits_with_the_failures_status() {
    // The last job failed: nothing was left to skip, so the run was not
    // stopped by --halt (124); it is an ordinary failure (123).
    for (input, j, code) in [
        ("0\n0\n1\n", "1", 123),
        ("0\n0\n1\n", "3", 123),
        ("0\n1\n0\n", "1", 124),
    ] {
        let out = exec(
            &[
                "-j",
                j,
                "--halt",
                "soon,fail=1",
                "--",
                "sh",
                "-c",
                "exit $0",
            ],
            input,
        );
        assert_eq!(out.status.code(), Some(code), "{input:?} -j {j}");
    }
}

#[test]
fn on_a_terminal_our_lines_are_not_glued_to_the_status_line() {
    // The status line is redrawn in place; a failure's line or the
    // summary written over it without clearing it first ran on from its
    // end: "pk-pool: 1 done, 2 running ...   pk-pool: job 1 (...)".
    if no_script() {
        return;
    }
    let inner = "seq 6 | pk-pool exec -j 2 -- sh -c 'sleep 0.1; exit $(($0 % 2))' >/dev/null";
    let out = std::process::Command::new("script")
        .args(["-qec", inner, "/dev/null"])
        .env("PATH", path_with_binaries())
        .env(TAG, new_tag())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let mut said = 0;
    for line in text.split('\n') {
        for (at, _) in line
            .match_indices("pk-pool: job ")
            .chain(line.match_indices("pk-pool: 3 of 6"))
        {
            said += 1;
            let before = &line[..at];
            assert!(
                before.is_empty() || before.ends_with("\r\x1b[2K"),
                "glued to {before:?} in {text:?}"
            );
        }
    }
    assert_eq!(said, 4, "three failures and the summary: {text:?}");
}

#[test]
fn jobs_that_ended_while_an_error_cut_reaping_short_are_still_reaped() {
    // Both jobs end while pk-pool is stopped; continued, it reaps the
    // first, whose output fails (a full disk), and the error ended the
    // reaping: the second, its SIGCHLD taken, was never reaped, and the
    // run waited for it for ever.
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    let mut cmd = std::process::Command::new("bash");
    cmd.args([
        "-c",
        &format!(
            "exec pk-pool exec --no-progress -j 2 --kill-after 1s -- sh -c \
             'touch {d}/$0; until [ -e {d}/go ]; do sleep 0.01; done; echo out $0; \
             touch {d}/end.$0' < <(printf '1\\n2\\n') >/dev/full"
        ),
    ])
    .env("PATH", path_with_binaries())
    .env(TAG, new_tag())
    .stderr(Stdio::piped());
    let mut run = Running::start(cmd, true);
    let pid = nix::unistd::Pid::from_raw(run.child.id() as i32);
    for f in ["1", "2"] {
        wait_until_exists(&dir.path().join(f));
    }
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGSTOP).unwrap();
    std::fs::write(dir.path().join("go"), "").unwrap();
    for f in ["end.1", "end.2"] {
        wait_until_exists(&dir.path().join(f));
    }
    // Both jobs have ended (zombies) before pk-pool runs again.
    std::thread::sleep(std::time::Duration::from_millis(200));
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGCONT).unwrap();
    assert_eq!(run.wait().code(), Some(71));
}

#[test]
fn a_joblog_that_cannot_be_written_stops_the_run_as_an_output_error_does() {
    // The joblog hit the file size limit: the error went straight out,
    // the next job's record raised it again as a second error, and the
    // running jobs were SIGKILLed with no grace and no summary.
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    let log = dir.path().join("log");
    std::fs::write(&log, "x".repeat(1000)).unwrap();
    let job = format!("trap 'touch {d}/term.$0; exit 0' TERM; sleep $0 & wait");
    let out = bash(&format!(
        "trap '' XFSZ; ulimit -f 1; printf '0.1\\n30\\n30.1\\n' | \
         pk-pool exec --no-progress -j 3 --joblog +{} -- sh -c \"$0\"",
        log.display()
    ))
    .arg(&job)
    .output()
    .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(71), "{err}");
    assert_eq!(err.matches("File too large").count(), 1, "{err}");
    assert!(
        err.ends_with(
            "pk-pool: stopped by the error above: 2 running jobs ended, no new job started\n"
        ),
        "{err}"
    );
    assert!(dir.path().join("term.30").exists() && dir.path().join("term.30.1").exists());
}

#[test]
fn a_signal_timeout_sends_twice_is_one_stop_with_its_grace() {
    // timeout(1) around pk-pool sends SIGTERM to pk-pool, then to its own
    // group, which holds pk-pool too. The copy was a second signal: no
    // grace, every job SIGKILLed in the middle of its cleanup. A second
    // signal 0.3 s later still ends the grace at once (the kill-after is
    // an hour: waiting it out would fail the test). The job's child says
    // it is up once it no longer has the trap (sh resets it after the
    // fork: a SIGTERM before that would run the trap in the child).
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    let items = dir.path().join("items");
    std::fs::write(&items, "1\n").unwrap();
    let script = format!(
        "trap 'echo cleaning > {d}/log; sleep 1; echo cleaned >> {d}/log; exit 0' TERM; \
         (echo up > {d}/up; exec sleep 60) & wait"
    );
    let (up, log) = (dir.path().join("up"), dir.path().join("log"));
    let args = [
        "exec",
        "-a",
        items.to_str().unwrap(),
        "--kill-after",
        "1h",
        "--",
    ];
    let mut args: Vec<&std::ffi::OsStr> = args.iter().map(std::ffi::OsStr::new).collect();
    args.extend(["sh", "-c", &script].map(std::ffi::OsStr::new));
    for (gap, want) in [(0, "cleaning\ncleaned\n"), (300, "cleaning\n")] {
        let gap = std::time::Duration::from_millis(gap);
        let status = (0..5)
            .find_map(|_| {
                let _ = std::fs::remove_file(&up);
                let _ = std::fs::remove_file(&log);
                signal_twice_as_timeout_does("pool", &args, &up, &log, gap)
            })
            .expect("the machine was too slow five times");
        assert_eq!(status.code(), Some(143));
        let log = std::fs::read_to_string(&log).unwrap();
        assert_eq!(log, want, "SIGTERMs {gap:?} apart");
    }
}
