//! pk-process: Process objects — name, pid, is_alive, join, terminate, kill,
//! exitcode; daemon=True (Python's: terminated at a normal exit, alive after
//! its parent's SIGKILL, no children) against die_with_parent.

use crate::common::*;

/// The pid in `<prefix><pid>` followed by `,` or `)` or a space.
fn pid_in(line: &str, prefix: &str) -> i32 {
    let rest = &line[line
        .find(prefix)
        .unwrap_or_else(|| panic!("{prefix} in {line}"))
        + prefix.len()..];
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits
        .parse()
        .unwrap_or_else(|_| panic!("a pid after {prefix} in {line}"))
}

#[test]
fn the_lesson_runs_in_order_with_python_exitcodes() {
    let out = pk("process").output().unwrap();
    assert_success(&out);
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 20, "{text}");
    assert_eq!(
        lines[0],
        "Worker: before start: daemon=false is_alive=false exitcode=None"
    );
    let pid = pid_after(lines[1], "Worker: started: pid=").unwrap();
    assert_eq!(
        lines[1],
        format!("Worker: started: pid={pid} is_alive=true")
    );
    assert!(
        lines[2].starts_with(&format!(
            "Worker (pid {pid}): hello from the child, my parent is "
        )),
        "{text}"
    );
    assert_eq!(lines[3], "Worker: joined: is_alive=false exitcode=0");
    assert_eq!(lines[4], "Sleeper: terminate (SIGTERM) -> exitcode=-15");
    assert_eq!(
        lines[5],
        "Stubborn: ignores SIGTERM, still alive after terminate; kill (SIGKILL) -> exitcode=-9"
    );
    assert_eq!(lines[6], "Exit3: returned 3 -> exitcode=3");

    // daemon=True: the daemon outlives its SIGKILLed parent, re-parented.
    let parent = pid_after(lines[7], "Parent (pid ").unwrap();
    let daemon = pid_in(lines[7], "started Daemon (pid ");
    assert_eq!(
        lines[7],
        format!("Parent (pid {parent}) started Daemon (pid {daemon}, daemon=True)")
    );
    assert_eq!(lines[8], "Parent: killed with SIGKILL -> exitcode=-9");
    let prefix =
        format!("Daemon (pid {daemon}): lives on after its parent was killed, parent now ");
    let now: i32 = lines[9]
        .strip_prefix(&prefix)
        .unwrap_or_else(|| panic!("{text}"))
        .parse()
        .unwrap();
    assert_ne!(now, parent, "re-parented: {text}");
    assert_eq!(
        lines[10],
        format!("Daemon (pid {daemon}): terminated by pk-process, which cleans up")
    );
    // It was re-parented to this test process (a subreaper): reap it.
    assert_gone(daemon);

    // die_with_parent: killed with its parent.
    let parent2 = pid_after(lines[11], "Parent (pid ").unwrap();
    let doomed = pid_in(lines[11], "started Doomed (pid ");
    assert_eq!(
        lines[11],
        format!("Parent (pid {parent2}) started Doomed (pid {doomed}, die_with_parent)")
    );
    assert_eq!(lines[12], "Parent: killed with SIGKILL -> exitcode=-9");
    assert_eq!(
        lines[13],
        format!("Doomed (pid {doomed}) killed by signal 9 (SIGKILL) with its parent")
    );

    // A daemon may not have children.
    let d = pid_after(lines[14], "Daemon (pid ").unwrap();
    assert_eq!(
        lines[14],
        format!(
            "Daemon (pid {d}): start() refused: fork(Grandchild): daemonic processes are not allowed to have children"
        )
    );
    assert_eq!(lines[15], "Daemon: exitcode=1");

    // The normal exit: the daemon terminated, the dropped one waited for.
    let watcher = pid_in(lines[16], "Watcher (pid ");
    let dropper = pid_in(lines[16], "Dropper (pid ");
    assert_eq!(
        lines[16],
        format!(
            "Watcher (pid {watcher}, daemon=True) and Dropper (pid {dropper}) run; Dropper's handle is dropped without join"
        )
    );
    assert_eq!(
        lines[17],
        format!("Dropper (pid {dropper}): finished its work")
    );
    assert_eq!(
        lines[18],
        format!("join_children(): terminated daemon Watcher (pid {watcher}) -> exitcode=-15")
    );
    assert_eq!(
        lines[19],
        format!("join_children(): joined Dropper (pid {dropper}) -> exitcode=0")
    );
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(leftovers(&[pid, parent, parent2, doomed, d, watcher, dropper]).is_empty());
}

#[test]
fn die_with_parent_takes_the_daemon_along() {
    let out = pk("process").arg("--die-with-parent").output().unwrap();
    assert_success(&out);
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 19, "{text}");
    let parent = pid_after(lines[7], "Parent (pid ").unwrap();
    let daemon = pid_in(lines[7], "started Daemon (pid ");
    assert_eq!(
        lines[7],
        format!(
            "Parent (pid {parent}) started Daemon (pid {daemon}, daemon=True, die_with_parent)"
        )
    );
    assert_eq!(lines[8], "Parent: killed with SIGKILL -> exitcode=-9");
    assert_eq!(
        lines[9],
        format!("Daemon (pid {daemon}) killed by signal 9 (SIGKILL) with its parent")
    );
    assert!(lines[10].contains("started Doomed"), "{text}");
    assert!(leftovers(&[parent, daemon]).is_empty());
}

/// The lesson in Python, the same steps as pk-process's daemon part.
const PYTHON_LESSON: &str = r#"
import atexit, os, select, signal, time
procs = []
def report():
    for p in procs:
        print(f"at exit: {p.name} daemon={p.daemon} exitcode={p.exitcode}", flush=True)
# Registered before multiprocessing registers its own exit function, so it
# runs after it (atexit runs the last registered first).
atexit.register(report)
from multiprocessing import Pipe, Process

def daemon_body(w, parent):
    for _ in range(6000):
        if os.getppid() != parent:
            break
        time.sleep(0.01)
    w.send(os.getppid())
    time.sleep(60)

def parent_body(w):
    d = Process(target=daemon_body, args=(w, os.getpid()), name='Daemon', daemon=True)
    d.start()
    w.send((os.getpid(), d.pid))
    time.sleep(60)

def daemon_starting_a_child():
    try:
        Process(target=print, name='Grandchild').start()
    except AssertionError as e:
        print(f"Daemon: start() refused: {e}", flush=True)
        raise

def dropper_body():
    time.sleep(0.1)
    print("Dropper: finished its work", flush=True)

if __name__ == '__main__':
    r, w = Pipe(False)
    p = Process(target=parent_body, args=(w,), name='Parent')
    p.start()
    parent, daemon = r.recv()
    fd = os.pidfd_open(daemon)
    p.kill()
    p.join()
    print(f"Parent: exitcode={p.exitcode}", flush=True)
    now = r.recv()
    print(f"Daemon {daemon}: lives on after its parent was killed: {now != parent}", flush=True)
    signal.pidfd_send_signal(fd, signal.SIGTERM)
    select.select([fd], [], [])
    d = Process(target=daemon_starting_a_child, name='Daemon', daemon=True)
    d.start()
    d.join()
    print(f"Daemon: exitcode={d.exitcode}", flush=True)
    procs.append(Process(target=time.sleep, args=(60,), name='Watcher', daemon=True))
    procs.append(Process(target=dropper_body, name='Dropper'))
    for q in procs:
        q.start()
"#;

#[test]
fn the_daemon_lesson_says_what_python_does() {
    let out = command(&["python3".into(), "-c".into(), PYTHON_LESSON.into()])
        .output()
        .unwrap();
    if !out.status.success() {
        eprintln!(
            "skipped: python3 failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        return;
    }
    let py = stdout(&out);
    let py_daemon = pid_in(&py, "Daemon ");
    assert_gone(py_daemon);
    // The same facts, in the same order, from both.
    let python: Vec<String> = py
        .lines()
        .map(|l| {
            if l.starts_with("Daemon ") && l.contains("lives on") {
                format!(
                    "daemon lives on: {}",
                    if l.ends_with("True") { "True" } else { "False" }
                )
            } else {
                l.to_string()
            }
        })
        .collect();
    assert_eq!(
        python,
        [
            "Parent: exitcode=-9",
            "daemon lives on: True",
            "Daemon: start() refused: daemonic processes are not allowed to have children",
            "Daemon: exitcode=1",
            "Dropper: finished its work",
            "at exit: Watcher daemon=True exitcode=-15",
            "at exit: Dropper daemon=False exitcode=0",
        ]
    );

    let out = pk("process").output().unwrap();
    assert_success(&out);
    let text = stdout(&out);
    let daemon = pid_in(&text, "started Daemon (pid ");
    assert_gone(daemon);
    let ours: Vec<String> = text
        .lines()
        .skip_while(|l| !l.starts_with("Parent (pid "))
        .filter_map(|l| {
            let parent_now = |l: &str| pid_in(l, "parent now ");
            Some(if l.starts_with("Parent: killed") {
                l.replace("killed with SIGKILL -> ", "")
            } else if l.contains("lives on") {
                let parent = pid_in(&text, "Parent (pid ");
                format!(
                    "daemon lives on: {}",
                    if parent_now(l) != parent {
                        "True"
                    } else {
                        "False"
                    }
                )
            } else if l.contains("start() refused") {
                format!("Daemon: start() refused: {}", l.rsplit(": ").next()?)
            } else if l.starts_with("Daemon: exitcode") {
                l.to_string()
            } else if l.starts_with("Dropper (pid") {
                "Dropper: finished its work".to_string()
            } else if let Some(rest) = l.strip_prefix("join_children(): ") {
                let name = if rest.contains("Watcher") {
                    "Watcher"
                } else {
                    "Dropper"
                };
                let daemon = if rest.starts_with("terminated daemon") {
                    "True"
                } else {
                    "False"
                };
                let code = rest.rsplit('=').next()?;
                format!("at exit: {name} daemon={daemon} exitcode={code}")
            } else {
                return None;
            })
        })
        // The first Parent section only, then what follows the Doomed one.
        .enumerate()
        .filter(|(i, _)| *i != 2)
        .map(|(_, l)| l)
        .collect();
    assert_eq!(ours, python, "pk-process:\n{text}\npython:\n{py}");
}
#[test]
fn name_and_exit_code_flags() {
    let out = pk("process")
        .args(["--name", "Alpha", "--exit-code", "7"])
        .output()
        .unwrap();
    let text = stdout(&out);
    assert!(text.starts_with("Alpha: before start:"), "{text}");
    assert!(
        text.contains("\nExit7: returned 7 -> exitcode=7\n"),
        "{text}"
    );
}

#[test]
fn an_inherited_ignored_sigterm_does_not_break_terminate() {
    let out = bash("trap '' TERM; pk-process").output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert!(stdout(&out).contains("Sleeper: terminate (SIGTERM) -> exitcode=-15\n"));
}

#[test]
fn bad_input_is_a_one_line_usage_error() {
    let table: &[&[&str]] = &[
        &["--name", ""],
        &["--name", &"x".repeat(65)],
        &["--name", "a\nb"],
        &["--exit-code", "256"],
        &["--exit-code", "-1"],
        &["--exit-code", "x"],
        &["--bogus"],
        &["extra"],
    ];
    assert_usage_table("process", table);
}

#[test]
fn help_documents_the_output() {
    assert_help(
        "process",
        &[],
        &[
            "--name",
            "--exit-code",
            "exitcode=-15",
            "exitcode=-9",
            "daemon=True",
            "die_with_parent",
            "--die-with-parent",
            "join_children()",
            "AssertionError",
            "parent now",
            "PR_SET_PDEATHSIG",
            "Exit status",
        ],
    );
}
