//! `-q/--quiet` means one thing on every binary: the lines that narrate
//! go, the result lines stay. One table runs every `pk-*` binary but
//! pk-bench and pk-bench-plot (the engine of `make bench`, which have no
//! narration to drop),
//! and every subcommand, three times: as it is, with `-q` before the
//! subcommand's name, and with `-q` after it.
//!
//! A row is a bash script in which `{Q}` stands for the place before the
//! subcommand and `{q}` for the place after it (for a binary without
//! subcommands, before and after its options). It runs in an empty
//! directory, with `$N` a fresh IPC name, both new for each run.
//!
//! Each quiet run must exit as the loud run did; its stdout lines, and its
//! stderr lines, must be the loud run's in the same order with some left
//! out (pids, counts and times compared as `0`); a row's result line must
//! still be there; and where the row narrates, fewer lines must be left.

use std::time::Duration;

use crate::common::{ShmCheck, bash};
use crate::help;

struct Row {
    script: &'static str,
    /// Whether some of the loud run's lines narrate (quiet prints fewer).
    narrates: bool,
    /// A piece of a result line that the quiet runs print too (on stdout
    /// or stderr).
    keeps: &'static str,
}

const fn row(script: &'static str, narrates: bool, keeps: &'static str) -> Row {
    Row {
        script,
        narrates,
        keeps,
    }
}

const ROWS: &[Row] = &[
    row("pk-fork {Q} --children 2 {q}", true, "exited, status=0"),
    // One name: the Hello lines of several threads come in any order.
    row("pk-local {Q} --names Alice {q}", true, "Hello, Alice"),
    row("pk-process {Q} {q}", true, "exitcode=-15"),
    row(
        "pk-spawn {Q} -v --capture {q} -- sh -c 'echo hi; exit 3'",
        true,
        "stdout: hi",
    ),
    // pk-lock
    row("pk-lock {Q} balance {q} --iters 1000", true, "balance=0"),
    row(
        "pk-lock {Q} tickets {q} --threads 4 --stock 2",
        true,
        "sold=2 sold_out=2",
    ),
    row(
        "pk-lock {Q} invariant {q} --seconds 20ms",
        false,
        "mismatches=0",
    ),
    row(
        "pk-lock {Q} deadlock {q} --timeout 20ms",
        true,
        "deadlock: each thread",
    ),
    row("pk-lock {Q} rlock {q} --timeout 10ms", false, "depth 2"),
    row(
        "pk-lock {Q} semaphore {q} --threads 3 --hold 1ms",
        true,
        "most in use at once",
    ),
    // pk-manager: the lesson (the server ends when its results are in),
    // then named queues (the server ends by SIGTERM: 143)
    row(
        r#"export PK_AUTHKEY=secret
        : >serve; pk-manager {Q} serve {q} --tasks 2 >serve & s=$!
        until read -r first <serve && [ -n "$first" ]; do sleep 0.01; done
        echo "$first"; pk-manager {Q} work {q} -c "${first##* }"
        wait $s; code=$?; tail -n +2 serve; exit $code"#,
        true,
        "task 2: 2 * 2 = 4",
    ),
    row(
        r#"export PK_AUTHKEY=secret
        : >serve; pk-manager serve --queue jobs >serve & s=$!
        until read -r first <serve && [ -n "$first" ]; do sleep 0.01; done
        pk-manager {Q} put {q} -c "${first##* }" --queue jobs apple berry
        pk-manager {Q} get {q} -c "${first##* }" --queue jobs -n 2
        kill $s; wait $s"#,
        false,
        "berry",
    ),
    // pk-pipe
    row(
        "pk-pipe {Q} fan-in {q} --writers 2 --messages 2",
        true,
        "frames=4 torn=0",
    ),
    row("pk-pipe {Q} duplex {q} --rounds 2", true, "rounds=2"),
    row("pk-pipe {Q} sigpipe {q}", true, "writer killed by SIGPIPE"),
    // pk-queue
    row("pk-queue {Q} basics {q}", false, "get()=bye"),
    row(
        "pk-queue {Q} demo {q} --items 3",
        true,
        "sum=12 expected=12 ok",
    ),
    row(
        "pk-queue {Q} create {q} $N; pk-queue {Q} put {q} $N apple berry
        pk-queue {Q} stat {q} $N; pk-queue {Q} get {q} -n 2 $N; pk-queue {Q} unlink {q} $N",
        false,
        "berry",
    ),
    // pk-sem
    row(
        "pk-sem {Q} demo {q} --workers 3 --value 2 --hold 1ms",
        true,
        "final_value=2",
    ),
    row(
        "pk-sem {Q} run {q} --name $N --value 2 -- echo ran -q
        pk-sem {Q} status {q} --name $N; pk-sem {Q} reset {q} --name $N --value 1
        pk-sem {Q} unlink {q} --name $N",
        false,
        "ran -q",
    ),
    // pk-shm
    row("pk-shm {Q} bytes {q}", true, "value=hello"),
    row(
        "pk-shm {Q} counter {q} --procs 2 --iters 10 --sync atomic",
        true,
        "expected=20 got=20 lost=0",
    ),
    row(
        "pk-shm {Q} create {q} $N --size 16; pk-shm {Q} write {q} $N --offset 8 berry
        pk-shm {Q} read {q} $N --offset 8 --len 5; echo; pk-shm {Q} add {q} $N --by 5
        pk-shm {Q} set {q} $N 7; pk-shm {Q} get {q} $N; pk-shm {Q} cas {q} $N 7 9
        pk-shm {Q} unlink {q} $N",
        false,
        "berry",
    ),
    // pk-ticket
    row(
        "pk-ticket {Q} init {q} t 3; pk-ticket {Q} buy {q} t; pk-ticket {Q} show {q} t",
        false,
        "bought ticket 3",
    ),
    row(
        "pk-ticket init r 3 >/dev/null; pk-ticket {Q} rush {q} r --buyers 4",
        true,
        "summary: stock 3, sold 3",
    ),
    // pk-coro
    row("pk-coro {Q} ask-answer {q} --rounds 2", true, "threads=1"),
    row(
        "pk-coro {Q} timing {q} --scale 0.005",
        true,
        "concurrent: elapsed",
    ),
    row(
        "pk-coro {Q} tickets {q} --tasks 4 --stock 2",
        true,
        "bought=2 sold_out=2 left=0",
    ),
    row(
        "pk-coro {Q} generator {q} --items 2",
        true,
        "c.close() -> GEN_CLOSED",
    ),
    row("pk-coro {Q} never-run {q} --scale 0.005", true, "drop(fut)"),
    row(
        "pk-coro {Q} gather {q} --scale 0.005",
        true,
        "gather(...) = [2, 6, 24]",
    ),
    row("pk-coro {Q} wait-for {q} --scale 0.005", false, "= 42"),
    row(
        "pk-coro {Q} queue {q} --scale 0.005 --items 4",
        true,
        "all 4 items done",
    ),
    row(
        "pk-coro {Q} blocking {q} --scale 0.005 --block 1",
        true,
        "late by",
    ),
    // pk-event
    row(
        "pk-event {Q} {q} --delay 1ms",
        true,
        "got the password 'hunter2'",
    ),
    row(
        "pk-event {Q} condition {q} --items 3 --interval 0",
        true,
        "consumed=3 items",
    ),
    row(
        "pk-event {Q} barrier {q} --parties 2 --stagger 1ms",
        true,
        "passed, wait() returned",
    ),
    // pk-threads
    row(
        "pk-threads {Q} loop {q} --count 2 --interval 0",
        true,
        ">>> 2",
    ),
    row(
        "pk-threads {Q} daemon {q} --no-daemon --work 1ms",
        true,
        "joined, is_alive=False",
    ),
    row("pk-threads {Q} names {q}", true, "ended, OS name Uploader"),
    row(
        "pk-threads {Q} timer {q} --interval 1ms",
        true,
        "function ran=False",
    ),
    row(
        "pk-threads {Q} queue {q} --workers 2 --items 3 --work 0",
        true,
        "all 3 items done",
    ),
    row(
        "pk-threads {Q} gil {q} --jobs 2 --steps 1000",
        true,
        "speed-up",
    ),
    // pk-pool
    row(
        "pk-pool {Q} demo {q} --workers 2 --tasks 3 --task-time 1ms",
        true,
        "All subprocesses done.",
    ),
    row(
        "pk-pool {Q} calls {q} --workers 2 --task-time 1ms",
        true,
        "imap_unordered(nap, [0, 1]): 1 0",
    ),
    row("pk-pool {Q} map {q} 1 2 3", false, "[1, 4, 9]"),
    // exec: -t's lines and --progress go; the jobs' output, the failed
    // job's line and the count of failures stay; the -q after `--` and
    // the one in the items are the command's.
    row(
        "printf 'a\\nb -q\\n' | pk-pool {Q} exec {q} -j 1 -t --progress -- sh -c 'echo \"$1\" -q; [ \"$1\" = a ]' sh",
        true,
        "1 of 2 jobs failed",
    ),
];

/// Digits as `0`: pids, counts and times vary from run to run.
fn normalized(text: &[u8]) -> Vec<String> {
    let text = String::from_utf8_lossy(text);
    text.lines()
        .map(|l| {
            let mut n = String::with_capacity(l.len());
            for c in l.chars() {
                if c.is_ascii_digit() {
                    if !n.ends_with('0') {
                        n.push('0');
                    }
                } else {
                    n.push(c);
                }
            }
            n
        })
        .collect()
}

/// Whether `part` is `whole` with some lines left out, in the same order.
fn in_order(part: &[String], whole: &[String]) -> bool {
    let mut rest = whole.iter();
    part.iter().all(|p| rest.any(|w| w == p))
}

struct Run {
    code: Option<i32>,
    stdout: Vec<String>,
    stderr: Vec<String>,
    text: String,
}

fn run(script: &str, before: &str, after: &str, shm: &mut ShmCheck) -> Run {
    let dir = tempfile::tempdir().unwrap();
    let script = script.replace("{Q}", before).replace("{q}", after);
    let out = bash(&script)
        .current_dir(dir.path())
        .env("N", shm.name("quiet"))
        .env_remove("PK_AUTHKEY")
        .timeout(Duration::from_secs(30))
        .output()
        .unwrap();
    Run {
        code: out.status.code(),
        stdout: normalized(&out.stdout),
        stderr: normalized(&out.stderr),
        text: format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    }
}

#[test]
fn quiet_keeps_the_results_before_or_after_the_subcommand() {
    let mut shm = ShmCheck::start();
    let mut bad = Vec::new();
    for r in ROWS {
        let loud = run(r.script, "", "", &mut shm);
        assert!(
            loud.text.contains(r.keeps),
            "{}: the loud run lacks {:?}:\n{}",
            r.script,
            r.keeps,
            loud.text
        );
        for (before, after) in [("-q", ""), ("", "--quiet")] {
            let quiet = run(r.script, before, after, &mut shm);
            let what = format!(
                "{} with {before}{after}:\n{}\n-- loud:\n{}",
                r.script, quiet.text, loud.text
            );
            if quiet.code != loud.code {
                bad.push(format!(
                    "exit {:?}, loud {:?}: {what}",
                    quiet.code, loud.code
                ));
            }
            if !in_order(&quiet.stdout, &loud.stdout) || !in_order(&quiet.stderr, &loud.stderr) {
                bad.push(format!("lines not the loud run's: {what}"));
            }
            if !quiet.text.contains(r.keeps) {
                bad.push(format!("{:?} is gone: {what}", r.keeps));
            }
            let (n, loud_n) = (
                quiet.stdout.len() + quiet.stderr.len(),
                loud.stdout.len() + loud.stderr.len(),
            );
            if r.narrates && n >= loud_n {
                bad.push(format!("nothing left out: {what}"));
            }
            if !r.narrates && n != loud_n {
                bad.push(format!("a result left out: {what}"));
            }
        }
    }
    assert!(bad.is_empty(), "{}", bad.join("\n\n"));
    shm.finish();
}

#[test]
fn the_table_covers_every_binary_and_subcommand() {
    let mut missing = Vec::new();
    for h in help::all() {
        if h.bin == "bench" || h.bin == "bench-plot" {
            continue;
        }
        let has_subs = help::all()
            .iter()
            .any(|s| s.bin == h.bin && s.sub.is_some());
        let want = match (&h.sub, has_subs) {
            (Some(sub), _) => format!("pk-{} {{Q}} {sub} {{q}}", h.bin),
            (None, true) => continue,
            (None, false) => format!("pk-{} {{Q}}", h.bin),
        };
        if !ROWS
            .iter()
            .any(|r| r.script.contains(&want) && r.script.contains("{q}"))
        {
            missing.push(want);
        }
    }
    assert!(missing.is_empty(), "rows missing: {missing:?}");
}

#[test]
fn quiet_is_never_taken_from_the_command_of_exec() {
    // -q after `--` and -q as the command's first word are the command's.
    let out = bash("echo x | pk-pool exec -j 1 -- echo -q {}; echo x | pk-pool -q exec -- -q")
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "-q x\n");
    assert_eq!(out.status.code(), Some(127));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("execvp(-q): No such file or directory"),
        "{out:?}"
    );
}
